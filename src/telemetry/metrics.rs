//! Prometheus metrics: one registry per running service, its `/metrics`
//! endpoint, and the tower layer that counts and times every gRPC call the
//! service answers.
//!
//! A registry per service rather than one per process, so that services
//! running side by side in one process (the local stack, tests) each show
//! their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tonic::Code;

/// Latency buckets of gRPC calls, in seconds: a store call takes
/// milliseconds, a `min_version` read may wait up to the call's deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers `collector` with `registry`, under its own name.
pub fn register<C>(registry: &Registry, collector: C) -> Result<C, prometheus::Error>
where
    C: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into memory fails only on a metric the registry itself
    // refused at registration.
    if let Err(error) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(%error, "cannot encode the metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A running `/metrics` endpoint, or none.
#[derive(Debug)]
pub struct MetricsEndpoint {
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
}

impl MetricsEndpoint {
    /// Serves `registry` on `listener` until [`MetricsEndpoint::stop`]; with
    /// no listener, nothing.
    pub fn spawn(registry: &Registry, listener: Option<tokio::net::TcpListener>) -> Self {
        let running = listener.map(|listener| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve_metrics(registry.clone(), listener, async {
                let _ = stopped.await;
            }));
            (stop, task)
        });
        Self { running }
    }

    /// Stops serving, after the scrapes in flight.
    pub async fn stop(self) -> std::io::Result<()> {
        let Some((stop, task)) = self.running else {
            return Ok(());
        };
        let _ = stop.send(());
        task.await.map_err(std::io::Error::other)?
    }
}

/// Serves `GET /metrics` from `registry` on `listener` until `stop`
/// resolves.
pub async fn serve_metrics(
    registry: Registry,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = render(&registry);
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        TextEncoder::new().format_type().to_owned(),
                    )],
                    text,
                )
            }
        }),
    );
    // Not `addr`: tools that wait for a service's address read that field.
    tracing::info!(metrics_addr = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

/// The calls of one gRPC server, by service, method and status code.
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl GrpcMetrics {
    const LABELS: [&str; 3] = ["grpc_service", "grpc_method", "grpc_code"];

    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "dynabridge_grpc_server_requests_total",
                        "gRPC calls answered, by service, method and status code",
                    ),
                    &Self::LABELS,
                )?,
            )?,
            latency: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "dynabridge_grpc_server_request_duration_seconds",
                        "Time from a gRPC call's arrival to the end of its response, by service, method and status code",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &Self::LABELS,
                )?,
            )?,
        })
    }

    /// The tower layer that records into these metrics.
    pub fn layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer(Arc::new(self.clone()))
    }

    fn observe(&self, service: &str, method: &str, code: Code, elapsed: f64) {
        // An unknown service or method is answered UNIMPLEMENTED; whatever a
        // client made up must not become a label value.
        let (service, method) = match code {
            Code::Unimplemented => ("unknown", "unknown"),
            _ => (service, method),
        };
        let code = code_name(code);
        self.requests
            .with_label_values(&[service, method, code])
            .inc();
        self.latency
            .with_label_values(&[service, method, code])
            .observe(elapsed);
    }
}

/// A status code as its canonical name, as gRPC documents them.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `grpc-status` of a header map, if present and readable.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from(value.parse::<i32>().ok()?))
}

/// Counts and times every call of the server it wraps
/// (`tonic::transport::Server::builder().layer(...)`).
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer(Arc<GrpcMetrics>);

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

/// One call being answered: recorded exactly once, when its status is
/// known, or when it is dropped unfinished (the client went away).
#[derive(Debug)]
struct Call {
    metrics: Arc<GrpcMetrics>,
    service: String,
    method: String,
    started: Instant,
}

impl Call {
    fn record(self, code: Code) {
        self.metrics.observe(
            &self.service,
            &self.method,
            code,
            self.started.elapsed().as_secs_f64(),
        );
    }
}

impl<S, ReqBody, ResBody> tonic::codegen::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tonic::codegen::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // gRPC paths are `/<package>.<Service>/<Method>`.
        let path = request.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let call = Call {
            metrics: self.metrics.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
        };
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future; its body carries the call on.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // An error is answered "trailers only": the status is in
                // the headers. Otherwise it comes in the trailers.
                let early = grpc_status(response.headers());
                Ok(response.map(|inner| MeteredBody {
                    inner,
                    call: MeteredCall { call, early },
                }))
            }
            Err(error) => {
                if let Some(call) = call {
                    call.record(Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

/// What a response body records, once.
#[derive(Debug)]
struct MeteredCall {
    call: Option<Call>,
    /// The status from the response headers, if the call ended there.
    early: Option<Code>,
}

impl MeteredCall {
    fn finish(&mut self, trailers: Option<Code>) {
        if let Some(call) = self.call.take() {
            // A body that ends without any status is not a gRPC response;
            // clients read that as UNKNOWN.
            call.record(trailers.or(self.early).unwrap_or(Code::Unknown));
        }
    }
}

impl Drop for MeteredCall {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            // Dropped before its end: the client cancelled or went away.
            call.record(self.early.unwrap_or(Code::Cancelled));
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the status is known.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: MeteredCall,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish(grpc_status(trailers));
                }
            }
            Some(Err(_)) => this.call.finish(Some(Code::Internal)),
            None => this.call.finish(None),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(registry: &Registry, labels: &[(&str, &str)]) -> Option<u64> {
        let families = registry.gather();
        let family = families
            .iter()
            .find(|f| f.name() == "dynabridge_grpc_server_requests_total")?;
        family
            .get_metric()
            .iter()
            .find(|m| {
                labels.iter().all(|(name, value)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *name && l.value() == *value)
                })
            })
            .map(|m| m.get_counter().get_value() as u64)
    }

    #[test]
    fn made_up_methods_do_not_become_labels() {
        let registry = Registry::new();
        let metrics = GrpcMetrics::register(&registry).unwrap();
        metrics.observe("pkg.Service", "Method", Code::InvalidArgument, 0.01);
        metrics.observe("pkg.Service", "Invented", Code::Unimplemented, 0.01);
        assert_eq!(
            sample(
                &registry,
                &[("grpc_method", "Method"), ("grpc_code", "INVALID_ARGUMENT")]
            ),
            Some(1)
        );
        assert_eq!(sample(&registry, &[("grpc_method", "Invented")]), None);
        assert_eq!(
            sample(
                &registry,
                &[("grpc_service", "unknown"), ("grpc_code", "UNIMPLEMENTED")]
            ),
            Some(1)
        );
        assert!(
            render(&registry).contains("dynabridge_grpc_server_request_duration_seconds_bucket")
        );
    }

    #[test]
    fn a_call_is_recorded_once_whatever_ends_it() {
        let registry = Registry::new();
        let metrics = Arc::new(GrpcMetrics::register(&registry).unwrap());
        let call = |method: &str| Call {
            metrics: metrics.clone(),
            service: "pkg.Service".into(),
            method: method.into(),
            started: Instant::now(),
        };
        // Status in the trailers, then the end of the body.
        let mut ok = MeteredCall {
            call: Some(call("Ok")),
            early: None,
        };
        ok.finish(Some(Code::Ok));
        ok.finish(None);
        drop(ok);
        // Trailers only.
        let mut refused = MeteredCall {
            call: Some(call("Refused")),
            early: Some(Code::NotFound),
        };
        refused.finish(None);
        // Dropped half way.
        drop(MeteredCall {
            call: Some(call("Gone")),
            early: None,
        });
        let count =
            |method, code| sample(&registry, &[("grpc_method", method), ("grpc_code", code)]);
        assert_eq!(count("Ok", "OK"), Some(1));
        assert_eq!(count("Refused", "NOT_FOUND"), Some(1));
        assert_eq!(count("Gone", "CANCELLED"), Some(1));
    }
}
