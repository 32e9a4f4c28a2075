//! The route itself, pure: where each sku lies in the warehouse, the order
//! the picks are walked in, the path's length, and the delivery.
//!
//! The warehouse is a grid of [`AISLES`] aisles of [`BAYS`] bays each,
//! entered at the dock before aisle 1. A sku's place is fixed by its name
//! (a hash), as a slotting table would fix it. The picker walks the aisles
//! in order, up one aisle and down the next (the S-shape, or serpentine,
//! heuristic), and back to the dock.

use dynabridge::pb;
use dynabridge_domain::{Event, OrderLine, ShippingAddress};
use sha2::{Digest, Sha256};

/// Aisles in the warehouse.
pub const AISLES: u32 = 20;
/// Bays along each aisle.
pub const BAYS: u32 = 40;
/// Metres from one aisle to the next.
const AISLE_PITCH_M: u32 = 4;
/// Metres from one bay to the next.
const BAY_PITCH_M: u32 = 2;

/// Where a sku is picked: its aisle and bay, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub aisle: u32,
    pub bay: u32,
}

impl Slot {
    pub fn of(sku: &str) -> Self {
        let digest = Sha256::digest(sku.as_bytes());
        let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        Self {
            aisle: n % AISLES + 1,
            bay: (n / AISLES) % BAYS + 1,
        }
    }

    /// `A03-12`: aisle 3 (A for aisle), bay 12.
    pub fn label(self) -> String {
        format!("A{:02}-{:02}", self.aisle, self.bay)
    }

    /// Metres from the dock's corner, along the aisles and across them.
    fn point(self) -> (u32, u32) {
        (self.aisle * AISLE_PITCH_M, self.bay * BAY_PITCH_M)
    }
}

/// A planned route, as `CreateRoute` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub stops: Vec<pb::RouteStop>,
    pub distance_metres: i64,
}

/// The route of an order's lines: every line picked once, the aisles walked
/// in order, up the odd ones and down the even ones; then the delivery, if
/// the order has an address.
pub fn plan(lines: &[OrderLine], address: Option<&ShippingAddress>) -> Plan {
    let mut picks: Vec<(Slot, &OrderLine)> = lines
        .iter()
        .map(|line| (Slot::of(line.sku.as_str()), line))
        .collect();
    picks.sort_by(|(a, line_a), (b, line_b)| {
        let up = |slot: &Slot| {
            if slot.aisle % 2 == 1 {
                slot.bay
            } else {
                BAYS + 1 - slot.bay
            }
        };
        (a.aisle, up(a), line_a.sku.as_str()).cmp(&(b.aisle, up(b), line_b.sku.as_str()))
    });
    let dock: (u32, u32) = (0, 0);
    let mut at = dock;
    let mut distance: u32 = 0;
    for (slot, _) in &picks {
        let next = slot.point();
        distance += at.0.abs_diff(next.0) + at.1.abs_diff(next.1);
        at = next;
    }
    distance += at.0.abs_diff(dock.0) + at.1.abs_diff(dock.1);
    let mut stops: Vec<pb::RouteStop> = picks
        .into_iter()
        .map(|(slot, line)| pb::RouteStop {
            location: slot.label(),
            sku: line.sku.as_str().to_owned(),
            quantity: line.quantity.get(),
        })
        .collect();
    if let Some(address) = address {
        stops.push(pb::RouteStop {
            location: {
                let parts = address.parts();
                format!("{}, {}", parts.city, parts.country_code)
            },
            sku: String::new(),
            quantity: 0,
        });
    }
    Plan {
        stops,
        distance_metres: distance.into(),
    }
}

/// The plan of an `OrderCreated`; none for any other event.
pub fn plan_for(event: &Event) -> Option<Plan> {
    match event {
        Event::OrderCreated {
            items,
            shipping_address,
            ..
        } => Some(plan(items, shipping_address.as_ref())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynabridge_domain::{AddressParts, Currency, Money, Quantity, Sku};

    fn line(sku: &str, quantity: i64) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::parse(quantity).unwrap(),
            unit_price: Money::new(Currency::parse("EUR").unwrap(), 100).unwrap(),
        }
    }

    #[test]
    fn every_line_is_picked_once_in_serpentine_order_then_delivered() {
        let lines: Vec<_> = (0..25).map(|i| line(&format!("SKU-{i}"), i + 1)).collect();
        let address = ShippingAddress::parse(AddressParts {
            recipient: "Ann",
            line1: "Main St 1",
            line2: "",
            city: "Berlin",
            postal_code: "10115",
            country_code: "DE",
        })
        .unwrap();
        let plan = plan(&lines, Some(&address));
        assert_eq!(plan.stops.len(), 26);
        let delivery = plan.stops.last().unwrap();
        assert_eq!(
            (delivery.location.as_str(), delivery.sku.as_str()),
            ("Berlin, DE", "")
        );
        let picks = &plan.stops[..25];
        let mut skus: Vec<_> = picks.iter().map(|s| s.sku.clone()).collect();
        skus.sort();
        skus.dedup();
        assert_eq!(skus.len(), 25, "each line once");
        for stop in picks {
            let quantity: i64 = stop.sku["SKU-".len()..].parse::<i64>().unwrap() + 1;
            assert_eq!(stop.quantity, quantity);
            assert_eq!(stop.location, Slot::of(&stop.sku).label());
        }
        // Aisles in order; up an odd aisle, down an even one.
        let slots: Vec<Slot> = picks.iter().map(|s| Slot::of(&s.sku)).collect();
        for pair in slots.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(a.aisle <= b.aisle, "{slots:?}");
            if a.aisle == b.aisle {
                if a.aisle % 2 == 1 {
                    assert!(a.bay <= b.bay, "{slots:?}");
                } else {
                    assert!(a.bay >= b.bay, "{slots:?}");
                }
            }
        }
        // The walk is at least out to the farthest aisle and back.
        let farthest = slots.iter().map(|s| s.aisle).max().unwrap();
        assert!(plan.distance_metres >= i64::from(2 * farthest * AISLE_PITCH_M));
        assert!(plan.distance_metres <= 100_000);
    }

    #[test]
    fn the_plan_depends_on_the_lines_alone() {
        let a = plan(&[line("A-1", 1), line("B-2", 2)], None);
        let b = plan(&[line("B-2", 2), line("A-1", 1)], None);
        assert_eq!(a, b, "the same lines in another order: the same route");
        assert!(
            a.stops.iter().all(|s| !s.sku.is_empty()),
            "no address, no delivery"
        );
        let one = plan(&[line("A-1", 1)], None);
        let slot = Slot::of("A-1");
        let (x, y) = slot.point();
        assert_eq!(
            one.distance_metres,
            i64::from(2 * (x + y)),
            "there and back"
        );
        assert!(slot.aisle >= 1 && slot.aisle <= AISLES && slot.bay >= 1 && slot.bay <= BAYS);
    }
}
