//! One export file in an object store, written as a stream and visible only when complete.
//!
//! Files go up as multipart uploads: S3 shows an object only when its upload completes, and the
//! local store writes a hidden staging file that it renames on completion and removes when the
//! writer is dropped. So a failed or killed run leaves no partial file under the final name.

use super::encoder;
use crate::error::Result;
use crate::job::ExportFormat;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub enum FileWriter {
    Parquet(Box<AsyncArrowWriter<BufWriter>>),
    Text {
        out: BufWriter,
        format: ExportFormat,
        buf: Vec<u8>,
        first: bool,
    },
}

impl FileWriter {
    pub fn create(
        store: Arc<dyn ObjectStore>,
        path: Path,
        format: ExportFormat,
        schema: SchemaRef,
    ) -> Result<FileWriter> {
        let out = BufWriter::with_capacity(store, path, 16 * 1024 * 1024);
        Ok(match format {
            ExportFormat::Parquet => FileWriter::Parquet(Box::new(AsyncArrowWriter::try_new(
                out,
                schema.clone(),
                Some(encoder::parquet_properties(&schema)),
            )?)),
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
            FileWriter::Parquet(w) => w.write(batch).await?,
            FileWriter::Text {
                out,
                format,
                buf,
                first,
            } => {
                encoder::encode_text(*format, batch, *first, buf)?;
                *first = false;
                out.write_all(buf)
                    .await
                    .map_err(|e| crate::error::Error::transient(format!("writing export: {e}")))?;
            }
        }
        Ok(())
    }

    /// Completes the upload: the file appears under its name.
    pub async fn commit(self) -> Result<()> {
        match self {
            FileWriter::Parquet(w) => {
                w.close().await?;
            }
            FileWriter::Text { mut out, .. } => {
                out.shutdown().await.map_err(|e| {
                    crate::error::Error::transient(format!("completing export: {e}"))
                })?;
            }
        }
        Ok(())
    }
}
