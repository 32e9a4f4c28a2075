//! `loadgen snapshots`: loading a product with many events, from its first
//! event and from its latest snapshot, side by side in one run on the
//! embedded store (in memory).
//!
//! The product's events (a create, then restocks and reservations taking
//! turns) are written straight into the event store with `BatchWriteItem`.
//! Each round then loads the product the way the command path does
//! ([`load_aggregate`]): once with no snapshot in the table (every event
//! read), once with a snapshot 99 events behind (the most a load reads
//! after one, snapshots being taken every 100 events), and once with one at
//! the last event. Time is per load; capacity units are the store's own
//! `ConsumedCapacity`, from the process's AWS call counters. Every load's
//! state is checked against the full fold. Bounded: at most 100,000 events
//! and 1,000 rounds.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::Utc;
use dynabridge::schema::Tables;
use dynabridge_aws::calls::AwsCallMetrics;
use dynabridge_domain::{
    Event, Money, Product, ProductId, ProductName, PurchaseId, Quantity, Sku, StockLevel,
    StoredEvent,
};
use dynabridge_event_store::codec::event_to_item;
use dynabridge_event_store::{EventStore, StoredSnapshot, load_aggregate};
use uuid::Uuid;

const MAX_EVENTS: i64 = 100_000;
const MAX_ROUNDS: u32 = 1_000;

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Events of the product.
    #[arg(long, default_value_t = 10_000)]
    events: i64,
    /// Loads of each kind.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
}

/// The product's events: created with a stock of 1,000, then a restock of
/// 1 and a reservation of 1 in turn.
fn history(sku: &Sku, events: i64) -> anyhow::Result<Vec<StoredEvent>> {
    let product_id = ProductId::for_sku(sku);
    let start = Utc::now();
    let one = Quantity::parse(1)?;
    (1..=events)
        .map(|version| {
            let event = match version {
                1 => Event::ProductCreated {
                    product_id,
                    sku: sku.clone(),
                    name: ProductName::parse("Hot product")?,
                    unit_price: Money::parse("EUR", 1_999)?,
                    initial_stock: StockLevel::parse(1_000)?,
                    reorder_level: StockLevel::parse(10)?,
                },
                v if v % 2 == 0 => Event::StockReserved {
                    product_id,
                    purchase_id: PurchaseId::new_random(),
                    quantity: one,
                },
                _ => Event::ProductRestocked {
                    product_id,
                    quantity: one,
                },
            };
            Ok(StoredEvent {
                event_id: Uuid::new_v4(),
                version,
                occurred_at: start + chrono::Duration::microseconds(version),
                request_id: format!("bench-snapshot-{version}"),
                correlation_id: "bench-snapshots".into(),
                trace_parent: None,
                event,
            })
        })
        .collect()
}

/// How a kind of load went over its rounds.
#[derive(Debug, Default)]
struct Kind {
    times: Vec<Duration>,
    capacity: f64,
    events_read: usize,
}

impl Kind {
    fn median(&self) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.times.iter().max().copied().unwrap_or_default()
    }
}

fn capacity(tables: &Tables) -> f64 {
    let calls = AwsCallMetrics::global();
    calls.capacity_units("Query", &tables.event_store())
        + calls.capacity_units("GetItem", &tables.snapshots())
}

/// One load, timed, its capacity counted, its state checked.
async fn load_once(
    store: &EventStore,
    tables: &Tables,
    id: Uuid,
    expected: &Product,
    kind: &mut Kind,
) -> anyhow::Result<()> {
    let before = capacity(tables);
    let started = Instant::now();
    let loaded = load_aggregate::<EventStore, Product>(store, id).await?;
    kind.times.push(started.elapsed());
    kind.capacity += capacity(tables) - before;
    kind.events_read = loaded.events_read;
    ensure!(
        loaded.aggregate == *expected,
        "a load folded another state than the full fold"
    );
    Ok(())
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    if !(200..=MAX_EVENTS).contains(&args.events) {
        bail!("--events must be 200 to {MAX_EVENTS}");
    }
    if !(1..=MAX_ROUNDS).contains(&args.rounds) {
        bail!("--rounds must be 1 to {MAX_ROUNDS}");
    }
    let prefix = "snapshots";
    let embedded = crate::embedded::EmbeddedStore::start(prefix).await?;
    let (_, sdk) = crate::embedded::EmbeddedStore::sdk_config(embedded.addr).await;
    let client = dynabridge_aws::dynamodb_client(&sdk);
    let tables = Tables::new(prefix);
    let store = EventStore::new(client.clone(), tables.clone());

    let sku = Sku::parse("HOT-1")?;
    let id = *ProductId::for_sku(&sku).as_uuid();
    let events = history(&sku, args.events)?;
    let fold = |n: usize| {
        events[..n]
            .iter()
            .fold(Product::default(), |p, e| p.apply(&e.event))
    };
    let full = fold(events.len());
    let items = events.iter().map(event_to_item).collect();
    let started = Instant::now();
    crate::rebuild::load(&client, &tables.event_store(), items).await?;
    eprintln!(
        "{} events of one product loaded in {:.1} s",
        events.len(),
        started.elapsed().as_secs_f64()
    );

    let last = events.len();
    let behind = last - 99;
    let snapshot_at = |n: usize| {
        StoredSnapshot::of(id, &fold(n), Utc::now()).context("a product takes snapshots")
    };
    let (trailing, current) = (snapshot_at(behind)?, snapshot_at(last)?);
    let (mut none, mut tail, mut head) = (Kind::default(), Kind::default(), Kind::default());
    let delete = || async {
        client
            .delete_item()
            .table_name(tables.snapshots())
            .key(
                dynabridge::schema::snapshots::AGGREGATE_ID,
                aws_sdk_dynamodb::types::AttributeValue::S(id.to_string()),
            )
            .send()
            .await
            .context("deleting the snapshot")
    };
    // Interleaved, so that whatever drifts over the run drifts for all.
    for _ in 0..args.rounds {
        delete().await?;
        load_once(&store, &tables, id, &full, &mut none).await?;
        store.save_snapshot(&trailing).await?;
        load_once(&store, &tables, id, &full, &mut tail).await?;
        delete().await?;
        store.save_snapshot(&current).await?;
        load_once(&store, &tables, id, &full, &mut head).await?;
    }
    let rounds = f64::from(args.rounds);
    println!(
        "Loading one product of {} events, {} loads of each kind:\n",
        args.events, args.rounds
    );
    println!(
        "| load | events read | median | slowest | capacity units per load | time vs. no snapshot |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let base = none.median().as_secs_f64();
    for (name, kind) in [
        ("every event (no snapshot)", &none),
        ("snapshot 99 events behind", &tail),
        ("snapshot at the last event", &head),
    ] {
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.1} | {:.3}x |",
            kind.events_read,
            kind.median().as_secs_f64() * 1e3,
            kind.max().as_secs_f64() * 1e3,
            kind.capacity / rounds,
            kind.median().as_secs_f64() / base
        );
    }
    embedded.stop().await
}
