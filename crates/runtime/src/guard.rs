//! The limits every call is held to, answered with the codes gRPC's
//! conventions give them, and the fail-fast gate of the API while the store
//! is known to be unreachable. A tower layer on every server
//! ([`crate::grpc::ApiServer`]), inside the call metrics, so that what they
//! count is what the client got.
//!
//! - Metadata over [`MAX_METADATA_BYTES`] is `RESOURCE_EXHAUSTED`,
//!   `METADATA_TOO_LARGE`. The HTTP/2 header list limit is set well above
//!   it ([`HTTP2_MAX_HEADER_LIST_BYTES`]): over that, hyper answers HTTP 431
//!   before anything of ours runs, which a client sees as `UNKNOWN`.
//! - A request message over [`MAX_MESSAGE_BYTES`] is `RESOURCE_EXHAUSTED`,
//!   `MESSAGE_TOO_LARGE`. tonic checks the size before decoding and
//!   answers `OUT_OF_RANGE`; no handler of ours answers that code (see
//!   [`crate::grpc::reason_code`]), so every `OUT_OF_RANGE` leaving a server
//!   is tonic's size limit, and is answered as gRPC's conventions say.
//! - While the store check last failed, an API call is answered at once
//!   with `UNAVAILABLE`, `STORE_UNAVAILABLE` and a `RetryInfo`, and asks for
//!   a new check; health and reflection are answered as ever. Nothing was
//!   sent to the store, so nothing is in doubt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;
use tonic_types::ErrorDetails;

use crate::grpc::status_with_reason;
use crate::health::Recheck;
use dynabridge::pb::ErrorReason as Reason;

/// The largest request message a server decodes: tonic's default, 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The most metadata a call may carry, counted as HTTP/2 counts a header
/// list: each entry's name and value, and 32 bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The HTTP/2 header list size the servers accept, so that metadata between
/// [`MAX_METADATA_BYTES`] and this reaches the layer and gets a gRPC answer.
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// The path prefix of the API services; health and reflection are outside.
const API_PREFIX: &str = "/dynabridge.v1.";

/// What the layer knows of the store: the health check's last answer, and
/// how to ask for a new one. [`crate::grpc::unary`] finds it in a call's
/// extensions and asks for a check when the store failed the call.
#[derive(Clone, Debug)]
pub struct StoreGate {
    reachable: watch::Receiver<bool>,
    recheck: Recheck,
    retry_after: Duration,
}

impl StoreGate {
    pub fn new(reachable: watch::Receiver<bool>, recheck: Recheck, retry_after: Duration) -> Self {
        Self {
            reachable,
            recheck,
            retry_after,
        }
    }

    fn open(&self) -> bool {
        *self.reachable.borrow()
    }

    /// Asks the health check to look at the store now.
    pub fn recheck(&self) {
        self.recheck.now();
    }
}

/// The layer; `gate` is `None` for a server whose readiness is not the
/// store's (the projector, which serves no API).
#[derive(Clone, Debug, Default)]
pub struct GuardLayer {
    gate: Option<StoreGate>,
}

impl GuardLayer {
    pub fn new(gate: Option<StoreGate>) -> Self {
        Self { gate }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    gate: Option<StoreGate>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tonic::codegen::Service<http::Request<ReqBody>> for Guard<S>
where
    S: tonic::codegen::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let size = header_list_size(request.headers());
        if size > MAX_METADATA_BYTES {
            tracing::debug!(size, "metadata over the limit, refused");
            return answer(metadata_too_large());
        }
        if let Some(gate) = &self.gate {
            if request.uri().path().starts_with(API_PREFIX) && !gate.open() {
                gate.recheck();
                return answer(store_unavailable(gate.retry_after));
            }
            request.extensions_mut().insert(gate.clone());
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(if is_out_of_range(&response) {
                message_too_large().into_http()
            } else {
                response
            })
        })
    }
}

fn answer<B, E>(status: Status) -> BoxFuture<Result<http::Response<B>, E>>
where
    B: Default + Send + 'static,
    E: Send + 'static,
{
    Box::pin(std::future::ready(Ok(status.into_http())))
}

/// The header list's size as HTTP/2 counts it (RFC 9113, 6.5.2).
fn header_list_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Whether the answer is a trailers-only `OUT_OF_RANGE`: tonic's message
/// size limit, the only source of that code.
fn is_out_of_range<B>(response: &http::Response<B>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11")
}

fn message_too_large() -> Status {
    status_with_reason(
        Reason::MessageTooLarge,
        format!("the request message is larger than the limit, {MAX_MESSAGE_BYTES} bytes"),
        [("limit_bytes".to_owned(), MAX_MESSAGE_BYTES.to_string())],
        ErrorDetails::new(),
    )
}

fn metadata_too_large() -> Status {
    status_with_reason(
        Reason::MetadataTooLarge,
        format!("the request metadata is larger than the limit, {MAX_METADATA_BYTES} bytes"),
        [("limit_bytes".to_owned(), MAX_METADATA_BYTES.to_string())],
        ErrorDetails::new(),
    )
}

/// The answer while the store is known to be unreachable.
pub fn store_unavailable(retry_after: Duration) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(retry_after));
    status_with_reason(
        Reason::StoreUnavailable,
        "the store is unreachable, retry with backoff",
        [],
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic::codegen::Service as _;
    use tonic_types::StatusExt;

    /// An inner service answering every call with `code`, counting calls.
    #[derive(Clone)]
    struct Answers(Code, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl tonic::codegen::Service<http::Request<()>> for Answers {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(Status::new(self.0, "inner").into_http()))
        }
    }

    fn status_of(response: &http::Response<tonic::body::Body>) -> Status {
        Status::from_header_map(response.headers()).expect("a trailers-only status")
    }

    fn guard(
        code: Code,
        gate: Option<StoreGate>,
    ) -> (
        Guard<Answers>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let calls = std::sync::Arc::default();
        let layer = GuardLayer::new(gate);
        (
            tower_layer::Layer::layer(&layer, Answers(code, std::sync::Arc::clone(&calls))),
            calls,
        )
    }

    fn call(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn out_of_range_from_the_size_limit_is_resource_exhausted() {
        let (mut guard, _) = guard(Code::OutOfRange, None);
        let response = guard
            .call(call("/dynabridge.v1.CommandService/CreateUser"))
            .await
            .unwrap();
        let status = status_of(&response);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
        assert_eq!(info.metadata["limit_bytes"], "4194304");
    }

    #[tokio::test]
    async fn other_answers_pass_unchanged() {
        let (mut guard, _) = guard(Code::NotFound, None);
        let response = guard
            .call(call("/dynabridge.v1.QueryService/GetOrder"))
            .await
            .unwrap();
        assert_eq!(status_of(&response).code(), Code::NotFound);
    }

    #[tokio::test]
    async fn metadata_over_the_limit_is_refused_before_the_service() {
        let (mut guard, calls) = guard(Code::Ok, None);
        let mut request = call("/dynabridge.v1.QueryService/GetOrder");
        let big = "x".repeat(MAX_METADATA_BYTES);
        request.headers_mut().insert("x-big", big.parse().unwrap());
        let response = guard.call(request).await.unwrap();
        let status = status_of(&response);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "METADATA_TOO_LARGE"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Just under the limit is served.
        let mut request = call("/dynabridge.v1.QueryService/GetOrder");
        let fits = "x".repeat(MAX_METADATA_BYTES - 64);
        request.headers_mut().insert("x-big", fits.parse().unwrap());
        guard.call(request).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn while_the_store_is_unreachable_api_calls_fail_fast_and_health_is_served() {
        let (reachable_tx, reachable) = watch::channel(true);
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let gate = StoreGate::new(
            reachable,
            Recheck::from(notify.clone()),
            Duration::from_secs(1),
        );
        let (mut guard, calls) = guard(Code::Ok, Some(gate));
        let api = "/dynabridge.v1.CommandService/CreateUser";

        guard.call(call(api)).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        reachable_tx.send_replace(false);
        let response = guard.call(call(api)).await.unwrap();
        let status = status_of(&response);
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "STORE_UNAVAILABLE");
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "not served"
        );
        // It asked for a new check.
        tokio::time::timeout(Duration::from_secs(1), notify.notified())
            .await
            .expect("a recheck was asked for");

        guard
            .call(call("/grpc.health.v1.Health/Check"))
            .await
            .unwrap();
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "health served"
        );

        reachable_tx.send_replace(true);
        guard.call(call(api)).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
