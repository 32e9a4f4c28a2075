//! Schema evolution end to end: an order stored in version 1's shape (as
//! the build before shipping addresses wrote it) is projected, commanded,
//! shown and published in the current shape (version 3); a new order is
//! stored and published as version 3 with its address; every published entry
//! validates against its version's JSON Schema.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use dynabridge::event_schemas;
use dynabridge::pb;
use dynabridge::schema::event_store;
use dynabridge_domain::{Event, Money, OrderId, OrderLine, Quantity, Sku, StoredEvent, UserId};
use serde_json::Value;
use tonic::Code;

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::{create_user, item, new_request_id, violated_fields};

fn address() -> pb::ShippingAddress {
    pb::ShippingAddress {
        recipient: "Ann Smith".into(),
        line1: "Hauptstraße 1".into(),
        line2: String::new(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country_code: "DE".into(),
    }
}

/// Every published entry's detail, checked against the schema its type and
/// version name.
fn assert_published_entries_match_their_schemas(app: &TestApp) -> Vec<Value> {
    let schemas = event_schemas::all();
    let details: Vec<Value> = app
        .published()
        .into_iter()
        .map(|entry| entry["detail"].clone())
        .collect();
    for detail in &details {
        let name = format!(
            "{}.v{}",
            detail["eventType"].as_str().unwrap(),
            detail["schemaVersion"]
        );
        let validator = jsonschema::draft4::new(&schemas[&name]).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(detail)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{detail} against {name}: {errors:?}");
    }
    details
}

async fn stored_schema_version(app: &TestApp, aggregate_id: &str, version: i64) -> String {
    let item = app
        .dynamo
        .get_item()
        .table_name(app.tables.event_store())
        .key(
            event_store::AGGREGATE_ID,
            AttributeValue::S(aggregate_id.into()),
        )
        .key(event_store::VERSION, AttributeValue::N(version.to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the event is stored");
    item[event_store::SCHEMA_VERSION].as_n().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_stored_as_version_1_is_read_everywhere_as_version_2() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "v1@example.com", "Old Timer").await;
    let order_id = OrderId::new_random();
    let usd = |n| Money::parse("USD", n).unwrap();
    let stored = StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version: 1,
        occurred_at: Utc::now(),
        request_id: "placed-before-addresses".into(),
        correlation_id: "schema-versions".into(),
        trace_parent: None,
        event: Event::OrderCreated {
            order_id,
            user_id: UserId::parse("user_id", &user.user_id).unwrap(),
            items: vec![OrderLine {
                sku: Sku::parse("lamp").unwrap(),
                quantity: Quantity::parse(2).unwrap(),
                unit_price: usd(1_500),
            }],
            total: usd(3_000),
            shipping_address: None,
            purchase_id: None,
        },
    };
    // Version 1's item: the same attributes, its payload without the
    // address field (none is set), labelled 1. The golden fixtures hold the
    // exact form; this one has fresh ids.
    let mut item = dynabridge_event_store::codec::event_to_item(&stored);
    item.insert(
        event_store::SCHEMA_VERSION.into(),
        AttributeValue::N("1".into()),
    );
    assert!(
        !item[event_store::EVENT_DATA]
            .as_s()
            .unwrap()
            .contains("shippingAddress")
    );
    app.dynamo
        .put_item()
        .table_name(app.tables.event_store())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();

    // The projector reads it.
    let order = app
        .query
        .get_order(pb::GetOrderRequest {
            order_id: order_id.to_string(),
            min_version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.total.unwrap().amount_minor, 3_000);
    assert_eq!(order.shipping_address, None);

    // The command side folds it.
    let moved = app
        .command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: new_request_id(),
            order_id: order_id.to_string(),
            expected_version: Some(1),
            status: pb::OrderStatus::Processing as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.version, 2);

    // The admin service shows it in the current shape; the store keeps it
    // as it was written.
    let history = app
        .admin
        .get_aggregate_history(pb::GetAggregateHistoryRequest {
            aggregate_id: order_id.to_string(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].schema_version, 3, "shown in the current shape");
    assert_eq!(
        stored_schema_version(&app, &order_id.to_string(), 1).await,
        "1"
    );

    // Published upcast: version 3, no address, valid against its schema.
    let details = eventually(
        "both order events published",
        Duration::from_secs(10),
        || {
            let details = assert_published_entries_match_their_schemas(&app);
            let order_id = order_id.to_string();
            async move {
                let ours: Vec<Value> = details
                    .into_iter()
                    .filter(|d| d["aggregateId"] == order_id.as_str())
                    .collect();
                (ours.len() == 2).then_some(ours)
            }
        },
    )
    .await;
    let created = details
        .iter()
        .find(|d| d["eventType"] == "OrderCreated")
        .unwrap();
    assert_eq!(created["schemaVersion"], 3);
    assert!(created["orderCreated"].get("shippingAddress").is_none());
    assert!(created["orderCreated"].get("purchaseId").is_none());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_is_stored_and_published_as_version_2_with_its_address() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "v2@example.com", "New Comer").await;

    // A bad address is refused, naming the field, and writes nothing.
    let before = app.stored_events().await.len();
    let err = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: user.user_id.clone(),
            items: vec![item("lamp", 1, 1_500)],
            shipping_address: Some(pb::ShippingAddress {
                country_code: "Germany".into(),
                city: String::new(),
                ..address()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        ["shipping_address.city", "shipping_address.country_code"]
    );
    assert_eq!(app.stored_events().await.len(), before);

    let created = app
        .command
        .create_order(pb::CreateOrderRequest {
            request_id: new_request_id(),
            user_id: user.user_id.clone(),
            items: vec![item("lamp", 1, 1_500)],
            shipping_address: Some(address()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored_schema_version(&app, &created.order_id, 1).await, "3");
    let order = app
        .query
        .get_order(pb::GetOrderRequest {
            order_id: created.order_id.clone(),
            min_version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.shipping_address, Some(address()));

    let detail = eventually("the order published", Duration::from_secs(10), || {
        let details = assert_published_entries_match_their_schemas(&app);
        let order_id = created.order_id.clone();
        async move {
            details
                .into_iter()
                .find(|d| d["aggregateId"] == order_id.as_str())
        }
    })
    .await;
    assert_eq!(detail["schemaVersion"], 3);
    assert_eq!(
        detail["orderCreated"]["shippingAddress"]["countryCode"],
        "DE"
    );
    app.shutdown().await;
}
