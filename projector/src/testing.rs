//! In-memory fakes of the read-model tables, the event bus and the parked
//! aggregates' table, for the projector's unit tests; the stream's fakes
//! and the [`Harness`] are the stream crate's
//! (`dynabridge_stream::testing`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dynabridge_domain::{StoredEvent, Version};
use dynabridge_read_models::UserProfileRow;
use uuid::Uuid;

pub use dynabridge_stream::testing::*;

use crate::error::StoreError;
use crate::parking::{Header, ParkedEvent, ParkingStore, Status};
use crate::publish::{BusEntry, EventBusApi};
use crate::writer::{Model, PutOutcome, Row, RowStore};

pub fn user_row(version: Version) -> UserProfileRow {
    UserProfileRow {
        user_id: Uuid::new_v4().to_string(),
        email: "user@example.com".into(),
        name: "User".into(),
        version,
        created_at: at(1),
        updated_at: at(version),
    }
}

/// A read-model call the fake saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowCall {
    Get,
    /// The row's version and the expected one, whether or not it succeeded.
    Put(Version, Version),
    Events(Version, Version),
}

#[derive(Debug, Default)]
struct RowsState {
    rows: HashMap<(u32, Model, String), Row>,
    events: Vec<StoredEvent>,
    calls: Vec<RowCall>,
    /// How long a call takes, about; zero answers at once.
    latency: Duration,
    in_flight: usize,
    max_in_flight: usize,
    /// Calls in flight per row (aggregate id).
    busy: HashMap<String, usize>,
    /// Calls that started while another call on their row was in flight.
    overlaps: usize,
    /// Puts answered with a transient error instead, once each: (row id,
    /// version).
    failing_puts: HashSet<(String, Version)>,
    /// The versions of every put per row, in the order they were made,
    /// whatever their outcome.
    puts: HashMap<String, Vec<Version>>,
    /// The versions written per row, in order.
    written: HashMap<String, Vec<Version>>,
}

/// The read-model tables and the event store, in memory. With a latency,
/// every call takes time (the change lands halfway through, as a real write
/// may land although its caller gave up on the answer) and the calls in
/// flight are counted, in all and per row.
#[derive(Clone, Debug, Default)]
pub struct FakeRows(Arc<Mutex<RowsState>>);

/// One call in flight, until it is answered or dropped.
struct InFlight {
    state: Arc<Mutex<RowsState>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Not `lock`: a test failing with the lock held must not abort.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.in_flight -= 1;
        if let Some(n) = state.busy.get_mut(&self.id) {
            *n -= 1;
        }
    }
}

impl FakeRows {
    pub fn calls(&self) -> Vec<RowCall> {
        lock(&self.0).calls.clone()
    }

    /// Every call from now on takes between `latency` and twice that.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.0).latency = latency;
    }

    /// The most calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        lock(&self.0).max_in_flight
    }

    /// How many calls started while another call on the same row was in
    /// flight.
    pub fn overlaps(&self) -> usize {
        lock(&self.0).overlaps
    }

    /// The next put of `event`'s version to its row fails, transiently.
    pub fn fail_put(&self, event: &StoredEvent) {
        lock(&self.0)
            .failing_puts
            .insert((event.event.aggregate_id().to_string(), event.version));
    }

    /// The versions of the puts to `event`'s row, in order, whatever
    /// became of them.
    pub fn puts(&self, event: &StoredEvent) -> Vec<Version> {
        let id = event.event.aggregate_id().to_string();
        lock(&self.0).puts.get(&id).cloned().unwrap_or_default()
    }

    /// The versions written to `event`'s row, in order.
    pub fn written(&self, event: &StoredEvent) -> Vec<Version> {
        let id = event.event.aggregate_id().to_string();
        lock(&self.0).written.get(&id).cloned().unwrap_or_default()
    }

    /// Starts a call on the row `id`; returns it, and how long each of its
    /// halves takes. Latencies vary from call to call, so that concurrent
    /// calls finish in another order than they started.
    fn start(&self, id: &str) -> (InFlight, Duration) {
        let mut state = lock(&self.0);
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        let busy = state.busy.entry(id.to_owned()).or_default();
        *busy += 1;
        if *busy > 1 {
            state.overlaps += 1;
        }
        let step = u32::try_from(state.calls.len() % 3).unwrap_or(0);
        let half = (state.latency + state.latency * step / 2) / 2;
        let call = InFlight {
            state: self.0.clone(),
            id: id.to_owned(),
        };
        (call, half)
    }

    pub fn clear_calls(&self) {
        lock(&self.0).calls.clear();
    }

    /// Puts `events` in the fake event store.
    pub fn add_events(&self, events: &[StoredEvent]) {
        lock(&self.0).events.extend(events.iter().cloned());
    }

    /// The row of the aggregate `event` belongs to, in generation 0.
    pub fn row(&self, event: &StoredEvent) -> Option<Row> {
        self.row_in(0, event)
    }

    /// The row of the aggregate `event` belongs to, in `generation`.
    pub fn row_in(&self, generation: u32, event: &StoredEvent) -> Option<Row> {
        lock(&self.0)
            .rows
            .get(&(
                generation,
                Model::of(event)?,
                event.event.aggregate_id().to_string(),
            ))
            .cloned()
    }

    pub fn row_version(&self, event: &StoredEvent) -> Option<Version> {
        self.row(event).map(|r| r.version())
    }
}

/// Half of a call's latency; nothing at all without one.
async fn wait(half: Duration) {
    if !half.is_zero() {
        tokio::time::sleep(half).await;
    }
}

#[async_trait]
impl RowStore for FakeRows {
    async fn get(
        &self,
        generation: u32,
        model: Model,
        id: &str,
    ) -> Result<Option<Row>, StoreError> {
        let (_call, half) = self.start(id);
        wait(half).await;
        let row = {
            let mut state = lock(&self.0);
            state.calls.push(RowCall::Get);
            state.rows.get(&(generation, model, id.to_owned())).cloned()
        };
        wait(half).await;
        Ok(row)
    }

    async fn put(
        &self,
        generation: u32,
        row: &Row,
        expected_version: Version,
    ) -> Result<PutOutcome, StoreError> {
        let (_call, half) = self.start(&row.id());
        wait(half).await;
        let outcome = {
            let mut state = lock(&self.0);
            state
                .calls
                .push(RowCall::Put(row.version(), expected_version));
            let id = row.id().to_owned();
            state
                .puts
                .entry(id.clone())
                .or_default()
                .push(row.version());
            if state.failing_puts.remove(&(id.clone(), row.version())) {
                return Err(StoreError::Unavailable("injected".into()));
            }
            let key = (generation, row.model(), id.clone());
            let stored = state.rows.get(&key).map_or(0, Row::version);
            if stored == expected_version {
                state.rows.insert(key, row.clone());
                state.written.entry(id).or_default().push(row.version());
                PutOutcome::Written
            } else {
                PutOutcome::ConditionFailed
            }
        };
        wait(half).await;
        Ok(outcome)
    }

    async fn events(
        &self,
        aggregate_id: &str,
        from: Version,
        to: Version,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (_call, half) = self.start(aggregate_id);
        wait(half).await;
        let mut events: Vec<StoredEvent> = {
            let mut state = lock(&self.0);
            state.calls.push(RowCall::Events(from, to));
            state
                .events
                .iter()
                .filter(|e| {
                    e.event.aggregate_id().to_string() == aggregate_id
                        && (from..=to).contains(&e.version)
                })
                .cloned()
                .collect()
        };
        events.sort_by_key(|e| e.version);
        wait(half).await;
        Ok(events)
    }
}

#[derive(Debug, Default)]
struct BusState {
    refusals: VecDeque<Vec<usize>>,
    refuse_forever: bool,
    /// The bus does not exist: `DescribeEventBus` says so, and `PutEvents`
    /// accepts every entry and drops it, as EventBridge does.
    missing: bool,
    calls: Vec<Vec<BusEntry>>,
    accepted: Vec<BusEntry>,
}

#[derive(Clone, Debug, Default)]
pub struct FakeBus(Arc<Mutex<BusState>>);

impl FakeBus {
    /// The next call refuses the entries at these positions.
    pub fn refuse_next(&self, positions: Vec<usize>) {
        lock(&self.0).refusals.push_back(positions);
    }

    pub fn refuse_forever(&self) {
        lock(&self.0).refuse_forever = true;
    }

    /// The bus is deleted (`true`) or created (`false`).
    pub fn set_missing(&self, missing: bool) {
        lock(&self.0).missing = missing;
    }

    pub fn calls(&self) -> Vec<Vec<BusEntry>> {
        lock(&self.0).calls.clone()
    }

    pub fn accepted(&self) -> Vec<BusEntry> {
        lock(&self.0).accepted.clone()
    }
}

#[async_trait]
impl EventBusApi for FakeBus {
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, StoreError> {
        let mut state = lock(&self.0);
        assert!(
            entries.len() <= crate::publish::MAX_ENTRIES_PER_CALL,
            "too many entries in one call"
        );
        state.calls.push(entries.to_vec());
        let refused = if state.refuse_forever {
            (0..entries.len()).collect()
        } else {
            state.refusals.pop_front().unwrap_or_default()
        };
        let mut results = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if state.missing {
                results.push(None);
            } else if refused.contains(&i) {
                results.push(Some("ThrottlingException".to_owned()));
            } else {
                state.accepted.push(entry.clone());
                results.push(None);
            }
        }
        Ok(results)
    }

    async fn bus_exists(&self, _bus: &str) -> Result<bool, StoreError> {
        Ok(!lock(&self.0).missing)
    }
}

/// The parked-events table, in memory, with the real one's conditions.
#[derive(Clone, Debug, Default)]
pub struct MemoryParking(Arc<Mutex<ParkedTable>>);

#[derive(Debug, Default)]
struct ParkedTable {
    headers: HashMap<String, Header>,
    events: HashMap<String, Vec<ParkedEvent>>,
}

impl MemoryParking {
    /// The versions parked for `aggregate_id`, in order.
    pub fn parked_versions(&self, aggregate_id: &str) -> Vec<Version> {
        let table = lock(&self.0);
        let mut versions: Vec<Version> = table
            .events
            .get(aggregate_id)
            .map(|events| events.iter().map(|e| e.version).collect())
            .unwrap_or_default();
        versions.sort_unstable();
        versions
    }

    pub fn header(&self, aggregate_id: &str) -> Option<Header> {
        lock(&self.0).headers.get(aggregate_id).cloned()
    }

    /// What an operator asks through the admin service.
    pub fn request(&self, aggregate_id: &str, status: Status) {
        if let Some(header) = lock(&self.0).headers.get_mut(aggregate_id) {
            header.status = status;
        }
    }
}

#[async_trait]
impl ParkingStore for MemoryParking {
    async fn park(&self, event: &ParkedEvent, behind: bool) -> Result<bool, StoreError> {
        let mut table = lock(&self.0);
        match table.headers.get_mut(&event.aggregate_id) {
            None if behind => return Ok(false),
            None => {
                table.headers.insert(
                    event.aggregate_id.clone(),
                    Header {
                        aggregate_id: event.aggregate_id.clone(),
                        status: Status::Parked,
                        first_version: event.version,
                        last_version: event.version,
                    },
                );
            }
            Some(header) => {
                header.first_version = header.first_version.min(event.version);
                header.last_version = header.last_version.max(event.version);
            }
        }
        let events = table.events.entry(event.aggregate_id.clone()).or_default();
        events.retain(|e| e.version != event.version);
        events.push(event.clone());
        Ok(true)
    }

    async fn headers(&self) -> Result<Vec<Header>, StoreError> {
        Ok(lock(&self.0).headers.values().cloned().collect())
    }

    async fn events(&self, aggregate_id: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let mut events = lock(&self.0)
            .events
            .get(aggregate_id)
            .cloned()
            .unwrap_or_default();
        events.sort_by_key(|e| e.version);
        Ok(events)
    }

    async fn failed_again(&self, aggregate_id: &str, _error: &str) -> Result<(), StoreError> {
        self.request(aggregate_id, Status::Parked);
        Ok(())
    }

    async fn retry_rest(&self, aggregate_id: &str) -> Result<(), StoreError> {
        self.request(aggregate_id, Status::Retry);
        Ok(())
    }

    async fn release(&self, aggregate_id: &str, last: Version) -> Result<bool, StoreError> {
        let mut table = lock(&self.0);
        if let Some(events) = table.events.get_mut(aggregate_id) {
            events.retain(|e| e.version > last);
        }
        match table.headers.get(aggregate_id) {
            Some(header) if header.last_version == last => {
                table.headers.remove(aggregate_id);
                table.events.remove(aggregate_id);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
