//! Catching up what the stream lost. DynamoDB keeps stream records for 24
//! hours; a projector down longer (or a shard read too slowly) finds its
//! checkpoint trimmed. The events committed in the gap are still in the
//! event store: [`CatchUpSource::events_between`] reads them back over the
//! gap's time window, through the event-type index, and the shard reader
//! applies and publishes them before it goes on from the oldest record the
//! stream still has.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dynabridge_domain::{Event, StoredEvent};
use dynabridge_event_store::reporting::{TypeRange, events_by_type};

use crate::error::StoreError;

/// Widens a trimmed window on both sides: an event's time is its command
/// service's clock, a stream record's the store's, and the two may differ.
/// An event caught up needlessly changes no read model (the version gate)
/// and is published again (delivery is at least once).
pub const MARGIN: Duration = Duration::from_secs(60);

/// Where events come from when the stream has lost them.
#[async_trait]
pub trait CatchUpSource: Send + Sync {
    /// Every event committed in `[from, to)` (`from` `None`: from the
    /// first), each aggregate's in version order.
    async fn events_between(
        &self,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}

/// The event store, read through its event-type index: every type, every
/// bucket, a page of a thousand at a time.
#[derive(Clone, Debug)]
pub struct EventStoreCatchUp {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl EventStoreCatchUp {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }
}

#[async_trait]
impl CatchUpSource for EventStoreCatchUp {
    async fn events_between(
        &self,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        const PAGE: usize = 1000;
        let mut events = Vec::new();
        for event_type in Event::TYPES {
            let range = TypeRange {
                event_type: event_type.to_owned(),
                start: from,
                end: Some(to),
            };
            let mut cursors = None;
            loop {
                crate::progress::beat();
                let page = events_by_type(&self.client, &self.table, &range, cursors, PAGE).await?;
                events.extend(page.events);
                match page.next {
                    Some(next) => cursors = Some(next),
                    None => break,
                }
            }
        }
        sort_for_projection(&mut events);
        Ok(events)
    }
}

/// Each aggregate's events in version order, the order the read models
/// need; aggregates by id.
pub fn sort_for_projection(events: &mut [StoredEvent]) {
    events.sort_by(|a, b| {
        (a.event.aggregate_id(), a.version).cmp(&(b.event.aggregate_id(), b.version))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{interleaved_events, user_events};

    #[test]
    fn each_aggregates_events_come_out_in_version_order() {
        let mut events = interleaved_events(5, 3);
        events.reverse();
        events.extend(user_events(2));
        sort_for_projection(&mut events);
        for pair in events.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.event.aggregate_id() == b.event.aggregate_id() {
                assert_eq!(b.version, a.version + 1);
            }
        }
    }
}
