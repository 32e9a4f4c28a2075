//! Reading the event store's DynamoDB stream, for every consumer of it: the
//! projector and the purchase process. One shard is read by the one
//! instance holding its lease in the consumer's checkpoint table; each
//! `GetRecords` batch goes to the consumer's [`batch::BatchHandler`], and
//! its checkpoint is written only once the handler has done everything the
//! batch asks. A window the stream trimmed before it was read is read back
//! from the event store first.
//!
//! Module map:
//! - [`coordinator`]: the shard listing, lineage, one reader task per shard;
//! - [`lease`]: which instance reads which shard, so that several may run;
//! - [`shard`]: one shard's `GetRecords` loop, decoding, checkpointing;
//! - [`batch`]: a batch's records, and the consumer's handler of them;
//! - [`stream`], [`checkpoint`]: the DynamoDB Streams and checkpoint table
//!   calls (checkpoints and leases), each behind a trait so that the logic
//!   is tested against fakes ([`testing`], feature `testing`);
//! - [`catchup`]: the events the stream trimmed before they were read,
//!   read back from the event store;
//! - [`attribute`]: stream images to event store items;
//! - [`control`]: shutdown and backoff;
//! - [`config`]: the flags every consumer shares (`ConsumerArgs`: idle
//!   polling, leases, health);
//! - [`host`]: what a consumer runs in: its health server, monitor,
//!   shutdown and the wiring of the readers once the stream is found;
//! - [`progress`], [`monitor`]: the loops' heartbeats and lag, and the
//!   health (readiness, liveness) made of them;
//! - [`metrics`]: the Prometheus metrics of all of it, under each
//!   consumer's namespace.
//!
//! Delivery is at least once: a checkpoint is written only after the
//! handler succeeded for the batch, so a crash hands at most one batch per
//! shard to the handler again. Handlers absorb it (the projector's rows are
//! version-gated; the purchase process's commands carry request ids).
//!
//! DynamoDB advises at most two readers per stream shard: the projector and
//! the purchase process are those two. A third consumer of the events
//! subscribes to the bus instead.
#![forbid(unsafe_code)]

pub mod attribute;
pub mod batch;
pub mod catchup;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod coordinator;
pub mod error;
pub mod host;
pub mod lease;
pub mod metrics;
pub mod monitor;
pub mod progress;
pub mod shard;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
