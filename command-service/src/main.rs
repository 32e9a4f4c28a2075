use clap::Parser;

use dynabridge::aws::load_sdk_config;
use dynabridge::grpc::{init_tracing, shutdown_signal};

/// The dynabridge command service (`dynabridge.v1.CommandService`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: command_service::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { config } = Cli::parse();
    init_tracing();
    if let Err(err) = config.store.validate() {
        eprintln!("error: {err}");
        std::process::exit(2);
    }
    if let Some(path) = std::env::var_os(dynabridge::aws::CALL_LOG_ENV) {
        dynabridge::aws::record_calls_to(path)?;
    }
    let sdk = load_sdk_config(&config.store.aws, None).await;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    command_service::run(config, &sdk, listener, shutdown_signal()).await
}
