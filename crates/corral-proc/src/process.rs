//! [`Process`]: a handle on one supervised process, and the task that supervises it.
//!
//! # Theory of operation
//!
//! [`Process::spawn`] starts the child in its own process group, opens a pidfd on it and starts one
//! supervisor task (the *actor*), which also reads every captured stream (see [`Pump`]): one task per
//! process in all. The actor alone reaps the child and sends stop signals; every method on the cloneable
//! [`Process`] handle that changes something only queues a [`Control`] message to it, so a signal can
//! never race the reaping of the pid it targets.
//!
//! The actor waits, without polling, for the pidfd to become readable (the leader exited), a control
//! message, the timeout, or the escalation timer of a graceful stop. Once the leader has exited it is
//! reaped, then any members left in its group are stopped (per [`Leftovers`]) and waited for, then the
//! pumps are given [`Command::drain`] to reach end of file, and only then is the final state published:
//! when [`Process::wait`] returns, nothing of the process is left running.

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, Notify};
use tokio::time::Sleep;

use crate::command::{classify_spawn_error, Command, ExitHook, Leftovers};
use crate::error::{ProcessError, SpawnError};
use crate::event::{EventKind, EventSender, EventSlot, Events, ProcessId, Stream};
use crate::group;
use crate::identity::{Pidfd, ProcessIdentity};
use crate::keeper;
use crate::output::{Capture, LogWriter, Mirror, Pump, Pumps};
use crate::reaper;
use crate::signal::Signal;

/// Events buffered per subscriber before a slow one starts to miss some.
const EVENT_CAPACITY: usize = 1024;

/// The coarse lifecycle of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Known but not started yet (used by layers above that queue work).
    Pending,
    /// Running.
    Running,
    /// A stop is under way: signalled, waiting for the group to exit.
    Stopping,
    /// Exited with code 0 by itself.
    Completed,
    /// Exited non-zero, was killed by a signal it was not sent by us, timed out, or failed to start.
    Failed,
    /// Stopped on request.
    Interrupted,
}

impl Status {
    /// Lower-case name, as used in APIs: `running`, `completed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }

    /// True for the three end states.
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Interrupted)
    }
}

/// How the leader process ended, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
}

impl Exit {
    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(code) => Some(code),
            Exit::Signal(_) => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<Signal> {
        match self {
            Exit::Signal(signal) => Some(signal),
            Exit::Code(_) => None,
        }
    }
}

/// Why a process counts as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It exited with a non-zero code.
    ExitCode(i32),
    /// A signal that corral did not send as part of a stop killed it.
    Signal(Signal),
    /// Its timeout passed and it was stopped.
    TimedOut,
    /// Its exit status could not be read (someone else reaped it).
    Unknown,
}

/// The verdict on a finished process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Completed,
    /// See [`Failure`].
    Failed(Failure),
    /// Stopped on request ([`Process::shutdown`], [`Process::kill`]).
    Interrupted,
}

/// Everything known about a process once it has ended and its group is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The verdict.
    pub outcome: Outcome,
    /// How the leader ended (`None` only with [`Failure::Unknown`]).
    pub exit: Option<Exit>,
    /// When it was spawned.
    pub started_at: SystemTime,
    /// When its group was found gone.
    pub ended_at: SystemTime,
    /// From spawn to the end of the group.
    pub duration: Duration,
}

impl Finished {
    /// The status this outcome maps to.
    pub fn status(&self) -> Status {
        match self.outcome {
            Outcome::Completed => Status::Completed,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Interrupted => Status::Interrupted,
        }
    }

    /// The leader's exit code, if it exited rather than being killed by a signal.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit.and_then(Exit::code)
    }

    /// The signal that killed the leader, if one did.
    pub fn signal(&self) -> Option<Signal> {
        self.exit.and_then(Exit::signal)
    }

    /// True for [`Outcome::Completed`].
    pub fn is_success(&self) -> bool {
        self.outcome == Outcome::Completed
    }
}

/// Where a process is in its life. Each variant carries only what is true in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Running since `started_at`.
    Running {
        /// When it was spawned.
        started_at: SystemTime,
    },
    /// Being stopped: signals sent, waiting for the group to exit.
    Stopping {
        /// When it was spawned.
        started_at: SystemTime,
    },
    /// Ended; final.
    Finished(Finished),
}

impl State {
    /// The coarse status.
    pub fn status(&self) -> Status {
        match self {
            State::Running { .. } => Status::Running,
            State::Stopping { .. } => Status::Stopping,
            State::Finished(finished) => finished.status(),
        }
    }
}

/// What [`Process::follow`] gives: the output so far and the events after it.
#[derive(Debug)]
pub struct Follow {
    /// Stdout captured so far; `None` when it is not captured.
    pub stdout: Option<CapturedOutput>,
    /// Stderr captured so far; `None` when it is not captured.
    pub stderr: Option<CapturedOutput>,
    /// The events from the snapshot on.
    pub events: Events,
    /// Per stream (stdout, stderr): how many of the snapshot's last bytes begin a line that the first
    /// output event of that stream carries whole (see [`Follow::partial_line`]).
    partial: [usize; 2],
}

impl Follow {
    /// How many bytes at the end of `stream`'s snapshot are the start of an unfinished line that the first
    /// [`EventKind::Output`] event of that stream will carry whole, those bytes included. A follower that
    /// shows the snapshot's unfinished last line must leave them out, or it shows them twice. Zero when
    /// the process keeps no partial line (nobody was listening when that line began: the event then
    /// carries only the rest of it) or when the snapshot ends with a whole line. It may exceed the
    /// snapshot's length when the ring kept less than the partial line.
    pub fn partial_line(&self, stream: Stream) -> usize {
        match stream {
            Stream::Stdout => self.partial[0],
            Stream::Stderr => self.partial[1],
        }
    }

    /// Takes the snapshot of one stream out (`None` the second time, or when it is not captured).
    pub fn take_output(&mut self, stream: Stream) -> Option<CapturedOutput> {
        match stream {
            Stream::Stdout => self.stdout.take(),
            Stream::Stderr => self.stderr.take(),
        }
    }
}

/// Captured output of one stream, as a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The newest bytes, at most the ring size.
    pub bytes: Vec<u8>,
    /// Bytes the process wrote that are no longer kept (the oldest ones).
    pub dropped: u64,
    /// Bytes the process wrote in all.
    pub total: u64,
}

impl CapturedOutput {
    /// True when some output was dropped to stay within the ring size.
    pub fn is_truncated(&self) -> bool {
        self.dropped > 0
    }

    /// The kept bytes as UTF-8, invalid sequences replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Where `stream` of `command` is mirrored ([`Command::mirror_output`]): none without a mirror dir, a ring
/// to refill, or an id that is a plain file name (letters, digits, `-`, `_`: never a path).
/// Appends to what the keeper spooled a line saying how many bytes it had to drop after it (none: nothing).
/// On a line of its own, also when the spool ends mid-line.
fn mark_dropped(spooled: &mut Vec<u8>, dropped: u64) {
    if dropped == 0 {
        return;
    }
    if spooled.last().is_some_and(|byte| *byte != b'\n') {
        spooled.push(b'\n');
    }
    spooled.extend_from_slice(format!("[corral: {dropped} bytes lost while the daemon was down]\n").as_bytes());
}

/// The first line of each captured stream of an adopted process that was not mirrored
/// ([`Command::mirror_output`]): its output from before the adoption was in the earlier supervisor's memory.
pub const LOST_BEFORE_ADOPTION: &str = "[corral: the daemon restarted; output written before that is not kept]\n";

fn mirror_path(command: &Command, stream: Stream) -> Option<std::path::PathBuf> {
    let (dir, id) = (command.mirror.as_ref()?, command.id.as_ref()?.as_str());
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (plain && command.ring_size > 0).then(|| dir.join(format!("{id}.{}", stream.as_str())))
}

/// A request to the actor.
#[derive(Debug)]
enum Control {
    /// Send a signal to the leader, or to the whole group.
    Signal {
        signal: Signal,
        group: bool,
        reply: oneshot::Sender<Result<(), ProcessError>>,
    },
    /// Stop the whole group: `TERM`, then `KILL` after `grace` (at once when `grace` is zero; the
    /// process's own [`Command::grace`](crate::Command::grace) when `None`).
    Stop { grace: Option<Duration> },
}

/// What the handle shares with the actor.
///
/// State and control requests live here behind plain locks with a [`Notify`] each, rather than in a
/// `watch` and an `mpsc` channel: a daemon keeps thousands of idle processes, and those two channels
/// cost about 1.7 KiB per process (an mpsc allocates a 32-slot block up front) where these cost none.
#[derive(Debug)]
struct Shared {
    id: ProcessId,
    identity: LazyIdentity,
    pgid: u32,
    argv: Vec<String>,
    started_at: SystemTime,
    /// Written by the actor only.
    state: std::sync::Mutex<State>,
    /// Woken (all waiters) on every change of `state`.
    state_changed: Notify,
    /// Requests for the actor, in order.
    controls: std::sync::Mutex<Controls>,
    /// Woken (one permit) on every request queued.
    control_queued: Notify,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    stdin_piped: bool,
    /// The grace it was started with ([`Command::grace`]).
    grace: Duration,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
    /// Created on first subscription; closed by the actor after the final event.
    events: Arc<EventSlot>,
}

/// The actor's inbox.
#[derive(Debug, Default)]
struct Controls {
    queue: std::collections::VecDeque<Control>,
    /// Set when the actor has ended: nothing is queued any more, and requests fail as not running.
    closed: bool,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is replaced whole under the lock, so a poisoned lock still holds a valid one.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, state: State) {
        *self.state() = state;
        self.state_changed.notify_waiters();
    }

    fn controls(&self) -> std::sync::MutexGuard<'_, Controls> {
        self.controls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `control` for the actor; gives it back if the actor has ended.
    fn send(&self, control: Control) -> Result<(), Control> {
        {
            let mut controls = self.controls();
            if controls.closed {
                return Err(control);
            }
            controls.queue.push_back(control);
        }
        self.control_queued.notify_one();
        Ok(())
    }

    /// The next request, waiting for one. Cancel-safe: a request is only taken from the queue in the poll
    /// that returns it.
    async fn next_control(&self) -> Control {
        loop {
            if let Some(control) = self.controls().queue.pop_front() {
                return control;
            }
            // `notify_one` leaves a permit when nobody waits, so a request queued since the check above
            // is not missed.
            self.control_queued.notified().await;
        }
    }

    /// No more requests: the queued ones are dropped, which fails their callers as not running.
    fn close_controls(&self) {
        let dropped = {
            let mut controls = self.controls();
            controls.closed = true;
            std::mem::take(&mut controls.queue)
        };
        drop(dropped);
    }
}

/// A cheap, cloneable handle on one supervised process. Dropping every handle does not stop the process:
/// its supervisor task keeps running until the process ends.
#[derive(Debug, Clone)]
pub struct Process {
    shared: Arc<Shared>,
}

impl Process {
    pub(crate) fn spawn(command: Command) -> Result<Process, SpawnError> {
        command.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SpawnError::NoRuntime);
        }
        let log = open_log(&command)?;
        let (mut std_command, pipes) = command.to_std()?;
        let child = {
            // The orphan reaper (when enabled) must not mistake this child for an orphan before we track it.
            let _spawning = reaper::spawn_guard();
            let child = std_command.spawn().map_err(|err| classify_spawn_error(&command, err))?;
            reaper::track(child.id());
            child
        };
        // The std handle neither kills nor reaps on drop; the actor reaps through the pidfd.
        let pid = child.id();
        drop(child);
        drop(std_command); // closes our copies of the child's ends of the pipes
        let started_at = SystemTime::now();

        let pidfd = match Pidfd::open(pid) {
            Ok(pidfd) => pidfd,
            Err(err) => {
                // Cannot happen for an unreaped child of ours, short of fd exhaustion: do not leak it.
                let _ = group::signal_group(pid, Signal::KILL);
                reap_blocking(pid);
                return Err(SpawnError::Os {
                    program: command.program_display(),
                    source: std::io::Error::other(err.to_string()),
                });
            }
        };
        let id = command.id.clone().unwrap_or_else(ProcessId::next_local);
        Ok(Process::assemble(
            &command,
            Parts {
                id,
                pid,
                // The identity (start ticks from /proc) is read on first use, or by the actor before it
                // reaps: reading it here would cost every spawn a /proc read that can wait on the exec.
                identity: LazyIdentity::new(pid),
                pidfd: Some(pidfd),
                leader: Leader::Own,
                stdin: pipes.stdin,
                stdout: pipes.stdout.map(|fd| (fd, None)),
                stderr: pipes.stderr.map(|fd| (fd, None)),
                log,
                started_at,
                started_instant: Instant::now(),
            },
        ))
    }

    /// [`Command::spawn_kept`]: the keeper starts the child and stays its parent.
    pub(crate) async fn spawn_kept(command: Command, client: Arc<keeper::Client>) -> Result<Process, SpawnError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SpawnError::NoRuntime);
        }
        let log = open_log(&command)?;
        let id = command.id.clone().unwrap_or_else(ProcessId::next_local);
        let (request, stdin) = keeper::SpawnRequest::from_command(&command, id.as_str())?;
        // `Client::spawn` must not be cancelled once called (the child would run with nobody holding its
        // output), so it runs in a task of its own that finishes even if our caller goes away.
        let spawn = {
            let client = client.clone();
            tokio::spawn(async move { client.spawn(request).await })
        };
        let spawned = match spawn.await {
            Ok(result) => result.map_err(|err| err.into_spawn_error(command.program_display()))?,
            Err(join) => {
                return Err(SpawnError::Os {
                    program: command.program_display(),
                    source: std::io::Error::other(format!("keeper spawn task failed: {join}")),
                })
            }
        };
        let started_at = SystemTime::now();
        let identity = spawned.identity().map_err(|err| SpawnError::Os {
            program: command.program_display(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let pid = spawned.pid;
        // The keeper keeps the leader unreaped until we ask, so this pid cannot name another process.
        let pidfd = Pidfd::open(pid)
            .map_err(|err| tracing::warn!(pid, error = %err, "cannot open a pidfd on a kept child"))
            .ok();
        Ok(Process::assemble(
            &command,
            Parts {
                id: id.clone(),
                pid,
                identity: LazyIdentity::known(identity),
                pidfd,
                leader: Leader::Kept {
                    client,
                    id: id.as_str().to_owned(),
                },
                stdin,
                stdout: spawned.stdout.map(|fd| (fd, None)),
                stderr: spawned.stderr.map(|fd| (fd, None)),
                log,
                started_at,
                started_instant: Instant::now(),
            },
        ))
    }

    /// [`Command::adopt`]: supervises a child the keeper kept while no daemon was attached.
    pub(crate) fn adopt(
        command: Command,
        child: keeper::ChildState,
        client: Arc<keeper::Client>,
        started_at: SystemTime,
    ) -> Result<Process, SpawnError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SpawnError::NoRuntime);
        }
        let program = command.program_display();
        let identity = child.identity().map_err(|err| SpawnError::Os {
            program: program.clone(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let log = open_log(&command)?;
        let pid = child.pid;
        let pidfd = Pidfd::open(pid)
            .map_err(|err| tracing::warn!(pid, error = %err, "cannot open a pidfd on a kept child"))
            .ok();
        // Mirror (what an earlier supervisor read), then spool (what the keeper read since), then the pipe:
        // the stream in order. A gap is said in the output itself.
        let handover = |stream: Option<keeper::Handover>, which: Stream| -> Option<(OwnedFd, Option<Vec<u8>>)> {
            let name = which.as_str();
            let stream = stream?;
            let mut spooled = stream.read_spool().unwrap_or_else(|err| {
                tracing::warn!(pid, stream = name, error = %err, "cannot read the keeper's spool");
                format!(
                    "[corral: {} bytes spooled while the daemon was down could not be read: {err}]\n",
                    stream.spooled
                )
                .into_bytes()
            });
            mark_dropped(&mut spooled, stream.dropped);
            if let Some(path) = mirror_path(&command, which) {
                let mut mirror = Mirror::new(path.clone(), command.ring_size, true);
                mirror.write(&spooled);
                spooled = Mirror::read_tail(&path, command.ring_size);
            } else {
                // What the earlier supervisor read lived in its memory only: say so where it would have been.
                let mut marked = LOST_BEFORE_ADOPTION.as_bytes().to_vec();
                marked.extend_from_slice(&spooled);
                spooled = marked;
            }
            Some((stream.reader, Some(spooled).filter(|bytes| !bytes.is_empty())))
        };
        let stdout = handover(child.stdout, Stream::Stdout);
        let stderr = handover(child.stderr, Stream::Stderr);
        let now = SystemTime::now();
        let running_for = now.duration_since(started_at).unwrap_or_default();
        let started_instant = Instant::now().checked_sub(running_for).unwrap_or_else(Instant::now);
        let id = command.id.clone().unwrap_or_else(|| ProcessId::from(child.id.as_str()));
        Ok(Process::assemble(
            &command,
            Parts {
                id,
                pid,
                identity: LazyIdentity::known(identity),
                pidfd,
                leader: Leader::Kept { client, id: child.id },
                stdin: None,
                stdout,
                stderr,
                log,
                started_at,
                started_instant,
            },
        ))
    }

    /// The handle, the pumps and the actor around a started child.
    fn assemble(command: &Command, parts: Parts) -> Process {
        let Parts {
            id,
            pid,
            identity,
            pidfd,
            leader,
            stdin,
            stdout,
            stderr,
            log,
            started_at,
            started_instant,
        } = parts;
        let own_events = Arc::new(EventSlot::default());
        let events = EventSender {
            id: id.clone(),
            own: own_events.clone(),
            shared: command.shared_events.clone(),
        };
        let mut pumps = Pumps::new(events.clone(), log);
        let pump = |stream: Stream, fd: Option<(OwnedFd, Option<Vec<u8>>)>, pumps: &mut Pumps| {
            fd.map(|(fd, prefill)| {
                let capture = Capture::new(command.ring_size);
                // The prefill is already in the mirror (`adopt` put it there): attached after it.
                let existing = prefill.is_some();
                let mut pump = Pump::new(stream, fd, prefill, &capture, command.line_max, pumps);
                pump.mirror = mirror_path(command, stream).map(|path| Mirror::new(path, command.ring_size, existing));
                (pump, capture)
            })
        };
        let (stdout_pump, stdout) = pump(Stream::Stdout, stdout, &mut pumps).unzip();
        let (stderr_pump, stderr) = pump(Stream::Stderr, stderr, &mut pumps).unzip();
        pumps.stdout = stdout_pump;
        pumps.stderr = stderr_pump;
        let stdin_piped = stdin.is_some();
        let stdin = stdin.and_then(|fd| pipe::Sender::from_owned_fd(fd).ok());

        let argv = command.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let shared = Arc::new(Shared {
            id,
            identity,
            pgid: pid,
            argv,
            started_at,
            state: std::sync::Mutex::new(State::Running { started_at }),
            state_changed: Notify::new(),
            controls: std::sync::Mutex::new(Controls::default()),
            control_queued: Notify::new(),
            stdin: tokio::sync::Mutex::new(stdin),
            stdin_piped,
            grace: command.grace,
            stdout,
            stderr,
            events: own_events,
        });
        events.send(EventKind::Started {
            pid,
            pgid: pid,
            at: started_at,
        });
        let actor = Actor {
            pid,
            pgid: pid,
            pidfd,
            leader,
            started_at,
            started_instant,
            shared: shared.clone(),
            on_exit: command.on_exit.clone(),
            events,
            timeout: command.timeout,
            drain: command.drain,
            leftovers: command.leftovers,
            pumps,
            stop: None,
            kill_at: None,
            timer: None,
        };
        tokio::spawn(actor.run());
        Process { shared }
    }

    /// The process's id.
    pub fn id(&self) -> &ProcessId {
        &self.shared.id
    }

    /// The leader's pid.
    pub fn pid(&self) -> u32 {
        self.shared.identity.pid
    }

    /// The process group id (equal to the leader's pid).
    pub fn pgid(&self) -> u32 {
        self.shared.pgid
    }

    /// The leader's identity (pid, start ticks, boot id), to store and check later. Read from `/proc` on
    /// first use (always before the leader is reaped, so it is the leader's own).
    pub fn identity(&self) -> &ProcessIdentity {
        self.shared.identity.get()
    }

    /// The argv it was started with (lossily converted to UTF-8).
    pub fn argv(&self) -> &[String] {
        &self.shared.argv
    }

    /// When it was spawned.
    pub fn started_at(&self) -> SystemTime {
        self.shared.started_at
    }

    /// Its current state.
    pub fn state(&self) -> State {
        self.shared.state().clone()
    }

    /// Its current status.
    pub fn status(&self) -> Status {
        self.shared.state().status()
    }

    /// True until it has finished (also while stopping).
    pub fn is_running(&self) -> bool {
        !self.status().is_finished()
    }

    /// The final state, once finished.
    pub fn finished(&self) -> Option<Finished> {
        match &*self.shared.state() {
            State::Finished(finished) => Some(finished.clone()),
            _ => None,
        }
    }

    /// Waits until the process has ended, its group is gone and its output is read.
    pub async fn wait(&self) -> Finished {
        loop {
            let changed = self.shared.state_changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the check and the await is not missed.
            changed.as_mut().enable();
            if let State::Finished(finished) = &*self.shared.state() {
                return finished.clone();
            }
            changed.await;
        }
    }

    /// Subscribes to this process's events from now on. The subscription ends after the
    /// [`EventKind::Exited`] event; subscribing after that gives an ended subscription.
    pub fn subscribe(&self) -> Events {
        self.shared.events.subscribe(EVENT_CAPACITY)
    }

    /// Follows the output: what each stream has captured so far, and a subscription to the events from
    /// there on, taken together, so that every chunk written is either in the snapshot or in an
    /// [`EventKind::Output`] event, never in both and never in neither. (A [`Process::subscribe`] followed by
    /// [`Process::output`] can see a chunk written in between twice.)
    pub fn follow(&self) -> Follow {
        // Lock order: stdout's ring, stderr's ring, then the event slot (in `subscribe`); the pumps take one
        // ring, then the slot.
        let stdout = self.shared.stdout.as_ref().map(|capture| (capture, capture.lock()));
        let stderr = self.shared.stderr.as_ref().map(|capture| (capture, capture.lock()));
        let events = self.subscribe();
        let snapshot = |ring: &crate::RingBuffer| CapturedOutput {
            bytes: ring.contents(),
            dropped: ring.dropped(),
            total: ring.total_written(),
        };
        let partial = |locked: &Option<(&Capture, std::sync::MutexGuard<'_, crate::RingBuffer>)>| {
            locked
                .as_ref()
                .map_or(0, |(capture, ring)| capture.partial_locked(ring))
        };
        Follow {
            partial: [partial(&stdout), partial(&stderr)],
            stdout: stdout.as_ref().map(|(_, ring)| snapshot(ring)),
            stderr: stderr.as_ref().map(|(_, ring)| snapshot(ring)),
            events,
        }
    }

    /// A snapshot of one stream's captured output; `None` when that stream is not captured.
    pub fn output(&self, stream: Stream) -> Option<CapturedOutput> {
        let capture = match stream {
            Stream::Stdout => self.shared.stdout.as_ref(),
            Stream::Stderr => self.shared.stderr.as_ref(),
        }?;
        Some(capture.with_ring(|ring| CapturedOutput {
            bytes: ring.contents(),
            dropped: ring.dropped(),
            total: ring.total_written(),
        }))
    }

    /// Bytes of one stream written at or after absolute offset `from`, and how many bytes from there on
    /// were dropped: what a follower reads next. `None` when the stream is not captured.
    pub fn output_since(&self, stream: Stream, from: u64) -> Option<(u64, Vec<u8>)> {
        let capture = match stream {
            Stream::Stdout => self.shared.stdout.as_ref(),
            Stream::Stderr => self.shared.stderr.as_ref(),
        }?;
        Some(capture.with_ring(|ring| ring.since(from)))
    }

    /// Sends `signal` to the leader only, through its pidfd.
    pub async fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        self.send_signal(signal, false).await
    }

    /// Sends `signal` to every member of the process group.
    pub async fn signal_group(&self, signal: Signal) -> Result<(), ProcessError> {
        self.send_signal(signal, true).await
    }

    async fn send_signal(&self, signal: Signal, group: bool) -> Result<(), ProcessError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .send(Control::Signal { signal, group, reply })
            .map_err(|_| ProcessError::NotRunning)?;
        answer.await.map_err(|_| ProcessError::NotRunning)?
    }

    /// Asks for a graceful stop and returns at once: `TERM` to the group, `KILL` after `grace`.
    /// Does nothing if the process has already finished.
    pub fn start_shutdown(&self, grace: Duration) {
        let _ = self.shared.send(Control::Stop { grace: Some(grace) });
    }

    /// The grace between `TERM` and `KILL` this process was started with ([`Command::grace`]).
    pub fn grace(&self) -> Duration {
        self.shared.grace
    }

    /// Asks for a graceful stop with the grace this process was started with ([`Command::grace`]) and
    /// returns at once: `TERM` to the group, `KILL` after that grace.
    ///
    /// [`Command::grace`]: crate::Command::grace
    pub fn start_stop(&self) {
        let _ = self.shared.send(Control::Stop { grace: None });
    }

    /// Stops the whole group gracefully (`TERM`, then `KILL` after `grace`) and returns once no member
    /// is left, also when the leader exits at once and leaves children behind.
    pub async fn shutdown(&self, grace: Duration) -> Finished {
        self.start_shutdown(grace);
        self.wait().await
    }

    /// Sends `KILL` to the whole group and returns once no member is left.
    pub async fn kill(&self) -> Finished {
        self.shutdown(Duration::ZERO).await
    }

    /// Writes `data` to the child's stdin.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ProcessError> {
        if !self.shared.stdin_piped {
            return Err(ProcessError::StdinNotPiped);
        }
        let mut stdin = self.shared.stdin.lock().await;
        let sender = stdin.as_mut().ok_or(ProcessError::StdinClosed)?;
        match sender.write_all(data).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                *stdin = None;
                Err(ProcessError::StdinClosed)
            }
            Err(source) => Err(ProcessError::Io {
                op: "write to stdin",
                source,
            }),
        }
    }

    /// Closes the child's stdin, so it reads end of file. Closing twice is not an error.
    pub async fn close_stdin(&self) -> Result<(), ProcessError> {
        if !self.shared.stdin_piped {
            return Err(ProcessError::StdinNotPiped);
        }
        self.shared.stdin.lock().await.take();
        Ok(())
    }
}

/// A process identity read from `/proc` once, on first use.
#[derive(Debug)]
struct LazyIdentity {
    pid: u32,
    cell: std::sync::OnceLock<ProcessIdentity>,
}

impl LazyIdentity {
    fn new(pid: u32) -> Self {
        LazyIdentity {
            pid,
            cell: std::sync::OnceLock::new(),
        }
    }

    /// An identity known already (the keeper reports start ticks with the pid).
    fn known(identity: ProcessIdentity) -> Self {
        LazyIdentity {
            pid: identity.pid,
            cell: std::sync::OnceLock::from(identity),
        }
    }

    fn get(&self) -> &ProcessIdentity {
        self.cell.get_or_init(|| {
            ProcessIdentity::of(self.pid).unwrap_or_else(|err| {
                // Not expected for an unreaped child. An identity that matches nothing is the safe answer:
                // it is never taken for a live process, so nothing is ever signalled through it.
                tracing::warn!(pid = self.pid, error = %err, "cannot read process identity");
                ProcessIdentity {
                    pid: self.pid,
                    start_ticks: 0,
                    boot_id: String::new(),
                }
            })
        })
    }
}

/// What [`Process::assemble`] builds on: a started child and the ends of its pipes that stay with us.
struct Parts {
    id: ProcessId,
    pid: u32,
    identity: LazyIdentity,
    pidfd: Option<Pidfd>,
    leader: Leader,
    stdin: Option<OwnedFd>,
    /// Each captured stream's read end, with bytes to capture before it (a keeper's spool).
    stdout: Option<(OwnedFd, Option<Vec<u8>>)>,
    stderr: Option<(OwnedFd, Option<Vec<u8>>)>,
    log: Option<Arc<std::sync::Mutex<LogWriter>>>,
    started_at: SystemTime,
    started_instant: Instant,
}

/// Who is the leader's parent: who reaps it and reports how it ended.
enum Leader {
    /// Ours: the actor reaps it through its pidfd.
    Own,
    /// The keeper's: its exit comes over the keeper connection, and the keeper reaps it when asked, once
    /// the group is gone (until then the zombie pins the process group id).
    Kept { client: Arc<keeper::Client>, id: String },
}

fn open_log(command: &Command) -> Result<Option<Arc<std::sync::Mutex<LogWriter>>>, SpawnError> {
    match &command.log {
        Some(config) => Ok(Some(Arc::new(std::sync::Mutex::new(
            LogWriter::open(config.clone()).map_err(|source| SpawnError::OpenFile {
                path: config.path.clone(),
                source,
            })?,
        )))),
        None => Ok(None),
    }
}

/// Reaps `pid` synchronously; for error paths right after spawn only.
fn reap_blocking(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
    reaper::untrack(pid);
}

/// Why a stop was started; decides the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Requested,
    TimedOut,
    /// Cleaning up members left behind by a leader that exited by itself.
    Leftovers,
}

/// The supervisor task of one process: the only code that reaps it or signals its group.
struct Actor {
    pid: u32,
    pgid: u32,
    /// Taken (closed) once the leader is reaped, so no fd outlives `wait`.
    pidfd: Option<Pidfd>,
    leader: Leader,
    started_at: SystemTime,
    started_instant: Instant,
    /// Its state and inbox, shared with the handles.
    shared: Arc<Shared>,
    on_exit: Option<ExitHook>,
    events: EventSender,
    timeout: Option<Duration>,
    drain: Duration,
    leftovers: Leftovers,
    /// The captured streams, read by this task alongside everything else.
    pumps: Pumps,
    stop: Option<StopReason>,
    kill_at: Option<tokio::time::Instant>,
    /// The one timer for every deadline (timeout, `KILL` escalation, group polling), allocated on first
    /// use: most processes never need one, and a timer inline in the actor's future would cost every
    /// process its size for each place it waits.
    timer: Option<Pin<Box<Sleep>>>,
}

/// Waits until `deadline` on `timer` (created or reset); never resolves without a deadline.
async fn sleep_on(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Option<tokio::time::Instant>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    let sleep = match timer {
        Some(sleep) => {
            sleep.as_mut().reset(deadline);
            sleep
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    sleep.await;
}

/// Reads the captured streams into the handle's captures; resolves once both are closed.
fn read_output<'a>(pumps: &'a mut Pumps, shared: &'a Shared) -> impl std::future::Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| pumps.poll(cx, shared.stdout.as_ref(), shared.stderr.as_ref()))
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<tokio::time::Instant>, b: Option<tokio::time::Instant>) -> Option<tokio::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Drop for Actor {
    /// Ends the inbox, and, if the actor did not get to publish a final state (it panicked, or the runtime
    /// shut down), publishes an unknown end, so that no [`Process::wait`] waits forever. After a panic the
    /// exit hook still runs with that end, as a waiting task of the caller's would have seen it; not at a
    /// runtime shutdown, where a kept child lives on and its owner must not record it as ended.
    fn drop(&mut self) {
        self.shared.close_controls();
        let finished = matches!(*self.shared.state(), State::Finished(_));
        if finished {
            return;
        }
        let unknown = Finished {
            outcome: Outcome::Failed(Failure::Unknown),
            exit: None,
            started_at: self.started_at,
            ended_at: SystemTime::now(),
            duration: self.started_instant.elapsed(),
        };
        self.shared.set_state(State::Finished(unknown.clone()));
        if std::thread::panicking() {
            self.call_exit_hook(&unknown);
        }
    }
}

/// Resolves when the process behind `pidfd` has exited (at once without a pidfd).
async fn pidfd_exited(pidfd: Option<&Pidfd>) {
    if let Some(pidfd) = pidfd {
        pidfd.exited().await;
    }
}

/// How the leader's end became known.
enum LeaderEnd {
    /// Our child exited: reap it.
    Own,
    /// The keeper reported (and keeps) its status; `None` if unknown.
    Kept(Option<Exit>),
}

/// Resolves when the leader has exited.
async fn leader_exited(leader: &Leader, pidfd: Option<&Pidfd>, identity: &LazyIdentity) -> LeaderEnd {
    match leader {
        Leader::Own => {
            pidfd_exited(pidfd).await;
            LeaderEnd::Own
        }
        Leader::Kept { client, id } => match client.wait_exit(id).await {
            Ok(exited) => LeaderEnd::Kept(exited.status.exit()),
            Err(err) => {
                // The keeper is gone: nobody can tell the status any more. Still notice the end.
                tracing::warn!(child = %id, error = %err, "keeper connection lost; exit status will be unknown");
                if pidfd.is_some() {
                    // Boxed: this rare path must not make every actor's future bigger.
                    Box::pin(pidfd_exited(pidfd)).await;
                } else {
                    // No pidfd (descriptors ran out at spawn): no notification exists; poll the identity.
                    while matches!(identity.get().check(), Ok(crate::identity::Liveness::Alive)) {
                        // Boxed: this rare path must not make every actor's future bigger.
                        Box::pin(tokio::time::sleep(Duration::from_secs(1))).await;
                    }
                }
                LeaderEnd::Kept(None)
            }
        },
    }
}

impl Actor {
    /// The actor's whole life. Not an `async fn` taking `self`: that would store the actor twice in the
    /// future (once as the argument, once as the moved-in binding), 500 bytes more per process.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move { self.live().await }
    }

    async fn live(&mut self) {
        let exit = self.wait_for_leader().await;
        self.pidfd = None;
        if let Leader::Kept { client, id } = &self.leader {
            // Reaped now, as our own children are: members left in the group still pin its id (the
            // kernel keeps a pid number allocated while it names a process group), and a kept zombie
            // would make every end pay a /proc scan in `clean_up_group`.
            if let Err(err) = client.reap(id).await {
                tracing::warn!(pid = self.pid, error = %err, "cannot ask the keeper to reap");
            }
        }
        self.clean_up_group().await;
        if let Leader::Own = self.leader {
            reaper::untrack(self.pid);
        }
        self.drain_output().await;
        let ended_at = SystemTime::now();
        let outcome = match (self.stop, exit) {
            (Some(StopReason::Requested), _) => Outcome::Interrupted,
            (Some(StopReason::TimedOut), _) => Outcome::Failed(Failure::TimedOut),
            (_, None) => Outcome::Failed(Failure::Unknown),
            (_, Some(Exit::Code(0))) => Outcome::Completed,
            (_, Some(Exit::Code(code))) => Outcome::Failed(Failure::ExitCode(code)),
            (_, Some(Exit::Signal(signal))) => Outcome::Failed(Failure::Signal(signal)),
        };
        let finished = Finished {
            outcome,
            exit,
            started_at: self.started_at,
            ended_at,
            duration: self.started_instant.elapsed(),
        };
        self.shared.set_state(State::Finished(finished.clone()));
        self.call_exit_hook(&finished);
        // The end is recorded and the output captured: a restart has nothing left to re-attach.
        self.pumps.remove_mirrors();
        self.events.send(EventKind::Exited(finished));
        self.events.own.close();
    }

    /// Calls the exit hook, if any, once.
    fn call_exit_hook(&mut self, finished: &Finished) {
        if let Some(hook) = self.on_exit.take() {
            let process = Process {
                shared: self.shared.clone(),
            };
            let call = std::panic::AssertUnwindSafe(|| hook(&process, finished));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!(pid = self.pid, "the exit hook of a process panicked");
            }
        }
    }

    /// Phase 1: the leader runs. Ends with the leader reaped and its exit status.
    async fn wait_for_leader(&mut self) -> Option<Exit> {
        let timeout_at = self
            .timeout
            .map(|t| tokio::time::Instant::from_std(self.started_instant + t));
        loop {
            let timeout_armed = timeout_at.filter(|_| self.stop.is_none());
            let deadline = earliest(self.kill_at, timeout_armed);
            tokio::select! {
                biased;
                exit = leader_exited(&self.leader, self.pidfd.as_ref(), &self.shared.identity) => match exit {
                    LeaderEnd::Own => return self.reap_leader(),
                    LeaderEnd::Kept(exit) => return exit,
                },
                control = self.shared.next_control() => self.handle(control, true),
                _ = sleep_on(&mut self.timer, deadline) => {
                    let now = tokio::time::Instant::now();
                    if !self.kill_if_due(now) && timeout_armed.is_some_and(|at| at <= now) {
                        self.begin_stop(StopReason::TimedOut, self.shared.grace);
                    }
                }
                _ = read_output(&mut self.pumps, &self.shared), if self.pumps.is_open() => {}
            }
        }
    }

    /// Reaps the leader; it has exited, so this does not block.
    fn reap_leader(&mut self) -> Option<Exit> {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        // Pin the identity while the pid is still ours (a zombie still has its /proc entry).
        self.shared.identity.get();
        let pidfd = self.pidfd.as_ref()?;
        loop {
            match waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED) {
                Ok(Some(status)) => {
                    if let Some(code) = status.exit_status() {
                        return Some(Exit::Code(code));
                    }
                    return status
                        .terminating_signal()
                        .and_then(Signal::from_number)
                        .map(Exit::Signal);
                }
                Ok(None) => continue,
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => {
                    tracing::warn!(pid = self.pid, error = %err, "exit status lost (was the child reaped elsewhere?)");
                    return None;
                }
            }
        }
    }

    /// Phase 2: the leader is gone; wait until no live member of its group is left, stopping them first
    /// if a stop is under way or the leftovers policy says so.
    async fn clean_up_group(&mut self) {
        let has_members = |pgid| group::group_has_live_members(pgid).unwrap_or(false);
        if !has_members(self.pgid) {
            return;
        }
        if self.stop.is_none() {
            if self.leftovers == Leftovers::Leave {
                return;
            }
            self.begin_stop(StopReason::Leftovers, self.shared.grace);
        }
        // No notification exists for the exit of a non-child; poll, backing off, only while stopping.
        let mut delay = Duration::from_millis(1);
        let mut check_at = tokio::time::Instant::now() + delay;
        loop {
            let deadline = earliest(self.kill_at, Some(check_at));
            tokio::select! {
                biased;
                control = self.shared.next_control() => self.handle(control, false),
                _ = sleep_on(&mut self.timer, deadline) => {
                    let now = tokio::time::Instant::now();
                    self.kill_if_due(now);
                    if check_at <= now {
                        if !has_members(self.pgid) {
                            return;
                        }
                        delay = (delay * 2).min(Duration::from_millis(100));
                        check_at = now + delay;
                    }
                }
                _ = read_output(&mut self.pumps, &self.shared), if self.pumps.is_open() => {}
            }
        }
    }

    /// Phase 3: let the pumps read what is left in the pipes, for at most `drain`.
    async fn drain_output(&mut self) {
        let deadline = tokio::time::Instant::now() + self.drain;
        tokio::select! {
            _ = read_output(&mut self.pumps, &self.shared) => {}
            _ = sleep_on(&mut self.timer, Some(deadline)) => {
                tracing::debug!(pid = self.pid, "output still open after the group ended; closing it");
                self.pumps.close(self.shared.stdout.as_ref(), self.shared.stderr.as_ref());
            }
        }
    }

    fn handle(&mut self, control: Control, leader_alive: bool) {
        match control {
            Control::Signal { signal, group, reply } => {
                let result = if group {
                    group::signal_group(self.pgid, signal)
                        .map(drop)
                        .map_err(ProcessError::Signal)
                } else if let Some(pidfd) = self.pidfd.as_ref().filter(|_| leader_alive) {
                    pidfd.send_signal(signal).map(drop).map_err(ProcessError::from)
                } else {
                    Err(ProcessError::NotRunning)
                };
                let _ = reply.send(result);
            }
            Control::Stop { grace } => match (self.stop, grace.unwrap_or(self.shared.grace)) {
                (Some(StopReason::Requested) | Some(StopReason::TimedOut), grace) => {
                    // Already stopping: a shorter grace may bring the KILL forward.
                    let sooner = tokio::time::Instant::now() + grace;
                    if self.kill_at.is_some_and(|at| sooner < at) {
                        if grace.is_zero() {
                            self.kill_at = None;
                            self.signal_group(Signal::KILL);
                        } else {
                            self.kill_at = Some(sooner);
                        }
                    }
                }
                (Some(StopReason::Leftovers) | None, grace) => {
                    self.stop = None;
                    self.begin_stop(StopReason::Requested, grace);
                }
            },
        }
    }

    /// Sends the `KILL` of a graceful stop if its time has come; true if it did.
    fn kill_if_due(&mut self, now: tokio::time::Instant) -> bool {
        if self.kill_at.is_some_and(|at| at <= now) {
            self.kill_at = None;
            self.signal_group(Signal::KILL);
            return true;
        }
        false
    }

    fn begin_stop(&mut self, reason: StopReason, grace: Duration) {
        self.stop = Some(reason);
        self.shared.set_state(State::Stopping {
            started_at: self.started_at,
        });
        if grace.is_zero() {
            self.kill_at = None;
            self.signal_group(Signal::KILL);
        } else {
            self.signal_group(Signal::TERM);
            // The leader may have stopped TERM from reaching others (or ignore it); KILL follows.
            self.signal_group(Signal::CONT);
            self.kill_at = Some(tokio::time::Instant::now() + grace);
        }
    }

    fn signal_group(&self, signal: Signal) {
        match group::signal_group(self.pgid, signal) {
            Ok(true) if signal != Signal::CONT => self.events.send(EventKind::Signaled { signal }),
            Ok(_) => {}
            Err(err) => tracing::warn!(pgid = self.pgid, %signal, error = %err, "cannot signal process group"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mark_dropped;

    #[test]
    fn the_dropped_marker_is_a_line_of_its_own() {
        let mut whole = b"a\nb\n".to_vec();
        mark_dropped(&mut whole, 0);
        assert_eq!(whole, b"a\nb\n", "nothing dropped, nothing said");
        mark_dropped(&mut whole, 5);
        assert_eq!(whole, b"a\nb\n[corral: 5 bytes lost while the daemon was down]\n");
        let mut cut = b"a\n1656".to_vec();
        mark_dropped(&mut cut, 7);
        assert_eq!(cut, b"a\n1656\n[corral: 7 bytes lost while the daemon was down]\n");
        let mut empty = Vec::new();
        mark_dropped(&mut empty, 1);
        assert_eq!(empty, b"[corral: 1 bytes lost while the daemon was down]\n");
    }
}
