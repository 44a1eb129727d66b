//! The crate's error types.

use std::io;
use std::path::PathBuf;

use crate::identity::IdentityError;

/// Why a process could not be started. The OS error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The argv was empty.
    #[error("empty command: give at least the program to run")]
    EmptyCommand,
    /// An argument, env name or value held a NUL byte (or an env name held `=`), which cannot reach the
    /// child intact.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What was wrong (`argument 2`, `environment variable FOO`, ...).
        what: String,
        /// Why.
        reason: &'static str,
    },
    /// The program was not found (no such file, or not in `PATH`).
    #[error("program not found: {program}")]
    NotFound {
        /// The program as given.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program exists but may not be executed.
    #[error("permission denied running {program}")]
    PermissionDenied {
        /// The program as given.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The working directory does not exist or is not a directory.
    #[error("bad working directory {}: {source}", dir.display())]
    BadDirectory {
        /// The directory as given.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file given for output or logging could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `spawn` was called outside a tokio runtime.
    #[error("corral-proc needs a tokio runtime to supervise processes")]
    NoRuntime,
    /// Any other failure to start the program (resource limits, exec format errors, ...).
    #[error("cannot start {program}: {source}")]
    Os {
        /// The program as given.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The OS error behind this one, if any.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            SpawnError::NotFound { source, .. }
            | SpawnError::PermissionDenied { source, .. }
            | SpawnError::BadDirectory { source, .. }
            | SpawnError::OpenFile { source, .. }
            | SpawnError::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Errors from operating on a spawned process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process has finished; there is nothing to signal or write to.
    #[error("process is not running")]
    NotRunning,
    /// Stdin was not requested as a pipe when the process was spawned.
    #[error("stdin is not a pipe for this process (spawn it with stdin piped)")]
    StdinNotPiped,
    /// Stdin was closed, by us or because the process closed its end.
    #[error("stdin is closed")]
    StdinClosed,
    /// Sending a signal failed.
    #[error("cannot signal process: {0}")]
    Signal(#[source] io::Error),
    /// An identity or pidfd operation failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Another I/O failure.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
