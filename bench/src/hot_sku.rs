//! `loadgen hot-sku`: purchases of one popular product, from many clients
//! at once, through the command service and the process manager, beside
//! the bound of one append per store round trip. All in one run, on the
//! embedded store (in memory), on the same machine.
//!
//! Every purchase is of one unit of the same sku, whose stock outlasts the
//! run: every reservation lands on the product, so each is an append to one
//! aggregate. Taken one at a time, a product takes at most one reservation
//! per store round trip (the bound, measured here as the median of
//! sequential appends to one aggregate). The process manager with batching
//! decides the reservations that arrive while one is being appended
//! together, and appends them in one transaction. Measured: purchases
//! reserved per second, from the first request to the last reservation
//! stored, with batching and without. Bounded: at most 20,000 purchases, a
//! time limit on each run, and the clients stop at the count.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::schema::{Tables, event_store};
use dynabridge_domain::{Money, ProductCommand, ProductName, Quantity, Sku, StockLevel};
use dynabridge_runtime::config::StoreArgs;
use dynabridge_runtime::health::HealthArgs;
use dynabridge_runtime::service::{Host, Service as _};
use tonic::transport::Channel;

const MAX_PURCHASES: usize = 20_000;
const RUN_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct HotSkuArgs {
    /// Purchases per run (one unit each, all of one sku).
    #[arg(long, default_value_t = 3_000)]
    purchases: usize,
    /// Clients asking at once.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Sequential appends timed for the bound.
    #[arg(long, default_value_t = 300)]
    appends: usize,
    /// Added to each of the store's round trips, in milliseconds, by a
    /// proxy in front of it: about DynamoDB's within a region. The embedded
    /// store answers in microseconds, so without it every run measures this
    /// machine's CPU, not waiting on round trips. 0 turns it off.
    #[arg(long, default_value_t = 5)]
    store_latency_ms: u64,
}

/// What one run measured.
#[derive(Debug)]
struct Run {
    purchases: usize,
    /// From the first request to the last reservation stored, the process
    /// manager running throughout.
    end_to_end: Duration,
    /// A backlog of as many purchases, asked with the process manager
    /// stopped, reserved from its start: the reservations alone.
    backlog: Duration,
    /// The process manager's `TransactWriteItems` on the backlog.
    transactions: u64,
}

impl Run {
    fn end_to_end_per_second(&self) -> f64 {
        self.purchases as f64 / self.end_to_end.as_secs_f64()
    }

    fn backlog_per_second(&self) -> f64 {
        self.purchases as f64 / self.backlog.as_secs_f64()
    }
}

/// The product's events now: 1 + its reservations.
async fn product_events(
    client: &aws_sdk_dynamodb::Client,
    tables: &Tables,
    id: &str,
) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(tables.event_store())
            .key_condition_expression("#id = :id")
            .expression_attribute_names("#id", event_store::AGGREGATE_ID)
            .expression_attribute_values(":id", AttributeValue::S(id.to_owned()))
            .select(Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("counting the product's events")?;
        count += usize::try_from(page.count).unwrap_or(0);
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(count),
        }
    }
}

/// The services of one run, on tables of their own.
struct Services {
    channel: Channel,
    product_id: String,
    user_id: String,
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

async fn until(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A command service on fresh tables, a buyer and the hot product.
async fn services(
    aws: &dynabridge_aws::AwsArgs,
    sdk: &aws_config::SdkConfig,
    prefix: &str,
) -> anyhow::Result<Services> {
    let client = dynabridge_aws::dynamodb_client(sdk);
    let tables = Tables::new(prefix);
    dynabridge_provision::ensure_tables(&client, &tables)
        .await
        .context("provisioning")?;
    let command = command_service::App::build(
        command_service::Config {
            store: StoreArgs {
                table_prefix: prefix.into(),
                aws: aws.clone(),
            },
            listen: "127.0.0.1:0".parse()?,
            aggregate_cache_capacity: command_service::commands::AggregateCache::DEFAULT_CAPACITY,
            append_max_in_flight: dynabridge_event_store::EventStore::DEFAULT_MAX_IN_FLIGHT,
            health: HealthArgs::default(),
            metrics_listen: None,
        },
        &Host::new(sdk.clone()),
    )
    .await?;
    let addr = command.local_addr();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = vec![tokio::spawn(command.run_until(until(stopped)))];
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    let mut commands = CommandServiceClient::new(channel.clone());
    let user = commands
        .create_user(pb::CreateUserRequest {
            request_id: format!("{prefix}-buyer"),
            email: "buyer@example.com".into(),
            name: "Buyer".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let product = commands
        .create_product(pb::CreateProductRequest {
            request_id: format!("{prefix}-hot"),
            sku: "HOT".into(),
            name: "Hot".into(),
            unit_price: Some(pb::Money {
                currency_code: "EUR".into(),
                amount_minor: 100,
            }),
            initial_stock: StockLevel::MAX,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Services {
        channel,
        product_id: product.product_id,
        user_id: user.user_id,
        client,
        tables,
        stop,
        tasks,
    })
}

impl Services {
    /// Starts a process manager, with or without batching.
    async fn start_process_manager(
        &mut self,
        aws: &dynabridge_aws::AwsArgs,
        sdk: &aws_config::SdkConfig,
        batching: bool,
    ) -> anyhow::Result<()> {
        let process = process_manager::App::build(
            process_manager::Config {
                store: StoreArgs {
                    table_prefix: self.tables.prefix.clone(),
                    aws: aws.clone(),
                },
                health_listen: "127.0.0.1:0".parse()?,
                max_concurrent_steps: process_manager::Config::DEFAULT_MAX_CONCURRENT_STEPS,
                step_batching: batching,
                consumer: dynabridge_stream::config::ConsumerArgs {
                    idle_poll_max_ms: 20,
                    ..dynabridge_stream::config::ConsumerArgs::default()
                },
                metrics_listen: None,
            },
            &Host::new(sdk.clone()),
        )
        .await?;
        self.tasks.push(tokio::spawn(
            process.run_until(until(self.stop.subscribe())),
        ));
        Ok(())
    }

    /// `count` purchases of one unit, from `clients` clients at once.
    async fn ask(&self, tag: &str, count: usize, clients: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let mut commands = CommandServiceClient::new(self.channel.clone());
                let (next, user_id) = (next.clone(), self.user_id.clone());
                let tag = tag.to_owned();
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= count || started.elapsed() > RUN_LIMIT {
                            return anyhow::Ok(());
                        }
                        commands
                            .purchase_products(pb::PurchaseProductsRequest {
                                request_id: format!("{tag}-{n}"),
                                user_id: user_id.clone(),
                                items: vec![pb::PurchaseItem {
                                    sku: "HOT".into(),
                                    quantity: 1,
                                }],
                                ..Default::default()
                            })
                            .await
                            .context("a purchase")?;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// Waits until the product holds `reserved` reservations.
    async fn reserved(&self, reserved: usize, started: Instant) -> anyhow::Result<()> {
        loop {
            let now = product_events(&self.client, &self.tables, &self.product_id).await? - 1;
            if now >= reserved {
                return Ok(());
            }
            if started.elapsed() > RUN_LIMIT {
                bail!("{now} of {reserved} reserved in {RUN_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.context("a service")??;
        }
        Ok(())
    }
}

fn transact_calls() -> u64 {
    dynabridge_aws::calls::AwsCallMetrics::global()
        .calls(dynabridge_aws::calls::DYNAMODB, "TransactWriteItems")
}

/// One run on fresh tables: first a backlog of purchases asked with no
/// process manager, reserved once one starts (with or without batching);
/// then as many again, asked with it running.
async fn run_once(
    args: &HotSkuArgs,
    aws: &dynabridge_aws::AwsArgs,
    sdk: &aws_config::SdkConfig,
    prefix: &str,
    batching: bool,
) -> anyhow::Result<Run> {
    let mut services = services(aws, sdk, prefix).await?;
    services
        .ask("backlog", args.purchases, args.clients)
        .await?;
    let before = transact_calls();
    let started = Instant::now();
    services.start_process_manager(aws, sdk, batching).await?;
    services.reserved(args.purchases, started).await?;
    let backlog = started.elapsed();
    let transactions = transact_calls() - before;
    let started = Instant::now();
    services.ask("live", args.purchases, args.clients).await?;
    services.reserved(2 * args.purchases, started).await?;
    let end_to_end = started.elapsed();
    eprintln!(
        "batching {batching}: a backlog of {} reserved in {:.2} s; as many more, asked live, in {:.2} s",
        args.purchases,
        backlog.as_secs_f64(),
        end_to_end.as_secs_f64()
    );
    services.stop().await?;
    Ok(Run {
        purchases: args.purchases,
        end_to_end,
        backlog,
        transactions,
    })
}

/// The median time of one append to one aggregate, taken one after
/// another: restocks of one product through the command path (its cache
/// spares the read, so each is one `TransactWriteItems`).
async fn append_round_trip(
    sdk: &aws_config::SdkConfig,
    prefix: &str,
    appends: usize,
) -> anyhow::Result<Duration> {
    let client = dynabridge_aws::dynamodb_client(sdk);
    let tables = Tables::new(prefix);
    dynabridge_provision::ensure_tables(&client, &tables)
        .await
        .context("provisioning")?;
    let metrics = command_service::commands::AggregateCacheMetrics::new()?;
    let handler = command_service::commands::CommandHandler::new(
        dynabridge_event_store::EventStore::new(client, tables),
    )
    .with_aggregate_cache(command_service::commands::AggregateCache::new(
        1_000, metrics,
    ));
    let sku = Sku::parse("BOUND")?;
    let meta = |n: usize| -> anyhow::Result<command_service::commands::CommandMeta> {
        Ok(command_service::commands::CommandMeta {
            request_id: command_service::commands::RequestId::parse(&format!(
                "{prefix}-bound-{n}"
            ))?,
            request_hash: format!("hash-{n}"),
            correlation_id: format!("{prefix}-bound"),
            trace_parent: None,
            expected_version: None,
        })
    };
    handler
        .product(
            &meta(0)?,
            &ProductCommand::Create {
                sku: sku.clone(),
                name: ProductName::parse("Bound")?,
                unit_price: Money::parse("EUR", 1)?,
                initial_stock: StockLevel::ZERO,
                reorder_level: StockLevel::ZERO,
            },
        )
        .await?;
    let mut times = Vec::with_capacity(appends);
    for n in 1..=appends {
        let started = Instant::now();
        handler
            .product(
                &meta(n)?,
                &ProductCommand::Restock {
                    sku: sku.clone(),
                    quantity: Quantity::parse(1)?,
                },
            )
            .await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

pub async fn run(args: HotSkuArgs) -> anyhow::Result<()> {
    if !(1..=MAX_PURCHASES).contains(&args.purchases) {
        bail!("--purchases must be 1 to {MAX_PURCHASES}");
    }
    if !(1..=1024).contains(&args.clients)
        || !(10..=10_000).contains(&args.appends)
        || args.store_latency_ms > 1_000
    {
        bail!("--clients must be 1 to 1024, --appends 10 to 10000, --store-latency-ms 0 to 1000");
    }
    let embedded = crate::embedded::EmbeddedStore::start("hot").await?;
    let store = if args.store_latency_ms == 0 {
        embedded.addr
    } else {
        crate::delay::start(embedded.addr, Duration::from_millis(args.store_latency_ms))
            .await
            .context("starting the latency proxy")?
    };
    let (aws, sdk) = crate::embedded::EmbeddedStore::sdk_config(store).await;

    let round_trip = append_round_trip(&sdk, "bound", args.appends).await?;
    let bound = 1.0 / round_trip.as_secs_f64();
    let alone = run_once(&args, &aws, &sdk, "alone", false).await?;
    let together = run_once(&args, &aws, &sdk, "batched", true).await?;
    println!(
        "{} purchases of one sku (one unit each) from {} clients, through the command service and the process manager; the store's round trips {} ms longer:\n",
        args.purchases, args.clients, args.store_latency_ms
    );
    println!(
        "| | reservations per second, a backlog | vs the bound | the backlog's TransactWriteItems | purchases per second, asked and reserved live | vs the bound |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| the bound: one append per store round trip ({:.2} ms median of {} sequential appends to one product) | {bound:.0} | 1.00x | | {bound:.0} | 1.00x |",
        round_trip.as_secs_f64() * 1e3,
        args.appends
    );
    for (name, run) in [
        ("each reservation alone", &alone),
        ("reservations decided together (batching)", &together),
    ] {
        println!(
            "| {name} | {:.0} | {:.2}x | {} | {:.0} | {:.2}x |",
            run.backlog_per_second(),
            run.backlog_per_second() / bound,
            run.transactions,
            run.end_to_end_per_second(),
            run.end_to_end_per_second() / bound
        );
    }
    embedded.stop().await
}
