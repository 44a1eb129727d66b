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
    fn validate(&self, params: &Value) -> Result<(), String> {
        let params: ProcessParams = serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
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
            };
            let record = match processes.start(request) {
                Ok(record) => record,
                Err(ProcessesError::Spawn { error, record }) => {
                    return Err(TaskError::new(error).with_result(json!({"process_id": record.id})))
                }
                Err(err) => return Err(TaskError::new(err.to_string())),
            };
            let Some(process) = processes.process(&record.id) else {
                return Err(TaskError::new("process vanished right after start"));
            };
            tokio::select! {
                _ = process.wait() => {}
                _ = context.cancel_token().cancelled() => {
                    let _ = processes.stop(&record.id, Some(grace)).await;
                }
            }
            process.wait().await;
            processes.wait_recorded(&record.id).await;
            let end = processes.get(&record.id).map_err(|e| TaskError::new(e.to_string()))?;
            let result = json!({
                "process_id": record.id,
                "exit_code": end.exit_code,
                "signal": end.signal,
                "output_tail": output_tail(&process, TASK_TAIL_BYTES),
            });
            match (end.state.as_str(), end.exit_code) {
                ("completed", _) => Ok(result),
                (_, Some(code)) => Err(TaskError::new(format!("exited with code {code}")).with_result(result)),
                _ => Err(
                    TaskError::new(end.error.unwrap_or_else(|| format!("ended {}", end.state.as_str())))
                        .with_result(result),
                ),
            }
        })
    }
}

/// `pipeline`: params are a pipeline spec (the JSON form of a pipeline file); completed when no required
/// step failed; the per-step results in the result.
pub struct PipelineTask {
    processes: ProcessManager,
}

impl PipelineTask {
    /// A handler running steps through `processes`.
    pub fn new(processes: ProcessManager) -> Self {
        PipelineTask { processes }
    }
}

impl TaskHandler for PipelineTask {
    fn validate(&self, params: &Value) -> Result<(), String> {
        let spec: PipelineSpec = serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        Pipeline::new(spec).map(drop).map_err(|e| e.to_string())
    }

    fn run(&self, params: Value, context: TaskContext) -> TaskFuture {
        let processes = self.processes.clone();
        Box::pin(async move {
            let spec: PipelineSpec =
                serde_json::from_value(params).map_err(|e| TaskError::new(format!("invalid params: {e}")))?;
            let pipeline = Pipeline::new(spec).map_err(|e| TaskError::new(e.to_string()))?;
            let launcher = ManagedLauncher::new(processes, format!("task-{}", context.id()))
                .labels(BTreeMap::from([("task".to_owned(), context.id().to_owned())]));
            let runner = Runner::new(launcher).cancel_token(context.cancel_token().clone());
            let result = runner.run(pipeline).await;
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
