//! Durable stream positions, one item per (stream, shard) in the checkpoint
//! table. A checkpoint names the last record whose events are in the read
//! models *and* published; nothing else ever writes one.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::Utc;
use dynabridge::convert::format_time;
use dynabridge::schema::checkpoints as attr;

use crate::error::{StoreError, sdk_error};

/// Where a shard's processing stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last sequence number fully processed; `None` if none yet.
    pub sequence_number: Option<String>,
    /// Every record of the (closed) shard is processed.
    pub finished: bool,
}

#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Every checkpoint of the stream, by shard id.
    async fn load_all(&self, stream_arn: &str) -> Result<HashMap<String, Checkpoint>, StoreError>;

    async fn save(
        &self,
        stream_arn: &str,
        shard_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError>;
}

/// Checkpoints in the DynamoDB checkpoint table.
#[derive(Clone, Debug)]
pub struct DynamoCheckpoints {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoCheckpoints {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }
}

#[async_trait]
impl CheckpointStore for DynamoCheckpoints {
    async fn load_all(&self, stream_arn: &str) -> Result<HashMap<String, Checkpoint>, StoreError> {
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
                let Some(AttributeValue::S(shard_id)) = item.get(attr::SHARD_ID) else {
                    return Err(StoreError::Failed("checkpoint without a shard id".into()));
                };
                let sequence_number = match item.get(attr::SEQUENCE_NUMBER) {
                    Some(AttributeValue::S(seq)) => Some(seq.clone()),
                    _ => None,
                };
                let finished = matches!(item.get(attr::FINISHED), Some(AttributeValue::Bool(true)));
                all.insert(
                    shard_id.clone(),
                    Checkpoint {
                        sequence_number,
                        finished,
                    },
                );
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
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let mut item = HashMap::from([
            (
                attr::STREAM_ARN.to_owned(),
                AttributeValue::S(stream_arn.to_owned()),
            ),
            (
                attr::SHARD_ID.to_owned(),
                AttributeValue::S(shard_id.to_owned()),
            ),
            (
                attr::FINISHED.to_owned(),
                AttributeValue::Bool(checkpoint.finished),
            ),
            (
                attr::UPDATED_AT.to_owned(),
                AttributeValue::S(format_time(Utc::now())),
            ),
        ]);
        if let Some(seq) = &checkpoint.sequence_number {
            item.insert(
                attr::SEQUENCE_NUMBER.to_owned(),
                AttributeValue::S(seq.clone()),
            );
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| sdk_error("writing a checkpoint", e))?;
        Ok(())
    }
}
