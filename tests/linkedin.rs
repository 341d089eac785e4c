//! The LinkedIn connector against the sandbox: the DMP segment ends with exactly the e-mail
//! hashes and mobile ad ids the export of the same run has, through add, remove and mirror runs
//! (a mirror keeping the IDs that members who stayed share with those who left); requests stay
//! within 5,000 elements; a new segment's "not found" is retried; faults and the request rate
//! are retried with every member arriving once; an element LinkedIn refuses is counted, not sent
//! again; an expired token, an unknown segment and bad settings stop the run with exit code 2 and
//! a message saying what to fix; the token never reaches the debug logs. The emulator checks what
//! LinkedIn checks, and LinkedIn's official Python client works against it. Also measured:
//! members per second with no throttle, and the share of LinkedIn's documented rate reached
//! when the sandbox enforces it.

use crate::common;

use activator::batch::BatchLimits;
use activator::destinations::SyncMode;
use activator::destinations::linkedin;
use activator::destinations::linkedin::config::{DEFAULT_API_VERSION, LinkedInConfig};
use activator::destinations::settings::AudienceRef;
use activator::identity::{Encoding, hash::hash_to_string};
use activator::sandbox::SandboxConfig;
use activator::sandbox::faults::FaultConfig;
local_fixture!();
use common::{create_answer_lost, python, repo, text};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &str = "AQV-linkedin-test-token-9d2f";
const DAY1: &str = "2026-11-24";
const DAY2: &str = "2026-11-25";
const ENV: &[(&str, &str)] = &[("LINKEDIN_ACCESS_TOKEN", TOKEN)];
const ACCOUNT: &str = "508123456";

/// User IDs as the segment holds them: (idType, value).
type Ids = BTreeSet<(String, String)>;

impl Fixture {
    /// A LinkedIn destination at the fixture's sandbox, with `extra` keys.
    fn linkedin_destination(&self, extra: &str) -> String {
        format!(
            r#"type = "linkedin"
ad_account_id = "{ACCOUNT}"
source_platform = "ACTIVATOR_TEST"
access_token = "env:LINKEDIN_ACCESS_TOKEN"
base_url = "{url}"
requests_per_second = 200
{extra}"#,
            url = self.sandbox.url
        )
    }

    fn linkedin_job(&self, min_value: u32, extra: &str) -> PathBuf {
        self.crm_job(min_value, &self.linkedin_destination(extra))
    }

    /// The user IDs of the LinkedIn segment named `name`.
    fn segment(&self, name: &str) -> Ids {
        let store = &self.sandbox.state.store;
        let a = store
            .list()
            .into_iter()
            .find(|a| a.name == name && a.platform == "linkedin")
            .expect("the segment exists");
        store
            .members(&a.id)
            .unwrap()
            .iter()
            .map(|m| {
                let (id_type, value) = m.as_object().unwrap().iter().next().unwrap();
                (id_type.clone(), value.as_str().unwrap().to_string())
            })
            .collect()
    }

    /// What the export of `date` says the segment must hold: e-mail hashes, and mobile ad ids
    /// as they are (LinkedIn takes GOOGLE_AID raw).
    fn expected(&self, date: &str) -> Ids {
        let emails = self
            .exported(date, "email_sha256")
            .into_iter()
            .map(|h| ("SHA256_EMAIL".to_string(), h));
        let ad_ids = self
            .exported(date, "mobile_ad_id")
            .into_iter()
            .map(|m| ("GOOGLE_AID".to_string(), m));
        emails.chain(ad_ids).collect()
    }
}

/// One request to the emulator: its status, headers and JSON body (null when it has none).
fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut request = reqwest::Client::new().request(method.parse().unwrap(), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

const AUTH: (&str, &str) = ("Authorization", "Bearer AQV-emulator-test");
const VERSION: (&str, &str) = ("LinkedIn-Version", "202604");
const PROTOCOL: (&str, &str) = ("X-Restli-Protocol-Version", "2.0.0");
const BATCH_CREATE: (&str, &str) = ("X-RestLi-Method", "BATCH_CREATE");

/// Creates a segment on the emulator as a client would; its id.
fn create_segment(f: &Fixture, name: &str, kind: &str) -> String {
    let (status, headers, answer) = call(
        "POST",
        &format!("{}/rest/dmpSegments", f.sandbox.url),
        &[AUTH, VERSION, PROTOCOL],
        Some(&json!({
            "name": name,
            "account": format!("urn:li:sponsoredAccount:{ACCOUNT}"),
            "type": kind,
            "sourcePlatform": "ACTIVATOR_TEST",
            "accessPolicy": "PRIVATE",
            "destinations": [{"destination": "LINKEDIN"}],
        })),
    );
    assert_eq!(status, 201, "{answer}");
    headers["x-restli-id"].to_str().unwrap().to_string()
}

#[test]
fn add_creates_the_segment_with_exactly_the_exported_ids_and_finds_it_again() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.linkedin_job(100, "audience = \"spenders\"\nbatch = { max_rows = 300 }");
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let expected = f.expected(DAY2);
    let types: BTreeSet<&str> = expected.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types.len(), 2, "e-mail hashes and mobile ad ids");
    assert_eq!(f.segment("spenders"), expected);
    let stats = f.sandbox.state.store.stats();
    assert!(stats.max_rows_per_request <= 300, "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert!(out.contains("LinkedIn DMP segment"), "{out}");
    assert!(
        out.contains("not ready"),
        "the new segment's first \"not found\" was retried: {out}"
    );

    // The next run finds the segment by name and adds to it.
    let (code, out) = f.run_job(&job, DAY1, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.sandbox.state.store.list().len(), 1, "not created again");
    let both: Ids = expected.union(&f.expected(DAY1)).cloned().collect();
    assert_eq!(f.segment("spenders"), both);
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn remove_takes_the_segment_members_out() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.linkedin_job(100, "audience = \"x\""), DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert!(!f.segment("x").is_empty());
    let (code, out) = f.run_job(
        &f.linkedin_job(100, "audience = \"x\"\nsync = \"remove\""),
        DAY2,
        ENV,
    );
    assert_eq!(code, 0, "{out}");
    assert!(f.segment("x").is_empty());
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn mirror_over_two_dates_leaves_exactly_the_second_export() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.linkedin_job(100, "audience = \"m\"\nsync = \"mirror\"");
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
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn a_mirror_keeps_the_e_mails_that_members_who_stayed_share_with_those_who_left() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.shared_identifiers_job(
        &f.linkedin_destination("audience = \"household\"\nsync = \"mirror\""),
    );
    let state = f.state_env();
    let env = [ENV[0], ("ACTIVATOR_STATE", state.as_str())];
    let emails = |emails: &[&str]| -> Ids {
        emails
            .iter()
            .map(|e| ("SHA256_EMAIL".to_string(), hash_to_string(e, Encoding::Hex)))
            .collect()
    };
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        f.segment("household"),
        emails(&[
            "stays@example.com",
            "leaves@example.com",
            "moves@example.com",
            "shared@example.com"
        ])
    );
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    // LinkedIn removes IDs: moves@ (its old phone) and shared@ (with …0105) left as members,
    // but their e-mails are still in the segment's other members, so they stay.
    assert_eq!(
        f.segment("household"),
        emails(&[
            "stays@example.com",
            "moves@example.com",
            "shared@example.com"
        ])
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
        seed: 7,
        // The segment is created, and the answer saying so is lost.
        once: create_answer_lost("/dmpSegments"),
        ..FaultConfig::default()
    });
    let job = f.linkedin_job(
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
    assert!(
        stats.batches_accepted_twice <= stats.injected_drops,
        "only a dropped answer sends a batch again: {stats:?}"
    );
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert!(out.contains("retries"), "{out}");
    assert!(!out.contains(TOKEN), "token in the logs");
    f.assert_no_raw_emails(&out);
}

#[test]
fn the_request_rate_limit_answers_429_without_retry_after_and_the_run_completes() {
    let f = Fixture::new(SandboxConfig {
        rates: [("linkedin".to_string(), 5)].into(),
        ..Default::default()
    });
    // Far above the sandbox's rate, one request at a time: LinkedIn sends no wait hint, so the
    // backoff alone must outlast the rolling second.
    let job = f.linkedin_job(
        100,
        "audience = \"rate\"\nconcurrency = 1\nbatch = { max_rows = 100 }",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert!(f.sandbox.state.store.stats().rate_limited > 0);
    assert_eq!(f.segment("rate"), f.expected(DAY2));
}

#[test]
fn an_element_linkedin_refuses_is_counted_and_not_sent_again() {
    let f = Fixture::with_faults(FaultConfig {
        invalid_row_rate: 0.05,
        seed: 11,
        ..FaultConfig::default()
    });
    // Fewer than 5,000 members: one batch.
    let (code, out) = f.run_job(&f.linkedin_job(100, "audience = \"picky\""), DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let refused: u64 = out
        .split("the platform called ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refused elements in the report: {out}"));
    assert!(refused > 0, "{out}");
    assert!(
        out.contains("chars, not shown): status 400"),
        "masked samples: {out}"
    );
    let (segment, expected) = (f.segment("picky"), f.expected(DAY2));
    assert!(segment.is_subset(&expected) && segment.len() < expected.len());
    // The batch, after the new segment's "not found": not sent again for its refused elements.
    assert_eq!(f.sandbox.state.store.stats().upload_requests, 2);
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn an_expired_or_missing_token_stops_the_run_with_exit_code_2_saying_what_to_do() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.linkedin_job(100, "audience = \"x\"");
    // The emulator answers a token starting `expired` as LinkedIn answers an expired one.
    let expired = "expired-AQV-7c1e55";
    let (code, out) = f.run_job(&job, DAY2, &[("LINKEDIN_ACCESS_TOKEN", expired)]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("HTTP 401") && out.contains("65602") && out.contains("refresh it"),
        "{out}"
    );
    assert!(!out.contains(expired), "token in the logs");
    assert!(
        f.sandbox.state.store.list().is_empty(),
        "nothing was created"
    );

    let (code, out) = f.run_job(&job, DAY2, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("LINKEDIN_ACCESS_TOKEN is not set"),
        "the reference's variable is named: {out}"
    );
}

#[test]
fn an_unknown_or_company_segment_id_stops_the_run_with_a_clear_message() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.linkedin_job(100, "audience_id = \"404404\""), DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("HTTP 404")
            && out.contains("Could not find DMP segment 404404")
            && out.contains("check audience_id"),
        "{out}"
    );
    let companies = create_segment(&f, "companies", "COMPANY");
    let job = f.linkedin_job(100, &format!("audience_id = \"{companies}\""));
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("COMPANY segment"), "{out}");
    assert_eq!(f.sandbox.state.store.stats().upload_requests, 0);
    assert!(!out.contains(TOKEN));
}

#[test]
fn a_segment_is_found_by_name_past_the_finder_s_first_pages() {
    let f = Fixture::with_faults(FaultConfig::default());
    let store = &f.sandbox.state.store;
    // 250 other segments of the account before it: the one named is on the third page of 100.
    for i in 0..250 {
        store.create("linkedin", ACCOUNT, &format!("other {i}"));
    }
    let deep = store.create("linkedin", ACCOUNT, "deep").id;

    // The finder gives at most 100 a page, whatever `count` asks, and says where it is.
    let finder = |start: usize| {
        format!(
            "{}/rest/dmpSegments?q=account&account=urn%3Ali%3AsponsoredAccount%3A{ACCOUNT}&start={start}&count=1000",
            f.sandbox.url
        )
    };
    let (status, _, page) = call("GET", &finder(0), &[AUTH, VERSION, PROTOCOL], None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["elements"].as_array().unwrap().len(), 100);
    assert_eq!(page["paging"]["start"], 0, "{}", page["paging"]);
    assert_eq!(page["paging"]["count"], 100, "{}", page["paging"]);
    assert_eq!(page["paging"]["total"], 251, "{}", page["paging"]);
    let (_, _, last) = call("GET", &finder(200), &[AUTH, VERSION, PROTOCOL], None);
    assert_eq!(last["elements"].as_array().unwrap().len(), 51);
    assert_eq!(last["elements"][50]["id"].to_string(), deep);

    let (code, out) = f.run_job(&f.linkedin_job(100, "audience = \"deep\""), DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(store.list().len(), 251, "found, not created");
    assert_eq!(f.segment("deep"), f.expected(DAY2));
    assert!(!out.contains(TOKEN), "token in the logs");
}

#[test]
fn a_404_from_a_segment_this_run_did_not_create_stops_the_run_naming_it() {
    let f = Fixture::with_faults(FaultConfig::default());
    // Created by someone else a moment ago: the emulator answers its first users call 404, which
    // only a segment the run itself created may be waited out for.
    let id = create_segment(&f, "elsewhere", "USER");
    let (code, out) = f.run_job(&f.linkedin_job(100, "audience = \"elsewhere\""), DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("HTTP 404") && out.contains(&format!("no DMP segment {id}")),
        "{out}"
    );
    assert_eq!(
        f.sandbox.state.store.stats().upload_requests,
        1,
        "not retried"
    );
    assert_eq!(f.sandbox.state.store.list().len(), 1, "none created");
}

#[test]
fn the_job_loader_refuses_replace_bad_settings_and_other_profiles_naming_the_key() {
    let f = Fixture::with_faults(FaultConfig::default());
    let refused = |job: PathBuf, env: &[(&str, &str)], expected: &[&str]| {
        let (code, out) = f.run_job(&job, DAY2, env);
        assert_eq!(code, 2, "{out}");
        for e in expected {
            assert!(out.contains(e), "`{e}` not in {out}");
        }
    };
    let with = |extra: &str| f.linkedin_job(100, extra);
    refused(
        with("audience = \"x\"\nsync = \"replace\""),
        ENV,
        &["destinations[1].sync", "LinkedIn has no replace", "mirror"],
    );
    // Settings read variables, and are checked after.
    refused(
        with("audience = \"x\"\nsync = \"${LI_SYNC}\""),
        &[ENV[0], ("LI_SYNC", "replace")],
        &["destinations[1].sync", "no replace"],
    );
    refused(
        with("audience = \"x\"\nbatch = { max_rows = 5001 }"),
        ENV,
        &["destinations[1].batch.max_rows", "at most 5000"],
    );
    refused(
        with("audience = \"x\"\napi_version = \"2026-04\""),
        ENV,
        &["destinations[1].api_version", "YYYYMM"],
    );
    refused(
        with("audience_id = \"seg-1\""),
        ENV,
        &["destinations[1].audience_id", "numeric"],
    );
    refused(
        with("audience = \"x\"\naudiance = \"y\""),
        ENV,
        &["destinations[1]", "audiance"],
    );
    let edit = |extra: &str, from: &str, to: &str| {
        let job = with(extra);
        let text = std::fs::read_to_string(&job).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&job, text.replace(from, to)).unwrap();
        job
    };
    refused(
        edit(
            "audience = \"x\"",
            &format!("ad_account_id = \"{ACCOUNT}\""),
            "ad_account_id = \"act_1\"",
        ),
        ENV,
        &["destinations[1].ad_account_id", "urn:li:sponsoredAccount:"],
    );
    refused(
        edit(
            "audience = \"x\"",
            "source_platform = \"ACTIVATOR_TEST\"\n",
            "",
        ),
        ENV,
        &["destinations[1].source_platform", "audience_id"],
    );
    refused(
        edit(
            "audience = \"x\"",
            "email = \"email\"\nphone = \"phone\"\nmobile_ad_id = \"mobile_ad_id\"\n",
            "phone = \"phone\"\n",
        ),
        ENV,
        &["destinations[1]", "email", "mobile_ad_id", "neither"],
    );
    let uid2 = edit(
        "audience = \"x\"",
        "profile = \"meta\"",
        "profile = \"uid2\"",
    );
    let text = std::fs::read_to_string(&uid2).unwrap().replace(
        "first_name = \"first_name\"\nzip = \"zip\"\ncountry = \"country\"\n",
        "",
    );
    std::fs::write(&uid2, text).unwrap();
    refused(
        uid2,
        ENV,
        &["a linkedin destination needs `profile = \"meta\"`"],
    );
    assert_eq!(
        f.sandbox.state.store.stats().requests,
        0,
        "nothing was sent"
    );
}

#[test]
fn the_emulator_checks_headers_and_limits_and_answers_each_element() {
    let f = Fixture::with_faults(FaultConfig::default());
    let base = format!("{}/rest/dmpSegments", f.sandbox.url);

    // A create is checked field by field.
    let (status, _, answer) = call(
        "POST",
        &base,
        &[AUTH, VERSION, PROTOCOL],
        Some(&json!({"name": "no account"})),
    );
    assert_eq!(status, 422, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("account"));
    let id = create_segment(&f, "direct", "USER");

    let users = format!("{base}/{id}/users");
    let hash = hash_to_string("someone@example.com", Encoding::Hex);
    let gaid = "6d92078a-8246-4ba4-ae5b-76104861e7dc";
    let element = |action: &str, id_type: &str, value: &str| json!({"action": action, "userIds": [{"idType": id_type, "idValue": value}]});
    let body = json!({"elements": [
        element("ADD", "SHA256_EMAIL", &hash),
        element("ADD", "SHA256_EMAIL", "not-a-hash"),
        element("ADD", "GOOGLE_AID", gaid),
    ]});
    let all = [AUTH, VERSION, PROTOCOL, BATCH_CREATE];
    for (left_out, status) in [(0, 401), (1, 400), (2, 400), (3, 400)] {
        let headers: Vec<(&str, &str)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != left_out)
            .map(|(_, h)| *h)
            .collect();
        let (got, _, answer) = call("POST", &users, &headers, Some(&body));
        assert_eq!(got, status, "without {}: {answer}", all[left_out].0);
    }
    let (status, _, answer) = call(
        "POST",
        &users,
        &[AUTH, ("LinkedIn-Version", "209912"), PROTOCOL, BATCH_CREATE],
        Some(&body),
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (426, Some("NONEXISTENT_VERSION"))
    );
    let (status, _, answer) = call(
        "POST",
        &users,
        &[
            ("Authorization", "Bearer expired-1"),
            VERSION,
            PROTOCOL,
            BATCH_CREATE,
        ],
        Some(&body),
    );
    assert_eq!(
        (status, answer["serviceErrorCode"].as_u64()),
        (401, Some(65602))
    );

    // The new segment's first users call: not found yet, nothing applied.
    let (status, _, answer) = call("POST", &users, &all, Some(&body));
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("Could not find DMP segment")
    );
    assert!(f.sandbox.state.store.members(&id).unwrap().is_empty());

    // Then a status per element, index-aligned; the refused element is not applied.
    let (status, _, answer) = call("POST", &users, &all, Some(&body));
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = answer["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 400, 201]);
    assert!(
        answer["elements"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idValue")
    );
    let members = |id: &str| -> BTreeSet<String> {
        f.sandbox
            .state
            .store
            .members(id)
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect()
    };
    let member = |id_type: &str, value: &str| json!({ id_type: value }).to_string();
    assert_eq!(
        members(&id),
        BTreeSet::from([member("SHA256_EMAIL", &hash), member("GOOGLE_AID", gaid)])
    );

    // Removing an ID, and one that is not there: both 201 ("by design").
    let removes = json!({"elements": [
        element("REMOVE", "SHA256_EMAIL", &hash),
        element("REMOVE", "SHA256_EMAIL", &"0".repeat(64)),
    ]});
    let (status, _, answer) = call("POST", &users, &all, Some(&removes));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["elements"],
        json!([{"status": 201}, {"status": 201}])
    );
    assert_eq!(members(&id), BTreeSet::from([member("GOOGLE_AID", gaid)]));

    // At most 5,000 elements a request.
    let many = json!({"elements": vec![element("ADD", "SHA256_EMAIL", &hash); 5001]});
    let (status, _, answer) = call("POST", &users, &all, Some(&many));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("at most 5000"));

    // The account finder and the segment itself.
    let finder = format!(
        "{base}?q=account&account=urn%3Ali%3AsponsoredAccount%3A{ACCOUNT}&start=0&count=10"
    );
    let (status, _, page) = call("GET", &finder, &[AUTH, VERSION, PROTOCOL], None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["elements"][0]["id"].to_string(), id);
    assert_eq!(page["elements"][0]["name"], "direct");
    let (status, _, segment) = call(
        "GET",
        &format!("{base}/{id}"),
        &[AUTH, VERSION, PROTOCOL],
        None,
    );
    assert_eq!(status, 200, "{segment}");
    assert_eq!(segment["destinations"][0]["audienceSize"], 1);

    // Past the rate: 429 with no Retry-After, as LinkedIn answers.
    let throttled = Fixture::new(SandboxConfig {
        rates: [("linkedin".to_string(), 2)].into(),
        ..Default::default()
    });
    let finder = finder.replace(&f.sandbox.url, &throttled.sandbox.url);
    let answers: Vec<(u16, bool)> = (0..3)
        .map(|_| {
            let (status, headers, _) = call("GET", &finder, &[AUTH, VERSION, PROTOCOL], None);
            (status, headers.contains_key("retry-after"))
        })
        .collect();
    assert_eq!(answers[2], (429, false), "{answers:?}");
    assert!(throttled.sandbox.state.store.stats().rate_limited > 0);
}

#[test]
fn the_official_client_works_against_the_emulator() {
    let f = Fixture::with_faults(FaultConfig::default());
    let out = std::process::Command::new(python())
        .arg(repo().join("tests/official/linkedin_client.py"))
        .arg(&f.sandbox.url)
        .output()
        .expect("run tests/official/linkedin_client.py");
    let printed = text(&out);
    println!("{printed}");
    assert!(
        out.status.success(),
        "LinkedIn's client against the emulator (exit {:?}):\n{printed}",
        out.status.code()
    );
    let segments = f.sandbox.state.store.list();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(segments[0].platform, "linkedin");
}

/// A destination at the fixture's sandbox, driven in-process (its token the sandbox's), adding
/// to the user segment named `segment` of the fixture's ad account.
fn in_process(
    f: &Fixture,
    segment: &str,
    max_rows: usize,
    requests_per_second: f64,
) -> LinkedInConfig {
    LinkedInConfig {
        name: "linkedin".into(),
        ad_account_id: ACCOUNT.into(),
        audience: AudienceRef::Name(segment.into()),
        source_platform: Some("ACTIVATOR_TEST".into()),
        access_token: "env:LINKEDIN_TOKEN_NOT_SET_IN_TESTS".into(),
        base_url: f.sandbox.url.clone(),
        api_version: DEFAULT_API_VERSION.into(),
        sync: SyncMode::Add,
        concurrency: 4,
        requests_per_second,
        batch: BatchLimits {
            max_rows,
            max_bytes: usize::MAX,
        },
        in_process_sandbox: true,
    }
}

/// Creates the user segment `name` and spends its first users call, which a segment just
/// created answers "not found": the connector then finds a segment that takes users at once, as
/// on every run after the first, and what is measured is not its wait for a new segment.
fn ready_segment(f: &Fixture, name: &str) {
    let id = create_segment(f, name, "USER");
    let (status, _, answer) = call(
        "POST",
        &format!("{}/rest/dmpSegments/{id}/users", f.sandbox.url),
        &[AUTH, VERSION, PROTOCOL, BATCH_CREATE],
        Some(&json!({"elements": []})),
    );
    assert_eq!(status, 404, "a new segment's first users call: {answer}");
}

/// Delivers `n` synthetic members; the time it took.
fn deliver(f: &Fixture, config: &LinkedInConfig, n: usize) -> Duration {
    let (elapsed, hashes) = common::deliver_synthetic(config, n);
    let AudienceRef::Name(segment) = &config.audience else {
        unreachable!("the segment is named")
    };
    let expected: Ids = hashes
        .into_iter()
        .map(|h| ("SHA256_EMAIL".to_string(), h))
        .collect();
    assert_eq!(f.segment(segment), expected);
    elapsed
}

/// Members a second through the connector and the emulator, nothing throttled: requests of
/// LinkedIn's largest batch (5,000 elements), four in flight, to a segment that exists and is
/// ready. Printed; the floor only catches a collapse.
#[test]
fn members_per_second_unthrottled() {
    let f = Fixture::with_faults(FaultConfig::default());
    ready_segment(&f, "throughput");
    let before = f.sandbox.state.store.stats().requests;
    let n = 200_000;
    let config = in_process(&f, "throughput", linkedin::MAX_ELEMENTS, 1e6);
    let elapsed = deliver(&f, &config, n);
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "linkedin unthrottled: {n} members in {:.2} s, {rate:.0} members/s ({} requests)",
        elapsed.as_secs_f64(),
        f.sandbox.state.store.stats().requests - before
    );
    assert!(rate > 5_000.0, "{rate:.0} members/s");
}

/// LinkedIn documents 500 requests a minute per member on the users endpoint (platforms-more.md
/// §A; current numbers UNCONFIRMED). The emulator counts calls in a rolling second, so the
/// sandbox enforces the per-second equivalent, 500 / 60 = 8.3, as 8 a second (its budget is a
/// whole number, and 8 stays under the minute's); past it LinkedIn answers 429 with no
/// `Retry-After`, and so does the emulator. With the connector at its default pace (8 a second)
/// creating the segment itself, the share of that rate its requests reach. The goal is 95%; the
/// assertion allows for a loaded machine's timers.
#[test]
fn share_of_the_documented_rate_reached_when_throttled() {
    const USERS_CALLS_PER_MINUTE: u64 = 500;
    let documented = USERS_CALLS_PER_MINUTE / 60;
    let f = Fixture::new(SandboxConfig {
        rates: [("linkedin".to_string(), documented)].into(),
        ..Default::default()
    });
    // 37 batches of 100, after two finds and the create (the new segment's first "not found"
    // stalls one of the four in flight, not the pace): about 41 requests, five seconds at 8 a
    // second.
    let config = in_process(&f, "paced", 100, linkedin::DEFAULT_REQUESTS_PER_SECOND);
    let elapsed = deliver(&f, &config, 3_700);
    let stats = f.sandbox.state.store.stats();
    let admitted = stats.requests - stats.rate_limited;
    let share = admitted as f64 / elapsed.as_secs_f64() / documented as f64;
    println!(
        "linkedin throttled at {documented}/s: {admitted} requests admitted in {:.2} s, {} refused with 429: {:.1}% of the documented rate (goal 95%)",
        elapsed.as_secs_f64(),
        stats.rate_limited,
        share * 100.0
    );
    assert!(
        share >= 0.90,
        "{:.1}% of the documented rate",
        share * 100.0
    );
}
