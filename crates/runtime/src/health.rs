//! Health that follows the store. Each binary checks, every interval and
//! with a timeout, that it can reach one of its own tables, with a call its
//! IAM role already allows (a `GetItem` of a key that is never written), and
//! reports NOT_SERVING while it cannot, SERVING again once it can.
//!
//! The gRPC services report under three names ([`ServiceHealth`]):
//!
//! - `""` and the service's own name (`dynabridge.v1.CommandService`,
//!   `dynabridge.v1.QueryService`) follow the store: readiness. The
//!   projector (`dynabridge.v1.Projector`) reports its own readiness, which
//!   also needs its stream found and its lag within bounds
//!   ([`Readiness::Reported`]);
//! - `<service>.Liveness` is SERVING for as long as the process serves,
//!   whatever the store does: liveness. Restarting a pod does not bring
//!   DynamoDB back.
//!
//! Every name turns NOT_SERVING at shutdown, before requests drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use dynabridge_aws::CallError;

/// The key the probe reads: never written, so the read is as cheap as one
/// gets, and harmless if someone does write it.
pub const PROBE_KEY: &str = "dynabridge-health-probe";

/// How often, and how patiently, the store is checked.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct HealthArgs {
    /// How often the store is checked, in milliseconds (1 to 3600000).
    #[arg(
        long,
        env = "DYNABRIDGE_HEALTH_CHECK_INTERVAL_MS",
        default_value_t = HealthArgs::DEFAULT_INTERVAL_MS
    )]
    pub health_check_interval_ms: u64,
    /// How long one check may take before the store counts as unreachable,
    /// in milliseconds (1 to 60000).
    #[arg(
        long,
        env = "DYNABRIDGE_HEALTH_CHECK_TIMEOUT_MS",
        default_value_t = HealthArgs::DEFAULT_TIMEOUT_MS
    )]
    pub health_check_timeout_ms: u64,
}

impl Default for HealthArgs {
    fn default() -> Self {
        Self {
            health_check_interval_ms: Self::DEFAULT_INTERVAL_MS,
            health_check_timeout_ms: Self::DEFAULT_TIMEOUT_MS,
        }
    }
}

impl HealthArgs {
    pub const DEFAULT_INTERVAL_MS: u64 = 5_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
    const MAX_INTERVAL_MS: u64 = 3_600_000;
    const MAX_TIMEOUT_MS: u64 = 60_000;

    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_INTERVAL_MS).contains(&self.health_check_interval_ms) {
            return Err(format!(
                "health check interval must be between 1 and {} ms, not {}",
                Self::MAX_INTERVAL_MS,
                self.health_check_interval_ms
            ));
        }
        if !(1..=Self::MAX_TIMEOUT_MS).contains(&self.health_check_timeout_ms) {
            return Err(format!(
                "health check timeout must be between 1 and {} ms, not {}",
                Self::MAX_TIMEOUT_MS,
                self.health_check_timeout_ms
            ));
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.health_check_interval_ms.max(1))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.health_check_timeout_ms.max(1))
    }
}

/// The cheap call: a `GetItem` of [`PROBE_KEY`] on one of the binary's own
/// tables.
#[derive(Clone, Debug)]
pub struct StoreProbe {
    client: aws_sdk_dynamodb::Client,
    table: String,
    key_attribute: &'static str,
}

impl StoreProbe {
    /// Reads `table`, whose string hash key is `key_attribute`.
    pub fn get_item(
        client: aws_sdk_dynamodb::Client,
        table: String,
        key_attribute: &'static str,
    ) -> Self {
        Self {
            client,
            table,
            key_attribute,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `Ok` if the store answered within `timeout`. A throttling answer is
    /// an answer: the store is there, and taking every replica out of
    /// service at once would not lighten its load.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let call = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(self.key_attribute, AttributeValue::S(PROBE_KEY.to_owned()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                let throttled = err.as_service_error().is_some_and(|e| {
                    e.is_provisioned_throughput_exceeded_exception()
                        || e.is_request_limit_exceeded()
                        || aws_sdk_dynamodb::error::ProvideErrorMetadata::code(e)
                            == Some("ThrottlingException")
                });
                if throttled {
                    return Ok(());
                }
                Err(CallError::from_sdk(format!("reading {}", self.table), err).to_string())
            }
            Err(_) => Err(format!(
                "reading {} took more than {} ms",
                self.table,
                timeout.as_millis()
            )),
        }
    }
}

/// The `dynabridge_store_reachable` gauge of a binary: 1 while its health
/// check reaches the store, else 0.
pub fn reachable_gauge(
    registry: &prometheus::Registry,
) -> Result<prometheus::IntGauge, prometheus::Error> {
    crate::telemetry::metrics::register(
        registry,
        prometheus::IntGauge::new(
            "dynabridge_store_reachable",
            "1 while the health check reaches the store, else 0",
        )?,
    )
}

/// Where a [`StoreHealth`] reports, besides its own [`StoreHealth::reachable`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// These names turn SERVING and NOT_SERVING with the store.
    pub reporter: Option<(HealthReporter, Vec<&'static str>)>,
    /// Set to 1 while the store is reachable, else 0.
    pub gauge: Option<prometheus::IntGauge>,
}

/// Asks a [`StoreHealth`] to check now.
#[derive(Clone, Debug)]
pub struct Recheck(Arc<Notify>);

impl Recheck {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

impl From<Arc<Notify>> for Recheck {
    /// Checks when `notify` is notified.
    fn from(notify: Arc<Notify>) -> Self {
        Self(notify)
    }
}

/// The least time between two checks a [`Recheck`] asked for: calls that
/// fail while the store is down ask for one each, and the store is not to
/// be probed in a loop.
const MIN_RECHECK_SPACING: Duration = Duration::from_millis(200);

/// The store, checked in the background.
#[derive(Debug)]
pub struct StoreHealth {
    reachable: watch::Receiver<bool>,
    recheck: Arc<Notify>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl StoreHealth {
    /// Checks the store once now, so that the first status is a real one,
    /// then every interval in the background until [`StoreHealth::stop`].
    pub async fn start(probe: StoreProbe, args: &HealthArgs, report: Report) -> Self {
        let first = probe.check(args.timeout()).await;
        if let Err(error) = &first {
            tracing::warn!(table = probe.table(), %error, "store unreachable: not serving");
        }
        let (tx, reachable) = watch::channel(first.is_ok());
        report.apply(first.is_ok()).await;
        let recheck = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(watch_store(
            probe,
            args.clone(),
            report,
            tx,
            recheck.clone(),
            stopped,
        ));
        Self {
            reachable,
            recheck,
            stop,
            task,
        }
    }

    /// Whether the last check reached the store; changes as checks do.
    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.reachable.clone()
    }

    /// A handle that makes the next check happen now rather than at the
    /// end of the interval.
    pub fn rechecker(&self) -> Recheck {
        Recheck(self.recheck.clone())
    }

    /// Stops checking; once this returns, nothing reports any more.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl Report {
    async fn apply(&self, reachable: bool) {
        if let Some(gauge) = &self.gauge {
            gauge.set(i64::from(reachable));
        }
        if let Some((reporter, services)) = &self.reporter {
            let status = if reachable {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in services {
                reporter.set_service_status(*service, status).await;
            }
        }
    }
}

async fn watch_store(
    probe: StoreProbe,
    args: HealthArgs,
    report: Report,
    reachable: watch::Sender<bool>,
    recheck: Arc<Notify>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep_until(last + args.interval()) => {}
            () = recheck.notified() => {
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep_until(last + MIN_RECHECK_SPACING) => {}
                }
            }
        }
        last = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = &mut stopped => return,
            outcome = probe.check(args.timeout()) => outcome,
        };
        let was = *reachable.borrow();
        match (&outcome, was) {
            (Err(error), true) => {
                tracing::warn!(table = probe.table(), %error, "store unreachable: not serving");
            }
            (Ok(()), false) => {
                tracing::info!(table = probe.table(), "store reachable again: serving");
            }
            (Err(error), false) => {
                tracing::debug!(table = probe.table(), %error, "store still unreachable");
            }
            (Ok(()), true) => {}
        }
        if outcome.is_ok() != was {
            report.apply(outcome.is_ok()).await;
            reachable.send_replace(outcome.is_ok());
        }
    }
}

/// What turns a service's readiness names (`""` and its own) SERVING.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The store check: ready while the store is reachable (the command
    /// and query services).
    Store,
    /// The service itself, through [`ServiceHealth::reporter`]: they start
    /// NOT_SERVING, and the store check only feeds
    /// [`ServiceHealth::reachable`] and the gauge (the projector, whose
    /// readiness also needs its stream and its lag).
    Reported,
}

/// The health of a gRPC service, under the names the module documentation
/// lists: what it reports, and how.
#[derive(Clone, Debug)]
pub struct HealthSpec {
    /// The service's own name, reported as readiness beside `""`.
    pub service: &'static str,
    /// `<service>.Liveness`: SERVING while the process serves.
    pub liveness: &'static str,
    /// The call that tells whether the store is reachable.
    pub probe: StoreProbe,
    pub args: HealthArgs,
    pub readiness: Readiness,
}

/// The health of a gRPC service, under the names the module documentation
/// lists, with the store checked in the background.
#[derive(Debug)]
pub struct ServiceHealth {
    reporter: HealthReporter,
    names: Vec<&'static str>,
    store: StoreHealth,
}

impl ServiceHealth {
    /// Starts checking the store with the spec's probe, reporting to
    /// `gauge` and, with [`Readiness::Store`], to the readiness names.
    /// Returns the health service to serve.
    pub async fn start(
        spec: HealthSpec,
        gauge: Option<prometheus::IntGauge>,
    ) -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let HealthSpec {
            service,
            liveness,
            probe,
            args,
            readiness,
        } = spec;
        let (reporter, server) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(liveness, ServingStatus::Serving)
            .await;
        let store_reports_to = match readiness {
            Readiness::Store => Some((reporter.clone(), vec!["", service])),
            Readiness::Reported => {
                for name in ["", service] {
                    reporter
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                None
            }
        };
        let store = StoreHealth::start(
            probe,
            &args,
            Report {
                reporter: store_reports_to,
                gauge,
            },
        )
        .await;
        let health = Self {
            reporter,
            names: vec![service, liveness],
            store,
        };
        (health, server)
    }

    /// Where the service reports what it decides itself
    /// ([`Readiness::Reported`]).
    pub fn reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// A handle that makes the next store check happen now.
    pub fn rechecker(&self) -> Recheck {
        self.store.rechecker()
    }

    /// Whether the last check reached the store.
    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.store.reachable()
    }

    /// What the server's shutdown future should be: waits for `shutdown`,
    /// stops the checks, then turns every name NOT_SERVING.
    pub fn shutdown_after(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let Self {
            reporter,
            names,
            store,
        } = self;
        crate::grpc::not_serving_then(reporter, names, async move {
            shutdown.await;
            store.stop().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_timeouts_are_bounded() {
        assert_eq!(HealthArgs::default().validate(), Ok(()));
        assert_eq!(HealthArgs::default().interval(), Duration::from_secs(5));
        assert_eq!(HealthArgs::default().timeout(), Duration::from_secs(2));
        for (interval, timeout) in [(0, 1), (3_600_001, 1), (1, 0), (1, 60_001)] {
            let args = HealthArgs {
                health_check_interval_ms: interval,
                health_check_timeout_ms: timeout,
            };
            assert!(args.validate().is_err(), "{args:?}");
        }
    }
}
