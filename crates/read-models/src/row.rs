//! Any read model's row, for code that handles them all alike: the
//! projector's writer and a rebuild's fold.

use dynabridge::schema::{ReadModelTables, order_summaries, products, purchases, user_profiles};
use dynabridge_domain::{AggregateType, StoredEvent, Version};

use crate::{Applied, Item, OrderSummaryRow, ProductRow, PurchaseRow, RowError, UserProfileRow};

/// The read model an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    UserProfiles,
    OrderSummaries,
    Products,
    Purchases,
}

impl Model {
    /// The model `event` feeds, if any.
    pub fn of(event: &StoredEvent) -> Option<Self> {
        Self::for_type(event.event.aggregate_type())
    }

    /// The model an aggregate type's row is in; none for a type no query
    /// reads (a route: its consumers are on the bus).
    pub fn for_type(aggregate_type: AggregateType) -> Option<Self> {
        match aggregate_type {
            AggregateType::User => Some(Self::UserProfiles),
            AggregateType::Order => Some(Self::OrderSummaries),
            AggregateType::Product => Some(Self::Products),
            AggregateType::Purchase => Some(Self::Purchases),
            AggregateType::Route => None,
        }
    }

    /// The model's table in a generation, and its key attribute.
    pub fn table_and_key(self, tables: &ReadModelTables) -> (&str, &'static str) {
        match self {
            Self::UserProfiles => (&tables.user_profiles, user_profiles::USER_ID),
            Self::OrderSummaries => (&tables.order_summaries, order_summaries::ORDER_ID),
            Self::Products => (&tables.products, products::PRODUCT_ID),
            Self::Purchases => (&tables.purchases, purchases::PURCHASE_ID),
        }
    }
}

/// A row of any read model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    User(UserProfileRow),
    Order(OrderSummaryRow),
    Product(ProductRow),
    Purchase(PurchaseRow),
}

impl Row {
    pub fn version(&self) -> Version {
        match self {
            Self::User(r) => r.version,
            Self::Order(r) => r.version,
            Self::Product(r) => r.version,
            Self::Purchase(r) => r.version,
        }
    }

    pub fn model(&self) -> Model {
        match self {
            Self::User(_) => Model::UserProfiles,
            Self::Order(_) => Model::OrderSummaries,
            Self::Product(_) => Model::Products,
            Self::Purchase(_) => Model::Purchases,
        }
    }

    pub fn id(&self) -> String {
        match self {
            Self::User(r) => r.user_id.clone(),
            Self::Order(r) => r.order_id.clone(),
            Self::Product(r) => r.product_id(),
            Self::Purchase(r) => r.purchase_id.clone(),
        }
    }

    /// The same row at version `version`.
    #[must_use]
    pub fn with_version(&self, version: Version) -> Self {
        match self {
            Self::User(r) => Self::User(UserProfileRow {
                version,
                ..r.clone()
            }),
            Self::Order(r) => Self::Order(OrderSummaryRow {
                version,
                ..r.clone()
            }),
            Self::Product(r) => Self::Product(ProductRow {
                version,
                ..r.clone()
            }),
            Self::Purchase(r) => Self::Purchase(PurchaseRow {
                version,
                ..r.clone()
            }),
        }
    }

    /// `event` applied to `current`, a row of `model` or none.
    pub fn apply(model: Model, current: Option<&Row>, event: &StoredEvent) -> Applied<Row> {
        match model {
            Model::UserProfiles => {
                let current = match current {
                    Some(Row::User(r)) => Some(r),
                    _ => None,
                };
                lift(UserProfileRow::apply(current, event), Row::User)
            }
            Model::OrderSummaries => {
                let current = match current {
                    Some(Row::Order(r)) => Some(r),
                    _ => None,
                };
                lift(OrderSummaryRow::apply(current, event), Row::Order)
            }
            Model::Products => {
                let current = match current {
                    Some(Row::Product(r)) => Some(r),
                    _ => None,
                };
                lift(ProductRow::apply(current, event), Row::Product)
            }
            Model::Purchases => {
                let current = match current {
                    Some(Row::Purchase(r)) => Some(r),
                    _ => None,
                };
                lift(PurchaseRow::apply(current, event), Row::Purchase)
            }
        }
    }

    pub fn to_item(&self) -> Item {
        match self {
            Self::User(r) => r.to_item(),
            Self::Order(r) => r.to_item(),
            Self::Product(r) => r.to_item(),
            Self::Purchase(r) => r.to_item(),
        }
    }

    pub fn from_item(model: Model, item: &Item) -> Result<Self, RowError> {
        match model {
            Model::UserProfiles => UserProfileRow::from_item(item).map(Self::User),
            Model::OrderSummaries => OrderSummaryRow::from_item(item).map(Self::Order),
            Model::Products => ProductRow::from_item(item).map(Self::Product),
            Model::Purchases => PurchaseRow::from_item(item).map(Self::Purchase),
        }
    }
}

fn lift<R>(applied: Applied<R>, wrap: impl FnOnce(R) -> Row) -> Applied<Row> {
    match applied {
        Applied::Next {
            row,
            expected_version,
        } => Applied::Next {
            row: wrap(row),
            expected_version,
        },
        Applied::AlreadyApplied => Applied::AlreadyApplied,
        Applied::Gap { from, to } => Applied::Gap { from, to },
        Applied::Ignored => Applied::Ignored,
    }
}
