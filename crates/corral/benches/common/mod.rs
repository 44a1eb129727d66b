//! Helpers shared by the daemon benchmarks (api, tasks, exec): settings from the environment, one HTTP
//! exchange, statistics, /proc readings and report formatting.

// Each benchmark binary uses a different subset of these.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};

/// Bytes in a MiB.
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// One keep-alive HTTP/1.1 connection to the daemon.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

pub(crate) fn env_or<T: FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .ok()
            .with_context(|| format!("{name}={text:?} is not a valid number")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(err) => Err(err).context(name.to_owned()),
    }
}

/// Sends one request and reads the whole answer.
pub(crate) async fn exchange(sender: &mut Sender, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub(crate) fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.is_empty() {
        "?".to_owned()
    } else {
        fields.join(" ")
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// VmRSS and VmHWM of a process, in KiB.
pub(crate) fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok((field("VmRSS")?, field("VmHWM")?))
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MIB
}

pub(crate) fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    })
}

/// Nearest-rank percentile of sorted values, in milliseconds.
pub(crate) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// utime + stime and cutime + cstime of a process.
pub(crate) fn process_ticks(pid: &str) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces. Field 3 is index 0.
    let rest = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let field = |n: usize| fields.get(n - 4).copied().unwrap_or(0);
    Ok((field(14) + field(15), field(16) + field(17)))
}

/// Per-round ratios `num[i] / den[i]`: paired within a round, so drift between rounds cancels.
pub(crate) fn ratios(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter().zip(den).map(|(n, d)| n / d).collect()
}

pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `kill -TERM <pid>`.
pub(crate) fn terminate(pid: u32) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -TERM {pid} failed: {status}");
    }
    Ok(())
}

/// Microseconds per clock tick (`getconf CLK_TCK`, 100 on Linux if that fails).
pub(crate) fn tick_us() -> f64 {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok())
        .filter(|hz| *hz > 0.0)
        .unwrap_or(100.0);
    1e6 / hz
}

// ---------------------------------------------------------------------------------------------------
// Added for the re-attach benchmark; usable by any of them.
// ---------------------------------------------------------------------------------------------------

/// `CORRAL_BENCH_SECS` (default `secs`) and `CORRAL_BENCH_ROUNDS` (default `rounds`), both positive.
pub(crate) fn secs_and_rounds(secs: f64, rounds: usize) -> Result<(f64, usize)> {
    let secs: f64 = env_or("CORRAL_BENCH_SECS", secs)?;
    let rounds: usize = env_or("CORRAL_BENCH_ROUNDS", rounds)?;
    if !(secs > 0.0 && secs.is_finite()) || rounds == 0 {
        bail!("CORRAL_BENCH_SECS and CORRAL_BENCH_ROUNDS must be positive");
    }
    Ok((secs, rounds))
}

/// A fresh temporary directory `corral-bench-<name>-<pid>-<nanos>`, removed with everything in it when
/// dropped unless `keep` is set (a failed run keeps its logs).
pub(crate) struct BenchDir {
    pub(crate) path: std::path::PathBuf,
    pub(crate) keep: bool,
}

impl BenchDir {
    pub(crate) fn new(name: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("corral-bench-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(BenchDir { path, keep: false })
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Keeps a daemon under test away from the user's configuration, state and daemon registry: everything
/// it would look up goes below `dir`.
pub(crate) fn isolate(command: &mut std::process::Command, dir: &std::path::Path) {
    command
        .env("CORRAL_REGISTRY_DIR", dir.join("registry"))
        .env("XDG_CONFIG_HOME", dir.join("cfg"))
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .env_remove("CORRAL_CONFIG")
        .env_remove("CORRAL_STATE_DIR")
        .env_remove("CORRAL_SOCKET")
        .env_remove("CORRAL_URL")
        .env_remove("CORRAL_TOKEN")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CORRAL_LOG")
        .env_remove("RUST_LOG");
}

/// One persistent HTTP/1.1 connection (keep-alive) over a Unix socket; its driver runs as a task.
pub(crate) async fn connect_unix(socket: &std::path::Path) -> Result<Sender> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A request to the daemon (`Host: corral`); with a body, `Content-Type: application/json`.
pub(crate) fn daemon_request(
    method: hyper::Method,
    path: &str,
    body: Option<&'static [u8]>,
) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "corral");
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(body.map_or_else(Bytes::new, Bytes::from_static)))?)
}

/// `Rss` and `Pss` of a process from `/proc/<pid>/smaps_rollup`, in KiB. PSS charges each shared page to
/// the processes that map it in equal parts, so the PSS of several processes adds up.
pub(crate) fn rss_pss_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Lines such as `Pss:                2512 kB`.
    let mut rss_pss = (None, None);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(kib)) = (words.next(), words.next().and_then(|w| w.parse::<u64>().ok())) else {
            continue;
        };
        match name {
            "Rss:" => rss_pss.0 = Some(kib),
            "Pss:" => rss_pss.1 = Some(kib),
            _ => {}
        }
    }
    match rss_pss {
        (Some(rss), Some(pss)) => Ok((rss, pss)),
        _ => bail!("no Rss or no Pss in {path}"),
    }
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`), 0 if unreadable.
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// The children of a process, over all its threads (`/proc/<pid>/task/*/children`).
pub(crate) fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    children
}

/// `SIGKILL` to a process, ignoring errors (it may be gone already).
pub(crate) fn kill_pid(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32).filter(|_| pid > 1) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// `SIGKILL` to a process group, ignoring errors (it may be gone already). Never group 0 or 1.
pub(crate) fn kill_group(pgid: u32) {
    if let Some(pgid) = rustix::process::Pid::from_raw(pgid as i32).filter(|_| pgid > 1) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
}

/// A request unanswered for this long is counted as an error.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a benchmark polls a condition (readiness, a drain).
pub(crate) const POLL: Duration = Duration::from_millis(10);
/// Length of each warm-up variant.
pub(crate) const WARM_UP: Duration = Duration::from_millis(300);
/// Distinct error messages a [`Tally`] keeps; the rest are counted under one key.
pub(crate) const MAX_ERROR_KINDS: usize = 8;
/// Lines of a server's log shown when it dies.
pub(crate) const LOG_TAIL_LINES: usize = 30;

/// `main` of a benchmark: runs it, and on error prints the error chain and exits with 1.
pub(crate) fn exit_on_error(result: Result<()>) {
    if let Err(err) = result {
        eprintln!("bench failed: {err:#}");
        std::process::exit(1);
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a log file.
pub(crate) fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// What clients saw: successes with their latencies, and errors by message.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one error; past [`MAX_ERROR_KINDS`] distinct messages, new ones go under one key.
    pub(crate) fn error(&mut self, message: String) {
        let key = if self.errors.len() < MAX_ERROR_KINDS || self.errors.contains_key(&message) {
            message
        } else {
            "(other messages)".to_owned()
        };
        *self.errors.entry(key).or_default() += 1;
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.latencies.extend(other.latencies);
        for (message, count) in other.errors {
            *self.errors.entry(message).or_default() += count;
        }
    }
}

/// One client of a closed loop over the Unix socket `socket`: while `more` says so, sends `request()` on its
/// own keep-alive connection and judges the answer with `check` (`Err` is a message for the error count).
/// A broken connection, or no answer within [`REQUEST_TIMEOUT`], is counted and the connection replaced;
/// `alive` is asked first, so that the loop ends with its `Err` once the server has died.
pub(crate) async fn closed_loop(
    socket: &std::path::Path,
    mut more: impl FnMut(&Tally) -> bool,
    request: impl Fn() -> Result<Request<Full<Bytes>>>,
    check: impl Fn(StatusCode, &[u8]) -> Result<(), String>,
    alive: impl Fn() -> Result<()>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut sender = None;
    while more(&tally) {
        let connection = match &mut sender {
            Some(connection) => connection,
            None => match connect_unix(socket).await {
                Ok(connection) => sender.insert(connection),
                Err(err) => {
                    alive()?;
                    tally.error(format!("connect: {err:#}"));
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            },
        };
        let started = std::time::Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(connection, request()?)).await {
            Ok(Ok((status, body))) => match check(status, &body) {
                Ok(()) => {
                    tally.ok += 1;
                    tally.latencies.push(started.elapsed());
                }
                Err(message) => tally.error(message),
            },
            Ok(Err(err)) => {
                alive()?;
                tally.error(format!("transport: {err:#}"));
                sender = None;
            }
            Err(_) => {
                alive()?;
                tally.error(format!("no answer within {REQUEST_TIMEOUT:?}"));
                sender = None;
            }
        }
    }
    Ok(tally)
}

/// One `GET` on a connection of its own, over the daemon's Unix socket.
pub(crate) async fn get(socket: &std::path::Path, path: &str) -> Result<(StatusCode, Bytes)> {
    let mut sender = connect_unix(socket).await?;
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        exchange(&mut sender, daemon_request(hyper::Method::GET, path, None)?),
    )
    .await
    .with_context(|| format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))?
}
