//! The query service: the read side, `dynabridge.v1.QueryService`.
//!
//! It serves from the read models only. Architecture invariant: the query
//! service never reads the event store ([`reader`] is handed the two
//! read-model tables and nothing else).
//!
//! - [`api`]: the gRPC adapter.
//! - [`request`]: requests parsed from their protobuf messages.
//! - [`queries`]: what each query does: `min_version` waits, paging.
//! - [`reader`]: the DynamoDB reads.
//! - [`page_token`]: signed, opaque page tokens.
#![forbid(unsafe_code)]

pub mod api;
pub mod generation;
pub mod page_token;
pub mod queries;
pub mod reader;
pub mod request;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use dynabridge::pb::query_service_server::QueryServiceServer;
use dynabridge::schema::user_profiles;
use dynabridge_aws::AwsArgs;
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::ApiServer;
use dynabridge_runtime::grpc::Listeners;
use dynabridge_runtime::health::{HealthArgs, HealthSpec, Readiness, StoreProbe};
use dynabridge_runtime::page_token::PageTokenArgs;
use dynabridge_runtime::service::{Host, Service};
use tonic::server::NamedService as _;

use crate::api::QueryApi;
use crate::queries::Queries;
use crate::reader::ReadModelReader;

/// The longest `max_wait_ms` accepted: waits beyond it hold connections
/// for nothing; a client that needs longer can retry.
pub const MAX_WAIT_MS_LIMIT: u64 = 60_000;

/// Flags and environment of the query service.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "DYNABRIDGE_QUERY_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub page_tokens: PageTokenArgs,
    /// The longest a `min_version` read waits, in milliseconds, whatever the
    /// call's deadline (1 to 60000).
    #[arg(long, env = "DYNABRIDGE_MAX_WAIT_MS", default_value_t = 5000)]
    pub max_wait_ms: u64,
    #[command(flatten)]
    pub health: HealthArgs,
    /// Address of the Prometheus `/metrics` endpoint; none in a process
    /// that serves its registry itself.
    #[arg(
        long,
        env = "DYNABRIDGE_QUERY_METRICS_LISTEN",
        default_value = "127.0.0.1:9092"
    )]
    pub metrics_listen: Option<SocketAddr>,
}

/// A configuration the service cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    PageTokens(String),
    #[error("max wait must be between 1 and {MAX_WAIT_MS_LIMIT} ms, not {0}")]
    MaxWait(u64),
    #[error("{0}")]
    Health(String),
}

impl Config {
    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate().map_err(ConfigError::Store)?;
        self.page_tokens
            .validate()
            .map_err(ConfigError::PageTokens)?;
        if !(1..=MAX_WAIT_MS_LIMIT).contains(&self.max_wait_ms) {
            return Err(ConfigError::MaxWait(self.max_wait_ms));
        }
        self.health.validate().map_err(ConfigError::Health)
    }
}

/// The name health reports the query service under: readiness, SERVING
/// while the store is reachable (as is "").
pub const SERVICE_NAME: &str = QueryServiceServer::<QueryApi>::NAME;

/// The gRPC health name of the process: liveness, SERVING until shutdown
/// whatever the store does.
pub const LIVENESS_NAME: &str = "dynabridge.v1.QueryService.Liveness";

/// The query service, bound and set up: [`App::build`], then
/// [`App::run_until`].
pub struct App {
    server: ApiServer,
    api: QueryApi,
    /// Reads which read-model generation is served, every second.
    generation_refresh: tokio::task::JoinHandle<()>,
}

impl Service for App {
    type Config = Config;
    const NAME: &'static str = "query-service";

    fn validate(config: &Config) -> Result<(), String> {
        config.validate().map_err(|err| err.to_string())
    }

    fn aws(config: &Config) -> &AwsArgs {
        &config.store.aws
    }

    fn listen(config: &Config) -> (SocketAddr, Option<SocketAddr>) {
        (config.listen, config.metrics_listen)
    }

    async fn start_on(config: Config, host: &Host, listeners: Listeners) -> anyhow::Result<Self> {
        let tokens = config.page_tokens.tokens()?;
        let tables = config.store.tables();
        let client = dynabridge_aws::dynamodb_client(&host.sdk);
        let read_models = ReadModelReader::new(client.clone(), &tables);
        let generation_refresh = read_models.served().spawn_refresh();
        let queries = Queries::new(
            read_models,
            tokens,
            Duration::from_millis(config.max_wait_ms),
        );
        // A read-model table, which the role may GetItem already.
        // Architecture invariant: never the event store.
        let probe = StoreProbe::get_item(client, tables.user_profiles(), user_profiles::USER_ID);
        let health = HealthSpec {
            service: SERVICE_NAME,
            liveness: LIVENESS_NAME,
            probe,
            args: config.health.clone(),
            readiness: Readiness::Store,
        };
        // The API's gRPC name is the readiness name too.
        let server =
            ApiServer::start(Some(SERVICE_NAME), health, listeners, &host.registry).await?;
        tracing::info!(addr = %server.addr(), table_prefix = %tables.prefix, max_wait_ms = config.max_wait_ms, "query service listening");
        Ok(Self {
            server,
            api: QueryApi::new(queries),
            generation_refresh,
        })
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
        let served = self
            .server
            .serve(QueryServiceServer::new(self.api), shutdown)
            .await;
        self.generation_refresh.abort();
        served?;
        tracing::info!("query service stopped");
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

    fn parse(args: &[&str]) -> Config {
        Cli::try_parse_from(std::iter::once("query-service").chain(args.iter().copied()))
            .unwrap()
            .config
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]);
        assert_eq!(config.max_wait_ms, 5000);
        config.validate().unwrap();
    }

    #[test]
    fn short_secrets_are_refused() {
        let config = parse(&["--page-token-secret", "short"]);
        assert!(matches!(config.validate(), Err(ConfigError::PageTokens(_))));
        let config = parse(&["--page-token-secret", &"k".repeat(32)]);
        config.validate().unwrap();
    }

    #[test]
    fn max_wait_is_bounded() {
        for bad in ["0", "60001"] {
            let config = parse(&["--max-wait-ms", bad]);
            assert!(
                matches!(config.validate(), Err(ConfigError::MaxWait(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_table_prefixes_are_refused() {
        let config = parse(&["--table-prefix", "no spaces"]);
        assert!(matches!(config.validate(), Err(ConfigError::Store(_))));
    }

    #[test]
    fn health_uses_the_proto_service_name() {
        assert_eq!(SERVICE_NAME, "dynabridge.v1.QueryService");
        assert_eq!(LIVENESS_NAME, format!("{SERVICE_NAME}.Liveness"));
    }

    #[test]
    fn health_and_metrics_have_documented_defaults() {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let cli = Cli::try_parse_from(["query-service"]).unwrap();
        assert_eq!(cli.config.health, HealthArgs::default());
        assert_eq!(
            cli.config.metrics_listen,
            Some("127.0.0.1:9092".parse().unwrap())
        );
        let bad =
            Cli::try_parse_from(["query-service", "--health-check-interval-ms", "0"]).unwrap();
        assert!(bad.config.health.validate().is_err());
    }
}
