//! One run of a job for a date: read, normalize and hash, deduplicate, diff against the last
//! sync, check the guards, deliver with checkpoints, commit, report.
//!
//! The segment's batches are normalized on the rayon pool, several at a time and in order
//! (`buffered`), while DataFusion reads ahead on the tokio runtime. Exports take the members as
//! they come. Platform destinations are sent from the run's membership, gathered in sorted runs
//! on local disk and merged into files in the state store (`crate::state`): the members, and per
//! destination the adds and removes against its last sync. Those files make a run resumable: a
//! rerun after a crash finds the date's pending run, skips the batches its checkpoints say were
//! acknowledged, and sends the rest in the same order, in the same platform session.
//!
//! Nothing is sent until the guards have passed; exports commit only then too. The exception is
//! a job's `send_adds_while_reading`: its `add` destinations take the members as they come, as
//! exports do (the only guard that applies to them, an empty segment, has nothing to send).

use crate::destinations::{self, Delivery, Op, RunInfo, SinkReport};
use crate::destinations::{Destination, SyncMode};
use crate::error::{Error, Result};
use crate::identity::{self, IdentityPlan};
use crate::job::Job;
use crate::members::{Admitted, Members};
use crate::report::RunReport;
use crate::segment;
use crate::state::keyset::KeySet;
use crate::state::membership::{self, DiffTarget, Spill};
use crate::state::{Done, Download, Pending, PendingDestination, StateStore, SyncHead};
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Show a progress bar when stderr is a terminal (log lines otherwise).
    pub progress: bool,
    /// Run again although the date's run finished, and start afresh instead of resuming.
    pub force: bool,
    /// Let an empty segment through the guard.
    pub allow_empty: bool,
    /// Let a mirror run remove more than the job's `guards.max_removal_share`.
    pub allow_mass_removal: bool,
    /// Let a first run of a date earlier than a mirror or replace destination's last sync make
    /// its audience that older segment.
    pub allow_rollback: bool,
    /// `plan`: compute what would be sent; send nothing, write nothing.
    pub dry_run: bool,
    /// Runs of the process at once (`backfill --parallel`), which share its memory budget.
    pub concurrent_runs: usize,
    /// Where the segment's query runs, instead of the job's `engine`.
    pub engine: Option<segment::Engine>,
}

/// The identity plan for a job: its identifier columns, then consent flags passed through.
pub fn identity_plan(job: &Job) -> IdentityPlan {
    let passthrough = job
        .consent
        .iter()
        .map(|(_, column)| (column.clone(), DataType::Boolean))
        .collect();
    IdentityPlan::new(
        job.profile,
        job.identifiers.clone(),
        job.default_region,
        passthrough,
    )
}

/// Destinations sent from the membership files (platforms), as opposed to streamed (exports).
fn from_state(d: &dyn Destination) -> bool {
    !d.streamed()
}

/// Runs the job for the date. Its log lines carry the job, the date and (once known) the run id,
/// which the JSON log lines show as fields.
pub async fn run(job: &Job, run_date: NaiveDate, options: &RunOptions) -> Result<RunReport> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "run",
        job = %job.name,
        date = %run_date,
        run_id = tracing::field::Empty
    );
    run_date_of(job, run_date, options).instrument(span).await
}

async fn run_date_of(job: &Job, run_date: NaiveDate, options: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let date = run_date.to_string();
    let state = StateStore::open(&job.state, &job.name, !options.dry_run)?;
    if let Some(report) = finished_already(job, &state, run_date, options).await? {
        return Ok(report);
    }
    let pending = unfinished_run(job, &state, run_date, options).await?;
    let (destinations, sandbox) = destinations_served(job, options).await?;
    let (mut report, pending) = match pending {
        Some(p) => {
            tracing::Span::current().record("run_id", p.run_id.as_str());
            tracing::info!(job = %job.name, %run_date, run_id = %p.run_id,
                "resuming the date's unfinished run: sending what its checkpoints do not show as acknowledged");
            let mut report =
                serde_json::from_value::<RunReport>(p.read.clone()).unwrap_or_default();
            report.resumed = true;
            (report, p)
        }
        None => {
            if !options.dry_run
                && !options.force
                && let Some(why) = unfinished_elsewhere(&state, &date).await?
            {
                return Err(Error::guard(why));
            }
            match read_and_diff(job, run_date, options, &state, &destinations).await? {
                (report, Some(p)) => (report, p),
                // A plan, or a job of exports only.
                (report, None) => {
                    return finish(job, &state, report, None, started, options, sandbox).await;
                }
            }
        }
    };
    let send_started = Instant::now();
    let sent = send_all(job, &state, &pending, &destinations, run_date).await?;
    report.destinations.extend(sent);
    report
        .seconds
        .insert("send".into(), send_started.elapsed().as_secs_f64());
    let pending = Some(pending);
    finish(job, &state, report, pending, started, options, sandbox).await
}

/// The report of the date's finished run, if it finished and the run is not forced (or a plan).
async fn finished_already(
    job: &Job,
    state: &StateStore,
    run_date: NaiveDate,
    options: &RunOptions,
) -> Result<Option<RunReport>> {
    if options.dry_run || options.force {
        return Ok(None);
    }
    let Some(done) = state
        .read_json::<Done>(&StateStore::done_file(&run_date.to_string()))
        .await?
    else {
        return Ok(None);
    };
    // A finished run deletes its pending record last. One stopped just before (killed, or the
    // delete refused) left it, and other dates would wait on it: it is cleared here. A record
    // of another run is a later run of the date (`--force`) that has not finished: resumed.
    let pending_file = StateStore::pending_file(&run_date.to_string());
    if let Some(pending) = state.read_json::<Pending>(&pending_file).await? {
        if pending.run_id != done.run_id {
            return Ok(None);
        }
        state.delete(&pending_file).await?;
        tracing::info!(job = %job.name, %run_date, run_id = %done.run_id,
            "cleared the pending record the date's finished run left");
    }
    let mut report: RunReport = state
        .read_json(&done.report_file)
        .await?
        .unwrap_or_default();
    report.already_done = true;
    tracing::info!(job = %job.name, %run_date, run_id = %done.run_id,
        "this date's run finished already; nothing sent (--force runs it again)");
    Ok(Some(report))
}

/// The date's unfinished run, to resume: none for a plan; abandoned with `--force`; set aside
/// (`moved_base`) where a destination's last sync moved since it was diffed.
async fn unfinished_run(
    job: &Job,
    state: &StateStore,
    run_date: NaiveDate,
    options: &RunOptions,
) -> Result<Option<Pending>> {
    if options.dry_run {
        return Ok(None);
    }
    let pending_file = StateStore::pending_file(&run_date.to_string());
    let Some(pending) = state.read_json::<Pending>(&pending_file).await? else {
        return Ok(None);
    };
    if options.force {
        tracing::warn!(job = %job.name, %run_date, "--force: abandoning the date's unfinished run");
        state.delete(&pending_file).await?;
        return Ok(None);
    }
    match moved_base(state, &pending).await? {
        // Not deleted: the fresh run's pending run replaces it once it is stored, and until
        // then (a guard stops the fresh run, say) it stays the record of what was sent.
        Some(why) => {
            tracing::warn!(job = %job.name, %run_date, run_id = %pending.run_id,
                "{why}: starting the date afresh (reading and diffing against the current sync); \
                 what the unfinished run sent is sent again or removed as the new diff says");
            Ok(None)
        }
        None => Ok(Some(pending)),
    }
}

/// The job's destinations, pointed at an in-process sandbox where they say
/// `base_url = "sandbox"` (the demo), with the sandbox, which serves until dropped.
async fn destinations_served(
    job: &Job,
    options: &RunOptions,
) -> Result<(Vec<Box<dyn Destination>>, Option<crate::sandbox::Sandbox>)> {
    let mut destinations = job.destinations.clone();
    if options.dry_run || !destinations.iter().any(|d| d.wants_sandbox()) {
        return Ok((destinations, None));
    }
    let sandbox = crate::sandbox::Sandbox::start(
        ([127, 0, 0, 1], 0).into(),
        crate::sandbox::SandboxConfig::default(),
    )
    .await?;
    tracing::info!(url = %sandbox.url, "serving the platforms from an in-process sandbox");
    for d in &mut destinations {
        d.use_sandbox(&sandbox.url);
    }
    Ok((destinations, Some(sandbox)))
}

/// Sends each destination of the pending run its files, all at once (a destination sent while
/// reading only commits its sync): their reports, or the first error, with where the
/// checkpoints a rerun resumes from are.
async fn send_all(
    job: &Job,
    state: &StateStore,
    pending: &Pending,
    destinations: &[Box<dyn Destination>],
    run_date: NaiveDate,
) -> Result<Vec<SinkReport>> {
    let date = run_date.to_string();
    let info = run_info(job, run_date, &pending.run_id);
    let mut tasks = vec![];
    for pd in &pending.destinations {
        let Some(destination) = destinations.iter().find(|d| d.name() == pd.name).cloned() else {
            return Err(Error::config(format!(
                "{}: the unfinished run {} of {date} sends to destination `{}`, which the job no longer has; \
                 put it back, or run with --force to start the date afresh",
                job.path.display(),
                pending.run_id,
                pd.name
            )));
        };
        let state = state.clone();
        let pending = pending.clone();
        let pd = pd.clone();
        let info = info.clone();
        tasks.push(tokio::spawn(async move {
            if pd.streamed {
                // Sent while reading; its report is the read's.
                commit_sync(&state, &pending, &pd).await.map(|()| None)
            } else {
                send(&state, &pending, &pd, destination.as_ref(), &info)
                    .await
                    .map(Some)
            }
        }));
    }
    let (sent, first_error) = join_tasks(tasks).await;
    if let Some(e) = first_error {
        return Err(e.context(format!(
            "the run stopped; its checkpoints are in {}: rerun the same command to resume",
            state.display(&StateStore::run_dir(&date, &pending.run_id))
        )));
    }
    Ok(sent.into_iter().flatten().collect())
}

/// Why a pending run can no longer be resumed, if it cannot: a destination's last sync moved
/// since the run was diffed (another run of the job committed one, such as an earlier date run
/// with `--force`). Its diff is against a sync that is no longer the audience's, and its commit
/// would fail on every attempt; the date must be read and diffed again.
async fn moved_base(state: &StateStore, pending: &Pending) -> Result<Option<String>> {
    for pd in pending
        .destinations
        .iter()
        .filter(|d| d.mode.sets_the_audience())
    {
        let head = state.head(&pd.name).await?;
        let (generation, run_id) = head.map_or((0, String::new()), |h| (h.generation, h.run_id));
        if generation != pd.base_generation && run_id != pending.run_id {
            return Ok(Some(format!(
                "destination {}: its last sync is now generation {generation}, committed by run {run_id}, \
                 while the unfinished run {} was diffed against generation {}",
                pd.name, pending.run_id, pd.base_generation
            )));
        }
    }
    Ok(None)
}

/// The members of the segment's result, batch by batch. On the local engine, the rows come
/// here and are transformed on rayon's threads; on a cluster, the executors transform them
/// (`identity::udf`) and only members and counts come back.
async fn members(
    job: &Job,
    engine: &segment::Engine,
    df: datafusion::prelude::DataFrame,
    plan: Arc<IdentityPlan>,
) -> Result<BoxStream<'static, Result<identity::MemberBatch>>> {
    let segment_file = job.segment_path.display().to_string();
    let cluster = matches!(engine, segment::Engine::Cluster { .. });
    // Errors while reading rows may quote the row's values: never show them.
    let reading =
        move |e| reading_error(cluster, e).context(format!("{segment_file} (while reading rows)"));
    if cluster {
        let stream = df
            .select(identity::udf::selection(&plan))
            .map_err(|e| Error::from_datafusion(e).context(job.segment_path.display()))?
            .execute_stream()
            .await
            .map_err(reading.clone())?;
        return Ok(stream
            .map(move |batch| {
                let batch = batch.map_err(reading.clone())?;
                identity::udf::members_of(&plan, &batch).map_err(normalization_error)
            })
            .boxed());
    }
    let df = only_read_columns(df, &plan)
        .map_err(|e| Error::from_datafusion(e).context(job.segment_path.display()))?;
    let stream = segment::execute_local(df).await.map_err(reading.clone())?;
    let workers = rayon::current_num_threads().max(1);
    Ok(stream
        .map(move |batch| {
            let plan = plan.clone();
            let batch = batch.map_err(reading.clone());
            async move {
                let batch = batch?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                rayon::spawn(move || {
                    let _ = tx.send(identity::transform_pieces(&plan, &batch));
                });
                rx.await
                    .map_err(|_| Error::internal("a normalization worker stopped"))?
                    .map_err(normalization_error)
            }
        })
        .buffered(workers * 2)
        // A batch too large to normalize at once comes back in pieces.
        .flat_map(|pieces| {
            futures::stream::iter(match pieces {
                Ok(pieces) => pieces.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
        .boxed())
}

/// The segment's result cut to the columns the transform reads, so that the scan does not
/// decode the others (a segment may select `*`, or columns it keeps for people to read). A name
/// the result holds twice (a join) is read from its first column, as `transform` would.
fn only_read_columns(
    df: datafusion::prelude::DataFrame,
    plan: &IdentityPlan,
) -> datafusion::error::Result<datafusion::prelude::DataFrame> {
    let schema = df.schema().clone();
    let mut read: Vec<usize> = plan
        .read_columns()
        .filter_map(|name| schema.fields().iter().position(|f| f.name() == name))
        .collect();
    read.sort_unstable();
    read.dedup();
    if read.len() == schema.fields().len() {
        return Ok(df);
    }
    let columns = read
        .into_iter()
        .map(|i| datafusion::prelude::Expr::Column(schema.qualified_field(i).into()));
    df.select(columns)
}

/// An error of the query while it gives rows: on a cluster, the cluster's own failures are told
/// apart from the segment's (`cluster::reading_error`).
fn reading_error(cluster: bool, e: datafusion::error::DataFusionError) -> Error {
    #[cfg(feature = "cluster")]
    if cluster {
        return crate::cluster::reading_error(e);
    }
    let _ = cluster;
    Error::while_reading_rows(e)
}

/// An error of the identity transform. Its own messages (a missing column, a value too long to
/// normalize) name columns and sizes; any other arrow error's text may quote a value, so it is
/// not shown.
fn normalization_error(e: arrow::error::ArrowError) -> Error {
    use arrow::error::ArrowError as A;
    match e {
        A::SchemaError(m) | A::ComputeError(m) => Error::config(m),
        _ => Error::internal(
            "normalizing identifiers failed; the error's text is not shown, as it may quote a value",
        ),
    }
}

/// Why a fresh run of `date` must not start, if it must not: another date has an unfinished run
/// whose mirror or replace destinations may have been sent part of its changes. This run would
/// diff against a sync that holds none of them, so members it removed would stay out and those
/// it added would stay in. (A failed run is retried by AWS Batch, but not one that timed out.)
async fn unfinished_elsewhere(state: &StateStore, date: &str) -> Result<Option<String>> {
    for (other, pending) in state.pending_runs().await? {
        if other == date {
            continue;
        }
        let partial: Vec<&str> = pending
            .destinations
            .iter()
            .filter(|d| d.mode.sets_the_audience())
            .map(|d| d.name.as_str())
            .collect();
        if !partial.is_empty() {
            return Ok(Some(format!(
                "{other} has an unfinished run ({}) that may have sent part of its changes to {}; nothing was \
                 sent for {date}, whose diff would not know them. Rerun {other} first (it resumes from its \
                 checkpoints), or pass --force to run {date} all the same",
                pending.run_id,
                partial.join(", ")
            )));
        }
    }
    Ok(None)
}

/// What a guard's message adds when `add` destinations were sent the segment as it was read.
fn sent_while_reading(streamed: &[String]) -> String {
    if streamed.is_empty() {
        String::new()
    } else {
        format!(
            " (the add destinations {} were sent the segment as it was read)",
            streamed.join(", ")
        )
    }
}

/// A run id: the UTC time and a random part. (The process id, often 1 in a container, would
/// let two attempts started in the same second share their files.)
fn new_run_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}",
        chrono::Utc::now().format(destinations::RUN_ID_TIME),
        &random[..12]
    )
}

fn run_info(job: &Job, run_date: NaiveDate, run_id: &str) -> RunInfo {
    RunInfo {
        job: job.name.clone(),
        run_date,
        run_id: run_id.to_string(),
        consent_columns: job
            .consent
            .iter()
            .map(|(role, column)| (role.name().to_string(), column.clone()))
            .collect(),
    }
}

/// Reads the segment, streams it to the exports, and (for platform destinations) gathers the
/// membership, diffs it against each destination's last sync, checks the guards, and stores the
/// files to send with the pending run. Exports commit only once the guards have passed.
async fn read_and_diff(
    job: &Job,
    run_date: NaiveDate,
    options: &RunOptions,
    state: &StateStore,
    destinations: &[Box<dyn Destination>],
) -> Result<(RunReport, Option<Pending>)> {
    let started = Instant::now();
    let date = run_date.to_string();
    warm_up_phones(job);
    let budget = memory_budget(options)?;
    let engine = options.engine.as_ref().unwrap_or(&job.engine);
    let ctx = segment::context(job, engine, &budget).await?;
    let pool = ctx.runtime_env().memory_pool.clone();
    let sql = segment::render(job, run_date)?;
    let df = segment::plan(&ctx, job, &sql).await?;
    // The platforms' members are kept in files, whose hashes are bytes: the transform gives
    // them (on this machine; a cluster's executors send text).
    let platforms = platforms_of(destinations);
    let plan = match platforms.is_empty() {
        true => identity_plan(job),
        false => identity_plan(job).keeping_digests(),
    };
    let plan = Arc::new(plan);
    let schema = plan.output_schema();
    let planned = started.elapsed();
    tracing::info!(job = %job.name, %run_date, %engine, "segment planned");
    // The last syncs' keys, fetched before the query starts (a download from S3 can be long);
    // their members download while it runs.
    let diff_plan = match platforms.is_empty() {
        true => None,
        false => Some(DiffPlan::fetch(state, &platforms).await?),
    };
    let members_stream = members(job, engine, df, plan.clone()).await?;

    let run_id = new_run_id();
    tracing::Span::current().record("run_id", run_id.as_str());
    let info = run_info(job, run_date, &run_id);
    // The membership (for platforms) is gathered by a spill, set up before any feed starts: an
    // error returned once they have would end their streams as if complete.
    let membership = match &diff_plan {
        None => None,
        Some(d) => Some(
            d.membership(job, &plan, &platforms, state, budget.bytes, options)
                .await?,
        ),
    };
    let mut feeds = Feeds::start(job, options, destinations, &platforms, &info, &schema);
    let mut members = Members::within(&pool);
    let read = read_members(
        members_stream,
        &mut members,
        membership.as_ref(),
        &mut feeds,
        options,
    );
    let Read {
        failure,
        stopped_feed,
    } = read.await;
    let sorted = membership.map(MembershipThread::finish);
    let read_done = started.elapsed();

    let mut report = read_report(job, &date, &run_id, state, &members, options.dry_run);
    report.seconds.insert("plan".into(), planned.as_secs_f64());
    report
        .seconds
        .insert("read".into(), (read_done - planned).as_secs_f64());
    // The guards and the diff, before any feed commits.
    let checked = async {
        let sorted = sorted.transpose();
        if let Some(e) = failure {
            return Err(e);
        }
        let sorted = sorted?;
        check_not_empty(job, options, &date, &members)?;
        let Some(sorted) = sorted else {
            return Ok(None);
        };
        let diff_started = Instant::now();
        let plan = diff_plan.expect("a diff plan where members were gathered");
        let streamed = &feeds.streamed;
        let pending = diff(
            job, state, &date, &run_id, sorted, plan, &platforms, streamed, options,
        );
        let pending = pending.await?;
        let diffed = diff_started.elapsed().as_secs_f64();
        report.seconds.insert("diff".into(), diffed);
        Ok(Some(pending))
    }
    .await;
    let pending = match checked {
        Ok(p) => p,
        Err(e) => return Err(feeds.abandon(stopped_feed).await.unwrap_or(e)),
    };
    let streamed = feeds.streamed.clone();
    commit_feeds(feeds, &mut report).await?;
    let Some((pending, planned)) = pending else {
        return Ok((report, None));
    };
    if options.dry_run {
        report.destinations.extend(planned);
        return Ok((report, None));
    }
    let pending = store_pending(state, &date, &report, pending, &streamed).await?;
    Ok((report, Some(pending)))
}

/// Loads the phone rules' metadata on a thread of its own while the segment is planned, if the
/// job has raw phones (`identity::phone::warm_up`).
fn warm_up_phones(job: &Job) {
    if job
        .identifiers
        .iter()
        .any(|c| c.kind == identity::Kind::Phone && !c.hashed)
    {
        std::thread::spawn(identity::phone::warm_up);
    }
}

/// The destinations that keep sync state, so that the run gathers its membership for them.
fn platforms_of(destinations: &[Box<dyn Destination>]) -> Vec<&dyn Destination> {
    destinations
        .iter()
        .map(|d| d.as_ref())
        .filter(|d| from_state(*d))
        .collect()
}

/// Commits the feeds, once the guards have passed: destinations sent while reading first, then
/// the exports; each is reported as an add of what it was fed.
async fn commit_feeds(feeds: Feeds, report: &mut RunReport) -> Result<()> {
    for mut fed in feeds.finish().await? {
        fed.mode = SyncMode::Add.to_string();
        fed.added = fed.rows;
        report.destinations.push(fed);
    }
    Ok(())
}

/// The run's share of the process's memory (`crate::memory`), logged.
fn memory_budget(options: &RunOptions) -> Result<crate::memory::Budget> {
    let budget = crate::memory::Budget::of_this_process()?.shared_by(options.concurrent_runs);
    tracing::info!(
        memory_limit_mib = budget.bytes >> 20,
        source = budget.source,
        "memory budget (the query spills to TMPDIR beyond its share)"
    );
    Ok(budget)
}

/// The guard against an empty segment: nothing is sent for a date without members unless the
/// job or the command allows it.
fn check_not_empty(job: &Job, options: &RunOptions, date: &str, members: &Members) -> Result<()> {
    if members.unique() == 0 && !(job.guards.allow_empty || options.allow_empty) {
        return Err(Error::guard(format!(
            "the segment {} has no members for {date}; nothing was sent. If that is right, \
             run with --allow-empty (or set guards.allow_empty = true in the job)",
            job.segment_path.display()
        )));
    }
    Ok(())
}

/// The report of what was read: counts of rows and members, and what was dropped and why.
fn read_report(
    job: &Job,
    date: &str,
    run_id: &str,
    state: &StateStore,
    members: &Members,
    dry_run: bool,
) -> RunReport {
    let tally = &members.tally;
    RunReport {
        job: job.name.clone(),
        run_date: date.to_string(),
        run_id: run_id.to_string(),
        profile: job.profile.to_string(),
        state: state.url.to_string(),
        rows_read: tally.rows,
        members: members.unique(),
        duplicates: members.duplicates,
        without_strong_identifier: tally.without_strong_identifier,
        pre_hashed_values: tally.pre_hashed,
        invalid: tally.invalid.clone(),
        dry_run,
        ..RunReport::default()
    }
}

/// Stores the pending run, whose files the sending reads. A resumed run's report starts from
/// the one of this read: it keeps the destinations sent while reading, which have only their
/// syncs left to commit.
async fn store_pending(
    state: &StateStore,
    date: &str,
    report: &RunReport,
    pending: Pending,
    streamed: &[String],
) -> Result<Pending> {
    let mut read = report.clone();
    read.destinations
        .retain(|d| streamed.contains(&d.destination));
    let mut pending = Pending {
        read: serde_json::to_value(&read).unwrap_or_default(),
        ..pending
    };
    for pd in pending.destinations.iter_mut() {
        pd.streamed = streamed.contains(&pd.name);
    }
    state
        .write_json(&StateStore::pending_file(date), &pending)
        .await?;
    Ok(pending)
}

/// What reading the segment ended with: its first error, and the feed that stopped, if one did.
struct Read {
    failure: Option<Error>,
    stopped_feed: Option<usize>,
}

/// Admits the segment's members (dropping duplicates) and hands each batch to the membership
/// and to the feeds, until the segment ends or something fails.
async fn read_members(
    mut stream: BoxStream<'static, Result<identity::MemberBatch>>,
    members: &mut Members,
    membership: Option<&MembershipThread>,
    feeds: &mut Feeds,
    options: &RunOptions,
) -> Read {
    let progress = Progress::new(options.progress);
    let mut read = Read {
        failure: None,
        stopped_feed: None,
    };
    while let Some(item) = stream.next().await {
        let admitted = match item.and_then(|b| members.admit(b).map_err(normalization_error)) {
            Ok(a) => a,
            Err(e) => {
                read.failure = Some(e);
                break;
            }
        };
        progress.update(members.tally.rows, members.unique());
        let batch = admitted.batch.clone();
        if let Some(membership) = membership
            && !membership.push(admitted).await
        {
            break; // The membership thread failed; its error is collected when it is joined.
        }
        if let Some(i) = feeds.feed(&batch).await {
            // A destination fed as members come failed: the run fails with its error, before
            // any guard, diff or commit, and the other destinations are told to abandon.
            read.stopped_feed = Some(i);
            read.failure = Some(Error::internal("a destination stopped"));
            break;
        }
    }
    drop(stream);
    members.release_sets();
    progress.finish();
    read
}

/// The run's membership, gathered on a thread of its own: sorting and spilling are blocking
/// work.
struct MembershipThread {
    batches: tokio::sync::mpsc::Sender<Admitted>,
    thread: std::thread::JoinHandle<Result<membership::SortedRuns>>,
}

impl MembershipThread {
    fn start(mut spill: Spill) -> MembershipThread {
        let (batches, mut rx) = tokio::sync::mpsc::channel::<Admitted>(4);
        let thread = std::thread::spawn(move || {
            while let Some(a) = rx.blocking_recv() {
                spill.push(&a.batch, &a.keys, a.digests.as_deref())?;
            }
            spill.finish()
        });
        MembershipThread { batches, thread }
    }

    /// Hands over a batch of members; false if the thread has stopped.
    async fn push(&self, members: Admitted) -> bool {
        self.batches.send(members).await.is_ok()
    }

    /// The sorted runs once every batch is in, or the error that stopped the thread.
    fn finish(self) -> Result<membership::SortedRuns> {
        drop(self.batches);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the membership thread stopped")))
    }
}

/// The destinations fed as members come: the exports, then the `add` platforms of a job that
/// sends adds while reading. Nothing of theirs commits until `finish`, after the guards.
#[derive(Default)]
struct Feeds {
    senders: Vec<futures::channel::mpsc::Sender<Result<RecordBatch>>>,
    sinks: Vec<tokio::task::JoinHandle<Result<SinkReport>>>,
    /// The platforms among them, by name (the last `streamed.len()` feeds).
    streamed: Vec<String>,
    /// Per feed, set by `finish` just before its sender goes: its members stream ends normally
    /// only then. A run dropped before (at a SIGTERM, once the grace period is over) drops the
    /// senders unasked, and each stream then ends with an error, so no export commits a part of
    /// the segment as if it were the whole, nor before the platforms sent while reading have.
    complete: Vec<Arc<AtomicBool>>,
}

impl Feeds {
    /// Starts a task per fed destination (none for a plan).
    fn start(
        job: &Job,
        options: &RunOptions,
        destinations: &[Box<dyn Destination>],
        platforms: &[&dyn Destination],
        info: &RunInfo,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Feeds {
        let mut feeds = Feeds::default();
        if options.dry_run {
            return feeds;
        }
        for destination in destinations.iter().filter(|d| !from_state(d.as_ref())) {
            let destination = destination.clone();
            let (info, schema) = (info.clone(), schema.clone());
            feeds.spawn(move |rx| async move {
                let delivery = Delivery::fresh(Op::Add);
                destination.deliver(&info, schema, rx, &delivery).await
            });
        }
        // Platforms in `add` mode may take the members as they come too; their syncs commit
        // after the diff, as the others' do after sending.
        if job.send_adds_while_reading {
            for destination in platforms.iter().filter(|d| d.sync_mode() == SyncMode::Add) {
                feeds.streamed.push(destination.name().to_string());
                let destination = destination.clone_box();
                let (info, schema) = (info.clone(), schema.clone());
                feeds.spawn(move |rx| async move {
                    send_while_reading(destination.as_ref(), &info, schema, rx).await
                });
            }
        }
        feeds
    }

    fn spawn<F, T>(&mut self, task: F)
    where
        F: FnOnce(BoxStream<'static, Result<RecordBatch>>) -> T,
        T: std::future::Future<Output = Result<SinkReport>> + Send + 'static,
    {
        let (tx, rx) = futures::channel::mpsc::channel::<Result<RecordBatch>>(2);
        let complete = Arc::new(AtomicBool::new(false));
        self.complete.push(complete.clone());
        let cut_short = futures::stream::once(async move {
            match complete.load(Ordering::Acquire) {
                true => None,
                false => Some(Err(Error::transient(
                    "the run stopped before the segment was read whole",
                ))),
            }
        })
        .filter_map(futures::future::ready);
        self.senders.push(tx);
        self.sinks
            .push(tokio::spawn(task(rx.chain(cut_short).boxed())));
    }

    /// Hands a batch to every feed; the index of one that has stopped, if any.
    async fn feed(&mut self, batch: &RecordBatch) -> Option<usize> {
        let mut stopped = None;
        for (i, tx) in self.senders.iter_mut().enumerate() {
            if tx.send(Ok(batch.clone())).await.is_err() {
                stopped = Some(i);
            }
        }
        stopped
    }

    /// Ends the feeds once the guards have passed: the platforms sent while reading finish
    /// first, and the exports commit only if they succeeded. Their reports, exports first.
    async fn finish(self) -> Result<Vec<SinkReport>> {
        let Feeds {
            mut senders,
            mut sinks,
            streamed,
            mut complete,
        } = self;
        let completed = |flags: &[Arc<AtomicBool>]| {
            for flag in flags {
                flag.store(true, Ordering::Release);
            }
        };
        let exports = senders.len() - streamed.len();
        completed(&complete.split_off(exports));
        drop(senders.split_off(exports));
        let (streamed_reports, streamed_error) = join_tasks(sinks.split_off(exports)).await;
        if let Some(e) = streamed_error {
            abandon(senders, sinks, None).await;
            return Err(e);
        }
        completed(&complete);
        drop(senders);
        let (mut reports, export_error) = join_tasks(sinks).await;
        if let Some(e) = export_error {
            return Err(e);
        }
        reports.extend(streamed_reports);
        Ok(reports)
    }

    /// Tells every feed to abandon what it started; the error of the one at `stopped`, if it
    /// failed.
    async fn abandon(self, stopped: Option<usize>) -> Option<Error> {
        abandon(self.senders, self.sinks, stopped).await
    }
}

/// Each platform's last sync and, for a mirror with one, the files its diff reads: its previous
/// keys, fetched before the read, as its adds are found as members arrive (`Spill::find_adds`);
/// its previous members, read only by the diff once every member is in, downloaded meanwhile.
/// (B1's members file is 1.1 GB: downloaded first, from moto on loopback, it held the read back
/// by about a second; from S3, by as long as the download takes.)
struct DiffPlan {
    /// Stopped before `work` goes (fields drop in order).
    downloads: Downloads,
    work: tempfile::TempDir,
    heads: Vec<Option<SyncHead>>,
    targets: Vec<Option<DiffTarget>>,
}

impl DiffPlan {
    async fn fetch(state: &StateStore, platforms: &[&dyn Destination]) -> Result<DiffPlan> {
        let work = crate::scratch::dir("diff")?;
        let mut heads = vec![];
        // Only mirror destinations with an earlier sync need a diff.
        let mut targets: Vec<Option<DiffTarget>> = vec![];
        // Destinations last synced by the same run share its files: each is fetched once.
        let mut keys: HashMap<String, PathBuf> = HashMap::new();
        let mut members: HashMap<String, PathBuf> = HashMap::new();
        let mut downloads = Downloads(vec![]);
        for d in platforms {
            let head = state.head(d.name()).await?;
            let target = match (&head, d.sync_mode()) {
                (Some(h), SyncMode::Mirror) => Some(DiffTarget {
                    previous_keys: match keys.get(&h.keys_file) {
                        Some(p) => p.clone(),
                        None => {
                            let p = state.fetch(&h.keys_file, work.path()).await?;
                            keys.insert(h.keys_file.clone(), p.clone());
                            p
                        }
                    },
                    previous_members: members
                        .entry(h.members_file.clone())
                        .or_insert_with(|| {
                            let (p, download) =
                                state.fetch_in_background(&h.members_file, work.path());
                            downloads.0.extend(download);
                            p
                        })
                        .clone(),
                    adds: work.path().join(format!("{}.adds.arrow", d.name())),
                    removes: work.path().join(format!("{}.removes.arrow", d.name())),
                }),
                _ => None,
            };
            targets.push(target);
            heads.push(head);
        }
        Ok(DiffPlan {
            downloads,
            work,
            heads,
            targets,
        })
    }

    /// Starts gathering the run's membership: a spill prepared for the diffs (`prepare`), on
    /// a thread of its own.
    async fn membership(
        &self,
        job: &Job,
        plan: &IdentityPlan,
        platforms: &[&dyn Destination],
        state: &StateStore,
        budget: u64,
        options: &RunOptions,
    ) -> Result<MembershipThread> {
        let mut spill = Spill::new(
            &plan.output_schema(),
            &plan.hashed_columns(),
            plan.profile.encoding(),
        )?;
        let streams_adds = job.send_adds_while_reading;
        let dry_run = options.dry_run;
        self.prepare(&mut spill, platforms, state, budget, streams_adds, dry_run)
            .await?;
        Ok(MembershipThread::start(spill))
    }

    /// Sets `spill` to find each target's adds as members arrive (`keyset`), unless its
    /// platform is sent the whole membership instead (`renews_members`) or the previous keys
    /// would take more than a quarter of the memory budget (20 bytes a key); and to
    /// write its files past the page cache when no member is then read back by this run: every
    /// platform either a mirror whose adds are so found and that does not read the whole
    /// membership to send (`renews_members`, `single_key_kinds`), or an `add` platform sent the
    /// members as they come (`streams_adds`: the job's `send_adds_while_reading`); the files
    /// moved (not copied) into a local state store; and not a dry run. (A send that fails is
    /// taken up again from the members file: then it is read, from the disk.)
    async fn prepare(
        &self,
        spill: &mut Spill,
        platforms: &[&dyn Destination],
        state: &StateStore,
        budget: u64,
        streams_adds: bool,
        dry_run: bool,
    ) -> Result<()> {
        let wanted: Vec<&DiffTarget> = platforms
            .iter()
            .zip(&self.targets)
            .filter_map(|(d, t)| t.as_ref().filter(|_| !d.renews_members()))
            .collect();
        let mut paths: Vec<PathBuf> = wanted.iter().map(|t| t.previous_keys.clone()).collect();
        paths.sort();
        paths.dedup();
        // A keys file takes 20 bytes a key (and its footer), as much as looking it up takes:
        // 16 copied into memory (`keyset`), and 4 to note the key's row in this run
        // (`Spill::find_adds`).
        let file_bytes: u64 = paths
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        if file_bytes > budget / 4 {
            paths.clear();
        }
        // Opening maps and reads the whole file: not on the runtime's threads.
        let opened: HashMap<PathBuf, Arc<KeySet>> = tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .filter_map(|p| Some((p.clone(), Arc::new(KeySet::open(&p)?))))
                .collect()
        })
        .await
        .map_err(|e| Error::internal(format!("opening the previous keys stopped: {e}")))?;
        let found: Vec<(Arc<KeySet>, PathBuf)> = wanted
            .iter()
            .filter_map(|t| Some((opened.get(&t.previous_keys)?.clone(), t.adds.clone())))
            .collect();
        let none_read_back = found.len() == wanted.len()
            && platforms
                .iter()
                .zip(&self.targets)
                .all(|(d, t)| leaves_members_unread(*d, t.is_some(), streams_adds));
        spill.find_adds(found)?;
        if none_read_back && !dry_run && state.moves_from(&std::env::temp_dir()) {
            spill.write_direct();
        }
        Ok(())
    }
}

/// Downloads of the last syncs' members files, going on while the segment is read: awaited
/// by the diff, and stopped if the run ends before it.
struct Downloads(Vec<Download>);

impl Downloads {
    /// Waits for every download; the first error, which names the file, and where it will
    /// fail again (a missing file, or one the job's role may not read), what to do.
    async fn finished(mut self) -> Result<()> {
        for task in self.0.iter_mut() {
            let downloaded = task.await.map_err(|e| {
                Error::internal(format!("downloading the last sync's members stopped: {e}"))
            })?;
            downloaded.map_err(|mut e| {
                if e.class == crate::ErrorClass::Config {
                    e.message.push_str(
                        "; the diff needs the last sync's members: if they are gone, restore the file in the \
                         state store, or run the date once with the destination's sync = \"replace\" (where \
                         the platform has one), which needs no earlier members",
                    );
                }
                e
            })?;
        }
        Ok(())
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Whether `platform` is sent its part of the run without reading the members file back once
/// the segment is read: an `add` platform sent the members as they come (`streams_adds`), or a
/// mirror whose adds are found as members arrive (`adds_found`) and that neither renews the
/// whole membership nor reads it to send one identifier at a time.
fn leaves_members_unread(platform: &dyn Destination, adds_found: bool, streams_adds: bool) -> bool {
    match platform.sync_mode() {
        SyncMode::Add => streams_adds,
        SyncMode::Mirror => {
            adds_found && !platform.renews_members() && platform.single_key_kinds().is_none()
        }
        _ => false,
    }
}

/// Merges the sorted members, diffs them per destination, checks the mass-removal guard and
/// (unless a plan) stores the files; returns the pending run and, for a plan, what each
/// destination would get.
// The run's parts, passed from its one caller; a struct of them would only rename them.
#[allow(clippy::too_many_arguments)]
async fn diff(
    job: &Job,
    state: &StateStore,
    date: &str,
    run_id: &str,
    sorted: membership::SortedRuns,
    plan: DiffPlan,
    platforms: &[&dyn Destination],
    streamed: &[String],
    options: &RunOptions,
) -> Result<(Pending, Vec<SinkReport>)> {
    let DiffPlan {
        downloads,
        work,
        heads,
        targets,
    } = plan;
    downloads.finished().await?;
    let keys_local = work.path().join("keys.arrow");
    let keys_path = (!options.dry_run).then(|| keys_local.clone());
    let (counts, sorted) = merge(sorted, &targets, keys_path).await?;
    let members = sorted.members;
    let run_dir = StateStore::run_dir(date, run_id);
    let members_file = format!("{run_dir}/members.arrow");
    let keys_file = format!("{run_dir}/keys.arrow");
    let mut pending_destinations = vec![];
    let mut planned = vec![];
    for ((d, head), c) in platforms.iter().zip(&heads).zip(&counts) {
        let mode = d.sync_mode();
        // A mirror of a platform that forgets whom it is not sent again adds everyone.
        let adds_all = mode != SyncMode::Mirror || head.is_none() || d.renews_members();
        let (adds, removes) = match (mode, adds_all) {
            (SyncMode::Mirror, false) => (c.adds, c.removes),
            (SyncMode::Mirror, true) => (members, c.removes),
            _ => (members, 0),
        };
        check_guards(job, *d, head.as_ref(), date, removes, streamed, options)?;
        planned.push(planned_report(*d, adds, removes));
        pending_destinations.push(PendingDestination {
            name: d.name().to_string(),
            mode,
            base_generation: head.as_ref().map_or(0, |h| h.generation),
            previous_members: head.as_ref().map_or(0, |h| h.members),
            // Without an earlier sync every member is an add: the members file serves.
            adds_file: match adds_all {
                false => format!("{run_dir}/{}.adds.arrow", d.name()),
                true => members_file.clone(),
            },
            adds,
            removes_file: format!("{run_dir}/{}.removes.arrow", d.name()),
            removes,
            streamed: false,
            strip_held_identifiers: d.single_key_kinds().is_some(),
            batch: Some(d.batch_limits()),
        });
    }
    if !options.dry_run {
        state.upload(&sorted.members_file, &members_file).await?;
        state.upload(&keys_local, &keys_file).await?;
        for (pd, t) in pending_destinations.iter().zip(&targets) {
            if let Some(t) = t {
                if pd.adds_file != members_file {
                    state.upload(&t.adds, &pd.adds_file).await?;
                }
                state.upload(&t.removes, &pd.removes_file).await?;
            }
        }
    }
    let pending = Pending {
        run_id: run_id.to_string(),
        run_date: date.to_string(),
        members_file,
        keys_file,
        members,
        read: serde_json::Value::Null,
        destinations: pending_destinations,
    };
    Ok((pending, planned))
}

/// Merges the sorted runs into the keys file (at `keys_path`; none for a plan), diffing them
/// against each target's previous keys on the way: per platform, its counts (a platform without
/// a target: all members are adds), and the runs, whose members file is still to be stored.
async fn merge(
    sorted: membership::SortedRuns,
    targets: &[Option<DiffTarget>],
    keys_path: Option<PathBuf>,
) -> Result<(Vec<membership::DiffCounts>, membership::SortedRuns)> {
    let t: Vec<DiffTarget> = targets.iter().flatten().cloned().collect();
    let (diffed, mut sorted) = tokio::task::spawn_blocking(move || {
        let counts = membership::merge(&sorted, keys_path.as_deref(), &t)?;
        Ok::<_, Error>((counts, sorted))
    })
    .await
    .map_err(|e| Error::internal(format!("the diff stopped: {e}")))??;
    sorted.release_lookups();
    let mut diffed = diffed.into_iter();
    let counts = targets
        .iter()
        .map(|t| match t {
            Some(_) => diffed.next().expect("a count per target"),
            None => membership::DiffCounts {
                previous: 0,
                adds: sorted.members,
                removes: 0,
            },
        })
        .collect();
    Ok((counts, sorted))
}

/// The guards of a destination's diff (not for a plan): a run that would make an audience an
/// older segment than its last sync's (`--allow-rollback`), and a mirror run that would remove
/// more of the last sync's members than the job allows (`--allow-mass-removal`).
fn check_guards(
    job: &Job,
    d: &dyn Destination,
    head: Option<&SyncHead>,
    date: &str,
    removes: u64,
    streamed: &[String],
    options: &RunOptions,
) -> Result<()> {
    let Some(h) = head.filter(|_| !options.dry_run) else {
        return Ok(());
    };
    let mode = d.sync_mode();
    if mode.sets_the_audience() && h.run_date.as_str() > date && !options.allow_rollback {
        return Err(Error::guard(format!(
            "destination {}: its audience was last synced with the segment of {}, a later date than {date}; \
             this {mode} run would make the audience the older segment (members who joined since would \
             be removed, those who left added back); nothing was sent to it{}. To roll the audience back \
             on purpose, run with --allow-rollback",
            d.name(),
            h.run_date,
            sent_while_reading(streamed)
        )));
    }
    let previous = h.members;
    if mode == SyncMode::Mirror && previous > 0 {
        let share = removes as f64 / previous as f64;
        let allowed = job.guards.max_removal_share;
        if share > allowed && !options.allow_mass_removal {
            return Err(Error::guard(format!(
                "destination {}: this mirror run would remove {removes} of the {previous} members \
                 of the last sync ({:.0}%, more than the {:.0}% the job allows); nothing was sent to it{}. \
                 If the segment really shrank, run with --allow-mass-removal (or raise guards.max_removal_share)",
                d.name(),
                share * 100.0,
                allowed * 100.0,
                sent_while_reading(streamed)
            )));
        }
    }
    Ok(())
}

/// What a destination is to get, as a plan reports it: a `remove` destination's adds are the
/// members it removes.
fn planned_report(d: &dyn Destination, adds: u64, removes: u64) -> SinkReport {
    let mode = d.sync_mode();
    let limits = d.batch_limits();
    let batches = |n: u64| n.div_ceil(limits.max_rows.max(1) as u64);
    let (added, removed) = match mode {
        SyncMode::Remove => (0, adds),
        _ => (adds, removes),
    };
    SinkReport {
        destination: d.name().to_string(),
        mode: mode.to_string(),
        added,
        removed,
        rows: adds + removes,
        batches: batches(adds) + batches(removes),
        ..SinkReport::default()
    }
}

/// Sends one destination's part of the pending run, resuming from its checkpoint, and commits
/// its sync.
async fn send(
    state: &StateStore,
    pending: &Pending,
    pd: &PendingDestination,
    destination: &dyn Destination,
    info: &RunInfo,
) -> Result<SinkReport> {
    let run_dir = StateStore::run_dir(&pending.run_date, &pending.run_id);
    let checkpoint = Arc::new(
        state
            .checkpoint(format!("{run_dir}/{}.checkpoint.json", pd.name))
            .await?,
    );
    // The batches are cut as when the run began, whatever the job file says now.
    let mut destination = destination.clone_box();
    if let Some(limits) = pd.batch {
        destination.set_batch_limits(limits);
    }
    let destination = destination.as_ref();
    let mut report = SinkReport {
        destination: pd.name.clone(),
        mode: pd.mode.to_string(),
        ..SinkReport::default()
    };
    let work = crate::scratch::dir("send")?;
    if !checkpoint.is_committed().await {
        for (op, file, rows) in sync_steps(pd) {
            if rows == 0 && op != Op::Replace {
                continue;
            }
            if checkpoint.is_finished(op.phase()).await {
                // Sent whole by a killed attempt.
                let acked = checkpoint.acked_count(op.phase()).await;
                report.batches += acked;
                report.resumed_batches += acked;
                report.rows += rows;
                continue;
            }
            let local = state.fetch(file, work.path()).await?;
            let schema = membership::member_schema(&local)?;
            let mut members = file_stream(local);
            let mut kept_identifiers = None;
            if let Some(kinds) = destination.single_key_kinds()
                && op == Op::Remove
                && pd.mode == SyncMode::Mirror
                && pd.strip_held_identifiers
            {
                let current = state.fetch(&pending.members_file, work.path()).await?;
                let (stripped, kept) = without_held_identifiers(kinds, current, members).await?;
                members = stripped;
                kept_identifiers = Some(kept);
            }
            let delivery = Delivery {
                op,
                checkpoint: checkpoint.clone(),
                members: Some(rows),
            };
            let step = destination
                .deliver(info, schema, members, &delivery)
                .await?;
            if let Some(kept) = kept_identifiers {
                report.identifiers_kept = kept.load(Ordering::Relaxed);
            }
            report.add_step(step);
        }
        commit_head(state, pending, pd).await?;
        checkpoint.committed().await?;
    }
    match pd.mode {
        SyncMode::Mirror => {
            report.added = pd.adds;
            report.removed = pd.removes;
        }
        SyncMode::Remove => report.removed = pd.adds,
        SyncMode::Add | SyncMode::Replace => report.added = pd.adds,
    }
    Ok(report)
}

/// What a destination's sync sends, in order: (operation, the stored members file, its rows).
fn sync_steps(pd: &PendingDestination) -> Vec<(Op, &str, u64)> {
    match pd.mode {
        SyncMode::Add => vec![(Op::Add, pd.adds_file.as_str(), pd.adds)],
        SyncMode::Replace => vec![(Op::Replace, pd.adds_file.as_str(), pd.adds)],
        SyncMode::Remove => vec![(Op::Remove, pd.adds_file.as_str(), pd.adds)],
        // Removes first: a member whose identifiers changed is removed by the old ones, then
        // added by the new ones, and not the other way round.
        SyncMode::Mirror => vec![
            (Op::Remove, pd.removes_file.as_str(), pd.removes),
            (Op::Add, pd.adds_file.as_str(), pd.adds),
        ],
    }
}

/// Waits for destination tasks: what each returned, and the first error.
async fn join_tasks<T>(tasks: Vec<tokio::task::JoinHandle<Result<T>>>) -> (Vec<T>, Option<Error>) {
    let mut done = vec![];
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => done.push(r),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error
                    .get_or_insert(Error::internal(format!("a destination task failed: {e}")));
            }
        }
    }
    (done, first_error)
}

/// Tells destinations fed as members come to abandon what they started, and waits for them;
/// returns the error of the one at `index`, if it failed.
async fn abandon(
    mut senders: Vec<futures::channel::mpsc::Sender<Result<RecordBatch>>>,
    sinks: Vec<tokio::task::JoinHandle<Result<SinkReport>>>,
    index: Option<usize>,
) -> Option<Error> {
    for tx in senders.iter_mut() {
        let _ = tx
            .send(Err(Error::internal("the run stopped before delivery")))
            .await;
    }
    drop(senders);
    let mut error = None;
    for (i, s) in sinks.into_iter().enumerate() {
        if let Ok(Err(e)) = s.await
            && Some(i) == index
        {
            error = Some(e);
        }
    }
    error
}

/// Makes the pending run's membership the destination's current sync (unless it removes).
async fn commit_head(state: &StateStore, pending: &Pending, pd: &PendingDestination) -> Result<()> {
    if pd.mode == SyncMode::Remove {
        return Ok(());
    }
    // An add destination's sync goes on top of whatever is current: its sends never depended
    // on the base (a mirror's or replace's did, and a moved base restarts the date instead).
    let base = match pd.mode {
        SyncMode::Add => match state.head(&pd.name).await? {
            // Committed already, by a killed attempt of this very run.
            Some(h) if h.run_id == pending.run_id => return Ok(()),
            h => h.map_or(0, |h| h.generation),
        },
        _ => pd.base_generation,
    };
    let generation = base.checked_add(1).ok_or_else(|| {
        Error::config(format!(
            "destination {}: no sync generation follows {base}",
            pd.name
        ))
    })?;
    let head = SyncHead {
        generation,
        run_date: pending.run_date.clone(),
        run_id: pending.run_id.clone(),
        mode: pd.mode,
        members_file: pending.members_file.clone(),
        keys_file: pending.keys_file.clone(),
        members: pending.members,
        committed_at: chrono::Utc::now().to_rfc3339(),
    };
    if let Err(e) = state.commit(&pd.name, &head).await {
        // A killed attempt of this very run may have committed just before it died.
        match state.head(&pd.name).await? {
            Some(h) if h.run_id == pending.run_id => {}
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Commits the sync of a destination that was sent while the segment was read.
async fn commit_sync(state: &StateStore, pending: &Pending, pd: &PendingDestination) -> Result<()> {
    let run_dir = StateStore::run_dir(&pending.run_date, &pending.run_id);
    let checkpoint = state
        .checkpoint(format!("{run_dir}/{}.checkpoint.json", pd.name))
        .await?;
    if !checkpoint.is_committed().await {
        commit_head(state, pending, pd).await?;
        checkpoint.committed().await?;
    }
    Ok(())
}

/// Sends an `add` destination the members as the segment is read. The destination starts at the
/// first member, so an empty segment (which the guard then stops) finds, creates or opens
/// nothing; an `Err` item means the read failed and stops it.
async fn send_while_reading(
    destination: &dyn Destination,
    info: &RunInfo,
    schema: arrow::datatypes::SchemaRef,
    mut members: BoxStream<'static, Result<RecordBatch>>,
) -> Result<SinkReport> {
    let first = loop {
        match members.next().await {
            None => {
                return Ok(SinkReport {
                    destination: destination.name().to_string(),
                    ..SinkReport::default()
                });
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(b)) if b.num_rows() == 0 => continue,
            Some(Ok(b)) => break b,
        }
    };
    let members = futures::stream::once(async { Ok(first) })
        .chain(members)
        .boxed();
    destination
        .deliver(info, schema, members, &Delivery::fresh(Op::Add))
        .await
}

/// A local membership file's member batches as a stream, read on a blocking thread.
fn file_stream(path: PathBuf) -> BoxStream<'static, Result<RecordBatch>> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<RecordBatch>>(2);
    tokio::task::spawn_blocking(move || {
        // A reader that panicked would end the stream as if the file had ended, and the members
        // sent so far would pass for all of them: it ends with an error instead.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for b in membership::member_batches(&path)? {
                if futures::executor::block_on(tx.send(b)).is_err() {
                    break; // the receiver is gone
                }
            }
            Ok(())
        }));
        let failed = match read {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => Error::internal(format!(
                "reading the members file {} stopped",
                path.display()
            )),
        };
        let _ = futures::executor::block_on(tx.send(Err(failed)));
    });
    rx.boxed()
}

/// The members to remove, less the identifiers that members of the current membership file
/// hold (`ids::HeldIdentifiers`), for platforms that match each identifier on its own; and a
/// count of the identifiers kept, complete once the stream has ended. The filter depends on the
/// run's files only, so a resumed run cuts the same batches.
async fn without_held_identifiers(
    kinds: Vec<destinations::ids::IdKind>,
    current: PathBuf,
    removes: BoxStream<'static, Result<RecordBatch>>,
) -> Result<(
    BoxStream<'static, Result<RecordBatch>>,
    Arc<std::sync::atomic::AtomicU64>,
)> {
    let held = tokio::task::spawn_blocking(move || {
        let mut held = destinations::ids::HeldIdentifiers::new(kinds);
        for batch in membership::member_batches(&current)? {
            held.hold(&batch?);
        }
        Ok::<_, Error>(held)
    })
    .await
    .map_err(|e| Error::internal(format!("reading the current members stopped: {e}")))??;
    tracing::debug!(identifiers = held.len(), "identifiers current members hold");
    let kept = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = kept.clone();
    let stripped = removes
        .filter_map(move |batch| {
            let out = batch.and_then(|b| held.strip(&b)).map(|(b, n)| {
                count.fetch_add(n, Ordering::Relaxed);
                b
            });
            // A batch whose identifiers are all held leaves nothing to send.
            futures::future::ready(match out {
                Ok(b) if b.num_rows() == 0 => None,
                other => Some(other),
            })
        })
        .boxed();
    Ok((stripped, kept))
}

/// Writes the report and the date's done marker, clears the pending run.
async fn finish(
    job: &Job,
    state: &StateStore,
    mut report: RunReport,
    pending: Option<Pending>,
    started: Instant,
    options: &RunOptions,
    sandbox: Option<crate::sandbox::Sandbox>,
) -> Result<RunReport> {
    report
        .seconds
        .insert("total".into(), started.elapsed().as_secs_f64());
    if let Some(sb) = sandbox {
        report.sandbox = sb
            .state
            .store
            .list()
            .into_iter()
            .map(|a| {
                format!(
                    "{} audience {} \"{}\": {} members",
                    a.platform, a.id, a.name, a.size
                )
            })
            .collect();
    }
    if options.dry_run {
        return Ok(report);
    }
    let date = report.run_date.clone();
    let run_id = pending
        .as_ref()
        .map(|p| p.run_id.clone())
        .unwrap_or_else(|| report.run_id.clone());
    report.run_id = run_id.clone();
    let report_file = StateStore::report_file(&date, &run_id);
    report.report_file = state.display(&report_file);
    state.write_json(&report_file, &report).await?;
    state
        .write_json(
            &StateStore::done_file(&date),
            &Done {
                run_id,
                report_file,
                finished_at: chrono::Utc::now().to_rfc3339(),
            },
        )
        .await?;
    if pending.is_some() {
        state.delete(&StateStore::pending_file(&date)).await?;
    }
    prune_old_runs(job, state, &date).await;
    tracing::info!(
        job = %job.name,
        run_date = %date,
        rows = report.rows_read,
        members = report.members,
        seconds = started.elapsed().as_secs_f64(),
        "run finished"
    );
    Ok(report)
}

/// Deletes the files of runs finished more than the job's `state_keep_days` before `date`, so
/// the state store does not grow by a membership a night. The run has succeeded by now: a
/// failure here is only a warning, and the next run or `activator prune` tries again.
async fn prune_old_runs(job: &Job, state: &StateStore, date: &str) {
    let Ok(run_date) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
        return;
    };
    let before = run_date - chrono::Duration::days(job.state_keep_days.into());
    match state.prune(&before.to_string()).await {
        Ok((0, _)) => {}
        Ok((files, bytes)) => tracing::info!(
            job = %job.name,
            before = %before,
            files,
            bytes,
            "deleted the files of runs finished before the kept days"
        ),
        Err(e) => tracing::warn!(
            job = %job.name,
            "could not delete old runs' files from the state store (activator prune will): {}",
            e.message
        ),
    }
}

/// A spinner with counts on a terminal; a log line every 10 seconds elsewhere (AWS Batch logs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: std::cell::Cell<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            last_log: std::cell::Cell::new(Instant::now()),
            enabled,
        }
    }

    fn update(&self, rows: u64, members: u64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{rows} rows read, {members} members"));
        } else if self.enabled && self.last_log.get().elapsed() >= Duration::from_secs(10) {
            self.last_log.set(Instant::now());
            tracing::info!(rows, members, "progress");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The run date of a child of an AWS Batch array job (`run --array-start START`): `start` plus
/// its `AWS_BATCH_JOB_ARRAY_INDEX` days. Only for jobs that only export: children run in any
/// order and at once, and a platform audience must be synced one date after the other.
pub fn array_date(job: &Job, start: NaiveDate, index: Option<String>) -> Result<NaiveDate> {
    if job.destinations.iter().any(|d| from_state(d.as_ref())) {
        return Err(Error::config(format!(
            "{}: --array-start is for jobs that only export; a platform audience must be synced one date after the \
             other: run `activator backfill` as one job instead",
            job.path.display()
        )));
    }
    let index = index.ok_or_else(|| {
        Error::config("--array-start needs AWS_BATCH_JOB_ARRAY_INDEX (set by AWS Batch in an array job's children)")
    })?;
    let days: u32 = index
        .trim()
        .parse()
        .ok()
        .filter(|d| *d < 10_000)
        .ok_or_else(|| {
            Error::config(format!(
                "AWS_BATCH_JOB_ARRAY_INDEX={index}: expected an index from 0 to 9999"
            ))
        })?;
    Ok(start + chrono::Duration::days(days.into()))
}

/// The dates of a backfill, `from` to `to` inclusive.
pub fn backfill_dates(from: NaiveDate, to: NaiveDate) -> Result<Vec<NaiveDate>> {
    if to < from {
        return Err(Error::config(format!(
            "--to {to} is before --from {from}: give the earlier date first"
        )));
    }
    Ok(from.iter_days().take_while(|d| *d <= to).collect())
}

/// Runs the dates of a backfill in order (or `parallel` at a time for jobs that only export).
pub async fn backfill(
    job: &Job,
    dates: &[NaiveDate],
    parallel: usize,
    options: &RunOptions,
    on_report: &mut (dyn FnMut(&RunReport) + Send),
) -> Result<Vec<RunReport>> {
    if parallel > 1 && job.destinations.iter().any(|d| from_state(d.as_ref())) {
        return Err(Error::config(format!(
            "{}: --parallel is for jobs that only export; a platform audience must be synced one date after the other",
            job.path.display()
        )));
    }
    let mut reports = vec![];
    let options = &RunOptions {
        concurrent_runs: parallel.max(1),
        ..options.clone()
    };
    let mut runs = futures::stream::iter(dates.iter().copied())
        .map(|d| async move { (d, run(job, d, options).await) })
        .buffered(parallel.max(1));
    let mut by_date = BTreeMap::new();
    while let Some((d, r)) = runs.next().await {
        let r = r.map_err(|e| e.context(format!("backfill, {d}")))?;
        on_report(&r);
        by_date.insert(d, r);
    }
    reports.extend(by_date.into_values());
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed that reads its members to the end: the rows it got, and how the stream ended.
    fn counting_feed(feeds: &mut Feeds) {
        feeds.spawn(|mut members| async move {
            let mut report = SinkReport::default();
            while let Some(batch) = members.next().await {
                report.rows += batch?.num_rows() as u64;
            }
            Ok(report)
        });
    }

    fn one_row() -> RecordBatch {
        let column = Arc::new(arrow::array::Int32Array::from(vec![1])) as _;
        RecordBatch::try_from_iter([("x", column)]).unwrap()
    }

    #[tokio::test]
    async fn an_export_does_not_complete_while_the_platforms_sent_to_while_reading_are_sending() {
        let mut feeds = Feeds::default();
        let (tell, ended_well) = tokio::sync::oneshot::channel();
        feeds.spawn(|mut members| async move {
            let mut last_ok = true;
            while let Some(batch) = members.next().await {
                last_ok = batch.is_ok();
            }
            let _ = tell.send(last_ok);
            Ok(SinkReport::default())
        });
        feeds.streamed.push("platform".into());
        feeds.spawn(|mut members| async move {
            while members.next().await.is_some() {}
            // Its last requests never answer.
            std::future::pending::<()>().await;
            Ok(SinkReport::default())
        });
        feeds.feed(&one_row()).await;
        let finishing = tokio::spawn(feeds.finish());
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The run is dropped as its grace period ends, while it waits for the platform.
        finishing.abort();
        assert!(
            !ended_well.await.unwrap(),
            "the export's stream ended in an error"
        );
    }

    #[tokio::test]
    async fn a_feed_dropped_before_finish_ends_in_an_error_so_its_export_is_not_committed() {
        // A run dropped mid-read (its SIGTERM grace period over) drops its feeds unasked.
        let mut feeds = Feeds::default();
        counting_feed(&mut feeds);
        assert_eq!(feeds.feed(&one_row()).await, None);
        let sink = feeds.sinks.pop().unwrap();
        drop(feeds);
        let err = sink.await.unwrap().unwrap_err();
        assert_eq!(err.class, crate::ErrorClass::Transient);
        assert!(
            err.message.contains("before the segment was read whole"),
            "{err}"
        );
        // Finished, the same feed ends normally with every row.
        let mut feeds = Feeds::default();
        counting_feed(&mut feeds);
        feeds.feed(&one_row()).await;
        feeds.feed(&one_row()).await;
        let reports = feeds.finish().await.unwrap();
        assert_eq!(reports[0].rows, 2);
    }

    /// The one platform of a job file with `destination`'s TOML lines, under `profile`.
    fn platform(profile: &str, destination: &str) -> Box<dyn Destination> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT 1").unwrap();
        let text = format!(
            "segment = \"s.sql\"\nprofile = \"{profile}\"\n[[tables]]\nname = \"t\"\n\
             url = \"s3://b/t\"\n[identifiers]\nemail = \"e\"\n[[destinations]]\n{destination}\n"
        );
        let mut job = Job::parse(&dir.path().join("j.toml"), &text, &|_| None).unwrap();
        job.destinations.remove(0)
    }

    fn meta(sync: &str) -> Box<dyn Destination> {
        platform(
            "meta",
            &format!(
                "type = \"meta\"\nad_account_id = \"1\"\naudience = \"a\"\n\
                 access_token = \"env:T\"\nsync = \"{sync}\""
            ),
        )
    }

    #[test]
    fn only_platforms_sent_without_reading_the_members_back_leave_them_unread() {
        // An add platform, when the job sends the members as they come.
        assert!(leaves_members_unread(&*meta("add"), false, true));
        assert!(!leaves_members_unread(&*meta("add"), false, false));
        // A mirror whose adds were found as members arrived, and only then.
        assert!(leaves_members_unread(&*meta("mirror"), true, false));
        assert!(!leaves_members_unread(&*meta("mirror"), false, true));
        // A full replace reads the whole membership to send it.
        assert!(!leaves_members_unread(&*meta("replace"), true, true));
        // A mirror that sends one identifier at a time reads the membership for each kind.
        let tiktok = platform(
            "meta",
            "type = \"tiktok\"\nadvertiser_id = \"1\"\naudience = \"a\"\naccess_token = \"env:T\"\nsync = \"mirror\"",
        );
        assert!(tiktok.single_key_kinds().is_some());
        assert!(!leaves_members_unread(&*tiktok, true, true));
        // A mirror that renews every member sends the whole membership each night.
        let ttd = platform(
            "uid2",
            "type = \"ttd\"\nadvertiser_id = \"1\"\naudience = \"a\"\nauth_token = \"env:T\"\n\
             uid2_api_key = \"env:K\"\nuid2_client_secret = \"env:S\"\nsync = \"mirror\"",
        );
        assert!(ttd.renews_members());
        assert!(!leaves_members_unread(&*ttd, true, true));
    }

    /// The columns a segment's result keeps once cut to what `plan` reads.
    async fn read_of(sql: &str, plan: &IdentityPlan) -> Vec<String> {
        use arrow::array::{Int64Array, StringArray};
        let ctx = datafusion::prelude::SessionContext::new();
        let table = arrow::array::RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1])) as _),
            ("email", Arc::new(StringArray::from(vec!["a@b.co"])) as _),
            (
                "phone",
                Arc::new(StringArray::from(vec!["+15551234567"])) as _,
            ),
            (
                "consent",
                Arc::new(arrow::array::BooleanArray::from(vec![true])) as _,
            ),
        ])
        .unwrap();
        ctx.register_batch("t", table.clone()).unwrap();
        ctx.register_batch("u", table).unwrap();
        let df = only_read_columns(ctx.sql(sql).await.unwrap(), plan).unwrap();
        let batches = df.collect().await.unwrap();
        let schema = batches[0].schema();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[tokio::test]
    async fn the_scan_reads_only_the_columns_the_job_maps() {
        let email = vec![identity::InputColumn::new(identity::Kind::Email, "email")];
        let plan = IdentityPlan::new(identity::Profile::Meta, email.clone(), None, vec![]);
        assert_eq!(read_of("SELECT * FROM t", &plan).await, ["email"]);
        // Consent columns pass through.
        let consent = vec![("consent".to_string(), DataType::Boolean)];
        let plan = IdentityPlan::new(identity::Profile::Meta, email, None, consent);
        assert_eq!(
            read_of("SELECT * FROM t", &plan).await,
            ["email", "consent"]
        );
        // A name the result holds twice is read from its first column, without an ambiguity.
        let sql = "SELECT t.email, u.email, u.consent FROM t JOIN u ON t.id = u.id";
        assert_eq!(read_of(sql, &plan).await, ["email", "consent"]);
    }
}
