use super::{
    DomainError, Event, FieldViolation, Money, OrderId, PurchaseId, Quantity, ShippingAddress, Sku,
    UserId, ValidationError, Version,
};

/// Where an order is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Created,
    Processing,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        Self::Created,
        Self::Processing,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    /// Whether an order may move from `self` to `next`:
    /// CREATED -> PROCESSING -> SHIPPED -> DELIVERED, and CREATED or
    /// PROCESSING -> CANCELLED.
    pub fn can_move_to(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Created, Processing)
                | (Processing, Shipped)
                | (Shipped, Delivered)
                | (Created, Cancelled)
                | (Processing, Cancelled)
        )
    }

    /// The name stored in read models and indexes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Processing => "PROCESSING",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Money,
}

/// The lines of an order: 1 to 100 of them, all in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLines(Vec<OrderLine>);

impl OrderLines {
    pub const MAX: usize = 100;

    /// Checks the rules that span lines. Field paths are relative to the
    /// request (`items`, `items[3].unit_price.currency_code`).
    pub fn new(lines: Vec<OrderLine>) -> Result<Self, ValidationError> {
        if lines.is_empty() {
            return Err(ValidationError::single(
                "items",
                "must have at least 1 item",
            ));
        }
        if lines.len() > Self::MAX {
            return Err(ValidationError::single(
                "items",
                "must have at most 100 items",
            ));
        }
        let currency = lines[0].unit_price.currency;
        let mut errors = ValidationError::default();
        for (i, line) in lines.iter().enumerate().skip(1) {
            if line.unit_price.currency != currency {
                errors.push(FieldViolation::new(
                    format!("items[{i}].unit_price.currency_code"),
                    format!("must be {currency}, the currency of the first item"),
                ));
            }
        }
        errors.into_result()?;
        Ok(Self(lines))
    }

    /// The sum of `quantity * unit_price`, or an error when it does not fit.
    pub fn total(&self) -> Result<Money, ValidationError> {
        let overflow = || ValidationError::single("items", "the order total is too large");
        let currency = self.0[0].unit_price.currency;
        self.0.iter().try_fold(
            Money {
                currency,
                amount_minor: 0,
            },
            |sum, line| {
                line.unit_price
                    .times(line.quantity)
                    .and_then(|amount| sum.plus(amount))
                    .ok_or_else(overflow)
            },
        )
    }

    pub fn as_slice(&self) -> &[OrderLine] {
        &self.0
    }
}

/// An order as the command side sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Order {
    pub state: Option<OrderState>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderState {
    pub id: OrderId,
    pub user_id: UserId,
    pub items: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub shipping_address: Option<ShippingAddress>,
    /// The purchase that placed it, if one did.
    pub purchase_id: Option<PurchaseId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    /// Places an order. The user's existence is checked by the store, in the
    /// same transaction as the append.
    Create {
        id: OrderId,
        user_id: UserId,
        items: OrderLines,
        /// The total the client expects; it must match the computed one.
        expected_total: Option<Money>,
        shipping_address: Option<ShippingAddress>,
        /// The purchase placing it, when the purchase process does.
        purchase_id: Option<PurchaseId>,
    },
    UpdateStatus {
        id: OrderId,
        status: OrderStatus,
    },
}

impl Order {
    pub fn decide(&self, command: &OrderCommand) -> Result<Vec<Event>, DomainError> {
        match (command, &self.state) {
            (
                OrderCommand::Create {
                    id,
                    user_id,
                    items,
                    expected_total,
                    shipping_address,
                    purchase_id,
                },
                None,
            ) => {
                let total = items.total()?;
                if let Some(expected) = expected_total
                    && *expected != total
                {
                    return Err(ValidationError::single(
                        "total",
                        format!("does not match the total of the items, {total}"),
                    )
                    .into());
                }
                Ok(vec![Event::OrderCreated {
                    order_id: *id,
                    user_id: *user_id,
                    items: items.as_slice().to_vec(),
                    total,
                    shipping_address: shipping_address.clone(),
                    purchase_id: *purchase_id,
                }])
            }
            (OrderCommand::Create { id, .. }, Some(_)) => Err(DomainError::AlreadyExists {
                kind: "order",
                id: id.to_string(),
            }),
            (OrderCommand::UpdateStatus { id, .. }, None) => Err(DomainError::NotFound {
                kind: "order",
                id: id.to_string(),
            }),
            (OrderCommand::UpdateStatus { id, status }, Some(state)) => {
                if !state.status.can_move_to(*status) {
                    return Err(DomainError::InvalidTransition {
                        id: id.to_string(),
                        from: state.status,
                        to: *status,
                    });
                }
                Ok(vec![Event::OrderStatusUpdated {
                    order_id: *id,
                    status: *status,
                    previous_status: state.status,
                }])
            }
        }
    }

    pub fn apply(mut self, event: &Event) -> Self {
        match event {
            Event::OrderCreated {
                order_id,
                user_id,
                items,
                total,
                shipping_address,
                purchase_id,
            } => {
                self.state = Some(OrderState {
                    id: *order_id,
                    user_id: *user_id,
                    items: items.clone(),
                    total: *total,
                    status: OrderStatus::Created,
                    shipping_address: shipping_address.clone(),
                    purchase_id: *purchase_id,
                });
            }
            Event::OrderStatusUpdated { status, .. } => {
                if let Some(state) = self.state.as_mut() {
                    state.status = *status;
                }
            }
            _ => return self,
        }
        self.version += 1;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    fn line(sku: &str, quantity: i64, price: i64, currency: &str) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::parse(quantity).unwrap(),
            unit_price: Money::parse(currency, price).unwrap(),
        }
    }

    fn usd(amount: i64) -> Money {
        Money::new(Currency::parse("USD").unwrap(), amount).unwrap()
    }

    fn created(id: OrderId) -> Event {
        Event::OrderCreated {
            order_id: id,
            user_id: UserId::new_random(),
            items: vec![line("laptop", 1, 99_999, "USD")],
            total: usd(99_999),
            shipping_address: None,
            purchase_id: None,
        }
    }

    fn given(events: &[Event]) -> Order {
        events.iter().fold(Order::default(), Order::apply)
    }

    fn status_update(id: OrderId, from: OrderStatus, to: OrderStatus) -> Event {
        Event::OrderStatusUpdated {
            order_id: id,
            status: to,
            previous_status: from,
        }
    }

    #[test]
    fn create_computes_the_total() {
        let id = OrderId::new_random();
        let user_id = UserId::new_random();
        let items =
            OrderLines::new(vec![line("a", 2, 1_999, "USD"), line("b", 3, 500, "USD")]).unwrap();
        let events = given(&[])
            .decide(&OrderCommand::Create {
                id,
                user_id,
                items: items.clone(),
                expected_total: Some(usd(5_498)),
                shipping_address: None,
                purchase_id: None,
            })
            .unwrap();
        assert_eq!(
            events,
            vec![Event::OrderCreated {
                order_id: id,
                user_id,
                items: items.as_slice().to_vec(),
                total: usd(5_498),
                shipping_address: None,
                purchase_id: None,
            }]
        );
    }

    #[test]
    fn create_rejects_a_wrong_client_total() {
        let items = OrderLines::new(vec![line("a", 2, 1_999, "USD")]).unwrap();
        let err = given(&[])
            .decide(&OrderCommand::Create {
                id: OrderId::new_random(),
                user_id: UserId::new_random(),
                items,
                expected_total: Some(usd(3_997)),
                shipping_address: None,
                purchase_id: None,
            })
            .unwrap_err();
        let DomainError::Invalid(err) = err else {
            panic!("expected invalid, got {err:?}");
        };
        assert_eq!(err.violations[0].field, "total");
    }

    #[test]
    fn lines_must_be_1_to_100_in_one_currency() {
        assert_eq!(
            OrderLines::new(vec![]).unwrap_err().violations[0].field,
            "items"
        );
        assert!(OrderLines::new(vec![line("a", 1, 1, "USD"); 100]).is_ok());
        assert!(OrderLines::new(vec![line("a", 1, 1, "USD"); 101]).is_err());
        let err = OrderLines::new(vec![
            line("a", 1, 1, "USD"),
            line("b", 1, 1, "USD"),
            line("c", 1, 1, "EUR"),
        ])
        .unwrap_err();
        assert_eq!(err.violations[0].field, "items[2].unit_price.currency_code");
    }

    #[test]
    fn a_total_that_overflows_is_invalid() {
        let items = OrderLines::new(vec![
            line("a", 1_000_000, i64::MAX / 1_000_000, "USD"),
            line("b", 1_000_000, i64::MAX / 1_000_000, "USD"),
        ])
        .unwrap();
        assert!(items.total().is_err());
    }

    #[test]
    fn status_follows_the_life_cycle() {
        use OrderStatus::*;
        let id = OrderId::new_random();
        let mut order = given(&[created(id)]);
        for next in [Processing, Shipped, Delivered] {
            let events = order
                .decide(&OrderCommand::UpdateStatus { id, status: next })
                .unwrap();
            order = events.iter().fold(order, Order::apply);
            assert_eq!(order.state.as_ref().unwrap().status, next);
        }
        assert_eq!(order.version, 4);
    }

    #[test]
    fn every_transition_outside_the_life_cycle_is_refused_naming_both_statuses() {
        use OrderStatus::*;
        let allowed = [
            (Created, Processing),
            (Processing, Shipped),
            (Shipped, Delivered),
            (Created, Cancelled),
            (Processing, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let id = OrderId::new_random();
                let mut history = vec![created(id)];
                // Walk the order to `from` along allowed transitions.
                let path: &[OrderStatus] = match from {
                    Created => &[],
                    Processing => &[Processing],
                    Shipped => &[Processing, Shipped],
                    Delivered => &[Processing, Shipped, Delivered],
                    Cancelled => &[Cancelled],
                };
                let mut current = Created;
                for step in path {
                    history.push(status_update(id, current, *step));
                    current = *step;
                }
                let result = given(&history).decide(&OrderCommand::UpdateStatus { id, status: to });
                if allowed.contains(&(from, to)) {
                    assert_eq!(
                        result.unwrap(),
                        vec![status_update(id, from, to)],
                        "{from:?} -> {to:?}"
                    );
                } else {
                    assert!(
                        result
                            == Err(DomainError::InvalidTransition {
                                id: id.to_string(),
                                from,
                                to
                            }),
                        "{from:?} -> {to:?} should be refused, got {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn updating_a_missing_order_is_not_found() {
        let err = given(&[])
            .decide(&OrderCommand::UpdateStatus {
                id: OrderId::new_random(),
                status: OrderStatus::Processing,
            })
            .unwrap_err();
        assert!(matches!(err, DomainError::NotFound { kind: "order", .. }));
    }
}
