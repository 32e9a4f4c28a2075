//! Publishing every event: to an EventBridge bus ([`BusPublisher`]) or, with
//! no bus, as JSON lines to a file or stdout ([`JsonLinesSink`]).
//!
//! Publishing never drops an event: the bus publisher retries the entries the
//! bus refused until they are accepted or the projector shuts down, and the
//! caller checkpoints only after [`Publisher::publish`] returned `Ok`.
//!
//! EventBridge accepts `PutEvents` to a bus that does not exist, with no
//! failed entry, and drops the events. The bus publisher therefore sends
//! nothing until [`BusCheck`] (`DescribeEventBus`, at start-up and every
//! interval) has confirmed the bus, and waits, not checkpointing, while it
//! is missing.
//!
//! The trace context stored with an event travels with it: as the entry's
//! `TraceHeader` (X-Ray format, which EventBridge passes on to its targets),
//! and as `traceHeader` on a sink line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::primitives::DateTime as SdkDateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::{DateTime, Utc};
use dynabridge::envelope::replayed_envelope_json;
use dynabridge_domain::StoredEvent;
use dynabridge_runtime::telemetry::TraceParent;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use uuid::Uuid;

use crate::control::{Backoff, Shutdown, Timing};
use crate::error::{StoreError, sdk_error};
use crate::metrics::{ProjectorMetrics, PublishFailure};

/// EventBridge's limit of entries per `PutEvents` call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("writing the event sink: {0}")]
    Sink(#[from] std::io::Error),
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// Shutdown came while events were still unpublished.
    #[error("shutting down with events unpublished")]
    Shutdown,
}

#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `events`, in order; `Ok` once every one is accepted.
    async fn publish(
        &self,
        events: &[StoredEvent],
        shutdown: &Shutdown,
    ) -> Result<(), PublishError> {
        self.publish_marked(events, None, shutdown).await
    }

    /// [`Self::publish`], each entry marked as published again by the
    /// replay `replay_id` when there is one (the envelope's `replay_id`).
    async fn publish_marked(
        &self,
        events: &[StoredEvent],
        replay_id: Option<&str>,
        shutdown: &Shutdown,
    ) -> Result<(), PublishError>;
}

/// One `PutEvents` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusEntry {
    /// For logs only: the bus assigns its own id.
    pub event_id: Uuid,
    pub source: String,
    pub detail_type: String,
    pub detail: String,
    pub event_bus_name: String,
    pub time: DateTime<Utc>,
    /// The X-Ray form of the event's stored trace context, if it has one.
    pub trace_header: Option<String>,
}

/// The X-Ray trace header of `event`'s stored W3C trace context; `None`
/// without one, or if it is not one this build can read.
pub fn trace_header(event: &StoredEvent) -> Option<String> {
    event
        .trace_parent
        .as_deref()
        .and_then(TraceParent::parse)
        .map(|t| t.to_xray())
}

/// The EventBridge calls the projector makes.
#[async_trait]
pub trait EventBusApi: Send + Sync {
    /// Sends at most [`MAX_ENTRIES_PER_CALL`] entries. Returns, for each
    /// entry in order, `None` if the bus accepted it, else its error code.
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, StoreError>;

    /// Whether the bus named `bus` exists (`DescribeEventBus`).
    async fn bus_exists(&self, bus: &str) -> Result<bool, StoreError>;
}

/// Whether the event bus exists: checked at start-up ([`BusCheck::start`])
/// and then every interval ([`BusCheck::run`]). Until a check has found
/// it, it counts as missing; once found, a check that fails (throttled,
/// unreachable) changes nothing, and only an answer that it does not exist
/// makes it missing again.
pub struct BusCheck {
    api: Arc<dyn EventBusApi>,
    bus: String,
    found: watch::Sender<bool>,
}

impl BusCheck {
    /// Checks once, and returns the check and what it says, which the
    /// publisher and the readiness follow.
    pub async fn start(api: Arc<dyn EventBusApi>, bus: String) -> (Self, watch::Receiver<bool>) {
        let found = Self::verdict(&bus, false, true, api.bus_exists(&bus).await);
        let (tx, rx) = watch::channel(found);
        (
            Self {
                api,
                bus,
                found: tx,
            },
            rx,
        )
    }

    /// Checks every `every` until `shutdown`.
    pub async fn run(self, every: Duration, shutdown: Shutdown) {
        while shutdown.sleep(every).await {
            let was = *self.found.borrow();
            let now = Self::verdict(&self.bus, was, false, self.api.bus_exists(&self.bus).await);
            if now != was {
                self.found.send_replace(now);
            }
        }
    }

    /// What a check's outcome makes of the bus, logged when it changes
    /// (`first`: the start-up check, logged whatever it finds missing).
    fn verdict(bus: &str, was: bool, first: bool, outcome: Result<bool, StoreError>) -> bool {
        match outcome {
            Ok(true) => {
                if !was && !first {
                    tracing::info!(event_bus = bus, "event bus found: publishing");
                }
                true
            }
            Ok(false) => {
                if was || first {
                    tracing::error!(
                        event_bus = bus,
                        "event bus does not exist: nothing is published or checkpointed until it does"
                    );
                }
                false
            }
            Err(err) => {
                if first {
                    tracing::warn!(event_bus = bus, error = %err, "event bus could not be checked: nothing is published until it is");
                } else {
                    tracing::debug!(event_bus = bus, error = %err, "event bus check failed; keeping the last answer");
                }
                was
            }
        }
    }
}

/// Publishes to an EventBridge bus, retrying refused entries alone, while
/// the bus is confirmed to exist.
pub struct BusPublisher {
    api: Arc<dyn EventBusApi>,
    source: String,
    bus: String,
    found: watch::Receiver<bool>,
    timing: Timing,
    metrics: ProjectorMetrics,
}

impl BusPublisher {
    /// Publishes to `bus` while `found` (a [`BusCheck`]'s) says it exists.
    pub fn new(
        api: Arc<dyn EventBusApi>,
        source: String,
        bus: String,
        found: watch::Receiver<bool>,
        timing: Timing,
        metrics: ProjectorMetrics,
    ) -> Self {
        Self {
            api,
            source,
            bus,
            found,
            timing,
            metrics,
        }
    }

    fn entry(&self, event: &StoredEvent, replay_id: Option<&str>) -> BusEntry {
        BusEntry {
            event_id: event.event_id,
            source: self.source.clone(),
            detail_type: event.event.event_type().to_owned(),
            detail: replayed_envelope_json(event, replay_id),
            event_bus_name: self.bus.clone(),
            time: event.occurred_at,
            trace_header: trace_header(event),
        }
    }

    /// Sends `pending` until the bus has accepted every entry.
    async fn send_all(
        &self,
        mut pending: Vec<BusEntry>,
        shutdown: &Shutdown,
    ) -> Result<(), PublishError> {
        let mut backoff: Backoff = self.timing.retry_backoff();
        loop {
            // Waiting on the bus is progress, however long it refuses.
            crate::progress::beat();
            if !*self.found.borrow() {
                // Sent now, the entries would be accepted and dropped.
                self.metrics
                    .publish_failed(PublishFailure::BusMissing, count(pending.len()));
                tracing::debug!(event_bus = %self.bus, entries = pending.len(), "event bus missing, waiting");
                if !shutdown.sleep(backoff.next_delay()).await {
                    return Err(PublishError::Shutdown);
                }
                continue;
            }
            match self.api.put_events(&pending).await {
                Ok(results) => {
                    let sent = pending.len();
                    // Results match entries by position; an entry without a
                    // result is treated as refused, never as accepted.
                    let refused: Vec<BusEntry> = pending
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, entry)| match results.get(i) {
                            Some(None) => None,
                            Some(Some(code)) => {
                                tracing::warn!(event_id = %entry.event_id, event_type = %entry.detail_type, error_code = %code, "event bus refused an event, retrying it");
                                Some(entry)
                            }
                            None => {
                                tracing::warn!(event_id = %entry.event_id, event_type = %entry.detail_type, "event bus returned no result for an event, retrying it");
                                Some(entry)
                            }
                        })
                        .collect();
                    self.metrics
                        .events_published
                        .inc_by(count(sent - refused.len()));
                    if refused.is_empty() {
                        return Ok(());
                    }
                    self.metrics
                        .publish_failed(PublishFailure::Refused, count(refused.len()));
                    pending = refused;
                }
                Err(err) if err.is_transient() => {
                    self.metrics.publish_failed(PublishFailure::Call, 1);
                    tracing::warn!(error = %err, entries = pending.len(), "event bus unavailable, retrying");
                }
                Err(err) => {
                    self.metrics.publish_failed(PublishFailure::Call, 1);
                    tracing::error!(error = %err, entries = pending.len(), "publishing failed, retrying");
                }
            }
            if !shutdown.sleep(backoff.next_delay()).await {
                return Err(PublishError::Shutdown);
            }
        }
    }
}

#[async_trait]
impl Publisher for BusPublisher {
    async fn publish_marked(
        &self,
        events: &[StoredEvent],
        replay_id: Option<&str>,
        shutdown: &Shutdown,
    ) -> Result<(), PublishError> {
        for chunk in events.chunks(MAX_ENTRIES_PER_CALL) {
            self.send_all(
                chunk.iter().map(|e| self.entry(e, replay_id)).collect(),
                shutdown,
            )
            .await?;
        }
        Ok(())
    }
}

/// `PutEvents` through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SdkEventBus {
    client: aws_sdk_eventbridge::Client,
}

impl SdkEventBus {
    pub fn new(client: aws_sdk_eventbridge::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl EventBusApi for SdkEventBus {
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, StoreError> {
        let entries = entries.iter().map(request_entry).collect();
        let out = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_error("publishing events", e))?;
        Ok(out
            .entries()
            .iter()
            .map(|r| r.error_code().map(str::to_owned))
            .collect())
    }

    async fn bus_exists(&self, bus: &str) -> Result<bool, StoreError> {
        match self.client.describe_event_bus().name(bus).send().await {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(sdk_error("describing the event bus", err)),
        }
    }
}

/// A number of entries or events, as a counter increment.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The SDK's form of one entry.
fn request_entry(entry: &BusEntry) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .source(&entry.source)
        .detail_type(&entry.detail_type)
        .detail(&entry.detail)
        .event_bus_name(&entry.event_bus_name)
        .time(SdkDateTime::from_secs_and_nanos(
            entry.time.timestamp(),
            entry.time.timestamp_subsec_nanos(),
        ))
        .set_trace_header(entry.trace_header.clone())
        .build()
}

enum SinkTarget {
    Stdout(tokio::io::Stdout),
    File(tokio::fs::File),
}

/// Events as JSON lines, shaped like the EventBridge entry they would be.
pub struct JsonLinesSink {
    target: tokio::sync::Mutex<SinkTarget>,
    source: String,
    metrics: ProjectorMetrics,
}

impl JsonLinesSink {
    /// Opens `path` for appending (creating it); `-` is stdout.
    pub async fn open(
        path: &Path,
        source: String,
        metrics: ProjectorMetrics,
    ) -> std::io::Result<Self> {
        let target = if path == Path::new("-") {
            SinkTarget::Stdout(tokio::io::stdout())
        } else {
            SinkTarget::File(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            )
        };
        Ok(Self {
            target: tokio::sync::Mutex::new(target),
            source,
            metrics,
        })
    }

    fn line(
        &self,
        event: &StoredEvent,
        replay_id: Option<&str>,
    ) -> Result<String, serde_json::Error> {
        let detail: serde_json::Value =
            serde_json::from_str(&replayed_envelope_json(event, replay_id))?;
        let mut line = serde_json::json!({
            "source": self.source,
            "detailType": event.event.event_type(),
            // The sink stands in for a bus when there is none.
            "eventBusName": null,
            "detail": detail,
        });
        if let Some(header) = trace_header(event) {
            line["traceHeader"] = serde_json::Value::String(header);
        }
        serde_json::to_string(&line)
    }

    async fn write(&self, batch: &str) -> std::io::Result<()> {
        // One write per batch under the lock: lines of concurrent shards
        // never interleave.
        let mut target = self.target.lock().await;
        match &mut *target {
            SinkTarget::Stdout(out) => {
                out.write_all(batch.as_bytes()).await?;
                out.flush().await
            }
            SinkTarget::File(file) => {
                file.write_all(batch.as_bytes()).await?;
                file.flush().await
            }
        }
    }
}

#[async_trait]
impl Publisher for JsonLinesSink {
    async fn publish_marked(
        &self,
        events: &[StoredEvent],
        replay_id: Option<&str>,
        _shutdown: &Shutdown,
    ) -> Result<(), PublishError> {
        let mut batch = String::new();
        for event in events {
            batch.push_str(&self.line(event, replay_id)?);
            batch.push('\n');
        }
        self.write(&batch).await.map_err(|err| {
            self.metrics.publish_failed(PublishFailure::Sink, 1);
            PublishError::Sink(err)
        })?;
        self.metrics.events_published.inc_by(count(events.len()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeBus, fast_timing, user_events};
    use dynabridge::envelope::envelope_json;

    #[tokio::test]
    async fn only_refused_entries_are_sent_again() {
        let bus = FakeBus::default();
        let metrics = ProjectorMetrics::new().unwrap();
        // Positions 2 and 7 of the first call, and 2 again on the retry.
        bus.refuse_next(vec![2, 7]);
        bus.refuse_next(vec![1]);
        let publisher = BusPublisher::new(
            Arc::new(bus.clone()),
            "src".into(),
            "bus".into(),
            watch::channel(true).1,
            fast_timing(),
            metrics.clone(),
        );
        let events = user_events(12);
        let (_trigger, shutdown) = Shutdown::new();
        publisher.publish(&events, &shutdown).await.unwrap();

        let calls = bus.calls();
        let versions: Vec<Vec<i64>> = calls
            .iter()
            .map(|call| call.iter().map(|e| version_of(e, &events)).collect())
            .collect();
        assert_eq!(
            versions,
            vec![
                (1..=10).collect::<Vec<_>>(),
                vec![3, 8],
                vec![8],
                vec![11, 12],
            ]
        );
        let first = &calls[0][0];
        assert_eq!(
            (
                first.source.as_str(),
                first.detail_type.as_str(),
                first.event_bus_name.as_str()
            ),
            ("src", "UserCreated", "bus")
        );
        assert_eq!(first.time, events[0].occurred_at);
        assert_eq!(first.detail, envelope_json(&events[0]));
        assert_eq!(bus.accepted().len(), 12);
        assert_eq!(metrics.events_published.get(), 12, "each accepted once");
        assert_eq!(metrics.publish_failures(PublishFailure::Refused), 3);
        assert_eq!(metrics.publish_failures(PublishFailure::Call), 0);
    }

    #[tokio::test]
    async fn shutdown_stops_retrying_with_an_error() {
        let bus = FakeBus::default();
        let metrics = ProjectorMetrics::new().unwrap();
        bus.refuse_forever();
        let publisher = BusPublisher::new(
            Arc::new(bus.clone()),
            "src".into(),
            "bus".into(),
            watch::channel(true).1,
            fast_timing(),
            metrics.clone(),
        );
        let (trigger, shutdown) = Shutdown::new();
        let events = user_events(1);
        let task = tokio::spawn(async move { publisher.publish(&events, &shutdown).await });
        crate::testing::wait_until("a few retries", || bus.calls().len() >= 3).await;
        trigger.trigger();
        let result = task.await.unwrap();
        assert!(matches!(result, Err(PublishError::Shutdown)), "{result:?}");
        assert!(bus.accepted().is_empty());
    }

    #[tokio::test]
    async fn nothing_is_sent_to_a_missing_bus_until_a_check_finds_it() {
        let bus = FakeBus::default();
        bus.set_missing(true);
        let metrics = ProjectorMetrics::new().unwrap();
        let (check, found) = BusCheck::start(Arc::new(bus.clone()), "bus".into()).await;
        assert!(!*found.borrow(), "the start-up check finds it missing");
        let publisher = BusPublisher::new(
            Arc::new(bus.clone()),
            "src".into(),
            "bus".into(),
            found.clone(),
            fast_timing(),
            metrics.clone(),
        );
        let (trigger, shutdown) = Shutdown::new();
        let checking = tokio::spawn(check.run(Duration::from_millis(5), shutdown.clone()));
        let events = user_events(3);
        let publishing = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { publisher.publish(&events, &shutdown).await }
        });
        crate::testing::wait_until("the publisher to wait on the bus", || {
            metrics.publish_failures(PublishFailure::BusMissing) >= 3
        })
        .await;
        assert!(bus.calls().is_empty(), "no PutEvents to a missing bus");
        assert!(
            !publishing.is_finished(),
            "not published, so not checkpointed"
        );

        bus.set_missing(false);
        publishing.await.unwrap().unwrap();
        assert!(*found.borrow(), "the check found it");
        assert_eq!(bus.accepted().len(), 3);
        trigger.trigger();
        checking.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_check_keeps_the_last_answer_and_only_not_found_makes_the_bus_missing() {
        let failed = || Err(StoreError::Unavailable("throttled".into()));
        assert!(
            !BusCheck::verdict("b", false, true, failed()),
            "unconfirmed at start"
        );
        assert!(
            BusCheck::verdict("b", true, false, failed()),
            "found stays found"
        );
        assert!(!BusCheck::verdict("b", false, false, failed()));
        assert!(!BusCheck::verdict("b", true, false, Ok(false)));
        assert!(BusCheck::verdict("b", false, false, Ok(true)));
    }

    fn version_of(entry: &BusEntry, events: &[StoredEvent]) -> i64 {
        events
            .iter()
            .find(|e| e.event_id == entry.event_id)
            .map(|e| e.version)
            .unwrap()
    }

    #[tokio::test]
    async fn the_sink_appends_one_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (_trigger, shutdown) = Shutdown::new();
        let events = user_events(3);
        let sink =
            JsonLinesSink::open(&path, "dynabridge".into(), ProjectorMetrics::new().unwrap())
                .await
                .unwrap();
        sink.publish(&events[..2], &shutdown).await.unwrap();
        drop(sink);
        let sink =
            JsonLinesSink::open(&path, "dynabridge".into(), ProjectorMetrics::new().unwrap())
                .await
                .unwrap();
        sink.publish(&events[2..], &shutdown).await.unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        for (line, event) in lines.iter().zip(&events) {
            assert_eq!(line["source"], "dynabridge");
            assert_eq!(line["detailType"], event.event.event_type());
            assert!(line["eventBusName"].is_null());
            assert!(
                line.get("traceHeader").is_none(),
                "no trace context, no header"
            );
            assert_eq!(line["detail"]["eventId"], event.event_id.to_string());
            let detail: serde_json::Value = serde_json::from_str(&envelope_json(event)).unwrap();
            assert_eq!(line["detail"], detail);
        }
    }

    const TRACE_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TRACE_HEADER: &str =
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1";

    #[tokio::test]
    async fn the_stored_trace_context_goes_on_the_entry_as_an_xray_header() {
        let bus = FakeBus::default();
        let publisher = BusPublisher::new(
            Arc::new(bus.clone()),
            "src".into(),
            "bus".into(),
            watch::channel(true).1,
            fast_timing(),
            ProjectorMetrics::new().unwrap(),
        );
        let mut events = user_events(2);
        events[0].trace_parent = Some(TRACE_PARENT.into());
        let (_trigger, shutdown) = Shutdown::new();
        publisher.publish(&events, &shutdown).await.unwrap();
        let accepted = bus.accepted();
        assert_eq!(accepted[0].trace_header.as_deref(), Some(TRACE_HEADER));
        assert_eq!(accepted[1].trace_header, None);
        // And the SDK request carries it.
        let entry = request_entry(&accepted[0]);
        assert_eq!(entry.trace_header(), Some(TRACE_HEADER));
        assert_eq!(request_entry(&accepted[1]).trace_header(), None);
    }

    #[tokio::test]
    async fn the_sink_line_carries_the_trace_header_and_failed_writes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (_trigger, shutdown) = Shutdown::new();
        let mut events = user_events(1);
        events[0].trace_parent = Some(TRACE_PARENT.into());
        let metrics = ProjectorMetrics::new().unwrap();
        let sink = JsonLinesSink::open(&path, "dynabridge".into(), metrics.clone())
            .await
            .unwrap();
        sink.publish(&events, &shutdown).await.unwrap();
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(line["traceHeader"], TRACE_HEADER);
        assert_eq!(line["detail"]["correlationId"], events[0].correlation_id);
        assert_eq!(metrics.publish_failures(PublishFailure::Sink), 0);
        assert_eq!(metrics.events_published.get(), 1);

        // A sink that cannot be written: a read-only handle on the file.
        let read_only = JsonLinesSink {
            target: tokio::sync::Mutex::new(SinkTarget::File(
                tokio::fs::File::open(&path).await.unwrap(),
            )),
            source: "dynabridge".into(),
            metrics: metrics.clone(),
        };
        assert!(matches!(
            read_only.publish(&events, &shutdown).await,
            Err(PublishError::Sink(_))
        ));
        assert_eq!(metrics.publish_failures(PublishFailure::Sink), 1);
        assert_eq!(
            metrics.events_published.get(),
            1,
            "a failed write publishes nothing"
        );
    }
}
