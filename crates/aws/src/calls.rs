//! What the AWS calls of this process cost, as Prometheus counters: the
//! operations sent and failed, the DynamoDB capacity they consumed, and the
//! EventBridge entries sent. Scraped before and after a workload and divided
//! by its number of operations, they give the cost of one operation.
//!
//! [`CallCounter`] is the SDK interceptor that counts; the clients of
//! [`crate`] always carry one, counting into one process-global set of
//! collectors ([`AwsCallMetrics::global`]), which each binary registers in
//! its own registry with [`register_call_metrics`]. The collectors are per
//! process, not per service: services sharing a process (the local stack,
//! tests) all show the same totals, which the local stack's one endpoint
//! ([`dynabridge_runtime::telemetry::metrics::CombinedMetrics`]) shows once.
//!
//! Counting is an atomic add per call, plus one pass over the JSON of a
//! DynamoDB response (for its `ConsumedCapacity`) and of a `PutEvents`
//! request (for its number of entries). DynamoDB reports capacity only when
//! asked (`ReturnConsumedCapacity`), which every data-plane call of ours
//! does.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use prometheus::{CounterVec, IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The `service` label of DynamoDB.
pub const DYNAMODB: &str = "dynamodb";
/// The `service` label of DynamoDB Streams, a service of its own with its
/// own pricing (stream read request units).
pub const DYNAMODB_STREAMS: &str = "dynamodbstreams";
/// The `service` label of EventBridge (IAM's prefix for it).
pub const EVENTS: &str = "events";

/// The AWS call counters. Clones share their values.
#[derive(Clone, Debug)]
pub struct AwsCallMetrics {
    calls: IntCounterVec,
    errors: IntCounterVec,
    capacity: CounterVec,
    entries: IntCounter,
}

impl AwsCallMetrics {
    /// A set of its own, for a client that must be counted apart (tests).
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            calls: IntCounterVec::new(
                Opts::new(
                    "dynabridge_aws_calls_total",
                    "AWS operations sent, by service and operation; the SDK's retries of one operation count once",
                ),
                &["service", "operation"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "dynabridge_aws_call_errors_total",
                    "AWS operations that failed after the SDK's retries, or were abandoned (timed out, cancelled), by service and operation",
                ),
                &["service", "operation"],
            )?,
            capacity: CounterVec::new(
                Opts::new(
                    "dynabridge_dynamodb_capacity_units_total",
                    "DynamoDB capacity units consumed, as the responses' ConsumedCapacity reports them (the table with its indexes), by operation and table",
                ),
                &["operation", "table"],
            )?,
            entries: IntCounter::new(
                "dynabridge_eventbridge_entries_total",
                "Entries sent in EventBridge PutEvents calls",
            )?,
        })
    }

    /// The process's counters, which every client of [`crate`] counts
    /// into.
    pub fn global() -> &'static Self {
        static GLOBAL: OnceLock<AwsCallMetrics> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            // Fails only on an invalid name, label or help text, and those
            // are the constants above, covered by the tests.
            Self::new().expect("the AWS call metrics are well-formed")
        })
    }

    /// Registers every counter with `registry`. The same counters may be
    /// registered with any number of registries.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.calls.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.capacity.clone()))?;
        registry.register(Box::new(self.entries.clone()))?;
        Ok(())
    }

    /// The names of the metric families [`AwsCallMetrics::register`] adds,
    /// whether or not anything was counted yet.
    pub fn family_names(&self) -> Vec<String> {
        use prometheus::core::Collector as _;
        [
            self.calls.desc(),
            self.errors.desc(),
            self.capacity.desc(),
            self.entries.desc(),
        ]
        .into_iter()
        .flatten()
        .map(|desc| desc.fq_name.clone())
        .collect()
    }

    /// An interceptor counting into these counters.
    pub fn interceptor(&self) -> CallCounter {
        CallCounter(self.clone())
    }

    /// Operations of `service` named `operation` sent so far.
    pub fn calls(&self, service: &str, operation: &str) -> u64 {
        self.calls.with_label_values(&[service, operation]).get()
    }

    /// Operations of `service` named `operation` that failed so far.
    pub fn errors(&self, service: &str, operation: &str) -> u64 {
        self.errors.with_label_values(&[service, operation]).get()
    }

    /// Capacity units consumed so far by `operation` on `table`.
    pub fn capacity_units(&self, operation: &str, table: &str) -> f64 {
        self.capacity.with_label_values(&[operation, table]).get()
    }

    /// EventBridge entries sent so far.
    pub fn entries(&self) -> u64 {
        self.entries.get()
    }
}

/// Registers the process's AWS call counters ([`AwsCallMetrics::global`])
/// with a binary's `registry`.
pub fn register_call_metrics(registry: &Registry) -> Result<(), prometheus::Error> {
    AwsCallMetrics::global().register(registry)
}

/// The SDK interceptor that counts into an [`AwsCallMetrics`]. It never
/// fails a call.
#[derive(Clone, Debug)]
pub struct CallCounter(AwsCallMetrics);

/// One operation under way: counted as failed when it ends in an error, or
/// when it is dropped unfinished (the operation timeout, a caller's
/// timeout), since it was sent and did not succeed either.
#[derive(Debug)]
struct PendingCall {
    errors: IntCounter,
    settled: AtomicBool,
}

impl PendingCall {
    fn new(errors: IntCounter) -> Self {
        Self {
            errors,
            settled: AtomicBool::new(false),
        }
    }

    /// Records the outcome, once.
    fn settle(&self, succeeded: bool) {
        if !self.settled.swap(true, Ordering::Relaxed) && !succeeded {
            self.errors.inc();
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.settle(false);
    }
}

impl Storable for PendingCall {
    type Storer = StoreReplace<Self>;
}

/// The `service` label of an SDK service name.
fn service_label(sdk_service: &str) -> &'static str {
    match sdk_service {
        "DynamoDB" => DYNAMODB,
        "DynamoDB Streams" => DYNAMODB_STREAMS,
        "EventBridge" => EVENTS,
        _ => "other",
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "DynabridgeCallCounter"
    }

    // Once per operation (after serialization, before any attempt).
    fn read_after_serialization(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let service = service_label(metadata.service());
        let labels = [service, metadata.name()];
        self.0.calls.with_label_values(&labels).inc();
        let pending = PendingCall::new(self.0.errors.with_label_values(&labels));
        if service == EVENTS
            && metadata.name() == "PutEvents"
            && let Some(entries) = context.request().body().bytes().map(put_events_entries)
        {
            self.0.entries.inc_by(entries);
        }
        cfg.interceptor_state().store_put(pending);
        Ok(())
    }

    // Once per attempt that got an answer: a retried attempt that consumed
    // capacity consumed it too.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        if service_label(metadata.service()) != DYNAMODB {
            return Ok(());
        }
        let Some(body) = context.response().body().bytes() else {
            return Ok(());
        };
        for (table, units) in consumed_capacity(body) {
            self.0
                .capacity
                .with_label_values(&[metadata.name(), &table])
                .inc_by(units);
        }
        Ok(())
    }

    // Once per operation, after the last attempt.
    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(pending) = cfg.load::<PendingCall>() {
            pending.settle(matches!(context.output_or_error(), Some(Ok(_))));
        }
        Ok(())
    }
}

/// The part of a DynamoDB response that says what it cost.
#[derive(Deserialize)]
struct CapacityResponse {
    #[serde(rename = "ConsumedCapacity")]
    consumed: Option<OneOrMany>,
}

/// One table (single-item operations, Query, Scan), or one per table
/// (batches, transactions).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(TableCapacity),
    Many(Vec<TableCapacity>),
}

#[derive(Deserialize)]
struct TableCapacity {
    #[serde(rename = "TableName")]
    table: Option<String>,
    /// The table's total, its indexes included.
    #[serde(rename = "CapacityUnits")]
    units: Option<f64>,
}

/// The capacity units a DynamoDB response body reports, per table; nothing
/// if it reports none or is not JSON.
fn consumed_capacity(body: &[u8]) -> Vec<(String, f64)> {
    let consumed = match serde_json::from_slice::<CapacityResponse>(body) {
        Ok(CapacityResponse {
            consumed: Some(consumed),
        }) => consumed,
        _ => return Vec::new(),
    };
    let tables = match consumed {
        OneOrMany::One(table) => vec![table],
        OneOrMany::Many(tables) => tables,
    };
    tables
        .into_iter()
        .filter_map(|TableCapacity { table, units }| {
            let units = units.filter(|u| u.is_finite() && *u >= 0.0)?;
            Some((table.unwrap_or_else(|| "unknown".to_owned()), units))
        })
        .collect()
}

#[derive(Deserialize)]
struct PutEventsRequest {
    #[serde(rename = "Entries", default)]
    entries: Vec<IgnoredAny>,
}

/// The number of entries in a `PutEvents` request body.
fn put_events_entries(body: &[u8]) -> u64 {
    serde_json::from_slice::<PutEventsRequest>(body)
        .map_or(0, |r| u64::try_from(r.entries.len()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_is_read_from_a_single_object() {
        let body = br#"{"Item":{"UserId":{"S":"u"}},"ConsumedCapacity":{"TableName":"p-user-profiles","CapacityUnits":0.5}}"#;
        assert_eq!(
            consumed_capacity(body),
            vec![("p-user-profiles".to_owned(), 0.5)]
        );
    }

    #[test]
    fn a_transaction_reports_each_table_with_its_indexes_included() {
        let body = br#"{"ConsumedCapacity":[
            {"TableName":"p-event-store","CapacityUnits":4.0,"WriteCapacityUnits":4.0,
             "Table":{"CapacityUnits":2.0},"GlobalSecondaryIndexes":{"g":{"CapacityUnits":2.0}}},
            {"TableName":"p-idempotency","CapacityUnits":2.0,"WriteCapacityUnits":2.0}
        ]}"#;
        assert_eq!(
            consumed_capacity(body),
            vec![
                ("p-event-store".to_owned(), 4.0),
                ("p-idempotency".to_owned(), 2.0)
            ]
        );
    }

    #[test]
    fn a_response_without_capacity_counts_nothing() {
        for body in [
            &br#"{"Items":[],"Count":0,"ScannedCount":0}"#[..],
            br#"{"ConsumedCapacity":null}"#,
            br#"{"ConsumedCapacity":{"TableName":"t"}}"#,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"no"}"#,
            b"",
            b"<html>",
        ] {
            assert_eq!(
                consumed_capacity(body),
                vec![],
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn put_events_entries_are_counted() {
        assert_eq!(
            put_events_entries(br#"{"Entries":[{"Source":"s"},{"Source":"s","Detail":"{}"}]}"#),
            2
        );
        assert_eq!(put_events_entries(br#"{}"#), 0);
        assert_eq!(put_events_entries(b"not json"), 0);
    }

    #[test]
    fn an_operation_fails_once_whether_it_errs_or_is_abandoned() {
        let metrics = AwsCallMetrics::new().unwrap();
        let pending = |op| PendingCall::new(metrics.errors.with_label_values(&[DYNAMODB, op]));
        let ok = pending("GetItem");
        ok.settle(true);
        drop(ok);
        let failed = pending("PutItem");
        failed.settle(false);
        failed.settle(false);
        drop(failed);
        drop(pending("Query"));
        assert_eq!(metrics.errors(DYNAMODB, "GetItem"), 0);
        assert_eq!(metrics.errors(DYNAMODB, "PutItem"), 1);
        assert_eq!(metrics.errors(DYNAMODB, "Query"), 1);
    }

    #[test]
    fn the_global_counters_go_into_any_number_of_registries() {
        let (a, b) = (Registry::new(), Registry::new());
        register_call_metrics(&a).unwrap();
        register_call_metrics(&b).unwrap();
        assert!(register_call_metrics(&a).is_err(), "twice in one registry");
        AwsCallMetrics::global().calls("test", "Registered");
        for registry in [&a, &b] {
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap();
            assert!(
                text.contains(
                    r#"dynabridge_aws_calls_total{operation="Registered",service="test"} 0"#
                ),
                "{text}"
            );
        }
    }
}
