//! An event the projector cannot apply parks its aggregate alone: the rest
//! of its batch flows, the aggregate's later events queue behind it, a
//! restart loses nothing, and a retry after the fix brings the aggregate to
//! its last version.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use dynabridge::pb;
use dynabridge::schema::event_store;
use dynabridge_domain::{Email, Event, StoredEvent, UserId, UserName, Version};
use tonic::Code;

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::{reason_of, violated_fields};

/// How many aggregates the batch holds, the parked one among them.
const AGGREGATES: usize = 1000;

fn user_event(user_id: UserId, version: Version, name: &str) -> StoredEvent {
    let event = if version == 1 {
        Event::UserCreated {
            user_id,
            email: Email::parse(&format!("{}@example.com", user_id.as_uuid().simple())).unwrap(),
            name: UserName::parse(name).unwrap(),
        }
    } else {
        Event::UserProfileUpdated {
            user_id,
            name: Some(UserName::parse(name).unwrap()),
            email: None,
        }
    };
    StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version,
        occurred_at: Utc::now(),
        request_id: format!("parking-{user_id}-{version}"),
        correlation_id: "parking".into(),
        trace_parent: None,
        event,
    }
}

/// Puts `event` into the event store as it is, or with `event_data` for
/// its payload.
async fn put(app: &TestApp, event: &StoredEvent, event_data: Option<&str>) {
    let mut item = dynabridge_event_store::codec::event_to_item(event);
    if let Some(data) = event_data {
        item.insert(
            event_store::EVENT_DATA.into(),
            aws_sdk_dynamodb::types::AttributeValue::S(data.into()),
        );
    }
    app.dynamo
        .put_item()
        .table_name(app.tables.event_store())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
}

async fn parked(app: &TestApp) -> Vec<pb::ParkedAggregate> {
    app.admin
        .clone()
        .list_parked(pb::ListParkedRequest::default())
        .await
        .unwrap()
        .into_inner()
        .aggregates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_in_a_batch_of_a_thousand_parks_its_aggregate_alone_until_retried() {
    let mut app = spawn_app().await;
    // One batch: the projector waits while the events are appended.
    app.stop_projector().await;
    let poisoned = UserId::new_random();
    let (poison, behind) = (
        user_event(poisoned, 1, "Before"),
        user_event(poisoned, 2, "After"),
    );
    let mut healthy = BTreeSet::new();
    for n in 0..AGGREGATES - 1 {
        if n == AGGREGATES / 2 {
            put(&app, &poison, Some("{not json")).await;
        }
        let user_id = UserId::new_random();
        put(&app, &user_event(user_id, 1, "Healthy"), None).await;
        healthy.insert(user_id.to_string());
    }
    put(&app, &behind, None).await;
    app.resume_projector().await;

    // Every other aggregate's row, and the poisoned one parked with the
    // event behind it.
    eventually("the healthy rows", Duration::from_secs(60), || async {
        (app.count_items(&app.tables.user_profiles()).await == AGGREGATES - 1).then_some(())
    })
    .await;
    let found = eventually("the parked aggregate", Duration::from_secs(10), || async {
        let parked = parked(&app).await;
        (parked.first().map(|p| p.events.len()) == Some(2)).then_some(parked)
    })
    .await;
    assert_eq!(found.len(), 1, "one aggregate parked: {found:?}");
    let aggregate = &found[0];
    assert_eq!(aggregate.aggregate_id, poisoned.to_string());
    assert_eq!((aggregate.first_version, aggregate.last_version), (1, 2));
    assert_eq!(aggregate.status, pb::ParkedStatus::Parked as i32);
    assert!(aggregate.error.contains("unreadable"), "{aggregate:?}");
    assert_eq!(
        aggregate
            .events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>(),
        [poison.event_id.to_string(), behind.event_id.to_string()]
    );
    let status = app
        .query
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: poisoned.to_string(),
            min_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    for user_id in healthy.iter().step_by(97) {
        let user = app
            .query
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: user_id.clone(),
                min_version: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(user.name, "Healthy");
    }
    let published: BTreeSet<String> = app
        .published()
        .iter()
        .map(|line| line["detail"]["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published.len(), AGGREGATES - 1, "every applied event, once");

    // A restart in between: the parking is durable, nothing is lost.
    app.stop_projector().await;
    app.resume_projector().await;
    assert_eq!(parked(&app).await.len(), 1);

    // A retry before the fix parks it again, with the error.
    app.admin
        .retry_parked(pb::RetryParkedRequest {
            aggregate_id: poisoned.to_string(),
        })
        .await
        .unwrap();
    eventually("the failed retry", Duration::from_secs(10), || async {
        let parked = parked(&app).await;
        let later = |t: &Option<pbjson_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
        (parked[0].status == pb::ParkedStatus::Parked as i32
            && later(&parked[0].update_time) > later(&aggregate.update_time))
        .then_some(())
    })
    .await;

    // The fix (the item rewritten), then the retry: the aggregate reaches its
    // last version, and both events are published.
    put(&app, &poison, None).await;
    let asked = app
        .admin
        .retry_parked(pb::RetryParkedRequest {
            aggregate_id: poisoned.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .aggregate
        .unwrap();
    assert_eq!(asked.status, pb::ParkedStatus::RetryRequested as i32);
    let user = app
        .query
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: poisoned.to_string(),
            min_version: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((user.name.as_str(), user.version), ("After", 2));
    eventually("the release", Duration::from_secs(10), || async {
        parked(&app).await.is_empty().then_some(())
    })
    .await;
    let published: BTreeSet<String> = app
        .published()
        .iter()
        .map(|line| line["detail"]["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        published.len(),
        AGGREGATES + 1,
        "every event, the parked two included"
    );

    // Nothing is parked now: a retry or a skip is refused, naming why.
    let status = app
        .admin
        .retry_parked(pb::RetryParkedRequest {
            aggregate_id: poisoned.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason_of(&status), "NOT_PARKED");
    let status = app
        .admin
        .skip_parked(pb::SkipParkedRequest {
            aggregate_id: poisoned.to_string(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["reason"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_skipped_aggregate_moves_past_its_parked_events_and_the_skip_is_audited() {
    let mut app = spawn_app().await;
    let user_id = UserId::new_random();
    put(&app, &user_event(user_id, 1, "Kept"), None).await;
    let (bad, next) = (
        user_event(user_id, 2, "Bad"),
        user_event(user_id, 3, "Next"),
    );
    put(&app, &bad, Some("{not json")).await;
    put(&app, &next, None).await;
    eventually("the parked aggregate", Duration::from_secs(10), || async {
        (parked(&app).await.first().map(|p| p.last_version) == Some(3)).then_some(())
    })
    .await;
    let asked = app
        .admin
        .skip_parked(pb::SkipParkedRequest {
            aggregate_id: user_id.to_string(),
            reason: "version 2 was written by a broken tool".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .aggregate
        .unwrap();
    assert_eq!(asked.status, pb::ParkedStatus::SkipRequested as i32);
    assert_eq!(asked.skip_reason, "version 2 was written by a broken tool");
    // The row moves to version 3 unchanged: the skipped events changed
    // nothing, and nothing of them is published.
    let user = app
        .query
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: user_id.to_string(),
            min_version: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((user.name.as_str(), user.version), ("Kept", 3));
    eventually("the release", Duration::from_secs(10), || async {
        parked(&app).await.is_empty().then_some(())
    })
    .await;
    let published: Vec<String> = app
        .published()
        .iter()
        .map(|line| line["detail"]["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert!(!published.contains(&bad.event_id.to_string()));
    assert!(!published.contains(&next.event_id.to_string()));
    // The audit record: the reason and the versions.
    let audit = app
        .dynamo
        .scan()
        .table_name(app.tables.admin())
        .send()
        .await
        .unwrap();
    let record = audit
        .items()
        .iter()
        .find(|item| {
            item.get(dynabridge::schema::admin::NAME)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|name| name.starts_with(&format!("audit/skip/{user_id}/")))
        })
        .expect("an audit record");
    assert_eq!(
        record
            .get(dynabridge::schema::admin::REASON)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("version 2 was written by a broken tool")
    );
    app.shutdown().await;
}
