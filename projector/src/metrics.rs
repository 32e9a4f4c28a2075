//! The projector's Prometheus metrics. They work unregistered too, so that
//! tests can read them without a registry.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

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
    /// Age of the oldest record read and not yet caught up past, in
    /// seconds; set by the health monitor.
    pub lag_seconds: Gauge,
    /// Time since the last checkpoint write, in seconds (since start before
    /// the first); set by the health monitor.
    pub checkpoint_age_seconds: Gauge,
    /// Stream records processed and checkpointed.
    pub records_processed: IntCounter,
    /// Batches whose handling failed, each retried.
    pub batch_failures: IntCounter,
    publish_failures: IntCounterVec,
    /// `GetRecords` pages received, empty or not.
    batches: IntCounterVec,
    /// Checkpoints written (successful writes; a failed one is retried).
    pub checkpoint_writes: IntCounter,
    /// Events the bus accepted or the sink wrote.
    pub events_published: IntCounter,
    /// For each event written to a read model, the time from its commit
    /// (`occurred_at`, set by the command service) to the write's return.
    pub visible_lag_seconds: Histogram,
    /// Shard leases this instance holds now.
    pub leases_held: IntGauge,
    /// Shard leases this instance took (each a conditional write that won).
    pub leases_taken: IntCounter,
    /// Shard leases this instance lost: another instance took them, or its
    /// own renewals failed for a lease duration.
    pub leases_lost: IntCounter,
    /// Events parked: the first that could not be applied, and those queued
    /// behind it.
    pub events_parked: IntCounter,
    /// Aggregates parked now, as the last look at the table found them.
    pub parked_aggregates: IntGauge,
    /// Events caught up from the event store after the stream trimmed them.
    pub events_caught_up: IntCounter,
}

/// Whether a `GetRecords` page held records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    Empty,
    NonEmpty,
}

impl Batch {
    fn label(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NonEmpty => "nonempty",
        }
    }
}

impl ProjectorMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            lag_seconds: Gauge::new(
                "dynabridge_projector_lag_seconds",
                "Age of the oldest stream record read and not yet processed, over every shard",
            )?,
            checkpoint_age_seconds: Gauge::new(
                "dynabridge_projector_checkpoint_age_seconds",
                "Seconds since the projector last wrote a checkpoint (since start before the first); grows while the stream is idle",
            )?,
            records_processed: IntCounter::new(
                "dynabridge_projector_records_processed_total",
                "Stream records processed: projected, published and checkpointed",
            )?,
            batch_failures: IntCounter::new(
                "dynabridge_projector_batch_failures_total",
                "Batches whose handling failed; each is retried",
            )?,
            publish_failures: IntCounterVec::new(
                Opts::new(
                    "dynabridge_projector_publish_failures_total",
                    "Failed publish attempts, by reason: refused (an entry the bus refused), call (a failed PutEvents), sink (a failed sink write)",
                ),
                &["reason"],
            )?,
            batches: IntCounterVec::new(
                Opts::new(
                    "dynabridge_projector_batches_total",
                    "GetRecords pages received, by records: empty (an idle poll) or nonempty (a batch handled, then checkpointed)",
                ),
                &["records"],
            )?,
            checkpoint_writes: IntCounter::new(
                "dynabridge_projector_checkpoint_writes_total",
                "Checkpoints written: at most one per GetRecords page",
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
            leases_held: IntGauge::new(
                "dynabridge_projector_leases_held",
                "Shard leases this instance holds; a standby holds none",
            )?,
            leases_taken: IntCounter::new(
                "dynabridge_projector_leases_taken_total",
                "Shard leases taken: free ones, or expired ones whose holder stopped renewing them",
            )?,
            leases_lost: IntCounter::new(
                "dynabridge_projector_leases_lost_total",
                "Shard leases lost while held: another instance took them, or renewing them failed for a lease duration; the shard's reader stops",
            )?,
            events_parked: IntCounter::new(
                "dynabridge_projector_events_parked_total",
                "Events parked: one that could not be applied parks its aggregate, and the aggregate's later events queue behind it until a retry or a skip",
            )?,
            parked_aggregates: IntGauge::new(
                "dynabridge_projector_parked_aggregates",
                "Aggregates parked now, waiting for an operator's retry or skip",
            )?,
            events_caught_up: IntCounter::new(
                "dynabridge_projector_events_caught_up_total",
                "Events read back from the event store, over a window the stream trimmed before the projector read it",
            )?,
        })
    }

    /// Registers every metric with `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.lag_seconds.clone()))?;
        registry.register(Box::new(self.checkpoint_age_seconds.clone()))?;
        registry.register(Box::new(self.records_processed.clone()))?;
        registry.register(Box::new(self.batch_failures.clone()))?;
        registry.register(Box::new(self.publish_failures.clone()))?;
        registry.register(Box::new(self.batches.clone()))?;
        registry.register(Box::new(self.checkpoint_writes.clone()))?;
        registry.register(Box::new(self.events_published.clone()))?;
        registry.register(Box::new(self.visible_lag_seconds.clone()))?;
        registry.register(Box::new(self.leases_held.clone()))?;
        registry.register(Box::new(self.leases_taken.clone()))?;
        registry.register(Box::new(self.leases_lost.clone()))?;
        registry.register(Box::new(self.events_parked.clone()))?;
        registry.register(Box::new(self.parked_aggregates.clone()))?;
        registry.register(Box::new(self.events_caught_up.clone()))?;
        Ok(())
    }

    pub fn batch_received(&self, batch: Batch) {
        self.batches.with_label_values(&[batch.label()]).inc();
    }

    pub fn batches(&self, batch: Batch) -> u64 {
        self.batches.with_label_values(&[batch.label()]).get()
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
