//! Replays of a window's events to the bus (`ReplayEvents`, `GetReplay`):
//! the admin service records what is asked for in the replays table, and
//! the projector, which holds the publisher, carries it out and records
//! its progress there (see the projector's `replay` module).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::Utc;
use dynabridge::convert::{format_time, parse_time, timestamp_to_pb};
use dynabridge::pb;
use dynabridge::pb::ErrorReason as Reason;
use dynabridge::schema::replays as attr;
use dynabridge_aws::item::{Item, get_n, get_s};
use dynabridge_domain::ValidationError;
use dynabridge_runtime::error::{AppError, from_sdk_error};
use uuid::Uuid;

use crate::request::ReplayEvents;

/// The replays table, as the admin service uses it.
#[derive(Clone, Debug)]
pub struct Replays {
    client: Client,
    table: String,
}

fn state_of(raw: &str) -> pb::ReplayState {
    match raw {
        attr::STATE_PENDING => pb::ReplayState::Pending,
        attr::STATE_RUNNING => pb::ReplayState::Running,
        attr::STATE_COMPLETED => pb::ReplayState::Completed,
        attr::STATE_FAILED => pb::ReplayState::Failed,
        _ => pb::ReplayState::Unspecified,
    }
}

fn replay_of(item: &Item) -> pb::Replay {
    let time = |name| {
        get_s(item, name)
            .ok()
            .and_then(parse_time)
            .map(timestamp_to_pb)
    };
    let mut event_types = match item.get(attr::EVENT_TYPES) {
        Some(AttributeValue::Ss(types)) => types.clone(),
        _ => Vec::new(),
    };
    event_types.sort();
    pb::Replay {
        replay_id: get_s(item, attr::REPLAY_ID).unwrap_or_default().to_owned(),
        state: state_of(get_s(item, attr::STATE).unwrap_or_default()).into(),
        start_time: time(attr::START_TIME),
        end_time: time(attr::END_TIME),
        event_types,
        events_published: get_n(item, attr::PUBLISHED).unwrap_or_default(),
        published_through_time: time(attr::CURSOR),
        request_time: time(attr::REQUESTED_AT),
        finish_time: time(attr::FINISHED_AT),
        error: get_s(item, attr::ERROR).unwrap_or_default().to_owned(),
    }
}

impl Replays {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// Records a replay for the projector to carry out.
    pub async fn start(&self, request: ReplayEvents) -> Result<pb::Replay, AppError> {
        let id = Uuid::now_v7().to_string();
        let mut item: Item = HashMap::from([
            (attr::REPLAY_ID.to_owned(), AttributeValue::S(id.clone())),
            (
                attr::STATE.to_owned(),
                AttributeValue::S(attr::STATE_PENDING.to_owned()),
            ),
            (
                attr::START_TIME.to_owned(),
                AttributeValue::S(format_time(request.start)),
            ),
            (
                attr::END_TIME.to_owned(),
                AttributeValue::S(format_time(request.end)),
            ),
            (attr::PUBLISHED.to_owned(), AttributeValue::N("0".into())),
            (
                attr::REQUESTED_AT.to_owned(),
                AttributeValue::S(format_time(Utc::now())),
            ),
        ]);
        if !request.event_types.is_empty() {
            item.insert(
                attr::EVENT_TYPES.to_owned(),
                AttributeValue::Ss(request.event_types.clone()),
            );
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::REPLAY_ID)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error("recording a replay", e))?;
        tracing::info!(replay_id = %id, start = %request.start, end = %request.end, types = ?request.event_types, "replay asked for");
        Ok(replay_of(&item))
    }

    /// A replay as the projector last recorded it.
    pub async fn get(&self, replay_id: &str) -> Result<pb::Replay, AppError> {
        let not_found = || {
            AppError::refused(
                Reason::ReplayNotFound,
                format!("there is no replay {replay_id}"),
            )
            .with("replay_id", replay_id)
        };
        if Uuid::try_parse(replay_id).is_err() {
            return Err(AppError::Invalid(ValidationError::single(
                "replay_id",
                "must be a replay's id (a UUID, as ReplayEvents answered)",
            )));
        }
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::REPLAY_ID, AttributeValue::S(replay_id.to_owned()))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error("reading a replay", e))?
            .item
            .ok_or_else(not_found)?;
        Ok(replay_of(&item))
    }
}
