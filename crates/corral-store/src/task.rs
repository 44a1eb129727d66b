//! The task record: one durable task, claimed by a node with a lease while it runs.
//!
//! Tasks are designed for fleets: many daemons (*nodes*) sharing one store claim queued tasks with
//! time-limited leases. On one machine with SQLite it is the same code with a single node.
//!
//! See [`TaskRecord`] for the lifecycle and what each status implies about the other fields.
//!
//! The store keeps what the caller gives it; it does not know what a task type means. Times are unix
//! milliseconds supplied by the caller (the store never reads a clock), and node ids are opaque strings.

use std::fmt;
use std::str::FromStr;

/// The lifecycle status of a task.
///
/// The order of the variants (used by `Ord`) is the lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskStatus {
    /// Waiting to be claimed by a node.
    Queued,
    /// Claimed by a node, which holds a lease on it and runs it.
    Running,
    /// Its handler succeeded. Terminal.
    Completed,
    /// Its handler failed. Terminal, but submitting the same id again queues it again.
    Failed,
    /// Cancelled before it completed. Terminal.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The terminal statuses: the task will not run again (except a `failed` one that is submitted again).
    pub const TERMINAL: [TaskStatus; 3] = [Self::Completed, Self::Failed, Self::Cancelled];

    /// The lower-case name, as stored and as shown to users.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True for `completed`, `failed` and `cancelled`.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = ParseTaskStatusError;

    /// Parses the lower-case name (`"queued"`); anything else is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseTaskStatusError { input: s.to_owned() })
    }
}

/// The error of parsing a [`TaskStatus`] from a string that names no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {input:?}; expected one of queued, running, completed, failed, cancelled")]
pub struct ParseTaskStatusError {
    /// The string that was not a status.
    pub input: String,
}

/// The durable record of one task.
///
/// ```text
///   submit (new id)           claim (attempt += 1)                    finish (by the claiming node)
///  ────────────────► queued ──────────────────────────► running ─────────────────► completed | failed | cancelled
///                     ▲  ▲                               │   ▲  │                                  │
///                     │  └────── requeue (by its node) ──┘   └──┘ re-claimed once its lease        │
///                     │                                          expired (another node, attempt+1) │
///                     └────────────── submit again (only from failed) ◄────────────────────────────┘
///
///   cancel: queued | running → cancelled (any node)        delete: any status → gone (the id may be reused)
/// ```
///
/// What each status implies about the other fields (every write of the store keeps these true):
///
/// | status   | `claimed_by`               | `lease_expires_at` | `started_at`         | `completed_at` | `result`, `error` |
/// |----------|----------------------------|--------------------|----------------------|----------------|-------------------|
/// | queued   | none                       | none               | none                 | none           | none              |
/// | running  | the node holding the claim | set                | set (this claim)     | none           | none              |
/// | terminal | the last claimant, if any  | none               | the last claim's, if any | set        | as the finisher wrote them |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Unique id chosen by the submitter (a UUID, validated by callers; the store only refuses an empty one).
    pub id: String,
    /// Which handler runs it. Free text to the store, not empty.
    pub task_type: String,
    /// The handler's input, as first submitted (a later submit of the same id never changes it).
    pub params: serde_json::Value,
    /// The lifecycle status.
    pub status: TaskStatus,
    /// How many times the task has been claimed (started); 0 while it never was. A requeue keeps it.
    pub attempt: u32,
    /// What the handler returned, once terminal (if it returned anything).
    pub result: Option<serde_json::Value>,
    /// Why it failed or was cancelled, for humans.
    pub error: Option<String>,
    /// The last progress report of the handler. Cleared when the task goes back to `queued`, kept when it ends.
    pub progress: Option<serde_json::Value>,
    /// The node that holds the claim while `running`; once terminal, the node that ran it last (if any).
    pub claimed_by: Option<String>,
    /// Until when the claim is valid while `running`, unix milliseconds. After it, another node may claim
    /// the task.
    pub lease_expires_at: Option<i64>,
    /// When it was first submitted, unix milliseconds. Orders the queue (FIFO) and listings.
    pub submitted_at: i64,
    /// When the current (or last) claim started it, unix milliseconds.
    pub started_at: Option<i64>,
    /// When it reached its terminal status, unix milliseconds.
    pub completed_at: Option<i64>,
    /// When its status, progress, result or error last changed, unix milliseconds. Lease renewals do not count.
    pub updated_at: i64,
}

/// A task to submit with [`Store::submit_task`](crate::Store::submit_task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Unique id chosen by the submitter (deterministic ids make submits idempotent). Not empty.
    pub id: String,
    /// Which handler runs it. Not empty.
    pub task_type: String,
    /// The handler's input.
    pub params: serde_json::Value,
    /// The time of this submit, unix milliseconds.
    pub submitted_at: i64,
}

/// What [`Store::submit_task`](crate::Store::submit_task) did, with the task as it is now stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// The id was new: the task was inserted, `queued`.
    Created(TaskRecord),
    /// A task with this id exists and is not `failed`: nothing changed.
    Existing(TaskRecord),
    /// A task with this id had `failed`: it is `queued` again (same params and attempt count).
    Requeued(TaskRecord),
}

impl Submitted {
    /// The task as stored after the submit.
    pub fn record(&self) -> &TaskRecord {
        match self {
            Self::Created(record) | Self::Existing(record) | Self::Requeued(record) => record,
        }
    }

    /// The task as stored after the submit.
    pub fn into_record(self) -> TaskRecord {
        match self {
            Self::Created(record) | Self::Existing(record) | Self::Requeued(record) => record,
        }
    }

    /// True when the task was queued by this submit ([`Created`](Self::Created) or
    /// [`Requeued`](Self::Requeued)), so the caller should schedule it.
    pub fn is_queued_now(&self) -> bool {
        matches!(self, Self::Created(_) | Self::Requeued(_))
    }
}

/// How a task ended: written once by [`Store::finish_task`](crate::Store::finish_task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    /// The terminal status. Must be terminal.
    pub status: TaskStatus,
    /// What the handler returned, if anything.
    pub result: Option<serde_json::Value>,
    /// Why it failed, for humans.
    pub error: Option<String>,
    /// When it ended, unix milliseconds.
    pub completed_at: i64,
}

/// Which tasks [`Store::list_tasks`](crate::Store::list_tasks) returns. The default matches every task,
/// without a limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// The task must have one of these statuses; empty means any status.
    pub statuses: Vec<TaskStatus>,
    /// The task must have this type.
    pub task_type: Option<String>,
    /// At most this many tasks (the newest).
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(status.is_terminal(), TaskStatus::TERMINAL.contains(&status));
        }
        let err = "Queued"
            .parse::<TaskStatus>()
            .expect_err("UNWRAP: names are lower-case");
        assert_eq!(err.input, "Queued");
        assert!("".parse::<TaskStatus>().is_err());
        assert!("canceled".parse::<TaskStatus>().is_err(), "one spelling only");
        let names: Vec<_> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["queued", "running", "completed", "failed", "cancelled"]);
    }

    #[test]
    fn submitted_exposes_its_record() {
        let record = TaskRecord {
            id: "t".to_owned(),
            task_type: "noop".to_owned(),
            params: serde_json::Value::Null,
            status: TaskStatus::Queued,
            attempt: 0,
            result: None,
            error: None,
            progress: None,
            claimed_by: None,
            lease_expires_at: None,
            submitted_at: 1,
            started_at: None,
            completed_at: None,
            updated_at: 1,
        };
        let created = Submitted::Created(record.clone());
        assert!(created.is_queued_now());
        assert!(Submitted::Requeued(record.clone()).is_queued_now());
        let existing = Submitted::Existing(record.clone());
        assert!(!existing.is_queued_now());
        assert_eq!(existing.record(), &record);
        assert_eq!(created.into_record(), record);
    }
}
