//! Parking: an event the projector cannot apply stops its aggregate, not its
//! shard.
//!
//! The failing event is parked (a durable item with the event's id, type,
//! version and the error), and its aggregate's later events queue behind it
//! in order, parked too, while every other aggregate keeps flowing. A batch
//! may be checkpointed past a parked event only because the event is
//! durably parked. An operator then asks, through the admin service, for a
//! retry (the events are applied again, from the event store, in order, and
//! published) or a skip (they are dropped, and the read model's row moves
//! past their versions unchanged); the projector's [`run_requests`] carries
//! it out.
//!
//! The table holds, per parked aggregate, a header item (version 0: status,
//! the last version parked, the last error) and an item per parked event.
//! An event queued behind a parked one is parked only while the header
//! exists, so that a retry that releases the aggregate (deleting the header
//! on condition that no event was parked since) and a shard reader that
//! still thinks it parked never lose an event between them: the reader's
//! conditional write fails, and it applies the event instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
};
use chrono::Utc;
use dynabridge::convert::format_time;
use dynabridge::schema::parked as attr;
use dynabridge_aws::item::{get_n, get_s};
use dynabridge_domain::{AggregateType, Version};

use crate::control::Shutdown;
use crate::error::{StoreError, sdk_error};
use crate::metrics::ProjectorMetrics;
use crate::publish::Publisher;
use crate::writer::{Model, ReadModelWriter};

pub use dynabridge_stream::batch::ParkedEvent;

/// The model a parked event's row is in, if its aggregate type is known.
fn model_of(parked: &ParkedEvent) -> Option<Model> {
    parked
        .aggregate_type
        .as_deref()
        .and_then(AggregateType::parse)
        .and_then(Model::for_type)
}

/// What was asked of a parked aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for an operator.
    Parked,
    /// Apply its events again.
    Retry,
    /// Drop its events.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parked => attr::STATUS_PARKED,
            Self::Retry => attr::STATUS_RETRY,
            Self::Skip => attr::STATUS_SKIP,
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Parked, Self::Retry, Self::Skip]
            .into_iter()
            .find(|status| status.as_str() == raw)
    }
}

/// A parked aggregate's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub aggregate_id: String,
    pub status: Status,
    /// The first version parked: the events before it were applied.
    pub first_version: Version,
    pub last_version: Version,
}

/// The parked-events table, behind a trait so that the handler's unit tests
/// can fake it.
#[async_trait]
pub trait ParkingStore: Send + Sync + std::fmt::Debug {
    /// Parks `event`. The first event of an aggregate makes its header;
    /// one queued `behind` an earlier parked event is parked only if the
    /// header still exists: `Ok(false)` if it does not (the aggregate was
    /// released meanwhile).
    async fn park(&self, event: &ParkedEvent, behind: bool) -> Result<bool, StoreError>;

    /// Every parked aggregate's header.
    async fn headers(&self) -> Result<Vec<Header>, StoreError>;

    /// The parked events of one aggregate, in version order.
    async fn events(&self, aggregate_id: &str) -> Result<Vec<ParkedEvent>, StoreError>;

    /// A retry or skip failed: the aggregate is parked again, for `error`.
    async fn failed_again(&self, aggregate_id: &str, error: &str) -> Result<(), StoreError>;

    /// Asks for the aggregate's remaining events to be applied: after a
    /// skip, the events queued behind it meanwhile are not skipped.
    async fn retry_rest(&self, aggregate_id: &str) -> Result<(), StoreError>;

    /// Removes the parked events up to `last`, then the header if no later
    /// event was parked meanwhile: whether the aggregate is released.
    async fn release(&self, aggregate_id: &str, last: Version) -> Result<bool, StoreError>;
}

/// The parked aggregates as this instance knows them, and the table.
#[derive(Debug)]
pub struct Parking {
    store: Arc<dyn ParkingStore>,
    /// Each parked aggregate's first parked version.
    parked: Mutex<HashMap<String, Version>>,
    metrics: ProjectorMetrics,
}

impl Parking {
    pub fn new(store: Arc<dyn ParkingStore>, metrics: ProjectorMetrics) -> Self {
        Self {
            store,
            parked: Mutex::default(),
            metrics,
        }
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashMap<String, Version>> {
        // A poisoned lock only means a panic elsewhere; the set is still whole.
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this instance knows `aggregate_id` to be parked at or
    /// before `version`: an event before the first parked one (a batch
    /// handled again) is applied as usual.
    pub fn is_parked(&self, aggregate_id: &str, version: Version) -> bool {
        self.set()
            .get(aggregate_id)
            .is_some_and(|first| *first <= version)
    }

    /// Parks the first event of an aggregate that could not be applied.
    pub async fn park(&self, event: &ParkedEvent) -> Result<(), StoreError> {
        self.store.park(event, false).await?;
        self.set()
            .entry(event.aggregate_id.clone())
            .or_insert(event.version);
        self.metrics.events_parked.inc();
        tracing::error!(
            aggregate_id = %event.aggregate_id,
            version = event.version,
            event_id = event.event_id.as_deref().unwrap_or("unknown"),
            event_type = event.event_type.as_deref().unwrap_or("unknown"),
            error = %event.error,
            "aggregate parked"
        );
        Ok(())
    }

    /// Parks an event behind its aggregate's parked ones; `false` if the
    /// aggregate is no longer parked, and is then forgotten here.
    pub async fn queue_behind(&self, event: &ParkedEvent) -> Result<bool, StoreError> {
        if self.store.park(event, true).await? {
            self.metrics.events_parked.inc();
            tracing::warn!(
                aggregate_id = %event.aggregate_id,
                version = event.version,
                "event queued behind its aggregate's parked events"
            );
            Ok(true)
        } else {
            self.set().remove(&event.aggregate_id);
            Ok(false)
        }
    }

    /// Reads every header, and makes this instance's set the table's.
    pub async fn refresh(&self) -> Result<Vec<Header>, StoreError> {
        let headers = self.store.headers().await?;
        let parked: HashMap<String, Version> = headers
            .iter()
            .map(|h| (h.aggregate_id.clone(), h.first_version))
            .collect();
        self.metrics.parked_aggregates.set(parked.len() as i64);
        *self.set() = parked;
        Ok(headers)
    }

    fn forget(&self, aggregate_id: &str) {
        self.set().remove(aggregate_id);
    }
}

/// How often [`run_requests`] looks at the table.
pub const REQUEST_POLL: Duration = Duration::from_secs(1);

/// Carries out the retries and skips operators ask for, until shutdown:
/// every [`REQUEST_POLL`], the headers are read (which also refreshes the
/// set of parked aggregates), and each aggregate asked for is retried or
/// skipped. A failure that may pass leaves the request for the next round;
/// one that will not parks the aggregate again, with the new error.
pub async fn run_requests(
    parking: Arc<Parking>,
    writer: Arc<ReadModelWriter>,
    publisher: Arc<dyn Publisher>,
    shutdown: Shutdown,
) {
    let mut report = ParkedReport::default();
    loop {
        match parking.refresh().await {
            Ok(headers) => {
                report.parked(headers.len());
                for header in headers {
                    let outcome = match header.status {
                        Status::Parked => continue,
                        Status::Retry => {
                            retry(&parking, &writer, &*publisher, &header, &shutdown).await
                        }
                        Status::Skip => skip(&parking, &writer, &header).await,
                    };
                    if let Err(err) = outcome {
                        if err.is_transient() {
                            tracing::warn!(aggregate_id = %header.aggregate_id, error = %err, "a parked aggregate's request failed; trying again");
                        } else if let Err(again) = parking
                            .store
                            .failed_again(&header.aggregate_id, &err.to_string())
                            .await
                        {
                            tracing::warn!(aggregate_id = %header.aggregate_id, error = %again, "could not record a failed request");
                        } else {
                            tracing::error!(aggregate_id = %header.aggregate_id, error = %err, request = header.status.as_str(), "aggregate parked again");
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading the parked aggregates failed"),
        }
        if !shutdown.sleep(REQUEST_POLL).await {
            return;
        }
    }
}

/// How often, while any aggregate is parked, the count is logged: the line
/// a CloudWatch Logs metric filter turns into the parked-aggregates alarm.
pub const PARKED_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Logs the number of parked aggregates every [`PARKED_REPORT_EVERY`] while
/// it is above 0, and once when it drops to 0.
#[derive(Debug, Default)]
struct ParkedReport {
    last: Option<(tokio::time::Instant, usize)>,
}

impl ParkedReport {
    fn parked(&mut self, parked: usize) {
        let now = tokio::time::Instant::now();
        let due = match self.last {
            None => parked > 0,
            Some((_, before)) if (before > 0) != (parked > 0) => true,
            Some((at, _)) => parked > 0 && now - at >= PARKED_REPORT_EVERY,
        };
        if due {
            if parked > 0 {
                tracing::warn!(parked, "aggregates are parked");
            } else {
                tracing::info!(parked, "aggregates are parked");
            }
            self.last = Some((now, parked));
        }
    }
}

/// Applies a parked aggregate's events again, from the event store, in
/// order, publishes them, and releases the aggregate.
async fn retry(
    parking: &Parking,
    writer: &ReadModelWriter,
    publisher: &dyn Publisher,
    header: &Header,
    shutdown: &Shutdown,
) -> Result<(), StoreError> {
    let id = &header.aggregate_id;
    let parked = parking.store.events(id).await?;
    let first = parked.first().map_or(1, |e| e.version);
    let events = writer.events(id, first, header.last_version).await?;
    let versions: Vec<Version> = events.iter().map(|e| e.version).collect();
    if versions != (first..=header.last_version).collect::<Vec<_>>() {
        return Err(StoreError::Failed(format!(
            "aggregate {id}: the event store lacks some of versions {first} to {}",
            header.last_version
        )));
    }
    for event in &events {
        writer.project(event).await?;
    }
    publisher
        .publish(&events, shutdown)
        .await
        .map_err(|e| StoreError::Unavailable(format!("publishing retried events: {e}")))?;
    if parking.store.release(id, header.last_version).await? {
        parking.forget(id);
        tracing::info!(aggregate_id = %id, events = events.len(), "parked aggregate retried and released");
    }
    Ok(())
}

/// Drops a parked aggregate's events: its row, if it has one, moves past
/// their versions unchanged; nothing is published.
async fn skip(
    parking: &Parking,
    writer: &ReadModelWriter,
    header: &Header,
) -> Result<(), StoreError> {
    let id = &header.aggregate_id;
    let parked = parking.store.events(id).await?;
    let model = parked.iter().find_map(model_of);
    if let Some(model) = model {
        writer.skip_to(model, id, header.last_version).await?;
    }
    if parking.store.release(id, header.last_version).await? {
        parking.forget(id);
        tracing::warn!(aggregate_id = %id, events = parked.len(), last_version = header.last_version, "parked events skipped; aggregate released");
    } else {
        // Events queued behind meanwhile were not asked to be skipped.
        parking.store.retry_rest(id).await?;
        tracing::warn!(aggregate_id = %id, last_version = header.last_version, "parked events skipped; the events queued since are retried");
    }
    Ok(())
}

/// The parked-events table on DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoParking {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoParking {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    fn key(aggregate_id: &str, version: Version) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                attr::AGGREGATE_ID.to_owned(),
                AttributeValue::S(aggregate_id.to_owned()),
            ),
            (
                attr::VERSION.to_owned(),
                AttributeValue::N(version.to_string()),
            ),
        ])
    }
}

/// Whether a call failed its condition.
fn conditional_failed<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(aws_sdk_dynamodb::error::ProvideErrorMetadata::code)
        == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl ParkingStore for DynamoParking {
    async fn park(&self, event: &ParkedEvent, behind: bool) -> Result<bool, StoreError> {
        let now = AttributeValue::S(format_time(Utc::now()));
        let version = AttributeValue::N(event.version.to_string());
        // The header first: an event item without a header would be parked
        // with nobody to tell.
        let header = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&event.aggregate_id, attr::HEADER)))
            .update_expression(
                "SET #last = :v, #first = if_not_exists(#first, :v), \
                 #status = if_not_exists(#status, :parked), #at = if_not_exists(#at, :now), \
                 #updated = :now, #error = if_not_exists(#error, :error)",
            )
            .condition_expression(if behind {
                "attribute_exists(#last) AND #last < :v"
            } else {
                "attribute_not_exists(#last) OR #last < :v"
            })
            .expression_attribute_names("#last", attr::LAST_VERSION)
            .expression_attribute_names("#first", attr::FIRST_VERSION)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#at", attr::PARKED_AT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#error", attr::ERROR)
            .expression_attribute_values(":v", version.clone())
            .expression_attribute_values(
                ":parked",
                AttributeValue::S(Status::Parked.as_str().into()),
            )
            .expression_attribute_values(":now", now.clone())
            .expression_attribute_values(":error", AttributeValue::S(event.error.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match header {
            Ok(_) => {}
            Err(err) if conditional_failed(&err) => {
                // Either the header is gone (released), or this version is
                // parked already (a batch handled again).
                let exists = err
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item.as_ref(),
                        _ => None,
                    })
                    .is_some_and(|item| !item.is_empty());
                if behind && !exists {
                    return Ok(false);
                }
            }
            Err(err) => return Err(sdk_error("parking an event", err)),
        }
        let mut item = Self::key(&event.aggregate_id, event.version);
        item.insert(attr::ERROR.into(), AttributeValue::S(event.error.clone()));
        item.insert(attr::PARKED_AT.into(), now);
        for (name, value) in [
            (attr::EVENT_ID, &event.event_id),
            (attr::EVENT_TYPE, &event.event_type),
            (attr::AGGREGATE_TYPE, &event.aggregate_type),
        ] {
            if let Some(value) = value {
                item.insert(name.into(), AttributeValue::S(value.clone()));
            }
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| sdk_error("parking an event", e))?;
        Ok(true)
    }

    async fn headers(&self) -> Result<Vec<Header>, StoreError> {
        let mut headers = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("#v = :header")
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(":header", AttributeValue::N(attr::HEADER.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| sdk_error("reading the parked aggregates", e))?;
            for item in page.items() {
                let bad = |e: dynabridge_aws::item::AttributeError| StoreError::Failed(e.0);
                let status = get_s(item, attr::STATUS).map_err(bad)?;
                headers.push(Header {
                    aggregate_id: get_s(item, attr::AGGREGATE_ID).map_err(bad)?.to_owned(),
                    status: Status::parse(status).ok_or_else(|| {
                        StoreError::Failed(format!("unknown parked status {status:?}"))
                    })?,
                    first_version: get_n(item, attr::FIRST_VERSION).map_err(bad)?,
                    last_version: get_n(item, attr::LAST_VERSION).map_err(bad)?,
                });
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(headers),
            }
        }
    }

    async fn events(&self, aggregate_id: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#id = :id AND #v > :header")
                .expression_attribute_names("#id", attr::AGGREGATE_ID)
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(":id", AttributeValue::S(aggregate_id.to_owned()))
                .expression_attribute_values(":header", AttributeValue::N(attr::HEADER.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| sdk_error("reading parked events", e))?;
            for item in page.items() {
                let bad = |e: dynabridge_aws::item::AttributeError| StoreError::Failed(e.0);
                let optional = |name: &str| get_s(item, name).ok().map(str::to_owned);
                events.push(ParkedEvent {
                    aggregate_id: aggregate_id.to_owned(),
                    version: get_n(item, attr::VERSION).map_err(bad)?,
                    event_id: optional(attr::EVENT_ID),
                    event_type: optional(attr::EVENT_TYPE),
                    aggregate_type: optional(attr::AGGREGATE_TYPE),
                    error: optional(attr::ERROR).unwrap_or_default(),
                });
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(events),
            }
        }
    }

    async fn failed_again(&self, aggregate_id: &str, error: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(aggregate_id, attr::HEADER)))
            .update_expression("SET #status = :parked, #error = :error, #updated = :now")
            .condition_expression("attribute_exists(#status)")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#error", attr::ERROR)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(
                ":parked",
                AttributeValue::S(Status::Parked.as_str().into()),
            )
            .expression_attribute_values(":error", AttributeValue::S(error.to_owned()))
            .expression_attribute_values(":now", AttributeValue::S(format_time(Utc::now())))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if conditional_failed(&err) => Ok(()),
            Err(err) => Err(sdk_error("parking an aggregate again", err)),
        }
    }

    async fn retry_rest(&self, aggregate_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(aggregate_id, attr::HEADER)))
            .update_expression("SET #status = :retry, #updated = :now")
            .condition_expression("attribute_exists(#status)")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":retry", AttributeValue::S(Status::Retry.as_str().into()))
            .expression_attribute_values(":now", AttributeValue::S(format_time(Utc::now())))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|_| ())
            .or_else(|err| {
                if conditional_failed(&err) {
                    Ok(())
                } else {
                    Err(sdk_error("asking for a retry", err))
                }
            })
    }

    async fn release(&self, aggregate_id: &str, last: Version) -> Result<bool, StoreError> {
        for event in self.events(aggregate_id).await? {
            if event.version > last {
                continue;
            }
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(aggregate_id, event.version)))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| sdk_error("removing a parked event", e))?;
        }
        let header = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(aggregate_id, attr::HEADER)))
            .condition_expression("#last = :last")
            .expression_attribute_names("#last", attr::LAST_VERSION)
            .expression_attribute_values(":last", AttributeValue::N(last.to_string()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match header {
            Ok(_) => Ok(true),
            // An event was parked behind meanwhile: released next round.
            Err(err) if conditional_failed(&err) => Ok(false),
            Err(err) => Err(sdk_error("releasing a parked aggregate", err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::BusPublisher;
    use crate::testing::{FakeBus, FakeRows, MemoryParking, fast_timing, user_events};
    use crate::writer::{CACHE_CAPACITY, Row};
    use dynabridge_domain::StoredEvent;

    struct World {
        rows: FakeRows,
        bus: FakeBus,
        table: MemoryParking,
        parking: Arc<Parking>,
        writer: Arc<ReadModelWriter>,
        publisher: Arc<dyn Publisher>,
    }

    fn world() -> World {
        let metrics = ProjectorMetrics::new().unwrap();
        let (rows, bus, table) = (
            FakeRows::default(),
            FakeBus::default(),
            MemoryParking::default(),
        );
        World {
            parking: Arc::new(Parking::new(Arc::new(table.clone()), metrics.clone())),
            writer: Arc::new(ReadModelWriter::new(
                Box::new(rows.clone()),
                CACHE_CAPACITY,
                metrics.clone(),
            )),
            publisher: Arc::new(BusPublisher::new(
                Arc::new(bus.clone()),
                "src".into(),
                "bus".into(),
                tokio::sync::watch::channel(true).1,
                fast_timing(),
                metrics,
            )),
            rows,
            bus,
            table,
        }
    }

    /// An aggregate of three events, its first applied, its second parked
    /// and its third queued behind.
    async fn parked_at_two(w: &World) -> Vec<StoredEvent> {
        let events = user_events(3);
        w.rows.add_events(&events);
        w.writer.project(&events[0]).await.unwrap();
        w.parking
            .park(&ParkedEvent::of(&events[1], "it failed"))
            .await
            .unwrap();
        assert!(
            w.parking
                .queue_behind(&ParkedEvent::of(&events[2], "queued"))
                .await
                .unwrap()
        );
        events
    }

    async fn run_until_released(w: &World, id: &str) {
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(run_requests(
            w.parking.clone(),
            w.writer.clone(),
            w.publisher.clone(),
            shutdown,
        ));
        for _ in 0..10 {
            tokio::time::sleep(REQUEST_POLL).await;
            if w.table.header(id).is_none() {
                break;
            }
        }
        trigger.trigger();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_applies_and_publishes_the_parked_events_in_order_and_releases() {
        let w = world();
        let events = parked_at_two(&w).await;
        let id = events[0].event.aggregate_id().to_string();
        assert!(w.parking.is_parked(&id, 2) && !w.parking.is_parked(&id, 1));
        // Untouched until an operator asks.
        run_until_released(&w, &id).await;
        assert_eq!(w.table.parked_versions(&id), vec![2, 3]);
        assert!(w.bus.accepted().is_empty());

        w.table.request(&id, Status::Retry);
        run_until_released(&w, &id).await;
        assert_eq!(w.table.header(&id), None, "released");
        assert!(!w.parking.is_parked(&id, 3));
        assert_eq!(w.rows.written(&events[0]), vec![1, 2, 3]);
        let published: Vec<_> = w.bus.accepted().iter().map(|e| e.event_id).collect();
        assert_eq!(published, vec![events[1].event_id, events[2].event_id]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_skip_moves_the_row_past_the_parked_events_unchanged_and_publishes_nothing() {
        let w = world();
        let events = parked_at_two(&w).await;
        let id = events[0].event.aggregate_id().to_string();
        w.table.request(&id, Status::Skip);
        run_until_released(&w, &id).await;
        assert_eq!(w.table.header(&id), None, "released");
        let Some(Row::User(row)) = w.rows.row(&events[0]) else {
            panic!("the row is there");
        };
        assert_eq!((row.version, row.name.as_str()), (3, "User"));
        assert!(w.bus.accepted().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_fails_again_parks_the_aggregate_again() {
        let w = world();
        let events = user_events(3);
        // The event store lacks version 2: the retry cannot apply it.
        w.rows.add_events(&[events[0].clone(), events[2].clone()]);
        w.writer.project(&events[0]).await.unwrap();
        w.parking
            .park(&ParkedEvent::of(&events[1], "it failed"))
            .await
            .unwrap();
        let id = events[0].event.aggregate_id().to_string();
        w.table.request(&id, Status::Retry);
        run_until_released(&w, &id).await;
        assert_eq!(w.table.header(&id).map(|h| h.status), Some(Status::Parked));
        assert_eq!(w.rows.written(&events[0]), vec![1]);
    }
}
