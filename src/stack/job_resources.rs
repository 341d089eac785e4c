//! A job's own resources: its role (the policy computed from the job), its AWS Batch job
//! definition, and its schedule with the role that submits it.

use crate::error::Result;
use crate::job::Job;
use crate::stack::cfn::{allow, arn_of, policy, reference, resource, service_role, sub, tag_map};
use crate::stack::checks::file_name;
use crate::stack::policy::{STACK_STATE_PREFIX, StateLocation, job_policy};
use crate::stack::references::{env_names, secret_value_from};
use crate::stack::{JOBS_FOLDER, logical_id};
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
    resources.insert(format!("{id}SchedulerRole"), scheduler_role(&id, tags));
    resources.insert(format!("{id}Schedule"), schedule(job, &id));
    Ok(())
}

fn job_definition(job: &Job, id: &str, state: &StateLocation, tags: &Tags) -> Value {
    let aws = &job.aws;
    resource(
        "AWS::Batch::JobDefinition",
        json!({
            "Type": "container",
            "PlatformCapabilities": ["FARGATE"],
            "PropagateTags": true,
            "ContainerProperties": container(job, id, state),
            "RetryStrategy": { "Attempts": aws.retries, "EvaluateOnExit": evaluate_on_exit() },
            "Timeout": { "AttemptDurationSeconds": aws.timeout_minutes * 60 },
            "Tags": tag_map(tags),
        }),
    )
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

/// The task: the image's entrypoint runs `run /app/jobs/FILE --date <scheduled time>` as an
/// unprivileged user on a read-only root file system, with `/tmp` (spill files of the diff) on
/// the task's ephemeral storage.
fn container(job: &Job, id: &str, state: &StateLocation) -> Value {
    let aws = &job.aws;
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
    let secrets: Vec<Value> = env_names(job)
        .iter()
        .filter_map(|name| aws.secrets.get(name).map(|secret| (name, secret)))
        .map(|(name, secret)| json!({ "Name": name, "ValueFrom": secret_value_from(secret) }))
        .collect();
    let mut container = json!({
        "Image": sub("${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${Repository}:${ImageTag}"),
        "Command": ["run", format!("{JOBS_FOLDER}/{}", file_name(job)), "--date", "Ref::date"],
        "ResourceRequirements": [
            { "Type": "VCPU", "Value": aws.vcpu.to_string() },
            { "Type": "MEMORY", "Value": aws.memory_mib.to_string() },
        ],
        "JobRoleArn": arn_of(&format!("{id}JobRole")),
        "ExecutionRoleArn": arn_of("ExecutionRole"),
        "Environment": environment,
        "LogConfiguration": {
            "LogDriver": "awslogs",
            "Options": {
                "awslogs-group": reference("LogGroup"),
                "awslogs-region": reference("AWS::Region"),
                "awslogs-stream-prefix": job.name,
            },
        },
        // Private subnets: the task reaches S3, the platforms and AWS's APIs through NAT.
        "NetworkConfiguration": { "AssignPublicIp": "DISABLED" },
        "ReadonlyRootFilesystem": true,
        "User": "65532",
        "Volumes": [{ "Name": "tmp" }],
        "MountPoints": [{ "SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": false }],
        "EphemeralStorage": { "SizeInGiB": aws.ephemeral_storage_gib },
        "FargatePlatformConfiguration": { "PlatformVersion": "LATEST" },
    });
    if !secrets.is_empty() {
        container["Secrets"] = Value::Array(secrets);
    }
    container
}

/// The scheduler's role may submit this job definition to the stack's queue, nothing else. The
/// job definition's ARN is its revision's (`name:N`), which is what SubmitJob authorizes.
fn scheduler_role(id: &str, tags: &Tags) -> Value {
    let submit = allow(
        "SubmitTheJob",
        &["batch:SubmitJob"],
        vec![
            reference("JobQueue"),
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
        "JobQueue": "${JobQueue}",
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
