//! The flags every consumer of the stream shares: how its instances share
//! the shards (leases), and when its health turns NOT_SERVING. Their
//! environment variables are the same for every consumer: one deployment's
//! configuration sets them for all.

use std::time::Duration;

use dynabridge_runtime::health::HealthArgs;

use crate::control::Timing;
use crate::lease::LeaseSettings;
use crate::monitor::Thresholds;

/// How an instance shares the stream's shards with the others: each shard
/// is read by the one instance that holds its lease (see [`crate::lease`]).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct LeaseArgs {
    /// This process's name in the shard leases, unique among the running
    /// instances of its consumer. Default: the host name (`$HOSTNAME`, the pod's name on
    /// Kubernetes) and a random suffix, so that a restarted process is never
    /// taken for the one before it.
    #[arg(long, env = "DYNABRIDGE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How long a shard lease lasts without a renewal, in milliseconds
    /// (1000 to 60000): another instance takes over a shard this long
    /// after its holder stopped renewing. The holder renews every third of
    /// it.
    #[arg(
        long,
        env = "DYNABRIDGE_LEASE_DURATION_MS",
        default_value_t = LeaseArgs::DEFAULT_DURATION_MS
    )]
    pub lease_duration_ms: u64,
}

impl Default for LeaseArgs {
    fn default() -> Self {
        Self {
            instance_id: None,
            lease_duration_ms: Self::DEFAULT_DURATION_MS,
        }
    }
}

impl LeaseArgs {
    pub const DEFAULT_DURATION_MS: u64 = 10_000;
    /// Above a second, a renewal (a third of it) outlasts an ordinary
    /// DynamoDB call; up to a minute, the renewer beats (every third of it)
    /// well within the shortest liveness window.
    const DURATION_MS: std::ops::RangeInclusive<u64> = 1_000..=60_000;
    const MAX_INSTANCE_ID_LEN: usize = 256;

    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.instance_id
            && (id.trim().is_empty() || id.len() > Self::MAX_INSTANCE_ID_LEN)
        {
            return Err(format!(
                "instance id must be 1 to {} bytes and not blank",
                Self::MAX_INSTANCE_ID_LEN
            ));
        }
        if !Self::DURATION_MS.contains(&self.lease_duration_ms) {
            return Err(format!(
                "lease duration must be between {} and {} ms, not {}",
                Self::DURATION_MS.start(),
                Self::DURATION_MS.end(),
                self.lease_duration_ms
            ));
        }
        Ok(())
    }

    /// The settings of this process; `timing` says how often a standby
    /// looks for free leases, which the head start must outlast.
    pub fn settings(&self, timing: &Timing, consumer: &str) -> LeaseSettings {
        let owner = self.instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| consumer.to_owned());
            format!("{host}-{}", uuid::Uuid::new_v4().simple())
        });
        LeaseSettings {
            owner,
            duration: Duration::from_millis(self.lease_duration_ms),
            head_start: timing.rediscover_every * 2,
        }
    }
}

/// When a consumer's health turns NOT_SERVING.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct StreamHealth {
    #[command(flatten)]
    pub store: HealthArgs,
    /// Liveness turns NOT_SERVING when a processing loop has made no
    /// progress for this long, in milliseconds (30000 to 3600000: an AWS
    /// call may take 15 s before it times out, and a loop may make two
    /// between beats).
    #[arg(
        long,
        env = "DYNABRIDGE_LIVENESS_WINDOW_MS",
        default_value_t = StreamHealth::DEFAULT_LIVENESS_WINDOW_MS
    )]
    pub liveness_window_ms: u64,
    /// Readiness turns NOT_SERVING when the oldest unprocessed stream record
    /// is older than this, in milliseconds (1000 to 86400000).
    #[arg(
        long,
        env = "DYNABRIDGE_MAX_LAG_MS",
        default_value_t = StreamHealth::DEFAULT_MAX_LAG_MS
    )]
    pub max_lag_ms: u64,
}

impl Default for StreamHealth {
    fn default() -> Self {
        Self {
            store: HealthArgs::default(),
            liveness_window_ms: Self::DEFAULT_LIVENESS_WINDOW_MS,
            max_lag_ms: Self::DEFAULT_MAX_LAG_MS,
        }
    }
}

impl StreamHealth {
    pub const DEFAULT_LIVENESS_WINDOW_MS: u64 = 60_000;
    pub const DEFAULT_MAX_LAG_MS: u64 = 60_000;
    const LIVENESS_WINDOW_MS: std::ops::RangeInclusive<u64> = 30_000..=3_600_000;
    const MAX_LAG_MS: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;

    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        self.store.validate()?;
        if !Self::LIVENESS_WINDOW_MS.contains(&self.liveness_window_ms) {
            return Err(format!(
                "liveness window must be between {} and {} ms, not {}",
                Self::LIVENESS_WINDOW_MS.start(),
                Self::LIVENESS_WINDOW_MS.end(),
                self.liveness_window_ms
            ));
        }
        if !Self::MAX_LAG_MS.contains(&self.max_lag_ms) {
            return Err(format!(
                "max lag must be between {} and {} ms, not {}",
                Self::MAX_LAG_MS.start(),
                Self::MAX_LAG_MS.end(),
                self.max_lag_ms
            ));
        }
        Ok(())
    }

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            liveness_window: Duration::from_millis(self.liveness_window_ms),
            max_lag: Duration::from_millis(self.max_lag_ms),
        }
    }
}

/// Every flag a consumer of the stream shares: how often it polls an idle
/// shard, its leases and its health.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ConsumerArgs {
    /// Longest pause between polls of an idle shard, in milliseconds.
    #[arg(
        long,
        env = "DYNABRIDGE_IDLE_POLL_MAX_MS",
        default_value_t = ConsumerArgs::DEFAULT_IDLE_POLL_MAX_MS
    )]
    pub idle_poll_max_ms: u64,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub health: StreamHealth,
}

impl Default for ConsumerArgs {
    fn default() -> Self {
        Self {
            idle_poll_max_ms: Self::DEFAULT_IDLE_POLL_MAX_MS,
            lease: LeaseArgs::default(),
            health: StreamHealth::default(),
        }
    }
}

impl ConsumerArgs {
    pub const DEFAULT_IDLE_POLL_MAX_MS: u64 = 100;

    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        if self.idle_poll_max_ms == 0 {
            return Err("idle poll max must be at least 1 millisecond".into());
        }
        self.lease.validate()?;
        self.health.validate()
    }

    /// Longest pause between polls of an idle shard.
    pub fn idle_poll_max(&self) -> Duration {
        Duration::from_millis(self.idle_poll_max_ms)
    }
}
