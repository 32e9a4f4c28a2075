//! Products end to end: the catalogue's commands, the products read model
//! and its listings, and snapshots in a real store.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use dynabridge::pb;
use dynabridge::schema::snapshots;
use tonic::Code;

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::{new_request_id, reason_of, usd, violated_fields};

fn create_request(sku: &str, stock: i64, reorder_level: i64) -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        request_id: new_request_id(),
        sku: sku.into(),
        name: format!("Product {sku}"),
        unit_price: Some(usd(1_250)),
        initial_stock: stock,
        reorder_level,
        ..Default::default()
    }
}

pub async fn create_product(
    app: &mut TestApp,
    sku: &str,
    stock: i64,
    reorder_level: i64,
) -> pb::CreateProductResponse {
    app.command
        .create_product(create_request(sku, stock, reorder_level))
        .await
        .expect("create product")
        .into_inner()
}

async fn restock(app: &mut TestApp, sku: &str, quantity: i64) -> pb::RestockProductResponse {
    app.command
        .restock_product(pb::RestockProductRequest {
            request_id: new_request_id(),
            sku: sku.into(),
            quantity,
            ..Default::default()
        })
        .await
        .expect("restock")
        .into_inner()
}

async fn product_at(app: &mut TestApp, sku: &str, min_version: i64) -> pb::Product {
    app.query
        .get_product(pb::GetProductRequest {
            sku: sku.into(),
            min_version,
        })
        .await
        .expect("get product")
        .into_inner()
        .product
        .expect("a product")
}

#[tokio::test]
async fn a_product_is_created_restocked_repriced_and_read_back() {
    let mut app = spawn_app().await;
    let request = create_request("MUG-1", 5, 2);
    let created = app
        .command
        .create_product(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.version, 1);
    // A retry answers the same; another create of the sku is refused.
    let retried = app
        .command
        .create_product(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, created);
    let err = app
        .command
        .create_product(create_request("MUG-1", 1, 0))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason_of(&err).as_str()),
        (Code::AlreadyExists, "AGGREGATE_EXISTS")
    );

    let restocked = restock(&mut app, "MUG-1", 10).await;
    assert_eq!(
        (restocked.product_id.as_str(), restocked.version),
        (created.product_id.as_str(), 2)
    );
    let repriced = app
        .command
        .change_product_price(pb::ChangeProductPriceRequest {
            request_id: new_request_id(),
            sku: "MUG-1".into(),
            unit_price: Some(usd(999)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repriced.version, 3);
    let product = product_at(&mut app, "MUG-1", repriced.version).await;
    assert_eq!(
        (
            product.product_id.as_str(),
            product.stock,
            product.reserved,
            product.reorder_level,
            product.unit_price,
        ),
        (created.product_id.as_str(), 15, 0, 2, Some(usd(999)))
    );

    // Another currency names the field, and changes nothing.
    let err = app
        .command
        .change_product_price(pb::ChangeProductPriceRequest {
            request_id: new_request_id(),
            sku: "MUG-1".into(),
            unit_price: Some(pb::Money {
                currency_code: "EUR".into(),
                amount_minor: 999,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["unit_price.currency_code"]);

    // An unknown sku is NOT_FOUND, naming it.
    let err = app
        .command
        .restock_product(pb::RestockProductRequest {
            request_id: new_request_id(),
            sku: "NOPE".into(),
            quantity: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason_of(&err).as_str()),
        (Code::NotFound, "AGGREGATE_NOT_FOUND")
    );
    assert!(err.message().contains("product NOPE"), "{err:?}");

    // Every bad field at once, and nothing written.
    let before = app.stored_events().await.len();
    let err = app
        .command
        .create_product(pb::CreateProductRequest {
            request_id: new_request_id(),
            sku: "has space".into(),
            name: String::new(),
            unit_price: None,
            initial_stock: -1,
            reorder_level: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["sku", "name", "unit_price", "initial_stock"]
    );
    assert_eq!(app.stored_events().await.len(), before);

    // Published in order, each once.
    let types = eventually(
        "the product's events published",
        Duration::from_secs(10),
        || {
            let types: Vec<String> = app
                .published()
                .iter()
                .filter(|e| e["detail"]["aggregateId"] == created.product_id.as_str())
                .map(|e| e["detailType"].as_str().unwrap_or_default().to_owned())
                .collect();
            std::future::ready((types.len() >= 3).then_some(types))
        },
    )
    .await;
    assert_eq!(
        types,
        ["ProductCreated", "ProductRestocked", "ProductPriceChanged"]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_catalogue_pages_and_the_low_stock_listing_is_lowest_first() {
    let mut app = spawn_app().await;
    // Stock i, reorder level 5: SKU-0 to SKU-5 are low.
    let mut last = 0;
    for i in 0..12 {
        last = create_product(&mut app, &format!("SKU-{i}"), i, 5)
            .await
            .version;
    }
    product_at(&mut app, "SKU-11", last).await;

    let mut seen = HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .query
            .list_products(pb::ListProductsRequest {
                page_size: 5,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.products.len() <= 5);
        for product in page.products {
            assert!(seen.insert(product.sku), "a product listed twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((seen.len(), pages), (12, 3));

    let low = |app: &mut TestApp| {
        let mut query = app.query.clone();
        async move {
            let mut listed = Vec::new();
            let mut token = String::new();
            loop {
                let page = query
                    .list_low_stock_products(pb::ListLowStockProductsRequest {
                        page_size: 2,
                        page_token: token.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                listed.extend(page.products.into_iter().map(|p| (p.sku, p.stock)));
                if page.next_page_token.is_empty() {
                    return listed;
                }
                token = page.next_page_token;
            }
        }
    };
    let listed = low(&mut app).await;
    let expected: Vec<(String, i64)> = (0..=5).map(|i| (format!("SKU-{i}"), i)).collect();
    assert_eq!(listed, expected);

    // Restocked past its level, a product leaves the listing.
    let restocked = restock(&mut app, "SKU-0", 10).await;
    product_at(&mut app, "SKU-0", restocked.version).await;
    let query = app.query.clone();
    let listed = eventually(
        "SKU-0 off the low-stock listing",
        Duration::from_secs(5),
        || {
            let mut app_query = query.clone();
            async move {
                let page = app_query
                    .list_low_stock_products(pb::ListLowStockProductsRequest {
                        page_size: 100,
                        page_token: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let skus: Vec<String> = page.products.into_iter().map(|p| p.sku).collect();
                (!skus.contains(&"SKU-0".to_owned())).then_some(skus)
            }
        },
    )
    .await;
    assert_eq!(listed.first().map(String::as_str), Some("SKU-1"));

    // A token of the catalogue is not one of the low-stock listing.
    let catalogue = app
        .query
        .list_products(pb::ListProductsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let err = app
        .query
        .list_low_stock_products(pb::ListLowStockProductsRequest {
            page_size: 1,
            page_token: catalogue.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["page_token"]);
    app.shutdown().await;
}

async fn snapshot_version(app: &TestApp, product_id: &str) -> Option<i64> {
    let item = app
        .dynamo
        .get_item()
        .table_name(app.tables.snapshots())
        .key(
            snapshots::AGGREGATE_ID,
            AttributeValue::S(product_id.to_owned()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    item.get(snapshots::VERSION)?.as_n().ok()?.parse().ok()
}

#[tokio::test]
async fn a_busy_product_is_snapshotted_and_a_bad_snapshot_is_never_trusted() {
    let mut app = spawn_app().await;
    let created = create_product(&mut app, "BUSY-1", 0, 0).await;
    let mut version = created.version;
    for _ in 0..149 {
        version = restock(&mut app, "BUSY-1", 1).await.version;
    }
    assert_eq!(version, 150);
    let id = created.product_id.clone();
    let taken = eventually("a snapshot at version 100", Duration::from_secs(10), || {
        let app = &app;
        let id = id.clone();
        async move { snapshot_version(app, &id).await.filter(|v| *v >= 100) }
    })
    .await;
    assert!((100..=150).contains(&taken), "{taken}");

    // A snapshot that lies (a stock of 1,000,000 at version 150, in a
    // shape this build does not write) is ignored: the next restock is
    // decided on the events.
    app.dynamo
        .update_item()
        .table_name(app.tables.snapshots())
        .key(snapshots::AGGREGATE_ID, AttributeValue::S(id.clone()))
        .update_expression("SET #s = :s, #state = :state")
        .expression_attribute_names("#s", snapshots::SCHEMA_VERSION)
        .expression_attribute_names("#state", snapshots::STATE)
        .expression_attribute_values(":s", AttributeValue::N("999".into()))
        .expression_attribute_values(":state", AttributeValue::S("{\"stock\":1000000}".into()))
        .send()
        .await
        .unwrap();
    // A new command service: nothing cached, the product is loaded.
    app.restart_command_service().await;
    let next = restock(&mut app, "BUSY-1", 1).await;
    assert_eq!(next.version, 151);
    let product = product_at(&mut app, "BUSY-1", next.version).await;
    assert_eq!(product.stock, 150);
    // ... and replaced by one of the state the events give.
    eventually(
        "the lying snapshot replaced",
        Duration::from_secs(10),
        || {
            let app = &app;
            let id = id.clone();
            async move {
                let item = app
                    .dynamo
                    .get_item()
                    .table_name(app.tables.snapshots())
                    .key(snapshots::AGGREGATE_ID, AttributeValue::S(id))
                    .consistent_read(true)
                    .send()
                    .await
                    .unwrap()
                    .item?;
                let state = item.get(snapshots::STATE)?.as_s().ok()?.clone();
                state.contains("\"stock\":149").then_some(())
            }
        },
    )
    .await;
    app.shutdown().await;
}
