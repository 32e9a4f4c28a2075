//! A DynamoDB item as the SDK hands it over, and reading its typed
//! attributes: what the event store's codec and the read models' codecs
//! share.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

pub type Item = HashMap<String, AttributeValue>;

/// An attribute missing, or not of the type asked for.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AttributeError(pub String);

/// The string attribute `name`.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, AttributeError> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(AttributeError(format!("missing string attribute {name}"))),
    }
}

/// The number attribute `name`, as an integer.
pub fn get_n(item: &Item, name: &str) -> Result<i64, AttributeError> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse()
            .map_err(|_| AttributeError(format!("attribute {name} is not an integer"))),
        _ => Err(AttributeError(format!("missing number attribute {name}"))),
    }
}
