//! The Prometheus metrics of reading the stream: lag, batches, checkpoints,
//! leases, catch-ups. Each consumer names them under its own namespace
//! (`dynabridge_projector_records_processed_total`,
//! `dynabridge_process_manager_records_processed_total`). They work
//! unregistered too, so that tests can read them without a registry.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone, Debug)]
pub struct StreamMetrics {
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
    /// `GetRecords` pages received, empty or not.
    batches: IntCounterVec,
    /// Checkpoints written (successful writes; a failed one is retried).
    pub checkpoint_writes: IntCounter,
    /// Shard leases this instance holds now.
    pub leases_held: IntGauge,
    /// Shard leases this instance took (each a conditional write that won).
    pub leases_taken: IntCounter,
    /// Shard leases this instance lost: another instance took them, or its
    /// own renewals failed for a lease duration.
    pub leases_lost: IntCounter,
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

impl StreamMetrics {
    /// The metrics of a consumer whose names begin with `namespace`
    /// (`dynabridge_projector`); `handled` says what handling a record is,
    /// for the help texts.
    pub fn new(namespace: &str, handled: &str) -> Result<Self, prometheus::Error> {
        let name = |metric: &str| format!("{namespace}_{metric}");
        Ok(Self {
            lag_seconds: Gauge::new(
                name("lag_seconds"),
                "Age of the oldest stream record read and not yet processed, over every shard",
            )?,
            checkpoint_age_seconds: Gauge::new(
                name("checkpoint_age_seconds"),
                "Seconds since the last checkpoint write (since start before the first); grows while the stream is idle",
            )?,
            records_processed: IntCounter::new(
                name("records_processed_total"),
                format!("Stream records processed: {handled}, and checkpointed"),
            )?,
            batch_failures: IntCounter::new(
                name("batch_failures_total"),
                "Batches whose handling failed; each is retried",
            )?,
            batches: IntCounterVec::new(
                Opts::new(
                    name("batches_total"),
                    "GetRecords pages received, by records: empty (an idle poll) or nonempty (a batch handled, then checkpointed)",
                ),
                &["records"],
            )?,
            checkpoint_writes: IntCounter::new(
                name("checkpoint_writes_total"),
                "Checkpoints written: at most one per GetRecords page",
            )?,
            leases_held: IntGauge::new(
                name("leases_held"),
                "Shard leases this instance holds; a standby holds none",
            )?,
            leases_taken: IntCounter::new(
                name("leases_taken_total"),
                "Shard leases taken: free ones, or expired ones whose holder stopped renewing them",
            )?,
            leases_lost: IntCounter::new(
                name("leases_lost_total"),
                "Shard leases lost while held: another instance took them, or renewing them failed for a lease duration; the shard's reader stops",
            )?,
            events_caught_up: IntCounter::new(
                name("events_caught_up_total"),
                "Events read back from the event store, over a window the stream trimmed before they were read",
            )?,
        })
    }

    /// Registers every metric with `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.lag_seconds.clone()))?;
        registry.register(Box::new(self.checkpoint_age_seconds.clone()))?;
        registry.register(Box::new(self.records_processed.clone()))?;
        registry.register(Box::new(self.batch_failures.clone()))?;
        registry.register(Box::new(self.batches.clone()))?;
        registry.register(Box::new(self.checkpoint_writes.clone()))?;
        registry.register(Box::new(self.leases_held.clone()))?;
        registry.register(Box::new(self.leases_taken.clone()))?;
        registry.register(Box::new(self.leases_lost.clone()))?;
        registry.register(Box::new(self.events_caught_up.clone()))?;
        Ok(())
    }

    pub fn batch_received(&self, batch: Batch) {
        self.batches.with_label_values(&[batch.label()]).inc();
    }

    pub fn batches(&self, batch: Batch) -> u64 {
        self.batches.with_label_values(&[batch.label()]).get()
    }
}
