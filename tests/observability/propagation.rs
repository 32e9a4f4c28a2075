//! The correlation id and the W3C trace context travel from the gRPC call
//! into the stored event, and on to what the projector publishes: the
//! EventBridge entry (`TraceHeader`, X-Ray format) or the sink line.

use aws_sdk_dynamodb::types::AttributeValue;
use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::schema::event_store;
use dynabridge_runtime::health::HealthArgs;
use serde_json::Value;

use crate::fake_eventbridge::FakeEventBridge;
use crate::helpers::{
    Publish, Store, eventually, sdk_for, sdk_with_bus, start_command_service, start_projector,
};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// The same trace context as EventBridge takes it.
const TRACE_HEADER: &str =
    "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1";

/// What the two calls appended: a user with a trace context, an order
/// without one.
struct Sent {
    user_id: String,
    user_correlation: String,
    order_id: String,
    order_correlation: String,
}

fn with_metadata<T>(message: T, pairs: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in pairs {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

/// Creates a user with `x-correlation-id` and `traceparent` metadata, then
/// an order with a correlation id alone, and checks what is stored.
async fn send(store: &Store, addr: std::net::SocketAddr) -> Sent {
    let mut client = CommandServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let user_correlation = format!("corr-{}", uuid::Uuid::new_v4());
    let response = client
        .create_user(with_metadata(
            pb::CreateUserRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
                name: "Trace".into(),
                ..Default::default()
            },
            &[
                ("x-correlation-id", &user_correlation),
                ("traceparent", TRACEPARENT),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get("x-correlation-id").unwrap(),
        user_correlation.as_str()
    );
    let user_id = response.into_inner().user_id;

    let order_correlation = format!("corr-{}", uuid::Uuid::new_v4());
    let order_id = client
        .create_order(with_metadata(
            pb::CreateOrderRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                user_id: user_id.clone(),
                items: vec![pb::OrderItem {
                    sku: "widget".into(),
                    quantity: 1,
                    unit_price: Some(pb::Money {
                        currency_code: "EUR".into(),
                        amount_minor: 100,
                    }),
                }],
                ..Default::default()
            },
            &[("x-correlation-id", &order_correlation)],
        ))
        .await
        .unwrap()
        .into_inner()
        .order_id;

    let user = stored_event(store, &user_id).await;
    assert_eq!(
        user[event_store::CORRELATION_ID].as_s().unwrap(),
        &user_correlation
    );
    assert_eq!(user[event_store::TRACE_PARENT].as_s().unwrap(), TRACEPARENT);
    let order = stored_event(store, &order_id).await;
    assert_eq!(
        order[event_store::CORRELATION_ID].as_s().unwrap(),
        &order_correlation
    );
    assert!(
        !order.contains_key(event_store::TRACE_PARENT),
        "no trace context came with the order: {order:?}"
    );
    Sent {
        user_id,
        user_correlation,
        order_id,
        order_correlation,
    }
}

/// The first event of an aggregate, as stored.
async fn stored_event(
    store: &Store,
    aggregate_id: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    store
        .dynamo
        .get_item()
        .table_name(store.tables.event_store())
        .key(
            event_store::AGGREGATE_ID,
            AttributeValue::S(aggregate_id.to_owned()),
        )
        .key(event_store::VERSION, AttributeValue::N("1".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the event is stored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn they_reach_the_eventbridge_entry() {
    let store = Store::start().await;
    let bus = FakeEventBridge::start().await;
    let sdk = sdk_for(&store.endpoint).await;
    let args = store.store_args(&store.endpoint);
    let command = start_command_service(args.clone(), &sdk, HealthArgs::default()).await;
    // The projector's EventBridge calls go to the stand-in, the rest to
    // the store.
    let mut projector_args = args;
    projector_args.aws.endpoint_url = None;
    let projector = start_projector(
        projector_args,
        &sdk_with_bus(&store.endpoint, &bus.endpoint).await,
        HealthArgs::default(),
        Publish::Bus(store.tables.event_bus()),
    )
    .await;

    let sent = send(&store, command.addr).await;
    let entries = eventually("both events published", || async {
        let entries = bus.entries();
        (entries.len() >= 2).then_some(entries)
    })
    .await;
    let entry_of = |aggregate_id: &str| -> (Value, Value) {
        let entry = entries
            .iter()
            .find(|e| {
                let detail: Value = serde_json::from_str(e["Detail"].as_str().unwrap()).unwrap();
                detail["aggregateId"] == aggregate_id
            })
            .unwrap_or_else(|| panic!("no entry for {aggregate_id}: {entries:?}"))
            .clone();
        let detail = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
        (entry, detail)
    };
    let (user, detail) = entry_of(&sent.user_id);
    assert_eq!(user["TraceHeader"], TRACE_HEADER);
    assert_eq!(user["EventBusName"], store.tables.event_bus());
    assert_eq!(detail["correlationId"], sent.user_correlation);
    let (order, detail) = entry_of(&sent.order_id);
    assert!(order.get("TraceHeader").is_none(), "{order}");
    assert_eq!(detail["correlationId"], sent.order_correlation);

    command.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn they_reach_the_sink_line() {
    let store = Store::start().await;
    let sdk = sdk_for(&store.endpoint).await;
    let args = store.store_args(&store.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("events.jsonl");
    let command = start_command_service(args.clone(), &sdk, HealthArgs::default()).await;
    let projector = start_projector(
        args,
        &sdk,
        HealthArgs::default(),
        Publish::Sink(sink.clone()),
    )
    .await;

    let sent = send(&store, command.addr).await;
    let lines: Vec<Value> = eventually("both events in the sink", || async {
        let lines: Vec<Value> = std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let line_of = |aggregate_id: &str| {
        lines
            .iter()
            .find(|l| l["detail"]["aggregateId"] == aggregate_id)
            .unwrap_or_else(|| panic!("no line for {aggregate_id}: {lines:?}"))
    };
    let user = line_of(&sent.user_id);
    assert_eq!(user["traceHeader"], TRACE_HEADER);
    assert_eq!(user["detail"]["correlationId"], sent.user_correlation);
    let order = line_of(&sent.order_id);
    assert!(order.get("traceHeader").is_none(), "{order}");
    assert_eq!(order["detail"]["correlationId"], sent.order_correlation);

    command.stop().await;
    projector.stop().await;
}
