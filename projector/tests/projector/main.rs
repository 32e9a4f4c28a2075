//! The projector against the embedded store, over HTTP, as deployed.
// Test code: a failed unwrap is a failed test. Clippy's test allowance
// covers `#[test]` functions, not the helpers they share.
#![allow(clippy::unwrap_used)]

mod helpers;

use std::collections::HashMap;

use dynabridge_domain::{OrderStatus, StoredEvent};
use dynabridge_read_models::{Applied, UserProfileRow};
use helpers::{
    eventually, order_history, sink_lines, sink_path, spawn_projector, spawn_store, user_history,
    wait_sink_lines,
};

/// How many times each event id appears in the sink.
fn published_counts(lines: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines {
        let id = line["detail"]["eventId"]
            .as_str()
            .expect("every line carries the envelope")
            .to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

fn expect_each_once(lines: &[serde_json::Value], events: &[&StoredEvent]) {
    let counts = published_counts(lines);
    let expected: HashMap<String, usize> =
        events.iter().map(|e| (e.event_id.to_string(), 1)).collect();
    assert_eq!(counts, expected);
    for event in events {
        let line = lines
            .iter()
            .find(|l| l["detail"]["eventId"] == event.event_id.to_string())
            .unwrap();
        assert_eq!(line["source"], "dynabridge.test");
        assert_eq!(line["detailType"], event.event.event_type());
        assert!(line["eventBusName"].is_null());
        // ProtoJSON writes 64-bit integers as strings.
        assert_eq!(line["detail"]["version"], event.version.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_publishes_once_and_ignores_redelivery() {
    let store = spawn_store().await;
    store.provision().await;
    let dir = tempfile::tempdir().unwrap();
    let first_sink = sink_path(&dir, "first.jsonl");
    let user = user_history();
    let order = order_history();
    let lone_user = user_history();

    // Some events are in the stream before the projector starts, the rest
    // arrive while it runs.
    store.append_all(&user[..2]).await;
    store.append(&order[0]).await;
    let projector = spawn_projector(&store, &first_sink).await;
    projector.wait_serving().await;
    store.append(&user[2]).await;
    store.append_all(&order[1..]).await;
    store.append(&lone_user[0]).await;

    let user_row = eventually("the user row at version 3", || async {
        store.user_row(&user[0]).await.filter(|r| r.version == 3)
    })
    .await;
    let order_row = eventually("the order row at version 3", || async {
        store.order_row(&order[0]).await.filter(|r| r.version == 3)
    })
    .await;
    let lone_row = eventually("the second user's row", || async {
        store.user_row(&lone_user[0]).await
    })
    .await;

    assert_eq!(
        (user_row.name.as_str(), user_row.email.as_str()),
        ("Annie", "annie@example.com")
    );
    assert_eq!(user_row.created_at, user[0].occurred_at);
    assert_eq!(user_row.updated_at, user[2].occurred_at);
    assert_eq!(order_row.status, OrderStatus::Shipped);
    assert_eq!(order_row.total.amount_minor, 3750);
    assert_eq!(order_row.items.len(), 1);
    assert_eq!((lone_row.version, lone_row.name.as_str()), (1, "Ann"));

    store.wait_checkpointed_to_the_end().await;
    let all: Vec<&StoredEvent> = user.iter().chain(&order).chain(&lone_user[..1]).collect();
    let lines = wait_sink_lines(&first_sink, all.len()).await;
    expect_each_once(&lines, &all);
    // Per aggregate, events are published in version order.
    let user_versions: Vec<_> = lines
        .iter()
        .filter(|l| l["detail"]["aggregateId"] == user[0].event.aggregate_id().to_string())
        .map(|l| l["detail"]["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        user_versions,
        ["UserCreated", "UserProfileUpdated", "UserProfileUpdated"]
    );
    projector.stop().await.unwrap();

    // An operator-visible mark that a re-application would overwrite.
    let mut marked = user_row.clone();
    marked.name = "kept".into();
    store.put_user_row(&marked).await;

    // Without checkpoints, a new projector reads the whole stream again.
    store.delete_checkpoints().await;
    let second_sink = sink_path(&dir, "second.jsonl");
    let projector = spawn_projector(&store, &second_sink).await;
    store.wait_checkpointed_to_the_end().await;
    let lines = wait_sink_lines(&second_sink, all.len()).await;
    projector.stop().await.unwrap();

    expect_each_once(&lines, &all);
    assert_eq!(
        store.user_row(&user[0]).await,
        Some(marked),
        "redelivered events are not applied again"
    );
    assert_eq!(store.order_row(&order[0]).await, Some(order_row));
    assert_eq!(store.user_row(&lone_user[0]).await, Some(lone_row));
    assert_eq!(
        sink_lines(&first_sink).len(),
        all.len(),
        "the first sink is left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_read_model_is_filled_from_the_event_store() {
    let store = spawn_store().await;
    store.provision().await;
    let user = user_history();

    // The read model is at version 1 and the checkpoint is past version 2:
    // the stream will deliver version 3 alone.
    store.append_all(&user[..2]).await;
    let Applied::Next { row: row_v1, .. } = UserProfileRow::apply(None, &user[0]) else {
        panic!("a first event makes a row");
    };
    store.put_user_row(&row_v1).await;
    let shards = store.stream_records().await;
    let (shard_id, records) = &shards[0];
    assert_eq!(records.len(), 2);
    store.put_checkpoint(shard_id, &records[1]).await;
    store.append(&user[2]).await;

    let dir = tempfile::tempdir().unwrap();
    let sink = sink_path(&dir, "events.jsonl");
    let projector = spawn_projector(&store, &sink).await;
    let row = eventually("the user row at version 3", || async {
        store.user_row(&user[0]).await.filter(|r| r.version == 3)
    })
    .await;
    store.wait_checkpointed_to_the_end().await;
    projector.stop().await.unwrap();

    assert_eq!(row.name, "Annie", "version 2 came from the event store");
    assert_eq!(row.email, "annie@example.com");
    assert_eq!(row.created_at, user[0].occurred_at);
    // Only what the stream delivered is published.
    expect_each_once(&sink_lines(&sink), &[&user[2]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_serving_once_the_stream_is_found() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let store = spawn_store().await;
    let dir = tempfile::tempdir().unwrap();
    let projector = spawn_projector(&store, &sink_path(&dir, "events.jsonl")).await;

    // No tables yet: the projector waits, and says it is not serving.
    let status = eventually("the health server to answer", || async {
        projector.health(projector::HEALTH_SERVICE).await
    })
    .await;
    assert_eq!(status, ServingStatus::NotServing as i32);
    assert_eq!(
        projector.health("").await,
        Some(ServingStatus::NotServing as i32)
    );

    store.provision().await;
    projector.wait_serving().await;
    let user = user_history();
    store.append(&user[0]).await;
    eventually("the user row", || async { store.user_row(&user[0]).await }).await;
    projector.stop().await.unwrap();
}

#[test]
fn invalid_configuration_exits_before_binding() {
    // Holding the port: a binary that bound first would fail on it instead.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["--table-prefix", "no spaces allowed", "--health-listen"])
        .arg(held.local_addr().unwrap().to_string())
        .env("DYNABRIDGE_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("table prefix"), "{stderr}");
    assert!(!stderr.contains("binding"), "{stderr}");
}

/// The catch-up reads every event committed in a window back from the
/// event store, across types and buckets, each aggregate's in version
/// order, and nothing outside it.
#[tokio::test]
async fn a_trimmed_window_is_read_back_from_the_event_store_in_order() {
    use projector::catchup::{CatchUpSource, EventStoreCatchUp};

    let store = spawn_store().await;
    store.provision().await;
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let minutes = |n: i64| start + chrono::Duration::minutes(n);
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for n in 0..12 {
        // Users and orders, a minute apart; the window is minutes 3 to 9.
        let mut history = if n % 2 == 0 {
            user_history()
        } else {
            order_history()
        };
        for (i, event) in history.iter_mut().enumerate() {
            event.occurred_at = minutes(n) + chrono::Duration::seconds(i64::try_from(i).unwrap());
        }
        store.append_all(&history).await;
        if (3..9).contains(&n) {
            inside.extend(history);
        } else {
            outside.extend(history);
        }
    }
    let source = EventStoreCatchUp::new(store.dynamodb.clone(), store.tables.event_store());
    let read = source
        .events_between(Some(minutes(3)), minutes(9))
        .await
        .unwrap();
    let ids = |events: &[StoredEvent]| {
        let mut ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&read), ids(&inside));
    for pair in read.windows(2) {
        if pair[0].event.aggregate_id() == pair[1].event.aggregate_id() {
            assert_eq!(pair[1].version, pair[0].version + 1);
        }
    }
    let everything = source
        .events_between(None, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(everything.len(), inside.len() + outside.len());
}
