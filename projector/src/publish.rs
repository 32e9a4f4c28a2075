//! Publishing every event: to an EventBridge bus ([`BusPublisher`]) or, with
//! no bus, as JSON lines to a file or stdout ([`JsonLinesSink`]).
//!
//! Publishing never drops an event: the bus publisher retries the entries the
//! bus refused until they are accepted or the projector shuts down, and the
//! caller checkpoints only after [`Publisher::publish`] returned `Ok`.
//!
//! The trace context stored with an event travels with it: as the entry's
//! `TraceHeader` (X-Ray format, which EventBridge passes on to its targets),
//! and as `traceHeader` on a sink line.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_eventbridge::primitives::DateTime as SdkDateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::{DateTime, Utc};
use dynabridge::envelope::envelope_json;
use dynabridge_domain::StoredEvent;
use dynabridge_runtime::telemetry::TraceParent;
use tokio::io::AsyncWriteExt;
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

/// The `PutEvents` call.
#[async_trait]
pub trait EventBusApi: Send + Sync {
    /// Sends at most [`MAX_ENTRIES_PER_CALL`] entries. Returns, for each
    /// entry in order, `None` if the bus accepted it, else its error code.
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, StoreError>;
}

/// Publishes to an EventBridge bus, retrying refused entries alone.
pub struct BusPublisher {
    api: Box<dyn EventBusApi>,
    source: String,
    bus: String,
    timing: Timing,
    metrics: ProjectorMetrics,
}

impl BusPublisher {
    pub fn new(
        api: Box<dyn EventBusApi>,
        source: String,
        bus: String,
        timing: Timing,
        metrics: ProjectorMetrics,
    ) -> Self {
        Self {
            api,
            source,
            bus,
            timing,
            metrics,
        }
    }

    fn entry(&self, event: &StoredEvent) -> BusEntry {
        BusEntry {
            event_id: event.event_id,
            source: self.source.clone(),
            detail_type: event.event.event_type().to_owned(),
            detail: envelope_json(event),
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
    async fn publish(
        &self,
        events: &[StoredEvent],
        shutdown: &Shutdown,
    ) -> Result<(), PublishError> {
        for chunk in events.chunks(MAX_ENTRIES_PER_CALL) {
            self.send_all(chunk.iter().map(|e| self.entry(e)).collect(), shutdown)
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

    fn line(&self, event: &StoredEvent) -> Result<String, serde_json::Error> {
        let detail: serde_json::Value = serde_json::from_str(&envelope_json(event))?;
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
    async fn publish(
        &self,
        events: &[StoredEvent],
        _shutdown: &Shutdown,
    ) -> Result<(), PublishError> {
        let mut batch = String::new();
        for event in events {
            batch.push_str(&self.line(event)?);
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

    #[tokio::test]
    async fn only_refused_entries_are_sent_again() {
        let bus = FakeBus::default();
        let metrics = ProjectorMetrics::new().unwrap();
        // Positions 2 and 7 of the first call, and 2 again on the retry.
        bus.refuse_next(vec![2, 7]);
        bus.refuse_next(vec![1]);
        let publisher = BusPublisher::new(
            Box::new(bus.clone()),
            "src".into(),
            "bus".into(),
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
            Box::new(bus.clone()),
            "src".into(),
            "bus".into(),
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
            Box::new(bus.clone()),
            "src".into(),
            "bus".into(),
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
