//! A route: how an order's items are picked in the warehouse and where it
//! goes, planned by a service downstream of the bus (the route planner,
//! seed 000) and recorded here, so that its `RouteCreated` is an event like
//! any other: stored, projected, published. An order has one route at most:
//! the route's id derives from the order's.

use uuid::Uuid;

use super::{
    DomainError, Event, FieldViolation, OrderId, Quantity, RouteId, Sku, ValidationError, Version,
};

/// The id of an order's route: name-based on the order's id, so that a
/// second plan of the same order meets the first.
pub fn route_id_for(order_id: OrderId) -> RouteId {
    RouteId::from_uuid(Uuid::new_v5(
        &crate::CREATE_NAMESPACE,
        format!("order-route/{order_id}").as_bytes(),
    ))
}

/// One stop of a route: a pick of `quantity` units of `sku` at a warehouse
/// location, or (neither set) the delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStop {
    /// A warehouse location (`A03-12`), or the delivery's place.
    pub location: String,
    pub pick: Option<(Sku, Quantity)>,
}

impl RouteStop {
    pub const MAX_LOCATION_CHARS: usize = 200;
}

/// A route's stops: 1 to [`RouteStops::MAX`], the picks first, each sku
/// picked once, and at most one delivery, last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStops(Vec<RouteStop>);

impl RouteStops {
    /// An order's 25 items at most, and its delivery.
    pub const MAX: usize = 26;

    /// Checks the stops; each violation names its field
    /// (`stops[2].location`).
    pub fn parse(stops: Vec<RouteStop>) -> Result<Self, ValidationError> {
        let mut errors = ValidationError::default();
        if stops.is_empty() || stops.len() > Self::MAX {
            errors.push(FieldViolation::new(
                "stops",
                format!("must have 1 to {} stops", Self::MAX),
            ));
        }
        let mut skus = std::collections::HashSet::new();
        for (index, stop) in stops.iter().enumerate() {
            let chars = stop.location.chars().count();
            if stop.location.trim().is_empty()
                || chars > RouteStop::MAX_LOCATION_CHARS
                || stop.location.chars().any(char::is_control)
            {
                errors.push(FieldViolation::new(
                    format!("stops[{index}].location"),
                    format!(
                        "must be 1 to {} characters, not blank, without control characters",
                        RouteStop::MAX_LOCATION_CHARS
                    ),
                ));
            }
            match &stop.pick {
                Some((sku, _)) if !skus.insert(sku.as_str()) => {
                    errors.push(FieldViolation::new(
                        format!("stops[{index}].sku"),
                        "is picked at an earlier stop already",
                    ));
                }
                Some(_) => {}
                None if index + 1 != stops.len() => errors.push(FieldViolation::new(
                    format!("stops[{index}]"),
                    "a delivery (no sku) must be the last stop",
                )),
                None => {}
            }
        }
        errors.into_result().map(|()| Self(stops))
    }

    pub fn as_slice(&self) -> &[RouteStop] {
        &self.0
    }
}

/// A route's length through the warehouse, in metres: 0 to
/// [`Distance::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Distance(u32);

impl Distance {
    /// A hundred kilometres: no pick path is longer.
    pub const MAX: u32 = 100_000;

    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        u32::try_from(raw)
            .ok()
            .filter(|metres| *metres <= Self::MAX)
            .map(Self)
            .ok_or_else(|| ValidationError::single("", "must be between 0 and 100000 metres"))
    }

    pub fn metres(self) -> u32 {
        self.0
    }
}

/// A route as the command side sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub state: Option<RouteState>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteState {
    pub id: RouteId,
    pub order_id: OrderId,
    pub stops: RouteStops,
    pub distance: Distance,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteCommand {
    /// Records the route planned for an order. Its id derives from the
    /// order's ([`route_id_for`]).
    Create {
        order_id: OrderId,
        stops: RouteStops,
        distance: Distance,
    },
}

impl Route {
    pub fn decide(&self, command: &RouteCommand) -> Result<Vec<Event>, DomainError> {
        let RouteCommand::Create {
            order_id,
            stops,
            distance,
        } = command;
        if self.state.is_some() {
            return Err(DomainError::AlreadyExists {
                kind: "route",
                id: order_id.to_string(),
            });
        }
        Ok(vec![Event::RouteCreated {
            route_id: route_id_for(*order_id),
            order_id: *order_id,
            stops: stops.clone(),
            distance: *distance,
        }])
    }

    /// Folds one event. Events of other aggregates are ignored.
    pub fn apply(mut self, event: &Event) -> Self {
        let Event::RouteCreated {
            route_id,
            order_id,
            stops,
            distance,
        } = event
        else {
            return self;
        };
        self.state = Some(RouteState {
            id: *route_id,
            order_id: *order_id,
            stops: stops.clone(),
            distance: *distance,
        });
        self.version += 1;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(location: &str, sku: &str, quantity: i64) -> RouteStop {
        RouteStop {
            location: location.to_owned(),
            pick: Some((Sku::parse(sku).unwrap(), Quantity::parse(quantity).unwrap())),
        }
    }

    fn delivery(location: &str) -> RouteStop {
        RouteStop {
            location: location.to_owned(),
            pick: None,
        }
    }

    fn fields(err: ValidationError) -> Vec<String> {
        err.violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn stops_are_picks_then_at_most_one_delivery() {
        let stops = RouteStops::parse(vec![
            pick("A01-01", "A-1", 2),
            pick("B02-07", "B-2", 1),
            delivery("Berlin, DE"),
        ])
        .unwrap();
        assert_eq!(stops.as_slice().len(), 3);
        assert!(RouteStops::parse(vec![pick("A01-01", "A-1", 2)]).is_ok());

        let err = RouteStops::parse(vec![
            delivery("Berlin, DE"),
            pick("A01-01", "A-1", 2),
            pick(" ", "A-1", 1),
        ])
        .unwrap_err();
        assert_eq!(
            fields(err),
            ["stops[0]", "stops[2].location", "stops[2].sku"]
        );
        assert_eq!(
            fields(RouteStops::parse(Vec::new()).unwrap_err()),
            ["stops"]
        );
        let many = (0..=RouteStops::MAX)
            .map(|i| pick("A01-01", &format!("S-{i}"), 1))
            .collect();
        assert_eq!(fields(RouteStops::parse(many).unwrap_err()), ["stops"]);
        let long = "x".repeat(RouteStop::MAX_LOCATION_CHARS + 1);
        assert_eq!(
            fields(RouteStops::parse(vec![delivery(&long)]).unwrap_err()),
            ["stops[0].location"]
        );
    }

    #[test]
    fn distance_is_bounded() {
        assert_eq!(Distance::parse(0).unwrap().metres(), 0);
        assert_eq!(Distance::parse(100_000).unwrap().metres(), 100_000);
        assert!(Distance::parse(-1).is_err());
        assert!(Distance::parse(100_001).is_err());
        assert!(Distance::parse(i64::MAX).is_err());
    }

    #[test]
    fn an_order_has_one_route() {
        let order_id = OrderId::for_request("o-1");
        let create = RouteCommand::Create {
            order_id,
            stops: RouteStops::parse(vec![pick("A01-01", "A-1", 2)]).unwrap(),
            distance: Distance::parse(42).unwrap(),
        };
        let events = Route::default().decide(&create).unwrap();
        assert_eq!(events.len(), 1);
        let Event::RouteCreated { route_id, .. } = &events[0] else {
            panic!("{events:?}");
        };
        assert_eq!(*route_id, route_id_for(order_id));
        assert_ne!(
            route_id_for(order_id),
            route_id_for(OrderId::for_request("o-2"))
        );

        let route = events.iter().fold(Route::default(), Route::apply);
        assert_eq!(route.version, 1);
        assert_eq!(route.state.as_ref().unwrap().order_id, order_id);
        assert!(matches!(
            route.decide(&create),
            Err(DomainError::AlreadyExists { kind: "route", .. })
        ));
        // Another aggregate's events leave it as it is.
        let other = Event::OrderStatusUpdated {
            order_id,
            status: crate::OrderStatus::Shipped,
            previous_status: crate::OrderStatus::Processing,
        };
        assert_eq!(route.clone().apply(&other), route);
    }
}
