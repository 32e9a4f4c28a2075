//! What happens to the events of one `GetRecords` batch before it may be
//! checkpointed: the read models first (aggregates concurrently, each
//! aggregate's events in order), then publishing. An event that cannot be
//! applied parks its aggregate ([`crate::parking`]): its later events queue
//! behind it, and the rest of the batch goes on.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use dynabridge_domain::StoredEvent;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use uuid::Uuid;

use crate::control::Shutdown;
use crate::error::StoreError;
use crate::parking::{ParkedEvent, Parking};
use crate::publish::{PublishError, Publisher};
use crate::writer::ReadModelWriter;
pub use dynabridge_stream::batch::{Batch, BatchHandler, HandleError, Record, by_aggregate};

/// Why the projection of a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("updating a read model: {0}")]
    ReadModel(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<ProjectionError> for HandleError {
    fn from(err: ProjectionError) -> Self {
        HandleError::new(err.is_transient(), err)
    }
}

impl ProjectionError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ReadModel(e) => e.is_transient(),
            Self::Publish(PublishError::Shutdown) => true,
            Self::Publish(_) => false,
        }
    }
}

/// The projector's handler: read models, then publishing.
pub struct Projection {
    read_models: Arc<ReadModelWriter>,
    publisher: Arc<dyn Publisher>,
    parking: Arc<Parking>,
    /// Aggregates written at once within a batch.
    max_concurrent_writes: NonZeroUsize,
}

impl Projection {
    pub fn new(
        read_models: Arc<ReadModelWriter>,
        publisher: Arc<dyn Publisher>,
        parking: Arc<Parking>,
        max_concurrent_writes: NonZeroUsize,
    ) -> Self {
        Self {
            read_models,
            publisher,
            parking,
            max_concurrent_writes,
        }
    }

    /// Projects one aggregate's records, one after another; returns the
    /// events applied. A record of a parked aggregate queues behind its
    /// parked events; one that cannot be applied parks its aggregate. A
    /// failure that may pass fails the batch.
    async fn project_aggregate(&self, records: Vec<Record<'_>>) -> Result<Vec<Uuid>, StoreError> {
        let mut applied = Vec::with_capacity(records.len());
        for record in records {
            // A batch may take long under a slow store: each event is
            // progress.
            crate::progress::beat();
            if self
                .parking
                .is_parked(&record.aggregate_id(), record.version())
                && self
                    .parking
                    .queue_behind(&record.parked("queued behind an earlier parked event"))
                    .await?
            {
                continue;
            }
            match record {
                Record::Unreadable(parked) => self.parking.park(parked).await?,
                Record::Event(event) => match self.read_models.project(event).await {
                    Ok(()) => applied.push(event.event_id),
                    Err(err) if err.is_transient() || err.is_missing_table() => return Err(err),
                    Err(err) => {
                        self.parking
                            .park(&ParkedEvent::of(event, err.to_string()))
                            .await?;
                    }
                },
            }
        }
        Ok(applied)
    }
}

#[async_trait]
impl BatchHandler for Projection {
    async fn handle(&self, batch: &Batch, shutdown: &Shutdown) -> Result<(), HandleError> {
        self.project(batch, shutdown)
            .await
            .map_err(HandleError::from)
    }
}

impl Projection {
    /// Projects `batch`, then publishes what it applied.
    async fn project(&self, batch: &Batch, shutdown: &Shutdown) -> Result<(), ProjectionError> {
        // One write at a time would make the projector's throughput one
        // event per store round trip; aggregates are independent, so only
        // each aggregate's events need to wait for each other. Made up
        // front, run as they are polled.
        let groups: Vec<_> = by_aggregate(batch)
            .into_iter()
            .map(|records| self.project_aggregate(records))
            .collect();
        let applied: Vec<Vec<Uuid>> = stream::iter(groups)
            .buffer_unordered(self.max_concurrent_writes.get())
            .try_collect()
            .await?;
        // Published only once the read models show the whole batch, so that
        // a subscriber reacting to an event can read its effect. A parked
        // event is published when it is retried.
        let applied_count: usize = applied.iter().map(Vec::len).sum();
        if applied_count == batch.events.len() {
            self.publisher.publish(&batch.events, shutdown).await?;
        } else {
            let applied: HashSet<Uuid> = applied.into_iter().flatten().collect();
            let events: Vec<StoredEvent> = batch
                .events
                .iter()
                .filter(|e| applied.contains(&e.event_id))
                .cloned()
                .collect();
            self.publisher.publish(&events, shutdown).await?;
        }
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
    use std::collections::BTreeSet;

    use dynabridge_domain::Version;
    use uuid::Uuid;

    use crate::parking::{ParkedEvent, Parking, Status};
    use crate::testing::{
        FakeBus, FakeRows, Harness, MemoryParking, RowCall, fast_timing, insert_record,
        interleaved_events, user_events,
    };
    use crate::writer::CACHE_CAPACITY;

    /// The latency of a fake store call, about: time is paused in these
    /// tests, so it costs nothing.
    const LATENCY: Duration = Duration::from_millis(10);

    fn projection(rows: &FakeRows, bus: &FakeBus, max_concurrent_writes: usize) -> Projection {
        projection_parking(rows, bus, &MemoryParking::default(), max_concurrent_writes)
    }

    fn projection_parking(
        rows: &FakeRows,
        bus: &FakeBus,
        parked: &MemoryParking,
        max_concurrent_writes: usize,
    ) -> Projection {
        let metrics = ProjectorMetrics::new().unwrap();
        Projection::new(
            Arc::new(ReadModelWriter::new(
                Box::new(rows.clone()),
                CACHE_CAPACITY,
                metrics.clone(),
            )),
            Arc::new(BusPublisher::new(
                std::sync::Arc::new(bus.clone()),
                "src".into(),
                "bus".into(),
                tokio::sync::watch::channel(true).1,
                fast_timing(),
                metrics.clone(),
            )),
            Arc::new(Parking::new(Arc::new(parked.clone()), metrics)),
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
                .handle(&Batch::from(events.clone()), &shutdown)
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
            .handle(&Batch::from(events.clone()), &shutdown)
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

        let err = projection
            .project(&Batch::from(events.clone()), &shutdown)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(matches!(err, ProjectionError::ReadModel(_)), "{err}");
        assert!(bus.calls().is_empty(), "nothing published");
        assert!(
            firsts(&events)
                .iter()
                .any(|e| rows.row_version(e) != Some(3)),
            "the batch stopped short"
        );

        projection
            .handle(&Batch::from(events.clone()), &shutdown)
            .await
            .unwrap();
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
                let batch = Batch::from(events.clone());
                let (handled, silence) =
                    tokio::join!(projection.handle(&batch, &shutdown), async {
                        tokio::time::sleep(100 * LATENCY).await;
                        progress.silences(tokio::time::Instant::now())["shard-A"]
                    });
                handled.unwrap();
                silence
            })
            .await;
        assert!(silence <= 2 * LATENCY, "{silence:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_event_parks_its_aggregate_alone_and_its_later_events_queue_behind() {
        // 20 aggregates of 3 events; the second event of one cannot be read.
        let events = interleaved_events(20, 3);
        let poisoned = events[25].clone();
        assert_eq!(poisoned.version, 2);
        let id = poisoned.event.aggregate_id().to_string();
        let mut batch = Batch::from(events.clone());
        batch.events.remove(25);
        batch.unreadable.push((
            25,
            ParkedEvent {
                error: "unreadable event: bad payload".into(),
                ..ParkedEvent::of(&poisoned, "")
            },
        ));
        let rows = FakeRows::default();
        rows.set_latency(LATENCY);
        let bus = FakeBus::default();
        let parked = MemoryParking::default();
        let projection = projection_parking(&rows, &bus, &parked, 8);
        let (_trigger, shutdown) = Shutdown::new();

        projection.handle(&batch, &shutdown).await.unwrap();
        // Twice: a redelivered batch changes nothing.
        projection.handle(&batch, &shutdown).await.unwrap();

        assert_eq!(parked.parked_versions(&id), vec![2, 3]);
        let header = parked.header(&id).unwrap();
        assert_eq!((header.status, header.last_version), (Status::Parked, 3));
        for event in firsts(&events) {
            let expected: Vec<Version> = if event.event.aggregate_id().to_string() == id {
                vec![1]
            } else {
                vec![1, 2, 3]
            };
            assert_eq!(rows.written(event), expected);
        }
        let published: BTreeSet<Uuid> = bus.accepted().iter().map(|e| e.event_id).collect();
        assert_eq!(published.len(), 60 - 2, "all but the parked two");
        assert!(
            events
                .iter()
                .filter(|e| e.event.aggregate_id().to_string() == id && e.version > 1)
                .all(|e| !published.contains(&e.event_id))
        );
    }

    #[tokio::test]
    async fn what_a_shard_costs_is_counted_per_page_checkpoint_and_event() {
        use crate::metrics::Batch;
        use crate::writer::ReadModelWriter;

        // The pipeline counts into the projector's own stream metrics.
        let mut h = Harness::new();
        let metrics = ProjectorMetrics::new().unwrap();
        h.metrics = metrics.stream.clone();
        let mut events = user_events(5);
        for event in &mut events {
            event.occurred_at = chrono::Utc::now() - chrono::Duration::seconds(1);
        }
        h.streams.add_shard("A", None, h.records(&events), true);
        h.streams.set_records_per_call(2);
        h.streams.close_on_empty_page("A");
        h.checkpoints.fail_next(1);
        let bus = FakeBus::default();
        let projection = Projection::new(
            Arc::new(ReadModelWriter::new(
                Box::new(FakeRows::default()),
                CACHE_CAPACITY,
                metrics.clone(),
            )),
            Arc::new(BusPublisher::new(
                std::sync::Arc::new(bus.clone()),
                "src".into(),
                "bus".into(),
                tokio::sync::watch::channel(true).1,
                fast_timing(),
                metrics.clone(),
            )),
            Arc::new(Parking::new(
                Arc::new(MemoryParking::default()),
                metrics.clone(),
            )),
            std::num::NonZeroUsize::new(32).unwrap(),
        );

        let end = crate::testing::read(
            &h.pipeline_with(Arc::new(projection)),
            "A",
            Checkpoint::default(),
        )
        .await
        .unwrap();
        assert_eq!(end, ShardEnd::Finished);
        let m = &metrics;
        // Pages [1, 2], [3, 4], [5], then the empty one that closes the
        // shard and is checkpointed as finished.
        assert_eq!(m.batches(Batch::NonEmpty), 3);
        assert_eq!(m.batches(Batch::Empty), 1);
        let writes = m.checkpoint_writes.get();
        assert_eq!(writes, 4, "the failed write is not one");
        assert_eq!(writes, h.checkpoints.saved("A").len() as u64);
        assert!(writes <= m.batches(Batch::NonEmpty) + m.batches(Batch::Empty));
        assert_eq!(m.records_processed.get(), 5);
        assert_eq!(m.events_published.get(), 5);
        assert_eq!(bus.accepted().len(), 5);
        let lag = &m.visible_lag_seconds;
        assert_eq!(lag.get_sample_count(), 5, "one per event written");
        assert!(
            (5.0..60.0).contains(&lag.get_sample_sum()),
            "about 1 s each: {}",
            lag.get_sample_sum()
        );
    }
}
