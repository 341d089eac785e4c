//! Telling people: an encrypted SNS topic (mailed to `AlarmEmail` when given) that hears of every
//! failed job of the stack's queues (the Fargate one and each cluster job's), and per job two
//! alarms on the metrics runs print.

use crate::job::Job;
use crate::stack::cfn::{arn_of, from_this_account, policy, reference, resource, tag_list};
use crate::stack::job_resources::queue;
use crate::stack::{NAMESPACE, is_cluster, logical_id};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

type Tags = BTreeMap<String, String>;

/// Adds the topic, its policy and subscription, and the rule on failed jobs.
pub fn add_shared(resources: &mut Map<String, Value>, jobs: &[Job], tags: &Tags) {
    resources.insert(
        "AlarmTopic".into(),
        resource(
            "AWS::SNS::Topic",
            json!({ "DisplayName": "activator", "KmsMasterKeyId": reference("Key"), "Tags": tag_list(tags) }),
        ),
    );
    resources.insert("AlarmTopicPolicy".into(), topic_policy());
    let mut subscription = resource(
        "AWS::SNS::Subscription",
        json!({ "Protocol": "email", "Endpoint": reference("AlarmEmail"), "TopicArn": reference("AlarmTopic") }),
    );
    subscription["Condition"] = "HasAlarmEmail".into();
    resources.insert("AlarmSubscription".into(), subscription);
    // The Fargate queue, and each cluster job's own.
    let mut queues = vec![reference("JobQueue")];
    queues.extend(
        jobs.iter()
            .filter(|job| is_cluster(job))
            .map(|job| reference(&queue(job))),
    );
    resources.insert("FailedJobRule".into(), failed_job_rule(queues, tags));
}

/// The rule publishes failed jobs; the account's alarms publish theirs.
fn topic_policy() -> Value {
    let publish = |sid: &str, service: &str, condition: Value| {
        json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": { "Service": service },
            "Action": "sns:Publish",
            "Resource": reference("AlarmTopic"),
            "Condition": condition,
        })
    };
    let events = publish(
        "FailedJobRulePublishes",
        "events.amazonaws.com",
        json!({ "ArnEquals": { "aws:SourceArn": arn_of("FailedJobRule") } }),
    );
    let alarms = publish(
        "AlarmsPublish",
        "cloudwatch.amazonaws.com",
        from_this_account(),
    );
    resource(
        "AWS::SNS::TopicPolicy",
        json!({ "Topics": [reference("AlarmTopic")], "PolicyDocument": policy(vec![events, alarms]) }),
    )
}

/// Every job of the stack's queues that fails (after its retries): AWS Batch's state-change event.
fn failed_job_rule(queues: Vec<Value>, tags: &Tags) -> Value {
    resource(
        "AWS::Events::Rule",
        json!({
            "Description": "activator jobs that failed after their retries",
            "State": "ENABLED",
            "EventPattern": {
                "source": ["aws.batch"],
                "detail-type": ["Batch Job State Change"],
                "detail": { "status": ["FAILED"], "jobQueue": queues },
            },
            "Targets": [{ "Id": "alarm-topic", "Arn": reference("AlarmTopic") }],
            "Tags": tag_list(tags),
        }),
    )
}

/// Adds the job's alarms.
pub fn add_alarms(resources: &mut Map<String, Value>, job: &Job, tags: &Tags) {
    let id = logical_id(&job.name);
    resources.insert(format!("{id}NoSuccessAlarm"), no_success_alarm(job, tags));
    resources.insert(
        format!("{id}InvalidShareAlarm"),
        invalid_share_alarm(job, tags),
    );
}

fn job_dimension(job: &Job) -> Value {
    json!([{ "Name": "Job", "Value": job.name }])
}

/// A successful run prints `Members` once; no sample in 26 hourly periods (missing data counts
/// as breaching) means the nightly run did not succeed for a day and two hours.
fn no_success_alarm(job: &Job, tags: &Tags) -> Value {
    resource(
        "AWS::CloudWatch::Alarm",
        json!({
            "AlarmDescription": format!("activator job {}: no successful run for 26 hours", job.name),
            "Namespace": NAMESPACE,
            "MetricName": "Members",
            "Dimensions": job_dimension(job),
            "Statistic": "SampleCount",
            "Period": 3600,
            "EvaluationPeriods": 26,
            "DatapointsToAlarm": 26,
            "Threshold": 1,
            "ComparisonOperator": "LessThanThreshold",
            "TreatMissingData": "breaching",
            "AlarmActions": [reference("AlarmTopic")],
            "Tags": tag_list(tags),
        }),
    )
}

/// Invalid values per row read, in the hour of a run, above `[aws] invalid_share_alarm`: the
/// source data went bad (a column emptied, a format changed).
fn invalid_share_alarm(job: &Job, tags: &Tags) -> Value {
    let metric = |id: &str, name: &str| {
        json!({
            "Id": id,
            "ReturnData": false,
            "MetricStat": {
                "Metric": { "Namespace": NAMESPACE, "MetricName": name, "Dimensions": job_dimension(job) },
                "Period": 3600,
                "Stat": "Sum",
            },
        })
    };
    let share = job.aws.invalid_share_alarm;
    resource(
        "AWS::CloudWatch::Alarm",
        json!({
            "AlarmDescription": format!("activator job {}: more than {share} invalid values per row read", job.name),
            "Metrics": [
                metric("invalid", "InvalidValues"),
                metric("rows", "RowsRead"),
                { "Id": "share", "Expression": "invalid / rows", "Label": "invalid values per row read", "ReturnData": true },
            ],
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "Threshold": share,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [reference("AlarmTopic")],
            "Tags": tag_list(tags),
        }),
    )
}
