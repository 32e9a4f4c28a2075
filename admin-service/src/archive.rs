//! Replays from the event bus's archive: EventBridge's own `StartReplay`,
//! to the bus, to every rule or to chosen ones, and its progress through
//! `DescribeReplay`. The archived entries are the originals; EventBridge
//! marks each replayed one with a top-level `replay-name`.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::types::{ReplayDestination, ReplayState};
use aws_smithy_types::DateTime as AwsTime;
use chrono::{DateTime, Utc};
use dynabridge::pb;
use dynabridge::pb::ErrorReason as Reason;
use dynabridge_domain::ValidationError;
use dynabridge_runtime::error::{AppError, from_sdk_error};
use uuid::Uuid;

use crate::request::ReplayEvents;

/// The bus and archive the admin service replays from.
#[derive(Clone, Debug)]
pub struct Archive {
    client: Client,
    bus: String,
    archive: String,
    /// Starts every replay's name, so that the role may describe exactly
    /// its own replays.
    prefix: String,
}

/// Where an archive replay stands, as EventBridge says.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveProgress {
    pub state: pb::ReplayState,
    pub replayed_through: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub reason: String,
}

fn aws_time(at: DateTime<Utc>) -> AwsTime {
    AwsTime::from_millis(at.timestamp_millis())
}

fn chrono_time(at: &AwsTime) -> Option<DateTime<Utc>> {
    at.to_millis()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
}

fn not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ResourceNotFoundException")
}

impl Archive {
    pub fn new(client: Client, bus: String, archive: String, prefix: &str) -> Self {
        Self {
            client,
            bus,
            archive,
            prefix: prefix.chars().take(31).collect(),
        }
    }

    /// The EventBridge replay's name for the replay `id`: at most 64
    /// characters, the table prefix first.
    pub fn replay_name(&self, id: Uuid) -> String {
        format!("{}-{}", self.prefix, id.simple())
    }

    /// Starts an EventBridge replay of the request's window; answers its
    /// name.
    pub async fn start(&self, id: Uuid, request: &ReplayEvents) -> Result<String, AppError> {
        let archive = self
            .client
            .describe_archive()
            .archive_name(&self.archive)
            .send()
            .await
            .map_err(|err| {
                if not_found(&err) {
                    self.unavailable(format!("the bus has no archive {}", self.archive))
                } else {
                    from_sdk_error("describing the archive", err)
                }
            })?;
        let (Some(archive_arn), Some(bus_arn)) = (archive.archive_arn, archive.event_source_arn)
        else {
            return Err(AppError::internal(
                "the archive was described without its ARNs",
            ));
        };
        let mut filters = Vec::with_capacity(request.rules.len());
        for (i, rule) in request.rules.iter().enumerate() {
            let described = self
                .client
                .describe_rule()
                .name(rule)
                .event_bus_name(&self.bus)
                .send()
                .await
                .map_err(|err| {
                    if not_found(&err) {
                        AppError::Invalid(ValidationError::single(
                            format!("rules[{i}]"),
                            format!("the bus {} has no rule {rule}", self.bus),
                        ))
                    } else {
                        from_sdk_error("describing a rule", err)
                    }
                })?;
            filters.push(described.arn.ok_or_else(|| {
                AppError::internal(format!("rule {rule} was described without its ARN"))
            })?);
        }
        let name = self.replay_name(id);
        let destination = ReplayDestination::builder()
            .arn(bus_arn)
            .set_filter_arns((!filters.is_empty()).then_some(filters))
            .build()
            .map_err(|e| AppError::internal(e.to_string()))?;
        self.client
            .start_replay()
            .replay_name(&name)
            .description(format!("dynabridge replay {id}"))
            .event_source_arn(archive_arn)
            .event_start_time(aws_time(request.start))
            .event_end_time(aws_time(request.end))
            .destination(destination)
            .send()
            .await
            .map_err(|err| from_sdk_error("starting an archive replay", err))?;
        Ok(name)
    }

    /// The replay `name`, as EventBridge reports it.
    pub async fn progress(&self, name: &str) -> Result<ArchiveProgress, AppError> {
        let described = match self.client.describe_replay().replay_name(name).send().await {
            Ok(described) => described,
            Err(err) if not_found(&err) => {
                return Ok(ArchiveProgress {
                    state: pb::ReplayState::Failed,
                    replayed_through: None,
                    finished_at: None,
                    reason: format!("EventBridge has no replay {name} (any more)"),
                });
            }
            Err(err) => return Err(from_sdk_error("describing an archive replay", err)),
        };
        let reason = described.state_reason.clone().unwrap_or_default();
        let state = match described.state {
            Some(ReplayState::Starting) => pb::ReplayState::Pending,
            Some(ReplayState::Running | ReplayState::Cancelling) => pb::ReplayState::Running,
            Some(ReplayState::Completed) => pb::ReplayState::Completed,
            Some(ReplayState::Cancelled | ReplayState::Failed) => pb::ReplayState::Failed,
            _ => pb::ReplayState::Unspecified,
        };
        let reason = match (state, described.state) {
            (pb::ReplayState::Failed, Some(ReplayState::Cancelled)) if reason.is_empty() => {
                "cancelled".to_owned()
            }
            _ => reason,
        };
        Ok(ArchiveProgress {
            state,
            replayed_through: described
                .event_last_replayed_time
                .as_ref()
                .and_then(chrono_time),
            finished_at: described.replay_end_time.as_ref().and_then(chrono_time),
            reason,
        })
    }

    fn unavailable(&self, message: String) -> AppError {
        AppError::refused(Reason::ArchiveUnavailable, message)
            .with("archive", self.archive.as_str())
    }
}
