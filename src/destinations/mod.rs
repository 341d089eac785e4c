//! Destinations: where members go. Each is a folder of small files (config, encoder, writer or
//! service, sink) and its sink reads as one pipeline over a stream of member batches; batching
//! (`crate::batch`), retries (`http`), secrets, job-file settings, the single-step driver and
//! the single-key identifiers TikTok and Snap take are shared.

pub mod export;
pub mod google;
pub mod http;
pub mod ids;
pub mod meta;
pub mod rest;
pub mod secrets;
pub mod settings;
pub mod single_step;
pub mod snap;
pub mod tiktok;

use crate::error::Result;
use crate::job::Destination;
use crate::state::checkpoint::Checkpoint;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use futures::stream::BoxStream;
use std::sync::Arc;

/// What a run tells its destinations.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub job: String,
    pub run_date: NaiveDate,
    /// Unique per attempt; names staging areas.
    pub run_id: String,
    /// The job's consent columns by role (`ad_user_data`, `ad_personalization`).
    pub consent_columns: Vec<(String, String)>,
}

/// What a delivery does to the audience.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
    /// The platform's full replace: the audience becomes the members sent.
    Replace,
}

impl Op {
    /// The checkpoint phase of the delivery.
    pub fn phase(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Remove => "remove",
            Op::Replace => "replace",
        }
    }
}

/// One delivery to a destination: what it does, and the checkpoint it resumes from and records
/// each acknowledged batch in (batches are numbered from 1 in the order they are cut).
#[derive(Clone)]
pub struct Delivery {
    pub op: Op,
    pub checkpoint: Arc<Checkpoint>,
    /// How many members the stream holds, when known (Meta's `estimated_num_total`).
    pub members: Option<u64>,
}

impl Delivery {
    /// A delivery with nothing to resume and nothing recorded.
    pub fn fresh(op: Op) -> Delivery {
        Delivery {
            op,
            checkpoint: Arc::new(Checkpoint::in_memory()),
            members: None,
        }
    }
}

/// What a destination did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SinkReport {
    pub destination: String,
    pub batches: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Where the output went (files for an export, the audience for a platform).
    pub outputs: Vec<String>,
    /// How the destination was synced, and what changed in its audience.
    pub mode: String,
    pub added: u64,
    pub removed: u64,
    /// Batches a killed attempt of this run had sent already (acknowledged, not sent again).
    pub resumed_batches: u64,
    pub requests: u64,
    pub retries: u64,
    /// Rows the platform said were invalid.
    pub platform_invalid: u64,
    /// Members with no identifier this destination takes, so not sent (not the platform's
    /// doing: they never left).
    pub not_sent: u64,
    /// A few of the platform's invalid-entry samples, masked.
    pub platform_invalid_samples: Vec<String>,
    /// Identifiers of members who left that were not removed, because a member still in the
    /// segment has them (platforms that match each identifier on its own).
    pub identifiers_kept: u64,
}

/// Drives one destination over the member stream until it ends; an `Err` item means the run
/// failed upstream, and the destination must leave nothing half-done.
pub async fn deliver(
    destination: &Destination,
    run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    match destination {
        Destination::Export(config) => export::sink::run(config, run, schema, members).await,
        Destination::Meta(config) => meta::sink::run(config, run, schema, members, delivery).await,
        Destination::Google(config) => {
            google::sink::run(config, run, schema, members, delivery).await
        }
        Destination::TikTok(config) => {
            tiktok::sink::run(config, run, schema, members, delivery).await
        }
        Destination::Snap(config) => snap::sink::run(config, run, schema, members, delivery).await,
        Destination::Rest(config) => rest::sink::run(config, run, schema, members, delivery).await,
    }
}

/// Platforms are reached over HTTPS; plain HTTP only to loopback (the sandbox). `sandbox` starts
/// one in-process.
pub fn check_base_url(url: &str) -> std::result::Result<(), String> {
    if url == "sandbox" {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "`{url}`: use https:// (plain http only to loopback), or `sandbox`"
        )),
    }
}
