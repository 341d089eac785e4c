//! The Ballista cluster, inside activator: `activator cluster scheduler` and `activator cluster
//! executor` start Ballista's scheduler and executor (the `ballista-scheduler` and
//! `ballista-executor` crates) from this binary, and `segment::context` connects a run to them
//! when the job's engine is `ballista://HOST:PORT`.
//!
//! Why in the one binary: a stock executor knows only DataFusion's built-in functions, and a
//! function a client registers is not shipped to it (plans carry functions by name). Here the
//! scheduler's sessions and the executors' function registry both hold `activator_members`
//! (`identity::udf`), so the identity transform runs on the executors, where the data is, and
//! only hashed members travel back; and the versions of client, scheduler and executor match.
//!
//! Every part reads tables through `CloudStores`, which builds an S3 store for any bucket from
//! the standard AWS environment (`AWS_ENDPOINT_URL`, keys or the task role), as the local
//! engine does.

use crate::error::{Error, Result};
use crate::identity::udf;
use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;
use url::Url;

pub use crate::segment::SCHEDULER_PORT;
/// The executor's default Flight port; its gRPC port is the next one.
pub const EXECUTOR_PORT: u16 = 50051;

/// How often executors tell the scheduler they are alive, and after how long without it the
/// scheduler takes one as lost.
const EXECUTOR_HEARTBEAT_SECONDS: u64 = 5;
const EXECUTOR_TIMEOUT_SECONDS: u64 = 20;

/// Object stores for any `s3://` bucket (from the environment) and local files, made on first
/// use: the scheduler and executors learn the tables' buckets only from the plans they get.
#[derive(Debug, Default)]
pub struct CloudStores {
    known: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for CloudStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        if url.scheme() != "s3" {
            return self.known.get_store(url);
        }
        let (store, _) = crate::storage::store_for(url)
            .map_err(|e| datafusion::common::DataFusionError::External(Box::new(e)))?;
        self.known
            .register_store(&crate::storage::store_root(url), store.clone());
        Ok(store)
    }
}

fn runtime_with_cloud_stores(builder: RuntimeEnvBuilder) -> RuntimeEnvBuilder {
    builder.with_object_store_registry(Arc::new(CloudStores::default()))
}

/// The functions activator adds to DataFusion's, for every session of the cluster.
fn functions() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    let members = udf::function();
    registry
        .scalar_functions
        .insert(members.name().to_string(), members);
    registry
}

/// A session that plans on the driver and runs on the cluster at `host:port`: the same
/// settings, memory pool and spill directory as the local engine's, plus the cluster's
/// functions and object stores.
pub async fn connect(
    host: &str,
    port: u16,
    config: SessionConfig,
    runtime: RuntimeEnvBuilder,
) -> Result<SessionContext> {
    let runtime = runtime_with_cloud_stores(runtime)
        .build_arc()
        .map_err(Error::from_datafusion)?;
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config.upgrade_for_ballista())
        .with_runtime_env(runtime)
        .with_scalar_functions(vec![udf::function()])
        .build();
    SessionContext::remote_with_state(&format!("df://{host}:{port}"), state)
        .await
        .map_err(|e| {
            Error::transient(format!(
                "cannot reach the Ballista scheduler at {host}:{port}: {e}; check that `activator cluster scheduler` runs there"
            ))
        })
}

/// Runs a scheduler on `bind:port` until the process is stopped.
pub async fn scheduler(bind: &str, port: u16) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let session_builder: ballista_scheduler::scheduler_server::SessionBuilder =
        Arc::new(|config: SessionConfig| {
            let base = ballista_core::utils::default_session_builder(config)?;
            let runtime = runtime_with_cloud_stores(RuntimeEnvBuilder::new()).build_arc()?;
            Ok(SessionStateBuilder::new_from_existing(base)
                .with_runtime_env(runtime)
                .with_scalar_functions(functions().scalar_functions.into_values().collect())
                .build())
        });
    let config = SchedulerConfig {
        bind_host: bind.to_string(),
        external_host: external_host(bind),
        bind_port: port,
        override_session_builder: Some(session_builder),
        // An executor that stops heartbeating (EXECUTOR_HEARTBEAT_SECONDS) is taken as lost
        // after this, and its tasks run again elsewhere: Ballista's 180 s would hold a night's
        // run for three minutes per lost node.
        executor_timeout_seconds: EXECUTOR_TIMEOUT_SECONDS,
        expire_dead_executor_interval_seconds: 5,
        // How long a job waits for a first executor (the nodes of a multi-node job start together).
        no_executors_grace_period_seconds: 120,
        ..SchedulerConfig::default()
    };
    let address = format!("{bind}:{port}")
        .parse()
        .map_err(|e| Error::config(format!("--bind {bind} --port {port}: {e}")))?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_error)?;
    ballista_scheduler::scheduler_process::start_server(cluster, address, Arc::new(config))
        .await
        .map_err(ballista_error)
}

/// What an executor is started with.
pub struct ExecutorSettings {
    pub scheduler_host: String,
    pub scheduler_port: u16,
    pub bind: String,
    /// The address the scheduler and other executors reach this one at.
    pub external_host: Option<String>,
    /// The Flight port (results, shuffles); the gRPC port is the next one.
    pub port: u16,
    /// Where shuffle files go; default: a folder under TMPDIR named after the port.
    pub work_dir: Option<PathBuf>,
    /// Only DataFusion's functions, as a stock Ballista executor has (to test what a run says
    /// when an executor lacks activator's).
    pub stock_functions: bool,
}

/// Runs an executor until the process is stopped or the scheduler tells it to.
pub async fn executor(settings: ExecutorSettings) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let work_dir = settings.work_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("activator-executor-{}", settings.port))
    });
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| Error::config(format!("{}: cannot create: {e}", work_dir.display())))?;
    let spill_dir = work_dir.display().to_string();
    let runtime: ballista_core::RuntimeProducer = Arc::new(move |_: &SessionConfig| {
        let runtime: RuntimeEnv =
            runtime_with_cloud_stores(RuntimeEnvBuilder::new().with_temp_file_path(&spill_dir))
                .build()?;
        Ok(Arc::new(runtime))
    });
    let registry = if settings.stock_functions {
        BallistaFunctionRegistry::default()
    } else {
        functions()
    };
    let config = ExecutorProcessConfig {
        bind_host: settings.bind.clone(),
        external_host: Some(settings.external_host.unwrap_or_else(|| {
            address_towards(
                &settings.bind,
                &settings.scheduler_host,
                settings.scheduler_port,
            )
        })),
        port: settings.port,
        grpc_port: settings.port + 1,
        scheduler_host: settings.scheduler_host,
        scheduler_port: settings.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        work_dir: Some(work_dir.display().to_string()),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: EXECUTOR_HEARTBEAT_SECONDS,
        override_function_registry: Some(Arc::new(registry)),
        override_runtime_producer: Some(runtime),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(ballista_error)
}

/// The host others reach a process bound to `bind` at: itself, unless bound to every address,
/// then `localhost` (the scheduler's own address, which clients and executors are given anyway).
fn external_host(bind: &str) -> String {
    if bind == "0.0.0.0" {
        "localhost".into()
    } else {
        bind.to_string()
    }
}

/// The address an executor bound to every address is reached at: that of the interface which
/// routes to the scheduler (on AWS Batch, the node's private address), found by connecting a
/// UDP socket, which sends nothing.
fn address_towards(bind: &str, scheduler_host: &str, scheduler_port: u16) -> String {
    if bind != "0.0.0.0" {
        return bind.to_string();
    }
    let local = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|socket| {
        socket.connect((scheduler_host, scheduler_port))?;
        socket.local_addr()
    });
    match local {
        Ok(address) => address.ip().to_string(),
        Err(_) => "localhost".into(),
    }
}

fn ballista_error(e: ballista_core::error::BallistaError) -> Error {
    Error::transient(format!("Ballista: {e}"))
}

/// An error of a query on the cluster while it gives rows. The cluster's own failures say what
/// to do: a function an executor lacks (exit 2: a stock or other-version executor), the cluster
/// unreachable or a job it could not finish (exit 3: retried). The segment's own failures on its
/// rows are classed as on the local engine, and their text is not shown either, as it may quote
/// values (`Error::while_reading_rows`).
pub fn reading_error(e: datafusion::error::DataFusionError) -> Error {
    let text = e.find_root().to_string();
    let unreachable = [
        "tonic::transport",
        "tcp connect error",
        "Connection refused",
    ];
    if unreachable.iter().any(|w| text.contains(w)) && !text.contains("Job ") {
        return Error::transient(
            "cannot reach the Ballista scheduler of the run's engine: check that `activator cluster scheduler` \
             runs there and the network between (exit 3: AWS Batch retries it)",
        );
    }
    if text.contains("failed to serialize logical plan") {
        return Error::config(
            "the segment uses what a cluster cannot be sent (a table function such as range() or \
             generate_series() in FROM, a table that is not files): write it without, or run it with \
             --engine local",
        );
    }
    // Ballista's `Job ID failed: REASON`, where the reason is the scheduler's own words for
    // what befell the job's tasks, or the text of the error a task met, which may quote a value.
    if text.starts_with("Execution error: Job ") {
        if text.contains("could not be prepared or was rejected by executor") {
            return Error::config(format!(
                "an executor of the cluster could not take the query's tasks; most often it lacks activator's \
                 functions ({}): start every executor with `activator cluster executor` of this activator's \
                 version, not a stock Ballista executor",
                udf::NAME
            ));
        }
        let lost = [
            "executor lost",
            "Executor lost",
            "lost",
            "unreachable",
            "tonic",
            "Connection",
            "fetch",
        ];
        if lost.iter().any(|w| text.contains(w)) {
            return Error::transient(
                "the cluster could not finish the query (an executor was lost or unreachable): \
                 check the executors and rerun (exit 3: AWS Batch retries it)",
            );
        }
    }
    Error::while_reading_rows(e)
}
