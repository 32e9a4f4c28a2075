//! The protobuf codec of every generated client and server: prost's, except
//! for what a request that does not decode is answered with.
//!
//! tonic answers `INTERNAL` when a message does not decode, which is right
//! for a response (the server is at fault) and wrong for a request: invalid
//! UTF-8 in a string, a field of the wrong wire type or a truncated message
//! is the client's error. A request that does not decode is answered
//! `INVALID_ARGUMENT`, reason `MALFORMED_MESSAGE`, with a
//! `google.rpc.BadRequest` naming the field when the decoder knows it.
//!
//! Which message is a request is known by its name: buf's STANDARD lint
//! (`RPC_REQUEST_STANDARD_NAME`, checked in CI) makes every request type of
//! the contract `<Method>Request`, and no other message ends so.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

use crate::ERROR_DOMAIN;
use crate::pb::ErrorReason;

/// The codec the generated code uses (`codec_path` in `build.rs`).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// prost's decoding, with a request's decode error answered as bad input.
#[derive(Debug, Clone)]
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|err| {
            if is_request::<U>() {
                malformed_request(&err)
            } else {
                Status::new(Code::Internal, err.to_string())
            }
        })
    }
}

fn is_request<U>() -> bool {
    std::any::type_name::<U>().ends_with("Request")
}

/// The answer to a request whose bytes do not decode.
pub fn malformed_request(err: &prost::DecodeError) -> Status {
    let text = err.to_string();
    let (field, description) = decode_error_location(&text);
    let mut details = ErrorDetails::new();
    if let Some(field) = &field {
        details.add_bad_request_violation(field.clone(), description.to_owned());
    }
    details.set_error_info(
        ErrorReason::MalformedMessage.as_str_name(),
        ERROR_DOMAIN,
        std::collections::HashMap::new(),
    );
    let message = match &field {
        Some(field) => format!("the request does not decode: {field}: {description}"),
        None => format!("the request does not decode: {description}"),
    };
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// The field path (`items.sku`) and the cause, read from prost's text:
/// `failed to decode Protobuf message: OrderItem.sku: CreateOrderRequest.items: <cause>`,
/// innermost first. prost keeps the (message, field) pairs private; its
/// `Display` is the one way to them.
fn decode_error_location(text: &str) -> (Option<String>, &str) {
    let mut rest = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(text);
    let mut fields = Vec::new();
    while let Some((segment, after)) = rest.split_once(": ") {
        let Some((message, field)) = segment.split_once('.') else {
            break;
        };
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(message) || !ident(field) {
            break;
        }
        fields.push(field);
        rest = after;
    }
    fields.reverse();
    let path = (!fields.is_empty()).then(|| fields.join("."));
    (path, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn decode_status<U: Message + Default + std::fmt::Debug>(bytes: &[u8]) -> Status {
        let err = U::decode(bytes).expect_err("does not decode");
        if is_request::<U>() {
            malformed_request(&err)
        } else {
            Status::new(Code::Internal, err.to_string())
        }
    }

    #[test]
    fn invalid_utf8_in_a_request_is_invalid_argument_naming_the_field() {
        // Field 1 (`request_id`), length 2, bytes that are not UTF-8.
        let status = decode_status::<pb::CreateUserRequest>(&[0x0a, 0x02, 0xff, 0xfe]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations;
        assert_eq!(violations[0].field, "request_id");
        assert_eq!(
            details.error_info().expect("an ErrorInfo").reason,
            "MALFORMED_MESSAGE"
        );
    }

    #[test]
    fn a_nested_field_is_named_by_its_path() {
        // CreateOrderRequest.items (field 4) holding an OrderItem whose
        // `sku` (field 1) is not UTF-8.
        let item = [0x0a, 0x01, 0xff];
        let mut bytes = vec![0x22, item.len() as u8];
        bytes.extend_from_slice(&item);
        let status = decode_status::<pb::CreateOrderRequest>(&bytes);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(
            details
                .bad_request()
                .expect("a BadRequest")
                .field_violations[0]
                .field,
            "items.sku"
        );
    }

    #[test]
    fn a_truncated_request_is_invalid_argument_without_a_field() {
        // Field 1, length 10, and only 2 bytes.
        let status = decode_status::<pb::CreateUserRequest>(&[0x0a, 0x0a, b'a', b'b']);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.get_error_details().error_info().is_some());
    }

    #[test]
    fn a_response_that_does_not_decode_stays_internal() {
        let status = decode_status::<pb::CreateUserResponse>(&[0x0a, 0x02, 0xff, 0xfe]);
        assert_eq!(status.code(), Code::Internal);
    }

    #[test]
    fn every_request_type_and_no_other_is_seen_as_a_request() {
        assert!(is_request::<pb::CreateOrderRequest>());
        assert!(is_request::<pb::ListOrdersByStatusRequest>());
        assert!(!is_request::<pb::CreateOrderResponse>());
        assert!(!is_request::<pb::EventEnvelope>());
    }

    #[test]
    fn the_location_is_read_innermost_first() {
        let (field, cause) = decode_error_location(
            "failed to decode Protobuf message: OrderItem.sku: CreateOrderRequest.items: invalid string value: data is not UTF-8 encoded",
        );
        assert_eq!(field.as_deref(), Some("items.sku"));
        assert_eq!(cause, "invalid string value: data is not UTF-8 encoded");
        let (field, cause) =
            decode_error_location("failed to decode Protobuf message: buffer underflow");
        assert_eq!(field, None);
        assert_eq!(cause, "buffer underflow");
    }
}
