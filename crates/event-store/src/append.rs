//! Appending events: one `TransactWriteItems` holding the event items, the
//! idempotency record, any email claim or release, and any existence check of
//! another aggregate. All of it lands, or none of it does. Under load,
//! concurrent appends share a transaction (see [`super::group_commit`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnConsumedCapacity, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use prometheus::Registry;

use super::codec::event_to_item;
use super::group_commit::{GroupCommit, GroupCommitMetrics, MAX_ITEMS};
use crate::error::StoreError;
use dynabridge::schema::{Tables, event_store, idempotency};
use dynabridge_domain::{Money, Requirement, StoredEvent, Version};

/// What a successful command returns; stored with its request so that a
/// retry returns the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    pub aggregate_id: String,
    pub version: Version,
    pub event_ids: Vec<String>,
    pub correlation_id: String,
    /// An order's computed total, for `CreateOrder`.
    pub total: Option<Money>,
}

/// The idempotency record of one request.
#[derive(Clone, Debug)]
pub struct IdempotencyRecord {
    pub request_id: String,
    /// Hash of the request without its idempotency key and correlation id.
    pub request_hash: String,
    pub outcome: CommandOutcome,
}

/// Where an append's request is recorded, so that a retry of it is
/// answered with the first outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordIn {
    /// An item of the idempotency table, kept [`EventStore::IDEMPOTENCY_TTL`].
    IdempotencyTable,
    /// The append's first event, which carries the request hash: a create,
    /// whose aggregate id derives from its request id
    /// (`UserId::for_request`). A retry names the same aggregate, fails the
    /// event's condition and is answered from the events
    /// ([`EventStore::creation`]), for as long as they are kept. One item
    /// fewer per create.
    FirstEvent,
}

/// One append.
#[derive(Clone, Debug)]
pub struct Append {
    pub events: Vec<StoredEvent>,
    pub idempotency: IdempotencyRecord,
    /// Where `idempotency` is kept.
    pub record: RecordIn,
    /// What else must hold for the events to land, as the aggregate
    /// declared it: each becomes a condition of the same transaction.
    pub requirements: Vec<Requirement>,
    pub now: DateTime<Utc>,
}

/// The request that created an aggregate, as its first events record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creation {
    pub request_id: String,
    /// `None` for an aggregate created before creates recorded their hash.
    pub request_hash: Option<String>,
    /// The events the create appended, from version 1.
    pub events: Vec<StoredEvent>,
}

impl Creation {
    /// The most events a create is read back with.
    pub const MAX_EVENTS: Version = 16;
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended an event with one of these versions first.
    #[error("concurrent append")]
    Conflict,
    /// A request with this idempotency key was already recorded.
    #[error("duplicate request")]
    DuplicateRequest,
    /// The append's requirement at this index does not hold: a unique
    /// value another aggregate holds, or an aggregate that does not exist.
    #[error("requirement {0} of the append does not hold")]
    Unmet(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What each item of the transaction stands for, to read cancellation
/// reasons by position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Part {
    Event,
    Idempotency,
    /// The append's requirement at `index`.
    Requirement {
        index: usize,
        kind: RequirementKind,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum RequirementKind {
    Claim,
    Release,
    Exists,
    Unchanged,
}

/// The event store and the tables the command service owns. Clones share
/// one group commit.
#[derive(Clone)]
pub struct EventStore {
    client: Client,
    tables: Tables,
    event_table: String,
    idempotency_ttl: Duration,
    pub(super) group: Arc<GroupCommit>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("event_table", &self.event_table)
            .field("max_in_flight", &self.group.max_in_flight())
            .finish_non_exhaustive()
    }
}

impl EventStore {
    /// How long a request's idempotency record is kept: retries with the same
    /// key within this window return the original response.
    pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Transactions in flight at once by default: appends beyond them wait
    /// and share the next transaction. See [`super::group_commit`].
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

    /// The store with [`Self::DEFAULT_MAX_IN_FLIGHT`] and unregistered
    /// metrics.
    pub fn new(client: Client, tables: Tables) -> Self {
        let metrics = GroupCommitMetrics::new().expect("the metric names are valid");
        Self {
            event_table: tables.event_store(),
            group: Arc::new(GroupCommit::new(
                client.clone(),
                Self::DEFAULT_MAX_IN_FLIGHT,
                metrics,
            )),
            client,
            tables,
            idempotency_ttl: Self::IDEMPOTENCY_TTL,
        }
    }

    /// At most `max_in_flight` append transactions outstanding (at least
    /// one), counted in `metrics`.
    pub fn with_group_commit(mut self, max_in_flight: usize, metrics: GroupCommitMetrics) -> Self {
        self.group = Arc::new(GroupCommit::new(
            self.client.clone(),
            max_in_flight,
            metrics,
        ));
        self
    }

    /// How the group commit is doing.
    pub fn group_commit_metrics(&self) -> &GroupCommitMetrics {
        self.group.metrics()
    }

    /// Registers the group commit's metrics with `registry`.
    pub fn register_metrics(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.group.metrics().register(registry)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Every event of an aggregate, in order, read consistently.
    pub async fn load(&self, aggregate_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        super::read_events(&self.client, &self.event_table, aggregate_id, 1, None).await
    }

    /// Appends atomically: the events, the idempotency record and the rest
    /// land together or not at all. Answers once the transaction carrying
    /// them has.
    pub async fn append(&self, append: &Append) -> Result<(), AppendError> {
        let (items, parts, keys) = self.transaction(append)?;
        self.group.append(items, parts, keys).await
    }

    /// Appends several appends in one transaction: all of them land, or none
    /// does (decisions made one after another on the same aggregates, each
    /// on the state the previous ones left). At most
    /// [`MAX_ITEMS`] items in all. An error is the
    /// whole transaction's: the caller takes each append again alone to
    /// learn its own.
    pub async fn append_together(&self, appends: &[Append]) -> Result<(), AppendError> {
        let (mut items, mut parts, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for append in appends {
            let (i, p, k) = self.transaction(append)?;
            items.extend(i);
            parts.extend(p);
            keys.extend(k);
        }
        if items.len() > MAX_ITEMS {
            return Err(AppendError::Store(StoreError::Inconsistent(format!(
                "{} items in one transaction; at most {MAX_ITEMS}",
                items.len()
            ))));
        }
        self.group.append_alone(items, parts, keys).await
    }

    /// The items of `append`'s transaction: its events, its record, one per
    /// requirement. For sizing appends sent together.
    pub fn item_count(append: &Append) -> usize {
        let record =
            usize::from(append.record == RecordIn::IdempotencyTable || append.events.is_empty());
        append.events.len() + record + append.requirements.len()
    }

    /// The items of the append's `TransactWriteItems`, in order: the events,
    /// the idempotency record, then any email claim, email release and user
    /// check. What [`EventStore::append`] sends; public so that the
    /// benchmarks can send parts of it.
    pub fn transact_items(&self, append: &Append) -> Result<Vec<TransactWriteItem>, StoreError> {
        self.transaction(append).map(|(items, _, _)| items)
    }

    /// The items, what each stands for, and each one's table and key.
    #[allow(clippy::type_complexity)]
    fn transaction(
        &self,
        append: &Append,
    ) -> Result<(Vec<TransactWriteItem>, Vec<Part>, Vec<String>), StoreError> {
        let mut parts = Vec::new();
        let mut items = Vec::new();
        let mut keys = Vec::new();
        for (n, event) in append.events.iter().enumerate() {
            keys.push(item_key(
                &self.event_table,
                &[
                    &event.event.aggregate_id().to_string(),
                    &event.version.to_string(),
                ],
            ));
            let mut item = event_to_item(event);
            if n == 0 && append.record == RecordIn::FirstEvent {
                item.insert(
                    event_store::REQUEST_HASH.into(),
                    AttributeValue::S(append.idempotency.request_hash.clone()),
                );
            }
            let put = Put::builder()
                .table_name(&self.event_table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", event_store::AGGREGATE_ID)
                .build()
                .map_err(internal)?;
            items.push(TransactWriteItem::builder().put(put).build());
            parts.push(Part::Event);
        }

        if append.record == RecordIn::IdempotencyTable || append.events.is_empty() {
            let put = Put::builder()
                .table_name(self.tables.idempotency())
                .set_item(Some(self.idempotency_item(&append.idempotency, append.now)))
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", idempotency::REQUEST_ID)
                .build()
                .map_err(internal)?;
            items.push(TransactWriteItem::builder().put(put).build());
            parts.push(Part::Idempotency);
            keys.push(item_key(
                &self.tables.idempotency(),
                &[&append.idempotency.request_id],
            ));
        }

        for (index, requirement) in append.requirements.iter().enumerate() {
            let (item, kind, key) = self.requirement_item(requirement)?;
            items.push(item);
            parts.push(Part::Requirement { index, kind });
            keys.push(key);
        }
        Ok((items, parts, keys))
    }

    /// The transaction item that makes `requirement` a condition, what it
    /// stands for, and its table and key.
    fn requirement_item(
        &self,
        requirement: &Requirement,
    ) -> Result<(TransactWriteItem, RequirementKind, String), StoreError> {
        Ok(match requirement {
            Requirement::Claim {
                scope,
                value,
                owner,
            } => {
                let unique = self.tables.unique_values(*scope);
                let put = Put::builder()
                    .table_name(&unique.table)
                    .item(unique.value, AttributeValue::S(value.clone()))
                    .item(unique.owner, AttributeValue::S(owner.to_string()))
                    .condition_expression("attribute_not_exists(#value)")
                    .expression_attribute_names("#value", unique.value)
                    .build()
                    .map_err(internal)?;
                (
                    TransactWriteItem::builder().put(put).build(),
                    RequirementKind::Claim,
                    item_key(&unique.table, &[value]),
                )
            }
            Requirement::Release {
                scope,
                value,
                owner,
            } => {
                let unique = self.tables.unique_values(*scope);
                let delete = Delete::builder()
                    .table_name(&unique.table)
                    .key(unique.value, AttributeValue::S(value.clone()))
                    .condition_expression("#owner = :owner")
                    .expression_attribute_names("#owner", unique.owner)
                    .expression_attribute_values(":owner", AttributeValue::S(owner.to_string()))
                    .build()
                    .map_err(internal)?;
                (
                    TransactWriteItem::builder().delete(delete).build(),
                    RequirementKind::Release,
                    item_key(&unique.table, &[value]),
                )
            }
            Requirement::Exists { aggregate_type, id } => {
                // An aggregate's first event exists if and only if it does.
                let check = ConditionCheck::builder()
                    .table_name(&self.event_table)
                    .key(event_store::AGGREGATE_ID, AttributeValue::S(id.to_string()))
                    .key(event_store::VERSION, AttributeValue::N("1".into()))
                    .condition_expression("attribute_exists(#id) AND #type = :type")
                    .expression_attribute_names("#id", event_store::AGGREGATE_ID)
                    .expression_attribute_names("#type", event_store::AGGREGATE_TYPE)
                    .expression_attribute_values(
                        ":type",
                        AttributeValue::S(aggregate_type.as_str().into()),
                    )
                    .build()
                    .map_err(internal)?;
                (
                    TransactWriteItem::builder().condition_check(check).build(),
                    RequirementKind::Exists,
                    item_key(&self.event_table, &[&id.to_string(), "1"]),
                )
            }
            Requirement::Unchanged {
                aggregate_type: _,
                id,
                version,
            } => {
                // Unchanged since `version` if and only if the next event
                // does not exist. Versions are per aggregate id, so the
                // type needs no check: another type under this id is
                // another aggregate's history, and changes it all the same.
                let next = (version + 1).to_string();
                let check = ConditionCheck::builder()
                    .table_name(&self.event_table)
                    .key(event_store::AGGREGATE_ID, AttributeValue::S(id.to_string()))
                    .key(event_store::VERSION, AttributeValue::N(next.clone()))
                    .condition_expression("attribute_not_exists(#id)")
                    .expression_attribute_names("#id", event_store::AGGREGATE_ID)
                    .build()
                    .map_err(internal)?;
                (
                    TransactWriteItem::builder().condition_check(check).build(),
                    RequirementKind::Unchanged,
                    item_key(&self.event_table, &[&id.to_string(), &next]),
                )
            }
        })
    }

    fn idempotency_item(
        &self,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> HashMap<String, AttributeValue> {
        let outcome = &record.outcome;
        let expires =
            now.timestamp() + i64::try_from(self.idempotency_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let mut item = HashMap::from([
            (
                idempotency::REQUEST_ID.into(),
                AttributeValue::S(record.request_id.clone()),
            ),
            (
                idempotency::REQUEST_HASH.into(),
                AttributeValue::S(record.request_hash.clone()),
            ),
            (
                idempotency::AGGREGATE_ID.into(),
                AttributeValue::S(outcome.aggregate_id.clone()),
            ),
            (
                idempotency::VERSION.into(),
                AttributeValue::N(outcome.version.to_string()),
            ),
            (
                idempotency::CORRELATION_ID.into(),
                AttributeValue::S(outcome.correlation_id.clone()),
            ),
            (
                idempotency::CREATED_AT.into(),
                AttributeValue::S(dynabridge::convert::format_time(now)),
            ),
            (
                idempotency::EXPIRES_AT.into(),
                AttributeValue::N(expires.to_string()),
            ),
        ]);
        if !outcome.event_ids.is_empty() {
            item.insert(
                idempotency::EVENT_IDS.into(),
                AttributeValue::L(
                    outcome
                        .event_ids
                        .iter()
                        .cloned()
                        .map(AttributeValue::S)
                        .collect(),
                ),
            );
        }
        if let Some(total) = outcome.total {
            item.insert(
                idempotency::RESULT.into(),
                AttributeValue::M(HashMap::from([
                    (
                        "TotalCurrency".into(),
                        AttributeValue::S(total.currency.as_str().to_owned()),
                    ),
                    (
                        "TotalMinor".into(),
                        AttributeValue::N(total.amount_minor.to_string()),
                    ),
                ])),
            );
        }
        item
    }

    /// The request that created aggregate `aggregate_id` (recorded in its
    /// first event, [`RecordIn::FirstEvent`]), read consistently: `None` if
    /// the aggregate has no event.
    pub async fn creation(&self, aggregate_id: &str) -> Result<Option<Creation>, StoreError> {
        // One Query, the call the role already has for loading aggregates.
        let page = self
            .client
            .query()
            .table_name(&self.event_table)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key_condition_expression("#id = :id AND #v BETWEEN :first AND :last")
            .expression_attribute_names("#id", event_store::AGGREGATE_ID)
            .expression_attribute_names("#v", event_store::VERSION)
            .expression_attribute_values(":id", AttributeValue::S(aggregate_id.to_owned()))
            .expression_attribute_values(":first", AttributeValue::N("1".into()))
            .expression_attribute_values(
                ":last",
                AttributeValue::N(Creation::MAX_EVENTS.to_string()),
            )
            .send()
            .await
            .map_err(|e| StoreError::call("reading a creation", e))?;
        let items = page.items();
        let Some(first) = items.first() else {
            return Ok(None);
        };
        let request_hash = first
            .get(event_store::REQUEST_HASH)
            .and_then(|v| v.as_s().ok())
            .cloned();
        let mut events = Vec::new();
        for item in items {
            let event = super::codec::event_from_item(item)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if events
                .first()
                .is_some_and(|first: &StoredEvent| first.request_id != event.request_id)
            {
                break;
            }
            events.push(event);
        }
        Ok(Some(Creation {
            request_id: events[0].request_id.clone(),
            request_hash,
            events,
        }))
    }

    /// The recorded request with this idempotency key: its hash and outcome.
    pub async fn recorded_request(
        &self,
        request_id: &str,
    ) -> Result<Option<(String, CommandOutcome)>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.tables.idempotency())
            .key(
                idempotency::REQUEST_ID,
                AttributeValue::S(request_id.to_owned()),
            )
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| StoreError::call("reading idempotency record", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let s = |name: &str| match item.get(name) {
            Some(AttributeValue::S(s)) => Ok(s.clone()),
            _ => Err(StoreError::Corrupt(format!(
                "idempotency record lacks {name}"
            ))),
        };
        let version = match item.get(idempotency::VERSION) {
            Some(AttributeValue::N(n)) => n
                .parse()
                .map_err(|_| StoreError::Corrupt("bad version".into()))?,
            _ => {
                return Err(StoreError::Corrupt(
                    "idempotency record lacks a version".into(),
                ));
            }
        };
        let event_ids = match item.get(idempotency::EVENT_IDS) {
            Some(AttributeValue::L(ids)) => {
                ids.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
            }
            _ => Vec::new(),
        };
        let total = match item.get(idempotency::RESULT) {
            Some(AttributeValue::M(result)) => {
                match (result.get("TotalCurrency"), result.get("TotalMinor")) {
                    (Some(AttributeValue::S(c)), Some(AttributeValue::N(n))) => Some(
                        Money::parse(c, n.parse().unwrap_or(-1))
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ),
                    _ => None,
                }
            }
            _ => None,
        };
        Ok(Some((
            s(idempotency::REQUEST_HASH)?,
            CommandOutcome {
                aggregate_id: s(idempotency::AGGREGATE_ID)?,
                version,
                event_ids,
                correlation_id: s(idempotency::CORRELATION_ID)?,
                total,
            },
        )))
    }
}

/// A request the SDK refused to build: a bug of ours.
fn internal(err: impl std::fmt::Display) -> StoreError {
    StoreError::Inconsistent(err.to_string())
}

/// An item's table and key, as one string: `table`, then each key value.
fn item_key(table: &str, key: &[&str]) -> String {
    let mut out = table.to_owned();
    for part in key {
        out.push('\0');
        out.push_str(part);
    }
    out
}

/// The code of each item's cancellation reason, in item order, if the
/// transaction was cancelled; empty otherwise.
pub(super) fn cancellation_reasons<R>(
    err: &SdkError<TransactWriteItemsError, R>,
) -> Vec<Option<String>> {
    match err {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Why the append of a failed transaction that sent only its own items did
/// not happen.
pub(super) fn classify<R: std::fmt::Debug + Send + Sync + 'static>(
    parts: &[Part],
    err: SdkError<TransactWriteItemsError, R>,
) -> AppendError {
    let reasons = cancellation_reasons(&err);
    classify_reasons(parts, &reasons)
        .unwrap_or_else(|| AppendError::Store(StoreError::call("appending events", err)))
}

/// Why an append did not happen, from its own items' cancellation reasons
/// (`reasons[i]` is `parts[i]`'s); `None` if they do not say.
pub(super) fn classify_reasons(parts: &[Part], reasons: &[Option<String>]) -> Option<AppendError> {
    let failed = || {
        parts
            .iter()
            .zip(reasons)
            .filter(|(_, code)| code.as_deref() == Some("ConditionalCheckFailed"))
            .map(|(part, _)| *part)
    };
    let requirement = |wanted: RequirementKind| {
        failed().find_map(|part| match part {
            Part::Requirement { index, kind } if kind == wanted => Some(index),
            _ => None,
        })
    };
    // Order matters: a retried request fails every condition it met the first
    // time, and must be recognised as a retry.
    if failed().any(|part| part == Part::Idempotency) {
        Some(AppendError::DuplicateRequest)
    } else if let Some(index) = requirement(RequirementKind::Exists) {
        Some(AppendError::Unmet(index))
    } else if let Some(index) = requirement(RequirementKind::Unchanged) {
        Some(AppendError::Unmet(index))
    } else if failed().any(|part| part == Part::Event) {
        Some(AppendError::Conflict)
    } else if let Some(index) = requirement(RequirementKind::Claim) {
        Some(AppendError::Unmet(index))
    } else if requirement(RequirementKind::Release).is_some() {
        Some(AppendError::Store(StoreError::Inconsistent(
            "a released unique value is not held by its owner: the store is out of step with the aggregate".into(),
        )))
    } else if reasons
        .iter()
        .any(|code| code.as_deref() == Some("TransactionConflict"))
    {
        Some(AppendError::Conflict)
    } else {
        None
    }
}
