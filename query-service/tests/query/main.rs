//! The query service over real gRPC, against an in-process store.

mod helpers;
mod observe;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dynabridge::pb;
use dynabridge::schema::{read_model, user_profiles};
use dynabridge_domain::{OrderId, OrderStatus, UserId};
use dynabridge_runtime::grpc::CORRELATION_HEADER;
use helpers::{
    PATIENCE, TestApp, order_row, spawn_app, spawn_app_with, spawn_app_without_store, user_row,
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, fields: &[&str]) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_fields(&status), fields, "{status:?}");
}

// ---- reads by key -------------------------------------------------------

#[tokio::test]
async fn get_user_profile_returns_the_row() {
    let app = spawn_app().await;
    let id = UserId::new_random();
    let row = user_row(id, "ann@example.com", "Ann", 3);
    app.put_user(&row).await;

    let user = app
        .client
        .clone()
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: id.to_string().to_uppercase(),
            min_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user, row.to_pb());
}

#[tokio::test]
async fn get_user_by_email_normalises_the_address() {
    let app = spawn_app().await;
    let id = UserId::new_random();
    let row = user_row(id, "ann@example.com", "Ann", 1);
    app.put_user(&row).await;
    app.put_user(&user_row(UserId::new_random(), "bob@example.com", "Bob", 1))
        .await;

    let user = app
        .client
        .clone()
        .get_user_by_email(pb::GetUserByEmailRequest {
            email: "  Ann@Example.COM ".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user, row.to_pb());
}

#[tokio::test]
async fn get_order_returns_the_row() {
    let app = spawn_app().await;
    let id = OrderId::new_random();
    let row = order_row(id, UserId::new_random(), OrderStatus::Processing, 5, 2);
    app.put_order(&row).await;

    let order = app
        .client
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: id.to_string(),
            min_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order, row.to_pb());
    assert_eq!(order.status, pb::OrderStatus::Processing as i32);
    assert_eq!(order.items.len(), 1);
}

#[tokio::test]
async fn missing_rows_are_not_found() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let results = [
        client
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: UserId::new_random().to_string(),
                min_version: 0,
            })
            .await
            .map(drop),
        client
            .get_user_by_email(pb::GetUserByEmailRequest {
                email: "nobody@example.com".into(),
            })
            .await
            .map(drop),
        client
            .get_order(pb::GetOrderRequest {
                order_id: OrderId::new_random().to_string(),
                min_version: 0,
            })
            .await
            .map(drop),
    ];
    for result in results {
        let status = result.expect_err("expected NOT_FOUND");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(reason(&status), "AGGREGATE_NOT_FOUND");
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let user = UserId::new_random().to_string();

    assert_invalid(
        client
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: "not-a-uuid".into(),
                min_version: -1,
            })
            .await,
        &["user_id", "min_version"],
    );
    assert_invalid(
        client
            .get_order(pb::GetOrderRequest {
                order_id: String::new(),
                min_version: 0,
            })
            .await,
        &["order_id"],
    );
    assert_invalid(
        client
            .get_order(pb::GetOrderRequest {
                order_id: OrderId::new_random().to_string(),
                min_version: -5,
            })
            .await,
        &["min_version"],
    );
    assert_invalid(
        client
            .get_user_by_email(pb::GetUserByEmailRequest {
                email: "not an address".into(),
            })
            .await,
        &["email"],
    );
    for page_size in [-1, 101] {
        assert_invalid(
            client
                .list_orders_by_user(pb::ListOrdersByUserRequest {
                    user_id: user.clone(),
                    page_size,
                    page_token: String::new(),
                })
                .await,
            &["page_size"],
        );
    }
    assert_invalid(
        client
            .list_orders_by_user(pb::ListOrdersByUserRequest {
                user_id: "x".into(),
                page_size: 10,
                page_token: String::new(),
            })
            .await,
        &["user_id"],
    );
    for status in [pb::OrderStatus::Unspecified as i32, 42] {
        assert_invalid(
            client
                .list_orders_by_status(pb::ListOrdersByStatusRequest {
                    status,
                    page_size: 10,
                    page_token: String::new(),
                })
                .await,
            &["status"],
        );
    }
    assert_invalid(
        client
            .list_orders_by_user(pb::ListOrdersByUserRequest {
                user_id: user,
                page_size: 10,
                page_token: "garbage".into(),
            })
            .await,
        &["page_token"],
    );
}

#[tokio::test]
async fn correlation_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    let mut request = Request::new(pb::GetOrderRequest {
        order_id: OrderId::new_random().to_string(),
        min_version: 0,
    });
    request
        .metadata_mut()
        .insert(CORRELATION_HEADER, "trace-me-42".parse().unwrap());
    let status = client.get_order(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.metadata().get(CORRELATION_HEADER).unwrap(),
        "trace-me-42"
    );

    let id = UserId::new_random();
    app.put_user(&user_row(id, "cid@example.com", "Cid", 1))
        .await;
    let response = client
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: id.to_string(),
            min_version: 0,
        })
        .await
        .unwrap();
    let made = response
        .metadata()
        .get(CORRELATION_HEADER)
        .expect("a correlation id")
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
}

// ---- min_version -----------------------------------------------------------

#[tokio::test]
async fn min_version_waits_for_the_projector() {
    let app = spawn_app().await;
    let id = UserId::new_random();
    app.put_user(&user_row(id, "wait@example.com", "Before", 1))
        .await;
    let mut log = observe::log();

    let cid = uuid::Uuid::new_v4().to_string();
    let mut request = Request::new(pb::GetUserProfileRequest {
        user_id: id.to_string(),
        min_version: 2,
    });
    request
        .metadata_mut()
        .insert(CORRELATION_HEADER, cid.parse().unwrap());
    let mut client = app.client.clone();
    let call = tokio::spawn(async move { client.get_user_profile(request).await });

    // Version 2 is written only once the service has seen version 1 and is
    // waiting, so the answer can only come from a later poll.
    tokio::time::timeout(
        PATIENCE,
        log.wait_for(|entries| {
            entries
                .iter()
                .any(|e| e.correlation_id == cid && e.message == "read model behind, waiting")
        }),
    )
    .await
    .expect("the service never waited")
    .expect("log closed");
    assert!(!call.is_finished(), "answered before version 2 existed");
    app.put_user(&user_row(id, "wait@example.com", "After", 2))
        .await;

    let user = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("no answer in time")
        .unwrap()
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((user.version, user.name.as_str()), (2, "After"));
}

#[tokio::test]
async fn min_version_already_reached_answers_at_once() {
    let app = spawn_app_with(|c| c.max_wait_ms = 60_000).await;
    let id = OrderId::new_random();
    app.put_order(&order_row(
        id,
        UserId::new_random(),
        OrderStatus::Shipped,
        0,
        3,
    ))
    .await;
    let started = Instant::now();
    let order = app
        .client
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: id.to_string(),
            min_version: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.version, 3);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn min_version_gives_up_at_the_call_deadline() {
    let app = spawn_app().await;
    let id = UserId::new_random();
    app.put_user(&user_row(id, "late@example.com", "Late", 1))
        .await;

    let mut request = Request::new(pb::GetUserProfileRequest {
        user_id: id.to_string(),
        min_version: 3,
    });
    request.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let status = app
        .client
        .clone()
        .get_user_profile(request)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    // Ours, with the versions, not the transport's bare timeout.
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "NOT_YET_VISIBLE");
    assert!(
        status.message().contains("at version 1"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("version 3"),
        "{}",
        status.message()
    );
    assert!(
        elapsed >= Duration::from_millis(850),
        "gave up early: {elapsed:?}"
    );
}

#[tokio::test]
async fn min_version_gives_up_at_the_server_cap() {
    let app = spawn_app_with(|c| c.max_wait_ms = 300).await;
    let started = Instant::now();
    let status = app
        .client
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: OrderId::new_random().to_string(),
            min_version: 1,
        })
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // A row still missing counts as version 0.
    assert!(
        status.message().contains("at version 0"),
        "{}",
        status.message()
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "gave up early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "ignored the cap: {elapsed:?}"
    );
}

// ---- listings ----------------------------------------------------------------

async fn list_by_user(
    app: &TestApp,
    user: UserId,
    page_size: i32,
    page_token: String,
) -> Result<pb::ListOrdersByUserResponse, Status> {
    app.client
        .clone()
        .list_orders_by_user(pb::ListOrdersByUserRequest {
            user_id: user.to_string(),
            page_size,
            page_token,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn list_orders_by_user_pages_newest_first() {
    let app = spawn_app().await;
    let user = UserId::new_random();
    let other = UserId::new_random();
    let mut expected = Vec::new();
    for minute in 0..7 {
        let id = OrderId::new_random();
        app.put_order(&order_row(id, user, OrderStatus::Created, minute * 10, 1))
            .await;
        expected.push(id.to_string());
        // Another user's orders, interleaved in time, stay out.
        app.put_order(&order_row(
            OrderId::new_random(),
            other,
            OrderStatus::Created,
            minute * 10 + 5,
            1,
        ))
        .await;
    }
    expected.reverse();

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = list_by_user(&app, user, 3, token).await.unwrap();
        sizes.push(page.orders.len());
        for order in &page.orders {
            assert_eq!(order.user_id, user.to_string());
        }
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);
}

#[tokio::test]
async fn list_orders_by_status_ends_without_an_empty_page() {
    let app = spawn_app().await;
    let mut expected = Vec::new();
    for minute in 0..6 {
        let id = OrderId::new_random();
        app.put_order(&order_row(
            id,
            UserId::new_random(),
            OrderStatus::Shipped,
            minute,
            3,
        ))
        .await;
        expected.push(id.to_string());
    }
    for minute in 0..2 {
        app.put_order(&order_row(
            OrderId::new_random(),
            UserId::new_random(),
            OrderStatus::Created,
            minute,
            1,
        ))
        .await;
    }
    expected.reverse();

    let mut client = app.client.clone();
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = client
            .list_orders_by_status(pb::ListOrdersByStatusRequest {
                status: pb::OrderStatus::Shipped as i32,
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.orders.len());
        assert!(
            page.orders
                .iter()
                .all(|o| o.status == pb::OrderStatus::Shipped as i32)
        );
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    // Six orders in pages of three: two pages, the second saying it is last.
    assert_eq!(sizes, [3, 3]);
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn page_size_zero_means_twenty() {
    let app = spawn_app().await;
    let user = UserId::new_random();
    for minute in 0..25 {
        app.put_order(&order_row(
            OrderId::new_random(),
            user,
            OrderStatus::Created,
            minute,
            1,
        ))
        .await;
    }
    let first = list_by_user(&app, user, 0, String::new()).await.unwrap();
    assert_eq!(first.orders.len(), 20);
    assert!(!first.next_page_token.is_empty());
    let second = list_by_user(&app, user, 0, first.next_page_token)
        .await
        .unwrap();
    assert_eq!(second.orders.len(), 5);
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn an_empty_listing_is_one_last_page() {
    let app = spawn_app().await;
    let page = list_by_user(&app, UserId::new_random(), 5, String::new())
        .await
        .unwrap();
    assert!(page.orders.is_empty());
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn page_tokens_are_tied_to_their_query_and_unforgeable() {
    let app = spawn_app().await;
    let user = UserId::new_random();
    for minute in 0..4 {
        app.put_order(&order_row(
            OrderId::new_random(),
            user,
            OrderStatus::Created,
            minute,
            1,
        ))
        .await;
    }
    let token = list_by_user(&app, user, 2, String::new())
        .await
        .unwrap()
        .next_page_token;
    assert!(!token.is_empty());
    // The genuine token works.
    assert_eq!(
        list_by_user(&app, user, 2, token.clone())
            .await
            .unwrap()
            .orders
            .len(),
        2
    );

    // One character changed.
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_invalid(list_by_user(&app, user, 2, tampered).await, &["page_token"]);

    // Another user's listing.
    assert_invalid(
        list_by_user(&app, UserId::new_random(), 2, token.clone()).await,
        &["page_token"],
    );

    // Another method.
    assert_invalid(
        app.client
            .clone()
            .list_orders_by_status(pb::ListOrdersByStatusRequest {
                status: pb::OrderStatus::Created as i32,
                page_size: 2,
                page_token: token.clone(),
            })
            .await,
        &["page_token"],
    );

    // Another deployment, with another secret.
    let other = spawn_app_with(|c| {
        c.page_tokens.page_token_secret = Some("another secret, also thirty-two bytes long".into());
    })
    .await;
    assert_invalid(list_by_user(&other, user, 2, token).await, &["page_token"]);
}

// ---- failures of the store ------------------------------------------------

#[tokio::test]
async fn unreadable_rows_are_internal_and_do_not_leak() {
    let app = spawn_app().await;
    let id = UserId::new_random().to_string();
    // No name, no times: not a row this build wrote.
    app.put_raw_user(&[
        (user_profiles::USER_ID, &id),
        (user_profiles::EMAIL, "broken@example.com"),
        (read_model::VERSION, "one"),
    ])
    .await;
    let status = app
        .client
        .clone()
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: id,
            min_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        !status.message().contains(&app.tables.prefix),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_unreachable_store_is_unavailable() {
    let app = spawn_app_without_store().await;
    let mut request = Request::new(pb::GetUserProfileRequest {
        user_id: UserId::new_random().to_string(),
        min_version: 0,
    });
    request.set_timeout(PATIENCE);
    let status = app
        .client
        .clone()
        .get_user_profile(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "STORE_UNAVAILABLE");
}

// ---- serving -------------------------------------------------------------------

#[tokio::test]
async fn health_reflection_and_graceful_shutdown() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", query_service::SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    // Reflection, both versions, lists our service and health.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(app.channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response: {response:?}");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == query_service::SERVICE_NAME),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(app.channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response: {response:?}");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == query_service::SERVICE_NAME)
        );
    }

    // Watching health across shutdown: SERVING, then NOT_SERVING once the
    // signal comes, before the server drains and stops.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: query_service::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    app.ask_to_stop();
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("no health change after shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    drop(health);
    app.stop().await.expect("run returned an error");
}
