//! What appending an aggregate's new events requires of the store, beside
//! the events' own versions. The aggregate declares it
//! ([`crate::Aggregate::requirements`]); the event store turns each into a
//! condition of the same transaction, so that the events land only if
//! every requirement holds.

use uuid::Uuid;

use crate::{AggregateType, DomainError};

/// A set of values of which each belongs to one aggregate at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UniqueScope {
    /// Users' email addresses.
    Email,
}

impl UniqueScope {
    /// What a client is told when the value belongs to another aggregate.
    pub fn taken_message(self) -> &'static str {
        match self {
            Self::Email => "the email address belongs to another user",
        }
    }
}

/// One condition of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `value` becomes `owner`'s in `scope`; the append fails if another
    /// aggregate holds it.
    Claim {
        scope: UniqueScope,
        value: String,
        owner: Uuid,
    },
    /// `owner` gives up `value`, which it holds.
    Release {
        scope: UniqueScope,
        value: String,
        owner: Uuid,
    },
    /// Another aggregate, of this type, must exist.
    Exists {
        aggregate_type: AggregateType,
        id: Uuid,
    },
    /// Another aggregate must still be at `version`: no event after it (at
    /// 0, it must not exist). For a decision made on that aggregate's
    /// state, which holds only while nothing has changed it.
    Unchanged {
        aggregate_type: AggregateType,
        id: Uuid,
        version: crate::Version,
    },
}

impl Requirement {
    /// Why the command is refused when the store finds this requirement
    /// unmet. A release that does not hold is no refusal but a store out of
    /// step with its aggregate ([`DomainError::NotHeld`]).
    pub fn unmet(&self) -> DomainError {
        match self {
            Self::Claim { scope, .. } => DomainError::Taken(*scope),
            Self::Exists { aggregate_type, id } => DomainError::NotFound {
                kind: aggregate_type.kind(),
                id: id.to_string(),
            },
            Self::Release { scope, .. } => DomainError::NotHeld(*scope),
            Self::Unchanged {
                aggregate_type,
                id,
                version,
            } => DomainError::Changed {
                kind: aggregate_type.kind(),
                id: id.to_string(),
                version: *version,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Aggregate, Email, Event, Money, Order, OrderId, OrderLine, OrderStatus, Quantity, Sku,
        User, UserId, UserName,
    };

    fn email(raw: &str) -> Email {
        Email::parse(raw).unwrap()
    }

    fn created(id: UserId, address: &str) -> Event {
        Event::UserCreated {
            user_id: id,
            email: email(address),
            name: UserName::parse("Ann").unwrap(),
        }
    }

    #[test]
    fn a_new_user_claims_its_email() {
        let id = UserId::new_random();
        assert_eq!(
            User::default().requirements(&[created(id, "ann@example.com")]),
            vec![Requirement::Claim {
                scope: UniqueScope::Email,
                value: "ann@example.com".into(),
                owner: *id.as_uuid(),
            }]
        );
    }

    #[test]
    fn a_new_email_is_claimed_and_the_old_one_released() {
        let id = UserId::new_random();
        let user = User::default().apply(&created(id, "ann@example.com"));
        let change = Event::UserProfileUpdated {
            user_id: id,
            name: None,
            email: Some(email("ann@example.org")),
        };
        let owner = *id.as_uuid();
        assert_eq!(
            user.requirements(&[change]),
            vec![
                Requirement::Claim {
                    scope: UniqueScope::Email,
                    value: "ann@example.org".into(),
                    owner,
                },
                Requirement::Release {
                    scope: UniqueScope::Email,
                    value: "ann@example.com".into(),
                    owner,
                },
            ]
        );
        let rename = Event::UserProfileUpdated {
            user_id: id,
            name: Some(UserName::parse("Ann B.").unwrap()),
            email: None,
        };
        assert_eq!(user.requirements(&[rename]), Vec::new());
    }

    #[test]
    fn an_order_requires_its_user_and_reports_its_total() {
        let (order_id, user_id) = (OrderId::new_random(), UserId::new_random());
        let total = Money::parse("EUR", 300).unwrap();
        let placed = Event::OrderCreated {
            order_id,
            user_id,
            items: vec![OrderLine {
                sku: Sku::parse("SKU-1").unwrap(),
                quantity: Quantity::parse(3).unwrap(),
                unit_price: Money::parse("EUR", 100).unwrap(),
            }],
            total,
            shipping_address: None,
            purchase_id: None,
        };
        let exists = Requirement::Exists {
            aggregate_type: AggregateType::User,
            id: *user_id.as_uuid(),
        };
        assert_eq!(
            Order::default().requirements(std::slice::from_ref(&placed)),
            vec![exists.clone()]
        );
        assert_eq!(Order::reported_total(&[placed]), Some(total));
        let shipped = Event::OrderStatusUpdated {
            order_id,
            status: OrderStatus::Shipped,
            previous_status: OrderStatus::Processing,
        };
        assert_eq!(Order::default().requirements(&[shipped]), Vec::new());
        assert_eq!(
            exists.unmet().to_string(),
            format!("user {} not found", user_id)
        );
    }

    #[test]
    fn a_changed_aggregate_is_a_conflict_naming_it_and_the_version() {
        let id = uuid::Uuid::new_v4();
        let unchanged = Requirement::Unchanged {
            aggregate_type: AggregateType::User,
            id,
            version: 3,
        };
        let err = unchanged.unmet();
        assert!(
            matches!(err, DomainError::Changed { version: 3, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("user {id} changed after version 3; read it again and retry")
        );
    }

    #[test]
    fn a_taken_claim_is_refused_with_its_scope_s_message() {
        let claim = Requirement::Claim {
            scope: UniqueScope::Email,
            value: "ann@example.com".into(),
            owner: uuid::Uuid::new_v4(),
        };
        let err = claim.unmet();
        assert_eq!(err, DomainError::Taken(UniqueScope::Email));
        assert_eq!(err.to_string(), "the email address belongs to another user");
    }
}
