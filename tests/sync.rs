//! Sync state against the sandbox: mirror runs send only the differences and leave the audience
//! equal to the segment; killed runs resume without sending a batch twice (state on disk and on
//! the S3 server); backfills resume; guards and plans send nothing.

use crate::common;

use activator::sandbox::faults::FaultConfig;
use common::SandboxFixture as Fixture;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "EAAB-sync-test-token-77e1";
const DAY1: &str = "2026-11-24";
const DAY2: &str = "2026-11-25";

/// A member as (EMAIL, PHONE) hashes, the pair the tests compare.
type Member = (Option<String>, Option<String>);

struct Sync {
    f: Fixture,
    data: PathBuf,
    state: String,
    env: Vec<(&'static str, String)>,
}

impl Sync {
    fn new(faults: FaultConfig) -> Sync {
        let f = Fixture::with_faults(faults);
        let state = f.dir.path().join("state").display().to_string();
        Sync {
            f,
            data: generated_data(5_000, 3),
            state,
            env: vec![],
        }
    }

    /// The B1 segment to an export and a Meta audience `b1`, in `mode`.
    fn job(&self, mode: &str, min_value: u32, extra: &str) -> PathBuf {
        let job = format!(
            r#"name = "sync"
segment = "{repo}/sql/b1.sql"
profile = "meta"
state = "{state}"
[vars]
min_value = {min_value}
[[tables]]
name = "customers"
url = "{data}/customers"
partitions = ["dt"]
[identifiers]
email = "email"
phone = "phone"
first_name = "first_name"
last_name = "last_name"
zip = "zip"
country = "country"
[[destinations]]
type = "export"
url = "{out}"
[[destinations]]
type = "meta"
ad_account_id = "1234567890"
access_token = "env:META_ACCESS_TOKEN"
base_url = "{url}"
audience = "b1"
sync = "{mode}"
concurrency = 1
batch = {{ max_rows = 100 }}
{extra}
"#,
            repo = repo().display(),
            state = self.state,
            data = self.data.display(),
            out = self.f.dir.path().join("out").display(),
            url = self.f.sandbox.url,
        );
        let path = self.f.dir.path().join("job.toml");
        std::fs::write(&path, job).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = activator();
        c.args(args)
            .env("META_ACCESS_TOKEN", TOKEN)
            .env("ACTIVATOR_LOG", "debug");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, job: &Path, date: &str, flags: &[&str]) -> (i32, String) {
        let job = job.display().to_string();
        let mut args = vec!["run", job.as_str(), "--date", date, "--quiet"];
        args.extend(flags);
        let out = self.command(&args).output().unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    /// Starts a run and kills it (SIGKILL) once the sandbox has accepted `batches` more batches.
    fn run_killed_after(&self, job: &Path, date: &str, batches: u64) {
        let start = self.f.sandbox.state.store.stats().batches_accepted;
        let job = job.display().to_string();
        let mut child = self
            .command(&["run", job.as_str(), "--date", date, "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.f.sandbox.state.store.stats().batches_accepted >= start + batches {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the run ended ({status}) before it could be killed");
            }
            assert!(Instant::now() < deadline, "the run did not get that far");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn audience(&self) -> BTreeSet<Member> {
        self.audience_named("b1")
    }

    fn audience_named(&self, name: &str) -> BTreeSet<Member> {
        let store = &self.f.sandbox.state.store;
        let a = store
            .list()
            .into_iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("audience {name} exists"));
        let field = |m: &serde_json::Value, k: &str| {
            m[k].as_str().filter(|s| !s.is_empty()).map(str::to_string)
        };
        let members = store.members(&a.id).unwrap();
        let set: BTreeSet<Member> = members
            .iter()
            .map(|m| (field(m, "EMAIL"), field(m, "PHONE")))
            .collect();
        assert_eq!(set.len(), members.len(), "every member once");
        set
    }

    /// The members of a date's segment, from the run's export.
    fn segment(&self, date: &str) -> BTreeSet<Member> {
        let file = self.f.dir.path().join(format!("out/sync-{date}.parquet"));
        let emails = parquet_column(&file, "email_sha256");
        let phones = parquet_column(&file, "phone_sha256");
        emails.into_iter().zip(phones).collect()
    }

    /// The run folders of a date that hold files (an object store has no empty folders).
    fn run_folders(&self, date: &str) -> BTreeSet<String> {
        let dir = Path::new(&self.state).join("sync/runs").join(date);
        walk(&dir)
            .iter()
            .filter_map(|f| {
                let mut parts = f.strip_prefix(&dir).ok()?.iter();
                let folder = parts.next()?;
                parts.next()?; // a file in a run folder, not the date's done.json
                Some(folder.to_string_lossy().into_owned())
            })
            .collect()
    }

    fn report(&self, date: &str) -> serde_json::Value {
        let dir = Path::new(&self.state).join(format!("sync/reports/{date}"));
        let files = files_below(&dir);
        assert_eq!(files.len(), 1, "one report for {date}: {files:?}");
        serde_json::from_slice(&std::fs::read(dir.join(&files[0])).unwrap()).unwrap()
    }
}

fn meta_report(report: &serde_json::Value) -> &serde_json::Value {
    report["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "meta")
        .expect("meta destination in the report")
}

#[test]
fn mirror_sends_only_the_differences_and_the_audience_equals_the_segment() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("mirror", 100, "");
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");
    let day1 = s.segment(DAY1);
    assert!(day1.len() > 1000, "{}", day1.len());
    assert_eq!(s.audience(), day1);

    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    let day2 = s.segment(DAY2);
    assert_eq!(
        s.audience(),
        day2,
        "the audience is the second date's segment"
    );
    let joined = day2.difference(&day1).count() as u64;
    let left = day1.difference(&day2).count() as u64;
    assert!(
        joined > 0 && left > 0,
        "the data drifts: {joined} joined, {left} left"
    );
    let meta = meta_report(&s.report(DAY2)).clone();
    assert_eq!(meta["added"], joined, "{meta}");
    assert_eq!(meta["removed"], left, "{meta}");
    assert_eq!(
        meta["rows"],
        joined + left,
        "only the differences were sent: {meta}"
    );
    assert!(out.contains("added") && out.contains("removed"), "{out}");
    assert!(!out.contains(TOKEN));

    // The date is done: running it again sends nothing.
    let before = s.f.sandbox.state.store.stats().upload_requests;
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("had finished"), "{out}");
    assert_eq!(s.f.sandbox.state.store.stats().upload_requests, before);
}

fn killed_runs_resume(s: &Sync) {
    // Slow requests, so a run can be killed mid-upload.
    let job = s.job("mirror", 100, "");
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");
    // Day 2's diff is small; widen it with a lower threshold: more members join.
    let job = s.job("mirror", 20, "");
    s.f.sandbox.state.store.with(|st| st.batches_accepted = 0);
    for at in [1, 3, 4] {
        s.run_killed_after(&job, DAY2, at);
    }
    let before = s.f.sandbox.state.store.stats();
    let accepted_before = before.batches_accepted;
    assert!(accepted_before >= 8);
    let json = s.f.dir.path().join("report.json");
    let json_arg = json.display().to_string();
    let (code, out) = s.run(&job, DAY2, &["--report-json", json_arg.as_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resumed run"), "{out}");
    let stats = s.f.sandbox.state.store.stats();
    assert_eq!(stats.batches_accepted_twice, 0, "{stats:?}");
    assert_eq!(s.audience(), s.segment(DAY2));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["resumed"], true);
    let meta = meta_report(&report);
    // Every batch accepted before the kills is either in the checkpoint (not sent again) or,
    // when a kill landed between the platform's answer and the checkpoint write, sent again in
    // the same session under the same batch_seq, which Meta (and the sandbox) acknowledge
    // without applying it again: at most one such batch per kill.
    assert!(stats.batches_repeated <= 3, "{stats:?}");
    let repeated_now = stats.batches_repeated - before.batches_repeated;
    // (A last batch sent again after its session closed is answered "session already
    // finished", which the connector takes as done: neither repeated nor accepted.)
    let finished_again = stats.rejected - before.rejected;
    assert_eq!(
        meta["resumed_batches"].as_u64().unwrap() + repeated_now + finished_again,
        accepted_before,
        "{meta} {stats:?}"
    );
    let batches = meta["batches"].as_u64().unwrap();
    assert_eq!(
        stats.batches_accepted, batches,
        "each batch accepted once: {stats:?} {meta}"
    );
    assert_eq!(
        meta["rows"],
        meta["added"].as_u64().unwrap() + meta["removed"].as_u64().unwrap()
    );
}

#[test]
fn a_killed_run_resumes_where_it_stopped() {
    let s = Sync::new(FaultConfig {
        latency_ms: 40,
        ..FaultConfig::default()
    });
    killed_runs_resume(&s);
}

#[test]
fn a_killed_run_resumes_with_its_state_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("state");
    let mut s = Sync::new(FaultConfig {
        latency_ms: 40,
        ..FaultConfig::default()
    });
    s.state = "s3://state/activator".into();
    s.env = moto.env();
    killed_runs_resume(&s);
    // The state is in the bucket, not on disk.
    let store = moto.store("state");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let names: Vec<String> = rt.block_on(async {
        use futures::TryStreamExt;
        store
            .list(Some(&"activator/sync".into()))
            .map_ok(|o| o.location.to_string())
            .try_collect()
            .await
            .unwrap()
    });
    assert!(
        names.iter().any(|n| n.contains("destinations/meta/syncs/")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains("reports/2026-11-25/")),
        "{names:?}"
    );
}

#[test]
fn a_backfill_killed_on_its_second_date_resumes() {
    // Slow enough that the second date is still uploading when the kill lands, even with the
    // other tests' runs on the same cores.
    let s = Sync::new(FaultConfig {
        latency_ms: 150,
        ..FaultConfig::default()
    });
    let job = s.job("mirror", 20, "");
    let job_arg = job.display().to_string();
    let args = [
        "backfill",
        job_arg.as_str(),
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-25",
        "--quiet",
    ];
    // Kill it once the second date is uploading: the first date's report is there, and batches
    // flow again.
    let mut child = s
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = Path::new(&s.state).join("sync/reports/2026-11-23");
    let deadline = Instant::now() + Duration::from_secs(120);
    while files_below(&first).is_empty() {
        assert!(Instant::now() < deadline, "the first date did not finish");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backfill ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let accepted = s.f.sandbox.state.store.stats().batches_accepted;
    while s.f.sandbox.state.store.stats().batches_accepted < accepted + 1 {
        assert!(Instant::now() < deadline, "the second date did not upload");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(files_below(&Path::new(&s.state).join("sync/reports/2026-11-24")).is_empty());

    let out = s.command(&args).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for date in ["2026-11-23", "2026-11-24", "2026-11-25"] {
        s.report(date); // exactly one each
    }
    assert!(s.report("2026-11-24")["resumed"] == true);
    assert_eq!(s.f.sandbox.state.store.stats().batches_accepted_twice, 0);
    assert_eq!(s.audience(), s.segment("2026-11-25"));
}

impl Sync {
    /// `job`, with its `add` destinations sent while the segment is read.
    fn job_sending_while_reading(&self, mode: &str, min_value: u32) -> PathBuf {
        let path = self.job(mode, min_value, "");
        let job = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("send_adds_while_reading = true\n{job}")).unwrap();
        path
    }
}

#[test]
fn adds_sent_while_reading_arrive_once_and_commit_the_sync() {
    // Errors, throttling and dropped connections on the way.
    let s = Sync::new(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.05,
        ..FaultConfig::default()
    });
    let job = s.job_sending_while_reading("add", 100);
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");
    let day1 = s.segment(DAY1);
    assert!(day1.len() > 1000, "{}", day1.len());
    assert_eq!(s.audience(), day1);
    let report = s.report(DAY1);
    assert_eq!(
        report["destinations"].as_array().unwrap().len(),
        2,
        "the export and meta, once each: {report}"
    );
    let meta = meta_report(&report).clone();
    assert_eq!(meta["added"], day1.len(), "{meta}");
    assert_eq!(meta["rows"], day1.len(), "{meta}");
    let stats = s.f.sandbox.state.store.stats();
    assert!(
        stats.injected_errors + stats.injected_drops > 0,
        "{stats:?}"
    );
    assert!(stats.max_rows_per_request <= 100, "{stats:?}");
    assert!(!out.contains(TOKEN));

    // The sync was committed: a mirror run the next day sends only the differences.
    let mirror = s.job("mirror", 100, "");
    let (code, out) = s.run(&mirror, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    let day2 = s.segment(DAY2);
    assert_eq!(s.audience(), day2);
    let meta = meta_report(&s.report(DAY2)).clone();
    assert_eq!(
        meta["rows"],
        day2.symmetric_difference(&day1).count(),
        "{meta}"
    );
}

#[test]
fn a_destination_failing_while_reading_fails_the_run_with_its_error_and_nothing_commits() {
    let s = Sync::new(FaultConfig::default());
    let path = s.job_sending_while_reading("add", 100);
    // An audience that does not exist: Meta refuses the first upload, for good.
    let job = std::fs::read_to_string(&path)
        .unwrap()
        .replace("audience = \"b1\"", "audience_id = \"999\"");
    std::fs::write(&path, job).unwrap();
    let (code, out) = s.run(&path, DAY1, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("error code 100"),
        "the platform's error: {out}"
    );
    assert!(
        !s.f.dir
            .path()
            .join(format!("out/sync-{DAY1}.parquet"))
            .exists(),
        "the export did not commit a part of the segment"
    );
    let state = Path::new(&s.state).join("sync");
    assert!(!state.join(format!("runs/{DAY1}/pending.json")).exists());
    assert!(!state.join("destinations").exists(), "no sync committed");
}

#[test]
fn adds_sent_while_reading_touch_nothing_when_the_segment_is_empty() {
    let s = Sync::new(FaultConfig::default());
    let empty = s.job_sending_while_reading("add", 1_000_000);
    let (code, out) = s.run(&empty, DAY1, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("no members"), "{out}");
    assert!(
        s.f.sandbox.state.store.list().is_empty(),
        "no audience was found or created"
    );
    assert_eq!(s.f.sandbox.state.store.stats().requests, 0);
}

#[test]
fn guards_stop_an_empty_segment_and_a_mass_removal() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("mirror", 100, "");
    assert_eq!(s.run(&job, DAY1, &[]).0, 0);
    let before = s.f.sandbox.state.store.stats().upload_requests;
    let members = s.audience();

    // Nobody is worth a million: an empty segment.
    let empty = s.job("mirror", 1_000_000, "");
    let (code, out) = s.run(&empty, DAY2, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("no members") && out.contains("--allow-empty"),
        "{out}"
    );
    // Few are worth 2,000: most would be removed.
    let shrunk = s.job("mirror", 2_000, "");
    let (code, out) = s.run(&shrunk, DAY2, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("would remove") && out.contains("--allow-mass-removal"),
        "{out}"
    );
    assert_eq!(
        s.f.sandbox.state.store.stats().upload_requests,
        before,
        "nothing sent"
    );
    assert_eq!(s.audience(), members);
    assert!(
        !s.f.dir
            .path()
            .join(format!("out/sync-{DAY2}.parquet"))
            .exists(),
        "the export did not commit either"
    );

    // Allowed, it goes through.
    let (code, out) = s.run(&shrunk, DAY2, &["--allow-mass-removal"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(s.audience(), s.segment(DAY2));
}

#[test]
fn plan_sends_nothing_and_writes_nothing() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("mirror", 100, "");
    assert_eq!(s.run(&job, DAY1, &[]).0, 0);
    let requests = s.f.sandbox.state.store.stats().requests;
    let state_files = files_below(Path::new(&s.state));
    let out_files = files_below(&s.f.dir.path().join("out"));

    let job_arg = job.display().to_string();
    let out = s
        .command(&["plan", job_arg.as_str(), "--date", DAY2])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("plan sync for 2026-11-25"), "{printed}");
    assert!(printed.contains("would send"), "{printed}");
    assert_eq!(s.f.sandbox.state.store.stats().requests, requests);
    assert_eq!(files_below(Path::new(&s.state)), state_files);
    assert_eq!(files_below(&s.f.dir.path().join("out")), out_files);

    // And what it planned is what the run then does.
    let planned_adds = printed
        .lines()
        .find(|l| l.contains("destination meta"))
        .unwrap()
        .to_string();
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    let meta = meta_report(&s.report(DAY2)).clone();
    assert!(
        planned_adds.contains(&format!(
            "{} added, {} removed",
            meta["added"], meta["removed"]
        )),
        "{planned_adds} vs {meta}"
    );
}

#[test]
fn emf_lines_carry_the_run_figures() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("add", 100, "");
    let job_arg = job.display().to_string();
    let out = s
        .command(&["run", job_arg.as_str(), "--date", DAY1, "--quiet"])
        .env("ACTIVATOR_METRICS", "emf")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}"); // the run, the export, meta
    assert_eq!(
        lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Activator"
    );
    assert!(lines[0]["Members"].as_u64().unwrap() > 1000);
    let meta = lines.iter().find(|l| l["Destination"] == "meta").unwrap();
    assert_eq!(meta["Added"], lines[0]["Members"]);
}

#[test]
fn an_export_backfill_runs_dates_in_parallel_and_a_platform_backfill_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = generated_data(5_000, 3);
    let job = dir.path().join("export.toml");
    std::fs::write(
        &job,
        format!(
            r#"segment = "{repo}/sql/b1.sql"
profile = "meta"
state = "{state}"
[vars]
min_value = 100
[[tables]]
name = "customers"
url = "{data}/customers"
partitions = ["dt"]
[identifiers]
email = "email"
[[destinations]]
type = "export"
url = "{out}"
"#,
            repo = repo().display(),
            state = dir.path().join("state").display(),
            data = data.display(),
            out = dir.path().join("out").display(),
        ),
    )
    .unwrap();
    let job_arg = job.display().to_string();
    let args = [
        "backfill",
        job_arg.as_str(),
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-25",
        "--parallel",
        "2",
        "--quiet",
    ];
    let out = run_ok(activator().args(args));
    assert!(text(&out).contains("3 dates"), "{}", text(&out));
    for date in ["2026-11-23", "2026-11-24", "2026-11-25"] {
        assert!(
            dir.path()
                .join(format!("out/export-{date}.parquet"))
                .is_file()
        );
        let reports = dir.path().join(format!("state/export/reports/{date}"));
        assert_eq!(files_below(&reports).len(), 1, "{date}");
    }
    // Done dates are skipped on a second pass.
    let out = run_ok(activator().args(args));
    assert!(text(&out).contains("had finished"), "{}", text(&out));

    // A platform audience is synced one date after the other.
    let s = Sync::new(FaultConfig::default());
    let platform = s.job("mirror", 100, "").display().to_string();
    let out = s
        .command(&[
            "backfill",
            platform.as_str(),
            "--from",
            "2026-11-23",
            "--to",
            "2026-11-24",
            "--parallel",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--parallel is for jobs that only export"));
}

/// `prune` deletes the files of old finished runs but keeps what the destination's current sync
/// refers to, so the next mirror run still diffs against it; reports stay.
#[test]
fn prune_deletes_old_runs_but_not_the_current_sync() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("mirror", 100, "");
    for date in ["2026-11-23", DAY1] {
        let (code, out) = s.run(&job, date, &[]);
        assert_eq!(code, 0, "{out}");
    }
    let runs = Path::new(&s.state).join("sync/runs");
    let run_folders = |date: &str| s.run_folders(date);
    assert_eq!(run_folders("2026-11-23").len(), 1);
    assert_eq!(run_folders(DAY1).len(), 1);
    let job_arg = job.display().to_string();

    // Days beyond a century are refused (dates are reckoned with them), not a panic.
    let out = s
        .command(&["prune", &job_arg, "--keep-days", "4000000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("0..=36500"), "{}", text(&out));

    // Within the kept days: nothing goes.
    let out = s
        .command(&["prune", &job_arg, "--keep-days", "36500"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("deleted 0 files"), "{}", text(&out));

    let out = s
        .command(&["prune", &job_arg, "--keep-days", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(run_folders("2026-11-23").is_empty(), "{}", text(&out));
    assert_eq!(run_folders(DAY1).len(), 1, "the current sync's run is kept");
    assert!(runs.join("2026-11-23/done.json").exists());
    assert!(Path::new(&s.state).join("sync/reports/2026-11-23").exists());

    // The next mirror run diffs against the kept sync and sends only the differences.
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(s.audience(), s.segment(DAY2));
    let meta = meta_report(&s.report(DAY2)).clone();
    let (day1, day2) = (s.segment(DAY1), s.segment(DAY2));
    assert_eq!(
        meta["added"],
        day2.difference(&day1).count() as u64,
        "{meta}"
    );
    assert_eq!(
        meta["removed"],
        day1.difference(&day2).count() as u64,
        "{meta}"
    );
}

/// A run deletes, once it has succeeded, the files of runs finished more than the job's
/// `state_keep_days` before its date, as `prune` would; runs within them stay.
#[test]
fn a_run_prunes_runs_older_than_the_kept_days() {
    let s = Sync::new(FaultConfig::default());
    let kept = s.job("mirror", 100, "");
    let text = std::fs::read_to_string(&kept).unwrap();
    // A top-level key, so before the first table.
    std::fs::write(&kept, format!("state_keep_days = 1\n{text}")).unwrap();
    for date in ["2026-11-23", DAY1] {
        let (code, out) = s.run(&kept, date, &[]);
        assert_eq!(code, 0, "{out}");
    }
    assert_eq!(s.run_folders("2026-11-23").len(), 1, "one day before: kept");
    let (code, out) = s.run(&kept, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        s.run_folders("2026-11-23").is_empty(),
        "two days before: gone"
    );
    assert_eq!(s.run_folders(DAY1).len(), 1, "one day before: kept");
    assert!(Path::new(&s.state).join("sync/reports/2026-11-23").exists());
    assert_eq!(s.audience(), s.segment(DAY2));
}

impl Sync {
    /// `job`, with Meta batches of `max_rows` rows rather than 100.
    fn job_with_batch(&self, mode: &str, min_value: u32, max_rows: u64) -> PathBuf {
        let path = self.job(mode, min_value, "");
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = text.replace(
            "batch = { max_rows = 100 }",
            &format!("batch = {{ max_rows = {max_rows} }}"),
        );
        assert_ne!(changed, text, "the job's batch line was not found");
        std::fs::write(&path, changed).unwrap();
        path
    }

    /// The date's pending (unfinished) run.
    fn pending_file(&self, date: &str) -> PathBuf {
        Path::new(&self.state).join(format!("sync/runs/{date}/pending.json"))
    }

    /// The syncs committed to the Meta destination, oldest first.
    fn syncs(&self) -> Vec<String> {
        files_below(&Path::new(&self.state).join("sync/destinations/meta/syncs"))
    }
}

impl Sync {
    /// Runs the mirror job of `min_value` for `date`, killed after 3 acknowledged batches of
    /// 100, then again with batches of `resume_rows`: the rerun resumes the pending run. Its
    /// report and output.
    fn kill_then_resume_with_batch(
        &self,
        min_value: u32,
        date: &str,
        resume_rows: u64,
    ) -> (serde_json::Value, String) {
        let job = self.job("mirror", min_value, "");
        self.run_killed_after(&job, date, 3);
        assert!(
            self.pending_file(date).exists(),
            "the killed run left its pending run"
        );
        let job = self.job_with_batch("mirror", min_value, resume_rows);
        let (code, out) = self.run(&job, date, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("resumed run"), "{out}");
        let report = self.report(date);
        assert_eq!(report["resumed"], true, "{report}");
        (report, out)
    }
}

/// Batches of at most `max_rows` that a destination's report counts for its adds and removes.
fn batches_cut(meta: &serde_json::Value, max_rows: u64) -> u64 {
    let added = meta["added"].as_u64().unwrap();
    let removed = meta["removed"].as_u64().unwrap();
    added.div_ceil(max_rows) + removed.div_ceil(max_rows)
}

/// A pending run keeps the batches it started with: a resumed run skips the batches its
/// checkpoint acknowledged by index, so a batch size changed in the job before the resume must
/// not change the cut. Smaller batches (the first date) would only send some members again;
/// larger ones (the second date) would skip members never sent.
#[test]
fn a_batch_size_changed_before_a_resume_keeps_the_cut_and_loses_no_members() {
    let s = Sync::new(FaultConfig {
        latency_ms: 40,
        ..FaultConfig::default()
    });

    // A first sync (adds only, in batches of 100), killed mid-upload, resumed with batches of 37.
    let (report, out) = s.kill_then_resume_with_batch(100, DAY1, 37);
    let day1 = s.segment(DAY1);
    assert!(day1.len() > 1000, "{}", day1.len());
    assert_eq!(
        s.audience(),
        day1,
        "the audience is the first date's segment\n{out}"
    );
    let meta = meta_report(&report).clone();
    assert_eq!(meta["added"], day1.len() as u64, "{meta}");
    assert_eq!(
        meta["batches"],
        batches_cut(&meta, 100),
        "the resumed run cut the batches of 100 it started with, not batches of 37: {meta}\n{out}"
    );

    // The second date (a wider diff), killed mid-upload in batches of 100, resumed with 250.
    let (report, out) = s.kill_then_resume_with_batch(20, DAY2, 250);
    let day2 = s.segment(DAY2);
    assert_eq!(
        s.audience(),
        day2,
        "the audience is the second date's segment: no member skipped\n{out}"
    );
    let meta = meta_report(&report).clone();
    assert_eq!(
        meta["added"],
        day2.difference(&day1).count() as u64,
        "{meta}"
    );
    assert_eq!(
        meta["removed"],
        day1.difference(&day2).count() as u64,
        "{meta}"
    );
    assert_eq!(
        meta["batches"],
        batches_cut(&meta, 100),
        "the resumed run cut the batches of 100 it started with, not batches of 250: {meta}\n{out}"
    );
    let stats = s.f.sandbox.state.store.stats();
    assert!(
        stats.max_rows_per_request <= 100,
        "no request carried more than the 100 rows the runs started with: {stats:?}"
    );
    assert_eq!(stats.batches_accepted_twice, 0, "{stats:?}");
    assert!(!s.pending_file(DAY1).exists() && !s.pending_file(DAY2).exists());
}

/// A date's unfinished run was diffed against a sync that is no longer the last one (a forced
/// run of another date committed since): rerunning it starts the date afresh against the newer
/// sync instead of failing to commit, again and again.
#[test]
fn an_unfinished_date_starts_afresh_once_a_newer_sync_is_committed() {
    let s = Sync::new(FaultConfig {
        latency_ms: 40,
        ..FaultConfig::default()
    });
    let day1_job = s.job("mirror", 100, "");
    let (code, out) = s.run(&day1_job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(s.syncs().len(), 1, "{:?}", s.syncs());

    // The second date (a wider diff), killed mid-upload: its pending run diffed against sync 1.
    let day2_job = s.job("mirror", 20, "");
    s.run_killed_after(&day2_job, DAY2, 3);
    assert!(
        s.pending_file(DAY2).exists(),
        "the killed run left its pending run"
    );
    assert_eq!(s.syncs().len(), 1, "the killed run committed nothing");

    // The first date again, forced: it commits sync 2.
    let day1_job = s.job("mirror", 100, "");
    let (code, out) = s.run(&day1_job, DAY1, &["--force"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        s.syncs().len(),
        2,
        "the forced run committed a newer sync: {:?}\n{out}",
        s.syncs()
    );

    // The second date, plain: it cannot finish what it diffed against sync 1, so it starts
    // afresh against sync 2.
    let day2_job = s.job("mirror", 20, "");
    let (code, out) = s.run(&day2_job, DAY2, &[]);
    assert_eq!(
        code, 0,
        "the unfinished date runs again rather than failing for good:\n{out}"
    );
    assert!(
        out.contains("afresh"),
        "the run says it started afresh because the last sync changed:\n{out}"
    );
    let report = s.report(DAY2);
    assert_ne!(
        report["resumed"], true,
        "a run started afresh is not a resumed one: {report}"
    );
    assert_eq!(
        s.audience(),
        s.segment(DAY2),
        "the audience is the second date's segment\n{out}"
    );
    assert_eq!(
        s.syncs().len(),
        3,
        "the second date committed sync 3: {:?}",
        s.syncs()
    );
    assert!(!s.pending_file(DAY2).exists(), "no pending run is left");
}

/// A mirror run of a date older than the destination's last sync would put the audience back to
/// that older segment: a guard stops it (exit 4, nothing sent) unless `--allow-rollback`.
#[test]
fn an_older_date_does_not_roll_the_audience_back_without_allow_rollback() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("mirror", 100, "");
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    let day2 = s.segment(DAY2);
    assert!(day2.len() > 1000, "{}", day2.len());
    assert_eq!(s.audience(), day2);
    let before = s.f.sandbox.state.store.stats().upload_requests;

    // The first run of the older date: stopped.
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 4, "a guard stops the rollback:\n{out}");
    assert!(out.contains("--allow-rollback"), "{out}");
    assert_eq!(
        s.f.sandbox.state.store.stats().upload_requests,
        before,
        "nothing sent\n{out}"
    );
    assert_eq!(s.audience(), day2, "the audience is untouched");
    assert!(
        !s.f.dir
            .path()
            .join(format!("out/sync-{DAY1}.parquet"))
            .exists(),
        "the export did not commit either"
    );
    assert!(
        files_below(&Path::new(&s.state).join(format!("sync/reports/{DAY1}"))).is_empty(),
        "the stopped run did not finish the date"
    );
    assert_eq!(s.syncs().len(), 1, "no sync committed: {:?}", s.syncs());

    // Allowed, it goes through: the audience is the older date's segment.
    let (code, out) = s.run(&job, DAY1, &["--allow-rollback"]);
    assert_eq!(code, 0, "{out}");
    let day1 = s.segment(DAY1);
    assert_ne!(day1, day2, "the data drifts between the dates");
    assert_eq!(
        s.audience(),
        day1,
        "the audience is the first date's segment\n{out}"
    );
}

/// A job's name names its folder in the state store (and its export files): a name that is a
/// path, or that a URL would decode into one, is refused when the job loads, before anything is
/// written.
#[test]
fn job_names_that_are_paths_are_refused_at_load() {
    let mut s = Sync::new(FaultConfig::default());
    let root = s.f.dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    s.state = root.join("state").display().to_string();
    let entries = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect::<BTreeSet<String>>()
            })
            .unwrap_or_default()
    };
    for name in ["../escaped", "a/b", "x%2F", "h#1"] {
        let path = s.job("mirror", 100, "");
        let written = std::fs::read_to_string(&path).unwrap();
        let changed = written.replace("name = \"sync\"\n", &format!("name = \"{name}\"\n"));
        assert_ne!(changed, written, "the job's name line was not found");
        std::fs::write(&path, changed).unwrap();
        let files_before = files_below(s.f.dir.path());

        let job_arg = path.display().to_string();
        let out = s
            .command(&["run", job_arg.as_str(), "--date", DAY1, "--quiet"])
            .output()
            .unwrap();
        let printed = text(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "name = {name:?}: refused as a configuration error\n{printed}"
        );
        assert!(
            [": name:", ": name ", "`name`", "name = "]
                .iter()
                .any(|k| printed.contains(*k)),
            "name = {name:?}: the message names the key `name`:\n{printed}"
        );
        let outside: Vec<String> = entries(&root)
            .into_iter()
            .filter(|e| e.as_str() != "state")
            .collect();
        assert!(
            outside.is_empty(),
            "name = {name:?}: files beside the state folder: {outside:?}\n{printed}"
        );
        assert_eq!(
            files_below(s.f.dir.path()),
            files_before,
            "name = {name:?}: nothing written\n{printed}"
        );
    }
    assert_eq!(s.f.sandbox.state.store.stats().requests, 0, "nothing sent");
}

#[test]
fn sigterm_during_an_upload_exits_3_in_time_and_a_rerun_completes_the_audience() {
    // Slow requests, so SIGTERM lands mid-upload with requests in flight.
    let s = Sync::new(FaultConfig {
        latency_ms: 150,
        ..FaultConfig::default()
    });
    let job = s.job("mirror", 100, "");
    let start = s.f.sandbox.state.store.stats().batches_accepted;
    let job_arg = job.display().to_string();
    // Output to a file, not a pipe nobody reads until the end: a debug log larger than the
    // pipe's buffer would block the run before SIGTERM.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = s
        .command(&["run", job_arg.as_str(), "--date", DAY1, "--quiet"])
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.f.sandbox.state.store.stats().batches_accepted < start + 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before SIGTERM"
        );
        assert!(Instant::now() < deadline, "the run did not get that far");
        std::thread::sleep(Duration::from_millis(2));
    }
    let signalled = Instant::now();
    // SAFETY: kill(2) on the child's pid, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let took = signalled.elapsed();
    let printed = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(status.code(), Some(3), "{printed}");
    assert!(
        took < Duration::from_secs(25),
        "stopped after {took:?}: {printed}"
    );
    assert!(
        printed.contains("SIGTERM") && printed.contains("rerun"),
        "{printed}"
    );
    assert!(
        s.audience().len() < s.segment(DAY1).len(),
        "the upload was cut short"
    );

    // The retry resumes from the checkpoints and leaves the audience exactly the segment.
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resumed run"), "{out}");
    assert_eq!(s.audience(), s.segment(DAY1));
    let stats = s.f.sandbox.state.store.stats();
    assert_eq!(stats.batches_accepted_twice, 0, "{stats:?}");
}

#[test]
fn log_lines_off_a_terminal_are_json_objects_without_colour() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("mirror", 100, "");
    let job_arg = job.display().to_string();
    let out = s
        .command(&["run", job_arg.as_str(), "--date", DAY1, "--quiet"])
        .env_remove("ACTIVATOR_LOG_FORMAT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
    let mut with_run = 0;
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        if v["span"]["job"] == "sync"
            && v["span"]["date"] == DAY1
            && v["span"]["run_id"].is_string()
        {
            with_run += 1;
        }
    }
    assert!(
        with_run > 0,
        "no line names the job, date and run id: {stderr}"
    );
}

#[test]
fn a_fresh_date_waits_for_another_dates_unfinished_mirror_run() {
    let s = Sync::new(FaultConfig {
        latency_ms: 40,
        ..FaultConfig::default()
    });
    let job = s.job("mirror", 100, "");
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");
    // DAY2's mirror run is cut short after a few batches: part of its changes were sent.
    let job = s.job("mirror", 20, "");
    s.run_killed_after(&job, DAY2, 3);
    // Another date may not diff against a sync that does not hold them.
    let before = s.f.sandbox.state.store.stats().upload_requests;
    let (code, out) = s.run(&job, "2026-11-23", &[]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains(DAY2) && out.contains("Rerun"), "{out}");
    assert_eq!(
        s.f.sandbox.state.store.stats().upload_requests,
        before,
        "nothing sent"
    );
    // The unfinished date resumes and finishes; the audience is its segment.
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(s.audience(), s.segment(DAY2));
}

/// A finished run writes `done.json`, then deletes its pending record. A run stopped between
/// the two (killed, or the delete refused) leaves both: its retry finds the date finished and
/// clears the record, and no later date is held back by it.
#[test]
fn a_pending_record_left_by_a_finished_run_is_cleared_and_holds_back_no_later_date() {
    let s = Sync::new(FaultConfig::default());
    let job = s.job("mirror", 100, "");
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");
    let job = s.job("mirror", 20, "");
    s.run_killed_after(&job, DAY2, 3);
    let runs = Path::new(&s.state).join("sync/runs").join(DAY2);
    let pending = std::fs::read(runs.join("pending.json")).expect("the killed run's record");
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!runs.join("pending.json").exists());
    // As if the resumed run had stopped after `done.json`, before deleting its record.
    std::fs::write(runs.join("pending.json"), &pending).unwrap();
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("finished already"), "{out}");
    assert!(!runs.join("pending.json").exists(), "the record is cleared");
    // An earlier date, rolled back to on purpose: no unfinished run stands in its way.
    let (code, out) = s.run(&job, "2026-11-23", &["--allow-rollback"]);
    assert_eq!(code, 0, "another date runs: {out}");
}

#[test]
fn a_mirror_on_s3_downloads_its_last_members_while_reading_and_sends_nothing_without_them() {
    let moto = Moto::start();
    moto.create_bucket("state");
    let mut s = Sync::new(FaultConfig::default());
    s.state = "s3://state/activator".into();
    s.env = moto.env();
    // A second audience, synced by the same runs: both diff against one download of their files.
    let second = format!(
        r#"[[destinations]]
name = "meta_b2"
type = "meta"
ad_account_id = "1234567890"
access_token = "env:META_ACCESS_TOKEN"
base_url = "{}"
audience = "b2"
sync = "mirror"
"#,
        s.f.sandbox.url
    );
    let job = s.job("mirror", 100, &second);
    let (code, out) = s.run(&job, DAY1, &[]);
    assert_eq!(code, 0, "{out}");

    // The last sync's members file goes missing from the bucket.
    use object_store::ObjectStoreExt;
    let store = moto.store("state");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let members = rt.block_on(async {
        use futures::TryStreamExt;
        let prefix = format!("activator/sync/runs/{DAY1}");
        let all: Vec<object_store::path::Path> = store
            .list(Some(&prefix.as_str().into()))
            .map_ok(|o| o.location)
            .try_collect()
            .await
            .unwrap();
        all.into_iter()
            .find(|p| p.as_ref().ends_with("/members.arrow"))
            .expect("the first date's members file")
    });
    let bytes = rt.block_on(async {
        let bytes = store.get(&members).await.unwrap().bytes().await.unwrap();
        store.delete(&members).await.unwrap();
        bytes
    });
    let before = s.f.sandbox.state.store.stats().upload_requests;
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(members.as_ref()) && out.contains("restore the file"),
        "the error names the missing file and what to do: {out}"
    );
    assert_eq!(
        s.f.sandbox.state.store.stats().upload_requests,
        before,
        "nothing sent"
    );

    // Put back, the date runs: both audiences are its segment.
    rt.block_on(async { store.put(&members, bytes.into()).await.unwrap() });
    let (code, out) = s.run(&job, DAY2, &[]);
    assert_eq!(code, 0, "{out}");
    let day2 = s.segment(DAY2);
    assert_eq!(s.audience(), day2);
    assert_eq!(s.audience_named("b2"), day2);
    assert!(
        s.f.sandbox.state.store.stats().upload_requests > before,
        "the differences were sent"
    );
}

#[test]
fn state_files_larger_than_a_part_go_to_s3_and_back_whole_and_leave_no_unfinished_upload() {
    use activator::state::transfer;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as StorePath;
    let moto = Moto::start();
    moto.create_bucket("state");
    let store = moto.store("state");
    let dir = tempfile::tempdir().unwrap();
    // Two whole parts and a short last one: S3 takes parts of 5 MiB or more but the last.
    let bytes: Vec<u8> = (0..2 * transfer::PART_BYTES + 4099)
        .map(|i: usize| (i / 4093 + i) as u8)
        .collect();
    let (sent, back) = (dir.path().join("members.arrow"), dir.path().join("back"));
    std::fs::write(&sent, &bytes).unwrap();
    let path = StorePath::from("job/runs/2026-11-25/run/members.arrow");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        transfer::upload(store.clone(), path.clone(), &sent)
            .await
            .unwrap();
        let got = store.get(&path).await.unwrap();
        transfer::download(got, &back).await.unwrap();
    });
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "the file came back whole"
    );
    assert_eq!(moto.unfinished_uploads("state"), 0);
}
