//! The one shape of every binary: a `Config` that validates before anything
//! binds, `App::build(config, &host)` (binds, sets up, checks the store
//! once), `app.local_addr()`, and `app.run_until(shutdown)`. Each binary's
//! `main` is [`main`] with its own `App`.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use aws_config::SdkConfig;
use dynabridge_aws::AwsArgs;

use crate::grpc::Listeners;

/// What a service gets from the process it runs in: the AWS configuration,
/// and the registry its metrics go into. Services sharing a process (the
/// local stack) share one host, and so one registry.
#[derive(Clone, Debug)]
pub struct Host {
    pub sdk: SdkConfig,
    pub registry: prometheus::Registry,
}

impl Host {
    /// A host with a registry of its own.
    pub fn new(sdk: SdkConfig) -> Self {
        Self {
            sdk,
            registry: prometheus::Registry::new(),
        }
    }
}

/// A dynabridge binary: command service, query service or projector.
pub trait Service: Sized + Send + 'static {
    /// Its flags and environment.
    type Config: Send + 'static;

    /// The name in logs, traces and error messages.
    const NAME: &'static str;

    /// Checks what can be checked before binding a port.
    fn validate(config: &Self::Config) -> Result<(), String>;

    /// Where its AWS clients connect.
    fn aws(config: &Self::Config) -> &AwsArgs;

    /// The addresses of its gRPC server and, if any, of its `/metrics`
    /// endpoint.
    fn listen(config: &Self::Config) -> (SocketAddr, Option<SocketAddr>);

    /// Validates `config`, binds its ports and sets everything up (see
    /// [`Service::start_on`]).
    fn build(
        config: Self::Config,
        host: &Host,
    ) -> impl Future<Output = anyhow::Result<Self>> + Send {
        async move {
            checked::<Self>(&config)?;
            let (grpc, metrics) = Self::listen(&config);
            let listeners = bind(grpc, metrics).await?;
            Self::start_on(config, host, listeners).await
        }
    }

    /// Validates `config` and sets everything up on ports the caller bound
    /// (the local stack binds every port before it opens the store).
    fn build_on(
        config: Self::Config,
        host: &Host,
        listeners: Listeners,
    ) -> impl Future<Output = anyhow::Result<Self>> + Send {
        async move {
            checked::<Self>(&config)?;
            Self::start_on(config, host, listeners).await
        }
    }

    /// Sets everything up on `listeners`, given a `config` that
    /// [`Service::validate`] accepted, its metrics in `host`'s registry,
    /// which must not hold them already. The service answers health checks
    /// once this returns, and serves its API from [`Service::run_until`].
    /// Called through [`Service::build`] or [`Service::build_on`].
    fn start_on(
        config: Self::Config,
        host: &Host,
        listeners: Listeners,
    ) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// The address its gRPC server listens on.
    fn local_addr(&self) -> SocketAddr;

    /// The address of its `/metrics` endpoint, if it has one.
    fn metrics_addr(&self) -> Option<SocketAddr>;

    /// Serves until `shutdown` resolves, then turns NOT_SERVING and drains.
    fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// `config`, or why it is invalid.
fn checked<S: Service>(config: &S::Config) -> anyhow::Result<()> {
    S::validate(config)
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")
}

/// Binds the gRPC port and, if asked, the metrics port: a port that cannot
/// be had fails before anything starts.
pub async fn bind(grpc: SocketAddr, metrics: Option<SocketAddr>) -> anyhow::Result<Listeners> {
    let grpc_listener = tokio::net::TcpListener::bind(grpc)
        .await
        .with_context(|| format!("binding {grpc}"))?;
    let metrics = match metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint to {addr}"))?,
        ),
        None => None,
    };
    Ok(Listeners {
        grpc: grpc_listener,
        metrics,
    })
}

/// A binary's `main`, given its parsed configuration: logs and traces,
/// validation (exit code 2, as clap uses for bad arguments, before any port
/// is bound), the AWS call record if `DYNABRIDGE_AWS_CALL_LOG` asks for it,
/// the AWS configuration, then the service until SIGINT or SIGTERM.
pub fn main<S: Service>(config: S::Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{}: starting the runtime: {err}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = match crate::telemetry::init(S::NAME) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("{}: {err}", S::NAME);
                return ExitCode::FAILURE;
            }
        };
        if let Err(err) = S::validate(&config) {
            eprintln!("{}: invalid configuration: {err}", S::NAME);
            return ExitCode::from(2);
        }
        match serve::<S>(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "{} failed", S::NAME);
                eprintln!("{}: {err:#}", S::NAME);
                ExitCode::FAILURE
            }
        }
    })
}

async fn serve<S: Service>(config: S::Config) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(dynabridge_aws::CALL_LOG_ENV) {
        dynabridge_aws::record_calls_to(path)?;
    }
    let sdk = dynabridge_aws::load_sdk_config(S::aws(&config), None).await;
    let app = S::build(config, &Host::new(sdk)).await?;
    app.run_until(crate::grpc::shutdown_signal()).await
}
