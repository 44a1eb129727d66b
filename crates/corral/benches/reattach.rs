//! corral re-attach benchmark, the closing note of issue 6: what surviving a daemon crash costs and how fast
//! the daemon is back.
//!
//! 1. Reconcile after `kill -9` of the daemon with 1,000 live `sleep 100000` children: the `elapsed_ms` of
//!    the log line "process records reconciled", and the wall time from the spawn of the new daemon to
//!    `GET /ready` 200; `/health` must count 1,000 re-attached processes.
//! 2. `POST /interrupt` of those 1,000 re-attached processes by one label, with `wait`.
//! 3. `POST /processes` of `/bin/true` per second with the keeper (the default) and without it
//!    (`[processes] keeper = false`), 1 and 16 clients, as a ratio per round.
//! 4. Total PSS of the daemon and the keeper with 1,000 idle children, next to supervisord's with
//!    `numprocs=1000` in the same run (installed with `pip install supervisor` if missing).
//!
//! Run with `cargo bench -p corral --bench reattach`. What each number means is in `bench/README.md` at the
//! repository root. Settings, from the environment:
//!
//! - `CORRAL_BENCH_SECS` (default 3): seconds each spawn-rate variant runs in each round.
//! - `CORRAL_BENCH_ROUNDS` (default 3): rounds of the spawn-rate comparison; the order alternates from round
//!   to round and the median is reported.
//! - `SUPERVISORD`: another supervisord binary than the one found on `PATH` or next to `python3`.
//!
//! Every daemon is a fresh `corral daemon --config <dir>/etc/corral.toml --state-dir <dir>/state` in a
//! temporary directory, isolated from the user's configuration. Whatever happens, the benchmark kills what
//! it started before it exits: daemons, keepers and their children's process groups, supervisord and its
//! children. The results go to stdout as Markdown; progress goes to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

mod common;
use common::*;

/// Idle children in the reconcile, interrupt and memory measurements.
const PROCESSES: usize = 1000;
/// The body that starts one of them.
const SLEEP_BODY: &[u8] = br#"{"command": ["sleep", "100000"], "labels": {"session": "bench"}}"#;
/// The interrupt of all of them.
const INTERRUPT_BODY: &[u8] = br#"{"labels": {"session": "bench"}, "grace": "5s", "wait": true}"#;
/// The body of every spawn-rate start.
const TRUE_BODY: &[u8] = br#"{"command": ["/bin/true"]}"#;
/// Concurrent clients that start the 1,000 sleeps.
const STARTERS: usize = 16;
/// Concurrent clients of the spawn-rate variants.
const CLIENTS: [usize; 2] = [1, 16];
/// The daemon's config with the keeper (the default) and without.
const CONFIG_KEEPER: &str = "# the default: [processes] keeper = true\n";
const CONFIG_NO_KEEPER: &str = "[processes]\nkeeper = false\n";
// Time limits, generous for a loaded 2-core machine; a request has `REQUEST_TIMEOUT` (common) unless below.
/// The interrupt of 1,000 processes, with `wait`.
const INTERRUPT_TIMEOUT: Duration = Duration::from_secs(300);
/// A daemon's start until `GET /ready` answers 200, 1,000 processes to re-attach included.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// From `SIGTERM` to the exit of a daemon or of supervisord, stopping 1,000 children included.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// After a spawn-rate load, until no process is recorded as running any more.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// supervisord's start until all its children run.
const SUPERVISORD_START_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between the last start and the memory reading, so that the daemons are idle.
const SETTLE: Duration = Duration::from_secs(2);
/// Errors tolerated while starting the 1,000 sleeps.
const MAX_START_ERRORS: usize = 50;

fn main() {
    exit_on_error(run());
}

fn run() -> Result<()> {
    let (secs, rounds) = secs_and_rounds(3.0, 3)?;
    let mut tmp = BenchDir::new("reattach")?;
    match measure_all(secs, rounds, &tmp.path) {
        Ok(run) => {
            print!("{}", report(&run)?);
            Ok(())
        }
        Err(err) => {
            tmp.keep = true;
            Err(err.context(format!(
                "the daemons' files and logs are kept in {}",
                tmp.path.display()
            )))
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// A corral daemon, its keeper and their children
// ---------------------------------------------------------------------------------------------------

/// A `corral daemon` on its own directory; it may be killed and started again on the same state.
struct Daemon {
    name: &'static str,
    dir: PathBuf,
    config: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    /// One log for every start, appended to.
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Daemon {
    /// Writes `<root>/<name>/etc/corral.toml` (the config gets a directory of its own: the tools watcher
    /// watches the parent of the missing `tools.d`, and must not see the log) and starts the daemon.
    fn start(root: &Path, name: &'static str, config_text: &str) -> Result<Daemon> {
        let dir = root.join(name);
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
        let config = etc.join("corral.toml");
        std::fs::write(&config, config_text).with_context(|| format!("cannot write {}", config.display()))?;
        let state = dir.join("state");
        let daemon = Daemon {
            name,
            socket: state.join("corral.sock"),
            log: dir.join("daemon.log"),
            child: Mutex::new(None),
            dir,
            config,
            state,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    /// Starts the daemon process; returns where its log starts in the file.
    fn spawn(&self) -> Result<u64> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let offset = log.metadata()?.len();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .arg("daemon")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state);
        isolate(&mut command, &self.dir);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start `corral daemon` ({})", self.name))?;
        *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        Ok(offset)
    }

    fn pid(&self) -> Result<u32> {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("{} is not running", self.name))
    }

    /// `Err` with the exit status and the end of the log if the daemon has exited.
    fn check_alive(&self) -> Result<()> {
        let mut guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(child) = guard.as_mut() else {
            bail!("{} is not running", self.name);
        };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} (pid {}) died: {status}\n--- last lines of its log ({}) ---\n{}",
                self.name,
                child.id(),
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
            if let Ok((StatusCode::OK, _)) = self.call(Method::GET, "/ready", None, REQUEST_TIMEOUT).await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} was not ready after {READY_TIMEOUT:?}\n--- last lines of its log ---\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One request on a connection of its own.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&'static [u8]>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let mut sender = connect_unix(&self.socket).await?;
        let request = daemon_request(method.clone(), path, body)?;
        tokio::time::timeout(timeout, exchange(&mut sender, request))
            .await
            .with_context(|| format!("{method} {path}: no answer within {timeout:?}"))?
    }

    /// A request that must answer `expected` with JSON.
    async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&'static [u8]>,
        expected: StatusCode,
        timeout: Duration,
    ) -> Result<Value> {
        let (status, answer) = self.call(method.clone(), path, body, timeout).await?;
        if status != expected {
            bail!("{method} {path}: {status}: {}", snippet(&answer));
        }
        serde_json::from_slice(&answer).with_context(|| format!("{method} {path}: not JSON: {}", snippet(&answer)))
    }

    async fn health(&self) -> Result<Value> {
        self.call_json(Method::GET, "/health", None, StatusCode::OK, REQUEST_TIMEOUT)
            .await
    }

    /// The keeper's pid, from `<state>/keeper.sock.lock`, if that process is a live `corral keeper`.
    fn keeper_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.state.join("keeper.sock.lock")).ok()?;
        let pid = text.trim().parse::<u32>().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_keeper = cmdline.split(|b| *b == 0).any(|arg| arg == b"keeper");
        (is_keeper && !is_zombie(pid)).then_some(pid)
    }

    /// `kill -9` of the daemon, and wait for it.
    fn kill9(&self) -> Result<()> {
        let mut guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let mut child = guard.take().with_context(|| format!("{} is not running", self.name))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// `SIGTERM` and wait for the exit; returns the status and how long the shutdown took.
    fn stop(&self) -> Result<(ExitStatus, Duration)> {
        let mut guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let child = guard
            .as_mut()
            .with_context(|| format!("{} is not running", self.name))?;
        let start = Instant::now();
        terminate(child.id())?;
        loop {
            if let Some(status) = child.try_wait()? {
                guard.take();
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > STOP_TIMEOUT {
                bail!("{} did not exit within {STOP_TIMEOUT:?} of SIGTERM", self.name);
            }
            std::thread::sleep(POLL);
        }
    }

    /// The part of the log written since `offset`.
    fn log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default()).into_owned()
    }

    /// Lines of the log that are warnings or errors.
    fn log_problems(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count()
    }
}

impl Drop for Daemon {
    /// Whatever state the benchmark left: `SIGTERM` (the daemon stops its children and its keeper), then
    /// `SIGKILL` of the daemon, of every process group the keeper still holds, of the keeper, and of the
    /// daemon's own children's groups (without a keeper).
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        let mut own_children = Vec::new();
        if let Some(mut child) = child {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = terminate(child.id());
                let start = Instant::now();
                while start.elapsed() < STOP_TIMEOUT && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(POLL);
                }
                if matches!(child.try_wait(), Ok(None)) {
                    own_children = child_pids(child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        if let Some(keeper) = self.keeper_pid() {
            for kept in child_pids(keeper) {
                kill_group(kept);
            }
            kill_pid(keeper);
        }
        for pid in own_children {
            kill_group(pid);
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rsplit_once(')') {
        Some((_, rest)) => rest.trim_start().starts_with(['Z', 'X']),
        None => true,
    }
}

/// The `key=value` fields of the last log line containing `message` (tracing's fmt output, no ANSI).
fn log_fields(log: &str, message: &str) -> Option<BTreeMap<String, String>> {
    let line = log.lines().rev().find(|l| l.contains(message))?;
    Some(
        line.split_whitespace()
            .filter_map(|word| word.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect(),
    )
}

/// Live (not zombie) children of `pid` whose command name is `comm`.
fn live_children(pid: u32, comm: &str) -> usize {
    child_pids(pid)
        .into_iter()
        .filter(|c| {
            !is_zombie(*c) && std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|name| name.trim() == comm)
        })
        .count()
}

// ---------------------------------------------------------------------------------------------------
// Load: starting processes over the API
// ---------------------------------------------------------------------------------------------------

/// Until `done` says stop: `POST /processes` with `body`, back to back on one connection. An answer
/// counts if it is 201 with a record in state `running`. `Err` only if the daemon died.
async fn starter(daemon: Arc<Daemon>, body: &'static [u8], done: impl FnMut(&Tally) -> bool) -> Result<Tally> {
    let mut done = done;
    closed_loop(
        &daemon.socket,
        |tally| !done(tally),
        || daemon_request(Method::POST, "/processes", Some(body)),
        |status, answer| {
            if status != StatusCode::CREATED {
                return Err(format!("{status}: {}", snippet(answer)));
            }
            let state = serde_json::from_slice::<Value>(answer)
                .ok()
                .and_then(|record| record.get("state")?.as_str().map(str::to_owned));
            match state.as_deref() {
                Some("running") => Ok(()),
                _ => Err(format!("201 with state {state:?}, not \"running\"")),
            }
        },
        || daemon.check_alive(),
    )
    .await
}

/// Starts exactly `count` `sleep 100000` with `STARTERS` clients; returns how long that took.
async fn start_sleeps(daemon: &Arc<Daemon>, count: usize) -> Result<Duration> {
    let claimed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..STARTERS {
        let (claimed, errors) = (claimed.clone(), errors.clone());
        let mut seen_errors = 0;
        // Claim a slot before each request; give it back when the request failed.
        let mut holding = false;
        tasks.spawn(starter(daemon.clone(), SLEEP_BODY, move |tally: &Tally| {
            let failed = tally.error_count() as usize;
            if failed > seen_errors {
                errors.fetch_add(failed - seen_errors, Ordering::Relaxed);
                seen_errors = failed;
                if holding {
                    claimed.fetch_sub(1, Ordering::Relaxed);
                }
            }
            if errors.load(Ordering::Relaxed) > MAX_START_ERRORS {
                return true;
            }
            holding = claimed.fetch_add(1, Ordering::Relaxed) < count;
            if !holding {
                claimed.fetch_sub(1, Ordering::Relaxed);
            }
            !holding
        }));
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        tally.merge(joined.context("a client task panicked")??);
    }
    if tally.ok as usize != count {
        bail!(
            "started {} of {count} processes; errors: {}",
            tally.ok,
            counts_text(&tally.errors)
        );
    }
    Ok(start.elapsed())
}

/// Polls `GET /processes?state=running` until the daemon reports none; returns how long that took.
async fn drain(daemon: &Daemon) -> Result<Duration> {
    let start = Instant::now();
    loop {
        daemon.check_alive()?;
        let running = daemon
            .call_json(
                Method::GET,
                "/processes?state=running",
                None,
                StatusCode::OK,
                REQUEST_TIMEOUT,
            )
            .await?;
        let count = running
            .as_array()
            .map(Vec::len)
            .context("GET /processes?state=running did not return an array")?;
        if count == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            bail!("{count} processes still recorded as running {DRAIN_TIMEOUT:?} after the load ended");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Records by state, from `GET /health`.
fn state_counts(health: &Value, field: &str) -> BTreeMap<String, u64> {
    health
        .get(field)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(state, n)| (state.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------------

/// Memory of one process.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss_kib: u64,
    pss_kib: u64,
    fds: usize,
}

impl Mem {
    fn of(pid: u32) -> Result<Mem> {
        let (rss_kib, pss_kib) = rss_pss_kib(pid)?;
        Ok(Mem {
            rss_kib,
            pss_kib,
            fds: open_fds(pid),
        })
    }
}

/// One memory reading: a server (daemon or supervisord) and its helper, if any, with how many idle children
/// they supervised.
struct MemRow {
    what: String,
    children: usize,
    server: Mem,
    helper: Option<Mem>,
}

impl MemRow {
    fn pss_kib(&self) -> u64 {
        self.server.pss_kib + self.helper.map_or(0, |m| m.pss_kib)
    }
}

/// Reads the daemon and, if it has one, its keeper, after `SETTLE`.
fn corral_memory(daemon: &Daemon, what: &str, children: usize, keeper: bool) -> Result<MemRow> {
    std::thread::sleep(SETTLE);
    let helper = if keeper {
        let pid = daemon.keeper_pid().context("no live keeper")?;
        Some(Mem::of(pid)?)
    } else {
        None
    };
    Ok(MemRow {
        what: what.to_owned(),
        children,
        server: Mem::of(daemon.pid()?)?,
        helper,
    })
}

// ---------------------------------------------------------------------------------------------------
// 1, 2 and part of 4: kill -9 with 1,000 live children, re-attach, interrupt
// ---------------------------------------------------------------------------------------------------

struct Reattach {
    start_1000: Duration,
    survivors: usize,
    ready: Duration,
    reconcile_fields: Option<BTreeMap<String, String>>,
    health_reconcile: BTreeMap<String, u64>,
    running_after: u64,
    interrupt: Interrupt,
    stopped: (ExitStatus, Duration),
    keeper_gone: bool,
    log_problems: usize,
}

struct Interrupt {
    wall: Duration,
    answer: Value,
    records: BTreeMap<String, u64>,
    children_left: usize,
}

/// `POST /interrupt` of every `session=bench` process; then the records by state and the children left.
async fn interrupt_all(daemon: &Daemon, parent: u32) -> Result<Interrupt> {
    let start = Instant::now();
    let answer = daemon
        .call_json(
            Method::POST,
            "/interrupt",
            Some(INTERRUPT_BODY),
            StatusCode::OK,
            INTERRUPT_TIMEOUT,
        )
        .await?;
    let wall = start.elapsed();
    let records = state_counts(&daemon.health().await?, "processes");
    Ok(Interrupt {
        wall,
        answer,
        records,
        children_left: live_children(parent, "sleep"),
    })
}

fn reattach(rt: &Runtime, root: &Path, memory: &mut Vec<MemRow>) -> Result<Reattach> {
    eprintln!("re-attach: starting a daemon with the keeper ...");
    let daemon = Arc::new(Daemon::start(root, "reattach", CONFIG_KEEPER)?);
    rt.block_on(daemon.wait_ready())?;
    memory.push(corral_memory(&daemon, "corral, keeper on, idle", 0, true)?);

    eprintln!("re-attach: starting {PROCESSES} `sleep 100000` ...");
    let start_1000 = rt.block_on(start_sleeps(&daemon, PROCESSES))?;
    memory.push(corral_memory(
        &daemon,
        "corral, keeper on, after starting them",
        PROCESSES,
        true,
    )?);

    eprintln!("re-attach: kill -9 of the daemon, then a new daemon ...");
    let keeper = daemon.keeper_pid().context("no live keeper")?;
    daemon.kill9()?;
    std::thread::sleep(Duration::from_millis(200));
    let survivors = live_children(keeper, "sleep");
    let spawned = Instant::now();
    let offset = daemon.spawn()?;
    rt.block_on(daemon.wait_ready())?;
    let ready = spawned.elapsed();
    let reconcile_fields = log_fields(&daemon.log_since(offset), "process records reconciled");
    let health = rt.block_on(daemon.health())?;
    let health_reconcile = state_counts(&health, "reconcile");
    let running_after = state_counts(&health, "processes").get("running").copied().unwrap_or(0);
    memory.push(corral_memory(
        &daemon,
        "corral, keeper on, re-attached after kill -9",
        PROCESSES,
        true,
    )?);

    eprintln!("re-attach: interrupting the {PROCESSES} by label ...");
    let keeper = daemon.keeper_pid().context("no live keeper after the restart")?;
    let interrupt = rt.block_on(interrupt_all(&daemon, keeper))?;
    eprintln!("re-attach: stopping the daemon ...");
    let stopped = daemon.stop()?;
    let start = Instant::now();
    while daemon.keeper_pid().is_some() && start.elapsed() < STOP_TIMEOUT {
        std::thread::sleep(POLL);
    }
    Ok(Reattach {
        start_1000,
        survivors,
        ready,
        reconcile_fields,
        health_reconcile,
        running_after,
        interrupt,
        stopped,
        keeper_gone: daemon.keeper_pid().is_none(),
        log_problems: daemon.log_problems(),
    })
}

/// The same 1,000 children without a keeper: memory, and the interrupt for comparison.
fn no_keeper(rt: &Runtime, root: &Path, memory: &mut Vec<MemRow>) -> Result<(Duration, Interrupt)> {
    eprintln!("keeper off: starting a daemon and {PROCESSES} `sleep 100000` ...");
    let daemon = Arc::new(Daemon::start(root, "no-keeper", CONFIG_NO_KEEPER)?);
    rt.block_on(daemon.wait_ready())?;
    memory.push(corral_memory(&daemon, "corral, keeper off, idle", 0, false)?);
    let started = rt.block_on(start_sleeps(&daemon, PROCESSES))?;
    memory.push(corral_memory(
        &daemon,
        "corral, keeper off, after starting them",
        PROCESSES,
        false,
    )?);
    eprintln!("keeper off: interrupting the {PROCESSES} by label ...");
    let interrupt = rt.block_on(interrupt_all(&daemon, daemon.pid()?))?;
    daemon.stop()?;
    Ok((started, interrupt))
}

// ---------------------------------------------------------------------------------------------------
// 4: supervisord
// ---------------------------------------------------------------------------------------------------

/// supervisord with `numprocs=1000` of `sleep 100000`.
struct Supervisord {
    child: Option<Child>,
    log: PathBuf,
}

impl Supervisord {
    fn start(binary: &Path, root: &Path) -> Result<Supervisord> {
        let dir = root.join("supervisord");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("supervisord.log");
        let config = dir.join("supervisord.conf");
        let d = dir.display();
        // minfds/minprocs: supervisord raises its soft limits at least that far (or refuses to start): 1,000
        // children with three pipes each need more than the common default of 1,024 descriptors.
        let text = format!(
            "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\nlogfile_maxbytes=0\nloglevel=warn\n\
             pidfile={d}/supervisord.pid\nchildlogdir={d}\nminfds=8192\nminprocs=2048\n\n\
             [program:sleep]\ncommand=sleep 100000\nnumprocs={PROCESSES}\n\
             process_name=%(program_name)s_%(process_num)d\nautostart=true\nautorestart=false\n\
             stdout_logfile=NONE\nstderr_logfile=NONE\n"
        );
        std::fs::write(&config, text)?;
        let output = std::fs::File::create(dir.join("output.log"))?;
        let child = std::process::Command::new(binary)
            .arg("--configuration")
            .arg(&config)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Supervisord {
            child: Some(child),
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until `PROCESSES` `sleep` children run; returns how long that took.
    fn wait_children(&mut self) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "supervisord died: {status}\n--- its output ---\n{}\n--- its log ---\n{}",
                        log_tail(&self.log.with_file_name("output.log")),
                        log_tail(&self.log)
                    );
                }
            }
            let running = live_children(self.pid(), "sleep");
            if running >= PROCESSES {
                return Ok(start.elapsed());
            }
            if start.elapsed() > SUPERVISORD_START_TIMEOUT {
                bail!("supervisord runs {running} of {PROCESSES} children after {SUPERVISORD_START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `SIGTERM` and wait: supervisord stops its children first. Returns how long that took.
    fn stop(&mut self) -> Result<Duration> {
        let child = self.child.as_mut().context("supervisord is not running")?;
        let start = Instant::now();
        terminate(child.id())?;
        loop {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(start.elapsed());
            }
            if start.elapsed() > STOP_TIMEOUT {
                bail!("supervisord did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Supervisord {
    /// `SIGKILL` of every child left (each is its own process group) and of supervisord.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let children = child_pids(child.id());
            let _ = child.kill();
            let _ = child.wait();
            for pid in children {
                kill_group(pid);
                kill_pid(pid);
            }
        }
    }
}

/// Runs a program and returns its stdout, trimmed, if it succeeded.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `$SUPERVISORD`, else `supervisord` in the scripts dir of `python3`, else on `PATH`.
fn find_supervisord() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SUPERVISORD") {
        return Some(PathBuf::from(path));
    }
    let scripts = output_of(
        "python3",
        &["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"],
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = scripts
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path));
    candidates
        .map(|dir| dir.join("supervisord"))
        .find(|path| path.is_file())
}

/// supervisord's binary and version; installs it with `python3 -m pip install supervisor` if missing.
/// `Err(why)` if there is none.
fn supervisord_binary() -> Result<(PathBuf, String), String> {
    let binary = match find_supervisord() {
        Some(binary) => binary,
        None => {
            eprintln!("supervisord not found: python3 -m pip install supervisor ...");
            let out = std::process::Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "supervisor"])
                .output()
                .map_err(|err| format!("cannot run python3 -m pip: {err}"))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(format!("pip install supervisor failed: {}", snippet(stderr.as_bytes())));
            }
            find_supervisord().ok_or("pip install supervisor succeeded but no supervisord was found")?
        }
    };
    let version = output_of(&binary.to_string_lossy(), &["--version"]).unwrap_or_else(|| "?".to_owned());
    Ok((binary, version))
}

fn supervisord(root: &Path, memory: &mut Vec<MemRow>) -> Result<SupervisordRun, String> {
    let (binary, version) = supervisord_binary()?;
    eprintln!("supervisord {version}: starting {PROCESSES} `sleep 100000` ...");
    let measured = (|| -> Result<SupervisordRun> {
        let mut server = Supervisord::start(&binary, root)?;
        let started = server.wait_children()?;
        std::thread::sleep(SETTLE);
        memory.push(MemRow {
            what: format!("supervisord {version}"),
            children: PROCESSES,
            server: Mem::of(server.pid())?,
            helper: None,
        });
        eprintln!("supervisord: stopping ...");
        let stopped = server.stop()?;
        Ok(SupervisordRun {
            binary: binary.clone(),
            version: version.clone(),
            started,
            stopped,
        })
    })();
    // A supervisord that fails is reported, not fatal: corral's numbers stand on their own.
    measured.map_err(|err| {
        let why = format!("{} {version}: {err:#}", binary.display());
        eprintln!("supervisord failed: {why}");
        why
    })
}

struct SupervisordRun {
    binary: PathBuf,
    version: String,
    started: Duration,
    stopped: Duration,
}

// ---------------------------------------------------------------------------------------------------
// 3: spawn rate with and without the keeper
// ---------------------------------------------------------------------------------------------------

/// CPU clock ticks of the daemon, its keeper and this benchmark.
#[derive(Clone, Copy)]
struct CpuTicks {
    daemon: u64,
    keeper: u64,
    /// Reaped children of the daemon and the keeper: the `/bin/true` processes.
    children: u64,
    bench: u64,
}

impl CpuTicks {
    fn now(daemon: u32, keeper: Option<u32>) -> Result<Self> {
        let (daemon_own, daemon_children) = process_ticks(&daemon.to_string())?;
        let (keeper_own, keeper_children) = match keeper {
            Some(pid) => process_ticks(&pid.to_string())?,
            None => (0, 0),
        };
        Ok(CpuTicks {
            daemon: daemon_own,
            keeper: keeper_own,
            children: daemon_children + keeper_children,
            bench: process_ticks("self")?.0,
        })
    }
}

/// One variant in one round.
struct Sample {
    rate: f64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU per start in µs: daemon, keeper, `/bin/true`, benchmark.
    cpu_us: [f64; 4],
}

/// `clients` clients start `/bin/true` in a closed loop for `duration`; then the drain.
fn spawn_rate(rt: &Runtime, daemon: &Arc<Daemon>, clients: usize, duration: Duration, tick_us: f64) -> Result<Sample> {
    let keeper = daemon.keeper_pid();
    let before = CpuTicks::now(daemon.pid()?, keeper)?;
    let (mut tally, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            tasks.spawn(starter(daemon.clone(), TRUE_BODY, move |_: &Tally| {
                Instant::now() >= deadline
            }));
        }
        let mut tally = Tally::default();
        while let Some(joined) = tasks.join_next().await {
            tally.merge(joined.context("a client task panicked")??);
        }
        anyhow::Ok((tally, start.elapsed()))
    })?;
    let after = CpuTicks::now(daemon.pid()?, keeper)?;
    rt.block_on(drain(daemon))?;
    tally.latencies.sort_unstable();
    let per_start = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * tick_us / tally.ok.max(1) as f64;
    Ok(Sample {
        rate: tally.ok as f64 / elapsed.as_secs_f64(),
        ok: tally.ok,
        p50_ms: percentile_ms(&tally.latencies, 50.0),
        p99_ms: percentile_ms(&tally.latencies, 99.0),
        cpu_us: [
            per_start(before.daemon, after.daemon),
            per_start(before.keeper, after.keeper),
            per_start(before.children, after.children),
            per_start(before.bench, after.bench),
        ],
        errors: std::mem::take(&mut tally.errors),
    })
}

/// The spawn-rate variants: (keeper on, clients).
fn variants() -> Vec<(bool, usize)> {
    CLIENTS.iter().flat_map(|&c| [(true, c), (false, c)]).collect()
}

fn variant_name(keeper: bool, clients: usize) -> String {
    let client_word = if clients == 1 { "client" } else { "clients" };
    format!("keeper {}, {clients} {client_word}", if keeper { "on" } else { "off" })
}

struct SpawnRun {
    /// Per variant (as in [`variants`]), per round.
    samples: Vec<Vec<Sample>>,
    records: [BTreeMap<String, u64>; 2],
    /// Acknowledged starts (201 `running`), warm-up included: keeper on, keeper off.
    acked: [u64; 2],
    log_problems: [usize; 2],
}

fn spawn_rates(rt: &Runtime, root: &Path, secs: f64, rounds: usize) -> Result<SpawnRun> {
    eprintln!("spawn rate: starting a daemon with the keeper and one without ...");
    let with = Arc::new(Daemon::start(root, "spawn-keeper", CONFIG_KEEPER)?);
    let without = Arc::new(Daemon::start(root, "spawn-no-keeper", CONFIG_NO_KEEPER)?);
    rt.block_on(with.wait_ready())?;
    rt.block_on(without.wait_ready())?;
    let tick_us = tick_us();
    let daemon = |keeper: bool| if keeper { &with } else { &without };
    let variants = variants();
    eprintln!("spawn rate: warm-up ...");
    let mut acked = [0, 0];
    for &(keeper, clients) in &variants {
        acked[usize::from(!keeper)] += spawn_rate(rt, daemon(keeper), clients, WARM_UP, tick_us)?.ok;
    }
    let mut samples: Vec<Vec<Sample>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let names: Vec<String> = order
            .iter()
            .map(|&v| variant_name(variants[v].0, variants[v].1))
            .collect();
        eprintln!("spawn rate: round {}/{rounds} ({}) ...", round + 1, names.join("; "));
        for v in order {
            let (keeper, clients) = variants[v];
            let sample = spawn_rate(rt, daemon(keeper), clients, Duration::from_secs_f64(secs), tick_us)?;
            acked[usize::from(!keeper)] += sample.ok;
            samples[v].push(sample);
        }
    }
    let records = [
        state_counts(&rt.block_on(with.health())?, "processes"),
        state_counts(&rt.block_on(without.health())?, "processes"),
    ];
    with.stop()?;
    without.stop()?;
    Ok(SpawnRun {
        samples,
        records,
        acked,
        log_problems: [with.log_problems(), without.log_problems()],
    })
}

// ---------------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------------

struct Run {
    secs: f64,
    rounds: usize,
    cpus: usize,
    kernel: String,
    load_start: String,
    load_end: String,
    reattach: Reattach,
    no_keeper_start: Duration,
    no_keeper_interrupt: Interrupt,
    supervisord: Result<SupervisordRun, String>,
    memory: Vec<MemRow>,
    spawn: SpawnRun,
}

fn measure_all(secs: f64, rounds: usize, root: &Path) -> Result<Run> {
    let load_start = loadavg();
    // The client: one thread, so that it takes at most one CPU from the daemon.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut memory = Vec::new();
    // One phase at a time, so that no other corral binary shares (and so halves the PSS of) its pages.
    let reattach = reattach(&rt, root, &mut memory)?;
    let (no_keeper_start, no_keeper_interrupt) = no_keeper(&rt, root, &mut memory)?;
    let supervisord = supervisord(root, &mut memory);
    let spawn = spawn_rates(&rt, root, secs, rounds)?;
    Ok(Run {
        secs,
        rounds,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_start,
        load_end: loadavg(),
        reattach,
        no_keeper_start,
        no_keeper_interrupt,
        supervisord,
        memory,
        spawn,
    })
}

// ---------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------

/// `k n, k n`, zeros left out.
fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    let text: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if text.is_empty() {
        "none".to_owned()
    } else {
        text.join(", ")
    }
}

/// How long `PROCESSES` starts took, and the rate.
fn starts_text(took: Duration) -> String {
    format!(
        "{:.2} s ({:.0}/s)",
        took.as_secs_f64(),
        PROCESSES as f64 / took.as_secs_f64()
    )
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn ok_or_mismatch(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "**MISMATCH**"
    }
}

fn answer_field(answer: &Value, field: &str) -> u64 {
    answer.get(field).and_then(Value::as_u64).unwrap_or(0)
}

fn interrupt_text(interrupt: &Interrupt) -> String {
    let a = &interrupt.answer;
    format!(
        "matched {}, signaled {}, stale {}, unavailable {}",
        answer_field(a, "matched"),
        answer_field(a, "signaled"),
        answer_field(a, "stale"),
        answer_field(a, "unavailable")
    )
}

fn mib_text(kib: u64) -> String {
    format!("{:.1} MiB", mib(kib))
}

fn report(run: &Run) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    let r = &run.reattach;
    let n = PROCESSES;
    writeln!(out, "# corral re-attach benchmark\n")?;
    writeln!(
        out,
        "{} CPUs, kernel {}, load average {} at start and {} at end; spawn rate: {} s per variant, {} rounds.\n",
        run.cpus, run.kernel, run.load_start, run.load_end, run.secs, run.rounds
    )?;

    writeln!(out, "## 1. Reconcile after kill -9 with {n} live processes\n")?;
    let field = |k: &str| {
        r.reconcile_fields
            .as_ref()
            .and_then(|f| f.get(k).cloned())
            .unwrap_or_else(|| "?".to_owned())
    };
    let reconcile_ms = field("elapsed_ms")
        .parse::<f64>()
        .map_or_else(|_| "?".to_owned(), |v| format!("{v:.1}"));
    let reattached = r.health_reconcile.get("reattached").copied().unwrap_or(0);
    writeln!(out, "| | value |\n|---|---:|")?;
    writeln!(
        out,
        "| starting {n} `sleep 100000` ({STARTERS} clients, keeper on) | {} |",
        starts_text(r.start_1000)
    )?;
    writeln!(
        out,
        "| children of the keeper alive after `kill -9` of the daemon | {} |",
        r.survivors
    )?;
    writeln!(
        out,
        "| **reconcile** (`elapsed_ms` of \"process records reconciled\") | **{} ms** |",
        reconcile_ms
    )?;
    writeln!(
        out,
        "| **spawn of the new daemon → `GET /ready` 200** | **{:.0} ms** |",
        ms(r.ready)
    )?;
    writeln!(
        out,
        "| log line | recovered {}, reattached {}, exited_while_down {}, stale {}, unowned {} |",
        field("recovered"),
        field("reattached"),
        field("exited_while_down"),
        field("stale"),
        field("unowned")
    )?;
    writeln!(
        out,
        "| `/health` `reconcile.reattached` = {n} | {reattached} ({}) |",
        ok_or_mismatch(reattached == n as u64)
    )?;
    writeln!(
        out,
        "| `/health` records `running` after the restart | {} ({}) |\n",
        r.running_after,
        ok_or_mismatch(r.running_after == n as u64)
    )?;

    writeln!(out, "## 2. Interrupt {n} processes by one label\n")?;
    writeln!(out, "`POST /interrupt {}`\n", String::from_utf8_lossy(INTERRUPT_BODY))?;
    writeln!(
        out,
        "| daemon | wall time | answer | records after (all) | `sleep` children left |\n|---|---:|---|---|---:|"
    )?;
    for (what, interrupt) in [
        ("keeper on, re-attached after kill -9", &r.interrupt),
        ("keeper off, own children (for comparison)", &run.no_keeper_interrupt),
    ] {
        writeln!(
            out,
            "| {what} | **{:.0} ms** | {} | {} | {} |",
            ms(interrupt.wall),
            interrupt_text(interrupt),
            counts_text(&interrupt.records),
            interrupt.children_left
        )?;
    }
    writeln!(
        out,
        "\nThen `SIGTERM`: the re-attach daemon exited in {:.0} ms ({}); its keeper exited: {}; warnings and errors in its log: {}.\n",
        ms(r.stopped.1),
        r.stopped.0,
        if r.keeper_gone { "yes" } else { "**no**" },
        r.log_problems
    )?;

    writeln!(out, "## 3. Spawn rate with and without the keeper\n")?;
    writeln!(
        out,
        "`POST /processes {}`, closed loop, 201 with `running` counted.\n",
        String::from_utf8_lossy(TRUE_BODY)
    )?;
    writeln!(
        out,
        "| variant | starts/s (median) | min | max | rounds | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---|---:|---:|---:|"
    )?;
    let variants = variants();
    let rates = |v: usize| -> Vec<f64> { run.spawn.samples[v].iter().map(|s| s.rate).collect() };
    let mid = |v: usize, f: &dyn Fn(&Sample) -> f64| median(&run.spawn.samples[v].iter().map(f).collect::<Vec<_>>());
    for (v, &(keeper, clients)) in variants.iter().enumerate() {
        let values = rates(v);
        let (lo, hi) = min_max(&values);
        let errors: u64 = run.spawn.samples[v]
            .iter()
            .map(|s| s.errors.values().sum::<u64>())
            .sum();
        writeln!(
            out,
            "| {} | **{:.0}** | {lo:.0} | {hi:.0} | {} | {:.2} | {:.2} | {errors} |",
            variant_name(keeper, clients),
            median(&values),
            list(&values, 0),
            mid(v, &|s| s.p50_ms),
            mid(v, &|s| s.p99_ms),
        )?;
    }
    writeln!(out, "\n| ratio (paired per round) | median | rounds |\n|---|---:|---|")?;
    let mut summary_ratios = Vec::new();
    for (i, &clients) in CLIENTS.iter().enumerate() {
        let ratio = ratios(&rates(2 * i), &rates(2 * i + 1));
        writeln!(
            out,
            "| keeper on / keeper off, {} | **{:.2}x** | {} |",
            plural(clients, "client"),
            median(&ratio),
            list(&ratio, 2)
        )?;
        summary_ratios.push(format!("{clients}c {:.2}x", median(&ratio)));
    }
    writeln!(
        out,
        "\n| CPU per start (median over rounds) | daemon | keeper | `/bin/true` | benchmark |\n|---|---:|---:|---:|---:|"
    )?;
    for (v, &(keeper, clients)) in variants.iter().enumerate() {
        let cpu = |i: usize| mid(v, &|s| s.cpu_us[i]);
        writeln!(
            out,
            "| {} | {:.0} µs | {} | {:.0} µs | {:.0} µs |",
            variant_name(keeper, clients),
            cpu(0),
            if keeper {
                format!("{:.0} µs", cpu(1))
            } else {
                "-".to_owned()
            },
            cpu(2),
            cpu(3)
        )?;
    }
    let errors: Vec<String> = run
        .spawn
        .samples
        .iter()
        .zip(&variants)
        .flat_map(|(samples, &(keeper, clients))| {
            samples.iter().enumerate().flat_map(move |(round, s)| {
                s.errors
                    .iter()
                    .map(move |(m, c)| format!("- {}, round {}: {c}x {m}", variant_name(keeper, clients), round + 1))
            })
        })
        .collect();
    writeln!(
        out,
        "\nRecords at the end against acknowledged starts (warm-up included): keeper on: {} for {} starts; keeper off: {} for {} starts. Warnings and errors in the logs: {} and {}.",
        counts_text(&run.spawn.records[0]),
        run.spawn.acked[0],
        counts_text(&run.spawn.records[1]),
        run.spawn.acked[1],
        run.spawn.log_problems[0],
        run.spawn.log_problems[1]
    )?;
    if !errors.is_empty() {
        writeln!(out, "\nErrors:\n\n{}", errors.join("\n"))?;
    }
    writeln!(out)?;

    writeln!(out, "## 4. Resident memory with {n} idle supervised processes\n")?;
    writeln!(
        out,
        "PSS from `/proc/<pid>/smaps_rollup`, the children not included; read {} s after the last start.\n",
        SETTLE.as_secs()
    )?;
    writeln!(
        out,
        "| what | children | **PSS total** | server PSS | keeper PSS | server RSS | keeper RSS | fds server / keeper |\n|---|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for row in &run.memory {
        let helper = |f: &dyn Fn(&Mem) -> String| row.helper.as_ref().map_or_else(|| "-".to_owned(), f);
        writeln!(
            out,
            "| {} | {} | **{}** | {} | {} | {} | {} | {} / {} |",
            row.what,
            row.children,
            mib_text(row.pss_kib()),
            mib_text(row.server.pss_kib),
            helper(&|m| mib_text(m.pss_kib)),
            mib_text(row.server.rss_kib),
            helper(&|m| mib_text(m.rss_kib)),
            row.server.fds,
            helper(&|m| m.fds.to_string())
        )?;
    }
    let find = |prefix: &str| run.memory.iter().find(|row| row.what.starts_with(prefix));
    let corral_pss = find("corral, keeper on, after starting").map(MemRow::pss_kib);
    writeln!(out)?;
    for keeper in ["on", "off"] {
        let idle = find(&format!("corral, keeper {keeper}, idle"));
        let busy = find(&format!("corral, keeper {keeper}, after starting"));
        if let (Some(idle), Some(busy)) = (idle, busy) {
            let per_child = |f: &dyn Fn(&MemRow) -> u64| (f(busy) as f64 - f(idle) as f64) / PROCESSES as f64;
            writeln!(
                out,
                "Keeper {keeper}: each idle child adds {:.1} KiB of PSS to the daemon{}.",
                per_child(&|m| m.server.pss_kib),
                if keeper == "on" {
                    format!(
                        " and {:.1} KiB to the keeper",
                        per_child(&|m| m.helper.map_or(0, |h| h.pss_kib))
                    )
                } else {
                    String::new()
                }
            )?;
        }
    }
    let reattached_pss = find("corral, keeper on, re-attached").map(MemRow::pss_kib);
    let supervisord_pss = find("supervisord").map(MemRow::pss_kib);
    writeln!(out)?;
    let mut memory_summary = String::from("supervisord: none");
    match (&run.supervisord, supervisord_pss) {
        (Ok(s), Some(sup)) => {
            let ratio = |kib: Option<u64>| kib.map_or(f64::NAN, |k| k as f64 / sup as f64);
            writeln!(
                out,
                "supervisord {} ({}) started its {n} children in {:.1} s and stopped in {:.1} s.\n",
                s.version,
                s.binary.display(),
                s.started.as_secs_f64(),
                s.stopped.as_secs_f64()
            )?;
            writeln!(out, "| ratio to supervisord (target ≤ 0.5) | value |\n|---|---:|")?;
            writeln!(
                out,
                "| corral daemon + keeper, after starting {n} / supervisord | **{:.2}x** |",
                ratio(corral_pss)
            )?;
            writeln!(
                out,
                "| corral daemon + keeper, re-attached {n} / supervisord | **{:.2}x** |\n",
                ratio(reattached_pss)
            )?;
            memory_summary = format!(
                "supervisord {}; corral/supervisord {:.2}x",
                mib_text(sup),
                ratio(corral_pss)
            );
        }
        (Err(why), _) => writeln!(out, "supervisord: not measured ({why}).\n")?,
        (Ok(_), None) => writeln!(out, "supervisord: no memory reading.\n")?,
    }
    writeln!(
        out,
        "Keeper off, for comparison: the {n} started in {}.\n",
        starts_text(run.no_keeper_start)
    )?;

    writeln!(
        out,
        "reconcile {} ms, ready {:.0} ms, reattached {reattached}/{n}; interrupt {n} {:.0} ms; spawn keeper on/off {}; PSS daemon+keeper {} with {n} children, {memory_summary}",
        reconcile_ms,
        ms(r.ready),
        ms(r.interrupt.wall),
        summary_ratios.join(", "),
        corral_pss.map_or_else(|| "?".to_owned(), mib_text),
    )?;
    Ok(out)
}
