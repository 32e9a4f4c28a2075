//! dynabridge's command side as a library in this process: the
//! [`CommandHandler`] and aggregate cache the command service runs, called
//! directly, as the peer is.
//!
//! The service is measured behind gRPC in a process of its own; the peer is
//! a library called from here. Measuring ours the same way as the peer
//! leaves only what each library does to tell them apart: its round trips,
//! the items it writes, and its CPU.

use std::sync::Arc;

use command_service::commands::{
    AggregateCache, AggregateCacheMetrics, CommandHandler, CommandMeta, RequestId,
};
use dynabridge::schema::Tables;
use dynabridge_domain::{
    Email, Money, OrderId, OrderLine, OrderLines, OrderStatus, Quantity, Sku, UserId, UserName,
};
use dynabridge_event_store::EventStore;
use uuid::Uuid;

use crate::load::{self, Limits, Outcome, Step};
use crate::ops::{STATUS_PATH, nth_update, partition};

/// The command handler with the service's default cache.
#[derive(Clone, Debug)]
pub struct Library {
    handler: CommandHandler,
}

impl Library {
    /// As large as the command service's default.
    const CACHE_CAPACITY: usize = 10_000;

    pub fn new(client: aws_sdk_dynamodb::Client, tables: Tables) -> anyhow::Result<Self> {
        let cache = AggregateCache::new(Self::CACHE_CAPACITY, AggregateCacheMetrics::new()?);
        Ok(Self {
            handler: CommandHandler::new(EventStore::new(client, tables))
                .with_aggregate_cache(cache),
        })
    }

    pub async fn create_user(&self) -> Result<UserId, String> {
        let unique = Uuid::new_v4().simple();
        let email = Email::parse(&format!("library-{unique}@example.com")).map_err(text)?;
        let name = UserName::parse("Bench User").map_err(text)?;
        let outcome = self
            .handler
            .create_user(&meta()?, email, name)
            .await
            .map_err(text)?;
        parse_id(&outcome.aggregate_id).map(UserId::from_uuid)
    }

    pub async fn create_order(&self, user_id: UserId) -> Result<OrderId, String> {
        let line = |sku: &str, quantity: i64, cents: i64| -> Result<OrderLine, String> {
            Ok(OrderLine {
                sku: Sku::parse(sku).map_err(text)?,
                quantity: Quantity::parse(quantity).map_err(text)?,
                unit_price: Money::parse("USD", cents).map_err(text)?,
            })
        };
        let items = OrderLines::new(vec![
            line("SKU-BOOK-001", 2, 1250)?,
            line("SKU-PEN-042", 1, 300)?,
        ])
        .map_err(text)?;
        let outcome = self
            .handler
            .create_order(&meta()?, user_id, items, None, None)
            .await
            .map_err(text)?;
        parse_id(&outcome.aggregate_id).map(OrderId::from_uuid)
    }

    pub async fn update_order_status(
        &self,
        order_id: OrderId,
        status: OrderStatus,
    ) -> Result<(), String> {
        self.handler
            .update_order_status(&meta()?, order_id, status)
            .await
            .map(drop)
            .map_err(text)
    }
}

/// A new request: its own idempotency key and correlation id, and a request
/// hash as long as the service's (SHA-256 in hex).
fn meta() -> Result<CommandMeta, String> {
    Ok(CommandMeta {
        request_id: RequestId::parse(&Uuid::new_v4().to_string()).map_err(text)?,
        request_hash: format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
        correlation_id: Uuid::new_v4().to_string(),
        trace_parent: None,
        expected_version: None,
    })
}

fn parse_id(id: &str) -> Result<Uuid, String> {
    id.parse().map_err(|e| format!("aggregate id {id}: {e}"))
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn run_create_user(library: &Library, limits: Limits) -> Outcome {
    let library = library.clone();
    load::closed_loop(limits, move |_, _| {
        let library = library.clone();
        async move {
            library.create_user().await?;
            Ok(Step::Done)
        }
    })
    .await
}

/// Creates `n` orders through the library, 20 to a user, `concurrency` at a
/// time. They stay in its cache, as the service's orders stay in the
/// service's.
pub async fn create_orders(
    library: &Library,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<OrderId>> {
    let mut users = Vec::new();
    for _ in 0..n.div_ceil(20).max(1) {
        users.push(library.create_user().await.map_err(anyhow::Error::msg)?);
    }
    let users = Arc::new(users);
    let library = library.clone();
    load::collect(
        "creating orders through the library",
        n,
        concurrency,
        move |_, i| {
            let library = library.clone();
            let user = users[i as usize % users.len()];
            async move { library.create_order(user).await }
        },
    )
    .await
}

/// `UpdateOrderStatus` through the library, with its orders split as
/// [`crate::ops::run_update_order_status`] splits the service's.
pub async fn run_update_order_status(
    library: &Library,
    orders: &[OrderId],
    limits: Limits,
) -> Outcome {
    let library = library.clone();
    let parts = Arc::new(partition(orders, limits.concurrency));
    load::closed_loop(limits, move |worker, i| {
        let library = library.clone();
        let next = nth_update(&parts[worker], i);
        async move {
            let Some((order, round)) = next else {
                return Ok(Step::Exhausted);
            };
            let status = crate::ceiling::domain_status(STATUS_PATH[round]);
            library.update_order_status(order, status).await?;
            Ok(Step::Done)
        }
    })
    .await
}
