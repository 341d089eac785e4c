//! The run report: what a run read, kept, dropped and delivered, as JSON and as a readable
//! summary. It holds counts, reasons and destinations' outputs, never identifier values.

use crate::destinations::SinkReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub job: String,
    pub run_date: String,
    pub profile: String,
    pub rows_read: u64,
    /// Distinct members delivered.
    pub members: u64,
    pub duplicates: u64,
    pub without_strong_identifier: u64,
    pub pre_hashed_values: u64,
    /// Invalid values by `<kind>:<reason>`.
    pub invalid: BTreeMap<String, u64>,
    pub destinations: Vec<SinkReport>,
    /// Seconds per stage: `plan` (tables, template, SQL planning), `process` (read, normalize,
    /// hash, deliver), `total`.
    pub seconds: BTreeMap<String, f64>,
    /// Audiences of the in-process sandbox after the run, when the job used it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sandbox: Vec<String>,
}

impl RunReport {
    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "activator: job {} for {} ({} profile)",
            self.job, self.run_date, self.profile
        );
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
            let _ = writeln!(
                s,
                "  destination {}: {} members in {} batches",
                d.destination, d.rows, d.batches
            );
            if d.requests > 0 {
                let _ = writeln!(s, "    {} requests, {} retries", d.requests, d.retries);
            }
            if d.platform_invalid > 0 {
                let _ = writeln!(
                    s,
                    "    the platform called {} rows invalid; samples: {}",
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
        for line in &self.sandbox {
            let _ = writeln!(s, "  sandbox (in-process): {line}");
        }
        let secs = |k: &str| self.seconds.get(k).copied().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "  seconds: {:.2} total ({:.2} planning, {:.2} processing)",
            secs("total"),
            secs("plan"),
            secs("process")
        );
        s
    }
}
