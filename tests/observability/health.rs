//! Health follows the store: NOT_SERVING while it is unreachable, SERVING
//! again once it is back; liveness stays SERVING throughout.

use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{
    Proxy, Publish, Store, eventually, fast_health, sample, sdk_for, start_command_service,
    start_projector, start_query_service,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_turns_not_serving_while_the_store_is_unreachable_and_back_after() {
    let store = Store::start().await;
    let proxy = Proxy::start(&store.endpoint).await;
    let sdk = sdk_for(&proxy.endpoint).await;
    let args = store.store_args(&proxy.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(args.clone(), &sdk, fast_health()).await;
    let query = start_query_service(args.clone(), &sdk, fast_health()).await;
    let projector = start_projector(
        args,
        &sdk,
        fast_health(),
        Publish::Sink(dir.path().join("events.jsonl")),
    )
    .await;
    let services = [
        (
            &command,
            ["", command_service::SERVICE_NAME],
            command_service::LIVENESS_NAME,
        ),
        (
            &query,
            ["", query_service::SERVICE_NAME],
            query_service::LIVENESS_NAME,
        ),
        (
            &projector,
            ["", projector::HEALTH_SERVICE],
            projector::LIVENESS_SERVICE,
        ),
    ];
    let reachable = |text: &str| sample(text, "dynabridge_store_reachable", &[]);

    for (service, readiness, liveness) in &services {
        service.wait_health(readiness, ServingStatus::Serving).await;
        assert_eq!(service.health(liveness).await, Some(ServingStatus::Serving));
        assert_eq!(reachable(&service.scrape().await), Some(1.0));
    }

    proxy.cut();
    for (service, readiness, liveness) in &services {
        service
            .wait_health(readiness, ServingStatus::NotServing)
            .await;
        assert_eq!(
            service.health(liveness).await,
            Some(ServingStatus::Serving),
            "{liveness}: a restart would not bring the store back"
        );
        eventually("the reachable gauge to drop", || async {
            (reachable(&service.scrape().await) == Some(0.0)).then_some(())
        })
        .await;
    }

    proxy.restore();
    for (service, readiness, _) in &services {
        service.wait_health(readiness, ServingStatus::Serving).await;
        assert_eq!(reachable(&service.scrape().await), Some(1.0));
    }

    for service in [command, query, projector] {
        service.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_while_the_store_is_unreachable_is_not_serving_until_it_is_back() {
    let store = Store::start().await;
    let proxy = Proxy::start(&store.endpoint).await;
    proxy.cut();
    let sdk = sdk_for(&proxy.endpoint).await;
    let command =
        start_command_service(store.store_args(&proxy.endpoint), &sdk, fast_health()).await;
    let names = ["", command_service::SERVICE_NAME];
    command.wait_health(&names, ServingStatus::NotServing).await;
    assert_eq!(
        command.health(command_service::LIVENESS_NAME).await,
        Some(ServingStatus::Serving)
    );
    proxy.restore();
    command.wait_health(&names, ServingStatus::Serving).await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_whose_bus_does_not_exist_is_not_ready_and_publishes_nothing_until_it_does() {
    use crate::fake_eventbridge::FakeEventBridge;
    use crate::helpers::sdk_with_bus;

    let store = Store::start().await;
    let bus = FakeEventBridge::start().await;
    let name = store.tables.event_bus();
    // A misspelt --event-bus, as EventBridge sees it: the bus is not there,
    // and PutEvents to it would succeed and drop every entry.
    bus.set_bus(&name, false);
    let sdk = sdk_for(&store.endpoint).await;
    let args = store.store_args(&store.endpoint);
    let command = start_command_service(args.clone(), &sdk, fast_health()).await;
    let mut projector_args = args;
    projector_args.aws.endpoint_url = None;
    let projector = start_projector(
        projector_args,
        &sdk_with_bus(&store.endpoint, &bus.endpoint).await,
        fast_health(),
        Publish::Bus(name.clone()),
    )
    .await;

    let mut commands = dynabridge::pb::command_service_client::CommandServiceClient::new(
        dynabridge_testkit::channel(command.addr).await,
    );
    commands
        .create_user(dynabridge::pb::CreateUserRequest {
            request_id: "bus-missing-1".into(),
            email: "bus@example.com".into(),
            name: "Bus".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let waiting = |text: &str| {
        sample(
            text,
            "dynabridge_projector_publish_failures_total",
            &[("reason", "bus_missing")],
        )
    };
    eventually(
        "the projector to hold the event for the missing bus",
        || async { (waiting(&projector.scrape().await) >= Some(1.0)).then_some(()) },
    )
    .await;
    assert!(bus.entries().is_empty(), "nothing sent to be dropped");
    assert_eq!(
        projector.health(projector::HEALTH_SERVICE).await,
        Some(ServingStatus::NotServing)
    );

    // The bus is created: the held event goes out, and the projector is ready.
    bus.set_bus(&name, true);
    eventually("the event to be published", || async {
        (bus.entries().len() == 1).then_some(())
    })
    .await;
    projector
        .wait_health(&["", projector::HEALTH_SERVICE], ServingStatus::Serving)
        .await;
    command.stop().await;
    projector.stop().await;
}
