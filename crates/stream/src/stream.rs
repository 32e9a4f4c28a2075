//! The event store's stream, behind [`StreamApi`]: the three DynamoDB
//! Streams calls the projector makes, in the shape it needs. The SDK
//! implementation is [`SdkStreams`]; unit tests use an in-memory fake.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, ShardIteratorType};

use crate::error::{StoreError, sdk_error};

/// One shard of the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
}

/// One page of `DescribeStream`.
#[derive(Clone, Debug, Default)]
pub struct ShardPage {
    pub shards: Vec<ShardInfo>,
    /// Where the next page starts; `None` on the last page.
    pub last_evaluated_shard_id: Option<String>,
}

/// Where a shard iterator starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Just after this sequence number.
    After(String),
}

impl StartPosition {
    pub fn after(sequence_number: Option<&str>) -> Self {
        match sequence_number {
            Some(seq) => Self::After(seq.to_owned()),
            None => Self::TrimHorizon,
        }
    }
}

/// What the record says happened to the item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Insert,
    /// `MODIFY`, `REMOVE`, or anything else: not an event.
    Other(String),
}

/// One stream record, as much of it as the projector reads.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    /// Empty if the service sent none (the record is then poison).
    pub sequence_number: String,
    pub operation: Operation,
    pub new_image: Option<HashMap<String, AttributeValue>>,
    /// When the change was made, to the second, as the stream says
    /// (`ApproximateCreationDateTime`): what the projector's lag is
    /// measured from.
    pub approximate_creation: Option<chrono::DateTime<chrono::Utc>>,
}

/// One page of `GetRecords`.
#[derive(Clone, Debug, Default)]
pub struct RecordPage {
    pub records: Vec<StreamRecord>,
    /// `None` once a closed shard has no more records: the only sign of a
    /// closed shard the projector trusts (the embedded store reports an
    /// ending sequence number on open shards).
    pub next_iterator: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Iterators live 15 minutes; get a new one from the last position.
    #[error("shard iterator expired")]
    ExpiredIterator,
    /// The records asked for are older than the stream keeps.
    #[error("stream data trimmed")]
    Trimmed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StreamError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ExpiredIterator | Self::Trimmed => true,
            Self::Store(e) => e.is_transient(),
        }
    }
}

#[async_trait]
pub trait StreamApi: Send + Sync {
    async fn describe_shards(
        &self,
        stream_arn: &str,
        exclusive_start_shard_id: Option<String>,
    ) -> Result<ShardPage, StreamError>;

    async fn shard_iterator(
        &self,
        stream_arn: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, StreamError>;

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError>;
}

/// Every shard of the stream, across pages.
pub async fn list_shards(
    api: &dyn StreamApi,
    stream_arn: &str,
) -> Result<Vec<ShardInfo>, StreamError> {
    let mut shards = Vec::new();
    let mut start = None;
    loop {
        let page = api.describe_shards(stream_arn, start).await?;
        shards.extend(page.shards);
        match page.last_evaluated_shard_id {
            Some(last) if !last.is_empty() => start = Some(last),
            _ => return Ok(shards),
        }
    }
}

/// DynamoDB Streams through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SdkStreams {
    client: aws_sdk_dynamodbstreams::Client,
}

impl SdkStreams {
    pub fn new(client: aws_sdk_dynamodbstreams::Client) -> Self {
        Self { client }
    }
}

fn stream_error<E, R>(context: &str, err: SdkError<E, R>) -> StreamError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned);
    match code.as_deref() {
        Some("ExpiredIteratorException") => StreamError::ExpiredIterator,
        Some("TrimmedDataAccessException") => StreamError::Trimmed,
        // Streams' name for throttling (more than two readers of a shard).
        Some("LimitExceededException") => StreamError::Store(StoreError::Unavailable(format!(
            "{context}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&err)
        ))),
        _ => StreamError::Store(sdk_error(context, err)),
    }
}

#[async_trait]
impl StreamApi for SdkStreams {
    async fn describe_shards(
        &self,
        stream_arn: &str,
        exclusive_start_shard_id: Option<String>,
    ) -> Result<ShardPage, StreamError> {
        let out = self
            .client
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(exclusive_start_shard_id)
            .send()
            .await
            .map_err(|e| stream_error("describing the stream", e))?;
        let Some(description) = out.stream_description else {
            return Ok(ShardPage::default());
        };
        Ok(ShardPage {
            shards: description
                .shards
                .unwrap_or_default()
                .into_iter()
                .filter_map(|shard| {
                    Some(ShardInfo {
                        id: shard.shard_id?,
                        parent: shard.parent_shard_id.filter(|p| !p.is_empty()),
                    })
                })
                .collect(),
            last_evaluated_shard_id: description.last_evaluated_shard_id,
        })
    }

    async fn shard_iterator(
        &self,
        stream_arn: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id);
        let request = match position {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
        };
        let out = request
            .send()
            .await
            .map_err(|e| stream_error("getting a shard iterator", e))?;
        out.shard_iterator.ok_or_else(|| {
            StreamError::Store(StoreError::Failed(format!(
                "no iterator returned for shard {shard_id}"
            )))
        })
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| stream_error("getting stream records", e))?;
        Ok(RecordPage {
            records: out
                .records
                .unwrap_or_default()
                .into_iter()
                .map(|record| {
                    let operation = match record.event_name {
                        Some(OperationType::Insert) => Operation::Insert,
                        Some(other) => Operation::Other(other.as_str().to_owned()),
                        None => Operation::Other(String::new()),
                    };
                    let data = record.dynamodb.unwrap_or_else(|| {
                        aws_sdk_dynamodbstreams::types::StreamRecord::builder().build()
                    });
                    StreamRecord {
                        sequence_number: data.sequence_number.unwrap_or_default(),
                        operation,
                        approximate_creation: data.approximate_creation_date_time.and_then(|at| {
                            chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos())
                        }),
                        new_image: data.new_image,
                    }
                })
                .collect(),
            next_iterator: out.next_shard_iterator.filter(|i| !i.is_empty()),
        })
    }
}

/// The stream ARN of the event store table, from `DescribeTable`.
pub async fn latest_stream_arn(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Option<String>, StoreError> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_error("describing the event store", e))?;
    Ok(out.table.and_then(|t| t.latest_stream_arn))
}

/// The event store's stream ARN, waiting for the table to exist; `None` on
/// shutdown. A table without a stream is an error no wait can fix.
pub async fn find_stream(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    timing: &crate::control::Timing,
    stop: &crate::control::Shutdown,
) -> Result<Option<String>, NoStream> {
    let mut retry = timing.retry_backoff();
    loop {
        crate::progress::beat();
        match latest_stream_arn(client, table).await {
            Ok(Some(arn)) => return Ok(Some(arn)),
            Ok(None) => return Err(NoStream(table.to_owned())),
            Err(err) => {
                tracing::warn!(table, error = %err, "cannot describe the event store yet, retrying");
                if !stop.sleep(retry.next_delay()).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// The event store has no stream.
#[derive(Debug, thiserror::Error)]
#[error("the event store table {0} has no stream: enable a NEW_IMAGE stream on it")]
pub struct NoStream(pub String);
