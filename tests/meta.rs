//! The Meta connector against the sandbox: the audience ends with exactly the members the export
//! of the same run has, requests stay within Meta's limits, faults are retried, permanent errors
//! stop the run, and neither the token nor raw e-mails reach the logs.

use crate::common;

use activator::sandbox::SandboxConfig;
use activator::sandbox::faults::FaultConfig;
local_fixture!();
use common::*;
use std::collections::BTreeSet;
use std::path::Path;

const TOKEN: &str = "EAAB-test-token-4f1c2d";

impl Fixture {
    /// A job over the demo data exporting and uploading the same members.
    fn job(&self, meta: &str) -> std::path::PathBuf {
        let job = format!(
            r#"segment = "{repo}/sql/demo.sql"
profile = "meta"
default_region = "US"
[vars]
min_spend = 0
[[tables]]
name = "customers"
url = "{repo}/testdata/demo/customers"
partitions = ["dt"]
[[tables]]
name = "orders"
url = "{repo}/testdata/demo/orders"
partitions = ["dt"]
[identifiers]
email = "email"
phone = "phone"
first_name = "first_name"
last_name = "last_name"
zip = "zip"
country = "country"
mobile_ad_id = "mobile_ad_id"
[[destinations]]
type = "export"
url = "{out}"
[[destinations]]
type = "meta"
ad_account_id = "1234567890"
access_token = "env:META_ACCESS_TOKEN"
base_url = "{url}"
batch = {{ max_rows = 250 }}
{meta}
"#,
            repo = repo().display(),
            out = self.dir.path().join("out").display(),
            url = self.sandbox.url,
        );
        let path = self.dir.path().join("job.toml");
        std::fs::write(&path, job).unwrap();
        path
    }

    fn run(&self, job: &Path) -> (i32, String) {
        let out = activator()
            .arg("run")
            .arg(job)
            .args(["--date", "2026-11-25", "--quiet"])
            .env("META_ACCESS_TOKEN", TOKEN)
            .env("ACTIVATOR_LOG", "debug")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn audience(&self, name: &str) -> (String, Vec<serde_json::Value>) {
        let store = &self.sandbox.state.store;
        let a = store
            .list()
            .into_iter()
            .find(|a| a.name == name)
            .expect("audience exists");
        let members = store.members(&a.id).unwrap();
        (a.id, members)
    }
}

fn emails(members: &[serde_json::Value]) -> BTreeSet<String> {
    members
        .iter()
        .filter_map(|m| m["EMAIL"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn add_creates_the_audience_with_exactly_the_exported_members() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run(&f.job("audience = \"spenders\""));
    assert_eq!(code, 0, "{out}");
    let (_, members) = f.audience("spenders");
    let exported = f.exported_emails();
    assert!(exported.len() > 500, "{}", exported.len());
    assert_eq!(emails(&members), exported);
    let rows = parquet_column(
        &f.dir.path().join("out/job-2026-11-25.parquet"),
        "email_sha256",
    )
    .len();
    assert_eq!(
        members.len(),
        rows,
        "one sandbox member per exported member"
    );
    let stats = f.sandbox.state.store.stats();
    assert!(stats.max_rows_per_request <= 250, "{stats:?}");
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.batches_accepted as usize, rows.div_ceil(250));
    // Hashes for hashed keys, the raw lowercase id for MADID.
    let m = members
        .iter()
        .find(|m| m["MADID"].is_string())
        .expect("a member with a MADID");
    assert_eq!(m["MADID"].as_str().unwrap().len(), 36);
    assert_eq!(m["EMAIL"].as_str().map(str::len), Some(64));
    // A second run finds the audience by name instead of creating another.
    let (code, out) = f.run(&f.job("audience = \"spenders\""));
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.sandbox.state.store.list().len(), 1);
    assert_eq!(emails(&f.audience("spenders").1), exported);
}

#[test]
fn remove_and_replace() {
    let f = Fixture::with_faults(FaultConfig::default());
    assert_eq!(f.run(&f.job("audience = \"a\"")).0, 0);
    let (id, members) = f.audience("a");
    assert!(!members.is_empty());
    let (code, out) = f.run(&f.job(&format!("audience_id = \"{id}\"\noperation = \"remove\"")));
    assert_eq!(code, 0, "{out}");
    assert!(f.audience("a").1.is_empty());
    // Replace swaps whatever is there for the segment.
    f.sandbox.state.store.apply(
        &id,
        None,
        true,
        [r#"{"EMAIL":"stale"}"#.to_string()].into_iter().collect(),
        false,
    );
    let (code, out) = f.run(&f.job(&format!("audience_id = \"{id}\"\noperation = \"replace\"")));
    assert_eq!(code, 0, "{out}");
    assert_eq!(emails(&f.audience("a").1), f.exported_emails());
}

#[test]
fn with_errors_throttling_and_dropped_connections_every_member_arrives() {
    let f = Fixture::with_faults(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.1,
        seed: 7,
        // The audience is created, and the answer saying so is lost.
        once: create_answer_lost("/customaudiences"),
        ..FaultConfig::default()
    });
    let (code, out) = f.run(&f.job("audience = \"flaky\"\nconcurrency = 3"));
    assert_eq!(code, 0, "{out}");
    let (_, members) = f.audience("flaky");
    assert_eq!(emails(&members), f.exported_emails());
    let stats = f.sandbox.state.store.stats();
    assert!(
        stats.injected_errors + stats.injected_throttles + stats.injected_drops > 0,
        "{stats:?}"
    );
    assert!(out.contains("retries"), "{out}");
    // Created once, though the first create was applied and its answer lost.
    assert!(f.targeted_faults_spent());
    let store = &f.sandbox.state.store;
    assert_eq!(
        store.list().iter().filter(|a| a.platform == "meta").count(),
        1
    );
    // Neither the token nor a raw e-mail appears in what the run printed.
    assert!(!out.contains(TOKEN), "token in the logs");
    let raw = parquet_column(
        &repo().join("testdata/demo/customers/dt=2026-11-25/part-00000.parquet"),
        "email",
    );
    for e in raw.iter().flatten().filter(|e| e.contains('@')) {
        assert!(!out.contains(e.trim()), "raw e-mail in the logs");
    }
}

#[test]
fn a_permanent_error_stops_the_run_with_a_clear_message() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run(&f.job("audience_id = \"999\""));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("meta") && out.contains("error code 100"),
        "{out}"
    );
    assert!(!out.contains(TOKEN));
}

#[test]
fn the_demo_uploads_to_the_in_process_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        activator()
            .args(["run", "jobs/demo.toml", "--date", "2026-11-25"])
            .env("DEMO_STATE", dir.path().join("state"))
            .env("DEMO_OUT", dir.path())
            .env_remove("PLATFORM_URL")
            .env_remove("META_ACCESS_TOKEN"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sandbox (in-process): meta audience"),
        "{stdout}"
    );
    let members = parquet_column(&dir.path().join("demo-2026-11-25.parquet"), "email_sha256").len();
    assert!(
        stdout.contains(&format!("\"activator demo\": {members} members")),
        "{stdout}"
    );
}

#[test]
fn the_token_can_come_from_secrets_manager() {
    let moto = Moto::start();
    let status = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, json, boto3; boto3.client('secretsmanager', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_secret(Name='ads/meta', SecretString=json.dumps({'token': sys.argv[2]}))",
            &moto.endpoint,
            TOKEN,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.job("audience = \"from-secret\"");
    let text_job = std::fs::read_to_string(&job)
        .unwrap()
        .replace("env:META_ACCESS_TOKEN", "aws-secretsmanager:ads/meta#token");
    std::fs::write(&job, text_job).unwrap();
    let out = activator()
        .arg("run")
        .arg(&job)
        .args(["--date", "2026-11-25", "--quiet"])
        .env_remove("META_ACCESS_TOKEN")
        .env("ACTIVATOR_LOG", "debug")
        .envs(moto.env())
        .output()
        .unwrap();
    let out_text = text(&out);
    assert!(out.status.success(), "{out_text}");
    assert_eq!(emails(&f.audience("from-secret").1), f.exported_emails());
    assert!(!out_text.contains(TOKEN), "token in the logs");

    // A missing secret is a clear configuration error that names the reference.
    let text_job = std::fs::read_to_string(&job)
        .unwrap()
        .replace("ads/meta#token", "ads/missing#token");
    std::fs::write(&job, text_job).unwrap();
    let out = activator()
        .arg("run")
        .arg(&job)
        .args(["--date", "2026-11-25", "--quiet"])
        .envs(moto.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ads/missing"), "{}", text(&out));
}

#[test]
fn the_call_budget_throttles_with_80003_and_the_run_still_completes() {
    let f = Fixture::new(SandboxConfig {
        meta: activator::sandbox::meta::MetaLimits {
            calls_per_window: Some(3),
            window: std::time::Duration::from_millis(700),
        },
        ..Default::default()
    });
    let (code, out) = f.run(&f.job("audience = \"budget\"\nconcurrency = 2"));
    assert_eq!(code, 0, "{out}");
    let stats = f.sandbox.state.store.stats();
    assert!(stats.rate_limited > 0, "{stats:?}");
    assert_eq!(emails(&f.audience("budget").1), f.exported_emails());
}

/// The sandbox takes an upload in both of the Graph API's encodings: a form with `payload` and
/// `session` as JSON strings and the token in the query, and a JSON body with `payload` as an
/// object. Badly hashed rows are counted invalid, not added; over 10,000 rows is error 100.
#[test]
fn the_sandbox_takes_form_and_json_uploads_alike() {
    let f = Fixture::new(SandboxConfig::default());
    let audience = f
        .sandbox
        .state
        .store
        .create("meta", "1234567890", "encodings");
    let url = format!("{}/v25.0/{}/users", f.sandbox.url, audience.id);
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send = |request: reqwest::RequestBuilder| -> (u16, serde_json::Value) {
        rt.block_on(async {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json().await.unwrap())
        })
    };
    let client = reqwest::Client::new();
    let payload =
        serde_json::json!({"schema": ["EMAIL", "FN"], "data": [[a, ""], [b, "not a hash"]]});
    let (status, form) = send(client.post(format!("{url}?access_token={TOKEN}")).form(&[
        ("payload", payload.to_string()),
        (
            "session",
            r#"{"session_id":9,"batch_seq":1,"last_batch_flag":false}"#.into(),
        ),
    ]));
    assert_eq!(status, 200, "{form}");
    assert_eq!(
        (
            form["num_received"].as_u64(),
            form["num_invalid_entries"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let body = serde_json::json!({
        "access_token": TOKEN,
        "session": {"session_id": 9, "batch_seq": 2, "last_batch_flag": true, "estimated_num_total": 3},
        "payload": {"schema": ["FN", "EMAIL"], "data": [[c, a]]},
    });
    let (status, json) = send(client.post(&url).json(&body));
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        (
            json["num_received"].as_u64(),
            json["num_invalid_entries"].as_u64()
        ),
        (Some(3), Some(0))
    );
    let members: BTreeSet<String> = f
        .sandbox
        .state
        .store
        .members(&audience.id)
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    let expected: BTreeSet<String> = [
        serde_json::json!({"EMAIL": a}),
        serde_json::json!({"EMAIL": a, "FN": c}),
    ]
    .iter()
    .map(|m| m.to_string())
    .collect();
    assert_eq!(members, expected);
    let rows: Vec<[&str; 1]> = vec![[a.as_str()]; 10_001];
    let (status, over) = send(client.post(&url).json(&serde_json::json!({
        "access_token": TOKEN,
        "payload": {"schema": ["EMAIL"], "data": rows},
    })));
    assert_eq!(
        (status, over["error"]["code"].as_u64()),
        (400, Some(100)),
        "{over}"
    );
}
