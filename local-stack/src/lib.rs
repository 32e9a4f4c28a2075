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

mod options;
mod services;
mod shutdown;
mod store;
pub mod stream_index;
pub mod transaction_tokens;

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use dynabridge_aws::AwsArgs;
use dynabridge_provision::{ProvisionError, ensure_tables};
use dynabridge_runtime::config::StoreArgs;
use tokio::net::TcpListener;

pub use crate::options::{Endpoints, Options};
use crate::services::{ServiceAddrs, ServiceListeners, Services};
pub use crate::store::embedded_sdk_config;
use crate::store::{EmbeddedStore, prepare_data_dir};
use crate::stream_index::StreamIndexError;

/// The store's file inside the data directory.
pub const DATABASE_FILE: &str = "dynamodb.sqlite";
/// The projector's sink (JSON lines) inside the data directory.
pub const SINK_FILE: &str = "published-events.jsonl";
/// The region the SDK signs for; the embedded store accepts any.
const REGION: &str = "us-east-1";
/// How long the services may take to drain once asked to stop.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(30);

const COMMAND_SERVICE: &str = "command-service";
const QUERY_SERVICE: &str = "query-service";
const PROJECTOR: &str = "projector";
const PROCESS_MANAGER: &str = "process-manager";
const ADMIN_SERVICE: &str = "admin-service";
const METRICS: &str = "metrics endpoint";
const STORE: &str = "embedded DynamoDB";

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
    services: Services,
    store: EmbeddedStore,
    /// Last, so that the directory goes after everything using it.
    temp_dir: Option<tempfile::TempDir>,
}

/// Binds every port, opens the store (with the stream index workaround
/// unless turned off), provisions the tables and spawns the services.
pub async fn start(options: Options) -> Result<LocalStack, StartError> {
    let table_prefix = options.table_prefix.clone();
    StoreArgs {
        table_prefix: table_prefix.clone(),
        aws: AwsArgs::default(),
    }
    .validate()
    .map_err(StartError::InvalidOptions)?;

    // Every port first, so that a taken one fails before anything is written.
    let dynamodb_listener = bind(STORE, options.dynamodb_port).await?;
    let service_listeners = if options.store_only {
        None
    } else {
        Some(ServiceListeners::bind(&options).await?)
    };
    let services_at = match &service_listeners {
        Some(listeners) => listeners.addrs()?,
        None => ServiceAddrs::unbound(),
    };

    let (data_dir, temp_dir) = prepare_data_dir(&options)?;
    let database = data_dir.join(DATABASE_FILE);
    let endpoints = Endpoints {
        services: service_listeners.is_some(),
        command: services_at.command,
        query: services_at.query,
        projector_health: services_at.projector_health,
        admin: services_at.admin,
        process_manager_health: services_at.process_manager_health,
        metrics: services_at.metrics,
        dynamodb: local_addr(&dynamodb_listener, STORE)?,
        table_prefix: table_prefix.clone(),
        sink: data_dir.join(SINK_FILE),
        database: database.clone(),
        data_dir,
        in_memory: options.in_memory,
        stream_index: !options.no_stream_index,
        transaction_tokens_stripped: !options.keep_transaction_tokens,
    };

    let store = EmbeddedStore::start(
        dynamodb_listener,
        &database,
        options.in_memory,
        !options.no_stream_index,
    )
    .await?;
    tracing::info!(endpoint = %endpoints.dynamodb_url(), database = %database.display(), "embedded store serving");

    let store_args = StoreArgs {
        table_prefix,
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
        store.abandon().await;
        return Err(StartError::Provision(Box::new(err)));
    }
    tracing::info!(prefix = %tables.prefix, "tables ready");

    let services = match service_listeners {
        None => Services::none(),
        Some(listeners) => match Services::spawn(listeners, &store_args, &sdk, &endpoints) {
            Ok(services) => services,
            Err(err) => {
                store.abandon().await;
                return Err(err);
            }
        },
    };
    if endpoints.services {
        tracing::info!(
            command = %endpoints.command,
            query = %endpoints.query,
            projector_health = %endpoints.projector_health,
            admin = %endpoints.admin,
            process_manager_health = %endpoints.process_manager_health,
            metrics = %endpoints.metrics,
            "services started"
        );
    }
    Ok(LocalStack {
        endpoints,
        services,
        store,
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
            services,
            mut store,
            temp_dir,
        } = self;
        let Services {
            mut tasks,
            names,
            stop: stop_services,
        } = services;
        let name = |id: tokio::task::Id| names.get(&id).copied().unwrap_or("a service");
        let mut running = names.clone();
        let mut ended = |joined: Joined, asked: bool| {
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(err) => err.id(),
            };
            running.remove(&id);
            service_ended(joined, asked, name)
        };
        let mut failures = Vec::new();
        let mut store_ended = None;

        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            Some(joined) = tasks.join_next_with_id() => {
                failures.extend(ended(joined, false));
                tracing::error!("a service stopped, shutting the rest down");
            }
            joined = &mut store.task => {
                store_ended = Some(joined);
                tracing::error!("the embedded store stopped, shutting the services down");
            }
        }

        stop_services.fire();
        let deadline = tokio::time::Instant::now() + SERVICE_STOP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
                Ok(Some(joined)) => failures.extend(ended(joined, true)),
                Ok(None) => break,
                Err(_) => {
                    tasks.abort_all();
                    failures.extend(running.values().map(|service| RunError::StopTimeout {
                        service,
                        waited: SERVICE_STOP_TIMEOUT,
                    }));
                    break;
                }
            }
        }

        // The services are gone; now the store can finish its last requests.
        failures.extend(store.stop(store_ended).await);
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

/// `err: cause: cause`, for a log line.
pub(crate) fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

pub(crate) async fn bind(what: &'static str, port: u16) -> Result<TcpListener, StartError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

pub(crate) fn local_addr(
    listener: &TcpListener,
    what: &'static str,
) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        what,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        source,
    })
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
                    parsed.admin_port,
                    parsed.metrics_port,
                    parsed.dynamodb_port
                ),
                (50051, 50052, 50053, 50054, 9464, 8000)
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
                default.admin_port,
                default.metrics_port,
                default.dynamodb_port
            ),
            (50051, 50052, 50053, 50054, 9464, 8000)
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
            admin: "127.0.0.1:50054".parse().unwrap(),
            process_manager_health: "127.0.0.1:50055".parse().unwrap(),
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
            "127.0.0.1:50054",
            "http://127.0.0.1:9464/metrics",
            "http://127.0.0.1:8000",
            "published-events.jsonl",
            "grpcurl -plaintext 127.0.0.1:50051 list",
        ] {
            assert!(banner.contains(needle), "{needle} missing from\n{banner}");
        }
    }
}
