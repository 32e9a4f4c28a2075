//! What the projector's health and metrics read of its processing loops: a
//! heartbeat per loop, the oldest record each shard has read but not yet
//! caught up past, and the time of the last checkpoint.
//!
//! A loop (a shard reader, the coordinator) runs inside [`Progress::track`].
//! From anywhere inside it, however deep (a retry loop, the publisher
//! waiting for the bus), [`beat`] says the loop is still going round: a
//! loop that has not beaten for longer than the liveness window is stuck,
//! whatever it is waiting for. Outside a tracked loop the functions here
//! do nothing.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// The progress of every tracked loop of one projector.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    loops: Mutex<HashMap<String, Arc<LoopState>>>,
    /// Shards whose reader stopped with records left to process (a poison
    /// record, an error): their lag keeps growing until they are read
    /// again.
    stalled: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Milliseconds from `started` to the last checkpoint written;
    /// [`Self::NEVER`] before the first.
    last_checkpoint_ms: AtomicU64,
}

#[derive(Debug)]
struct LoopState {
    /// Milliseconds from `Progress::started` to the last beat.
    beat_ms: AtomicU64,
    /// Creation time of the oldest record of the last non-empty page, until
    /// a page comes back empty.
    behind_since: Mutex<Option<DateTime<Utc>>>,
    /// Catching up, from the event store, a window of events the stream
    /// trimmed before they were read.
    catching_up: AtomicBool,
}

/// Where the loops stand, at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The loop that beat longest ago, and how long ago.
    pub stalest: Option<(String, Duration)>,
    /// The age of the oldest record read and not yet caught up past, over
    /// every shard; zero when every shard is caught up.
    pub lag: Duration,
    /// Time since the last checkpoint, or since start before the first.
    pub since_checkpoint: Duration,
    /// The loops catching up a trimmed window from the event store.
    pub catching_up: Vec<String>,
}

#[derive(Clone, Debug)]
struct Current {
    progress: Arc<Progress>,
    state: Arc<LoopState>,
}

tokio::task_local! {
    static CURRENT: Current;
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the map is still whole.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Progress {
    const NEVER: u64 = u64::MAX;

    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            loops: Mutex::default(),
            stalled: Mutex::default(),
            last_checkpoint_ms: AtomicU64::new(Self::NEVER),
        })
    }

    fn millis_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `body` as the loop `name`: it has beaten once now, [`beat`] and
    /// the other functions of this module act on it while `body` runs, and
    /// it is forgotten when `body` ends (its lag kept if it ended behind).
    pub async fn track<F: Future>(self: &Arc<Self>, name: impl Into<String>, body: F) -> F::Output {
        let name = name.into();
        let state = Arc::new(LoopState {
            beat_ms: AtomicU64::new(self.millis_at(Instant::now())),
            behind_since: Mutex::new(None),
            catching_up: AtomicBool::new(false),
        });
        lock(&self.stalled).remove(&name);
        lock(&self.loops).insert(name.clone(), state.clone());
        let _untrack = Untrack {
            progress: self.clone(),
            name,
            state: state.clone(),
        };
        let current = Current {
            progress: self.clone(),
            state,
        };
        CURRENT.scope(current, body).await
    }

    /// Forgets the lag the loop `name` ended with: its shard is another
    /// instance's to read now, or finished.
    pub fn forget(&self, name: &str) {
        lock(&self.stalled).remove(name);
    }

    /// How long ago each tracked loop last beat, at `now`.
    pub fn silences(&self, now: Instant) -> BTreeMap<String, Duration> {
        let now_ms = self.millis_at(now);
        lock(&self.loops)
            .iter()
            .map(|(name, state)| {
                let beat = state.beat_ms.load(Ordering::Relaxed);
                (
                    name.clone(),
                    Duration::from_millis(now_ms.saturating_sub(beat)),
                )
            })
            .collect()
    }

    /// Where the loops stand at `now` (monotonic, for heartbeats) and
    /// `wall` (for record creation times).
    pub fn snapshot(&self, now: Instant, wall: DateTime<Utc>) -> Snapshot {
        let now_ms = self.millis_at(now);
        let age = |since: &DateTime<Utc>| (wall - *since).to_std().unwrap_or_default();
        let stalest = self
            .silences(now)
            .into_iter()
            .max_by_key(|(_, silent)| *silent);
        let loops = lock(&self.loops);
        let behind = loops
            .values()
            .filter_map(|state| *lock(&state.behind_since))
            .chain(lock(&self.stalled).values().copied())
            .map(|since| age(&since))
            .max()
            .unwrap_or_default();
        let last = self.last_checkpoint_ms.load(Ordering::Relaxed);
        let since_checkpoint = Duration::from_millis(match last {
            Self::NEVER => now_ms,
            at => now_ms.saturating_sub(at),
        });
        let mut catching_up: Vec<String> = loops
            .iter()
            .filter(|(_, state)| state.catching_up.load(Ordering::Relaxed))
            .map(|(name, _)| name.clone())
            .collect();
        catching_up.sort();
        Snapshot {
            stalest,
            lag: behind,
            since_checkpoint,
            catching_up,
        }
    }
}

/// Forgets a loop when its body ends, however it ends.
struct Untrack {
    progress: Arc<Progress>,
    name: String,
    state: Arc<LoopState>,
}

impl Drop for Untrack {
    fn drop(&mut self) {
        let mut loops = lock(&self.progress.loops);
        // A loop of the same name may have started since (a reader
        // restarted): that one stays.
        if loops
            .get(&self.name)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            loops.remove(&self.name);
        }
        drop(loops);
        if let Some(since) = *lock(&self.state.behind_since) {
            lock(&self.progress.stalled).insert(self.name.clone(), since);
        }
    }
}

fn with_current(f: impl FnOnce(&Current)) {
    let _ = CURRENT.try_with(f);
}

/// The current loop is going round.
pub fn beat() {
    with_current(|c| {
        c.state
            .beat_ms
            .store(c.progress.millis_at(Instant::now()), Ordering::Relaxed);
    });
}

/// The current loop read records, the oldest created at `oldest` (`None`
/// when the stream did not say: then now, so that the lag counts from the
/// read).
pub fn read_records(oldest: Option<DateTime<Utc>>) {
    with_current(|c| {
        *lock(&c.state.behind_since) = Some(oldest.unwrap_or_else(Utc::now));
    });
}

/// The current loop has nothing left to read.
pub fn caught_up() {
    with_current(|c| *lock(&c.state.behind_since) = None);
}

/// The current loop started (`true`) or finished catching up a trimmed
/// window of the stream from the event store.
pub fn catching_up(on: bool) {
    with_current(|c| c.state.catching_up.store(on, Ordering::Relaxed));
}

/// The current loop wrote a checkpoint.
pub fn checkpointed() {
    with_current(|c| {
        c.progress
            .last_checkpoint_ms
            .store(c.progress.millis_at(Instant::now()), Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn the_stalest_loop_and_the_oldest_record_are_reported() {
        let progress = Progress::new();
        let wall = Utc::now();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (ready, readied) = tokio::sync::oneshot::channel::<()>();
        let quiet = tokio::spawn({
            let progress = progress.clone();
            async move {
                progress
                    .track("quiet", async {
                        read_records(Some(wall - chrono::Duration::seconds(30)));
                        let _ = ready.send(());
                        let _ = released.await;
                    })
                    .await;
            }
        });
        readied.await.unwrap();
        tokio::time::advance(secs(7)).await;
        progress
            .track("busy", async {
                beat();
                read_records(Some(wall - chrono::Duration::seconds(3)));
            })
            .await;

        let snapshot = progress.snapshot(Instant::now(), wall);
        assert_eq!(snapshot.stalest, Some(("quiet".to_owned(), secs(7))));
        // "busy" ended behind: its lag stays, but the older one wins.
        assert_eq!(snapshot.lag, secs(30));
        assert_eq!(snapshot.since_checkpoint, secs(7));

        release.send(()).unwrap();
        quiet.await.unwrap();
        let snapshot = progress.snapshot(Instant::now(), wall);
        assert_eq!(snapshot.stalest, None, "ended loops are forgotten");
        assert_eq!(snapshot.lag, secs(30), "and their lag is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn catching_up_and_checkpointing_reset_what_they_measure() {
        let progress = Progress::new();
        let wall = Utc::now();
        progress
            .track("a", async {
                read_records(Some(wall - chrono::Duration::seconds(5)));
                caught_up();
            })
            .await;
        tokio::time::advance(secs(4)).await;
        progress.track("a", async { checkpointed() }).await;
        tokio::time::advance(secs(1)).await;
        let snapshot = progress.snapshot(Instant::now(), wall);
        assert_eq!(snapshot.lag, Duration::ZERO);
        assert_eq!(snapshot.since_checkpoint, secs(1));
        // Outside a tracked loop, nothing happens.
        read_records(Some(wall - chrono::Duration::seconds(99)));
        assert_eq!(progress.snapshot(Instant::now(), wall).lag, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_loop_clears_its_stalled_lag() {
        let progress = Progress::new();
        let wall = Utc::now();
        progress
            .track("shard", async {
                read_records(Some(wall - chrono::Duration::seconds(60)))
            })
            .await;
        assert_eq!(progress.snapshot(Instant::now(), wall).lag, secs(60));
        progress.track("shard", async { caught_up() }).await;
        assert_eq!(progress.snapshot(Instant::now(), wall).lag, Duration::ZERO);
    }
}
