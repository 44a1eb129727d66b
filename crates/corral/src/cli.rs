//! The command line: every subcommand, its flags and help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// corral: a process supervisor and durable job runner.
///
/// Start the daemon with `corral daemon`; every other command talks to it over its Unix socket (or
/// `--url` with `--token` over TCP).
#[derive(Debug, Parser)]
#[command(name = "corral", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Daemon socket [default: <state dir>/corral.sock].
    #[arg(long, global = true, env = "CORRAL_SOCKET", value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Daemon URL over TCP, e.g. http://127.0.0.1:7070 (needs --token).
    #[arg(long, global = true, env = "CORRAL_URL", value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Bearer token for --url.
    #[arg(
        long,
        global = true,
        env = "CORRAL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Internal: the keeper process the daemon starts (parents every child so they outlive the daemon).
    #[command(hide = true)]
    Keeper,
    /// Run the daemon in the foreground (SIGTERM or Ctrl-C stops it).
    Daemon(DaemonArgs),
    /// Daemon health and process counts.
    Status,
    /// Run a managed process: stream its output, forward Ctrl-C as a stop, exit with its exit code.
    Run(RunArgs),
    /// List processes.
    Ps(PsArgs),
    /// Show a process's output (`-f` follows until it exits).
    Logs(LogsArgs),
    /// Stop a process and its whole group: TERM, grace, KILL.
    Stop(StopArgs),
    /// Send a signal to a process.
    Signal(SignalArgs),
    /// Interrupt every live process in a scope (by id, labels, source): identity-checked graceful stop.
    Interrupt(InterruptArgs),
    /// List the daemons running on this machine.
    Daemons,
    /// Pipelines of commands with dependencies.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// List the allowlisted tool commands (and tool files that failed to load).
    Tools,
    /// Run an allowlisted tool command as a durable job: `corral exec docker restart container=web`.
    Exec {
        /// Tool name.
        tool: String,
        /// Command name.
        command: String,
        /// Args as NAME=VALUE (each value reaches the program as exactly one argument).
        #[arg(value_name = "NAME=VALUE", value_parser = parse_key_value)]
        args: Vec<(String, String)>,
        /// Wait for the job, print its output and exit with its exit code.
        #[arg(long)]
        wait: bool,
    },
    /// Show an exec job (`--wait` waits for it to finish and exits with its exit code).
    Job {
        /// Job id.
        id: String,
        /// Wait until it has finished.
        #[arg(long)]
        wait: bool,
    },
    /// Durable tasks: submitted once, run once, resumed after a crash.
    #[command(subcommand)]
    Task(TaskCommand),
}

/// `corral task ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// Submit a task. With --id the submit is idempotent: the same id never runs twice (unless it failed).
    Submit {
        /// Task type: `process` ({"command": [...], "dir"?, "env"?, "timeout"?}) or `pipeline` (a pipeline spec).
        #[arg(value_name = "TYPE")]
        task_type: String,
        /// The task's id, a UUID [default: a new one].
        #[arg(long)]
        id: Option<String>,
        /// Params as JSON, or @FILE to read them from a file.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        params: String,
        /// Wait until the task has finished; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// List tasks, newest first.
    Ls {
        /// Only tasks with this status (queued, running, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only tasks of this type.
        #[arg(long = "type", value_name = "TYPE")]
        task_type: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one task.
    Get {
        /// Task id.
        id: String,
        /// Wait until it has finished; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Remove a task: a running one is stopped first (its process tree too). It never comes back.
    Rm {
        /// Task id.
        id: String,
    },
}

/// `corral daemon`.
#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// Config file [default: $CORRAL_CONFIG, else $XDG_CONFIG_HOME/corral/corral.toml if present].
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// State directory [default: $CORRAL_STATE_DIR, else `state_dir` in the config, else $XDG_STATE_HOME/corral].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

/// `corral run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Owner label, repeatable: --label session=abc.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) labels: Vec<(String, String)>,
    /// Environment variable for the process, repeatable: --env RUST_LOG=debug.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub(crate) env: Vec<(String, String)>,
    /// Wall-clock limit, e.g. 10s or 5m: then the process is stopped and fails.
    #[arg(long, value_name = "DURATION")]
    pub(crate) timeout: Option<String>,
    /// Time between TERM and KILL when stopping (on timeout, stop, interrupt, daemon shutdown) [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub(crate) grace: Option<String>,
    /// Working directory [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Forward this command's stdin to the process; its end (EOF, Ctrl-D) closes the process's stdin.
    /// Without it the process reads nothing (/dev/null), so `corral run` in a `while read` loop does not
    /// eat the loop's input.
    #[arg(short = 'i', long)]
    pub(crate) stdin: bool,
    /// The command and its arguments (after --).
    #[arg(required = true, last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

/// `corral ps`.
#[derive(Debug, Args)]
pub(crate) struct PsArgs {
    /// Only processes with this label, repeatable (all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) labels: Vec<(String, String)>,
    /// Only processes in this state (running, completed, failed, interrupted, stale, ...).
    #[arg(long, value_name = "STATE")]
    pub(crate) state: Option<String>,
    /// At most this many, newest first.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<usize>,
}

/// `corral logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Process id.
    pub(crate) id: String,
    /// Follow: keep printing new output until the process exits.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only the last N lines of what was captured.
    #[arg(long, value_name = "N")]
    pub(crate) tail: Option<usize>,
}

/// `corral stop`.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// Process id.
    pub(crate) id: String,
    /// Time between TERM and KILL [default: the grace the process was started with, else 10s].
    #[arg(long, value_name = "DURATION")]
    pub(crate) grace: Option<String>,
}

/// `corral interrupt`.
#[derive(Debug, Args)]
pub(crate) struct InterruptArgs {
    /// Only this process.
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,
    /// Processes carrying this label, repeatable (all must match): --label session=abc.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) labels: Vec<(String, String)>,
    /// Processes from this source: adhoc, exec, task, pipeline, service, hook.
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// Why, recorded with each interrupted process.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Time between TERM and KILL [default: each process's own grace, else 10s].
    #[arg(long, value_name = "DURATION")]
    pub(crate) grace: Option<String>,
    /// Return only once every interrupted process is gone.
    #[arg(long)]
    pub(crate) wait: bool,
}

/// `corral signal`.
#[derive(Debug, Args)]
pub(crate) struct SignalArgs {
    /// Process id.
    pub(crate) id: String,
    /// Signal name or number: TERM, HUP, USR1, 9, ...
    pub(crate) signal: String,
}

/// `corral pipeline ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PipelineCommand {
    /// Run a pipeline file (TOML with [[step]] tables), show live progress, exit 1 if a required step failed.
    Run(PipelineRunArgs),
    /// Show a pipeline's per-step status.
    Get {
        /// Pipeline id.
        id: String,
    },
}

/// `corral pipeline run`.
#[derive(Debug, Args)]
pub(crate) struct PipelineRunArgs {
    /// The pipeline file.
    pub(crate) file: PathBuf,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
