//! The TikTok connector against the sandbox: the audience ends with exactly the e-mails the
//! export of the same run has, through create, APPEND, REMOVE, REPLACE and mirror runs; files and
//! calls stay within TikTok's limits; signatures are the files' MD5; faults are retried;
//! permanent errors stop the run; neither the token nor raw e-mails reach the logs.

use crate::common;

use activator::identity::{Encoding, hash::hash_to_string};
use activator::sandbox::SandboxConfig;
use activator::sandbox::faults::FaultConfig;
use activator::sandbox::tiktok::TikTokLimits;
local_fixture!();
use common::create_answer_lost;
use std::collections::BTreeSet;
use std::path::PathBuf;

const TOKEN: &str = "tt-test-token-5e0a77";
const DAY1: &str = "2026-11-24";
const DAY2: &str = "2026-11-25";
const ENV: &[(&str, &str)] = &[("TIKTOK_ACCESS_TOKEN", TOKEN)];

impl Fixture {
    /// A TikTok destination at the fixture's sandbox, with `extra` keys.
    fn tiktok_destination(&self, extra: &str) -> String {
        format!(
            r#"type = "tiktok"
advertiser_id = "7000000001"
access_token = "env:TIKTOK_ACCESS_TOKEN"
base_url = "{url}"
requests_per_second = 200
{extra}"#,
            url = self.sandbox.url
        )
    }

    fn tiktok_job(&self, min_value: u32, extra: &str) -> PathBuf {
        self.crm_job(min_value, &self.tiktok_destination(extra))
    }

    fn audience_emails(&self, name: &str) -> BTreeSet<String> {
        let store = &self.sandbox.state.store;
        let a = store
            .list()
            .into_iter()
            .find(|a| a.name == name && a.platform == "tiktok")
            .expect("the audience exists");
        let members = store.members(&a.id).unwrap();
        let emails: BTreeSet<String> = members
            .iter()
            .map(|m| {
                m["EMAIL_SHA256"]
                    .as_str()
                    .expect("an e-mail hash")
                    .to_string()
            })
            .collect();
        assert_eq!(emails.len(), members.len());
        emails
    }

    fn audience_id(&self, name: &str) -> String {
        self.sandbox
            .state
            .store
            .list()
            .into_iter()
            .find(|a| a.name == name)
            .unwrap()
            .id
    }
}

#[test]
fn add_creates_the_audience_from_files_within_the_limits_and_finds_it_again() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.tiktok_job(100, "audience = \"spenders\"\nbatch = { max_rows = 20 }");
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let exported = f.exported(DAY2, "email_sha256");
    assert!(exported.len() > 1000, "{}", exported.len());
    assert_eq!(f.audience_emails("spenders"), exported);
    let stats = f.sandbox.state.store.stats();
    // 20 members per file, at most 49 files per create or update call: more than one call.
    assert!(stats.max_rows_per_request <= 20, "{stats:?}");
    assert_eq!(stats.max_files_per_request, 49, "{stats:?}");
    assert!(
        stats.files_uploaded as usize >= exported.len() / 20,
        "{stats:?}"
    );
    // Every signature the connector sent was its file's MD5 (the sandbox refuses others).
    assert_eq!(
        (stats.signature_mismatches, stats.rejected),
        (0, 0),
        "{stats:?}"
    );

    // The next run finds the audience by name and appends to it.
    let (code, out) = f.run_job(&job, DAY1, ENV);
    assert_eq!(code, 0, "{out}");
    let tiktok: Vec<_> = f
        .sandbox
        .state
        .store
        .list()
        .into_iter()
        .filter(|a| a.platform == "tiktok")
        .collect();
    assert_eq!(tiktok.len(), 1);
    let both: BTreeSet<String> = exported
        .union(&f.exported(DAY1, "email_sha256"))
        .cloned()
        .collect();
    assert_eq!(f.audience_emails("spenders"), both);
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn replace_swaps_the_members_and_remove_takes_them_out() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.tiktok_job(20, "audience = \"r\""), DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let wide = f.exported(DAY2, "email_sha256");
    let id = f.audience_id("r");

    let (code, out) = f.run_job(
        &f.tiktok_job(100, &format!("audience_id = \"{id}\"\nsync = \"replace\"")),
        DAY2,
        ENV,
    );
    assert_eq!(code, 0, "{out}");
    let narrow = f.exported(DAY2, "email_sha256");
    assert!(narrow.len() < wide.len() && narrow.len() > 1000);
    assert_eq!(f.audience_emails("r"), narrow);

    // Remove the few worth 2,000: the rest stays.
    let (code, out) = f.run_job(
        &f.tiktok_job(2000, &format!("audience_id = \"{id}\"\nsync = \"remove\"")),
        DAY2,
        ENV,
    );
    assert_eq!(code, 0, "{out}");
    let few = f.exported(DAY2, "email_sha256");
    assert!(!few.is_empty());
    let rest: BTreeSet<String> = narrow.difference(&few).cloned().collect();
    assert_eq!(f.audience_emails("r"), rest);

    // Removing everyone would leave fewer than TikTok's 1,000: a permanent error, clearly told
    // (one file, so one call, which TikTok refuses whole).
    let (code, out) = f.run_job(
        &f.tiktok_job(100, &format!("audience_id = \"{id}\"\nsync = \"remove\"")),
        DAY2,
        ENV,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("code 40002") && out.contains("at least 1000"),
        "{out}"
    );
    assert_eq!(f.audience_emails("r"), rest, "nothing was removed");
}

#[test]
fn mirror_over_two_runs_leaves_exactly_the_second_segment() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.tiktok_job(
        50,
        "audience = \"m\"\nsync = \"mirror\"\nbatch = { max_rows = 100 }",
    );
    let state = f.state_env();
    let env = [ENV[0], ("ACTIVATOR_STATE", state.as_str())];
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    let day1 = f.exported(DAY1, "email_sha256");
    assert_eq!(f.audience_emails("m"), day1);
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    let day2 = f.exported(DAY2, "email_sha256");
    assert!(day1.difference(&day2).count() > 0 && day2.difference(&day1).count() > 0);
    assert_eq!(f.audience_emails("m"), day2);
    assert!(out.contains("removed"), "{out}");
}

#[test]
fn a_mirror_keeps_an_e_mail_that_a_member_who_stayed_shares_with_one_who_left() {
    // An audience of a handful: the sandbox's TikTok takes one below its 1,000 floor here.
    let f = Fixture::new(SandboxConfig {
        tiktok: TikTokLimits {
            min_audience_size: 0,
            ..Default::default()
        },
        ..Default::default()
    });
    let job = f.shared_identifiers_job(
        &f.tiktok_destination("audience = \"household\"\nsync = \"mirror\""),
    );
    let state = f.state_env();
    let env = [ENV[0], ("ACTIVATOR_STATE", state.as_str())];
    let emails = |names: &[&str]| -> BTreeSet<String> {
        names
            .iter()
            .map(|n| hash_to_string(&format!("{n}@example.com"), Encoding::Hex))
            .collect()
    };
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        f.audience_emails("household"),
        emails(&["stays", "leaves", "moves", "shared"])
    );
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    // shared@ with …0105 left, shared@ with …0104 stayed: the e-mail stays.
    assert_eq!(
        f.audience_emails("household"),
        emails(&["stays", "moves", "shared"])
    );
    assert!(
        out.contains("2 identifiers of members who left were kept"),
        "moves@ and shared@: {out}"
    );
}

#[test]
fn with_errors_throttling_and_dropped_connections_every_member_arrives_once() {
    let f = Fixture::with_faults(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.1,
        seed: 11,
        // The audience is created, and the answer saying so is lost.
        once: create_answer_lost("/custom_audience/create/"),
        ..FaultConfig::default()
    });
    let job = f.tiktok_job(
        100,
        "audience = \"flaky\"\nconcurrency = 3\nbatch = { max_rows = 100 }",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.audience_emails("flaky"), f.exported(DAY2, "email_sha256"));
    let stats = f.sandbox.state.store.stats();
    assert!(
        stats.injected_errors > 0 && stats.injected_throttles > 0 && stats.injected_drops > 0,
        "{stats:?}"
    );
    // Created once although the first create was applied and its answer lost; no file
    // applied twice.
    assert!(f.targeted_faults_spent());
    assert_eq!(
        f.sandbox
            .state
            .store
            .list()
            .iter()
            .filter(|a| a.platform == "tiktok")
            .count(),
        1
    );
    assert_eq!(stats.batches_accepted_twice, 0, "{stats:?}");
    assert!(out.contains("retries"), "{out}");
    assert!(!out.contains(TOKEN), "token in the logs");
    f.assert_no_raw_emails(&out);
}

#[test]
fn the_qps_limit_answers_40100_in_http_200_and_the_run_completes() {
    let f = Fixture::new(activator::sandbox::SandboxConfig {
        tiktok: activator::sandbox::tiktok::TikTokLimits {
            requests_per_second: Some(5),
            ..Default::default()
        },
        ..Default::default()
    });
    // Far above the sandbox's QPS, one upload at a time: TikTok sends no wait hint.
    let job = f.tiktok_job(
        100,
        "audience = \"qps\"\nconcurrency = 1\nbatch = { max_rows = 200 }",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert!(f.sandbox.state.store.stats().rate_limited > 0);
    assert!(out.contains("code 40100"), "{out}");
    assert_eq!(f.audience_emails("qps"), f.exported(DAY2, "email_sha256"));
}

#[test]
fn the_sandbox_checks_the_md5_signature_of_a_file() {
    use activator::destinations::tiktok::request::{md5_hex, multipart};
    let f = Fixture::with_faults(FaultConfig::default());
    let file = format!("{}\n{}\n", "a".repeat(64), "b".repeat(64));
    let upload = |signature: &str| -> serde_json::Value {
        let m = multipart(
            &[
                ("advertiser_id", "7"),
                ("calculate_type", "EMAIL_SHA256"),
                ("file_signature", signature),
            ],
            "members.txt",
            file.as_bytes(),
        );
        let url = format!(
            "{}/open_api/v1.3/dmp/custom_audience/file/upload/",
            f.sandbox.url
        );
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            reqwest::Client::new()
                .post(url)
                .header("Access-Token", TOKEN)
                .header("content-type", m.content_type)
                .body(m.body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    // The right signature: the file's MD5 (as `md5sum` computes it).
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    let ok = upload(&md5_hex(file.as_bytes()));
    assert_eq!(ok["code"], 0, "{ok}");
    assert!(ok["data"]["file_path"].is_string(), "{ok}");
    let wrong = upload(&md5_hex(b"another file"));
    assert_eq!(wrong["code"], 40002, "{wrong}");
    assert!(
        wrong["message"]
            .as_str()
            .unwrap()
            .contains("file_signature"),
        "{wrong}"
    );
    let stats = f.sandbox.state.store.stats();
    assert_eq!((stats.files_uploaded, stats.signature_mismatches), (1, 1));
}

#[test]
fn an_unknown_audience_stops_the_run_with_a_clear_message() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.tiktok_job(100, "audience_id = \"404\""), DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("tiktok") && out.contains("code 40002") && out.contains("404"),
        "{out}"
    );
    assert!(!out.contains(TOKEN));
}

#[test]
fn the_job_loader_refuses_what_would_hash_wrongly_or_send_nothing() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.tiktok_job(100, "audience = \"x\"");
    let google = std::fs::read_to_string(&job)
        .unwrap()
        .replace("profile = \"meta\"", "profile = \"google\"")
        .replace("mobile_ad_id = \"mobile_ad_id\"\n", "");
    std::fs::write(&job, google).unwrap();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("needs `profile = \"meta\"`") && out.contains("never match"),
        "{out}"
    );

    let job = f.tiktok_job(100, "audience = \"x\"\ncalculate_type = \"IDFA_MD5\"");
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("calculate_type") && out.contains("not MD5"),
        "{out}"
    );

    let job = f.tiktok_job(100, "audience = \"x\"\ncalculate_type = \"PHONE_SHA256\"");
    let no_phone = std::fs::read_to_string(&job)
        .unwrap()
        .replace("phone = \"phone\"\n", "");
    std::fs::write(&job, no_phone).unwrap();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("identifiers.phone"), "{out}");
    assert_eq!(
        f.sandbox.state.store.stats().requests,
        0,
        "nothing was sent"
    );
}
