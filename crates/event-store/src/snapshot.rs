//! Snapshots: an aggregate's folded state at a version, so that loading an
//! aggregate with thousands of events reads the latest snapshot and the
//! events after it instead of all of them.
//!
//! A snapshot is a cache of a fold, never a source of truth. It is written
//! outside the append's transaction (after it, in the background), so it
//! never slows or fails a command; it is only ever written from a state the
//! store confirmed (read from it, or just appended to it), so it is never
//! ahead of the events; and it is read only if everything about it checks
//! out (its aggregate type, its shape's version, its id, a state that
//! parses into the domain's types). Anything else is ignored and the
//! aggregate is folded from its first event, as without snapshots.
//!
//! Which aggregates take snapshots, and how their state is written, is
//! declared per aggregate by [`Snapshots`]; the command path calls it
//! without naming any.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use dynabridge::convert::format_time;
use dynabridge::schema::snapshots as attr;
use dynabridge_aws::item::{Item, get_n, get_s};
use dynabridge_domain::{
    Aggregate, Money, Order, Product, ProductId, ProductName, ProductState, Purchase, Route, Sku,
    StockLevel, User, Version,
};

use crate::{CommandStore, EventStore, StoreError};

/// How an aggregate is snapshotted: how often, and its state's shape.
pub trait Snapshots: Aggregate {
    /// A snapshot every this many events; `None`: never.
    const EVERY: Option<Version>;
    /// The version of the state's shape; a snapshot of another is ignored.
    const SCHEMA_VERSION: u32 = 1;

    /// The state as stored; `None` when there is nothing to keep.
    fn encode(&self) -> Option<String>;

    /// The state a stored snapshot holds, at `version`, if it parses and
    /// is aggregate `id`'s.
    fn decode(id: Uuid, version: Version, state: &str) -> Option<Self>;
}

/// Aggregates with few events each: always folded from the first.
macro_rules! never_snapshotted {
    ($($aggregate:ty),*) => {$(
        impl Snapshots for $aggregate {
            const EVERY: Option<Version> = None;
            fn encode(&self) -> Option<String> {
                None
            }
            fn decode(_: Uuid, _: Version, _: &str) -> Option<Self> {
                None
            }
        }
    )*};
}

never_snapshotted!(User, Order, Purchase, Route);

/// A product's state, schema version 1.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProductV1 {
    product_id: Uuid,
    sku: String,
    name: String,
    currency_code: String,
    unit_price_minor: i64,
    stock: i64,
    reserved: i64,
    reorder_level: i64,
}

impl Snapshots for Product {
    /// A popular product takes a reservation per purchase: thousands of
    /// events. Loading one reads at most 99 events after its snapshot.
    const EVERY: Option<Version> = Some(100);

    fn encode(&self) -> Option<String> {
        let state = self.state.as_ref()?;
        let stored = ProductV1 {
            product_id: *state.id.as_uuid(),
            sku: state.sku.as_str().to_owned(),
            name: state.name.as_str().to_owned(),
            currency_code: state.unit_price.currency.as_str().to_owned(),
            unit_price_minor: state.unit_price.amount_minor,
            stock: state.stock.get(),
            reserved: state.reserved.get(),
            reorder_level: state.reorder_level.get(),
        };
        serde_json::to_string(&stored).ok()
    }

    fn decode(id: Uuid, version: Version, state: &str) -> Option<Self> {
        let stored: ProductV1 = serde_json::from_str(state).ok()?;
        let sku = Sku::parse(&stored.sku).ok()?;
        let product_id = ProductId::from_uuid(stored.product_id);
        if product_id.as_uuid() != &id || ProductId::for_sku(&sku) != product_id || version < 1 {
            return None;
        }
        Some(Product {
            state: Some(ProductState {
                id: product_id,
                sku,
                name: ProductName::parse(&stored.name).ok()?,
                unit_price: Money::parse(&stored.currency_code, stored.unit_price_minor).ok()?,
                stock: StockLevel::parse(stored.stock).ok()?,
                reserved: StockLevel::parse(stored.reserved).ok()?,
                reorder_level: StockLevel::parse(stored.reorder_level).ok()?,
            }),
            version,
        })
    }
}

/// A snapshot as stored, not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    pub version: Version,
    pub schema_version: u32,
    pub state: String,
    pub taken_at: DateTime<Utc>,
}

impl StoredSnapshot {
    /// `aggregate`'s snapshot, if it takes them and has a state.
    pub fn of<A: Snapshots>(id: Uuid, aggregate: &A, now: DateTime<Utc>) -> Option<Self> {
        A::EVERY?;
        Some(Self {
            aggregate_id: id,
            aggregate_type: A::TYPE.as_str().to_owned(),
            version: aggregate.version(),
            schema_version: A::SCHEMA_VERSION,
            state: aggregate.encode()?,
            taken_at: now,
        })
    }

    /// The state it holds, if it is one this build trusts for `A` `id`.
    pub fn read<A: Snapshots>(&self, id: Uuid) -> Option<A> {
        if self.aggregate_id != id
            || self.aggregate_type != A::TYPE.as_str()
            || self.schema_version != A::SCHEMA_VERSION
        {
            return None;
        }
        let aggregate = A::decode(id, self.version, &self.state)?;
        (aggregate.version() == self.version).then_some(aggregate)
    }

    fn to_item(&self) -> Item {
        HashMap::from([
            (
                attr::AGGREGATE_ID.into(),
                AttributeValue::S(self.aggregate_id.to_string()),
            ),
            (
                attr::AGGREGATE_TYPE.into(),
                AttributeValue::S(self.aggregate_type.clone()),
            ),
            (
                attr::VERSION.into(),
                AttributeValue::N(self.version.to_string()),
            ),
            (
                attr::SCHEMA_VERSION.into(),
                AttributeValue::N(self.schema_version.to_string()),
            ),
            (attr::STATE.into(), AttributeValue::S(self.state.clone())),
            (
                attr::TAKEN_AT.into(),
                AttributeValue::S(format_time(self.taken_at)),
            ),
        ])
    }

    fn from_item(item: &Item) -> Option<Self> {
        Some(Self {
            aggregate_id: Uuid::parse_str(get_s(item, attr::AGGREGATE_ID).ok()?).ok()?,
            aggregate_type: get_s(item, attr::AGGREGATE_TYPE).ok()?.to_owned(),
            version: get_n(item, attr::VERSION).ok()?,
            schema_version: u32::try_from(get_n(item, attr::SCHEMA_VERSION).ok()?).ok()?,
            state: get_s(item, attr::STATE).ok()?.to_owned(),
            taken_at: dynabridge::convert::parse_time(get_s(item, attr::TAKEN_AT).ok()?)?,
        })
    }
}

/// Whether a snapshot at version `now` is due, the latest being at
/// `since` (0: none): `every` events or more came after it.
pub fn due(every: Version, since: Version, now: Version) -> bool {
    every > 0 && now - since >= every
}

/// Whether an append that took an aggregate from version `before` to
/// `after` passed a multiple of `every`: a snapshot at `after` is due.
pub fn crossed(every: Version, before: Version, after: Version) -> bool {
    every > 0 && after / every > before / every
}

/// An aggregate as loaded: its state, and how.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    pub aggregate: A,
    /// The version of the snapshot it started from; 0 when none.
    pub snapshot_version: Version,
    /// How many events were read and folded.
    pub events_read: usize,
}

impl<A: Snapshots> Loaded<A> {
    /// A snapshot of the state loaded, if one is due: it took no snapshot,
    /// or folded [`Snapshots::EVERY`] events or more after one.
    pub fn snapshot_due(&self, id: Uuid, now: DateTime<Utc>) -> Option<StoredSnapshot> {
        let every = A::EVERY?;
        due(every, self.snapshot_version, self.aggregate.version())
            .then(|| StoredSnapshot::of(id, &self.aggregate, now))
            .flatten()
    }
}

/// Loads aggregate `id`: from its latest snapshot, when it takes them and
/// one is trusted (see the module docs), and the events after it; else
/// from its first event. Events of another aggregate type under this id
/// mean the aggregate asked for does not exist. A snapshot that cannot be
/// read (the table unreachable, say) is no error: the events are.
pub async fn load_aggregate<S: CommandStore, A: Snapshots>(
    store: &S,
    id: Uuid,
) -> Result<Loaded<A>, StoreError> {
    let key = id.to_string();
    let mut start = None;
    if A::EVERY.is_some() {
        match store.snapshot(&key).await {
            Ok(Some(snapshot)) => {
                start = snapshot.read::<A>(id);
                if start.is_none() {
                    tracing::info!(
                        aggregate_id = %id,
                        schema_version = snapshot.schema_version,
                        "snapshot not trusted; folding every event"
                    );
                }
            }
            Ok(None) => {}
            Err(err) => tracing::debug!(aggregate_id = %id, error = %err, "snapshot not read"),
        }
    }
    let (aggregate, events) = match start {
        Some(snapshot) => {
            let events = store.load_after(&key, snapshot.version()).await?;
            (snapshot, events)
        }
        None => {
            let events = store.load(&key).await?;
            if events
                .first()
                .is_some_and(|e| e.event.aggregate_type() != A::TYPE)
            {
                return Ok(Loaded {
                    aggregate: A::default(),
                    snapshot_version: 0,
                    events_read: events.len(),
                });
            }
            (A::default(), events)
        }
    };
    let snapshot_version = aggregate.version();
    let aggregate = events.iter().fold(aggregate, |agg, e| agg.apply(&e.event));
    Ok(Loaded {
        aggregate,
        snapshot_version,
        events_read: events.len(),
    })
}

impl EventStore {
    /// The latest snapshot of `aggregate_id`, if any: an eventually
    /// consistent read, as a snapshot only ever moves forward and the
    /// events after whichever one it returns are read consistently.
    pub async fn snapshot(&self, aggregate_id: &str) -> Result<Option<StoredSnapshot>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.tables().snapshots())
            .key(
                attr::AGGREGATE_ID,
                AttributeValue::S(aggregate_id.to_owned()),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| StoreError::call("reading a snapshot", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let snapshot = StoredSnapshot::from_item(&item);
        if snapshot.is_none() {
            tracing::warn!(aggregate_id, "unreadable snapshot ignored");
        }
        Ok(snapshot)
    }

    /// Stores `snapshot` unless one as recent is there already.
    pub async fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        let written = self
            .client()
            .put_item()
            .table_name(self.tables().snapshots())
            .set_item(Some(snapshot.to_item()))
            .condition_expression("attribute_not_exists(#id) OR #v < :v OR #s <> :s")
            .expression_attribute_names("#id", attr::AGGREGATE_ID)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#s", attr::SCHEMA_VERSION)
            .expression_attribute_values(":v", AttributeValue::N(snapshot.version.to_string()))
            .expression_attribute_values(
                ":s",
                AttributeValue::N(snapshot.schema_version.to_string()),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(StoreError::call("writing a snapshot", err)),
        }
    }

    /// The events of `aggregate_id` after version `after`, read
    /// consistently.
    pub async fn load_after(
        &self,
        aggregate_id: &str,
        after: Version,
    ) -> Result<Vec<dynabridge_domain::StoredEvent>, StoreError> {
        crate::read_events(
            self.client(),
            &self.tables().event_store(),
            aggregate_id,
            after + 1,
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynabridge_domain::{Event, ProductCommand, PurchaseId, Quantity};
    use proptest::prelude::*;

    fn sku() -> Sku {
        Sku::parse("MUG-1").unwrap()
    }

    fn command() -> impl Strategy<Value = ProductCommand> {
        let quantity = (1i64..50).prop_map(|n| Quantity::parse(n).unwrap());
        prop_oneof![
            quantity
                .clone()
                .prop_map(|quantity| ProductCommand::Restock {
                    sku: sku(),
                    quantity
                }),
            (0i64..5000).prop_map(|minor| ProductCommand::ChangePrice {
                sku: sku(),
                unit_price: Money::parse("EUR", minor).unwrap(),
            }),
            quantity
                .clone()
                .prop_map(|quantity| ProductCommand::Reserve {
                    sku: sku(),
                    purchase_id: PurchaseId::new_random(),
                    quantity,
                }),
            quantity.prop_map(|quantity| ProductCommand::Release {
                sku: sku(),
                purchase_id: PurchaseId::new_random(),
                quantity,
            }),
        ]
    }

    /// The events a history of commands appends, from a create.
    fn history(initial: i64, commands: &[ProductCommand]) -> Vec<Event> {
        let create = ProductCommand::Create {
            sku: sku(),
            name: ProductName::parse("Mug").unwrap(),
            unit_price: Money::parse("EUR", 900).unwrap(),
            initial_stock: StockLevel::parse(initial).unwrap(),
            reorder_level: StockLevel::parse(3).unwrap(),
        };
        let mut product = Product::default();
        let mut events = Vec::new();
        for command in std::iter::once(&create).chain(commands) {
            if let Ok(decided) = product.decide(command) {
                for event in decided {
                    product = product.apply(&event);
                    events.push(event);
                }
            }
        }
        events
    }

    fn fold(from: Product, events: &[Event]) -> Product {
        events.iter().fold(from, |p, e| p.apply(e))
    }

    proptest! {
        /// For any history and any point in it, the state from a snapshot
        /// taken there plus the events after it is the state from all of
        /// them.
        #[test]
        fn snapshot_plus_tail_is_the_full_fold(
            initial in 0i64..100,
            commands in proptest::collection::vec(command(), 0..120),
            cut in any::<proptest::sample::Index>(),
        ) {
            let events = history(initial, &commands);
            let full = fold(Product::default(), &events);
            let at = cut.index(events.len()) + 1;
            let head = fold(Product::default(), &events[..at]);
            let id = *ProductId::for_sku(&sku()).as_uuid();
            let snapshot = StoredSnapshot::of(id, &head, Utc::now()).unwrap();
            prop_assert_eq!(snapshot.version, at as Version);
            let stored = StoredSnapshot::from_item(&snapshot.to_item()).unwrap();
            let restored: Product = stored.read(id).unwrap();
            prop_assert_eq!(&restored, &head);
            prop_assert_eq!(fold(restored, &events[at..]), full);
        }
    }

    fn a_snapshot() -> (Uuid, StoredSnapshot) {
        let events = history(10, &[]);
        let product = fold(Product::default(), &events);
        let id = *ProductId::for_sku(&sku()).as_uuid();
        (id, StoredSnapshot::of(id, &product, Utc::now()).unwrap())
    }

    #[test]
    fn a_snapshot_of_another_shape_type_or_aggregate_is_not_trusted() {
        let (id, good) = a_snapshot();
        assert!(good.read::<Product>(id).is_some());
        let old_shape = StoredSnapshot {
            schema_version: 0,
            ..good.clone()
        };
        assert!(old_shape.read::<Product>(id).is_none());
        let other_type = StoredSnapshot {
            aggregate_type: "Order".into(),
            ..good.clone()
        };
        assert!(other_type.read::<Product>(id).is_none());
        assert!(good.read::<Product>(Uuid::new_v4()).is_none());
        // A state with a field this shape does not have, or out of range.
        let extra = StoredSnapshot {
            state: good.state.replace("\"stock\"", "\"extra\":1,\"stock\""),
            ..good.clone()
        };
        assert!(extra.read::<Product>(id).is_none());
        let negative = StoredSnapshot {
            state: good.state.replace("\"stock\":10", "\"stock\":-1"),
            ..good.clone()
        };
        assert!(good.state.contains("\"stock\":10"));
        assert!(negative.read::<Product>(id).is_none());
        // Users and orders take none.
        assert!(StoredSnapshot::of(id, &User::default(), Utc::now()).is_none());
    }

    #[test]
    fn a_snapshot_is_due_every_n_events() {
        assert!(!due(100, 0, 99));
        assert!(due(100, 0, 100));
        assert!(!due(100, 100, 150));
        assert!(due(100, 100, 230));
        assert!(!due(0, 0, 1000));
        assert!(crossed(100, 99, 100));
        assert!(crossed(100, 98, 101));
        assert!(!crossed(100, 100, 199));
        assert!(!crossed(0, 0, 1000));
    }
}
