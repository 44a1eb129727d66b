//! The durable task engine: typed handlers, caller-chosen ids, idempotent submit, crash recovery.
//!
//! # Model
//!
//! The [`Store`] is the single source of truth. [`TaskEngine::submit`] commits the task (`queued`)
//! before it returns, so an acknowledged submit survives a crash. A task runs only after this node has
//! *claimed* it in the store (`queued` → `running`, attempt + 1, a lease): on one machine that is a
//! formality, in a fleet sharing one PostgreSQL store it is what makes a task run once. A running task's
//! lease is renewed while it runs; its end is written once, and only by the node that holds the claim.
//!
//! - A new id runs. An id that is queued, running or completed is not run again: its current record is
//!   returned. An id that failed is queued again and runs with its attempt counter + 1.
//! - Every task runs in its own tokio task with its own [`CancelToken`]; a per-type concurrency limit
//!   queues the rest, first in, first out.
//! - At start, [`TaskEngine::recover`] re-runs tasks left `running` by a crash when their type is
//!   idempotent (the default), after stopping any process still running from the interrupted attempt
//!   (identity-checked, never by pid alone); a non-idempotent one is marked failed. Tasks left `queued`
//!   are queued again.
//! - [`TaskEngine::shutdown`] cancels running tasks and puts them back to `queued`: a task stopped by a
//!   shutdown is not failed, it resumes at the next start.
//! - [`TaskEngine::remove`] deletes the row first (so it can never come back, even after a crash), then
//!   cancels the run and waits until its process tree is gone.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use corral_core::events::EventBus;
//! use corral_core::tasks::{typed, TaskEngine, TaskError};
//! use corral_store::SqliteStore;
//!
//! #[derive(serde::Deserialize)]
//! struct Greet { name: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(SqliteStore::open_in_memory()?);
//! let engine = TaskEngine::builder()
//!     .handler("greet", typed(|params: Greet, _ctx| async move {
//!         Ok::<_, TaskError>(serde_json::json!({ "greeting": format!("hello {}", params.name) }))
//!     }))
//!     .build(store, EventBus::new(), None)?;
//! let id = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
//! let submitted = engine.submit(Some(id), "greet", serde_json::json!({"name": "corral"}))?;
//! assert!(submitted.is_new());
//! let done = engine.wait(id, std::time::Duration::from_secs(30)).await?.expect("known task");
//! assert_eq!(done.result.unwrap()["greeting"], "hello corral");
//! // The same id again is not run again.
//! assert!(!engine.submit(Some(id), "greet", serde_json::json!({"name": "x"}))?.is_new());
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_store::{
    NewTask, ProcessFilter, ProcessState, Store, StoreError, Submitted, TaskEnd, TaskFilter, TaskRecord, TaskStatus,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

use crate::events::{now_ms, EventBus};
use crate::pipeline::CancelToken;
use crate::processes::ProcessManager;

/// Default lease: a node that stops renewing for this long loses its claim.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How a task run failed, as a handler reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    /// Why, for humans.
    pub message: String,
    /// A result to keep even though the task failed (e.g. the output tail of a failed process).
    pub result: Option<Value>,
}

impl TaskError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            result: None,
        }
    }

    /// Keeps `result` with the failure.
    pub fn with_result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// Errors of the engine's API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The id is not a UUID.
    #[error("task id {0:?} is not a UUID")]
    InvalidId(String),
    /// No handler for this type.
    #[error("unknown task type {0:?} (known: {1})")]
    UnknownType(String, String),
    /// The params do not fit the type.
    #[error("invalid params for task type {task_type:?}: {reason}")]
    InvalidParams {
        /// The type.
        task_type: String,
        /// Why.
        reason: String,
    },
    /// A type was registered twice.
    #[error("task type {0:?} registered twice")]
    DuplicateType(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The future a handler returns.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;

/// What a handler gets besides its params.
#[derive(Clone, Debug)]
pub struct TaskContext {
    id: String,
    attempt: u32,
    cancel: CancelToken,
    progress: ProgressSink,
}

impl TaskContext {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which run this is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Fires when the task is cancelled (removed, or the daemon shuts down). A handler must then stop
    /// its work (and any process it started) and return.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Records progress (any JSON) in the store, visible in `GET /tasks/{id}`.
    pub fn set_progress(&self, progress: Value) {
        self.progress.set(&self.id, progress);
    }
}

#[derive(Clone)]
struct ProgressSink {
    store: Arc<dyn Store>,
    node: String,
    /// The last progress this run wrote, as the store now holds it.
    last: Arc<Mutex<Option<Value>>>,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressSink")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl ProgressSink {
    fn set(&self, id: &str, progress: Value) {
        match self.store.set_task_progress(id, &self.node, &progress, now_ms()) {
            Ok(true) => *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress),
            Ok(false) => {}
            Err(err) => tracing::warn!(task = id, error = %err, "cannot record task progress"),
        }
    }
}

/// Runs tasks of one type.
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs one attempt. `Ok(result)` completes the task; `Err` fails it.
    fn run(&self, params: Value, context: TaskContext) -> TaskFuture;

    /// Checks params at submit time, so bad ones are refused (400) instead of failing later.
    fn validate(&self, _params: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Whether [`TaskHandler::resume`] can finish a run that a crash of the daemon interrupted while its
    /// processes survived (re-attached through the keeper). Default `false`: such a run has its
    /// processes stopped and runs again (idempotent types) or fails.
    fn resumes(&self) -> bool {
        false
    }

    /// `params` as shown to API callers: secrets hidden (`***`). The store keeps them whole, as runs need
    /// them. Default: as they are.
    fn redact_params(&self, params: &Value) -> Value {
        params.clone()
    }

    /// Whether [`TaskHandler::resume`] also finishes a run that had no process of its own at the crash (a
    /// pipeline between two steps), instead of the run starting again. Default `false`. Only consulted when
    /// [`TaskHandler::resumes`] is true.
    fn resumes_without_processes(&self) -> bool {
        false
    }

    /// Called for each run about to be resumed, at once and before any other run of the recovery starts,
    /// so that the handler can take back what the interrupted run held (an exec command's concurrency slot)
    /// ahead of the runs that start again. What it returns is kept until the resumed run ends. Default:
    /// nothing.
    fn reserve_for_resume(&self, params: &Value) -> Option<Box<dyn std::any::Any + Send>> {
        let _ = params;
        None
    }

    /// Finishes a run interrupted by a crash of the daemon whose processes survived: `processes` are the
    /// ids of the re-attached process records labelled `task=<id>`, still running or ended since (while no
    /// daemon ran). Waits for them and returns
    /// what the interrupted run would have returned. Called only when [`TaskHandler::resumes`] is true.
    fn resume(&self, params: Value, context: TaskContext, processes: Vec<String>) -> TaskFuture {
        let _ = (params, context, processes);
        Box::pin(async { Err(TaskError::new("this task type cannot resume an interrupted run")) })
    }
}

/// A handler whose params deserialize into `P`; see [`typed`].
pub struct Typed<P, F> {
    f: F,
    _params: PhantomData<fn(P)>,
}

/// Wraps an async function of typed params into a [`TaskHandler`]: params that do not deserialize
/// into `P` are refused at submit with serde's message.
pub fn typed<P, F, Fut>(f: F) -> Typed<P, F>
where
    P: DeserializeOwned + Send + 'static,
    F: Fn(P, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    Typed {
        f,
        _params: PhantomData,
    }
}

impl<P, F, Fut> TaskHandler for Typed<P, F>
where
    P: DeserializeOwned + Send + 'static,
    F: Fn(P, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    fn run(&self, params: Value, context: TaskContext) -> TaskFuture {
        match serde_json::from_value::<P>(params) {
            Ok(params) => Box::pin((self.f)(params, context)),
            Err(err) => Box::pin(async move { Err(TaskError::new(format!("invalid params: {err}"))) }),
        }
    }

    fn validate(&self, params: &Value) -> Result<(), String> {
        serde_json::from_value::<P>(params.clone())
            .map(drop)
            .map_err(|err| err.to_string())
    }
}

/// Per-type settings.
#[derive(Debug, Clone, Copy)]
pub struct TypeOptions {
    /// Safe to run again after a crash interrupted it (the default, as in seictl). When false, a task
    /// left running by a crash is marked failed instead.
    pub idempotent: bool,
    /// At most this many of this type run at once; the rest wait, first in, first out.
    pub concurrency: Option<usize>,
}

impl Default for TypeOptions {
    fn default() -> Self {
        TypeOptions {
            idempotent: true,
            concurrency: None,
        }
    }
}

struct TypeEntry {
    handler: Arc<dyn TaskHandler>,
    options: TypeOptions,
    /// For a type with a concurrency limit: its waiting line, in submit order.
    queue: Option<Mutex<TypeQueue>>,
}

#[derive(Default)]
struct TypeQueue {
    waiting: std::collections::VecDeque<TaskRecord>,
    active: usize,
}

/// Builds a [`TaskEngine`].
#[derive(Default)]
pub struct TaskEngineBuilder {
    types: Vec<(String, Arc<dyn TaskHandler>, TypeOptions)>,
    lease: Option<Duration>,
}

impl TaskEngineBuilder {
    /// Registers a handler for `task_type` with default options.
    pub fn handler(self, task_type: &str, handler: impl TaskHandler) -> Self {
        self.handler_with(task_type, handler, TypeOptions::default())
    }

    /// Registers a handler with options.
    pub fn handler_with(mut self, task_type: &str, handler: impl TaskHandler, options: TypeOptions) -> Self {
        self.types.push((task_type.to_owned(), Arc::new(handler), options));
        self
    }

    /// The claim lease (default 30 s); renewed every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Builds the engine over `store`. With `processes`, processes left over from an interrupted run
    /// (labelled `task=<id>`) are stopped before the task runs again.
    pub fn build(
        self,
        store: Arc<dyn Store>,
        bus: EventBus,
        processes: Option<ProcessManager>,
    ) -> Result<TaskEngine, EngineError> {
        let mut types = HashMap::new();
        for (name, handler, options) in self.types {
            let queue = options.concurrency.map(|_| Mutex::new(TypeQueue::default()));
            if types
                .insert(
                    name.clone(),
                    TypeEntry {
                        handler,
                        options,
                        queue,
                    },
                )
                .is_some()
            {
                return Err(EngineError::DuplicateType(name));
            }
        }
        let node = match store.get_meta("node_id")? {
            Some(node) => node,
            None => {
                let node = format!("node-{}", uuid::Uuid::new_v4());
                store.set_meta("node_id", &node)?;
                node
            }
        };
        Ok(TaskEngine {
            inner: Arc::new(Inner {
                store,
                bus,
                node,
                types,
                lease: self.lease.unwrap_or(DEFAULT_LEASE),
                running: Mutex::new(HashMap::new()),
                processes,
                stopping: AtomicBool::new(false),
            }),
        })
    }
}

/// Why a run was cancelled; decides what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Removed,
    /// Cancelled on request; the record stays, as `cancelled`.
    Cancelled,
    Shutdown,
    /// Another node took the task over after our lease lapsed.
    LostClaim,
}

struct Running {
    cancel: CancelToken,
    reason: Arc<Mutex<Option<StopReason>>>,
    done: watch::Receiver<bool>,
}

/// The handles of one run, kept by the run itself; the engine's `running` map holds the other side.
struct RunHandles {
    cancel: CancelToken,
    reason: Arc<Mutex<Option<StopReason>>>,
    done: watch::Sender<bool>,
}

impl RunHandles {
    /// New handles, and the map entry that goes with them.
    fn new() -> (RunHandles, Running) {
        let cancel = CancelToken::new();
        let reason = Arc::new(Mutex::new(None));
        let (done, done_rx) = watch::channel(false);
        let entry = Running {
            cancel: cancel.clone(),
            reason: reason.clone(),
            done: done_rx,
        };
        (RunHandles { cancel, reason, done }, entry)
    }
}

struct Inner {
    store: Arc<dyn Store>,
    bus: EventBus,
    node: String,
    types: HashMap<String, TypeEntry>,
    lease: Duration,
    running: Mutex<HashMap<String, Running>>,
    processes: Option<ProcessManager>,
    /// Set by `shutdown`: nothing new is claimed.
    stopping: AtomicBool,
}

/// What [`TaskEngine::submit`] did.
#[derive(Debug, Clone)]
pub enum SubmitResult {
    /// A new task, queued.
    Created(TaskRecord),
    /// The id failed before: queued again.
    Requeued(TaskRecord),
    /// The id is known (queued, running, completed or cancelled): nothing changed.
    Existing(TaskRecord),
}

impl SubmitResult {
    /// True when this submit queued a run (new, or a failed id again).
    pub fn is_new(&self) -> bool {
        !matches!(self, SubmitResult::Existing(_))
    }

    /// The task's record.
    pub fn record(&self) -> &TaskRecord {
        match self {
            SubmitResult::Created(r) | SubmitResult::Requeued(r) | SubmitResult::Existing(r) => r,
        }
    }
}

/// Counts from [`TaskEngine::recover`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Tasks left running by a crash whose processes survived: their runs go on to the end.
    pub resumed: usize,
    /// Tasks left running by a crash and queued to run again.
    pub rerun: usize,
    /// Non-idempotent tasks left running by a crash, marked failed.
    pub failed: usize,
    /// Tasks left queued, queued again.
    pub queued: usize,
    /// Leftover processes of interrupted runs that were stopped first.
    pub stopped_processes: usize,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct TaskEngine {
    inner: Arc<Inner>,
}

impl TaskEngine {
    /// Starts building an engine.
    pub fn builder() -> TaskEngineBuilder {
        TaskEngineBuilder::default()
    }

    /// This node's id (persistent in the store).
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The registered types, sorted.
    pub fn types(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.types.keys().cloned().collect();
        names.sort();
        names
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits a task; with `id` (a UUID) the submit is idempotent. Committed before it returns.
    pub fn submit(&self, id: Option<&str>, task_type: &str, params: Value) -> Result<SubmitResult, EngineError> {
        let id = match id {
            Some(id) => uuid::Uuid::parse_str(id)
                .map(|u| u.hyphenated().to_string())
                .map_err(|_| EngineError::InvalidId(id.to_owned()))?,
            // Time-ordered (UUIDv7), like process ids: inserts go to the end of the id index.
            None => uuid::Uuid::now_v7().to_string(),
        };
        let entry = self
            .inner
            .types
            .get(task_type)
            .ok_or_else(|| EngineError::UnknownType(task_type.to_owned(), self.types().join(", ")))?;
        entry
            .handler
            .validate(&params)
            .map_err(|reason| EngineError::InvalidParams {
                task_type: task_type.to_owned(),
                reason,
            })?;
        let new = NewTask {
            id,
            task_type: task_type.to_owned(),
            params,
            submitted_at: now_ms(),
        };
        // A type without a limit runs at once: submitted and claimed in one transaction.
        if entry.queue.is_none() && !self.inner.stopping.load(Ordering::SeqCst) {
            if let Some(result) = self.submit_claimed(&new, entry.handler.clone())? {
                return Ok(result);
            }
        }
        let result = match self.inner.store.submit_task(&new)? {
            Submitted::Created(record) => SubmitResult::Created(record),
            Submitted::Requeued(record) => SubmitResult::Requeued(record),
            Submitted::Existing(record) => SubmitResult::Existing(record),
        };
        if result.is_new() {
            let record = result.record().clone();
            self.inner.bus.publish("task.submitted", task_json(&record));
            self.enqueue(record);
        }
        Ok(result)
    }

    /// Submits `new` claimed by this node and starts its run, which is registered before the write (as in
    /// `claim_and_run`, so that a `remove` or `cancel` racing the submit finds it). `None` when this id
    /// already has a run on this node: the caller submits the usual way.
    fn submit_claimed(
        &self,
        new: &NewTask,
        handler: Arc<dyn TaskHandler>,
    ) -> Result<Option<SubmitResult>, EngineError> {
        let (handles, entry) = RunHandles::new();
        match self.running().entry(new.id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => return Ok(None),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(entry);
            }
        }
        let unregister = |handles: RunHandles| {
            self.running().remove(&new.id);
            let _ = handles.done.send(true);
        };
        let lease_until = new.submitted_at + self.inner.lease.as_millis() as i64;
        let submitted = match self.inner.store.submit_claimed_task(new, &self.inner.node, lease_until) {
            Ok(submitted) => submitted,
            Err(err) => {
                unregister(handles);
                return Err(err.into());
            }
        };
        let result = match submitted {
            Submitted::Created(record) => SubmitResult::Created(record),
            Submitted::Requeued(record) => SubmitResult::Requeued(record),
            Submitted::Existing(record) => SubmitResult::Existing(record),
        };
        if !result.is_new() {
            unregister(handles);
            return Ok(Some(result));
        }
        let record = result.record().clone();
        self.inner.bus.publish("task.submitted", task_json(&record));
        if record.status != TaskStatus::Running || record.claimed_by.as_deref() != Some(self.inner.node.as_str()) {
            // Submitted but not claimed (a store that claims in a second step lost the race): queue it.
            unregister(handles);
            self.enqueue(record);
            return Ok(Some(result));
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            engine.run_registered(&id, Some(record), handler, handles, None).await;
        });
        Ok(Some(result))
    }

    /// Queues a task to run: at once for a type without a limit, else in submit order as slots free up.
    /// The claim in the store decides whether it runs at all (it may have been removed meanwhile).
    fn enqueue(&self, record: TaskRecord) {
        let Some(entry) = self.inner.types.get(&record.task_type) else {
            let engine = self.clone();
            tokio::spawn(async move { engine.fail_unknown_type(record) });
            return;
        };
        match &entry.queue {
            None => {
                let engine = self.clone();
                tokio::spawn(async move { engine.run_one(record, false).await });
            }
            Some(queue) => {
                queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .waiting
                    .push_back(record.clone());
                self.dispatch(&record.task_type);
            }
        }
    }

    /// Starts waiting tasks of `task_type` from the front of its queue while slots are free.
    fn dispatch(&self, task_type: &str) {
        let Some(TypeEntry {
            queue: Some(queue),
            options,
            ..
        }) = self.inner.types.get(task_type)
        else {
            return;
        };
        let limit = options.concurrency.unwrap_or(usize::MAX).max(1);
        loop {
            let next = {
                let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                if self.inner.stopping.load(Ordering::SeqCst) || queue.active >= limit {
                    None
                } else {
                    let next = queue.waiting.pop_front();
                    if next.is_some() {
                        queue.active += 1;
                    }
                    next
                }
            };
            let Some(record) = next else { return };
            let engine = self.clone();
            tokio::spawn(async move { engine.run_one(record, true).await });
        }
    }

    fn fail_unknown_type(&self, record: TaskRecord) {
        let end = TaskEnd {
            status: TaskStatus::Failed,
            result: None,
            error: Some(format!(
                "no handler for task type {:?} in this daemon",
                record.task_type
            )),
            completed_at: now_ms(),
        };
        // Claim first: only the claimant may finish it.
        if let Ok(Some(_)) = self.claim(&record.id) {
            let _ = self.inner.store.finish_task(&record.id, &self.inner.node, &end);
        }
    }

    /// Claims and runs one task; `limited` releases its type's slot afterwards.
    async fn run_one(&self, record: TaskRecord, limited: bool) {
        if !self.inner.stopping.load(Ordering::SeqCst) {
            if let Some(entry) = self.inner.types.get(&record.task_type) {
                self.claim_and_run(&record, entry.handler.clone()).await;
            }
        }
        if limited {
            if let Some(TypeEntry { queue: Some(queue), .. }) = self.inner.types.get(&record.task_type) {
                let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.active = queue.active.saturating_sub(1);
            }
            self.dispatch(&record.task_type);
        }
    }

    fn claim(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let now = now_ms();
        self.inner
            .store
            .claim_task(id, &self.inner.node, now + self.inner.lease.as_millis() as i64, now)
    }

    async fn claim_and_run(&self, record: &TaskRecord, handler: Arc<dyn TaskHandler>) {
        // Registered before the claim, so a `remove` racing the claim always finds the run to cancel.
        let (handles, entry) = RunHandles::new();
        self.running().insert(record.id.clone(), entry);
        let claimed = match self.claim(&record.id) {
            Ok(claimed) => claimed, // None: removed, or claimed elsewhere
            Err(err) => {
                tracing::error!(task = %record.id, error = %err, "cannot claim task; it stays queued");
                None
            }
        };
        self.run_registered(&record.id, claimed, handler, handles, None).await;
    }

    /// Runs a task claimed by this node, unless the run was stopped between its registration and now; then
    /// removes the run `id` from `running`, signals `done`, and queues what
    /// [`drop_unstarted`](Self::drop_unstarted) gave back, if anything.
    async fn run_registered(
        &self,
        id: &str,
        claimed: Option<TaskRecord>,
        handler: Arc<dyn TaskHandler>,
        handles: RunHandles,
        resume: Option<Vec<String>>,
    ) {
        let RunHandles { cancel, reason, done } = handles;
        let mut again = None;
        if let Some(claimed) = claimed {
            // Stopped between registration and claim (or a shutdown began that did not see this run yet):
            // do not start it.
            if cancel.is_cancelled() || self.inner.stopping.load(Ordering::SeqCst) {
                again = self.drop_unstarted(&claimed, &reason);
            } else {
                self.run_claimed(claimed, handler, cancel, reason, resume).await;
            }
        }
        // Gone from `running` before `done`: whoever waits for `done` (remove, cancel, shutdown) finds it gone.
        self.running().remove(id);
        let _ = done.send(true);
        if let Some(record) = again {
            self.enqueue(record);
        }
    }

    /// A claimed task whose run was stopped before it started: cancelled on request → `cancelled`; otherwise
    /// back to the queue in the store. Removed: the row is normally gone; if it is still there, the removal
    /// came before a claimed submit had written it (and found nothing to remove), so the task is returned, to
    /// be queued here once this run is unregistered: it runs as a submit after a removal should.
    fn drop_unstarted(&self, claimed: &TaskRecord, reason: &Mutex<Option<StopReason>>) -> Option<TaskRecord> {
        let stop = *reason.lock().unwrap_or_else(|p| p.into_inner());
        match stop {
            Some(StopReason::Removed) => {
                if let Ok(true) = self.inner.store.requeue_task(&claimed.id, &self.inner.node, now_ms()) {
                    return Some(claimed.clone());
                }
            }
            Some(StopReason::Cancelled) => {
                let end = TaskEnd {
                    status: TaskStatus::Cancelled,
                    result: None,
                    error: Some("cancelled on request".into()),
                    completed_at: now_ms(),
                };
                self.write_end(claimed, None, &end, "task.cancelled");
            }
            _ => {
                let _ = self.inner.store.requeue_task(&claimed.id, &self.inner.node, now_ms());
            }
        }
        None
    }

    /// Writes a run's end (once, as the claimant); if it applied, publishes `kind` with the record as the
    /// store now holds it, built from the claimed record without reading it back. `false` if the end was not
    /// written (the claim was lost, or the task removed).
    fn write_end(&self, claimed: &TaskRecord, progress: Option<Value>, end: &TaskEnd, kind: &str) -> bool {
        match self.inner.store.finish_task(&claimed.id, &self.inner.node, end) {
            Ok(true) => {
                let mut done = claimed.clone();
                done.status = end.status;
                done.result = end.result.clone();
                done.error = end.error.clone();
                done.completed_at = Some(end.completed_at);
                done.updated_at = end.completed_at;
                done.lease_expires_at = None;
                if progress.is_some() {
                    done.progress = progress;
                }
                self.inner.bus.publish(kind, task_json(&done));
                true
            }
            Ok(false) => {
                tracing::warn!(task = %claimed.id, "task end not written: the claim was lost or the task removed");
                false
            }
            Err(err) => {
                tracing::error!(task = %claimed.id, error = %err, "cannot record the end of a task");
                false
            }
        }
    }

    async fn run_claimed(
        &self,
        record: TaskRecord,
        handler: Arc<dyn TaskHandler>,
        cancel: CancelToken,
        reason: Arc<Mutex<Option<StopReason>>>,
        resume: Option<Vec<String>>,
    ) {
        self.inner.bus.publish("task.started", task_json(&record));
        let progress = Arc::new(Mutex::new(None));
        let context = TaskContext {
            id: record.id.clone(),
            attempt: record.attempt,
            cancel: cancel.clone(),
            progress: ProgressSink {
                store: self.inner.store.clone(),
                node: self.inner.node.clone(),
                last: progress.clone(),
            },
        };
        let params = record.params.clone();
        // A panicking handler (also one that panics before returning its future) fails its task, not the
        // engine.
        let run = tokio::spawn(async move {
            match resume {
                Some(processes) => handler.resume(params, context, processes).await,
                None => handler.run(params, context).await,
            }
        });
        let outcome = {
            let renew = self.renew_lease(&record.id, &cancel, &reason);
            tokio::pin!(run);
            tokio::pin!(renew);
            tokio::select! {
                outcome = &mut run => outcome,
                _ = &mut renew => run.await,
            }
        };
        let stop = *reason.lock().unwrap_or_else(|p| p.into_inner());
        let progress = progress.lock().unwrap_or_else(|p| p.into_inner()).take();
        match stop {
            // The row is gone; `remove` publishes the event.
            Some(StopReason::Removed) | Some(StopReason::LostClaim) => {}
            Some(StopReason::Cancelled) => {
                let end = TaskEnd {
                    status: TaskStatus::Cancelled,
                    result: outcome.ok().and_then(|r| r.err()).and_then(|failure| failure.result),
                    error: Some("cancelled on request".into()),
                    completed_at: now_ms(),
                };
                self.write_end(&record, progress, &end, "task.cancelled");
            }
            Some(StopReason::Shutdown) => {
                if let Err(err) = self.inner.store.requeue_task(&record.id, &self.inner.node, now_ms()) {
                    tracing::error!(task = %record.id, error = %err, "cannot requeue task at shutdown");
                }
            }
            None => {
                let end = match outcome {
                    Ok(Ok(result)) => TaskEnd {
                        status: TaskStatus::Completed,
                        result: Some(result),
                        error: None,
                        completed_at: now_ms(),
                    },
                    Ok(Err(failure)) => TaskEnd {
                        status: TaskStatus::Failed,
                        result: failure.result,
                        error: Some(failure.message),
                        completed_at: now_ms(),
                    },
                    Err(join_error) => TaskEnd {
                        status: TaskStatus::Failed,
                        result: None,
                        error: Some(format!("the task's handler panicked: {join_error}")),
                        completed_at: now_ms(),
                    },
                };
                let kind = if end.status == TaskStatus::Completed {
                    "task.completed"
                } else {
                    "task.failed"
                };
                self.write_end(&record, progress, &end, kind);
            }
        }
    }

    /// Renews the lease every third of it, until the run ends (the caller drops this future then). A
    /// lease found lost (another node took the task over) cancels the run: it must not go on twice.
    async fn renew_lease(&self, id: &str, cancel: &CancelToken, reason: &Mutex<Option<StopReason>>) {
        let every = self.inner.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = now_ms() + self.inner.lease.as_millis() as i64;
            match self.inner.store.renew_task_lease(id, &self.inner.node, until) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(task = id, "lease lost: the task is no longer ours; cancelling this run");
                    reason
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(StopReason::LostClaim);
                    cancel.cancel();
                    std::future::pending::<()>().await;
                }
                Err(err) => tracing::warn!(task = id, error = %err, "cannot renew task lease"),
            }
        }
    }

    /// A task's params as API callers see them ([`TaskHandler::redact_params`]); a type this engine does
    /// not know shows none (it cannot tell what is secret in them).
    pub fn shown_params(&self, record: &TaskRecord) -> Value {
        match self.inner.types.get(&record.task_type) {
            Some(entry) => entry.handler.redact_params(&record.params),
            None => Value::Null,
        }
    }

    /// One task.
    pub fn get(&self, id: &str) -> Result<Option<TaskRecord>, EngineError> {
        Ok(self.inner.store.get_task(id)?)
    }

    /// Tasks, newest first.
    pub fn list(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, EngineError> {
        Ok(self.inner.store.list_tasks(filter)?)
    }

    /// Counts by type and status.
    pub fn counts(&self) -> Result<BTreeMap<(String, TaskStatus), u64>, EngineError> {
        Ok(self.inner.store.count_tasks()?)
    }

    /// Waits up to `timeout` for the task to reach a terminal status; returns its record then (or as it
    /// is when the time is up). `None` for an unknown id.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // A run on this node: wait for its end alone (no wake-up per event on the bus), then read the task
        // below. (Not the record the run's end wrote: the run found may be one that has just ended, of a
        // failed task that has since been submitted again.)
        let local = self.running().get(id).map(|r| r.done.clone());
        if let Some(mut done) = local {
            if tokio::time::timeout_at(deadline, done.wait_for(|d| *d)).await.is_err() {
                return self.get(id);
            }
        }
        let mut events = self.inner.bus.subscribe();
        loop {
            let Some(record) = self.get(id)? else { return Ok(None) };
            if record.status.is_terminal() {
                return Ok(Some(record));
            }
            // Re-check on any event about this task, and at least every second (a claim lost to
            // another node sends no event here).
            let wake = async {
                loop {
                    match events.recv().await {
                        Ok(event) if event.data.get("id").and_then(Value::as_str) == Some(id) => return,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let step = (deadline - tokio::time::Instant::now()).min(Duration::from_secs(1));
            if step.is_zero() {
                return Ok(Some(record));
            }
            let _ = tokio::time::timeout(step, wake).await;
            if tokio::time::Instant::now() >= deadline {
                return self.get(id);
            }
        }
    }

    /// Removes a task: deletes its row first (durably: it never comes back), then cancels a running
    /// attempt and waits until it has stopped. `false` for an unknown id.
    pub async fn remove(&self, id: &str) -> Result<bool, EngineError> {
        let deleted = self.inner.store.delete_task(id)?;
        let running = self
            .running()
            .get(id)
            .map(|r| (r.cancel.clone(), r.reason.clone(), r.done.clone()));
        if let Some((cancel, reason, mut done)) = running {
            *reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(StopReason::Removed);
            cancel.cancel();
            let _ = done.wait_for(|d| *d).await;
        }
        if deleted {
            self.inner.bus.publish("task.removed", json!({"id": id}));
        }
        Ok(deleted)
    }

    /// Cancels a task but keeps its record (as `cancelled`): a queued one never runs, a running one is
    /// stopped (its process tree too) before this returns. `false` when it was already finished or is
    /// unknown.
    pub async fn cancel(&self, id: &str) -> Result<bool, EngineError> {
        let running = self
            .running()
            .get(id)
            .map(|r| (r.cancel.clone(), r.reason.clone(), r.done.clone()));
        if let Some((cancel, reason, mut done)) = running {
            *reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(StopReason::Cancelled);
            cancel.cancel();
            let _ = done.wait_for(|d| *d).await;
            return Ok(true);
        }
        let cancelled = self.inner.store.cancel_task(id, now_ms())?;
        if cancelled {
            if let Some(record) = self.inner.store.get_task(id)? {
                self.inner.bus.publish("task.cancelled", task_json(&record));
            }
        }
        Ok(cancelled)
    }

    /// Deletes finished tasks of `task_type` that ended before `max_age` ago (e.g. exec jobs past
    /// their TTL). Returns how many.
    pub fn expire_finished(&self, task_type: &str, max_age: Duration) -> Result<u64, EngineError> {
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let filter = TaskFilter {
            statuses: TaskStatus::TERMINAL.to_vec(),
            task_type: Some(task_type.to_owned()),
            limit: Some(10_000),
        };
        let mut deleted = 0;
        for record in self.inner.store.list_tasks(&filter)? {
            if record.completed_at.is_some_and(|at| at < cutoff) && self.inner.store.delete_task(&record.id)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// After a restart: stops leftovers of interrupted runs and queues them again (or fails the
    /// non-idempotent ones), and queues what was queued.
    pub async fn recover(&self) -> Result<RecoveryReport, EngineError> {
        let mut report = RecoveryReport::default();
        let mut own_requeued = 0;
        // Resumes first, all of them before anything else runs or awaits: a resumed run takes back what its
        // interrupted run held (`TaskHandler::reserve_for_resume`) before the other runs start again.
        let mut rest = Vec::new();
        for record in self.inner.store.tasks_to_recover(&self.inner.node, now_ms())? {
            if record.claimed_by.as_deref() == Some(self.inner.node.as_str()) && self.resume(&record) {
                report.resumed += 1;
            } else {
                rest.push(record);
            }
        }
        for record in rest {
            let idempotent = self
                .inner
                .types
                .get(&record.task_type)
                .is_none_or(|t| t.options.idempotent);
            let ours = record.claimed_by.as_deref() == Some(self.inner.node.as_str());
            if !ours {
                // Another node's lapsed claim: take it over through an atomic claim (never a blind requeue,
                // which could race a late renewal by that node), then run or fail it.
                if idempotent {
                    report.rerun += 1;
                    self.enqueue(record);
                } else if let Some(claimed) = self.claim(&record.id)? {
                    report.failed += usize::from(self.fail_interrupted(&claimed.id)?);
                }
                continue;
            }
            report.stopped_processes += self.stop_leftovers(&record.id).await;
            // A type that resumes without processes (a pipeline) goes on from where it was once the leftovers
            // are stopped: what ended before the crash keeps its end; the stopped work runs again.
            let resumes_anyway = self
                .inner
                .types
                .get(&record.task_type)
                .is_some_and(|t| t.handler.resumes() && t.handler.resumes_without_processes());
            if resumes_anyway && self.resume(&record) {
                report.resumed += 1;
                continue;
            }
            if idempotent {
                if self.inner.store.requeue_task(&record.id, &self.inner.node, now_ms())? {
                    report.rerun += 1;
                    own_requeued += 1;
                }
            } else {
                report.failed += usize::from(self.fail_interrupted(&record.id)?);
            }
        }
        let queued = self.inner.store.queued_tasks(usize::MAX)?;
        report.queued = queued.len().saturating_sub(own_requeued);
        for record in queued {
            self.enqueue(record);
        }
        Ok(report)
    }

    /// Resumes our own run of `record` if its processes survived the crash (re-attached through the
    /// keeper) and its type can resume: the run then finishes instead of running again. False when it
    /// cannot (no process left, one not re-attached, a type that does not resume, the claim lost).
    fn resume(&self, record: &TaskRecord) -> bool {
        let (Some(processes), Some(entry)) = (&self.inner.processes, self.inner.types.get(&record.task_type)) else {
            return false;
        };
        if !entry.handler.resumes() {
            return false;
        }
        let filter = ProcessFilter {
            labels: BTreeMap::from([("task".to_owned(), record.id.clone())]),
            ..ProcessFilter::default()
        };
        // The interrupted run's processes: those still live, and those re-attached at this start that ended
        // since (while no daemon ran): their real exit status is known, so the run finishes with it rather
        // than running them again.
        let live: Vec<String> = processes
            .list(&filter)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                matches!(r.state, ProcessState::Running | ProcessState::Interrupting) || processes.was_reattached(&r.id)
            })
            .map(|r| r.id)
            .collect();
        let resumable = if live.is_empty() {
            entry.handler.resumes_without_processes()
        } else {
            live.iter().all(|id| processes.was_reattached(id))
        };
        if !resumable {
            return false;
        }
        let until = now_ms() + self.inner.lease.as_millis() as i64;
        match self.inner.store.renew_task_lease(&record.id, &self.inner.node, until) {
            Ok(true) => {}
            _ => return false,
        }
        tracing::info!(task = %record.id, processes = live.len(), "resuming a task whose processes survived the restart");
        let (handles, entry_running) = RunHandles::new();
        self.running().insert(record.id.clone(), entry_running);
        // It holds a slot of its type's queue, as the interrupted run did.
        let limited = match &entry.queue {
            Some(queue) => {
                queue.lock().unwrap_or_else(|p| p.into_inner()).active += 1;
                true
            }
            None => false,
        };
        let reservation = entry.handler.reserve_for_resume(&record.params);
        let engine = self.clone();
        let record = record.clone();
        let handler = entry.handler.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            let task_type = record.task_type.clone();
            engine
                .run_registered(&id, Some(record), handler, handles, Some(live))
                .await;
            drop(reservation);
            if limited {
                if let Some(TypeEntry { queue: Some(queue), .. }) = engine.inner.types.get(&task_type) {
                    let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                    queue.active = queue.active.saturating_sub(1);
                }
                engine.dispatch(&task_type);
            }
        });
        true
    }

    fn fail_interrupted(&self, id: &str) -> Result<bool, EngineError> {
        let end = TaskEnd {
            status: TaskStatus::Failed,
            result: None,
            error: Some("interrupted by daemon restart (task type is not idempotent)".into()),
            completed_at: now_ms(),
        };
        Ok(self.inner.store.finish_task(id, &self.inner.node, &end)?)
    }

    /// Stops processes still running from an interrupted attempt of task `id` (labelled `task=<id>`).
    async fn stop_leftovers(&self, id: &str) -> usize {
        let Some(processes) = &self.inner.processes else {
            return 0;
        };
        let filter = ProcessFilter {
            labels: BTreeMap::from([("task".to_owned(), id.to_owned())]),
            states: vec![ProcessState::Running, ProcessState::Interrupting],
            ..ProcessFilter::default()
        };
        let mut stopped = 0;
        for record in processes.list(&filter).unwrap_or_default() {
            match processes.stop(&record.id, None).await {
                Ok(_) => stopped += 1,
                Err(err) => {
                    tracing::warn!(task = id, process = %record.id, error = %err, "cannot stop a leftover process")
                }
            }
        }
        stopped
    }

    /// Cancels every running task and puts it back to `queued`; returns when all have stopped.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let running: Vec<(CancelToken, watch::Receiver<bool>)> = self
            .running()
            .values()
            .map(|r| {
                *r.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(StopReason::Shutdown);
                (r.cancel.clone(), r.done.clone())
            })
            .collect();
        for (cancel, _) in &running {
            cancel.cancel();
        }
        for (_, mut done) in running {
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// Deletes finished tasks older than `max_age`, keeping at most `keep` finished ones.
    pub fn apply_retention(&self, max_age: Duration, keep: usize) -> Result<u64, EngineError> {
        Ok(self
            .inner
            .store
            .delete_finished_tasks(now_ms() - max_age.as_millis() as i64, keep)?)
    }

    /// Number of tasks running now on this node.
    pub fn running_count(&self) -> usize {
        self.running().len()
    }
}

/// The task as event data.
pub fn task_json(record: &TaskRecord) -> Value {
    json!({
        "id": record.id,
        "type": record.task_type,
        "status": record.status.as_str(),
        "attempt": record.attempt,
        "error": record.error,
    })
}
