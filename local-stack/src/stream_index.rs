//! A workaround for a limitation of a dependency: the embedded store's
//! stream table has no index and is never trimmed.
//!
//! dynoxide-rs 3.2.0 keeps every stream record in one SQLite table,
//! `_stream_records`, with no index beyond its rowid. Every write to a table
//! with a stream runs
//! `SELECT COALESCE(MAX(CAST(sequence_number AS INTEGER)), 0) + 1 FROM _stream_records WHERE table_name = ?1`
//! over the whole table, every GetRecords scans it too, and nothing ever
//! deletes a record. Appends to the event store therefore slow down as the
//! table grows: PutItem on a table with a stream falls from about 2,800/s to
//! about 480/s by 12,000 records.
//!
//! The fix lives outside the dependency. Once dynoxide has opened the file
//! (so that `_stream_records` exists), a second SQLite connection adds
//! - an expression index on `(table_name, CAST(sequence_number AS INTEGER), shard_id)`,
//!   which answers the `MAX` from one end of the index and serves
//!   GetRecords' range (`table_name = ? AND CAST(...) > ?`, in order) and
//!   DescribeStream's `MIN`/`MAX` from the index rather than the table.
//!   dynoxide makes one shard per table, so `shard_id` only needs checking
//!   inside the index. The cast comes second on purpose: with `shard_id`
//!   second, the `MAX` (which does not name the shard) walks every entry of
//!   the table instead (15 ms rather than 0.01 ms at 200,000 records);
//!   one index also costs each write less than two;
//! - an index on `created_at`, so that [`StreamIndex::trim`] finds old
//!   records without a scan.
//!
//! SQLite only uses an expression index when a query spells the expression
//! the same way, so the fix depends on dynoxide's exact SQL. [`StreamIndex::install`]
//! therefore checks, before anything is served, that the table still has
//! the columns we rely on and that `EXPLAIN QUERY PLAN` of each of
//! dynoxide's statements (copied below from its `src/storage.rs`) searches
//! our index. If a newer dynoxide changed either, start-up fails and asks for
//! a review of this module, rather than silently running slow; the
//! `--no-stream-index` flag runs without the workaround.
//!
//! Trimming: DynamoDB keeps stream records for 24 hours. [`StreamIndex::trim`]
//! deletes older ones, in small chunks so that dynoxide's writers (which wait
//! at most 5 s for the lock) are never held up long. A consumer more than a
//! day behind loses records, as it would on DynamoDB (where it would get
//! `TrimmedDataAccessException`). Trimming cannot make sequence numbers go
//! back: dynoxide never hands out one below the current time in
//! microseconds, whatever the table holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

/// How long DynamoDB keeps stream records.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Rows deleted per statement. Each statement is its own short write
/// transaction, so a large trim never holds the lock for long.
pub const TRIM_CHUNK: usize = 1_000;

/// How long our connection waits for dynoxide's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The index every one of dynoxide's stream statements must use.
pub const SEQUENCE_INDEX: &str = "dynabridge_stream_records_by_sequence";
/// The index the trim uses.
pub const CREATED_AT_INDEX: &str = "dynabridge_stream_records_by_created_at";

const CREATE_SEQUENCE_INDEX: &str = "CREATE INDEX IF NOT EXISTS dynabridge_stream_records_by_sequence \
     ON _stream_records (table_name, CAST(sequence_number AS INTEGER), shard_id)";
const CREATE_CREATED_AT_INDEX: &str = "CREATE INDEX IF NOT EXISTS dynabridge_stream_records_by_created_at \
     ON _stream_records (created_at)";

/// The columns of `_stream_records` the indexes and the trim rely on.
const REQUIRED_COLUMNS: [&str; 4] = ["table_name", "shard_id", "sequence_number", "created_at"];

/// dynoxide's `Storage::next_stream_sequence_number`, run on every write to
/// a table with a stream.
const DYNOXIDE_NEXT_SEQUENCE_NUMBER: &str = "SELECT COALESCE(MAX(CAST(sequence_number AS INTEGER)), 0) + 1 FROM _stream_records WHERE table_name = ?1";

/// dynoxide's `Storage::stream_records_with_event_ids`, run by GetRecords.
const DYNOXIDE_GET_RECORDS: &str = "SELECT event_name, keys_json, new_image, old_image, sequence_number, created_at, user_identity, event_id
             FROM _stream_records
             WHERE table_name = ?1 AND shard_id = ?2 AND CAST(sequence_number AS INTEGER) > ?3
             ORDER BY CAST(sequence_number AS INTEGER) ASC
             LIMIT ?4";

/// dynoxide's `Storage::get_shard_sequence_range`, run by DescribeStream
/// and GetShardIterator.
const DYNOXIDE_SHARD_SEQUENCE_RANGE: &str = "SELECT MIN(CAST(sequence_number AS INTEGER)), MAX(CAST(sequence_number AS INTEGER)) FROM _stream_records WHERE table_name = ?1 AND shard_id = ?2";

/// One chunk of the trim: records written before `?1` (Unix seconds, the
/// unit dynoxide stores `created_at` in), oldest first, at most `?2`.
const TRIM_OLDER_THAN: &str = "DELETE FROM _stream_records WHERE rowid IN \
     (SELECT rowid FROM _stream_records WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)";

/// Each statement whose plan is checked, and the index it must search.
const CHECKED_PLANS: [(&str, &str, &str); 4] = [
    (
        "dynoxide next_stream_sequence_number",
        DYNOXIDE_NEXT_SEQUENCE_NUMBER,
        SEQUENCE_INDEX,
    ),
    ("dynoxide get_records", DYNOXIDE_GET_RECORDS, SEQUENCE_INDEX),
    (
        "dynoxide get_shard_sequence_range",
        DYNOXIDE_SHARD_SEQUENCE_RANGE,
        SEQUENCE_INDEX,
    ),
    ("stream record trim", TRIM_OLDER_THAN, CREATED_AT_INDEX),
];

#[derive(Debug, thiserror::Error)]
pub enum StreamIndexError {
    #[error("opening the embedded store's file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The dependency no longer looks like the one this workaround was
    /// written for.
    #[error(
        "the embedded store's stream table is not what the stream index workaround expects ({detail}): \
         a newer dynoxide probably changed its schema or queries, and local-stack/src/stream_index.rs \
         needs review; --no-stream-index runs without the workaround"
    )]
    SchemaChanged { detail: String },
    #[error("stream index: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Our own connection to the embedded store's file, with the indexes in
/// place and checked.
#[derive(Debug)]
pub struct StreamIndex {
    conn: Connection,
}

impl StreamIndex {
    /// Opens a second connection to the file dynoxide has already opened,
    /// checks the schema, creates the indexes (idempotently) and checks that
    /// dynoxide's statements use them.
    pub fn install(database: &Path) -> Result<Self, StreamIndexError> {
        let conn = Connection::open(database).map_err(|source| StreamIndexError::Open {
            path: database.to_owned(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        install_on(&conn)?;
        tracing::info!(
            database = %database.display(),
            index = SEQUENCE_INDEX,
            "stream record indexes in place"
        );
        Ok(Self { conn })
    }

    /// Deletes the stream records written before `now - RETENTION`; returns
    /// how many. `now` is Unix seconds.
    pub fn trim(&self, now_unix_secs: i64) -> Result<usize, StreamIndexError> {
        let retention = i64::try_from(RETENTION.as_secs()).unwrap_or(i64::MAX);
        trim_older_than(
            &self.conn,
            now_unix_secs.saturating_sub(retention),
            TRIM_CHUNK,
        )
    }
}

/// The checks and the indexes, on any connection to the file.
fn install_on(conn: &Connection) -> Result<(), StreamIndexError> {
    check_columns(conn)?;
    conn.execute_batch(CREATE_SEQUENCE_INDEX)?;
    conn.execute_batch(CREATE_CREATED_AT_INDEX)?;
    for (what, sql, index) in CHECKED_PLANS {
        check_plan(conn, what, sql, index)?;
    }
    Ok(())
}

fn check_columns(conn: &Connection) -> Result<(), StreamIndexError> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('_stream_records')")?;
    let columns = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if columns.is_empty() {
        return Err(StreamIndexError::SchemaChanged {
            detail: "there is no _stream_records table".to_owned(),
        });
    }
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .into_iter()
        .filter(|required| !columns.iter().any(|c| c == required))
        .collect();
    if !missing.is_empty() {
        return Err(StreamIndexError::SchemaChanged {
            detail: format!(
                "_stream_records lacks the column(s) {} (it has {})",
                missing.join(", "),
                columns.join(", ")
            ),
        });
    }
    Ok(())
}

/// The lines of `EXPLAIN QUERY PLAN sql`, every parameter bound to NULL
/// (the plan does not depend on the values).
fn query_plan(conn: &Connection, sql: &str) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
    stmt.query_map(rusqlite::params_from_iter(nulls), |row| {
        row.get::<_, String>(3)
    })?
    .collect()
}

/// Fails unless the plan of `sql` searches `index` and neither scans a
/// table nor sorts one.
fn check_plan(
    conn: &Connection,
    what: &str,
    sql: &str,
    index: &str,
) -> Result<(), StreamIndexError> {
    let plan = query_plan(conn, sql).map_err(|err| StreamIndexError::SchemaChanged {
        detail: format!("{what} no longer compiles against _stream_records: {err}"),
    })?;
    let scans = plan
        .iter()
        .any(|line| line.starts_with("SCAN ") || line.contains("TEMP B-TREE"));
    let uses_index = plan
        .iter()
        .any(|line| line.split_whitespace().any(|word| word == index));
    if scans || !uses_index {
        return Err(StreamIndexError::SchemaChanged {
            detail: format!(
                "the plan of {what} does not search {index}: {}",
                plan.join("; ")
            ),
        });
    }
    tracing::debug!(statement = what, plan = %plan.join("; "), "stream query plan checked");
    Ok(())
}

fn trim_older_than(
    conn: &Connection,
    cutoff_unix_secs: i64,
    chunk: usize,
) -> Result<usize, StreamIndexError> {
    let chunk_len = i64::try_from(chunk).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(TRIM_OLDER_THAN)?;
    let mut deleted = 0;
    loop {
        let n = stmt.execute(rusqlite::params![cutoff_unix_secs, chunk_len])?;
        deleted += n;
        if n < chunk {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;
    const HOUR: i64 = 3_600;

    /// A file made by the real dependency, so `_stream_records` is exactly
    /// what dynoxide creates.
    fn dynoxide_file(dir: &Path) -> PathBuf {
        let path = dir.join("dynamodb.sqlite");
        let db = dynoxide::Database::new(path.to_str().unwrap()).unwrap();
        drop(db);
        path
    }

    fn insert_record(conn: &Connection, table: &str, sequence: i64, created_at: i64) {
        conn.execute(
            "INSERT INTO _stream_records (table_name, event_name, keys_json, sequence_number, shard_id, created_at) \
             VALUES (?1, 'INSERT', '{}', ?2, ?3, ?4)",
            rusqlite::params![table, sequence.to_string(), format!("shardId-00000001-{table}"), created_at],
        )
        .unwrap();
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM _stream_records", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn guard_passes_on_a_real_dynoxide_file_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dynoxide_file(dir.path());
        StreamIndex::install(&path).unwrap();
        // A second start finds the indexes there.
        let index = StreamIndex::install(&path).unwrap();
        let indexes: Vec<String> = index
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '_stream_records' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, [CREATED_AT_INDEX, SEQUENCE_INDEX]);
    }

    #[test]
    fn dynoxide_keeps_working_with_the_indexes_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynamodb.sqlite");
        let db = dynoxide::Database::new(path.to_str().unwrap()).unwrap();
        let index = StreamIndex::install(&path).unwrap();
        insert_record(&index.conn, "T", 41, NOW);
        // dynoxide's own statement, through our connection, sees the row
        // through the index.
        let next: i64 = index
            .conn
            .query_row(DYNOXIDE_NEXT_SEQUENCE_NUMBER, ["T"], |r| r.get(0))
            .unwrap();
        assert_eq!(next, 42);
        drop(db);
    }

    #[test]
    fn guard_fails_on_a_table_without_the_expected_columns() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE _stream_records (id INTEGER PRIMARY KEY, table_name TEXT, seq TEXT, created_at INTEGER)",
        )
        .unwrap();
        let err = install_on(&conn).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, StreamIndexError::SchemaChanged { .. }),
            "{message}"
        );
        assert!(message.contains("shard_id"), "{message}");
        assert!(message.contains("sequence_number"), "{message}");
        assert!(message.contains("--no-stream-index"), "{message}");
    }

    #[test]
    fn guard_fails_without_a_stream_table() {
        let conn = Connection::open_in_memory().unwrap();
        let err = install_on(&conn).unwrap_err();
        assert!(
            matches!(err, StreamIndexError::SchemaChanged { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_plan_that_scans_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dynoxide_file(dir.path());
        let conn = Connection::open(&path).unwrap();
        // Without our indexes, dynoxide's statements scan the table.
        for (what, sql, index) in CHECKED_PLANS {
            let err = check_plan(&conn, what, sql, index).unwrap_err();
            assert!(err.to_string().contains("does not search"), "{err}");
        }
    }

    #[test]
    fn a_statement_that_no_longer_compiles_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dynoxide_file(dir.path());
        let conn = Connection::open(&path).unwrap();
        install_on(&conn).unwrap();
        let err = check_plan(
            &conn,
            "renamed column",
            "SELECT MAX(seq) FROM _stream_records WHERE table_name = ?1",
            SEQUENCE_INDEX,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no longer compiles"), "{err}");
    }

    #[test]
    fn trim_deletes_records_older_than_a_day_and_keeps_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dynoxide_file(dir.path());
        let index = StreamIndex::install(&path).unwrap();
        // 2,500 old records, more than two chunks, and 3 recent ones,
        // including one just inside the window.
        for i in 0..2_500 {
            insert_record(&index.conn, "T", i, NOW - 25 * HOUR);
        }
        insert_record(&index.conn, "T", 10_000, NOW - 24 * HOUR + 1);
        insert_record(&index.conn, "T", 10_001, NOW - HOUR);
        insert_record(&index.conn, "U", 10_002, NOW);

        assert_eq!(index.trim(NOW).unwrap(), 2_500);
        assert_eq!(count(&index.conn), 3);
        let kept: Vec<String> = index
            .conn
            .prepare("SELECT sequence_number FROM _stream_records ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kept, ["10000", "10001", "10002"]);
        // Nothing more to do a moment later.
        assert_eq!(index.trim(NOW).unwrap(), 0);
    }

    #[test]
    fn created_at_is_in_seconds_as_the_trim_assumes() {
        // A write through dynoxide itself stamps its stream record in Unix
        // seconds; were it milliseconds, the trim would delete nothing.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynamodb.sqlite");
        let db = dynoxide::Database::new(path.to_str().unwrap()).unwrap();
        let create: dynoxide::actions::create_table::CreateTableRequest =
            serde_json::from_value(serde_json::json!({
                "TableName": "events",
                "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
                "StreamSpecification": {"StreamEnabled": true, "StreamViewType": "NEW_IMAGE"}
            }))
            .unwrap();
        db.create_table(create).unwrap();
        let put: dynoxide::actions::put_item::PutItemRequest = serde_json::from_value(
            serde_json::json!({"TableName": "events", "Item": {"k": {"S": "a"}}}),
        )
        .unwrap();
        db.put_item(put).unwrap();

        let index = StreamIndex::install(&path).unwrap();
        let created_at: i64 = index
            .conn
            .query_row("SELECT created_at FROM _stream_records", [], |r| r.get(0))
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - created_at).abs() < 60,
            "created_at {created_at}, now {now}"
        );
        // A day later, the record goes.
        assert_eq!(
            index
                .trim(created_at + RETENTION.as_secs() as i64 + 1)
                .unwrap(),
            1
        );
        drop(db);
    }
}
