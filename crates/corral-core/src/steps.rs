//! [`ManagedLauncher`]: runs pipeline steps as managed processes with durable records.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_proc::{Process, Signal, Stream};
use corral_store::{ProcessFilter, ProcessRecord, ProcessState};

use crate::pipeline::{LaunchFuture, StepContext, StepEnd, StepFailure, StepLauncher, StepRun, StepSpec};
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
    /// `None`: run every step; `Some(false)`: reuse completed earlier runs; `Some(true)`: failed ones too.
    reuse: Option<bool>,
}

/// What the records say of an earlier run of a step (see [`ManagedLauncher::reuse_earlier_runs`]).
enum Earlier {
    /// Its process is still running and watched by this daemon (re-attached after a crash).
    Live(String, Process, ProcessRecord),
    /// It ended with a known status: completed, or (when failed runs are reused) failed.
    Ended(ProcessRecord),
}

/// The output tail of a step taken from its record: its output was in an earlier daemon's memory.
pub const OUTPUT_NOT_KEPT: &str = "[corral: this step ended in an earlier run; its output is not kept]";

impl ManagedLauncher {
    /// A launcher for the pipeline run `pipeline_id`.
    pub fn new(processes: ProcessManager, pipeline_id: impl Into<String>) -> Self {
        ManagedLauncher {
            processes,
            pipeline_id: pipeline_id.into(),
            labels: BTreeMap::new(),
            source: "pipeline".into(),
            reuse: None,
        }
    }

    /// Before starting a step, looks in the process records for an earlier run of it by this launcher
    /// (same labels, `step=<name>`), so that a pipeline run again goes on where it was: a step that completed
    /// is not run again, nor one that failed when `failed_too` (a run resumed after a crash of the daemon,
    /// whose ended steps must keep their end, not when the pipeline is retried); a step whose process
    /// survived a crash (re-attached) is waited for (its timeout counted from its start); the others run:
    /// never started, cut by the crash or a stop, or failed when not `failed_too`. Only sound when the labels
    /// name one pipeline run (a task id), never shared by two runs.
    pub fn reuse_earlier_runs(mut self, failed_too: bool) -> Self {
        self.reuse = Some(failed_too);
        self
    }

    fn step_labels(&self, step: &StepSpec) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("pipeline".to_owned(), self.pipeline_id.clone());
        labels.insert("step".to_owned(), step.name.clone());
        labels
    }

    fn earlier_run(&self, step: &StepSpec) -> Option<Earlier> {
        let filter = ProcessFilter {
            labels: self.step_labels(step),
            limit: Some(1),
            ..ProcessFilter::default()
        };
        let record = match self.processes.list(&filter) {
            Ok(records) => records.into_iter().next()?,
            Err(err) => {
                tracing::warn!(step = %step.name, error = %err, "cannot read the records of earlier runs; running the step");
                return None;
            }
        };
        let failed_too = self.reuse == Some(true);
        match record.state {
            ProcessState::Completed => Some(Earlier::Ended(record)),
            ProcessState::Failed if failed_too => Some(Earlier::Ended(record)),
            // A live record this daemon does not watch (recovered without a keeper) is stopped by the task
            // engine before a run again; it then reads `interrupted` and runs again.
            ProcessState::Running | ProcessState::Interrupting => self
                .processes
                .process(&record.id)
                .map(|process| Earlier::Live(record.id.clone(), process, record)),
            ProcessState::Pending | ProcessState::Interrupted | ProcessState::Failed | ProcessState::Stale => None,
        }
    }

    /// Waits for a step's process to end (stopping it on cancellation, or once `deadline` passes) and
    /// reports it.
    async fn follow(
        &self,
        id: &str,
        process: Process,
        step: &StepSpec,
        context: &StepContext,
        deadline: Option<Duration>,
    ) -> StepRun {
        let timer = async {
            match deadline {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        let mut timed_out = false;
        let finished = tokio::select! {
            finished = process.wait() => finished,
            _ = context.cancel.cancelled() => {
                let _ = self.processes.stop(id, Some(context.grace)).await;
                process.wait().await
            }
            _ = timer => {
                timed_out = true;
                let _ = self.processes.stop_timed_out(id, Some(context.grace)).await;
                process.wait().await
            }
        };
        self.processes.wait_recorded(id).await;
        let mut run = StepRun::from_finished(&finished, step, output_tail(&process, STEP_TAIL_BYTES));
        if timed_out && run.end == StepEnd::Cancelled {
            run.end = StepEnd::Failed(StepFailure::TimedOut(step.timeout.unwrap_or(finished.duration)));
        }
        run
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
            if self.reuse.is_some() {
                match self.earlier_run(step) {
                    Some(Earlier::Ended(record)) => return step_run_of(&record, step),
                    Some(Earlier::Live(id, process, record)) => {
                        let running_for = Duration::from_millis(
                            (crate::events::now_ms() - record.started_at.unwrap_or(record.created_at)).max(0) as u64,
                        );
                        let left = step.timeout.map(|timeout| timeout.saturating_sub(running_for));
                        return self.follow(&id, process, step, &context, left).await;
                    }
                    None => {}
                }
            }
            if context.cancel.is_cancelled() {
                return StepRun::cancelled_before_start();
            }
            let labels = self.step_labels(step);
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
                // The step's report says "failed to start" itself.
                Err(ProcessesError::Spawn { error, .. }) => {
                    let reason = error.strip_prefix("failed to start: ").unwrap_or(&error);
                    return StepRun::failed_to_start(reason, started.elapsed());
                }
                Err(err) => return StepRun::failed_to_start(err, started.elapsed()),
            };
            let Some(process) = self.processes.process(&record.id) else {
                return StepRun::failed_to_start("process vanished right after start", started.elapsed());
            };
            // corral-proc enforces the step's timeout of a process started here.
            self.follow(&record.id, process, step, &context, None).await
        })
    }
}

/// A step's report from the record of its process that ended in an earlier run.
fn step_run_of(record: &ProcessRecord, step: &StepSpec) -> StepRun {
    let started = record.started_at.unwrap_or(record.created_at);
    let duration = Duration::from_millis((record.ended_at.unwrap_or(started) - started).max(0) as u64);
    let end = if record.state == ProcessState::Completed {
        StepEnd::Passed
    } else if record.error.as_deref() == Some("timed out") {
        StepEnd::Failed(StepFailure::TimedOut(step.timeout.unwrap_or(duration)))
    } else if let Some(code) = record.exit_code {
        StepEnd::Failed(StepFailure::ExitCode(code))
    } else if let Some(signal) = record.signal.as_deref().and_then(Signal::from_name) {
        StepEnd::Failed(StepFailure::Signal(signal))
    } else {
        StepEnd::Failed(StepFailure::Other(
            record.error.clone().unwrap_or_else(|| "failed".to_owned()),
        ))
    };
    StepRun {
        end,
        exit_code: record.exit_code,
        duration,
        output_tail: OUTPUT_NOT_KEPT.to_owned(),
    }
}

/// The last `max` bytes of each captured stream, stdout then stderr, lossily decoded.
pub fn output_tail(process: &corral_proc::Process, max: usize) -> String {
    let tails = [Stream::Stdout, Stream::Stderr].map(|stream| {
        process
            .output(stream)
            .map(|out| {
                let start = out.bytes.len().saturating_sub(max);
                String::from_utf8_lossy(&out.bytes[start..]).into_owned()
            })
            .unwrap_or_default()
    });
    join_tails(tails)
}

/// stdout's tail, then stderr's. After a restart both streams start with the line saying that earlier
/// output is not kept: once is enough.
fn join_tails([stdout, stderr]: [String; 2]) -> String {
    let marker = corral_proc::LOST_BEFORE_ADOPTION;
    match stderr.strip_prefix(marker) {
        Some(rest) if stdout.starts_with(marker) => stdout + rest,
        _ => stdout + &stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PipelineSpec;

    fn ended(state: ProcessState, exit_code: Option<i32>, signal: Option<&str>, error: Option<&str>) -> ProcessRecord {
        ProcessRecord {
            state,
            exit_code,
            signal: signal.map(str::to_owned),
            error: error.map(str::to_owned),
            started_at: Some(1_000),
            ended_at: Some(3_500),
            ..ProcessRecord::new("p", "pipeline", vec!["x".into()], 900)
        }
    }

    #[test]
    fn the_not_kept_line_shows_once_in_a_tail() {
        let marker = corral_proc::LOST_BEFORE_ADOPTION;
        let both = join_tails([format!("{marker}out\n"), format!("{marker}err\n")]);
        assert_eq!(both, format!("{marker}out\nerr\n"));
        assert_eq!(join_tails(["out\n".into(), "err\n".into()]), "out\nerr\n");
        assert_eq!(
            join_tails(["out\n".into(), format!("{marker}err\n")]),
            format!("out\n{marker}err\n")
        );
    }

    #[test]
    fn a_step_report_from_its_record_says_how_it_ended() {
        let spec = PipelineSpec::from_toml_str("[[step]]\nname = \"s\"\ncommand = [\"x\"]\ntimeout = \"2s\"\n")
            .expect("UNWRAP: valid");
        let step = &spec.steps[0];
        let cases = [
            (ended(ProcessState::Completed, Some(0), None, None), StepEnd::Passed),
            (
                ended(ProcessState::Failed, Some(3), None, Some("exited with code 3")),
                StepEnd::Failed(StepFailure::ExitCode(3)),
            ),
            (
                ended(ProcessState::Failed, None, Some("TERM"), Some("timed out")),
                StepEnd::Failed(StepFailure::TimedOut(Duration::from_secs(2))),
            ),
            (
                ended(ProcessState::Failed, None, Some("KILL"), Some("killed by signal KILL")),
                StepEnd::Failed(StepFailure::Signal(Signal::KILL)),
            ),
            (
                ended(ProcessState::Failed, None, None, Some("exit status unknown")),
                StepEnd::Failed(StepFailure::Other("exit status unknown".into())),
            ),
        ];
        for (record, end) in cases {
            let run = step_run_of(&record, step);
            assert_eq!(run.end, end, "{record:?}");
            assert_eq!(run.exit_code, record.exit_code);
            assert_eq!(run.duration, Duration::from_millis(2_500));
            assert_eq!(run.output_tail, OUTPUT_NOT_KEPT);
        }
    }
}
