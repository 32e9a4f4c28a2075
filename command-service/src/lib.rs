//! The command service: the write side, `dynabridge.v1.CommandService`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;

use crate::commands::{AggregateCache, AggregateCacheMetrics, CommandHandler};
use anyhow::Context as _;
use dynabridge::pb::command_service_server::CommandServiceServer;
use dynabridge::schema::idempotency;
use dynabridge_event_store::{EventStore, GroupCommitMetrics};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::{ApiServer, Listeners};
use dynabridge_runtime::health::{HealthArgs, StoreProbe};

pub mod commands;
mod parse;
mod service;

pub use service::CommandApi;

/// The gRPC health name of this service: readiness, SERVING while the store
/// is reachable (as is "").
pub const SERVICE_NAME: &str = "dynabridge.v1.CommandService";

/// The gRPC health name of the process: liveness, SERVING until shutdown
/// whatever the store does.
pub const LIVENESS_NAME: &str = "dynabridge.v1.CommandService.Liveness";

/// Flags and environment of the command service.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "DYNABRIDGE_COMMAND_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Aggregates whose state is kept in memory between commands, so that a
    /// command on one of them is one DynamoDB call instead of two; 0 turns
    /// the cache off. The append validates a cached state, so replicas
    /// writing the same aggregates stay correct.
    #[arg(
        long,
        env = "DYNABRIDGE_AGGREGATE_CACHE_CAPACITY",
        default_value_t = AggregateCache::DEFAULT_CAPACITY
    )]
    pub aggregate_cache_capacity: usize,
    /// Append transactions outstanding at once. Commands that arrive while
    /// all are outstanding share the next transaction (group commit), so a
    /// lower number means fewer, larger transactions under load. Raise it
    /// for a store that serves many requests at once with high latency,
    /// such as DynamoDB itself under a heavy load. 1 to 1024.
    #[arg(
        long,
        env = "DYNABRIDGE_APPEND_MAX_IN_FLIGHT",
        default_value_t = EventStore::DEFAULT_MAX_IN_FLIGHT,
        value_parser = in_flight
    )]
    pub append_max_in_flight: usize,
}

fn in_flight(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("{value:?} is not a whole number from 1 to 1024")),
    }
}

/// The binary's flags beyond [`Config`]: health checks and metrics.
#[derive(Clone, Debug, clap::Args)]
pub struct Observability {
    #[command(flatten)]
    pub health: HealthArgs,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(
        long,
        env = "DYNABRIDGE_COMMAND_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub metrics_listen: SocketAddr,
}

/// Serves on `listener` until `shutdown` resolves, then turns NOT_SERVING
/// and drains in-flight requests. Health checks at the default interval, no
/// metrics endpoint: see [`run_with`].
pub async fn run(
    config: Config,
    sdk: &aws_config::SdkConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listeners = Listeners {
        grpc: listener,
        metrics: None,
    };
    run_with(config, &HealthArgs::default(), sdk, listeners, shutdown).await
}

/// [`run`], with the health checks of `health` and the metrics endpoint
/// on `listeners.metrics`, if any.
pub async fn run_with(
    config: Config,
    health: &HealthArgs,
    sdk: &aws_config::SdkConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    run_with_registry(config, health, sdk, listeners, &registry, shutdown).await
}

/// [`run_with`], with the service's metrics registered in `registry`
/// rather than in a registry of its own: for a process that serves the
/// metrics of several services together (the local stack, with
/// `listeners.metrics` none). `registry` must not hold them already.
pub async fn run_with_registry(
    config: Config,
    health: &HealthArgs,
    sdk: &aws_config::SdkConfig,
    listeners: Listeners,
    registry: &prometheus::Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tables = config.store.tables();
    let client = dynabridge_aws::dynamodb_client(sdk);
    let cache_metrics = AggregateCacheMetrics::new().context("creating metrics")?;
    let store = EventStore::new(client.clone(), tables.clone()).with_group_commit(
        config.append_max_in_flight,
        GroupCommitMetrics::new().context("creating metrics")?,
    );
    store
        .register_metrics(registry)
        .context("registering metrics")?;
    let api = CommandApi::new(CommandHandler::new(store).with_aggregate_cache(
        AggregateCache::new(config.aggregate_cache_capacity, cache_metrics.clone()),
    ));

    cache_metrics
        .register(registry)
        .context("registering metrics")?;
    // The idempotency table: the command service's own, and its role may
    // GetItem it already.
    let probe = StoreProbe::get_item(client, tables.idempotency(), idempotency::REQUEST_ID);
    let server = ApiServer::start(
        SERVICE_NAME,
        LIVENESS_NAME,
        probe,
        health,
        listeners,
        registry,
    )
    .await?;
    tracing::info!(
        addr = %server.addr(),
        event_store = %tables.event_store(),
        "command service listening"
    );
    server
        .serve(CommandServiceServer::new(api), shutdown)
        .await?;
    tracing::info!("command service stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
        #[command(flatten)]
        observability: Observability,
    }

    #[test]
    fn health_and_metrics_have_documented_defaults() {
        let cli = Cli::try_parse_from(["command-service"]).unwrap();
        assert_eq!(cli.observability.health, HealthArgs::default());
        assert_eq!(cli.observability.health.health_check_interval_ms, 5_000);
        assert_eq!(
            cli.observability.metrics_listen,
            "127.0.0.1:9091".parse().unwrap()
        );
        assert_eq!(LIVENESS_NAME, format!("{SERVICE_NAME}.Liveness"));
    }

    #[test]
    fn the_aggregate_cache_is_on_by_default_and_0_turns_it_off() {
        let cli = Cli::try_parse_from(["command-service"]).unwrap();
        assert_eq!(cli.config.aggregate_cache_capacity, 10_000);
        let off =
            Cli::try_parse_from(["command-service", "--aggregate-cache-capacity", "0"]).unwrap();
        assert_eq!(off.config.aggregate_cache_capacity, 0);
    }
}
