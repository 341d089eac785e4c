//! The resources every job of the stack shares: key, state bucket, image repository, log group,
//! AWS Batch's compute environments and queue, and the execution role; and when some jobs' engine
//! is a cluster, the one thing their nodes share: the EC2 instances' role (and its profile). Each
//! cluster job's security group, placement group, compute environment and queue are its own
//! (`job_resources`): nodes of different jobs must not reach each other's unauthenticated
//! Ballista ports.

use crate::job::Job;
use crate::stack::cfn::{
    allow, allow_if, arn_of, policy, reference, resource, service_role, sub, tag_list, tag_map,
};
use crate::stack::policy::unique;
use crate::stack::references::secret_iam_resource;
use crate::stack::{LOG_GROUP, REPOSITORY, is_cluster};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

type Tags = BTreeMap<String, String>;

/// Adds the shared resources.
pub fn add(resources: &mut Map<String, Value>, jobs: &[Job], tags: &Tags) {
    resources.insert("Key".into(), key(tags));
    resources.insert(
        "KeyAlias".into(),
        resource(
            "AWS::KMS::Alias",
            json!({ "AliasName": sub("alias/${AWS::StackName}"), "TargetKeyId": reference("Key") }),
        ),
    );
    resources.insert("StateBucket".into(), state_bucket(tags));
    resources.insert("StateBucketPolicy".into(), state_bucket_policy());
    resources.insert("Repository".into(), repository(tags));
    resources.insert("LogGroup".into(), log_group(tags));
    resources.insert("BatchServiceRole".into(), batch_service_role(tags));
    resources.insert(
        "OnDemandEnvironment".into(),
        compute_environment("FARGATE", tags),
    );
    resources.insert(
        "SpotEnvironment".into(),
        compute_environment("FARGATE_SPOT", tags),
    );
    resources.insert("JobQueue".into(), job_queue(tags));
    resources.insert("ExecutionRole".into(), execution_role(jobs, tags));
    if jobs.iter().any(is_cluster) {
        add_cluster(resources, tags);
    }
}

/// What the jobs whose engine is a cluster share: the role of their EC2 instances. The rest of
/// a cluster job's network and compute is its own (`job_resources`): its nodes must not reach
/// another job's unauthenticated scheduler and Flight ports, and a compute environment's security
/// groups are those of every job it runs.
fn add_cluster(resources: &mut Map<String, Value>, tags: &Tags) {
    resources.insert("ClusterInstanceRole".into(), cluster_instance_role(tags));
    resources.insert(
        "ClusterInstanceProfile".into(),
        resource(
            "AWS::IAM::InstanceProfile",
            json!({ "Roles": [reference("ClusterInstanceRole")] }),
        ),
    );
}

/// The nodes' instances: their ECS agent joins AWS Batch's cluster, pulls the image and writes
/// logs (AWS's managed policy for that). The containers get their job's roles, not this one, and
/// this one is alike for every job: one role serves them all.
fn cluster_instance_role(tags: &Tags) -> Value {
    let mut role = service_role("ec2.amazonaws.com", false, vec![], tags);
    role["Properties"]["ManagedPolicyArns"] = json!([sub(
        "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
    )]);
    role
}

/// Kept when the stack is deleted or the key replaced: the state and logs it encrypted would be
/// unreadable without it.
fn retained(mut resource: Value) -> Value {
    resource["DeletionPolicy"] = "Retain".into();
    resource["UpdateReplacePolicy"] = "Retain".into();
    resource
}

/// The key of the state bucket, repository, logs and alarm topic. The account administers it
/// (IAM policies then grant its use); CloudWatch Logs encrypts the log group with it, and
/// CloudWatch alarms and EventBridge publish to the encrypted topic with it.
fn key(tags: &Tags) -> Value {
    let administer = json!({
        "Sid": "AccountAdministersTheKey",
        "Effect": "Allow",
        "Principal": { "AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root") },
        "Action": "kms:*",
        "Resource": "*",
    });
    let logs = json!({
        "Sid": "LogsEncryptTheLogGroup",
        "Effect": "Allow",
        "Principal": { "Service": sub("logs.${AWS::Region}.amazonaws.com") },
        "Action": ["kms:Decrypt*", "kms:Describe*", "kms:Encrypt*", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
        "Resource": "*",
        "Condition": { "ArnEquals": { "kms:EncryptionContext:aws:logs:arn": sub(format!(
            "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{LOG_GROUP}"
        )) } },
    });
    let publish = json!({
        "Sid": "AlarmsAndEventsPublishToTheTopic",
        "Effect": "Allow",
        "Principal": { "Service": ["cloudwatch.amazonaws.com", "events.amazonaws.com"] },
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
    });
    retained(resource(
        "AWS::KMS::Key",
        json!({
            "Description": "activator: state bucket, image repository, logs and alarm topic",
            "EnableKeyRotation": true,
            "KeyPolicy": policy(vec![administer, logs, publish]),
            "Tags": tag_list(tags),
        }),
    ))
}

/// The state of jobs whose files name none. Old versions (the runs' files that `prune`
/// deletes) expire after 30 days; an upload a killed run left is aborted after a day.
fn state_bucket(tags: &Tags) -> Value {
    let mut bucket = retained(resource(
        "AWS::S3::Bucket",
        json!({
            "BucketEncryption": { "ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": { "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": arn_of("Key") },
                "BucketKeyEnabled": true,
            }] },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": true, "BlockPublicPolicy": true,
                "IgnorePublicAcls": true, "RestrictPublicBuckets": true,
            },
            "OwnershipControls": { "Rules": [{ "ObjectOwnership": "BucketOwnerEnforced" }] },
            "VersioningConfiguration": { "Status": "Enabled" },
            "LifecycleConfiguration": { "Rules": [
                { "Id": "abort-incomplete-uploads", "Status": "Enabled",
                  "AbortIncompleteMultipartUpload": { "DaysAfterInitiation": 1 } },
                { "Id": "expire-old-versions", "Status": "Enabled",
                  "NoncurrentVersionExpiration": { "NoncurrentDays": 30 } },
            ] },
            "Tags": tag_list(tags),
        }),
    ));
    bucket["Metadata"] = json!({ "checkov": { "skip": [{
        "id": "CKV_AWS_18",
        "comment": "Access logs would need a second bucket; only the jobs' roles use this one, and CloudTrail data events audit it where required",
    }] } });
    bucket
}

fn state_bucket_policy() -> Value {
    let deny_plain_http = json!({
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn_of("StateBucket"), sub("${StateBucket.Arn}/*")],
        "Condition": { "Bool": { "aws:SecureTransport": "false" } },
    });
    resource(
        "AWS::S3::BucketPolicy",
        json!({ "Bucket": reference("StateBucket"), "PolicyDocument": policy(vec![deny_plain_http]) }),
    )
}

fn repository(tags: &Tags) -> Value {
    resource(
        "AWS::ECR::Repository",
        json!({
            "RepositoryName": REPOSITORY,
            "ImageTagMutability": "IMMUTABLE",
            "ImageScanningConfiguration": { "ScanOnPush": true },
            "EncryptionConfiguration": { "EncryptionType": "KMS", "KmsKey": arn_of("Key") },
            "Tags": tag_list(tags),
        }),
    )
}

/// The jobs' output: logs, and the EMF lines CloudWatch turns into metrics. No identifier's
/// value is ever logged.
fn log_group(tags: &Tags) -> Value {
    resource(
        "AWS::Logs::LogGroup",
        json!({
            "LogGroupName": LOG_GROUP,
            "RetentionInDays": 90,
            "KmsKeyId": arn_of("Key"),
            "Tags": tag_list(tags),
        }),
    )
}

/// AWS Batch's own role. Real AWS would use its service-linked role without it; naming one keeps
/// the template creatable in emulators (moto) that require it.
fn batch_service_role(tags: &Tags) -> Value {
    let mut role = service_role("batch.amazonaws.com", false, vec![], tags);
    role["Properties"]["ManagedPolicyArns"] = json!([sub(
        "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSBatchServiceRole"
    )]);
    role
}

fn compute_environment(kind: &str, tags: &Tags) -> Value {
    resource(
        "AWS::Batch::ComputeEnvironment",
        json!({
            "Type": "MANAGED",
            "State": "ENABLED",
            "ServiceRole": arn_of("BatchServiceRole"),
            "ComputeResources": {
                "Type": kind,
                "MaxvCpus": 256,
                "Subnets": reference("SubnetIds"),
                "SecurityGroupIds": reference("SecurityGroupIds"),
            },
            "Tags": tag_map(tags),
        }),
    )
}

/// On-demand Fargate first, Fargate Spot second: a night's audience push is a few vCPU-minutes,
/// so Spot's discount is worth cents while a reclaim delays the delivery (a reclaimed run exits
/// 3 and is retried, resuming from its checkpoints). Spot takes the jobs the on-demand
/// environment has no room for (its `MaxvCpus`).
fn job_queue(tags: &Tags) -> Value {
    resource(
        "AWS::Batch::JobQueue",
        json!({
            "Priority": 1,
            "State": "ENABLED",
            "ComputeEnvironmentOrder": [
                { "Order": 1, "ComputeEnvironment": reference("OnDemandEnvironment") },
                { "Order": 2, "ComputeEnvironment": reference("SpotEnvironment") },
            ],
            "Tags": tag_map(tags),
        }),
    )
}

/// What starts a job's task: pulling the image, writing the log stream, and reading the secrets
/// the job definitions inject (`[aws] secrets`).
fn execution_role(jobs: &[Job], tags: &Tags) -> Value {
    let mut statements = vec![
        // ECR's token is account-wide: the action takes no resource.
        allow(
            "GetAuthorizationToken",
            &["ecr:GetAuthorizationToken"],
            vec![json!("*")],
        ),
        allow(
            "PullImage",
            &[
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            vec![arn_of("Repository")],
        ),
        allow(
            "WriteLogs",
            &["logs:CreateLogStream", "logs:PutLogEvents"],
            vec![sub(
                "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${LogGroup}:log-stream:*",
            )],
        ),
    ];
    let secrets: BTreeSet<&String> = jobs.iter().flat_map(|j| j.aws.secrets.values()).collect();
    if !secrets.is_empty() {
        let arns = unique(secrets.into_iter().map(|s| secret_iam_resource(s)));
        statements.push(allow(
            "ReadJobSecrets",
            &["secretsmanager:GetSecretValue"],
            arns,
        ));
        statements.push(allow_if(
            "DecryptJobSecrets",
            &["kms:Decrypt"],
            vec![arn_of("Key")],
            json!({ "StringEquals": { "kms:ViaService": sub("secretsmanager.${AWS::Region}.amazonaws.com") } }),
        ));
    }
    service_role(
        "ecs-tasks.amazonaws.com",
        true,
        vec![("start-activator-jobs", policy(statements))],
        tags,
    )
}
