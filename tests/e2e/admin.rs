//! The admin service over real gRPC: an aggregate's history, its state at a
//! point, the events of a type over a time range, and the migration that
//! gives events appended before the event-type buckets their bucket.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use dynabridge::convert::{parse_time, timestamp_to_pb};
use dynabridge::pb;
use dynabridge::pb::admin_service_client::AdminServiceClient;
use dynabridge::schema::{admin, event_store};
use dynabridge_domain::{Email, Event, StoredEvent, UserId, UserName};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::{create_order, create_user, item, new_request_id, reason_of, violated_fields};

async fn rename(app: &mut TestApp, user_id: &str, name: &str) -> pb::UpdateUserProfileResponse {
    app.command
        .update_user_profile(pb::UpdateUserProfileRequest {
            request_id: new_request_id(),
            user_id: user_id.into(),
            name: name.into(),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Every page of an aggregate's history, `page_size` at a time.
async fn history(
    app: &mut TestApp,
    aggregate_id: &str,
    page_size: i32,
) -> Vec<Vec<pb::EventEnvelope>> {
    let (mut pages, mut token) = (Vec::new(), String::new());
    loop {
        let page = app
            .admin
            .get_aggregate_history(pb::GetAggregateHistoryRequest {
                aggregate_id: aggregate_id.into(),
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.events);
        token = page.next_page_token;
        if token.is_empty() {
            return pages;
        }
    }
}

/// Every event of `event_type` in `[start, end)`, `page_size` at a time,
/// once the index lists them all (it is eventually consistent).
async fn listed(
    app: &mut TestApp,
    event_type: &str,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    page_size: i32,
) -> Vec<pb::EventEnvelope> {
    let (mut events, mut token) = (Vec::new(), String::new());
    loop {
        let page = app
            .admin
            .list_events_by_type(pb::ListEventsByTypeRequest {
                event_type: event_type.into(),
                start_time: start.map(timestamp_to_pb),
                end_time: end.map(timestamp_to_pb),
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        let most = if page_size == 0 { 100 } else { page_size };
        assert!(page.events.len() <= usize::try_from(most).unwrap());
        events.extend(page.events);
        token = page.next_page_token;
        if token.is_empty() {
            return events;
        }
    }
}

fn time_of(envelope: &pb::EventEnvelope) -> DateTime<Utc> {
    dynabridge::convert::timestamp_from_pb(envelope.occurred_at.as_ref().unwrap()).unwrap()
}

fn as_of_version(version: i64) -> Option<pb::AsOf> {
    Some(pb::AsOf {
        point: Some(pb::as_of::Point::Version(version)),
    })
}

fn as_of_time(at: DateTime<Utc>) -> Option<pb::AsOf> {
    Some(pb::AsOf {
        point: Some(pb::as_of::Point::Time(timestamp_to_pb(at))),
    })
}

#[tokio::test]
async fn an_aggregates_history_comes_back_in_pages_as_its_commands_appended_it() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "history@example.com", "H0").await;
    let mut event_ids = user.event_ids.clone();
    for n in 1..=4 {
        event_ids.extend(
            rename(&mut app, &user.user_id, &format!("H{n}"))
                .await
                .event_ids,
        );
    }
    let pages = history(&mut app, &user.user_id, 2).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "five events, two a page"
    );
    let events: Vec<pb::EventEnvelope> = pages.into_iter().flatten().collect();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>(),
        event_ids
    );
    assert!(matches!(
        &events[4].payload,
        Some(pb::event_envelope::Payload::UserProfileUpdated(u)) if u.name.as_deref() == Some("H4")
    ));
    // One page of the default size holds them all.
    assert_eq!(history(&mut app, &user.user_id, 0).await.len(), 1);

    // A page token is the query's own.
    let other = create_user(&mut app, "other@example.com", "O").await;
    let first = app
        .admin
        .get_aggregate_history(pb::GetAggregateHistoryRequest {
            aggregate_id: user.user_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = app
        .admin
        .get_aggregate_history(pb::GetAggregateHistoryRequest {
            aggregate_id: other.user_id.clone(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_token"]);

    let status = app
        .admin
        .get_aggregate_history(pb::GetAggregateHistoryRequest {
            aggregate_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason_of(&status), "AGGREGATE_NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn a_user_and_an_order_as_of_a_version_or_a_time_are_folded_from_their_events() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "asof@example.com", "Before").await;
    let renamed = rename(&mut app, &user.user_id, "After").await;
    let events: Vec<pb::EventEnvelope> = history(&mut app, &user.user_id, 0)
        .await
        .into_iter()
        .flatten()
        .collect();
    let (created_at, renamed_at) = (time_of(&events[0]), time_of(&events[1]));

    let at = |user: pb::GetUserAsOfResponse| {
        let user = user.user.unwrap();
        (user.name, user.version)
    };
    let request = |as_of| pb::GetUserAsOfRequest {
        user_id: user.user_id.clone(),
        as_of,
    };
    let by_version = app
        .admin
        .get_user_as_of(request(as_of_version(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at(by_version), ("Before".to_owned(), 1));
    let by_time = app
        .admin
        .get_user_as_of(request(as_of_time(created_at)))
        .await
        .unwrap()
        .into_inner();
    if renamed_at > created_at {
        assert_eq!(at(by_time), ("Before".to_owned(), 1));
    }
    let now = app
        .admin
        .get_user_as_of(request(as_of_time(Utc::now())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at(now), ("After".to_owned(), renamed.version));

    // Before it existed: not found, saying when it was created.
    let status = app
        .admin
        .get_user_as_of(request(as_of_time(
            created_at - chrono::TimeDelta::seconds(1),
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason_of(&status), "AGGREGATE_NOT_FOUND");
    assert!(status.message().contains("did not exist yet"), "{status:?}");
    // A version it never reached is the caller's mistake.
    let status = app
        .admin
        .get_user_as_of(request(as_of_version(3)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["as_of.version"]);
    assert!(status.message().contains("version 2"), "{status:?}");

    // An order, and an id of the wrong kind.
    let order = create_order(&mut app, &user.user_id, vec![item("sku-1", 2, 150)]).await;
    let shipped = app
        .command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: new_request_id(),
            order_id: order.order_id.clone(),
            status: pb::OrderStatus::Processing as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let order_at = |version| pb::GetOrderAsOfRequest {
        order_id: order.order_id.clone(),
        as_of: as_of_version(version),
    };
    let first = app
        .admin
        .get_order_as_of(order_at(1))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(first.status, pb::OrderStatus::Created as i32);
    assert_eq!(first.total.unwrap().amount_minor, 300);
    let last = app
        .admin
        .get_order_as_of(order_at(shipped.version))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(last.status, pb::OrderStatus::Processing as i32);
    let status = app
        .admin
        .get_order_as_of(pb::GetOrderAsOfRequest {
            order_id: user.user_id.clone(),
            as_of: as_of_version(1),
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&status), "AGGREGATE_NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn events_of_a_type_are_listed_oldest_first_across_every_bucket_and_within_a_range() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "lister@example.com", "L").await;
    let mut orders = BTreeSet::new();
    for n in 0..40 {
        let order = create_order(
            &mut app,
            &user.user_id,
            vec![item(&format!("sku-{n}"), 1, 10)],
        )
        .await;
        orders.insert(order.order_id);
    }
    let all = eventually("every order listed", Duration::from_secs(10), || {
        let mut app_admin = app.admin.clone();
        let orders = orders.clone();
        async move {
            let mut events = Vec::new();
            let mut token = String::new();
            loop {
                let page = app_admin
                    .list_events_by_type(pb::ListEventsByTypeRequest {
                        event_type: "OrderCreated".into(),
                        page_size: 7,
                        page_token: token,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                events.extend(page.events);
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            (events.len() == orders.len()).then_some(events)
        }
    })
    .await;
    let ids: BTreeSet<String> = all.iter().map(|e| e.aggregate_id.clone()).collect();
    assert_eq!(ids, orders, "every order once");
    let times: Vec<DateTime<Utc>> = all.iter().map(time_of).collect();
    assert!(times.is_sorted(), "oldest first");
    assert!(all.iter().all(|e| e.event_type == "OrderCreated"));
    let buckets: BTreeSet<u128> = orders
        .iter()
        .map(|id| uuid::Uuid::parse_str(id).unwrap().as_u128() % 16)
        .collect();
    assert!(
        buckets.len() > 8,
        "the orders span many buckets: {buckets:?}"
    );

    // A range: start included, end excluded.
    let (start, end) = (times[10], times[30]);
    let ranged = listed(&mut app, "OrderCreated", Some(start), Some(end), 5).await;
    let expected: Vec<&String> = all
        .iter()
        .filter(|e| (start..end).contains(&time_of(e)))
        .map(|e| &e.event_id)
        .collect();
    let mut got: Vec<&String> = ranged.iter().map(|e| &e.event_id).collect();
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(ranged.len() >= 20);
    // The user's own creation is the one UserCreated.
    let users = listed(&mut app, "UserCreated", None, None, 0).await;
    assert_eq!(users.len(), 1);

    // Bad input names its field; a token of another listing is refused.
    let status = app
        .admin
        .list_events_by_type(pb::ListEventsByTypeRequest {
            event_type: "OrderShipped".into(),
            start_time: Some(timestamp_to_pb(end)),
            end_time: Some(timestamp_to_pb(start)),
            page_size: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["event_type", "end_time", "page_size"]
    );
    let page = app
        .admin
        .list_events_by_type(pb::ListEventsByTypeRequest {
            event_type: "OrderCreated".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = app
        .admin
        .list_events_by_type(pb::ListEventsByTypeRequest {
            event_type: "UserCreated".into(),
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);
    app.shutdown().await;
}

/// A `UserCreated` as a version before the event-type buckets stored it:
/// without `EventTypeBucket`.
async fn put_legacy_user(app: &TestApp, n: usize) -> String {
    let user_id = UserId::new_random();
    let stored = StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version: 1,
        occurred_at: parse_time(&dynabridge::convert::format_time(Utc::now())).unwrap(),
        request_id: format!("legacy-{n}"),
        correlation_id: format!("legacy-{n}"),
        trace_parent: None,
        event: Event::UserCreated {
            user_id,
            email: Email::parse(&format!("legacy{n}@example.com")).unwrap(),
            name: UserName::parse("Legacy").unwrap(),
        },
    };
    let mut item = dynabridge_event_store::codec::event_to_item(&stored);
    item.remove(event_store::EVENT_TYPE_BUCKET).unwrap();
    app.dynamo
        .put_item()
        .table_name(app.tables.event_store())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    user_id.to_string()
}

/// Waits until the admin service's migration is done: until a listing is
/// answered with anything but `INDEX_MIGRATING`.
async fn wait_migrated(app: &TestApp) {
    eventually("the migration", Duration::from_secs(20), || {
        let mut admin = app.admin.clone();
        async move {
            let listed = admin
                .list_events_by_type(pb::ListEventsByTypeRequest {
                    event_type: "UserCreated".into(),
                    page_size: 1,
                    ..Default::default()
                })
                .await;
            match listed {
                Err(status) if reason_of(&status) == "INDEX_MIGRATING" => None,
                _ => Some(()),
            }
        }
    })
    .await;
}

/// The migration's record in the admin table: (done, migrated).
async fn migration_record(app: &TestApp) -> Option<(bool, u64)> {
    let item = app
        .dynamo
        .get_item()
        .table_name(app.tables.admin())
        .key(
            admin::NAME,
            AttributeValue::S(admin::EVENT_TYPE_BUCKETS_MIGRATION.into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    Some((
        *item.get(admin::DONE)?.as_bool().ok()?,
        item.get(admin::MIGRATED)?.as_n().ok()?.parse().ok()?,
    ))
}

#[tokio::test]
async fn events_appended_before_the_buckets_are_migrated_once_and_then_listed() {
    let mut app = spawn_app().await;
    // The admin service started with an empty store: nothing to migrate.
    eventually("the migration record", Duration::from_secs(10), || async {
        migration_record(&app).await.filter(|r| r.0)
    })
    .await;
    assert_eq!(migration_record(&app).await, Some((true, 0)));

    // Events of an older version arrive (a restore, an old writer); a new
    // instance of the admin service finds its record done and leaves them.
    let mut legacy = BTreeSet::new();
    for n in 0..30 {
        legacy.insert(put_legacy_user(&app, n).await);
    }
    let current = create_user(&mut app, "current@example.com", "Current").await;
    app.restart_admin_service().await;
    wait_migrated(&app).await;
    let users = listed(&mut app, "UserCreated", None, None, 100).await;
    assert_eq!(users.len(), 1, "the record says done: nothing migrated");

    // Without the record, the next instance migrates them all: each gets
    // the bucket its id gives it, and the listing then holds every one.
    app.dynamo
        .delete_item()
        .table_name(app.tables.admin())
        .key(
            admin::NAME,
            AttributeValue::S(admin::EVENT_TYPE_BUCKETS_MIGRATION.into()),
        )
        .send()
        .await
        .unwrap();
    app.restart_admin_service().await;
    let users = eventually("the migration", Duration::from_secs(20), || {
        let mut admin = app.admin.clone();
        async move {
            let page = admin
                .list_events_by_type(pb::ListEventsByTypeRequest {
                    event_type: "UserCreated".into(),
                    page_size: 1000,
                    ..Default::default()
                })
                .await;
            match page {
                Ok(page) => Some(page.into_inner().events),
                Err(status) => {
                    // Until the migration is done, and only until then.
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert_eq!(reason_of(&status), "INDEX_MIGRATING");
                    None
                }
            }
        }
    })
    .await;
    let ids: BTreeSet<String> = users.into_iter().map(|e| e.aggregate_id).collect();
    let mut expected = legacy.clone();
    expected.insert(current.user_id.clone());
    assert_eq!(ids, expected);
    assert_eq!(migration_record(&app).await, Some((true, 30)));
    for id in &legacy {
        let item = app
            .dynamo
            .get_item()
            .table_name(app.tables.event_store())
            .key(event_store::AGGREGATE_ID, AttributeValue::S(id.clone()))
            .key(event_store::VERSION, AttributeValue::N("1".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        assert_eq!(
            item.get(event_store::EVENT_TYPE_BUCKET)
                .and_then(|v| v.as_s().ok()),
            Some(&dynabridge_event_store::codec::event_type_bucket(
                "UserCreated",
                uuid::Uuid::parse_str(id).unwrap()
            ))
        );
    }
    // The projector skipped the rewrites: each legacy user was projected
    // once, at version 1.
    app.shutdown().await;
}

#[tokio::test]
async fn bad_admin_requests_name_their_field() {
    let mut app = spawn_app().await;
    let status = app
        .admin
        .get_aggregate_history(pb::GetAggregateHistoryRequest {
            aggregate_id: "nope".into(),
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["aggregate_id", "page_size"]);
    let status = app
        .admin
        .get_user_as_of(pb::GetUserAsOfRequest {
            user_id: "nope".into(),
            as_of: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["user_id", "as_of"]);
    let status = app
        .admin
        .get_order_as_of(pb::GetOrderAsOfRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            as_of: as_of_version(0),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["as_of.version"]);
    let status = app
        .admin
        .get_aggregate_history(pb::GetAggregateHistoryRequest {
            aggregate_id: uuid::Uuid::new_v4().to_string(),
            page_size: 1,
            page_token: "forged".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);
    app.shutdown().await;
}

async fn projection_status(
    mut admin: AdminServiceClient<Channel>,
) -> pb::GetProjectionStatusResponse {
    admin
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn the_projection_status_says_where_each_shard_stands_and_what_waits_behind_it() {
    let mut app = spawn_app().await;
    let user = create_user(&mut app, "status@example.com", "S").await;
    // The projector catches up: nothing behind, one shard, its lease held.
    let status = eventually("the projector caught up", Duration::from_secs(10), || {
        let admin = app.admin.clone();
        async move {
            let status = projection_status(admin).await;
            (status.events_behind == 0 && !status.shards.is_empty()).then_some(status)
        }
    })
    .await;
    assert!(!status.stream_arn.is_empty());
    assert_eq!(status.shards.len(), 1, "{status:?}");
    let shard = &status.shards[0];
    assert!(
        !shard.lease_owner.is_empty() && !shard.checkpoint.is_empty(),
        "{shard:?}"
    );
    assert!(shard.last_event_time.is_some());
    assert_eq!(status.lag_ms, 0);
    assert_eq!(status.parked_aggregates, 0);
    assert_eq!(
        status
            .read_models
            .iter()
            .map(|r| r.table.clone())
            .collect::<Vec<_>>(),
        [
            app.tables.user_profiles(),
            app.tables.order_summaries(),
            app.tables.products(),
            app.tables.purchases()
        ]
    );
    // The last event applied to each read model: the user's creation, and
    // nothing yet to the orders, the products or the purchases.
    let applied = eventually(
        "the last event applied recorded",
        Duration::from_secs(10),
        || {
            let admin = app.admin.clone();
            async move {
                let status = projection_status(admin).await;
                status.read_models[0].last_event_applied.clone()
            }
        },
    )
    .await;
    assert_eq!(applied.event_id, user.event_ids[0]);
    assert_eq!(applied.event_type, "UserCreated");
    assert_eq!(applied.aggregate_id, user.user_id);
    assert_eq!(applied.version, 1);
    assert!(applied.occurred_at.is_some() && applied.apply_time.is_some());

    // With the projector stopped, the events appended since wait behind
    // its checkpoint.
    app.stop_projector().await;
    for n in 0..3 {
        rename(&mut app, &user.user_id, &format!("S{n}")).await;
    }
    let status = eventually("the events behind", Duration::from_secs(10), || {
        let admin = app.admin.clone();
        async move {
            let status = projection_status(admin).await;
            (status.events_behind == 3).then_some(status)
        }
    })
    .await;
    assert!(status.lag_ms > 0, "{status:?}");
    assert_eq!(status.shards[0].lease_owner, "", "released at shutdown");
    app.resume_projector().await;
    let status = eventually("caught up again", Duration::from_secs(10), || {
        let admin = app.admin.clone();
        async move {
            let status = projection_status(admin).await;
            let renamed = status.read_models[0]
                .last_event_applied
                .as_ref()
                .is_some_and(|applied| applied.version == 4);
            (status.events_behind == 0 && renamed).then_some(status)
        }
    })
    .await;
    // The last rename applied (version 4), nothing to the orders.
    assert_eq!(
        status.read_models[0]
            .last_event_applied
            .as_ref()
            .unwrap()
            .event_type,
        "UserProfileUpdated"
    );
    assert_eq!(status.read_models[1].last_event_applied, None);
    assert_eq!(status.read_models[2].last_event_applied, None);
    assert_eq!(status.read_models[3].last_event_applied, None);
    app.shutdown().await;
}
