//! The IAM roles of `deploy/cloudformation/dynabridge.yaml` against the
//! calls the binaries really make: every DynamoDB, EventBridge and SQS
//! action a binary calls is allowed to its role, and nothing more is.
//!
//! The real binaries ([`BINARIES`]) run as separate processes against an
//! embedded store, each recording its AWS calls (`DYNABRIDGE_AWS_CALL_LOG`),
//! through a flow that takes every code path that calls AWS. The projector
//! publishes to a stand-in for EventBridge's `PutEvents` through its real
//! bus client, so that publishing is recorded too, and the published
//! entries are run through the template's event rules. The template's
//! route-planner rule delivers the events it matches, as EventBridge
//! delivers them, to a stand-in for SQS holding the template's queue (with
//! its redrive policy); the route planner reads them from there through its
//! real SQS client, records each order's route through the command service
//! (whose `RouteCreated` the projector publishes in turn), and hides a
//! message it cannot read again until the queue's redrive moves it to the
//! dead-letter queue. What the stand-ins cannot show is that AWS accepts
//! the calls; the moto run covers the bus and queue APIs themselves.
//!
//! Beside it, checks of the template alone: the tables are the ones
//! `src/provision.rs` creates, the roles keep the write and read sides
//! apart (the route planner's touches no table, only its queue) and trust
//! only their binary's ServiceAccount, the rules deliver to their queues
//! with retries and a dead-letter queue, and an alarm watches each
//! dead-letter queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_eventbridge;
mod fake_sqs;
mod policy;
// Shared with the other crates that run the binaries; each uses part of it.
#[allow(dead_code)]
mod template;

use dynabridge_testkit::processes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use dynabridge::pb;
use dynabridge::pb::admin_service_client::AdminServiceClient;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::schema::{
    Tables, event_rules, event_store, order_summaries, products, user_profiles,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::fake_eventbridge::FakeEventBridge;
use crate::fake_sqs::FakeSqs;
use crate::policy::{Allow, Request, Role};
use crate::template::Template;

/// The deployment the template is resolved for: any account and region do;
/// recorded ARNs are moved into them.
const REGION: &str = "eu-west-1";
const ACCOUNT: &str = "123456789012";
const NAMESPACE: &str = "shop";
const OIDC_ISSUER: &str = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";

/// Each binary, and the logical id of its role in the template.
const BINARIES: [(&str, &str); 6] = [
    ("command-service", "CommandServiceRole"),
    ("projector", "ProjectorRole"),
    ("process-manager", "ProcessManagerRole"),
    ("query-service", "QueryServiceRole"),
    ("admin-service", "AdminServiceRole"),
    ("route-planner", "RoutePlannerRole"),
];

/// Allowances the flow cannot reach: (binary, action, resource glob,
/// why). Each is an allowance this test does not check, so keep it short;
/// an entry the flow does reach fails the test.
const NOT_EXERCISED: &[(&str, &str, &str, &str)] = &[(
    "process-manager",
    "dynamodb:Query",
    "arn:aws:dynamodb:*:*:table/*-event-store/index/EventTypeBucket-Timestamp-index",
    "a window the stream trimmed before the process manager read it, read back \
     from the event store: the embedded store keeps 24 hours of stream; the \
     projector's same call is exercised by its replays, and the shared reading \
     code by dynabridge-stream's catch-up tests",
)];

fn unique_prefix() -> String {
    // The template's Prefix: lowercase, at most 24 characters.
    format!("iam{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn load_template(prefix: &str) -> Template {
    load_template_with(prefix, &[])
}

/// [`load_template`], with the optional parameters of `optional` set too.
fn load_template_with(prefix: &str, optional: &[(&str, &str)]) -> Template {
    let provider = format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_ISSUER}");
    let mut parameters = vec![
        ("Prefix", prefix),
        ("Environment", "dev"),
        ("EksOidcProviderArn", &provider),
        ("EksOidcIssuer", OIDC_ISSUER),
        ("Namespace", NAMESPACE),
    ];
    parameters.extend_from_slice(optional);
    Template::load(&parameters, REGION, ACCOUNT)
}

/// An embedded store on loopback, and a client of it that records nothing.
async fn start_store() -> (String, aws_sdk_dynamodb::Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(dynoxide::server::serve_with_shutdown(
        listener,
        dynoxide::Database::memory().unwrap(),
        std::future::pending(),
    ));
    let sdk = dynabridge_aws::load_sdk_config(
        &dynabridge_aws::AwsArgs {
            endpoint_url: Some(endpoint.clone()),
            region: Some("us-east-1".into()),
        },
        Some(dynabridge_aws::StaticCredentials::local()),
    )
    .await;
    (endpoint, aws_sdk_dynamodb::Client::new(&sdk))
}

fn role<'a>(roles: &'a [Role], logical_id: &str) -> &'a Role {
    roles
        .iter()
        .find(|r| r.logical_id == logical_id)
        .unwrap_or_else(|| panic!("no role {logical_id} in the template"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_each_binary_is_allowed_to_its_role_and_nothing_more_is() {
    let (endpoint, dynamo) = start_store().await;
    let prefix = unique_prefix();
    let tables = Tables::new(prefix.clone());
    dynabridge_provision::ensure_tables(&dynamo, &tables)
        .await
        .unwrap();
    let bus = FakeEventBridge::start().await;
    let sqs = FakeSqs::start().await;
    let planner_queue = PlannerQueue::from_template(&load_template(&prefix), &bus, &sqs);
    let dir = tempfile::tempdir().unwrap();
    let log = |binary: &str| dir.path().join(format!("{binary}.calls"));

    let service_args = ["--endpoint-url", &endpoint, "--listen", "127.0.0.1:0"];
    let spawn_command_service = || {
        processes::spawn_recording(
            "command-service",
            &prefix,
            &log("command-service"),
            &service_args,
            &[],
        )
    };
    let command_proc = spawn_command_service();
    let query_proc = processes::spawn_recording(
        "query-service",
        &prefix,
        &log("query-service"),
        &service_args,
        &[],
    );
    let event_bus = tables.event_bus();
    let projector_args = [
        "--health-listen",
        "127.0.0.1:0",
        "--event-bus",
        &event_bus,
        "--idle-poll-max-ms",
        "20",
    ];
    // The SDK's own endpoint settings, since the store and the bus differ:
    // a service's endpoint variable wins over AWS_ENDPOINT_URL (but not
    // over --endpoint-url, which sets every service's).
    let projector_env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", bus.endpoint.as_str()),
    ];
    let spawn_projector = || {
        processes::spawn_recording(
            "projector",
            &prefix,
            &log("projector"),
            &projector_args,
            &projector_env,
        )
    };
    let projector = spawn_projector();
    // The purchase process, on the store alone.
    let process_args = [
        "--endpoint-url",
        &endpoint,
        "--health-listen",
        "127.0.0.1:0",
        "--idle-poll-max-ms",
        "20",
    ];
    let spawn_process_manager = || {
        processes::spawn_recording(
            "process-manager",
            &prefix,
            &log("process-manager"),
            &process_args,
            &[],
        )
    };
    let process_manager = spawn_process_manager();

    let mut flow = Flow {
        commands: CommandServiceClient::connect(format!("http://{}", command_proc.addr))
            .await
            .unwrap(),
        queries: QueryServiceClient::connect(format!("http://{}", query_proc.addr))
            .await
            .unwrap(),
        events: 0,
        orders: 0,
    };
    let state = flow.before_restart(&dynamo, &tables).await;
    // The restarted projector resumes from its checkpoint, with an empty
    // row cache: the next events on known aggregates read their rows.
    projector.terminate();
    let projector = spawn_projector();
    // So is a restarted command service's aggregate cache: its next command
    // on each known aggregate reads the aggregate's events first.
    command_proc.terminate();
    let command_proc = spawn_command_service();
    // And the process manager resumes from its own checkpoint.
    process_manager.terminate();
    let process_manager = spawn_process_manager();
    flow.commands = CommandServiceClient::connect(format!("http://{}", command_proc.addr))
        .await
        .unwrap();
    // The route planner, on the restarted command service: the orders
    // placed so far wait in its queue, and a message it cannot read, which
    // it hides again for 0 s (1 ms, doubling) each time it fails.
    let unreadable = sqs.send(&planner_queue.url, PlannerQueue::unreadable());
    let command_endpoint = format!("http://{}", command_proc.addr);
    let planner_args = [
        "--queue-url",
        &planner_queue.url,
        "--command-endpoint",
        &command_endpoint,
        "--wait-seconds",
        "1",
        "--retry-after-ms",
        "1",
        "--health-listen",
        "127.0.0.1:0",
    ];
    let route_planner = processes::spawn_recording_without_tables(
        "route-planner",
        &log("route-planner"),
        &planner_args,
        &[("AWS_ENDPOINT_URL_SQS", sqs.endpoint.as_str())],
    );
    flow.after_restart(&state).await;

    // The admin service, started after an event of an older version (one
    // without its event-type bucket) is in the store: its migration gives
    // the event its bucket, then it answers every look back.
    let legacy_user = put_legacy_event(&dynamo, &tables).await;
    flow.events += 1;
    // With the bus, for archive replays: its endpoint as the projector's.
    let admin_args = ["--listen", "127.0.0.1:0", "--event-bus", &event_bus];
    let admin_proc = processes::spawn_recording(
        "admin-service",
        &prefix,
        &log("admin-service"),
        &admin_args,
        &projector_env,
    );
    let mut admin = AdminServiceClient::connect(format!("http://{}", admin_proc.addr))
        .await
        .unwrap();
    look_back(&mut admin, &state, &legacy_user).await;
    // Two events the projector cannot read park their aggregates; one is
    // fixed and retried (and then published), the other skipped.
    park_retry_and_skip(&mut admin, &dynamo, &tables).await;
    flow.events += 1;
    let status = admin
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.shards.len(), 1, "{status:?}");
    assert_eq!(status.read_models.len(), 4);
    // Read models rebuilt: generation 1 built and served, commands and
    // queries on it; generation 2 built in pages that cut aggregates, and
    // dropped.
    rebuild_and_drop(&mut admin, &mut flow, &state, &dynamo, &tables).await;
    // The order events replayed through the projector's publisher, marked.
    let replay = replay_orders(&mut admin).await;
    // And from the bus's archive, to the order rule, by EventBridge.
    replay_archive(&mut admin, &tables).await;
    admin_proc.terminate();
    assert!(!load_template(&prefix).condition("WatchesParking"));
    let watched = load_template_with(&prefix, &[("ProjectorLogGroupName", "/eks/shop/projector")]);
    assert!(watched.condition("WatchesParking"));
    check_parked_alarm(&watched, &projector);

    // Every order planned, its route recorded as an event.
    flow.events += planner_queue
        .wait_until_planned(&bus, &sqs, flow.orders, &unreadable)
        .await;

    // Every event was published, to the template's bus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let is_replayed = |e: &Value| {
        fake_eventbridge::as_event(e)["detail"]
            .get("replayId")
            .is_some()
    };
    let entries = loop {
        let entries = bus.entries();
        let distinct = entries
            .iter()
            .filter(|e| !is_replayed(e))
            .map(|e| fake_eventbridge::as_event(e)["detail"]["eventId"].to_string())
            .collect::<BTreeSet<String>>()
            .len();
        if distinct == flow.events {
            break entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{distinct} of {} events published",
            flow.events
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Each once: the restarted projector went on from its checkpoint (the
    // first one stopped cleanly, after checkpointing what it published).
    let (replayed, originals): (Vec<&Value>, Vec<&Value>) =
        entries.iter().partition(|e| is_replayed(e));
    assert_eq!(originals.len(), flow.events, "published more than once");
    // The replay: every order event again, once, marked with its id, with
    // the original's event id.
    let original_orders: BTreeSet<String> = originals
        .iter()
        .map(|e| fake_eventbridge::as_event(e))
        .filter(|e| e["detail"]["aggregateType"] == "Order")
        .map(|e| e["detail"]["eventId"].to_string())
        .collect();
    let replayed_ids: Vec<String> = replayed
        .iter()
        .map(|e| {
            let event = fake_eventbridge::as_event(e);
            assert_eq!(event["detail"]["replayId"], replay.replay_id.as_str());
            event["detail"]["eventId"].to_string()
        })
        .collect();
    assert_eq!(replayed_ids.len() as i64, replay.events_published);
    assert_eq!(
        replayed_ids.iter().cloned().collect::<BTreeSet<_>>(),
        original_orders
    );
    command_proc.terminate();
    query_proc.terminate();
    projector.terminate();
    process_manager.terminate();
    route_planner.terminate();

    let template = load_template(&prefix);
    assert_eq!(template.property("EventBus", "Name"), event_bus);
    check_rules_route(&template, &tables, &entries);

    let roles = policy::roles(&template);
    let mut failures = Vec::new();
    let mut recorded = BTreeMap::new();
    for (binary, role_id) in BINARIES {
        let role = role(&roles, role_id);
        let text = std::fs::read_to_string(log(binary)).unwrap();
        let requests: BTreeSet<Request> = text
            .lines()
            .map(|line| policy::request(line, REGION, ACCOUNT))
            .collect();
        assert!(!requests.is_empty(), "{binary} recorded no call");
        for request in &requests {
            if !role.allows.iter().any(|allow| allow.allows(request)) {
                failures.push(format!(
                    "{binary} calls {request}, which {role_id} does not allow"
                ));
            }
        }
        for allow in &role.allows {
            let used = requests.iter().any(|r| allow.allows(r));
            let excused = NOT_EXERCISED.iter().any(|(b, a, r, _)| {
                *b == binary && *a == allow.action && policy::glob(r, &allow.resource)
            });
            match (used, excused) {
                (false, false) => failures.push(format!(
                    "{role_id} allows {allow}, which {binary} never called"
                )),
                (true, true) => failures.push(format!(
                    "{allow} is listed as not exercised, but {binary} called it"
                )),
                _ => {}
            }
        }
        recorded.insert(binary, requests);
    }
    assert!(
        failures.is_empty(),
        "{}\n\nrecorded:\n{}",
        failures.join("\n"),
        recorded
            .iter()
            .flat_map(|(b, rs)| rs.iter().map(move |r| format!("  {b}: {r}")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The route planner's queue and its dead-letter queue, by their URLs, in
/// the stand-in for SQS.
struct PlannerQueue {
    url: String,
    dead_letters: String,
    /// The receives before SQS moves a message to the dead-letter queue.
    max_receives: u32,
}

impl PlannerQueue {
    /// The template's route-planner queue, made in `sqs` as the template
    /// makes it (visibility timeout, redrive policy), and its rule on
    /// `bus`, delivering there.
    fn from_template(template: &Template, bus: &FakeEventBridge, sqs: &FakeSqs) -> Self {
        let url = |id: &str| {
            template
                .resolve(&json!({ "Ref": id }))
                .as_str()
                .unwrap()
                .to_owned()
        };
        let arn = |id: &str| template.resolve(&json!({ "Fn::GetAtt": [id, "Arn"] }));
        let queue = template.resolve(&template.resource("RoutePlannerQueue")["Properties"]);
        let redrive = &queue["RedrivePolicy"];
        assert_eq!(
            redrive["deadLetterTargetArn"],
            arn("RoutePlannerDeadLetterQueue")
        );
        let planner = Self {
            url: url("RoutePlannerQueue"),
            dead_letters: url("RoutePlannerDeadLetterQueue"),
            max_receives: redrive["maxReceiveCount"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .expect("a maxReceiveCount"),
        };
        let visibility = queue["VisibilityTimeout"].as_u64().unwrap_or(30);
        sqs.create_queue(
            &planner.url,
            Duration::from_secs(visibility),
            Some((&planner.dead_letters, planner.max_receives)),
        );
        let rule = template.resolve(&template.resource("RoutePlannerRule")["Properties"]);
        assert_eq!(rule["Targets"][0]["Arn"], arn("RoutePlannerQueue"));
        let (sqs, queue_url) = (sqs.clone(), planner.url.clone());
        bus.add_rule(
            rule["EventBusName"].as_str().unwrap(),
            rule["EventPattern"].clone(),
            move |event| {
                sqs.send(&queue_url, event.to_string());
            },
        );
        planner
    }

    /// A message the route planner cannot read: an event whose detail is
    /// no event envelope.
    fn unreadable() -> String {
        json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "OrderCreated",
            "source": "dynabridge",
            "account": ACCOUNT,
            "time": "2030-01-01T00:00:00Z",
            "region": REGION,
            "resources": [],
            "detail": { "eventId": 1 },
        })
        .to_string()
    }

    /// Waits until the route planner planned each of the `orders` orders
    /// placed, each once: a `RouteCreated` published for each, recorded
    /// with the request id of its order's event; every message the rule
    /// delivered (a replayed copy too, answered from the command side's
    /// record of the first) deleted; and the `unreadable` message hidden
    /// again at each of its receives until SQS moved it to the dead-letter
    /// queue. Returns the routes recorded.
    async fn wait_until_planned(
        &self,
        bus: &FakeEventBridge,
        sqs: &FakeSqs,
        orders: usize,
        unreadable: &str,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let events: Vec<Value> = bus
                .entries()
                .iter()
                .map(fake_eventbridge::as_event)
                .collect();
            let of_type = |detail_type: &'static str| {
                events
                    .iter()
                    .filter(move |e| e["detail-type"] == detail_type)
                    .map(|e| &e["detail"])
            };
            let text = |value: &Value| value.as_str().unwrap().to_owned();
            // Order id to the event id of its `OrderCreated`, and to the
            // request id of its `RouteCreated`.
            let placed: BTreeMap<String, String> = of_type("OrderCreated")
                .map(|d| (text(&d["aggregateId"]), text(&d["eventId"])))
                .collect();
            let routes: Vec<(String, String)> = of_type("RouteCreated")
                .filter(|d| d.get("replayId").is_none())
                .map(|d| (text(&d["routeCreated"]["orderId"]), text(&d["requestId"])))
                .collect();
            let delivered = of_type("OrderCreated").count();
            let deleted = sqs.deleted(&self.url);
            let waiting = sqs.messages(&self.url);
            let dead = sqs.messages(&self.dead_letters);
            if placed.len() == orders
                && routes.len() == orders
                && deleted.len() == delivered
                && waiting.is_empty()
                && !dead.is_empty()
            {
                let expected: BTreeMap<String, String> = placed
                    .iter()
                    .map(|(order, event)| (order.clone(), format!("route/{event}")))
                    .collect();
                assert_eq!(
                    routes.into_iter().collect::<BTreeMap<_, _>>(),
                    expected,
                    "one route per order, for its OrderCreated"
                );
                let deleted_events: BTreeSet<String> = deleted
                    .iter()
                    .map(|m| {
                        let event: Value = serde_json::from_str(&m.body).unwrap();
                        assert_eq!(event["detail-type"], "OrderCreated", "{event}");
                        text(&event["detail"]["eventId"])
                    })
                    .collect();
                assert_eq!(
                    deleted_events,
                    placed.values().cloned().collect(),
                    "every copy of every order's event handled"
                );
                let [dead] = dead.as_slice() else {
                    panic!("one dead letter: {dead:?}");
                };
                assert_eq!(dead.id, unreadable);
                assert_eq!(
                    (dead.receive_count, dead.visibility_changes),
                    (self.max_receives, self.max_receives),
                    "hidden again at each receive"
                );
                return orders;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the route planner: {} of {orders} orders placed, {} routed; \
                 {} of {delivered} deliveries deleted, {} waiting, {} dead letters",
                placed.len(),
                routes.len(),
                deleted.len(),
                waiting.len(),
                dead.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Puts a `UserCreated` event as a version before the event-type buckets
/// wrote it: without `EventTypeBucket`. Returns the user's id.
async fn put_legacy_event(dynamo: &aws_sdk_dynamodb::Client, tables: &Tables) -> String {
    let user_id = dynabridge_domain::UserId::new_random();
    let stored = dynabridge_domain::StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version: 1,
        occurred_at: chrono::Utc::now(),
        request_id: "legacy".into(),
        correlation_id: "legacy".into(),
        trace_parent: None,
        event: dynabridge_domain::Event::UserCreated {
            user_id,
            email: dynabridge_domain::Email::parse("old@example.com").unwrap(),
            name: dynabridge_domain::UserName::parse("Old").unwrap(),
        },
    };
    let mut item = dynabridge_event_store::codec::event_to_item(&stored);
    item.remove(event_store::EVENT_TYPE_BUCKET).unwrap();
    dynamo
        .put_item()
        .table_name(tables.event_store())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    user_id.to_string()
}

/// Puts a `UserCreated` of a new user whose payload is `event_data`, as
/// version 1; returns the stored event.
async fn put_user_created(
    dynamo: &aws_sdk_dynamodb::Client,
    tables: &Tables,
    user_id: dynabridge_domain::UserId,
    event_data: Option<&str>,
) -> String {
    let stored = dynabridge_domain::StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version: 1,
        occurred_at: chrono::Utc::now(),
        request_id: format!("parked-{user_id}"),
        correlation_id: "parked".into(),
        trace_parent: None,
        event: dynabridge_domain::Event::UserCreated {
            user_id,
            email: dynabridge_domain::Email::parse(&format!(
                "{}@example.com",
                user_id.as_uuid().simple()
            ))
            .unwrap(),
            name: dynabridge_domain::UserName::parse("Parked").unwrap(),
        },
    };
    let mut item = dynabridge_event_store::codec::event_to_item(&stored);
    if let Some(data) = event_data {
        item.insert(
            event_store::EVENT_DATA.into(),
            AttributeValue::S(data.into()),
        );
    }
    dynamo
        .put_item()
        .table_name(tables.event_store())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    user_id.to_string()
}

/// The value at `$.a.b` of `json`.
fn json_path<'a>(json: &'a Value, path: &str) -> &'a Value {
    let path = path.strip_prefix("$.").expect("a $. path");
    path.split('.').fold(json, |value, key| &value[key])
}

/// The template's parked-aggregates metric filter, run over the projector's
/// real log lines as CloudWatch Logs would: it finds the lines the projector
/// logged while aggregates were parked, and its value follows them down to
/// 0 once they are released; the alarm watches that metric.
fn check_parked_alarm(template: &Template, projector: &processes::Proc) {
    let filter = template.resolve(&template.resource("ParkedAggregatesMetricFilter")["Properties"]);
    let pattern = filter["FilterPattern"].as_str().unwrap();
    // The one pattern shape used: `{ $.path = "text" }`.
    let (path, text) = pattern
        .trim_matches(|c| c == '{' || c == '}' || c == ' ')
        .split_once(" = ")
        .expect("{ $.path = \"text\" }");
    let text = text.trim_matches('"');
    let transform = &filter["MetricTransformations"][0];
    let value_path = transform["MetricValue"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let values = loop {
        let values: Vec<i64> = projector
            .log_lines()
            .iter()
            .filter(|line| json_path(line, path) == text)
            .map(|line| json_path(line, value_path).as_i64().expect("a number"))
            .collect();
        if values.last() == Some(&0) || std::time::Instant::now() > deadline {
            break values;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        values.iter().any(|v| *v >= 1),
        "no parked line matched: {values:?}"
    );
    assert_eq!(values.last(), Some(&0), "released: {values:?}");
    let alarm = template.resolve(&template.resource("ParkedAggregatesAlarm")["Properties"]);
    assert_eq!(alarm["Namespace"], transform["MetricNamespace"]);
    assert_eq!(alarm["MetricName"], transform["MetricName"]);
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["Threshold"], 0);
    for id in ["ParkedAggregatesMetricFilter", "ParkedAggregatesAlarm"] {
        assert_eq!(template.resource(id)["Condition"], "WatchesParking", "{id}");
    }
}

/// Every parked aggregate, one per page.
async fn parked_ids(admin: &mut AdminServiceClient<Channel>) -> BTreeSet<String> {
    let (mut ids, mut token) = (BTreeSet::new(), String::new());
    loop {
        let page = admin
            .list_parked(pb::ListParkedRequest {
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.aggregates.into_iter().map(|a| a.aggregate_id));
        token = page.next_page_token;
        if token.is_empty() {
            return ids;
        }
    }
}

/// Parks two aggregates, lists them, fixes and retries one, skips the
/// other, and waits until the projector has released both.
async fn park_retry_and_skip(
    admin: &mut AdminServiceClient<Channel>,
    dynamo: &aws_sdk_dynamodb::Client,
    tables: &Tables,
) {
    let (fixed_id, dropped_id) = (
        dynabridge_domain::UserId::new_random(),
        dynabridge_domain::UserId::new_random(),
    );
    let fixed = put_user_created(dynamo, tables, fixed_id, Some("{not json")).await;
    let dropped = put_user_created(dynamo, tables, dropped_id, Some("{not json")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while parked_ids(admin).await != BTreeSet::from([fixed.clone(), dropped.clone()]) {
        assert!(tokio::time::Instant::now() < deadline, "not parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put_user_created(dynamo, tables, fixed_id, None).await;
    admin
        .retry_parked(pb::RetryParkedRequest {
            aggregate_id: fixed.clone(),
        })
        .await
        .unwrap();
    admin
        .skip_parked(pb::SkipParkedRequest {
            aggregate_id: dropped,
            reason: "test data".into(),
        })
        .await
        .unwrap();
    while !parked_ids(admin).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every call of the admin service: a listing by type over pages (once the
/// migration lets it), a history over pages, a user and an order at a
/// point.
async fn look_back(admin: &mut AdminServiceClient<Channel>, created: &Created, legacy_user: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut users, mut token) = (BTreeSet::new(), String::new());
    loop {
        let listed = admin
            .list_events_by_type(pb::ListEventsByTypeRequest {
                event_type: "UserCreated".into(),
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await;
        let page = match listed {
            Ok(page) => page.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "still migrating");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(status) => panic!("{status:?}"),
        };
        users.extend(page.events.into_iter().map(|e| e.aggregate_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(
        users.contains(legacy_user) && users.contains(&created.ann),
        "{users:?}"
    );
    assert_eq!(users.len(), 3, "Ann, Bob and the legacy user");

    let (mut versions, mut token) = (Vec::new(), String::new());
    loop {
        let page = admin
            .get_aggregate_history(pb::GetAggregateHistoryRequest {
                aggregate_id: created.ann.clone(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        versions.extend(page.events.iter().map(|e| e.version));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(versions, [1, 2, 3]);
    let ann = admin
        .get_user_as_of(pb::GetUserAsOfRequest {
            user_id: created.ann.clone(),
            as_of: Some(pb::AsOf {
                point: Some(pb::as_of::Point::Version(1)),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((ann.email.as_str(), ann.version), ("ann@example.com", 1));
    let now = dynabridge::convert::timestamp_to_pb(chrono::Utc::now());
    let order = admin
        .get_order_as_of(pb::GetOrderAsOfRequest {
            order_id: created.order_of_bob.clone(),
            as_of: Some(pb::AsOf {
                point: Some(pb::as_of::Point::Time(now)),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.status, pb::OrderStatus::Processing as i32);
}

/// The generation `n` once `done` holds of the list of generations.
async fn generations_until(
    admin: &mut AdminServiceClient<Channel>,
    what: &str,
    done: impl Fn(&pb::ListGenerationsResponse) -> bool,
) -> pb::ListGenerationsResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = admin
            .list_generations(pb::ListGenerationsRequest {})
            .await
            .unwrap()
            .into_inner();
        if done(&list) {
            return list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rebuild_and_drop(
    admin: &mut AdminServiceClient<Channel>,
    flow: &mut Flow,
    created: &Created,
    dynamo: &aws_sdk_dynamodb::Client,
    tables: &Tables,
) {
    admin
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            segments: 2,
            no_switch: false,
            page_size: 0,
        })
        .await
        .unwrap();
    generations_until(admin, "generation 1 served", |l| l.serving == 1).await;
    // The query service follows within a second: a row only generation 1
    // has shows when it does.
    let marker = uuid::Uuid::new_v4().to_string();
    let row = dynabridge_read_models::UserProfileRow {
        user_id: marker.clone(),
        email: "marker@example.com".into(),
        name: "Marker".into(),
        version: 1,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    dynamo
        .put_item()
        .table_name(tables.read_models(1).user_profiles)
        .set_item(Some(row.to_item()))
        .send()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while flow
        .queries
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: marker.clone(),
            min_version: 0,
        })
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query service never served generation 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The query service answers from generation 1 (rows, and each index);
    // the projector writes it (reading rows it has not cached yet).
    flow.update_user("u-ann-rebuilt", &created.ann, "Ann Rebuilt", "")
        .await;
    flow.set_status(
        "o-3-shipped",
        &created.order_of_bob,
        pb::OrderStatus::Shipped,
    )
    .await;
    assert_eq!(
        flow.order(&created.order_of_bob, 3).await.status,
        pb::OrderStatus::Shipped as i32
    );
    assert_eq!(flow.profile(&created.ann, 4).await.name, "Ann Rebuilt");
    let by_email = flow
        .queries
        .get_user_by_email(pb::GetUserByEmailRequest {
            email: "ann@example.org".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_email.user.unwrap().user_id, created.ann);
    // The second purchase's order cancelled: its stock released, its row
    // in generation 1 (the rebuild wrote it) read first.
    flow.cancel_purchase(&created.second_purchase, "buy-2-cancelled")
        .await;
    let mug = flow.restock("p-mug-rebuilt", "MUG").await;
    assert_eq!(
        flow.product("MUG", mug).await.stock,
        4,
        "3, 2 bought, 2 released, 1 restocked"
    );
    assert_eq!(flow.catalogue().await.1, ["MUG"]);
    // Two placed with CreateOrder, two by purchases.
    assert_eq!(flow.orders_of_user(&created.ann).await.len(), 4);
    assert!(
        flow.orders_in(pb::OrderStatus::Shipped)
            .await
            .contains(&created.order_of_bob)
    );

    admin
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            segments: 1,
            no_switch: true,
            page_size: 1,
        })
        .await
        .unwrap();
    generations_until(admin, "generation 2 built", |l| {
        l.generations
            .iter()
            .any(|g| g.generation == 2 && g.state == pb::GenerationState::Standby as i32)
    })
    .await;
    admin
        .drop_generation(pb::DropGenerationRequest { generation: 2 })
        .await
        .unwrap();
    generations_until(admin, "generation 2 dropped", |l| {
        l.generations
            .iter()
            .any(|g| g.generation == 2 && g.state == pb::GenerationState::Dropped as i32)
    })
    .await;
}

/// Replays every order event through the admin service, and waits for the
/// projector to finish it.
async fn replay_orders(admin: &mut AdminServiceClient<Channel>) -> pb::Replay {
    let asked = admin
        .replay_events(pb::ReplayEventsRequest {
            start_time: Some(pbjson_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            end_time: Some(dynabridge::convert::timestamp_to_pb(
                chrono::Utc::now() + chrono::Duration::minutes(1),
            )),
            event_types: vec!["OrderCreated".into(), "OrderStatusUpdated".into()],
            source: pb::ReplaySource::EventStore.into(),
            rules: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .replay
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let replay = admin
            .get_replay(pb::GetReplayRequest {
                replay_id: asked.replay_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .replay
            .unwrap();
        if replay.state == pb::ReplayState::Completed as i32 {
            return replay;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay: {replay:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replays the archive to the order rule (the default source, with a bus),
/// and follows it to its end.
async fn replay_archive(admin: &mut AdminServiceClient<Channel>, tables: &Tables) {
    let rule = tables.event_rule(dynabridge::schema::event_rules::ORDER_EVENTS);
    let asked = admin
        .replay_events(pb::ReplayEventsRequest {
            start_time: Some(pbjson_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            end_time: Some(dynabridge::convert::timestamp_to_pb(chrono::Utc::now())),
            rules: vec![rule.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .replay
        .unwrap();
    assert_eq!(asked.source, pb::ReplaySource::Archive as i32);
    assert_eq!(asked.rules, [rule]);
    assert!(
        asked.archive_replay_name.starts_with(&tables.prefix),
        "{asked:?}"
    );
    let replay = admin
        .get_replay(pb::GetReplayRequest {
            replay_id: asked.replay_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .replay
        .unwrap();
    assert_eq!(
        replay.state,
        pb::ReplayState::Completed as i32,
        "{replay:?}"
    );
}

/// What the flow created before the projector restart.
struct Created {
    ann: String,
    order_of_bob: String,
    purchase: String,
    second_purchase: String,
}

/// The clients, how many events the commands appended, and how many
/// orders they placed.
struct Flow {
    commands: CommandServiceClient<Channel>,
    queries: QueryServiceClient<Channel>,
    events: usize,
    orders: usize,
}

impl Flow {
    async fn create_user(&mut self, request_id: &str, email: &str, name: &str) -> String {
        let created = self
            .commands
            .create_user(pb::CreateUserRequest {
                request_id: request_id.into(),
                email: email.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.events += created.event_ids.len();
        created.user_id
    }

    async fn update_user(&mut self, request_id: &str, user_id: &str, name: &str, email: &str) {
        let paths = [("name", name), ("email", email)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(p, _)| p.to_owned())
            .collect();
        let updated = self
            .commands
            .update_user_profile(pb::UpdateUserProfileRequest {
                request_id: request_id.into(),
                user_id: user_id.into(),
                name: name.into(),
                email: email.into(),
                update_mask: Some(pbjson_types::FieldMask { paths }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.events += updated.event_ids.len();
    }

    async fn create_product(&mut self, request_id: &str, sku: &str, stock: i64) {
        let created = self
            .commands
            .create_product(pb::CreateProductRequest {
                request_id: request_id.into(),
                sku: sku.into(),
                name: sku.into(),
                unit_price: Some(pb::Money {
                    currency_code: "EUR".into(),
                    amount_minor: 500,
                }),
                initial_stock: stock,
                reorder_level: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.events += created.event_ids.len();
    }

    async fn restock(&mut self, request_id: &str, sku: &str) -> i64 {
        let restocked = self
            .commands
            .restock_product(pb::RestockProductRequest {
                request_id: request_id.into(),
                sku: sku.into(),
                quantity: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.events += restocked.event_ids.len();
        restocked.version
    }

    async fn product(&mut self, sku: &str, min_version: i64) -> pb::Product {
        self.queries
            .get_product(pb::GetProductRequest {
                sku: sku.into(),
                min_version,
            })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    /// The catalogue, a page of one at a time, and the low-stock listing.
    async fn catalogue(&mut self) -> (BTreeSet<String>, Vec<String>) {
        let mut all = BTreeSet::new();
        let mut token = String::new();
        loop {
            let page = self
                .queries
                .list_products(pb::ListProductsRequest {
                    page_size: 1,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            all.extend(page.products.into_iter().map(|p| p.sku));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let low = self
            .queries
            .list_low_stock_products(pb::ListLowStockProductsRequest {
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .products
            .into_iter()
            .map(|p| p.sku)
            .collect();
        (all, low)
    }

    /// Asks for a purchase of `quantity` of `sku`: its id.
    async fn buy(&mut self, request_id: &str, user_id: &str, sku: &str, quantity: i64) -> String {
        let asked = self
            .commands
            .purchase_products(pb::PurchaseProductsRequest {
                request_id: request_id.into(),
                user_id: user_id.into(),
                items: vec![pb::PurchaseItem {
                    sku: sku.into(),
                    quantity,
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.events += asked.event_ids.len();
        asked.purchase_id
    }

    /// The purchase once the process manager decided it.
    async fn outcome(&mut self, purchase_id: &str) -> pb::Purchase {
        let mut request = tonic::Request::new(pb::GetPurchaseRequest {
            purchase_id: purchase_id.into(),
            min_version: 1,
            wait_for_outcome: true,
        });
        request.set_timeout(Duration::from_secs(20));
        let purchase = self
            .queries
            .get_purchase(request)
            .await
            .unwrap()
            .into_inner()
            .purchase
            .unwrap();
        assert_ne!(purchase.status, pb::PurchaseStatus::Pending as i32);
        purchase
    }

    /// A purchase that completes: its id. The process manager appends two
    /// events at each of its two steps, and places an order.
    async fn purchase_completed(
        &mut self,
        request_id: &str,
        user_id: &str,
        sku: &str,
        quantity: i64,
    ) -> String {
        let purchase_id = self.buy(request_id, user_id, sku, quantity).await;
        let done = self.outcome(&purchase_id).await;
        assert_eq!(
            done.status,
            pb::PurchaseStatus::Completed as i32,
            "{done:?}"
        );
        self.events += 4;
        self.orders += 1;
        purchase_id
    }

    /// Cancels the order of a completed purchase, and waits until the
    /// process manager released its stock.
    async fn cancel_purchase(&mut self, purchase_id: &str, request_id: &str) {
        let order_id = self.purchase(purchase_id, 3).await.order_id;
        self.set_status(request_id, &order_id, pb::OrderStatus::Cancelled)
            .await;
        let cancelled = self.purchase(purchase_id, 4).await;
        assert_eq!(cancelled.status, pb::PurchaseStatus::Cancelled as i32);
        self.events += 2;
    }

    async fn purchase(&mut self, purchase_id: &str, min_version: i64) -> pb::Purchase {
        self.queries
            .get_purchase(pb::GetPurchaseRequest {
                purchase_id: purchase_id.into(),
                min_version,
                wait_for_outcome: false,
            })
            .await
            .unwrap()
            .into_inner()
            .purchase
            .unwrap()
    }

    async fn create_order(&mut self, request_id: &str, user_id: &str) -> String {
        let created = self
            .commands
            .create_order(pb::CreateOrderRequest {
                request_id: request_id.into(),
                user_id: user_id.into(),
                items: vec![pb::OrderItem {
                    sku: "widget".into(),
                    quantity: 2,
                    unit_price: Some(pb::Money {
                        currency_code: "EUR".into(),
                        amount_minor: 250,
                    }),
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.events += created.event_ids.len();
        self.orders += 1;
        created.order_id
    }

    async fn set_status(&mut self, request_id: &str, order_id: &str, status: pb::OrderStatus) {
        let updated = self
            .commands
            .update_order_status(pb::UpdateOrderStatusRequest {
                request_id: request_id.into(),
                order_id: order_id.into(),
                status: status as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.events += updated.event_ids.len();
    }

    /// The profile once the read model is at `min_version`.
    async fn profile(&mut self, user_id: &str, min_version: i64) -> pb::UserProfile {
        self.queries
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: user_id.into(),
                min_version,
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
    }

    /// The order once the read model is at `min_version`.
    async fn order(&mut self, order_id: &str, min_version: i64) -> pb::OrderSummary {
        self.queries
            .get_order(pb::GetOrderRequest {
                order_id: order_id.into(),
                min_version,
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    /// Every order of a user, one per page.
    async fn orders_of_user(&mut self, user_id: &str) -> BTreeSet<String> {
        let (mut orders, mut token, mut pages) = (BTreeSet::new(), String::new(), 0);
        loop {
            let page = self
                .queries
                .list_orders_by_user(pb::ListOrdersByUserRequest {
                    user_id: user_id.into(),
                    page_size: 1,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            orders.extend(page.orders.into_iter().map(|o| o.order_id));
            pages += 1;
            token = page.next_page_token;
            if token.is_empty() {
                assert_eq!(pages, orders.len(), "one order per page");
                return orders;
            }
        }
    }

    /// Every order in a status, one per page.
    async fn orders_in(&mut self, status: pb::OrderStatus) -> BTreeSet<String> {
        let (mut orders, mut token, mut pages) = (BTreeSet::new(), String::new(), 0);
        loop {
            let page = self
                .queries
                .list_orders_by_status(pb::ListOrdersByStatusRequest {
                    status: status as i32,
                    page_size: 1,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            orders.extend(page.orders.into_iter().map(|o| o.order_id));
            pages += 1;
            token = page.next_page_token;
            if token.is_empty() {
                assert_eq!(pages, orders.len(), "one order per page");
                return orders;
            }
        }
    }

    async fn before_restart(
        &mut self,
        dynamo: &aws_sdk_dynamodb::Client,
        tables: &Tables,
    ) -> Created {
        // Commands: creations, an idempotent retry, a change of address
        // (claim and release), orders (the user must exist), status changes.
        let ann = self.create_user("u-ann", "ann@example.com", "Ann").await;
        let retried = self
            .commands
            .create_user(pb::CreateUserRequest {
                request_id: "u-ann".into(),
                email: "ann@example.com".into(),
                name: "Ann".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(retried.user_id, ann, "a retry returns the original outcome");
        let bob = self.create_user("u-bob", "bob@example.com", "Bob").await;
        self.update_user("u-ann-email", &ann, "", "ann@example.org")
            .await;
        let first = self.create_order("o-1", &ann).await;
        let second = self.create_order("o-2", &ann).await;
        let order_of_bob = self.create_order("o-3", &bob).await;
        self.set_status("o-1-processing", &first, pb::OrderStatus::Processing)
            .await;
        self.set_status("o-1-shipped", &first, pb::OrderStatus::Shipped)
            .await;

        // All five queries, the lists over several pages.
        assert_eq!(self.profile(&ann, 2).await.email, "ann@example.org");
        assert_eq!(self.profile(&bob, 1).await.version, 1);
        let by_email = self
            .queries
            .get_user_by_email(pb::GetUserByEmailRequest {
                email: "ann@example.org".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(by_email.user_id, ann);
        assert_eq!(
            self.order(&first, 3).await.status,
            pb::OrderStatus::Shipped as i32
        );
        assert_eq!(self.order(&second, 1).await.version, 1);
        assert_eq!(self.order(&order_of_bob, 1).await.version, 1);
        assert_eq!(
            self.orders_of_user(&ann).await,
            BTreeSet::from([first.clone(), second.clone()])
        );
        assert_eq!(
            self.orders_in(pb::OrderStatus::Created).await,
            BTreeSet::from([second.clone(), order_of_bob.clone()])
        );

        // Products: a low one, and one restocked 198 times, whose 100th
        // event the command service snapshots (and whose 200th, a
        // purchase's reservation, the process manager); the catalogue over
        // pages, and the low-stock listing.
        self.create_product("p-mug", "MUG", 3).await;
        self.create_product("p-lamp", "LAMP", 50).await;
        let mut lamp = 1;
        for n in 0..198 {
            lamp = self.restock(&format!("p-lamp-{n}"), "LAMP").await;
        }
        assert_eq!(self.product("LAMP", lamp).await.stock, 248);
        assert_eq!(self.product("MUG", 1).await.stock, 3);
        assert_eq!(
            self.catalogue().await,
            (
                BTreeSet::from(["LAMP".to_owned(), "MUG".to_owned()]),
                vec!["MUG".to_owned()]
            )
        );

        // A gap: rows lost behind the projector's back. The next event on
        // each aggregate finds no row and fills it from the event store.
        for (table, key, id) in [
            (tables.user_profiles(), user_profiles::USER_ID, &bob),
            (tables.order_summaries(), order_summaries::ORDER_ID, &second),
        ] {
            dynamo
                .delete_item()
                .table_name(table)
                .key(key, AttributeValue::S(id.clone()))
                .send()
                .await
                .unwrap();
        }
        self.update_user("u-bob-name", &bob, "Bobby", "").await;
        self.set_status("o-2-cancelled", &second, pb::OrderStatus::Cancelled)
            .await;
        let filled = self.profile(&bob, 2).await;
        assert_eq!((filled.version, filled.name.as_str()), (2, "Bobby"));
        let filled = self.order(&second, 2).await;
        assert_eq!(
            (filled.version, filled.status),
            (2, pb::OrderStatus::Cancelled as i32)
        );
        // Purchases, taken through their steps by the process manager: a
        // lamp (its reservation the lamp's 200th event), two mugs, and one
        // more mug than there is.
        let purchase = self.purchase_completed("buy-1", &ann, "LAMP", 1).await;
        let second_purchase = self.purchase_completed("buy-2", &ann, "MUG", 2).await;
        let short = self.buy("buy-3", &ann, "MUG", 2).await;
        let rejected = self.outcome(&short).await;
        assert_eq!(rejected.status, pb::PurchaseStatus::Rejected as i32);
        self.events += 1;
        assert_eq!(rejected.rejection.unwrap().quantity_left, 1);
        Created {
            ann,
            order_of_bob,
            purchase,
            second_purchase,
        }
    }

    async fn after_restart(&mut self, created: &Created) {
        self.update_user("u-ann-name", &created.ann, "Ann Again", "")
            .await;
        self.set_status(
            "o-3-processing",
            &created.order_of_bob,
            pb::OrderStatus::Processing,
        )
        .await;
        // The product loaded from its snapshot; its row read again.
        let lamp = self.restock("p-lamp-after", "LAMP").await;
        assert_eq!(self.product("LAMP", lamp).await.stock, 248);
        // The lamp's order cancelled: the restarted process manager
        // releases its stock, the restarted projector reads the rows.
        self.cancel_purchase(&created.purchase, "buy-1-cancelled")
            .await;
        assert_eq!(self.profile(&created.ann, 3).await.name, "Ann Again");
        assert_eq!(
            self.order(&created.order_of_bob, 2).await.status,
            pb::OrderStatus::Processing as i32
        );
    }
}

/// Each published entry reaches exactly the rules meant for it, and every
/// rule gets something: the patterns fit what the projector publishes.
fn check_rules_route(template: &Template, tables: &Tables, entries: &[Value]) {
    let rules: Vec<(String, Value)> = template
        .resources_of_type("AWS::Events::Rule")
        .map(|(id, rule)| {
            (
                template.property(id, "Name"),
                template.resolve(&rule["Properties"]["EventPattern"]),
            )
        })
        .collect();
    let status = template.resolve(&json!({"Ref": "FilteredOrderStatus"}));
    let mut matched = BTreeSet::new();
    for entry in entries {
        assert_eq!(entry["EventBusName"], template.property("EventBus", "Name"));
        let event = fake_eventbridge::as_event(entry);
        let got: BTreeSet<&str> = rules
            .iter()
            .filter(|(_, pattern)| fake_eventbridge::matches(pattern, &event))
            .map(|(name, _)| name.as_str())
            .collect();
        let mut expected = BTreeSet::new();
        let (user_rule, order_rule, status_rule, planner_rule, route_rule) = (
            tables.event_rule(event_rules::USER_EVENTS),
            tables.event_rule(event_rules::ORDER_EVENTS),
            tables.event_rule(event_rules::ORDERS_WITH_STATUS),
            tables.event_rule(event_rules::ROUTE_PLANNER),
            tables.event_rule(event_rules::ROUTE_EVENTS),
        );
        match event["detail-type"].as_str().unwrap() {
            "UserCreated" | "UserProfileUpdated" => {
                expected.insert(user_rule.as_str());
            }
            // Every order, and the route planner's copy.
            "OrderCreated" => {
                expected.insert(order_rule.as_str());
                expected.insert(planner_rule.as_str());
            }
            "RouteCreated" => {
                expected.insert(route_rule.as_str());
            }
            "OrderStatusUpdated" => {
                expected.insert(order_rule.as_str());
                if event["detail"]["orderStatusUpdated"]["status"] == status {
                    expected.insert(status_rule.as_str());
                }
            }
            // No rule takes the catalogue's and the purchases' events yet.
            "ProductCreated"
            | "ProductRestocked"
            | "ProductPriceChanged"
            | "StockReserved"
            | "StockReleased"
            | "PurchaseRequested"
            | "PurchaseReserved"
            | "PurchaseCompleted"
            | "PurchaseRejected"
            | "PurchaseCancelled" => {}
            other => panic!("unknown detail-type {other}"),
        }
        assert_eq!(got, expected, "rules matching {event}");
        matched.extend(got.into_iter().map(str::to_owned));
    }
    let all: BTreeSet<String> = rules.into_iter().map(|(name, _)| name).collect();
    assert_eq!(matched, all, "every rule matched a published event");
}

#[test]
fn the_roles_keep_the_sides_apart_and_trust_only_their_service_account() {
    let prefix = unique_prefix();
    let template = load_template(&prefix);
    let roles = policy::roles(&template);
    let ids: BTreeSet<&str> = roles.iter().map(|r| r.logical_id.as_str()).collect();
    assert_eq!(
        ids,
        BINARIES.iter().map(|(_, id)| *id).collect(),
        "one role per binary, and no other"
    );
    let tables = Tables::new(prefix.clone());
    let table = |name: String| format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}");
    let stream = |name: String| format!("{}/stream/2030-01-01T00:00:00.000", table(name));
    let event_store_side = [
        table(tables.event_store()),
        format!(
            "{}/index/{}",
            table(tables.event_store()),
            event_store::EVENT_TYPE_INDEX
        ),
        stream(tables.event_store()),
        table(tables.idempotency()),
        table(tables.unique_emails()),
        table(tables.snapshots()),
    ];
    let read_side = [
        table(tables.user_profiles()),
        format!(
            "{}/index/{}",
            table(tables.user_profiles()),
            user_profiles::EMAIL_INDEX
        ),
        table(tables.order_summaries()),
        format!(
            "{}/index/{}",
            table(tables.order_summaries()),
            order_summaries::USER_ID_INDEX
        ),
        format!(
            "{}/index/{}",
            table(tables.order_summaries()),
            order_summaries::STATUS_INDEX
        ),
        table(tables.products()),
        format!(
            "{}/index/{}",
            table(tables.products()),
            products::LOW_STOCK_INDEX
        ),
        table(tables.purchases()),
        table(tables.checkpoints()),
    ];
    let covering = |role: &Role, arns: &[String]| -> Vec<String> {
        role.allows
            .iter()
            .flat_map(|a| {
                arns.iter()
                    .filter(|arn| a.covers(arn))
                    .map(move |arn| format!("{a} covers {arn}"))
            })
            .collect()
    };

    // The query service reads read models only.
    let query = role(&roles, "QueryServiceRole");
    for allow in &query.allows {
        assert!(
            ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"]
                .contains(&allow.action.as_str()),
            "the query service may only read: {allow}"
        );
    }
    assert_eq!(covering(query, &event_store_side), Vec::<String>::new());

    // The command service never touches a read model or the checkpoints.
    let command = role(&roles, "CommandServiceRole");
    assert_eq!(covering(command, &read_side), Vec::<String>::new());

    // The admin service reads the event store and the projector's
    // checkpoints, writes only its own table, the event store's bucket
    // attribute (UpdateItem, which appends cannot be) and a parked
    // aggregate's status, and touches no read-model row (their metadata
    // alone, for their sizes) and nothing of the command side's.
    let admin = role(&roles, "AdminServiceRole");
    let checkpoints = table(tables.checkpoints());
    let reads_rows: Vec<String> = covering(admin, &read_side)
        .into_iter()
        .filter(|c| {
            let metadata = c.starts_with("dynamodb:DescribeTable ");
            let checkpoint_reads =
                c.starts_with("dynamodb:Query ") && c.ends_with(&format!("covers {checkpoints}"));
            !(metadata || checkpoint_reads)
        })
        .collect();
    assert_eq!(
        reads_rows,
        Vec::<String>::new(),
        "the read models' metadata and the checkpoints alone"
    );
    assert_eq!(
        covering(admin, &event_store_side[2..]),
        Vec::<String>::new()
    );
    for allow in &admin.allows {
        let writes = [
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            "dynamodb:UpdateItem",
        ]
        .contains(&allow.action.as_str());
        // A rebuild's own tables (generation 1 stands for any) and the
        // registry of generations are the admin service's to write.
        let own = allow.covers(&table(tables.admin()))
            || allow.covers(&table(tables.generations()))
            || allow.covers(&table(tables.replays()))
            || tables
                .read_models(1)
                .all()
                .iter()
                .any(|t| allow.covers(&table((*t).to_owned())));
        let status = allow.action == "dynamodb:UpdateItem"
            && (allow.covers(&table(tables.event_store()))
                || allow.covers(&table(tables.parked())));
        assert!(
            !writes || own || status,
            "the admin service may not write: {allow}"
        );
    }

    // Exact actions and resources only; the patterns are the stream's ARN,
    // whose label only the deployment knows, a rebuild's read-model
    // tables, whose generation number only the rebuild knows, and an
    // archive replay's rules (the request names them, on this bus only)
    // and its replays (named by their ids, after the prefix).
    let generation_tables = [
        format!("{}-g*", tables.user_profiles()),
        format!("{}-g*", tables.order_summaries()),
        format!("{}-g*", tables.products()),
        format!("{}-g*", tables.purchases()),
    ];
    let replay_patterns = [
        format!(
            "arn:aws:events:{REGION}:{ACCOUNT}:rule/{}/*",
            tables.event_bus()
        ),
        format!(
            "arn:aws:events:{REGION}:{ACCOUNT}:replay/{}-*",
            tables.prefix
        ),
    ];
    for role in &roles {
        for allow in &role.allows {
            assert!(
                !allow.action.contains(['*', '?']),
                "{}: wildcard action {allow}",
                role.logical_id
            );
            if role.logical_id == "AdminServiceRole" && replay_patterns.contains(&allow.resource) {
                continue;
            }
            let mut resource = allow.resource.trim_end_matches("/stream/*").to_owned();
            for pattern in &generation_tables {
                let arn = table(pattern.clone());
                if let Some(rest) = resource.strip_prefix(&arn) {
                    resource = format!(
                        "{}{rest}",
                        table(pattern.trim_end_matches('*').to_owned() + "1")
                    );
                }
            }
            assert!(
                !resource.contains(['*', '?']),
                "{}: wildcard resource {allow}",
                role.logical_id
            );
        }
    }

    // Only the projector publishes, only PutEvents, only to this bus, which
    // it confirms exists first.
    let bus = format!(
        "arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{}",
        tables.event_bus()
    );
    for role in &roles {
        let events: Vec<&Allow> = role
            .allows
            .iter()
            .filter(|a| a.action.to_lowercase().starts_with("events:"))
            .collect();
        let archive = format!(
            "arn:aws:events:{REGION}:{ACCOUNT}:archive/{}",
            tables.event_archive()
        );
        let rules = format!(
            "arn:aws:events:{REGION}:{ACCOUNT}:rule/{}/*",
            tables.event_bus()
        );
        let replays = format!(
            "arn:aws:events:{REGION}:{ACCOUNT}:replay/{}-*",
            tables.prefix
        );
        let expected: Vec<(&str, &str)> = match role.logical_id.as_str() {
            "ProjectorRole" => vec![
                ("events:PutEvents", bus.as_str()),
                ("events:DescribeEventBus", bus.as_str()),
            ],
            // Archive replays: describe and replay its archive, describe
            // the rules of its bus and its own replays; no publishing.
            "AdminServiceRole" => vec![
                ("events:DescribeArchive", archive.as_str()),
                ("events:StartReplay", archive.as_str()),
                ("events:DescribeRule", rules.as_str()),
                ("events:DescribeReplay", replays.as_str()),
            ],
            _ => vec![],
        };
        assert_eq!(
            events
                .iter()
                .map(|a| (a.action.as_str(), a.resource.as_str()))
                .collect::<Vec<_>>(),
            expected,
            "{} and EventBridge",
            role.logical_id
        );
    }

    // Only the route planner uses SQS, and only its own queue: it receives,
    // deletes, and hides again a message it failed; it sends nothing, and
    // reads neither its dead-letter queue (SQS itself moves messages there)
    // nor another queue.
    let planner_queue = format!(
        "arn:aws:sqs:{REGION}:{ACCOUNT}:{}-route-planner",
        tables.prefix
    );
    for role in &roles {
        let queues: BTreeSet<(&str, &str)> = role
            .allows
            .iter()
            .filter(|a| a.action.to_lowercase().starts_with("sqs:"))
            .map(|a| (a.action.as_str(), a.resource.as_str()))
            .collect();
        let expected: BTreeSet<(&str, &str)> = match role.logical_id.as_str() {
            "RoutePlannerRole" => [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
            ]
            .into_iter()
            .map(|action| (action, planner_queue.as_str()))
            .collect(),
            _ => BTreeSet::new(),
        };
        assert_eq!(queues, expected, "{} and SQS", role.logical_id);
    }
    // And the route planner touches no table, nor anything but its queue:
    // it records routes through the command service.
    let planner = role(&roles, "RoutePlannerRole");
    for allow in &planner.allows {
        assert!(
            !allow.action.to_lowercase().starts_with("dynamodb:")
                && !allow.resource.starts_with("arn:aws:dynamodb:"),
            "the route planner touches no table: {allow}"
        );
    }
    assert_eq!(
        covering(planner, &[&event_store_side[..], &read_side[..]].concat()),
        Vec::<String>::new()
    );
    assert!(
        planner.allows.iter().all(|a| a.resource == planner_queue),
        "the route planner's queue alone: {:?}",
        planner.allows
    );

    // Each role is assumed by its binary's ServiceAccount through IRSA, and
    // by nothing else.
    for (binary, id) in BINARIES {
        let trust = &role(&roles, id).trust;
        let statements = trust["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{id}: one trust statement");
        assert_eq!(
            statements[0],
            json!({
                "Effect": "Allow",
                "Principal": { "Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_ISSUER}") },
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": { "StringEquals": {
                    format!("{OIDC_ISSUER}:sub"): format!("system:serviceaccount:{NAMESPACE}:{prefix}-{binary}"),
                    format!("{OIDC_ISSUER}:aud"): "sts.amazonaws.com",
                } }
            }),
            "{id} trust policy"
        );
    }
}

#[test]
fn the_rules_deliver_to_their_queues_with_retries_and_a_dead_letter_queue() {
    let prefix = unique_prefix();
    let template = load_template(&prefix);
    let tables = Tables::new(prefix.clone());
    let bus = template.property("EventBus", "Name");
    assert_eq!(bus, tables.event_bus());

    // The archive keeps the bus's events for the configured days.
    let archive = template.resolve(
        &template
            .resources_of_type("AWS::Events::Archive")
            .map(|(_, a)| a["Properties"].clone())
            .next()
            .expect("an archive"),
    );
    assert_eq!(
        archive["SourceArn"],
        format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}")
    );
    assert_eq!(archive["RetentionDays"], "30");

    // Every queue, by its ARN: (logical id, properties).
    let queues: BTreeMap<String, (String, Value)> = template
        .resources_of_type("AWS::SQS::Queue")
        .map(|(id, queue)| {
            let arn = template.resolve(&json!({"Fn::GetAtt": [id, "Arn"]}));
            (
                arn.as_str().unwrap().to_owned(),
                (id.to_owned(), template.resolve(&queue["Properties"])),
            )
        })
        .collect();

    // Which rules may send to which queue, from the queue policies.
    let mut senders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, policy) in template.resources_of_type("AWS::SQS::QueuePolicy") {
        let properties = template.resolve(&policy["Properties"]);
        for statement in properties["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap()
        {
            assert_eq!(
                statement["Principal"],
                json!({"Service": "events.amazonaws.com"}),
                "{id}"
            );
            assert_eq!(statement["Action"], "sqs:SendMessage", "{id}");
            let strings = |value: &Value| match value {
                Value::String(one) => vec![one.clone()],
                Value::Array(many) => many
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect(),
                other => panic!("{id}: {other}"),
            };
            let rules = strings(&statement["Condition"]["ArnEquals"]["aws:SourceArn"]);
            for queue in strings(&statement["Resource"]) {
                senders.entry(queue).or_default().extend(rules.clone());
            }
        }
    }

    let mut names = BTreeSet::new();
    let mut targets = BTreeSet::new();
    // Each dead-letter queue, and the rules whose dead letters go there.
    let mut dead_letters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, rule) in template.resources_of_type("AWS::Events::Rule") {
        let properties = template.resolve(&rule["Properties"]);
        let name = properties["Name"].as_str().unwrap().to_owned();
        let arn = format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{bus}/{name}");
        assert_eq!(properties["EventBusName"], bus, "{id}");
        assert_eq!(properties["State"], "ENABLED", "{id}");
        assert_eq!(
            properties["EventPattern"]["source"],
            json!(["dynabridge"]),
            "{id}"
        );
        let rule_targets = properties["Targets"].as_array().unwrap();
        assert_eq!(rule_targets.len(), 1, "{id}: one queue per rule");
        let target = &rule_targets[0];
        let queue = target["Arn"].as_str().unwrap();
        assert!(queues.contains_key(queue), "{id}: {queue} is no queue");
        let dead_letter = target["DeadLetterConfig"]["Arn"].as_str().unwrap();
        assert!(
            queues.contains_key(dead_letter),
            "{id}: {dead_letter} is no queue"
        );
        assert_ne!(queue, dead_letter, "{id}");
        assert!(
            target["RetryPolicy"]["MaximumRetryAttempts"].is_number(),
            "{id}"
        );
        assert!(
            target["RetryPolicy"]["MaximumEventAgeInSeconds"].is_number(),
            "{id}"
        );
        assert_eq!(
            senders.get(queue),
            Some(&BTreeSet::from([arn.clone()])),
            "{id}: its queue accepts this rule only"
        );
        names.insert(name);
        targets.insert(queue.to_owned());
        dead_letters
            .entry(dead_letter.to_owned())
            .or_default()
            .insert(arn);
    }
    assert_eq!(
        names,
        event_rules::ALL
            .iter()
            .map(|rule| tables.event_rule(rule))
            .collect()
    );
    for (dead_letter, rules) in &dead_letters {
        assert!(
            !targets.contains(dead_letter),
            "{dead_letter}: a rule's queue and a dead-letter queue"
        );
        assert_eq!(
            senders.get(dead_letter),
            Some(rules),
            "{dead_letter} accepts the rules whose dead letters go there"
        );
    }
    assert_eq!(
        senders.keys().cloned().collect::<BTreeSet<_>>(),
        targets
            .union(&dead_letters.keys().cloned().collect())
            .cloned()
            .collect(),
        "a policy for every queue EventBridge sends to, and no other"
    );
    // A queue whose consumer can fail a message (the route planner's) gives
    // up on it after its receives: SQS moves it to a dead-letter queue of
    // its own, which no rule sends to.
    let mut redriven = BTreeSet::new();
    for (arn, (id, properties)) in &queues {
        let redrive = &properties["RedrivePolicy"];
        if redrive.is_null() {
            continue;
        }
        assert!(targets.contains(arn), "{id}: redriven, but no rule's queue");
        let dead_letter = redrive["deadLetterTargetArn"].as_str().unwrap();
        assert!(
            queues.contains_key(dead_letter) && !targets.contains(dead_letter),
            "{id}: {redrive}"
        );
        assert!(
            redrive["maxReceiveCount"].as_u64().is_some_and(|n| n >= 1),
            "{id}: {redrive}"
        );
        redriven.insert(dead_letter.to_owned());
    }
    let planner_dead_letters =
        template.resolve(&json!({"Fn::GetAtt": ["RoutePlannerDeadLetterQueue", "Arn"]}));
    assert!(
        redriven.contains(planner_dead_letters.as_str().unwrap()),
        "the route planner's queue is redriven: {redriven:?}"
    );

    // The dead-letter queues the alarms watch (an SQS ARN ends with the
    // queue's name): every one.
    let watched: BTreeSet<String> = dead_letter_alarms(&template)
        .iter()
        .map(|alarm| {
            let dimensions = alarm["Dimensions"].as_array().unwrap();
            let [dimension] = dimensions.as_slice() else {
                panic!("one dimension: {alarm}");
            };
            assert_eq!(dimension["Name"], "QueueName", "{alarm}");
            dimension["Value"].as_str().unwrap().to_owned()
        })
        .collect();
    let every_dead_letter: BTreeSet<&String> = dead_letters.keys().chain(&redriven).collect();
    for dead_letter in &every_dead_letter {
        let id = &queues[*dead_letter].0;
        let (_, name) = dead_letter.rsplit_once(':').unwrap();
        assert!(watched.contains(name), "{id}: watched by an alarm");
    }
    assert_eq!(
        watched.len(),
        every_dead_letter.len(),
        "an alarm on each dead-letter queue, and on no other queue"
    );
}

/// The template's CloudWatch alarms on queues, resolved, each checked to go
/// off as soon as the queue of its `QueueName` dimension holds a message;
/// at least one.
fn dead_letter_alarms(template: &Template) -> Vec<Value> {
    let alarms: Vec<Value> = template
        .resources_of_type("AWS::CloudWatch::Alarm")
        .map(|(_, alarm)| template.resolve(&alarm["Properties"]))
        .filter(|alarm| alarm["Namespace"] == "AWS/SQS")
        .collect();
    assert!(!alarms.is_empty(), "an alarm on a queue");
    for alarm in &alarms {
        assert_eq!(alarm["MetricName"], "ApproximateNumberOfMessagesVisible");
        assert_eq!(alarm["Statistic"], "Maximum");
        assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
        assert_eq!(alarm["Threshold"], 0);
        assert_eq!(alarm["EvaluationPeriods"], 1, "the first period with one");
        assert!(
            alarm.get("DatapointsToAlarm").is_none() && alarm.get("Metrics").is_none(),
            "no other way to go off: {alarm}"
        );
    }
    alarms
}

#[test]
fn the_dead_letter_alarm_notifies_the_topic_given_and_no_one_otherwise() {
    let prefix = unique_prefix();
    let actions = ["AlarmActions", "OKActions", "InsufficientDataActions"];

    for silent in dead_letter_alarms(&load_template(&prefix)) {
        for key in actions {
            assert!(silent.get(key).is_none(), "{key} without a topic: {silent}");
        }
    }

    let topic = format!("arn:aws:sns:{REGION}:{ACCOUNT}:on-call");
    for told in dead_letter_alarms(&load_template_with(
        &prefix,
        &[("DeadLetterAlarmTopicArn", &topic)],
    )) {
        assert_eq!(told["AlarmActions"], json!([topic]), "when it goes off");
        assert_eq!(told["OKActions"], json!([topic]), "when it clears");
        assert!(told.get("InsufficientDataActions").is_none(), "{told}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_creates_the_tables_provision_creates() {
    let (_endpoint, dynamo) = start_store().await;
    let prefix = unique_prefix();
    let tables = Tables::new(prefix.clone());
    dynabridge_provision::ensure_tables(&dynamo, &tables)
        .await
        .unwrap();
    let template = load_template(&prefix);

    let mut declared_names = BTreeSet::new();
    for (id, table) in template.resources_of_type("AWS::DynamoDB::Table") {
        let name = template.property(id, "TableName");
        let properties = &table["Properties"];
        let described = dynamo
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{id}: provision creates no table {name}: {e:?}"))
            .table
            .unwrap();
        assert_eq!(
            declared_shape(&template, properties),
            described_shape(&described),
            "{id}"
        );

        // What only a deployment on AWS needs.
        assert_eq!(properties["BillingMode"], "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            properties["PointInTimeRecoverySpecification"],
            json!({"PointInTimeRecoveryEnabled": true}),
            "{id}"
        );
        assert_eq!(properties["SSESpecification"]["SSEEnabled"], true, "{id}");
        assert_eq!(
            properties["DeletionProtectionEnabled"],
            json!({"Fn::If": ["IsProd", true, false]}),
            "{id}"
        );
        let ttl = if name == tables.idempotency() {
            json!({"AttributeName": dynabridge::schema::idempotency::EXPIRES_AT, "Enabled": true})
        } else {
            Value::Null
        };
        assert_eq!(properties["TimeToLiveSpecification"], ttl, "{id}");
        declared_names.insert(name);
    }
    assert_eq!(
        declared_names,
        BTreeSet::from([
            tables.admin(),
            tables.generations(),
            tables.replays(),
            tables.event_store(),
            tables.idempotency(),
            tables.unique_emails(),
            tables.user_profiles(),
            tables.order_summaries(),
            tables.products(),
            tables.purchases(),
            tables.snapshots(),
            tables.checkpoints(),
            tables.process_checkpoints(),
            tables.parked(),
        ])
    );
}

/// Keys, attributes, indexes and stream of a table, as the template declares them.
fn declared_shape(template: &Template, properties: &Value) -> Value {
    let key_schema = |keys: &Value| -> Value {
        keys.as_array()
            .unwrap()
            .iter()
            .map(|k| json!([k["AttributeName"], k["KeyType"]]))
            .collect()
    };
    let mut attributes: Vec<Value> = properties["AttributeDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!([a["AttributeName"], a["AttributeType"]]))
        .collect();
    attributes.sort_by_key(Value::to_string);
    let mut indexes: Vec<Value> = properties["GlobalSecondaryIndexes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            json!([
                i["IndexName"],
                key_schema(&i["KeySchema"]),
                i["Projection"]["ProjectionType"]
            ])
        })
        .collect();
    indexes.sort_by_key(Value::to_string);
    json!({
        "name": template.resolve(&properties["TableName"]),
        "key": key_schema(&properties["KeySchema"]),
        "attributes": attributes,
        "indexes": indexes,
        "stream": properties["StreamSpecification"]["StreamViewType"],
    })
}

/// The same, as the store describes a table `src/provision.rs` created.
fn described_shape(table: &aws_sdk_dynamodb::types::TableDescription) -> Value {
    let key_schema = |keys: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Value {
        keys.iter()
            .map(|k| json!([k.attribute_name(), k.key_type().as_str()]))
            .collect()
    };
    let mut attributes: Vec<Value> = table
        .attribute_definitions()
        .iter()
        .map(|a| json!([a.attribute_name(), a.attribute_type().as_str()]))
        .collect();
    attributes.sort_by_key(Value::to_string);
    let mut indexes: Vec<Value> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            json!([
                i.index_name(),
                key_schema(i.key_schema()),
                i.projection()
                    .and_then(|p| p.projection_type())
                    .map(|t| t.as_str())
            ])
        })
        .collect();
    indexes.sort_by_key(Value::to_string);
    json!({
        "name": table.table_name(),
        "key": key_schema(table.key_schema()),
        "attributes": attributes,
        "indexes": indexes,
        "stream": table
            .stream_specification()
            .filter(|s| s.stream_enabled())
            .and_then(|s| s.stream_view_type())
            .map(|t| t.as_str()),
    })
}
