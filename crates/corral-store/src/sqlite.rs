//! [`SqliteStore`]: the embedded [`Store`], one SQLite file in WAL mode.

mod migrations;
mod tasks;

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::FromSql;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use crate::error::{is_unique_violation, sql, StoreError};
use crate::process::{ProcessEnd, ProcessFilter, ProcessRecord, ProcessStart, ProcessState};
use crate::store::Store;
use crate::task::{NewTask, Submitted, TaskEnd, TaskFilter, TaskRecord, TaskStatus};

/// How to open a [`SqliteStore`]. Build it with struct update syntax:
/// `StoreOptions { synchronous_full: true, ..StoreOptions::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// `synchronous=FULL` instead of `NORMAL`: every commit is flushed to disk and survives a power loss,
    /// not only a crash of the process. Default `false`.
    pub synchronous_full: bool,
    /// How long a call waits for a lock held by another connection before failing with
    /// [`StoreError::Busy`]. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            synchronous_full: false,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite implementation of [`Store`]: one database file in WAL mode, migrated when opened.
///
/// # Durability
///
/// The database runs in WAL mode. With the default `synchronous=NORMAL`, a transaction is durable once
/// `commit` returns **as far as a crash of the process is concerned** (a `kill -9` of the daemon loses
/// nothing that was acknowledged): the commit is in the WAL file, in the kernel's page cache. A power
/// loss or kernel crash may lose the transactions committed since the last checkpoint (the WAL is synced
/// at each checkpoint), but never corrupts the database. [`StoreOptions::synchronous_full`] makes every commit wait for an `fsync` of the WAL,
/// which survives power loss too, at the cost of one disk flush per commit.
///
/// # Concurrency
///
/// One `rusqlite::Connection` behind a `Mutex` serves every call: SQLite allows one writer at a time
/// anyway, and each call is short. Readers wait for the mutex too; if reads ever contend, a small pool of
/// read-only connections can be added (WAL lets them read while the writer writes) without changing the
/// [`Store`] trait. A mutex poisoned by a panic is taken over: an open transaction is rolled back when its
/// guard drops during unwinding, so the connection is consistent.
///
/// Checkpoints (copying the WAL into the database file, with their `fsync`s) run on a thread of the store
/// with its own connection, every few hundred calls, so that they do not happen inside a commit on a
/// request's path; SQLite's own checkpoint inside a commit remains, every ~8,000 pages, to copy what is left
/// and start the WAL over.
///
/// Other processes may open the same file (`corral` itself prevents two daemons on one state directory);
/// a lock held by another connection is waited for up to [`StoreOptions::busy_timeout`], then reported
/// as [`StoreError::Busy`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// `None` for an in-memory store.
    path: Option<PathBuf>,
    /// Checkpoints the WAL in the background; `None` for in-memory and read-only stores.
    checkpointer: Option<Checkpointer>,
    /// Calls since the store opened, to ask for a checkpoint every [`CHECKPOINT_EVERY`] calls.
    calls: AtomicU64,
}

/// Ask for a background checkpoint every this many store calls (~1,000 WAL pages at 5–10 pages per write).
const CHECKPOINT_EVERY: u64 = 256;

/// SQLite's own checkpoint, inside a commit, when the WAL has grown past this many pages (~32 MiB). A
/// background checkpoint runs beside the writer, so under a steady load it rarely copies *every* frame, and
/// only a checkpoint that did lets the next commit start the WAL file over. This one, inside a commit, finds
/// little left to copy and starts the WAL over, so that it stays bounded. Measured in the exec benchmark: at
/// 20,000 pages the WAL grew to its 64 MiB size limit and WAL writes cost about twice as much (waiting on
/// the writeback of dirty pages); at 2,000 pages the checkpoints inside commits brought the 1-client p99
/// back to ~8 ms; 8,000 kept it at ~3 ms.
const AUTOCHECKPOINT_PAGES: i64 = 8_000;

/// A thread with its own connection that runs `PRAGMA wal_checkpoint(PASSIVE)` when asked, so that
/// checkpoints (page copies and their `fsync`s) happen beside the writer, not inside a commit on a request's
/// path. PASSIVE never blocks the writer or readers: it copies what it can, and a later one copies the rest.
struct Checkpointer {
    /// Dropped first, which ends the thread.
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread over a new connection to `path`. `None` (with a warning) if it cannot: SQLite's own
    /// checkpoints then do the work, inside commits.
    fn start(path: &Path, options: &StoreOptions) -> Option<Checkpointer> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match Connection::open_with_flags(path, flags).and_then(|conn| {
            conn.busy_timeout(options.busy_timeout)?;
            Ok(conn)
        }) {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(?path, error = %err, "no background checkpoints; SQLite checkpoints inside commits");
                return None;
            }
        };
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("corral-store-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %err, "background checkpoint failed; the next one retries");
                    }
                }
            });
        match thread {
            Ok(thread) => Some(Checkpointer {
                wake: Some(wake),
                thread: Some(thread),
            }),
            Err(err) => {
                tracing::warn!(error = %err, "no background checkpoints; SQLite checkpoints inside commits");
                None
            }
        }
    }

    /// Asks for a checkpoint; never blocks (one already asked for is enough).
    fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The columns of `process` (as `p`) that make a [`ProcessRecord`], in the order [`decode_process`] reads them.
const PROCESS_COLUMNS: &str = "p.id, p.source, p.labels, p.pid, p.pgid, p.start_ticks, p.boot_id, p.command, p.dir, \
     p.state, p.exit_code, p.signal, p.error, p.created_at, p.started_at, p.ended_at, p.timeout_ms, p.grace_ms";

impl SqliteStore {
    /// The schema version this build reads and writes (`PRAGMA user_version` of a migrated database).
    pub const SCHEMA_VERSION: i64 = migrations::SCHEMA_VERSION;

    /// Opens the database at `path` with default [`StoreOptions`], creating the file and its parent
    /// directories if needed, and migrates it to [`SCHEMA_VERSION`](Self::SCHEMA_VERSION).
    ///
    /// # Errors
    ///
    /// [`StoreError::TooNew`] if a newer corral wrote it (nothing is changed); [`StoreError::Corrupt`] if the
    /// file is not a database; [`StoreError::CreateDir`], [`StoreError::Io`], [`StoreError::ReadOnly`] or
    /// [`StoreError::Busy`] if it cannot be opened for writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// [`open`](Self::open) with explicit options.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn open_with(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        // No SQLITE_OPEN_URI: a path is a path, even if it starts with "file:".
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql("open"))?;
        let store = Self::set_up(conn, options, Some(path.to_owned()))?;
        Ok(store)
    }

    /// Opens an existing database without write access: every write fails with [`StoreError::ReadOnly`].
    /// For tools that inspect a store another process owns. Nothing is created or migrated. (SQLite still
    /// needs the `-shm` file next to a WAL database, or a directory where it may create it.)
    ///
    /// # Errors
    ///
    /// [`StoreError::TooNew`] or [`StoreError::TooOld`] if the schema is not exactly
    /// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION); [`StoreError::Io`] if the file does not exist;
    /// [`StoreError::Corrupt`] if it is not a database.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql("open"))?;
        conn.busy_timeout(StoreOptions::default().busy_timeout)
            .map_err(sql("open"))?;
        let found = migrations::user_version(&conn)?;
        migrations::check_not_too_new(found)?;
        if found < Self::SCHEMA_VERSION {
            return Err(StoreError::TooOld {
                found,
                supported: Self::SCHEMA_VERSION,
            });
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path: Some(path.to_owned()),
            checkpointer: None,
            calls: AtomicU64::new(0),
        })
    }

    /// A fresh, private, migrated database in memory, gone when the store is dropped. For tests.
    ///
    /// # Errors
    ///
    /// Only if SQLite cannot allocate it.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(sql("open"))?;
        Self::set_up(conn, &StoreOptions::default(), None)
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Sets the pragmas, migrates, and switches foreign keys on.
    fn set_up(mut conn: Connection, options: &StoreOptions, path: Option<PathBuf>) -> Result<Self, StoreError> {
        conn.busy_timeout(options.busy_timeout).map_err(sql("open"))?;
        if path.is_some() {
            // The first statement that reads the file: a file that is not a database fails here.
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(sql("open"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(?path, %mode, "SQLite refused WAL mode; using its journal mode instead");
            }
        }
        let synchronous = if options.synchronous_full { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(sql("open"))?;
        // Truncate the WAL file back to this size after a checkpoint, so a burst does not leave it large.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(sql("open"))?;
        let found = migrations::migrate(&mut conn)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(sql("open"))?;
        // Checkpoints in the background, once the schema is in place; SQLite's own only as a backstop.
        let checkpointer = path.as_deref().and_then(|path| Checkpointer::start(path, options));
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
                .map_err(sql("open"))?;
        }
        // Refreshes the planner's statistics when they are missing or stale (cheap; bounded by analysis_limit).
        conn.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;")
            .map_err(sql("open"))?;
        tracing::debug!(
            ?path,
            from = found,
            to = Self::SCHEMA_VERSION,
            synchronous,
            "store opened"
        );
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            checkpointer,
            calls: AtomicU64::new(0),
        })
    }

    /// The connection. A poisoned mutex is taken over (see "Concurrency" on [`SqliteStore`]).
    fn lock(&self) -> MutexGuard<'_, Connection> {
        if let Some(checkpointer) = &self.checkpointer {
            if self.calls.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
                checkpointer.wake();
            }
        }
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store for SqliteStore {
    fn insert_process(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        const OP: &str = "insert process";
        if record.id.is_empty() {
            return Err(StoreError::InvalidInput {
                field: "id",
                reason: "must not be empty".to_owned(),
            });
        }
        if record.state.is_terminal() != record.ended_at.is_some() {
            return Err(StoreError::InvalidInput {
                field: "ended_at",
                reason: format!(
                    "must be set exactly when the state is terminal (state {})",
                    record.state
                ),
            });
        }
        let start_ticks = ticks_to_sql(record.start_ticks)?;
        let labels = to_json("labels", &record.labels)?;
        let command = to_json("command", &record.command)?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        tx.prepare_cached(
            "INSERT INTO process (id, source, labels, pid, pgid, start_ticks, boot_id, command, dir, state, \
             exit_code, signal, error, created_at, started_at, ended_at, timeout_ms, grace_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                record.id,
                record.source,
                labels,
                record.pid,
                record.pgid,
                start_ticks,
                record.boot_id,
                command,
                record.dir,
                record.state.as_str(),
                record.exit_code,
                record.signal,
                record.error,
                record.created_at,
                record.started_at,
                record.ended_at,
                ms_to_sql("timeout_ms", record.timeout_ms)?,
                ms_to_sql("grace_ms", record.grace_ms)?,
            ])
        })
        .map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::Conflict {
                    what: "process",
                    id: record.id.clone(),
                }
            } else {
                StoreError::from_sqlite(OP, err)
            }
        })?;
        let seq = tx.last_insert_rowid();
        if !record.labels.is_empty() {
            let mut stmt = tx
                .prepare_cached("INSERT INTO process_label (process_seq, key, value) VALUES (?1, ?2, ?3)")
                .map_err(sql(OP))?;
            for (key, value) in &record.labels {
                stmt.execute(params![seq, key, value]).map_err(sql(OP))?;
            }
        }
        tx.commit().map_err(sql(OP))
    }

    fn mark_process_started(&self, id: &str, start: &ProcessStart) -> Result<bool, StoreError> {
        const OP: &str = "mark process started";
        let start_ticks = ticks_to_sql(start.start_ticks)?;
        let conn = self.lock();
        let changed = conn
            .prepare_cached(
                "UPDATE process SET state = ?2, pid = ?3, pgid = ?4, start_ticks = ?5, boot_id = ?6, started_at = ?7 \
                 WHERE id = ?1 AND state = ?8",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    ProcessState::Running.as_str(),
                    start.pid,
                    start.pgid,
                    start_ticks,
                    start.boot_id,
                    start.started_at,
                    ProcessState::Pending.as_str(),
                ])
            })
            .map_err(sql(OP))?;
        applied_or_not_found(&conn, OP, id, changed)
    }

    fn transition_process(&self, id: &str, from: &[ProcessState], to: ProcessState) -> Result<bool, StoreError> {
        const OP: &str = "transition process";
        if from.is_empty() {
            return Err(StoreError::InvalidInput {
                field: "from",
                reason: "must name at least one state".to_owned(),
            });
        }
        if let Some(state) = from.iter().find(|state| state.is_terminal()) {
            return Err(StoreError::InvalidInput {
                field: "from",
                reason: format!("{state} is terminal; a terminal state is never left"),
            });
        }
        if to.is_terminal() {
            return Err(StoreError::InvalidInput {
                field: "to",
                reason: format!("{to} is terminal; use finish_process to end a process"),
            });
        }
        let sql_text = format!(
            "UPDATE process SET state = ?1 WHERE id = ?2 AND state IN ({})",
            placeholders(3, from.len())
        );
        let values = [to.as_str(), id]
            .into_iter()
            .chain(from.iter().map(|state| state.as_str()));
        let conn = self.lock();
        let changed = conn
            .prepare_cached(&sql_text)
            .and_then(|mut stmt| stmt.execute(params_from_iter(values)))
            .map_err(sql(OP))?;
        applied_or_not_found(&conn, OP, id, changed)
    }

    fn finish_process(&self, id: &str, end: &ProcessEnd) -> Result<bool, StoreError> {
        const OP: &str = "finish process";
        if !end.state.is_terminal() {
            return Err(StoreError::InvalidInput {
                field: "state",
                reason: format!("{} is not terminal", end.state),
            });
        }
        let [live1, live2, live3] = ProcessState::LIVE.map(ProcessState::as_str);
        let conn = self.lock();
        // One conditional UPDATE: atomic, so of two racing finishes exactly one applies.
        let changed = conn
            .prepare_cached(
                "UPDATE process SET state = ?2, exit_code = ?3, signal = ?4, error = ?5, ended_at = ?6 \
                 WHERE id = ?1 AND state IN (?7, ?8, ?9)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    end.state.as_str(),
                    end.exit_code,
                    end.signal,
                    end.error,
                    end.ended_at,
                    live1,
                    live2,
                    live3
                ])
            })
            .map_err(sql(OP))?;
        applied_or_not_found(&conn, OP, id, changed)
    }

    fn get_process(&self, id: &str) -> Result<Option<ProcessRecord>, StoreError> {
        const OP: &str = "get process";
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {PROCESS_COLUMNS} FROM process p WHERE p.id = ?1"))
            .map_err(sql(OP))?;
        let mut rows = stmt.query([id]).map_err(sql(OP))?;
        match rows.next().map_err(sql(OP))? {
            Some(row) => decode_process(row).map(Some),
            None => Ok(None),
        }
    }

    fn list_processes(&self, filter: &ProcessFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        const OP: &str = "list processes";
        let conn = self.lock();
        let Some(drive) = choose_drive(&conn, filter)? else {
            return Ok(Vec::new());
        };
        let (sql_text, values) = list_query(filter, drive);
        let mut stmt = conn.prepare_cached(&sql_text).map_err(sql(OP))?;
        let mut rows = stmt.query(params_from_iter(values.iter())).map_err(sql(OP))?;
        let mut records = Vec::new();
        while let Some(row) = rows.next().map_err(sql(OP))? {
            records.push(decode_process(row)?);
        }
        Ok(records)
    }

    fn count_processes_by_state(&self) -> Result<BTreeMap<ProcessState, u64>, StoreError> {
        const OP: &str = "count processes";
        let mut counts: BTreeMap<ProcessState, u64> = ProcessState::ALL.into_iter().map(|state| (state, 0)).collect();
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT state, count(*) FROM process GROUP BY state")
            .map_err(sql(OP))?;
        let mut rows = stmt.query([]).map_err(sql(OP))?;
        while let Some(row) = rows.next().map_err(sql(OP))? {
            let state = decode_state(&get::<String>(row, 0, "state")?)?;
            let count = get::<i64>(row, 1, "count")?;
            counts.insert(state, u64::try_from(count).unwrap_or(0));
        }
        Ok(counts)
    }

    fn delete_finished_processes(&self, ended_before: i64) -> Result<u64, StoreError> {
        const OP: &str = "delete finished processes";
        let [t1, t2, t3, t4] = ProcessState::TERMINAL.map(ProcessState::as_str);
        let conn = self.lock();
        // Labels go with their record (ON DELETE CASCADE), in the same statement.
        let deleted = conn
            .prepare_cached("DELETE FROM process WHERE ended_at < ?1 AND state IN (?2, ?3, ?4, ?5)")
            .and_then(|mut stmt| stmt.execute(params![ended_before, t1, t2, t3, t4]))
            .map_err(sql(OP))?;
        Ok(deleted as u64)
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        const OP: &str = "get meta";
        let conn = self.lock();
        conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
            .map_err(sql(OP))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        const OP: &str = "set meta";
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut stmt| stmt.execute([key, value]))
        .map_err(sql(OP))?;
        Ok(())
    }

    fn submit_task(&self, new: &NewTask) -> Result<Submitted, StoreError> {
        tasks::submit(&mut self.lock(), new)
    }

    fn submit_claimed_task(&self, new: &NewTask, node: &str, lease_until: i64) -> Result<Submitted, StoreError> {
        tasks::submit_claimed(&mut self.lock(), new, node, lease_until)
    }

    fn claim_task(&self, id: &str, node: &str, lease_until: i64, now: i64) -> Result<Option<TaskRecord>, StoreError> {
        tasks::claim(&mut self.lock(), id, node, lease_until, now)
    }

    fn claim_next_task(
        &self,
        task_types: &[String],
        node: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        tasks::claim_next(&mut self.lock(), task_types, node, lease_until, now)
    }

    fn renew_task_lease(&self, id: &str, node: &str, lease_until: i64) -> Result<bool, StoreError> {
        tasks::renew_lease(&self.lock(), id, node, lease_until)
    }

    fn set_task_progress(
        &self,
        id: &str,
        node: &str,
        progress: &serde_json::Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        tasks::set_progress(&self.lock(), id, node, progress, now)
    }

    fn finish_task(&self, id: &str, node: &str, end: &TaskEnd) -> Result<bool, StoreError> {
        tasks::finish(&self.lock(), id, node, end)
    }

    fn requeue_task(&self, id: &str, node: &str, now: i64) -> Result<bool, StoreError> {
        tasks::requeue(&self.lock(), id, node, now)
    }

    fn cancel_task(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        tasks::cancel(&self.lock(), id, now)
    }

    fn delete_task(&self, id: &str) -> Result<bool, StoreError> {
        tasks::delete(&self.lock(), id)
    }

    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        tasks::get(&self.lock(), id)
    }

    fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        tasks::list(&self.lock(), filter)
    }

    fn count_tasks(&self) -> Result<BTreeMap<(String, TaskStatus), u64>, StoreError> {
        tasks::count(&self.lock())
    }

    fn tasks_to_recover(&self, node: &str, now: i64) -> Result<Vec<TaskRecord>, StoreError> {
        tasks::to_recover(&self.lock(), node, now)
    }

    fn queued_tasks(&self, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
        tasks::queued(&self.lock(), limit)
    }

    fn delete_finished_tasks(&self, completed_before: i64, keep_newest: usize) -> Result<u64, StoreError> {
        tasks::delete_finished(&self.lock(), completed_before, keep_newest)
    }

    fn health_check(&self) -> Result<(), StoreError> {
        const OP: &str = "health check";
        let conn = self.lock();
        // A committed write: fails the way a real write would (read-only, full, locked, I/O error).
        conn.prepare_cached(
            "INSERT INTO heartbeat (id, beats) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET beats = beats + 1",
        )
        .and_then(|mut stmt| stmt.execute([]))
        .map_err(sql(OP))?;
        Ok(())
    }
}

/// `true` if an update changed the row; `false` if the row exists but did not match; `NotFound` otherwise.
fn applied_or_not_found(conn: &Connection, op: &'static str, id: &str, changed: usize) -> Result<bool, StoreError> {
    if changed > 0 {
        return Ok(true);
    }
    let exists = conn
        .prepare_cached("SELECT 1 FROM process WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists([id]))
        .map_err(sql(op))?;
    if exists {
        Ok(false)
    } else {
        Err(StoreError::NotFound {
            what: "process",
            id: id.to_owned(),
        })
    }
}

/// Where a listing starts: which rows SQLite walks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// Walk the `(key, value)` index of the filter's label with this position in `filter.labels`, then look
    /// up each record: cheap when that label is rare.
    Label(usize),
    /// Walk the records newest first and stop at the limit: cheap when every label is common.
    Records,
}

/// Above this many records per label, a label is "common" (see [`choose_drive`]).
const COMMON_LABEL: i64 = 2_000;

/// Picks where a listing starts, or `None` when a label matches no record at all (so nothing can match).
///
/// SQLite's statistics describe the *average* label, but label values are very uneven (`host=a` is on every
/// record, `session=…` on a handful), so the planner alone may walk 100,000 rows to find 10. Instead, count
/// each label's records, stopping at [`COMMON_LABEL`] (so the probe costs at most that many index steps),
/// and start from the rarest label. If all labels are common, start from the records (newest first, or by
/// state), which reaches a limit quickly when matches are dense; without a limit, both ways read every match.
///
/// Worst case: two common labels that rarely meet, with a limit: the walk reads every record (about 40 ms
/// for 100,000 records). Measured on 100,000 records with three labels each: a rare label, alone or with
/// common ones, lists in about 0.1 ms; a common label with `limit = 100` in about 0.3 ms.
fn choose_drive(conn: &Connection, filter: &ProcessFilter) -> Result<Option<Drive>, StoreError> {
    const OP: &str = "list processes";
    if filter.labels.is_empty() {
        return Ok(Some(Drive::Records));
    }
    let mut stmt = conn
        .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM process_label WHERE key = ?1 AND value = ?2 LIMIT ?3)")
        .map_err(sql(OP))?;
    let mut rarest: Option<(usize, i64)> = None;
    for (label_idx, (key, value)) in filter.labels.iter().enumerate() {
        let count: i64 = stmt
            .query_row(params![key, value, COMMON_LABEL], |row| row.get(0))
            .map_err(sql(OP))?;
        if count == 0 {
            return Ok(None);
        }
        if rarest.is_none_or(|(_, fewest)| count < fewest) {
            rarest = Some((label_idx, count));
        }
    }
    Ok(match rarest {
        Some((_, count)) if count >= COMMON_LABEL => Some(Drive::Records),
        Some((label_idx, _)) => Some(Drive::Label(label_idx)),
        None => Some(Drive::Records),
    })
}

/// The SQL and its parameters for a [`ProcessFilter`]. Only placeholders, numbers and fixed text go into the
/// SQL; every value from the filter is a bound parameter.
///
/// `CROSS JOIN` makes SQLite keep the join order chosen by [`choose_drive`]. The other labels are checked
/// with `EXISTS` on `process_label`'s primary key `(process_seq, key)`: one index lookup per record.
fn list_query(filter: &ProcessFilter, drive: Drive) -> (String, Vec<&str>) {
    let mut values: Vec<&str> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let mut sql_text = match drive {
        Drive::Label(_) => {
            format!("SELECT {PROCESS_COLUMNS} FROM process_label d CROSS JOIN process p ON p.seq = d.process_seq")
        }
        Drive::Records => format!("SELECT {PROCESS_COLUMNS} FROM process p"),
    };
    for (label_idx, (key, value)) in filter.labels.iter().enumerate() {
        values.push(key);
        values.push(value);
        let (key_param, value_param) = (values.len() - 1, values.len());
        if drive == Drive::Label(label_idx) {
            conditions.push(format!("d.key = ?{key_param} AND d.value = ?{value_param}"));
        } else {
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM process_label l WHERE l.process_seq = p.seq \
                 AND l.key = ?{key_param} AND l.value = ?{value_param})"
            ));
        }
    }
    if !filter.states.is_empty() {
        conditions.push(format!(
            "p.state IN ({})",
            placeholders(values.len() + 1, filter.states.len())
        ));
        values.extend(filter.states.iter().map(|state| state.as_str()));
    }
    if let Some(source) = &filter.source {
        values.push(source);
        conditions.push(format!("p.source = ?{}", values.len()));
    }
    if !conditions.is_empty() {
        sql_text.push_str(" WHERE ");
        sql_text.push_str(&conditions.join(" AND "));
    }
    sql_text.push_str(" ORDER BY p.created_at DESC, p.seq DESC");
    if let Some(limit) = filter.limit {
        // A number from the caller's usize, not text: nothing to inject. Writing to a String cannot fail.
        let _ = write!(sql_text, " LIMIT {}", i64::try_from(limit).unwrap_or(i64::MAX));
    }
    (sql_text, values)
}

/// `?first, ?first+1, …` (`count` of them).
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads column `idx` of a `process` row; a value of the wrong type is a [`StoreError::Decode`].
fn get<T: FromSql>(row: &Row<'_>, idx: usize, column: &'static str) -> Result<T, StoreError> {
    get_column(row, "process", idx, column)
}

/// Reads column `idx` of a row of `table`; a value of the wrong type is a [`StoreError::Decode`].
fn get_column<T: FromSql>(
    row: &Row<'_>,
    table: &'static str,
    idx: usize,
    column: &'static str,
) -> Result<T, StoreError> {
    row.get(idx).map_err(|err| match err {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => table_decode_error(table, column, err),
        other => StoreError::from_sqlite(if table == "task" { "read task" } else { "read process" }, other),
    })
}

fn decode_error(column: &'static str, reason: impl fmt::Display) -> StoreError {
    table_decode_error("process", column, reason)
}

fn table_decode_error(table: &'static str, column: &'static str, reason: impl fmt::Display) -> StoreError {
    StoreError::Decode {
        table,
        column,
        reason: reason.to_string(),
    }
}

fn decode_state(text: &str) -> Result<ProcessState, StoreError> {
    text.parse().map_err(|err| decode_error("state", err))
}

/// One `process` row, selected with [`PROCESS_COLUMNS`].
fn decode_process(row: &Row<'_>) -> Result<ProcessRecord, StoreError> {
    let labels: String = get(row, 2, "labels")?;
    let command: String = get(row, 7, "command")?;
    let start_ticks: Option<i64> = get(row, 5, "start_ticks")?;
    Ok(ProcessRecord {
        id: get(row, 0, "id")?,
        source: get(row, 1, "source")?,
        labels: serde_json::from_str(&labels).map_err(|err| decode_error("labels", err))?,
        pid: get(row, 3, "pid")?,
        pgid: get(row, 4, "pgid")?,
        start_ticks: start_ticks
            .map(u64::try_from)
            .transpose()
            .map_err(|err| decode_error("start_ticks", err))?,
        boot_id: get(row, 6, "boot_id")?,
        command: serde_json::from_str(&command).map_err(|err| decode_error("command", err))?,
        dir: get(row, 8, "dir")?,
        state: decode_state(&get::<String>(row, 9, "state")?)?,
        exit_code: get(row, 10, "exit_code")?,
        signal: get(row, 11, "signal")?,
        error: get(row, 12, "error")?,
        created_at: get(row, 13, "created_at")?,
        started_at: get(row, 14, "started_at")?,
        ended_at: get(row, 15, "ended_at")?,
        timeout_ms: ms_from_sql(get(row, 16, "timeout_ms")?, "timeout_ms")?,
        grace_ms: ms_from_sql(get(row, 17, "grace_ms")?, "grace_ms")?,
    })
}

/// Milliseconds as SQLite's signed 64-bit integer.
fn ms_to_sql(field: &'static str, ms: Option<u64>) -> rusqlite::Result<Option<i64>> {
    ms.map(i64::try_from)
        .transpose()
        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(format!("{field}: {err}").into()))
}

fn ms_from_sql(ms: Option<i64>, column: &'static str) -> Result<Option<u64>, StoreError> {
    ms.map(u64::try_from)
        .transpose()
        .map_err(|err| decode_error(column, err))
}

/// SQLite integers are signed 64-bit.
fn ticks_to_sql(ticks: Option<u64>) -> Result<Option<i64>, StoreError> {
    ticks
        .map(i64::try_from)
        .transpose()
        .map_err(|_| StoreError::InvalidInput {
            field: "start_ticks",
            reason: "above i64::MAX".to_owned(),
        })
}

fn to_json(field: &'static str, value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::InvalidInput {
        field,
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests;
