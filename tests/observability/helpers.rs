//! The services in this process against an embedded store, each reaching it
//! through a loopback proxy the test can cut, with fast health checks and
//! metrics endpoints on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};
use command_service::commands::AggregateCache;
use dynabridge::schema::Tables;
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::health::HealthArgs;
use dynabridge_runtime::page_token::PageTokenArgs;
use dynabridge_runtime::service::{Host, Service};
use dynabridge_testkit::{EmbeddedStore, SpawnedApp, spawn_app};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic_health::pb::health_check_response::ServingStatus;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Health checks fast enough for a test to watch them flip.
pub fn fast_health() -> HealthArgs {
    HealthArgs {
        health_check_interval_ms: 50,
        health_check_timeout_ms: 1_000,
    }
}

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    dynabridge_testkit::eventually(what, DEADLINE, check).await
}

/// The embedded store on loopback, with the tables of a fresh prefix.
pub struct Store {
    pub endpoint: String,
    pub tables: Tables,
    pub dynamo: aws_sdk_dynamodb::Client,
    _store: EmbeddedStore,
}

impl Store {
    pub async fn start() -> Self {
        dynabridge_runtime::grpc::init_tracing();
        let store = EmbeddedStore::start().await;
        let endpoint = store.endpoint();
        let tables = Tables::new(dynabridge_testkit::unique_prefix("o"));
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk_for(&endpoint).await);
        dynabridge_provision::ensure_tables(&dynamo, &tables)
            .await
            .unwrap();
        Self {
            endpoint,
            tables,
            dynamo,
            _store: store,
        }
    }

    pub fn store_args(&self, endpoint: &str) -> StoreArgs {
        StoreArgs {
            table_prefix: self.tables.prefix.clone(),
            aws: AwsArgs {
                endpoint_url: Some(endpoint.to_owned()),
                region: Some("us-east-1".into()),
            },
        }
    }
}

/// The SDK configuration of every service: `endpoint`, a region and local
/// credentials.
pub use dynabridge_testkit::sdk_config as sdk_for;

/// Endpoints per AWS service, as the SDK's `AWS_ENDPOINT_URL_<SERVICE>`
/// variables give them, without touching this process's environment.
#[derive(Debug)]
struct Endpoints {
    store: String,
    event_bridge: String,
}

impl LoadServiceConfig for Endpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        (key.env() == "AWS_ENDPOINT_URL").then(|| match key.service_id() {
            "EventBridge" => self.event_bridge.clone(),
            _ => self.store.clone(),
        })
    }
}

/// An SDK configuration whose EventBridge calls go to `event_bridge` and
/// every other call to `store`.
pub async fn sdk_with_bus(store: &str, event_bridge: &str) -> aws_config::SdkConfig {
    load_sdk_config(
        &AwsArgs {
            endpoint_url: None,
            region: Some("us-east-1".into()),
        },
        Some(StaticCredentials::local()),
    )
    .await
    .into_builder()
    .service_config(Endpoints {
        store: store.to_owned(),
        event_bridge: event_bridge.to_owned(),
    })
    .build()
}

/// A loopback TCP proxy to `upstream` that the test can cut or stall.
/// Cut, connections are refused as they arrive, and open ones are dropped.
/// Stalled, connections are accepted and open ones kept, but no byte
/// passes either way: a store that hangs.
pub struct Proxy {
    pub endpoint: String,
    mode: watch::Sender<Mode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Stalled,
}

/// Waits until the mode satisfies `wanted`: the mode then, or `None` once
/// the proxy is gone.
async fn until(mode: &mut watch::Receiver<Mode>, wanted: impl Fn(Mode) -> bool) -> Option<Mode> {
    mode.wait_for(|m| wanted(*m)).await.ok().map(|m| *m)
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("an http://ip:port endpoint");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (mode, watched) = watch::channel(Mode::Open);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut mode = watched.clone();
                tokio::spawn(async move {
                    // A connection arriving while stalled waits, held open.
                    if until(&mut mode, |m| m != Mode::Stalled).await != Some(Mode::Open) {
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // The mode first: once the test has stalled or cut the
                    // proxy, no byte that arrives after passes, however the
                    // two are woken.
                    tokio::select! {
                        biased;
                        _ = until(&mut mode, |m| m != Mode::Open) => {
                            // Stalled: hold both ends, pass nothing, until
                            // cut or opened again; then drop the connection.
                            until(&mut mode, |m| m != Mode::Stalled).await;
                        }
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { endpoint, mode }
    }

    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    #[allow(dead_code, reason = "the fail_fast tests stall the store")]
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stalled);
    }

    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

/// A service running in this process.
/// A port of the kernel's choosing on loopback.
const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A service in this process, with its metrics endpoint.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    app: SpawnedApp,
}

impl Running {
    pub async fn stop(self) {
        let result = self.app.stop().await;
        assert!(result.is_ok(), "service did not stop cleanly: {result:?}");
    }

    /// The health status of `service`, if the server answers.
    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        dynabridge_testkit::health_status(self.addr, service).await
    }

    /// Waits until every one of `services` reports `status`.
    pub async fn wait_health(&self, services: &[&str], status: ServingStatus) {
        for service in services {
            eventually(&format!("{service:?} to be {status:?}"), || async {
                (self.health(service).await == Some(status)).then_some(())
            })
            .await;
        }
    }

    /// The text of its `/metrics`.
    pub async fn scrape(&self) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = TcpStream::connect(self.metrics).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_lowercase().contains("content-type: text/plain"),
            "{head}"
        );
        body.to_owned()
    }
}

/// The value of the sample of `name` with every one of `labels`, if the
/// text holds one.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
        .then(|| value.parse().ok())
        .flatten()
    })
}

/// Builds the service on two ports of the kernel's choosing and runs it
/// in a task.
async fn spawn_service<S: Service>(config: S::Config, sdk: &aws_config::SdkConfig) -> Running {
    let app = spawn_app::<S>(config, &Host::new(sdk.clone()))
        .await
        .unwrap();
    Running {
        addr: app.addr,
        metrics: app.metrics.expect("a metrics endpoint"),
        app,
    }
}

pub async fn start_command_service(
    store: StoreArgs,
    sdk: &aws_config::SdkConfig,
    health: HealthArgs,
) -> Running {
    let config = command_service::Config {
        store,
        listen: LOOPBACK,
        aggregate_cache_capacity: AggregateCache::DEFAULT_CAPACITY,
        append_max_in_flight: dynabridge_event_store::EventStore::DEFAULT_MAX_IN_FLIGHT,
        health,
        metrics_listen: Some(LOOPBACK),
    };
    spawn_service::<command_service::App>(config, sdk).await
}

pub async fn start_query_service(
    store: StoreArgs,
    sdk: &aws_config::SdkConfig,
    health: HealthArgs,
) -> Running {
    let config = query_service::Config {
        store,
        listen: LOOPBACK,
        page_tokens: PageTokenArgs {
            page_token_secret: Some("observability-test-page-token-secret".into()),
        },
        max_wait_ms: 5_000,
        health,
        metrics_listen: Some(LOOPBACK),
    };
    spawn_service::<query_service::App>(config, sdk).await
}

/// Where the projector publishes.
pub enum Publish {
    Sink(PathBuf),
    Bus(String),
}

pub async fn start_projector(
    store: StoreArgs,
    sdk: &aws_config::SdkConfig,
    health: HealthArgs,
    publish: Publish,
) -> Running {
    let (event_bus, sink_path) = match publish {
        Publish::Sink(path) => (None, path),
        Publish::Bus(bus) => (Some(bus), PathBuf::from("-")),
    };
    let health = projector::StreamHealth {
        store: health,
        ..Default::default()
    };
    let config = projector::Config {
        store,
        health_listen: LOOPBACK,
        event_bus,
        event_source: "dynabridge.test".into(),
        sink_path,
        max_concurrent_writes: projector::Config::DEFAULT_MAX_CONCURRENT_WRITES,
        consumer: projector::ConsumerArgs {
            idle_poll_max_ms: 20,
            health,
            ..projector::ConsumerArgs::default()
        },
        metrics_listen: Some(LOOPBACK),
    };
    spawn_service::<projector::App>(config, sdk).await
}
