//! The route planner's gRPC health, for Kubernetes' probes:
//!
//! - readiness, [`HEALTH_SERVICE`] and `""`: SERVING while its last receive
//!   from the queue succeeded (NOT_SERVING until the first one has);
//! - liveness, [`LIVENESS_SERVICE`]: SERVING while its loop has gone round
//!   within the liveness window. A loop waiting on an unreachable queue
//!   still goes round (it retries); only a loop that hangs fails it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub const HEALTH_SERVICE: &str = "dynabridge.v1.RoutePlanner";
pub const LIVENESS_SERVICE: &str = "dynabridge.v1.RoutePlanner.Liveness";

/// The planner's side of its health server.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    last_beat: Arc<Mutex<Instant>>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Health {
    /// Serves health on `listener` (NOT_SERVING but live until the first
    /// receive), watching the loop's beats against `liveness_window`.
    pub async fn serve(
        listener: tokio::net::TcpListener,
        liveness_window: Duration,
    ) -> anyhow::Result<(Self, JoinHandle<Result<(), tonic::transport::Error>>)> {
        let addr = listener.local_addr()?;
        let (reporter, service) = tonic_health::server::health_reporter();
        for name in ["", HEALTH_SERVICE] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let (stop, mut stopped) = watch::channel(false);
        let health = Self {
            reporter,
            last_beat: Arc::new(Mutex::new(Instant::now())),
            addr,
            stop,
        };
        let watchdog = health.clone();
        let mut watchdog_stop = stopped.clone();
        tokio::spawn(async move {
            let every = (liveness_window / 4).max(Duration::from_millis(10));
            let mut live = true;
            loop {
                tokio::select! {
                    _ = watchdog_stop.changed() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let silent = watchdog.since_beat();
                let now_live = silent <= liveness_window;
                if now_live != live {
                    live = now_live;
                    if !live {
                        tracing::error!(
                            silent_ms = silent.as_millis(),
                            "the route planner's loop has made no progress"
                        );
                    }
                    watchdog
                        .reporter
                        .set_service_status(
                            LIVENESS_SERVICE,
                            if live {
                                ServingStatus::Serving
                            } else {
                                ServingStatus::NotServing
                            },
                        )
                        .await;
                }
            }
        });
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move {
                        let _ = stopped.changed().await;
                    },
                ),
        );
        tracing::info!(%addr, "route planner health listening");
        Ok((health, server))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The loop went round.
    pub fn beat(&self) {
        *self.last_beat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn since_beat(&self) -> Duration {
        self.last_beat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// A receive from the queue succeeded or failed.
    pub async fn received(&self, ok: bool) {
        let status = if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in ["", HEALTH_SERVICE] {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Everything NOT_SERVING, then the server stops.
    pub async fn stop(&self) {
        for name in ["", HEALTH_SERVICE, LIVENESS_SERVICE] {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    async fn status(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
        client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    }

    #[tokio::test]
    async fn ready_while_receiving_and_live_while_the_loop_goes_round() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let window = Duration::from_millis(200);
        let (health, server) = Health::serve(listener, window).await.unwrap();
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", health.addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let (serving, not) = (
            ServingStatus::Serving as i32,
            ServingStatus::NotServing as i32,
        );
        assert_eq!(
            status(&mut client, HEALTH_SERVICE).await,
            not,
            "no receive yet"
        );
        assert_eq!(status(&mut client, LIVENESS_SERVICE).await, serving);

        health.received(true).await;
        assert_eq!(status(&mut client, "").await, serving);
        assert_eq!(status(&mut client, HEALTH_SERVICE).await, serving);
        health.received(false).await;
        assert_eq!(status(&mut client, HEALTH_SERVICE).await, not);

        // No beat for longer than the window: not live, until it beats.
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&mut client, LIVENESS_SERVICE).await == serving {
            assert!(Instant::now() < deadline, "still live without beats");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        health.beat();
        while status(&mut client, LIVENESS_SERVICE).await != serving {
            assert!(Instant::now() < deadline, "not live again after a beat");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        health.stop().await;
        server.await.unwrap().unwrap();
    }
}
