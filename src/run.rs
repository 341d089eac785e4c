//! One run of a job for a date: plan, read, normalize and hash, deduplicate, deliver, report.
//!
//! The segment's batches are normalized on the rayon pool, several at a time and in order
//! (`buffered`), while DataFusion reads ahead on the tokio runtime; each destination runs as its
//! own task fed by a small bounded channel, so memory stays a few batches deep whatever the
//! segment's size. If anything fails upstream, destinations are told so and commit nothing.

use crate::destinations::{self, RunInfo};
use crate::error::{Error, Result};
use crate::identity::{self, IdentityPlan};
use crate::job::Job;
use crate::members::Members;
use crate::report::RunReport;
use crate::segment;
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use futures::{SinkExt, StreamExt};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Show a progress bar when stderr is a terminal (log lines otherwise).
    pub progress: bool,
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

pub async fn run(job: &Job, run_date: NaiveDate, options: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let ctx = segment::context(job).await?;
    let sql = segment::render(job, run_date)?;
    let df = segment::plan(&ctx, job, &sql).await?;
    let plan = Arc::new(identity_plan(job));
    let schema = plan.output_schema();
    let planned = started.elapsed();
    tracing::info!(job = %job.name, %run_date, "segment planned");

    let stream = df
        .execute_stream()
        .await
        .map_err(|e| Error::from_datafusion(e).context(job.segment_path.display()))?;
    let workers = rayon::current_num_threads().max(1);
    let transform_plan = plan.clone();
    let segment_file = job.segment_path.display().to_string();
    let mut members_stream = stream
        .map(move |batch| {
            let plan = transform_plan.clone();
            let segment_file = segment_file.clone();
            async move {
                // Errors while reading rows may quote the row's values: never show them.
                let batch = batch.map_err(|e| {
                    Error::from_datafusion(e)
                        .redacted()
                        .context(format!("{segment_file} (while reading rows)"))
                })?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                rayon::spawn(move || {
                    let _ = tx.send(identity::transform(&plan, &batch));
                });
                rx.await
                    .map_err(|_| Error::internal("a normalization worker stopped"))?
                    .map_err(Error::from)
            }
        })
        .buffered(workers * 2);

    let info = RunInfo {
        job: job.name.clone(),
        run_date,
        run_id: format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        ),
        consent_columns: job
            .consent
            .iter()
            .map(|(role, column)| (role.name().to_string(), column.clone()))
            .collect(),
    };
    // `base_url = "sandbox"`: the platforms are served in-process, for the demo.
    let mut destinations = job.destinations.clone();
    let mut sandbox = None;
    if destinations.iter().any(|d| d.wants_sandbox()) {
        let sb = crate::sandbox::Sandbox::start(
            ([127, 0, 0, 1], 0).into(),
            crate::sandbox::SandboxConfig::default(),
        )
        .await?;
        tracing::info!(url = %sb.url, "serving the platforms from an in-process sandbox");
        for d in &mut destinations {
            d.use_sandbox(&sb.url);
        }
        sandbox = Some(sb);
    }
    let mut senders = vec![];
    let mut sinks = vec![];
    for destination in &destinations {
        let (tx, rx) = futures::channel::mpsc::channel::<Result<RecordBatch>>(2);
        senders.push(tx);
        let destination = destination.clone();
        let info = info.clone();
        let schema = schema.clone();
        sinks.push(tokio::spawn(async move {
            destinations::deliver(&destination, &info, schema, rx.boxed()).await
        }));
    }

    let progress = Progress::new(options.progress);
    let mut members = Members::new();
    let mut failure = None;
    while let Some(item) = members_stream.next().await {
        let batch = match item.and_then(|b| members.admit(b).map_err(Error::from)) {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        progress.update(members.tally.rows, members.unique());
        let mut delivered = false;
        for tx in senders.iter_mut() {
            delivered |= tx.send(Ok(batch.clone())).await.is_ok();
        }
        if !delivered {
            // Every destination has stopped; their errors are collected below.
            break;
        }
    }
    drop(members_stream);
    if failure.is_some() {
        for tx in senders.iter_mut() {
            let _ = tx
                .send(Err(Error::internal(
                    "the run failed before all members were read",
                )))
                .await;
        }
    }
    drop(senders);
    progress.finish();

    let mut reports = vec![];
    let mut sink_error = None;
    for sink in sinks {
        match sink.await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => {
                sink_error.get_or_insert(e);
            }
            Err(e) => {
                sink_error
                    .get_or_insert(Error::internal(format!("a destination task failed: {e}")));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(e) = sink_error {
        return Err(e);
    }

    let total = started.elapsed();
    let tally = &members.tally;
    let report = RunReport {
        job: job.name.clone(),
        run_date: run_date.to_string(),
        profile: job.profile.to_string(),
        rows_read: tally.rows,
        members: members.unique(),
        duplicates: members.duplicates,
        without_strong_identifier: tally.without_strong_identifier,
        pre_hashed_values: tally.pre_hashed,
        invalid: tally.invalid.clone(),
        destinations: reports,
        seconds: [
            ("plan".to_string(), planned.as_secs_f64()),
            ("process".to_string(), (total - planned).as_secs_f64()),
            ("total".to_string(), total.as_secs_f64()),
        ]
        .into_iter()
        .collect(),
        sandbox: sandbox
            .map(|sb| {
                sb.state
                    .store
                    .list()
                    .into_iter()
                    .map(|a| {
                        format!(
                            "{} audience {} \"{}\": {} members",
                            a.platform, a.id, a.name, a.size
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    tracing::info!(
        job = %job.name,
        %run_date,
        rows = report.rows_read,
        members = report.members,
        seconds = total.as_secs_f64(),
        "run finished"
    );
    Ok(report)
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
