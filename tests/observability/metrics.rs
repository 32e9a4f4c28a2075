//! Every binary's `/metrics`: gRPC calls by method and status code, the
//! store check, and the projector's progress.

use dynabridge::health::HealthArgs;
use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;

use crate::helpers::{
    Publish, Store, eventually, sample, sdk_for, start_command_service, start_projector,
    start_query_service,
};

const REQUESTS: &str = "dynabridge_grpc_server_requests_total";
const LATENCY_COUNT: &str = "dynabridge_grpc_server_request_duration_seconds_count";

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
            && sample(&text, "dynabridge_store_reachable", &[]) == Some(1.0))
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
    // The metrics of each service are its own.
    assert_eq!(
        sample(&query.scrape().await, REQUESTS, &create_user("OK")),
        None
    );

    for service in [command, query, projector] {
        service.stop().await;
    }
}
