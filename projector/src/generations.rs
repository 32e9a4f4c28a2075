//! Which read-model generations the projector writes: the registry item of
//! `read-model-generations` (see [`dynabridge_read_models::generations`]),
//! read before the first write and then every [`REFRESH`].
//!
//! Every event is written to every generation the registry has `BUILDING`,
//! `SERVING` or `STANDBY`, the served one last. Each lease renewal records
//! the set on its shard's checkpoint item ([`GenerationWatch::known`]), and
//! a rebuild waits for every open shard to show its new generation before
//! it scans the event store: from then on, whatever the scan does not see,
//! the projector writes. The set only ever gains a generation once and
//! loses it once, so what a renewal records holds for every write after it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use dynabridge_read_models::generations::{self, LoadError};

use crate::control::Shutdown;
use crate::error::{StoreError, sdk_error};

/// How often the registry is read again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Where the registry is read from.
#[derive(Clone, Debug)]
enum Source {
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
    /// Tests: a set given once.
    Fixed,
}

/// The generations written, as last read.
#[derive(Debug)]
pub struct GenerationWatch {
    source: Source,
    current: RwLock<Option<Arc<Vec<u32>>>>,
}

impl GenerationWatch {
    pub fn dynamo(client: aws_sdk_dynamodb::Client, table: String) -> Arc<Self> {
        Arc::new(Self {
            source: Source::Dynamo { client, table },
            current: RwLock::new(None),
        })
    }

    /// Always `written`, served last (tests).
    pub fn fixed(written: Vec<u32>) -> Arc<Self> {
        Arc::new(Self {
            source: Source::Fixed,
            current: RwLock::new(Some(Arc::new(written))),
        })
    }

    /// The set as last read, if it was read at all.
    pub fn known(&self) -> Option<Arc<Vec<u32>>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The generations to write, the served one last: as last read, or
    /// read now if it never was.
    pub async fn written(&self) -> Result<Arc<Vec<u32>>, StoreError> {
        match self.known() {
            Some(written) => Ok(written),
            None => self.refresh().await,
        }
    }

    /// Reads the registry. A deployment whose generations table does not
    /// exist yet writes generation 0 alone, as one that never rebuilt.
    pub async fn refresh(&self) -> Result<Arc<Vec<u32>>, StoreError> {
        let Source::Dynamo { client, table } = &self.source else {
            return Ok(self.known().unwrap_or_default());
        };
        let registry = generations::load(client, table)
            .await
            .map_err(|err| match err {
                LoadError::Call(err) => sdk_error("reading the read-model generations", *err),
                LoadError::Unreadable(err) => StoreError::Failed(format!("{table}: {err}")),
            })?;
        let written = Arc::new(registry.written());
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_deref() != Some(&*written) {
            tracing::info!(generations = ?written, serving = registry.serving, "writing read-model generations");
        }
        *current = Some(written.clone());
        Ok(written)
    }

    /// Reads the registry every [`REFRESH`] until `stop`. A failed read
    /// keeps the set known; the store's trouble shows in the batches.
    pub async fn refresh_until(&self, stop: Shutdown) {
        loop {
            if let Err(err) = self.refresh().await {
                tracing::debug!(error = %err, "reading the read-model generations failed; writing the ones known");
            }
            if !stop.sleep(REFRESH).await {
                return;
            }
        }
    }
}

/// Every take and renewal of a shard's lease records the generations its
/// reader writes.
impl dynabridge_stream::lease::LeaseRecord for GenerationWatch {
    fn generations(&self) -> Option<Arc<Vec<u32>>> {
        self.known()
    }
}
