//! A stand-in for EventBridge's `PutEvents` and `DescribeEventBus`, on
//! 127.0.0.1 port 0: every bus exists unless deleted; an entry for a bus
//! that exists is kept, one for a bus that does not is accepted and
//! dropped, as EventBridge does. Archive replays are answered too: every
//! `<bus>-archive` and every rule exists, and a replay started is complete
//! when described (nothing is delivered again: the IAM test counts calls,
//! the moto end-to-end test deliveries). The embedded store has no EventBridge; with
//! this one the projector publishes through its real bus client (the SDK's
//! `AWS_ENDPOINT_URL_EVENTBRIDGE` points it here), so that its
//! `events:PutEvents` calls are recorded like every other call, and the
//! entries can be matched against the template's rules. A rule added with
//! [`FakeEventBridge::add_rule`] delivers the events it matches to its
//! target as EventBridge does, in the shape of [`delivered`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Where a rule delivers an event it matches.
type Target = Arc<dyn Fn(Value) + Send + Sync>;

#[derive(Clone, Default)]
struct Buses {
    entries: Arc<Mutex<Vec<Value>>>,
    deleted: Arc<Mutex<BTreeSet<String>>>,
    replays: Arc<Mutex<BTreeSet<String>>>,
    /// (bus, event pattern, target) of each rule added.
    rules: Arc<Mutex<Vec<(String, Value, Target)>>>,
}

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";
const ARN: &str = "arn:aws:events:us-east-1:000000000000";

fn json_answer(body: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({ "__type": "ResourceNotFoundException", "message": message }).to_string(),
    )
        .into_response()
}

pub struct FakeEventBridge {
    pub endpoint: String,
    buses: Buses,
}

impl FakeEventBridge {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let buses = Buses::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(buses.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, buses }
    }

    /// Deletes bus `name` (or creates it again, `exists`).
    #[allow(dead_code, reason = "the observability tests delete the bus")]
    pub fn set_bus(&self, name: &str, exists: bool) {
        let mut deleted = self.buses.deleted.lock().unwrap();
        if exists {
            deleted.remove(name);
        } else {
            deleted.insert(name.to_owned());
        }
    }

    /// A rule on bus `bus`: from now on, every event kept on it that
    /// `pattern` matches (see [`matches`]) is delivered to `target`, in the
    /// shape of [`delivered`], before `PutEvents` answers.
    pub fn add_rule(
        &self,
        bus: &str,
        pattern: Value,
        target: impl Fn(Value) + Send + Sync + 'static,
    ) {
        self.buses
            .rules
            .lock()
            .unwrap()
            .push((bus.to_owned(), pattern, Arc::new(target)));
    }

    /// Every entry received so far, as sent (`Source`, `DetailType`,
    /// `Detail`, `EventBusName`, ...).
    pub fn entries(&self) -> Vec<Value> {
        self.buses.entries.lock().unwrap().clone()
    }
}

async fn answer(State(buses): State<Buses>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let exists = |name: &str| !buses.deleted.lock().unwrap().contains(name);
    match target.as_str() {
        "AWSEvents.PutEvents" => {}
        "AWSEvents.DescribeEventBus" => {
            let name = request["Name"].as_str().unwrap_or("default");
            if !exists(name) {
                return (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
                    json!({
                        "__type": "ResourceNotFoundException",
                        "message": format!("Event bus {name} does not exist."),
                    })
                    .to_string(),
                )
                    .into_response();
            }
            return (
                [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
                json!({
                    "Name": name,
                    "Arn": format!("arn:aws:events:us-east-1:000000000000:event-bus/{name}"),
                })
                .to_string(),
            )
                .into_response();
        }
        "AWSEvents.DescribeArchive" => {
            let name = request["ArchiveName"].as_str().unwrap_or_default();
            let Some(bus) = name.strip_suffix("-archive").filter(|bus| exists(bus)) else {
                return not_found(format!("Archive {name} does not exist."));
            };
            return json_answer(json!({
                "ArchiveName": name,
                "ArchiveArn": format!("{ARN}:archive/{name}"),
                "EventSourceArn": format!("{ARN}:event-bus/{bus}"),
                "State": "ENABLED",
            }));
        }
        "AWSEvents.DescribeRule" => {
            let name = request["Name"].as_str().unwrap_or_default();
            let bus = request["EventBusName"].as_str().unwrap_or("default");
            return json_answer(json!({
                "Name": name,
                "EventBusName": bus,
                "Arn": format!("{ARN}:rule/{bus}/{name}"),
            }));
        }
        "AWSEvents.StartReplay" => {
            let name = request["ReplayName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            buses.replays.lock().unwrap().insert(name.clone());
            return json_answer(json!({
                "ReplayArn": format!("{ARN}:replay/{name}"),
                "State": "STARTING",
            }));
        }
        "AWSEvents.DescribeReplay" => {
            let name = request["ReplayName"].as_str().unwrap_or_default();
            if !buses.replays.lock().unwrap().contains(name) {
                return not_found(format!("Replay {name} does not exist."));
            }
            let now = chrono::Utc::now().timestamp();
            return json_answer(json!({
                "ReplayName": name,
                "ReplayArn": format!("{ARN}:replay/{name}"),
                "State": "COMPLETED",
                "EventLastReplayedTime": now,
                "ReplayEndTime": now,
            }));
        }
        other => {
            return (StatusCode::BAD_REQUEST, format!("no {other:?} here")).into_response();
        }
    }
    let received = request["Entries"].as_array().cloned().unwrap_or_default();
    let ids: Vec<String> = (0..received.len())
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let results: Vec<Value> = ids.iter().map(|id| json!({ "EventId": id })).collect();
    let rules = buses.rules.lock().unwrap().clone();
    for (entry, id) in received.into_iter().zip(&ids) {
        // Entries for a bus that does not exist are accepted and dropped.
        let bus = entry["EventBusName"].as_str().unwrap_or("default");
        if !exists(bus) {
            continue;
        }
        let event = delivered(&entry, id);
        for (_, pattern, target) in rules.iter().filter(|(b, _, _)| b == bus) {
            if matches(pattern, &event) {
                target(event.clone());
            }
        }
        buses.entries.lock().unwrap().push(entry);
    }
    (
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({ "FailedEntryCount": 0, "Entries": results }).to_string(),
    )
        .into_response()
}

/// Whether an EventBridge event matches `pattern`, for the pattern forms
/// the template uses: exact values listed per field, nested objects for
/// nested fields. Anything else in a pattern fails the test.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let pattern = pattern.as_object().expect("a pattern is an object");
    pattern.iter().all(|(field, expected)| match expected {
        Value::Object(_) => matches(expected, &event[field]),
        Value::Array(values) => {
            assert!(
                values.iter().all(|v| v.is_string() || v.is_number()),
                "the test models only exact-value patterns, not {expected}"
            );
            values.contains(&event[field])
        }
        other => panic!("not an EventBridge pattern: {field}: {other}"),
    })
}

/// An entry of `PutEvents` as the event rules see it.
pub fn as_event(entry: &Value) -> Value {
    let detail: Value = serde_json::from_str(entry["Detail"].as_str().expect("a detail"))
        .expect("the detail is JSON");
    json!({
        "source": entry["Source"],
        "detail-type": entry["DetailType"],
        "detail": detail,
    })
}

/// An entry of `PutEvents` as EventBridge delivers it to a rule's target
/// (an SQS queue's message body): the event's envelope, with `id` the
/// event id `PutEvents` answered, and the entry's `Detail` as JSON.
pub fn delivered(entry: &Value, id: &str) -> Value {
    // The SDK sends an entry's time as epoch seconds; EventBridge's own,
    // the time it received the entry, otherwise.
    let time = entry["Time"]
        .as_f64()
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds.trunc() as i64, 0))
        .unwrap_or_else(chrono::Utc::now);
    let mut event = as_event(entry);
    let fields = event.as_object_mut().expect("an event");
    for (key, value) in [
        ("version", json!("0")),
        ("id", json!(id)),
        ("account", json!(ACCOUNT)),
        (
            "time",
            json!(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ),
        ("region", json!(REGION)),
        (
            "resources",
            entry.get("Resources").cloned().unwrap_or(json!([])),
        ),
    ] {
        fields.insert(key.to_owned(), value);
    }
    event
}
