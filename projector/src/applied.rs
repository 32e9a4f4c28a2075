//! The last event applied to each read model, for the admin service's
//! projection status: noted in memory as the writer applies events, and
//! written every second (when it moved) to an item of the checkpoints
//! table per model (`StreamArn` = `read-models`, `ShardId` = the model's
//! name). The write is conditional on the commit time, so that several
//! projectors move it only forward.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, Utc};
use dynabridge::convert::format_time;
use dynabridge::schema::checkpoints as attr;
use dynabridge_aws::error::CallError;
use dynabridge_domain::StoredEvent;
use dynabridge_read_models::row::Model;

use crate::control::Shutdown;

/// How often the notes are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// An event applied, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedEvent {
    pub event_id: String,
    pub event_type: &'static str,
    pub aggregate_id: String,
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
    pub applied_at: DateTime<Utc>,
}

/// The latest event (by commit time) applied to each model, and whether
/// it is written yet.
#[derive(Debug, Default)]
pub struct LastApplied {
    latest: Mutex<HashMap<Model, (AppliedEvent, bool)>>,
}

/// The name of a model's item.
pub fn model_name(model: Model) -> &'static str {
    match model {
        Model::UserProfiles => attr::USER_PROFILES_MODEL,
        Model::OrderSummaries => attr::ORDER_SUMMARIES_MODEL,
        Model::Products => attr::PRODUCTS_MODEL,
        Model::Purchases => attr::PURCHASES_MODEL,
    }
}

impl LastApplied {
    /// Notes that `event` is applied to every generation written.
    pub fn note(&self, event: &StoredEvent) {
        let Some(model) = Model::of(event) else {
            return;
        };
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if latest
            .get(&model)
            .is_some_and(|(seen, _)| seen.occurred_at > event.occurred_at)
        {
            return;
        }
        latest.insert(
            model,
            (
                AppliedEvent {
                    event_id: event.event_id.to_string(),
                    event_type: event.event.event_type(),
                    aggregate_id: event.event.aggregate_id().to_string(),
                    version: event.version,
                    occurred_at: event.occurred_at,
                    applied_at: Utc::now(),
                },
                false,
            ),
        );
    }

    /// The notes not written yet, marked written.
    fn take_unwritten(&self) -> Vec<(Model, AppliedEvent)> {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .iter_mut()
            .filter(|(_, (_, written))| !*written)
            .map(|(model, (applied, written))| {
                *written = true;
                (*model, applied.clone())
            })
            .collect()
    }

    /// Writes the notes every second until `stop`, and once more then. A
    /// failed write is tried again at the next round.
    pub async fn flush_until(&self, client: Client, table: String, stop: Shutdown) {
        loop {
            let running = stop.sleep(FLUSH_EVERY).await;
            for (model, applied) in self.take_unwritten() {
                if let Err(err) = write(&client, &table, model, &applied).await {
                    tracing::debug!(error = %err, "recording the last event applied failed; trying again");
                    let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((current, written)) = latest.get_mut(&model)
                        && current.event_id == applied.event_id
                    {
                        *written = false;
                    }
                }
            }
            if !running {
                return;
            }
        }
    }
}

async fn write(
    client: &Client,
    table: &str,
    model: Model,
    applied: &AppliedEvent,
) -> Result<(), CallError> {
    let result = client
        .update_item()
        .table_name(table)
        .key(
            attr::STREAM_ARN,
            AttributeValue::S(attr::READ_MODELS.into()),
        )
        .key(attr::SHARD_ID, AttributeValue::S(model_name(model).into()))
        .update_expression(
            "SET #id = :id, #type = :type, #aggregate = :aggregate, #version = :version, \
             #time = :time, #at = :at",
        )
        .condition_expression("attribute_not_exists(#time) OR #time <= :time")
        .expression_attribute_names("#id", attr::LAST_EVENT_ID)
        .expression_attribute_names("#type", attr::LAST_EVENT_TYPE)
        .expression_attribute_names("#aggregate", attr::LAST_AGGREGATE_ID)
        .expression_attribute_names("#version", attr::LAST_VERSION)
        .expression_attribute_names("#time", attr::LAST_EVENT_TIME)
        .expression_attribute_names("#at", attr::UPDATED_AT)
        .expression_attribute_values(":id", AttributeValue::S(applied.event_id.clone()))
        .expression_attribute_values(":type", AttributeValue::S(applied.event_type.into()))
        .expression_attribute_values(
            ":aggregate",
            AttributeValue::S(applied.aggregate_id.clone()),
        )
        .expression_attribute_values(":version", AttributeValue::N(applied.version.to_string()))
        .expression_attribute_values(":time", AttributeValue::S(format_time(applied.occurred_at)))
        .expression_attribute_values(":at", AttributeValue::S(format_time(applied.applied_at)))
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        // Another projector recorded a later event: nothing to do.
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(())
        }
        Err(err) => Err(CallError::from_sdk("recording the last event applied", err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use dynabridge_domain::{Email, Event, UserId, UserName};

    fn user_event(second: u32) -> StoredEvent {
        StoredEvent {
            event_id: uuid::Uuid::new_v4(),
            version: 1,
            occurred_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap(),
            request_id: "r".into(),
            correlation_id: "c".into(),
            trace_parent: None,
            event: Event::UserCreated {
                user_id: UserId::new_random(),
                email: Email::parse("a@example.com").unwrap(),
                name: UserName::parse("A").unwrap(),
            },
        }
    }

    #[test]
    fn the_latest_by_commit_time_is_kept_and_taken_once() {
        let last = LastApplied::default();
        let (early, late) = (user_event(1), user_event(2));
        last.note(&late);
        // A redelivery of an earlier event does not move it back.
        last.note(&early);
        let taken = last.take_unwritten();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, Model::UserProfiles);
        assert_eq!(taken[0].1.event_id, late.event_id.to_string());
        assert!(last.take_unwritten().is_empty(), "written once");
    }
}
