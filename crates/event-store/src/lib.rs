//! The event store on the DynamoDB API: reading an aggregate's events, and
//! appending new ones atomically with their idempotency record and email
//! claims (see [`EventStore::append`]).

pub mod append;
pub mod codec;
mod error;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod group_commit;
pub mod reporting;
pub mod snapshot;

pub use append::{
    Append, AppendError, CommandOutcome, Creation, EventStore, IdempotencyRecord, RecordIn,
};
pub use error::StoreError;
pub use group_commit::GroupCommitMetrics;
pub use snapshot::{Loaded, Snapshots, StoredSnapshot, load_aggregate};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};

use dynabridge::schema::event_store as attr;
use dynabridge_domain::{StoredEvent, Version};

/// Reads the events of one aggregate with versions in `from..=to` (`to`:
/// `None` for all), in version order, with a strongly consistent read.
pub async fn read_events(
    client: &Client,
    table: &str,
    aggregate_id: &str,
    from: Version,
    to: Option<Version>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events = Vec::new();
    let mut start_key = None;
    loop {
        let mut query = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .expression_attribute_names("#id", attr::AGGREGATE_ID)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":id", AttributeValue::S(aggregate_id.to_owned()))
            .expression_attribute_values(":from", AttributeValue::N(from.to_string()))
            .set_exclusive_start_key(start_key);
        query = match to {
            Some(to) => query
                .key_condition_expression("#id = :id AND #v BETWEEN :from AND :to")
                .expression_attribute_values(":to", AttributeValue::N(to.to_string())),
            None => query.key_condition_expression("#id = :id AND #v >= :from"),
        };
        let page = query
            .send()
            .await
            .map_err(|e| StoreError::call("reading events", e))?;
        for item in page.items() {
            events.push(
                codec::event_from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => return Ok(events),
        }
    }
}

/// What the command side needs of an event store: an aggregate's events,
/// the atomic append, and the idempotency record of a request.
/// [`EventStore`] is the one on the DynamoDB API; the command handler's
/// unit tests put a fake in its place.
pub trait CommandStore: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The events of one aggregate, in version order, read consistently.
    fn load(
        &self,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The events of one aggregate after version `after`, in version order,
    /// read consistently.
    fn load_after(
        &self,
        aggregate_id: &str,
        after: Version,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The aggregate's latest snapshot, unchecked (see [`snapshot`]).
    fn snapshot(
        &self,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<StoredSnapshot>, StoreError>> + Send;

    /// Stores a snapshot unless one as recent is there.
    fn save_snapshot(
        &self,
        snapshot: &StoredSnapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends the events with their idempotency record and requirements,
    /// all or nothing; see [`EventStore::append`].
    fn append(&self, append: &Append) -> impl Future<Output = Result<(), AppendError>> + Send;

    /// Several appends in one transaction, all or none; see
    /// [`EventStore::append_together`].
    fn append_together(
        &self,
        appends: &[Append],
    ) -> impl Future<Output = Result<(), AppendError>> + Send;

    /// The request that created an aggregate, from its first events; see
    /// [`EventStore::creation`].
    fn creation(
        &self,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<Creation>, StoreError>> + Send;

    /// The recorded request with this idempotency key: its hash and outcome.
    fn recorded_request(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<(String, CommandOutcome)>, StoreError>> + Send;
}

impl CommandStore for EventStore {
    async fn load(&self, aggregate_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        EventStore::load(self, aggregate_id).await
    }

    async fn load_after(
        &self,
        aggregate_id: &str,
        after: Version,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        EventStore::load_after(self, aggregate_id, after).await
    }

    async fn snapshot(&self, aggregate_id: &str) -> Result<Option<StoredSnapshot>, StoreError> {
        EventStore::snapshot(self, aggregate_id).await
    }

    async fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        EventStore::save_snapshot(self, snapshot).await
    }

    async fn append(&self, append: &Append) -> Result<(), AppendError> {
        EventStore::append(self, append).await
    }

    async fn append_together(&self, appends: &[Append]) -> Result<(), AppendError> {
        EventStore::append_together(self, appends).await
    }

    async fn creation(&self, aggregate_id: &str) -> Result<Option<Creation>, StoreError> {
        EventStore::creation(self, aggregate_id).await
    }

    async fn recorded_request(
        &self,
        request_id: &str,
    ) -> Result<Option<(String, CommandOutcome)>, StoreError> {
        EventStore::recorded_request(self, request_id).await
    }
}
