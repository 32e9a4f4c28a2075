//! Replays over real gRPC: the events of a window, of some types or all,
//! published again through the projector's publisher (the sink here),
//! each marked with the replay's id and otherwise the original; nothing
//! else changes. And the refusals.

use std::time::Duration;

use chrono::Utc;
use dynabridge::convert::timestamp_to_pb;
use dynabridge::pb;
use serde_json::Value;
use tonic::Code;

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::{create_order, create_user, item, reason_of, violated_fields};

const WAIT: Duration = Duration::from_secs(60);

/// The published entries, originals and replayed ones apart.
fn published(app: &TestApp) -> (Vec<Value>, Vec<Value>) {
    app.published()
        .into_iter()
        .partition(|line| line["detail"].get("replayId").is_none())
}

async fn replayed(app: &mut TestApp, request: pb::ReplayEventsRequest) -> pb::Replay {
    let asked = app
        .admin
        .replay_events(request)
        .await
        .unwrap()
        .into_inner()
        .replay
        .unwrap();
    assert_eq!(asked.state, pb::ReplayState::Pending as i32);
    completed(app, &asked.replay_id).await
}

/// The replay `replay_id` once `GetReplay` says it completed, from either
/// source.
pub async fn completed(app: &TestApp, replay_id: &str) -> pb::Replay {
    eventually("the replay completed", WAIT, || {
        let mut admin = app.admin.clone();
        let replay_id = replay_id.to_owned();
        async move {
            let replay = admin
                .get_replay(pb::GetReplayRequest { replay_id })
                .await
                .unwrap()
                .into_inner()
                .replay
                .unwrap();
            (replay.state == pb::ReplayState::Completed as i32).then_some(replay)
        }
    })
    .await
}

#[tokio::test]
async fn a_window_is_published_again_marked_and_nothing_else_changes() {
    let mut app = spawn_app().await;
    let start = Utc::now() - chrono::Duration::seconds(1);
    let ann = create_user(&mut app, "ann@example.com", "Ann").await;
    let bob = create_user(&mut app, "bob@example.com", "Bob").await;
    create_order(&mut app, &ann.user_id, vec![item("sku", 1, 100)]).await;
    let middle = Utc::now();
    let cat = create_user(&mut app, "cat@example.com", "Cat").await;
    eventually("every event published", WAIT, || async {
        (published(&app).0.len() == 4).then_some(())
    })
    .await;

    // The users created before the middle: Ann and Bob, once each.
    let replay = replayed(
        &mut app,
        pb::ReplayEventsRequest {
            start_time: Some(timestamp_to_pb(start)),
            end_time: Some(timestamp_to_pb(middle)),
            event_types: vec!["UserCreated".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(replay.events_published, 2);
    assert_eq!(replay.event_types, ["UserCreated"]);
    assert!(replay.finish_time.is_some() && replay.published_through_time.is_some());
    let (originals, again) = published(&app);
    assert_eq!(
        originals.len(),
        4,
        "the originals are not published again as such"
    );
    let original_of = |event_id: &Value| {
        originals
            .iter()
            .find(|o| &o["detail"]["eventId"] == event_id)
            .cloned()
            .unwrap()
    };
    let mut users = Vec::new();
    for line in &again {
        assert_eq!(line["detail"]["replayId"], replay.replay_id.as_str());
        assert_eq!(line["detailType"], "UserCreated");
        // Otherwise the original, its event id included.
        let mut detail = line["detail"].clone();
        detail.as_object_mut().unwrap().remove("replayId");
        assert_eq!(detail, original_of(&line["detail"]["eventId"])["detail"]);
        users.push(line["detail"]["aggregateId"].as_str().unwrap().to_owned());
    }
    users.sort();
    let mut expected = vec![ann.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(users, expected);

    // Every type over every time: all four again.
    let everything = replayed(
        &mut app,
        pb::ReplayEventsRequest {
            start_time: Some(timestamp_to_pb(start)),
            end_time: Some(timestamp_to_pb(Utc::now() + chrono::Duration::seconds(1))),
            event_types: vec![],
            source: pb::ReplaySource::EventStore.into(),
            rules: vec![],
        },
    )
    .await;
    assert_eq!(everything.events_published, 4);
    let (originals, again) = published(&app);
    assert_eq!((originals.len(), again.len()), (4, 6));
    // Nothing was applied again: Cat is still at version 1.
    let profile = app
        .query
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: cat.user_id.clone(),
            min_version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(profile.version, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_replay_needs_a_window_and_known_types_and_an_unknown_one_is_not_found() {
    let mut app = spawn_app().await;
    let now = Utc::now();
    let status = app
        .admin
        .replay_events(pb::ReplayEventsRequest {
            start_time: Some(timestamp_to_pb(now)),
            end_time: Some(timestamp_to_pb(now - chrono::Duration::seconds(5))),
            event_types: vec!["OrderCreated".into(), "NoSuchEvent".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["end_time", "event_types[1]"]);
    let status = app
        .admin
        .replay_events(pb::ReplayEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["start_time", "end_time"]);
    let window = || pb::ReplayEventsRequest {
        start_time: Some(timestamp_to_pb(now - chrono::Duration::seconds(5))),
        end_time: Some(timestamp_to_pb(now)),
        ..Default::default()
    };
    // Without a bus, the default source is the event store, which has no
    // rules to choose.
    let status = app
        .admin
        .replay_events(pb::ReplayEventsRequest {
            rules: vec!["dynabridge-order-events".into()],
            ..window()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["rules"]);
    // And there is no archive to replay.
    let status = app
        .admin
        .replay_events(pb::ReplayEventsRequest {
            source: pb::ReplaySource::Archive.into(),
            ..window()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&status), "ARCHIVE_UNAVAILABLE");
    let get = |replay_id: &str| {
        let mut admin = app.admin.clone();
        let replay_id = replay_id.to_owned();
        async move {
            admin
                .get_replay(pb::GetReplayRequest { replay_id })
                .await
                .unwrap_err()
        }
    };
    let status = get("0190c6e4-0000-7000-8000-000000000000").await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason_of(&status), "REPLAY_NOT_FOUND");
    let status = get("not an id").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["replay_id"]);
    // Nothing was recorded by the refusals.
    assert_eq!(app.count_items(&app.tables.replays()).await, 0);
    app.shutdown().await;
}
