//! [`ManagedLauncher`]: runs pipeline steps as managed processes with durable records.

use std::collections::BTreeMap;

use corral_proc::Stream;

use crate::pipeline::{LaunchFuture, StepContext, StepLauncher, StepRun, StepSpec};
use crate::processes::{ProcessManager, ProcessesError, StartRequest};

/// Bytes of output kept per step in its result.
pub const STEP_TAIL_BYTES: usize = 4096;

/// Runs each step through the [`ProcessManager`]: source `pipeline` (or the given one), labels
/// `pipeline=<id>`, `step=<name>` plus any extra labels, so every step has a record, shows in `ps`,
/// and is stopped with the daemon.
pub struct ManagedLauncher {
    processes: ProcessManager,
    pipeline_id: String,
    labels: BTreeMap<String, String>,
    source: String,
}

impl ManagedLauncher {
    /// A launcher for the pipeline run `pipeline_id`.
    pub fn new(processes: ProcessManager, pipeline_id: impl Into<String>) -> Self {
        ManagedLauncher {
            processes,
            pipeline_id: pipeline_id.into(),
            labels: BTreeMap::new(),
            source: "pipeline".into(),
        }
    }

    /// Adds owner labels to every step's process (e.g. `task=<id>`).
    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels.extend(labels);
        self
    }
}

impl StepLauncher for ManagedLauncher {
    fn launch<'a>(&'a self, step: &'a StepSpec, context: StepContext) -> LaunchFuture<'a> {
        Box::pin(async move {
            if context.cancel.is_cancelled() {
                return StepRun::cancelled_before_start();
            }
            let mut labels = self.labels.clone();
            labels.insert("pipeline".to_owned(), self.pipeline_id.clone());
            labels.insert("step".to_owned(), step.name.clone());
            let request = StartRequest {
                command: step.command.clone(),
                dir: step.dir.clone(),
                env: step.env.clone(),
                labels,
                source: self.source.clone(),
                timeout: step.timeout,
                grace: Some(context.grace),
                stdin: false,
                id: None,
                record_command: None,
                durable_output: false,
            };
            let started = std::time::Instant::now();
            let record = match self.processes.start(request).await {
                Ok(record) => record,
                Err(ProcessesError::Spawn { error, .. }) => return StepRun::failed_to_start(error, started.elapsed()),
                Err(err) => return StepRun::failed_to_start(err, started.elapsed()),
            };
            let Some(process) = self.processes.process(&record.id) else {
                return StepRun::failed_to_start("process vanished right after start", started.elapsed());
            };
            let finished = tokio::select! {
                finished = process.wait() => finished,
                _ = context.cancel.cancelled() => {
                    let _ = self.processes.stop(&record.id, Some(context.grace)).await;
                    process.wait().await
                }
            };
            self.processes.wait_recorded(&record.id).await;
            StepRun::from_finished(&finished, step, output_tail(&process, STEP_TAIL_BYTES))
        })
    }
}

/// The last `max` bytes of each captured stream, stdout then stderr, lossily decoded.
pub fn output_tail(process: &corral_proc::Process, max: usize) -> String {
    let mut text = String::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        if let Some(out) = process.output(stream) {
            let start = out.bytes.len().saturating_sub(max);
            text.push_str(&String::from_utf8_lossy(&out.bytes[start..]));
        }
    }
    text
}
