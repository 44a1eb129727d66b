//! Pipelines: a DAG of commands with `after` dependencies, `allow_failure`, timeouts and cancellation.
//!
//! # Brief overview
//!
//! - A [`PipelineSpec`] is what a pipeline file (`[[step]]` tables, see SPEC "Pipeline files") or a
//!   `POST /pipelines` body says: [`StepSpec`]s with a name, an argv, the steps they run `after`,
//!   `allow_failure`, a `timeout`, a `dir` and `env`. Parse it with [`PipelineSpec::from_toml_str`],
//!   [`PipelineSpec::from_json`] or [`PipelineSpec::load`]; unknown keys are errors.
//! - [`Pipeline::new`] validates it before anything runs and reports *every* problem at once in a
//!   [`ValidationError`]: no steps, empty or duplicate names, empty commands, unknown or self
//!   dependencies, cycles (named: `a -> b -> c -> a`), a parallelism of 0.
//! - A [`Runner`] starts a `Pipeline` and returns a [`PipelineRun`] handle at once: [`snapshot`](
//!   PipelineRun::snapshot) for live per-step status, [`wait`](PipelineRun::wait) for the
//!   [`PipelineResult`], [`cancel`](PipelineRun::cancel). Progress also arrives as [`PipelineEvent`]s on
//!   an unbounded channel given to [`Runner::events`].
//! - The runner decides *when* a step runs; a [`StepLauncher`] decides *how*. [`DirectLauncher`] spawns
//!   with corral-proc; the daemon plugs in a launcher that also records each step as a managed process.
//!
//! # Scheduling model
//!
//! There is one scheduler; the three [`Mode`]s are settings of it.
//!
//! - **`dag`** (the default): a step starts as soon as all its `after` steps are done, not in waves. When
//!   several steps are ready at once they start in declaration order, as long as fewer than
//!   `parallelism` steps are running (no cap if it is not given).
//! - **`parallel`**: the same as `dag`. `after` is still honoured; with no `after` at all, every step
//!   starts at once (within the cap).
//! - **`sequential`**: `dag` with a cap of 1, so steps run one at a time in declaration order (a step
//!   declared before one of its `after` steps waits for it), and a required failure skips *every* step
//!   not yet started rather than only its dependents.
//!
//! # Failure, timeout, cancellation
//!
//! - A step that fails (non-zero exit, killed by a signal, timed out, could not start) without
//!   `allow_failure` fails the pipeline, and all its transitive dependents are `skipped` with a reason
//!   naming it. Independent branches keep running to their end.
//! - With `allow_failure = true` a failed step counts as done: its dependents run and the pipeline can
//!   still succeed. It is still reported as `failed`.
//! - A step's `timeout` stops its whole process tree gracefully (`TERM`, the runner's
//!   [`grace`](Runner::grace), `KILL`) and fails it as timed out.
//! - Cancelling (a [`CancelToken`], reachable from the run or given to the runner) stops running steps
//!   gracefully and marks them `cancelled`, and marks every step not started `cancelled` too. A cancelled
//!   run never succeeds.
//! - A step ends only when its process tree is gone, so when [`PipelineRun::wait`] returns, nothing the
//!   pipeline started is left running.
//!
//! # Example
//!
//! ```
//! use corral_core::pipeline::{DirectLauncher, Pipeline, PipelineSpec, Runner, StepStatus};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = PipelineSpec::from_toml_str(
//!     r#"
//!     [[step]]
//!     name = "fetch"
//!     command = ["true"]
//!
//!     [[step]]
//!     name = "lint"
//!     command = ["false"]
//!     allow_failure = true
//!
//!     [[step]]
//!     name = "build"
//!     command = ["sh", "-c", "echo built"]
//!     after = ["fetch", "lint"]
//!     timeout = "10m"
//!
//!     [[step]]
//!     name = "test"
//!     command = ["false"]
//!     after = ["build"]
//!
//!     [[step]]
//!     name = "deploy"
//!     command = ["true"]
//!     after = ["test"]
//!     "#,
//! )?;
//! let pipeline = Pipeline::new(spec)?; // all problems at once, before anything runs
//! let result = Runner::new(DirectLauncher::new()).run(pipeline).await;
//!
//! let status = |name| result.step(name).map(|step| step.status);
//! assert_eq!(status("lint"), Some(StepStatus::Failed)); // allowed to fail: build still runs
//! assert_eq!(status("build"), Some(StepStatus::Passed));
//! assert_eq!(result.step("build").map(|step| step.output_tail.as_str()), Some("built\n"));
//! assert_eq!(status("test"), Some(StepStatus::Failed));
//! assert_eq!(status("deploy"), Some(StepStatus::Skipped)); // after a required failure
//! assert!(!result.success);
//! assert_eq!((result.passed, result.failed, result.skipped), (2, 2, 1));
//! # Ok(())
//! # }
//! ```

mod launch;
mod run;
mod spec;

pub use launch::{
    CancelToken, DirectLauncher, LaunchFuture, StepContext, StepEnd, StepFailure, StepLauncher, StepRun,
    DEFAULT_TAIL_BYTES,
};
pub use run::{PipelineEvent, PipelineResult, PipelineRun, Runner, StepResult, StepStatus, DEFAULT_STEP_GRACE};
pub use spec::{Issue, Mode, Pipeline, PipelineSpec, SpecError, StepSpec, ValidationError};
