//! The run report: what a run read, kept, dropped and delivered, as JSON (kept in the state
//! store), as a readable summary, and as CloudWatch embedded-metric-format lines. It holds
//! counts, reasons, masked samples and destinations' outputs, never identifier values.

use crate::destinations::SinkReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReport {
    pub job: String,
    pub run_date: String,
    pub run_id: String,
    pub profile: String,
    /// The state store's URL.
    pub state: String,
    /// Where this report is kept in the state store.
    pub report_file: String,
    /// A plan: nothing was sent or written.
    pub dry_run: bool,
    /// This run went on from a killed or failed attempt's checkpoints.
    pub resumed: bool,
    /// The date's run had finished before; this one sent nothing.
    pub already_done: bool,
    pub rows_read: u64,
    /// Distinct members in the segment.
    pub members: u64,
    pub duplicates: u64,
    pub without_strong_identifier: u64,
    pub pre_hashed_values: u64,
    /// Invalid values by `<kind>:<reason>`.
    pub invalid: BTreeMap<String, u64>,
    pub destinations: Vec<SinkReport>,
    /// Seconds per stage: `plan` (tables, template, SQL planning), `read` (read, normalize,
    /// hash, deduplicate, and stream to exports), `diff` (merge and diff against the last sync,
    /// store the files to send), `send` (platform uploads), `total`.
    pub seconds: BTreeMap<String, f64>,
    /// Audiences of the in-process sandbox after the run, when the job used it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sandbox: Vec<String>,
}

impl RunReport {
    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let what = if self.dry_run { "plan" } else { "job" };
        let _ = writeln!(
            s,
            "activator: {what} {} for {} ({} profile)",
            self.job, self.run_date, self.profile
        );
        if self.already_done {
            let _ = writeln!(
                s,
                "  this date's run {} had finished: nothing sent (use --force to run it again)",
                self.run_id
            );
        }
        if self.resumed {
            let _ = writeln!(
                s,
                "  resumed run {}: acknowledged batches were not sent again",
                self.run_id
            );
        }
        let _ = writeln!(s, "  rows read                 {:>12}", self.rows_read);
        let _ = writeln!(s, "  members                   {:>12}", self.members);
        let _ = writeln!(s, "  duplicates dropped        {:>12}", self.duplicates);
        // Rows with no valid email, phone, mobile ad id or external id: not members.
        let _ = writeln!(
            s,
            "  no strong identifier      {:>12}",
            self.without_strong_identifier
        );
        if self.pre_hashed_values > 0 {
            let _ = writeln!(
                s,
                "  pre-hashed values         {:>12}",
                self.pre_hashed_values
            );
        }
        if !self.invalid.is_empty() {
            let _ = writeln!(s, "  invalid values by reason:");
            for (reason, n) in &self.invalid {
                let _ = writeln!(s, "    {reason:<24}{n:>12}");
            }
        }
        for d in &self.destinations {
            summarize_destination(d, self.dry_run, &mut s);
        }
        for line in &self.sandbox {
            let _ = writeln!(s, "  sandbox (in-process): {line}");
        }
        let stages: Vec<String> = ["plan", "read", "diff", "send"]
            .iter()
            .filter_map(|k| self.seconds.get(*k).map(|v| format!("{v:.2} {k}")))
            .collect();
        let _ = writeln!(
            s,
            "  seconds: {:.2} total ({})",
            self.seconds.get("total").copied().unwrap_or(0.0),
            stages.join(", ")
        );
        if !self.report_file.is_empty() {
            let _ = writeln!(s, "  report: {}", self.report_file);
        }
        s
    }

    /// CloudWatch embedded metric format: one JSON line for the run and one per destination, so
    /// CloudWatch Logs turns the job's stdout into metrics (`ACTIVATOR_METRICS=emf`).
    pub fn emf_lines(&self) -> Vec<String> {
        let now = chrono::Utc::now().timestamp_millis();
        let line = |dimensions: Vec<&str>,
                    fields: serde_json::Map<String, serde_json::Value>,
                    metrics: &[(&str, &str)]| {
            let mut root = fields;
            root.insert(
                "_aws".into(),
                serde_json::json!({
                    "Timestamp": now,
                    "CloudWatchMetrics": [{
                        "Namespace": "Activator",
                        "Dimensions": [dimensions],
                        "Metrics": metrics.iter().map(|(n, u)| serde_json::json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
                    }],
                }),
            );
            serde_json::Value::Object(root).to_string()
        };
        let mut out = vec![];
        let mut run = serde_json::Map::new();
        run.insert("Job".into(), self.job.clone().into());
        run.insert("RunDate".into(), self.run_date.clone().into());
        run.insert("RowsRead".into(), self.rows_read.into());
        run.insert("Members".into(), self.members.into());
        run.insert("Duplicates".into(), self.duplicates.into());
        run.insert(
            "InvalidValues".into(),
            self.invalid.values().sum::<u64>().into(),
        );
        run.insert(
            "Seconds".into(),
            self.seconds.get("total").copied().unwrap_or(0.0).into(),
        );
        out.push(line(
            vec!["Job"],
            run,
            &[
                ("RowsRead", "Count"),
                ("Members", "Count"),
                ("Duplicates", "Count"),
                ("InvalidValues", "Count"),
                ("Seconds", "Seconds"),
            ],
        ));
        for d in &self.destinations {
            let mut f = serde_json::Map::new();
            f.insert("Job".into(), self.job.clone().into());
            f.insert("Destination".into(), d.destination.clone().into());
            f.insert("RunDate".into(), self.run_date.clone().into());
            f.insert("Added".into(), d.added.into());
            f.insert("Removed".into(), d.removed.into());
            f.insert("Batches".into(), d.batches.into());
            f.insert("Requests".into(), d.requests.into());
            f.insert("Retries".into(), d.retries.into());
            f.insert("PlatformInvalid".into(), d.platform_invalid.into());
            f.insert("NotSent".into(), d.not_sent.into());
            out.push(line(
                vec!["Job", "Destination"],
                f,
                &[
                    ("Added", "Count"),
                    ("Removed", "Count"),
                    ("Batches", "Count"),
                    ("Requests", "Count"),
                    ("Retries", "Count"),
                    ("PlatformInvalid", "Count"),
                    ("NotSent", "Count"),
                ],
            ));
        }
        out
    }
}

/// A destination's lines of the run's summary: what was (or, in a plan, would be) sent,
/// the requests it took, what was left out and why, and where it went.
fn summarize_destination(d: &SinkReport, dry_run: bool, s: &mut String) {
    let verb = if dry_run { "would send" } else { "sent" };
    let mode = if d.mode.is_empty() { "add" } else { &d.mode };
    let _ = writeln!(
        s,
        "  destination {} ({mode}): {verb} {} members in {} batches: {} added, {} removed",
        d.destination, d.rows, d.batches, d.added, d.removed
    );
    if d.requests > 0 || d.resumed_batches > 0 {
        let resumed = match d.resumed_batches {
            0 => String::new(),
            n => format!(", {n} batches acknowledged before the resume"),
        };
        let _ = writeln!(
            s,
            "    {} requests, {} retries{resumed}",
            d.requests, d.retries
        );
    }
    let left_out = [
        (
            d.identifiers_kept,
            "identifiers of members who left were kept: members still in the segment have them",
        ),
        (
            d.not_sent,
            "members had no identifier this destination takes and were not sent",
        ),
    ];
    for (n, what) in left_out.into_iter().filter(|(n, _)| *n > 0) {
        let _ = writeln!(s, "    {n} {what}");
    }
    if d.platform_invalid > 0 {
        let _ = writeln!(
            s,
            "    the platform called {} rows invalid; samples (masked): {}",
            d.platform_invalid,
            d.platform_invalid_samples.join(", ")
        );
    }
    for o in d.outputs.iter().take(5) {
        let _ = writeln!(s, "    -> {o}");
    }
    if d.outputs.len() > 5 {
        let _ = writeln!(s, "    -> ... and {} more", d.outputs.len() - 5);
    }
}
