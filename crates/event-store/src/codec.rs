//! A [`StoredEvent`] as an event store item, and back. The stream's
//! `NEW_IMAGE` is the same item.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use uuid::Uuid;

use dynabridge::convert::{format_time, parse_time};
use dynabridge::envelope::{
    DecodeError, event_from_payload, payload_from_json, payload_of, payload_to_json,
};
use dynabridge::schema::event_store as attr;
use dynabridge_aws::item::{AttributeError, Item, get_n, get_s};
use dynabridge_domain::{AggregateType, StoredEvent};

/// How many buckets the events of one type are spread over in the
/// event-type index. Fixed: a reader queries exactly these, so changing it
/// needs every event's bucket rewritten first, as the migration to the
/// buckets did.
pub const EVENT_TYPE_BUCKETS: u8 = 16;

/// The event-type index's partition key of an event of `event_type` on
/// `aggregate_id`: the type and the aggregate's bucket, `OrderCreated#07`.
/// The bucket is the id's last four bits (random in a v4 or v5 UUID), so an
/// aggregate's events share one bucket and a type's aggregates spread
/// evenly over all of them.
pub fn event_type_bucket(event_type: &str, aggregate_id: Uuid) -> String {
    let bucket = (aggregate_id.as_u128() % u128::from(EVENT_TYPE_BUCKETS)) as u8;
    bucket_key(event_type, bucket)
}

/// Every partition key of the event-type index for `event_type`.
pub fn event_type_buckets(event_type: &str) -> impl Iterator<Item = String> + '_ {
    (0..EVENT_TYPE_BUCKETS).map(move |bucket| bucket_key(event_type, bucket))
}

fn bucket_key(event_type: &str, bucket: u8) -> String {
    format!("{event_type}#{bucket:02}")
}

pub fn event_to_item(stored: &StoredEvent) -> Item {
    let event = &stored.event;
    let mut item = HashMap::from([
        (
            attr::AGGREGATE_ID.into(),
            AttributeValue::S(event.aggregate_id().to_string()),
        ),
        (
            attr::VERSION.into(),
            AttributeValue::N(stored.version.to_string()),
        ),
        (
            attr::EVENT_ID.into(),
            AttributeValue::S(stored.event_id.to_string()),
        ),
        (
            attr::EVENT_TYPE.into(),
            AttributeValue::S(event.event_type().to_owned()),
        ),
        (
            attr::EVENT_TYPE_BUCKET.into(),
            AttributeValue::S(event_type_bucket(event.event_type(), event.aggregate_id())),
        ),
        (
            attr::AGGREGATE_TYPE.into(),
            AttributeValue::S(event.aggregate_type().as_str().to_owned()),
        ),
        (
            attr::TIMESTAMP.into(),
            AttributeValue::S(format_time(stored.occurred_at)),
        ),
        (
            attr::SCHEMA_VERSION.into(),
            AttributeValue::N(event.schema_version().to_string()),
        ),
        (
            attr::EVENT_DATA.into(),
            AttributeValue::S(payload_to_json(&payload_of(event))),
        ),
        (
            attr::COMMAND_ID.into(),
            AttributeValue::S(stored.request_id.clone()),
        ),
        (
            attr::CORRELATION_ID.into(),
            AttributeValue::S(stored.correlation_id.clone()),
        ),
    ]);
    if let Some(trace_parent) = &stored.trace_parent {
        item.insert(
            attr::TRACE_PARENT.into(),
            AttributeValue::S(trace_parent.clone()),
        );
    }
    item
}

/// Reads an event store item of any schema version, in the current shape
/// (older payloads are upcast, see `dynabridge::upcast`).
pub fn event_from_item(item: &Item) -> Result<StoredEvent, DecodeError> {
    let bad = |e: AttributeError| DecodeError(e.0);
    let event_type = get_s(item, attr::EVENT_TYPE).map_err(bad)?;
    let schema_version = u32::try_from(get_n(item, attr::SCHEMA_VERSION).map_err(bad)?)
        .map_err(|_| DecodeError("schema version out of range".into()))?;
    let payload = payload_from_json(
        event_type,
        schema_version,
        get_s(item, attr::EVENT_DATA).map_err(bad)?,
    )?;
    let event = event_from_payload(&payload)?;
    let aggregate_id = get_s(item, attr::AGGREGATE_ID).map_err(bad)?;
    let aggregate_type = get_s(item, attr::AGGREGATE_TYPE).map_err(bad)?;
    if event.aggregate_id().to_string() != aggregate_id
        || AggregateType::parse(aggregate_type) != Some(event.aggregate_type())
    {
        return Err(DecodeError(format!(
            "item {aggregate_type} {aggregate_id} does not match its {event_type} payload"
        )));
    }
    let timestamp = get_s(item, attr::TIMESTAMP).map_err(bad)?;
    Ok(StoredEvent {
        event_id: Uuid::parse_str(get_s(item, attr::EVENT_ID).map_err(bad)?)
            .map_err(|e| DecodeError(e.to_string()))?,
        version: get_n(item, attr::VERSION).map_err(bad)?,
        occurred_at: parse_time(timestamp)
            .ok_or_else(|| DecodeError(format!("bad timestamp {timestamp:?}")))?,
        request_id: get_s(item, attr::COMMAND_ID).map_err(bad)?.to_owned(),
        correlation_id: get_s(item, attr::CORRELATION_ID).map_err(bad)?.to_owned(),
        // Optional: events appended without a trace context, or before it
        // was stored, have none.
        trace_parent: match item.get(attr::TRACE_PARENT) {
            Some(AttributeValue::S(value)) => Some(value.clone()),
            _ => None,
        },
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use dynabridge::golden::{self, FIXTURES};
    use dynabridge_domain::{Email, Event, UserId, UserName};

    /// DynamoDB JSON (`{"Name": {"S": "..."}}`), as `aws dynamodb
    /// get-item` prints an item; only the attribute types events use.
    fn item_from_json(json: &str) -> Item {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).unwrap();
        object
            .into_iter()
            .map(|(name, typed)| {
                let value = match (typed.get("S"), typed.get("N")) {
                    (Some(s), None) => AttributeValue::S(s.as_str().unwrap().to_owned()),
                    (None, Some(n)) => AttributeValue::N(n.as_str().unwrap().to_owned()),
                    _ => panic!("{name}: not S or N: {typed}"),
                };
                (name, value)
            })
            .collect()
    }

    fn item_to_json(item: &Item) -> serde_json::Value {
        let object: serde_json::Map<_, _> = item
            .iter()
            .map(|(name, value)| {
                let typed = match value {
                    AttributeValue::S(s) => serde_json::json!({ "S": s }),
                    AttributeValue::N(n) => serde_json::json!({ "N": n }),
                    other => panic!("{name}: {other:?}"),
                };
                (name.clone(), typed)
            })
            .collect();
        serde_json::Value::Object(object)
    }

    /// Each shape's stored item is a contract: the items already in a
    /// table have it. `DYNABRIDGE_BLESS=1` writes the current shapes' files
    /// when a new version is introduced.
    #[test]
    fn every_current_event_is_stored_as_its_fixture() {
        for stored in golden::current() {
            let name = format!(
                "{}.v{}",
                stored.event.event_type(),
                stored.event.schema_version()
            );
            let actual = item_to_json(&event_to_item(&stored));
            if std::env::var_os("DYNABRIDGE_BLESS").is_some() {
                let path = format!(
                    "{}/../../tests/fixtures/events/{name}.item.json",
                    env!("CARGO_MANIFEST_DIR")
                );
                let sorted: std::collections::BTreeMap<_, _> =
                    actual.as_object().unwrap().clone().into_iter().collect();
                std::fs::write(path, serde_json::to_string_pretty(&sorted).unwrap() + "\n")
                    .unwrap();
                continue;
            }
            let fixture = FIXTURES.iter().find(|f| f.name == name).unwrap();
            let golden: serde_json::Value = item_to_json(&item_from_json(fixture.stored));
            assert_eq!(actual, golden, "{name}");
        }
    }

    /// Every stored shape, older ones included, reads as its event.
    #[test]
    fn every_stored_fixture_decodes_to_its_event() {
        for fixture in FIXTURES {
            let item = item_from_json(fixture.stored);
            let (event_type, version) = fixture.shape();
            assert_eq!(
                item.get(attr::EVENT_TYPE)
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str),
                Some(event_type)
            );
            assert_eq!(
                item.get(attr::SCHEMA_VERSION).and_then(|v| v.as_n().ok()),
                Some(&version.to_string())
            );
            assert_eq!(
                event_from_item(&item).unwrap(),
                fixture.event(),
                "{}",
                fixture.name
            );
        }
    }

    #[test]
    fn items_round_trip() {
        let stored = StoredEvent {
            event_id: Uuid::new_v4(),
            version: 3,
            occurred_at: parse_time(&format_time(Utc::now())).unwrap(),
            request_id: "r".into(),
            correlation_id: "c".into(),
            trace_parent: None,
            event: Event::UserCreated {
                user_id: UserId::new_random(),
                email: Email::parse("x@example.com").unwrap(),
                name: UserName::parse("X").unwrap(),
            },
        };
        let item = event_to_item(&stored);
        assert!(!item.contains_key(attr::TRACE_PARENT));
        assert_eq!(event_from_item(&item).unwrap(), stored);
        let traced = StoredEvent {
            trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..stored
        };
        let item = event_to_item(&traced);
        assert_eq!(
            item.get(attr::TRACE_PARENT).and_then(|v| v.as_s().ok()),
            traced.trace_parent.as_ref()
        );
        assert_eq!(event_from_item(&item).unwrap(), traced);
    }

    #[test]
    fn a_type_spreads_over_every_bucket_and_an_aggregate_stays_in_one() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let id = Uuid::new_v4();
            let bucket = event_type_bucket("OrderCreated", id);
            assert_eq!(bucket, event_type_bucket("OrderCreated", id));
            assert!(event_type_buckets("OrderCreated").any(|b| b == bucket));
            seen.insert(bucket);
        }
        assert_eq!(seen.len(), usize::from(EVENT_TYPE_BUCKETS));
        // The form is fixed: the index's keys are written with it.
        let id = Uuid::parse_str("b360daf6-58d0-5c00-abe3-be1a85ba7096").unwrap();
        assert_eq!(event_type_bucket("UserCreated", id), "UserCreated#06");
        assert_eq!(
            event_type_buckets("X")
                .collect::<Vec<_>>()
                .first()
                .map(String::as_str),
            Some("X#00")
        );
    }

    #[test]
    fn an_item_carries_its_event_type_bucket() {
        let user_id = UserId::new_random();
        let stored = StoredEvent {
            event_id: Uuid::new_v4(),
            version: 1,
            occurred_at: Utc::now(),
            request_id: "r".into(),
            correlation_id: "c".into(),
            trace_parent: None,
            event: Event::UserCreated {
                user_id,
                email: Email::parse("x@example.com").unwrap(),
                name: UserName::parse("X").unwrap(),
            },
        };
        let item = event_to_item(&stored);
        assert_eq!(
            item.get(attr::EVENT_TYPE_BUCKET)
                .and_then(|v| v.as_s().ok()),
            Some(&event_type_bucket("UserCreated", *user_id.as_uuid()))
        );
    }

    #[test]
    fn a_payload_for_another_aggregate_is_rejected() {
        let stored = StoredEvent {
            event_id: Uuid::new_v4(),
            version: 1,
            occurred_at: Utc::now(),
            request_id: "r".into(),
            correlation_id: "c".into(),
            trace_parent: None,
            event: Event::UserCreated {
                user_id: UserId::new_random(),
                email: Email::parse("x@example.com").unwrap(),
                name: UserName::parse("X").unwrap(),
            },
        };
        let mut item = event_to_item(&stored);
        item.insert(
            attr::AGGREGATE_ID.into(),
            AttributeValue::S(Uuid::new_v4().to_string()),
        );
        assert!(event_from_item(&item).is_err());
    }
}
