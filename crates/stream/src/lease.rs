//! Shard leases: which projector instance reads which shard, so that any
//! number of instances may run, overlapping in a rolling update or when one
//! is stalled or cut off.
//!
//! The lease is part of the shard's item in the checkpoint table
//! ([`crate::checkpoint`]): the holder's instance id and a counter that
//! every take, renewal and release raises.
//!
//! - **Expiry without clocks.** An instance takes another's lease only once
//!   it has seen the counter stand still for a lease duration, measured on
//!   its own monotonic clock from its first sight of that value. No two
//!   hosts' clocks are compared.
//! - **Holding.** The holder renews every lease it holds each third of the
//!   duration. A holder whose renewals have not succeeded for a whole
//!   duration, counted from the sending of the last one that did, gives the
//!   lease up as lost: by then another instance may have seen it expire.
//! - **Fencing.** Renewals and checkpoint writes are conditional on the
//!   holder still owning the lease. A failed condition means another
//!   instance took it: the shard's reader stops at once and writes nothing
//!   more.
//! - **Taking.** A take is conditional on the counter the taker last saw, so
//!   of two instances racing for a lease one wins; the reader starts from the
//!   checkpoint in the item the winning write returns. An instance takes at
//!   most its fair share of the shards that may be read now. There is no
//!   stealing: a lease changes hands only when it is released or expires,
//!   and the shares even out as shards close and their children are taken.
//! - **Head start.** An instance knows the others only from the leases they
//!   hold, so a standby holding none is invisible to them. An instance that
//!   already holds a lease therefore leaves a free one alone for a head
//!   start, long enough for every standby's next discovery to take it first.
//! - **Release.** A finished shard's lease is released after its finished
//!   checkpoint is written, and every lease on shutdown, once the readers
//!   stopped: a successor takes them at once instead of after a duration.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::checkpoint::{Checkpoint, CheckpointStore, LeaseError, LeaseState, ShardItem};
use crate::control::Shutdown;
use crate::error::StoreError;
use crate::metrics::StreamMetrics;
use crate::progress;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is still whole.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How this instance takes part in the leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// This instance's id, the `LeaseOwner` of the leases it holds. Unique
    /// to the process: a restarted process has a new one.
    pub owner: String,
    /// How long a lease lasts without a renewal.
    pub duration: Duration,
    /// How long an instance that holds a lease leaves a free one to the
    /// instances that hold none.
    pub head_start: Duration,
}

impl LeaseSettings {
    /// How often the holder renews its leases: thrice per duration, so that
    /// one slow or failed renewal does not lose them.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// Where a held lease stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Held,
    /// Taken by another instance, or not renewed for a duration.
    Lost,
    /// Given up by this instance.
    Released,
}

/// One lease this instance took.
#[derive(Debug)]
pub struct Lease {
    shard_id: String,
    duration: Duration,
    /// When the last successful take or renewal was sent.
    confirmed: Mutex<Instant>,
    standing: watch::Sender<Standing>,
    metrics: StreamMetrics,
}

impl Lease {
    fn new(shard_id: &str, duration: Duration, sent: Instant, metrics: StreamMetrics) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            duration,
            confirmed: Mutex::new(sent),
            standing: watch::Sender::new(Standing::Held),
            metrics,
        }
    }

    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// After this instant the lease may have expired in another instance's
    /// eyes: that instance started counting when it saw the renewal, which
    /// was after it was sent.
    fn valid_until(&self) -> Instant {
        *lock(&self.confirmed) + self.duration
    }

    fn confirm(&self, sent: Instant) {
        let mut confirmed = lock(&self.confirmed);
        *confirmed = (*confirmed).max(sent);
    }

    fn is_held(&self) -> bool {
        *self.standing.borrow() == Standing::Held
    }

    /// Whether the lease was lost (not released).
    pub fn is_lost(&self) -> bool {
        *self.standing.borrow() == Standing::Lost
    }

    /// Gives the lease up as lost, `why`; the shard's reader stops.
    pub fn lose(&self, why: &str) {
        let was_held = self.standing.send_if_modified(|standing| {
            let held = *standing == Standing::Held;
            if held {
                *standing = Standing::Lost;
            }
            held
        });
        if was_held {
            self.metrics.leases_lost.inc();
            tracing::warn!(shard_id = %self.shard_id, reason = why, "shard lease lost, its reader stops");
        }
    }

    fn retire(&self) -> bool {
        self.standing.send_if_modified(|standing| {
            let held = *standing == Standing::Held;
            if held {
                *standing = Standing::Released;
            }
            held
        })
    }

    /// Resolves once the lease is no longer held: lost, released, or not
    /// renewed for a duration (which loses it).
    pub async fn until_lost(&self) {
        let mut standing = self.standing.subscribe();
        loop {
            let deadline = self.valid_until();
            tokio::select! {
                _ = standing.wait_for(|s| *s != Standing::Held) => return,
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.valid_until() {
                        self.lose("not renewed for a lease duration");
                        return;
                    }
                }
            }
        }
    }
}

/// What a consumer records with every take and renewal of its leases, on
/// the shard's item: the projector, the read-model generations it writes
/// (a rebuild waits until every open shard shows the new one).
pub trait LeaseRecord: Send + Sync {
    /// The generations the holder writes, as last known; `None` before they
    /// are, and for a consumer that writes none.
    fn generations(&self) -> Option<Arc<Vec<u32>>>;
}

/// The leases this instance holds, and the calls that take, renew and
/// release them.
pub struct Leases {
    settings: LeaseSettings,
    stream_arn: String,
    store: Arc<dyn CheckpointStore>,
    metrics: StreamMetrics,
    held: Mutex<HashMap<String, Arc<Lease>>>,
    /// What every take and renewal records on the shard's item besides
    /// the lease (the projector's read-model generations).
    record: Option<Arc<dyn LeaseRecord>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("settings", &self.settings)
            .field("held", &self.held_ids())
            .finish_non_exhaustive()
    }
}

impl Leases {
    pub fn new(
        settings: LeaseSettings,
        stream_arn: String,
        store: Arc<dyn CheckpointStore>,
        metrics: StreamMetrics,
    ) -> Self {
        metrics.leases_held.set(0);
        Self {
            settings,
            stream_arn,
            store,
            metrics,
            held: Mutex::default(),
            record: None,
        }
    }

    /// Records, with every take and renewal, the generations `record` says
    /// the holder writes.
    #[must_use]
    pub fn with_record(mut self, record: Arc<dyn LeaseRecord>) -> Self {
        self.record = Some(record);
        self
    }

    /// The generations written, as last known; none before they are.
    fn written(&self) -> Option<Arc<Vec<u32>>> {
        self.record.as_ref().and_then(|record| record.generations())
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    pub fn owner(&self) -> &str {
        &self.settings.owner
    }

    /// The lease of `shard_id`, if held here.
    pub fn get(&self, shard_id: &str) -> Option<Arc<Lease>> {
        lock(&self.held).get(shard_id).cloned()
    }

    pub fn held_ids(&self) -> HashSet<String> {
        lock(&self.held).keys().cloned().collect()
    }

    pub fn count(&self) -> usize {
        lock(&self.held).len()
    }

    fn update_gauge(&self, held: &HashMap<String, Arc<Lease>>) {
        self.metrics
            .leases_held
            .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
    }

    /// Takes the lease of `shard_id` if its counter is still `seen`:
    /// the lease and the checkpoint to start from, or `None` if another
    /// instance changed the lease first.
    pub async fn take(
        &self,
        shard_id: &str,
        seen: Option<u64>,
    ) -> Result<Option<(Arc<Lease>, Checkpoint)>, StoreError> {
        let sent = Instant::now();
        let item = match self
            .store
            .take(
                &self.stream_arn,
                shard_id,
                &self.settings.owner,
                seen,
                self.written().as_deref().map(Vec::as_slice),
            )
            .await
        {
            Ok(item) => item,
            Err(LeaseError::Conflict) => return Ok(None),
            Err(LeaseError::Store(err)) => return Err(err),
        };
        let lease = Arc::new(Lease::new(
            shard_id,
            self.settings.duration,
            sent,
            self.metrics.clone(),
        ));
        {
            let mut held = lock(&self.held);
            held.insert(shard_id.to_owned(), lease.clone());
            self.update_gauge(&held);
        }
        self.metrics.leases_taken.inc();
        tracing::info!(shard_id, owner = %self.settings.owner, counter = ?item.lease.counter, checkpoint = ?item.checkpoint.sequence_number, "shard lease taken");
        Ok(Some((lease, item.checkpoint)))
    }

    /// Stops counting `lease` as held here; the store is not told.
    pub fn forget(&self, lease: &Arc<Lease>) {
        let mut held = lock(&self.held);
        if held
            .get(lease.shard_id())
            .is_some_and(|h| Arc::ptr_eq(h, lease))
        {
            held.remove(lease.shard_id());
            self.update_gauge(&held);
        }
    }

    /// Gives `lease` up, so that another instance may take it at once.
    /// A failure leaves it to expire instead.
    pub async fn release(&self, lease: &Arc<Lease>) {
        self.forget(lease);
        if !lease.retire() {
            return;
        }
        match self
            .store
            .release(&self.stream_arn, lease.shard_id(), &self.settings.owner)
            .await
        {
            Ok(()) => tracing::info!(shard_id = %lease.shard_id(), "shard lease released"),
            Err(LeaseError::Conflict) => {
                tracing::info!(shard_id = %lease.shard_id(), "shard lease already held by another instance");
            }
            Err(LeaseError::Store(err)) => {
                tracing::warn!(shard_id = %lease.shard_id(), error = %err, "releasing a shard lease failed; it expires instead");
            }
        }
    }

    /// Releases every lease held here.
    pub async fn release_all(&self) {
        let leases: Vec<Arc<Lease>> = lock(&self.held).values().cloned().collect();
        futures_util::future::join_all(leases.iter().map(|lease| self.release(lease))).await;
    }

    /// Renews every lease held here, each third of the lease duration, until
    /// `stop`.
    pub async fn renew_until(&self, stop: Shutdown) {
        loop {
            progress::beat();
            if !stop.sleep(self.settings.renew_every()).await {
                return;
            }
            progress::beat();
            self.renew_all().await;
        }
    }

    /// Renews every lease held here, at once.
    pub async fn renew_all(&self) {
        let leases: Vec<Arc<Lease>> = lock(&self.held).values().cloned().collect();
        futures_util::future::join_all(leases.iter().map(|lease| self.renew(lease))).await;
    }

    async fn renew(&self, lease: &Arc<Lease>) {
        if !lease.is_held() {
            self.forget(lease);
            return;
        }
        let sent = Instant::now();
        match self
            .store
            .renew(
                &self.stream_arn,
                lease.shard_id(),
                &self.settings.owner,
                self.written().as_deref().map(Vec::as_slice),
            )
            .await
        {
            Ok(()) => lease.confirm(sent),
            Err(LeaseError::Conflict) => {
                lease.lose("another instance holds it");
                self.forget(lease);
            }
            Err(LeaseError::Store(err)) => {
                if Instant::now() >= lease.valid_until() {
                    lease.lose("renewing it failed for a lease duration");
                    self.forget(lease);
                } else if err.is_transient() {
                    tracing::warn!(shard_id = %lease.shard_id(), error = %err, "renewing a shard lease failed, retrying at the next renewal");
                } else {
                    tracing::error!(shard_id = %lease.shard_id(), error = %err, "renewing a shard lease failed, retrying at the next renewal");
                }
            }
        }
    }
}

/// What this instance last saw of a shard's lease, and since when.
#[derive(Clone, Debug)]
struct Sighting {
    lease: LeaseState,
    since: Instant,
}

/// The leases of the stream as this instance has watched them, at each
/// discovery: the only clock expiry is measured on.
#[derive(Debug, Default)]
pub struct Observer {
    seen: HashMap<String, Sighting>,
}

/// The most shards one instance should hold: an even split of `shards`
/// between `owners` instances, rounded up, and at least one.
pub fn fair_share(shards: usize, owners: usize) -> usize {
    shards.div_ceil(owners.max(1)).max(1)
}

impl Observer {
    /// Records the leases of `shards` as `items` show them at `now`, and
    /// forgets every other shard.
    pub fn observe(&mut self, shards: &[String], items: &HashMap<String, ShardItem>, now: Instant) {
        self.seen.retain(|id, _| shards.contains(id));
        for id in shards {
            let lease = items
                .get(id)
                .map(|item| item.lease.clone())
                .unwrap_or_default();
            match self.seen.get_mut(id) {
                Some(sighting) if sighting.lease == lease => {}
                _ => {
                    self.seen.insert(id.clone(), Sighting { lease, since: now });
                }
            }
        }
    }

    /// When the lease of `id` became free to take, as far as this instance
    /// can tell; `None` while another instance holds it.
    fn free_since(&self, id: &str, settings: &LeaseSettings, now: Instant) -> Option<Instant> {
        let sighting = self.seen.get(id)?;
        match &sighting.lease.owner {
            None => Some(sighting.since),
            // Ours, though not held here: lost, and nobody took it since.
            Some(owner) if *owner == settings.owner => Some(sighting.since),
            Some(_) => {
                let expiry = sighting.since + settings.duration;
                (now >= expiry).then_some(expiry)
            }
        }
    }

    /// The shards of `eligible` whose leases to try to take now, with the
    /// counter each was seen at: free or expired leases of shards not
    /// `busy` here (held, being read, stopped), up to this instance's fair
    /// share given that it holds `held`.
    pub fn to_take(
        &self,
        eligible: &[String],
        busy: impl Fn(&str) -> bool,
        held: usize,
        settings: &LeaseSettings,
        now: Instant,
    ) -> Vec<(String, Option<u64>)> {
        let mut owners: HashSet<&str> = HashSet::from([settings.owner.as_str()]);
        for id in eligible {
            if let Some(sighting) = self.seen.get(id)
                && let Some(owner) = &sighting.lease.owner
                && self.free_since(id, settings, now).is_none()
            {
                owners.insert(owner);
            }
        }
        let share = fair_share(eligible.len(), owners.len());
        let mut holding = held;
        let mut chosen = Vec::new();
        for id in eligible {
            if holding >= share {
                break;
            }
            if busy(id) {
                continue;
            }
            let Some(since) = self.free_since(id, settings, now) else {
                continue;
            };
            let Some(sighting) = self.seen.get(id) else {
                continue;
            };
            let ours = sighting.lease.owner.as_deref() == Some(settings.owner.as_str());
            if holding > 0 && !ours && now.saturating_duration_since(since) <= settings.head_start {
                continue;
            }
            chosen.push((id.clone(), sighting.lease.counter));
            holding += 1;
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(head_start: u64) -> LeaseSettings {
        LeaseSettings {
            owner: "me".into(),
            duration: Duration::from_secs(10),
            head_start: Duration::from_secs(head_start),
        }
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    fn item(owner: Option<&str>, counter: u64) -> ShardItem {
        ShardItem {
            checkpoint: Checkpoint::default(),
            lease: LeaseState {
                owner: owner.map(Into::into),
                counter: Some(counter),
            },
            generations: None,
        }
    }

    fn names(chosen: &[(String, Option<u64>)]) -> Vec<&str> {
        chosen.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn a_fair_share_is_an_even_split_rounded_up_and_at_least_one() {
        assert_eq!(fair_share(2, 2), 1);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(1, 3), 1);
        assert_eq!(fair_share(0, 1), 1);
        assert_eq!(fair_share(8, 1), 8);
        assert_eq!(fair_share(5, 0), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn another_instances_lease_is_taken_only_after_standing_still_for_a_duration() {
        let s = settings(0);
        let shards = ids(&["A"]);
        let mut observer = Observer::default();
        let start = Instant::now();
        observer.observe(
            &shards,
            &HashMap::from([("A".into(), item(Some("other"), 4))]),
            start,
        );
        let none = |_: &str| false;
        assert!(observer.to_take(&shards, none, 0, &s, start).is_empty());

        // Renewed just before the duration passed: the count starts again.
        let renewed = start + Duration::from_secs(9);
        observer.observe(
            &shards,
            &HashMap::from([("A".into(), item(Some("other"), 5))]),
            renewed,
        );
        let later = start + Duration::from_secs(12);
        observer.observe(
            &shards,
            &HashMap::from([("A".into(), item(Some("other"), 5))]),
            later,
        );
        assert!(observer.to_take(&shards, none, 0, &s, later).is_empty());

        let expired = renewed + Duration::from_secs(10);
        assert_eq!(
            observer.to_take(&shards, none, 0, &s, expired),
            [("A".to_owned(), Some(5))],
            "taken at the counter seen"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn free_leases_are_taken_up_to_the_fair_share_and_live_owners_count() {
        let s = settings(0);
        let now = Instant::now();
        let shards = ids(&["A", "B", "C", "D"]);
        let mut observer = Observer::default();
        let items = HashMap::from([
            ("A".into(), item(Some("other"), 1)),
            ("B".into(), item(None, 2)),
        ]);
        observer.observe(&shards, &items, now);
        let later = now + Duration::from_secs(1);
        // Four shards, two live owners: two each. C and D have no item yet.
        let chosen = observer.to_take(&shards, |_| false, 0, &s, later);
        assert_eq!(names(&chosen), ["B", "C"]);
        assert_eq!(chosen[1].1, None, "no item: taken if there is still none");
        assert_eq!(
            names(&observer.to_take(&shards, |id| id == "B", 1, &s, later)),
            ["C"],
            "what is held counts, and busy shards are skipped"
        );
        assert!(
            observer
                .to_take(&shards, |_| false, 2, &s, later)
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_holding_a_lease_leaves_a_free_one_to_the_others_for_a_head_start() {
        let s = settings(10);
        let now = Instant::now();
        let shards = ids(&["A", "B", "C"]);
        let mut observer = Observer::default();
        let items = HashMap::from([("C".into(), item(Some("me"), 7))]);
        observer.observe(&shards, &items, now);
        // Alone, it may take them all, but only the first at once; its own
        // lease (lost, and nobody took it since) needs no head start.
        assert_eq!(
            names(&observer.to_take(&shards, |_| false, 0, &s, now)),
            ["A", "C"]
        );
        assert_eq!(
            names(&observer.to_take(&shards, |_| false, 1, &s, now)),
            ["C"]
        );
        let after = now + Duration::from_secs(11);
        assert_eq!(
            names(&observer.to_take(&shards, |_| false, 1, &s, after)),
            ["A", "B"]
        );
    }
}
