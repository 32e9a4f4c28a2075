//! Looking back: an aggregate's history, its state at a point, and the
//! events of a type over a time range, all read from the event store.

use aws_sdk_dynamodb::Client;
use dynabridge::convert::format_time;
use dynabridge::pb::ErrorReason as Reason;
use dynabridge_domain::{AggregateType, StoredEvent, ValidationError, Version};
use dynabridge_event_store::StoreError;
use dynabridge_event_store::codec::EVENT_TYPE_BUCKETS;
use dynabridge_event_store::reporting::{
    self, BucketCursor, HistoryPage, Point, TypePage, TypeRange,
};
use dynabridge_read_models::{Applied, OrderSummaryRow, UserProfileRow};
use dynabridge_runtime::error::AppError;
use dynabridge_runtime::page_token::{Listing, PageTokens};
use uuid::Uuid;

use crate::migration::IndexMigration;
use crate::request::{GetAggregateHistory, GetOrderAsOf, GetUserAsOf, ListEventsByType};

/// A store failure as the caller sees it: a failed call is unavailable or
/// internal as its kind says; an unreadable event is internal.
pub(crate) fn store_error(err: StoreError) -> AppError {
    match err {
        StoreError::Call(call) => call.into(),
        other => AppError::Internal(Box::new(other)),
    }
}

/// One page of events and the token of the next.
#[derive(Debug)]
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// An aggregate's history: pages resume after a version.
struct History(Uuid);

impl Listing for History {
    type Key = Version;

    fn fingerprint(&self) -> String {
        format!("GetAggregateHistory/{}", self.0)
    }

    fn accepts(&self, after: &Version) -> bool {
        *after >= 1
    }
}

/// The events of a type over a range: pages resume where each bucket
/// stands.
struct ByType<'a>(&'a TypeRange);

impl Listing for ByType<'_> {
    type Key = Vec<BucketCursor>;

    fn fingerprint(&self) -> String {
        let bound =
            |t: Option<chrono::DateTime<chrono::Utc>>| t.map(format_time).unwrap_or_default();
        format!(
            "ListEventsByType/{}/{}/{}",
            self.0.event_type,
            bound(self.0.start),
            bound(self.0.end)
        )
    }

    fn accepts(&self, cursors: &Vec<BucketCursor>) -> bool {
        cursors.len() == usize::from(EVENT_TYPE_BUCKETS)
    }
}

/// The event store as the admin service reads it.
#[derive(Clone, Debug)]
pub struct Lookback {
    client: Client,
    table: String,
    tokens: PageTokens,
    migration: IndexMigration,
}

impl Lookback {
    pub fn new(
        client: Client,
        event_store: String,
        tokens: PageTokens,
        migration: IndexMigration,
    ) -> Self {
        Self {
            client,
            table: event_store,
            tokens,
            migration,
        }
    }

    fn open<L: Listing>(&self, listing: &L, token: &str) -> Result<Option<L::Key>, AppError> {
        if token.is_empty() {
            return Ok(None);
        }
        self.tokens
            .open(listing, token)
            .map(Some)
            .map_err(|e| AppError::Invalid(e.into()))
    }

    pub async fn history(&self, request: GetAggregateHistory) -> Result<EventsPage, AppError> {
        let listing = History(request.aggregate_id);
        let after = self.open(&listing, &request.page_token)?.unwrap_or(0);
        let HistoryPage { events, next_after } = reporting::history_page(
            &self.client,
            &self.table,
            &request.aggregate_id.to_string(),
            after,
            request.page_size.get(),
        )
        .await
        .map_err(store_error)?;
        if events.is_empty() && after == 0 {
            return Err(not_found("aggregate", &request.aggregate_id.to_string()));
        }
        Ok(EventsPage {
            events,
            next_page_token: next_after
                .map(|after| self.tokens.issue(&listing, &after))
                .unwrap_or_default(),
        })
    }

    /// The events of one aggregate of `kind` up to `point`, or why there
    /// are none.
    async fn events_up_to(
        &self,
        kind: AggregateType,
        id: &str,
        point: Point,
    ) -> Result<Vec<StoredEvent>, AppError> {
        let events = reporting::events_up_to(&self.client, &self.table, id, point)
            .await
            .map_err(store_error)?;
        if events
            .first()
            .is_some_and(|first| first.event.aggregate_type() != kind)
        {
            return Err(not_found(kind.kind(), id));
        }
        match point {
            Point::Version(version) if events.last().map_or(0, |e| e.version) < version => {
                let Some(last) = events.last() else {
                    return Err(not_found(kind.kind(), id));
                };
                Err(AppError::Invalid(ValidationError::single(
                    "as_of.version",
                    format!("the {} is at version {}", kind.kind(), last.version),
                )))
            }
            Point::Time(time) if events.is_empty() => {
                // Either it never existed, or not yet at that time.
                let first =
                    reporting::events_up_to(&self.client, &self.table, id, Point::Version(1))
                        .await
                        .map_err(store_error)?;
                match first.first() {
                    Some(first) if first.event.aggregate_type() == kind => Err(AppError::refused(
                        Reason::AggregateNotFound,
                        format!(
                            "{} {id} did not exist yet at {}",
                            kind.kind(),
                            format_time(time)
                        ),
                    )
                    .with("aggregate_type", kind.kind())
                    .with("aggregate_id", id)
                    .with("create_time", format_time(first.occurred_at))),
                    _ => Err(not_found(kind.kind(), id)),
                }
            }
            _ => Ok(events),
        }
    }

    pub async fn user_as_of(&self, request: GetUserAsOf) -> Result<UserProfileRow, AppError> {
        let id = request.user_id.to_string();
        let events = self
            .events_up_to(AggregateType::User, &id, request.point)
            .await?;
        fold(&events, UserProfileRow::apply).ok_or_else(|| unreadable(&id))
    }

    pub async fn order_as_of(&self, request: GetOrderAsOf) -> Result<OrderSummaryRow, AppError> {
        let id = request.order_id.to_string();
        let events = self
            .events_up_to(AggregateType::Order, &id, request.point)
            .await?;
        fold(&events, OrderSummaryRow::apply).ok_or_else(|| unreadable(&id))
    }

    pub async fn events_by_type(&self, request: ListEventsByType) -> Result<EventsPage, AppError> {
        let listing = ByType(&request.range);
        let cursors = self.open(&listing, &request.page_token)?;
        if !self.migration.is_done() {
            return Err(AppError::refused(
                Reason::IndexMigrating,
                "the event-type index is being completed for events appended before its \
                 buckets; retry shortly",
            ));
        }
        let TypePage { events, next } = reporting::events_by_type(
            &self.client,
            &self.table,
            &request.range,
            cursors,
            request.page_size.get(),
        )
        .await
        .map_err(store_error)?;
        Ok(EventsPage {
            events,
            next_page_token: next
                .map(|cursors| self.tokens.issue(&listing, &cursors))
                .unwrap_or_default(),
        })
    }
}

fn not_found(kind: &str, id: &str) -> AppError {
    AppError::refused(Reason::AggregateNotFound, format!("{kind} {id} not found"))
        .with("aggregate_type", kind)
        .with("aggregate_id", id)
}

fn unreadable(id: &str) -> AppError {
    AppError::internal(format!("the events of {id} do not fold into a row"))
}

/// The row `events` fold into, one after another from none; `None` if one
/// of them does not apply (a gap, another aggregate's event).
fn fold<R>(
    events: &[StoredEvent],
    apply: impl Fn(Option<&R>, &StoredEvent) -> Applied<R>,
) -> Option<R> {
    let mut row = None;
    for event in events {
        match apply(row.as_ref(), event) {
            Applied::Next { row: next, .. } => row = Some(next),
            Applied::AlreadyApplied | Applied::Gap { .. } | Applied::Ignored => return None,
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use dynabridge_domain::{Email, Event, OrderStatus, UserId, UserName};

    fn stored(version: Version, event: Event) -> StoredEvent {
        StoredEvent {
            event_id: Uuid::new_v4(),
            version,
            occurred_at: Utc.timestamp_opt(1_700_000_000 + version, 0).unwrap(),
            request_id: format!("r{version}"),
            correlation_id: "c".into(),
            trace_parent: None,
            event,
        }
    }

    #[test]
    fn a_fold_applies_every_event_in_order() {
        let user_id = UserId::new_random();
        let events = vec![
            stored(
                1,
                Event::UserCreated {
                    user_id,
                    email: Email::parse("a@example.com").unwrap(),
                    name: UserName::parse("A").unwrap(),
                },
            ),
            stored(
                2,
                Event::UserProfileUpdated {
                    user_id,
                    name: Some(UserName::parse("B").unwrap()),
                    email: None,
                },
            ),
        ];
        let row = fold(&events, UserProfileRow::apply).unwrap();
        assert_eq!((row.name.as_str(), row.version), ("B", 2));
        assert_eq!(row.updated_at, events[1].occurred_at);
        let first = fold(&events[..1], UserProfileRow::apply).unwrap();
        assert_eq!((first.name.as_str(), first.version), ("A", 1));
    }

    #[test]
    fn a_fold_with_a_gap_or_a_foreign_event_is_none() {
        let user_id = UserId::new_random();
        let created = stored(
            1,
            Event::UserCreated {
                user_id,
                email: Email::parse("a@example.com").unwrap(),
                name: UserName::parse("A").unwrap(),
            },
        );
        let later = stored(
            3,
            Event::UserProfileUpdated {
                user_id,
                name: None,
                email: None,
            },
        );
        assert!(fold(&[created.clone(), later], UserProfileRow::apply).is_none());
        let order_event = stored(
            2,
            Event::OrderStatusUpdated {
                order_id: dynabridge_domain::OrderId::new_random(),
                status: OrderStatus::Processing,
                previous_status: OrderStatus::Created,
            },
        );
        assert!(fold(&[created, order_event], UserProfileRow::apply).is_none());
    }

    #[test]
    fn page_tokens_belong_to_their_query() {
        let tokens = PageTokens::new(&[7; 32]).unwrap();
        let id = Uuid::new_v4();
        let token = tokens.issue(&History(id), &5);
        assert_eq!(tokens.open(&History(id), &token), Ok(5));
        assert!(tokens.open(&History(Uuid::new_v4()), &token).is_err());
        let range = |event_type: &str| TypeRange {
            event_type: event_type.into(),
            start: None,
            end: None,
        };
        let cursors = vec![BucketCursor::Start; usize::from(EVENT_TYPE_BUCKETS)];
        let (orders, users) = (range("OrderCreated"), range("UserCreated"));
        let token = tokens.issue(&ByType(&orders), &cursors);
        assert_eq!(tokens.open(&ByType(&orders), &token), Ok(cursors));
        assert!(tokens.open(&ByType(&users), &token).is_err());
        let short = tokens.issue(&ByType(&orders), &vec![BucketCursor::Done]);
        assert!(tokens.open(&ByType(&orders), &short).is_err());
    }
}
