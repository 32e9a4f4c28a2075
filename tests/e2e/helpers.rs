//! `spawn_app()`: a fresh store, the tables, and the four services on
//! 127.0.0.1 port 0, talking to each other only through the store.
//!
//! The store is an in-process dynoxide by default. With
//! `DYNABRIDGE_TEST_ENDPOINT` set (for example to a moto server), every
//! service talks to that endpoint instead, under a unique table prefix.
//!
//! The projector publishes to the JSON-lines sink, or with
//! [`spawn_app_with`] and `publish_to_bus` to the bus `<prefix>-events` at
//! the same endpoint (which then has to speak EventBridge).

use std::net::SocketAddr;
use std::path::PathBuf;

use aws_sdk_dynamodb::types::AttributeValue;
use command_service::commands::AggregateCache;
use dynabridge::pb::admin_service_client::AdminServiceClient;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::schema::{Tables, event_store};
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::health::HealthArgs;
use dynabridge_runtime::page_token::PageTokenArgs;
use dynabridge_runtime::service::Host;
use dynabridge_testkit::{EmbeddedStore, SpawnedApp, spawn_app as spawn_service};
use tonic::transport::Channel;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Stops a service, which must stop cleanly.
async fn stop(running: SpawnedApp) {
    let result = running.stop().await;
    assert!(result.is_ok(), "service did not stop cleanly: {result:?}");
}

/// The `source` of the events the test projector publishes.
pub const EVENT_SOURCE: &str = "dynabridge.test";

/// A port of the kernel's choosing on loopback: each service reports the
/// one it got (`App::local_addr`).
const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// What [`spawn_app_with`] varies; the default is what [`spawn_app`] runs.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// Publish to the bus `<prefix>-events` instead of the sink. The bus is
    /// not provisioned here; until it exists, the projector keeps retrying.
    pub publish_to_bus: bool,
}

pub struct TestApp {
    pub command: CommandServiceClient<Channel>,
    pub query: QueryServiceClient<Channel>,
    pub admin: AdminServiceClient<Channel>,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub tables: Tables,
    pub sink_path: PathBuf,
    pub store_endpoint: String,
    sdk: aws_config::SdkConfig,
    store_args: StoreArgs,
    options: AppOptions,
    command_service: Option<SpawnedApp>,
    query_service: Option<SpawnedApp>,
    projector: Option<SpawnedApp>,
    process_manager: Option<SpawnedApp>,
    admin_service: Option<SpawnedApp>,
    _store: Option<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

pub fn unique_prefix() -> String {
    dynabridge_testkit::unique_prefix("t")
}

/// The store the tests use: `DYNABRIDGE_TEST_ENDPOINT` if set, else an
/// embedded one in this process (returned, to keep it running).
pub async fn test_store() -> (String, Option<EmbeddedStore>) {
    match std::env::var("DYNABRIDGE_TEST_ENDPOINT") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let store = EmbeddedStore::start().await;
            (store.endpoint(), Some(store))
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    try_spawn_app(options).await.expect("spawn app")
}

async fn try_spawn_app(options: AppOptions) -> Result<TestApp, Error> {
    dynabridge_runtime::grpc::init_tracing();
    let (store_endpoint, store) = test_store().await;
    let store_args = StoreArgs {
        table_prefix: unique_prefix(),
        aws: AwsArgs {
            endpoint_url: Some(store_endpoint.clone()),
            region: Some("us-east-1".into()),
        },
    };
    let sdk = load_sdk_config(&store_args.aws, Some(StaticCredentials::local())).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let tables = store_args.tables();
    dynabridge_provision::ensure_tables(&dynamo, &tables).await?;

    let dir = tempfile::tempdir()?;
    let sink_path = dir.path().join("published.jsonl");
    let mut app = TestApp {
        command: CommandServiceClient::new(
            Channel::from_static("http://127.0.0.1:1").connect_lazy(),
        ),
        query: QueryServiceClient::new(Channel::from_static("http://127.0.0.1:1").connect_lazy()),
        admin: AdminServiceClient::new(Channel::from_static("http://127.0.0.1:1").connect_lazy()),
        dynamo,
        tables,
        sink_path,
        store_endpoint,
        sdk,
        store_args,
        options,
        command_service: None,
        query_service: None,
        projector: None,
        process_manager: None,
        admin_service: None,
        _store: store,
        _dir: dir,
    };
    app.start_command_service().await?;
    app.start_query_service().await?;
    app.start_projector().await?;
    app.start_process_manager().await?;
    app.start_admin_service().await?;
    Ok(app)
}

impl TestApp {
    async fn start_command_service(&mut self) -> Result<(), Error> {
        let config = command_service::Config {
            store: self.store_args.clone(),
            listen: LOOPBACK,
            aggregate_cache_capacity: AggregateCache::DEFAULT_CAPACITY,
            append_max_in_flight: dynabridge_event_store::EventStore::DEFAULT_MAX_IN_FLIGHT,
            health: HealthArgs::default(),
            metrics_listen: None,
        };
        let app =
            spawn_service::<command_service::App>(config, &Host::new(self.sdk.clone())).await?;
        self.command = CommandServiceClient::new(app.channel().await);
        self.command_service = Some(app);
        Ok(())
    }

    async fn start_query_service(&mut self) -> Result<(), Error> {
        let config = query_service::Config {
            store: self.store_args.clone(),
            listen: LOOPBACK,
            page_tokens: PageTokenArgs {
                page_token_secret: Some("end-to-end-test-page-token-secret".into()),
            },
            max_wait_ms: 5_000,
            health: HealthArgs::default(),
            metrics_listen: None,
        };
        let app = spawn_service::<query_service::App>(config, &Host::new(self.sdk.clone())).await?;
        self.query = QueryServiceClient::new(app.channel().await);
        self.query_service = Some(app);
        Ok(())
    }

    async fn start_projector(&mut self) -> Result<(), Error> {
        let config = projector::Config {
            store: self.store_args.clone(),
            health_listen: LOOPBACK,
            event_bus: self.options.publish_to_bus.then(|| self.tables.event_bus()),
            event_source: EVENT_SOURCE.into(),
            sink_path: self.sink_path.clone(),
            max_concurrent_writes: projector::Config::DEFAULT_MAX_CONCURRENT_WRITES,
            consumer: projector::ConsumerArgs {
                idle_poll_max_ms: 20,
                ..projector::ConsumerArgs::default()
            },
            metrics_listen: None,
        };
        self.projector =
            Some(spawn_service::<projector::App>(config, &Host::new(self.sdk.clone())).await?);
        Ok(())
    }

    async fn start_process_manager(&mut self) -> Result<(), Error> {
        let config = process_manager::Config {
            store: self.store_args.clone(),
            health_listen: LOOPBACK,
            max_concurrent_steps: process_manager::Config::DEFAULT_MAX_CONCURRENT_STEPS,
            step_batching: true,
            consumer: dynabridge_stream::config::ConsumerArgs {
                idle_poll_max_ms: 20,
                ..dynabridge_stream::config::ConsumerArgs::default()
            },
            metrics_listen: None,
        };
        self.process_manager = Some(
            spawn_service::<process_manager::App>(config, &Host::new(self.sdk.clone())).await?,
        );
        Ok(())
    }

    /// Stops the process manager gracefully: purchases wait in the stream.
    pub async fn stop_process_manager(&mut self) {
        if let Some(running) = self.process_manager.take() {
            stop(running).await;
        }
    }

    /// Starts a process manager, when none runs: it resumes from its
    /// checkpoint.
    pub async fn resume_process_manager(&mut self) {
        assert!(
            self.process_manager.is_none(),
            "a process manager runs already"
        );
        self.start_process_manager()
            .await
            .expect("start process manager");
    }

    async fn start_admin_service(&mut self) -> Result<(), Error> {
        let config = admin_service::Config {
            store: self.store_args.clone(),
            listen: LOOPBACK,
            page_tokens: PageTokenArgs {
                page_token_secret: Some("end-to-end-test-admin-page-token-secret".into()),
            },
            health: HealthArgs::default(),
            metrics_listen: None,
            // Archive replays on the bus the projector publishes to.
            event_bus: self.options.publish_to_bus.then(|| self.tables.event_bus()),
            event_archive: None,
        };
        let app = spawn_service::<admin_service::App>(config, &Host::new(self.sdk.clone())).await?;
        self.admin = AdminServiceClient::new(app.channel().await);
        self.admin_service = Some(app);
        Ok(())
    }

    /// Stops the projector gracefully: events wait in the stream.
    pub async fn stop_projector(&mut self) {
        if let Some(running) = self.projector.take() {
            stop(running).await;
        }
    }

    /// Starts a projector, when none runs: it resumes from its checkpoint.
    pub async fn resume_projector(&mut self) {
        assert!(self.projector.is_none(), "a projector runs already");
        self.start_projector().await.expect("start projector");
    }

    /// Stops the admin service gracefully and starts a new one: its
    /// migration looks at the store again.
    pub async fn restart_admin_service(&mut self) {
        if let Some(running) = self.admin_service.take() {
            stop(running).await;
        }
        self.start_admin_service()
            .await
            .expect("restart admin service");
    }

    /// Stops the command service gracefully and starts a new one on a new
    /// port: nothing in memory survives, only the store.
    pub async fn restart_command_service(&mut self) {
        if let Some(running) = self.command_service.take() {
            stop(running).await;
        }
        self.start_command_service()
            .await
            .expect("restart command service");
    }

    /// The AWS configuration of the services: the test endpoint, region
    /// and credentials.
    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    pub fn command_addr(&self) -> SocketAddr {
        self.command_service
            .as_ref()
            .map(|r| r.addr)
            .expect("command service running")
    }

    pub fn query_addr(&self) -> SocketAddr {
        self.query_service
            .as_ref()
            .map(|r| r.addr)
            .expect("query service running")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_service
            .as_ref()
            .map(|r| r.addr)
            .expect("admin service running")
    }

    pub fn projector_health_addr(&self) -> SocketAddr {
        self.projector
            .as_ref()
            .map(|r| r.addr)
            .expect("projector running")
    }

    /// Every event in the event store, as (aggregate id, version, type).
    pub async fn stored_events(&self) -> Vec<(String, i64, String)> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamo
                .scan()
                .table_name(self.tables.event_store())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan event store");
            for item in page.items() {
                let s = |name: &str| {
                    item.get(name)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default()
                };
                let version = item
                    .get(event_store::VERSION)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(-1);
                events.push((
                    s(event_store::AGGREGATE_ID),
                    version,
                    s(event_store::EVENT_TYPE),
                ));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        events.sort();
        events
    }

    /// The number of items in a table.
    pub async fn count_items(&self, table: &str) -> usize {
        let mut count = 0;
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .dynamo
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            count += page.items().len();
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return count,
            }
        }
    }

    /// The published events in the sink, as parsed JSON lines.
    pub fn published(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.sink_path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("sink line is JSON"))
            .collect()
    }

    pub async fn shutdown(mut self) {
        for running in [
            self.command_service.take(),
            self.query_service.take(),
            self.projector.take(),
            self.process_manager.take(),
            self.admin_service.take(),
        ]
        .into_iter()
        .flatten()
        {
            stop(running).await;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub use dynabridge_testkit::eventually;
