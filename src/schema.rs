//! Every table, index and attribute name, and the names of the event bus,
//! its archive and its rules, in one place.
//!
//! Tables and the bus's resources are named `<prefix>-<name>`; the prefix
//! separates deployments (and tests) that share one account or one local
//! store.

use dynabridge_domain::UniqueScope;

/// The tables of one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    pub prefix: String,
}

impl Tables {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn name(&self, table: &str) -> String {
        format!("{}-{table}", self.prefix)
    }

    /// The event store: one item per event. Written by the command service.
    pub fn event_store(&self) -> String {
        self.name("event-store")
    }

    /// Durable idempotency records, one per `request_id`. Command service.
    pub fn idempotency(&self) -> String {
        self.name("idempotency")
    }

    /// Email ownership, one item per claimed address. Command service.
    /// Where the values of a unique scope live: the table, the attribute
    /// holding the value (its key) and the one naming its owner.
    pub fn unique_values(&self, scope: UniqueScope) -> UniqueTable {
        match scope {
            UniqueScope::Email => UniqueTable {
                table: self.unique_emails(),
                value: unique_emails::EMAIL,
                owner: unique_emails::USER_ID,
            },
        }
    }

    /// The latest snapshot of each aggregate that takes them.
    pub fn snapshots(&self) -> String {
        self.name("snapshots")
    }

    pub fn unique_emails(&self) -> String {
        self.name("unique-emails")
    }

    /// The user read model of generation 0 (the template's table). Written
    /// by the projector, read by the query service.
    pub fn user_profiles(&self) -> String {
        self.name("user-profiles")
    }

    /// The order read model of generation 0 (the template's table). Written
    /// by the projector, read by the query service.
    pub fn order_summaries(&self) -> String {
        self.name("order-summaries")
    }

    /// The read-model tables of a generation: generation 0's are the
    /// template's, `<prefix>-user-profiles`; a rebuild's generation `n`
    /// has `<prefix>-user-profiles-g<n>` (the admin service creates and
    /// deletes them; see [`generations`]).
    pub fn products(&self) -> String {
        self.name("products")
    }

    pub fn purchases(&self) -> String {
        self.name("purchases")
    }

    pub fn read_models(&self, generation: u32) -> ReadModelTables {
        let suffix = if generation == 0 {
            String::new()
        } else {
            format!("-g{generation}")
        };
        ReadModelTables {
            generation,
            user_profiles: format!("{}{suffix}", self.user_profiles()),
            order_summaries: format!("{}{suffix}", self.order_summaries()),
            products: format!("{}{suffix}", self.products()),
            purchases: format!("{}{suffix}", self.purchases()),
        }
    }

    /// The replays asked for (`AdminService.ReplayEvents`): the window and
    /// event types, and how far the projector, which carries them out,
    /// has got. Written by the admin service (the request) and the
    /// projector (its progress).
    pub fn replays(&self) -> String {
        self.name("replays")
    }

    /// The read-model generations: which one the query service serves,
    /// which ones the projector writes, and each rebuild's progress.
    /// Written by the admin service; read by the projector and the query
    /// service.
    pub fn generations(&self) -> String {
        self.name("read-model-generations")
    }

    /// The projector's stream checkpoints.
    pub fn checkpoints(&self) -> String {
        self.name("projector-checkpoints")
    }

    /// Aggregates the projector parked: the events it could not apply, and
    /// the later events of the same aggregates queued behind them, until
    /// they are retried or skipped. Written by the projector; the admin
    /// service lists them and asks for a retry or a skip.
    /// The purchase process's checkpoints and shard leases: the projector's
    /// table's shape, its own items.
    pub fn process_checkpoints(&self) -> String {
        self.name("process-checkpoints")
    }

    pub fn parked(&self) -> String {
        self.name("parked-events")
    }

    /// The admin service's own state: one item per name (a migration's
    /// progress, a skip's audit record). Admin service only.
    pub fn admin(&self) -> String {
        self.name("admin")
    }

    /// The event bus events are published to.
    pub fn event_bus(&self) -> String {
        self.name("events")
    }

    /// The archive of the event bus, for replay: `<prefix>-events-archive`.
    pub fn event_archive(&self) -> String {
        format!("{}-archive", self.event_bus())
    }

    /// A rule of the event bus, `rule` one of [`event_rules`]:
    /// `<prefix>-<rule>`.
    pub fn event_rule(&self, rule: &str) -> String {
        self.name(rule)
    }
}

/// The read-model tables of one generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadModelTables {
    pub generation: u32,
    pub user_profiles: String,
    pub order_summaries: String,
    pub products: String,
    pub purchases: String,
}

impl ReadModelTables {
    /// Every read model's table of the generation, users first.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.user_profiles,
            &self.order_summaries,
            &self.products,
            &self.purchases,
        ]
    }
}

/// The rules of the event bus, as [`Tables::event_rule`] takes them.
pub mod event_rules {
    /// `UserCreated` and `UserProfileUpdated`.
    pub const USER_EVENTS: &str = "user-events";
    /// `OrderCreated` and `OrderStatusUpdated`.
    pub const ORDER_EVENTS: &str = "order-events";
    /// `OrderStatusUpdated` to one status.
    pub const ORDERS_WITH_STATUS: &str = "orders-with-status";
    /// `OrderCreated`, for the route planner (its queue has a dead-letter
    /// queue of its own).
    pub const ROUTE_PLANNER: &str = "route-planner";
    /// `RouteCreated`, for whatever follows a route.
    pub const ROUTE_EVENTS: &str = "route-events";
    pub const ALL: [&str; 5] = [
        USER_EVENTS,
        ORDER_EVENTS,
        ORDERS_WITH_STATUS,
        ROUTE_PLANNER,
        ROUTE_EVENTS,
    ];
}

/// The event store table.
pub mod event_store {
    pub const AGGREGATE_ID: &str = "AggregateId";
    pub const VERSION: &str = "Version";
    pub const EVENT_ID: &str = "EventId";
    pub const EVENT_TYPE: &str = "EventType";
    pub const TIMESTAMP: &str = "Timestamp";
    /// The payload as ProtoJSON of the event's message (for example `OrderCreated`).
    pub const EVENT_DATA: &str = "EventData";
    /// The client's `request_id`.
    pub const COMMAND_ID: &str = "CommandId";
    pub const CORRELATION_ID: &str = "CorrelationId";
    /// On the first event of an aggregate a create appended, the create's
    /// request hash (see `idempotency::REQUEST_HASH`): the event is the
    /// create's idempotency record.
    pub const REQUEST_HASH: &str = "RequestHash";
    /// The W3C `traceparent` of the appending request; absent without one.
    pub const TRACE_PARENT: &str = "TraceParent";
    pub const AGGREGATE_TYPE: &str = "AggregateType";
    pub const SCHEMA_VERSION: &str = "SchemaVersion";
    /// The event-type index's partition key: the event type and a bucket
    /// derived from the aggregate id, `OrderCreated#07` (see
    /// `dynabridge_event_store::codec::event_type_bucket`).
    pub const EVENT_TYPE_BUCKET: &str = "EventTypeBucket";
    /// Hash `EventTypeBucket`, range `Timestamp`: the events of one type
    /// over a time range, for replay, debugging and analytics. Keyed by
    /// type alone, every event of a busy type would land on one index
    /// partition, whose write limit (about 1,000 a second) would throttle
    /// the table's appends; the buckets spread a type over
    /// `EVENT_TYPE_BUCKETS` partitions, and readers query them all.
    pub const EVENT_TYPE_INDEX: &str = "EventTypeBucket-Timestamp-index";
    /// The index of the same name before the buckets: keyed by the event
    /// type alone. Tables created before the buckets still carry it; it is
    /// neither read nor created any more.
    pub const LEGACY_EVENT_TYPE_INDEX: &str = "EventType-Timestamp-index";
}

/// The idempotency table.
pub mod snapshots {
    pub const AGGREGATE_ID: &str = "AggregateId";
    pub const AGGREGATE_TYPE: &str = "AggregateType";
    /// The version of the last event folded into the snapshot.
    pub const VERSION: &str = "Version";
    /// The version of the state's shape (see the event store's snapshots).
    pub const SCHEMA_VERSION: &str = "SchemaVersion";
    pub const STATE: &str = "State";
    pub const TAKEN_AT: &str = "TakenAt";
}

pub mod idempotency {
    pub const REQUEST_ID: &str = "RequestId";
    /// SHA-256 of the request without its `request_id` and `correlation_id`.
    pub const REQUEST_HASH: &str = "RequestHash";
    pub const AGGREGATE_ID: &str = "AggregateId";
    pub const VERSION: &str = "Version";
    pub const EVENT_IDS: &str = "EventIds";
    pub const CORRELATION_ID: &str = "CorrelationId";
    /// The command's extra response fields, as JSON (for example an order's total).
    pub const RESULT: &str = "Result";
    pub const CREATED_AT: &str = "CreatedAt";
    /// Epoch seconds; DynamoDB's TTL removes the record after it.
    pub const EXPIRES_AT: &str = "ExpiresAt";
}

/// The email ownership table.
/// The table of a unique scope, and its two attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueTable {
    pub table: String,
    pub value: &'static str,
    pub owner: &'static str,
}

pub mod unique_emails {
    pub const EMAIL: &str = "Email";
    pub const USER_ID: &str = "UserId";
}

/// Attributes shared by both read models.
pub mod read_model {
    pub const VERSION: &str = "Version";
    pub const CREATED_AT: &str = "CreatedAt";
    pub const UPDATED_AT: &str = "UpdatedAt";
}

/// The user read model.
pub mod user_profiles {
    pub const USER_ID: &str = "UserId";
    pub const EMAIL: &str = "Email";
    pub const NAME: &str = "Name";
    pub const EMAIL_INDEX: &str = "Email-index";
}

/// The order read model.
pub mod order_summaries {
    pub const ORDER_ID: &str = "OrderId";
    pub const USER_ID: &str = "UserId";
    pub const STATUS: &str = "Status";
    /// The items as ProtoJSON of a list of `OrderItem`.
    pub const ITEMS: &str = "Items";
    pub const TOTAL_CURRENCY: &str = "TotalCurrency";
    pub const TOTAL_MINOR: &str = "TotalMinor";
    /// The shipping address as ProtoJSON of a `ShippingAddress`; absent
    /// when the order has none.
    pub const SHIPPING_ADDRESS: &str = "ShippingAddress";
    /// Present on an order a purchase placed.
    pub const PURCHASE_ID: &str = "PurchaseId";
    /// Hash `UserId`, range `CreatedAt`.
    pub const USER_ID_INDEX: &str = "UserId-index";
    /// Hash `Status`, range `CreatedAt`.
    pub const STATUS_INDEX: &str = "Status-index";
}

/// The projector's checkpoint table.
pub mod products {
    pub const PRODUCT_ID: &str = "ProductId";
    pub const SKU: &str = "Sku";
    pub const NAME: &str = "Name";
    pub const PRICE_CURRENCY: &str = "UnitPriceCurrency";
    pub const PRICE_MINOR: &str = "UnitPriceMinor";
    pub const STOCK: &str = "Stock";
    pub const RESERVED: &str = "Reserved";
    pub const REORDER_LEVEL: &str = "ReorderLevel";
    /// Present only while the stock is at or below the reorder level, so
    /// that the low-stock index holds only those products (a sparse index).
    pub const LOW_STOCK: &str = "LowStock";
    /// The value of [`LOW_STOCK`] when present: the index's one partition.
    pub const LOW_STOCK_VALUE: &str = "LOW";
    /// Partition `LowStock`, sort `Stock`: the low products, lowest first.
    pub const LOW_STOCK_INDEX: &str = "LowStock-Stock-index";
}

pub mod purchases {
    pub const PURCHASE_ID: &str = "PurchaseId";
    pub const USER_ID: &str = "UserId";
    /// The items as asked for, ProtoJSON `PurchaseItem`s.
    pub const ITEMS: &str = "Items";
    /// `PENDING`, `COMPLETED`, `REJECTED`, `CANCELLED`.
    pub const STATUS: &str = "Status";
    pub const ORDER_ID: &str = "OrderId";
    /// ProtoJSON `PurchaseRejection`, when rejected.
    pub const REJECTION: &str = "Rejection";
    pub const TOTAL_CURRENCY: &str = "TotalCurrency";
    pub const TOTAL_MINOR: &str = "TotalMinor";
}

pub mod checkpoints {
    pub const STREAM_ARN: &str = "StreamArn";
    pub const SHARD_ID: &str = "ShardId";
    /// The last sequence number fully processed.
    pub const SEQUENCE_NUMBER: &str = "SequenceNumber";
    /// Set once every record of a closed shard is processed.
    pub const FINISHED: &str = "Finished";
    pub const UPDATED_AT: &str = "UpdatedAt";
    /// The instance id of the projector holding the shard's lease; absent
    /// while nobody does.
    pub const LEASE_OWNER: &str = "LeaseOwner";
    /// Raised by every take, renewal and release of the lease: a counter
    /// that stops moving is a lease whose holder stopped renewing it.
    pub const LEASE_COUNTER: &str = "LeaseCounter";
    /// The latest commit time of the events processed up to the checkpoint.
    pub const LAST_EVENT_TIME: &str = "LastEventTime";
    /// The last window of events the stream trimmed before they were read,
    /// caught up from the event store: its bounds (an empty `from`: from
    /// the first event), when it was caught up (empty until it is), and how
    /// many events it held.
    pub const TRIMMED_FROM: &str = "TrimmedFrom";
    pub const TRIMMED_TO: &str = "TrimmedTo";
    pub const TRIMMED_CAUGHT_UP_AT: &str = "TrimmedCaughtUpAt";
    pub const TRIMMED_EVENTS: &str = "TrimmedEvents";
    /// The read-model generations the shard's reader writes every event to
    /// from its next batch on (a number set): how a rebuild knows the
    /// projector keeps its new generation current before it scans.
    pub const GENERATIONS: &str = "Generations";
    /// The `StreamArn` of the items that say which event each read model
    /// last applied (`ShardId` the model's name: `user-profiles`,
    /// `order-summaries`), with `LastEventTime` its commit time and
    /// `UpdatedAt` when it was applied.
    pub const READ_MODELS: &str = "read-models";
    pub const USER_PROFILES_MODEL: &str = "user-profiles";
    pub const ORDER_SUMMARIES_MODEL: &str = "order-summaries";
    pub const PRODUCTS_MODEL: &str = "products";
    pub const PURCHASES_MODEL: &str = "purchases";
    pub const LAST_EVENT_ID: &str = "LastEventId";
    pub const LAST_EVENT_TYPE: &str = "LastEventType";
    pub const LAST_AGGREGATE_ID: &str = "LastAggregateId";
    pub const LAST_VERSION: &str = "LastVersion";
}

/// The parked-events table: per parked aggregate, a header item (version 0)
/// and an item per parked event.
pub mod parked {
    pub const AGGREGATE_ID: &str = "AggregateId";
    /// 0 for the aggregate's header; a parked event's version otherwise.
    pub const VERSION: &str = "Version";
    /// Header: `PARKED`, `RETRY` (asked for, the projector applies the
    /// events again) or `SKIP` (asked for, the projector drops them).
    pub const STATUS: &str = "Status";
    /// Header: the first version parked; the events before it were applied.
    pub const FIRST_VERSION: &str = "FirstVersion";
    /// Header: the highest version parked; every version from the first
    /// parked one up to it is parked.
    pub const LAST_VERSION: &str = "LastVersion";
    /// Why: on the header the last failure, on an event why it was parked.
    pub const ERROR: &str = "Error";
    pub const PARKED_AT: &str = "ParkedAt";
    pub const UPDATED_AT: &str = "UpdatedAt";
    /// Header: who asked for a skip, and why (the skip's audit).
    pub const REASON: &str = "Reason";
    /// Event: the parked event's id, type and aggregate type, as far as the
    /// stored item tells them.
    pub const EVENT_ID: &str = "EventId";
    pub const EVENT_TYPE: &str = "EventType";
    pub const AGGREGATE_TYPE: &str = "AggregateType";
    /// Event: where it was in the stream.
    pub const SHARD_ID: &str = "ShardId";
    pub const SEQUENCE_NUMBER: &str = "SequenceNumber";
    /// The header's version.
    pub const HEADER: i64 = 0;
    /// The values of `Status`.
    pub const STATUS_PARKED: &str = "PARKED";
    pub const STATUS_RETRY: &str = "RETRY";
    pub const STATUS_SKIP: &str = "SKIP";
}

/// The read-model generations table: one registry item, which the admin
/// service changes with a condition on its revision, and one progress item
/// per rebuild.
pub mod generations {
    /// The item's name: [`REGISTRY`], or `rebuild#<generation>`.
    pub const NAME: &str = "Name";
    /// The registry: the generation served and every generation's state.
    pub const REGISTRY: &str = "registry";
    /// Registry: raised by every change; each change is conditioned on it.
    pub const REVISION: &str = "Revision";
    /// Registry: the generation the query service serves.
    pub const SERVING: &str = "Serving";
    /// Registry: a map from each generation's number to its state
    /// (`BUILDING`, `SERVING`, `STANDBY`, `DROPPING`, `DROPPED`).
    pub const STATES: &str = "States";
    /// Progress: the rebuild's phase, its scan segments' positions (a map
    /// from the segment's number to its `LastEvaluatedKey` as JSON, or
    /// `done`), its counters and times.
    pub const PHASE: &str = "Phase";
    pub const SEGMENTS: &str = "Segments";
    pub const EVENTS: &str = "Events";
    pub const ROWS: &str = "Rows";
    pub const UNREADABLE: &str = "Unreadable";
    pub const STARTED_AT: &str = "StartedAt";
    pub const SCAN_STARTED_AT: &str = "ScanStartedAt";
    pub const FINISHED_AT: &str = "FinishedAt";
    pub const SWITCH: &str = "Switch";
    pub const PAGE_SIZE: &str = "PageSize";
    pub const ERROR: &str = "Error";
    /// The progress item of a rebuild.
    pub fn rebuild(generation: u32) -> String {
        format!("rebuild#{generation}")
    }
}

/// The replays table: one item per replay.
pub mod replays {
    pub const REPLAY_ID: &str = "ReplayId";
    /// `PENDING`, `RUNNING`, `COMPLETED` or `FAILED`.
    pub const STATE: &str = "State";
    pub const STATE_PENDING: &str = "PENDING";
    pub const STATE_RUNNING: &str = "RUNNING";
    pub const STATE_COMPLETED: &str = "COMPLETED";
    pub const STATE_FAILED: &str = "FAILED";
    /// An archive replay: EventBridge carries it out and keeps its state
    /// (`DescribeReplay` of `ArchiveReplayName`); no projector takes it.
    pub const STATE_ARCHIVE: &str = "ARCHIVE";
    /// An archive replay's EventBridge name, and the rules it delivers to
    /// (a string set; absent: every rule).
    pub const ARCHIVE_REPLAY_NAME: &str = "ArchiveReplayName";
    pub const RULES: &str = "Rules";
    /// The window: events from `StartTime` (included) to `EndTime`
    /// (excluded), of the types in `EventTypes` (a string set; absent: every
    /// type).
    pub const START_TIME: &str = "StartTime";
    pub const END_TIME: &str = "EndTime";
    pub const EVENT_TYPES: &str = "EventTypes";
    /// Events published so far, and the time of the last one: a replay
    /// taken over goes on from there.
    pub const PUBLISHED: &str = "Published";
    pub const CURSOR: &str = "Cursor";
    /// The projector instance running it, and when it last said so.
    pub const OWNER: &str = "Owner";
    pub const UPDATED_AT: &str = "UpdatedAt";
    pub const REQUESTED_AT: &str = "RequestedAt";
    pub const FINISHED_AT: &str = "FinishedAt";
    pub const ERROR: &str = "Error";
}

/// The admin service's table.
pub mod admin {
    pub const NAME: &str = "Name";
    /// The migration that gives every event its `EventTypeBucket`.
    pub const EVENT_TYPE_BUCKETS_MIGRATION: &str = "migration/event-type-buckets";
    /// Set once a migration has finished.
    pub const DONE: &str = "Done";
    /// How many items a migration rewrote.
    pub const MIGRATED: &str = "Migrated";
    pub const UPDATED_AT: &str = "UpdatedAt";
    /// A skip's audit record: `audit/skip/<aggregate id>/<time>`, with the
    /// reason, the versions skipped and the call's correlation id.
    pub const SKIP_AUDIT_PREFIX: &str = "audit/skip/";
    pub const REASON: &str = "Reason";
    pub const FIRST_VERSION: &str = "FirstVersion";
    pub const LAST_VERSION: &str = "LastVersion";
    pub const CORRELATION_ID: &str = "CorrelationId";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_archive_and_rules_are_named_as_deployed() {
        let tables = Tables::new("shop");
        assert_eq!(tables.event_bus(), "shop-events");
        assert_eq!(tables.event_archive(), "shop-events-archive");
        let rules: Vec<String> = event_rules::ALL
            .iter()
            .map(|rule| tables.event_rule(rule))
            .collect();
        assert_eq!(
            rules,
            [
                "shop-user-events",
                "shop-order-events",
                "shop-orders-with-status",
                "shop-route-planner",
                "shop-route-events"
            ]
        );
    }
}
