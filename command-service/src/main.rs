use anyhow::Context as _;
use clap::Parser;

use dynabridge_aws::load_sdk_config;
use dynabridge_runtime::grpc::{Listeners, shutdown_signal};

/// The dynabridge command service (`dynabridge.v1.CommandService`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: command_service::Config,
    #[command(flatten)]
    observability: command_service::Observability,
}

// mimalloc instead of the system allocator: allocation is a large share of
// each request's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli {
        config,
        observability,
    } = Cli::parse();
    let _telemetry = dynabridge_runtime::telemetry::init("command-service")?;
    if let Err(err) = config
        .store
        .validate()
        .and_then(|()| observability.health.validate())
    {
        eprintln!("error: {err}");
        std::process::exit(2);
    }
    if let Some(path) = std::env::var_os(dynabridge_aws::CALL_LOG_ENV) {
        dynabridge_aws::record_calls_to(path)?;
    }
    let sdk = load_sdk_config(&config.store.aws, None).await;
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind(config.listen).await?,
        metrics: Some(
            tokio::net::TcpListener::bind(observability.metrics_listen)
                .await
                .with_context(|| {
                    format!(
                        "binding the metrics endpoint to {}",
                        observability.metrics_listen
                    )
                })?,
        ),
    };
    command_service::run_with(
        config,
        &observability.health,
        &sdk,
        listeners,
        shutdown_signal(),
    )
    .await
}
