//! [`StoreError`]: one error type for every store operation, whatever the backend.
//!
//! The variants say *what kind* of failure happened, so that callers can act on it without parsing
//! messages: the daemon answers 503 for [`StoreError::is_unavailable`], 409 for
//! [`StoreError::Conflict`], 404 for [`StoreError::NotFound`]. Backend errors (rusqlite today,
//! a PostgreSQL driver later) travel as a boxed `source`, so that no backend type is part of the API;
//! the original error can still be reached with `std::error::Error::source` and `downcast_ref`.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use rusqlite::ffi;
use rusqlite::ErrorCode;

/// The backend's own error (for `SqliteStore`, a `rusqlite::Error`), boxed so that it is not part of the API.
pub type BackendError = Box<dyn StdError + Send + Sync + 'static>;

/// An error from a [`Store`](crate::Store) operation.
///
/// Variants that come from the database carry `op`, a short name of the operation that failed
/// (`"insert process"`, `"open"`, …), and the backend error as `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be written: the file, its directory or its file system is read-only
    /// (`SQLITE_READONLY`), or the store was opened with `SqliteStore::open_read_only`.
    #[error("store is read-only ({op})")]
    ReadOnly {
        /// The operation that failed.
        op: &'static str,
        /// The backend error.
        #[source]
        source: BackendError,
    },
    /// The disk (or the database's size limit) is full (`SQLITE_FULL`).
    #[error("store is full: no space left on the disk or database size limit reached ({op})")]
    Full {
        /// The operation that failed.
        op: &'static str,
        /// The backend error.
        #[source]
        source: BackendError,
    },
    /// Another connection held a lock for longer than the busy timeout (`SQLITE_BUSY`, `SQLITE_LOCKED`).
    #[error("store is busy: locked by another connection for longer than the busy timeout ({op})")]
    Busy {
        /// The operation that failed.
        op: &'static str,
        /// The backend error.
        #[source]
        source: BackendError,
    },
    /// The file is not a database, or the database is damaged (`SQLITE_NOTADB`, `SQLITE_CORRUPT`).
    #[error("store is corrupt or not a database ({op})")]
    Corrupt {
        /// The operation that failed.
        op: &'static str,
        /// The backend error.
        #[source]
        source: BackendError,
    },
    /// The operating system failed a read, write, lock or open (`SQLITE_IOERR`, `SQLITE_CANTOPEN`, …).
    #[error("store I/O error ({op})")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The backend error.
        #[source]
        source: BackendError,
    },
    /// The directory that should hold the database could not be created.
    #[error("cannot create the store's directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why it could not be created.
        #[source]
        source: io::Error,
    },
    /// The database was written by a newer corral: its schema version is above what this build knows.
    /// Nothing was changed; upgrade corral (or restore a backup) to use it.
    #[error("store schema version {found} is newer than this build of corral supports ({supported}); upgrade corral")]
    TooNew {
        /// The schema version found in the database.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// The store was opened read-only, but its schema is older than this build's and would need a
    /// migration, which a read-only store cannot run. Open it once read-write to migrate it.
    #[error(
        "store schema version {found} is older than {supported} and the store is read-only, so it cannot be migrated"
    )]
    TooOld {
        /// The schema version found in the database.
        found: i64,
        /// The schema version this build needs.
        supported: i64,
    },
    /// A schema migration would leave the database inconsistent (a bug in that migration); it was rolled back.
    #[error("schema migration to version {version} failed: {reason}")]
    Migration {
        /// The version the failed migration leads to.
        version: i64,
        /// What was wrong.
        reason: String,
    },
    /// No record with this id.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// The kind of record (`"process"`).
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// A record with this id already exists.
    #[error("{what} {id:?} already exists")]
    Conflict {
        /// The kind of record (`"process"`).
        what: &'static str,
        /// The id that is already taken.
        id: String,
    },
    /// The caller passed a value the store refuses (a bug in the caller, not a store failure).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The argument or field at fault.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A row holds a value this build cannot decode (for example an unknown state): damaged data.
    #[error("cannot decode column {column} of a {table} row: {reason}")]
    Decode {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What was wrong with the value.
        reason: String,
    },
    /// Any other database failure.
    #[error("store error ({op})")]
    Other {
        /// The operation that failed.
        op: &'static str,
        /// The backend error.
        #[source]
        source: BackendError,
    },
}

impl StoreError {
    /// True when the store as a whole cannot serve requests right now: it is read-only, full, busy,
    /// corrupt, or its disk fails. The daemon answers these with 503 and reports them in `/health`.
    ///
    /// False for errors about one request ([`NotFound`](Self::NotFound), [`Conflict`](Self::Conflict),
    /// [`InvalidInput`](Self::InvalidInput)), about one row ([`Decode`](Self::Decode)), and for
    /// [`Other`](Self::Other).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::ReadOnly { .. }
                | Self::Full { .. }
                | Self::Busy { .. }
                | Self::Corrupt { .. }
                | Self::Io { .. }
                | Self::CreateDir { .. }
        )
    }

    /// Classifies a rusqlite error by its SQLite result code.
    pub(crate) fn from_sqlite(op: &'static str, err: rusqlite::Error) -> Self {
        let Some(code) = err.sqlite_error_code() else {
            return Self::Other {
                op,
                source: Box::new(err),
            };
        };
        let source: BackendError = Box::new(err);
        match code {
            ErrorCode::ReadOnly => Self::ReadOnly { op, source },
            ErrorCode::DiskFull => Self::Full { op, source },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Self::Busy { op, source },
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => Self::Corrupt { op, source },
            ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport => Self::Io { op, source },
            _ => Self::Other { op, source },
        }
    }
}

/// Returns a closure for `map_err` that classifies a rusqlite error raised by `op`.
pub(crate) fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |err| StoreError::from_sqlite(op, err)
}

/// True when `err` is a violation of a UNIQUE or PRIMARY KEY constraint (a duplicate id).
pub(crate) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    err.sqlite_error().is_some_and(|e| {
        e.code == ErrorCode::ConstraintViolation
            && (e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_codes_are_classified() {
        let cases = [
            (ffi::SQLITE_READONLY, "ReadOnly", true),
            (ffi::SQLITE_FULL, "Full", true),
            (ffi::SQLITE_BUSY, "Busy", true),
            (ffi::SQLITE_LOCKED, "Busy", true),
            (ffi::SQLITE_CORRUPT, "Corrupt", true),
            (ffi::SQLITE_NOTADB, "Corrupt", true),
            (ffi::SQLITE_IOERR, "Io", true),
            (ffi::SQLITE_IOERR_FSYNC, "Io", true),
            (ffi::SQLITE_CANTOPEN, "Io", true),
            (ffi::SQLITE_CONSTRAINT, "Other", false),
            (ffi::SQLITE_MISUSE, "Other", false),
        ];
        for (code, want, unavailable) in cases {
            let err = StoreError::from_sqlite("test", failure(code));
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "code {code}: got {got}, want {want}");
            assert_eq!(err.is_unavailable(), unavailable, "code {code}");
        }
        let err = StoreError::from_sqlite("test", rusqlite::Error::QueryReturnedNoRows);
        assert!(matches!(err, StoreError::Other { .. }));
    }

    #[test]
    fn backend_error_is_reachable_as_source() {
        let err = StoreError::from_sqlite("test", failure(ffi::SQLITE_FULL));
        let source = StdError::source(&err).expect("UNWRAP: has a source");
        let sqlite = source
            .downcast_ref::<rusqlite::Error>()
            .expect("UNWRAP: source is a rusqlite error");
        assert_eq!(sqlite.sqlite_error_code(), Some(ErrorCode::DiskFull));
    }

    #[test]
    fn unique_violations_are_recognised() {
        assert!(is_unique_violation(&failure(ffi::SQLITE_CONSTRAINT_UNIQUE)));
        assert!(is_unique_violation(&failure(ffi::SQLITE_CONSTRAINT_PRIMARYKEY)));
        assert!(!is_unique_violation(&failure(ffi::SQLITE_CONSTRAINT_NOTNULL)));
        assert!(!is_unique_violation(&failure(ffi::SQLITE_BUSY)));
    }
}
