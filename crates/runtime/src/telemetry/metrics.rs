//! Prometheus metrics: one registry per running service, its `/metrics`
//! endpoint, and the tower layer that counts and times every gRPC call the
//! service answers.
//!
//! A registry per service rather than one per process, so that services
//! running side by side in one process (the local stack, tests) each show
//! their own; [`CombinedMetrics`] serves several such registries as one
//! scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use prometheus::proto::{LabelPair, MetricFamily};
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

/// What a `/metrics` endpoint serves: a service's registry, or the
/// registries of several services sharing a process ([`CombinedMetrics`]).
pub trait Gather {
    /// The metric families, each name once, none empty.
    fn gather(&self) -> Vec<MetricFamily>;
}

impl Gather for Registry {
    fn gather(&self) -> Vec<MetricFamily> {
        Registry::gather(self)
    }
}

/// `metrics` in the Prometheus text format.
pub fn render<G: Gather + ?Sized>(metrics: &G) -> String {
    let mut out = Vec::new();
    // Encoding into memory fails only on a metric the registry itself
    // refused at registration.
    if let Err(error) = TextEncoder::new().encode(&metrics.gather(), &mut out) {
        tracing::warn!(%error, "cannot encode the metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The label that tells apart the series of services sharing a scrape.
pub const COMPONENT_LABEL: &str = "component";

/// The registries of several services running in one process (the local
/// stack), gathered as one scrape. Each service registers its metrics in
/// the registry [`CombinedMetrics::service`] hands it, as it would in one
/// of its own; its series are shown with [`COMPONENT_LABEL`] set to its
/// name, since the services' families share names (every gRPC server
/// counts its calls under the same name). The process-wide AWS call
/// counters ([`dynabridge_aws::calls`]), which every service registers too, are
/// shown once, unlabelled: summing a copy per service would count every
/// call several times.
#[derive(Clone, Debug)]
pub struct CombinedMetrics {
    /// The process-wide counters, and the names of their families.
    process: Registry,
    process_families: BTreeSet<String>,
    services: Vec<(String, Registry)>,
}

impl CombinedMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let process = Registry::new();
        let calls = dynabridge_aws::calls::AwsCallMetrics::global();
        calls.register(&process)?;
        Ok(Self {
            process,
            process_families: calls.family_names().into_iter().collect(),
            services: Vec::new(),
        })
    }

    /// A registry for the service `name`, gathered from now on. Add every
    /// service before serving: a clone taken earlier does not see the
    /// services added after it.
    pub fn service(&mut self, name: &str) -> Registry {
        let registry = Registry::new();
        self.services.push((name.to_owned(), registry.clone()));
        registry
    }
}

impl Gather for CombinedMetrics {
    fn gather(&self) -> Vec<MetricFamily> {
        let mut families: BTreeMap<String, MetricFamily> = self
            .process
            .gather()
            .into_iter()
            .map(|family| (family.name().to_owned(), family))
            .collect();
        for (service, registry) in &self.services {
            let mut component = LabelPair::default();
            component.set_name(COMPONENT_LABEL.to_owned());
            component.set_value(service.clone());
            for mut family in registry.gather() {
                if self.process_families.contains(family.name()) {
                    continue;
                }
                for metric in family.mut_metric() {
                    let mut labels = metric.take_label();
                    labels.push(component.clone());
                    metric.set_label(labels);
                }
                match families.get_mut(family.name()) {
                    None => {
                        families.insert(family.name().to_owned(), family);
                    }
                    Some(shared) if shared.get_field_type() == family.get_field_type() => {
                        shared.mut_metric().extend(family.take_metric());
                    }
                    // Two types under one name is not a valid scrape; the
                    // first service's stays.
                    Some(shared) => tracing::warn!(
                        family = shared.name(),
                        service = %service,
                        "a metric family of another type has this name, left out"
                    ),
                }
            }
        }
        families.into_values().collect()
    }
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
    /// Serves `metrics` on `listener` until [`MetricsEndpoint::stop`]; with
    /// no listener, nothing.
    pub fn spawn<G>(metrics: &G, listener: Option<tokio::net::TcpListener>) -> Self
    where
        G: Gather + Clone + Send + Sync + 'static,
    {
        let running = listener.map(|listener| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve_metrics(metrics.clone(), listener, async {
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

/// Serves `GET /metrics` from `metrics` on `listener` until `stop`
/// resolves.
pub async fn serve_metrics<G>(
    metrics: G,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    G: Gather + Clone + Send + Sync + 'static,
{
    use axum::http::header;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = render(&metrics);
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
    fn combined_services_show_their_own_series_and_the_process_counters_once() {
        let mut combined = CombinedMetrics::new().unwrap();
        let services = ["front", "back"].map(|name| {
            let registry = combined.service(name);
            dynabridge_aws::calls::register_call_metrics(&registry).unwrap();
            let grpc = GrpcMetrics::register(&registry).unwrap();
            // The same labels in both: only the component tells them apart.
            grpc.observe("pkg.Service", "Method", Code::Ok, 0.01);
            grpc
        });
        services[1].observe("pkg.Service", "Method", Code::Ok, 0.01);
        let calls = dynabridge_aws::calls::AwsCallMetrics::global();
        let before = calls.calls("test", "Combined");
        // Every process family has a series now, so none is left out empty.
        calls.errors("test", "Combined");
        calls.capacity_units("Combined", "table");

        let text = render(&combined);
        let types: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        let unique: BTreeSet<&str> = types.iter().copied().collect();
        assert_eq!(types.len(), unique.len(), "a family twice:\n{text}");
        for family in calls.family_names() {
            assert!(
                unique.contains(family.as_str()),
                "{family} missing:\n{text}"
            );
        }
        let requests = |component: &str| {
            text.lines().find_map(|line| {
                let rest = line.strip_prefix("dynabridge_grpc_server_requests_total{")?;
                rest.contains(&format!(r#"component="{component}""#))
                    .then(|| rest.rsplit_once(' ').map(|(_, v)| v.to_owned()))
                    .flatten()
            })
        };
        assert_eq!(requests("front").as_deref(), Some("1"), "{text}");
        assert_eq!(requests("back").as_deref(), Some("2"), "{text}");
        let series = format!(
            r#"dynabridge_aws_calls_total{{operation="Combined",service="test"}} {before}"#
        );
        assert_eq!(
            text.lines()
                .filter(|line| line.starts_with("dynabridge_aws_calls_total{")
                    && line.contains(r#"operation="Combined""#))
                .collect::<Vec<_>>(),
            vec![series.as_str()],
            "the process counters once, unlabelled"
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
