//! Measures what the local stack promises: appending many events runs at a
//! flat rate (the last 10% within 20% of the first 10%), and the stack's
//! idle CPU stays low.
//!
//! It starts the stack in this process, in memory mode, appends `--count`
//! events by calling CreateUser over gRPC from `--clients` concurrent
//! connections, prints the rate of each tenth and the ratio last/first,
//! waits for the projector to publish every event, then measures the
//! process's CPU time (/proc/self/stat) while nothing happens.
//!
//! ```text
//! cargo run --release -p local-stack --example append_rate -- --count 100000
//! cargo run --release -p local-stack --example append_rate -- --count 20000 --no-stream-index
//! cargo run --release -p local-stack --example append_rate -- --count 20000 --keep-transaction-tokens
//! ```
//!
//! Everything is bounded: at most `--max-seconds` of appending and
//! `--catch-up-seconds` of waiting for the projector.
#![forbid(unsafe_code)]

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use dynabridge::pb::CreateUserRequest;
use dynabridge::pb::command_service_client::CommandServiceClient;

#[derive(Debug, Parser)]
struct Args {
    /// Events to append.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Concurrent gRPC clients, each on its own connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Stop appending after this long, whatever the count.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Longest wait for the projector to publish every appended event.
    #[arg(long, default_value_t = 300)]
    catch_up_seconds: u64,
    /// How long the idle CPU is measured over.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Run the embedded store without the stream record index.
    #[arg(long)]
    no_stream_index: bool,
    /// Let TransactWriteItems tokens reach the embedded store.
    #[arg(long)]
    keep_transaction_tokens: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.count < 10 || args.clients == 0 {
        bail!("--count must be at least 10 and --clients at least 1");
    }
    // Per-request logs would cost more than the requests.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let stack = local_stack::start(local_stack::Options {
        in_memory: true,
        no_stream_index: args.no_stream_index,
        keep_transaction_tokens: args.keep_transaction_tokens,
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
    let running = tokio::spawn(stack.run_until(async {
        let _ = stopped.await;
    }));
    let on_off = |on: bool| if on { "on" } else { "off" };
    println!(
        "appending {} events with {} clients (stream index {}, transaction token stripping {}), at most {} s",
        args.count,
        args.clients,
        on_off(!args.no_stream_index),
        on_off(!args.keep_transaction_tokens),
        args.max_seconds
    );

    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    let load_before = load_average();
    let (completions, failures, cpu_samples) = append(&args, &endpoints, started).await?;
    let elapsed = started.elapsed();
    let append_cpu = cpu_seconds()? - cpu_before;
    let appended = completions.len() as u64;
    println!(
        "appended {appended} in {:.1} s: {:.0}/s overall; {failures} failed; CPU {:.1} s ({:.0}% of one core)",
        elapsed.as_secs_f64(),
        appended as f64 / elapsed.as_secs_f64(),
        append_cpu,
        100.0 * append_cpu / elapsed.as_secs_f64()
    );
    println!(
        "load average (1 min) before {load_before}, after {}; other processes share the machine",
        load_average()
    );
    let ratio = report_deciles(&completions, started, &cpu_samples);

    let caught_up = wait_for_sink(
        &endpoints.sink,
        appended,
        Duration::from_secs(args.catch_up_seconds),
    )
    .await?;
    match caught_up {
        Some(took) => println!(
            "projector published all {appended} events {:.1} s after the last append",
            took.as_secs_f64()
        ),
        None => println!(
            "projector had not published all {appended} events within {} s",
            args.catch_up_seconds
        ),
    }

    let idle = Duration::from_secs(args.idle_seconds);
    let before = cpu_seconds()?;
    // The measurement window itself: the stack runs untouched meanwhile.
    tokio::time::sleep(idle).await;
    let idle_cpu = cpu_seconds()? - before;
    println!(
        "idle: {:.0} ms CPU over {} s = {:.2}% of one core (the whole process: store, services, projector)",
        idle_cpu * 1000.0,
        idle.as_secs(),
        100.0 * idle_cpu / idle.as_secs_f64()
    );

    let _ = stop.send(());
    running
        .await
        .context("the stack's task")?
        .context("stopping the local stack")?;

    if failures > 0 || appended < args.count {
        bail!(
            "only {appended} of {} events appended ({failures} failed)",
            args.count
        );
    }
    if let Some(ratio) = ratio {
        let verdict = if (0.8..=1.2).contains(&ratio) {
            "FLAT"
        } else {
            "NOT FLAT"
        };
        println!("{verdict}: the last tenth ran at {ratio:.2} of the first tenth's rate");
    }
    Ok(())
}

/// Appends until `count` or the time bound. Returns when each append
/// completed (sorted), how many failed, and samples of (appends completed,
/// process CPU seconds) taken every few milliseconds meanwhile.
async fn append(
    args: &Args,
    endpoints: &local_stack::Endpoints,
    started: Instant,
) -> anyhow::Result<(Vec<Instant>, u64, Vec<(u64, f64)>)> {
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let next = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let deadline = started + Duration::from_secs(args.max_seconds);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", endpoints.command))?
                .connect()
                .await
                .context("connecting to the command service")?;
        let mut client = CommandServiceClient::new(channel);
        let (next, completed) = (Arc::clone(&next), Arc::clone(&completed));
        let count = args.count;
        workers.spawn(async move {
            let mut done = Vec::new();
            let mut failures = 0_u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    return (done, failures);
                }
                let request = CreateUserRequest {
                    request_id: format!("append-rate-{run:x}-{i}"),
                    correlation_id: String::new(),
                    email: format!("user-{i}@append-rate.example"),
                    name: format!("Append Rate {i}"),
                };
                match client.create_user(request).await {
                    Ok(_) => {
                        done.push(Instant::now());
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        if failures == 0 {
                            eprintln!("append {i} failed: {status}");
                        }
                        failures += 1;
                    }
                }
            }
        });
    }

    // CPU time at each tenth tells whether the work per append grows,
    // whatever else the machine is doing; wall time alone cannot.
    let (stop_sampling, mut sampling_stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let completed = Arc::clone(&completed);
        tokio::spawn(async move {
            let mut samples = vec![(0, cpu_seconds()?)];
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = &mut sampling_stopped => break,
                    _ = every.tick() => samples.push((completed.load(Ordering::Relaxed), cpu_seconds()?)),
                }
            }
            samples.push((completed.load(Ordering::Relaxed), cpu_seconds()?));
            anyhow::Ok(samples)
        })
    };

    let mut completions = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    let mut failures = 0;
    while let Some(joined) = workers.join_next().await {
        let (done, failed) = joined.context("an append worker panicked")?;
        completions.extend(done);
        failures += failed;
    }
    let _ = stop_sampling.send(());
    let samples = sampler.await.context("the CPU sampler panicked")??;
    completions.sort_unstable();
    Ok((completions, failures, samples))
}

/// Prints the rate and the CPU time per append of each tenth of the
/// appends; returns the rate of the last tenth over the first's.
fn report_deciles(
    completions: &[Instant],
    started: Instant,
    cpu_samples: &[(u64, f64)],
) -> Option<f64> {
    let n = completions.len();
    if n < 10 {
        return None;
    }
    // The process's CPU time when `count` appends had completed.
    let cpu_at = |count: usize| {
        cpu_samples
            .iter()
            .find(|(done, _)| *done >= count as u64)
            .or(cpu_samples.last())
            .map_or(0.0, |(_, cpu)| *cpu)
    };
    let mut rates = Vec::with_capacity(10);
    let mut costs = Vec::with_capacity(10);
    for decile in 0..10 {
        let (lo, hi) = (decile * n / 10, (decile + 1) * n / 10);
        let from = if lo == 0 {
            started
        } else {
            completions[lo - 1]
        };
        let secs = completions[hi - 1].duration_since(from).as_secs_f64();
        let rate = (hi - lo) as f64 / secs.max(f64::EPSILON);
        let cpu_per_append = (cpu_at(hi) - cpu_at(lo)) / (hi - lo) as f64;
        println!(
            "  tenth {:>2}: events {:>6}..{:<6} {:>8.0}/s  {:>6.0} us CPU per append",
            decile + 1,
            lo,
            hi,
            rate,
            cpu_per_append * 1e6
        );
        rates.push(rate);
        costs.push(cpu_per_append);
    }
    let ratio = rates[9] / rates[0];
    println!("last tenth / first tenth: rate {ratio:.3} (flat means within 0.8..1.2)");
    println!(
        "last tenth / first tenth: CPU per append {:.3} (the whole process: store, services, projector)",
        costs[9] / costs[0].max(f64::EPSILON)
    );
    Some(ratio)
}

/// Waits until the sink holds `expected` lines; `None` if it does not
/// within `bound`.
async fn wait_for_sink(
    sink: &Path,
    expected: u64,
    bound: Duration,
) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    let mut lines = 0_u64;
    let mut offset = 0_u64;
    let mut buf = Vec::new();
    loop {
        if let Ok(mut file) = std::fs::File::open(sink) {
            file.seek(SeekFrom::Start(offset))?;
            buf.clear();
            file.read_to_end(&mut buf)?;
            offset += buf.len() as u64;
            lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        }
        if lines >= expected {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= bound {
            println!("the sink holds {lines} of {expected} events");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name, in parentheses, may hold spaces; the fields after it
    // start with the state (field 3), so utime (14) and stime (15) are the
    // 12th and 13th.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/self/stat")?
            .parse::<u64>()
            .context("a /proc/self/stat field")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(total as f64 / clock_ticks_per_second())
}

/// The 1-minute load average, as the kernel reports it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|hz| *hz > 0.0)
        // The kernel's USER_HZ is 100 on every common Linux build.
        .unwrap_or(100.0)
}
