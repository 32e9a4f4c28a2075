//! The commands of the aggregates, each one call of the generic path
//! ([`CommandHandler::execute`]): which aggregate, its id, and whether the
//! command creates it. A create's id derives from its request id, so that
//! a retry names the same aggregate.

use dynabridge_domain::{
    Email, Money, Order, OrderCommand, OrderId, OrderLines, OrderStatus, Product, ProductCommand,
    ProductId, ShippingAddress, User, UserCommand, UserId, UserName,
};
use dynabridge_event_store::{CommandOutcome, CommandStore};
use dynabridge_runtime::error::AppError;

use super::{CommandHandler, CommandMeta, Creates};

impl<S: CommandStore> CommandHandler<S> {
    pub async fn create_user(
        &self,
        meta: &CommandMeta,
        email: Email,
        name: UserName,
    ) -> Result<CommandOutcome, AppError> {
        let id = UserId::for_request(meta.request_id.as_str());
        let command = UserCommand::Create { id, email, name };
        self.execute::<User>(meta, *id.as_uuid(), &command, Creates::Aggregate)
            .await
    }

    pub async fn update_user_profile(
        &self,
        meta: &CommandMeta,
        id: UserId,
        name: Option<UserName>,
        email: Option<Email>,
    ) -> Result<CommandOutcome, AppError> {
        let command = UserCommand::UpdateProfile { id, name, email };
        self.execute::<User>(meta, *id.as_uuid(), &command, Creates::Nothing)
            .await
    }

    pub async fn create_order(
        &self,
        meta: &CommandMeta,
        user_id: UserId,
        items: OrderLines,
        expected_total: Option<Money>,
        shipping_address: Option<ShippingAddress>,
    ) -> Result<CommandOutcome, AppError> {
        let id = OrderId::for_request(meta.request_id.as_str());
        let command = OrderCommand::Create {
            id,
            user_id,
            items,
            expected_total,
            shipping_address,
        };
        self.execute::<Order>(meta, *id.as_uuid(), &command, Creates::Aggregate)
            .await
    }

    pub async fn update_order_status(
        &self,
        meta: &CommandMeta,
        id: OrderId,
        status: OrderStatus,
    ) -> Result<CommandOutcome, AppError> {
        let command = OrderCommand::UpdateStatus { id, status };
        self.execute::<Order>(meta, *id.as_uuid(), &command, Creates::Nothing)
            .await
    }

    /// Any product command. A product's id derives from its sku, not from
    /// the request: a create of a sku that exists is refused
    /// (`AGGREGATE_EXISTS`), and its retry is answered from the request's
    /// record, as any command on an existing aggregate is.
    pub async fn product(
        &self,
        meta: &CommandMeta,
        command: &ProductCommand,
    ) -> Result<CommandOutcome, AppError> {
        let id = ProductId::for_sku(command.sku());
        self.execute::<Product>(meta, *id.as_uuid(), command, Creates::Nothing)
            .await
    }
}
