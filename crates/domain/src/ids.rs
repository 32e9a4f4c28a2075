use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::ValidationError;

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
