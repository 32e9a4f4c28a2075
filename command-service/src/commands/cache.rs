//! A bounded in-process cache of folded aggregates (Equinox's "cached
//! Tip"), so that a command on an aggregate this process wrote or read
//! recently is one DynamoDB call, the `TransactWriteItems`, instead of a
//! consistent `Query` of its history and then the transaction.
//!
//! A cached aggregate is only a guess. Other replicas append to the same
//! aggregates, so an entry may be behind the store; it is never ahead, since
//! only states read from the store or confirmed by an append go in. The
//! append validates the guess: its events take the versions right after the
//! cached one and the transaction fails if one of them exists. Whatever a
//! guess does not get confirmed that way (a failed condition, a refusal, a
//! command with nothing to do) [`crate::commands::CommandHandler`] decides
//! again from the store.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::{IntCounter, Registry};
use uuid::Uuid;

use dynabridge_domain::{Aggregate, Version};

/// Folded aggregates by id, the least recently used evicted first.
pub struct AggregateCache {
    entries: Mutex<Lru>,
    metrics: AggregateCacheMetrics,
}

impl AggregateCache {
    /// Aggregates a command service keeps unless configured otherwise: a
    /// few kilobytes each at most.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A cache of at most `capacity` aggregates; 0 keeps none.
    pub fn new(capacity: usize, metrics: AggregateCacheMetrics) -> Self {
        Self {
            entries: Mutex::new(Lru::new(capacity)),
            metrics,
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries().capacity
    }

    pub fn len(&self) -> usize {
        self.entries().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn metrics(&self) -> &AggregateCacheMetrics {
        &self.metrics
    }

    /// The cached aggregate `id`, counted as a hit, or `None`, counted as a
    /// miss (also when `id` holds an aggregate of another type).
    pub fn get<A: Aggregate>(&self, id: Uuid) -> Option<A> {
        // Only the `Arc` is cloned under the lock.
        let state = self.entries().get(id);
        match state.and_then(|state| state.downcast::<A>().ok()) {
            Some(aggregate) => {
                self.metrics.hits.inc();
                Some(Arc::unwrap_or_clone(aggregate))
            }
            None => {
                self.metrics.misses.inc();
                None
            }
        }
    }

    /// Keeps `aggregate` as the state of `id`, unless the cache holds a
    /// later version already (a concurrent command of this process got
    /// further). An aggregate at version 0 does not exist and is not kept.
    pub fn insert<A: Aggregate>(&self, id: Uuid, aggregate: A) {
        let version = aggregate.version();
        if version == 0 {
            return;
        }
        self.entries().insert(id, version, Arc::new(aggregate));
    }

    /// Drops the entry of `id` if it is at `version` or before: the store is
    /// known or suspected to be past it.
    pub fn forget(&self, id: Uuid, version: Version) {
        self.entries().remove_up_to(id, version);
    }

    fn entries(&self) -> MutexGuard<'_, Lru> {
        // Every operation leaves the map consistent before anything that can
        // panic, and every entry is a state the store had: a poisoned lock
        // holds nothing wrong.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for AggregateCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries();
        f.debug_struct("AggregateCache")
            .field("capacity", &entries.capacity)
            .field("len", &entries.slots.len())
            .finish()
    }
}

/// How the cache is doing. The counters work unregistered too, so that
/// tests can read them without a registry.
#[derive(Clone, Debug)]
pub struct AggregateCacheMetrics {
    /// Commands decided first from a cached aggregate.
    pub hits: IntCounter,
    /// Commands on an existing aggregate that found nothing cached and read
    /// it from the store.
    pub misses: IntCounter,
    /// Cached aggregates found behind the store, then read again.
    pub stale: IntCounter,
}

impl AggregateCacheMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            hits: IntCounter::new(
                "dynabridge_aggregate_cache_hits_total",
                "Commands decided first from a cached aggregate, without reading the event store",
            )?,
            misses: IntCounter::new(
                "dynabridge_aggregate_cache_misses_total",
                "Commands on an existing aggregate that found it not cached and read it from the event store",
            )?,
            stale: IntCounter::new(
                "dynabridge_aggregate_cache_stale_total",
                "Cached aggregates found behind the event store (another writer appended), then read again",
            )?,
        })
    }

    /// Registers every counter with `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.hits.clone()))?;
        registry.register(Box::new(self.misses.clone()))?;
        registry.register(Box::new(self.stale.clone()))?;
        Ok(())
    }
}

/// A cached aggregate: a `User` or an `Order`, behind `Any` so that one
/// cache serves every aggregate type.
type State = Arc<dyn Any + Send + Sync>;

struct Slot {
    version: Version,
    state: State,
    /// When it was last used: its key in [`Lru::by_use`].
    used: u64,
}

/// A map bounded to `capacity` entries that evicts the least recently used.
/// Every operation is O(log n).
struct Lru {
    capacity: usize,
    slots: HashMap<Uuid, Slot>,
    /// Ids by last use, oldest first.
    by_use: BTreeMap<u64, Uuid>,
    clock: u64,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn get(&mut self, id: Uuid) -> Option<State> {
        let now = self.tick();
        let slot = self.slots.get_mut(&id)?;
        self.by_use.remove(&slot.used);
        self.by_use.insert(now, id);
        slot.used = now;
        Some(slot.state.clone())
    }

    fn insert(&mut self, id: Uuid, version: Version, state: State) {
        if self.capacity == 0 {
            return;
        }
        let now = self.tick();
        match self.slots.get_mut(&id) {
            Some(slot) if slot.version > version => {}
            Some(slot) => {
                self.by_use.remove(&slot.used);
                self.by_use.insert(now, id);
                *slot = Slot {
                    version,
                    state,
                    used: now,
                };
            }
            None => {
                if self.slots.len() >= self.capacity
                    && let Some((_, oldest)) = self.by_use.pop_first()
                {
                    self.slots.remove(&oldest);
                }
                self.by_use.insert(now, id);
                self.slots.insert(
                    id,
                    Slot {
                        version,
                        state,
                        used: now,
                    },
                );
            }
        }
    }

    fn remove_up_to(&mut self, id: Uuid, version: Version) {
        if let Some(slot) = self.slots.get(&id)
            && slot.version <= version
        {
            self.by_use.remove(&slot.used);
            self.slots.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynabridge_domain::{Email, Event, Order, User, UserId, UserName};

    fn cache(capacity: usize) -> AggregateCache {
        AggregateCache::new(capacity, AggregateCacheMetrics::new().unwrap())
    }

    /// A user at `version` (`version` events: created, then renamed).
    fn user(id: Uuid, version: Version) -> User {
        let user_id = UserId::from_uuid(id);
        let mut user = User::default().apply(&Event::UserCreated {
            user_id,
            email: Email::parse("a@example.com").unwrap(),
            name: UserName::parse("v1").unwrap(),
        });
        for v in 2..=version {
            user = user.apply(&Event::UserProfileUpdated {
                user_id,
                name: Some(UserName::parse(&format!("v{v}")).unwrap()),
                email: None,
            });
        }
        user
    }

    fn name(user: &User) -> String {
        user.state.as_ref().unwrap().name.as_str().to_owned()
    }

    #[test]
    fn holds_at_most_its_capacity_and_evicts_the_least_recently_used() {
        let cache = cache(3);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for id in &ids[..3] {
            cache.insert(*id, user(*id, 1));
        }
        // Using the oldest makes the second one the least recently used.
        assert!(cache.get::<User>(ids[0]).is_some());
        cache.insert(ids[3], user(ids[3], 1));

        assert_eq!(cache.len(), 3);
        assert!(cache.get::<User>(ids[1]).is_none(), "evicted");
        for id in [ids[0], ids[2], ids[3]] {
            assert!(cache.get::<User>(id).is_some(), "{id} kept");
        }
        for _ in 0..100 {
            let id = Uuid::new_v4();
            cache.insert(id, user(id, 1));
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_later_version_replaces_an_entry_and_an_earlier_one_does_not() {
        let cache = cache(2);
        let id = Uuid::new_v4();
        cache.insert(id, user(id, 2));
        cache.insert(id, user(id, 3));
        assert_eq!(name(&cache.get::<User>(id).unwrap()), "v3");
        cache.insert(id, user(id, 1));
        assert_eq!(cache.get::<User>(id).unwrap().version, 3);
        assert_eq!(cache.len(), 1, "a replaced entry is not a second one");
    }

    #[test]
    fn forgetting_drops_an_entry_at_or_before_the_version_only() {
        let cache = cache(2);
        let id = Uuid::new_v4();
        cache.insert(id, user(id, 3));
        cache.forget(id, 2);
        assert!(cache.get::<User>(id).is_some(), "a later state is kept");
        cache.forget(id, 3);
        assert!(cache.get::<User>(id).is_none());
        assert!(cache.is_empty());
        // The freed place is reused without evicting anything.
        let others = [Uuid::new_v4(), Uuid::new_v4()];
        for other in others {
            cache.insert(other, user(other, 1));
        }
        assert!(others.iter().all(|o| cache.get::<User>(*o).is_some()));
    }

    #[test]
    fn an_aggregate_of_another_type_or_not_created_is_a_miss() {
        let cache = cache(4);
        let id = Uuid::new_v4();
        cache.insert(id, user(id, 1));
        assert!(cache.get::<Order>(id).is_none());
        let order_id = Uuid::new_v4();
        cache.insert(order_id, Order::default());
        assert!(
            cache.get::<Order>(order_id).is_none(),
            "version 0 is not kept"
        );

        let metrics = cache.metrics();
        assert_eq!((metrics.hits.get(), metrics.misses.get()), (0, 2));
        assert!(cache.get::<User>(id).is_some());
        assert_eq!(metrics.hits.get(), 1);
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = cache(0);
        let id = Uuid::new_v4();
        cache.insert(id, user(id, 1));
        assert!(cache.is_empty());
        assert!(cache.get::<User>(id).is_none());
    }

    #[test]
    fn the_metrics_register_under_their_names() {
        let registry = Registry::new();
        let cache = cache(1);
        cache.metrics().register(&registry).unwrap();
        cache.get::<User>(Uuid::new_v4());
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "dynabridge_aggregate_cache_hits_total",
                "dynabridge_aggregate_cache_misses_total",
                "dynabridge_aggregate_cache_stale_total",
            ]
        );
    }
}
