//! `loadgen`: drives dynabridge with gRPC load and measures it.
//!
//! - `loadgen suite` runs the standard benchmark on the embedded store, each
//!   scenario beside its storage and transport ceilings and the peer
//!   (cqrs-es with dynamo-es), and writes `BENCHMARKS.md`.
//! - `loadgen run` puts a scenario mix on any deployment, given its
//!   endpoints: a capacity-planning tool.
//! - `loadgen rebuild` measures a read-model rebuild beside a bulk load of
//!   the same events and their live projection.
//! - `loadgen serve` runs one part of the system in its own process; the
//!   suite starts those itself.
//!
//! Every run is bounded in operations and in time.
#![forbid(unsafe_code)]

mod capacity;
mod ceiling;
mod delay;
mod echo;
mod embedded;
mod hot_sku;
mod library;
mod load;
mod ops;
mod peer;
mod procs;
mod rebuild;
mod report;
mod serve;
mod shapes;
mod snapshots;
mod suite;

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::load::{Limits, Outcome};

/// Orders `loadgen run` creates for each user, and the page size of its
/// listings: a full page each.
const ORDERS_PER_USER: i32 = 20;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator and benchmark suite for dynabridge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The standard suite on the embedded store; writes BENCHMARKS.md.
    Suite(suite::SuiteArgs),
    /// A scenario mix against running services.
    Run(RunArgs),
    /// Rebuild throughput beside a bulk load, the live projection and a
    /// trimmed window's read-back, on one local stack.
    Rebuild(rebuild::RebuildArgs),
    /// Loading a product of many events with and without its snapshot.
    Snapshots(snapshots::SnapshotArgs),
    /// Purchases of one popular product, with and without batching, beside
    /// the bound of one append per store round trip.
    HotSku(hot_sku::HotSkuArgs),
    /// One part of the system in this process (used by `suite`).
    #[command(hide = true)]
    Serve {
        /// The endpoint is the embedded store.
        #[arg(long)]
        embedded: bool,
        #[command(subcommand)]
        role: serve::Role,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The command service's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    command: String,
    /// The query service's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    query: String,
    /// Scenarios and their share of the clients, e.g.
    /// `create-user=1,update-order-status=2,get-user-profile=4,list-orders-by-user=1`.
    /// Scenarios: create-user, update-order-status, get-user-profile,
    /// list-orders-by-user.
    #[arg(long, default_value = "create-user=1")]
    mix: String,
    /// Concurrent clients in all, each on its own connection, shared out by
    /// the mix's weights (at least one per scenario).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Longest duration of the run, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Most operations of each scenario.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    CreateUser,
    UpdateOrderStatus,
    GetUserProfile,
    ListOrdersByUser,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Self::CreateUser,
        Self::UpdateOrderStatus,
        Self::GetUserProfile,
        Self::ListOrdersByUser,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::CreateUser => "create-user",
            Self::UpdateOrderStatus => "update-order-status",
            Self::GetUserProfile => "get-user-profile",
            Self::ListOrdersByUser => "list-orders-by-user",
        }
    }
}

/// `name=weight,...` into scenarios and weights.
fn parse_mix(mix: &str) -> anyhow::Result<Vec<(Scenario, usize)>> {
    let mut out: Vec<(Scenario, usize)> = Vec::new();
    for part in mix.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let scenario = Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| format!("unknown scenario {name:?}"))?;
        let weight: usize = weight
            .parse()
            .with_context(|| format!("weight of {name} is not a whole number"))?;
        if weight == 0 {
            bail!("weight of {name} must be at least 1");
        }
        if out.iter().any(|(s, _)| *s == scenario) {
            bail!("{name} appears twice in the mix");
        }
        out.push((scenario, weight));
    }
    if out.is_empty() {
        bail!("the mix names no scenario");
    }
    Ok(out)
}

/// Shares `concurrency` clients out by weight, at least one each.
fn share(concurrency: usize, weights: &[usize]) -> Vec<usize> {
    let total: usize = weights.iter().sum();
    weights
        .iter()
        .map(|w| (concurrency * w / total.max(1)).max(1))
        .collect()
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mix = parse_mix(&args.mix)?;
    let clients = share(
        args.concurrency,
        &mix.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
    );
    let limits = |concurrency| Limits {
        concurrency,
        max_ops: args.count,
        max_duration: Duration::from_secs(args.duration),
    };
    // Fixtures first, outside the measured run.
    let needs = |s: Scenario| mix.iter().any(|(m, _)| *m == s);
    let mut users = Vec::new();
    let mut orders = Vec::new();
    if needs(Scenario::UpdateOrderStatus)
        || needs(Scenario::GetUserProfile)
        || needs(Scenario::ListOrdersByUser)
    {
        let order_count = if needs(Scenario::UpdateOrderStatus) {
            (args.count as usize).div_ceil(ops::STATUS_PATH.len())
        } else {
            0
        };
        let user_count = order_count.div_ceil(ORDERS_PER_USER as usize).max(64);
        eprintln!(
            "creating {user_count} users and {} orders",
            order_count.max(user_count * ORDERS_PER_USER as usize)
        );
        users = ops::create_users(&args.command, user_count, 16).await?;
        let created =
            ops::create_orders(&args.command, &users, ORDERS_PER_USER as usize, 16).await?;
        let (last_order, _) = created.last().cloned().context("orders were created")?;
        orders = created.into_iter().map(|(o, _)| o).collect();
        if needs(Scenario::GetUserProfile) || needs(Scenario::ListOrdersByUser) {
            eprintln!("waiting for the read models");
            ops::await_order(&args.query, &last_order, 1).await?;
            ops::await_read_models(&args.query, &users, ORDERS_PER_USER).await?;
        }
    }
    eprintln!("running {} for at most {} s", args.mix, args.duration);
    let runs = mix.iter().zip(&clients).map(|((scenario, _), &n)| {
        let (command, query, users, orders) = (&args.command, &args.query, &users, &orders);
        async move {
            let outcome = match scenario {
                Scenario::CreateUser => ops::run_create_user(command, limits(n)).await,
                Scenario::UpdateOrderStatus => {
                    ops::run_update_order_status(command, orders, limits(n)).await
                }
                Scenario::GetUserProfile => {
                    ops::run_get_user_profile(query, users, limits(n)).await
                }
                Scenario::ListOrdersByUser => {
                    ops::run_list_orders_by_user(query, users, ORDERS_PER_USER, limits(n)).await
                }
            };
            (*scenario, n, outcome)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut table = report::Table::new(&[
        "scenario", "clients", "ops", "ops/s", "p50 ms", "p99 ms", "p999 ms", "errors",
    ]);
    for (scenario, n, outcome) in results {
        let outcome: Outcome = outcome?;
        let [rate, p50, p99, p999] = report::rate_and_latency(&outcome);
        table.row(vec![
            scenario.name().to_owned(),
            n.to_string(),
            report::int(outcome.ops as f64),
            rate,
            p50,
            p99,
            p999,
            outcome.errors.to_string(),
        ]);
        if let Some(error) = &outcome.first_error {
            eprintln!("{}: first error: {error}", scenario.name());
        }
    }
    println!("{}", table.render());
    Ok(())
}

// mimalloc instead of the system allocator: allocation is a large share of
// each request's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { embedded, role } => {
            dynabridge_runtime::grpc::init_tracing();
            serve::run(role, embedded).await
        }
        Command::Suite(args) => suite::run(args).await,
        Command::Run(args) => run(args).await,
        Command::Rebuild(args) => rebuild::run(args).await,
        Command::Snapshots(args) => snapshots::run(args).await,
        Command::HotSku(args) => hot_sku::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_with_weights_and_defaults() {
        let mix = parse_mix("create-user=1, get-user-profile=3,list-orders-by-user").unwrap();
        assert_eq!(
            mix,
            vec![
                (Scenario::CreateUser, 1),
                (Scenario::GetUserProfile, 3),
                (Scenario::ListOrdersByUser, 1)
            ]
        );
        assert!(parse_mix("nope=1").is_err());
        assert!(parse_mix("create-user=0").is_err());
        assert!(parse_mix("create-user,create-user").is_err());
        assert!(parse_mix("").is_err());
    }

    #[test]
    fn clients_are_shared_by_weight_with_one_each_at_least() {
        assert_eq!(share(16, &[1, 3]), vec![4, 12]);
        assert_eq!(share(2, &[1, 10]), vec![1, 1]);
    }
}
