//! The [`Store`] trait: what the rest of corral may ask of durable storage.

use std::collections::BTreeMap;

use crate::error::StoreError;
use crate::process::{ProcessEnd, ProcessFilter, ProcessRecord, ProcessStart, ProcessState};
use crate::task::{NewTask, Submitted, TaskEnd, TaskFilter, TaskRecord, TaskStatus};

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
/// ([`delete_finished_processes`](Self::delete_finished_processes) and
/// [`delete_finished_tasks`](Self::delete_finished_tasks) over a large backlog, unlimited listings,
/// [`count_tasks`](Self::count_tasks) over a large table), or where the store may wait on a lock held by
/// another process (up to the busy timeout).
///
/// # Atomicity
///
/// Every method is atomic: it applies completely or not at all. The conditional updates
/// ([`mark_process_started`](Self::mark_process_started), [`transition_process`](Self::transition_process),
/// [`finish_process`](Self::finish_process)) are compare-and-set operations: of several callers racing on the
/// same record, exactly one sees `true`. The same holds for tasks: of several nodes claiming one task, exactly
/// one gets it, and of several finishers exactly one writes the end.
///
/// # Tasks, claims and leases
///
/// Tasks are built for fleets, where many nodes share one store; with SQLite on one machine there is one
/// node. A node *claims* a task ([`claim_task`](Self::claim_task), [`claim_next_task`](Self::claim_next_task))
/// and so holds a *lease* on it until `lease_expires_at`; it renews the lease while the handler runs
/// ([`renew_task_lease`](Self::renew_task_lease)) and writes the end once
/// ([`finish_task`](Self::finish_task)). Every write of a running task names the node and applies only while
/// that node holds the claim, so a node that lost its task (its lease expired and another node claimed it,
/// or the task was cancelled or deleted) is told so by a `false` and must stop the handler without writing.
/// A lease that expired does not end a claim by itself: until another node claims the task, its node may
/// still renew or finish it.
///
/// A node that starts (again) recovers with [`tasks_to_recover`](Self::tasks_to_recover): its own `running`
/// tasks (it crashed, or stopped without [`requeue_task`](Self::requeue_task)) are requeued or run again
/// with a fresh claim, and expired claims of other nodes are taken over with [`claim_task`](Self::claim_task).
/// Task handlers must therefore be idempotent: a task may run more than once (`attempt` counts the claims).
///
/// Task operations never fail with [`StoreError::NotFound`]: a task may be deleted at any moment, and an
/// operation on a missing task reports `false` (or `None`) like any other lost race.
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

    /// Submits a task, idempotently, and returns what happened with the task as now stored. Committed before
    /// it returns: this is the point where a submit becomes durable.
    ///
    /// - The id is unknown: the task is inserted `queued`, attempt 0 → [`Submitted::Created`].
    /// - A task with this id `failed`: it is `queued` again → [`Submitted::Requeued`]. Its claim, lease,
    ///   progress, result, error, `started_at` and `completed_at` are cleared; its params, type,
    ///   `submitted_at` and attempt count are kept as they were (the params of this submit are ignored: an id
    ///   names one piece of work), and `updated_at` is this submit's `submitted_at`.
    /// - Otherwise (queued, running, completed, cancelled): nothing changes → [`Submitted::Existing`].
    ///
    /// The store does not compare the params or type of a repeated submit with the stored ones; a caller that
    /// wants to refuse a mismatch compares them with the returned record. Of any number of concurrent submits
    /// of one new id (from any number of connections or nodes), exactly one sees `Created`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty id or task type.
    fn submit_task(&self, new: &NewTask) -> Result<Submitted, StoreError>;

    /// [`submit_task`](Self::submit_task) for a node that will run the task at once: a task that this submit
    /// creates or queues again is also claimed for `node`, as [`claim_task`](Self::claim_task) with `now =
    /// new.submitted_at` would claim it (`running`, attempt + 1, `started_at`, lease until `lease_until`),
    /// in the same transaction. [`Submitted::Existing`] is returned unchanged, as by `submit_task`.
    ///
    /// The default implementation submits, then claims, in two steps: if the claim fails (another node was
    /// faster), the record is returned as submitted (`queued`). Callers run the task at once only if the
    /// returned record is `running` and claimed by `node`, and queue it otherwise.
    ///
    /// # Errors
    ///
    /// As for [`submit_task`](Self::submit_task) and [`claim_task`](Self::claim_task).
    fn submit_claimed_task(&self, new: &NewTask, node: &str, lease_until: i64) -> Result<Submitted, StoreError> {
        let submitted = self.submit_task(new)?;
        let claim = |record: TaskRecord| -> Result<TaskRecord, StoreError> {
            Ok(self
                .claim_task(&record.id, node, lease_until, new.submitted_at)?
                .unwrap_or(record))
        };
        Ok(match submitted {
            Submitted::Created(record) => Submitted::Created(claim(record)?),
            Submitted::Requeued(record) => Submitted::Requeued(claim(record)?),
            existing @ Submitted::Existing(_) => existing,
        })
    }

    /// Claims the task `id` for `node`: `queued` → `running`, or takes over a `running` task whose lease
    /// expired (`lease_expires_at < now`). Sets `attempt += 1`, `started_at = updated_at = now`,
    /// `claimed_by = node`, `lease_expires_at = lease_until`; clears the progress of an earlier claim.
    ///
    /// Returns the claimed task, or `None` if it is not claimable (another node claimed it and its lease is
    /// still valid, it is terminal, or it does not exist). Of several racing claimers, exactly one gets it.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty node, or a `lease_until` before `now`.
    fn claim_task(&self, id: &str, node: &str, lease_until: i64, now: i64) -> Result<Option<TaskRecord>, StoreError>;

    /// Claims, like [`claim_task`](Self::claim_task), the next task of one of `task_types` (empty: any type):
    /// first a `running` task whose lease expired (the earliest expiry first), then the oldest `queued` one
    /// (by `submitted_at`, then submission order). `None` if there is none. This is what fleet nodes poll;
    /// it costs a few index lookups per type, whatever the length of the queue.
    ///
    /// # Errors
    ///
    /// As for [`claim_task`](Self::claim_task).
    fn claim_next_task(
        &self,
        task_types: &[String],
        node: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<TaskRecord>, StoreError>;

    /// Extends (or shortens) the lease of a `running` task claimed by `node` to `lease_until`.
    ///
    /// Returns `false`, changing nothing, if the task is not `running` or is claimed by another node (it was
    /// taken over, cancelled, requeued or deleted): the node has lost it and should stop its handler.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty node.
    fn renew_task_lease(&self, id: &str, node: &str, lease_until: i64) -> Result<bool, StoreError>;

    /// Records the progress of a `running` task claimed by `node`, replacing the previous report, and sets
    /// `updated_at = now`. Returns `false`, changing nothing, if `node` does not hold the claim.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty node.
    fn set_task_progress(
        &self,
        id: &str,
        node: &str,
        progress: &serde_json::Value,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Writes how a task ended, exactly once: only while it is `running` and claimed by `node` (a node whose
    /// lease expired and whose task another node claimed must not overwrite). Sets the terminal status,
    /// result, error, `completed_at = updated_at = end.completed_at`, and clears the lease (`claimed_by`
    /// stays: the node that ran it). Progress is kept.
    ///
    /// Returns `false`, changing nothing, otherwise; of several racing finishers, exactly one sees `true`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty node or a status that is not terminal.
    fn finish_task(&self, id: &str, node: &str, end: &TaskEnd) -> Result<bool, StoreError>;

    /// Gives a `running` task claimed by `node` back to the queue: `queued`, with its claim, lease, progress and
    /// `started_at` cleared, `updated_at = now`, and its attempt count kept. For a graceful shutdown: a task
    /// stopped because its daemon stops has not failed, and runs again when a node claims it.
    ///
    /// Returns `false`, changing nothing, if `node` does not hold the claim.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty node.
    fn requeue_task(&self, id: &str, node: &str, now: i64) -> Result<bool, StoreError>;

    /// Cancels a `queued` or `running` task, whichever node holds it: `cancelled`, `completed_at = updated_at =
    /// now`, lease cleared. The node running it finds out when its next renew, progress or finish returns
    /// `false`. Returns `false` if the task is terminal or missing.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn cancel_task(&self, id: &str, now: i64) -> Result<bool, StoreError>;

    /// Deletes the task, whatever its status; returns whether it existed. A node running it finds out when
    /// its next write returns `false`. Nothing of the task remains, so a later submit of the same id creates
    /// a fresh task (attempt 0): reusing a deleted id is allowed, and deliberate.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn delete_task(&self, id: &str) -> Result<bool, StoreError>;

    /// The task with this id, if any.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;

    /// The tasks that match `filter`, newest first (by `submitted_at`, then by submission order). Without a
    /// limit this reads every match: callers pass one.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError>;

    /// The number of tasks of each (type, status); only non-zero counts are present. Reads an index of every
    /// task (a few milliseconds per 100,000 tasks).
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn count_tasks(&self) -> Result<BTreeMap<(String, TaskStatus), u64>, StoreError>;

    /// The `running` tasks that a starting node must deal with, oldest first (by `submitted_at`, then
    /// submission order): those claimed by `node` (whatever their lease: the node is starting, so it runs none
    /// of them), and those of any node whose lease expired (`lease_expires_at < now`).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty node.
    fn tasks_to_recover(&self, node: &str, now: i64) -> Result<Vec<TaskRecord>, StoreError>;

    /// The `queued` tasks, oldest first (by `submitted_at`, then submission order), at most `limit` of them:
    /// for a restarting node to fill its in-memory queue.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn queued_tasks(&self, limit: usize) -> Result<Vec<TaskRecord>, StoreError>;

    /// Retention: deletes terminal tasks and returns how many were deleted. A terminal task is deleted when
    /// it completed before `completed_before` (unix milliseconds), **or** when more than `keep_newest` terminal
    /// tasks are newer than it (by `completed_at`, then submission order). So at most `keep_newest` terminal
    /// tasks remain, none older than the cutoff; `usize::MAX` keeps any number, `i64::MIN` keeps any age.
    /// Queued and running tasks are never deleted.
    ///
    /// # Errors
    ///
    /// Database failures only.
    fn delete_finished_tasks(&self, completed_before: i64, keep_newest: usize) -> Result<u64, StoreError>;
}
