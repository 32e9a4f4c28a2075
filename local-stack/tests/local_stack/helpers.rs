//! Starting and stopping a local stack inside a test, on free ports.

use std::net::SocketAddr;
use std::time::Duration;

use local_stack::{Endpoints, Options, RunError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long anything in these tests may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A stack running in the background of a test.
pub struct TestStack {
    pub endpoints: Endpoints,
    stop: oneshot::Sender<()>,
    run: JoinHandle<Result<(), RunError>>,
}

/// The defaults, with every port 0.
pub fn free_ports() -> Options {
    Options {
        command_port: 0,
        query_port: 0,
        projector_health_port: 0,
        admin_port: 0,
        process_manager_health_port: 0,
        metrics_port: 0,
        dynamodb_port: 0,
        ..Options::default()
    }
}

pub async fn spawn_stack(options: Options) -> TestStack {
    let stack = local_stack::start(options).await.expect("the stack starts");
    let endpoints = stack.endpoints().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(stack.run_until(async {
        let _ = stopped.await;
    }));
    TestStack {
        endpoints,
        stop,
        run,
    }
}

impl TestStack {
    /// Asks the stack to stop and waits (with a deadline) until it has.
    pub async fn stop(self) -> Result<(), RunError> {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.run)
            .await
            .expect("the stack stops before the deadline")
            .expect("the stack's task does not panic")
    }

    /// Waits until all three gRPC servers report SERVING.
    pub async fn wait_serving(&self) {
        for addr in [
            self.endpoints.command,
            self.endpoints.query,
            self.endpoints.projector_health,
            self.endpoints.process_manager_health,
            self.endpoints.admin,
        ] {
            wait_serving(addr).await;
        }
    }
}

/// Waits until the server at `addr` reports SERVING for the server as a
/// whole (service ""), following the health Watch stream, so there is no
/// polling interval to guess.
pub async fn wait_serving(addr: SocketAddr) {
    // The listener is bound before `start` returns, so the connection is
    // accepted as soon as the server runs; any error is a real failure.
    match tokio::time::timeout(DEADLINE, watch_until_serving(addr)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("health of {addr}: {err}"),
        Err(_) => panic!("{addr} did not report SERVING within {DEADLINE:?}"),
    }
}

async fn watch_until_serving(addr: SocketAddr) -> Result<(), String> {
    let mut stream = HealthClient::new(dynabridge_testkit::channel(addr).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    while let Some(response) = stream.message().await.map_err(|e| e.to_string())? {
        if response.status == ServingStatus::Serving as i32 {
            return Ok(());
        }
    }
    Err("the watch ended before SERVING".to_owned())
}

/// The first `Some` that `probe` returns; fails the test with `what` after
/// [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    dynabridge_testkit::eventually(what, DEADLINE, probe).await
}

/// The body of `GET /metrics` at `addr`, over plain HTTP/1.1.
pub async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    body.to_owned()
}

/// A DynamoDB client for the stack's embedded store.
pub async fn dynamodb(endpoints: &Endpoints) -> aws_sdk_dynamodb::Client {
    let args = dynabridge_aws::AwsArgs {
        endpoint_url: Some(endpoints.dynamodb_url()),
        region: Some("us-east-1".to_owned()),
    };
    let sdk =
        dynabridge_aws::load_sdk_config(&args, Some(dynabridge_aws::StaticCredentials::local()))
            .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}
