//! corral daemon API benchmark: `GET /health` and `POST /processes` over the Unix socket, measured side by
//! side with the machine's raw spawn rate.
//!
//! Run with `cargo bench -p corral --bench api`. What each number means is in `bench/README.md` at the
//! repository root. Settings, from the environment:
//!
//! - `CORRAL_BENCH_SECS` (default 3): seconds each variant runs in each round; also the length of each raw
//!   spawn-rate reference.
//! - `CORRAL_BENCH_ROUNDS` (default 3): rounds; the order alternates from round to round and the median
//!   round is reported.
//!
//! The benchmark starts one fresh `corral daemon` on a temporary state directory, isolated from the user's
//! configuration, and stops it with `SIGTERM` at the end. Every client owns one persistent HTTP/1.1
//! connection and sends its requests in a closed loop. A failed request is counted and reported; if the
//! daemon dies, the benchmark stops with the end of its log. The results go to stdout as Markdown;
//! progress goes to stderr.

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

/// Concurrent clients of each API variant, each with its own connection.
const CLIENTS: [usize; 2] = [1, 16];
/// Workers of the raw spawn-rate reference, paired with [`CLIENTS`] in the same order.
const RAW_WORKERS: [usize; 2] = [1, 2];
/// The process every `POST /processes` starts.
const TRUE: &str = "/bin/true";
/// The body of every `POST /processes`.
const START_BODY: &[u8] = br#"{"command": ["/bin/true"]}"#;
/// How long the daemon may take to answer `GET /ready` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the processes of a POST load may take to be recorded as ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to exit after `SIGTERM`.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Starts `corral daemon --state-dir <dir>/state`, isolated from the user's configuration and registry,
    /// with its log (stdout and stderr) in `<dir>/daemon.log`.
    fn start(dir: &Path) -> Result<Daemon> {
        let state = dir.join("state");
        let log = dir.join("daemon.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        command.arg("daemon").arg("--state-dir").arg(&state);
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

    /// Sends `SIGTERM` and waits for the exit; returns the status and how long the shutdown took.
    fn stop(&self) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        terminate(self.pid)?;
        loop {
            if let Some(status) = self.child.lock().unwrap_or_else(PoisonError::into_inner).try_wait()? {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > STOP_TIMEOUT {
                bail!("the daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(POLL);
        }
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

/// `GET` of a JSON document that must answer 200.
async fn get_json(socket: &Path, path: &str) -> Result<serde_json::Value> {
    let (status, body) = get(socket, path).await?;
    if status != StatusCode::OK {
        bail!("GET {path}: {status}: {}", snippet(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON: {}", snippet(&body)))
}

// ---------------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Start,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Health => "GET /health",
            Route::Start => "POST /processes",
        }
    }

    fn request(self) -> Result<Request<Full<Bytes>>> {
        match self {
            Route::Health => daemon_request(Method::GET, "/health", None),
            Route::Start => daemon_request(Method::POST, "/processes", Some(START_BODY)),
        }
    }

    /// `Err` (a message for the error count) unless the answer is the expected success.
    fn check(self, status: StatusCode, body: &[u8]) -> Result<(), String> {
        let expected = match self {
            Route::Health => StatusCode::OK,
            Route::Start => StatusCode::CREATED,
        };
        if status != expected {
            return Err(format!("{status}: {}", snippet(body)));
        }
        if self == Route::Start {
            // Acknowledged means recorded as running: the answer is that record.
            let record: serde_json::Value =
                serde_json::from_slice(body).map_err(|err| format!("{status} with a body that is not JSON: {err}"))?;
            let state = record.get("state").and_then(|s| s.as_str()).unwrap_or("?");
            if state != "running" {
                return Err(format!("{status} with state {state:?}, not \"running\""));
            }
        }
        Ok(())
    }
}

/// What clients saw: successes with their latencies, and errors by message.
#[derive(Default)]
struct Tally {
    ok: u64,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
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
        for (message, count) in other.errors {
            for _ in 0..count {
                self.error(message.clone());
            }
        }
    }
}

/// One client: requests back to back on its own connection until `deadline`. A failed request is counted;
/// a broken connection is replaced. `Err` only if the daemon died.
async fn client(daemon: Arc<Daemon>, route: Route, first: Sender, deadline: Instant) -> Result<Tally> {
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
                    Ok(()) => {
                        tally.ok += 1;
                        tally.latencies.push(latency);
                    }
                    Err(message) => tally.error(message),
                }
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
async fn load(daemon: Arc<Daemon>, route: Route, clients: usize, duration: Duration) -> Result<(Tally, Duration)> {
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(connect_unix(&daemon.socket).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for sender in senders {
        tasks.spawn(client(daemon.clone(), route, sender, deadline));
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        tally.merge(joined.context("a client task panicked")??);
    }
    Ok((tally, start.elapsed()))
}

/// Polls `GET /processes?state=running` until the daemon reports none; returns how long that took.
async fn drain(daemon: &Daemon) -> Result<Duration> {
    let start = Instant::now();
    loop {
        daemon.check_alive()?;
        let running = get_json(&daemon.socket, "/processes?state=running").await?;
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
        Ok(CpuTicks {
            daemon,
            children,
            bench,
            machine_busy: total - idle,
            machine_total: total,
        })
    }
}

/// CPU used during one variant.
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
    /// POST only: from the end of the load until no process was recorded as running.
    drain_ms: f64,
}

/// The benchmark's state shared by every measurement.
struct Bench {
    rt: Runtime,
    daemon: Arc<Daemon>,
    tick_us: f64,
    /// Every acknowledged `POST /processes`, warm-up included.
    started_processes: u64,
}

impl Bench {
    fn measure(&mut self, route: Route, clients: usize, duration: Duration) -> Result<Sample> {
        self.daemon.check_alive()?;
        let before = CpuTicks::now(self.daemon.pid)?;
        let (mut tally, elapsed) = self.rt.block_on(load(self.daemon.clone(), route, clients, duration))?;
        let after = CpuTicks::now(self.daemon.pid)?;
        let drain_ms = if route == Route::Start {
            self.started_processes += tally.ok;
            self.rt.block_on(drain(&self.daemon))?.as_secs_f64() * 1e3
        } else {
            0.0
        };
        tally.latencies.sort_unstable();
        let errors = tally.error_count();
        if errors > 0 {
            eprintln!("  {} with {clients} clients: {errors} errors", route.name());
        }
        Ok(Sample {
            rate: tally.ok as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile_ms(&tally.latencies, 50.0),
            p99_ms: percentile_ms(&tally.latencies, 99.0),
            max_ms: tally.latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
            errors: tally.errors,
            cpu: CpuUse::between(before, after, tally.ok, self.tick_us),
            drain_ms,
        })
    }

    /// The daemon's `GET /health` answer.
    fn health(&self) -> Result<serde_json::Value> {
        self.rt.block_on(get_json(&self.daemon.socket, "/health"))
    }
}

/// Record counts by state from a `GET /health` answer.
fn record_counts(health: &serde_json::Value) -> BTreeMap<String, u64> {
    health
        .get("processes")
        .and_then(|p| p.as_object())
        .map(|map| {
            map.iter()
                .map(|(state, n)| (state.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------
// The raw spawn rate of the machine, from ../shared/bench/spawn-rate
// ---------------------------------------------------------------------------------------------------

/// Runs `sh ../shared/bench/spawn-rate <workers> <secs>` from the repository root. `Err` says why not.
fn raw_spawn_rate(workers: usize, secs: f64) -> Result<f64, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = "../shared/bench/spawn-rate";
    if !root.join(script).is_file() {
        return Err(format!("{script} not found next to the repository"));
    }
    let output = std::process::Command::new("sh")
        .args([script, &workers.to_string(), &format!("{secs}")])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run sh: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{script} failed ({}): {}", output.status, stderr.trim()));
    }
    stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| format!("{script} printed no rate: {stdout:?}"))
}

// ---------------------------------------------------------------------------------------------------
// Statistics and report
// ---------------------------------------------------------------------------------------------------

/// Name of one API variant in the tables.
fn variant_name(route: Route, clients: usize) -> String {
    let plural = if clients == 1 { "client" } else { "clients" };
    format!("`{}`, {clients} {plural}", route.name())
}

/// The four API variants, in the order health before POST, fewer clients first.
fn variants() -> Vec<(Route, usize)> {
    [Route::Health, Route::Start]
        .into_iter()
        .flat_map(|route| CLIENTS.map(|clients| (route, clients)))
        .collect()
}

/// Everything measured, by variant, one value per round.
struct Results {
    /// Indexed like [`variants`].
    api: Vec<Vec<Sample>>,
    /// Indexed like [`RAW_WORKERS`]; `Err` says why the reference was skipped.
    raw: Vec<Result<Vec<f64>, String>>,
    /// After each round: record count, VmRSS and VmHWM (KiB).
    after_round: Vec<(u64, u64, u64)>,
}

impl Results {
    fn api_values(&self, index: usize, value: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.api[index].iter().map(value).collect()
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
    /// Records by state at the end, from `GET /health`.
    counts: BTreeMap<String, u64>,
    /// Every acknowledged `POST /processes`, warm-up included.
    started_processes: u64,
    exit: ExitStatus,
    shutdown: Duration,
    log_lines: usize,
    log_problems: usize,
}

fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    let mut tmp = BenchDir::new("api")?;
    match measure_all(settings, &tmp.path) {
        Ok((run, results)) => {
            print!("{}", report(&run, &results)?);
            Ok(())
        }
        Err(err) => {
            tmp.keep = true;
            Err(err.context(format!(
                "the daemon's state dir and log are kept in {}",
                tmp.path.display()
            )))
        }
    }
}

/// Starts the daemon in `dir`, warms up, runs every round, and stops the daemon.
fn measure_all(settings: Settings, dir: &Path) -> Result<(Run, Results)> {
    let duration = settings.duration();
    let rounds = settings.rounds;
    let load_start = loadavg();

    eprintln!("starting the daemon in {} ...", dir.display());
    let daemon = Arc::new(Daemon::start(dir)?);
    // The load generator: one thread, so that it takes at most one CPU from the daemon.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ready_after = rt.block_on(daemon.wait_ready())?;
    let (rss_idle_kib, _) = memory_kib(daemon.pid)?;
    let mut bench = Bench {
        rt,
        daemon: daemon.clone(),
        tick_us: tick_us(),
        started_processes: 0,
    };

    // Warm-up: the daemon's threads and store, the page cache, the spawn-rate program (built on first use).
    eprintln!("warm-up ...");
    let warm_up_raw = raw_spawn_rate(1, WARM_UP.as_secs_f64());
    let variants = variants();
    for &(route, clients) in &variants {
        bench.measure(route, clients, WARM_UP)?;
    }

    let mut results = Results {
        api: variants.iter().map(|_| Vec::new()).collect(),
        raw: RAW_WORKERS
            .iter()
            .map(|_| warm_up_raw.as_ref().map(|_| Vec::new()).map_err(Clone::clone))
            .collect(),
        after_round: Vec::new(),
    };
    for round in 0..rounds {
        // Alternate: raw first and fewer clients first, then raw last and more clients first. Health always
        // runs before POST, so that the background process churn of POST never overlaps it.
        let forward = round % 2 == 0;
        eprintln!(
            "round {}/{rounds} ({}) ...",
            round + 1,
            if forward {
                "raw, health 1 16, POST 1 16"
            } else {
                "health 16 1, POST 16 1, raw"
            }
        );
        let order: Vec<usize> = [Route::Health, Route::Start]
            .into_iter()
            .flat_map(|route| {
                let mut of_route: Vec<usize> = (0..variants.len()).filter(|&v| variants[v].0 == route).collect();
                if !forward {
                    of_route.reverse();
                }
                of_route
            })
            .collect();
        let mut raw_order: Vec<usize> = (0..RAW_WORKERS.len()).collect();
        if !forward {
            raw_order.reverse();
        }
        let run_raw = |results: &mut Results| -> Result<()> {
            for &w in &raw_order {
                if let Ok(rates) = &mut results.raw[w] {
                    match raw_spawn_rate(RAW_WORKERS[w], settings.secs) {
                        Ok(rate) => rates.push(rate),
                        Err(why) => results.raw[w] = Err(why),
                    }
                }
            }
            // The daemon is idle while the reference runs; make sure it is still there.
            daemon.check_alive()
        };
        if forward {
            run_raw(&mut results)?;
        }
        for &v in &order {
            let (route, clients) = variants[v];
            let sample = bench.measure(route, clients, duration)?;
            results.api[v].push(sample);
        }
        if !forward {
            run_raw(&mut results)?;
        }
        let records = record_counts(&bench.health()?).values().sum();
        let (rss, hwm) = memory_kib(daemon.pid)?;
        results.after_round.push((records, rss, hwm));
    }

    // The end state, read before the daemon stops.
    let counts = record_counts(&bench.health()?);
    let (rss_end_kib, hwm_end_kib) = memory_kib(daemon.pid)?;
    eprintln!("stopping the daemon ...");
    let (exit, shutdown) = daemon.stop()?;
    let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
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
        counts,
        started_processes: bench.started_processes,
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
    writeln!(out, "# corral daemon API benchmarks\n")?;
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
        "- daemon: `{}` (pid {}), fresh state dir; ready {:.0} ms after spawn; `POST /processes` runs `{TRUE}`",
        env!("CARGO_BIN_EXE_corral"),
        run.pid,
        run.ready_after.as_secs_f64() * 1e3
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
        let rates = results.api_values(v, |s| s.rate);
        let (lo, hi) = min_max(&rates);
        let errors: u64 = results.api[v].iter().map(|s| s.errors.values().sum::<u64>()).sum();
        writeln!(
            out,
            "| {} | **{:.0}** | {lo:.0} | {hi:.0} | {} | {errors} |",
            variant_name(route, clients),
            median(&rates),
            list(&rates, 0)
        )?;
        for sample in &results.api[v] {
            for (message, count) in &sample.errors {
                all_errors.push((variant_name(route, clients), message, *count));
            }
        }
    }
    for (w, raw) in results.raw.iter().enumerate() {
        let workers = plural(RAW_WORKERS[w], "worker");
        match raw {
            Ok(rates) => {
                let (lo, hi) = min_max(rates);
                writeln!(
                    out,
                    "| raw `posix_spawn` + `waitpid` (C), {workers} | **{:.0}** | {lo:.0} | {hi:.0} | {} | - |",
                    median(rates),
                    list(rates, 0)
                )?;
            }
            Err(why) => writeln!(out, "| raw spawn rate, {workers} | skipped: {why} | | | | |")?,
        }
    }

    writeln!(out, "\n## Latency (ms, client side, successful requests only)\n")?;
    writeln!(out, "| variant | p50 | p99 | max | p50 per round | p99 per round |")?;
    writeln!(out, "|---|---:|---:|---:|---|---|")?;
    for (v, &(route, clients)) in variants.iter().enumerate() {
        let p50 = results.api_values(v, |s| s.p50_ms);
        let p99 = results.api_values(v, |s| s.p99_ms);
        writeln!(
            out,
            "| {} | **{:.2}** | **{:.2}** | {:.2} | {} | {} |",
            variant_name(route, clients),
            median(&p50),
            median(&p99),
            median(&results.api_values(v, |s| s.max_ms)),
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
    let rates = |route: Route, clients: usize| index(route, clients).map(|v| results.api_values(v, |s| s.rate));
    // Per pair of CLIENTS[i] and RAW_WORKERS[i]: the median ratio, for the summary.
    let mut to_raw: Vec<Option<f64>> = Vec::new();
    for (&clients, (&workers, raw)) in CLIENTS.iter().zip(RAW_WORKERS.iter().zip(&results.raw)) {
        let (Some(post), Ok(raw)) = (rates(Route::Start, clients), raw) else {
            to_raw.push(None);
            continue;
        };
        let values = ratios(&post, raw);
        let name = format!(
            "`POST /processes` {} / raw {}",
            plural(clients, "client"),
            plural(workers, "worker")
        );
        ratio_row(&mut out, &name, &values)?;
        to_raw.push(Some(median(&values)));
    }
    for route in [Route::Start, Route::Health] {
        if let (Some(many), Some(one)) = (rates(route, CLIENTS[1]), rates(route, CLIENTS[0])) {
            let name = format!(
                "`{}` {} clients / {}",
                route.name(),
                CLIENTS[1],
                plural(CLIENTS[0], "client")
            );
            ratio_row(&mut out, &name, &ratios(&many, &one))?;
        }
    }
    if let (Ok(many), Ok(one)) = (&results.raw[1], &results.raw[0]) {
        let name = format!(
            "raw {} / {}",
            plural(RAW_WORKERS[1], "worker"),
            plural(RAW_WORKERS[0], "worker")
        );
        ratio_row(&mut out, &name, &ratios(many, one))?;
    }

    writeln!(
        out,
        "\n## Where the CPU goes (µs of CPU per successful request, median over rounds)\n"
    )?;
    writeln!(
        out,
        "| variant | daemon | its reaped children | bench client | machine busy (all {cpus} CPUs) | drain after load (ms) \
         | daemon per round |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---|")?;
    for (v, &(route, clients)) in variants.iter().enumerate() {
        let drain = if route == Route::Start {
            format!("{:.0}", median(&results.api_values(v, |s| s.drain_ms)))
        } else {
            "-".to_owned()
        };
        let daemon_us = results.api_values(v, |s| s.cpu.daemon_us);
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} % | {drain} | {} |",
            variant_name(route, clients),
            median(&daemon_us),
            median(&results.api_values(v, |s| s.cpu.children_us)),
            median(&results.api_values(v, |s| s.cpu.bench_us)),
            median(&results.api_values(v, |s| s.cpu.machine_busy_pct)),
            list(&daemon_us, 0),
        )?;
    }

    let records: u64 = run.counts.values().sum();
    writeln!(out, "\n## Daemon\n")?;
    writeln!(out, "| after | records | VmRSS (MiB) | VmHWM (MiB) |")?;
    writeln!(out, "|---|---:|---:|---:|")?;
    writeln!(out, "| start-up (ready) | 0 | {:.1} | - |", mib(run.rss_idle_kib))?;
    for (round, (records, rss, hwm)) in results.after_round.iter().enumerate() {
        writeln!(
            out,
            "| round {} | {records} | {:.1} | {:.1} |",
            round + 1,
            mib(*rss),
            mib(*hwm)
        )?;
    }
    writeln!(
        out,
        "| end | **{records}** | **{:.1}** | **{:.1}** |",
        mib(run.rss_end_kib),
        mib(run.hwm_end_kib)
    )?;
    let states = run
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(
        out,
        "\n- records written: {records} ({states}); acknowledged `POST /processes`: {} (warm-up included){}",
        run.started_processes,
        if records == run.started_processes {
            ""
        } else {
            " — **they differ**"
        }
    )?;
    if records > 0 {
        let growth = run.rss_end_kib.saturating_sub(run.rss_idle_kib);
        writeln!(
            out,
            "- RSS growth from start-up to end: {:.1} MiB, {:.1} KiB per record",
            mib(growth),
            growth as f64 / records as f64
        )?;
    }
    writeln!(
        out,
        "- SIGTERM to exit: {:.0} ms, {}; daemon log: {} lines, {} with WARN or ERROR",
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
    for (i, &clients) in CLIENTS.iter().enumerate() {
        if let Some(v) = index(Route::Start, clients) {
            write!(
                summary,
                "POST /processes {clients}c {:.0}/s",
                median(&results.api_values(v, |s| s.rate))
            )?;
            if let Some(Some(ratio)) = to_raw.get(i) {
                write!(summary, " = {ratio:.2}x raw {}w", RAW_WORKERS[i])?;
            }
            write!(summary, " p99 {:.1} ms; ", median(&results.api_values(v, |s| s.p99_ms)))?;
        }
    }
    if let Some(v) = index(Route::Health, CLIENTS[1]) {
        write!(
            summary,
            "GET /health {}c {:.0}/s p99 {:.1} ms; ",
            CLIENTS[1],
            median(&results.api_values(v, |s| s.rate)),
            median(&results.api_values(v, |s| s.p99_ms))
        )?;
    }
    let error_total: u64 = all_errors.iter().map(|(_, _, n)| n).sum();
    write!(
        summary,
        "daemon RSS {:.1} MiB (peak {:.1}) after {records} records; {error_total} errors",
        mib(run.rss_end_kib),
        mib(run.hwm_end_kib)
    )?;
    writeln!(out, "\n{summary}")?;
    Ok(out)
}
