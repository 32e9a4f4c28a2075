//! The process manager's Prometheus metrics: reading the stream (under
//! `dynabridge_process_manager`), and the purchase steps taken.

use prometheus::{IntCounterVec, Opts, Registry};

use dynabridge_stream::metrics::StreamMetrics;

#[derive(Clone, Debug)]
pub struct ProcessMetrics {
    pub stream: StreamMetrics,
    steps: IntCounterVec,
}

impl ProcessMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            stream: StreamMetrics::new("dynabridge_process_manager", "its purchase steps taken")?,
            steps: IntCounterVec::new(
                Opts::new(
                    "dynabridge_process_manager_steps_total",
                    "Purchase steps, by step (reserve, order, release) and outcome: done, refused (the purchase's state does not allow it: passed over), contended (concurrent writers won; taken again), failed (the batch is handed over again)",
                ),
                &["step", "outcome"],
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.stream.register(registry)?;
        registry.register(Box::new(self.steps.clone()))?;
        Ok(())
    }

    pub fn step(&self, step: &str, outcome: &str) {
        self.steps.with_label_values(&[step, outcome]).inc();
    }

    pub fn steps(&self, step: &str, outcome: &str) -> u64 {
        self.steps.with_label_values(&[step, outcome]).get()
    }
}
