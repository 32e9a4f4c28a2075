//! The downstream chain of seed 000, end to end: a purchase becomes an
//! order, the order's `OrderCreated` goes through the bus's route-planner
//! rule to its queue, the route planner (`examples/route-planner`) records
//! the order's route through the command side, and the route's
//! `RouteCreated` goes through the route-events rule to its own queue:
//! once per order, however often the order's event is delivered. A message
//! the planner cannot handle ends in the queue's dead-letter queue, and is
//! handled once moved back.
//!
//! Like the other bus tests, these need an endpoint that speaks
//! EventBridge and SQS: `.ci/moto-e2e` runs them against moto.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use dynabridge::pb;
use dynabridge_domain::{OrderId, route_id_for};
use dynabridge_provision::{BusRule, RuleTarget, ensure_rule_target};
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::eventbridge::{
    Queue, allow_rules, assert_empty, create_queue, endpoint, provision_bus, receive,
};
use crate::helpers::{AppOptions, EVENT_SOURCE, TestApp, eventually, spawn_app_with};
use crate::products::create_product;
use crate::purchases::{item, outcome, purchase};
use crate::{create_user, new_request_id, usd};

/// How many receives fail before SQS moves a message to the dead-letter
/// queue (the template has 5; fewer keeps the test short).
const MAX_RECEIVES: u32 = 3;

/// The bus's rules, the route planner's queue (with its dead-letter queue)
/// and the route events' queue, as the template deploys them.
struct Chain {
    sqs: aws_sdk_sqs::Client,
    planner: Queue,
    planner_dlq: Queue,
    routes: Queue,
    /// Where EventBridge puts what it could not deliver to either queue.
    events_dlq: Queue,
}

async fn provision_chain(app: &TestApp) -> Chain {
    let (bus, events, sqs) = provision_bus(app).await;
    let planner_rule = bus.rule(BusRule::RoutePlanner).expect("the planner's rule");
    let routes_rule = bus.rule(BusRule::RouteEvents).expect("the routes' rule");
    let events_dlq = create_queue(&sqs, &format!("{}-events-dlq", app.tables.prefix)).await;
    let planner_dlq = create_queue(&sqs, &format!("{}-dlq", planner_rule.name)).await;
    let planner = create_queue(&sqs, &planner_rule.name).await;
    sqs.set_queue_attributes()
        .queue_url(&planner.url)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({
                "deadLetterTargetArn": planner_dlq.arn,
                "maxReceiveCount": MAX_RECEIVES,
            })
            .to_string(),
        )
        .send()
        .await
        .expect("the planner queue's redrive policy");
    allow_rules(&sqs, &planner, &[&planner_rule.arn]).await;
    allow_rules(&sqs, &events_dlq, &[&planner_rule.arn, &routes_rule.arn]).await;
    let routes = create_queue(&sqs, &routes_rule.name).await;
    allow_rules(&sqs, &routes, &[&routes_rule.arn]).await;
    for (rule, queue) in [(planner_rule, &planner), (routes_rule, &routes)] {
        let target = RuleTarget::queue(rule.rule, &queue.arn, Some(&events_dlq.arn));
        ensure_rule_target(&events, rule, &target)
            .await
            .expect("target the queue");
    }
    // The projector found no bus at its start: it publishes (and so
    // projects) nothing until its next check finds it, and says so in its
    // readiness.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", app.projector_health_addr()))
            .unwrap()
            .connect_lazy();
    let health = HealthClient::new(channel);
    eventually("the projector ready", Duration::from_secs(60), || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            (status == ServingStatus::Serving as i32).then_some(())
        }
    })
    .await;
    Chain {
        sqs,
        planner,
        planner_dlq,
        routes,
        events_dlq,
    }
}

/// The route planner, in this process, against the chain's queue and the
/// app's command service, until the returned sender is dropped or sent to.
fn start_planner(app: &TestApp, chain: &Chain) -> tokio::sync::oneshot::Sender<()> {
    let config = route_planner::Config {
        aws: dynabridge_aws::AwsArgs::default(),
        queue_url: chain.planner.url.clone(),
        command_endpoint: format!("http://{}", app.command_addr()),
        wait_seconds: 1,
        // Hidden for 0 s after a failure: received again at once, so that
        // the dead-letter queue is reached in a few receives.
        retry_after_ms: 1,
        call_timeout_ms: 5_000,
        // Not bound: the planner is built here without its health server.
        health_listen: "127.0.0.1:0".parse().unwrap(),
    };
    let channel = tonic::transport::Channel::from_shared(config.command_endpoint.clone())
        .unwrap()
        .connect_lazy();
    let planner = route_planner::Planner::new(chain.sqs.clone(), channel, &config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(planner.run_until(async move {
        let _ = stopped.await;
    }));
    stop
}

/// The `RouteCreated` events stored for `order_id`'s route.
async fn stored_routes(app: &TestApp, order_id: &str) -> Vec<(i64, String)> {
    let order = OrderId::parse("order_id", order_id).unwrap();
    let route_id = route_id_for(order).to_string();
    app.stored_events()
        .await
        .into_iter()
        .filter(|(aggregate_id, _, _)| *aggregate_id == route_id)
        .map(|(_, version, event_type)| (version, event_type))
        .collect()
}

/// Waits until `queue` holds no message, visible or in flight.
async fn wait_drained(sqs: &aws_sdk_sqs::Client, queue: &Queue) {
    eventually(
        &format!("{} drained", queue.name),
        Duration::from_secs(60),
        || async {
            let attributes = sqs
                .get_queue_attributes()
                .queue_url(&queue.url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
                .ok()?
                .attributes
                .unwrap_or_default();
            [
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ]
            .iter()
            .all(|name| attributes.get(name).map(String::as_str) == Some("0"))
            .then_some(())
        },
    )
    .await;
}

fn route_of(message: &Value) -> &Value {
    assert_eq!(message["detail-type"], "RouteCreated", "{message}");
    &message["detail"]["routeCreated"]
}

#[tokio::test]
#[ignore = "needs an EventBridge endpoint: run by .ci/moto-e2e"]
async fn a_purchase_becomes_an_order_the_order_a_route_and_each_route_is_published_once() {
    endpoint();
    let mut app = spawn_app_with(AppOptions {
        publish_to_bus: true,
    })
    .await;
    let chain = provision_chain(&app).await;
    let stop_planner = start_planner(&app, &chain);

    // A purchase of two products (no address: a route of picks), and an
    // order placed directly with an address (its route ends with the
    // delivery).
    let user = create_user(&mut app, "route@example.com", "Rita").await;
    create_product(&mut app, "CHAIN-MUG", 10, 1).await;
    create_product(&mut app, "CHAIN-TEA", 10, 1).await;
    let purchase_id = purchase(
        &mut app,
        &user.user_id,
        vec![item("CHAIN-MUG", 2), item("CHAIN-TEA", 1)],
    )
    .await;
    let purchased = outcome(&mut app, &purchase_id).await;
    assert_eq!(
        purchased.status,
        pb::PurchaseStatus::Completed as i32,
        "{purchased:?}"
    );
    let purchase_order = purchased.order_id.clone();
    let direct_order = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: user.user_id.clone(),
            items: vec![pb::OrderItem {
                sku: "CHAIN-LAMP".into(),
                quantity: 1,
                unit_price: Some(usd(4_500)),
            }],
            shipping_address: Some(pb::ShippingAddress {
                recipient: "Rita Ray".into(),
                line1: "Hauptstraße 1".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country_code: "DE".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create order")
        .into_inner();

    // Each order's route arrives in the route events' queue.
    let deadline = Instant::now() + Duration::from_secs(90);
    let messages = receive(&chain.sqs, &chain.routes, 2, deadline).await;
    let mut by_order: Vec<(&str, &Value)> = messages
        .iter()
        .map(|m| (route_of(m)["orderId"].as_str().unwrap(), route_of(m)))
        .collect();
    by_order.sort_by_key(|(order, _)| *order);
    let mut want = vec![purchase_order.as_str(), direct_order.order_id.as_str()];
    want.sort_unstable();
    assert_eq!(
        by_order.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        want,
        "one route per order"
    );
    let route = |order: &str| by_order.iter().find(|(o, _)| *o == order).unwrap().1;
    let picks = route(&purchase_order)["stops"].as_array().unwrap();
    let mut skus: Vec<(&str, &str)> = picks
        .iter()
        .map(|s| (s["sku"].as_str().unwrap(), s["quantity"].as_str().unwrap()))
        .collect();
    skus.sort_unstable();
    assert_eq!(skus, [("CHAIN-MUG", "2"), ("CHAIN-TEA", "1")]);
    assert!(route(&purchase_order)["distanceMetres"].as_str().is_some());
    let delivered = route(&direct_order.order_id)["stops"].as_array().unwrap();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(delivered[1]["location"], "Berlin, DE");
    assert_eq!(delivered[1].get("sku"), None, "the delivery picks nothing");
    for message in &messages {
        let route = route_of(message);
        assert_eq!(route["routeId"], message["detail"]["aggregateId"]);
        let order = OrderId::parse("order_id", route["orderId"].as_str().unwrap()).unwrap();
        assert_eq!(route["routeId"], route_id_for(order).to_string());
    }

    // The bus delivers at least once: the purchase's order event again, as
    // a second delivery would bring it, records nothing new.
    wait_drained(&chain.sqs, &chain.planner).await;
    let redelivery = redelivered_order_event(&app, &purchase_order).await;
    chain
        .sqs
        .send_message()
        .queue_url(&chain.planner.url)
        .message_body(redelivery.to_string())
        .send()
        .await
        .expect("deliver again");
    wait_drained(&chain.sqs, &chain.planner).await;

    for order in [&purchase_order, &direct_order.order_id] {
        assert_eq!(
            stored_routes(&app, order).await,
            [(1, "RouteCreated".to_owned())],
            "one route event for {order}"
        );
    }
    let _ = stop_planner.send(());
    // With nothing left to publish, anything else in the queues came twice.
    app.shutdown().await;
    assert_empty(&chain.sqs, &chain.routes).await;
    assert_empty(&chain.sqs, &chain.planner_dlq).await;
    assert_empty(&chain.sqs, &chain.events_dlq).await;
}

/// The `OrderCreated` of `order_id` as the bus delivers it, read back from
/// the event store through the envelope the projector publishes.
async fn redelivered_order_event(app: &TestApp, order_id: &str) -> Value {
    let events = dynabridge_event_store::read_events(
        &app.dynamo,
        &app.tables.event_store(),
        order_id,
        1,
        Some(1),
    )
    .await
    .expect("read the order's first event");
    let created = events.first().expect("the order's OrderCreated");
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "OrderCreated",
        "source": EVENT_SOURCE,
        "detail": serde_json::from_str::<Value>(&dynabridge::envelope::envelope_json(created)).unwrap(),
    })
}

#[tokio::test]
#[ignore = "needs an EventBridge endpoint: run by .ci/moto-e2e"]
async fn an_order_event_the_planner_cannot_handle_waits_in_the_dead_letter_queue_until_redriven() {
    endpoint();
    let mut app = spawn_app_with(AppOptions {
        publish_to_bus: true,
    })
    .await;
    let chain = provision_chain(&app).await;
    let user = create_user(&mut app, "late@example.com", "Lee").await;

    // An order's event that arrives before the command service knows the
    // order (here: made up for an order about to be placed): CreateRoute
    // answers NOT_FOUND, each receive fails, and SQS moves the message to
    // the dead-letter queue.
    let request_id = new_request_id();
    let order_id = OrderId::for_request(&request_id);
    let early = json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "OrderCreated",
        "source": EVENT_SOURCE,
        "detail": {
            "eventId": uuid::Uuid::new_v4().to_string(),
            "aggregateId": order_id.to_string(),
            "aggregateType": "Order",
            "eventType": "OrderCreated",
            "version": "1",
            "occurredAt": "2026-12-04T12:00:00Z",
            "schemaVersion": 3,
            "requestId": request_id,
            "correlationId": "corr-early",
            "orderCreated": {
                "orderId": order_id.to_string(),
                "userId": user.user_id,
                "items": [{ "sku": "LATE-1", "quantity": "1", "unitPrice": { "currencyCode": "USD", "amountMinor": "100" } }],
                "total": { "currencyCode": "USD", "amountMinor": "100" },
            },
        },
    });
    route_planner::read_message(&early.to_string()).expect("a well-formed order event");
    chain
        .sqs
        .send_message()
        .queue_url(&chain.planner.url)
        .message_body(early.to_string())
        .send()
        .await
        .expect("send the early event");
    let stop_planner = start_planner(&app, &chain);
    // Moved once a receive finds it received MAX_RECEIVES times already.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = peek_until_visible(&chain.sqs, &chain.planner_dlq, deadline).await;
    assert_eq!(dead, early, "the message, unchanged");
    assert!(stored_routes(&app, &order_id.to_string()).await.is_empty());

    // The order is placed; the operator redrives the dead-letter queue
    // (`aws sqs start-message-move-task` on AWS; moto has no move task,
    // so: received, sent back, deleted). Its own `OrderCreated` is routed
    // too, and the two copies of the order's event make one route.
    app.command
        .create_order(pb::CreateOrderRequest {
            request_id: request_id.clone(),
            user_id: user.user_id.clone(),
            items: vec![crate::item("LATE-1", 1, 100)],
            ..Default::default()
        })
        .await
        .expect("place the order");
    redrive(&chain.sqs, &chain.planner_dlq, &chain.planner).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let routed = receive(&chain.sqs, &chain.routes, 1, deadline).await;
    assert_eq!(route_of(&routed[0])["orderId"], order_id.to_string());
    wait_drained(&chain.sqs, &chain.planner).await;
    assert_eq!(
        stored_routes(&app, &order_id.to_string()).await,
        [(1, "RouteCreated".to_owned())]
    );
    let _ = stop_planner.send(());
    app.shutdown().await;
    assert_empty(&chain.sqs, &chain.routes).await;
    assert_empty(&chain.sqs, &chain.planner_dlq).await;
    assert_empty(&chain.sqs, &chain.events_dlq).await;
}

/// The body of the first message visible in `queue`, left there (hidden
/// for a second); panics at `deadline`.
async fn peek_until_visible(sqs: &aws_sdk_sqs::Client, queue: &Queue, deadline: Instant) -> Value {
    loop {
        assert!(Instant::now() < deadline, "nothing reached {}", queue.name);
        let out = sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(1)
            .visibility_timeout(1)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if let Some(message) = out.messages().first() {
            sqs.change_message_visibility()
                .queue_url(&queue.url)
                .receipt_handle(message.receipt_handle().unwrap())
                .visibility_timeout(0)
                .send()
                .await
                .expect("make it visible again");
            return serde_json::from_str(message.body().unwrap()).unwrap();
        }
    }
}

/// Moves every message of `from` to `to`: what `start-message-move-task`
/// does.
async fn redrive(sqs: &aws_sdk_sqs::Client, from: &Queue, to: &Queue) {
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&from.url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("receive dead letters");
        if out.messages().is_empty() {
            return;
        }
        for message in out.messages() {
            sqs.send_message()
                .queue_url(&to.url)
                .message_body(message.body().unwrap())
                .send()
                .await
                .expect("send back");
            sqs.delete_message()
                .queue_url(&from.url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete the dead letter");
        }
    }
}
