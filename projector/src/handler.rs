//! What happens to the events of one `GetRecords` batch before it may be
//! checkpointed: the read models first, then publishing.

use async_trait::async_trait;
use dynabridge::domain::StoredEvent;

use crate::control::Shutdown;
use crate::error::StoreError;
use crate::publish::{PublishError, Publisher};
use crate::read_model::ReadModels;

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("updating a read model: {0}")]
    ReadModel(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl HandleError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ReadModel(e) => e.is_transient(),
            Self::Publish(PublishError::Shutdown) => true,
            Self::Publish(_) => false,
        }
    }
}

#[async_trait]
pub trait BatchHandler: Send + Sync {
    /// Handles the events of one batch, in stream order. `Ok` means every
    /// one of them is in the read models and published. Safe to call again
    /// with the same events.
    async fn handle(&self, events: &[StoredEvent], shutdown: &Shutdown) -> Result<(), HandleError>;
}

/// The projector's handler: read models, then publishing.
pub struct Projection {
    read_models: ReadModels,
    publisher: Box<dyn Publisher>,
}

impl Projection {
    pub fn new(read_models: ReadModels, publisher: Box<dyn Publisher>) -> Self {
        Self {
            read_models,
            publisher,
        }
    }
}

#[async_trait]
impl BatchHandler for Projection {
    async fn handle(&self, events: &[StoredEvent], shutdown: &Shutdown) -> Result<(), HandleError> {
        for event in events {
            // A batch may take long under a slow store: each event is
            // progress.
            crate::progress::beat();
            self.read_models.project(event).await?;
        }
        // Published only once the read models show the batch, so that a
        // subscriber reacting to an event can read its effect.
        self.publisher.publish(events, shutdown).await?;
        Ok(())
    }
}
