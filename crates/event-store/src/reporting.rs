//! Reads of the event store for reporting, the admin service's: an
//! aggregate's history a page at a time, its events up to a point, every
//! event of a type over a time range through the bucketed event-type index,
//! and the migration that gave every event its bucket.
//!
//! The command side and the projector never call these.

use std::collections::{HashMap, VecDeque};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use dynabridge::convert::format_time;
use dynabridge::schema::event_store as attr;
use dynabridge_aws::item::{Item, get_n, get_s};
use dynabridge_domain::{StoredEvent, Version};

use crate::StoreError;
use crate::codec::{self, event_type_bucket, event_type_buckets};

fn decode(item: &Item) -> Result<StoredEvent, StoreError> {
    codec::event_from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// One page of an aggregate's history.
#[derive(Debug, Default)]
pub struct HistoryPage {
    pub events: Vec<StoredEvent>,
    /// The version the next page starts after; `None` on the last page.
    pub next_after: Option<Version>,
}

/// Up to `limit` events of one aggregate with versions above `after`, in
/// version order, read consistently.
pub async fn history_page(
    client: &Client,
    table: &str,
    aggregate_id: &str,
    after: Version,
    limit: usize,
) -> Result<HistoryPage, StoreError> {
    let mut page = HistoryPage::default();
    let mut start_key = None;
    loop {
        let wanted = limit - page.events.len();
        let out = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key_condition_expression("#id = :id AND #v > :after")
            .expression_attribute_names("#id", attr::AGGREGATE_ID)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":id", AttributeValue::S(aggregate_id.to_owned()))
            .expression_attribute_values(":after", AttributeValue::N(after.to_string()))
            .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|e| StoreError::call("reading an aggregate's history", e))?;
        for item in out.items() {
            page.events.push(decode(item)?);
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => {
                if page.events.len() >= limit {
                    page.next_after = page.events.last().map(|e| e.version);
                    return Ok(page);
                }
                start_key = Some(key);
            }
            _ => return Ok(page),
        }
    }
}

/// A point in an aggregate's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// After the last event at or before this time (the events up to the
    /// first one after it, in version order).
    Time(DateTime<Utc>),
    /// After the event of this version.
    Version(Version),
}

/// The events of one aggregate up to `point`, in version order, read
/// consistently a page at a time, stopping at the first event past it.
pub async fn events_up_to(
    client: &Client,
    table: &str,
    aggregate_id: &str,
    point: Point,
) -> Result<Vec<StoredEvent>, StoreError> {
    const PAGE: usize = 100;
    let mut events: Vec<StoredEvent> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.version);
        let page = history_page(client, table, aggregate_id, after, PAGE).await?;
        for event in page.events {
            let past = match point {
                Point::Time(time) => event.occurred_at > time,
                Point::Version(version) => event.version > version,
            };
            if past {
                return Ok(events);
            }
            events.push(event);
        }
        if page.next_after.is_none() {
            return Ok(events);
        }
    }
}

/// The events of one type over a time range: `start` included, `end`
/// excluded, either open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeRange {
    pub event_type: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// Where the reading of one bucket of the event-type index stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketCursor {
    /// Nothing read yet.
    Start,
    /// Resume after this event of the bucket.
    After {
        timestamp: String,
        aggregate_id: String,
        version: Version,
    },
    /// Every event of the range in this bucket has been returned.
    Done,
}

/// One page of [`events_by_type`].
#[derive(Debug, Default)]
pub struct TypePage {
    /// Oldest first.
    pub events: Vec<StoredEvent>,
    /// Where each bucket stands after this page; `None` on the last page.
    pub next: Option<Vec<BucketCursor>>,
}

/// What was read of one bucket for a page.
struct BucketRead {
    events: VecDeque<(StoredEvent, String)>,
    /// The bucket holds more events of the range than were read.
    more: bool,
}

/// Up to `limit` events of `range`, oldest first: every bucket of the type
/// queried at once, from where `cursors` (one per bucket, `None` for the
/// first page) left it, and merged by time.
///
/// A bucket is read `limit` events at a time, so the page's next events are
/// among those read, unless a bucket whose read stopped short runs out
/// first: the page ends there, since that bucket's next event is not known.
/// Index reads are eventually consistent: an event appended a moment ago
/// may not be listed yet.
pub async fn events_by_type(
    client: &Client,
    table: &str,
    range: &TypeRange,
    cursors: Option<Vec<BucketCursor>>,
    limit: usize,
) -> Result<TypePage, StoreError> {
    let buckets: Vec<String> = event_type_buckets(&range.event_type).collect();
    let mut cursors = cursors.unwrap_or_else(|| vec![BucketCursor::Start; buckets.len()]);
    if cursors.len() != buckets.len() {
        return Err(StoreError::Corrupt(format!(
            "{} bucket cursors for {} buckets",
            cursors.len(),
            buckets.len()
        )));
    }
    let reads = join_all(
        buckets
            .iter()
            .zip(&cursors)
            .map(|(bucket, cursor)| read_bucket(client, table, range, bucket, cursor, limit)),
    )
    .await;
    let mut reads = reads
        .into_iter()
        .collect::<Result<Vec<Option<BucketRead>>, StoreError>>()?;

    let mut page = TypePage::default();
    while page.events.len() < limit {
        // A bucket with more to read and nothing left of what was read
        // could hold the next event.
        let blocked = reads
            .iter()
            .flatten()
            .any(|read| read.more && read.events.is_empty());
        if blocked {
            break;
        }
        let next = reads
            .iter()
            .enumerate()
            .filter_map(|(i, read)| {
                let read = read.as_ref()?;
                read.events.front().map(|(_, timestamp)| (timestamp, i))
            })
            .min()
            .map(|(_, i)| i);
        let Some(i) = next else { break };
        let Some((event, timestamp)) = reads[i].as_mut().and_then(|r| r.events.pop_front()) else {
            break;
        };
        cursors[i] = BucketCursor::After {
            timestamp,
            aggregate_id: event.event.aggregate_id().to_string(),
            version: event.version,
        };
        page.events.push(event);
    }
    for (cursor, read) in cursors.iter_mut().zip(&reads) {
        if let Some(read) = read
            && read.events.is_empty()
            && !read.more
        {
            *cursor = BucketCursor::Done;
        }
    }
    if cursors.iter().any(|c| *c != BucketCursor::Done) {
        page.next = Some(cursors);
    }
    Ok(page)
}

/// Up to `limit` events of `range` in one bucket after `cursor`; `None` for
/// a bucket already done.
async fn read_bucket(
    client: &Client,
    table: &str,
    range: &TypeRange,
    bucket: &str,
    cursor: &BucketCursor,
    limit: usize,
) -> Result<Option<BucketRead>, StoreError> {
    if range.start.zip(range.end).is_some_and(|(s, e)| s >= e) {
        return Ok(Some(BucketRead {
            events: VecDeque::new(),
            more: false,
        }));
    }
    let start_key = match cursor {
        BucketCursor::Done => return Ok(None),
        BucketCursor::Start => None,
        BucketCursor::After {
            timestamp,
            aggregate_id,
            version,
        } => Some(HashMap::from([
            (
                attr::EVENT_TYPE_BUCKET.to_owned(),
                AttributeValue::S(bucket.to_owned()),
            ),
            (
                attr::TIMESTAMP.to_owned(),
                AttributeValue::S(timestamp.clone()),
            ),
            (
                attr::AGGREGATE_ID.to_owned(),
                AttributeValue::S(aggregate_id.clone()),
            ),
            (
                attr::VERSION.to_owned(),
                AttributeValue::N(version.to_string()),
            ),
        ])),
    };
    let mut query = client
        .query()
        .table_name(table)
        .index_name(attr::EVENT_TYPE_INDEX)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .expression_attribute_names("#b", attr::EVENT_TYPE_BUCKET)
        .expression_attribute_values(":b", AttributeValue::S(bucket.to_owned()))
        .limit(i32::try_from(limit).unwrap_or(i32::MAX))
        .set_exclusive_start_key(start_key);
    // Stored times have microseconds, so the last one before `end` is a
    // microsecond before it.
    let last = range
        .end
        .map(|end| format_time(end - TimeDelta::microseconds(1)));
    let first = range.start.map(format_time);
    let condition = match (&first, &last) {
        (Some(_), Some(_)) => "#b = :b AND #t BETWEEN :first AND :last",
        (Some(_), None) => "#b = :b AND #t >= :first",
        (None, Some(_)) => "#b = :b AND #t <= :last",
        (None, None) => "#b = :b",
    };
    query = query.key_condition_expression(condition);
    if first.is_some() || last.is_some() {
        query = query.expression_attribute_names("#t", attr::TIMESTAMP);
    }
    if let Some(first) = first {
        query = query.expression_attribute_values(":first", AttributeValue::S(first));
    }
    if let Some(last) = last {
        query = query.expression_attribute_values(":last", AttributeValue::S(last));
    }
    let out = query
        .send()
        .await
        .map_err(|e| StoreError::call("reading the event-type index", e))?;
    let mut events = VecDeque::with_capacity(out.items().len());
    for item in out.items() {
        let timestamp = get_s(item, attr::TIMESTAMP)
            .map_err(|e| StoreError::Corrupt(e.0))?
            .to_owned();
        events.push_back((decode(item)?, timestamp));
    }
    Ok(Some(BucketRead {
        events,
        more: out.last_evaluated_key.is_some_and(|key| !key.is_empty()),
    }))
}

/// How many events were committed after `since` (every event for `None`),
/// counted through the event-type index: every type's every bucket, at
/// once per type. The index trails the table by a moment.
pub async fn count_after(
    client: &Client,
    table: &str,
    since: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let mut total = 0;
    for event_type in dynabridge_domain::Event::TYPES {
        let counts = join_all(
            event_type_buckets(event_type).map(|bucket| count_bucket(client, table, bucket, since)),
        )
        .await;
        for count in counts {
            total += count?;
        }
    }
    Ok(total)
}

async fn count_bucket(
    client: &Client,
    table: &str,
    bucket: String,
    since: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let mut count = 0;
    let mut start_key = None;
    loop {
        let mut query = client
            .query()
            .table_name(table)
            .index_name(attr::EVENT_TYPE_INDEX)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .expression_attribute_names("#b", attr::EVENT_TYPE_BUCKET)
            .expression_attribute_values(":b", AttributeValue::S(bucket.clone()))
            .set_exclusive_start_key(start_key);
        query = match since {
            Some(since) => query
                .key_condition_expression("#b = :b AND #t > :since")
                .expression_attribute_names("#t", attr::TIMESTAMP)
                .expression_attribute_values(":since", AttributeValue::S(format_time(since))),
            None => query.key_condition_expression("#b = :b"),
        };
        let out = query
            .send()
            .await
            .map_err(|e| StoreError::call("counting events in the event-type index", e))?;
        count += u64::try_from(out.count).unwrap_or_default();
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => return Ok(count),
        }
    }
}

/// Gives every event that lacks it its `EventTypeBucket` (events appended
/// before the buckets), so that the event-type index lists it: a parallel
/// `Scan` of `segments` segments for events without the attribute, and a
/// conditional `UpdateItem` of each. Returns how many it rewrote.
///
/// Safe to run again, and alongside appends: an event that has its bucket
/// is left alone, and no item is created. The rewrites show on the table's
/// stream as `MODIFY` records, which readers of the stream skip.
pub async fn migrate_event_type_buckets(
    client: &Client,
    table: &str,
    segments: u16,
) -> Result<u64, StoreError> {
    let segments = segments.max(1);
    let counts =
        join_all((0..segments).map(|segment| migrate_segment(client, table, segment, segments)))
            .await;
    counts.into_iter().sum()
}

async fn migrate_segment(
    client: &Client,
    table: &str,
    segment: u16,
    segments: u16,
) -> Result<u64, StoreError> {
    let mut migrated = 0;
    let mut start_key = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .segment(i32::from(segment))
            .total_segments(i32::from(segments))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .filter_expression("attribute_not_exists(#b)")
            .projection_expression("#id, #v, #type")
            .expression_attribute_names("#b", attr::EVENT_TYPE_BUCKET)
            .expression_attribute_names("#id", attr::AGGREGATE_ID)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#type", attr::EVENT_TYPE)
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|e| StoreError::call("scanning for events without a bucket", e))?;
        for item in out.items() {
            if set_bucket(client, table, item).await? {
                migrated += 1;
            }
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => return Ok(migrated),
        }
    }
}

/// Sets one event's bucket; `false` if it had one by then (or is gone).
async fn set_bucket(client: &Client, table: &str, item: &Item) -> Result<bool, StoreError> {
    let corrupt = |e: dynabridge_aws::item::AttributeError| StoreError::Corrupt(e.0);
    let aggregate_id = get_s(item, attr::AGGREGATE_ID).map_err(corrupt)?;
    let version = get_n(item, attr::VERSION).map_err(corrupt)?;
    let event_type = get_s(item, attr::EVENT_TYPE).map_err(corrupt)?;
    let id = uuid::Uuid::parse_str(aggregate_id)
        .map_err(|e| StoreError::Corrupt(format!("aggregate id {aggregate_id:?}: {e}")))?;
    let result = client
        .update_item()
        .table_name(table)
        .key(
            attr::AGGREGATE_ID,
            AttributeValue::S(aggregate_id.to_owned()),
        )
        .key(attr::VERSION, AttributeValue::N(version.to_string()))
        .update_expression("SET #b = :b")
        .condition_expression("attribute_exists(#id) AND attribute_not_exists(#b)")
        .expression_attribute_names("#b", attr::EVENT_TYPE_BUCKET)
        .expression_attribute_names("#id", attr::AGGREGATE_ID)
        .expression_attribute_values(":b", AttributeValue::S(event_type_bucket(event_type, id)))
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(err) => Err(StoreError::call("giving an event its bucket", err)),
    }
}
