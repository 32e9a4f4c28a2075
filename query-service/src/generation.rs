//! Which generation of the read models the query service serves: the
//! registry item of `read-model-generations` (see
//! [`dynabridge_read_models::generations`]), read once before the first
//! query and then every [`REFRESH`] in the background. A switch made by the
//! admin service is followed within that interval, without a restart; the
//! generation switched to was written before the one switched from, so a
//! row never goes back in time.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use dynabridge::schema::{ReadModelTables, Tables};
use dynabridge_read_models::generations::{self, LoadError};
use dynabridge_runtime::error::{AppError, from_sdk_error};
use tokio::task::JoinHandle;

/// How often the registry is read again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The generation served, shared by every query.
#[derive(Clone, Debug)]
pub struct ServedGeneration {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    tables: Tables,
    current: RwLock<Option<Arc<ReadModelTables>>>,
}

impl ServedGeneration {
    pub fn new(client: Client, tables: &Tables) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                tables: tables.clone(),
                current: RwLock::new(None),
            }),
        }
    }

    /// The tables to read: the generation last read from the registry, or,
    /// before the first read, the registry read now.
    pub async fn tables(&self) -> Result<Arc<ReadModelTables>, AppError> {
        let known = self
            .inner
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match known {
            Some(tables) => Ok(tables),
            None => self.refresh().await,
        }
    }

    /// Reads the registry. A deployment whose generations table does not
    /// exist yet serves generation 0, as one that never rebuilt.
    pub async fn refresh(&self) -> Result<Arc<ReadModelTables>, AppError> {
        let table = self.inner.tables.generations();
        let registry = generations::load(&self.inner.client, &table)
            .await
            .map_err(|err| match err {
                LoadError::Call(err) => from_sdk_error(&format!("get item from {table}"), *err),
                LoadError::Unreadable(err) => AppError::internal(format!("{table}: {err}")),
            })?;
        let served = Arc::new(self.inner.tables.read_models(registry.serving));
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().map(|t| t.generation) != Some(served.generation) {
            tracing::info!(
                generation = served.generation,
                user_profiles = %served.user_profiles,
                order_summaries = %served.order_summaries,
                "serving read-model generation"
            );
        }
        *current = Some(served.clone());
        Ok(served)
    }

    /// Reads the registry every [`REFRESH`] until aborted. A failed read
    /// keeps the generation known (the store check reports the store).
    pub fn spawn_refresh(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                if let Err(err) = this.refresh().await {
                    tracing::debug!(error = %err, "reading the read-model generation failed; serving the one known");
                }
            }
        })
    }
}
