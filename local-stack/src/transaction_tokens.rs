//! A workaround for a second limitation of a dependency: the embedded
//! store's transaction token cache.
//!
//! dynoxide-rs 3.2.0 remembers the `ClientRequestToken` of every
//! TransactWriteItems call for ten minutes, and on every call that carries a
//! token it walks the whole cache to evict the expired ones, under a lock
//! that serialises transactions. The AWS SDK fills a fresh token into every
//! TransactWriteItems call, so each append costs time proportional to the
//! number of appends in the last ten minutes: measured through CreateUser,
//! the rate fell from about 810/s to about 160/s over 100,000 appends (see
//! BENCHMARKS.md), with half the CPU time in that eviction.
//!
//! The services' SDK therefore reaches the embedded store through
//! [`StripTransactionTokens`], an HTTP client that removes the token from
//! TransactWriteItems requests before they leave the process. Nothing in the
//! system relies on the token: the command service's own idempotency record
//! makes a repeated append fail its conditions and be answered as a retry
//! (`dynabridge_event_store::append`), which is also what happens on AWS once a
//! token's ten minutes are over. Changing a signed body is harmless here
//! because dynoxide does not check signatures; it would not be against AWS,
//! which is why this client is only ever used for the embedded endpoint.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

const TARGET_HEADER: &str = "x-amz-target";
const TRANSACT_WRITE_ITEMS: &str = "DynamoDB_20120810.TransactWriteItems";
const TOKEN_FIELD: &str = "ClientRequestToken";

/// An SDK HTTP client that drops `ClientRequestToken` from
/// TransactWriteItems requests and passes everything else through as is.
#[derive(Clone, Debug)]
pub struct StripTransactionTokens {
    inner: SharedHttpClient,
}

impl StripTransactionTokens {
    /// Wraps `inner`, which does the actual HTTP.
    pub fn new(inner: SharedHttpClient) -> Self {
        Self { inner }
    }

    /// Wraps the SDK's own kind of client (hyper with rustls), which speaks
    /// the plain HTTP of the embedded endpoint too.
    pub fn with_default_client() -> Self {
        use aws_smithy_http_client::tls;
        Self::new(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build_https(),
        )
    }
}

impl HttpClient for StripTransactionTokens {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(StripConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct StripConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for StripConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        strip_token(&mut request);
        self.inner.call(request)
    }
}

/// Removes the token from a TransactWriteItems request; returns whether it
/// did. Any other request, or a body that is not a JSON object held in
/// memory, is left alone.
fn strip_token(request: &mut HttpRequest) -> bool {
    if request.headers().get(TARGET_HEADER) != Some(TRANSACT_WRITE_ITEMS) {
        return false;
    }
    let Some(bytes) = request.body().bytes() else {
        return false;
    };
    let Ok(serde_json::Value::Object(mut body)) = serde_json::from_slice(bytes) else {
        return false;
    };
    if body.remove(TOKEN_FIELD).is_none() {
        return false;
    }
    let Ok(stripped) = serde_json::to_vec(&body) else {
        return false;
    };
    request
        .headers_mut()
        .insert("content-length", stripped.len().to_string());
    *request.body_mut() = SdkBody::from(stripped);
    true
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, Put, ScalarAttributeType,
        TransactWriteItem,
    };

    use super::*;

    fn request(target: &str, body: &str) -> HttpRequest {
        let mut request = HttpRequest::new(SdkBody::from(body.to_owned()));
        request
            .headers_mut()
            .insert(TARGET_HEADER, target.to_owned());
        request
            .headers_mut()
            .insert("content-length", body.len().to_string());
        request
    }

    fn body_json(request: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(request.body().bytes().unwrap()).unwrap()
    }

    #[test]
    fn the_token_is_removed_from_transact_write_items_and_nothing_else() {
        let body = r#"{"ClientRequestToken":"abc","TransactItems":[{"Put":{"TableName":"t"}}]}"#;
        let mut req = request(TRANSACT_WRITE_ITEMS, body);
        assert!(strip_token(&mut req));
        let json = body_json(&req);
        assert_eq!(
            json,
            serde_json::json!({"TransactItems":[{"Put":{"TableName":"t"}}]})
        );
        let len: usize = req
            .headers()
            .get("content-length")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, req.body().bytes().unwrap().len());
    }

    #[test]
    fn other_requests_are_untouched() {
        let body = r#"{"ClientRequestToken":"abc","TableName":"t"}"#;
        for target in [
            "DynamoDB_20120810.PutItem",
            "DynamoDB_20120810.ExecuteTransaction",
            "DynamoDBStreams_20120810.GetRecords",
        ] {
            let mut req = request(target, body);
            assert!(!strip_token(&mut req), "{target}");
            assert_eq!(req.body().bytes().unwrap(), body.as_bytes());
        }
        let mut not_json = request(TRANSACT_WRITE_ITEMS, "not json");
        assert!(!strip_token(&mut not_json));
        assert_eq!(not_json.body().bytes().unwrap(), b"not json");
    }

    /// Through a real SDK client and a real embedded store: the same token
    /// on two different transactions is a mismatch for dynoxide, unless the
    /// token never reaches it.
    #[tokio::test]
    async fn the_store_never_sees_the_token() {
        let db = dynoxide::Database::memory().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(dynoxide::server::serve_with_shutdown(listener, db, async {
            let _ = stopped.await;
        }));
        let sdk = dynabridge_aws::load_sdk_config(
            &dynabridge_aws::AwsArgs {
                endpoint_url: Some(endpoint),
                region: Some("us-east-1".into()),
            },
            Some(dynabridge_aws::StaticCredentials::local()),
        )
        .await;
        let plain = aws_sdk_dynamodb::Client::new(&sdk);
        let stripped = aws_sdk_dynamodb::Client::new(
            &sdk.into_builder()
                .http_client(StripTransactionTokens::with_default_client())
                .build(),
        );
        plain
            .create_table()
            .table_name("tokens")
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("k")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("k")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let put = |key: &str| {
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name("tokens")
                        .item("k", AttributeValue::S(key.to_owned()))
                        .build()
                        .unwrap(),
                )
                .build()
        };
        let transact = |client: &aws_sdk_dynamodb::Client, key: &str| {
            client
                .transact_write_items()
                .client_request_token("same-token")
                .transact_items(put(key))
                .send()
        };

        // The control: the store does check tokens.
        transact(&plain, "a").await.unwrap();
        let err = transact(&plain, "b").await.unwrap_err();
        assert!(
            format!("{:?}", aws_sdk_dynamodb::Error::from(err))
                .contains("IdempotentParameterMismatch")
        );
        // Through the stripping client, the token is gone.
        transact(&stripped, "c").await.unwrap();
        transact(&stripped, "d").await.unwrap();
        let items = plain.scan().table_name("tokens").send().await.unwrap();
        assert_eq!(items.count(), 3);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
