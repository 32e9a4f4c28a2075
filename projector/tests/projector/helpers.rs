//! The embedded store on a port-0 listener, a projector run against it, and
//! ways to look at what the projector did.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{TimeZone, Utc};
use dynabridge::schema::{Tables, checkpoints, order_summaries, user_profiles};
use dynabridge_aws::AwsArgs;
use dynabridge_domain::{
    Email, Event, Money, OrderId, OrderLine, OrderStatus, Quantity, Sku, StoredEvent, UserId,
    UserName, Version,
};
use dynabridge_event_store::codec::event_to_item;
use dynabridge_read_models::{Item, OrderSummaryRow, UserProfileRow};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::service::Host;
use dynabridge_testkit::{EmbeddedStore, SpawnedApp, spawn_app};
use uuid::Uuid;

/// How long any wait in these tests may take before it fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Some`; fails after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    dynabridge_testkit::eventually(what, DEADLINE, probe).await
}

/// An in-process embedded store and the tables of one test.
pub struct TestStore {
    pub endpoint: String,
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub tables: Tables,
    _store: EmbeddedStore,
}

/// Logs go to the test's captured output, shown when it fails.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Starts the embedded store; the tables are not created yet.
pub async fn spawn_store() -> TestStore {
    init_logs();
    let store = EmbeddedStore::start().await;
    let endpoint = store.endpoint();
    let sdk = dynabridge_testkit::sdk_config(&endpoint).await;
    TestStore {
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
        sdk,
        endpoint,
        tables: Tables::new(format!("t{}", Uuid::new_v4().simple())),
        _store: store,
    }
}

fn aws_args(endpoint: &str) -> AwsArgs {
    AwsArgs {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
    }
}

impl TestStore {
    pub async fn provision(&self) {
        dynabridge_provision::ensure_tables(&self.dynamodb, &self.tables)
            .await
            .unwrap();
    }

    /// Appends `event` to the event store the way the command service does.
    pub async fn append(&self, event: &StoredEvent) {
        self.dynamodb
            .put_item()
            .table_name(self.tables.event_store())
            .set_item(Some(event_to_item(event)))
            .send()
            .await
            .unwrap();
    }

    pub async fn append_all(&self, events: &[StoredEvent]) {
        for event in events {
            self.append(event).await;
        }
    }

    async fn get(&self, table: String, key: &str, id: &str) -> Option<Item> {
        self.dynamodb
            .get_item()
            .table_name(table)
            .consistent_read(true)
            .key(key, AttributeValue::S(id.to_owned()))
            .send()
            .await
            .unwrap()
            .item
    }

    pub async fn user_row(&self, event: &StoredEvent) -> Option<UserProfileRow> {
        let id = event.event.aggregate_id().to_string();
        let item = self
            .get(self.tables.user_profiles(), user_profiles::USER_ID, &id)
            .await?;
        Some(UserProfileRow::from_item(&item).unwrap())
    }

    pub async fn order_row(&self, event: &StoredEvent) -> Option<OrderSummaryRow> {
        let id = event.event.aggregate_id().to_string();
        let item = self
            .get(
                self.tables.order_summaries(),
                order_summaries::ORDER_ID,
                &id,
            )
            .await?;
        Some(OrderSummaryRow::from_item(&item).unwrap())
    }

    pub async fn put_user_row(&self, row: &UserProfileRow) {
        self.dynamodb
            .put_item()
            .table_name(self.tables.user_profiles())
            .set_item(Some(row.to_item()))
            .send()
            .await
            .unwrap();
    }

    /// Every shard's checkpoint item, by shard id (not the items of the
    /// last event each read model applied).
    pub async fn checkpoints(&self) -> HashMap<String, Item> {
        self.dynamodb
            .scan()
            .table_name(self.tables.checkpoints())
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default()
            .into_iter()
            .filter(|item| {
                item.get(checkpoints::STREAM_ARN)
                    != Some(&AttributeValue::S(checkpoints::READ_MODELS.into()))
            })
            .map(|item| {
                let Some(AttributeValue::S(shard)) = item.get(checkpoints::SHARD_ID) else {
                    panic!("checkpoint without a shard id: {item:?}");
                };
                (shard.clone(), item)
            })
            .collect()
    }

    pub async fn delete_checkpoints(&self) {
        for item in self.checkpoints().await.into_values() {
            let key: Item = [checkpoints::STREAM_ARN, checkpoints::SHARD_ID]
                .into_iter()
                .map(|name| (name.to_owned(), item[name].clone()))
                .collect();
            self.dynamodb
                .delete_item()
                .table_name(self.tables.checkpoints())
                .set_key(Some(key))
                .send()
                .await
                .unwrap();
        }
        assert!(self.checkpoints().await.is_empty());
    }

    pub async fn stream_arn(&self) -> String {
        self.dynamodb
            .describe_table()
            .table_name(self.tables.event_store())
            .send()
            .await
            .unwrap()
            .table
            .and_then(|t| t.latest_stream_arn)
            .unwrap()
    }

    /// The stream's shards and the sequence numbers of their records, read
    /// the way the projector reads them.
    pub async fn stream_records(&self) -> Vec<(String, Vec<String>)> {
        use aws_sdk_dynamodbstreams::types::ShardIteratorType;
        let arn = self.stream_arn().await;
        let description = self
            .streams
            .describe_stream()
            .stream_arn(&arn)
            .send()
            .await
            .unwrap()
            .stream_description
            .unwrap();
        let mut shards = Vec::new();
        for shard in description.shards.unwrap_or_default() {
            let shard_id = shard.shard_id.unwrap();
            let mut iterator = self
                .streams
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(&shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator;
            let mut sequence_numbers = Vec::new();
            while let Some(current) = iterator {
                let page = self
                    .streams
                    .get_records()
                    .shard_iterator(current)
                    .send()
                    .await
                    .unwrap();
                let records = page.records.unwrap_or_default();
                if records.is_empty() {
                    break;
                }
                sequence_numbers.extend(
                    records
                        .into_iter()
                        .filter_map(|r| r.dynamodb.and_then(|d| d.sequence_number)),
                );
                iterator = page.next_shard_iterator;
            }
            shards.push((shard_id, sequence_numbers));
        }
        shards
    }

    /// Writes a checkpoint as an earlier run would have.
    pub async fn put_checkpoint(&self, shard_id: &str, sequence_number: &str) {
        let item: Item = HashMap::from([
            (
                checkpoints::STREAM_ARN.to_owned(),
                AttributeValue::S(self.stream_arn().await),
            ),
            (
                checkpoints::SHARD_ID.to_owned(),
                AttributeValue::S(shard_id.to_owned()),
            ),
            (
                checkpoints::SEQUENCE_NUMBER.to_owned(),
                AttributeValue::S(sequence_number.to_owned()),
            ),
            (
                checkpoints::FINISHED.to_owned(),
                AttributeValue::Bool(false),
            ),
            (
                checkpoints::UPDATED_AT.to_owned(),
                AttributeValue::S(Utc::now().to_rfc3339()),
            ),
        ]);
        self.dynamodb
            .put_item()
            .table_name(self.tables.checkpoints())
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    /// Waits until the checkpoint of the only shard is at its last record.
    pub async fn wait_checkpointed_to_the_end(&self) {
        let shards = self.stream_records().await;
        assert_eq!(
            shards.len(),
            1,
            "the embedded store has one shard per table"
        );
        let (shard_id, records) = &shards[0];
        let last = records.last().unwrap().clone();
        eventually("the checkpoint to reach the last record", || async {
            let checkpoints = self.checkpoints().await;
            let seq = checkpoints
                .get(shard_id)?
                .get(checkpoints::SEQUENCE_NUMBER)?
                .as_s()
                .ok()?;
            (*seq == last).then_some(())
        })
        .await;
    }

    pub fn projector_config(&self, sink: &Path) -> projector::Config {
        projector::Config {
            store: StoreArgs {
                table_prefix: self.tables.prefix.clone(),
                aws: aws_args(&self.endpoint),
            },
            health_listen: "127.0.0.1:0".parse().unwrap(),
            event_bus: None,
            event_source: "dynabridge.test".into(),
            sink_path: sink.to_owned(),
            max_concurrent_writes: projector::Config::DEFAULT_MAX_CONCURRENT_WRITES,
            consumer: projector::ConsumerArgs {
                idle_poll_max_ms: 20,
                ..projector::ConsumerArgs::default()
            },
            metrics_listen: None,
        }
    }
}

/// A projector running in this process.
pub struct RunningProjector {
    pub health_addr: SocketAddr,
    app: SpawnedApp,
}

pub async fn spawn_projector(store: &TestStore, sink: &Path) -> RunningProjector {
    let config = store.projector_config(sink);
    let app = spawn_app::<projector::App>(config, &Host::new(store.sdk.clone()))
        .await
        .unwrap();
    RunningProjector {
        health_addr: app.addr,
        app,
    }
}

impl RunningProjector {
    /// Shuts the projector down and returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.app.stop().await
    }

    /// The health status of `service`, or `None` if the server does not
    /// answer.
    pub async fn health(&self, service: &str) -> Option<i32> {
        let status = dynabridge_testkit::health_status(self.health_addr, service).await?;
        Some(status as i32)
    }

    pub async fn wait_serving(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        for service in ["", projector::HEALTH_SERVICE] {
            eventually("the projector to be serving", || async {
                (self.health(service).await == Some(ServingStatus::Serving as i32)).then_some(())
            })
            .await;
        }
    }
}

/// The sink's lines, parsed.
pub fn sink_lines(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every sink line is JSON"))
        .collect()
}

/// Waits until the sink holds `n` lines.
pub async fn wait_sink_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    eventually(&format!("{n} lines in {}", path.display()), || async {
        let lines = sink_lines(path);
        (lines.len() >= n).then_some(lines)
    })
    .await
}

pub fn sink_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn at(version: Version) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(version)
}

fn stored(version: Version, event: Event) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::new_v4(),
        version,
        occurred_at: at(version),
        request_id: format!("req-{}", Uuid::new_v4()),
        correlation_id: format!("corr-{version}"),
        trace_parent: None,
        event,
    }
}

/// A new user: created as `Ann`, renamed `Annie`, then given a new email.
pub fn user_history() -> Vec<StoredEvent> {
    let user_id = UserId::new_random();
    vec![
        stored(
            1,
            Event::UserCreated {
                user_id,
                email: Email::parse("ann@example.com").unwrap(),
                name: UserName::parse("Ann").unwrap(),
            },
        ),
        stored(
            2,
            Event::UserProfileUpdated {
                user_id,
                name: Some(UserName::parse("Annie").unwrap()),
                email: None,
            },
        ),
        stored(
            3,
            Event::UserProfileUpdated {
                user_id,
                name: None,
                email: Some(Email::parse("annie@example.com").unwrap()),
            },
        ),
    ]
}

/// A new order: created, processing, shipped.
pub fn order_history() -> Vec<StoredEvent> {
    let order_id = OrderId::new_random();
    let status = |version, status, previous_status| {
        stored(
            version,
            Event::OrderStatusUpdated {
                order_id,
                status,
                previous_status,
            },
        )
    };
    vec![
        stored(
            1,
            Event::OrderCreated {
                order_id,
                user_id: UserId::new_random(),
                items: vec![OrderLine {
                    sku: Sku::parse("book-1").unwrap(),
                    quantity: Quantity::parse(3).unwrap(),
                    unit_price: Money::parse("EUR", 1250).unwrap(),
                }],
                total: Money::parse("EUR", 3750).unwrap(),
                shipping_address: None,
                purchase_id: None,
            },
        ),
        status(2, OrderStatus::Processing, OrderStatus::Created),
        status(3, OrderStatus::Shipped, OrderStatus::Processing),
    ]
}
