//! The application error: what a command or query can fail with, whatever the
//! layer it came from. [`crate::grpc`] maps it to a gRPC status, in one place.

use dynabridge_aws::CallError;
use dynabridge_domain::{DomainError, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input: `INVALID_ARGUMENT` with a field violation per bad field.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent writer won: `ABORTED`, retry from a fresh read.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot be reached or is throttling: `UNAVAILABLE`, retry.
    /// The cause is logged, never sent to the client.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Failure),
    /// A bounded wait ran out: `DEADLINE_EXCEEDED`.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else. The cause is logged, never sent to the client.
    #[error("internal: {0}")]
    Internal(#[source] Failure),
}

/// The cause of an unavailable or internal error, kept typed (an AWS
/// call's [`CallError`], a store's error) for the log.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

impl AppError {
    /// An internal error that no other error caused: a broken invariant.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::Internal(what.into().into())
    }
}

impl From<DomainError> for AppError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Invalid(v) => Self::Invalid(v),
            err @ DomainError::NotFound { .. } => Self::NotFound(err.to_string()),
            err @ DomainError::AlreadyExists { .. } => Self::AlreadyExists(err.to_string()),
            DomainError::FailedPrecondition(msg) => Self::FailedPrecondition(msg),
            DomainError::Taken(msg) => Self::AlreadyExists(msg.into()),
            DomainError::Conflict(msg) => Self::Conflict(msg),
        }
    }
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
