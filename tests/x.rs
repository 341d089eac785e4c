//! The X connector against the sandbox: the custom audience ends with exactly the e-mail and
//! device id hashes the export of the same run has, through add, remove and mirror runs over two
//! dates, and a mirror keeps the identifiers members who stayed share with those who left; faults
//! (5xx, 429, dropped answers, a create whose answer is lost) are retried with every member in
//! the audience once; X's rate headers pace a run past the rate; a wrong secret (a signature X
//! refuses), users X refuses and answers counting short stop the run with exit code 2 and X's
//! word; settings are refused at load with their key named; no credential and no raw e-mail
//! reaches the debug logs. Also measured: members per second with no throttle, and the share of
//! X's documented rate reached when the sandbox enforces it. X's own Python SDK, which signs its
//! requests, drives the emulator as a black box.

use crate::common;

use activator::batch::BatchLimits;
use activator::destinations::SyncMode;
use activator::destinations::settings::AudienceRef;
use activator::destinations::x;
use activator::destinations::x::config::XConfig;
use activator::destinations::x::oauth::{Credentials, Signer};
use activator::identity::{Encoding, hash::hash_to_string};
use activator::sandbox::SandboxConfig;
use activator::sandbox::faults::FaultConfig;
use activator::sandbox::x::{
    SANDBOX_ACCESS_TOKEN, SANDBOX_ACCESS_TOKEN_SECRET, SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
};
local_fixture!();
use common::create_answer_lost;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const DAY1: &str = "2026-11-24";
const DAY2: &str = "2026-11-25";
const ACCOUNT: &str = "18ce54d4x5t";
/// The sandbox's documented credentials, by the references the test jobs name.
const ENV: &[(&str, &str)] = &[
    ("X_CONSUMER_KEY", SANDBOX_CONSUMER_KEY),
    ("X_CONSUMER_SECRET", SANDBOX_CONSUMER_SECRET),
    ("X_ACCESS_TOKEN", SANDBOX_ACCESS_TOKEN),
    ("X_ACCESS_TOKEN_SECRET", SANDBOX_ACCESS_TOKEN_SECRET),
];
const CREDENTIALS: [&str; 4] = [
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_ACCESS_TOKEN_SECRET,
];

/// An audience's identifiers by X's field (`email`, `device_id`, `phone_number`).
type Ids = BTreeMap<String, BTreeSet<String>>;

impl Fixture {
    /// An X destination at the fixture's sandbox, with `extra` keys.
    fn x_destination(&self, extra: &str) -> String {
        format!(
            r#"type = "x"
account_id = "{ACCOUNT}"
consumer_key = "env:X_CONSUMER_KEY"
consumer_secret = "env:X_CONSUMER_SECRET"
access_token = "env:X_ACCESS_TOKEN"
access_token_secret = "env:X_ACCESS_TOKEN_SECRET"
base_url = "{url}"
requests_per_second = 200
{extra}"#,
            url = self.sandbox.url
        )
    }

    fn x_job(&self, min_value: u32, extra: &str) -> PathBuf {
        self.crm_job(min_value, &self.x_destination(extra))
    }

    /// The id of the one X audience named `name`.
    fn audience_id(&self, name: &str) -> String {
        let audiences: Vec<_> = self
            .sandbox
            .state
            .store
            .list()
            .into_iter()
            .filter(|a| a.platform == "x" && a.name == name)
            .collect();
        assert_eq!(
            audiences.len(),
            1,
            "one audience named {name}: {audiences:?}"
        );
        audiences[0].id.clone()
    }

    /// The identifiers of the audience named `name`, by X's field; each member is one.
    fn identifiers(&self, name: &str) -> Ids {
        let members = self
            .sandbox
            .state
            .store
            .members(&self.audience_id(name))
            .unwrap();
        let mut ids = Ids::new();
        for m in &members {
            let fields = m.as_object().unwrap();
            assert_eq!(fields.len(), 1, "one identifier a member: {m}");
            let (field, hash) = fields.iter().next().unwrap();
            ids.entry(field.clone())
                .or_default()
                .insert(hash.as_str().unwrap().to_string());
        }
        ids
    }

    /// What the export of `date` says the audience holds: its e-mail hashes and its mobile ad
    /// ids hashed (X's `device_id`).
    fn expected(&self, date: &str) -> Ids {
        let mut ids = Ids::new();
        ids.insert("email".into(), self.exported(date, "email_sha256"));
        let devices: BTreeSet<String> = self
            .exported(date, "mobile_ad_id")
            .iter()
            .map(|m| hash_to_string(m, Encoding::Hex))
            .collect();
        assert!(!devices.is_empty(), "the data has mobile ad ids");
        ids.insert("device_id".into(), devices);
        ids
    }

    /// A URL of the emulated API below the fixture's ad account.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut url = url::Url::parse(&format!(
            "{}/12/accounts/{ACCOUNT}/{path}",
            self.sandbox.url
        ))
        .unwrap();
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends a request as an X client does, with `authorization` and a JSON `body`: the status
    /// and the answer.
    fn send(
        &self,
        method: reqwest::Method,
        url: &url::Url,
        authorization: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let mut request = reqwest::Client::new().request(method, url.clone());
            if let Some(a) = authorization {
                request = request.header("authorization", a);
            }
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body);
            }
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json().await.unwrap_or(Value::Null))
        })
    }

    /// A request signed with the sandbox's credentials.
    fn signed(
        &self,
        method: reqwest::Method,
        url: &url::Url,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let authorization = sandbox_signer()
            .authorization(method.as_str(), url)
            .unwrap();
        self.send(method, url, Some(&authorization), body)
    }
}

fn sandbox_signer() -> Signer {
    Signer::new(&Credentials::new(
        SANDBOX_CONSUMER_KEY,
        SANDBOX_CONSUMER_SECRET,
        SANDBOX_ACCESS_TOKEN,
        SANDBOX_ACCESS_TOKEN_SECRET,
    ))
}

/// Asserts that none of the four credentials is in `printed`.
fn assert_no_credentials(printed: &str) {
    for credential in CREDENTIALS {
        assert!(!printed.contains(credential), "a credential is in the logs");
    }
}

/// The job file at `job` with `from` replaced by `to` (a setting changed).
fn edited(job: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(job).unwrap();
    assert!(text.contains(from), "{from} is in the job");
    std::fs::write(job, text.replace(from, to)).unwrap();
    job.to_path_buf()
}

/// The credentials' environment and `ACTIVATOR_STATE`, for runs that follow each other.
fn with_state(state: &str) -> Vec<(&str, &str)> {
    let mut env = ENV.to_vec();
    env.push(("ACTIVATOR_STATE", state));
    env
}

#[test]
fn add_creates_the_audience_with_the_exported_e_mails_and_device_ids() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.x_job(100, "audience = \"spenders\"\nbatch = { max_rows = 300 }");
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let expected = f.expected(DAY2);
    assert_eq!(f.identifiers("spenders"), expected);
    let stats = f.sandbox.state.store.stats();
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert!(stats.max_rows_per_request <= 300, "{stats:?}");
    assert!(
        out.contains("X custom audience") && out.contains("(created)"),
        "{out}"
    );
    assert_no_credentials(&out);
    f.assert_no_raw_emails(&out);

    // The next run finds the audience by name, and adds to it.
    let (code, out) = f.run_job(&job, DAY1, ENV);
    assert_eq!(code, 0, "{out}");
    let mut both = expected;
    for (field, ids) in f.expected(DAY1) {
        both.entry(field).or_default().extend(ids);
    }
    assert_eq!(f.identifiers("spenders"), both);
    assert!(!out.contains("(created)"), "{out}");
    assert_no_credentials(&out);
}

#[test]
fn remove_takes_the_members_out_and_needs_an_audience_to_remove_from() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(
        &f.x_job(100, "audience = \"gone\"\nsync = \"remove\""),
        DAY2,
        ENV,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("has no custom audience named gone") && out.contains("nothing to remove from"),
        "{out}"
    );
    let (code, out) = f.run_job(&f.x_job(100, "audience = \"gone\""), DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert!(!f.identifiers("gone").is_empty());
    let (code, out) = f.run_job(
        &f.x_job(100, "audience = \"gone\"\nsync = \"remove\""),
        DAY2,
        ENV,
    );
    assert_eq!(code, 0, "{out}");
    assert!(f.identifiers("gone").is_empty());
}

#[test]
fn mirror_over_two_dates_leaves_exactly_the_second_export() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.x_job(100, "audience = \"m\"\nsync = \"mirror\"");
    let state = f.state_env();
    let env = with_state(&state);
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    let day1 = f.expected(DAY1);
    assert_eq!(f.identifiers("m"), day1);
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    let day2 = f.expected(DAY2);
    assert!(day1["email"].difference(&day2["email"]).count() > 0);
    assert!(day2["email"].difference(&day1["email"]).count() > 0);
    assert_eq!(f.identifiers("m"), day2);
    assert_no_credentials(&out);
}

#[test]
fn a_mirror_keeps_the_identifiers_members_who_stayed_share_with_those_who_left() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.shared_identifiers_job(
        &f.x_destination("audience = \"household\"\nsync = \"mirror\"\nsend_phones = true"),
    );
    let state = f.state_env();
    let env = with_state(&state);
    let ids = |emails: &[&str], phones: &[&str]| -> Ids {
        let mut ids = Ids::new();
        ids.insert(
            "email".into(),
            emails
                .iter()
                .map(|e| hash_to_string(e, Encoding::Hex))
                .collect(),
        );
        ids.insert(
            "phone_number".into(),
            phones
                .iter()
                .map(|p| hash_to_string(&format!("141555501{p}"), Encoding::Hex))
                .collect(),
        );
        ids
    };
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        f.identifiers("household"),
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
        f.identifiers("household"),
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
fn with_errors_throttling_and_dropped_answers_every_member_arrives_once() {
    let f = Fixture::with_faults(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.1,
        seed: 7,
        // The audience is created, and the answer saying so is lost; and a users request is
        // throttled for sure (36 draws at 10% may draw none).
        once: [
            create_answer_lost("/custom_audiences"),
            vec![activator::sandbox::faults::TargetedFault {
                fault: activator::sandbox::faults::FaultName::Throttle,
                method: Some("POST".into()),
                path_ends_with: "/users".into(),
            }],
        ]
        .concat(),
        ..FaultConfig::default()
    });
    let job = f.x_job(
        100,
        "audience = \"flaky\"\nconcurrency = 3\nbatch = { max_rows = 100 }",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    // `identifiers` checks each identifier is one member; X has no idempotency key, so a users
    // request whose answer was lost is sent again, which adds nobody twice.
    assert_eq!(f.identifiers("flaky"), f.expected(DAY2));
    assert!(f.targeted_faults_spent());
    let audiences = f.sandbox.state.store.list();
    assert_eq!(
        audiences.iter().filter(|a| a.platform == "x").count(),
        1,
        "created once although the answer to the create was lost"
    );
    let stats = f.sandbox.state.store.stats();
    assert!(
        stats.injected_errors > 0 && stats.injected_throttles > 0 && stats.injected_drops > 0,
        "{stats:?}"
    );
    // The store is a set: a users request applied twice is seen only here, and only a dropped
    // answer may cause one.
    assert!(
        stats.batches_accepted_twice <= stats.injected_drops,
        "{stats:?}"
    );
    assert!(out.contains("retries"), "{out}");
    // Every retry was signed afresh: the emulator refuses a nonce seen before.
    assert!(!out.contains("oauth_nonce was used before"), "{out}");
    assert_no_credentials(&out);
    f.assert_no_raw_emails(&out);
}

#[test]
fn past_the_request_rate_x_s_rate_headers_pace_the_run() {
    let f = Fixture::new(SandboxConfig {
        rates: [("x".to_string(), 5)].into(),
        ..Default::default()
    });
    // Far above the sandbox's rate, one request at a time: once an answer says
    // x-rate-limit-remaining 0, nothing is sent before x-rate-limit-reset.
    let job = f.x_job(
        100,
        "audience = \"rate\"\nconcurrency = 1\nbatch = { max_rows = 100 }",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.identifiers("rate"), f.expected(DAY2));
    let stats = f.sandbox.state.store.stats();
    assert!(stats.upload_requests > 5, "{stats:?}");
    assert!(
        out.contains("X's rate window is spent"),
        "the spent window was waited for: {out}"
    );
    assert_eq!(
        stats.rate_limited, 0,
        "no request was sent into a spent window: {stats:?}"
    );
}

#[test]
fn a_secret_x_does_not_sign_with_stops_the_run_with_exit_code_2_and_says_what_to_check() {
    let f = Fixture::with_faults(FaultConfig::default());
    let job = f.x_job(100, "audience = \"x\"");
    let wrong = "wrong-consumer-secret-77";
    let mut env = ENV.to_vec();
    env[1] = ("X_CONSUMER_SECRET", wrong);
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("HTTP 401 UNAUTHORIZED_ACCESS")
            && out.contains("signature does not match")
            && out.contains("consumer_secret")
            && out.contains("access_token_secret"),
        "{out}"
    );
    assert!(!out.contains(wrong), "a credential is in the logs");
    assert_no_credentials(&out);
    assert!(f.sandbox.state.store.list().is_empty(), "nothing created");

    let job = edited(
        &job,
        "env:X_ACCESS_TOKEN_SECRET",
        "env:X_TOKEN_SECRET_NOT_SET_IN_TESTS",
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("X_TOKEN_SECRET_NOT_SET_IN_TESTS is not set"),
        "{out}"
    );
}

#[test]
fn users_x_refuses_stop_the_run_with_exit_code_2_by_place_not_value() {
    // The sandbox refuses a share of users as X refuses malformed ones: the whole batch fails.
    let f = Fixture::with_faults(FaultConfig {
        invalid_row_rate: 0.05,
        seed: 3,
        ..FaultConfig::default()
    });
    let (code, out) = f.run_job(&f.x_job(100, "audience = \"bad\""), DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("HTTP 400 INVALID_PARAMETER")
            && out.contains("operation_errors:")
            && out.contains("params.users[0]")
            && out.contains("refused the request as sent"),
        "{out}"
    );
    assert!(f.sandbox.state.store.stats().rejected > 0);
    assert_no_credentials(&out);
    f.assert_no_raw_emails(&out);
}

#[test]
fn the_emulator_checks_signatures_and_payloads_as_x_does() {
    let f = Fixture::with_faults(FaultConfig::default());
    let create = f.url("custom_audiences", &[("name", "direct checks")]);
    let (status, created) = f.signed(reqwest::Method::POST, &create, None);
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_string();
    let users = f.url(&format!("custom_audiences/{id}/users"), &[]);
    let hash = hash_to_string("a@example.com", Encoding::Hex);
    let operation = |user: Value| json!({"operation_type": "Update", "params": {"users": [user]}});
    let body = |operations: Vec<Value>| serde_json::to_vec(&operations).unwrap();

    // Accepted: both counts are the users sent.
    let (status, answer) = f.signed(
        reqwest::Method::POST,
        &users,
        Some(body(vec![
            operation(json!({"email": [hash]})),
            json!({"operation_type": "Update", "params": {"users": [{"email": [hash]}, {"partner_user_id": ["crm-7"]}]}}),
        ])),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["data"],
        json!({"success_count": 3, "total_count": 3})
    );

    // Unsigned, signed with another secret, or a nonce used twice: 401.
    let (status, answer) = f.send(reqwest::Method::GET, &create, None, None);
    assert_eq!(status, 401, "{answer}");
    let forged = Signer::new(&Credentials::new(
        SANDBOX_CONSUMER_KEY,
        "not-the-secret",
        SANDBOX_ACCESS_TOKEN,
        SANDBOX_ACCESS_TOKEN_SECRET,
    ));
    let list = f.url("custom_audiences", &[("q", "direct")]);
    let authorization = forged.authorization("GET", &list).unwrap();
    let (status, answer) = f.send(reqwest::Method::GET, &list, Some(&authorization), None);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["errors"][0]["code"], "UNAUTHORIZED_ACCESS");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let once = sandbox_signer().authorization_with("GET", &list, "nonce-used-twice", now);
    let (status, answer) = f.send(reqwest::Method::GET, &list, Some(&once), None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"][0]["id"], id.as_str());
    let (status, answer) = f.send(reqwest::Method::GET, &list, Some(&once), None);
    assert_eq!(status, 401, "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("oauth_nonce was used before"), "{message}");
    // The query is signed: the same header on another query is refused.
    let other = f.url("custom_audiences", &[("q", "other")]);
    let moved = sandbox_signer().authorization_with("GET", &list, "nonce-moved", now);
    let (status, _) = f.send(reqwest::Method::GET, &other, Some(&moved), None);
    assert_eq!(status, 401);

    // Refused by place, never quoting the value: an upper-case hash, an unknown field.
    let upper = hash.to_uppercase();
    for (user, place) in [
        (json!({"email": [upper]}), "params.users[0].email[0]"),
        (json!({"mail": [hash]}), "params.users[0].mail"),
    ] {
        let (status, answer) = f.signed(
            reqwest::Method::POST,
            &users,
            Some(body(vec![operation(user)])),
        );
        assert_eq!(status, 400, "{answer}");
        let message = answer["operation_errors"][0][0]["message"]
            .as_str()
            .unwrap();
        assert!(message.starts_with(place), "{message}");
        assert!(
            !message.contains(&upper) && !message.contains(&hash),
            "{message}"
        );
    }
    // Request limits: 2,500 operations, 5,000,000 bytes, a JSON Content-Type.
    let too_many: Vec<Value> = (0..=x::MAX_OPERATIONS)
        .map(|_| operation(json!({"email": [hash]})))
        .collect();
    let (status, answer) = f.signed(reqwest::Method::POST, &users, Some(body(too_many)));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 2500")
    );
    let huge = operation(json!({"partner_user_id": ["p".repeat(x::MAX_BODY_BYTES)]}));
    let (status, answer) = f.signed(reqwest::Method::POST, &users, Some(body(vec![huge])));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 5000000")
    );
    let authorization = sandbox_signer().authorization("POST", &users).unwrap();
    let (status, _) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let answer = reqwest::Client::new()
            .post(users.clone())
            .header("authorization", authorization)
            .header("content-type", "text/plain")
            .body(body(vec![operation(json!({"email": [hash]}))]))
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), ())
    });
    assert_eq!(status, 400);
    // An audience of another account, or none: 404.
    let elsewhere = url::Url::parse(&format!(
        "{}/12/accounts/otheraccount/custom_audiences/{id}/users",
        f.sandbox.url
    ))
    .unwrap();
    let (status, _) = f.signed(
        reqwest::Method::POST,
        &elsewhere,
        Some(body(vec![operation(json!({"email": [hash]}))])),
    );
    assert_eq!(status, 404);
    // Only the first request was applied: one e-mail and one partner id.
    let applied = f.identifiers("direct checks");
    assert_eq!(applied["email"], BTreeSet::from([hash.clone()]));
    assert_eq!(
        applied["partner_user_id"],
        BTreeSet::from(["crm-7".to_string()])
    );
    assert_eq!(applied.len(), 2, "{applied:?}");
}

#[test]
fn an_answer_counting_fewer_users_than_were_sent_is_retried_then_stops_the_run_naming_the_batch() {
    // The emulator answers one user short for audiences so named, applying nothing.
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(
        &f.x_job(100, "audience = \"undercounted\"\nconcurrency = 1"),
        DAY2,
        ENV,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("add batch 1")
            && out.contains("success_count")
            && out.contains(&format!("{} times", x::SHORT_COUNT_TRIES)),
        "{out}"
    );
    let stats = f.sandbox.state.store.stats();
    assert_eq!(
        stats.upload_requests,
        u64::from(x::SHORT_COUNT_TRIES),
        "{stats:?}"
    );
    assert!(f.identifiers("undercounted").is_empty());
}

#[test]
fn an_unknown_audience_id_stops_the_run_with_a_clear_message() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run_job(&f.x_job(100, "audience_id = \"nosuch1\""), DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("HTTP 404 NOT_FOUND")
            && out.contains("nosuch1 is not a custom audience")
            && out.contains("check account_id and audience_id"),
        "{out}"
    );
    assert_no_credentials(&out);
}

/// Runs a job whose X destination has `extra` keys and the `edits` made to its file, expecting
/// the loader to refuse it with exit code 2 and to say each of `said`; what it printed.
fn refused(f: &Fixture, extra: &str, edits: &[(&str, &str)], said: &[&str]) -> String {
    let mut job = f.x_job(100, extra);
    for (from, to) in edits {
        job = edited(&job, from, to);
    }
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    for s in said {
        assert!(out.contains(s), "`{s}` not in: {out}");
    }
    out
}

#[test]
fn the_job_loader_refuses_bad_settings_naming_the_key() {
    let f = Fixture::with_faults(FaultConfig::default());
    let a = "audience = \"a\"";
    refused(
        &f,
        "audience = \"a\"\nsync = \"replace\"",
        &[],
        &["destinations[1].sync", "X has no replace", "mirror"],
    );
    let account = format!("account_id = \"{ACCOUNT}\"");
    refused(
        &f,
        a,
        &[(account.as_str(), "account_id = \"act_1\"")],
        &["destinations[1].account_id", "lowercase letters and digits"],
    );
    refused(
        &f,
        "audience_id = \"Audience-7\"",
        &[],
        &[
            "destinations[1].audience_id",
            "lowercase letters and digits",
        ],
    );
    refused(
        &f,
        "audience = \"a\"\naudience_id = \"7\"",
        &[],
        &["destinations[1]", "either `audience`"],
    );
    refused(
        &f,
        "audience = \" Nightly \"",
        &[],
        &["destinations[1].audience", "white space"],
    );
    let out = refused(
        &f,
        a,
        &[("env:X_CONSUMER_SECRET", "literal-consumer-secret")],
        &["destinations[1].consumer_secret", "not a secret reference"],
    );
    assert!(
        !out.contains("literal-consumer-secret"),
        "the text is not shown"
    );
    refused(
        &f,
        a,
        &[("requests_per_second = 200", "requests_per_second = 0")],
        &["destinations[1].requests_per_second"],
    );
    refused(
        &f,
        "audience = \"a\"\nbatch = { max_rows = 3000 }",
        &[],
        &["destinations[1].batch.max_rows", "at most 2500"],
    );
    refused(
        &f,
        "audience = \"a\"\napi_version = \"twelve\"",
        &[],
        &["destinations[1].api_version"],
    );
    refused(
        &f,
        "audience = \"a\"\napi_version = \"${X_API_VERSION_NOT_SET}\"",
        &[],
        &["destinations[1].api_version", "X_API_VERSION_NOT_SET"],
    );
    refused(
        &f,
        "audience = \"a\"\nlist_type = \"EMAIL\"",
        &[],
        &["destinations[1]", "list_type"],
    );
    refused(
        &f,
        &format!("audience = \"{}\"", "n".repeat(x::MAX_NAME_CHARS + 1)),
        &[],
        &["destinations[1].audience", "at most 255"],
    );
    refused(
        &f,
        "audience = \"a\"\nsend_phones = true",
        &[("phone = \"phone\"\n", "")],
        &["destinations[1].send_phones", "identifiers.phone"],
    );
    refused(
        &f,
        a,
        &[
            ("email = \"email\"\n", ""),
            ("mobile_ad_id = \"mobile_ad_id\"\n", ""),
        ],
        &[
            "destinations[1]",
            "map identifiers.email or identifiers.mobile_ad_id",
        ],
    );
    refused(
        &f,
        a,
        &[
            ("profile = \"meta\"", "profile = \"google\""),
            ("mobile_ad_id = \"mobile_ad_id\"\n", ""),
        ],
        &["an x destination needs `profile = \"meta\"`", "never match"],
    );
    assert_eq!(
        f.sandbox.state.store.stats().requests,
        0,
        "nothing was sent"
    );
}

#[test]
fn the_official_client_works_against_the_emulator() {
    let f = Fixture::with_faults(FaultConfig::default());
    let out = std::process::Command::new(common::python())
        .arg(common::repo().join("tests/official/x_client.py"))
        .arg(&f.sandbox.url)
        .env("X_SANDBOX_CONSUMER_KEY", SANDBOX_CONSUMER_KEY)
        .env("X_SANDBOX_CONSUMER_SECRET", SANDBOX_CONSUMER_SECRET)
        .env("X_SANDBOX_ACCESS_TOKEN", SANDBOX_ACCESS_TOKEN)
        .env("X_SANDBOX_ACCESS_TOKEN_SECRET", SANDBOX_ACCESS_TOKEN_SECRET)
        .output()
        .expect("run tests/official/x_client.py");
    assert!(out.status.success(), "{}", common::text(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = answer["name"].as_str().unwrap();
    assert_eq!(
        f.audience_id(name),
        answer["custom_audience_id"].as_str().unwrap()
    );
    let expected: Ids = serde_json::from_value(answer["expected"].clone()).unwrap();
    assert_eq!(expected["email"].len(), 140);
    assert_eq!(f.identifiers(name), expected);
    // The SDK's bad-credential request was refused, and none was taken for another's.
    assert!(f.sandbox.state.store.stats().rejected >= 1);
}

/// A destination at the fixture's sandbox, driven in-process (signing with the sandbox's
/// credentials).
fn in_process(f: &Fixture, audience: &str, max_rows: usize, requests_per_second: f64) -> XConfig {
    XConfig {
        name: "x".into(),
        account_id: ACCOUNT.into(),
        audience: AudienceRef::Name(audience.into()),
        consumer_key: "env:X_CONSUMER_KEY_NOT_SET_IN_TESTS".into(),
        consumer_secret: "env:X_CONSUMER_SECRET_NOT_SET_IN_TESTS".into(),
        access_token: "env:X_ACCESS_TOKEN_NOT_SET_IN_TESTS".into(),
        access_token_secret: "env:X_ACCESS_TOKEN_SECRET_NOT_SET_IN_TESTS".into(),
        base_url: f.sandbox.url.clone(),
        api_version: x::API_VERSION.into(),
        sync: SyncMode::Add,
        send_phones: false,
        concurrency: 4,
        requests_per_second,
        batch: BatchLimits {
            max_rows,
            max_bytes: usize::MAX,
        },
        in_process_sandbox: true,
    }
}

/// Delivers `n` synthetic members; the time it took.
fn deliver(f: &Fixture, config: &XConfig, n: usize) -> Duration {
    let (elapsed, hashes) = common::deliver_synthetic(config, n);
    let AudienceRef::Name(audience) = &config.audience else {
        unreachable!("the audience is named")
    };
    assert_eq!(f.identifiers(audience)["email"], hashes);
    elapsed
}

/// Members a second through the connector and the emulator, nothing throttled: requests of X's
/// largest batch, four in flight. Printed; the floor only catches a collapse.
#[test]
fn members_per_second_unthrottled() {
    let f = Fixture::with_faults(FaultConfig::default());
    let n = 100_000;
    let config = in_process(&f, "throughput", x::MAX_USERS, 1e6);
    let elapsed = deliver(&f, &config, n);
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "x unthrottled: {n} members in {:.2} s, {rate:.0} members/s ({} requests)",
        elapsed.as_secs_f64(),
        f.sandbox.state.store.stats().requests
    );
    assert!(rate > 5_000.0, "{rate:.0} members/s");
}

/// With the sandbox enforcing X's documented rate (1,500 requests a minute, 25 a second) and
/// the connector at its default pace, the share of that rate its requests reach. The goal is
/// 95%; the assertion allows for a loaded machine's timers.
#[test]
fn share_of_the_documented_rate_reached_when_throttled() {
    let documented = x::DEFAULT_REQUESTS_PER_SECOND;
    let f = Fixture::new(SandboxConfig {
        rates: [("x".to_string(), documented as u64)].into(),
        ..Default::default()
    });
    // 125 batches of 40: about five seconds at the documented rate.
    let config = in_process(&f, "paced", 40, documented);
    let elapsed = deliver(&f, &config, 5_000);
    let stats = f.sandbox.state.store.stats();
    let admitted = stats.requests - stats.rate_limited;
    let share = admitted as f64 / elapsed.as_secs_f64() / documented;
    println!(
        "x throttled at {documented}/s: {admitted} requests admitted in {:.2} s, {} refused with 429: {:.1}% of the documented rate (goal 95%)",
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
