//! Every shape an event's payload has had, and how each older one becomes
//! the current one. The one place that knows the past: the event store's
//! codec (command side, projector, admin service) and the envelope's decoder
//! read stored and published payloads through it, so the rest of the system
//! sees only the current shapes.
//!
//! To change a payload's shape: keep the old message in `events.proto` as
//! `<Type>V<n>` (frozen), raise `Event::schema_version` for the type, add a
//! row to [`SHAPES`] and an arm to [`payload_from_json`] that decodes the old
//! shape strictly and upcasts it. The schema registry (`schemas/`) and its
//! fixtures follow from the table.

use crate::envelope::DecodeError;
use crate::pb::{self, event_envelope::Payload};

/// One shape of one event type: its schema version, and the protobuf
/// message (in `dynabridge.v1`) that describes the payload at that version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub message: &'static str,
}

/// Every shape this build reads, oldest first within a type; a type's last
/// row is the shape it writes.
pub const SHAPES: &[Shape] = &[
    Shape {
        event_type: "UserCreated",
        schema_version: 1,
        message: "UserCreated",
    },
    Shape {
        event_type: "UserProfileUpdated",
        schema_version: 1,
        message: "UserProfileUpdated",
    },
    Shape {
        event_type: "OrderCreated",
        schema_version: 1,
        message: "OrderCreatedV1",
    },
    Shape {
        event_type: "OrderCreated",
        schema_version: 2,
        message: "OrderCreatedV2",
    },
    Shape {
        event_type: "OrderCreated",
        schema_version: 3,
        message: "OrderCreated",
    },
    Shape {
        event_type: "OrderStatusUpdated",
        schema_version: 1,
        message: "OrderStatusUpdated",
    },
    Shape {
        event_type: "ProductCreated",
        schema_version: 1,
        message: "ProductCreated",
    },
    Shape {
        event_type: "ProductRestocked",
        schema_version: 1,
        message: "ProductRestocked",
    },
    Shape {
        event_type: "ProductPriceChanged",
        schema_version: 1,
        message: "ProductPriceChanged",
    },
    Shape {
        event_type: "StockReserved",
        schema_version: 1,
        message: "StockReserved",
    },
    Shape {
        event_type: "StockReleased",
        schema_version: 1,
        message: "StockReleased",
    },
    Shape {
        event_type: "PurchaseRequested",
        schema_version: 1,
        message: "PurchaseRequested",
    },
    Shape {
        event_type: "PurchaseReserved",
        schema_version: 1,
        message: "PurchaseReserved",
    },
    Shape {
        event_type: "PurchaseCompleted",
        schema_version: 1,
        message: "PurchaseCompleted",
    },
    Shape {
        event_type: "PurchaseRejected",
        schema_version: 1,
        message: "PurchaseRejected",
    },
    Shape {
        event_type: "PurchaseCancelled",
        schema_version: 1,
        message: "PurchaseCancelled",
    },
    Shape {
        event_type: "RouteCreated",
        schema_version: 1,
        message: "RouteCreated",
    },
];

/// The schema version written for `event_type`, or `None` for a type this
/// build does not know.
pub fn current_schema_version(event_type: &str) -> Option<u32> {
    SHAPES
        .iter()
        .rev()
        .find(|shape| shape.event_type == event_type)
        .map(|shape| shape.schema_version)
}

/// Reads an `EventData` payload of the given type and schema version, in
/// the current shape. Each version is decoded strictly: a field its shape
/// does not have is an error, not ignored.
pub fn payload_from_json(
    event_type: &str,
    schema_version: u32,
    json: &str,
) -> Result<Payload, DecodeError> {
    fn parse<'a, T: serde::Deserialize<'a>>(json: &'a str) -> Result<T, DecodeError> {
        serde_json::from_str(json).map_err(|e| DecodeError(e.to_string()))
    }
    let payload = match (event_type, schema_version) {
        ("UserCreated", 1) => Payload::UserCreated(parse(json)?),
        ("UserProfileUpdated", 1) => Payload::UserProfileUpdated(parse(json)?),
        ("OrderCreated", 1) => Payload::OrderCreated(order_created_from_v1(parse(json)?)),
        ("OrderCreated", 2) => Payload::OrderCreated(order_created_from_v2(parse(json)?)),
        ("OrderCreated", 3) => Payload::OrderCreated(parse(json)?),
        ("OrderStatusUpdated", 1) => Payload::OrderStatusUpdated(parse(json)?),
        ("ProductCreated", 1) => Payload::ProductCreated(parse(json)?),
        ("ProductRestocked", 1) => Payload::ProductRestocked(parse(json)?),
        ("ProductPriceChanged", 1) => Payload::ProductPriceChanged(parse(json)?),
        ("StockReserved", 1) => Payload::StockReserved(parse(json)?),
        ("StockReleased", 1) => Payload::StockReleased(parse(json)?),
        ("PurchaseRequested", 1) => Payload::PurchaseRequested(parse(json)?),
        ("PurchaseReserved", 1) => Payload::PurchaseReserved(parse(json)?),
        ("PurchaseCompleted", 1) => Payload::PurchaseCompleted(parse(json)?),
        ("PurchaseRejected", 1) => Payload::PurchaseRejected(parse(json)?),
        ("PurchaseCancelled", 1) => Payload::PurchaseCancelled(parse(json)?),
        ("RouteCreated", 1) => Payload::RouteCreated(parse(json)?),
        (event_type, schema_version) => {
            return Err(DecodeError(match current_schema_version(event_type) {
                Some(current) => format!(
                    "{event_type} has schema version {schema_version}; this build reads 1 to {current}"
                ),
                None => format!("unknown event type {event_type:?}"),
            }));
        }
    };
    Ok(payload)
}

/// Version 1 had no shipping address: an order placed then has none (nor
/// a purchase).
fn order_created_from_v1(v1: pb::OrderCreatedV1) -> pb::OrderCreated {
    let pb::OrderCreatedV1 {
        order_id,
        user_id,
        items,
        total,
    } = v1;
    order_created_from_v2(pb::OrderCreatedV2 {
        order_id,
        user_id,
        items,
        total,
        shipping_address: None,
    })
}

/// Version 2 had no purchase: an order placed then was placed by
/// `CreateOrder`.
fn order_created_from_v2(v2: pb::OrderCreatedV2) -> pb::OrderCreated {
    let pb::OrderCreatedV2 {
        order_id,
        user_id,
        items,
        total,
        shipping_address,
    } = v2;
    pb::OrderCreated {
        order_id,
        user_id,
        items,
        total,
        shipping_address,
        purchase_id: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynabridge_domain::Event;

    #[test]
    fn every_shape_decodes_and_nothing_else_does() {
        for shape in SHAPES {
            assert!(
                payload_from_json(shape.event_type, shape.schema_version, "{}").is_ok(),
                "{shape:?}"
            );
        }
        for event_type in Event::TYPES {
            let current = current_schema_version(event_type).unwrap();
            assert!(payload_from_json(event_type, 0, "{}").is_err());
            assert!(payload_from_json(event_type, current + 1, "{}").is_err());
        }
        assert!(payload_from_json("UserDeleted", 1, "{}").is_err());
    }

    #[test]
    fn each_type_writes_its_last_shape() {
        let types: Vec<_> = SHAPES.iter().map(|s| s.event_type).collect();
        for event_type in Event::TYPES {
            assert!(types.contains(&event_type), "{event_type} has no shape");
        }
        for shape in SHAPES {
            assert!(Event::TYPES.contains(&shape.event_type), "{shape:?}");
        }
    }

    #[test]
    fn a_version_1_order_decodes_strictly() {
        let v1 = r#"{"orderId":"o","userId":"u","items":[],"total":{"currencyCode":"USD","amountMinor":"1"}}"#;
        let Payload::OrderCreated(order) = payload_from_json("OrderCreated", 1, v1).unwrap() else {
            panic!("not an OrderCreated");
        };
        assert_eq!(order.shipping_address, None);
        assert_eq!(order.order_id, "o");
        // An address under version 1 is a payload mislabelled, not one to
        // read past.
        let mislabelled = r#"{"orderId":"o","shippingAddress":{"city":"Berlin"}}"#;
        assert!(payload_from_json("OrderCreated", 1, mislabelled).is_err());
        assert!(payload_from_json("OrderCreated", 2, mislabelled).is_ok());
        // So is a purchase under version 2.
        let purchased = r#"{"orderId":"o","purchaseId":"p"}"#;
        assert!(payload_from_json("OrderCreated", 2, purchased).is_err());
        assert!(payload_from_json("OrderCreated", 3, purchased).is_ok());
    }
}
