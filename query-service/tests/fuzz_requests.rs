//! Fuzzing of what the query service does with a request before it reads a
//! read model: decoding, the request's parse and, for the listings, the
//! opening of the page token. (A proptest over bytes: no nightly toolchain,
//! so no cargo-fuzz.) Queries carry no correlation id field, so `unary`
//! refuses nothing of theirs before the handler.
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

use std::sync::LazyLock;

use dynabridge::codec::malformed_request;
use dynabridge::convert::status_from_pb;
use dynabridge::pb;
use dynabridge::pb::ErrorReason;
use dynabridge::schema::{order_summaries, products, read_model};
use dynabridge_domain::{OrderStatus, UserId};
use dynabridge_runtime::error::AppError;
use dynabridge_runtime::page_token::Listing;
use dynabridge_testkit::fuzz;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use prost::Message;
use query_service::page_token::PageTokens;
use query_service::reader::{OrderListing, PageKey, ProductListing};
use query_service::request::{
    GetOrder, GetProduct, GetPurchase, GetUserByEmail, GetUserProfile, ListOrders, ListProducts,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------
// What the server answers

/// The page-token key of these tests' "deployment".
static TOKENS: LazyLock<PageTokens> =
    LazyLock::new(|| PageTokens::new(b"the key of the fuzzed query service").unwrap());

/// What the server answers `bytes` with, up to its first read: prost's
/// decode (as `dynabridge::codec` does), then `parse`, each error through
/// the real conversions.
fn answer<Req: Message + Default>(
    bytes: &[u8],
    parse: impl FnOnce(Req) -> Result<(), AppError>,
) -> Result<(), Status> {
    let req = Req::decode(bytes).map_err(|err| malformed_request(&err))?;
    parse(req)?;
    Ok(())
}

/// A listing's page token opened as `Queries::orders` does, before it reads.
fn open_page(query: ListOrders) -> Result<(), AppError> {
    if !query.page_token.is_empty() {
        TOKENS
            .open(&query.listing, &query.page_token)
            .map_err(|e| AppError::Invalid(e.into()))?;
    }
    Ok(())
}

/// A product listing's page token opened as `Queries::products` does,
/// before it reads.
fn open_products_page(query: ListProducts) -> Result<(), AppError> {
    if !query.page_token.is_empty() {
        TOKENS
            .open(&query.listing, &query.page_token)
            .map_err(|e| AppError::Invalid(e.into()))?;
    }
    Ok(())
}

fn get_user_profile(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::GetUserProfileRequest| {
        GetUserProfile::try_from(r)?;
        Ok(())
    })
}

fn get_user_by_email(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::GetUserByEmailRequest| {
        GetUserByEmail::try_from(r)?;
        Ok(())
    })
}

fn get_order(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::GetOrderRequest| {
        GetOrder::try_from(r)?;
        Ok(())
    })
}

fn list_orders_by_user(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::ListOrdersByUserRequest| {
        open_page(ListOrders::try_from(r)?)
    })
}

fn list_orders_by_status(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::ListOrdersByStatusRequest| {
        open_page(ListOrders::try_from(r)?)
    })
}

fn get_product(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::GetProductRequest| {
        GetProduct::try_from(r)?;
        Ok(())
    })
}

fn get_purchase(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::GetPurchaseRequest| {
        GetPurchase::try_from(r)?;
        Ok(())
    })
}

fn list_products(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::ListProductsRequest| {
        open_products_page(ListProducts::try_from(r)?)
    })
}

fn list_low_stock_products(bytes: &[u8]) -> Result<(), Status> {
    answer(bytes, |r: pb::ListLowStockProductsRequest| {
        open_products_page(ListProducts::try_from(r)?)
    })
}

/// An RPC: its answer, and the top-level fields of its request, which every
/// field violation must be under.
struct Rpc {
    answer: fn(&[u8]) -> Result<(), Status>,
    fields: &'static [&'static str],
}

const GET_USER_PROFILE: Rpc = Rpc {
    answer: get_user_profile,
    fields: &["user_id", "min_version"],
};
const GET_USER_BY_EMAIL: Rpc = Rpc {
    answer: get_user_by_email,
    fields: &["email"],
};
const GET_ORDER: Rpc = Rpc {
    answer: get_order,
    fields: &["order_id", "min_version"],
};
const LIST_ORDERS_BY_USER: Rpc = Rpc {
    answer: list_orders_by_user,
    fields: &["user_id", "page_size", "page_token"],
};
const LIST_ORDERS_BY_STATUS: Rpc = Rpc {
    answer: list_orders_by_status,
    fields: &["status", "page_size", "page_token"],
};
const GET_PRODUCT: Rpc = Rpc {
    answer: get_product,
    fields: &["sku", "min_version"],
};
const GET_PURCHASE: Rpc = Rpc {
    answer: get_purchase,
    fields: &["purchase_id", "min_version", "wait_for_outcome"],
};
const LIST_PRODUCTS: Rpc = Rpc {
    answer: list_products,
    fields: &["page_size", "page_token"],
};
const LIST_LOW_STOCK_PRODUCTS: Rpc = Rpc {
    answer: list_low_stock_products,
    fields: &["page_size", "page_token"],
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

/// Ids the page tokens are issued for too, so that an arbitrary id and an
/// arbitrary token often match.
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

/// A sku: arbitrary text, or of the allowed characters, of the allowed
/// length or not.
fn sku() -> impl Strategy<Value = String> {
    prop_oneof![text(), valid_sku(), "[A-Za-z0-9._-]{65,70}"]
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

/// A page size: mostly around the allowed 0 to 100.
fn page_size() -> impl Strategy<Value = i32> {
    prop_oneof![
        1 => any::<i32>(),
        4 => -2i32..110,
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
    ]
}

fn enum_i32() -> impl Strategy<Value = i32> {
    prop_oneof![any::<i32>(), -2i32..8, Just(i32::MIN), Just(i32::MAX)]
}

fn any_status() -> impl Strategy<Value = OrderStatus> {
    prop::sample::select(OrderStatus::ALL.to_vec())
}

/// A listing, over the ids and statuses the requests use.
fn listing() -> impl Strategy<Value = OrderListing> {
    prop_oneof![
        prop::sample::select(IDS)
            .prop_map(|id| OrderListing::ByUser(UserId::from_uuid(id.parse().unwrap()))),
        any_status().prop_map(OrderListing::ByStatus),
    ]
}

/// The key a page of `listing` resumes after, as the reader returns it.
fn page_key(listing: &OrderListing, order_id: uuid::Uuid, created_at: String) -> PageKey {
    let (attribute, value) = match listing {
        OrderListing::ByUser(user_id) => (order_summaries::USER_ID, user_id.to_string()),
        OrderListing::ByStatus(status) => (order_summaries::STATUS, status.as_str().to_owned()),
    };
    PageKey::from([
        (order_summaries::ORDER_ID.to_owned(), order_id.to_string()),
        (attribute.to_owned(), value),
        (read_model::CREATED_AT.to_owned(), created_at),
    ])
}

/// A product listing.
fn product_listing() -> impl Strategy<Value = ProductListing> {
    prop::sample::select(vec![ProductListing::All, ProductListing::LowStock])
}

/// The key a page of the product `listing` resumes after, as the reader
/// returns it.
fn product_page_key(listing: ProductListing, product_id: uuid::Uuid, stock: String) -> PageKey {
    let mut key = PageKey::from([(products::PRODUCT_ID.to_owned(), product_id.to_string())]);
    if listing == ProductListing::LowStock {
        key.insert(
            products::LOW_STOCK.to_owned(),
            products::LOW_STOCK_VALUE.to_owned(),
        );
        key.insert(products::STOCK.to_owned(), stock);
    }
    key
}

/// A page key that is none of the listings' but for chance.
fn other_key() -> impl Strategy<Value = Option<PageKey>> {
    prop::option::weighted(
        0.2,
        prop::collection::btree_map(text(), text(), 0..4).prop_map(PageKey::from_iter),
    )
}

/// `key` signed for `listing` by this deployment or by another.
fn sign<L: Listing<Key = PageKey>>(listing: &L, key: &PageKey, other_deployment: bool) -> String {
    if other_deployment {
        PageTokens::new(b"another deployment")
            .unwrap()
            .issue(listing, key)
    } else {
        TOKENS.issue(listing, key)
    }
}

/// A page token: arbitrary text, token-shaped, or issued by this deployment
/// (for a listing the request may or may not be, of orders or of products,
/// with a key it may or may not accept) or by another.
fn page_token() -> impl Strategy<Value = String> {
    let issued = (
        listing(),
        any::<u128>(),
        text(),
        other_key(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(listing, order_id, created_at, other_key, other_deployment)| {
                let key = other_key.unwrap_or_else(|| {
                    page_key(&listing, uuid::Uuid::from_u128(order_id), created_at)
                });
                sign(&listing, &key, other_deployment)
            },
        );
    let issued_for_products = (
        product_listing(),
        any::<u128>(),
        prop_oneof![int64().prop_map(|n| n.to_string()), text()],
        other_key(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(listing, product_id, stock, other_key, other_deployment)| {
                let key = other_key.unwrap_or_else(|| {
                    product_page_key(listing, uuid::Uuid::from_u128(product_id), stock)
                });
                sign(&listing, &key, other_deployment)
            },
        );
    prop_oneof![
        1 => text(),
        1 => "[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_=+/-]{0,50}",
        3 => issued,
        3 => issued_for_products,
    ]
}

prop_compose! {
    fn any_get_user_profile()(user_id in id(), min_version in int64()) -> pb::GetUserProfileRequest {
        pb::GetUserProfileRequest { user_id, min_version }
    }
}

prop_compose! {
    fn any_get_user_by_email()(email in email()) -> pb::GetUserByEmailRequest {
        pb::GetUserByEmailRequest { email }
    }
}

prop_compose! {
    fn any_get_order()(order_id in id(), min_version in int64()) -> pb::GetOrderRequest {
        pb::GetOrderRequest { order_id, min_version }
    }
}

prop_compose! {
    fn any_list_orders_by_user()(
        user_id in id(), page_size in page_size(), page_token in page_token(),
    ) -> pb::ListOrdersByUserRequest {
        pb::ListOrdersByUserRequest { user_id, page_size, page_token }
    }
}

prop_compose! {
    fn any_list_orders_by_status()(
        status in prop_oneof![enum_i32(), 1i32..=5],
        page_size in page_size(),
        page_token in page_token(),
    ) -> pb::ListOrdersByStatusRequest {
        pb::ListOrdersByStatusRequest { status, page_size, page_token }
    }
}

prop_compose! {
    fn any_get_product()(sku in sku(), min_version in int64()) -> pb::GetProductRequest {
        pb::GetProductRequest { sku, min_version }
    }
}

prop_compose! {
    fn any_get_purchase()(
        purchase_id in id(), min_version in int64(), wait_for_outcome in any::<bool>(),
    ) -> pb::GetPurchaseRequest {
        pb::GetPurchaseRequest { purchase_id, min_version, wait_for_outcome }
    }
}

prop_compose! {
    fn any_list_products()(
        page_size in page_size(), page_token in page_token(),
    ) -> pb::ListProductsRequest {
        pb::ListProductsRequest { page_size, page_token }
    }
}

prop_compose! {
    fn any_list_low_stock_products()(
        page_size in page_size(), page_token in page_token(),
    ) -> pb::ListLowStockProductsRequest {
        pb::ListLowStockProductsRequest { page_size, page_token }
    }
}

// ---------------------------------------------------------------------------
// Valid requests, and their mutations

fn valid_id() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

fn valid_email() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+_%-]{1,10}(\\.[a-z0-9+_%-]{1,5}){0,2}@[a-zA-Z0-9]{1,10}\\.[a-z]{2,6}"
}

fn valid_sku() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

/// A page token of `listing`: none (the first page), or one issued for it.
fn valid_page_token(listing: OrderListing) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (
            any::<u128>(),
            "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\\.[0-9]{6}Z"
        )
            .prop_map(move |(order_id, created_at)| {
                TOKENS.issue(
                    &listing,
                    &page_key(&listing, uuid::Uuid::from_u128(order_id), created_at),
                )
            }),
    ]
}

/// A page token of the product `listing`: none (the first page), or one
/// issued for it.
fn valid_product_page_token(listing: ProductListing) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (any::<u128>(), 0i64..=1_000_000_000).prop_map(move |(product_id, stock)| {
            TOKENS.issue(
                &listing,
                &product_page_key(
                    listing,
                    uuid::Uuid::from_u128(product_id),
                    stock.to_string(),
                ),
            )
        }),
    ]
}

prop_compose! {
    fn valid_get_user_profile()(user_id in valid_id(), min_version in 0i64..1000)
        -> pb::GetUserProfileRequest
    {
        pb::GetUserProfileRequest { user_id, min_version }
    }
}

prop_compose! {
    fn valid_get_user_by_email()(email in valid_email()) -> pb::GetUserByEmailRequest {
        pb::GetUserByEmailRequest { email }
    }
}

prop_compose! {
    fn valid_get_order()(order_id in valid_id(), min_version in 0i64..1000) -> pb::GetOrderRequest {
        pb::GetOrderRequest { order_id, min_version }
    }
}

fn valid_list_orders_by_user() -> impl Strategy<Value = pb::ListOrdersByUserRequest> {
    any::<u128>().prop_flat_map(|n| {
        let user_id = UserId::from_uuid(uuid::Uuid::from_u128(n));
        (0i32..=100, valid_page_token(OrderListing::ByUser(user_id))).prop_map(
            move |(page_size, page_token)| pb::ListOrdersByUserRequest {
                user_id: user_id.to_string(),
                page_size,
                page_token,
            },
        )
    })
}

fn valid_list_orders_by_status() -> impl Strategy<Value = pb::ListOrdersByStatusRequest> {
    (1i32..=5).prop_flat_map(|status| {
        let listing = OrderListing::ByStatus(status_from_pb(status).unwrap());
        (0i32..=100, valid_page_token(listing)).prop_map(move |(page_size, page_token)| {
            pb::ListOrdersByStatusRequest {
                status,
                page_size,
                page_token,
            }
        })
    })
}

prop_compose! {
    fn valid_get_product()(sku in valid_sku(), min_version in 0i64..1000) -> pb::GetProductRequest {
        pb::GetProductRequest { sku, min_version }
    }
}

prop_compose! {
    fn valid_get_purchase()(
        purchase_id in valid_id(), min_version in 0i64..1000, wait_for_outcome in any::<bool>(),
    ) -> pb::GetPurchaseRequest {
        pb::GetPurchaseRequest { purchase_id, min_version, wait_for_outcome }
    }
}

prop_compose! {
    fn valid_list_products()(
        page_size in 0i32..=100,
        page_token in valid_product_page_token(ProductListing::All),
    ) -> pb::ListProductsRequest {
        pb::ListProductsRequest { page_size, page_token }
    }
}

prop_compose! {
    fn valid_list_low_stock_products()(
        page_size in 0i32..=100,
        page_token in valid_product_page_token(ProductListing::LowStock),
    ) -> pb::ListLowStockProductsRequest {
        pb::ListLowStockProductsRequest { page_size, page_token }
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
    fn get_user_profile_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&GET_USER_PROFILE, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_user_profile_answers_any_message(req in any_get_user_profile()) {
        check(&GET_USER_PROFILE, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn get_user_profile_answers_a_mutated_request(
        req in valid_get_user_profile(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&GET_USER_PROFILE, &bytes)?;
        check(&GET_USER_PROFILE, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_user_by_email_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&GET_USER_BY_EMAIL, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_user_by_email_answers_any_message(req in any_get_user_by_email()) {
        check(&GET_USER_BY_EMAIL, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn get_user_by_email_answers_a_mutated_request(
        req in valid_get_user_by_email(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&GET_USER_BY_EMAIL, &bytes)?;
        check(&GET_USER_BY_EMAIL, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_order_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&GET_ORDER, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_order_answers_any_message(req in any_get_order()) {
        check(&GET_ORDER, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn get_order_answers_a_mutated_request(req in valid_get_order(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&GET_ORDER, &bytes)?;
        check(&GET_ORDER, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_orders_by_user_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&LIST_ORDERS_BY_USER, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_orders_by_user_answers_any_message(req in any_list_orders_by_user()) {
        check(&LIST_ORDERS_BY_USER, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn list_orders_by_user_answers_a_mutated_request(
        req in valid_list_orders_by_user(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&LIST_ORDERS_BY_USER, &bytes)?;
        check(&LIST_ORDERS_BY_USER, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_orders_by_status_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&LIST_ORDERS_BY_STATUS, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_orders_by_status_answers_any_message(req in any_list_orders_by_status()) {
        check(&LIST_ORDERS_BY_STATUS, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn list_orders_by_status_answers_a_mutated_request(
        req in valid_list_orders_by_status(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&LIST_ORDERS_BY_STATUS, &bytes)?;
        check(&LIST_ORDERS_BY_STATUS, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_product_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&GET_PRODUCT, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_product_answers_any_message(req in any_get_product()) {
        check(&GET_PRODUCT, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn get_product_answers_a_mutated_request(req in valid_get_product(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&GET_PRODUCT, &bytes)?;
        check(&GET_PRODUCT, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_purchase_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&GET_PURCHASE, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn get_purchase_answers_any_message(req in any_get_purchase()) {
        check(&GET_PURCHASE, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn get_purchase_answers_a_mutated_request(req in valid_get_purchase(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&GET_PURCHASE, &bytes)?;
        check(&GET_PURCHASE, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_products_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&LIST_PRODUCTS, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_products_answers_any_message(req in any_list_products()) {
        check(&LIST_PRODUCTS, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn list_products_answers_a_mutated_request(req in valid_list_products(), m in mutations()) {
        let bytes = req.encode_to_vec();
        check_valid(&LIST_PRODUCTS, &bytes)?;
        check(&LIST_PRODUCTS, &mutate(bytes, &m), DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_low_stock_products_answers_any_bytes(bytes in fuzz::bytes(6)) {
        check(&LIST_LOW_STOCK_PRODUCTS, &bytes, DECODE_OR_PARSE)?;
    }

    #[test]
    fn list_low_stock_products_answers_any_message(req in any_list_low_stock_products()) {
        check(&LIST_LOW_STOCK_PRODUCTS, &req.encode_to_vec(), PARSE)?;
    }

    #[test]
    fn list_low_stock_products_answers_a_mutated_request(
        req in valid_list_low_stock_products(),
        m in mutations(),
    ) {
        let bytes = req.encode_to_vec();
        check_valid(&LIST_LOW_STOCK_PRODUCTS, &bytes)?;
        check(&LIST_LOW_STOCK_PRODUCTS, &mutate(bytes, &m), DECODE_OR_PARSE)?;
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
    // Field 1, length 2, not UTF-8: a string field in every request but
    // ListOrdersByStatus and the product listings, where field 1 is a
    // varint (the status, the page size).
    let not_utf8 = [0x0a, 0x02, 0xff, 0xfe];
    for rpc in [
        &GET_USER_PROFILE,
        &GET_USER_BY_EMAIL,
        &GET_ORDER,
        &LIST_ORDERS_BY_USER,
        &LIST_ORDERS_BY_STATUS,
        &GET_PRODUCT,
        &GET_PURCHASE,
    ] {
        assert_eq!(reason_of((rpc.answer)(&not_utf8)), "MALFORMED_MESSAGE");
        assert_eq!(reason_of((rpc.answer)(&[])), "INVALID_FIELD");
    }
    // The product listings have no required field: the empty request is
    // the first page.
    for rpc in [&LIST_PRODUCTS, &LIST_LOW_STOCK_PRODUCTS] {
        assert_eq!(reason_of((rpc.answer)(&not_utf8)), "MALFORMED_MESSAGE");
        assert!((rpc.answer)(&[]).is_ok());
    }
    // A page token is opened: one of another listing is refused, naming it.
    let user = UserId::from_uuid(IDS[0].parse().unwrap());
    let other = OrderListing::ByUser(UserId::from_uuid(IDS[1].parse().unwrap()));
    let token = TOKENS.issue(
        &other,
        &page_key(
            &other,
            uuid::Uuid::nil(),
            "2026-01-01T00:00:00.000000Z".into(),
        ),
    );
    let req = pb::ListOrdersByUserRequest {
        user_id: user.to_string(),
        page_size: 0,
        page_token: token,
    };
    let status = list_orders_by_user(&req.encode_to_vec()).expect_err("refused");
    let details = status.get_error_details();
    assert_eq!(
        details
            .bad_request()
            .expect("a BadRequest")
            .field_violations[0]
            .field,
        "page_token"
    );
    let own = pb::ListOrdersByUserRequest {
        user_id: IDS[1].to_owned(),
        ..req
    };
    assert!(list_orders_by_user(&own.encode_to_vec()).is_ok());
    // Likewise for the product listings: a token of ListProducts is not
    // one of ListLowStockProducts.
    let all = ProductListing::All;
    let token = TOKENS.issue(
        &all,
        &product_page_key(all, uuid::Uuid::nil(), String::new()),
    );
    let req = pb::ListLowStockProductsRequest {
        page_size: 0,
        page_token: token.clone(),
    };
    let status = list_low_stock_products(&req.encode_to_vec()).expect_err("refused");
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .expect("a BadRequest")
            .field_violations[0]
            .field,
        "page_token"
    );
    let own = pb::ListProductsRequest {
        page_size: 0,
        page_token: token,
    };
    assert!(list_products(&own.encode_to_vec()).is_ok());
}
