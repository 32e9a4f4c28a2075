//! Read-model generations over real gRPC: a blue/green rebuild while
//! commands flow, the query service following the switch, switching back,
//! dropping, an interrupted rebuild resuming, and the refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use dynabridge::pb;
use dynabridge::schema::{order_summaries, user_profiles};
use tonic::Code;

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::{create_order, create_user, item, new_request_id, reason_of, violated_fields};

const WAIT: Duration = Duration::from_secs(60);

/// Every item of `table`, by its key attribute `key`.
async fn rows(
    app: &TestApp,
    table: &str,
    key: &str,
) -> BTreeMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    let mut rows = BTreeMap::new();
    let mut start = None;
    loop {
        let page = app
            .dynamo
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            let Some(AttributeValue::S(id)) = item.get(key) else {
                panic!("a row without {key}: {item:?}");
            };
            rows.insert(id.clone(), AttributeValue::M(item.clone()));
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return rows,
        }
    }
}

async fn generations(app: &mut TestApp) -> pb::ListGenerationsResponse {
    app.admin
        .list_generations(pb::ListGenerationsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The list of generations once `done` holds of it.
async fn generations_until(
    app: &TestApp,
    what: &str,
    done: impl Fn(&pb::ListGenerationsResponse) -> bool,
) -> pb::ListGenerationsResponse {
    let done = &done;
    eventually(what, WAIT, || {
        let mut admin = app.admin.clone();
        async move {
            let list = admin
                .list_generations(pb::ListGenerationsRequest {})
                .await
                .unwrap()
                .into_inner();
            done(&list).then_some(list)
        }
    })
    .await
}

fn generation(list: &pb::ListGenerationsResponse, n: u32) -> pb::Generation {
    list.generations
        .iter()
        .find(|g| g.generation == n)
        .cloned()
        .unwrap_or_else(|| panic!("no generation {n} in {list:?}"))
}

async fn set_status(
    app: &mut TestApp,
    order_id: &str,
    status: pb::OrderStatus,
) -> pb::UpdateOrderStatusResponse {
    app.command
        .update_order_status(pb::UpdateOrderStatusRequest {
            request_id: new_request_id(),
            order_id: order_id.into(),
            status: status as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until both generations' tables hold the same rows.
async fn same_rows(app: &TestApp, a: u32, b: u32) -> usize {
    let (ta, tb) = (app.tables.read_models(a), app.tables.read_models(b));
    eventually("both generations holding the same rows", WAIT, || async {
        let users_a = rows(app, &ta.user_profiles, user_profiles::USER_ID).await;
        let users_b = rows(app, &tb.user_profiles, user_profiles::USER_ID).await;
        let orders_a = rows(app, &ta.order_summaries, order_summaries::ORDER_ID).await;
        let orders_b = rows(app, &tb.order_summaries, order_summaries::ORDER_ID).await;
        (users_a == users_b && orders_a == orders_b).then_some(users_a.len() + orders_a.len())
    })
    .await
}

#[tokio::test]
async fn a_rebuild_builds_a_generation_beside_the_served_one_while_commands_flow_and_switches_to_it()
 {
    let mut app = spawn_app().await;
    // History before the rebuild: users, orders, a status change each.
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(create_user(&mut app, &format!("r{i}@example.com"), &format!("R {i}")).await);
    }
    let mut orders = Vec::new();
    for (i, user) in users.iter().enumerate().take(8) {
        let order = create_order(
            &mut app,
            &user.user_id,
            vec![item("sku", 1 + i as i64, 100)],
        )
        .await;
        set_status(&mut app, &order.order_id, pb::OrderStatus::Processing).await;
        orders.push(order);
    }
    let before = app.stored_events().await.len();

    // Refusals first: nothing is registered by them.
    let status = app
        .admin
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            segments: 65,
            no_switch: false,
            page_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["segments"]);
    assert_eq!(generations(&mut app).await.generations.len(), 1);

    let started = app
        .admin
        // Pages of 3 events cut aggregates in two: the rest of one is
        // folded onto the row its first page wrote.
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            segments: 3,
            no_switch: false,
            page_size: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .generation
        .unwrap();
    assert_eq!(started.generation, 1);
    assert_eq!(started.state, pb::GenerationState::Building as i32);
    assert_eq!(
        started.user_profiles_table,
        app.tables.read_models(1).user_profiles
    );
    let again = app
        .admin
        .rebuild_read_models(pb::RebuildReadModelsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&again), "REBUILD_IN_PROGRESS");

    // Commands keep flowing while it builds, and stay readable.
    let mut during = Vec::new();
    for (i, order) in orders.iter().enumerate().take(6) {
        let user = create_user(&mut app, &format!("d{i}@example.com"), "During").await;
        set_status(&mut app, &order.order_id, pb::OrderStatus::Shipped).await;
        let seen = app
            .query
            .get_user_profile(pb::GetUserProfileRequest {
                user_id: user.user_id.clone(),
                min_version: user.version,
            })
            .await
            .expect("a user created during the rebuild is served");
        assert_eq!(seen.into_inner().user.unwrap().name, "During");
        during.push(user);
    }

    let list = generations_until(&app, "generation 1 served", |list| list.serving == 1).await;
    let built = generation(&list, 1);
    assert_eq!(built.state, pb::GenerationState::Serving as i32);
    assert_eq!(
        generation(&list, 0).state,
        pb::GenerationState::Standby as i32
    );
    let progress = built.rebuild.unwrap();
    assert_eq!(progress.phase, pb::RebuildPhase::Done as i32);
    assert_eq!((progress.segments, progress.segments_done), (3, 3));
    assert_eq!(progress.page_size, 3);
    assert!(
        progress.events >= before as i64,
        "{progress:?} read {before} events at least"
    );
    assert!(
        progress.rows > 0 && progress.events_per_second > 0.0,
        "{progress:?}"
    );
    assert_eq!(progress.unreadable_aggregates, 0);

    // Both generations hold every aggregate, row for row.
    let rows_now = same_rows(&app, 0, 1).await;
    assert_eq!(rows_now, users.len() + during.len() + orders.len());

    // The query service reads generation 1: a row only it has is found.
    let only_new = uuid::Uuid::new_v4().to_string();
    let row = dynabridge_read_models::UserProfileRow {
        user_id: only_new.clone(),
        email: "only-new@example.com".into(),
        name: "Only new".into(),
        version: 1,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
    .to_item();
    app.dynamo
        .put_item()
        .table_name(app.tables.read_models(1).user_profiles)
        .set_item(Some(row))
        .send()
        .await
        .unwrap();
    eventually("the query service reading generation 1", WAIT, || {
        let mut query = app.query.clone();
        let id = only_new.clone();
        async move {
            query
                .get_user_profile(pb::GetUserProfileRequest {
                    user_id: id,
                    min_version: 0,
                })
                .await
                .ok()
        }
    })
    .await;

    // Switching back is one write; the generation left stays written.
    let switched = app
        .admin
        .switch_generation(pb::SwitchGenerationRequest { generation: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((switched.serving, switched.previous), (0, 1));
    let late = create_user(&mut app, "late@example.com", "Late").await;
    for generation in [0, 1] {
        let table = app.tables.read_models(generation).user_profiles;
        eventually("a new user in both generations", WAIT, || {
            let (app, table) = (&app, table.clone());
            let id = late.user_id.clone();
            async move {
                rows(app, &table, user_profiles::USER_ID)
                    .await
                    .contains_key(&id)
                    .then_some(())
            }
        })
        .await;
    }
    app.admin
        .switch_generation(pb::SwitchGenerationRequest { generation: 1 })
        .await
        .unwrap();

    // Refusals: the served one cannot be dropped, an unknown one is named.
    let status = app
        .admin
        .drop_generation(pb::DropGenerationRequest { generation: 1 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&status), "GENERATION_STATE_CONFLICT");
    let status = app
        .admin
        .switch_generation(pb::SwitchGenerationRequest { generation: 9 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason_of(&status), "GENERATION_NOT_FOUND");

    // Dropping generation 0 stops writing it; its tables stay (the
    // template's).
    app.admin
        .drop_generation(pb::DropGenerationRequest { generation: 0 })
        .await
        .unwrap();
    generations_until(&app, "generation 0 dropped", |list| {
        generation(list, 0).state == pb::GenerationState::Dropped as i32
    })
    .await;
    let after = create_user(&mut app, "after@example.com", "After").await;
    app.query
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: after.user_id.clone(),
            min_version: after.version,
        })
        .await
        .expect("served from generation 1");
    let old = rows(&app, &app.tables.user_profiles(), user_profiles::USER_ID).await;
    assert!(old.contains_key(&late.user_id));
    assert!(
        !old.contains_key(&after.user_id),
        "generation 0 is no longer written"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_and_a_rebuild_without_a_switch_waits_on_standby() {
    let mut app = spawn_app().await;
    for i in 0..5 {
        let user = create_user(&mut app, &format!("i{i}@example.com"), "Interrupted").await;
        let order = create_order(&mut app, &user.user_id, vec![item("sku", 2, 50)]).await;
        set_status(&mut app, &order.order_id, pb::OrderStatus::Processing).await;
    }
    app.admin
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            segments: 2,
            no_switch: true,
            page_size: 0,
        })
        .await
        .unwrap();
    // The admin service stops mid-rebuild; the next one takes it up.
    app.restart_admin_service().await;
    let list = generations_until(&app, "generation 1 built", |list| {
        generation(list, 1).state == pb::GenerationState::Standby as i32
    })
    .await;
    assert_eq!(list.serving, 0, "built without a switch");
    assert_eq!(
        generation(&list, 1).rebuild.unwrap().phase,
        pb::RebuildPhase::Done as i32
    );
    assert_eq!(same_rows(&app, 0, 1).await, 10);

    // A standby generation is switched to on demand, and the one left can
    // then be dropped, its tables deleted.
    app.admin
        .switch_generation(pb::SwitchGenerationRequest { generation: 1 })
        .await
        .unwrap();
    let status = app
        .admin
        .rebuild_read_models(pb::RebuildReadModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.generation.unwrap().generation, 2);
    generations_until(&app, "generation 2 served", |list| list.serving == 2).await;
    app.admin
        .drop_generation(pb::DropGenerationRequest { generation: 1 })
        .await
        .unwrap();
    let gone = app.tables.read_models(1).user_profiles;
    eventually("generation 1's tables deleted", WAIT, || {
        let (dynamo, gone) = (app.dynamo.clone(), gone.clone());
        async move {
            dynamo
                .describe_table()
                .table_name(gone)
                .send()
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    assert_eq!(same_rows(&app, 0, 2).await, 10);
    app.shutdown().await;
}
