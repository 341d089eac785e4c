//! Shared test fixtures: the Python tools (a virtual environment made on first use from
//! tests/requirements.txt), generated data, the S3 server (moto in server mode on loopback) and
//! the activator binary.

#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The benchmark folder `shared/bench` with the DuckDB peer: `ACTIVATOR_SHARED_BENCH`, or
/// `../shared/bench` beside the repository (where our machines and CI lay `shared/`). None on a
/// fresh clone without it, so only the side-by-side comparison with the peer, which is all that
/// needs it, is skipped; everything else the tests use is in the repository.
pub fn bench_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ACTIVATOR_SHARED_BENCH") {
        return Some(PathBuf::from(dir));
    }
    let dir = repo().join("../shared/bench");
    dir.join("gen_data.py").is_file().then_some(dir)
}

/// The virtual environment's python (`.venv`, from tests/requirements.txt), made on first use.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| venv(".venv", "tests/requirements.txt"))
        .clone()
}

/// The python of a second virtual environment, `.venv-deploy`, made on first use from
/// tests/requirements-deploy.txt: the deployment's linters (cfn-lint, checkov, parliament,
/// hadolint), whose pins do not mix with moto's.
pub fn deploy_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| venv(".venv-deploy", "tests/requirements-deploy.txt"))
        .clone()
}

/// The python of `.venv-pinterest`, from tests/requirements-pinterest.txt: Pinterest's SDK pins
/// urllib3 1.26, and Microsoft's REST SDK in `.venv` needs urllib3 2.
pub fn pinterest_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| venv(".venv-pinterest", "tests/requirements-pinterest.txt"))
        .clone()
}

/// A virtual environment with `requirements` installed, made or brought up to date under a file
/// lock (tests run at once): `dir` in the clone, or, where `ACTIVATOR_VENVS` names a folder (as
/// `.ci/run` does), `{dir}-{digest of the requirements}` there, so later clones on the same
/// machine reuse it as they reuse the build (making the three took about 80 s of a CI run).
fn venv(dir: &str, requirements: &str) -> PathBuf {
    let requirements = repo().join(requirements);
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let (venv, lock) = match std::env::var_os("ACTIVATOR_VENVS") {
        Some(shared) => {
            use sha2::Digest;
            // The interpreter too: a venv does not survive an upgrade of the python it was made
            // from.
            let python = Command::new("python3").arg("--version").output();
            let python = python.expect("python3 --version").stdout;
            let digest = sha2::Sha256::digest([wanted.as_bytes(), &python].concat());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            let name = format!("{}-{hex}", dir.trim_start_matches('.'));
            let shared = PathBuf::from(shared);
            std::fs::create_dir_all(&shared).unwrap();
            (shared.join(&name), shared.join(format!("{name}.lock")))
        }
        None => {
            std::fs::create_dir_all(repo().join("target")).unwrap();
            (repo().join(dir), repo().join(format!("target/{dir}.lock")))
        }
    };
    let py = venv.join("bin/python");
    let stamp = venv.join(".requirements-installed");
    let lock = File::create(lock).unwrap();
    lock.lock().unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv")
            .success();
        assert!(ok, "could not create {}", venv.display());
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&requirements)
            .status()
            .expect("pip install")
            .success();
        assert!(ok, "pip install -r {} failed", requirements.display());
        std::fs::write(&stamp, wanted).unwrap();
    }
    lock.unlock().unwrap();
    py
}

/// The environment that turns the repository's jobs' URLs into s3:// URLs, for `activator stack`
/// (tests/stack.rs, tests/stack_moto.rs).
pub const S3_URLS: [(&str, &str); 8] = [
    ("DEMO_DATA", "s3://lake/crm"),
    ("DEMO_OUT", "s3://exports/demo"),
    ("DEMO_STATE", "s3://lake/activator/state"),
    ("B1_DATA", "s3://lake/b1"),
    ("B1_OUT", "s3://exports/b1"),
    ("STATE_URL", "s3://lake/activator/bench-state"),
    ("PLATFORM_URL", "https://graph.facebook.com"),
    ("AUDIENCE", "nightly spenders"),
];

/// The repository's job files.
pub const REPOSITORY_JOBS: [&str; 4] = [
    "jobs/demo.toml",
    "jobs/bench_b1.toml",
    "jobs/bench_b1_meta.toml",
    "jobs/bench_b1_google.toml",
];

/// Generated CRM data, cached under target/ by size. The generator is the project's copy,
/// tests/data/gen_data.py, so that a fresh clone needs nothing beside it; it writes the same data
/// as the benchmark's (`shared/bench/gen_data.py`), so the tests see the data the benchmarks do.
pub fn generated_data(customers: usize, days: usize) -> PathBuf {
    let dir = repo().join(format!("target/testdata/gen-{customers}-{days}"));
    // A fresh clone has no target/ (the build goes to CARGO_TARGET_DIR) until a test makes it.
    std::fs::create_dir_all(repo().join("target")).unwrap();
    let lock = File::create(repo().join("target/.gen.lock")).unwrap();
    lock.lock().unwrap();
    if !dir.join(".done").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(python())
            .arg(repo().join("tests/data/gen_data.py"))
            .arg(&dir)
            .args([
                "--customers",
                &customers.to_string(),
                "--days",
                &days.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gen_data.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join(".done"), "").unwrap();
    }
    lock.unlock().unwrap();
    dir
}

/// The activator binary, run from the repository with a clean environment for AWS. Jobs that
/// name no `state` get a fresh state folder per invocation (tests of state set theirs in the
/// job, or `ACTIVATOR_STATE` again).
pub fn activator() -> Command {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let state = repo().join("target/test-state").join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    // A folder of an earlier test process that had the same id (ids are reused) holds runs
    // that would say this date is done.
    let _ = std::fs::remove_dir_all(&state);
    let mut c = Command::new(env!("CARGO_BIN_EXE_activator"));
    c.current_dir(repo())
        .env("ACTIVATOR_STATE", state)
        .env("ACTIVATOR_LOG", "info")
        // Plain text, which the tests search; the JSON lines have a test of their own.
        .env("ACTIVATOR_LOG_FORMAT", "text")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run activator");
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server (S3, Secrets Manager) on loopback; stopped when dropped, and by its watchdog
/// if the test process dies.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        // Port 0: the server binds a port the kernel picks and says which. A port picked here
        // and passed on could be taken by another test's server before moto bound it; then
        // moto exited and its clients reached the other server, or nothing.
        let script = r#"
import os, time
from moto.server import ThreadedMotoServer
parent = os.getppid()
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
while os.getppid() == parent:
    time.sleep(0.5)
server.stop()
"#;
        let mut child = Command::new(python())
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let stdout = child.stdout.take().expect("moto's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("moto did not start within 60 s");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("moto did not start (it said {line:?})"));
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// Environment for an S3 client of this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    pub fn store(&self, bucket: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
        let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
        for (k, v) in self.env() {
            if let Ok(key) = k.to_ascii_lowercase().parse() {
                b = b.with_config(key, v);
            }
        }
        std::sync::Arc::new(b.with_allow_http(true).build().unwrap())
    }

    pub fn create_bucket(&self, bucket: &str) {
        let status = Command::new(python())
            .args([
                "-c",
                "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket=sys.argv[2])",
                &self.endpoint,
                bucket,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "create bucket {bucket}");
    }

    /// Multipart uploads begun in `bucket` and neither completed nor aborted.
    pub fn unfinished_uploads(&self, bucket: &str) -> usize {
        let out = Command::new(python())
            .args([
                "-c",
                "import sys, boto3; c = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1'); print(len(c.list_multipart_uploads(Bucket=sys.argv[2]).get('Uploads', [])))",
                &self.endpoint,
                bucket,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "list uploads in {bucket}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a local folder into a bucket under `prefix`.
pub async fn upload_dir(store: &dyn object_store::ObjectStore, local: &Path, prefix: &str) {
    use object_store::ObjectStoreExt;
    for entry in walk(local) {
        let rel = entry
            .strip_prefix(local)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        let path = object_store::path::Path::from(format!("{prefix}/{rel}"));
        store.put(&path, bytes.into()).await.unwrap();
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file below `dir` (relative names), for "nothing half-done" checks.
pub fn files_below(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return vec![];
    }
    walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Reads every row of a Parquet file's column as strings (None for null).
/// Every batch of a Parquet file.
pub fn parquet_batches(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|batch| batch.unwrap())
        .collect()
}

pub fn parquet_column(path: &Path, column: &str) -> Vec<Option<String>> {
    use arrow::array::{Array, AsArray};
    let mut out = vec![];
    for batch in parquet_batches(path) {
        let col = batch
            .column_by_name(column)
            .unwrap_or_else(|| panic!("no column {column}"));
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
        let s = col.as_string::<i32>();
        for i in 0..s.len() {
            out.push(s.is_valid(i).then(|| s.value(i).to_string()));
        }
    }
    out
}

/// A sandbox serving on loopback from a runtime of its own, and a scratch folder, for a test.
pub struct SandboxFixture {
    _rt: tokio::runtime::Runtime,
    pub sandbox: activator::sandbox::Sandbox,
    pub dir: tempfile::TempDir,
}

impl SandboxFixture {
    pub fn new(config: activator::sandbox::SandboxConfig) -> SandboxFixture {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sandbox = rt
            .block_on(activator::sandbox::Sandbox::start(
                ([127, 0, 0, 1], 0).into(),
                config,
            ))
            .unwrap();
        SandboxFixture {
            _rt: rt,
            sandbox,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The e-mail hashes of the export a fixture job wrote to `out/` for 2026-11-25.
    pub fn exported_emails(&self) -> std::collections::BTreeSet<String> {
        parquet_column(
            &self.dir.path().join("out/job-2026-11-25.parquet"),
            "email_sha256",
        )
        .into_iter()
        .flatten()
        .collect()
    }

    pub fn with_faults(faults: activator::sandbox::faults::FaultConfig) -> SandboxFixture {
        SandboxFixture::new(activator::sandbox::SandboxConfig {
            faults,
            ..Default::default()
        })
    }

    /// Whether every fault aimed at a particular request (`FaultConfig::once`) has been met.
    pub fn targeted_faults_spent(&self) -> bool {
        self.sandbox
            .state
            .faults
            .config
            .lock()
            .unwrap()
            .once
            .is_empty()
    }
}

/// Faults that let the next `POST` to a path ending in `path_ends_with` (an audience creation)
/// be applied and then drop its answer.
pub fn create_answer_lost(path_ends_with: &str) -> Vec<activator::sandbox::faults::TargetedFault> {
    vec![activator::sandbox::faults::TargetedFault {
        fault: activator::sandbox::faults::FaultName::Drop,
        method: Some("POST".into()),
        path_ends_with: path_ends_with.into(),
    }]
}

/// Jobs over generated CRM data for the platform tests (TikTok, Snap, REST).
impl SandboxFixture {
    /// A job over generated CRM data (5,000 customers, three days): consenting customers worth at
    /// least `min_value`, with e-mail, phone, mobile ad id, first name, zip and country, exported
    /// to `out/` and sent to the destination `destination` describes (the body of a
    /// `[[destinations]]` table). Each run has a state of its own unless it is given
    /// `self.state_env()`, with which runs follow each other as nightly runs do.
    pub fn crm_job(&self, min_value: u32, destination: &str) -> PathBuf {
        let data = generated_data(5_000, 3);
        let sql = self.dir.path().join("segment.sql");
        std::fs::write(
            &sql,
            "SELECT customer_id, email, phone, mobile_ad_id, first_name, zip, country\n\
             FROM customers\n\
             WHERE dt = '{{ run_date }}' AND marketing_consent AND lifetime_value >= {{ vars.min_value }}\n",
        )
        .unwrap();
        let job = format!(
            r#"segment = "{sql}"
profile = "meta"
[vars]
min_value = {min_value}
[[tables]]
name = "customers"
url = "{data}/customers"
partitions = ["dt"]
[identifiers]
email = "email"
phone = "phone"
mobile_ad_id = "mobile_ad_id"
first_name = "first_name"
zip = "zip"
country = "country"
[[destinations]]
type = "export"
url = "{out}"
[[destinations]]
{destination}
"#,
            sql = sql.display(),
            data = data.display(),
            out = self.dir.path().join("out").display(),
        );
        let path = self.dir.path().join("job.toml");
        std::fs::write(&path, job).unwrap();
        path
    }

    /// A job whose segment is a fixed list of (e-mail, phone) members per date, in which members
    /// share identifiers, sent to the destination `destination` describes. On 2026-11-24:
    /// stays@ and leaves@ share the phone …0101, moves@ has …0102, and shared@ comes with
    /// …0104 and with …0105. On 2026-11-25: stays@ with …0101, moves@ with a new phone …0103,
    /// shared@ with …0104 only (three of five members gone: the removal guard is opened).
    pub fn shared_identifiers_job(&self, destination: &str) -> PathBuf {
        let data = generated_data(5_000, 3);
        let sql = self.dir.path().join("shared.sql");
        std::fs::write(
            &sql,
            "SELECT email, phone FROM (VALUES\n\
             ('2026-11-24', 'stays@example.com', '+14155550101'),\n\
             ('2026-11-24', 'leaves@example.com', '+14155550101'),\n\
             ('2026-11-24', 'moves@example.com', '+14155550102'),\n\
             ('2026-11-24', 'shared@example.com', '+14155550104'),\n\
             ('2026-11-24', 'shared@example.com', '+14155550105'),\n\
             ('2026-11-25', 'stays@example.com', '+14155550101'),\n\
             ('2026-11-25', 'moves@example.com', '+14155550103'),\n\
             ('2026-11-25', 'shared@example.com', '+14155550104')\n\
             ) AS t(day, email, phone) WHERE day = '{{ run_date }}'\n",
        )
        .unwrap();
        let job = format!(
            r#"segment = "{sql}"
profile = "meta"
[[tables]]
name = "customers"
url = "{data}/customers"
partitions = ["dt"]
[identifiers]
email = "email"
phone = "phone"
[guards]
max_removal_share = 1.0
[[destinations]]
{destination}
"#,
            sql = sql.display(),
            data = data.display(),
        );
        let path = self.dir.path().join("shared.toml");
        std::fs::write(&path, job).unwrap();
        path
    }

    /// `ACTIVATOR_STATE` for runs that share the fixture's state folder (mirror runs).
    pub fn state_env(&self) -> String {
        self.dir.path().join("state").display().to_string()
    }

    /// Runs a job for `date` with debug logs and `env`: its exit code and all it printed.
    pub fn run_job(&self, job: &Path, date: &str, env: &[(&str, &str)]) -> (i32, String) {
        let out = activator()
            .arg("run")
            .arg(job)
            .args(["--date", date, "--quiet"])
            .env("ACTIVATOR_LOG", "debug")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    /// The non-null values of a column of the export a `crm_job` wrote for `date`.
    pub fn exported(&self, date: &str, column: &str) -> std::collections::BTreeSet<String> {
        parquet_column(
            &self.dir.path().join(format!("out/job-{date}.parquet")),
            column,
        )
        .into_iter()
        .flatten()
        .collect()
    }

    /// Asserts that no raw e-mail of the generated data (as written, or trimmed and lowercased)
    /// appears in `printed`.
    pub fn assert_no_raw_emails(&self, printed: &str) {
        let customers = generated_data(5_000, 3).join("customers");
        let mut checked = 0;
        for file in walk(&customers)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        {
            for e in parquet_column(&file, "email").into_iter().flatten() {
                let e = e.trim();
                if e.contains('@') {
                    checked += 1;
                    assert!(!printed.contains(e), "a raw e-mail is in the logs");
                    assert!(
                        !printed.contains(&e.to_lowercase()),
                        "a normalized e-mail is in the logs"
                    );
                }
            }
        }
        assert!(checked > 1000, "{checked} e-mails checked");
    }
}

/// `n` members with an e-mail hash each (SHA-256 hex of `member{i}@example.com`), in batches of
/// 8,192 as a run reads them: their schema, the stream, and the hashes.
pub fn synthetic_members(
    n: usize,
) -> (
    arrow::datatypes::SchemaRef,
    futures::stream::BoxStream<'static, activator::Result<arrow::array::RecordBatch>>,
    std::collections::BTreeSet<String>,
) {
    use activator::identity::{Encoding, hash::hash_to_string};
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use futures::StreamExt;
    let hashes: Vec<String> = (0..n)
        .map(|i| hash_to_string(&format!("member{i}@example.com"), Encoding::Hex))
        .collect();
    let batches: Vec<activator::Result<RecordBatch>> = hashes
        .chunks(8192)
        .map(|chunk| {
            let column: ArrayRef = std::sync::Arc::new(StringArray::from(chunk.to_vec()));
            Ok(RecordBatch::try_from_iter([("email_sha256", column)]).unwrap())
        })
        .collect();
    let schema = batches[0].as_ref().unwrap().schema();
    (
        schema,
        futures::stream::iter(batches).boxed(),
        hashes.into_iter().collect(),
    )
}

/// Delivers `n` synthetic members (`synthetic_members`) to `destination` in-process as an add,
/// checking every row was counted: the time it took, and the hashes sent.
pub fn deliver_synthetic(
    destination: &dyn activator::destinations::Destination,
    n: usize,
) -> (Duration, std::collections::BTreeSet<String>) {
    use activator::destinations::{Delivery, Op, RunInfo};
    let (schema, members, hashes) = synthetic_members(n);
    let run = RunInfo {
        job: "throughput".into(),
        run_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        run_id: "20261125T000000Z-throughput".into(),
        consent_columns: vec![],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let report = rt
        .block_on(destination.deliver(&run, schema, members, &Delivery::fresh(Op::Add)))
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.rows, n as u64);
    (elapsed, hashes)
}

/// A test file's own sandbox fixture: the common one under a type of the file's own, so the
/// file can give it the methods its platform needs. The files are modules of one test binary,
/// where the inherent methods of one type share one namespace.
macro_rules! local_fixture {
    () => {
        pub struct Fixture(crate::common::SandboxFixture);

        impl std::ops::Deref for Fixture {
            type Target = crate::common::SandboxFixture;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        #[allow(dead_code)]
        impl Fixture {
            pub fn new(config: activator::sandbox::SandboxConfig) -> Fixture {
                Fixture(crate::common::SandboxFixture::new(config))
            }

            pub fn with_faults(faults: activator::sandbox::faults::FaultConfig) -> Fixture {
                Fixture(crate::common::SandboxFixture::with_faults(faults))
            }
        }
    };
}
