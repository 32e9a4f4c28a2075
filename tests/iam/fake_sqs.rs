//! A stand-in for SQS on 127.0.0.1 port 0, answering its JSON protocol
//! (`X-Amz-Target: AmazonSQS.<Operation>`, `application/x-amz-json-1.0`)
//! for what a consumer calls: `ReceiveMessage` (long polling for up to
//! `WaitTimeSeconds`, with `ApproximateReceiveCount`), `DeleteMessage` and
//! `ChangeMessageVisibility`, on the queues the test creates, named by
//! their URLs. A received message is hidden for the queue's visibility
//! timeout (or the one asked); a queue with a redrive policy moves a
//! message received `maxReceiveCount` times to its dead-letter queue at the
//! next receive, as SQS does. Any other operation, or a queue not created,
//! is refused.
//!
//! The embedded store has no SQS; with this one the route planner reads its
//! queue through its real SQS client (the SDK's `AWS_ENDPOINT_URL_SQS`
//! points it here), so that its `sqs:` calls are recorded like every other
//! call. What it cannot show is that SQS accepts them; the moto run covers
//! the queue API itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A message on a queue, as the stand-in keeps it.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub body: String,
    /// How many times it was received.
    pub receive_count: u32,
    /// How many times its visibility was changed.
    pub visibility_changes: u32,
    /// The receipt handle of its latest receive.
    receipt: Option<String>,
    visible_at: Instant,
}

#[derive(Debug)]
struct Queue {
    messages: Vec<Message>,
    /// Deleted, in order.
    deleted: Vec<Message>,
    visibility_timeout: Duration,
    /// The dead-letter queue's URL, and the receives before a message
    /// moves there.
    redrive: Option<(String, u32)>,
}

#[derive(Default)]
struct Queues {
    by_url: Mutex<BTreeMap<String, Queue>>,
    /// Woken when a message may have become visible.
    changed: Notify,
}

#[derive(Clone)]
pub struct FakeSqs {
    pub endpoint: String,
    queues: Arc<Queues>,
}

fn answer_json(body: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}

/// An SQS error: `code` the JSON protocol's type, `query_code` the one of
/// the query protocol the SDK maps its errors by.
fn error(code: &str, query_code: &str, message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [
            (
                header::CONTENT_TYPE,
                "application/x-amz-json-1.0".to_owned(),
            ),
            (
                header::HeaderName::from_static("x-amzn-query-error"),
                format!("{query_code};Sender"),
            ),
        ],
        json!({ "__type": format!("com.amazonaws.sqs#{code}"), "message": message }).to_string(),
    )
        .into_response()
}

fn no_queue(url: &str) -> Response {
    error(
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        format!("The specified queue {url} does not exist."),
    )
}

fn invalid_receipt(receipt: &str) -> Response {
    error(
        "ReceiptHandleIsInvalid",
        "ReceiptHandleIsInvalid",
        format!("The input receipt handle \"{receipt}\" is not a valid receipt handle."),
    )
}

impl FakeSqs {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let queues = Arc::new(Queues::default());
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(queues.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, queues }
    }

    /// Creates the queue of URL `url`, which hides a received message for
    /// `visibility_timeout`, and moves one received `redrive.1` times to
    /// the queue of URL `redrive.0` (created too).
    pub fn create_queue(
        &self,
        url: &str,
        visibility_timeout: Duration,
        redrive: Option<(&str, u32)>,
    ) {
        let mut queues = self.queues.by_url.lock().unwrap();
        let redrive = redrive.map(|(dead_letters, max)| {
            assert!(max >= 1, "maxReceiveCount is 1 to 1000");
            queues
                .entry(dead_letters.to_owned())
                .or_insert_with(|| Queue::new(visibility_timeout, None));
            (dead_letters.to_owned(), max)
        });
        queues.insert(url.to_owned(), Queue::new(visibility_timeout, redrive));
    }

    /// Sends `body` to the queue of URL `url`; returns the message's id.
    pub fn send(&self, url: &str, body: String) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.queues
            .by_url
            .lock()
            .unwrap()
            .get_mut(url)
            .unwrap_or_else(|| panic!("no queue {url}"))
            .messages
            .push(Message {
                id: id.clone(),
                body,
                receive_count: 0,
                visibility_changes: 0,
                receipt: None,
                visible_at: Instant::now(),
            });
        self.queues.changed.notify_waiters();
        id
    }

    /// The messages on the queue of URL `url`, visible or not.
    pub fn messages(&self, url: &str) -> Vec<Message> {
        self.with_queue(url, |q| q.messages.clone())
    }

    /// The messages deleted from the queue of URL `url`, in order.
    pub fn deleted(&self, url: &str) -> Vec<Message> {
        self.with_queue(url, |q| q.deleted.clone())
    }

    fn with_queue<T>(&self, url: &str, read: impl FnOnce(&Queue) -> T) -> T {
        read(
            self.queues
                .by_url
                .lock()
                .unwrap()
                .get(url)
                .unwrap_or_else(|| panic!("no queue {url}")),
        )
    }
}

impl Queue {
    fn new(visibility_timeout: Duration, redrive: Option<(String, u32)>) -> Self {
        Self {
            messages: Vec::new(),
            deleted: Vec::new(),
            visibility_timeout,
            redrive,
        }
    }

    fn position(&self, receipt: &str) -> Option<usize> {
        self.messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(receipt))
    }
}

async fn answer(State(queues): State<Arc<Queues>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let url = request["QueueUrl"].as_str().unwrap_or_default().to_owned();
    let receipt = request["ReceiptHandle"].as_str().unwrap_or_default();
    match target.as_str() {
        "AmazonSQS.ReceiveMessage" => receive(&queues, &url, &request).await,
        "AmazonSQS.DeleteMessage" => {
            let mut by_url = queues.by_url.lock().unwrap();
            let Some(queue) = by_url.get_mut(&url) else {
                return no_queue(&url);
            };
            let Some(at) = queue.position(receipt) else {
                return invalid_receipt(receipt);
            };
            let message = queue.messages.remove(at);
            queue.deleted.push(message);
            answer_json(json!({}))
        }
        "AmazonSQS.ChangeMessageVisibility" => {
            let Some(seconds) = request["VisibilityTimeout"]
                .as_u64()
                .filter(|s| *s <= 12 * 60 * 60)
            else {
                return error(
                    "InvalidParameterValue",
                    "InvalidParameterValue",
                    format!("VisibilityTimeout {}", request["VisibilityTimeout"]),
                );
            };
            let mut by_url = queues.by_url.lock().unwrap();
            let Some(queue) = by_url.get_mut(&url) else {
                return no_queue(&url);
            };
            let Some(at) = queue.position(receipt) else {
                return invalid_receipt(receipt);
            };
            let message = &mut queue.messages[at];
            message.visible_at = Instant::now() + Duration::from_secs(seconds);
            message.visibility_changes += 1;
            queues.changed.notify_waiters();
            answer_json(json!({}))
        }
        other => error(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            format!("the stand-in answers no {other:?}"),
        ),
    }
}

/// `ReceiveMessage`: up to `MaxNumberOfMessages` visible messages, waiting
/// up to `WaitTimeSeconds` for one.
async fn receive(queues: &Queues, url: &str, request: &Value) -> Response {
    let max = request["MaxNumberOfMessages"].as_u64().unwrap_or(1);
    let wait = request["WaitTimeSeconds"].as_u64().unwrap_or(0);
    if !(1..=10).contains(&max) || wait > 20 {
        return error(
            "InvalidParameterValue",
            "InvalidParameterValue",
            format!("MaxNumberOfMessages {max}, WaitTimeSeconds {wait}"),
        );
    }
    // Only the attributes asked for, by either name of the parameter.
    let with_receive_count = ["MessageSystemAttributeNames", "AttributeNames"]
        .iter()
        .flat_map(|key| request[key].as_array().into_iter().flatten())
        .any(|name| name == "ApproximateReceiveCount" || name == "All");
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        // Registered before looking, so that no change is missed.
        let changed = queues.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let next_visible = {
            let mut by_url = queues.by_url.lock().unwrap();
            let Some(queue) = by_url.get_mut(url) else {
                return no_queue(url);
            };
            let hidden = request["VisibilityTimeout"]
                .as_u64()
                .map_or(queue.visibility_timeout, Duration::from_secs);
            let redrive = queue.redrive.clone();
            let now = Instant::now();
            let mut received = Vec::new();
            let mut dead = Vec::new();
            for message in queue.messages.iter_mut().filter(|m| m.visible_at <= now) {
                if received.len() as u64 == max {
                    break;
                }
                if let Some((_, max_receives)) = &redrive
                    && message.receive_count >= *max_receives
                {
                    dead.push(message.id.clone());
                    continue;
                }
                message.receive_count += 1;
                message.receipt = Some(uuid::Uuid::new_v4().to_string());
                message.visible_at = now + hidden;
                let mut answered = json!({
                    "MessageId": message.id,
                    "ReceiptHandle": message.receipt,
                    "Body": message.body,
                });
                if with_receive_count {
                    answered["Attributes"] =
                        json!({ "ApproximateReceiveCount": message.receive_count.to_string() });
                }
                received.push(answered);
            }
            let next_visible = queue
                .messages
                .iter()
                .map(|m| m.visible_at)
                .filter(|at| *at > now)
                .min();
            if let Some((dead_letters, _)) = redrive {
                let (moved, kept) = std::mem::take(&mut queue.messages)
                    .into_iter()
                    .partition(|m| dead.contains(&m.id));
                queue.messages = kept;
                let dead_letters = by_url
                    .get_mut(&dead_letters)
                    .expect("the dead-letter queue");
                dead_letters
                    .messages
                    .extend(moved.into_iter().map(|m: Message| Message {
                        receipt: None,
                        visible_at: now,
                        ..m
                    }));
            }
            if !received.is_empty() || Instant::now() >= deadline {
                return answer_json(json!({ "Messages": received }));
            }
            next_visible
        };
        let until = next_visible.map_or(deadline, |at| at.min(deadline));
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}
