//! The event envelope: a [`StoredEvent`] as protobuf, and its ProtoJSON form,
//! which is exactly the `detail` of the published EventBridge entry.

use uuid::Uuid;

use crate::convert::{
    address_from_pb, address_to_pb, money_from_pb, money_to_pb, order_line_to_pb,
    order_lines_from_pb, purchase_item_to_pb, purchase_items_from_pb, rejection_from_pb,
    rejection_to_pb, route_stop_to_pb, route_stops_from_pb, status_from_pb, status_to_pb,
    timestamp_from_pb, timestamp_to_pb,
};
use crate::pb::{self, event_envelope::Payload};
use dynabridge_domain::{
    AggregateType, Distance, Email, Event, OrderId, ProductId, ProductName, PurchaseId, Quantity,
    RouteId, Sku, StockLevel, StoredEvent, UserId, UserName,
};

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
            shipping_address,
            purchase_id,
        } => Payload::OrderCreated(pb::OrderCreated {
            order_id: order_id.to_string(),
            user_id: user_id.to_string(),
            items: items.iter().map(order_line_to_pb).collect(),
            total: Some(money_to_pb(*total)),
            shipping_address: shipping_address.as_ref().map(address_to_pb),
            purchase_id: purchase_id.map(|id| id.to_string()).unwrap_or_default(),
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
        Event::ProductCreated {
            product_id,
            sku,
            name,
            unit_price,
            initial_stock,
            reorder_level,
        } => Payload::ProductCreated(pb::ProductCreated {
            product_id: product_id.to_string(),
            sku: sku.as_str().to_owned(),
            name: name.as_str().to_owned(),
            unit_price: Some(money_to_pb(*unit_price)),
            initial_stock: initial_stock.get(),
            reorder_level: reorder_level.get(),
        }),
        Event::ProductRestocked {
            product_id,
            quantity,
        } => Payload::ProductRestocked(pb::ProductRestocked {
            product_id: product_id.to_string(),
            quantity: quantity.get(),
        }),
        Event::ProductPriceChanged {
            product_id,
            unit_price,
            previous_price,
        } => Payload::ProductPriceChanged(pb::ProductPriceChanged {
            product_id: product_id.to_string(),
            unit_price: Some(money_to_pb(*unit_price)),
            previous_price: Some(money_to_pb(*previous_price)),
        }),
        Event::StockReserved {
            product_id,
            purchase_id,
            quantity,
        } => Payload::StockReserved(pb::StockReserved {
            product_id: product_id.to_string(),
            purchase_id: purchase_id.to_string(),
            quantity: quantity.get(),
        }),
        Event::StockReleased {
            product_id,
            purchase_id,
            quantity,
        } => Payload::StockReleased(pb::StockReleased {
            product_id: product_id.to_string(),
            purchase_id: purchase_id.to_string(),
            quantity: quantity.get(),
        }),
        Event::PurchaseRequested {
            purchase_id,
            user_id,
            items,
        } => Payload::PurchaseRequested(pb::PurchaseRequested {
            purchase_id: purchase_id.to_string(),
            user_id: user_id.to_string(),
            items: items.iter().map(purchase_item_to_pb).collect(),
        }),
        Event::PurchaseReserved {
            purchase_id,
            lines,
            total,
        } => Payload::PurchaseReserved(pb::PurchaseReserved {
            purchase_id: purchase_id.to_string(),
            lines: lines.iter().map(order_line_to_pb).collect(),
            total: Some(money_to_pb(*total)),
        }),
        Event::PurchaseCompleted {
            purchase_id,
            order_id,
        } => Payload::PurchaseCompleted(pb::PurchaseCompleted {
            purchase_id: purchase_id.to_string(),
            order_id: order_id.to_string(),
        }),
        Event::PurchaseRejected {
            purchase_id,
            rejection,
        } => Payload::PurchaseRejected(pb::PurchaseRejected {
            purchase_id: purchase_id.to_string(),
            rejection: Some(rejection_to_pb(rejection)),
        }),
        Event::PurchaseCancelled {
            purchase_id,
            order_id,
        } => Payload::PurchaseCancelled(pb::PurchaseCancelled {
            purchase_id: purchase_id.to_string(),
            order_id: order_id.to_string(),
        }),
        Event::RouteCreated {
            route_id,
            order_id,
            stops,
            distance,
        } => Payload::RouteCreated(pb::RouteCreated {
            route_id: route_id.to_string(),
            order_id: order_id.to_string(),
            stops: stops.as_slice().iter().map(route_stop_to_pb).collect(),
            distance_metres: distance.metres().into(),
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
            shipping_address,
            purchase_id,
        }) => Event::OrderCreated {
            order_id: OrderId::parse("order_id", order_id).map_err(bad)?,
            user_id: UserId::parse("user_id", user_id).map_err(bad)?,
            items: order_lines_from_pb(items).map_err(bad)?,
            total: money_from_pb(total.as_ref()).map_err(bad)?,
            shipping_address: shipping_address
                .as_ref()
                .map(address_from_pb)
                .transpose()
                .map_err(bad)?,
            purchase_id: match purchase_id.as_str() {
                "" => None,
                id => Some(PurchaseId::parse("purchase_id", id).map_err(bad)?),
            },
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
        Payload::ProductCreated(pb::ProductCreated {
            product_id,
            sku,
            name,
            unit_price,
            initial_stock,
            reorder_level,
        }) => Event::ProductCreated {
            product_id: ProductId::parse("product_id", product_id).map_err(bad)?,
            sku: Sku::parse(sku).map_err(bad)?,
            name: ProductName::parse(name).map_err(bad)?,
            unit_price: money_from_pb(unit_price.as_ref()).map_err(bad)?,
            initial_stock: StockLevel::parse(*initial_stock).map_err(bad)?,
            reorder_level: StockLevel::parse(*reorder_level).map_err(bad)?,
        },
        Payload::ProductRestocked(pb::ProductRestocked {
            product_id,
            quantity,
        }) => Event::ProductRestocked {
            product_id: ProductId::parse("product_id", product_id).map_err(bad)?,
            quantity: Quantity::parse(*quantity).map_err(bad)?,
        },
        Payload::ProductPriceChanged(pb::ProductPriceChanged {
            product_id,
            unit_price,
            previous_price,
        }) => Event::ProductPriceChanged {
            product_id: ProductId::parse("product_id", product_id).map_err(bad)?,
            unit_price: money_from_pb(unit_price.as_ref()).map_err(bad)?,
            previous_price: money_from_pb(previous_price.as_ref()).map_err(bad)?,
        },
        Payload::StockReserved(pb::StockReserved {
            product_id,
            purchase_id,
            quantity,
        }) => Event::StockReserved {
            product_id: ProductId::parse("product_id", product_id).map_err(bad)?,
            purchase_id: PurchaseId::parse("purchase_id", purchase_id).map_err(bad)?,
            quantity: Quantity::parse(*quantity).map_err(bad)?,
        },
        Payload::StockReleased(pb::StockReleased {
            product_id,
            purchase_id,
            quantity,
        }) => Event::StockReleased {
            product_id: ProductId::parse("product_id", product_id).map_err(bad)?,
            purchase_id: PurchaseId::parse("purchase_id", purchase_id).map_err(bad)?,
            quantity: Quantity::parse(*quantity).map_err(bad)?,
        },
        Payload::PurchaseRequested(pb::PurchaseRequested {
            purchase_id,
            user_id,
            items,
        }) => Event::PurchaseRequested {
            purchase_id: PurchaseId::parse("purchase_id", purchase_id).map_err(bad)?,
            user_id: UserId::parse("user_id", user_id).map_err(bad)?,
            items: purchase_items_from_pb(items).map_err(bad)?,
        },
        Payload::PurchaseReserved(pb::PurchaseReserved {
            purchase_id,
            lines,
            total,
        }) => Event::PurchaseReserved {
            purchase_id: PurchaseId::parse("purchase_id", purchase_id).map_err(bad)?,
            lines: order_lines_from_pb(lines).map_err(bad)?,
            total: money_from_pb(total.as_ref()).map_err(bad)?,
        },
        Payload::PurchaseCompleted(pb::PurchaseCompleted {
            purchase_id,
            order_id,
        }) => Event::PurchaseCompleted {
            purchase_id: PurchaseId::parse("purchase_id", purchase_id).map_err(bad)?,
            order_id: OrderId::parse("order_id", order_id).map_err(bad)?,
        },
        Payload::PurchaseRejected(pb::PurchaseRejected {
            purchase_id,
            rejection,
        }) => Event::PurchaseRejected {
            purchase_id: PurchaseId::parse("purchase_id", purchase_id).map_err(bad)?,
            rejection: rejection_from_pb(rejection.as_ref().ok_or_else(|| bad("no rejection"))?)
                .map_err(bad)?,
        },
        Payload::PurchaseCancelled(pb::PurchaseCancelled {
            purchase_id,
            order_id,
        }) => Event::PurchaseCancelled {
            purchase_id: PurchaseId::parse("purchase_id", purchase_id).map_err(bad)?,
            order_id: OrderId::parse("order_id", order_id).map_err(bad)?,
        },
        Payload::RouteCreated(pb::RouteCreated {
            route_id,
            order_id,
            stops,
            distance_metres,
        }) => Event::RouteCreated {
            route_id: RouteId::parse("route_id", route_id).map_err(bad)?,
            order_id: OrderId::parse("order_id", order_id).map_err(bad)?,
            stops: route_stops_from_pb(stops).map_err(bad)?,
            distance: Distance::parse(*distance_metres).map_err(bad)?,
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
        Payload::ProductCreated(m) => serde_json::to_string(m),
        Payload::ProductRestocked(m) => serde_json::to_string(m),
        Payload::ProductPriceChanged(m) => serde_json::to_string(m),
        Payload::StockReserved(m) => serde_json::to_string(m),
        Payload::StockReleased(m) => serde_json::to_string(m),
        Payload::PurchaseRequested(m) => serde_json::to_string(m),
        Payload::PurchaseReserved(m) => serde_json::to_string(m),
        Payload::PurchaseCompleted(m) => serde_json::to_string(m),
        Payload::PurchaseRejected(m) => serde_json::to_string(m),
        Payload::PurchaseCancelled(m) => serde_json::to_string(m),
        Payload::RouteCreated(m) => serde_json::to_string(m),
    };
    json.unwrap_or_default()
}

/// Reads `EventData` of any schema version of its type, in the current
/// shape (see [`crate::upcast`]).
pub use crate::upcast::payload_from_json;

pub fn to_envelope(stored: &StoredEvent) -> pb::EventEnvelope {
    let StoredEvent {
        event_id,
        version,
        occurred_at,
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
        schema_version: event.schema_version(),
        request_id: request_id.clone(),
        correlation_id: correlation_id.clone(),
        replay_id: String::new(),
        payload: Some(payload_of(event)),
    }
}

/// Reads an envelope of any schema version: an older payload is upcast to
/// the current shape, as a stored one is.
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
    let payload = payload.as_ref().ok_or_else(|| bad("no payload"))?;
    let event = if crate::upcast::current_schema_version(event_type) == Some(*schema_version) {
        event_from_payload(payload)?
    } else {
        // The envelope's message holds every older shape's fields (a new
        // version only adds), so its JSON is the payload as that version
        // wrote it; the upcaster checks that it is.
        event_from_payload(&payload_from_json(
            event_type,
            *schema_version,
            &payload_to_json(payload),
        )?)?
    };
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
    use crate::golden::{self, FIXTURES};
    use crate::upcast::current_schema_version;

    fn fixture_path(name: &str) -> String {
        format!(
            "{}/tests/fixtures/events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    /// The published `detail` of each shape is a contract: these golden
    /// copies change only with a new schema version. `DYNABRIDGE_BLESS=1`
    /// writes the current shapes' files when a new version is introduced.
    #[test]
    fn every_current_event_publishes_as_its_fixture() {
        for stored in golden::current() {
            let name = format!(
                "{}.v{}",
                stored.event.event_type(),
                stored.event.schema_version()
            );
            let actual: serde_json::Value = serde_json::from_str(&envelope_json(&stored)).unwrap();
            if std::env::var_os("DYNABRIDGE_BLESS").is_some() {
                let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";
                std::fs::write(fixture_path(&name), pretty).unwrap();
                continue;
            }
            let fixture = FIXTURES
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("no fixture {name}"));
            let golden: serde_json::Value = serde_json::from_str(fixture.published).unwrap();
            assert_eq!(actual, golden, "{name}");
        }
    }

    #[test]
    fn every_fixture_decodes_to_its_event() {
        for fixture in FIXTURES {
            let envelope: pb::EventEnvelope = serde_json::from_str(fixture.published).unwrap();
            assert_eq!(
                (envelope.event_type.as_str(), envelope.schema_version),
                fixture.shape(),
                "{}",
                fixture.name
            );
            assert_eq!(
                from_envelope(&envelope).unwrap(),
                fixture.event(),
                "{}",
                fixture.name
            );
        }
    }

    /// An order of an older version published again (a catch-up, a
    /// replay) goes out in the current shape: the same entry, labelled
    /// version 3, with no address (v1) and no purchase (v1, v2).
    #[test]
    fn an_older_shape_is_published_upcast() {
        for name in ["OrderCreated.v1", "OrderCreated.v2"] {
            let older = FIXTURES.iter().find(|f| f.name == name).unwrap();
            let mut expected: serde_json::Value = serde_json::from_str(older.published).unwrap();
            expected["schemaVersion"] = 3.into();
            let actual: serde_json::Value =
                serde_json::from_str(&envelope_json(&older.event())).unwrap();
            assert_eq!(actual, expected, "{name}");
        }
    }

    #[test]
    fn a_mislabelled_envelope_is_refused() {
        let v3 = FIXTURES
            .iter()
            .find(|f| f.name == "OrderCreated.v3")
            .unwrap();
        let mut envelope: pb::EventEnvelope = serde_json::from_str(v3.published).unwrap();
        envelope.schema_version = 1;
        assert!(
            from_envelope(&envelope).is_err(),
            "a v1 order has no address"
        );
        envelope.schema_version = 2;
        assert!(
            from_envelope(&envelope).is_err(),
            "a v2 order has no purchase"
        );
        envelope.schema_version = 4;
        assert!(from_envelope(&envelope).is_err());
    }

    #[test]
    fn every_event_round_trips_through_the_stored_payload() {
        for stored in golden::current() {
            let event = stored.event;
            assert_eq!(
                current_schema_version(event.event_type()),
                Some(event.schema_version()),
                "the domain and the upcaster disagree on {}",
                event.event_type()
            );
            let json = payload_to_json(&payload_of(&event));
            let payload =
                payload_from_json(event.event_type(), event.schema_version(), &json).unwrap();
            assert_eq!(event_from_payload(&payload).unwrap(), event);
        }
    }
}
