//! The commands of the aggregates, each one call of the generic path
//! ([`CommandHandler::execute`]): which aggregate, its id, and whether the
//! command creates it. A create's id derives from its request id, so that
//! a retry names the same aggregate.

use dynabridge_domain::{
    CreateOrder, Distance, Email, Money, Order, OrderCommand, OrderId, OrderLines, OrderStatus,
    Product, ProductCommand, ProductId, Purchase, PurchaseCommand, PurchaseId, PurchaseItems,
    Rejection, Route, RouteCommand, RouteStops, ShippingAddress, StockStep, User, UserCommand,
    UserId, UserName, route_id_for,
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
            purchase_id: None,
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

    /// Records an order's route. Its id derives from the order's: a second
    /// route for the order is refused (`AGGREGATE_EXISTS`); the order must
    /// exist (a condition of the same transaction).
    pub async fn create_route(
        &self,
        meta: &CommandMeta,
        order_id: OrderId,
        stops: RouteStops,
        distance: Distance,
    ) -> Result<CommandOutcome, AppError> {
        let id = route_id_for(order_id);
        let command = RouteCommand::Create {
            order_id,
            stops,
            distance,
        };
        self.execute::<Route>(meta, *id.as_uuid(), &command, Creates::Nothing)
            .await
    }

    /// Asks for a purchase: its id derives from the request id, as a
    /// create's does, and the user must exist. One transaction, one round
    /// trip; the purchase process does the rest.
    pub async fn purchase_products(
        &self,
        meta: &CommandMeta,
        user_id: UserId,
        items: PurchaseItems,
    ) -> Result<CommandOutcome, AppError> {
        let id = PurchaseId::for_request(meta.request_id.as_str());
        let command = PurchaseCommand::Request { id, user_id, items };
        self.execute::<Purchase>(meta, *id.as_uuid(), &command, Creates::Aggregate)
            .await
    }

    /// The purchase process's first step: every item's stock reserved in
    /// one transaction with the purchase's `PurchaseReserved`, or the
    /// purchase rejected (out of stock, naming the sku and what is left).
    pub async fn reserve_purchase(
        &self,
        meta: &CommandMeta,
        id: PurchaseId,
    ) -> Result<CommandOutcome, AppError> {
        self.execute_with::<Purchase, Product>(meta, *id.as_uuid(), &StockStep::Reserve)
            .await
    }

    /// The first step of several purchases at once (`purchases`: each
    /// with its request): decided one after another, appended together,
    /// each answered with its own outcome (see `execute_many_with`).
    pub async fn reserve_purchases(
        &self,
        purchases: &[(CommandMeta, PurchaseId)],
    ) -> Vec<Result<CommandOutcome, AppError>> {
        let steps: Vec<_> = purchases
            .iter()
            .map(|(meta, id)| super::across::BatchedStep {
                meta,
                id: *id.as_uuid(),
                step: &StockStep::Reserve,
            })
            .collect();
        self.execute_many_with::<Purchase, Product>(&steps).await
    }

    /// The second: the order created, and the purchase completed, in one
    /// transaction.
    pub async fn complete_purchase(
        &self,
        meta: &CommandMeta,
        id: PurchaseId,
    ) -> Result<CommandOutcome, AppError> {
        self.execute_with::<Purchase, Order>(meta, *id.as_uuid(), &CreateOrder)
            .await
    }

    /// After its order was cancelled: every item's stock released, in one
    /// transaction with the purchase's `PurchaseCancelled`.
    pub async fn release_purchase(
        &self,
        meta: &CommandMeta,
        id: PurchaseId,
        order_id: OrderId,
    ) -> Result<CommandOutcome, AppError> {
        let step = StockStep::Release { order_id };
        self.execute_with::<Purchase, Product>(meta, *id.as_uuid(), &step)
            .await
    }

    /// Rejects a purchase the process cannot take further before it holds
    /// stock.
    pub async fn reject_purchase(
        &self,
        meta: &CommandMeta,
        id: PurchaseId,
        rejection: Rejection,
    ) -> Result<CommandOutcome, AppError> {
        let command = PurchaseCommand::Reject { id, rejection };
        self.execute::<Purchase>(meta, *id.as_uuid(), &command, Creates::Nothing)
            .await
    }

    /// The purchase that placed order `order_id`, if one did (and the
    /// order exists).
    pub async fn purchase_of_order(
        &self,
        order_id: OrderId,
    ) -> Result<Option<PurchaseId>, AppError> {
        let order: Order = self.load(*order_id.as_uuid()).await?;
        Ok(order.state.and_then(|state| state.purchase_id))
    }
}
