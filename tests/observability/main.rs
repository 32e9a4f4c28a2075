//! Health, metrics and the trace context, end to end: the three services in
//! this process over real gRPC and HTTP on loopback, against the embedded
//! store, reached through a proxy the tests can cut; and trace export from
//! the real command-service binary (`otlp`), which `cargo test --workspace`
//! builds first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod call_costs;
#[allow(dead_code)]
#[path = "../iam/fake_eventbridge.rs"]
mod fake_eventbridge;
mod health;
mod helpers;
mod metrics;
mod otlp;
mod propagation;

use dynabridge_testkit::processes;
