//! The read side: read-your-writes with `min_version`, and pagination.

use std::collections::HashSet;
use std::time::Duration;

use dynabridge::pb;
use tonic::Code;

use crate::helpers::{eventually, spawn_app};
use crate::{create_order, create_user, item, new_request_id, violated_fields};

#[tokio::test]
async fn min_version_reads_your_own_writes() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "ryw@example.com", "Before").await;
    let updated = app
        .command
        .update_user_profile(pb::UpdateUserProfileRequest {
            request_id: new_request_id(),
            user_id: user.user_id.clone(),
            name: "After".into(),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Straight after the command, with no sleep: the read waits for the
    // projection to reach the version the command returned.
    let profile = app
        .query
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: user.user_id.clone(),
            min_version: updated.version,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((profile.name.as_str(), profile.version), ("After", 2));

    // A version that never comes ends at the call's deadline.
    let mut request = tonic::Request::new(pb::GetUserProfileRequest {
        user_id: user.user_id.clone(),
        min_version: 99,
    });
    request.set_timeout(Duration::from_millis(300));
    let err = app.query.get_user_profile(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");

    // Without min_version, a missing row is NOT_FOUND at once.
    let err = app
        .query
        .get_order(pb::GetOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            min_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn orders_page_newest_first_and_tampered_tokens_are_refused() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "pages@example.com", "Pages").await;
    let other = create_user(&mut app, "other@example.com", "Other").await;
    let mut created = Vec::new();
    for i in 0..45 {
        created.push(
            create_order(
                &mut app,
                &user.user_id,
                vec![item(&format!("sku-{i}"), 1, i)],
            )
            .await
            .order_id,
        );
    }
    create_order(&mut app, &other.user_id, vec![item("theirs", 1, 1)]).await;
    // Wait for the last order to be projected.
    app.query
        .get_order(pb::GetOrderRequest {
            order_id: created.last().unwrap().clone(),
            min_version: 1,
        })
        .await
        .unwrap();

    let pages = eventually("all 45 orders listed", Duration::from_secs(10), || {
        let mut query = app.query.clone();
        let user_id = user.user_id.clone();
        async move {
            let mut pages = Vec::new();
            let mut token = String::new();
            loop {
                let page = query
                    .list_orders_by_user(pb::ListOrdersByUserRequest {
                        user_id: user_id.clone(),
                        page_size: 20,
                        page_token: token.clone(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                token = page.next_page_token.clone();
                pages.push(page);
                if token.is_empty() {
                    break;
                }
            }
            let total: usize = pages.iter().map(|p| p.orders.len()).sum();
            (total == 45).then_some(pages)
        }
    })
    .await;
    assert!(pages.len() >= 3, "45 orders in pages of 20 take 3 pages");
    assert!(pages.iter().all(|p| p.orders.len() <= 20));
    let listed: Vec<_> = pages.iter().flat_map(|p| p.orders.iter()).collect();
    let ids: HashSet<_> = listed.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(
        ids,
        created.iter().cloned().collect::<HashSet<_>>(),
        "every order once, no one else's"
    );
    let times: Vec<_> = listed.iter().map(|o| o.create_time.unwrap()).collect();
    assert!(
        times
            .windows(2)
            .all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)),
        "newest first"
    );

    // A token that was tampered with, or used for another query, is refused.
    let token = pages[0].next_page_token.clone();
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    for (user_id, page_token) in [
        (user.user_id.clone(), String::from_utf8(tampered).unwrap()),
        (other.user_id.clone(), token),
    ] {
        let err = app
            .query
            .list_orders_by_user(pb::ListOrdersByUserRequest {
                user_id,
                page_size: 20,
                page_token,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["page_token"]);
    }
    app.shutdown().await;
}
