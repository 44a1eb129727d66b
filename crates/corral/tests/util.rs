//! Test harness: the real `corral` binary on a temp state dir, talked to over its socket and CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Generous deadline for conditions on a loaded 2-core machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corral"))
}

/// A fresh directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "corral-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("UNWRAP: temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon under test.
pub(crate) struct Daemon {
    pub(crate) child: Option<Child>,
    pub(crate) dir: TempDir,
    pub(crate) state_dir: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) config: Option<PathBuf>,
}

impl Daemon {
    /// Starts a daemon with no config file and waits until it is ready.
    pub(crate) async fn start() -> Daemon {
        Daemon::start_with_config(None, &[]).await
    }

    /// Starts a daemon with this config text (written to `corral.toml` in its temp dir).
    pub(crate) async fn start_with_config(config: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        let dir = TempDir::new();
        let state_dir = dir.0.join("state");
        let config_path = config.map(|text| {
            let path = dir.0.join("corral.toml");
            std::fs::write(&path, text).expect("UNWRAP: write config");
            path
        });
        let mut daemon = Daemon {
            child: None,
            socket: state_dir.join("corral.sock"),
            state_dir,
            config: config_path,
            dir,
        };
        daemon.spawn(env);
        daemon.wait_ready().await;
        daemon
    }

    /// Starts `command` (a `corral daemon` the test set up by hand) isolated in `dir`, logging to its
    /// `daemon.log`, and waits until the daemon in `state_dir` is ready.
    pub(crate) async fn start_command(mut command: Command, dir: TempDir, state_dir: PathBuf) -> Daemon {
        isolate(&mut command, &dir.0);
        let log = std::fs::File::create(dir.0.join("daemon.log")).expect("UNWRAP: log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("UNWRAP: spawn corral daemon");
        let mut daemon = Daemon {
            child: Some(child),
            socket: state_dir.join("corral.sock"),
            state_dir,
            config: None,
            dir,
        };
        daemon.wait_ready().await;
        daemon
    }

    /// A command for the daemon binary with this test's isolation (registry dir, no user config).
    pub(crate) fn daemon_command(&self) -> Command {
        let mut command = Command::new(bin());
        command.arg("daemon").arg("--state-dir").arg(&self.state_dir);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        isolate(&mut command, &self.dir.0);
        command
    }

    /// Starts (or restarts) the daemon process.
    pub(crate) fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut command = self.daemon_command();
        for (k, v) in env {
            command.env(k, v);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let log = std::fs::File::create(self.dir.0.join("daemon.log")).expect("UNWRAP: log file");
        command.stderr(log);
        self.child = Some(command.spawn().expect("UNWRAP: spawn corral daemon"));
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("UNWRAP: daemon running")
    }

    /// The daemon's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("daemon.log")).unwrap_or_default()
    }

    pub(crate) async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = self.try_request(Method::GET, "/ready", None).await {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("daemon exited early with {status}: {}", self.log());
                }
            }
            assert!(start.elapsed() < DEADLINE, "daemon not ready: {}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        request_unix(&self.socket, method, path, body.map(|b| b.to_string()), None).await
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.try_request(Method::GET, path, None)
            .await
            .expect("UNWRAP: daemon answers")
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.try_request(Method::POST, path, Some(&body))
            .await
            .expect("UNWRAP: daemon answers")
    }

    /// Runs the CLI against this daemon.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(bin());
        command.arg("--socket").arg(&self.socket).args(args);
        isolate(&mut command, &self.dir.0);
        command.stdin(Stdio::null()).output().expect("UNWRAP: run corral")
    }

    /// Runs the CLI against this daemon over its socket with `input` on its stdin.
    pub(crate) fn cli_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut command = Command::new(bin());
        command.arg("--socket").arg(&self.socket).args(args);
        isolate(&mut command, &self.dir.0);
        pipe_through(&mut command, input)
    }

    /// Starts the CLI against this daemon in the background; its stderr is read as it comes.
    pub(crate) fn cli_background(&self, args: &[&str]) -> Background {
        self.cli_background_with(args, Stdio::null())
    }

    /// [`Daemon::cli_background`] with its stdin a pipe, and the pipe's write end.
    pub(crate) fn cli_background_piped(&self, args: &[&str]) -> (Background, std::process::ChildStdin) {
        let mut background = self.cli_background_with(args, Stdio::piped());
        let stdin = background.child.stdin.take().expect("UNWRAP: piped");
        (background, stdin)
    }

    fn cli_background_with(&self, args: &[&str], stdin: Stdio) -> Background {
        let mut command = Command::new(bin());
        command.arg("--socket").arg(&self.socket).args(args);
        isolate(&mut command, &self.dir.0);
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("UNWRAP: spawn corral");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("UNWRAP: piped");
        let reader = {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut chunk) {
                    let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                    stderr.lock().unwrap_or_else(|p| p.into_inner()).push_str(&text);
                }
            })
        };
        Background { child, stderr, reader }
    }

    /// Runs the CLI against this daemon over TCP.
    pub(crate) fn cli_tcp(&self, addr: &str, token: &str, args: &[&str]) -> Output {
        let mut command = Command::new(bin());
        isolate(&mut command, &self.dir.0);
        command
            .arg("--url")
            .arg(format!("http://{addr}"))
            .arg("--token")
            .arg(token)
            .args(args);
        command.stdin(Stdio::null()).output().expect("UNWRAP: run corral")
    }

    /// `kill -9` of the daemon under a CLI command that waits on it: once the command says it lost the
    /// daemon, a new one starts on the same state dir and is ready.
    pub(crate) async fn crash_under(&mut self, cli: &Background) {
        self.kill9();
        wait_until("the CLI notices", || async { cli.stderr().contains("lost the daemon") }).await;
        self.spawn(&[]);
        self.wait_ready().await;
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub(crate) fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > DEADLINE * 2 {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
        kill_keeper(&self.state_dir);
    }
}

/// Keeps tests away from the user's config, state and daemon registry.
pub(crate) fn isolate(command: &mut Command, dir: &Path) {
    command
        .env("CORRAL_REGISTRY_DIR", dir.join("registry"))
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .env_remove("CORRAL_CONFIG")
        .env_remove("CORRAL_STATE_DIR")
        .env_remove("CORRAL_SOCKET")
        .env_remove("CORRAL_URL")
        .env_remove("CORRAL_TOKEN")
        .env_remove("NOTIFY_SOCKET");
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> anyhow::Result<(u16, Value)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok((status, value))
}

fn build(method: Method, host: &str, path: &str, body: Option<String>, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path).header("host", host);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("UNWRAP: valid request")
}

pub(crate) async fn request_unix(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    exchange(stream, build(method, "localhost", path, body, token)).await
}

pub(crate) async fn request_tcp(
    addr: &str,
    method: Method,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    exchange(stream, build(method, addr, path, body, token)).await
}

/// Polls `cond` every 20 ms until it holds or the deadline passes.
pub(crate) async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pids of the live members of process group `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("UNWRAP: /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(Some(stat)) = corral_proc::read_stat(pid) {
            if stat.pgrp == pgid && !stat.is_dead() {
                members.push(pid);
            }
        }
    }
    members
}

/// A free TCP port on loopback.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("UNWRAP: loopback bind")
}

/// Test clean-up after a daemon that was killed and not restarted: its keeper (and what the keeper
/// still holds) would outlive the test. Kills each held child's group, then the keeper.
pub(crate) fn kill_keeper(state_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(state_dir.join("keeper.sock.lock")) else {
        return;
    };
    let Some(pid) = text.trim().parse::<u32>().ok() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline.split(|b| *b == 0).any(|arg| arg == b"keeper") {
        return; // gone already, or the pid is someone else's now
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
        let _ = corral_proc::signal_group(child, corral_proc::Signal::KILL);
    }
    let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
}

/// Runs `command` with `input` written to its stdin (from a thread, so that a child that writes before it has
/// read everything cannot deadlock the test) and returns its output.
pub(crate) fn pipe_through(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("UNWRAP: spawn");
    let mut stdin = child.stdin.take().expect("UNWRAP: piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        // A child that exits without reading everything closes the pipe: not this helper's failure.
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("UNWRAP: wait");
    let _ = writer.join();
    output
}

/// A CLI command started with [`Daemon::cli_background`].
pub(crate) struct Background {
    child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Background {
    /// Sends it a signal by name (`INT`, `TERM`).
    pub(crate) fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// What it wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for it to exit: its status, stdout and whole stderr.
    pub(crate) async fn finish(self) -> (std::process::ExitStatus, String, String) {
        let Background { child, stderr, reader } = self;
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("UNWRAP: join")
            .expect("UNWRAP: wait");
        let _ = reader.join();
        let stderr = stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
        )
    }
}
