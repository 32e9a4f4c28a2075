//! End-to-end tests: the four services over real gRPC on loopback, against
//! a real store (the in-process embedded one, or `DYNABRIDGE_TEST_ENDPOINT`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod aggregate_cache;
mod commands;
mod eventbridge;
mod helpers;
mod parking;
mod products;
mod purchases;
mod queries;
mod rebuild;
mod replay;
mod route_chain;
mod schema_versions;
mod validation;
mod walkthrough;

use dynabridge::pb;

pub fn usd(amount_minor: i64) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        amount_minor,
    }
}

pub fn item(sku: &str, quantity: i64, unit_price_minor: i64) -> pb::OrderItem {
    pb::OrderItem {
        sku: sku.into(),
        quantity,
        unit_price: Some(usd(unit_price_minor)),
    }
}

pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn create_user(
    app: &mut helpers::TestApp,
    email: &str,
    name: &str,
) -> pb::CreateUserResponse {
    app.command
        .create_user(pb::CreateUserRequest {
            request_id: new_request_id(),
            email: email.into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("create user")
        .into_inner()
}

pub async fn create_order(
    app: &mut helpers::TestApp,
    user_id: &str,
    items: Vec<pb::OrderItem>,
) -> pb::CreateOrderResponse {
    app.command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: user_id.into(),
            items,
            ..Default::default()
        })
        .await
        .expect("create order")
        .into_inner()
}

/// The fields named by the `google.rpc.BadRequest` details of `status`.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The `ErrorInfo.reason` of `status`.
pub fn reason_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}
