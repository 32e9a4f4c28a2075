//! The ceilings a scenario cannot beat, measured in the same run:
//!
//! - **storage**: the DynamoDB calls the service makes for the scenario, with
//!   the same item shapes, issued straight from here through aws-sdk, with
//!   the library's own store and read-model code ([`EventStore::append`],
//!   [`ReadModelReader`]), and no gRPC and no domain logic in front;
//! - **transport**: a bare tonic echo service answering messages as large as
//!   the scenario's real ones.

use std::sync::Arc;

use chrono::Utc;
use dynabridge::schema::Tables;
use dynabridge_domain::{
    AggregateType, Email, Event, Money, OrderId, OrderLine, OrderStatus, Quantity, Requirement,
    Sku, StoredEvent, UniqueScope, UserId, UserName, Version,
};
use dynabridge_event_store::{Append, CommandOutcome, EventStore, IdempotencyRecord};
use query_service::reader::{OrderListing, ReadModelReader};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::echo::pb::echo_request::StorageCall;
use crate::echo::pb::echo_service_client::EchoServiceClient;
use crate::echo::pb::{OrderUpdate, OrdersPage};
use crate::load::{self, Limits, Outcome, Step};
use crate::ops::{STATUS_PATH, connections, nth_update, partition};

/// The event store and read models, as the services reach them.
#[derive(Clone, Debug)]
pub struct Storage {
    store: EventStore,
    read_models: Arc<ReadModelReader>,
}

impl Storage {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: Tables) -> Self {
        Self {
            read_models: Arc::new(ReadModelReader::new(client.clone(), &tables)),
            store: EventStore::new(client, tables),
        }
    }

    /// The append `CreateUser` makes: the event, the idempotency record and
    /// the email claim, in one TransactWriteItems.
    pub async fn create_user(&self) -> Result<UserId, String> {
        let (user_id, append) = create_user_append()?;
        self.store
            .append(&append)
            .await
            .map_err(|e| e.to_string())?;
        Ok(user_id)
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The append `CreateOrder` makes: the event and the idempotency record,
    /// on the condition that the user exists.
    pub async fn create_order(&self, user_id: UserId) -> Result<OrderId, String> {
        let order_id = OrderId::new_random();
        let line = |sku: &str, quantity: i64, cents: i64| -> Result<OrderLine, String> {
            Ok(OrderLine {
                sku: Sku::parse(sku).map_err(|e| e.to_string())?,
                quantity: Quantity::parse(quantity).map_err(|e| e.to_string())?,
                unit_price: Money::parse("USD", cents).map_err(|e| e.to_string())?,
            })
        };
        let items = vec![line("SKU-BOOK-001", 2, 1250)?, line("SKU-PEN-042", 1, 300)?];
        let total = Money::parse("USD", 2800).map_err(|e| e.to_string())?;
        let append = Append {
            requirements: vec![Requirement::Exists {
                aggregate_type: AggregateType::User,
                id: *user_id.as_uuid(),
            }],
            ..append(
                0,
                vec![Event::OrderCreated {
                    order_id,
                    user_id,
                    items,
                    total,
                    shipping_address: None,
                    purchase_id: None,
                }],
            )
        };
        self.store
            .append(&append)
            .await
            .map_err(|e| e.to_string())?;
        Ok(order_id)
    }

    /// The append `UpdateOrderStatus` makes on an order at `version`.
    pub async fn update_order_status(
        &self,
        order_id: OrderId,
        version: Version,
        status: OrderStatus,
        previous_status: OrderStatus,
    ) -> Result<(), String> {
        let append = append(
            version,
            vec![Event::OrderStatusUpdated {
                order_id,
                status,
                previous_status,
            }],
        );
        self.store.append(&append).await.map_err(|e| e.to_string())
    }

    /// The `round`th change of an order along [`STATUS_PATH`], from its
    /// version `round + 1`.
    pub async fn update_round(&self, order_id: OrderId, round: usize) -> Result<(), String> {
        let status = STATUS_PATH
            .get(round)
            .ok_or_else(|| format!("no status change number {round}"))?;
        let previous = match round.checked_sub(1) {
            None => OrderStatus::Created,
            Some(before) => domain_status(STATUS_PATH[before]),
        };
        self.update_order_status(
            order_id,
            1 + round as Version,
            domain_status(*status),
            previous,
        )
        .await
    }

    /// The read `GetUserProfile` makes.
    pub async fn user_profile(&self, user_id: UserId) -> Result<(), String> {
        match self.read_models.user_profile(user_id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("user {} not projected", user_id.as_uuid())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The read `ListOrdersByUser` makes for a first page of `page_size`.
    pub async fn orders_of(&self, user_id: UserId, page_size: usize) -> Result<(), String> {
        let page = self
            .read_models
            .orders(&OrderListing::ByUser(user_id), page_size, None)
            .await
            .map_err(|e| e.to_string())?;
        if page.rows.len() != page_size {
            return Err(format!("a page of {}, not {page_size}", page.rows.len()));
        }
        Ok(())
    }
}

/// The append of a new user, as `CreateUser` builds it: its event, its
/// idempotency record and the claim of its email.
pub fn create_user_append() -> Result<(UserId, Append), String> {
    let user_id = UserId::new_random();
    let email = Email::parse(&format!(
        "ceiling-{}@example.com",
        user_id.as_uuid().simple()
    ))
    .map_err(|e| e.to_string())?;
    let name = UserName::parse("Bench User").map_err(|e| e.to_string())?;
    let append = append(
        0,
        vec![Event::UserCreated {
            user_id,
            email: email.clone(),
            name,
        }],
    );
    Ok((
        user_id,
        Append {
            requirements: vec![Requirement::Claim {
                scope: UniqueScope::Email,
                value: email.as_str().to_owned(),
                owner: *user_id.as_uuid(),
            }],
            ..append
        },
    ))
}

/// An append of `events` after `base`, as the command handler builds it.
fn append(base: Version, events: Vec<Event>) -> Append {
    let now = Utc::now();
    let request_id = Uuid::new_v4().to_string();
    let correlation_id = Uuid::new_v4().to_string();
    let stored: Vec<StoredEvent> = events
        .into_iter()
        .zip(1..)
        .map(|(event, n)| StoredEvent {
            event_id: Uuid::new_v4(),
            version: base + n,
            occurred_at: now,
            request_id: request_id.clone(),
            correlation_id: correlation_id.clone(),
            trace_parent: None,
            event,
        })
        .collect();
    let outcome = CommandOutcome {
        aggregate_id: stored[0].event.aggregate_id().to_string(),
        version: stored[stored.len() - 1].version,
        event_ids: stored.iter().map(|s| s.event_id.to_string()).collect(),
        correlation_id,
        total: None,
    };
    Append {
        events: stored,
        idempotency: IdempotencyRecord {
            request_id,
            // A SHA-256 in hex, as long as the service's request hash.
            request_hash: "0".repeat(64),
            outcome,
        },
        // A create is recorded by its first event, as the command handler
        // records it.
        record: if base == 0 {
            dynabridge_event_store::RecordIn::FirstEvent
        } else {
            dynabridge_event_store::RecordIn::IdempotencyTable
        },
        requirements: Vec::new(),
        now,
    }
}

pub async fn run_create_user(storage: &Storage, limits: Limits) -> Outcome {
    let storage = storage.clone();
    load::closed_loop(limits, move |_, _| {
        let storage = storage.clone();
        async move {
            storage.create_user().await?;
            Ok(Step::Done)
        }
    })
    .await
}

/// Creates `n` orders (and a user for every 20) through the store.
pub async fn create_orders(
    storage: &Storage,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<OrderId>> {
    let mut users = Vec::new();
    for _ in 0..n.div_ceil(20).max(1) {
        users.push(storage.create_user().await.map_err(anyhow::Error::msg)?);
    }
    let users = Arc::new(users);
    let storage = storage.clone();
    load::collect(
        "creating orders through the store",
        n,
        concurrency,
        move |_, i| {
            let storage = storage.clone();
            let user = users[i as usize % users.len()];
            async move { storage.create_order(user).await }
        },
    )
    .await
}

/// The storage ceiling of `UpdateOrderStatus`, with its fixtures split as
/// [`crate::ops::run_update_order_status`] splits them.
pub async fn run_update_order_status(
    storage: &Storage,
    orders: &[OrderId],
    limits: Limits,
) -> Outcome {
    let storage = storage.clone();
    let parts = Arc::new(partition(orders, limits.concurrency));
    load::closed_loop(limits, move |worker, i| {
        let storage = storage.clone();
        let next = nth_update(&parts[worker], i);
        async move {
            let Some((order, round)) = next else {
                return Ok(Step::Exhausted);
            };
            storage.update_round(order, round).await?;
            Ok(Step::Done)
        }
    })
    .await
}

pub fn domain_status(status: dynabridge::pb::OrderStatus) -> OrderStatus {
    use dynabridge::pb::OrderStatus as Pb;
    match status {
        Pb::Processing => OrderStatus::Processing,
        Pb::Shipped => OrderStatus::Shipped,
        Pb::Delivered => OrderStatus::Delivered,
        Pb::Cancelled => OrderStatus::Cancelled,
        Pb::Created | Pb::Unspecified => OrderStatus::Created,
    }
}

pub async fn run_user_profile(storage: &Storage, users: &[UserId], limits: Limits) -> Outcome {
    let storage = storage.clone();
    let users = Arc::new(users.to_vec());
    load::closed_loop(limits, move |worker, i| {
        let storage = storage.clone();
        let user = users[(worker + i as usize * limits.concurrency) % users.len()];
        async move {
            storage.user_profile(user).await?;
            Ok(Step::Done)
        }
    })
    .await
}

pub async fn run_orders_of(
    storage: &Storage,
    users: &[UserId],
    page_size: usize,
    limits: Limits,
) -> Outcome {
    let storage = storage.clone();
    let users = Arc::new(users.to_vec());
    load::closed_loop(limits, move |worker, i| {
        let storage = storage.clone();
        let user = users[(worker + i as usize * limits.concurrency) % users.len()];
        async move {
            storage.orders_of(user, page_size).await?;
            Ok(Step::Done)
        }
    })
    .await
}

/// The transport ceiling: echo calls with `request_len`-byte requests and
/// `response_len`-byte responses. With `call`, each also makes the storage
/// call `call` gives for the worker and its call number first, and the run
/// is the transport and storage ceiling together; `call` returning `None`
/// ends the worker's run.
pub async fn run_echo(
    echo: &str,
    request_len: usize,
    response_len: usize,
    limits: Limits,
    call: impl Fn(usize, u64) -> Option<Option<StorageCall>> + Send + Sync + 'static,
) -> anyhow::Result<Outcome> {
    let channels: Arc<Vec<Channel>> = connections(echo, limits.concurrency).await?;
    Ok(load::closed_loop(limits, move |worker, i| {
        let mut client = EchoServiceClient::new(channels[worker].clone());
        let request =
            call(worker, i).map(|call| crate::echo::sized_request(request_len, response_len, call));
        async move {
            let Some(request) = request else {
                return Ok(Step::Exhausted);
            };
            client
                .echo(request)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            Ok(Step::Done)
        }
    })
    .await)
}

/// Only the transport: no storage call, for as long as the run lasts.
pub fn no_storage(_: usize, _: u64) -> Option<Option<StorageCall>> {
    Some(None)
}

/// The storage calls of `UpdateOrderStatus` behind the echo, on `orders`
/// split as [`run_update_order_status`] splits them.
pub fn update_calls(
    orders: &[OrderId],
    concurrency: usize,
) -> impl Fn(usize, u64) -> Option<Option<StorageCall>> + Send + Sync + 'static {
    let parts = partition(orders, concurrency);
    move |worker, i| {
        let (order, round) = nth_update(&parts[worker], i)?;
        Some(Some(StorageCall::UpdateOrderStatus(OrderUpdate {
            order_id: order.to_string(),
            round: round as u32,
        })))
    }
}

/// The reads of `users` behind the echo, each worker's as the storage
/// ceiling's [`run_user_profile`] and [`run_orders_of`] take them;
/// `page_size` makes them pages of orders, else profiles.
pub fn read_calls(
    users: &[UserId],
    concurrency: usize,
    page_size: Option<usize>,
) -> impl Fn(usize, u64) -> Option<Option<StorageCall>> + Send + Sync + 'static {
    let users = users.to_vec();
    move |worker, i| {
        let user_id = users[(worker + i as usize * concurrency) % users.len()].to_string();
        Some(Some(match page_size {
            None => StorageCall::UserProfile(user_id),
            Some(page_size) => StorageCall::OrdersOfUser(OrdersPage {
                user_id,
                page_size: page_size as u32,
            }),
        }))
    }
}
