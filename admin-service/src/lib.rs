//! The admin service: operating dynabridge, `dynabridge.v1.AdminService`.
//!
//! Architecture invariant: the admin service is the only binary that reads
//! the event store for reporting (the command side reads an aggregate to
//! decide; the projector reads one to fill a gap). It writes nothing the
//! other binaries own: only its own table, each event's `EventTypeBucket`
//! once ([`migration`]), and the status of a parked aggregate's header
//! ([`parked`]), which the projector acts on.
//!
//! - [`api`]: the gRPC adapter.
//! - [`request`]: requests parsed from their protobuf messages.
//! - [`lookback`]: history, state at a point, events by type.
//! - [`migration`]: the bucketed event-type index's migration.
//! - [`parked`]: the aggregates the projector parked; retries and skips
//!   asked for.
//! - [`status`]: where the projection stands.
//! - [`replays`]: replays of a window's events asked for, which the
//!   projector carries out.
//! - [`generations`]: read-model generations, rebuilt blue/green, switched
//!   and dropped.
#![forbid(unsafe_code)]

pub mod api;
pub mod archive;
pub mod generations;
pub mod lookback;
pub mod migration;
pub mod parked;
pub mod replays;
pub mod request;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;

use dynabridge::pb::admin_service_server::AdminServiceServer;
use dynabridge::schema::admin;
use dynabridge_aws::AwsArgs;
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::{ApiServer, Listeners};
use dynabridge_runtime::health::{HealthArgs, HealthSpec, Readiness, StoreProbe};
use dynabridge_runtime::page_token::PageTokenArgs;
use dynabridge_runtime::service::{Host, Service};
use tokio::task::JoinHandle;
use tonic::server::NamedService as _;

use crate::api::AdminApi;
use crate::archive::Archive;
use crate::generations::Generations;
use crate::lookback::Lookback;
use crate::migration::IndexMigration;
use crate::parked::ParkedAggregates;
use crate::replays::Replays;
use crate::status::ProjectionStatus;

/// Flags and environment of the admin service.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "DYNABRIDGE_ADMIN_LISTEN",
        default_value = "127.0.0.1:50054"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub page_tokens: PageTokenArgs,
    #[command(flatten)]
    pub health: HealthArgs,
    /// Address of the Prometheus `/metrics` endpoint; none in a process
    /// that serves its registry itself.
    #[arg(
        long,
        env = "DYNABRIDGE_ADMIN_METRICS_LISTEN",
        default_value = "127.0.0.1:9094"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// The EventBridge bus the projector publishes to: `ReplayEvents`
    /// replays its archive (the default source when set). Without it,
    /// replays come from the event store.
    #[arg(long, env = "DYNABRIDGE_EVENT_BUS")]
    pub event_bus: Option<String>,
    /// The bus's archive; default `<bus name>-archive`, as provisioning and
    /// the template name it.
    #[arg(long, env = "DYNABRIDGE_EVENT_ARCHIVE")]
    pub event_archive: Option<String>,
}

impl Config {
    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        self.store.validate()?;
        self.page_tokens.validate()?;
        if self.event_bus.as_deref().is_some_and(str::is_empty) {
            return Err("--event-bus must not be empty".into());
        }
        if self.event_archive.is_some() && self.event_bus.is_none() {
            return Err("--event-archive needs --event-bus".into());
        }
        self.health.validate()
    }
}

/// The name health reports the admin service under: readiness, SERVING
/// while the store is reachable (as is "").
pub const SERVICE_NAME: &str = AdminServiceServer::<AdminApi>::NAME;

/// The gRPC health name of the process: liveness, SERVING until shutdown
/// whatever the store does.
pub const LIVENESS_NAME: &str = "dynabridge.v1.AdminService.Liveness";

/// The admin service, bound and set up: [`App::build`], then
/// [`App::run_until`].
///
/// [`App::build`]: dynabridge_runtime::service::Service::build
pub struct App {
    server: ApiServer,
    api: AdminApi,
    migration: IndexMigration,
    migration_task: JoinHandle<()>,
    generations: Generations,
}

impl App {
    /// The event-type index migration, as this instance sees it.
    pub fn migration(&self) -> &IndexMigration {
        &self.migration
    }
}

impl Service for App {
    type Config = Config;
    const NAME: &'static str = "admin-service";

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
        let tokens = config.page_tokens.tokens()?;
        let tables = config.store.tables();
        let client = dynabridge_aws::dynamodb_client(&host.sdk);
        // Its own table, which the role may GetItem already.
        let probe = StoreProbe::get_item(client.clone(), tables.admin(), admin::NAME);
        let health = HealthSpec {
            service: SERVICE_NAME,
            liveness: LIVENESS_NAME,
            probe,
            args: config.health.clone(),
            readiness: Readiness::Store,
        };
        let server =
            ApiServer::start(Some(SERVICE_NAME), health, listeners, &host.registry).await?;
        let (migration, migration_task) = IndexMigration::start(client.clone(), &tables);
        let parked = ParkedAggregates::new(
            client.clone(),
            tables.parked(),
            tables.admin(),
            tokens.clone(),
        );
        let status = ProjectionStatus::new(client.clone(), tables.clone());
        let generations = Generations::new(client.clone(), tables.clone(), status.clone());
        // A rebuild or drop an earlier instance left unfinished goes on;
        // if the store cannot say now, the next start does.
        if let Err(err) = generations.resume().await {
            tracing::warn!(error = %err, "reading the read-model generations failed; unfinished rebuilds resume at the next start");
        }
        let client_for_replays = client.clone();
        let archive = config.event_bus.as_ref().map(|bus| {
            let archive = config.event_archive.clone().unwrap_or_else(|| {
                // The bus by name or ARN (`...:event-bus/<name>`).
                let name = bus
                    .rsplit_once("event-bus/")
                    .map_or(bus.as_str(), |(_, n)| n);
                format!("{name}-archive")
            });
            Archive::new(
                dynabridge_aws::eventbridge_client(&host.sdk),
                bus.clone(),
                archive,
                &tables.prefix,
            )
        });
        let lookback = Lookback::new(client, tables.event_store(), tokens, migration.clone());
        tracing::info!(addr = %server.addr(), table_prefix = %tables.prefix, "admin service listening");
        Ok(Self {
            server,
            api: AdminApi::new(
                lookback,
                parked,
                status,
                generations.clone(),
                Replays::new(client_for_replays, tables.replays(), archive),
            ),
            migration,
            migration_task,
            generations,
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
            .serve(AdminServiceServer::new(self.api), shutdown)
            .await;
        self.migration_task.abort();
        self.generations.abort();
        served?;
        tracing::info!("admin service stopped");
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
        Cli::try_parse_from(std::iter::once("admin-service").chain(args.iter().copied()))
            .unwrap()
            .config
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = parse(&[]);
        config.validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:50054".parse().unwrap());
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9094".parse().unwrap())
        );
        assert_eq!(config.health, HealthArgs::default());
    }

    #[test]
    fn bad_flags_are_refused_before_binding() {
        assert!(parse(&["--page-token-secret", "short"]).validate().is_err());
        assert!(parse(&["--table-prefix", "no spaces"]).validate().is_err());
        assert!(
            parse(&["--health-check-interval-ms", "0"])
                .validate()
                .is_err()
        );
    }

    #[test]
    fn health_uses_the_proto_service_name() {
        assert_eq!(SERVICE_NAME, "dynabridge.v1.AdminService");
        assert_eq!(LIVENESS_NAME, format!("{SERVICE_NAME}.Liveness"));
    }
}
