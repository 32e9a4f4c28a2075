//! Creates the tables and, in [`event_bus`], the EventBridge bus with its
//! archive and rules, idempotently. The same code provisions the embedded
//! store, an emulator or a real AWS account (where CloudFormation is the
//! usual way, and this is the quick one).

pub mod event_bus;

pub use event_bus::{
    BusRule, EventBus, EventBusOptions, ProvisionedRule, RuleTarget, ensure_event_bus,
    ensure_rule_target,
};

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableDescription, TableStatus,
    TimeToLiveSpecification,
};

use dynabridge::schema::{
    ReadModelTables, Tables, admin, checkpoints, event_store, generations, idempotency,
    order_summaries, parked, products, purchases, read_model, replays, snapshots, unique_emails,
    user_profiles,
};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("creating table {table}: {source}")]
    Create {
        table: String,
        #[source]
        source: aws_sdk_dynamodb::Error,
    },
    #[error("deleting table {table}: {source}")]
    Delete {
        table: String,
        #[source]
        source: aws_sdk_dynamodb::Error,
    },
    #[error("table {0} did not become active in time")]
    NotActive(String),
    #[error("invalid table definition: {0}")]
    Definition(#[from] BuildError),
    #[error("{action} {resource}: {source}")]
    EventBridge {
        action: &'static str,
        resource: String,
        #[source]
        source: Box<aws_sdk_eventbridge::Error>,
    },
    #[error("invalid event bus options: {0}")]
    InvalidOptions(String),
    #[error("EventBridge returned no ARN for {0}")]
    MissingArn(String),
    #[error("archive {archive} archives {archived}, not the bus {bus_arn}")]
    ArchiveOfAnotherBus {
        archive: String,
        archived: String,
        bus_arn: String,
    },
    #[error("archive {archive} is {state}: {reason}")]
    ArchiveFailed {
        archive: String,
        state: String,
        reason: String,
    },
    #[error("archive {0} did not become enabled in time")]
    ArchiveNotEnabled(String),
    #[error("invalid target {target} of rule {rule}: {source}")]
    InvalidTarget {
        rule: String,
        target: String,
        #[source]
        source: BuildError,
    },
    #[error("rule {rule} refused target {target}: {code}: {message}")]
    TargetRefused {
        rule: String,
        target: String,
        code: String,
        message: String,
    },
}

/// An attribute name and type.
type Attribute = (&'static str, ScalarAttributeType);

/// A global secondary index: name, hash key, optional range key.
type IndexDef = (&'static str, Attribute, Option<Attribute>);

struct TableDef {
    name: String,
    /// (name, type); the first is the hash key, the optional second the range key.
    key: Vec<Attribute>,
    indexes: Vec<IndexDef>,
    stream: bool,
    ttl_attribute: Option<&'static str>,
}

fn definitions(tables: &Tables) -> Vec<TableDef> {
    use ScalarAttributeType::{N, S};
    vec![
        TableDef {
            name: tables.event_store(),
            key: vec![(event_store::AGGREGATE_ID, S), (event_store::VERSION, N)],
            indexes: vec![(
                event_store::EVENT_TYPE_INDEX,
                (event_store::EVENT_TYPE_BUCKET, S),
                Some((event_store::TIMESTAMP, S)),
            )],
            stream: true,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.idempotency(),
            key: vec![(idempotency::REQUEST_ID, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: Some(idempotency::EXPIRES_AT),
        },
        TableDef {
            name: tables.snapshots(),
            key: vec![(snapshots::AGGREGATE_ID, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.unique_emails(),
            key: vec![(unique_emails::EMAIL, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.checkpoints(),
            key: vec![(checkpoints::STREAM_ARN, S), (checkpoints::SHARD_ID, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.process_checkpoints(),
            key: vec![(checkpoints::STREAM_ARN, S), (checkpoints::SHARD_ID, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.parked(),
            key: vec![(parked::AGGREGATE_ID, S), (parked::VERSION, N)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.admin(),
            key: vec![(admin::NAME, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.generations(),
            key: vec![(generations::NAME, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: tables.replays(),
            key: vec![(replays::REPLAY_ID, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
    ]
    .into_iter()
    .chain(read_model_definitions(&tables.read_models(0)))
    .collect()
}

/// The read-model tables of one generation.
fn read_model_definitions(read_models: &ReadModelTables) -> [TableDef; 4] {
    use ScalarAttributeType::{N, S};
    [
        TableDef {
            name: read_models.user_profiles.clone(),
            key: vec![(user_profiles::USER_ID, S)],
            indexes: vec![(user_profiles::EMAIL_INDEX, (user_profiles::EMAIL, S), None)],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: read_models.order_summaries.clone(),
            key: vec![(order_summaries::ORDER_ID, S)],
            indexes: vec![
                (
                    order_summaries::USER_ID_INDEX,
                    (order_summaries::USER_ID, S),
                    Some((read_model::CREATED_AT, S)),
                ),
                (
                    order_summaries::STATUS_INDEX,
                    (order_summaries::STATUS, S),
                    Some((read_model::CREATED_AT, S)),
                ),
            ],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: read_models.products.clone(),
            key: vec![(products::PRODUCT_ID, S)],
            // Sparse: only rows at or below their reorder level carry
            // `LowStock`.
            indexes: vec![(
                products::LOW_STOCK_INDEX,
                (products::LOW_STOCK, S),
                Some((products::STOCK, N)),
            )],
            stream: false,
            ttl_attribute: None,
        },
        TableDef {
            name: read_models.purchases.clone(),
            key: vec![(purchases::PURCHASE_ID, S)],
            indexes: vec![],
            stream: false,
            ttl_attribute: None,
        },
    ]
}

fn key_schema(hash: &str, range: Option<&str>) -> Result<Vec<KeySchemaElement>, BuildError> {
    let mut keys = vec![
        KeySchemaElement::builder()
            .attribute_name(hash)
            .key_type(KeyType::Hash)
            .build()?,
    ];
    if let Some(range) = range {
        keys.push(
            KeySchemaElement::builder()
                .attribute_name(range)
                .key_type(KeyType::Range)
                .build()?,
        );
    }
    Ok(keys)
}

/// Creates every table of `tables` that does not exist yet, adds the
/// indexes a table made by an older version lacks, and waits until all are
/// active. Nothing is removed or changed otherwise.
pub async fn ensure_tables(client: &Client, tables: &Tables) -> Result<(), ProvisionError> {
    for def in definitions(tables) {
        create_table(client, &def).await?;
    }
    for def in definitions(tables) {
        wait_active(client, &def.name).await?;
        add_missing_indexes(client, &def).await?;
        if let Some(attribute) = def.ttl_attribute {
            // Best effort: TTL only trims old records, and some emulators
            // lack the call. Nothing depends on it for correctness.
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attribute)
                .build()?;
            if let Err(err) = client
                .update_time_to_live()
                .table_name(&def.name)
                .time_to_live_specification(spec)
                .send()
                .await
            {
                tracing::debug!(table = %def.name, error = %aws_sdk_dynamodb::Error::from(err), "time to live not enabled");
            }
        }
    }
    Ok(())
}

/// Creates the read-model tables of a generation, as generation 0's are,
/// and waits until they are active; tables that exist are left alone.
pub async fn ensure_read_model_tables(
    client: &Client,
    read_models: &ReadModelTables,
) -> Result<(), ProvisionError> {
    let defs = read_model_definitions(read_models);
    for def in &defs {
        create_table(client, def).await?;
    }
    for def in &defs {
        wait_active(client, &def.name).await?;
    }
    Ok(())
}

/// Deletes the read-model tables of a generation; tables already gone are
/// fine.
pub async fn delete_read_model_tables(
    client: &Client,
    read_models: &ReadModelTables,
) -> Result<(), ProvisionError> {
    for table in read_models.all() {
        match client.delete_table().table_name(table).send().await {
            Ok(_) => tracing::info!(table, "table deleted"),
            Err(err) => match aws_sdk_dynamodb::Error::from(err) {
                aws_sdk_dynamodb::Error::ResourceNotFoundException(_) => {}
                source => {
                    return Err(ProvisionError::Delete {
                        table: table.to_owned(),
                        source,
                    });
                }
            },
        }
    }
    Ok(())
}

/// The attribute definitions of a table's keys and its indexes' keys.
fn attribute_definitions(def: &TableDef) -> Result<Vec<AttributeDefinition>, BuildError> {
    let mut attributes: Vec<(&str, ScalarAttributeType)> = def.key.clone();
    for (_, hash, range) in &def.indexes {
        attributes.push(hash.clone());
        attributes.extend(range.clone());
    }
    attributes.sort_by_key(|(name, _)| *name);
    attributes.dedup_by_key(|(name, _)| *name);
    attributes
        .into_iter()
        .map(|(name, kind)| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
        })
        .collect()
}

fn index((name, (hash, _), range): &IndexDef) -> Result<GlobalSecondaryIndex, BuildError> {
    GlobalSecondaryIndex::builder()
        .index_name(*name)
        .set_key_schema(Some(key_schema(hash, range.as_ref().map(|(n, _)| *n))?))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
}

/// Adds each index of `def` its table lacks (one made by an older version),
/// one at a time as DynamoDB requires, and waits until each is active: the
/// store fills it from the items that carry its keys.
async fn add_missing_indexes(client: &Client, def: &TableDef) -> Result<(), ProvisionError> {
    let failed = |source: aws_sdk_dynamodb::Error| ProvisionError::Create {
        table: def.name.clone(),
        source,
    };
    for wanted in &def.indexes {
        let table = client
            .describe_table()
            .table_name(&def.name)
            .send()
            .await
            .map_err(|e| failed(e.into()))?
            .table;
        let present = table
            .iter()
            .flat_map(|t| t.global_secondary_indexes())
            .any(|index| index.index_name() == Some(wanted.0));
        if present {
            continue;
        }
        let (name, (hash, _), range) = wanted;
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(*name)
            .set_key_schema(Some(key_schema(hash, range.as_ref().map(|(n, _)| *n))?))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()?;
        client
            .update_table()
            .table_name(&def.name)
            .set_attribute_definitions(Some(attribute_definitions(def)?))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(|e| failed(e.into()))?;
        tracing::info!(table = %def.name, index = wanted.0, "index added");
        wait_index_active(client, &def.name, wanted.0).await?;
    }
    Ok(())
}

/// Waits until `index` of `table` is active, for as long as DynamoDB may
/// take to fill it.
async fn wait_index_active(
    client: &Client,
    table: &str,
    index: &str,
) -> Result<(), ProvisionError> {
    let active = wait_until(client, table, Duration::from_secs(600), |t| {
        t.global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(index))
            .and_then(|i| i.index_status())
            == Some(&IndexStatus::Active)
    })
    .await;
    active
        .then_some(())
        .ok_or_else(|| ProvisionError::NotActive(format!("{table} index {index}")))
}

async fn create_table(client: &Client, def: &TableDef) -> Result<(), ProvisionError> {
    let mut request = client
        .create_table()
        .table_name(&def.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(
            def.key[0].0,
            def.key.get(1).map(|(name, _)| *name),
        )?));
    request = request.set_attribute_definitions(Some(attribute_definitions(def)?));
    for wanted in &def.indexes {
        request = request.global_secondary_indexes(index(wanted)?);
    }
    if def.stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()?,
        );
    }
    match request.send().await {
        Ok(_) => {
            tracing::info!(table = %def.name, "table created");
            Ok(())
        }
        Err(err) => match aws_sdk_dynamodb::Error::from(err) {
            aws_sdk_dynamodb::Error::ResourceInUseException(_) => Ok(()),
            source => Err(ProvisionError::Create {
                table: def.name.clone(),
                source,
            }),
        },
    }
}

async fn wait_active(client: &Client, table: &str) -> Result<(), ProvisionError> {
    let active = wait_until(client, table, Duration::from_secs(120), |t| {
        t.table_status() == Some(&TableStatus::Active)
    })
    .await;
    active
        .then_some(())
        .ok_or_else(|| ProvisionError::NotActive(table.to_owned()))
}

/// Describes `table` until `done` holds of it, or `limit` has passed:
/// whether it held.
async fn wait_until(
    client: &Client,
    table: &str,
    limit: Duration,
    done: impl Fn(&TableDescription) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(20);
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .ok()
            .and_then(|out| out.table);
        if described.as_ref().is_some_and(&done) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
