//! A product: its catalogue entry and its stock. The stock is a fold of the
//! product's events (created, restocked, reserved, released) and is never
//! negative: a reservation of more than is left is refused, naming what is
//! left.

use super::{
    DomainError, Event, Money, ProductId, PurchaseId, Quantity, Sku, ValidationError, Version,
};

/// A product's display name: trimmed, 1 to 200 characters, no control
/// characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        super::values::display_name(raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A number of units in stock: 0 to [`StockLevel::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StockLevel(i64);

impl StockLevel {
    /// A billion units: far above any real stock, and far enough below
    /// `i64::MAX` that no sum of levels and quantities overflows.
    pub const MAX: i64 = 1_000_000_000;
    pub const ZERO: Self = Self(0);

    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        if !(0..=Self::MAX).contains(&raw) {
            return Err(ValidationError::single(
                "",
                "must be between 0 and 1000000000",
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// `self + quantity`, if it stays within [`StockLevel::MAX`].
    pub fn plus(self, quantity: Quantity) -> Option<Self> {
        let sum = self.0 + quantity.get();
        (sum <= Self::MAX).then_some(Self(sum))
    }

    /// `self - quantity`, if it stays at 0 or above.
    pub fn minus(self, quantity: Quantity) -> Option<Self> {
        let left = self.0 - quantity.get();
        (left >= 0).then_some(Self(left))
    }
}

/// A product as the command side sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Product {
    pub state: Option<ProductState>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductState {
    pub id: ProductId,
    pub sku: Sku,
    pub name: ProductName,
    pub unit_price: Money,
    /// Units that can be sold: created and restocked, less reserved, plus
    /// released.
    pub stock: StockLevel,
    /// Units held by purchases: reserved, less released.
    pub reserved: StockLevel,
    /// At or below this stock the product is listed as low on stock.
    pub reorder_level: StockLevel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProductCommand {
    /// Adds a product to the catalogue. Its id derives from its sku.
    Create {
        sku: Sku,
        name: ProductName,
        unit_price: Money,
        initial_stock: StockLevel,
        reorder_level: StockLevel,
    },
    Restock {
        sku: Sku,
        quantity: Quantity,
    },
    /// A new price, in the product's currency.
    ChangePrice {
        sku: Sku,
        unit_price: Money,
    },
    /// Takes `quantity` units out of stock for a purchase.
    Reserve {
        sku: Sku,
        purchase_id: PurchaseId,
        quantity: Quantity,
    },
    /// Gives back units a purchase had reserved.
    Release {
        sku: Sku,
        purchase_id: PurchaseId,
        quantity: Quantity,
    },
}

impl ProductCommand {
    pub fn sku(&self) -> &Sku {
        match self {
            Self::Create { sku, .. }
            | Self::Restock { sku, .. }
            | Self::ChangePrice { sku, .. }
            | Self::Reserve { sku, .. }
            | Self::Release { sku, .. } => sku,
        }
    }
}

impl Product {
    pub fn decide(&self, command: &ProductCommand) -> Result<Vec<Event>, DomainError> {
        let id = ProductId::for_sku(command.sku());
        let Some(state) = &self.state else {
            return match command {
                ProductCommand::Create {
                    sku,
                    name,
                    unit_price,
                    initial_stock,
                    reorder_level,
                } => Ok(vec![Event::ProductCreated {
                    product_id: id,
                    sku: sku.clone(),
                    name: name.clone(),
                    unit_price: *unit_price,
                    initial_stock: *initial_stock,
                    reorder_level: *reorder_level,
                }]),
                _ => Err(DomainError::NotFound {
                    kind: "product",
                    id: command.sku().as_str().to_owned(),
                }),
            };
        };
        let event = match command {
            ProductCommand::Create { sku, .. } => {
                return Err(DomainError::AlreadyExists {
                    kind: "product",
                    id: sku.as_str().to_owned(),
                });
            }
            ProductCommand::Restock { quantity, .. } => {
                if state.stock.plus(*quantity).is_none() {
                    return Err(ValidationError::single(
                        "quantity",
                        format!(
                            "would take the stock of {} above {}",
                            state.stock.get(),
                            StockLevel::MAX
                        ),
                    )
                    .into());
                }
                Event::ProductRestocked {
                    product_id: id,
                    quantity: *quantity,
                }
            }
            ProductCommand::ChangePrice { unit_price, .. } => {
                if unit_price.currency != state.unit_price.currency {
                    return Err(ValidationError::single(
                        "unit_price.currency_code",
                        format!(
                            "must be {}, the product's currency",
                            state.unit_price.currency
                        ),
                    )
                    .into());
                }
                if *unit_price == state.unit_price {
                    // The price is already this: nothing happened.
                    return Ok(Vec::new());
                }
                Event::ProductPriceChanged {
                    product_id: id,
                    unit_price: *unit_price,
                    previous_price: state.unit_price,
                }
            }
            ProductCommand::Reserve {
                sku,
                purchase_id,
                quantity,
            } => {
                if state.stock.minus(*quantity).is_none() {
                    return Err(DomainError::OutOfStock {
                        sku: sku.as_str().to_owned(),
                        requested: quantity.get(),
                        available: state.stock.get(),
                    });
                }
                Event::StockReserved {
                    product_id: id,
                    purchase_id: *purchase_id,
                    quantity: *quantity,
                }
            }
            ProductCommand::Release {
                purchase_id,
                quantity,
                ..
            } => {
                if state.reserved.minus(*quantity).is_none() {
                    return Err(ValidationError::single(
                        "quantity",
                        format!("is more than the {} units reserved", state.reserved.get()),
                    )
                    .into());
                }
                Event::StockReleased {
                    product_id: id,
                    purchase_id: *purchase_id,
                    quantity: *quantity,
                }
            }
        };
        Ok(vec![event])
    }

    /// Folds one event. Events of other aggregates are ignored. The levels
    /// saturate rather than go out of range: the events `decide` returns
    /// never need it, and a fold must not fail.
    pub fn apply(mut self, event: &Event) -> Self {
        match (event, self.state.as_mut()) {
            (
                Event::ProductCreated {
                    product_id,
                    sku,
                    name,
                    unit_price,
                    initial_stock,
                    reorder_level,
                },
                _,
            ) => {
                self.state = Some(ProductState {
                    id: *product_id,
                    sku: sku.clone(),
                    name: name.clone(),
                    unit_price: *unit_price,
                    stock: *initial_stock,
                    reserved: StockLevel::ZERO,
                    reorder_level: *reorder_level,
                });
            }
            (Event::ProductRestocked { quantity, .. }, Some(state)) => {
                state.stock = saturating_plus(state.stock, *quantity);
            }
            (Event::ProductPriceChanged { unit_price, .. }, Some(state)) => {
                state.unit_price = *unit_price;
            }
            (Event::StockReserved { quantity, .. }, Some(state)) => {
                state.stock = state.stock.minus(*quantity).unwrap_or(StockLevel::ZERO);
                state.reserved = saturating_plus(state.reserved, *quantity);
            }
            (Event::StockReleased { quantity, .. }, Some(state)) => {
                state.reserved = state.reserved.minus(*quantity).unwrap_or(StockLevel::ZERO);
                state.stock = saturating_plus(state.stock, *quantity);
            }
            (
                Event::ProductRestocked { .. }
                | Event::ProductPriceChanged { .. }
                | Event::StockReserved { .. }
                | Event::StockReleased { .. },
                None,
            ) => {}
            _ => return self,
        }
        self.version += 1;
        self
    }
}

fn saturating_plus(level: StockLevel, quantity: Quantity) -> StockLevel {
    level.plus(quantity).unwrap_or(StockLevel(StockLevel::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(raw: &str) -> Sku {
        Sku::parse(raw).unwrap()
    }

    fn eur(amount: i64) -> Money {
        Money::parse("EUR", amount).unwrap()
    }

    fn qty(n: i64) -> Quantity {
        Quantity::parse(n).unwrap()
    }

    fn created(stock: i64) -> Product {
        let create = ProductCommand::Create {
            sku: sku("SKU-1"),
            name: ProductName::parse("Mug").unwrap(),
            unit_price: eur(900),
            initial_stock: StockLevel::parse(stock).unwrap(),
            reorder_level: StockLevel::parse(2).unwrap(),
        };
        let events = Product::default().decide(&create).unwrap();
        events.iter().fold(Product::default(), |p, e| p.apply(e))
    }

    fn run(product: Product, command: &ProductCommand) -> Result<Product, DomainError> {
        let events = product.decide(command)?;
        Ok(events.iter().fold(product, |p, e| p.apply(e)))
    }

    #[test]
    fn a_reservation_takes_stock_and_a_release_gives_it_back() {
        let purchase_id = PurchaseId::new_random();
        let product = created(5);
        assert_eq!(product.version, 1);
        let reserve = ProductCommand::Reserve {
            sku: sku("SKU-1"),
            purchase_id,
            quantity: qty(3),
        };
        let product = run(product, &reserve).unwrap();
        let state = product.state.clone().unwrap();
        assert_eq!((state.stock.get(), state.reserved.get()), (2, 3));
        let release = ProductCommand::Release {
            sku: sku("SKU-1"),
            purchase_id,
            quantity: qty(3),
        };
        let product = run(product, &release).unwrap();
        let state = product.state.clone().unwrap();
        assert_eq!((state.stock.get(), state.reserved.get()), (5, 0));
        assert_eq!(product.version, 3);
        // Nothing is reserved any more: a second release is refused.
        assert!(matches!(
            run(product, &release),
            Err(DomainError::Invalid(_))
        ));
    }

    #[test]
    fn more_than_is_left_is_refused_naming_the_sku_and_what_is_left() {
        let reserve = ProductCommand::Reserve {
            sku: sku("SKU-1"),
            purchase_id: PurchaseId::new_random(),
            quantity: qty(6),
        };
        assert_eq!(
            created(5).decide(&reserve),
            Err(DomainError::OutOfStock {
                sku: "SKU-1".into(),
                requested: 6,
                available: 5,
            })
        );
    }

    #[test]
    fn a_price_keeps_its_currency_and_the_same_price_is_no_change() {
        let product = created(1);
        let usd = ProductCommand::ChangePrice {
            sku: sku("SKU-1"),
            unit_price: Money::parse("USD", 900).unwrap(),
        };
        let err = product.decide(&usd).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request: unit_price.currency_code: must be EUR, the product's currency"
        );
        let same = ProductCommand::ChangePrice {
            sku: sku("SKU-1"),
            unit_price: eur(900),
        };
        assert_eq!(product.decide(&same), Ok(Vec::new()));
        let cheaper = ProductCommand::ChangePrice {
            sku: sku("SKU-1"),
            unit_price: eur(850),
        };
        let product = run(product, &cheaper).unwrap();
        assert_eq!(product.state.unwrap().unit_price, eur(850));
    }

    #[test]
    fn a_sku_is_created_once_and_an_unknown_one_is_not_found() {
        let create = ProductCommand::Create {
            sku: sku("SKU-1"),
            name: ProductName::parse("Mug").unwrap(),
            unit_price: eur(1),
            initial_stock: StockLevel::ZERO,
            reorder_level: StockLevel::ZERO,
        };
        assert!(matches!(
            created(1).decide(&create),
            Err(DomainError::AlreadyExists {
                kind: "product",
                ..
            })
        ));
        let restock = ProductCommand::Restock {
            sku: sku("SKU-2"),
            quantity: qty(1),
        };
        assert_eq!(
            Product::default().decide(&restock),
            Err(DomainError::NotFound {
                kind: "product",
                id: "SKU-2".into(),
            })
        );
    }

    #[test]
    fn a_restock_may_not_pass_the_maximum() {
        let product = created(StockLevel::MAX - 1);
        let restock = |n| ProductCommand::Restock {
            sku: sku("SKU-1"),
            quantity: qty(n),
        };
        assert!(product.decide(&restock(1)).is_ok());
        assert!(matches!(
            product.decide(&restock(2)),
            Err(DomainError::Invalid(_))
        ));
    }
}
