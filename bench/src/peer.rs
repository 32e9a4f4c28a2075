//! The peer: cqrs-es with dynamo-es, appending the same events to the same store.
//!
//! The side-by-side benchmarks run dynabridge's command path against the
//! best-known Rust CQRS/ES library on DynamoDB, set up the way its own docs
//! set it up: a [`CqrsFramework`] over
//! [`PersistedEventStore::new_event_store`] (event sourced, no snapshots)
//! and a [`DynamoEventRepository`], with no queries and no services. That is
//! exactly what `dynamo_es::dynamodb_cqrs` builds; we build the same three
//! pieces by hand only because that function has no way to name the tables.
//! Nothing is cached or tuned: every command goes through
//! [`CqrsFramework::execute`] as the library ships it.
//!
//! What a command costs, read in cqrs-es 0.5.0 and dynamo-es 0.5.0 and
//! checked by the tests below (their call counter):
//!
//! 1. Load: one `Query` on the events table, `ConsistentRead`, key condition
//!    `AggregateTypeAndId = "{Type}:{id}"`, for the whole history. The store
//!    is event sourced, so the snapshot table is never read. (dynamo-es
//!    sends a single page here and does not follow `LastEvaluatedKey`: fine
//!    for histories of a few events, wrong past 1 MB.)
//! 2. Decide and apply: [`Aggregate::handle`], in memory.
//! 3. Commit: one `TransactWriteItems` with a `Put` per new event,
//!    conditioned on `attribute_not_exists(AggregateIdSequence)`.
//!
//! So a command that produces events makes exactly 2 calls: `Query`, then
//! `TransactWriteItems`. A command the aggregate refuses makes 1, the
//! `Query`. A lost race surfaces as `AggregateError::AggregateConflict`;
//! cqrs-es does not retry it, and neither does the peer.
//!
//! The events are the same facts as ours (`UserCreated`, `OrderCreated`,
//! `OrderStatusUpdated`, with the same fields), validated with our domain
//! value types and our status rules, but stored the library's way: the
//! serde JSON of the event enum in a binary `Payload` attribute, beside
//! `AggregateType`, `AggregateId`, `EventType`, `EventVersion` and a
//! `Metadata` blob (`{}`). What dynabridge's append does on top (the
//! idempotency record, the email claim, the check that an order's user
//! exists) has no counterpart here: the peer writes one item per event and
//! nothing else. Its event table has a stream (new images), as ours does:
//! in this architecture the stream is what feeds the read models and
//! EventBridge, so the store does that work for both.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus,
};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use dynabridge_domain::{
    DomainError, Email, Money, OrderId, OrderLine, OrderLines, OrderStatus, Quantity, Sku, UserId,
    UserName, ValidationError,
};
use dynamo_es::{DynamoCqrs, DynamoEventRepository};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// dynamo-es's table layout. These names are the library's, hard-coded in
/// it (`db/create_tables.sh`, `event_repository.rs`), not ours, so they are
/// spelled here rather than in `dynabridge::schema`.
mod layout {
    /// Hash key of both tables: `"{Aggregate::TYPE}:{aggregate id}"`.
    pub const AGGREGATE_TYPE_AND_ID: &str = "AggregateTypeAndId";
    /// Range key of the events table: the event's sequence, from 1.
    pub const AGGREGATE_ID_SEQUENCE: &str = "AggregateIdSequence";
    #[cfg(test)]
    pub const EVENT_TYPE: &str = "EventType";
    #[cfg(test)]
    pub const EVENT_VERSION: &str = "EventVersion";
    /// The serde JSON of the event, as a binary attribute.
    #[cfg(test)]
    pub const PAYLOAD: &str = "Payload";
}

/// How long [`Peer::setup`] waits for its tables to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// The cqrs-es peer: one framework per aggregate over one events table, as
/// the library has it. Cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Peer {
    users: Arc<DynamoCqrs<User>>,
    orders: Arc<DynamoCqrs<Order>>,
}

impl Peer {
    /// Creates the peer's tables (event table + snapshot table as dynamo-es
    /// expects; names prefixed by `table_prefix`, e.g.
    /// "{prefix}-peer-events") if missing, through the given client, waiting
    /// until ACTIVE; then builds the framework.
    pub async fn setup(client: Client, table_prefix: &str) -> anyhow::Result<Self> {
        use ScalarAttributeType::{N, S};
        let events = events_table(table_prefix);
        let snapshots = snapshots_table(table_prefix);
        create_table(
            &client,
            &events,
            &[
                (layout::AGGREGATE_TYPE_AND_ID, S),
                (layout::AGGREGATE_ID_SEQUENCE, N),
            ],
            // In this architecture the event table's stream is what feeds
            // the read models and EventBridge, as ours does: the store
            // writes a stream record per event for the peer too.
            true,
        )
        .await?;
        // Never read or written with `new_event_store`; dynamo-es is
        // configured with it all the same, so it exists as the library
        // expects.
        create_table(
            &client,
            &snapshots,
            &[(layout::AGGREGATE_TYPE_AND_ID, S)],
            false,
        )
        .await?;
        wait_active(&client, &events).await?;
        wait_active(&client, &snapshots).await?;
        Ok(Self {
            users: Arc::new(framework(client.clone(), &events, &snapshots)),
            orders: Arc::new(framework(client, &events, &snapshots)),
        })
    }

    /// Returns the new user's id.
    pub async fn create_user(&self, email: &str, name: &str) -> anyhow::Result<String> {
        let user_id = UserId::new_random();
        let id = user_id.to_string();
        let command = UserCommand::CreateUser {
            user_id,
            email: Email::parse(email).map_err(|e| e.under("email"))?,
            name: UserName::parse(name).map_err(|e| e.under("name"))?,
        };
        self.users
            .execute(&id, command)
            .await
            .with_context(|| format!("creating user {id}"))?;
        Ok(id)
    }

    /// Returns the new order's id. Each line is (sku, quantity, unit price
    /// in minor units of `currency`).
    pub async fn create_order(
        &self,
        user_id: &str,
        lines: &[(String, u32, i64)],
        currency: &str,
    ) -> anyhow::Result<String> {
        let user_id = UserId::parse("user_id", user_id)?;
        let items = lines
            .iter()
            .enumerate()
            .map(|(i, (sku, quantity, unit_cents))| {
                let under = |field: &str| format!("items[{i}].{field}");
                Ok(OrderLine {
                    sku: Sku::parse(sku).map_err(|e| e.under(&under("sku")))?,
                    quantity: Quantity::parse(i64::from(*quantity))
                        .map_err(|e| e.under(&under("quantity")))?,
                    unit_price: Money::parse(currency, *unit_cents)
                        .map_err(|e| e.under(&under("unit_price")))?,
                })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        let order_id = OrderId::new_random();
        let id = order_id.to_string();
        let command = OrderCommand::CreateOrder {
            order_id,
            user_id,
            items: OrderLines::new(items)?,
        };
        self.orders
            .execute(&id, command)
            .await
            .with_context(|| format!("creating order {id}"))?;
        Ok(id)
    }

    /// Moves the order to `status`: "PROCESSING", "SHIPPED", "DELIVERED" or
    /// "CANCELLED".
    pub async fn update_order_status(&self, order_id: &str, status: &str) -> anyhow::Result<()> {
        let order_id = OrderId::parse("order_id", order_id)?;
        let status = OrderStatus::parse(status)
            .ok_or_else(|| ValidationError::single("status", format!("unknown status {status}")))?;
        let id = order_id.to_string();
        self.orders
            .execute(&id, OrderCommand::UpdateOrderStatus { status })
            .await
            .with_context(|| format!("updating order {id}"))?;
        Ok(())
    }
}

fn events_table(prefix: &str) -> String {
    format!("{prefix}-peer-events")
}

fn snapshots_table(prefix: &str) -> String {
    format!("{prefix}-peer-snapshots")
}

/// What `dynamo_es::dynamodb_cqrs` builds, on our tables.
fn framework<A>(client: Client, events: &str, snapshots: &str) -> DynamoCqrs<A>
where
    A: Aggregate<Services = ()>,
{
    let repo = DynamoEventRepository::new(client).with_tables(events, snapshots);
    CqrsFramework::new(PersistedEventStore::new_event_store(repo), vec![], ())
}

/// Creates `table` keyed by `key` (hash, then the optional range key),
/// on demand. A table that exists is left as it is.
pub(crate) async fn create_table(
    client: &Client,
    table: &str,
    key: &[(&str, ScalarAttributeType)],
    stream: bool,
) -> anyhow::Result<()> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    if stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()?,
        );
    }
    for (i, (name, kind)) in key.iter().enumerate() {
        let key_type = if i == 0 {
            KeyType::Hash
        } else {
            KeyType::Range
        };
        request = request
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*name)
                    .key_type(key_type)
                    .build()?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*name)
                    .attribute_type(kind.clone())
                    .build()?,
            );
    }
    match request.send().await.map_err(aws_sdk_dynamodb::Error::from) {
        Ok(_) => {
            tracing::info!(table, "peer table created");
            Ok(())
        }
        Err(aws_sdk_dynamodb::Error::ResourceInUseException(_)) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("creating table {table}")),
    }
}

pub(crate) async fn wait_active(client: &Client, table: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
    let mut delay = Duration::from_millis(20);
    loop {
        // A table just created may not be described yet: keep polling.
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .ok()
            .and_then(|out| out.table)
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("table {table} did not become active in time");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------
// The User aggregate.

/// A user as the peer folds it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct User {
    /// `None` until created.
    state: Option<UserState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct UserState {
    user_id: Uuid,
    email: String,
    name: String,
}

/// cqrs-es takes the aggregate id beside the command, so a command that
/// creates an aggregate carries the id again for its event.
#[derive(Debug)]
pub enum UserCommand {
    CreateUser {
        user_id: UserId,
        email: Email,
        name: UserName,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserCreated {
        user_id: Uuid,
        email: String,
        name: String,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserCreated { .. } => "UserCreated".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        match command {
            UserCommand::CreateUser {
                user_id,
                email,
                name,
            } => {
                if self.state.is_some() {
                    return Err(DomainError::AlreadyExists {
                        kind: "user",
                        id: user_id.to_string(),
                    });
                }
                let event = UserEvent::UserCreated {
                    user_id: *user_id.as_uuid(),
                    email: email.as_str().to_owned(),
                    name: name.as_str().to_owned(),
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserCreated {
                user_id,
                email,
                name,
            } => {
                self.state = Some(UserState {
                    user_id,
                    email,
                    name,
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The Order aggregate.

/// An order as the peer folds it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Order {
    /// `None` until created.
    state: Option<OrderState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderState {
    order_id: Uuid,
    user_id: Uuid,
    items: Vec<Item>,
    total: Price,
    status: Status,
}

#[derive(Debug)]
pub enum OrderCommand {
    CreateOrder {
        order_id: OrderId,
        user_id: UserId,
        items: OrderLines,
    },
    UpdateOrderStatus {
        status: OrderStatus,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderCreated {
        order_id: Uuid,
        user_id: Uuid,
        items: Vec<Item>,
        total: Price,
    },
    OrderStatusUpdated {
        order_id: Uuid,
        status: Status,
        previous_status: Status,
    },
}

/// One line of an order, with the field names of our `OrderItem`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    sku: String,
    quantity: i64,
    unit_price: Price,
}

/// An amount of money, with the field names of our `Money`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    currency_code: String,
    amount_minor: i64,
}

impl From<Money> for Price {
    fn from(money: Money) -> Self {
        Self {
            currency_code: money.currency.as_str().to_owned(),
            amount_minor: money.amount_minor,
        }
    }
}

impl From<&OrderLine> for Item {
    fn from(line: &OrderLine) -> Self {
        Self {
            sku: line.sku.as_str().to_owned(),
            quantity: line.quantity.get(),
            unit_price: line.unit_price.into(),
        }
    }
}

/// [`OrderStatus`], serializable: "CREATED", "PROCESSING", ...
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Created,
    Processing,
    Shipped,
    Delivered,
    Cancelled,
}

impl From<OrderStatus> for Status {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Created => Self::Created,
            OrderStatus::Processing => Self::Processing,
            OrderStatus::Shipped => Self::Shipped,
            OrderStatus::Delivered => Self::Delivered,
            OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<Status> for OrderStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Created => Self::Created,
            Status::Processing => Self::Processing,
            Status::Shipped => Self::Shipped,
            Status::Delivered => Self::Delivered,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderCreated { .. } => "OrderCreated".to_owned(),
            Self::OrderStatusUpdated { .. } => "OrderStatusUpdated".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: OrderCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match (command, &self.state) {
            (
                OrderCommand::CreateOrder {
                    order_id,
                    user_id,
                    items,
                },
                None,
            ) => OrderEvent::OrderCreated {
                order_id: *order_id.as_uuid(),
                user_id: *user_id.as_uuid(),
                total: items.total()?.into(),
                items: items.as_slice().iter().map(Item::from).collect(),
            },
            (OrderCommand::CreateOrder { order_id, .. }, Some(_)) => {
                return Err(DomainError::AlreadyExists {
                    kind: "order",
                    id: order_id.to_string(),
                });
            }
            // The command has no id (cqrs-es keeps it beside the command),
            // and a missing order has none to report.
            (OrderCommand::UpdateOrderStatus { .. }, None) => {
                return Err(DomainError::NotFound {
                    kind: "order",
                    id: String::new(),
                });
            }
            (OrderCommand::UpdateOrderStatus { status }, Some(state)) => {
                let current = OrderStatus::from(state.status);
                if !current.can_move_to(status) {
                    return Err(DomainError::InvalidTransition {
                        id: state.order_id.to_string(),
                        from: current,
                        to: status,
                    });
                }
                OrderEvent::OrderStatusUpdated {
                    order_id: state.order_id,
                    status: status.into(),
                    previous_status: state.status,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::OrderCreated {
                order_id,
                user_id,
                items,
                total,
            } => {
                self.state = Some(OrderState {
                    order_id,
                    user_id,
                    items,
                    total,
                    status: Status::Created,
                });
            }
            OrderEvent::OrderStatusUpdated { status, .. } => {
                if let Some(state) = self.state.as_mut() {
                    state.status = status;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::orchestrator::Metadata;
    use cqrs_es::AggregateError;
    use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
    use serde_json::{Value, json};
    use tokio::sync::oneshot;

    use super::*;

    /// The DynamoDB operations a client sent, by name, in order.
    #[derive(Clone, Debug, Default)]
    struct CallCounter(Arc<Mutex<Vec<String>>>);

    impl CallCounter {
        /// The operations sent since the last call, which it forgets.
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl Intercept for CallCounter {
        fn name(&self) -> &'static str {
            "PeerCallCounter"
        }

        // Once per operation, whatever its retries.
        fn read_after_serialization(
            &self,
            _context: &BeforeTransmitInterceptorContextRef<'_>,
            _runtime_components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            if let Some(metadata) = cfg.load::<Metadata>() {
                self.0.lock().unwrap().push(metadata.name().to_owned());
            }
            Ok(())
        }
    }

    /// A fresh in-memory store on port 0, a client for it that counts its
    /// calls, and a peer set up on it. Dropping it stops the store.
    struct TestPeer {
        peer: Peer,
        client: Client,
        calls: CallCounter,
        prefix: String,
        _stop: oneshot::Sender<()>,
    }

    async fn spawn_store() -> (SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let db = dynoxide::Database::memory().unwrap();
        tokio::spawn(dynoxide::server::serve_with_shutdown(listener, db, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    async fn spawn_peer() -> TestPeer {
        let (addr, stop) = spawn_store().await;
        let args = AwsArgs {
            endpoint_url: Some(format!("http://{addr}")),
            region: Some("us-east-1".to_owned()),
        };
        let sdk = load_sdk_config(&args, Some(StaticCredentials::local())).await;
        let calls = CallCounter::default();
        let client = Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(calls.clone())
                .build(),
        );
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let peer = Peer::setup(client.clone(), &prefix).await.unwrap();
        calls.take();
        TestPeer {
            peer,
            client,
            calls,
            prefix,
            _stop: stop,
        }
    }

    /// One stored event, as dynamo-es wrote it.
    #[derive(Debug)]
    struct Row {
        sequence: u64,
        event_type: String,
        event_version: String,
        payload: Value,
    }

    impl TestPeer {
        /// The events of one aggregate, in order, read without the peer.
        async fn rows(&self, aggregate_type: &str, id: &str) -> Vec<Row> {
            let out = self
                .client
                .query()
                .table_name(events_table(&self.prefix))
                .consistent_read(true)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", layout::AGGREGATE_TYPE_AND_ID)
                .expression_attribute_values(
                    ":k",
                    AttributeValue::S(format!("{aggregate_type}:{id}")),
                )
                .send()
                .await
                .unwrap();
            self.calls.take();
            out.items().iter().map(row).collect()
        }
    }

    fn row(item: &HashMap<String, AttributeValue>) -> Row {
        let s = |name: &str| item[name].as_s().unwrap().clone();
        Row {
            sequence: item[layout::AGGREGATE_ID_SEQUENCE]
                .as_n()
                .unwrap()
                .parse()
                .unwrap(),
            event_type: s(layout::EVENT_TYPE),
            event_version: s(layout::EVENT_VERSION),
            payload: serde_json::from_slice(item[layout::PAYLOAD].as_b().unwrap().as_ref())
                .unwrap(),
        }
    }

    fn key_schema(description: &aws_sdk_dynamodb::types::TableDescription) -> Vec<String> {
        description
            .key_schema()
            .iter()
            .map(|k| format!("{}:{}", k.attribute_name(), k.key_type().as_str()))
            .collect()
    }

    const QUERY_THEN_TRANSACT: [&str; 2] = ["Query", "TransactWriteItems"];

    #[tokio::test]
    async fn setup_is_idempotent_and_lays_out_the_tables_as_dynamo_es_does() {
        let app = spawn_peer().await;
        let user_id = app
            .peer
            .create_user("ann@example.com", "Ann")
            .await
            .unwrap();

        let again = Peer::setup(app.client.clone(), &app.prefix).await.unwrap();
        // The second setup found the tables and kept their items.
        assert_eq!(app.rows("User", &user_id).await.len(), 1);
        again.create_user("bob@example.com", "Bob").await.unwrap();

        let events = app
            .client
            .describe_table()
            .table_name(format!("{}-peer-events", app.prefix))
            .send()
            .await
            .unwrap();
        let events = events.table().unwrap();
        assert_eq!(events.table_status(), Some(&TableStatus::Active));
        assert_eq!(
            key_schema(events),
            ["AggregateTypeAndId:HASH", "AggregateIdSequence:RANGE"]
        );
        let snapshots = app
            .client
            .describe_table()
            .table_name(format!("{}-peer-snapshots", app.prefix))
            .send()
            .await
            .unwrap();
        let snapshots = snapshots.table().unwrap();
        assert_eq!(snapshots.table_status(), Some(&TableStatus::Active));
        assert_eq!(key_schema(snapshots), ["AggregateTypeAndId:HASH"]);
        assert_eq!(snapshots.item_count(), Some(0));
    }

    #[tokio::test]
    async fn a_user_and_an_order_through_its_life_cycle_are_two_calls_per_command() {
        let app = spawn_peer().await;

        let user_id = app
            .peer
            .create_user(" Ann@Example.COM ", "Ann")
            .await
            .unwrap();
        assert_eq!(app.calls.take(), QUERY_THEN_TRANSACT);

        let lines = [
            ("laptop".to_owned(), 2, 1_999),
            ("mouse".to_owned(), 1, 500),
        ];
        let order_id = app
            .peer
            .create_order(&user_id, &lines, "USD")
            .await
            .unwrap();
        assert_eq!(app.calls.take(), QUERY_THEN_TRANSACT);

        app.peer
            .update_order_status(&order_id, "PROCESSING")
            .await
            .unwrap();
        assert_eq!(app.calls.take(), QUERY_THEN_TRANSACT);
        app.peer
            .update_order_status(&order_id, "SHIPPED")
            .await
            .unwrap();
        assert_eq!(app.calls.take(), QUERY_THEN_TRANSACT);

        let users = app.rows("User", &user_id).await;
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].sequence, 1);
        assert_eq!(users[0].event_type, "UserCreated");
        assert_eq!(users[0].event_version, "1.0");
        assert_eq!(
            users[0].payload,
            json!({"UserCreated": {
                "user_id": user_id,
                "email": "ann@example.com",
                "name": "Ann",
            }})
        );

        let orders = app.rows("Order", &order_id).await;
        let summary: Vec<_> = orders
            .iter()
            .map(|r| (r.sequence, r.event_type.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, "OrderCreated"),
                (2, "OrderStatusUpdated"),
                (3, "OrderStatusUpdated")
            ]
        );
        assert_eq!(
            orders[0].payload,
            json!({"OrderCreated": {
                "order_id": order_id,
                "user_id": user_id,
                "items": [
                    {"sku": "laptop", "quantity": 2,
                     "unit_price": {"currency_code": "USD", "amount_minor": 1999}},
                    {"sku": "mouse", "quantity": 1,
                     "unit_price": {"currency_code": "USD", "amount_minor": 500}},
                ],
                "total": {"currency_code": "USD", "amount_minor": 4498},
            }})
        );
        assert_eq!(
            orders[2].payload,
            json!({"OrderStatusUpdated": {
                "order_id": order_id,
                "status": "SHIPPED",
                "previous_status": "PROCESSING",
            }})
        );
    }

    #[tokio::test]
    async fn an_invalid_transition_is_refused_after_the_query_and_writes_nothing() {
        let app = spawn_peer().await;
        let user_id = app
            .peer
            .create_user("ann@example.com", "Ann")
            .await
            .unwrap();
        let lines = [("laptop".to_owned(), 1, 99_999)];
        let order_id = app
            .peer
            .create_order(&user_id, &lines, "USD")
            .await
            .unwrap();
        app.calls.take();

        let err = app
            .peer
            .update_order_status(&order_id, "DELIVERED")
            .await
            .unwrap_err();
        let refusal = err.downcast_ref::<AggregateError<DomainError>>();
        assert!(
            matches!(
                refusal,
                Some(AggregateError::UserError(
                    DomainError::InvalidTransition { .. }
                ))
            ),
            "expected a refused transition, got {err:#}"
        );
        assert_eq!(app.calls.take(), ["Query"]);
        assert_eq!(app.rows("Order", &order_id).await.len(), 1);

        // An order that does not exist is refused the same way.
        let missing = Uuid::new_v4().to_string();
        assert!(
            app.peer
                .update_order_status(&missing, "PROCESSING")
                .await
                .is_err()
        );
        assert_eq!(app.calls.take(), ["Query"]);
        assert!(app.rows("Order", &missing).await.is_empty());
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_any_call() {
        let app = spawn_peer().await;
        assert!(app.peer.create_user("not-an-email", "Ann").await.is_err());
        let user_id = Uuid::new_v4().to_string();
        assert!(app.peer.create_order(&user_id, &[], "USD").await.is_err());
        let bad_quantity = [("laptop".to_owned(), 0, 1)];
        assert!(
            app.peer
                .create_order(&user_id, &bad_quantity, "USD")
                .await
                .is_err()
        );
        let order_id = Uuid::new_v4().to_string();
        assert!(
            app.peer
                .update_order_status(&order_id, "LOST")
                .await
                .is_err()
        );
        assert_eq!(app.calls.take(), Vec::<String>::new());
    }
}
