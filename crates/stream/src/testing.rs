//! In-memory fakes of the stream, the checkpoint table, the event store a
//! catch-up reads and a consumer, for the unit tests of this crate and of
//! its consumers (feature `testing`). They write what happens, in order, to
//! one [`Journal`]. A [`Harness`] is one consumer instance; its peers share
//! its stream and checkpoint table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use dynabridge_domain::{
    Email, Event, Money, OrderId, OrderLine, OrderStatus, Quantity, Sku, StoredEvent, UserId,
    UserName, Version,
};
use dynabridge_event_store::codec::event_to_item;
use uuid::Uuid;

use crate::attribute::item_to_image;
use crate::batch::{Batch, BatchHandler, HandleError, ParkedEvent};
use crate::checkpoint::{Checkpoint, CheckpointStore, LeaseError, ShardItem, TrimmedWindow};
use crate::control::{Shutdown, ShutdownTrigger, Timing};
use crate::error::StoreError;
use crate::lease::{Lease, LeaseSettings, Leases};
use crate::metrics::StreamMetrics;
use crate::progress::Progress;
use crate::shard::{Pipeline, ShardEnd};
use crate::stream::{
    Operation, RecordPage, ShardInfo, ShardPage, StartPosition, StreamApi, StreamError,
    StreamRecord,
};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap()
}

pub fn fast_timing() -> Timing {
    Timing {
        idle_poll_start: Duration::from_millis(1),
        idle_poll_max: Duration::from_millis(4),
        rediscover_every: Duration::from_millis(10),
        retry_start: Duration::from_millis(1),
        retry_max: Duration::from_millis(4),
        // Never, unless a test says: renewals would show in the journal.
        renew_idle_iterator_after: Duration::from_secs(3600),
    }
}

/// Polls `condition` until it holds; panics after a generous deadline.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn at(version: Version) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(version)
}

fn stored(version: Version, event: Event) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::new_v4(),
        version,
        occurred_at: at(version),
        request_id: format!("req-{version}"),
        correlation_id: "corr".into(),
        trace_parent: None,
        event,
    }
}

/// Versions 1 to `n` of one new user: created, then renamed.
pub fn user_events(n: Version) -> Vec<StoredEvent> {
    let user_id = UserId::new_random();
    (1..=n)
        .map(|v| {
            let event = if v == 1 {
                Event::UserCreated {
                    user_id,
                    email: Email::parse("user@example.com").unwrap(),
                    name: UserName::parse("User").unwrap(),
                }
            } else {
                Event::UserProfileUpdated {
                    user_id,
                    name: Some(UserName::parse(&format!("Name {v}")).unwrap()),
                    email: None,
                }
            };
            stored(v, event)
        })
        .collect()
}

/// Versions 1 to `n` of one new order: created, then processing.
pub fn order_events(n: Version) -> Vec<StoredEvent> {
    let order_id = OrderId::new_random();
    (1..=n)
        .map(|v| {
            let event = if v == 1 {
                Event::OrderCreated {
                    order_id,
                    user_id: UserId::new_random(),
                    items: vec![OrderLine {
                        sku: Sku::parse("sku-1").unwrap(),
                        quantity: Quantity::parse(2).unwrap(),
                        unit_price: Money::parse("EUR", 150).unwrap(),
                    }],
                    total: Money::parse("EUR", 300).unwrap(),
                    shipping_address: None,
                    purchase_id: None,
                }
            } else {
                Event::OrderStatusUpdated {
                    order_id,
                    status: OrderStatus::Processing,
                    previous_status: OrderStatus::Created,
                }
            };
            stored(v, event)
        })
        .collect()
}

/// Versions 1 to `n` of `aggregates` new aggregates, every other one a user
/// and the others orders, interleaved as concurrent commands leave them in
/// the stream: every aggregate's version 1, then every version 2, and so on.
pub fn interleaved_events(aggregates: usize, n: Version) -> Vec<StoredEvent> {
    let per_aggregate: Vec<Vec<StoredEvent>> = (0..aggregates)
        .map(|i| {
            if i % 2 == 0 {
                user_events(n)
            } else {
                order_events(n)
            }
        })
        .collect();
    (0..usize::try_from(n).unwrap())
        .flat_map(|v| per_aggregate.iter().map(move |events| events[v].clone()))
        .collect()
}

pub fn insert_record(sequence_number: String, event: &StoredEvent) -> StreamRecord {
    StreamRecord {
        sequence_number,
        operation: Operation::Insert,
        new_image: Some(item_to_image(&event_to_item(event))),
        approximate_creation: Some(event.occurred_at),
    }
}

/// What the fakes saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Iterator(String, StartPosition),
    Handled(Vec<Version>),
    HandleFailed,
    Checkpoint(String, Option<String>, bool),
    CheckpointFailed,
}

#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<Entry>>>);

impl Journal {
    fn push(&self, entry: Entry) {
        lock(&self.0).push(entry);
    }

    pub fn entries(&self) -> Vec<Entry> {
        lock(&self.0).clone()
    }

    pub fn handled_versions(&self) -> Vec<Version> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Handled(v) => Some(v),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

#[derive(Debug)]
struct FakeShard {
    info: ShardInfo,
    records: Vec<StreamRecord>,
    closed: bool,
    /// Closed shards end on an empty page rather than with the last records.
    close_on_empty_page: bool,
}

#[derive(Debug)]
struct StreamsState {
    shards: Vec<FakeShard>,
    records_per_call: usize,
    describe_page_size: usize,
    expire: HashSet<(String, usize)>,
    trim: HashSet<(String, usize)>,
    /// Per shard, how many of its first records the stream no longer has.
    trimmed_before: HashMap<String, usize>,
    get_records_calls: usize,
    describe_calls: usize,
    /// Iterators handed out before the last `orphan_open_iterators` read
    /// nothing more, ever (as moto's do after a cancelled transaction).
    epoch: usize,
}

#[derive(Clone, Debug)]
pub struct FakeStreams {
    state: Arc<Mutex<StreamsState>>,
    journal: Journal,
}

impl FakeStreams {
    fn new(journal: Journal) -> Self {
        Self {
            state: Arc::new(Mutex::new(StreamsState {
                shards: Vec::new(),
                records_per_call: usize::MAX,
                describe_page_size: usize::MAX,
                expire: HashSet::new(),
                trim: HashSet::new(),
                trimmed_before: HashMap::new(),
                get_records_calls: 0,
                describe_calls: 0,
                epoch: 0,
            })),
            journal,
        }
    }

    pub fn add_shard(
        &self,
        id: &str,
        parent: Option<&str>,
        records: Vec<StreamRecord>,
        closed: bool,
    ) {
        lock(&self.state).shards.push(FakeShard {
            info: ShardInfo {
                id: id.into(),
                parent: parent.map(Into::into),
            },
            records,
            closed,
            close_on_empty_page: false,
        });
    }

    pub fn close_on_empty_page(&self, id: &str) {
        for shard in &mut lock(&self.state).shards {
            if shard.info.id == id {
                shard.close_on_empty_page = true;
            }
        }
    }

    pub fn set_records_per_call(&self, n: usize) {
        lock(&self.state).records_per_call = n;
    }

    pub fn set_describe_page_size(&self, n: usize) {
        lock(&self.state).describe_page_size = n;
    }

    /// The next `GetRecords` of an iterator at `position` of `shard` fails
    /// as expired.
    pub fn expire_once(&self, shard: &str, position: usize) {
        lock(&self.state).expire.insert((shard.into(), position));
    }

    /// The next `GetRecords` at `position` of `shard` fails as trimmed.
    pub fn trim_once(&self, shard: &str, position: usize) {
        lock(&self.state).trim.insert((shard.into(), position));
    }

    /// The stream drops the first `count` records of `shard`, as DynamoDB
    /// does with records older than 24 hours: reading them fails as
    /// trimmed, and the trim horizon is the record after them.
    pub fn trim_before(&self, shard: &str, count: usize) {
        lock(&self.state).trimmed_before.insert(shard.into(), count);
    }

    /// From now on, every iterator handed out before reads nothing more.
    pub fn orphan_open_iterators(&self) {
        lock(&self.state).epoch += 1;
    }

    pub fn get_records_calls(&self) -> usize {
        lock(&self.state).get_records_calls
    }

    /// `DescribeStream` calls, by every instance.
    pub fn describe_calls(&self) -> usize {
        lock(&self.state).describe_calls
    }

    /// New records at the end of the open shard `id`.
    pub fn push_records(&self, id: &str, records: Vec<StreamRecord>) {
        for shard in &mut lock(&self.state).shards {
            if shard.info.id == id {
                assert!(!shard.closed, "records pushed to a closed shard");
                shard.records.extend(records.iter().cloned());
            }
        }
    }
}

fn not_found(what: &str) -> StreamError {
    StreamError::Store(StoreError::Failed(format!("no such {what}")))
}

#[async_trait]
impl StreamApi for FakeStreams {
    async fn describe_shards(
        &self,
        _arn: &str,
        start: Option<String>,
    ) -> Result<ShardPage, StreamError> {
        let mut state = lock(&self.state);
        state.describe_calls += 1;
        let from = match start {
            Some(id) => state
                .shards
                .iter()
                .position(|s| s.info.id == id)
                .map_or(0, |i| i + 1),
            None => 0,
        };
        let shards: Vec<ShardInfo> = state
            .shards
            .iter()
            .skip(from)
            .take(state.describe_page_size)
            .map(|s| s.info.clone())
            .collect();
        let more = from + shards.len() < state.shards.len();
        Ok(ShardPage {
            last_evaluated_shard_id: more.then(|| shards.last().map(|s| s.id.clone())).flatten(),
            shards,
        })
    }

    async fn shard_iterator(
        &self,
        _arn: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, StreamError> {
        self.journal
            .push(Entry::Iterator(shard_id.into(), position.clone()));
        let state = lock(&self.state);
        let shard = state
            .shards
            .iter()
            .find(|s| s.info.id == shard_id)
            .ok_or_else(|| not_found("shard"))?;
        let horizon = state.trimmed_before.get(shard_id).copied().unwrap_or(0);
        let index = match position {
            StartPosition::TrimHorizon => horizon,
            StartPosition::After(seq) => shard
                .records
                .iter()
                .take_while(|r| r.sequence_number <= *seq)
                .count(),
        };
        if index < horizon {
            return Err(StreamError::Trimmed);
        }
        Ok(format!("{shard_id}#{index}@{}", state.epoch))
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError> {
        let mut state = lock(&self.state);
        state.get_records_calls += 1;
        let (iterator, epoch) = iterator
            .rsplit_once('@')
            .ok_or_else(|| not_found("iterator"))?;
        let epoch: usize = epoch.parse().map_err(|_| not_found("iterator"))?;
        let (shard_id, index) = iterator
            .rsplit_once('#')
            .ok_or_else(|| not_found("iterator"))?;
        let index: usize = index.parse().map_err(|_| not_found("iterator"))?;
        if epoch < state.epoch {
            // Orphaned: an empty page, and the same cursor again.
            return Ok(RecordPage {
                records: Vec::new(),
                next_iterator: Some(format!("{iterator}@{epoch}")),
            });
        }
        let key = (shard_id.to_owned(), index);
        if state.expire.remove(&key) {
            return Err(StreamError::ExpiredIterator);
        }
        if state.trim.remove(&key)
            || index < state.trimmed_before.get(shard_id).copied().unwrap_or(0)
        {
            return Err(StreamError::Trimmed);
        }
        let per_call = state.records_per_call.min(usize::try_from(limit).unwrap());
        let shard = state
            .shards
            .iter()
            .find(|s| s.info.id == shard_id)
            .ok_or_else(|| not_found("shard"))?;
        let end = (index + per_call).min(shard.records.len());
        let at_end = if shard.close_on_empty_page {
            index == shard.records.len()
        } else {
            end == shard.records.len()
        };
        Ok(RecordPage {
            records: shard.records[index..end].to_vec(),
            next_iterator: (!(shard.closed && at_end)).then(|| format!("{shard_id}#{end}@{epoch}")),
        })
    }
}

#[derive(Debug, Default)]
struct CheckpointState {
    stored: HashMap<String, ShardItem>,
    trimmed: Vec<(String, TrimmedWindow)>,
    saved: Vec<(String, Option<String>, bool)>,
    fail_next: usize,
}

/// The checkpoint table, shared by the instances of a test, each through
/// its own handle.
#[derive(Clone, Debug)]
pub struct FakeCheckpoints {
    state: Arc<Mutex<CheckpointState>>,
    journal: Journal,
    /// While set, this handle's calls wait: its instance is stalled or cut
    /// off. They go on, against the table as it is then, once it is not.
    paused: Arc<tokio::sync::watch::Sender<bool>>,
}

impl FakeCheckpoints {
    fn new(journal: Journal) -> Self {
        Self {
            state: Arc::default(),
            journal,
            paused: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// A handle on the same table for another instance.
    fn peer(&self, journal: Journal) -> Self {
        Self {
            state: self.state.clone(),
            ..Self::new(journal)
        }
    }

    /// Stores a checkpoint as if an earlier run wrote it.
    pub fn put(&self, shard: &str, sequence_number: Option<String>, finished: bool) {
        lock(&self.state)
            .stored
            .entry(shard.into())
            .or_default()
            .checkpoint = Checkpoint {
            sequence_number,
            finished,
            last_event_time: None,
        };
    }

    pub fn fail_next(&self, n: usize) {
        lock(&self.state).fail_next = n;
    }

    /// Every successful save for `shard`, in order.
    pub fn saved(&self, shard: &str) -> Vec<(Option<String>, bool)> {
        lock(&self.state)
            .saved
            .iter()
            .filter(|(s, _, _)| s == shard)
            .map(|(_, seq, finished)| (seq.clone(), *finished))
            .collect()
    }

    /// Every trimmed window recorded for `shard`, in order.
    pub fn trimmed(&self, shard: &str) -> Vec<TrimmedWindow> {
        lock(&self.state)
            .trimmed
            .iter()
            .filter(|(s, _)| s == shard)
            .map(|(_, w)| w.clone())
            .collect()
    }

    /// The item of `shard`, if there is one.
    pub fn item(&self, shard: &str) -> Option<ShardItem> {
        lock(&self.state).stored.get(shard).cloned()
    }

    /// The holder of the lease of `shard`.
    pub fn owner(&self, shard: &str) -> Option<String> {
        self.item(shard).and_then(|item| item.lease.owner)
    }

    /// `owner` takes the lease of `shard`, whoever holds it: an instance the
    /// test does not run.
    pub fn seize(&self, shard: &str, owner: &str) {
        let mut state = lock(&self.state);
        let lease = &mut state.stored.entry(shard.into()).or_default().lease;
        lease.owner = Some(owner.into());
        lease.counter = Some(lease.counter.unwrap_or(0) + 1);
    }

    /// Calls through this handle wait from now on, until [`Self::resume`].
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    async fn gate(&self) {
        let mut paused = self.paused.subscribe();
        let _ = paused.wait_for(|paused| !*paused).await;
    }

    /// Applies `change` to the lease of `shard` if `owner` holds it.
    async fn as_owner(
        &self,
        shard: &str,
        owner: &str,
        change: impl FnOnce(&mut ShardItem),
    ) -> Result<(), LeaseError> {
        self.gate().await;
        let mut state = lock(&self.state);
        match state.stored.get_mut(shard) {
            Some(item) if item.lease.owner.as_deref() == Some(owner) => {
                change(item);
                Ok(())
            }
            _ => Err(LeaseError::Conflict),
        }
    }
}

fn raise(item: &mut ShardItem) {
    item.lease.counter = Some(item.lease.counter.unwrap_or(0) + 1);
}

#[async_trait]
impl CheckpointStore for FakeCheckpoints {
    async fn load_all(&self, _arn: &str) -> Result<HashMap<String, ShardItem>, StoreError> {
        self.gate().await;
        Ok(lock(&self.state).stored.clone())
    }

    async fn save(
        &self,
        _arn: &str,
        shard_id: &str,
        owner: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), LeaseError> {
        self.gate().await;
        {
            let mut state = lock(&self.state);
            if state.fail_next > 0 {
                state.fail_next -= 1;
                self.journal.push(Entry::CheckpointFailed);
                return Err(StoreError::Unavailable("injected".into()).into());
            }
        }
        self.as_owner(shard_id, owner, |item| item.checkpoint = checkpoint.clone())
            .await?;
        lock(&self.state).saved.push((
            shard_id.into(),
            checkpoint.sequence_number.clone(),
            checkpoint.finished,
        ));
        self.journal.push(Entry::Checkpoint(
            shard_id.into(),
            checkpoint.sequence_number.clone(),
            checkpoint.finished,
        ));
        Ok(())
    }

    async fn record_trimmed(
        &self,
        _arn: &str,
        shard_id: &str,
        owner: &str,
        window: &TrimmedWindow,
    ) -> Result<(), LeaseError> {
        self.gate().await;
        self.as_owner(shard_id, owner, |_| ()).await?;
        lock(&self.state)
            .trimmed
            .push((shard_id.into(), window.clone()));
        Ok(())
    }

    async fn take(
        &self,
        _arn: &str,
        shard_id: &str,
        owner: &str,
        seen: Option<u64>,
        generations: Option<&[u32]>,
    ) -> Result<ShardItem, LeaseError> {
        self.gate().await;
        let mut state = lock(&self.state);
        let item = state.stored.entry(shard_id.into()).or_default();
        if item.lease.counter != seen {
            return Err(LeaseError::Conflict);
        }
        item.lease.owner = Some(owner.into());
        if let Some(generations) = generations {
            item.generations = Some(generations.to_vec());
        }
        raise(item);
        Ok(item.clone())
    }

    async fn renew(
        &self,
        _arn: &str,
        shard_id: &str,
        owner: &str,
        generations: Option<&[u32]>,
    ) -> Result<(), LeaseError> {
        self.as_owner(shard_id, owner, |item| {
            if let Some(generations) = generations {
                item.generations = Some(generations.to_vec());
            }
            raise(item);
        })
        .await
    }

    async fn release(&self, _arn: &str, shard_id: &str, owner: &str) -> Result<(), LeaseError> {
        self.as_owner(shard_id, owner, |item| {
            item.lease.owner = None;
            raise(item);
        })
        .await
    }
}

#[derive(Debug, Default)]
struct HandlerState {
    fail_next: usize,
    failures: usize,
    events: Vec<StoredEvent>,
    unreadable: Vec<ParkedEvent>,
    /// Every call from now on never returns, as a handler stuck on a call
    /// that never answers.
    hang: bool,
    hanging: usize,
}

#[derive(Clone, Debug)]
pub struct FakeHandler {
    state: Arc<Mutex<HandlerState>>,
    journal: Journal,
}

impl FakeHandler {
    pub fn fail_next(&self, n: usize) {
        lock(&self.state).fail_next = n;
    }

    pub fn failures(&self) -> usize {
        lock(&self.state).failures
    }

    /// Every call from now on hangs.
    pub fn hang(&self) {
        lock(&self.state).hang = true;
    }

    /// Calls hanging now.
    pub fn hanging(&self) -> usize {
        lock(&self.state).hanging
    }

    /// Every event handled successfully, in order.
    pub fn events(&self) -> Vec<StoredEvent> {
        lock(&self.state).events.clone()
    }

    /// Every unreadable insert handed over with a successful batch.
    pub fn unreadable(&self) -> Vec<ParkedEvent> {
        lock(&self.state).unreadable.clone()
    }
}

#[async_trait]
impl BatchHandler for FakeHandler {
    async fn handle(&self, batch: &Batch, _shutdown: &Shutdown) -> Result<(), HandleError> {
        let events = &batch.events;
        let hang = {
            let mut state = lock(&self.state);
            state.hanging += usize::from(state.hang);
            state.hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let mut state = lock(&self.state);
        if state.fail_next > 0 {
            state.fail_next -= 1;
            state.failures += 1;
            self.journal.push(Entry::HandleFailed);
            return Err(HandleError::new(
                true,
                StoreError::Unavailable("injected".into()),
            ));
        }
        state.events.extend(events.iter().cloned());
        state
            .unreadable
            .extend(batch.unreadable.iter().map(|(_, p)| p.clone()));
        self.journal
            .push(Entry::Handled(events.iter().map(|e| e.version).collect()));
        Ok(())
    }
}

/// A shard reader's world, faked: one projector instance.
#[derive(Debug)]
pub struct Harness {
    /// The event store as the catch-up reads it.
    pub event_store: FakeEventStore,
    pub journal: Journal,
    pub streams: FakeStreams,
    pub checkpoints: FakeCheckpoints,
    pub handler: FakeHandler,
    pub trigger: ShutdownTrigger,
    pub progress: Arc<Progress>,
    pub metrics: StreamMetrics,
    /// The leases of the pipelines made from now on. By default an hour
    /// long, so that nothing expires unless a test says so, and with no
    /// head start.
    pub lease_settings: LeaseSettings,
    shutdown: Shutdown,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        let journal = Journal::default();
        Self::with(
            FakeStreams::new(journal.clone()),
            FakeCheckpoints::new(journal.clone()),
            journal,
            LeaseSettings {
                owner: "instance-a".into(),
                duration: Duration::from_secs(3600),
                head_start: Duration::ZERO,
            },
        )
    }

    fn with(
        streams: FakeStreams,
        checkpoints: FakeCheckpoints,
        journal: Journal,
        lease_settings: LeaseSettings,
    ) -> Self {
        let (trigger, shutdown) = Shutdown::new();
        Self {
            event_store: FakeEventStore::default(),
            streams,
            checkpoints,
            handler: FakeHandler {
                state: Arc::default(),
                journal: journal.clone(),
            },
            journal,
            trigger,
            progress: Progress::new(),
            metrics: StreamMetrics::new("test", "handled").unwrap(),
            lease_settings,
            shutdown,
        }
    }

    /// Another instance, `owner`, on the same stream and checkpoint table,
    /// with its own journal, handler, shutdown, health and metrics, and
    /// this one's lease settings.
    pub fn peer(&self, owner: &str) -> Self {
        let journal = Journal::default();
        Self::with(
            FakeStreams {
                state: self.streams.state.clone(),
                journal: journal.clone(),
            },
            self.checkpoints.peer(journal.clone()),
            journal,
            LeaseSettings {
                owner: owner.into(),
                ..self.lease_settings.clone()
            },
        )
    }

    pub fn pipeline(&self) -> Pipeline {
        self.pipeline_with(Arc::new(self.handler.clone()))
    }

    /// A pipeline whose batches go to `handler` rather than the fake one.
    pub fn pipeline_with(&self, handler: Arc<dyn BatchHandler>) -> Pipeline {
        let checkpoints: Arc<dyn CheckpointStore> = Arc::new(self.checkpoints.clone());
        let stream_arn = "arn:test:stream".to_owned();
        Pipeline {
            leases: Arc::new(Leases::new(
                self.lease_settings.clone(),
                stream_arn.clone(),
                checkpoints.clone(),
                self.metrics.clone(),
            )),
            stream_arn,
            streams: Arc::new(self.streams.clone()),
            checkpoints,
            handler,
            catch_up: Arc::new(self.event_store.clone()),
            timing: fast_timing(),
            shutdown: self.shutdown.clone(),
            progress: self.progress.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Reads `shard` from `checkpoint` with a new pipeline, its lease taken
    /// first.
    pub async fn read_shard(
        &self,
        shard: &str,
        checkpoint: Checkpoint,
    ) -> Result<ShardEnd, StreamError> {
        read(&self.pipeline(), shard, checkpoint).await
    }

    /// The sequence number of the `n`th record of a shard (fixed width, so
    /// that string order is numeric order).
    pub fn seq(&self, n: Version) -> String {
        (100_000_000_000_000_000_000_u128 + u128::try_from(n).unwrap()).to_string()
    }

    /// Insert records for `events`, numbered by version.
    pub fn records(&self, events: &[StoredEvent]) -> Vec<StreamRecord> {
        events
            .iter()
            .map(|e| insert_record(self.seq(e.version), e))
            .collect()
    }
}

/// Reads `shard` from `checkpoint` with `pipeline`, its lease taken first.
pub async fn read(
    pipeline: &Pipeline,
    shard: &str,
    checkpoint: Checkpoint,
) -> Result<ShardEnd, StreamError> {
    let lease = take_lease(pipeline, shard).await;
    pipeline.run_shard(&lease, checkpoint).await
}

/// Takes the lease of `shard` for `pipeline`'s instance, as it stands now.
pub async fn take_lease(pipeline: &Pipeline, shard: &str) -> Arc<Lease> {
    let items = pipeline.checkpoints.load_all("").await.unwrap();
    let seen = items.get(shard).and_then(|item| item.lease.counter);
    pipeline
        .leases
        .take(shard, seen)
        .await
        .unwrap()
        .expect("the lease is free")
        .0
}

/// The event store as a catch-up reads it: events by commit time.
#[derive(Clone, Debug, Default)]
pub struct FakeEventStore(Arc<Mutex<Vec<StoredEvent>>>);

impl FakeEventStore {
    pub fn add(&self, events: &[StoredEvent]) {
        lock(&self.0).extend(events.iter().cloned());
    }
}

#[async_trait]
impl crate::catchup::CatchUpSource for FakeEventStore {
    async fn events_between(
        &self,
        from: Option<chrono::DateTime<Utc>>,
        to: chrono::DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events: Vec<StoredEvent> = lock(&self.0)
            .iter()
            .filter(|e| from.is_none_or(|from| e.occurred_at >= from) && e.occurred_at < to)
            .cloned()
            .collect();
        crate::catchup::sort_for_projection(&mut events);
        Ok(events)
    }
}
