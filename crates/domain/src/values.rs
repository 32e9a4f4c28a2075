//! Value types, each parsed once at the edge ("parse, don't validate").
//! Errors name the field relative to the value; callers nest them with
//! [`ValidationError::under`].

use std::fmt;

use super::ValidationError;

/// A normalised email address: trimmed and lower-cased, so that two spellings
/// of one address cannot belong to two users.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let fail = |why: &str| Err(ValidationError::single("", why));
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return fail("is required");
        }
        if email.len() > Self::MAX_LEN {
            return fail("must be at most 254 characters");
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return fail("must be an email address like name@example.com");
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return fail("must be an email address like name@example.com");
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's display name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserName(String);

/// A name shown to people (a user's, a product's): trimmed, 1 to
/// `max_chars` characters, no control characters.
pub(crate) fn display_name(raw: &str, max_chars: usize) -> Result<String, ValidationError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ValidationError::single("", "must not be empty"));
    }
    if name.chars().count() > max_chars {
        return Err(ValidationError::single(
            "",
            format!("must be at most {max_chars} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::single(
            "",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

impl UserName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        display_name(raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's stock-keeping unit: 1 to 64 of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::single("", "is required"));
        }
        if raw.len() > 64
            || !raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ValidationError::single(
                "",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many units of an item: 1 to 1,000,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 1_000_000;

    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(ValidationError::single("", "must be between 1 and 1000000"));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(ValidationError::single(
                "",
                "must be a three-letter ISO 4217 code like USD",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored, see `parse`.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exact, non-negative amount of money in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub currency: Currency,
    pub amount_minor: i64,
}

impl Money {
    pub fn new(currency: Currency, amount_minor: i64) -> Result<Self, ValidationError> {
        if amount_minor < 0 {
            return Err(ValidationError::single(
                "amount_minor",
                "must be at least 0",
            ));
        }
        Ok(Self {
            currency,
            amount_minor,
        })
    }

    pub fn parse(currency_code: &str, amount_minor: i64) -> Result<Self, ValidationError> {
        let mut errors = ValidationError::default();
        let currency =
            errors.check(Currency::parse(currency_code).map_err(|e| e.under("currency_code")));
        if amount_minor < 0 {
            errors.push(super::FieldViolation::new(
                "amount_minor",
                "must be at least 0",
            ));
        }
        errors.into_result()?;
        // Both checks passed, so the currency is present.
        let currency =
            currency.ok_or_else(|| ValidationError::single("currency_code", "is required"))?;
        Ok(Self {
            currency,
            amount_minor,
        })
    }

    /// `self * quantity`, or `None` on overflow.
    pub fn times(self, quantity: Quantity) -> Option<Money> {
        Some(Money {
            currency: self.currency,
            amount_minor: self.amount_minor.checked_mul(quantity.get())?,
        })
    }

    /// `self + other` in the same currency, or `None` on overflow or a
    /// currency mismatch.
    pub fn plus(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money {
            currency: self.currency,
            amount_minor: self.amount_minor.checked_add(other.amount_minor)?,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let email = Email::parse("  John.Doe@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "john.doe@example.com");
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for raw in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "a@",
            "a@localhost",
            "a@@example.com",
            "a b@example.com",
            ".a@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example..com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn name_has_bounds() {
        assert!(UserName::parse("").is_err());
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
        assert!(UserName::parse(&"é".repeat(200)).is_ok());
        assert!(UserName::parse(&"é".repeat(201)).is_err());
        assert_eq!(UserName::parse(" Ann ").unwrap().as_str(), "Ann");
    }

    #[test]
    fn money_rejects_negative_amounts_and_bad_currencies() {
        let err = Money::parse("usd", -1).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["currency_code", "amount_minor"]);
        assert!(Money::parse("USD", 0).is_ok());
    }

    #[test]
    fn money_arithmetic_is_checked() {
        let usd = Currency::parse("USD").unwrap();
        let eur = Currency::parse("EUR").unwrap();
        let big = Money::new(usd, i64::MAX / 2 + 1).unwrap();
        assert!(big.times(Quantity::parse(2).unwrap()).is_none());
        assert!(big.plus(big).is_none());
        assert!(
            Money::new(usd, 1)
                .unwrap()
                .plus(Money::new(eur, 1).unwrap())
                .is_none()
        );
        assert_eq!(
            Money::new(usd, 1999)
                .unwrap()
                .times(Quantity::parse(3).unwrap()),
            Some(Money::new(usd, 5997).unwrap())
        );
    }

    #[test]
    fn quantity_and_sku_bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(1).is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("laptop 13").is_err());
        assert!(Sku::parse("LAPTOP-13_in.v2").is_ok());
    }
}
