//! What the tests of every crate share: the embedded store with fresh
//! tables, and waiting for a condition with a deadline.
//!
//! Dev-only: no binary depends on it.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use dynabridge::schema::Tables;
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};

/// The embedded store on loopback with the tables of a fresh prefix, and
/// the SDK configuration that reaches it. Dropping (or sending on) the
/// sender stops the store.
pub async fn embedded_store() -> (
    aws_config::SdkConfig,
    Tables,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dynoxide::server::serve_with_shutdown(
        listener,
        dynoxide::Database::memory().unwrap(),
        async {
            let _ = stopped.await;
        },
    ));
    let sdk = load_sdk_config(
        &AwsArgs {
            endpoint_url: Some(endpoint),
            region: Some("us-east-1".into()),
        },
        Some(StaticCredentials::local()),
    )
    .await;
    let tables = Tables::new(format!(
        "m{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    dynabridge_provision::ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &tables)
        .await
        .unwrap();
    (sdk, tables, stop)
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
