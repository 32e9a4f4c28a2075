//! dynabridge's contracts: what the binaries, the event bus and clients in
//! other languages agree on.
//!
//! - [`pb`]: the code generated from `proto/dynabridge/v1`.
//! - [`codec`]: the protobuf codec of the generated clients and servers (a
//!   request that does not decode is the client's error).
//! - [`convert`]: protobuf ⇄ domain conversions shared by every edge.
//! - [`envelope`]: a stored event ⇄ its `EventEnvelope`, and the envelope's
//!   ProtoJSON (the EventBridge `detail`).
//! - [`upcast`]: every shape an event's payload has had, and how an older
//!   one is read in the current shape.
//! - [`event_schemas`]: the schema registry's JSON Schemas, generated
//!   from `proto/`.
//! - [`golden`]: one event of each shape, behind the fixtures under
//!   `tests/fixtures/events/`.
//! - [`schema`]: every table, index and attribute name, and the names of the
//!   event bus, its archive and its rules.
//!
//! The domain is `dynabridge-domain`; storage, read models and the runtime
//! are crates of their own under `crates/`. See `ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]

pub mod codec;
pub mod convert;
pub mod envelope;
pub mod event_schemas;
pub mod golden;
pub mod pb;
pub mod schema;
pub mod upcast;

/// The `google.rpc.ErrorInfo` domain of every error this system returns.
pub const ERROR_DOMAIN: &str = "dynabridge.dev";
