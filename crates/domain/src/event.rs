use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Distance, Email, Money, OrderId, OrderLine, OrderStatus, ProductId, ProductName, PurchaseId,
    PurchaseItem, Quantity, Rejection, RouteId, RouteStops, ShippingAddress, Sku, StockLevel,
    UserId, UserName, Version,
};

/// The kind of aggregate an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateType {
    User,
    Order,
    Product,
    Purchase,
    Route,
}

impl AggregateType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Order => "Order",
            Self::Product => "Product",
            Self::Purchase => "Purchase",
            Self::Route => "Route",
        }
    }

    /// The name a client reads in a message: `user`, `order`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Order => "order",
            Self::Product => "product",
            Self::Purchase => "purchase",
            Self::Route => "route",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "User" => Some(Self::User),
            "Order" => Some(Self::Order),
            "Product" => Some(Self::Product),
            "Purchase" => Some(Self::Purchase),
            "Route" => Some(Self::Route),
            _ => None,
        }
    }
}

/// A domain event: a fact that an aggregate decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    UserCreated {
        user_id: UserId,
        email: Email,
        name: UserName,
    },
    /// Only the fields that changed are `Some`.
    UserProfileUpdated {
        user_id: UserId,
        name: Option<UserName>,
        email: Option<Email>,
    },
    OrderCreated {
        order_id: OrderId,
        user_id: UserId,
        items: Vec<OrderLine>,
        total: Money,
        /// Since schema version 2; `None` on every order upcast from 1.
        shipping_address: Option<ShippingAddress>,
        /// The purchase that placed the order, if one did. Since schema
        /// version 3; `None` on every order upcast from 1 or 2.
        purchase_id: Option<PurchaseId>,
    },
    OrderStatusUpdated {
        order_id: OrderId,
        status: OrderStatus,
        previous_status: OrderStatus,
    },
    ProductCreated {
        product_id: ProductId,
        sku: Sku,
        name: ProductName,
        unit_price: Money,
        initial_stock: StockLevel,
        reorder_level: StockLevel,
    },
    ProductRestocked {
        product_id: ProductId,
        quantity: Quantity,
    },
    ProductPriceChanged {
        product_id: ProductId,
        unit_price: Money,
        previous_price: Money,
    },
    /// Units taken out of stock for a purchase.
    StockReserved {
        product_id: ProductId,
        purchase_id: PurchaseId,
        quantity: Quantity,
    },
    /// Units a purchase had reserved, back in stock.
    StockReleased {
        product_id: ProductId,
        purchase_id: PurchaseId,
        quantity: Quantity,
    },
    PurchaseRequested {
        purchase_id: PurchaseId,
        user_id: UserId,
        items: Vec<PurchaseItem>,
    },
    /// Every item's stock reserved, at these prices (in the same
    /// transaction as the products' `StockReserved`).
    PurchaseReserved {
        purchase_id: PurchaseId,
        lines: Vec<OrderLine>,
        total: Money,
    },
    /// Its order created (in the same transaction as the `OrderCreated`).
    PurchaseCompleted {
        purchase_id: PurchaseId,
        order_id: OrderId,
    },
    PurchaseRejected {
        purchase_id: PurchaseId,
        rejection: Rejection,
    },
    /// Its order was cancelled, and its stock released (in the same
    /// transaction as the products' `StockReleased`).
    PurchaseCancelled {
        purchase_id: PurchaseId,
        order_id: OrderId,
    },
    /// The route an order takes, planned downstream of the bus.
    RouteCreated {
        route_id: RouteId,
        order_id: OrderId,
        stops: RouteStops,
        distance: Distance,
    },
}

impl Event {
    /// Every event type, as [`Event::event_type`] names them.
    pub const TYPES: [&'static str; 15] = [
        "UserCreated",
        "UserProfileUpdated",
        "OrderCreated",
        "OrderStatusUpdated",
        "ProductCreated",
        "ProductRestocked",
        "ProductPriceChanged",
        "StockReserved",
        "StockReleased",
        "PurchaseRequested",
        "PurchaseReserved",
        "PurchaseCompleted",
        "PurchaseRejected",
        "PurchaseCancelled",
        "RouteCreated",
    ];

    /// The event's type name: also its protobuf message name and its
    /// EventBridge detail-type.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::UserCreated { .. } => "UserCreated",
            Self::UserProfileUpdated { .. } => "UserProfileUpdated",
            Self::OrderCreated { .. } => "OrderCreated",
            Self::OrderStatusUpdated { .. } => "OrderStatusUpdated",
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductRestocked { .. } => "ProductRestocked",
            Self::ProductPriceChanged { .. } => "ProductPriceChanged",
            Self::StockReserved { .. } => "StockReserved",
            Self::StockReleased { .. } => "StockReleased",
            Self::PurchaseRequested { .. } => "PurchaseRequested",
            Self::PurchaseReserved { .. } => "PurchaseReserved",
            Self::PurchaseCompleted { .. } => "PurchaseCompleted",
            Self::PurchaseRejected { .. } => "PurchaseRejected",
            Self::PurchaseCancelled { .. } => "PurchaseCancelled",
            Self::RouteCreated { .. } => "RouteCreated",
        }
    }

    /// The version of the payload's shape that this build writes for the
    /// event's type. A change of shape raises it here, and teaches the
    /// upcaster (`dynabridge::upcast`) to read the shape before.
    pub fn schema_version(&self) -> u32 {
        match self {
            Self::OrderCreated { .. } => 3,
            Self::UserCreated { .. }
            | Self::UserProfileUpdated { .. }
            | Self::OrderStatusUpdated { .. }
            | Self::ProductCreated { .. }
            | Self::ProductRestocked { .. }
            | Self::ProductPriceChanged { .. }
            | Self::StockReserved { .. }
            | Self::StockReleased { .. }
            | Self::PurchaseRequested { .. }
            | Self::PurchaseReserved { .. }
            | Self::PurchaseCompleted { .. }
            | Self::PurchaseRejected { .. }
            | Self::PurchaseCancelled { .. }
            | Self::RouteCreated { .. } => 1,
        }
    }

    pub fn aggregate_type(&self) -> AggregateType {
        match self {
            Self::UserCreated { .. } | Self::UserProfileUpdated { .. } => AggregateType::User,
            Self::OrderCreated { .. } | Self::OrderStatusUpdated { .. } => AggregateType::Order,
            Self::ProductCreated { .. }
            | Self::ProductRestocked { .. }
            | Self::ProductPriceChanged { .. }
            | Self::StockReserved { .. }
            | Self::StockReleased { .. } => AggregateType::Product,
            Self::PurchaseRequested { .. }
            | Self::PurchaseReserved { .. }
            | Self::PurchaseCompleted { .. }
            | Self::PurchaseRejected { .. }
            | Self::PurchaseCancelled { .. } => AggregateType::Purchase,
            Self::RouteCreated { .. } => AggregateType::Route,
        }
    }

    /// The id of the aggregate the event belongs to, as stored.
    pub fn aggregate_id(&self) -> Uuid {
        match self {
            Self::UserCreated { user_id, .. } | Self::UserProfileUpdated { user_id, .. } => {
                *user_id.as_uuid()
            }
            Self::OrderCreated { order_id, .. } | Self::OrderStatusUpdated { order_id, .. } => {
                *order_id.as_uuid()
            }
            Self::ProductCreated { product_id, .. }
            | Self::ProductRestocked { product_id, .. }
            | Self::ProductPriceChanged { product_id, .. }
            | Self::StockReserved { product_id, .. }
            | Self::StockReleased { product_id, .. } => *product_id.as_uuid(),
            Self::PurchaseRequested { purchase_id, .. }
            | Self::PurchaseReserved { purchase_id, .. }
            | Self::PurchaseCompleted { purchase_id, .. }
            | Self::PurchaseRejected { purchase_id, .. }
            | Self::PurchaseCancelled { purchase_id, .. } => *purchase_id.as_uuid(),
            Self::RouteCreated { route_id, .. } => *route_id.as_uuid(),
        }
    }
}

/// An event with the metadata it is stored and published with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub version: Version,
    pub occurred_at: DateTime<Utc>,
    pub request_id: String,
    pub correlation_id: String,
    /// The W3C `traceparent` of the request that appended the event, if it
    /// came with one or its span was traced: the projector hands it on
    /// when it publishes the event.
    pub trace_parent: Option<String>,
    pub event: Event,
}
