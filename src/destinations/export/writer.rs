//! One export file in an object store, written as a stream and visible only when complete.
//!
//! Files go up as multipart uploads: S3 shows an object only when its upload completes. Local
//! files are written past the page cache (`direct`) into a hidden staging file, renamed on
//! completion and removed when the writer is dropped. So a failed or killed run leaves no
//! partial file under the final name.
//!
//! Parquet is encoded by the synchronous `ArrowWriter` into a buffer that is handed to the
//! upload whole at each row group, without a copy (`BufWriter::put`; a local file copies it
//! into its aligned buffer). parquet's own
//! `AsyncArrowWriter` regrows its buffer from nothing for every row group and copies it into
//! the upload: a tenth of an export's CPU went to those copies and their page faults.

use super::config::ExportFormat;
use super::direct::DirectFile;
use super::encoder;
use crate::error::Result;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub enum FileWriter {
    Parquet {
        writer: Box<ArrowWriter<Vec<u8>>>,
        out: Output,
    },
    Text {
        out: Output,
        format: ExportFormat,
        buf: Vec<u8>,
        first: bool,
    },
}

/// Where a file's bytes go: an object store's upload, or a local file.
pub enum Output {
    Store(BufWriter),
    Local(DirectFile),
}

impl Output {
    /// A local file for a path of the local filesystem, an upload otherwise.
    fn create(store: Arc<dyn ObjectStore>, path: Path, local: Option<PathBuf>) -> Result<Output> {
        Ok(match local {
            Some(file) => Output::Local(DirectFile::create(file)?),
            None => Output::Store(BufWriter::with_capacity(store, path, 16 * 1024 * 1024)),
        })
    }

    async fn put(&mut self, bytes: Bytes) -> Result<()> {
        match self {
            Output::Store(out) => out.put(bytes).await?,
            Output::Local(file) => file.put(bytes).await?,
        }
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        match self {
            Output::Store(mut out) => out
                .shutdown()
                .await
                .map_err(|e| crate::error::Error::transient(format!("completing export: {e}"))),
            Output::Local(file) => file.commit().await,
        }
    }

    async fn abort(self) -> Result<()> {
        match self {
            Output::Store(mut out) => out.abort().await?,
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
                    Vec::new(),
                    schema.clone(),
                    Some(encoder::parquet_properties(&schema)),
                )?),
                out,
            },
            ExportFormat::Csv | ExportFormat::Ndjson => FileWriter::Text {
                out,
                format,
                buf: Vec::new(),
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
                // The encoded bytes go as they are; the next batch is encoded into a new buffer
                // of the same size.
                let next = Vec::with_capacity(buf.len());
                out.put(Bytes::from(std::mem::replace(buf, next))).await?;
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
            FileWriter::Parquet {
                mut writer,
                mut out,
            } => {
                writer.finish()?;
                hand_over(&mut writer, &mut out).await?;
                out.commit().await
            }
            FileWriter::Text { out, .. } => out.commit().await,
        }
    }
}

/// Hands the encoded row groups to the upload. The next row group's buffer gets the room this
/// one needed up front, so it is not copied through a chain of reallocations as it grows.
async fn hand_over(writer: &mut ArrowWriter<Vec<u8>>, out: &mut Output) -> Result<()> {
    let buffer = writer.inner_mut();
    if buffer.is_empty() {
        return Ok(());
    }
    let next = Vec::with_capacity(buffer.len() + buffer.len() / 8);
    let full = std::mem::replace(buffer, next);
    out.put(Bytes::from(full)).await?;
    Ok(())
}
