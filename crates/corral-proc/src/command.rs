//! [`Command`]: what to run and how, built up and then spawned.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::error::SpawnError;
use crate::event::{ProcessEvent, ProcessId};
use crate::output::LogFile;
use crate::process::Process;

/// Default size of each output ring buffer: 1 MiB.
pub const DEFAULT_RING_SIZE: usize = 1024 * 1024;
/// Default cap on one line in output events: 64 KiB; longer lines arrive in pieces.
pub const DEFAULT_LINE_MAX: usize = 64 * 1024;
/// Default grace between `TERM` and `KILL` in a graceful stop: 10 s.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default time to finish reading output after the process group is gone: 2 s.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);

/// Where the child's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    /// `/dev/null` (the default): the child sees end of file at once.
    #[default]
    Null,
    /// A pipe written with [`Process::write_stdin`] and closed with [`Process::close_stdin`].
    Piped,
    /// The caller's own stdin.
    Inherit,
}

/// Where one output stream of the child goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// A pipe read by corral into a ring buffer, line events and the log file, if any (the default).
    #[default]
    Capture,
    /// `/dev/null`.
    Null,
    /// The caller's own stream.
    Inherit,
    /// Appended by the child itself straight to this file (no capture, no events).
    File(PathBuf),
}

/// How the child is isolated so that its whole tree can be signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Its own process group (the default): Ctrl-C at the caller's terminal does not reach it, and a stop
    /// reaches everything it forks that stays in the group.
    #[default]
    ProcessGroup,
    /// Its own session (`setsid`), which is also its own process group and detaches it from the
    /// controlling terminal. Spawning is slower: the fast `posix_spawn` path cannot do it.
    Session,
}

/// What to do with members of the process group still running when the leader exits by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Leftovers {
    /// Stop them gracefully (`TERM`, grace, `KILL`), as systemd does for a service's control group (the
    /// default): no process of ours outlives the process it belongs to.
    #[default]
    Stop,
    /// Leave them running. They are no longer tracked.
    Leave,
}

/// A program to run, with everything about how to run it. Build it, then call [`Command::spawn`].
///
/// Never a shell: the argv goes to the kernel as given, one value per slot. To use a shell, say so:
/// `Command::new(["sh", "-c", "..."])`.
#[derive(Clone)]
pub struct Command {
    pub(crate) argv: Vec<OsString>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) env_clear: bool,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) stdin: StdinMode,
    pub(crate) stdout: OutputMode,
    pub(crate) stderr: OutputMode,
    pub(crate) merge_stderr: bool,
    pub(crate) isolation: Isolation,
    pub(crate) ring_size: usize,
    pub(crate) line_max: usize,
    pub(crate) log: Option<LogFile>,
    pub(crate) mirror: Option<PathBuf>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    pub(crate) drain: Duration,
    pub(crate) leftovers: Leftovers,
    pub(crate) id: Option<ProcessId>,
    pub(crate) shared_events: Option<broadcast::Sender<ProcessEvent>>,
    pub(crate) on_exit: Option<ExitHook>,
}

/// A function called once a process has ended: see [`Command::on_exit`].
pub type ExitHook = std::sync::Arc<dyn Fn(&crate::Process, &crate::Finished) + Send + Sync>;

impl fmt::Debug for Command {
    // Environment values may hold secrets: show names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<_> = self.env.iter().map(|(name, _)| name).collect();
        f.debug_struct("Command")
            .field("argv", &self.argv)
            .field("dir", &self.dir)
            .field("env_clear", &self.env_clear)
            .field("env_names", &env_names)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("isolation", &self.isolation)
            .field("timeout", &self.timeout)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Command {
    /// A command from its argv: the program, then its arguments.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command {
            argv: argv.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            dir: None,
            env_clear: false,
            env: Vec::new(),
            stdin: StdinMode::Null,
            stdout: OutputMode::Capture,
            stderr: OutputMode::Capture,
            merge_stderr: false,
            isolation: Isolation::ProcessGroup,
            ring_size: DEFAULT_RING_SIZE,
            line_max: DEFAULT_LINE_MAX,
            log: None,
            mirror: None,
            timeout: None,
            grace: DEFAULT_GRACE,
            drain: DEFAULT_DRAIN,
            leftovers: Leftovers::Stop,
            id: None,
            shared_events: None,
            on_exit: None,
        }
    }

    /// The argv.
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Runs in `dir` instead of the caller's working directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Self {
        self.env.push((name.as_ref().to_owned(), None));
        self
    }

    /// Starts from an empty environment instead of the caller's; later `env` calls still apply.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Where stdin comes from.
    pub fn stdin(mut self, mode: StdinMode) -> Self {
        self.stdin = mode;
        self
    }

    /// Where stdout goes.
    pub fn stdout(mut self, mode: OutputMode) -> Self {
        self.stdout = mode;
        self
    }

    /// Where stderr goes.
    pub fn stderr(mut self, mode: OutputMode) -> Self {
        self.stderr = mode;
        self
    }

    /// Sends stderr into the same pipe as stdout, interleaved as the child writes them (stdout must be
    /// [`OutputMode::Capture`]); all output is then reported as stdout.
    pub fn merge_stderr(mut self) -> Self {
        self.merge_stderr = true;
        self
    }

    /// Process group (default) or session.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Size of each stream's ring buffer in bytes (default 1 MiB); 0 keeps no output in memory, while
    /// line events and the log file still work.
    pub fn ring_size(mut self, bytes: usize) -> Self {
        self.ring_size = bytes;
        self
    }

    /// Cap on the length of one line in output events (default 64 KiB).
    pub fn line_max(mut self, bytes: usize) -> Self {
        self.line_max = bytes.max(1);
        self
    }

    /// Also appends captured output (both streams) to a log file.
    pub fn log_file(mut self, log: LogFile) -> Self {
        self.log = Some(log);
        self
    }

    /// A wall-clock limit: once it passes, the process is stopped gracefully and ends as timed out.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Time between `TERM` and `KILL` when the process is stopped by a timeout or by leftover cleanup
    /// (default 10 s). [`Process::shutdown`] takes its own.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long to keep reading output once the process group is gone (default 2 s): a process that
    /// escaped the group may hold the pipe open forever.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// What to do with group members still running when the leader exits by itself.
    pub fn leftovers(mut self, leftovers: Leftovers) -> Self {
        self.leftovers = leftovers;
        self
    }

    /// Mirrors each captured stream to a file in `dir` (`<id>.stdout`, `<id>.stderr`, created on the first
    /// output, mode 0600), kept within the ring size of newest output, and removed when the process has
    /// ended. With a keeper, what a process wrote before its supervisor died is then not lost: a supervisor
    /// that adopts the process ([`Command::adopt`]) with the same `dir` captures the mirror first, then what
    /// the keeper spooled. Needs an [`id`](Command::id); without one nothing is mirrored.
    pub fn mirror_output(mut self, dir: impl Into<PathBuf>) -> Self {
        self.mirror = Some(dir.into());
        self
    }

    /// Uses this id instead of a random one.
    pub fn id(mut self, id: impl Into<ProcessId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Also sends this process's events to `sender` (a registry's or an application's bus).
    pub fn events_to(mut self, sender: broadcast::Sender<ProcessEvent>) -> Self {
        self.shared_events = Some(sender);
        self
    }

    /// Calls `hook` once the process has ended and its group is gone, with its final state, before the
    /// [`EventKind::Exited`](crate::EventKind::Exited) event goes out. It runs on the process's supervisor
    /// task, in place of a task of the caller's own that would wait for the end: thousands of idle processes
    /// then cost no waiting task each. Keep it short; a panic in it is logged and goes no further.
    pub fn on_exit(mut self, hook: impl Fn(&crate::Process, &crate::Finished) + Send + Sync + 'static) -> Self {
        self.on_exit = Some(std::sync::Arc::new(hook));
        self
    }

    /// Starts the process and its supervising task. Must be called inside a tokio runtime.
    pub fn spawn(self) -> Result<Process, SpawnError> {
        Process::spawn(self)
    }

    /// Starts the process through the keeper, which becomes (and stays) its parent, so the process
    /// outlives this one: see [`keeper`](crate::keeper). Everything else is as [`Command::spawn`]: the
    /// returned handle captures, stops and reports exactly the same. The keeper reports the exit status;
    /// the child is reaped (its pid released) only after its group is gone.
    ///
    /// Stdin inherited from this process goes to the child as a duplicate; a piped stdin is closed for
    /// the child if this process dies.
    pub async fn spawn_kept(self, keeper: Arc<crate::keeper::Client>) -> Result<Process, SpawnError> {
        Process::spawn_kept(self, keeper).await
    }

    /// Supervises again a child that the keeper kept while no daemon was attached (one of
    /// [`State::children`](crate::keeper::State::children) from [`Client::connect`](crate::keeper::Client::connect)):
    /// what it wrote meanwhile (the keeper's spool) comes first in the captured output, a gap is marked
    /// in it, and its real exit status is reported, also when it ended while nobody was attached.
    ///
    /// `self` gives the id (default: the keeper's id), capture sizes, log file, timeout (counted from
    /// `started_at`), grace and leftovers policy; its argv is only what [`Process::argv`] reports; what
    /// it says about spawning (directory, environment, stdio) is ignored.
    pub fn adopt(
        self,
        child: crate::keeper::ChildState,
        keeper: Arc<crate::keeper::Client>,
        started_at: std::time::SystemTime,
    ) -> Result<Process, SpawnError> {
        Process::adopt(self, child, keeper, started_at)
    }

    pub(crate) fn program_display(&self) -> String {
        self.argv
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Checks what the kernel would reject or garble, so the error names the culprit.
    pub(crate) fn validate(&self) -> Result<(), SpawnError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(SpawnError::EmptyCommand);
        }
        for (idx, arg) in self.argv.iter().enumerate() {
            if arg.as_bytes().contains(&0) {
                return Err(SpawnError::InvalidArgument {
                    what: format!("argument {idx}"),
                    reason: "contains a NUL byte",
                });
            }
        }
        for (name, value) in &self.env {
            let bad_name = name.is_empty() || name.as_bytes().iter().any(|b| *b == 0 || *b == b'=');
            if bad_name {
                return Err(SpawnError::InvalidArgument {
                    what: format!("environment variable name {:?}", name),
                    reason: "is empty or contains '=' or a NUL byte",
                });
            }
            if value.as_ref().is_some_and(|v| v.as_bytes().contains(&0)) {
                return Err(SpawnError::InvalidArgument {
                    what: format!("environment variable {}", name.to_string_lossy()),
                    reason: "value contains a NUL byte",
                });
            }
        }
        if let Some(dir) = &self.dir {
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(SpawnError::BadDirectory {
                        dir: dir.clone(),
                        source: io::Error::from_raw_os_error(libc::ENOTDIR),
                    })
                }
                Err(source) => {
                    return Err(SpawnError::BadDirectory {
                        dir: dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Builds the std command and the pipe ends we keep. Pipes are created close-on-exec.
    pub(crate) fn to_std(&self) -> Result<(std::process::Command, Pipes), SpawnError> {
        let mut cmd = std::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        if self.env_clear {
            cmd.env_clear();
        }
        for (name, value) in &self.env {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        match self.isolation {
            Isolation::ProcessGroup => {
                cmd.process_group(0);
            }
            Isolation::Session => {
                // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
                unsafe {
                    cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
                }
            }
        }
        let mut pipes = Pipes::default();
        cmd.stdin(match self.stdin {
            StdinMode::Null => Stdio::null(),
            StdinMode::Inherit => Stdio::inherit(),
            StdinMode::Piped => {
                let (read, write) = pipe()?;
                pipes.stdin = Some(write);
                Stdio::from(read)
            }
        });
        let (stdout, stdout_read) = self.output_stdio(&self.stdout)?;
        pipes.stdout = stdout_read;
        if self.merge_stderr && pipes.stdout.is_some() {
            let write_end = stdout_clone_for_merge(&stdout)?;
            cmd.stdout(stdout);
            cmd.stderr(write_end);
        } else {
            cmd.stdout(stdout);
            let (stderr, stderr_read) = self.output_stdio(&self.stderr)?;
            pipes.stderr = stderr_read;
            cmd.stderr(stderr);
        }
        Ok((cmd, pipes))
    }

    fn output_stdio(&self, mode: &OutputMode) -> Result<(StdioEnd, Option<OwnedFd>), SpawnError> {
        Ok(match mode {
            OutputMode::Capture => {
                let (read, write) = pipe()?;
                (StdioEnd::Fd(write), Some(read))
            }
            OutputMode::Null => (StdioEnd::Null, None),
            OutputMode::Inherit => (StdioEnd::Inherit, None),
            OutputMode::File(path) => {
                let path = match &self.dir {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path.clone(),
                };
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| SpawnError::OpenFile { path, source })?;
                (StdioEnd::Fd(file.into()), None)
            }
        })
    }
}

/// The ends of the child's stdio pipes that stay with us.
#[derive(Debug, Default)]
pub(crate) struct Pipes {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

/// The child's side of an output stream.
pub(crate) enum StdioEnd {
    Null,
    Inherit,
    Fd(OwnedFd),
}

impl From<StdioEnd> for Stdio {
    fn from(end: StdioEnd) -> Stdio {
        match end {
            StdioEnd::Null => Stdio::null(),
            StdioEnd::Inherit => Stdio::inherit(),
            StdioEnd::Fd(fd) => Stdio::from(fd),
        }
    }
}

fn stdout_clone_for_merge(stdout: &StdioEnd) -> Result<StdioEnd, SpawnError> {
    match stdout {
        StdioEnd::Fd(fd) => fd.try_clone().map(StdioEnd::Fd).map_err(|source| SpawnError::Os {
            program: String::new(),
            source,
        }),
        StdioEnd::Null => Ok(StdioEnd::Null),
        StdioEnd::Inherit => Ok(StdioEnd::Inherit),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|err| SpawnError::Os {
        program: String::from("(pipe)"),
        source: err.into(),
    })
}

/// Maps the error of a failed spawn to what the user needs to hear.
pub(crate) fn classify_spawn_error(command: &Command, err: io::Error) -> SpawnError {
    let program = command.program_display();
    match err.kind() {
        io::ErrorKind::NotFound => SpawnError::NotFound { program, source: err },
        io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied { program, source: err },
        io::ErrorKind::InvalidInput if err.to_string().contains("nul byte") => SpawnError::InvalidArgument {
            what: "command".into(),
            reason: "contains a NUL byte",
        },
        _ => SpawnError::Os { program, source: err },
    }
}

/// True if `path` names a regular file we may execute.
pub(crate) fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}
