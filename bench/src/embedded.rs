//! The embedded store alone (the local stack's `--store-only`, in memory),
//! in this process, for the benchmarks that bring their own services.

use std::net::SocketAddr;

use anyhow::Context as _;

/// A running embedded store.
pub struct EmbeddedStore {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), local_stack::RunError>>,
}

impl EmbeddedStore {
    /// Starts the store on a free port, its tables provisioned under
    /// `prefix`.
    pub async fn start(prefix: &str) -> anyhow::Result<Self> {
        let stack = local_stack::start(local_stack::Options {
            in_memory: true,
            store_only: true,
            table_prefix: prefix.into(),
            dynamodb_port: 0,
            metrics_port: 0,
            ..local_stack::Options::default()
        })
        .await
        .context("starting the embedded store")?;
        let addr = stack.endpoints().dynamodb;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(stack.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop,
            running,
        })
    }

    /// The AWS configuration of clients of a store at `addr` (this one, or
    /// a proxy in front of it).
    pub async fn sdk_config(addr: SocketAddr) -> (dynabridge_aws::AwsArgs, aws_config::SdkConfig) {
        let aws = dynabridge_aws::AwsArgs {
            endpoint_url: Some(format!("http://{addr}")),
            region: Some("us-east-1".into()),
        };
        let sdk = local_stack::embedded_sdk_config(&aws, true).await;
        (aws, sdk)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.running.await.context("the store's task")??;
        Ok(())
    }
}
