//! The W3C trace context (`traceparent`) a request arrives with, the form it
//! is stored in with the events the request appends, and the X-Ray
//! `TraceHeader` EventBridge takes on each published entry.

use std::fmt;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The metadata key (and HTTP header) of the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A W3C `traceparent`: `00-<trace id>-<parent span id>-<flags>`, all
/// lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceParent {
    const SAMPLED: u8 = 0x01;

    /// Parses a `traceparent` as the W3C Trace Context spec reads it: a
    /// version `00` value exactly, or the leading fields of a later
    /// version. Anything else is `None`, and a receiver then starts a new
    /// trace rather than failing the request.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.split('-');
        let version = fields.next().filter(|v| is_hex(v, 2) && *v != "ff")?;
        let trace_id = fields.next().filter(|t| is_hex(t, 32))?;
        let span_id = fields.next().filter(|s| is_hex(s, 16))?;
        let flags = fields.next().filter(|f| is_hex(f, 2))?;
        // Version 00 has exactly these four fields; a later version may add
        // more, after a dash.
        if version == "00" && fields.next().is_some() {
            return None;
        }
        let parsed = Self {
            trace_id: u128::from_str_radix(trace_id, 16).ok()?,
            span_id: u64::from_str_radix(span_id, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.span_id != 0).then_some(parsed)
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The parent span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The same context as an AWS X-Ray trace header, the form of the
    /// `TraceHeader` of an EventBridge entry: the W3C trace id split after
    /// its eighth digit, the parent span and the sampling decision.
    pub fn to_xray(&self) -> String {
        let trace_id = self.trace_id();
        let (epoch, unique) = trace_id.split_at(8);
        format!(
            "Root=1-{epoch}-{unique};Parent={};Sampled={}",
            self.span_id(),
            u8::from(self.sampled())
        )
    }

    fn from_span_context(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: u128::from_be_bytes(context.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(context.span_id().to_bytes()),
            flags: context.trace_flags().to_u8(),
        })
    }

    fn to_span_context(self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }
}

impl fmt::Display for TraceParent {
    /// Always written as version 00, the version this build speaks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Makes `span` a child of the caller's trace context, and returns the
/// context to hand on: the span's own when traces are exported (so that
/// what follows is a child of this request), else the caller's unchanged,
/// so that the trace still goes through. `None` when there is neither.
///
/// Without the OpenTelemetry layer (no `OTEL_EXPORTER_OTLP_ENDPOINT`) this
/// costs a subscriber lookup and nothing else. Call it before `span` is
/// first entered: a started span keeps its parent.
pub fn continue_trace(span: &tracing::Span, incoming: Option<TraceParent>) -> Option<TraceParent> {
    if let Some(parent) = incoming {
        let remote =
            opentelemetry::Context::new().with_remote_span_context(parent.to_span_context());
        // Fails only when no layer records spans, or the span is filtered
        // out: then there is nothing to attach, and the caller's context is
        // passed on as it came.
        let _ = span.set_parent(remote);
    }
    let own = span.context().span().span_context().clone();
    TraceParent::from_span_context(&own).or(incoming)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_version_00_traceparent_round_trips() {
        let parsed = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), SAMPLE);
        let unsampled = TraceParent::parse(&SAMPLE.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // Uppercase, wrong lengths, zero ids, version ff.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 has no fifth field.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_known_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(TraceParent::parse(later).unwrap().to_string(), SAMPLE);
    }

    #[test]
    fn the_xray_header_carries_the_same_trace_parent_and_decision() {
        let parsed = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(
            parsed.to_xray(),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        );
        let unsampled = TraceParent::parse(&SAMPLE.replace("-01", "-00")).unwrap();
        assert!(unsampled.to_xray().ends_with(";Sampled=0"));
    }

    #[test]
    fn without_a_trace_layer_the_callers_context_passes_through() {
        let incoming = TraceParent::parse(SAMPLE);
        let span = tracing::info_span!("rpc");
        assert_eq!(continue_trace(&span, incoming), incoming);
        assert_eq!(continue_trace(&span, None), None);
    }

    /// Spans kept in memory, for the test below.
    #[derive(Clone, Debug, Default)]
    struct Recorded(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Recorded {
        fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send
        {
            self.0.lock().unwrap().extend(batch);
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn with_traces_exported_the_request_span_is_the_callers_child_and_is_handed_on() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let exported = Recorded::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let incoming = TraceParent::parse(SAMPLE).unwrap();
        let (handed_on, fresh) = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc");
            let handed_on = continue_trace(&span, Some(incoming)).unwrap();
            drop(span);
            let fresh = continue_trace(&tracing::info_span!("rpc"), None).unwrap();
            (handed_on, fresh)
        });

        // Same trace, and this request's span as the parent of what follows.
        assert_eq!(handed_on.trace_id(), incoming.trace_id());
        assert_ne!(handed_on.span_id(), incoming.span_id());
        assert!(handed_on.sampled());
        let spans = exported.0.lock().unwrap().clone();
        let rpc = spans
            .iter()
            .find(|s| {
                format!(
                    "{:016x}",
                    u64::from_be_bytes(s.span_context.span_id().to_bytes())
                ) == handed_on.span_id()
            })
            .expect("the request span is exported");
        assert_eq!(
            format!("{:016x}", u64::from_be_bytes(rpc.parent_span_id.to_bytes())),
            incoming.span_id()
        );
        // Without a caller's context, the request starts a trace of its own.
        assert_ne!(fresh.trace_id(), incoming.trace_id());
    }
}
