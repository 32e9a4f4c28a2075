//! The embedded store: dynoxide serving the DynamoDB API on a local port,
//! its data directory, and its housekeeping (trimming the stream, sweeping
//! expired items).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use dynabridge_aws::{AwsArgs, StaticCredentials, load_sdk_config};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::stream_index::StreamIndex;
use crate::transaction_tokens::StripTransactionTokens;
use crate::{Options, RunError, STORE, StartError, error_chain, shutdown};

/// How often old stream records are trimmed. With the index, a trim that
/// finds nothing costs one index lookup.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);
/// How often expired items are swept. A sweep reads every item of every
/// table with a time to live, so it runs rarely; DynamoDB itself only
/// promises deletion within a few days.
const TTL_SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// How long the store may take to finish its last requests.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The store serving, and its housekeeping, until [`EmbeddedStore::stop`].
#[derive(Debug)]
pub(crate) struct EmbeddedStore {
    stop: shutdown::Trigger,
    /// The server: resolves early only if it fails.
    pub(crate) task: JoinHandle<Result<(), String>>,
    housekeeping: JoinHandle<()>,
}

impl EmbeddedStore {
    /// Opens the store at `database` (see [`open_store`]), installs the
    /// stream index unless `stream_index` is false, and serves it on
    /// `listener`.
    pub(crate) async fn start(
        listener: TcpListener,
        database: &Path,
        ephemeral: bool,
        stream_index: bool,
    ) -> Result<Self, StartError> {
        let db = open_store(database, ephemeral).await?;
        let index = if stream_index {
            // dynoxide has created `_stream_records` by now.
            let path = database.to_owned();
            Some(tokio::task::spawn_blocking(move || StreamIndex::install(&path)).await??)
        } else {
            tracing::warn!("stream record index off: appends slow down as the stream grows");
            None
        };
        let (stop, signal) = shutdown::channel();
        let task = tokio::spawn(dynoxide::server::serve_with_shutdown(
            listener,
            db.clone(),
            signal.clone().wait(),
        ));
        let housekeeping = tokio::spawn(housekeeping(db, index, signal.wait()));
        Ok(Self {
            stop,
            task,
            housekeeping,
        })
    }

    /// Stops the store after a failed start, waiting for it a bounded time.
    pub(crate) async fn abandon(self) {
        let Self {
            stop,
            mut task,
            housekeeping,
        } = self;
        stop.fire();
        let stopped = tokio::time::timeout(STOP_TIMEOUT, async {
            let _ = (&mut task).await;
            let _ = housekeeping.await;
        })
        .await;
        if stopped.is_err() {
            task.abort();
        }
    }

    /// Stops the store, once the services are gone, and says what went
    /// wrong; `ended` is how the server task ended if it already did.
    pub(crate) async fn stop(
        self,
        ended: Option<Result<Result<(), String>, tokio::task::JoinError>>,
    ) -> Vec<RunError> {
        let Self {
            stop,
            mut task,
            housekeeping,
        } = self;
        let mut failures = Vec::new();
        stop.fire();
        match ended {
            Some(joined) => failures.extend(store_ended(joined, false)),
            None => match tokio::time::timeout(STOP_TIMEOUT, &mut task).await {
                Ok(joined) => failures.extend(store_ended(joined, true)),
                Err(_) => {
                    task.abort();
                    failures.push(RunError::StopTimeout {
                        service: STORE,
                        waited: STOP_TIMEOUT,
                    });
                }
            },
        }
        if let Err(err) = housekeeping.await {
            tracing::error!(error = %err, "housekeeping task failed");
        }
        failures
    }
}

fn store_ended(
    joined: Result<Result<(), String>, tokio::task::JoinError>,
    asked: bool,
) -> Option<RunError> {
    match joined {
        Ok(Ok(())) => (!asked).then_some(RunError::StoppedUnasked { service: STORE }),
        Ok(Err(message)) => Some(RunError::Failed {
            service: STORE,
            source: message.into(),
        }),
        Err(err) if err.is_panic() => Some(RunError::Panicked { service: STORE }),
        Err(_) => None,
    }
}

/// The SDK configuration for a client of the embedded store at
/// `aws.endpoint_url`: its local credentials, and unless
/// `strip_transaction_tokens` is false, the [`transaction_tokens`]
/// workaround. Services run as separate processes against a `--store-only`
/// stack use it too.
pub async fn embedded_sdk_config(aws: &AwsArgs, strip_transaction_tokens: bool) -> SdkConfig {
    let sdk = load_sdk_config(aws, Some(StaticCredentials::local())).await;
    if !strip_transaction_tokens {
        return sdk;
    }
    sdk.into_builder()
        .http_client(StripTransactionTokens::with_default_client())
        .build()
}

/// The data directory, and the temporary directory to delete on exit in
/// memory mode. The store is a file even then: the stream index needs a
/// second connection, and a second connection cannot reach `:memory:`.
pub(crate) fn prepare_data_dir(
    options: &Options,
) -> Result<(PathBuf, Option<tempfile::TempDir>), StartError> {
    if options.in_memory {
        let dir = tempfile::Builder::new()
            .prefix("dynabridge-local-")
            .tempdir()
            .map_err(|source| StartError::DataDir {
                path: std::env::temp_dir(),
                source,
            })?;
        return Ok((dir.path().to_owned(), Some(dir)));
    }
    std::fs::create_dir_all(&options.data_dir).map_err(|source| StartError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    Ok((options.data_dir.clone(), None))
}

/// Opens the store. A temporary store (`ephemeral`) does not sync its
/// write-ahead log on every commit: it is deleted on exit, so there is no
/// data to keep across a crash, and the sync on every commit (SQLite's
/// default, `synchronous = FULL`) holds the store's one lock through a disk
/// flush. It keeps `synchronous = NORMAL`, which SQLite documents as safe from
/// corruption in WAL mode; the data directory keeps the default.
async fn open_store(path: &Path, ephemeral: bool) -> Result<dynoxide::Database, StartError> {
    let path_str = path
        .to_str()
        .ok_or_else(|| StartError::NonUtf8Path(path.to_owned()))?
        .to_owned();
    tokio::task::spawn_blocking(move || {
        let db = dynoxide::Database::new(&path_str)?;
        if ephemeral {
            // dynoxide sets its pragmas in pairs: this pair leaves
            // `synchronous = NORMAL` and the default cache, temp store and
            // memory map (the bulk-loading cache alone makes every commit
            // walk a 64 MB page cache).
            db.enable_bulk_loading()?;
            db.disable_bulk_loading()?;
        }
        Ok(db)
    })
    .await?
    .map_err(|source| StartError::OpenStore {
        path: path.to_owned(),
        source,
    })
}

/// Once at start and then every [`HOUSEKEEPING_INTERVAL`], trims stream
/// records older than a day (with the stream index); once at start and then
/// every [`TTL_SWEEP_INTERVAL`], deletes expired items (the embedded server
/// has no time to live sweeper of its own). Until `stop`.
async fn housekeeping(
    db: dynoxide::Database,
    mut index: Option<StreamIndex>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            // A clock before 1970 trims nothing.
            .unwrap_or(0);
        let sweep = last_sweep.is_none_or(|at| at.elapsed() >= TTL_SWEEP_INTERVAL);
        if sweep {
            last_sweep = Some(tokio::time::Instant::now());
        }
        if index.is_none() && !sweep {
            continue;
        }
        let db = db.clone();
        let taken = index.take();
        let joined = tokio::task::spawn_blocking(move || {
            let trimmed = taken.as_ref().map(|index| index.trim(now));
            let started = std::time::Instant::now();
            let expired = sweep.then(|| db.sweep_ttl());
            (taken, trimmed, expired, started.elapsed())
        })
        .await;
        let (taken, trimmed, expired, sweep_took) = match joined {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(error = %err, "housekeeping panicked, stopping it");
                return;
            }
        };
        index = taken;
        match trimmed {
            Some(Ok(0)) | None => {}
            Some(Ok(records)) => tracing::info!(records, "stream records older than a day trimmed"),
            Some(Err(err)) => {
                tracing::warn!(error = %error_chain(&err), "trimming stream records failed")
            }
        }
        match expired {
            None => {}
            Some(Ok(items)) => tracing::debug!(
                items,
                took_ms = u64::try_from(sweep_took.as_millis()).unwrap_or(u64::MAX),
                "time to live sweep done"
            ),
            Some(Err(err)) => tracing::warn!(error = %err, "time to live sweep failed"),
        }
    }
}
