//! The gRPC adapter: parse, call the [`CommandHandler`], map the outcome. No
//! business rule lives here.

use tonic::{Request, Response, Status};

use crate::commands::CommandHandler;
use dynabridge::convert::money_to_pb;
use dynabridge::pb;
use dynabridge::pb::command_service_server::CommandService;
use dynabridge_runtime::grpc::{Call, unary};

use crate::parse::{
    CreateOrder, CreateRoute, CreateUser, Origin, ProductRequest, PurchaseProducts,
    UpdateOrderStatus, UpdateUserProfile,
};

#[derive(Clone, Debug)]
pub struct CommandApi {
    handler: CommandHandler,
}

impl CommandApi {
    pub fn new(handler: CommandHandler) -> Self {
        Self { handler }
    }
}

/// The [`Origin`] a command's events are stored with: the call's
/// correlation id and trace context.
fn origin(call: Call) -> Origin {
    Origin {
        correlation_id: call.correlation_id,
        trace_parent: call.trace_parent.map(|t| t.to_string()),
    }
}

#[tonic::async_trait]
impl CommandService for CommandApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        unary(
            "CreateUser",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let origin = origin(call);
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
        unary(
            "UpdateUserProfile",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let origin = origin(call);
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
        unary(
            "CreateOrder",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let origin = origin(call);
                let cmd = CreateOrder::parse(&req, &origin)?;
                let out = self
                    .handler
                    .create_order(
                        &cmd.meta,
                        cmd.user_id,
                        cmd.items,
                        cmd.expected_total,
                        cmd.shipping_address,
                    )
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
        unary(
            "UpdateOrderStatus",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let origin = origin(call);
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

    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        unary(
            "CreateProduct",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let cmd = ProductRequest::create(&req, &origin(call))?;
                let out = self.handler.product(&cmd.meta, &cmd.command).await?;
                Ok(pb::CreateProductResponse {
                    product_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }

    async fn restock_product(
        &self,
        request: Request<pb::RestockProductRequest>,
    ) -> Result<Response<pb::RestockProductResponse>, Status> {
        unary(
            "RestockProduct",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let cmd = ProductRequest::restock(&req, &origin(call))?;
                let out = self.handler.product(&cmd.meta, &cmd.command).await?;
                Ok(pb::RestockProductResponse {
                    product_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }

    async fn change_product_price(
        &self,
        request: Request<pb::ChangeProductPriceRequest>,
    ) -> Result<Response<pb::ChangeProductPriceResponse>, Status> {
        unary(
            "ChangeProductPrice",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let cmd = ProductRequest::change_price(&req, &origin(call))?;
                let out = self.handler.product(&cmd.meta, &cmd.command).await?;
                Ok(pb::ChangeProductPriceResponse {
                    product_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }

    async fn purchase_products(
        &self,
        request: Request<pb::PurchaseProductsRequest>,
    ) -> Result<Response<pb::PurchaseProductsResponse>, Status> {
        unary(
            "PurchaseProducts",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let cmd = PurchaseProducts::parse(&req, &origin(call))?;
                let out = self
                    .handler
                    .purchase_products(&cmd.meta, cmd.user_id, cmd.items)
                    .await?;
                Ok(pb::PurchaseProductsResponse {
                    purchase_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }

    async fn create_route(
        &self,
        request: Request<pb::CreateRouteRequest>,
    ) -> Result<Response<pb::CreateRouteResponse>, Status> {
        unary(
            "CreateRoute",
            request,
            |r| &r.correlation_id,
            |req, call| async move {
                let cmd = CreateRoute::parse(&req, &origin(call))?;
                let out = self
                    .handler
                    .create_route(&cmd.meta, cmd.order_id, cmd.stops, cmd.distance)
                    .await?;
                Ok(pb::CreateRouteResponse {
                    route_id: out.aggregate_id,
                    version: out.version,
                    event_ids: out.event_ids,
                    correlation_id: out.correlation_id,
                })
            },
        )
        .await
    }
}
