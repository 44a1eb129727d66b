//! corral exec API benchmark: trivial jobs end to end over the Unix socket, in one request
//! (`POST /exec/bench/true?wait=30s`, which answers once the job is finished) and in two
//! (`POST /exec/bench/true`, then `GET /exec/jobs/{id}?wait=30s`), measured side by side with the machine's
//! raw spawn rate and with adnanh/webhook running the same command per request.
//!
//! Run with `cargo bench -p corral --bench exec`. What each number means is in `bench/README.md` at the
//! repository root. Settings, from the environment:
//!
//! - `CORRAL_BENCH_SECS` (default 3): seconds each variant runs in each round; also the length of each raw
//!   spawn-rate reference.
//! - `CORRAL_BENCH_KEEPER` (default 1): `0` runs the daemon with `[processes] keeper = false`.
//! - `CORRAL_BENCH_ROUNDS` (default 3): rounds; the order alternates from round to round and the median
//!   round is reported.
//!
//! The benchmark starts one fresh `corral daemon` on a temporary state directory with a config file and one
//! tool file, isolated from the user's configuration, and one `webhook` (`/usr/bin/webhook`, or `$WEBHOOK`)
//! on a free loopback TCP port with one hook that runs `/bin/true` and answers with its output. It stops
//! both with `SIGTERM` at the end. Every client owns one persistent HTTP/1.1 connection and runs jobs in a
//! closed loop. A failed job is counted and reported; if a server dies, the benchmark stops with the end of
//! its log. If `webhook` is missing, its rows say so and the rest runs. The results go to stdout as
//! Markdown; progress goes to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

mod common;
use common::*;

/// Concurrent clients of each variant, each with its own connection.
const CLIENTS: [usize; 2] = [1, 16];
/// Workers of the raw spawn-rate reference, paired with [`CLIENTS`] in the same order.
const RAW_WORKERS: [usize; 2] = [1, 2];
/// The daemon's config. Finished jobs are kept for the whole run, so that the store can be counted at the
/// end against the jobs the benchmark saw accepted.
const CORRAL_CONFIG: &str =
    "tools_dir = \"tools.d\"\njob_ttl = \"1h\"\n\n[tasks]\nkeep = 1000000000\nretention = \"1000h\"\n";
/// `tools.d/bench.toml`: the one tool, with the one command every job runs.
const TOOL_FILE: &str = "name = \"bench\"\n\n[[command]]\nname = \"true\"\nexec = [\"/bin/true\"]\ntimeout = \"10s\"\n";
/// Where every job is submitted.
const SUBMIT_PATH: &str = "/exec/bench/true";
/// The body of every submit.
const SUBMIT_BODY: &[u8] = b"{}";
/// The long poll of every wait.
const WAIT_QUERY: &str = "?wait=30s";
/// webhook's hooks file: the same command, and the answer waits for it (its output is the body).
const HOOKS_FILE: &str =
    r#"[{"id": "true", "execute-command": "/bin/true", "include-command-output-in-response": true}]"#;
/// The path of webhook's hook.
const HOOK_PATH: &str = "/hooks/true";
/// The webhook binary unless `$WEBHOOK` names another.
const WEBHOOK_BIN: &str = "/usr/bin/webhook";
/// A request unanswered for this long is counted as an error and its connection replaced (above the 30 s
/// long poll).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// A job not finished this long after its submit is counted as an error.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to become ready (corral: `GET /ready` 200 and the tool loaded).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after `SIGTERM`.
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
// The servers under test
// ---------------------------------------------------------------------------------------------------

/// Where a server listens.
#[derive(Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Endpoint {
    /// The `Host` header of every request.
    fn host(&self) -> String {
        match self {
            Endpoint::Unix(_) => "corral".to_owned(),
            Endpoint::Tcp(addr) => addr.to_string(),
        }
    }
}

/// A server child process: `corral daemon` or `webhook`.
struct Server {
    name: &'static str,
    child: Mutex<Child>,
    pid: u32,
    endpoint: Endpoint,
    host: String,
    log: PathBuf,
}

/// Spawns `command` with stdin on `/dev/null` and stdout and stderr into the file `log`.
fn spawn_logged(mut command: std::process::Command, log: &Path) -> Result<Child> {
    let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    Ok(command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()?)
}

impl Server {
    fn new(name: &'static str, child: Child, endpoint: Endpoint, log: PathBuf) -> Server {
        Server {
            name,
            pid: child.id(),
            child: Mutex::new(child),
            host: endpoint.host(),
            endpoint,
            log,
        }
    }

    /// Starts `corral daemon --config <dir>/etc/corral.toml --state-dir <dir>/state`, isolated from the user's
    /// configuration and registry, with the one tool file in `<dir>/etc/tools.d` and its log (stdout and
    /// stderr) in `<dir>/daemon.log`.
    ///
    /// The config and the tools dir get a directory of their own because the daemon's tools watcher also
    /// watches the parent of the tools dir: with the log next to `tools.d`, every log line would wake it.
    fn start_corral(dir: &Path) -> Result<Server> {
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
        let config = etc.join("corral.toml");
        // `CORRAL_BENCH_KEEPER=0`: the daemon's own children instead of the keeper's, to see what it costs.
        let mut text = CORRAL_CONFIG.to_owned();
        if std::env::var("CORRAL_BENCH_KEEPER").is_ok_and(|v| v == "0") {
            text.push_str("\n[processes]\nkeeper = false\n");
        }
        std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
        let tools = etc.join("tools.d");
        std::fs::create_dir_all(&tools)?;
        std::fs::write(tools.join("bench.toml"), TOOL_FILE)?;
        let state = dir.join("state");
        let log = dir.join("daemon.log");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state);
        isolate(&mut command, dir);
        let child = spawn_logged(command, &log).context("cannot start `corral daemon`")?;
        Ok(Server::new(
            "corral daemon",
            child,
            Endpoint::Unix(state.join("corral.sock")),
            log,
        ))
    }

    /// Starts `webhook -hooks <dir>/hooks.json -ip 127.0.0.1 -port <free port>`, with its log in
    /// `<dir>/webhook.log`. `Ok(Err(why))` if there is no webhook binary.
    fn start_webhook(dir: &Path) -> Result<Result<Server, String>> {
        let binary = std::env::var_os("WEBHOOK").map_or_else(|| PathBuf::from(WEBHOOK_BIN), PathBuf::from);
        if !binary.is_file() {
            return Ok(Err(format!("{} not found (apt-get install webhook)", binary.display())));
        }
        let hooks = dir.join("hooks.json");
        std::fs::write(&hooks, HOOKS_FILE).with_context(|| format!("cannot write {}", hooks.display()))?;
        // A free port: bound and released at once. Another program could take it in between; then webhook
        // fails to start and the error says so.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.join("webhook.log");
        let mut command = std::process::Command::new(&binary);
        command
            .arg("-hooks")
            .arg(&hooks)
            .args(["-ip", "127.0.0.1", "-port", &port.to_string()]);
        let child = spawn_logged(command, &log).with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Ok(Server::new(
            "webhook",
            child,
            Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
            log,
        )))
    }

    /// `Err` with the exit status and the end of the log if the server has exited.
    fn check_alive(&self) -> Result<()> {
        let status = self.child.lock().unwrap_or_else(PoisonError::into_inner).try_wait()?;
        match status {
            None => Ok(()),
            Some(status) => bail!(
                "{} (pid {}) died: {status}\n--- last lines of its log ({}) ---\n{}",
                self.name,
                self.pid,
                self.log.display(),
                log_tail(&self.log)
            ),
        }
    }

    /// Polls until the server is ready: for corral, `GET /ready` answers 200 and `GET /tools` lists a tool;
    /// for webhook, one run of the hook answers 200. Returns how long that took.
    async fn wait_ready(&self) -> Result<Duration> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let last = match self.probe().await {
                Ok(()) => return Ok(start.elapsed()),
                Err(err) => format!("{err:#}"),
            };
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} was not ready after {READY_TIMEOUT:?} ({last})\n--- last lines of its log ---\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn probe(&self) -> Result<()> {
        match self.endpoint {
            Endpoint::Unix(_) => {
                let (status, body) = self.get("/ready").await?;
                if status != StatusCode::OK {
                    bail!("GET /ready: {status}: {}", snippet(&body));
                }
                let tools = self.get_json("/tools").await?;
                let listed = tools.get("tools").and_then(Value::as_array).map_or(0, Vec::len);
                if listed == 0 {
                    bail!(
                        "GET /tools lists no tool yet: {}",
                        snippet(tools.to_string().as_bytes())
                    );
                }
                Ok(())
            }
            Endpoint::Tcp(_) => {
                let (status, body) = self.get(HOOK_PATH).await?;
                if status != StatusCode::OK {
                    bail!("GET {HOOK_PATH}: {status}: {}", snippet(&body));
                }
                Ok(())
            }
        }
    }

    /// One `GET` on a connection of its own.
    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes)> {
        let mut sender = connect(&self.endpoint).await?;
        let request = request(Method::GET, path, &self.host, None)?;
        tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, request))
            .await
            .with_context(|| format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// `GET` of a JSON document that must answer 200.
    async fn get_json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.get(path).await?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}: {}", snippet(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON: {}", snippet(&body)))
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
                bail!("{} did not exit within {STOP_TIMEOUT:?} of SIGTERM", self.name);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Lines of the log, and how many of them are warnings or errors.
    fn log_counts(&self) -> (usize, usize) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let problems = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count();
        (log.lines().count(), problems)
    }
}

impl Drop for Server {
    /// On an early exit of the benchmark: `SIGTERM`, then `SIGKILL` if the server is still there.
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
// HTTP/1.1 over the Unix socket or loopback TCP
// ---------------------------------------------------------------------------------------------------

/// One persistent HTTP/1.1 connection (keep-alive); its driver runs as a task.
async fn connect(endpoint: &Endpoint) -> Result<Sender> {
    let sender = match endpoint {
        Endpoint::Unix(socket) => connect_unix(socket).await?,
        Endpoint::Tcp(addr) => {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        }
    };
    Ok(sender)
}

/// A request with a `Host` header and, with a body, `Content-Type: application/json`.
fn request(method: Method, path: &str, host: &str, body: Option<&'static [u8]>) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, host);
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(body.map_or_else(Bytes::new, Bytes::from_static)))?)
}

// ---------------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// corral: one request that submits and waits (`POST ...?wait=30s`).
    Corral,
    /// corral: submit, then long-poll the job until it is finished (two requests).
    CorralPoll,
    /// webhook: one request that runs the command and answers with its output.
    Webhook,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Corral => "corral exec",
            Target::CorralPoll => "corral exec submit + poll",
            Target::Webhook => "webhook",
        }
    }

    fn is_corral(self) -> bool {
        self != Target::Webhook
    }
}

/// Why a job did not count.
enum Failure {
    /// A wrong answer: the connection stays.
    Answer(String),
    /// A broken connection or no answer in time: the connection is replaced.
    Transport(String),
}

/// One request with the timeout; a transport failure or timeout is a [`Failure::Transport`].
async fn timed_exchange(sender: &mut Sender, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, request)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(err)) => Err(Failure::Transport(format!("transport: {err:#}"))),
        Err(_) => Err(Failure::Transport(format!("no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

fn parse_json(what: &str, status: StatusCode, body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body)
        .map_err(|err| Failure::Answer(format!("{what}: {status} with a body that is not JSON: {err}")))
}

/// A finished job as the client saw it.
struct Job {
    /// From sending the submit to having read its answer (corral only).
    submit: Option<Duration>,
    /// The final status (corral: `completed`, `failed`, ...; webhook: `200`).
    status: String,
}

/// One corral job. In one request (`one_request`): `POST /exec/bench/true?wait=30s`, 200 with the finished
/// job (a 202 means not finished yet: then long-poll as below). In two: `POST /exec/bench/true` (202 with a
/// job id), then `GET /exec/jobs/{id}?wait=30s` until the job is finished. `accepted` is set once the submit
/// was acknowledged. A job counts only if it ended `completed` with exit code 0.
async fn corral_job(sender: &mut Sender, host: &str, accepted: &mut bool, one_request: bool) -> Result<Job, Failure> {
    let started = Instant::now();
    let submit_path = if one_request {
        format!("{SUBMIT_PATH}{WAIT_QUERY}")
    } else {
        SUBMIT_PATH.to_owned()
    };
    let submit =
        request(Method::POST, &submit_path, host, Some(SUBMIT_BODY)).map_err(|e| Failure::Answer(e.to_string()))?;
    let (status, body) = timed_exchange(sender, submit).await?;
    let finished = one_request && status == StatusCode::OK;
    if status != StatusCode::ACCEPTED && !finished {
        return Err(Failure::Answer(format!(
            "POST {submit_path}: {status}: {}",
            snippet(&body)
        )));
    }
    let submit_latency = (!one_request).then(|| started.elapsed());
    let answer = parse_json("POST", status, &body)?;
    let Some(id) = answer.get("job_id").and_then(Value::as_str) else {
        return Err(Failure::Answer(format!(
            "POST {submit_path}: no job_id in {}",
            snippet(&body)
        )));
    };
    *accepted = true;
    if finished {
        return finished_job(&answer, submit_latency);
    }
    let path = format!("/exec/jobs/{id}{WAIT_QUERY}");
    loop {
        let wait = request(Method::GET, &path, host, None).map_err(|e| Failure::Answer(e.to_string()))?;
        let (status, body) = timed_exchange(sender, wait).await?;
        if status != StatusCode::OK {
            return Err(Failure::Answer(format!(
                "GET /exec/jobs/{{id}}: {status}: {}",
                snippet(&body)
            )));
        }
        let job = parse_json("GET /exec/jobs/{id}", status, &body)?;
        let job_status = job.get("status").and_then(Value::as_str).unwrap_or("?");
        if matches!(job_status, "accepted" | "queued" | "running") {
            if started.elapsed() > JOB_TIMEOUT {
                return Err(Failure::Answer(format!(
                    "job still {job_status} {JOB_TIMEOUT:?} after its submit"
                )));
            }
            continue;
        }
        return finished_job(&job, submit_latency);
    }
}

/// A finished job's JSON: counts if `completed` with exit code 0.
fn finished_job(job: &Value, submit: Option<Duration>) -> Result<Job, Failure> {
    let job_status = job.get("status").and_then(Value::as_str).unwrap_or("?");
    match job_status {
        "completed" => {
            let exit_code = job.get("exit_code").and_then(Value::as_i64);
            if exit_code != Some(0) {
                return Err(Failure::Answer(format!("job completed with exit_code {exit_code:?}")));
            }
            Ok(Job {
                submit,
                status: job_status.to_owned(),
            })
        }
        other => {
            let error = job.get("error").and_then(Value::as_str).unwrap_or("");
            Err(Failure::Answer(format!("job ended {other}: {error}")))
        }
    }
}

/// One webhook job: `GET /hooks/true`, which runs `/bin/true` and answers 200 with its output once it exited.
async fn webhook_job(sender: &mut Sender, host: &str) -> Result<Job, Failure> {
    let hook = request(Method::GET, HOOK_PATH, host, None).map_err(|e| Failure::Answer(e.to_string()))?;
    let (status, body) = timed_exchange(sender, hook).await?;
    if status != StatusCode::OK {
        return Err(Failure::Answer(format!(
            "GET {HOOK_PATH}: {status}: {}",
            snippet(&body)
        )));
    }
    Ok(Job {
        submit: None,
        status: status.as_u16().to_string(),
    })
}

/// What clients saw: successes with their latencies, and errors by message.
#[derive(Default)]
struct Tally {
    ok: u64,
    /// Submits acknowledged (corral only), whatever became of the job.
    accepted: u64,
    latencies: Vec<Duration>,
    submit_latencies: Vec<Duration>,
    /// Final statuses of the successful jobs.
    statuses: BTreeMap<String, u64>,
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
        self.accepted += other.accepted;
        self.latencies.extend(other.latencies);
        self.submit_latencies.extend(other.submit_latencies);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        for (message, count) in other.errors {
            for _ in 0..count {
                self.error(message.clone());
            }
        }
    }
}

/// One client: jobs back to back on its own connection until `deadline`; the job in flight at the deadline
/// is finished. A failed job is counted; a broken connection is replaced. `Err` only if the server died.
async fn client(server: Arc<Server>, target: Target, first: Sender, deadline: Instant) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut sender = Some(first);
    while Instant::now() < deadline {
        let connection = match &mut sender {
            Some(connection) => connection,
            None => match connect(&server.endpoint).await {
                Ok(connection) => sender.insert(connection),
                Err(err) => {
                    server.check_alive()?;
                    tally.error(format!("connect: {err:#}"));
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let mut accepted = false;
        let outcome = match target {
            Target::Corral => corral_job(connection, &server.host, &mut accepted, true).await,
            Target::CorralPoll => corral_job(connection, &server.host, &mut accepted, false).await,
            Target::Webhook => webhook_job(connection, &server.host).await,
        };
        tally.accepted += u64::from(accepted);
        match outcome {
            Ok(job) => {
                tally.ok += 1;
                tally.latencies.push(started.elapsed());
                tally.submit_latencies.extend(job.submit);
                *tally.statuses.entry(job.status).or_default() += 1;
            }
            Err(Failure::Answer(message)) => tally.error(message),
            Err(Failure::Transport(message)) => {
                server.check_alive()?;
                tally.error(message);
                sender = None;
            }
        }
    }
    Ok(tally)
}

/// `clients` clients, each with a connection opened before the clock starts, for `duration`.
async fn load(server: Arc<Server>, target: Target, clients: usize, duration: Duration) -> Result<(Tally, Duration)> {
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(connect(&server.endpoint).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for sender in senders {
        tasks.spawn(client(server.clone(), target, sender, deadline));
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        tally.merge(joined.context("a client task panicked")??);
    }
    Ok((tally, start.elapsed()))
}

// ---------------------------------------------------------------------------------------------------
// CPU time and memory, from /proc; store operations, from the daemon's /metrics
// ---------------------------------------------------------------------------------------------------

/// CPU clock ticks from `/proc/<pid>/stat` and `/proc/stat`.
#[derive(Clone, Copy)]
struct CpuTicks {
    /// The server's own threads: utime + stime.
    server: u64,
    /// The server's reaped children: cutime + cstime.
    children: u64,
    /// This benchmark process: utime + stime.
    bench: u64,
    /// The whole machine, all CPUs: busy and total.
    machine_busy: u64,
    machine_total: u64,
}

impl CpuTicks {
    fn now(server_pid: u32) -> Result<Self> {
        let (server, children) = process_ticks(&server_pid.to_string())?;
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
            server,
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
    /// Microseconds of server CPU per job.
    server_us: f64,
    /// Microseconds of CPU of the server's reaped children per job.
    children_us: f64,
    /// Microseconds of this benchmark's CPU per job.
    bench_us: f64,
    /// Share of all CPUs of the machine that were busy, in percent.
    machine_busy_pct: f64,
}

impl CpuUse {
    fn between(before: CpuTicks, after: CpuTicks, jobs: u64, tick_us: f64) -> Self {
        let per_job = |ticks: u64| ticks as f64 * tick_us / jobs.max(1) as f64;
        let total = after.machine_total.saturating_sub(before.machine_total).max(1);
        CpuUse {
            server_us: per_job(after.server.saturating_sub(before.server)),
            children_us: per_job(after.children.saturating_sub(before.children)),
            bench_us: per_job(after.bench.saturating_sub(before.bench)),
            machine_busy_pct: after.machine_busy.saturating_sub(before.machine_busy) as f64 * 100.0 / total as f64,
        }
    }
}

/// The daemon's Prometheus text (`GET /metrics`) as `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Store operations (reads and writes, each one call of the daemon's `Store`) and the wall time spent in
/// them, including the wait for the store's mutex, from `/metrics`.
#[derive(Clone, Copy, Default)]
struct StoreOps {
    count: f64,
    seconds: f64,
}

impl StoreOps {
    fn from_metrics(metrics: &BTreeMap<String, f64>) -> Self {
        StoreOps {
            count: metrics
                .get("corral_store_operation_seconds_count")
                .copied()
                .unwrap_or(f64::NAN),
            seconds: metrics
                .get("corral_store_operation_seconds_sum")
                .copied()
                .unwrap_or(f64::NAN),
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
    /// corral only: the submit alone (`POST` to 202).
    submit_p50_ms: f64,
    submit_p99_ms: f64,
    errors: BTreeMap<String, u64>,
    cpu: CpuUse,
    /// corral only: store operations per job, and their wall time per job in microseconds.
    store_ops: f64,
    store_us: f64,
}

/// The benchmark's state shared by every measurement.
struct Bench {
    rt: Runtime,
    corral: Arc<Server>,
    webhook: Option<Arc<Server>>,
    tick_us: f64,
    /// Every corral job the daemon acknowledged, warm-up included.
    accepted: u64,
    /// Every corral job the client saw end, by status, warm-up included.
    statuses: BTreeMap<String, u64>,
}

impl Bench {
    fn server(&self, target: Target) -> Option<Arc<Server>> {
        match target {
            Target::Corral | Target::CorralPoll => Some(self.corral.clone()),
            Target::Webhook => self.webhook.clone(),
        }
    }

    fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        let (status, body) = self.rt.block_on(self.corral.get("/metrics"))?;
        if status != StatusCode::OK {
            bail!("GET /metrics: {status}: {}", snippet(&body));
        }
        Ok(parse_metrics(&String::from_utf8_lossy(&body)))
    }

    /// Runs one variant; `None` if its server is not there.
    fn measure(&mut self, target: Target, clients: usize, duration: Duration) -> Result<Option<Sample>> {
        let Some(server) = self.server(target) else {
            return Ok(None);
        };
        server.check_alive()?;
        let store_before = if target.is_corral() {
            StoreOps::from_metrics(&self.metrics()?)
        } else {
            StoreOps::default()
        };
        let before = CpuTicks::now(server.pid)?;
        let (mut tally, elapsed) = self.rt.block_on(load(server.clone(), target, clients, duration))?;
        let after = CpuTicks::now(server.pid)?;
        let (store_ops, store_us) = if target.is_corral() {
            let store_after = StoreOps::from_metrics(&self.metrics()?);
            let jobs = tally.ok.max(1) as f64;
            (
                (store_after.count - store_before.count) / jobs,
                (store_after.seconds - store_before.seconds) * 1e6 / jobs,
            )
        } else {
            (f64::NAN, f64::NAN)
        };
        if target.is_corral() {
            self.accepted += tally.accepted;
            for (status, count) in &tally.statuses {
                *self.statuses.entry(status.clone()).or_default() += count;
            }
        }
        tally.latencies.sort_unstable();
        tally.submit_latencies.sort_unstable();
        let errors = tally.error_count();
        if errors > 0 {
            eprintln!("  {} with {clients} clients: {errors} errors", target.name());
        }
        Ok(Some(Sample {
            rate: tally.ok as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile_ms(&tally.latencies, 50.0),
            p99_ms: percentile_ms(&tally.latencies, 99.0),
            max_ms: tally.latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
            submit_p50_ms: percentile_ms(&tally.submit_latencies, 50.0),
            submit_p99_ms: percentile_ms(&tally.submit_latencies, 99.0),
            errors: tally.errors,
            cpu: CpuUse::between(before, after, tally.ok, self.tick_us),
            store_ops,
            store_us,
        }))
    }
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
// Statistics
// ---------------------------------------------------------------------------------------------------

/// Name of one variant in the tables.
fn variant_name(target: Target, clients: usize) -> String {
    format!("{}, {}", target.name(), plural(clients, "client"))
}

/// The server variants: corral in one request, corral in two, then webhook, fewer clients first.
fn variants() -> Vec<(Target, usize)> {
    [Target::Corral, Target::CorralPoll, Target::Webhook]
        .into_iter()
        .flat_map(|target| CLIENTS.map(|clients| (target, clients)))
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------------

/// Everything measured, by variant, one value per round.
struct Results {
    /// Indexed like [`variants`]; `Err` says why the variant was skipped.
    servers: Vec<Result<Vec<Sample>, String>>,
    /// Indexed like [`RAW_WORKERS`]; `Err` says why the reference was skipped.
    raw: Vec<Result<Vec<f64>, String>>,
}

impl Results {
    /// One value per round of a variant; empty if it was skipped.
    fn values(&self, index: usize, value: impl Fn(&Sample) -> f64) -> Vec<f64> {
        match &self.servers[index] {
            Ok(samples) => samples.iter().map(value).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// How a server ended.
struct Stopped {
    exit: ExitStatus,
    shutdown: Duration,
    log_lines: usize,
    log_problems: usize,
}

/// What the run found besides the per-round results: the servers and the machine.
struct Run {
    settings: Settings,
    cpus: usize,
    kernel: String,
    load_start: String,
    load_end: String,
    corral_pid: u32,
    corral_ready: Duration,
    webhook: Result<(u32, Duration, String), String>,
    rss_idle_kib: u64,
    rss_end_kib: u64,
    hwm_end_kib: u64,
    /// Every corral job the daemon acknowledged, warm-up included.
    accepted: u64,
    /// Every corral job the clients saw end, by status.
    statuses: BTreeMap<String, u64>,
    /// Exec tasks in the daemon's store by status at the end (`corral_tasks` of `/metrics`).
    stored: BTreeMap<String, u64>,
    corral_stopped: Stopped,
    webhook_stopped: Option<Stopped>,
}

fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    let mut tmp = BenchDir::new("exec")?;
    match measure_all(settings, &tmp.path) {
        Ok((run, results)) => {
            print!("{}", report(&run, &results)?);
            Ok(())
        }
        Err(err) => {
            tmp.keep = true;
            Err(err.context(format!(
                "the servers' files and logs are kept in {}",
                tmp.path.display()
            )))
        }
    }
}

fn stop(server: &Server) -> Result<Stopped> {
    let (exit, shutdown) = server.stop()?;
    let (log_lines, log_problems) = server.log_counts();
    Ok(Stopped {
        exit,
        shutdown,
        log_lines,
        log_problems,
    })
}

/// `webhook -version`, or what went wrong.
fn webhook_version(server: &Server) -> String {
    let binary = std::fs::read_link(format!("/proc/{}/exe", server.pid)).unwrap_or_else(|_| PathBuf::from(WEBHOOK_BIN));
    std::process::Command::new(&binary)
        .arg("-version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|err| format!("? ({err})"))
}

/// Starts both servers in `dir`, warms up, runs every round, and stops the servers.
fn measure_all(settings: Settings, dir: &Path) -> Result<(Run, Results)> {
    let duration = settings.duration();
    let rounds = settings.rounds;
    let load_start = loadavg();

    // The load generator: one thread, so that it takes at most one CPU from the servers.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    eprintln!("starting the corral daemon in {} ...", dir.display());
    let corral = Arc::new(Server::start_corral(dir)?);
    let corral_ready = rt.block_on(corral.wait_ready())?;
    let (rss_idle_kib, _) = memory_kib(corral.pid)?;
    let webhook = match Server::start_webhook(dir)? {
        Ok(server) => {
            eprintln!("starting webhook on {} ...", server.host);
            let ready = rt.block_on(server.wait_ready())?;
            let version = webhook_version(&server);
            Ok((Arc::new(server), ready, version))
        }
        Err(why) => {
            eprintln!("webhook skipped: {why}");
            Err(why)
        }
    };
    let mut bench = Bench {
        rt,
        corral: corral.clone(),
        webhook: webhook.as_ref().ok().map(|(server, _, _)| server.clone()),
        tick_us: tick_us(),
        accepted: 0,
        statuses: BTreeMap::new(),
    };

    // Warm-up: the servers' threads and store, the page cache, the spawn-rate program (built on first use).
    eprintln!("warm-up ...");
    let warm_up_raw = raw_spawn_rate(1, WARM_UP.as_secs_f64());
    let variants = variants();
    for &(target, clients) in &variants {
        bench.measure(target, clients, WARM_UP)?;
    }

    let mut results = Results {
        servers: variants
            .iter()
            .map(|&(target, _)| match (target, &webhook) {
                (Target::Webhook, Err(why)) => Err(why.clone()),
                _ => Ok(Vec::new()),
            })
            .collect(),
        raw: RAW_WORKERS
            .iter()
            .map(|_| warm_up_raw.as_ref().map(|_| Vec::new()).map_err(Clone::clone))
            .collect(),
    };
    for round in 0..rounds {
        // Alternate: raw, corral, webhook with fewer clients first; then webhook, corral with more clients
        // first, and raw last.
        let forward = round % 2 == 0;
        eprintln!(
            "round {}/{rounds} ({}) ...",
            round + 1,
            if forward {
                "raw 1 2, corral 1 16, corral submit + poll 1 16, webhook 1 16"
            } else {
                "webhook 16 1, corral submit + poll 16 1, corral 16 1, raw 2 1"
            }
        );
        let mut order: Vec<usize> = (0..variants.len()).collect();
        let mut raw_order: Vec<usize> = (0..RAW_WORKERS.len()).collect();
        if !forward {
            order.reverse();
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
            // The servers are idle while the reference runs; make sure they are still there.
            corral.check_alive()?;
            match &webhook {
                Ok((server, _, _)) => server.check_alive(),
                Err(_) => Ok(()),
            }
        };
        if forward {
            run_raw(&mut results)?;
        }
        for &v in &order {
            let (target, clients) = variants[v];
            if let Some(sample) = bench.measure(target, clients, duration)? {
                if let Ok(samples) = &mut results.servers[v] {
                    samples.push(sample);
                }
            }
        }
        if !forward {
            run_raw(&mut results)?;
        }
    }

    // The end state, read before the servers stop.
    let metrics = bench.metrics()?;
    let stored: BTreeMap<String, u64> = metrics
        .iter()
        .filter_map(|(name, value)| {
            let status = name
                .strip_prefix("corral_tasks{type=\"exec\",status=\"")?
                .strip_suffix("\"}")?;
            Some((status.to_owned(), *value as u64))
        })
        .collect();
    let (rss_end_kib, hwm_end_kib) = memory_kib(corral.pid)?;
    eprintln!("stopping the servers ...");
    let corral_stopped = stop(&corral)?;
    let webhook_stopped = match &webhook {
        Ok((server, _, _)) => Some(stop(server)?),
        Err(_) => None,
    };
    let run = Run {
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_start,
        load_end: loadavg(),
        corral_pid: corral.pid,
        corral_ready,
        webhook: webhook.map(|(server, ready, version)| (server.pid, ready, version)),
        rss_idle_kib,
        rss_end_kib,
        hwm_end_kib,
        accepted: bench.accepted,
        statuses: bench.statuses,
        stored,
        corral_stopped,
        webhook_stopped,
        settings,
    };
    Ok((run, results))
}

// ---------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------

fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    let text = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if text.is_empty() {
        "none".to_owned()
    } else {
        text
    }
}

/// The Markdown report, ending with the one-line summary.
fn report(run: &Run, results: &Results) -> Result<String, std::fmt::Error> {
    let variants = variants();
    let cpus = run.cpus;
    let mut out = String::new();
    writeln!(out, "# corral exec API benchmark\n")?;
    writeln!(
        out,
        "- machine: {cpus} CPUs, Linux {}; load average {} at start, {} at end",
        run.kernel, run.load_start, run.load_end
    )?;
    writeln!(
        out,
        "- settings: {} s per variant per round, {} rounds (order alternates); clients {CLIENTS:?}, each with one \
         keep-alive HTTP/1.1 connection, closed loop, on a current-thread tokio runtime",
        run.settings.secs, run.settings.rounds
    )?;
    writeln!(
        out,
        "- corral: `{}` (pid {}), fresh state dir, ready with the tool loaded {:.0} ms after spawn; one job = \
         `POST {SUBMIT_PATH}{WAIT_QUERY}` `{{}}` (200 with the finished job); for \"submit + poll\" one job = \
         `POST {SUBMIT_PATH}` `{{}}` (202) + `GET /exec/jobs/{{id}}{WAIT_QUERY}`; either until `completed` with \
         exit code 0; the command is `/bin/true`",
        env!("CARGO_BIN_EXE_corral"),
        run.corral_pid,
        run.corral_ready.as_secs_f64() * 1e3
    )?;
    match &run.webhook {
        Ok((pid, ready, version)) => writeln!(
            out,
            "- webhook: {version} (pid {pid}) on loopback TCP, ready {:.0} ms after spawn; one job = `GET {HOOK_PATH}` \
             (200), which runs `/bin/true` and answers with its output (`include-command-output-in-response`)",
            ready.as_secs_f64() * 1e3
        )?,
        Err(why) => writeln!(out, "- webhook: skipped: {why}")?,
    }
    writeln!(
        out,
        "- bold = median over rounds; ratios are per round (paired), then the median"
    )?;

    writeln!(out, "\n## Throughput (jobs per second, end to end)\n")?;
    writeln!(out, "| variant | per second | min | max | rounds | errors |")?;
    writeln!(out, "|---|---:|---:|---:|---|---:|")?;
    let mut all_errors: Vec<(String, &str, u64)> = Vec::new();
    for (v, &(target, clients)) in variants.iter().enumerate() {
        let name = variant_name(target, clients);
        match &results.servers[v] {
            Ok(samples) => {
                let rates = results.values(v, |s| s.rate);
                let (lo, hi) = min_max(&rates);
                let errors: u64 = samples.iter().map(|s| s.errors.values().sum::<u64>()).sum();
                writeln!(
                    out,
                    "| {name} | **{:.0}** | {lo:.0} | {hi:.0} | {} | {errors} |",
                    median(&rates),
                    list(&rates, 0)
                )?;
                for sample in samples {
                    for (message, count) in &sample.errors {
                        all_errors.push((name.clone(), message, *count));
                    }
                }
            }
            Err(why) => writeln!(out, "| {name} | skipped: {why} | | | | |")?,
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

    writeln!(out, "\n## Latency (ms, client side, successful jobs only)\n")?;
    writeln!(
        out,
        "| variant | p50 | p99 | max | submit p50 | submit p99 | p50 per round | p99 per round |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---|---|")?;
    for (v, &(target, clients)) in variants.iter().enumerate() {
        if results.servers[v].is_err() {
            continue;
        }
        let p50 = results.values(v, |s| s.p50_ms);
        let p99 = results.values(v, |s| s.p99_ms);
        let (submit_p50, submit_p99) = match target {
            Target::CorralPoll => (
                format!("{:.2}", median(&results.values(v, |s| s.submit_p50_ms))),
                format!("{:.2}", median(&results.values(v, |s| s.submit_p99_ms))),
            ),
            Target::Corral | Target::Webhook => ("-".to_owned(), "-".to_owned()),
        };
        writeln!(
            out,
            "| {} | **{:.2}** | **{:.2}** | {:.2} | {submit_p50} | {submit_p99} | {} | {} |",
            variant_name(target, clients),
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
    let rates = |target: Target, clients: usize| -> Option<Vec<f64>> {
        let v = variants.iter().position(|&x| x == (target, clients))?;
        results.servers[v].is_ok().then(|| results.values(v, |s| s.rate))
    };
    // Per client count: the median ratio to raw and to webhook, for the summary.
    let mut to_raw: Vec<Option<f64>> = Vec::new();
    let mut to_webhook: Vec<Option<f64>> = Vec::new();
    for target in [Target::Corral, Target::CorralPoll] {
        for (&clients, (&workers, raw)) in CLIENTS.iter().zip(RAW_WORKERS.iter().zip(&results.raw)) {
            let corral = rates(target, clients);
            let mut ratio_to_raw = None;
            if let (Some(corral), Ok(raw)) = (&corral, raw) {
                let values = ratios(corral, raw);
                let name = format!(
                    "{} {} / raw {} (target ≥ 0.7)",
                    target.name(),
                    plural(clients, "client"),
                    plural(workers, "worker")
                );
                ratio_row(&mut out, &name, &values)?;
                ratio_to_raw = Some(median(&values));
            }
            let mut ratio_to_webhook = None;
            if let (Some(corral), Some(webhook)) = (&corral, rates(Target::Webhook, clients)) {
                let values = ratios(corral, &webhook);
                let name = format!(
                    "{} {1} / webhook {1} (target > 1)",
                    target.name(),
                    plural(clients, "client")
                );
                ratio_row(&mut out, &name, &values)?;
                ratio_to_webhook = Some(median(&values));
            }
            if target == Target::Corral {
                to_raw.push(ratio_to_raw);
                to_webhook.push(ratio_to_webhook);
            }
        }
    }
    if let (Ok(raw_many), Ok(raw_one)) = (&results.raw[1], &results.raw[0]) {
        if let Some(webhook) = rates(Target::Webhook, CLIENTS[1]) {
            let name = format!(
                "webhook {} / raw {}",
                plural(CLIENTS[1], "client"),
                plural(RAW_WORKERS[1], "worker")
            );
            ratio_row(&mut out, &name, &ratios(&webhook, raw_many))?;
        }
        let name = format!(
            "raw {} / {}",
            plural(RAW_WORKERS[1], "worker"),
            plural(RAW_WORKERS[0], "worker")
        );
        ratio_row(&mut out, &name, &ratios(raw_many, raw_one))?;
    }
    for target in [Target::Corral, Target::CorralPoll, Target::Webhook] {
        if let (Some(many), Some(one)) = (rates(target, CLIENTS[1]), rates(target, CLIENTS[0])) {
            let name = format!(
                "{} {} clients / {}",
                target.name(),
                CLIENTS[1],
                plural(CLIENTS[0], "client")
            );
            ratio_row(&mut out, &name, &ratios(&many, &one))?;
        }
    }

    writeln!(out, "\n## Where the time goes (per job, median over rounds)\n")?;
    writeln!(
        out,
        "| variant | server CPU (µs) | its reaped children (µs) | bench client (µs) | machine busy (all {cpus} CPUs) \
         | store ops | store wall time (µs) | server CPU per round (µs) |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    for (v, &(target, clients)) in variants.iter().enumerate() {
        if results.servers[v].is_err() {
            continue;
        }
        let server_us = results.values(v, |s| s.cpu.server_us);
        let (ops, store_us) = if target.is_corral() {
            (
                format!("{:.1}", median(&results.values(v, |s| s.store_ops))),
                format!("{:.0}", median(&results.values(v, |s| s.store_us))),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} % | {ops} | {store_us} | {} |",
            variant_name(target, clients),
            median(&server_us),
            median(&results.values(v, |s| s.cpu.children_us)),
            median(&results.values(v, |s| s.cpu.bench_us)),
            median(&results.values(v, |s| s.cpu.machine_busy_pct)),
            list(&server_us, 0),
        )?;
    }
    writeln!(
        out,
        "\nStore ops: calls of the daemon's `Store` (reads and writes) per job, from `corral_store_operation_seconds` \
         of `GET /metrics`; their wall time includes waiting for the store's mutex."
    )?;

    writeln!(out, "\n## Correctness and servers\n")?;
    let stored_total: u64 = run.stored.values().sum();
    let stored_completed = run.stored.get("completed").copied().unwrap_or(0);
    let seen_completed = run.statuses.get("completed").copied().unwrap_or(0);
    let all_completed =
        stored_total == run.accepted && stored_completed == run.accepted && seen_completed == run.accepted;
    writeln!(
        out,
        "- corral jobs accepted (warm-up included): {}; ended as the clients saw them: {}; exec tasks in the store \
         at the end: {stored_total} ({}){}",
        run.accepted,
        counts_text(&run.statuses),
        counts_text(&run.stored),
        if all_completed {
            " — every accepted job ended `completed` with exit code 0"
        } else {
            " — **they differ: not every accepted job ended `completed`**"
        }
    )?;
    writeln!(
        out,
        "- corral daemon VmRSS {:.1} MiB when ready, {:.1} MiB at the end (peak {:.1} MiB)",
        mib(run.rss_idle_kib),
        mib(run.rss_end_kib),
        mib(run.hwm_end_kib)
    )?;
    let stopped_line = |out: &mut String, name: &str, stopped: &Stopped| -> std::fmt::Result {
        writeln!(
            out,
            "- {name}: SIGTERM to exit {:.0} ms, {}; log: {} lines, {} with WARN or ERROR",
            stopped.shutdown.as_secs_f64() * 1e3,
            stopped.exit,
            stopped.log_lines,
            stopped.log_problems
        )
    };
    stopped_line(&mut out, "corral daemon", &run.corral_stopped)?;
    if let Some(stopped) = &run.webhook_stopped {
        stopped_line(&mut out, "webhook", stopped)?;
    }
    if all_errors.is_empty() {
        writeln!(out, "- job errors: none")?;
    } else {
        writeln!(out, "- job errors:")?;
        for (variant, message, count) in &all_errors {
            writeln!(out, "  - {variant}: {count} × {message}")?;
        }
    }

    // The summary line.
    let mut summary = String::new();
    for (i, &clients) in CLIENTS.iter().enumerate() {
        if let Some(corral) = rates(Target::Corral, clients) {
            write!(summary, "exec {clients}c {:.0}/s", median(&corral))?;
            if let Some(Some(ratio)) = to_raw.get(i) {
                write!(summary, " = {ratio:.2}x raw {}w", RAW_WORKERS[i])?;
            }
            if let Some(Some(ratio)) = to_webhook.get(i) {
                write!(summary, ", {ratio:.2}x webhook")?;
            }
            if let Some(v) = variants.iter().position(|&x| x == (Target::Corral, clients)) {
                write!(
                    summary,
                    ", p50 {:.2} ms p99 {:.2} ms",
                    median(&results.values(v, |s| s.p50_ms)),
                    median(&results.values(v, |s| s.p99_ms))
                )?;
            }
            write!(summary, "; ")?;
        }
    }
    let error_total: u64 = all_errors.iter().map(|(_, _, n)| n).sum();
    write!(
        summary,
        "{} of {} jobs completed; {error_total} errors",
        stored_completed, run.accepted
    )?;
    writeln!(out, "\n{summary}")?;
    Ok(out)
}
