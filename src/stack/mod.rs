//! `activator stack JOB...`: the CloudFormation template that deploys jobs on AWS Batch.
//!
//! Why: a job file already says what a run reads, writes and which secrets it uses, so the
//! stack can grant a job exactly that and nothing more, and stay in step with the job files
//! instead of being written (and drifting) by hand. It is computed from the job files and
//! their SQL only: no network, no AWS account, no table is touched.
//!
//! What the template holds (one stack per account and region: the repository and log group
//! have fixed names):
//!
//! - shared (`shared`): a KMS key with rotation, the state bucket (SSE-KMS, versioned, TLS
//!   only, no public access), the image repository (immutable tags, scanned), the log group,
//!   AWS Batch's Fargate and Fargate Spot compute environments in the deployer's private
//!   subnets (which reach the platforms through a NAT gateway: tasks get no public IP) and one
//!   job queue, and the execution role that pulls the image, writes logs and reads the secrets
//!   `[aws] secrets` names;
//! - shared by the jobs whose engine is a cluster, only when there are some (`shared`): the EC2
//!   instances' role;
//! - per job (`job_resources`): a job role whose policy is computed from the job (`policy`), a
//!   job definition (`run /app/jobs/FILE --date <scheduled time>`, read-only root file system,
//!   retried on exit code 3 and host or image-pull failures), and an EventBridge Scheduler
//!   schedule with a role that may submit only that job; a job whose engine is a cluster is a
//!   multi-node parallel job instead, node 0 running `cluster main` (the scheduler and the run,
//!   with the job role) and the others `cluster executor` (with a role that only reads the
//!   tables), and has its own security group in `VpcId` that lets its nodes reach each other on
//!   Ballista's ports and nothing else in, a cluster placement group, and an EC2 compute
//!   environment (AWS Batch runs multi-node jobs on EC2 only, not on Fargate or Spot) and queue
//!   it is submitted to: Ballista's ports take no credentials, so the nodes of different jobs
//!   must not reach each other's, and an environment's security groups are every job's it runs;
//! - monitoring (`monitoring`, `dashboard`): an SNS topic mailed failed jobs (an EventBridge
//!   rule on the queues) and alarms (no successful run for 26 hours; too many invalid values per
//!   row read), and a dashboard of the metrics runs print (`ACTIVATOR_METRICS=emf`).
//!
//! The image is expected to hold the binary as its entrypoint and the jobs and SQL files as the
//! repository lays them out, under `/app/jobs` and `/app/sql`. Job files make their URLs
//! deployable with `${VAR:-local default}`: set the variables to `s3://` URLs when running
//! `activator stack`. The schedule passes the scheduled time, an RFC 3339 timestamp, as the run
//! date: `run --date` takes its UTC date, so schedules in another time zone should fire at an
//! hour whose UTC date is the intended one.

mod cfn;
mod checks;
mod dashboard;
mod job_resources;
mod monitoring;
pub mod policy;
pub mod references;
pub mod settings;
mod shared;
mod yaml;

use crate::error::Result;
use crate::job::Job;
use cfn::reference;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The log group of every job's output.
pub const LOG_GROUP: &str = "/aws/batch/activator";
/// The image repository's name.
pub const REPOSITORY: &str = "activator";
/// Where the image holds the job files.
pub const JOBS_FOLDER: &str = "/app/jobs";
/// The metrics' namespace (`report::RunReport::emf_lines`).
pub const NAMESPACE: &str = "Activator";

/// The template (CloudFormation's JSON form) that deploys `jobs`.
pub fn template(jobs: &[Job]) -> Result<Value> {
    checks::check_stack(jobs)?;
    for job in jobs {
        checks::check_job(job)?;
    }
    let tags = stack_tags(jobs);
    let mut resources = Map::new();
    shared::add(&mut resources, jobs, &tags);
    monitoring::add_shared(&mut resources, jobs, &tags);
    for job in jobs {
        let job_tags = job_tags(job, &tags);
        job_resources::add(&mut resources, job, &job_tags)?;
        monitoring::add_alarms(&mut resources, job, &job_tags);
    }
    resources.insert("Dashboard".into(), dashboard::dashboard(jobs));
    Ok(json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": description(jobs),
        "Parameters": parameters(jobs),
        "Conditions": {
            "HasAlarmEmail": { "Fn::Not": [{ "Fn::Equals": [reference("AlarmEmail"), ""] }] },
        },
        "Resources": resources,
        "Outputs": outputs(jobs),
    }))
}

/// The template as YAML.
pub fn yaml(jobs: &[Job]) -> Result<String> {
    yaml::to_yaml(&template(jobs)?)
}

/// A job's prefix of CloudFormation logical ids: its name in PascalCase (`bench_b1` ->
/// `BenchB1`), after `Job` if it would start with a digit.
pub fn logical_id(job: &str) -> String {
    let id: String = job
        .split(['_', '-'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect();
    if id.starts_with(|c: char| c.is_ascii_digit()) {
        format!("Job{id}")
    } else {
        id
    }
}

/// Whether the job's segment runs on a Ballista cluster: it deploys as an AWS Batch multi-node
/// parallel job on EC2 rather than as a Fargate task.
fn is_cluster(job: &Job) -> bool {
    matches!(job.engine, crate::segment::Engine::Cluster { .. })
}

/// Tags of the shared resources: the application's, and those every job has alike.
fn stack_tags(jobs: &[Job]) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::from([("app".to_string(), "activator".to_string())]);
    if let Some((first, rest)) = jobs.split_first() {
        for (k, v) in &first.aws.tags {
            if rest.iter().all(|j| j.aws.tags.get(k) == Some(v)) {
                tags.insert(k.clone(), v.clone());
            }
        }
    }
    tags
}

/// Tags of a job's resources: the stack's, the job's name and the job's `[aws] tags`.
fn job_tags(job: &Job, stack: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut tags = stack.clone();
    tags.insert("activator:job".into(), job.name.clone());
    tags.extend(job.aws.tags.clone());
    tags
}

fn description(jobs: &[Job]) -> String {
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let mut text = format!(
        "activator {}: AWS Batch jobs {} (generated by `activator stack`)",
        env!("CARGO_PKG_VERSION"),
        names.join(", ")
    );
    if text.len() > 1000 {
        text = format!(
            "activator {}: {} AWS Batch jobs (generated by `activator stack`)",
            env!("CARGO_PKG_VERSION"),
            jobs.len()
        );
    }
    text
}

fn parameters(jobs: &[Job]) -> Value {
    let mut parameters = json!({
        "SubnetIds": {
            "Type": "List<AWS::EC2::Subnet::Id>",
            "Description": "Private subnets of the jobs' tasks, with a route to the internet through a NAT gateway (tasks get no public IP)",
        },
        "SecurityGroupIds": {
            "Type": "List<AWS::EC2::SecurityGroup::Id>",
            "Description": "Security groups of the jobs' tasks: outbound HTTPS to S3, Secrets Manager, ECR, CloudWatch Logs and the platforms",
        },
        "ImageTag": {
            "Type": "String",
            "Description": "The image's tag in the repository; tags are immutable, so push each release under a new tag",
            "AllowedPattern": "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}",
        },
        "AlarmEmail": {
            "Type": "String",
            "Default": "",
            "Description": "Where failed jobs and alarms are mailed (the address confirms the subscription); empty for none",
            "AllowedPattern": "^$|^[^@\\s]+@[^@\\s]+$",
        },
    });
    if jobs.iter().any(is_cluster) {
        parameters["VpcId"] = json!({
            "Type": "AWS::EC2::VPC::Id",
            "Description": "The VPC of SubnetIds, where the nodes of each job whose engine is a cluster get a security group of their own",
        });
    }
    parameters
}

fn outputs(jobs: &[Job]) -> Value {
    let mut outputs = json!({
        "RepositoryUri": { "Description": "Push the image here", "Value": cfn::attribute("Repository", "RepositoryUri") },
        "JobQueueArn": { "Description": "Submit runs here", "Value": reference("JobQueue") },
        "StateBucketName": { "Description": "State of the jobs whose files name none", "Value": reference("StateBucket") },
        "AlarmTopicArn": { "Description": "Failed jobs and alarms", "Value": reference("AlarmTopic") },
    });
    for job in jobs {
        let id = logical_id(&job.name);
        outputs[format!("{id}JobDefinitionArn")] = json!({
            "Description": format!("The job definition of job {}", job.name),
            "Value": reference(&format!("{id}JobDefinition")),
        });
        if is_cluster(job) {
            let queue = job_resources::queue(job);
            outputs[format!("{queue}Arn")] = json!({
                "Description": format!("Submit runs of job {} here (its engine is a cluster)", job.name),
                "Value": reference(&queue),
            });
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids() {
        assert_eq!(logical_id("bench_b1_meta"), "BenchB1Meta");
        assert_eq!(logical_id("nightly-spenders"), "NightlySpenders");
        assert_eq!(logical_id("demo"), "Demo");
        assert_eq!(logical_id("7day"), "Job7day");
    }
}
