//! The keeper process itself: one thread, one epoll loop, no tokio (see the module docs of `keeper`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;
use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};

use super::wire::{
    self, ChildMsg, FrameBuf, Msg, SpawnMsg, StateMsg, StreamMsg, WireExit, FD_STDERR, FD_STDERR_READER, FD_STDIN,
    FD_STDOUT, FD_STDOUT_READER, STATE_BATCH, VERSION,
};
use super::SPOOL_LIMIT;

// epoll tokens. Children: CHILD | generation << 32 | index << 2 | kind.
const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
const ACTIVE: u64 = 2;
const PENDING: u64 = 3;
const CHILD: u64 = 1 << 63;
const KIND_EXIT: u64 = 0;
const KIND_STDOUT: u64 = 1;
const KIND_STDERR: u64 = 2;

/// A daemon that stops reading is dropped once this much is queued for it.
const OUTBOX_LIMIT: usize = 64 << 20;
/// Reads per readiness event, so one chatty stream cannot starve the rest of the loop.
const READS_PER_EVENT: usize = 16;

/// Runs the keeper until `SIGTERM`/`SIGINT` or a `Shutdown` message. See the module docs of `keeper`.
pub(super) fn run(socket_path: &Path, spool_dir: &Path) -> io::Result<()> {
    let mut keeper = Keeper::open(socket_path, spool_dir)?;
    let result = keeper.serve();
    keeper.close();
    result
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Connected, `Hello` not received yet.
    Pending,
    /// The daemon.
    Active,
}

struct Keeper {
    socket_path: PathBuf,
    spool_dir: PathBuf,
    epoll: OwnedFd,
    listener: UnixListener,
    signals: OwnedFd,
    /// Held for the signal handler, which writes to its raw fd.
    _signal_writer: OwnedFd,
    /// The `flock` that makes this the only keeper on `socket_path`.
    _lock: File,
    euid: u32,
    active: Option<Conn>,
    pending: Option<Conn>,
    slots: Vec<Option<Child>>,
    free: Vec<usize>,
    ids: HashMap<String, usize>,
    generation: u32,
    /// No daemon is attached: output pipes are drained into spool files.
    draining: bool,
    stop: bool,
    buf: Vec<u8>,
    /// When orphans were last looked for, and when the next look is owed (see [`ORPHAN_SCAN_EVERY`]).
    last_orphan_scan: Option<Instant>,
    orphan_scan_due: Option<Instant>,
}

/// Orphans (exited grandchildren re-parented to us) are looked for at most this often. The look is a scan
/// of `/proc/self/task/*/children`; once per child exit it was a tenth of the keeper's CPU per job under a
/// steady stream of short jobs. An orphan stays a zombie for at most this long.
const ORPHAN_SCAN_EVERY: Duration = Duration::from_millis(100);

struct Child {
    id: String,
    pid: u32,
    start_ticks: u64,
    generation: u32,
    pidfd: OwnedFd,
    /// Recorded with `WNOWAIT` once it exited: the zombie stays until `Reap`.
    exit: Option<WireExit>,
    /// stdout, stderr.
    streams: [Option<Spool>; 2],
}

/// The keeper's duplicate of a child's output read end, and its spool while no daemon is attached.
struct Spool {
    reader: OwnedFd,
    /// Registered with epoll (only while no daemon is attached).
    draining: bool,
    eof: bool,
    /// Bytes written to the spool file since the last handover (at most `SPOOL_LIMIT`).
    spooled: u64,
    /// Bytes read from the pipe since the last handover that did not fit.
    dropped: u64,
    /// Open while draining; `None` at the start of a drain period, so the first write truncates.
    file: Option<File>,
    /// Writing the spool failed this period: count everything as dropped.
    failed: bool,
    /// A spool file was created at some point (and is removed at the reap); most children never have one.
    created: bool,
}

struct Conn {
    stream: UnixStream,
    token: u64,
    frames: FrameBuf,
    outbox: VecDeque<Outgoing>,
    queued: usize,
    want_write: bool,
}

struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
    /// Duplicates, so a child reaped meanwhile cannot invalidate them; empty once the first byte went.
    fds: Vec<OwnedFd>,
}

fn child_token(index: usize, generation: u32, kind: u64) -> u64 {
    CHILD | (u64::from(generation) << 32) | ((index as u64) << 2) | kind
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut text = OsString::from(path.as_os_str());
    text.push(suffix);
    PathBuf::from(text)
}

/// Ids name spool files: keep them to a safe alphabet.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Keeper {
    fn open(socket_path: &Path, spool_dir: &Path) -> io::Result<Keeper> {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
        crate::limits::raise_open_files_limit();
        fs::create_dir_all(spool_dir)?;
        fs::set_permissions(spool_dir, fs::Permissions::from_mode(0o700))?;

        let lock_path = with_suffix(socket_path, ".lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another keeper is running (it holds {})", lock_path.display()),
                ))
            }
            Err(err) => return Err(err.into()),
        }
        // The holder's pid, for operators (and test clean-up) that need to find this keeper.
        {
            use std::io::Write;
            let mut holder = &lock;
            holder.set_len(0)?;
            writeln!(holder, "{}", std::process::id())?;
        }

        let (signals, signal_writer) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK)?;
        install_signal_handlers(&signal_writer)?;

        // Bind under a temporary name, restrict it, then rename over any stale socket: the socket path
        // appears only once it accepts connections, and only from our uid.
        let temporary = with_suffix(socket_path, ".new");
        let _ = fs::remove_file(&temporary);
        let listener = UnixListener::bind(&temporary)?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600))?;
        fs::rename(&temporary, socket_path)?;
        listener.set_nonblocking(true)?;

        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(&epoll, &listener, EventData::new_u64(LISTENER), EventFlags::IN)?;
        epoll::add(&epoll, &signals, EventData::new_u64(SIGNALS), EventFlags::IN)?;

        Ok(Keeper {
            socket_path: socket_path.to_owned(),
            spool_dir: spool_dir.to_owned(),
            epoll,
            listener,
            signals,
            _signal_writer: signal_writer,
            _lock: lock,
            euid: rustix::process::geteuid().as_raw(),
            active: None,
            pending: None,
            slots: Vec::new(),
            free: Vec::new(),
            ids: HashMap::new(),
            generation: 0,
            draining: false,
            stop: false,
            buf: vec![0; 64 * 1024],
            last_orphan_scan: None,
            orphan_scan_due: None,
        })
    }

    fn close(&mut self) {
        let _ = fs::remove_file(&self.socket_path);
        uninstall_signal_handlers();
    }

    fn serve(&mut self) -> io::Result<()> {
        self.reap_orphans();
        let mut events = Vec::with_capacity(128);
        while !self.stop {
            events.clear();
            let timeout = self.orphan_scan_due.map(|due| {
                let left = due.saturating_duration_since(Instant::now());
                rustix::event::Timespec {
                    tv_sec: left.as_secs() as _,
                    tv_nsec: left.subsec_nanos() as _,
                }
            });
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(err) => return Err(err.into()),
            }
            if self.orphan_scan_due.is_some_and(|due| Instant::now() >= due) {
                self.reap_orphans();
            }
            for event in &events {
                let (data, flags) = (event.data, event.flags);
                self.dispatch(data.u64(), flags);
                if self.stop {
                    break;
                }
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, token: u64, flags: EventFlags) {
        match token {
            LISTENER => self.accept(),
            SIGNALS => self.on_signals(),
            ACTIVE => self.on_conn(Role::Active, flags),
            PENDING => self.on_conn(Role::Pending, flags),
            token if token & CHILD != 0 => {
                let generation = ((token & !CHILD) >> 32) as u32;
                let index = ((token & 0xffff_ffff) >> 2) as usize;
                let live = matches!(self.slots.get(index), Some(Some(child)) if child.generation == generation);
                if !live {
                    return;
                }
                match token & 3 {
                    KIND_EXIT => {
                        self.check_exit(index);
                    }
                    KIND_STDOUT => self.drain(index, 0),
                    KIND_STDERR => self.drain(index, 1),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    // ---- connections ----

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let allowed = rustix::net::sockopt::socket_peercred(&stream)
                        .is_ok_and(|cred| cred.uid.is_root() || cred.uid.as_raw() == self.euid);
                    if !allowed || stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    // At most one connection waits for its Hello: a newer one replaces it.
                    self.drop_conn(Role::Pending);
                    let interest = EventFlags::IN | EventFlags::RDHUP;
                    if epoll::add(&self.epoll, &stream, EventData::new_u64(PENDING), interest).is_ok() {
                        self.pending = Some(Conn::new(stream, PENDING));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: all accepted. Anything else (out of fds): the listener stays readable.
                Err(_) => return,
            }
        }
    }

    fn conn_mut(&mut self, role: Role) -> Option<&mut Conn> {
        match role {
            Role::Active => self.active.as_mut(),
            Role::Pending => self.pending.as_mut(),
        }
    }

    fn on_conn(&mut self, role: Role, flags: EventFlags) {
        if flags.contains(EventFlags::OUT) {
            let epoll = self.epoll.as_fd();
            let failed = match role {
                Role::Active => self.active.as_mut(),
                Role::Pending => self.pending.as_mut(),
            }
            .is_some_and(|conn| conn.flush(epoll).is_err());
            if failed {
                self.drop_conn(role);
                return;
            }
        }
        if flags.intersects(EventFlags::IN | EventFlags::HUP | EventFlags::ERR | EventFlags::RDHUP) {
            self.read_conn(role);
        }
    }

    fn read_conn(&mut self, mut role: Role) {
        let mut eof = false;
        {
            let Some(conn) = self.conn_mut(role) else { return };
            let mut buf = [0u8; 16 * 1024];
            let mut fds = Vec::new();
            for _ in 0..READS_PER_EVENT {
                match wire::recv(conn.stream.as_fd(), &mut buf, &mut fds) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => conn.frames.push(&buf[..n], fds.drain(..)),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        loop {
            let Some(conn) = self.conn_mut(role) else { return };
            match conn.frames.next_frame() {
                Ok(Some((msg, fds))) => match self.handle(role, msg, fds) {
                    Some(next) => role = next,
                    None => return,
                },
                Ok(None) => break,
                Err(err) => {
                    self.refuse(role, &err.to_string());
                    return;
                }
            }
        }
        if eof {
            self.drop_conn(role);
        }
    }

    /// Handles one message; returns the role the connection has afterwards, `None` if it is gone.
    fn handle(&mut self, role: Role, msg: Msg, fds: Vec<OwnedFd>) -> Option<Role> {
        match (role, msg) {
            (_, Msg::Hello { version }) => {
                if version != VERSION {
                    self.refuse(
                        role,
                        &format!("this keeper speaks protocol version {VERSION}, not {version}"),
                    );
                    return None;
                }
                if role == Role::Pending && !self.promote() {
                    return None;
                }
                self.send_state();
                self.active.as_ref().map(|_| Role::Active)
            }
            (Role::Pending, _) => {
                self.refuse(role, "the first message must be Hello");
                None
            }
            (Role::Active, Msg::Spawn(spawn)) => {
                let reply = self.spawn(spawn, fds);
                self.send(&reply);
                self.active.as_ref().map(|_| Role::Active)
            }
            (Role::Active, Msg::Reap { id }) => {
                let reaped = self.reap(&id);
                self.send(&Msg::Reaped { id, reaped });
                self.active.as_ref().map(|_| Role::Active)
            }
            (Role::Active, Msg::Shutdown) => {
                self.stop = true;
                None
            }
            (Role::Active, _) => {
                self.refuse(role, "unexpected message from the daemon");
                None
            }
        }
    }

    /// The pending connection said Hello: it becomes the daemon, replacing (closing) the previous one.
    fn promote(&mut self) -> bool {
        let Some(mut conn) = self.pending.take() else {
            return false;
        };
        if let Some(old) = self.active.take() {
            let _ = epoll::delete(&self.epoll, &old.stream);
        }
        conn.token = ACTIVE;
        if epoll::modify(&self.epoll, &conn.stream, EventData::new_u64(ACTIVE), conn.interest()).is_err() {
            let _ = epoll::delete(&self.epoll, &conn.stream);
            self.start_draining();
            return false;
        }
        self.active = Some(conn);
        self.stop_draining();
        true
    }

    fn drop_conn(&mut self, role: Role) {
        let conn = match role {
            Role::Active => self.active.take(),
            Role::Pending => self.pending.take(),
        };
        if let Some(conn) = conn {
            let _ = epoll::delete(&self.epoll, &conn.stream);
        }
        if role == Role::Active {
            self.start_draining();
        }
    }

    /// Tells the peer why, as far as it will take it without blocking, and closes the connection.
    fn refuse(&mut self, role: Role, message: &str) {
        let epoll = self.epoll.as_fd();
        if let Some(conn) = match role {
            Role::Active => self.active.as_mut(),
            Role::Pending => self.pending.as_mut(),
        } {
            let _ = conn.send(
                epoll,
                Msg::Error {
                    message: message.into(),
                }
                .encode(),
                &[],
            );
        }
        self.drop_conn(role);
    }

    /// Sends a message without descriptors to the daemon, if one is attached.
    fn send(&mut self, msg: &Msg) {
        let epoll = self.epoll.as_fd();
        let failed = self
            .active
            .as_mut()
            .is_some_and(|conn| conn.send(epoll, msg.encode(), &[]).is_err());
        if failed {
            self.drop_conn(Role::Active);
        }
    }

    /// Answers `Hello`: every tracked child, its exit if any, its spool counts and its read ends. The
    /// spool counts are handed over once: they restart from zero.
    fn send_state(&mut self) {
        let Keeper {
            active,
            slots,
            epoll,
            spool_dir,
            ..
        } = self;
        let Some(conn) = active.as_mut() else { return };
        let live: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
        let batches = live.len().div_ceil(STATE_BATCH).max(1);
        let mut failed = false;
        for batch in 0..batches {
            let indices = live.iter().skip(batch * STATE_BATCH).take(STATE_BATCH);
            let mut children = Vec::new();
            let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
            for &index in indices {
                let Some(child) = slots[index].as_mut() else { continue };
                let mut streams = [None, None];
                for (n, spool) in child.streams.iter_mut().enumerate() {
                    if let Some(spool) = spool {
                        streams[n] = Some(StreamMsg {
                            spooled: spool.spooled,
                            dropped: spool.dropped,
                            spool_path: spool_path(spool_dir, &child.id, n).into_os_string().into_vec(),
                        });
                        spool.spooled = 0;
                        spool.dropped = 0;
                    }
                }
                let [stdout, stderr] = streams;
                children.push(ChildMsg {
                    id: child.id.clone(),
                    pid: child.pid,
                    start_ticks: child.start_ticks,
                    exit: child.exit,
                    stdout,
                    stderr,
                });
            }
            // Borrow the read ends only now that the counters are reset.
            for &index in live.iter().skip(batch * STATE_BATCH).take(STATE_BATCH) {
                if let Some(child) = slots[index].as_ref() {
                    fds.extend(child.streams.iter().flatten().map(|spool| spool.reader.as_fd()));
                }
            }
            let msg = Msg::State(StateMsg {
                version: VERSION,
                more: batch + 1 < batches,
                children,
            });
            if conn.send(epoll.as_fd(), msg.encode(), &fds).is_err() {
                failed = true;
                break;
            }
        }
        if failed {
            self.drop_conn(Role::Active);
        }
    }

    // ---- children ----

    fn spawn(&mut self, msg: SpawnMsg, fds: Vec<OwnedFd>) -> Msg {
        let id = msg.id.clone();
        match self.try_spawn(msg, fds) {
            Ok((pid, start_ticks)) => Msg::Spawned { id, pid, start_ticks },
            Err((errno, message)) => Msg::SpawnFailed { id, errno, message },
        }
    }

    fn try_spawn(&mut self, msg: SpawnMsg, fds: Vec<OwnedFd>) -> Result<(u32, u64), (i32, String)> {
        let mut fds = fds.into_iter();
        let mut take = |bit: u8| if msg.fds & bit != 0 { fds.next() } else { None };
        let (stdin, stdout, stderr) = (take(FD_STDIN), take(FD_STDOUT), take(FD_STDERR));
        let readers = [take(FD_STDOUT_READER), take(FD_STDERR_READER)];
        if !valid_id(&msg.id) {
            return Err((
                libc::EINVAL,
                format!(
                    "invalid child id {:?}: use 1 to 128 of A-Z a-z 0-9 . _ -, not starting with '.'",
                    msg.id
                ),
            ));
        }
        if self.ids.contains_key(&msg.id) {
            return Err((libc::EEXIST, format!("a child with id {} is tracked already", msg.id)));
        }
        let Some((program, args)) = msg.argv.split_first() else {
            return Err((libc::EINVAL, "empty argv".into()));
        };
        if msg.env.iter().any(|(name, _)| name.is_empty() || name.contains(&b'=')) {
            return Err((
                libc::EINVAL,
                "an environment variable name is empty or holds '='".into(),
            ));
        }
        let mut command = match resolve_program(program, &msg.env) {
            Some(resolved) => {
                let mut command = std::process::Command::new(resolved);
                command.arg0(OsStr::from_bytes(program));
                command
            }
            None => std::process::Command::new(OsStr::from_bytes(program)),
        };
        command.args(args.iter().map(|arg| OsStr::from_bytes(arg)));
        command.env_clear();
        command.envs(
            msg.env
                .iter()
                .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))),
        );
        if let Some(dir) = &msg.dir {
            command.current_dir(OsStr::from_bytes(dir));
        }
        if msg.session {
            // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
            }
        } else {
            // Keeps std on its posix_spawn (clone3 + CLONE_VFORK) fast path.
            command.process_group(0);
        }
        let stdio = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::null, Stdio::from);
        command.stdin(stdio(stdin)).stdout(stdio(stdout)).stderr(stdio(stderr));
        let spawned = command.spawn();
        drop(command); // closes our copies of the child's ends
        let child = spawned.map_err(|err| (err.raw_os_error().unwrap_or(libc::EINVAL), err.to_string()))?;
        let pid = child.id();
        drop(child); // neither waits nor kills

        let pidfd = match Pid::from_raw(pid as i32)
            .ok_or(Errno::SRCH)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        {
            Ok(pidfd) => pidfd,
            Err(err) => {
                abandon(pid, None);
                return Err((err.raw_os_error(), format!("cannot track the child: pidfd_open: {err}")));
            }
        };
        let start_ticks = match crate::identity::read_stat(pid) {
            Ok(Some(stat)) => stat.start_ticks,
            failed => {
                abandon(pid, Some(&pidfd));
                let why = match failed {
                    Err(err) => format!("cannot read the child's start time: {err}"),
                    Ok(_) => "the child was gone before its start time could be read".to_owned(),
                };
                return Err((libc::EIO, why));
            }
        };
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.generation = (self.generation + 1) & 0x7fff_ffff;
        let generation = self.generation;
        if let Err(err) = epoll::add(
            &self.epoll,
            &pidfd,
            EventData::new_u64(child_token(index, generation, KIND_EXIT)),
            EventFlags::IN,
        ) {
            self.free.push(index);
            abandon(pid, Some(&pidfd));
            return Err((err.raw_os_error(), format!("cannot watch the child: {err}")));
        }
        self.slots[index] = Some(Child {
            id: msg.id.clone(),
            pid,
            start_ticks,
            generation,
            pidfd,
            exit: None,
            streams: readers.map(|reader| reader.map(Spool::new)),
        });
        self.ids.insert(msg.id, index);
        Ok((pid, start_ticks))
    }

    /// Records the exit of child `index` if it has exited (without reaping it) and tells the daemon.
    /// Returns whether it has exited.
    fn check_exit(&mut self, index: usize) -> bool {
        let Some(Some(child)) = self.slots.get_mut(index) else {
            return false;
        };
        if child.exit.is_some() {
            return true;
        }
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
        let exit = match waitid(WaitId::PidFd(child.pidfd.as_fd()), options) {
            Ok(Some(status)) => WireExit {
                code: status.exit_status(),
                signal: status.terminating_signal(),
            },
            Ok(None) | Err(Errno::INTR) => return false,
            // Cannot happen (nobody else reaps our tracked children): record an unknown status.
            Err(_) => WireExit::default(),
        };
        child.exit = Some(exit);
        let _ = epoll::delete(&self.epoll, &child.pidfd);
        let msg = Msg::Exited {
            id: child.id.clone(),
            pid: child.pid,
            exit,
        };
        self.send(&msg);
        true
    }

    /// Reaps child `id` if it has exited, forgets it, closes its read ends and removes its spool files.
    fn reap(&mut self, id: &str) -> bool {
        let Some(&index) = self.ids.get(id) else { return false };
        if !self.check_exit(index) {
            return false;
        }
        let Some(child) = self.slots[index].take() else {
            return false;
        };
        self.ids.remove(id);
        self.free.push(index);
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
        while let Err(Errno::INTR) = waitid(WaitId::PidFd(child.pidfd.as_fd()), options) {}
        for (n, spool) in child.streams.iter().enumerate() {
            if let Some(spool) = spool {
                if spool.draining {
                    // The daemon may hold the same pipe: closing our fd would not unregister it.
                    let _ = epoll::delete(&self.epoll, &spool.reader);
                }
                if spool.created {
                    let _ = fs::remove_file(spool_path(&self.spool_dir, &child.id, n));
                }
            }
        }
        true
    }

    /// A child exited: looks for orphans now, or at the latest [`ORPHAN_SCAN_EVERY`] after the last look.
    fn orphans_maybe(&mut self) {
        let now = Instant::now();
        match self.last_orphan_scan {
            Some(last) if now < last + ORPHAN_SCAN_EVERY => {
                self.orphan_scan_due.get_or_insert(last + ORPHAN_SCAN_EVERY);
            }
            _ => self.reap_orphans(),
        }
    }

    /// Reaps exited children we do not track: orphans re-parented to us as the subreaper.
    fn reap_orphans(&mut self) {
        self.last_orphan_scan = Some(Instant::now());
        self.orphan_scan_due = None;
        let tracked: HashSet<u32> = self.slots.iter().flatten().map(|child| child.pid).collect();
        for pid in children_of_self() {
            if tracked.contains(&pid) {
                continue;
            }
            if let Some(pid) = Pid::from_raw(pid as i32) {
                let _ = waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOHANG);
            }
        }
    }

    fn on_signals(&mut self) {
        let mut bytes = [0u8; 64];
        let mut child = false;
        loop {
            match rustix::io::read(&self.signals, &mut bytes) {
                Ok(0) => break,
                Ok(n) => {
                    for byte in &bytes[..n] {
                        match i32::from(*byte) {
                            libc::SIGCHLD => child = true,
                            libc::SIGTERM | libc::SIGINT => self.stop = true,
                            _ => {}
                        }
                    }
                }
                Err(Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        if child {
            self.orphans_maybe();
        }
    }

    // ---- spooling ----

    /// The daemon is gone: drain every open output pipe into its spool, so no child blocks on a full pipe.
    fn start_draining(&mut self) {
        if self.active.is_some() || self.draining {
            return;
        }
        self.draining = true;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            for (n, spool) in child.streams.iter_mut().enumerate() {
                let Some(spool) = spool.as_mut().filter(|s| !s.eof && !s.draining) else {
                    continue;
                };
                // The description is shared with the daemon's copy, which tokio keeps non-blocking anyway.
                if let Ok(flags) = rustix::fs::fcntl_getfl(&spool.reader) {
                    let _ = rustix::fs::fcntl_setfl(&spool.reader, flags | rustix::fs::OFlags::NONBLOCK);
                }
                let token = child_token(index, child.generation, KIND_STDOUT + n as u64);
                if epoll::add(&self.epoll, &spool.reader, EventData::new_u64(token), EventFlags::IN).is_ok() {
                    spool.draining = true;
                    spool.file = None;
                    spool.failed = false;
                }
            }
        }
    }

    /// A daemon attached: stop reading its pipes (everything spooled was read before this point).
    fn stop_draining(&mut self) {
        self.draining = false;
        for child in self.slots.iter_mut().flatten() {
            for spool in child.streams.iter_mut().flatten() {
                if spool.draining {
                    let _ = epoll::delete(&self.epoll, &spool.reader);
                    spool.draining = false;
                }
                spool.file = None;
            }
        }
    }

    fn drain(&mut self, index: usize, stream: usize) {
        let Keeper {
            slots,
            buf,
            spool_dir,
            epoll,
            ..
        } = self;
        let Some(Some(child)) = slots.get_mut(index) else {
            return;
        };
        let Some(spool) = child.streams[stream].as_mut().filter(|s| s.draining) else {
            return;
        };
        let mut eof = false;
        for _ in 0..READS_PER_EVENT {
            // Non-blocking (set when draining started): 0 is end of file, AGAIN is "nothing now".
            match rustix::io::read(&spool.reader, &mut buf[..]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    spool.store(&buf[..n], || spool_path(spool_dir, &child.id, stream));
                    continue;
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {}
                Err(_) => eof = true,
            }
            break;
        }
        if eof {
            spool.eof = true;
            spool.draining = false;
            spool.file = None;
            let _ = epoll::delete(epoll.as_fd(), &spool.reader);
        }
    }
}

/// The program's path when it is found in the child's `PATH` the way `execvp` would find it. std falls
/// back from `posix_spawn` to fork + exec whenever it must search a `PATH` it was given (and the keeper
/// always gives the whole environment), so the keeper searches itself. `None` — std searches — when the
/// name has a `/`, is not UTF-8, or nothing executable is found (std then reports the exact errno), and
/// when `PATH` has relative entries (they depend on the child's working directory).
fn resolve_program(program: &[u8], env: &[(Vec<u8>, Vec<u8>)]) -> Option<PathBuf> {
    let name = std::str::from_utf8(program).ok()?;
    if name.contains('/') {
        return None;
    }
    // execvp's default when PATH is unset.
    let path = env
        .iter()
        .rev()
        .find(|(key, _)| key.as_slice() == b"PATH")
        .map_or(&b"/bin:/usr/bin"[..], |(_, value)| value.as_slice());
    if path.split(|&b| b == b':').any(|dir| !dir.starts_with(b"/")) {
        return None;
    }
    crate::program::find_in_path(name, Some(OsStr::from_bytes(path)))
}

fn spool_path(spool_dir: &Path, id: &str, stream: usize) -> PathBuf {
    spool_dir.join(format!("{id}.{}", if stream == 0 { "stdout" } else { "stderr" }))
}

impl Spool {
    fn new(reader: OwnedFd) -> Spool {
        Spool {
            reader,
            draining: false,
            eof: false,
            spooled: 0,
            dropped: 0,
            file: None,
            failed: false,
            created: false,
        }
    }

    /// Appends what fits under `SPOOL_LIMIT` (the first bytes win), counts the rest as dropped.
    fn store(&mut self, bytes: &[u8], path: impl FnOnce() -> PathBuf) {
        let room = usize::try_from(SPOOL_LIMIT.saturating_sub(self.spooled)).unwrap_or(usize::MAX);
        let keep = if self.failed { 0 } else { bytes.len().min(room) };
        if keep > 0 {
            if self.file.is_none() {
                self.file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path())
                    .ok();
                self.created |= self.file.is_some();
            }
            match self.file.as_mut().map(|file| file.write_all(&bytes[..keep])) {
                Some(Ok(())) => self.spooled += keep as u64,
                _ => {
                    // Keep the file exactly `spooled` long; spool nothing more this period.
                    if let Some(file) = &self.file {
                        let _ = file.set_len(self.spooled);
                    }
                    self.failed = true;
                    self.dropped += keep as u64;
                }
            }
        }
        self.dropped += (bytes.len() - keep) as u64;
    }
}

impl Conn {
    fn new(stream: UnixStream, token: u64) -> Conn {
        Conn {
            stream,
            token,
            frames: FrameBuf::default(),
            outbox: VecDeque::new(),
            queued: 0,
            want_write: false,
        }
    }

    fn interest(&self) -> EventFlags {
        let base = EventFlags::IN | EventFlags::RDHUP;
        if self.want_write {
            base | EventFlags::OUT
        } else {
            base
        }
    }

    /// Sends a frame now if the socket takes it, else queues it (with duplicates of its descriptors).
    fn send(&mut self, epoll: BorrowedFd<'_>, frame: Vec<u8>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let mut sent = 0;
        if self.outbox.is_empty() {
            match wire::send(self.stream.as_fd(), &frame, fds) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => sent = n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        let fds = if sent > 0 {
            Vec::new()
        } else {
            fds.iter()
                .map(|fd| fd.try_clone_to_owned())
                .collect::<io::Result<Vec<_>>>()?
        };
        self.queued += frame.len();
        self.outbox.push_back(Outgoing {
            bytes: frame,
            sent,
            fds,
        });
        if self.queued > OUTBOX_LIMIT {
            return Err(io::Error::other("the daemon does not read its messages"));
        }
        self.update_interest(epoll)
    }

    fn flush(&mut self, epoll: BorrowedFd<'_>) -> io::Result<()> {
        while let Some(front) = self.outbox.front_mut() {
            let fds: Vec<BorrowedFd<'_>> = front.fds.iter().map(AsFd::as_fd).collect();
            match wire::send(self.stream.as_fd(), &front.bytes[front.sent..], &fds) {
                Ok(0) => break,
                Ok(n) => {
                    drop(fds);
                    front.sent += n;
                    front.fds.clear();
                    if front.sent >= front.bytes.len() {
                        self.queued -= front.bytes.len();
                        self.outbox.pop_front();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        self.update_interest(epoll)
    }

    fn update_interest(&mut self, epoll: BorrowedFd<'_>) -> io::Result<()> {
        let want = !self.outbox.is_empty();
        if want != self.want_write {
            self.want_write = want;
            epoll::modify(epoll, &self.stream, EventData::new_u64(self.token), self.interest())?;
        }
        Ok(())
    }
}

/// Gets rid of a child we just spawned but cannot track (fd or memory exhaustion): the one case where
/// the keeper signals anyone. It is our unreaped child, so its pid cannot name another process.
fn abandon(pid: u32, pidfd: Option<&OwnedFd>) {
    match pidfd {
        Some(pidfd) => {
            let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
        }
        None => {
            if let Some(pid) = Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// The pids of this process's children, from `/proc/self/task/*/children`.
fn children_of_self() -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(list) = crate::identity::read_small(task.path().join("children")) {
            children.extend(list.split_ascii_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    children
}

// ---- signals: a self-pipe, so the loop sees them as a readable fd ----

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
const HANDLED: [libc::c_int; 3] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT];

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored around it, and the pipe is
        // non-blocking (a full pipe already holds a wake-up).
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

fn install_signal_handlers(writer: &OwnedFd) -> io::Result<()> {
    SIGNAL_PIPE.store(writer.as_raw_fd(), Ordering::Relaxed);
    for signal in HANDLED {
        // SAFETY: a zeroed sigaction is valid; the handler only calls async-signal-safe functions.
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | if signal == libc::SIGCHLD { libc::SA_NOCLDSTOP } else { 0 };
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn uninstall_signal_handlers() {
    for signal in HANDLED {
        // SAFETY: restoring the default disposition.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    SIGNAL_PIPE.store(-1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("3f2a9c1e-0000-4000-8000-000000000000"));
        assert!(valid_id("job_1.run-2"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn spool_keeps_the_first_bytes_and_counts_the_rest() {
        let dir = std::env::temp_dir().join(format!("corral-keeper-spool-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
        let path = dir.join("x.stdout");
        let (reader, _writer) = rustix::pipe::pipe().expect("UNWRAP: pipe");
        let mut spool = Spool::new(reader);
        let chunk = vec![b'a'; 300 * 1024];
        for _ in 0..4 {
            spool.store(&chunk, || path.clone());
        }
        assert_eq!(spool.spooled, SPOOL_LIMIT);
        assert_eq!(spool.dropped, 4 * 300 * 1024 - SPOOL_LIMIT);
        spool.file = None;
        assert_eq!(fs::metadata(&path).expect("UNWRAP: written").len(), SPOOL_LIMIT);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn programs_are_resolved_like_execvp() {
        let env = |path: &str| vec![(b"PATH".to_vec(), path.as_bytes().to_vec())];
        let sh = resolve_program(b"sh", &env("/nonexistent:/usr/bin:/bin")).expect("UNWRAP: sh exists");
        assert!(sh.is_absolute() && sh.ends_with("sh"));
        assert!(resolve_program(b"sh", &[]).is_some(), "default PATH");
        assert_eq!(resolve_program(b"/bin/sh", &env("/bin")), None, "a path is used as is");
        assert_eq!(
            resolve_program(b"sh", &env("bin:/usr/bin")),
            None,
            "relative entries: std decides"
        );
        assert_eq!(
            resolve_program(b"sh", &env("/usr/bin::/bin")),
            None,
            "empty entry is the cwd"
        );
        assert_eq!(resolve_program(b"corral-no-such-program", &env("/usr/bin:/bin")), None);
    }

    #[test]
    fn tokens_round_trip() {
        let token = child_token(12345, 0x7fff_fffe, KIND_STDERR);
        assert_ne!(token & CHILD, 0);
        assert_eq!(((token & !CHILD) >> 32) as u32, 0x7fff_fffe);
        assert_eq!(((token & 0xffff_ffff) >> 2) as usize, 12345);
        assert_eq!(token & 3, KIND_STDERR);
    }
}
