//! What every consumer of the stream runs in: its gRPC health server and
//! `/metrics`, the [`Monitor`] that makes its readiness and liveness, the
//! shutdown that stops it all, and the reading of the stream once it is
//! found. A consumer brings what is its own (its batch handler, its health
//! names and store check, the tasks beside the readers) and the host wires
//! the rest the same way for each.
//!
//! [`ConsumerHost::start`] binds and answers health at once (NOT_SERVING
//! until the stream is found); [`ConsumerHost::run_until`] finds the
//! stream, asks the consumer for its [`Wiring`], reads until shutdown, then
//! waits for the consumer's tasks and the health server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dynabridge_runtime::grpc::{ApiServer, Listeners, ServeError};
use dynabridge_runtime::health::{HealthSpec, Readiness, Recheck, StoreProbe};
use dynabridge_runtime::service::Host;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batch::BatchHandler;
use crate::catchup::EventStoreCatchUp;
use crate::checkpoint::{CheckpointStore, DynamoCheckpoints};
use crate::config::ConsumerArgs;
use crate::control::{Shutdown, ShutdownTrigger, Timing};
use crate::lease::{LeaseRecord, LeaseSettings, Leases};
use crate::metrics::StreamMetrics;
use crate::monitor::{HealthNames, Monitor};
use crate::progress::Progress;
use crate::shard::Pipeline;
use crate::stream::{SdkStreams, StreamApi, find_stream};

/// What a consumer tells its host.
pub struct ConsumerSpec {
    pub names: HealthNames,
    /// The lease owner's prefix and the log's name for it (`projector`).
    pub lease_name: &'static str,
    /// The store check behind readiness: a read the consumer's role may
    /// make.
    pub probe: StoreProbe,
    /// Its polling, lease and health flags.
    pub args: ConsumerArgs,
    /// The consumer's stream metrics (registered by the consumer).
    pub metrics: StreamMetrics,
    /// Whether the consumer's output is there (the projector's bus);
    /// `None` for a consumer without one.
    pub output_found: Option<watch::Receiver<bool>>,
    /// The event store's table, whose stream is read and whose items fill
    /// a trimmed window.
    pub event_store_table: String,
    /// The consumer's own checkpoint (and lease) table.
    pub checkpoints_table: String,
}

/// What the consumer's handler is given once the stream is found.
#[derive(Clone)]
pub struct Found {
    pub stream_arn: String,
    pub lease: LeaseSettings,
    pub timing: Timing,
    /// Ends every task of the consumer.
    pub stop: Shutdown,
}

/// The consumer's part of the reading: its handler of batches, and the
/// tasks it runs beside the readers (each ends on [`Found::stop`]).
pub struct Wiring {
    pub handler: Arc<dyn BatchHandler>,
    /// What the leases record besides the owner (the projector's read-model
    /// generations).
    pub lease_record: Option<Arc<dyn LeaseRecord>>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Wiring {
    pub fn handler(handler: Arc<dyn BatchHandler>) -> Self {
        Self {
            handler,
            lease_record: None,
            tasks: Vec::new(),
        }
    }
}

/// A consumer, bound, its health server answering.
pub struct ConsumerHost {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    names: HealthNames,
    sdk: aws_config::SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    timing: Timing,
    lease: LeaseSettings,
    metrics: StreamMetrics,
    event_store_table: String,
    checkpoints_table: String,
    trigger: Arc<ShutdownTrigger>,
    stop: Shutdown,
    progress: Arc<Progress>,
    stream_found: watch::Sender<bool>,
    recheck: Recheck,
    server: JoinHandle<Result<(), ServeError>>,
    /// The stream API the shard readers use; the SDK's unless replaced.
    streams: Option<Arc<dyn StreamApi>>,
}

impl ConsumerHost {
    /// Binds `listeners` and answers health (readiness from the monitor,
    /// NOT_SERVING until the stream is found).
    pub async fn start(
        spec: ConsumerSpec,
        host: &Host,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        let ConsumerSpec {
            names,
            lease_name,
            probe,
            args,
            metrics,
            output_found,
            event_store_table,
            checkpoints_table,
        } = spec;
        let ConsumerArgs { lease, health, .. } = &args;
        let timing = Timing::new(args.idle_poll_max().max(Duration::from_millis(1)));
        let lease = lease.settings(&timing, lease_name);
        let spec = HealthSpec {
            service: names.readiness,
            liveness: names.liveness,
            probe,
            args: health.store.clone(),
            readiness: Readiness::Reported,
        };
        // No API: reflection lists health alone.
        let server = ApiServer::start(None, spec, listeners, &host.registry).await?;
        let (addr, metrics_addr) = (server.addr(), server.metrics_addr());
        let (trigger, stop) = Shutdown::new();
        let progress = Progress::new();
        let (stream_found, stream_found_rx) = watch::channel(false);
        let monitor = tokio::spawn(
            Monitor {
                names,
                progress: progress.clone(),
                metrics: metrics.clone(),
                reporter: server.health().reporter(),
                thresholds: health.thresholds(),
                every: health.store.interval().min(Duration::from_secs(1)),
                stream_found: stream_found_rx,
                store_reachable: server.health().reachable(),
                bus_found: output_found.unwrap_or_else(|| watch::channel(true).1),
            }
            .run(stop.clone()),
        );
        let recheck = server.health().rechecker();
        // The monitor ends before the health names turn NOT_SERVING: nothing
        // turns SERVING again once shutdown has begun.
        let server = tokio::spawn(server.serve_health({
            let stop = stop.clone();
            async move {
                stop.wait().await;
                let _ = monitor.await;
            }
        }));
        tracing::info!(%addr, consumer = names.consumer, "health listening");
        Ok(Self {
            addr,
            metrics_addr,
            names,
            dynamodb: dynabridge_aws::dynamodb_client(&host.sdk),
            sdk: host.sdk.clone(),
            timing,
            lease,
            metrics,
            event_store_table,
            checkpoints_table,
            trigger: Arc::new(trigger),
            stop,
            progress,
            stream_found,
            recheck,
            server,
            streams: None,
        })
    }

    /// Reads the stream through `streams` instead of the SDK's client: for
    /// a harness that shapes what the stream shows.
    #[must_use]
    pub fn with_streams(mut self, streams: Arc<dyn StreamApi>) -> Self {
        self.streams = Some(streams);
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Triggered when the run ends, for tasks started before it.
    pub fn stop(&self) -> &Shutdown {
        &self.stop
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Runs until `shutdown` (or until the reading ends): finds the stream,
    /// wires the consumer with `wire`, reads the stream, then waits for the
    /// consumer's tasks and stops the health server.
    pub async fn run_until<W, Fut>(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        wire: W,
    ) -> anyhow::Result<()>
    where
        W: FnOnce(Found) -> Fut + Send,
        Fut: Future<Output = anyhow::Result<Wiring>> + Send,
    {
        let Self {
            addr: _,
            metrics_addr: _,
            names,
            sdk,
            dynamodb,
            timing,
            lease,
            metrics,
            event_store_table,
            checkpoints_table,
            trigger,
            stop,
            progress,
            stream_found,
            recheck,
            server,
            streams,
        } = self;
        let waiter = tokio::spawn({
            let trigger = trigger.clone();
            async move {
                shutdown.await;
                trigger.trigger();
            }
        });
        let outcome = progress
            .clone()
            .track("coordinator", async {
                let Some(stream_arn) =
                    find_stream(&dynamodb, &event_store_table, &timing, &stop).await?
                else {
                    return Ok(());
                };
                tracing::info!(
                    consumer = names.consumer,
                    stream_arn,
                    instance_id = %lease.owner,
                    lease_duration_ms = lease.duration.as_millis(),
                    "reading the stream"
                );
                let Wiring {
                    handler,
                    lease_record,
                    tasks,
                } = wire(Found {
                    stream_arn: stream_arn.clone(),
                    lease: lease.clone(),
                    timing: timing.clone(),
                    stop: stop.clone(),
                })
                .await?;
                let checkpoints: Arc<dyn CheckpointStore> =
                    Arc::new(DynamoCheckpoints::new(dynamodb.clone(), checkpoints_table));
                let leases = Leases::new(
                    lease,
                    stream_arn.clone(),
                    checkpoints.clone(),
                    metrics.clone(),
                );
                let pipeline = Arc::new(Pipeline {
                    leases: Arc::new(match lease_record {
                        Some(record) => leases.with_record(record),
                        None => leases,
                    }),
                    stream_arn,
                    streams: streams.unwrap_or_else(|| {
                        Arc::new(SdkStreams::new(dynabridge_aws::streams_client(&sdk)))
                    }),
                    checkpoints,
                    catch_up: Arc::new(EventStoreCatchUp::new(dynamodb.clone(), event_store_table)),
                    handler,
                    timing: timing.clone(),
                    shutdown: stop.clone(),
                    progress: progress.clone(),
                    metrics,
                });
                stream_found.send_replace(true);
                // The tables may have just appeared: no need to wait for the
                // next check to say so.
                recheck.now();
                crate::coordinator::run_stream(pipeline).await;
                for task in tasks {
                    let _ = task.await;
                }
                anyhow::Ok(())
            })
            .await;

        // Whatever ended the run, the health server goes NOT_SERVING and
        // stops.
        trigger.trigger();
        waiter.abort();
        let served = server.await.context("the health server task failed")?;
        outcome?;
        served.context("the health server failed")?;
        tracing::info!(consumer = names.consumer, "stopped");
        Ok(())
    }
}
