//! What the service logs, per correlation id, so that a test can wait for
//! the service to have done something instead of waiting for time to pass.

use std::sync::OnceLock;

use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// One event the query service logged inside a request span.
#[derive(Clone, Debug)]
pub struct Logged {
    pub correlation_id: String,
    pub message: String,
}

static LOG: OnceLock<watch::Sender<Vec<Logged>>> = OnceLock::new();

/// Everything logged so far, and what is logged from now on. The first call
/// installs the global subscriber; every test of this binary that observes
/// goes through here, so none installs another.
pub fn log() -> watch::Receiver<Vec<Logged>> {
    LOG.get_or_init(|| {
        let (log, _) = watch::channel(Vec::new());
        let subscriber = tracing_subscriber::registry().with(Capture(log.clone()));
        // Fails only if something else set a global subscriber, which the
        // waits of the observing tests would then report.
        let _ = tracing::subscriber::set_global_default(subscriber);
        log
    })
    .subscribe()
}

struct Capture(watch::Sender<Vec<Logged>>);

struct CorrelationId(String);

/// Keeps the value of one named field.
struct FieldValue {
    name: &'static str,
    value: Option<String>,
}

impl Visit for FieldValue {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.name {
            self.value = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.name {
            self.value = Some(format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut cid = FieldValue {
            name: "correlation_id",
            value: None,
        };
        attrs.record(&mut cid);
        if let (Some(cid), Some(span)) = (cid.value, ctx.span(id)) {
            span.extensions_mut().insert(CorrelationId(cid));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("query_service") {
            return;
        }
        let Some(correlation_id) = ctx.event_scope(event).and_then(|scope| {
            scope.from_root().find_map(|span| {
                span.extensions()
                    .get::<CorrelationId>()
                    .map(|c| c.0.clone())
            })
        }) else {
            return;
        };
        let mut message = FieldValue {
            name: "message",
            value: None,
        };
        event.record(&mut message);
        self.0.send_modify(|log| {
            log.push(Logged {
                correlation_id,
                message: message.value.unwrap_or_default(),
            });
        });
    }
}
