//! What the crate's own tests share.

use crate::aws::{AwsArgs, StaticCredentials, load_sdk_config};
use crate::domain::{Email, Event, StoredEvent, UserId, UserName};
use crate::schema::Tables;
use crate::store::{Append, CommandOutcome, IdempotencyRecord};

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
    crate::provision::ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &tables)
        .await
        .unwrap();
    (sdk, tables, stop)
}

/// `CreateUser`'s append for a new user with `email`, under `request_id`,
/// claiming the email.
pub fn new_user_append(request_id: &str, email: &str) -> (UserId, Append) {
    let user_id = UserId::new_random();
    let now = chrono::Utc::now();
    let correlation_id = format!("corr-{request_id}");
    let event = StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version: 1,
        occurred_at: now,
        schema_version: 1,
        request_id: request_id.into(),
        correlation_id: correlation_id.clone(),
        trace_parent: None,
        event: Event::UserCreated {
            user_id,
            email: Email::parse(email).unwrap(),
            name: UserName::parse("Test User").unwrap(),
        },
    };
    let append = Append {
        idempotency: IdempotencyRecord {
            request_id: request_id.into(),
            request_hash: "hash".into(),
            outcome: CommandOutcome {
                aggregate_id: user_id.to_string(),
                version: 1,
                event_ids: vec![event.event_id.to_string()],
                correlation_id,
                total: None,
            },
        },
        claim_email: Some((Email::parse(email).unwrap(), user_id)),
        events: vec![event],
        release_email: None,
        require_user: None,
        now,
    };
    (user_id, append)
}
