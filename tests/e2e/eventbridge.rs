//! Publishing to EventBridge, end to end: the bus, archive and rules that
//! `dynabridge_provision` creates (as the CloudFormation template deploys
//! them), an SQS queue behind each rule, and the projector publishing every
//! event of a command flow. Each event must reach exactly the queues whose
//! rule matches it, once, as the documented EventBridge event.
//!
//! These need an endpoint that speaks EventBridge and SQS besides DynamoDB,
//! so they are ignored by default; `.ci/moto-e2e` runs them against moto.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use dynabridge::pb;
use dynabridge::schema::{Tables, event_rules};
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
use dynabridge_provision::{
    BusRule, EventBus, EventBusOptions, RuleTarget, ensure_event_bus, ensure_rule_target,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{AppOptions, EVENT_SOURCE, eventually, spawn_app_with, unique_prefix};
use crate::item;

const ENDPOINT_ENV: &str = "DYNABRIDGE_TEST_ENDPOINT";

pub(crate) fn endpoint() -> String {
    std::env::var(ENDPOINT_ENV).unwrap_or_else(|_| {
        panic!(
            "set {ENDPOINT_ENV} to an endpoint that speaks DynamoDB, EventBridge and SQS; \
             .ci/moto-e2e starts moto for it"
        )
    })
}

#[tokio::test]
#[ignore = "needs an EventBridge endpoint: run by .ci/moto-e2e"]
async fn each_event_reaches_exactly_the_queues_whose_rule_matches() {
    endpoint();
    let started = chrono::Utc::now();
    let mut app = spawn_app_with(AppOptions {
        publish_to_bus: true,
    })
    .await;
    let events = dynabridge_aws::eventbridge_client(app.sdk());
    let sqs = aws_sdk_sqs::Client::new(app.sdk());

    // The bus, its archive and rules, and a queue behind each rule with
    // the template's names, policies, retry policy and dead-letter queue.
    let options = EventBusOptions {
        event_source: EVENT_SOURCE.into(),
        archive_retention_days: 7,
        filtered_order_status: pb::OrderStatus::Shipped,
    };
    let bus = ensure_event_bus(&events, &app.tables, &options)
        .await
        .expect("provision the bus");
    let dead_letters = create_queue(&sqs, &format!("{}-events-dlq", app.tables.prefix)).await;
    let rule_arns: Vec<&str> = bus.rules.iter().map(|r| r.arn.as_str()).collect();
    allow_rules(&sqs, &dead_letters, &rule_arns).await;
    let mut queues = BTreeMap::new();
    for rule in &bus.rules {
        let queue = create_queue(&sqs, &rule.name).await;
        allow_rules(&sqs, &queue, &[&rule.arn]).await;
        let target = RuleTarget::queue(rule.rule, &queue.arn, Some(&dead_letters.arn));
        ensure_rule_target(&events, rule, &target)
            .await
            .expect("target the queue");
        queues.insert(rule.rule, queue);
    }

    // The flow: a user, renamed; two orders, one of them shipped.
    let user = app
        .command
        .create_user(pb::CreateUserRequest {
            request_id: "eb-create-user".into(),
            correlation_id: "corr-create-user".into(),
            email: "Eve@Example.com".into(),
            name: "Eve".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut rename = tonic::Request::new(pb::UpdateUserProfileRequest {
        request_id: "eb-rename-user".into(),
        user_id: user.user_id.clone(),
        name: "Eve Adams".into(),
        update_mask: Some(pbjson_types::FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    });
    rename
        .metadata_mut()
        .insert("x-correlation-id", "corr-rename-user".parse().unwrap());
    let renamed = app
        .command
        .update_user_profile(rename)
        .await
        .unwrap()
        .into_inner();
    let order_a = create_order(&mut app, "a", &user.user_id, item("laptop", 1, 99_999)).await;
    let order_b = create_order(&mut app, "b", &user.user_id, item("mouse", 2, 2_500)).await;
    let processing = update_status(&mut app, &order_a.order_id, pb::OrderStatus::Processing).await;
    let shipped = update_status(&mut app, &order_a.order_id, pb::OrderStatus::Shipped).await;

    let user_id = user.user_id.as_str();
    let (a, b) = (order_a.order_id.as_str(), order_b.order_id.as_str());
    let user_created = Expected {
        event_id: single(&user.event_ids),
        aggregate_id: user_id.into(),
        event_type: "UserCreated",
        version: user.version,
        request_id: "eb-create-user",
        correlation_id: user.correlation_id.clone(),
        payload: json!({ "userCreated": {
            "userId": user_id, "email": "eve@example.com", "name": "Eve",
        } }),
    };
    let user_renamed = Expected {
        event_id: single(&renamed.event_ids),
        aggregate_id: user_id.into(),
        event_type: "UserProfileUpdated",
        version: renamed.version,
        request_id: "eb-rename-user",
        correlation_id: renamed.correlation_id.clone(),
        payload: json!({ "userProfileUpdated": { "userId": user_id, "name": "Eve Adams" } }),
    };
    let money = |minor: &str| json!({ "currencyCode": "USD", "amountMinor": minor });
    let a_created = Expected {
        event_id: single(&order_a.event_ids),
        aggregate_id: a.into(),
        event_type: "OrderCreated",
        version: order_a.version,
        request_id: "eb-create-order-a",
        correlation_id: order_a.correlation_id.clone(),
        payload: json!({ "orderCreated": {
            "orderId": a, "userId": user_id,
            "items": [{ "sku": "laptop", "quantity": "1", "unitPrice": money("99999") }],
            "total": money("99999"),
        } }),
    };
    let b_created = Expected {
        event_id: single(&order_b.event_ids),
        aggregate_id: b.into(),
        event_type: "OrderCreated",
        version: order_b.version,
        request_id: "eb-create-order-b",
        correlation_id: order_b.correlation_id.clone(),
        payload: json!({ "orderCreated": {
            "orderId": b, "userId": user_id,
            "items": [{ "sku": "mouse", "quantity": "2", "unitPrice": money("2500") }],
            "total": money("5000"),
        } }),
    };
    let a_processing = Expected {
        event_id: single(&processing.event_ids),
        aggregate_id: a.into(),
        event_type: "OrderStatusUpdated",
        version: processing.version,
        request_id: "eb-status-ORDER_STATUS_PROCESSING",
        correlation_id: processing.correlation_id.clone(),
        payload: json!({ "orderStatusUpdated": {
            "orderId": a, "status": "ORDER_STATUS_PROCESSING", "previousStatus": "ORDER_STATUS_CREATED",
        } }),
    };
    let a_shipped = Expected {
        event_id: single(&shipped.event_ids),
        aggregate_id: a.into(),
        event_type: "OrderStatusUpdated",
        version: shipped.version,
        request_id: "eb-status-ORDER_STATUS_SHIPPED",
        correlation_id: shipped.correlation_id.clone(),
        payload: json!({ "orderStatusUpdated": {
            "orderId": a, "status": "ORDER_STATUS_SHIPPED", "previousStatus": "ORDER_STATUS_PROCESSING",
        } }),
    };
    // The correlation ids are the ones the commands were sent with.
    assert_eq!(
        [
            &user_created,
            &user_renamed,
            &a_created,
            &b_created,
            &a_processing,
            &a_shipped
        ]
        .map(|e| e.correlation_id.as_str()),
        [
            "corr-create-user",
            "corr-rename-user",
            "corr-create-order-a",
            "corr-create-order-b",
            "corr-status-ORDER_STATUS_PROCESSING",
            "corr-status-ORDER_STATUS_SHIPPED",
        ]
    );
    let routed: BTreeMap<BusRule, Vec<&Expected>> = BTreeMap::from([
        (BusRule::UserEvents, vec![&user_created, &user_renamed]),
        (
            BusRule::OrderEvents,
            vec![&a_created, &b_created, &a_processing, &a_shipped],
        ),
        (BusRule::OrdersWithStatus, vec![&a_shipped]),
        // Nothing takes the route planner's queue here: see route_chain.rs.
        (BusRule::RoutePlanner, vec![&a_created, &b_created]),
        (BusRule::RouteEvents, vec![]),
    ]);

    // Drain each queue until its events are in, then stop the app: with
    // nothing left to publish, what else is in a queue was delivered twice
    // or to the wrong queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = BTreeMap::new();
    for (rule, expected) in &routed {
        let messages = receive(&sqs, &queues[rule], expected.len(), deadline).await;
        received.insert(*rule, messages);
    }
    app.shutdown().await;
    let finished = chrono::Utc::now();
    for queue in queues.values().chain([&dead_letters]) {
        assert_empty(&sqs, queue).await;
    }

    let mut bus_ids: HashMap<String, String> = HashMap::new();
    for (rule, expected) in &routed {
        let messages = &received[rule];
        let mut got: Vec<&str> = messages
            .iter()
            .map(|m| m["detail"]["eventId"].as_str().unwrap_or_default())
            .collect();
        let mut want: Vec<&str> = expected.iter().map(|e| e.event_id.as_str()).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "the events in the queue of {rule:?}");
        for message in messages {
            let event = expected
                .iter()
                .find(|e| message["detail"]["eventId"] == e.event_id.as_str())
                .unwrap();
            event.check(message, started, finished);
            // One PutEvents entry, one EventBridge event, whichever the rule.
            let id = message["id"].as_str().unwrap().to_owned();
            assert_eq!(
                bus_ids.entry(event.event_id.clone()).or_insert(id.clone()),
                &id
            );
        }
    }

    // The archive keeps every event, for as long as configured.
    let archive = events
        .describe_archive()
        .archive_name(&bus.archive.name)
        .send()
        .await
        .unwrap();
    assert_eq!(archive.retention_days(), Some(7));
    assert_eq!(archive.event_source_arn(), Some(bus.arn.as_str()));
    assert_eq!(
        archive.state(),
        Some(&aws_sdk_eventbridge::types::ArchiveState::Enabled)
    );
    eventually("six archived events", Duration::from_secs(10), || {
        let request = events
            .describe_archive()
            .archive_name(&bus.archive.name)
            .send();
        async move { (request.await.ok()?.event_count() == 6).then_some(()) }
    })
    .await;
}

/// `ReplayEvents` from the archive: EventBridge replays the archived
/// entries to the bus, each the original with a `replay-name`. (moto
/// replays the whole archive to every rule whatever the window and the
/// rules chosen; AWS keeps to both. So this checks what both do: the
/// order rule's queue gets its event again, marked, unchanged otherwise.)
#[tokio::test]
#[ignore = "needs an EventBridge endpoint: run by .ci/moto-e2e"]
async fn an_archive_replay_delivers_the_archived_originals_again_marked() {
    endpoint();
    let started = chrono::Utc::now();
    let mut app = spawn_app_with(AppOptions {
        publish_to_bus: true,
    })
    .await;
    let (bus, events, sqs) = provision_bus(&app).await;
    let rule = bus
        .rules
        .iter()
        .find(|r| r.rule == BusRule::OrderEvents)
        .unwrap();
    let queue = create_queue(&sqs, &rule.name).await;
    allow_rules(&sqs, &queue, &[&rule.arn]).await;
    ensure_rule_target(
        &events,
        rule,
        &RuleTarget::queue(rule.rule, &queue.arn, None),
    )
    .await
    .expect("target the queue");

    let user = crate::create_user(&mut app, "replayed@example.com", "Replayed").await;
    let order = create_order(&mut app, "replayed", &user.user_id, item("lamp", 1, 1_500)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let original = receive(&sqs, &queue, 1, deadline).await.remove(0);
    assert_eq!(original["detail"]["aggregateId"], order.order_id.as_str());
    assert!(original.get("replay-name").is_none(), "{original}");
    eventually("the order archived", Duration::from_secs(10), || {
        let request = events
            .describe_archive()
            .archive_name(&bus.archive.name)
            .send();
        async move { (request.await.ok()?.event_count() >= 2).then_some(()) }
    })
    .await;

    let asked = app
        .admin
        .replay_events(pb::ReplayEventsRequest {
            start_time: Some(dynabridge::convert::timestamp_to_pb(
                started - chrono::Duration::minutes(1),
            )),
            end_time: Some(dynabridge::convert::timestamp_to_pb(chrono::Utc::now())),
            rules: vec![rule.name.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .replay
        .unwrap();
    assert_eq!(
        asked.source,
        pb::ReplaySource::Archive as i32,
        "the default with a bus"
    );
    assert_eq!(asked.rules, std::slice::from_ref(&rule.name));
    let replay = crate::replay::completed(&app, &asked.replay_id).await;
    assert!(replay.finish_time.is_some(), "{replay:?}");

    let again = receive(&sqs, &queue, 1, Instant::now() + Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(again["replay-name"], asked.archive_replay_name.as_str());
    assert_eq!(
        again["detail"], original["detail"],
        "the original, its event id included"
    );
    assert_eq!(again["detail-type"], original["detail-type"]);
    app.shutdown().await;
}

#[tokio::test]
#[ignore = "needs an EventBridge endpoint: run by .ci/moto-e2e"]
async fn provisioning_the_bus_is_idempotent_and_follows_its_options() {
    let sdk = load_sdk_config(
        &AwsArgs {
            endpoint_url: Some(endpoint()),
            region: Some("us-east-1".into()),
        },
        Some(StaticCredentials::local()),
    )
    .await;
    let events = dynabridge_aws::eventbridge_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let tables = Tables::new(unique_prefix());
    let options = EventBusOptions {
        event_source: "dynabridge.provisioning".into(),
        ..EventBusOptions::default()
    };

    let first = ensure_event_bus(&events, &tables, &options).await.unwrap();
    let again = ensure_event_bus(&events, &tables, &options).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(first.name, tables.event_bus());
    assert_eq!(first.archive.name, tables.event_archive());
    assert_eq!(first.archive.retention_days, 30);
    assert_eq!(
        rule_names(&events, &first.name, &tables.prefix).await,
        [
            tables.event_rule(event_rules::ORDER_EVENTS),
            tables.event_rule(event_rules::ORDERS_WITH_STATUS),
            tables.event_rule(event_rules::ROUTE_EVENTS),
            tables.event_rule(event_rules::ROUTE_PLANNER),
            tables.event_rule(event_rules::USER_EVENTS),
        ]
    );
    for rule in &first.rules {
        let described = events
            .describe_rule()
            .name(&rule.name)
            .event_bus_name(&first.name)
            .send()
            .await
            .unwrap();
        let pattern: Value = serde_json::from_str(described.event_pattern().unwrap()).unwrap();
        assert_eq!(pattern, rule.rule.event_pattern(&options), "{}", rule.name);
        assert_eq!(described.arn(), Some(rule.arn.as_str()));
        assert_eq!(
            described.state(),
            Some(&aws_sdk_eventbridge::types::RuleState::Enabled)
        );
        assert_eq!(
            described.description(),
            Some(rule.rule.description(&options).as_str())
        );
    }

    // New options: the archive and the filter follow, nothing is duplicated.
    let changed = EventBusOptions {
        archive_retention_days: 7,
        filtered_order_status: pb::OrderStatus::Delivered,
        ..options.clone()
    };
    let updated = ensure_event_bus(&events, &tables, &changed).await.unwrap();
    assert_eq!((&updated.arn, &updated.rules), (&first.arn, &first.rules));
    let archive = events
        .describe_archive()
        .archive_name(&updated.archive.name)
        .send()
        .await
        .unwrap();
    assert_eq!(archive.retention_days(), Some(7));
    let filtered = events
        .describe_rule()
        .name(tables.event_rule(event_rules::ORDERS_WITH_STATUS))
        .event_bus_name(&updated.name)
        .send()
        .await
        .unwrap();
    let pattern: Value = serde_json::from_str(filtered.event_pattern().unwrap()).unwrap();
    assert_eq!(
        pattern["detail"]["orderStatusUpdated"]["status"],
        json!(["ORDER_STATUS_DELIVERED"])
    );
    assert_eq!(
        rule_names(&events, &updated.name, &tables.prefix)
            .await
            .len(),
        BusRule::ALL.len()
    );

    // A target set twice is one target, with the template's retry policy
    // and dead-letter queue.
    let queue = create_queue(&sqs, &format!("{}-user-events", tables.prefix)).await;
    let dead_letters = create_queue(&sqs, &format!("{}-events-dlq", tables.prefix)).await;
    let rule = first.rule(BusRule::UserEvents).unwrap();
    let target = RuleTarget::queue(BusRule::UserEvents, &queue.arn, Some(&dead_letters.arn));
    ensure_rule_target(&events, rule, &target).await.unwrap();
    ensure_rule_target(&events, rule, &target).await.unwrap();
    let targets = events
        .list_targets_by_rule()
        .rule(&rule.name)
        .event_bus_name(&first.name)
        .send()
        .await
        .unwrap();
    let targets: Vec<_> = targets
        .targets()
        .iter()
        .map(|t| {
            (
                t.id().to_owned(),
                t.arn().to_owned(),
                t.retry_policy().and_then(|p| p.maximum_retry_attempts()),
                t.retry_policy()
                    .and_then(|p| p.maximum_event_age_in_seconds()),
                t.dead_letter_config()
                    .and_then(|d| d.arn())
                    .map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [(
            "user-events-queue".to_owned(),
            queue.arn.clone(),
            Some(185),
            Some(86_400),
            Some(dead_letters.arn.clone()),
        )]
    );
}

/// What one published event must be.
struct Expected {
    event_id: String,
    aggregate_id: String,
    event_type: &'static str,
    version: i64,
    request_id: &'static str,
    correlation_id: String,
    /// The payload's field of the envelope, for example `{"userCreated": {...}}`.
    payload: Value,
}

impl Expected {
    /// `message` is the EventBridge event as its queue received it, and its
    /// detail exactly the envelope, apart from `occurredAt`, which must be
    /// between `started` and `finished` and be the event's `time`.
    fn check(
        &self,
        message: &Value,
        started: chrono::DateTime<chrono::Utc>,
        finished: chrono::DateTime<chrono::Utc>,
    ) {
        assert_eq!(message["source"], EVENT_SOURCE, "{message}");
        assert_eq!(message["detail-type"], self.event_type, "{message}");
        assert!(
            message["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{message}"
        );

        let mut detail = message["detail"].clone();
        let occurred_at = detail
            .as_object_mut()
            .and_then(|d| d.remove("occurredAt"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_default();
        let occurred_at = chrono::DateTime::parse_from_rfc3339(&occurred_at)
            .unwrap_or_else(|e| panic!("occurredAt of {message}: {e}"))
            .to_utc();
        assert!(
            started <= occurred_at && occurred_at <= finished,
            "{message}"
        );
        // EventBridge's `time` has whole seconds.
        assert_eq!(
            message["time"],
            occurred_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "{message}"
        );

        let aggregate_type = if self.event_type.starts_with("User") {
            "User"
        } else {
            "Order"
        };
        let mut want = json!({
            "eventId": self.event_id,
            "aggregateId": self.aggregate_id,
            "aggregateType": aggregate_type,
            "eventType": self.event_type,
            "version": self.version.to_string(),
            "schemaVersion": dynabridge::upcast::current_schema_version(self.event_type),
            "requestId": self.request_id,
            "correlationId": self.correlation_id,
        });
        want.as_object_mut()
            .unwrap()
            .extend(self.payload.as_object().unwrap().clone());
        assert_eq!(detail, want);
    }
}

fn single(ids: &[String]) -> String {
    assert_eq!(ids.len(), 1, "one event per command: {ids:?}");
    ids[0].clone()
}

async fn create_order(
    app: &mut crate::helpers::TestApp,
    name: &str,
    user_id: &str,
    line: pb::OrderItem,
) -> pb::CreateOrderResponse {
    app.command
        .create_order(pb::CreateOrderRequest {
            request_id: format!("eb-create-order-{name}"),
            correlation_id: format!("corr-create-order-{name}"),
            user_id: user_id.into(),
            items: vec![line],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn update_status(
    app: &mut crate::helpers::TestApp,
    order_id: &str,
    status: pb::OrderStatus,
) -> pb::UpdateOrderStatusResponse {
    let name = status.as_str_name();
    app.command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: format!("eb-status-{name}"),
            correlation_id: format!("corr-status-{name}"),
            order_id: order_id.into(),
            status: status as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The rules on `bus` whose names start with `prefix` (EventBridge adds
/// its own rule for the archive), sorted.
async fn rule_names(events: &aws_sdk_eventbridge::Client, bus: &str, prefix: &str) -> Vec<String> {
    let rules = events
        .list_rules()
        .event_bus_name(bus)
        .name_prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut names: Vec<String> = rules
        .rules()
        .iter()
        .filter_map(|r| r.name().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The bus of `app`'s tables, with its archive and rules, for the test's
/// event source; and clients for it and for SQS.
pub(crate) async fn provision_bus(
    app: &crate::helpers::TestApp,
) -> (EventBus, aws_sdk_eventbridge::Client, aws_sdk_sqs::Client) {
    let events = dynabridge_aws::eventbridge_client(app.sdk());
    let sqs = aws_sdk_sqs::Client::new(app.sdk());
    let options = EventBusOptions {
        event_source: EVENT_SOURCE.into(),
        ..EventBusOptions::default()
    };
    let bus = ensure_event_bus(&events, &app.tables, &options)
        .await
        .expect("provision the bus");
    (bus, events, sqs)
}

pub(crate) struct Queue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

pub(crate) async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Queue {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    Queue {
        name: name.to_owned(),
        url,
        arn,
    }
}

/// The template's queue policy: EventBridge may send to `queue` for the
/// rules `rule_arns` only. (moto does not enforce it; AWS does.)
pub(crate) async fn allow_rules(sqs: &aws_sdk_sqs::Client, queue: &Queue, rule_arns: &[&str]) {
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue.arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": rule_arns } },
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(&queue.url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .expect("set the queue policy");
}

/// Receives and deletes messages of `queue` until `count` have come, as
/// JSON; panics at `deadline`.
pub(crate) async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue: &Queue,
    count: usize,
    deadline: Instant,
) -> Vec<Value> {
    let mut messages = Vec::new();
    while messages.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out with {} of {count} messages in {}: {messages:?}",
            messages.len(),
            queue.name
        );
        // Long polls, shorter than the SDK's 5 s attempt timeout.
        let wait = left.as_secs().clamp(1, 2) as i32;
        let out = sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .send()
            .await
            .expect("receive messages");
        for message in out.messages() {
            let body = message.body().unwrap_or_default();
            messages.push(
                serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("message body is not JSON ({e}): {body}")),
            );
            sqs.delete_message()
                .queue_url(&queue.url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete message");
        }
    }
    messages
}

pub(crate) async fn assert_empty(sqs: &aws_sdk_sqs::Client, queue: &Queue) {
    let out = sqs
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(10)
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap();
    let bodies: Vec<_> = out.messages().iter().filter_map(|m| m.body()).collect();
    assert!(bodies.is_empty(), "{} also received {bodies:?}", queue.name);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    for name in [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ] {
        assert_eq!(
            attributes.get(&name).map(String::as_str),
            Some("0"),
            "{name:?} of {}",
            queue.name
        );
    }
}
