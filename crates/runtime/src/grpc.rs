//! gRPC plumbing shared by the servers: the one mapping from [`AppError`] to
//! `tonic::Status`, correlation ids and trace context, health, reflection,
//! graceful shutdown, and [`ApiServer`], the server set-up the command and
//! query services share.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::transport::server::Router;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower_layer::{Identity, Stack};
use tracing::Instrument as _;

use crate::error::AppError;
use crate::guard::{GuardLayer, HTTP2_MAX_HEADER_LIST_BYTES, StoreGate};
use crate::health::{HealthSpec, Readiness, ServiceHealth, reachable_gauge};
use crate::telemetry::metrics::{GrpcMetrics, GrpcMetricsLayer, MetricsEndpoint};
use crate::telemetry::{TRACEPARENT_HEADER, TraceParent};
use dynabridge::pb::ErrorReason as Reason;

/// Where a binary serves: its gRPC server (the health server, for the
/// projector) and, if any, its Prometheus `/metrics` endpoint. Bound by the
/// caller, so that a port that cannot be had fails before anything starts.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub metrics: Option<tokio::net::TcpListener>,
}

/// The connections `listener` accepts, as a server's incoming stream, with
/// Nagle's algorithm off. tonic ignores its own `tcp_nodelay` for a
/// listener bound by the caller, and with Nagle on a response written in
/// more than one segment waits for the client's delayed ACK: about 40 ms
/// on Linux (BENCHMARKS.md, `ListOrdersByUser`).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Why an [`ApiServer`] could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading the listen address")]
    ListenAddress(#[source] std::io::Error),
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("building the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving metrics")]
    MetricsEndpoint(#[source] std::io::Error),
    #[error("serving gRPC")]
    Grpc(#[from] tonic::transport::Error),
}

/// The server set-up every binary shares: its calls counted
/// ([`GrpcMetrics`]) and the process's AWS calls, in the service's
/// registry; health under the service's names ([`ServiceHealth`]);
/// reflection; and the registry's `/metrics` endpoint, if it has a
/// listener.
///
/// [`ApiServer::start`] sets all of it up and checks the store once, so
/// that the service can say it listens; [`ApiServer::serve`] adds the API
/// and serves until shutdown, and [`ApiServer::serve_health`] serves the
/// rest alone (the projector, which has no API).
pub struct ApiServer {
    /// The API service's gRPC name, if it serves one.
    api: Option<&'static str>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    listener: tokio::net::TcpListener,
    router: Router<Stack<GuardLayer, Stack<GrpcMetricsLayer, Identity>>>,
    health: ServiceHealth,
    metrics: MetricsEndpoint,
}

impl ApiServer {
    /// Registers the AWS call metrics, the gRPC metrics and the store's
    /// reachability gauge in `registry` (which must not hold them already),
    /// starts health as `health` says (see [`ServiceHealth::start`]), and
    /// serves `registry` on `listeners.metrics`, if any. Reflection lists
    /// `api` (the gRPC name of the service [`ApiServer::serve`] will add,
    /// if any), health and itself: what this server answers.
    pub async fn start(
        api: Option<&'static str>,
        health: HealthSpec,
        listeners: Listeners,
        registry: &prometheus::Registry,
    ) -> Result<Self, ServeError> {
        let addr = listeners
            .grpc
            .local_addr()
            .map_err(ServeError::ListenAddress)?;
        let metrics_addr = listeners
            .metrics
            .as_ref()
            .map(tokio::net::TcpListener::local_addr)
            .transpose()
            .map_err(ServeError::ListenAddress)?;
        dynabridge_aws::register_call_metrics(registry)?;
        let grpc_metrics = GrpcMetrics::register(registry)?;
        let follows_store = health.readiness == Readiness::Store;
        let (health, health_service) =
            ServiceHealth::start(health, Some(reachable_gauge(registry)?)).await;
        let gate = follows_store
            .then(|| StoreGate::new(health.reachable(), health.rechecker(), STORE_RETRY_DELAY));
        let (reflection_v1, reflection_v1alpha) = reflection_services(api)?;
        let router = tonic::transport::Server::builder()
            .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
            // The metrics outside, so that they count what the client got.
            .layer(grpc_metrics.layer())
            .layer(GuardLayer::new(gate))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let metrics = MetricsEndpoint::spawn(registry, listeners.metrics);
        Ok(Self {
            api,
            addr,
            metrics_addr,
            listener: listeners.grpc,
            router,
            health,
            metrics,
        })
    }

    /// The service's health: where it reports, and what the store check
    /// last saw.
    pub fn health(&self) -> &ServiceHealth {
        &self.health
    }

    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the `/metrics` endpoint, if it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves `api` beside health and reflection until `shutdown`
    /// resolves, then turns every health name NOT_SERVING, drains
    /// in-flight requests and stops the metrics endpoint.
    pub async fn serve<S>(
        mut self,
        api: S,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError>
    where
        S: tonic::codegen::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        debug_assert_eq!(Some(S::NAME), self.api, "the API named at start");
        self.router = self.router.add_service(api);
        self.serve_health(shutdown).await
    }

    /// Serves health, reflection and metrics alone until `shutdown`
    /// resolves, then stops as [`ApiServer::serve`] does.
    pub async fn serve_health(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            api: _,
            addr: _,
            metrics_addr: _,
            listener,
            router,
            health,
            metrics,
        } = self;
        let served = router
            .serve_with_incoming_shutdown(incoming(listener), health.shutdown_after(shutdown))
            .await;
        metrics.stop().await.map_err(ServeError::MetricsEndpoint)?;
        served?;
        Ok(())
    }
}

pub use dynabridge::ERROR_DOMAIN;

/// The metadata key a correlation id travels in, both ways.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// How soon a client is told to retry a call the store could not serve.
pub const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The gRPC code of each reason: the coarse class a reason belongs to.
pub fn reason_code(reason: Reason) -> Code {
    match reason {
        Reason::InvalidField | Reason::MalformedMessage | Reason::RequestIdReused => {
            Code::InvalidArgument
        }
        Reason::AggregateNotFound
        | Reason::NotParked
        | Reason::GenerationNotFound
        | Reason::ReplayNotFound => Code::NotFound,
        Reason::EmailTaken | Reason::AggregateExists => Code::AlreadyExists,
        Reason::InvalidStatusTransition
        | Reason::UniqueValueNotHeld
        | Reason::GenerationStateConflict
        | Reason::RebuildInProgress
        | Reason::ArchiveUnavailable
        | Reason::OutOfStock
        | Reason::InvalidStep => Code::FailedPrecondition,
        Reason::VersionConflict | Reason::ConcurrentModification => Code::Aborted,
        Reason::NotYetVisible | Reason::DeadlinePassed => Code::DeadlineExceeded,
        Reason::MessageTooLarge | Reason::MetadataTooLarge => Code::ResourceExhausted,
        Reason::StoreUnavailable | Reason::IndexMigrating => Code::Unavailable,
        Reason::InternalFault | Reason::ReasonUnspecified => Code::Internal,
    }
}

/// A status with `details`, and an `ErrorInfo` of `reason` and `metadata`.
pub fn status_with_reason(
    reason: Reason,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (String, String)>,
    mut details: ErrorDetails,
) -> Status {
    details.set_error_info(
        reason.as_str_name(),
        ERROR_DOMAIN,
        metadata
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    Status::with_error_details(reason_code(reason), message, details)
}

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations.violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                status_with_reason(
                    Reason::InvalidField,
                    format!("invalid request: {violations}"),
                    [],
                    details,
                )
            }
            AppError::Refused(refusal) => {
                let mut details = ErrorDetails::new();
                if refusal.reason == Reason::RequestIdReused {
                    details.add_bad_request_violation("request_id", refusal.message.clone());
                }
                // Every UNAVAILABLE answer says when to come back.
                if reason_code(refusal.reason) == Code::Unavailable {
                    details.set_retry_info(Some(STORE_RETRY_DELAY));
                }
                let metadata = refusal
                    .metadata
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value));
                status_with_reason(refusal.reason, refusal.message, metadata, details)
            }
            AppError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(STORE_RETRY_DELAY));
                status_with_reason(
                    Reason::StoreUnavailable,
                    "the store is unavailable, retry with backoff",
                    [],
                    details,
                )
            }
            AppError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                status_with_reason(
                    Reason::InternalFault,
                    "internal error",
                    [],
                    ErrorDetails::new(),
                )
            }
        }
    }
}

/// What a handler knows of its call besides the message.
#[derive(Clone, Debug)]
pub struct Call {
    /// The request's correlation id (see [`correlation_id`]), echoed back.
    pub correlation_id: String,
    /// The caller's trace context as the call's span continues it, if the
    /// caller sent one and tracing is exported.
    pub trace_parent: Option<TraceParent>,
    /// When the answer is due, if the client set a `grpc-timeout`. The
    /// handler is stopped a little before ([`deadline_margin`]).
    pub deadline: Option<tokio::time::Instant>,
}

/// The one wrapper every unary handler goes through. It reads the
/// correlation id (the request's own field, which `correlation_field`
/// returns, else the metadata, else a new one), runs `handle` in the
/// call's span, part of the caller's trace, maps its error once through
/// `From<AppError> for Status`, and echoes the correlation id back, on
/// errors too. A malformed correlation id field is refused before
/// `handle` runs.
pub async fn unary<Req, Resp, F, Fut>(
    method: &'static str,
    request: tonic::Request<Req>,
    correlation_field: impl FnOnce(&Req) -> &str,
    handle: F,
) -> Result<tonic::Response<Resp>, Status>
where
    F: FnOnce(Req, Call) -> Fut,
    Fut: Future<Output = Result<Resp, AppError>>,
{
    let (metadata, extensions, message) = request.into_parts();
    let now = tokio::time::Instant::now();
    let timeout = request_deadline(&metadata);
    let deadline = timeout.map(|timeout| now + timeout);
    let answer_by = timeout.map(|timeout| now + timeout.saturating_sub(deadline_margin(timeout)));
    let gate = extensions.get::<StoreGate>().cloned();
    let cid = correlation_id(correlation_field(&message), &metadata).map_err(AppError::from)?;
    let span = request_span(method, &cid);
    let call = Call {
        correlation_id: cid.clone(),
        trace_parent: crate::telemetry::continue_trace(&span, trace_parent(&metadata)),
        deadline,
    };
    let result = async move {
        // Every store call of the handler is bounded by the caller's
        // deadline: one the client will not wait for is abandoned, and the
        // answer is ours, not tonic's CANCELLED.
        let handled = handle(message, call);
        let result = match answer_by {
            Some(at) => tokio::time::timeout_at(at, handled)
                .await
                .unwrap_or_else(|_| Err(deadline_passed())),
            None => handled.await,
        };
        if let (Err(AppError::Unavailable(_)), Some(gate)) = (&result, &gate) {
            // The store failed the call: the health check looks now,
            // so that the calls after this one fail fast if it is down.
            gate.recheck();
        }
        match &result {
            Ok(_) => tracing::debug!("request served"),
            // Unavailable and internal errors are logged, at warn and
            // error, by the mapping.
            Err(err) => tracing::debug!(error = %err, "request refused"),
        }
        // Inside the span, so that what the mapping logs is tied to the call.
        result.map_err(Status::from)
    }
    .instrument(span)
    .await;
    match result {
        Ok(message) => {
            let mut response = tonic::Response::new(message);
            echo_correlation_id(response.metadata_mut(), &cid);
            Ok(response)
        }
        Err(mut status) => {
            echo_correlation_id(status.metadata_mut(), &cid);
            Err(status)
        }
    }
}

/// How long before the caller's deadline a call is answered
/// `DEADLINE_EXCEEDED` by us: a twentieth of its timeout, at most 50 ms. tonic
/// answers a call it times out with a bare `CANCELLED`, and the client's own
/// timer fires at the deadline too; answering first, the client gets our
/// status. (A `min_version` wait stops earlier still, a tenth and at most
/// 100 ms before, to report the versions it saw.)
pub fn deadline_margin(timeout: Duration) -> Duration {
    (timeout / 20).min(MAX_DEADLINE_MARGIN)
}

const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(50);

fn deadline_passed() -> AppError {
    AppError::refused(
        Reason::DeadlinePassed,
        "the call's deadline passed before it was answered; a command may still \
         have been applied: retry it with the same request_id",
    )
}

fn echo_correlation_id(metadata: &mut MetadataMap, cid: &str) {
    // Ids are printable ASCII, checked by `correlation_id`, so this holds.
    if let Ok(value) = tonic::metadata::MetadataValue::try_from(cid) {
        metadata.insert(CORRELATION_HEADER, value);
    }
}

/// The correlation id of a request: the request's field if set, else the
/// `x-correlation-id` metadata, else a new UUID. A malformed field is bad
/// input; malformed metadata is replaced.
pub fn correlation_id(
    field: &str,
    metadata: &MetadataMap,
) -> Result<String, dynabridge_domain::ValidationError> {
    let valid =
        |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    if !field.is_empty() {
        if !valid(field) {
            return Err(dynabridge_domain::ValidationError::single(
                "correlation_id",
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        return Ok(field.to_owned());
    }
    if let Some(header) = metadata
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid(s))
    {
        return Ok(header.to_owned());
    }
    Ok(uuid::Uuid::new_v4().to_string())
}

/// The caller's W3C trace context, if it sent a valid `traceparent`. An
/// invalid one is ignored, as the W3C spec asks: the request starts a new
/// trace rather than failing.
pub fn trace_parent(metadata: &MetadataMap) -> Option<TraceParent> {
    metadata
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// The span every line logged for one request is in.
pub fn request_span(method: &'static str, correlation_id: &str) -> tracing::Span {
    tracing::info_span!("rpc", method, correlation_id = %correlation_id)
}

/// The time a request may take: its `grpc-timeout`, if the client set one.
pub fn request_deadline(metadata: &MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC name of the health service.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Reflection v1 and v1alpha over our contracts, gRPC health and the
/// `google.rpc` error details, so that grpcurl works without `.proto`
/// files and shows an error's details decoded. It lists what a server answers:
/// `api` if it serves one, health, and reflection itself.
pub fn reflection_services(
    api: Option<&'static str>,
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = |reflection: &'static str| {
        api.into_iter().chain([HEALTH_SERVICE, reflection]).fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(dynabridge::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // The error details every error carries (`ErrorInfo`,
                // `BadRequest`, `RetryInfo`), so that a reflection client
                // such as grpcurl decodes them.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(name),
        )
    };
    let v1 = builder("grpc.reflection.v1.ServerReflection").build_v1()?;
    let v1alpha = builder("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Wraps `shutdown` so that, when it fires, every named service (and the
/// server as a whole, "") turns NOT_SERVING before the server drains.
pub async fn not_serving_then(
    reporter: tonic_health::server::HealthReporter,
    services: Vec<&'static str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    shutdown.await;
    tracing::info!("shutting down: not serving, draining requests");
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    for service in services {
        reporter
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
}

/// Sets up logging to stderr (stdout may carry published events): `RUST_LOG`
/// filters (default `info`), and `DYNABRIDGE_LOG_FORMAT=json` switches to
/// JSON lines. The binaries use [`crate::telemetry::init`], which adds trace
/// export when configured.
pub fn init_tracing() {
    crate::telemetry::init_logs();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_maps_to_bad_request_with_every_field() {
        let mut v = dynabridge_domain::ValidationError::single("email", "is required");
        v.push(dynabridge_domain::FieldViolation::new(
            "name",
            "must not be empty",
        ));
        let status = Status::from(AppError::Invalid(v));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "name"]);
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let status = Status::from(AppError::Internal("table foo-event-store exploded".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("foo"));
    }

    #[test]
    fn correlation_id_prefers_field_then_metadata() {
        let mut md = MetadataMap::new();
        md.insert(CORRELATION_HEADER, "from-header".parse().unwrap());
        assert_eq!(correlation_id("from-field", &md).unwrap(), "from-field");
        assert_eq!(correlation_id("", &md).unwrap(), "from-header");
        let generated = correlation_id("", &MetadataMap::new()).unwrap();
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
        assert!(correlation_id("has space", &md).is_err());
    }

    #[test]
    fn a_valid_traceparent_is_read_and_a_bad_one_ignored() {
        let mut md = MetadataMap::new();
        assert_eq!(trace_parent(&md), None);
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        md.insert(TRACEPARENT_HEADER, value.parse().unwrap());
        assert_eq!(
            trace_parent(&md).map(|t| t.to_string()).as_deref(),
            Some(value)
        );
        md.insert(TRACEPARENT_HEADER, "00-nonsense".parse().unwrap());
        assert_eq!(trace_parent(&md), None);
    }

    #[tokio::test]
    async fn correlation_id_is_echoed_on_success_and_error() {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert(CORRELATION_HEADER, "abc-123".parse().unwrap());
        let ok = unary(
            "Test",
            request,
            |()| "",
            |(), _| async { Ok::<_, AppError>(()) },
        )
        .await
        .unwrap();
        assert_eq!(ok.metadata().get(CORRELATION_HEADER).unwrap(), "abc-123");

        let err = unary(
            "Test",
            tonic::Request::new(()),
            |()| "",
            |(), _| async { Err::<(), _>(AppError::refused(Reason::AggregateNotFound, "gone")) },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        let generated = err
            .metadata()
            .get(CORRELATION_HEADER)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    }

    #[tokio::test]
    async fn the_request_field_wins_and_a_malformed_one_is_refused_before_the_handler() {
        // The request type is `String`, so the field reads a `&String`.
        #[allow(clippy::ptr_arg)]
        fn field(id: &String) -> &str {
            id
        }
        let ok = unary(
            "Test",
            tonic::Request::new("mine".to_owned()),
            field,
            |_, call| async move { Ok::<_, AppError>(call.correlation_id) },
        )
        .await
        .unwrap();
        assert_eq!(ok.get_ref(), "mine");
        let ran = std::sync::atomic::AtomicBool::new(false);
        let err = unary(
            "Test",
            tonic::Request::new("has space".to_owned()),
            field,
            |_, _| async {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<(), AppError>(())
            },
        )
        .await
        .unwrap_err();
        assert!(!ran.into_inner(), "the handler does not run");
        assert_eq!(err.code(), Code::InvalidArgument);
        let details = err.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "correlation_id"
        );
    }

    #[tokio::test]
    async fn the_call_deadline_comes_from_grpc_timeout() {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "2S".parse().unwrap());
        let before = tokio::time::Instant::now();
        unary(
            "Test",
            request,
            |()| "",
            |(), call| async move {
                let deadline = call.deadline.expect("a deadline");
                assert!(deadline >= before + Duration::from_secs(2));
                assert!(deadline <= tokio::time::Instant::now() + Duration::from_secs(2));
                Ok::<_, AppError>(())
            },
        )
        .await
        .unwrap();
        unary(
            "Test",
            tonic::Request::new(()),
            |()| "",
            |(), call| async move {
                assert!(call.deadline.is_none());
                Ok::<_, AppError>(())
            },
        )
        .await
        .unwrap();
    }

    #[test]
    fn grpc_timeout_is_parsed() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(request_deadline(&md), Some(Duration::from_millis(250)));
    }
}
