//! Replays asked for through the admin service (`ReplayEvents`): the events
//! of a window, of some types or all, published again through this
//! projector's publisher, each entry marked with the replay's id (the
//! envelope's `replay_id`) and otherwise the original, its event id
//! included. Nothing is applied to a read model.
//!
//! The admin service writes a `PENDING` item in the replays table. Every
//! second a projector looks for one, claims it (a conditional update to
//! `RUNNING` under its own name), reads the window through the event-type
//! index, each type's 16 buckets merged by time and the types merged in
//! turn, and publishes in batches, recording after each batch how many it
//! published and the time of the last one. A replay whose owner stopped
//! saying so for [`STALE`] is taken over and goes on from that time: the
//! events of that very time may go out twice (at least once, as every
//! delivery on the bus; the event id tells).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, Utc};
use dynabridge::convert::{format_time, parse_time};
use dynabridge::schema::replays as attr;
use dynabridge_aws::item::{Item, get_n, get_s};
use dynabridge_domain::{Event, StoredEvent};
use dynabridge_event_store::reporting::{BucketCursor, TypeRange, events_by_type};

use crate::control::Shutdown;
use crate::error::{StoreError, sdk_error};
use crate::publish::{PublishError, Publisher};

/// How often the replays table is looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// A running replay whose owner has not updated it for this long is taken
/// over.
pub const STALE: Duration = Duration::from_secs(30);
/// Events published at once, and read per bucket page.
const BATCH: usize = 200;

/// One replay, as its item says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub published: i64,
    /// The time of the last event published.
    pub cursor: Option<DateTime<Utc>>,
}

impl Replay {
    fn from_item(item: &Item) -> Result<Self, String> {
        let time = |name| {
            get_s(item, name)
                .ok()
                .and_then(parse_time)
                .ok_or_else(|| format!("no {name}"))
        };
        Ok(Self {
            id: get_s(item, attr::REPLAY_ID).map_err(|e| e.0)?.to_owned(),
            start: time(attr::START_TIME)?,
            end: time(attr::END_TIME)?,
            event_types: match item.get(attr::EVENT_TYPES) {
                Some(AttributeValue::Ss(types)) => types.clone(),
                _ => Vec::new(),
            },
            published: get_n(item, attr::PUBLISHED).unwrap_or_default(),
            cursor: time(attr::CURSOR).ok(),
        })
    }

    /// The types to read, in a fixed order.
    fn types(&self) -> Vec<String> {
        if self.event_types.is_empty() {
            Event::TYPES.iter().map(|t| (*t).to_owned()).collect()
        } else {
            let mut types = self.event_types.clone();
            types.sort();
            types
        }
    }
}

/// The replays table.
#[derive(Clone, Debug)]
pub struct DynamoReplays {
    client: aws_sdk_dynamodb::Client,
    table: String,
    event_store: String,
    owner: String,
}

impl DynamoReplays {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        event_store: String,
        owner: String,
    ) -> Self {
        Self {
            client,
            table,
            event_store,
            owner,
        }
    }

    /// Claims a replay to run: a pending one, or a running one its owner
    /// left; `None` if there is none.
    async fn claim(&self) -> Result<Option<Replay>, StoreError> {
        let page = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("#state IN (:pending, :running)")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_values(":pending", AttributeValue::S(attr::STATE_PENDING.into()))
            .expression_attribute_values(":running", AttributeValue::S(attr::STATE_RUNNING.into()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| sdk_error("reading the replays", e))?;
        let now = Utc::now();
        let stale = now - chrono::Duration::from_std(STALE).unwrap_or_default();
        for item in page.items() {
            let replay = match Replay::from_item(item) {
                Ok(replay) => replay,
                Err(err) => {
                    tracing::warn!(error = %err, "a replay this build cannot read");
                    continue;
                }
            };
            let claimed = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(attr::REPLAY_ID, AttributeValue::S(replay.id.clone()))
                .update_expression("SET #state = :running, #owner = :me, #at = :now")
                .condition_expression(
                    "#state = :pending OR (#state = :running AND (#owner = :me OR #at < :stale))",
                )
                .expression_attribute_names("#state", attr::STATE)
                .expression_attribute_names("#owner", attr::OWNER)
                .expression_attribute_names("#at", attr::UPDATED_AT)
                .expression_attribute_values(
                    ":pending",
                    AttributeValue::S(attr::STATE_PENDING.into()),
                )
                .expression_attribute_values(
                    ":running",
                    AttributeValue::S(attr::STATE_RUNNING.into()),
                )
                .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
                .expression_attribute_values(":now", AttributeValue::S(format_time(now)))
                .expression_attribute_values(":stale", AttributeValue::S(format_time(stale)))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match claimed {
                Ok(_) => return Ok(Some(replay)),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(err) => return Err(sdk_error("claiming a replay", err)),
            }
        }
        Ok(None)
    }

    /// Records progress, or the end, while this instance owns the replay;
    /// `false` if it no longer does.
    async fn record(
        &self,
        replay: &Replay,
        state: &str,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = format_time(Utc::now());
        let mut set = "#state = :state, #published = :published, #at = :now".to_owned();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::REPLAY_ID, AttributeValue::S(replay.id.clone()))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", attr::OWNER)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#published", attr::PUBLISHED)
            .expression_attribute_names("#at", attr::UPDATED_AT)
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .expression_attribute_values(":state", AttributeValue::S(state.to_owned()))
            .expression_attribute_values(
                ":published",
                AttributeValue::N(replay.published.to_string()),
            )
            .expression_attribute_values(":now", AttributeValue::S(now.clone()));
        if let Some(cursor) = replay.cursor {
            set.push_str(", #cursor = :cursor");
            request = request
                .expression_attribute_names("#cursor", attr::CURSOR)
                .expression_attribute_values(":cursor", AttributeValue::S(format_time(cursor)));
        }
        if state != attr::STATE_RUNNING {
            set.push_str(", #finished = :now");
            request = request.expression_attribute_names("#finished", attr::FINISHED_AT);
        }
        if let Some(error) = error {
            set.push_str(", #error = :error");
            request = request
                .expression_attribute_names("#error", attr::ERROR)
                .expression_attribute_values(":error", AttributeValue::S(error.to_owned()));
        }
        match request
            .update_expression(format!("SET {set}"))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(sdk_error("recording a replay's progress", err)),
        }
    }
}

/// One type's events of the window, a page at a time, oldest first.
struct TypeReader {
    range: TypeRange,
    cursors: Option<Vec<BucketCursor>>,
    buffered: VecDeque<StoredEvent>,
    done: bool,
}

impl TypeReader {
    /// The oldest event not taken yet, reading a page when none is
    /// buffered.
    async fn head(&mut self, replays: &DynamoReplays) -> Result<Option<&StoredEvent>, StoreError> {
        while self.buffered.is_empty() && !self.done {
            let page = events_by_type(
                &replays.client,
                &replays.event_store,
                &self.range,
                self.cursors.take(),
                BATCH,
            )
            .await?;
            self.buffered.extend(page.events);
            match page.next {
                Some(next) => self.cursors = Some(next),
                None => self.done = true,
            }
        }
        Ok(self.buffered.front())
    }
}

/// Runs one claimed replay to its end; `Ok(false)` if another instance
/// took it over meanwhile.
async fn run_one(
    replays: &DynamoReplays,
    publisher: &dyn Publisher,
    mut replay: Replay,
    stop: &Shutdown,
) -> Result<bool, StoreError> {
    let from = replay.cursor.unwrap_or(replay.start).max(replay.start);
    let mut readers: Vec<TypeReader> = replay
        .types()
        .into_iter()
        .map(|event_type| TypeReader {
            range: TypeRange {
                event_type,
                start: Some(from),
                end: Some(replay.end),
            },
            cursors: None,
            buffered: VecDeque::new(),
            done: false,
        })
        .collect();
    loop {
        // A batch of the oldest events across the types.
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            let mut oldest: Option<(usize, DateTime<Utc>)> = None;
            for (i, reader) in readers.iter_mut().enumerate() {
                let head = match reader.head(replays).await {
                    Ok(head) => head,
                    // Trying again later may succeed; the replay stays this
                    // instance's and goes on from its cursor.
                    Err(err) if err.is_transient() => return Err(err),
                    // An event that cannot be read will not be read later
                    // either: the replay ends, saying which.
                    Err(err) => {
                        let why = format!("reading the window: {err}");
                        replays
                            .record(&replay, attr::STATE_FAILED, Some(&why))
                            .await?;
                        return Err(StoreError::Failed(why));
                    }
                };
                if let Some(head) = head
                    && oldest.is_none_or(|(_, at)| head.occurred_at < at)
                {
                    oldest = Some((i, head.occurred_at));
                }
            }
            let Some((i, _)) = oldest else { break };
            if let Some(event) = readers[i].buffered.pop_front() {
                batch.push(event);
            }
        }
        if batch.is_empty() {
            return replays.record(&replay, attr::STATE_COMPLETED, None).await;
        }
        match publisher
            .publish_marked(&batch, Some(&replay.id), stop)
            .await
        {
            Ok(()) => {}
            Err(PublishError::Shutdown) => return Ok(true),
            Err(err) => {
                replays
                    .record(&replay, attr::STATE_FAILED, Some(&err.to_string()))
                    .await?;
                return Err(StoreError::Failed(format!("replay {}: {err}", replay.id)));
            }
        }
        replay.published += i64::try_from(batch.len()).unwrap_or(i64::MAX);
        replay.cursor = batch.last().map(|e| e.occurred_at);
        if !replays.record(&replay, attr::STATE_RUNNING, None).await? {
            tracing::info!(replay_id = %replay.id, "replay taken over by another instance");
            return Ok(false);
        }
    }
}

/// Looks for replays to run every [`POLL`] until `stop`, and runs them one
/// at a time.
pub async fn run_replays(replays: DynamoReplays, publisher: Arc<dyn Publisher>, stop: Shutdown) {
    loop {
        // A replay cut short by shutdown stays this instance's; another
        // takes it over once it is stale.
        if stop.is_triggered() {
            return;
        }
        match replays.claim().await {
            Ok(Some(replay)) => {
                tracing::info!(replay_id = %replay.id, start = %replay.start, end = %replay.end, types = ?replay.event_types, "replaying events");
                match run_one(&replays, publisher.as_ref(), replay.clone(), &stop).await {
                    // Another replay may be waiting: look again at once.
                    Ok(_) => {
                        tracing::info!(replay_id = %replay.id, "replay ended");
                        continue;
                    }
                    // A transient failure leaves it this instance's, taken
                    // up again at the next look; a lasting one ended it.
                    Err(err) => {
                        tracing::warn!(replay_id = %replay.id, error = %err, "replay stopped");
                    }
                }
            }
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "reading the replays failed; trying again"),
        }
        if !stop.sleep(POLL).await {
            return;
        }
    }
}
