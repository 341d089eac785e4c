//! Batches to file bytes. Parquet is encoded by the writer itself (it owns row groups); CSV and
//! NDJSON are encoded here, batch by batch, into a reused buffer.

use crate::error::Result;
use crate::job::ExportFormat;
use arrow::array::RecordBatch;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// Parquet settings for hashed identifiers: no dictionaries (every hash is distinct), statistics
/// per column chunk only, row groups small enough to keep memory bounded.
pub fn parquet_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

/// Encodes a batch as CSV or NDJSON into `out` (cleared first). CSV gets a header line only
/// when `first`.
pub fn encode_text(
    format: ExportFormat,
    batch: &RecordBatch,
    first: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    match format {
        ExportFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(first)
                .build(&mut *out);
            w.write(batch)?;
        }
        ExportFormat::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            w.write(batch)?;
            w.finish()?;
        }
        ExportFormat::Parquet => unreachable!("parquet is encoded by the writer"),
    }
    Ok(())
}
