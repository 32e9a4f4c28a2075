//! What the tests of every crate share: the embedded store, fresh table
//! prefixes, a service running in the test's runtime ([`spawn_app`]), a
//! channel to it, and waiting for a condition with a deadline.
//!
//! Dev-only: no binary depends on it.
#![allow(clippy::unwrap_used)]

pub mod fuzz;
pub mod processes;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use dynabridge::schema::Tables;
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
use dynabridge_runtime::service::{Host, Service};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a spawned app may take to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// An embedded store serving the DynamoDB API on 127.0.0.1, port 0, empty.
/// Dropping it stops the store.
#[derive(Debug)]
pub struct EmbeddedStore {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl EmbeddedStore {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(dynoxide::server::serve_with_shutdown(
            listener,
            dynoxide::Database::memory().unwrap(),
            async {
                let _ = stopped.await;
            },
        ));
        Self { addr, _stop: stop }
    }

    /// Stops the store: every call to it fails from now on.
    pub fn stop(self) {
        let _ = self._stop.send(());
    }

    /// The endpoint, for `--endpoint-url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A table prefix no other test uses: `tag` and 12 random hex digits.
pub fn unique_prefix(tag: &str) -> String {
    format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A service built with its `Config` ([`Service::build`]) and running in
/// this runtime until [`SpawnedApp::stop`] (or until dropped, when its task
/// is left to end with the runtime).
#[derive(Debug)]
pub struct SpawnedApp {
    /// Where its gRPC server listens.
    pub addr: SocketAddr,
    /// Where its `/metrics` endpoint listens, if it has one.
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Builds `S` from `config` on `host` and runs it in a task.
pub async fn spawn_app<S: Service>(config: S::Config, host: &Host) -> anyhow::Result<SpawnedApp> {
    let app = S::build(config, host).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    Ok(SpawnedApp {
        addr: app.local_addr(),
        metrics: app.metrics_addr(),
        stop: Some(stop),
        task: tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        })),
    })
}

impl SpawnedApp {
    /// Asks the app to stop and returns what its `run_until` returned;
    /// panics if it does not stop within ten seconds or its task panicked.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.ask_to_stop();
        tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .expect("the app stops when asked")
            .expect("the app's task does not panic")
    }

    /// Asks the app to stop without waiting for it.
    pub fn ask_to_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A channel to the app's gRPC server (bound already, so connecting
    /// waits for nothing).
    pub async fn channel(&self) -> tonic::transport::Channel {
        channel(self.addr).await
    }
}

/// The gRPC health status of `service` at `addr` (`""`: the server as a
/// whole), or `None` if the server does not answer.
pub async fn health_status(
    addr: SocketAddr,
    service: &str,
) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    tonic_health::pb::health_check_response::ServingStatus::try_from(response.into_inner().status)
        .ok()
}

/// A channel to the gRPC server at `addr`.
pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// The embedded store on loopback with the tables of a fresh prefix, and
/// the SDK configuration that reaches it. Dropping (or sending on) the
/// sender stops the store.
pub async fn embedded_store() -> (aws_config::SdkConfig, Tables, EmbeddedStore) {
    let store = EmbeddedStore::start().await;
    let sdk = sdk_config(&store.endpoint()).await;
    let tables = Tables::new(unique_prefix("m"));
    dynabridge_provision::ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &tables)
        .await
        .unwrap();
    (sdk, tables, store)
}

/// The SDK configuration of a client of the store at `endpoint`, with the
/// local credentials.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    load_sdk_config(
        &AwsArgs {
            endpoint_url: Some(endpoint.to_owned()),
            region: Some("us-east-1".into()),
        },
        Some(StaticCredentials::local()),
    )
    .await
}

/// The first `Some` that `probe` returns, asking again after 5 ms, then
/// twice as long each time up to 100 ms; fails the test, naming `what`,
/// once `timeout` has passed.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    #[derive(Debug)]
    struct NotYet;
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(100))
        .without_max_times();
    let found = (|| {
        let asked = probe();
        async move { asked.await.ok_or(NotYet) }
    })
    .retry(backoff)
    .sleep(tokio::time::sleep);
    match tokio::time::timeout(timeout, found).await {
        Ok(Ok(value)) => value,
        Ok(Err(NotYet)) | Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_value_found() {
        let mut asked = 0;
        let found = eventually("the third answer", Duration::from_secs(5), || {
            asked += 1;
            let n = asked;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(found, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing")]
    async fn eventually_fails_the_test_at_its_timeout() {
        eventually("nothing", Duration::from_millis(50), || async {
            None::<()>
        })
        .await;
    }
}
