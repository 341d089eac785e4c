//! What a job needs to be deployed, beyond what `run` checks: `s3://` URLs (a task's disk is
//! neither the tables' nor the state's), real platform URLs (no in-process sandbox, no
//! loopback), each `env:` reference mapped to a secret in `[aws] secrets`, a cluster that fits
//! its compute environment, and names that stay distinct across the stack. Errors name
//! the file and the key.
//!
//! A cluster job's engine host is not checked: on AWS Batch the main node runs the scheduler and
//! points the job at it (`cluster main`), whatever host the file names.

use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::stack::job_resources::CLUSTER_MAX_VCPUS;
use crate::stack::policy::{S3Prefix, StateLocation};
use crate::stack::references::{env_names, secret_id, secret_uses};
use crate::stack::settings::is_secret_id;
use crate::stack::{is_cluster, logical_id};
use std::collections::BTreeMap;
use url::Url;

/// Checks one job.
pub fn check_job(job: &Job) -> Result<()> {
    let at = job.path.display().to_string();
    for (i, t) in job.tables.iter().enumerate() {
        check_s3(&at, &format!("tables[{i}] ({}).url", t.name), &t.url)?;
    }
    if let StateLocation::Url(_) = StateLocation::of(job)? {
        check_s3(&at, "state", &job.state)?;
    }
    for (i, d) in job.destinations.iter().enumerate() {
        for target in d.targets() {
            match target {
                Target::Api { field, url } => {
                    check_platform(&at, &format!("destinations[{i}].{field}"), url)?
                }
                Target::Files { field, url, .. } => {
                    check_s3(&at, &format!("destinations[{i}].{field}"), url)?
                }
            }
        }
    }
    check_variables(job, &at)?;
    check_cluster(job, &at)?;
    check_secrets(job, &at)
}

/// A cluster job's nodes take at least `nodes` x `vcpu` of its compute environment's vCPUs
/// (more when an instance is larger than its node's container): a job that needs more than the
/// environment has would wait in the queue forever.
fn check_cluster(job: &Job, at: &str) -> Result<()> {
    let aws = &job.aws;
    let vcpus = f64::from(aws.nodes) * aws.vcpu;
    if is_cluster(job) && vcpus > f64::from(CLUSTER_MAX_VCPUS) {
        return Err(Error::config(format!(
            "{at}: aws.nodes: {} nodes of {} vCPUs need {vcpus} vCPUs, more than the job's cluster compute \
             environment has ({CLUSTER_MAX_VCPUS}); use fewer nodes or vCPUs",
            aws.nodes, aws.vcpu
        )));
    }
    Ok(())
}

/// The variables a job file read go into its job definition's environment as they are: none
/// may be a secret. A header is the place a literal secret could come from (`X-Api-Key =
/// "${API_KEY}"`): such a header must name the secret by reference instead.
fn check_variables(job: &Job, at: &str) -> Result<()> {
    for (name, (_, keys)) in &job.variables {
        // Any key that reads it: a URL may read the same variable before the header does.
        if let Some(key) = keys.iter().find(|k| k.contains(".headers.")) {
            return Err(Error::config(format!(
                "{at}: {key}: reads ${{{name}}}, and a deployed job's variables are written into its job definition; \
                 a header's secret must be a reference (env:NAME with [aws] secrets, or aws-secretsmanager:ID)"
            )));
        }
    }
    Ok(())
}

/// Checks what jobs deployed together must not share.
pub fn check_stack(jobs: &[Job]) -> Result<()> {
    if jobs.is_empty() {
        return Err(Error::config(
            "no job files: name the jobs to deploy, e.g. jobs/demo.toml",
        ));
    }
    let mut names: BTreeMap<&str, &Job> = BTreeMap::new();
    let mut ids: BTreeMap<String, &Job> = BTreeMap::new();
    let mut files: BTreeMap<String, &Job> = BTreeMap::new();
    for job in jobs {
        let at = job.path.display();
        if let Some(other) = names.insert(job.name.as_str(), job) {
            return Err(Error::config(format!(
                "{at}: name: `{}` is also the name of {}; deployed jobs need distinct names (a name is a job's state \
                 folder and its AWS Batch job name)",
                job.name,
                other.path.display()
            )));
        }
        if let Some(other) = ids.insert(logical_id(&job.name), job) {
            return Err(Error::config(format!(
                "{at}: name: `{}` and `{}` of {} give the same CloudFormation names ({}...); rename one",
                job.name,
                other.name,
                other.path.display(),
                logical_id(&job.name)
            )));
        }
        let file = file_name(job);
        if let Some(other) = files.insert(file.clone(), job) {
            return Err(Error::config(format!(
                "{at}: {} has the same file name; the image holds the jobs in one folder ({}), so deployed job \
                 files need distinct names",
                other.path.display(),
                crate::stack::JOBS_FOLDER
            )));
        }
    }
    Ok(())
}

/// The job file's name, as the image holds it below `/app/jobs`.
pub fn file_name(job: &Job) -> String {
    job.path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.toml", job.name))
}

fn check_s3(at: &str, key: &str, url: &Url) -> Result<()> {
    let Some(location) = S3Prefix::of(url) else {
        return Err(Error::config(format!(
            "{at}: {key}: a deployed job reads and writes s3:// URLs, not {url}; set it to an s3:// URL (a \
             \"${{VAR:-local default}}\" lets the same file run locally and deploy with VAR=s3://bucket/prefix)"
        )));
    };
    if format!("{}{}", location.bucket, location.prefix).contains(['*', '?', '$']) {
        return Err(Error::config(format!(
            "{at}: {key}: `*`, `?` and `$` in {url} would be wildcards or variables in the job's IAM policy; \
             use a prefix without them"
        )));
    }
    Ok(())
}

fn check_platform(at: &str, key: &str, url: &str) -> Result<()> {
    if url == "sandbox" {
        return Err(Error::config(format!(
            "{at}: {key}: `sandbox` is the in-process emulator, which a deployed job must not use; set the \
             platform's URL (or leave base_url out for the platform's own)"
        )));
    }
    // Parsed, not matched as text: `HTTP://127.0.0.1` is a loopback URL too.
    if Url::parse(url).is_ok_and(|u| u.scheme() == "http") {
        return Err(Error::config(format!(
            "{at}: {key}: {url} is a loopback address, which a deployed job's task cannot reach; set the \
             platform's https:// URL"
        )));
    }
    Ok(())
}

fn check_secrets(job: &Job, at: &str) -> Result<()> {
    for u in secret_uses(job) {
        if let Some(name) = u.reference.strip_prefix("env:")
            && !job.aws.secrets.contains_key(name)
        {
            return Err(Error::config(format!(
                "{at}: {}: `{}` reads the environment, which AWS Batch fills from Secrets Manager: add \
                 {name} = \"SECRET_NAME\" (a secret's name or full ARN) to the job's [aws] secrets",
                u.key, u.reference
            )));
        }
        if let Some(id) = u.reference.strip_prefix("aws-secretsmanager:")
            && !is_secret_id(id)
        {
            return Err(Error::config(format!(
                "{at}: {}: `{}` is not a Secrets Manager secret's name (letters, digits and /_+=.@-) or full ARN, \
                 which the job's IAM policy can name",
                u.key,
                secret_id(id)
            )));
        }
    }
    let used = env_names(job);
    if let Some(unused) = job.aws.secrets.keys().find(|name| !used.contains(*name)) {
        return Err(Error::config(format!(
            "{at}: aws.secrets.{unused}: no destination reads env:{unused}; remove it (the job definition injects \
             only the secrets the job reads)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_platform;

    #[test]
    fn a_deployed_platform_url_is_not_the_sandbox_nor_plain_http_in_any_case() {
        for url in ["sandbox", "http://127.0.0.1:9000", "HTTP://127.0.0.1:9000"] {
            assert!(
                check_platform("job.toml", "base_url", url).is_err(),
                "{url}"
            );
        }
        assert!(check_platform("job.toml", "base_url", "https://graph.facebook.com").is_ok());
    }
}
