//! The daemon's built-in task types: `process` and `pipeline`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::pipeline::{Pipeline, PipelineSpec, Runner};
use crate::processes::{ProcessManager, ProcessesError, StartRequest, DEFAULT_GRACE};
use crate::steps::{output_tail, ManagedLauncher};
use crate::tasks::{TaskContext, TaskError, TaskFuture, TaskHandler};

/// Bytes of output kept in a `process` task's result.
pub const TASK_TAIL_BYTES: usize = 4096;

/// Params of a `process` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessParams {
    /// argv.
    pub command: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Environment variables to set.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit per attempt.
    #[serde(default, with = "crate::units::option_duration")]
    pub timeout: Option<Duration>,
    /// Grace between TERM and KILL when stopped.
    #[serde(default, with = "crate::units::option_duration")]
    pub grace: Option<Duration>,
}

/// `process`: runs one command as a managed process labelled `task=<id>`; completed on exit 0, failed
/// otherwise with the exit code in the error; the output tail in the result either way.
pub struct ProcessTask {
    processes: ProcessManager,
}

impl ProcessTask {
    /// A handler starting processes through `processes`.
    pub fn new(processes: ProcessManager) -> Self {
        ProcessTask { processes }
    }
}

impl TaskHandler for ProcessTask {
    /// Secret-looking argv values and environment values (by name) show as `***`, as in process records.
    fn redact_params(&self, params: &Value) -> Value {
        let mut shown = params.clone();
        if let Some(command) = shown.get_mut("command") {
            if let Ok(argv) = Vec::<String>::deserialize(&*command) {
                *command = json!(crate::redact::redact_argv(&argv));
            }
        }
        if let Some(env) = shown.get_mut("env").and_then(Value::as_object_mut) {
            for (name, value) in env.iter_mut() {
                if crate::redact::looks_secret(name) {
                    *value = Value::String("***".into());
                }
            }
        }
        shown
    }

    fn validate(&self, params: &Value) -> Result<(), String> {
        let params: ProcessParams = Deserialize::deserialize(params).map_err(|e: serde_json::Error| e.to_string())?;
        if params.command.is_empty() || params.command[0].is_empty() {
            return Err("command must be a non-empty argv array".into());
        }
        Ok(())
    }

    fn run(&self, params: Value, context: TaskContext) -> TaskFuture {
        let processes = self.processes.clone();
        Box::pin(async move {
            let params: ProcessParams =
                serde_json::from_value(params).map_err(|e| TaskError::new(format!("invalid params: {e}")))?;
            let grace = params.grace.unwrap_or(DEFAULT_GRACE);
            let request = StartRequest {
                command: params.command,
                dir: params.dir,
                env: params.env,
                labels: BTreeMap::from([
                    ("task".to_owned(), context.id().to_owned()),
                    ("attempt".to_owned(), context.attempt().to_string()),
                ]),
                source: "task".into(),
                timeout: params.timeout,
                grace: Some(grace),
                stdin: false,
                id: None,
                record_command: None,
                // The task's result holds its output: a crash of the daemon must not lose what came before.
                durable_output: true,
            };
            let (record, process, _) = run_to_end(&processes, request, &context, grace).await?;
            process_task_result(&processes, &record.id, &process)
        })
    }

    fn resumes(&self) -> bool {
        true
    }

    fn resume(&self, params: Value, context: TaskContext, ids: Vec<String>) -> TaskFuture {
        let processes = self.processes.clone();
        Box::pin(async move {
            let params: ProcessParams =
                serde_json::from_value(params).map_err(|e| TaskError::new(format!("invalid params: {e}")))?;
            let grace = params.grace.unwrap_or(DEFAULT_GRACE);
            let id = ids
                .into_iter()
                .next()
                .ok_or_else(|| TaskError::new("no process to resume"))?;
            let deadline = resume_deadline(&processes, &id, params.timeout);
            let (process, _) = follow(&processes, &id, &context, grace, deadline).await?;
            process_task_result(&processes, &id, &process)
        })
    }
}

/// A `process` task's outcome from its process's record.
fn process_task_result(
    processes: &ProcessManager,
    id: &str,
    process: &corral_proc::Process,
) -> Result<Value, TaskError> {
    let end = processes.get(id).map_err(|e| TaskError::new(e.to_string()))?;
    let result = json!({
        "process_id": id,
        "exit_code": end.exit_code,
        "signal": end.signal,
        "output_tail": output_tail(process, TASK_TAIL_BYTES),
    });
    match (end.state.as_str(), end.exit_code) {
        ("completed", _) => Ok(result),
        // A process that exits on the timeout's TERM still timed out: the why, not the code it exited with.
        _ if end.error.as_deref() == Some("timed out") => Err(TaskError::new("timed out").with_result(result)),
        (_, Some(code)) => Err(TaskError::new(format!("exited with code {code}")).with_result(result)),
        _ => Err(
            TaskError::new(end.error.unwrap_or_else(|| format!("ended {}", end.state.as_str()))).with_result(result),
        ),
    }
}

/// Starts a managed process for a task and waits until it is gone and recorded; the task's cancellation
/// stops its tree gracefully. A start failure is the task's failure.
async fn run_to_end(
    processes: &ProcessManager,
    request: StartRequest,
    context: &TaskContext,
    grace: Duration,
) -> Result<(corral_store::ProcessRecord, corral_proc::Process, corral_proc::Finished), TaskError> {
    let record = match processes.start(request).await {
        Ok(record) => record,
        Err(ProcessesError::Spawn { error, record }) => {
            return Err(TaskError::new(error).with_result(json!({"process_id": record.id})))
        }
        Err(err) => return Err(TaskError::new(err.to_string())),
    };
    let (process, finished) = follow(processes, &record.id, context, grace, None).await?;
    Ok((record, process, finished))
}

/// Waits until managed process `id` is gone and recorded; the task's cancellation — or `deadline`,
/// which then reports a timeout — stops its tree gracefully.
async fn follow(
    processes: &ProcessManager,
    id: &str,
    context: &TaskContext,
    grace: Duration,
    deadline: Option<tokio::time::Instant>,
) -> Result<(corral_proc::Process, corral_proc::Finished), TaskError> {
    let Some(process) = processes.process(id) else {
        return Err(TaskError::new("process vanished right after start"));
    };
    let never = || tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let mut timed_out = false;
    tokio::select! {
        _ = process.wait() => {}
        _ = context.cancel_token().cancelled() => {
            let _ = processes.stop(id, Some(grace)).await;
        }
        _ = tokio::time::sleep_until(deadline.unwrap_or_else(never)), if deadline.is_some() => {
            timed_out = true;
            let _ = processes.stop_timed_out(id, Some(grace)).await;
        }
    }
    let mut finished = process.wait().await;
    processes.wait_recorded(id).await;
    if timed_out && finished.outcome == corral_proc::Outcome::Interrupted {
        finished.outcome = corral_proc::Outcome::Failed(corral_proc::Failure::TimedOut);
    }
    Ok((process, finished))
}

/// When a resumed run's process `id` must be stopped: `timeout` counted from the process's start, not from
/// the resume (a timeout the crash interrupted is not restarted). `None` without a timeout.
fn resume_deadline(processes: &ProcessManager, id: &str, timeout: Option<Duration>) -> Option<tokio::time::Instant> {
    let timeout = timeout?;
    let started_ms = processes
        .get(id)
        .map(|record| record.started_at.unwrap_or(record.created_at))
        .unwrap_or_else(|_| crate::events::now_ms());
    let running_for = Duration::from_millis((crate::events::now_ms() - started_ms).max(0) as u64);
    Some(tokio::time::Instant::now() + timeout.saturating_sub(running_for))
}

/// `pipeline`: params are a pipeline spec (the JSON form of a pipeline file); completed when no required
/// step failed; the per-step results in the result.
///
/// A run cut by a crash of the daemon goes on where it was: steps that ended keep their end (passed or
/// failed), a step whose process survived is waited for, the others run (see
/// [`ManagedLauncher::reuse_earlier_runs`]); a step whose process did not survive (no keeper) runs again.
/// Submitted again after it failed, or queued again by a clean stop of the daemon, a pipeline keeps its
/// completed steps and runs the others, failed ones included.
pub struct PipelineTask {
    processes: ProcessManager,
    runs: PipelineRuns,
}

impl PipelineTask {
    /// A handler running steps through `processes`.
    pub fn new(processes: ProcessManager) -> Self {
        PipelineTask {
            processes,
            runs: PipelineRuns::default(),
        }
    }

    /// Lists each run in `runs` while it goes on (and publishes its progress on their bus).
    pub fn runs(mut self, runs: PipelineRuns) -> Self {
        self.runs = runs;
        self
    }
}

/// How long a finished run stays in [`PipelineRuns`]: past the moment its task's end is recorded, so a
/// reader finds either the live run or the task's result, never neither.
const FINISHED_RUN_KEPT: Duration = Duration::from_secs(60);

/// The `pipeline` task runs going on in this process, by task id: their per-step status while they run
/// (`GET /pipelines/{id}`), and their progress as events (`pipeline.started`, `pipeline.step_started`, ...) on
/// an event bus.
/// Cheap to clone; the clones share the runs.
#[derive(Clone, Default)]
pub struct PipelineRuns {
    runs: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, crate::pipeline::PipelineRun>>>,
    bus: Option<crate::events::EventBus>,
}

impl PipelineRuns {
    /// Runs whose progress goes to `bus`.
    pub fn new(bus: crate::events::EventBus) -> Self {
        PipelineRuns {
            runs: Default::default(),
            bus: Some(bus),
        }
    }

    /// The run of the pipeline task `id`, while it runs (and shortly after).
    pub fn get(&self, id: &str) -> Option<crate::pipeline::PipelineRun> {
        self.lock().get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, crate::pipeline::PipelineRun>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `pipeline` as the run of task `id` and lists it until [`FINISHED_RUN_KEPT`] after its end.
    async fn run(&self, id: &str, runner: Runner, pipeline: Pipeline) -> crate::pipeline::PipelineResult {
        let runner = match &self.bus {
            Some(bus) => {
                bus.publish("pipeline.started", json!({"id": id, "pipeline": id}));
                let (events, received) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(publish_pipeline_events(bus.clone(), id.to_owned(), received));
                runner.events(events)
            }
            None => runner,
        };
        let run = runner.start(pipeline);
        self.lock().insert(id.to_owned(), run.clone());
        let result = run.wait().await;
        let (runs, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(FINISHED_RUN_KEPT).await;
            let mut listed = runs.lock();
            // Not a later run of the same task (submitted again after it failed).
            if listed.get(&id).is_some_and(|listed| listed.is_same_run(&run)) {
                listed.remove(&id);
            }
        });
        result
    }
}

/// Publishes a run's progress on `bus` as `pipeline.*` events whose data carries the pipeline's id.
pub async fn publish_pipeline_events(
    bus: crate::events::EventBus,
    id: String,
    mut received: tokio::sync::mpsc::UnboundedReceiver<crate::pipeline::PipelineEvent>,
) {
    use crate::pipeline::PipelineEvent;
    while let Some(event) = received.recv().await {
        let kind = match &event {
            PipelineEvent::StepStarted { .. } => "pipeline.step_started",
            PipelineEvent::StepFinished { .. } => "pipeline.step_finished",
            PipelineEvent::StepSkipped { .. } => "pipeline.step_skipped",
            PipelineEvent::StepCancelled { .. } => "pipeline.step_cancelled",
            PipelineEvent::Finished { .. } => "pipeline.finished",
        };
        let mut data = serde_json::to_value(&event).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut data {
            map.insert("pipeline".into(), Value::String(id.clone()));
        }
        bus.publish(kind, data);
    }
}

impl TaskHandler for PipelineTask {
    fn validate(&self, params: &Value) -> Result<(), String> {
        let spec: PipelineSpec = Deserialize::deserialize(params).map_err(|e: serde_json::Error| e.to_string())?;
        Pipeline::new(spec).map(drop).map_err(|e| e.to_string())
    }

    fn resumes(&self) -> bool {
        true
    }

    /// Between two steps the run has no process, and still goes on where it was.
    fn resumes_without_processes(&self) -> bool {
        true
    }

    /// The run again, its launcher finding the surviving step processes by their labels; a step that ended
    /// before the crash, failed or not, keeps its end (its dependents as that end decides).
    fn resume(&self, params: Value, context: TaskContext, _processes: Vec<String>) -> TaskFuture {
        self.start(params, context, true)
    }

    /// A run from scratch, or again after the task failed (submitted again): steps that completed in an
    /// earlier run are not run again, failed ones are.
    fn run(&self, params: Value, context: TaskContext) -> TaskFuture {
        self.start(params, context, false)
    }
}

impl PipelineTask {
    fn start(&self, params: Value, context: TaskContext, resumed: bool) -> TaskFuture {
        let (processes, runs) = (self.processes.clone(), self.runs.clone());
        Box::pin(async move {
            let spec: PipelineSpec =
                serde_json::from_value(params).map_err(|e| TaskError::new(format!("invalid params: {e}")))?;
            let pipeline = Pipeline::new(spec).map_err(|e| TaskError::new(e.to_string()))?;
            // Steps are labelled `pipeline=<task id>` (the id `POST /pipelines` answers) and `task=<id>`.
            let launcher = ManagedLauncher::new(processes, context.id())
                .labels(BTreeMap::from([("task".to_owned(), context.id().to_owned())]))
                .reuse_earlier_runs(resumed);
            let runner = Runner::new(launcher).cancel_token(context.cancel_token().clone());
            let result = runs.run(context.id(), runner, pipeline).await;
            let value = serde_json::to_value(&result).unwrap_or(Value::Null);
            if result.success {
                Ok(value)
            } else {
                Err(TaskError::new(format!(
                    "pipeline failed: {} failed, {} skipped, {} cancelled",
                    result.failed, result.skipped, result.cancelled
                ))
                .with_result(value))
            }
        })
    }
}

/// Params of an `exec` job: a declared tool command and its args (validated against the declaration).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// Tool name.
    pub tool: String,
    /// Command name within the tool.
    pub command: String,
    /// Caller args by name (string values).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Owner labels for the job's process (e.g. `session=abc`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Bytes of stdout and of stderr kept in an exec job's result (newest kept).
pub const EXEC_OUTPUT_CAP: usize = 1024 * 1024;

/// `exec`: runs a command declared in the tool registry, args checked and substituted one per argv slot,
/// never through a shell; stdout and stderr captured up to [`EXEC_OUTPUT_CAP`] each.
pub struct ExecTask {
    processes: ProcessManager,
    registry: std::sync::Arc<crate::tools::ToolRegistry>,
    limits: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<CommandLimit>>>,
}

/// The concurrency limit of one command: at most `permits` jobs run at once, and waiting jobs get their turn
/// in submit order (by job id: ids are time-ordered UUIDv7), not in the order their runs happen to be
/// polled, which after a restart (a batch of jobs started together) is not the submit order.
struct CommandLimit {
    state: std::sync::Mutex<LimitState>,
}

struct LimitState {
    /// The command's `concurrency` as last seen.
    size: usize,
    free: usize,
    /// Slots still held beyond a lowered size: given back, they are not handed on.
    excess: usize,
    /// Waiting jobs by id; a permit is handed to the smallest id.
    waiting: BTreeMap<String, tokio::sync::oneshot::Sender<CommandPermit>>,
}

/// A running job's slot; given back when dropped.
struct CommandPermit {
    /// `None` once handed back without a release (see `Drop`).
    limit: Option<std::sync::Arc<CommandLimit>>,
}

impl CommandLimit {
    fn new(permits: usize) -> Self {
        CommandLimit {
            state: std::sync::Mutex::new(LimitState {
                size: permits.max(1),
                free: permits.max(1),
                excess: 0,
                waiting: BTreeMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows an edited tool file: a raised limit lets waiting jobs start at once, a lowered one takes
    /// effect as running jobs end.
    fn resize(self: &std::sync::Arc<Self>, permits: usize) {
        let permits = permits.max(1);
        let mut state = self.state();
        if permits > state.size {
            let mut more = permits - state.size;
            let paid = more.min(state.excess);
            state.excess -= paid;
            more -= paid;
            state.free += more;
        } else {
            let mut fewer = state.size - permits;
            let taken = fewer.min(state.free);
            state.free -= taken;
            fewer -= taken;
            state.excess += fewer;
        }
        state.size = permits;
        // Hand free slots to waiters, smallest id first.
        while state.free > 0 {
            let Some((_, sender)) = state.waiting.pop_first() else {
                break;
            };
            let permit = CommandPermit {
                limit: Some(self.clone()),
            };
            match sender.send(permit) {
                Ok(()) => state.free -= 1,
                Err(mut permit) => permit.limit = None,
            }
        }
    }

    /// Waits for a slot; `job` orders the waiters.
    async fn acquire(self: std::sync::Arc<Self>, job: &str) -> Option<CommandPermit> {
        let receiver = {
            let mut state = self.state();
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                return Some(CommandPermit {
                    limit: Some(self.clone()),
                });
            }
            let (sender, receiver) = tokio::sync::oneshot::channel();
            state.waiting.insert(job.to_owned(), sender);
            receiver
        };
        receiver.await.ok()
    }

    /// A slot if one is free now, whoever waits: for a resumed job, whose process already runs.
    fn try_acquire(self: std::sync::Arc<Self>) -> Option<CommandPermit> {
        let mut state = self.state();
        if state.free == 0 {
            return None;
        }
        state.free -= 1;
        drop(state);
        Some(CommandPermit { limit: Some(self) })
    }
}

impl Drop for CommandPermit {
    fn drop(&mut self) {
        let Some(limit) = self.limit.take() else { return };
        let mut state = limit.state();
        if state.excess > 0 {
            // The limit was lowered: this slot is gone.
            state.excess -= 1;
            return;
        }
        // The next waiter in id order; one that gave up (its job cancelled) is skipped.
        while let Some((_, sender)) = state.waiting.pop_first() {
            let permit = CommandPermit {
                limit: Some(limit.clone()),
            };
            match sender.send(permit) {
                Ok(()) => return,
                // The waiter is gone and the permit comes back: disarmed, it must not release again.
                Err(mut permit) => permit.limit = None,
            }
        }
        state.free += 1;
    }
}

impl ExecTask {
    /// A handler running commands of `registry` through `processes`.
    pub fn new(processes: ProcessManager, registry: std::sync::Arc<crate::tools::ToolRegistry>) -> Self {
        ExecTask {
            processes,
            registry,
            limits: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The limit of a command with a concurrency limit, resized to `permits` if its tool file changed it.
    fn limit(&self, key: &str, permits: usize) -> std::sync::Arc<CommandLimit> {
        let limit = {
            let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            limits
                .entry(key.to_owned())
                .or_insert_with(|| std::sync::Arc::new(CommandLimit::new(permits)))
                .clone()
        };
        limit.resize(permits);
        limit
    }

    /// The limit of the command `params` names, if it has one.
    fn limit_of(&self, params: &ExecParams) -> Option<std::sync::Arc<CommandLimit>> {
        let spec = self.registry.current().lookup(&params.tool, &params.command)?;
        let permits = spec.concurrency()? as usize;
        Some(self.limit(&format!("{}/{}", params.tool, params.command), permits))
    }
}

impl TaskHandler for ExecTask {
    fn validate(&self, params: &Value) -> Result<(), String> {
        let params: ExecParams = Deserialize::deserialize(params).map_err(|e: serde_json::Error| e.to_string())?;
        let spec = self
            .registry
            .current()
            .lookup(&params.tool, &params.command)
            .ok_or_else(|| format!("no command {}/{} is declared", params.tool, params.command))?;
        spec.invocation(&params.args).map(drop).map_err(|e| e.to_string())
    }

    fn run(&self, params: Value, context: TaskContext) -> TaskFuture {
        let processes = self.processes.clone();
        let registry = self.registry.clone();
        let parsed: Result<ExecParams, _> = serde_json::from_value(params);
        let limit = parsed.as_ref().ok().and_then(|p| self.limit_of(p));
        Box::pin(async move {
            let params = parsed.map_err(|e| TaskError::new(format!("invalid params: {e}")))?;
            let spec = registry
                .current()
                .lookup(&params.tool, &params.command)
                .ok_or_else(|| {
                    TaskError::new(format!(
                        "command {}/{} is no longer declared",
                        params.tool, params.command
                    ))
                })?;
            let invocation = spec
                .invocation(&params.args)
                .map_err(|e| TaskError::new(e.to_string()))?;
            let _permit = match limit {
                Some(limit) => {
                    context.set_progress(json!({"state": "queued"}));
                    let permit = tokio::select! {
                        permit = limit.acquire(context.id()) => permit,
                        _ = context.cancel_token().cancelled() => return Err(TaskError::new("cancelled while queued")),
                    };
                    context.set_progress(json!({"state": "running"}));
                    permit
                }
                None => None,
            };
            let mut labels = params.labels.clone();
            labels.insert("job".into(), context.id().to_owned());
            // The task engine finds leftovers of an interrupted run by this label.
            labels.insert("task".into(), context.id().to_owned());
            labels.insert("tool".into(), params.tool.clone());
            labels.insert("command".into(), params.command.clone());
            let request = StartRequest {
                command: invocation.argv.clone(),
                dir: None,
                env: BTreeMap::new(),
                labels,
                source: "exec".into(),
                timeout: Some(spec.timeout()),
                grace: Some(DEFAULT_GRACE),
                stdin: false,
                id: None,
                record_command: Some(invocation.redacted_argv.clone()),
                // The job's result is its output: a crash of the daemon must not lose what came before.
                durable_output: true,
            };
            let started = std::time::Instant::now();
            let (record, process, finished) = run_to_end(&processes, request, &context, DEFAULT_GRACE).await?;
            exec_result(
                &record.id,
                &process,
                &finished,
                started.elapsed(),
                &params,
                spec.timeout(),
                context.id(),
            )
        })
    }

    fn resumes(&self) -> bool {
        true
    }

    /// Args the command marks `secret` show as `***`; all args do when the command is no longer declared
    /// (which of them were secret is not known then).
    fn redact_params(&self, params: &Value) -> Value {
        let mut shown = params.clone();
        let (Some(tool), Some(command)) = (
            params.get("tool").and_then(Value::as_str),
            params.get("command").and_then(Value::as_str),
        ) else {
            return shown;
        };
        let spec = self.registry.current().lookup(tool, command);
        if let Some(args) = shown.get_mut("args").and_then(Value::as_object_mut) {
            for (name, value) in args.iter_mut() {
                let secret = spec
                    .as_ref()
                    .is_none_or(|spec| spec.arg(name).is_none_or(|arg| arg.secret()));
                if secret {
                    *value = Value::String("***".into());
                }
            }
        }
        shown
    }

    /// The resumed job's process already runs: it takes its command's slot back before the jobs that
    /// queued behind it start again (without this, a restart let them run beside it).
    fn reserve_for_resume(&self, params: &Value) -> Option<Box<dyn std::any::Any + Send>> {
        let params: ExecParams = Deserialize::deserialize(params).ok()?;
        let permit = self.limit_of(&params)?.try_acquire();
        if permit.is_none() {
            tracing::warn!(
                tool = %params.tool,
                command = %params.command,
                "more jobs of this command survived the restart than its concurrency allows (lowered meanwhile?)"
            );
        }
        permit.map(|permit| Box::new(permit) as Box<dyn std::any::Any + Send>)
    }

    fn resume(&self, params: Value, context: TaskContext, ids: Vec<String>) -> TaskFuture {
        let processes = self.processes.clone();
        let registry = self.registry.clone();
        Box::pin(async move {
            let params: ExecParams =
                serde_json::from_value(params).map_err(|e| TaskError::new(format!("invalid params: {e}")))?;
            let id = ids
                .into_iter()
                .next()
                .ok_or_else(|| TaskError::new("no process to resume"))?;
            // The command's timeout still counts from the start, if it is still declared.
            let timeout = registry
                .current()
                .lookup(&params.tool, &params.command)
                .map(|spec| spec.timeout());
            let deadline = resume_deadline(&processes, &id, timeout);
            let (process, finished) = follow(&processes, &id, &context, DEFAULT_GRACE, deadline).await?;
            exec_result(
                &id,
                &process,
                &finished,
                finished.duration,
                &params,
                timeout.unwrap_or_default(),
                context.id(),
            )
        })
    }
}

/// An `exec` job's outcome: output (capped, newest kept), exit, and the job's end.
fn exec_result(
    process_id: &str,
    process: &corral_proc::Process,
    finished: &corral_proc::Finished,
    took: Duration,
    params: &ExecParams,
    timeout: Duration,
    job_id: &str,
) -> Result<Value, TaskError> {
    let capture = |stream: corral_proc::Stream| {
        process
            .output(stream)
            .map(|o| {
                let start = o.bytes.len().saturating_sub(EXEC_OUTPUT_CAP);
                let truncated = o.dropped > 0 || start > 0;
                (String::from_utf8_lossy(&o.bytes[start..]).into_owned(), truncated)
            })
            .unwrap_or_default()
    };
    let (stdout, stdout_cut) = capture(corral_proc::Stream::Stdout);
    let (stderr, stderr_cut) = capture(corral_proc::Stream::Stderr);
    let result = json!({
        "process_id": process_id,
        "exit_code": finished.exit_code(),
        "signal": finished.signal().map(|s| s.name()),
        "stdout": stdout,
        "stderr": stderr,
        "truncated": stdout_cut || stderr_cut,
        "duration_ms": took.as_millis() as u64,
    });
    // The request was logged when accepted (who, args by name); this is its outcome.
    tracing::info!(
        job_id,
        tool = %params.tool,
        command = %params.command,
        outcome = ?finished.outcome,
        exit_code = ?finished.exit_code(),
        "exec job finished"
    );
    match &finished.outcome {
        corral_proc::Outcome::Completed => Ok(result),
        corral_proc::Outcome::Failed(corral_proc::Failure::ExitCode(code)) => {
            Err(TaskError::new(format!("exited with code {code}")).with_result(result))
        }
        corral_proc::Outcome::Failed(corral_proc::Failure::TimedOut) => Err(TaskError::new(format!(
            "timed out after {}",
            crate::units::format_duration(timeout)
        ))
        .with_result(result)),
        corral_proc::Outcome::Failed(corral_proc::Failure::Signal(signal)) => {
            Err(TaskError::new(format!("killed by signal {signal}")).with_result(result))
        }
        corral_proc::Outcome::Interrupted => Err(TaskError::new("stopped on request").with_result(result)),
        corral_proc::Outcome::Failed(corral_proc::Failure::Unknown) => {
            Err(TaskError::new("exit status unknown").with_result(result))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_command_limit_hands_slots_out_in_id_order_and_skips_waiters_that_left() {
        let limit = Arc::new(CommandLimit::new(1));
        let first = limit.clone().acquire("job-a").await.expect("UNWRAP: a free slot");
        assert!(limit.clone().try_acquire().is_none(), "the only slot is taken");
        // Waiters arrive out of id order; one of them gives up.
        let c = tokio::spawn(limit.clone().acquire("job-c"));
        let gone = tokio::spawn(limit.clone().acquire("job-0"));
        let b = tokio::spawn(limit.clone().acquire("job-b"));
        while limit.state().waiting.len() < 3 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(first);
        let b_permit = b.await.expect("UNWRAP: b").expect("UNWRAP: b gets the slot first");
        assert!(!c.is_finished(), "c waits while b runs");
        drop(b_permit);
        drop(c.await.expect("UNWRAP: c").expect("UNWRAP: then c"));
        assert_eq!(limit.state().free, 1, "every slot came back, none twice");
        assert!(limit.state().waiting.is_empty());
    }

    #[tokio::test]
    async fn a_command_limit_follows_its_size_when_the_tool_file_changes() {
        let limit = Arc::new(CommandLimit::new(1));
        let first = limit.clone().acquire("job-a").await.expect("UNWRAP: a free slot");
        let b = tokio::spawn(limit.clone().acquire("job-b"));
        let c = tokio::spawn(limit.clone().acquire("job-c"));
        while limit.state().waiting.len() < 2 {
            tokio::task::yield_now().await;
        }
        limit.resize(3);
        let b = b.await.expect("UNWRAP: b").expect("UNWRAP: raised: b starts at once");
        let c = c.await.expect("UNWRAP: c").expect("UNWRAP: and c");
        limit.resize(1);
        drop(first);
        drop(b);
        assert!(limit.clone().try_acquire().is_none(), "lowered to 1 and c still runs");
        drop(c);
        let again = limit.clone().try_acquire().expect("UNWRAP: one slot once all ended");
        assert!(limit.clone().try_acquire().is_none(), "only one");
        drop(again);
        assert_eq!(limit.state().free, 1);
    }
}
