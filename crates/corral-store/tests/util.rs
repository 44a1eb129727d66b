//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use corral_store::{ProcessEnd, ProcessRecord, ProcessStart, ProcessState, SqliteStore};

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
