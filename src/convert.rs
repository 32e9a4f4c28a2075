//! Conversions between protobuf messages and domain values, shared by the
//! command edge (parsing requests), the event codec and the read models.
//! Errors carry field paths relative to the message converted.

use chrono::{DateTime, Utc};

use crate::pb;
use dynabridge_domain::{
    AddressParts, FieldViolation, Money, OrderLine, OrderStatus, PurchaseItem, Quantity, Rejection,
    RouteStop, RouteStops, ShippingAddress, Sku, ValidationError,
};

pub fn money_to_pb(money: Money) -> pb::Money {
    pb::Money {
        currency_code: money.currency.as_str().to_owned(),
        amount_minor: money.amount_minor,
    }
}

/// Parses a required `Money` field.
pub fn money_from_pb(money: Option<&pb::Money>) -> Result<Money, ValidationError> {
    let Some(pb::Money {
        currency_code,
        amount_minor,
    }) = money
    else {
        return Err(ValidationError::single("", "is required"));
    };
    Money::parse(currency_code, *amount_minor)
}

pub fn purchase_item_to_pb(item: &PurchaseItem) -> pb::PurchaseItem {
    pb::PurchaseItem {
        sku: item.sku.as_str().to_owned(),
        quantity: item.quantity.get(),
    }
}

/// Parses every item, naming each violation `items[i].…`.
pub fn purchase_items_from_pb(
    items: &[pb::PurchaseItem],
) -> Result<Vec<PurchaseItem>, ValidationError> {
    let mut errors = ValidationError::default();
    let mut parsed = Vec::with_capacity(items.len());
    for (i, pb::PurchaseItem { sku, quantity }) in items.iter().enumerate() {
        let at = |field: &str| format!("items[{i}].{field}");
        let sku = errors.check(Sku::parse(sku).map_err(|e| e.under(&at("sku"))));
        let quantity =
            errors.check(Quantity::parse(*quantity).map_err(|e| e.under(&at("quantity"))));
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            parsed.push(PurchaseItem { sku, quantity });
        }
    }
    errors.into_result()?;
    Ok(parsed)
}

pub fn route_stop_to_pb(stop: &RouteStop) -> pb::RouteStop {
    let (sku, quantity) = match &stop.pick {
        Some((sku, quantity)) => (sku.as_str().to_owned(), quantity.get()),
        None => (String::new(), 0),
    };
    pb::RouteStop {
        location: stop.location.clone(),
        sku,
        quantity,
    }
}

/// A route's stops; each violation names its field (`stops[1].sku`). A
/// stop without a sku is the delivery, and has no quantity.
pub fn route_stops_from_pb(stops: &[pb::RouteStop]) -> Result<RouteStops, ValidationError> {
    let mut errors = ValidationError::default();
    let mut parsed = Vec::with_capacity(stops.len());
    for (
        i,
        pb::RouteStop {
            location,
            sku,
            quantity,
        },
    ) in stops.iter().enumerate()
    {
        let at = |field: &str| format!("stops[{i}].{field}");
        let pick = if sku.is_empty() {
            if *quantity != 0 {
                errors.push(FieldViolation::new(
                    at("quantity"),
                    "must be 0 for the delivery (a stop without a sku)",
                ));
            }
            None
        } else {
            let sku = errors.check(Sku::parse(sku).map_err(|e| e.under(&at("sku"))));
            let quantity =
                errors.check(Quantity::parse(*quantity).map_err(|e| e.under(&at("quantity"))));
            match (sku, quantity) {
                (Some(sku), Some(quantity)) => Some((sku, quantity)),
                _ => continue,
            }
        };
        parsed.push(RouteStop {
            location: location.clone(),
            pick,
        });
    }
    errors.into_result()?;
    RouteStops::parse(parsed)
}

pub fn rejection_to_pb(rejection: &Rejection) -> pb::PurchaseRejection {
    use pb::PurchaseRejectionReason as Reason;
    match rejection {
        Rejection::OutOfStock {
            sku,
            requested,
            available,
        } => pb::PurchaseRejection {
            reason: Reason::OutOfStock as i32,
            sku: sku.as_str().to_owned(),
            quantity_requested: requested.get(),
            quantity_left: *available,
        },
        Rejection::ProductNotFound { sku } => pb::PurchaseRejection {
            reason: Reason::ProductNotFound as i32,
            sku: sku.as_str().to_owned(),
            ..Default::default()
        },
        Rejection::MixedCurrencies => pb::PurchaseRejection {
            reason: Reason::MixedCurrencies as i32,
            ..Default::default()
        },
    }
}

pub fn rejection_from_pb(rejection: &pb::PurchaseRejection) -> Result<Rejection, ValidationError> {
    use pb::PurchaseRejectionReason as Reason;
    let sku = || Sku::parse(&rejection.sku).map_err(|e| e.under("sku"));
    match Reason::try_from(rejection.reason) {
        Ok(Reason::OutOfStock) => Ok(Rejection::OutOfStock {
            sku: sku()?,
            requested: Quantity::parse(rejection.quantity_requested)
                .map_err(|e| e.under("quantity_requested"))?,
            available: rejection.quantity_left,
        }),
        Ok(Reason::ProductNotFound) => Ok(Rejection::ProductNotFound { sku: sku()? }),
        Ok(Reason::MixedCurrencies) => Ok(Rejection::MixedCurrencies),
        Ok(Reason::Unspecified) | Err(_) => Err(ValidationError::single(
            "reason",
            "must be a known rejection reason",
        )),
    }
}

pub fn order_line_to_pb(line: &OrderLine) -> pb::OrderItem {
    pb::OrderItem {
        sku: line.sku.as_str().to_owned(),
        quantity: line.quantity.get(),
        unit_price: Some(money_to_pb(line.unit_price)),
    }
}

pub fn order_line_from_pb(item: &pb::OrderItem) -> Result<OrderLine, ValidationError> {
    let pb::OrderItem {
        sku,
        quantity,
        unit_price,
    } = item;
    let mut errors = ValidationError::default();
    let sku = errors.check(Sku::parse(sku).map_err(|e| e.under("sku")));
    let quantity = errors.check(Quantity::parse(*quantity).map_err(|e| e.under("quantity")));
    let unit_price =
        errors.check(money_from_pb(unit_price.as_ref()).map_err(|e| e.under("unit_price")));
    match (sku, quantity, unit_price) {
        (Some(sku), Some(quantity), Some(unit_price)) => Ok(OrderLine {
            sku,
            quantity,
            unit_price,
        }),
        _ => Err(errors),
    }
}

/// Parses every item, naming each violation `items[i].…`.
pub fn order_lines_from_pb(items: &[pb::OrderItem]) -> Result<Vec<OrderLine>, ValidationError> {
    let mut errors = ValidationError::default();
    let mut lines = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(line) =
            errors.check(order_line_from_pb(item).map_err(|e| e.under(&format!("items[{i}]"))))
        {
            lines.push(line);
        }
    }
    errors.into_result()?;
    Ok(lines)
}

pub fn address_to_pb(address: &ShippingAddress) -> pb::ShippingAddress {
    let AddressParts {
        recipient,
        line1,
        line2,
        city,
        postal_code,
        country_code,
    } = address.parts();
    pb::ShippingAddress {
        recipient: recipient.to_owned(),
        line1: line1.to_owned(),
        line2: line2.to_owned(),
        city: city.to_owned(),
        postal_code: postal_code.to_owned(),
        country_code: country_code.to_owned(),
    }
}

/// Parses an address; violations name its fields (`country_code`).
pub fn address_from_pb(address: &pb::ShippingAddress) -> Result<ShippingAddress, ValidationError> {
    let pb::ShippingAddress {
        recipient,
        line1,
        line2,
        city,
        postal_code,
        country_code,
    } = address;
    ShippingAddress::parse(AddressParts {
        recipient,
        line1,
        line2,
        city,
        postal_code,
        country_code,
    })
}

pub fn status_to_pb(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::Created => pb::OrderStatus::Created,
        OrderStatus::Processing => pb::OrderStatus::Processing,
        OrderStatus::Shipped => pb::OrderStatus::Shipped,
        OrderStatus::Delivered => pb::OrderStatus::Delivered,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    }
}

/// Parses an `OrderStatus` enum field; UNSPECIFIED and unknown numbers are
/// invalid.
pub fn status_from_pb(raw: i32) -> Result<OrderStatus, ValidationError> {
    match pb::OrderStatus::try_from(raw) {
        Ok(pb::OrderStatus::Created) => Ok(OrderStatus::Created),
        Ok(pb::OrderStatus::Processing) => Ok(OrderStatus::Processing),
        Ok(pb::OrderStatus::Shipped) => Ok(OrderStatus::Shipped),
        Ok(pb::OrderStatus::Delivered) => Ok(OrderStatus::Delivered),
        Ok(pb::OrderStatus::Cancelled) => Ok(OrderStatus::Cancelled),
        Ok(pb::OrderStatus::Unspecified) => Err(ValidationError::single("", "is required")),
        Err(_) => Err(ValidationError {
            violations: vec![FieldViolation::new(
                "",
                format!("{raw} is not an OrderStatus"),
            )],
        }),
    }
}

pub fn timestamp_to_pb(at: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: at.timestamp(),
        // Always below 2e9, so it fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn timestamp_from_pb(at: &pbjson_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// The stored form of a time: RFC 3339 in UTC with microseconds, which sorts
/// as text in time order.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_violations_name_every_bad_field() {
        let items = vec![
            pb::OrderItem {
                sku: "ok".into(),
                quantity: 1,
                unit_price: Some(pb::Money {
                    currency_code: "USD".into(),
                    amount_minor: 1,
                }),
            },
            pb::OrderItem {
                sku: String::new(),
                quantity: 0,
                unit_price: Some(pb::Money {
                    currency_code: "usd".into(),
                    amount_minor: -5,
                }),
            },
        ];
        let err = order_lines_from_pb(&items).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[1].sku",
                "items[1].quantity",
                "items[1].unit_price.currency_code",
                "items[1].unit_price.amount_minor"
            ]
        );
    }

    #[test]
    fn statuses_round_trip_and_unspecified_is_invalid() {
        for status in OrderStatus::ALL {
            assert_eq!(status_from_pb(status_to_pb(status) as i32).unwrap(), status);
        }
        assert!(status_from_pb(0).is_err());
        assert!(status_from_pb(99).is_err());
    }

    #[test]
    fn stored_times_sort_as_text() {
        let a = parse_time("2026-01-02T03:04:05.000006Z").unwrap();
        let b = a + chrono::Duration::microseconds(1);
        assert!(format_time(a) < format_time(b));
        assert_eq!(parse_time(&format_time(a)), Some(a));
    }
}
