//! The read models: their rows, how an event changes a row, and how a row is
//! stored. The projector writes them; the query service reads them.
//!
//! Every row stores the version of the last event applied to it. An event at
//! version `v` applies only to a row at `v - 1` (or to no row, for `v == 1`):
//! a redelivered or stale event is recognised and changes nothing, and a gap
//! is reported so that the projector can fill it from the event store first.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use dynabridge::convert::{
    address_from_pb, address_to_pb, format_time, money_to_pb, order_line_to_pb,
    order_lines_from_pb, parse_time, status_to_pb, timestamp_to_pb,
};
use dynabridge::pb;
use dynabridge::schema::{order_summaries, read_model, user_profiles};
use dynabridge_domain::{
    Event, Money, OrderLine, OrderStatus, ShippingAddress, StoredEvent, Version,
};

pub mod generations;
mod product;
mod purchase;
pub mod row;

pub use product::ProductRow;
pub use purchase::{PurchaseOutcome, PurchaseRow};

pub use dynabridge_aws::item::{Item, get_n, get_s};

/// What applying one event to a row gives.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied<R> {
    /// The row after the event; store it if the stored row is still at
    /// `expected_version` (0: no row yet).
    Next { row: R, expected_version: Version },
    /// The row already reflects this event: nothing to do.
    AlreadyApplied,
    /// Events `from..=to` are missing and must be applied first.
    Gap { from: Version, to: Version },
    /// The event does not concern this read model.
    Ignored,
}

/// A stored row that this build cannot read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable read-model row: {0}")]
pub struct RowError(pub String);

impl From<dynabridge_aws::item::AttributeError> for RowError {
    fn from(err: dynabridge_aws::item::AttributeError) -> Self {
        Self(err.0)
    }
}

pub(crate) fn gate<R>(
    current: Option<&R>,
    version_of: impl Fn(&R) -> Version,
    event: &StoredEvent,
) -> Option<Applied<R>> {
    let have = current.map(version_of).unwrap_or(0);
    if event.version <= have {
        return Some(Applied::AlreadyApplied);
    }
    if event.version > have + 1 {
        return Some(Applied::Gap {
            from: have + 1,
            to: event.version - 1,
        });
    }
    None
}

/// A row of `user-profiles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProfileRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserProfileRow {
    pub fn apply(current: Option<&Self>, event: &StoredEvent) -> Applied<Self> {
        if !matches!(
            event.event,
            Event::UserCreated { .. } | Event::UserProfileUpdated { .. }
        ) {
            return Applied::Ignored;
        }
        if let Some(gated) = gate(current, |r| r.version, event) {
            return gated;
        }
        let expected_version = event.version - 1;
        let row = match (&event.event, current) {
            (
                Event::UserCreated {
                    user_id,
                    email,
                    name,
                },
                _,
            ) => Self {
                user_id: user_id.to_string(),
                email: email.as_str().to_owned(),
                name: name.as_str().to_owned(),
                version: event.version,
                created_at: event.occurred_at,
                updated_at: event.occurred_at,
            },
            (Event::UserProfileUpdated { name, email, .. }, Some(current)) => Self {
                name: name
                    .as_ref()
                    .map_or_else(|| current.name.clone(), |n| n.as_str().to_owned()),
                email: email
                    .as_ref()
                    .map_or_else(|| current.email.clone(), |e| e.as_str().to_owned()),
                version: event.version,
                updated_at: event.occurred_at,
                ..current.clone()
            },
            // An update at version 1 cannot be: the gate reports versions
            // above 1 on a missing row as a gap.
            _ => return Applied::Ignored,
        };
        Applied::Next {
            row,
            expected_version,
        }
    }

    pub fn to_item(&self) -> Item {
        HashMap::from([
            (
                user_profiles::USER_ID.into(),
                AttributeValue::S(self.user_id.clone()),
            ),
            (
                user_profiles::EMAIL.into(),
                AttributeValue::S(self.email.clone()),
            ),
            (
                user_profiles::NAME.into(),
                AttributeValue::S(self.name.clone()),
            ),
            (
                read_model::VERSION.into(),
                AttributeValue::N(self.version.to_string()),
            ),
            (
                read_model::CREATED_AT.into(),
                AttributeValue::S(format_time(self.created_at)),
            ),
            (
                read_model::UPDATED_AT.into(),
                AttributeValue::S(format_time(self.updated_at)),
            ),
        ])
    }

    pub fn from_item(item: &Item) -> Result<Self, RowError> {
        Ok(Self {
            user_id: get_s(item, user_profiles::USER_ID)?.to_owned(),
            email: get_s(item, user_profiles::EMAIL)?.to_owned(),
            name: get_s(item, user_profiles::NAME)?.to_owned(),
            version: get_n(item, read_model::VERSION)?,
            created_at: get_time(item, read_model::CREATED_AT)?,
            updated_at: get_time(item, read_model::UPDATED_AT)?,
        })
    }

    pub fn to_pb(&self) -> pb::UserProfile {
        pb::UserProfile {
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            version: self.version,
            create_time: Some(timestamp_to_pb(self.created_at)),
            update_time: Some(timestamp_to_pb(self.updated_at)),
        }
    }
}

/// A row of `order-summaries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderSummaryRow {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub shipping_address: Option<ShippingAddress>,
    /// The purchase that placed it, if one did.
    pub purchase_id: Option<String>,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderSummaryRow {
    pub fn apply(current: Option<&Self>, event: &StoredEvent) -> Applied<Self> {
        if !matches!(
            event.event,
            Event::OrderCreated { .. } | Event::OrderStatusUpdated { .. }
        ) {
            return Applied::Ignored;
        }
        if let Some(gated) = gate(current, |r| r.version, event) {
            return gated;
        }
        let expected_version = event.version - 1;
        let row = match (&event.event, current) {
            (
                Event::OrderCreated {
                    order_id,
                    user_id,
                    items,
                    total,
                    shipping_address,
                    purchase_id,
                },
                _,
            ) => Self {
                order_id: order_id.to_string(),
                user_id: user_id.to_string(),
                items: items.clone(),
                total: *total,
                status: OrderStatus::Created,
                shipping_address: shipping_address.clone(),
                purchase_id: purchase_id.map(|id| id.to_string()),
                version: event.version,
                created_at: event.occurred_at,
                updated_at: event.occurred_at,
            },
            (Event::OrderStatusUpdated { status, .. }, Some(current)) => Self {
                status: *status,
                version: event.version,
                updated_at: event.occurred_at,
                ..current.clone()
            },
            _ => return Applied::Ignored,
        };
        Applied::Next {
            row,
            expected_version,
        }
    }

    pub fn to_item(&self) -> Item {
        let items: Vec<pb::OrderItem> = self.items.iter().map(order_line_to_pb).collect();
        let mut item = HashMap::from([
            (
                order_summaries::ORDER_ID.into(),
                AttributeValue::S(self.order_id.clone()),
            ),
            (
                order_summaries::USER_ID.into(),
                AttributeValue::S(self.user_id.clone()),
            ),
            (
                order_summaries::ITEMS.into(),
                // Generated messages always serialise, see `envelope::payload_to_json`.
                AttributeValue::S(serde_json::to_string(&items).unwrap_or_default()),
            ),
            (
                order_summaries::TOTAL_CURRENCY.into(),
                AttributeValue::S(self.total.currency.as_str().to_owned()),
            ),
            (
                order_summaries::TOTAL_MINOR.into(),
                AttributeValue::N(self.total.amount_minor.to_string()),
            ),
            (
                order_summaries::STATUS.into(),
                AttributeValue::S(self.status.as_str().to_owned()),
            ),
            (
                read_model::VERSION.into(),
                AttributeValue::N(self.version.to_string()),
            ),
            (
                read_model::CREATED_AT.into(),
                AttributeValue::S(format_time(self.created_at)),
            ),
            (
                read_model::UPDATED_AT.into(),
                AttributeValue::S(format_time(self.updated_at)),
            ),
        ]);
        if let Some(purchase_id) = &self.purchase_id {
            item.insert(
                order_summaries::PURCHASE_ID.into(),
                AttributeValue::S(purchase_id.clone()),
            );
        }
        if let Some(address) = &self.shipping_address {
            item.insert(
                order_summaries::SHIPPING_ADDRESS.into(),
                // Generated messages always serialise, see `envelope::payload_to_json`.
                AttributeValue::S(
                    serde_json::to_string(&address_to_pb(address)).unwrap_or_default(),
                ),
            );
        }
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, RowError> {
        let shipping_address = match item.get(order_summaries::SHIPPING_ADDRESS) {
            None => None,
            Some(_) => {
                let bad = |e: &dyn std::fmt::Display| {
                    RowError(format!("{}: {e}", order_summaries::SHIPPING_ADDRESS))
                };
                let address: pb::ShippingAddress =
                    serde_json::from_str(get_s(item, order_summaries::SHIPPING_ADDRESS)?)
                        .map_err(|e| bad(&e))?;
                Some(address_from_pb(&address).map_err(|e| bad(&e))?)
            }
        };
        let items: Vec<pb::OrderItem> = serde_json::from_str(get_s(item, order_summaries::ITEMS)?)
            .map_err(|e| RowError(format!("{}: {e}", order_summaries::ITEMS)))?;
        let status = get_s(item, order_summaries::STATUS)?;
        Ok(Self {
            order_id: get_s(item, order_summaries::ORDER_ID)?.to_owned(),
            user_id: get_s(item, order_summaries::USER_ID)?.to_owned(),
            items: order_lines_from_pb(&items).map_err(|e| RowError(e.to_string()))?,
            total: Money::parse(
                get_s(item, order_summaries::TOTAL_CURRENCY)?,
                get_n(item, order_summaries::TOTAL_MINOR)?,
            )
            .map_err(|e| RowError(e.to_string()))?,
            status: OrderStatus::parse(status)
                .ok_or_else(|| RowError(format!("unknown status {status:?}")))?,
            shipping_address,
            purchase_id: match item.get(order_summaries::PURCHASE_ID) {
                None => None,
                Some(_) => Some(get_s(item, order_summaries::PURCHASE_ID)?.to_owned()),
            },
            version: get_n(item, read_model::VERSION)?,
            created_at: get_time(item, read_model::CREATED_AT)?,
            updated_at: get_time(item, read_model::UPDATED_AT)?,
        })
    }

    pub fn to_pb(&self) -> pb::OrderSummary {
        pb::OrderSummary {
            order_id: self.order_id.clone(),
            user_id: self.user_id.clone(),
            items: self.items.iter().map(order_line_to_pb).collect(),
            total: Some(money_to_pb(self.total)),
            status: status_to_pb(self.status) as i32,
            version: self.version,
            create_time: Some(timestamp_to_pb(self.created_at)),
            update_time: Some(timestamp_to_pb(self.updated_at)),
            shipping_address: self.shipping_address.as_ref().map(address_to_pb),
            purchase_id: self.purchase_id.clone().unwrap_or_default(),
        }
    }
}

pub(crate) fn get_time(item: &Item, name: &str) -> Result<DateTime<Utc>, RowError> {
    parse_time(get_s(item, name)?)
        .ok_or_else(|| RowError(format!("attribute {name} is not a time")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use dynabridge_domain::{Email, OrderId, Quantity, Sku, UserId, UserName};
    use uuid::Uuid;

    fn stored(version: Version, event: Event) -> StoredEvent {
        StoredEvent {
            event_id: Uuid::new_v4(),
            version,
            occurred_at: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, version as u32)
                .unwrap(),
            request_id: format!("r{version}"),
            correlation_id: "c".into(),
            trace_parent: None,
            event,
        }
    }

    fn user_events(id: UserId) -> Vec<StoredEvent> {
        vec![
            stored(
                1,
                Event::UserCreated {
                    user_id: id,
                    email: Email::parse("a@example.com").unwrap(),
                    name: UserName::parse("Ann").unwrap(),
                },
            ),
            stored(
                2,
                Event::UserProfileUpdated {
                    user_id: id,
                    name: Some(UserName::parse("Annie").unwrap()),
                    email: None,
                },
            ),
            stored(
                3,
                Event::UserProfileUpdated {
                    user_id: id,
                    name: None,
                    email: Some(Email::parse("b@example.com").unwrap()),
                },
            ),
        ]
    }

    fn next<R>(applied: Applied<R>) -> R {
        match applied {
            Applied::Next { row, .. } => row,
            _ => panic!("expected a next row"),
        }
    }

    #[test]
    fn user_rows_fold_in_order_and_keep_created_time() {
        let events = user_events(UserId::new_random());
        let mut row: Option<UserProfileRow> = None;
        for event in &events {
            row = Some(next(UserProfileRow::apply(row.as_ref(), event)));
        }
        let row = row.unwrap();
        assert_eq!(
            (row.name.as_str(), row.email.as_str(), row.version),
            ("Annie", "b@example.com", 3)
        );
        assert_eq!(row.created_at, events[0].occurred_at);
        assert_eq!(row.updated_at, events[2].occurred_at);
        assert_eq!(UserProfileRow::from_item(&row.to_item()).unwrap(), row);
    }

    #[test]
    fn redelivered_events_are_already_applied_and_gaps_are_reported() {
        let events = user_events(UserId::new_random());
        let row1 = next(UserProfileRow::apply(None, &events[0]));
        assert_eq!(
            UserProfileRow::apply(Some(&row1), &events[0]),
            Applied::AlreadyApplied
        );
        assert_eq!(
            UserProfileRow::apply(Some(&row1), &events[2]),
            Applied::Gap { from: 2, to: 2 }
        );
        assert_eq!(
            UserProfileRow::apply(None, &events[2]),
            Applied::Gap { from: 1, to: 2 }
        );
        let Applied::Next {
            expected_version, ..
        } = UserProfileRow::apply(Some(&row1), &events[1])
        else {
            panic!()
        };
        assert_eq!(expected_version, 1);
    }

    #[test]
    fn order_rows_track_status_and_ignore_user_events() {
        let id = OrderId::new_random();
        let created = stored(
            1,
            Event::OrderCreated {
                order_id: id,
                user_id: UserId::new_random(),
                items: vec![OrderLine {
                    sku: Sku::parse("x").unwrap(),
                    quantity: Quantity::parse(2).unwrap(),
                    unit_price: Money::parse("EUR", 250).unwrap(),
                }],
                total: Money::parse("EUR", 500).unwrap(),
                shipping_address: None,
                purchase_id: None,
            },
        );
        let shipped = stored(
            2,
            Event::OrderStatusUpdated {
                order_id: id,
                status: OrderStatus::Processing,
                previous_status: OrderStatus::Created,
            },
        );
        let row = next(OrderSummaryRow::apply(None, &created));
        let row = next(OrderSummaryRow::apply(Some(&row), &shipped));
        assert_eq!((row.status, row.version), (OrderStatus::Processing, 2));
        assert_eq!(OrderSummaryRow::from_item(&row.to_item()).unwrap(), row);
        let user_event = &user_events(UserId::new_random())[0];
        assert_eq!(
            OrderSummaryRow::apply(Some(&row), user_event),
            Applied::Ignored
        );
    }
}
