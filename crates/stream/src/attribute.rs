//! Stream images to event store items.
//!
//! The streams SDK has its own `AttributeValue` type, identical in shape to
//! the DynamoDB one; the event codec takes the DynamoDB one.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as ItemValue;
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use dynabridge_aws::item::Item;

/// An attribute of a type this SDK does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("attribute {0:?} has a type this build does not know")]
pub struct UnknownAttribute(pub String);

pub fn image_to_item(image: &HashMap<String, StreamValue>) -> Result<Item, UnknownAttribute> {
    image
        .iter()
        .map(|(name, value)| {
            to_item_value(value)
                .map(|v| (name.clone(), v))
                .ok_or_else(|| UnknownAttribute(name.clone()))
        })
        .collect()
}

fn to_item_value(value: &StreamValue) -> Option<ItemValue> {
    Some(match value {
        StreamValue::S(s) => ItemValue::S(s.clone()),
        StreamValue::N(n) => ItemValue::N(n.clone()),
        StreamValue::B(b) => ItemValue::B(b.clone()),
        StreamValue::Bool(b) => ItemValue::Bool(*b),
        StreamValue::Null(n) => ItemValue::Null(*n),
        StreamValue::M(m) => ItemValue::M(
            m.iter()
                .map(|(k, v)| to_item_value(v).map(|v| (k.clone(), v)))
                .collect::<Option<_>>()?,
        ),
        StreamValue::L(l) => ItemValue::L(l.iter().map(to_item_value).collect::<Option<_>>()?),
        StreamValue::Ss(ss) => ItemValue::Ss(ss.clone()),
        StreamValue::Ns(ns) => ItemValue::Ns(ns.clone()),
        StreamValue::Bs(bs) => ItemValue::Bs(bs.clone()),
        // `Unknown`, and whatever variant a newer SDK adds.
        _ => return None,
    })
}

/// The reverse, for building stream records in tests.
#[cfg(any(test, feature = "testing"))]
pub fn item_to_image(item: &Item) -> HashMap<String, StreamValue> {
    fn one(value: &ItemValue) -> StreamValue {
        match value {
            ItemValue::S(s) => StreamValue::S(s.clone()),
            ItemValue::N(n) => StreamValue::N(n.clone()),
            ItemValue::B(b) => StreamValue::B(b.clone()),
            ItemValue::Bool(b) => StreamValue::Bool(*b),
            ItemValue::Null(n) => StreamValue::Null(*n),
            ItemValue::M(m) => StreamValue::M(m.iter().map(|(k, v)| (k.clone(), one(v))).collect()),
            ItemValue::L(l) => StreamValue::L(l.iter().map(one).collect()),
            ItemValue::Ss(ss) => StreamValue::Ss(ss.clone()),
            ItemValue::Ns(ns) => StreamValue::Ns(ns.clone()),
            ItemValue::Bs(bs) => StreamValue::Bs(bs.clone()),
            other => panic!("no stream form for {other:?}"),
        }
    }
    item.iter().map(|(k, v)| (k.clone(), one(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;

    #[test]
    fn every_attribute_type_converts() {
        let nested = HashMap::from([("inner".to_owned(), ItemValue::N("1.5".into()))]);
        let item: Item = HashMap::from([
            ("s".to_owned(), ItemValue::S("text".into())),
            ("n".to_owned(), ItemValue::N("42".into())),
            ("b".to_owned(), ItemValue::B(Blob::new(vec![1, 2, 3]))),
            ("bool".to_owned(), ItemValue::Bool(true)),
            ("null".to_owned(), ItemValue::Null(true)),
            ("m".to_owned(), ItemValue::M(nested.clone())),
            (
                "l".to_owned(),
                ItemValue::L(vec![ItemValue::S("a".into()), ItemValue::M(nested)]),
            ),
            ("ss".to_owned(), ItemValue::Ss(vec!["x".into(), "y".into()])),
            ("ns".to_owned(), ItemValue::Ns(vec!["1".into(), "2".into()])),
            ("bs".to_owned(), ItemValue::Bs(vec![Blob::new(vec![9])])),
        ]);
        let image = item_to_image(&item);
        assert_eq!(image.len(), 10);
        assert_eq!(image_to_item(&image), Ok(item));
    }
}
