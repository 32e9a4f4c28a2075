//! A stream consumer's gRPC health, from its [`Progress`] and the store
//! check:
//!
//! - readiness, [`HealthNames::readiness`] and `""`: SERVING once the
//!   stream is found, while the store is reachable, the consumer's own
//!   output is there (the projector's event bus, with `--event-bus`) and
//!   the lag is within `--max-lag-ms`;
//! - liveness, [`HealthNames::liveness`]: SERVING while every processing
//!   loop has gone round within `--liveness-window-ms`. A loop waiting on
//!   an unreachable store still goes round (it retries): only a loop that
//!   hangs fails liveness, which a restart may cure.
//!
//! It also sets the lag and checkpoint age gauges.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::control::Shutdown;
use crate::metrics::StreamMetrics;
use crate::progress::{Progress, Snapshot};

/// The names a consumer reports its health under, and the name it logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthNames {
    /// Readiness (reported under `""` too).
    pub readiness: &'static str,
    pub liveness: &'static str,
    /// What the log calls it (`projector`).
    pub consumer: &'static str,
}

/// When a consumer stops being live or ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub liveness_window: Duration,
    pub max_lag: Duration,
}

/// The verdict at one instant, with the reason for each NOT_SERVING.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub live: Result<(), String>,
    pub ready: Result<(), String>,
}

/// What the consumer's checks last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// The event store's stream was found.
    pub stream_found: bool,
    /// The store check reached the store.
    pub store_reachable: bool,
    /// The consumer's output is there: the projector's event bus exists
    /// (always, publishing to the sink); always, for a consumer without
    /// one.
    pub bus_found: bool,
}

/// The pure part: what `snapshot` and the checks say.
pub fn assess(snapshot: &Snapshot, signals: Signals, thresholds: &Thresholds) -> Verdict {
    let Signals {
        stream_found,
        store_reachable,
        bus_found,
    } = signals;
    let live = match &snapshot.stalest {
        Some((name, silent)) if *silent > thresholds.liveness_window => Err(format!(
            "{name} has made no progress for {} ms",
            silent.as_millis()
        )),
        _ => Ok(()),
    };
    let ready = if !stream_found {
        Err("the event store's stream is not found yet".to_owned())
    } else if !store_reachable {
        Err("the store is unreachable".to_owned())
    } else if !bus_found {
        Err("the event bus does not exist (or was not confirmed): nothing is published".to_owned())
    } else if !snapshot.catching_up.is_empty() {
        Err(format!(
            "catching up, from the event store, events the stream trimmed before they were read ({})",
            snapshot.catching_up.join(", ")
        ))
    } else if snapshot.lag > thresholds.max_lag {
        Err(format!(
            "the oldest unprocessed record is {} ms old",
            snapshot.lag.as_millis()
        ))
    } else {
        Ok(())
    };
    Verdict { live, ready }
}

/// What the monitor watches.
#[derive(Debug)]
pub struct Monitor {
    pub names: HealthNames,
    pub progress: Arc<Progress>,
    pub metrics: StreamMetrics,
    pub reporter: HealthReporter,
    pub thresholds: Thresholds,
    /// How often the verdict is made, besides every change of the two
    /// signals below.
    pub every: Duration,
    pub stream_found: watch::Receiver<bool>,
    pub store_reachable: watch::Receiver<bool>,
    pub bus_found: watch::Receiver<bool>,
}

impl Monitor {
    /// Reports until `shutdown`, then returns; the caller turns everything
    /// NOT_SERVING after.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut last: Option<Verdict> = None;
        loop {
            let snapshot = self.progress.snapshot(Instant::now(), Utc::now());
            self.metrics.lag_seconds.set(snapshot.lag.as_secs_f64());
            self.metrics
                .checkpoint_age_seconds
                .set(snapshot.since_checkpoint.as_secs_f64());
            let signals = Signals {
                stream_found: *self.stream_found.borrow_and_update(),
                store_reachable: *self.store_reachable.borrow_and_update(),
                bus_found: *self.bus_found.borrow_and_update(),
            };
            let verdict = assess(&snapshot, signals, &self.thresholds);
            self.report(last.as_ref(), &verdict).await;
            last = Some(verdict);
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(self.every) => {}
                Ok(()) = self.stream_found.changed() => {}
                Ok(()) = self.store_reachable.changed() => {}
                Ok(()) = self.bus_found.changed() => {}
            }
        }
    }

    async fn report(&self, last: Option<&Verdict>, now: &Verdict) {
        let changed = |pick: fn(&Verdict) -> bool| last.is_none_or(|l| pick(l) != pick(now));
        if changed(|v| v.live.is_ok()) {
            match &now.live {
                Ok(()) if last.is_some() => {
                    tracing::info!(consumer = self.names.consumer, "live again");
                }
                Ok(()) => {}
                Err(why) => {
                    tracing::warn!(consumer = self.names.consumer, reason = %why, "not live");
                }
            }
            self.set(&[self.names.liveness], now.live.is_ok()).await;
        }
        if changed(|v| v.ready.is_ok()) {
            match &now.ready {
                Ok(()) => tracing::info!(consumer = self.names.consumer, "ready"),
                // Expected at start-up: not worth a warning.
                Err(why) if last.is_none() => {
                    tracing::info!(consumer = self.names.consumer, reason = %why, "not ready");
                }
                Err(why) => {
                    tracing::warn!(consumer = self.names.consumer, reason = %why, "not ready");
                }
            }
            self.set(&["", self.names.readiness], now.ready.is_ok())
                .await;
        }
    }

    async fn set(&self, names: &[&'static str], serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in names {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            liveness_window: Duration::from_secs(60),
            max_lag: Duration::from_secs(30),
        }
    }

    fn snapshot(silent: u64, lag: u64) -> Snapshot {
        Snapshot {
            stalest: Some(("shard A".into(), Duration::from_secs(silent))),
            lag: Duration::from_secs(lag),
            since_checkpoint: Duration::ZERO,
            catching_up: Vec::new(),
        }
    }

    fn signals(stream_found: bool, store_reachable: bool, bus_found: bool) -> Signals {
        Signals {
            stream_found,
            store_reachable,
            bus_found,
        }
    }

    const ALL_GOOD: Signals = Signals {
        stream_found: true,
        store_reachable: true,
        bus_found: true,
    };

    #[test]
    fn readiness_needs_the_stream_the_store_the_bus_and_a_small_lag() {
        let t = thresholds();
        assert_eq!(assess(&snapshot(1, 30), ALL_GOOD, &t).ready, Ok(()));
        for (found, reachable, bus, lag) in [
            (false, true, true, 0),
            (true, false, true, 0),
            (true, true, false, 0),
            (true, true, true, 31),
        ] {
            let verdict = assess(&snapshot(1, lag), signals(found, reachable, bus), &t);
            assert!(verdict.ready.is_err(), "{found} {reachable} {bus} {lag}");
            assert_eq!(verdict.live, Ok(()), "readiness alone");
        }
        let no_bus = assess(&snapshot(1, 0), signals(true, true, false), &t);
        assert!(no_bus.ready.unwrap_err().contains("event bus"));
        let catching_up = Snapshot {
            catching_up: vec!["shard A".into()],
            ..snapshot(1, 0)
        };
        let verdict = assess(&catching_up, ALL_GOOD, &t);
        assert!(verdict.ready.unwrap_err().contains("catching up"));
        assert_eq!(verdict.live, Ok(()));
    }

    #[test]
    fn liveness_needs_every_loop_to_have_gone_round_within_the_window() {
        let t = thresholds();
        assert_eq!(assess(&snapshot(60, 0), ALL_GOOD, &t).live, Ok(()));
        let stuck = assess(&snapshot(61, 0), ALL_GOOD, &t);
        assert!(stuck.live.unwrap_err().contains("shard A"));
        assert_eq!(stuck.ready, Ok(()), "liveness alone");
        let none = Snapshot {
            stalest: None,
            lag: Duration::ZERO,
            since_checkpoint: Duration::ZERO,
            catching_up: Vec::new(),
        };
        assert_eq!(assess(&none, signals(false, false, false), &t).live, Ok(()));
    }
}
