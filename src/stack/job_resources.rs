//! A job's own resources: its role (the policy computed from the job), its AWS Batch job
//! definition (a Fargate task, or for a job whose engine is a cluster a multi-node parallel job
//! on EC2), and its schedule with the role that submits it.

use crate::error::Result;
use crate::job::Job;
use crate::stack::cfn::{allow, arn_of, policy, reference, resource, service_role, sub, tag_map};
use crate::stack::checks::file_name;
use crate::stack::policy::{STACK_STATE_PREFIX, StateLocation, job_policy};
use crate::stack::references::{env_names, secret_value_from};
use crate::stack::{JOBS_FOLDER, is_cluster, logical_id};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

type Tags = BTreeMap<String, String>;

/// Adds the job's role, job definition, scheduler role and schedule.
pub fn add(resources: &mut Map<String, Value>, job: &Job, tags: &Tags) -> Result<()> {
    let id = logical_id(&job.name);
    let state = StateLocation::of(job)?;
    let role = service_role(
        "ecs-tasks.amazonaws.com",
        true,
        vec![("activator-job", job_policy(job, &state))],
        tags,
    );
    resources.insert(format!("{id}JobRole"), role);
    resources.insert(
        format!("{id}JobDefinition"),
        job_definition(job, &id, &state, tags),
    );
    resources.insert(format!("{id}SchedulerRole"), scheduler_role(job, &id, tags));
    resources.insert(format!("{id}Schedule"), schedule(job, &id));
    Ok(())
}

/// The queue the job is submitted to: the cluster's (EC2) for a job whose engine is a cluster,
/// else the Fargate one.
fn queue(job: &Job) -> &'static str {
    if is_cluster(job) {
        "ClusterJobQueue"
    } else {
        "JobQueue"
    }
}

/// A Fargate task, or a multi-node parallel job on EC2 (AWS Batch runs those on EC2 only) for
/// a job whose engine is a cluster; both retried and stopped alike.
fn job_definition(job: &Job, id: &str, state: &StateLocation, tags: &Tags) -> Value {
    let aws = &job.aws;
    let mut properties = if is_cluster(job) {
        json!({
            "Type": "multinode",
            "PlatformCapabilities": ["EC2"],
            "NodeProperties": node_properties(job, id, state),
        })
    } else {
        json!({
            "Type": "container",
            "PlatformCapabilities": ["FARGATE"],
            "ContainerProperties": container(job, id, state),
        })
    };
    properties["PropagateTags"] = json!(true);
    properties["RetryStrategy"] =
        json!({ "Attempts": aws.retries, "EvaluateOnExit": evaluate_on_exit() });
    properties["Timeout"] = json!({ "AttemptDurationSeconds": aws.timeout_minutes * 60 });
    properties["Tags"] = tag_map(tags);
    resource("AWS::Batch::JobDefinition", properties)
}

/// At most five entries, the first that matches decides, and a failure none matches is
/// retried: hence the two catch-alls at the end (exit codes 1, 2 and 4 are not retried).
fn evaluate_on_exit() -> Value {
    json!([
        // A transient failure (network, storage, platform, SIGTERM on a Spot reclaim).
        { "OnExitCode": "3", "Action": "RETRY" },
        // The host went away (Spot, maintenance).
        { "OnStatusReason": "Host EC2*", "Action": "RETRY" },
        { "OnReason": "CannotPullContainerError:*", "Action": "RETRY" },
        { "OnExitCode": "*", "Action": "EXIT" },
        { "OnReason": "*", "Action": "EXIT" },
    ])
}

/// The Fargate task: the image's entrypoint runs `run /app/jobs/FILE --date <scheduled time>`,
/// with `/tmp` (spill files of the diff) on the task's ephemeral storage.
fn container(job: &Job, id: &str, state: &StateLocation) -> Value {
    let command = json!(["run", job_file(job), "--date", "Ref::date"]);
    let mut container = base_container(job, id, state, command);
    // Private subnets: the task reaches S3, the platforms and AWS's APIs through NAT.
    container["NetworkConfiguration"] = json!({ "AssignPublicIp": "DISABLED" });
    container["EphemeralStorage"] = json!({ "SizeInGiB": job.aws.ephemeral_storage_gib });
    container["FargatePlatformConfiguration"] = json!({ "PlatformVersion": "LATEST" });
    add_secrets(&mut container, job);
    container
}

/// A job whose engine is a cluster: node 0 runs the job with a Ballista scheduler of its own
/// (`cluster main`), the other nodes are executors, which find it at the main node's address
/// AWS Batch gives them (`AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS`) and advertise their
/// own, spilling shuffle files below `/tmp`; the job ends when the main node exits. Executors
/// read the tables (the job's role) but send nothing to platforms: they get no secrets.
fn node_properties(job: &Job, id: &str, state: &StateLocation) -> Value {
    let command = json!(["cluster", "main", job_file(job), "--date", "Ref::date"]);
    let mut main = base_container(job, id, state, command);
    add_secrets(&mut main, job);
    let command = json!([
        "cluster",
        "executor",
        "--bind",
        "0.0.0.0",
        "--work-dir",
        "/tmp/shuffle"
    ]);
    let executor = base_container(job, id, state, command);
    json!({
        "NumNodes": job.aws.nodes,
        "MainNode": 0,
        "NodeRangeProperties": [
            { "TargetNodes": "0", "Container": main },
            { "TargetNodes": "1:", "Container": executor },
        ],
    })
}

/// The job file as the image holds it.
fn job_file(job: &Job) -> String {
    format!("{JOBS_FOLDER}/{}", file_name(job))
}

/// What every container of the job has, on Fargate or EC2: the image and `command`, the job's
/// size, role and environment, its logs, and an unprivileged user on a read-only root file
/// system with `/tmp` writable (a Docker volume on EC2).
fn base_container(job: &Job, id: &str, state: &StateLocation, command: Value) -> Value {
    let aws = &job.aws;
    json!({
        "Image": sub("${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${Repository}:${ImageTag}"),
        "Command": command,
        "ResourceRequirements": [
            { "Type": "VCPU", "Value": aws.vcpu.to_string() },
            { "Type": "MEMORY", "Value": aws.memory_mib.to_string() },
        ],
        "JobRoleArn": arn_of(&format!("{id}JobRole")),
        "ExecutionRoleArn": arn_of("ExecutionRole"),
        "Environment": environment(job, state),
        "LogConfiguration": {
            "LogDriver": "awslogs",
            "Options": {
                "awslogs-group": reference("LogGroup"),
                "awslogs-region": reference("AWS::Region"),
                "awslogs-stream-prefix": job.name,
            },
        },
        "ReadonlyRootFilesystem": true,
        "User": "65532",
        "Volumes": [{ "Name": "tmp" }],
        "MountPoints": [{ "SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": false }],
    })
}

fn environment(job: &Job, state: &StateLocation) -> Vec<Value> {
    let mut environment = vec![
        json!({ "Name": "ACTIVATOR_METRICS", "Value": "emf" }),
        json!({ "Name": "AWS_REGION", "Value": reference("AWS::Region") }),
    ];
    // The variables the job file read when the stack was made: at run time the container reads
    // the same file, and must see the same values (`checks` refuses those that look like secrets).
    for (name, (value, _)) in &job.variables {
        environment.push(json!({ "Name": name, "Value": value }));
    }
    if *state == StateLocation::StackBucket {
        let folder = STACK_STATE_PREFIX.trim_end_matches('/');
        environment.push(json!({ "Name": "ACTIVATOR_STATE", "Value": sub(format!("s3://${{StateBucket}}/{folder}")) }));
    }
    environment
}

/// The secrets the job's `env:` references read, injected from Secrets Manager (none, no key).
fn add_secrets(container: &mut Value, job: &Job) {
    let secrets: Vec<Value> = env_names(job)
        .iter()
        .filter_map(|name| job.aws.secrets.get(name).map(|secret| (name, secret)))
        .map(|(name, secret)| json!({ "Name": name, "ValueFrom": secret_value_from(secret) }))
        .collect();
    if !secrets.is_empty() {
        container["Secrets"] = Value::Array(secrets);
    }
}

/// The scheduler's role may submit this job definition to its queue, nothing else. The job
/// definition's ARN is its revision's (`name:N`), which is what SubmitJob authorizes.
fn scheduler_role(job: &Job, id: &str, tags: &Tags) -> Value {
    let submit = allow(
        "SubmitTheJob",
        &["batch:SubmitJob"],
        vec![
            reference(queue(job)),
            reference(&format!("{id}JobDefinition")),
            sub("arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}:job/*"),
        ],
    );
    service_role(
        "scheduler.amazonaws.com",
        true,
        vec![("submit-activator-job", policy(vec![submit]))],
        tags,
    )
}

/// Submits the job at `[aws] schedule` with the scheduled time as its date (`run --date` takes
/// its UTC date). The scheduler retries a failed submission; a second submission of the same
/// date finds the date's run finished, or resumes it.
fn schedule(job: &Job, id: &str) -> Value {
    let input = json!({
        "JobName": job.name,
        "JobQueue": format!("${{{}}}", queue(job)),
        "JobDefinition": format!("${{{id}JobDefinition}}"),
        "Parameters": { "date": "<aws.scheduler.scheduled-time>" },
    });
    resource(
        "AWS::Scheduler::Schedule",
        json!({
            "Description": format!("activator job {}", job.name),
            "ScheduleExpression": job.aws.schedule,
            "ScheduleExpressionTimezone": job.aws.timezone,
            "FlexibleTimeWindow": { "Mode": "OFF" },
            "State": "ENABLED",
            "Target": {
                "Arn": sub("arn:${AWS::Partition}:scheduler:::aws-sdk:batch:submitJob"),
                "RoleArn": arn_of(&format!("{id}SchedulerRole")),
                "Input": sub(input.to_string()),
                "RetryPolicy": { "MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600 },
            },
        }),
    )
}
