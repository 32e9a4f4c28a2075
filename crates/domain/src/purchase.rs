//! A purchase (seed 004): asked for at once, then taken through its steps
//! by the purchase process: stock reserved on every product in one
//! transaction (or the purchase rejected, naming the sku and what is left),
//! then the order created and the purchase completed in another. Cancelling
//! the order releases the stock.
//!
//! The steps that touch other aggregates are [`Coordinates`] decisions: the
//! purchase decides on the other aggregates' states as read, and their
//! events are appended in the same transaction as its own, each
//! conditioned on the version read.

use std::collections::HashSet;

use uuid::Uuid;

use super::{
    Aggregate, DomainError, Event, FieldViolation, Order, OrderId, OrderLine, OrderLines, Product,
    ProductCommand, ProductId, Quantity, Sku, UserId, ValidationError, Version,
};

/// One item of a purchase: a product, by its sku, and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseItem {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// The items of a purchase: 1 to [`PurchaseItems::MAX`], each sku once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseItems(Vec<PurchaseItem>);

impl PurchaseItems {
    /// A purchase reserves every item in one transaction, with its own
    /// event and its request's record: DynamoDB takes 100 items in one.
    pub const MAX: usize = 25;

    pub fn new(items: Vec<PurchaseItem>) -> Result<Self, ValidationError> {
        if items.is_empty() {
            return Err(ValidationError::single(
                "items",
                "must have at least 1 item",
            ));
        }
        if items.len() > Self::MAX {
            return Err(ValidationError::single(
                "items",
                format!("must have at most {} items", Self::MAX),
            ));
        }
        let mut seen = HashSet::new();
        let mut errors = ValidationError::default();
        for (i, item) in items.iter().enumerate() {
            if !seen.insert(item.sku.as_str()) {
                errors.push(FieldViolation::new(
                    format!("items[{i}].sku"),
                    "names a product an earlier item names; give its total quantity once",
                ));
            }
        }
        errors.into_result()?;
        Ok(Self(items))
    }

    pub fn as_slice(&self) -> &[PurchaseItem] {
        &self.0
    }
}

/// Why the purchase process rejected a purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A product has fewer units left than the purchase asks for.
    OutOfStock {
        sku: Sku,
        requested: Quantity,
        available: i64,
    },
    /// No product has this sku.
    ProductNotFound { sku: Sku },
    /// The products are priced in more than one currency: one order cannot
    /// hold them.
    MixedCurrencies,
}

impl Rejection {
    /// The name stored and published (`OUT_OF_STOCK`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::OutOfStock { .. } => "OUT_OF_STOCK",
            Self::ProductNotFound { .. } => "PRODUCT_NOT_FOUND",
            Self::MixedCurrencies => "MIXED_CURRENCIES",
        }
    }
}

/// Where a purchase is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PurchaseStatus {
    /// Asked for; the purchase process has not reserved its stock yet.
    Requested,
    /// Its stock is reserved; its order is being created.
    Reserved,
    /// Its order is created.
    Completed,
    Rejected,
    /// Its order was cancelled and its stock released.
    Cancelled,
}

impl PurchaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Reserved => "RESERVED",
            Self::Completed => "COMPLETED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purchase {
    pub state: Option<PurchaseState>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseState {
    pub id: PurchaseId,
    pub user_id: UserId,
    pub items: Vec<PurchaseItem>,
    pub status: PurchaseStatus,
    /// The lines reserved, at the prices of the moment: the order's lines.
    pub lines: Vec<OrderLine>,
    pub order_id: Option<OrderId>,
}

use super::PurchaseId;

impl OrderId {
    /// The order a purchase creates: name-based on the purchase's id, so
    /// that a step repeated names the same order.
    pub fn for_purchase(purchase_id: PurchaseId) -> Self {
        Self::from_uuid(Uuid::new_v5(
            &crate::CREATE_NAMESPACE,
            format!("purchase-order/{purchase_id}").as_bytes(),
        ))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurchaseCommand {
    /// Asks for a purchase: appends it, nothing else. The user must exist
    /// (checked by the store, in the same transaction).
    Request {
        id: PurchaseId,
        user_id: UserId,
        items: PurchaseItems,
    },
    /// Rejects a purchase the process cannot take further, before it holds
    /// any stock.
    Reject {
        id: PurchaseId,
        rejection: Rejection,
    },
}

/// A decision of one aggregate that appends to others of type `P` too, in
/// one transaction: the others' events are conditioned on the versions
/// decided on, so the decision lands only if none of them moved.
pub trait Coordinates<P: Aggregate>: Aggregate {
    type Step: Send + Sync;

    /// The aggregates of type `P` the step decides on, by id: read
    /// consistently before it is decided.
    fn participants(&self, step: &Self::Step) -> Vec<Uuid>;

    /// The step decided on this aggregate and `participants` (in the order
    /// [`Coordinates::participants`] named them): this aggregate's events,
    /// and each participant's.
    fn decide_with(
        &self,
        step: &Self::Step,
        participants: &[(Uuid, P)],
    ) -> Result<Decision, DomainError>;
}

/// What a [`Coordinates`] step decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The deciding aggregate's events.
    pub own: Vec<Event>,
    /// Each participant's events, by id; a participant with none is left
    /// out.
    pub others: Vec<(Uuid, Vec<Event>)>,
}

/// The purchase process's steps on products.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StockStep {
    /// Reserves every item's stock, or rejects the purchase.
    Reserve,
    /// Gives back the stock of a purchase whose order was cancelled.
    Release { order_id: OrderId },
}

/// The purchase process's step on its order: create it, and complete the
/// purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOrder;

impl Purchase {
    fn state(&self, id: &str) -> Result<&PurchaseState, DomainError> {
        self.state.as_ref().ok_or_else(|| DomainError::NotFound {
            kind: "purchase",
            id: id.to_owned(),
        })
    }

    /// Its state and id, for a step of the process: a purchase never asked
    /// for has none to take.
    fn asked(&self) -> Result<(&PurchaseState, String), DomainError> {
        self.state
            .as_ref()
            .map(|state| (state, state.id.to_string()))
            .ok_or(DomainError::NotFound {
                kind: "purchase",
                id: String::new(),
            })
    }

    pub fn decide(&self, command: &PurchaseCommand) -> Result<Vec<Event>, DomainError> {
        match command {
            PurchaseCommand::Request { id, user_id, items } => {
                if self.state.is_some() {
                    return Err(DomainError::AlreadyExists {
                        kind: "purchase",
                        id: id.to_string(),
                    });
                }
                Ok(vec![Event::PurchaseRequested {
                    purchase_id: *id,
                    user_id: *user_id,
                    items: items.as_slice().to_vec(),
                }])
            }
            PurchaseCommand::Reject { id, rejection } => {
                let state = self.state(&id.to_string())?;
                match state.status {
                    PurchaseStatus::Requested => Ok(vec![Event::PurchaseRejected {
                        purchase_id: *id,
                        rejection: rejection.clone(),
                    }]),
                    // Already decided: nothing more happens.
                    PurchaseStatus::Rejected => Ok(Vec::new()),
                    other => Err(DomainError::InvalidStep {
                        kind: "purchase",
                        id: id.to_string(),
                        state: other.as_str(),
                        step: "reject",
                    }),
                }
            }
        }
    }

    pub fn apply(mut self, event: &Event) -> Self {
        match (event, self.state.as_mut()) {
            (
                Event::PurchaseRequested {
                    purchase_id,
                    user_id,
                    items,
                },
                _,
            ) => {
                self.state = Some(PurchaseState {
                    id: *purchase_id,
                    user_id: *user_id,
                    items: items.clone(),
                    status: PurchaseStatus::Requested,
                    lines: Vec::new(),
                    order_id: None,
                });
            }
            (Event::PurchaseReserved { lines, .. }, Some(state)) => {
                state.status = PurchaseStatus::Reserved;
                state.lines = lines.clone();
            }
            (Event::PurchaseCompleted { order_id, .. }, Some(state)) => {
                state.status = PurchaseStatus::Completed;
                state.order_id = Some(*order_id);
            }
            (Event::PurchaseRejected { .. }, Some(state)) => {
                state.status = PurchaseStatus::Rejected;
            }
            (Event::PurchaseCancelled { .. }, Some(state)) => {
                state.status = PurchaseStatus::Cancelled;
            }
            (
                Event::PurchaseReserved { .. }
                | Event::PurchaseCompleted { .. }
                | Event::PurchaseRejected { .. }
                | Event::PurchaseCancelled { .. },
                None,
            ) => {}
            _ => return self,
        }
        self.version += 1;
        self
    }
}

impl Coordinates<Product> for Purchase {
    type Step = StockStep;

    fn participants(&self, step: &StockStep) -> Vec<Uuid> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let skus: Vec<&Sku> = match step {
            StockStep::Reserve => state.items.iter().map(|i| &i.sku).collect(),
            StockStep::Release { .. } => state.lines.iter().map(|l| &l.sku).collect(),
        };
        skus.into_iter()
            .map(|sku| *ProductId::for_sku(sku).as_uuid())
            .collect()
    }

    fn decide_with(
        &self,
        step: &StockStep,
        products: &[(Uuid, Product)],
    ) -> Result<Decision, DomainError> {
        let (state, id) = self.asked()?;
        let purchase_id = state.id;
        match (step, state.status) {
            (StockStep::Reserve, PurchaseStatus::Requested) => {}
            (StockStep::Release { order_id }, PurchaseStatus::Completed)
                if state.order_id == Some(*order_id) => {}
            // Done already: a step repeated changes nothing.
            (StockStep::Reserve, PurchaseStatus::Reserved | PurchaseStatus::Completed)
            | (StockStep::Reserve, PurchaseStatus::Rejected)
            | (StockStep::Release { .. }, PurchaseStatus::Cancelled) => {
                return Ok(Decision::default());
            }
            (step, status) => {
                return Err(DomainError::InvalidStep {
                    kind: "purchase",
                    id,
                    state: status.as_str(),
                    step: match step {
                        StockStep::Reserve => "reserve",
                        StockStep::Release { .. } => "release",
                    },
                });
            }
        }
        let reject = |rejection| {
            Ok(Decision {
                own: vec![Event::PurchaseRejected {
                    purchase_id,
                    rejection,
                }],
                others: Vec::new(),
            })
        };
        match step {
            StockStep::Reserve => {
                let mut lines = Vec::new();
                let mut others = Vec::new();
                for (item, (product_id, product)) in state.items.iter().zip(products) {
                    let Some(product_state) = &product.state else {
                        return reject(Rejection::ProductNotFound {
                            sku: item.sku.clone(),
                        });
                    };
                    let reserve = ProductCommand::Reserve {
                        sku: item.sku.clone(),
                        purchase_id,
                        quantity: item.quantity,
                    };
                    match product.decide(&reserve) {
                        Ok(events) => others.push((*product_id, events)),
                        Err(DomainError::OutOfStock { available, .. }) => {
                            return reject(Rejection::OutOfStock {
                                sku: item.sku.clone(),
                                requested: item.quantity,
                                available,
                            });
                        }
                        Err(other) => return Err(other),
                    }
                    lines.push(OrderLine {
                        sku: item.sku.clone(),
                        quantity: item.quantity,
                        unit_price: product_state.unit_price,
                    });
                }
                // One order holds them all: one currency, a total that fits.
                let Ok(order_lines) = OrderLines::new(lines.clone()) else {
                    return reject(Rejection::MixedCurrencies);
                };
                let total = order_lines.total().map_err(DomainError::Invalid)?;
                Ok(Decision {
                    own: vec![Event::PurchaseReserved {
                        purchase_id,
                        lines,
                        total,
                    }],
                    others,
                })
            }
            StockStep::Release { order_id } => {
                let mut others = Vec::new();
                for (line, (product_id, product)) in state.lines.iter().zip(products) {
                    let release = ProductCommand::Release {
                        sku: line.sku.clone(),
                        purchase_id,
                        quantity: line.quantity,
                    };
                    others.push((*product_id, product.decide(&release)?));
                }
                Ok(Decision {
                    own: vec![Event::PurchaseCancelled {
                        purchase_id,
                        order_id: *order_id,
                    }],
                    others,
                })
            }
        }
    }
}

impl Coordinates<Order> for Purchase {
    type Step = CreateOrder;

    fn participants(&self, _: &CreateOrder) -> Vec<Uuid> {
        self.state
            .as_ref()
            .map(|s| vec![*OrderId::for_purchase(s.id).as_uuid()])
            .unwrap_or_default()
    }

    fn decide_with(
        &self,
        _: &CreateOrder,
        orders: &[(Uuid, Order)],
    ) -> Result<Decision, DomainError> {
        let (state, id) = self.asked()?;
        match state.status {
            PurchaseStatus::Reserved => {}
            PurchaseStatus::Completed | PurchaseStatus::Cancelled => {
                return Ok(Decision::default());
            }
            other => {
                return Err(DomainError::InvalidStep {
                    kind: "purchase",
                    id,
                    state: other.as_str(),
                    step: "create its order",
                });
            }
        }
        let order_id = OrderId::for_purchase(state.id);
        let order = orders
            .iter()
            .find(|(id, _)| id == order_id.as_uuid())
            .map(|(_, order)| order.clone())
            .unwrap_or_default();
        let create = super::OrderCommand::Create {
            id: order_id,
            user_id: state.user_id,
            items: OrderLines::new(state.lines.clone())?,
            expected_total: None,
            shipping_address: None,
            purchase_id: Some(state.id),
        };
        let created = order.decide(&create)?;
        Ok(Decision {
            own: vec![Event::PurchaseCompleted {
                purchase_id: state.id,
                order_id,
            }],
            others: vec![(*order_id.as_uuid(), created)],
        })
    }
}
