//! The daemon's side of the keeper protocol: [`Client`], on tokio.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::wire::{
    self, ChildMsg, FrameBuf, Msg, SpawnMsg, StreamMsg, WireExit, FD_STDERR, FD_STDERR_READER, FD_STDIN, FD_STDOUT,
    FD_STDOUT_READER, VERSION,
};
use crate::error::SpawnError;
use crate::identity::{boot_id, IdentityError, ProcessIdentity};
use crate::process::Exit;
use crate::signal::Signal;

/// What to spawn through the keeper: argv, directory, the complete environment, isolation and the
/// descriptors for the child's stdio. Build one by hand or with [`SpawnRequest::from_command`].
pub struct SpawnRequest {
    /// The id the daemon knows the child by: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with `.`
    /// (it names spool files). A UUID fits.
    pub id: String,
    /// Program and arguments; the program is looked up in the `PATH` of `env` when it has no `/`.
    pub argv: Vec<OsString>,
    /// Working directory; `None` is the keeper's, which is `/`.
    pub dir: Option<PathBuf>,
    /// The whole environment of the child, nothing inherited.
    pub env: Vec<(OsString, OsString)>,
    /// Its own session (`setsid`) instead of only its own process group.
    pub session: bool,
    /// The child's stdin; `None` is `/dev/null`.
    pub stdin: Option<OwnedFd>,
    /// The child's stdout (usually a pipe's write end); `None` is `/dev/null`.
    pub stdout: Option<OwnedFd>,
    /// The child's stderr; `None` is `/dev/null`.
    pub stderr: Option<OwnedFd>,
    /// The read end of the stdout pipe. The keeper keeps a duplicate (so the pipe outlives the daemon)
    /// and [`Client::spawn`] hands this one back in [`Spawned::stdout`].
    pub stdout_reader: Option<OwnedFd>,
    /// The read end of the stderr pipe, as `stdout_reader`.
    pub stderr_reader: Option<OwnedFd>,
}

impl fmt::Debug for SpawnRequest {
    // Environment values may hold secrets: names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<_> = self.env.iter().map(|(name, _)| name).collect();
        f.debug_struct("SpawnRequest")
            .field("id", &self.id)
            .field("argv", &self.argv)
            .field("dir", &self.dir)
            .field("env_names", &env_names)
            .field("session", &self.session)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("stdout_reader", &self.stdout_reader)
            .field("stderr_reader", &self.stderr_reader)
            .finish()
    }
}

impl SpawnRequest {
    /// A request for `argv` with `/dev/null` stdio, an empty environment and no directory.
    pub fn new<I, S>(id: impl Into<String>, argv: I) -> SpawnRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        SpawnRequest {
            id: id.into(),
            argv: argv.into_iter().map(Into::into).collect(),
            dir: None,
            env: Vec::new(),
            session: false,
            stdin: None,
            stdout: None,
            stderr: None,
            stdout_reader: None,
            stderr_reader: None,
        }
    }
}

/// A child the keeper started.
#[derive(Debug)]
pub struct Spawned {
    /// The id it was spawned with.
    pub id: String,
    /// Its pid, which is also its process group id. It stays allocated until [`Client::reap`].
    pub pid: u32,
    /// Its start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start_ticks: u64,
    /// The stdout read end given in the request, handed back for the daemon to read.
    pub stdout: Option<OwnedFd>,
    /// The stderr read end given in the request.
    pub stderr: Option<OwnedFd>,
}

impl Spawned {
    /// Its identity, to store and check later.
    pub fn identity(&self) -> Result<ProcessIdentity, IdentityError> {
        identity(self.pid, self.start_ticks)
    }
}

fn identity(pid: u32, start_ticks: u64) -> Result<ProcessIdentity, IdentityError> {
    Ok(ProcessIdentity {
        pid,
        start_ticks,
        boot_id: boot_id()?.to_owned(),
    })
}

/// How a child ended, as `waitid` reported it to the keeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitStatus {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// As the crate's [`Exit`]; `None` if the status is unknown.
    pub fn exit(&self) -> Option<Exit> {
        match (self.code, self.signal) {
            (Some(code), _) => Some(Exit::Code(code)),
            (None, Some(signal)) => Signal::from_number(signal).map(Exit::Signal),
            (None, None) => None,
        }
    }
}

impl From<WireExit> for ExitStatus {
    fn from(exit: WireExit) -> Self {
        ExitStatus {
            code: exit.code,
            signal: exit.signal,
        }
    }
}

/// A tracked child exited. It is a zombie until [`Client::reap`], so its pid — and with it its process
/// group id — cannot be reused meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    /// The child's id.
    pub id: String,
    /// Its pid.
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
}

/// What the keeper holds, as a (re)connecting daemon finds it.
#[derive(Debug, Default)]
pub struct State {
    /// Every child the keeper tracks: running, or exited and not reaped yet.
    pub children: Vec<ChildState>,
}

/// One tracked child, as handed over on connect.
#[derive(Debug)]
pub struct ChildState {
    /// Its id.
    pub id: String,
    /// Its pid (and process group id).
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub start_ticks: u64,
    /// How it ended, if it has (while no daemon was attached, or before the previous one recorded it).
    pub exit: Option<ExitStatus>,
    /// Its stdout pipe, when captured.
    pub stdout: Option<Handover>,
    /// Its stderr pipe, when captured.
    pub stderr: Option<Handover>,
}

impl ChildState {
    /// Its identity, to compare with a stored record.
    pub fn identity(&self) -> Result<ProcessIdentity, IdentityError> {
        identity(self.pid, self.start_ticks)
    }
}

/// One output stream handed over: what the keeper spooled while no daemon was attached, then the pipe.
/// Read the first `spooled` bytes of `spool_path` ([`Handover::read_spool`]), then `reader`: that is the
/// stream in order, with `dropped` bytes missing between the two.
#[derive(Debug)]
pub struct Handover {
    /// A new descriptor on the pipe's read end.
    pub reader: OwnedFd,
    /// Bytes spooled since the previous handover (at most 1 MiB: the first ones).
    pub spooled: u64,
    /// Bytes read from the pipe after the spool was full, and lost.
    pub dropped: u64,
    /// The spool file.
    pub spool_path: PathBuf,
}

impl Handover {
    /// The spooled bytes. Read them before reaping the child (reaping removes the file) and before the
    /// daemon could go away again (the next drain period starts the file afresh).
    pub fn read_spool(&self) -> io::Result<Vec<u8>> {
        if self.spooled == 0 {
            return Ok(Vec::new());
        }
        let mut bytes = Vec::new();
        File::open(&self.spool_path)?
            .take(self.spooled)
            .read_to_end(&mut bytes)?;
        if (bytes.len() as u64) < self.spooled {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} holds {} bytes, {} announced",
                    self.spool_path.display(),
                    bytes.len(),
                    self.spooled
                ),
            ));
        }
        Ok(bytes)
    }
}

/// Errors talking to the keeper.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The socket could not be connected to (no keeper running there?).
    #[error("cannot connect to the keeper at {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("keeper connection: {0}")]
    Io(#[source] io::Error),
    /// The connection is closed: the keeper exited, or another daemon connection replaced this one.
    #[error("the keeper connection is closed")]
    Disconnected,
    /// The keeper sent something malformed or unexpected.
    #[error("keeper protocol error: {0}")]
    Protocol(String),
    /// The keeper refused the connection (for example another protocol version).
    #[error("the keeper refused the connection: {0}")]
    Refused(String),
    /// The keeper could not start the program.
    #[error("cannot start child {id}: {message}")]
    SpawnFailed {
        /// The child's id.
        id: String,
        /// The OS error number (`ENOENT`, `EACCES`, ...).
        errno: i32,
        /// The keeper's description.
        message: String,
    },
    /// No child with this id was spawned through or handed over to this connection (or it was reaped).
    #[error("no child {0} is known to this keeper connection")]
    UnknownChild(String),
    /// A child with this id is being spawned or is tracked already.
    #[error("a child with id {0} exists already")]
    DuplicateId(String),
}

impl KeeperError {
    /// The OS error number behind a failed spawn.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KeeperError::SpawnFailed { errno, .. } => Some(*errno),
            KeeperError::Io(err) | KeeperError::Connect { source: err, .. } => err.raw_os_error(),
            _ => None,
        }
    }

    /// As the crate's [`SpawnError`], for `program`: what `Command::spawn` would have said.
    pub fn into_spawn_error(self, program: impl Into<String>) -> SpawnError {
        let program = program.into();
        match self {
            KeeperError::SpawnFailed { errno, message, .. } => {
                let source = io::Error::from_raw_os_error(errno);
                match source.kind() {
                    io::ErrorKind::NotFound => SpawnError::NotFound { program, source },
                    io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied { program, source },
                    // The keeper's own reason (it could not track the child, say) says more than the errno.
                    _ if !message.is_empty() && message != source.to_string() => SpawnError::Os {
                        program,
                        source: io::Error::new(source.kind(), message),
                    },
                    _ => SpawnError::Os { program, source },
                }
            }
            KeeperError::Io(source) | KeeperError::Connect { source, .. } => SpawnError::Os { program, source },
            other => SpawnError::Os {
                program,
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

enum SpawnReply {
    Spawned { pid: u32, start_ticks: u64 },
    Failed { errno: i32, message: String },
}

#[derive(Default)]
struct ExitSlot {
    exited: Option<Exited>,
    waiters: Vec<oneshot::Sender<Exited>>,
}

#[derive(Default)]
struct Table {
    closed: bool,
    reason: Option<String>,
    spawns: HashMap<String, oneshot::Sender<SpawnReply>>,
    reaps: HashMap<String, Vec<oneshot::Sender<bool>>>,
    /// Children known to this connection, with their exit once it arrived.
    children: HashMap<String, ExitSlot>,
}

struct Shared {
    table: Mutex<Table>,
    open: watch::Sender<bool>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn dispatch(&self, msg: Msg) -> Result<(), String> {
        let mut table = self.table();
        match msg {
            Msg::Spawned { id, pid, start_ticks } => {
                table.children.entry(id.clone()).or_default();
                if let Some(reply) = table.spawns.remove(&id) {
                    let _ = reply.send(SpawnReply::Spawned { pid, start_ticks });
                }
            }
            Msg::SpawnFailed { id, errno, message } => {
                if let Some(reply) = table.spawns.remove(&id) {
                    let _ = reply.send(SpawnReply::Failed { errno, message });
                }
            }
            Msg::Exited { id, pid, exit } => {
                let exited = Exited {
                    id: id.clone(),
                    pid,
                    status: exit.into(),
                };
                let slot = table.children.entry(id).or_default();
                for waiter in slot.waiters.drain(..) {
                    let _ = waiter.send(exited.clone());
                }
                slot.exited = Some(exited);
            }
            Msg::Reaped { id, reaped } => {
                if reaped {
                    table.children.remove(&id);
                }
                for waiter in table.reaps.remove(&id).unwrap_or_default() {
                    let _ = waiter.send(reaped);
                }
            }
            Msg::Error { message } => return Err(message),
            Msg::State(_) => {} // answers a repeated Hello; nothing is sent twice
            Msg::Hello { .. } | Msg::Spawn(_) | Msg::Reap { .. } | Msg::Shutdown => {
                return Err("the keeper sent a daemon's message".into())
            }
        }
        Ok(())
    }

    fn close(&self, reason: Option<String>) {
        let mut table = self.table();
        table.closed = true;
        table.reason = reason;
        // Dropping the senders wakes every waiter with "disconnected".
        table.spawns.clear();
        table.reaps.clear();
        for slot in table.children.values_mut() {
            slot.waiters.clear();
        }
        drop(table);
        self.open.send_replace(false);
    }
}

struct Outgoing {
    frame: Vec<u8>,
    fds: Vec<OwnedFd>,
    done: oneshot::Sender<io::Result<()>>,
}

/// A connection to the keeper, from the daemon. One per daemon: connecting replaces (closes) any
/// previous daemon connection.
///
/// A request is written at once by its caller when the socket takes the whole frame and nothing is
/// queued before it (one `sendmsg`, no await); otherwise it goes, in order, to a task of its own that
/// writes whole frames as the socket drains. Either way a cancelled call never leaves half a frame on
/// the wire. Do not cancel [`Client::spawn`] once called: the child would start
/// without anyone holding its output pipes (it would still appear in the next [`State`]).
///
/// Dropping the client closes the connection at once, and the keeper starts reading every child's
/// output pipes into spool files: a daemon that drops its client while it lives must stop reading those
/// pipes first, or reconnect (which stops the spooling) and take the spool, else the two readers split
/// the stream between them.
pub struct Client {
    stream: Arc<UnixStream>,
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<Outgoing>,
    /// Frames handed to the write task and not yet written; a caller writes directly only when there are
    /// none (so frames never overtake each other), holding the lock for its one non-blocking `sendmsg`.
    queued: Arc<std::sync::Mutex<usize>>,
    tasks: [JoinHandle<()>; 2],
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, says `Hello`, and returns the keeper's [`State`]: every child it tracks, with exit
    /// statuses and output pipes. Must be called inside a tokio runtime.
    pub async fn connect(socket_path: impl AsRef<Path>) -> Result<(Client, State), KeeperError> {
        let path = socket_path.as_ref();
        let stream = UnixStream::connect(path).await.map_err(|source| KeeperError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let frame = Msg::Hello { version: VERSION }.encode();
        send_frame(&stream, &frame, Vec::new()).await.map_err(KeeperError::Io)?;
        let mut frames = FrameBuf::default();
        let mut children = Vec::new();
        let mut buf = vec![0u8; RECV_CHUNK];
        loop {
            let (msg, fds) = next_frame(&stream, &mut frames, &mut buf)
                .await?
                .ok_or(KeeperError::Disconnected)?;
            match msg {
                Msg::State(state) => {
                    if state.version != VERSION {
                        return Err(KeeperError::Protocol(format!(
                            "keeper speaks version {}, we speak {VERSION}",
                            state.version
                        )));
                    }
                    let mut fds = fds.into_iter();
                    for child in state.children {
                        children.push(child_state(child, &mut fds)?);
                    }
                    if !state.more {
                        break;
                    }
                }
                Msg::Error { message } => return Err(KeeperError::Refused(message)),
                _ => return Err(KeeperError::Protocol("expected State after Hello".into())),
            }
        }
        let mut table = Table::default();
        for child in &children {
            let slot = table.children.entry(child.id.clone()).or_default();
            slot.exited = child.exit.map(|status| Exited {
                id: child.id.clone(),
                pid: child.pid,
                status,
            });
        }
        let (open, _) = watch::channel(true);
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            open,
        });
        let stream = Arc::new(stream);
        let (writer, requests) = mpsc::unbounded_channel();
        let queued = Arc::new(std::sync::Mutex::new(0));
        let tasks = [
            tokio::spawn(read_loop(stream.clone(), frames, shared.clone())),
            tokio::spawn(write_loop(stream.clone(), requests, queued.clone())),
        ];
        let client = Client {
            stream,
            shared,
            writer,
            queued,
            tasks,
        };
        Ok((client, State { children }))
    }

    /// Asks the keeper to start a child; resolves once it runs (or failed to start).
    ///
    /// The child's ends (`stdin`, `stdout`, `stderr`) are closed here once sent; the read ends come back
    /// in [`Spawned`].
    pub async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, KeeperError> {
        let SpawnRequest {
            id,
            argv,
            dir,
            env,
            session,
            stdin,
            stdout,
            stderr,
            stdout_reader,
            stderr_reader,
        } = request;
        let mut mask = 0;
        let mut fds = Vec::new();
        for (bit, fd) in [(FD_STDIN, stdin), (FD_STDOUT, stdout), (FD_STDERR, stderr)] {
            if let Some(fd) = fd {
                mask |= bit;
                fds.push(fd);
            }
        }
        for (bit, fd) in [(FD_STDOUT_READER, &stdout_reader), (FD_STDERR_READER, &stderr_reader)] {
            if let Some(fd) = fd {
                mask |= bit;
                fds.push(fd.try_clone().map_err(KeeperError::Io)?);
            }
        }
        let msg = Msg::Spawn(SpawnMsg {
            id: id.clone(),
            argv: argv.into_iter().map(OsString::into_vec).collect(),
            dir: dir.map(|dir| dir.into_os_string().into_vec()),
            env: env
                .into_iter()
                .map(|(name, value)| (name.into_vec(), value.into_vec()))
                .collect(),
            session,
            fds: mask,
        });
        let (reply, answer) = oneshot::channel();
        {
            let mut table = self.shared.table();
            if table.closed {
                return Err(KeeperError::Disconnected);
            }
            if table.spawns.contains_key(&id) || table.children.contains_key(&id) {
                return Err(KeeperError::DuplicateId(id));
            }
            table.spawns.insert(id.clone(), reply);
        }
        let pending = PendingSpawn {
            shared: &self.shared,
            id: &id,
        };
        self.send(msg.encode(), fds).await?;
        let answer = answer.await;
        drop(pending);
        match answer {
            Ok(SpawnReply::Spawned { pid, start_ticks }) => Ok(Spawned {
                id,
                pid,
                start_ticks,
                stdout: stdout_reader,
                stderr: stderr_reader,
            }),
            Ok(SpawnReply::Failed { errno, message }) => Err(KeeperError::SpawnFailed { id, errno, message }),
            Err(_) => Err(KeeperError::Disconnected),
        }
    }

    /// Waits until child `id` has exited; at once if it already has (also when it exited while no daemon
    /// was attached: [`Client::connect`] knows those). The child stays a zombie until [`Client::reap`].
    pub async fn wait_exit(&self, id: &str) -> Result<Exited, KeeperError> {
        let answer = {
            let mut table = self.shared.table();
            let closed = table.closed;
            let Some(slot) = table.children.get_mut(id) else {
                return Err(if closed {
                    KeeperError::Disconnected
                } else {
                    KeeperError::UnknownChild(id.to_owned())
                });
            };
            if let Some(exited) = &slot.exited {
                return Ok(exited.clone());
            }
            if closed {
                return Err(KeeperError::Disconnected);
            }
            let (waiter, answer) = oneshot::channel();
            slot.waiters.push(waiter);
            answer
        };
        answer.await.map_err(|_| KeeperError::Disconnected)
    }

    /// The exit of child `id`, if it has been reported.
    pub fn exit_of(&self, id: &str) -> Option<Exited> {
        self.shared
            .table()
            .children
            .get(id)
            .and_then(|slot| slot.exited.clone())
    }

    /// Asks the keeper to reap child `id` and forget it (closing its copies of the read ends and removing
    /// its spool files). `Ok(false)` if it has not exited (nothing changes) or is unknown to the keeper.
    pub async fn reap(&self, id: &str) -> Result<bool, KeeperError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut table = self.shared.table();
            if table.closed {
                return Err(KeeperError::Disconnected);
            }
            table.reaps.entry(id.to_owned()).or_default().push(reply);
        }
        self.send(Msg::Reap { id: id.to_owned() }.encode(), Vec::new()).await?;
        answer.await.map_err(|_| KeeperError::Disconnected)
    }

    /// Tells the keeper to exit and waits until it closed the connection. Children it still tracks keep
    /// running, re-parented to init, and their exit statuses are lost: stop them first.
    pub async fn shutdown(&self) -> Result<(), KeeperError> {
        self.send(Msg::Shutdown.encode(), Vec::new()).await?;
        self.closed().await;
        Ok(())
    }

    /// True until the connection closed.
    pub fn is_connected(&self) -> bool {
        *self.shared.open.borrow()
    }

    /// Resolves once the connection is closed (by the keeper, or because another daemon connected).
    pub async fn closed(&self) {
        let mut open = self.shared.open.subscribe();
        let _ = open.wait_for(|open| !*open).await;
    }

    /// Why the keeper closed the connection, if it said.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.table().reason.clone()
    }

    async fn send(&self, frame: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), KeeperError> {
        let (done, sent) = oneshot::channel();
        {
            let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
            // Nothing queued: try the socket now. Saves two task hand-offs per request (to the write task
            // and back), on the path of every start and every end.
            let (frame, fds) = if *queued == 0 {
                let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
                match wire::send(self.stream.as_fd(), &frame, &borrowed) {
                    Ok(n) if n == frame.len() => return Ok(()),
                    // Written in part (descriptors included): the rest goes first to the write task.
                    Ok(n) => (frame[n..].to_vec(), Vec::new()),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => (frame, fds),
                    Err(err) => return Err(KeeperError::Io(err)),
                }
            } else {
                (frame, fds)
            };
            self.writer
                .send(Outgoing { frame, fds, done })
                .map_err(|_| KeeperError::Disconnected)?;
            *queued += 1;
        }
        match sent.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(KeeperError::Io(err)),
            Err(_) => Err(KeeperError::Disconnected),
        }
    }
}

impl Drop for Client {
    /// Closes the connection at once: the keeper sees end of file and starts spooling.
    fn drop(&mut self) {
        let _ = rustix::net::shutdown(&*self.stream, rustix::net::Shutdown::Both);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Removes a spawn's reply slot if the call is abandoned before the answer.
struct PendingSpawn<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl Drop for PendingSpawn<'_> {
    fn drop(&mut self) {
        self.shared.table().spawns.remove(self.id);
    }
}

fn child_state(child: ChildMsg, fds: &mut impl Iterator<Item = OwnedFd>) -> Result<ChildState, KeeperError> {
    let mut handover = |stream: Option<StreamMsg>| -> Result<Option<Handover>, KeeperError> {
        let Some(stream) = stream else { return Ok(None) };
        let reader = fds
            .next()
            .ok_or_else(|| KeeperError::Protocol("State is missing a descriptor".into()))?;
        Ok(Some(Handover {
            reader,
            spooled: stream.spooled,
            dropped: stream.dropped,
            spool_path: PathBuf::from(OsString::from_vec(stream.spool_path)),
        }))
    };
    Ok(ChildState {
        stdout: handover(child.stdout)?,
        stderr: handover(child.stderr)?,
        id: child.id,
        pid: child.pid,
        start_ticks: child.start_ticks,
        exit: child.exit.map(ExitStatus::from),
    })
}

async fn send_frame(stream: &UnixStream, frame: &[u8], fds: Vec<OwnedFd>) -> io::Result<()> {
    let mut sent = 0;
    while sent < frame.len() {
        let borrowed: Vec<_> = if sent == 0 {
            fds.iter().map(AsFd::as_fd).collect()
        } else {
            Vec::new()
        };
        let n = stream
            .async_io(Interest::WRITABLE, || {
                wire::send(stream.as_fd(), &frame[sent..], &borrowed)
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
    }
    Ok(())
}

/// Bytes asked of the socket per read.
const RECV_CHUNK: usize = 16 * 1024;

/// The next message from the keeper, reading into `buf` (one buffer for the connection's life: a fresh
/// zeroed 16 KiB per message was a measurable share of the daemon's allocations per job).
async fn next_frame(
    stream: &UnixStream,
    frames: &mut FrameBuf,
    buf: &mut [u8],
) -> Result<Option<(Msg, Vec<OwnedFd>)>, KeeperError> {
    loop {
        if let Some(frame) = frames.next_frame().map_err(|err| KeeperError::Protocol(err.0))? {
            return Ok(Some(frame));
        }
        let mut fds = Vec::new();
        let n = stream
            .async_io(Interest::READABLE, || wire::recv(stream.as_fd(), buf, &mut fds))
            .await
            .map_err(KeeperError::Io)?;
        if n == 0 {
            if frames.is_empty() {
                return Ok(None);
            }
            return Err(KeeperError::Protocol(
                "connection closed in the middle of a message".into(),
            ));
        }
        frames.push(&buf[..n], fds);
    }
}

async fn read_loop(stream: Arc<UnixStream>, mut frames: FrameBuf, shared: Arc<Shared>) {
    let mut buf = vec![0u8; RECV_CHUNK];
    let reason = loop {
        match next_frame(&stream, &mut frames, &mut buf).await {
            Ok(Some((msg, _fds))) => {
                if let Err(reason) = shared.dispatch(msg) {
                    break Some(reason);
                }
            }
            Ok(None) => break None,
            Err(err) => break Some(err.to_string()),
        }
    };
    shared.close(reason);
}

async fn write_loop(
    stream: Arc<UnixStream>,
    mut requests: mpsc::UnboundedReceiver<Outgoing>,
    queued: Arc<std::sync::Mutex<usize>>,
) {
    while let Some(Outgoing { frame, fds, done }) = requests.recv().await {
        let result = send_frame(&stream, &frame, fds).await;
        let failed = result.is_err();
        {
            let mut queued = queued.lock().unwrap_or_else(|p| p.into_inner());
            *queued = queued.saturating_sub(1);
        }
        let _ = done.send(result);
        if failed {
            // The stream may hold half a frame now: nothing more can go out on it.
            let _ = rustix::net::shutdown(&*stream, rustix::net::Shutdown::Both);
            return;
        }
    }
}
