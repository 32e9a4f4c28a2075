//! The golden events: one of each type in its current shape, the samples
//! the fixtures under `tests/fixtures/events/` were made from. Those files
//! are a contract (the stored item and the published `detail` of each shape);
//! the tests of the envelope, of the event store's codec and of the schema
//! registry hold the code to them.

use chrono::TimeZone;
use uuid::Uuid;

use dynabridge_domain::{
    AddressParts, Distance, Email, Event, Money, OrderId, OrderLine, OrderStatus, ProductId,
    ProductName, PurchaseId, PurchaseItem, Quantity, Rejection, RouteStop, RouteStops,
    ShippingAddress, Sku, StockLevel, StoredEvent, UserId, UserName,
};

/// A fixture: `<EventType>.v<schema version>`, its published envelope
/// (ProtoJSON) and its event store item (DynamoDB JSON).
#[derive(Clone, Copy, Debug)]
pub struct Fixture {
    pub name: &'static str,
    pub published: &'static str,
    pub stored: &'static str,
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            published: include_str!(concat!("../tests/fixtures/events/", $name, ".json")),
            stored: include_str!(concat!("../tests/fixtures/events/", $name, ".item.json")),
        }
    };
}

/// Every fixture: each shape of each event type, older ones included.
pub const FIXTURES: &[Fixture] = &[
    fixture!("UserCreated.v1"),
    fixture!("UserProfileUpdated.v1"),
    fixture!("OrderCreated.v1"),
    fixture!("OrderCreated.v2"),
    fixture!("OrderCreated.v3"),
    fixture!("OrderStatusUpdated.v1"),
    fixture!("ProductCreated.v1"),
    fixture!("ProductRestocked.v1"),
    fixture!("ProductPriceChanged.v1"),
    fixture!("StockReserved.v1"),
    fixture!("StockReleased.v1"),
    fixture!("PurchaseRequested.v1"),
    fixture!("PurchaseReserved.v1"),
    fixture!("PurchaseCompleted.v1"),
    fixture!("PurchaseRejected.v1"),
    fixture!("PurchaseCancelled.v1"),
    fixture!("RouteCreated.v1"),
];

impl Fixture {
    /// The event type and schema version its name says.
    pub fn shape(&self) -> (&'static str, u32) {
        let (event_type, version) = self.name.split_once(".v").unwrap_or((self.name, ""));
        (event_type, version.parse().unwrap_or(0))
    }

    /// The event it holds, as this build reads it.
    pub fn event(&self) -> StoredEvent {
        match self.name {
            // Placed before addresses were taken: upcast with none, and
            // before purchases: upcast with no purchase.
            "OrderCreated.v1" => order_created(None, None),
            "OrderCreated.v2" => order_created(Some(golden_address()), None),
            name => current()
                .into_iter()
                .find(|e| format!("{}.v{}", e.event.event_type(), e.event.schema_version()) == name)
                .unwrap_or_else(|| panic!("no golden event for {name}")),
        }
    }
}

const USER: &str = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d";
const ORDER: &str = "7d3e8a3c-1b2a-4c5d-8e9f-0a1b2c3d4e5f";
const PURCHASE: &str = "3c9e2f1a-7b4d-4e6a-9f08-2d5c8b1e4a70";

fn stored(event_id: &str, version: i64, event: Event) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::parse_str(event_id).expect("a golden id"),
        version,
        occurred_at: chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("a golden time"),
        request_id: "req-1".into(),
        correlation_id: "corr-1".into(),
        trace_parent: None,
        event,
    }
}

fn golden_address() -> ShippingAddress {
    ShippingAddress::parse(AddressParts {
        recipient: "Ann Smith",
        line1: "Hauptstraße 1",
        line2: "3. OG",
        city: "Berlin",
        postal_code: "10115",
        country_code: "DE",
    })
    .expect("a golden address")
}

fn order_created(
    shipping_address: Option<ShippingAddress>,
    purchase_id: Option<PurchaseId>,
) -> StoredEvent {
    let usd = |n| Money::parse("USD", n).expect("golden money");
    stored(
        "0b4c9f5e-6c8a-4a8e-9d55-3f1f0c1d2e3f",
        1,
        Event::OrderCreated {
            order_id: OrderId::parse("order_id", ORDER).expect("a golden id"),
            user_id: UserId::parse("user_id", USER).expect("a golden id"),
            items: vec![OrderLine {
                sku: Sku::parse("laptop").expect("a golden sku"),
                quantity: Quantity::parse(1).expect("a golden quantity"),
                unit_price: usd(99_999),
            }],
            total: usd(99_999),
            shipping_address,
            purchase_id,
        },
    )
}

/// One event of each type, in the shape this build writes.
pub fn current() -> Vec<StoredEvent> {
    let user_id = UserId::parse("user_id", USER).expect("a golden id");
    let order_id = OrderId::parse("order_id", ORDER).expect("a golden id");
    let address = golden_address();
    let usd = |n| Money::parse("USD", n).expect("golden money");
    let sku = Sku::parse("laptop").expect("a golden sku");
    let product_id = ProductId::for_sku(&sku);
    let purchase_id = PurchaseId::parse("purchase_id", PURCHASE).expect("a golden id");
    vec![
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e01",
            1,
            Event::UserCreated {
                user_id,
                email: Email::parse("ann@example.com").expect("a golden email"),
                name: UserName::parse("Ann Smith").expect("a golden name"),
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e02",
            2,
            Event::UserProfileUpdated {
                user_id,
                name: None,
                email: Some(Email::parse("ann@work.example.com").expect("a golden email")),
            },
        ),
        order_created(Some(address), Some(purchase_id)),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e04",
            2,
            Event::OrderStatusUpdated {
                order_id,
                status: OrderStatus::Processing,
                previous_status: OrderStatus::Created,
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e05",
            1,
            Event::ProductCreated {
                product_id,
                sku: sku.clone(),
                name: ProductName::parse("Laptop").expect("a golden name"),
                unit_price: usd(99_999),
                initial_stock: StockLevel::parse(25).expect("a golden stock"),
                reorder_level: StockLevel::parse(5).expect("a golden stock"),
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e06",
            2,
            Event::ProductRestocked {
                product_id,
                quantity: Quantity::parse(10).expect("a golden quantity"),
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e07",
            3,
            Event::ProductPriceChanged {
                product_id,
                unit_price: usd(89_999),
                previous_price: usd(99_999),
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e08",
            4,
            Event::StockReserved {
                product_id,
                purchase_id,
                quantity: Quantity::parse(2).expect("a golden quantity"),
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e09",
            5,
            Event::StockReleased {
                product_id,
                purchase_id,
                quantity: Quantity::parse(2).expect("a golden quantity"),
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e10",
            1,
            Event::PurchaseRequested {
                purchase_id,
                user_id,
                items: vec![PurchaseItem {
                    sku: sku.clone(),
                    quantity: Quantity::parse(2).expect("a golden quantity"),
                }],
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e11",
            2,
            Event::PurchaseReserved {
                purchase_id,
                lines: vec![OrderLine {
                    sku: sku.clone(),
                    quantity: Quantity::parse(2).expect("a golden quantity"),
                    unit_price: usd(89_999),
                }],
                total: usd(179_998),
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e12",
            3,
            Event::PurchaseCompleted {
                purchase_id,
                order_id,
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e13",
            2,
            Event::PurchaseRejected {
                purchase_id,
                rejection: Rejection::OutOfStock {
                    sku: sku.clone(),
                    requested: Quantity::parse(30).expect("a golden quantity"),
                    available: 25,
                },
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e14",
            4,
            Event::PurchaseCancelled {
                purchase_id,
                order_id,
            },
        ),
        stored(
            "5f0d7a52-3c1e-4b8e-8a0d-6b1f2c3d4e15",
            1,
            Event::RouteCreated {
                route_id: dynabridge_domain::route_id_for(order_id),
                order_id,
                stops: RouteStops::parse(vec![
                    RouteStop {
                        location: "A03-12".into(),
                        pick: Some((sku.clone(), Quantity::parse(2).expect("a golden quantity"))),
                    },
                    RouteStop {
                        location: "Berlin, DE".into(),
                        pick: None,
                    },
                ])
                .expect("golden stops"),
                distance: Distance::parse(64).expect("a golden distance"),
            },
        ),
    ]
}
