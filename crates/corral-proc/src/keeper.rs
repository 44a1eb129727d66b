//! The keeper: one small process that parents every supervised child, so children outlive the daemon.
//!
//! # Why
//!
//! A process corral starts must survive a `kill -9` of the daemon, keep its output (no `SIGPIPE`, no
//! lost lines) and have its *real* exit status recorded once the daemon is back. pueue, supervisord and
//! pm2 lose their children there. The parent of a process is the only one that can read its exit status,
//! and a pipe whose last reader closes kills its writer with `SIGPIPE`; so something that outlives the
//! daemon must be the parent and must hold the read ends. We use **one keeper for all children** rather
//! than one shim per child (conmon, containerd-shim): one extra process for the machine instead of one
//! per child, which keeps daemon + keeper with 1,000 idle children under our 13 MB target (see
//! ARCHITECTURE.md, "Surviving a daemon crash").
//!
//! # Shape
//!
//! [`run`] is the keeper's main loop: single-threaded, no tokio, a few hundred KiB of heap. It is a child
//! subreaper (`PR_SET_CHILD_SUBREAPER`), listens on a Unix socket (mode 0600, peers of our uid or root
//! only, a stale socket file replaced; a `flock` on `<socket>.lock` keeps it the only keeper there), and
//! waits in one epoll set on: the listening socket, the daemon's connection, a self-pipe written by its
//! `SIGCHLD`/`SIGTERM`/`SIGINT` handlers, one pidfd per tracked child (readable = exited), and — only
//! while no daemon is attached — the read ends of the children's output pipes.
//!
//! The daemon starts it with [`start`] (its own session, `/dev/null` stdio, working directory `/`), so
//! it survives the daemon's death, and talks to it with [`Client`]. The keeper exits only on `SIGTERM`,
//! `SIGINT` or a `Shutdown` message — never because it is idle or the daemon went away. Children it still
//! tracks then keep running, re-parented to init, and their exit statuses are lost; the daemon sends
//! `Shutdown` only once it has stopped and reaped them.
//!
//! # Protocol
//!
//! Frames over the stream socket: `u32` payload length, `u8` tag, `u8` number of descriptors, payload
//! (little-endian integers; byte strings as `u32` length + bytes; optional values as a `u8` flag + value).
//! Descriptors travel with `SCM_RIGHTS` in the `sendmsg` of the frame's first byte, at most 64 per frame.
//! Version 1:
//!
//! | direction | message | fields | descriptors |
//! |---|---|---|---|
//! | daemon → keeper | `Hello` | version | |
//! | daemon → keeper | `Spawn` | id, argv, dir?, env (the complete environment), session, fd mask | child's stdin, stdout, stderr; daemon's stdout and stderr read ends (each optional, mask says) |
//! | daemon → keeper | `Reap` | id | |
//! | daemon → keeper | `Shutdown` | | |
//! | keeper → daemon | `State` | version, more, children: id, pid, start ticks, exit?, per stream (spooled, dropped, spool path)? | each child's stdout and stderr read ends |
//! | keeper → daemon | `Spawned` | id, pid, start ticks | |
//! | keeper → daemon | `SpawnFailed` | id, errno, message | |
//! | keeper → daemon | `Exited` | id, pid, code?, signal? | |
//! | keeper → daemon | `Reaped` | id, reaped | |
//! | keeper → daemon | `Error` | message (then the keeper closes the connection) | |
//!
//! - Every connection starts with `Hello`; the keeper answers `State` in batches of at most 32 children
//!   (64 descriptors), the last with `more` false. A connection that completes `Hello` **replaces** the
//!   previous daemon connection, which is closed (its client sees end of file): a restarted daemon simply
//!   connects. A connection that has not said `Hello` yet changes nothing; a newer one replaces it.
//! - `Spawn`: the keeper starts argv (never a shell) with exactly the given environment, in its own process
//!   group (`process_group(0)`, so std takes the `posix_spawn` fast path) or its own session, with the
//!   given descriptors as stdio (`/dev/null` where absent), closes its copies of the child's ends, opens a
//!   pidfd and replies `Spawned`, or `SpawnFailed` with the errno (`ENOENT`, `EACCES`, `EEXIST` for an id
//!   in use, `EINVAL` for a bad id or argv). It keeps its duplicates of the read ends: while it holds
//!   them a child never gets `SIGPIPE`, whatever happens to the daemon.
//! - `Exited` is sent when a tracked child's pidfd becomes readable. The status is read with
//!   `waitid(P_PIDFD, WEXITED | WNOWAIT)`: the child is **not** reaped, so its pid — which is its process
//!   group id — stays allocated until the daemon has taken the status (a status is never lost to a
//!   daemon that dies at that moment). [`Process`](crate::Process) then asks for the reap at once and
//!   stops members left in the group as it does for its own children: the kernel keeps a pid number
//!   allocated while it names a process group. Replies and `Exited` go out in order: a child's `Spawned`
//!   always precedes its `Exited`.
//! - `Reap` reaps the child (if its exit is known), forgets it, closes the keeper's read ends and removes
//!   its spool files; `Reaped` says whether it did. The daemon sends it once it recorded the exit, stopped
//!   the group and read the spool.
//! - While no daemon is attached, the keeper reads every open output pipe into `<spool_dir>/<id>.stdout`
//!   and `<id>.stderr`, so a chatty child never blocks on a full pipe. Each spool keeps the **first**
//!   [`SPOOL_LIMIT`] (1 MiB) bytes of a drain period and counts the rest as dropped (the simplest bound
//!   that is exact about what is missing: the gap is between the spool and the pipe). When a daemon's
//!   `Hello` arrives the keeper stops reading the pipes, then reports per stream how many bytes it spooled
//!   and dropped since the last handover and passes the read ends: spool first, then the pipe, is the
//!   stream in order, each byte once. Counts are handed over once (they restart at zero); the next drain
//!   period truncates the file, so a daemon reads the spool right after connecting.
//!
//! # Invariants
//!
//! - **The keeper never signals anyone.** The daemon signals the leader through a pidfd (which works on a
//!   process that is not its child) and the group with `killpg` while the leader is unreaped or members
//!   were just seen alive (either pins the group id). The one exception: a child the keeper has just spawned and cannot track
//!   (no pidfd: descriptor exhaustion) is killed and reaped before `SpawnFailed` is sent.
//! - The keeper reaps a tracked child only on `Reap`; orphans re-parented to it (it is a subreaper) are
//!   reaped after a `SIGCHLD`, listing `/proc/self/task/*/children` and skipping tracked pids: at once, or
//!   at most 100 ms after the previous listing (one listing per child exit was a tenth of the keeper's CPU
//!   under a stream of short jobs).
//! - Every descriptor the keeper holds is close-on-exec (received ones with `MSG_CMSG_CLOEXEC`): a child
//!   inherits only its stdio.
//! - The keeper never blocks on the daemon: replies that do not fit the socket are queued (at most 64 MiB,
//!   then the daemon is dropped as stuck), and pipes are read only while no daemon is attached.
//! - It raises its soft open-files limit (to the hard limit, at most 65,536): each child costs it a pidfd
//!   and up to two read ends. Children inherit that limit.

mod client;
mod server;
mod wire;

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub use client::{ChildState, Client, ExitStatus, Exited, Handover, KeeperError, SpawnRequest, Spawned, State};

use crate::command::{Command, Isolation, OutputMode, StdinMode};
use crate::error::SpawnError;

/// Bytes each stream's spool keeps per drain period: the first 1 MiB; the rest is counted as dropped.
pub const SPOOL_LIMIT: u64 = 1 << 20;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = wire::VERSION;

/// Environment variable through which [`start`] gives the keeper its socket path.
pub const SOCKET_ENV: &str = "CORRAL_KEEPER_SOCKET";
/// Environment variable through which [`start`] gives the keeper its spool directory.
pub const SPOOL_ENV: &str = "CORRAL_KEEPER_SPOOL";

/// How long [`start`] waits for the new keeper to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the keeper in this process until `SIGTERM`, `SIGINT` or a `Shutdown` message: listens on
/// `socket_path`, spools to `spool_dir` (created, mode 0700). Blocks; uses no tokio. Installs signal
/// handlers and makes the whole process a child subreaper, so call it from a process that is only the
/// keeper (`corral keeper`). Fails at once if another keeper holds `socket_path`.
pub fn run(socket_path: &Path, spool_dir: &Path) -> io::Result<()> {
    server::run(socket_path, spool_dir)
}

/// [`run`] with the paths [`start`] put in [`SOCKET_ENV`] and [`SPOOL_ENV`].
pub fn run_from_env() -> io::Result<()> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is not set")))
    };
    run(&var(SOCKET_ENV)?, &var(SPOOL_ENV)?)
}

/// Starts a keeper process: `program args...` with [`SOCKET_ENV`] and [`SPOOL_ENV`] set, in its own
/// session, stdio on `/dev/null`, working directory `/`; `program` must end up calling [`run_from_env`]
/// (the daemon runs its own binary with a hidden `keeper` subcommand). Returns its pid once it accepts
/// connections (within 10 s). Relative paths are taken from the current directory. Blocks meanwhile: call it before entering async code or via
/// `spawn_blocking`.
///
/// Fails with `AddrInUse` if a keeper already answers on `socket_path` (connect to it instead). The
/// keeper is a child of the calling process: should it ever exit, the caller reaps it (corral's daemon
/// does so with its orphan reaper).
pub fn start(socket_path: &Path, spool_dir: &Path, program: &Path, args: &[&str]) -> io::Result<u32> {
    // The keeper runs in `/`: relative paths would name other files there.
    let socket_path = &std::path::absolute(socket_path)?;
    let spool_dir = &std::path::absolute(spool_dir)?;
    if std::os::unix::net::UnixStream::connect(socket_path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a keeper already listens on {}", socket_path.display()),
        ));
    }
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env(SOCKET_ENV, socket_path)
        .env(SPOOL_ENV, spool_dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
    }
    let pid = command.spawn()?.id();
    let raw = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        match waitid(WaitId::Pid(raw), WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Ok(Some(status)) => {
                return Err(io::Error::other(format!(
                    "the keeper exited at start (code {:?}, signal {:?})",
                    status.exit_status(),
                    status.terminating_signal()
                )))
            }
            Err(err) => return Err(io::Error::other(format!("the keeper exited at start: {err}"))),
        }
        if std::os::unix::net::UnixStream::connect(socket_path).is_ok() {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the keeper (pid {pid}) did not listen on {} in time",
                    socket_path.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl SpawnRequest {
    /// The request that runs `command` as `Command::spawn` would, plus the write end of its stdin pipe
    /// (for [`StdinMode::Piped`]), which the daemon keeps. Resolves what the keeper cannot know: the full
    /// environment (this process's unless cleared, with the command's changes), the working directory
    /// (this process's when none is set), and the stdio descriptors: pipes for captured streams (read
    /// ends in `stdout_reader`/`stderr_reader`), files opened for [`OutputMode::File`], duplicates of this
    /// process's own for `Inherit`. Validates the command first.
    ///
    /// Not carried over (the daemon keeps them): timeout, grace, drain, ring and line sizes, log file,
    /// leftovers policy, events.
    pub fn from_command(
        command: &Command,
        id: impl Into<String>,
    ) -> Result<(SpawnRequest, Option<OwnedFd>), SpawnError> {
        command.validate()?;
        let program = command.program_display();
        let os = |source: io::Error| SpawnError::Os {
            program: program.clone(),
            source,
        };
        let dir = command.dir.clone().or_else(|| std::env::current_dir().ok());
        let mut env: Vec<(OsString, OsString)> = if command.env_clear {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (name, value) in &command.env {
            env.retain(|(existing, _)| existing != name);
            if let Some(value) = value {
                env.push((name.clone(), value.clone()));
            }
        }
        let mut stdin_writer = None;
        let stdin = match command.stdin {
            StdinMode::Null => None,
            StdinMode::Piped => {
                let (read, write) = pipe().map_err(os)?;
                stdin_writer = Some(write);
                Some(read)
            }
            StdinMode::Inherit => Some(std::io::stdin().as_fd().try_clone_to_owned().map_err(os)?),
        };
        let (stdout, stdout_reader) = output(command, &command.stdout, dir.as_deref(), Inherited::Stdout)?;
        let (stderr, stderr_reader) = if command.merge_stderr && stdout_reader.is_some() {
            let shared = stdout.as_ref().map(OwnedFd::try_clone).transpose().map_err(os)?;
            (shared, None)
        } else {
            output(command, &command.stderr, dir.as_deref(), Inherited::Stderr)?
        };
        let request = SpawnRequest {
            id: id.into(),
            argv: command.argv.clone(),
            dir,
            env,
            session: command.isolation == Isolation::Session,
            stdin,
            stdout,
            stderr,
            stdout_reader,
            stderr_reader,
        };
        Ok((request, stdin_writer))
    }
}

#[derive(Clone, Copy)]
enum Inherited {
    Stdout,
    Stderr,
}

/// The child's end and our read end (for a captured stream) of one output stream.
fn output(
    command: &Command,
    mode: &OutputMode,
    dir: Option<&Path>,
    inherited: Inherited,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>), SpawnError> {
    let os = |source: io::Error| SpawnError::Os {
        program: command.program_display(),
        source,
    };
    Ok(match mode {
        OutputMode::Capture => {
            let (read, write) = pipe().map_err(os)?;
            (Some(write), Some(read))
        }
        OutputMode::Null => (None, None),
        OutputMode::Inherit => {
            let own = match inherited {
                Inherited::Stdout => std::io::stdout().as_fd().try_clone_to_owned(),
                Inherited::Stderr => std::io::stderr().as_fd().try_clone_to_owned(),
            };
            (Some(own.map_err(os)?), None)
        }
        OutputMode::File(path) => {
            let path = match dir {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.clone(),
            };
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| SpawnError::OpenFile { path, source })?;
            (Some(file.into()), None)
        }
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_spawn_keeps_the_keepers_reason() {
        let failed = |errno: i32, message: &str| KeeperError::SpawnFailed {
            id: "x".into(),
            errno,
            message: message.into(),
        };
        let own = failed(libc::EIO, "cannot read the child's start time: unparsable stat line")
            .into_spawn_error("/bin/prog")
            .to_string();
        assert!(own.contains("/bin/prog") && own.contains("start time"), "{own}");
        let plain = io::Error::from_raw_os_error(libc::E2BIG).to_string();
        let os = failed(libc::E2BIG, &plain).into_spawn_error("/bin/prog").to_string();
        assert!(os.contains("Argument list too long"), "{os}");
        let missing = failed(libc::ENOENT, "whatever").into_spawn_error("/bin/nope");
        assert!(matches!(missing, SpawnError::NotFound { .. }), "{missing:?}");
    }

    #[test]
    fn request_from_command_resolves_env_dir_and_stdio() {
        let command = Command::new(["sh", "-c", "true"])
            .env_clear()
            .env("A", "1")
            .env("B", "2")
            .env_remove("A")
            .stdin(StdinMode::Piped)
            .merge_stderr();
        let (request, stdin_writer) = SpawnRequest::from_command(&command, "x").expect("UNWRAP: valid");
        assert_eq!(request.env, vec![(OsString::from("B"), OsString::from("2"))]);
        assert_eq!(request.dir, std::env::current_dir().ok());
        assert!(stdin_writer.is_some() && request.stdin.is_some());
        assert!(request.stdout.is_some() && request.stdout_reader.is_some());
        assert!(
            request.stderr.is_some() && request.stderr_reader.is_none(),
            "merged into stdout"
        );
        assert!(!request.session);

        let command = Command::new(["true"])
            .stdout(OutputMode::Null)
            .isolation(Isolation::Session);
        let (request, stdin_writer) = SpawnRequest::from_command(&command, "y").expect("UNWRAP: valid");
        assert!(stdin_writer.is_none() && request.stdin.is_none());
        assert!(request.stdout.is_none() && request.stdout_reader.is_none());
        assert!(request.stderr.is_some() && request.stderr_reader.is_some());
        assert!(request.session);
        assert!(request.env.iter().any(|(name, _)| name == "PATH") || std::env::var_os("PATH").is_none());

        assert!(SpawnRequest::from_command(&Command::new(Vec::<String>::new()), "z").is_err());
    }
}
