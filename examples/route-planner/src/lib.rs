//! The route planner: an example of a service downstream of the bus (seed
//! 000). An EventBridge rule sends every `OrderCreated` to its SQS queue;
//! it plans the order's route ([`plan`]) and records it through
//! `CommandService.CreateRoute`, whose `RouteCreated` the projector
//! publishes in turn, for whatever comes next.
//!
//! It reads the bus's copy of the events, never the event store's stream
//! (which has its two readers already), and holds no state of its own.
//! Delivery is at least once, and so is its consumption: the request id of
//! a route is `route/<event id>`, so a redelivered event is answered from
//! the command side's record of the first and records nothing twice; and an
//! order has one route, so even another copy of the order's event (a
//! replay) cannot add a second.
//!
//! A message it cannot handle (an event it cannot read, a command service
//! that is down or refuses the route) is left on the queue, hidden for a
//! while that doubles with each receive; after the queue's
//! `maxReceiveCount` receives SQS moves it to the queue's dead-letter queue
//! (see the deployment's README for the redrive).
#![forbid(unsafe_code)]

pub mod health;
pub mod plan;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use dynabridge::envelope::from_envelope;
use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge_aws::AwsArgs;
use dynabridge_domain::StoredEvent;
use tonic::Code;
use tonic::transport::Channel;

use crate::health::Health;
use crate::plan::{Plan, plan_for};

/// Flags and environment of the route planner.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// The queue the route planner's rule sends `OrderCreated` to.
    #[arg(long, env = "DYNABRIDGE_ROUTE_PLANNER_QUEUE_URL")]
    pub queue_url: String,
    /// The command service, where routes are recorded.
    #[arg(
        long,
        env = "DYNABRIDGE_COMMAND_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub command_endpoint: String,
    /// How long a receive waits for a message, in seconds (0 to 20).
    #[arg(
        long,
        env = "DYNABRIDGE_ROUTE_PLANNER_WAIT_SECONDS",
        default_value_t = 20
    )]
    pub wait_seconds: i32,
    /// How long a message that could not be handled stays hidden after its
    /// first receive, in milliseconds; it doubles with every receive, up to
    /// 15 minutes.
    #[arg(
        long,
        env = "DYNABRIDGE_ROUTE_PLANNER_RETRY_AFTER_MS",
        default_value_t = 1_000
    )]
    pub retry_after_ms: u64,
    /// The deadline of each `CreateRoute` call, in milliseconds.
    #[arg(
        long,
        env = "DYNABRIDGE_ROUTE_PLANNER_CALL_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub call_timeout_ms: u64,
    /// Address of the gRPC health server (see [`health`]).
    #[arg(
        long,
        env = "DYNABRIDGE_ROUTE_PLANNER_HEALTH_LISTEN",
        default_value = "127.0.0.1:50056"
    )]
    pub health_listen: SocketAddr,
}

impl Config {
    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_url.trim().is_empty() {
            return Err("the queue url must not be empty".into());
        }
        if !(0..=20).contains(&self.wait_seconds) {
            return Err("the wait must be 0 to 20 seconds".into());
        }
        if self.retry_after_ms == 0 || self.call_timeout_ms == 0 {
            return Err("the retry delay and the call timeout must be at least 1 ms".into());
        }
        Ok(())
    }

    /// The longest a pass of the loop may take while it works: a receive's
    /// wait, then ten messages each with its call and two SQS calls (the
    /// SDK's own timeouts bound those), with a margin. Liveness fails past
    /// it.
    pub fn liveness_window(&self) -> Duration {
        let wait = Duration::from_secs(u64::try_from(self.wait_seconds).unwrap_or(20));
        let call = Duration::from_millis(self.call_timeout_ms);
        wait + 10 * (call + Duration::from_secs(10)) + Duration::from_secs(30)
    }
}

/// Runs the route planner of `config` until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // For the IAM test and audits, as every binary.
    if let Some(path) = std::env::var_os(dynabridge_aws::CALL_LOG_ENV) {
        dynabridge_aws::record_calls_to(path)?;
    }
    let listener = tokio::net::TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("binding the health address {}", config.health_listen))?;
    let sdk = dynabridge_aws::load_sdk_config(&config.aws, None).await;
    let commands = Channel::from_shared(config.command_endpoint.clone())
        .context("the command endpoint")?
        .connect_lazy();
    let (health, server) = Health::serve(listener, config.liveness_window()).await?;
    Planner::new(dynabridge_aws::sqs_client(&sdk), commands, &config)
        .with_health(health.clone())
        .run_until(shutdown)
        .await;
    health.stop().await;
    server.await.context("the health server task")??;
    Ok(())
}

/// What becomes of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handled, or nothing to do: deleted.
    Done(&'static str),
    /// Left for another receive (and, after the queue's limit, its
    /// dead-letter queue).
    Retry(String),
}

/// The event a queue message carries: an EventBridge event whose `detail`
/// is the envelope's ProtoJSON. Any schema version: an older one is read
/// in the current shape.
pub fn read_message(body: &str) -> Result<StoredEvent, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let detail = value
        .get("detail")
        .cloned()
        .ok_or("not an EventBridge event: no detail")?;
    let envelope: pb::EventEnvelope =
        serde_json::from_value(detail).map_err(|e| format!("not an event envelope: {e}"))?;
    from_envelope(&envelope).map_err(|e| e.to_string())
}

/// The command that records `plan` for the order of `event`. Its request
/// id derives from the event's id: a redelivery is the same request.
pub fn request_for(event: &StoredEvent, plan: Plan) -> pb::CreateRouteRequest {
    pb::CreateRouteRequest {
        request_id: format!("route/{}", event.event_id),
        correlation_id: event.correlation_id.clone(),
        order_id: event.event.aggregate_id().to_string(),
        stops: plan.stops,
        distance_metres: plan.distance_metres,
    }
}

/// What the command service's answer makes of the message.
pub fn verdict_of(answer: Result<(), tonic::Status>) -> Verdict {
    match answer {
        Ok(()) => Verdict::Done("route recorded"),
        // Another copy of the order's event recorded it first.
        Err(status) if status.code() == Code::AlreadyExists => {
            Verdict::Done("the order has its route already")
        }
        Err(status) => Verdict::Retry(format!(
            "CreateRoute answered {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// How long a message stays hidden after its `receive_count`th receive
/// failed: `first`, doubling, at most 15 minutes.
pub fn retry_delay(first: Duration, receive_count: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(15 * 60);
    let doublings = receive_count.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX)
}

/// A long poll outlasts the SDK's usual timeouts (5 s an attempt, 15 s an
/// operation): a receive may take its wait and a margin, one attempt at a
/// time.
fn receive_timeouts(wait_seconds: i32) -> aws_sdk_sqs::config::Builder {
    let wait = Duration::from_secs(u64::try_from(wait_seconds).unwrap_or(20));
    let attempt = wait + Duration::from_secs(5);
    aws_sdk_sqs::config::Builder::default().timeout_config(
        aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(attempt)
            .operation_timeout(attempt * 3)
            .build(),
    )
}

/// The planner's loop: receive, plan, record, delete.
pub struct Planner {
    sqs: aws_sdk_sqs::Client,
    commands: CommandServiceClient<Channel>,
    queue_url: String,
    wait_seconds: i32,
    retry_after: Duration,
    call_timeout: Duration,
    health: Option<Health>,
}

impl Planner {
    pub fn new(sqs: aws_sdk_sqs::Client, commands: Channel, config: &Config) -> Self {
        Self {
            sqs,
            commands: CommandServiceClient::new(commands),
            queue_url: config.queue_url.clone(),
            wait_seconds: config.wait_seconds,
            retry_after: Duration::from_millis(config.retry_after_ms),
            call_timeout: Duration::from_millis(config.call_timeout_ms),
            health: None,
        }
    }

    /// Reports its receives and its progress to `health`.
    #[must_use]
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Handles messages until `shutdown`: a receive in progress is
    /// abandoned, the messages already received are finished first.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        tracing::info!(queue_url = %self.queue_url, "route planner started");
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            if let Some(health) = &self.health {
                health.beat();
            }
            let receive = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(self.wait_seconds)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .customize()
                .config_override(receive_timeouts(self.wait_seconds))
                .send();
            let received = tokio::select! {
                () = &mut shutdown => break,
                received = receive => received,
            };
            if let Some(health) = &self.health {
                health.received(received.is_ok()).await;
            }
            match received {
                Ok(out) => {
                    failures = 0;
                    for message in out.messages() {
                        self.handle(message).await;
                        if let Some(health) = &self.health {
                            health.beat();
                        }
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let delay =
                        retry_delay(self.retry_after, failures).min(Duration::from_secs(30));
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), retry_in_ms = delay.as_millis(), "receiving from the queue failed");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!("route planner stopped");
    }

    async fn handle(&mut self, message: &Message) {
        let Some(receipt) = message.receipt_handle() else {
            return;
        };
        let verdict = match read_message(message.body().unwrap_or_default()) {
            Err(err) => Verdict::Retry(format!("an event it cannot read: {err}")),
            Ok(event) => match plan_for(&event.event) {
                None => Verdict::Done("not an order placed"),
                Some(plan) => self.record(&event, plan).await,
            },
        };
        let message_id = message.message_id().unwrap_or_default();
        match verdict {
            Verdict::Done(what) => {
                tracing::info!(message_id, outcome = what, "message handled");
                if let Err(err) = self
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                {
                    // Received again later, and answered from the record.
                    tracing::warn!(message_id, error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "deleting a handled message failed");
                }
            }
            Verdict::Retry(why) => {
                let receive_count = message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let delay = retry_delay(self.retry_after, receive_count);
                tracing::warn!(message_id, receive_count, retry_in_ms = delay.as_millis(), reason = %why, "message left on the queue");
                let seconds = i32::try_from(delay.as_secs()).unwrap_or(i32::MAX);
                if let Err(err) = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(seconds)
                    .send()
                    .await
                {
                    tracing::warn!(message_id, error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "hiding a failed message failed; the queue's visibility timeout applies");
                }
            }
        }
    }

    async fn record(&mut self, event: &StoredEvent, plan: Plan) -> Verdict {
        let mut request = tonic::Request::new(request_for(event, plan));
        request.set_timeout(self.call_timeout);
        verdict_of(self.commands.create_route(request).await.map(drop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynabridge::envelope::envelope_json;
    use dynabridge::golden;

    #[test]
    fn a_message_is_read_from_the_bus_s_event_in_any_schema_version() {
        for fixture in golden::FIXTURES {
            let event = fixture.event();
            let body = serde_json::json!({
                "version": "0",
                "detail-type": event.event.event_type(),
                "source": "dynabridge",
                "detail": serde_json::from_str::<serde_json::Value>(fixture.published).unwrap(),
            })
            .to_string();
            let read = read_message(&body).unwrap();
            assert_eq!(read.event, event.event, "{}", fixture.name);
            assert_eq!(
                plan_for(&read.event).is_some(),
                read.event.event_type() == "OrderCreated"
            );
        }
        let event = golden::FIXTURES[0].event();
        let detail = envelope_json(&event);
        assert!(read_message(&format!("{{\"detail\":{detail}}}")).is_ok());
        for bad in ["", "{}", "[1]", "{\"detail\":{\"eventId\":1}}"] {
            assert!(read_message(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_route_s_request_id_is_the_event_s() {
        let order = golden::FIXTURES
            .iter()
            .map(|f| f.event())
            .find(|e| e.event.event_type() == "OrderCreated")
            .unwrap();
        let plan = plan_for(&order.event).unwrap();
        let request = request_for(&order, plan.clone());
        assert_eq!(request.request_id, format!("route/{}", order.event_id));
        assert_eq!(request.order_id, order.event.aggregate_id().to_string());
        assert_eq!(request.correlation_id, order.correlation_id);
        assert_eq!(request.stops, plan.stops);
        assert_eq!(request_for(&order, plan), request, "the same every time");
    }

    #[test]
    fn only_success_and_an_existing_route_delete_the_message() {
        assert_eq!(verdict_of(Ok(())), Verdict::Done("route recorded"));
        assert!(matches!(
            verdict_of(Err(tonic::Status::already_exists("route"))),
            Verdict::Done(_)
        ));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::InvalidArgument,
            Code::Internal,
        ] {
            assert!(
                matches!(
                    verdict_of(Err(tonic::Status::new(code, "x"))),
                    Verdict::Retry(_)
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn the_retry_delay_doubles_up_to_fifteen_minutes() {
        let first = Duration::from_millis(1_000);
        assert_eq!(retry_delay(first, 0), first);
        assert_eq!(retry_delay(first, 1), first);
        assert_eq!(retry_delay(first, 3), Duration::from_secs(4));
        assert_eq!(retry_delay(first, 11), Duration::from_secs(900));
        assert_eq!(retry_delay(first, u32::MAX), Duration::from_secs(900));
    }
}
