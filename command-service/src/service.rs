//! The gRPC adapter: parse, call the [`CommandHandler`], map the outcome. No
//! business rule lives here.

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::commands::CommandHandler;
use dynabridge::convert::money_to_pb;
use dynabridge::pb;
use dynabridge::pb::command_service_server::CommandService;
use dynabridge_runtime::error::AppError;
use dynabridge_runtime::grpc::{CORRELATION_HEADER, correlation_id, request_span, trace_parent};
use dynabridge_runtime::telemetry::continue_trace;

use crate::parse::{CreateOrder, CreateUser, Origin, UpdateOrderStatus, UpdateUserProfile};

#[derive(Clone, Debug)]
pub struct CommandApi {
    handler: CommandHandler,
}

impl CommandApi {
    pub fn new(handler: CommandHandler) -> Self {
        Self { handler }
    }
}

/// Returns `message` with the correlation id in the response metadata.
fn respond<T>(message: T, correlation_id: &str) -> Response<T> {
    let mut response = Response::new(message);
    if let Ok(value) = correlation_id.parse() {
        response.metadata_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// Runs `body` in a span carrying the request's correlation id, and part of
/// the caller's trace, with the [`Origin`] its events are stored with.
async fn handle<Req, Resp, F, Fut>(
    method: &'static str,
    request: Request<Req>,
    field: impl FnOnce(&Req) -> &str,
    body: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(Req, Origin) -> Fut,
    Fut: Future<Output = Result<Resp, AppError>>,
{
    let (metadata, _, message) = request.into_parts();
    let cid = correlation_id(field(&message), &metadata).map_err(AppError::from)?;
    let span = request_span(method, &cid);
    let origin = Origin {
        correlation_id: cid.clone(),
        trace_parent: continue_trace(&span, trace_parent(&metadata)).map(|t| t.to_string()),
    };
    let result = body(message, origin).instrument(span.clone()).await;
    span.in_scope(|| match &result {
        Ok(_) => tracing::debug!("command accepted"),
        Err(err) => tracing::info!(error = %err, "command refused"),
    });
    Ok(respond(result?, &cid))
}

#[tonic::async_trait]
impl CommandService for CommandApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        handle(
            "CreateUser",
            request,
            |r| &r.correlation_id,
            |req, origin| async move {
                let cmd = CreateUser::parse(&req, &origin)?;
                let out = self
                    .handler
                    .create_user(&cmd.meta, cmd.email, cmd.name)
                    .await?;
                Ok(pb::CreateUserResponse {
                    user_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }

    async fn update_user_profile(
        &self,
        request: Request<pb::UpdateUserProfileRequest>,
    ) -> Result<Response<pb::UpdateUserProfileResponse>, Status> {
        handle(
            "UpdateUserProfile",
            request,
            |r| &r.correlation_id,
            |req, origin| async move {
                let cmd = UpdateUserProfile::parse(&req, &origin)?;
                let out = self
                    .handler
                    .update_user_profile(&cmd.meta, cmd.user_id, cmd.name, cmd.email)
                    .await?;
                Ok(pb::UpdateUserProfileResponse {
                    user_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }

    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        handle(
            "CreateOrder",
            request,
            |r| &r.correlation_id,
            |req, origin| async move {
                let cmd = CreateOrder::parse(&req, &origin)?;
                let out = self
                    .handler
                    .create_order(&cmd.meta, cmd.user_id, cmd.items, cmd.expected_total)
                    .await?;
                Ok(pb::CreateOrderResponse {
                    order_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                    total: out.total.map(money_to_pb),
                })
            },
        )
        .await
    }

    async fn update_order_status(
        &self,
        request: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::UpdateOrderStatusResponse>, Status> {
        handle(
            "UpdateOrderStatus",
            request,
            |r| &r.correlation_id,
            |req, origin| async move {
                let cmd = UpdateOrderStatus::parse(&req, &origin)?;
                let out = self
                    .handler
                    .update_order_status(&cmd.meta, cmd.order_id, cmd.status)
                    .await?;
                Ok(pb::UpdateOrderStatusResponse {
                    order_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }
}
