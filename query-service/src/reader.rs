//! Access to the read models, `user-profiles`, `order-summaries`,
//! `products` and `purchases`.
//!
//! Architecture invariant: the query service never reads the event store.
//! [`ReadModelReader`] is the only thing here that talks to the store, and it is
//! handed the names of the read-model tables and nothing else.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use dynabridge::schema::{Tables, order_summaries, products, purchases, read_model, user_profiles};
use dynabridge_domain::{Email, OrderId, OrderStatus, ProductId, PurchaseId, UserId};
use dynabridge_read_models::{
    Item, OrderSummaryRow, ProductRow, PurchaseRow, RowError, UserProfileRow,
};
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

/// A listing of products: the whole catalogue (a scan, in no particular
/// order), or the low-stock index (lowest stock first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductListing {
    All,
    LowStock,
}

impl ProductListing {
    /// The attributes of a page's resume key: the table's key, and the
    /// index's keys when it reads an index.
    fn key_names(&self) -> &'static [&'static str] {
        match self {
            Self::All => &[products::PRODUCT_ID],
            Self::LowStock => &[products::PRODUCT_ID, products::LOW_STOCK, products::STOCK],
        }
    }

    pub fn fingerprint(&self) -> String {
        match self {
            Self::All => "ListProducts".into(),
            Self::LowStock => "ListLowStockProducts".into(),
        }
    }

    /// Whether `key` can be where a page of this listing resumes: exactly
    /// its key attributes, in the index's one partition, a stock that is a
    /// number.
    pub fn accepts(&self, key: &PageKey) -> bool {
        let names = self.key_names();
        key.len() == names.len()
            && names.iter().all(|name| key.contains_key(*name))
            && match self {
                Self::All => true,
                Self::LowStock => {
                    key.get(products::LOW_STOCK).map(String::as_str)
                        == Some(products::LOW_STOCK_VALUE)
                        && key
                            .get(products::STOCK)
                            .is_some_and(|stock| stock.parse::<i64>().is_ok())
                }
            }
    }

    /// The key a page ending at `item` resumes after; a number is kept as
    /// its decimal string.
    fn key_of(&self, item: &Item) -> Result<PageKey, RowError> {
        self.key_names()
            .iter()
            .map(|name| match item.get(*name) {
                Some(AttributeValue::S(value) | AttributeValue::N(value)) => {
                    Ok(((*name).to_owned(), value.clone()))
                }
                _ => Err(RowError(format!("missing key attribute {name}"))),
            })
            .collect()
    }

    /// `key` as DynamoDB's `ExclusiveStartKey`.
    fn start_key(key: PageKey) -> HashMap<String, AttributeValue> {
        key.into_iter()
            .map(|(name, value)| {
                let value = if name == products::STOCK {
                    AttributeValue::N(value)
                } else {
                    AttributeValue::S(value)
                };
                (name, value)
            })
            .collect()
    }
}

/// One page of products.
#[derive(Debug)]
pub struct ProductsPage {
    pub rows: Vec<ProductRow>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageKey>,
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

impl ReadModelReader {
    /// The product `product_id`, read consistently.
    pub async fn product(&self, product_id: ProductId) -> Result<Option<ProductRow>, AppError> {
        let tables = self.served.tables().await?;
        let out = self
            .client
            .get_item()
            .table_name(&tables.products)
            .key(
                products::PRODUCT_ID,
                AttributeValue::S(product_id.to_string()),
            )
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error(&format!("get item from {}", tables.products), e))?;
        out.item
            .map(|item| ProductRow::from_item(&item).map_err(|e| unreadable(&tables.products, e)))
            .transpose()
    }

    /// The purchase `purchase_id`, read consistently.
    pub async fn purchase(&self, purchase_id: PurchaseId) -> Result<Option<PurchaseRow>, AppError> {
        let tables = self.served.tables().await?;
        let out = self
            .client
            .get_item()
            .table_name(&tables.purchases)
            .key(
                purchases::PURCHASE_ID,
                AttributeValue::S(purchase_id.to_string()),
            )
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error(&format!("get item from {}", tables.purchases), e))?;
        out.item
            .map(|item| PurchaseRow::from_item(&item).map_err(|e| unreadable(&tables.purchases, e)))
            .transpose()
    }

    /// Up to `page_size` products of `listing`, after `start`.
    pub async fn products(
        &self,
        listing: ProductListing,
        page_size: usize,
        start: Option<PageKey>,
    ) -> Result<ProductsPage, AppError> {
        let tables = self.served.tables().await?;
        let table = &tables.products;
        // One more than the page, as for orders: the last page says so.
        let limit = i32::try_from(page_size.saturating_add(1)).unwrap_or(i32::MAX);
        let start = start.map(ProductListing::start_key);
        let (items, last_key) = match listing {
            ProductListing::All => {
                let out = self
                    .client
                    .scan()
                    .table_name(table)
                    .limit(limit)
                    .set_exclusive_start_key(start)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(|e| from_sdk_error(&format!("scan {table}"), e))?;
                (out.items, out.last_evaluated_key)
            }
            ProductListing::LowStock => {
                let out = self
                    .client
                    .query()
                    .table_name(table)
                    .index_name(products::LOW_STOCK_INDEX)
                    .key_condition_expression("#low = :low")
                    .expression_attribute_names("#low", products::LOW_STOCK)
                    .expression_attribute_values(
                        ":low",
                        AttributeValue::S(products::LOW_STOCK_VALUE.into()),
                    )
                    .scan_index_forward(true)
                    .limit(limit)
                    .set_exclusive_start_key(start)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(|e| {
                        from_sdk_error(
                            &format!("query {} on {table}", products::LOW_STOCK_INDEX),
                            e,
                        )
                    })?;
                (out.items, out.last_evaluated_key)
            }
        };
        let mut items = items.unwrap_or_default();
        let next = if items.len() > page_size {
            items.truncate(page_size);
            items
                .last()
                .map(|last| listing.key_of(last).map_err(|e| unreadable(table, e)))
                .transpose()?
        } else {
            // Stopped at DynamoDB's 1 MB limit: resume where it stopped.
            match last_key {
                Some(key) => Some(listing.key_of(&key).map_err(|e| unreadable(table, e))?),
                None => None,
            }
        };
        let rows = items
            .iter()
            .map(|item| ProductRow::from_item(item).map_err(|e| unreadable(table, e)))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(
            ?listing,
            rows = rows.len(),
            more = next.is_some(),
            "products listed"
        );
        Ok(ProductsPage { rows, next })
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
    fn a_low_stock_key_keeps_its_stock_as_a_number() {
        let mut row = item(&[
            (products::PRODUCT_ID, "p1"),
            (products::LOW_STOCK, products::LOW_STOCK_VALUE),
            (products::SKU, "MUG"),
        ]);
        row.insert(products::STOCK.into(), AttributeValue::N("3".into()));
        let listing = ProductListing::LowStock;
        let key = listing.key_of(&row).unwrap();
        assert_eq!(key.len(), 3);
        assert!(listing.accepts(&key));
        assert!(!ProductListing::All.accepts(&key));
        let start = ProductListing::start_key(key.clone());
        assert_eq!(start[products::STOCK], AttributeValue::N("3".into()));
        assert_eq!(start[products::PRODUCT_ID], AttributeValue::S("p1".into()));
        let mut forged = key;
        forged.insert(products::STOCK.into(), "three".into());
        assert!(!listing.accepts(&forged));
        let all = ProductListing::All.key_of(&row).unwrap();
        assert!(ProductListing::All.accepts(&all));
        assert!(!listing.accepts(&all));
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
