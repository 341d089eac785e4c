//! The `type = "export"` destination in a job file: a folder (`s3://` or a path) that takes the
//! segment's hashed members as files, one per run or one per batch.

use crate::batch::{BatchFile, BatchLimits};
use crate::destinations::{
    Delivery, Destination, JobContext, RunInfo, SinkReport, SyncMode, Target,
};
use crate::error::Result;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Deserialize;
use url::Url;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    #[default]
    Parquet,
    Csv,
    Ndjson,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportLayout {
    /// One file for the whole run.
    #[default]
    PerRun,
    /// One file per batch.
    PerBatch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub format: ExportFormat,
    #[serde(default)]
    pub layout: ExportLayout,
    #[serde(default)]
    pub batch: BatchFile,
}

#[derive(Clone, Debug)]
pub struct Export {
    pub name: String,
    /// A folder: files are written below it.
    pub url: Url,
    pub format: ExportFormat,
    pub layout: ExportLayout,
    pub batch: BatchLimits,
}

/// Rows of an export's batch (a file, in the per-batch layout) when the job does not say.
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    let file: ExportFile = ctx.table(table)?;
    let key = &ctx.key;
    let url = ctx
        .resolver
        .location(&file.url, &format!("{key}.url"), true)?;
    let batch = BatchLimits {
        max_rows: file.batch.max_rows.unwrap_or(DEFAULT_MAX_ROWS),
        max_bytes: file.batch.max_bytes.unwrap_or(usize::MAX),
    };
    if batch.max_rows == 0 || batch.max_bytes == 0 {
        return Err(ctx.error("batch", "max_rows and max_bytes must be positive"));
    }
    let name = match &file.name {
        Some(n) => ctx.resolver.interpolate(n, &format!("{key}.name"))?,
        None if ctx.index == 0 => "export".to_string(),
        None => format!("export{}", ctx.index),
    };
    Ok(Box::new(Export {
        name,
        url,
        format: file.format,
        layout: file.layout,
        batch,
    }))
}

impl Destination for Export {
    fn name(&self) -> &str {
        &self.name
    }

    /// Exports write the whole segment.
    fn sync_mode(&self) -> SyncMode {
        SyncMode::Add
    }

    fn batch_limits(&self) -> BatchLimits {
        self.batch
    }

    fn set_batch_limits(&mut self, limits: BatchLimits) {
        self.batch = limits;
    }

    fn streamed(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<Target<'_>> {
        vec![Target::Files {
            field: "url",
            url: &self.url,
            per_batch: self.layout == ExportLayout::PerBatch,
            extension: self.format.extension(),
        }]
    }

    fn deliver<'a>(
        &'a self,
        run: &'a RunInfo,
        schema: SchemaRef,
        members: BoxStream<'static, Result<RecordBatch>>,
        _delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<SinkReport>> {
        Box::pin(super::sink::run(self, run, schema, members))
    }

    fn clone_box(&self) -> Box<dyn Destination> {
        Box::new(self.clone())
    }
}
