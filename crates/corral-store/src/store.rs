//! The [`Store`] trait: what the rest of corral may ask of durable storage.

use std::collections::BTreeMap;

use crate::error::StoreError;
use crate::process::{ProcessEnd, ProcessFilter, ProcessRecord, ProcessStart, ProcessState};

/// Durable storage for corral, independent of the database behind it.
///
/// [`SqliteStore`](crate::SqliteStore) is the embedded implementation; a PostgreSQL one (for fleets)
/// will implement the same trait. The trait is object safe: the daemon holds an `Arc<dyn Store>`.
///
/// # Calling from async code
///
/// Methods are synchronous and block the calling thread until the database answers. Each one is a
/// short, indexed statement or transaction (typically well under a millisecond on SQLite), so calling
/// them directly from a tokio task is fine. Use `spawn_blocking` for bulk work
/// ([`delete_finished_processes`](Self::delete_finished_processes) over a large backlog, unlimited
/// listings), or where the store may wait on a lock held by another process (up to the busy timeout).
///
/// # Atomicity
///
/// Every method is atomic: it applies completely or not at all. The conditional updates
/// ([`mark_process_started`](Self::mark_process_started), [`transition_process`](Self::transition_process),
/// [`finish_process`](Self::finish_process)) are compare-and-set operations: of several callers racing on the
/// same record, exactly one sees `true`.
pub trait Store: Send + Sync {
    /// Inserts a new process record with its labels.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if a record with this id exists; [`StoreError::InvalidInput`] for an empty id,
    /// an `ended_at` that is not set exactly when the state is terminal, or a value the store cannot represent
    /// (`start_ticks` above `i64::MAX`).
    fn insert_process(&self, record: &ProcessRecord) -> Result<(), StoreError>;

    /// Records that a `pending` process was spawned: sets its pid, process group, identity and start time,
    /// and moves it to `running`.
    ///
    /// Returns `true` if it applied, `false` if the record is no longer `pending` (it was finished or
    /// interrupted first); then nothing changes.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if there is no record with this id.
    fn mark_process_started(&self, id: &str, start: &ProcessStart) -> Result<bool, StoreError>;

    /// Moves a live record from one of the `from` states to the live state `to` (compare-and-set), for
    /// example `running` → `interrupting` when a stop begins.
    ///
    /// Returns `true` if it applied, `false` if the record's state is not in `from`.
    /// Terminal states are written only by [`finish_process`](Self::finish_process) and never left.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] if `from` is empty or names a terminal state, or `to` is terminal;
    /// [`StoreError::NotFound`] if there is no record with this id.
    fn transition_process(&self, id: &str, from: &[ProcessState], to: ProcessState) -> Result<bool, StoreError>;

    /// Writes how a process ended, exactly once.
    ///
    /// Applies only while the record is live (`pending`, `running` or `interrupting`) and returns `true`;
    /// otherwise returns `false` and changes nothing, so when an interrupt races a natural exit, the first
    /// writer wins and the second is told it lost.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] if `end.state` is not terminal; [`StoreError::NotFound`] if there is no
    /// record with this id.
    fn finish_process(&self, id: &str, end: &ProcessEnd) -> Result<bool, StoreError>;

    /// The record with this id, if any.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn get_process(&self, id: &str) -> Result<Option<ProcessRecord>, StoreError>;

    /// The records that match `filter`, newest first (by `created_at`, then by insertion order).
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn list_processes(&self, filter: &ProcessFilter) -> Result<Vec<ProcessRecord>, StoreError>;

    /// The number of records in each state. Every state is present, with 0 if no record has it.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn count_processes_by_state(&self) -> Result<BTreeMap<ProcessState, u64>, StoreError>;

    /// Deletes the records in a terminal state that ended before `ended_before` (unix milliseconds) and
    /// returns how many were deleted. Live records are never deleted.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn delete_finished_processes(&self, ended_before: i64) -> Result<u64, StoreError>;

    /// The value stored under `key` in the meta table, if any.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Stores `value` under `key` in the meta table, replacing any previous value.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Proves that the store can commit a write right now, by committing a tiny one. For `/health`.
    ///
    /// # Errors
    ///
    /// The failure that a real write would meet, typically one for which
    /// [`StoreError::is_unavailable`] is true.
    fn health_check(&self) -> Result<(), StoreError>;
}
