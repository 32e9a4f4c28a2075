//! Requests parsed into commands at the edge. Every bad field is reported,
//! each under its protobuf field path, before anything is read or written.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::commands::{CommandMeta, RequestId};
use dynabridge::convert::{
    address_from_pb, money_from_pb, order_lines_from_pb, purchase_items_from_pb,
    route_stops_from_pb, status_from_pb,
};
use dynabridge::pb;
use dynabridge_domain::{
    Distance, Email, FieldViolation, Money, OrderId, OrderLines, OrderStatus, ProductCommand,
    ProductName, PurchaseItems, Quantity, RouteStops, ShippingAddress, Sku, StockLevel, UserId,
    UserName, ValidationError, Version,
};

/// SHA-256 of the request with its idempotency key and correlation id
/// cleared: what must match when a request id is reused.
fn request_hash<M: Message + Clone>(request: &M, clear: impl FnOnce(&mut M)) -> String {
    let mut copy = request.clone();
    clear(&mut copy);
    let digest = Sha256::digest(copy.encode_to_vec());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn expected_version(raw: Option<i64>, errors: &mut ValidationError) -> Option<Version> {
    match raw {
        Some(v) if v < 0 => {
            errors.push(FieldViolation::new(
                "expected_version",
                "must be at least 0",
            ));
            None
        }
        other => other,
    }
}

/// What a request carries besides its message, read from the call by the
/// adapter: its correlation id and W3C trace context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub correlation_id: String,
    pub trace_parent: Option<String>,
}

fn meta(
    request_id: Option<RequestId>,
    request_hash: String,
    origin: &Origin,
    expected_version: Option<Version>,
) -> Option<CommandMeta> {
    Some(CommandMeta {
        request_id: request_id?,
        request_hash,
        correlation_id: origin.correlation_id.clone(),
        trace_parent: origin.trace_parent.clone(),
        expected_version,
    })
}

pub struct CreateUser {
    pub meta: CommandMeta,
    pub email: Email,
    pub name: UserName,
}

impl CreateUser {
    pub fn parse(req: &pb::CreateUserRequest, origin: &Origin) -> Result<Self, ValidationError> {
        let pb::CreateUserRequest {
            request_id,
            correlation_id: _,
            email,
            name,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let email = errors.check(Email::parse(email).map_err(|e| e.under("email")));
        let name = errors.check(UserName::parse(name).map_err(|e| e.under("name")));
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (meta(request_id, hash, origin, None), email, name) {
            (Some(meta), Some(email), Some(name)) if errors.is_empty() => {
                Ok(Self { meta, email, name })
            }
            _ => Err(errors),
        }
    }
}

pub struct UpdateUserProfile {
    pub meta: CommandMeta,
    pub user_id: UserId,
    pub name: Option<UserName>,
    pub email: Option<Email>,
}

impl UpdateUserProfile {
    pub fn parse(
        req: &pb::UpdateUserProfileRequest,
        origin: &Origin,
    ) -> Result<Self, ValidationError> {
        let pb::UpdateUserProfileRequest {
            request_id,
            correlation_id: _,
            user_id,
            expected_version: raw_expected,
            name,
            email,
            update_mask,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let user_id = errors.check(UserId::parse("user_id", user_id));
        let expected = expected_version(*raw_expected, &mut errors);
        let (mut new_name, mut new_email) = (None, None);
        let paths = update_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default();
        if paths.is_empty() {
            errors.push(FieldViolation::new(
                "update_mask",
                "must name at least one of: name, email",
            ));
        }
        for path in paths {
            match path.as_str() {
                "name" => {
                    new_name = errors.check(UserName::parse(name).map_err(|e| e.under("name")))
                }
                "email" => {
                    new_email = errors.check(Email::parse(email).map_err(|e| e.under("email")));
                }
                other => errors.push(FieldViolation::new(
                    "update_mask.paths",
                    format!("{other:?} is not updatable; use name or email"),
                )),
            }
        }
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (meta(request_id, hash, origin, expected), user_id) {
            (Some(meta), Some(user_id)) if errors.is_empty() => Ok(Self {
                meta,
                user_id,
                name: new_name,
                email: new_email,
            }),
            _ => Err(errors),
        }
    }
}

pub struct CreateOrder {
    pub meta: CommandMeta,
    pub user_id: UserId,
    pub items: OrderLines,
    pub expected_total: Option<Money>,
    pub shipping_address: Option<ShippingAddress>,
}

impl CreateOrder {
    pub fn parse(req: &pb::CreateOrderRequest, origin: &Origin) -> Result<Self, ValidationError> {
        let pb::CreateOrderRequest {
            request_id,
            correlation_id: _,
            user_id,
            items,
            total,
            shipping_address,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let user_id = errors.check(UserId::parse("user_id", user_id));
        let items = errors
            .check(order_lines_from_pb(items))
            .and_then(|lines| errors.check(OrderLines::new(lines)));
        let expected_total = match total {
            Some(total) => errors.check(money_from_pb(Some(total)).map_err(|e| e.under("total"))),
            None => None,
        };
        let shipping_address = match shipping_address {
            Some(address) => {
                let parsed = address_from_pb(address).map_err(|e| e.under("shipping_address"));
                errors.check(parsed.map(Some))
            }
            None => Some(None),
        };
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (
            meta(request_id, hash, origin, None),
            user_id,
            items,
            shipping_address,
        ) {
            (Some(meta), Some(user_id), Some(items), Some(shipping_address))
                if errors.is_empty() =>
            {
                Ok(Self {
                    meta,
                    user_id,
                    items,
                    expected_total,
                    shipping_address,
                })
            }
            _ => Err(errors),
        }
    }
}

pub struct UpdateOrderStatus {
    pub meta: CommandMeta,
    pub order_id: OrderId,
    pub status: OrderStatus,
}

impl UpdateOrderStatus {
    pub fn parse(
        req: &pb::UpdateOrderStatusRequest,
        origin: &Origin,
    ) -> Result<Self, ValidationError> {
        let pb::UpdateOrderStatusRequest {
            request_id,
            correlation_id: _,
            order_id,
            expected_version: raw_expected,
            status,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let order_id = errors.check(OrderId::parse("order_id", order_id));
        let expected = expected_version(*raw_expected, &mut errors);
        let status = errors.check(status_from_pb(*status).map_err(|e| e.under("status")));
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (meta(request_id, hash, origin, expected), order_id, status) {
            (Some(meta), Some(order_id), Some(status)) if errors.is_empty() => Ok(Self {
                meta,
                order_id,
                status,
            }),
            _ => Err(errors),
        }
    }
}

pub struct PurchaseProducts {
    pub meta: CommandMeta,
    pub user_id: UserId,
    pub items: PurchaseItems,
}

impl PurchaseProducts {
    pub fn parse(
        req: &pb::PurchaseProductsRequest,
        origin: &Origin,
    ) -> Result<Self, ValidationError> {
        let pb::PurchaseProductsRequest {
            request_id,
            correlation_id: _,
            user_id,
            items,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let user_id = errors.check(UserId::parse("user_id", user_id));
        let items = errors
            .check(purchase_items_from_pb(items))
            .and_then(|items| errors.check(PurchaseItems::new(items)));
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (meta(request_id, hash, origin, None), user_id, items) {
            (Some(meta), Some(user_id), Some(items)) if errors.is_empty() => Ok(Self {
                meta,
                user_id,
                items,
            }),
            _ => Err(errors),
        }
    }
}

pub struct CreateRoute {
    pub meta: CommandMeta,
    pub order_id: OrderId,
    pub stops: RouteStops,
    pub distance: Distance,
}

impl CreateRoute {
    pub fn parse(req: &pb::CreateRouteRequest, origin: &Origin) -> Result<Self, ValidationError> {
        let pb::CreateRouteRequest {
            request_id,
            correlation_id: _,
            order_id,
            stops,
            distance_metres,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let order_id = errors.check(OrderId::parse("order_id", order_id));
        let stops = errors.check(route_stops_from_pb(stops));
        let distance =
            errors.check(Distance::parse(*distance_metres).map_err(|e| e.under("distance_metres")));
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (
            meta(request_id, hash, origin, None),
            order_id,
            stops,
            distance,
        ) {
            (Some(meta), Some(order_id), Some(stops), Some(distance)) if errors.is_empty() => {
                Ok(Self {
                    meta,
                    order_id,
                    stops,
                    distance,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A product command and what it carries: the three product requests
/// parse into one shape, as they go down one path.
pub struct ProductRequest {
    pub meta: CommandMeta,
    pub command: ProductCommand,
}

fn sku(raw: &str, errors: &mut ValidationError) -> Option<Sku> {
    errors.check(Sku::parse(raw).map_err(|e| e.under("sku")))
}

fn unit_price(raw: Option<&pb::Money>, errors: &mut ValidationError) -> Option<Money> {
    errors.check(money_from_pb(raw).map_err(|e| e.under("unit_price")))
}

fn stock_level(field: &str, raw: i64, errors: &mut ValidationError) -> Option<StockLevel> {
    errors.check(StockLevel::parse(raw).map_err(|e| e.under(field)))
}

impl ProductRequest {
    pub fn create(
        req: &pb::CreateProductRequest,
        origin: &Origin,
    ) -> Result<Self, ValidationError> {
        let pb::CreateProductRequest {
            request_id,
            correlation_id: _,
            sku: raw_sku,
            name,
            unit_price: price,
            initial_stock,
            reorder_level,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let sku = sku(raw_sku, &mut errors);
        let name = errors.check(ProductName::parse(name).map_err(|e| e.under("name")));
        let unit_price = unit_price(price.as_ref(), &mut errors);
        let initial_stock = stock_level("initial_stock", *initial_stock, &mut errors);
        let reorder_level = stock_level("reorder_level", *reorder_level, &mut errors);
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (
            meta(request_id, hash, origin, None),
            sku,
            name,
            unit_price,
            initial_stock,
            reorder_level,
        ) {
            (
                Some(meta),
                Some(sku),
                Some(name),
                Some(unit_price),
                Some(initial_stock),
                Some(reorder_level),
            ) if errors.is_empty() => Ok(Self {
                meta,
                command: ProductCommand::Create {
                    sku,
                    name,
                    unit_price,
                    initial_stock,
                    reorder_level,
                },
            }),
            _ => Err(errors),
        }
    }

    pub fn restock(
        req: &pb::RestockProductRequest,
        origin: &Origin,
    ) -> Result<Self, ValidationError> {
        let pb::RestockProductRequest {
            request_id,
            correlation_id: _,
            sku: raw_sku,
            expected_version: raw_expected,
            quantity,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let sku = sku(raw_sku, &mut errors);
        let expected = expected_version(*raw_expected, &mut errors);
        let quantity = errors.check(Quantity::parse(*quantity).map_err(|e| e.under("quantity")));
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (meta(request_id, hash, origin, expected), sku, quantity) {
            (Some(meta), Some(sku), Some(quantity)) if errors.is_empty() => Ok(Self {
                meta,
                command: ProductCommand::Restock { sku, quantity },
            }),
            _ => Err(errors),
        }
    }

    pub fn change_price(
        req: &pb::ChangeProductPriceRequest,
        origin: &Origin,
    ) -> Result<Self, ValidationError> {
        let pb::ChangeProductPriceRequest {
            request_id,
            correlation_id: _,
            sku: raw_sku,
            expected_version: raw_expected,
            unit_price: price,
        } = req;
        let mut errors = ValidationError::default();
        let request_id = errors.check(RequestId::parse(request_id));
        let sku = sku(raw_sku, &mut errors);
        let expected = expected_version(*raw_expected, &mut errors);
        let unit_price = unit_price(price.as_ref(), &mut errors);
        let hash = request_hash(req, |r| {
            r.request_id.clear();
            r.correlation_id.clear();
        });
        match (meta(request_id, hash, origin, expected), sku, unit_price) {
            (Some(meta), Some(sku), Some(unit_price)) if errors.is_empty() => Ok(Self {
                meta,
                command: ProductCommand::ChangePrice { sku, unit_price },
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(correlation_id: &str) -> Origin {
        Origin {
            correlation_id: correlation_id.to_owned(),
            trace_parent: None,
        }
    }

    fn fields(err: &ValidationError) -> Vec<&str> {
        err.violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn create_user_reports_every_bad_field() {
        let err = CreateUser::parse(&pb::CreateUserRequest::default(), &origin("c"))
            .err()
            .unwrap();
        assert_eq!(fields(&err), ["request_id", "email", "name"]);
    }

    #[test]
    fn the_hash_ignores_request_and_correlation_ids_only() {
        let req = pb::CreateUserRequest {
            request_id: "r1".into(),
            correlation_id: "c1".into(),
            email: "a@example.com".into(),
            name: "A".into(),
        };
        let a = CreateUser::parse(&req, &origin("c1")).ok().unwrap();
        let b = CreateUser::parse(
            &pb::CreateUserRequest {
                request_id: "r2".into(),
                correlation_id: "c2".into(),
                ..req.clone()
            },
            &origin("c2"),
        )
        .ok()
        .unwrap();
        let c = CreateUser::parse(
            &pb::CreateUserRequest {
                name: "B".into(),
                ..req
            },
            &origin("c1"),
        )
        .ok()
        .unwrap();
        assert_eq!(a.meta.request_hash, b.meta.request_hash);
        assert_ne!(a.meta.request_hash, c.meta.request_hash);
    }

    #[test]
    fn update_profile_needs_a_known_mask() {
        let req = pb::UpdateUserProfileRequest {
            request_id: "r".into(),
            user_id: uuid::Uuid::new_v4().to_string(),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["name".into(), "age".into()],
            }),
            name: "Ann".into(),
            expected_version: Some(-1),
            ..Default::default()
        };
        let err = UpdateUserProfile::parse(&req, &origin("c")).err().unwrap();
        assert_eq!(fields(&err), ["expected_version", "update_mask.paths"]);
        let err = UpdateUserProfile::parse(
            &pb::UpdateUserProfileRequest {
                update_mask: None,
                expected_version: None,
                ..req
            },
            &origin("c"),
        )
        .err()
        .unwrap();
        assert_eq!(fields(&err), ["update_mask"]);
    }

    #[test]
    fn create_order_names_nested_item_fields() {
        let req = pb::CreateOrderRequest {
            request_id: "r".into(),
            user_id: "not-a-uuid".into(),
            items: vec![pb::OrderItem {
                sku: "x".into(),
                quantity: 0,
                unit_price: None,
            }],
            total: Some(pb::Money {
                currency_code: "USD".into(),
                amount_minor: -1,
            }),
            ..Default::default()
        };
        let err = CreateOrder::parse(&req, &origin("c")).err().unwrap();
        assert_eq!(
            fields(&err),
            [
                "user_id",
                "items[0].quantity",
                "items[0].unit_price",
                "total.amount_minor"
            ]
        );
        let err = CreateOrder::parse(
            &pb::CreateOrderRequest {
                items: vec![],
                user_id: uuid::Uuid::new_v4().to_string(),
                total: None,
                ..req
            },
            &origin("c"),
        )
        .err()
        .unwrap();
        assert_eq!(fields(&err), ["items"]);
    }

    #[test]
    fn update_status_rejects_unspecified() {
        let req = pb::UpdateOrderStatusRequest {
            request_id: "r".into(),
            order_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let err = UpdateOrderStatus::parse(&req, &origin("c")).err().unwrap();
        assert_eq!(fields(&err), ["status"]);
    }

    #[test]
    fn create_product_reports_every_bad_field() {
        let req = pb::CreateProductRequest {
            request_id: String::new(),
            sku: "no spaces".into(),
            name: " ".into(),
            unit_price: Some(pb::Money {
                currency_code: "eur".into(),
                amount_minor: -1,
            }),
            initial_stock: -1,
            reorder_level: 1_000_000_001,
            ..Default::default()
        };
        let err = ProductRequest::create(&req, &origin("c")).err().unwrap();
        assert_eq!(
            fields(&err),
            [
                "request_id",
                "sku",
                "name",
                "unit_price.currency_code",
                "unit_price.amount_minor",
                "initial_stock",
                "reorder_level",
            ]
        );
        let missing_price = pb::CreateProductRequest {
            request_id: "r".into(),
            sku: "MUG".into(),
            name: "Mug".into(),
            ..Default::default()
        };
        let err = ProductRequest::create(&missing_price, &origin("c"))
            .err()
            .unwrap();
        assert_eq!(fields(&err), ["unit_price"]);
    }

    #[test]
    fn restock_and_price_name_their_fields() {
        let restock = pb::RestockProductRequest {
            request_id: "r".into(),
            sku: String::new(),
            expected_version: Some(-1),
            quantity: 0,
            ..Default::default()
        };
        let err = ProductRequest::restock(&restock, &origin("c"))
            .err()
            .unwrap();
        assert_eq!(fields(&err), ["sku", "expected_version", "quantity"]);
        let price = pb::ChangeProductPriceRequest {
            request_id: "r".into(),
            sku: "MUG".into(),
            unit_price: None,
            ..Default::default()
        };
        let err = ProductRequest::change_price(&price, &origin("c"))
            .err()
            .unwrap();
        assert_eq!(fields(&err), ["unit_price"]);
    }

    #[test]
    fn a_purchase_names_each_bad_item_and_a_sku_given_twice() {
        let item = |sku: &str, quantity| pb::PurchaseItem {
            sku: sku.into(),
            quantity,
        };
        let req = pb::PurchaseProductsRequest {
            request_id: "r".into(),
            user_id: "nope".into(),
            items: vec![item("MUG", 1), item("bad sku", 0)],
            ..Default::default()
        };
        let err = PurchaseProducts::parse(&req, &origin("c")).err().unwrap();
        assert_eq!(
            fields(&err),
            ["user_id", "items[1].sku", "items[1].quantity"]
        );
        let twice = pb::PurchaseProductsRequest {
            request_id: "r".into(),
            user_id: uuid::Uuid::new_v4().to_string(),
            items: vec![item("MUG", 1), item("CUP", 1), item("MUG", 2)],
            ..Default::default()
        };
        let err = PurchaseProducts::parse(&twice, &origin("c")).err().unwrap();
        assert_eq!(fields(&err), ["items[2].sku"]);
        let none = pb::PurchaseProductsRequest {
            request_id: "r".into(),
            user_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let err = PurchaseProducts::parse(&none, &origin("c")).err().unwrap();
        assert_eq!(fields(&err), ["items"]);
    }
    fn stop(location: &str, sku: &str, quantity: i64) -> pb::RouteStop {
        pb::RouteStop {
            location: location.into(),
            sku: sku.into(),
            quantity,
        }
    }

    fn route(stops: Vec<pb::RouteStop>) -> pb::CreateRouteRequest {
        pb::CreateRouteRequest {
            request_id: "r".into(),
            order_id: uuid::Uuid::new_v4().to_string(),
            stops,
            distance_metres: 420,
            ..Default::default()
        }
    }

    #[test]
    fn create_route_reports_every_bad_field() {
        let req = pb::CreateRouteRequest {
            request_id: String::new(),
            order_id: "not-a-uuid".into(),
            stops: vec![stop("A01-01", "bad sku", 0), stop("Berlin, DE", "", 2)],
            distance_metres: 100_001,
            ..Default::default()
        };
        let err = CreateRoute::parse(&req, &origin("c")).err().unwrap();
        assert_eq!(
            fields(&err),
            [
                "request_id",
                "order_id",
                "stops[0].sku",
                "stops[0].quantity",
                "stops[1].quantity",
                "distance_metres",
            ]
        );
        // The stops' own rules, once each stop is a pick or the delivery.
        let err = CreateRoute::parse(
            &pb::CreateRouteRequest {
                stops: vec![
                    stop("Berlin, DE", "", 0),
                    stop(" ", "MUG", 1),
                    stop("A01-01\n", "CUP", 1),
                    stop(&"x".repeat(201), "PLATE", 1),
                ],
                distance_metres: -1,
                ..req.clone()
            },
            &origin("c"),
        )
        .err()
        .unwrap();
        assert_eq!(
            fields(&err),
            [
                "request_id",
                "order_id",
                "stops[0]",
                "stops[1].location",
                "stops[2].location",
                "stops[3].location",
                "distance_metres",
            ]
        );
        let none = CreateRoute::parse(&route(vec![]), &origin("c"))
            .err()
            .unwrap();
        assert_eq!(fields(&none), ["stops"]);
        let too_many = (0..=RouteStops::MAX)
            .map(|i| stop("A01-01", &format!("S-{i}"), 1))
            .collect();
        let err = CreateRoute::parse(&route(too_many), &origin("c"))
            .err()
            .unwrap();
        assert_eq!(fields(&err), ["stops"]);
    }

    #[test]
    fn a_good_route_parses_keeping_its_stops_and_distance() {
        let req = pb::CreateRouteRequest {
            correlation_id: "c".into(),
            ..route(vec![
                stop("A01-01", "MUG", 2),
                stop("B02-07", "CUP", 1_000_000),
                stop("Berlin, DE", "", 0),
            ])
        };
        let cmd = CreateRoute::parse(&req, &origin("c")).ok().unwrap();
        assert_eq!(cmd.meta.request_id.as_str(), "r");
        assert_eq!(cmd.meta.correlation_id, "c");
        assert_eq!(cmd.order_id.to_string(), req.order_id);
        assert_eq!(cmd.distance.metres(), 420);
        let stops: Vec<_> = cmd
            .stops
            .as_slice()
            .iter()
            .map(|s| {
                let (sku, quantity) = s
                    .pick
                    .as_ref()
                    .map_or(("", 0), |(sku, n)| (sku.as_str(), n.get()));
                (s.location.as_str(), sku, quantity)
            })
            .collect();
        assert_eq!(
            stops,
            [
                ("A01-01", "MUG", 2),
                ("B02-07", "CUP", 1_000_000),
                ("Berlin, DE", "", 0),
            ]
        );
        // The limits themselves: 26 stops, 0 and 100,000 metres; a route
        // of picks only, or of the delivery only.
        let most: Vec<_> = (0..RouteStops::MAX)
            .map(|i| stop("A01-01", &format!("S-{i}"), 1))
            .collect();
        for (stops, distance_metres) in [
            (most, 100_000),
            (vec![stop("A01-01", "MUG", 1)], 0),
            (vec![stop("Berlin, DE", "", 0)], 0),
        ] {
            let req = pb::CreateRouteRequest {
                distance_metres,
                ..route(stops)
            };
            assert!(CreateRoute::parse(&req, &origin("c")).is_ok(), "{req:?}");
        }
    }

    #[test]
    fn the_delivery_has_no_quantity_and_comes_last() {
        let err = CreateRoute::parse(
            &route(vec![stop("A01-01", "MUG", 1), stop("Berlin, DE", "", 1)]),
            &origin("c"),
        )
        .err()
        .unwrap();
        assert_eq!(fields(&err), ["stops[1].quantity"]);
        let err = CreateRoute::parse(
            &route(vec![stop("Berlin, DE", "", 0), stop("A01-01", "MUG", 1)]),
            &origin("c"),
        )
        .err()
        .unwrap();
        assert_eq!(fields(&err), ["stops[0]"]);
        // Two deliveries: the first is not last.
        let err = CreateRoute::parse(
            &route(vec![
                stop("A01-01", "MUG", 1),
                stop("Berlin, DE", "", 0),
                stop("Paris, FR", "", 0),
            ]),
            &origin("c"),
        )
        .err()
        .unwrap();
        assert_eq!(fields(&err), ["stops[1]"]);
    }

    #[test]
    fn a_route_picks_each_sku_once() {
        let err = CreateRoute::parse(
            &route(vec![
                stop("A01-01", "MUG", 1),
                stop("B02-07", "CUP", 1),
                stop("C03-01", "MUG", 2),
                stop("Berlin, DE", "", 0),
            ]),
            &origin("c"),
        )
        .err()
        .unwrap();
        assert_eq!(fields(&err), ["stops[2].sku"]);
        // Skus are case-sensitive, as a product's are.
        assert!(
            CreateRoute::parse(
                &route(vec![stop("A01-01", "MUG", 1), stop("B02-07", "mug", 1)]),
                &origin("c"),
            )
            .is_ok()
        );
    }
}
