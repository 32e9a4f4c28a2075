//! The AWS call counters against a real store: each call of ours counted
//! once, with the capacity it consumed.

use dynabridge::schema::idempotency;
use dynabridge_aws::calls::{AwsCallMetrics, DYNAMODB};
use dynabridge_domain::StoredEvent;
use dynabridge_event_store::fixtures::new_user_append;
use dynabridge_testkit::embedded_store;

#[tokio::test]
async fn each_call_of_ours_counts_once_with_the_capacity_it_consumed() {
    let (sdk, tables, _stop) = embedded_store().await;
    let metrics = AwsCallMetrics::new().unwrap();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(metrics.interceptor())
            .build(),
    );

    // The health probe: one GetItem.
    dynabridge_runtime::health::StoreProbe::get_item(
        client.clone(),
        tables.idempotency(),
        idempotency::REQUEST_ID,
    )
    .check(std::time::Duration::from_secs(5))
    .await
    .unwrap();
    assert_eq!(metrics.calls(DYNAMODB, "GetItem"), 1);
    assert_eq!(metrics.errors(DYNAMODB, "GetItem"), 0);
    let read = metrics.capacity_units("GetItem", &tables.idempotency());
    assert!(read > 0.0, "{read}");

    // An aggregate's events: one Query.
    let events: Vec<StoredEvent> =
        dynabridge_event_store::read_events(&client, &tables.event_store(), "nobody", 1, None)
            .await
            .unwrap();
    assert!(events.is_empty());
    assert_eq!(metrics.calls(DYNAMODB, "Query"), 1);
    let read = metrics.capacity_units("Query", &tables.event_store());
    assert!(read > 0.0, "{read}");

    // The append: one TransactWriteItems, consuming write capacity on
    // the event store and the idempotency table.
    let store = dynabridge_event_store::EventStore::new(client.clone(), tables.clone());
    let (_, append) = new_user_append("req-cost", "cost@example.com");
    let append = dynabridge_event_store::Append {
        requirements: Vec::new(),
        ..append
    };
    store.append(&append).await.unwrap();
    assert_eq!(metrics.calls(DYNAMODB, "TransactWriteItems"), 1);
    for table in [tables.event_store(), tables.idempotency()] {
        let written = metrics.capacity_units("TransactWriteItems", &table);
        assert!(written > 0.0, "{table}: {written}");
    }

    // A call that fails for good counts as sent and as failed.
    let missing = client
        .get_item()
        .table_name(format!("{}-missing", tables.prefix))
        .key("Id", aws_sdk_dynamodb::types::AttributeValue::S("x".into()))
        .send()
        .await;
    assert!(missing.is_err());
    assert_eq!(metrics.calls(DYNAMODB, "GetItem"), 2);
    assert_eq!(metrics.errors(DYNAMODB, "GetItem"), 1);
}

#[tokio::test]
async fn the_clients_we_build_count_into_the_process_counters() {
    let (sdk, tables, _stop) = embedded_store().await;
    let global = AwsCallMetrics::global();
    let before = global.calls(DYNAMODB, "DescribeTable");
    dynabridge_aws::dynamodb_client(&sdk)
        .describe_table()
        .table_name(tables.event_store())
        .send()
        .await
        .unwrap();
    // Other tests of this process may count too: at least ours.
    assert!(global.calls(DYNAMODB, "DescribeTable") > before);
}
