//! The command service: the write side, `dynabridge.v1.CommandService`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;

use crate::commands::{AggregateCache, AggregateCacheMetrics, CommandHandler};
use anyhow::Context as _;
use dynabridge::pb::command_service_server::CommandServiceServer;
use dynabridge::schema::idempotency;
use dynabridge_aws::AwsArgs;
use dynabridge_event_store::{EventStore, GroupCommitMetrics};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::ApiServer;
use dynabridge_runtime::grpc::Listeners;
use dynabridge_runtime::health::{HealthArgs, HealthSpec, Readiness, StoreProbe};
use dynabridge_runtime::service::{Host, Service};
use tonic::server::NamedService as _;

pub mod commands;
pub mod parse;
mod service;

pub use service::CommandApi;

/// The gRPC health name of this service: readiness, SERVING while the store
/// is reachable (as is "").
pub const SERVICE_NAME: &str = CommandServiceServer::<CommandApi>::NAME;

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
    #[command(flatten)]
    pub health: HealthArgs,
    /// Address of the Prometheus `/metrics` endpoint; none in a process
    /// that serves its registry itself.
    #[arg(
        long,
        env = "DYNABRIDGE_COMMAND_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub metrics_listen: Option<SocketAddr>,
}

fn in_flight(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("{value:?} is not a whole number from 1 to 1024")),
    }
}

impl Config {
    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        self.store.validate()?;
        self.health.validate()
    }
}

/// The command service, bound and set up: [`App::build`], then
/// [`App::run_until`].
pub struct App {
    server: ApiServer,
    api: CommandApi,
}

impl Service for App {
    type Config = Config;
    const NAME: &'static str = "command-service";

    fn validate(config: &Config) -> Result<(), String> {
        config.validate()
    }

    fn aws(config: &Config) -> &AwsArgs {
        &config.store.aws
    }

    fn listen(config: &Config) -> (SocketAddr, Option<SocketAddr>) {
        (config.listen, config.metrics_listen)
    }

    async fn start_on(config: Config, host: &Host, listeners: Listeners) -> anyhow::Result<Self> {
        let registry = &host.registry;
        let tables = config.store.tables();
        let client = dynabridge_aws::dynamodb_client(&host.sdk);
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
        let health = HealthSpec {
            service: SERVICE_NAME,
            liveness: LIVENESS_NAME,
            probe,
            args: config.health.clone(),
            readiness: Readiness::Store,
        };
        // The API's gRPC name is the readiness name too.
        let server = ApiServer::start(Some(SERVICE_NAME), health, listeners, registry).await?;
        tracing::info!(
            addr = %server.addr(),
            event_store = %tables.event_store(),
            "command service listening"
        );
        Ok(Self { server, api })
    }

    fn local_addr(&self) -> SocketAddr {
        self.server.addr()
    }

    fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.server
            .serve(CommandServiceServer::new(self.api), shutdown)
            .await?;
        tracing::info!("command service stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn health_and_metrics_have_documented_defaults() {
        let cli = Cli::try_parse_from(["command-service"]).unwrap();
        assert_eq!(cli.config.health, HealthArgs::default());
        assert_eq!(cli.config.health.health_check_interval_ms, 5_000);
        assert_eq!(
            cli.config.metrics_listen,
            Some("127.0.0.1:9091".parse().unwrap())
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
