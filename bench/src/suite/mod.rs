//! `loadgen suite`: the standard benchmark on the embedded store. Every part
//! runs in its own process (`loadgen serve`), so that each one's CPU time
//! and metrics are its own; every scenario is measured in the same run as
//! its ceilings and the peer, and the results replace the suite's section
//! of `BENCHMARKS.md`.

mod commands;
mod cost;
mod lag;
mod queries;
mod system;
mod tables;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::schema::Tables;
use dynabridge_aws::AwsArgs;
use dynabridge_domain::UserId;
use prost::Message as _;

use crate::ceiling::{self, Storage};
use crate::echo::pb::echo_request::StorageCall;
use crate::library::{self, Library};
use crate::load::{self, Limits, Outcome, Step};
use crate::ops;
use crate::peer::Peer;
use crate::procs::{self, Proc, Scrape, bucket_quantile};
use crate::report::{self, Table, int, ms, ratio};
use crate::shapes::{self, Shape};

use self::system::{System, spawn_command};
use self::tables::{scenario_table, versus_table};

const PREFIX: &str = "bench";
/// Orders per user for the listing scenario: a full first page and more.
const ORDERS_PER_USER: usize = 25;
const PAGE_SIZE: usize = 20;

#[derive(Clone, Debug, clap::Args)]
pub struct SuiteArgs {
    /// Where the results go: the suite's section of this file is replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
    /// Print the results only.
    #[arg(long)]
    pub no_write: bool,
    /// A run of a few seconds that only checks the harness works; its
    /// numbers mean nothing and it writes nothing.
    #[arg(long)]
    pub smoke: bool,
    /// Longest duration of each measured run, in seconds.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Most operations of each measured run.
    #[arg(long, default_value_t = 12_000)]
    pub max_ops: u64,
    /// The concurrent clients of each command and query scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// How long the projection lag is measured, in seconds.
    #[arg(long, default_value_t = 15)]
    pub lag_seconds: u64,
    /// Operations per command type in the cost section.
    #[arg(long, default_value_t = 200)]
    pub cost_ops: u64,
    /// An endpoint that speaks EventBridge (an emulator such as moto): the
    /// suite provisions the bus there and the projector publishes to it,
    /// instead of to a file, so that the projector's cost counts its
    /// `PutEvents` calls. The projector then reaches each service through the
    /// standard per-service endpoint variables (`AWS_ENDPOINT_URL_DYNAMODB`,
    /// `AWS_ENDPOINT_URL_DYNAMODB_STREAMS`, `AWS_ENDPOINT_URL_EVENTBRIDGE`).
    #[arg(long)]
    pub eventbridge_endpoint: Option<String>,
}

impl SuiteArgs {
    fn effective(mut self) -> Self {
        if self.smoke {
            self.seconds = 2;
            self.max_ops = 60;
            self.clients = vec![1, 4];
            self.lag_seconds = 2;
            self.cost_ops = 12;
            self.no_write = true;
        }
        self
    }

    fn limits(&self, concurrency: usize) -> Limits {
        Limits {
            concurrency,
            max_ops: self.max_ops,
            max_duration: Duration::from_secs(self.seconds),
        }
    }
}

/// A run and the CPU the service behind it spent on it.
struct Measured {
    outcome: Outcome,
    /// CPU time of the service process per successful operation, in µs.
    service_cpu_us: Option<f64>,
    /// CPU time of the store process per successful operation, in µs.
    store_cpu_us: f64,
    /// CPU time of this process (the load and, for the library and the
    /// peer, the library itself) per successful operation, in µs.
    harness_cpu_us: f64,
}

async fn measure<F>(service: Option<&Proc>, store: &Proc, run: F) -> anyhow::Result<Measured>
where
    F: std::future::Future<Output = anyhow::Result<Outcome>>,
{
    let service_before = service.map(Proc::cpu).transpose()?;
    let store_before = store.cpu()?;
    let harness_before = procs::cpu_time(std::process::id())?;
    let outcome = run.await?;
    let harness_spent = procs::cpu_time(std::process::id())?.saturating_sub(harness_before);
    let per_op = |spent: Duration| spent.as_secs_f64() * 1e6 / outcome.ops.max(1) as f64;
    let service_cpu_us = match (service, service_before) {
        (Some(proc), Some(before)) => Some(per_op(proc.cpu()?.saturating_sub(before))),
        _ => None,
    };
    let store_cpu_us = per_op(store.cpu()?.saturating_sub(store_before));
    let harness_cpu_us = per_op(harness_spent);
    note_errors(&outcome);
    Ok(Measured {
        outcome,
        service_cpu_us,
        store_cpu_us,
        harness_cpu_us,
    })
}

/// Failed operations in all the measured runs; `--smoke` fails on any.
static FAILED_OPS: AtomicU64 = AtomicU64::new(0);

fn note_errors(outcome: &Outcome) {
    if outcome.errors > 0 {
        FAILED_OPS.fetch_add(outcome.errors, Ordering::Relaxed);
        eprintln!(
            "  {} errors; first: {}",
            outcome.errors,
            outcome.first_error.as_deref().unwrap_or("?")
        );
    }
}

/// One row of a scenario's table: ours, its ceilings, and the peer.
struct Row {
    clients: usize,
    ours: Measured,
    storage: Measured,
    transport: Measured,
    /// The echo service making the scenario's storage calls: the
    /// transport and storage ceilings together.
    both: Measured,
    versus: Option<Versus>,
}

/// Our command handler and the peer, each a library called from this
/// process.
struct Versus {
    library: Measured,
    peer: Measured,
}

/// The transport ceiling for messages of `sizes`, then the transport +
/// storage ceiling: the same messages, each making the storage calls
/// `calls` gives.
async fn echo_ceilings(
    system: &System,
    sizes: &Sizes,
    limits: Limits,
    calls: impl Fn(usize, u64) -> Option<Option<StorageCall>> + Send + Sync + 'static,
) -> anyhow::Result<(Measured, Measured)> {
    let url = system.echo_url()?;
    let (request, response) = (sizes.request, sizes.response);
    let transport = measure(
        Some(&system.echo),
        &system.store,
        ceiling::run_echo(&url, request, response, limits, ceiling::no_storage),
    )
    .await?;
    let both = measure(
        Some(&system.echo),
        &system.store,
        ceiling::run_echo(&url, request, response, limits, calls),
    )
    .await?;
    Ok((transport, both))
}

/// Encoded sizes of one real request and its response, for the echo.
struct Sizes {
    request: usize,
    response: usize,
}

/// The 1-minute load average the suite waits for before it measures, per
/// core: a build that just finished (the `cargo run` before the suite)
/// leaves the machine busy, and the first scenarios measured it.
const QUIET_LOAD_PER_CORE: f64 = 0.5;
/// The longest the suite waits for it; then it measures anyway, and the
/// report shows the load it started at.
const QUIET_WAIT: Duration = Duration::from_secs(120);

/// Waits, up to [`QUIET_WAIT`], until the 1-minute load average is under
/// [`QUIET_LOAD_PER_CORE`] a core.
async fn wait_until_quiet() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let deadline = Instant::now() + QUIET_WAIT;
    loop {
        let load: Option<f64> = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok());
        let Some(load) = load else { return };
        if load < QUIET_LOAD_PER_CORE * cores || Instant::now() >= deadline {
            return;
        }
        eprintln!("waiting for the machine to quiet down (1-minute load average {load:.2})");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

pub async fn run(args: SuiteArgs) -> anyhow::Result<()> {
    let args = args.effective();
    if !args.smoke {
        wait_until_quiet().await;
    }
    let started = Instant::now();
    let machine = report::machine();
    let commit = report::commit();
    eprintln!("loadgen suite on {machine}");
    let mut system = System::start().await?;
    let result = match &args.eventbridge_endpoint {
        Some(endpoint) => match system.publish_to(endpoint).await {
            Ok(()) => run_on(&mut system, &args).await,
            Err(err) => Err(err),
        },
        None => run_on(&mut system, &args).await,
    };
    let stopped = system.stop().await;
    let body = result?;
    stopped?;
    let failed = FAILED_OPS.load(Ordering::Relaxed);
    if args.smoke && failed > 0 {
        anyhow::bail!("{failed} operations failed (see above)");
    }

    let mut section = String::new();
    report::push_heading(
        &mut section,
        2,
        "Service benchmarks: the last run (`loadgen suite`)",
    );
    let _ = writeln!(
        section,
        "- Command: `cargo run --release -p dynabridge-bench -- suite{}`",
        std::env::args()
            .skip(2)
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let _ = writeln!(section, "- Machine: {machine}");
    let _ = writeln!(section, "- Commit: {commit}");
    let _ = writeln!(
        section,
        "- Date: {}; the suite took {:.0} s",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        section,
        "- Each measured run: at most {} operations or {} s, whichever comes first.\n",
        args.max_ops, args.seconds
    );
    section.push_str(&body);
    println!("{section}");
    if !args.no_write {
        let doc = std::fs::read_to_string(&args.output).unwrap_or_default();
        std::fs::write(&args.output, report::splice(&doc, &section))
            .with_context(|| format!("writing {}", args.output.display()))?;
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}

async fn run_on(system: &mut System, args: &SuiteArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    let (create_rows, update_rows) = commands::measure_all(system, args, &mut out).await?;
    let (profile_rows, list_rows) = queries::measure_all(system, args, &mut out).await?;

    // Projection lag at half the highest update rate measured.
    let max_without_projection = update_rows
        .iter()
        .map(|r| r.ours.outcome.rate())
        .fold(0.0, f64::max);
    out.push_str(&lag::projection_lag(system, args, max_without_projection).await?);
    out.push_str(&cost::cost_per_operation(system, args).await?);
    out.push_str(&tables::targets(
        &create_rows,
        &update_rows,
        &profile_rows,
        &list_rows,
    ));
    Ok(out)
}
