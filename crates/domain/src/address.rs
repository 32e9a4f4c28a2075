//! A shipping address: the field that `OrderCreated` gained in its schema
//! version 2.

use super::{FieldViolation, ValidationError};

/// Where an order is shipped to. Every text is trimmed; field paths in
/// errors are relative to the address (`country_code`). Boxed: the commands
/// and events that carry one stay small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShippingAddress(Box<Parts>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Parts {
    recipient: String,
    line1: String,
    line2: String,
    city: String,
    postal_code: String,
    country_code: String,
}

/// The parts of an address as a request or an event carries them, before
/// they are checked.
#[derive(Clone, Copy, Debug, Default)]
pub struct AddressParts<'a> {
    pub recipient: &'a str,
    pub line1: &'a str,
    pub line2: &'a str,
    pub city: &'a str,
    pub postal_code: &'a str,
    pub country_code: &'a str,
}

impl ShippingAddress {
    pub fn parse(parts: AddressParts<'_>) -> Result<Self, ValidationError> {
        let mut errors = ValidationError::default();
        let mut text = |field: &str, raw: &str, required: bool, max: usize| {
            let value = raw.trim();
            let problem = if required && value.is_empty() {
                Some("is required".to_owned())
            } else if value.chars().count() > max {
                Some(format!("must be at most {max} characters"))
            } else if value.chars().any(char::is_control) {
                Some("must not contain control characters".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                errors.push(FieldViolation::new(field, problem));
            }
            value.to_owned()
        };
        let recipient = text("recipient", parts.recipient, true, 200);
        let line1 = text("line1", parts.line1, true, 200);
        let line2 = text("line2", parts.line2, false, 200);
        let city = text("city", parts.city, true, 100);
        let postal_code = text("postal_code", parts.postal_code, false, 16);
        let country_code = parts.country_code;
        if country_code.len() != 2 || !country_code.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.push(FieldViolation::new(
                "country_code",
                "must be an ISO 3166-1 alpha-2 code: two upper-case letters, for example DE",
            ));
        }
        errors.into_result()?;
        Ok(Self(Box::new(Parts {
            recipient,
            line1,
            line2,
            city,
            postal_code,
            country_code: country_code.to_owned(),
        })))
    }

    pub fn parts(&self) -> AddressParts<'_> {
        let Parts {
            recipient,
            line1,
            line2,
            city,
            postal_code,
            country_code,
        } = &*self.0;
        AddressParts {
            recipient,
            line1,
            line2,
            city,
            postal_code,
            country_code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AddressParts<'static> {
        AddressParts {
            recipient: " Ann Smith ",
            line1: "Hauptstraße 1",
            line2: "",
            city: "Berlin",
            postal_code: "10115",
            country_code: "DE",
        }
    }

    #[test]
    fn a_valid_address_is_trimmed() {
        let address = ShippingAddress::parse(valid()).unwrap();
        assert_eq!(address.parts().recipient, "Ann Smith");
        assert_eq!(address.parts().line2, "");
    }

    #[test]
    fn every_bad_part_is_named() {
        let err = ShippingAddress::parse(AddressParts {
            recipient: " ",
            line1: "",
            line2: &"x".repeat(201),
            city: "Ber\u{7}lin",
            postal_code: &"1".repeat(17),
            country_code: "de",
        })
        .unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "recipient",
                "line1",
                "line2",
                "city",
                "postal_code",
                "country_code"
            ]
        );
    }

    #[test]
    fn optional_parts_may_be_empty() {
        let address = ShippingAddress::parse(AddressParts {
            postal_code: "",
            ..valid()
        })
        .unwrap();
        assert_eq!(address.parts().postal_code, "");
    }
}
