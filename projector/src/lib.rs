//! The projector: consumes the event store's stream, updates the read
//! models, publishes every event, then checkpoints.
//!
//! Module map:
//! - [`coordinator`]: the shard listing, lineage, one reader task per shard;
//! - [`lease`]: which instance reads which shard, so that several may run;
//! - [`shard`]: one shard's `GetRecords` loop, decoding, checkpointing;
//! - [`handler`]: what a batch goes through before its checkpoint: its
//!   aggregates written concurrently, each aggregate's events in order;
//! - [`parking`]: an event that cannot be applied parks its aggregate, not
//!   its shard; the retries and skips operators ask for;
//! - [`writer`]: version-gated writes of the read models, with a cache;
//! - [`publish`]: the EventBridge publisher and the JSON-lines sink;
//! - [`stream`], [`checkpoint`]: the DynamoDB Streams and checkpoint table
//!   calls (checkpoints and leases), each behind a trait so that the logic
//!   is tested against fakes;
//! - [`catchup`]: the events the stream trimmed before they were read,
//!   read back from the event store;
//! - [`attribute`]: stream images to event store items;
//! - [`control`]: shutdown and backoff;
//! - [`host`]: the health server, monitor and reader wiring every
//!   consumer of the stream runs in;
//! - [`progress`], [`monitor`]: the loops' heartbeats and lag, and the
//!   health (readiness, liveness) made of them;
//! - [`metrics`]: the projector's Prometheus metrics.
//!
//! Delivery is at least once: a checkpoint is written only after the batch's
//! events are in the read models and published, so a crash replays at most
//! one batch per shard. The read models absorb replays (version gating);
//! subscribers see a replayed event again, with the same `event_id`.
//!
//! Any number of instances may run: each shard is read by the instance
//! holding its lease, and checkpointed only while it holds it.
#![forbid(unsafe_code)]

pub mod applied;
pub mod generations;
pub mod handler;
pub mod metrics;
pub mod parking;
pub mod publish;
pub mod replay;
#[cfg(test)]
mod testing;
pub mod writer;

// Reading the stream is the stream crate's, shared with the purchase
// process; re-exported so that its modules read as the projector's own.
pub use dynabridge_stream::config::{ConsumerArgs, LeaseArgs, StreamHealth};
pub use dynabridge_stream::{
    attribute, catchup, checkpoint, control, coordinator, error, host, lease, monitor, progress,
    shard, stream,
};

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dynabridge::schema::user_profiles;
use dynabridge_aws::AwsArgs;
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::grpc::Listeners;
use dynabridge_runtime::health::StoreProbe;
use dynabridge_runtime::service::{Host, Service};

use crate::control::Timing;
use crate::generations::GenerationWatch;
use crate::handler::Projection;
use crate::host::{ConsumerHost, ConsumerSpec, Found, Wiring};
use crate::metrics::ProjectorMetrics;
use crate::parking::{DynamoParking, Parking};
use crate::publish::{BusCheck, BusPublisher, EventBusApi, JsonLinesSink, Publisher, SdkEventBus};
use crate::replay::DynamoReplays;
use crate::stream::StreamApi;
use crate::writer::{CACHE_CAPACITY, DynamoRows, ReadModelWriter};

/// The name the projector reports its readiness under, besides "":
/// SERVING once the stream is found, while the store is reachable and the
/// lag is within `--max-lag-ms`.
pub const HEALTH_SERVICE: &str = "dynabridge.v1.Projector";

/// The name the projector reports its liveness under: NOT_SERVING when a
/// processing loop has made no progress within `--liveness-window-ms`.
pub const LIVENESS_SERVICE: &str = "dynabridge.v1.Projector.Liveness";

/// The names of the projector's health.
pub const HEALTH_NAMES: monitor::HealthNames = monitor::HealthNames {
    readiness: HEALTH_SERVICE,
    liveness: LIVENESS_SERVICE,
    consumer: "projector",
};

/// Flags and environment of the projector.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address of the gRPC health server.
    #[arg(
        long,
        env = "DYNABRIDGE_PROJECTOR_HEALTH_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    pub health_listen: SocketAddr,
    /// EventBridge bus to publish to. Without it, events go to the sink.
    #[arg(long, env = "DYNABRIDGE_EVENT_BUS")]
    pub event_bus: Option<String>,
    /// The `source` of published events.
    #[arg(long, env = "DYNABRIDGE_EVENT_SOURCE", default_value = "dynabridge")]
    pub event_source: String,
    /// JSON-lines file the events go to when no bus is set; `-` is stdout.
    #[arg(long, env = "DYNABRIDGE_SINK_PATH", default_value = "-")]
    pub sink_path: PathBuf,
    /// Read-model rows a shard reader writes at once while it applies a
    /// batch (at least 1). Each row's events are still written one after
    /// another, in order.
    #[arg(
        long,
        env = "DYNABRIDGE_PROJECTOR_MAX_CONCURRENT_WRITES",
        default_value_t = Config::DEFAULT_MAX_CONCURRENT_WRITES
    )]
    pub max_concurrent_writes: usize,
    /// Polling, leases and health, as every consumer of the stream has.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    /// Address of the Prometheus `/metrics` endpoint; none in a process
    /// that serves its registry itself.
    #[arg(
        long,
        env = "DYNABRIDGE_PROJECTOR_METRICS_LISTEN",
        default_value = "127.0.0.1:9093"
    )]
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    pub const DEFAULT_MAX_CONCURRENT_WRITES: usize = 32;

    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        self.store.validate()?;
        if self.max_concurrent_writes == 0 {
            return Err("max concurrent writes must be at least 1".into());
        }
        if self.event_source.is_empty() {
            return Err("event source must not be empty".into());
        }
        if self.event_bus.as_deref().is_some_and(str::is_empty) {
            return Err("event bus must not be empty when set".into());
        }
        self.consumer.validate()
    }
}

/// The projector, bound and set up, its health server answering:
/// [`App::build`], then [`App::run_until`].
pub struct App {
    host: ConsumerHost,
    config: Config,
    dynamodb: aws_sdk_dynamodb::Client,
    max_concurrent_writes: NonZeroUsize,
    metrics: ProjectorMetrics,
    publisher: Arc<dyn Publisher>,
}

impl App {
    /// Reads the stream through `streams` instead of the SDK's client: for
    /// a harness that shapes what the stream shows (the benchmark of a
    /// trimmed window's catch-up).
    #[must_use]
    pub fn with_streams(mut self, streams: Arc<dyn StreamApi>) -> Self {
        self.host = self.host.with_streams(streams);
        self
    }
}

/// Where the projector publishes: the bus if one is set, else the
/// JSON-lines sink; whether the bus exists, for the publisher and the
/// readiness; and the check to run to keep that up to date.
async fn open_publisher(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    timing: &Timing,
    metrics: &ProjectorMetrics,
) -> anyhow::Result<(
    Arc<dyn Publisher>,
    tokio::sync::watch::Receiver<bool>,
    Option<BusCheck>,
)> {
    Ok(match &config.event_bus {
        Some(bus) => {
            let api: Arc<dyn EventBusApi> =
                Arc::new(SdkEventBus::new(dynabridge_aws::eventbridge_client(sdk)));
            let (check, found) = BusCheck::start(api.clone(), bus.clone()).await;
            let publisher = BusPublisher::new(
                api,
                config.event_source.clone(),
                bus.clone(),
                found.clone(),
                timing.clone(),
                metrics.clone(),
            );
            (Arc::new(publisher), found, Some(check))
        }
        None => {
            let sink = JsonLinesSink::open(
                &config.sink_path,
                config.event_source.clone(),
                metrics.clone(),
            )
            .await
            .with_context(|| format!("opening the event sink {}", config.sink_path.display()))?;
            (Arc::new(sink), tokio::sync::watch::channel(true).1, None)
        }
    })
}

/// The projector's first line of the run: where it publishes.
fn log_start(config: &Config, max_concurrent_writes: NonZeroUsize) {
    match &config.event_bus {
        Some(bus) => tracing::info!(
            event_bus = %bus,
            event_source = %config.event_source,
            max_concurrent_writes,
            "projector started"
        ),
        None => tracing::info!(
            sink = %config.sink_path.display(),
            event_source = %config.event_source,
            max_concurrent_writes,
            "projector started"
        ),
    }
}

impl Service for App {
    type Config = Config;
    const NAME: &'static str = "projector";

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
        let timing = Timing::new(
            config
                .consumer
                .idle_poll_max()
                .max(Duration::from_millis(1)),
        );
        // Validated above; a caller that skipped that gets one at a time
        // rather than a batch that never ends.
        let max_concurrent_writes =
            NonZeroUsize::new(config.max_concurrent_writes).unwrap_or(NonZeroUsize::MIN);
        let metrics = ProjectorMetrics::new().context("creating metrics")?;
        metrics.register(registry).context("registering metrics")?;
        // Opened first: a sink that cannot be written is a configuration
        // error worth failing on before anything else starts.
        let (publisher, bus_found, bus_check) =
            open_publisher(&config, &host.sdk, &timing, &metrics).await?;
        let spec = ConsumerSpec {
            names: HEALTH_NAMES,
            lease_name: "projector",
            // A read-model table, the projector's own, which its role may
            // GetItem.
            probe: StoreProbe::get_item(
                dynamodb.clone(),
                tables.user_profiles(),
                user_profiles::USER_ID,
            ),
            args: config.consumer.clone(),
            metrics: metrics.stream.clone(),
            output_found: Some(bus_found),
            event_store_table: tables.event_store(),
            checkpoints_table: tables.checkpoints(),
        };
        let consumer = ConsumerHost::start(spec, host, listeners).await?;
        if let Some(check) = bus_check {
            tokio::spawn(check.run(
                config.consumer.health.store.interval(),
                consumer.stop().clone(),
            ));
        }
        Ok(Self {
            host: consumer,
            config,
            dynamodb,
            max_concurrent_writes,
            metrics,
            publisher,
        })
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
        let Self {
            host,
            config,
            dynamodb,
            max_concurrent_writes,
            metrics,
            publisher,
        } = self;
        let tables = config.store.tables();
        host.run_until(shutdown, |found| async move {
            let Found { lease, stop, .. } = found;
            log_start(&config, max_concurrent_writes);
            let rows = DynamoRows::new(dynamodb.clone(), tables.clone());
            // The read-model generations to write, read every second.
            let generations = GenerationWatch::dynamo(dynamodb.clone(), tables.generations());
            let refresh = tokio::spawn({
                let generations = generations.clone();
                let stop = stop.clone();
                async move { generations.refresh_until(stop).await }
            });
            let writer = Arc::new(
                ReadModelWriter::new(Box::new(rows), CACHE_CAPACITY, metrics.clone())
                    .with_generations(generations.clone()),
            );
            // Which event each read model applied last, for the projection
            // status.
            let applied = tokio::spawn({
                let applied = writer.last_applied().clone();
                let (client, table) = (dynamodb.clone(), tables.checkpoints());
                let stop = stop.clone();
                async move { applied.flush_until(client, table, stop).await }
            });
            let parking = Arc::new(Parking::new(
                Arc::new(DynamoParking::new(dynamodb.clone(), tables.parked())),
                metrics.clone(),
            ));
            // The aggregates parked before this start, so that the first
            // batches queue their events behind them. Without it they would
            // be parked all the same, by the gap before them; the requests'
            // loop reads them again every second.
            if let Err(err) = parking.refresh().await {
                tracing::warn!(error = %err, "reading the parked aggregates failed; reading them again shortly");
            }
            let requests = tokio::spawn(parking::run_requests(
                parking.clone(),
                writer.clone(),
                publisher.clone(),
                stop.clone(),
            ));
            // Replays asked for through the admin service, published again
            // through the same publisher, marked.
            let replays = tokio::spawn(replay::run_replays(
                DynamoReplays::new(
                    dynamodb.clone(),
                    tables.replays(),
                    tables.event_store(),
                    lease.owner.clone(),
                ),
                publisher.clone(),
                stop,
            ));
            Ok(Wiring {
                handler: Arc::new(Projection::new(
                    writer,
                    publisher,
                    parking,
                    max_concurrent_writes,
                )),
                lease_record: Some(generations),
                tasks: vec![requests, replays, refresh, applied],
            })
        })
        .await
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
        Cli::try_parse_from(std::iter::once("projector").chain(args.iter().copied()))
            .unwrap()
            .config
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.sink_path, PathBuf::from("-"));
        assert_eq!(config.event_bus, None);
        assert_eq!(config.max_concurrent_writes, 32);
        assert_eq!(config.consumer.lease, LeaseArgs::default());
        assert_eq!(config.consumer.lease.lease_duration_ms, 10_000);
        assert_eq!(config.consumer.lease.instance_id, None);
    }

    #[test]
    fn the_default_instance_id_is_new_for_every_process() {
        let timing = Timing::new(Duration::from_millis(100));
        let first = LeaseArgs::default().settings(&timing, "projector");
        let second = LeaseArgs::default().settings(&timing, "projector");
        assert_ne!(first.owner, second.owner);
        assert_eq!(first.duration, Duration::from_secs(10));
        assert!(
            first.head_start > timing.rediscover_every,
            "a standby's next discovery comes first"
        );
        let named = parse(&["--instance-id", "projector-7"])
            .consumer
            .lease
            .settings(&timing, "projector");
        assert_eq!(named.owner, "projector-7");
    }

    #[test]
    fn health_and_metrics_have_documented_defaults() {
        let parse = |args: &[&str]| parse(args);
        let defaults = parse(&[]);
        assert_eq!(defaults.consumer.health, StreamHealth::default());
        assert_eq!(defaults.consumer.health.liveness_window_ms, 60_000);
        assert_eq!(defaults.consumer.health.max_lag_ms, 60_000);
        assert_eq!(
            defaults.metrics_listen,
            Some("127.0.0.1:9093".parse().unwrap())
        );
        assert_eq!(defaults.consumer.health.validate(), Ok(()));
        for args in [
            &["--liveness-window-ms", "29999"][..],
            &["--max-lag-ms", "999"],
            &["--health-check-timeout-ms", "0"],
        ] {
            assert!(parse(args).consumer.health.validate().is_err(), "{args:?}");
        }
        assert_eq!(LIVENESS_SERVICE, format!("{HEALTH_SERVICE}.Liveness"));
    }

    #[test]
    fn bad_values_are_rejected_before_start_up() {
        for args in [
            &["--table-prefix", "has space"][..],
            &["--idle-poll-max-ms", "0"],
            &["--event-source", ""],
            &["--event-bus", ""],
            &["--max-concurrent-writes", "0"],
            &["--instance-id", " "],
            &["--lease-duration-ms", "999"],
            &["--lease-duration-ms", "60001"],
        ] {
            assert!(parse(args).validate().is_err(), "{args:?}");
        }
    }
}
