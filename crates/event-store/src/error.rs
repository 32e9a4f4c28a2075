//! Why a call to the event store failed, typed, with its cause.

use dynabridge_aws::CallError;

/// A failure of the event store below any decision: the call failed, or
/// what came back cannot be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// An AWS call failed; see [`CallError::is_transient`].
    #[error(transparent)]
    Call(#[from] CallError),
    /// A stored item this build cannot read.
    #[error("{0}")]
    Corrupt(String),
    /// A bug of ours or a hand-edited table, never worth a retry: a request
    /// the SDK refused to build, or a store's answer that contradicts what
    /// the append sent.
    #[error("{0}")]
    Inconsistent(String),
}

impl StoreError {
    /// Whether the same call may succeed later (the store unreachable or
    /// throttling).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Call(err) if err.is_transient())
    }

    pub(crate) fn call<E, R>(context: &str, err: aws_sdk_dynamodb::error::SdkError<E, R>) -> Self
    where
        E: std::error::Error
            + aws_sdk_dynamodb::error::ProvideErrorMetadata
            + Send
            + Sync
            + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Self::Call(CallError::from_sdk(context, err))
    }
}
