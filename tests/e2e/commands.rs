//! The command side's guarantees: idempotency (also across a restart),
//! concurrency control, email uniqueness, and its error codes.

use dynabridge::pb;
use tonic::Code;

use crate::helpers::spawn_app;
use crate::{create_order, create_user, item, new_request_id, usd, violated_fields};

#[tokio::test]
async fn a_retried_request_returns_the_original_response_even_after_a_restart() {
    let mut app = spawn_app().await;
    let request = pb::CreateUserRequest {
        request_id: "retry-me".into(),
        correlation_id: "first".into(),
        email: "ann@example.com".into(),
        name: "Ann".into(),
    };
    let first = app
        .command
        .create_user(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .command
        .create_user(pb::CreateUserRequest {
            correlation_id: "second".into(),
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "a retry returns the original response");

    app.restart_command_service().await;
    let after_restart = app
        .command
        .create_user(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_restart, first);
    assert_eq!(app.stored_events().await.len(), 1, "retries append nothing");
    // The create's event is its record: no idempotency item, and the id
    // derives from the request id.
    assert_eq!(app.count_items(&app.tables.idempotency()).await, 0);
    assert_eq!(
        first.user_id,
        dynabridge_domain::UserId::for_request("retry-me").to_string()
    );

    // The same key with another request is refused, and writes nothing.
    let err = app
        .command
        .create_user(pb::CreateUserRequest {
            name: "Someone Else".into(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["request_id"]);
    assert_eq!(app.stored_events().await.len(), 1);
    // So is the same key for a create of another kind: it names the same
    // aggregate, whose first event is another request's.
    let err = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: "retry-me".into(),
            user_id: first.user_id.clone(),
            items: vec![item("a", 1, 100)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), ["request_id"]);
    assert_eq!(app.stored_events().await.len(), 1);

    // A status change retried after it took effect is not a forbidden
    // PROCESSING -> PROCESSING transition: it is the same request.
    let order = create_order(&mut app, &first.user_id, vec![item("a", 1, 100)]).await;
    let update = pb::UpdateOrderStatusRequest {
        request_id: new_request_id(),
        order_id: order.order_id.clone(),
        status: pb::OrderStatus::Processing as i32,
        ..Default::default()
    };
    let first_update = app
        .command
        .update_order_status(update.clone())
        .await
        .unwrap()
        .into_inner();
    app.restart_command_service().await;
    let retried = app
        .command
        .update_order_status(update)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first_update);
    assert_eq!(app.stored_events().await.len(), 3);
    app.shutdown().await;
}

#[tokio::test]
async fn with_expected_version_exactly_one_concurrent_writer_wins() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "race@example.com", "Racer").await;
    let attempts = (0..8).map(|i| {
        let mut client = app.command.clone();
        let user_id = user.user_id.clone();
        tokio::spawn(async move {
            client
                .update_user_profile(pb::UpdateUserProfileRequest {
                    request_id: new_request_id(),
                    user_id,
                    expected_version: Some(1),
                    name: format!("Racer {i}"),
                    update_mask: Some(pbjson_types::FieldMask {
                        paths: vec!["name".into()],
                    }),
                    ..Default::default()
                })
                .await
        })
    });
    let results: Vec<_> = futures_join(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
        }
    }
    let versions: Vec<i64> = app.stored_events().await.iter().map(|e| e.1).collect();
    assert_eq!(versions, [1, 2]);
    app.shutdown().await;
}

#[tokio::test]
async fn without_expected_version_concurrent_writers_are_serialised() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "many@example.com", "Many").await;
    let attempts = (0..4).map(|i| {
        let mut client = app.command.clone();
        let user_id = user.user_id.clone();
        tokio::spawn(async move {
            client
                .update_user_profile(pb::UpdateUserProfileRequest {
                    request_id: new_request_id(),
                    user_id,
                    name: format!("Writer {i}"),
                    update_mask: Some(pbjson_types::FieldMask {
                        paths: vec!["name".into()],
                    }),
                    ..Default::default()
                })
                .await
        })
    });
    let mut versions: Vec<i64> = futures_join(attempts)
        .await
        .into_iter()
        .map(|r| {
            r.expect("every writer succeeds after re-deciding")
                .into_inner()
                .version
        })
        .collect();
    versions.sort();
    assert_eq!(versions, [2, 3, 4, 5]);
    let stored: Vec<i64> = app.stored_events().await.iter().map(|e| e.1).collect();
    assert_eq!(stored, [1, 2, 3, 4, 5]);
    app.shutdown().await;
}

#[tokio::test]
async fn an_email_belongs_to_one_user_until_released() {
    let mut app = spawn_app().await;
    let ann = create_user(&mut app, "ann@example.com", "Ann").await;
    let err = app
        .command
        .create_user(pb::CreateUserRequest {
            request_id: new_request_id(),
            email: "  ANN@example.com".into(),
            name: "Impostor".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(app.stored_events().await.len(), 1);

    let bob = create_user(&mut app, "bob@example.com", "Bob").await;
    let take_anns = pb::UpdateUserProfileRequest {
        request_id: new_request_id(),
        user_id: bob.user_id.clone(),
        email: "ann@example.com".into(),
        update_mask: Some(pbjson_types::FieldMask {
            paths: vec!["email".into()],
        }),
        ..Default::default()
    };
    let err = app
        .command
        .update_user_profile(take_anns.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // Ann moves to a new address, which releases the old one.
    app.command
        .update_user_profile(pb::UpdateUserProfileRequest {
            request_id: new_request_id(),
            user_id: ann.user_id.clone(),
            email: "ann@new.example.com".into(),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["email".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let bob_now = app
        .command
        .update_user_profile(pb::UpdateUserProfileRequest {
            request_id: new_request_id(),
            ..take_anns
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob_now.version, 2);
    assert_eq!(app.count_items(&app.tables.unique_emails()).await, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_commands_each_get_their_own_answer() {
    // Commands that arrive together may share one transaction (group
    // commit); a refusal among them must stay that command's alone.
    let mut app = spawn_app().await;
    let taken = create_user(&mut app, "taken@example.com", "Taken").await;
    let earlier = pb::CreateUserRequest {
        request_id: new_request_id(),
        email: "earlier@example.com".into(),
        name: "Earlier".into(),
        ..Default::default()
    };
    let earlier_response = app
        .command
        .create_user(earlier.clone())
        .await
        .unwrap()
        .into_inner();

    let requests: Vec<(&str, pb::CreateUserRequest)> = (0..24)
        .map(|i| match i % 8 {
            3 => (
                "taken",
                pb::CreateUserRequest {
                    request_id: new_request_id(),
                    email: "taken@example.com".into(),
                    name: format!("Impostor {i}"),
                    ..Default::default()
                },
            ),
            6 => ("retry", earlier.clone()),
            _ => (
                "new",
                pb::CreateUserRequest {
                    request_id: new_request_id(),
                    email: format!("user{i}@example.com"),
                    name: format!("User {i}"),
                    ..Default::default()
                },
            ),
        })
        .collect();
    let calls = requests.iter().map(|(_, request)| {
        let mut client = app.command.clone();
        let request = request.clone();
        tokio::spawn(async move { client.create_user(request).await })
    });
    let results = futures_join(calls).await;

    let mut created = 0;
    for ((kind, request), result) in requests.iter().zip(results) {
        match *kind {
            "new" => {
                let response = result.expect("a new user is created").into_inner();
                assert_eq!(response.version, 1, "{}", request.email);
                assert_ne!(response.user_id, taken.user_id);
                created += 1;
            }
            "taken" => {
                let err = result.expect_err("the address is taken");
                assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
            }
            _ => {
                let response = result.expect("a retry is answered").into_inner();
                assert_eq!(response, earlier_response);
            }
        }
    }
    assert_eq!(created, 18);
    assert_eq!(app.stored_events().await.len(), 2 + created);
    assert_eq!(
        app.count_items(&app.tables.unique_emails()).await,
        2 + created
    );
    app.shutdown().await;
}

#[tokio::test]
async fn commands_map_domain_refusals_to_their_codes() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "codes@example.com", "Codes").await;

    let missing_user = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: uuid::Uuid::new_v4().to_string(),
            items: vec![item("a", 1, 1)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing_user.code(), Code::NotFound);

    // An order id is not a user id, even though both are UUIDs.
    let order = create_order(&mut app, &user.user_id, vec![item("a", 3, 1_000)]).await;
    assert_eq!(order.total, Some(usd(3_000)));
    let not_a_user = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: order.order_id.clone(),
            items: vec![item("a", 1, 1)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(not_a_user.code(), Code::NotFound);

    let wrong_total = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: user.user_id.clone(),
            items: vec![item("a", 3, 1_000)],
            total: Some(usd(2_999)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_total.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&wrong_total), ["total"]);

    let forbidden = app
        .command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: new_request_id(),
            order_id: order.order_id.clone(),
            status: pb::OrderStatus::Delivered as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(forbidden.code(), Code::FailedPrecondition);

    let stale = app
        .command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: new_request_id(),
            order_id: order.order_id.clone(),
            status: pb::OrderStatus::Processing as i32,
            expected_version: Some(7),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    let unknown_user = app
        .command
        .update_user_profile(pb::UpdateUserProfileRequest {
            request_id: new_request_id(),
            user_id: uuid::Uuid::new_v4().to_string(),
            name: "X".into(),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_user.code(), Code::NotFound);

    // Only the user and the one valid order were ever appended.
    assert_eq!(app.stored_events().await.len(), 2);
    app.shutdown().await;
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.expect("task"));
    }
    out
}
