//! A row of `products`: the catalogue entry and the stock, folded with the
//! domain's own [`Product::apply`], so that the stock a query shows is the
//! stock the command side decides on, by one definition.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use dynabridge::convert::{format_time, money_to_pb, timestamp_to_pb};
use dynabridge::pb;
use dynabridge::schema::{products, read_model};
use dynabridge_domain::{
    Event, Money, Product, ProductId, ProductName, ProductState, Sku, StockLevel, StoredEvent,
    Version,
};

use crate::{Applied, Item, RowError, gate, get_n, get_s, get_time};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductRow {
    pub state: ProductState,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProductRow {
    pub fn product_id(&self) -> String {
        self.state.id.to_string()
    }

    /// Whether the product is listed as low on stock.
    pub fn is_low(&self) -> bool {
        self.state.stock <= self.state.reorder_level
    }

    pub fn apply(current: Option<&Self>, event: &StoredEvent) -> Applied<Self> {
        if !matches!(
            event.event,
            Event::ProductCreated { .. }
                | Event::ProductRestocked { .. }
                | Event::ProductPriceChanged { .. }
                | Event::StockReserved { .. }
                | Event::StockReleased { .. }
        ) {
            return Applied::Ignored;
        }
        if let Some(gated) = gate(current, |r| r.version, event) {
            return gated;
        }
        let before = current.map_or_else(Product::default, |row| Product {
            state: Some(row.state.clone()),
            version: row.version,
        });
        let after = before.apply(&event.event);
        // Only a create starts a row: an event at version 1 of another type
        // is not this read model's to invent a product from.
        let Some(state) = after.state else {
            return Applied::Ignored;
        };
        Applied::Next {
            row: Self {
                state,
                version: event.version,
                created_at: current.map_or(event.occurred_at, |row| row.created_at),
                updated_at: event.occurred_at,
            },
            expected_version: event.version - 1,
        }
    }

    pub fn to_item(&self) -> Item {
        let state = &self.state;
        let mut item = HashMap::from([
            (
                products::PRODUCT_ID.into(),
                AttributeValue::S(state.id.to_string()),
            ),
            (
                products::SKU.into(),
                AttributeValue::S(state.sku.as_str().to_owned()),
            ),
            (
                products::NAME.into(),
                AttributeValue::S(state.name.as_str().to_owned()),
            ),
            (
                products::PRICE_CURRENCY.into(),
                AttributeValue::S(state.unit_price.currency.as_str().to_owned()),
            ),
            (
                products::PRICE_MINOR.into(),
                AttributeValue::N(state.unit_price.amount_minor.to_string()),
            ),
            (
                products::STOCK.into(),
                AttributeValue::N(state.stock.get().to_string()),
            ),
            (
                products::RESERVED.into(),
                AttributeValue::N(state.reserved.get().to_string()),
            ),
            (
                products::REORDER_LEVEL.into(),
                AttributeValue::N(state.reorder_level.get().to_string()),
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
        if self.is_low() {
            item.insert(
                products::LOW_STOCK.into(),
                AttributeValue::S(products::LOW_STOCK_VALUE.into()),
            );
        }
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, RowError> {
        let bad = |e: dynabridge_domain::ValidationError| RowError(e.to_string());
        let level = |name| -> Result<StockLevel, RowError> {
            StockLevel::parse(get_n(item, name)?).map_err(bad)
        };
        let id = get_s(item, products::PRODUCT_ID)?;
        let id = ProductId::parse(products::PRODUCT_ID, id).map_err(bad)?;
        let sku = Sku::parse(get_s(item, products::SKU)?).map_err(bad)?;
        if ProductId::for_sku(&sku) != id {
            return Err(RowError(format!(
                "product {id} is not the product of its sku {}",
                sku.as_str()
            )));
        }
        Ok(Self {
            state: ProductState {
                id,
                sku,
                name: ProductName::parse(get_s(item, products::NAME)?).map_err(bad)?,
                unit_price: Money::parse(
                    get_s(item, products::PRICE_CURRENCY)?,
                    get_n(item, products::PRICE_MINOR)?,
                )
                .map_err(bad)?,
                stock: level(products::STOCK)?,
                reserved: level(products::RESERVED)?,
                reorder_level: level(products::REORDER_LEVEL)?,
            },
            version: get_n(item, read_model::VERSION)?,
            created_at: get_time(item, read_model::CREATED_AT)?,
            updated_at: get_time(item, read_model::UPDATED_AT)?,
        })
    }

    pub fn to_pb(&self) -> pb::Product {
        let state = &self.state;
        pb::Product {
            product_id: state.id.to_string(),
            sku: state.sku.as_str().to_owned(),
            name: state.name.as_str().to_owned(),
            unit_price: Some(money_to_pb(state.unit_price)),
            stock: state.stock.get(),
            reserved: state.reserved.get(),
            reorder_level: state.reorder_level.get(),
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
    use dynabridge_domain::{PurchaseId, Quantity, UserId};
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

    fn next(applied: Applied<ProductRow>) -> ProductRow {
        match applied {
            Applied::Next { row, .. } => row,
            other => panic!("expected a next row, got {other:?}"),
        }
    }

    #[test]
    fn a_product_row_folds_its_stock_and_is_listed_low_at_its_reorder_level() {
        let sku = Sku::parse("MUG").unwrap();
        let product_id = ProductId::for_sku(&sku);
        let purchase_id = PurchaseId::new_random();
        let q = |n| Quantity::parse(n).unwrap();
        let events = [
            stored(
                1,
                Event::ProductCreated {
                    product_id,
                    sku,
                    name: ProductName::parse("Mug").unwrap(),
                    unit_price: Money::parse("EUR", 900).unwrap(),
                    initial_stock: StockLevel::parse(5).unwrap(),
                    reorder_level: StockLevel::parse(2).unwrap(),
                },
            ),
            stored(
                2,
                Event::StockReserved {
                    product_id,
                    purchase_id,
                    quantity: q(3),
                },
            ),
            stored(
                3,
                Event::StockReleased {
                    product_id,
                    purchase_id,
                    quantity: q(1),
                },
            ),
        ];
        let row = next(ProductRow::apply(None, &events[0]));
        assert!(!row.is_low());
        assert!(!row.to_item().contains_key(products::LOW_STOCK));
        let row = next(ProductRow::apply(Some(&row), &events[1]));
        assert_eq!((row.state.stock.get(), row.state.reserved.get()), (2, 3));
        assert!(row.is_low());
        assert_eq!(
            row.to_item().get(products::LOW_STOCK),
            Some(&AttributeValue::S("LOW".into()))
        );
        let row = next(ProductRow::apply(Some(&row), &events[2]));
        assert_eq!((row.state.stock.get(), row.state.reserved.get()), (3, 2));
        assert_eq!(row.version, 3);
        assert_eq!(row.created_at, events[0].occurred_at);
        assert_eq!(row.updated_at, events[2].occurred_at);
        assert_eq!(ProductRow::from_item(&row.to_item()).unwrap(), row);
        assert_eq!(
            ProductRow::apply(Some(&row), &events[1]),
            Applied::AlreadyApplied
        );
        let user = stored(
            4,
            Event::UserCreated {
                user_id: UserId::new_random(),
                email: dynabridge_domain::Email::parse("a@example.com").unwrap(),
                name: dynabridge_domain::UserName::parse("A").unwrap(),
            },
        );
        assert_eq!(ProductRow::apply(Some(&row), &user), Applied::Ignored);
    }

    #[test]
    fn a_row_whose_id_is_not_its_sku_s_is_unreadable() {
        let sku = Sku::parse("MUG").unwrap();
        let created = stored(
            1,
            Event::ProductCreated {
                product_id: ProductId::for_sku(&sku),
                sku,
                name: ProductName::parse("Mug").unwrap(),
                unit_price: Money::parse("EUR", 900).unwrap(),
                initial_stock: StockLevel::ZERO,
                reorder_level: StockLevel::ZERO,
            },
        );
        let mut item = next(ProductRow::apply(None, &created)).to_item();
        item.insert(products::SKU.into(), AttributeValue::S("CUP".into()));
        assert!(ProductRow::from_item(&item).is_err());
    }
}
