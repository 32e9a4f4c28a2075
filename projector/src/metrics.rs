//! The projector's Prometheus metrics: those of reading the stream
//! ([`StreamMetrics`], under `dynabridge_projector`), and its own. They
//! work unregistered too, so that tests can read them without a registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub use dynabridge_stream::metrics::{Batch, StreamMetrics};

/// Buckets of the commit-to-visible lag, in seconds: fine at the low end,
/// where a projector keeping up lives, coarse up to a minute behind.
const VISIBLE_LAG_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Why an event was not published at the first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishFailure {
    /// The bus refused the entry (`PutEvents` returned an error code for
    /// it); it is sent again.
    Refused,
    /// The `PutEvents` call failed as a whole; it is made again.
    Call,
    /// Writing the JSON-lines sink failed; the batch is retried.
    Sink,
    /// The event bus does not exist, or is not confirmed to: nothing is
    /// sent (EventBridge would accept and drop it), and the batch waits.
    BusMissing,
}

impl PublishFailure {
    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Call => "call",
            Self::Sink => "sink",
            Self::BusMissing => "bus_missing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProjectorMetrics {
    /// Reading the stream: lag, batches, checkpoints, leases, catch-ups.
    pub stream: StreamMetrics,
    publish_failures: IntCounterVec,
    /// Events the bus accepted or the sink wrote.
    pub events_published: IntCounter,
    /// For each event written to a read model, the time from its commit
    /// (`occurred_at`, set by the command service) to the write's return.
    pub visible_lag_seconds: Histogram,
    /// Events parked: the first that could not be applied, and those queued
    /// behind it.
    pub events_parked: IntCounter,
    /// Aggregates parked now, as the last look at the table found them.
    pub parked_aggregates: IntGauge,
}

/// The stream's metrics read as the projector's own
/// (`metrics.records_processed`).
impl std::ops::Deref for ProjectorMetrics {
    type Target = StreamMetrics;

    fn deref(&self) -> &StreamMetrics {
        &self.stream
    }
}

impl ProjectorMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            stream: StreamMetrics::new(
                "dynabridge_projector",
                "projected, published",
            )?,
            publish_failures: IntCounterVec::new(
                Opts::new(
                    "dynabridge_projector_publish_failures_total",
                    "Failed publish attempts, by reason: refused (an entry the bus refused), call (a failed PutEvents), sink (a failed sink write)",
                ),
                &["reason"],
            )?,
            events_published: IntCounter::new(
                "dynabridge_projector_events_published_total",
                "Events published: accepted by the bus, or written to the sink",
            )?,
            visible_lag_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "dynabridge_projector_visible_lag_seconds",
                    "For each event written to a read model, the seconds from its commit (occurred_at) to the write's return: how long a change takes to become visible to queries",
                )
                .buckets(VISIBLE_LAG_BUCKETS.to_vec()),
            )?,
            events_parked: IntCounter::new(
                "dynabridge_projector_events_parked_total",
                "Events parked: one that could not be applied parks its aggregate, and the aggregate's later events queue behind it until a retry or a skip",
            )?,
            parked_aggregates: IntGauge::new(
                "dynabridge_projector_parked_aggregates",
                "Aggregates parked now, waiting for an operator's retry or skip",
            )?,
        })
    }

    /// Registers every metric with `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.stream.register(registry)?;
        registry.register(Box::new(self.publish_failures.clone()))?;
        registry.register(Box::new(self.events_published.clone()))?;
        registry.register(Box::new(self.visible_lag_seconds.clone()))?;
        registry.register(Box::new(self.events_parked.clone()))?;
        registry.register(Box::new(self.parked_aggregates.clone()))?;
        Ok(())
    }

    /// Observes the commit-to-visible lag of an event committed at
    /// `occurred_at` whose read-model write just returned. A commit that
    /// looks later than now (clock skew between hosts) counts as no lag.
    pub fn event_visible(&self, occurred_at: chrono::DateTime<chrono::Utc>) {
        let lag = (chrono::Utc::now() - occurred_at)
            .to_std()
            .unwrap_or_default();
        self.visible_lag_seconds.observe(lag.as_secs_f64());
    }

    pub fn publish_failed(&self, why: PublishFailure, count: u64) {
        self.publish_failures
            .with_label_values(&[why.label()])
            .inc_by(count);
    }

    pub fn publish_failures(&self, why: PublishFailure) -> u64 {
        self.publish_failures
            .with_label_values(&[why.label()])
            .get()
    }
}
