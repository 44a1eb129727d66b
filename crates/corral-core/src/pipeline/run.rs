//! The scheduler: [`Runner`] starts a [`Pipeline`] as a [`PipelineRun`], which reports
//! [`PipelineEvent`]s and ends with a [`PipelineResult`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinSet};

use super::launch::{CancelToken, StepContext, StepEnd, StepFailure, StepLauncher, StepRun};
use super::spec::{Mode, Pipeline, StepSpec};

/// Where a step is. `pending` and `running` are transient; the other four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started yet: waiting for its `after` steps or for a free slot.
    Pending,
    /// Its command is running.
    Running,
    /// Exited with code 0.
    Passed,
    /// Failed: non-zero exit, signal, timeout, or could not start.
    Failed,
    /// Not run because a step it depends on failed (or, in sequential mode, any required step failed).
    Skipped,
    /// Stopped, or never started, because the pipeline was cancelled.
    Cancelled,
}

impl StepStatus {
    /// Lower-case name, as used in APIs: `pending`, `running`, `passed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// True for the four final statuses.
    pub fn is_finished(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step's record: what the daemon returns for `GET /pipelines/{id}`, live or final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's name.
    pub name: String,
    /// Where it is.
    pub status: StepStatus,
    /// The exit code, when its process exited by itself.
    pub exit_code: Option<i32>,
    /// How long its process ran (until its tree was gone); `None` until it has finished, and for steps
    /// that never started.
    #[serde(default, with = "crate::units::option_duration")]
    pub duration: Option<Duration>,
    /// The end of its output, stdout and stderr interleaved.
    #[serde(default)]
    pub output_tail: String,
    /// Why it failed, was skipped or was cancelled, in words: `exited with code 2`, `timed out after
    /// 10m`, `skipped: "build" failed`.
    pub error: Option<String>,
    /// Copied from the spec: whether its failure is tolerated.
    pub allow_failure: bool,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: Option<i64>,
    /// When it reached a final status, in milliseconds since the Unix epoch.
    pub ended_at: Option<i64>,
}

impl StepResult {
    /// A step not started yet.
    pub fn pending(step: &StepSpec) -> Self {
        StepResult {
            name: step.name.clone(),
            status: StepStatus::Pending,
            exit_code: None,
            duration: None,
            output_tail: String::new(),
            error: None,
            allow_failure: step.allow_failure,
            started_at: None,
            ended_at: None,
        }
    }

    /// True if this step makes the pipeline fail: it failed without `allow_failure`, or was cancelled.
    pub fn is_blocking_failure(&self) -> bool {
        match self.status {
            StepStatus::Failed => !self.allow_failure,
            StepStatus::Cancelled => true,
            _ => false,
        }
    }
}

/// The end of a pipeline run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineResult {
    /// The pipeline's name, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// True when no required step failed and nothing was cancelled. Steps that failed with
    /// `allow_failure` do not count against it.
    pub success: bool,
    /// Steps that passed.
    pub passed: usize,
    /// Steps that failed, including those with `allow_failure`.
    pub failed: usize,
    /// Steps skipped after a failure.
    pub skipped: usize,
    /// Steps cancelled, running or not yet started.
    pub cancelled: usize,
    /// From start until the last step was done.
    #[serde(with = "crate::units::duration")]
    pub duration: Duration,
    /// Every step, in declaration order.
    pub steps: Vec<StepResult>,
}

impl PipelineResult {
    fn from_steps(name: Option<String>, steps: Vec<StepResult>, duration: Duration) -> Self {
        let count = |status| steps.iter().filter(|step| step.status == status).count();
        PipelineResult {
            name,
            success: !steps.iter().any(StepResult::is_blocking_failure),
            passed: count(StepStatus::Passed),
            failed: count(StepStatus::Failed),
            skipped: count(StepStatus::Skipped),
            cancelled: count(StepStatus::Cancelled),
            duration,
            steps,
        }
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Option<&StepResult> {
        self.steps.iter().find(|step| step.name == name)
    }
}

/// Progress of a run, in the order things happened. All events of one run come from one task, so a
/// `StepStarted` always precedes that step's `StepFinished`, and `Finished` comes last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PipelineEvent {
    /// A step is being launched.
    StepStarted {
        /// The step.
        name: String,
    },
    /// A launched step ended (also when it was stopped by a cancellation).
    StepFinished {
        /// The step.
        name: String,
        /// `passed`, `failed` or `cancelled`.
        status: StepStatus,
        /// Its exit code, when it exited by itself.
        exit_code: Option<i32>,
        /// How long it ran.
        #[serde(with = "crate::units::duration")]
        duration: Duration,
        /// Why it failed or was cancelled.
        error: Option<String>,
    },
    /// A step will not run: a step it depends on failed.
    StepSkipped {
        /// The step.
        name: String,
        /// Why, naming the failed step.
        reason: String,
    },
    /// A step that had not started will not: the pipeline was cancelled.
    StepCancelled {
        /// The step.
        name: String,
    },
    /// The run is over; the result is available from [`PipelineRun::wait`].
    Finished {
        /// See [`PipelineResult::success`].
        success: bool,
        /// Steps that passed.
        passed: usize,
        /// Steps that failed.
        failed: usize,
        /// Steps skipped.
        skipped: usize,
        /// Steps cancelled.
        cancelled: usize,
        /// How long the run took.
        #[serde(with = "crate::units::duration")]
        duration: Duration,
    },
}

/// Starts pipelines: the scheduler, configured with a launcher, a grace period, an event sink and a
/// cancellation token. Cheap to clone.
///
/// See the [module docs](super) for the scheduling model.
#[derive(Clone)]
pub struct Runner {
    launcher: Arc<dyn StepLauncher>,
    grace: Duration,
    events: Option<mpsc::UnboundedSender<PipelineEvent>>,
    cancel: Option<CancelToken>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("grace", &self.grace)
            .field("events", &self.events.is_some())
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

/// Default time between `TERM` and `KILL` when a step is stopped: 10 s, as for any corral process.
pub const DEFAULT_STEP_GRACE: Duration = corral_proc::DEFAULT_GRACE;

impl Runner {
    /// A runner launching steps with `launcher` (a [`DirectLauncher`](super::DirectLauncher), or the
    /// daemon's own).
    pub fn new(launcher: impl StepLauncher + 'static) -> Self {
        Runner {
            launcher: Arc::new(launcher),
            grace: DEFAULT_STEP_GRACE,
            events: None,
            cancel: None,
        }
    }

    /// Time between `TERM` and `KILL` when a step is stopped by its timeout or a cancellation (default
    /// [`DEFAULT_STEP_GRACE`]).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sends every run's [`PipelineEvent`]s to `sender`. A closed receiver is not an error.
    pub fn events(mut self, sender: mpsc::UnboundedSender<PipelineEvent>) -> Self {
        self.events = Some(sender);
        self
    }

    /// Runs are cancelled when `token` is (for instance the daemon's shutdown token). Without one, each
    /// run gets a fresh token, reachable through [`PipelineRun::cancel`].
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Starts `pipeline` on a new tokio task and returns its handle at once. The run goes on when the
    /// handle is dropped; cancel it with [`PipelineRun::cancel`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn start(&self, pipeline: Pipeline) -> PipelineRun {
        let steps = pipeline.spec().steps.iter().map(StepResult::pending).collect();
        let name = pipeline.spec().name.clone();
        let (result_tx, result_rx) = watch::channel(None);
        let cancel = self.cancel.clone().unwrap_or_default();
        let shared = Arc::new(RunShared {
            name: name.clone(),
            steps: Mutex::new(steps),
            started_at: Instant::now(),
            result: result_rx,
            cancel: cancel.clone(),
        });
        let coordinator = Coordinator {
            name,
            pipeline,
            launcher: Arc::clone(&self.launcher),
            grace: self.grace,
            events: self.events.clone(),
            cancel,
            shared: Arc::clone(&shared),
            result: result_tx,
        };
        tokio::spawn(coordinator.run());
        PipelineRun { shared }
    }

    /// Runs `pipeline` to its end.
    pub async fn run(&self, pipeline: Pipeline) -> PipelineResult {
        self.start(pipeline).wait().await
    }
}

/// What the handle shares with the coordinator task.
#[derive(Debug)]
struct RunShared {
    name: Option<String>,
    /// Updated by the coordinator at each transition; never locked across an `.await`.
    steps: Mutex<Vec<StepResult>>,
    started_at: Instant,
    result: watch::Receiver<Option<PipelineResult>>,
    cancel: CancelToken,
}

impl RunShared {
    fn lock_steps(&self) -> MutexGuard<'_, Vec<StepResult>> {
        // The coordinator never panics while holding the lock; if it did, the data is still consistent
        // step by step.
        self.steps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle on a running (or finished) pipeline: snapshot, wait, cancel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    shared: Arc<RunShared>,
}

impl PipelineRun {
    /// The pipeline's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// Every step as it is now, in declaration order.
    pub fn snapshot(&self) -> Vec<StepResult> {
        self.shared.lock_steps().clone()
    }

    /// The result, once the run is over.
    pub fn result(&self) -> Option<PipelineResult> {
        self.shared.result.borrow().clone()
    }

    /// True once the run is over.
    pub fn is_finished(&self) -> bool {
        self.shared.result.borrow().is_some()
    }

    /// Waits until every step is done, skipped or cancelled, and returns the result.
    pub async fn wait(&self) -> PipelineResult {
        let mut receiver = self.shared.result.clone();
        let result = match receiver.wait_for(Option::is_some).await {
            Ok(result) => result.clone(),
            Err(_) => None,
        };
        result.unwrap_or_else(|| self.lost_result())
    }

    /// The result when the coordinator task ended without one: it panicked, which is a bug. Steps not yet
    /// finished are reported as cancelled.
    fn lost_result(&self) -> PipelineResult {
        if let Some(result) = self.result() {
            return result;
        }
        tracing::error!(pipeline = ?self.shared.name, "pipeline coordinator ended without a result (bug)");
        let mut steps = self.snapshot();
        for step in steps.iter_mut().filter(|step| !step.status.is_finished()) {
            step.status = StepStatus::Cancelled;
            step.error = Some("the pipeline runner stopped unexpectedly".to_owned());
        }
        PipelineResult::from_steps(self.shared.name.clone(), steps, self.shared.started_at.elapsed())
    }

    /// Cancels the run: running steps are stopped gracefully, steps not started are marked cancelled.
    /// Returns at once; [`PipelineRun::wait`] for the end.
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// The run's cancellation token.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.shared.cancel
    }

    /// True when both handles are of the same run (clones of one [`Runner::start`]'s handle).
    pub fn is_same_run(&self, other: &PipelineRun) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// The task that schedules one run. It alone changes the run's state.
struct Coordinator {
    name: Option<String>,
    pipeline: Pipeline,
    launcher: Arc<dyn StepLauncher>,
    grace: Duration,
    events: Option<mpsc::UnboundedSender<PipelineEvent>>,
    cancel: CancelToken,
    shared: Arc<RunShared>,
    result: watch::Sender<Option<PipelineResult>>,
}

/// What the coordinator keeps about each step beyond the shared snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting,
    Running,
    /// Final, and its dependents may run (passed, or failed with `allow_failure`).
    Done,
    /// Final, and its dependents must not run.
    Blocked,
}

impl Coordinator {
    async fn run(self) {
        let started = Instant::now();
        let spec = self.pipeline.spec();
        let n_steps = spec.steps.len();
        let cap = spec.effective_parallelism().unwrap_or(usize::MAX);
        let sequential = spec.mode == Mode::Sequential;
        let mut slots = vec![Slot::Waiting; n_steps];
        let mut tasks: JoinSet<StepRun> = JoinSet::new();
        let mut task_step: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut cancelled = false;
        tracing::debug!(pipeline = ?self.name, steps = n_steps, mode = %spec.mode, "pipeline started");
        loop {
            self.notice_cancel(&mut cancelled, &mut slots);
            if !cancelled {
                for idx in 0..n_steps {
                    if tasks.len() >= cap {
                        break;
                    }
                    if slots[idx] == Slot::Waiting && self.is_ready(idx, &slots) {
                        slots[idx] = Slot::Running;
                        let id = self.launch(idx, &mut tasks);
                        task_step.insert(id, idx);
                    }
                }
            }
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                joined = tasks.join_next_with_id() => {
                    let (id, run) = match joined {
                        Some(Ok((id, run))) => (id, run),
                        Some(Err(err)) => (err.id(), launcher_crashed(err)),
                        None => continue,
                    };
                    let Some(idx) = task_step.remove(&id) else {
                        tracing::error!(pipeline = ?self.name, "finished task of an unknown step (bug)");
                        continue;
                    };
                    // A step stopped by a cancellation may end before the cancel branch below is polled:
                    // the steps not started are cancelled, not skipped because of it.
                    self.notice_cancel(&mut cancelled, &mut slots);
                    slots[idx] = self.finish(idx, run);
                    if slots[idx] == Slot::Blocked {
                        self.skip_after_failure(idx, sequential, &mut slots);
                    }
                }
                () = self.cancel.cancelled(), if !cancelled => {}
            }
        }
        // With an acyclic graph every waiting step is started, skipped or cancelled before the last
        // running one ends; anything left is a scheduler bug, reported rather than hung on.
        for (idx, slot) in slots.iter_mut().enumerate() {
            if *slot == Slot::Waiting {
                tracing::error!(pipeline = ?self.name, step = %spec.steps[idx].name, "step never became ready (bug)");
                *slot = Slot::Blocked;
                self.update(idx, |step| {
                    step.status = StepStatus::Skipped;
                    step.error = Some("skipped: its dependencies never completed".to_owned());
                    step.ended_at = Some(unix_ms(SystemTime::now()));
                });
            }
        }
        let steps = self.shared.lock_steps().clone();
        let result = PipelineResult::from_steps(self.name.clone(), steps, started.elapsed());
        tracing::debug!(pipeline = ?self.name, success = result.success, "pipeline finished");
        let event = PipelineEvent::Finished {
            success: result.success,
            passed: result.passed,
            failed: result.failed,
            skipped: result.skipped,
            cancelled: result.cancelled,
            duration: result.duration,
        };
        self.result.send_replace(Some(result));
        self.emit(event);
    }

    /// True when every step `idx` runs after is done (passed, or failed with `allow_failure`).
    fn is_ready(&self, idx: usize, slots: &[Slot]) -> bool {
        self.pipeline.graph().deps[idx]
            .iter()
            .all(|&dep| slots[dep] == Slot::Done)
    }

    /// Marks step `idx` running and spawns its launch; returns the task's id.
    fn launch(&self, idx: usize, tasks: &mut JoinSet<StepRun>) -> tokio::task::Id {
        let step = self.pipeline.spec().steps[idx].clone();
        self.update(idx, |result| {
            result.status = StepStatus::Running;
            result.started_at = Some(unix_ms(SystemTime::now()));
        });
        self.emit(PipelineEvent::StepStarted {
            name: step.name.clone(),
        });
        let context = StepContext {
            pipeline: self.name.clone(),
            index: idx,
            cancel: self.cancel.clone(),
            grace: self.grace,
        };
        let launcher = Arc::clone(&self.launcher);
        tasks.spawn(async move { launcher.launch(&step, context).await }).id()
    }

    /// Records how step `idx` ended and returns its new slot.
    fn finish(&self, idx: usize, run: StepRun) -> Slot {
        let step = &self.pipeline.spec().steps[idx];
        let (status, error) = match &run.end {
            StepEnd::Passed => (StepStatus::Passed, None),
            StepEnd::Failed(failure) => (StepStatus::Failed, Some(failure.to_string())),
            StepEnd::Cancelled => (StepStatus::Cancelled, Some("cancelled".to_owned())),
        };
        tracing::debug!(pipeline = ?self.name, step = %step.name, %status, ?error, "pipeline step finished");
        self.update(idx, |result| {
            result.status = status;
            result.exit_code = run.exit_code;
            result.duration = Some(run.duration);
            result.output_tail = run.output_tail;
            result.error = error.clone();
            result.ended_at = Some(unix_ms(SystemTime::now()));
        });
        self.emit(PipelineEvent::StepFinished {
            name: step.name.clone(),
            status,
            exit_code: run.exit_code,
            duration: run.duration,
            error,
        });
        match status {
            StepStatus::Passed => Slot::Done,
            StepStatus::Failed if step.allow_failure => Slot::Done,
            _ => Slot::Blocked,
        }
    }

    /// Skips what can no longer run after step `failed` ended badly: its transitive dependents, or in
    /// sequential mode every step not started.
    fn skip_after_failure(&self, failed: usize, sequential: bool, slots: &mut [Slot]) {
        let failed_name = &self.pipeline.spec().steps[failed].name;
        let how = match self.shared.lock_steps()[failed].status {
            StepStatus::Cancelled => "was cancelled",
            _ => "failed",
        };
        let mut to_skip = Vec::new();
        if sequential {
            to_skip.extend((0..slots.len()).filter(|&idx| slots[idx] == Slot::Waiting));
        } else {
            let mut stack = vec![failed];
            while let Some(node) = stack.pop() {
                for &dependent in &self.pipeline.graph().dependents[node] {
                    if slots[dependent] == Slot::Waiting && !to_skip.contains(&dependent) {
                        to_skip.push(dependent);
                        stack.push(dependent);
                    }
                }
            }
            to_skip.sort_unstable();
        }
        let reason = if sequential {
            format!("{failed_name:?} {how}, and a sequential pipeline stops at the first failure")
        } else {
            format!("{failed_name:?} {how}")
        };
        for idx in to_skip {
            slots[idx] = Slot::Blocked;
            self.update(idx, |step| {
                step.status = StepStatus::Skipped;
                step.error = Some(format!("skipped: {reason}"));
                step.ended_at = Some(unix_ms(SystemTime::now()));
            });
            self.emit(PipelineEvent::StepSkipped {
                name: self.pipeline.spec().steps[idx].name.clone(),
                reason: reason.clone(),
            });
        }
    }

    /// On the first call after the token fired, marks every step not started as cancelled.
    fn notice_cancel(&self, cancelled: &mut bool, slots: &mut [Slot]) {
        if !*cancelled && self.cancel.is_cancelled() {
            *cancelled = true;
            self.cancel_waiting(slots);
        }
    }

    /// Marks every step not started as cancelled.
    fn cancel_waiting(&self, slots: &mut [Slot]) {
        tracing::debug!(pipeline = ?self.name, "pipeline cancelled");
        for (idx, slot) in slots.iter_mut().enumerate() {
            if *slot != Slot::Waiting {
                continue;
            }
            *slot = Slot::Blocked;
            self.update(idx, |step| {
                step.status = StepStatus::Cancelled;
                step.error = Some("cancelled before it started".to_owned());
                step.ended_at = Some(unix_ms(SystemTime::now()));
            });
            self.emit(PipelineEvent::StepCancelled {
                name: self.pipeline.spec().steps[idx].name.clone(),
            });
        }
    }

    fn update(&self, idx: usize, change: impl FnOnce(&mut StepResult)) {
        if let Some(step) = self.shared.lock_steps().get_mut(idx) {
            change(step);
        }
    }

    fn emit(&self, event: PipelineEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }
}

/// The report for a launch whose task panicked (or was aborted).
fn launcher_crashed(err: JoinError) -> StepRun {
    let message = if err.is_panic() {
        let payload = err.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        format!("the step launcher panicked: {text}")
    } else {
        "the step launcher was aborted".to_owned()
    };
    tracing::error!(error = %message, "pipeline step launcher crashed");
    StepRun {
        end: StepEnd::Failed(StepFailure::Other(message)),
        exit_code: None,
        duration: Duration::ZERO,
        output_tail: String::new(),
    }
}

/// Milliseconds since the Unix epoch (negative before it).
fn unix_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}
