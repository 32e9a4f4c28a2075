//! Durable stream positions and shard leases, one item per (stream, shard)
//! in the checkpoint table.
//!
//! A checkpoint names the last record whose events are in the read models
//! *and* published; nothing else ever writes one. The lease on the same item
//! says which projector instance reads the shard (see [`crate::lease`]):
//! every write of a checkpoint is conditional on the writer holding it, so
//! an instance that lost its lease cannot move the position any more.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};
use chrono::{DateTime, Utc};
use dynabridge::convert::{format_time, parse_time};
use dynabridge::schema::checkpoints as attr;

use crate::error::{StoreError, sdk_error};

/// Where a shard's processing stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last sequence number fully processed; `None` if none yet.
    pub sequence_number: Option<String>,
    /// Every record of the (closed) shard is processed.
    pub finished: bool,
    /// The latest commit time (`occurred_at`) of the events processed up
    /// to it: where a catch-up starts if the stream trims what follows
    /// before it is read.
    pub last_event_time: Option<DateTime<Utc>>,
}

/// A window of events the stream trimmed before the projector read them,
/// caught up from the event store: recorded on the shard's item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrimmedWindow {
    /// `None`: from the first event.
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    /// Set once every event of the window is applied and published.
    pub caught_up_at: Option<DateTime<Utc>>,
    /// How many events the event store had in the window.
    pub events: usize,
}

/// Who holds a shard's lease, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// The holder's instance id; `None` while nobody holds it.
    pub owner: Option<String>,
    /// Raised by every change of the lease; `None` before the first (no
    /// item yet, or one written before leases existed).
    pub counter: Option<u64>,
}

/// A shard's item: its checkpoint and its lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardItem {
    pub checkpoint: Checkpoint,
    pub lease: LeaseState,
    /// The read-model generations the holder writes, as its last take or
    /// renewal recorded them.
    pub generations: Option<Vec<u32>>,
}

/// Why a lease operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease is not as the caller believed: another instance holds it,
    /// or took it since it was read. The write was refused.
    #[error("the lease is held by another instance, or changed since it was read")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Every shard item of the stream, by shard id.
    async fn load_all(&self, stream_arn: &str) -> Result<HashMap<String, ShardItem>, StoreError>;

    /// Writes `checkpoint`, if `owner` holds the shard's lease.
    async fn save(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), LeaseError>;

    /// Records a trimmed window on the shard's item, if `owner` holds the
    /// shard's lease.
    async fn record_trimmed(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        window: &TrimmedWindow,
    ) -> Result<(), LeaseError>;

    /// Makes `owner` the holder, if the lease counter is still `seen` (or
    /// still absent, for `None`); returns the item as it is now, whose
    /// checkpoint the reader starts from. `generations`, when known, are
    /// recorded as the read-model generations the holder writes.
    async fn take(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        seen: Option<u64>,
        generations: Option<&[u32]>,
    ) -> Result<ShardItem, LeaseError>;

    /// Raises the lease counter, if `owner` holds the lease, recording
    /// `generations` as [`Self::take`] does.
    async fn renew(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        generations: Option<&[u32]>,
    ) -> Result<(), LeaseError>;

    /// Gives the lease up, if `owner` holds it: the item keeps its
    /// checkpoint and has no owner.
    async fn release(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
    ) -> Result<(), LeaseError>;
}

/// Checkpoints and leases in the DynamoDB checkpoint table.
#[derive(Clone, Debug)]
pub struct DynamoCheckpoints {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoCheckpoints {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    /// An `UpdateItem` of the shard's item, conditional on `#owner`
    /// being `:me` unless the caller replaces the condition.
    fn update(&self, stream_arn: &str, shard_id: &str, owner: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::STREAM_ARN, AttributeValue::S(stream_arn.to_owned()))
            .key(attr::SHARD_ID, AttributeValue::S(shard_id.to_owned()))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_values(":me", AttributeValue::S(owner.to_owned()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
    }

    /// [`Self::update`] raising `#counter` by `:one`, after the rest of
    /// `update_expression` (a `REMOVE` clause or nothing) and setting
    /// `more_set` too (more `SET` actions, or nothing), and recording the
    /// read-model generations written when they are known.
    fn update_counter(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        (update_expression, more_set): (&str, &str),
        generations: Option<&[u32]>,
    ) -> UpdateItemFluentBuilder {
        let mut set = format!("SET {more_set}#counter = if_not_exists(#counter, :zero) + :one");
        let mut request = self.update(stream_arn, shard_id, owner);
        if let Some(generations) = generations {
            set.push_str(", #generations = :generations");
            request = request
                .expression_attribute_names("#generations", attr::GENERATIONS)
                .expression_attribute_values(
                    ":generations",
                    AttributeValue::Ns(generations.iter().map(u32::to_string).collect()),
                );
        }
        request
            .update_expression(format!("{update_expression} {set}").trim_start())
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
    }
}

/// A failed condition is a [`LeaseError::Conflict`]; anything else, a store
/// error.
fn lease_error(context: &str, err: SdkError<UpdateItemError>) -> LeaseError {
    if err
        .as_service_error()
        .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
    {
        LeaseError::Conflict
    } else {
        LeaseError::Store(sdk_error(context, err))
    }
}

/// The shard id and the item of a checkpoint table item.
fn decode(item: &HashMap<String, AttributeValue>) -> Result<(String, ShardItem), StoreError> {
    let Some(AttributeValue::S(shard_id)) = item.get(attr::SHARD_ID) else {
        return Err(StoreError::Failed("checkpoint without a shard id".into()));
    };
    let sequence_number = match item.get(attr::SEQUENCE_NUMBER) {
        Some(AttributeValue::S(seq)) => Some(seq.clone()),
        _ => None,
    };
    let finished = matches!(item.get(attr::FINISHED), Some(AttributeValue::Bool(true)));
    let generations = match item.get(attr::GENERATIONS) {
        Some(AttributeValue::Ns(numbers)) => Some(
            numbers
                .iter()
                .map(|n| n.parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    StoreError::Failed(format!("shard {shard_id}: generations {numbers:?}"))
                })?,
        ),
        _ => None,
    };
    let owner = match item.get(attr::LEASE_OWNER) {
        Some(AttributeValue::S(owner)) => Some(owner.clone()),
        _ => None,
    };
    let counter = match item.get(attr::LEASE_COUNTER) {
        Some(AttributeValue::N(n)) => Some(n.parse().map_err(|_| {
            StoreError::Failed(format!(
                "shard {shard_id}: lease counter {n} is not a number"
            ))
        })?),
        _ => None,
    };
    Ok((
        shard_id.clone(),
        ShardItem {
            checkpoint: Checkpoint {
                sequence_number,
                finished,
                last_event_time: match item.get(attr::LAST_EVENT_TIME) {
                    Some(AttributeValue::S(at)) => parse_time(at),
                    _ => None,
                },
            },
            lease: LeaseState { owner, counter },
            generations,
        },
    ))
}

#[async_trait]
impl CheckpointStore for DynamoCheckpoints {
    async fn load_all(&self, stream_arn: &str) -> Result<HashMap<String, ShardItem>, StoreError> {
        let mut all = HashMap::new();
        let mut start_key = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#arn = :arn")
                .expression_attribute_names("#arn", attr::STREAM_ARN)
                .expression_attribute_values(":arn", AttributeValue::S(stream_arn.to_owned()))
                .set_exclusive_start_key(start_key)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| sdk_error("reading checkpoints", e))?;
            for item in page.items() {
                let (shard_id, shard) = decode(item)?;
                all.insert(shard_id, shard);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => return Ok(all),
            }
        }
    }

    async fn save(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), LeaseError> {
        let mut set = "#finished = :finished, #at = :at".to_owned();
        let mut request = self
            .update(stream_arn, shard_id, owner)
            .expression_attribute_names("#finished", attr::FINISHED)
            .expression_attribute_values(":finished", AttributeValue::Bool(checkpoint.finished))
            .expression_attribute_names("#at", attr::UPDATED_AT)
            .expression_attribute_values(":at", AttributeValue::S(format_time(Utc::now())));
        if let Some(seq) = &checkpoint.sequence_number {
            set.push_str(", #seq = :seq");
            request = request
                .expression_attribute_names("#seq", attr::SEQUENCE_NUMBER)
                .expression_attribute_values(":seq", AttributeValue::S(seq.clone()));
        }
        if let Some(at) = checkpoint.last_event_time {
            set.push_str(", #last_event = :last_event");
            request = request
                .expression_attribute_names("#last_event", attr::LAST_EVENT_TIME)
                .expression_attribute_values(":last_event", AttributeValue::S(format_time(at)));
        }
        request
            .update_expression(format!("SET {set}"))
            .send()
            .await
            .map_err(|e| lease_error("writing a checkpoint", e))?;
        Ok(())
    }

    async fn record_trimmed(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        window: &TrimmedWindow,
    ) -> Result<(), LeaseError> {
        let time =
            |at: Option<DateTime<Utc>>| AttributeValue::S(at.map(format_time).unwrap_or_default());
        self.update(stream_arn, shard_id, owner)
            .update_expression("SET #from = :from, #to = :to, #caught = :caught, #events = :events")
            .expression_attribute_names("#from", attr::TRIMMED_FROM)
            .expression_attribute_names("#to", attr::TRIMMED_TO)
            .expression_attribute_names("#caught", attr::TRIMMED_CAUGHT_UP_AT)
            .expression_attribute_names("#events", attr::TRIMMED_EVENTS)
            .expression_attribute_values(":from", time(window.from))
            .expression_attribute_values(":to", time(Some(window.to)))
            .expression_attribute_values(":caught", time(window.caught_up_at))
            .expression_attribute_values(":events", AttributeValue::N(window.events.to_string()))
            .send()
            .await
            .map_err(|e| lease_error("recording a trimmed window", e))?;
        Ok(())
    }

    async fn take(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        seen: Option<u64>,
        generations: Option<&[u32]>,
    ) -> Result<ShardItem, LeaseError> {
        let request = self
            .update_counter(
                stream_arn,
                shard_id,
                owner,
                ("", "#owner = :me, "),
                generations,
            )
            .return_values(ReturnValue::AllNew);
        // Every change of the lease raises the counter: an unchanged
        // counter is an unchanged lease, whoever held it.
        let request = match seen {
            Some(counter) => request
                .condition_expression("#counter = :seen")
                .expression_attribute_values(":seen", AttributeValue::N(counter.to_string())),
            None => request.condition_expression("attribute_not_exists(#counter)"),
        };
        let out = request
            .send()
            .await
            .map_err(|e| lease_error("taking a shard lease", e))?;
        let item = out.attributes.unwrap_or_default();
        let (_, shard) = decode(&item)?;
        if shard.lease.owner.as_deref() != Some(owner) {
            return Err(StoreError::Failed(format!(
                "shard {shard_id}: the lease taken is not in the item returned"
            ))
            .into());
        }
        Ok(shard)
    }

    async fn renew(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
        generations: Option<&[u32]>,
    ) -> Result<(), LeaseError> {
        self.update_counter(stream_arn, shard_id, owner, ("", ""), generations)
            .send()
            .await
            .map_err(|e| lease_error("renewing a shard lease", e))?;
        Ok(())
    }

    async fn release(
        &self,
        stream_arn: &str,
        shard_id: &str,
        owner: &str,
    ) -> Result<(), LeaseError> {
        self.update_counter(stream_arn, shard_id, owner, ("REMOVE #owner", ""), None)
            .send()
            .await
            .map_err(|e| lease_error("releasing a shard lease", e))?;
        Ok(())
    }
}
