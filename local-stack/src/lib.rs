//! The whole system in one process, for development: an embedded
//! DynamoDB-compatible store (dynoxide) on a local port, the tables
//! provisioned through the DynamoDB API exactly as on AWS, and the command
//! service, query service and projector, all on 127.0.0.1.
//!
//! [`start`] binds every port, opens the store, provisions and spawns the
//! services and one `/metrics` endpoint for all three, and returns a
//! [`LocalStack`] that knows the bound addresses;
//! [`LocalStack::run_until`] keeps it running until a shutdown signal or
//! the first service failure, then stops the services, then the store.
//!
//! The embedded store is dynoxide-rs 3.2.0, with two workarounds for its
//! limits under a steady stream of appends, each with a flag to turn it off:
//! [`stream_index`] (indexes and trims its stream table) and
//! [`transaction_tokens`] (keeps TransactWriteItems tokens from reaching
//! it). BENCHMARKS.md has the measurements behind both.
#![forbid(unsafe_code)]

mod shutdown;
pub mod stream_index;
pub mod transaction_tokens;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aws_config::SdkConfig;
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
use dynabridge_provision::{ProvisionError, ensure_tables};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::Listeners;
use dynabridge_runtime::health::HealthArgs;
use dynabridge_runtime::service::{Host, Service};
use dynabridge_runtime::telemetry::metrics::{CombinedMetrics, serve_metrics};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::stream_index::{StreamIndex, StreamIndexError};
use crate::transaction_tokens::StripTransactionTokens;

/// The store's file inside the data directory.
pub const DATABASE_FILE: &str = "dynamodb.sqlite";
/// The projector's sink (JSON lines) inside the data directory.
pub const SINK_FILE: &str = "published-events.jsonl";
/// The region the SDK signs for; the embedded store accepts any.
const REGION: &str = "us-east-1";
/// The `source` of published events, as the projector's own default.
const EVENT_SOURCE: &str = "dynabridge";
/// The projector's longest pause between polls of an idle shard, in ms, as
/// its own default.
const IDLE_POLL_MAX_MS: u64 = 100;
/// The longest a `min_version` read waits, as the query service's own
/// default.
const QUERY_MAX_WAIT_MS: u64 = 5000;
/// How often old stream records are trimmed. With the index, a trim that
/// finds nothing costs one index lookup.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);
/// How often expired items are swept. A sweep reads every item of every
/// table with a time to live, so it runs rarely; DynamoDB itself only
/// promises deletion within a few days.
const TTL_SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// How long the services may take to drain once asked to stop.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the store may take to finish its last requests.
const STORE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

const COMMAND_SERVICE: &str = "command-service";
const QUERY_SERVICE: &str = "query-service";
const PROJECTOR: &str = "projector";
const METRICS: &str = "metrics endpoint";
const STORE: &str = "embedded DynamoDB";

/// Flags and environment of the local stack. Every port binds on
/// 127.0.0.1; 0 takes any free port.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "local-stack",
    version,
    about = "dynabridge on one machine: an embedded DynamoDB-compatible store, the command and query services and the projector"
)]
pub struct Options {
    /// Directory of the store's file and the published events; created if
    /// missing, kept across runs.
    #[arg(long, env = "DYNABRIDGE_DATA_DIR", default_value = ".dynabridge")]
    pub data_dir: PathBuf,
    /// Keep everything in a temporary directory, deleted on exit, instead
    /// of the data directory.
    #[arg(long, env = "DYNABRIDGE_IN_MEMORY")]
    pub in_memory: bool,
    /// Prefix of every table name.
    #[arg(long, env = "DYNABRIDGE_TABLE_PREFIX", default_value = "dynabridge")]
    pub table_prefix: String,
    /// Port of the command service (gRPC).
    #[arg(long, env = "DYNABRIDGE_COMMAND_PORT", default_value_t = 50051)]
    pub command_port: u16,
    /// Port of the query service (gRPC).
    #[arg(long, env = "DYNABRIDGE_QUERY_PORT", default_value_t = 50052)]
    pub query_port: u16,
    /// Port of the projector's gRPC health server.
    #[arg(
        long,
        env = "DYNABRIDGE_PROJECTOR_HEALTH_PORT",
        default_value_t = 50053
    )]
    pub projector_health_port: u16,
    /// Port of the Prometheus `/metrics` endpoint of all three services:
    /// each service's series labelled `component`, the process's AWS call
    /// counters once.
    #[arg(long, env = "DYNABRIDGE_METRICS_PORT", default_value_t = 9464)]
    pub metrics_port: u16,
    /// Port of the embedded DynamoDB endpoint.
    #[arg(long, env = "DYNABRIDGE_DYNAMODB_PORT", default_value_t = 8000)]
    pub dynamodb_port: u16,
    /// Run the embedded store as shipped, without the stream record indexes
    /// and trimming (see `stream_index`); appends then slow down as the
    /// stream grows.
    #[arg(long, env = "DYNABRIDGE_NO_STREAM_INDEX")]
    pub no_stream_index: bool,
    /// Let TransactWriteItems tokens reach the embedded store, as shipped
    /// (see `transaction_tokens`); appends then slow down with the number
    /// of appends in the last ten minutes.
    #[arg(long, env = "DYNABRIDGE_KEEP_TRANSACTION_TOKENS")]
    pub keep_transaction_tokens: bool,
    /// Run the embedded store with its tables provisioned, and no services:
    /// for running the command service, query service and projector as
    /// separate processes against `--endpoint-url`. The service and
    /// metrics ports are then not bound.
    #[arg(long, env = "DYNABRIDGE_STORE_ONLY")]
    pub store_only: bool,
}

impl Default for Options {
    /// The same as the flags' defaults, without reading the environment.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".dynabridge"),
            in_memory: false,
            table_prefix: "dynabridge".to_owned(),
            command_port: 50051,
            query_port: 50052,
            projector_health_port: 50053,
            metrics_port: 9464,
            dynamodb_port: 8000,
            no_stream_index: false,
            keep_transaction_tokens: false,
            store_only: false,
        }
    }
}

/// Where a started stack is.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// Whether the services run. Without them (`--store-only`) their
    /// addresses below are not bound and read 127.0.0.1:0.
    pub services: bool,
    pub command: SocketAddr,
    pub query: SocketAddr,
    pub projector_health: SocketAddr,
    /// The `/metrics` endpoint of the three services.
    pub metrics: SocketAddr,
    pub dynamodb: SocketAddr,
    pub table_prefix: String,
    pub data_dir: PathBuf,
    pub database: PathBuf,
    pub sink: PathBuf,
    /// The data directory is temporary and goes when the stack stops.
    pub in_memory: bool,
    pub stream_index: bool,
    pub transaction_tokens_stripped: bool,
}

impl Endpoints {
    /// The embedded store's endpoint, for `--endpoint-url`.
    pub fn dynamodb_url(&self) -> String {
        format!("http://{}", self.dynamodb)
    }

    /// The services' Prometheus metrics.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    /// What to print once the stack is up.
    pub fn banner(&self) -> String {
        let mut b = String::new();
        let kept = if self.in_memory {
            "temporary, removed on exit"
        } else {
            "kept across runs"
        };
        // Writing to a String cannot fail.
        if self.services {
            let _ = writeln!(b, "dynabridge local stack is up");
            let _ = writeln!(b, "  command service    {}", self.command);
            let _ = writeln!(b, "  query service      {}", self.query);
            let _ = writeln!(b, "  projector health   {}", self.projector_health);
            let _ = writeln!(b, "  metrics            {}", self.metrics_url());
        } else {
            let _ = writeln!(
                b,
                "dynabridge local store is up (no services: --store-only)"
            );
        }
        let _ = writeln!(
            b,
            "  DynamoDB endpoint  {}  (tables {}-*)",
            self.dynamodb_url(),
            self.table_prefix
        );
        let _ = writeln!(
            b,
            "  store              {}  ({kept})",
            self.database.display()
        );
        let _ = writeln!(b, "  published events   {}", self.sink.display());
        if !self.stream_index {
            let _ = writeln!(
                b,
                "  stream index       off (--no-stream-index): appends slow down as the stream grows"
            );
        }
        if !self.transaction_tokens_stripped {
            let _ = writeln!(
                b,
                "  transaction tokens kept (--keep-transaction-tokens): appends slow down over ten minutes"
            );
        }
        let _ = writeln!(b);
        if !self.services {
            let _ = writeln!(b, "run a service against it:");
            let _ = writeln!(
                b,
                "  cargo run -p command-service -- --endpoint-url {} --table-prefix {}",
                self.dynamodb_url(),
                self.table_prefix
            );
            let _ = write!(b, "Ctrl-C stops the store.");
            return b;
        }
        let _ = writeln!(b, "try:");
        let _ = writeln!(b, "  grpcurl -plaintext {} list", self.command);
        let _ = writeln!(
            b,
            "  grpcurl -plaintext -d '{{\"request_id\":\"r-1\",\"email\":\"ada@example.com\",\"name\":\"Ada\"}}' {} dynabridge.v1.CommandService/CreateUser",
            self.command
        );
        let _ = writeln!(b, "  grpcurl -plaintext {} list", self.query);
        let _ = writeln!(b, "  curl -s {}", self.metrics_url());
        let _ = write!(b, "Ctrl-C stops everything.");
        b
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("binding the {what} to {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store's path {0} is not valid UTF-8, which the embedded store needs")]
    NonUtf8Path(PathBuf),
    #[error("opening the embedded store at {path}")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: dynoxide::DynoxideError,
    },
    #[error(transparent)]
    StreamIndex(#[from] StreamIndexError),
    #[error("provisioning the tables")]
    Provision(#[source] Box<ProvisionError>),
    #[error("setting up the metrics")]
    Metrics(#[source] Box<dyn StdError + Send + Sync>),
    #[error("a start-up task panicked")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{service} failed")]
    Failed {
        service: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("{service} stopped without being asked to")]
    StoppedUnasked { service: &'static str },
    #[error("{service} panicked")]
    Panicked { service: &'static str },
    #[error("{service} did not stop within {waited:?}")]
    StopTimeout {
        service: &'static str,
        waited: Duration,
    },
}

/// A running stack. Dropping it without [`LocalStack::run_until`] stops the
/// services and the store too, without waiting for them.
#[derive(Debug)]
pub struct LocalStack {
    endpoints: Endpoints,
    services: JoinSet<anyhow::Result<()>>,
    service_names: HashMap<tokio::task::Id, &'static str>,
    stop_services: shutdown::Trigger,
    store: JoinHandle<Result<(), String>>,
    housekeeping: JoinHandle<()>,
    stop_store: shutdown::Trigger,
    /// Last, so that the directory goes after everything using it.
    temp_dir: Option<tempfile::TempDir>,
}

/// Binds every port, opens the store (with the stream index workaround
/// unless turned off), provisions the tables and spawns the services.
pub async fn start(options: Options) -> Result<LocalStack, StartError> {
    let tables_args = StoreArgs {
        table_prefix: options.table_prefix.clone(),
        aws: AwsArgs::default(),
    };
    tables_args.validate().map_err(StartError::InvalidOptions)?;

    // Every port first, so that a taken one fails before anything is written.
    let dynamodb_listener = bind(STORE, options.dynamodb_port).await?;
    let service_listeners = if options.store_only {
        None
    } else {
        Some((
            bind(COMMAND_SERVICE, options.command_port).await?,
            bind(QUERY_SERVICE, options.query_port).await?,
            bind(PROJECTOR, options.projector_health_port).await?,
            bind(METRICS, options.metrics_port).await?,
        ))
    };
    let unbound = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let addr_of = |pick: fn(&ServiceListeners) -> &TcpListener, what: &'static str| {
        service_listeners
            .as_ref()
            .map_or(Ok(unbound), |listeners| local_addr(pick(listeners), what))
    };

    let (data_dir, temp_dir) = prepare_data_dir(&options)?;
    let database = data_dir.join(DATABASE_FILE);
    let endpoints = Endpoints {
        services: service_listeners.is_some(),
        command: addr_of(|l| &l.0, COMMAND_SERVICE)?,
        query: addr_of(|l| &l.1, QUERY_SERVICE)?,
        projector_health: addr_of(|l| &l.2, PROJECTOR)?,
        metrics: addr_of(|l| &l.3, METRICS)?,
        dynamodb: local_addr(&dynamodb_listener, STORE)?,
        table_prefix: options.table_prefix.clone(),
        sink: data_dir.join(SINK_FILE),
        database: database.clone(),
        data_dir,
        in_memory: options.in_memory,
        stream_index: !options.no_stream_index,
        transaction_tokens_stripped: !options.keep_transaction_tokens,
    };

    let db = open_store(&database, options.in_memory).await?;
    let stream_index = if options.no_stream_index {
        tracing::warn!("stream record index off: appends slow down as the stream grows");
        None
    } else {
        // dynoxide has created `_stream_records` by now.
        let path = database.clone();
        Some(tokio::task::spawn_blocking(move || StreamIndex::install(&path)).await??)
    };

    let (stop_store, store_signal) = shutdown::channel();
    let store = tokio::spawn(dynoxide::server::serve_with_shutdown(
        dynamodb_listener,
        db.clone(),
        store_signal.clone().wait(),
    ));
    let housekeeping = tokio::spawn(housekeeping(db, stream_index, store_signal.wait()));
    tracing::info!(endpoint = %endpoints.dynamodb_url(), database = %database.display(), "embedded store serving");

    let store_args = StoreArgs {
        table_prefix: options.table_prefix.clone(),
        aws: AwsArgs {
            endpoint_url: Some(endpoints.dynamodb_url()),
            region: Some(REGION.to_owned()),
        },
    };
    if options.keep_transaction_tokens {
        tracing::warn!(
            "transaction tokens kept: appends slow down with the appends of the last ten minutes"
        );
    }
    let sdk = embedded_sdk_config(&store_args.aws, !options.keep_transaction_tokens).await;
    let tables = store_args.tables();
    if let Err(err) = ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &tables).await {
        abandon_store(&stop_store, store, housekeeping).await;
        return Err(StartError::Provision(Box::new(err)));
    }
    tracing::info!(prefix = %tables.prefix, "tables ready");

    let (stop_services, services_signal) = shutdown::channel();
    let mut services = JoinSet::new();
    let mut service_names = HashMap::new();
    let Some((command_listener, query_listener, health_listener, metrics_listener)) =
        service_listeners
    else {
        return Ok(LocalStack {
            endpoints,
            services,
            service_names,
            stop_services,
            store,
            housekeeping,
            stop_store,
            temp_dir,
        });
    };

    // One endpoint for the three services, each registering in a registry
    // of its own as its binary does.
    let mut metrics = CombinedMetrics::new().map_err(|err| StartError::Metrics(err.into()))?;
    let registries = [COMMAND_SERVICE, QUERY_SERVICE, PROJECTOR].map(|name| metrics.service(name));
    let [command_registry, query_registry, projector_registry] = registries;
    let signal = services_signal.clone();
    let task = services.spawn(async move {
        serve_metrics(metrics, metrics_listener, signal.wait())
            .await
            .context("serving metrics")
    });
    service_names.insert(task.id(), METRICS);

    let command = command_service::Config {
        store: store_args.clone(),
        listen: endpoints.command,
        aggregate_cache_capacity: command_service::commands::AggregateCache::DEFAULT_CAPACITY,
        append_max_in_flight: dynabridge_event_store::EventStore::DEFAULT_MAX_IN_FLIGHT,
        health: HealthArgs::default(),
        metrics_listen: None,
    };
    let query = query_service::Config {
        store: store_args.clone(),
        listen: endpoints.query,
        page_token_secret: None,
        max_wait_ms: QUERY_MAX_WAIT_MS,
        health: HealthArgs::default(),
        metrics_listen: None,
    };
    let projector = projector::Config {
        store: store_args,
        health_listen: endpoints.projector_health,
        event_bus: None,
        event_source: EVENT_SOURCE.to_owned(),
        sink_path: endpoints.sink.clone(),
        idle_poll_max_ms: IDLE_POLL_MAX_MS,
        max_concurrent_writes: projector::Config::DEFAULT_MAX_CONCURRENT_WRITES,
        lease: projector::LeaseArgs::default(),
        health: projector::ProjectorHealth::default(),
        metrics_listen: None,
    };
    let task = services.spawn(serve::<command_service::App>(
        command,
        Host {
            sdk: sdk.clone(),
            registry: command_registry,
        },
        command_listener,
        services_signal.clone(),
    ));
    service_names.insert(task.id(), COMMAND_SERVICE);
    let task = services.spawn(serve::<query_service::App>(
        query,
        Host {
            sdk: sdk.clone(),
            registry: query_registry,
        },
        query_listener,
        services_signal.clone(),
    ));
    service_names.insert(task.id(), QUERY_SERVICE);
    let task = services.spawn(serve::<projector::App>(
        projector,
        Host {
            sdk,
            registry: projector_registry,
        },
        health_listener,
        services_signal,
    ));
    service_names.insert(task.id(), PROJECTOR);

    tracing::info!(
        command = %endpoints.command,
        query = %endpoints.query,
        projector_health = %endpoints.projector_health,
        metrics = %endpoints.metrics,
        "services started"
    );
    Ok(LocalStack {
        endpoints,
        services,
        service_names,
        stop_services,
        store,
        housekeeping,
        stop_store,
        temp_dir,
    })
}

impl LocalStack {
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Runs until `shutdown` resolves or a service stops on its own, then
    /// stops the services (which drain), then the store. Returns the first
    /// failure; every one is logged.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let LocalStack {
            endpoints: _,
            mut services,
            service_names,
            stop_services,
            mut store,
            housekeeping,
            stop_store,
            temp_dir,
        } = self;
        let name = |id: tokio::task::Id| service_names.get(&id).copied().unwrap_or("a service");
        let mut running = service_names.clone();
        let mut ended = |joined: Joined, asked: bool| {
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(err) => err.id(),
            };
            running.remove(&id);
            service_ended(joined, asked, name)
        };
        let mut failures = Vec::new();
        let mut store_done = false;

        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            Some(joined) = services.join_next_with_id() => {
                failures.extend(ended(joined, false));
                tracing::error!("a service stopped, shutting the rest down");
            }
            joined = &mut store => {
                store_done = true;
                failures.extend(store_ended(joined, false));
                tracing::error!("the embedded store stopped, shutting the services down");
            }
        }

        stop_services.fire();
        let deadline = tokio::time::Instant::now() + SERVICE_STOP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, services.join_next_with_id()).await {
                Ok(Some(joined)) => failures.extend(ended(joined, true)),
                Ok(None) => break,
                Err(_) => {
                    services.abort_all();
                    failures.extend(running.values().map(|service| RunError::StopTimeout {
                        service,
                        waited: SERVICE_STOP_TIMEOUT,
                    }));
                    break;
                }
            }
        }

        // The services are gone; now the store can finish its last requests.
        stop_store.fire();
        if !store_done {
            match tokio::time::timeout(STORE_STOP_TIMEOUT, &mut store).await {
                Ok(joined) => failures.extend(store_ended(joined, true)),
                Err(_) => {
                    store.abort();
                    failures.push(RunError::StopTimeout {
                        service: STORE,
                        waited: STORE_STOP_TIMEOUT,
                    });
                }
            }
        }
        if let Err(err) = housekeeping.await {
            tracing::error!(error = %err, "housekeeping task failed");
        }
        drop(temp_dir);

        for failure in &failures {
            tracing::error!(error = %error_chain(failure), "local stack failure");
        }
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => {
                tracing::info!("local stack stopped");
                Ok(())
            }
        }
    }
}

/// How a service task ended.
type Joined = Result<(tokio::task::Id, anyhow::Result<()>), tokio::task::JoinError>;

fn service_ended(
    joined: Joined,
    asked: bool,
    name: impl Fn(tokio::task::Id) -> &'static str,
) -> Option<RunError> {
    match joined {
        Ok((id, Ok(()))) => {
            tracing::info!(service = name(id), "service stopped");
            (!asked).then(|| RunError::StoppedUnasked { service: name(id) })
        }
        Ok((id, Err(err))) => Some(RunError::Failed {
            service: name(id),
            source: err.into(),
        }),
        Err(err) if err.is_panic() => Some(RunError::Panicked {
            service: name(err.id()),
        }),
        // Cancelled: only `abort_all` after a timeout does that, and the
        // timeout is reported there.
        Err(_) => None,
    }
}

fn store_ended(
    joined: Result<Result<(), String>, tokio::task::JoinError>,
    asked: bool,
) -> Option<RunError> {
    match joined {
        Ok(Ok(())) => (!asked).then_some(RunError::StoppedUnasked { service: STORE }),
        Ok(Err(message)) => Some(RunError::Failed {
            service: STORE,
            source: message.into(),
        }),
        Err(err) if err.is_panic() => Some(RunError::Panicked { service: STORE }),
        Err(_) => None,
    }
}

/// `err: cause: cause`, for a log line.
fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

/// The SDK configuration for a client of the embedded store at
/// `aws.endpoint_url`: its local credentials, and unless
/// `strip_transaction_tokens` is false, the [`transaction_tokens`]
/// workaround. Services run as separate processes against a `--store-only`
/// stack use it too.
pub async fn embedded_sdk_config(aws: &AwsArgs, strip_transaction_tokens: bool) -> SdkConfig {
    let sdk = load_sdk_config(aws, Some(StaticCredentials::local())).await;
    if !strip_transaction_tokens {
        return sdk;
    }
    sdk.into_builder()
        .http_client(StripTransactionTokens::with_default_client())
        .build()
}

/// The listeners of the command service, the query service, the
/// projector's health server and the metrics endpoint.
type ServiceListeners = (TcpListener, TcpListener, TcpListener, TcpListener);

/// A service's listeners in the local stack: its gRPC port; its metrics
/// are served with the others'.
fn only_grpc(grpc: TcpListener) -> Listeners {
    Listeners {
        grpc,
        metrics: None,
    }
}

/// Builds service `S` on its bound gRPC port (its metrics go to the local
/// stack's one endpoint) and serves it until `signal`. Both happen in the
/// service's task, so that a service that cannot start is reported by
/// [`LocalStack::run_until`] like one that fails later, and stops the rest.
async fn serve<S: Service>(
    config: S::Config,
    host: Host,
    grpc: TcpListener,
    signal: shutdown::Signal,
) -> anyhow::Result<()> {
    S::build_on(config, &host, only_grpc(grpc))
        .await?
        .run_until(signal.wait())
        .await
}

/// Stops the store after a failed start, waiting for it a bounded time.
async fn abandon_store(
    stop_store: &shutdown::Trigger,
    mut store: JoinHandle<Result<(), String>>,
    housekeeping: JoinHandle<()>,
) {
    stop_store.fire();
    let stopped = tokio::time::timeout(STORE_STOP_TIMEOUT, async {
        let _ = (&mut store).await;
        let _ = housekeeping.await;
    })
    .await;
    if stopped.is_err() {
        store.abort();
    }
}

async fn bind(what: &'static str, port: u16) -> Result<TcpListener, StartError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        what,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        source,
    })
}

/// The data directory, and the temporary directory to delete on exit in
/// memory mode. The store is a file even then: the stream index needs a
/// second connection, and a second connection cannot reach `:memory:`.
fn prepare_data_dir(options: &Options) -> Result<(PathBuf, Option<tempfile::TempDir>), StartError> {
    if options.in_memory {
        let dir = tempfile::Builder::new()
            .prefix("dynabridge-local-")
            .tempdir()
            .map_err(|source| StartError::DataDir {
                path: std::env::temp_dir(),
                source,
            })?;
        return Ok((dir.path().to_owned(), Some(dir)));
    }
    std::fs::create_dir_all(&options.data_dir).map_err(|source| StartError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    Ok((options.data_dir.clone(), None))
}

/// Opens the store. A temporary store (`ephemeral`) does not sync its
/// write-ahead log on every commit: it is deleted on exit, so there is no
/// data to keep across a crash, and the sync on every commit (SQLite's
/// default, `synchronous = FULL`) holds the store's one lock through a disk
/// flush. It keeps `synchronous = NORMAL`, which SQLite documents as safe from
/// corruption in WAL mode; the data directory keeps the default.
async fn open_store(path: &Path, ephemeral: bool) -> Result<dynoxide::Database, StartError> {
    let path_str = path
        .to_str()
        .ok_or_else(|| StartError::NonUtf8Path(path.to_owned()))?
        .to_owned();
    tokio::task::spawn_blocking(move || {
        let db = dynoxide::Database::new(&path_str)?;
        if ephemeral {
            // dynoxide sets its pragmas in pairs: this pair leaves
            // `synchronous = NORMAL` and the default cache, temp store and
            // memory map (the bulk-loading cache alone makes every commit
            // walk a 64 MB page cache).
            db.enable_bulk_loading()?;
            db.disable_bulk_loading()?;
        }
        Ok(db)
    })
    .await?
    .map_err(|source| StartError::OpenStore {
        path: path.to_owned(),
        source,
    })
}

/// Once at start and then every [`HOUSEKEEPING_INTERVAL`], trims stream
/// records older than a day (with the stream index); once at start and then
/// every [`TTL_SWEEP_INTERVAL`], deletes expired items (the embedded server
/// has no time to live sweeper of its own). Until `stop`.
async fn housekeeping(
    db: dynoxide::Database,
    mut index: Option<StreamIndex>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            // A clock before 1970 trims nothing.
            .unwrap_or(0);
        let sweep = last_sweep.is_none_or(|at| at.elapsed() >= TTL_SWEEP_INTERVAL);
        if sweep {
            last_sweep = Some(tokio::time::Instant::now());
        }
        if index.is_none() && !sweep {
            continue;
        }
        let db = db.clone();
        let taken = index.take();
        let joined = tokio::task::spawn_blocking(move || {
            let trimmed = taken.as_ref().map(|index| index.trim(now));
            let started = std::time::Instant::now();
            let expired = sweep.then(|| db.sweep_ttl());
            (taken, trimmed, expired, started.elapsed())
        })
        .await;
        let (taken, trimmed, expired, sweep_took) = match joined {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(error = %err, "housekeeping panicked, stopping it");
                return;
            }
        };
        index = taken;
        match trimmed {
            Some(Ok(0)) | None => {}
            Some(Ok(records)) => tracing::info!(records, "stream records older than a day trimmed"),
            Some(Err(err)) => {
                tracing::warn!(error = %error_chain(&err), "trimming stream records failed")
            }
        }
        match expired {
            None => {}
            Some(Ok(items)) => tracing::debug!(
                items,
                took_ms = u64::try_from(sweep_took.as_millis()).unwrap_or(u64::MAX),
                "time to live sweep done"
            ),
            Some(Err(err)) => tracing::warn!(error = %err, "time to live sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_match_the_documented_flags() {
        let parsed = Options::try_parse_from(["local-stack"]).unwrap();
        let default = Options::default();
        // The environment may override flags; compare only when it does not.
        if std::env::vars().all(|(k, _)| !k.starts_with("DYNABRIDGE_")) {
            assert_eq!(parsed.data_dir, default.data_dir);
            assert_eq!(parsed.table_prefix, default.table_prefix);
            assert_eq!(
                (
                    parsed.command_port,
                    parsed.query_port,
                    parsed.projector_health_port,
                    parsed.metrics_port,
                    parsed.dynamodb_port
                ),
                (50051, 50052, 50053, 9464, 8000)
            );
            assert!(
                !parsed.in_memory && !parsed.no_stream_index && !parsed.keep_transaction_tokens
            );
        }
        assert_eq!(
            (
                default.command_port,
                default.query_port,
                default.projector_health_port,
                default.metrics_port,
                default.dynamodb_port
            ),
            (50051, 50052, 50053, 9464, 8000)
        );
    }

    #[tokio::test]
    async fn an_invalid_table_prefix_fails_before_binding() {
        // A port that is taken would fail too, so the error proves the
        // prefix is checked first.
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = Options {
            table_prefix: "no spaces".to_owned(),
            in_memory: true,
            command_port: taken.local_addr().unwrap().port(),
            ..Options::default()
        };
        let err = start(options).await.unwrap_err();
        assert!(matches!(err, StartError::InvalidOptions(_)), "{err}");
    }

    #[test]
    fn error_chain_shows_every_cause() {
        let err = RunError::Failed {
            service: COMMAND_SERVICE,
            source: anyhow::anyhow!("disk on fire").context("appending").into(),
        };
        assert_eq!(
            error_chain(&err),
            "command-service failed: appending: disk on fire"
        );
    }

    #[test]
    fn the_banner_names_every_endpoint_and_a_grpcurl_hint() {
        let endpoints = Endpoints {
            services: true,
            command: "127.0.0.1:50051".parse().unwrap(),
            query: "127.0.0.1:50052".parse().unwrap(),
            projector_health: "127.0.0.1:50053".parse().unwrap(),
            metrics: "127.0.0.1:9464".parse().unwrap(),
            dynamodb: "127.0.0.1:8000".parse().unwrap(),
            table_prefix: "dynabridge".to_owned(),
            data_dir: PathBuf::from(".dynabridge"),
            database: PathBuf::from(".dynabridge/dynamodb.sqlite"),
            sink: PathBuf::from(".dynabridge/published-events.jsonl"),
            in_memory: false,
            stream_index: true,
            transaction_tokens_stripped: true,
        };
        let banner = endpoints.banner();
        for needle in [
            "127.0.0.1:50051",
            "127.0.0.1:50052",
            "127.0.0.1:50053",
            "http://127.0.0.1:9464/metrics",
            "http://127.0.0.1:8000",
            "published-events.jsonl",
            "grpcurl -plaintext 127.0.0.1:50051 list",
        ] {
            assert!(banner.contains(needle), "{needle} missing from\n{banner}");
        }
    }
}
