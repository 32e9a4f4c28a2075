//! What every binary runs on: the application error and its one mapping to
//! gRPC statuses ([`error`], [`grpc`]), the server set-up the services share
//! ([`grpc::ApiServer`]), the limits every call is held to and the API's
//! fail-fast gate while the store is unreachable ([`guard`]), health that
//! follows the store ([`health`]), signed page tokens ([`page_token`]), logs,
//! traces and metrics ([`telemetry`]), and the flags every binary shares
//! ([`config`]), and the one shape of every binary ([`service`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod grpc;
pub mod guard;
pub mod health;
pub mod page_token;
pub mod service;
pub mod telemetry;
