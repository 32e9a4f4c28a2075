//! What the request fuzzers of every service share: the proptest
//! configuration and the arbitrary bytes (a proptest over bytes: no nightly
//! toolchain, so no cargo-fuzz).

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

/// The proptest configuration: `PROPTEST_CASES` cases, else 512; a failure
/// prints its minimal input and nothing is written to the tree.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One protobuf record of a random field number below `fields` and a random
/// wire type, including the invalid ones (field 0, wire types 6 and 7), and
/// group markers.
pub fn record(fields: u64) -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        // A nested message: records of their own.
        prop::collection::vec(flat_record(), 0..4).prop_map(|r| r.concat()),
    ];
    (0u64..fields, 0u64..8, any::<u64>(), payload).prop_map(|(field, wire, number, payload)| {
        let mut out = Vec::new();
        prost::encoding::encode_varint((field << 3) | wire, &mut out);
        match wire {
            0 => prost::encoding::encode_varint(number, &mut out),
            1 => out.extend_from_slice(&number.to_le_bytes()),
            2 => {
                prost::encoding::encode_varint(payload.len() as u64, &mut out);
                out.extend_from_slice(&payload);
            }
            5 => out.extend_from_slice(&number.to_le_bytes()[..4]),
            // Group start and end, and the invalid 6 and 7: a key alone.
            _ => {}
        }
        out
    })
}

/// A record of a valid wire type with a short payload: what `record` nests.
fn flat_record() -> impl Strategy<Value = Vec<u8>> {
    (
        1u64..5,
        prop::sample::select(vec![0u64, 1, 2, 5]),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(field, wire, number, payload)| {
            let mut out = Vec::new();
            prost::encoding::encode_varint((field << 3) | wire, &mut out);
            match wire {
                0 => prost::encoding::encode_varint(number, &mut out),
                1 => out.extend_from_slice(&number.to_le_bytes()),
                2 => {
                    prost::encoding::encode_varint(payload.len() as u64, &mut out);
                    out.extend_from_slice(&payload);
                }
                _ => out.extend_from_slice(&number.to_le_bytes()[..4]),
            }
            out
        })
}

/// Arbitrary bytes: uniform, or random protobuf records of fields below
/// `fields`, which get past the first byte more often.
pub fn bytes(fields: u64) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(record(fields), 0..12).prop_map(|r| r.concat()),
    ]
}
