//! `loadgen suite`: the standard benchmark on the embedded store. Every part
//! runs in its own process (`loadgen serve`), so that each one's CPU time
//! and metrics are its own; every scenario is measured in the same run as
//! its ceilings and the peer, and the results replace the suite's section
//! of `BENCHMARKS.md`.

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

/// The running system.
struct System {
    store: Proc,
    command: Proc,
    query: Proc,
    echo: Proc,
    projector: Option<Proc>,
    dynamodb: String,
    storage: Storage,
    /// Our command handler as a library in this process, as the peer is.
    library: Library,
    peer: Peer,
    /// The event store's copy without its index (see `shapes`).
    unindexed: String,
    /// Where the projector publishes, if not to a file.
    eventbridge: Option<String>,
    /// The AWS calls this process makes (ceilings, peer), as metrics.
    own_metrics: prometheus::Registry,
}

impl System {
    async fn start() -> anyhow::Result<Self> {
        let store = Proc::spawn(
            "embedded store",
            false,
            &args(&["store", "--table-prefix", PREFIX]),
        )
        .await?;
        let dynamodb = store.addr("dynamodb")?;
        let command = spawn_command(&dynamodb).await?;
        let query = Proc::spawn("query service", true, &service_args("query", &dynamodb)).await?;
        let echo = Proc::spawn(
            "echo service",
            false,
            &args(&[
                "echo",
                "--endpoint-url",
                &dynamodb,
                "--table-prefix",
                PREFIX,
            ]),
        )
        .await?;

        let aws = AwsArgs {
            endpoint_url: Some(dynamodb.clone()),
            region: Some("us-east-1".into()),
        };
        let sdk = local_stack::embedded_sdk_config(&aws, true).await;
        let client = dynabridge_aws::dynamodb_client(&sdk);
        let own_metrics = prometheus::Registry::new();
        dynabridge_aws::register_call_metrics(&own_metrics)?;
        let storage = Storage::new(client.clone(), Tables::new(PREFIX));
        let library = Library::new(client.clone(), Tables::new(PREFIX))?;
        // The same client, also asking DynamoDB for the capacity the
        // peer's calls consume (dynamo-es does not ask).
        let peer_client = aws_sdk_dynamodb::Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(crate::capacity::AskForCapacity)
                .build(),
        );
        let peer = Peer::setup(peer_client, PREFIX).await?;
        let unindexed = shapes::unindexed_table(&client, &Tables::new(PREFIX)).await?;
        Ok(Self {
            store,
            command,
            query,
            echo,
            projector: None,
            dynamodb,
            storage,
            library,
            peer,
            unindexed,
            eventbridge: None,
            own_metrics,
        })
    }

    fn command_url(&self) -> anyhow::Result<String> {
        Ok(format!("http://{}", self.command.addr("grpc")?))
    }

    fn query_url(&self) -> anyhow::Result<String> {
        Ok(format!("http://{}", self.query.addr("grpc")?))
    }

    fn echo_url(&self) -> anyhow::Result<String> {
        Ok(format!("http://{}", self.echo.addr("grpc")?))
    }

    fn own_scrape(&self) -> Scrape {
        Scrape::parse(&dynabridge_runtime::telemetry::metrics::render(
            &self.own_metrics,
        ))
    }

    async fn start_projector(&mut self) -> anyhow::Result<()> {
        let projector = match &self.eventbridge {
            // The events go to a file: the embedded default has no
            // EventBridge.
            None => {
                let mut args = service_args("projector", &self.dynamodb);
                let sink =
                    std::env::temp_dir().join(format!("loadgen-sink-{}.jsonl", std::process::id()));
                args.extend(["--sink-path".to_owned(), sink.display().to_string()]);
                args.extend(["--health-listen".to_owned(), "127.0.0.1:0".to_owned()]);
                Proc::spawn("projector", true, &args).await?
            }
            // One endpoint per service, from the standard variables.
            Some(eventbridge) => {
                let bus = Tables::new(PREFIX).event_bus();
                let args = args(&[
                    "projector",
                    "--region",
                    "us-east-1",
                    "--table-prefix",
                    PREFIX,
                    "--metrics-listen",
                    "127.0.0.1:0",
                    "--health-listen",
                    "127.0.0.1:0",
                    "--event-bus",
                    &bus,
                ]);
                let env = [
                    ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb.as_str()),
                    ("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", self.dynamodb.as_str()),
                    ("AWS_ENDPOINT_URL_EVENTBRIDGE", eventbridge.as_str()),
                ];
                Proc::spawn_with_env("projector", true, &args, &env).await?
            }
        };
        self.projector = Some(projector);
        Ok(())
    }

    /// Publishes to the bus at `endpoint` from now on, provisioning it
    /// there (bus, archive, rules) as the projector expects it.
    async fn publish_to(&mut self, endpoint: &str) -> anyhow::Result<()> {
        let aws = AwsArgs {
            endpoint_url: Some(endpoint.to_owned()),
            region: Some("us-east-1".into()),
        };
        let sdk =
            dynabridge_aws::load_sdk_config(&aws, Some(dynabridge_aws::StaticCredentials::local()))
                .await;
        let client = dynabridge_aws::eventbridge_client(&sdk);
        dynabridge_provision::event_bus::ensure_event_bus(
            &client,
            &Tables::new(PREFIX),
            &dynabridge_provision::event_bus::EventBusOptions::default(),
        )
        .await
        .with_context(|| format!("provisioning the event bus at {endpoint}"))?;
        self.eventbridge = Some(endpoint.to_owned());
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for proc in [
            Some(self.command),
            Some(self.query),
            Some(self.echo),
            self.projector,
        ]
        .into_iter()
        .flatten()
        {
            if let Err(err) = proc.stop().await {
                result = Err(err);
            }
        }
        self.store.stop().await?;
        result
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn service_args(role: &str, dynamodb: &str) -> Vec<String> {
    let mut out = args(&[
        role,
        "--endpoint-url",
        dynamodb,
        "--region",
        "us-east-1",
        "--table-prefix",
        PREFIX,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    if role != "projector" {
        out.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
    }
    out
}

async fn spawn_command(dynamodb: &str) -> anyhow::Result<Proc> {
    Proc::spawn("command service", true, &service_args("command", dynamodb)).await
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

/// The service against its ceilings.
fn scenario_table(rows: &[Row]) -> String {
    let mut header = vec![
        "clients",
        "dynabridge ops/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "storage ceiling ops/s",
        "vs storage",
        "transport ceiling ops/s",
        "vs transport",
        "transport + storage ceiling ops/s",
        "vs transport + storage",
    ];
    header.extend([
        "service CPU µs/op",
        "transport + storage ceiling CPU µs/op",
        "store CPU µs/op",
        "errors",
    ]);
    let mut table = Table::new(&header);
    for row in rows {
        let [rate, p50, p99, p999] = report::rate_and_latency(&row.ours.outcome);
        let mut cells = vec![
            row.clients.to_string(),
            rate,
            p50,
            p99,
            p999,
            int(row.storage.outcome.rate()),
            ratio(row.ours.outcome.rate(), row.storage.outcome.rate()),
            int(row.transport.outcome.rate()),
            ratio(row.ours.outcome.rate(), row.transport.outcome.rate()),
            int(row.both.outcome.rate()),
            ratio(row.ours.outcome.rate(), row.both.outcome.rate()),
        ];
        let cpu = |m: &Measured| m.service_cpu_us.map_or_else(|| "n/a".into(), int);
        cells.extend([
            cpu(&row.ours),
            cpu(&row.both),
            int(row.ours.store_cpu_us),
            (row.ours.outcome.errors
                + row.storage.outcome.errors
                + row.transport.outcome.errors
                + row.both.outcome.errors)
                .to_string(),
        ]);
        table.row(cells);
    }
    table.render()
}

/// Our command handler against the peer, both libraries in this process,
/// with the service's rate beside them.
fn versus_table(rows: &[Row]) -> String {
    let mut table = Table::new(&[
        "clients",
        "dynabridge library ops/s",
        "p99 ms",
        "peer ops/s",
        "peer p99 ms",
        "library vs peer",
        "library CPU µs/op",
        "store CPU µs/op, ours",
        "peer CPU µs/op",
        "store CPU µs/op, peer's",
        "dynabridge service ops/s",
        "service vs peer",
        "errors",
    ]);
    for row in rows {
        let Some(versus) = &row.versus else {
            continue;
        };
        let (library, peer) = (&versus.library, &versus.peer);
        table.row(vec![
            row.clients.to_string(),
            int(library.outcome.rate()),
            ms(library.outcome.quantile_ms(0.99)),
            int(peer.outcome.rate()),
            ms(peer.outcome.quantile_ms(0.99)),
            ratio(library.outcome.rate(), peer.outcome.rate()),
            int(library.harness_cpu_us),
            int(library.store_cpu_us),
            int(peer.harness_cpu_us),
            int(peer.store_cpu_us),
            int(row.ours.outcome.rate()),
            ratio(row.ours.outcome.rate(), peer.outcome.rate()),
            (library.outcome.errors + peer.outcome.errors).to_string(),
        ]);
    }
    table.render()
}

/// Parts of `CreateUser`'s transaction sent alone, at the largest client
/// count, priced by the store's CPU, beside the peer's create from `peer_row`.
async fn store_time_on_create(
    system: &System,
    args: &SuiteArgs,
    peer_row: &Row,
) -> anyhow::Result<String> {
    let clients = peer_row.clients;
    eprintln!("store time on a create, {clients} clients");
    let mut table = Table::new(&[
        "sent from the harness",
        "items per call",
        "creates/s",
        "store CPU µs per create",
        "vs the whole transaction",
    ]);
    let mut measured = Vec::new();
    for shape in Shape::ALL {
        let run = measure(None, &system.store, async {
            Ok(shapes::run(
                &system.storage,
                shape,
                &system.unindexed,
                args.limits(clients),
            )
            .await)
        })
        .await?;
        measured.push((shape, run));
    }
    let whole = measured
        .iter()
        .find(|(shape, _)| *shape == Shape::Transaction)
        .map_or(0.0, |(_, run)| run.store_cpu_us);
    for (shape, run) in &measured {
        let creates = shape.creates() as f64;
        table.row(vec![
            shape.describe().to_owned(),
            shape.item_count().to_string(),
            int(run.outcome.rate() * creates),
            int(run.store_cpu_us / creates),
            ratio(run.store_cpu_us / creates, whole),
        ]);
    }
    if let Some(versus) = &peer_row.versus {
        table.row(vec![
            "the peer's create: a consistent `Query`, then the event alone, to a table with a \
             stream and no index (the peer's own calls, from the run above)"
                .to_owned(),
            "1".to_owned(),
            int(versus.peer.outcome.rate()),
            int(versus.peer.store_cpu_us),
            ratio(versus.peer.store_cpu_us, whole),
        ]);
    }
    let mut out = String::new();
    report::push_heading(&mut out, 5, "Where the store's time goes on a create");
    let _ = write!(
        out,
        "The store answers one request at a time, so at {clients} clients its CPU per create \
         bounds the rate. `CreateUser`'s own transaction, cut to its first items and sent \
         from the harness at {clients} clients (each run at most {} operations or {} s), \
         against the peer's create:\n\n",
        args.max_ops, args.seconds
    );
    out.push_str(&table.render());
    out.push('\n');
    Ok(out)
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

pub async fn run(args: SuiteArgs) -> anyhow::Result<()> {
    let args = args.effective();
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
    let command_url = system.command_url()?;
    let query_url = system.query_url()?;

    // Sizes of real messages, for the transport ceiling.
    let create_user = ops::create_user_request();
    let create_user_sizes = Sizes {
        request: create_user.encoded_len(),
        response: CommandServiceClient::new(ops::connect(&command_url).await?)
            .create_user(create_user)
            .await?
            .into_inner()
            .encoded_len(),
    };

    // ---- Commands, with the projector stopped: ours, the storage
    // ceiling and the peer all append without projection competing.
    report::push_heading(&mut out, 3, "Commands");
    let _ = write!(
        out,
        "The projector is stopped while commands are measured, so that ours, the storage \
         ceiling and the peer append under the same conditions (the peer has no projection). \
         Updates run on orders the command service created moments before: the steady state \
         of its aggregate cache. The service, our library and the storage ceiling all append \
         through `EventStore::append`, so in all three the appends of concurrent clients share \
         transactions (group commit, at most {} outstanding); the peer sends each command's \
         own.\n\n",
        dynabridge_event_store::EventStore::DEFAULT_MAX_IN_FLIGHT,
    );
    out.push_str(
        "Each scenario has three ceilings. The storage ceiling sends the scenario's DynamoDB \
         calls from this process through the library's own store and read-model code. The \
         transport ceiling is a bare tonic echo service in its own process, with messages as \
         large as the real ones. The transport + storage ceiling is that echo service making \
         the storage ceiling's calls before it answers: what the service would reach if gRPC \
         and its storage calls were all it did, so our ratio to it is what the service's own \
         work costs.\n\n",
    );
    let mut create_rows = Vec::new();
    let mut update_rows = Vec::new();
    let mut update_sizes = None;
    for &clients in &args.clients {
        eprintln!("CreateUser, {clients} clients");
        let limits = args.limits(clients);
        let ours = measure(Some(&system.command), &system.store, async {
            ops::run_create_user(&command_url, limits).await
        })
        .await?;
        let storage = measure(None, &system.store, async {
            Ok(ceiling::run_create_user(&system.storage, limits).await)
        })
        .await?;
        let (transport, both) = echo_ceilings(system, &create_user_sizes, limits, |_, _| {
            Some(Some(StorageCall::CreateUser(true)))
        })
        .await?;
        let library = measure(None, &system.store, async {
            Ok(library::run_create_user(&system.library, limits).await)
        })
        .await?;
        let peer = measure(
            None,
            &system.store,
            run_peer_create_user(&system.peer, limits),
        )
        .await?;
        create_rows.push(Row {
            clients,
            ours,
            storage,
            transport,
            both,
            versus: Some(Versus { library, peer }),
        });

        eprintln!("UpdateOrderStatus, {clients} clients");
        let orders_needed = (args.max_ops as usize)
            .div_ceil(ops::STATUS_PATH.len())
            .max(clients);
        let (orders, _) = ops::order_pool(&command_url, orders_needed).await?;
        if update_sizes.is_none() {
            let request = ops::update_order_status_request(&orders[0], ops::STATUS_PATH[0]);
            update_sizes = Some(Sizes {
                request: request.encoded_len(),
                // The response names the order, the version, one event id
                // and the correlation id, as a real one does.
                response: dynabridge::pb::UpdateOrderStatusResponse {
                    order_id: orders[0].clone(),
                    version: 2,
                    event_ids: vec![uuid::Uuid::new_v4().to_string()],
                    correlation_id: uuid::Uuid::new_v4().to_string(),
                }
                .encoded_len(),
            });
        }
        let ours = measure(Some(&system.command), &system.store, async {
            ops::run_update_order_status(&command_url, &orders, limits).await
        })
        .await?;
        let ceiling_orders = ceiling::create_orders(&system.storage, orders_needed, 16).await?;
        let storage = measure(None, &system.store, async {
            Ok(ceiling::run_update_order_status(&system.storage, &ceiling_orders, limits).await)
        })
        .await?;
        let sizes = update_sizes.as_ref().context("sizes measured above")?;
        let both_orders = ceiling::create_orders(&system.storage, orders_needed, 16).await?;
        let (transport, both) = echo_ceilings(
            system,
            sizes,
            limits,
            ceiling::update_calls(&both_orders, limits.concurrency),
        )
        .await?;
        let library_orders = library::create_orders(&system.library, orders_needed, 16).await?;
        let library = measure(None, &system.store, async {
            Ok(library::run_update_order_status(&system.library, &library_orders, limits).await)
        })
        .await?;
        let peer_orders = peer_orders(&system.peer, orders_needed).await?;
        let peer = measure(
            None,
            &system.store,
            run_peer_update(&system.peer, &peer_orders, limits),
        )
        .await?;
        update_rows.push(Row {
            clients,
            ours,
            storage,
            transport,
            both,
            versus: Some(Versus { library, peer }),
        });
    }
    report::push_heading(&mut out, 4, "CreateUser");
    out.push_str(&scenario_table(&create_rows));
    out.push('\n');
    report::push_heading(&mut out, 4, "UpdateOrderStatus");
    out.push_str(&scenario_table(&update_rows));
    out.push('\n');
    report::push_heading(&mut out, 4, "Against the peer");
    out.push_str(
        "The peer is a library: cqrs-es and dynamo-es, called from the load generator's own \
         tasks, with no transport and no process of its own. So ours is measured the same way \
         too: the command service's `CommandHandler` with its aggregate cache, called from the \
         same tasks, against the same store, with the same concurrency. The service's own rate \
         (behind gRPC, in its own process) is beside it. A library's CPU per operation is this \
         process's (the load and the library); the store's is the store process's.\n\n",
    );
    report::push_heading(&mut out, 5, "CreateUser");
    out.push_str(&versus_table(&create_rows));
    out.push('\n');
    report::push_heading(&mut out, 5, "UpdateOrderStatus");
    out.push_str(&versus_table(&update_rows));
    out.push('\n');
    if let Some(last) = create_rows.last() {
        out.push_str(&store_time_on_create(system, args, last).await?);
    }

    // ---- Queries, with the projector running and caught up.
    system.start_projector().await?;
    eprintln!("queries: fixtures");
    let fixture_users = args.clients.iter().copied().max().unwrap_or(1).max(8);
    let users = ops::create_users(&command_url, fixture_users, 16).await?;
    let orders = ops::create_orders(&command_url, &users, ORDERS_PER_USER, 16).await?;
    // One shard, read in order: once the last order is visible, all are.
    let sentinel = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &sentinel[0].0, 1).await?;
    drop(orders);
    let user_ids: Vec<UserId> = users
        .iter()
        .map(|u| u.parse::<uuid::Uuid>().map(UserId::from_uuid))
        .collect::<Result<_, _>>()
        .context("user ids are UUIDs")?;
    let profile_sizes = {
        let mut client = QueryServiceClient::new(ops::connect(&query_url).await?);
        let request = dynabridge::pb::GetUserProfileRequest {
            user_id: users[0].clone(),
            min_version: 0,
        };
        let request_len = request.encoded_len();
        let response = client.get_user_profile(request).await?.into_inner();
        Sizes {
            request: request_len,
            response: response.encoded_len(),
        }
    };
    let list_sizes = {
        let mut client = QueryServiceClient::new(ops::connect(&query_url).await?);
        let request = dynabridge::pb::ListOrdersByUserRequest {
            user_id: users[0].clone(),
            page_size: PAGE_SIZE as i32,
            page_token: String::new(),
        };
        let request_len = request.encoded_len();
        let response = client.list_orders_by_user(request).await?.into_inner();
        Sizes {
            request: request_len,
            response: response.encoded_len(),
        }
    };
    let mut profile_rows = Vec::new();
    let mut list_rows = Vec::new();
    for &clients in &args.clients {
        eprintln!("queries, {clients} clients");
        let limits = args.limits(clients);
        let ours = measure(Some(&system.query), &system.store, async {
            ops::run_get_user_profile(&query_url, &users, limits).await
        })
        .await?;
        let storage = measure(None, &system.store, async {
            Ok(ceiling::run_user_profile(&system.storage, &user_ids, limits).await)
        })
        .await?;
        let (transport, both) = echo_ceilings(
            system,
            &profile_sizes,
            limits,
            ceiling::read_calls(&user_ids, limits.concurrency, None),
        )
        .await?;
        profile_rows.push(Row {
            clients,
            ours,
            storage,
            transport,
            both,
            versus: None,
        });
        let ours = measure(Some(&system.query), &system.store, async {
            ops::run_list_orders_by_user(&query_url, &users, PAGE_SIZE as i32, limits).await
        })
        .await?;
        let storage = measure(None, &system.store, async {
            Ok(ceiling::run_orders_of(&system.storage, &user_ids, PAGE_SIZE, limits).await)
        })
        .await?;
        let (transport, both) = echo_ceilings(
            system,
            &list_sizes,
            limits,
            ceiling::read_calls(&user_ids, limits.concurrency, Some(PAGE_SIZE)),
        )
        .await?;
        list_rows.push(Row {
            clients,
            ours,
            storage,
            transport,
            both,
            versus: None,
        });
    }
    report::push_heading(&mut out, 3, "Queries");
    out.push_str(
        "The peer has no query side to compare: cqrs-es leaves read models to the application.\n\n",
    );
    report::push_heading(&mut out, 4, "GetUserProfile");
    out.push_str(&scenario_table(&profile_rows));
    out.push('\n');
    report::push_heading(
        &mut out,
        4,
        &format!("ListOrdersByUser (page of {PAGE_SIZE})"),
    );
    out.push_str(&scenario_table(&list_rows));
    out.push('\n');

    // ---- Projection lag at half the highest update rate measured.
    let max_without_projection = update_rows
        .iter()
        .map(|r| r.ours.outcome.rate())
        .fold(0.0, f64::max);
    let lag = projection_lag(system, args, max_without_projection).await?;
    out.push_str(&lag);

    // ---- Cost per operation.
    let cost = cost_per_operation(system, args).await?;
    out.push_str(&cost);

    // ---- Targets.
    out.push_str(&targets(
        &create_rows,
        &update_rows,
        &profile_rows,
        &list_rows,
    ));
    Ok(out)
}

async fn run_peer_create_user(peer: &Peer, limits: Limits) -> anyhow::Result<Outcome> {
    let peer = peer.clone();
    Ok(load::closed_loop(limits, move |_, _| {
        let peer = peer.clone();
        async move {
            let id = uuid::Uuid::new_v4().simple().to_string();
            peer.create_user(&format!("peer-{id}@example.com"), "Bench User")
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(Step::Done)
        }
    })
    .await)
}

async fn peer_orders(peer: &Peer, n: usize) -> anyhow::Result<Vec<String>> {
    let user = peer
        .create_user("peer-orders@example.com", "Bench User")
        .await?;
    let lines = [
        ("SKU-BOOK-001".to_owned(), 2, 1250),
        ("SKU-PEN-042".to_owned(), 1, 300),
    ];
    let (peer, user, lines) = (peer.clone(), Arc::new(user), Arc::new(lines));
    load::collect("creating the peer's orders", n, 16, move |_, _| {
        let (peer, user, lines) = (peer.clone(), user.clone(), lines.clone());
        async move {
            peer.create_order(&user, &lines[..], "USD")
                .await
                .map_err(|e| format!("{e:#}"))
        }
    })
    .await
}

async fn run_peer_update(
    peer: &Peer,
    orders: &[String],
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let peer = peer.clone();
    let parts = Arc::new(ops::partition(orders, limits.concurrency));
    Ok(load::closed_loop(limits, move |worker, i| {
        let peer = peer.clone();
        let mine = &parts[worker];
        let next = ops::nth_update(mine, i).map(|(order, round)| (order, ops::STATUS_PATH[round]));
        async move {
            let Some((order, status)) = next else {
                return Ok(Step::Exhausted);
            };
            peer.update_order_status(&order, status_name(status))
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(Step::Done)
        }
    })
    .await)
}

fn status_name(status: dynabridge::pb::OrderStatus) -> &'static str {
    use dynabridge::pb::OrderStatus as S;
    match status {
        S::Processing => "PROCESSING",
        S::Shipped => "SHIPPED",
        S::Delivered => "DELIVERED",
        S::Cancelled => "CANCELLED",
        S::Created | S::Unspecified => "CREATED",
    }
}

/// Updates at `rate` per second for the lag window, in an open loop, while
/// a probe measures when its own updates become visible through the query
/// service; with the projector's own commit → visible histogram over the
/// same window.
async fn projection_lag(
    system: &System,
    args: &SuiteArgs,
    max_without_projection: f64,
) -> anyhow::Result<String> {
    let command_url = system.command_url()?;
    let query_url = system.query_url()?;
    let projector = system.projector.as_ref().context("the projector runs")?;
    let projector_metrics = projector.addr("metrics")?;

    // The maximum rate of the whole system: the projector's writes share
    // the store and the cores with the commands, so the rate measured with
    // it stopped is not one the system can sustain.
    let clients = args.clients.iter().copied().max().unwrap_or(1);
    eprintln!("projection lag: the maximum UpdateOrderStatus rate with the projector running");
    let needed = (args.max_ops as usize)
        .div_ceil(ops::STATUS_PATH.len())
        .max(clients);
    let (orders, user) = ops::order_pool(&command_url, needed).await?;
    let users = [user];
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;
    let calibration =
        ops::run_update_order_status(&command_url, &orders, args.limits(clients)).await?;
    let max_with_projection = calibration.rate();
    let rate = (max_with_projection / 2.0).max(10.0);
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;

    let window = Duration::from_secs(args.lag_seconds);
    let calls = (rate * window.as_secs_f64()).ceil() as usize;
    eprintln!("projection lag at {rate:.0}/s for {window:?}");

    // Orders enough for the window, each moved at most once a second.
    let per_round = (rate.ceil() as usize).max(1);
    let needed = calls.div_ceil(ops::STATUS_PATH.len()).max(per_round);
    let (orders, user) = ops::order_pool(&command_url, needed).await?;
    let users = [user];
    let probe_orders: Vec<String> = ops::create_orders(&command_url, &users[..1], 100, 4)
        .await?
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;

    let channels = ops::connections(&command_url, 32).await?;
    let orders = Arc::new(orders);
    let before = Scrape::fetch(&projector_metrics).await?;
    let projector_cpu = projector.cpu()?;
    let load = {
        let orders = orders.clone();
        load::open_loop(rate, window, calls as u64, 1024, move |i| {
            let n = orders.len();
            let round = i as usize / n;
            let order = orders[i as usize % n].clone();
            let mut client =
                CommandServiceClient::new(channels[i as usize % channels.len()].clone());
            async move {
                let Some(status) = ops::STATUS_PATH.get(round) else {
                    return Ok(Step::Exhausted);
                };
                client
                    .update_order_status(ops::update_order_status_request(&order, *status))
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                Ok(Step::Done)
            }
        })
    };
    let probe = async {
        let mut command = CommandServiceClient::new(ops::connect(&command_url).await?);
        let mut query = QueryServiceClient::new(ops::connect(&query_url).await?);
        let (mut from_send, mut from_ack) = (load::new_histogram(), load::new_histogram());
        let deadline = Instant::now() + window;
        'outer: for status in ops::STATUS_PATH {
            for order in &probe_orders {
                if Instant::now() >= deadline {
                    break 'outer;
                }
                let (send, ack) = ops::visible_after(
                    &mut command,
                    &mut query,
                    order,
                    status,
                    Duration::from_millis(2),
                )
                .await
                .map_err(anyhow::Error::msg)?;
                from_send.saturating_record(send.as_micros() as u64);
                from_ack.saturating_record(ack.as_micros() as u64);
                // About twenty samples a second, so the probe adds little.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok::<_, anyhow::Error>((from_send, from_ack))
    };
    let (load, probe) = tokio::join!(load, probe);
    note_errors(&load);
    let (from_send, from_ack) = probe?;
    // Let the projector finish the window's events before reading it.
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;
    let after = Scrape::fetch(&projector_metrics).await?;
    let projector_cpu = projector.cpu()?.saturating_sub(projector_cpu);

    let lag_buckets = before.bucket_deltas(&after, "dynabridge_projector_visible_lag_seconds");
    let events = lag_buckets.last().map_or(0.0, |b| b.1);
    let q = |q: f64| {
        bucket_quantile(&lag_buckets, q).map_or_else(
            || "n/a".to_owned(),
            |s| {
                if s.is_infinite() {
                    "> largest bucket".to_owned()
                } else {
                    format!("≤ {}", ms(s * 1000.0))
                }
            },
        )
    };
    let mut out = String::new();
    report::push_heading(&mut out, 3, "Projection lag");
    let _ = writeln!(
        out,
        "The highest `UpdateOrderStatus` rate with the projector running, {} clients for up to \
         {} s: {} /s ({} /s with it stopped, above). The lag is measured at half that: \
         open-loop `UpdateOrderStatus` at {} /s for {} s: {} done, {} errors ({} achieved). Meanwhile a probe sends its own update about twenty \
         times a second and reads the order through the query service every 2 ms until it \
         shows the new version.\n",
        clients,
        args.seconds,
        int(max_with_projection),
        int(max_without_projection),
        int(rate),
        args.lag_seconds,
        int(load.ops as f64),
        load.errors,
        int(load.rate()),
    );
    let mut table = Table::new(&["measure", "samples", "p50 ms", "p99 ms", "max ms"]);
    for (name, h) in [
        (
            "probe: acknowledged → visible in the query service",
            &from_ack,
        ),
        ("probe: sent → visible in the query service", &from_send),
    ] {
        table.row(vec![
            name.to_owned(),
            int(h.len() as f64),
            ms(h.value_at_quantile(0.5) as f64 / 1000.0),
            ms(h.value_at_quantile(0.99) as f64 / 1000.0),
            ms(h.max() as f64 / 1000.0),
        ]);
    }
    table.row(vec![
        "projector: event committed → read model written (histogram bucket bounds)".into(),
        int(events),
        q(0.5),
        q(0.99),
        "n/a".into(),
    ]);
    out.push_str(&table.render());
    let _ = writeln!(
        out,
        "\nProjector CPU over the window: {} µs per event. Load-phase command latency: p50 {} ms, p99 {} ms.\n",
        int(projector_cpu.as_secs_f64() * 1e6 / events.max(1.0)),
        ms(load.quantile_ms(0.5)),
        ms(load.quantile_ms(0.99)),
    );
    let _ = writeln!(
        out,
        "{}",
        projector_costs(&before, &after, events, system.eventbridge.is_some())
    );
    Ok(out)
}

/// The projector's calls per event, from its metrics over a window.
fn projector_costs(before: &Scrape, after: &Scrape, events: f64, to_bus: bool) -> String {
    let calls_total = "dynabridge_aws_calls_total";
    let calls = |op: &str| before.delta(after, calls_total, &[("operation", op)]);
    let batches = |records: &str| {
        before.delta(
            after,
            "dynabridge_projector_batches_total",
            &[("records", records)],
        )
    };
    let (full, empty) = (batches("nonempty"), batches("empty"));
    let checkpoints = before.delta(after, "dynabridge_projector_checkpoint_writes_total", &[]);
    let put_events = calls("PutEvents");
    let entries = before.delta(after, "dynabridge_eventbridge_entries_total", &[]);
    let published = before.delta(after, "dynabridge_projector_events_published_total", &[]);
    let store_calls = before.delta(after, calls_total, &[("service", "dynamodb")])
        + before.delta(after, calls_total, &[("service", "dynamodbstreams")]);
    let per_event = |n: f64| format!("{:.3}", n / events.max(1.0));
    let per = |n: f64, d: f64| {
        if d > 0.0 {
            format!("{:.2}", n / d)
        } else {
            "n/a".into()
        }
    };
    let mut table = Table::new(&["projector, over the lag window", "count", "per event"]);
    table.row(vec!["events projected".into(), int(events), "1".into()]);
    table.row(vec![
        "DynamoDB and DynamoDB Streams calls".into(),
        int(store_calls),
        per_event(store_calls),
    ]);
    for op in [
        "GetRecords",
        "GetShardIterator",
        "DescribeStream",
        "Query",
        "GetItem",
        "PutItem",
        "UpdateItem",
        "BatchWriteItem",
        "TransactWriteItems",
    ] {
        let n = calls(op);
        if n > 0.0 {
            table.row(vec![format!("of which {op}"), int(n), per_event(n)]);
        }
    }
    table.row(vec![
        format!(
            "GetRecords pages with records (and {} empty ones)",
            int(empty)
        ),
        int(full),
        per_event(full),
    ]);
    table.row(vec![
        format!(
            "checkpoint writes: {} per page with records, {} per page",
            per(checkpoints, full),
            per(checkpoints, full + empty)
        ),
        int(checkpoints),
        per_event(checkpoints),
    ]);
    table.row(vec![
        "events published".into(),
        int(published),
        per_event(published),
    ]);
    table.row(vec![
        if to_bus {
            format!(
                "PutEvents calls: {} entries each, {} × events published / 10 (to the bus at --eventbridge-endpoint)",
                per(entries, put_events),
                per(put_events, published / 10.0)
            )
        } else {
            format!(
                "PutEvents calls: {} entries each (the embedded default publishes to a file: none)",
                per(entries, put_events)
            )
        },
        int(put_events),
        per_event(put_events),
    ]);
    table.render()
}

/// DynamoDB calls and capacity per operation, counted exactly.
async fn cost_per_operation(system: &mut System, args: &SuiteArgs) -> anyhow::Result<String> {
    let n = args.cost_ops.max(1);
    let command_url = system.command_url()?;
    let query_url = system.query_url()?;
    let limits = Limits {
        concurrency: 4,
        max_ops: n,
        max_duration: Duration::from_secs(120),
    };
    let mut table = Table::new(&[
        "operation",
        "DynamoDB calls per op",
        "by kind",
        "capacity units per op",
    ]);
    let row = |name: &str, before: &Scrape, after: &Scrape, ops: u64| -> Vec<String> {
        let calls = before.delta(
            after,
            "dynabridge_aws_calls_total",
            &[("service", "dynamodb")],
        );
        let mut kinds = Vec::new();
        for op in [
            "Query",
            "GetItem",
            "TransactWriteItems",
            "PutItem",
            "UpdateItem",
        ] {
            let c = before.delta(after, "dynabridge_aws_calls_total", &[("operation", op)]);
            if c > 0.0 {
                kinds.push(format!("{op} {:.2}", c / ops as f64));
            }
        }
        let units = before.delta(after, "dynabridge_dynamodb_capacity_units_total", &[]);
        vec![
            name.to_owned(),
            format!("{:.2}", calls / ops as f64),
            kinds.join(", "),
            format!("{:.2}", units / ops as f64),
        ]
    };
    let command_metrics = system.command.addr("metrics")?;

    eprintln!("cost: commands");
    let before = Scrape::fetch(&command_metrics).await?;
    let outcome = ops::run_create_user(&command_url, limits).await?;
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row("CreateUser", &before, &after, outcome.ops));

    let users = ops::create_users(&command_url, 4, 4).await?;
    let before = Scrape::fetch(&command_metrics).await?;
    let orders: Vec<String> = ops::create_orders(&command_url, &users, n.div_ceil(4) as usize, 4)
        .await?
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row("CreateOrder", &before, &after, orders.len() as u64));

    let one_round = Limits {
        max_ops: orders.len() as u64,
        ..limits
    };
    let before = Scrape::fetch(&command_metrics).await?;
    let outcome = ops::run_update_order_status(
        &command_url,
        &orders,
        Limits {
            concurrency: 1,
            ..one_round
        },
    )
    .await?;
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row(
        "UpdateOrderStatus, aggregate in this instance's cache",
        &before,
        &after,
        outcome.ops,
    ));

    // A restarted command service has seen none of them.
    let old = std::mem::replace(&mut system.command, spawn_command(&system.dynamodb).await?);
    old.stop().await?;
    let command_url = system.command_url()?;
    let command_metrics = system.command.addr("metrics")?;
    let before = Scrape::fetch(&command_metrics).await?;
    // The second status of each order: PROCESSING is done.
    let cold = run_second_status(&command_url, &orders).await?;
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row(
        "UpdateOrderStatus, first command after a restart (cold cache)",
        &before,
        &after,
        cold,
    ));

    eprintln!("cost: queries");
    // The projector runs: wait until it has caught up with the orders.
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;
    let page = (n.div_ceil(4) as usize).min(PAGE_SIZE);
    let query_metrics = system.query.addr("metrics")?;
    let before = Scrape::fetch(&query_metrics).await?;
    let outcome = ops::run_get_user_profile(&query_url, &users, limits).await?;
    let after = Scrape::fetch(&query_metrics).await?;
    table.row(row("GetUserProfile", &before, &after, outcome.ops));
    let listed: Vec<String> = users[..1].to_vec();
    let before = Scrape::fetch(&query_metrics).await?;
    let outcome = ops::run_list_orders_by_user(&query_url, &listed, page as i32, limits).await?;
    let after = Scrape::fetch(&query_metrics).await?;
    table.row(row(
        &format!("ListOrdersByUser (page of {page})"),
        &before,
        &after,
        outcome.ops,
    ));

    eprintln!("cost: peer");
    let before = system.own_scrape();
    let outcome = run_peer_create_user(&system.peer, limits).await?;
    let after = system.own_scrape();
    table.row(row("peer: create user", &before, &after, outcome.ops));
    let peer_orders = peer_orders(&system.peer, n as usize).await?;
    let before = system.own_scrape();
    let outcome = run_peer_update(
        &system.peer,
        &peer_orders,
        Limits {
            max_ops: peer_orders.len() as u64,
            ..limits
        },
    )
    .await?;
    let after = system.own_scrape();
    table.row(row(
        "peer: update order status",
        &before,
        &after,
        outcome.ops,
    ));

    let mut out = String::new();
    report::push_heading(&mut out, 3, "Cost per operation");
    let _ = writeln!(
        out,
        "Counted exactly from each process's `dynabridge_aws_calls_total` and \
         `dynabridge_dynamodb_capacity_units_total` (ReturnConsumedCapacity TOTAL), over {n} \
         operations of each kind; the peer's from the same counters on its client in this \
         process, which adds `ReturnConsumedCapacity` to the peer's calls (dynamo-es does not \
         ask for it).\n"
    );
    out.push_str(&table.render());
    out.push('\n');
    Ok(out)
}

async fn run_second_status(command_url: &str, orders: &[String]) -> anyhow::Result<u64> {
    let mut client = CommandServiceClient::new(ops::connect(command_url).await?);
    let mut done = 0;
    for order in orders {
        client
            .update_order_status(ops::update_order_status_request(order, ops::STATUS_PATH[1]))
            .await?;
        done += 1;
    }
    Ok(done)
}

fn targets(create: &[Row], update: &[Row], profile: &[Row], list: &[Row]) -> String {
    let at_most_clients = |rows: &[Row]| {
        rows.iter().max_by_key(|r| r.clients).map(|r| {
            (
                r.clients,
                r.ours.outcome.rate(),
                r.storage.outcome.rate(),
                r.both.outcome.rate(),
                r.versus
                    .as_ref()
                    .map(|v| (v.library.outcome.rate(), v.peer.outcome.rate())),
            )
        })
    };
    let mut table = Table::new(&["target", "measured", "met"]);
    for (name, rows) in [
        ("CreateUser", create),
        ("UpdateOrderStatus", update),
        ("GetUserProfile", profile),
        ("ListOrdersByUser", list),
    ] {
        let Some((clients, ours, storage, both, versus)) = at_most_clients(rows) else {
            continue;
        };
        let vs_storage = if storage > 0.0 { ours / storage } else { 0.0 };
        table.row(vec![
            format!("{name} at {clients} clients ≥ 0.8× storage ceiling"),
            format!("{vs_storage:.2}×"),
            yes(vs_storage >= 0.8),
        ]);
        let vs_both = if both > 0.0 { ours / both } else { 0.0 };
        table.row(vec![
            format!(
                "{name} at {clients} clients vs the transport + storage ceiling (not a target)"
            ),
            format!("{vs_both:.2}×"),
            "n/a".into(),
        ]);
        if let Some((library, peer)) = versus {
            let vs_peer = if peer > 0.0 { library / peer } else { 0.0 };
            table.row(vec![
                format!("{name} at {clients} clients ≥ 1.0× peer (both libraries in the harness)"),
                format!("{vs_peer:.2}×"),
                yes(vs_peer >= 1.0),
            ]);
            let service_vs_peer = if peer > 0.0 { ours / peer } else { 0.0 };
            table.row(vec![
                format!("{name} at {clients} clients, the service behind gRPC vs the peer library (not a target)"),
                format!("{service_vs_peer:.2}×"),
                "n/a".into(),
            ]);
        }
    }
    let mut out = String::new();
    report::push_heading(&mut out, 3, "Targets");
    out.push_str(&table.render());
    out.push_str(
        "\nThe round-trip targets are in the cost table above; the projection lag target (p99 ≤ \
         100 ms) in the lag table.\n",
    );
    out
}

fn yes(met: bool) -> String {
    if met { "yes".into() } else { "**no**".into() }
}
