use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::ValidationError;

/// The namespace of the ids creates derive from their request ids. Fixed
/// forever: a new one would give a retried create a new aggregate.
pub const CREATE_NAMESPACE: Uuid = Uuid::from_u128(0x6d1b_0c3e_4f8a_5b27_9e41_d2c6_a7f0_3b58);

macro_rules! aggregate_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The id a create with this request id gives its aggregate:
            /// name-based (UUID v5, [`CREATE_NAMESPACE`]), so that a retry of
            /// the create names the same aggregate, and finds the event the
            /// first attempt appended.
            pub fn for_request(request_id: &str) -> Self {
                Self(Uuid::new_v5(&CREATE_NAMESPACE, request_id.as_bytes()))
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// Parses the id a client sent in `field`.
            pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
                if raw.is_empty() {
                    return Err(ValidationError::single(field, "is required"));
                }
                Uuid::from_str(raw)
                    .map(Self)
                    .map_err(|_| ValidationError::single(field, "must be a UUID"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

aggregate_id!(
    /// The id of a user aggregate.
    UserId
);
aggregate_id!(
    /// The id of an order aggregate.
    OrderId
);
aggregate_id!(
    /// The id of a product aggregate: derived from its sku
    /// ([`ProductId::for_sku`]), so that a sku names one product.
    ProductId
);
aggregate_id!(
    /// The id of a purchase: derived from the request that asked for it.
    PurchaseId
);
aggregate_id!(
    /// The id of an order's route: derived from the order's
    /// ([`crate::route_id_for`]).
    RouteId
);

/// The namespace of the ids products derive from their skus. Fixed forever:
/// a new one would give every sku a second product.
pub const PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x2f7c_9a14_83d6_5e0b_a1c8_64f2_0d9e_7b35);

impl ProductId {
    /// The product `sku` names: name-based (UUID v5,
    /// [`PRODUCT_NAMESPACE`]), so commands and purchases address a product
    /// by its sku without a lookup, and a second create of a sku meets the
    /// first.
    pub fn for_sku(sku: &crate::Sku) -> Self {
        Self(Uuid::new_v5(&PRODUCT_NAMESPACE, sku.as_str().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_s_id_is_its_request_id_s_always_and_only() {
        assert_eq!(UserId::for_request("r1"), UserId::for_request("r1"));
        assert_ne!(UserId::for_request("r1"), UserId::for_request("r2"));
        // The same request id names the same aggregate whatever its type,
        // so that a request id used for two creates is seen as reused.
        assert_eq!(
            UserId::for_request("r1").as_uuid(),
            OrderId::for_request("r1").as_uuid()
        );
        // Pinned: a changed namespace would break every retry across it.
        assert_eq!(
            UserId::for_request("cmd-001").to_string(),
            "b360daf6-58d0-5c00-abe3-be1a85ba7096"
        );
        assert_eq!(UserId::for_request("r1").as_uuid().get_version_num(), 5);
    }

    #[test]
    fn a_sku_names_one_product_always() {
        let sku = |raw| crate::Sku::parse(raw).unwrap();
        assert_eq!(
            ProductId::for_sku(&sku("A-1")),
            ProductId::for_sku(&sku("A-1"))
        );
        assert_ne!(
            ProductId::for_sku(&sku("A-1")),
            ProductId::for_sku(&sku("a-1"))
        );
        // Not the id a create with the same request id would get.
        assert_ne!(
            ProductId::for_sku(&sku("A-1")).as_uuid(),
            UserId::for_request("A-1").as_uuid()
        );
        // Pinned: a changed namespace would give every sku a new product.
        assert_eq!(
            ProductId::for_sku(&sku("SKU-1")).to_string(),
            "f55a45e2-0bc0-5229-b259-0b50885775b0"
        );
    }
}
