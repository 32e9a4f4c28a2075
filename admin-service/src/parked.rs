//! The aggregates the projector parked: listed, and retries and skips asked
//! for. The admin service only reads the parked-events table and sets a
//! header's status (and, for a skip, its reason, with an audit record in
//! its own table); the projector carries the request out.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};
use chrono::Utc;
use dynabridge::convert::{format_time, parse_time, timestamp_to_pb};
use dynabridge::pb;
use dynabridge::pb::ErrorReason as Reason;
use dynabridge::schema::{admin, parked as attr};
use dynabridge_aws::item::{Item, get_n, get_s};
use dynabridge_runtime::error::{AppError, from_sdk_error};
use dynabridge_runtime::page_token::{Listing, PageTokens};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::request::{ListParked, RetryParked, SkipParked};

/// Where a page of parked aggregates resumes: the last header's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedKey {
    aggregate_id: String,
}

struct AllParked;

impl Listing for AllParked {
    type Key = ParkedKey;

    fn fingerprint(&self) -> String {
        "ListParked".into()
    }

    fn accepts(&self, key: &ParkedKey) -> bool {
        !key.aggregate_id.is_empty()
    }
}

/// One page of parked aggregates.
#[derive(Debug)]
pub struct ParkedPage {
    pub aggregates: Vec<pb::ParkedAggregate>,
    pub next_page_token: String,
}

/// The parked-events table and the audit records, as the admin service uses
/// them.
#[derive(Clone, Debug)]
pub struct ParkedAggregates {
    client: Client,
    table: String,
    admin_table: String,
    tokens: PageTokens,
}

fn key(aggregate_id: &str, version: i64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            attr::AGGREGATE_ID.to_owned(),
            AttributeValue::S(aggregate_id.to_owned()),
        ),
        (
            attr::VERSION.to_owned(),
            AttributeValue::N(version.to_string()),
        ),
    ])
}

fn unreadable(what: &str, err: impl std::fmt::Display) -> AppError {
    AppError::internal(format!("unreadable parked {what}: {err}"))
}

fn status_of(raw: &str) -> pb::ParkedStatus {
    match raw {
        attr::STATUS_RETRY => pb::ParkedStatus::RetryRequested,
        attr::STATUS_SKIP => pb::ParkedStatus::SkipRequested,
        attr::STATUS_PARKED => pb::ParkedStatus::Parked,
        _ => pb::ParkedStatus::Unspecified,
    }
}

fn time_of(item: &Item, name: &str) -> Option<pbjson_types::Timestamp> {
    get_s(item, name)
        .ok()
        .and_then(parse_time)
        .map(timestamp_to_pb)
}

fn optional(item: &Item, name: &str) -> String {
    get_s(item, name).map(str::to_owned).unwrap_or_default()
}

fn header_of(item: &Item) -> Result<pb::ParkedAggregate, AppError> {
    Ok(pb::ParkedAggregate {
        aggregate_id: get_s(item, attr::AGGREGATE_ID)
            .map_err(|e| unreadable("header", e.0))?
            .to_owned(),
        status: status_of(get_s(item, attr::STATUS).unwrap_or_default()) as i32,
        first_version: get_n(item, attr::FIRST_VERSION).map_err(|e| unreadable("header", e.0))?,
        last_version: get_n(item, attr::LAST_VERSION).map_err(|e| unreadable("header", e.0))?,
        error: optional(item, attr::ERROR),
        park_time: time_of(item, attr::PARKED_AT),
        update_time: time_of(item, attr::UPDATED_AT),
        events: Vec::new(),
        skip_reason: optional(item, attr::REASON),
    })
}

fn not_parked(aggregate_id: &Uuid) -> AppError {
    AppError::refused(
        Reason::NotParked,
        format!("aggregate {aggregate_id} is not parked"),
    )
    .with("aggregate_id", aggregate_id)
}

impl ParkedAggregates {
    pub fn new(client: Client, table: String, admin_table: String, tokens: PageTokens) -> Self {
        Self {
            client,
            table,
            admin_table,
            tokens,
        }
    }

    /// The parked events of one aggregate, in version order.
    async fn events(&self, aggregate_id: &str) -> Result<Vec<pb::ParkedEvent>, AppError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#id = :id AND #v > :header")
                .expression_attribute_names("#id", attr::AGGREGATE_ID)
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(":id", AttributeValue::S(aggregate_id.to_owned()))
                .expression_attribute_values(":header", AttributeValue::N(attr::HEADER.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| from_sdk_error("reading parked events", e))?;
            for item in page.items() {
                events.push(pb::ParkedEvent {
                    version: get_n(item, attr::VERSION).map_err(|e| unreadable("event", e.0))?,
                    event_id: optional(item, attr::EVENT_ID),
                    event_type: optional(item, attr::EVENT_TYPE),
                    error: optional(item, attr::ERROR),
                    park_time: time_of(item, attr::PARKED_AT),
                });
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(events),
            }
        }
    }

    pub async fn list(&self, request: ListParked) -> Result<ParkedPage, AppError> {
        let start = if request.page_token.is_empty() {
            None
        } else {
            let key = self
                .tokens
                .open(&AllParked, &request.page_token)
                .map_err(|e| AppError::Invalid(e.into()))?;
            Some(key)
        };
        let wanted = request.page_size.get();
        let mut aggregates = Vec::with_capacity(wanted);
        let mut exclusive_start = start.map(|k| key(&k.aggregate_id, attr::HEADER));
        // Headers only. A scan's limit counts the items it reads, not those
        // its filter keeps, so pages are read until this one is full; the
        // next resumes after the last header returned.
        let more = 'pages: loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("#v = :header")
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(":header", AttributeValue::N(attr::HEADER.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(exclusive_start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| from_sdk_error("listing parked aggregates", e))?;
            for item in page.items() {
                if aggregates.len() == wanted {
                    break 'pages true;
                }
                aggregates.push(header_of(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => exclusive_start = Some(key),
                _ => break false,
            }
        };
        for aggregate in &mut aggregates {
            aggregate.events = self.events(&aggregate.aggregate_id).await?;
        }
        let next_page_token = match (more, aggregates.last()) {
            (true, Some(last)) => self.tokens.issue(
                &AllParked,
                &ParkedKey {
                    aggregate_id: last.aggregate_id.clone(),
                },
            ),
            _ => String::new(),
        };
        Ok(ParkedPage {
            aggregates,
            next_page_token,
        })
    }

    /// Sets a parked aggregate's status (and more), if it is parked.
    async fn ask(
        &self,
        aggregate_id: &Uuid,
        status: &str,
        reason: Option<&str>,
    ) -> Result<pb::ParkedAggregate, AppError> {
        let id = aggregate_id.to_string();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&id, attr::HEADER)))
            .condition_expression("attribute_exists(#status)")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":status", AttributeValue::S(status.to_owned()))
            .expression_attribute_values(":now", AttributeValue::S(format_time(Utc::now())))
            .return_values(ReturnValue::AllNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        update = match reason {
            Some(reason) => update
                .update_expression("SET #status = :status, #updated = :now, #reason = :reason")
                .expression_attribute_names("#reason", attr::REASON)
                .expression_attribute_values(":reason", AttributeValue::S(reason.to_owned())),
            None => update.update_expression("SET #status = :status, #updated = :now"),
        };
        match update.send().await {
            Ok(out) => {
                let mut aggregate = header_of(&out.attributes.unwrap_or_default())?;
                aggregate.events = self.events(&id).await?;
                Ok(aggregate)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(not_parked(aggregate_id))
            }
            Err(err) => Err(from_sdk_error("asking about a parked aggregate", err)),
        }
    }

    pub async fn retry(&self, request: RetryParked) -> Result<pb::ParkedAggregate, AppError> {
        let aggregate = self
            .ask(&request.aggregate_id, attr::STATUS_RETRY, None)
            .await?;
        tracing::info!(aggregate_id = %request.aggregate_id, "retry of a parked aggregate asked for");
        Ok(aggregate)
    }

    /// Asks for the skip, then keeps its audit record: who cannot be told
    /// here, but when, why, and which versions.
    pub async fn skip(
        &self,
        request: SkipParked,
        correlation_id: &str,
    ) -> Result<pb::ParkedAggregate, AppError> {
        let aggregate = self
            .ask(
                &request.aggregate_id,
                attr::STATUS_SKIP,
                Some(&request.reason),
            )
            .await?;
        let now = format_time(Utc::now());
        let audit = HashMap::from([
            (
                admin::NAME.to_owned(),
                AttributeValue::S(format!(
                    "{}{}/{now}",
                    admin::SKIP_AUDIT_PREFIX,
                    request.aggregate_id
                )),
            ),
            (
                admin::REASON.to_owned(),
                AttributeValue::S(request.reason.clone()),
            ),
            (
                admin::FIRST_VERSION.to_owned(),
                AttributeValue::N(aggregate.first_version.to_string()),
            ),
            (
                admin::LAST_VERSION.to_owned(),
                AttributeValue::N(aggregate.last_version.to_string()),
            ),
            (
                admin::CORRELATION_ID.to_owned(),
                AttributeValue::S(correlation_id.to_owned()),
            ),
            (admin::UPDATED_AT.to_owned(), AttributeValue::S(now)),
        ]);
        self.client
            .put_item()
            .table_name(&self.admin_table)
            .set_item(Some(audit))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error("recording a skip", e))?;
        tracing::warn!(
            aggregate_id = %request.aggregate_id,
            first_version = aggregate.first_version,
            last_version = aggregate.last_version,
            reason = %request.reason,
            "skip of a parked aggregate asked for"
        );
        Ok(aggregate)
    }
}
