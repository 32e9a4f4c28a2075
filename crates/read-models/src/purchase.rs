//! A row of `purchases`: where a purchase is, as a client asks for it
//! (`GetPurchase`). The seed's "distributed session cache", as a read model
//! with read-your-writes: `PurchaseProducts` returns version 1, and the
//! purchase process's steps each add one.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use dynabridge::convert::{
    format_time, money_to_pb, purchase_item_to_pb, purchase_items_from_pb, rejection_from_pb,
    rejection_to_pb, timestamp_to_pb,
};
use dynabridge::pb;
use dynabridge::schema::{purchases, read_model};
use dynabridge_domain::{Event, Money, PurchaseItem, Rejection, StoredEvent, Version};

use crate::{Applied, Item, RowError, gate, get_n, get_s, get_time};

/// Where a purchase is, as a client sees it: the purchase process's steps
/// before its outcome are all `Pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseOutcome {
    Pending,
    Completed,
    Rejected,
    Cancelled,
}

impl PurchaseOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Completed => "COMPLETED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Completed,
            Self::Rejected,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == raw)
    }

    fn to_pb(self) -> pb::PurchaseStatus {
        match self {
            Self::Pending => pb::PurchaseStatus::Pending,
            Self::Completed => pb::PurchaseStatus::Completed,
            Self::Rejected => pb::PurchaseStatus::Rejected,
            Self::Cancelled => pb::PurchaseStatus::Cancelled,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseRow {
    pub purchase_id: String,
    pub user_id: String,
    pub items: Vec<PurchaseItem>,
    pub status: PurchaseOutcome,
    pub order_id: Option<String>,
    pub rejection: Option<Rejection>,
    pub total: Option<Money>,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PurchaseRow {
    /// Whether the purchase process has decided it.
    pub fn is_decided(&self) -> bool {
        self.status != PurchaseOutcome::Pending
    }

    pub fn apply(current: Option<&Self>, event: &StoredEvent) -> Applied<Self> {
        if !matches!(
            event.event,
            Event::PurchaseRequested { .. }
                | Event::PurchaseReserved { .. }
                | Event::PurchaseCompleted { .. }
                | Event::PurchaseRejected { .. }
                | Event::PurchaseCancelled { .. }
        ) {
            return Applied::Ignored;
        }
        if let Some(gated) = gate(current, |r| r.version, event) {
            return gated;
        }
        let next = |current: &Self| Self {
            version: event.version,
            updated_at: event.occurred_at,
            ..current.clone()
        };
        let row = match (&event.event, current) {
            (
                Event::PurchaseRequested {
                    purchase_id,
                    user_id,
                    items,
                },
                _,
            ) => Self {
                purchase_id: purchase_id.to_string(),
                user_id: user_id.to_string(),
                items: items.clone(),
                status: PurchaseOutcome::Pending,
                order_id: None,
                rejection: None,
                total: None,
                version: event.version,
                created_at: event.occurred_at,
                updated_at: event.occurred_at,
            },
            (Event::PurchaseReserved { total, .. }, Some(current)) => Self {
                total: Some(*total),
                ..next(current)
            },
            (Event::PurchaseCompleted { order_id, .. }, Some(current)) => Self {
                status: PurchaseOutcome::Completed,
                order_id: Some(order_id.to_string()),
                ..next(current)
            },
            (Event::PurchaseRejected { rejection, .. }, Some(current)) => Self {
                status: PurchaseOutcome::Rejected,
                rejection: Some(rejection.clone()),
                ..next(current)
            },
            (Event::PurchaseCancelled { .. }, Some(current)) => Self {
                status: PurchaseOutcome::Cancelled,
                ..next(current)
            },
            _ => return Applied::Ignored,
        };
        Applied::Next {
            row,
            expected_version: event.version - 1,
        }
    }

    pub fn to_item(&self) -> Item {
        let items: Vec<pb::PurchaseItem> = self.items.iter().map(purchase_item_to_pb).collect();
        let mut item = HashMap::from([
            (
                purchases::PURCHASE_ID.into(),
                AttributeValue::S(self.purchase_id.clone()),
            ),
            (
                purchases::USER_ID.into(),
                AttributeValue::S(self.user_id.clone()),
            ),
            (
                purchases::ITEMS.into(),
                // Generated messages always serialise, see `envelope::payload_to_json`.
                AttributeValue::S(serde_json::to_string(&items).unwrap_or_default()),
            ),
            (
                purchases::STATUS.into(),
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
        if let Some(order_id) = &self.order_id {
            item.insert(
                purchases::ORDER_ID.into(),
                AttributeValue::S(order_id.clone()),
            );
        }
        if let Some(rejection) = &self.rejection {
            item.insert(
                purchases::REJECTION.into(),
                AttributeValue::S(
                    serde_json::to_string(&rejection_to_pb(rejection)).unwrap_or_default(),
                ),
            );
        }
        if let Some(total) = &self.total {
            item.insert(
                purchases::TOTAL_CURRENCY.into(),
                AttributeValue::S(total.currency.as_str().to_owned()),
            );
            item.insert(
                purchases::TOTAL_MINOR.into(),
                AttributeValue::N(total.amount_minor.to_string()),
            );
        }
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, RowError> {
        let bad = |name: &str, e: &dyn std::fmt::Display| RowError(format!("{name}: {e}"));
        let items: Vec<pb::PurchaseItem> = serde_json::from_str(get_s(item, purchases::ITEMS)?)
            .map_err(|e| bad(purchases::ITEMS, &e))?;
        let status = get_s(item, purchases::STATUS)?;
        let optional = |name: &str| item.get(name).is_some();
        let rejection = if optional(purchases::REJECTION) {
            let raw: pb::PurchaseRejection =
                serde_json::from_str(get_s(item, purchases::REJECTION)?)
                    .map_err(|e| bad(purchases::REJECTION, &e))?;
            Some(rejection_from_pb(&raw).map_err(|e| bad(purchases::REJECTION, &e))?)
        } else {
            None
        };
        let total = if optional(purchases::TOTAL_CURRENCY) {
            Some(
                Money::parse(
                    get_s(item, purchases::TOTAL_CURRENCY)?,
                    get_n(item, purchases::TOTAL_MINOR)?,
                )
                .map_err(|e| bad(purchases::TOTAL_MINOR, &e))?,
            )
        } else {
            None
        };
        Ok(Self {
            purchase_id: get_s(item, purchases::PURCHASE_ID)?.to_owned(),
            user_id: get_s(item, purchases::USER_ID)?.to_owned(),
            items: purchase_items_from_pb(&items).map_err(|e| bad(purchases::ITEMS, &e))?,
            status: PurchaseOutcome::parse(status)
                .ok_or_else(|| RowError(format!("unknown purchase status {status:?}")))?,
            order_id: if optional(purchases::ORDER_ID) {
                Some(get_s(item, purchases::ORDER_ID)?.to_owned())
            } else {
                None
            },
            rejection,
            total,
            version: get_n(item, read_model::VERSION)?,
            created_at: get_time(item, read_model::CREATED_AT)?,
            updated_at: get_time(item, read_model::UPDATED_AT)?,
        })
    }

    pub fn to_pb(&self) -> pb::Purchase {
        pb::Purchase {
            purchase_id: self.purchase_id.clone(),
            user_id: self.user_id.clone(),
            items: self.items.iter().map(purchase_item_to_pb).collect(),
            status: self.status.to_pb() as i32,
            order_id: self.order_id.clone().unwrap_or_default(),
            rejection: self.rejection.as_ref().map(rejection_to_pb),
            total: self.total.map(money_to_pb),
            version: self.version,
            create_time: Some(timestamp_to_pb(self.created_at)),
            update_time: Some(timestamp_to_pb(self.updated_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use dynabridge_domain::{OrderId, OrderLine, PurchaseId, Quantity, Sku, UserId};
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

    fn next(applied: Applied<PurchaseRow>) -> PurchaseRow {
        match applied {
            Applied::Next { row, .. } => row,
            other => panic!("expected a next row, got {other:?}"),
        }
    }

    #[test]
    fn a_purchase_row_is_pending_until_completed_or_rejected() {
        let purchase_id = PurchaseId::new_random();
        let sku = Sku::parse("MUG").unwrap();
        let two = Quantity::parse(2).unwrap();
        let requested = stored(
            1,
            Event::PurchaseRequested {
                purchase_id,
                user_id: UserId::new_random(),
                items: vec![PurchaseItem {
                    sku: sku.clone(),
                    quantity: two,
                }],
            },
        );
        let row = next(PurchaseRow::apply(None, &requested));
        assert_eq!(row.status, PurchaseOutcome::Pending);
        let total = Money::parse("EUR", 1800).unwrap();
        let reserved = stored(
            2,
            Event::PurchaseReserved {
                purchase_id,
                lines: vec![OrderLine {
                    sku: sku.clone(),
                    quantity: two,
                    unit_price: Money::parse("EUR", 900).unwrap(),
                }],
                total,
            },
        );
        let row = next(PurchaseRow::apply(Some(&row), &reserved));
        assert_eq!(
            (row.status, row.total),
            (PurchaseOutcome::Pending, Some(total))
        );
        let order_id = OrderId::for_purchase(purchase_id);
        let completed = stored(
            3,
            Event::PurchaseCompleted {
                purchase_id,
                order_id,
            },
        );
        let row = next(PurchaseRow::apply(Some(&row), &completed));
        assert!(row.is_decided());
        assert_eq!(row.order_id, Some(order_id.to_string()));
        assert_eq!(PurchaseRow::from_item(&row.to_item()).unwrap(), row);
        assert_eq!(row.to_pb().status, pb::PurchaseStatus::Completed as i32);

        let rejected = stored(
            2,
            Event::PurchaseRejected {
                purchase_id,
                rejection: Rejection::OutOfStock {
                    sku,
                    requested: two,
                    available: 1,
                },
            },
        );
        let first = next(PurchaseRow::apply(None, &requested));
        let row = next(PurchaseRow::apply(Some(&first), &rejected));
        assert_eq!(row.status, PurchaseOutcome::Rejected);
        assert_eq!(PurchaseRow::from_item(&row.to_item()).unwrap(), row);
        let rejection = row.to_pb().rejection.unwrap();
        assert_eq!(
            (
                rejection.reason,
                rejection.sku.as_str(),
                rejection.quantity_left
            ),
            (pb::PurchaseRejectionReason::OutOfStock as i32, "MUG", 1)
        );
    }
}
