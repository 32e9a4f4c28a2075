//! What a shard reader hands its consumer: the records of one `GetRecords`
//! batch ([`Batch`]), and the consumer itself ([`BatchHandler`]), which must
//! have done everything a batch asks before its checkpoint is written.

use std::collections::HashMap;

use async_trait::async_trait;
use dynabridge_domain::{StoredEvent, Version};

use crate::control::Shutdown;

/// Why handling a batch failed: the consumer's own error, and whether
/// retrying may succeed without anyone's help (it is retried either way;
/// this decides how loudly it is logged).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct HandleError {
    transient: bool,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl HandleError {
    pub fn new(
        transient: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            transient,
            source: source.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// An insert whose item is no event this build can read: as much as the
/// stored item tells of it, and why. Its key still names its aggregate, so
/// the consumer can set that aggregate aside (the projector parks it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedEvent {
    pub aggregate_id: String,
    pub version: Version,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub aggregate_type: Option<String>,
    pub error: String,
}

impl ParkedEvent {
    /// `event`, set aside for `error`.
    pub fn of(event: &StoredEvent, error: impl Into<String>) -> Self {
        Self {
            aggregate_id: event.event.aggregate_id().to_string(),
            version: event.version,
            event_id: Some(event.event_id.to_string()),
            event_type: Some(event.event.event_type().to_owned()),
            aggregate_type: Some(event.event.aggregate_type().as_str().to_owned()),
            error: error.into(),
        }
    }
}

/// The records of one batch: its events, in stream order, and the inserts
/// whose item is no event this build can read (each with the position in
/// `events` it came before), whose key still names their aggregate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub events: Vec<StoredEvent>,
    pub unreadable: Vec<(usize, ParkedEvent)>,
}

impl From<Vec<StoredEvent>> for Batch {
    fn from(events: Vec<StoredEvent>) -> Self {
        Self {
            events,
            unreadable: Vec::new(),
        }
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.unreadable.is_empty()
    }

    /// Every record, in stream order.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        let mut unreadable = self.unreadable.iter().peekable();
        let mut events = self.events.iter().enumerate().peekable();
        std::iter::from_fn(move || match (unreadable.peek(), events.peek()) {
            (Some((at, _)), Some((i, _))) if at <= i => {
                unreadable.next().map(|(_, p)| Record::Unreadable(p))
            }
            (_, Some(_)) => events.next().map(|(_, e)| Record::Event(e)),
            (Some(_), None) => unreadable.next().map(|(_, p)| Record::Unreadable(p)),
            (None, None) => None,
        })
    }
}

/// One record of a batch.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    Event(&'a StoredEvent),
    Unreadable(&'a ParkedEvent),
}

impl Record<'_> {
    pub fn aggregate_id(&self) -> String {
        match self {
            Self::Event(e) => e.event.aggregate_id().to_string(),
            Self::Unreadable(p) => p.aggregate_id.clone(),
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Self::Event(e) => e.version,
            Self::Unreadable(p) => p.version,
        }
    }

    /// As parked, for `why`.
    pub fn parked(&self, why: &str) -> ParkedEvent {
        match self {
            Self::Event(e) => ParkedEvent::of(e, why),
            Self::Unreadable(p) => ParkedEvent {
                error: format!("{why}; and unreadable: {}", p.error),
                ..(*p).clone()
            },
        }
    }
}

/// The records of a batch grouped by aggregate, each group in stream order,
/// the groups in the order of their first record. Each event writes its
/// aggregate's row only, so groups never wait on each other.
pub fn by_aggregate(batch: &Batch) -> Vec<Vec<Record<'_>>> {
    let mut groups: Vec<Vec<Record<'_>>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for record in batch.records() {
        let at = *index.entry(record.aggregate_id()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(record);
    }
    groups
}

#[async_trait]
pub trait BatchHandler: Send + Sync {
    /// Handles the records of one batch, in stream order. `Ok` means
    /// everything the batch asks of the consumer is done (for the
    /// projector: every event in the read models and published, or durably
    /// parked), so that its checkpoint may be written. Safe to call again
    /// with the same batch.
    async fn handle(&self, batch: &Batch, shutdown: &Shutdown) -> Result<(), HandleError>;
}
