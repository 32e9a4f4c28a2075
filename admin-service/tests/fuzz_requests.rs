//! Fuzzing of what the admin service does with a request before it reads
//! the store: decoding and the request's parse. (A proptest over bytes: no
//! nightly toolchain, so no cargo-fuzz.)
//!
//! For every RPC that takes fields, whatever the bytes: no panic, and the
//! answer is a success or `INVALID_ARGUMENT`, reason `MALFORMED_MESSAGE`
//! (does not decode) or `INVALID_FIELD` (decodes, does not parse), every
//! field violation naming a field of the request. Three sources of bytes:
//! arbitrary bytes, well-formed messages of arbitrary field values, and a
//! valid request's encoding, mutated. Cases: `PROPTEST_CASES`, else 512.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use admin_service::request::{
    GetAggregateHistory, GetOrderAsOf, GetUserAsOf, ListEventsByType, ListParked, Rebuild,
    ReplayEvents, RetryParked, SkipParked,
};
use dynabridge::codec::malformed_request;
use dynabridge::pb;
use dynabridge::pb::ErrorReason;
use dynabridge_domain::ValidationError;
use dynabridge_runtime::error::AppError;
use dynabridge_testkit::fuzz;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What the server answers `bytes` with, up to its first read: prost's
/// decode (as `dynabridge::codec` does), then the parse, each error through
/// the real conversions.
fn answer<Req: Message + Default, T>(
    bytes: &[u8],
    parse: impl FnOnce(Req) -> Result<T, ValidationError>,
) -> Result<(), Status> {
    let req = Req::decode(bytes).map_err(|err| malformed_request(&err))?;
    parse(req).map_err(AppError::from)?;
    Ok(())
}

/// An RPC: its answer, and the top-level fields of its request.
struct Rpc {
    name: &'static str,
    answer: fn(&[u8]) -> Result<(), Status>,
    fields: &'static [&'static str],
}

const RPCS: &[Rpc] = &[
    Rpc {
        name: "GetAggregateHistory",
        answer: |b| {
            answer(b, |r: pb::GetAggregateHistoryRequest| {
                GetAggregateHistory::try_from(r)
            })
        },
        fields: &["aggregate_id", "page_size", "page_token"],
    },
    Rpc {
        name: "GetUserAsOf",
        answer: |b| answer(b, |r: pb::GetUserAsOfRequest| GetUserAsOf::try_from(r)),
        fields: &["user_id", "as_of"],
    },
    Rpc {
        name: "GetOrderAsOf",
        answer: |b| answer(b, |r: pb::GetOrderAsOfRequest| GetOrderAsOf::try_from(r)),
        fields: &["order_id", "as_of"],
    },
    Rpc {
        name: "ListEventsByType",
        answer: |b| {
            answer(b, |r: pb::ListEventsByTypeRequest| {
                ListEventsByType::try_from(r)
            })
        },
        fields: &[
            "event_type",
            "start_time",
            "end_time",
            "page_size",
            "page_token",
        ],
    },
    Rpc {
        name: "ListParked",
        answer: |b| answer(b, |r: pb::ListParkedRequest| ListParked::try_from(r)),
        fields: &["page_size", "page_token"],
    },
    Rpc {
        name: "RetryParked",
        answer: |b| answer(b, |r: pb::RetryParkedRequest| RetryParked::try_from(r)),
        fields: &["aggregate_id"],
    },
    Rpc {
        name: "SkipParked",
        answer: |b| answer(b, |r: pb::SkipParkedRequest| SkipParked::try_from(r)),
        fields: &["aggregate_id", "reason"],
    },
    Rpc {
        name: "RebuildReadModels",
        answer: |b| answer(b, |r: pb::RebuildReadModelsRequest| Rebuild::try_from(r)),
        fields: &["segments", "no_switch", "page_size"],
    },
    Rpc {
        name: "ReplayEvents",
        answer: |b| answer(b, |r: pb::ReplayEventsRequest| ReplayEvents::try_from(r)),
        fields: &["start_time", "end_time", "event_types", "source", "rules"],
    },
];

fn top_field(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or_default()
}

/// A success, or `INVALID_ARGUMENT` with one of our reasons and every
/// violation naming a field of the request and saying why.
fn check(rpc: &Rpc, bytes: &[u8]) -> Result<(), TestCaseError> {
    let Err(status) = (rpc.answer)(bytes) else {
        return Ok(());
    };
    prop_assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{}: {:?}",
        rpc.name,
        status
    );
    let details = status.get_error_details();
    let info = details
        .error_info()
        .ok_or_else(|| TestCaseError::fail(format!("{}: no ErrorInfo: {status:?}", rpc.name)))?;
    prop_assert_eq!(&info.domain, dynabridge::ERROR_DOMAIN);
    let reasons = [ErrorReason::MalformedMessage, ErrorReason::InvalidField];
    prop_assert!(
        reasons.iter().any(|r| r.as_str_name() == info.reason),
        "{}: reason {}: {:?}",
        rpc.name,
        info.reason,
        status
    );
    let violations = details
        .bad_request()
        .map(|b| b.field_violations.clone())
        .unwrap_or_default();
    if info.reason == ErrorReason::InvalidField.as_str_name() {
        prop_assert!(
            !violations.is_empty(),
            "{}: no field named: {:?}",
            rpc.name,
            status
        );
    }
    for v in violations {
        prop_assert!(
            rpc.fields.contains(&top_field(&v.field)),
            "{}: {:?} is not a field of the request: {:?}",
            rpc.name,
            v.field,
            status
        );
        prop_assert!(!v.description.is_empty(), "{}: {:?}", rpc.name, status);
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "[ -~]{0,80}",
        prop::collection::vec(any::<char>(), 480..560).prop_map(String::from_iter),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        prop::sample::select(vec![
            "UserCreated",
            "OrderCreated",
            "OrderStatusUpdated",
            "UserProfileUpdated",
            "userCreated",
        ])
        .prop_map(str::to_owned),
    ]
}

fn int32() -> impl Strategy<Value = i32> {
    prop_oneof![any::<i32>(), -3i32..1100, Just(i32::MIN), Just(i32::MAX)]
}

fn timestamp() -> impl Strategy<Value = Option<pbjson_types::Timestamp>> {
    prop::option::of(
        (
            prop_oneof![any::<i64>(), 0i64..4_000_000_000, Just(i64::MIN)],
            prop_oneof![any::<i32>(), 0i32..1_000_000_000],
        )
            .prop_map(|(seconds, nanos)| pbjson_types::Timestamp { seconds, nanos }),
    )
}

fn as_of() -> impl Strategy<Value = Option<pb::AsOf>> {
    prop::option::of(prop_oneof![
        Just(pb::AsOf { point: None }),
        any::<i64>().prop_map(|v| pb::AsOf {
            point: Some(pb::as_of::Point::Version(v)),
        }),
        timestamp().prop_map(|t| pb::AsOf {
            point: t.map(pb::as_of::Point::Time),
        }),
    ])
}

/// A well-formed request of arbitrary field values, for each RPC in turn.
fn message() -> impl Strategy<Value = (usize, Vec<u8>)> {
    prop_oneof![
        (text(), int32(), text()).prop_map(|(aggregate_id, page_size, page_token)| {
            (
                0,
                pb::GetAggregateHistoryRequest {
                    aggregate_id,
                    page_size,
                    page_token,
                }
                .encode_to_vec(),
            )
        }),
        (text(), as_of()).prop_map(|(user_id, as_of)| {
            (1, pb::GetUserAsOfRequest { user_id, as_of }.encode_to_vec())
        }),
        (text(), as_of()).prop_map(|(order_id, as_of)| {
            (
                2,
                pb::GetOrderAsOfRequest { order_id, as_of }.encode_to_vec(),
            )
        }),
        (text(), timestamp(), timestamp(), int32(), text()).prop_map(
            |(event_type, start_time, end_time, page_size, page_token)| {
                (
                    3,
                    pb::ListEventsByTypeRequest {
                        event_type,
                        start_time,
                        end_time,
                        page_size,
                        page_token,
                    }
                    .encode_to_vec(),
                )
            }
        ),
        (int32(), text()).prop_map(|(page_size, page_token)| {
            (
                4,
                pb::ListParkedRequest {
                    page_size,
                    page_token,
                }
                .encode_to_vec(),
            )
        }),
        text().prop_map(|aggregate_id| {
            (5, pb::RetryParkedRequest { aggregate_id }.encode_to_vec())
        }),
        (text(), text()).prop_map(|(aggregate_id, reason)| {
            (
                6,
                pb::SkipParkedRequest {
                    aggregate_id,
                    reason,
                }
                .encode_to_vec(),
            )
        }),
        (
            timestamp(),
            timestamp(),
            prop::collection::vec(text(), 0..4),
            int32(),
            prop::collection::vec(text(), 0..4),
        )
            .prop_map(|(start_time, end_time, event_types, source, rules)| {
                (
                    8,
                    pb::ReplayEventsRequest {
                        start_time,
                        end_time,
                        event_types,
                        source,
                        rules,
                    }
                    .encode_to_vec(),
                )
            }),
        (int32(), any::<bool>(), int32()).prop_map(|(segments, no_switch, page_size)| {
            (
                7,
                pb::RebuildReadModelsRequest {
                    segments,
                    no_switch,
                    page_size,
                }
                .encode_to_vec(),
            )
        }),
    ]
}

/// A valid request of each RPC, encoded.
fn valid(rpc: usize) -> Vec<u8> {
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e".to_owned();
    match rpc {
        0 => pb::GetAggregateHistoryRequest {
            aggregate_id: id,
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        1 => pb::GetUserAsOfRequest {
            user_id: id,
            as_of: Some(pb::AsOf {
                point: Some(pb::as_of::Point::Version(2)),
            }),
        }
        .encode_to_vec(),
        2 => pb::GetOrderAsOfRequest {
            order_id: id,
            as_of: Some(pb::AsOf {
                point: Some(pb::as_of::Point::Version(1)),
            }),
        }
        .encode_to_vec(),
        3 => pb::ListEventsByTypeRequest {
            event_type: "OrderCreated".into(),
            page_size: 50,
            ..Default::default()
        }
        .encode_to_vec(),
        4 => pb::ListParkedRequest::default().encode_to_vec(),
        5 => pb::RetryParkedRequest { aggregate_id: id }.encode_to_vec(),
        6 => pb::SkipParkedRequest {
            aggregate_id: id,
            reason: "a broken import".into(),
        }
        .encode_to_vec(),
        8 => pb::ReplayEventsRequest {
            start_time: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            end_time: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_060,
                nanos: 0,
            }),
            event_types: vec!["OrderCreated".into()],
            source: pb::ReplaySource::EventStore.into(),
            rules: Vec::new(),
        }
        .encode_to_vec(),
        _ => pb::RebuildReadModelsRequest {
            segments: 4,
            no_switch: false,
            page_size: 100,
        }
        .encode_to_vec(),
    }
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn arbitrary_bytes_are_answered_or_refused_with_the_field_named(bytes in fuzz::bytes(7)) {
        for rpc in RPCS {
            check(rpc, &bytes)?;
        }
    }

    #[test]
    fn arbitrary_field_values_are_answered_or_refused_with_the_field_named((rpc, bytes) in message()) {
        check(&RPCS[rpc], &bytes)?;
    }

    #[test]
    fn mutated_valid_requests_are_answered_or_refused_with_the_field_named(
        rpc in 0..RPCS.len(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = valid(rpc);
        prop_assert!((RPCS[rpc].answer)(&bytes).is_ok(), "{} refused a valid request", RPCS[rpc].name);
        // An empty message (ListParked's default) has no byte to flip.
        if !bytes.is_empty() {
            for (at, with) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= with;
            }
        }
        let keep = cut.index(bytes.len() + 1);
        check(&RPCS[rpc], &bytes[..keep])?;
    }
}
