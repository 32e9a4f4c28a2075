//! `query-service`: parses its configuration, sets up tracing, binds and
//! serves until Ctrl-C or SIGTERM. Everything else is in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use dynabridge_aws::load_sdk_config;
use dynabridge_runtime::grpc::{Listeners, shutdown_signal};
use query_service::{Config, Observability, run_with};

/// The read side of dynabridge: dynabridge.v1.QueryService over the read models.
#[derive(Debug, Parser)]
#[command(name = "query-service", version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    observability: Observability,
}

// mimalloc instead of the system allocator: allocation is a large share of
// each request's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        config,
        observability,
    } = Cli::parse();
    let _telemetry = match dynabridge_runtime::telemetry::init("query-service") {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("query-service: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Before binding: a service that cannot run must not look healthy, even
    // for a moment. Exit code 2, as clap uses for bad arguments.
    if let Err(err) = config.validate() {
        eprintln!("query-service: invalid configuration: {err}");
        return ExitCode::from(2);
    }
    if let Err(err) = observability.health.validate() {
        eprintln!("query-service: invalid configuration: {err}");
        return ExitCode::from(2);
    }
    match serve(config, observability).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "query service failed");
            eprintln!("query-service: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, observability: Observability) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(dynabridge_aws::CALL_LOG_ENV) {
        dynabridge_aws::record_calls_to(path)?;
    }
    let sdk = load_sdk_config(&config.store.aws, None).await;
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?,
        metrics: Some(
            tokio::net::TcpListener::bind(observability.metrics_listen)
                .await
                .with_context(|| format!("binding {}", observability.metrics_listen))?,
        ),
    };
    run_with(
        config,
        &observability.health,
        &sdk,
        listeners,
        shutdown_signal(),
    )
    .await
}
