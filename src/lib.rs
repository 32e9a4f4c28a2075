//! dynabridge: CQRS and event sourcing on DynamoDB and EventBridge.
//!
//! This crate is the library the three binaries share: the domain, the
//! protobuf contracts, storage on the DynamoDB API, and the projections.
//! See `ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]

pub mod aws;
pub mod commands;
pub mod config;
pub mod convert;
pub mod domain;
pub mod envelope;
pub mod error;
pub mod grpc;
pub mod health;
pub mod pb;
pub mod provision;
pub mod readmodel;
pub mod schema;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_support;
