//! The domain: value types, the aggregates and their events.
//!
//! Pure code. Nothing here performs I/O or reads a clock, and nothing here
//! imports tonic or the AWS SDK: protobuf messages are converted into these
//! types at the edge, and storage lives in [`dynabridge_event_store`].
//!
//! Each aggregate has `decide(&self, command) -> Result<Vec<Event>, DomainError>`
//! and `apply(self, &event) -> Self`. Versions count events: an aggregate that
//! has seen `n` events is at version `n`, and its next event is `n + 1`.

mod address;
mod error;
mod event;
mod ids;
mod order;
mod product;
mod purchase;
mod requirement;
mod route;
mod user;
mod values;

pub use address::{AddressParts, ShippingAddress};
pub use error::{DomainError, FieldViolation, ValidationError};
pub use event::{AggregateType, Event, StoredEvent};
pub use ids::{
    CREATE_NAMESPACE, OrderId, PRODUCT_NAMESPACE, ProductId, PurchaseId, RouteId, UserId,
};
pub use order::{Order, OrderCommand, OrderLine, OrderLines, OrderState, OrderStatus};
pub use product::{Product, ProductCommand, ProductName, ProductState, StockLevel};
pub use purchase::{
    Coordinates, CreateOrder, Decision, Purchase, PurchaseCommand, PurchaseItem, PurchaseItems,
    PurchaseState, PurchaseStatus, Rejection, StockStep,
};
pub use requirement::{Requirement, UniqueScope};
pub use route::{Distance, Route, RouteCommand, RouteState, RouteStop, RouteStops, route_id_for};
pub use user::{User, UserCommand, UserState};
pub use values::{Currency, Email, Money, Quantity, Sku, UserName};

/// The number of events an aggregate has seen. The first event has version 1.
pub type Version = i64;

/// What the command side needs of an aggregate: decide, then fold.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    type Command: Send + Sync;
    const TYPE: AggregateType;
    fn version(&self) -> Version;
    fn decide(&self, command: &Self::Command) -> Result<Vec<Event>, DomainError>;
    fn apply(self, event: &Event) -> Self;
    /// What appending `events` (decided by this state) requires of the
    /// store besides their versions: unique values claimed or released,
    /// other aggregates that must exist.
    fn requirements(&self, _events: &[Event]) -> Vec<Requirement> {
        Vec::new()
    }
    /// The amount a command's outcome reports, and its retries replay
    /// (an order's total).
    fn reported_total(_events: &[Event]) -> Option<Money> {
        None
    }
}

impl Aggregate for User {
    type Command = UserCommand;
    const TYPE: AggregateType = AggregateType::User;
    fn version(&self) -> Version {
        self.version
    }
    fn decide(&self, command: &UserCommand) -> Result<Vec<Event>, DomainError> {
        User::decide(self, command)
    }
    fn apply(self, event: &Event) -> Self {
        User::apply(self, event)
    }
    fn requirements(&self, events: &[Event]) -> Vec<Requirement> {
        let owner = events.iter().find_map(|event| match event {
            Event::UserCreated { user_id, .. } | Event::UserProfileUpdated { user_id, .. } => {
                Some(*user_id.as_uuid())
            }
            _ => None,
        });
        let Some(owner) = owner else {
            return Vec::new();
        };
        let claims = user::email_claims(self, events);
        let scope = UniqueScope::Email;
        claims
            .claim
            .map(|email| Requirement::Claim {
                scope,
                value: email.as_str().to_owned(),
                owner,
            })
            .into_iter()
            .chain(claims.release.map(|email| Requirement::Release {
                scope,
                value: email.as_str().to_owned(),
                owner,
            }))
            .collect()
    }
}

impl Aggregate for Order {
    type Command = OrderCommand;
    const TYPE: AggregateType = AggregateType::Order;
    fn version(&self) -> Version {
        self.version
    }
    fn decide(&self, command: &OrderCommand) -> Result<Vec<Event>, DomainError> {
        Order::decide(self, command)
    }
    fn apply(self, event: &Event) -> Self {
        Order::apply(self, event)
    }
    fn requirements(&self, events: &[Event]) -> Vec<Requirement> {
        events
            .iter()
            .filter_map(|event| match event {
                // An order is placed by a user who exists.
                Event::OrderCreated { user_id, .. } => Some(Requirement::Exists {
                    aggregate_type: AggregateType::User,
                    id: *user_id.as_uuid(),
                }),
                _ => None,
            })
            .collect()
    }
    fn reported_total(events: &[Event]) -> Option<Money> {
        events.iter().find_map(|event| match event {
            Event::OrderCreated { total, .. } => Some(*total),
            _ => None,
        })
    }
}

impl Aggregate for Product {
    type Command = ProductCommand;
    const TYPE: AggregateType = AggregateType::Product;
    fn version(&self) -> Version {
        self.version
    }
    fn decide(&self, command: &ProductCommand) -> Result<Vec<Event>, DomainError> {
        Product::decide(self, command)
    }
    fn apply(self, event: &Event) -> Self {
        Product::apply(self, event)
    }
}

impl Aggregate for Route {
    type Command = RouteCommand;
    const TYPE: AggregateType = AggregateType::Route;
    fn version(&self) -> Version {
        self.version
    }
    fn decide(&self, command: &RouteCommand) -> Result<Vec<Event>, DomainError> {
        Route::decide(self, command)
    }
    fn apply(self, event: &Event) -> Self {
        Route::apply(self, event)
    }
    fn requirements(&self, events: &[Event]) -> Vec<Requirement> {
        events
            .iter()
            .filter_map(|event| match event {
                // A route is planned for an order that exists.
                Event::RouteCreated { order_id, .. } => Some(Requirement::Exists {
                    aggregate_type: AggregateType::Order,
                    id: *order_id.as_uuid(),
                }),
                _ => None,
            })
            .collect()
    }
}

impl Aggregate for Purchase {
    type Command = PurchaseCommand;
    const TYPE: AggregateType = AggregateType::Purchase;
    fn version(&self) -> Version {
        self.version
    }
    fn decide(&self, command: &PurchaseCommand) -> Result<Vec<Event>, DomainError> {
        Purchase::decide(self, command)
    }
    fn apply(self, event: &Event) -> Self {
        Purchase::apply(self, event)
    }
    fn requirements(&self, events: &[Event]) -> Vec<Requirement> {
        events
            .iter()
            .filter_map(|event| match event {
                // A purchase is asked for by a user who exists.
                Event::PurchaseRequested { user_id, .. } => Some(Requirement::Exists {
                    aggregate_type: AggregateType::User,
                    id: *user_id.as_uuid(),
                }),
                _ => None,
            })
            .collect()
    }
}
