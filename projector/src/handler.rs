//! What happens to the events of one `GetRecords` batch before it may be
//! checkpointed: the read models first (rows concurrently, each row's events
//! in order), then publishing.

use std::num::NonZeroUsize;

use async_trait::async_trait;
use dynabridge_domain::StoredEvent;

use crate::control::Shutdown;
use crate::error::StoreError;
use crate::publish::{PublishError, Publisher};
use crate::writer::ReadModelWriter;

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("updating a read model: {0}")]
    ReadModel(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl HandleError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ReadModel(e) => e.is_transient(),
            Self::Publish(PublishError::Shutdown) => true,
            Self::Publish(_) => false,
        }
    }
}

#[async_trait]
pub trait BatchHandler: Send + Sync {
    /// Handles the events of one batch, in stream order. `Ok` means every
    /// one of them is in the read models and published. Safe to call again
    /// with the same events.
    async fn handle(&self, events: &[StoredEvent], shutdown: &Shutdown) -> Result<(), HandleError>;
}

/// The projector's handler: read models, then publishing.
pub struct Projection {
    read_models: ReadModelWriter,
    publisher: Box<dyn Publisher>,
    /// Read-model rows written at once within a batch.
    max_concurrent_writes: NonZeroUsize,
}

impl Projection {
    pub fn new(
        read_models: ReadModelWriter,
        publisher: Box<dyn Publisher>,
        max_concurrent_writes: NonZeroUsize,
    ) -> Self {
        Self {
            read_models,
            publisher,
            max_concurrent_writes,
        }
    }
}

#[async_trait]
impl BatchHandler for Projection {
    async fn handle(&self, events: &[StoredEvent], shutdown: &Shutdown) -> Result<(), HandleError> {
        // One write at a time would make the projector's throughput one
        // event per store round trip; rows are independent, so only each
        // row's events need to wait for each other.
        self.read_models
            .project_all(events, self.max_concurrent_writes)
            .await?;
        // Published only once the read models show the whole batch, so that
        // a subscriber reacting to an event can read its effect.
        self.publisher.publish(events, shutdown).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::metrics::ProjectorMetrics;
    use crate::progress::Progress;
    use crate::publish::BusPublisher;
    use crate::shard::ShardEnd;
    use crate::testing::{
        FakeBus, FakeRows, Harness, RowCall, fast_timing, insert_record, interleaved_events,
        user_events,
    };
    use crate::writer::CACHE_CAPACITY;

    /// The latency of a fake store call, about: time is paused in these
    /// tests, so it costs nothing.
    const LATENCY: Duration = Duration::from_millis(10);

    fn projection(rows: &FakeRows, bus: &FakeBus, max_concurrent_writes: usize) -> Projection {
        let metrics = ProjectorMetrics::new().unwrap();
        Projection::new(
            ReadModelWriter::new(Box::new(rows.clone()), CACHE_CAPACITY, metrics.clone()),
            Box::new(BusPublisher::new(
                std::sync::Arc::new(bus.clone()),
                "src".into(),
                "bus".into(),
                tokio::sync::watch::channel(true).1,
                fast_timing(),
                metrics,
            )),
            NonZeroUsize::new(max_concurrent_writes).unwrap(),
        )
    }

    /// The first event of each aggregate in `events`.
    fn firsts(events: &[StoredEvent]) -> Vec<&StoredEvent> {
        events.iter().filter(|e| e.version == 1).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn rows_are_written_concurrently_up_to_the_bound() {
        // 40 rows of 3 events: 120 writes, 3 in a row for each row.
        let events = interleaved_events(40, 3);
        let one_at_a_time = 120 * LATENCY;
        for (bound, expected_in_flight) in [(8, 8), (1, 1), (64, 40)] {
            let rows = FakeRows::default();
            rows.set_latency(LATENCY);
            let bus = FakeBus::default();
            let (_trigger, shutdown) = Shutdown::new();
            let started = tokio::time::Instant::now();
            projection(&rows, &bus, bound)
                .handle(&events, &shutdown)
                .await
                .unwrap();
            let took = started.elapsed();

            assert_eq!(
                rows.max_in_flight(),
                expected_in_flight,
                "bound {bound}: as many rows as allowed, never more"
            );
            assert_eq!(rows.overlaps(), 0, "bound {bound}");
            for event in firsts(&events) {
                assert_eq!(rows.row_version(event), Some(3), "bound {bound}");
            }
            if bound > 1 {
                assert!(
                    took * 4 < one_at_a_time,
                    "bound {bound}: {took:?}, against at least {one_at_a_time:?} one at a time"
                );
            }
            let published: Vec<_> = bus.accepted().iter().map(|e| e.event_id).collect();
            let in_stream_order: Vec<_> = events.iter().map(|e| e.event_id).collect();
            assert_eq!(published, in_stream_order, "bound {bound}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_rows_events_are_written_in_order_one_after_another() {
        // One long row among short ones, every row's events spread over the
        // batch, and calls of varying latency: finishing order is mixed.
        let mut events = interleaved_events(30, 4);
        let long = user_events(12);
        events.splice(10..10, long[..6].iter().cloned());
        events.extend(long[6..].iter().cloned());
        let rows = FakeRows::default();
        rows.set_latency(LATENCY);
        // Nothing in the event store: a row that saw a later event before
        // an earlier one would find a gap it cannot fill, and fail.
        let (_trigger, shutdown) = Shutdown::new();
        projection(&rows, &FakeBus::default(), 8)
            .handle(&events, &shutdown)
            .await
            .unwrap();

        assert!(rows.max_in_flight() > 1, "{}", rows.max_in_flight());
        assert_eq!(rows.overlaps(), 0, "a row had two calls in flight at once");
        for event in firsts(&events) {
            let last = if event.event.aggregate_id() == long[0].event.aggregate_id() {
                12
            } else {
                4
            };
            assert_eq!(
                rows.puts(event),
                (1..=last).collect::<Vec<_>>(),
                "each version once, in order, none refused"
            );
        }
        assert!(
            rows.calls()
                .iter()
                .all(|call| matches!(call, RowCall::Put(..))),
            "no gap, no conflict: nothing read"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_row_fails_the_batch_before_publishing_and_a_redelivery_converges() {
        let events = interleaved_events(20, 3);
        let rows = FakeRows::default();
        rows.set_latency(LATENCY);
        let failing = &events[25];
        assert_eq!(failing.version, 2);
        rows.fail_put(failing);
        let bus = FakeBus::default();
        let projection = projection(&rows, &bus, 8);
        let (_trigger, shutdown) = Shutdown::new();

        let err = projection.handle(&events, &shutdown).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(matches!(err, HandleError::ReadModel(_)), "{err}");
        assert!(bus.calls().is_empty(), "nothing published");
        assert!(
            firsts(&events)
                .iter()
                .any(|e| rows.row_version(e) != Some(3)),
            "the batch stopped short"
        );

        projection.handle(&events, &shutdown).await.unwrap();
        for event in firsts(&events) {
            assert_eq!(
                rows.written(event),
                vec![1, 2, 3],
                "every event applied once, across both attempts"
            );
        }
        assert_eq!(bus.accepted().len(), events.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_with_a_failing_row_is_checkpointed_only_once_it_succeeds() {
        let h = Harness::new();
        let events = interleaved_events(20, 3);
        let records = events
            .iter()
            .enumerate()
            .map(|(i, e)| insert_record(h.seq(i64::try_from(i).unwrap() + 1), e))
            .collect();
        h.streams.add_shard("A", None, records, true);
        let rows = FakeRows::default();
        rows.set_latency(LATENCY);
        rows.fail_put(&events[33]);
        let bus = FakeBus::default();

        let end = crate::testing::read(
            &h.pipeline_with(Arc::new(projection(&rows, &bus, 8))),
            "A",
            Checkpoint::default(),
        )
        .await
        .unwrap();
        assert_eq!(end, ShardEnd::Finished);
        assert_eq!(h.metrics.batch_failures.get(), 1);
        assert_eq!(
            h.checkpoints.saved("A"),
            vec![(Some(h.seq(60)), true)],
            "one checkpoint, after the retry succeeded"
        );
        for event in firsts(&events) {
            assert_eq!(rows.written(event), vec![1, 2, 3]);
        }
        assert_eq!(bus.accepted().len(), events.len(), "published once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_batch_beats_while_it_runs() {
        // One row of 100 events takes 100 calls one after another, about
        // 1.5 s; the loop must not look stuck meanwhile.
        let events = user_events(100);
        let rows = FakeRows::default();
        rows.set_latency(LATENCY);
        let projection = projection(&rows, &FakeBus::default(), 8);
        let progress = Progress::new();
        let silence = progress
            .clone()
            .track("shard-A", async {
                let (_trigger, shutdown) = Shutdown::new();
                let (handled, silence) =
                    tokio::join!(projection.handle(&events, &shutdown), async {
                        tokio::time::sleep(100 * LATENCY).await;
                        progress.silences(tokio::time::Instant::now())["shard-A"]
                    });
                handled.unwrap();
                silence
            })
            .await;
        assert!(silence <= 2 * LATENCY, "{silence:?}");
    }
}
