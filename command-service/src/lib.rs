//! The command service: the write side, `dynabridge.v1.CommandService`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;

use dynabridge::commands::CommandHandler;
use dynabridge::config::StoreArgs;
use dynabridge::grpc::{not_serving_then, reflection_services};
use dynabridge::pb::command_service_server::CommandServiceServer;
use dynabridge::store::EventStore;

mod parse;
mod service;

pub use service::CommandApi;

/// The gRPC health name of this service.
pub const SERVICE_NAME: &str = "dynabridge.v1.CommandService";

/// Flags and environment of the command service.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "DYNABRIDGE_COMMAND_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
}

/// Serves on `listener` until `shutdown` resolves, then turns NOT_SERVING
/// and drains in-flight requests.
pub async fn run(
    config: Config,
    sdk: &aws_config::SdkConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tables = config.store.tables();
    let client = dynabridge::aws::dynamodb_client(sdk);
    let api = CommandApi::new(CommandHandler::new(EventStore::new(client, tables.clone())));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    let (reflection_v1, reflection_v1alpha) = reflection_services()?;

    tracing::info!(
        addr = %listener.local_addr()?,
        event_store = %tables.event_store(),
        "command service listening"
    );
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(CommandServiceServer::new(api))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            not_serving_then(reporter, vec![SERVICE_NAME], shutdown),
        )
        .await?;
    tracing::info!("command service stopped");
    Ok(())
}
