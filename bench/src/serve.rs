//! `loadgen serve <role>`: one part of the system in its own process, so
//! that the suite can read each part's CPU time from `/proc/<pid>/stat` and
//! scrape its metrics apart from the others'.
//!
//! A role binds its ports (port 0 is any free port), prints one line
//! `READY {json}` with what it bound on stdout, and runs until its stdin
//! closes: the parent closing the pipe, or dying, stops it cleanly.

use std::net::SocketAddr;

use anyhow::Context as _;
use dynabridge::schema::Tables;
use dynabridge_aws::AwsArgs;
use dynabridge_runtime::service::{Host, Service};
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

use crate::ceiling::Storage;
use crate::echo::EchoServer;

#[derive(Debug, clap::Subcommand)]
pub enum Role {
    /// The embedded store with the tables provisioned, in a temporary
    /// directory.
    Store {
        #[arg(long, default_value = "dynabridge")]
        table_prefix: String,
    },
    /// The command service.
    Command {
        #[command(flatten)]
        config: command_service::Config,
    },
    /// The query service.
    Query {
        #[command(flatten)]
        config: query_service::Config,
    },
    /// The projector.
    Projector {
        #[command(flatten)]
        config: projector::Config,
    },
    /// The transport ceiling: a bare tonic echo service. Given the embedded
    /// store's endpoint, it makes the storage calls requests ask for.
    Echo {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The embedded store's DynamoDB endpoint.
        #[arg(long)]
        endpoint_url: Option<String>,
        #[arg(long, default_value = "dynabridge")]
        table_prefix: String,
    },
}

/// Resolves when stdin reaches its end.
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn ready(what: serde_json::Value) {
    println!("READY {what}");
}

/// Builds service `S` against its store, says where it listens, and serves
/// until stdin closes.
async fn serve<S: Service>(config: S::Config, embedded: bool) -> anyhow::Result<()> {
    let sdk = sdk_for(S::aws(&config), embedded).await;
    let app = S::build(config, &Host::new(sdk)).await?;
    ready(json!({
        "grpc": app.local_addr().to_string(),
        "metrics": app.metrics_addr().map(|addr| addr.to_string()),
    }));
    app.run_until(stdin_closed()).await
}

/// The SDK configuration of a service: the embedded store's (with its
/// workaround) when `embedded`, else the standard chain.
async fn sdk_for(aws: &AwsArgs, embedded: bool) -> aws_config::SdkConfig {
    if embedded {
        local_stack::embedded_sdk_config(aws, true).await
    } else {
        dynabridge_aws::load_sdk_config(aws, None).await
    }
}

/// Runs `role`; `embedded` says its endpoint is the embedded store.
pub async fn run(role: Role, embedded: bool) -> anyhow::Result<()> {
    match role {
        Role::Store { table_prefix } => {
            let stack = local_stack::start(local_stack::Options {
                in_memory: true,
                store_only: true,
                dynamodb_port: 0,
                table_prefix,
                ..local_stack::Options::default()
            })
            .await
            .context("starting the embedded store")?;
            ready(json!({ "dynamodb": stack.endpoints().dynamodb_url() }));
            stack.run_until(stdin_closed()).await?;
        }
        Role::Command { config } => serve::<command_service::App>(config, embedded).await?,
        Role::Query { config } => serve::<query_service::App>(config, embedded).await?,
        Role::Projector { config } => serve::<projector::App>(config, embedded).await?,
        Role::Echo {
            listen,
            endpoint_url,
            table_prefix,
        } => {
            let storage = match endpoint_url {
                Some(endpoint_url) => {
                    let aws = AwsArgs {
                        endpoint_url: Some(endpoint_url),
                        region: Some("us-east-1".into()),
                    };
                    let sdk = local_stack::embedded_sdk_config(&aws, true).await;
                    Some(Storage::new(
                        dynabridge_aws::dynamodb_client(&sdk),
                        Tables::new(&table_prefix),
                    ))
                }
                None => None,
            };
            let listener = TcpListener::bind(listen).await?;
            ready(json!({ "grpc": listener.local_addr()?.to_string() }));
            EchoServer::serve(listener, storage, stdin_closed()).await?;
        }
    }
    Ok(())
}
