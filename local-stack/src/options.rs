//! What the local stack is told ([`Options`], its flags) and where it
//! ends up ([`Endpoints`], with the banner printed at start).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags and environment of the local stack. Every port binds on
/// 127.0.0.1; 0 takes any free port.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "local-stack",
    version,
    about = "dynabridge on one machine: an embedded DynamoDB-compatible store, the command, query and admin services and the projector"
)]
pub struct Options {
    /// Directory of the store's file and the published events; created if
    /// missing, kept across runs.
    #[arg(long, env = "DYNABRIDGE_DATA_DIR", default_value = ".dynabridge")]
    pub data_dir: PathBuf,
    /// Keep everything in a temporary directory, deleted on exit, instead
    /// of the data directory.
    #[arg(long, env = "DYNABRIDGE_IN_MEMORY")]
    pub in_memory: bool,
    /// Prefix of every table name.
    #[arg(long, env = "DYNABRIDGE_TABLE_PREFIX", default_value = "dynabridge")]
    pub table_prefix: String,
    /// Port of the command service (gRPC).
    #[arg(long, env = "DYNABRIDGE_COMMAND_PORT", default_value_t = 50051)]
    pub command_port: u16,
    /// Port of the query service (gRPC).
    #[arg(long, env = "DYNABRIDGE_QUERY_PORT", default_value_t = 50052)]
    pub query_port: u16,
    /// Port of the projector's gRPC health server.
    #[arg(
        long,
        env = "DYNABRIDGE_PROJECTOR_HEALTH_PORT",
        default_value_t = 50053
    )]
    pub projector_health_port: u16,
    /// Port of the admin service (gRPC).
    #[arg(long, env = "DYNABRIDGE_ADMIN_PORT", default_value_t = 50054)]
    pub admin_port: u16,
    /// Port of the process manager's gRPC health server.
    #[arg(
        long,
        env = "DYNABRIDGE_PROCESS_MANAGER_HEALTH_PORT",
        default_value_t = 50055
    )]
    pub process_manager_health_port: u16,
    /// Port of the Prometheus `/metrics` endpoint of all five services:
    /// each service's series labelled `component`, the process's AWS call
    /// counters once.
    #[arg(long, env = "DYNABRIDGE_METRICS_PORT", default_value_t = 9464)]
    pub metrics_port: u16,
    /// Port of the embedded DynamoDB endpoint.
    #[arg(long, env = "DYNABRIDGE_DYNAMODB_PORT", default_value_t = 8000)]
    pub dynamodb_port: u16,
    /// Run the embedded store as shipped, without the stream record indexes
    /// and trimming (see `stream_index`); appends then slow down as the
    /// stream grows.
    #[arg(long, env = "DYNABRIDGE_NO_STREAM_INDEX")]
    pub no_stream_index: bool,
    /// Let TransactWriteItems tokens reach the embedded store, as shipped
    /// (see `transaction_tokens`); appends then slow down with the number
    /// of appends in the last ten minutes.
    #[arg(long, env = "DYNABRIDGE_KEEP_TRANSACTION_TOKENS")]
    pub keep_transaction_tokens: bool,
    /// Run the embedded store with its tables provisioned, and no services:
    /// for running the services (command, query, projector, process
    /// manager, admin) as separate processes against `--endpoint-url`. The service and
    /// metrics ports are then not bound.
    #[arg(long, env = "DYNABRIDGE_STORE_ONLY")]
    pub store_only: bool,
}

impl Default for Options {
    /// The same as the flags' defaults, without reading the environment.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".dynabridge"),
            in_memory: false,
            table_prefix: "dynabridge".to_owned(),
            command_port: 50051,
            query_port: 50052,
            projector_health_port: 50053,
            admin_port: 50054,
            process_manager_health_port: 50055,
            metrics_port: 9464,
            dynamodb_port: 8000,
            no_stream_index: false,
            keep_transaction_tokens: false,
            store_only: false,
        }
    }
}

/// Where a started stack is.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// Whether the services run. Without them (`--store-only`) their
    /// addresses below are not bound and read 127.0.0.1:0.
    pub services: bool,
    pub command: SocketAddr,
    pub query: SocketAddr,
    pub projector_health: SocketAddr,
    pub admin: SocketAddr,
    pub process_manager_health: SocketAddr,
    /// The `/metrics` endpoint of the services.
    pub metrics: SocketAddr,
    pub dynamodb: SocketAddr,
    pub table_prefix: String,
    pub data_dir: PathBuf,
    pub database: PathBuf,
    pub sink: PathBuf,
    /// The data directory is temporary and goes when the stack stops.
    pub in_memory: bool,
    pub stream_index: bool,
    pub transaction_tokens_stripped: bool,
}

impl Endpoints {
    /// The embedded store's endpoint, for `--endpoint-url`.
    pub fn dynamodb_url(&self) -> String {
        format!("http://{}", self.dynamodb)
    }

    /// The services' Prometheus metrics.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    /// What to print once the stack is up.
    pub fn banner(&self) -> String {
        let mut b = String::new();
        let kept = if self.in_memory {
            "temporary, removed on exit"
        } else {
            "kept across runs"
        };
        // Writing to a String cannot fail.
        if self.services {
            let _ = writeln!(b, "dynabridge local stack is up");
            let _ = writeln!(b, "  command service    {}", self.command);
            let _ = writeln!(b, "  query service      {}", self.query);
            let _ = writeln!(b, "  projector health   {}", self.projector_health);
            let _ = writeln!(b, "  admin service      {}", self.admin);
            let _ = writeln!(b, "  process manager    {}", self.process_manager_health);
            let _ = writeln!(b, "  metrics            {}", self.metrics_url());
        } else {
            let _ = writeln!(
                b,
                "dynabridge local store is up (no services: --store-only)"
            );
        }
        let _ = writeln!(
            b,
            "  DynamoDB endpoint  {}  (tables {}-*)",
            self.dynamodb_url(),
            self.table_prefix
        );
        let _ = writeln!(
            b,
            "  store              {}  ({kept})",
            self.database.display()
        );
        let _ = writeln!(b, "  published events   {}", self.sink.display());
        if !self.stream_index {
            let _ = writeln!(
                b,
                "  stream index       off (--no-stream-index): appends slow down as the stream grows"
            );
        }
        if !self.transaction_tokens_stripped {
            let _ = writeln!(
                b,
                "  transaction tokens kept (--keep-transaction-tokens): appends slow down over ten minutes"
            );
        }
        let _ = writeln!(b);
        if !self.services {
            let _ = writeln!(b, "run a service against it:");
            let _ = writeln!(
                b,
                "  cargo run -p command-service -- --endpoint-url {} --table-prefix {}",
                self.dynamodb_url(),
                self.table_prefix
            );
            let _ = write!(b, "Ctrl-C stops the store.");
            return b;
        }
        let _ = writeln!(b, "try:");
        let _ = writeln!(b, "  grpcurl -plaintext {} list", self.command);
        let _ = writeln!(
            b,
            "  grpcurl -plaintext -d '{{\"request_id\":\"r-1\",\"email\":\"ada@example.com\",\"name\":\"Ada\"}}' {} dynabridge.v1.CommandService/CreateUser",
            self.command
        );
        let _ = writeln!(b, "  grpcurl -plaintext {} list", self.query);
        let _ = writeln!(b, "  curl -s {}", self.metrics_url());
        let _ = write!(b, "Ctrl-C stops everything.");
        b
    }
}
