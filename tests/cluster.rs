//! Segments on a Ballista cluster: a scheduler and two executors, each a process of the
//! activator binary on loopback, give exactly the local engine's members, from local files and
//! through S3 (moto); the cluster's failures stop a run clearly, with nothing delivered.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A scheduler and executors on loopback, stopped when dropped. Their logs go to files in `logs`.
struct Cluster {
    port: u16,
    processes: Vec<Child>,
    executor_ports: Vec<u16>,
    logs: tempfile::TempDir,
}

impl Cluster {
    fn start(executors: usize, env: &[(&str, String)]) -> Cluster {
        Cluster::start_with(executors, env, &[])
    }

    fn start_with(executors: usize, env: &[(&str, String)], executor_args: &[&str]) -> Cluster {
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cluster = Cluster {
            port,
            processes: vec![],
            executor_ports: vec![],
            logs,
        };
        cluster.spawn("scheduler", &["--port", &port.to_string()], env);
        wait_for_port(port);
        for i in 0..executors {
            let flight = two_free_ports();
            let work = cluster.logs.path().join(format!("work-{i}"));
            let mut args = vec![
                "--scheduler".to_string(),
                format!("127.0.0.1:{port}"),
                "--port".into(),
                flight.to_string(),
                "--work-dir".into(),
                work.display().to_string(),
            ];
            args.extend(executor_args.iter().map(|a| a.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster.spawn(&format!("executor-{i}"), &args, env);
            cluster.executor_ports.push(flight);
        }
        for &p in &cluster.executor_ports {
            wait_for_port(p);
            wait_for_port(p + 1);
        }
        // Executors register with the scheduler as they start; give the last one a moment.
        std::thread::sleep(Duration::from_millis(500));
        cluster
    }

    fn spawn(&mut self, role: &str, args: &[&str], env: &[(&str, String)]) {
        let part = if role == "scheduler" {
            "scheduler"
        } else {
            "executor"
        };
        let log = std::fs::File::create(self.logs.path().join(format!("{role}.log"))).unwrap();
        let child = activator()
            .args(["cluster", part])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a cluster process");
        self.processes.push(child);
    }

    fn engine(&self) -> String {
        format!("ballista://127.0.0.1:{}", self.port)
    }

    /// Every log line the cluster's processes wrote.
    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.logs.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            }
        }
        all
    }

    /// Kills the first executor (SIGKILL: no goodbye to the scheduler).
    fn kill_an_executor(&mut self) {
        let _ = self.processes[1].kill();
        let _ = self.processes[1].wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port whose next port is free too (an executor's Flight and gRPC ports).
fn two_free_ports() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Every row of a Parquet file, its columns joined, sorted: two exports compare as multisets.
fn parquet_rows(path: &Path) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    let mut rows = vec![];
    for batch in parquet_batches(path) {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let fields: Vec<String> = columns
                .iter()
                .map(|c| {
                    let s = c.as_string::<i32>();
                    if s.is_valid(row) {
                        s.value(row).to_string()
                    } else {
                        "∅".into()
                    }
                })
                .collect();
            rows.push(fields.join("|"));
        }
    }
    rows.sort();
    rows
}

/// B1 over `data` on the local engine exports, to `dir/local`, exactly what a run on a cluster
/// exported to `dir/cluster`.
fn assert_b1_is_the_local_engines(data: &Path, dir: &Path) {
    let (code, printed) = run(
        "jobs/bench_b1.toml",
        "local",
        &b1_env(data, &dir.join("local")),
        dir,
        "local",
    );
    assert_eq!(code, 0, "{printed}");
    assert_eq!(
        parquet_rows(&dir.join("cluster/bench_b1-2026-11-25.parquet")),
        parquet_rows(&dir.join("local/bench_b1-2026-11-25.parquet"))
    );
}

/// The report's counts, without its timings and run id.
fn counts(report: &Path) -> serde_json::Value {
    let mut r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let mut kept = serde_json::Map::new();
    for key in [
        "rows_read",
        "members",
        "duplicates",
        "without_strong_identifier",
        "pre_hashed_values",
        "invalid",
    ] {
        if let Some(v) = r.get_mut(key) {
            kept.insert(key.into(), v.take());
        }
    }
    assert!(kept.contains_key("rows_read"), "{r}");
    serde_json::Value::Object(kept)
}

/// Runs `job` for 2026-11-25 on `engine` with `env`, writing its report to `dir/<name>.json`.
fn run(job: &str, engine: &str, env: &[(&str, String)], dir: &Path, name: &str) -> (i32, String) {
    let out = activator()
        .args([
            "run",
            job,
            "--date",
            "2026-11-25",
            "--quiet",
            "--engine",
            engine,
        ])
        .arg("--report-json")
        .arg(dir.join(format!("{name}.json")))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), text(&out))
}

fn b1_env(data: &Path, out: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("B1_DATA", data.display().to_string()),
        ("B1_OUT", out.display().to_string()),
    ]
}

#[test]
fn b1_and_the_demo_give_the_local_engines_members_on_a_cluster() {
    let cluster = Cluster::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // B1: six identifiers of generated CRM data, with every kind of messy value.
    let data = generated_data(5_000, 2);
    for (engine, name) in [("local", "b1-local"), (&cluster.engine()[..], "b1-cluster")] {
        let (code, printed) = run(
            "jobs/bench_b1.toml",
            engine,
            &b1_env(&data, &d.join(name)),
            d,
            name,
        );
        assert_eq!(code, 0, "{engine}: {printed}");
    }
    let local = parquet_rows(&d.join("b1-local/bench_b1-2026-11-25.parquet"));
    let on_cluster = parquet_rows(&d.join("b1-cluster/bench_b1-2026-11-25.parquet"));
    assert!(local.len() > 1_000, "{} members", local.len());
    assert_eq!(on_cluster, local);
    assert_eq!(
        counts(&d.join("b1-cluster.json")),
        counts(&d.join("b1-local.json"))
    );

    // The demo: a join and an aggregate over seven days of orders, exported and sent to Meta
    // (the in-process sandbox).
    for (engine, name) in [
        ("local", "demo-local"),
        (&cluster.engine()[..], "demo-cluster"),
    ] {
        let env = [
            ("DEMO_OUT", d.join(name).display().to_string()),
            (
                "DEMO_STATE",
                d.join(format!("{name}-state")).display().to_string(),
            ),
        ];
        let (code, printed) = run("jobs/demo.toml", engine, &env, d, name);
        assert_eq!(code, 0, "{engine}: {printed}");
    }
    let local = parquet_rows(&d.join("demo-local/demo-2026-11-25.parquet"));
    assert!(local.len() > 100, "{} members", local.len());
    assert_eq!(
        parquet_rows(&d.join("demo-cluster/demo-2026-11-25.parquet")),
        local
    );
    assert_eq!(
        counts(&d.join("demo-cluster.json")),
        counts(&d.join("demo-local.json"))
    );
}

/// An AWS Batch multi-node job, on loopback: the main node runs `cluster main` (a scheduler and
/// the run), the other nodes `cluster executor` with nothing but the address AWS Batch gives
/// them; the run gives the local engine's members.
#[test]
fn a_multi_node_job_runs_the_scheduler_and_the_run_on_its_main_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = generated_data(5_000, 2);
    let port = free_port();
    let main = activator()
        .args([
            "cluster",
            "main",
            "jobs/bench_b1.toml",
            "--date",
            "2026-11-25",
            "--quiet",
        ])
        .args(["--port", &port.to_string()])
        .envs(b1_env(&data, &d.join("cluster")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut executors = vec![];
    for _ in 0..2 {
        executors.push(
            activator()
                .args([
                    "cluster",
                    "executor",
                    "--port",
                    &two_free_ports().to_string(),
                ])
                .env(
                    "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
                    format!("127.0.0.1:{port}"),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let out = main.wait_with_output().unwrap();
    for mut e in executors {
        let _ = e.kill();
        let _ = e.wait();
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_b1_is_the_local_engines(&data, d);
}

#[test]
fn a_cluster_reads_the_tables_from_s3_with_the_standard_aws_settings() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let data = generated_data(5_000, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(upload_dir(moto.store("lake").as_ref(), &data, "crm"));
    // The scheduler and executors get only the environment: endpoint, keys, region.
    let cluster = Cluster::start(2, &moto.env());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut env = moto.env();
    env.extend(b1_env(Path::new("s3://lake/crm"), &d.join("cluster")));
    let (code, printed) = run("jobs/bench_b1.toml", &cluster.engine(), &env, d, "cluster");
    assert_eq!(code, 0, "{printed}");
    assert_b1_is_the_local_engines(&data, d);
}

#[test]
fn an_executor_without_activators_functions_stops_the_run_with_exit_2_and_nothing_written() {
    let cluster = Cluster::start_with(1, &[], &["--stock-functions"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = generated_data(5_000, 2);
    let (code, printed) = run(
        "jobs/bench_b1.toml",
        &cluster.engine(),
        &b1_env(&data, &out),
        dir.path(),
        "r",
    );
    assert_eq!(code, 2, "{printed}");
    assert!(printed.contains("lacks activator's functions"), "{printed}");
    assert!(printed.contains("activator cluster executor"), "{printed}");
    assert!(files_below(&out).is_empty(), "{:?}", files_below(&out));
}

#[test]
fn an_unreachable_scheduler_stops_the_run_with_exit_3_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = generated_data(5_000, 2);
    let engine = format!("ballista://127.0.0.1:{}", free_port());
    let (code, printed) = run(
        "jobs/bench_b1.toml",
        &engine,
        &b1_env(&data, &out),
        dir.path(),
        "r",
    );
    assert_eq!(code, 3, "{printed}");
    assert!(printed.contains("scheduler"), "{printed}");
    assert!(files_below(&out).is_empty(), "{:?}", files_below(&out));
}

/// An executor killed (SIGKILL) while the query runs, once it has written shuffle output: the
/// scheduler runs the lost work again on the other one, and the run ends with exactly the local
/// engine's members, each once.
#[test]
fn an_executor_killed_mid_query_loses_nothing_and_delivers_nothing_twice() {
    let mut cluster = Cluster::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Every customer 200 times over, with a distinct e-mail each: a query of a few seconds that
    // shuffles (DISTINCT), so there is work in flight to lose.
    std::fs::write(
        d.join("slow.sql"),
        "SELECT DISTINCT concat(CAST(r.value AS VARCHAR), c.email) AS email, c.first_name \
         FROM customers c CROSS JOIN (SELECT unnest(range(200)) AS value) r \
         WHERE c.dt = '{{ run_date }}'",
    )
    .unwrap();
    let data = generated_data(20_000, 2);
    let job = |out: &str| {
        let path = d.join(format!("{out}.toml"));
        std::fs::write(
            &path,
            format!(
                "segment = \"slow.sql\"\nprofile = \"meta\"\n\
                 [[tables]]\nname = \"customers\"\nurl = \"{data}/customers\"\npartitions = [\"dt\"]\n\
                 [identifiers]\nemail = \"email\"\nfirst_name = \"first_name\"\n\
                 [[destinations]]\ntype = \"export\"\nurl = \"{out}\"\n",
                data = data.display(),
                out = d.join(out).display()
            ),
        )
        .unwrap();
        path
    };
    let mut child = activator()
        .arg("run")
        .arg(job("cluster"))
        .args([
            "--date",
            "2026-11-25",
            "--quiet",
            "--engine",
            &cluster.engine(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let shuffles = cluster.logs.path().join("work-0");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !walk(&shuffles)
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "arrow"))
    {
        assert!(
            Instant::now() < deadline,
            "executor 0 never wrote shuffle output"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the kill"
    );
    cluster.kill_an_executor();
    // The run must end: a scheduler that lost track of the job once left it waiting for good
    // (under Ballista's adaptive planner), and CI with it.
    let out = output_within(
        child,
        Duration::from_secs(300),
        &cluster.logs.path().join("scheduler.log"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    run_ok(
        activator()
            .arg("run")
            .arg(job("local"))
            .args(["--date", "2026-11-25", "--quiet"]),
    );
    let on_cluster = parquet_digest(&d.join("cluster/cluster-2026-11-25.parquet"));
    assert_eq!(
        on_cluster,
        parquet_digest(&d.join("local/local-2026-11-25.parquet"))
    );
    assert!(on_cluster.0 > 1_000_000, "{} members", on_cluster.0);
}

/// The output of `child` once it ends; if it has not ended within `limit`, it is killed and the
/// test fails with the end of `log`.
fn output_within(child: Child, limit: Duration, log: &Path) -> std::process::Output {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pid = child.id();
    let ended = std::sync::Arc::new(AtomicBool::new(false));
    let watchdog = {
        let ended = ended.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !ended.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };
    let out = child.wait_with_output().unwrap();
    ended.store(true, Ordering::SeqCst);
    if watchdog.join().unwrap() {
        let lines = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = lines.lines().rev().take(12).collect();
        panic!(
            "the run did not end within {} s; {} ends:\n{}",
            limit.as_secs(),
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    out
}

/// A Parquet file's rows, and a digest of them that does not depend on their order.
fn parquet_digest(path: &Path) -> (usize, u64) {
    use arrow::array::{Array, AsArray};
    use std::hash::{Hash, Hasher};
    let (mut rows, mut digest) = (0usize, 0u64);
    for batch in parquet_batches(path) {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| c.as_string::<i32>().clone())
            .collect();
        for row in 0..batch.num_rows() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for c in &columns {
                c.is_valid(row).then(|| c.value(row)).hash(&mut h);
            }
            digest = digest.wrapping_add(h.finish());
            rows += 1;
        }
    }
    (rows, digest)
}

/// A segment that fails on a value on the executors: exit 2, and the value is in no log line of
/// the run, the scheduler or the executors.
#[test]
fn a_segment_failing_on_a_value_on_the_cluster_shows_the_value_nowhere() {
    let cluster = Cluster::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.sql"),
        "SELECT email FROM customers WHERE dt = '{{ run_date }}' AND CAST(first_name AS INT) > 0",
    )
    .unwrap();
    let job = d.join("bad.toml");
    std::fs::write(
        &job,
        format!(
            r#"
segment = "bad.sql"
profile = "meta"
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
            data = repo().join("testdata/demo").display(),
            out = d.join("out").display()
        ),
    )
    .unwrap();
    let out = activator()
        .arg("run")
        .arg(&job)
        .args(["--date", "2026-11-25", "--engine", &cluster.engine()])
        .env("ACTIVATOR_LOG", "debug")
        .output()
        .unwrap();
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(2), "{printed}");
    assert!(printed.contains("not shown"), "{printed}");
    let names = first_names();
    for (what, text) in [("the run", &printed), ("the cluster", &cluster.logs())] {
        for name in &names {
            assert!(
                !text.contains(&format!("'{name}'")) && !text.contains(&format!("\"{name}\"")),
                "{what} shows the value {name}"
            );
        }
    }
    assert!(files_below(&d.join("out")).is_empty());
}

/// The demo data's first names.
fn first_names() -> Vec<String> {
    let dir = repo().join("testdata/demo/customers");
    let mut names = std::collections::BTreeSet::new();
    for file in walk(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        names.extend(parquet_column(&file, "first_name").into_iter().flatten());
    }
    names.into_iter().filter(|n| n.len() > 2).collect()
}
