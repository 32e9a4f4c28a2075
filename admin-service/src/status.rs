//! Where the projection stands, as the tables say: each shard's lease and
//! checkpoint (the checkpoint table), the events committed after the
//! checkpoints (the event-type index), the read models' sizes and the
//! parked aggregates.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, Select};
use chrono::{DateTime, Utc};
use dynabridge::convert::{parse_time, timestamp_to_pb};
use dynabridge::pb;
use dynabridge::schema::{Tables, checkpoints as attr, parked};
use dynabridge_aws::item::{Item, get_n, get_s};
use dynabridge_event_store::reporting::count_after;
use dynabridge_runtime::error::{AppError, from_sdk_error};

use crate::lookback::store_error;

/// Reads the projection's status.
#[derive(Clone, Debug)]
pub struct ProjectionStatus {
    client: Client,
    tables: Tables,
}

fn time(item: &Item, name: &str) -> Option<DateTime<Utc>> {
    get_s(item, name).ok().and_then(parse_time)
}

fn shard_of(item: &Item) -> pb::ShardStatus {
    let text = |name: &str| get_s(item, name).map(str::to_owned).unwrap_or_default();
    let trimmed_to = time(item, attr::TRIMMED_TO);
    pb::ShardStatus {
        shard_id: text(attr::SHARD_ID),
        lease_owner: text(attr::LEASE_OWNER),
        lease_counter: get_n(item, attr::LEASE_COUNTER).unwrap_or_default(),
        checkpoint: text(attr::SEQUENCE_NUMBER),
        finished: matches!(item.get(attr::FINISHED), Some(AttributeValue::Bool(true))),
        last_event_time: time(item, attr::LAST_EVENT_TIME).map(timestamp_to_pb),
        update_time: time(item, attr::UPDATED_AT).map(timestamp_to_pb),
        last_trimmed_window: trimmed_to.map(|to| pb::TrimmedWindow {
            start_time: time(item, attr::TRIMMED_FROM).map(timestamp_to_pb),
            end_time: Some(timestamp_to_pb(to)),
            caught_up_time: time(item, attr::TRIMMED_CAUGHT_UP_AT).map(timestamp_to_pb),
            events: get_n(item, attr::TRIMMED_EVENTS).unwrap_or_default(),
        }),
    }
}

impl ProjectionStatus {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables }
    }

    /// The event store's current stream and its shards' checkpoint items.
    pub(crate) async fn shard_items(&self) -> Result<(String, Vec<Item>), AppError> {
        let stream_arn = self
            .client
            .describe_table()
            .table_name(self.tables.event_store())
            .send()
            .await
            .map_err(|e| from_sdk_error("describing the event store", e))?
            .table
            .and_then(|t| t.latest_stream_arn)
            .unwrap_or_default();
        let items = self.checkpoint_items(&stream_arn).await?;
        Ok((stream_arn, items))
    }

    pub async fn get(&self) -> Result<pb::GetProjectionStatusResponse, AppError> {
        let (stream_arn, items) = self.shard_items().await?;
        let shards: Vec<pb::ShardStatus> = items.iter().map(shard_of).collect();
        // Behind: whatever came after the oldest open shard's last event;
        // everything, if one has processed none (or no shard is read yet).
        let open: Vec<&Item> = items
            .iter()
            .filter(|item| !matches!(item.get(attr::FINISHED), Some(AttributeValue::Bool(true))))
            .collect();
        let since = if items.is_empty() {
            None
        } else {
            open.iter()
                .map(|item| time(item, attr::LAST_EVENT_TIME))
                .min()
                .unwrap_or_else(|| {
                    items
                        .iter()
                        .filter_map(|i| time(i, attr::LAST_EVENT_TIME))
                        .max()
                })
        };
        let events_behind = count_after(&self.client, &self.tables.event_store(), since)
            .await
            .map_err(store_error)?;
        let lag_ms = match since {
            Some(since) if events_behind > 0 => (Utc::now() - since).num_milliseconds().max(0),
            _ => 0,
        };
        let registry = crate::generations::read_registry(&self.client, &self.tables).await?;
        let last_applied = self.last_applied().await?;
        let mut read_models = Vec::new();
        for (&generation, &state) in registry.states.iter().filter(|(_, s)| s.is_written()) {
            let tables = self.tables.read_models(generation);
            let named = [
                (tables.user_profiles.as_str(), attr::USER_PROFILES_MODEL),
                (tables.order_summaries.as_str(), attr::ORDER_SUMMARIES_MODEL),
                (tables.products.as_str(), attr::PRODUCTS_MODEL),
                (tables.purchases.as_str(), attr::PURCHASES_MODEL),
            ];
            for (table, model) in named {
                let rows = self
                    .client
                    .describe_table()
                    .table_name(table)
                    .send()
                    .await
                    .map_err(|e| from_sdk_error("describing a read model", e))?
                    .table
                    .and_then(|t| t.item_count)
                    .unwrap_or_default();
                read_models.push(pb::ReadModelStatus {
                    table: table.to_owned(),
                    approximate_rows: rows,
                    generation,
                    state: crate::generations::state_to_pb(state).into(),
                    last_event_applied: last_applied.get(model).cloned(),
                });
            }
        }
        Ok(pb::GetProjectionStatusResponse {
            stream_arn,
            shards,
            events_behind: i64::try_from(events_behind).unwrap_or(i64::MAX),
            lag_ms,
            read_models,
            parked_aggregates: self.parked_aggregates().await?,
        })
    }

    /// The last event applied to each read model, by the model's name, as
    /// the projectors record it.
    async fn last_applied(&self) -> Result<HashMap<String, pb::AppliedEvent>, AppError> {
        let time = |item: &Item, name| {
            get_s(item, name)
                .ok()
                .and_then(parse_time)
                .map(timestamp_to_pb)
        };
        Ok(self
            .checkpoint_items(attr::READ_MODELS)
            .await?
            .iter()
            .filter_map(|item| {
                let model = get_s(item, attr::SHARD_ID).ok()?.to_owned();
                let applied = pb::AppliedEvent {
                    event_id: get_s(item, attr::LAST_EVENT_ID).ok()?.to_owned(),
                    event_type: get_s(item, attr::LAST_EVENT_TYPE)
                        .unwrap_or_default()
                        .to_owned(),
                    aggregate_id: get_s(item, attr::LAST_AGGREGATE_ID)
                        .unwrap_or_default()
                        .to_owned(),
                    version: get_n(item, attr::LAST_VERSION).unwrap_or_default(),
                    occurred_at: time(item, attr::LAST_EVENT_TIME),
                    apply_time: time(item, attr::UPDATED_AT),
                };
                Some((model, applied))
            })
            .collect())
    }

    /// The checkpoint table's items of `stream_arn`.
    async fn checkpoint_items(&self, stream_arn: &str) -> Result<Vec<Item>, AppError> {
        let mut items = Vec::new();
        if stream_arn.is_empty() {
            return Ok(items);
        }
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(self.tables.checkpoints())
                .key_condition_expression("#arn = :arn")
                .expression_attribute_names("#arn", attr::STREAM_ARN)
                .expression_attribute_values(":arn", AttributeValue::S(stream_arn.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| from_sdk_error("reading the checkpoints", e))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn parked_aggregates(&self) -> Result<i64, AppError> {
        let mut count = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(self.tables.parked())
                .select(Select::Count)
                .filter_expression("#v = :header")
                .expression_attribute_names("#v", parked::VERSION)
                .expression_attribute_values(
                    ":header",
                    AttributeValue::N(parked::HEADER.to_string()),
                )
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| from_sdk_error("counting parked aggregates", e))?;
            count += i64::from(page.count);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(count),
            }
        }
    }
}
