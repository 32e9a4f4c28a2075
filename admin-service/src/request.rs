//! The requests of `AdminService`, parsed from their protobuf messages.
//!
//! Each message is destructured field by field, so that a field added to the
//! contract does not compile until it is handled here. Every bad field is
//! reported, not only the first.

use chrono::{DateTime, Utc};
use dynabridge::convert::timestamp_from_pb;
use dynabridge::pb;
use dynabridge_domain::{Event, OrderId, UserId, ValidationError};
use dynabridge_event_store::reporting::{Point, TypeRange};
use dynabridge_runtime::page_token::page_size;
use uuid::Uuid;

/// The number of events in a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(usize);

impl PageSize {
    pub const DEFAULT: usize = 100;
    pub const MAX: usize = 1000;

    fn parse(raw: i32) -> Result<Self, ValidationError> {
        page_size(raw, Self::DEFAULT, Self::MAX).map(Self)
    }

    pub fn get(self) -> usize {
        self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetAggregateHistory {
    pub aggregate_id: Uuid,
    pub page_size: PageSize,
    /// Empty for the first page.
    pub page_token: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetUserAsOf {
    pub user_id: UserId,
    pub point: Point,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOrderAsOf {
    pub order_id: OrderId,
    pub point: Point,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEventsByType {
    pub range: TypeRange,
    pub page_size: PageSize,
    /// Empty for the first page.
    pub page_token: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListParked {
    pub page_size: ParkedPageSize,
    pub page_token: String,
}

/// The number of parked aggregates in a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParkedPageSize(usize);

impl ParkedPageSize {
    pub const DEFAULT: usize = 20;
    pub const MAX: usize = 100;

    pub fn get(self) -> usize {
        self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryParked {
    pub aggregate_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipParked {
    pub aggregate_id: Uuid,
    pub reason: String,
}

/// A rebuild of the read models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuild {
    /// Parallel scan segments.
    pub segments: u32,
    /// Whether to serve the new generation when it is built.
    pub switch: bool,
    /// Events per scan page; `None`: DynamoDB's 1 MB page.
    pub page_size: Option<u32>,
}

/// The most events a rebuild's scan page may ask for.
pub const MAX_SCAN_PAGE: i32 = 1000;

/// A replay of a window's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayEvents {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Sorted, without repeats; empty: every type.
    pub event_types: Vec<String>,
    /// `None`: the service's default ([`ReplayEvents::resolve`]).
    pub source: Option<ReplaySource>,
    /// Rule names, sorted, without repeats; empty: every rule.
    pub rules: Vec<String>,
}

/// Where a replay's events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplaySource {
    EventStore,
    Archive,
}

impl ReplayEvents {
    /// The source, `default` when the request named none, and the checks
    /// that depend on it: an archive replay takes every type, rules only
    /// narrow an archive replay.
    pub fn resolve(mut self, default: ReplaySource) -> Result<Self, ValidationError> {
        let source = *self.source.get_or_insert(default);
        match source {
            ReplaySource::Archive if !self.event_types.is_empty() => Err(ValidationError::single(
                "event_types",
                "an archive replay delivers every type: leave event_types empty and narrow it with rules, or replay from the event store",
            )),
            ReplaySource::EventStore if !self.rules.is_empty() => Err(ValidationError::single(
                "rules",
                "only an archive replay is delivered to chosen rules; the event store's goes out to the bus as new entries",
            )),
            _ => Ok(self),
        }
    }
}

/// An EventBridge rule name: 1 to 64 of `A-Z a-z 0-9 . - _`.
fn rule_name(raw: &str) -> bool {
    (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The most scan segments a rebuild may ask for.
pub const MAX_SEGMENTS: i32 = 64;

/// The longest skip reason accepted.
pub const MAX_REASON_CHARS: usize = 500;

/// Collects every violation of a request's fields.
#[derive(Default)]
struct Fields(ValidationError);

impl Fields {
    fn take<T>(&mut self, result: Result<T, ValidationError>) -> Option<T> {
        self.0.check(result)
    }

    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ValidationError> {
        if !self.0.is_empty() {
            return Err(self.0);
        }
        // Every part parsed, so every part is there.
        build().ok_or_else(|| ValidationError::single("", "incomplete request"))
    }
}

fn aggregate_id(raw: &str) -> Result<Uuid, ValidationError> {
    Uuid::try_parse(raw)
        .map_err(|_| ValidationError::single("aggregate_id", "must be a UUID (a user or order id)"))
}

fn time(
    field: &str,
    at: Option<&pbjson_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, ValidationError> {
    match at {
        None => Ok(None),
        Some(at) => timestamp_from_pb(at)
            .map(Some)
            .ok_or_else(|| ValidationError::single(field, "is not a valid time")),
    }
}

fn point(as_of: Option<pb::AsOf>) -> Result<Point, ValidationError> {
    match as_of.and_then(|a| a.point) {
        None => Err(ValidationError::single(
            "as_of",
            "is required: a time or a version",
        )),
        Some(pb::as_of::Point::Version(v)) if v < 1 => Err(ValidationError::single(
            "as_of.version",
            "must be at least 1",
        )),
        Some(pb::as_of::Point::Version(v)) => Ok(Point::Version(v)),
        Some(pb::as_of::Point::Time(at)) => {
            time("as_of.time", Some(&at)).map(|t| Point::Time(t.unwrap_or_default()))
        }
    }
}

impl TryFrom<pb::GetAggregateHistoryRequest> for GetAggregateHistory {
    type Error = ValidationError;

    fn try_from(request: pb::GetAggregateHistoryRequest) -> Result<Self, Self::Error> {
        let pb::GetAggregateHistoryRequest {
            aggregate_id: id,
            page_size,
            page_token,
        } = request;
        let mut fields = Fields::default();
        let id = fields.take(aggregate_id(&id));
        let page_size = fields.take(PageSize::parse(page_size));
        fields.finish(|| {
            Some(Self {
                aggregate_id: id?,
                page_size: page_size?,
                page_token,
            })
        })
    }
}

impl TryFrom<pb::GetUserAsOfRequest> for GetUserAsOf {
    type Error = ValidationError;

    fn try_from(request: pb::GetUserAsOfRequest) -> Result<Self, Self::Error> {
        let pb::GetUserAsOfRequest { user_id, as_of } = request;
        let mut fields = Fields::default();
        let user_id = fields.take(UserId::parse("user_id", &user_id));
        let point = fields.take(point(as_of));
        fields.finish(|| {
            Some(Self {
                user_id: user_id?,
                point: point?,
            })
        })
    }
}

impl TryFrom<pb::GetOrderAsOfRequest> for GetOrderAsOf {
    type Error = ValidationError;

    fn try_from(request: pb::GetOrderAsOfRequest) -> Result<Self, Self::Error> {
        let pb::GetOrderAsOfRequest { order_id, as_of } = request;
        let mut fields = Fields::default();
        let order_id = fields.take(OrderId::parse("order_id", &order_id));
        let point = fields.take(point(as_of));
        fields.finish(|| {
            Some(Self {
                order_id: order_id?,
                point: point?,
            })
        })
    }
}

impl TryFrom<pb::ListEventsByTypeRequest> for ListEventsByType {
    type Error = ValidationError;

    fn try_from(request: pb::ListEventsByTypeRequest) -> Result<Self, Self::Error> {
        let pb::ListEventsByTypeRequest {
            event_type,
            start_time,
            end_time,
            page_size,
            page_token,
        } = request;
        let mut fields = Fields::default();
        let known = Event::TYPES.contains(&event_type.as_str());
        fields.take(if known {
            Ok(())
        } else {
            Err(ValidationError::single(
                "event_type",
                format!("must be one of {}", Event::TYPES.join(", ")),
            ))
        });
        let start = fields.take(time("start_time", start_time.as_ref()));
        let end = fields.take(time("end_time", end_time.as_ref()));
        if let (Some(Some(start)), Some(Some(end))) = (start, end)
            && end <= start
        {
            fields.take::<()>(Err(ValidationError::single(
                "end_time",
                "must be after start_time",
            )));
        }
        let page_size = fields.take(PageSize::parse(page_size));
        fields.finish(|| {
            Some(Self {
                range: TypeRange {
                    event_type,
                    start: start?,
                    end: end?,
                },
                page_size: page_size?,
                page_token,
            })
        })
    }
}

impl TryFrom<pb::ListParkedRequest> for ListParked {
    type Error = ValidationError;

    fn try_from(request: pb::ListParkedRequest) -> Result<Self, Self::Error> {
        let pb::ListParkedRequest {
            page_size: raw_size,
            page_token,
        } = request;
        Ok(Self {
            page_size: page_size(raw_size, ParkedPageSize::DEFAULT, ParkedPageSize::MAX)
                .map(ParkedPageSize)?,
            page_token,
        })
    }
}

impl TryFrom<pb::RetryParkedRequest> for RetryParked {
    type Error = ValidationError;

    fn try_from(request: pb::RetryParkedRequest) -> Result<Self, Self::Error> {
        let pb::RetryParkedRequest { aggregate_id: id } = request;
        Ok(Self {
            aggregate_id: aggregate_id(&id)?,
        })
    }
}

impl TryFrom<pb::SkipParkedRequest> for SkipParked {
    type Error = ValidationError;

    fn try_from(request: pb::SkipParkedRequest) -> Result<Self, Self::Error> {
        let pb::SkipParkedRequest {
            aggregate_id: id,
            reason,
        } = request;
        let mut fields = Fields::default();
        let id = fields.take(aggregate_id(&id));
        let reason = reason.trim().to_owned();
        let chars = reason.chars().count();
        fields.take(if (1..=MAX_REASON_CHARS).contains(&chars) {
            Ok(())
        } else {
            Err(ValidationError::single(
                "reason",
                format!("is required: 1 to {MAX_REASON_CHARS} characters saying why"),
            ))
        });
        fields.finish(|| {
            Some(Self {
                aggregate_id: id?,
                reason,
            })
        })
    }
}

impl TryFrom<pb::RebuildReadModelsRequest> for Rebuild {
    type Error = ValidationError;

    fn try_from(request: pb::RebuildReadModelsRequest) -> Result<Self, Self::Error> {
        let pb::RebuildReadModelsRequest {
            segments,
            no_switch,
            page_size,
        } = request;
        let mut fields = Fields::default();
        let segments = fields.take(match segments {
            0 => Ok(crate::generations::DEFAULT_SEGMENTS),
            1..=MAX_SEGMENTS => Ok(segments.unsigned_abs()),
            _ => Err(ValidationError::single(
                "segments",
                format!("must be 1 to {MAX_SEGMENTS}, or 0 for the default"),
            )),
        });
        let page_size = fields.take(match page_size {
            0 => Ok(None),
            1..=MAX_SCAN_PAGE => Ok(Some(page_size.unsigned_abs())),
            _ => Err(ValidationError::single(
                "page_size",
                format!("must be 1 to {MAX_SCAN_PAGE}, or 0 for DynamoDB's 1 MB page"),
            )),
        });
        fields.finish(|| {
            Some(Self {
                segments: segments?,
                switch: !no_switch,
                page_size: page_size?,
            })
        })
    }
}

impl TryFrom<pb::ReplayEventsRequest> for ReplayEvents {
    type Error = ValidationError;

    fn try_from(request: pb::ReplayEventsRequest) -> Result<Self, Self::Error> {
        let pb::ReplayEventsRequest {
            start_time,
            end_time,
            event_types,
            source,
            rules,
        } = request;
        let mut fields = Fields::default();
        let source = fields.take(match pb::ReplaySource::try_from(source) {
            Ok(pb::ReplaySource::Unspecified) => Ok(None),
            Ok(pb::ReplaySource::EventStore) => Ok(Some(ReplaySource::EventStore)),
            Ok(pb::ReplaySource::Archive) => Ok(Some(ReplaySource::Archive)),
            Err(_) => Err(ValidationError::single(
                "source",
                "must be REPLAY_SOURCE_EVENT_STORE or REPLAY_SOURCE_ARCHIVE (or unset)",
            )),
        });
        for (i, rule) in rules.iter().enumerate() {
            if !rule_name(rule) {
                fields.take::<()>(Err(ValidationError::single(
                    format!("rules[{i}]"),
                    "must be a rule's name: 1 to 64 of A-Z, a-z, 0-9, '.', '-' or '_'",
                )));
            }
        }
        let mut rules = rules;
        rules.sort();
        rules.dedup();
        let required = |field: &str, at: Option<&pbjson_types::Timestamp>| {
            time(field, at)?.ok_or_else(|| ValidationError::single(field, "is required"))
        };
        let start = fields.take(required("start_time", start_time.as_ref()));
        let end = fields.take(required("end_time", end_time.as_ref()));
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            fields.take::<()>(Err(ValidationError::single(
                "end_time",
                "must be after start_time",
            )));
        }
        for (i, event_type) in event_types.iter().enumerate() {
            if !Event::TYPES.contains(&event_type.as_str()) {
                fields.take::<()>(Err(ValidationError::single(
                    format!("event_types[{i}]"),
                    format!("must be one of {}", Event::TYPES.join(", ")),
                )));
            }
        }
        let mut event_types = event_types;
        event_types.sort();
        event_types.dedup();
        fields.finish(|| {
            Some(Self {
                start: start?,
                end: end?,
                event_types,
                source: source?,
                rules,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_needs_a_window_and_known_types() {
        let at = |seconds| Some(pbjson_types::Timestamp { seconds, nanos: 0 });
        let parsed = ReplayEvents::try_from(pb::ReplayEventsRequest {
            start_time: at(100),
            end_time: at(200),
            event_types: vec![
                "UserCreated".into(),
                "OrderCreated".into(),
                "UserCreated".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(parsed.event_types, ["OrderCreated", "UserCreated"]);
        let refused = ReplayEvents::try_from(pb::ReplayEventsRequest {
            start_time: at(200),
            end_time: at(100),
            event_types: vec!["Nope".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(fields(refused), ["end_time", "event_types[0]"]);
        let refused = ReplayEvents::try_from(pb::ReplayEventsRequest::default()).unwrap_err();
        assert_eq!(fields(refused), ["start_time", "end_time"]);
    }

    #[test]
    fn a_replay_source_decides_what_narrows_it() {
        let at = |seconds| Some(pbjson_types::Timestamp { seconds, nanos: 0 });
        let window = || pb::ReplayEventsRequest {
            start_time: at(100),
            end_time: at(200),
            ..Default::default()
        };
        let refused = ReplayEvents::try_from(pb::ReplayEventsRequest {
            source: 7,
            rules: vec!["ok-rule".into(), "no spaces".into(), "x".repeat(65)],
            ..window()
        })
        .unwrap_err();
        assert_eq!(fields(refused), ["source", "rules[1]", "rules[2]"]);

        let to_rules = ReplayEvents::try_from(pb::ReplayEventsRequest {
            rules: vec!["b".into(), "a".into(), "b".into()],
            ..window()
        })
        .unwrap();
        assert_eq!(to_rules.source, None);
        assert_eq!(to_rules.rules, ["a", "b"]);
        let archive = to_rules.clone().resolve(ReplaySource::Archive).unwrap();
        assert_eq!(archive.source, Some(ReplaySource::Archive));
        let refused = to_rules.resolve(ReplaySource::EventStore).unwrap_err();
        assert_eq!(fields(refused), ["rules"]);

        let typed = ReplayEvents::try_from(pb::ReplayEventsRequest {
            event_types: vec!["OrderCreated".into()],
            source: pb::ReplaySource::Archive.into(),
            ..window()
        })
        .unwrap();
        // Named in the request: the default does not change it.
        let refused = typed.resolve(ReplaySource::EventStore).unwrap_err();
        assert_eq!(fields(refused), ["event_types"]);
    }

    #[test]
    fn a_rebuild_takes_1_to_64_segments_or_the_default() {
        let parse = |segments, page_size| {
            Rebuild::try_from(pb::RebuildReadModelsRequest {
                segments,
                no_switch: false,
                page_size,
            })
        };
        assert_eq!(parse(0, 0).unwrap().segments, 4);
        assert_eq!(parse(0, 0).unwrap().page_size, None);
        assert_eq!(parse(64, 1000).unwrap().segments, 64);
        assert_eq!(parse(1, 1).unwrap().page_size, Some(1));
        assert!(parse(0, 0).unwrap().switch);
        for bad in [-1, 65] {
            assert_eq!(fields(parse(bad, 0).unwrap_err()), vec!["segments"]);
        }
        assert_eq!(
            fields(parse(65, 1001).unwrap_err()),
            vec!["segments", "page_size"]
        );
    }

    fn fields(err: ValidationError) -> Vec<String> {
        err.violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_skip_needs_a_reason_and_a_retry_an_id() {
        let id = Uuid::new_v4().to_string();
        let err = SkipParked::try_from(pb::SkipParkedRequest {
            aggregate_id: "x".into(),
            reason: "  ".into(),
        })
        .unwrap_err();
        assert_eq!(fields(err), ["aggregate_id", "reason"]);
        let err = SkipParked::try_from(pb::SkipParkedRequest {
            aggregate_id: id.clone(),
            reason: "x".repeat(MAX_REASON_CHARS + 1),
        })
        .unwrap_err();
        assert_eq!(fields(err), ["reason"]);
        let ok = SkipParked::try_from(pb::SkipParkedRequest {
            aggregate_id: id.clone(),
            reason: " the payload is test data \n".into(),
        })
        .unwrap();
        assert_eq!(ok.reason, "the payload is test data");
        assert_eq!(
            fields(RetryParked::try_from(pb::RetryParkedRequest::default()).unwrap_err()),
            ["aggregate_id"]
        );
        assert_eq!(
            fields(
                ListParked::try_from(pb::ListParkedRequest {
                    page_size: 101,
                    page_token: String::new()
                })
                .unwrap_err()
            ),
            ["page_size"]
        );
    }

    #[test]
    fn a_history_needs_a_uuid_and_a_page_size_in_range() {
        let err = GetAggregateHistory::try_from(pb::GetAggregateHistoryRequest {
            aggregate_id: "not-a-uuid".into(),
            page_size: 1001,
            page_token: String::new(),
        })
        .unwrap_err();
        assert_eq!(fields(err), ["aggregate_id", "page_size"]);
        let ok = GetAggregateHistory::try_from(pb::GetAggregateHistoryRequest {
            aggregate_id: Uuid::new_v4().to_string(),
            page_size: 0,
            page_token: String::new(),
        })
        .unwrap();
        assert_eq!(ok.page_size.get(), PageSize::DEFAULT);
    }

    #[test]
    fn as_of_is_required_and_a_version_is_at_least_one() {
        let user_id = UserId::new_random().to_string();
        let request = |as_of| pb::GetUserAsOfRequest {
            user_id: user_id.clone(),
            as_of,
        };
        assert_eq!(
            fields(GetUserAsOf::try_from(request(None)).unwrap_err()),
            ["as_of"]
        );
        let version = |v| {
            Some(pb::AsOf {
                point: Some(pb::as_of::Point::Version(v)),
            })
        };
        assert_eq!(
            fields(GetUserAsOf::try_from(request(version(0))).unwrap_err()),
            ["as_of.version"]
        );
        assert_eq!(
            GetUserAsOf::try_from(request(version(3))).unwrap().point,
            Point::Version(3)
        );
        let bad_time = Some(pb::AsOf {
            point: Some(pb::as_of::Point::Time(pbjson_types::Timestamp {
                seconds: 0,
                nanos: -1,
            })),
        });
        assert_eq!(
            fields(GetUserAsOf::try_from(request(bad_time)).unwrap_err()),
            ["as_of.time"]
        );
    }

    #[test]
    fn an_order_as_of_names_its_id() {
        let err = GetOrderAsOf::try_from(pb::GetOrderAsOfRequest {
            order_id: String::new(),
            as_of: None,
        })
        .unwrap_err();
        assert_eq!(fields(err), ["order_id", "as_of"]);
    }

    #[test]
    fn a_listing_needs_a_known_type_and_an_ordered_range() {
        let at = |seconds| Some(pbjson_types::Timestamp { seconds, nanos: 0 });
        let err = ListEventsByType::try_from(pb::ListEventsByTypeRequest {
            event_type: "OrderShipped".into(),
            start_time: at(100),
            end_time: at(100),
            page_size: -1,
            page_token: String::new(),
        })
        .unwrap_err();
        assert_eq!(fields(err), ["event_type", "end_time", "page_size"]);
        let ok = ListEventsByType::try_from(pb::ListEventsByTypeRequest {
            event_type: "OrderCreated".into(),
            start_time: at(100),
            end_time: None,
            page_size: 5,
            page_token: String::new(),
        })
        .unwrap();
        assert_eq!(ok.range.end, None);
        assert_eq!(ok.range.start.map(|t| t.timestamp()), Some(100));
        assert_eq!(ok.page_size.get(), 5);
    }
}
