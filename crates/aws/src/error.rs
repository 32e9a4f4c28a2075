//! A failed AWS call, classified once for every caller: transient (the
//! store cannot be reached, timed out, or is throttling: retry later) or
//! not. The SDK's error stays attached as the source.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The error codes that mean "try again later".
const TRANSIENT_CODES: [&str; 6] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "LimitExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
];

/// An AWS call that failed: what we were doing, whether retrying later may
/// succeed, and the SDK's error.
/// Cloning shares the source: a failed transaction answers each append it
/// carried with the same error.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{context}: {detail}")]
pub struct CallError {
    context: String,
    detail: String,
    transient: bool,
    #[source]
    source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
}

impl CallError {
    /// Classifies `err`: transport failures, timeouts and throttling are
    /// transient; everything else is not.
    pub fn from_sdk<E, R>(context: impl Into<String>, err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let transient = match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => true,
            SdkError::ServiceError(service) => {
                TRANSIENT_CODES.contains(&service.err().code().unwrap_or_default())
            }
            _ => false,
        };
        Self {
            context: context.into(),
            detail: DisplayErrorContext(&err).to_string(),
            transient,
            source: std::sync::Arc::new(err),
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}
