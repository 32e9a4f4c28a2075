//! The process manager: the purchase process (seed 004) as a deployable of
//! its own. It follows the event store's stream through the same reading
//! code as the projector (`dynabridge-stream`: leases, checkpoints in a
//! table of its own, lineage, trimmed windows caught up), and takes each
//! purchase through its steps ([`process`]) with the command path's
//! decisions across aggregates. Any number of instances may run; each shard
//! is read by the one holding its lease.
//!
//! It writes only the event store (and the idempotency and snapshots tables
//! the command path keeps): it touches no read model, publishes nothing,
//! and answers no API but its health and metrics.
#![forbid(unsafe_code)]

pub mod metrics;
pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use anyhow::Context as _;
use command_service::commands::CommandHandler;
use dynabridge::schema::idempotency;
use dynabridge_aws::AwsArgs;
use dynabridge_event_store::{EventStore, GroupCommitMetrics};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::Listeners;
use dynabridge_runtime::health::StoreProbe;
use dynabridge_runtime::service::{Host, Service};
use dynabridge_stream::config::ConsumerArgs;
use dynabridge_stream::host::{ConsumerHost, ConsumerSpec, Wiring};
use dynabridge_stream::monitor::HealthNames;

use crate::metrics::ProcessMetrics;
use crate::process::PurchaseProcess;

/// Readiness: SERVING once the stream is found, while the store is
/// reachable and the lag is within `--max-lag-ms` (as is "").
pub const HEALTH_SERVICE: &str = "dynabridge.v1.ProcessManager";

/// Liveness: NOT_SERVING when a processing loop has made no progress
/// within `--liveness-window-ms`.
pub const LIVENESS_SERVICE: &str = "dynabridge.v1.ProcessManager.Liveness";

pub const HEALTH_NAMES: HealthNames = HealthNames {
    readiness: HEALTH_SERVICE,
    liveness: LIVENESS_SERVICE,
    consumer: "process manager",
};

/// Flags and environment of the process manager.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address of the gRPC health server.
    #[arg(
        long,
        env = "DYNABRIDGE_PROCESS_MANAGER_HEALTH_LISTEN",
        default_value = "127.0.0.1:50055"
    )]
    pub health_listen: SocketAddr,
    /// Purchases a shard reader takes steps for at once within a batch (at
    /// least 1); each purchase's steps stay in order.
    #[arg(
        long,
        env = "DYNABRIDGE_PROCESS_MANAGER_MAX_CONCURRENT_STEPS",
        default_value_t = Config::DEFAULT_MAX_CONCURRENT_STEPS
    )]
    pub max_concurrent_steps: usize,
    /// Decide the reservations of a batch that ask for the same products
    /// together, and append them in one transaction (`false`: each alone,
    /// one store round trip each).
    #[arg(
        long,
        env = "DYNABRIDGE_PROCESS_MANAGER_STEP_BATCHING",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub step_batching: bool,
    /// Polling, leases and health, as every consumer of the stream has.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    /// Address of the Prometheus `/metrics` endpoint; none in a process
    /// that serves its registry itself.
    #[arg(
        long,
        env = "DYNABRIDGE_PROCESS_MANAGER_METRICS_LISTEN",
        default_value = "127.0.0.1:9095"
    )]
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    pub const DEFAULT_MAX_CONCURRENT_STEPS: usize = 32;

    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        self.store.validate()?;
        if self.max_concurrent_steps == 0 {
            return Err("max concurrent steps must be at least 1".into());
        }
        self.consumer.validate()
    }
}

/// The process manager, bound and set up, its health server answering.
pub struct App {
    host: ConsumerHost,
    process: Arc<PurchaseProcess>,
}

impl Service for App {
    type Config = Config;
    const NAME: &'static str = "process-manager";

    fn validate(config: &Config) -> Result<(), String> {
        config.validate()
    }

    fn aws(config: &Config) -> &AwsArgs {
        &config.store.aws
    }

    fn listen(config: &Config) -> (SocketAddr, Option<SocketAddr>) {
        (config.health_listen, config.metrics_listen)
    }

    async fn start_on(config: Config, host: &Host, listeners: Listeners) -> anyhow::Result<Self> {
        let registry = &host.registry;
        let tables = config.store.tables();
        let dynamodb = dynabridge_aws::dynamodb_client(&host.sdk);
        let metrics = ProcessMetrics::new().context("creating metrics")?;
        metrics.register(registry).context("registering metrics")?;
        let store = EventStore::new(dynamodb.clone(), tables.clone()).with_group_commit(
            EventStore::DEFAULT_MAX_IN_FLIGHT,
            GroupCommitMetrics::new().context("creating metrics")?,
        );
        store
            .register_metrics(registry)
            .context("registering metrics")?;
        // Validated above; a caller that skipped that gets one at a time.
        let max_concurrent =
            NonZeroUsize::new(config.max_concurrent_steps).unwrap_or(NonZeroUsize::MIN);
        let process =
            PurchaseProcess::new(CommandHandler::new(store), max_concurrent, metrics.clone());
        let process = Arc::new(if config.step_batching {
            process
        } else {
            process.without_batching()
        });
        let spec = ConsumerSpec {
            names: HEALTH_NAMES,
            lease_name: "process-manager",
            // The store check reads the idempotency table, which the
            // command path reads (GetItem) for every retried step.
            probe: StoreProbe::get_item(dynamodb, tables.idempotency(), idempotency::REQUEST_ID),
            args: config.consumer,
            metrics: metrics.stream.clone(),
            // It publishes nothing: no bus to wait for.
            output_found: None,
            event_store_table: tables.event_store(),
            checkpoints_table: tables.process_checkpoints(),
        };
        let host = ConsumerHost::start(spec, host, listeners).await?;
        Ok(Self { host, process })
    }

    fn local_addr(&self) -> SocketAddr {
        self.host.addr()
    }

    fn metrics_addr(&self) -> Option<SocketAddr> {
        self.host.metrics_addr()
    }

    async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { host, process } = self;
        host.run_until(
            shutdown,
            |_found| async move { Ok(Wiring::handler(process)) },
        )
        .await
    }
}
