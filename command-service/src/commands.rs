//! The command side's application service: load an aggregate, decide, append
//! in one transaction, with idempotency and bounded retries. Transport-free:
//! the gRPC adapter parses requests into the types here.
//!
//! With an [`AggregateCache`], an aggregate this process saw recently is
//! decided from memory and the append alone validates it (see `cache`).

mod across;
mod cache;
mod catalog;

pub use cache::{AggregateCache, AggregateCacheMetrics};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use dynabridge::pb::ErrorReason as Reason;
use dynabridge_domain::{Aggregate, Requirement, StoredEvent, ValidationError, Version};
use dynabridge_event_store::snapshot::crossed;
use dynabridge_event_store::{
    Append, AppendError, CommandOutcome, CommandStore, Creation, EventStore, IdempotencyRecord,
    RecordIn, Snapshots, StoreError, StoredSnapshot, load_aggregate,
};
use dynabridge_runtime::error::AppError;

/// A client's idempotency key: 1 to 128 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::single("request_id", "is required"));
        }
        if raw.len() > 128 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::single(
                "request_id",
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What every command carries besides its own fields.
#[derive(Clone, Debug)]
pub struct CommandMeta {
    pub request_id: RequestId,
    /// Hash of the request without `request_id` and `correlation_id`: a retry
    /// must send the same request.
    pub request_hash: String,
    pub correlation_id: String,
    /// The request's W3C trace context, stored with its events.
    pub trace_parent: Option<String>,
    /// The version the client saw; the command fails with `ABORTED` if the
    /// aggregate has moved on.
    pub expected_version: Option<Version>,
}

/// Runs commands against the event store: [`EventStore`] in the service,
/// a fake in the unit tests.
#[derive(Clone, Debug)]
pub struct CommandHandler<S = EventStore> {
    store: S,
    max_attempts: u32,
    /// Shared by the clones: one cache per process.
    cache: Option<Arc<AggregateCache>>,
}

impl<S: CommandStore> CommandHandler<S> {
    /// How many times a command without `expected_version` is re-read and
    /// re-decided when concurrent writers keep winning.
    pub const MAX_ATTEMPTS: u32 = 5;

    /// A handler that reads every aggregate from the store before deciding.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_attempts: Self::MAX_ATTEMPTS,
            cache: None,
        }
    }

    /// Decides from `cache` first; a cache of capacity 0 is none.
    pub fn with_aggregate_cache(mut self, cache: AggregateCache) -> Self {
        self.cache = (cache.capacity() > 0).then(|| Arc::new(cache));
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn aggregate_cache(&self) -> Option<&AggregateCache> {
        self.cache.as_deref()
    }

    /// Loads an aggregate (from its latest snapshot and the events after
    /// it, when it takes snapshots), and caches it. Takes a snapshot in the
    /// background when one is due.
    async fn load<A: Snapshots>(&self, id: Uuid) -> Result<A, AppError> {
        let loaded = load_aggregate::<S, A>(&self.store, id)
            .await
            .map_err(store_error)?;
        if let Some(snapshot) = loaded.snapshot_due(id, Utc::now()) {
            self.save_snapshot(snapshot);
        }
        let aggregate = loaded.aggregate;
        if let Some(cache) = &self.cache {
            cache.insert(id, aggregate.clone());
        }
        Ok(aggregate)
    }

    /// Stores `snapshot` in a task of its own: a command never waits for a
    /// snapshot, and a snapshot that fails is only a later one's to make.
    fn save_snapshot(&self, snapshot: StoredSnapshot) {
        let store = self.store.clone();
        tokio::spawn(async move {
            match store.save_snapshot(&snapshot).await {
                Ok(()) => tracing::debug!(
                    aggregate_id = %snapshot.aggregate_id,
                    version = snapshot.version,
                    "snapshot taken"
                ),
                Err(err) => tracing::warn!(
                    aggregate_id = %snapshot.aggregate_id,
                    version = snapshot.version,
                    error = %err,
                    "snapshot not taken"
                ),
            }
        });
    }

    /// Gives up deciding from a cached aggregate: it is dropped, and the
    /// command is decided again from the store. Returns its version.
    fn doubt<A: Snapshots>(&self, id: Uuid, cached: &A) -> Version {
        let version = cached.version();
        self.forget(id, cached);
        tracing::debug!(
            aggregate_type = A::TYPE.as_str(),
            aggregate_id = %id,
            cached_version = version,
            "cached aggregate not confirmed, reading it from the store"
        );
        version
    }

    /// The generic command path: load (or start) aggregate `id`, decide
    /// `command`, append the events with the requirements the aggregate
    /// declares, retrying and replaying as the module docs say. Nothing here
    /// knows which aggregate it runs.
    async fn execute<A: Snapshots>(
        &self,
        meta: &CommandMeta,
        id: Uuid,
        command: &A::Command,
        creates: Creates,
    ) -> Result<CommandOutcome, AppError> {
        // A cached aggregate is a guess that only a successful append
        // confirms. Any other outcome is decided again from the store, in
        // the first of the attempts that read it.
        let mut guess = match (creates, &self.cache) {
            (Creates::Nothing, Some(cache)) => cache.get::<A>(id),
            _ => None,
        };
        // The version of a guess given up, to tell whether it was behind.
        let mut doubted: Option<Version> = None;
        let mut attempt = 0;
        loop {
            let (aggregate, from_cache) = match guess.take() {
                Some(cached) => (cached, true),
                None => {
                    attempt += 1;
                    if attempt > self.max_attempts {
                        return Err(AppError::refused(
                            Reason::ConcurrentModification,
                            format!(
                                "{} {id} kept changing concurrently; retry",
                                A::TYPE.as_str()
                            ),
                        )
                        .with("aggregate_id", id));
                    }
                    (self.read::<A>(id, creates, doubted.take()).await?, false)
                }
            };
            let tried = Attempt {
                meta,
                id,
                from_cache,
                creates,
                number: attempt,
            };
            match self.attempt(&tried, command, aggregate).await {
                Next::Done(result) => return result,
                Next::Again { doubted: given_up } => doubted = given_up,
            }
        }
    }

    /// The aggregate as the store has it (a new one when the command
    /// creates it: its id was just made, there is nothing to read).
    /// `doubted` is the version of a cached guess given up just before,
    /// counted as stale if the store is elsewhere.
    async fn read<A: Snapshots>(
        &self,
        id: Uuid,
        creates: Creates,
        doubted: Option<Version>,
    ) -> Result<A, AppError> {
        let aggregate = match creates {
            Creates::Aggregate => A::default(),
            Creates::Nothing => self.load::<A>(id).await?,
        };
        if let (Some(cache), Some(cached)) = (&self.cache, doubted)
            && cached != aggregate.version()
        {
            cache.metrics().stale.inc();
        }
        Ok(aggregate)
    }

    /// One decision on `aggregate` and, if it has events, one append.
    async fn attempt<A: Snapshots>(
        &self,
        tried: &Attempt<'_>,
        command: &A::Command,
        aggregate: A,
    ) -> Next {
        let Attempt {
            meta,
            id,
            from_cache,
            ..
        } = *tried;
        if let Some(expected) = meta.expected_version
            && expected != aggregate.version()
        {
            if from_cache {
                return self.again(id, &aggregate);
            }
            let refusal = AppError::refused(
                Reason::VersionConflict,
                format!(
                    "{} {id} is at version {}, not the expected {expected}",
                    A::TYPE.as_str(),
                    aggregate.version()
                ),
            )
            .with("aggregate_id", id)
            .with("expected_version", expected)
            .with("current_version", aggregate.version());
            return Next::Done(self.replay_or(meta, refusal).await);
        }
        let events = match aggregate.decide(command) {
            // Nothing to do, or a refusal, may only be the cache being
            // behind: neither is confirmed by an append.
            Ok(events) if events.is_empty() && from_cache => return self.again(id, &aggregate),
            Err(_) if from_cache => return self.again(id, &aggregate),
            Ok(events) => events,
            // A retried request may be refused now because it already
            // happened (an order cannot move to PROCESSING twice).
            Err(err) => return Next::Done(self.replay_or(meta, err.into()).await),
        };
        // A request that changes nothing is recorded too, so that its
        // retries answer the same and never change anything later.
        let append = if events.is_empty() {
            self.record_unchanged::<A>(meta, id, &aggregate, Utc::now())
        } else {
            self.build_append::<A>(meta, &aggregate, events, tried.creates, Utc::now())
        };
        if tried.creates == Creates::Aggregate && checks_itself(&append.requirements, id) {
            // The request id was used for the create of an aggregate this
            // one requires (an order of the user it created): both ids
            // derive from it. Not sent: one transaction cannot name the
            // item twice. It is answered as the retry it may be.
            return Next::Done(match self.replay_creation::<A>(meta, id).await {
                Ok(Some(outcome)) => Ok(outcome),
                Ok(None) => Err(AppError::internal("a required aggregate vanished")),
                Err(err) => Err(err),
            });
        }
        let appended = self.store.append(&append).await;
        self.settle(tried, aggregate, append, appended).await
    }

    /// What an append's result means for the command.
    async fn settle<A: Snapshots>(
        &self,
        tried: &Attempt<'_>,
        aggregate: A,
        append: Append,
        appended: Result<(), AppendError>,
    ) -> Next {
        let Attempt {
            meta,
            id,
            from_cache,
            creates,
            number,
        } = *tried;
        match appended {
            Ok(()) if append.events.is_empty() => {
                tracing::debug!(
                    aggregate_type = A::TYPE.as_str(),
                    aggregate_id = %id,
                    version = append.idempotency.outcome.version,
                    "nothing to change; the request is recorded"
                );
                Next::Done(Ok(append.idempotency.outcome))
            }
            Ok(()) => {
                tracing::info!(
                    aggregate_type = A::TYPE.as_str(),
                    aggregate_id = %id,
                    version = append.idempotency.outcome.version,
                    events = append.events.len(),
                    "events appended"
                );
                let before = aggregate.version();
                let appended = append
                    .events
                    .iter()
                    .fold(aggregate, |agg, e| agg.apply(&e.event));
                if let Some(every) = A::EVERY
                    && crossed(every, before, appended.version())
                    && let Some(snapshot) = StoredSnapshot::of(id, &appended, append.now)
                {
                    self.save_snapshot(snapshot);
                }
                if let Some(cache) = &self.cache {
                    cache.insert(id, appended);
                }
                Next::Done(Ok(append.idempotency.outcome))
            }
            Err(AppendError::DuplicateRequest) => Next::Done(
                self.replay_or(meta, AppError::internal("idempotency record vanished"))
                    .await,
            ),
            // The condition on the event versions failed: another writer
            // appended after the cached version. An unmet requirement is
            // checked again too: the requirements were worked out from the
            // cached state.
            Err(AppendError::Conflict | AppendError::Unmet(_)) if from_cache => {
                self.again(id, &aggregate)
            }
            // A create names the aggregate its request id derives: the
            // event there is this request's first attempt, or another's
            // that used the same request id.
            Err(AppendError::Conflict) if creates == Creates::Aggregate => {
                match self.replay_creation::<A>(meta, id).await {
                    Ok(Some(outcome)) => Next::Done(Ok(outcome)),
                    Err(err) => Next::Done(Err(err)),
                    // Not visible yet: a concurrent copy's transaction is
                    // still open. Decided again.
                    Ok(None) => Next::Again { doubted: None },
                }
            }
            // A request that changed nothing was recorded on condition that
            // the aggregate was still at the version decided on: it moved.
            Err(AppendError::Unmet(_)) if append.events.is_empty() => {
                self.forget(id, &aggregate);
                Next::Again { doubted: None }
            }
            // Decided again from a fresh read: with `expected_version`, that
            // read answers the version conflict with the current version (or
            // the original outcome, when the winner was this very request).
            Err(AppendError::Conflict) => {
                self.forget(id, &aggregate);
                tracing::debug!(attempt = number, aggregate_id = %id, "concurrent append, re-deciding");
                Next::Again { doubted: None }
            }
            Err(AppendError::Unmet(index)) => {
                Next::Done(Err(append.requirements.get(index).map_or_else(
                    || AppError::internal(format!("requirement {index} unmet, not sent")),
                    |requirement| requirement.unmet().into(),
                )))
            }
            Err(AppendError::Store(err)) => {
                // The append may have landed or not: the cached state may be
                // behind.
                self.forget(id, &aggregate);
                Next::Done(Err(store_error(err)))
            }
        }
    }

    /// Gives up the cached guess `cached` ([`Self::doubt`]) and decides
    /// again from the store.
    fn again<A: Snapshots>(&self, id: Uuid, cached: &A) -> Next {
        Next::Again {
            doubted: Some(self.doubt(id, cached)),
        }
    }

    /// Drops the cached state of `id` if it is not past `aggregate`'s: the
    /// store is known or suspected to be.
    fn forget<A: Aggregate>(&self, id: Uuid, aggregate: &A) {
        if let Some(cache) = &self.cache {
            cache.forget(id, aggregate.version());
        }
    }

    fn build_append<A: Aggregate>(
        &self,
        meta: &CommandMeta,
        aggregate: &A,
        events: Vec<dynabridge_domain::Event>,
        creates: Creates,
        now: DateTime<Utc>,
    ) -> Append {
        let base = aggregate.version();
        let stored: Vec<StoredEvent> = events
            .into_iter()
            .zip(1..)
            .map(|(event, n)| StoredEvent {
                event_id: Uuid::new_v4(),
                version: base + n,
                occurred_at: now,
                request_id: meta.request_id.as_str().to_owned(),
                correlation_id: meta.correlation_id.clone(),
                trace_parent: meta.trace_parent.clone(),
                event,
            })
            .collect();
        let events: Vec<_> = stored.iter().map(|s| s.event.clone()).collect();
        let requirements = aggregate.requirements(&events);
        let total = A::reported_total(&events);
        let last = &stored[stored.len() - 1];
        let outcome = CommandOutcome {
            aggregate_id: last.event.aggregate_id().to_string(),
            version: last.version,
            event_ids: stored.iter().map(|s| s.event_id.to_string()).collect(),
            correlation_id: meta.correlation_id.clone(),
            total,
        };
        Append {
            events: stored,
            idempotency: IdempotencyRecord {
                request_id: meta.request_id.as_str().to_owned(),
                request_hash: meta.request_hash.clone(),
                outcome,
            },
            // A create's first event is its record: its id derives from the
            // request id, so a retry meets it.
            record: match creates {
                Creates::Aggregate => RecordIn::FirstEvent,
                Creates::Nothing => RecordIn::IdempotencyTable,
            },
            requirements,
            now,
        }
    }

    /// The record of a request that changes nothing: no event, the
    /// aggregate's version as the outcome, on condition that the aggregate
    /// is still at that version.
    fn record_unchanged<A: Aggregate>(
        &self,
        meta: &CommandMeta,
        id: Uuid,
        aggregate: &A,
        now: DateTime<Utc>,
    ) -> Append {
        let version = aggregate.version();
        Append {
            events: Vec::new(),
            idempotency: IdempotencyRecord {
                request_id: meta.request_id.as_str().to_owned(),
                request_hash: meta.request_hash.clone(),
                outcome: CommandOutcome {
                    aggregate_id: id.to_string(),
                    version,
                    event_ids: Vec::new(),
                    correlation_id: meta.correlation_id.clone(),
                    total: None,
                },
            },
            record: RecordIn::IdempotencyTable,
            requirements: vec![Requirement::Unchanged {
                aggregate_type: A::TYPE,
                id,
                version,
            }],
            now,
        }
    }

    /// The outcome of the create that appended aggregate `id`'s first
    /// events, if that was this request; a refusal if it was the same
    /// request id with another request; `None` if the aggregate has no
    /// event (yet).
    async fn replay_creation<A: Aggregate>(
        &self,
        meta: &CommandMeta,
        id: Uuid,
    ) -> Result<Option<CommandOutcome>, AppError> {
        let Some(creation) = self
            .store
            .creation(&id.to_string())
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let Creation {
            request_id,
            request_hash,
            events,
        } = creation;
        if request_id != meta.request_id.as_str() {
            return Err(AppError::internal(format!(
                "aggregate {id}, derived from request {}, was created by request {request_id}",
                meta.request_id.as_str()
            )));
        }
        if request_hash.as_deref() != Some(meta.request_hash.as_str()) {
            return Err(AppError::request_id_reused());
        }
        tracing::info!(
            request_id = meta.request_id.as_str(),
            "retried create, returning the original outcome"
        );
        let decided: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(None);
        };
        Ok(Some(CommandOutcome {
            aggregate_id: id.to_string(),
            version: last.version,
            event_ids: events.iter().map(|e| e.event_id.to_string()).collect(),
            correlation_id: first.correlation_id.clone(),
            total: A::reported_total(&decided),
        }))
    }

    /// If this request was already recorded, its original outcome (or a
    /// rejection when the key was reused for another request); else `err`.
    async fn replay_or(
        &self,
        meta: &CommandMeta,
        err: AppError,
    ) -> Result<CommandOutcome, AppError> {
        match self
            .store
            .recorded_request(meta.request_id.as_str())
            .await
            .map_err(store_error)?
        {
            Some((hash, outcome)) if hash == meta.request_hash => {
                tracing::info!(
                    request_id = meta.request_id.as_str(),
                    "retried request, returning the original outcome"
                );
                Ok(outcome)
            }
            Some(_) => Err(AppError::request_id_reused()),
            None => Err(err),
        }
    }
}

/// A store failure as the application error: a failed call is classified
/// as every AWS call is (`AppError: From<CallError>`); an unreadable or
/// inconsistent store is `Internal`.
fn store_error(err: StoreError) -> AppError {
    match err {
        StoreError::Call(call) => call.into(),
        other => AppError::Internal(Box::new(other)),
    }
}

/// Whether a requirement checks aggregate `id`'s own events, the items the
/// append writes.
fn checks_itself(requirements: &[Requirement], id: Uuid) -> bool {
    requirements.iter().any(|r| match r {
        Requirement::Exists { id: other, .. } | Requirement::Unchanged { id: other, .. } => {
            *other == id
        }
        Requirement::Claim { .. } | Requirement::Release { .. } => false,
    })
}

/// One attempt at a command: the request, the aggregate, whether the
/// state decided on is a cached guess, and which read of the store it is.
#[derive(Clone, Copy, Debug)]
struct Attempt<'a> {
    meta: &'a CommandMeta,
    id: Uuid,
    from_cache: bool,
    creates: Creates,
    number: u32,
}

/// How an attempt ends.
#[derive(Debug)]
enum Next {
    /// With the command's answer.
    Done(Result<CommandOutcome, AppError>),
    /// By deciding again from the store; `doubted` is the version of the
    /// cached guess given up, if this attempt decided on one.
    Again { doubted: Option<Version> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Creates {
    /// The command creates a new aggregate, whose id derives from the
    /// request id (`UserId::for_request`).
    Aggregate,
    /// The command acts on an existing aggregate.
    Nothing,
}

#[cfg(test)]
mod tests;
