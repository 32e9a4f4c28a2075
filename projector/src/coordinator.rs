//! Which shards to read, and when: the stream's shard listing is read
//! periodically and a reader task is started for every shard that is
//! unfinished and whose parent is finished.
//!
//! Lineage matters because an item's records move to the child shards when
//! a shard splits: reading a child before its parent is done would apply an
//! aggregate's later events before its earlier ones. A parent missing from
//! the listing has been trimmed away and counts as finished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::progress;
use crate::shard::{Pipeline, ShardEnd};
use crate::stream::{ShardInfo, StreamError, list_shards};

/// What this process knows of the shards beyond their checkpoints.
#[derive(Debug, Default)]
pub struct ShardStates {
    /// Finished here, whether or not the checkpoint says so yet.
    pub finished: HashSet<String>,
    pub running: HashSet<String>,
    /// Stopped at a poison record: not restarted until the process is.
    pub stopped: HashSet<String>,
}

/// The shards to start now, in listing order.
pub fn runnable(
    listing: &[ShardInfo],
    checkpoints: &HashMap<String, Checkpoint>,
    states: &ShardStates,
) -> Vec<String> {
    let listed: HashSet<&str> = listing.iter().map(|s| s.id.as_str()).collect();
    let finished =
        |id: &str| states.finished.contains(id) || checkpoints.get(id).is_some_and(|c| c.finished);
    listing
        .iter()
        .filter(|shard| {
            !finished(&shard.id)
                && !states.running.contains(&shard.id)
                && !states.stopped.contains(&shard.id)
                && shard
                    .parent
                    .as_deref()
                    .is_none_or(|parent| !listed.contains(parent) || finished(parent))
        })
        .map(|shard| shard.id.clone())
        .collect()
}

/// Reads the stream until shutdown, then waits for the shard readers to
/// finish (or abandon) their batch.
pub async fn run_stream(pipeline: Arc<Pipeline>) {
    let mut states = ShardStates::default();
    let mut tasks: JoinSet<Result<ShardEnd, StreamError>> = JoinSet::new();
    let mut task_shards: HashMap<Id, String> = HashMap::new();
    let mut retry = pipeline.timing.retry_backoff();
    let mut next_discovery = Instant::now();
    loop {
        // At least once per discovery period, whatever the readers do.
        progress::beat();
        tokio::select! {
            biased;
            () = pipeline.shutdown.wait() => break,
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                if on_end(joined, &mut task_shards, &mut states) {
                    // A finished shard may have children waiting.
                    next_discovery = Instant::now();
                }
            }
            () = tokio::time::sleep_until(next_discovery) => {
                match discover(&pipeline).await {
                    Ok((listing, checkpoints)) => {
                        retry.reset();
                        next_discovery = Instant::now() + pipeline.timing.rediscover_every;
                        for shard_id in runnable(&listing, &checkpoints, &states) {
                            let checkpoint = checkpoints.get(&shard_id).cloned().unwrap_or_default();
                            let reader = pipeline.clone();
                            let id = shard_id.clone();
                            // Each reader is a loop of its own for liveness,
                            // and its shard's lag is its own.
                            let handle = tasks.spawn(async move {
                                let progress = reader.progress.clone();
                                progress
                                    .track(shard_loop_name(&id), reader.run_shard(&id, checkpoint))
                                    .await
                            });
                            task_shards.insert(handle.id(), shard_id.clone());
                            states.running.insert(shard_id);
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
    while let Some(joined) = tasks.join_next_with_id().await {
        on_end(joined, &mut task_shards, &mut states);
    }
}

/// The name a shard's reader is tracked under, in health logs.
pub fn shard_loop_name(shard_id: &str) -> String {
    format!("shard {shard_id}")
}

/// The listing and every checkpoint. Both or neither: a shard must never
/// start without its checkpoint, or it would start over from the oldest
/// record.
async fn discover(
    pipeline: &Pipeline,
) -> Result<(Vec<ShardInfo>, HashMap<String, Checkpoint>), StreamError> {
    let listing = list_shards(pipeline.streams.as_ref(), &pipeline.stream_arn).await?;
    let checkpoints = pipeline.checkpoints.load_all(&pipeline.stream_arn).await?;
    Ok((listing, checkpoints))
}

/// Records how a reader ended; `true` if the listing should be read now.
fn on_end(
    joined: Result<(Id, Result<ShardEnd, StreamError>), JoinError>,
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
    use crate::stream::StartPosition;
    use crate::testing::{Entry, Harness, order_events, user_events, wait_until};

    fn shard(id: &str, parent: Option<&str>) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
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
        assert_eq!(runnable(&listing, &none, &states), ["root", "orphan"]);

        states
            .running
            .extend(["root".to_owned(), "orphan".to_owned()]);
        assert!(
            runnable(&listing, &none, &states).is_empty(),
            "running shards are not started twice"
        );

        // The root's checkpoint says finished (another process, or before
        // a restart): its child may go.
        let checkpoints = HashMap::from([(
            "root".to_owned(),
            Checkpoint {
                sequence_number: Some("1".into()),
                finished: true,
            },
        )]);
        states.running.remove("root");
        assert_eq!(runnable(&listing, &checkpoints, &states), ["child"]);

        states.finished.insert("child".into());
        assert_eq!(runnable(&listing, &checkpoints, &states), ["grandchild"]);

        states.stopped.insert("grandchild".into());
        assert!(
            runnable(&listing, &checkpoints, &states).is_empty(),
            "poisoned shards stay stopped"
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
}
