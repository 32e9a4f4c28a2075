//! Where the store's time goes on a create: parts of `CreateUser`'s real
//! transaction ([`EventStore::transact_items`]), each sent alone from here,
//! and priced by the CPU the store spends on it. The transaction is the one
//! with the idempotency record, as creates were recorded before their first
//! event became their record (`RecordIn::FirstEvent`): the study priced
//! that record, and `Transaction` less it is what a create sends now.
//!
//! The peer writes one item per event, to a table with a stream and no
//! index, after one consistent `Query`; ours writes the event (to a table
//! with a stream and the event-type index), the
//! idempotency record and the email claim. Sending the parts one by one
//! tells how much of the gap each part is.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{ScalarAttributeType, TransactWriteItem};
use dynabridge::schema::{Tables, event_store};

use dynabridge_event_store::{Append, RecordIn};

use crate::ceiling::Storage;
use crate::load::{self, Limits, Outcome, Step};

/// A prefix of `CreateUser`'s transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The event alone, to a copy of the event store table with its stream
    /// and without its index.
    UnindexedEvent,
    /// The event alone, to the event store.
    Event,
    /// The event and the idempotency record.
    EventAndIdempotency,
    /// The whole transaction: the event, the idempotency record and the
    /// email claim (what an append sends alone).
    Transaction,
    /// The whole transactions of [`GROUP`] new users in one
    /// `TransactWriteItems`: what the group commit sends under load.
    Group,
}

/// Creates per transaction in [`Shape::Group`].
pub const GROUP: usize = 8;

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::UnindexedEvent,
        Shape::Event,
        Shape::EventAndIdempotency,
        Shape::Transaction,
        Shape::Group,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Shape::UnindexedEvent => "the event, to a table with a stream and no index",
            Shape::Event => "the event, to the event store (stream and the event-type index)",
            Shape::EventAndIdempotency => "the event and the idempotency record",
            Shape::Transaction => {
                "the event, the idempotency record and the email claim: `CreateUser`'s transaction"
            }
            Shape::Group => {
                "8 creates' transactions in one `TransactWriteItems`, as the group commit sends them under load (per create)"
            }
        }
    }

    /// Creates each call makes.
    pub fn creates(self) -> usize {
        match self {
            Shape::Group => GROUP,
            _ => 1,
        }
    }

    /// How many of the transaction's items it sends.
    pub fn item_count(self) -> usize {
        match self {
            Shape::UnindexedEvent | Shape::Event => 1,
            Shape::EventAndIdempotency => 2,
            Shape::Transaction => 3,
            Shape::Group => 3 * GROUP,
        }
    }
}

/// The copy of the event store without its index: the same key, a stream,
/// nothing else. Created if missing.
pub async fn unindexed_table(client: &Client, tables: &Tables) -> anyhow::Result<String> {
    let table = format!("{}-unindexed", tables.event_store());
    crate::peer::create_table(
        client,
        &table,
        &[
            (event_store::AGGREGATE_ID, ScalarAttributeType::S),
            (event_store::VERSION, ScalarAttributeType::N),
        ],
        true,
    )
    .await?;
    crate::peer::wait_active(client, &table).await?;
    Ok(table)
}

/// `CreateUser`'s transaction for a new user, with its idempotency record.
fn create_user_append() -> Result<(dynabridge_domain::UserId, Append), String> {
    let (user_id, append) = crate::ceiling::create_user_append()?;
    Ok((
        user_id,
        Append {
            record: RecordIn::IdempotencyTable,
            ..append
        },
    ))
}

/// `CreateUser`'s transaction for a new user, cut to `shape`.
fn items(
    storage: &Storage,
    shape: Shape,
    unindexed: &str,
) -> Result<Vec<TransactWriteItem>, String> {
    if shape == Shape::Group {
        let mut items = Vec::new();
        for _ in 0..GROUP {
            let (_, append) = create_user_append()?;
            items.extend(
                storage
                    .store()
                    .transact_items(&append)
                    .map_err(|e| e.to_string())?,
            );
        }
        return Ok(items);
    }
    let (_, append) = create_user_append()?;
    let mut items = storage
        .store()
        .transact_items(&append)
        .map_err(|e| e.to_string())?;
    if items.len() < shape.item_count() {
        return Err(format!(
            "CreateUser's transaction has {} items, not {}",
            items.len(),
            shape.item_count()
        ));
    }
    items.truncate(shape.item_count());
    if shape == Shape::UnindexedEvent {
        let put = items[0]
            .put
            .as_mut()
            .ok_or("the transaction's first item is not the event's put")?;
        put.table_name = unindexed.to_owned();
    }
    Ok(items)
}

/// Sends `shape` for new users, closed loop.
pub async fn run(storage: &Storage, shape: Shape, unindexed: &str, limits: Limits) -> Outcome {
    let storage = storage.clone();
    let unindexed = unindexed.to_owned();
    load::closed_loop(limits, move |_, _| {
        let items = items(&storage, shape, &unindexed);
        let client = storage.store().client().clone();
        async move {
            client
                .transact_write_items()
                .set_transact_items(Some(items?))
                .send()
                .await
                .map_err(|e| format!("{:?}", aws_sdk_dynamodb::Error::from(e)))?;
            Ok(Step::Done)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> Storage {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        Storage::new(Client::from_conf(config), Tables::new("t"))
    }

    fn tables_of(items: &[TransactWriteItem]) -> Vec<String> {
        items
            .iter()
            .map(|item| match (&item.put, &item.condition_check) {
                (Some(put), _) => put.table_name.clone(),
                (None, Some(check)) => check.table_name.clone(),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn each_shape_is_a_prefix_of_the_real_transaction() {
        let storage = storage();
        let t = Tables::new("t");
        let cases = [
            (Shape::UnindexedEvent, vec!["copy".to_owned()]),
            (Shape::Event, vec![t.event_store()]),
            (
                Shape::EventAndIdempotency,
                vec![t.event_store(), t.idempotency()],
            ),
            (
                Shape::Transaction,
                vec![t.event_store(), t.idempotency(), t.unique_emails()],
            ),
            (
                Shape::Group,
                std::iter::repeat_n([t.event_store(), t.idempotency(), t.unique_emails()], GROUP)
                    .flatten()
                    .collect(),
            ),
        ];
        for (shape, tables) in cases {
            let items = items(&storage, shape, "copy").unwrap();
            assert_eq!(tables_of(&items), tables, "{shape:?}");
        }
    }

    #[test]
    fn the_unindexed_event_is_the_event_item_itself() {
        let storage = storage();
        let moved = items(&storage, Shape::UnindexedEvent, "copy").unwrap();
        let put = moved[0].put.as_ref().unwrap();
        // The same attributes as an event in the event store.
        for name in [
            event_store::AGGREGATE_ID,
            event_store::VERSION,
            event_store::EVENT_TYPE,
            event_store::TIMESTAMP,
            event_store::EVENT_DATA,
        ] {
            assert!(put.item.contains_key(name), "{name} missing");
        }
        assert_eq!(
            put.condition_expression.as_deref(),
            Some("attribute_not_exists(#id)")
        );
    }
}
