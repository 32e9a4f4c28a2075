//! Group commit: appends that arrive while the store is busy share one
//! `TransactWriteItems`.
//!
//! At most `max_in_flight` transactions are outstanding. An append that finds
//! a free slot is sent at once, alone, so a lightly loaded service sends one
//! transaction per command as before. Appends that arrive while every slot is
//! taken wait in a queue, and the next slot to free up takes as many of them
//! as fit into one transaction: at most [`MAX_ITEMS`] items and
//! [`MAX_BYTES`] of items, and no item twice (DynamoDB refuses a transaction
//! that names one item in two actions). An append that shares an item with
//! one already taken waits for the next transaction, as does every later
//! append sharing an item with it, so appends to one item keep their order.
//!
//! All of a transaction lands or none of it does, so every append in it is
//! answered only once the transaction is. When one append's condition fails
//! (a duplicate request, a taken email, a concurrent writer), the store
//! cancels the whole transaction and says which items failed: that append
//! gets its error, and the others, whose items all passed, are sent again
//! alone. So an append makes at most two calls because of a neighbour.
//!
//! The store does less work per append in one transaction than in many:
//! each request has a fixed cost (HTTP, parsing, the commit), which the
//! appends of a transaction share. On the embedded store, which answers one
//! request at a time, that fixed cost is most of a small append's (see
//! `BENCHMARKS.md`). DynamoDB charges the same capacity either way.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ReturnConsumedCapacity, TransactWriteItem};
use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::append::{AppendError, Part, cancellation_reasons, classify, classify_reasons};
use crate::error::StoreError;

/// The most items DynamoDB takes in one `TransactWriteItems`.
pub const MAX_ITEMS: usize = 100;

/// The most bytes of items one transaction carries, by [`item_bytes`]'s
/// estimate: a quarter of DynamoDB's 4 MB request limit, so that the
/// estimate's error and the request's framing never reach it.
pub const MAX_BYTES: usize = 1 << 20;

/// How many queued appends one transaction is chosen from. Bounds the work
/// of choosing when the queue is long.
const SCAN: usize = 256;

/// One append's transaction, waiting to be sent.
pub(super) struct Pending {
    pub items: Vec<TransactWriteItem>,
    /// What each item stands for, to read cancellation reasons.
    pub parts: Vec<Part>,
    /// Each item's table and key: no two appends in a transaction share one.
    pub keys: Vec<String>,
    /// Estimated size of the items.
    pub bytes: usize,
    /// Send in a transaction of its own: set once another append's failure
    /// cancelled a transaction this one was in.
    pub alone: bool,
    reply: oneshot::Sender<Result<(), AppendError>>,
}

/// What choosing a batch needs to know of a queued append.
trait Queued {
    fn keys(&self) -> &[String];
    fn item_count(&self) -> usize;
    fn bytes(&self) -> usize;
    fn alone(&self) -> bool;
}

impl Queued for Pending {
    fn keys(&self) -> &[String] {
        &self.keys
    }
    fn item_count(&self) -> usize {
        self.items.len()
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn alone(&self) -> bool {
        self.alone
    }
}

/// Takes the next transaction's appends off the front of `queue`: the first,
/// then, among the next [`SCAN`], every one that fits and shares no item with
/// one taken or one left behind. The rest stay queued, in order.
fn take_batch<T: Queued>(queue: &mut VecDeque<T>) -> Vec<T> {
    let Some(first) = queue.pop_front() else {
        return Vec::new();
    };
    let mut items = first.item_count();
    let mut bytes = first.bytes();
    let mut taken: HashSet<String> = first.keys().iter().cloned().collect();
    let mut batch = vec![first];
    if batch[0].alone() {
        return batch;
    }
    let mut blocked: HashSet<String> = HashSet::new();
    let mut left = Vec::new();
    let scan = queue.len().min(SCAN);
    for candidate in queue.drain(..scan) {
        let fits = !candidate.alone()
            && items + candidate.item_count() <= MAX_ITEMS
            && bytes + candidate.bytes() <= MAX_BYTES
            && candidate
                .keys()
                .iter()
                .all(|key| !taken.contains(key) && !blocked.contains(key));
        if fits {
            items += candidate.item_count();
            bytes += candidate.bytes();
            taken.extend(candidate.keys().iter().cloned());
            batch.push(candidate);
        } else {
            blocked.extend(candidate.keys().iter().cloned());
            left.push(candidate);
        }
    }
    for candidate in left.into_iter().rev() {
        queue.push_front(candidate);
    }
    batch
}

/// The queue, the slots, and what they did.
pub(super) struct GroupCommit {
    client: Client,
    queue: Mutex<VecDeque<Pending>>,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    metrics: GroupCommitMetrics,
}

impl GroupCommit {
    pub fn new(client: Client, max_in_flight: usize, metrics: GroupCommitMetrics) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self {
            client,
            queue: Mutex::new(VecDeque::new()),
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            metrics,
        }
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    pub fn metrics(&self) -> &GroupCommitMetrics {
        &self.metrics
    }

    /// Queues the append and waits for its transaction.
    pub async fn append(
        self: &Arc<Self>,
        items: Vec<TransactWriteItem>,
        parts: Vec<Part>,
        keys: Vec<String>,
    ) -> Result<(), AppendError> {
        self.queue_and_wait(items, parts, keys, false).await
    }

    /// Sends `items` in a transaction of their own (one of the slots), and
    /// waits for it: appends that must land together or not at all.
    pub async fn append_alone(
        self: &Arc<Self>,
        items: Vec<TransactWriteItem>,
        parts: Vec<Part>,
        keys: Vec<String>,
    ) -> Result<(), AppendError> {
        self.queue_and_wait(items, parts, keys, true).await
    }

    async fn queue_and_wait(
        self: &Arc<Self>,
        items: Vec<TransactWriteItem>,
        parts: Vec<Part>,
        keys: Vec<String>,
        alone: bool,
    ) -> Result<(), AppendError> {
        let (reply, answer) = oneshot::channel();
        let bytes = items.iter().map(item_bytes).sum();
        self.lock().push_back(Pending {
            items,
            parts,
            keys,
            bytes,
            alone,
            reply,
        });
        self.pump();
        // The transaction runs in a task of its own, so it completes (and
        // this append is answered or dropped) even if the caller gives up.
        answer.await.unwrap_or_else(|_| {
            Err(AppendError::Store(StoreError::Inconsistent(
                "the append's transaction ended without an answer".into(),
            )))
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a transaction for each free slot while appends are queued.
    /// Called after queueing and after each transaction ends, so a queued
    /// append always finds either a free slot or a transaction that will
    /// call this again once it ends.
    fn pump(self: &Arc<Self>) {
        loop {
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                return;
            };
            let batch = take_batch(&mut self.lock());
            if batch.is_empty() {
                return;
            }
            let this = Arc::clone(self);
            tokio::spawn(async move {
                this.commit(batch, slot).await;
            });
        }
    }

    async fn commit(self: Arc<Self>, batch: Vec<Pending>, slot: OwnedSemaphorePermit) {
        self.metrics.batch_size.observe(batch.len() as f64);
        let items: Vec<TransactWriteItem> = batch
            .iter()
            .flat_map(|pending| pending.items.iter().cloned())
            .collect();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        drop(slot);
        let resend = match result {
            Ok(_) => {
                for pending in batch {
                    let _ = pending.reply.send(Ok(()));
                }
                Vec::new()
            }
            Err(err) => self.answer_failure(batch, err),
        };
        if !resend.is_empty() {
            let mut queue = self.lock();
            for pending in resend.into_iter().rev() {
                queue.push_front(pending);
            }
        }
        self.pump();
    }

    /// Answers the appends of a failed transaction, and returns those to
    /// send again: the ones whose own items all passed.
    fn answer_failure<R>(
        &self,
        mut batch: Vec<Pending>,
        err: SdkError<TransactWriteItemsError, R>,
    ) -> Vec<Pending>
    where
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        if batch.len() == 1 {
            let pending = batch.remove(0);
            let _ = pending.reply.send(Err(classify(&pending.parts, err)));
            return Vec::new();
        }
        let reasons = cancellation_reasons(&err);
        let total: usize = batch.iter().map(|p| p.items.len()).sum();
        if reasons.len() != total {
            // Not a cancellation naming each item: the transaction failed as
            // a whole (throttling, the network), and so did each append.
            let err = StoreError::call("appending events", err);
            for pending in batch {
                let _ = pending.reply.send(Err(AppendError::Store(err.clone())));
            }
            return Vec::new();
        }
        let mut resend = Vec::new();
        let mut offset = 0;
        for mut pending in batch {
            let own = &reasons[offset..offset + pending.items.len()];
            offset += pending.items.len();
            if own.iter().all(|code| passed(code.as_deref())) {
                self.metrics.resent.inc();
                pending.alone = true;
                resend.push(pending);
                continue;
            }
            let answer = classify_reasons(&pending.parts, own).unwrap_or_else(|| {
                AppendError::Store(StoreError::Inconsistent(format!(
                    "appending events: transaction cancelled: {own:?}"
                )))
            });
            let _ = pending.reply.send(Err(answer));
        }
        resend
    }
}

/// Whether a cancellation reason says the item itself was fine.
fn passed(code: Option<&str>) -> bool {
    matches!(code, None | Some("None"))
}

/// A generous estimate of an action's size on the wire: every attribute
/// name and value, and the expressions.
pub(super) fn item_bytes(item: &TransactWriteItem) -> usize {
    fn map(values: &std::collections::HashMap<String, AttributeValue>) -> usize {
        values.iter().map(|(k, v)| k.len() + value(v) + 8).sum()
    }
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => b.as_ref().len() * 2,
            AttributeValue::Ss(ss) | AttributeValue::Ns(ss) => ss.iter().map(|s| s.len() + 4).sum(),
            AttributeValue::Bs(bs) => bs.iter().map(|b| b.as_ref().len() * 2 + 4).sum(),
            AttributeValue::L(list) => list.iter().map(|v| value(v) + 8).sum(),
            AttributeValue::M(m) => map(m),
            _ => 8,
        }
    }
    fn text(s: Option<&str>) -> usize {
        s.map_or(0, str::len)
    }
    use aws_sdk_dynamodb::types::AttributeValue;
    let names = |n: Option<&std::collections::HashMap<String, String>>| {
        n.map_or(0, |n| n.iter().map(|(k, v)| k.len() + v.len() + 8).sum())
    };
    let values = |v: Option<&std::collections::HashMap<String, AttributeValue>>| v.map_or(0, map);
    let mut size = 64;
    if let Some(put) = &item.put {
        size += put.table_name.len()
            + map(&put.item)
            + text(put.condition_expression.as_deref())
            + names(put.expression_attribute_names.as_ref())
            + values(put.expression_attribute_values.as_ref());
    }
    if let Some(delete) = &item.delete {
        size += delete.table_name.len()
            + map(&delete.key)
            + text(delete.condition_expression.as_deref())
            + names(delete.expression_attribute_names.as_ref())
            + values(delete.expression_attribute_values.as_ref());
    }
    if let Some(check) = &item.condition_check {
        size += check.table_name.len()
            + map(&check.key)
            + check.condition_expression.len()
            + names(check.expression_attribute_names.as_ref())
            + values(check.expression_attribute_values.as_ref());
    }
    if let Some(update) = &item.update {
        size += update.table_name.len()
            + map(&update.key)
            + update.update_expression.len()
            + text(update.condition_expression.as_deref())
            + names(update.expression_attribute_names.as_ref())
            + values(update.expression_attribute_values.as_ref());
    }
    size
}

/// What the group commit did. The counters work unregistered too, so that
/// tests can read them without a registry.
#[derive(Clone, Debug)]
pub struct GroupCommitMetrics {
    /// Appends per `TransactWriteItems`: its count is the transactions sent,
    /// its sum the appends they carried.
    pub batch_size: Histogram,
    /// Appends sent again, alone, because another append's failure
    /// cancelled their transaction.
    pub resent: IntCounter,
}

impl GroupCommitMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "dynabridge_append_transaction_appends",
                    "Appends carried by each TransactWriteItems the command service sent (group commit)",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )?,
            resent: IntCounter::new(
                "dynabridge_append_resent_total",
                "Appends sent again alone because another append's failed condition cancelled their transaction",
            )?,
        })
    }

    /// Registers every metric with `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.batch_size.clone()))?;
        registry.register(Box::new(self.resent.clone()))?;
        Ok(())
    }

    /// Transactions sent.
    pub fn transactions(&self) -> u64 {
        self.batch_size.get_sample_count()
    }

    /// Appends sent, counting each time one is sent.
    pub fn appends(&self) -> u64 {
        self.batch_size.get_sample_sum() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Fake {
        name: &'static str,
        keys: Vec<String>,
        items: usize,
        bytes: usize,
        alone: bool,
    }

    impl Queued for Fake {
        fn keys(&self) -> &[String] {
            &self.keys
        }
        fn item_count(&self) -> usize {
            self.items
        }
        fn bytes(&self) -> usize {
            self.bytes
        }
        fn alone(&self) -> bool {
            self.alone
        }
    }

    fn fake(name: &'static str, keys: &[&str]) -> Fake {
        Fake {
            name,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            items: keys.len(),
            bytes: 100,
            alone: false,
        }
    }

    fn names<'a>(fakes: impl IntoIterator<Item = &'a Fake>) -> Vec<&'static str> {
        fakes.into_iter().map(|f| f.name).collect()
    }

    #[test]
    fn appends_on_distinct_items_share_a_transaction() {
        let mut queue =
            VecDeque::from([fake("a", &["1", "2"]), fake("b", &["3"]), fake("c", &["4"])]);
        assert_eq!(names(&take_batch(&mut queue)), ["a", "b", "c"]);
        assert!(queue.is_empty());
        assert!(take_batch(&mut queue).is_empty());
    }

    #[test]
    fn an_item_is_named_once_and_appends_to_it_keep_their_order() {
        // b shares an item with a; c shares one with b (not with a), so it
        // must not overtake b; d is free.
        let mut queue = VecDeque::from([
            fake("a", &["x"]),
            fake("b", &["x", "y"]),
            fake("c", &["y"]),
            fake("d", &["z"]),
        ]);
        assert_eq!(names(&take_batch(&mut queue)), ["a", "d"]);
        assert_eq!(names(&queue), ["b", "c"]);
        assert_eq!(names(&take_batch(&mut queue)), ["b"]);
        assert_eq!(names(&take_batch(&mut queue)), ["c"]);
    }

    #[test]
    fn a_transaction_stays_within_the_item_and_byte_limits() {
        let many = |name, n: usize| Fake {
            name,
            keys: (0..n).map(|i| format!("{name}{i}")).collect(),
            items: n,
            bytes: 10,
            alone: false,
        };
        let mut queue = VecDeque::from([many("a", 60), many("b", 41), many("c", 40)]);
        assert_eq!(names(&take_batch(&mut queue)), ["a", "c"]);
        assert_eq!(names(&take_batch(&mut queue)), ["b"]);

        let big = |name| Fake {
            bytes: MAX_BYTES / 2,
            ..fake(name, &[name])
        };
        let mut queue = VecDeque::from([big("a"), big("b"), big("c")]);
        assert_eq!(names(&take_batch(&mut queue)), ["a", "b"]);
        assert_eq!(names(&take_batch(&mut queue)), ["c"]);
    }

    #[test]
    fn an_append_marked_alone_goes_alone() {
        let alone = |name, keys: &[&str]| Fake {
            alone: true,
            ..fake(name, keys)
        };
        let mut queue = VecDeque::from([
            alone("a", &["1"]),
            fake("b", &["2"]),
            alone("c", &["3"]),
            fake("d", &["4"]),
        ]);
        assert_eq!(names(&take_batch(&mut queue)), ["a"]);
        assert_eq!(names(&take_batch(&mut queue)), ["b", "d"]);
        assert_eq!(names(&take_batch(&mut queue)), ["c"]);
    }

    #[test]
    fn only_the_front_of_a_long_queue_is_looked_at() {
        let mut queue: VecDeque<Fake> = (0..SCAN + 10).map(|_| fake("n", &["k"])).collect();
        for (i, f) in queue.iter_mut().enumerate() {
            f.keys = vec![i.to_string()];
        }
        let batch = take_batch(&mut queue);
        assert_eq!(batch.len(), MAX_ITEMS);
        assert_eq!(queue.len(), SCAN + 10 - MAX_ITEMS);
        // What was left is still in order.
        let keys: Vec<usize> = queue.iter().map(|f| f.keys[0].parse().unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn estimates_grow_with_the_item() {
        use aws_sdk_dynamodb::types::{AttributeValue, Put};
        let put = |payload: &str| {
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name("t")
                        .item("k", AttributeValue::S(payload.to_owned()))
                        .build()
                        .unwrap(),
                )
                .build()
        };
        let small = item_bytes(&put("x"));
        let large = item_bytes(&put(&"x".repeat(10_000)));
        assert!(large >= small + 9_999, "{small} {large}");
    }

    /// Tests against the embedded store, through the SDK.
    mod store {
        use std::time::Duration;

        use crate::fixtures::new_user_append as create_user;
        use crate::{Append, AppendError, EventStore, GroupCommitMetrics};
        use dynabridge_domain::{AggregateType, Requirement, UserId};
        use dynabridge_testkit::{EmbeddedStore, embedded_store};

        async fn store(max_in_flight: usize) -> (EventStore, EmbeddedStore) {
            let (sdk, tables, stop) = embedded_store().await;
            let store = EventStore::new(aws_sdk_dynamodb::Client::new(&sdk), tables)
                .with_group_commit(max_in_flight, GroupCommitMetrics::new().unwrap());
            (store, stop)
        }

        async fn events_of(store: &EventStore, user: UserId) -> usize {
            store.load(&user.to_string()).await.unwrap().len()
        }

        /// Appends `appends` while the only slot is held, so that they all
        /// wait in the queue, then frees the slot: the next transaction is
        /// chosen from all of them at once.
        async fn queued_together(
            store: &EventStore,
            appends: Vec<Append>,
        ) -> Vec<Result<(), AppendError>> {
            let group = &store.group;
            let held = std::sync::Arc::clone(&group.slots)
                .try_acquire_owned()
                .unwrap();
            let n = appends.len();
            let tasks: Vec<_> = appends
                .into_iter()
                .map(|append| {
                    let store = store.clone();
                    tokio::spawn(async move { store.append(&append).await })
                })
                .collect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while group.lock().len() < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "appends never queued"
                );
                tokio::task::yield_now().await;
            }
            drop(held);
            group.pump();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        }

        #[tokio::test]
        async fn concurrent_appends_share_transactions_and_all_land() {
            let (store, _stop) = store(1).await;
            let appends: Vec<(UserId, Append)> = (0..40)
                .map(|i| create_user(&format!("req-{i}"), &format!("u{i}@example.com")))
                .collect();
            let tasks: Vec<_> = appends
                .iter()
                .map(|(_, append)| {
                    let (store, append) = (store.clone(), append.clone());
                    tokio::spawn(async move { store.append(&append).await })
                })
                .collect();
            for task in tasks {
                let result = task.await.unwrap();
                assert!(result.is_ok(), "{result:?}");
            }
            let metrics = store.group_commit_metrics();
            assert_eq!(metrics.appends(), 40);
            assert!(
                metrics.transactions() < 40,
                "{} transactions for 40 appends",
                metrics.transactions()
            );
            assert_eq!(metrics.resent.get(), 0);
            for (user, append) in &appends {
                assert_eq!(events_of(&store, *user).await, 1);
                let recorded = store
                    .recorded_request(&append.idempotency.request_id)
                    .await
                    .unwrap();
                assert_eq!(recorded.unwrap().1, append.idempotency.outcome);
            }
        }

        #[tokio::test]
        async fn an_unchanged_requirement_holds_until_the_aggregate_has_a_later_event() {
            let (store, _stop) = store(1).await;
            let (watched, first) = create_user("req-watched", "watched@example.com");
            store.append(&first).await.unwrap();
            let unchanged_since = |version| Requirement::Unchanged {
                aggregate_type: AggregateType::User,
                id: *watched.as_uuid(),
                version,
            };

            // Decided on the watched user before it existed: it has moved on.
            let (behind, mut stale) = create_user("req-stale", "stale@example.com");
            stale.requirements.push(unchanged_since(0));
            assert!(
                matches!(store.append(&stale).await, Err(AppendError::Unmet(1))),
                "the second requirement, unmet"
            );
            assert_eq!(events_of(&store, behind).await, 0, "nothing written");

            // Decided on its current version: it holds.
            let (current, mut fresh) = create_user("req-fresh", "fresh@example.com");
            fresh.requirements.push(unchanged_since(1));
            store.append(&fresh).await.unwrap();
            assert_eq!(events_of(&store, current).await, 1);
        }

        #[tokio::test]
        async fn a_failed_condition_fails_its_append_alone() {
            let (store, _stop) = store(1).await;
            let (_, first) = create_user("req-first", "taken@example.com");
            store.append(&first).await.unwrap();

            let (fine_a, a) = create_user("req-a", "a@example.com");
            let (taken, b) = create_user("req-b", "taken@example.com");
            let (fine_c, c) = create_user("req-c", "c@example.com");
            let (retry, d) = create_user("req-first", "d@example.com");
            let results = queued_together(&store, vec![a, b, c, d]).await;

            assert!(results[0].is_ok(), "{:?}", results[0]);
            assert!(
                matches!(results[1], Err(AppendError::Unmet(0))),
                "{:?}",
                results[1]
            );
            assert!(results[2].is_ok(), "{:?}", results[2]);
            assert!(
                matches!(results[3], Err(AppendError::DuplicateRequest)),
                "{:?}",
                results[3]
            );
            assert_eq!(events_of(&store, fine_a).await, 1);
            assert_eq!(events_of(&store, fine_c).await, 1);
            // The failed appends wrote nothing at all.
            assert_eq!(events_of(&store, taken).await, 0);
            assert_eq!(events_of(&store, retry).await, 0);
            assert!(store.recorded_request("req-b").await.unwrap().is_none());
            // The four went together once; the two that passed, again alone.
            let metrics = store.group_commit_metrics();
            assert!(metrics.resent.get() >= 2, "{}", metrics.resent.get());
            assert_eq!(
                metrics.batch_size.get_sample_count(),
                1 + 1 + metrics.resent.get()
            );
        }

        #[tokio::test]
        async fn appends_naming_one_item_go_in_separate_transactions() {
            let (store, _stop) = store(1).await;
            // Same request id, and, separately, the same email.
            let (first, a) = create_user("req-same", "one@example.com");
            let (_, b) = create_user("req-same", "two@example.com");
            let (third, c) = create_user("req-other", "three@example.com");
            let (_, d) = create_user("req-fourth", "three@example.com");
            let results = queued_together(&store, vec![a, b, c, d]).await;

            assert!(results[0].is_ok(), "{:?}", results[0]);
            assert!(
                matches!(results[1], Err(AppendError::DuplicateRequest)),
                "{:?}",
                results[1]
            );
            assert!(results[2].is_ok(), "{:?}", results[2]);
            assert!(
                matches!(results[3], Err(AppendError::Unmet(0))),
                "{:?}",
                results[3]
            );
            assert_eq!(events_of(&store, first).await, 1);
            assert_eq!(events_of(&store, third).await, 1);
            // a and c together, then b and d together, each failing alone:
            // no transaction named an item twice, so none was refused whole.
            let metrics = store.group_commit_metrics();
            assert_eq!(metrics.resent.get(), 0);
            assert_eq!(metrics.transactions(), 2);
        }

        #[tokio::test]
        async fn when_the_store_is_gone_every_append_of_the_transaction_fails() {
            let (store, stop) = store(1).await;
            let (_, warm) = create_user("req-warm", "warm@example.com");
            store.append(&warm).await.unwrap();
            stop.stop();
            let appends = (0..3)
                .map(|i| create_user(&format!("gone-{i}"), &format!("g{i}@example.com")).1)
                .collect();
            let results = queued_together(&store, appends).await;
            for result in results {
                assert!(matches!(result, Err(AppendError::Store(_))), "{result:?}");
            }
        }
    }
}
