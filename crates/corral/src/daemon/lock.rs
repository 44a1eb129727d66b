//! One daemon per state directory: an exclusive `flock` on `corral.lock`, held for the daemon's life.
//!
//! The lock is taken before anything else in the state dir is touched, and without truncating the file
//! first, so a second daemon that fails to get it changes nothing and can name the holder's pid. The kernel
//! drops the lock when the holder dies, even by `kill -9`: no stale lock to clean up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another daemon holds it.
    #[error("another corral daemon{} is running on state dir {}", holder.map(|p| format!(" (pid {p})")).unwrap_or_default(), dir.display())]
    Held {
        /// The holder's pid, as it wrote it.
        holder: Option<u32>,
        /// The state dir.
        dir: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock on `state_dir/corral.lock` and writes our pid into it.
    pub(crate) fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join("corral.lock");
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated here: a daemon that fails to get the lock must leave the holder's pid in place.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    holder: text.trim().parse().ok(),
                    dir: state_dir.to_owned(),
                });
            }
            Err(err) => return Err(io_err(err.into())),
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        file.flush().map_err(io_err)?;
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
