//! The event envelope: a [`StoredEvent`] as protobuf, and its ProtoJSON form,
//! which is exactly the `detail` of the published EventBridge entry.

use uuid::Uuid;

use crate::convert::{
    money_from_pb, money_to_pb, order_line_to_pb, order_lines_from_pb, status_from_pb,
    status_to_pb, timestamp_from_pb, timestamp_to_pb,
};
use crate::pb::{self, event_envelope::Payload};
use dynabridge_domain::{AggregateType, Email, Event, OrderId, StoredEvent, UserId, UserName};

/// A stored or published event that this build cannot read.
#[derive(Debug, thiserror::Error)]
#[error("undecodable event: {0}")]
pub struct DecodeError(pub String);

fn bad(what: impl std::fmt::Display) -> DecodeError {
    DecodeError(what.to_string())
}

pub fn payload_of(event: &Event) -> Payload {
    match event {
        Event::UserCreated {
            user_id,
            email,
            name,
        } => Payload::UserCreated(pb::UserCreated {
            user_id: user_id.to_string(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
        }),
        Event::UserProfileUpdated {
            user_id,
            name,
            email,
        } => Payload::UserProfileUpdated(pb::UserProfileUpdated {
            user_id: user_id.to_string(),
            name: name.as_ref().map(|n| n.as_str().to_owned()),
            email: email.as_ref().map(|e| e.as_str().to_owned()),
        }),
        Event::OrderCreated {
            order_id,
            user_id,
            items,
            total,
        } => Payload::OrderCreated(pb::OrderCreated {
            order_id: order_id.to_string(),
            user_id: user_id.to_string(),
            items: items.iter().map(order_line_to_pb).collect(),
            total: Some(money_to_pb(*total)),
        }),
        Event::OrderStatusUpdated {
            order_id,
            status,
            previous_status,
        } => Payload::OrderStatusUpdated(pb::OrderStatusUpdated {
            order_id: order_id.to_string(),
            status: status_to_pb(*status) as i32,
            previous_status: status_to_pb(*previous_status) as i32,
        }),
    }
}

pub fn event_from_payload(payload: &Payload) -> Result<Event, DecodeError> {
    Ok(match payload {
        Payload::UserCreated(pb::UserCreated {
            user_id,
            email,
            name,
        }) => Event::UserCreated {
            user_id: UserId::parse("user_id", user_id).map_err(bad)?,
            email: Email::parse(email).map_err(bad)?,
            name: UserName::parse(name).map_err(bad)?,
        },
        Payload::UserProfileUpdated(pb::UserProfileUpdated {
            user_id,
            name,
            email,
        }) => Event::UserProfileUpdated {
            user_id: UserId::parse("user_id", user_id).map_err(bad)?,
            name: name
                .as_deref()
                .map(UserName::parse)
                .transpose()
                .map_err(bad)?,
            email: email
                .as_deref()
                .map(Email::parse)
                .transpose()
                .map_err(bad)?,
        },
        Payload::OrderCreated(pb::OrderCreated {
            order_id,
            user_id,
            items,
            total,
        }) => Event::OrderCreated {
            order_id: OrderId::parse("order_id", order_id).map_err(bad)?,
            user_id: UserId::parse("user_id", user_id).map_err(bad)?,
            items: order_lines_from_pb(items).map_err(bad)?,
            total: money_from_pb(total.as_ref()).map_err(bad)?,
        },
        Payload::OrderStatusUpdated(pb::OrderStatusUpdated {
            order_id,
            status,
            previous_status,
        }) => Event::OrderStatusUpdated {
            order_id: OrderId::parse("order_id", order_id).map_err(bad)?,
            status: status_from_pb(*status).map_err(bad)?,
            previous_status: status_from_pb(*previous_status).map_err(bad)?,
        },
    })
}

/// The payload alone as ProtoJSON: the event store's `EventData`.
pub fn payload_to_json(payload: &Payload) -> String {
    // Serialising generated messages to a string cannot fail: they hold no
    // maps with non-string keys and no non-finite floats.
    let json = match payload {
        Payload::UserCreated(m) => serde_json::to_string(m),
        Payload::UserProfileUpdated(m) => serde_json::to_string(m),
        Payload::OrderCreated(m) => serde_json::to_string(m),
        Payload::OrderStatusUpdated(m) => serde_json::to_string(m),
    };
    json.unwrap_or_default()
}

/// Reads `EventData` of the given type and schema version.
pub fn payload_from_json(
    event_type: &str,
    schema_version: u32,
    json: &str,
) -> Result<Payload, DecodeError> {
    if schema_version != StoredEvent::CURRENT_SCHEMA_VERSION {
        return Err(bad(format_args!(
            "{event_type} has schema version {schema_version}, this build reads 1"
        )));
    }
    let payload = match event_type {
        "UserCreated" => Payload::UserCreated(serde_json::from_str(json).map_err(bad)?),
        "UserProfileUpdated" => {
            Payload::UserProfileUpdated(serde_json::from_str(json).map_err(bad)?)
        }
        "OrderCreated" => Payload::OrderCreated(serde_json::from_str(json).map_err(bad)?),
        "OrderStatusUpdated" => {
            Payload::OrderStatusUpdated(serde_json::from_str(json).map_err(bad)?)
        }
        other => return Err(bad(format_args!("unknown event type {other:?}"))),
    };
    Ok(payload)
}

pub fn to_envelope(stored: &StoredEvent) -> pb::EventEnvelope {
    let StoredEvent {
        event_id,
        version,
        occurred_at,
        schema_version,
        request_id,
        correlation_id,
        // Not part of the published contract: it travels beside it, as the
        // entry's trace header.
        trace_parent: _,
        event,
    } = stored;
    pb::EventEnvelope {
        event_id: event_id.to_string(),
        aggregate_id: event.aggregate_id().to_string(),
        aggregate_type: event.aggregate_type().as_str().to_owned(),
        event_type: event.event_type().to_owned(),
        version: *version,
        occurred_at: Some(timestamp_to_pb(*occurred_at)),
        schema_version: *schema_version,
        request_id: request_id.clone(),
        correlation_id: correlation_id.clone(),
        replay_id: String::new(),
        payload: Some(payload_of(event)),
    }
}

pub fn from_envelope(envelope: &pb::EventEnvelope) -> Result<StoredEvent, DecodeError> {
    let pb::EventEnvelope {
        event_id,
        aggregate_id,
        aggregate_type,
        event_type,
        version,
        occurred_at,
        schema_version,
        request_id,
        correlation_id,
        // A replay's mark: the event is the original's.
        replay_id: _,
        payload,
    } = envelope;
    let event = event_from_payload(payload.as_ref().ok_or_else(|| bad("no payload"))?)?;
    if event.event_type() != event_type
        || AggregateType::parse(aggregate_type) != Some(event.aggregate_type())
        || event.aggregate_id().to_string() != *aggregate_id
    {
        return Err(bad(format_args!(
            "envelope of {aggregate_type} {aggregate_id} does not match its {event_type} payload"
        )));
    }
    Ok(StoredEvent {
        event_id: Uuid::parse_str(event_id).map_err(bad)?,
        version: *version,
        occurred_at: occurred_at
            .as_ref()
            .and_then(timestamp_from_pb)
            .ok_or_else(|| bad("no occurred_at"))?,
        schema_version: *schema_version,
        request_id: request_id.clone(),
        correlation_id: correlation_id.clone(),
        trace_parent: None,
        event,
    })
}

/// The envelope's ProtoJSON: the EventBridge `detail`.
pub fn envelope_json(stored: &StoredEvent) -> String {
    replayed_envelope_json(stored, None)
}

/// The envelope's ProtoJSON, marked as published again by the replay
/// `replay_id` when there is one.
pub fn replayed_envelope_json(stored: &StoredEvent, replay_id: Option<&str>) -> String {
    let mut envelope = to_envelope(stored);
    if let Some(replay_id) = replay_id {
        envelope.replay_id = replay_id.to_owned();
    }
    // See `payload_to_json` for why serialising cannot fail.
    let mut json = serde_json::to_value(envelope).unwrap_or_default();
    // The ProtoJSON mapping writes timestamps Z-normalised with 0, 3, 6 or 9
    // fractional digits; pbjson-types writes "+00:00", so set it right here.
    if let Some(field) = json.get_mut("occurredAt") {
        *field = serde_json::Value::String(
            stored
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
    }
    json.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use dynabridge_domain::{Money, OrderLine, OrderStatus, Quantity, Sku};

    fn sample_order_created() -> StoredEvent {
        let usd = |n| Money::parse("USD", n).unwrap();
        StoredEvent {
            event_id: Uuid::parse_str("0b4c9f5e-6c8a-4a8e-9d55-3f1f0c1d2e3f").unwrap(),
            version: 1,
            occurred_at: chrono::Utc
                .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
                .unwrap(),
            schema_version: 1,
            request_id: "req-1".into(),
            correlation_id: "corr-1".into(),
            trace_parent: None,
            event: Event::OrderCreated {
                order_id: OrderId::parse("order_id", "7d3e8a3c-1b2a-4c5d-8e9f-0a1b2c3d4e5f")
                    .unwrap(),
                user_id: UserId::parse("user_id", "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d").unwrap(),
                items: vec![OrderLine {
                    sku: Sku::parse("laptop").unwrap(),
                    quantity: Quantity::parse(1).unwrap(),
                    unit_price: usd(99_999),
                }],
                total: usd(99_999),
            },
        }
    }

    /// The published `detail` is a contract: this golden copy changes only
    /// with a new schema version.
    #[test]
    fn envelope_json_matches_the_golden_v1_fixture() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/order_created.v1.json")).unwrap();
        let actual: serde_json::Value =
            serde_json::from_str(&envelope_json(&sample_order_created())).unwrap();
        assert_eq!(actual, golden);
    }

    #[test]
    fn the_golden_v1_fixture_still_decodes() {
        let envelope: pb::EventEnvelope =
            serde_json::from_str(include_str!("../tests/fixtures/order_created.v1.json")).unwrap();
        assert_eq!(from_envelope(&envelope).unwrap(), sample_order_created());
    }

    #[test]
    fn every_event_round_trips_through_the_stored_payload() {
        let stored = sample_order_created();
        let Event::OrderCreated {
            order_id, user_id, ..
        } = stored.event.clone()
        else {
            unreachable!()
        };
        let events = [
            stored.event.clone(),
            Event::OrderStatusUpdated {
                order_id,
                status: OrderStatus::Shipped,
                previous_status: OrderStatus::Processing,
            },
            Event::UserCreated {
                user_id,
                email: Email::parse("ann@example.com").unwrap(),
                name: UserName::parse("Ann").unwrap(),
            },
            Event::UserProfileUpdated {
                user_id,
                name: None,
                email: Some(Email::parse("ann@work.example.com").unwrap()),
            },
        ];
        for event in events {
            let json = payload_to_json(&payload_of(&event));
            let payload = payload_from_json(event.event_type(), 1, &json).unwrap();
            assert_eq!(event_from_payload(&payload).unwrap(), event);
        }
    }

    #[test]
    fn unknown_types_and_schema_versions_are_errors() {
        assert!(payload_from_json("UserDeleted", 1, "{}").is_err());
        assert!(payload_from_json("UserCreated", 2, "{}").is_err());
    }
}
