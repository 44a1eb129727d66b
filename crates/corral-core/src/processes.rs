//! Managed processes with durable records: the daemon's process table.
//!
//! [`ProcessManager`] joins corral-proc (the running process) and the [`Store`] (its record). The record is
//! written *before* the process is reported started, and its terminal state is written exactly once, by
//! the exit hook of that process, which runs on its supervisor task (the store's `finish_process` is a
//! compare-and-set, so a racing writer changes nothing). No task of the manager's own waits per process:
//! a daemon with a thousand idle children pays for their supervisors only.
//!
//! After a daemon restart, [`ProcessManager::reconcile`] checks every record left live: a process that is
//! still the same one (pid + start ticks + boot id) is *recovered* (watched through a pidfd, stoppable,
//! never signalled by pid alone); any other record becomes `stale`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_proc::{
    keeper, CapturedOutput, Command, Failure, Finished, Follow, Liveness, Outcome, Process, ProcessIdentity, Signal,
    StdinMode, Stream,
};
use corral_store::{ProcessEnd, ProcessFilter, ProcessRecord, ProcessStart, ProcessState, Store, StoreError};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::events::{from_ms, now_ms, to_ms, EventBus};
use crate::redact::redact_argv;

/// Default grace between `TERM` and `KILL`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// argv: the program, then its arguments. Never run through a shell.
    pub command: Vec<String>,
    /// Working directory.
    pub dir: Option<PathBuf>,
    /// Environment variables to set.
    pub env: BTreeMap<String, String>,
    /// Owner labels.
    pub labels: BTreeMap<String, String>,
    /// Who started it: `adhoc`, `exec`, `task`, `pipeline`, `service`, `hook`.
    pub source: String,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Grace between `TERM` and `KILL` for stops and timeouts.
    pub grace: Option<Duration>,
    /// Pipe stdin (to write with [`ProcessManager::write_stdin`]); otherwise `/dev/null`.
    pub stdin: bool,
    /// Use this id instead of a new UUID.
    pub id: Option<String>,
    /// The argv to record instead of `command` (already redacted by the caller, e.g. exec's secret
    /// args); `None` records `command` with secret-looking values redacted.
    pub record_command: Option<Vec<String>>,
    /// Mirror the captured output to disk while the process runs (see
    /// [`ProcessManager::set_output_mirror`]), so that a crash of the daemon loses none of what the
    /// process wrote before it: for processes whose output is their result (exec jobs).
    pub durable_output: bool,
}

/// Errors of the process table.
#[derive(Debug, thiserror::Error)]
pub enum ProcessesError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No process with that id.
    #[error("no process with id {0}")]
    NotFound(String),
    /// The process has already finished.
    #[error("process {0} is not running")]
    NotRunning(String),
    /// The process could not be started; its record says why.
    #[error("{error}")]
    Spawn {
        /// The failed record.
        record: Box<ProcessRecord>,
        /// Why.
        error: String,
    },
    /// The operation is not possible for this process (e.g. stdin of a recovered process).
    #[error("{0}")]
    Unsupported(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An OS-level failure on the process.
    #[error("{0}")]
    Os(String),
}

/// A process this daemon runs (child) or found still running after a restart (recovered).
#[derive(Clone)]
enum Handle {
    Live {
        process: Process,
        tracker: Arc<Tracker>,
    },
    Recovered {
        identity: ProcessIdentity,
        pgid: u32,
        /// The grace it was started with (from its record), else [`DEFAULT_GRACE`].
        grace: Duration,
        tracker: Arc<Tracker>,
    },
}

impl Handle {
    /// Starts a graceful stop of the whole group: `TERM`, then `KILL` after `grace`, or when `None` after
    /// the grace the process was started with.
    fn start_stop(&self, grace: Option<Duration>) {
        match (self, grace) {
            (Handle::Live { process, .. }, Some(grace)) => process.start_shutdown(grace),
            (Handle::Live { process, .. }, None) => process.start_stop(),
            (
                Handle::Recovered {
                    identity,
                    pgid,
                    grace: own,
                    ..
                },
                grace,
            ) => {
                let (identity, pgid, grace) = (identity.clone(), *pgid, grace.unwrap_or(*own));
                tokio::spawn(async move { stop_recovered(&identity, pgid, grace).await });
            }
        }
    }

    fn tracker(&self) -> &Tracker {
        match self {
            Handle::Live { tracker, .. } | Handle::Recovered { tracker, .. } => tracker,
        }
    }

    fn is_recorded(&self) -> bool {
        self.tracker().is_recorded()
    }
}

/// How far a process's record has got. Shared by its start (or re-attach) and its exit hook, so that the
/// end is written after the start even when the process ends before its start is recorded.
#[derive(Default)]
struct Tracker {
    phase: Mutex<Phase>,
    /// The record as its start wrote it, kept only for a process with a timeout (an exec job, a task step):
    /// it ends by its deadline, so the copy is bounded, and its end is published without reading the record
    /// back. Any other process may idle for months; its end reads the record back instead.
    started: Mutex<Option<Box<ProcessRecord>>>,
}

#[derive(Default)]
enum Phase {
    /// The start is being recorded.
    #[default]
    Starting,
    /// Started and recorded.
    Running,
    /// Ended before its start was recorded: the start writes the end.
    EndedEarly(Finished),
    /// The terminal state is in the store.
    Recorded,
}

impl Tracker {
    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_recorded(&self) -> bool {
        matches!(*self.phase(), Phase::Recorded)
    }

    /// The start is recorded. Returns the end if the process ended meanwhile: the caller writes it.
    fn started(&self) -> Option<Finished> {
        let mut phase = self.phase();
        match std::mem::replace(&mut *phase, Phase::Running) {
            Phase::EndedEarly(finished) => Some(finished),
            Phase::Starting | Phase::Running => None,
            Phase::Recorded => {
                *phase = Phase::Recorded;
                None
            }
        }
    }

    /// The process ended: true if the caller writes the end now, false if the start will.
    fn ended(&self, finished: &Finished) -> bool {
        let mut phase = self.phase();
        if let Phase::Starting = *phase {
            *phase = Phase::EndedEarly(finished.clone());
            return false;
        }
        true
    }

    fn keep_record(&self, record: &ProcessRecord) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(record.clone()));
    }

    fn take_record(&self) -> Option<ProcessRecord> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|r| *r)
    }

    fn set_recorded(&self, changed: &Notify) {
        *self.phase() = Phase::Recorded;
        changed.notify_waiters();
    }

    /// Waits until the terminal state is in the store; `changed` is the manager's `recorded_changed`.
    async fn wait_recorded(&self, changed: &Notify) {
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so an end recorded in between is not missed.
            notified.as_mut().enable();
            if self.is_recorded() {
                return;
            }
            notified.await;
        }
    }
}

/// Counts from [`ProcessManager::reconcile`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Records whose process is still the same one, now watched again (re-attached or not).
    pub recovered: usize,
    /// Of those, processes the keeper kept: output and exit status back.
    pub reattached: usize,
    /// Of those, processes that ended while no daemon ran; their real exit status is recorded.
    pub exited_while_down: usize,
    /// Processes the keeper held that no live record owned: stopped and reaped.
    pub unowned: usize,
    /// Records whose process is gone or whose pid now names another process.
    pub stale: usize,
}

/// The daemon's process table. Cheap to clone.
#[derive(Clone)]
pub struct ProcessManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    bus: EventBus,
    /// The keeper that parents our children, when the daemon runs one (see `corral_proc::keeper`).
    keeper: Option<Arc<keeper::Client>>,
    handles: Mutex<HashMap<String, Handle>>,
    /// Woken whenever a process's end has been recorded (one for all: see [`Tracker::wait_recorded`]).
    recorded_changed: Notify,
    /// Why a process is being interrupted, for its record's `error`.
    reasons: Mutex<HashMap<String, String>>,
    /// Finished processes whose handles (and captured output) are still kept, oldest first.
    finished: Mutex<FinishedCache>,
    /// Where output of `durable_output` processes is mirrored ([`ProcessManager::set_output_mirror`]).
    mirror_dir: std::sync::OnceLock<PathBuf>,
    /// Ids re-attached through the keeper by [`ProcessManager::reconcile`], whether they still run or not.
    reattached: Mutex<std::collections::HashSet<String>>,
    /// Ids being stopped by [`ProcessManager::stop_timed_out`]: their end is recorded as a timeout.
    timing_out: Mutex<std::collections::HashSet<String>>,
}

/// Handles of finished processes are kept for their output, within a count and a byte budget.
#[derive(Default)]
struct FinishedCache {
    order: std::collections::VecDeque<(String, usize)>,
    bytes: usize,
}

/// Finished processes whose output stays readable.
const KEEP_FINISHED: usize = 1000;
/// Bytes of captured output kept for finished processes, in all.
const KEEP_FINISHED_BYTES: usize = 64 * 1024 * 1024;

impl ProcessManager {
    /// A manager over `store`, publishing on `bus`, whose children are its own: they die with it (or
    /// are found again by [`ProcessManager::reconcile`] without their output and exit status).
    pub fn new(store: Arc<dyn Store>, bus: EventBus) -> Self {
        Self::build(store, bus, None)
    }

    /// A manager whose children are started by the keeper behind `keeper`, so they outlive this process
    /// with their output and exit status, and [`ProcessManager::reconcile`] re-attaches them.
    pub fn with_keeper(store: Arc<dyn Store>, bus: EventBus, keeper: Arc<keeper::Client>) -> Self {
        Self::build(store, bus, Some(keeper))
    }

    fn build(store: Arc<dyn Store>, bus: EventBus, keeper: Option<Arc<keeper::Client>>) -> Self {
        ProcessManager {
            inner: Arc::new(Inner {
                store,
                bus,
                keeper,
                handles: Mutex::new(HashMap::new()),
                recorded_changed: Notify::new(),
                reasons: Mutex::new(HashMap::new()),
                finished: Mutex::new(FinishedCache::default()),
                mirror_dir: std::sync::OnceLock::new(),
                reattached: Mutex::new(std::collections::HashSet::new()),
                timing_out: Mutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    /// Mirrors the output of processes started with [`StartRequest::durable_output`] to files in `dir`
    /// (which must exist) while they run, and reads such mirrors back when [`ProcessManager::reconcile`]
    /// re-attaches a process: with a keeper, a crash of the daemon then loses none of their output. Set
    /// once, before processes start; later calls are ignored.
    pub fn set_output_mirror(&self, dir: PathBuf) {
        let _ = self.inner.mirror_dir.set(dir);
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.inner.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        self.handles().get(id).cloned()
    }

    /// The store behind this manager.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Starts a process and records it: the record is written once, after the spawn, `running` with pid
    /// and identity when this returns (or `failed`, with the error, if the spawn failed). Once the spawn is
    /// under way it completes (record and exit hook included) even if the caller stops waiting.
    pub async fn start(&self, request: StartRequest) -> Result<ProcessRecord, ProcessesError> {
        if self.inner.keeper.is_none() {
            // Nothing below awaits without a keeper: the call cannot be cut short half-way.
            return self.start_inner(request).await;
        }
        let manager = self.clone();
        tokio::spawn(async move { manager.start_inner(request).await })
            .await
            .map_err(|err| ProcessesError::Os(format!("the start task failed: {err}")))?
    }

    async fn start_inner(&self, request: StartRequest) -> Result<ProcessRecord, ProcessesError> {
        if request.command.is_empty() || request.command[0].is_empty() {
            return Err(ProcessesError::Invalid("command must be a non-empty argv array".into()));
        }
        if let Some(dir) = request.dir.as_ref().filter(|dir| dir.is_relative()) {
            // Relative to what? Not the daemon's working directory, nor the keeper's: the caller's, which
            // only the caller knows.
            return Err(ProcessesError::Invalid(format!(
                "dir must be an absolute path (got {:?})",
                dir.display().to_string()
            )));
        }
        // Time-ordered (UUIDv7): consecutive records go to the end of the id index instead of a random
        // page of it, which costs fewer pages per insert once the table is larger than the cache.
        let id = request.id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let record = ProcessRecord {
            id: id.clone(),
            source: if request.source.is_empty() {
                "adhoc".into()
            } else {
                request.source.clone()
            },
            labels: request.labels.clone(),
            pid: None,
            pgid: None,
            start_ticks: None,
            boot_id: None,
            command: request
                .record_command
                .clone()
                .unwrap_or_else(|| redact_argv(&request.command)),
            dir: request.dir.as_ref().map(|d| d.display().to_string()),
            state: ProcessState::Pending,
            exit_code: None,
            signal: None,
            error: None,
            created_at: now_ms(),
            started_at: None,
            ended_at: None,
            timeout_ms: request.timeout.map(|t| t.as_millis() as u64),
            grace_ms: request.grace.map(|g| g.as_millis() as u64),
        };
        // A caller-chosen id must be new: refused before anything runs.
        if request.id.is_some() && self.inner.store.get_process(&id)?.is_some() {
            return Err(ProcessesError::Store(StoreError::Conflict { what: "process", id }));
        }

        let mut command = Command::new(&request.command).id(id.clone());
        if let Some(dir) = &request.dir {
            command = command.dir(dir);
        }
        for (name, value) in &request.env {
            command = command.env(name, value);
        }
        if request.stdin {
            command = command.stdin(StdinMode::Piped);
        }
        if let Some(timeout) = request.timeout {
            command = command.timeout(timeout);
        }
        command = command.grace(request.grace.unwrap_or(DEFAULT_GRACE));
        if let Some(dir) = self.inner.mirror_dir.get().filter(|_| request.durable_output) {
            command = command.mirror_output(dir);
        }
        let tracker = Arc::new(Tracker::default());
        command = self.on_exit(command, &tracker);
        let spawned = match &self.inner.keeper {
            Some(keeper) if keeper.is_connected() => command.spawn_kept(keeper.clone()).await,
            // No keeper, or it is gone (`keeper_connected` tells /health): our own child, so starting
            // processes still works; it just will not survive a crash of the daemon.
            _ => command.spawn(),
        };
        let process = match spawned {
            Ok(process) => process,
            // Bad input, found before anything ran (a NUL in the argv, a bad environment name): refused, and
            // nothing is recorded.
            Err(err @ (corral_proc::SpawnError::EmptyCommand | corral_proc::SpawnError::InvalidArgument { .. })) => {
                return Err(ProcessesError::Invalid(err.to_string()));
            }
            Err(err) => {
                let error = format!("failed to start: {err}");
                let end = ProcessEnd {
                    state: ProcessState::Failed,
                    exit_code: None,
                    signal: None,
                    error: Some(error.clone()),
                    ended_at: now_ms(),
                };
                let record = ended(record, &end);
                self.inner.store.insert_process(&record)?;
                self.inner.bus.publish("process.exited", record_json(&record));
                return Err(ProcessesError::Spawn {
                    record: Box::new(record),
                    error,
                });
            }
        };
        let identity = process.identity().clone();
        let start = ProcessStart {
            pid: identity.pid,
            pgid: process.pgid(),
            start_ticks: Some(identity.start_ticks),
            boot_id: Some(identity.boot_id.clone()),
            started_at: to_ms(process.started_at()),
        };
        // One write per start: the record goes in once the process runs. A crash before this write leaves a
        // child no record owns: the keeper's (if any) is stopped at the next start (see `reconcile`), the
        // daemon's own dies with it or is orphaned exactly as it would be after a `pending` record, which
        // carried no pid to find it by.
        let record = ProcessRecord {
            state: ProcessState::Running,
            pid: Some(start.pid),
            pgid: Some(start.pgid),
            start_ticks: start.start_ticks,
            boot_id: start.boot_id,
            started_at: Some(start.started_at),
            ..record
        };
        // The handle first: whoever finds the record (an interrupt by label) finds the live process with it,
        // never a `running` record without a handle, which it would take for a leftover and mark stale.
        self.handles().insert(
            id.clone(),
            Handle::Live {
                process: process.clone(),
                tracker: tracker.clone(),
            },
        );
        if let Err(err) = self.inner.store.insert_process(&record) {
            // Not recorded, so not ours to keep running: nothing could find or stop it later.
            self.handles().remove(&id);
            process.start_shutdown(Duration::ZERO);
            return Err(err.into());
        }
        self.inner.bus.publish("process.started", record_json(&record));
        if request.timeout.is_some() {
            tracker.keep_record(&record);
        }
        if let Some(finished) = tracker.started() {
            self.finish_live(&process, &finished, &tracker);
        }
        Ok(record)
    }

    /// `command`, with the exit hook that records its end: the process's supervisor task writes the end
    /// (or leaves it to the start, see [`Tracker`]).
    fn on_exit(&self, command: Command, tracker: &Arc<Tracker>) -> Command {
        let manager = self.clone();
        let tracker = tracker.clone();
        command.on_exit(move |process, finished| {
            if tracker.ended(finished) {
                manager.finish_live(process, finished, &tracker);
            }
        })
    }

    /// A live process has ended: writes its end, then keeps its output within the budget of finished
    /// processes.
    fn finish_live(&self, process: &Process, finished: &Finished, tracker: &Tracker) {
        let id = process.id().as_str();
        let killed = finished.signal() == Some(Signal::KILL);
        self.record_end_from(id, tracker.take_record(), end_of(finished), killed);
        tracker.set_recorded(&self.inner.recorded_changed);
        let bytes = [Stream::Stdout, Stream::Stderr]
            .iter()
            .filter_map(|s| process.output(*s))
            .map(|o| o.bytes.len())
            .sum();
        self.retire(id, bytes);
    }

    /// Writes the terminal state (once) and publishes `process.exited` (and `process.killed`), with the
    /// record as read back.
    fn record_end(&self, id: &str, end: ProcessEnd, killed: bool) {
        self.record_end_from(id, None, end, killed);
    }

    /// [`record_end`](Self::record_end); given the record as its start wrote it, the published record is
    /// built from that instead of read back.
    fn record_end_from(&self, id: &str, started: Option<ProcessRecord>, mut end: ProcessEnd, killed: bool) {
        let reason = self.inner.reasons.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let timed_out = self
            .inner
            .timing_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if end.state == ProcessState::Interrupted && timed_out {
            end.state = ProcessState::Failed;
            end.error = Some("timed out".to_owned());
        } else if let (ProcessState::Interrupted, Some(reason)) = (end.state, reason) {
            end.error = Some(format!("interrupted: {reason}"));
        }
        let record = match self.inner.store.finish_process(id, &end) {
            Ok(true) => match started {
                Some(started) => Some(ended(started, &end)),
                None => self.inner.store.get_process(id).ok().flatten(),
            },
            Ok(false) => {
                tracing::debug!(process = id, "terminal state already written");
                self.inner.store.get_process(id).ok().flatten()
            }
            Err(err) => {
                tracing::error!(process = id, error = %err, "cannot record the end of a process");
                self.inner.store.get_process(id).ok().flatten()
            }
        };
        if let Some(record) = record {
            if killed {
                self.inner
                    .bus
                    .publish("process.killed", json!({"id": id, "signal": "KILL"}));
            }
            self.inner.bus.publish("process.exited", record_json(&record));
        }
    }

    /// Keeps a finished process's handle for its output, evicting the oldest beyond the budget, so
    /// memory stays flat however many processes run.
    fn retire(&self, id: &str, bytes: usize) {
        let evicted: Vec<String> = {
            let mut cache = self.inner.finished.lock().unwrap_or_else(|p| p.into_inner());
            cache.order.push_back((id.to_owned(), bytes));
            cache.bytes += bytes;
            let mut evicted = Vec::new();
            while cache.order.len() > KEEP_FINISHED || cache.bytes > KEEP_FINISHED_BYTES {
                let Some((old, old_bytes)) = cache.order.pop_front() else {
                    break;
                };
                cache.bytes -= old_bytes;
                evicted.push(old);
            }
            evicted
        };
        if !evicted.is_empty() {
            let mut handles = self.handles();
            for old in evicted {
                handles.remove(&old);
            }
        }
    }

    /// One record.
    pub fn get(&self, id: &str) -> Result<ProcessRecord, ProcessesError> {
        self.inner
            .store
            .get_process(id)?
            .ok_or_else(|| ProcessesError::NotFound(id.to_owned()))
    }

    /// Records matching `filter`, newest first.
    pub fn list(&self, filter: &ProcessFilter) -> Result<Vec<ProcessRecord>, ProcessesError> {
        Ok(self.inner.store.list_processes(filter)?)
    }

    /// Sends `signal` to the process (the leader) — through its pidfd, never by pid alone.
    pub async fn signal(&self, id: &str, signal: Signal) -> Result<(), ProcessesError> {
        match self.live_handle(id)? {
            Handle::Live { process, .. } => process.signal(signal).await.map_err(|err| match err {
                corral_proc::ProcessError::NotRunning => ProcessesError::NotRunning(id.to_owned()),
                other => ProcessesError::Os(other.to_string()),
            }),
            Handle::Recovered { identity, .. } => {
                let pidfd = identity
                    .open_pidfd()
                    .map_err(|_| ProcessesError::NotRunning(id.to_owned()))?;
                match pidfd.send_signal(signal) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ProcessesError::NotRunning(id.to_owned())),
                    Err(err) => Err(ProcessesError::Os(err.to_string())),
                }
            }
        }
    }

    fn live_handle(&self, id: &str) -> Result<Handle, ProcessesError> {
        match self.handle(id) {
            Some(handle) if !handle.is_recorded() => Ok(handle),
            Some(_) => Err(ProcessesError::NotRunning(id.to_owned())),
            None => {
                self.get(id)?;
                Err(ProcessesError::NotRunning(id.to_owned()))
            }
        }
    }

    /// Stops the whole process group (`TERM`, `grace`, `KILL`; without `grace`, the one the process was
    /// started with) and returns the final record once no member of the group is left.
    pub async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<ProcessRecord, ProcessesError> {
        let handle = self.live_handle(id)?;
        self.inner
            .store
            .transition_process(id, &[ProcessState::Running], ProcessState::Interrupting)?;
        handle.start_stop(grace);
        handle.tracker().wait_recorded(&self.inner.recorded_changed).await;
        self.get(id)
    }

    /// [`ProcessManager::stop`] because a timeout kept outside corral-proc passed (that of a run resumed
    /// after a restart, whose process was started before it): the end is recorded as corral-proc's own
    /// timeout records it, `failed` with the error "timed out".
    pub async fn stop_timed_out(&self, id: &str, grace: Option<Duration>) -> Result<ProcessRecord, ProcessesError> {
        self.inner
            .timing_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
        let stopped = self.stop(id, grace).await;
        self.inner
            .timing_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        stopped
    }

    /// Writes to the process's stdin (it must have been started with `stdin: true`).
    pub async fn write_stdin(&self, id: &str, data: &[u8], close: bool) -> Result<(), ProcessesError> {
        let Handle::Live { process, .. } = self.live_handle(id)? else {
            return Err(ProcessesError::Unsupported(
                "stdin of a process recovered after a restart is gone".into(),
            ));
        };
        let map = |err: corral_proc::ProcessError| match err {
            corral_proc::ProcessError::StdinNotPiped => {
                ProcessesError::Invalid("stdin is not a pipe for this process (start it with \"stdin\": true)".into())
            }
            corral_proc::ProcessError::StdinClosed => ProcessesError::Invalid("stdin is closed".into()),
            other => ProcessesError::Os(other.to_string()),
        };
        if !data.is_empty() {
            process.write_stdin(data).await.map_err(map)?;
        }
        if close {
            process.close_stdin().await.map_err(map)?;
        }
        Ok(())
    }

    /// Captured output of a process this daemon started: `(stdout, stderr)`. `None` for an unknown id or
    /// a process recovered after a restart (its output was not captured by this daemon).
    pub fn output(&self, id: &str) -> Option<(Option<CapturedOutput>, Option<CapturedOutput>)> {
        match self.handle(id)? {
            Handle::Live { process, .. } => Some((process.output(Stream::Stdout), process.output(Stream::Stderr))),
            Handle::Recovered { .. } => None,
        }
    }

    /// Follows a process's output: what it captured so far and its events from there on (see
    /// [`Process::follow`]: no chunk is in both). `None` when it is unknown or not a child.
    pub fn follow(&self, id: &str) -> Option<Follow> {
        match self.handle(id)? {
            Handle::Live { process, .. } => Some(process.follow()),
            Handle::Recovered { .. } => None,
        }
    }

    /// The corral-proc handle of a process this daemon started (not of a recovered one).
    pub fn process(&self, id: &str) -> Option<Process> {
        match self.handle(id)? {
            Handle::Live { process, .. } => Some(process),
            Handle::Recovered { .. } => None,
        }
    }

    /// `None` without a keeper; otherwise whether its connection is still up (children started now
    /// survive a crash of the daemon only while it is).
    pub fn keeper_connected(&self) -> Option<bool> {
        self.inner.keeper.as_ref().map(|keeper| keeper.is_connected())
    }

    /// True if `id` is a live process that this daemon watches as its own: started by it, or re-attached
    /// through the keeper after a restart (output and exit status known). False for a process merely
    /// recovered (an earlier daemon's own child, exit status unknown), a finished or an unknown one.
    pub fn is_reattached(&self, id: &str) -> bool {
        matches!(self.handle(id), Some(handle @ Handle::Live { .. }) if !handle.is_recorded())
    }

    /// True if `id` was re-attached through the keeper when this daemon started ([`ProcessManager::reconcile`]),
    /// whether it still runs or ended since (also while no daemon ran): its exit status is known, and its
    /// handle ([`ProcessManager::process`]) reports it.
    pub fn was_reattached(&self, id: &str) -> bool {
        self.inner
            .reattached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Waits until the record of `id` holds its terminal state.
    pub async fn wait_recorded(&self, id: &str) {
        if let Some(handle) = self.handle(id) {
            handle.tracker().wait_recorded(&self.inner.recorded_changed).await;
        }
    }

    /// Checks every record left live by an earlier daemon. A process the keeper still holds (`kept`, the
    /// [`keeper::State`] from connecting) is *re-attached*: output captured again (what it wrote
    /// meanwhile first), its real exit status recorded, also when it ended while no daemon ran. Any other
    /// record whose process is still the same one (pid + start ticks + boot id) is *recovered* (watched
    /// through a pidfd, stoppable, exit status unknown); the rest become `stale`. Children the keeper
    /// holds that no live record claims are stopped and reaped.
    pub fn reconcile(&self, kept: Option<keeper::State>) -> Result<ReconcileReport, ProcessesError> {
        let filter = ProcessFilter {
            states: vec![ProcessState::Pending, ProcessState::Running, ProcessState::Interrupting],
            ..ProcessFilter::default()
        };
        let mut kept: HashMap<String, keeper::ChildState> = kept
            .map(|state| state.children.into_iter().map(|c| (c.id.clone(), c)).collect())
            .unwrap_or_default();
        let mut report = ReconcileReport::default();
        for record in self.inner.store.list_processes(&filter)? {
            if self.handle(&record.id).is_some() {
                continue; // ours, from this run
            }
            if let (Some(child), Some(client)) = (kept.remove(&record.id), &self.inner.keeper) {
                match self.reattach(&record, child, client.clone()) {
                    Ok(exited) => {
                        report.recovered += 1;
                        report.reattached += 1;
                        report.exited_while_down += usize::from(exited);
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(process = %record.id, error = %err, "cannot re-attach a kept process");
                    }
                }
            }
            let identity = match (record.pid, record.start_ticks, &record.boot_id) {
                (Some(pid), Some(start_ticks), Some(boot_id)) => Some(ProcessIdentity {
                    pid,
                    start_ticks,
                    boot_id: boot_id.clone(),
                }),
                _ => None,
            };
            let liveness = identity.as_ref().map(|i| i.check().unwrap_or(Liveness::Gone));
            match (identity, liveness) {
                (Some(identity), Some(Liveness::Alive)) => {
                    report.recovered += 1;
                    self.recover(record, identity);
                }
                (_, liveness) => {
                    report.stale += 1;
                    let error = match liveness {
                        None => "never started: the daemon stopped before the spawn",
                        Some(Liveness::Reused) => "pid now belongs to another process; not signalled",
                        _ => "process gone while the daemon was not running",
                    };
                    let end = ProcessEnd {
                        state: ProcessState::Stale,
                        exit_code: None,
                        signal: None,
                        error: Some(error.into()),
                        ended_at: now_ms(),
                    };
                    self.inner.store.finish_process(&record.id, &end)?;
                }
            }
        }
        if let Some(client) = &self.inner.keeper {
            for (id, child) in kept {
                // No live record owns it (its record ended, or was never written): stop it and let the
                // keeper reap it, so nothing runs unaccounted for.
                report.unowned += 1;
                tracing::warn!(child = %id, pid = child.pid, "stopping a kept process that no live record owns");
                match Command::new([id.as_str()]).id(id.as_str()).adopt(
                    child,
                    client.clone(),
                    std::time::SystemTime::now(),
                ) {
                    Ok(process) => {
                        tokio::spawn(async move { process.shutdown(DEFAULT_GRACE).await });
                    }
                    Err(err) => tracing::warn!(child = %id, error = %err, "cannot adopt a kept process to stop it"),
                }
            }
        }
        self.remove_stray_mirrors();
        Ok(report)
    }

    /// Removes output mirrors no re-attached process reads on: their process is gone (the keeper lost it,
    /// or it ran without one), and its captured output with it.
    fn remove_stray_mirrors(&self) {
        let Some(dir) = self.inner.mirror_dir.get() else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let id = name.to_string_lossy();
            let id = id.split('.').next().unwrap_or_default();
            if !self.is_reattached(id) {
                if let Err(err) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %err, "cannot remove a stray output mirror");
                }
            }
        }
    }

    /// Re-attaches a process the keeper kept: a [`Handle::Live`] again, with its exit hook. Returns whether
    /// it had already ended.
    fn reattach(
        &self,
        record: &ProcessRecord,
        child: keeper::ChildState,
        client: Arc<keeper::Client>,
    ) -> Result<bool, ProcessesError> {
        let exited = child.exit.is_some();
        let started_at = record.started_at.unwrap_or(record.created_at);
        if record.state == ProcessState::Pending {
            // The earlier daemon died between the keeper's spawn and the record's update.
            let start = ProcessStart {
                pid: child.pid,
                pgid: child.pid,
                start_ticks: Some(child.start_ticks),
                boot_id: corral_proc::boot_id().ok().map(str::to_owned),
                started_at,
            };
            self.inner.store.mark_process_started(&record.id, &start)?;
        }
        let argv = if record.command.is_empty() {
            vec!["?".to_owned()]
        } else {
            record.command.clone()
        };
        let tracker = Arc::new(Tracker::default());
        // Its own grace and timeout, as started (the timeout counts from its start, not from now).
        let grace = record.grace_ms.map_or(DEFAULT_GRACE, Duration::from_millis);
        let mut command = Command::new(&argv).id(record.id.as_str()).grace(grace);
        if let Some(timeout) = record.timeout_ms {
            command = command.timeout(Duration::from_millis(timeout));
        }
        // A process whose output was mirrored (`durable_output`) gets it back, and goes on mirroring. One that
        // wrote nothing has no mirror file yet: exec jobs and process tasks (sources `exec`, `task`) mirror.
        if let Some(dir) = self.inner.mirror_dir.get() {
            let mirrored = matches!(record.source.as_str(), "exec" | "task")
                || ["stdout", "stderr", "stdout.1", "stderr.1"]
                    .iter()
                    .any(|suffix| dir.join(format!("{}.{suffix}", record.id)).exists());
            if mirrored {
                command = command.mirror_output(dir);
            }
        }
        let process = self
            .on_exit(command, &tracker)
            .adopt(child, client, from_ms(started_at))
            .map_err(|err| ProcessesError::Os(err.to_string()))?;
        if record.state == ProcessState::Interrupting {
            // The earlier daemon was stopping it when it died: finish the job.
            process.start_shutdown(grace);
        }
        self.handles().insert(
            record.id.clone(),
            Handle::Live {
                process: process.clone(),
                tracker: tracker.clone(),
            },
        );
        self.inner
            .reattached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id.clone());
        if let Some(finished) = tracker.started() {
            self.finish_live(&process, &finished, &tracker);
        }
        Ok(exited)
    }

    fn recover(&self, record: ProcessRecord, identity: ProcessIdentity) {
        let tracker = Arc::new(Tracker::default());
        tracker.started();
        let pgid = record.pgid.unwrap_or(identity.pid);
        let grace = record.grace_ms.map_or(DEFAULT_GRACE, Duration::from_millis);
        self.handles().insert(
            record.id.clone(),
            Handle::Recovered {
                identity: identity.clone(),
                pgid,
                grace,
                tracker: tracker.clone(),
            },
        );
        let manager = self.clone();
        let interrupting = record.state == ProcessState::Interrupting;
        tokio::spawn(async move {
            if interrupting {
                // The earlier daemon was stopping it when it died: finish the job.
                stop_recovered(&identity, pgid, grace).await;
            }
            if let Ok(pidfd) = identity.open_pidfd() {
                pidfd.exited().await;
            }
            let stopped = manager
                .get(&record.id)
                .map(|r| r.state == ProcessState::Interrupting)
                .unwrap_or(false);
            let end = ProcessEnd {
                state: if stopped {
                    ProcessState::Interrupted
                } else {
                    ProcessState::Stale
                },
                exit_code: None,
                signal: None,
                error: Some(if stopped {
                    "stopped on request (recovered after a daemon restart; exit status unknown)".into()
                } else {
                    "exited after a daemon restart, while not its parent: exit status unknown".into()
                }),
                ended_at: now_ms(),
            };
            manager.record_end(&record.id, end, false);
            tracker.set_recorded(&manager.inner.recorded_changed);
            manager.retire(&record.id, 0);
        });
    }

    /// Stops every process still running (graceful, all at once: each with its own grace, at most
    /// `max_grace`; a recovered one, whose own is not kept, with `max_grace`) and waits until all are
    /// recorded.
    pub async fn shutdown_all(&self, max_grace: Duration) {
        let handles: Vec<(String, Handle)> = self
            .handles()
            .iter()
            .filter(|(_, h)| !h.is_recorded())
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect();
        for (id, _) in &handles {
            let _ = self
                .inner
                .store
                .transition_process(id, &[ProcessState::Running], ProcessState::Interrupting);
        }
        for (_, handle) in &handles {
            let grace = match handle {
                Handle::Live { process, .. } => process.grace().min(max_grace),
                Handle::Recovered { grace, .. } => (*grace).min(max_grace),
            };
            handle.start_stop(Some(grace));
        }
        for (_, handle) in handles {
            handle.tracker().wait_recorded(&self.inner.recorded_changed).await;
        }
    }

    /// Deletes finished process records that ended more than `max_age` ago (live ones never), so the
    /// table — and what `/health` and `/metrics` count — stays bounded. Returns how many.
    pub fn apply_retention(&self, max_age: Duration) -> Result<u64, ProcessesError> {
        Ok(self
            .inner
            .store
            .delete_finished_processes(now_ms() - max_age.as_millis() as i64)?)
    }

    /// Number of processes running now under this daemon.
    pub fn running_count(&self) -> usize {
        self.handles().values().filter(|h| !h.is_recorded()).count()
    }
}

/// Which live processes an interrupt reaches: all given conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct InterruptScope {
    /// This process only.
    pub process_id: Option<String>,
    /// Processes carrying all these labels.
    pub labels: BTreeMap<String, String>,
    /// Processes from this source.
    pub source: Option<String>,
}

impl InterruptScope {
    /// True when nothing narrows the scope (refused: it would interrupt everything).
    pub fn is_empty(&self) -> bool {
        self.process_id.is_none() && self.labels.is_empty() && self.source.is_none()
    }
}

/// What an interrupt did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterruptReport {
    /// Live records in scope.
    pub matched: usize,
    /// Processes sent a graceful stop (identity verified).
    pub signaled: usize,
    /// Records whose process was gone or whose pid names another process now: marked `stale`, never
    /// signalled.
    pub stale: usize,
    /// Records in scope that could not be acted on (ended meanwhile, or not yet started).
    pub unavailable: usize,
}

impl ProcessManager {
    /// Interrupts every live process in `scope`: each goes `running` → `interrupting` → `interrupted`,
    /// its identity verified first and its whole group stopped gracefully (`grace`, or each process's own).
    /// With `wait`, returns once all signalled processes are gone.
    pub async fn interrupt(
        &self,
        scope: &InterruptScope,
        reason: Option<&str>,
        grace: Option<Duration>,
        wait: bool,
    ) -> Result<InterruptReport, ProcessesError> {
        if scope.is_empty() {
            return Err(ProcessesError::Invalid(
                "empty interrupt scope: give a process_id, labels or a source".into(),
            ));
        }
        let filter = ProcessFilter {
            labels: scope.labels.clone(),
            states: vec![ProcessState::Pending, ProcessState::Running, ProcessState::Interrupting],
            source: scope.source.clone(),
            limit: None,
        };
        let records: Vec<ProcessRecord> = match &scope.process_id {
            Some(id) => self
                .inner
                .store
                .get_process(id)?
                .into_iter()
                .filter(|r| record_matches(r, &filter))
                .collect(),
            None => self.inner.store.list_processes(&filter)?,
        };
        let reason = reason.unwrap_or("interrupt requested").to_owned();
        let mut report = InterruptReport {
            matched: records.len(),
            ..InterruptReport::default()
        };
        let mut waits = Vec::new();
        for record in records {
            let handle = self.handle(&record.id);
            match handle {
                Some(handle) if handle.is_recorded() => report.unavailable += 1,
                Some(handle) => {
                    let alive = match &handle {
                        Handle::Live { .. } => true,
                        // Its watcher will see the exit; the pid is not ours to signal any more.
                        Handle::Recovered { identity, .. } => matches!(identity.check(), Ok(Liveness::Alive)),
                    };
                    if !alive {
                        report.stale += 1;
                        continue;
                    }
                    self.note_reason(&record.id, &reason);
                    self.inner.store.transition_process(
                        &record.id,
                        &[ProcessState::Running],
                        ProcessState::Interrupting,
                    )?;
                    handle.start_stop(grace);
                    report.signaled += 1;
                    let (Handle::Live { tracker, .. } | Handle::Recovered { tracker, .. }) = handle;
                    waits.push(tracker);
                }
                None if record.state == ProcessState::Pending => report.unavailable += 1,
                None => {
                    // A live record nobody watches (it was not reconciled): check, never signal blindly.
                    let end = ProcessEnd {
                        state: ProcessState::Stale,
                        exit_code: None,
                        signal: None,
                        error: Some("process gone or pid reused; not signalled".into()),
                        ended_at: now_ms(),
                    };
                    self.inner.store.finish_process(&record.id, &end)?;
                    report.stale += 1;
                }
            }
        }
        self.inner.bus.publish(
            "process.interrupt",
            json!({"reason": reason, "matched": report.matched, "signaled": report.signaled, "stale": report.stale}),
        );
        if wait {
            for tracker in waits {
                tracker.wait_recorded(&self.inner.recorded_changed).await;
            }
        }
        Ok(report)
    }

    fn note_reason(&self, id: &str, reason: &str) {
        self.inner
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), reason.to_owned());
    }
}

fn record_matches(record: &ProcessRecord, filter: &ProcessFilter) -> bool {
    filter.states.contains(&record.state)
        && filter.source.as_ref().is_none_or(|s| *s == record.source)
        && filter.labels.iter().all(|(k, v)| record.labels.get(k) == Some(v))
}

/// Stops a process that is not our child: identity verified first, then the group, `TERM` → grace →
/// `KILL`, then waits until no live member is left.
async fn stop_recovered(identity: &ProcessIdentity, pgid: u32, grace: Duration) {
    let Ok(pidfd) = identity.open_pidfd() else {
        return; // gone, or the pid is someone else's now: never signal it
    };
    // The leader is alive and pinned by our pidfd check, so the group id names its group.
    let _ = corral_proc::signal_group(pgid, Signal::TERM);
    let _ = pidfd.send_signal(Signal::TERM);
    let deadline = tokio::time::Instant::now() + grace;
    let mut delay = Duration::from_millis(5);
    loop {
        let alive = corral_proc::group_has_live_members(pgid).unwrap_or(false) || !pidfd.has_exited();
        if !alive {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = pidfd.send_signal(Signal::KILL);
            let _ = corral_proc::signal_group(pgid, Signal::KILL);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// `record` with `end` written, as `finish_process` leaves it.
fn ended(record: ProcessRecord, end: &ProcessEnd) -> ProcessRecord {
    ProcessRecord {
        state: end.state,
        exit_code: end.exit_code,
        signal: end.signal.clone(),
        error: end.error.clone(),
        ended_at: Some(end.ended_at),
        ..record
    }
}

/// The record's end from corral-proc's verdict.
fn end_of(finished: &Finished) -> ProcessEnd {
    let (state, error) = match &finished.outcome {
        Outcome::Completed => (ProcessState::Completed, None),
        Outcome::Interrupted => (ProcessState::Interrupted, Some("stopped on request".to_owned())),
        Outcome::Failed(Failure::ExitCode(code)) => (ProcessState::Failed, Some(format!("exited with code {code}"))),
        Outcome::Failed(Failure::Signal(signal)) => (ProcessState::Failed, Some(format!("killed by signal {signal}"))),
        Outcome::Failed(Failure::TimedOut) => (ProcessState::Failed, Some("timed out".to_owned())),
        Outcome::Failed(Failure::Unknown) => (ProcessState::Failed, Some("exit status unknown".to_owned())),
    };
    ProcessEnd {
        state,
        exit_code: finished.exit_code(),
        signal: finished.signal().map(|s| s.name().to_owned()),
        error,
        ended_at: to_ms(finished.ended_at),
    }
}

/// The record as event data.
pub fn record_json(record: &ProcessRecord) -> Value {
    json!({
        "id": record.id,
        "pid": record.pid,
        "pgid": record.pgid,
        "source": record.source,
        "labels": record.labels,
        "command": record.command,
        "dir": record.dir,
        "state": record.state.as_str(),
        "exit_code": record.exit_code,
        "signal": record.signal,
        "error": record.error,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished() -> Finished {
        let now = std::time::SystemTime::now();
        Finished {
            outcome: Outcome::Completed,
            exit: Some(corral_proc::Exit::Code(0)),
            started_at: now,
            ended_at: now,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn an_end_before_the_recorded_start_is_handed_to_the_start() {
        let tracker = Tracker::default();
        let end = finished();
        assert!(!tracker.ended(&end), "the hook must not write the end before the start");
        assert_eq!(tracker.started(), Some(end), "the start writes it");
        assert!(!tracker.is_recorded());
        tracker.set_recorded(&Notify::new());
        assert!(tracker.is_recorded());
        assert_eq!(tracker.started(), None, "a recorded end stays recorded");
        assert!(tracker.is_recorded());
    }

    #[test]
    fn an_end_after_the_recorded_start_is_written_by_the_hook() {
        let tracker = Tracker::default();
        assert_eq!(tracker.started(), None);
        assert!(tracker.ended(&finished()));
    }

    #[tokio::test]
    async fn waiting_for_the_record_ends_when_it_is_set() {
        let tracker = Arc::new(Tracker::default());
        let changed = Arc::new(Notify::new());
        let waiter = {
            let (tracker, changed) = (tracker.clone(), changed.clone());
            tokio::spawn(async move { tracker.wait_recorded(&changed).await })
        };
        tokio::task::yield_now().await;
        tracker.started();
        tracker.set_recorded(&changed);
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("UNWRAP: the waiter wakes")
            .expect("UNWRAP: the waiter task");
    }
}
