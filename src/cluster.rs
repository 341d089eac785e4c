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
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
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
        .with_config(static_planner(config.upgrade_for_ballista()))
        .with_runtime_env(runtime)
        .with_scalar_functions(vec![udf::function()])
        .build();
    // Nothing connects yet: the first query does (`reading_error` tells its failures).
    SessionContext::remote_with_state(&format!("df://{host}:{port}"), state)
        .await
        .map_err(|e| Error::config(format!("engine ballista://{host}:{port}: {e}")))
}

/// Jobs planned whole before they run, not adaptively (Ballista's default since 55). The
/// adaptive planner's recovery from a lost executor is new and races: a run whose executor was
/// killed mid-query (the test `an_executor_killed_mid_query_loses_nothing_and_delivers_nothing_twice`)
/// hung for good after the scheduler logged "Can't find active stage to update stage outputs"
/// (raised only in its `state/aqe/planner.rs`; apache/datafusion-ballista#2150 is one such race,
/// still open). The static planner's rollback and resubmission of lost stages date from 2022. It
/// loses the partition counts and joins chosen from runtime statistics: a night that ends is worth
/// more than one that might be faster.
fn static_planner(config: SessionConfig) -> SessionConfig {
    config.with_ballista_adaptive_query_planner(false)
}

/// A scheduler running in this process: it serves until the process ends, and says how many
/// executors have registered with it.
pub struct Scheduler {
    server:
        ballista_scheduler::scheduler_server::SchedulerServer<LogicalPlanNode, PhysicalPlanNode>,
    serving: tokio::task::JoinHandle<ballista_core::error::Result<()>>,
}

/// How long a finished job's result stays on the executors for the driver to fetch: the driver
/// reads it as it goes, for as long as deduplicating and (with `send_adds_while_reading`)
/// sending take. Ballista's 300 s would delete a large segment's last partitions before the
/// driver reached them, and every retry would fail alike.
const RESULT_KEPT_SECONDS: u64 = 12 * 3600;

/// Starts a scheduler on `bind:port`.
pub async fn start_scheduler(bind: &str, port: u16) -> Result<Scheduler> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let config = SchedulerConfig {
        bind_host: bind.to_string(),
        external_host: external_host(bind),
        bind_port: port,
        override_session_builder: Some(scheduler_sessions()),
        finished_job_data_clean_up_interval_seconds: RESULT_KEPT_SECONDS,
        // An executor that stops heartbeating (EXECUTOR_HEARTBEAT_SECONDS) is taken as lost
        // after this, and its tasks run again elsewhere: Ballista's 180 s would hold a night's
        // run for three minutes per lost node.
        executor_timeout_seconds: EXECUTOR_TIMEOUT_SECONDS,
        expire_dead_executor_interval_seconds: 5,
        ..SchedulerConfig::default()
    };
    let address: std::net::SocketAddr = format!("{bind}:{port}")
        .parse()
        .map_err(|e| Error::config(format!("--bind {bind} --port {port}: {e}")))?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_error)?;
    let server = ballista_scheduler::scheduler_process::create_scheduler::<
        LogicalPlanNode,
        PhysicalPlanNode,
    >(cluster, Arc::new(config))
    .await
    .map_err(ballista_error)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::config(format!("--bind {bind} --port {port}: {e}")))?;
    let serving = tokio::spawn(
        ballista_scheduler::scheduler_process::start_grpc_service_with_listener(
            listener,
            server.clone(),
        ),
    );
    Ok(Scheduler { server, serving })
}

/// The scheduler's sessions: Ballista's, with activator's functions and object stores.
fn scheduler_sessions() -> ballista_scheduler::scheduler_server::SessionBuilder {
    Arc::new(|config: SessionConfig| {
        let base = ballista_core::utils::default_session_builder(config)?;
        let runtime = runtime_with_cloud_stores(RuntimeEnvBuilder::new()).build_arc()?;
        Ok(SessionStateBuilder::new_from_existing(base)
            .with_runtime_env(runtime)
            .with_scalar_functions(functions().scalar_functions.into_values().collect())
            .build())
    })
}

impl Scheduler {
    /// Serves until the process is stopped.
    pub async fn serve(mut self) -> Result<()> {
        let serving = std::mem::replace(&mut self.serving, tokio::spawn(async { Ok(()) }));
        match serving.await {
            Ok(served) => served.map_err(ballista_error),
            Err(e) => Err(Error::internal(format!("the scheduler stopped: {e}"))),
        }
    }

    /// Waits until `executors` executors have registered. Ballista queues a job while no
    /// executor has ever registered, without limit: on a multi-node job whose other nodes never
    /// come (a bad image, a security group), the run would wait for its timeout.
    pub async fn wait_for_executors(
        &self,
        executors: usize,
        within: std::time::Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let registered = self
                .server
                .state
                .executor_manager
                .get_executors_state()
                .await
                .map_err(ballista_error)?
                .len();
            if registered >= executors {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::transient(format!(
                    "{registered} of the {executors} executors registered with the scheduler within {} s: check \
                     the other nodes' logs, and that the nodes' security group admits ports 50050-50100 from itself",
                    within.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.serving.abort();
    }
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

/// An error of a query on the cluster while it gives rows, classed by what Ballista says in its
/// own words. A failed job's reason carries the text of the error its task met, which can quote
/// a value of the row (`Cannot cast string '...'`): that text is never shown, and only its
/// structure (the error kinds Ballista writes out, quoted strings removed) decides the class.
pub fn reading_error(e: datafusion::error::DataFusionError) -> Error {
    let text = e.find_root().to_string();
    if text.contains("failed to serialize logical plan") {
        return Error::config(
            "the segment uses what a cluster cannot be sent (a table function such as range() or \
             generate_series() in FROM, a table that is not files): write it without, or run it with \
             --engine local",
        );
    }
    let Some(at) = text.find("Execution error: Job ") else {
        // Not a job's status: the client lost the scheduler or an executor (refused, reset,
        // a stream closed before the job ended).
        return Error::transient(
            "the cluster could not be reached, or stopped answering while the query ran: check the scheduler \
             at the engine's address and its executors, then rerun (exit 3: AWS Batch retries it)",
        );
    };
    let reason = without_quoted(&text[at..]);
    let has = |words: &[&str]| words.iter().any(|w| reason.contains(w));
    if has(&["could not be prepared or was rejected by executor"]) {
        return Error::config(format!(
            "an executor of the cluster could not take the query's tasks; most often it lacks activator's \
             functions ({}): start every executor with `activator cluster executor` of this activator's \
             version, not a stock Ballista executor",
            udf::NAME
        ));
    }
    if has(&["ResourcesExhausted"]) {
        return Error::while_reading_rows(datafusion::error::DataFusionError::ResourcesExhausted(
            "on an executor; raise the executors' memory".into(),
        ));
    }
    let lost = [
        "Task failed due to IO error",
        "ObjectStore",
        "IoError",
        "FetchPartitionError",
        "ResultLost",
        "TaskKilled",
        "lost",
    ];
    if has(&lost) {
        return Error::transient(
            "the cluster could not finish the query (storage or network trouble, or an executor lost): \
             check the executors and rerun (exit 3: AWS Batch retries it)",
        );
    }
    Error::while_reading_rows(datafusion::error::DataFusionError::Execution(String::new()))
}

/// `text` without its quoted strings (Rust's `Debug` of a `String`, escapes included): what is
/// left is the error's structure, which names kinds of errors and never a value.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        while let Some(q) = chars.next() {
            match q {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
        out.push_str("\"…\"");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError as D;

    #[test]
    fn jobs_go_to_the_cluster_planned_whole_not_adaptively() {
        let ballista = SessionConfig::new().upgrade_for_ballista();
        assert!(
            ballista.ballista_adaptive_query_planner_enabled(),
            "Ballista's default"
        );
        assert!(!static_planner(ballista).ballista_adaptive_query_planner_enabled());
    }

    fn job_failed(reason: &str) -> D {
        D::Execution(format!("Job 038J6K3C2T000 failed: {reason}"))
    }

    #[test]
    fn a_failed_jobs_class_comes_from_its_structure_never_from_quoted_values() {
        let cast = r#"Job failed due to stage 0 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(DataFusionError(ParquetError(External(ComputeError("Error evaluating filter predicate: ArrowError(CastError(\"Cannot cast string 'ObjectStore lost Connection' to value of Int32 type\"), Some(\"\"))")))))))"#;
        let e = reading_error(job_failed(cast));
        assert_eq!(e.class, crate::error::ErrorClass::Config, "{}", e.message);
        assert!(!e.message.contains("ObjectStore lost"), "{}", e.message);

        let storage = r#"Job failed due to stage 1 failed: Task failed due to runtime execution error: DataFusionError(ObjectStore(Generic { store: "S3", source: "503 'Slow Down'" }))"#;
        assert_eq!(
            reading_error(job_failed(storage)).class,
            crate::error::ErrorClass::Transient
        );

        let rejected = "task could not be prepared or was rejected by executor";
        let e = reading_error(job_failed(rejected));
        assert_eq!(e.class, crate::error::ErrorClass::Config);
        assert!(
            e.message.contains("activator cluster executor"),
            "{}",
            e.message
        );

        let unreachable = D::Execution(
            r#"tonic::transport::Error(Transport, ConnectError("tcp connect error"))"#.into(),
        );
        assert_eq!(
            reading_error(unreachable).class,
            crate::error::ErrorClass::Transient
        );

        let memory = r#"Job failed due to stage 1 failed: Task failed due to runtime execution error: DataFusionError(ResourcesExhausted("Failed to allocate"))"#;
        let e = reading_error(job_failed(memory));
        assert_eq!(e.class, crate::error::ErrorClass::Config);
        assert!(e.message.contains("memory"), "{}", e.message);
    }

    #[test]
    fn quoted_strings_are_removed_with_their_escapes() {
        assert_eq!(
            without_quoted(r#"A("x \" lost") B("") C"#),
            r#"A("…") B("…") C"#
        );
    }
}
