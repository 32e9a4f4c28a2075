//! What every binary runs on: the application error and its one mapping to
//! gRPC statuses ([`error`], [`grpc`]), the server set-up the services share
//! ([`grpc::ApiServer`]), health that follows the store ([`health`]), logs,
//! traces and metrics ([`telemetry`]), and the flags every binary shares
//! ([`config`]), and the one shape of every binary ([`service`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod service;
pub mod telemetry;
