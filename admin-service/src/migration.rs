//! The migration to the bucketed event-type index: events appended before
//! the buckets lack `EventTypeBucket`, so the index does not list them
//! until they are given it.
//!
//! The admin service runs it in the background at start-up, unless its
//! table records it as done; until it is, `ListEventsByType` answers
//! `INDEX_MIGRATING`. It is safe to run on several replicas at once, and
//! alongside appends (see
//! [`dynabridge_event_store::reporting::migrate_event_type_buckets`]).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::Utc;
use dynabridge::convert::format_time;
use dynabridge::schema::{Tables, admin};
use dynabridge_event_store::StoreError;
use dynabridge_event_store::reporting::migrate_event_type_buckets;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The `Scan` segments the migration reads at once.
pub const SEGMENTS: u16 = 4;

/// Whether the migration is done, as the service sees it.
#[derive(Clone, Debug)]
pub struct IndexMigration {
    done: watch::Receiver<bool>,
}

impl IndexMigration {
    /// Starts the migration in a task of its own: it reads the record,
    /// and migrates and records unless it is done, retrying failures with a
    /// growing pause until it succeeds.
    pub fn start(client: Client, tables: &Tables) -> (Self, JoinHandle<()>) {
        let (tx, done) = watch::channel(false);
        let event_store = tables.event_store();
        let admin_table = tables.admin();
        let task = tokio::spawn(async move {
            let mut pause = Duration::from_millis(500);
            loop {
                match run(&client, &event_store, &admin_table).await {
                    Ok(()) => {
                        tx.send_replace(true);
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, retry_in_ms = pause.as_millis(), "event-type index migration failed");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
        (Self { done }, task)
    }

    /// Already done: for tests that build the service's parts alone.
    pub fn done() -> Self {
        Self {
            done: watch::channel(true).1,
        }
    }

    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until the migration is done.
    pub async fn wait(&self) {
        let mut done = self.done.clone();
        // An error means the task is gone, which it only is once done.
        let _ = done.wait_for(|done| *done).await;
    }
}

async fn run(client: &Client, event_store: &str, admin_table: &str) -> Result<(), StoreError> {
    let key = HashMap::from([(
        admin::NAME.to_owned(),
        AttributeValue::S(admin::EVENT_TYPE_BUCKETS_MIGRATION.to_owned()),
    )]);
    let record = client
        .get_item()
        .table_name(admin_table)
        .set_key(Some(key.clone()))
        .consistent_read(true)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| {
            StoreError::Call(dynabridge_aws::CallError::from_sdk(
                "reading the migration record",
                e,
            ))
        })?;
    let done = record
        .item
        .as_ref()
        .and_then(|item| item.get(admin::DONE))
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false);
    if done {
        tracing::debug!("event-type index migration already done");
        return Ok(());
    }
    tracing::info!("event-type index migration started");
    let migrated = migrate_event_type_buckets(client, event_store, SEGMENTS).await?;
    let mut item = key;
    item.insert(admin::DONE.to_owned(), AttributeValue::Bool(true));
    item.insert(
        admin::MIGRATED.to_owned(),
        AttributeValue::N(migrated.to_string()),
    );
    item.insert(
        admin::UPDATED_AT.to_owned(),
        AttributeValue::S(format_time(Utc::now())),
    );
    client
        .put_item()
        .table_name(admin_table)
        .set_item(Some(item))
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| {
            StoreError::Call(dynabridge_aws::CallError::from_sdk(
                "recording the migration",
                e,
            ))
        })?;
    tracing::info!(migrated, "event-type index migration done");
    Ok(())
}
