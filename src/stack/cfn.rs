//! Small builders of CloudFormation values: intrinsic functions, IAM statements and roles, tags.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `Fn::Sub` of a text with `${...}` variables (pseudo parameters, resources, parameters).
pub fn sub(text: impl Into<String>) -> Value {
    json!({ "Fn::Sub": text.into() })
}

/// `Ref` of a resource, parameter or pseudo parameter.
pub fn reference(name: &str) -> Value {
    json!({ "Ref": name })
}

/// `Fn::GetAtt` of a resource's attribute.
pub fn attribute(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

/// A resource's ARN.
pub fn arn_of(resource: &str) -> Value {
    attribute(resource, "Arn")
}

/// A list parameter's values and one more: CloudFormation cannot concatenate lists, so the
/// parameter's values are joined into text with the other value's, and split again.
pub fn list_plus(parameter: &str, value: Value) -> Value {
    let text = json!({ "Fn::Join": [",", [{ "Fn::Join": [",", reference(parameter)] }, value]] });
    json!({ "Fn::Split": [",", text] })
}

/// A resource of a type with its properties.
pub fn resource(kind: &str, properties: Value) -> Value {
    json!({ "Type": kind, "Properties": properties })
}

/// An IAM policy document.
pub fn policy(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// An `Allow` statement.
pub fn allow(sid: &str, actions: &[&str], resources: Vec<Value>) -> Value {
    json!({ "Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources })
}

/// An `Allow` statement with a condition.
pub fn allow_if(sid: &str, actions: &[&str], resources: Vec<Value>, condition: Value) -> Value {
    let mut statement = allow(sid, actions, resources);
    statement["Condition"] = condition;
    statement
}

/// `aws:SourceAccount` is this account: a service assumes the role, or uses a key, only on the
/// stack's own behalf (the confused-deputy guard).
pub fn from_this_account() -> Value {
    json!({ "StringEquals": { "aws:SourceAccount": reference("AWS::AccountId") } })
}

/// An IAM role a service assumes, with inline policies (name, document).
pub fn service_role(
    service: &str,
    source_account_only: bool,
    policies: Vec<(&str, Value)>,
    tags: &BTreeMap<String, String>,
) -> Value {
    let mut trust = json!({
        "Effect": "Allow",
        "Principal": { "Service": service },
        "Action": "sts:AssumeRole",
    });
    if source_account_only {
        trust["Condition"] = from_this_account();
    }
    let mut properties = json!({
        "AssumeRolePolicyDocument": policy(vec![trust]),
        "Tags": tag_list(tags),
    });
    if !policies.is_empty() {
        properties["Policies"] = policies
            .into_iter()
            .map(|(name, document)| json!({ "PolicyName": name, "PolicyDocument": document }))
            .collect();
    }
    resource("AWS::IAM::Role", properties)
}

/// Tags as most types take them: `[{Key, Value}]`.
pub fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    tags.iter()
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect()
}

/// Tags as AWS Batch takes them: `{key: value}`.
pub fn tag_map(tags: &BTreeMap<String, String>) -> Value {
    json!(tags)
}
