//! The three real binaries as separate processes against one store (an
//! embedded store in this test process). The projector is killed with
//! SIGKILL mid-stream and restarted; every read model must converge with
//! each event applied exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;

/// The workspace's binaries sit next to this test's `deps/` folder;
/// `cargo test --workspace` builds them before running any test.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A child process that is killed when dropped, so a failing test leaves
/// nothing behind.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `name` with `args` and waits until it logs the address it listens
/// on (JSON logs on stderr, field `addr`).
fn spawn(name: &str, args: &[String], env: &[(&str, String)]) -> Proc {
    let mut command = Command::new(binary(name));
    command
        .args(args)
        .env("DYNABRIDGE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", "dynabridge-local")
        .env("AWS_SECRET_ACCESS_KEY", "dynabridge-local")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        // Each binary's own metrics endpoint, on a free port.
        .env("DYNABRIDGE_COMMAND_METRICS_LISTEN", "127.0.0.1:0")
        .env("DYNABRIDGE_QUERY_METRICS_LISTEN", "127.0.0.1:0")
        .env("DYNABRIDGE_PROJECTOR_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let logs = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            if !sent
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = json["fields"]["addr"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} did not report its address"));
    Proc { child, addr }
}

fn common_args(endpoint: &str, prefix: &str) -> Vec<String> {
    vec![
        "--endpoint-url".into(),
        endpoint.into(),
        "--table-prefix".into(),
        prefix.into(),
    ]
}

fn spawn_projector(endpoint: &str, prefix: &str, sink: &Path) -> Proc {
    let mut args = common_args(endpoint, prefix);
    args.extend([
        "--health-listen".into(),
        "127.0.0.1:0".into(),
        "--sink-path".into(),
        sink.display().to_string(),
        "--idle-poll-max-ms".into(),
        "20".into(),
    ]);
    spawn("projector", &args, &[])
}

fn terminate(proc: &mut Proc) -> std::process::ExitStatus {
    let pid = proc.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = proc.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_converge_after_the_projector_is_killed() {
    // The store lives in this process; the services reach it over loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(dynoxide::server::serve_with_shutdown(
        listener,
        dynoxide::Database::memory().unwrap(),
        std::future::pending(),
    ));
    let prefix = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let sdk = dynabridge::aws::load_sdk_config(
        &dynabridge::aws::AwsArgs {
            endpoint_url: Some(endpoint.clone()),
            region: Some("us-east-1".into()),
        },
        Some(dynabridge::aws::StaticCredentials::local()),
    )
    .await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    dynabridge::provision::ensure_tables(&dynamo, &dynabridge::schema::Tables::new(prefix.clone()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("published.jsonl");

    let mut command_args = common_args(&endpoint, &prefix);
    command_args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let mut command_proc = spawn("command-service", &command_args, &[]);
    let mut query_args = common_args(&endpoint, &prefix);
    query_args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let mut query_proc = spawn("query-service", &query_args, &[]);
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
            projector.child.kill().expect("SIGKILL the projector");
            projector.child.wait().unwrap();
            killed = true;
        }
    }
    assert!(
        killed,
        "the projector published nothing before the kill point"
    );
    let projector_restarted = spawn_projector(&endpoint, &prefix, &sink);

    // Every read model converges to exactly the version of its last event.
    for user_id in &users {
        let profile = queries
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: user_id.clone(),
                min_version: 3,
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(profile.version, 3, "user {user_id}");
        assert!(profile.name.ends_with("v2"), "{}", profile.name);
    }
    for order_id in &orders {
        let order = queries
            .get_order(pb::GetOrderRequest {
                order_id: order_id.clone(),
                min_version: 3,
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
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
    assert!(terminate(&mut command_proc).success());
    assert!(terminate(&mut query_proc).success());
    drop(projector_restarted);
}
