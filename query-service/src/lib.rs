//! The query service: the read side, `dynabridge.v1.QueryService`.
//!
//! It serves from the read models only. Architecture invariant: the query
//! service never reads the event store ([`read_models`] is handed the two
//! read-model tables and nothing else).
//!
//! - [`api`]: the gRPC adapter.
//! - [`request`]: requests parsed from their protobuf messages.
//! - [`queries`]: what each query does: `min_version` waits, paging.
//! - [`read_models`]: the DynamoDB reads.
//! - [`page_token`]: signed, opaque page tokens.
#![forbid(unsafe_code)]

pub mod api;
pub mod page_token;
pub mod queries;
pub mod read_models;
pub mod request;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use dynabridge::pb::query_service_server::QueryServiceServer;
use dynabridge::schema::user_profiles;
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::{ApiServer, Listeners};
use dynabridge_runtime::health::{HealthArgs, StoreProbe};
use tonic::server::NamedService as _;

use crate::api::QueryApi;
use crate::page_token::PageTokens;
use crate::queries::Queries;
use crate::read_models::ReadModels;

/// The shortest page token secret accepted: the output size of SHA-256.
pub const MIN_SECRET_LEN: usize = 32;
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
    /// Key that signs page tokens, at least 32 bytes. Replicas behind one
    /// load balancer need the same key; without one, a random key is made at
    /// start-up and tokens do not survive a restart.
    #[arg(long, env = "DYNABRIDGE_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,
    /// The longest a `min_version` read waits, in milliseconds, whatever the
    /// call's deadline (1 to 60000).
    #[arg(long, env = "DYNABRIDGE_MAX_WAIT_MS", default_value_t = 5000)]
    pub max_wait_ms: u64,
}

/// A configuration the service cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Store(String),
    #[error("the page token secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    #[error("max wait must be between 1 and {MAX_WAIT_MS_LIMIT} ms, not {0}")]
    MaxWait(u64),
}

impl Config {
    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate().map_err(ConfigError::Store)?;
        if self
            .page_token_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_LEN)
        {
            return Err(ConfigError::ShortSecret);
        }
        if !(1..=MAX_WAIT_MS_LIMIT).contains(&self.max_wait_ms) {
            return Err(ConfigError::MaxWait(self.max_wait_ms));
        }
        Ok(())
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
        env = "DYNABRIDGE_QUERY_METRICS_LISTEN",
        default_value = "127.0.0.1:9092"
    )]
    pub metrics_listen: SocketAddr,
}

/// The name health reports the query service under: readiness, SERVING
/// while the store is reachable (as is "").
pub const SERVICE_NAME: &str = QueryServiceServer::<QueryApi>::NAME;

/// The gRPC health name of the process: liveness, SERVING until shutdown
/// whatever the store does.
pub const LIVENESS_NAME: &str = "dynabridge.v1.QueryService.Liveness";

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
    config.validate().context("invalid configuration")?;
    health
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let tokens = match &config.page_token_secret {
        Some(secret) => PageTokens::new(secret.as_bytes())?,
        None => {
            tracing::warn!(
                "no page token secret configured: using a random key, so page tokens \
                 will not survive a restart nor work across replicas"
            );
            PageTokens::random()?
        }
    };
    let tables = config.store.tables();
    let client = dynabridge_aws::dynamodb_client(sdk);
    let read_models = ReadModels::new(client.clone(), &tables);
    let queries = Queries::new(
        read_models,
        tokens,
        Duration::from_millis(config.max_wait_ms),
    );

    // A read-model table, which the role may GetItem already. Architecture
    // invariant: never the event store.
    let probe = StoreProbe::get_item(client, tables.user_profiles(), user_profiles::USER_ID);
    let server = ApiServer::start(
        SERVICE_NAME,
        LIVENESS_NAME,
        probe,
        health,
        listeners,
        registry,
    )
    .await?;
    tracing::info!(addr = %server.addr(), table_prefix = %tables.prefix, max_wait_ms = config.max_wait_ms, "query service listening");
    server
        .serve(QueryServiceServer::new(QueryApi::new(queries)), shutdown)
        .await?;
    tracing::info!("query service stopped");
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
        assert!(matches!(config.validate(), Err(ConfigError::ShortSecret)));
        let config = parse(&["--page-token-secret", &"k".repeat(MIN_SECRET_LEN)]);
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
            observability: Observability,
        }
        let cli = Cli::try_parse_from(["query-service"]).unwrap();
        assert_eq!(cli.observability.health, HealthArgs::default());
        assert_eq!(
            cli.observability.metrics_listen,
            "127.0.0.1:9092".parse().unwrap()
        );
        let bad =
            Cli::try_parse_from(["query-service", "--health-check-interval-ms", "0"]).unwrap();
        assert!(bad.observability.health.validate().is_err());
    }
}
