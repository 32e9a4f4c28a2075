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
    missing_resource: bool,
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
        let code = match &err {
            SdkError::ServiceError(service) => service.err().code(),
            _ => None,
        };
        let transient = match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => true,
            SdkError::ServiceError(_) => TRANSIENT_CODES.contains(&code.unwrap_or_default()),
            _ => false,
        };
        let missing_resource = code == Some("ResourceNotFoundException");
        Self {
            context: context.into(),
            detail: DisplayErrorContext(&err).to_string(),
            transient,
            missing_resource,
            source: std::sync::Arc::new(err),
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Whether the call named a table (or another resource) that does not
    /// exist: the deployment's fault, never the data's.
    pub fn is_missing_resource(&self) -> bool {
        self.missing_resource
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_sdk_dynamodb::types::error::{
        ProvisionedThroughputExceededException, ResourceNotFoundException,
    };
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(error: GetItemError) -> CallError {
        let response = Response::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
        CallError::from_sdk("reading", SdkError::service_error(error, response))
    }

    fn meta(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).build()
    }

    #[test]
    fn a_missing_table_is_neither_transient_nor_the_datas_fault() {
        let missing = service_error(GetItemError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .meta(meta("ResourceNotFoundException"))
                .build(),
        ));
        assert!(missing.is_missing_resource());
        assert!(!missing.is_transient());
        let throttled = service_error(GetItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .meta(meta("ProvisionedThroughputExceededException"))
                .build(),
        ));
        assert!(throttled.is_transient());
        assert!(!throttled.is_missing_resource());
    }
}
