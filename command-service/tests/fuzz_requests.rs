//! Fuzzing of what the command service does with a request before its
//! handler runs: decoding, the correlation id check of `unary`, and the
//! request's parse. (A proptest over bytes: no nightly toolchain, so no
//! cargo-fuzz.)
//!
//! For every RPC, whatever the bytes: no panic, and the answer is a success
//! or `INVALID_ARGUMENT`, reason `MALFORMED_MESSAGE` (does not decode) or
//! `INVALID_FIELD` (decodes, does not parse), every field violation naming a
//! field of the request. Three sources of bytes per RPC:
//!
//! - arbitrary bytes, uniform or as random protobuf records;
//! - well-formed messages of arbitrary field values, which always decode, so
//!   the answer is a success or `INVALID_FIELD` with a violation;
//! - a valid request's encoding, mutated.
//!
//! Cases: `PROPTEST_CASES`, else 512. A failure prints its minimal input;
//! nothing is written to the tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use command_service::parse::{
    CreateOrder, CreateRoute, CreateUser, Origin, ProductRequest, PurchaseProducts,
    UpdateOrderStatus, UpdateUserProfile,
};
use dynabridge::codec::malformed_request;
use dynabridge::pb;
use dynabridge::pb::ErrorReason;
use dynabridge_domain::ValidationError;
use dynabridge_runtime::error::AppError;
use dynabridge_runtime::grpc::correlation_id;
use dynabridge_testkit::fuzz;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------
// What the server answers

/// What the server answers `bytes` with, up to its handler: prost's decode
/// (as `dynabridge::codec` does), then `unary`'s correlation id check
/// (no metadata), then the RPC's parse, each error through the real
/// conversions.
fn answer<Req: Message + Default>(
    bytes: &[u8],
    correlation_field: impl FnOnce(&Req) -> &str,
    parse: impl FnOnce(&Req, &Origin) -> Result<(), ValidationError>,
) -> Result<(), Status> {
    let req = Req::decode(bytes).map_err(|err| malformed_request(&err))?;
    let cid =
        correlation_id(correlation_field(&req), &MetadataMap::new()).map_err(AppError::from)?;
    let origin = Origin {
        correlation_id: cid,
        trace_parent: None,
    };
    parse(&req, &origin).map_err(AppError::from)?;
    Ok(())
}

fn create_user(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::CreateUserRequest| &r.correlation_id,
        |r, o| CreateUser::parse(r, o).map(drop),
    )
}

fn update_user_profile(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::UpdateUserProfileRequest| &r.correlation_id,
        |r, o| UpdateUserProfile::parse(r, o).map(drop),
    )
}

fn create_order(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::CreateOrderRequest| &r.correlation_id,
        |r, o| CreateOrder::parse(r, o).map(drop),
    )
}

fn update_order_status(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::UpdateOrderStatusRequest| &r.correlation_id,
        |r, o| UpdateOrderStatus::parse(r, o).map(drop),
    )
}

fn create_product(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::CreateProductRequest| &r.correlation_id,
        |r, o| ProductRequest::create(r, o).map(drop),
    )
}

fn restock_product(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::RestockProductRequest| &r.correlation_id,
        |r, o| ProductRequest::restock(r, o).map(drop),
    )
}

fn change_product_price(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::ChangeProductPriceRequest| &r.correlation_id,
        |r, o| ProductRequest::change_price(r, o).map(drop),
    )
}

fn purchase_products(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::PurchaseProductsRequest| &r.correlation_id,
        |r, o| PurchaseProducts::parse(r, o).map(drop),
    )
}

fn create_route(bytes: &[u8]) -> Result<(), Status> {
    answer(
        bytes,
        |r: &pb::CreateRouteRequest| &r.correlation_id,
        |r, o| CreateRoute::parse(r, o).map(drop),
    )
}

/// An RPC: its answer, and the top-level fields of its request, which every
/// field violation must be under.
struct Rpc {
    answer: fn(&[u8]) -> Result<(), Status>,
    fields: &'static [&'static str],
}

const CREATE_USER: Rpc = Rpc {
    answer: create_user,
    fields: &["request_id", "correlation_id", "email", "name"],
};
const UPDATE_USER_PROFILE: Rpc = Rpc {
    answer: update_user_profile,
    fields: &[
        "request_id",
        "correlation_id",
        "user_id",
        "expected_version",
        "name",
        "email",
        "update_mask",
    ],
};
const CREATE_ORDER: Rpc = Rpc {
    answer: create_order,
    fields: &[
        "request_id",
        "correlation_id",
        "user_id",
        "items",
        "total",
        "shipping_address",
    ],
};
const UPDATE_ORDER_STATUS: Rpc = Rpc {
    answer: update_order_status,
    fields: &[
        "request_id",
        "correlation_id",
        "order_id",
        "expected_version",
        "status",
    ],
};
const CREATE_PRODUCT: Rpc = Rpc {
    answer: create_product,
    fields: &[
        "request_id",
        "correlation_id",
        "sku",
        "name",
        "unit_price",
        "initial_stock",
        "reorder_level",
    ],
};
const RESTOCK_PRODUCT: Rpc = Rpc {
    answer: restock_product,
    fields: &[
        "request_id",
        "correlation_id",
        "sku",
        "expected_version",
        "quantity",
    ],
};
const CHANGE_PRODUCT_PRICE: Rpc = Rpc {
    answer: change_product_price,
    fields: &[
        "request_id",
        "correlation_id",
        "sku",
        "expected_version",
        "unit_price",
    ],
};
const PURCHASE_PRODUCTS: Rpc = Rpc {
    answer: purchase_products,
    fields: &["request_id", "correlation_id", "user_id", "items"],
};
const CREATE_ROUTE: Rpc = Rpc {
    answer: create_route,
    fields: &[
        "request_id",
        "correlation_id",
        "order_id",
        "stops",
        "distance_metres",
    ],
};

/// The top-level field of a violation's path: `items` of `items[2].sku`.
fn top_field(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or_default()
}

/// Answers `bytes` and checks the answer: a success, or `INVALID_ARGUMENT`
/// with an `ErrorInfo` of our domain and one of `reasons`, and field
/// violations, if any, each naming a field of the request and saying why.
/// `INVALID_FIELD` always names at least one field.
fn check(rpc: &Rpc, bytes: &[u8], reasons: &[ErrorReason]) -> Result<(), TestCaseError> {
    let Err(status) = (rpc.answer)(bytes) else {
        return Ok(());
    };
    prop_assert_eq!(status.code(), Code::InvalidArgument, "{:?}", status);
    let details = status.get_error_details();
    let info = details
        .error_info()
        .ok_or_else(|| TestCaseError::fail(format!("no ErrorInfo: {status:?}")))?;
    prop_assert_eq!(&info.domain, dynabridge::ERROR_DOMAIN);
    prop_assert!(
        reasons.iter().any(|r| r.as_str_name() == info.reason),
        "reason {} not one of {:?}: {:?}",
        info.reason,
        reasons,
        status
    );
    let violations = details
        .bad_request()
        .map(|b| b.field_violations.as_slice())
        .unwrap_or_default();
    if info.reason == ErrorReason::InvalidField.as_str_name() {
        prop_assert!(!violations.is_empty(), "no field named: {:?}", status);
    }
    for v in violations {
        prop_assert!(!v.field.is_empty(), "a violation of no field: {:?}", status);
        prop_assert!(
            rpc.fields.contains(&top_field(&v.field)),
            "{:?} is not a field of the request: {:?}",
            v.field,
            status
        );
        prop_assert!(
            !v.description.is_empty(),
            "a violation without a description: {:?}",
            status
        );
    }
    Ok(())
}

const DECODE_OR_PARSE: &[ErrorReason] = &[ErrorReason::MalformedMessage, ErrorReason::InvalidField];
const PARSE: &[ErrorReason] = &[ErrorReason::InvalidField];

/// The answer to a valid request is a success.
fn check_valid(rpc: &Rpc, bytes: &[u8]) -> Result<(), TestCaseError> {
    let answer = (rpc.answer)(bytes);
    prop_assert!(answer.is_ok(), "a valid request refused: {:?}", answer);
    Ok(())
}

// ---------------------------------------------------------------------------
// Arbitrary bytes

// ---------------------------------------------------------------------------
// Well-formed messages of arbitrary values

/// Ids the valid requests use too, so that an arbitrary id is often valid.
const IDS: &[&str] = &[
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
];

/// Any string: empty, arbitrary (control characters, non-ASCII), long,
/// whitespace-padded, or plausible.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
        prop::collection::vec(any::<char>(), 120..400).prop_map(String::from_iter),
        "[ -~]{0,140}",
        "[ \t\n\u{a0}\u{3000}]{0,3}[a-zA-Z0-9._@-]{1,20}[ \t\n\u{a0}\u{3000}]{0,3}",
        prop::sample::select(IDS).prop_map(str::to_owned),
    ]
}

/// An id: arbitrary text, or a UUID in one of its spellings.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        prop::sample::select(IDS).prop_map(str::to_owned),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).urn().to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).braced().to_string().to_uppercase()),
    ]
}

/// An email address, valid or almost.
fn email() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        "[ ]{0,2}[A-Za-z0-9.+_-]{0,70}@[A-Za-z0-9.-]{0,70}[ ]{0,2}",
        "[a-z]{1,10}@[a-z]{1,10}\\.[a-z]{2,4}",
        "[a-z]{60,70}@[a-z]{63,64}\\.[a-z]{63,64}\\.[a-z]{63,64}",
    ]
}

/// A request id: printable ASCII of the allowed length or not, or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![2 => valid_key(), 1 => text(), 1 => "[!-~]{129,140}"]
}

/// A correlation id field. Mostly valid: an invalid one is refused before
/// the parse runs.
fn correlation() -> impl Strategy<Value = String> {
    prop_oneof![3 => valid_correlation(), 1 => key()]
}

fn int64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        Just(-1),
        -10i64..1_000_010,
    ]
}

/// A stock level: arbitrary, or about the allowed 0 to 1,000,000,000.
fn stock_level() -> impl Strategy<Value = i64> {
    prop_oneof![int64(), 0i64..=1_000_000_000, 999_999_990i64..1_000_000_010,]
}

fn enum_i32() -> impl Strategy<Value = i32> {
    prop_oneof![any::<i32>(), -2i32..8, Just(i32::MIN), Just(i32::MAX)]
}

fn currency() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("USD".to_owned()),
        Just("EUR".to_owned()),
        "[A-Z]{3}",
        "[A-Za-z]{2,4}",
        text()
    ]
}

fn money() -> impl Strategy<Value = pb::Money> {
    (currency(), int64()).prop_map(|(currency_code, amount_minor)| pb::Money {
        currency_code,
        amount_minor,
    })
}

fn address() -> impl Strategy<Value = pb::ShippingAddress> {
    (
        text(),
        text(),
        text(),
        text(),
        text(),
        prop_oneof![text(), "[A-Z]{2}"],
    )
        .prop_map(
            |(recipient, line1, line2, city, postal_code, country_code)| pb::ShippingAddress {
                recipient,
                line1,
                line2,
                city,
                postal_code,
                country_code,
            },
        )
}

/// A sku: arbitrary text, or of the allowed characters, of the allowed
/// length or not.
fn sku() -> impl Strategy<Value = String> {
    prop_oneof![text(), valid_sku(), "[A-Za-z0-9._-]{65,70}"]
}

fn item() -> impl Strategy<Value = pb::OrderItem> {
    let arbitrary = (sku(), int64(), prop::option::weighted(0.9, money())).prop_map(
        |(sku, quantity, unit_price)| pb::OrderItem {
            sku,
            quantity,
            unit_price,
        },
    );
    prop_oneof![arbitrary, valid_item()]
}

/// Items: a few, or about the most an order may have (100), valid so that
/// the count is what is checked.
fn items() -> impl Strategy<Value = Vec<pb::OrderItem>> {
    prop_oneof![
        4 => prop::collection::vec(item(), 0..5),
        1 => prop::collection::vec(valid_item(), 99..102),
    ]
}

/// A quantity: arbitrary, or about the allowed 1 to 1,000,000.
fn quantity() -> impl Strategy<Value = i64> {
    prop_oneof![int64(), 999_990i64..1_000_010]
}

fn purchase_item() -> impl Strategy<Value = pb::PurchaseItem> {
    let arbitrary =
        (sku(), quantity()).prop_map(|(sku, quantity)| pb::PurchaseItem { sku, quantity });
    prop_oneof![arbitrary, valid_purchase_item()]
}

/// Purchase items: a few, valid ones of which two mostly name the same sku,
/// or about the most a purchase may have (25), valid so that the count is
/// what is checked.
fn purchase_items() -> impl Strategy<Value = Vec<pb::PurchaseItem>> {
    let repeated = (valid_purchase_items(2..6), any::<Index>(), any::<Index>()).prop_map(
        |(mut items, from, to)| {
            let len = items.len();
            let (from, to) = (from.index(len), to.index(len));
            if from != to {
                items[to].sku = items[from].sku.clone();
            }
            items
        },
    );
    prop_oneof![
        4 => prop::collection::vec(purchase_item(), 0..5),
        1 => repeated,
        1 => valid_purchase_items(24..27),
    ]
}

/// A stop's location: arbitrary text, or valid, of the allowed length
/// (200 characters) or about it.
fn location() -> impl Strategy<Value = String> {
    prop_oneof![text(), valid_location(), "[A-Z0-9-]{195,205}"]
}

/// A route stop: of arbitrary values (a sku, or none as the delivery has,
/// and any quantity), or a valid pick or delivery.
fn route_stop() -> impl Strategy<Value = pb::RouteStop> {
    let arbitrary = (
        location(),
        prop_oneof![1 => Just(String::new()), 3 => sku()],
        prop_oneof![3 => quantity(), 1 => Just(0)],
    )
        .prop_map(|(location, sku, quantity)| pb::RouteStop {
            location,
            sku,
            quantity,
        });
    prop_oneof![2 => arbitrary, 1 => valid_pick(), 1 => valid_delivery()]
}

/// Route stops: a few; valid ones but for a sku picked twice (mostly) or a
/// delivery before the last stop; or about the most a route may have (26),
/// valid so that the count is what is checked.
fn route_stops() -> impl Strategy<Value = Vec<pb::RouteStop>> {
    let repeated = (
        valid_picks(2..6),
        any::<Index>(),
        any::<Index>(),
        prop::option::of(valid_delivery()),
    )
        .prop_map(|(mut stops, from, to, delivery)| {
            let len = stops.len();
            let (from, to) = (from.index(len), to.index(len));
            if from != to {
                stops[to].sku = stops[from].sku.clone();
            }
            stops.extend(delivery);
            stops
        });
    // Before the last stop, which may be a delivery too.
    let delivery_not_last = (valid_route_stops(1..6), any::<Index>(), valid_delivery()).prop_map(
        |(mut stops, at, delivery)| {
            let at = at.index(stops.len());
            stops.insert(at, delivery);
            stops
        },
    );
    prop_oneof![
        4 => prop::collection::vec(route_stop(), 0..5),
        1 => repeated,
        1 => delivery_not_last,
        1 => valid_route_stops(24..27),
    ]
}

/// A distance: arbitrary, or about the allowed 0 to 100,000 metres.
fn distance() -> impl Strategy<Value = i64> {
    prop_oneof![int64(), 99_990i64..100_010]
}

fn field_mask() -> impl Strategy<Value = Option<pbjson_types::FieldMask>> {
    prop::option::of(
        prop::collection::vec(
            prop_oneof![Just("name".to_owned()), Just("email".to_owned()), text()],
            0..5,
        )
        .prop_map(|paths| pbjson_types::FieldMask { paths }),
    )
}

prop_compose! {
    fn any_create_user()(
        request_id in key(), correlation_id in correlation(), email in email(), name in text(),
    ) -> pb::CreateUserRequest {
        pb::CreateUserRequest { request_id, correlation_id, email, name }
    }
}

prop_compose! {
    fn any_update_user_profile()(
        request_id in key(),
        correlation_id in correlation(),
        user_id in id(),
        expected_version in prop::option::of(int64()),
        name in text(),
        email in email(),
        update_mask in field_mask(),
    ) -> pb::UpdateUserProfileRequest {
        pb::UpdateUserProfileRequest {
            request_id,
            correlation_id,
            user_id,
            expected_version,
            name,
            email,
            update_mask,
        }
    }
}

prop_compose! {
    fn any_create_order()(
        request_id in key(),
        correlation_id in correlation(),
        user_id in id(),
        items in items(),
        total in prop::option::of(money()),
        shipping_address in prop::option::of(address()),
    ) -> pb::CreateOrderRequest {
        pb::CreateOrderRequest { request_id, correlation_id, user_id, items, total, shipping_address }
    }
}

prop_compose! {
    fn any_update_order_status()(
        request_id in key(),
        correlation_id in correlation(),
        order_id in id(),
        expected_version in prop::option::of(int64()),
        status in enum_i32(),
    ) -> pb::UpdateOrderStatusRequest {
        pb::UpdateOrderStatusRequest {
            request_id,
            correlation_id,
            order_id,
            expected_version,
            status,
        }
    }
}

prop_compose! {
    fn any_create_product()(
        request_id in key(),
        correlation_id in correlation(),
        sku in sku(),
        name in text(),
        unit_price in prop::option::weighted(0.9, money()),
        initial_stock in stock_level(),
        reorder_level in stock_level(),
    ) -> pb::CreateProductRequest {
        pb::CreateProductRequest {
            request_id,
            correlation_id,
            sku,
            name,
            unit_price,
            initial_stock,
            reorder_level,
        }
    }
}

prop_compose! {
    fn any_restock_product()(
        request_id in key(),
        correlation_id in correlation(),
        sku in sku(),
        expected_version in prop::option::of(int64()),
        quantity in int64(),
    ) -> pb::RestockProductRequest {
        pb::RestockProductRequest { request_id, correlation_id, sku, expected_version, quantity }
    }
}

prop_compose! {
    fn any_change_product_price()(
        request_id in key(),
        correlation_id in correlation(),
        sku in sku(),
        expected_version in prop::option::of(int64()),
        unit_price in prop::option::weighted(0.9, money()),
    ) -> pb::ChangeProductPriceRequest {
        pb::ChangeProductPriceRequest {
            request_id,
            correlation_id,
            sku,
            expected_version,
            unit_price,
        }
    }
}

prop_compose! {
    fn any_purchase_products()(
        request_id in key(),
        correlation_id in correlation(),
        user_id in id(),
        items in purchase_items(),
    ) -> pb::PurchaseProductsRequest {
        pb::PurchaseProductsRequest { request_id, correlation_id, user_id, items }
    }
}

prop_compose! {
    fn any_create_route()(
        request_id in key(),
        correlation_id in correlation(),
        order_id in id(),
        stops in route_stops(),
        distance_metres in distance(),
    ) -> pb::CreateRouteRequest {
        pb::CreateRouteRequest { request_id, correlation_id, order_id, stops, distance_metres }
    }
}

// ---------------------------------------------------------------------------
// Valid requests, and their mutations

fn valid_key() -> impl Strategy<Value = String> {
    "[!-~]{1,128}"
}

/// A correlation id field: empty (the metadata's or a new one) or valid.
fn valid_correlation() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[!-~]{1,128}"]
}

fn valid_id() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

fn valid_email() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+_%-]{1,10}(\\.[a-z0-9+_%-]{1,5}){0,2}@[a-zA-Z0-9]{1,10}\\.[a-z]{2,6}"
}

fn valid_name() -> impl Strategy<Value = String> {
    "[^\\p{C}\\s]{1,20}( [^\\p{C}\\s]{1,20}){0,3}"
}

fn valid_money() -> impl Strategy<Value = pb::Money> {
    ("USD", 0i64..1_000_000).prop_map(|(currency_code, amount_minor)| pb::Money {
        currency_code,
        amount_minor,
    })
}

fn valid_address() -> impl Strategy<Value = pb::ShippingAddress> {
    (
        "[A-Za-z][A-Za-z .'-]{0,60}",
        "[A-Za-z0-9][A-Za-z0-9 .,-]{0,60}",
        "[A-Za-z0-9 .,-]{0,20}",
        "[A-Za-z][A-Za-z -]{0,40}",
        "[0-9A-Z -]{0,10}",
        "[A-Z]{2}",
    )
        .prop_map(
            |(recipient, line1, line2, city, postal_code, country_code)| pb::ShippingAddress {
                recipient,
                line1,
                line2,
                city,
                postal_code,
                country_code,
            },
        )
}

fn valid_sku() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn valid_stock_level() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(1_000_000_000),
        0i64..1000,
        0i64..=1_000_000_000,
    ]
}

fn valid_item() -> impl Strategy<Value = pb::OrderItem> {
    (valid_sku(), 1i64..1000, valid_money()).prop_map(|(sku, quantity, unit_price)| pb::OrderItem {
        sku,
        quantity,
        unit_price: Some(unit_price),
    })
}

fn valid_quantity() -> impl Strategy<Value = i64> {
    prop_oneof![Just(1), Just(1_000_000), 1i64..1000, 1i64..=1_000_000]
}

fn valid_purchase_item() -> impl Strategy<Value = pb::PurchaseItem> {
    (valid_sku(), valid_quantity()).prop_map(|(sku, quantity)| pb::PurchaseItem { sku, quantity })
}

/// `len` purchase items of distinct skus, in any order.
fn valid_purchase_items(
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<pb::PurchaseItem>> {
    prop::collection::btree_map(valid_sku(), valid_quantity(), len)
        .prop_map(|items| {
            items
                .into_iter()
                .map(|(sku, quantity)| pb::PurchaseItem { sku, quantity })
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

/// A warehouse location or a delivery's place: not blank, no control
/// characters, up to the allowed 200 characters.
fn valid_location() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z][0-9]{2}-[0-9]{2}",
        valid_name(),
        "[^\\p{C}\\s][^\\p{Cc}]{0,199}",
        "[A-Z0-9-]{200}",
    ]
}

fn valid_pick() -> impl Strategy<Value = pb::RouteStop> {
    (valid_location(), valid_sku(), valid_quantity()).prop_map(|(location, sku, quantity)| {
        pb::RouteStop {
            location,
            sku,
            quantity,
        }
    })
}

/// The delivery: a place, no sku, no quantity.
fn valid_delivery() -> impl Strategy<Value = pb::RouteStop> {
    valid_location().prop_map(|location| pb::RouteStop {
        location,
        sku: String::new(),
        quantity: 0,
    })
}

/// `len` picks of distinct skus, in any order.
fn valid_picks(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<pb::RouteStop>> {
    prop::collection::btree_map(valid_sku(), (valid_location(), valid_quantity()), len)
        .prop_map(|picks| {
            picks
                .into_iter()
                .map(|(sku, (location, quantity))| pb::RouteStop {
                    location,
                    sku,
                    quantity,
                })
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

/// `picks` picks of distinct skus, then the delivery or not.
fn valid_route_stops(picks: std::ops::Range<usize>) -> impl Strategy<Value = Vec<pb::RouteStop>> {
    (valid_picks(picks), prop::option::of(valid_delivery())).prop_map(|(mut stops, delivery)| {
        stops.extend(delivery);
        stops
    })
}

fn valid_distance() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), Just(100_000), 0i64..1000, 0i64..=100_000]
}

prop_compose! {
    fn valid_create_user()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        email in valid_email(),
        name in valid_name(),
    ) -> pb::CreateUserRequest {
        pb::CreateUserRequest { request_id, correlation_id, email, name }
    }
}

prop_compose! {
    fn valid_update_user_profile()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        user_id in valid_id(),
        expected_version in prop::option::of(0i64..1000),
        name in valid_name(),
        email in valid_email(),
        paths in prop::sample::select(vec![
            vec!["name"], vec!["email"], vec!["name", "email"], vec!["email", "name"],
        ]),
    ) -> pb::UpdateUserProfileRequest {
        pb::UpdateUserProfileRequest {
            request_id,
            correlation_id,
            user_id,
            expected_version,
            name,
            email,
            update_mask: Some(pbjson_types::FieldMask {
                paths: paths.into_iter().map(str::to_owned).collect(),
            }),
        }
    }
}

prop_compose! {
    fn valid_create_order()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        user_id in valid_id(),
        items in prop::collection::vec(valid_item(), 1..4),
        total in prop::option::of(valid_money()),
        shipping_address in prop::option::of(valid_address()),
    ) -> pb::CreateOrderRequest {
        pb::CreateOrderRequest { request_id, correlation_id, user_id, items, total, shipping_address }
    }
}

prop_compose! {
    fn valid_update_order_status()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        order_id in valid_id(),
        expected_version in prop::option::of(0i64..1000),
        status in 1i32..=5,
    ) -> pb::UpdateOrderStatusRequest {
        pb::UpdateOrderStatusRequest {
            request_id,
            correlation_id,
            order_id,
            expected_version,
            status,
        }
    }
}

prop_compose! {
    fn valid_create_product()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        sku in valid_sku(),
        name in valid_name(),
        unit_price in valid_money(),
        initial_stock in valid_stock_level(),
        reorder_level in valid_stock_level(),
    ) -> pb::CreateProductRequest {
        pb::CreateProductRequest {
            request_id,
            correlation_id,
            sku,
            name,
            unit_price: Some(unit_price),
            initial_stock,
            reorder_level,
        }
    }
}

prop_compose! {
    fn valid_restock_product()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        sku in valid_sku(),
        expected_version in prop::option::of(0i64..1000),
        quantity in prop_oneof![Just(1), Just(1_000_000), 1i64..=1_000_000],
    ) -> pb::RestockProductRequest {
        pb::RestockProductRequest { request_id, correlation_id, sku, expected_version, quantity }
    }
}

prop_compose! {
    fn valid_change_product_price()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        sku in valid_sku(),
        expected_version in prop::option::of(0i64..1000),
        unit_price in valid_money(),
    ) -> pb::ChangeProductPriceRequest {
        pb::ChangeProductPriceRequest {
            request_id,
            correlation_id,
            sku,
            expected_version,
            unit_price: Some(unit_price),
        }
    }
}

prop_compose! {
    fn valid_purchase_products()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        user_id in valid_id(),
        items in valid_purchase_items(1..26),
    ) -> pb::PurchaseProductsRequest {
        pb::PurchaseProductsRequest { request_id, correlation_id, user_id, items }
    }
}

prop_compose! {
    fn valid_create_route()(
        request_id in valid_key(),
        correlation_id in valid_correlation(),
        order_id in valid_id(),
        stops in prop_oneof![
            4 => valid_route_stops(1..26),
            1 => valid_delivery().prop_map(|delivery| vec![delivery]),
        ],
        distance_metres in valid_distance(),
    ) -> pb::CreateRouteRequest {
        pb::CreateRouteRequest { request_id, correlation_id, order_id, stops, distance_metres }
    }
}

/// One change to a message's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: Index, mask: u8 },
    Set { at: Index, byte: u8 },
    Insert { at: Index, bytes: Vec<u8> },
    Delete { at: Index, len: usize },
    Truncate { at: Index },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        // Low bits keep ASCII text valid UTF-8, so that the parse runs.
        (any::<Index>(), prop_oneof![1u8..=0x7f, 1u8..=255])
            .prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<Index>(), 1usize..4).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip { at, mask } if len > 0 => bytes[at.index(len)] ^= mask,
            Mutation::Set { at, byte } if len > 0 => bytes[at.index(len)] = *byte,
            Mutation::Insert { at, bytes: new } => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete { at, len: n } if len > 0 => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Truncate { at } => bytes.truncate(at.index(len + 1)),
            _ => {}
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn create_user_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&CREATE_USER, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn create_user_answers_any_message(req in any_create_user()) {
        check(&CREATE_USER, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn create_user_answers_a_mutated_request(req in valid_create_user(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&CREATE_USER, &bytes)?;
        check(&CREATE_USER, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn update_user_profile_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&UPDATE_USER_PROFILE, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn update_user_profile_answers_any_message(req in any_update_user_profile()) {
        check(&UPDATE_USER_PROFILE, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn update_user_profile_answers_a_mutated_request(
        req in valid_update_user_profile(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&UPDATE_USER_PROFILE, &bytes)?;
        check(&UPDATE_USER_PROFILE, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn create_order_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&CREATE_ORDER, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn create_order_answers_any_message(req in any_create_order()) {
        check(&CREATE_ORDER, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn create_order_answers_a_mutated_request(req in valid_create_order(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&CREATE_ORDER, &bytes)?;
        check(&CREATE_ORDER, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn update_order_status_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&UPDATE_ORDER_STATUS, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn update_order_status_answers_any_message(req in any_update_order_status()) {
        check(&UPDATE_ORDER_STATUS, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn update_order_status_answers_a_mutated_request(
        req in valid_update_order_status(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&UPDATE_ORDER_STATUS, &bytes)?;
        check(&UPDATE_ORDER_STATUS, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn create_product_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&CREATE_PRODUCT, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn create_product_answers_any_message(req in any_create_product()) {
        check(&CREATE_PRODUCT, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn create_product_answers_a_mutated_request(req in valid_create_product(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&CREATE_PRODUCT, &bytes)?;
        check(&CREATE_PRODUCT, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn restock_product_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&RESTOCK_PRODUCT, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn restock_product_answers_any_message(req in any_restock_product()) {
        check(&RESTOCK_PRODUCT, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn restock_product_answers_a_mutated_request(
        req in valid_restock_product(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&RESTOCK_PRODUCT, &bytes)?;
        check(&RESTOCK_PRODUCT, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn change_product_price_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&CHANGE_PRODUCT_PRICE, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn change_product_price_answers_any_message(req in any_change_product_price()) {
        check(&CHANGE_PRODUCT_PRICE, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn change_product_price_answers_a_mutated_request(
        req in valid_change_product_price(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&CHANGE_PRODUCT_PRICE, &bytes)?;
        check(&CHANGE_PRODUCT_PRICE, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn purchase_products_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&PURCHASE_PRODUCTS, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn purchase_products_answers_any_message(req in any_purchase_products()) {
        check(&PURCHASE_PRODUCTS, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn purchase_products_answers_a_mutated_request(
        req in valid_purchase_products(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&PURCHASE_PRODUCTS, &bytes)?;
        check(&PURCHASE_PRODUCTS, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn create_route_answers_any_bytes(bytes in fuzz::bytes(10)) {
        check(&CREATE_ROUTE, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn create_route_answers_any_message(req in any_create_route()) {
        check(&CREATE_ROUTE, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn create_route_answers_a_mutated_request(req in valid_create_route(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&CREATE_ROUTE, &bytes)?;
        check(&CREATE_ROUTE, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }
}

// ---------------------------------------------------------------------------
// The answer function itself

fn reason_of(answer: Result<(), Status>) -> String {
    let status = answer.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .error_info()
        .expect("an ErrorInfo")
        .reason
        .clone()
}

#[test]
fn the_answer_tells_undecodable_from_invalid() {
    // Field 1 (`request_id`), length 2, not UTF-8.
    let not_utf8 = [0x0a, 0x02, 0xff, 0xfe];
    for rpc in [
        &CREATE_USER,
        &UPDATE_USER_PROFILE,
        &CREATE_ORDER,
        &UPDATE_ORDER_STATUS,
        &CREATE_PRODUCT,
        &RESTOCK_PRODUCT,
        &CHANGE_PRODUCT_PRICE,
        &PURCHASE_PRODUCTS,
        &CREATE_ROUTE,
    ] {
        assert_eq!(reason_of((rpc.answer)(&not_utf8)), "MALFORMED_MESSAGE");
        assert_eq!(reason_of((rpc.answer)(&[])), "INVALID_FIELD");
    }
    // A correlation id field that is not printable ASCII is refused before
    // the parse, as `unary` does.
    let bad_cid = pb::CreateUserRequest {
        request_id: "r".into(),
        correlation_id: "not ascii ✗".into(),
        email: "a@example.com".into(),
        name: "A".into(),
    };
    let status = create_user(&bad_cid.encode_to_vec()).expect_err("refused");
    let details = status.get_error_details();
    assert_eq!(
        details
            .bad_request()
            .expect("a BadRequest")
            .field_violations[0]
            .field,
        "correlation_id"
    );
    assert!(
        create_user(
            &pb::CreateUserRequest {
                correlation_id: String::new(),
                ..bad_cid
            }
            .encode_to_vec()
        )
        .is_ok()
    );
}
