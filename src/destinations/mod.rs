//! Destinations: where members go. Each is a folder of small files (config, encoder, writer or
//! service, sink) and its sink reads as one pipeline over a stream of member batches; batching
//! (`crate::batch`) is shared.

pub mod export;
pub mod google;
pub mod http;
pub mod meta;
pub mod secrets;

use crate::error::Result;
use crate::job::Destination;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use futures::stream::BoxStream;

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

/// What a destination did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkReport {
    pub destination: String,
    pub batches: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Where the output went (files for an export, the audience for a platform).
    pub outputs: Vec<String>,
    pub requests: u64,
    pub retries: u64,
    /// Rows the platform said were invalid.
    pub platform_invalid: u64,
    /// A few of the platform's invalid-entry samples, masked.
    pub platform_invalid_samples: Vec<String>,
}

/// Drives one destination over the member stream until it ends; an `Err` item means the run
/// failed upstream, and the destination must leave nothing half-done.
pub async fn deliver(
    destination: &Destination,
    run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
) -> Result<SinkReport> {
    match destination {
        Destination::Export(config) => export::sink::run(config, run, schema, members).await,
        Destination::Meta(config) => meta::sink::run(config, run, schema, members).await,
        Destination::Google(config) => google::sink::run(config, run, schema, members).await,
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
