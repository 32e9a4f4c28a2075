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
use std::fmt;
use std::sync::Arc;

use prometheus::{IntCounter, Registry};
use quick_cache::sync::{Cache, DefaultLifecycle, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, UnitWeighter};
use uuid::Uuid;

use dynabridge_domain::{Aggregate, Version};

/// Folded aggregates by id, bounded: a concurrent cache (quick_cache's
/// CLOCK-PRO, sharded) that evicts what is least likely to be used again,
/// without one lock every command takes.
pub struct AggregateCache {
    /// `None` when the capacity is 0: nothing is kept.
    entries: Option<Cache<Uuid, Slot>>,
    capacity: usize,
    metrics: AggregateCacheMetrics,
}

impl AggregateCache {
    /// Aggregates a command service keeps unless configured otherwise: a
    /// few kilobytes each at most.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// The share of the capacity for aggregates used more than once; the
    /// rest is a trial ring where a new aggregate stays until it is used
    /// again or pushed out by newer ones.
    const HOT_ALLOCATION: f64 = 0.5;

    /// A cache of at most `capacity` aggregates; 0 keeps none.
    pub fn new(capacity: usize, metrics: AggregateCacheMetrics) -> Self {
        Self {
            entries: (capacity > 0).then(|| {
                Cache::with_options(
                    OptionsBuilder::new()
                        .estimated_items_capacity(capacity)
                        .weight_capacity(capacity as u64)
                        .hot_allocation(Self::HOT_ALLOCATION)
                        .build()
                        .expect("a positive capacity and an allocation within [0, 1]"),
                    UnitWeighter,
                    DefaultHashBuilder::default(),
                    DefaultLifecycle::default(),
                )
            }),
            capacity,
            metrics,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
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
        let slot = self.entries.as_ref().and_then(|entries| entries.get(&id));
        match slot.and_then(|slot| slot.state.downcast::<A>().ok()) {
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
        let Some(entries) = &self.entries else { return };
        if version == 0 {
            return;
        }
        let slot = Slot {
            version,
            state: Arc::new(aggregate),
        };
        // The check of the cached version and the replacement are one step
        // under the key's shard lock.
        let mut slot = Some(slot);
        let outcome = entries.entry(&id, None, |_, cached| {
            if cached.version <= version
                && let Some(slot) = slot.take()
            {
                *cached = slot;
            }
            EntryAction::Retain(())
        });
        if let EntryResult::Vacant(placeholder) = outcome
            && let Some(slot) = slot
        {
            // A plain insert, not through the placeholder: it makes room by
            // evicting, where a placeholder's value would enter the trial
            // ring last and be the first pushed out. Between the two steps
            // another task may have cached this id: the later write wins,
            // which may leave a state behind the store, never one ahead of
            // it, and the append finds the first out.
            drop(placeholder);
            entries.insert(id, slot);
        }
    }

    /// Drops the entry of `id` if it is at `version` or before: the store is
    /// known or suspected to be past it.
    pub fn forget(&self, id: Uuid, version: Version) {
        if let Some(entries) = &self.entries {
            entries.remove_if(&id, |slot| slot.version <= version);
        }
    }
}

impl fmt::Debug for AggregateCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
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
/// cache serves every aggregate type, with the version it is at.
#[derive(Clone)]
struct Slot {
    version: Version,
    state: Arc<dyn Any + Send + Sync>,
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
    fn holds_at_most_its_capacity_and_keeps_an_aggregate_in_use_through_a_scan() {
        let cache = cache(10);
        let hot = Uuid::new_v4();
        cache.insert(hot, user(hot, 1));
        assert!(cache.get::<User>(hot).is_some());
        // A burst of aggregates used once each (a bulk import, say) does not
        // push out the one that commands keep coming back to: what a plain
        // LRU would do.
        for _ in 0..100 {
            let id = Uuid::new_v4();
            cache.insert(id, user(id, 1));
            assert!(cache.len() <= 10, "{} entries", cache.len());
        }
        assert_eq!(cache.len(), 10);
        assert!(
            cache.get::<User>(hot).is_some(),
            "the hot aggregate is kept"
        );
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
