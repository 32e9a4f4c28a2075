//! `spawn_app()`: a query service on port 0 over a fresh in-process store,
//! with seeding helpers and a gRPC client.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeZone as _, Utc};
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::schema::Tables;
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
use dynabridge_domain::{Money, OrderId, OrderLine, OrderStatus, Quantity, Sku, UserId, Version};
use dynabridge_read_models::{Item, OrderSummaryRow, UserProfileRow};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::health::HealthArgs;
use dynabridge_runtime::page_token::PageTokenArgs;
use dynabridge_runtime::service::Host;
use dynabridge_testkit::{EmbeddedStore, SpawnedApp, spawn_app as spawn_service};
use query_service::Config;
use tonic::transport::Channel;

/// Every wait in these tests ends by this, so that a hang fails instead of
/// blocking the suite.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub channel: Channel,
    pub client: QueryServiceClient<Channel>,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub tables: Tables,
    server: Option<SpawnedApp>,
    _store: Option<EmbeddedStore>,
}

fn unique_prefix() -> String {
    dynabridge_testkit::unique_prefix("qs-")
}

/// A service over a fresh store with its tables.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// As [`spawn_app`], with `tweak` applied to the configuration.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    try_spawn_app(tweak, None).await.expect("spawning the app")
}

/// A service whose store endpoint nobody listens on.
pub async fn spawn_app_without_store() -> TestApp {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        listener.local_addr().expect("local address")
        // Dropped here: the port is closed.
    };
    try_spawn_app(|_| {}, Some(closed))
        .await
        .expect("spawning the app")
}

async fn try_spawn_app(
    tweak: impl FnOnce(&mut Config),
    store_addr: Option<SocketAddr>,
) -> anyhow::Result<TestApp> {
    let (store_addr, store) = match store_addr {
        Some(addr) => (addr, None),
        None => {
            let store = EmbeddedStore::start().await;
            (store.addr, Some(store))
        }
    };
    let aws = AwsArgs {
        endpoint_url: Some(format!("http://{store_addr}")),
        region: Some("us-east-1".into()),
    };
    let sdk = load_sdk_config(&aws, Some(StaticCredentials::local())).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let prefix = unique_prefix();
    let tables = Tables::new(prefix.clone());
    if store.is_some() {
        dynabridge_provision::ensure_tables(&dynamo, &tables)
            .await
            .context("creating tables")?;
    }

    let mut config = Config {
        store: StoreArgs {
            table_prefix: prefix,
            aws,
        },
        listen: "127.0.0.1:0".parse()?,
        page_tokens: PageTokenArgs {
            page_token_secret: Some("a test secret of at least thirty-two bytes".into()),
        },
        max_wait_ms: 5000,
        health: HealthArgs::default(),
        metrics_listen: None,
    };
    tweak(&mut config);
    let server = spawn_service::<query_service::App>(config, &Host::new(sdk)).await?;
    let channel = server.channel().await;
    Ok(TestApp {
        client: QueryServiceClient::new(channel.clone()),
        channel,
        dynamo,
        tables,
        server: Some(server),
        _store: store,
    })
}

impl TestApp {
    /// Signals shutdown and returns what `run` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.server.take().context("already stopped")?.stop().await
    }

    /// Signals shutdown without waiting for the server to stop.
    pub fn ask_to_stop(&mut self) {
        if let Some(server) = &mut self.server {
            server.ask_to_stop();
        }
    }

    pub async fn put(&self, table: String, item: Item) {
        self.dynamo
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .expect("seeding a row");
    }

    pub async fn put_user(&self, row: &UserProfileRow) {
        self.put(self.tables.user_profiles(), row.to_item()).await;
    }

    pub async fn put_order(&self, row: &OrderSummaryRow) {
        self.put(self.tables.order_summaries(), row.to_item()).await;
    }

    /// A raw item, for rows this build cannot read.
    pub async fn put_raw_user(&self, pairs: &[(&str, &str)]) {
        let item = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), AttributeValue::S((*v).to_owned())))
            .collect();
        self.put(self.tables.user_profiles(), item).await;
    }
}

/// A fixed instant plus `minutes`, so that orders sort by creation.
pub fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
        + chrono::Duration::minutes(minutes)
}

pub fn user_row(user_id: UserId, email: &str, name: &str, version: Version) -> UserProfileRow {
    UserProfileRow {
        user_id: user_id.to_string(),
        email: email.to_owned(),
        name: name.to_owned(),
        version,
        created_at: at(0),
        updated_at: at(version),
    }
}

pub fn order_row(
    order_id: OrderId,
    user_id: UserId,
    status: OrderStatus,
    created_minute: i64,
    version: Version,
) -> OrderSummaryRow {
    let unit_price = Money::parse("EUR", 250).expect("money");
    OrderSummaryRow {
        order_id: order_id.to_string(),
        user_id: user_id.to_string(),
        items: vec![OrderLine {
            sku: Sku::parse("SKU-1").expect("sku"),
            quantity: Quantity::parse(2).expect("quantity"),
            unit_price,
        }],
        total: Money::parse("EUR", 500).expect("money"),
        status,
        shipping_address: None,
        version,
        created_at: at(created_minute),
        updated_at: at(created_minute + version),
        purchase_id: None,
    }
}
