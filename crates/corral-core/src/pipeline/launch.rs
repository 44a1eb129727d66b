//! The seam between the scheduler and processes: [`StepLauncher`], and [`DirectLauncher`] on corral-proc.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_proc::{Failure, Finished, Outcome, Signal, Stream};
use tokio::sync::watch;

use super::spec::StepSpec;
use crate::units::format_duration;

/// A cancellation signal: cloneable, set once, observable by any number of tasks.
///
/// The runner passes a clone to every step through [`StepContext`]; [`PipelineRun::cancel`](
/// super::PipelineRun::cancel) sets it. Built on a `tokio::sync::watch` channel, so waiting costs nothing
/// until it fires.
#[derive(Clone)]
pub struct CancelToken {
    state: Arc<watch::Sender<bool>>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken {
            state: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Cancels. Idempotent.
    pub fn cancel(&self) {
        self.state.send_replace(true);
    }

    /// True once [`CancelToken::cancel`] has been called on any clone.
    pub fn is_cancelled(&self) -> bool {
        *self.state.borrow()
    }

    /// Resolves once cancelled (at once if already).
    pub async fn cancelled(&self) {
        let mut receiver = self.state.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = receiver.wait_for(|cancelled| *cancelled).await;
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// What a launcher knows about the run a step belongs to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepContext {
    /// The pipeline's name, if it has one.
    pub pipeline: Option<String>,
    /// The step's 0-based position in declaration order.
    pub index: usize,
    /// Fires when the pipeline is cancelled: stop the step's process tree gracefully (`TERM`, `grace`,
    /// `KILL`) and return [`StepEnd::Cancelled`].
    pub cancel: CancelToken,
    /// Time between `TERM` and `KILL` when the step is stopped, by cancellation or by its timeout.
    pub grace: Duration,
}

impl StepContext {
    /// A context for the step at `index`, for launchers driven outside a [`Runner`](super::Runner), such
    /// as in tests.
    pub fn new(index: usize, cancel: CancelToken, grace: Duration) -> Self {
        StepContext {
            pipeline: None,
            index,
            cancel,
            grace,
        }
    }
}

/// The future a [`StepLauncher`] returns.
pub type LaunchFuture<'a> = Pin<Box<dyn Future<Output = StepRun> + Send + 'a>>;

/// Runs one step's command to its end. The runner decides *when* a step runs; a launcher decides *how*.
///
/// [`DirectLauncher`] spawns with corral-proc; the daemon provides one that also records each step as a
/// managed process. A launcher must:
///
/// - run `step.command` (argv, never through a shell) in `step.dir` with `step.env` added;
/// - enforce `step.timeout`: stop the process tree gracefully and return [`StepFailure::TimedOut`];
/// - watch `context.cancel`: on cancellation stop the tree gracefully (`context.grace`) and return
///   [`StepEnd::Cancelled`]. The runner waits for every launched step, so a launcher that ignores
///   cancellation holds the pipeline up;
/// - return only once the step's whole process tree is gone;
/// - report a failure to start as data ([`StepFailure::Start`]), never panic. (A panic is caught by the
///   runner and fails the step.)
pub trait StepLauncher: Send + Sync {
    /// Runs `step` and reports how it ended.
    fn launch<'a>(&'a self, step: &'a StepSpec, context: StepContext) -> LaunchFuture<'a>;
}

impl<L: StepLauncher + ?Sized> StepLauncher for Arc<L> {
    fn launch<'a>(&'a self, step: &'a StepSpec, context: StepContext) -> LaunchFuture<'a> {
        (**self).launch(step, context)
    }
}

impl<L: StepLauncher + ?Sized> StepLauncher for Box<L> {
    fn launch<'a>(&'a self, step: &'a StepSpec, context: StepContext) -> LaunchFuture<'a> {
        (**self).launch(step, context)
    }
}

/// How a launched step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// Exit code 0.
    Passed,
    /// See [`StepFailure`].
    Failed(StepFailure),
    /// Stopped because the pipeline was cancelled (or someone stopped its process).
    Cancelled,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepFailure {
    /// It exited with a non-zero code.
    #[error("exited with code {0}")]
    ExitCode(i32),
    /// A signal killed it (one not sent by a stop of ours).
    #[error("killed by signal {0}")]
    Signal(Signal),
    /// Its timeout passed; its process tree was stopped.
    #[error("timed out after {}", format_duration(*.0))]
    TimedOut(Duration),
    /// It could not be started: program not found, bad working directory, ...
    #[error("failed to start: {0}")]
    Start(String),
    /// Anything else (an exit status lost, a launcher that panicked).
    #[error("{0}")]
    Other(String),
}

/// What a launcher reports about one step it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRun {
    /// How it ended.
    pub end: StepEnd,
    /// The exit code, if the process exited by itself (not with a signal).
    pub exit_code: Option<i32>,
    /// From spawn until the process tree was gone (or the start attempt, when it failed to start).
    pub duration: Duration,
    /// The end of its output, stdout and stderr interleaved (see [`DirectLauncher::tail_bytes`]).
    pub output_tail: String,
}

impl StepRun {
    /// The report for a step whose process could not be started.
    pub fn failed_to_start(error: impl fmt::Display, duration: Duration) -> Self {
        StepRun {
            end: StepEnd::Failed(StepFailure::Start(error.to_string())),
            exit_code: None,
            duration,
            output_tail: String::new(),
        }
    }

    /// The report for a step cancelled before its process was started.
    pub fn cancelled_before_start() -> Self {
        StepRun {
            end: StepEnd::Cancelled,
            exit_code: None,
            duration: Duration::ZERO,
            output_tail: String::new(),
        }
    }

    /// The report for a corral-proc process that ran `step`: an interruption (a requested stop) is a
    /// cancellation, a timeout carries `step.timeout`.
    pub fn from_finished(finished: &Finished, step: &StepSpec, output_tail: String) -> Self {
        let end = match &finished.outcome {
            Outcome::Completed => StepEnd::Passed,
            Outcome::Interrupted => StepEnd::Cancelled,
            Outcome::Failed(Failure::ExitCode(code)) => StepEnd::Failed(StepFailure::ExitCode(*code)),
            Outcome::Failed(Failure::Signal(signal)) => StepEnd::Failed(StepFailure::Signal(*signal)),
            Outcome::Failed(Failure::TimedOut) => {
                StepEnd::Failed(StepFailure::TimedOut(step.timeout.unwrap_or(finished.duration)))
            }
            Outcome::Failed(Failure::Unknown) => {
                StepEnd::Failed(StepFailure::Other("exit status unknown (reaped elsewhere)".to_owned()))
            }
        };
        StepRun {
            end,
            exit_code: finished.exit_code(),
            duration: finished.duration,
            output_tail,
        }
    }
}

/// Default [`DirectLauncher::tail_bytes`]: the last 4 KiB of output.
pub const DEFAULT_TAIL_BYTES: usize = 4096;

/// Runs steps with corral-proc directly: each step in its own process group, output captured (stdout and
/// stderr into one pipe, in the order written), only the tail kept.
#[derive(Debug, Clone)]
pub struct DirectLauncher {
    tail_bytes: usize,
}

impl DirectLauncher {
    /// A launcher keeping the last [`DEFAULT_TAIL_BYTES`] of each step's output.
    pub fn new() -> Self {
        DirectLauncher {
            tail_bytes: DEFAULT_TAIL_BYTES,
        }
    }

    /// Keeps the last `bytes` of each step's output (stdout and stderr together); 0 keeps none. Memory per
    /// running step is bounded by this.
    pub fn tail_bytes(mut self, bytes: usize) -> Self {
        self.tail_bytes = bytes;
        self
    }

    async fn run(&self, step: &StepSpec, context: StepContext) -> StepRun {
        let started = Instant::now();
        if context.cancel.is_cancelled() {
            return StepRun::cancelled_before_start();
        }
        let mut command = corral_proc::Command::new(&step.command)
            .merge_stderr()
            .ring_size(self.tail_bytes)
            .grace(context.grace);
        if let Some(dir) = &step.dir {
            command = command.dir(dir);
        }
        for (name, value) in &step.env {
            command = command.env(name, value);
        }
        if let Some(timeout) = step.timeout {
            command = command.timeout(timeout);
        }
        let process = match command.spawn() {
            Ok(process) => process,
            Err(err) => return StepRun::failed_to_start(err, started.elapsed()),
        };
        tracing::debug!(step = %step.name, pid = process.pid(), "pipeline step started");
        let finished = tokio::select! {
            finished = process.wait() => finished,
            _ = context.cancel.cancelled() => process.shutdown(context.grace).await,
        };
        let output_tail = process
            .output(Stream::Stdout)
            .map(|output| tail_text(&output.bytes, self.tail_bytes))
            .unwrap_or_default();
        StepRun::from_finished(&finished, step, output_tail)
    }
}

impl Default for DirectLauncher {
    fn default() -> Self {
        DirectLauncher::new()
    }
}

impl StepLauncher for DirectLauncher {
    fn launch<'a>(&'a self, step: &'a StepSpec, context: StepContext) -> LaunchFuture<'a> {
        Box::pin(self.run(step, context))
    }
}

/// The last `max` bytes of `bytes` as text, starting at a character boundary; invalid UTF-8 replaced.
pub(crate) fn tail_text(bytes: &[u8], max: usize) -> String {
    let mut tail = &bytes[bytes.len().saturating_sub(max)..];
    // A cut in the middle of a multi-byte character leaves up to 3 continuation bytes in front.
    let mut skipped = 0;
    while skipped < 3 && tail.first().is_some_and(|b| b & 0xC0 == 0x80) {
        tail = &tail[1..];
        skipped += 1;
    }
    String::from_utf8_lossy(tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_starts_at_a_character_boundary() {
        let text = "héllo wörld";
        assert_eq!(tail_text(text.as_bytes(), 100), text);
        assert_eq!(tail_text(text.as_bytes(), 4), "rld");
        assert_eq!(tail_text(text.as_bytes(), 5), "örld");
        assert_eq!(tail_text(b"", 10), "");
        assert_eq!(tail_text(b"abc", 0), "");
    }

    #[tokio::test]
    async fn cancel_token_wakes_every_waiter() {
        let token = CancelToken::new();
        assert!(!token.is_cancelled());
        let waiter = {
            let token = token.clone();
            tokio::spawn(async move { token.cancelled().await })
        };
        token.clone().cancel();
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("UNWRAP: woken")
            .expect("UNWRAP: no panic");
        assert!(token.is_cancelled());
        token.cancelled().await; // already cancelled: at once
    }

    #[test]
    fn failures_read_well() {
        assert_eq!(StepFailure::ExitCode(3).to_string(), "exited with code 3");
        assert_eq!(
            StepFailure::Signal(Signal::KILL).to_string(),
            "killed by signal SIGKILL"
        );
        assert_eq!(
            StepFailure::TimedOut(Duration::from_millis(1500)).to_string(),
            "timed out after 1.5s"
        );
    }
}
