//! The purchase process (seed 004), as a handler of the event store's
//! stream: each event that asks for a step gets it, through the command
//! path, as a command whose request id derives from the purchase and the
//! step. A redelivered event, a restart mid-batch or two instances taking
//! the same step repeat nothing: the second is answered from the first's
//! idempotency record, or finds the step done.
//!
//! | event | step |
//! | --- | --- |
//! | `PurchaseRequested` | reserve every item's stock in one transaction, or reject the purchase |
//! | `PurchaseReserved` | create the order, and complete the purchase, in one transaction |
//! | `OrderStatusUpdated` to CANCELLED, of an order a purchase placed | release the purchase's stock |
//!
//! A step the purchase's state does not allow (done already, or never
//! possible) is a refusal, logged and passed over. A step that kept
//! meeting concurrent writers (a popular product's reservations) is taken
//! again, after a pause, until it lands. A store that fails fails the
//! batch, which the stream's reader hands over again.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use sha2::{Digest, Sha256};

use command_service::commands::{CommandHandler, CommandMeta, RequestId};
use dynabridge::pb::ErrorReason as Reason;
use dynabridge_domain::{Event, OrderId, OrderStatus, PurchaseId, StoredEvent};
use dynabridge_event_store::{CommandOutcome, CommandStore, EventStore};
use dynabridge_runtime::error::AppError;
use dynabridge_stream::batch::{Batch, BatchHandler, HandleError, Record, by_aggregate};
use dynabridge_stream::control::Shutdown;

use crate::metrics::ProcessMetrics;

/// A step of the purchase process, as an event asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Reserve(PurchaseId),
    Complete(PurchaseId),
    /// An order was cancelled: if a purchase placed it, its stock goes back.
    ReleaseFor(OrderId),
}

impl Step {
    /// The step `event` asks for, if any.
    pub fn of(event: &Event) -> Option<Self> {
        match event {
            Event::PurchaseRequested { purchase_id, .. } => Some(Self::Reserve(*purchase_id)),
            Event::PurchaseReserved { purchase_id, .. } => Some(Self::Complete(*purchase_id)),
            Event::OrderStatusUpdated {
                order_id,
                status: OrderStatus::Cancelled,
                ..
            } => Some(Self::ReleaseFor(*order_id)),
            _ => None,
        }
    }

    /// Its name in request ids, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reserve(_) => "reserve",
            Self::Complete(_) => "order",
            Self::ReleaseFor(_) => "release",
        }
    }
}

/// The request of step `step` of purchase `purchase_id`: its id derives
/// from both, so that the step is taken once however often it is asked
/// for; it carries the correlation id and trace context of the event that
/// asked.
pub fn step_meta(
    purchase_id: PurchaseId,
    step: &str,
    cause: &StoredEvent,
) -> Result<CommandMeta, AppError> {
    let key = format!("purchase/{purchase_id}/{step}");
    let digest = Sha256::digest(key.as_bytes());
    Ok(CommandMeta {
        request_id: RequestId::parse(&key).map_err(AppError::Invalid)?,
        request_hash: digest.iter().map(|b| format!("{b:02x}")).collect(),
        correlation_id: cause.correlation_id.clone(),
        trace_parent: cause.trace_parent.clone(),
        expected_version: None,
    })
}

/// How long a step that keeps meeting concurrent writers waits before it
/// is taken again; it doubles up to the maximum.
const CONTENDED_FIRST_PAUSE: Duration = Duration::from_millis(5);
const CONTENDED_MAX_PAUSE: Duration = Duration::from_millis(200);

/// The stream's handler that takes purchases through their steps.
pub struct PurchaseProcess<S: CommandStore = EventStore> {
    commands: CommandHandler<S>,
    /// Aggregates whose steps are taken at once within a batch.
    max_concurrent: NonZeroUsize,
    /// Whether the reservations of a batch that share their products are
    /// decided together and appended in one transaction.
    batching: bool,
    metrics: ProcessMetrics,
}

impl<S: CommandStore> PurchaseProcess<S> {
    pub fn new(
        commands: CommandHandler<S>,
        max_concurrent: NonZeroUsize,
        metrics: ProcessMetrics,
    ) -> Self {
        Self {
            commands,
            max_concurrent,
            batching: true,
            metrics,
        }
    }

    /// Takes every step alone: for measuring what batching gains.
    #[must_use]
    pub fn without_batching(mut self) -> Self {
        self.batching = false;
        self
    }

    /// The reservations of one batch that ask for the same products,
    /// decided together and appended in as few transactions as fit. A step
    /// a batch could not take is taken again alone (`take`).
    async fn reserve_together(
        &self,
        group: Vec<&StoredEvent>,
        shutdown: &Shutdown,
    ) -> Result<(), AppError> {
        let mut metas = Vec::with_capacity(group.len());
        for event in &group {
            let Event::PurchaseRequested { purchase_id, .. } = event.event else {
                continue;
            };
            metas.push((step_meta(purchase_id, "reserve", event)?, purchase_id));
        }
        let answers = self.commands.reserve_purchases(&metas).await;
        for (answer, event) in answers.into_iter().zip(group) {
            match answer {
                Ok(outcome) => {
                    self.metrics.step("reserve", "done");
                    tracing::info!(
                        step = "reserve",
                        aggregate_id = %outcome.aggregate_id,
                        version = outcome.version,
                        "purchase step taken"
                    );
                }
                // Refused, contended, failed: as a step alone would be.
                Err(_) => self.take(event, shutdown).await?,
            }
        }
        Ok(())
    }

    /// Takes the step `event` asks for, if any. `Err` only for a failure
    /// that retrying the batch may get past.
    pub async fn take(&self, event: &StoredEvent, shutdown: &Shutdown) -> Result<(), AppError> {
        let Some(step) = Step::of(&event.event) else {
            return Ok(());
        };
        let mut pause = CONTENDED_FIRST_PAUSE;
        loop {
            match self.attempt(step, event).await {
                Ok(Some(outcome)) => {
                    self.metrics.step(step.name(), "done");
                    tracing::info!(
                        step = step.name(),
                        aggregate_id = %outcome.aggregate_id,
                        version = outcome.version,
                        "purchase step taken"
                    );
                    return Ok(());
                }
                // An order no purchase placed: nothing to release.
                Ok(None) => return Ok(()),
                Err(err) if err.reason() == Some(Reason::ConcurrentModification) => {
                    self.metrics.step(step.name(), "contended");
                    tracing::debug!(step = step.name(), "contended, taking the step again");
                    if !shutdown.sleep(pause).await {
                        return Err(err);
                    }
                    pause = (pause * 2).min(CONTENDED_MAX_PAUSE);
                }
                Err(AppError::Refused(refusal)) => {
                    self.metrics.step(step.name(), "refused");
                    tracing::warn!(
                        step = step.name(),
                        reason = refusal.reason.as_str_name(),
                        error = %refusal,
                        "purchase step refused; passed over"
                    );
                    return Ok(());
                }
                Err(AppError::Invalid(invalid)) => {
                    self.metrics.step(step.name(), "refused");
                    tracing::error!(step = step.name(), error = %invalid, "purchase step invalid; passed over");
                    return Ok(());
                }
                Err(err) => {
                    self.metrics.step(step.name(), "failed");
                    return Err(err);
                }
            }
        }
    }

    /// One try at `step`; `None` when there is nothing to do.
    async fn attempt(
        &self,
        step: Step,
        cause: &StoredEvent,
    ) -> Result<Option<CommandOutcome>, AppError> {
        let commands = &self.commands;
        Ok(Some(match step {
            Step::Reserve(purchase_id) => {
                let meta = step_meta(purchase_id, step.name(), cause)?;
                commands.reserve_purchase(&meta, purchase_id).await?
            }
            Step::Complete(purchase_id) => {
                let meta = step_meta(purchase_id, step.name(), cause)?;
                commands.complete_purchase(&meta, purchase_id).await?
            }
            Step::ReleaseFor(order_id) => {
                let Some(purchase_id) = commands.purchase_of_order(order_id).await? else {
                    return Ok(None);
                };
                let meta = step_meta(purchase_id, step.name(), cause)?;
                commands
                    .release_purchase(&meta, purchase_id, order_id)
                    .await?
            }
        }))
    }

    /// Takes the steps of one aggregate's records, in order.
    async fn take_all(
        &self,
        records: Vec<Record<'_>>,
        shutdown: &Shutdown,
    ) -> Result<(), AppError> {
        for record in records {
            dynabridge_stream::progress::beat();
            match record {
                Record::Event(event) => self.take(event, shutdown).await?,
                // Unreadable here as for the projector, which parks it;
                // a step it asked for waits for the operator's fix and
                // the projector's retry to be asked again.
                Record::Unreadable(parked) => tracing::warn!(
                    aggregate_id = %parked.aggregate_id,
                    version = parked.version,
                    error = %parked.error,
                    "unreadable event passed over"
                ),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<S: CommandStore> BatchHandler for PurchaseProcess<S> {
    async fn handle(&self, batch: &Batch, shutdown: &Shutdown) -> Result<(), HandleError> {
        let failed = |err: AppError| HandleError::new(matches!(err, AppError::Unavailable(_)), err);
        // Reservations first, those asking for the same products together:
        // the purchases of a popular product arrive while its last
        // reservation is being appended, and go in one transaction.
        if self.batching {
            let mut groups: Vec<(Vec<&str>, Vec<&StoredEvent>)> = Vec::new();
            for event in &batch.events {
                let Event::PurchaseRequested { items, .. } = &event.event else {
                    continue;
                };
                let mut skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
                skus.sort_unstable();
                match groups.iter_mut().find(|(key, _)| *key == skus) {
                    Some((_, group)) => group.push(event),
                    None => groups.push((skus, vec![event])),
                }
            }
            let reservations: Vec<_> = groups
                .into_iter()
                .map(|(_, group)| self.reserve_together(group, shutdown))
                .collect();
            stream::iter(reservations)
                .buffer_unordered(self.max_concurrent.get())
                .try_collect::<Vec<()>>()
                .await
                .map_err(failed)?;
        }
        // Then every other step: each aggregate's records in order, the
        // aggregates concurrently (a reservation taken above is done, and
        // found so again if it is asked for again).
        let groups: Vec<_> = by_aggregate(batch)
            .into_iter()
            .map(|records| self.take_all(records, shutdown))
            .collect();
        stream::iter(groups)
            .buffer_unordered(self.max_concurrent.get())
            .try_collect::<Vec<()>>()
            .await
            .map_err(failed)?;
        Ok(())
    }
}

impl<S: CommandStore> std::fmt::Debug for PurchaseProcess<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurchaseProcess")
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

/// The process, shared by the stream's readers.
pub type SharedProcess = Arc<PurchaseProcess>;
