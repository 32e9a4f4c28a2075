//! Shutdown and backoff: the two things every loop of the projector waits on.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;

/// Fires the [`Shutdown`] signals made with it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn trigger(&self) {
        // `send_replace` stores the value even when no receiver is left.
        self.0.send_replace(true);
    }
}

/// A cloneable view of the shutdown signal: cheap to check, and every sleep
/// of the projector ends early when it fires.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is triggered. A dropped trigger counts as
    /// triggered: nobody is left to keep the projector running.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration`; `false` if shutdown cut the sleep short.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => !self.is_triggered(),
            () = self.wait() => false,
        }
    }
}

/// Capped exponential backoff: backon's, without jitter or a limit on
/// attempts (the loops retry until shutdown), and with a reset for when a
/// call succeeds again.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(initial.min(max))
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            max,
        }
    }

    /// The delay to wait now; the following one doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// How long the loops wait. Production values come from [`Timing::new`];
/// tests shrink them.
#[derive(Clone, Debug)]
pub struct Timing {
    /// First pause after an empty `GetRecords`.
    pub idle_poll_start: Duration,
    /// Longest pause between polls of an idle shard.
    pub idle_poll_max: Duration,
    /// How often the shard listing is read again to find new shards.
    pub rediscover_every: Duration,
    /// First and longest pause before retrying a failed call.
    pub retry_start: Duration,
    pub retry_max: Duration,
    /// How long a shard may stay idle before its reader takes a fresh
    /// iterator from its last position (see `shard`).
    pub renew_idle_iterator_after: Duration,
}

impl Timing {
    pub fn new(idle_poll_max: Duration) -> Self {
        Self {
            idle_poll_start: Duration::from_millis(5),
            idle_poll_max,
            rediscover_every: Duration::from_secs(5),
            retry_start: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            renew_idle_iterator_after: Duration::from_secs(1),
        }
    }

    pub fn retry_backoff(&self) -> Backoff {
        Backoff::new(self.retry_start, self.retry_max)
    }

    pub fn idle_backoff(&self) -> Backoff {
        Backoff::new(self.idle_poll_start, self.idle_poll_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(5), Duration::from_millis(30));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(5));
    }

    #[tokio::test]
    async fn shutdown_cuts_a_sleep_short() {
        let (trigger, shutdown) = Shutdown::new();
        assert!(!shutdown.is_triggered());
        let sleeper = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.sleep(Duration::from_secs(3600)).await }
        });
        trigger.trigger();
        let slept = tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleep ends on shutdown")
            .expect("the task does not panic");
        assert!(!slept);
        assert!(shutdown.is_triggered());
    }
}
