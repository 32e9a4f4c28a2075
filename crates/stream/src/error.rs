//! The error of the projector's DynamoDB tables (read models, checkpoints,
//! the event store). Every failure is retried; the kind only decides how
//! loudly it is logged.

use dynabridge_aws::CallError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A failed AWS call, classified once ([`CallError`]), with the SDK's
    /// error as its source.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The event store's reading failed: a call, or an item this build
    /// cannot read.
    #[error(transparent)]
    EventStore(#[from] dynabridge_event_store::StoreError),
    /// Throttled, or otherwise expected to pass, without a call error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bad request, an unreadable row, a broken invariant.
    #[error("{0}")]
    Failed(String),
}

impl StoreError {
    /// Whether a read model's table is missing: not the event's fault, so
    /// its aggregate is not parked for it; the batch waits for the table
    /// (a generation's tables being made, or a deployment to repair).
    pub fn is_missing_table(&self) -> bool {
        matches!(self, Self::Call(call) if call.is_missing_resource())
    }

    /// Whether retrying may succeed without anyone's help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Call(call) => call.is_transient(),
            Self::EventStore(err) => err.is_transient(),
            Self::Unavailable(_) => true,
            Self::Failed(_) => false,
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
