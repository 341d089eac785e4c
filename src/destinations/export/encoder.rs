//! Batches to file bytes. Parquet is encoded by the writer itself (it owns row groups); CSV and
//! NDJSON are encoded here, batch by batch, onto the end of the file's buffer.

use super::config::ExportFormat;
use crate::error::Result;
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Parquet settings for hashed identifiers. A SHA-256 in hex does not compress: what repeats in
/// it is whole values, which a dictionary catches, and Snappy then only spends time (it took a
/// twentieth of an export's CPU to shave a tenth off the zip column). So hashed columns are
/// stored uncompressed; raw ones (gender, country codes, ...) are compressed. Hashes of e-mails,
/// phones and device or customer ids are nearly all distinct: plain. Hashes of names, zips,
/// cities, states, countries repeat a great deal: dictionary-encoded (the writer falls back to
/// plain if a dictionary grows too big). Statistics per column chunk only, and none for hashes;
/// row groups small enough to keep memory bounded.
pub fn parquet_properties(schema: &Schema) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(128 * 1024));
    for field in schema.fields() {
        let name = field.name();
        let path = ColumnPath::from(name.as_str());
        let distinct = [
            "email",
            "phone",
            "mobile_ad_id",
            "external_id",
            "member_key",
        ]
        .iter()
        .any(|k| name.starts_with(k));
        if distinct {
            builder = builder.set_column_dictionary_enabled(path.clone(), false);
        }
        if name.ends_with("_sha256") {
            // The smallest and largest of random hashes prune nothing, and comparing every
            // value to them cost a fiftieth of an export's CPU.
            builder = builder.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        }
        if distinct || name.ends_with("_sha256") {
            builder = builder.set_column_compression(path, Compression::UNCOMPRESSED);
        }
    }
    builder.build()
}

/// Encodes a batch as CSV or NDJSON onto the end of `out`. CSV gets a header line only when
/// `first`.
pub fn encode_text(
    format: ExportFormat,
    batch: &RecordBatch,
    first: bool,
    out: &mut impl std::io::Write,
) -> Result<()> {
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
