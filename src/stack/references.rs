//! The secret references of a job (`env:NAME`, `aws-secretsmanager:ID[#field]`) and what they
//! become on AWS: `env:` references are injected by AWS Batch from the secrets `[aws] secrets`
//! maps them to (the execution role reads those); `aws-secretsmanager:` references are read by
//! the program itself (the job role reads those).

use crate::job::Job;
use crate::stack::cfn::sub;
use serde_json::Value;
use std::collections::BTreeSet;

/// A secret reference and the job file key that holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretUse {
    pub key: String,
    pub reference: String,
}

/// Every secret reference of the job's destinations, in file order.
pub fn secret_uses(job: &Job) -> Vec<SecretUse> {
    let mut uses = vec![];
    for (i, destination) in job.destinations.iter().enumerate() {
        for (field, reference) in destination.secrets() {
            uses.push(SecretUse {
                key: format!("destinations[{i}].{field}"),
                reference: reference.to_string(),
            });
        }
    }
    uses
}

/// The variables of the job's `env:NAME` references.
pub fn env_names(job: &Job) -> BTreeSet<String> {
    secret_uses(job)
        .iter()
        .filter_map(|u| u.reference.strip_prefix("env:").map(str::to_string))
        .collect()
}

/// The secrets (names or ARNs, without `#field`) of the job's `aws-secretsmanager:` references.
pub fn secrets_manager_ids(job: &Job) -> BTreeSet<String> {
    secret_uses(job)
        .iter()
        .filter_map(|u| u.reference.strip_prefix("aws-secretsmanager:"))
        .map(|id| secret_id(id).to_string())
        .collect()
}

/// A secret's name or ARN without its `#field`.
pub fn secret_id(spec: &str) -> &str {
    spec.split_once('#').map_or(spec, |(id, _)| id)
}

/// What `secretsmanager:GetSecretValue` is granted on: an ARN as given, or a name's ARN with the
/// six random characters Secrets Manager appends.
pub fn secret_iam_resource(spec: &str) -> Value {
    let id = secret_id(spec);
    if id.starts_with("arn:") {
        Value::String(id.to_string())
    } else {
        sub(format!(
            "arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{id}-??????"
        ))
    }
}

/// A job definition secret's `ValueFrom`: the secret's ARN (a name's partial ARN), with
/// `:field::` for one field of a JSON secret.
pub fn secret_value_from(spec: &str) -> Value {
    let (id, field) = match spec.split_once('#') {
        Some((id, field)) => (id, format!(":{field}::")),
        None => (spec, String::new()),
    };
    if id.starts_with("arn:") {
        Value::String(format!("{id}{field}"))
    } else {
        sub(format!(
            "arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{id}{field}"
        ))
    }
}
