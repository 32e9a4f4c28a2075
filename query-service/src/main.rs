//! `query-service`: parses its configuration, sets up tracing, binds and
//! serves until Ctrl-C or SIGTERM. Everything else is in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use dynabridge::aws::load_sdk_config;
use dynabridge::grpc::{init_tracing, shutdown_signal};
use query_service::{Config, run};

/// The read side of dynabridge: dynabridge.v1.QueryService over the read models.
#[derive(Debug, Parser)]
#[command(name = "query-service", version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { config } = Cli::parse();
    init_tracing();
    // Before binding: a service that cannot run must not look healthy, even
    // for a moment. Exit code 2, as clap uses for bad arguments.
    if let Err(err) = config.validate() {
        eprintln!("query-service: invalid configuration: {err}");
        return ExitCode::from(2);
    }
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "query service failed");
            eprintln!("query-service: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(dynabridge::aws::CALL_LOG_ENV) {
        dynabridge::aws::record_calls_to(path)?;
    }
    let sdk = load_sdk_config(&config.store.aws, None).await;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    run(config, &sdk, listener, shutdown_signal()).await
}
