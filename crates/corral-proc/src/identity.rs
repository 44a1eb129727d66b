//! Process identity: pid + kernel start time + boot id, and pidfds.
//!
//! A pid alone does not name a process: once a process is reaped its pid can be handed to another one.
//! The kernel's start time of a process (field 22 of `/proc/<pid>/stat`, in clock ticks since boot) and the
//! boot id together do: no two processes of one boot share a pid and a start time. Every layer of corral
//! that signals a process it did not just spawn checks a [`ProcessIdentity`] first, and then signals
//! through a [`Pidfd`] opened *after* the check, so a pid reused between the check and the signal cannot
//! be hit.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::signal::Signal;

/// Who a pid is: enough to tell, later, whether the pid still names the same process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// The kernel's start time of the process, in clock ticks since boot.
    pub start_ticks: u64,
    /// The boot id (`/proc/sys/kernel/random/boot_id`) of the boot the process was started in.
    pub boot_id: String,
}

/// What a pid names now, compared with a [`ProcessIdentity`] taken earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The same process, still running.
    Alive,
    /// The same process, but it has exited and waits to be reaped by its parent (a zombie).
    Exited,
    /// No process has that pid any more (or the machine rebooted since).
    Gone,
    /// The pid now belongs to another process: never signal it.
    Reused,
}

impl Liveness {
    /// True only for [`Liveness::Alive`].
    pub fn is_alive(self) -> bool {
        self == Liveness::Alive
    }
}

/// Errors from reading process identity or using a pidfd.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// There is no process with this pid.
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The pid looked up.
        pid: u32,
    },
    /// The pid names another process than the identity recorded.
    #[error("pid {pid} now belongs to another process (start time or boot differs)")]
    Reused {
        /// The pid looked up.
        pid: u32,
    },
    /// `/proc` could not be read or parsed.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file that failed.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// A pidfd operation failed.
    #[error("{op} on pid {pid} failed: {source}")]
    Pidfd {
        /// The operation (`pidfd_open`, `pidfd_send_signal`, ...).
        op: &'static str,
        /// The pid concerned.
        pid: u32,
        /// The OS error.
        source: io::Error,
    },
}

/// The fields of `/proc/<pid>/stat` corral uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter: `R`, `S`, `D`, `Z` (zombie), `T`, `X`, ...
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Session id.
    pub session: u32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

impl ProcStat {
    /// True for a zombie (exited, not reaped) or a dead task.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the contents of a `/proc/<pid>/stat` file.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses, so parsing
/// starts after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: 3 state, 4 ppid, 5 pgrp, 6 session, ..., 22 starttime.
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let start_ticks = fields.nth(15)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        session,
        start_ticks,
    })
}

/// Reads `/proc/<pid>/stat`; `Ok(None)` when there is no such process.
pub fn read_stat(pid: u32) -> Result<Option<ProcStat>, IdentityError> {
    let path = format!("/proc/{pid}/stat");
    match read_small(&path) {
        Ok(text) => stat_of(&text, path),
        Err(err) if err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(source) => Err(IdentityError::Proc { path, source }),
    }
}

/// A stat file's text read for `path`. Empty means the process went away between the open and the read
/// (procfs then reads nothing): gone, like a missing file, not an error.
fn stat_of(text: &str, path: String) -> Result<Option<ProcStat>, IdentityError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_stat(text).map(Some).ok_or_else(|| IdentityError::Proc {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, "unparsable stat line"),
    })
}

/// Reads a small procfs file in one `read` where it fits in 1 KiB (a stat line does): procfs reports a size
/// of 0, so `fs::read_to_string` would `statx` and then read in growing steps from 32 bytes, six reads for
/// one stat line, on the path of every start. Invalid UTF-8 is replaced, not an error: a stat line's
/// command name is the program's file name cut at 15 bytes, which can split a character in two.
pub(crate) fn read_small(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => return Ok(String::from_utf8_lossy(&buf[..len]).into_owned()),
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    // Longer than the buffer: read the rest the usual way.
    let mut bytes = buf.to_vec();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The id of the running boot, read once per process.
pub fn boot_id() -> Result<&'static str, IdentityError> {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id);
    }
    let path = "/proc/sys/kernel/random/boot_id";
    let id = fs::read_to_string(path).map_err(|source| IdentityError::Proc {
        path: path.to_owned(),
        source,
    })?;
    Ok(BOOT_ID.get_or_init(|| id.trim().to_owned()))
}

impl ProcessIdentity {
    /// Takes the identity of the process that has `pid` now.
    pub fn of(pid: u32) -> Result<Self, IdentityError> {
        let stat = read_stat(pid)?.ok_or(IdentityError::NoSuchProcess { pid })?;
        Ok(ProcessIdentity {
            pid,
            start_ticks: stat.start_ticks,
            boot_id: boot_id()?.to_owned(),
        })
    }

    /// Compares what `pid` names now with this identity.
    pub fn check(&self) -> Result<Liveness, IdentityError> {
        if self.boot_id != boot_id()? {
            return Ok(Liveness::Gone);
        }
        Ok(match read_stat(self.pid)? {
            None => Liveness::Gone,
            Some(stat) if stat.start_ticks != self.start_ticks => Liveness::Reused,
            Some(stat) if stat.is_dead() => Liveness::Exited,
            Some(_) => Liveness::Alive,
        })
    }

    /// Opens a pidfd on this process, verified to be the same process after it was opened.
    ///
    /// Once this returns, signals sent through the [`Pidfd`] reach this process or nobody: a later reuse
    /// of the pid cannot redirect them.
    pub fn open_pidfd(&self) -> Result<Pidfd, IdentityError> {
        if self.boot_id != boot_id()? {
            return Err(IdentityError::NoSuchProcess { pid: self.pid });
        }
        let pidfd = Pidfd::open(self.pid)?;
        // The pidfd now pins whatever process had the pid at open time; make sure that is ours.
        match self.check()? {
            Liveness::Alive | Liveness::Exited => Ok(pidfd),
            Liveness::Gone => Err(IdentityError::NoSuchProcess { pid: self.pid }),
            Liveness::Reused => Err(IdentityError::Reused { pid: self.pid }),
        }
    }
}

/// A process file descriptor: a handle on one process that a pid reuse cannot redirect.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: u32,
}

impl Pidfd {
    /// Opens a pidfd on whatever process has `pid` now. Prefer [`ProcessIdentity::open_pidfd`], which
    /// checks it is the right one.
    pub fn open(pid: u32) -> Result<Self, IdentityError> {
        let raw = rustix::process::Pid::from_raw(pid as i32).ok_or(IdentityError::NoSuchProcess { pid })?;
        match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => Ok(Pidfd { fd, pid }),
            Err(rustix::io::Errno::SRCH) => Err(IdentityError::NoSuchProcess { pid }),
            Err(rustix::io::Errno::NOSYS) => Err(IdentityError::Pidfd {
                op: "pidfd_open (needs Linux 5.3 or newer)",
                pid,
                source: rustix::io::Errno::NOSYS.into(),
            }),
            Err(err) => Err(IdentityError::Pidfd {
                op: "pidfd_open",
                pid,
                source: err.into(),
            }),
        }
    }

    /// The pid this pidfd was opened on.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the process. `Ok(false)` when it has already exited.
    pub fn send_signal(&self, signal: Signal) -> Result<bool, IdentityError> {
        match rustix::process::pidfd_send_signal(&self.fd, signal.to_rustix()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(err) => Err(IdentityError::Pidfd {
                op: "pidfd_send_signal",
                pid: self.pid,
                source: err.into(),
            }),
        }
    }

    /// Waits, without polling, until the process has exited. Works for any process, child or not.
    ///
    /// Must be called inside a tokio runtime. Should the fd not be registrable with the runtime (fd
    /// limits), it falls back to checking every 50 ms rather than failing.
    pub async fn exited(&self) {
        // SAFETY: the fd is borrowed from `self`, so it stays open and the same for the whole life of
        // `async_fd`, which is dropped before this function returns.
        match unsafe { AsyncFd::register_with_interest(self.fd.as_fd(), Interest::READABLE) } {
            // A pidfd becomes readable once, when the process exits, and stays readable.
            Ok(async_fd) => match async_fd.readable().await {
                Ok(guard) => drop(guard),
                Err(err) => {
                    tracing::warn!(pid = self.pid, error = %err, "cannot poll pidfd; checking periodically");
                    self.poll_exited().await;
                }
            },
            Err(err) => {
                tracing::warn!(pid = self.pid, error = %err.into_parts().1, "cannot register pidfd; checking periodically");
                self.poll_exited().await;
            }
        }
    }

    async fn poll_exited(&self) {
        while !self.has_exited() {
            // Boxed: this fallback must not make every future that waits on a pidfd bigger.
            Box::pin(tokio::time::sleep(std::time::Duration::from_millis(50))).await;
        }
    }

    /// True if the process has exited (never blocks).
    pub fn has_exited(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(&self.fd, rustix::event::PollFlags::IN)];
        matches!(rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())), Ok(n) if n > 0)
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_file_read_empty_is_a_process_gone_not_an_error() {
        // A process reaped between the open and the read: procfs reads nothing. A CI run of
        // `kill_stops_the_whole_group_at_once` failed on it ("unparsable stat line").
        assert!(matches!(stat_of("", "/proc/1/stat".into()), Ok(None)));
        assert!(matches!(stat_of("\n", "/proc/1/stat".into()), Ok(None)));
        assert!(stat_of("garbage", "/proc/1/stat".into()).is_err());
    }

    #[test]
    fn read_small_reads_short_and_long_files_whole() {
        let dir = std::env::temp_dir().join(format!("corral-read-small-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
        for len in [0, 1, 1023, 1024, 1025, 5000] {
            let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let path = dir.join(format!("f{len}"));
            fs::write(&path, &text).expect("UNWRAP: write");
            assert_eq!(read_small(&path).expect("UNWRAP: read"), text, "{len} bytes");
        }
        let _ = fs::remove_dir_all(&dir);
        let own = read_stat(std::process::id())
            .expect("UNWRAP: own stat")
            .expect("UNWRAP: we exist");
        // Raw libc calls: in a container the session or group leader may sit outside our PID namespace, and
        // the kernel then reports 0, which rustix's non-zero `Pid` cannot hold (CI runs in such a container).
        // SAFETY: getsid(0), getpgrp() and getppid() only read the caller's own ids.
        let (sid, pgrp, ppid) = unsafe { (libc::getsid(0), libc::getpgrp(), libc::getppid()) };
        assert_eq!(own.session, sid as u32);
        assert_eq!(own.pgrp, pgrp as u32);
        assert_eq!(own.ppid, ppid as u32);
        assert!(read_small("/nonexistent/corral").is_err());
    }

    #[test]
    fn a_program_whose_name_is_cut_inside_a_character_has_an_identity() {
        // The kernel keeps 15 bytes of the name: "ααααααααα" (18 bytes) becomes 7 characters and half of one.
        let dir = std::env::temp_dir().join(format!("corral-comm-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
        let program = dir.join("ααααααααα");
        let _ = fs::remove_file(&program);
        std::os::unix::fs::symlink("/bin/sleep", &program).expect("UNWRAP: symlink");
        let mut child = std::process::Command::new(&program)
            .arg("10")
            .spawn()
            .expect("UNWRAP: spawn");
        let identity = ProcessIdentity::of(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_dir_all(&dir);
        let identity = identity.expect("UNWRAP: an identity despite the cut name");
        assert_eq!(identity.pid, child.id());
    }

    #[test]
    fn parses_stat_with_hostile_name() {
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 200 \
                    18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(line).expect("UNWRAP: valid line");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.session, 4242);
        assert_eq!(stat.start_ticks, 987654);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn identity_of_self_is_alive_and_a_changed_start_is_reused() {
        let me = ProcessIdentity::of(std::process::id()).expect("UNWRAP: own stat readable");
        assert_eq!(me.check().expect("UNWRAP: readable"), Liveness::Alive);
        let other = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(other.check().expect("UNWRAP: readable"), Liveness::Reused);
        assert!(matches!(other.open_pidfd(), Err(IdentityError::Reused { .. })));
        let other_boot = ProcessIdentity {
            boot_id: "not-this-boot".into(),
            ..me
        };
        assert_eq!(other_boot.check().expect("UNWRAP: readable"), Liveness::Gone);
    }
}
