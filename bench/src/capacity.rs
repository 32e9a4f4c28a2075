//! Capacity accounting for the peer. dynamo-es does not ask DynamoDB for
//! `ReturnConsumedCapacity`, so its calls would report none. This
//! interceptor adds `"ReturnConsumedCapacity": "TOTAL"` to the JSON of every
//! DynamoDB data call that lacks it, before signing: the call does the same
//! work, and the counters of `dynabridge_aws` then see what it consumed.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// The operations that accept `ReturnConsumedCapacity`.
const DATA_CALLS: &[&str] = &[
    "DynamoDB_20120810.GetItem",
    "DynamoDB_20120810.PutItem",
    "DynamoDB_20120810.UpdateItem",
    "DynamoDB_20120810.DeleteItem",
    "DynamoDB_20120810.Query",
    "DynamoDB_20120810.Scan",
    "DynamoDB_20120810.BatchGetItem",
    "DynamoDB_20120810.BatchWriteItem",
    "DynamoDB_20120810.TransactGetItems",
    "DynamoDB_20120810.TransactWriteItems",
];

#[derive(Debug, Default)]
pub struct AskForCapacity;

impl Intercept for AskForCapacity {
    fn name(&self) -> &'static str {
        "LoadgenAskForCapacity"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        if !DATA_CALLS.contains(&target) {
            return Ok(());
        }
        let Some(body) = request.body().bytes().and_then(with_capacity) else {
            return Ok(());
        };
        request
            .headers_mut()
            .insert("content-length", body.len().to_string());
        *request.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

/// The request JSON with `ReturnConsumedCapacity: TOTAL`, or `None` when it
/// already asks or is not a JSON object.
fn with_capacity(body: &[u8]) -> Option<Vec<u8>> {
    let mut json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = json.as_object_mut()?;
    if object.contains_key("ReturnConsumedCapacity") {
        return None;
    }
    object.insert("ReturnConsumedCapacity".into(), "TOTAL".into());
    serde_json::to_vec(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_ask_once() {
        let out = with_capacity(br#"{"TableName":"t"}"#).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["ReturnConsumedCapacity"], "TOTAL");
        assert_eq!(json["TableName"], "t");
        assert!(with_capacity(&out).is_none());
        assert!(with_capacity(b"[]").is_none());
    }
}
