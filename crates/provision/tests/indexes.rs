//! Tables made by an older version get the indexes they lack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus,
    KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use dynabridge::schema::{Tables, event_store};
use dynabridge_testkit::{EmbeddedStore, sdk_config, unique_prefix};

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

fn attribute(name: &str) -> AttributeDefinition {
    let kind = if name == event_store::VERSION {
        ScalarAttributeType::N
    } else {
        ScalarAttributeType::S
    };
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_event_store_made_before_the_buckets_gains_the_bucketed_index() {
    let store = EmbeddedStore::start().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk_config(&store.endpoint()).await);
    let tables = Tables::new(unique_prefix("prov"));
    // The event store as the older version made it: the index keyed by the
    // event type alone.
    client
        .create_table()
        .table_name(tables.event_store())
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(event_store::AGGREGATE_ID, KeyType::Hash))
        .key_schema(key(event_store::VERSION, KeyType::Range))
        .attribute_definitions(attribute(event_store::AGGREGATE_ID))
        .attribute_definitions(attribute(event_store::VERSION))
        .attribute_definitions(attribute(event_store::EVENT_TYPE))
        .attribute_definitions(attribute(event_store::TIMESTAMP))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(event_store::LEGACY_EVENT_TYPE_INDEX)
                .key_schema(key(event_store::EVENT_TYPE, KeyType::Hash))
                .key_schema(key(event_store::TIMESTAMP, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // An event that already has its bucket (written by a new command
    // service before the index was added).
    client
        .put_item()
        .table_name(tables.event_store())
        .item(event_store::AGGREGATE_ID, AttributeValue::S("a".into()))
        .item(event_store::VERSION, AttributeValue::N("1".into()))
        .item(
            event_store::EVENT_TYPE,
            AttributeValue::S("UserCreated".into()),
        )
        .item(
            event_store::EVENT_TYPE_BUCKET,
            AttributeValue::S("UserCreated#03".into()),
        )
        .item(
            event_store::TIMESTAMP,
            AttributeValue::S("2026-01-01T00:00:00.000000Z".into()),
        )
        .send()
        .await
        .unwrap();

    for _ in 0..2 {
        // Twice: the second finds everything in place.
        dynabridge_provision::ensure_tables(&client, &tables)
            .await
            .unwrap();
    }
    let table = client
        .describe_table()
        .table_name(tables.event_store())
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let indexes: Vec<(&str, Option<&IndexStatus>)> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| (i.index_name().unwrap(), i.index_status()))
        .collect();
    assert!(
        indexes.contains(&(event_store::EVENT_TYPE_INDEX, Some(&IndexStatus::Active))),
        "{indexes:?}"
    );
    assert!(
        indexes
            .iter()
            .any(|(name, _)| *name == event_store::LEGACY_EVENT_TYPE_INDEX),
        "nothing is removed"
    );
    // The new index holds the event that had its bucket.
    let found = client
        .query()
        .table_name(tables.event_store())
        .index_name(event_store::EVENT_TYPE_INDEX)
        .key_condition_expression("#b = :b")
        .expression_attribute_names("#b", event_store::EVENT_TYPE_BUCKET)
        .expression_attribute_values(":b", AttributeValue::S("UserCreated#03".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(found.items().len(), 1);
    store.stop();
}
