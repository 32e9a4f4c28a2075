//! Which shards to read, and when: the stream's shard listing is read
//! periodically, the leases of shards that may be read now are taken (see
//! [`crate::lease`]), and a reader task is started for every shard whose
//! lease is held here.
//!
//! A shard may be read once it is unfinished and its parent is finished.
//! Lineage matters because an item's records move to the child shards when
//! a shard splits: reading a child before its parent is done would apply an
//! aggregate's later events before its earlier ones. A parent missing from
//! the listing has been trimmed away and counts as finished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::checkpoint::{Checkpoint, ShardItem};
use crate::control::Shutdown;
use crate::lease::{Lease, Observer};
use crate::progress;
use crate::shard::{Pipeline, ShardEnd};
use crate::stream::{ShardInfo, StreamError, list_shards};

/// What this process knows of the shards beyond their items.
#[derive(Debug, Default)]
pub struct ShardStates {
    /// Finished here, whether or not the checkpoint says so yet.
    pub finished: HashSet<String>,
    pub running: HashSet<String>,
    /// Stopped at a poison record: not restarted until the process is. Its
    /// lease stays held, so that no other instance stops at it too.
    pub stopped: HashSet<String>,
}

/// The shards that may be read now, whoever holds their leases, in listing
/// order: unfinished, and their parent finished.
pub fn eligible(
    listing: &[ShardInfo],
    items: &HashMap<String, ShardItem>,
    states: &ShardStates,
) -> Vec<String> {
    let listed: HashSet<&str> = listing.iter().map(|s| s.id.as_str()).collect();
    let finished = |id: &str| {
        states.finished.contains(id) || items.get(id).is_some_and(|c| c.checkpoint.finished)
    };
    listing
        .iter()
        .filter(|shard| {
            !finished(&shard.id)
                && shard
                    .parent
                    .as_deref()
                    .is_none_or(|parent| !listed.contains(parent) || finished(parent))
        })
        .map(|shard| shard.id.clone())
        .collect()
}

/// The reader tasks, and which shard each reads.
struct Readers {
    tasks: JoinSet<Result<ShardEnd, StreamError>>,
    shards: HashMap<Id, String>,
}

impl Readers {
    /// Starts reading the shard of `lease` from `checkpoint`.
    fn start(
        &mut self,
        pipeline: &Arc<Pipeline>,
        states: &mut ShardStates,
        lease: Arc<Lease>,
        checkpoint: Checkpoint,
    ) {
        let reader = pipeline.clone();
        let shard_id = lease.shard_id().to_owned();
        // Each reader is a loop of its own for liveness, and its shard's lag
        // is its own.
        let handle = self.tasks.spawn(async move {
            let progress = reader.progress.clone();
            let end = progress
                .track(
                    shard_loop_name(lease.shard_id()),
                    reader.run_shard(&lease, checkpoint),
                )
                .await;
            if let Ok(ShardEnd::Finished) = end {
                // Its finished checkpoint is written: nobody needs it now.
                reader.leases.release(&lease).await;
            }
            end
        });
        self.shards.insert(handle.id(), shard_id.clone());
        states.running.insert(shard_id);
    }
}

/// Reads the stream until shutdown, then waits for the shard readers to
/// finish (or abandon) their batch, and releases the leases. The leases are
/// renewed meanwhile.
pub async fn run_stream(pipeline: Arc<Pipeline>) {
    let (stop_renewing, renewing) = Shutdown::new();
    let renewer = {
        let pipeline = pipeline.clone();
        async move {
            pipeline
                .progress
                .track(
                    "lease renewer",
                    pipeline.leases.renew_until(renewing.clone()),
                )
                .await;
        }
    };
    let coordinator = async {
        coordinate(&pipeline).await;
        stop_renewing.trigger();
    };
    tokio::join!(renewer, coordinator);
    pipeline.leases.release_all().await;
}

/// The discovery loop, until shutdown and every reader ended.
async fn coordinate(pipeline: &Arc<Pipeline>) {
    let mut states = ShardStates::default();
    let mut readers = Readers {
        tasks: JoinSet::new(),
        shards: HashMap::new(),
    };
    let mut observer = Observer::default();
    let mut retry = pipeline.timing.retry_backoff();
    let mut next_discovery = Instant::now();
    loop {
        // At least once per discovery period, whatever the readers do.
        progress::beat();
        tokio::select! {
            biased;
            () = pipeline.shutdown.wait() => break,
            Some(joined) = readers.tasks.join_next_with_id(), if !readers.tasks.is_empty() => {
                if on_end(joined, pipeline, &mut readers.shards, &mut states) {
                    // A finished shard may have children waiting.
                    next_discovery = Instant::now();
                }
            }
            () = tokio::time::sleep_until(next_discovery) => {
                match discover(pipeline).await {
                    Ok((listing, items)) => {
                        retry.reset();
                        next_discovery = Instant::now() + pipeline.timing.rediscover_every;
                        if take_and_start(pipeline, &listing, &items, &mut observer, &mut states, &mut readers).await {
                            next_discovery = Instant::now();
                        }
                    }
                    Err(err) => {
                        if err.is_transient() {
                            tracing::warn!(error = %err, "listing shards failed, retrying");
                        } else {
                            tracing::error!(error = %err, "listing shards failed, retrying");
                        }
                        next_discovery = Instant::now() + retry.next_delay();
                    }
                }
            }
        }
    }
    while let Some(joined) = readers.tasks.join_next_with_id().await {
        on_end(joined, pipeline, &mut readers.shards, &mut states);
    }
}

/// Starts a reader for every lease held here without one, and takes the
/// leases this instance should; `true` if a lease taken turned out to be
/// of a finished shard, so that the listing should be read again now.
async fn take_and_start(
    pipeline: &Arc<Pipeline>,
    listing: &[ShardInfo],
    items: &HashMap<String, ShardItem>,
    observer: &mut Observer,
    states: &mut ShardStates,
    readers: &mut Readers,
) -> bool {
    let leases = &pipeline.leases;
    let now = Instant::now();
    let eligible = eligible(listing, items, states);
    observer.observe(&eligible, items, now);
    for shard_id in &eligible {
        // Held, and its reader failed: again from its checkpoint, which
        // only this instance can have written since.
        if let Some(lease) = leases.get(shard_id)
            && !states.running.contains(shard_id)
            && !states.stopped.contains(shard_id)
        {
            let checkpoint = items
                .get(shard_id)
                .map(|item| item.checkpoint.clone())
                .unwrap_or_default();
            readers.start(pipeline, states, lease, checkpoint);
        }
    }
    let held = leases.held_ids();
    let wanted = observer.to_take(
        &eligible,
        |id| held.contains(id) || states.running.contains(id) || states.stopped.contains(id),
        held.len(),
        leases.settings(),
        now,
    );
    let mut finished_one = false;
    for (shard_id, seen) in wanted {
        match leases.take(&shard_id, seen).await {
            Ok(Some((lease, checkpoint))) if checkpoint.finished => {
                // Finished by a holder that died before releasing it.
                leases.release(&lease).await;
                states.finished.insert(shard_id);
                finished_one = true;
            }
            // From the checkpoint the take returned: the one read with the
            // listing may be older.
            Ok(Some((lease, checkpoint))) => readers.start(pipeline, states, lease, checkpoint),
            Ok(None) => {
                tracing::debug!(shard_id = %shard_id, "another instance took the shard's lease first");
            }
            Err(err) => {
                tracing::warn!(shard_id = %shard_id, error = %err, "taking a shard lease failed, retrying at the next listing");
            }
        }
    }
    finished_one
}

/// The name a shard's reader is tracked under, in health logs.
pub fn shard_loop_name(shard_id: &str) -> String {
    format!("shard {shard_id}")
}

/// The listing and every shard item. Both or neither: a shard must never
/// start without its checkpoint, or it would start over from the oldest
/// record.
async fn discover(
    pipeline: &Pipeline,
) -> Result<(Vec<ShardInfo>, HashMap<String, ShardItem>), StreamError> {
    let listing = list_shards(pipeline.streams.as_ref(), &pipeline.stream_arn).await?;
    let items = pipeline.checkpoints.load_all(&pipeline.stream_arn).await?;
    Ok((listing, items))
}

/// Records how a reader ended; `true` if the listing should be read now.
fn on_end(
    joined: Result<(Id, Result<ShardEnd, StreamError>), JoinError>,
    pipeline: &Pipeline,
    task_shards: &mut HashMap<Id, String>,
    states: &mut ShardStates,
) -> bool {
    let (id, outcome) = match joined {
        Ok((id, outcome)) => (id, Ok(outcome)),
        Err(err) => (err.id(), Err(err)),
    };
    let shard_id = task_shards.remove(&id).unwrap_or_default();
    states.running.remove(&shard_id);
    match outcome {
        Ok(Ok(ShardEnd::Finished)) => {
            states.finished.insert(shard_id);
            true
        }
        Ok(Ok(ShardEnd::LeaseLost)) => {
            if let Some(lease) = pipeline.leases.get(&shard_id) {
                pipeline.leases.forget(&lease);
            }
            // Another instance reads it now: its lag is not this one's.
            pipeline.progress.forget(&shard_loop_name(&shard_id));
            false
        }
        Ok(Ok(ShardEnd::Poisoned)) => {
            tracing::error!(shard_id = %shard_id, "shard stopped at a poison record; it and its children wait for a restart");
            states.stopped.insert(shard_id);
            false
        }
        Ok(Ok(ShardEnd::Shutdown)) => false,
        Ok(Err(err)) => {
            tracing::error!(shard_id = %shard_id, error = %err, "shard reader failed; it restarts from its checkpoint at the next listing");
            false
        }
        Err(err) => {
            tracing::error!(shard_id = %shard_id, error = %err, "shard reader panicked; it restarts from its checkpoint at the next listing");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::LeaseState;
    use crate::stream::StartPosition;
    use crate::testing::{Entry, Harness, order_events, user_events, wait_until};

    fn shard(id: &str, parent: Option<&str>) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
        }
    }

    fn finished_item() -> ShardItem {
        ShardItem {
            checkpoint: Checkpoint {
                sequence_number: Some("1".into()),
                finished: true,
                last_event_time: None,
            },
            lease: LeaseState::default(),
            generations: None,
        }
    }

    #[test]
    fn children_wait_for_their_parents() {
        let listing = [
            shard("root", None),
            shard("child", Some("root")),
            shard("orphan", Some("trimmed-away")),
            shard("grandchild", Some("child")),
        ];
        let mut states = ShardStates::default();
        let none = HashMap::new();
        assert_eq!(eligible(&listing, &none, &states), ["root", "orphan"]);

        states
            .running
            .extend(["root".to_owned(), "orphan".to_owned()]);
        assert_eq!(
            eligible(&listing, &none, &states),
            ["root", "orphan"],
            "running shards still count, for the fair share"
        );

        // The root's checkpoint says finished (another process, or before
        // a restart): its child may go.
        let items = HashMap::from([("root".to_owned(), finished_item())]);
        states.running.remove("root");
        assert_eq!(eligible(&listing, &items, &states), ["child", "orphan"]);

        states.finished.insert("child".into());
        assert_eq!(
            eligible(&listing, &items, &states),
            ["orphan", "grandchild"]
        );
    }

    #[tokio::test]
    async fn parents_are_read_to_the_end_before_their_children() {
        let h = Harness::new();
        let users = user_events(4);
        let orders = order_events(2);
        // The user's first two events went to the parent; after the split,
        // the next two to the child.
        h.streams
            .add_shard("parent", None, h.records(&users[..2]), true);
        h.streams
            .add_shard("child", Some("parent"), h.records(&users[2..]), false);
        h.streams
            .add_shard("orphan", Some("gone"), h.records(&orders), false);
        h.streams
            .add_shard("grandchild", Some("child"), vec![], false);
        h.streams.set_describe_page_size(1);

        let pipeline = Arc::new(h.pipeline());
        let coordinator = tokio::spawn(run_stream(pipeline));
        wait_until("every event handled", || {
            h.journal.handled_versions().len() == 6
        })
        .await;
        h.trigger.trigger();
        coordinator.await.unwrap();

        let journal = h.journal.entries();
        let position = |wanted: &Entry| journal.iter().position(|e| e == wanted).unwrap();
        let parent_finished = position(&Entry::Checkpoint("parent".into(), Some(h.seq(2)), true));
        let child_started = position(&Entry::Iterator("child".into(), StartPosition::TrimHorizon));
        assert!(parent_finished < child_started, "{journal:#?}");
        assert!(
            !journal
                .iter()
                .any(|e| matches!(e, Entry::Iterator(shard, _) if shard == "grandchild")),
            "the child never finishes, so its child never starts: {journal:#?}"
        );
        let user_versions: Vec<i64> = h
            .handler
            .events()
            .iter()
            .filter(|e| e.event.aggregate_id() == users[0].event.aggregate_id())
            .map(|e| e.version)
            .collect();
        assert_eq!(user_versions, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_finished_checkpoint_is_not_read_again_and_a_checkpoint_is_resumed() {
        let h = Harness::new();
        let users = user_events(3);
        h.streams
            .add_shard("done", None, h.records(&users[..1]), true);
        h.streams
            .add_shard("open", Some("done"), h.records(&users[1..]), false);
        h.checkpoints.put("done", Some(h.seq(1)), true);
        h.checkpoints.put("open", Some(h.seq(2)), false);

        let coordinator = tokio::spawn(run_stream(Arc::new(h.pipeline())));
        wait_until("the open shard read", || {
            !h.journal.handled_versions().is_empty()
        })
        .await;
        h.trigger.trigger();
        coordinator.await.unwrap();
        assert_eq!(h.journal.handled_versions(), [3]);
        assert!(
            !h.journal
                .entries()
                .iter()
                .any(|e| matches!(e, Entry::Iterator(shard, _) if shard == "done"))
        );
    }

    /// Several instances on one stream and one checkpoint table.
    mod leases {
        use std::time::Duration;

        use dynabridge_domain::Version;
        use tokio::task::JoinHandle;

        use super::*;
        use crate::monitor::{Thresholds, assess};

        fn start(h: &Harness) -> JoinHandle<()> {
            tokio::spawn(run_stream(Arc::new(h.pipeline())))
        }

        async fn stop(h: &Harness, coordinator: JoinHandle<()>) {
            h.trigger.trigger();
            tokio::time::timeout(Duration::from_secs(10), coordinator)
                .await
                .expect("the coordinator stops on shutdown")
                .unwrap();
        }

        fn versions(h: &Harness) -> Vec<Version> {
            h.handler.events().iter().map(|e| e.version).collect()
        }

        fn iterators(h: &Harness, shard: &str) -> Vec<StartPosition> {
            h.journal
                .entries()
                .into_iter()
                .filter_map(|e| match e {
                    Entry::Iterator(s, position) if s == shard => Some(position),
                    _ => None,
                })
                .collect()
        }

        fn checkpointed(h: &Harness) -> Vec<Option<String>> {
            h.journal
                .entries()
                .into_iter()
                .filter_map(|e| match e {
                    Entry::Checkpoint(_, seq, _) => Some(seq),
                    _ => None,
                })
                .collect()
        }

        /// An owner the test does not run, renewing its lease on `shard`
        /// every few milliseconds until the task is aborted.
        fn live_intruder(h: &Harness, shard: &'static str) -> JoinHandle<()> {
            let checkpoints = h.checkpoints.clone();
            tokio::spawn(async move {
                loop {
                    checkpoints.seize(shard, "intruder");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        }

        #[tokio::test]
        async fn of_two_instances_only_one_reads_a_shard_and_the_other_stands_by() {
            let a = Harness::new();
            let b = a.peer("instance-b");
            let events = user_events(5);
            a.streams
                .add_shard("S", None, a.records(&events[..3]), false);
            let (run_a, run_b) = (start(&a), start(&b));
            wait_until("the first events handled", || {
                versions(&a).len() + versions(&b).len() == 3
            })
            .await;
            a.streams.push_records("S", a.records(&events[3..]));
            wait_until("every event handled", || {
                versions(&a).len() + versions(&b).len() == 5
            })
            .await;

            let (holder, standby) = if versions(&a).is_empty() {
                (&b, &a)
            } else {
                (&a, &b)
            };
            assert_eq!(versions(holder), [1, 2, 3, 4, 5]);
            assert!(versions(standby).is_empty());
            assert!(iterators(standby, "S").is_empty(), "the standby never read");
            assert_eq!(
                a.checkpoints.owner("S").as_deref(),
                Some(holder.lease_settings.owner.as_str())
            );
            assert_eq!(holder.metrics.leases_held.get(), 1);
            assert_eq!(holder.metrics.leases_taken.get(), 1);
            assert_eq!(standby.metrics.leases_held.get(), 0);
            assert_eq!(standby.metrics.leases_taken.get(), 0);
            // A standby is live (its loops go round) and ready (nothing lags).
            let thresholds = Thresholds {
                liveness_window: Duration::from_secs(60),
                max_lag: Duration::from_secs(1),
            };
            let wall = events[4].occurred_at + chrono::Duration::days(1);
            let verdict = assess(
                &standby.progress.snapshot(Instant::now(), wall),
                crate::monitor::Signals {
                    stream_found: true,
                    store_reachable: true,
                    bus_found: true,
                },
                &thresholds,
            );
            assert_eq!((verdict.live, verdict.ready), (Ok(()), Ok(())));

            stop(&a, run_a).await;
            stop(&b, run_b).await;
            assert_eq!(a.checkpoints.owner("S"), None, "released on shutdown");
            assert_eq!(
                a.checkpoints.item("S").unwrap().checkpoint.sequence_number,
                Some(a.seq(5))
            );
        }

        #[tokio::test]
        async fn a_stalled_holder_loses_its_shard_after_the_lease_duration_and_the_other_resumes_from_the_checkpoint()
         {
            let mut a = Harness::new();
            a.lease_settings.duration = Duration::from_millis(300);
            let b = a.peer("instance-b");
            let events = user_events(4);
            a.streams
                .add_shard("S", None, a.records(&events[..2]), false);
            let run_a = start(&a);
            wait_until("the first events checkpointed", || {
                a.checkpoints.saved("S") == [(Some(a.seq(2)), false)]
            })
            .await;
            let run_b = start(&b);

            // Stalled, or cut off from the table: no renewal lands.
            a.checkpoints.pause();
            let stalled = Instant::now();
            wait_until("the other instance to take the shard", || {
                b.metrics.leases_taken.get() == 1
            })
            .await;
            assert!(
                stalled.elapsed() >= a.lease_settings.duration,
                "taken after {:?}",
                stalled.elapsed()
            );
            wait_until("the stalled holder to give its lease up", || {
                a.metrics.leases_lost.get() == 1
            })
            .await;
            a.streams.push_records("S", a.records(&events[2..]));
            wait_until("the new events checkpointed", || {
                b.checkpoints.saved("S").last() == Some(&(Some(b.seq(4)), false))
            })
            .await;
            assert_eq!(versions(&b), [3, 4], "resumed after the checkpoint");
            assert_eq!(iterators(&b, "S"), [StartPosition::After(a.seq(2))]);

            // Back: its calls go on, and find the lease gone.
            a.checkpoints.resume();
            wait_until("the old holder to count no lease", || {
                a.metrics.leases_held.get() == 0
            })
            .await;
            assert_eq!(versions(&a), [1, 2], "nothing read after the stall");
            assert_eq!(checkpointed(&a), [Some(a.seq(2))]);
            assert_eq!(a.metrics.leases_lost.get(), 1);
            assert_eq!(
                a.checkpoints.owner("S").as_deref(),
                Some("instance-b"),
                "not taken back"
            );
            stop(&a, run_a).await;
            stop(&b, run_b).await;
        }

        #[tokio::test]
        async fn a_checkpoint_refused_for_a_lost_lease_stops_the_reader() {
            let h = Harness::new();
            let events = user_events(4);
            h.streams
                .add_shard("S", None, h.records(&events[..2]), false);
            let coordinator = start(&h);
            wait_until("the first events checkpointed", || {
                h.checkpoints.saved("S") == [(Some(h.seq(2)), false)]
            })
            .await;
            h.checkpoints.seize("S", "intruder");
            h.streams.push_records("S", h.records(&events[2..]));
            wait_until("the lease lost", || h.metrics.leases_lost.get() == 1).await;
            wait_until("the reader stopped", || {
                !h.progress
                    .silences(Instant::now())
                    .contains_key(&shard_loop_name("S"))
            })
            .await;
            assert_eq!(versions(&h), [1, 2, 3, 4], "handled, then refused");
            assert_eq!(checkpointed(&h), [Some(h.seq(2))]);
            assert_eq!(h.metrics.leases_held.get(), 0);
            let item = h.checkpoints.item("S").unwrap();
            assert_eq!(item.lease.owner.as_deref(), Some("intruder"));
            assert_eq!(item.checkpoint.sequence_number, Some(h.seq(2)));
            stop(&h, coordinator).await;
            assert_eq!(h.checkpoints.owner("S").as_deref(), Some("intruder"));
        }

        #[tokio::test]
        async fn a_renewal_refused_stops_the_reader_mid_batch_and_its_lag_goes_with_it() {
            let mut h = Harness::new();
            h.lease_settings.duration = Duration::from_millis(300);
            let events = user_events(3);
            h.streams
                .add_shard("S", None, h.records(&events[..2]), false);
            let coordinator = start(&h);
            wait_until("the first events checkpointed", || {
                h.checkpoints.saved("S") == [(Some(h.seq(2)), false)]
            })
            .await;
            h.handler.hang();
            h.streams.push_records("S", h.records(&events[2..]));
            wait_until("a batch in hand", || h.handler.hanging() == 1).await;
            let wall = events[2].occurred_at + chrono::Duration::seconds(90);
            assert_eq!(
                h.progress.snapshot(Instant::now(), wall).lag,
                Duration::from_secs(90)
            );

            let intruder = live_intruder(&h, "S");
            wait_until("the reader stopped", || {
                !h.progress
                    .silences(Instant::now())
                    .contains_key(&shard_loop_name("S"))
            })
            .await;
            assert_eq!(h.metrics.leases_lost.get(), 1);
            assert_eq!(h.metrics.leases_held.get(), 0);
            assert_eq!(checkpointed(&h), [Some(h.seq(2))]);
            assert_eq!(
                h.progress.snapshot(Instant::now(), wall).lag,
                Duration::ZERO,
                "another instance's shard is not this one's lag"
            );
            assert_eq!(h.checkpoints.owner("S").as_deref(), Some("intruder"));
            stop(&h, coordinator).await;
            intruder.abort();
            assert_eq!(checkpointed(&h), [Some(h.seq(2))]);
        }

        #[tokio::test]
        async fn a_release_on_shutdown_lets_the_other_take_over_at_once() {
            // An hour: nothing expires during the test.
            let a = Harness::new();
            let b = a.peer("instance-b");
            let events = user_events(4);
            a.streams
                .add_shard("S", None, a.records(&events[..2]), false);
            let run_a = start(&a);
            wait_until("the first events checkpointed", || {
                a.checkpoints.saved("S") == [(Some(a.seq(2)), false)]
            })
            .await;
            let run_b = start(&b);
            let discoveries = a.streams.describe_calls();
            wait_until("the standby to look", || {
                a.streams.describe_calls() >= discoveries + 4
            })
            .await;
            assert_eq!(b.metrics.leases_taken.get(), 0);

            stop(&a, run_a).await;
            assert_eq!(a.metrics.leases_held.get(), 0);
            a.streams.push_records("S", a.records(&events[2..]));
            wait_until("the other instance to read on", || versions(&b) == [3, 4]).await;
            assert_eq!(iterators(&b, "S"), [StartPosition::After(a.seq(2))]);
            assert_eq!(b.metrics.leases_taken.get(), 1);
            assert_eq!(versions(&a), [1, 2]);
            stop(&b, run_b).await;
        }

        #[tokio::test]
        async fn two_instances_share_two_shards() {
            let mut a = Harness::new();
            // Longer than the test: the first instance leaves the second
            // shard to the other.
            a.lease_settings.head_start = Duration::from_secs(3600);
            let b = a.peer("instance-b");
            let (users, orders) = (user_events(2), order_events(2));
            a.streams.add_shard("S1", None, a.records(&users), false);
            a.streams.add_shard("S2", None, a.records(&orders), false);
            let run_a = start(&a);
            wait_until("one shard read", || versions(&a).len() == 2).await;
            let run_b = start(&b);
            wait_until("the other shard read", || versions(&b).len() == 2).await;

            let mut owners = [a.checkpoints.owner("S1"), a.checkpoints.owner("S2")];
            owners.sort();
            assert_eq!(
                owners,
                [Some("instance-a".to_owned()), Some("instance-b".to_owned())]
            );
            for h in [&a, &b] {
                assert_eq!(h.metrics.leases_held.get(), 1);
                assert_eq!(h.metrics.leases_taken.get(), 1);
            }
            stop(&a, run_a).await;
            stop(&b, run_b).await;
        }

        #[tokio::test]
        async fn the_fair_share_counts_live_owners_and_grows_when_one_dies() {
            let mut h = Harness::new();
            h.lease_settings.duration = Duration::from_millis(300);
            for shard in ["S1", "S2", "S3"] {
                h.streams.add_shard(shard, None, vec![], false);
            }
            let intruder = live_intruder(&h, "S1");
            wait_until("the intruder's lease", || {
                h.checkpoints.owner("S1").is_some()
            })
            .await;
            let coordinator = start(&h);
            // Three shards, two live owners: two each, at most.
            wait_until("two shards taken", || h.metrics.leases_held.get() == 2).await;
            h.streams.add_shard("S4", None, vec![], false);
            let discoveries = h.streams.describe_calls();
            wait_until("a few listings", || {
                h.streams.describe_calls() >= discoveries + 10
            })
            .await;
            assert_eq!(h.metrics.leases_held.get(), 2);
            assert_eq!(h.checkpoints.owner("S4"), None, "more than a fair share");

            // The intruder dies: once its lease expires, all four are ours.
            intruder.abort();
            wait_until("every shard taken", || h.metrics.leases_held.get() == 4).await;
            for shard in ["S1", "S2", "S3", "S4"] {
                assert_eq!(
                    h.checkpoints.owner(shard).as_deref(),
                    Some("instance-a"),
                    "{shard}"
                );
            }
            stop(&h, coordinator).await;
            assert_eq!(h.metrics.leases_held.get(), 0);
        }
    }
}
