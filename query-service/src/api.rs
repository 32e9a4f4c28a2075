//! The gRPC adapter of `dynabridge.v1.QueryService`: each handler parses its
//! request, calls [`Queries`], and maps the error once, through
//! `From<AppError> for tonic::Status`. No query logic lives here.

use dynabridge::pb;
use dynabridge::pb::query_service_server::QueryService;
use dynabridge_runtime::grpc::unary;
use tonic::{Request, Response, Status};

use crate::queries::Queries;
use crate::request::{
    GetOrder, GetProduct, GetPurchase, GetUserByEmail, GetUserProfile, ListOrders, ListProducts,
};

#[derive(Clone, Debug)]
pub struct QueryApi {
    queries: Queries,
}

impl QueryApi {
    pub fn new(queries: Queries) -> Self {
        Self { queries }
    }
}

/// Queries carry no correlation id field: the metadata's, or a new one.
fn no_field<T>(_: &T) -> &str {
    ""
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_user_profile(
        &self,
        request: Request<pb::GetUserProfileRequest>,
    ) -> Result<Response<pb::GetUserProfileResponse>, Status> {
        unary(
            "GetUserProfile",
            request,
            no_field,
            |message, call| async move {
                let query = GetUserProfile::try_from(message)?;
                let row = self.queries.user_profile(query, call.deadline).await?;
                Ok(pb::GetUserProfileResponse {
                    user: Some(row.to_pb()),
                })
            },
        )
        .await
    }

    async fn get_user_by_email(
        &self,
        request: Request<pb::GetUserByEmailRequest>,
    ) -> Result<Response<pb::GetUserByEmailResponse>, Status> {
        unary(
            "GetUserByEmail",
            request,
            no_field,
            |message, _| async move {
                let query = GetUserByEmail::try_from(message)?;
                let row = self.queries.user_by_email(query).await?;
                Ok(pb::GetUserByEmailResponse {
                    user: Some(row.to_pb()),
                })
            },
        )
        .await
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        unary("GetOrder", request, no_field, |message, call| async move {
            let query = GetOrder::try_from(message)?;
            let row = self.queries.order(query, call.deadline).await?;
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
        unary(
            "ListOrdersByUser",
            request,
            no_field,
            |message, _| async move {
                let query = ListOrders::try_from(message)?;
                let page = self.queries.orders(query).await?;
                Ok(pb::ListOrdersByUserResponse {
                    orders: page.rows.iter().map(|row| row.to_pb()).collect(),
                    next_page_token: page.next_page_token,
                })
            },
        )
        .await
    }

    async fn list_orders_by_status(
        &self,
        request: Request<pb::ListOrdersByStatusRequest>,
    ) -> Result<Response<pb::ListOrdersByStatusResponse>, Status> {
        unary(
            "ListOrdersByStatus",
            request,
            no_field,
            |message, _| async move {
                let query = ListOrders::try_from(message)?;
                let page = self.queries.orders(query).await?;
                Ok(pb::ListOrdersByStatusResponse {
                    orders: page.rows.iter().map(|row| row.to_pb()).collect(),
                    next_page_token: page.next_page_token,
                })
            },
        )
        .await
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        unary(
            "GetProduct",
            request,
            no_field,
            |message, call| async move {
                let query = GetProduct::try_from(message)?;
                let row = self.queries.product(query, call.deadline).await?;
                Ok(pb::GetProductResponse {
                    product: Some(row.to_pb()),
                })
            },
        )
        .await
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        unary("ListProducts", request, no_field, |message, _| async move {
            let query = ListProducts::try_from(message)?;
            let page = self.queries.products(query).await?;
            Ok(pb::ListProductsResponse {
                products: page.rows.iter().map(|row| row.to_pb()).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn list_low_stock_products(
        &self,
        request: Request<pb::ListLowStockProductsRequest>,
    ) -> Result<Response<pb::ListLowStockProductsResponse>, Status> {
        unary(
            "ListLowStockProducts",
            request,
            no_field,
            |message, _| async move {
                let query = ListProducts::try_from(message)?;
                let page = self.queries.products(query).await?;
                Ok(pb::ListLowStockProductsResponse {
                    products: page.rows.iter().map(|row| row.to_pb()).collect(),
                    next_page_token: page.next_page_token,
                })
            },
        )
        .await
    }

    async fn get_purchase(
        &self,
        request: Request<pb::GetPurchaseRequest>,
    ) -> Result<Response<pb::GetPurchaseResponse>, Status> {
        unary(
            "GetPurchase",
            request,
            no_field,
            |message, call| async move {
                let query = GetPurchase::try_from(message)?;
                let row = self.queries.purchase(query, call.deadline).await?;
                Ok(pb::GetPurchaseResponse {
                    purchase: Some(row.to_pb()),
                })
            },
        )
        .await
    }
}
