//! The job role's policy, computed from the job: exactly the S3, Secrets Manager and KMS calls
//! its run makes, on exactly its prefixes.
//!
//! - tables: DataFusion lists each table's prefix (with and without a delimiter, for partitions)
//!   and reads its objects: `s3:ListBucket` with an `s3:prefix` condition, `s3:GetObject`;
//! - state (`state/mod.rs`, below `{state}/{job}/`): get, put (plain, create-only, and multipart
//!   through `crate::upload::Upload`), delete, list and list with a delimiter: `s3:GetObject`,
//!   `PutObject`, `AbortMultipartUpload`, `DeleteObject`, `ListBucket`;
//! - exports (`destinations/export/sink.rs`): `per_run` is one multipart upload (`PutObject`,
//!   `AbortMultipartUpload` when a run fails); `per_batch` also lists and deletes the date's
//!   folder, moves the parts out of `_staging-…` folders and removes those earlier runs of the
//!   date left (listing the export's folder with a delimiter), and object_store's S3 rename is
//!   a copy (`GetObject` on the source, `PutObject` on the target) then a delete;
//! - `aws-secretsmanager:` references: `secretsmanager:GetSecretValue` on those secrets;
//! - the stack's key, through S3 (the state bucket is encrypted with it) and Secrets Manager
//!   (secrets the deployer encrypted with it): `kms:Decrypt`, `kms:GenerateDataKey`.
//!
//! A cluster job's executors get a role of their own whose policy is the tables' part of this
//! one only (`table_read_policy`): they read the tables and nothing else.

use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::stack::cfn::{allow, allow_if, arn_of, policy, sub};
use crate::stack::references::{secret_iam_resource, secrets_manager_ids};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use url::Url;

/// The folder of the stack's bucket where jobs whose files name no state keep it.
pub const STACK_STATE_PREFIX: &str = "state/";

/// A bucket and a key prefix: empty, a folder ending in `/`, or one object's key.
#[derive(Clone, Debug, PartialEq)]
pub struct S3Prefix {
    /// The bucket as written inside a `Fn::Sub`: its name, or `${StateBucket}`.
    pub bucket: String,
    pub prefix: String,
}

impl S3Prefix {
    /// The bucket and prefix of an `s3://` URL (the key percent-decoded, as object_store
    /// sends it); `None` for other schemes.
    pub fn of(url: &Url) -> Option<S3Prefix> {
        if url.scheme() != "s3" {
            return None;
        }
        let bucket = url.host_str()?.to_string();
        let path = object_store::path::Path::from_url_path(url.path()).ok()?;
        let mut prefix = path.as_ref().to_string();
        if !prefix.is_empty() && url.path().ends_with('/') {
            prefix.push('/');
        }
        Some(S3Prefix { bucket, prefix })
    }

    /// The bucket's ARN.
    pub fn bucket_arn(&self) -> Value {
        sub(format!("arn:${{AWS::Partition}}:s3:::{}", self.bucket))
    }

    /// The ARN of the objects whose keys are the prefix followed by `pattern`.
    pub fn objects_arn(&self, pattern: &str) -> Value {
        sub(format!(
            "arn:${{AWS::Partition}}:s3:::{}/{}{pattern}",
            self.bucket, self.prefix
        ))
    }
}

/// Where a deployed job keeps its state.
#[derive(Clone, Debug, PartialEq)]
pub enum StateLocation {
    /// The `s3://` URL its file names.
    Url(S3Prefix),
    /// The stack's bucket, below `state/`: the job definition sets `ACTIVATOR_STATE`.
    StackBucket,
}

impl StateLocation {
    /// The job's state once deployed; a local state folder named in its file is an error.
    pub fn of(job: &Job) -> Result<StateLocation> {
        if !job.aws.state_in_job_file {
            return Ok(StateLocation::StackBucket);
        }
        S3Prefix::of(&job.state).map(StateLocation::Url).ok_or_else(|| {
            Error::config(format!(
                "{}: state: a deployed job reads and writes s3:// URLs; set it to one (e.g. \
                 \"${{STATE_URL:-../target/state}}\" with STATE_URL=s3://bucket/prefix when running \
                 `activator stack`), or remove `state` to keep the state in the stack's bucket",
                job.path.display()
            ))
        })
    }

    /// The job's own folder, `{state}/{job}/`.
    pub fn job_folder(&self, job: &str) -> S3Prefix {
        match self {
            StateLocation::Url(p) => S3Prefix {
                bucket: p.bucket.clone(),
                prefix: format!("{}{job}/", p.prefix),
            },
            StateLocation::StackBucket => S3Prefix {
                bucket: "${StateBucket}".into(),
                prefix: format!("{STACK_STATE_PREFIX}{job}/"),
            },
        }
    }
}

/// The job role's policy document (CloudFormation values: `Fn::Sub`, `Fn::GetAtt Key.Arn`).
pub fn job_policy(job: &Job, state: &StateLocation) -> Value {
    let tables = table_prefixes(job);
    let state = state.job_folder(&job.name);
    let exports: Vec<(S3Prefix, bool)> = job
        .destinations
        .iter()
        .flat_map(|d| d.targets())
        .filter_map(|t| match t {
            Target::Files { url, per_batch, .. } => S3Prefix::of(url).map(|p| (p, per_batch)),
            Target::Api { .. } => None,
        })
        .collect();
    let per_batch: Vec<&S3Prefix> = exports
        .iter()
        .filter(|(_, per_batch)| *per_batch)
        .map(|(p, _)| p)
        .collect();

    let listed = tables
        .iter()
        .chain([&state])
        .chain(per_batch.iter().copied());
    let mut statements = list_statements(listed);
    statements.push(read_tables(&tables));
    statements.push(allow(
        "ReadWriteState",
        &[
            "s3:AbortMultipartUpload",
            "s3:DeleteObject",
            "s3:GetObject",
            "s3:PutObject",
        ],
        vec![state.objects_arn("*")],
    ));
    if !exports.is_empty() {
        let folders = unique(exports.iter().map(|(p, _)| p.objects_arn("*")));
        statements.push(allow(
            "WriteExports",
            &["s3:AbortMultipartUpload", "s3:PutObject"],
            folders,
        ));
    }
    if !per_batch.is_empty() {
        let folders = unique(per_batch.iter().map(|p| p.objects_arn("*")));
        statements.push(allow("ReplaceExportParts", &["s3:DeleteObject"], folders));
        // Parts are moved (copied) out of `{folder}_staging-{job}-{date}-{run}/` only.
        let staging = unique(per_batch.iter().map(|p| p.objects_arn("_staging-*")));
        statements.push(allow("CopyExportParts", &["s3:GetObject"], staging));
    }
    let secrets = secrets_manager_ids(job);
    if !secrets.is_empty() {
        let arns = unique(secrets.iter().map(|s| secret_iam_resource(s)));
        statements.push(allow(
            "ReadSecrets",
            &["secretsmanager:GetSecretValue"],
            arns,
        ));
    }
    let mut services = vec![sub("s3.${AWS::Region}.amazonaws.com")];
    if !secrets.is_empty() {
        services.push(sub("secretsmanager.${AWS::Region}.amazonaws.com"));
    }
    statements.push(allow_if(
        "UseStackKey",
        &["kms:Decrypt", "kms:GenerateDataKey"],
        vec![arn_of("Key")],
        json!({ "StringEquals": { "kms:ViaService": services } }),
    ));
    policy(statements)
}

/// The policy of a cluster job's executors: they run the segment's tasks on the job's tables,
/// and write nothing to S3 (shuffle files stay on their disks), read no state and send nothing
/// to platforms. So they get the job role's statements that list and read the tables, and
/// nothing else: no state, no exports, no secrets, and no use of the stack's key, which the job
/// role has for the state bucket and the secrets it encrypts, not for the tables (the deployer's
/// buckets, under keys the stack does not know).
pub fn table_read_policy(job: &Job) -> Value {
    let tables = table_prefixes(job);
    let mut statements = list_statements(tables.iter());
    statements.push(read_tables(&tables));
    policy(statements)
}

/// The bucket and prefix of each of the job's tables (`checks` refuses other than `s3://` ones).
fn table_prefixes(job: &Job) -> Vec<S3Prefix> {
    job.tables
        .iter()
        .filter_map(|t| S3Prefix::of(&t.url))
        .collect()
}

/// `s3:GetObject` on the objects below the tables' prefixes (their listing is in
/// `list_statements`, with the other prefixes of the same buckets).
fn read_tables(tables: &[S3Prefix]) -> Value {
    allow(
        "ReadTables",
        &["s3:GetObject"],
        unique(tables.iter().map(|t| t.objects_arn("*"))),
    )
}

/// One `s3:ListBucket` statement per bucket, its condition naming the listed prefixes and what
/// lies below them. A job that lists a whole bucket (a table at `s3://bucket/`) gets the bucket
/// without a condition: object_store then sends no `prefix` at all, and IAM matches no condition
/// on a key the request does not carry.
fn list_statements<'a>(listed: impl Iterator<Item = &'a S3Prefix>) -> Vec<Value> {
    let mut by_bucket: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in listed {
        by_bucket
            .entry(p.bucket.as_str())
            .or_default()
            .insert(p.prefix.as_str());
    }
    by_bucket
        .iter()
        .enumerate()
        .map(|(i, (bucket, prefixes))| {
            let bucket = S3Prefix {
                bucket: bucket.to_string(),
                prefix: String::new(),
            };
            if prefixes.contains("") {
                return allow(
                    &format!("ListBucket{}", i + 1),
                    &["s3:ListBucket"],
                    vec![bucket.bucket_arn()],
                );
            }
            let patterns: Vec<String> = prefixes
                .iter()
                .flat_map(|p| [p.to_string(), format!("{p}*")])
                .collect();
            allow_if(
                &format!("ListBucket{}", i + 1),
                &["s3:ListBucket"],
                vec![bucket.bucket_arn()],
                json!({ "StringLike": { "s3:prefix": patterns } }),
            )
        })
        .collect()
}

/// The values without repeats, in their first order.
pub(crate) fn unique(values: impl Iterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = vec![];
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"
name = "nightly"
segment = "s.sql"
profile = "meta"
state = "s3://lake/activator/state"

[[tables]]
name = "customers"
url = "s3://lake/crm/customers"

[[tables]]
name = "orders"
url = "s3://lake/crm/orders"

[identifiers]
email = "email"

[[destinations]]
type = "export"
url = "s3://exports/audiences"
layout = "per_batch"

[[destinations]]
type = "meta"
ad_account_id = "1234567890"
audience = "spenders"
access_token = "aws-secretsmanager:activator/meta#token"
"#;

    fn job(text: &str) -> Job {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT 1").unwrap();
        Job::parse(&dir.path().join("nightly.toml"), text, &|_| None).unwrap()
    }

    fn s(text: &str) -> Value {
        sub(text)
    }

    #[test]
    fn a_whole_bucket_is_listed_without_a_prefix_condition() {
        let root = S3Prefix {
            bucket: "lake".into(),
            prefix: String::new(),
        };
        let sub = S3Prefix {
            bucket: "lake".into(),
            prefix: "crm/".into(),
        };
        let other = S3Prefix {
            bucket: "out".into(),
            prefix: "x/".into(),
        };
        let statements = list_statements([&root, &sub, &other].into_iter());
        assert_eq!(statements.len(), 2);
        assert!(
            statements[0].get("Condition").is_none(),
            "{}",
            statements[0]
        );
        assert_eq!(
            statements[1]["Condition"]["StringLike"]["s3:prefix"],
            json!(["x/", "x/*"])
        );
    }

    #[test]
    fn a_job_gets_exactly_its_prefixes() {
        let job = job(JOB);
        let state = StateLocation::of(&job).unwrap();
        let expected = json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ListBucket1", "Effect": "Allow", "Action": ["s3:ListBucket"],
                    "Resource": [s("arn:${AWS::Partition}:s3:::exports")],
                    "Condition": { "StringLike": { "s3:prefix": ["audiences/", "audiences/*"] } }
                },
                {
                    "Sid": "ListBucket2", "Effect": "Allow", "Action": ["s3:ListBucket"],
                    "Resource": [s("arn:${AWS::Partition}:s3:::lake")],
                    "Condition": { "StringLike": { "s3:prefix": [
                        "activator/state/nightly/", "activator/state/nightly/*",
                        "crm/customers/", "crm/customers/*",
                        "crm/orders/", "crm/orders/*"
                    ] } }
                },
                {
                    "Sid": "ReadTables", "Effect": "Allow", "Action": ["s3:GetObject"],
                    "Resource": [
                        s("arn:${AWS::Partition}:s3:::lake/crm/customers/*"),
                        s("arn:${AWS::Partition}:s3:::lake/crm/orders/*")
                    ]
                },
                {
                    "Sid": "ReadWriteState", "Effect": "Allow",
                    "Action": ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
                    "Resource": [s("arn:${AWS::Partition}:s3:::lake/activator/state/nightly/*")]
                },
                {
                    "Sid": "WriteExports", "Effect": "Allow",
                    "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
                    "Resource": [s("arn:${AWS::Partition}:s3:::exports/audiences/*")]
                },
                {
                    "Sid": "ReplaceExportParts", "Effect": "Allow", "Action": ["s3:DeleteObject"],
                    "Resource": [s("arn:${AWS::Partition}:s3:::exports/audiences/*")]
                },
                {
                    "Sid": "CopyExportParts", "Effect": "Allow", "Action": ["s3:GetObject"],
                    "Resource": [s("arn:${AWS::Partition}:s3:::exports/audiences/_staging-*")]
                },
                {
                    "Sid": "ReadSecrets", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": [s("arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:activator/meta-??????")]
                },
                {
                    "Sid": "UseStackKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": [{ "Fn::GetAtt": ["Key", "Arn"] }],
                    "Condition": { "StringEquals": { "kms:ViaService": [
                        s("s3.${AWS::Region}.amazonaws.com"),
                        s("secretsmanager.${AWS::Region}.amazonaws.com")
                    ] } }
                }
            ]
        });
        let actual = job_policy(&job, &state);
        assert_eq!(
            actual,
            expected,
            "got:\n{}",
            serde_json::to_string_pretty(&actual).unwrap()
        );
    }

    #[test]
    fn executors_only_list_and_read_the_tables() {
        let job = job(JOB);
        let expected = json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ListBucket1", "Effect": "Allow", "Action": ["s3:ListBucket"],
                    "Resource": [s("arn:${AWS::Partition}:s3:::lake")],
                    "Condition": { "StringLike": { "s3:prefix": [
                        "crm/customers/", "crm/customers/*",
                        "crm/orders/", "crm/orders/*"
                    ] } }
                },
                {
                    "Sid": "ReadTables", "Effect": "Allow", "Action": ["s3:GetObject"],
                    "Resource": [
                        s("arn:${AWS::Partition}:s3:::lake/crm/customers/*"),
                        s("arn:${AWS::Partition}:s3:::lake/crm/orders/*")
                    ]
                }
            ]
        });
        let actual = table_read_policy(&job);
        assert_eq!(
            actual,
            expected,
            "got:\n{}",
            serde_json::to_string_pretty(&actual).unwrap()
        );
        // The job role reads the same objects.
        let state = StateLocation::of(&job).unwrap();
        assert_eq!(
            job_policy(&job, &state)["Statement"][2],
            expected["Statement"][1]
        );
    }

    #[test]
    fn a_job_without_state_in_its_file_uses_the_stack_bucket() {
        let text = JOB.replace("state = \"s3://lake/activator/state\"\n", "");
        let job = job(&text);
        let state = StateLocation::of(&job).unwrap();
        assert_eq!(state, StateLocation::StackBucket);
        let policy = job_policy(&job, &state);
        assert_eq!(
            policy["Statement"][0]["Resource"][0],
            s("arn:${AWS::Partition}:s3:::${StateBucket}")
        );
        assert_eq!(
            policy["Statement"][0]["Condition"]["StringLike"]["s3:prefix"],
            json!(["state/nightly/", "state/nightly/*"])
        );
        assert_eq!(
            policy["Statement"][4]["Resource"][0],
            s("arn:${AWS::Partition}:s3:::${StateBucket}/state/nightly/*")
        );
    }

    #[test]
    fn prefixes_are_decoded_keys() {
        let url = Url::parse("s3://b/a%20b/c/").unwrap();
        assert_eq!(
            S3Prefix::of(&url).unwrap(),
            S3Prefix {
                bucket: "b".into(),
                prefix: "a b/c/".into()
            }
        );
        let url = Url::parse("s3://b/").unwrap();
        assert_eq!(S3Prefix::of(&url).unwrap().prefix, "");
        let url = Url::parse("s3://b/x/file.parquet").unwrap();
        assert_eq!(S3Prefix::of(&url).unwrap().prefix, "x/file.parquet");
        assert!(S3Prefix::of(&Url::parse("file:///tmp/x/").unwrap()).is_none());
    }
}
