//! The SQLite schema, as an append-only list of migrations keyed on `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes a database from version `i` to version `i + 1`; an empty file is version 0.
//! [`migrate`] applies the missing ones in order, each in its own `BEGIN IMMEDIATE` transaction together
//! with the `user_version` bump, so a crash leaves the database at a version boundary.
//!
//! Rules for adding a migration (exec jobs, services, …):
//!
//! - Append a new string; never edit one that has shipped: existing databases already ran it.
//! - Generate the compatibility artefact of the new version (`tests/data/v<N>.sqlite`, see
//!   `tests/compat.rs`) and commit it; older artefacts stay and keep being migrated by the tests.
//! - Foreign keys are enforced by the store, but switched off while migrations run, so a table can be
//!   rebuilt (create new, copy, drop old, rename) without `ON DELETE CASCADE` emptying its children.
//!   [`migrate`] runs `PRAGMA foreign_key_check` before each commit and rolls back on a violation.
//! - `ALTER TABLE … ADD COLUMN` is enough for most changes; states are stored as text without a `CHECK`
//!   constraint, so a new state needs no table rebuild (the code refuses rows it cannot decode).

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{sql, StoreError};

/// Version 1: meta, heartbeat, and the process record with its labels.
///
/// - `process.seq` is an explicit `INTEGER PRIMARY KEY`, so insertion order survives `VACUUM` and
///   labels can refer to a compact integer.
/// - `process.labels` and `process.command` are JSON; `labels` is a copy of the `process_label` rows,
///   written in the same transaction at insert and never updated, so a read is one row and filtering
///   uses the `process_label_kv` index.
/// - Times are unix milliseconds.
const V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE heartbeat (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    beats INTEGER NOT NULL
);
INSERT INTO heartbeat (id, beats) VALUES (1, 0);

CREATE TABLE process (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE CHECK (id <> ''),
    source      TEXT NOT NULL,
    labels      TEXT NOT NULL,
    pid         INTEGER,
    pgid        INTEGER,
    start_ticks INTEGER,
    boot_id     TEXT,
    command     TEXT NOT NULL,
    dir         TEXT,
    state       TEXT NOT NULL,
    exit_code   INTEGER,
    signal      TEXT,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    ended_at    INTEGER
);
CREATE INDEX process_created ON process (created_at, seq);
CREATE INDEX process_state ON process (state, created_at);
CREATE INDEX process_ended ON process (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE process_label (
    process_seq INTEGER NOT NULL REFERENCES process (seq) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (process_seq, key)
) WITHOUT ROWID;
CREATE INDEX process_label_kv ON process_label (key, value);
";

/// Version 2: durable tasks, claimed by nodes with leases.
///
/// - `task.seq` is the submission order: the tie-break of every `submitted_at` ordering (FIFO claims,
///   listings), and stable across `VACUUM` like `process.seq`.
/// - `params`, `result` and `progress` are JSON text; `status` is text without a `CHECK`, like
///   `process.state`.
/// - Indexes, each for one query (`seq` is the rowid, so it ends every index implicitly):
///   - `task_claim (status, task_type, submitted_at, seq)`: the oldest queued task of one type, one index
///     lookup per type; also `count_tasks` (a covering scan, already grouped) and listings by status and type;
///   - `task_queue (status, submitted_at, seq)`: the oldest queued task of any type, `queued_tasks`, listings
///     by status;
///   - `task_submitted (submitted_at, seq)`: listings, newest first;
///   - `task_lease (status, lease_expires_at)`: expired claims, recovery;
///   - `task_completed (completed_at)`, partial: retention.
/// - Times are unix milliseconds.
const V2: &str = "
CREATE TABLE task (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE CHECK (id <> ''),
    task_type        TEXT NOT NULL,
    params           TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    error            TEXT,
    progress         TEXT,
    claimed_by       TEXT,
    lease_expires_at INTEGER,
    submitted_at     INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX task_claim ON task (status, task_type, submitted_at, seq);
CREATE INDEX task_queue ON task (status, submitted_at, seq);
CREATE INDEX task_submitted ON task (submitted_at, seq);
CREATE INDEX task_lease ON task (status, lease_expires_at);
CREATE INDEX task_completed ON task (completed_at) WHERE completed_at IS NOT NULL;
";

/// Version 3: the two task indexes that only queries of one status use hold only that status.
///
/// - `task_queue (submitted_at, seq) WHERE status = 'queued'`: the head of the queue and `queued_tasks`;
/// - `task_lease (lease_expires_at) WHERE status = 'running'`: expired claims and recovery.
///
/// A task that is submitted claimed (every type without a concurrency limit, exec jobs among them) is never
/// in `task_queue`, and its end only deletes its `task_lease` entry instead of moving it to the terminal
/// statuses, where nothing looked it up: measured with `cargo bench -p corral-store --bench jobs`, the store
/// time of one exec job's four writes fell ~12 % (submit + claim ~140 → ~100 µs). The queries that use these
/// indexes write the status out (`status = 'queued'`) and name the index (`INDEXED BY`: without statistics
/// the planner prefers `task_claim` and a sort). `task_claim` stays whole: `count_tasks` walks it as a
/// covering index, and a listing by status alone sorts its entries (not the rows) for one page.
const V3: &str = "
DROP INDEX task_queue;
CREATE INDEX task_queue ON task (submitted_at, seq) WHERE status = 'queued';
DROP INDEX task_lease;
CREATE INDEX task_lease ON task (lease_expires_at) WHERE status = 'running';
";

/// Version 4: a process's timeout and grace, so that a daemon re-attaching it after a crash enforces the
/// one and stops it with the other (both durations in milliseconds, NULL when not given).
const V4: &str = "
ALTER TABLE process ADD COLUMN timeout_ms INTEGER;
ALTER TABLE process ADD COLUMN grace_ms INTEGER;
";

/// Every migration, in order. The schema version of a fully migrated database is `MIGRATIONS.len()`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Reads `PRAGMA user_version`.
pub(crate) fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql("read schema version"))
}

/// Refuses a database written by a newer build.
pub(crate) fn check_not_too_new(found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it found.
///
/// Leaves `foreign_keys` off: the caller switches it on afterwards (it cannot change inside a transaction).
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let found = user_version(conn)?;
    check_not_too_new(found)?;
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(sql("migrate"))?;
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("migrate"))?;
        // Read again under the write lock: another process may have migrated meanwhile.
        let current = user_version(&tx)?;
        check_not_too_new(current)?;
        if current >= version {
            continue;
        }
        tracing::info!(from = current, to = version, "migrating store schema");
        tx.execute_batch(migration).map_err(sql("migrate"))?;
        let violations: i64 = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| row.get(0))
            .map_err(sql("migrate"))?;
        if violations > 0 {
            return Err(StoreError::Migration {
                version,
                reason: format!("{violations} foreign key violations"),
            });
        }
        tx.pragma_update(None, "user_version", version)
            .map_err(sql("migrate"))?;
        tx.commit().map_err(sql("migrate"))?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_from_empty_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().expect("UNWRAP: in-memory database");
        assert_eq!(migrate(&mut conn).expect("UNWRAP: migrate"), 0);
        assert_eq!(user_version(&conn).expect("UNWRAP: version"), SCHEMA_VERSION);
        assert_eq!(migrate(&mut conn).expect("UNWRAP: migrate again"), SCHEMA_VERSION);
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .expect("UNWRAP: list tables");
        assert_eq!(tables, ["heartbeat", "meta", "process", "process_label", "task"]);
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let mut conn = Connection::open_in_memory().expect("UNWRAP: in-memory database");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("UNWRAP: set version");
        let err = migrate(&mut conn).expect_err("UNWRAP: too new");
        assert!(
            matches!(err, StoreError::TooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION)
        );
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .expect("UNWRAP: count tables");
        assert_eq!(tables, 0);
    }
}
