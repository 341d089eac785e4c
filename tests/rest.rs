//! The generic REST destination against the sandbox's recording endpoint (real HTTP on
//! loopback): bodies rendered from the job's template carry exactly the exported members, once
//! each, through add and mirror runs; headers carry secrets resolved at run time; faults are
//! retried (Retry-After honoured); bad templates and settings are refused at load; a refused
//! request stops the run; neither the token nor raw e-mails reach the logs.

use crate::common;

use activator::sandbox::faults::FaultConfig;
local_fixture!();
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const TOKEN: &str = "rest-test-token-0b5e9d";
const DAY1: &str = "2026-11-24";
const DAY2: &str = "2026-11-25";
const ENV: &[(&str, &str)] = &[("REST_TOKEN", TOKEN)];

/// A body naming the run and batch, with the batch's e-mail hashes.
const BODY: &str = r#"body = '''{"run_date": {{ run_date | tojson }}, "op": {{ op | tojson }}, "seq": {{ batch_seq }}, "job": {{ job | tojson }},
 "emails": {{ members | map(attribute="email_sha256") | reject("none") | list | tojson }}}'''"#;

impl Fixture {
    fn rest_job(&self, min_value: u32, extra: &str) -> PathBuf {
        self.crm_job(
            min_value,
            &format!(
                r#"type = "rest"
name = "crm"
url = "{url}/_sandbox/rest/crm"
headers = {{ Authorization = "Bearer env:REST_TOKEN", X-Source = "activator" }}
batch = {{ max_rows = 200 }}
{extra}"#,
                url = self.sandbox.url
            ),
        )
    }

    /// The distinct request bodies the endpoint received (a retried request is sent again
    /// whole), in arrival order, with their methods.
    fn bodies(&self) -> Vec<(String, Value)> {
        let mut seen = BTreeSet::new();
        self.sandbox
            .state
            .rest
            .requests("crm")
            .into_iter()
            .filter(|r| seen.insert((r.method.clone(), r.body.clone())))
            .map(|r| {
                (
                    r.method,
                    serde_json::from_str(&r.body).expect("JSON bodies"),
                )
            })
            .collect()
    }

    /// The members the endpoint holds after applying adds and removes in order, checking that
    /// each run sent each member at most once per operation.
    fn held(&self) -> BTreeSet<String> {
        let mut held = BTreeSet::new();
        let mut sent: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (_, body) in self.bodies() {
            let key = (
                body["run_date"].as_str().unwrap().to_string(),
                body["op"].as_str().unwrap().to_string(),
            );
            for e in body["emails"].as_array().unwrap() {
                let e = e.as_str().unwrap().to_string();
                assert!(
                    sent.entry(key.clone()).or_default().insert(e.clone()),
                    "a member sent twice in {key:?}"
                );
                if key.1 == "add" {
                    held.insert(e);
                } else {
                    held.remove(&e);
                }
            }
        }
        held
    }
}

#[test]
fn bodies_carry_exactly_the_exported_members_and_headers_their_secrets() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.rest_job(100, BODY), DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let exported = f.exported(DAY2, "email_sha256");
    assert!(exported.len() > 1000);
    assert_eq!(f.held(), exported);
    let members = parquet_column(
        &f.dir.path().join(format!("out/job-{DAY2}.parquet")),
        "email_sha256",
    )
    .len();
    let bodies = f.bodies();
    assert_eq!(
        bodies.len(),
        members.div_ceil(200),
        "one request per batch of 200"
    );
    assert!(
        bodies
            .iter()
            .all(|(_, b)| b["emails"].as_array().unwrap().len() <= 200)
    );
    let seqs: BTreeSet<u64> = bodies
        .iter()
        .map(|(_, b)| b["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=bodies.len() as u64).collect());
    assert!(bodies.iter().all(|(m, b)| m == "POST" && b["job"] == "job"));
    let request = &f.sandbox.state.rest.requests("crm")[0];
    // The recorder keeps a secret header as a digest prefix: the right token arrived, and the
    // sandbox never shows it.
    let digest = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("Bearer {TOKEN}").as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(
        request.headers["authorization"],
        format!("sha256:{}…", &digest[..12])
    );
    assert_eq!(request.headers["x-source"], "activator");
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn the_default_body_sends_every_column_of_every_member() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.rest_job(100, ""), DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let mut emails = BTreeSet::new();
    let mut maids = BTreeSet::new();
    for (_, body) in f.bodies() {
        assert_eq!(body["op"], "add");
        for m in body["members"].as_array().unwrap() {
            emails.extend(m["email_sha256"].as_str().map(str::to_string));
            maids.extend(m["mobile_ad_id"].as_str().map(str::to_string));
            assert!(m.as_object().unwrap().contains_key("zip_sha256"), "{m}");
        }
    }
    assert_eq!(emails, f.exported(DAY2, "email_sha256"));
    assert_eq!(maids, f.exported(DAY2, "mobile_ad_id"));
}

#[test]
fn mirror_over_two_runs_removes_with_its_own_method() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.rest_job(
        100,
        &format!("{BODY}\nsync = \"mirror\"\nremove_method = \"DELETE\""),
    );
    let state = f.state_env();
    let env = [ENV[0], ("ACTIVATOR_STATE", state.as_str())];
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.held(), f.exported(DAY1, "email_sha256"));
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.held(), f.exported(DAY2, "email_sha256"));
    let removals: Vec<_> = f
        .bodies()
        .into_iter()
        .filter(|(_, b)| b["op"] == "remove")
        .collect();
    assert!(!removals.is_empty());
    assert!(
        removals
            .iter()
            .all(|(m, b)| m == "DELETE" && b["run_date"] == DAY2)
    );
}

#[test]
fn with_errors_throttling_and_dropped_connections_every_member_arrives_once() {
    let f = Fixture::with_faults(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.1,
        seed: 9,
        ..FaultConfig::default()
    });
    let job = f.rest_job(100, &format!("{BODY}\nconcurrency = 3"));
    let started = std::time::Instant::now();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.held(), f.exported(DAY2, "email_sha256"));
    let stats = f.sandbox.state.store.stats();
    assert!(
        stats.injected_errors > 0 && stats.injected_throttles > 0 && stats.injected_drops > 0,
        "{stats:?}"
    );
    // Each throttled answer said `Retry-After: 1`; the retries waited for it.
    assert!(started.elapsed().as_secs_f64() >= 1.0);
    assert!(out.contains("retries"), "{out}");
    assert!(!out.contains(TOKEN), "token in the logs");
    f.assert_no_raw_emails(&out);
}

#[test]
fn a_refused_request_stops_the_run_with_its_status_but_not_its_answer() {
    let f = Fixture::with_faults(FaultConfig::default());
    // Not JSON, though sent as JSON: the endpoint answers 400.
    let (code, out) = f.run_job(
        &f.rest_job(100, "body = \"members: {{ members | length }}\""),
        DAY2,
        ENV,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("crm") && out.contains("HTTP 400") && out.contains("not shown"),
        "{out}"
    );
    // The answer's text stays out: an endpoint that echoes the request would show members.
    assert!(!out.contains("not valid JSON"), "{out}");
    assert!(!out.contains(TOKEN));
}

#[test]
fn the_job_loader_refuses_bad_templates_and_settings() {
    let f = Fixture::with_faults(FaultConfig::default());
    let refused = |extra: &str, expected: &[&str]| {
        let job = f.rest_job(100, extra);
        let (code, out) = f.run_job(&job, DAY2, ENV);
        assert_eq!(code, 2, "{extra}: {out}");
        for e in expected {
            assert!(out.contains(e), "{extra}: `{e}` not in {out}");
        }
    };
    let at = f.dir.path().join("job.toml").display().to_string();
    refused(
        "body = '''{\"e\": {{ members[0].email | tojson }}}'''",
        &[&at, "destinations[1].body", "undefined", "email_sha256"],
    );
    refused(
        "body = \"{{ members | tojson \"",
        &[&at, "destinations[1].body", "syntax"],
    );
    refused(
        "sync = \"mirror\"",
        &["destinations[1].sync", "remove_method"],
    );
    refused("sync = \"remove\"", &["destinations[1].sync", "remove_url"]);
    refused("sync = \"replace\"", &["no full replace", "mirror"]);
    refused(
        "method = \"GET\"",
        &["destinations[1].method", "POST, PUT, PATCH, DELETE"],
    );
    refused(
        "success_status = [\"2x\"]",
        &["destinations[1].success_status"],
    );
    let job = f.rest_job(100, "");
    let plain = std::fs::read_to_string(&job)
        .unwrap()
        .replace(&f.sandbox.url, "http://example.com");
    std::fs::write(&job, plain).unwrap();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("destinations[1].url") && out.contains("https://"),
        "{out}"
    );
    assert_eq!(
        f.sandbox.state.store.stats().requests,
        0,
        "nothing was sent"
    );
}
