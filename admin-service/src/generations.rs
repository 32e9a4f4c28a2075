//! Read-model generations: blue/green rebuilds, switches and drops.
//!
//! A rebuild of generation `n`:
//!
//! 1. creates `n`'s tables and adds `n` to the registry as `BUILDING`
//!    (one conditional write; at most one generation builds at a time);
//! 2. **waits for the projector**: every open shard's checkpoint item must
//!    show `n` among the generations its reader writes (each lease take
//!    and renewal records them). From then on every event the projector
//!    handles goes to `n` too, each row version-gated, gaps filled from the
//!    event store;
//! 3. **scans** the event store, segments in parallel (consistent reads),
//!    and folds each aggregate's events, in version order, into its row,
//!    written only over an older version of it. Whatever was appended
//!    before the scan reached it, the scan sees; whatever came after the
//!    projector began writing `n`, the projector writes. So when the scan
//!    ends, `n` is as current as the generation served, without a catch-up
//!    pass of its own; each segment's position is saved after every page,
//!    and an interrupted rebuild resumes from there;
//! 4. switches the query service to `n` (unless asked not to): the
//!    registry's `Serving` moves in one conditional write, and the
//!    generation served until then stays written, `STANDBY`, until
//!    [`Generations::drop_generation`].
//!
//! Writes during a scan race the projector's on the same rows; both only
//! ever move a row forward (the scan: over an older version; the projector:
//! from the version before), so whichever lands last leaves the fold of
//! the aggregate's events up to the higher version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, Utc};
use dynabridge::convert::{format_time, parse_time, timestamp_to_pb};
use dynabridge::pb;
use dynabridge::pb::ErrorReason as Reason;
use dynabridge::schema::{
    ReadModelTables, Tables, checkpoints, event_store, generations as attr, read_model,
};
use dynabridge_aws::item::{Item, get_n, get_s};
use dynabridge_event_store::codec::event_from_item;
use dynabridge_read_models::Applied;
use dynabridge_read_models::generations::{self, GenerationState, LoadError, Registry};
use dynabridge_read_models::row::{Model, Row};
use dynabridge_runtime::error::{AppError, from_sdk_error};
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;

use crate::request::Rebuild;
use crate::status::ProjectionStatus;

/// Scan segments when the request names none.
pub const DEFAULT_SEGMENTS: u32 = 4;
/// Rows written at once per segment.
const ROW_WRITES_IN_FLIGHT: usize = 16;
/// How often a waiting rebuild or drop looks at the checkpoints again.
const POLL: Duration = Duration::from_secs(1);
/// How long a failed step waits before it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// A rebuild's phase, as its progress item stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    WaitingForProjector,
    Scanning,
    Done,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForProjector => "WAITING_FOR_PROJECTOR",
            Self::Scanning => "SCANNING",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "WAITING_FOR_PROJECTOR" => Self::WaitingForProjector,
            "SCANNING" => Self::Scanning,
            "DONE" => Self::Done,
            "FAILED" => Self::Failed,
            _ => return None,
        })
    }

    fn to_pb(self) -> pb::RebuildPhase {
        match self {
            Self::WaitingForProjector => pb::RebuildPhase::WaitingForProjector,
            Self::Scanning => pb::RebuildPhase::Scanning,
            Self::Done => pb::RebuildPhase::Done,
            Self::Failed => pb::RebuildPhase::Failed,
        }
    }
}

/// Where one scan segment is: its next page's start (`None`: the
/// beginning), or done.
#[derive(Clone, Debug, PartialEq)]
pub enum Cursor {
    At(Option<Item>),
    Done,
}

impl Cursor {
    fn to_attribute(&self) -> AttributeValue {
        match self {
            Self::At(None) => AttributeValue::M(HashMap::new()),
            Self::At(Some(key)) => AttributeValue::M(key.clone()),
            Self::Done => AttributeValue::S("done".into()),
        }
    }

    fn from_attribute(value: &AttributeValue) -> Option<Self> {
        match value {
            AttributeValue::M(key) if key.is_empty() => Some(Self::At(None)),
            AttributeValue::M(key) => Some(Self::At(Some(key.clone()))),
            AttributeValue::S(s) if s == "done" => Some(Self::Done),
            _ => None,
        }
    }
}

/// A rebuild's progress item.
#[derive(Clone, Debug)]
pub struct Progress {
    pub generation: u32,
    pub phase: Phase,
    pub segments: Vec<Cursor>,
    pub events: i64,
    pub rows: i64,
    pub unreadable: i64,
    pub started_at: DateTime<Utc>,
    pub scan_started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub switch: bool,
    /// Events per scan page; `None`: DynamoDB's 1 MB page.
    pub page_size: Option<u32>,
    pub error: Option<String>,
}

impl Progress {
    fn new(generation: u32, segments: u32, switch: bool, page_size: Option<u32>) -> Self {
        Self {
            generation,
            phase: Phase::WaitingForProjector,
            segments: (0..segments).map(|_| Cursor::At(None)).collect(),
            events: 0,
            rows: 0,
            unreadable: 0,
            started_at: Utc::now(),
            scan_started_at: None,
            finished_at: None,
            switch,
            page_size,
            error: None,
        }
    }

    fn to_item(&self) -> Item {
        let mut item = HashMap::from([
            (
                attr::NAME.to_owned(),
                AttributeValue::S(attr::rebuild(self.generation)),
            ),
            (
                attr::PHASE.to_owned(),
                AttributeValue::S(self.phase.as_str().into()),
            ),
            (
                attr::SEGMENTS.to_owned(),
                AttributeValue::M(
                    self.segments
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (i.to_string(), c.to_attribute()))
                        .collect(),
                ),
            ),
            (
                attr::EVENTS.to_owned(),
                AttributeValue::N(self.events.to_string()),
            ),
            (
                attr::ROWS.to_owned(),
                AttributeValue::N(self.rows.to_string()),
            ),
            (
                attr::UNREADABLE.to_owned(),
                AttributeValue::N(self.unreadable.to_string()),
            ),
            (
                attr::STARTED_AT.to_owned(),
                AttributeValue::S(format_time(self.started_at)),
            ),
            (attr::SWITCH.to_owned(), AttributeValue::Bool(self.switch)),
        ]);
        if let Some(at) = self.scan_started_at {
            item.insert(
                attr::SCAN_STARTED_AT.into(),
                AttributeValue::S(format_time(at)),
            );
        }
        if let Some(at) = self.finished_at {
            item.insert(attr::FINISHED_AT.into(), AttributeValue::S(format_time(at)));
        }
        if let Some(error) = &self.error {
            item.insert(attr::ERROR.into(), AttributeValue::S(error.clone()));
        }
        if let Some(size) = self.page_size {
            item.insert(attr::PAGE_SIZE.into(), AttributeValue::N(size.to_string()));
        }
        item
    }

    fn from_item(generation: u32, item: &Item) -> Result<Self, String> {
        let phase = get_s(item, attr::PHASE)
            .ok()
            .and_then(Phase::parse)
            .ok_or("a phase")?;
        let Some(AttributeValue::M(segments)) = item.get(attr::SEGMENTS) else {
            return Err("segments".into());
        };
        let mut cursors = Vec::with_capacity(segments.len());
        for i in 0..segments.len() {
            let cursor = segments
                .get(&i.to_string())
                .and_then(Cursor::from_attribute)
                .ok_or_else(|| format!("segment {i}"))?;
            cursors.push(cursor);
        }
        let time = |name: &str| get_s(item, name).ok().and_then(parse_time);
        Ok(Self {
            generation,
            phase,
            segments: cursors,
            events: get_n(item, attr::EVENTS).unwrap_or_default(),
            rows: get_n(item, attr::ROWS).unwrap_or_default(),
            unreadable: get_n(item, attr::UNREADABLE).unwrap_or_default(),
            started_at: time(attr::STARTED_AT).ok_or("a start time")?,
            scan_started_at: time(attr::SCAN_STARTED_AT),
            finished_at: time(attr::FINISHED_AT),
            switch: matches!(item.get(attr::SWITCH), Some(AttributeValue::Bool(true))),
            page_size: get_n(item, attr::PAGE_SIZE)
                .ok()
                .and_then(|n| u32::try_from(n).ok()),
            error: get_s(item, attr::ERROR).ok().map(str::to_owned),
        })
    }

    /// Events per second over the scan, so far or in all.
    pub fn events_per_second(&self) -> f64 {
        let Some(start) = self.scan_started_at else {
            return 0.0;
        };
        let end = self.finished_at.unwrap_or_else(Utc::now);
        let seconds = (end - start).num_milliseconds() as f64 / 1000.0;
        if seconds > 0.0 {
            self.events as f64 / seconds
        } else {
            0.0
        }
    }

    fn to_pb(&self) -> pb::RebuildProgress {
        pb::RebuildProgress {
            phase: self.phase.to_pb().into(),
            segments: i32::try_from(self.segments.len()).unwrap_or(i32::MAX),
            segments_done: i32::try_from(
                self.segments.iter().filter(|c| **c == Cursor::Done).count(),
            )
            .unwrap_or(i32::MAX),
            events: self.events,
            rows: self.rows,
            unreadable_aggregates: self.unreadable,
            start_time: Some(timestamp_to_pb(self.started_at)),
            scan_start_time: self.scan_started_at.map(timestamp_to_pb),
            finish_time: self.finished_at.map(timestamp_to_pb),
            events_per_second: self.events_per_second(),
            switch_when_done: self.switch,
            page_size: self
                .page_size
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or_default(),
            error: self.error.clone().unwrap_or_default(),
        }
    }
}

pub(crate) fn state_to_pb(state: GenerationState) -> pb::GenerationState {
    match state {
        GenerationState::Building => pb::GenerationState::Building,
        GenerationState::Serving => pb::GenerationState::Serving,
        GenerationState::Standby => pb::GenerationState::Standby,
        GenerationState::Dropping => pb::GenerationState::Dropping,
        GenerationState::Dropped => pb::GenerationState::Dropped,
    }
}

fn not_found(generation: u32) -> AppError {
    AppError::refused(
        Reason::GenerationNotFound,
        format!("there is no read-model generation {generation}"),
    )
    .with("generation", generation)
}

fn state_conflict(generation: u32, state: GenerationState, what: &str) -> AppError {
    AppError::refused(
        Reason::GenerationStateConflict,
        format!("generation {generation} is {}: {what}", state.as_str()),
    )
    .with("generation", generation)
    .with("state", state.as_str())
}

/// The registry, read consistently.
pub(crate) async fn read_registry(client: &Client, tables: &Tables) -> Result<Registry, AppError> {
    generations::load(client, &tables.generations())
        .await
        .map_err(|err| match err {
            LoadError::Call(err) => from_sdk_error("reading the read-model generations", *err),
            LoadError::Unreadable(err) => {
                AppError::internal(format!("{}: {err}", tables.generations()))
            }
        })
}

/// The read-model generations, as the admin service runs them.
#[derive(Clone, Debug)]
pub struct Generations {
    client: Client,
    tables: Tables,
    status: ProjectionStatus,
    /// The background tasks of this instance: a rebuild or drop each.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Generations {
    pub fn new(client: Client, tables: Tables, status: ProjectionStatus) -> Self {
        Self {
            client,
            tables,
            status,
            tasks: Arc::default(),
        }
    }

    /// The registry, read consistently.
    pub async fn registry(&self) -> Result<Registry, AppError> {
        read_registry(&self.client, &self.tables).await
    }

    async fn get(&self, name: &str) -> Result<Option<Item>, AppError> {
        Ok(self
            .client
            .get_item()
            .table_name(self.tables.generations())
            .key(attr::NAME, AttributeValue::S(name.to_owned()))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error("reading the read-model generations", e))?
            .item)
    }

    /// Stores `next`, changed from `read` (the registry as read): `false`
    /// if someone changed it in between.
    async fn save(&self, read: &Registry, next: &Registry) -> Result<bool, AppError> {
        let condition = read.condition();
        // `next` keeps the revision read: its item is at the one after.
        let request = self
            .client
            .put_item()
            .table_name(self.tables.generations())
            .set_item(Some(next.to_item()))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(
                (!condition.values.is_empty()).then_some(condition.values),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(from_sdk_error("writing the read-model generations", err)),
        }
    }

    /// Reads the registry, lets `change` change it, and stores it,
    /// again if another writer came first; `change`'s error ends it.
    async fn change<T>(
        &self,
        mut change: impl FnMut(&mut Registry) -> Result<T, AppError>,
    ) -> Result<(T, Registry), AppError> {
        loop {
            let read = self.registry().await?;
            let mut next = read.clone();
            let out = change(&mut next)?;
            if next == read || self.save(&read, &next).await? {
                return Ok((out, next));
            }
        }
    }

    async fn progress(&self, generation: u32) -> Result<Option<Progress>, AppError> {
        let Some(item) = self.get(&attr::rebuild(generation)).await? else {
            return Ok(None);
        };
        Progress::from_item(generation, &item)
            .map(Some)
            .map_err(|e| AppError::internal(format!("rebuild {generation}: unreadable {e}")))
    }

    async fn put_progress(&self, progress: &Progress) -> Result<(), AppError> {
        self.client
            .put_item()
            .table_name(self.tables.generations())
            .set_item(Some(progress.to_item()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error("writing a rebuild's progress", e))?;
        Ok(())
    }

    fn generation_pb(
        &self,
        generation: u32,
        state: GenerationState,
        progress: Option<&Progress>,
    ) -> pb::Generation {
        let tables = self.tables.read_models(generation);
        pb::Generation {
            generation,
            state: state_to_pb(state).into(),
            user_profiles_table: tables.user_profiles,
            order_summaries_table: tables.order_summaries,
            products_table: tables.products,
            purchases_table: tables.purchases,
            rebuild: progress.map(Progress::to_pb),
        }
    }

    /// Every generation, and each rebuild's progress.
    pub async fn list(&self) -> Result<pb::ListGenerationsResponse, AppError> {
        let registry = self.registry().await?;
        let mut generations = Vec::new();
        for (&generation, &state) in &registry.states {
            let progress = if generation == 0 {
                None
            } else {
                self.progress(generation).await?
            };
            generations.push(self.generation_pb(generation, state, progress.as_ref()));
        }
        Ok(pb::ListGenerationsResponse {
            serving: registry.serving,
            generations,
        })
    }

    /// Starts a rebuild into a new generation; answers once the generation
    /// is registered and its tables exist.
    pub async fn rebuild(&self, request: Rebuild) -> Result<pb::Generation, AppError> {
        let in_progress = |building: u32| {
            AppError::refused(
                Reason::RebuildInProgress,
                format!("generation {building} is being built"),
            )
            .with("generation", building)
        };
        let registry = self.registry().await?;
        if let Some(building) = registry.building() {
            return Err(in_progress(building));
        }
        // The tables before the registry names the generation: the
        // projector writes every generation it finds there within a second,
        // so they must exist by then. A restart between the two leaves them
        // unregistered and empty (nothing writes an unregistered
        // generation); the next rebuild takes the same number and them.
        let planned = registry.next_generation();
        self.ensure_tables(planned).await?;
        let ((generation, _), _) = self
            .change(|registry| {
                if let Some(building) = registry.building() {
                    return Err(in_progress(building));
                }
                let generation = registry.next_generation();
                if generation != planned {
                    return Err(AppError::refused(
                        Reason::GenerationStateConflict,
                        format!(
                            "generation {planned} was registered meanwhile by another rebuild; ask again"
                        ),
                    )
                    .with("generation", planned));
                }
                registry
                    .states
                    .insert(generation, GenerationState::Building);
                Ok((generation, ()))
            })
            .await?;
        let progress = Progress::new(
            generation,
            request.segments,
            request.switch,
            request.page_size,
        );
        // The progress item before the tables: a restart between the two
        // finds the rebuild and creates them.
        self.put_progress(&progress).await?;
        tracing::info!(
            generation,
            segments = request.segments,
            switch = request.switch,
            "read-model rebuild started"
        );
        self.spawn_rebuild(generation);
        Ok(self.generation_pb(generation, GenerationState::Building, Some(&progress)))
    }

    /// Serves `generation`, which must be complete.
    pub async fn switch(&self, generation: u32) -> Result<(u32, u32), AppError> {
        let progress = self.progress(generation).await?;
        let (previous, registry) = self
            .change(|registry| {
                let state = *registry
                    .states
                    .get(&generation)
                    .ok_or_else(|| not_found(generation))?;
                let built = match state {
                    GenerationState::Building => {
                        progress.as_ref().is_some_and(|p| p.phase == Phase::Done)
                    }
                    GenerationState::Serving | GenerationState::Standby => true,
                    GenerationState::Dropping | GenerationState::Dropped => false,
                };
                if !built {
                    return Err(state_conflict(
                        generation,
                        state,
                        "only a complete generation that is written can be served",
                    ));
                }
                let previous = registry.serving;
                registry
                    .switch_to(generation)
                    .map_err(|e| AppError::internal(e.to_string()))?;
                Ok(previous)
            })
            .await?;
        tracing::info!(
            serving = registry.serving,
            previous,
            "read-model generation switched"
        );
        Ok((registry.serving, previous))
    }

    /// Stops writing `generation` and, in the background, deletes its
    /// tables once no projector writes them.
    pub async fn drop_generation(&self, generation: u32) -> Result<pb::Generation, AppError> {
        let (state, _) = self
            .change(|registry| {
                let state = *registry
                    .states
                    .get(&generation)
                    .ok_or_else(|| not_found(generation))?;
                match state {
                    GenerationState::Standby => {
                        registry
                            .states
                            .insert(generation, GenerationState::Dropping);
                        Ok(GenerationState::Dropping)
                    }
                    GenerationState::Dropping | GenerationState::Dropped => Ok(state),
                    GenerationState::Serving => Err(state_conflict(
                        generation,
                        state,
                        "the generation served cannot be dropped; switch to another first",
                    )),
                    GenerationState::Building => Err(state_conflict(
                        generation,
                        state,
                        "a generation being built cannot be dropped until its rebuild ends",
                    )),
                }
            })
            .await?;
        if state == GenerationState::Dropping {
            tracing::info!(generation, "read-model generation dropping");
            self.spawn_drop(generation);
        }
        Ok(self.generation_pb(generation, state, None))
    }

    /// Takes up, at start-up, the rebuild and the drops an earlier instance
    /// left unfinished.
    pub async fn resume(&self) -> Result<(), AppError> {
        let registry = self.registry().await?;
        for (&generation, &state) in &registry.states {
            match state {
                GenerationState::Building => {
                    tracing::info!(generation, "resuming a read-model rebuild");
                    self.spawn_rebuild(generation);
                }
                GenerationState::Dropping => self.spawn_drop(generation),
                _ => {}
            }
        }
        Ok(())
    }

    /// Stops this instance's background work (a restart resumes it).
    pub fn abort(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(task));
    }

    fn spawn_rebuild(&self, generation: u32) {
        let this = self.clone();
        self.spawn(async move {
            loop {
                match this.run_rebuild(generation).await {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(generation, error = %err, "read-model rebuild step failed; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
    }

    fn spawn_drop(&self, generation: u32) {
        let this = self.clone();
        self.spawn(async move {
            loop {
                match this.run_drop(generation).await {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(generation, error = %err, "dropping a read-model generation failed; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
    }

    /// Whether every open shard's reader records what `wanted` asks of
    /// the generations it writes; a shard that never recorded any writes
    /// generation 0 alone (a projector from before generations).
    async fn projector_writes(&self, wanted: impl Fn(&[u32]) -> bool) -> Result<bool, AppError> {
        let (_, items) = self.status.shard_items().await?;
        let open: Vec<&Item> = items
            .iter()
            .filter(|i| {
                !matches!(
                    i.get(checkpoints::FINISHED),
                    Some(AttributeValue::Bool(true))
                )
            })
            .collect();
        if open.is_empty() {
            return Ok(false);
        }
        Ok(open.iter().all(|item| {
            let written = match item.get(checkpoints::GENERATIONS) {
                Some(AttributeValue::Ns(numbers)) => {
                    numbers.iter().filter_map(|n| n.parse().ok()).collect()
                }
                _ => vec![0],
            };
            wanted(&written)
        }))
    }

    async fn ensure_tables(&self, generation: u32) -> Result<(), AppError> {
        let read_models = self.tables.read_models(generation);
        dynabridge_provision::ensure_read_model_tables(&self.client, &read_models)
            .await
            .map_err(|e| AppError::internal(e.to_string()))
    }

    async fn run_rebuild(&self, generation: u32) -> Result<(), AppError> {
        let mut progress = match self.progress(generation).await? {
            Some(progress) => progress,
            None => {
                // Registered, but stopped before its progress was written.
                let progress = Progress::new(generation, DEFAULT_SEGMENTS, true, None);
                self.put_progress(&progress).await?;
                progress
            }
        };
        // Already there unless this generation was registered by an older
        // admin service, which made them after.
        self.ensure_tables(generation).await?;
        let read_models = self.tables.read_models(generation);
        if progress.phase == Phase::WaitingForProjector {
            while !self.projector_writes(|w| w.contains(&generation)).await? {
                tokio::time::sleep(POLL).await;
            }
            tracing::info!(
                generation,
                "the projector writes the new generation; scanning the event store"
            );
            progress.phase = Phase::Scanning;
            progress.scan_started_at = Some(Utc::now());
            self.put_progress(&progress).await?;
        }
        if progress.phase == Phase::Scanning {
            let segments = u32::try_from(progress.segments.len()).unwrap_or(u32::MAX);
            let mut scans = tokio::task::JoinSet::new();
            for (segment, cursor) in progress.segments.iter().enumerate() {
                if *cursor == Cursor::Done {
                    continue;
                }
                let scan = SegmentScan {
                    client: self.client.clone(),
                    tables: self.tables.clone(),
                    read_models: read_models.clone(),
                    generation,
                    segment: u32::try_from(segment).unwrap_or(u32::MAX),
                    segments,
                    page_size: progress.page_size,
                };
                let cursor = cursor.clone();
                scans.spawn(async move { scan.run(cursor).await });
            }
            while let Some(done) = scans.join_next().await {
                done.map_err(|e| AppError::internal(format!("a scan segment panicked: {e}")))??;
            }
            progress = self.progress(generation).await?.unwrap_or(progress);
            progress.phase = Phase::Done;
            progress.finished_at = Some(Utc::now());
            self.put_progress(&progress).await?;
            tracing::info!(
                generation,
                events = progress.events,
                rows = progress.rows,
                unreadable_aggregates = progress.unreadable,
                events_per_second = progress.events_per_second(),
                "read-model generation built"
            );
        }
        let switch = progress.switch;
        self.change(|registry| {
            if registry.states.get(&generation) == Some(&GenerationState::Building) {
                if switch {
                    registry
                        .switch_to(generation)
                        .map_err(|e| AppError::internal(e.to_string()))?;
                } else {
                    registry.states.insert(generation, GenerationState::Standby);
                }
            }
            Ok(())
        })
        .await?;
        if switch {
            tracing::info!(generation, "read-model generation served");
        }
        Ok(())
    }

    async fn run_drop(&self, generation: u32) -> Result<(), AppError> {
        while !self.projector_writes(|w| !w.contains(&generation)).await? {
            tokio::time::sleep(POLL).await;
        }
        // Generation 0's tables are the template's: left in place.
        if generation != 0 {
            dynabridge_provision::delete_read_model_tables(
                &self.client,
                &self.tables.read_models(generation),
            )
            .await
            .map_err(|e| AppError::internal(e.to_string()))?;
        }
        self.change(|registry| {
            if registry.states.get(&generation) == Some(&GenerationState::Dropping) {
                registry.states.insert(generation, GenerationState::Dropped);
            }
            Ok(())
        })
        .await?;
        tracing::info!(generation, "read-model generation dropped");
        Ok(())
    }
}

/// One segment of a rebuild's scan.
struct SegmentScan {
    client: Client,
    tables: Tables,
    read_models: ReadModelTables,
    generation: u32,
    segment: u32,
    segments: u32,
    page_size: Option<u32>,
}

/// What a page of the scan did.
#[derive(Default)]
struct PageCounts {
    events: i64,
    rows: i64,
    unreadable: i64,
}

impl SegmentScan {
    async fn run(&self, mut cursor: Cursor) -> Result<(), AppError> {
        while let Cursor::At(start) = cursor {
            let page = self
                .client
                .scan()
                .table_name(self.tables.event_store())
                .segment(i32::try_from(self.segment).unwrap_or(i32::MAX))
                .total_segments(i32::try_from(self.segments).unwrap_or(i32::MAX))
                .consistent_read(true)
                .set_limit(self.page_size.and_then(|n| i32::try_from(n).ok()))
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| from_sdk_error("scanning the event store", e))?;
            let counts = self.page(page.items()).await?;
            cursor = match page.last_evaluated_key {
                Some(key) if !key.is_empty() => Cursor::At(Some(key)),
                _ => Cursor::Done,
            };
            self.advance(&cursor, &counts).await?;
        }
        Ok(())
    }

    /// Saves the segment's position and adds the page's counts.
    async fn advance(&self, cursor: &Cursor, counts: &PageCounts) -> Result<(), AppError> {
        self.client
            .update_item()
            .table_name(self.tables.generations())
            .key(
                attr::NAME,
                AttributeValue::S(attr::rebuild(self.generation)),
            )
            .update_expression("SET #segments.#segment = :cursor ADD #events :events, #rows :rows, #unreadable :unreadable")
            .expression_attribute_names("#segments", attr::SEGMENTS)
            .expression_attribute_names("#segment", self.segment.to_string())
            .expression_attribute_names("#events", attr::EVENTS)
            .expression_attribute_names("#rows", attr::ROWS)
            .expression_attribute_names("#unreadable", attr::UNREADABLE)
            .expression_attribute_values(":cursor", cursor.to_attribute())
            .expression_attribute_values(":events", AttributeValue::N(counts.events.to_string()))
            .expression_attribute_values(":rows", AttributeValue::N(counts.rows.to_string()))
            .expression_attribute_values(
                ":unreadable",
                AttributeValue::N(counts.unreadable.to_string()),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error("saving a rebuild's position", e))?;
        Ok(())
    }

    /// Folds and writes the rows of a page's aggregates. A scan returns an
    /// aggregate's items together and in version order; one cut by a page
    /// boundary continues from its row as written.
    async fn page(&self, items: &[Item]) -> Result<PageCounts, AppError> {
        let mut groups: Vec<(String, Vec<Item>)> = Vec::new();
        for item in items {
            let id = get_s(item, event_store::AGGREGATE_ID)
                .map_err(|e| AppError::internal(format!("an event store item: {e}")))?;
            match groups.last_mut() {
                Some((last, group)) if last == id => group.push(item.clone()),
                _ => groups.push((id.to_owned(), vec![item.clone()])),
            }
        }
        let mut counts = PageCounts {
            events: i64::try_from(items.len()).unwrap_or(i64::MAX),
            ..PageCounts::default()
        };
        let mut writes = futures_util::stream::iter(groups)
            .map(|(id, items)| async move { self.aggregate(&id, &items).await })
            .buffer_unordered(ROW_WRITES_IN_FLIGHT);
        while let Some(outcome) = writes.next().await {
            match outcome? {
                Folded::Written => counts.rows += 1,
                Folded::Unchanged => {}
                Folded::Unreadable => counts.unreadable += 1,
            }
        }
        Ok(counts)
    }

    /// One aggregate's items of a page: decoded, folded from its row (the
    /// events missing before them read from the event store), written.
    async fn aggregate(&self, id: &str, items: &[Item]) -> Result<Folded, AppError> {
        let mut events = Vec::with_capacity(items.len());
        let mut unreadable = false;
        for item in items {
            match event_from_item(item) {
                Ok(event) => events.push(event),
                Err(err) => {
                    tracing::warn!(aggregate_id = id, error = %err, "an event the rebuild cannot read; the aggregate's row stops before it");
                    unreadable = true;
                    break;
                }
            }
        }
        let Some(first) = events.first() else {
            return Ok(if unreadable {
                Folded::Unreadable
            } else {
                Folded::Unchanged
            });
        };
        let Some(model) = Model::of(first) else {
            // No read model takes its events (a route's).
            return Ok(Folded::Unchanged);
        };
        let mut row = if first.version > 1 {
            self.row(model, id).await?
        } else {
            None
        };
        let have = row.as_ref().map_or(0, Row::version);
        if have + 1 < first.version {
            let missing = dynabridge_event_store::read_events(
                &self.client,
                &self.tables.event_store(),
                id,
                have + 1,
                Some(first.version - 1),
            )
            .await
            .map_err(crate::lookback::store_error)?;
            events.splice(0..0, missing);
        }
        let before = row.as_ref().map(Row::version);
        for event in &events {
            match Row::apply(model, row.as_ref(), event) {
                Applied::Next { row: next, .. } => row = Some(next),
                Applied::AlreadyApplied | Applied::Ignored => {}
                Applied::Gap { .. } => {
                    unreadable = true;
                    break;
                }
            }
        }
        let outcome = if unreadable {
            Folded::Unreadable
        } else {
            Folded::Unchanged
        };
        let Some(row) = row else {
            return Ok(outcome);
        };
        if before == Some(row.version()) {
            return Ok(outcome);
        }
        let written = self.put(&row).await?;
        Ok(match (written, unreadable) {
            (_, true) => Folded::Unreadable,
            (true, false) => Folded::Written,
            (false, false) => Folded::Unchanged,
        })
    }

    async fn row(&self, model: Model, id: &str) -> Result<Option<Row>, AppError> {
        let (table, key) = model.table_and_key(&self.read_models);
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key, AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk_error("reading a row of the new generation", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        Row::from_item(model, &item)
            .map(Some)
            .map_err(|e| AppError::internal(format!("row {id} of {table}: {e}")))
    }

    /// Writes `row` over an older version of it or none: `false` if the
    /// stored one is as new already (the projector wrote it).
    async fn put(&self, row: &Row) -> Result<bool, AppError> {
        let (table, key) = row.model().table_and_key(&self.read_models);
        let item = row.to_item();
        let out = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #version < :version")
            .expression_attribute_names("#pk", key)
            .expression_attribute_names("#version", read_model::VERSION)
            .expression_attribute_values(":version", AttributeValue::N(row.version().to_string()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(from_sdk_error("writing a row of the new generation", err)),
        }
    }
}

/// What became of one aggregate's row.
enum Folded {
    Written,
    Unchanged,
    Unreadable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_its_item() {
        let mut progress = Progress::new(3, 4, true, Some(2));
        progress.segments[1] = Cursor::Done;
        progress.segments[2] = Cursor::At(Some(HashMap::from([(
            "AggregateId".to_owned(),
            AttributeValue::S("a".into()),
        )])));
        progress.phase = Phase::Scanning;
        progress.scan_started_at = Some(Utc::now());
        progress.events = 10;
        let back = Progress::from_item(3, &progress.to_item()).unwrap();
        assert_eq!(back.segments, progress.segments);
        assert_eq!(back.phase, Phase::Scanning);
        assert_eq!(back.events, 10);
        assert!(back.switch);
        assert_eq!(back.page_size, Some(2));
        assert_eq!(back.to_pb().segments_done, 1);
    }

    #[test]
    fn events_per_second_is_over_the_scan() {
        let mut progress = Progress::new(1, 1, true, None);
        assert_eq!(progress.events_per_second(), 0.0);
        let start = Utc::now();
        progress.scan_started_at = Some(start);
        progress.finished_at = Some(start + chrono::Duration::seconds(2));
        progress.events = 1000;
        assert!((progress.events_per_second() - 500.0).abs() < 1e-9);
    }
}
