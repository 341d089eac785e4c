//! The Microsoft Advertising connector against the sandbox: the customer list ends with exactly
//! the e-mail hashes the export of the same run has, through add, remove, mirror and replace
//! runs; calls stay within 1,000 items; faults (server errors, error 117, dropped answers) are
//! retried, the list created once; Microsoft's documented vector `test@contoso.com` arrives as
//! documented; refused items are counted, not retried; expired or refused tokens and Customer
//! Match terms not accepted stop the run with exit 2 and say what to do; settings the loader
//! refuses are named by their key; neither token nor raw e-mails reach the debug logs. Also
//! measured: members per second with no throttle, and the share of the connector's default rate
//! (Microsoft publishes none) reached when the sandbox enforces it.

use crate::common;

use activator::batch::BatchLimits;
use activator::destinations::SyncMode;
use activator::destinations::microsoft;
use activator::destinations::microsoft::config::MicrosoftConfig;
use activator::destinations::settings::AudienceRef;
use activator::sandbox::SandboxConfig;
use activator::sandbox::faults::FaultConfig;
use activator::sandbox::microsoft::{
    CUSTOMER_WITHOUT_TERMS, EXPIRED_ACCESS_TOKEN, INVALID_DEVELOPER_TOKEN,
};
local_fixture!();
use common::{create_answer_lost, generated_data, python, repo, text};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const ACCESS_TOKEN: &str = "msads-test-access-token-c0ffee";
const DEVELOPER_TOKEN: &str = "msads-test-developer-token-5ca1ab1e";
const DAY1: &str = "2026-11-24";
const DAY2: &str = "2026-11-25";
const ENV: &[(&str, &str)] = &[
    ("MSADS_ACCESS_TOKEN", ACCESS_TOKEN),
    ("MSADS_DEVELOPER_TOKEN", DEVELOPER_TOKEN),
];
const CUSTOMER: &str = "1234567";
const ACCOUNT: &str = "7654321";
/// Microsoft's documented hash of `test@contoso.com` (bulk-service/customer-list-item.md).
const CONTOSO_HASH: &str = "f25ad364d33972379a7a4f4df33db142205f5c40eb19cfdb2fc5aaf117e10101";

impl Fixture {
    /// A Microsoft destination at the fixture's sandbox: its keys as TOML values, each of
    /// `overrides` replacing the default of its key (an empty value leaves the key out).
    fn microsoft_destination(&self, overrides: &[(&str, &str)]) -> String {
        let mut keys: Vec<(&str, String)> = vec![
            ("type", "\"microsoft\"".to_string()),
            ("customer_id", format!("\"{CUSTOMER}\"")),
            ("account_id", format!("\"{ACCOUNT}\"")),
            ("access_token", "\"env:MSADS_ACCESS_TOKEN\"".to_string()),
            (
                "developer_token",
                "\"env:MSADS_DEVELOPER_TOKEN\"".to_string(),
            ),
            ("base_url", format!("\"{}\"", self.sandbox.url)),
            ("requests_per_second", "200".to_string()),
        ];
        for (key, value) in overrides {
            keys.retain(|(k, _)| k != key);
            if !value.is_empty() {
                keys.push((*key, value.to_string()));
            }
        }
        keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }

    fn microsoft_job(&self, min_value: u32, overrides: &[(&str, &str)]) -> PathBuf {
        self.crm_job(min_value, &self.microsoft_destination(overrides))
    }

    /// The e-mail hashes the sandbox's customer list `name` holds.
    fn list(&self, name: &str) -> BTreeSet<String> {
        let store = &self.sandbox.state.store;
        let list = store
            .list()
            .into_iter()
            .find(|a| a.name == name && a.platform == "microsoft")
            .expect("the customer list exists");
        store
            .members(&list.id)
            .unwrap()
            .iter()
            .map(|m| m["Email"].as_str().expect("an Email member").to_string())
            .collect()
    }

    fn lists(&self) -> usize {
        let store = &self.sandbox.state.store;
        store
            .list()
            .iter()
            .filter(|a| a.platform == "microsoft")
            .count()
    }

    /// What the export of `date` says the list must hold.
    fn expected(&self, date: &str) -> BTreeSet<String> {
        self.exported(date, "email_sha256")
    }
}

fn assert_no_tokens(out: &str) {
    assert!(
        !out.contains(ACCESS_TOKEN),
        "the access token is in the logs"
    );
    assert!(
        !out.contains(DEVELOPER_TOKEN),
        "the developer token is in the logs"
    );
}

fn plain_sandbox() -> Fixture {
    Fixture::with_faults(FaultConfig::default())
}

#[test]
fn add_creates_the_list_with_exactly_the_exported_emails() {
    let f = plain_sandbox();
    let job = f.microsoft_job(
        100,
        &[
            ("audience", "\"spenders\""),
            ("batch", "{ max_rows = 300 }"),
        ],
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let expected = f.expected(DAY2);
    assert!(expected.len() > 300, "several calls: {}", expected.len());
    assert_eq!(f.list("spenders"), expected);
    let stats = f.sandbox.state.store.stats();
    assert!(stats.max_rows_per_request <= 300, "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert!(out.contains("Microsoft customer list"), "{out}");
    assert_no_tokens(&out);
    f.assert_no_raw_emails(&out);

    // The next run finds the list by name and adds to it.
    let (code, out) = f.run_job(&job, DAY1, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.lists(), 1);
    let both: BTreeSet<String> = expected.union(&f.expected(DAY1)).cloned().collect();
    assert_eq!(f.list("spenders"), both);
}

#[test]
fn microsofts_documented_vector_arrives_as_documented() {
    let f = plain_sandbox();
    let data = generated_data(5_000, 3);
    let sql = f.dir.path().join("contoso.sql");
    std::fs::write(
        &sql,
        "SELECT email FROM (VALUES (' Test@Contoso.com ')) AS t(email)\n",
    )
    .unwrap();
    let job = f.dir.path().join("contoso.toml");
    std::fs::write(
        &job,
        format!(
            r#"segment = "{sql}"
profile = "meta"
[[tables]]
name = "customers"
url = "{data}/customers"
partitions = ["dt"]
[identifiers]
email = "email"
[[destinations]]
{destination}"#,
            sql = sql.display(),
            data = data.display(),
            destination = f.microsoft_destination(&[("audience", "\"contoso\"")]),
        ),
    )
    .unwrap();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        f.list("contoso"),
        BTreeSet::from([CONTOSO_HASH.to_string()])
    );
}

#[test]
fn remove_takes_the_list_members_out() {
    let f = plain_sandbox();
    let add = f.microsoft_job(100, &[("audience", "\"x\"")]);
    assert_eq!(f.run_job(&add, DAY2, ENV).0, 0);
    assert!(!f.list("x").is_empty());
    let remove = f.microsoft_job(100, &[("audience", "\"x\""), ("sync", "\"remove\"")]);
    let (code, out) = f.run_job(&remove, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert!(f.list("x").is_empty());
}

#[test]
fn mirror_over_two_runs_leaves_exactly_the_second_segment() {
    let f = plain_sandbox();
    let job = f.microsoft_job(100, &[("audience", "\"m\""), ("sync", "\"mirror\"")]);
    let state = f.state_env();
    let env = [ENV[0], ENV[1], ("ACTIVATOR_STATE", state.as_str())];
    let (code, out) = f.run_job(&job, DAY1, &env);
    assert_eq!(code, 0, "{out}");
    let day1 = f.expected(DAY1);
    assert_eq!(f.list("m"), day1);
    let (code, out) = f.run_job(&job, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    let day2 = f.expected(DAY2);
    assert!(day1.difference(&day2).count() > 0 && day2.difference(&day1).count() > 0);
    assert_eq!(f.list("m"), day2);
}

#[test]
fn replace_makes_the_list_the_segment_over_several_calls() {
    let f = plain_sandbox();
    let add = f.microsoft_job(100, &[("audience", "\"r\"")]);
    assert_eq!(f.run_job(&add, DAY1, ENV).0, 0);
    let day1 = f.expected(DAY1);
    assert_eq!(f.list("r"), day1);
    // Batches of 100: the first call replaces, the others add; all `Replace` would leave the
    // last batch only, all `Add` the union of both days.
    let replace = f.microsoft_job(
        100,
        &[
            ("audience", "\"r\""),
            ("sync", "\"replace\""),
            ("batch", "{ max_rows = 100 }"),
        ],
    );
    let (code, out) = f.run_job(&replace, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let day2 = f.expected(DAY2);
    assert!(day2.len() > 200, "several calls: {}", day2.len());
    assert!(day1.difference(&day2).count() > 0);
    assert_eq!(f.list("r"), day2);
}

/// A replace killed after some calls and run again resumes: the calls a killed attempt had
/// acknowledged are not made again, and the resumed calls add (a second `Replace` would empty
/// the list of what the first calls sent), so the list ends as the segment.
#[test]
fn a_replace_killed_midway_resumes_without_emptying_the_list_again() {
    let f = Fixture::with_faults(FaultConfig {
        latency_ms: 40,
        ..FaultConfig::default()
    });
    let state = f.state_env();
    let env = [ENV[0], ENV[1], ("ACTIVATOR_STATE", state.as_str())];
    let add = f.microsoft_job(100, &[("audience", "\"k\"")]);
    assert_eq!(f.run_job(&add, DAY1, &env).0, 0);
    let replace = f.microsoft_job(
        100,
        &[
            ("audience", "\"k\""),
            ("sync", "\"replace\""),
            ("batch", "{ max_rows = 50 }"),
        ],
    );
    let accepted = || f.sandbox.state.store.stats().batches_accepted;
    let start = accepted();
    let mut child = common::activator()
        .args([
            "run",
            &replace.display().to_string(),
            "--date",
            DAY2,
            "--quiet",
        ])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted() < start + 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the run did not get that far");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, out) = f.run_job(&replace, DAY2, &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resum"), "{out}");
    assert_eq!(f.list("k"), f.expected(DAY2));
}

#[test]
fn with_errors_throttling_and_dropped_connections_every_member_arrives_once() {
    let f = Fixture::with_faults(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.1,
        seed: 5,
        // The list is created, and the answer saying so is lost.
        once: create_answer_lost("/Audiences"),
        ..FaultConfig::default()
    });
    let job = f.microsoft_job(
        100,
        &[
            ("audience", "\"flaky\""),
            ("concurrency", "3"),
            ("batch", "{ max_rows = 100 }"),
        ],
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.list("flaky"), f.expected(DAY2));
    assert!(f.targeted_faults_spent());
    assert_eq!(f.lists(), 1, "created once");
    let stats = f.sandbox.state.store.stats();
    assert!(
        stats.injected_errors > 0 && stats.injected_throttles > 0 && stats.injected_drops > 0,
        "{stats:?}"
    );
    assert!(
        stats.batches_accepted_twice <= stats.injected_drops,
        "only a dropped answer sends a batch again: {stats:?}"
    );
    assert!(out.contains("retries"), "{out}");
    assert_no_tokens(&out);
    f.assert_no_raw_emails(&out);

    // A replace under the same faults: its first call may be applied twice, never after an Add.
    let replace = f.microsoft_job(
        100,
        &[
            ("audience", "\"flaky\""),
            ("sync", "\"replace\""),
            ("concurrency", "3"),
            ("batch", "{ max_rows = 100 }"),
        ],
    );
    let (code, out) = f.run_job(&replace, DAY1, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.list("flaky"), f.expected(DAY1));
}

#[test]
fn call_rate_exceeded_is_waited_out_as_the_answer_says() {
    let f = Fixture::new(SandboxConfig {
        rates: [("microsoft".to_string(), 5)].into(),
        ..Default::default()
    });
    // Far above the sandbox's rate, one call at a time: each 117 says to wait one second
    // (`Retry-After`); without it the connector waits Microsoft's minute.
    let job = f.microsoft_job(
        100,
        &[
            ("audience", "\"rate\""),
            ("concurrency", "1"),
            ("batch", "{ max_rows = 100 }"),
        ],
    );
    let started = Instant::now();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert!(f.sandbox.state.store.stats().rate_limited > 0);
    assert!(
        started.elapsed() < Duration::from_secs(55),
        "waited a minute rather than the Retry-After"
    );
    assert_eq!(f.list("rate"), f.expected(DAY2));
}

#[test]
fn refused_items_are_counted_and_the_rest_arrive() {
    let f = Fixture::with_faults(FaultConfig {
        invalid_row_rate: 0.05,
        seed: 11,
        ..FaultConfig::default()
    });
    let job = f.microsoft_job(100, &[("audience", "\"partial\"")]);
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    let expected = f.expected(DAY2);
    let list = f.list("partial");
    assert!(list.is_subset(&expected));
    let missing = expected.len() - list.len();
    assert!(missing > 0, "some items were refused");
    let counted: usize = out
        .split("the platform called ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of refused items in {out}"));
    // An e-mail two members share may be refused in one call and taken in another.
    assert!(counted >= missing, "{counted} counted, {missing} missing");
    assert!(
        out.contains("(64 chars, not shown)"),
        "masked samples: {out}"
    );
}

#[test]
fn expired_or_refused_tokens_stop_the_run_with_exit_2_and_say_what_to_do() {
    let f = plain_sandbox();
    let job = f.microsoft_job(100, &[("audience", "\"tokens\"")]);

    let expired = [("MSADS_ACCESS_TOKEN", EXPIRED_ACCESS_TOKEN), ENV[1]];
    let (code, out) = f.run_job(&job, DAY2, &expired);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("109 AuthenticationTokenExpired") && out.contains("refresh"),
        "{out}"
    );
    assert!(!out.contains(EXPIRED_ACCESS_TOKEN) && !out.contains(DEVELOPER_TOKEN));

    let refused = [ENV[0], ("MSADS_DEVELOPER_TOKEN", INVALID_DEVELOPER_TOKEN)];
    let (code, out) = f.run_job(&job, DAY2, &refused);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("105 InvalidCredentials") && out.contains("developer token"),
        "{out}"
    );
    assert!(!out.contains(INVALID_DEVELOPER_TOKEN) && !out.contains(ACCESS_TOKEN));

    let (code, out) = f.run_job(&job, DAY2, &ENV[..1]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("developer_token") && out.contains("MSADS_DEVELOPER_TOKEN"),
        "{out}"
    );
    assert_eq!(f.lists(), 0, "nothing was created");
}

#[test]
fn customer_match_terms_not_accepted_stop_the_run_unless_the_job_accepts_them() {
    let f = plain_sandbox();
    let customer = format!("\"{CUSTOMER_WITHOUT_TERMS}\"");
    let job = f.microsoft_job(
        100,
        &[("audience", "\"terms\""), ("customer_id", &customer)],
    );
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("8003 CustomerListTermsAndConditionsNotAccepted")
            && out.contains("accept_customer_match_terms = true"),
        "{out}"
    );
    assert!(f.list("terms").is_empty());

    let accepting = f.microsoft_job(
        100,
        &[
            ("audience", "\"terms\""),
            ("customer_id", &customer),
            ("accept_customer_match_terms", "true"),
        ],
    );
    let (code, out) = f.run_job(&accepting, DAY2, ENV);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.list("terms"), f.expected(DAY2));
}

#[test]
fn an_unknown_list_id_stops_the_run_with_a_clear_message() {
    let f = plain_sandbox();
    let job = f.microsoft_job(100, &[("audience_id", "\"404\"")]);
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("8000 InvalidCustomerListId") && out.contains("audience_id"),
        "{out}"
    );
    assert_no_tokens(&out);
}

#[test]
fn the_job_loader_refuses_bad_settings_naming_the_key() {
    let f = plain_sandbox();
    let at = f.dir.path().join("job.toml").display().to_string();
    let refused = |overrides: &[(&str, &str)], expected: &[&str]| {
        let job = f.microsoft_job(100, overrides);
        let (code, out) = f.run_job(&job, DAY2, ENV);
        assert_eq!(code, 2, "{overrides:?}: {out}");
        for e in expected {
            assert!(out.contains(e), "{overrides:?}: `{e}` not in {out}");
        }
        out
    };
    let named = [("audience", "\"x\"")];
    let with = |more: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        named.iter().chain(more).copied().collect()
    };
    refused(
        &with(&[("customer_id", "\"12ab\"")]),
        &[&at, "destinations[1].customer_id", "digits"],
    );
    refused(
        &with(&[("account_id", "\"\"")]),
        &["destinations[1].account_id"],
    );
    let out = refused(
        &with(&[("developer_token", "\"plain-developer-token-value\"")]),
        &["destinations[1].developer_token", "env:NAME"],
    );
    assert!(!out.contains("plain-developer-token-value"), "{out}");
    refused(
        &with(&[("access_token", "\"\"")]),
        &["destinations[1]", "access_token"],
    );
    refused(
        &with(&[("batch", "{ max_rows = 5000 }")]),
        &["destinations[1].batch.max_rows", "1000"],
    );
    refused(
        &with(&[("membership_duration", "400")]),
        &["destinations[1].membership_duration", "390"],
    );
    refused(
        &with(&[("sync", "\"upsert\"")]),
        &["destinations[1].sync", "add, mirror, replace or remove"],
    );
    refused(
        &with(&[("base_url", "\"http://example.com\"")]),
        &["destinations[1].base_url", "https://"],
    );
    refused(
        &with(&[("customer_list", "\"x\"")]),
        &["destinations[1]", "customer_list"],
    );
    let long_name = format!("\"{}\"", "n".repeat(129));
    refused(
        &[("audience", long_name.as_str())],
        &["destinations[1].audience", "128"],
    );
    refused(
        &[("audience_id", "\"abc\"")],
        &["destinations[1].audience_id"],
    );

    let job = f.microsoft_job(100, &named);
    let google = std::fs::read_to_string(&job)
        .unwrap()
        .replace("profile = \"meta\"", "profile = \"google\"");
    std::fs::write(&job, google).unwrap();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("a microsoft destination needs `profile = \"meta\"`"),
        "{out}"
    );

    let job = f.microsoft_job(100, &named);
    let without_email = std::fs::read_to_string(&job)
        .unwrap()
        .replace("email = \"email\"\n", "");
    std::fs::write(&job, without_email).unwrap();
    let (code, out) = f.run_job(&job, DAY2, ENV);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("identifiers.email"), "{out}");

    assert_eq!(
        f.sandbox.state.store.stats().requests,
        0,
        "nothing was sent"
    );
}

/// Microsoft's REST SDK (msads) drives the emulator: the JSON shapes agree with Microsoft's own.
#[test]
fn microsofts_rest_sdk_and_the_emulator_understand_each_other() {
    let f = plain_sandbox();
    let out = Command::new(python())
        .arg(repo().join("tests/official/bingads_check.py"))
        .arg(&f.sandbox.url)
        .output()
        .expect("run tests/official/bingads_check.py");
    let printed = text(&out);
    println!("{printed}");
    assert!(
        out.status.success(),
        "msads and the sandbox disagree (exit {:?}):\n{printed}",
        out.status.code()
    );
}

/// A destination at the fixture's sandbox, driven in-process (both tokens the sandbox's),
/// adding to the customer list named `list` of the fixture's customer, which has accepted the
/// Customer Match terms.
fn in_process(
    f: &Fixture,
    list: &str,
    max_rows: usize,
    requests_per_second: f64,
) -> MicrosoftConfig {
    MicrosoftConfig {
        name: "microsoft".into(),
        customer_id: CUSTOMER.into(),
        account_id: ACCOUNT.into(),
        audience: AudienceRef::Name(list.into()),
        access_token: "env:MSADS_ACCESS_TOKEN_NOT_SET_IN_TESTS".into(),
        developer_token: "env:MSADS_DEVELOPER_TOKEN_NOT_SET_IN_TESTS".into(),
        base_url: f.sandbox.url.clone(),
        sync: SyncMode::Add,
        accept_customer_match_terms: false,
        membership_duration: -1,
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
fn deliver(f: &Fixture, config: &MicrosoftConfig, n: usize) -> Duration {
    let (elapsed, hashes) = common::deliver_synthetic(config, n);
    let AudienceRef::Name(list) = &config.audience else {
        unreachable!("the list is named")
    };
    assert_eq!(f.list(list), hashes);
    elapsed
}

/// Members a second through the connector and the emulator, nothing throttled: calls of
/// Microsoft's largest batch (1,000 items), four in flight. Printed; the floor only catches a
/// collapse.
#[test]
fn members_per_second_unthrottled() {
    let f = plain_sandbox();
    let n = 200_000;
    let config = in_process(&f, "throughput", microsoft::MAX_ITEMS, 1e6);
    let elapsed = deliver(&f, &config, n);
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "microsoft unthrottled: {n} members in {:.2} s, {rate:.0} members/s ({} requests)",
        elapsed.as_secs_f64(),
        f.sandbox.state.store.stats().requests
    );
    assert!(rate > 5_000.0, "{rate:.0} members/s");
}

/// Microsoft publishes no call rate for Campaign Management ("internal and subject to change";
/// platforms-more.md §E only says error 117 CallRateExceeded comes within a sliding minute), so
/// the connector's default, 5 calls a second, stands for the documented rate. The emulator
/// counts calls in a rolling second where Microsoft's window is a minute, and past it answers
/// 117 with `Retry-After: 1` (its window), which the connector waits out instead of Microsoft's
/// 60 seconds. With the sandbox enforcing 5 a second and the connector at its default pace, the
/// share of that rate its calls reach. The goal is 95%; the assertion allows for a loaded
/// machine's timers.
#[test]
fn share_of_the_documented_rate_reached_when_throttled() {
    let documented = microsoft::DEFAULT_REQUESTS_PER_SECOND;
    let f = Fixture::new(SandboxConfig {
        rates: [("microsoft".to_string(), documented as u64)].into(),
        ..Default::default()
    });
    // 23 batches of 100, after two finds and the create: 26 calls, five seconds at 5 a second.
    let config = in_process(&f, "paced", 100, documented);
    let elapsed = deliver(&f, &config, 2_300);
    let stats = f.sandbox.state.store.stats();
    let admitted = stats.requests - stats.rate_limited;
    let share = admitted as f64 / elapsed.as_secs_f64() / documented;
    println!(
        "microsoft throttled at {documented}/s: {admitted} requests admitted in {:.2} s, {} refused with error 117: {:.1}% of the documented rate (goal 95%)",
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
