//! Purchases end to end (seed 004): asked for and answered at once, then
//! taken through their steps by the process manager: stock reserved on
//! every product in one transaction and the order created, or the purchase
//! rejected naming the sku and what is left; a cancelled order's stock
//! released.

use std::time::Duration;

use dynabridge::pb;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app};
use crate::products::create_product;
use crate::{create_user, new_request_id, reason_of, violated_fields};

pub(crate) fn item(sku: &str, quantity: i64) -> pb::PurchaseItem {
    pb::PurchaseItem {
        sku: sku.into(),
        quantity,
    }
}

pub(crate) async fn purchase(
    app: &mut TestApp,
    user_id: &str,
    items: Vec<pb::PurchaseItem>,
) -> String {
    app.command
        .purchase_products(pb::PurchaseProductsRequest {
            request_id: new_request_id(),
            user_id: user_id.into(),
            items,
            ..Default::default()
        })
        .await
        .expect("purchase")
        .into_inner()
        .purchase_id
}

/// The purchase once the process has decided it, asked for right after
/// the purchase, as a client would: waiting for the outcome waits for the
/// purchase to show first, and a wait that ends with it still PENDING (the
/// server's cap, 5 s) is asked again, up to a deadline (moto under the
/// whole suite's load is slow).
pub(crate) async fn outcome(app: &mut TestApp, purchase_id: &str) -> pb::Purchase {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut request = tonic::Request::new(pb::GetPurchaseRequest {
            purchase_id: purchase_id.into(),
            min_version: 0,
            wait_for_outcome: true,
        });
        request.set_timeout(Duration::from_secs(10));
        let purchase = app
            .query
            .get_purchase(request)
            .await
            .expect("get purchase")
            .into_inner()
            .purchase
            .expect("a purchase");
        if purchase.status != pb::PurchaseStatus::Pending as i32 {
            return purchase;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never decided: {purchase:?}"
        );
    }
}

/// A product's (stock, reserved) at `min_version` or later; a wait that
/// runs out (the server's cap) is asked again, up to a deadline.
async fn stock(app: &mut TestApp, sku: &str, min_version: i64) -> (i64, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match app
            .query
            .get_product(pb::GetProductRequest {
                sku: sku.into(),
                min_version,
            })
            .await
        {
            Ok(answer) => {
                let product = answer.into_inner().product.expect("a product");
                return (product.stock, product.reserved);
            }
            Err(status)
                if status.code() == Code::DeadlineExceeded
                    && tokio::time::Instant::now() < deadline => {}
            Err(status) => panic!("get product {sku}: {status:?}"),
        }
    }
}

/// A purchase at `min_version` or later, as `stock` waits.
async fn purchase_at(app: &mut TestApp, purchase_id: &str, min_version: i64) -> pb::Purchase {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match app
            .query
            .get_purchase(pb::GetPurchaseRequest {
                purchase_id: purchase_id.into(),
                min_version,
                wait_for_outcome: false,
            })
            .await
        {
            Ok(answer) => return answer.into_inner().purchase.expect("a purchase"),
            Err(status)
                if status.code() == Code::DeadlineExceeded
                    && tokio::time::Instant::now() < deadline => {}
            Err(status) => panic!("get purchase {purchase_id}: {status:?}"),
        }
    }
}

#[tokio::test]
async fn a_purchase_is_pending_until_the_process_completes_it_with_its_order() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "buyer@example.com", "Buyer").await;
    create_product(&mut app, "MUG", 5, 0).await;
    create_product(&mut app, "CUP", 3, 0).await;
    // Without the process manager, the purchase waits in the stream.
    app.stop_process_manager().await;
    let request = pb::PurchaseProductsRequest {
        request_id: new_request_id(),
        user_id: user.user_id.clone(),
        items: vec![item("MUG", 2), item("CUP", 3)],
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
    let retried = app
        .command
        .purchase_products(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, asked, "a retry is the same purchase");
    let pending = app
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
    assert_eq!(pending.status, pb::PurchaseStatus::Pending as i32);
    assert_eq!(pending.items, [item("MUG", 2), item("CUP", 3)]);
    // Waiting for an outcome nobody decides ends at the deadline, pending.
    let mut waiting = tonic::Request::new(pb::GetPurchaseRequest {
        purchase_id: asked.purchase_id.clone(),
        min_version: 0,
        wait_for_outcome: true,
    });
    waiting.set_timeout(Duration::from_millis(300));
    let still = app.query.get_purchase(waiting).await.unwrap().into_inner();
    assert_eq!(
        still.purchase.unwrap().status,
        pb::PurchaseStatus::Pending as i32
    );
    assert_eq!(stock(&mut app, "MUG", 1).await, (5, 0));

    app.resume_process_manager().await;
    let done = outcome(&mut app, &asked.purchase_id).await;
    assert_eq!(
        done.status,
        pb::PurchaseStatus::Completed as i32,
        "{done:?}"
    );
    assert_eq!(done.total, Some(crate::usd(2 * 1_250 + 3 * 1_250)));
    // Its order, placed by the purchase, at the prices reserved.
    let order = app
        .query
        .get_order(pb::GetOrderRequest {
            order_id: done.order_id.clone(),
            min_version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.purchase_id, asked.purchase_id);
    assert_eq!(order.user_id, user.user_id);
    assert_eq!(order.items.len(), 2);
    assert_eq!(stock(&mut app, "MUG", 2).await, (3, 2));
    assert_eq!(stock(&mut app, "CUP", 2).await, (0, 3));
    app.shutdown().await;
}

#[tokio::test]
async fn a_purchase_short_of_one_item_holds_none_and_is_rejected_naming_it() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "short@example.com", "Short").await;
    create_product(&mut app, "MUG", 5, 0).await;
    create_product(&mut app, "CUP", 1, 0).await;
    let short = purchase(
        &mut app,
        &user.user_id,
        vec![item("MUG", 2), item("CUP", 2)],
    )
    .await;
    let rejected = outcome(&mut app, &short).await;
    assert_eq!(rejected.status, pb::PurchaseStatus::Rejected as i32);
    let rejection = rejected.rejection.unwrap();
    assert_eq!(
        (
            rejection.reason,
            rejection.sku.as_str(),
            rejection.quantity_requested,
            rejection.quantity_left
        ),
        (pb::PurchaseRejectionReason::OutOfStock as i32, "CUP", 2, 1)
    );
    assert_eq!(rejected.order_id, "");
    // Nothing held: both products as they were, at version 1.
    assert_eq!(stock(&mut app, "MUG", 1).await, (5, 0));
    assert_eq!(stock(&mut app, "CUP", 1).await, (1, 0));

    let unknown = purchase(&mut app, &user.user_id, vec![item("NOPE", 1)]).await;
    let rejected = outcome(&mut app, &unknown).await;
    assert_eq!(
        rejected.rejection.unwrap().reason,
        pb::PurchaseRejectionReason::ProductNotFound as i32
    );
    app.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_purchased_order_releases_its_stock() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "cancel@example.com", "Cancel").await;
    create_product(&mut app, "LAMP", 4, 0).await;
    let bought = purchase(&mut app, &user.user_id, vec![item("LAMP", 3)]).await;
    let done = outcome(&mut app, &bought).await;
    assert_eq!(done.status, pb::PurchaseStatus::Completed as i32);
    assert_eq!(stock(&mut app, "LAMP", 2).await, (1, 3));
    app.command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: new_request_id(),
            order_id: done.order_id.clone(),
            status: pb::OrderStatus::Cancelled as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    // Released in one transaction with the purchase's cancellation.
    assert_eq!(stock(&mut app, "LAMP", 3).await, (4, 0));
    let cancelled = purchase_at(&mut app, &bought, done.version + 1).await;
    assert_eq!(cancelled.status, pb::PurchaseStatus::Cancelled as i32);
    // An order placed without a purchase releases nothing when cancelled.
    let order =
        crate::create_order(&mut app, &user.user_id, vec![crate::item("LAMP", 1, 10)]).await;
    app.command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: new_request_id(),
            order_id: order.order_id,
            status: pb::OrderStatus::Cancelled as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = purchase(&mut app, &user.user_id, vec![item("LAMP", 4)]).await;
    assert_eq!(
        outcome(&mut app, &again).await.status,
        pb::PurchaseStatus::Completed as i32,
        "exactly the 4 released are there to buy"
    );
    assert_eq!(stock(&mut app, "LAMP", 4).await, (0, 4));
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
