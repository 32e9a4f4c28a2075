//! The optional record of every AWS call a process makes, for the IAM test
//! and audits: which operation, on which resource (see [`record_calls_to`]).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde_json::Value;

/// The environment variable naming the file the binaries record their AWS
/// calls to; unset, nothing is recorded.
pub const CALL_LOG_ENV: &str = "DYNABRIDGE_AWS_CALL_LOG";

/// The process's call log, once recording is on.
static CALL_LOG: OnceLock<Arc<CallLog>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum CallLogError {
    #[error("opening the AWS call log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("AWS calls are already recorded to {0}")]
    AlreadyRecording(PathBuf),
}

/// Records every AWS operation of the clients built afterwards by
/// [`dynamodb_client`], [`streams_client`] and [`eventbridge_client`],
/// appending to `path` one line per operation and resource:
///
/// ```text
/// dynamodb:GetItem prefix-idempotency
/// dynamodb:Query prefix-order-summaries/index/Status-index
/// dynamodb:TransactWriteItems.ConditionCheck prefix-event-store
/// dynamodb:GetRecords arn:aws:dynamodb:region:account:table/prefix-event-store/stream/label
/// events:PutEvents prefix-events
/// sqs:ReceiveMessage https://sqs.region.amazonaws.com/account/prefix-route-planner
/// ```
///
/// The service is IAM's prefix for it (DynamoDB Streams is `dynamodb`), the
/// operation the SDK's, and the resource what IAM authorises the call on:
/// a table, `table/index/name`, a stream ARN, a bus or a queue (by its
/// URL). A transaction is one line per item and kind. An operation is
/// recorded once when it is sent, whether it then succeeds or not, since
/// IAM is asked either way.
///
/// For tests and audits: the binaries call it when [`CALL_LOG_ENV`] is set.
/// Clients built before, or with recording off, carry no recorder at all.
pub fn record_calls_to(path: impl AsRef<Path>) -> Result<(), CallLogError> {
    let path = path.as_ref().to_owned();
    if let Some(log) = CALL_LOG.get() {
        return Err(CallLogError::AlreadyRecording(log.path.clone()));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| CallLogError::Open {
            path: path.clone(),
            source,
        })?;
    let log = Arc::new(CallLog {
        path: path.clone(),
        file: Mutex::new(file),
        iterators: Mutex::new(HashMap::new()),
    });
    CALL_LOG
        .set(log)
        .map_err(|_| CallLogError::AlreadyRecording(path))
}

#[derive(Debug)]
struct CallLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// The stream of each shard iterator handed out: `GetRecords` names only
    /// its iterator, and IAM authorises it on the iterator's stream. About
    /// one entry per shard being read: each read replaces its iterator.
    iterators: Mutex<HashMap<String, String>>,
}

impl CallLog {
    fn append(&self, lines: &str) {
        // A poisoned lock only means another write panicked; the file is
        // still a file.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = file.write_all(lines.as_bytes()) {
            tracing::warn!(path = %self.path.display(), %error, "cannot record an AWS call");
        }
    }

    fn iterators(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.iterators.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The SDK interceptor that writes the [`CallLog`]. It never fails a call.
#[derive(Debug)]
pub(crate) struct CallRecorder(Arc<CallLog>);

/// The stream a `GetShardIterator` or `GetRecords` reads, and the iterator
/// it used, kept for its response, which holds the next iterator.
#[derive(Clone, Debug)]
struct StreamOfCall {
    stream: String,
    iterator: Option<String>,
}

impl Storable for StreamOfCall {
    type Storer = StoreReplace<Self>;
}

impl Intercept for CallRecorder {
    fn name(&self) -> &'static str {
        "DynabridgeCallRecorder"
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
        let service = iam_service(metadata.service());
        let operation = metadata.name().to_owned();
        let body = context
            .request()
            .body()
            .bytes()
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
            .unwrap_or(Value::Null);
        let iterator = body["ShardIterator"].as_str().map(str::to_owned);
        let stream = match operation.as_str() {
            "GetShardIterator" => body["StreamArn"].as_str().map(str::to_owned),
            "GetRecords" => iterator
                .as_deref()
                .and_then(|iterator| self.0.iterators().get(iterator).cloned()),
            _ => None,
        };
        let mut lines = String::new();
        for (operation, resource) in called_resources(&operation, &body, stream.as_deref()) {
            lines.push_str(&format!("{service}:{operation} {resource}\n"));
        }
        self.0.append(&lines);
        if let Some(stream) = stream {
            cfg.interceptor_state()
                .store_put(StreamOfCall { stream, iterator });
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(StreamOfCall { stream, iterator }) = cfg.load::<StreamOfCall>() else {
            return Ok(());
        };
        // A failed read may be retried with the same iterator; only a
        // successful one replaces it.
        if context.output_or_error().is_err() {
            return Ok(());
        }
        let Some(body) = context
            .response()
            .body()
            .bytes()
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        else {
            return Ok(());
        };
        let mut iterators = self.0.iterators();
        if let Some(used) = iterator {
            iterators.remove(used);
        }
        for key in ["ShardIterator", "NextShardIterator"] {
            if let Some(next) = body[key].as_str() {
                iterators.insert(next.to_owned(), stream.clone());
            }
        }
        Ok(())
    }
}

/// IAM's service prefix for an SDK service name.
fn iam_service(sdk_service: &str) -> String {
    match sdk_service {
        "DynamoDB" | "DynamoDB Streams" => "dynamodb".into(),
        "EventBridge" => "events".into(),
        other => other.to_lowercase().replace(' ', ""),
    }
}

/// The (operation, resource) pairs one request asks IAM for, from its JSON
/// body; `stream` is the stream of a `GetRecords` iterator, if known. An
/// unknown resource is `-`.
fn called_resources(operation: &str, body: &Value, stream: Option<&str>) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    match operation {
        "TransactWriteItems" | "TransactGetItems" => {
            for item in body["TransactItems"].as_array().into_iter().flatten() {
                for (kind, request) in item.as_object().into_iter().flatten() {
                    calls.push((format!("{operation}.{kind}"), table_resource(request)));
                }
            }
        }
        "BatchGetItem" | "BatchWriteItem" => {
            for table in body["RequestItems"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(t, _)| t)
            {
                calls.push((operation.to_owned(), table.clone()));
            }
        }
        "PutEvents" => {
            for entry in body["Entries"].as_array().into_iter().flatten() {
                // No bus named: the account's default bus.
                let bus = entry["EventBusName"].as_str().unwrap_or("default");
                calls.push((operation.to_owned(), bus.to_owned()));
            }
        }
        "DescribeEventBus" => {
            let bus = body["Name"].as_str().unwrap_or("default");
            calls.push((operation.to_owned(), bus.to_owned()));
        }
        // The other EventBridge resources, as ARNs without region and
        // account (the IAM test puts its own in).
        "DescribeArchive" => {
            let archive = body["ArchiveName"].as_str().unwrap_or("-");
            calls.push((
                operation.to_owned(),
                events_arn(&format!("archive/{archive}")),
            ));
        }
        "StartReplay" => {
            let archive = body["EventSourceArn"].as_str().unwrap_or("-");
            calls.push((operation.to_owned(), archive.to_owned()));
        }
        "DescribeReplay" => {
            let replay = body["ReplayName"].as_str().unwrap_or("-");
            calls.push((
                operation.to_owned(),
                events_arn(&format!("replay/{replay}")),
            ));
        }
        "DescribeRule" => {
            let bus = body["EventBusName"].as_str().unwrap_or("default");
            // By name or ARN.
            let bus = bus.rsplit_once("event-bus/").map_or(bus, |(_, name)| name);
            let rule = body["Name"].as_str().unwrap_or("-");
            calls.push((
                operation.to_owned(),
                events_arn(&format!("rule/{bus}/{rule}")),
            ));
        }
        "GetRecords" => calls.push((operation.to_owned(), stream.unwrap_or("-").to_owned())),
        // SQS: the queue, by its URL (IAM authorises the call on its ARN).
        _ if body["QueueUrl"].is_string() => {
            calls.push((
                operation.to_owned(),
                body["QueueUrl"].as_str().unwrap_or("-").to_owned(),
            ));
        }
        _ => {
            let resource = match body["StreamArn"].as_str() {
                Some(arn) => arn.to_owned(),
                None => table_resource(body),
            };
            calls.push((operation.to_owned(), resource));
        }
    }
    calls.sort();
    calls.dedup();
    calls
}

/// An EventBridge resource's ARN, region and account left empty.
fn events_arn(resource: &str) -> String {
    format!("arn:aws:events:::{resource}")
}

/// `TableName`, or `TableName/index/IndexName` for a request on an index.
fn table_resource(request: &Value) -> String {
    match (request["TableName"].as_str(), request["IndexName"].as_str()) {
        (Some(table), Some(index)) => format!("{table}/index/{index}"),
        (Some(table), None) => table.to_owned(),
        (None, _) => "-".to_owned(),
    }
}

/// The recorder for a new client, once [`record_calls_to`] was called.
pub(crate) fn recorder() -> Option<CallRecorder> {
    CALL_LOG.get().map(|log| CallRecorder(log.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(calls: &[(&str, &str)]) -> Vec<(String, String)> {
        calls
            .iter()
            .map(|(o, r)| ((*o).to_owned(), (*r).to_owned()))
            .collect()
    }

    #[test]
    fn a_transaction_is_one_call_per_item_kind_and_table() {
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "p-event-store", "Item": {}}},
            {"Put": {"TableName": "p-event-store", "Item": {}}},
            {"Put": {"TableName": "p-idempotency", "Item": {}}},
            {"Delete": {"TableName": "p-unique-emails", "Key": {}}},
            {"ConditionCheck": {"TableName": "p-event-store", "Key": {}}},
        ]});
        assert_eq!(
            called_resources("TransactWriteItems", &body, None),
            pairs(&[
                ("TransactWriteItems.ConditionCheck", "p-event-store"),
                ("TransactWriteItems.Delete", "p-unique-emails"),
                ("TransactWriteItems.Put", "p-event-store"),
                ("TransactWriteItems.Put", "p-idempotency"),
            ])
        );
    }

    #[test]
    fn a_query_on_an_index_names_the_index() {
        let body = json!({"TableName": "p-order-summaries", "IndexName": "Status-index"});
        assert_eq!(
            called_resources("Query", &body, None),
            pairs(&[("Query", "p-order-summaries/index/Status-index")])
        );
        let body = json!({"TableName": "p-event-store", "ConsistentRead": true});
        assert_eq!(
            called_resources("Query", &body, None),
            pairs(&[("Query", "p-event-store")])
        );
    }

    #[test]
    fn archive_replay_calls_name_their_archive_rule_and_replay() {
        let archive = "arn:aws:events:r:1:archive/p-events-archive";
        assert_eq!(
            called_resources(
                "DescribeArchive",
                &json!({"ArchiveName": "p-events-archive"}),
                None
            ),
            pairs(&[(
                "DescribeArchive",
                "arn:aws:events:::archive/p-events-archive"
            )])
        );
        let body = json!({"ReplayName": "p-1", "EventSourceArn": archive});
        assert_eq!(
            called_resources("StartReplay", &body, None),
            pairs(&[("StartReplay", archive)])
        );
        assert_eq!(
            called_resources("DescribeReplay", &json!({"ReplayName": "p-1"}), None),
            pairs(&[("DescribeReplay", "arn:aws:events:::replay/p-1")])
        );
        let bus = "arn:aws:events:r:1:event-bus/p-events";
        for named in [bus, "p-events"] {
            let body = json!({"Name": "p-order-events", "EventBusName": named});
            assert_eq!(
                called_resources("DescribeRule", &body, None),
                pairs(&[(
                    "DescribeRule",
                    "arn:aws:events:::rule/p-events/p-order-events"
                )])
            );
        }
    }

    #[test]
    fn stream_calls_name_their_stream() {
        let arn = "arn:aws:dynamodb:r:1:table/p-event-store/stream/label";
        assert_eq!(
            called_resources("DescribeStream", &json!({"StreamArn": arn}), None),
            pairs(&[("DescribeStream", arn)])
        );
        let body = json!({"ShardIterator": "opaque", "Limit": 100});
        assert_eq!(
            called_resources("GetRecords", &body, Some(arn)),
            pairs(&[("GetRecords", arn)])
        );
        assert_eq!(
            called_resources("GetRecords", &body, None),
            pairs(&[("GetRecords", "-")])
        );
    }

    #[test]
    fn put_events_names_each_bus_once() {
        let body = json!({"Entries": [
            {"EventBusName": "p-events", "Source": "s"},
            {"EventBusName": "p-events", "Source": "s"},
            {"Source": "s"},
        ]});
        assert_eq!(
            called_resources("PutEvents", &body, None),
            pairs(&[("PutEvents", "default"), ("PutEvents", "p-events")])
        );
    }

    #[test]
    fn queue_calls_name_their_queue_url() {
        let url = "https://sqs.r.amazonaws.com/1/p-route-planner";
        for operation in ["ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility"] {
            let body = json!({"QueueUrl": url, "ReceiptHandle": "h"});
            assert_eq!(
                called_resources(operation, &body, None),
                pairs(&[(operation, url)])
            );
        }
    }

    #[test]
    fn sdk_services_map_to_iam_prefixes() {
        assert_eq!(iam_service("DynamoDB"), "dynamodb");
        assert_eq!(iam_service("DynamoDB Streams"), "dynamodb");
        assert_eq!(iam_service("EventBridge"), "events");
        assert_eq!(iam_service("SQS"), "sqs");
    }
}
