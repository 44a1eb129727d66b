//! The process record: the durable ownership record of one process the daemon started.
//!
//! A record is inserted `pending` before the spawn, becomes `running` once the process exists
//! ([`ProcessStart`]), may pass through `interrupting` while a stop is under way, and ends in exactly one
//! terminal state ([`ProcessEnd`]). A terminal state is final: the store never leaves it.
//!
//! ```text
//! pending ──► running ──► interrupting
//!    │           │             │
//!    └───────────┴─────────────┴──► interrupted | completed | failed | stale   (once, by finish_process)
//! ```
//!
//! The store keeps what the caller gives it; it does not know what a pid or a signal is. Times are unix
//! milliseconds supplied by the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The lifecycle state of a process record.
///
/// The order of the variants (used by `Ord`) is the lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProcessState {
    /// Recorded, not spawned yet.
    Pending,
    /// Spawned; pid, process group and identity are known.
    Running,
    /// A stop was requested and is in progress.
    Interrupting,
    /// Ended because it was stopped on request. Terminal.
    Interrupted,
    /// Ended on its own with success. Terminal.
    Completed,
    /// Ended on its own with a failure, timed out, or never started. Terminal.
    Failed,
    /// Found after a restart with no live process behind it (or a reused pid): its end is unknown. Terminal.
    Stale,
}

impl ProcessState {
    /// Every state, in lifecycle order.
    pub const ALL: [ProcessState; 7] = [
        Self::Pending,
        Self::Running,
        Self::Interrupting,
        Self::Interrupted,
        Self::Completed,
        Self::Failed,
        Self::Stale,
    ];

    /// The live states: a process may exist behind the record.
    pub const LIVE: [ProcessState; 3] = [Self::Pending, Self::Running, Self::Interrupting];

    /// The terminal states: the record is final.
    pub const TERMINAL: [ProcessState; 4] = [Self::Interrupted, Self::Completed, Self::Failed, Self::Stale];

    /// The lower-case name, as stored and as shown to users.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Interrupting => "interrupting",
            Self::Interrupted => "interrupted",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Stale => "stale",
        }
    }

    /// True for `interrupted`, `completed`, `failed` and `stale`: the record will not change again.
    pub const fn is_terminal(self) -> bool {
        !self.is_live()
    }

    /// True for `pending`, `running` and `interrupting`: a process may exist behind the record.
    pub const fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Interrupting)
    }
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProcessState {
    type Err = ParseProcessStateError;

    /// Parses the lower-case name (`"running"`); anything else is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseProcessStateError { input: s.to_owned() })
    }
}

/// The error of parsing a [`ProcessState`] from a string that names no state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown process state {input:?}; expected one of pending, running, interrupting, interrupted, completed, failed, stale"
)]
pub struct ParseProcessStateError {
    /// The string that was not a state.
    pub input: String,
}

/// The durable record of one process: who owns it, what it runs, how to recognise it after a restart,
/// and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    /// Unique id, chosen by the caller (a UUID in practice). Not empty.
    pub id: String,
    /// What started it: `adhoc`, `exec`, `task`, `pipeline`, `service`, `hook`. Free text to the store.
    pub source: String,
    /// Owner labels (session, tool call, job id, …), used to scope listings and interrupts.
    /// Written once, at insert.
    pub labels: BTreeMap<String, String>,
    /// Process id of the leader, once started.
    pub pid: Option<u32>,
    /// Process group id, once started.
    pub pgid: Option<u32>,
    /// The leader's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), once started.
    pub start_ticks: Option<u64>,
    /// The kernel boot id the pid and start time belong to, once started.
    pub boot_id: Option<String>,
    /// The argument vector, already redacted by the caller.
    pub command: Vec<String>,
    /// The working directory, if one was set.
    pub dir: Option<String>,
    /// The lifecycle state.
    pub state: ProcessState,
    /// The exit code, if the leader exited normally.
    pub exit_code: Option<i32>,
    /// The name of the terminating signal (`"KILL"`), if the leader was killed by one.
    pub signal: Option<String>,
    /// Why it failed or was marked stale, for humans.
    pub error: Option<String>,
    /// When the record was created, unix milliseconds.
    pub created_at: i64,
    /// When the process was spawned, unix milliseconds.
    pub started_at: Option<i64>,
    /// When the record reached its terminal state, unix milliseconds.
    pub ended_at: Option<i64>,
    /// The wall-clock limit it was started with, in milliseconds, if any: a daemon that re-attaches it after
    /// a restart still enforces it, counted from `started_at`.
    pub timeout_ms: Option<u64>,
    /// The grace between `TERM` and `KILL` it was started with, in milliseconds, if not the default.
    pub grace_ms: Option<u64>,
}

impl ProcessRecord {
    /// A `pending` record with no labels, no directory, and nothing known about the process yet.
    pub fn new(id: impl Into<String>, source: impl Into<String>, command: Vec<String>, created_at: i64) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            labels: BTreeMap::new(),
            pid: None,
            pgid: None,
            start_ticks: None,
            boot_id: None,
            command,
            dir: None,
            state: ProcessState::Pending,
            exit_code: None,
            signal: None,
            error: None,
            created_at,
            started_at: None,
            ended_at: None,
            timeout_ms: None,
            grace_ms: None,
        }
    }
}

/// What becomes known when a pending process is spawned: written by
/// [`Store::mark_process_started`](crate::Store::mark_process_started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStart {
    /// Process id of the leader.
    pub pid: u32,
    /// Process group id.
    pub pgid: u32,
    /// The leader's start time in clock ticks since boot, if it could be read.
    pub start_ticks: Option<u64>,
    /// The kernel boot id, if it could be read.
    pub boot_id: Option<String>,
    /// When the process was spawned, unix milliseconds.
    pub started_at: i64,
}

/// How a process ended: written once by [`Store::finish_process`](crate::Store::finish_process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEnd {
    /// The terminal state. Must be terminal.
    pub state: ProcessState,
    /// The exit code, if the leader exited normally.
    pub exit_code: Option<i32>,
    /// The name of the terminating signal, if any.
    pub signal: Option<String>,
    /// Why it failed, for humans.
    pub error: Option<String>,
    /// When it ended, unix milliseconds.
    pub ended_at: i64,
}

/// Which records [`Store::list_processes`](crate::Store::list_processes) returns. The default matches every
/// record, without a limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFilter {
    /// The record must carry every one of these labels with exactly this value.
    pub labels: BTreeMap<String, String>,
    /// The record must be in one of these states; empty means any state.
    pub states: Vec<ProcessState>,
    /// The record must have this source.
    pub source: Option<String>,
    /// At most this many records (the newest).
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in ProcessState::ALL {
            assert_eq!(state.as_str().parse::<ProcessState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
            assert_ne!(state.is_live(), state.is_terminal());
        }
        let err = "Running"
            .parse::<ProcessState>()
            .expect_err("UNWRAP: names are lower-case");
        assert_eq!(err.input, "Running");
        assert!("".parse::<ProcessState>().is_err());
    }

    #[test]
    fn live_and_terminal_partition_all_states() {
        let live: Vec<_> = ProcessState::ALL.into_iter().filter(|s| s.is_live()).collect();
        let terminal: Vec<_> = ProcessState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(live, ProcessState::LIVE);
        assert_eq!(terminal, ProcessState::TERMINAL);
        let names: Vec<_> = ProcessState::TERMINAL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["interrupted", "completed", "failed", "stale"]);
    }
}
