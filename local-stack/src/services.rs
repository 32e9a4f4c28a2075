//! The five services in the stack's process, each built and run as its
//! own binary would be (`Service::build_on`, `run_until`), each in its own
//! task with a registry of its own, and one `/metrics` endpoint for all.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use aws_config::SdkConfig;
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::Listeners;
use dynabridge_runtime::health::HealthArgs;
use dynabridge_runtime::page_token::PageTokenArgs;
use dynabridge_runtime::service::{Host, Service};
use dynabridge_runtime::telemetry::metrics::{CombinedMetrics, serve_metrics};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::{
    ADMIN_SERVICE, COMMAND_SERVICE, Endpoints, METRICS, Options, PROCESS_MANAGER, PROJECTOR,
    QUERY_SERVICE, StartError,
};
use crate::{bind, local_addr, shutdown};

/// The `source` of published events, as the projector's own default.
const EVENT_SOURCE: &str = "dynabridge";
/// The projector's longest pause between polls of an idle shard, in ms, as
/// its own default.
const IDLE_POLL_MAX_MS: u64 = 100;
/// The longest a `min_version` read waits, as the query service's own
/// default.
const QUERY_MAX_WAIT_MS: u64 = 5000;

/// The services' ports, bound before anything else starts.
#[derive(Debug)]
pub(crate) struct ServiceListeners {
    command: TcpListener,
    query: TcpListener,
    projector_health: TcpListener,
    admin: TcpListener,
    process_manager_health: TcpListener,
    metrics: TcpListener,
}

/// Where the services listen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceAddrs {
    pub(crate) command: SocketAddr,
    pub(crate) query: SocketAddr,
    pub(crate) projector_health: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) process_manager_health: SocketAddr,
    pub(crate) metrics: SocketAddr,
}

impl ServiceAddrs {
    /// What a stack without services (`--store-only`) reports.
    pub(crate) fn unbound() -> Self {
        let unbound = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self {
            command: unbound,
            query: unbound,
            projector_health: unbound,
            admin: unbound,
            process_manager_health: unbound,
            metrics: unbound,
        }
    }
}

impl ServiceListeners {
    pub(crate) async fn bind(options: &Options) -> Result<Self, StartError> {
        Ok(Self {
            command: bind(COMMAND_SERVICE, options.command_port).await?,
            query: bind(QUERY_SERVICE, options.query_port).await?,
            projector_health: bind(PROJECTOR, options.projector_health_port).await?,
            admin: bind(ADMIN_SERVICE, options.admin_port).await?,
            process_manager_health: bind(PROCESS_MANAGER, options.process_manager_health_port)
                .await?,
            metrics: bind(METRICS, options.metrics_port).await?,
        })
    }

    pub(crate) fn addrs(&self) -> Result<ServiceAddrs, StartError> {
        Ok(ServiceAddrs {
            command: local_addr(&self.command, COMMAND_SERVICE)?,
            query: local_addr(&self.query, QUERY_SERVICE)?,
            projector_health: local_addr(&self.projector_health, PROJECTOR)?,
            admin: local_addr(&self.admin, ADMIN_SERVICE)?,
            process_manager_health: local_addr(&self.process_manager_health, PROCESS_MANAGER)?,
            metrics: local_addr(&self.metrics, METRICS)?,
        })
    }
}

/// The running services: a task each, and one for the metrics endpoint.
#[derive(Debug)]
pub(crate) struct Services {
    pub(crate) tasks: JoinSet<anyhow::Result<()>>,
    pub(crate) names: HashMap<tokio::task::Id, &'static str>,
    pub(crate) stop: shutdown::Trigger,
}

impl Services {
    /// No services (`--store-only`).
    pub(crate) fn none() -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stop: shutdown::channel().0,
        }
    }

    /// Spawns the metrics endpoint and the five services on `listeners`,
    /// against the store `store` names, with the flags' defaults.
    pub(crate) fn spawn(
        listeners: ServiceListeners,
        store: &StoreArgs,
        sdk: &SdkConfig,
        endpoints: &Endpoints,
    ) -> Result<Self, StartError> {
        let (stop, signal) = shutdown::channel();
        let mut services = Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stop,
        };
        // One endpoint for the five services, each registering in a
        // registry of its own as its binary does.
        let mut metrics = CombinedMetrics::new().map_err(|err| StartError::Metrics(err.into()))?;
        let [
            command_registry,
            query_registry,
            projector_registry,
            process_registry,
            admin_registry,
        ] = [
            COMMAND_SERVICE,
            QUERY_SERVICE,
            PROJECTOR,
            PROCESS_MANAGER,
            ADMIN_SERVICE,
        ]
        .map(|name| metrics.service(name));
        let metrics_signal = signal.clone();
        let task = services.tasks.spawn(async move {
            serve_metrics(metrics, listeners.metrics, metrics_signal.wait())
                .await
                .context("serving metrics")
        });
        services.names.insert(task.id(), METRICS);

        let command = command_service::Config {
            store: store.clone(),
            listen: endpoints.command,
            aggregate_cache_capacity: command_service::commands::AggregateCache::DEFAULT_CAPACITY,
            append_max_in_flight: dynabridge_event_store::EventStore::DEFAULT_MAX_IN_FLIGHT,
            health: HealthArgs::default(),
            metrics_listen: None,
        };
        let query = query_service::Config {
            store: store.clone(),
            listen: endpoints.query,
            page_tokens: PageTokenArgs::default(),
            max_wait_ms: QUERY_MAX_WAIT_MS,
            health: HealthArgs::default(),
            metrics_listen: None,
        };
        let projector = projector::Config {
            store: store.clone(),
            health_listen: endpoints.projector_health,
            event_bus: None,
            event_source: EVENT_SOURCE.to_owned(),
            sink_path: endpoints.sink.clone(),
            max_concurrent_writes: projector::Config::DEFAULT_MAX_CONCURRENT_WRITES,
            consumer: projector::ConsumerArgs {
                idle_poll_max_ms: IDLE_POLL_MAX_MS,
                ..projector::ConsumerArgs::default()
            },
            metrics_listen: None,
        };
        let process = process_manager::Config {
            store: store.clone(),
            health_listen: endpoints.process_manager_health,
            max_concurrent_steps: process_manager::Config::DEFAULT_MAX_CONCURRENT_STEPS,
            step_batching: true,
            consumer: projector::ConsumerArgs {
                idle_poll_max_ms: IDLE_POLL_MAX_MS,
                ..projector::ConsumerArgs::default()
            },
            metrics_listen: None,
        };
        let admin = admin_service::Config {
            store: store.clone(),
            listen: endpoints.admin,
            page_tokens: PageTokenArgs::default(),
            health: HealthArgs::default(),
            metrics_listen: None,
            // No bus locally (events go to the sink): replays come from
            // the event store.
            event_bus: None,
            event_archive: None,
        };
        let host = |registry| Host {
            sdk: sdk.clone(),
            registry,
        };
        services.add::<command_service::App>(
            COMMAND_SERVICE,
            command,
            host(command_registry),
            listeners.command,
            &signal,
        );
        services.add::<query_service::App>(
            QUERY_SERVICE,
            query,
            host(query_registry),
            listeners.query,
            &signal,
        );
        services.add::<projector::App>(
            PROJECTOR,
            projector,
            host(projector_registry),
            listeners.projector_health,
            &signal,
        );
        services.add::<process_manager::App>(
            PROCESS_MANAGER,
            process,
            host(process_registry),
            listeners.process_manager_health,
            &signal,
        );
        services.add::<admin_service::App>(
            ADMIN_SERVICE,
            admin,
            host(admin_registry),
            listeners.admin,
            &signal,
        );
        Ok(services)
    }

    /// Builds service `S` on its bound gRPC port (its metrics go to the
    /// stack's one endpoint) and serves it until `signal`, both in the
    /// service's task, so that a service that cannot start is reported by
    /// `LocalStack::run_until` like one that fails later, and stops the
    /// rest.
    fn add<S: Service>(
        &mut self,
        name: &'static str,
        config: S::Config,
        host: Host,
        grpc: TcpListener,
        signal: &shutdown::Signal,
    ) {
        let signal = signal.clone();
        let task = self.tasks.spawn(async move {
            let listeners = Listeners {
                grpc,
                metrics: None,
            };
            S::build_on(config, &host, listeners)
                .await?
                .run_until(signal.wait())
                .await
        });
        self.names.insert(task.id(), name);
    }
}
