//! A stand-in for EventBridge's `PutEvents`, on 127.0.0.1 port 0: accepts
//! every entry and keeps it. The embedded store has no EventBridge; with
//! this one the projector publishes through its real bus client (the SDK's
//! `AWS_ENDPOINT_URL_EVENTBRIDGE` points it here), so that its
//! `events:PutEvents` calls are recorded like every other call, and the
//! entries can be matched against the template's rules.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

type Entries = Arc<Mutex<Vec<Value>>>;

pub struct FakeEventBridge {
    pub endpoint: String,
    entries: Entries,
}

impl FakeEventBridge {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let entries = Entries::default();
        let app = axum::Router::new()
            .fallback(put_events)
            .with_state(entries.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, entries }
    }

    /// Every entry received so far, as sent (`Source`, `DetailType`,
    /// `Detail`, `EventBusName`, ...).
    pub fn entries(&self) -> Vec<Value> {
        self.entries.lock().unwrap().clone()
    }
}

async fn put_events(State(entries): State<Entries>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target != "AWSEvents.PutEvents" {
        return (
            StatusCode::BAD_REQUEST,
            format!("only PutEvents here, not {target:?}"),
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let received = request["Entries"].as_array().cloned().unwrap_or_default();
    let results: Vec<Value> = (0..received.len())
        .map(|_| json!({ "EventId": uuid::Uuid::new_v4().to_string() }))
        .collect();
    entries.lock().unwrap().extend(received);
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
