//! Access to the two read models, `user-profiles` and `order-summaries`.
//!
//! Architecture invariant: the query service never reads the event store.
//! [`ReadModelReader`] is the only thing here that talks to the store, and it is
//! handed the names of the two read-model tables and nothing else.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use dynabridge::schema::{Tables, order_summaries, read_model, user_profiles};
use dynabridge_domain::{Email, OrderId, OrderStatus, UserId};
use dynabridge_read_models::{Item, OrderSummaryRow, RowError, UserProfileRow};
use dynabridge_runtime::error::{AppError, from_sdk_error};

use crate::generation::ServedGeneration;

/// Where a page of orders resumes: the `LastEvaluatedKey` of a query on one of
/// the order indexes. All its attributes are strings.
pub type PageKey = BTreeMap<String, String>;

/// A listing of orders, newest first, over one of the two order indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderListing {
    ByUser(UserId),
    ByStatus(OrderStatus),
}

impl OrderListing {
    fn index(&self) -> &'static str {
        match self {
            Self::ByUser(_) => order_summaries::USER_ID_INDEX,
            Self::ByStatus(_) => order_summaries::STATUS_INDEX,
        }
    }

    fn hash_attribute(&self) -> &'static str {
        match self {
            Self::ByUser(_) => order_summaries::USER_ID,
            Self::ByStatus(_) => order_summaries::STATUS,
        }
    }

    fn hash_value(&self) -> String {
        match self {
            Self::ByUser(user_id) => user_id.to_string(),
            Self::ByStatus(status) => status.as_str().to_owned(),
        }
    }

    /// Names the query, so that a page token is only accepted by the query
    /// that issued it.
    pub fn fingerprint(&self) -> String {
        match self {
            Self::ByUser(user_id) => format!("ListOrdersByUser/{user_id}"),
            Self::ByStatus(status) => format!("ListOrdersByStatus/{}", status.as_str()),
        }
    }

    /// Whether `key` can be where a page of this listing resumes: exactly the
    /// table key and the index key, in this listing's partition.
    pub fn accepts(&self, key: &PageKey) -> bool {
        let names = [
            order_summaries::ORDER_ID,
            self.hash_attribute(),
            read_model::CREATED_AT,
        ];
        key.len() == names.len()
            && names.iter().all(|name| key.contains_key(*name))
            && key.get(self.hash_attribute()) == Some(&self.hash_value())
    }

    /// The key a page ending at `item` resumes after.
    fn key_of(&self, item: &Item) -> Result<PageKey, RowError> {
        [
            order_summaries::ORDER_ID,
            self.hash_attribute(),
            read_model::CREATED_AT,
        ]
        .into_iter()
        .map(|name| match item.get(name) {
            Some(AttributeValue::S(value)) => Ok((name.to_owned(), value.clone())),
            _ => Err(RowError(format!("missing string attribute {name}"))),
        })
        .collect()
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct OrdersPage {
    pub rows: Vec<OrderSummaryRow>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageKey>,
}

/// The read-model tables of the generation served, through the DynamoDB
/// API.
#[derive(Clone, Debug)]
pub struct ReadModelReader {
    client: Client,
    served: ServedGeneration,
}

impl ReadModelReader {
    pub fn new(client: Client, tables: &Tables) -> Self {
        Self {
            served: ServedGeneration::new(client.clone(), tables),
            client,
        }
    }

    /// Which generation is served.
    pub fn served(&self) -> &ServedGeneration {
        &self.served
    }

    /// The profile of `user_id`, read consistently.
    pub async fn user_profile(&self, user_id: UserId) -> Result<Option<UserProfileRow>, AppError> {
        let tables = self.served.tables().await?;
        let out = self
            .client
            .get_item()
            .table_name(&tables.user_profiles)
            .key(
                user_profiles::USER_ID,
                AttributeValue::S(user_id.to_string()),
            )
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error(&format!("get item from {}", tables.user_profiles), e))?;
        out.item
            .map(|item| {
                UserProfileRow::from_item(&item).map_err(|e| unreadable(&tables.user_profiles, e))
            })
            .transpose()
    }

    /// The profile that holds `email`. Global secondary indexes are
    /// eventually consistent, so a change of address shows here a moment
    /// after it shows by id.
    pub async fn user_by_email(&self, email: &Email) -> Result<Option<UserProfileRow>, AppError> {
        let tables = self.served.tables().await?;
        let out = self
            .client
            .query()
            .table_name(&tables.user_profiles)
            .index_name(user_profiles::EMAIL_INDEX)
            .key_condition_expression("#email = :email")
            .expression_attribute_names("#email", user_profiles::EMAIL)
            .expression_attribute_values(":email", AttributeValue::S(email.as_str().to_owned()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| {
                from_sdk_error(
                    &format!(
                        "query {} on {}",
                        user_profiles::EMAIL_INDEX,
                        tables.user_profiles
                    ),
                    e,
                )
            })?;
        let mut rows = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                UserProfileRow::from_item(item).map_err(|e| unreadable(&tables.user_profiles, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // An address can move from one user to another faster than the
        // projector updates both rows; the row updated last is the owner.
        rows.sort_by_key(|row| row.updated_at);
        Ok(rows.pop())
    }

    /// The summary of `order_id`, read consistently.
    pub async fn order(&self, order_id: OrderId) -> Result<Option<OrderSummaryRow>, AppError> {
        let tables = self.served.tables().await?;
        let out = self
            .client
            .get_item()
            .table_name(&tables.order_summaries)
            .key(
                order_summaries::ORDER_ID,
                AttributeValue::S(order_id.to_string()),
            )
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error(&format!("get item from {}", tables.order_summaries), e))?;
        out.item
            .map(|item| {
                OrderSummaryRow::from_item(&item)
                    .map_err(|e| unreadable(&tables.order_summaries, e))
            })
            .transpose()
    }

    /// Up to `page_size` orders of `listing`, newest first, after `start`.
    pub async fn orders(
        &self,
        listing: &OrderListing,
        page_size: usize,
        start: Option<PageKey>,
    ) -> Result<OrdersPage, AppError> {
        let tables = self.served.tables().await?;
        // One item more than the page tells whether another page follows, so
        // that the last page says so itself instead of handing out a token
        // to an empty page. DynamoDB charges by size, so it costs next to
        // nothing.
        let limit = i32::try_from(page_size.saturating_add(1)).unwrap_or(i32::MAX);
        let index = listing.index();
        let out = self
            .client
            .query()
            .table_name(&tables.order_summaries)
            .index_name(index)
            .key_condition_expression("#hash = :hash")
            .expression_attribute_names("#hash", listing.hash_attribute())
            .expression_attribute_values(":hash", AttributeValue::S(listing.hash_value()))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start.map(|key| {
                key.into_iter()
                    .map(|(name, value)| (name, AttributeValue::S(value)))
                    .collect()
            }))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| {
                from_sdk_error(&format!("query {index} on {}", tables.order_summaries), e)
            })?;
        let mut items = out.items.unwrap_or_default();
        let next = if items.len() > page_size {
            items.truncate(page_size);
            match items.last() {
                Some(last) => Some(
                    listing
                        .key_of(last)
                        .map_err(|e| unreadable(&tables.order_summaries, e))?,
                ),
                // Only with a page size of 0, which parsing rules out.
                None => None,
            }
        } else {
            // Fewer items than asked for and still a key: the query stopped
            // at DynamoDB's 1 MB limit, and resumes from where it stopped.
            out.last_evaluated_key
                .map(|key| string_key(&key).map_err(|e| unreadable(&tables.order_summaries, e)))
                .transpose()?
        };
        let rows = items
            .iter()
            .map(|item| {
                OrderSummaryRow::from_item(item).map_err(|e| unreadable(&tables.order_summaries, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(
            index,
            rows = rows.len(),
            more = next.is_some(),
            "orders listed"
        );
        Ok(OrdersPage { rows, next })
    }
}

fn string_key(key: &HashMap<String, AttributeValue>) -> Result<PageKey, RowError> {
    key.iter()
        .map(|(name, value)| match value {
            AttributeValue::S(value) => Ok((name.clone(), value.clone())),
            _ => Err(RowError(format!("key attribute {name} is not a string"))),
        })
        .collect()
}

/// A row of `table` this build cannot read: an internal error, with the
/// row's error as its source.
#[derive(Debug, thiserror::Error)]
#[error("reading {table}: {row}")]
struct Unreadable {
    table: String,
    #[source]
    row: RowError,
}

fn unreadable(table: &str, row: RowError) -> AppError {
    AppError::Internal(Box::new(Unreadable {
        table: table.to_owned(),
        row,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), AttributeValue::S((*v).to_owned())))
            .collect()
    }

    #[test]
    fn key_of_takes_the_table_and_index_keys_only() {
        let user = UserId::new_random();
        let listing = OrderListing::ByUser(user);
        let user = user.to_string();
        let row = item(&[
            (order_summaries::ORDER_ID, "o1"),
            (order_summaries::USER_ID, &user),
            (order_summaries::STATUS, "CREATED"),
            (read_model::CREATED_AT, "2026-01-01T00:00:00.000000Z"),
        ]);
        let key = listing.key_of(&row).unwrap();
        let names: std::collections::BTreeSet<&str> = key.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                order_summaries::ORDER_ID,
                order_summaries::USER_ID,
                read_model::CREATED_AT
            ]
            .into()
        );
        assert_eq!(key[order_summaries::USER_ID], user);
        assert!(listing.accepts(&key));
        assert!(!OrderListing::ByUser(UserId::new_random()).accepts(&key));
        assert!(!OrderListing::ByStatus(OrderStatus::Created).accepts(&key));
    }

    #[test]
    fn key_of_rejects_rows_without_string_keys() {
        let listing = OrderListing::ByStatus(OrderStatus::Shipped);
        let row = item(&[
            (order_summaries::ORDER_ID, "o1"),
            (order_summaries::STATUS, "SHIPPED"),
        ]);
        assert!(listing.key_of(&row).is_err());
    }

    #[test]
    fn string_key_rejects_other_types() {
        let mut key = item(&[(order_summaries::ORDER_ID, "o1")]);
        assert_eq!(string_key(&key).unwrap().len(), 1);
        key.insert(read_model::CREATED_AT.into(), AttributeValue::N("1".into()));
        assert!(string_key(&key).is_err());
    }

    #[test]
    fn fingerprints_differ_by_method_and_argument() {
        let a = UserId::new_random();
        let fingerprints = [
            OrderListing::ByUser(a).fingerprint(),
            OrderListing::ByUser(UserId::new_random()).fingerprint(),
            OrderListing::ByStatus(OrderStatus::Created).fingerprint(),
            OrderListing::ByStatus(OrderStatus::Shipped).fingerprint(),
        ];
        let distinct: std::collections::HashSet<_> = fingerprints.iter().collect();
        assert_eq!(distinct.len(), fingerprints.len());
        assert_eq!(OrderListing::ByUser(a).fingerprint(), fingerprints[0]);
    }
}
