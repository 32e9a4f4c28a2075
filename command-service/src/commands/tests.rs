//! The command handler's retry, cache and idempotent-replay paths, given a
//! store in a known state, against a fake that keeps the real store's
//! conditions (see `dynabridge_event_store::append`) and counts every call.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use dynabridge_aws::CallError;
use dynabridge_domain::{
    Email, Event, Money, OrderLines, Requirement, StoredEvent, UserId, UserName,
};

use super::*;

/// What the fake does to the next append instead of applying it.
#[derive(Clone, Debug)]
enum Injected {
    /// Another writer appends this user event first (at the next version).
    WriterFirst(Event),
    /// The store cannot be reached: the append fails, transient.
    Unreachable,
}

#[derive(Clone, Debug, Default)]
struct State {
    events: HashMap<String, Vec<StoredEvent>>,
    records: HashMap<String, (String, CommandOutcome)>,
    /// The request hash a create recorded on its first event, by aggregate.
    created_by: HashMap<String, String>,
    /// The unique values held (one scope in use), and their owners.
    unique: HashMap<String, Uuid>,
    injected: VecDeque<Injected>,
    snapshots: HashMap<String, StoredSnapshot>,
    /// Events read by loads, from a snapshot's or from the first.
    events_read: usize,
    loads: usize,
    appends: usize,
    record_reads: usize,
    creation_reads: usize,
}

impl State {
    fn holds(&self, requirement: &Requirement) -> bool {
        match requirement {
            Requirement::Claim { value, .. } => !self.unique.contains_key(value),
            Requirement::Release { value, owner, .. } => self.unique.get(value) == Some(owner),
            Requirement::Exists { aggregate_type, id } => self
                .events
                .get(&id.to_string())
                .and_then(|events| events.first())
                .is_some_and(|first| first.event.aggregate_type() == *aggregate_type),
            Requirement::Unchanged { id, version, .. } => {
                self.events.get(&id.to_string()).map_or(0, Vec::len) as Version == *version
            }
        }
    }
}

/// An in-memory event store with the real one's conditions: an event
/// version taken, a request id recorded, an email claimed by another user,
/// a required user missing. Shared by its clones.
#[derive(Clone, Debug, Default)]
struct FakeStore(Arc<Mutex<State>>);

impl FakeStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn inject(&self, what: Injected) {
        self.state().injected.push_back(what);
    }

    /// Appends `event` as another writer would, at the aggregate's next
    /// version.
    fn append_directly(&self, event: Event) {
        let mut state = self.state();
        let id = event.aggregate_id().to_string();
        let stream = state.events.entry(id).or_default();
        let version = stream.len() as Version + 1;
        stream.push(stored(version, "other-writer", event));
    }

    fn version_of(&self, id: impl ToString) -> usize {
        self.state().events.get(&id.to_string()).map_or(0, Vec::len)
    }

    /// (loads, appends, idempotency record reads) so far.
    fn calls(&self) -> (usize, usize, usize) {
        let state = self.state();
        (state.loads, state.appends, state.record_reads)
    }
}

fn stored(version: Version, request_id: &str, event: Event) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::new_v4(),
        version,
        occurred_at: Utc::now(),
        request_id: request_id.into(),
        correlation_id: format!("corr-{request_id}"),
        trace_parent: None,
        event,
    }
}

fn unreachable() -> StoreError {
    StoreError::Call(CallError::from_sdk(
        "appending events",
        SdkError::<TransactWriteItemsError, ()>::timeout_error("injected"),
    ))
}

/// Applies `append` to `state` if every condition holds, as the real
/// store's transaction does.
fn apply(state: &mut State, append: &Append) -> Result<(), AppendError> {
    // The conditions, in the order the real store's cancellation
    // reasons are read.
    let in_table = append.record == RecordIn::IdempotencyTable || append.events.is_empty();
    if in_table && state.records.contains_key(&append.idempotency.request_id) {
        return Err(AppendError::DuplicateRequest);
    }
    let unmet = |state: &State, wanted: fn(&Requirement) -> bool| {
        append
            .requirements
            .iter()
            .position(|r| wanted(r) && !state.holds(r))
    };
    if let Some(index) = unmet(state, |r| {
        matches!(
            r,
            Requirement::Exists { .. } | Requirement::Unchanged { .. }
        )
    }) {
        return Err(AppendError::Unmet(index));
    }
    for event in &append.events {
        let have = state
            .events
            .get(&event.event.aggregate_id().to_string())
            .map_or(0, Vec::len) as Version;
        if event.version <= have {
            return Err(AppendError::Conflict);
        }
    }
    if let Some(index) = unmet(state, |r| matches!(r, Requirement::Claim { .. })) {
        return Err(AppendError::Unmet(index));
    }
    for event in &append.events {
        let id = event.event.aggregate_id().to_string();
        state.events.entry(id).or_default().push(event.clone());
    }
    for requirement in &append.requirements {
        match requirement {
            Requirement::Claim { value, owner, .. } => {
                state.unique.insert(value.clone(), *owner);
            }
            Requirement::Release { value, .. } => {
                state.unique.remove(value);
            }
            Requirement::Exists { .. } | Requirement::Unchanged { .. } => {}
        }
    }
    let record = &append.idempotency;
    if in_table {
        state.records.insert(
            record.request_id.clone(),
            (record.request_hash.clone(), record.outcome.clone()),
        );
    } else {
        let id = append.events[0].event.aggregate_id().to_string();
        state.created_by.insert(id, record.request_hash.clone());
    }
    Ok(())
}

impl CommandStore for FakeStore {
    async fn load(&self, aggregate_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let mut state = self.state();
        state.loads += 1;
        let events = state.events.get(aggregate_id).cloned().unwrap_or_default();
        state.events_read += events.len();
        Ok(events)
    }

    async fn load_after(
        &self,
        aggregate_id: &str,
        after: Version,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut state = self.state();
        state.loads += 1;
        let events: Vec<_> = state
            .events
            .get(aggregate_id)
            .into_iter()
            .flatten()
            .filter(|e| e.version > after)
            .cloned()
            .collect();
        state.events_read += events.len();
        Ok(events)
    }

    async fn snapshot(&self, aggregate_id: &str) -> Result<Option<StoredSnapshot>, StoreError> {
        Ok(self.state().snapshots.get(aggregate_id).cloned())
    }

    async fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = snapshot.aggregate_id.to_string();
        if state
            .snapshots
            .get(&key)
            .is_none_or(|s| s.version < snapshot.version)
        {
            state.snapshots.insert(key, snapshot.clone());
        }
        Ok(())
    }

    async fn append(&self, append: &Append) -> Result<(), AppendError> {
        let mut state = self.state();
        state.appends += 1;
        match state.injected.pop_front() {
            Some(Injected::Unreachable) => return Err(AppendError::Store(unreachable())),
            Some(Injected::WriterFirst(event)) => {
                drop(state);
                self.append_directly(event);
                state = self.state();
            }
            None => {}
        }
        apply(&mut state, append)
    }

    async fn append_together(&self, appends: &[Append]) -> Result<(), AppendError> {
        let mut state = self.state();
        state.appends += 1;
        match state.injected.pop_front() {
            Some(Injected::Unreachable) => return Err(AppendError::Store(unreachable())),
            Some(Injected::WriterFirst(event)) => {
                drop(state);
                self.append_directly(event);
                state = self.state();
            }
            None => {}
        }
        // All or none, as one transaction.
        let mut trial = state.clone();
        for append in appends {
            apply(&mut trial, append)?;
        }
        *state = trial;
        Ok(())
    }

    async fn creation(&self, aggregate_id: &str) -> Result<Option<Creation>, StoreError> {
        let mut state = self.state();
        state.creation_reads += 1;
        let Some(events) = state.events.get(aggregate_id) else {
            return Ok(None);
        };
        let request_id = events[0].request_id.clone();
        Ok(Some(Creation {
            request_hash: state.created_by.get(aggregate_id).cloned(),
            events: events
                .iter()
                .take_while(|e| e.request_id == request_id)
                .cloned()
                .collect(),
            request_id,
        }))
    }

    async fn recorded_request(
        &self,
        request_id: &str,
    ) -> Result<Option<(String, CommandOutcome)>, StoreError> {
        let mut state = self.state();
        state.record_reads += 1;
        Ok(state.records.get(request_id).cloned())
    }
}

fn meta(request_id: &str) -> CommandMeta {
    CommandMeta {
        request_id: RequestId::parse(request_id).unwrap(),
        request_hash: format!("hash-of-{request_id}"),
        correlation_id: format!("corr-{request_id}"),
        trace_parent: None,
        expected_version: None,
    }
}

fn email(raw: &str) -> Email {
    Email::parse(raw).unwrap()
}

fn name(raw: &str) -> UserName {
    UserName::parse(raw).unwrap()
}

fn handler(store: &FakeStore) -> CommandHandler<FakeStore> {
    CommandHandler::new(store.clone())
}

fn cached_handler(store: &FakeStore) -> CommandHandler<FakeStore> {
    let metrics = AggregateCacheMetrics::new().unwrap();
    CommandHandler::new(store.clone()).with_aggregate_cache(AggregateCache::new(16, metrics))
}

/// Given an empty store, creates a user through `handler`: its id.
async fn given_user(handler: &CommandHandler<FakeStore>, request_id: &str, mail: &str) -> UserId {
    let outcome = handler
        .create_user(&meta(request_id), email(mail), name("Ada"))
        .await
        .unwrap();
    UserId::parse("user_id", &outcome.aggregate_id).unwrap()
}

#[tokio::test]
async fn a_new_user_is_one_append_at_version_one_and_claims_its_email() {
    let store = FakeStore::default();

    let outcome = handler(&store)
        .create_user(&meta("r1"), email("ada@example.com"), name("Ada"))
        .await
        .unwrap();

    assert_eq!(outcome.version, 1);
    assert_eq!(outcome.event_ids.len(), 1);
    assert_eq!(outcome.correlation_id, "corr-r1");
    assert_eq!(store.calls(), (0, 1, 0), "no read before a create");
    assert!(store.state().unique.contains_key("ada@example.com"));
}

#[tokio::test]
async fn a_retried_create_returns_the_original_outcome_and_appends_nothing() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let first = handler
        .create_user(&meta("r1"), email("ada@example.com"), name("Ada"))
        .await
        .unwrap();

    let retry = handler
        .create_user(&meta("r1"), email("ada@example.com"), name("Ada"))
        .await
        .unwrap();

    assert_eq!(retry, first);
    assert_eq!(store.state().events.len(), 1, "one user, not two");
    assert_eq!(store.calls(), (0, 2, 0), "no idempotency record read");
    assert_eq!(store.state().creation_reads, 1, "the retry read the event");
    assert!(
        store.state().records.is_empty(),
        "no idempotency item: the create's event is its record"
    );
    assert_eq!(
        first.aggregate_id,
        UserId::for_request("r1").to_string(),
        "the id derives from the request id"
    );
}

#[tokio::test]
async fn a_request_id_reused_for_another_request_is_refused_naming_the_field() {
    let store = FakeStore::default();
    let handler = handler(&store);
    given_user(&handler, "r1", "ada@example.com").await;
    let mut other = meta("r1");
    other.request_hash = "another request".into();

    let err = handler
        .create_user(&other, email("bob@example.com"), name("Bob"))
        .await
        .unwrap_err();

    assert_eq!(err.reason(), Some(Reason::RequestIdReused), "{err:?}");
    assert!(!store.state().unique.contains_key("bob@example.com"));
}

#[tokio::test]
async fn an_email_another_user_holds_is_already_exists() {
    let store = FakeStore::default();
    let handler = handler(&store);
    given_user(&handler, "r1", "ada@example.com").await;

    let err = handler
        .create_user(&meta("r2"), email("ada@example.com"), name("Imposter"))
        .await
        .unwrap_err();

    assert_eq!(err.reason(), Some(Reason::EmailTaken), "{err:?}");
    assert_eq!(store.state().events.len(), 1);
}

#[tokio::test]
async fn a_cached_aggregate_is_decided_without_a_read() {
    let store = FakeStore::default();
    let handler = cached_handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;

    let outcome = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada L.")), None)
        .await
        .unwrap();

    assert_eq!(outcome.version, 2);
    assert_eq!(store.calls(), (0, 2, 0), "no read: the cache had it");
    let metrics = handler.aggregate_cache().unwrap().metrics();
    assert_eq!(metrics.hits.get(), 1);
}

#[tokio::test]
async fn a_cached_aggregate_behind_the_store_is_read_again_and_the_command_lands_after_the_other_writer()
 {
    let store = FakeStore::default();
    let handler = cached_handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    // Another writer (another replica) moves the user to version 2.
    store.append_directly(Event::UserProfileUpdated {
        user_id: id,
        name: Some(name("Ada B.")),
        email: None,
    });

    let outcome = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada L.")), None)
        .await
        .unwrap();

    assert_eq!(outcome.version, 3, "after the other writer's event");
    assert_eq!(
        store.calls(),
        (1, 3, 0),
        "the refused append, a read, the append"
    );
    assert_eq!(handler.aggregate_cache().unwrap().metrics().stale.get(), 1);
}

#[tokio::test]
async fn nothing_to_do_from_the_cache_is_confirmed_by_a_read_before_it_is_answered() {
    let store = FakeStore::default();
    let handler = cached_handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    // Another writer already renamed the user; the cache does not know.
    store.append_directly(Event::UserProfileUpdated {
        user_id: id,
        name: Some(name("Ada L.")),
        email: None,
    });

    // From the cache the rename is news; from the store it changes nothing.
    let outcome = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada L.")), None)
        .await
        .unwrap();

    assert_eq!(outcome.version, 2);
    assert!(outcome.event_ids.is_empty());
    assert_eq!(store.version_of(id), 2, "nothing appended");
}

#[tokio::test]
async fn concurrent_writers_are_outrun_by_re_reading_up_to_the_attempt_limit() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    // Another writer wins the race before each of the first two appends.
    for n in 0..2 {
        store.inject(Injected::WriterFirst(Event::UserProfileUpdated {
            user_id: id,
            name: Some(name(&format!("Other {n}"))),
            email: None,
        }));
    }

    let outcome = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada L.")), None)
        .await
        .unwrap();

    assert_eq!(
        outcome.version, 4,
        "after both of the other writer's events"
    );
    assert_eq!(store.calls().0, 3, "one read per attempt");
}

#[tokio::test]
async fn a_writer_that_always_wins_ends_in_conflict_after_max_attempts() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    let attempts = CommandHandler::<FakeStore>::MAX_ATTEMPTS;
    for n in 0..attempts {
        store.inject(Injected::WriterFirst(Event::UserProfileUpdated {
            user_id: id,
            name: Some(name(&format!("Other {n}"))),
            email: None,
        }));
    }

    let err = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada L.")), None)
        .await
        .unwrap_err();

    let AppError::Refused(refusal) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(refusal.reason, Reason::ConcurrentModification);
    assert_eq!(refusal.get("aggregate_id"), Some(id.to_string().as_str()));
    assert!(refusal.message.contains("kept changing"), "{refusal}");
    assert_eq!(store.calls().0, attempts as usize, "one read per attempt");
}

#[tokio::test]
async fn an_expected_version_the_aggregate_has_left_is_a_conflict_without_an_append() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    let mut stale = meta("r2");
    stale.expected_version = Some(0);

    let err = handler
        .update_user_profile(&stale, id, Some(name("Ada L.")), None)
        .await
        .unwrap_err();

    let AppError::Refused(conflict) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(conflict.reason, Reason::VersionConflict);
    assert_eq!(conflict.get("expected_version"), Some("0"));
    assert_eq!(conflict.get("current_version"), Some("1"));
    assert_eq!(store.calls().1, 1, "only the create appended");
}

#[tokio::test]
async fn an_unreachable_store_is_unavailable_and_the_cached_state_is_dropped() {
    let store = FakeStore::default();
    let handler = cached_handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    store.inject(Injected::Unreachable);

    let err = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada L.")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::Unavailable(_)), "{err:?}");

    // The append may have landed: the next command reads the store first.
    let loads = store.calls().0;
    handler
        .update_user_profile(&meta("r3"), id, Some(name("Ada M.")), None)
        .await
        .unwrap();
    assert_eq!(store.calls().0, loads + 1);
}

#[tokio::test]
async fn an_order_for_a_user_who_does_not_exist_is_not_found() {
    let store = FakeStore::default();
    let nobody = UserId::new_random();
    let lines = OrderLines::new(vec![dynabridge_domain::OrderLine {
        sku: dynabridge_domain::Sku::parse("SKU-1").unwrap(),
        quantity: dynabridge_domain::Quantity::parse(1).unwrap(),
        unit_price: Money::parse("EUR", 100).unwrap(),
    }])
    .unwrap();

    let err = handler(&store)
        .create_order(&meta("r1"), nobody, lines, None, None)
        .await
        .unwrap_err();

    let AppError::Refused(refusal) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(refusal.reason, Reason::AggregateNotFound);
    assert_eq!(refusal.get("aggregate_type"), Some("user"));
    assert_eq!(
        refusal.get("aggregate_id"),
        Some(nobody.to_string().as_str())
    );
    assert!(store.state().events.is_empty());
}

#[tokio::test]
async fn a_retried_update_that_now_changes_nothing_returns_the_original_outcome() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    let first = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada L.")), None)
        .await
        .unwrap();

    // The retry finds the change already in place: nothing to decide, but
    // the request is known, and its answer is the first one.
    let mut retry_meta = meta("r2");
    retry_meta.correlation_id = "corr-of-the-retry".into();
    let retry = handler
        .update_user_profile(&retry_meta, id, Some(name("Ada L.")), None)
        .await
        .unwrap();

    assert_eq!(retry, first);
    assert_eq!(retry.event_ids.len(), 1);
    assert_eq!(retry.correlation_id, "corr-r2");
    assert_eq!(store.version_of(id), 2);
}

#[tokio::test]
async fn a_request_that_changes_nothing_is_recorded_and_its_retry_changes_nothing_later() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;

    // Ada is already Ada: nothing to change, and the answer is recorded.
    let unchanged = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada")), None)
        .await
        .unwrap();
    assert_eq!(unchanged.version, 1);
    assert!(unchanged.event_ids.is_empty());
    assert_eq!(unchanged.correlation_id, "corr-r2");
    assert!(store.state().records.contains_key("r2"));

    // Someone renames her. The retry of "r2" must not rename her back.
    handler
        .update_user_profile(&meta("r3"), id, Some(name("Bea")), None)
        .await
        .unwrap();
    let retry = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada")), None)
        .await
        .unwrap();

    assert_eq!(retry, unchanged);
    assert_eq!(store.version_of(id), 2, "the retry appended nothing");
}

#[tokio::test]
async fn a_request_that_changes_nothing_is_decided_again_if_the_aggregate_moves_before_it_is_recorded()
 {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_user(&handler, "r1", "ada@example.com").await;
    // Between the read and the record, another writer renames her: the
    // record's condition (still at version 1) fails, and the request is
    // decided again from version 2, where it changes something.
    store.inject(Injected::WriterFirst(Event::UserProfileUpdated {
        user_id: id,
        name: Some(name("Bea")),
        email: None,
    }));

    let outcome = handler
        .update_user_profile(&meta("r2"), id, Some(name("Ada")), None)
        .await
        .unwrap();

    assert_eq!(outcome.version, 3);
    assert_eq!(outcome.event_ids.len(), 1);
    assert_eq!(
        store.calls(),
        (2, 3, 0),
        "read, record refused, read, append"
    );
}

fn restock(quantity: i64) -> dynabridge_domain::ProductCommand {
    dynabridge_domain::ProductCommand::Restock {
        sku: dynabridge_domain::Sku::parse("HOT-1").unwrap(),
        quantity: dynabridge_domain::Quantity::parse(quantity).unwrap(),
    }
}

async fn given_product(handler: &CommandHandler<FakeStore>) -> Uuid {
    let create = dynabridge_domain::ProductCommand::Create {
        sku: dynabridge_domain::Sku::parse("HOT-1").unwrap(),
        name: dynabridge_domain::ProductName::parse("Hot").unwrap(),
        unit_price: Money::parse("EUR", 100).unwrap(),
        initial_stock: dynabridge_domain::StockLevel::ZERO,
        reorder_level: dynabridge_domain::StockLevel::ZERO,
    };
    let outcome = handler.product(&meta("create-hot"), &create).await.unwrap();
    Uuid::parse_str(&outcome.aggregate_id).unwrap()
}

/// Waits until the snapshot taken in the background is at `version`.
async fn snapshot_at(store: &FakeStore, id: Uuid, version: Version) {
    dynabridge_testkit::eventually("the snapshot", std::time::Duration::from_secs(5), || {
        let at = store
            .state()
            .snapshots
            .get(&id.to_string())
            .map(|s| s.version);
        std::future::ready((at == Some(version)).then_some(()))
    })
    .await;
}

#[tokio::test]
async fn a_product_is_snapshotted_every_100_events_and_loaded_from_its_snapshot() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_product(&handler).await;
    for n in 2..=130 {
        handler
            .product(&meta(&format!("restock-{n}")), &restock(1))
            .await
            .unwrap();
        // The fake never waits: let the background snapshot run, as it
        // would beside a real store.
        tokio::task::yield_now().await;
    }
    // Taken by the append that reached version 100, in the background.
    snapshot_at(&store, id, 100).await;
    let before = store.state().events_read;
    let loaded = load_aggregate::<FakeStore, dynabridge_domain::Product>(&store, id)
        .await
        .unwrap();
    assert_eq!(
        (loaded.snapshot_version, loaded.events_read),
        (100, 30),
        "the snapshot and the 30 events after it"
    );
    assert_eq!(store.state().events_read - before, 30);
    assert_eq!(loaded.aggregate.version, 130);
    assert_eq!(loaded.aggregate.state.unwrap().stock.get(), 129);
}

#[tokio::test]
async fn a_product_without_a_trusted_snapshot_is_folded_whole_and_snapshotted() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let id = given_product(&handler).await;
    for n in 2..=120 {
        handler
            .product(&meta(&format!("restock-{n}")), &restock(2))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    snapshot_at(&store, id, 100).await;
    // A snapshot of a shape this build does not write is ignored...
    store
        .state()
        .snapshots
        .get_mut(&id.to_string())
        .unwrap()
        .schema_version = 99;
    let before = store.state().events_read;
    handler
        .product(&meta("restock-121"), &restock(2))
        .await
        .unwrap();
    assert_eq!(store.state().events_read - before, 120, "every event read");
    // ... and replaced by one of the state the command read: 120 events
    // had passed since the last one it trusted (none).
    snapshot_at(&store, id, 120).await;
    let snapshot = store.state().snapshots[&id.to_string()].clone();
    let product: dynabridge_domain::Product = snapshot.read(id).unwrap();
    assert_eq!(product.state.unwrap().stock.get(), 119 * 2);
}

// ---------------------------------------------------------------------------
// Purchases: decisions across aggregates

fn sku(raw: &str) -> dynabridge_domain::Sku {
    dynabridge_domain::Sku::parse(raw).unwrap()
}

async fn given_stock(handler: &CommandHandler<FakeStore>, raw_sku: &str, stock: i64) -> Uuid {
    let create = dynabridge_domain::ProductCommand::Create {
        sku: sku(raw_sku),
        name: dynabridge_domain::ProductName::parse(raw_sku).unwrap(),
        unit_price: Money::parse("EUR", 500).unwrap(),
        initial_stock: dynabridge_domain::StockLevel::parse(stock).unwrap(),
        reorder_level: dynabridge_domain::StockLevel::ZERO,
    };
    let outcome = handler
        .product(&meta(&format!("create-{raw_sku}")), &create)
        .await
        .unwrap();
    Uuid::parse_str(&outcome.aggregate_id).unwrap()
}

async fn stock_of(store: &FakeStore, id: Uuid) -> (i64, i64) {
    let product = load_aggregate::<FakeStore, dynabridge_domain::Product>(store, id)
        .await
        .unwrap()
        .aggregate
        .state
        .unwrap();
    (product.stock.get(), product.reserved.get())
}

async fn purchase_state(
    store: &FakeStore,
    id: dynabridge_domain::PurchaseId,
) -> dynabridge_domain::PurchaseState {
    load_aggregate::<FakeStore, dynabridge_domain::Purchase>(store, *id.as_uuid())
        .await
        .unwrap()
        .aggregate
        .state
        .unwrap()
}

async fn given_purchase(
    handler: &CommandHandler<FakeStore>,
    request_id: &str,
    user_id: UserId,
    items: &[(&str, i64)],
) -> dynabridge_domain::PurchaseId {
    let items = dynabridge_domain::PurchaseItems::new(
        items
            .iter()
            .map(|(raw, n)| dynabridge_domain::PurchaseItem {
                sku: sku(raw),
                quantity: dynabridge_domain::Quantity::parse(*n).unwrap(),
            })
            .collect(),
    )
    .unwrap();
    let outcome = handler
        .purchase_products(&meta(request_id), user_id, items)
        .await
        .unwrap();
    assert_eq!(outcome.version, 1);
    dynabridge_domain::PurchaseId::parse("purchase_id", &outcome.aggregate_id).unwrap()
}

#[tokio::test]
async fn a_purchase_reserves_every_item_in_one_append_then_creates_its_order() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let user = given_user(&handler, "u", "ann@example.com").await;
    let (mug, cup) = (
        given_stock(&handler, "MUG", 5).await,
        given_stock(&handler, "CUP", 2).await,
    );
    let purchase = given_purchase(&handler, "buy-1", user, &[("MUG", 3), ("CUP", 2)]).await;
    let appends = store.calls().1;

    let reserved = handler
        .reserve_purchase(&meta("buy-1/reserve"), purchase)
        .await
        .unwrap();
    assert_eq!(store.calls().1, appends + 1, "one transaction");
    assert_eq!(reserved.version, 2);
    assert_eq!(
        reserved.event_ids.len(),
        3,
        "the purchase's and each product's"
    );
    assert_eq!(
        (stock_of(&store, mug).await, stock_of(&store, cup).await),
        ((2, 3), (0, 2))
    );
    let state = purchase_state(&store, purchase).await;
    assert_eq!(state.status, dynabridge_domain::PurchaseStatus::Reserved);
    assert_eq!(state.lines.len(), 2);

    // The step again (a redelivery): the same answer, nothing appended.
    let again = handler
        .reserve_purchase(&meta("buy-1/reserve"), purchase)
        .await
        .unwrap();
    assert_eq!(again, reserved);
    assert_eq!(stock_of(&store, mug).await, (2, 3));

    let completed = handler
        .complete_purchase(&meta("buy-1/order"), purchase)
        .await
        .unwrap();
    assert_eq!(completed.version, 3);
    let state = purchase_state(&store, purchase).await;
    let order_id = state.order_id.unwrap();
    assert_eq!(order_id, dynabridge_domain::OrderId::for_purchase(purchase));
    let order = load_aggregate::<FakeStore, dynabridge_domain::Order>(&store, *order_id.as_uuid())
        .await
        .unwrap()
        .aggregate
        .state
        .unwrap();
    assert_eq!(order.purchase_id, Some(purchase));
    assert_eq!(order.user_id, user);
    assert_eq!(order.total, Money::parse("EUR", 2500).unwrap());

    // Its order cancelled, the purchase gives its stock back, once.
    handler
        .update_order_status(
            &meta("cancel"),
            order_id,
            dynabridge_domain::OrderStatus::Cancelled,
        )
        .await
        .unwrap();
    handler
        .release_purchase(&meta("buy-1/release"), purchase, order_id)
        .await
        .unwrap();
    assert_eq!(
        (stock_of(&store, mug).await, stock_of(&store, cup).await),
        ((5, 0), (2, 0))
    );
    handler
        .release_purchase(&meta("buy-1/release-again"), purchase, order_id)
        .await
        .unwrap();
    assert_eq!(stock_of(&store, mug).await, (5, 0), "released once");
    assert_eq!(
        purchase_state(&store, purchase).await.status,
        dynabridge_domain::PurchaseStatus::Cancelled
    );
}

#[tokio::test]
async fn a_purchase_short_of_one_item_reserves_none_and_is_rejected_naming_it() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let user = given_user(&handler, "u", "ann@example.com").await;
    let (mug, cup) = (
        given_stock(&handler, "MUG", 5).await,
        given_stock(&handler, "CUP", 1).await,
    );
    let purchase = given_purchase(&handler, "buy-2", user, &[("MUG", 3), ("CUP", 2)]).await;
    handler
        .reserve_purchase(&meta("buy-2/reserve"), purchase)
        .await
        .unwrap();
    assert_eq!(
        (stock_of(&store, mug).await, stock_of(&store, cup).await),
        ((5, 0), (1, 0))
    );
    let rejected = store.state().events[&purchase.to_string()][1].event.clone();
    assert_eq!(
        rejected,
        Event::PurchaseRejected {
            purchase_id: purchase,
            rejection: dynabridge_domain::Rejection::OutOfStock {
                sku: sku("CUP"),
                requested: dynabridge_domain::Quantity::parse(2).unwrap(),
                available: 1,
            },
        }
    );
    // Nothing more happens to it.
    let err = handler
        .complete_purchase(&meta("buy-2/order"), purchase)
        .await
        .unwrap_err();
    assert_eq!(
        err.reason(),
        Some(dynabridge::pb::ErrorReason::InvalidStep),
        "{err:?}"
    );

    let unknown = given_purchase(&handler, "buy-3", user, &[("NOPE", 1)]).await;
    handler
        .reserve_purchase(&meta("buy-3/reserve"), unknown)
        .await
        .unwrap();
    assert_eq!(
        purchase_state(&store, unknown).await.status,
        dynabridge_domain::PurchaseStatus::Rejected
    );
}

#[tokio::test]
async fn a_product_that_moves_while_reserving_is_read_again() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let user = given_user(&handler, "u", "ann@example.com").await;
    let mug = given_stock(&handler, "MUG", 5).await;
    let purchase = given_purchase(&handler, "buy-4", user, &[("MUG", 4)]).await;
    // Another purchase takes 2 first: 3 are left, not 4.
    let other = dynabridge_domain::PurchaseId::new_random();
    store.inject(Injected::WriterFirst(Event::StockReserved {
        product_id: dynabridge_domain::ProductId::from_uuid(mug),
        purchase_id: other,
        quantity: dynabridge_domain::Quantity::parse(2).unwrap(),
    }));
    handler
        .reserve_purchase(&meta("buy-4/reserve"), purchase)
        .await
        .unwrap();
    assert_eq!(
        stock_of(&store, mug).await,
        (3, 2),
        "only the other purchase's"
    );
    assert_eq!(
        purchase_state(&store, purchase).await.status,
        dynabridge_domain::PurchaseStatus::Rejected
    );
}

#[tokio::test]
async fn a_purchase_for_no_user_is_refused_and_writes_nothing() {
    let store = FakeStore::default();
    let handler = handler(&store);
    given_stock(&handler, "MUG", 5).await;
    let before = store.state().events.len();
    let items = dynabridge_domain::PurchaseItems::new(vec![dynabridge_domain::PurchaseItem {
        sku: sku("MUG"),
        quantity: dynabridge_domain::Quantity::parse(1).unwrap(),
    }])
    .unwrap();
    let err = handler
        .purchase_products(&meta("buy-5"), UserId::new_random(), items)
        .await
        .unwrap_err();
    assert_eq!(
        err.reason(),
        Some(dynabridge::pb::ErrorReason::AggregateNotFound)
    );
    assert_eq!(store.state().events.len(), before);
}

#[tokio::test]
async fn reservations_of_one_product_are_decided_together_and_appended_in_one_transaction() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let user = given_user(&handler, "u", "ann@example.com").await;
    let mug = given_stock(&handler, "MUG", 3).await;
    let mut purchases = Vec::new();
    for n in 0..5 {
        purchases.push(given_purchase(&handler, &format!("buy-{n}"), user, &[("MUG", 1)]).await);
    }
    let steps: Vec<(CommandMeta, dynabridge_domain::PurchaseId)> = purchases
        .iter()
        .enumerate()
        .map(|(n, id)| (meta(&format!("buy-{n}/reserve")), *id))
        .collect();
    let appends = store.calls().1;
    let answers = handler.reserve_purchases(&steps).await;
    assert_eq!(store.calls().1, appends + 1, "one transaction for the five");
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    // Each decided on what the ones before it left: three reserved, at the
    // product's versions 2, 3, 4, then two rejected with nothing left.
    assert_eq!(stock_of(&store, mug).await, (0, 3));
    let versions: Vec<Version> = store.state().events[&mug.to_string()]
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let mut statuses = Vec::new();
    for id in &purchases {
        statuses.push(purchase_state(&store, *id).await.status);
    }
    use dynabridge_domain::PurchaseStatus::{Rejected, Reserved};
    assert_eq!(statuses, [Reserved, Reserved, Reserved, Rejected, Rejected]);
    // Each answered with its own outcome, and its retry alone the same.
    let again = handler
        .reserve_purchase(&steps[1].0, steps[1].1)
        .await
        .unwrap();
    assert_eq!(&again, answers[1].as_ref().unwrap());
}

#[tokio::test]
async fn a_batch_that_meets_another_writer_falls_back_to_one_step_at_a_time() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let user = given_user(&handler, "u", "ann@example.com").await;
    let mug = given_stock(&handler, "MUG", 3).await;
    let a = given_purchase(&handler, "buy-a", user, &[("MUG", 1)]).await;
    let b = given_purchase(&handler, "buy-b", user, &[("MUG", 1)]).await;
    // Another writer takes two units first: the batch fails as a whole,
    // and each step is taken again alone, on what is left.
    store.inject(Injected::WriterFirst(Event::StockReserved {
        product_id: dynabridge_domain::ProductId::from_uuid(mug),
        purchase_id: dynabridge_domain::PurchaseId::new_random(),
        quantity: dynabridge_domain::Quantity::parse(2).unwrap(),
    }));
    let steps = vec![(meta("buy-a/reserve"), a), (meta("buy-b/reserve"), b)];
    let answers = handler.reserve_purchases(&steps).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(stock_of(&store, mug).await, (0, 3));
    assert_eq!(
        purchase_state(&store, a).await.status,
        dynabridge_domain::PurchaseStatus::Reserved
    );
    assert_eq!(
        purchase_state(&store, b).await.status,
        dynabridge_domain::PurchaseStatus::Rejected
    );
}

// ---------------------------------------------------------------------------
// Routes: one per order, under an id the order's derives

async fn given_order(handler: &CommandHandler<FakeStore>) -> dynabridge_domain::OrderId {
    let user = given_user(handler, "u", "ann@example.com").await;
    let lines = OrderLines::new(vec![dynabridge_domain::OrderLine {
        sku: sku("MUG"),
        quantity: dynabridge_domain::Quantity::parse(2).unwrap(),
        unit_price: Money::parse("EUR", 500).unwrap(),
    }])
    .unwrap();
    let outcome = handler
        .create_order(&meta("order-1"), user, lines, None, None)
        .await
        .unwrap();
    dynabridge_domain::OrderId::parse("order_id", &outcome.aggregate_id).unwrap()
}

/// A pick of two MUGs, then the delivery.
fn stops() -> dynabridge_domain::RouteStops {
    dynabridge_domain::RouteStops::parse(vec![
        dynabridge_domain::RouteStop {
            location: "A01-01".into(),
            pick: Some((sku("MUG"), dynabridge_domain::Quantity::parse(2).unwrap())),
        },
        dynabridge_domain::RouteStop {
            location: "Berlin, DE".into(),
            pick: None,
        },
    ])
    .unwrap()
}

fn distance(metres: i64) -> dynabridge_domain::Distance {
    dynabridge_domain::Distance::parse(metres).unwrap()
}

#[tokio::test]
async fn a_route_for_an_order_is_one_route_created_under_the_id_the_order_derives() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let order_id = given_order(&handler).await;
    let appends = store.calls().1;

    let outcome = handler
        .create_route(&meta("route-1"), order_id, stops(), distance(420))
        .await
        .unwrap();

    let route_id = dynabridge_domain::route_id_for(order_id);
    assert_eq!(outcome.aggregate_id, route_id.to_string());
    assert_eq!(outcome.version, 1);
    assert_eq!(outcome.event_ids.len(), 1);
    assert_eq!(outcome.correlation_id, "corr-route-1");
    assert_eq!(store.calls().1, appends + 1, "one append");
    let events = store.state().events[&route_id.to_string()].clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id.to_string(), outcome.event_ids[0]);
    assert_eq!(events[0].request_id, "route-1");
    assert_eq!(
        events[0].event,
        Event::RouteCreated {
            route_id,
            order_id,
            stops: stops(),
            distance: distance(420),
        }
    );
    assert!(
        store.state().records.contains_key("route-1"),
        "the id derives from the order, not the request: the request is recorded"
    );
    assert_eq!(store.version_of(order_id), 1, "the order is untouched");
}

#[tokio::test]
async fn a_retried_route_returns_the_original_outcome_and_appends_nothing() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let order_id = given_order(&handler).await;
    let first = handler
        .create_route(&meta("route-1"), order_id, stops(), distance(420))
        .await
        .unwrap();
    let appends = store.calls().1;

    let mut retry_meta = meta("route-1");
    retry_meta.correlation_id = "corr-of-the-retry".into();
    let retry = handler
        .create_route(&retry_meta, order_id, stops(), distance(420))
        .await
        .unwrap();

    assert_eq!(retry, first);
    assert_eq!(store.calls().1, appends, "nothing appended");
    assert_eq!(
        store.version_of(dynabridge_domain::route_id_for(order_id)),
        1
    );
}

#[tokio::test]
async fn a_second_route_for_an_order_is_already_exists() {
    let store = FakeStore::default();
    let handler = handler(&store);
    let order_id = given_order(&handler).await;
    handler
        .create_route(&meta("route-1"), order_id, stops(), distance(420))
        .await
        .unwrap();
    let appends = store.calls().1;

    // Another request id: another plan of the same order.
    let err = handler
        .create_route(&meta("route-2"), order_id, stops(), distance(99))
        .await
        .unwrap_err();

    let AppError::Refused(refusal) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(refusal.reason, Reason::AggregateExists);
    assert_eq!(refusal.get("aggregate_type"), Some("route"));
    assert_eq!(store.calls().1, appends, "nothing appended");
    assert_eq!(
        store.version_of(dynabridge_domain::route_id_for(order_id)),
        1
    );
    assert!(!store.state().records.contains_key("route-2"));

    // The first request id reused for another route is refused as such.
    let mut reused = meta("route-1");
    reused.request_hash = "another request".into();
    let err = handler
        .create_route(&reused, order_id, stops(), distance(99))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::RequestIdReused), "{err:?}");
}

#[tokio::test]
async fn a_route_for_an_order_that_does_not_exist_is_not_found_and_writes_nothing() {
    let store = FakeStore::default();
    let nobody = dynabridge_domain::OrderId::new_random();

    let err = handler(&store)
        .create_route(&meta("route-1"), nobody, stops(), distance(420))
        .await
        .unwrap_err();

    let AppError::Refused(refusal) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(refusal.reason, Reason::AggregateNotFound);
    assert_eq!(refusal.get("aggregate_type"), Some("order"));
    assert_eq!(
        refusal.get("aggregate_id"),
        Some(nobody.to_string().as_str())
    );
    assert_eq!(store.calls().1, 1, "the one append, refused");
    assert!(store.state().events.is_empty());
    assert!(store.state().records.is_empty());
}
