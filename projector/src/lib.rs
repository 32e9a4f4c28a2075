//! The projector: consumes the event store's stream, updates the read
//! models, publishes every event, then checkpoints.
//!
//! Module map:
//! - [`coordinator`]: the shard listing, lineage, one reader task per shard;
//! - [`shard`]: one shard's `GetRecords` loop, decoding, checkpointing;
//! - [`handler`]: what a batch goes through before its checkpoint;
//! - [`read_model`]: version-gated writes of the read models, with a cache;
//! - [`publish`]: the EventBridge publisher and the JSON-lines sink;
//! - [`stream`], [`checkpoint`]: the DynamoDB Streams and checkpoint table
//!   calls, each behind a trait so that the logic is tested against fakes;
//! - [`attribute`]: stream images to event store items;
//! - [`control`]: shutdown and backoff.
//!
//! Delivery is at least once: a checkpoint is written only after the batch's
//! events are in the read models and published, so a crash replays at most
//! one batch per shard. The read models absorb replays (version gating);
//! subscribers see a replayed event again, with the same `event_id`.
#![forbid(unsafe_code)]

pub mod attribute;
pub mod checkpoint;
pub mod control;
pub mod coordinator;
pub mod error;
pub mod handler;
pub mod publish;
pub mod read_model;
pub mod shard;
pub mod stream;
#[cfg(test)]
mod testing;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dynabridge::config::StoreArgs;
use tonic_health::ServingStatus;

use crate::checkpoint::DynamoCheckpoints;
use crate::control::{Shutdown, Timing};
use crate::handler::Projection;
use crate::publish::{BusPublisher, JsonLinesSink, Publisher, SdkEventBus};
use crate::read_model::{CACHE_CAPACITY, DynamoRows, ReadModels};
use crate::shard::Pipeline;
use crate::stream::SdkStreams;

/// The name the projector reports its health under, besides "".
pub const HEALTH_SERVICE: &str = "dynabridge.v1.Projector";

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
    /// Longest pause between polls of an idle shard, in milliseconds.
    #[arg(long, env = "DYNABRIDGE_IDLE_POLL_MAX_MS", default_value_t = 100)]
    pub idle_poll_max_ms: u64,
}

impl Config {
    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        self.store.validate()?;
        if self.idle_poll_max_ms == 0 {
            return Err("idle poll max must be at least 1 millisecond".into());
        }
        if self.event_source.is_empty() {
            return Err("event source must not be empty".into());
        }
        if self.event_bus.as_deref().is_some_and(str::is_empty) {
            return Err("event bus must not be empty when set".into());
        }
        Ok(())
    }
}

/// Runs until `shutdown` resolves; the health server listens on
/// `health_listener`.
pub async fn run(
    config: Config,
    sdk: &aws_config::SdkConfig,
    health_listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tables = config.store.tables();
    let dynamodb = dynabridge::aws::dynamodb_client(sdk);
    let timing = Timing::new(Duration::from_millis(config.idle_poll_max_ms.max(1)));

    // Opened first: a sink that cannot be written is a configuration error
    // worth failing on before anything else starts.
    let publisher: Box<dyn Publisher> = match &config.event_bus {
        Some(bus) => Box::new(BusPublisher::new(
            Box::new(SdkEventBus::new(dynabridge::aws::eventbridge_client(sdk))),
            config.event_source.clone(),
            bus.clone(),
            timing.clone(),
        )),
        None => Box::new(
            JsonLinesSink::open(&config.sink_path, config.event_source.clone())
                .await
                .with_context(|| {
                    format!("opening the event sink {}", config.sink_path.display())
                })?,
        ),
    };

    let (trigger, stop) = Shutdown::new();
    let trigger = Arc::new(trigger);
    let waiter = tokio::spawn({
        let trigger = trigger.clone();
        async move {
            shutdown.await;
            trigger.trigger();
        }
    });

    let (reporter, health_service) = tonic_health::server::health_reporter();
    for service in ["", HEALTH_SERVICE] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    let server_stop = dynabridge::grpc::not_serving_then(reporter.clone(), vec![HEALTH_SERVICE], {
        let stop = stop.clone();
        async move { stop.wait().await }
    });
    tracing::info!(addr = %health_listener.local_addr()?, "projector health listening");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(health_listener),
                server_stop,
            ),
    );

    let outcome = async {
        let Some(stream_arn) = find_stream(&dynamodb, &tables.event_store(), &timing, &stop).await? else {
            return Ok(());
        };
        match &config.event_bus {
            Some(bus) => tracing::info!(stream_arn = %stream_arn, event_bus = %bus, event_source = %config.event_source, "projector started"),
            None => tracing::info!(stream_arn = %stream_arn, sink = %config.sink_path.display(), event_source = %config.event_source, "projector started"),
        }
        let pipeline = Arc::new(Pipeline {
            stream_arn,
            streams: Arc::new(SdkStreams::new(dynabridge::aws::streams_client(sdk))),
            checkpoints: Arc::new(DynamoCheckpoints::new(dynamodb.clone(), tables.checkpoints())),
            handler: Arc::new(Projection::new(
                ReadModels::new(Box::new(DynamoRows::new(dynamodb.clone(), tables.clone())), CACHE_CAPACITY),
                publisher,
            )),
            timing: timing.clone(),
            shutdown: stop.clone(),
        });
        for service in ["", HEALTH_SERVICE] {
            reporter.set_service_status(service, ServingStatus::Serving).await;
        }
        coordinator::run_stream(pipeline).await;
        anyhow::Ok(())
    }
    .await;

    // Whatever ended the run, the health server goes NOT_SERVING and stops.
    trigger.trigger();
    waiter.abort();
    let served = server.await.context("the health server task failed")?;
    outcome?;
    served.context("the health server failed")?;
    tracing::info!("projector stopped");
    Ok(())
}

/// The event store's stream ARN, waiting for the table to exist; `None` on
/// shutdown.
async fn find_stream(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    timing: &Timing,
    stop: &Shutdown,
) -> anyhow::Result<Option<String>> {
    let mut retry = timing.retry_backoff();
    loop {
        match stream::latest_stream_arn(client, table).await {
            Ok(Some(arn)) => return Ok(Some(arn)),
            Ok(None) => anyhow::bail!(
                "the event store table {table} has no stream: enable a NEW_IMAGE stream on it"
            ),
            Err(err) => {
                tracing::warn!(table, error = %err, "cannot describe the event store yet, retrying");
                if !stop.sleep(retry.next_delay()).await {
                    return Ok(None);
                }
            }
        }
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
    }

    #[test]
    fn bad_values_are_rejected_before_start_up() {
        for args in [
            &["--table-prefix", "has space"][..],
            &["--idle-poll-max-ms", "0"],
            &["--event-source", ""],
            &["--event-bus", ""],
        ] {
            assert!(parse(args).validate().is_err(), "{args:?}");
        }
    }
}
