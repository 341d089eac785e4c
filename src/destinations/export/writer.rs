//! One export file in an object store, written as a stream and visible only when complete.
//!
//! Files go up as multipart uploads: S3 shows an object only when its upload completes. Local
//! files are written past the page cache (`crate::direct`) into a hidden staging file, synced and
//! renamed on completion and removed when the writer is dropped (a killed run's, by the next
//! completion of the same file). So a failed or killed run leaves no partial file under the
//! final name.
//!
//! Parquet is encoded by the synchronous `ArrowWriter` into a buffer that is handed over at each
//! row group, without a copy: whole to the upload (`crate::upload::Upload`, which aborts itself
//! when any part fails, so no parts of a failed export stay in the bucket), or to a local file's
//! direct write, which keeps back the bytes past its last whole block for the next buffer and gives
//! the buffer back to be filled again (`AlignedBuf`). parquet's own `AsyncArrowWriter` regrows its
//! buffer from nothing for every row group and copies it into the upload: a tenth of an export's
//! CPU went to those copies and their page faults.

use super::config::ExportFormat;
use super::encoder;
use crate::direct::{AlignedBuf, DirectFile};
use crate::error::Result;
use crate::upload::Upload;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use std::path::PathBuf;
use std::sync::Arc;

pub enum FileWriter {
    Parquet {
        writer: Box<ArrowWriter<AlignedBuf>>,
        out: Output,
    },
    Text {
        out: Output,
        format: ExportFormat,
        buf: AlignedBuf,
        first: bool,
    },
}

/// Where a file's bytes go: an object store's upload, or a local file.
pub enum Output {
    Store(Upload),
    Local(DirectFile),
}

impl Output {
    /// A local file for a path of the local filesystem, an upload otherwise.
    fn create(store: Arc<dyn ObjectStore>, path: Path, local: Option<PathBuf>) -> Result<Output> {
        Ok(match local {
            Some(file) => Output::Local(DirectFile::create(file)?),
            None => Output::Store(Upload::new(store, path, 16 * 1024 * 1024)),
        })
    }

    /// Hands `buffer`'s bytes over, leaving in it those held back (a local file writes whole
    /// blocks), for the next bytes to follow. The buffer it is left with has room for
    /// `capacity` bytes, so the next row group is not copied through a chain of reallocations as
    /// it grows.
    async fn put(&mut self, buffer: &mut AlignedBuf, capacity: usize) -> Result<()> {
        match self {
            Output::Store(out) => {
                let full = std::mem::replace(buffer, AlignedBuf::with_capacity(capacity));
                out.put(full.into_bytes()).await?
            }
            Output::Local(file) => file.put(buffer, capacity).await?,
        }
        Ok(())
    }

    /// Hands the last bytes over and completes the file.
    async fn commit(self, last: AlignedBuf) -> Result<()> {
        match self {
            Output::Store(mut out) => {
                if !last.is_empty() {
                    out.put(last.into_bytes()).await?;
                }
                Ok(out.finish().await?)
            }
            Output::Local(file) => file.commit(last).await,
        }
    }

    async fn abort(self) -> Result<()> {
        match self {
            Output::Store(out) => out.abort().await?,
            Output::Local(file) => file.abort().await?,
        }
        Ok(())
    }
}

impl FileWriter {
    /// A file at `path` of `store`; `local` is its path on this machine's filesystem, if there.
    pub fn create(
        store: Arc<dyn ObjectStore>,
        path: Path,
        local: Option<PathBuf>,
        format: ExportFormat,
        schema: SchemaRef,
    ) -> Result<FileWriter> {
        let out = Output::create(store, path, local)?;
        Ok(match format {
            ExportFormat::Parquet => FileWriter::Parquet {
                writer: Box::new(ArrowWriter::try_new(
                    AlignedBuf::with_capacity(AlignedBuf::FIRST_CAPACITY),
                    schema.clone(),
                    Some(encoder::parquet_properties(&schema)),
                )?),
                out,
            },
            ExportFormat::Csv | ExportFormat::Ndjson => FileWriter::Text {
                out,
                format,
                buf: AlignedBuf::with_capacity(AlignedBuf::FIRST_CAPACITY),
                first: true,
            },
        })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            FileWriter::Parquet { writer, out } => {
                let row_groups = writer.flushed_row_groups().len();
                writer.write(batch)?;
                if writer.flushed_row_groups().len() != row_groups {
                    hand_over(writer, out).await?;
                }
            }
            FileWriter::Text {
                out,
                format,
                buf,
                first,
            } => {
                encoder::encode_text(*format, batch, *first, buf)?;
                *first = false;
                // The encoded bytes go as they are; the next batch is encoded into a buffer of
                // about the same size.
                let capacity = buf.len() + buf.len() / 8;
                out.put(buf, capacity).await?;
            }
        }
        Ok(())
    }

    /// Gives the file up: nothing appears under its name, and an S3 multipart upload already
    /// begun is aborted, not left in the bucket (billed, and invisible to listings) until a
    /// lifecycle rule removes it.
    pub async fn abort(self) -> Result<()> {
        let (FileWriter::Parquet { out, .. } | FileWriter::Text { out, .. }) = self;
        out.abort().await
    }

    /// Completes the upload: the file appears under its name.
    pub async fn commit(self) -> Result<()> {
        match self {
            FileWriter::Parquet { mut writer, out } => {
                if let Err(e) = writer.finish() {
                    out.abort().await.ok();
                    return Err(e.into());
                }
                let last = std::mem::replace(writer.inner_mut(), AlignedBuf::with_capacity(0));
                out.commit(last).await
            }
            FileWriter::Text { out, buf, .. } => out.commit(buf).await,
        }
    }
}

/// Hands the encoded row groups over; the next row group's buffer gets the room this one
/// needed.
async fn hand_over(writer: &mut ArrowWriter<AlignedBuf>, out: &mut Output) -> Result<()> {
    let buffer = writer.inner_mut();
    if buffer.is_empty() {
        return Ok(());
    }
    let capacity = buffer.len() + buffer.len() / 8;
    out.put(buffer, capacity).await
}
