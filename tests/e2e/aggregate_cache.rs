//! The command handler's aggregate cache against a real store, below gRPC:
//! each handler stands for one command-service replica, with its own cache
//! and a client that counts the DynamoDB calls it makes.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use command_service::commands::{
    AggregateCache, AggregateCacheMetrics, CommandHandler, CommandMeta, RequestId,
};
use dynabridge::pb::ErrorReason as Reason;
use dynabridge::schema::Tables;
use dynabridge_domain::{
    Email, Event, OrderId, OrderLine, OrderLines, OrderStatus, Quantity, Sku, UserId, UserName,
    Version,
};
use dynabridge_event_store::{CommandOutcome, EventStore};
use dynabridge_runtime::error::AppError;

use dynabridge_testkit::EmbeddedStore;

use crate::helpers::{test_store, unique_prefix};

const QUERY: &str = "Query";
const TRANSACT: &str = "TransactWriteItems";
const GET_ITEM: &str = "GetItem";

/// Records the name of every operation a client makes, once per operation
/// whatever the SDK's retries.
#[derive(Clone, Debug, Default)]
struct CallCounter(Arc<Mutex<Vec<String>>>);

impl CallCounter {
    /// The calls since the last `take`.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "TestCallCounter"
    }

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

/// One store with the tables, for the handlers of one test.
struct Store {
    sdk: aws_config::SdkConfig,
    tables: Tables,
    _store: Option<EmbeddedStore>,
}

impl Store {
    /// The embedded store, or `DYNABRIDGE_TEST_ENDPOINT` under a unique
    /// table prefix.
    async fn start() -> Self {
        let (endpoint, store) = test_store().await;
        let sdk = dynabridge_testkit::sdk_config(&endpoint).await;
        let tables = Tables::new(unique_prefix());
        dynabridge_provision::ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &tables)
            .await
            .unwrap();
        Self {
            sdk,
            tables,
            _store: store,
        }
    }

    /// A handler with a cache of `capacity` (0: none), as one replica, and
    /// the counter of its calls.
    fn replica(&self, capacity: usize) -> Replica {
        let calls = CallCounter::default();
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk)
            .interceptor(calls.clone())
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let metrics = AggregateCacheMetrics::new().unwrap();
        let handler = CommandHandler::new(EventStore::new(client, self.tables.clone()))
            .with_aggregate_cache(AggregateCache::new(capacity, metrics.clone()));
        Replica {
            handler,
            calls,
            metrics,
        }
    }
}

struct Replica {
    handler: CommandHandler,
    calls: CallCounter,
    metrics: AggregateCacheMetrics,
}

impl Replica {
    async fn create_user(&self, email: &str) -> UserId {
        let outcome = self
            .handler
            .create_user(
                &meta(None),
                Email::parse(email).unwrap(),
                UserName::parse("Ann").unwrap(),
            )
            .await
            .unwrap();
        UserId::parse("user_id", &outcome.aggregate_id).unwrap()
    }

    async fn rename(
        &self,
        user: UserId,
        name: &str,
        expected: Option<Version>,
    ) -> Result<CommandOutcome, AppError> {
        self.handler
            .update_user_profile(
                &meta(expected),
                user,
                Some(UserName::parse(name).unwrap()),
                None,
            )
            .await
    }

    async fn create_order(&self, user: UserId) -> OrderId {
        let line = OrderLine {
            sku: Sku::parse("sku-1").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
            unit_price: dynabridge_domain::Money::parse("USD", 100).unwrap(),
        };
        let outcome = self
            .handler
            .create_order(
                &meta(None),
                user,
                OrderLines::new(vec![line]).unwrap(),
                None,
                None,
            )
            .await
            .unwrap();
        OrderId::parse("order_id", &outcome.aggregate_id).unwrap()
    }

    async fn move_order(
        &self,
        meta: &CommandMeta,
        order: OrderId,
        status: OrderStatus,
    ) -> Result<CommandOutcome, AppError> {
        self.handler.update_order_status(meta, order, status).await
    }

    /// (hits, misses, stale).
    fn cache_counts(&self) -> (u64, u64, u64) {
        (
            self.metrics.hits.get(),
            self.metrics.misses.get(),
            self.metrics.stale.get(),
        )
    }
}

/// A new request, its hash unique too.
fn meta(expected_version: Option<Version>) -> CommandMeta {
    let request_id = uuid::Uuid::new_v4().to_string();
    CommandMeta {
        request_id: RequestId::parse(&request_id).unwrap(),
        request_hash: format!("hash-{request_id}"),
        correlation_id: "cache-test".into(),
        trace_parent: None,
        expected_version,
    }
}

/// The stored events of `id`: their versions, and their events.
async fn history(replica: &Replica, id: &str) -> (Vec<Version>, Vec<Event>) {
    let events = replica.handler.store().load(id).await.unwrap();
    replica.calls.take();
    events.into_iter().map(|e| (e.version, e.event)).unzip()
}

#[tokio::test]
async fn a_command_on_an_aggregate_just_written_is_one_call() {
    let store = Store::start().await;
    let a = store.replica(100);

    let user = a.create_user("one@example.com").await;
    assert_eq!(a.calls.take(), [TRANSACT], "a create reads nothing");
    let renamed = a.rename(user, "Bea", None).await.unwrap();
    assert_eq!(renamed.version, 2);
    assert_eq!(a.calls.take(), [TRANSACT], "the update reads nothing");

    let order = a.create_order(user).await;
    a.calls.take();
    for (status, version) in [
        (OrderStatus::Processing, 2),
        (OrderStatus::Shipped, 3),
        (OrderStatus::Delivered, 4),
    ] {
        let moved = a.move_order(&meta(None), order, status).await.unwrap();
        assert_eq!(moved.version, version);
        assert_eq!(a.calls.take(), [TRANSACT], "moving to {status:?}");
    }
    assert_eq!(a.cache_counts(), (4, 0, 0));
    let (versions, _) = history(&a, &order.to_string()).await;
    assert_eq!(versions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_stale_cached_order_fails_the_append_and_is_read_again() {
    let store = Store::start().await;
    let (a, b) = (store.replica(100), store.replica(100));
    let user = a.create_user("two@example.com").await;
    let order = a.create_order(user).await;

    b.move_order(&meta(None), order, OrderStatus::Processing)
        .await
        .unwrap();
    assert_eq!(
        b.calls.take(),
        [QUERY, TRANSACT],
        "b had not seen the order"
    );
    a.calls.take();

    // A's cache says CREATED at version 1; cancelling is allowed from there
    // too, so only the append's condition can tell.
    let cancelled = a
        .move_order(&meta(None), order, OrderStatus::Cancelled)
        .await
        .unwrap();
    assert_eq!(cancelled.version, 3);
    assert_eq!(a.calls.take(), [TRANSACT, QUERY, TRANSACT]);
    assert_eq!(a.cache_counts(), (1, 0, 1));

    let (versions, events) = history(&a, &order.to_string()).await;
    assert_eq!(versions, [1, 2, 3], "no gap, no duplicate");
    assert!(
        matches!(
            events[2],
            Event::OrderStatusUpdated {
                previous_status: OrderStatus::Processing,
                status: OrderStatus::Cancelled,
                ..
            }
        ),
        "decided from the store, not the stale cache: {:?}",
        events[2]
    );

    // A's cache is current again.
    let refused = a
        .move_order(&meta(None), order, OrderStatus::Processing)
        .await
        .unwrap_err();
    assert!(
        refused.reason() == Some(Reason::InvalidStatusTransition),
        "{refused:?}"
    );
    assert_eq!(
        a.cache_counts(),
        (2, 0, 1),
        "the refusal was checked, not stale"
    );
}

#[tokio::test]
async fn an_expected_version_the_store_has_and_the_cache_has_not_succeeds() {
    let store = Store::start().await;
    let (a, b) = (store.replica(100), store.replica(100));
    let user = a.create_user("three@example.com").await;
    b.rename(user, "Bea", None).await.unwrap();
    a.calls.take();

    // The client saw version 2 (b's write); a's cache is at 1.
    let renamed = a.rename(user, "Cy", Some(2)).await.unwrap();
    assert_eq!(renamed.version, 3);
    assert_eq!(a.calls.take(), [QUERY, TRANSACT]);
    assert_eq!(a.cache_counts(), (1, 0, 1));

    // The other way round: the expected version is a's cached one, but the
    // store has moved on. That is a real conflict, and nothing is written.
    b.rename(user, "Dee", None).await.unwrap();
    let refused = a.rename(user, "Eve", Some(3)).await.unwrap_err();
    assert_eq!(
        refused.reason(),
        Some(Reason::VersionConflict),
        "{refused:?}"
    );
    let AppError::Refused(conflict) = &refused else {
        unreachable!()
    };
    assert_eq!(conflict.get("current_version"), Some("4"));
    assert_eq!(conflict.get("expected_version"), Some("3"));
    assert_eq!(a.calls.take(), [TRANSACT, QUERY, GET_ITEM]);
    let (versions, _) = history(&a, &user.to_string()).await;
    assert_eq!(versions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_transition_the_stale_cache_forbids_and_the_store_allows_succeeds() {
    let store = Store::start().await;
    let (a, b) = (store.replica(100), store.replica(100));
    let user = a.create_user("four@example.com").await;
    let order = a.create_order(user).await;
    b.move_order(&meta(None), order, OrderStatus::Processing)
        .await
        .unwrap();
    a.calls.take();

    // CREATED -> SHIPPED is forbidden; PROCESSING -> SHIPPED is not.
    let shipped = a
        .move_order(&meta(None), order, OrderStatus::Shipped)
        .await
        .unwrap();
    assert_eq!(shipped.version, 3);
    assert_eq!(a.calls.take(), [QUERY, TRANSACT]);
    let (versions, _) = history(&a, &order.to_string()).await;
    assert_eq!(versions, [1, 2, 3]);
}

#[tokio::test]
async fn a_retried_request_is_answered_from_its_record_with_the_cache() {
    let store = Store::start().await;
    let (a, b) = (store.replica(100), store.replica(100));
    let user = a.create_user("five@example.com").await;
    let order = a.create_order(user).await;
    let request = meta(None);
    let first = a
        .move_order(&request, order, OrderStatus::Processing)
        .await
        .unwrap();

    // PROCESSING -> PROCESSING is refused from the cache and from the
    // store; the record says it is the same request.
    for replica in [&a, &b] {
        let again = replica
            .move_order(&request, order, OrderStatus::Processing)
            .await
            .unwrap();
        assert_eq!(again, first);
    }
    let (versions, _) = history(&a, &order.to_string()).await;
    assert_eq!(versions, [1, 2]);
}

#[tokio::test]
async fn capacity_zero_reads_before_every_command() {
    let store = Store::start().await;
    let a = store.replica(0);
    assert!(a.handler.aggregate_cache().is_none());

    let user = a.create_user("six@example.com").await;
    assert_eq!(a.calls.take(), [TRANSACT]);
    a.rename(user, "Bea", None).await.unwrap();
    assert_eq!(a.calls.take(), [QUERY, TRANSACT]);
    a.rename(user, "Cy", None).await.unwrap();
    assert_eq!(a.calls.take(), [QUERY, TRANSACT]);
    assert_eq!(a.cache_counts(), (0, 0, 0));
}

#[tokio::test]
async fn an_evicted_aggregate_is_read_again() {
    let store = Store::start().await;
    let a = store.replica(1);
    let first = a.create_user("seven@example.com").await;
    let second = a.create_user("eight@example.com").await;
    a.calls.take();

    a.rename(first, "Bea", None).await.unwrap();
    assert_eq!(a.calls.take(), [QUERY, TRANSACT], "evicted by the second");
    a.rename(first, "Cy", None).await.unwrap();
    assert_eq!(a.calls.take(), [TRANSACT]);
    a.rename(second, "Dee", None).await.unwrap();
    assert_eq!(a.calls.take(), [QUERY, TRANSACT]);
    assert_eq!(a.cache_counts(), (1, 2, 0));
    assert_eq!(
        a.handler.aggregate_cache().map(AggregateCache::len),
        Some(1)
    );
}
