//! Segments: SQL files rendered for a run date, planned against the job's tables, run as a
//! stream of RecordBatches.
//!
//! Templates are minijinja with strict undefined values, so a misspelt variable is an error
//! with its line rather than an empty string in the SQL. Available: `run_date` (`YYYY-MM-DD`),
//! `run_date_nodash`, `vars.NAME` (the job's `[vars]`, also as plain `NAME`), and the filters
//! `add_days(n)` and `add_months(n)` on dates: `{{ run_date | add_days(-30) }}`.

use crate::error::{Error, ErrorClass, Result};
use crate::identity::Kind;
use crate::job::{Job, TableFormat};
use crate::storage;
use chrono::{Months, NaiveDate};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Where a segment's query runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// In this process (DataFusion).
    #[default]
    Local,
    /// On a Ballista cluster, whose scheduler is at `host:port`.
    Cluster { host: String, port: u16 },
}

/// Ballista's scheduler port, the default of `ballista://HOST`.
pub const SCHEDULER_PORT: u16 = 50050;

impl Engine {
    /// `local` or `ballista://HOST[:PORT]`.
    pub fn parse(s: &str) -> std::result::Result<Engine, String> {
        if s == "local" {
            return Ok(Engine::Local);
        }
        let expected = "expected `local` or `ballista://HOST:PORT`";
        let rest = s
            .strip_prefix("ballista://")
            .ok_or_else(|| format!("`{s}`: {expected}"))?;
        let url = url::Url::parse(&format!("http://{rest}"))
            .map_err(|e| format!("`{s}`: {e}; {expected}"))?;
        let host = url.host_str().filter(|h| !h.is_empty());
        match host {
            Some(host)
                if url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && !rest.contains('/') =>
            {
                Ok(Engine::Cluster {
                    host: host.to_string(),
                    port: url.port().unwrap_or(SCHEDULER_PORT),
                })
            }
            _ => Err(format!("`{s}`: {expected}")),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Local => f.write_str("local"),
            Engine::Cluster { host, port } => write!(f, "ballista://{host}:{port}"),
        }
    }
}

/// Renders the segment's SQL for `run_date`.
pub fn render(job: &Job, run_date: NaiveDate) -> Result<String> {
    let at = job.segment_path.display().to_string();
    let source = std::fs::read_to_string(&job.segment_path)
        .map_err(|e| Error::config(format!("{at}: cannot read: {e}")))?;
    render_text(&at, &source, run_date, &job.vars)
}

pub fn render_text(
    at: &str,
    source: &str,
    run_date: NaiveDate,
    vars: &BTreeMap<String, toml::Value>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter(
        "add_days",
        |date: String, days: i64| -> Result<String, minijinja::Error> {
            let d = parse_date(&date)?;
            let shifted = d
                .checked_add_signed(chrono::Duration::days(days))
                .ok_or_else(|| template_error("date out of range"))?;
            Ok(shifted.to_string())
        },
    );
    env.add_filter(
        "add_months",
        |date: String, months: i32| -> Result<String, minijinja::Error> {
            let d = parse_date(&date)?;
            let shifted = if months >= 0 {
                d.checked_add_months(Months::new(months as u32))
            } else {
                d.checked_sub_months(Months::new(months.unsigned_abs()))
            };
            Ok(shifted
                .ok_or_else(|| template_error("date out of range"))?
                .to_string())
        },
    );
    env.add_template("segment", source)
        .map_err(|e| template_failure(at, &e))?;
    let mut ctx: BTreeMap<String, minijinja::Value> = BTreeMap::new();
    let vars_value = minijinja::Value::from_serialize(vars);
    for (k, v) in vars {
        ctx.insert(k.clone(), minijinja::Value::from_serialize(v));
    }
    ctx.insert("vars".into(), vars_value);
    ctx.insert("run_date".into(), run_date.to_string().into());
    ctx.insert(
        "run_date_nodash".into(),
        run_date.format("%Y%m%d").to_string().into(),
    );
    let tmpl = env
        .get_template("segment")
        .map_err(|e| template_failure(at, &e))?;
    tmpl.render(ctx).map_err(|e| template_failure(at, &e))
}

fn parse_date(s: &str) -> Result<NaiveDate, minijinja::Error> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| template_error(&format!("`{s}` is not a date (YYYY-MM-DD)")))
}

fn template_error(msg: &str) -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg.to_string())
}

fn template_failure(at: &str, e: &minijinja::Error) -> Error {
    let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    Error::config(format!(
        "{at}{line}: template error: {}{detail} (available: run_date, run_date_nodash, vars.NAME; filters add_days, add_months)",
        e.kind()
    ))
}

/// The spill files a sort merges in one pass.
const SPILL_MERGE_FAN_IN: usize = 16;

/// A DataFusion session with the job's tables registered, whose operators share a memory pool
/// of the run's budget (`crate::memory`; the session's `runtime_env().memory_pool`) and spill
/// to `TMPDIR` beyond it.
///
/// On a cluster (`Engine::Cluster`), the query is planned here and run on the cluster's
/// executors (`crate::cluster`); the memory pool is then the driver's, for what it reads back.
pub async fn context(
    job: &Job,
    engine: &Engine,
    budget: &crate::memory::Budget,
) -> Result<SessionContext> {
    let (config, runtime) = session_settings(engine, budget)?;
    let ctx = match engine {
        Engine::Local => SessionContext::new_with_config_rt(
            config,
            runtime.build_arc().map_err(Error::from_datafusion)?,
        ),
        Engine::Cluster { host, port } => connect(host, *port, config, runtime).await?,
    };
    register_tables(&ctx, job).await?;
    Ok(ctx)
}

#[cfg(feature = "cluster")]
async fn connect(
    host: &str,
    port: u16,
    config: SessionConfig,
    runtime: RuntimeEnvBuilder,
) -> Result<SessionContext> {
    crate::cluster::connect(host, port, config, runtime).await
}

#[cfg(not(feature = "cluster"))]
async fn connect(
    host: &str,
    port: u16,
    _: SessionConfig,
    _: RuntimeEnvBuilder,
) -> Result<SessionContext> {
    Err(Error::config(format!(
        "engine ballista://{host}:{port}: this activator was built without the cluster (cargo feature `cluster`); \
         build it with default features, or run with --engine local"
    )))
}

/// The partitions a query is cut into on a cluster, unless DATAFUSION_EXECUTION_TARGET_PARTITIONS
/// says: enough for a few executors' cores.
const CLUSTER_PARTITIONS: usize = 16;

/// Rows of a batch: DataFusion's default, which its sorts, aggregates and joins hold and spill
/// within the memory budget.
const BATCH_ROWS: usize = 8192;

/// Rows of a batch of a segment that only streams (`only_streams`) on the local engine. Four
/// times the default: B1's export (10 million customers) took 2.86-3.02 s against 3.11-3.58 s
/// in five alternating pairs, and peaked at 564-603 MiB against 454-497 MiB. 16,384 rows took
/// 3.12-3.20 s; 65,536 rows gained nothing more (2.93-2.96 s) and peaked at 675-752 MiB.
const STREAMING_BATCH_ROWS: usize = 32 * 1024;

/// Runs a segment's query in this process, as a stream of batches. A plan that only scans,
/// filters and projects holds a few batches at a time, so it reads `STREAMING_BATCH_ROWS` at a
/// time. (B1's profile has the same shape at either size, the deduplication set's inserts a
/// point smaller: what a batch costs beyond its rows is spread thin over the scan, the hand-over
/// to the transform's threads and the transform.) Other plans keep the session's batch size,
/// whose memory their operators account for: at 32,768 rows, a DISTINCT and ORDER BY over B1 on
/// 30 million customers no longer fitted a 1 GiB budget (`benches/memory_budget.sh`).
/// DATAFUSION_EXECUTION_BATCH_SIZE, when set, applies to every plan.
pub async fn execute_local(
    df: DataFrame,
) -> datafusion::error::Result<datafusion::physical_plan::SendableRecordBatchStream> {
    let (state, logical) = df.into_parts();
    let plan = state.create_physical_plan(&logical).await?;
    let mut config = state.config().clone();
    if std::env::var_os("DATAFUSION_EXECUTION_BATCH_SIZE").is_none() && only_streams(&plan) {
        config = config.with_batch_size(STREAMING_BATCH_ROWS);
    }
    let task = datafusion::execution::TaskContext::from(&state).with_session_config(config);
    datafusion::physical_plan::execute_stream(plan, Arc::new(task))
}

/// Whether every operator of `plan` passes batches on as they come, holding none back: scans,
/// filters, projections, limits, unions, and the operators that move batches between
/// partitions. Operators are told by name, so one not listed here (a new operator, or one
/// DataFusion renames) keeps the session's smaller batches: the side the memory budget is set for.
fn only_streams(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> bool {
    const STREAMING: [&str; 10] = [
        "DataSourceExec",
        "FilterExec",
        "ProjectionExec",
        "CoalesceBatchesExec",
        "CoalescePartitionsExec",
        "RepartitionExec",
        "LocalLimitExec",
        "GlobalLimitExec",
        "UnionExec",
        "EmptyExec",
    ];
    STREAMING.contains(&plan.name()) && plan.children().into_iter().all(only_streams)
}

/// The session's settings and runtime (memory pool, spill directory) for the engine.
fn session_settings(
    engine: &Engine,
    budget: &crate::memory::Budget,
) -> Result<(SessionConfig, RuntimeEnvBuilder)> {
    let threads = match engine {
        Engine::Local => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        Engine::Cluster { .. } => CLUSTER_PARTITIONS,
    };
    // DataFusion's own settings may be tuned from the environment (`DATAFUSION_EXECUTION_*`,
    // such as DATAFUSION_EXECUTION_TARGET_PARTITIONS); what activator sets below applies where
    // the environment does not say.
    let mut config = SessionConfig::from_env()
        .map_err(|e| Error::config(format!("a DATAFUSION_* environment variable: {e}")))?
        .with_information_schema(false);
    let unset = |name: &str| std::env::var(name).is_err();
    if unset("DATAFUSION_EXECUTION_TARGET_PARTITIONS") {
        config = config.with_target_partitions(threads);
    }
    if unset("DATAFUSION_EXECUTION_BATCH_SIZE") {
        config = config.with_batch_size(BATCH_ROWS);
    }
    parquet_reading(&mut config, &unset);
    // A sort keeps this much back for merging its spill files, per partition (10 MiB by
    // default): within a small budget, less, so the reservations leave room to sort at all.
    let pool_bytes = budget.pool_bytes();
    if unset("DATAFUSION_EXECUTION_SORT_SPILL_RESERVATION_BYTES") {
        config.options_mut().execution.sort_spill_reservation_bytes =
            (pool_bytes / (8 * config.target_partitions())).min(10 << 20);
    }
    // A sort merging its spill files reserves room for as many as the pool allows, all at once
    // (one merge took 420 MB of a 614 MB pool while the other partition still sorted, which then
    // failed); at most `SPILL_MERGE_FAN_IN` at a time, in more passes, leaves room for the rest.
    let disk = datafusion::execution::disk_manager::DiskManagerBuilder::default()
        .with_max_spill_merge_fan_in(SPILL_MERGE_FAN_IN);
    let runtime = RuntimeEnvBuilder::new()
        .with_disk_manager_builder(disk)
        .with_memory_pool(budget.pool());
    Ok((config, runtime))
}

/// How Parquet is read, where the environment (`unset` says which variables it does not set)
/// does not say otherwise.
fn parquet_reading(config: &mut SessionConfig, unset: &dyn Fn(&str) -> bool) {
    let parquet = &mut config.options_mut().execution.parquet;
    // Evaluate the segment's filters while decoding Parquet, so PII columns of rows the
    // segment drops are never decoded.
    if unset("DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS") {
        parquet.pushdown_filters = true;
    }
    if unset("DATAFUSION_EXECUTION_PARQUET_REORDER_FILTERS") {
        parquet.reorder_filters = true;
    }
    // Strings as plain Utf8, not DataFusion's default views: B1 on 30 million customers is as
    // fast (13.6 s against 14.4 s) and smaller (1,047 MiB against 1,146 MiB at the peak), and a
    // sort that spills counts views by the buffers they point into, which its merges share: a
    // DISTINCT and ORDER BY over that segment asked for 88 MB to hold one batch of 8,192 rows.
    if unset("DATAFUSION_EXECUTION_PARQUET_SCHEMA_FORCE_VIEW_TYPES") {
        parquet.schema_force_view_types = false;
    }
}

/// Registers the job's tables (and the object stores they are in) with the session.
async fn register_tables(ctx: &SessionContext, job: &Job) -> Result<()> {
    let mut registered = HashSet::new();
    let at = job.path.display().to_string();
    for table in &job.tables {
        let root = storage::store_root(&table.url);
        if registered.insert(root.clone()) {
            let (store, _) = storage::store_for(&table.url)?;
            ctx.register_object_store(&root, store);
        }
        let options = match table.format {
            TableFormat::Parquet => ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet"),
            TableFormat::Csv => {
                ListingOptions::new(Arc::new(CsvFormat::default().with_has_header(true)))
                    .with_file_extension(".csv")
            }
        }
        .with_table_partition_cols(
            table
                .partitions
                .iter()
                .map(|p| (p.clone(), DataType::Utf8))
                .collect(),
        );
        ctx.register_listing_table(&table.name, table.url.as_str(), options, None, None)
            .await
            .map_err(|e| {
                let e = Error::from_datafusion(e);
                let hint = if e.class == ErrorClass::Transient {
                    "; check the endpoint (AWS_ENDPOINT_URL), the network and the credentials"
                } else {
                    "; check the url and that the folder holds files of the table's format"
                };
                Error {
                    class: e.class,
                    message: format!(
                        "{at}: table `{}` at {}: {}{hint}",
                        table.name, table.url, e.message
                    ),
                }
            })?;
    }
    Ok(())
}

/// Plans the rendered SQL and checks that the job's columns are in its result with usable types.
pub async fn plan(ctx: &SessionContext, job: &Job, sql: &str) -> Result<DataFrame> {
    let at = job.segment_path.display().to_string();
    let df = ctx.sql(sql).await.map_err(|e| {
        let e = Error::from_datafusion(e);
        Error {
            class: e.class,
            message: format!("{at}: {}", e.message),
        }
    })?;
    check_columns(job, df.schema().as_arrow())?;
    Ok(df)
}

fn check_columns(job: &Job, schema: &Schema) -> Result<()> {
    let at = job.path.display();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let find = |key: String, column: &str| {
        schema.field_with_name(column).map_err(|_| {
            Error::config(format!(
                "{at}: {key}: the segment {} returns no column `{column}`; it returns {}",
                job.segment_path.display(),
                names.join(", ")
            ))
        })
    };
    for input in &job.identifiers {
        let field = find(format!("identifiers.{}", input.kind), &input.column)?;
        let dt = field.data_type();
        let is_string = matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let ok = is_string
            || match input.kind {
                Kind::DateOfBirth => matches!(
                    dt,
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
                ),
                Kind::ExternalId => dt.is_integer(),
                _ => false,
            };
        if !ok {
            return Err(Error::config(format!(
                "{at}: identifiers.{}: column `{}` is {dt}, expected a string{}; cast it in {} (CAST({} AS VARCHAR))",
                input.kind,
                input.column,
                match input.kind {
                    Kind::DateOfBirth => " or a date",
                    Kind::ExternalId => " or an integer",
                    _ => "",
                },
                job.segment_path.display(),
                input.column
            )));
        }
    }
    for (role, column) in &job.consent {
        let field = find(format!("consent.{}", role.name()), column)?;
        if field.data_type() != &DataType::Boolean {
            return Err(Error::config(format!(
                "{at}: consent.{}: column `{column}` is {}, expected a boolean",
                role.name(),
                field.data_type()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_engine_is_local_or_a_cluster_scheduler_by_host_and_port() {
        assert_eq!(Engine::parse("local"), Ok(Engine::Local));
        assert_eq!(
            Engine::parse("ballista://10.0.0.5:50060"),
            Ok(Engine::Cluster {
                host: "10.0.0.5".into(),
                port: 50060
            })
        );
        assert_eq!(
            Engine::parse("ballista://scheduler").unwrap().to_string(),
            "ballista://scheduler:50050"
        );
        for bad in [
            "",
            "Local",
            "df://x:1",
            "ballista://",
            "ballista://h:1/path",
            "ballista://u@h:1",
            "ballista://h:99999",
            "ballista://h:1?x=1",
        ] {
            let err = Engine::parse(bad).unwrap_err();
            assert!(err.contains("ballista://HOST:PORT"), "{bad}: {err}");
        }
    }

    /// The largest batch `sql` gives over a Parquet table `t` of 100,000 rows (`a`: 0..100,000),
    /// in a session of activator's batch size.
    async fn largest_batch(sql: &str) -> usize {
        use arrow::array::{Int64Array, RecordBatch};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let a = Int64Array::from_iter_values(0..100_000);
        let batch = RecordBatch::try_from_iter([("a", Arc::new(a) as _)]).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let mut config = SessionConfig::new().with_batch_size(BATCH_ROWS);
        parquet_reading(&mut config, &|_| true);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_parquet("t", path.to_str().unwrap(), Default::default())
            .await
            .unwrap();
        let stream = execute_local(ctx.sql(sql).await.unwrap()).await.unwrap();
        let batches: Vec<_> = futures::TryStreamExt::try_collect(stream).await.unwrap();
        batches.iter().map(|b| b.num_rows()).max().unwrap()
    }

    #[tokio::test]
    async fn segments_that_only_stream_read_larger_batches_and_others_keep_the_budgeted_size() {
        for streams in [
            "SELECT a FROM t",
            "SELECT a * 2 AS b FROM t WHERE a % 3 <> 0",
            "SELECT a FROM t WHERE a >= 10 UNION ALL SELECT a FROM t WHERE a < 10",
        ] {
            let rows = largest_batch(streams).await;
            assert!(
                rows > BATCH_ROWS && rows <= STREAMING_BATCH_ROWS,
                "{streams}: {rows}"
            );
        }
        for holds in [
            "SELECT a FROM t ORDER BY a DESC",
            "SELECT DISTINCT a FROM t",
            "SELECT a, count(*) AS n FROM t GROUP BY a",
            "SELECT x.a FROM t x JOIN t y ON x.a = y.a",
        ] {
            let rows = largest_batch(holds).await;
            assert!(rows <= BATCH_ROWS, "{holds}: {rows}");
        }
    }

    #[test]
    fn parquet_settings_the_environment_gives_stand() {
        let defaults = SessionConfig::new();
        let mut ours = SessionConfig::new();
        parquet_reading(&mut ours, &|_| true);
        let parquet = &ours.options().execution.parquet;
        assert!(parquet.pushdown_filters && parquet.reorder_filters);
        assert!(!parquet.schema_force_view_types);
        // Every one of them set in the environment (here, to DataFusion's defaults): kept.
        let mut theirs = SessionConfig::new();
        parquet_reading(&mut theirs, &|name| {
            !name.starts_with("DATAFUSION_EXECUTION_PARQUET_")
        });
        let (parquet, default) = (
            &theirs.options().execution.parquet,
            &defaults.options().execution.parquet,
        );
        assert_eq!(parquet.pushdown_filters, default.pushdown_filters);
        assert_eq!(parquet.reorder_filters, default.reorder_filters);
        assert_eq!(
            parquet.schema_force_view_types,
            default.schema_force_view_types
        );
        assert_ne!(
            parquet.pushdown_filters,
            ours.options().execution.parquet.pushdown_filters
        );
    }

    #[test]
    fn renders_run_date_windows_and_vars() {
        let mut vars = BTreeMap::new();
        vars.insert("min_value".to_string(), toml::Value::Integer(100));
        let sql = render_text(
            "s.sql",
            "dt = '{{ run_date }}' AND d >= '{{ run_date | add_days(-30) }}' AND m >= '{{ run_date | add_months(-1) }}' AND v >= {{ vars.min_value }} AND w >= {{ min_value }} -- {{ run_date_nodash }}",
            date("2026-03-31"),
            &vars,
        )
        .unwrap();
        assert_eq!(
            sql,
            "dt = '2026-03-31' AND d >= '2026-03-01' AND m >= '2026-02-28' AND v >= 100 AND w >= 100 -- 20260331"
        );
    }

    #[test]
    fn undefined_variable_names_the_file_and_line() {
        let err = render_text(
            "sql/x.sql",
            "SELECT 1\nWHERE dt = '{{ run_dat }}'",
            date("2026-01-01"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.message.starts_with("sql/x.sql:2: "), "{}", err.message);
        assert_eq!(err.class, ErrorClass::Config);
    }
}
