//! What the tests of every crate share: the embedded store with fresh
//! tables, and waiting for a condition with a deadline.
//!
//! Dev-only: no binary depends on it.
#![allow(clippy::unwrap_used)]

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
