//! The load drivers: a closed loop of N concurrent clients, bounded by an
//! operation count and a duration, and an open loop at a fixed rate. Both
//! record every latency in an HDR histogram.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

/// Latencies are recorded in microseconds, up to a minute, to 3 significant
/// digits.
const HIGHEST_MICROS: u64 = 60_000_000;

/// How much load, and when to stop: whichever of `max_ops` and
/// `max_duration` comes first.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub concurrency: usize,
    pub max_ops: u64,
    pub max_duration: Duration,
}

/// What one worker's next operation did.
#[derive(Debug)]
pub enum Step {
    /// It ran; its latency counts.
    Done,
    /// This worker has nothing left to do (its aggregates are used up).
    Exhausted,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Latencies of the successful operations, in microseconds.
    pub latency: Histogram<u64>,
}

impl Outcome {
    fn empty() -> Self {
        Self {
            ops: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: new_histogram(),
        }
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.ops as f64 / secs
        }
    }

    /// The latency at quantile `q` (0.5, 0.99, 0.999), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn merge(&mut self, other: Outcome) {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    fn record(&mut self, started: Instant, result: Result<Step, String>) -> bool {
        match result {
            Ok(Step::Done) => {
                self.ops += 1;
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.latency.saturating_record(micros.max(1));
                true
            }
            Ok(Step::Exhausted) => false,
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(error);
                }
                true
            }
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds")
}

/// Runs `op(worker, i)` from `limits.concurrency` workers, each calling it
/// again as soon as the last call returns (`i` counts that worker's calls),
/// until `max_ops` calls have started in all, `max_duration` has passed, or
/// every worker is exhausted.
pub async fn closed_loop<Op, Fut>(limits: Limits, op: Op) -> Outcome
where
    Op: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Step, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let started_ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + limits.max_duration;
    let mut workers = JoinSet::new();
    for worker in 0..limits.concurrency.max(1) {
        let (op, started_ops) = (op.clone(), started_ops.clone());
        workers.spawn(async move {
            let mut outcome = Outcome::empty();
            for i in 0.. {
                if Instant::now() >= deadline
                    || started_ops.fetch_add(1, Ordering::Relaxed) >= limits.max_ops
                {
                    break;
                }
                let call_started = Instant::now();
                let result = op(worker, i).await;
                if !outcome.record(call_started, result) {
                    break;
                }
            }
            outcome
        });
    }
    let mut total = Outcome::empty();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(outcome) => total.merge(outcome),
            Err(err) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Fixtures: `make(worker, i)` from `concurrency` workers until `n` calls
/// have been made, within ten minutes; what they made, in no order. Fails,
/// naming `what`, unless every call succeeded.
pub async fn collect<T, Make, Fut>(
    what: &str,
    n: usize,
    concurrency: usize,
    make: Make,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    Make: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let made = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let sink = made.clone();
    let limits = Limits {
        concurrency,
        max_ops: n as u64,
        max_duration: Duration::from_secs(600),
    };
    let outcome = closed_loop(limits, move |worker, i| {
        let making = make(worker, i);
        let sink = sink.clone();
        async move {
            let item = making.await?;
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(item);
            Ok(Step::Done)
        }
    })
    .await;
    anyhow::ensure!(
        outcome.ops as usize == n,
        "{what}: {} of {n} done; first error: {}",
        outcome.ops,
        outcome.first_error.as_deref().unwrap_or("none")
    );
    let mut made = made.lock().unwrap_or_else(|p| p.into_inner());
    Ok(std::mem::take(&mut *made))
}

/// Starts `op(i)` at `rate` per second for `duration` (at most `max_ops`),
/// whether or not earlier calls have returned, with at most `max_in_flight`
/// outstanding (a call that would exceed it is counted as an error: the
/// target rate was not held). Latency is from each call's scheduled start.
pub async fn open_loop<Op, Fut>(
    rate: f64,
    duration: Duration,
    max_ops: u64,
    max_in_flight: usize,
    op: Op,
) -> Outcome
where
    Op: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Step, String>> + Send + 'static,
{
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let started = Instant::now();
    let mut calls = JoinSet::new();
    let mut total = Outcome::empty();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..max_ops {
        let tick = ticker.tick().await;
        if started.elapsed() >= duration {
            break;
        }
        while let Some(joined) = calls.try_join_next() {
            merge_joined(&mut total, joined);
        }
        if calls.len() >= max_in_flight {
            total.errors += 1;
            total
                .first_error
                .get_or_insert_with(|| format!("more than {max_in_flight} calls outstanding"));
            continue;
        }
        let scheduled = tick.into_std();
        let call = op(i);
        calls.spawn(async move {
            let mut outcome = Outcome::empty();
            let result = call.await;
            outcome.record(scheduled, result);
            outcome
        });
    }
    while let Some(joined) = calls.join_next().await {
        merge_joined(&mut total, joined);
    }
    total.elapsed = started.elapsed();
    total
}

fn merge_joined(total: &mut Outcome, joined: Result<Outcome, tokio::task::JoinError>) {
    match joined {
        Ok(outcome) => total.merge(outcome),
        Err(err) => {
            total.errors += 1;
            total.first_error.get_or_insert_with(|| err.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_loop_stops_at_the_count() {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let limits = Limits {
            concurrency: 4,
            max_ops: 50,
            max_duration: Duration::from_secs(30),
        };
        let outcome = closed_loop(limits, move |_, _| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                Ok(Step::Done)
            }
        })
        .await;
        assert_eq!(outcome.ops, 50);
        assert_eq!(calls.load(Ordering::Relaxed), 50);
        assert_eq!(outcome.latency.len(), 50);
    }

    #[tokio::test]
    async fn a_closed_loop_stops_at_the_deadline() {
        let limits = Limits {
            concurrency: 2,
            max_ops: u64::MAX,
            max_duration: Duration::from_millis(100),
        };
        let outcome = closed_loop(limits, |_, _| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Step::Done)
        })
        .await;
        assert!(outcome.ops > 0 && outcome.ops < 100, "{}", outcome.ops);
        assert!(outcome.elapsed < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn exhausted_workers_stop_and_errors_are_counted_apart() {
        let limits = Limits {
            concurrency: 3,
            max_ops: 1000,
            max_duration: Duration::from_secs(30),
        };
        // Every worker's second call fails; worker w is exhausted after
        // call w (but for that failing call 1).
        let outcome = closed_loop(limits, |worker, i| async move {
            match i {
                1 => Err(format!("worker {worker} failed")),
                i if i > worker as u64 => Ok(Step::Exhausted),
                _ => Ok(Step::Done),
            }
        })
        .await;
        // Done: calls 0 of each worker and call 2 of worker 2; failed:
        // call 1 of each.
        assert_eq!((outcome.ops, outcome.errors), (4, 3));
        assert!(outcome.first_error.unwrap().ends_with("failed"));
    }

    #[tokio::test]
    async fn an_open_loop_starts_every_call_it_schedules() {
        // As many may be outstanding as are scheduled: on a busy machine the
        // ticks can come in a burst before any call has run.
        let outcome = open_loop(1000.0, Duration::from_secs(30), 50, 50, |_| async {
            Ok(Step::Done)
        })
        .await;
        assert_eq!((outcome.ops, outcome.errors), (50, 0));
    }

    #[tokio::test]
    async fn an_open_loop_counts_calls_it_could_not_start() {
        // Each call outlasts the scheduling of all ten (about 10 ms) by far,
        // busy machine or not; only 2 may be outstanding.
        let outcome = open_loop(1000.0, Duration::from_secs(30), 10, 2, |_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Step::Done)
        })
        .await;
        assert_eq!((outcome.ops, outcome.errors), (2, 8));
    }
}
