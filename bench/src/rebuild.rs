//! `loadgen rebuild`: how fast the read models are rebuilt from the event
//! store, beside how fast the same events were bulk-loaded and projected
//! live, and how fast the projector reads back a window the stream trimmed,
//! all in one run on one local stack (in memory, every port free).
//!
//! The events are written straight into the event store with
//! `BatchWriteItem` (a bulk load, as a migration or an import would write
//! them), which the projector then projects from the stream as it would any
//! append. Then each rebuild builds a new generation from a scan of the
//! event store, without switching to it, and the generation is dropped
//! before the next. Last, a trimmed window caught up end to end: the same
//! events loaded into a second set of tables, and a projector started there
//! whose checkpoint the stream has trimmed past (the stream as DynamoDB
//! shows it a day later: [`TrimmedBefore`]), which reads them from the
//! event store, applies and publishes them. Bounded: at most a million
//! events, and every wait has a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::Utc;
use dynabridge::pb;
use dynabridge::pb::admin_service_client::AdminServiceClient;
use dynabridge::schema::Tables;
use dynabridge_domain::{
    Email, Event, Money, OrderId, OrderLine, OrderStatus, Quantity, Sku, StoredEvent, UserId,
    UserName,
};
use dynabridge_event_store::codec::event_to_item;
use dynabridge_runtime::service::{Host, Service as _};
use futures_util::StreamExt as _;
use projector::catchup::{CatchUpSource as _, EventStoreCatchUp};
use projector::stream::{
    RecordPage, SdkStreams, ShardPage, StartPosition, StreamApi, StreamError, list_shards,
};
use tonic::transport::Channel;

/// Events per user and order pair: a user created and renamed, an order
/// created, processed and shipped.
const EVENTS_PER_PAIR: u64 = 5;
/// The most events a run loads.
const MAX_EVENTS: u64 = 1_000_000;
/// `BatchWriteItem` calls in flight while loading.
const LOAD_IN_FLIGHT: usize = 8;
/// How long any one step may take.
const STEP_LIMIT: Duration = Duration::from_secs(900);

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Events to load (a multiple of 5: users and their orders).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Scan segments of each rebuild, one rebuild per value.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    segments: Vec<i32>,
}

/// The events of one user and one order of theirs, each at its own time
/// after `start`.
fn pair(start: chrono::DateTime<Utc>, i: u64) -> anyhow::Result<Vec<StoredEvent>> {
    let user_id = UserId::new_random();
    let order_id = OrderId::new_random();
    let at = |n: u64| {
        start + chrono::Duration::microseconds(i64::try_from(i * EVENTS_PER_PAIR + n).unwrap_or(0))
    };
    let stored = |version, event, n| StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version,
        occurred_at: at(n),
        request_id: uuid::Uuid::new_v4().to_string(),
        correlation_id: "bench-rebuild".into(),
        trace_parent: None,
        event,
    };
    let price = Money::parse("EUR", 250)?;
    let status = |status, previous_status| Event::OrderStatusUpdated {
        order_id,
        status,
        previous_status,
    };
    Ok(vec![
        stored(
            1,
            Event::UserCreated {
                user_id,
                email: Email::parse(&format!("user{i}@example.com"))?,
                name: UserName::parse("Bench User")?,
            },
            0,
        ),
        stored(
            2,
            Event::UserProfileUpdated {
                user_id,
                name: Some(UserName::parse("Bench User Renamed")?),
                email: None,
            },
            1,
        ),
        stored(
            1,
            Event::OrderCreated {
                order_id,
                user_id,
                items: vec![OrderLine {
                    sku: Sku::parse("widget")?,
                    quantity: Quantity::parse(2)?,
                    unit_price: price,
                }],
                total: Money::parse("EUR", 500)?,
                shipping_address: None,
                purchase_id: None,
            },
            2,
        ),
        stored(2, status(OrderStatus::Processing, OrderStatus::Created), 3),
        stored(3, status(OrderStatus::Shipped, OrderStatus::Processing), 4),
    ])
}

/// Writes `items` with `BatchWriteItem`, 25 at a time, again for whatever
/// comes back unprocessed.
pub(crate) async fn load(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
) -> anyhow::Result<()> {
    let batches: Vec<Vec<WriteRequest>> = items
        .chunks(25)
        .map(|chunk| {
            chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    let mut writes = futures_util::stream::iter(batches)
        .map(|mut batch| async move {
            while !batch.is_empty() {
                let out = client
                    .batch_write_item()
                    .request_items(table, batch)
                    .send()
                    .await
                    .context("BatchWriteItem")?;
                batch = out
                    .unprocessed_items
                    .and_then(|mut left| left.remove(table))
                    .unwrap_or_default();
            }
            anyhow::Ok(())
        })
        .buffer_unordered(LOAD_IN_FLIGHT);
    while let Some(done) = writes.next().await {
        done?;
    }
    Ok(())
}

async fn wait_for<T>(
    what: &str,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {STEP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows of a generation at their last version: (users at 2, orders at 3).
async fn final_rows(
    client: &aws_sdk_dynamodb::Client,
    tables: &dynabridge::schema::ReadModelTables,
) -> anyhow::Result<(u64, u64)> {
    let count = async |table: &str, version: i64| -> anyhow::Result<u64> {
        let mut count = 0u64;
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(table)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .filter_expression("#v = :v")
                .expression_attribute_names("#v", dynabridge::schema::read_model::VERSION)
                .expression_attribute_values(
                    ":v",
                    aws_sdk_dynamodb::types::AttributeValue::N(version.to_string()),
                )
                .set_exclusive_start_key(start)
                .send()
                .await
                .context("counting rows")?;
            count += u64::try_from(page.count).unwrap_or(0);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(count),
            }
        }
    };
    Ok((
        count(&tables.user_profiles, 2).await?,
        count(&tables.order_summaries, 3).await?,
    ))
}

/// The stream as DynamoDB shows it once its records up to `horizon` are
/// past the 24 hours it keeps them: an iterator after an earlier record is
/// refused as trimmed, and the trim horizon is just after `horizon`.
struct TrimmedBefore {
    inner: SdkStreams,
    horizon: String,
}

/// Whether sequence number `a` comes before `b` (both decimal).
fn earlier(a: &str, b: &str) -> bool {
    (a.len(), a) < (b.len(), b)
}

#[async_trait::async_trait]
impl StreamApi for TrimmedBefore {
    async fn describe_shards(
        &self,
        stream_arn: &str,
        exclusive_start_shard_id: Option<String>,
    ) -> Result<ShardPage, StreamError> {
        self.inner
            .describe_shards(stream_arn, exclusive_start_shard_id)
            .await
    }

    async fn shard_iterator(
        &self,
        stream_arn: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, StreamError> {
        let position = match position {
            StartPosition::TrimHorizon => StartPosition::After(self.horizon.clone()),
            StartPosition::After(seq) if earlier(seq, &self.horizon) => {
                return Err(StreamError::Trimmed);
            }
            other => other.clone(),
        };
        self.inner
            .shard_iterator(stream_arn, shard_id, &position)
            .await
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError> {
        self.inner.get_records(iterator, limit).await
    }
}

/// Loads `items` into a second set of tables, `prefix`, with no projector
/// there; then starts one whose checkpoint (a day old, before the load)
/// the stream has trimmed past, and times it from its start until every
/// row is at its last version: the window read from the event store,
/// applied and published.
async fn trimmed_catch_up(
    sdk: &aws_config::SdkConfig,
    aws: &dynabridge_aws::AwsArgs,
    prefix: &str,
    items: Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    pairs: u64,
) -> anyhow::Result<Duration> {
    use aws_sdk_dynamodb::types::AttributeValue;
    use dynabridge::schema::checkpoints as attr;

    let client = dynabridge_aws::dynamodb_client(sdk);
    let tables = Tables::new(prefix);
    dynabridge_provision::ensure_tables(&client, &tables)
        .await
        .context("the trimmed run's tables")?;
    let day_ago = Utc::now() - chrono::Duration::days(1);
    load(&client, &tables.event_store(), items).await?;
    let stream_arn = client
        .describe_table()
        .table_name(tables.event_store())
        .send()
        .await?
        .table
        .and_then(|t| t.latest_stream_arn)
        .context("the event store has no stream")?;
    let streams = SdkStreams::new(dynabridge_aws::streams_client(sdk));
    let shards = list_shards(&streams, &stream_arn)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let [shard] = shards.as_slice() else {
        bail!("expected one shard, found {}", shards.len());
    };
    // The horizon: the load's last record.
    let mut iterator = Some(
        streams
            .shard_iterator(&stream_arn, &shard.id, &StartPosition::TrimHorizon)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let mut horizon = None;
    while let Some(at) = iterator.take() {
        let page = streams
            .get_records(&at, 1000)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if page.records.is_empty() {
            break;
        }
        horizon = page.records.last().map(|r| r.sequence_number.clone());
        iterator = page.next_iterator;
    }
    let horizon = horizon.context("the stream has no records")?;
    // A projector that stopped a day ago, before the load.
    client
        .put_item()
        .table_name(tables.checkpoints())
        .item(attr::STREAM_ARN, AttributeValue::S(stream_arn.clone()))
        .item(attr::SHARD_ID, AttributeValue::S(shard.id.clone()))
        .item(attr::SEQUENCE_NUMBER, AttributeValue::S("0".into()))
        .item(
            attr::LAST_EVENT_TIME,
            AttributeValue::S(dynabridge::convert::format_time(day_ago)),
        )
        .send()
        .await
        .context("the day-old checkpoint")?;

    let sink =
        std::env::temp_dir().join(format!("dynabridge-trimmed-{}.jsonl", std::process::id()));
    let config = projector::Config {
        store: dynabridge_runtime::config::StoreArgs {
            table_prefix: prefix.into(),
            aws: aws.clone(),
        },
        health_listen: "127.0.0.1:0".parse()?,
        event_bus: None,
        event_source: "dynabridge".into(),
        sink_path: sink.clone(),
        max_concurrent_writes: projector::Config::DEFAULT_MAX_CONCURRENT_WRITES,
        consumer: projector::ConsumerArgs {
            idle_poll_max_ms: 100,
            ..projector::ConsumerArgs::default()
        },
        metrics_listen: None,
    };
    let started = Instant::now();
    let app = projector::App::build(config, &Host::new(sdk.clone()))
        .await?
        .with_streams(Arc::new(TrimmedBefore {
            inner: streams,
            horizon,
        }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let served = tables.read_models(0);
    wait_for("the trimmed window caught up", async || {
        Ok((final_rows(&client, &served).await? == (pairs, pairs)).then_some(()))
    })
    .await?;
    let took = started.elapsed();
    let _ = stop.send(());
    running.await.context("the projector's task")??;
    let published = std::fs::read_to_string(&sink)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&sink);
    let events = pairs * EVENTS_PER_PAIR;
    if published as u64 != events {
        bail!("the catch-up published {published} of {events} events");
    }
    Ok(took)
}

fn per_second(events: u64, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}

pub async fn run(args: RebuildArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.events > MAX_EVENTS || !args.events.is_multiple_of(EVENTS_PER_PAIR)
    {
        bail!("--events must be a multiple of {EVENTS_PER_PAIR}, 5 to {MAX_EVENTS}");
    }
    if args.segments.iter().any(|s| !(1..=64).contains(s)) {
        bail!("--segments must be 1 to 64 each");
    }
    let prefix = "rebuild";
    let stack = local_stack::start(local_stack::Options {
        in_memory: true,
        table_prefix: prefix.into(),
        command_port: 0,
        query_port: 0,
        projector_health_port: 0,
        admin_port: 0,
        process_manager_health_port: 0,
        metrics_port: 0,
        dynamodb_port: 0,
        ..local_stack::Options::default()
    })
    .await
    .context("starting the local stack")?;
    let endpoints = stack.endpoints().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(stack.run_until(async move {
        let _ = stopped.await;
    }));
    let aws = dynabridge_aws::AwsArgs {
        endpoint_url: Some(endpoints.dynamodb_url()),
        region: Some("us-east-1".into()),
    };
    let sdk = local_stack::embedded_sdk_config(&aws, true).await;
    let client = dynabridge_aws::dynamodb_client(&sdk);
    let tables = Tables::new(prefix);
    let mut admin = AdminServiceClient::new(
        Channel::from_shared(format!("http://{}", endpoints.admin))?.connect_lazy(),
    );

    let pairs = args.events / EVENTS_PER_PAIR;
    let now = Utc::now();
    let mut items = Vec::with_capacity(usize::try_from(args.events)?);
    for i in 0..pairs {
        items.extend(pair(now, i)?.iter().map(event_to_item));
    }
    eprintln!(
        "loading {} events ({pairs} users, {pairs} orders)",
        items.len()
    );
    let trimmed_items = items.clone();
    let started = Instant::now();
    load(&client, &tables.event_store(), items).await?;
    let loaded = started.elapsed();

    // Projected live: every row of generation 0 at its last version.
    let served = tables.read_models(0);
    wait_for("the projector catching up", async || {
        Ok((final_rows(&client, &served).await? == (pairs, pairs)).then_some(()))
    })
    .await?;
    let projected = started.elapsed();

    // A trimmed window, read back as the projector does: every event of
    // the run through the event-type index.
    let catch_up = EventStoreCatchUp::new(client.clone(), tables.event_store());
    let read_started = Instant::now();
    let read_back = catch_up
        .events_between(None, Utc::now() + chrono::Duration::seconds(1))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let read_back_took = read_started.elapsed();
    if read_back.len() as u64 != args.events {
        bail!("read back {} of {} events", read_back.len(), args.events);
    }

    let mut rebuilds = Vec::new();
    for &segments in &args.segments {
        let asked = Instant::now();
        let generation = admin
            .rebuild_read_models(pb::RebuildReadModelsRequest {
                segments,
                no_switch: true,
                page_size: 0,
            })
            .await?
            .into_inner()
            .generation
            .context("no generation")?
            .generation;
        let built = wait_for("the rebuild", async || {
            let list = admin
                .list_generations(pb::ListGenerationsRequest {})
                .await?
                .into_inner();
            Ok(list
                .generations
                .into_iter()
                .find(|g| {
                    g.generation == generation && g.state == pb::GenerationState::Standby as i32
                })
                .and_then(|g| g.rebuild))
        })
        .await?;
        let wall = asked.elapsed();
        // Every event read, and every row at its last version (the
        // projector may have written some of them first).
        let rows = final_rows(&client, &tables.read_models(generation)).await?;
        if built.events as u64 != args.events || rows != (pairs, pairs) {
            bail!(
                "generation {generation}: {} events read, rows at their last version {rows:?}; expected {} and {pairs} each",
                built.events,
                args.events,
            );
        }
        let scan = match (built.scan_start_time, built.finish_time) {
            (Some(start), Some(end)) => Duration::from_micros(
                u64::try_from(
                    (end.seconds - start.seconds) * 1_000_000
                        + i64::from(end.nanos - start.nanos) / 1_000,
                )
                .unwrap_or(0),
            ),
            _ => bail!("generation {generation}: no scan times"),
        };
        admin
            .drop_generation(pb::DropGenerationRequest { generation })
            .await?;
        rebuilds.push((segments, scan, wall));
    }

    let caught_up = trimmed_catch_up(&sdk, &aws, "trimmed", trimmed_items, pairs).await?;

    println!(
        "| step ({} events, {pairs} users and {pairs} orders) | took | events per second | vs the bulk load |",
        args.events
    );
    println!("| --- | ---: | ---: | ---: |");
    let bulk = per_second(args.events, loaded);
    let row = |what: &str, took: Duration| {
        let rate = per_second(args.events, took);
        println!(
            "| {what} | {:.2} s | {rate:.0} | {:.2}× |",
            took.as_secs_f64(),
            rate / bulk
        );
    };
    row(
        "bulk load (`BatchWriteItem`, 25 a call, 8 in flight)",
        loaded,
    );
    row(
        "projected live from the stream, from the load's start",
        projected,
    );
    row(
        "a trimmed window read back through the event-type index",
        read_back_took,
    );
    row(
        "a trimmed window caught up: read back, applied and published, from the projector's start",
        caught_up,
    );
    for (segments, scan, wall) in &rebuilds {
        row(&format!("rebuild, {segments} segment(s): the scan"), *scan);
        row(
            &format!(
                "rebuild, {segments} segment(s): asked to built (with the wait for the projector)"
            ),
            *wall,
        );
    }
    let _ = stop.send(());
    running
        .await
        .context("the local stack's task")?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
