//! `activator stack`: the template of the repository's jobs (with s3:// URLs from their
//! variables) and of a job using every [aws] setting is what `stack::template` computes, and
//! passes cfn-lint, checkov (no failed check) and parliament (no finding in any role's policy);
//! so does one with two jobs whose engine is a cluster, AWS Batch multi-node jobs on EC2, each
//! with its own security group, compute environment and queue, and executors whose role only
//! reads the tables; jobs that cannot be deployed are refused with exit code 2, naming the file
//! and the key.
//!
//! The linters come from their own virtual environment, `.venv-deploy`, made on first use from
//! tests/requirements-deploy.txt.

use crate::common;

use common::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A job with every `[aws]` setting, a per_batch export and a REST destination whose token is
/// read from Secrets Manager by the program itself.
const NIGHTLY_CRM: &str = r#"
name = "nightly_crm"
segment = "s.sql"
profile = "meta"

[[tables]]
name = "customers"
url = "s3://lake/crm/customers"

[identifiers]
email = "email"

[[destinations]]
type = "export"
name = "parts"
url = "s3://exports/crm"
layout = "per_batch"
format = "csv"

[[destinations]]
type = "rest"
name = "crm"
url = "https://crm.example.com/audiences/members"
headers = { Authorization = "Bearer aws-secretsmanager:activator/crm#token" }

[aws]
schedule = "cron(30 5 * * ? *)"
timezone = "Europe/Paris"
vcpu = 0.5
memory_mib = 2048
retries = 5
timeout_minutes = 60
ephemeral_storage_gib = 40
invalid_share_alarm = 0.1
tags = { team = "crm", cost-centre = "42" }
"#;

/// A job whose engine is a cluster, on four nodes, whose Meta token AWS Batch injects from
/// Secrets Manager (`env:`): the main node's container gets it, the executors' do not.
const CLUSTER_CRM: &str = r#"
name = "cluster_crm"
segment = "s.sql"
profile = "meta"
engine = "ballista://127.0.0.1:50050"

[[tables]]
name = "customers"
url = "s3://lake/crm/customers"

[identifiers]
email = "email"

[[destinations]]
type = "meta"
ad_account_id = "1234567890"
audience = "crm spenders"
access_token = "env:META_ACCESS_TOKEN"

[aws]
nodes = 4
vcpu = 4
memory_mib = 15360
secrets = { META_ACCESS_TOKEN = "activator/meta-access-token" }
"#;

/// The folder of the linters' executables (`.venv-deploy`, installed on first use).
fn deploy_tools() -> PathBuf {
    deploy_python().parent().unwrap().to_path_buf()
}

/// A folder with the nightly_crm job and its SQL.
fn nightly_crm() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.sql"), "SELECT email FROM customers").unwrap();
    std::fs::write(dir.path().join("nightly_crm.toml"), NIGHTLY_CRM).unwrap();
    dir
}

/// A folder with the cluster_crm job, its SQL, and cluster_ads: the same job under another name,
/// on another instance type.
fn cluster_crm() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.sql"), "SELECT email FROM customers").unwrap();
    std::fs::write(dir.path().join("cluster_crm.toml"), CLUSTER_CRM).unwrap();
    let ads = CLUSTER_CRM
        .replace("name = \"cluster_crm\"", "name = \"cluster_ads\"")
        .replace(
            "nodes = 4\n",
            "nodes = 4\ninstance_type = \"c7i.4xlarge\"\n",
        );
    assert_ne!(ads, CLUSTER_CRM);
    std::fs::write(dir.path().join("cluster_ads.toml"), ads).unwrap();
    dir
}

/// `activator stack` with the s3:// URLs set, and `unset` left out of the environment.
fn stack(jobs: &[PathBuf], unset: &[&str]) -> std::process::Output {
    let mut cmd = activator();
    cmd.arg("stack").args(jobs);
    for (k, v) in S3_URLS {
        if unset.contains(&k) {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.env_remove("SYNC_MODE").output().unwrap()
}

fn repository_jobs() -> Vec<PathBuf> {
    REPOSITORY_JOBS.iter().map(|j| repo().join(j)).collect()
}

#[test]
fn the_template_passes_cfn_lint_checkov_and_parliament() {
    let crm = nightly_crm();
    let mut jobs = repository_jobs();
    jobs.push(crm.path().join("nightly_crm.toml"));
    let template = linted_template(&jobs);
    check_resources(&template);
}

#[test]
fn a_cluster_job_is_a_multi_node_job_on_ec2_and_passes_the_linters() {
    let cluster = cluster_crm();
    let jobs = vec![
        repository_jobs()[0].clone(),
        cluster.path().join("cluster_crm.toml"),
        cluster.path().join("cluster_ads.toml"),
    ];
    let template = linted_template(&jobs);
    check_cluster_resources(&template);
}

/// The template of `jobs` that `activator stack` prints: the library's, and passing cfn-lint,
/// checkov and parliament.
fn linted_template(jobs: &[PathBuf]) -> Value {
    let out = stack(jobs, &[]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out)
    );
    let yaml = String::from_utf8(out.stdout.clone()).unwrap();
    let template: Value = yaml_serde::from_str(&yaml).unwrap();

    // The YAML is the library's template, as YAML 1.2 reads it.
    let vars: BTreeMap<&str, &str> = S3_URLS.into_iter().collect();
    let loaded: Vec<activator::job::Job> = jobs
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            activator::job::Job::parse(p, &text, &|name| vars.get(name).map(|v| v.to_string()))
                .unwrap()
        })
        .collect();
    assert_eq!(template, activator::stack::template(&loaded).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("activator.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let tools = deploy_tools();

    let out = Command::new(tools.join("cfn-lint"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "cfn-lint:\n{}", text(&out));

    let out = Command::new(tools.join("checkov"))
        .args([
            "--skip-download",
            "--framework",
            "cloudformation",
            "--quiet",
            "--compact",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success() && text(&out).contains("Failed checks: 0"),
        "checkov:\n{}",
        text(&out)
    );

    let resources = template["Resources"].as_object().unwrap();
    let mut checked = 0;
    for (name, resource) in resources {
        for policy in resource["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let document = render(&policy["PolicyDocument"], resources);
            let findings = parliament(&tools, &document);
            assert!(
                findings.is_empty(),
                "parliament on {name}'s policy:\n{}\n{}",
                serde_json::to_string_pretty(&document).unwrap(),
                findings.join("\n")
            );
            checked += 1;
        }
    }
    // The execution role, each job's role and scheduler role, and each cluster job's executors'
    // role.
    let clusters = resources
        .values()
        .filter(|r| r["Properties"]["Type"] == "multinode")
        .count();
    assert_eq!(checked, 1 + 2 * jobs.len() + clusters);
    template
}

/// What the template must say, beyond what the linters check.
fn check_resources(template: &Value) {
    let r = &template["Resources"];
    for name in [
        "Key",
        "KeyAlias",
        "StateBucket",
        "StateBucketPolicy",
        "Repository",
        "LogGroup",
        "BatchServiceRole",
        "OnDemandEnvironment",
        "SpotEnvironment",
        "JobQueue",
        "ExecutionRole",
        "AlarmTopic",
        "AlarmTopicPolicy",
        "AlarmSubscription",
        "FailedJobRule",
        "Dashboard",
    ] {
        assert!(r.get(name).is_some(), "no {name}");
    }
    let container = |job: &str| container_of(r, job);
    assert_eq!(
        container("Demo")["Command"],
        json!(["run", "/app/jobs/demo.toml", "--date", "Ref::date"])
    );
    assert_eq!(
        container("Demo")["Secrets"],
        json!([{ "Name": "META_ACCESS_TOKEN", "ValueFrom": { "Fn::Sub":
            "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:activator/meta-access-token" } }])
    );
    let env_names = |job: &str| -> Vec<String> {
        container(job)["Environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Name"].as_str().unwrap().to_string())
            .collect()
    };
    // Only bench_b1 names no state: it keeps it in the stack's bucket.
    assert!(env_names("BenchB1").contains(&"ACTIVATOR_STATE".to_string()));
    assert!(!env_names("Demo").contains(&"ACTIVATOR_STATE".to_string()));
    assert!(container("BenchB1").get("Secrets").is_none());
    // The container reads the same job file: it gets the variables the stack was made with.
    let environment = &container("Demo")["Environment"];
    for (name, value) in [
        ("DEMO_DATA", "s3://lake/crm"),
        ("DEMO_OUT", "s3://exports/demo"),
    ] {
        assert!(
            environment
                .as_array()
                .unwrap()
                .contains(&json!({ "Name": name, "Value": value })),
            "{name} in {environment}"
        );
    }
    assert_eq!(
        container("NightlyCrm")["ResourceRequirements"],
        json!([{ "Type": "VCPU", "Value": "0.5" }, { "Type": "MEMORY", "Value": "2048" }])
    );
    let definition = &r["NightlyCrmJobDefinition"]["Properties"];
    assert_eq!(definition["RetryStrategy"]["Attempts"], json!(5));
    assert_eq!(definition["Timeout"]["AttemptDurationSeconds"], json!(3600));
    assert_eq!(definition["Tags"]["team"], json!("crm"));
    let schedule = &r["NightlyCrmSchedule"]["Properties"];
    assert_eq!(schedule["ScheduleExpression"], json!("cron(30 5 * * ? *)"));
    assert_eq!(
        schedule["ScheduleExpressionTimezone"],
        json!("Europe/Paris")
    );
    // YAML 1.1 would read a plain OFF as false.
    assert_eq!(
        r["DemoSchedule"]["Properties"]["FlexibleTimeWindow"]["Mode"],
        json!("OFF")
    );
    assert_eq!(
        r["NightlyCrmInvalidShareAlarm"]["Properties"]["Threshold"],
        json!(0.1)
    );
    // No job's engine is a cluster: no EC2 resources, no executors' role, no VPC to name.
    for name in r.as_object().unwrap().keys() {
        assert!(
            !name.contains("Cluster") && !name.ends_with("ExecutorRole"),
            "{name}"
        );
    }
    assert!(properties_of_type(r, "AWS::EC2::SecurityGroup").is_empty());
    assert!(template["Parameters"].get("VpcId").is_none());
    // The jobs' tags differ, so the shared resources carry the application's only.
    assert_eq!(
        r["StateBucket"]["Properties"]["Tags"],
        json!([{ "Key": "app", "Value": "activator" }])
    );
    let outputs = template["Outputs"].as_object().unwrap();
    for job in [
        "Demo",
        "BenchB1",
        "BenchB1Meta",
        "BenchB1Google",
        "NightlyCrm",
    ] {
        assert!(
            outputs.contains_key(&format!("{job}JobDefinitionArn")),
            "no output of {job}"
        );
    }
}

/// What the template of the demo, cluster_crm and cluster_ads must say of the cluster jobs and
/// their EC2 resources, beyond what the linters check.
fn check_cluster_resources(template: &Value) {
    let r = &template["Resources"];
    assert_eq!(
        template["Parameters"]["VpcId"]["Type"],
        json!("AWS::EC2::VPC::Id")
    );
    let definition = &r["ClusterCrmJobDefinition"]["Properties"];
    assert_eq!(definition["Type"], json!("multinode"));
    assert_eq!(definition["PlatformCapabilities"], json!(["EC2"]));
    assert!(definition.get("ContainerProperties").is_none());
    let nodes = &definition["NodeProperties"];
    assert_eq!(
        (&nodes["NumNodes"], &nodes["MainNode"]),
        (&json!(4), &json!(0))
    );
    let ranges = nodes["NodeRangeProperties"].as_array().unwrap();
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[0]["TargetNodes"], json!("0"));
    assert_eq!(ranges[1]["TargetNodes"], json!("1:"));
    let (main, executor) = (&ranges[0]["Container"], &ranges[1]["Container"]);
    assert_eq!(
        main["Command"],
        json!([
            "cluster",
            "main",
            "/app/jobs/cluster_crm.toml",
            "--date",
            "Ref::date"
        ])
    );
    assert_eq!(
        executor["Command"],
        json!([
            "cluster",
            "executor",
            "--bind",
            "0.0.0.0",
            "--work-dir",
            "/tmp/shuffle"
        ])
    );
    // The main node sends to Meta; the executors only read the tables.
    assert_eq!(main["Secrets"][0]["Name"], json!("META_ACCESS_TOKEN"));
    assert!(executor.get("Secrets").is_none(), "{executor}");
    for container in [main, executor] {
        assert_eq!(
            container["ResourceRequirements"],
            json!([{ "Type": "VCPU", "Value": "4" }, { "Type": "MEMORY", "Value": "15360" }])
        );
        assert_eq!(container["ReadonlyRootFilesystem"], json!(true));
        assert_eq!(container["User"], json!("65532"));
        for fargate_only in [
            "NetworkConfiguration",
            "EphemeralStorage",
            "FargatePlatformConfiguration",
        ] {
            assert!(container.get(fargate_only).is_none(), "{fargate_only}");
        }
    }
    check_executor_role(r, main, executor);
    // The demo stays a Fargate task.
    assert_eq!(
        container_of(r, "Demo")["Command"],
        json!(["run", "/app/jobs/demo.toml", "--date", "Ref::date"])
    );

    // No queue, environment or security group is shared by the cluster jobs.
    for shared in [
        "ClusterSecurityGroup",
        "ClusterEnvironment",
        "ClusterJobQueue",
    ] {
        assert!(r.get(shared).is_none(), "{shared}");
    }
    assert!(template["Outputs"].get("ClusterJobQueueArn").is_none());
    let queue_of = |job: &str| {
        let input = r[format!("{job}Schedule")]["Properties"]["Target"]["Input"]["Fn::Sub"]
            .as_str()
            .unwrap();
        serde_json::from_str::<Value>(input).unwrap()["JobQueue"].clone()
    };
    assert_eq!(queue_of("Demo"), json!("${JobQueue}"));
    for (job, instance_type) in [("ClusterCrm", "m7i.2xlarge"), ("ClusterAds", "c7i.4xlarge")] {
        // The job's queue, on its own EC2 environment only, of its own instance type, is where
        // its schedule submits it, and the only queue its scheduler role may submit to.
        let queue = format!("{job}ClusterJobQueue");
        let environment = format!("{job}ClusterEnvironment");
        assert_eq!(
            r[&queue]["Properties"]["ComputeEnvironmentOrder"],
            json!([{ "Order": 1, "ComputeEnvironment": { "Ref": environment } }])
        );
        let compute = &r[&environment]["Properties"]["ComputeResources"];
        assert_eq!(compute["Type"], json!("EC2"));
        assert_eq!(compute["InstanceTypes"], json!([instance_type]));
        assert_eq!(
            compute["PlacementGroup"],
            json!({ "Ref": format!("{job}ClusterPlacementGroup") })
        );
        assert_eq!(
            compute["InstanceRole"],
            json!({ "Fn::GetAtt": ["ClusterInstanceProfile", "Arn"] })
        );
        // The job's own group, besides the deployer's.
        let groups = serde_json::to_string(&compute["SecurityGroupIds"]).unwrap();
        assert!(
            groups.contains(&format!("\"{job}ClusterSecurityGroup\"")),
            "{groups}"
        );
        for other in ["ClusterCrm", "ClusterAds"].iter().filter(|o| **o != job) {
            assert!(!groups.contains(other), "{job}: {groups}");
        }
        assert_eq!(queue_of(job), json!(format!("${{{queue}}}")));
        let role = &r[format!("{job}SchedulerRole")]["Properties"]["Policies"][0];
        let submit = role["PolicyDocument"]["Statement"][0]["Resource"]
            .as_array()
            .unwrap();
        assert!(submit.contains(&json!({ "Ref": queue })));
        assert!(!submit.contains(&json!({ "Ref": "JobQueue" })));
        assert!(
            template["Outputs"].get(format!("{queue}Arn")).is_some(),
            "no output {queue}Arn"
        );
        check_cluster_security_group(r, job);
    }
    assert_eq!(
        r["FailedJobRule"]["Properties"]["EventPattern"]["detail"]["jobQueue"],
        json!([
            { "Ref": "JobQueue" },
            { "Ref": "ClusterCrmClusterJobQueue" },
            { "Ref": "ClusterAdsClusterJobQueue" }
        ])
    );
    // One group, two node-to-node rules, and one environment per cluster job.
    assert_eq!(properties_of_type(r, "AWS::EC2::SecurityGroup").len(), 2);
    for kind in [
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::SecurityGroupEgress",
    ] {
        assert_eq!(properties_of_type(r, kind).len(), 2, "{kind}");
    }
}

/// The main node runs with the job's role, the executors with one of their own, trusted by ECS
/// tasks alike, whose policy reads the job's tables (the job role's `ReadTables`) and writes
/// nothing: no put, no delete, no secret.
fn check_executor_role(r: &Value, main: &Value, executor: &Value) {
    assert_eq!(
        main["JobRoleArn"],
        json!({ "Fn::GetAtt": ["ClusterCrmJobRole", "Arn"] })
    );
    assert_eq!(
        executor["JobRoleArn"],
        json!({ "Fn::GetAtt": ["ClusterCrmExecutorRole", "Arn"] })
    );
    let role = &r["ClusterCrmExecutorRole"]["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"],
        r["ClusterCrmJobRole"]["Properties"]["AssumeRolePolicyDocument"]
    );
    let policies = role["Policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1);
    let statements = policies[0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let actions: Vec<&str> = statements
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap())
        .map(|a| a.as_str().unwrap())
        .collect();
    for action in &actions {
        assert!(
            *action != "s3:PutObject"
                && *action != "s3:DeleteObject"
                && !action.starts_with("secretsmanager:"),
            "the executors may {action}"
        );
    }
    assert!(actions.contains(&"s3:GetObject"), "{actions:?}");
    let read_tables = |policy: &Value| {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "ReadTables")
            .cloned()
    };
    let job_role = &r["ClusterCrmJobRole"]["Properties"]["Policies"][0]["PolicyDocument"];
    assert!(read_tables(job_role).is_some());
    assert_eq!(
        read_tables(&policies[0]["PolicyDocument"]),
        read_tables(job_role)
    );
}

/// The job's nodes' group lets in only the group itself, on Ballista's ports 50050-50100, and
/// lets out HTTPS and those ports to itself; every rule says why.
fn check_cluster_security_group(r: &Value, job: &str) {
    let name = format!("{job}ClusterSecurityGroup");
    let group = json!({ "Fn::GetAtt": [name, "GroupId"] });
    let properties = &r[&name]["Properties"];
    assert_eq!(properties["VpcId"], json!({ "Ref": "VpcId" }));
    assert!(properties.get("SecurityGroupIngress").is_none());
    let egress = properties["SecurityGroupEgress"].as_array().unwrap();
    assert_eq!(egress.len(), 1);
    assert_eq!(
        (
            &egress[0]["FromPort"],
            &egress[0]["ToPort"],
            &egress[0]["CidrIp"]
        ),
        (&json!(443), &json!(443), &json!("0.0.0.0/0"))
    );
    assert!(egress[0]["Description"].is_string());
    for (rule, kind, peer) in [
        (
            "ClusterIngressFromNodes",
            "AWS::EC2::SecurityGroupIngress",
            "SourceSecurityGroupId",
        ),
        (
            "ClusterEgressToNodes",
            "AWS::EC2::SecurityGroupEgress",
            "DestinationSecurityGroupId",
        ),
    ] {
        let resource = &r[format!("{job}{rule}")];
        assert_eq!(resource["Type"], json!(kind), "{job}{rule}");
        let rule = &resource["Properties"];
        assert_eq!(rule["GroupId"], group, "{kind}");
        assert_eq!(rule[peer], group, "{kind}");
        assert_eq!(
            (&rule["IpProtocol"], &rule["FromPort"], &rule["ToPort"]),
            (&json!("tcp"), &json!(50050), &json!(50100)),
            "{kind}"
        );
        assert!(rule.get("CidrIp").is_none(), "{kind}");
        assert!(rule["Description"].is_string(), "{kind}");
    }
}

fn properties_of_type<'a>(resources: &'a Value, kind: &str) -> Vec<&'a Value> {
    resources
        .as_object()
        .unwrap()
        .values()
        .filter(|resource| resource["Type"] == kind)
        .map(|resource| &resource["Properties"])
        .collect()
}

fn container_of<'a>(resources: &'a Value, job: &str) -> &'a Value {
    &resources[format!("{job}JobDefinition")]["Properties"]["ContainerProperties"]
}

/// Runs parliament on a policy; its findings, less one it gets wrong: it reads a job
/// definition's ARN as `job-definition/NAME`, while SubmitJob authorizes the revision's,
/// `job-definition/NAME:N` (AWS Batch's user guide, "Accounting for job definition revisions":
/// a policy naming the job definition without its revision does not match SubmitJob).
fn parliament(tools: &Path, document: &Value) -> Vec<String> {
    let mut child = Command::new(tools.join("parliament"))
        .arg("--json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Parliament reads a policy piped to it (with --file it refuses a stdin that is not a terminal).
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(document.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "parliament failed: {}",
        text(&out)
    );
    let known = json!([{ "action": "batch:SubmitJob", "required_format": "arn:*:batch:*:*:job-definition/*" }]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let finding: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            !(finding["issue"] == "RESOURCE_MISMATCH" && finding["detail"] == known)
        })
        .map(str::to_string)
        .collect()
}

const ACCOUNT: &str = "123456789012";
const REGION: &str = "eu-west-1";

/// The document with `Ref`, `Fn::GetAtt` and `Fn::Sub` replaced by what they would be in an
/// account (placeholder ids, real shapes), for linters that read plain IAM policies.
fn render(value: &Value, resources: &Map<String, Value>) -> Value {
    match value {
        Value::Object(o) if o.len() == 1 && o.contains_key("Ref") => {
            Value::String(reference(o["Ref"].as_str().unwrap(), resources))
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("Fn::GetAtt") => {
            Value::String(arn(o["Fn::GetAtt"][0].as_str().unwrap(), resources))
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("Fn::Sub") => {
            Value::String(substitute(o["Fn::Sub"].as_str().unwrap(), resources))
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), render(v, resources)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| render(v, resources)).collect()),
        other => other.clone(),
    }
}

fn substitute(text: &str, resources: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let name = &rest[start + 2..end];
        out.push_str(&match name.split_once('.') {
            Some((resource, "Arn")) => arn(resource, resources),
            _ => reference(name, resources),
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn kind<'a>(name: &str, resources: &'a Map<String, Value>) -> &'a str {
    resources
        .get(name)
        .and_then(|r| r["Type"].as_str())
        .unwrap_or_else(|| panic!("no resource {name}"))
}

/// What `Ref` gives: pseudo parameters, parameters, a resource's name or ARN.
fn reference(name: &str, resources: &Map<String, Value>) -> String {
    match name {
        "AWS::Partition" => "aws".into(),
        "AWS::Region" => REGION.into(),
        "AWS::AccountId" => ACCOUNT.into(),
        "AWS::URLSuffix" => "amazonaws.com".into(),
        "AWS::StackName" => "activator".into(),
        "ImageTag" => "v1".into(),
        _ => match kind(name, resources) {
            "AWS::S3::Bucket" => "activator-statebucket-1a2b3c4d5e6f".into(),
            "AWS::Logs::LogGroup" => "/aws/batch/activator".into(),
            "AWS::ECR::Repository" => "activator".into(),
            "AWS::KMS::Key" => "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            _ => arn(name, resources),
        },
    }
}

/// What `Fn::GetAtt NAME.Arn` gives (and `Ref` of the types whose `Ref` is their ARN).
fn arn(name: &str, resources: &Map<String, Value>) -> String {
    let prefix = |service: &str| format!("arn:aws:{service}:{REGION}:{ACCOUNT}");
    match kind(name, resources) {
        "AWS::S3::Bucket" => format!("arn:aws:s3:::{}", reference(name, resources)),
        "AWS::KMS::Key" => format!("{}:key/{}", prefix("kms"), reference(name, resources)),
        "AWS::ECR::Repository" => format!("{}:repository/activator", prefix("ecr")),
        "AWS::Logs::LogGroup" => format!("{}:log-group:/aws/batch/activator:*", prefix("logs")),
        "AWS::IAM::Role" => format!("arn:aws:iam::{ACCOUNT}:role/activator-{name}-ABCDEF123456"),
        "AWS::Batch::JobQueue" => format!("{}:job-queue/{name}-0123456789abcdef", prefix("batch")),
        "AWS::Batch::JobDefinition" => format!(
            "{}:job-definition/{name}-0123456789abcdef:1",
            prefix("batch")
        ),
        "AWS::SNS::Topic" => format!("{}:activator-{name}-ABCDEF123456", prefix("sns")),
        "AWS::Events::Rule" => format!("{}:rule/activator-{name}-ABCDEF123456", prefix("events")),
        other => panic!("no ARN for {name} ({other})"),
    }
}

#[test]
fn jobs_that_cannot_be_deployed_are_refused_naming_the_key() {
    // The demo's tables are local folders unless DEMO_DATA says otherwise.
    let out = stack(&repository_jobs()[..1], &["DEMO_DATA"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let message = text(&out);
    assert!(
        message.contains("demo.toml: tables[0] (customers).url"),
        "{message}"
    );
    assert!(
        message.contains("a deployed job reads and writes s3:// URLs"),
        "{message}"
    );

    // `base_url = "sandbox"` is the in-process emulator.
    let out = stack(&repository_jobs()[..1], &["PLATFORM_URL"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("demo.toml: destinations[1].base_url: `sandbox`"),
        "{}",
        text(&out)
    );

    // An `env:` reference needs a secret to be filled from.
    let crm = nightly_crm();
    let job = crm.path().join("nightly_crm.toml");
    let text_of_job =
        NIGHTLY_CRM.replace("aws-secretsmanager:activator/crm#token", "env:CRM_TOKEN");
    std::fs::write(&job, text_of_job).unwrap();
    let out = stack(std::slice::from_ref(&job), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let message = text(&out);
    assert!(
        message
            .contains("nightly_crm.toml: destinations[1].headers.Authorization: `env:CRM_TOKEN`"),
        "{message}"
    );
    assert!(
        message.contains("add CRM_TOKEN = \"SECRET_NAME\""),
        "{message}"
    );

    // A header's secret read from a variable would be written into the job definition: refused,
    // naming the header and not the value, also when a key read before the header (the URL)
    // reads the same variable.
    let header_variable_refused = |text_of_job: &str| {
        assert_ne!(text_of_job, NIGHTLY_CRM);
        std::fs::write(&job, text_of_job).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_activator"))
            .arg("stack")
            .arg(&job)
            .env("CRM_API_KEY", "k-7f3a9c")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("destinations[1].headers.X-Api-Key: reads ${CRM_API_KEY}"),
            "{}",
            text(&out)
        );
        assert!(!text(&out).contains("k-7f3a9c"), "the value is not shown");
    };
    let text_of_job = NIGHTLY_CRM.replace(
        "headers = { Authorization = \"Bearer aws-secretsmanager:activator/crm#token\" }",
        "headers = { X-Api-Key = \"${CRM_API_KEY}\" }",
    );
    header_variable_refused(&text_of_job);
    let read_by_the_url_first = text_of_job.replace(
        "url = \"https://crm.example.com/audiences/members\"",
        "url = \"https://crm.example.com/audiences/members?key=${CRM_API_KEY}\"",
    );
    assert!(read_by_the_url_first.contains("?key="));
    header_variable_refused(&read_by_the_url_first);

    // Two deployed jobs may not share a name.
    std::fs::write(&job, NIGHTLY_CRM).unwrap();
    let copy = crm.path().join("nightly_crm_copy.toml");
    std::fs::write(&copy, NIGHTLY_CRM).unwrap();
    let out = stack(&[job, copy], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("nightly_crm_copy.toml: name: `nightly_crm` is also the name of"),
        "{}",
        text(&out)
    );
}

#[test]
fn cluster_settings_that_cannot_be_deployed_are_refused_naming_the_key() {
    // A multi-node job has a main node and at least one executor.
    let cluster = cluster_crm();
    let job = cluster.path().join("cluster_crm.toml");
    std::fs::write(&job, CLUSTER_CRM.replace("nodes = 4", "nodes = 1")).unwrap();
    let out = stack(std::slice::from_ref(&job), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cluster_crm.toml: aws.nodes: 2 to 64 nodes"),
        "{}",
        text(&out)
    );

    // Fargate's sizes do not apply to a node, but its vCPUs are whole.
    std::fs::write(&job, CLUSTER_CRM.replace("vcpu = 4", "vcpu = 0.5")).unwrap();
    let out = stack(std::slice::from_ref(&job), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cluster_crm.toml: aws.vcpu: a whole number of vCPUs"),
        "{}",
        text(&out)
    );

    // More vCPUs than the cluster's compute environment has.
    let text_of_job = CLUSTER_CRM
        .replace("nodes = 4", "nodes = 64")
        .replace("vcpu = 4", "vcpu = 8");
    std::fs::write(&job, text_of_job).unwrap();
    let out = stack(std::slice::from_ref(&job), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cluster_crm.toml: aws.nodes: 64 nodes of 8 vCPUs need 512 vCPUs"),
        "{}",
        text(&out)
    );

    // Nodes mean nothing to a job whose engine is local (a Fargate task).
    let crm = nightly_crm();
    let job = crm.path().join("nightly_crm.toml");
    std::fs::write(&job, NIGHTLY_CRM.replace("[aws]\n", "[aws]\nnodes = 4\n")).unwrap();
    let out = stack(std::slice::from_ref(&job), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out)
            .contains("nightly_crm.toml: aws.nodes: only for a job whose engine is a cluster"),
        "{}",
        text(&out)
    );
}
