//! A job's own resources: its role (the policy computed from the job), its AWS Batch job
//! definition (a Fargate task, or for a job whose engine is a cluster a multi-node parallel job
//! on EC2), and its schedule with the role that submits it.
//!
//! A job whose engine is a cluster also has its executors' role (they read the tables, nothing
//! else), and its own security group, placement group, EC2 compute environment and queue: the
//! scheduler and Flight ports of a Ballista cluster take no credentials (Flight serves the
//! shuffle data), so only the nodes of the same job may reach them, and since a compute
//! environment's security groups are every job's it runs (a multi-node job definition takes none
//! per node), each cluster job runs in an environment of its own.

use crate::error::Result;
use crate::job::Job;
use crate::stack::cfn::{
    allow, arn_of, attribute, list_plus, policy, reference, resource, service_role, sub, tag_list,
    tag_map,
};
use crate::stack::checks::file_name;
use crate::stack::policy::{STACK_STATE_PREFIX, StateLocation, job_policy, table_read_policy};
use crate::stack::references::{env_names, secret_value_from};
use crate::stack::{JOBS_FOLDER, is_cluster, logical_id};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

type Tags = BTreeMap<String, String>;

/// The ports of a cluster's nodes: the scheduler's (50050), each executor's Flight port and the
/// gRPC port after it (50051 and 50052 by default), and room for executors given other ports.
const CLUSTER_PORTS: (u16, u16) = (crate::segment::SCHEDULER_PORT, 50_100);

/// A cluster job's compute environment's vCPUs at most (`checks` refuses a job that needs more).
pub const CLUSTER_MAX_VCPUS: u32 = 256;

/// Adds the job's role, job definition, scheduler role and schedule, and a cluster job's own
/// executor role, network and compute.
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
    if is_cluster(job) {
        add_cluster(resources, job, &id, tags);
    }
    Ok(())
}

/// The queue the job is submitted to (a logical id): its own (EC2) for a job whose engine is a
/// cluster, else the Fargate one every other job shares.
pub fn queue(job: &Job) -> String {
    if is_cluster(job) {
        format!("{}ClusterJobQueue", logical_id(&job.name))
    } else {
        "JobQueue".into()
    }
}

/// A cluster job's own resources beyond its role, definition and schedule: the executors' role,
/// the nodes' security group and its two rules between nodes, a placement group, and the EC2
/// compute environment and queue that give the nodes that group.
fn add_cluster(resources: &mut Map<String, Value>, job: &Job, id: &str, tags: &Tags) {
    resources.insert(format!("{id}ExecutorRole"), executor_role(job, tags));
    let group = format!("{id}ClusterSecurityGroup");
    resources.insert(group.clone(), cluster_security_group(job, tags));
    resources.insert(
        format!("{id}ClusterIngressFromNodes"),
        node_to_node_rule(
            &group,
            "AWS::EC2::SecurityGroupIngress",
            "SourceSecurityGroupId",
            "Ballista scheduler and executors, from the nodes of this job only",
        ),
    );
    resources.insert(
        format!("{id}ClusterEgressToNodes"),
        node_to_node_rule(
            &group,
            "AWS::EC2::SecurityGroupEgress",
            "DestinationSecurityGroupId",
            "Ballista scheduler and executors, to the nodes of this job only",
        ),
    );
    resources.insert(
        format!("{id}ClusterPlacementGroup"),
        resource(
            "AWS::EC2::PlacementGroup",
            json!({ "Strategy": "cluster", "Tags": tag_list(tags) }),
        ),
    );
    resources.insert(
        format!("{id}ClusterEnvironment"),
        cluster_environment(job, id, tags),
    );
    resources.insert(queue(job), cluster_job_queue(id, tags));
}

/// The executors' role: they read the job's tables and nothing else (`table_read_policy`), so
/// an executor, which serves its shuffle data to whoever reaches its Flight port, holds no
/// credentials that write the state or the exports or read the secrets.
fn executor_role(job: &Job, tags: &Tags) -> Value {
    service_role(
        "ecs-tasks.amazonaws.com",
        true,
        vec![("activator-executor", table_read_policy(job))],
        tags,
    )
}

/// The group of the job's nodes' network interfaces (a multi-node job's containers get their
/// own, in `awsvpc` mode), in addition to the deployer's `SecurityGroupIds`: HTTPS out (S3, ECR,
/// CloudWatch Logs, Secrets Manager, the platforms, through the NAT gateway) and Ballista's ports
/// between the job's nodes, both ways (those two rules name the group itself, so they are
/// resources of their own). Nothing else comes in: not another job's nodes, which have groups
/// of their own (so the deployer's groups must not let them in either: a VPC's default group
/// admits everything from its members). Security groups do not filter the VPC's DNS.
fn cluster_security_group(job: &Job, tags: &Tags) -> Value {
    resource(
        "AWS::EC2::SecurityGroup",
        json!({
            "GroupDescription": format!("activator cluster nodes of job {}: Ballista between them, HTTPS out", job.name),
            "VpcId": reference("VpcId"),
            "SecurityGroupEgress": [{
                "Description": "HTTPS to S3, ECR, CloudWatch Logs, Secrets Manager and the platforms",
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "CidrIp": "0.0.0.0/0",
            }],
            "Tags": tag_list(tags),
        }),
    )
}

/// A rule of the nodes' group (`group`, a logical id; `kind`: an ingress or egress rule) on the
/// cluster's ports, whose other end (`peer`: the source or destination) is the group itself.
fn node_to_node_rule(group: &str, kind: &str, peer: &str, description: &str) -> Value {
    let group = attribute(group, "GroupId");
    let (from, to) = CLUSTER_PORTS;
    let mut rule = json!({
        "GroupId": group,
        "Description": description,
        "IpProtocol": "tcp",
        "FromPort": from,
        "ToPort": to,
    });
    rule[peer] = group;
    resource(kind, rule)
}

/// On-demand EC2 instances of the job's instance type, none while it does not run, in the
/// deployer's subnets and the job's cluster placement group (nodes close together exchange
/// shuffle data fast; the group keeps them in one Availability Zone). The group is the job's
/// own, like the environment that fills it: a job's nodes are launched together into an empty
/// group (what AWS advises for cluster groups), not next to another job's running instances,
/// and two jobs may run at once in different zones. Its security groups are the deployer's and
/// the job's nodes' own (five at most). Each environment and queue counts against AWS Batch's
/// quotas of the Region (50 of each by default), which bound the stack's cluster jobs.
// IMDSv2 only would need a launch template (MetadataOptions): compute resources have no such key.
fn cluster_environment(job: &Job, id: &str, tags: &Tags) -> Value {
    resource(
        "AWS::Batch::ComputeEnvironment",
        json!({
            "Type": "MANAGED",
            "State": "ENABLED",
            "ServiceRole": arn_of("BatchServiceRole"),
            "ComputeResources": {
                "Type": "EC2",
                "AllocationStrategy": "BEST_FIT_PROGRESSIVE",
                "MinvCpus": 0,
                "MaxvCpus": CLUSTER_MAX_VCPUS,
                "InstanceTypes": [job.aws.instance_type],
                "Subnets": reference("SubnetIds"),
                "SecurityGroupIds": list_plus(
                    "SecurityGroupIds",
                    attribute(&format!("{id}ClusterSecurityGroup"), "GroupId"),
                ),
                "InstanceRole": arn_of("ClusterInstanceProfile"),
                "PlacementGroup": reference(&format!("{id}ClusterPlacementGroup")),
                "Tags": tag_map(tags),
            },
            "Tags": tag_map(tags),
        }),
    )
}

/// The job's queue, on its EC2 environment only (a queue's compute environments are all Fargate
/// or all EC2, and AWS Batch runs multi-node jobs on EC2 only).
fn cluster_job_queue(id: &str, tags: &Tags) -> Value {
    resource(
        "AWS::Batch::JobQueue",
        json!({
            "Priority": 1,
            "State": "ENABLED",
            "ComputeEnvironmentOrder": [
                { "Order": 1, "ComputeEnvironment": reference(&format!("{id}ClusterEnvironment")) },
            ],
            "Tags": tag_map(tags),
        }),
    )
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
/// read the tables but write nothing and send nothing to platforms: they get a role that only
/// reads the tables (`{id}ExecutorRole`), and no secrets.
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
    let mut executor = base_container(job, id, state, command);
    executor["JobRoleArn"] = arn_of(&format!("{id}ExecutorRole"));
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
/// size, role (an executor's is then replaced by its own) and environment, its logs, and an
/// unprivileged user on a read-only root file system with `/tmp` writable (a Docker volume on
/// EC2).
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

/// The scheduler's role may submit this job definition to its queue (a cluster job's own),
/// nothing else. The job definition's ARN is its revision's (`name:N`), which is what SubmitJob
/// authorizes.
fn scheduler_role(job: &Job, id: &str, tags: &Tags) -> Value {
    let submit = allow(
        "SubmitTheJob",
        &["batch:SubmitJob"],
        vec![
            reference(&queue(job)),
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
