//! The gRPC adapter of `dynabridge.v1.QueryService`: each handler parses its
//! request, calls [`Queries`], and maps the error once, through
//! `From<AppError> for tonic::Status`. No query logic lives here.

use std::future::Future;

use dynabridge::pb;
use dynabridge::pb::query_service_server::QueryService;
use dynabridge_runtime::error::AppError;
use dynabridge_runtime::grpc::{
    CORRELATION_HEADER, correlation_id, request_deadline, request_span, trace_parent,
};
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::queries::Queries;
use crate::request::{GetOrder, GetUserByEmail, GetUserProfile, ListOrders};

#[derive(Clone, Debug)]
pub struct QueryApi {
    queries: Queries,
}

impl QueryApi {
    pub fn new(queries: Queries) -> Self {
        Self { queries }
    }
}

/// Runs `handle` on the message of `request` inside the request's span (in
/// the caller's trace), with the call's deadline, and echoes the
/// correlation id back, on errors too.
async fn serve<Req, Resp, F, Fut>(
    method: &'static str,
    request: Request<Req>,
    handle: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(Req, Option<Instant>) -> Fut,
    Fut: Future<Output = Result<Resp, AppError>>,
{
    let metadata = request.metadata();
    // Without a request field to check, only a generated id is possible
    // here; a fresh one keeps the call traceable should that ever change.
    let cid = correlation_id("", metadata).unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
    let call_deadline = request_deadline(metadata).map(|timeout| Instant::now() + timeout);
    let span = request_span(method, &cid);
    // Reads append nothing: the trace context only makes this call's span
    // part of the caller's trace.
    let _ = dynabridge_runtime::telemetry::continue_trace(&span, trace_parent(metadata));
    let result = async move {
        let result = handle(request.into_inner(), call_deadline).await;
        if let Err(err) = &result {
            tracing::debug!(error = %err, "request failed");
        }
        // Inside the span, so that what the mapping logs is tied to the call.
        result.map_err(Status::from)
    }
    .instrument(span)
    .await;
    match result {
        Ok(message) => {
            let mut response = Response::new(message);
            echo_correlation_id(response.metadata_mut(), &cid);
            Ok(response)
        }
        Err(mut status) => {
            echo_correlation_id(status.metadata_mut(), &cid);
            Err(status)
        }
    }
}

fn echo_correlation_id(metadata: &mut MetadataMap, cid: &str) {
    // Ids are printable ASCII, checked by `correlation_id`, so this holds.
    if let Ok(value) = MetadataValue::try_from(cid) {
        metadata.insert(CORRELATION_HEADER, value);
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_user_profile(
        &self,
        request: Request<pb::GetUserProfileRequest>,
    ) -> Result<Response<pb::GetUserProfileResponse>, Status> {
        serve("GetUserProfile", request, |message, deadline| async move {
            let query = GetUserProfile::try_from(message)?;
            let row = self.queries.user_profile(query, deadline).await?;
            Ok(pb::GetUserProfileResponse {
                user: Some(row.to_pb()),
            })
        })
        .await
    }

    async fn get_user_by_email(
        &self,
        request: Request<pb::GetUserByEmailRequest>,
    ) -> Result<Response<pb::GetUserByEmailResponse>, Status> {
        serve("GetUserByEmail", request, |message, _| async move {
            let query = GetUserByEmail::try_from(message)?;
            let row = self.queries.user_by_email(query).await?;
            Ok(pb::GetUserByEmailResponse {
                user: Some(row.to_pb()),
            })
        })
        .await
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        serve("GetOrder", request, |message, deadline| async move {
            let query = GetOrder::try_from(message)?;
            let row = self.queries.order(query, deadline).await?;
            Ok(pb::GetOrderResponse {
                order: Some(row.to_pb()),
            })
        })
        .await
    }

    async fn list_orders_by_user(
        &self,
        request: Request<pb::ListOrdersByUserRequest>,
    ) -> Result<Response<pb::ListOrdersByUserResponse>, Status> {
        serve("ListOrdersByUser", request, |message, _| async move {
            let query = ListOrders::try_from(message)?;
            let page = self.queries.orders(query).await?;
            Ok(pb::ListOrdersByUserResponse {
                orders: page.rows.iter().map(|row| row.to_pb()).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn list_orders_by_status(
        &self,
        request: Request<pb::ListOrdersByStatusRequest>,
    ) -> Result<Response<pb::ListOrdersByStatusResponse>, Status> {
        serve("ListOrdersByStatus", request, |message, _| async move {
            let query = ListOrders::try_from(message)?;
            let page = self.queries.orders(query).await?;
            Ok(pb::ListOrdersByStatusResponse {
                orders: page.rows.iter().map(|row| row.to_pb()).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn correlation_id_is_echoed_on_success_and_error() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(CORRELATION_HEADER, "abc-123".parse().unwrap());
        let ok = serve("Test", request, |(), _| async { Ok::<_, AppError>(()) })
            .await
            .unwrap();
        assert_eq!(ok.metadata().get(CORRELATION_HEADER).unwrap(), "abc-123");

        let err = serve("Test", Request::new(()), |(), _| async {
            Err::<(), _>(AppError::NotFound("gone".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        let generated = err
            .metadata()
            .get(CORRELATION_HEADER)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    }

    #[tokio::test]
    async fn the_call_deadline_comes_from_grpc_timeout() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "2S".parse().unwrap());
        let before = Instant::now();
        serve("Test", request, |(), deadline| async move {
            let deadline = deadline.expect("a deadline");
            assert!(deadline >= before + std::time::Duration::from_secs(2));
            assert!(deadline <= Instant::now() + std::time::Duration::from_secs(2));
            Ok::<_, AppError>(())
        })
        .await
        .unwrap();
        serve("Test", Request::new(()), |(), deadline| async move {
            assert!(deadline.is_none());
            Ok::<_, AppError>(())
        })
        .await
        .unwrap();
    }
}
