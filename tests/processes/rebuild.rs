//! A blue/green rebuild of the read models under load, the four binaries as
//! processes: commands keep flowing while the new generation is built, the
//! admin service is SIGKILLed right after the rebuild is asked for (its
//! successor resumes it), the switch loses nothing, and a reader polling
//! rows that exist before the rebuild never misses one (the query service
//! never serves a generation partly built).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dynabridge::pb;
use dynabridge::pb::admin_service_client::AdminServiceClient;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use tonic::transport::Channel;

use crate::{Store, order_at, spawn_projector, spawn_service, user_and_order, user_at, wait_for};

async fn admin_client(proc: &crate::Proc) -> AdminServiceClient<Channel> {
    AdminServiceClient::connect(format!("http://{}", proc.addr))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_switches_without_losing_or_hiding_a_row() {
    let store = Store::start("rb").await;
    let (endpoint, prefix) = (store.endpoint.clone(), store.prefix.clone());
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("published.jsonl");
    let command_proc = spawn_service("command-service", &endpoint, &prefix);
    let query_proc = spawn_service("query-service", &endpoint, &prefix);
    let _projector = spawn_projector(&endpoint, &prefix, &sink);
    let mut admin_proc = spawn_service("admin-service", &endpoint, &prefix);

    let commands = CommandServiceClient::connect(format!("http://{}", command_proc.addr))
        .await
        .unwrap();
    let mut queries = QueryServiceClient::connect(format!("http://{}", query_proc.addr))
        .await
        .unwrap();

    // Rows before the rebuild, each at version 2.
    let mut before = Vec::new();
    for i in 0..30 {
        let (user, order, _) = user_and_order(&mut commands.clone(), &format!("before-{i}")).await;
        before.push((user, order));
    }
    for (user, order) in &before {
        user_at(&mut queries, user, 2).await;
        order_at(&mut queries, order, 2).await;
    }

    // The load: users and orders until told to stop, each acknowledged one
    // kept.
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (stop, loaded, mut commands) = (stop.clone(), loaded.clone(), commands.clone());
        async move {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 2_000 {
                acknowledged.push(user_and_order(&mut commands, &format!("load-{i}")).await);
                loaded.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            acknowledged
        }
    });
    // The reader: rows that existed before must always be found, at their
    // version or later, whichever generation serves them.
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let (stop, reads, mut queries, before) =
            (stop.clone(), reads.clone(), queries.clone(), before.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                for (user, order) in &before {
                    let profile = queries
                        .get_user_profile(pb::GetUserProfileRequest {
                            user_id: user.clone(),
                            min_version: 0,
                        })
                        .await
                        .unwrap_or_else(|s| panic!("user {user} not served: {s:?}"))
                        .into_inner()
                        .user
                        .unwrap();
                    assert!(profile.version >= 2, "user {user} went back: {profile:?}");
                    let summary = queries
                        .get_order(pb::GetOrderRequest {
                            order_id: order.clone(),
                            min_version: 0,
                        })
                        .await
                        .unwrap_or_else(|s| panic!("order {order} not served: {s:?}"))
                        .into_inner()
                        .order
                        .unwrap();
                    assert!(summary.version >= 2, "order {order} went back: {summary:?}");
                    reads.fetch_add(2, Ordering::Relaxed);
                }
            }
        }
    });

    // The rebuild, in small pages; the admin service is killed right after
    // it answers, and its successor takes the rebuild up.
    let mut admin = admin_client(&admin_proc).await;
    let generation = admin
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            segments: 2,
            no_switch: false,
            page_size: 7,
        })
        .await
        .unwrap()
        .into_inner()
        .generation
        .unwrap()
        .generation;
    assert_eq!(generation, 1);
    admin_proc.kill();
    let admin_proc = spawn_service("admin-service", &endpoint, &prefix);
    let mut admin = admin_client(&admin_proc).await;
    wait_for("generation 1 served", || {
        let mut admin = admin.clone();
        async move {
            admin
                .list_generations(pb::ListGenerationsRequest {})
                .await
                .is_ok_and(|list| list.into_inner().serving == 1)
        }
    })
    .await;
    // The query service follows within a second: a row only generation 1
    // has shows when it does. The load goes on past that.
    let marker = uuid::Uuid::new_v4().to_string();
    let row = dynabridge_read_models::UserProfileRow {
        user_id: marker.clone(),
        email: "marker@example.com".into(),
        name: "Marker".into(),
        version: 1,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    store
        .dynamo
        .put_item()
        .table_name(store.tables.read_models(1).user_profiles)
        .set_item(Some(row.to_item()))
        .send()
        .await
        .unwrap();
    wait_for("the query service serving generation 1", || {
        let (mut queries, marker) = (queries.clone(), marker.clone());
        async move {
            queries
                .get_user_profile(pb::GetUserProfileRequest {
                    user_id: marker,
                    min_version: 0,
                })
                .await
                .is_ok()
        }
    })
    .await;
    let at_switch = loaded.load(Ordering::Relaxed);
    wait_for("commands after the switch", || {
        let loaded = loaded.clone();
        async move { loaded.load(Ordering::Relaxed) >= at_switch + 5 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = load.await.unwrap();
    reader.await.expect("the reader never missed a row");
    assert!(
        acknowledged.len() >= 5,
        "commands flowed during the rebuild: {}",
        acknowledged.len()
    );
    assert!(reads.load(Ordering::Relaxed) > 0);

    // Nothing acknowledged is lost: every row at its version, served from
    // generation 1.
    for (user, order, _) in &acknowledged {
        user_at(&mut queries, user, 2).await;
        order_at(&mut queries, order, 2).await;
    }
    let list = admin
        .list_generations(pb::ListGenerationsRequest {})
        .await
        .unwrap()
        .into_inner();
    let built = list
        .generations
        .iter()
        .find(|g| g.generation == 1)
        .unwrap()
        .rebuild
        .clone()
        .unwrap();
    assert_eq!(built.phase, pb::RebuildPhase::Done as i32, "{built:?}");
    assert_eq!(built.page_size, 7);
    // Both generations hold every row (generation 0 stays written).
    let rows = |table: String| {
        let dynamo = store.dynamo.clone();
        async move {
            dynamo
                .scan()
                .table_name(table)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .send()
                .await
                .unwrap()
                .count
        }
    };
    // The projector may still be writing the last events to the generation
    // it writes first: each count is waited for.
    let expected = i32::try_from(before.len() + acknowledged.len()).unwrap();
    for generation in [0, 1] {
        let tables = store.tables.read_models(generation);
        // Generation 1 has the marker besides.
        let marker = i32::from(generation == 1);
        let (users, orders) = (tables.user_profiles.clone(), tables.order_summaries.clone());
        wait_for(&format!("generation {generation} holding every row"), || {
            let (users, orders) = (users.clone(), orders.clone());
            let rows = &rows;
            async move {
                rows(users).await == expected + marker && rows(orders).await == expected
            }
        })
        .await;
    }
}
