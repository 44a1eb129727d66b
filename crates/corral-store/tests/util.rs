//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use corral_store::{
    NewTask, ProcessEnd, ProcessRecord, ProcessStart, ProcessState, SqliteStore, Store, Submitted, TaskEnd, TaskRecord,
    TaskStatus,
};

/// A directory of its own for one test, removed when dropped.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory named after the test.
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("corral-store-tests-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("UNWRAP: create test directory");
        Self { path }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The database file inside it.
    pub(crate) fn db(&self) -> PathBuf {
        self.path.join("corral.db")
    }

    /// Opens (creating) the store at [`db`](Self::db).
    pub(crate) fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.db()).expect("UNWRAP: open store")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A pending `adhoc` record with these labels.
pub(crate) fn record(id: &str, created_at: i64, labels: &[(&str, &str)]) -> ProcessRecord {
    let mut record = ProcessRecord::new(id, "adhoc", vec!["sleep".to_owned(), "1".to_owned()], created_at);
    record.labels = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    record
}

/// How a process started, with plausible values.
pub(crate) fn start(pid: u32) -> ProcessStart {
    ProcessStart {
        pid,
        pgid: pid,
        start_ticks: Some(123_456),
        boot_id: Some("boot-1".to_owned()),
        started_at: 2_000,
    }
}

/// An end in `state`.
pub(crate) fn end(state: ProcessState, exit_code: Option<i32>, ended_at: i64) -> ProcessEnd {
    ProcessEnd {
        state,
        exit_code,
        signal: None,
        error: None,
        ended_at,
    }
}

/// A raw SQLite connection to the same file, to look under the store.
pub(crate) fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("UNWRAP: raw connection")
}

/// A task to submit, with small params naming it.
pub(crate) fn new_task(id: &str, task_type: &str, submitted_at: i64) -> NewTask {
    NewTask {
        id: id.to_owned(),
        task_type: task_type.to_owned(),
        params: serde_json::json!({ "name": id }),
        submitted_at,
    }
}

/// Submits `new_task(id, task_type, submitted_at)`, which must be new.
pub(crate) fn submit(store: &dyn Store, id: &str, task_type: &str, submitted_at: i64) -> TaskRecord {
    match store
        .submit_task(&new_task(id, task_type, submitted_at))
        .expect("UNWRAP: submit")
    {
        Submitted::Created(record) => record,
        other => panic!("{id}: expected Created, got {other:?}"),
    }
}

/// Claims `id` for `node` at `now` with a lease of 1,000 ms; it must be claimable.
pub(crate) fn claim(store: &dyn Store, id: &str, node: &str, now: i64) -> TaskRecord {
    store
        .claim_task(id, node, now + 1_000, now)
        .expect("UNWRAP: claim")
        .unwrap_or_else(|| panic!("{id}: not claimable by {node} at {now}"))
}

/// An end in `status` at `completed_at`, without result or error.
pub(crate) fn task_end(status: TaskStatus, completed_at: i64) -> TaskEnd {
    TaskEnd {
        status,
        result: None,
        error: None,
        completed_at,
    }
}

/// The task, which must exist.
pub(crate) fn task(store: &dyn Store, id: &str) -> TaskRecord {
    store
        .get_task(id)
        .expect("UNWRAP: get task")
        .unwrap_or_else(|| panic!("{id}: no such task"))
}

/// The ids of `tasks`, in order.
pub(crate) fn ids(tasks: &[TaskRecord]) -> Vec<&str> {
    tasks.iter().map(|task| task.id.as_str()).collect()
}
