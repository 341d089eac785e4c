//! Destinations: where members go. Each is a folder of small files (config, encoder, writer or
//! service, sink) and its sink reads as one pipeline over a stream of member batches; batching
//! (`crate::batch`), the delivery loop with its checkpoints (`driver`), retries and rate limits
//! (`http`), secrets, job-file settings and the single-key identifiers TikTok and Snap take
//! are shared.
//!
//! A destination is a `Destination`: its config, checked from its table of the job file by the
//! parser registered for its `type` in `REGISTRY`. The job loader, the run and the deployment
//! know destinations only through the trait, so adding a platform is one folder (its config
//! implementing the trait, its request, service and sink) and one line in `REGISTRY`.

pub mod checkpoint;
pub mod driver;
pub mod export;
pub mod google;
pub mod http;
pub mod ids;
pub mod linkedin;
pub mod meta;
pub mod microsoft;
pub mod pinterest;
pub mod rest;
pub mod secrets;
pub mod settings;
pub mod snap;
pub mod tiktok;
pub mod ttd;
pub mod x;

use crate::batch::BatchLimits;
use crate::error::{Error, Result};
use crate::identity::{InputColumn, Profile};
use crate::resolve::Resolver;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use checkpoint::Checkpoint;
use chrono::NaiveDate;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::sync::Arc;

/// The destinations a job file may name, by `type`, with the parser of their table.
pub const REGISTRY: &[(&str, Parse)] = &[
    ("export", export::config::parse),
    ("meta", meta::config::parse),
    ("google", google::config::parse),
    ("tiktok", tiktok::config::parse),
    ("snap", snap::config::parse),
    ("rest", rest::config::parse),
    ("linkedin", linkedin::config::parse),
    ("pinterest", pinterest::config::parse),
    ("microsoft", microsoft::config::parse),
    ("x", x::config::parse),
    ("ttd", ttd::config::parse),
];

/// Checks a destination's table of the job file (without its `type`) into its config.
pub type Parse = fn(toml::Table, &JobContext) -> Result<Box<dyn Destination>>;

/// What a destination's parser may read of the job besides its own table.
pub struct JobContext<'a> {
    /// `destinations[2]`: prefixes the destination's keys in errors.
    pub key: String,
    /// The destination's place in the file (an unnamed export is `export`, `export1`, ...).
    pub index: usize,
    pub resolver: &'a Resolver<'a>,
    /// The job's name.
    pub job: &'a str,
    pub profile: Profile,
    pub identifiers: &'a [InputColumn],
    /// The job's consent columns.
    pub consent_columns: Vec<String>,
}

impl JobContext<'_> {
    /// A config error at `key.field` (or at the destination's key when `field` is empty).
    pub fn error(&self, field: &str, message: impl std::fmt::Display) -> Error {
        let dot = if field.is_empty() { "" } else { "." };
        Error::config(format!(
            "{}: {}{dot}{field}: {message}",
            self.resolver.at, self.key
        ))
    }

    /// The destination's table as its job-file struct (unknown keys and wrong types refused).
    pub fn table<T: serde::de::DeserializeOwned>(&self, table: toml::Table) -> Result<T> {
        T::deserialize(toml::Value::Table(table)).map_err(|e| self.error("", e.message()))
    }
}

/// The destination a job file's `[[destinations]]` table describes.
pub fn parse(mut table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    let types = || {
        REGISTRY
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = match table.remove("type") {
        Some(toml::Value::String(t)) => t,
        Some(_) => return Err(ctx.error("type", format!("a string: one of {}", types()))),
        None => return Err(ctx.error("", format!("give its `type`: one of {}", types()))),
    };
    let Some((_, parse)) = REGISTRY.iter().find(|(t, _)| *t == kind) else {
        return Err(ctx.error(
            "type",
            format!("`{kind}` is not a destination: use one of {}", types()),
        ));
    };
    parse(table, ctx)
}

/// Where a destination sends, for the deployment's checks and the job role's policy.
pub enum Target<'a> {
    /// A platform's API; `field` is the job-file key that set `url` (`base_url`).
    Api { field: &'static str, url: &'a str },
    /// Files below a folder (an export), one per run or one per batch.
    Files {
        field: &'static str,
        url: &'a url::Url,
        per_batch: bool,
        /// The files' extension (`parquet`, `csv`, `ndjson`).
        extension: &'static str,
    },
}

/// A destination: its checked settings, and how it takes a stream of members.
pub trait Destination: std::fmt::Debug + Send + Sync {
    /// Names the destination's state and its part of the report.
    fn name(&self) -> &str;

    /// How the destination is synced.
    fn sync_mode(&self) -> SyncMode;

    /// The size limits its batches are cut to.
    fn batch_limits(&self) -> BatchLimits;

    /// Sets the batch limits (a resumed run cuts its batches as it began).
    fn set_batch_limits(&mut self, limits: BatchLimits);

    /// Whether it takes the segment as it is read (exports), rather than the run's stored
    /// membership once it is read and diffed (platforms).
    fn streamed(&self) -> bool {
        false
    }

    /// For platforms that match each identifier on its own (TikTok, Snap), where an identifier
    /// in the audience may stand for several members: the kinds they are sent.
    fn single_key_kinds(&self) -> Option<Vec<ids::IdKind>> {
        None
    }

    /// Whether the platform forgets members it is not sent again (The Trade Desk's items
    /// expire after their TTL): a mirror run then adds every current member, not only those who
    /// joined, and removes those who left.
    fn renews_members(&self) -> bool {
        false
    }

    /// Where it sends.
    fn targets(&self) -> Vec<Target<'_>>;

    /// Its secret references, each with the key below the destination's that holds it.
    fn secrets(&self) -> Vec<(String, &str)> {
        vec![]
    }

    /// Whether it names `sandbox` as its platform's URL (an in-process sandbox).
    fn wants_sandbox(&self) -> bool {
        self.targets()
            .iter()
            .any(|t| matches!(t, Target::Api { url, .. } if *url == "sandbox"))
    }

    /// Points a `sandbox` destination at a running sandbox.
    fn use_sandbox(&mut self, _url: &str) {}

    /// Drives the destination over the member stream until it ends; an `Err` item means the
    /// run failed upstream, and the destination must leave nothing half-done.
    fn deliver<'a>(
        &'a self,
        run: &'a RunInfo,
        schema: SchemaRef,
        members: BoxStream<'static, Result<RecordBatch>>,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<SinkReport>>;

    fn clone_box(&self) -> Box<dyn Destination>;
}

/// The methods every platform's config implements alike, from its `name`, `sync` and `batch`
/// fields: inside an `impl Destination` block, `crate::destinations::config_basics!();`.
macro_rules! config_basics {
    () => {
        fn name(&self) -> &str {
            &self.name
        }

        fn sync_mode(&self) -> $crate::destinations::SyncMode {
            self.sync
        }

        fn batch_limits(&self) -> $crate::batch::BatchLimits {
            self.batch
        }

        fn set_batch_limits(&mut self, limits: $crate::batch::BatchLimits) {
            self.batch = limits;
        }

        fn clone_box(&self) -> Box<dyn $crate::destinations::Destination> {
            Box::new(self.clone())
        }
    };
}
pub(crate) use config_basics;

/// What a platform destination that calls one API at `base_url` (with `in_process_sandbox`)
/// implements alike: that target, its switch to the in-process sandbox, and its delivery by its
/// folder's `sink::run`.
macro_rules! one_api_basics {
    () => {
        fn targets(&self) -> Vec<$crate::destinations::Target<'_>> {
            vec![$crate::destinations::Target::Api {
                field: "base_url",
                url: &self.base_url,
            }]
        }

        fn use_sandbox(&mut self, url: &str) {
            $crate::destinations::settings::use_sandbox(
                &mut self.base_url,
                &mut self.in_process_sandbox,
                url,
            );
        }

        fn deliver<'a>(
            &'a self,
            run: &'a $crate::destinations::RunInfo,
            schema: ::arrow::datatypes::SchemaRef,
            members: ::futures::stream::BoxStream<
                'static,
                $crate::error::Result<::arrow::array::RecordBatch>,
            >,
            delivery: &'a $crate::destinations::Delivery,
        ) -> ::futures::future::BoxFuture<'a, $crate::error::Result<$crate::destinations::SinkReport>>
        {
            Box::pin(super::sink::run(self, run, schema, members, delivery))
        }
    };
}
pub(crate) use one_api_basics;

impl Clone for Box<dyn Destination> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// How a destination is synced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Send every member of the segment.
    #[default]
    Add,
    /// Send those who joined since the last sync and remove those who left.
    Mirror,
    /// The platform's full replace: the audience becomes the segment.
    Replace,
    /// Remove the segment's members (no state kept).
    Remove,
}

impl SyncMode {
    /// The mode a job file names (after `${VAR}` interpolation); `add` when it names none.
    pub fn resolve(raw: Option<&str>, key: &str, r: &Resolver) -> Result<SyncMode> {
        let Some(raw) = raw else {
            return Ok(SyncMode::Add);
        };
        match r.interpolate(raw, key)?.trim() {
            "add" => Ok(SyncMode::Add),
            "mirror" => Ok(SyncMode::Mirror),
            "replace" => Ok(SyncMode::Replace),
            "remove" => Ok(SyncMode::Remove),
            other => Err(Error::config(format!(
                "{}: {key}: `{other}` is not a sync mode: use add, mirror, replace or remove",
                r.at
            ))),
        }
    }
}

/// The `chrono` format of the time a run id begins with (`20261125T021500Z`).
pub const RUN_ID_TIME: &str = "%Y%m%dT%H%M%SZ";

/// What a run tells its destinations.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub job: String,
    pub run_date: NaiveDate,
    /// Unique per attempt; names staging areas: the UTC time it started (`RUN_ID_TIME`), `-`,
    /// and 12 random lower-case hex digits.
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

impl SinkReport {
    /// Adds what one step of a sync (its removes, or its adds) delivered: counts summed, outputs
    /// named once.
    pub fn add_step(&mut self, step: SinkReport) {
        self.batches += step.batches;
        self.rows += step.rows;
        self.requests += step.requests;
        self.retries += step.retries;
        self.resumed_batches += step.resumed_batches;
        self.platform_invalid += step.platform_invalid;
        self.not_sent += step.not_sent;
        self.platform_invalid_samples
            .extend(step.platform_invalid_samples);
        for o in step.outputs {
            if !self.outputs.contains(&o) {
                self.outputs.push(o);
            }
        }
    }
}

impl SyncMode {
    /// Whether a run makes the audience the segment (mirror, replace), so that which sync it
    /// starts from and which date it is matter: an add or remove sends the same whatever came
    /// before.
    pub fn sets_the_audience(self) -> bool {
        matches!(self, SyncMode::Mirror | SyncMode::Replace)
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Add => "add",
            SyncMode::Mirror => "mirror",
            SyncMode::Replace => "replace",
            SyncMode::Remove => "remove",
        })
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
