//! Destinations: where members go. Each is a folder of small files (config, encoder, writer or
//! service, sink) and its sink reads as one pipeline over a stream of member batches; batching
//! (`crate::batch`) is shared.

pub mod export;

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
}

/// What a destination did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkReport {
    pub destination: String,
    pub batches: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Where the output went (files for an export).
    pub outputs: Vec<String>,
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
    }
}
