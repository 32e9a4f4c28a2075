//! The projector binary: parses its configuration, sets up logging, and
//! hands over to [`projector::run`].
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser;
use dynabridge_aws::load_sdk_config;
use dynabridge_runtime::grpc::{Listeners, shutdown_signal};

/// Projects the event store's stream into the read models and publishes
/// every event.
#[derive(Debug, Parser)]
#[command(name = "projector", version, about)]
struct Cli {
    #[command(flatten)]
    config: projector::Config,
    #[command(flatten)]
    observability: projector::Observability,
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
    let _telemetry = dynabridge_runtime::telemetry::init("projector")?;
    if let Err(message) = config
        .validate()
        .and_then(|()| observability.health.validate())
    {
        eprintln!("projector: invalid configuration: {message}");
        std::process::exit(2);
    }
    if let Some(path) = std::env::var_os(dynabridge_aws::CALL_LOG_ENV) {
        dynabridge_aws::record_calls_to(path)?;
    }
    let sdk = load_sdk_config(&config.store.aws, None).await;
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind(config.health_listen)
            .await
            .with_context(|| format!("binding the health server to {}", config.health_listen))?,
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
    projector::run_with(
        config,
        &observability.health,
        &sdk,
        listeners,
        shutdown_signal(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
