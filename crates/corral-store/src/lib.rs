//! corral's durable store: the [`Store`] trait and [`SqliteStore`], its embedded SQLite implementation.
//!
//! The store is where corral's ground truth lives besides the kernel: the records of the processes the
//! daemon started (who owns them, how to recognise them after a restart, how they ended), the durable tasks
//! that nodes claim with leases, and a small key/value table for the daemon's own bookkeeping. Later
//! migrations add exec jobs and services to the same database.
//!
//! It does not know what a process *is*: it never spawns, signals or inspects one, and a pid is just a
//! number in a row. Nor does it know what a task does: a task type is a string and its params a JSON value.
//! It knows nothing about HTTP or wire formats either (its types do not implement `Serialize`); corral-core
//! maps between records and the running system, and the `corral` binary decides what goes over the wire.
//!
//! # Overview
//!
//! - [`Store`]: the operations, object safe (`Arc<dyn Store>`), synchronous, each one atomic. A PostgreSQL
//!   implementation for fleets will implement the same trait.
//! - [`SqliteStore`]: one SQLite file in WAL mode, migrated on open; its docs explain durability
//!   (a committed write survives a crash of the process) and concurrency (one connection behind a mutex).
//! - [`ProcessRecord`] and its [`ProcessState`]: a record is `pending`, then `running`, maybe
//!   `interrupting`, and ends in exactly one terminal state, written once by [`Store::finish_process`].
//! - [`TaskRecord`] and its [`TaskStatus`]: a task is submitted ([`Store::submit_task`], idempotent by id),
//!   claimed by a node with a lease, and finished once by the node that holds the claim; a lease that
//!   expires lets another node claim it. See the [`Store`] docs, "Tasks, claims and leases".
//! - [`StoreError`]: typed failures; [`StoreError::is_unavailable`] tells "the store is down" (read-only,
//!   disk full, locked, corrupt, I/O) from "this request is wrong".
//!
//! # Example
//!
//! ```
//! use corral_store::{ProcessEnd, ProcessFilter, ProcessRecord, ProcessState, SqliteStore, Store};
//!
//! # fn main() -> Result<(), corral_store::StoreError> {
//! let dir = std::env::temp_dir().join(format!("corral-store-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let store = SqliteStore::open(&dir.join("corral.db"))?;
//!
//! let mut record = ProcessRecord::new("p-1", "adhoc", vec!["sleep".into(), "1".into()], 1_700_000_000_000);
//! record.labels.insert("session".into(), "s-42".into());
//! store.insert_process(&record)?;
//! assert_eq!(store.get_process("p-1")?, Some(record));
//!
//! // The terminal state is written exactly once.
//! let end = ProcessEnd { state: ProcessState::Completed, exit_code: Some(0), signal: None, error: None, ended_at: 1_700_000_001_000 };
//! assert!(store.finish_process("p-1", &end)?);
//! assert!(!store.finish_process("p-1", &ProcessEnd { state: ProcessState::Interrupted, ..end })?);
//!
//! let mut filter = ProcessFilter::default();
//! filter.labels.insert("session".into(), "s-42".into());
//! let found = store.list_processes(&filter)?;
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].state, ProcessState::Completed);
//! # drop(store);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```
//!
//! A task, submitted idempotently, claimed by a node with a lease, finished once by that node:
//!
//! ```
//! use corral_store::{NewTask, SqliteStore, Store, Submitted, TaskEnd, TaskStatus};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), corral_store::StoreError> {
//! let store = SqliteStore::open_in_memory()?;
//! let new = NewTask {
//!     id: "6f1c2d3e-0000-4000-8000-000000000001".into(),
//!     task_type: "build".into(),
//!     params: json!({ "target": "release" }),
//!     submitted_at: 1_000,
//! };
//! assert!(matches!(store.submit_task(&new)?, Submitted::Created(_)));
//! assert!(matches!(store.submit_task(&new)?, Submitted::Existing(_)), "idempotent");
//!
//! let now = 2_000;
//! let task = store.claim_next_task(&["build".to_owned()], "node-a", now + 30_000, now)?.expect("queued");
//! assert_eq!((task.status, task.attempt), (TaskStatus::Running, 1));
//! assert!(store.renew_task_lease(&task.id, "node-a", now + 60_000)?);
//!
//! let end = TaskEnd { status: TaskStatus::Completed, result: Some(json!({ "ok": true })), error: None, completed_at: 3_000 };
//! assert!(!store.finish_task(&task.id, "node-b", &end)?, "only the node holding the claim");
//! assert!(store.finish_task(&task.id, "node-a", &end)?);
//! assert!(!store.finish_task(&task.id, "node-a", &end)?, "exactly once");
//! # Ok(())
//! # }
//! ```

mod error;
mod process;
mod sqlite;
mod store;
mod task;

pub use error::{BackendError, StoreError};
pub use process::{ParseProcessStateError, ProcessEnd, ProcessFilter, ProcessRecord, ProcessStart, ProcessState};
pub use sqlite::{SqliteStore, StoreOptions};
pub use store::Store;
pub use task::{NewTask, ParseTaskStatusError, Submitted, TaskEnd, TaskFilter, TaskRecord, TaskStatus};
