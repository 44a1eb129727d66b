//! corral durable task benchmark: `POST /tasks` of a `process` task that runs `true`, over the Unix socket,
//! with 1 and 16 concurrent clients; then a crash check of what was acknowledged.
//!
//! Run with `cargo bench -p corral --bench tasks`. What each number means is in `bench/README.md` at the
//! repository root. Settings, from the environment:
//!
//! - `CORRAL_BENCH_SECS` (default 3): seconds each variant runs in each round.
//! - `CORRAL_BENCH_ROUNDS` (default 3): rounds; the order alternates from round to round and the median
//!   round is reported.
//!
//! The benchmark starts one fresh `corral daemon` on a temporary state directory, isolated from the user's
//! configuration. Every client owns one persistent HTTP/1.1 connection and sends its requests in a closed
//! loop. A submit is acknowledged (201) only after its task row is committed, and the daemon then runs the
//! task in the background, so the submit load includes running the tasks: the daemon has no task type whose
//! run is free and no way to hold submitted tasks back, so a submit-only variant is not possible without
//! code changes. As a reference without a write and without a run, the benchmark also submits one known id
//! again and again (200, the existing record). After each durable variant it waits until every task has
//! ended and checks that the store holds exactly one task per 201 answer. At the end it kills the daemon
//! with `SIGKILL` in the middle of a submit load, starts it again on the same state directory and checks
//! that every acknowledged task is there. The results go to stdout as Markdown; progress goes to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

mod common;
use common::*;

/// Concurrent clients of each variant, each with its own connection.
const CLIENTS: [usize; 2] = [1, 16];
/// The body of every durable submit: a new task (the daemon picks its id) that runs `true`.
const SUBMIT_BODY: &[u8] = br#"{"type": "process", "params": {"command": ["true"]}}"#;
/// The id of the reference variant: submitted once at the start, then again and again.
const KNOWN_ID: &str = "c0a11a1e-0000-4000-8000-00000000b0b0";
/// The body of the reference variant.
const KNOWN_BODY: &[u8] =
    br#"{"id": "c0a11a1e-0000-4000-8000-00000000b0b0", "type": "process", "params": {"command": ["true"]}}"#;
/// The daemon's config: keep every finished task, so that rows can be counted against answers (the default
/// `keep = 10000` is applied at every start, and the crash check restarts the daemon).
const CONFIG: &str = "[tasks]\nkeep = 1000000000\nretention = \"1000h\"\n";
/// Clients of the crash check.
const CRASH_CLIENTS: usize = 16;
/// How long the crash check's load runs before the daemon is killed.
const CRASH_AFTER: Duration = Duration::from_millis(700);
/// How long the daemon may take to answer `GET /ready` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the tasks of a load may take to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the daemon may take to exit after `SIGTERM` or `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the drain is polled (each poll is a `GET /metrics`, which reads the store).
const DRAIN_POLL: Duration = Duration::from_millis(25);

fn main() {
    exit_on_error(run());
}

// ---------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------

struct Settings {
    secs: f64,
    rounds: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let (secs, rounds) = secs_and_rounds(3.0, 3)?;
        Ok(Settings { secs, rounds })
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

// ---------------------------------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------------------------------

/// A `corral daemon` child process on its own state directory.
struct Daemon {
    child: Mutex<Child>,
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `corral daemon --config <dir>/corral.toml --state-dir <dir>/state`, isolated from the user's
    /// configuration and registry, with its log (stdout and stderr) in `<dir>/<log_name>`.
    fn start(dir: &Path, log_name: &str) -> Result<Daemon> {
        let state = dir.join("state");
        let config = dir.join("corral.toml");
        std::fs::write(&config, CONFIG).with_context(|| format!("cannot write {}", config.display()))?;
        let log = dir.join(log_name);
        let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state);
        isolate(&mut command, dir);
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("cannot start `corral daemon`")?;
        Ok(Daemon {
            pid: child.id(),
            child: Mutex::new(child),
            socket: state.join("corral.sock"),
            log,
        })
    }

    /// `Err` with the exit status and the end of the log if the daemon has exited.
    fn check_alive(&self) -> Result<()> {
        let status = self.child.lock().unwrap_or_else(PoisonError::into_inner).try_wait()?;
        match status {
            None => Ok(()),
            Some(status) => bail!(
                "the daemon (pid {}) died: {status}\n--- last lines of its log ({}) ---\n{}",
                self.pid,
                self.log.display(),
                log_tail(&self.log)
            ),
        }
    }

    /// Polls `GET /ready` until it answers 200; returns how long that took.
    async fn wait_ready(&self) -> Result<Duration> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok((StatusCode::OK, _)) = get(&self.socket, "/ready").await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "the daemon was not ready after {READY_TIMEOUT:?}\n--- last lines of its log ---\n{}",
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the daemon has exited; returns the status and how long that took from `start`.
    fn wait_exit(&self, start: Instant) -> Result<(ExitStatus, Duration)> {
        loop {
            if let Some(status) = self.child.lock().unwrap_or_else(PoisonError::into_inner).try_wait()? {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > STOP_TIMEOUT {
                bail!("the daemon did not exit within {STOP_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends `SIGTERM` and waits for the exit; returns the status and how long the shutdown took.
    fn stop(&self) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        terminate(self.pid)?;
        self.wait_exit(start)
    }

    /// `SIGKILL`: a crash, as far as the daemon's data is concerned. Waits for the exit.
    fn crash(&self) -> Result<ExitStatus> {
        let start = Instant::now();
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kill()
            .context("cannot kill the daemon")?;
        Ok(self.wait_exit(start)?.0)
    }
}

impl Drop for Daemon {
    /// On an early exit of the benchmark: `SIGTERM`, then `SIGKILL` if the daemon is still there.
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let _ = terminate(self.pid);
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------
// HTTP/1.1 over the Unix socket
// ---------------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------------
// What the daemon reports: GET /metrics
// ---------------------------------------------------------------------------------------------------

/// The parts of `GET /metrics` the benchmark reads.
#[derive(Clone, Default)]
struct Metrics {
    /// `corral_tasks{type,status}`: rows in the store, by status (all types together).
    tasks: BTreeMap<String, u64>,
    /// `corral_store_operation_seconds_count`: store calls so far (reads and writes).
    store_ops: u64,
    /// `corral_store_operation_seconds_sum`: time spent in store calls so far, waiting for its mutex included.
    store_seconds: f64,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("corral_tasks{") {
                let Some((labels, value)) = rest.split_once("} ") else {
                    continue;
                };
                let status = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("status=\""))
                    .and_then(|s| s.strip_suffix('"'))
                    .unwrap_or("?");
                *metrics.tasks.entry(status.to_owned()).or_default() += value.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(value) = line.strip_prefix("corral_store_operation_seconds_count ") {
                metrics.store_ops = value.trim().parse().unwrap_or(0);
            } else if let Some(value) = line.strip_prefix("corral_store_operation_seconds_sum ") {
                metrics.store_seconds = value.trim().parse().unwrap_or(0.0);
            }
        }
        metrics
    }

    /// Task rows of every status.
    fn rows(&self) -> u64 {
        self.tasks.values().sum()
    }

    /// Tasks not ended yet: queued or running.
    fn pending(&self) -> u64 {
        ["queued", "running"]
            .iter()
            .map(|s| self.tasks.get(*s).copied().unwrap_or(0))
            .sum()
    }

    fn statuses(&self) -> String {
        let parts: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

async fn metrics(socket: &Path) -> Result<Metrics> {
    let (status, body) = get(socket, "/metrics").await?;
    if status != StatusCode::OK {
        bail!("GET /metrics: {status}: {}", snippet(&body));
    }
    Ok(Metrics::parse(&String::from_utf8_lossy(&body)))
}

/// Polls `GET /metrics` until no task is queued or running; returns how long that took and the polls made.
async fn drain(daemon: &Daemon) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut polls = 0;
    loop {
        daemon.check_alive()?;
        let now = metrics(&daemon.socket).await?;
        polls += 1;
        if now.pending() == 0 {
            return Ok((start.elapsed(), polls));
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            bail!("tasks not ended {DRAIN_TIMEOUT:?} after the load: {}", now.statuses());
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `POST /tasks` of the known id again: 200 with the existing record, no write, no run.
    Known,
    /// `POST /tasks` of a new task: 201 once committed, then the daemon runs it.
    Submit,
}

impl Route {
    fn short(self) -> &'static str {
        match self {
            Route::Known => "known id",
            Route::Submit => "durable submit",
        }
    }

    fn request(self) -> Result<Request<Full<Bytes>>> {
        match self {
            Route::Known => daemon_request(Method::POST, "/tasks", Some(KNOWN_BODY)),
            Route::Submit => daemon_request(Method::POST, "/tasks", Some(SUBMIT_BODY)),
        }
    }

    /// The new task's id for a durable submit; `Err` (a message for the error count) unless the answer is
    /// the expected success.
    fn check(self, status: StatusCode, body: &[u8]) -> Result<Option<String>, String> {
        let expected = match self {
            Route::Known => StatusCode::OK,
            Route::Submit => StatusCode::CREATED,
        };
        if status != expected {
            return Err(format!("{status}: {}", snippet(body)));
        }
        let task: serde_json::Value =
            serde_json::from_slice(body).map_err(|err| format!("{status} with a body that is not JSON: {err}"))?;
        let field = |name: &str| task.get(name).and_then(|s| s.as_str()).unwrap_or("?").to_owned();
        match self {
            Route::Known => {
                if field("id") != KNOWN_ID {
                    return Err(format!("{status} for another id: {}", field("id")));
                }
                Ok(None)
            }
            Route::Submit => {
                // Acknowledged means committed: the answer is that row, `queued`, or already `running` when
                // the engine claimed it in the submit's own transaction (a type without a limit).
                if !matches!(field("status").as_str(), "queued" | "running") || field("type") != "process" {
                    return Err(format!(
                        "{status} with status {:?} and type {:?}, not \"queued\"/\"running\" and \"process\"",
                        field("status"),
                        field("type")
                    ));
                }
                Ok(Some(field("id")))
            }
        }
    }
}

/// What clients saw: successes with their latencies, and errors by message.
#[derive(Default)]
struct Tally {
    ok: u64,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    /// The ids of acknowledged new tasks, kept for the crash check only.
    ids: Vec<String>,
    /// Crash check only: clients that stopped at a broken connection (at most one request each in flight).
    cut_off: u64,
}

impl Tally {
    fn error(&mut self, message: String) {
        let key = if self.errors.len() < MAX_ERROR_KINDS || self.errors.contains_key(&message) {
            message
        } else {
            "(other messages)".to_owned()
        };
        *self.errors.entry(key).or_default() += 1;
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.latencies.extend(other.latencies);
        self.ids.extend(other.ids);
        self.cut_off += other.cut_off;
        for (message, count) in other.errors {
            for _ in 0..count {
                self.error(message.clone());
            }
        }
    }
}

/// How a client treats a broken connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Count it, open a new connection and go on; `Err` if the daemon died.
    Measure,
    /// The daemon is about to be killed: stop at the first broken connection, and keep the acknowledged ids.
    Crash,
}

/// One client: requests back to back on its own connection until `deadline`.
async fn client(daemon: Arc<Daemon>, route: Route, first: Sender, deadline: Instant, mode: Mode) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut sender = Some(first);
    while Instant::now() < deadline {
        let connection = match &mut sender {
            Some(connection) => connection,
            None => match connect_unix(&daemon.socket).await {
                Ok(connection) => sender.insert(connection),
                Err(err) => {
                    daemon.check_alive()?;
                    tally.error(format!("connect: {err:#}"));
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            },
        };
        let request = route.request()?;
        let started = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(connection, request)).await {
            Ok(Ok((status, body))) => {
                let latency = started.elapsed();
                match route.check(status, &body) {
                    Ok(id) => {
                        tally.ok += 1;
                        tally.latencies.push(latency);
                        if let (Mode::Crash, Some(id)) = (mode, id) {
                            tally.ids.push(id);
                        }
                    }
                    Err(message) => tally.error(message),
                }
            }
            Ok(Err(_)) if mode == Mode::Crash => {
                tally.cut_off += 1;
                return Ok(tally);
            }
            Ok(Err(err)) => {
                daemon.check_alive()?;
                tally.error(format!("transport: {err:#}"));
                sender = None;
            }
            Err(_) => {
                daemon.check_alive()?;
                tally.error(format!("no answer within {REQUEST_TIMEOUT:?}"));
                sender = None;
            }
        }
    }
    Ok(tally)
}

/// `clients` clients, each with a connection opened before the clock starts, for `duration`.
async fn load(
    daemon: Arc<Daemon>,
    route: Route,
    clients: usize,
    duration: Duration,
    mode: Mode,
) -> Result<(Tally, Duration)> {
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(connect_unix(&daemon.socket).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for sender in senders {
        tasks.spawn(client(daemon.clone(), route, sender, deadline, mode));
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        tally.merge(joined.context("a client task panicked")??);
    }
    Ok((tally, start.elapsed()))
}

// ---------------------------------------------------------------------------------------------------
// CPU time and memory, from /proc
// ---------------------------------------------------------------------------------------------------

/// CPU clock ticks from `/proc/<pid>/stat` and `/proc/stat`.
#[derive(Clone, Copy)]
struct CpuTicks {
    /// The daemon's own threads: utime + stime.
    daemon: u64,
    /// The daemon's reaped children: cutime + cstime.
    children: u64,
    /// This benchmark process: utime + stime.
    bench: u64,
    /// The whole machine, all CPUs: busy and total.
    machine_busy: u64,
    machine_total: u64,
    /// The daemon's `wchar` and `syscw` from `/proc/<pid>/io`: bytes passed to write-like calls (`pwrite` of
    /// WAL frames, sockets, logs) and the number of those calls.
    daemon_wchar: u64,
    daemon_syscw: u64,
}

/// `wchar` and `syscw` of a process.
fn process_io(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/io");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((field("wchar"), field("syscw")))
}

impl CpuTicks {
    fn now(daemon_pid: u32) -> Result<Self> {
        let (daemon, children) = process_ticks(&daemon_pid.to_string())?;
        let (bench, _) = process_ticks("self")?;
        let stat = std::fs::read_to_string("/proc/stat")?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
        let total: u64 = cpu.iter().sum();
        let (daemon_wchar, daemon_syscw) = process_io(daemon_pid)?;
        Ok(CpuTicks {
            daemon,
            children,
            bench,
            machine_busy: total - idle,
            machine_total: total,
            daemon_wchar,
            daemon_syscw,
        })
    }
}

/// CPU used during one variant (its load and, for durable submits, the drain after it).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    /// Microseconds of daemon CPU per successful request.
    daemon_us: f64,
    /// Microseconds of CPU of the daemon's reaped children per successful request.
    children_us: f64,
    /// Microseconds of this benchmark's CPU per successful request.
    bench_us: f64,
    /// Share of all CPUs of the machine that were busy, in percent.
    machine_busy_pct: f64,
    /// KiB the daemon passed to write-like system calls per successful request.
    write_kib: f64,
    /// Write-like system calls of the daemon per successful request.
    write_calls: f64,
}

impl CpuUse {
    fn between(before: CpuTicks, after: CpuTicks, requests: u64, tick_us: f64) -> Self {
        let per_request = |ticks: u64| ticks as f64 * tick_us / requests.max(1) as f64;
        let total = after.machine_total.saturating_sub(before.machine_total).max(1);
        CpuUse {
            daemon_us: per_request(after.daemon.saturating_sub(before.daemon)),
            children_us: per_request(after.children.saturating_sub(before.children)),
            bench_us: per_request(after.bench.saturating_sub(before.bench)),
            machine_busy_pct: after.machine_busy.saturating_sub(before.machine_busy) as f64 * 100.0 / total as f64,
            write_kib: after.daemon_wchar.saturating_sub(before.daemon_wchar) as f64 / 1024.0 / requests.max(1) as f64,
            write_calls: after.daemon_syscw.saturating_sub(before.daemon_syscw) as f64 / requests.max(1) as f64,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// One measurement
// ---------------------------------------------------------------------------------------------------

/// One variant in one round.
struct Sample {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: BTreeMap<String, u64>,
    cpu: CpuUse,
    /// Durable submits only: from the end of the load until no task was queued or running.
    drain_ms: f64,
    /// Store calls per successful request, the drain included and the benchmark's own `GET /metrics`
    /// calls left out.
    store_ops: f64,
    /// Milliseconds spent in store calls (waiting for its mutex included) per successful request.
    store_ms: f64,
}

/// The benchmark's state shared by every measurement.
struct Bench {
    rt: Runtime,
    daemon: Arc<Daemon>,
    tick_us: f64,
    /// Store calls one `GET /metrics` makes, measured at the start; subtracted from the store counts.
    metrics_ops: u64,
    /// Every 201 answer (warm-up and the known id's first submit included): the rows the store must hold.
    acknowledged: u64,
    /// After each durable variant: rows in the store minus acknowledged submits (should be 0).
    row_mismatches: Vec<String>,
}

impl Bench {
    fn metrics(&self) -> Result<Metrics> {
        self.rt.block_on(metrics(&self.daemon.socket))
    }

    fn measure(&mut self, route: Route, clients: usize, duration: Duration) -> Result<Sample> {
        self.daemon.check_alive()?;
        let metrics_before = self.metrics()?;
        let before = CpuTicks::now(self.daemon.pid)?;
        let (mut tally, elapsed) =
            self.rt
                .block_on(load(self.daemon.clone(), route, clients, duration, Mode::Measure))?;
        let (drain, polls) = if route == Route::Submit {
            self.acknowledged += tally.ok;
            self.rt.block_on(drain(&self.daemon))?
        } else {
            (Duration::ZERO, 0)
        };
        let after = CpuTicks::now(self.daemon.pid)?;
        let metrics_after = self.metrics()?;
        if route == Route::Submit && metrics_after.rows() != self.acknowledged {
            self.row_mismatches.push(format!(
                "after {} with {clients} clients: {} rows, {} acknowledged",
                route.short(),
                metrics_after.rows(),
                self.acknowledged
            ));
        }
        tally.latencies.sort_unstable();
        let errors = tally.error_count();
        if errors > 0 {
            eprintln!("  {} with {clients} clients: {errors} errors", route.short());
        }
        let ok = tally.ok.max(1) as f64;
        // The `GET /metrics` after the load and each drain poll read the store too.
        let own_ops = (polls + 1) * self.metrics_ops;
        let store_ops = metrics_after
            .store_ops
            .saturating_sub(metrics_before.store_ops + own_ops);
        Ok(Sample {
            rate: tally.ok as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile_ms(&tally.latencies, 50.0),
            p99_ms: percentile_ms(&tally.latencies, 99.0),
            max_ms: tally.latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
            errors: tally.errors,
            cpu: CpuUse::between(before, after, tally.ok, self.tick_us),
            drain_ms: drain.as_secs_f64() * 1e3,
            store_ops: store_ops as f64 / ok,
            store_ms: (metrics_after.store_seconds - metrics_before.store_seconds).max(0.0) * 1e3 / ok,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// The crash check
// ---------------------------------------------------------------------------------------------------

/// The state dir's lock right after the killed daemon was reaped.
struct LockAfterKill {
    /// How long after the reaping the lock could be taken (zero if at once).
    held_for: Duration,
    /// Processes that had the lock file open while it was still held: "pid (comm) state".
    holders: Vec<String>,
}

/// Processes other than this one that have `path` open, as "pid (comm) state".
fn holders(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let own = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == own || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
        {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let summary: Vec<&str> = stat.split_whitespace().skip(1).take(2).collect();
            found.push(format!("{name} {}", summary.join(" ")));
        }
    }
    found
}

/// Waits until the lock of the killed daemon's state dir can be taken (the kernel drops a `flock` when its
/// last holder is gone), then releases it again. Records who still held it meanwhile.
fn lock_after_kill(path: &Path) -> Result<LockAfterKill> {
    use rustix::fs::{flock, FlockOperation};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let start = Instant::now();
    let mut holders_seen: Vec<String> = Vec::new();
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                flock(&file, FlockOperation::Unlock).context("cannot unlock")?;
                return Ok(LockAfterKill {
                    held_for: start.elapsed(),
                    holders: holders_seen,
                });
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                for holder in holders(path) {
                    if !holders_seen.contains(&holder) {
                        holders_seen.push(holder);
                    }
                }
                if start.elapsed() > STOP_TIMEOUT {
                    bail!(
                        "{} still locked {STOP_TIMEOUT:?} after the daemon was killed; holders: {holders_seen:?}",
                        path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => return Err(std::io::Error::from(err)).context("flock"),
        }
    }
}

/// What the crash check found.
struct Crash {
    /// The state dir's lock after the kill.
    lock: LockAfterKill,
    /// 201 answers before the kill, during the crash load.
    acknowledged: u64,
    /// Clients whose connection broke (each had at most one submit in flight, answered or not).
    cut_off: u64,
    /// 201 answers before the crash load (all earlier variants): rows the store must hold anyway.
    acknowledged_before: u64,
    kill_status: ExitStatus,
    /// Task rows right after the restart, by status.
    after_restart: Metrics,
    /// Acknowledged ids of the crash load that `GET /tasks/{id}` did not find after the restart.
    missing: Vec<String>,
    ready_after: Duration,
    /// From ready until every recovered task had ended (at most: the acknowledged ids are looked up first).
    recovery_drain: Duration,
    /// Task rows at the end, by status.
    after_recovery: Metrics,
}

impl Crash {
    /// The rows the store may hold: every acknowledged submit, plus up to one unanswered one per client.
    fn bounds(&self) -> (u64, u64) {
        let low = self.acknowledged_before + self.acknowledged;
        (low, low + self.cut_off)
    }
}

/// Kills the daemon with `SIGKILL` during a durable submit load, starts it again on the same state dir and
/// checks that every acknowledged task is there. Returns the new daemon.
fn crash_check(bench: &mut Bench, dir: &Path) -> Result<Crash> {
    let daemon = bench.daemon.clone();
    let acknowledged_before = bench.acknowledged;
    let ((mut tally, _), kill_status) = bench.rt.block_on(async {
        let load = load(
            daemon.clone(),
            Route::Submit,
            CRASH_CLIENTS,
            Duration::from_secs(60),
            Mode::Crash,
        );
        let kill = async {
            tokio::time::sleep(CRASH_AFTER).await;
            daemon.crash()
        };
        let (load, kill) = tokio::join!(load, kill);
        Ok::<_, anyhow::Error>((load?, kill?))
    })?;
    eprintln!(
        "  killed the daemon after {} acknowledged submits; restarting ...",
        tally.ok
    );
    let lock = lock_after_kill(&dir.join("state").join("corral.lock"))?;
    let restarted = Arc::new(Daemon::start(dir, "daemon-after-crash.log")?);
    bench.daemon = restarted.clone();
    let ready_after = bench.rt.block_on(restarted.wait_ready())?;
    let ready_at = Instant::now();
    let after_restart = bench.metrics()?;
    let mut missing = Vec::new();
    let ids = std::mem::take(&mut tally.ids);
    bench.rt.block_on(async {
        let mut sender = connect_unix(&restarted.socket).await?;
        for id in ids {
            let (status, _) =
                exchange(&mut sender, daemon_request(Method::GET, &format!("/tasks/{id}"), None)?).await?;
            if status != StatusCode::OK {
                missing.push(id);
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    bench.rt.block_on(drain(&restarted))?;
    let recovery_drain = ready_at.elapsed();
    let after_recovery = bench.metrics()?;
    bench.acknowledged += tally.ok;
    Ok(Crash {
        lock,
        acknowledged: tally.ok,
        cut_off: tally.cut_off,
        acknowledged_before,
        kill_status,
        after_restart,
        missing,
        ready_after,
        recovery_drain,
        after_recovery,
    })
}

// ---------------------------------------------------------------------------------------------------
// Statistics and report
// ---------------------------------------------------------------------------------------------------

/// Name of one variant in the tables.
fn variant_name(route: Route, clients: usize) -> String {
    format!("{}, {}", route.short(), plural(clients, "client"))
}

/// The four variants: the known id before durable submits, fewer clients first.
fn variants() -> Vec<(Route, usize)> {
    [Route::Known, Route::Submit]
        .into_iter()
        .flat_map(|route| CLIENTS.map(|clients| (route, clients)))
        .collect()
}

/// Everything measured, by variant, one value per round.
struct Results {
    /// Indexed like [`variants`].
    samples: Vec<Vec<Sample>>,
    /// After each round: task rows, acknowledged submits, VmRSS and VmHWM (KiB).
    after_round: Vec<(u64, u64, u64, u64)>,
}

impl Results {
    fn values(&self, index: usize, value: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.samples[index].iter().map(value).collect()
    }
}

/// What the run found besides the per-round results: the daemon and the machine.
struct Run {
    settings: Settings,
    cpus: usize,
    kernel: String,
    load_start: String,
    load_end: String,
    pid: u32,
    ready_after: Duration,
    rss_idle_kib: u64,
    rss_end_kib: u64,
    hwm_end_kib: u64,
    /// Task rows by status before the crash check.
    before_crash: Metrics,
    acknowledged_before_crash: u64,
    row_mismatches: Vec<String>,
    crash: Crash,
    exit: ExitStatus,
    shutdown: Duration,
    log_lines: usize,
    log_problems: usize,
}

fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    let mut tmp = BenchDir::new("tasks")?;
    match measure_all(settings, &tmp.path) {
        Ok((run, results)) => {
            print!("{}", report(&run, &results)?);
            Ok(())
        }
        Err(err) => {
            tmp.keep = true;
            Err(err.context(format!(
                "the daemon's state dir and logs are kept in {}",
                tmp.path.display()
            )))
        }
    }
}

/// Starts the daemon in `dir`, warms up, runs every round and the crash check, and stops the daemon.
fn measure_all(settings: Settings, dir: &Path) -> Result<(Run, Results)> {
    let duration = settings.duration();
    let rounds = settings.rounds;
    let load_start = loadavg();

    eprintln!("starting the daemon in {} ...", dir.display());
    let daemon = Arc::new(Daemon::start(dir, "daemon.log")?);
    // The load generator: one thread, so that it takes at most one CPU from the daemon.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ready_after = rt.block_on(daemon.wait_ready())?;
    let (rss_idle_kib, _) = memory_kib(daemon.pid)?;
    let mut bench = Bench {
        rt,
        daemon: daemon.clone(),
        tick_us: tick_us(),
        metrics_ops: 0,
        acknowledged: 0,
        row_mismatches: Vec::new(),
    };
    // Store calls of one `GET /metrics`, on the idle daemon.
    let first = bench.metrics()?;
    let second = bench.metrics()?;
    bench.metrics_ops = second.store_ops.saturating_sub(first.store_ops);

    // The known id: submitted once, so that every later submit of it finds it.
    let (status, body) = bench.rt.block_on(async {
        let mut sender = connect_unix(&daemon.socket).await?;
        exchange(&mut sender, daemon_request(Method::POST, "/tasks", Some(KNOWN_BODY))?).await
    })?;
    if status != StatusCode::CREATED {
        bail!("the first submit of the known id answered {status}: {}", snippet(&body));
    }
    bench.acknowledged += 1;

    // Warm-up: the daemon's threads and store, the page cache.
    eprintln!("warm-up ...");
    let variants = variants();
    for &(route, clients) in &variants {
        bench.measure(route, clients, WARM_UP)?;
    }

    let mut results = Results {
        samples: variants.iter().map(|_| Vec::new()).collect(),
        after_round: Vec::new(),
    };
    for round in 0..rounds {
        // Alternate: fewer clients first, then more clients first. The known id always runs before durable
        // submits, and every durable variant waits until its tasks have ended.
        let forward = round % 2 == 0;
        eprintln!(
            "round {}/{rounds} ({}) ...",
            round + 1,
            if forward {
                "known id 1 16, submit 1 16"
            } else {
                "known id 16 1, submit 16 1"
            }
        );
        let order: Vec<usize> = [Route::Known, Route::Submit]
            .into_iter()
            .flat_map(|route| {
                let mut of_route: Vec<usize> = (0..variants.len()).filter(|&v| variants[v].0 == route).collect();
                if !forward {
                    of_route.reverse();
                }
                of_route
            })
            .collect();
        for &v in &order {
            let (route, clients) = variants[v];
            let sample = bench.measure(route, clients, duration)?;
            results.samples[v].push(sample);
        }
        let rows = bench.metrics()?.rows();
        let (rss, hwm) = memory_kib(daemon.pid)?;
        results.after_round.push((rows, bench.acknowledged, rss, hwm));
    }

    let before_crash = bench.metrics()?;
    let acknowledged_before_crash = bench.acknowledged;
    let (rss_end_kib, hwm_end_kib) = memory_kib(daemon.pid)?;
    eprintln!("crash check: SIGKILL during {CRASH_CLIENTS} clients of durable submits ...");
    let crash = crash_check(&mut bench, dir)?;

    eprintln!("stopping the daemon ...");
    let (exit, shutdown) = bench.daemon.stop()?;
    let mut log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    log.push_str(&std::fs::read_to_string(&bench.daemon.log).unwrap_or_default());
    let run = Run {
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_start,
        load_end: loadavg(),
        pid: daemon.pid,
        ready_after,
        rss_idle_kib,
        rss_end_kib,
        hwm_end_kib,
        before_crash,
        acknowledged_before_crash,
        row_mismatches: std::mem::take(&mut bench.row_mismatches),
        crash,
        exit,
        shutdown,
        log_lines: log.lines().count(),
        log_problems: log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count(),
        settings,
    };
    Ok((run, results))
}

/// The Markdown report, ending with the one-line summary.
fn report(run: &Run, results: &Results) -> Result<String, std::fmt::Error> {
    let variants = variants();
    let cpus = run.cpus;
    let mut out = String::new();
    writeln!(out, "# corral durable task submit benchmark\n")?;
    writeln!(
        out,
        "- machine: {cpus} CPUs, Linux {}; load average {} at start, {} at end",
        run.kernel, run.load_start, run.load_end
    )?;
    writeln!(
        out,
        "- settings: {} s per variant per round, {} rounds (order alternates); clients {CLIENTS:?}, each with one \
         keep-alive HTTP/1.1 connection over the Unix socket, closed loop, on a current-thread tokio runtime",
        run.settings.secs, run.settings.rounds
    )?;
    writeln!(
        out,
        "- daemon: `{}` (pid {}), fresh state dir; ready {:.0} ms after spawn",
        env!("CARGO_BIN_EXE_corral"),
        run.pid,
        run.ready_after.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "- durable submit: `POST /tasks` `{}`; 201 once the row is committed (one SQLite transaction, WAL, \
         synchronous=NORMAL); the daemon then runs the task at once, in the background",
        String::from_utf8_lossy(SUBMIT_BODY)
    )?;
    writeln!(
        out,
        "- submit-only is not measurable without code changes: the daemon's task types (`process`, `pipeline`) \
         all start processes and every submitted task is dispatched at once, so the durable numbers include \
         running `true`"
    )?;
    writeln!(
        out,
        "- known id: `POST /tasks` of `{KNOWN_ID}` again and again: 200 with the existing row (a read in an \
         IMMEDIATE transaction), no write, no run"
    )?;
    writeln!(
        out,
        "- bold = median over rounds; ratios are per round (paired), then the median"
    )?;

    writeln!(out, "\n## Throughput\n")?;
    writeln!(out, "| variant | per second | min | max | rounds | errors |")?;
    writeln!(out, "|---|---:|---:|---:|---|---:|")?;
    let mut all_errors: Vec<(String, &str, u64)> = Vec::new();
    for (v, &(route, clients)) in variants.iter().enumerate() {
        let rates = results.values(v, |s| s.rate);
        let (lo, hi) = min_max(&rates);
        let errors: u64 = results.samples[v].iter().map(|s| s.errors.values().sum::<u64>()).sum();
        writeln!(
            out,
            "| {} | **{:.0}** | {lo:.0} | {hi:.0} | {} | {errors} |",
            variant_name(route, clients),
            median(&rates),
            list(&rates, 0)
        )?;
        for sample in &results.samples[v] {
            for (message, count) in &sample.errors {
                all_errors.push((variant_name(route, clients), message, *count));
            }
        }
    }

    writeln!(out, "\n## Latency (ms, client side, successful requests only)\n")?;
    writeln!(out, "| variant | p50 | p99 | max | p50 per round | p99 per round |")?;
    writeln!(out, "|---|---:|---:|---:|---|---|")?;
    for (v, &(route, clients)) in variants.iter().enumerate() {
        let p50 = results.values(v, |s| s.p50_ms);
        let p99 = results.values(v, |s| s.p99_ms);
        writeln!(
            out,
            "| {} | **{:.2}** | **{:.2}** | {:.2} | {} | {} |",
            variant_name(route, clients),
            median(&p50),
            median(&p99),
            median(&results.values(v, |s| s.max_ms)),
            list(&p50, 2),
            list(&p99, 2)
        )?;
    }

    writeln!(out, "\n## Ratios\n")?;
    writeln!(out, "| ratio | median | min | max | rounds |")?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    let ratio_row = |out: &mut String, name: &str, values: &[f64]| -> std::fmt::Result {
        let (lo, hi) = min_max(values);
        writeln!(
            out,
            "| {name} | **{:.2}x** | {lo:.2}x | {hi:.2}x | {} |",
            median(values),
            list(values, 2)
        )
    };
    let index = |route: Route, clients: usize| variants.iter().position(|&v| v == (route, clients));
    let rates = |route: Route, clients: usize| index(route, clients).map(|v| results.values(v, |s| s.rate));
    let mut summary_ratios: Vec<(String, f64)> = Vec::new();
    for route in [Route::Submit, Route::Known] {
        if let (Some(many), Some(one)) = (rates(route, CLIENTS[1]), rates(route, CLIENTS[0])) {
            let values = ratios(&many, &one);
            ratio_row(
                &mut out,
                &format!("{} {} clients / 1 client", route.short(), CLIENTS[1]),
                &values,
            )?;
            if route == Route::Submit {
                summary_ratios.push((format!("{}c/{}c", CLIENTS[1], CLIENTS[0]), median(&values)));
            }
        }
    }
    for &clients in &CLIENTS {
        if let (Some(durable), Some(known)) = (rates(Route::Submit, clients), rates(Route::Known, clients)) {
            let values = ratios(&durable, &known);
            ratio_row(
                &mut out,
                &format!("durable submit / known id, {}", plural(clients, "client")),
                &values,
            )?;
            summary_ratios.push((format!("durable/known {clients}c"), median(&values)));
        }
    }

    writeln!(
        out,
        "\n## Where the time goes (per successful request, median over rounds; durable submits include the run \
         of their task and the drain after the load)\n"
    )?;
    writeln!(
        out,
        "| variant | daemon CPU (µs) | its reaped children (µs) | bench client (µs) | machine busy (all {cpus} CPUs) \
         | store calls | time in store calls (ms) | daemon writes (KiB) | daemon write calls | drain after load (ms) \
         | daemon CPU per round |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for (v, &(route, clients)) in variants.iter().enumerate() {
        let drain = if route == Route::Submit {
            format!("{:.0}", median(&results.values(v, |s| s.drain_ms)))
        } else {
            "-".to_owned()
        };
        let daemon_us = results.values(v, |s| s.cpu.daemon_us);
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} % | {:.1} | {:.3} | {:.1} | {:.1} | {drain} | {} |",
            variant_name(route, clients),
            median(&daemon_us),
            median(&results.values(v, |s| s.cpu.children_us)),
            median(&results.values(v, |s| s.cpu.bench_us)),
            median(&results.values(v, |s| s.cpu.machine_busy_pct)),
            median(&results.values(v, |s| s.store_ops)),
            median(&results.values(v, |s| s.store_ms)),
            median(&results.values(v, |s| s.cpu.write_kib)),
            median(&results.values(v, |s| s.cpu.write_calls)),
            list(&daemon_us, 0),
        )?;
    }

    writeln!(out, "\n## Durability\n")?;
    writeln!(out, "| after | task rows | 201 answers | VmRSS (MiB) | VmHWM (MiB) |")?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    writeln!(out, "| start-up (ready) | 0 | 0 | {:.1} | - |", mib(run.rss_idle_kib))?;
    for (round, (rows, acknowledged, rss, hwm)) in results.after_round.iter().enumerate() {
        writeln!(
            out,
            "| round {} | {rows} | {acknowledged} | {:.1} | {:.1} |",
            round + 1,
            mib(*rss),
            mib(*hwm)
        )?;
    }
    let rows = run.before_crash.rows();
    writeln!(
        out,
        "\n- before the crash check: {rows} task rows ({}); {} 201 answers (warm-up and the known id's first \
         submit included){}",
        run.before_crash.statuses(),
        run.acknowledged_before_crash,
        if rows == run.acknowledged_before_crash {
            ": equal"
        } else {
            " — **they differ**"
        }
    )?;
    if run.row_mismatches.is_empty() {
        writeln!(
            out,
            "- rows = 201 answers after every durable variant, once its tasks had ended"
        )?;
    } else {
        for mismatch in &run.row_mismatches {
            writeln!(out, "- **mismatch** {mismatch}")?;
        }
    }
    let crash = &run.crash;
    let (low, high) = crash.bounds();
    let restarted_rows = crash.after_restart.rows();
    let crash_ok = crash.missing.is_empty() && (low..=high).contains(&restarted_rows);
    writeln!(
        out,
        "- crash check: `SIGKILL` ({}) {} ms into a load of {CRASH_CLIENTS} clients; {} submits acknowledged \
         before it, {} clients cut off with a request possibly in flight",
        crash.kill_status,
        CRASH_AFTER.as_millis(),
        crash.acknowledged,
        crash.cut_off
    )?;
    writeln!(
        out,
        "  - state dir lock after the killed daemon was reaped: {}",
        if crash.lock.held_for < Duration::from_millis(1) {
            "free at once".to_owned()
        } else {
            format!(
                "**still held for {:.1} ms**; processes with the lock file open meanwhile: {}",
                crash.lock.held_for.as_secs_f64() * 1e3,
                if crash.lock.holders.is_empty() {
                    "none found".to_owned()
                } else {
                    crash.lock.holders.join("; ")
                }
            )
        }
    )?;
    writeln!(
        out,
        "  - after the restart (ready in {:.0} ms): {restarted_rows} rows ({}), expected {low}..={high}; \
         acknowledged ids not found: {}{}",
        crash.ready_after.as_secs_f64() * 1e3,
        crash.after_restart.statuses(),
        crash.missing.len(),
        if crash_ok {
            ""
        } else {
            " — **lost acknowledged tasks**"
        }
    )?;
    writeln!(
        out,
        "  - recovery: every task had ended {:.0} ms after ready (checked after the lookups): {}",
        crash.recovery_drain.as_secs_f64() * 1e3,
        crash.after_recovery.statuses()
    )?;
    for id in crash.missing.iter().take(MAX_ERROR_KINDS) {
        writeln!(out, "  - missing: {id}")?;
    }

    writeln!(out, "\n## Daemon\n")?;
    let growth = run.rss_end_kib.saturating_sub(run.rss_idle_kib);
    writeln!(
        out,
        "- VmRSS {:.1} MiB at the end of the rounds (peak {:.1}), {:.1} MiB more than at start-up: {:.1} KiB \
         per task row",
        mib(run.rss_end_kib),
        mib(run.hwm_end_kib),
        mib(growth),
        growth as f64 / rows.max(1) as f64
    )?;
    writeln!(
        out,
        "- SIGTERM to exit (the restarted daemon): {:.0} ms, {}; daemon logs: {} lines, {} with WARN or ERROR",
        run.shutdown.as_secs_f64() * 1e3,
        run.exit,
        run.log_lines,
        run.log_problems
    )?;
    if all_errors.is_empty() {
        writeln!(out, "- request errors: none")?;
    } else {
        writeln!(out, "- request errors:")?;
        for (variant, message, count) in &all_errors {
            writeln!(out, "  - {variant}: {count} × {message}")?;
        }
    }

    // The summary line.
    let mut summary = String::new();
    for &clients in &CLIENTS {
        if let Some(v) = index(Route::Submit, clients) {
            write!(
                summary,
                "POST /tasks {clients}c {:.0}/s p50 {:.2} ms p99 {:.1} ms; ",
                median(&results.values(v, |s| s.rate)),
                median(&results.values(v, |s| s.p50_ms)),
                median(&results.values(v, |s| s.p99_ms))
            )?;
        }
    }
    for (name, ratio) in &summary_ratios {
        write!(summary, "{name} {ratio:.2}x; ")?;
    }
    let error_total: u64 = all_errors.iter().map(|(_, _, n)| n).sum();
    write!(
        summary,
        "rows {rows} = 201s {}: {}; crash: {} acked, {} missing; {error_total} errors",
        run.acknowledged_before_crash,
        if rows == run.acknowledged_before_crash && run.row_mismatches.is_empty() {
            "ok"
        } else {
            "DIFFER"
        },
        crash.acknowledged,
        crash.missing.len()
    )?;
    writeln!(out, "\n{summary}")?;
    Ok(out)
}
