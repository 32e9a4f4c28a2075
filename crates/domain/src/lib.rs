//! The domain: value types, the two aggregates and their events.
//!
//! Pure code. Nothing here performs I/O or reads a clock, and nothing here
//! imports tonic or the AWS SDK: protobuf messages are converted into these
//! types at the edge, and storage lives in [`dynabridge_event_store`].
//!
//! Each aggregate has `decide(&self, command) -> Result<Vec<Event>, DomainError>`
//! and `apply(self, &event) -> Self`. Versions count events: an aggregate that
//! has seen `n` events is at version `n`, and its next event is `n + 1`.

mod error;
mod event;
mod ids;
mod order;
mod user;
mod values;

pub use error::{DomainError, FieldViolation, ValidationError};
pub use event::{AggregateType, Event, StoredEvent};
pub use ids::{OrderId, UserId};
pub use order::{Order, OrderCommand, OrderLine, OrderLines, OrderState, OrderStatus};
pub use user::{EmailClaims, User, UserCommand, UserState, email_claims};
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
    /// The email ownership changes that appending `events` makes.
    fn email_claims(&self, _events: &[Event]) -> EmailClaims {
        EmailClaims::default()
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
    fn email_claims(&self, events: &[Event]) -> EmailClaims {
        email_claims(self, events)
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
}
