//! Purchases end to end, as far as the command and query sides take them:
//! a purchase asked for is answered at once and pending; the user must
//! exist; bad items are named; a retry is the same purchase.

use std::time::Duration;

use dynabridge::pb;
use tonic::Code;

use crate::helpers::spawn_app;
use crate::products::create_product;
use crate::{create_user, new_request_id, reason_of, violated_fields};

fn item(sku: &str, quantity: i64) -> pb::PurchaseItem {
    pb::PurchaseItem {
        sku: sku.into(),
        quantity,
    }
}

#[tokio::test]
async fn a_purchase_is_answered_at_once_and_pending_until_the_process_decides_it() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "buyer@example.com", "Buyer").await;
    create_product(&mut app, "MUG", 5, 0).await;
    let request = pb::PurchaseProductsRequest {
        request_id: new_request_id(),
        user_id: user.user_id.clone(),
        items: vec![item("MUG", 2)],
        ..Default::default()
    };
    let before = app.stored_events().await.len();
    let asked = app
        .command
        .purchase_products(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((asked.version, asked.event_ids.len()), (1, 1));
    assert_eq!(
        app.stored_events().await.len(),
        before + 1,
        "the request alone"
    );
    // A retry is the same purchase.
    let retried = app
        .command
        .purchase_products(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, asked);

    let purchase = app
        .query
        .get_purchase(pb::GetPurchaseRequest {
            purchase_id: asked.purchase_id.clone(),
            min_version: asked.version,
            wait_for_outcome: false,
        })
        .await
        .unwrap()
        .into_inner()
        .purchase
        .unwrap();
    assert_eq!(purchase.status, pb::PurchaseStatus::Pending as i32);
    assert_eq!(purchase.user_id, user.user_id);
    assert_eq!(purchase.items, [item("MUG", 2)]);
    assert_eq!(purchase.order_id, "");

    // Waiting for an outcome nobody decides ends at the deadline, pending.
    let mut waiting = tonic::Request::new(pb::GetPurchaseRequest {
        purchase_id: asked.purchase_id.clone(),
        min_version: 0,
        wait_for_outcome: true,
    });
    waiting.set_timeout(Duration::from_millis(400));
    let still = app.query.get_purchase(waiting).await.unwrap().into_inner();
    assert_eq!(
        still.purchase.unwrap().status,
        pb::PurchaseStatus::Pending as i32
    );

    // The product's stock is untouched until the process reserves it.
    let product = app
        .query
        .get_product(pb::GetProductRequest {
            sku: "MUG".into(),
            min_version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!((product.stock, product.reserved), (5, 0));
    app.shutdown().await;
}

#[tokio::test]
async fn a_purchase_for_no_user_or_with_bad_items_is_refused_and_writes_nothing() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "buyer2@example.com", "Buyer").await;
    let before = app.stored_events().await.len();
    let err = app
        .command
        .purchase_products(pb::PurchaseProductsRequest {
            request_id: new_request_id(),
            user_id: uuid::Uuid::new_v4().to_string(),
            items: vec![item("MUG", 1)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason_of(&err).as_str()),
        (Code::NotFound, "AGGREGATE_NOT_FOUND")
    );
    let err = app
        .command
        .purchase_products(pb::PurchaseProductsRequest {
            request_id: new_request_id(),
            user_id: user.user_id.clone(),
            items: vec![item("MUG", 1), item("MUG", 0), item("", 1)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["items[1].quantity", "items[2].sku"]);
    assert_eq!(app.stored_events().await.len(), before);
    let err = app
        .query
        .get_purchase(pb::GetPurchaseRequest {
            purchase_id: uuid::Uuid::new_v4().to_string(),
            min_version: 0,
            wait_for_outcome: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.shutdown().await;
}
