//! The Snap connector against the sandbox: the segment ends with exactly the e-mail, phone and
//! mobile ad id hashes the export of the same run has, through add, remove and mirror runs;
//! requests stay within the identifier limit and the request rate; faults are retried; replace
//! and profiles that would hash differently are refused at load; permanent errors stop the run;
//! neither the token nor raw e-mails reach the logs.

use crate::common;

use activator::identity::{Encoding, hash::hash_to_string};
use activator::sandbox::SandboxConfig;
use activator::sandbox::faults::FaultConfig;
use activator::sandbox::snap::SnapLimits;
local_fixture!();
use common::create_answer_lost;
use std::collections::BTreeSet;
use std::path::PathBuf;

const TOKEN: &str = "snap-test-token-c0ffee";
const DAY1: &str = "2026-11-24";
const DAY2: &str = "2026-11-25";
const ENV: &[(&str, &str)] = &[("SNAP_ACCESS_TOKEN", TOKEN)];
const ACCOUNT: &str = "8adc3db7-8148-4fbf-999c-8d2266369d74";

/// Identifiers as the segment holds them: (schema, hash).
type Ids = BTreeSet<(String, String)>;

impl Fixture {
    /// A Snap destination at the fixture's sandbox, with `extra` keys.
    fn snap_destination(&self, extra: &str) -> String {
        format!(
            r#"type = "snap"
ad_account_id = "{ACCOUNT}"
access_token = "env:SNAP_ACCESS_TOKEN"
base_url = "{url}"
requests_per_second = 200
{extra}"#,
            url = self.sandbox.url
        )
    }

    fn snap_job(&self, min_value: u32, extra: &str) -> PathBuf {
        self.crm_job(min_value, &self.snap_destination(extra))
    }

    fn segment(&self, name: &str) -> Ids {
        let store = &self.sandbox.state.store;
        let a = store
            .list()
            .into_iter()
            .find(|a| a.name == name && a.platform == "snap")
            .expect("the segment exists");
        store
            .members(&a.id)
            .unwrap()
            .iter()
            .map(|m| {
                let (schema, hash) = m.as_object().unwrap().iter().next().unwrap();
                (schema.clone(), hash.as_str().unwrap().to_string())
            })
            .collect()
    }

    /// What the export of `date` says the segment must hold.
    fn expected(&self, date: &str) -> Ids {
        fn tag(
            schema: &'static str,
            values: BTreeSet<String>,
        ) -> impl Iterator<Item = (String, String)> {
            values.into_iter().map(move |v| (schema.to_string(), v))
        }
        tag("EMAIL_SHA256", self.exported(date, "email_sha256"))
            .chain(tag("PHONE_SHA256", self.exported(date, "phone_sha256")))
            .chain(tag(
                "MOBILE_AD_ID_SHA256",
                self.exported(date, "mobile_ad_id")
                    .iter()
                    .map(|m| hash_to_string(m, Encoding::Hex))
                    .collect(),
            ))
            .collect()
    }
}

fn small_requests() -> SandboxConfig {
    // 300 members of up to three identifiers fit in 900.
    SandboxConfig {
        snap: SnapLimits {
            max_identifiers_per_request: 900,
            requests_per_second: None,
        },
        ..Default::default()
    }
}

#[test]
fn add_creates_the_segment_with_exactly_the_exported_identifiers() {
    let f = Fixture::new(small_requests());
    let job = f.snap_job(100, "audience = \"spenders\"\nbatch = { max_rows = 300 }");
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let expected = f.expected(DAY2);
    let schemas: BTreeSet<&str> = expected.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(schemas.len(), 3, "e-mails, phones and mobile ad ids");
    assert_eq!(f.segment("spenders"), expected);
    let stats = f.sandbox.state.store.stats();
    assert!(stats.max_rows_per_request <= 900, "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert!(out.contains("Snap segment"), "{out}");

    // The next run finds the segment by name and adds to it.
    let (code, out) = f.run_job(&job, DAY1, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.sandbox.state.store.list().len(), 1);
    let both: Ids = expected.union(&f.expected(DAY1)).cloned().collect();
    assert_eq!(f.segment("spenders"), both);
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn remove_takes_the_segment_members_out() {
    let f = Fixture::with_faults(FaultConfig::default());
    assert_eq!(
        f.run_job(&f.snap_job(100, "audience = \"x\""), DAY2, ENV).0,
        0
    );
    assert!(!f.segment("x").is_empty());
    let (code, out) = f.run_job(
        &f.snap_job(100, "audience = \"x\"\nsync = \"remove\""),
        DAY2,
        ENV,
    );
    assert_eq!(code, 0, "{out}");
    assert!(f.segment("x").is_empty());
}

#[test]
fn mirror_over_two_runs_leaves_exactly_the_second_segment() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.snap_job(100, "audience = \"m\"\nsync = \"mirror\"");
    let state = f.state_env();
    let env = [ENV[0], ("ACTIVATOR_STATE", state.as_str())];
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    let day1 = f.expected(DAY1);
    assert_eq!(f.segment("m"), day1);
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    let day2 = f.expected(DAY2);
    assert!(day1.difference(&day2).count() > 0 && day2.difference(&day1).count() > 0);
    assert_eq!(f.segment("m"), day2);
}

#[test]
fn a_mirror_keeps_the_identifiers_that_members_who_stayed_share_with_those_who_left() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f
        .shared_identifiers_job(&f.snap_destination("audience = \"household\"\nsync = \"mirror\""));
    let state = f.state_env();
    let env = [ENV[0], ("ACTIVATOR_STATE", state.as_str())];
    let ids = |emails: &[&str], phones: &[&str]| -> Ids {
        let email = |e: &&str| ("EMAIL_SHA256".to_string(), hash_to_string(e, Encoding::Hex));
        let phone = |p: &&str| {
            let p = format!("141555501{p}");
            (
                "PHONE_SHA256".to_string(),
                hash_to_string(&p, Encoding::Hex),
            )
        };
        emails
            .iter()
            .map(email)
            .chain(phones.iter().map(phone))
            .collect()
    };
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        f.segment("household"),
        ids(
            &[
                "stays@example.com",
                "leaves@example.com",
                "moves@example.com",
                "shared@example.com"
            ],
            &["01", "02", "04", "05"]
        )
    );
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    // leaves@ took its e-mail out but not the phone stays@ has; moves@ took its old phone out;
    // shared@ stays with the phone it kept.
    assert_eq!(
        f.segment("household"),
        ids(
            &[
                "stays@example.com",
                "moves@example.com",
                "shared@example.com"
            ],
            &["01", "03", "04"]
        )
    );
    assert!(
        out.contains("3 identifiers of members who left were kept"),
        "…0101, moves@ and shared@: {out}"
    );
}

#[test]
fn with_errors_throttling_and_dropped_connections_every_member_arrives() {
    let f = Fixture::with_faults(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.1,
        seed: 5,
        // The segment is created, and the answer saying so is lost.
        once: create_answer_lost("/segments"),
        ..FaultConfig::default()
    });
    let job = f.snap_job(
        100,
        "audience = \"flaky\"\nconcurrency = 3\nbatch = { max_rows = 100 }",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.segment("flaky"), f.expected(DAY2));
    assert!(f.targeted_faults_spent());
    assert_eq!(f.sandbox.state.store.list().len(), 1, "created once");
    let stats = f.sandbox.state.store.stats();
    assert!(
        stats.injected_errors > 0 && stats.injected_throttles > 0 && stats.injected_drops > 0,
        "{stats:?}"
    );
    assert!(out.contains("retries"), "{out}");
    assert!(!out.contains(TOKEN), "token in the logs");
    f.assert_no_raw_emails(&out);
}

#[test]
fn the_request_rate_limit_throttles_with_429_and_the_run_completes() {
    let f = Fixture::new(SandboxConfig {
        snap: SnapLimits {
            requests_per_second: Some(5),
            ..SnapLimits::default()
        },
        ..Default::default()
    });
    // Far above the sandbox's rate, one request at a time: Snap sends no wait hint, so the
    // backoff alone must outlast the rolling second.
    let job = f.snap_job(
        100,
        "audience = \"rate\"\nconcurrency = 1\nbatch = { max_rows = 100 }",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert!(f.sandbox.state.store.stats().rate_limited > 0);
    assert_eq!(f.segment("rate"), f.expected(DAY2));
}

#[test]
fn an_unknown_segment_stops_the_run_with_a_clear_message() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.snap_job(100, "audience_id = \"404\""), DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("snap") && out.contains("HTTP 404") && out.contains("Segment 404 not found"),
        "{out}"
    );
    assert!(!out.contains(TOKEN));
}

#[test]
fn the_job_loader_refuses_replace_and_other_profiles() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(
        &f.snap_job(100, "audience = \"x\"\nsync = \"replace\""),
        DAY2,
        ENV,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("Snap has no replace") && out.contains("mirror"),
        "{out}"
    );

    let job = f.snap_job(100, "audience = \"x\"");
    let uid2 = std::fs::read_to_string(&job)
        .unwrap()
        .replace("profile = \"meta\"", "profile = \"uid2\"")
        .replace(
            "first_name = \"first_name\"\nzip = \"zip\"\ncountry = \"country\"\n",
            "",
        );
    std::fs::write(&job, uid2).unwrap();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("a snap destination needs `profile = \"meta\"`"),
        "{out}"
    );
    assert_eq!(
        f.sandbox.state.store.stats().requests,
        0,
        "nothing was sent"
    );
}
