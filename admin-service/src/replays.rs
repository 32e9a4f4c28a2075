//! Replays of a window's events to the bus (`ReplayEvents`, `GetReplay`),
//! recorded in the replays table. From the event store, the projector,
//! which holds the publisher, carries one out and records its progress
//! there (see the projector's `replay` module); from the bus's archive,
//! EventBridge does, and reports its progress ([`crate::archive`]).

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

use crate::archive::Archive;
use crate::request::{ReplayEvents, ReplaySource};

/// The replays table, as the admin service uses it, and the archive to
/// replay from when there is a bus.
#[derive(Clone, Debug)]
pub struct Replays {
    client: Client,
    table: String,
    archive: Option<Archive>,
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
    let set = |name| {
        let mut values = match item.get(name) {
            Some(AttributeValue::Ss(values)) => values.clone(),
            _ => Vec::new(),
        };
        values.sort();
        values
    };
    let archive = get_s(item, attr::STATE).ok() == Some(attr::STATE_ARCHIVE);
    pb::Replay {
        replay_id: get_s(item, attr::REPLAY_ID).unwrap_or_default().to_owned(),
        state: state_of(get_s(item, attr::STATE).unwrap_or_default()).into(),
        start_time: time(attr::START_TIME),
        end_time: time(attr::END_TIME),
        event_types: set(attr::EVENT_TYPES),
        events_published: get_n(item, attr::PUBLISHED).unwrap_or_default(),
        published_through_time: time(attr::CURSOR),
        request_time: time(attr::REQUESTED_AT),
        finish_time: time(attr::FINISHED_AT),
        error: get_s(item, attr::ERROR).unwrap_or_default().to_owned(),
        source: if archive {
            pb::ReplaySource::Archive
        } else {
            pb::ReplaySource::EventStore
        }
        .into(),
        rules: set(attr::RULES),
        archive_replay_name: get_s(item, attr::ARCHIVE_REPLAY_NAME)
            .unwrap_or_default()
            .to_owned(),
    }
}

impl Replays {
    pub fn new(client: Client, table: String, archive: Option<Archive>) -> Self {
        Self {
            client,
            table,
            archive,
        }
    }

    /// Records a replay for the projector to carry out, or starts one of
    /// the archive and records it.
    pub async fn start(&self, request: ReplayEvents) -> Result<pb::Replay, AppError> {
        let default = if self.archive.is_some() {
            ReplaySource::Archive
        } else {
            ReplaySource::EventStore
        };
        let request = request.resolve(default).map_err(AppError::Invalid)?;
        let uuid = Uuid::now_v7();
        let id = uuid.to_string();
        let archive_name = match request.source {
            Some(ReplaySource::Archive) => {
                let archive = self.archive.as_ref().ok_or_else(|| {
                    AppError::refused(
                        Reason::ArchiveUnavailable,
                        "the admin service has no event bus (--event-bus), so no archive to replay",
                    )
                })?;
                Some(archive.start(uuid, &request).await?)
            }
            _ => None,
        };
        let state = if archive_name.is_some() {
            attr::STATE_ARCHIVE
        } else {
            attr::STATE_PENDING
        };
        let mut item: Item = HashMap::from([
            (attr::REPLAY_ID.to_owned(), AttributeValue::S(id.clone())),
            (attr::STATE.to_owned(), AttributeValue::S(state.to_owned())),
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
        if !request.rules.is_empty() {
            item.insert(
                attr::RULES.to_owned(),
                AttributeValue::Ss(request.rules.clone()),
            );
        }
        if let Some(name) = &archive_name {
            item.insert(
                attr::ARCHIVE_REPLAY_NAME.to_owned(),
                AttributeValue::S(name.clone()),
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
        tracing::info!(replay_id = %id, start = %request.start, end = %request.end, types = ?request.event_types, rules = ?request.rules, archive_replay = archive_name.as_deref(), "replay asked for");
        self.with_progress(replay_of(&item)).await
    }

    /// An archive replay with EventBridge's word on its progress.
    async fn with_progress(&self, mut replay: pb::Replay) -> Result<pb::Replay, AppError> {
        if replay.source != i32::from(pb::ReplaySource::Archive) {
            return Ok(replay);
        }
        let Some(archive) = &self.archive else {
            replay.error =
                "the admin service has no event bus (--event-bus) to ask about it".into();
            return Ok(replay);
        };
        let progress = archive.progress(&replay.archive_replay_name).await?;
        replay.state = progress.state.into();
        replay.published_through_time = progress.replayed_through.map(timestamp_to_pb);
        replay.finish_time = progress.finished_at.map(timestamp_to_pb);
        replay.error = progress.reason;
        Ok(replay)
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
        self.with_progress(replay_of(&item)).await
    }
}
