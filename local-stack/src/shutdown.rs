//! A shutdown signal that many tasks can wait on: one trigger, any number
//! of `'static` futures that resolve once it fires (or once the trigger is
//! dropped, so that nothing outlives its owner by accident).

use std::future::Future;

use tokio::sync::watch;

/// Fires the signal.
#[derive(Debug)]
pub(crate) struct Trigger(watch::Sender<bool>);

/// Waits for the signal; clone one per task.
#[derive(Clone, Debug)]
pub(crate) struct Signal(watch::Receiver<bool>);

pub(crate) fn channel() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    pub(crate) fn fire(&self) {
        // `send_replace` stores the value even when no receiver is left.
        self.0.send_replace(true);
    }
}

impl Signal {
    /// Resolves once the trigger fires or is dropped.
    pub(crate) fn wait(self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0;
        async move {
            // An error means the trigger is gone, which is a shutdown too.
            let _ = rx.wait_for(|fired| *fired).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_waiter_resolves_once_fired_and_not_before() {
        let (trigger, signal) = channel();
        let first = tokio::spawn(signal.clone().wait());
        let second = tokio::spawn(signal.wait());
        // Not fired: a waiter is still pending after it has had a chance to run.
        tokio::task::yield_now().await;
        assert!(!first.is_finished());
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), async {
            first.await.unwrap();
            second.await.unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_trigger_counts_as_fired() {
        let (trigger, signal) = channel();
        drop(trigger);
        tokio::time::timeout(Duration::from_secs(5), signal.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiter_made_after_firing_resolves() {
        let (trigger, signal) = channel();
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), signal.wait())
            .await
            .unwrap();
    }
}
