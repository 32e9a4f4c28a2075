//! Telemetry every binary shares: logs, OTLP traces, Prometheus metrics, and
//! the trace context a request hands on to the events it appends.
//!
//! - Logs go to stderr, filtered by `RUST_LOG` (default `info`), as JSON
//!   lines with `DYNABRIDGE_LOG_FORMAT=json`.
//! - Traces are exported over OTLP (gRPC, plaintext) when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//!   is set, with the SDK's other `OTEL_*` variables; unset, no exporter,
//!   no OpenTelemetry layer, no cost.
//! - [`metrics`]: a registry per service, its `/metrics` endpoint and the
//!   gRPC server layer.
//! - `dynabridge_aws::calls`: the AWS calls of the process and what they cost
//!   (operations, DynamoDB capacity, EventBridge entries), counted by an SDK
//!   interceptor every client carries.
//! - [`trace_context`]: the W3C `traceparent` stored with every event and
//!   published, as an X-Ray header, with it.

pub mod metrics;
pub mod trace_context;

pub use trace_context::{TRACEPARENT_HEADER, TraceParent, continue_trace};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The variables that turn trace export on.
const OTLP_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("setting up the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Flushes and stops trace export when dropped: keep it alive in `main`.
#[derive(Debug)]
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.traces.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces at exit failed: {error}");
        }
    }
}

/// Whether the environment asks for trace export.
pub fn otlp_configured() -> bool {
    OTLP_ENDPOINT_VARS
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

/// Sets up logs and, if configured, trace export for the binary
/// `service_name` (the `service.name` of its spans unless
/// `OTEL_SERVICE_NAME` says otherwise). Must run inside the Tokio runtime:
/// the exporter's gRPC channel lives there.
pub fn init(service_name: &'static str) -> Result<Telemetry, TelemetryError> {
    let traces = otlp_configured()
        .then(|| tracer_provider(service_name))
        .transpose()?;
    let otel = traces.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name))
    });
    let json = json_logs();
    // A second initialisation (in tests) is harmless and ignored.
    let _ = tracing_subscriber::registry()
        .with(env_filter())
        .with(json.then(|| fmt_layer().json()))
        .with((!json).then(fmt_layer))
        .with(otel)
        .try_init();
    if let Some(provider) = &traces {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(service_name, "exporting traces over OTLP");
    }
    Ok(Telemetry { traces })
}

/// Logs only, as [`init`] sets them up: for tests and embedding.
pub fn init_logs() {
    init_logs_with(DEFAULT_FILTER);
}

/// Logs only, with `default_filter` (an `EnvFilter` directive list) when
/// `RUST_LOG` is unset: for a process that embeds a component whose own
/// levels need setting.
pub fn init_logs_with(default_filter: &str) {
    let json = json_logs();
    let _ = tracing_subscriber::registry()
        .with(env_filter_or(default_filter))
        .with(json.then(|| fmt_layer().json()))
        .with((!json).then(fmt_layer))
        .try_init();
}

const DEFAULT_FILTER: &str = "info";

fn env_filter() -> EnvFilter {
    env_filter_or(DEFAULT_FILTER)
}

fn env_filter_or(default_filter: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter))
}

fn json_logs() -> bool {
    std::env::var("DYNABRIDGE_LOG_FORMAT").is_ok_and(|f| f == "json")
}

/// Logs on stderr: stdout may carry published events.
fn fmt_layer<S>() -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    fn() -> std::io::Stderr,
> {
    tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
}

fn tracer_provider(
    service_name: &'static str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, TelemetryError> {
    // Endpoint, headers, timeout and compression come from the OTEL_*
    // variables the exporter reads itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
