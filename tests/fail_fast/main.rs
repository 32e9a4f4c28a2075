//! A store that hangs or is gone: a call is bounded by its deadline and
//! answered DEADLINE_EXCEEDED by the service, new calls are answered
//! UNAVAILABLE at once while the service knows the store is unreachable,
//! and a command that may have reached the store is answered by its retry.
//!
//! A test binary of its own: the AWS call counters are the process's, and
//! the failed calls here would show in the observability tests' counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../observability/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use crate::helpers::{
    Proxy, Store, eventually, fast_health, sdk_for, start_command_service, start_query_service,
};

fn create_user(request_id: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        request_id: request_id.into(),
        email: format!("{request_id}@example.com"),
        name: "Ada".into(),
        ..Default::default()
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn reason(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_is_deadline_exceeded_then_unavailable_at_once_and_the_retry_is_answered() {
    let store = Store::start().await;
    let proxy = Proxy::start(&store.endpoint).await;
    let sdk = sdk_for(&proxy.endpoint).await;
    let command =
        start_command_service(store.store_args(&proxy.endpoint), &sdk, fast_health()).await;
    let mut client = CommandServiceClient::new(dynabridge_testkit::channel(command.addr).await);
    client.create_user(create_user("before")).await.unwrap();

    // The store hangs. A call with a deadline gets the service's own
    // DEADLINE_EXCEEDED (it carries an ErrorInfo; a client's timer does not).
    proxy.stall();
    let started = Instant::now();
    let status = client
        .create_user(with_timeout(
            create_user("in-doubt"),
            Duration::from_millis(600),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("DEADLINE_PASSED"));
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "answered before the deadline: {:?}",
        started.elapsed()
    );

    // Once the health check has seen it, new calls are answered at once.
    command
        .wait_health(&[command_service::SERVICE_NAME], ServingStatus::NotServing)
        .await;
    let started = Instant::now();
    let status = client
        .create_user(with_timeout(
            create_user("while-down"),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("STORE_UNAVAILABLE")
    );
    assert!(details.retry_info().is_some(), "a RetryInfo: {details:?}");
    assert!(
        waited < Duration::from_secs(1),
        "not held for the store: {waited:?}"
    );

    // The store is back: the in-doubt command's retry is answered, once.
    proxy.restore();
    command
        .wait_health(&[command_service::SERVICE_NAME], ServingStatus::Serving)
        .await;
    let retry = eventually("the retry to be answered", || {
        let mut client = client.clone();
        async move { client.create_user(create_user("in-doubt")).await.ok() }
    })
    .await
    .into_inner();
    let again = client
        .create_user(create_user("in-doubt"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.user_id, retry.user_id);
    assert_eq!(again.event_ids, retry.event_ids);
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_fail_fast_while_the_store_is_cut_and_are_served_again_after() {
    let store = Store::start().await;
    let proxy = Proxy::start(&store.endpoint).await;
    let sdk = sdk_for(&proxy.endpoint).await;
    let query = start_query_service(store.store_args(&proxy.endpoint), &sdk, fast_health()).await;
    let mut client = QueryServiceClient::new(dynabridge_testkit::channel(query.addr).await);
    let get = || pb::GetOrderRequest {
        order_id: uuid::Uuid::new_v4().to_string(),
        min_version: 0,
    };
    assert_eq!(
        client.get_order(get()).await.unwrap_err().code(),
        Code::NotFound
    );

    proxy.cut();
    query
        .wait_health(&[query_service::SERVICE_NAME], ServingStatus::NotServing)
        .await;
    let status = client.get_order(get()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("STORE_UNAVAILABLE"));
    // Health is answered all the while.
    assert_eq!(
        query.health(query_service::SERVICE_NAME).await,
        Some(ServingStatus::NotServing)
    );

    proxy.restore();
    eventually("queries to be served again", || {
        let mut client = client.clone();
        async move {
            (client.get_order(get()).await.unwrap_err().code() == Code::NotFound).then_some(())
        }
    })
    .await;
    query.stop().await;
}
