//! Read-model generations: the registry item that says which generation of
//! the read-model tables the query service serves and which ones the
//! projector keeps current.
//!
//! A rebuild (the admin service's `RebuildReadModels`) adds a generation in
//! `BUILDING`; from the projector's next batch on, every event is written
//! to it as well, so that once the rebuild's scan of the event store is
//! done the generation is as current as the one being served. The switch is
//! one conditional write of this item: `Serving` moves, the old generation
//! becomes `STANDBY` (still written, so that switching back is instant)
//! until it is dropped. Each binary reads the item itself; this module is
//! its codec and its rules, nothing else.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::get_item::GetItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use dynabridge::schema::generations;

use crate::{Item, RowError, get_n};

/// Where one generation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GenerationState {
    /// Being built: written by the projector, filled by the rebuild's scan,
    /// not served.
    Building,
    /// Served by the query service, and written.
    Serving,
    /// Complete and written, not served: a generation switched away from,
    /// or built without a switch. It can be switched to at once.
    Standby,
    /// Asked to be dropped: no longer written; its tables are deleted once
    /// every shard's reader stopped writing it.
    Dropping,
    /// Gone (or, for generation 0, no longer written: its tables belong to
    /// the deployment's template and are left in place).
    Dropped,
}

impl GenerationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "BUILDING",
            Self::Serving => "SERVING",
            Self::Standby => "STANDBY",
            Self::Dropping => "DROPPING",
            Self::Dropped => "DROPPED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BUILDING" => Self::Building,
            "SERVING" => Self::Serving,
            "STANDBY" => Self::Standby,
            "DROPPING" => Self::Dropping,
            "DROPPED" => Self::Dropped,
            _ => return None,
        })
    }

    /// Whether the projector writes a generation in this state.
    pub fn is_written(self) -> bool {
        matches!(self, Self::Building | Self::Serving | Self::Standby)
    }
}

/// The registry item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    /// Raised by every change; 0 while the item does not exist.
    pub revision: i64,
    /// The generation the query service serves.
    pub serving: u32,
    /// Every generation ever made, by number.
    pub states: BTreeMap<u32, GenerationState>,
}

impl Default for Registry {
    /// A deployment that never rebuilt: generation 0, the template's tables,
    /// served.
    fn default() -> Self {
        Self {
            revision: 0,
            serving: 0,
            states: BTreeMap::from([(0, GenerationState::Serving)]),
        }
    }
}

impl Registry {
    /// The registry as stored; no item is the default registry.
    pub fn from_item(item: Option<&Item>) -> Result<Self, RowError> {
        let Some(item) = item else {
            return Ok(Self::default());
        };
        let revision = get_n(item, generations::REVISION)?;
        let serving = u32::try_from(get_n(item, generations::SERVING)?)
            .map_err(|_| RowError("registry: Serving out of range".into()))?;
        let Some(AttributeValue::M(map)) = item.get(generations::STATES) else {
            return Err(RowError("registry: missing map attribute States".into()));
        };
        let mut states = BTreeMap::new();
        for (number, state) in map {
            let number: u32 = number
                .parse()
                .map_err(|_| RowError(format!("registry: generation {number:?}")))?;
            let state = match state {
                AttributeValue::S(s) => GenerationState::parse(s),
                _ => None,
            }
            .ok_or_else(|| RowError(format!("registry: state of generation {number}")))?;
            states.insert(number, state);
        }
        let registry = Self {
            revision,
            serving,
            states,
        };
        if registry.states.get(&serving) != Some(&GenerationState::Serving) {
            return Err(RowError(format!(
                "registry: generation {serving} is served but not SERVING"
            )));
        }
        Ok(registry)
    }

    /// The item storing this registry at `revision + 1`; the write must be
    /// conditioned on [`Registry::condition`].
    pub fn to_item(&self) -> Item {
        let states = self
            .states
            .iter()
            .map(|(n, s)| (n.to_string(), AttributeValue::S(s.as_str().to_owned())))
            .collect();
        HashMap::from([
            (
                generations::NAME.to_owned(),
                AttributeValue::S(generations::REGISTRY.to_owned()),
            ),
            (
                generations::REVISION.to_owned(),
                AttributeValue::N((self.revision + 1).to_string()),
            ),
            (
                generations::SERVING.to_owned(),
                AttributeValue::N(self.serving.to_string()),
            ),
            (generations::STATES.to_owned(), AttributeValue::M(states)),
        ])
    }

    /// The condition under which [`Registry::to_item`] replaces the
    /// registry this one was read as (nobody changed it in between): the
    /// expression, its attribute names and its values.
    pub fn condition(&self) -> Condition {
        if self.revision == 0 {
            Condition {
                expression: "attribute_not_exists(#name)".into(),
                names: HashMap::from([("#name".to_owned(), generations::NAME.to_owned())]),
                values: HashMap::new(),
            }
        } else {
            Condition {
                expression: "#revision = :revision".into(),
                names: HashMap::from([("#revision".to_owned(), generations::REVISION.to_owned())]),
                values: HashMap::from([(
                    ":revision".to_owned(),
                    AttributeValue::N(self.revision.to_string()),
                )]),
            }
        }
    }

    /// The generations the projector writes, each event to all of them:
    /// those not served first and the served one last, so that a row a
    /// query can see is already in every other generation written.
    pub fn written(&self) -> Vec<u32> {
        let mut written: Vec<u32> = self
            .states
            .iter()
            .filter(|(n, s)| s.is_written() && **n != self.serving)
            .map(|(n, _)| *n)
            .collect();
        written.push(self.serving);
        written
    }

    /// The number a new generation gets.
    pub fn next_generation(&self) -> u32 {
        self.states.keys().next_back().map_or(1, |n| n + 1)
    }

    /// The generation being built, if any (there is at most one).
    pub fn building(&self) -> Option<u32> {
        self.states
            .iter()
            .find(|(_, s)| **s == GenerationState::Building)
            .map(|(n, _)| *n)
    }

    /// Serves `generation`, which must be built (`BUILDING` at the end of
    /// its rebuild, or `STANDBY`); the one served until now stays written,
    /// as `STANDBY`.
    pub fn switch_to(&mut self, generation: u32) -> Result<(), SwitchRefused> {
        match self.states.get(&generation) {
            Some(GenerationState::Serving) => return Ok(()),
            Some(GenerationState::Building | GenerationState::Standby) => {}
            Some(state) => return Err(SwitchRefused::NotWritten(*state)),
            None => return Err(SwitchRefused::Unknown),
        }
        self.states.insert(self.serving, GenerationState::Standby);
        self.states.insert(generation, GenerationState::Serving);
        self.serving = generation;
        Ok(())
    }
}

/// Why the registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The call failed (boxed: the SDK's error is large).
    #[error(transparent)]
    Call(Box<SdkError<GetItemError, HttpResponse>>),
    #[error(transparent)]
    Unreadable(#[from] RowError),
}

/// The registry in `table`, read consistently: the one read every binary
/// makes of it. A table that does not exist yet is the default registry,
/// as in a deployment from before generations.
pub async fn load(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<Registry, LoadError> {
    let out = client
        .get_item()
        .table_name(table)
        .key(
            generations::NAME,
            AttributeValue::S(generations::REGISTRY.into()),
        )
        .consistent_read(true)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await;
    let item = match out {
        Ok(out) => out.item,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(GetItemError::is_resource_not_found_exception) =>
        {
            None
        }
        Err(err) => return Err(LoadError::Call(Box::new(err))),
    };
    Ok(Registry::from_item(item.as_ref())?)
}

/// A condition expression with its attribute names and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub expression: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

/// Why a generation cannot be switched to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SwitchRefused {
    #[error("no such generation")]
    Unknown,
    #[error("the generation is {}, not written", .0.as_str())]
    NotWritten(GenerationState),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_item_is_generation_zero_served() {
        let registry = Registry::from_item(None).unwrap();
        assert_eq!(registry, Registry::default());
        assert_eq!(registry.written(), vec![0]);
        assert_eq!(registry.next_generation(), 1);
        assert_eq!(registry.building(), None);
        let condition = registry.condition();
        assert_eq!(condition.expression, "attribute_not_exists(#name)");
        assert_eq!(condition.names["#name"], generations::NAME);
    }

    #[test]
    fn the_served_generation_is_written_last_and_a_switch_keeps_the_old_one_written() {
        let mut registry = Registry::default();
        registry.states.insert(1, GenerationState::Building);
        assert_eq!(registry.written(), vec![1, 0]);
        assert_eq!(registry.building(), Some(1));
        registry.switch_to(1).unwrap();
        assert_eq!(registry.serving, 1);
        assert_eq!(registry.states[&0], GenerationState::Standby);
        assert_eq!(registry.written(), vec![0, 1]);
        registry.states.insert(0, GenerationState::Dropping);
        assert_eq!(registry.written(), vec![1]);
        assert_eq!(
            registry.switch_to(0),
            Err(SwitchRefused::NotWritten(GenerationState::Dropping))
        );
        assert_eq!(registry.switch_to(7), Err(SwitchRefused::Unknown));
        assert_eq!(registry.next_generation(), 2);
    }

    #[test]
    fn the_item_round_trips_at_the_next_revision() {
        let mut registry = Registry::default();
        registry.states.insert(1, GenerationState::Building);
        let stored = Registry::from_item(Some(&registry.to_item())).unwrap();
        assert_eq!(stored.revision, 1);
        assert_eq!(stored.states, registry.states);
        let condition = stored.condition();
        assert_eq!(condition.expression, "#revision = :revision");
        assert_eq!(condition.values[":revision"], AttributeValue::N("1".into()));
    }

    #[test]
    fn a_registry_serving_a_generation_not_marked_serving_is_refused() {
        let mut item = Registry::default().to_item();
        item.insert(generations::SERVING.into(), AttributeValue::N("3".into()));
        assert!(Registry::from_item(Some(&item)).is_err());
        item.remove(generations::STATES);
        assert!(Registry::from_item(Some(&item)).is_err());
    }
}
