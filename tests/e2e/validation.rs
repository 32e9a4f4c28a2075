//! Malformed input, for every RPC: `INVALID_ARGUMENT` naming the field in
//! `google.rpc.BadRequest`, and nothing written.

use dynabridge::pb;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app};
use crate::{create_order, create_user, item, new_request_id, reason_of, violated_fields};

fn mask(paths: &[&str]) -> Option<pbjson_types::FieldMask> {
    Some(pbjson_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

async fn written(app: &TestApp) -> (usize, usize, usize) {
    (
        app.count_items(&app.tables.event_store()).await,
        app.count_items(&app.tables.idempotency()).await,
        app.count_items(&app.tables.unique_emails()).await,
    )
}

fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let status = result.expect_err("malformed input must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = violated_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation of {field}, got {fields:?}"
    );
}

#[tokio::test]
async fn malformed_commands_are_refused_and_write_nothing() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "valid@example.com", "Valid").await;
    let order = create_order(&mut app, &user.user_id, vec![item("a", 1, 1)]).await;
    let before = written(&app).await;

    let create_user_cases: Vec<(pb::CreateUserRequest, &str)> = vec![
        (
            pb::CreateUserRequest {
                request_id: String::new(),
                email: "x@example.com".into(),
                name: "X".into(),
                ..Default::default()
            },
            "request_id",
        ),
        (
            pb::CreateUserRequest {
                request_id: "has space".into(),
                email: "x@example.com".into(),
                name: "X".into(),
                ..Default::default()
            },
            "request_id",
        ),
        (
            pb::CreateUserRequest {
                request_id: new_request_id(),
                email: "not-an-email".into(),
                name: "X".into(),
                ..Default::default()
            },
            "email",
        ),
        (
            pb::CreateUserRequest {
                request_id: new_request_id(),
                email: "x@example.com".into(),
                name: "   ".into(),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::CreateUserRequest {
                request_id: new_request_id(),
                email: "x@example.com".into(),
                name: "n".repeat(201),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::CreateUserRequest {
                request_id: new_request_id(),
                correlation_id: "bad id".into(),
                email: "x@example.com".into(),
                name: "X".into(),
            },
            "correlation_id",
        ),
    ];
    for (request, field) in create_user_cases {
        assert_invalid(app.command.create_user(request).await, field);
    }

    let update_profile_cases: Vec<(pb::UpdateUserProfileRequest, &str)> = vec![
        (
            pb::UpdateUserProfileRequest {
                request_id: new_request_id(),
                user_id: "nope".into(),
                name: "N".into(),
                update_mask: mask(&["name"]),
                ..Default::default()
            },
            "user_id",
        ),
        (
            pb::UpdateUserProfileRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                name: "N".into(),
                update_mask: None,
                ..Default::default()
            },
            "update_mask",
        ),
        (
            pb::UpdateUserProfileRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                update_mask: mask(&["password"]),
                ..Default::default()
            },
            "update_mask.paths",
        ),
        (
            pb::UpdateUserProfileRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                email: "bad".into(),
                update_mask: mask(&["email"]),
                ..Default::default()
            },
            "email",
        ),
        (
            pb::UpdateUserProfileRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                name: String::new(),
                update_mask: mask(&["name"]),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::UpdateUserProfileRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                name: "N".into(),
                update_mask: mask(&["name"]),
                expected_version: Some(-2),
                ..Default::default()
            },
            "expected_version",
        ),
    ];
    for (request, field) in update_profile_cases {
        assert_invalid(app.command.update_user_profile(request).await, field);
    }

    let too_many = vec![item("a", 1, 1); 101];
    let mixed = vec![
        item("a", 1, 1),
        pb::OrderItem {
            unit_price: Some(pb::Money {
                currency_code: "EUR".into(),
                amount_minor: 1,
            }),
            ..item("b", 1, 1)
        },
    ];
    let create_order_cases: Vec<(pb::CreateOrderRequest, &str)> = vec![
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: "nope".into(),
                items: vec![item("a", 1, 1)],
                ..Default::default()
            },
            "user_id",
        ),
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                items: vec![],
                ..Default::default()
            },
            "items",
        ),
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                items: too_many,
                ..Default::default()
            },
            "items",
        ),
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                items: vec![item("a", 0, 1)],
                ..Default::default()
            },
            "items[0].quantity",
        ),
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                items: vec![item("a", 1, 1), item("b", 1, -5)],
                ..Default::default()
            },
            "items[1].unit_price.amount_minor",
        ),
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                items: vec![item("", 1, 1)],
                ..Default::default()
            },
            "items[0].sku",
        ),
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                items: mixed,
                ..Default::default()
            },
            "items[1].unit_price.currency_code",
        ),
        (
            pb::CreateOrderRequest {
                request_id: new_request_id(),
                user_id: user.user_id.clone(),
                items: vec![item("a", 1, 1)],
                total: Some(pb::Money {
                    currency_code: "usd".into(),
                    amount_minor: 1,
                }),
                ..Default::default()
            },
            "total.currency_code",
        ),
    ];
    for (request, field) in create_order_cases {
        assert_invalid(app.command.create_order(request).await, field);
    }

    let status_cases: Vec<(pb::UpdateOrderStatusRequest, &str)> = vec![
        (
            pb::UpdateOrderStatusRequest {
                request_id: new_request_id(),
                order_id: "nope".into(),
                status: pb::OrderStatus::Processing as i32,
                ..Default::default()
            },
            "order_id",
        ),
        (
            pb::UpdateOrderStatusRequest {
                request_id: new_request_id(),
                order_id: order.order_id.clone(),
                status: 0,
                ..Default::default()
            },
            "status",
        ),
        (
            pb::UpdateOrderStatusRequest {
                request_id: new_request_id(),
                order_id: order.order_id.clone(),
                status: 42,
                ..Default::default()
            },
            "status",
        ),
        (
            pb::UpdateOrderStatusRequest {
                request_id: String::new(),
                order_id: order.order_id.clone(),
                status: pb::OrderStatus::Processing as i32,
                ..Default::default()
            },
            "request_id",
        ),
    ];
    for (request, field) in status_cases {
        assert_invalid(app.command.update_order_status(request).await, field);
    }

    assert_eq!(
        written(&app).await,
        before,
        "refused commands wrote nothing"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_queries_are_refused() {
    let mut app = spawn_app().await;
    assert_invalid(
        app.query
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: "x".into(),
                min_version: 0,
            })
            .await,
        "user_id",
    );
    assert_invalid(
        app.query
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: uuid::Uuid::new_v4().to_string(),
                min_version: -1,
            })
            .await,
        "min_version",
    );
    assert_invalid(
        app.query
            .get_user_by_email(pb::GetUserByEmailRequest {
                email: "nope".into(),
            })
            .await,
        "email",
    );
    assert_invalid(
        app.query
            .get_order(pb::GetOrderRequest {
                order_id: String::new(),
                min_version: 0,
            })
            .await,
        "order_id",
    );
    assert_invalid(
        app.query
            .list_orders_by_user(pb::ListOrdersByUserRequest {
                user_id: "x".into(),
                ..Default::default()
            })
            .await,
        "user_id",
    );
    assert_invalid(
        app.query
            .list_orders_by_user(pb::ListOrdersByUserRequest {
                user_id: uuid::Uuid::new_v4().to_string(),
                page_size: 101,
                ..Default::default()
            })
            .await,
        "page_size",
    );
    assert_invalid(
        app.query
            .list_orders_by_user(pb::ListOrdersByUserRequest {
                user_id: uuid::Uuid::new_v4().to_string(),
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        "page_token",
    );
    assert_invalid(
        app.query
            .list_orders_by_status(pb::ListOrdersByStatusRequest {
                status: 0,
                ..Default::default()
            })
            .await,
        "status",
    );
    assert_invalid(
        app.query
            .list_orders_by_status(pb::ListOrdersByStatusRequest {
                status: pb::OrderStatus::Created as i32,
                page_size: -1,
                ..Default::default()
            })
            .await,
        "page_size",
    );
    app.shutdown().await;
}

/// A codec that sends and receives bytes as they are, to send what no
/// generated client would.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(
    addr: std::net::SocketAddr,
    path: &'static str,
    request: tonic::Request<Vec<u8>>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(dynabridge_testkit::channel(addr).await);
    grpc.ready().await.unwrap();
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), Raw)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn bytes_that_do_not_decode_are_invalid_argument_on_every_rpc_and_write_nothing() {
    let app = spawn_app().await;
    let before = written(&app).await;
    let (command, query, admin) = (app.command_addr(), app.query_addr(), app.admin_addr());
    let rpcs = [
        (command, "/dynabridge.v1.CommandService/CreateUser"),
        (command, "/dynabridge.v1.CommandService/UpdateUserProfile"),
        (command, "/dynabridge.v1.CommandService/CreateOrder"),
        (command, "/dynabridge.v1.CommandService/UpdateOrderStatus"),
        (query, "/dynabridge.v1.QueryService/GetUserProfile"),
        (query, "/dynabridge.v1.QueryService/GetUserByEmail"),
        (query, "/dynabridge.v1.QueryService/GetOrder"),
        (query, "/dynabridge.v1.QueryService/ListOrdersByUser"),
        (query, "/dynabridge.v1.QueryService/ListOrdersByStatus"),
        (admin, "/dynabridge.v1.AdminService/GetAggregateHistory"),
        (admin, "/dynabridge.v1.AdminService/GetUserAsOf"),
        (admin, "/dynabridge.v1.AdminService/GetOrderAsOf"),
        (admin, "/dynabridge.v1.AdminService/ListEventsByType"),
    ];
    let bad: [&[u8]; 4] = [
        // Field 1, two bytes that are not UTF-8 (a string on all but
        // ListOrdersByStatus, whose field 1 is an enum: a wrong wire type).
        &[0x0a, 0x02, 0xff, 0xfe],
        // A length running past the end.
        &[0x0a, 0x0a, b'a'],
        // Field 0, which does not exist.
        &[0x00, 0x01],
        // A varint that never ends.
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    ];
    for (addr, path) in rpcs {
        for bytes in bad {
            let status = raw_call(addr, path, tonic::Request::new(bytes.to_vec()))
                .await
                .expect_err("does not decode");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{path} {bytes:02x?}: {status:?}"
            );
            assert_eq!(reason_of(&status), "MALFORMED_MESSAGE", "{path}");
        }
    }
    let status = raw_call(
        command,
        "/dynabridge.v1.CommandService/CreateUser",
        tonic::Request::new(vec![0x0a, 0x02, 0xff, 0xfe]),
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&status), ["request_id"]);
    assert_eq!(written(&app).await, before, "nothing written");
    app.shutdown().await;
}

#[tokio::test]
async fn a_message_or_metadata_over_the_limit_is_resource_exhausted() {
    let app = spawn_app().await;
    let before = written(&app).await;
    let mut client = dynabridge::pb::command_service_client::CommandServiceClient::new(
        dynabridge_testkit::channel(app.command_addr()).await,
    );

    let big = pb::CreateUserRequest {
        request_id: new_request_id(),
        email: "big@example.com".into(),
        name: "x".repeat(5 * 1024 * 1024),
        ..Default::default()
    };
    let status = client.create_user(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status), "MESSAGE_TOO_LARGE");

    let mut request = tonic::Request::new(pb::CreateUserRequest {
        request_id: new_request_id(),
        email: "meta@example.com".into(),
        name: "Meta".into(),
        ..Default::default()
    });
    let value = "v".repeat(20 * 1024);
    request
        .metadata_mut()
        .insert("x-large", value.parse().unwrap());
    let status = client.create_user(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status), "METADATA_TOO_LARGE");
    assert_eq!(written(&app).await, before, "nothing written");
    app.shutdown().await;
}
