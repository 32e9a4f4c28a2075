//! Every binary's `/metrics`: gRPC calls by method and status code, the
//! store check, the projector's progress, and the AWS calls with what they
//! cost.

use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge_runtime::health::HealthArgs;

use crate::helpers::{
    Publish, Store, eventually, sample, sdk_for, start_command_service, start_projector,
    start_query_service,
};

const REQUESTS: &str = "dynabridge_grpc_server_requests_total";
const LATENCY_COUNT: &str = "dynabridge_grpc_server_request_duration_seconds_count";
const AWS_CALLS: &str = "dynabridge_aws_calls_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_store_health_and_projection_are_measured() {
    let store = Store::start().await;
    let sdk = sdk_for(&store.endpoint).await;
    let args = store.store_args(&store.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(args.clone(), &sdk, HealthArgs::default()).await;
    let query = start_query_service(args.clone(), &sdk, HealthArgs::default()).await;
    let projector = start_projector(
        args,
        &sdk,
        HealthArgs::default(),
        Publish::Sink(dir.path().join("events.jsonl")),
    )
    .await;

    let mut commands = CommandServiceClient::connect(format!("http://{}", command.addr))
        .await
        .unwrap();
    let created = commands
        .create_user(pb::CreateUserRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            email: "metrics@example.com".into(),
            name: "Metrics".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The user was just created here: the update decides from the cache.
    commands
        .update_user_profile(pb::UpdateUserProfileRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            user_id: created.user_id.clone(),
            name: "Metrics Again".into(),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = commands
        .create_user(pb::CreateUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let mut queries = QueryServiceClient::connect(format!("http://{}", query.addr))
        .await
        .unwrap();
    queries
        .get_user_profile(pb::GetUserProfileRequest {
            user_id: created.user_id.clone(),
            min_version: created.version,
        })
        .await
        .unwrap();

    let create_user = |code| {
        [
            ("grpc_service", "dynabridge.v1.CommandService"),
            ("grpc_method", "CreateUser"),
            ("grpc_code", code),
        ]
    };
    eventually("the command service's calls counted", || async {
        let text = command.scrape().await;
        (sample(&text, REQUESTS, &create_user("OK")) == Some(1.0)
            && sample(&text, REQUESTS, &create_user("INVALID_ARGUMENT")) == Some(1.0)
            && sample(&text, LATENCY_COUNT, &create_user("OK")) == Some(1.0)
            && sample(&text, "dynabridge_store_reachable", &[]) == Some(1.0)
            && sample(&text, "dynabridge_aggregate_cache_hits_total", &[]) == Some(1.0)
            && sample(&text, "dynabridge_aggregate_cache_misses_total", &[]) == Some(0.0)
            && sample(&text, "dynabridge_aggregate_cache_stale_total", &[]) == Some(0.0)
            // Two appends, one after the other: each its own transaction.
            && sample(&text, "dynabridge_append_transaction_appends_count", &[]) == Some(2.0)
            && sample(&text, "dynabridge_append_transaction_appends_sum", &[]) == Some(2.0)
            && sample(&text, "dynabridge_append_resent_total", &[]) == Some(0.0))
        .then_some(())
    })
    .await;
    let get_profile = [
        ("grpc_service", "dynabridge.v1.QueryService"),
        ("grpc_method", "GetUserProfile"),
        ("grpc_code", "OK"),
    ];
    eventually("the query service's calls counted", || async {
        (sample(&query.scrape().await, REQUESTS, &get_profile) == Some(1.0)).then_some(())
    })
    .await;
    let text = eventually("the projector's progress", || async {
        let text = projector.scrape().await;
        (sample(&text, "dynabridge_projector_records_processed_total", &[]) >= Some(1.0))
            .then_some(text)
    })
    .await;
    for gauge in [
        "dynabridge_projector_lag_seconds",
        "dynabridge_projector_checkpoint_age_seconds",
        "dynabridge_store_reachable",
    ] {
        assert!(sample(&text, gauge, &[]).is_some(), "{gauge} in\n{text}");
    }
    for (name, labels) in [
        (
            "dynabridge_projector_batches_total",
            &[("records", "nonempty")][..],
        ),
        ("dynabridge_projector_checkpoint_writes_total", &[]),
        ("dynabridge_projector_events_published_total", &[]),
        ("dynabridge_projector_visible_lag_seconds_count", &[]),
        (
            AWS_CALLS,
            &[("service", "dynamodbstreams"), ("operation", "GetRecords")],
        ),
    ] {
        assert!(
            sample(&text, name, labels) >= Some(1.0),
            "{name} {labels:?} in\n{text}"
        );
    }
    // What the AWS calls cost shows in every binary's registry: the counters
    // are the process's, and these three services share one.
    let event_store = store.tables.event_store();
    let user_profiles = store.tables.user_profiles();
    for text in [command.scrape().await, query.scrape().await, text] {
        let append = [("service", "dynamodb"), ("operation", "TransactWriteItems")];
        assert!(sample(&text, AWS_CALLS, &append) >= Some(1.0), "{text}");
        assert_eq!(
            sample(&text, "dynabridge_aws_call_errors_total", &append),
            Some(0.0),
            "{text}"
        );
        for (operation, table) in [
            ("TransactWriteItems", event_store.as_str()),
            ("GetItem", user_profiles.as_str()),
        ] {
            let capacity = sample(
                &text,
                "dynabridge_dynamodb_capacity_units_total",
                &[("operation", operation), ("table", table)],
            );
            assert!(capacity > Some(0.0), "{operation} on {table} in\n{text}");
        }
    }
    // The metrics of each service are its own.
    assert_eq!(
        sample(&query.scrape().await, REQUESTS, &create_user("OK")),
        None
    );

    for service in [command, query, projector] {
        service.stop().await;
    }
}
