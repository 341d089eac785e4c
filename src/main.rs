//! The `activator` command line: parses arguments and calls the library's commands.

use activator::identity::{self, Kind, Profile};
use activator::job::Job;
use activator::{Error, run, validate};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "activator",
    version,
    about = "Push SQL-defined segments, hashed, to ad platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job for a date: read the segment, normalize and hash, deliver.
    Run {
        /// The job file, e.g. jobs/demo.toml.
        job: PathBuf,
        /// The run date (YYYY-MM-DD); default: today in UTC.
        #[arg(long, value_parser = parse_date, conflicts_with = "array_start")]
        date: Option<NaiveDate>,
        /// A backfill as an AWS Batch array job: the run date is this date plus the child's
        /// AWS_BATCH_JOB_ARRAY_INDEX days. For jobs that only export (dates independent).
        #[arg(long, value_parser = parse_date)]
        array_start: Option<NaiveDate>,
        /// Also write the run report as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Show what a run would do: members, invalid values, adds and removes against the last
    /// sync, batches per destination. Sends nothing, writes nothing.
    Plan {
        job: PathBuf,
        /// The run date (YYYY-MM-DD); default: today in UTC.
        #[arg(long, value_parser = parse_date)]
        date: Option<NaiveDate>,
        /// Also write the plan as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
    },
    /// Delete the files of old runs from a job's sync state: members, diffs and checkpoints of
    /// finished dates before the last --keep-days, except what the destinations' current syncs
    /// refer to. Reports stay.
    Prune {
        job: PathBuf,
        /// Dates within this many days before today (UTC) are kept whole (at most 36500, a
        /// century).
        #[arg(long, default_value_t = 7,
              value_parser = clap::value_parser!(u32).range(0..=i64::from(activator::job::MAX_KEEP_DAYS)))]
        keep_days: u32,
    },
    /// Run a job for each date from --from to --to, in order; each date is a run with its own
    /// report and state, resumable like a run.
    Backfill {
        job: PathBuf,
        #[arg(long, value_parser = parse_date)]
        from: NaiveDate,
        #[arg(long, value_parser = parse_date)]
        to: NaiveDate,
        /// Dates at once (jobs that only export).
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Parse jobs and plan their SQL against the tables, without running them.
    Validate {
        /// Job files; default: every jobs/*.toml.
        jobs: Vec<PathBuf>,
        /// The date to render the SQL for; default: today in UTC.
        #[arg(long, value_parser = parse_date)]
        date: Option<NaiveDate>,
    },
    /// Serve the platform emulators (Meta, Google Data Manager, TikTok, Snap) on loopback until
    /// interrupted.
    Sandbox(SandboxArgs),
    /// Show how values normalize and hash, one JSON object per line.
    Hash {
        /// meta, google or uid2.
        #[arg(long, value_parser = parse_profile)]
        profile: Profile,
        /// email, phone, first_name, last_name, city, state, zip, country, date_of_birth,
        /// gender, mobile_ad_id or external_id.
        #[arg(long, value_parser = parse_kind)]
        kind: Kind,
        /// The row's country: the default region for phone numbers, states and zips.
        #[arg(long)]
        country: Option<String>,
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Run a part of a Ballista cluster that runs segments (`engine = "ballista://HOST:PORT"`),
    /// with activator's functions on every part.
    #[cfg(feature = "cluster")]
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print the CloudFormation template (YAML) that deploys these jobs on AWS Batch: roles
    /// granted exactly what each job reads and writes, job definitions, schedules, alarms.
    /// Reads only the job files and their SQL.
    Stack {
        /// Job files, e.g. jobs/demo.toml; their URLs must be s3:// (set the variables of
        /// `${VAR:-default}` URLs to s3:// URLs).
        #[arg(required = true)]
        jobs: Vec<PathBuf>,
    },
}

#[cfg(feature = "cluster")]
#[derive(Subcommand)]
enum ClusterCommand {
    /// The scheduler: plans queries into stages and hands their tasks to the executors.
    Scheduler {
        /// The port runs and executors connect to.
        #[arg(long, default_value_t = activator::segment::SCHEDULER_PORT)]
        port: u16,
        /// The address to listen on (0.0.0.0: every interface).
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
    },
    /// The main node of an AWS Batch multi-node job: a scheduler on every interface, and a run
    /// of the job on it (the other nodes run `cluster executor`).
    Main {
        /// The job file, e.g. /app/jobs/big.toml.
        job: PathBuf,
        /// The run date (YYYY-MM-DD); default: today in UTC.
        #[arg(long, value_parser = parse_date)]
        date: Option<NaiveDate>,
        /// The scheduler's port.
        #[arg(long, default_value_t = activator::segment::SCHEDULER_PORT)]
        port: u16,
        /// Also write the run report as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// An executor: runs tasks and serves their results; its gRPC port is --port + 1, so
    /// executors on one machine need ports two apart.
    Executor {
        /// The scheduler, HOST:PORT; on an AWS Batch multi-node job, the main node's address
        /// (AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS) and port 50050 when not given.
        #[arg(long, value_parser = scheduler_address,
              env = "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS")]
        scheduler: (String, u16),
        /// The Flight port (results and shuffles); the gRPC port is the next one.
        #[arg(long, default_value_t = activator::cluster::EXECUTOR_PORT)]
        port: u16,
        /// The address to listen on (0.0.0.0: every interface; the scheduler is then told the
        /// address of the interface that reaches it).
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Where shuffle files go (default: a folder under TMPDIR named after the port).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Only DataFusion's functions, as a stock Ballista executor (for tests).
        #[arg(long, hide = true)]
        stock_functions: bool,
    },
}

#[cfg(feature = "cluster")]
fn scheduler_address(s: &str) -> Result<(String, u16), String> {
    match activator::segment::Engine::parse(&format!("ballista://{s}")) {
        Ok(activator::segment::Engine::Cluster { host, port }) => Ok((host, port)),
        _ => Err(format!("`{s}`: expected HOST:PORT")),
    }
}

/// How the sandbox serves: its port, the faults it injects and the platforms' limits.
#[derive(clap::Args)]
struct SandboxArgs {
    #[arg(long, default_value_t = 8480)]
    port: u16,
    /// Share of requests answered with a transient server error.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of requests answered as throttled (Meta 80003, HTTP 429).
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Share of requests applied whose connection is then dropped.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Extra latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of rows answered as invalid entries.
    #[arg(long, default_value_t = 0.0)]
    invalid_row_rate: f64,
    /// Meta's call budget per rolling window (Business Use Case limit); default: off.
    #[arg(long)]
    meta_calls_per_window: Option<u64>,
    /// The rolling window of the Meta budget, in seconds.
    #[arg(long, default_value_t = 3600)]
    meta_window_secs: u64,
    /// The Data Manager's requests per minute (its per-project quota is 300); default: off.
    #[arg(long)]
    google_requests_per_minute: Option<u64>,
    /// TikTok's requests per second (an app's QPS); default: off.
    #[arg(long)]
    tiktok_requests_per_second: Option<u64>,
    /// Snap's requests per second (10 per token on average); default: off.
    #[arg(long)]
    snap_requests_per_second: Option<u64>,
    /// A platform's requests per second, for the emulators that take their rate by name
    /// (`--rate pinterest=10`); repeat for several.
    #[arg(long = "rate", value_parser = platform_rate)]
    rates: Vec<(String, u64)>,
    /// The UID2 operator's client secret (Base64 of 32 bytes); default: the documented
    /// sandbox secret (see the README's The Trade Desk section).
    #[arg(long, value_parser = activator::sandbox::ttd::parse_client_secret)]
    uid2_client_secret: Option<activator::destinations::ttd::envelope::ClientSecret>,
}

impl SandboxArgs {
    fn config(self) -> activator::sandbox::SandboxConfig {
        use activator::sandbox::{faults, google, meta, snap, tiktok};
        activator::sandbox::SandboxConfig {
            faults: faults::FaultConfig {
                error_rate: self.error_rate,
                throttle_rate: self.throttle_rate,
                drop_rate: self.drop_rate,
                latency_ms: self.latency_ms,
                invalid_row_rate: self.invalid_row_rate,
                seed: 1,
                once: vec![],
            },
            meta: meta::MetaLimits {
                calls_per_window: self.meta_calls_per_window,
                window: std::time::Duration::from_secs(self.meta_window_secs),
            },
            google: google::GoogleLimits {
                requests_per_minute: self.google_requests_per_minute,
            },
            tiktok: tiktok::TikTokLimits {
                requests_per_second: self.tiktok_requests_per_second,
                ..Default::default()
            },
            snap: snap::SnapLimits {
                requests_per_second: self.snap_requests_per_second,
                ..Default::default()
            },
            rates: self.rates.into_iter().collect(),
            uid2_client_secret: self.uid2_client_secret,
        }
    }
}

#[derive(clap::Args)]
struct RunFlags {
    /// No progress bar or progress log lines.
    #[arg(long)]
    quiet: bool,
    /// Run a date whose run finished already, and start an unfinished one afresh.
    #[arg(long)]
    force: bool,
    /// Let an empty segment through (a mirror or replace empties the audience).
    #[arg(long)]
    allow_empty: bool,
    /// Let a mirror run remove more than the job's guards.max_removal_share.
    #[arg(long)]
    allow_mass_removal: bool,
    /// Let a run of a date earlier than a mirror or replace destination's last sync make its
    /// audience that older segment.
    #[arg(long)]
    allow_rollback: bool,
    /// Where the segment's query runs, instead of the job's `engine`: `local` or
    /// `ballista://HOST:PORT` (a cluster started with `activator cluster`).
    #[arg(long, env = "ACTIVATOR_ENGINE", value_parser = activator::segment::Engine::parse)]
    engine: Option<activator::segment::Engine>,
}

impl RunFlags {
    fn options(&self) -> run::RunOptions {
        run::RunOptions {
            progress: !self.quiet,
            force: self.force,
            allow_empty: self.allow_empty,
            allow_mass_removal: self.allow_mass_removal,
            allow_rollback: self.allow_rollback,
            dry_run: false,
            concurrent_runs: 1,
            engine: self.engine.clone(),
        }
    }
}

/// Prints the summary (and EMF lines when `ACTIVATOR_METRICS=emf`), writes the JSON.
fn publish(report: &activator::report::RunReport, json: Option<&PathBuf>) -> Result<(), Error> {
    print!("{}", report.summary());
    if std::env::var("ACTIVATOR_METRICS").is_ok_and(|v| v.eq_ignore_ascii_case("emf")) {
        for line in report.emf_lines() {
            println!("{line}");
        }
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report).expect("report serializes");
        std::fs::write(path, text).map_err(|e| {
            Error::config(format!(
                "cannot write the report to {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// A date, or an RFC 3339 timestamp's UTC date: what EventBridge Scheduler passes as
/// `<aws.scheduler.scheduled-time>` (see `activator stack`).
fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| {
            chrono::DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&chrono::Utc).date_naive())
        })
        .map_err(|_| format!("`{s}` is not a date: write YYYY-MM-DD (or an RFC 3339 timestamp, whose UTC date is taken)"))
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::parse(s).ok_or_else(|| format!("unknown profile `{s}`: use meta, google or uid2"))
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| {
        let all: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown kind `{s}`: use one of {}", all.join(", "))
    })
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Whether log lines are JSON: `ACTIVATOR_LOG_FORMAT=json` or `text`, else JSON unless stderr is
/// a terminal.
fn json_logs() -> bool {
    use std::io::IsTerminal;
    match std::env::var("ACTIVATOR_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    }
}

/// Ballista's log lines that carry the text of a failed query or task, which can quote a value
/// of the row it failed on (`Cannot cast string '...'`), or a plan with the segment's literals:
/// always off, whatever ACTIVATOR_LOG asks (these directives are more specific than any it is
/// likely to give). A run reports such failures itself, without their text
/// (`cluster::reading_error`). The executor's and scheduler's start-up lines stay.
const BALLISTA_QUIET: &str = "ballista_core::execution_plans::distributed_query=off,\
ballista_executor=warn,ballista_executor::executor=off,ballista_executor::executor_process=info,\
ballista_scheduler::state::task_manager=off,ballista_scheduler::state::execution_graph=off";

/// Log lines go to stderr: coloured text on a terminal; elsewhere (AWS Batch, CloudWatch Logs, a
/// pipe, a file) one JSON object a line, with the level, the message, the event's fields and the
/// run's (job, date, run id; a destination's where it is about one), which CloudWatch Logs
/// Insights queries as fields. No log line carries an identifier's value.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = || {
        let asked = std::env::var("ACTIVATOR_LOG").unwrap_or_else(|_| "info".into());
        let directives = format!("{asked},{BALLISTA_QUIET}");
        tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("info,{BALLISTA_QUIET}"))
        })
    };
    if !json_logs() {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_target(false)
            .init();
    }
}

/// Tells glibc's malloc to keep what is freed and to grow its heaps in large steps (runs do too,
/// with a trim near their budget: `memory::keep_freed_memory`). The sandbox
/// receives megabyte request bodies and keeps millions of members; by default glibc hands each
/// freed body back to the kernel and grows thread heaps page by page, and the page faults and
/// `mprotect` calls that follow were a third of the sandbox's time in a 5-million-member upload.
fn sandbox_keeps_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Starts the sandbox again, in this process, with glibc's malloc set to back its memory with
/// huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: glibc reads its tunables only when a
/// program starts), unless `GLIBC_TUNABLES` is set already, by the user or by this. An emulator
/// storing B1's 5.2 million members took 335,000 page faults of 4 KiB without them, 5,500 to
/// 20,000 with them, and 0.6-1.6 of its 5-7 CPU seconds less (four alternating pairs of one Data
/// Manager upload, the same build, all lower). Asking for huge pages for the members' buffer
/// alone (`madvise` after each growth) left most of it in small pages, with more faults, not
/// fewer. On an AMD VM whose kernel hands freed memory back to the host (free page reporting),
/// a fresh sandbox's first upload took 2.0-2.5 CPU-s more with huge pages than without (two
/// pairs each of Meta and Data Manager): huge pages come from the large free blocks, the ones
/// handed back, which are slow to touch again. Kept, since a reset keeps the member sets
/// (`state::SPARE_SETS`) and only a sandbox's first upload feels either way.
fn sandbox_with_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // `exec` returns only if it failed; the sandbox then serves as it is.
        let error = std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
            .exec();
        eprintln!(
            "note: the sandbox runs without huge pages ({} did not start again: {error})",
            exe.display()
        );
    }
}

fn main() -> ExitCode {
    // Before anything else: the rest of the binary may use these instructions.
    let missing = activator::cpu::missing_features();
    if !missing.is_empty() {
        eprintln!(
            "error: this CPU lacks {}, which this build of activator was compiled to use \
             (.cargo/config.toml: x86-64-v3); run it on a newer CPU (exit code 3: AWS Batch retries \
             the job, perhaps on another host), or build it with \
             RUSTFLAGS=\"-C target-cpu=x86-64\" for any x86-64 CPU",
            missing.join(", ")
        );
        return ExitCode::from(3);
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Sandbox(_)) {
        sandbox_with_huge_pages();
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Runs and backfills stop well on SIGTERM (see `activator::shutdown`); other commands just end.
    let graceful = match &cli.command {
        Command::Run { .. } | Command::Backfill { .. } => true,
        #[cfg(feature = "cluster")]
        Command::Cluster(ClusterCommand::Main { .. }) => true,
        _ => false,
    };
    if graceful {
        // A bad ACTIVATOR_MEMORY_LIMIT is reported by the run itself.
        if let Ok(budget) = activator::memory::Budget::of_this_process() {
            activator::memory::keep_freed_memory(&budget);
        }
    }
    let command = execute(cli.command);
    let result = runtime.block_on(async {
        if graceful {
            stopping_on_sigterm(command).await
        } else {
            command.await
        }
    });
    // Blocking reads a stopped run left behind are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    exit_code(result)
}

/// Carries out one command.
async fn execute(command: Command) -> Result<(), Error> {
    match command {
        Command::Run {
            job,
            date,
            array_start,
            report_json,
            flags,
        } => {
            let job = Job::load(&job)?;
            let date = match array_start {
                Some(start) => {
                    run::array_date(&job, start, std::env::var("AWS_BATCH_JOB_ARRAY_INDEX").ok())?
                }
                None => date.unwrap_or_else(today),
            };
            let report = run::run(&job, date, &flags.options()).await?;
            publish(&report, report_json.as_ref())
        }
        Command::Plan {
            job,
            date,
            report_json,
        } => {
            let job = Job::load(&job)?;
            let options = run::RunOptions {
                dry_run: true,
                ..run::RunOptions::default()
            };
            let report = run::run(&job, date.unwrap_or_else(today), &options).await?;
            publish(&report, report_json.as_ref())
        }
        Command::Prune { job, keep_days } => prune(&job, keep_days).await,
        Command::Backfill {
            job,
            from,
            to,
            parallel,
            flags,
        } => backfill(&job, from, to, parallel, flags.options()).await,
        Command::Sandbox(args) => serve_sandbox(args).await,
        Command::Validate { jobs, date } => validate_all(jobs, date.unwrap_or_else(today)).await,
        #[cfg(feature = "cluster")]
        Command::Cluster(ClusterCommand::Scheduler { port, bind }) => {
            activator::cluster::start_scheduler(&bind, port)
                .await?
                .serve()
                .await
        }
        #[cfg(feature = "cluster")]
        Command::Cluster(ClusterCommand::Main {
            job,
            date,
            port,
            report_json,
            flags,
        }) => {
            let date = date.unwrap_or_else(today);
            cluster_main(&job, date, port, report_json, flags.options()).await
        }
        #[cfg(feature = "cluster")]
        Command::Cluster(ClusterCommand::Executor {
            scheduler,
            port,
            bind,
            work_dir,
            stock_functions,
        }) => {
            activator::cluster::executor(activator::cluster::ExecutorSettings {
                scheduler_host: scheduler.0,
                scheduler_port: scheduler.1,
                bind,
                external_host: None,
                port,
                work_dir,
                stock_functions,
            })
            .await
        }
        Command::Stack { jobs } => print_stack(&jobs),
        Command::Hash {
            profile,
            kind,
            country,
            values,
        } => {
            print_hashes(profile, kind, country.as_deref(), &values);
            Ok(())
        }
    }
}

/// `activator prune`: deletes the members, diffs and checkpoints of the job's dates finished
/// before the last `keep_days`, except what the destinations' current syncs refer to.
async fn prune(job: &std::path::Path, keep_days: u32) -> Result<(), Error> {
    let job = Job::load(job)?;
    let before = today() - chrono::Duration::days(keep_days.into());
    let state = activator::state::StateStore::open(&job.state, &job.name, false)?;
    let (files, bytes) = state.prune(&before.to_string()).await?;
    println!(
        "activator: pruned job {}: deleted {files} files ({:.1} MB) of runs finished before {before}",
        job.name,
        bytes as f64 / 1e6
    );
    Ok(())
}

/// `activator backfill`: the job for every date from `from` to `to`, `parallel` at a time, each
/// run's report published as it finishes.
async fn backfill(
    job: &std::path::Path,
    from: NaiveDate,
    to: NaiveDate,
    parallel: usize,
    options: run::RunOptions,
) -> Result<(), Error> {
    let job = Job::load(job)?;
    let dates = run::backfill_dates(from, to)?;
    let mut on_report = |r: &activator::report::RunReport| {
        let _ = publish(r, None);
    };
    let reports = run::backfill(&job, &dates, parallel, &options, &mut on_report).await?;
    println!(
        "activator: backfill of {} finished: {} dates, {from} to {to}",
        job.name,
        reports.len()
    );
    Ok(())
}

/// `activator stack`: the CloudFormation template of the jobs, on standard output.
fn print_stack(jobs: &[PathBuf]) -> Result<(), Error> {
    let jobs = jobs
        .iter()
        .map(|path| Job::load(path))
        .collect::<Result<Vec<_>, Error>>()?;
    print!("{}", activator::stack::yaml(&jobs)?);
    Ok(())
}

/// The exit code AWS Batch acts on (`ErrorClass::exit_code`), the error printed first: a line of
/// text, or one JSON object where the log lines are JSON.
fn exit_code(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.class.exit_code();
            if !json_logs() {
                eprintln!("error: {e}");
            } else {
                // As the log lines are: one JSON object, for CloudWatch Logs Insights.
                let line = serde_json::json!({
                    "timestamp": chrono::Utc::now().to_rfc3339(),
                    "level": "ERROR",
                    "message": format!("error: {e}"),
                    "exit_code": code,
                });
                eprintln!("{line}");
            }
            ExitCode::from(code as u8)
        }
    }
}

/// `activator sandbox`: the platform emulators on loopback until interrupted.
async fn serve_sandbox(args: SandboxArgs) -> Result<(), Error> {
    sandbox_keeps_freed_memory();
    let port = args.port;
    let config = args.config();
    let sandbox = activator::sandbox::Sandbox::start(([127, 0, 0, 1], port).into(), config).await?;
    let url = &sandbox.url;
    println!(
        "sandbox serving on {url} (Meta: {url}/v25.0/..., Google Data Manager: {url}/v1/..., TikTok: {url}/open_api/v1.3/dmp/custom_audience/..., Snap: {url}/v1/adaccounts/..., LinkedIn: {url}/rest/dmpSegments, Pinterest: {url}/v5/ad_accounts/..., Microsoft: {url}/CampaignManagement/v13/..., X: {url}/12/accounts/..., UID2 operator: {url}/v3/identity/map, The Trade Desk: {url}/data/advertiser, REST recorder: {url}/_sandbox/rest/NAME; introspection: {url}/_sandbox/audiences)"
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

/// `activator cluster main`: a scheduler, then the run with its segment on the cluster.
#[cfg(feature = "cluster")]
async fn cluster_main(
    job: &std::path::Path,
    date: NaiveDate,
    port: u16,
    report_json: Option<PathBuf>,
    mut options: run::RunOptions,
) -> Result<(), Error> {
    let job = Job::load(job)?;
    let scheduler = activator::cluster::start_scheduler("0.0.0.0", port).await?;
    // On AWS Batch, the other nodes of the multi-node job are the executors.
    let nodes = std::env::var("AWS_BATCH_JOB_NUM_NODES").ok();
    if let Some(nodes) = nodes.and_then(|n| n.parse::<usize>().ok()) {
        let within = std::time::Duration::from_secs(600);
        scheduler
            .wait_for_executors(nodes.saturating_sub(1), within)
            .await?;
    }
    options.engine = Some(activator::segment::Engine::Cluster {
        host: "127.0.0.1".into(),
        port,
    });
    let report = run::run(&job, date, &options).await;
    drop(scheduler);
    publish(&report?, report_json.as_ref())
}

/// `activator hash`: each value normalized and hashed, one JSON object a line.
fn print_hashes(profile: Profile, kind: Kind, country: Option<&str>, values: &[String]) {
    for v in values {
        let n = identity::normalize_one(profile, kind, v, country);
        let line = match n.result {
            Ok((normalized, fields)) => {
                let mut obj = serde_json::json!({
                    "kind": kind.name(), "profile": profile.name(), "normalized": normalized,
                });
                if fields.len() == 1 {
                    obj["hash"] = fields[0].1.clone().into();
                    obj["field"] = fields[0].0.clone().into();
                } else {
                    obj["fields"] = fields
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::from(v)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                obj
            }
            Err(reason) => serde_json::json!({
                "kind": kind.name(), "profile": profile.name(), "invalid": reason,
            }),
        };
        println!("{line}");
    }
}

/// Runs `command`; on SIGTERM asks it to stop (`activator::shutdown`), gives it the grace period
/// to finish its requests in flight and write their checkpoints, and fails with exit code 3 so
/// AWS Batch retries and the retry resumes. A run that finishes within the grace succeeds.
async fn stopping_on_sigterm(
    command: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::pin!(command);
    let Ok(mut sigterm) = signal(SignalKind::terminate()) else {
        return command.await;
    };
    tokio::select! {
        result = &mut command => return result,
        _ = sigterm.recv() => {}
    }
    activator::shutdown::request();
    tracing::warn!(
        grace_secs = activator::shutdown::GRACE.as_secs(),
        "SIGTERM: starting no new request, letting those in flight finish, then exiting with code 3 so a retry resumes"
    );
    let deadline = tokio::time::Instant::now() + activator::shutdown::GRACE;
    let result = match tokio::time::timeout_at(deadline, &mut command).await {
        // The stop's own error is transient (exit 3); any other keeps its class: a guard or a
        // permanent refusal would fail the same way on a retry.
        Ok(result) => result,
        Err(_) => Err(activator::shutdown::stopped(
            "the run (its requests in flight did not finish within the grace period)",
        )),
    };
    // A destination that failed with the stop may have left calls in flight on the runtime:
    // their answers and checkpoints are waited for, so the retry does not send them again.
    activator::shutdown::drain(deadline).await;
    result
}

async fn validate_all(jobs: Vec<PathBuf>, date: NaiveDate) -> Result<(), Error> {
    let jobs = if jobs.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("jobs")
            .map_err(|e| Error::config(format!("no job files given and cannot read jobs/: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        found.sort();
        found
    } else {
        jobs
    };
    let mut first_error = None;
    for path in jobs {
        match validate::validate(&path, date).await {
            Ok(v) => {
                let cols: Vec<String> = v.columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
                println!(
                    "ok {}: {} returns {}",
                    path.display(),
                    v.job.segment_path.display(),
                    cols.join(", ")
                );
            }
            Err(e) => {
                println!("FAILED {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(Error {
            class: e.class,
            message: "some jobs are not valid (see above)".into(),
        }),
        None => Ok(()),
    }
}

/// `PLATFORM=N`: a platform's requests per second in the sandbox.
fn platform_rate(text: &str) -> std::result::Result<(String, u64), String> {
    let (platform, rate) = text.split_once('=').ok_or_else(|| {
        format!("`{text}`: write PLATFORM=REQUESTS_PER_SECOND, e.g. pinterest=10")
    })?;
    let rate = rate
        .parse()
        .map_err(|_| format!("`{rate}` is not a whole number of requests per second"))?;
    Ok((platform.to_string(), rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_scheduled_times() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        assert_eq!(parse_date("2026-11-25"), Ok(day));
        assert_eq!(parse_date("2026-11-25T02:00:00Z"), Ok(day));
        // The UTC date of a time with an offset.
        assert_eq!(parse_date("2026-11-26T00:30:00+01:00"), Ok(day));
        assert!(parse_date("2026-11-25T02:00").is_err());
        assert!(parse_date("yesterday").unwrap_err().contains("YYYY-MM-DD"));
    }
}
