//! Seed 003's validation steps: create a user, create an order, update its
//! status, then query the profile and the orders, reading our own writes
//! with `min_version` instead of sleeping.

use dynabridge_testkit::channel;
use std::time::Duration;

use dynabridge::pb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{eventually, spawn_app};
use crate::{item, new_request_id, usd};

#[tokio::test]
async fn seed_walkthrough_end_to_end() {
    let mut app = spawn_app().await;

    // 1. Create a user.
    let user = app
        .command
        .create_user(pb::CreateUserRequest {
            request_id: "cmd-001".into(),
            correlation_id: "corr-001".into(),
            email: "John.Doe@Example.com".into(),
            name: "John Doe".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.version, 1);
    assert_eq!(user.event_ids.len(), 1);
    assert_eq!(user.correlation_id, "corr-001");

    // 2. The event is in the event store.
    let stored = app.stored_events().await;
    assert_eq!(
        stored,
        vec![(user.user_id.clone(), 1, "UserCreated".to_owned())]
    );

    // 3. Create an order and move it to PROCESSING.
    let order = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: user.user_id.clone(),
            items: vec![item("laptop", 1, 99_999), item("mouse", 2, 2_500)],
            total: Some(usd(104_999)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.total, Some(usd(104_999)));
    let mut update = tonic::Request::new(pb::UpdateOrderStatusRequest {
        request_id: new_request_id(),
        order_id: order.order_id.clone(),
        status: pb::OrderStatus::Processing as i32,
        ..Default::default()
    });
    update
        .metadata_mut()
        .insert("x-correlation-id", "corr-from-header".parse().unwrap());
    let updated = app.command.update_order_status(update).await.unwrap();
    assert_eq!(
        updated.metadata().get("x-correlation-id").unwrap(),
        "corr-from-header"
    );
    let updated = updated.into_inner();
    assert_eq!(
        (updated.version, updated.correlation_id.as_str()),
        (2, "corr-from-header")
    );

    // 4. Query the profile and the orders, reading our own writes.
    let profile = app
        .query
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: user.user_id.clone(),
            min_version: user.version,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(profile.email, "john.doe@example.com");
    assert_eq!(profile.name, "John Doe");
    assert_eq!(profile.version, 1);
    assert!(profile.create_time.is_some() && profile.update_time.is_some());

    let by_email = app
        .query
        .get_user_by_email(pb::GetUserByEmailRequest {
            email: "JOHN.DOE@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(by_email.user_id, user.user_id);

    let summary = app
        .query
        .get_order(pb::GetOrderRequest {
            order_id: order.order_id.clone(),
            min_version: updated.version,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(summary.status, pb::OrderStatus::Processing as i32);
    assert_eq!(summary.version, 2);
    assert_eq!(summary.total, Some(usd(104_999)));
    assert_eq!(summary.items.len(), 2);
    let (created, updated) = (summary.create_time.unwrap(), summary.update_time.unwrap());
    assert!((updated.seconds, updated.nanos) >= (created.seconds, created.nanos));

    let orders = app
        .query
        .list_orders_by_user(pb::ListOrdersByUserRequest {
            user_id: user.user_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(orders.orders.len(), 1);
    assert_eq!(orders.orders[0].order_id, order.order_id);
    assert!(orders.next_page_token.is_empty());

    let processing = app
        .query
        .list_orders_by_status(pb::ListOrdersByStatusRequest {
            status: pb::OrderStatus::Processing as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        processing
            .orders
            .iter()
            .map(|o| o.order_id.as_str())
            .collect::<Vec<_>>(),
        [order.order_id.as_str()]
    );

    // 5. Every event was published once, with the documented envelope.
    let published = eventually("three published events", Duration::from_secs(10), || {
        let published = app.published();
        async move { (published.len() >= 3).then_some(published) }
    })
    .await;
    assert_eq!(published.len(), 3);
    let detail_types: Vec<_> = published
        .iter()
        .map(|p| p["detailType"].as_str().unwrap())
        .collect();
    assert_eq!(
        detail_types,
        ["UserCreated", "OrderCreated", "OrderStatusUpdated"]
    );
    let first = &published[0]["detail"];
    assert_eq!(first["aggregateId"], user.user_id.as_str());
    assert_eq!(first["aggregateType"], "User");
    assert_eq!(first["version"], "1");
    assert_eq!(first["schemaVersion"], 1);
    assert_eq!(first["requestId"], "cmd-001");
    assert_eq!(first["correlationId"], "corr-001");
    assert_eq!(first["eventId"], user.event_ids[0].as_str());
    assert_eq!(first["userCreated"]["email"], "john.doe@example.com");
    assert_eq!(published[2]["detail"]["correlationId"], "corr-from-header");
    assert_eq!(
        published[2]["detail"]["orderStatusUpdated"]["status"],
        "ORDER_STATUS_PROCESSING"
    );

    app.shutdown().await;
}

#[tokio::test]
async fn every_service_reports_health_and_serves_reflection() {
    let app = spawn_app().await;
    for (addr, service) in [
        (app.command_addr(), "dynabridge.v1.CommandService"),
        (app.query_addr(), "dynabridge.v1.QueryService"),
        (app.projector_health_addr(), "dynabridge.v1.Projector"),
    ] {
        let mut health = HealthClient::new(channel(addr).await);
        let status = eventually(service, Duration::from_secs(10), || {
            let mut health = health.clone();
            async move {
                let response = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .ok()?;
                (response.get_ref().status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
        let () = status;
        let overall = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(overall.status, ServingStatus::Serving as i32);
    }

    // Each lists what it answers: its own API (the projector has none),
    // health, reflection; never another binary's API.
    let apis = ["dynabridge.v1.CommandService", "dynabridge.v1.QueryService"];
    for (addr, service) in [
        (app.command_addr(), Some(apis[0])),
        (app.query_addr(), Some(apis[1])),
        (app.projector_health_addr(), None),
    ] {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel(addr).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        if let Some(service) = service {
            assert!(names.contains(&service), "{names:?}");
        }
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        assert!(
            names.contains(&"grpc.reflection.v1.ServerReflection"),
            "{names:?}"
        );
        for other in apis.iter().filter(|api| Some(**api) != service) {
            assert!(
                !names.contains(other),
                "{other} listed by {addr}: {names:?}"
            );
        }

        // The error details resolve, so that grpcurl decodes them.
        for symbol in [
            "google.rpc.ErrorInfo",
            "google.rpc.BadRequest",
            "google.rpc.RetryInfo",
        ] {
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
            };
            let mut stream = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = stream.message().await.unwrap().unwrap();
            let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response
            else {
                panic!("{symbol} not found by {addr}: {response:?}");
            };
            assert!(!files.file_descriptor_proto.is_empty(), "{symbol}");
        }
    }
    app.shutdown().await;
}
