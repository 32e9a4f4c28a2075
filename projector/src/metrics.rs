//! The projector's Prometheus metrics. They work unregistered too, so that
//! tests can read them without a registry.

use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry};

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
}

impl PublishFailure {
    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Call => "call",
            Self::Sink => "sink",
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
        })
    }

    /// Registers every metric with `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.lag_seconds.clone()))?;
        registry.register(Box::new(self.checkpoint_age_seconds.clone()))?;
        registry.register(Box::new(self.records_processed.clone()))?;
        registry.register(Box::new(self.batch_failures.clone()))?;
        registry.register(Box::new(self.publish_failures.clone()))?;
        Ok(())
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
