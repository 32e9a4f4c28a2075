//! The projector binary: parses its configuration, sets up logging, and
//! hands over to [`projector::run`].
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser;
use dynabridge::aws::load_sdk_config;
use dynabridge::grpc::{init_tracing, shutdown_signal};

/// Projects the event store's stream into the read models and publishes
/// every event.
#[derive(Debug, Parser)]
#[command(name = "projector", version, about)]
struct Cli {
    #[command(flatten)]
    config: projector::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { config } = Cli::parse();
    init_tracing();
    if let Err(message) = config.validate() {
        eprintln!("projector: invalid configuration: {message}");
        std::process::exit(2);
    }
    if let Some(path) = std::env::var_os(dynabridge::aws::CALL_LOG_ENV) {
        dynabridge::aws::record_calls_to(path)?;
    }
    let sdk = load_sdk_config(&config.store.aws, None).await;
    let listener = tokio::net::TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("binding the health server to {}", config.health_listen))?;
    projector::run(config, &sdk, listener, shutdown_signal()).await
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
