//! The error of the projector's DynamoDB tables (read models, checkpoints,
//! the event store). Every failure is retried; the kind only decides how
//! loudly it is logged.

use dynabridge_aws::CallError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Transport failure, timeout or throttling: expected to pass.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bad request, an unreadable row, a missing table.
    #[error("{0}")]
    Failed(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<CallError> for StoreError {
    fn from(err: CallError) -> Self {
        if err.is_transient() {
            Self::Unavailable(err.to_string())
        } else {
            Self::Failed(err.to_string())
        }
    }
}

impl From<dynabridge_event_store::StoreError> for StoreError {
    fn from(err: dynabridge_event_store::StoreError) -> Self {
        match err {
            dynabridge_event_store::StoreError::Call(err) => err.into(),
            other => Self::Failed(other.to_string()),
        }
    }
}

/// Classifies an SDK error of any AWS client, as every binary does
/// ([`CallError`]).
pub fn sdk_error<E, R>(context: &str, err: aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    CallError::from_sdk(context, err).into()
}
