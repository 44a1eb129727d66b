//! corral-proc: spawn, capture and stop whole process trees.
//!
//! This is corral's process core. Every job, task, pipeline step and service that corral runs starts
//! here. It knows nothing about tasks, SQL or HTTP.
//!
//! # Brief overview
//!
//! - A [`Command`] says what to run: an argv (never a shell), working directory, environment, stdin,
//!   where output goes, timeout and grace.
//! - [`Command::spawn`] starts it in its own process group and returns a [`Process`]: a cloneable handle
//!   on a supervisor task that alone reaps the child and signals its group (see the `process` module's
//!   theory of operation).
//! - Output is captured per stream into a bounded [`RingBuffer`] (newest bytes kept, drops counted), cut
//!   into [`Line`]s for [`ProcessEvent`]s, and optionally appended to a [`LogFile`].
//! - [`Process::shutdown`] sends `TERM` to the group, waits the grace, sends `KILL`, and returns only when
//!   no member of the group is left. [`Process::wait`] returns the [`Finished`] state.
//! - A [`ProcessIdentity`] (pid + kernel start ticks + boot id) tells later whether a pid still names the
//!   same process; [`Pidfd`] signals it without a reuse race.
//! - [`Registry`] manages many processes; [`Program`] runs a helper found in `PATH`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use corral_proc::{Command, Outcome, Stream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let process = Command::new(["sh", "-c", "echo hello; exit 3"])
//!     .timeout(Duration::from_secs(30))
//!     .spawn()?;
//! let finished = process.wait().await;
//! assert_eq!(finished.exit_code(), Some(3));
//! assert!(matches!(finished.outcome, Outcome::Failed(_)));
//! let stdout = process.output(Stream::Stdout).expect("stdout is captured by default");
//! assert_eq!(stdout.to_string_lossy(), "hello\n");
//!
//! // A tree that ignores TERM is still gone, grandchildren included, when shutdown returns.
//! let tree = Command::new(["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"]).spawn()?;
//! let finished = tree.shutdown(Duration::from_millis(200)).await;
//! assert_eq!(finished.outcome, Outcome::Interrupted);
//! # Ok(())
//! # }
//! ```

mod command;
mod error;
mod event;
mod group;
mod identity;
pub mod keeper;
mod limits;
mod lines;
mod output;
mod process;
mod program;
pub mod reaper;
mod registry;
mod ring;
mod signal;

pub use command::{
    Command, ExitHook, Isolation, Leftovers, OutputMode, StdinMode, DEFAULT_DRAIN, DEFAULT_GRACE, DEFAULT_LINE_MAX,
    DEFAULT_RING_SIZE,
};
pub use error::{ProcessError, SpawnError};
pub use event::{EventKind, Events, ProcessEvent, ProcessId, Received, Stream};
pub use group::{group_has_live_members, signal_group};
pub use identity::{boot_id, parse_stat, read_stat, IdentityError, Liveness, Pidfd, ProcStat, ProcessIdentity};
pub use limits::{raise_open_files_limit, OPEN_FILES_TARGET};
pub use lines::{Line, LineEnd, LineSplitter};
pub use output::LogFile;
pub use process::{
    CapturedOutput, Exit, Failure, Finished, Follow, Outcome, Process, State, Status, LOST_BEFORE_ADOPTION,
};
pub use program::{find_in_path, Program, ProgramNotFound, ProgramOutput};
pub use registry::{Registry, RegistryError};
pub use ring::RingBuffer;
pub use signal::{Signal, UnknownSignal};
