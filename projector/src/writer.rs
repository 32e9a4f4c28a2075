//! Writing the read models, version-gated: an event changes a row only if
//! the stored row is at the version just before it, so that redelivered
//! events change nothing and missing ones are filled in from the event store
//! first.
//!
//! The rows this projector wrote or read are kept in a bounded cache, so that
//! the steady state is one DynamoDB call per event (the conditional `PutItem`).
//! The cache may be behind the table (another writer, another projector): a
//! failed condition evicts the row, reads it again and retries.
//!
//! A batch is applied row by row ([`crate::handler`]): the events of one row
//! one after another, in the order given, and different rows concurrently,
//! with a bound on the rows in flight. Each event writes one row at most
//! ([`RowKey`]), so rows never wait on each other, and within a batch a row's
//! writes never race each other.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use dynabridge::schema::{Tables, read_model};
use dynabridge_domain::{StoredEvent, Version};
use dynabridge_read_models::Applied;

use crate::applied::LastApplied;
use crate::error::{StoreError, sdk_error};
use crate::generations::GenerationWatch;
use crate::metrics::ProjectorMetrics;

/// Rows the cache holds at most.
pub const CACHE_CAPACITY: usize = 10_000;

/// Conditional writes that may fail for one event before the event is
/// retried as a whole: each failure means another writer moved the row on.
const MAX_CONFLICTS: usize = 8;

pub use dynabridge_read_models::row::{Model, Row};

/// The one read-model row an event may write: the row of its aggregate in
/// the aggregate's read model. A row's version is its aggregate's, so the
/// events of one row are one aggregate's, and their order is version order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub model: Model,
    pub id: String,
}

impl RowKey {
    /// The row `event` writes; none for an event no read model takes.
    pub fn of(event: &StoredEvent) -> Option<Self> {
        Some(Self {
            model: Model::of(event)?,
            id: event.event.aggregate_id().to_string(),
        })
    }
}

/// What a conditional write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The stored row was not at the expected version.
    ConditionFailed,
}

/// The tables the read models need.
#[async_trait]
pub trait RowStore: Send + Sync {
    /// The row in `generation`'s tables, read consistently.
    async fn get(&self, generation: u32, model: Model, id: &str)
    -> Result<Option<Row>, StoreError>;

    /// Stores `row` in `generation`'s tables if the stored one is at
    /// `expected_version` (0: absent).
    async fn put(
        &self,
        generation: u32,
        row: &Row,
        expected_version: Version,
    ) -> Result<PutOutcome, StoreError>;

    /// The aggregate's events `from..=to` from the event store, in order.
    async fn events(
        &self,
        aggregate_id: &str,
        from: Version,
        to: Version,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}

/// Two generations of rows: a hit in the old one moves the row to the young
/// one, and a full young generation replaces the old. Recently used rows
/// survive, memory stays bounded, and nothing is scanned.
#[derive(Debug)]
struct RowCache {
    generation_capacity: usize,
    young: HashMap<CacheKey, Row>,
    old: HashMap<CacheKey, Row>,
}

/// A row of one read-model generation.
type CacheKey = (u32, Model, String);

impl RowCache {
    fn new(capacity: usize) -> Self {
        Self {
            generation_capacity: (capacity / 2).max(1),
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    fn get(&mut self, generation: u32, model: Model, id: &str) -> Option<Row> {
        let key = (generation, model, id.to_owned());
        if let Some(row) = self.young.get(&key) {
            return Some(row.clone());
        }
        let row = self.old.remove(&key)?;
        self.insert(generation, row.clone());
        Some(row)
    }

    fn insert(&mut self, generation: u32, row: Row) {
        if self.young.len() >= self.generation_capacity {
            self.old = std::mem::take(&mut self.young);
        }
        let key = (generation, row.model(), row.id().to_owned());
        self.old.remove(&key);
        self.young.insert(key, row);
    }

    fn remove(&mut self, generation: u32, model: Model, id: &str) {
        let key = (generation, model, id.to_owned());
        self.young.remove(&key);
        self.old.remove(&key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Applies events to the read models, in every generation written.
pub struct ReadModelWriter {
    store: Box<dyn RowStore>,
    cache: Mutex<RowCache>,
    /// Where each written event's commit-to-visible lag goes.
    metrics: ProjectorMetrics,
    generations: Arc<GenerationWatch>,
    applied: Arc<LastApplied>,
}

impl ReadModelWriter {
    /// A writer of generation 0 alone; see [`Self::with_generations`].
    pub fn new(store: Box<dyn RowStore>, cache_capacity: usize, metrics: ProjectorMetrics) -> Self {
        Self {
            store,
            cache: Mutex::new(RowCache::new(cache_capacity)),
            metrics,
            generations: GenerationWatch::fixed(vec![0]),
            applied: Arc::default(),
        }
    }

    /// The last event applied to each read model, noted as events are.
    pub fn last_applied(&self) -> &Arc<LastApplied> {
        &self.applied
    }

    /// Writes every event to the generations `watch` names.
    #[must_use]
    pub fn with_generations(mut self, watch: Arc<GenerationWatch>) -> Self {
        self.generations = watch;
        self
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, RowCache> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters: every entry is a row we wrote.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes sure `event` is reflected in its read model, filling any gap
    /// before it from the event store.
    ///
    /// Calls for different rows may run concurrently: a call only reads and
    /// replaces its own row in the shared cache, and never holds the cache's
    /// lock across a store call. Concurrent calls for one row stay correct
    /// (every write is conditional) but fight over it; the handler never
    /// makes them.
    ///
    /// The event goes to every generation written, one after another, the
    /// served one last: a row a query sees is already in every other
    /// generation.
    /// An event no read model takes (a route's) is done at once.
    pub async fn project(&self, event: &StoredEvent) -> Result<(), StoreError> {
        let Some(key) = RowKey::of(event) else {
            return Ok(());
        };
        let generations = self.generations.written().await?;
        let serving = generations.last().copied();
        for &generation in generations.iter() {
            self.project_to(generation, Some(generation) == serving, &key, event)
                .await?;
        }
        self.applied.note(event);
        Ok(())
    }

    async fn project_to(
        &self,
        generation: u32,
        served: bool,
        key: &RowKey,
        event: &StoredEvent,
    ) -> Result<(), StoreError> {
        let RowKey { model, id } = key.clone();
        let cached = self.cache().get(generation, model, &id);
        let mut from_cache = cached.is_some();
        let mut current = match cached {
            Some(row) => Some(row),
            // A first event needs no read: the conditional write fails if
            // the row exists, and that failure is the read.
            None if event.version <= 1 => None,
            None => self.read(generation, model, &id).await?,
        };
        let mut missing: VecDeque<StoredEvent> = VecDeque::new();
        let mut conflicts = 0;
        loop {
            let next = missing.front().unwrap_or(event);
            match Row::apply(model, current.as_ref(), next) {
                Applied::Ignored | Applied::AlreadyApplied => {
                    if missing.pop_front().is_none() {
                        return Ok(());
                    }
                }
                Applied::Gap { from, to } => {
                    if from_cache {
                        // Another writer may have moved the row on; only the
                        // table can say whether the gap is real.
                        current = self.read(generation, model, &id).await?;
                        from_cache = false;
                        continue;
                    }
                    if !missing.is_empty() {
                        return Err(StoreError::Failed(format!(
                            "aggregate {id}: event store events do not follow on from the read model"
                        )));
                    }
                    let events = self.store.events(&id, from, to).await?;
                    let versions: Vec<Version> = events.iter().map(|e| e.version).collect();
                    if versions != (from..=to).collect::<Vec<_>>() {
                        return Err(StoreError::Failed(format!(
                            "aggregate {id}: the event store lacks versions {from} to {to}"
                        )));
                    }
                    tracing::info!(aggregate_id = %id, from, to, version = event.version, "filling a read model gap from the event store");
                    missing = events.into();
                }
                Applied::Next {
                    row,
                    expected_version,
                } => match self.store.put(generation, &row, expected_version).await? {
                    PutOutcome::Written => {
                        // Visible to queries from now on. A redelivered
                        // event, already applied, was visible before.
                        if served {
                            self.metrics.event_visible(next.occurred_at);
                        }
                        tracing::debug!(
                            event_id = %next.event_id,
                            event_type = next.event.event_type(),
                            aggregate_id = %id,
                            version = row.version(),
                            generation,
                            "read model updated"
                        );
                        self.cache().insert(generation, row.clone());
                        current = Some(row);
                        from_cache = false;
                        if missing.pop_front().is_none() {
                            return Ok(());
                        }
                    }
                    PutOutcome::ConditionFailed => {
                        conflicts += 1;
                        if conflicts > MAX_CONFLICTS {
                            return Err(StoreError::Failed(format!(
                                "aggregate {id}: the read model row keeps changing under the projector"
                            )));
                        }
                        tracing::debug!(aggregate_id = %id, expected_version, generation, "read model row was not at the expected version, reading it again");
                        current = self.read(generation, model, &id).await?;
                        from_cache = false;
                    }
                },
            }
        }
    }

    /// Reads the row from the table, replacing whatever the cache held: a
    /// row just read is as good as one just written.
    async fn read(
        &self,
        generation: u32,
        model: Model,
        id: &str,
    ) -> Result<Option<Row>, StoreError> {
        self.cache().remove(generation, model, id);
        let row = self.store.get(generation, model, id).await?;
        if let Some(row) = &row {
            self.cache().insert(generation, row.clone());
        }
        Ok(row)
    }

    /// The events of `aggregate_id` with versions `from..=to`, from the
    /// event store, read consistently.
    pub async fn events(
        &self,
        aggregate_id: &str,
        from: Version,
        to: Version,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.store.events(aggregate_id, from, to).await
    }

    /// Moves the row of `id` in `model` to version `to`, its content
    /// unchanged, as if the events up to `to` had changed nothing: how
    /// skipped events are passed. A row already there, or none at all, is
    /// left alone.
    /// Every generation written is moved.
    pub async fn skip_to(&self, model: Model, id: &str, to: Version) -> Result<(), StoreError> {
        let generations = self.generations.written().await?;
        for &generation in generations.iter() {
            self.skip_to_in(generation, model, id, to).await?;
        }
        Ok(())
    }

    async fn skip_to_in(
        &self,
        generation: u32,
        model: Model,
        id: &str,
        to: Version,
    ) -> Result<(), StoreError> {
        for _ in 0..=MAX_CONFLICTS {
            let Some(row) = self.read(generation, model, id).await? else {
                return Ok(());
            };
            let expected_version = row.version();
            if expected_version >= to {
                return Ok(());
            }
            let moved = row.with_version(to);
            match self.store.put(generation, &moved, expected_version).await? {
                PutOutcome::Written => {
                    self.cache().insert(generation, moved);
                    return Ok(());
                }
                PutOutcome::ConditionFailed => continue,
            }
        }
        Err(StoreError::Failed(format!(
            "aggregate {id}: the read model row keeps changing under the projector"
        )))
    }

    #[cfg(test)]
    fn cached_rows(&self) -> usize {
        self.cache().len()
    }
}

/// The read models and the event store on DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoRows {
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
}

impl DynamoRows {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: Tables) -> Self {
        Self { client, tables }
    }

    fn table_and_key(&self, generation: u32, model: Model) -> (String, &'static str) {
        let tables = self.tables.read_models(generation);
        let (table, key) = model.table_and_key(&tables);
        (table.to_owned(), key)
    }
}

#[async_trait]
impl RowStore for DynamoRows {
    async fn get(
        &self,
        generation: u32,
        model: Model,
        id: &str,
    ) -> Result<Option<Row>, StoreError> {
        let (table, key) = self.table_and_key(generation, model);
        let out = self
            .client
            .get_item()
            .table_name(table)
            .consistent_read(true)
            .key(key, AttributeValue::S(id.to_owned()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| sdk_error("reading a read model row", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        Row::from_item(model, &item)
            .map(Some)
            .map_err(|e| StoreError::Failed(format!("row {id}: {e}")))
    }

    async fn put(
        &self,
        generation: u32,
        row: &Row,
        expected_version: Version,
    ) -> Result<PutOutcome, StoreError> {
        let (table, key) = self.table_and_key(generation, row.model());
        let item = row.to_item();
        let request = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        let request = if expected_version == 0 {
            request
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", key)
        } else {
            request
                .condition_expression("#Version = :expected")
                .expression_attribute_names("#Version", read_model::VERSION)
                .expression_attribute_values(
                    ":expected",
                    AttributeValue::N(expected_version.to_string()),
                )
        };
        match request.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(PutOutcome::ConditionFailed)
            }
            Err(err) => Err(sdk_error("writing a read model row", err)),
        }
    }

    async fn events(
        &self,
        aggregate_id: &str,
        from: Version,
        to: Version,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        dynabridge_event_store::read_events(
            &self.client,
            &self.tables.event_store(),
            aggregate_id,
            from,
            Some(to),
        )
        .await
        .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeRows, RowCall, user_events};
    use dynabridge_read_models::UserProfileRow;

    fn read_models(store: &FakeRows) -> ReadModelWriter {
        ReadModelWriter::new(
            Box::new(store.clone()),
            CACHE_CAPACITY,
            ProjectorMetrics::new().unwrap(),
        )
    }

    #[tokio::test]
    async fn every_generation_written_gets_every_event_the_served_one_last() {
        let store = FakeRows::default();
        let events = user_events(3);
        // Generation 0 served, 2 being built (written first).
        let models = read_models(&store).with_generations(GenerationWatch::fixed(vec![2, 0]));
        models.project(&events[0]).await.unwrap();
        store.clear_calls();
        models.project(&events[1]).await.unwrap();
        assert_eq!(
            store.calls(),
            vec![RowCall::Put(2, 1), RowCall::Put(2, 1)],
            "one write per generation, each from its own cached row"
        );
        assert_eq!(store.row_in(2, &events[0]), store.row_in(0, &events[0]));
        // A generation that joins later starts from no row: the gap before
        // the event is filled from the event store.
        store.add_events(&events);
        let joined = read_models(&store).with_generations(GenerationWatch::fixed(vec![5, 0]));
        joined.project(&events[2]).await.unwrap();
        assert_eq!(store.row_in(5, &events[0]).map(|r| r.version()), Some(3));
        assert_eq!(store.row_in(5, &events[0]), store.row_in(0, &events[0]));
    }

    #[tokio::test]
    async fn steady_state_is_one_write_per_event() {
        let store = FakeRows::default();
        let models = read_models(&store);
        let events = user_events(3);
        for event in &events {
            models.project(event).await.unwrap();
        }
        let calls = store.calls();
        assert_eq!(
            calls,
            vec![RowCall::Put(1, 0), RowCall::Put(2, 1), RowCall::Put(3, 2)],
            "no reads: version 1 needs none and later ones hit the cache"
        );
        assert_eq!(store.row_version(&events[0]), Some(3));
    }

    #[tokio::test]
    async fn a_redelivered_event_changes_nothing() {
        let store = FakeRows::default();
        let events = user_events(2);
        read_models(&store).project(&events[0]).await.unwrap();
        read_models(&store).project(&events[1]).await.unwrap();
        let before = store.row(&events[0]);
        store.clear_calls();

        // A fresh projector (empty cache) sees both again.
        let models = read_models(&store);
        models.project(&events[0]).await.unwrap();
        models.project(&events[1]).await.unwrap();
        assert_eq!(store.row(&events[0]), before);
        assert_eq!(
            store.calls(),
            vec![RowCall::Put(1, 0), RowCall::Get],
            "the first write fails its condition; the row read then is cached and shows the second applied"
        );
    }

    #[tokio::test]
    async fn a_stale_cache_entry_is_evicted_and_the_row_read_again() {
        let store = FakeRows::default();
        let events = user_events(3);
        let models = read_models(&store);
        models.project(&events[0]).await.unwrap();
        // Another writer applies version 2 behind this projector's back.
        read_models(&store).project(&events[1]).await.unwrap();
        store.clear_calls();

        models.project(&events[1]).await.unwrap();
        assert_eq!(
            store.calls(),
            vec![RowCall::Put(2, 1), RowCall::Get],
            "the cached version 1 row fails the condition, the re-read shows version 2 applied"
        );
        store.clear_calls();
        models.project(&events[2]).await.unwrap();
        assert_eq!(
            store.calls(),
            vec![RowCall::Put(3, 2)],
            "the fresh row is cached"
        );
        assert_eq!(store.row_version(&events[0]), Some(3));
    }

    #[tokio::test]
    async fn a_gap_is_filled_from_the_event_store_in_order() {
        let store = FakeRows::default();
        let events = user_events(4);
        store.add_events(&events);
        read_models(&store).project(&events[0]).await.unwrap();
        store.clear_calls();

        let models = read_models(&store);
        models.project(&events[3]).await.unwrap();
        assert_eq!(
            store.calls(),
            vec![
                RowCall::Get,
                RowCall::Events(2, 3),
                RowCall::Put(2, 1),
                RowCall::Put(3, 2),
                RowCall::Put(4, 3)
            ]
        );
        assert_eq!(store.row(&events[0]), {
            let mut row = None;
            for e in &events {
                if let Applied::Next { row: next, .. } = UserProfileRow::apply(row.as_ref(), e) {
                    row = Some(next);
                }
            }
            row.map(Row::User)
        });
    }

    #[tokio::test]
    async fn the_visible_lag_is_observed_once_per_event_written() {
        let store = FakeRows::default();
        let metrics = ProjectorMetrics::new().unwrap();
        let models =
            || ReadModelWriter::new(Box::new(store.clone()), CACHE_CAPACITY, metrics.clone());
        let mut events = user_events(4);
        for event in &mut events {
            event.occurred_at = chrono::Utc::now() - chrono::Duration::seconds(2);
        }
        store.add_events(&events);
        let projector = models();
        projector.project(&events[0]).await.unwrap();
        // Versions 2 and 3 are filled in before 4: three writes.
        projector.project(&events[3]).await.unwrap();
        // Redelivered, to this projector and to a fresh one: no write.
        projector.project(&events[3]).await.unwrap();
        models().project(&events[0]).await.unwrap();

        let lag = &metrics.visible_lag_seconds;
        assert_eq!(lag.get_sample_count(), 4);
        assert!(
            (8.0..60.0).contains(&lag.get_sample_sum()),
            "about 2 s each: {}",
            lag.get_sample_sum()
        );
    }

    #[tokio::test]
    async fn a_gap_the_event_store_cannot_fill_is_an_error_and_writes_nothing() {
        let store = FakeRows::default();
        let events = user_events(3);
        read_models(&store).project(&events[0]).await.unwrap();
        let err = read_models(&store).project(&events[2]).await.unwrap_err();
        assert!(err.to_string().contains("lacks versions 2 to 2"), "{err}");
        assert_eq!(store.row_version(&events[0]), Some(1));
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_recent_rows() {
        let mut cache = RowCache::new(4);
        let rows: Vec<Row> = (0..10)
            .map(|i| {
                let mut row = crate::testing::user_row(1);
                row.user_id = format!("user-{i}");
                Row::User(row)
            })
            .collect();
        for row in &rows {
            cache.insert(0, row.clone());
            // Row 0 is used all the time and must survive.
            assert!(cache.get(0, Model::UserProfiles, "user-0").is_some());
        }
        assert!(cache.len() <= 4, "{}", cache.len());
        assert!(cache.get(0, Model::UserProfiles, "user-1").is_none());
        assert!(cache.get(0, Model::UserProfiles, "user-9").is_some());
        assert!(cache.get(0, Model::OrderSummaries, "user-9").is_none());
    }

    #[tokio::test]
    async fn every_written_row_is_cached() {
        let store = FakeRows::default();
        let models = read_models(&store);
        for event in user_events(2) {
            models.project(&event).await.unwrap();
        }
        assert_eq!(models.cached_rows(), 1);
    }
}
