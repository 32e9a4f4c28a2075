//! Reading one shard, from its checkpoint until it closes: `GetRecords` in a
//! loop, each batch handled, then checkpointed.
//!
//! Invariant: a checkpoint is written only after the handler returned `Ok`
//! for every event up to it, and at most once per batch. A batch whose
//! handling fails is retried with capped backoff until it succeeds or the
//! projector shuts down; the shard never moves past an unprocessed event.
//!
//! An idle reader takes a fresh iterator from its last position every
//! `renew_idle_iterator_after` (a second): the records after it are read
//! from there, whatever became of the old cursor.
//!
//! A reader holds its shard's lease ([`crate::lease`]) and stops as soon as
//! it is lost, whatever it is doing: a batch cut short is redone by the new
//! holder, from the last checkpoint. Each checkpoint write is conditional on
//! the lease, so none lands once another instance holds it.
//!
//! An insert whose item is no event this build can read still names its
//! aggregate in its key: it parks that aggregate ([`crate::parking`]), and
//! the shard goes on. Only a record that names no aggregate at all (no
//! sequence number, no image, no key) is poison: the shard stops at it,
//! after checkpointing the records before it. Skipping it would lose an
//! event for good, and retrying cannot help since the bytes will not
//! change. Stopping keeps the position, makes the error loud, and lets an
//! operator fix it; the shard resumes on restart.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodbstreams::types::AttributeValue;
use dynabridge::schema::event_store;
use dynabridge_domain::StoredEvent;
use dynabridge_event_store::codec::event_from_item;

use crate::attribute::image_to_item;
use crate::batch::ParkedEvent;
use crate::batch::{Batch as Records, BatchHandler};
use crate::catchup::{CatchUpSource, MARGIN};
use crate::checkpoint::{Checkpoint, CheckpointStore, LeaseError, TrimmedWindow};
use crate::control::{Shutdown, Timing};
use crate::lease::{Lease, Leases};
use crate::metrics::{Batch, StreamMetrics};
use crate::progress::{self, Progress};
use crate::stream::{Operation, RecordPage, StartPosition, StreamApi, StreamError, StreamRecord};

/// The most records one `GetRecords` returns.
pub const RECORDS_PER_CALL: i32 = 1000;

/// Everything a shard reader needs, shared by the readers of one stream.
pub struct Pipeline {
    pub stream_arn: String,
    pub streams: Arc<dyn StreamApi>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// The shard leases of this instance, on the same items as the
    /// checkpoints.
    pub leases: Arc<Leases>,
    pub handler: Arc<dyn BatchHandler>,
    /// The event store, for the events the stream trimmed before they were
    /// read.
    pub catch_up: Arc<dyn CatchUpSource>,
    pub timing: Timing,
    pub shutdown: Shutdown,
    /// Where the readers report their heartbeats and lag, for health.
    pub progress: Arc<Progress>,
    pub metrics: StreamMetrics,
}

/// Why a shard reader stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardEnd {
    /// The shard is closed and every record is processed and checkpointed.
    Finished,
    /// Stopped at a record that cannot be decoded.
    Poisoned,
    Shutdown,
    /// The shard's lease was lost: another instance reads it now.
    LeaseLost,
}

/// A record that cannot become an event.
#[derive(Debug)]
struct Poison {
    reason: String,
    event_id: Option<String>,
}

enum BatchEnd {
    Done {
        last_sequence_number: String,
        last_event_time: Option<chrono::DateTime<chrono::Utc>>,
    },
    Poisoned,
    Shutdown,
}

/// What a stream record holds.
#[derive(Debug)]
enum Decoded {
    Event(StoredEvent),
    /// An insert whose item is no event this build reads, parked.
    Unreadable(ParkedEvent),
    /// Not an insert.
    Nothing,
}

/// What `record` holds; `Err` if it names no aggregate at all.
fn decode(record: &StreamRecord) -> Result<Decoded, Poison> {
    match decode_event(record) {
        Ok(Some(event)) => Ok(Decoded::Event(event)),
        Ok(None) => Ok(Decoded::Nothing),
        Err(poison) => {
            let image = record.new_image.as_ref();
            let string = |name: &str| match image.and_then(|i| i.get(name)) {
                Some(AttributeValue::S(value)) => Some(value.clone()),
                _ => None,
            };
            let version = match image.and_then(|i| i.get(event_store::VERSION)) {
                Some(AttributeValue::N(n)) => n.parse().ok(),
                _ => None,
            };
            match (string(event_store::AGGREGATE_ID), version) {
                (Some(aggregate_id), Some(version)) if !record.sequence_number.is_empty() => {
                    Ok(Decoded::Unreadable(ParkedEvent {
                        aggregate_id,
                        version,
                        event_id: poison.event_id,
                        event_type: string(event_store::EVENT_TYPE),
                        aggregate_type: string(event_store::AGGREGATE_TYPE),
                        error: format!("unreadable event: {}", poison.reason),
                    }))
                }
                _ => Err(poison),
            }
        }
    }
}

/// The event in a stream record; `None` for a record that is not an event.
fn decode_event(record: &StreamRecord) -> Result<Option<StoredEvent>, Poison> {
    if record.sequence_number.is_empty() {
        return Err(Poison {
            reason: "record without a sequence number".into(),
            event_id: None,
        });
    }
    if record.operation != Operation::Insert {
        return Ok(None);
    }
    let Some(image) = &record.new_image else {
        return Err(Poison {
            reason: "insert without a new image: the stream must carry NEW_IMAGE".into(),
            event_id: None,
        });
    };
    let poison = |reason: String| Poison {
        reason,
        event_id: event_id_of(image),
    };
    let item = image_to_item(image).map_err(|e| poison(e.to_string()))?;
    event_from_item(&item)
        .map(Some)
        .map_err(|e| poison(e.to_string()))
}

fn event_id_of(image: &HashMap<String, AttributeValue>) -> Option<String> {
    match image.get(event_store::EVENT_ID) {
        Some(AttributeValue::S(id)) => Some(id.clone()),
        _ => None,
    }
}

/// Where a new iterator stands.
enum Positioned {
    At(String),
    /// The position asked for is trimmed: the events after it may be lost
    /// to the stream.
    Trimmed,
}

impl Pipeline {
    /// Reads the shard of `lease` from `checkpoint` until it closes, a
    /// poison record stops it, the lease is lost, or shutdown. An error is
    /// one retrying cannot fix.
    pub async fn run_shard(
        &self,
        lease: &Lease,
        checkpoint: Checkpoint,
    ) -> Result<ShardEnd, StreamError> {
        let end = tokio::select! {
            biased;
            () = lease.until_lost() => return Ok(ShardEnd::LeaseLost),
            end = self.read(lease, checkpoint) => end,
        };
        match end {
            // A checkpoint write found another holder.
            Ok(ShardEnd::Shutdown) if lease.is_lost() => Ok(ShardEnd::LeaseLost),
            end => end,
        }
    }

    async fn read(&self, lease: &Lease, checkpoint: Checkpoint) -> Result<ShardEnd, StreamError> {
        let shard_id = lease.shard_id();
        let mut last_sequence_number = checkpoint.sequence_number;
        let mut last_event_time = checkpoint.last_event_time;
        let start = StartPosition::after(last_sequence_number.as_deref());
        tracing::info!(shard_id, from = ?start, "reading shard");
        // A page read ahead, to be processed before the next is asked for.
        let mut pending: Option<RecordPage> = None;
        let mut iterator = match self.iterator(shard_id, start).await? {
            None => return Ok(ShardEnd::Shutdown),
            Some(Positioned::At(iterator)) => iterator,
            Some(Positioned::Trimmed) => match self.catch_up(lease, last_event_time).await? {
                None => return Ok(ShardEnd::Shutdown),
                Some(first) => {
                    pending = Some(first);
                    String::new()
                }
            },
        };
        let mut idle = self.timing.idle_backoff();
        let mut retry = self.timing.retry_backoff();
        // Since when the shard has shown nothing new, on this iterator.
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            progress::beat();
            if self.shutdown.is_triggered() {
                return Ok(ShardEnd::Shutdown);
            }
            let fetched = match pending.take() {
                Some(page) => Ok(page),
                None => self.streams.get_records(&iterator, RECORDS_PER_CALL).await,
            };
            let page = match fetched {
                Ok(page) => {
                    retry.reset();
                    if page.records.is_empty() {
                        self.metrics.batch_received(Batch::Empty);
                        progress::caught_up();
                    } else {
                        self.metrics.batch_received(Batch::NonEmpty);
                        progress::read_records(
                            page.records
                                .iter()
                                .filter_map(|r| r.approximate_creation)
                                .min(),
                        );
                    }
                    page
                }
                Err(StreamError::ExpiredIterator) => {
                    tracing::debug!(shard_id, "shard iterator expired, renewing it");
                    let position = StartPosition::after(last_sequence_number.as_deref());
                    match self.iterator(shard_id, position).await? {
                        Some(Positioned::At(renewed)) => iterator = renewed,
                        Some(Positioned::Trimmed) => {
                            pending = self.catch_up(lease, last_event_time).await?;
                            if pending.is_none() {
                                return Ok(ShardEnd::Shutdown);
                            }
                        }
                        None => return Ok(ShardEnd::Shutdown),
                    }
                    continue;
                }
                Err(StreamError::Trimmed) => {
                    pending = self.catch_up(lease, last_event_time).await?;
                    if pending.is_none() {
                        return Ok(ShardEnd::Shutdown);
                    }
                    continue;
                }
                Err(err) if err.is_transient() => {
                    tracing::warn!(shard_id, error = %err, "reading the stream failed, retrying");
                    if !self.shutdown.sleep(retry.next_delay()).await {
                        return Ok(ShardEnd::Shutdown);
                    }
                    continue;
                }
                Err(err) => return Err(err),
            };
            let closed = page.next_iterator.is_none();
            if !page.records.is_empty() {
                idle.reset();
                match self
                    .process(lease, &page.records, closed, last_event_time)
                    .await
                {
                    BatchEnd::Done {
                        last_sequence_number: last,
                        last_event_time: time,
                    } => {
                        last_sequence_number = Some(last);
                        last_event_time = time;
                    }
                    BatchEnd::Poisoned => return Ok(ShardEnd::Poisoned),
                    BatchEnd::Shutdown => return Ok(ShardEnd::Shutdown),
                }
            } else if closed {
                // The last page was empty: nothing checkpointed it finished.
                let finished = Checkpoint {
                    sequence_number: last_sequence_number.clone(),
                    finished: true,
                    last_event_time,
                };
                if !self.save(lease, &finished).await {
                    return Ok(ShardEnd::Shutdown);
                }
            }
            let Some(next) = page.next_iterator else {
                progress::caught_up();
                tracing::info!(shard_id, last_sequence_number = ?last_sequence_number, "shard closed and finished");
                return Ok(ShardEnd::Finished);
            };
            iterator = next;
            if !page.records.is_empty() {
                idle_since = None;
                continue;
            }
            // An iterator is only a cursor: an idle reader takes a fresh one
            // from its last position now and then. On DynamoDB it costs one
            // GetShardIterator a second per idle shard; an emulator that
            // orphans open iterators (moto does, on a cancelled transaction
            // on the table) then delays records by that much, not forever.
            let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= self.timing.renew_idle_iterator_after {
                idle_since = None;
                let position = StartPosition::after(last_sequence_number.as_deref());
                match self.iterator(shard_id, position).await? {
                    Some(Positioned::At(renewed)) => iterator = renewed,
                    Some(Positioned::Trimmed) => {
                        pending = self.catch_up(lease, last_event_time).await?;
                        if pending.is_none() {
                            return Ok(ShardEnd::Shutdown);
                        }
                        continue;
                    }
                    None => return Ok(ShardEnd::Shutdown),
                }
            }
            if !self.shutdown.sleep(idle.next_delay()).await {
                return Ok(ShardEnd::Shutdown);
            }
        }
    }

    /// A new iterator at `position`, retrying what can pass; `None` on
    /// shutdown.
    async fn iterator(
        &self,
        shard_id: &str,
        position: StartPosition,
    ) -> Result<Option<Positioned>, StreamError> {
        let mut retry = self.timing.retry_backoff();
        loop {
            progress::beat();
            match self
                .streams
                .shard_iterator(&self.stream_arn, shard_id, &position)
                .await
            {
                Ok(iterator) => return Ok(Some(Positioned::At(iterator))),
                Err(StreamError::Trimmed) if position != StartPosition::TrimHorizon => {
                    return Ok(Some(Positioned::Trimmed));
                }
                Err(err) if err.is_transient() => {
                    tracing::warn!(shard_id, error = %err, "getting a shard iterator failed, retrying");
                    if !self.shutdown.sleep(retry.next_delay()).await {
                        return Ok(None);
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Handles one non-empty batch and checkpoints it.
    async fn process(
        &self,
        lease: &Lease,
        records: &[StreamRecord],
        closed: bool,
        last_event_time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> BatchEnd {
        let shard_id = lease.shard_id();
        let mut batch = Records {
            events: Vec::with_capacity(records.len()),
            unreadable: Vec::new(),
        };
        let mut last_good: Option<&str> = None;
        let mut good: u64 = 0;
        let mut poison = None;
        for record in records {
            match decode(record) {
                Ok(Decoded::Event(event)) => batch.events.push(event),
                Ok(Decoded::Unreadable(parked)) => {
                    batch.unreadable.push((batch.events.len(), parked));
                }
                Ok(Decoded::Nothing) => {
                    tracing::debug!(shard_id, sequence_number = %record.sequence_number, operation = ?record.operation, "not an insert, skipped")
                }
                Err(why) => {
                    poison = Some((record, why));
                    break;
                }
            }
            last_good = Some(&record.sequence_number);
            good += 1;
        }
        if let Some(last) = last_good {
            tracing::debug!(shard_id, records = records.len(), events = batch.events.len(), last_sequence_number = %last, "handling a batch");
            if !batch.is_empty() && !self.handle(shard_id, &batch).await {
                return BatchEnd::Shutdown;
            }
            let checkpoint = Checkpoint {
                sequence_number: Some(last.to_owned()),
                finished: closed && poison.is_none(),
                last_event_time: batch
                    .events
                    .iter()
                    .map(|e| e.occurred_at)
                    .chain(last_event_time)
                    .max(),
            };
            if !self.save(lease, &checkpoint).await {
                return BatchEnd::Shutdown;
            }
            self.metrics.records_processed.inc_by(good);
        }
        match (poison, last_good) {
            (Some((record, why)), _) => {
                tracing::error!(
                    shard_id,
                    sequence_number = %record.sequence_number,
                    event_id = why.event_id.as_deref().unwrap_or("unknown"),
                    error = %why.reason,
                    "poison record: the shard stops before it until the item is fixed or the projector can read it"
                );
                BatchEnd::Poisoned
            }
            (None, Some(last)) => BatchEnd::Done {
                last_sequence_number: last.to_owned(),
                last_event_time: batch
                    .events
                    .iter()
                    .map(|e| e.occurred_at)
                    .chain(last_event_time)
                    .max(),
            },
            // Only an empty batch has neither, and it is never processed.
            (None, None) => BatchEnd::Shutdown,
        }
    }

    /// Hands `events` to the handler until it succeeds; `false` on shutdown.
    async fn handle(&self, shard_id: &str, batch: &Records) -> bool {
        let mut retry = self.timing.retry_backoff();
        loop {
            progress::beat();
            match self.handler.handle(batch, &self.shutdown).await {
                Ok(()) => return true,
                Err(err) => {
                    if self.shutdown.is_triggered() {
                        tracing::info!(
                            shard_id,
                            events = batch.events.len(),
                            "shutdown: batch abandoned without a checkpoint"
                        );
                        return false;
                    }
                    self.metrics.batch_failures.inc();
                    if err.is_transient() {
                        tracing::warn!(shard_id, error = %err, events = batch.events.len(), "handling a batch failed, retrying");
                    } else {
                        tracing::error!(shard_id, error = %err, events = batch.events.len(), "handling a batch failed, retrying");
                    }
                    if !self.shutdown.sleep(retry.next_delay()).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Catches up from the event store the events the stream trimmed after
    /// `since` (the checkpoint's last event time; `None`: every event), and
    /// returns the first page the stream still has, to be processed next;
    /// `None` on shutdown or if the lease is lost.
    ///
    /// The window runs from `since` to the oldest record left, each side
    /// widened by [`MARGIN`]. It is recorded on the shard's item before and
    /// after; meanwhile readiness says the shard is catching up.
    async fn catch_up(
        &self,
        lease: &Lease,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<RecordPage>, StreamError> {
        let shard_id = lease.shard_id();
        let Some(first) = self.oldest_page(shard_id).await? else {
            return Ok(None);
        };
        let oldest = first
            .records
            .iter()
            .filter_map(|r| r.approximate_creation)
            .min()
            .unwrap_or_else(chrono::Utc::now);
        let margin = chrono::TimeDelta::from_std(MARGIN).unwrap_or_default();
        let mut window = TrimmedWindow {
            from: since.map(|t| t - margin),
            to: oldest + margin,
            caught_up_at: None,
            events: 0,
        };
        tracing::warn!(
            shard_id,
            from = ?window.from,
            to = %window.to,
            "stream records were trimmed before the projector read them: catching them up from the event store"
        );
        progress::catching_up(true);
        let caught = self.catch_up_window(lease, &mut window).await;
        progress::catching_up(false);
        if !caught {
            return Ok(None);
        }
        self.metrics.events_caught_up.inc_by(window.events as u64);
        tracing::info!(shard_id, events = window.events, "trimmed window caught up");
        Ok(Some(first))
    }

    /// Reads the window's events from the event store, records the window,
    /// applies and publishes the events, records it caught up; `false` on
    /// shutdown or if the lease is lost.
    async fn catch_up_window(&self, lease: &Lease, window: &mut TrimmedWindow) -> bool {
        let shard_id = lease.shard_id();
        let mut retry = self.timing.retry_backoff();
        let events = loop {
            progress::beat();
            match self.catch_up.events_between(window.from, window.to).await {
                Ok(events) => break events,
                Err(err) => {
                    tracing::warn!(shard_id, error = %err, "reading the trimmed window from the event store failed, retrying");
                    if !self.shutdown.sleep(retry.next_delay()).await {
                        return false;
                    }
                }
            }
        };
        window.events = events.len();
        if !self.record(lease, window).await {
            return false;
        }
        if !events.is_empty() && !self.handle(shard_id, &Records::from(events)).await {
            return false;
        }
        window.caught_up_at = Some(chrono::Utc::now());
        self.record(lease, window).await
    }

    /// The first page of the oldest records the shard still has, and its
    /// iterator; `None` on shutdown.
    async fn oldest_page(&self, shard_id: &str) -> Result<Option<RecordPage>, StreamError> {
        let mut retry = self.timing.retry_backoff();
        loop {
            let Some(Positioned::At(iterator)) =
                self.iterator(shard_id, StartPosition::TrimHorizon).await?
            else {
                return Ok(None);
            };
            match self.streams.get_records(&iterator, RECORDS_PER_CALL).await {
                Ok(page) => return Ok(Some(page)),
                Err(err) if err.is_transient() => {
                    tracing::warn!(shard_id, error = %err, "reading the oldest records failed, retrying");
                    if !self.shutdown.sleep(retry.next_delay()).await {
                        return Ok(None);
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Records `window` on the shard's item until it is stored; `false` on
    /// shutdown or if the lease is lost.
    async fn record(&self, lease: &Lease, window: &TrimmedWindow) -> bool {
        let shard_id = lease.shard_id();
        let mut retry = self.timing.retry_backoff();
        loop {
            progress::beat();
            match self
                .checkpoints
                .record_trimmed(&self.stream_arn, shard_id, self.leases.owner(), window)
                .await
            {
                Ok(()) => return true,
                Err(LeaseError::Conflict) => {
                    lease.lose("another instance holds it: the trimmed window was not recorded");
                    return false;
                }
                Err(LeaseError::Store(err)) => {
                    tracing::warn!(shard_id, error = %err, "recording a trimmed window failed, retrying");
                    if !self.shutdown.sleep(retry.next_delay()).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Writes `checkpoint` until it is stored; `false` on shutdown or if
    /// the lease is lost.
    async fn save(&self, lease: &Lease, checkpoint: &Checkpoint) -> bool {
        let shard_id = lease.shard_id();
        let mut retry = self.timing.retry_backoff();
        loop {
            progress::beat();
            match self
                .checkpoints
                .save(&self.stream_arn, shard_id, self.leases.owner(), checkpoint)
                .await
            {
                Ok(()) => {
                    self.metrics.checkpoint_writes.inc();
                    progress::checkpointed();
                    return true;
                }
                Err(LeaseError::Conflict) => {
                    lease.lose("another instance holds it: the checkpoint was not written");
                    return false;
                }
                Err(LeaseError::Store(err)) => {
                    if err.is_transient() {
                        tracing::warn!(shard_id, error = %err, "writing a checkpoint failed, retrying");
                    } else {
                        tracing::error!(shard_id, error = %err, "writing a checkpoint failed, retrying");
                    }
                    if !self.shutdown.sleep(retry.next_delay()).await {
                        return false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Entry, Harness, insert_record, user_events};

    fn handled_versions(journal: &[Entry]) -> Vec<i64> {
        journal
            .iter()
            .filter_map(|e| match e {
                Entry::Handled(versions) => Some(versions.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[tokio::test]
    async fn a_closed_shard_is_read_to_the_end_with_one_checkpoint_per_batch() {
        let h = Harness::new();
        let events = user_events(5);
        h.streams.add_shard("A", None, h.records(&events), true);
        h.streams.set_records_per_call(2);

        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Finished);
        assert_eq!(h.metrics.records_processed.get(), 5);
        let s = |n| h.seq(n);
        assert_eq!(
            h.journal.entries(),
            vec![
                Entry::Iterator("A".into(), StartPosition::TrimHorizon),
                Entry::Handled(vec![1, 2]),
                Entry::Checkpoint("A".into(), Some(s(2)), false),
                Entry::Handled(vec![3, 4]),
                Entry::Checkpoint("A".into(), Some(s(4)), false),
                Entry::Handled(vec![5]),
                Entry::Checkpoint("A".into(), Some(s(5)), true),
            ]
        );
    }

    #[tokio::test]
    async fn a_shard_closing_on_an_empty_page_is_marked_finished() {
        let h = Harness::new();
        let events = user_events(2);
        h.streams.add_shard("A", None, h.records(&events), true);
        h.streams.close_on_empty_page("A");

        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Finished);
        assert_eq!(
            h.checkpoints.saved("A"),
            vec![(Some(h.seq(2)), false), (Some(h.seq(2)), true)]
        );
    }

    #[tokio::test]
    async fn an_open_shard_is_polled_until_shutdown_and_never_finished() {
        let h = Harness::new();
        h.streams
            .add_shard("A", None, h.records(&user_events(1)), false);
        let pipeline = Arc::new(h.pipeline());
        let task = tokio::spawn({
            let pipeline = pipeline.clone();
            async move { crate::testing::read(&pipeline, "A", Checkpoint::default()).await }
        });
        crate::testing::wait_until("several idle polls", || h.streams.get_records_calls() >= 5)
            .await;
        h.trigger.trigger();
        assert_eq!(task.await.unwrap().unwrap(), ShardEnd::Shutdown);
        assert_eq!(h.checkpoints.saved("A"), vec![(Some(h.seq(1)), false)]);
    }

    #[tokio::test]
    async fn reading_starts_after_the_checkpoint() {
        let h = Harness::new();
        let events = user_events(4);
        h.streams.add_shard("A", None, h.records(&events), true);
        let checkpoint = Checkpoint {
            sequence_number: Some(h.seq(2)),
            finished: false,
            last_event_time: None,
        };
        h.read_shard("A", checkpoint).await.unwrap();
        assert_eq!(handled_versions(&h.journal.entries()), vec![3, 4]);
        assert_eq!(
            h.journal.entries()[0],
            Entry::Iterator("A".into(), StartPosition::After(h.seq(2)))
        );
    }

    #[tokio::test]
    async fn an_expired_iterator_is_renewed_after_the_last_processed_record() {
        let h = Harness::new();
        let events = user_events(4);
        h.streams.add_shard("A", None, h.records(&events), true);
        h.streams.set_records_per_call(2);
        h.streams.expire_once("A", 2);

        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Finished);
        let journal = h.journal.entries();
        assert_eq!(
            journal[..4],
            [
                Entry::Iterator("A".into(), StartPosition::TrimHorizon),
                Entry::Handled(vec![1, 2]),
                Entry::Checkpoint("A".into(), Some(h.seq(2)), false),
                Entry::Iterator("A".into(), StartPosition::After(h.seq(2))),
            ]
        );
        assert_eq!(
            handled_versions(&journal),
            vec![1, 2, 3, 4],
            "nothing handled twice or skipped"
        );
    }

    /// Events of one user, a minute apart, the first an hour ago.
    fn spaced_events(n: i64) -> Vec<StoredEvent> {
        let start = chrono::Utc::now() - chrono::Duration::hours(1);
        let mut events = user_events(n);
        for (i, event) in events.iter_mut().enumerate() {
            event.occurred_at = start + chrono::Duration::minutes(i64::try_from(i).unwrap());
        }
        events
    }

    #[tokio::test]
    async fn a_trimmed_checkpoint_is_caught_up_from_the_event_store_before_the_stream_goes_on() {
        let h = Harness::new();
        // Twenty events a minute apart; the projector read three of them,
        // then the stream dropped the first twelve.
        let events = spaced_events(20);
        h.event_store.add(&events);
        h.streams.add_shard("A", None, h.records(&events), true);
        h.streams.trim_before("A", 12);
        let checkpoint = Checkpoint {
            sequence_number: Some(h.seq(3)),
            finished: false,
            last_event_time: Some(events[2].occurred_at),
        };

        let end = h.read_shard("A", checkpoint).await.unwrap();
        assert_eq!(end, ShardEnd::Finished);
        // Versions 4 to 12 came from the event store, with a minute's margin
        // either side (2, 3 and 13, which change nothing), then 13 to 20 from
        // the stream.
        let handled = handled_versions(&h.journal.entries());
        let expected: Vec<i64> = (2..=13).chain(13..=20).collect();
        assert_eq!(handled, expected);
        let window = h.checkpoints.trimmed("A");
        assert_eq!(window.len(), 2, "recorded before and after: {window:?}");
        assert_eq!(window[0].caught_up_at, None);
        assert!(window[1].caught_up_at.is_some());
        assert_eq!(
            window[1].from,
            Some(events[2].occurred_at - chrono::Duration::minutes(1))
        );
        assert_eq!(
            window[1].to,
            events[12].occurred_at + chrono::Duration::minutes(1)
        );
        assert_eq!(window[1].events, 12);
        assert_eq!(h.metrics.events_caught_up.get(), 12);
        // The checkpoint records the last event's time, for the next time.
        let item = h.checkpoints.item("A").unwrap();
        assert_eq!(
            item.checkpoint
                .last_event_time
                .map(|t| t.timestamp_micros()),
            Some(events[19].occurred_at.timestamp_micros()),
            "as stored, to the microsecond"
        );
    }

    #[tokio::test]
    async fn records_trimmed_while_reading_are_caught_up_too() {
        let h = Harness::new();
        let events = spaced_events(10);
        h.event_store.add(&events);
        h.streams.add_shard("A", None, h.records(&events), true);
        h.streams.set_records_per_call(2);
        // After the first page, reading the next one finds it trimmed.
        h.streams.trim_once("A", 2);
        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Finished);
        let handled = handled_versions(&h.journal.entries());
        for version in 1..=10 {
            assert!(handled.contains(&version), "{version} in {handled:?}");
        }
        assert_eq!(h.checkpoints.trimmed("A").len(), 2);
    }

    #[tokio::test]
    async fn trimmed_data_restarts_from_the_trim_horizon() {
        let h = Harness::new();
        let events = user_events(2);
        h.streams.add_shard("A", None, h.records(&events), true);
        h.streams.set_records_per_call(1);
        h.streams.trim_once("A", 1);

        h.read_shard("A", Checkpoint::default()).await.unwrap();
        let iterators: Vec<_> = h
            .journal
            .entries()
            .into_iter()
            .filter(|e| matches!(e, Entry::Iterator(..)))
            .collect();
        assert_eq!(
            iterators,
            vec![
                Entry::Iterator("A".into(), StartPosition::TrimHorizon),
                Entry::Iterator("A".into(), StartPosition::TrimHorizon)
            ]
        );
    }

    #[tokio::test]
    async fn nothing_is_checkpointed_before_the_batch_succeeds() {
        let h = Harness::new();
        let events = user_events(2);
        h.streams.add_shard("A", None, h.records(&events), true);
        h.handler.fail_next(2);
        h.checkpoints.fail_next(1);

        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Finished);
        assert_eq!(
            h.journal.entries(),
            vec![
                Entry::Iterator("A".into(), StartPosition::TrimHorizon),
                Entry::HandleFailed,
                Entry::HandleFailed,
                Entry::Handled(vec![1, 2]),
                Entry::CheckpointFailed,
                Entry::Checkpoint("A".into(), Some(h.seq(2)), true),
            ]
        );
    }

    #[tokio::test]
    async fn shutdown_abandons_a_failing_batch_without_a_checkpoint() {
        let h = Harness::new();
        h.streams
            .add_shard("A", None, h.records(&user_events(1)), true);
        h.handler.fail_next(usize::MAX);
        let pipeline = Arc::new(h.pipeline());
        let task = tokio::spawn({
            let pipeline = pipeline.clone();
            async move { crate::testing::read(&pipeline, "A", Checkpoint::default()).await }
        });
        crate::testing::wait_until("a few failures", || h.handler.failures() >= 3).await;
        assert!(h.metrics.batch_failures.get() >= 3);
        h.trigger.trigger();
        assert_eq!(task.await.unwrap().unwrap(), ShardEnd::Shutdown);
        assert!(h.checkpoints.saved("A").is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_insert_is_handed_over_for_parking_and_the_shard_goes_on() {
        let h = Harness::new();
        let events = user_events(4);
        let mut records = h.records(&events);
        // Version 3 lost its payload: no event, but its key names it.
        records[2]
            .new_image
            .as_mut()
            .unwrap()
            .remove(event_store::EVENT_DATA);
        h.streams.add_shard("A", None, records, true);

        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Finished);
        assert_eq!(handled_versions(&h.journal.entries()), vec![1, 2, 4]);
        let unreadable = h.handler.unreadable();
        assert_eq!(unreadable.len(), 1);
        assert_eq!(
            (unreadable[0].aggregate_id.clone(), unreadable[0].version),
            (events[2].event.aggregate_id().to_string(), 3)
        );
        assert_eq!(unreadable[0].event_id, Some(events[2].event_id.to_string()));
        assert!(unreadable[0].error.contains("unreadable"), "{unreadable:?}");
        assert_eq!(h.checkpoints.saved("A"), vec![(Some(h.seq(4)), true)]);
    }

    #[tokio::test]
    async fn a_record_naming_no_aggregate_stops_the_shard_after_checkpointing_what_precedes_it() {
        let h = Harness::new();
        let events = user_events(4);
        let mut records = h.records(&events);
        records[2]
            .new_image
            .as_mut()
            .unwrap()
            .remove(event_store::AGGREGATE_ID);
        h.streams.add_shard("A", None, records, true);

        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Poisoned);
        assert_eq!(handled_versions(&h.journal.entries()), vec![1, 2]);
        assert_eq!(h.checkpoints.saved("A"), vec![(Some(h.seq(2)), false)]);
    }

    #[tokio::test]
    async fn a_poison_first_record_checkpoints_nothing() {
        let h = Harness::new();
        let events = user_events(2);
        let mut records = h.records(&events);
        records[0].new_image = None;
        h.streams.add_shard("A", None, records, true);

        let end = h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(end, ShardEnd::Poisoned);
        assert!(handled_versions(&h.journal.entries()).is_empty());
        assert!(h.checkpoints.saved("A").is_empty());
    }

    #[tokio::test]
    async fn records_that_are_not_inserts_are_checkpointed_but_not_handled() {
        let h = Harness::new();
        let events = user_events(1);
        let mut records = h.records(&events);
        let mut modify = insert_record(h.seq(2), &events[0]);
        modify.operation = Operation::Other("MODIFY".into());
        records.push(modify);
        h.streams.add_shard("A", None, records, true);

        h.read_shard("A", Checkpoint::default()).await.unwrap();
        assert_eq!(handled_versions(&h.journal.entries()), vec![1]);
        assert_eq!(h.checkpoints.saved("A"), vec![(Some(h.seq(2)), true)]);
    }

    #[test]
    fn decoding_reads_the_event_of_an_insert() {
        let event = &user_events(1)[0];
        let record = insert_record("100000000000000000001".into(), event);
        assert!(matches!(decode(&record).unwrap(), Decoded::Event(e) if e == *event));
        let mut no_seq = record.clone();
        no_seq.sequence_number.clear();
        assert!(decode(&no_seq).is_err());
        let mut broken = record;
        broken
            .new_image
            .as_mut()
            .unwrap()
            .insert(event_store::VERSION.into(), AttributeValue::S("x".into()));
        let poison = decode(&broken).unwrap_err();
        assert_eq!(poison.event_id, Some(event.event_id.to_string()));
        let mut garbled = insert_record("100000000000000000002".into(), event);
        garbled.new_image.as_mut().unwrap().insert(
            event_store::EVENT_DATA.into(),
            AttributeValue::S("{not json".into()),
        );
        let Decoded::Unreadable(parked) = decode(&garbled).unwrap() else {
            panic!("an insert naming its aggregate is parked");
        };
        assert_eq!(parked.version, 1);
        assert_eq!(parked.event_type.as_deref(), Some("UserCreated"));
        assert_eq!(parked.aggregate_type.as_deref(), Some("User"));
    }

    mod liveness {
        use super::*;
        use crate::coordinator::shard_loop_name;
        use crate::monitor::{Thresholds, assess};
        use std::time::Duration;
        use tokio::time::Instant;

        const WINDOW: Duration = Duration::from_secs(60);

        fn spawn_tracked(h: &Harness, shard: &'static str) -> tokio::task::JoinHandle<()> {
            let pipeline = Arc::new(h.pipeline());
            let progress = h.progress.clone();
            tokio::spawn(async move {
                let _ = progress
                    .track(
                        shard_loop_name(shard),
                        crate::testing::read(&pipeline, shard, Checkpoint::default()),
                    )
                    .await;
            })
        }

        // Paused time: the idle shard polls every few virtual milliseconds,
        // and the test's sleeps pass without waiting.
        #[tokio::test(start_paused = true)]
        async fn a_hanging_batch_stops_its_shards_heartbeat_while_an_idle_shard_keeps_beating() {
            let h = Harness::new();
            let events = user_events(1);
            h.streams.add_shard("idle", None, vec![], false);
            h.streams
                .add_shard("stuck", None, h.records(&events), false);
            h.handler.hang();
            let idle = spawn_tracked(&h, "idle");
            let stuck = spawn_tracked(&h, "stuck");
            crate::testing::wait_until("the batch to hang", || h.handler.hanging() == 1).await;
            let polls = h.streams.get_records_calls();

            tokio::time::sleep(WINDOW * 2).await;
            let silences = h.progress.silences(Instant::now());
            assert!(
                silences[&shard_loop_name("stuck")] >= WINDOW * 2,
                "{silences:?}"
            );
            assert!(
                silences[&shard_loop_name("idle")] < Duration::from_secs(1),
                "{silences:?}"
            );
            assert!(
                h.streams.get_records_calls() > polls + 100,
                "the idle shard kept polling"
            );

            // The record it hangs on was created at its event's time: as
            // seen 90 s later, the lag is 90 s.
            let wall = events[0].occurred_at + chrono::Duration::seconds(90);
            let snapshot = h.progress.snapshot(Instant::now(), wall);
            assert_eq!(snapshot.lag, Duration::from_secs(90));
            let verdict = assess(
                &snapshot,
                crate::monitor::Signals {
                    stream_found: true,
                    store_reachable: true,
                    bus_found: true,
                },
                &Thresholds {
                    liveness_window: WINDOW,
                    max_lag: Duration::from_secs(60),
                },
            );
            assert!(verdict.live.unwrap_err().contains("stuck"));
            assert!(verdict.ready.is_err());

            h.trigger.trigger();
            idle.await.unwrap();
            // A hung call does not end on shutdown; nothing else waits on it.
            stuck.abort();
        }

        #[tokio::test(start_paused = true)]
        async fn a_shard_retrying_a_failing_batch_is_live_but_falls_behind() {
            let h = Harness::new();
            let events = user_events(1);
            h.streams.add_shard("A", None, h.records(&events), false);
            h.handler.fail_next(usize::MAX);
            let task = spawn_tracked(&h, "A");
            tokio::time::sleep(WINDOW * 2).await;
            let silences = h.progress.silences(Instant::now());
            assert!(
                silences[&shard_loop_name("A")] <= Duration::from_secs(5),
                "retries beat at least every backoff: {silences:?}"
            );
            let wall = events[0].occurred_at + chrono::Duration::seconds(120);
            assert_eq!(
                h.progress.snapshot(Instant::now(), wall).lag,
                Duration::from_secs(120)
            );
            h.trigger.trigger();
            task.await.unwrap();
        }

        #[tokio::test]
        async fn a_processed_page_then_an_empty_one_means_caught_up() {
            let h = Harness::new();
            let events = user_events(3);
            h.streams.add_shard("A", None, h.records(&events), false);
            let task = spawn_tracked(&h, "A");
            crate::testing::wait_until("every event handled", || {
                h.journal.handled_versions().len() == 3
            })
            .await;
            let polls = h.streams.get_records_calls();
            crate::testing::wait_until("an empty page after them", || {
                h.streams.get_records_calls() > polls
            })
            .await;
            let wall = events[2].occurred_at + chrono::Duration::days(1);
            let snapshot = h.progress.snapshot(Instant::now(), wall);
            assert_eq!(snapshot.lag, Duration::ZERO);
            assert!(snapshot.since_checkpoint < Duration::from_secs(10));
            assert_eq!(h.metrics.records_processed.get(), 3);
            h.trigger.trigger();
            task.await.unwrap();
        }
    }
    #[tokio::test]
    async fn an_idle_reader_renews_its_iterator_and_finds_records_an_orphaned_one_would_not() {
        let h = Harness::new();
        let events = user_events(3);
        let records = h.records(&events);
        h.streams.add_shard("A", None, records[..1].to_vec(), false);
        let mut pipeline = h.pipeline();
        pipeline.timing.renew_idle_iterator_after = std::time::Duration::from_millis(30);
        let pipeline = std::sync::Arc::new(pipeline);
        let task = tokio::spawn({
            let pipeline = pipeline.clone();
            async move { crate::testing::read(&pipeline, "A", Checkpoint::default()).await }
        });
        crate::testing::wait_until("the first record", || {
            handled_versions(&h.journal.entries()) == vec![1]
        })
        .await;
        // The cursor the reader holds goes dead, and records arrive after
        // it: only a fresh iterator from the last position reads them.
        h.streams.orphan_open_iterators();
        h.streams.push_records("A", records[1..].to_vec());
        crate::testing::wait_until("the records after the dead cursor", || {
            handled_versions(&h.journal.entries()) == vec![1, 2, 3]
        })
        .await;
        assert!(
            h.journal.entries().iter().any(
                |e| matches!(e, Entry::Iterator(_, StartPosition::After(seq)) if *seq == h.seq(1))
            ),
            "renewed from the last record read"
        );
        h.trigger.trigger();
        task.await.unwrap().unwrap();
    }
}
