//! The application error: what a command or query can fail with, whatever the
//! layer it came from. [`crate::grpc`] maps it to a gRPC status, in one place.
//!
//! Every error names its cause as a [`Reason`], the `ErrorInfo.reason` a
//! client branches on (`proto/dynabridge/v1/errors.proto` documents each),
//! with the metadata a client can act on.

use dynabridge::pb::ErrorReason as Reason;
use dynabridge_aws::CallError;
use dynabridge_domain::{DomainError, UniqueScope, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input: `INVALID_ARGUMENT` with a field violation per bad field,
    /// reason `INVALID_FIELD`.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// An expected refusal: the aggregate said no, a writer won, a wait ran
    /// out. Its reason decides the code.
    #[error("{0}")]
    Refused(Refusal),
    /// The store cannot be reached or is throttling: `UNAVAILABLE`, retry.
    /// The cause is logged, never sent to the client.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Failure),
    /// Anything else. The cause is logged, never sent to the client.
    #[error("internal: {0}")]
    Internal(#[source] Failure),
}

/// The cause of an unavailable or internal error, kept typed (an AWS
/// call's [`CallError`], a store's error) for the log.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// A refusal: its reason, the message for a person, and the `ErrorInfo`
/// metadata for a program.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
    pub metadata: Vec<(&'static str, String)>,
}

impl Refusal {
    /// Adds one `ErrorInfo` metadata entry.
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.metadata.push((key, value.to_string()));
        self
    }

    /// The value of metadata `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl AppError {
    /// An internal error that no other error caused: a broken invariant.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::Internal(what.into().into())
    }

    /// A refusal for `reason`, to which [`AppError::with`] adds metadata.
    pub fn refused(reason: Reason, message: impl Into<String>) -> Self {
        Self::Refused(Refusal {
            reason,
            message: message.into(),
            metadata: Vec::new(),
        })
    }

    /// Adds one `ErrorInfo` metadata entry to a refusal; other errors carry
    /// none and are returned as they are.
    pub fn with(self, key: &'static str, value: impl ToString) -> Self {
        match self {
            Self::Refused(refusal) => Self::Refused(refusal.with(key, value)),
            other => other,
        }
    }

    /// The refusal's reason, if this is one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Refused(refusal) => Some(refusal.reason),
            _ => None,
        }
    }

    /// The `request_id` was recorded with a different request.
    pub fn request_id_reused() -> Self {
        Self::refused(
            Reason::RequestIdReused,
            "request_id was already used for a different request",
        )
    }
}

/// The reason a value of `scope` held by another aggregate is refused with.
fn taken_reason(scope: UniqueScope) -> Reason {
    match scope {
        UniqueScope::Email => Reason::EmailTaken,
    }
}

impl From<DomainError> for AppError {
    fn from(err: DomainError) -> Self {
        let message = err.to_string();
        match err {
            DomainError::Invalid(v) => Self::Invalid(v),
            DomainError::NotFound { kind, id } => Self::refused(Reason::AggregateNotFound, message)
                .with("aggregate_type", kind)
                .with("aggregate_id", id),
            DomainError::AlreadyExists { kind, id } => {
                Self::refused(Reason::AggregateExists, message)
                    .with("aggregate_type", kind)
                    .with("aggregate_id", id)
            }
            DomainError::InvalidTransition { id, from, to } => {
                Self::refused(Reason::InvalidStatusTransition, message)
                    .with("aggregate_id", id)
                    .with("current_status", order_status_name(from))
                    .with("requested_status", order_status_name(to))
            }
            DomainError::Taken(scope) => Self::refused(taken_reason(scope), message),
            DomainError::NotHeld(_) => Self::refused(Reason::UniqueValueNotHeld, message),
            DomainError::InvalidStep {
                id, state, step, ..
            } => Self::refused(Reason::InvalidStep, message)
                .with("aggregate_id", id)
                .with("state", state)
                .with("step", step),
            DomainError::OutOfStock {
                sku,
                requested,
                available,
            } => Self::refused(Reason::OutOfStock, message)
                .with("sku", sku)
                .with("quantity_requested", requested)
                .with("quantity_left", available),
            DomainError::Changed { id, version, .. } => {
                Self::refused(Reason::ConcurrentModification, message)
                    .with("aggregate_id", id)
                    .with("version_read", version)
            }
        }
    }
}

/// A status as the contract names it (`ORDER_STATUS_PROCESSING`).
fn order_status_name(status: dynabridge_domain::OrderStatus) -> &'static str {
    dynabridge::convert::status_to_pb(status).as_str_name()
}

impl From<CallError> for AppError {
    /// A transient failure is `Unavailable`; anything else `Internal`.
    fn from(err: CallError) -> Self {
        if err.is_transient() {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Internal(Box::new(err))
        }
    }
}

/// Classifies an AWS SDK error: transport failures, timeouts and throttling
/// are `Unavailable`; everything else is `Internal`.
pub fn from_sdk_error<E, R>(context: &str, err: aws_sdk_dynamodb::error::SdkError<E, R>) -> AppError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    CallError::from_sdk(context, err).into()
}
