//! The real binaries as separate processes against one store (an
//! embedded store in this test process). The projector is killed with
//! SIGKILL mid-stream and restarted; every read model must converge with
//! each event applied exactly once. Two projectors run side by side, and
//! the one holding the shard's lease is killed: the other takes over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dynabridge_testkit::processes;
use std::path::Path;
use std::time::Duration;

use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::schema::Tables;

// Shared with the other crates that run the binaries; each uses part of it.
#[allow(dead_code)]
use processes::{Proc, spawn};

mod faults;
mod oversell;
mod rebuild;

/// An embedded store in this process, on loopback, with the tables of a
/// fresh prefix; the binaries reach it at `endpoint`.
struct Store {
    endpoint: String,
    prefix: String,
    tables: Tables,
    dynamo: aws_sdk_dynamodb::Client,
}

impl Store {
    /// `tag` starts the prefix, to tell the tests' tables apart.
    async fn start(tag: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(dynoxide::server::serve_with_shutdown(
            listener,
            dynoxide::Database::memory().unwrap(),
            std::future::pending(),
        ));
        let prefix = format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let tables = Tables::new(prefix.clone());
        let sdk = dynabridge_aws::load_sdk_config(
            &dynabridge_aws::AwsArgs {
                endpoint_url: Some(endpoint.clone()),
                region: Some("us-east-1".into()),
            },
            Some(dynabridge_aws::StaticCredentials::local()),
        )
        .await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        dynabridge_provision::ensure_tables(&dynamo, &tables)
            .await
            .unwrap();
        Self {
            endpoint,
            prefix,
            tables,
            dynamo,
        }
    }
}

/// A gRPC service (`command-service`, `query-service`) on a free port.
fn spawn_service(name: &str, endpoint: &str, prefix: &str) -> Proc {
    spawn(
        name,
        prefix,
        &["--endpoint-url", endpoint, "--listen", "127.0.0.1:0"],
        &[],
    )
}

/// How long a projector's shard lease lasts without renewal here: the
/// shortest allowed, so that a successor takes over from a killed
/// projector quickly.
const LEASE_DURATION_MS: &str = "1000";

fn spawn_projector(endpoint: &str, prefix: &str, sink: &Path) -> Proc {
    spawn_named_projector(endpoint, prefix, sink, None)
}

/// A projector, with `instance_id` as its name in the shard leases if set.
fn spawn_named_projector(
    endpoint: &str,
    prefix: &str,
    sink: &Path,
    instance_id: Option<&str>,
) -> Proc {
    let sink = sink.display().to_string();
    let mut args = vec![
        "--endpoint-url",
        endpoint,
        "--health-listen",
        "127.0.0.1:0",
        "--sink-path",
        &sink,
        "--idle-poll-max-ms",
        "20",
        "--lease-duration-ms",
        LEASE_DURATION_MS,
    ];
    if let Some(id) = instance_id {
        args.extend(["--instance-id", id]);
    }
    spawn("projector", prefix, &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_converge_after_the_projector_is_killed() {
    // The store lives in this process; the services reach it over loopback.
    let Store {
        endpoint, prefix, ..
    } = Store::start("p").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("published.jsonl");

    let command_proc = spawn_service("command-service", &endpoint, &prefix);
    let query_proc = spawn_service("query-service", &endpoint, &prefix);
    let mut projector = spawn_projector(&endpoint, &prefix, &sink);

    let mut commands = CommandServiceClient::connect(format!("http://{}", command_proc.addr))
        .await
        .unwrap();
    let mut queries = QueryServiceClient::connect(format!("http://{}", query_proc.addr))
        .await
        .unwrap();

    // Each user: created, renamed twice (version 3); each order: created,
    // then PROCESSING and SHIPPED (version 3).
    let mut users = Vec::new();
    let mut orders = Vec::new();
    let mut killed = false;
    for i in 0..12 {
        let user = commands
            .create_user(pb::CreateUserRequest {
                request_id: format!("u{i}"),
                email: format!("user{i}@example.com"),
                name: format!("User {i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for rename in 1..=2 {
            commands
                .update_user_profile(pb::UpdateUserProfileRequest {
                    request_id: format!("u{i}-rename{rename}"),
                    user_id: user.user_id.clone(),
                    name: format!("User {i} v{rename}"),
                    update_mask: Some(pbjson_types::FieldMask {
                        paths: vec!["name".into()],
                    }),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let order = commands
            .create_order(pb::CreateOrderRequest {
                request_id: format!("o{i}"),
                user_id: user.user_id.clone(),
                items: vec![pb::OrderItem {
                    sku: "widget".into(),
                    quantity: i + 1,
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
        for (step, status) in [pb::OrderStatus::Processing, pb::OrderStatus::Shipped]
            .into_iter()
            .enumerate()
        {
            commands
                .update_order_status(pb::UpdateOrderStatusRequest {
                    request_id: format!("o{i}-s{step}"),
                    order_id: order.order_id.clone(),
                    status: status as i32,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        users.push(user.user_id);
        orders.push(order.order_id);

        // Mid-stream: once the projector has published something, kill it
        // without warning while commands keep coming.
        if !killed
            && i >= 4
            && std::fs::read_to_string(&sink)
                .map(|s| s.lines().count())
                .unwrap_or(0)
                > 0
        {
            projector.kill();
            killed = true;
        }
    }
    assert!(
        killed,
        "the projector published nothing before the kill point"
    );
    let projector_restarted = spawn_projector(&endpoint, &prefix, &sink);

    // Every read model converges to exactly the version of its last event.
    // The restarted projector first waits for its predecessor's lease to
    // expire.
    for user_id in &users {
        let profile = user_at(&mut queries, user_id, 3).await;
        assert_eq!(profile.version, 3, "user {user_id}");
        assert!(profile.name.ends_with("v2"), "{}", profile.name);
    }
    for order_id in &orders {
        let order = order_at(&mut queries, order_id, 3).await;
        assert_eq!(
            (order.version, order.status),
            (3, pb::OrderStatus::Shipped as i32),
            "order {order_id}"
        );
    }

    // Every event was published at least once (delivery is at least once:
    // the batch in flight at the kill may be published again).
    let expected_events = users.len() * 3 + orders.len() * 3;
    let published: std::collections::HashSet<String> = std::fs::read_to_string(&sink)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["detail"]["eventId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(published.len(), expected_events);

    // SIGTERM: the gRPC services drain and exit cleanly.
    command_proc.terminate();
    query_proc.terminate();
    drop(projector_restarted);
}

/// How long a read model may take to converge, a lease takeover included.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

/// The user's profile once its read model is at `version`; see [`asked_until`].
async fn user_at(
    queries: &mut QueryServiceClient<tonic::transport::Channel>,
    user_id: &str,
    version: i64,
) -> pb::UserProfile {
    let request = pb::GetUserProfileRequest {
        user_id: user_id.to_owned(),
        min_version: version,
    };
    let what = format!("user {user_id} at version {version}");
    asked_until(&what, || {
        let (mut queries, request) = (queries.clone(), request.clone());
        async move { queries.get_user_profile(request).await }
    })
    .await
    .user
    .unwrap()
}

/// The order once its read model is at `version`; see [`asked_until`].
async fn order_at(
    queries: &mut QueryServiceClient<tonic::transport::Channel>,
    order_id: &str,
    version: i64,
) -> pb::OrderSummary {
    let request = pb::GetOrderRequest {
        order_id: order_id.to_owned(),
        min_version: version,
    };
    let what = format!("order {order_id} at version {version}");
    asked_until(&what, || {
        let (mut queries, request) = (queries.clone(), request.clone());
        async move { queries.get_order(request).await }
    })
    .await
    .order
    .unwrap()
}

/// The first answer of `ask`. Each call waits up to the query service's own
/// `min_version` limit, and is made again until [`CONVERGE_DEADLINE`]; a
/// missing row is answered at once, so the next attempt comes a little
/// later.
async fn asked_until<T, Fut>(what: &str, mut ask: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE_DEADLINE;
    loop {
        match ask().await {
            Ok(response) => return response.into_inner(),
            Err(status) => assert!(tokio::time::Instant::now() < deadline, "{what}: {status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a user and renames it (version 2), and an order of it moved to
/// PROCESSING (version 2); returns the two ids and every event id.
async fn user_and_order(
    commands: &mut CommandServiceClient<tonic::transport::Channel>,
    key: &str,
) -> (String, String, Vec<String>) {
    let mut event_ids = Vec::new();
    let user = commands
        .create_user(pb::CreateUserRequest {
            request_id: format!("{key}-u"),
            email: format!("{key}@example.com"),
            name: format!("User {key}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    event_ids.extend(user.event_ids);
    let renamed = commands
        .update_user_profile(pb::UpdateUserProfileRequest {
            request_id: format!("{key}-rename"),
            user_id: user.user_id.clone(),
            name: format!("User {key} renamed"),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    event_ids.extend(renamed.event_ids);
    let order = commands
        .create_order(pb::CreateOrderRequest {
            request_id: format!("{key}-o"),
            user_id: user.user_id.clone(),
            items: vec![pb::OrderItem {
                sku: "widget".into(),
                quantity: 1,
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
    event_ids.extend(order.event_ids);
    let processing = commands
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: format!("{key}-processing"),
            order_id: order.order_id.clone(),
            status: pb::OrderStatus::Processing as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    event_ids.extend(processing.event_ids);
    (user.user_id, order.order_id, event_ids)
}

/// The event ids in a sink, if it exists yet.
fn published_ids(sink: &Path) -> std::collections::HashSet<String> {
    std::fs::read_to_string(sink)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["detail"]["eventId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The holder of the lease of the event store's only shard, as stored.
async fn lease_owner(dynamo: &aws_sdk_dynamodb::Client, tables: &Tables) -> Option<String> {
    use dynabridge::schema::checkpoints;
    let items = dynamo
        .scan()
        .table_name(tables.checkpoints())
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
        .into_iter()
        // Not the items of the last event each read model applied.
        .filter(|item| {
            item.get(checkpoints::STREAM_ARN)
                .and_then(|v| v.as_s().ok())
                != Some(&checkpoints::READ_MODELS.to_owned())
        })
        .collect::<Vec<_>>();
    assert!(
        items.len() <= 1,
        "the embedded store has one shard per table"
    );
    items
        .first()?
        .get(checkpoints::LEASE_OWNER)?
        .as_s()
        .ok()
        .cloned()
}

/// The projector's health status of `service`, `None` if it does not
/// answer.
async fn health(proc: &Proc, service: &str) -> Option<i32> {
    let status = dynabridge_testkit::health_status(proc.addr, service).await?;
    Some(status as i32)
}

/// Polls `probe` until it holds; panics after [`CONVERGE_DEADLINE`].
async fn wait_for<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    dynabridge_testkit::eventually(what, CONVERGE_DEADLINE, || {
        let holds = probe();
        async move { holds.await.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_share_the_stream_and_the_standby_takes_over_from_a_killed_holder() {
    use tonic_health::pb::health_check_response::ServingStatus;

    let Store {
        endpoint,
        prefix,
        tables,
        dynamo,
    } = Store::start("p").await;
    let dir = tempfile::tempdir().unwrap();

    let command_proc = spawn_service("command-service", &endpoint, &prefix);
    let query_proc = spawn_service("query-service", &endpoint, &prefix);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let ids = [
        format!("projector-a-{suffix}"),
        format!("projector-b-{suffix}"),
    ];
    let sinks = [
        dir.path().join("projector-a.jsonl"),
        dir.path().join("projector-b.jsonl"),
    ];
    let mut projectors: Vec<Option<Proc>> = ids
        .iter()
        .zip(&sinks)
        .map(|(id, sink)| Some(spawn_named_projector(&endpoint, &prefix, sink, Some(id))))
        .collect();

    let mut commands = CommandServiceClient::connect(format!("http://{}", command_proc.addr))
        .await
        .unwrap();
    let mut queries = QueryServiceClient::connect(format!("http://{}", query_proc.addr))
        .await
        .unwrap();

    // Both running: everything is projected, by the one holding the lease.
    let mut aggregates = Vec::new();
    let mut event_ids = Vec::new();
    for i in 0..4 {
        let (user, order, ids) = user_and_order(&mut commands, &format!("before{i}")).await;
        aggregates.push((user, order));
        event_ids.extend(ids);
    }
    for (user, order) in &aggregates {
        assert_eq!(user_at(&mut queries, user, 2).await.version, 2);
        assert_eq!(order_at(&mut queries, order, 2).await.version, 2);
    }
    let holder = lease_owner(&dynamo, &tables).await.expect("a lease holder");
    let held = ids
        .iter()
        .position(|id| *id == holder)
        .expect("one of ours");
    let standby = 1 - held;
    // Both are ready, the standby too: it holds nothing, so nothing lags.
    for proc in projectors.iter().flatten() {
        for service in [projector::HEALTH_SERVICE, projector::LIVENESS_SERVICE] {
            let serving = move || async move {
                health(proc, service).await == Some(ServingStatus::Serving as i32)
            };
            wait_for(&format!("{service} serving"), serving).await;
        }
    }
    assert!(
        published_ids(&sinks[standby]).is_empty(),
        "the standby published nothing"
    );

    // SIGKILL the holder: no release, its lease has to expire.
    let mut killed = projectors[held].take().unwrap();
    killed.kill();
    let mut later = Vec::new();
    for i in 0..4 {
        let (user, order, ids) = user_and_order(&mut commands, &format!("after{i}")).await;
        later.push((user, order));
        event_ids.extend(ids);
    }
    for (user, order) in aggregates.iter().chain(&later) {
        let profile = user_at(&mut queries, user, 2).await;
        assert_eq!(profile.version, 2, "user {user}");
        assert!(profile.name.ends_with("renamed"), "{}", profile.name);
        let summary = order_at(&mut queries, order, 2).await;
        assert_eq!(
            (summary.version, summary.status),
            (2, pb::OrderStatus::Processing as i32),
            "order {order}"
        );
    }
    assert_eq!(
        lease_owner(&dynamo, &tables).await.as_deref(),
        Some(ids[standby].as_str()),
        "the standby took the lease over"
    );

    // Every event was published at least once, by one or the other.
    let expected: std::collections::HashSet<String> = event_ids.into_iter().collect();
    assert_eq!(expected.len(), 8 * 4);
    let sinks_ = sinks.clone();
    wait_for("every event published", || {
        let sinks = sinks_.clone();
        let expected = expected.clone();
        async move {
            let published: std::collections::HashSet<String> =
                sinks.iter().flat_map(|sink| published_ids(sink)).collect();
            expected.is_subset(&published)
        }
    })
    .await;

    // SIGTERM: the survivor stops cleanly and releases its lease.
    projectors[standby].take().unwrap().terminate();
    assert_eq!(lease_owner(&dynamo, &tables).await, None, "released");
    command_proc.terminate();
    query_proc.terminate();
}
