//! The generic path of a decision across aggregates
//! ([`dynabridge_domain::Coordinates`]): one aggregate decides on its own
//! state and on the states of others of one type, and all their events are
//! appended in one transaction, each aggregate's conditioned on the version
//! read, with the request's idempotency record. Either every aggregate
//! moves, or none does: a purchase never holds part of its items.
//!
//! Every aggregate is read consistently (no cache: the decision is only as
//! good as the versions it read, and the append checks them all); a
//! product's snapshot spares most of its events. A concurrent writer on any
//! of them fails the transaction, and the whole step is read and decided
//! again, up to [`CommandHandler::MAX_ATTEMPTS`] times.

use chrono::Utc;
use futures_util::future::try_join_all;
use uuid::Uuid;

use dynabridge::pb::ErrorReason as Reason;
use dynabridge_domain::{Coordinates, Decision, StoredEvent};
use dynabridge_event_store::group_commit::MAX_ITEMS;
use dynabridge_event_store::snapshot::crossed;
use dynabridge_event_store::{
    Append, AppendError, CommandOutcome, CommandStore, EventStore, IdempotencyRecord, RecordIn,
    Snapshots, StoreError, StoredSnapshot, load_aggregate,
};
use dynabridge_runtime::error::AppError;

use super::{CommandHandler, CommandMeta, store_error};

/// One step of a batch: its request, its aggregate, the step.
pub struct BatchedStep<'a, St> {
    pub meta: &'a CommandMeta,
    pub id: Uuid,
    pub step: &'a St,
}

impl<S: CommandStore> CommandHandler<S> {
    /// Takes several steps that share participants (purchases of one
    /// popular product) together: each decided on the participants' state
    /// the steps before it left, and all appended in as few transactions as
    /// fit (at most 100 items each), each step with its own idempotency
    /// record and answered with its own outcome. One round trip for many
    /// steps, where one at a time would take one each (Equinox calls this
    /// batching). A transaction that fails (a writer outside the batch got
    /// in first, a step already taken) is not retried as a whole: each of
    /// its steps is taken again alone, on the one-step path.
    pub(super) async fn execute_many_with<A, P>(
        &self,
        steps: &[BatchedStep<'_, <A as Coordinates<P>>::Step>],
    ) -> Vec<Result<CommandOutcome, AppError>>
    where
        A: Coordinates<P> + Snapshots,
        P: Snapshots,
    {
        if steps.len() <= 1 {
            let mut answers = Vec::new();
            for s in steps {
                answers.push(self.execute_with::<A, P>(s.meta, s.id, s.step).await);
            }
            return answers;
        }
        // Every answer starts as "take it alone"; the batch fills in those
        // it appended.
        let mut answered: Vec<Option<Result<CommandOutcome, AppError>>> =
            steps.iter().map(|_| None).collect();
        if let Ok((read, batch)) = self.decide_together::<A, P>(steps).await {
            for chunk in batch {
                let appends: Vec<Append> = chunk.iter().map(|(_, append)| append.clone()).collect();
                match self.store.append_together(&appends).await {
                    Ok(()) => {
                        tracing::info!(
                            aggregate_type = A::TYPE.as_str(),
                            steps = appends.len(),
                            events = appends.iter().map(|a| a.events.len()).sum::<usize>(),
                            "steps appended together"
                        );
                        self.snapshot_participants(&read, &appends);
                        for (index, append) in chunk {
                            answered[index] = Some(Ok(append.idempotency.outcome));
                        }
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, steps = chunk.len(), "a batch did not land; its steps go alone");
                    }
                }
            }
        }
        let mut answers = Vec::with_capacity(steps.len());
        for (s, answer) in steps.iter().zip(answered) {
            answers.push(match answer {
                Some(answer) => answer,
                None => self.execute_with::<A, P>(s.meta, s.id, s.step).await,
            });
        }
        answers
    }

    /// The appends of `steps` decided one after another on the states the
    /// earlier ones leave, in chunks of at most 100 items, each append with
    /// the index of its step. A step that decides nothing or is refused is
    /// left out, to be taken alone.
    async fn decide_together<A, P>(
        &self,
        steps: &[BatchedStep<'_, <A as Coordinates<P>>::Step>],
    ) -> Result<(Vec<(Uuid, P)>, Vec<Vec<(usize, Append)>>), AppError>
    where
        A: Coordinates<P> + Snapshots,
        P: Snapshots,
    {
        let deciders: Vec<A> = try_join_all(steps.iter().map(|s| self.load_fresh::<A>(s.id)))
            .await
            .map_err(store_error)?;
        let mut ids: Vec<Uuid> = deciders
            .iter()
            .zip(steps)
            .flat_map(|(decider, s)| decider.participants(s.step))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let read: Vec<(Uuid, P)> =
            try_join_all(ids.iter().map(|id| async move {
                self.load_fresh::<P>(*id).await.map(|state| (*id, state))
            }))
            .await
            .map_err(store_error)?;
        let mut states: std::collections::HashMap<Uuid, P> = read.iter().cloned().collect();
        let mut chunks: Vec<Vec<(usize, Append)>> = vec![Vec::new()];
        let mut items = 0;
        for (index, (decider, s)) in deciders.iter().zip(steps).enumerate() {
            let participants: Vec<(Uuid, P)> = decider
                .participants(s.step)
                .into_iter()
                .filter_map(|id| states.get(&id).map(|state| (id, state.clone())))
                .collect();
            let Ok(decision) = decider.decide_with(s.step, &participants) else {
                continue;
            };
            if decision.own.is_empty() && decision.others.is_empty() {
                continue;
            }
            let append = build_across(s.meta, s.id, decider, &participants, decision);
            // The participants as this step leaves them, for the next.
            for event in &append.events {
                if let Some(state) = states.remove(&event.event.aggregate_id()) {
                    states.insert(event.event.aggregate_id(), state.apply(&event.event));
                }
            }
            let size = EventStore::item_count(&append);
            if items + size > MAX_ITEMS {
                chunks.push(Vec::new());
                items = 0;
            }
            items += size;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push((index, append));
            }
        }
        chunks.retain(|chunk| !chunk.is_empty());
        Ok((read, chunks))
    }

    /// Decides `step` on aggregate `id` of type `A` and the participants of
    /// type `P` it names, and appends every event in one transaction. A step
    /// that decides nothing (done already) is recorded, as any request that
    /// changes nothing, and answered with the aggregate's version.
    pub(super) async fn execute_with<A, P>(
        &self,
        meta: &CommandMeta,
        id: Uuid,
        step: &<A as Coordinates<P>>::Step,
    ) -> Result<CommandOutcome, AppError>
    where
        A: Coordinates<P> + Snapshots,
        P: Snapshots,
    {
        for attempt in 1..=self.max_attempts {
            let aggregate: A = self.load_fresh(id).await.map_err(store_error)?;
            let ids = aggregate.participants(step);
            let participants: Vec<(Uuid, P)> =
                try_join_all(ids.iter().map(|participant| async move {
                    self.load_fresh::<P>(*participant)
                        .await
                        .map(|state| (*participant, state))
                }))
                .await
                .map_err(store_error)?;
            let decision = match aggregate.decide_with(step, &participants) {
                Ok(decision) => decision,
                Err(err) => return self.replay_or(meta, err.into()).await,
            };
            let append = if decision.own.is_empty() && decision.others.is_empty() {
                self.record_unchanged::<A>(meta, id, &aggregate, Utc::now())
            } else {
                build_across(meta, id, &aggregate, &participants, decision)
            };
            match self.store.append(&append).await {
                Ok(()) => {
                    tracing::info!(
                        aggregate_type = A::TYPE.as_str(),
                        aggregate_id = %id,
                        participants = participants.len(),
                        events = append.events.len(),
                        "events appended across aggregates"
                    );
                    self.snapshot_participants(&participants, std::slice::from_ref(&append));
                    return Ok(append.idempotency.outcome);
                }
                Err(AppendError::Conflict) => {
                    tracing::debug!(attempt, aggregate_id = %id, "an aggregate moved, deciding again");
                }
                // A step recorded as changing nothing, whose aggregate moved
                // since: decided again.
                Err(AppendError::Unmet(_)) if append.events.is_empty() => {}
                Err(AppendError::Unmet(index)) => {
                    return Err(append.requirements.get(index).map_or_else(
                        || AppError::internal(format!("requirement {index} unmet, not sent")),
                        |requirement| requirement.unmet().into(),
                    ));
                }
                Err(AppendError::DuplicateRequest) => {
                    return self
                        .replay_or(meta, AppError::internal("idempotency record vanished"))
                        .await;
                }
                Err(AppendError::Store(err)) => return Err(store_error(err)),
            }
        }
        Err(AppError::refused(
            Reason::ConcurrentModification,
            format!(
                "{} {id} or an aggregate it decides on kept changing concurrently; retry",
                A::TYPE.as_str()
            ),
        )
        .with("aggregate_id", id))
    }

    /// Loads aggregate `id` for a decision across aggregates, consistently
    /// (from its snapshot, when it takes them), and takes a snapshot in the
    /// background when one is due.
    async fn load_fresh<P: Snapshots>(&self, id: Uuid) -> Result<P, StoreError> {
        let loaded = load_aggregate::<S, P>(&self.store, id).await?;
        if let Some(snapshot) = loaded.snapshot_due(id, Utc::now()) {
            self.save_snapshot(snapshot);
        }
        Ok(loaded.aggregate)
    }

    /// Takes a snapshot of each participant that `appends` (landed, in
    /// order) took past a multiple of its interval, from `read`, the
    /// states before them; in the background.
    fn snapshot_participants<P: Snapshots>(&self, read: &[(Uuid, P)], appends: &[Append]) {
        let Some(every) = P::EVERY else {
            return;
        };
        for (id, before) in read {
            let after = appends
                .iter()
                .flat_map(|append| &append.events)
                .filter(|e| e.event.aggregate_id() == *id)
                .fold(before.clone(), |agg, e| agg.apply(&e.event));
            if crossed(every, before.version(), after.version())
                && let Some(snapshot) = StoredSnapshot::of(*id, &after, Utc::now())
            {
                self.save_snapshot(snapshot);
            }
        }
    }
}

/// The append of a decision across aggregates: each aggregate's events at
/// the versions after the one read, one idempotency record for the
/// request, and what each aggregate's events require.
fn build_across<A, P>(
    meta: &CommandMeta,
    id: Uuid,
    aggregate: &A,
    participants: &[(Uuid, P)],
    decision: Decision,
) -> Append
where
    A: Coordinates<P>,
    P: dynabridge_domain::Aggregate,
{
    let now = Utc::now();
    let stored = |base: i64, events: &[dynabridge_domain::Event]| -> Vec<StoredEvent> {
        events
            .iter()
            .zip(1..)
            .map(|(event, n)| StoredEvent {
                event_id: Uuid::new_v4(),
                version: base + n,
                occurred_at: now,
                request_id: meta.request_id.as_str().to_owned(),
                correlation_id: meta.correlation_id.clone(),
                trace_parent: meta.trace_parent.clone(),
                event: event.clone(),
            })
            .collect()
    };
    let own = stored(aggregate.version(), &decision.own);
    let mut requirements = aggregate.requirements(&decision.own);
    let mut events = own.clone();
    for (participant, participant_events) in &decision.others {
        let Some((_, state)) = participants.iter().find(|(p, _)| p == participant) else {
            continue;
        };
        requirements.extend(state.requirements(participant_events));
        events.extend(stored(state.version(), participant_events));
    }
    let version = own.last().map_or(aggregate.version(), |e| e.version);
    Append {
        idempotency: IdempotencyRecord {
            request_id: meta.request_id.as_str().to_owned(),
            request_hash: meta.request_hash.clone(),
            outcome: CommandOutcome {
                aggregate_id: id.to_string(),
                version,
                event_ids: events.iter().map(|e| e.event_id.to_string()).collect(),
                correlation_id: meta.correlation_id.clone(),
                total: None,
            },
        },
        events,
        record: RecordIn::IdempotencyTable,
        requirements,
        now,
    }
}
