//! Least privilege, checked on real requests: every S3 and Secrets Manager request the demo and
//! B1 jobs make against moto falls inside the role policy `activator stack` generates for them,
//! and that policy grants nothing outside the jobs' folders and secrets.
//!
//! The runs reach moto through a recording proxy (tests/least_privilege/check.py `proxy`), one
//! per job, which logs each request's method, path, query and deciding headers. The jobs:
//! - the demo, its token read from Secrets Manager by the program (`aws-secretsmanager:`), its
//!   Meta sync (the in-process sandbox) a mirror, run for two dates: the second reads the first's
//!   state back;
//! - the same with a `per_batch` export (staged parts copied into place, then `_SUCCESS`), run
//!   twice for one date (`--force`): the rerun replaces the parts the first left;
//! - B1 over generated data, its state in the stack's bucket (`ACTIVATOR_STATE`, as its job
//!   definition sets it).
//!
//! check.py `check` maps each request to the IAM action, resource and condition keys AWS
//! authorizes it with and evaluates it against the job's role policy from the template; checks
//! that each grant lies inside the folders and secrets the job declares; and that the requests
//! the runs are meant to make were made. The policy of a job written out literally is
//! src/stack/policy.rs's `a_job_gets_exactly_its_prefixes`.

use crate::common;

use common::*;
use serde_json::json;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// The demo's token, a JSON secret read by the program.
const SECRET: &str = "activator/demo-meta";
/// The stack's bucket, where B1 (whose file names no state) keeps its state.
const STATE_BUCKET: &str = "activator-state";

/// The variables that give the jobs' URLs, for the runs and for `activator stack`.
const JOB_URLS: [(&str, &str); 5] = [
    ("DEMO_DATA", "s3://lake/demo"),
    ("DEMO_OUT", "s3://exports/demo"),
    ("DEMO_STATE", "s3://lake/demo-state"),
    ("B1_DATA", "s3://lake/b1"),
    ("B1_OUT", "s3://exports/b1"),
];

fn check_py() -> PathBuf {
    repo().join("tests/least_privilege/check.py")
}

/// A recording proxy in front of moto, logging to `log`; stopped when dropped.
struct Recorder {
    endpoint: String,
    log: PathBuf,
    child: Child,
}

impl Recorder {
    fn start(moto: &Moto, log: PathBuf) -> Recorder {
        let port = free_port();
        let child = Command::new(python())
            .arg(check_py())
            .args(["proxy", &moto.endpoint, &port.to_string()])
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the recording proxy");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the recording proxy did not start on {endpoint}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Recorder {
            endpoint,
            log,
            child,
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of jobs/demo.toml named `name`: its segment's path absolute, its token read from
/// Secrets Manager by the program (so no `[aws] secrets` mapping), its Meta sync a mirror, and
/// with `per_batch`, its export written in parts.
fn demo_copy(dir: &Path, name: &str, per_batch: bool) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join("jobs/demo.toml")).unwrap();
    let sql = repo().join("sql/demo.sql");
    let mut edits = vec![
        (
            "name = \"demo\"\n".to_string(),
            format!("name = \"{name}\"\n"),
        ),
        (
            "segment = \"../sql/demo.sql\"".to_string(),
            format!("segment = \"{}\"", sql.display()),
        ),
        (
            "access_token = \"env:META_ACCESS_TOKEN\"".to_string(),
            format!("access_token = \"aws-secretsmanager:{SECRET}#token\"\nsync = \"mirror\""),
        ),
        (
            "secrets = { META_ACCESS_TOKEN = \"activator/meta-access-token\" }\n".to_string(),
            String::new(),
        ),
    ];
    if per_batch {
        edits.push((
            "format = \"parquet\"\n".to_string(),
            "format = \"parquet\"\nlayout = \"per_batch\"\nbatch = { max_rows = 200 }\n"
                .to_string(),
        ));
    }
    for (old, new) in edits {
        assert!(text.contains(&old), "jobs/demo.toml no longer has {old:?}");
        text = text.replacen(&old, &new, 1);
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `job` for `date` against moto through `recorder`.
fn run(
    moto: &Moto,
    recorder: &Recorder,
    job: &Path,
    date: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) {
    let mut cmd = activator();
    cmd.arg("run")
        .arg(job)
        .args(["--date", date, "--quiet"])
        .args(extra)
        .envs(moto.env())
        .env("AWS_ENDPOINT_URL", &recorder.endpoint)
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env_remove("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .envs(JOB_URLS)
        .envs(env.iter().copied())
        .env_remove("PLATFORM_URL")
        .env_remove("META_ACCESS_TOKEN")
        .env_remove("AUDIENCE")
        .env_remove("SYNC_MODE");
    run_ok(&mut cmd);
}

#[test]
fn every_request_is_inside_the_generated_policy_and_the_policy_inside_the_jobs() {
    let moto = Moto::start();
    for bucket in ["lake", "exports", STATE_BUCKET] {
        moto.create_bucket(bucket);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lake = moto.store("lake");
    rt.block_on(upload_dir(
        lake.as_ref(),
        &repo().join("testdata/demo"),
        "demo",
    ));
    // B1's folder holds orders too, which it does not read: listing `b1/` would be denied.
    rt.block_on(upload_dir(lake.as_ref(), &generated_data(5_000, 2), "b1"));
    let status = Command::new(python())
        .args([
            "-c",
            "import sys, json, boto3; boto3.client('secretsmanager', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name=sys.argv[3]).create_secret(Name=sys.argv[2], SecretString=json.dumps({'token': 'least-privilege'}))",
            &moto.endpoint,
            SECRET,
            REGION,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "create the secret {SECRET}");

    let dir = tempfile::tempdir().unwrap();
    let demo = demo_copy(dir.path(), "demo", false);
    let parts = demo_copy(dir.path(), "demo_parts", true);
    let b1 = repo().join("jobs/bench_b1.toml");

    let recorder = Recorder::start(&moto, dir.path().join("demo.jsonl"));
    for date in ["2026-11-24", "2026-11-25"] {
        run(&moto, &recorder, &demo, date, &[], &[]);
    }
    let demo_log = recorder.log.clone();
    drop(recorder);

    let recorder = Recorder::start(&moto, dir.path().join("demo_parts.jsonl"));
    run(&moto, &recorder, &parts, "2026-11-25", &[], &[]);
    run(&moto, &recorder, &parts, "2026-11-25", &["--force"], &[]);
    let parts_log = recorder.log.clone();
    drop(recorder);

    let recorder = Recorder::start(&moto, dir.path().join("bench_b1.jsonl"));
    let state = format!("s3://{STATE_BUCKET}/state");
    run(
        &moto,
        &recorder,
        &b1,
        "2026-11-25",
        &[],
        &[("ACTIVATOR_STATE", state.as_str())],
    );
    let b1_log = recorder.log.clone();
    drop(recorder);

    // The template of the same job files, with the same variables (`sandbox` is not deployable;
    // the policy does not depend on the platform's URL).
    let out = activator()
        .arg("stack")
        .args([&demo, &parts, &b1])
        .envs(JOB_URLS)
        .env("PLATFORM_URL", "https://graph.facebook.com")
        .env_remove("AUDIENCE")
        .env_remove("SYNC_MODE")
        .output()
        .unwrap();
    assert!(out.status.success(), "activator stack:\n{}", text(&out));
    let template = dir.path().join("template.yaml");
    std::fs::write(&template, &out.stdout).unwrap();

    let secret_arn = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{SECRET}-??????");
    let spec = json!({
        "template": template,
        "partition": "aws",
        "region": REGION,
        "account": ACCOUNT,
        "refs": { "StateBucket": STATE_BUCKET },
        "jobs": {
            "demo": {
                "role": "DemoJobRole",
                "requests": [demo_log],
                "tables": ["s3://lake/demo/customers/", "s3://lake/demo/orders/"],
                "state": "s3://lake/demo-state/demo/",
                "exports": ["s3://exports/demo/"],
                "secrets": [SECRET],
                "expect": [
                    ["secretsmanager:GetSecretValue", secret_arn],
                    ["s3:ListBucket", "arn:aws:s3:::lake"],
                    ["s3:GetObject", "arn:aws:s3:::lake/demo/customers/dt=2026-11-25/*"],
                    ["s3:GetObject", "arn:aws:s3:::lake/demo/orders/dt=2026-11-24/*"],
                    ["s3:PutObject", "arn:aws:s3:::lake/demo-state/demo/destinations/*"],
                    // The mirror run reads the first run's sync back.
                    ["s3:GetObject", "arn:aws:s3:::lake/demo-state/demo/destinations/*"],
                    ["s3:DeleteObject", "arn:aws:s3:::lake/demo-state/demo/*"],
                    ["s3:PutObject", "arn:aws:s3:::exports/demo/demo-2026-11-24.parquet"],
                    ["s3:PutObject", "arn:aws:s3:::exports/demo/demo-2026-11-25.parquet"]
                ]
            },
            "demo_parts": {
                "role": "DemoPartsJobRole",
                "requests": [parts_log],
                "tables": ["s3://lake/demo/customers/", "s3://lake/demo/orders/"],
                "state": "s3://lake/demo-state/demo_parts/",
                "exports": [{ "url": "s3://exports/demo/", "layout": "per_batch" }],
                "secrets": [SECRET],
                "expect": [
                    ["secretsmanager:GetSecretValue", secret_arn],
                    ["s3:PutObject", "arn:aws:s3:::exports/demo/_staging-demo_parts-2026-11-25-*"],
                    // Parts are copied out of staging, then deleted there.
                    ["s3:GetObject", "arn:aws:s3:::exports/demo/_staging-demo_parts-2026-11-25-*"],
                    ["s3:DeleteObject", "arn:aws:s3:::exports/demo/_staging-demo_parts-2026-11-25-*"],
                    ["s3:PutObject", "arn:aws:s3:::exports/demo/demo_parts-2026-11-25/_SUCCESS"],
                    // The rerun replaces the first run's parts.
                    ["s3:DeleteObject", "arn:aws:s3:::exports/demo/demo_parts-2026-11-25/part-*"],
                    ["s3:ListBucket", "arn:aws:s3:::exports"]
                ]
            },
            "bench_b1": {
                "role": "BenchB1JobRole",
                "requests": [b1_log],
                "tables": ["s3://lake/b1/customers/"],
                "state": format!("s3://{STATE_BUCKET}/state/bench_b1/"),
                "exports": ["s3://exports/b1/"],
                "expect": [
                    ["s3:ListBucket", "arn:aws:s3:::lake"],
                    ["s3:GetObject", "arn:aws:s3:::lake/b1/customers/dt=2026-11-25/*"],
                    ["s3:PutObject", format!("arn:aws:s3:::{STATE_BUCKET}/state/bench_b1/*")],
                    ["s3:PutObject", "arn:aws:s3:::exports/b1/bench_b1-2026-11-25.parquet"]
                ]
            }
        }
    });
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, serde_json::to_string_pretty(&spec).unwrap()).unwrap();

    let out = Command::new(python())
        .arg(check_py())
        .arg("check")
        .arg(&spec_file)
        .output()
        .unwrap();
    let report = text(&out);
    println!("{report}");
    assert!(
        out.status.success(),
        "requests outside the policy, or grants outside the jobs:\n{report}"
    );
}
