//! Daemon lifecycle: lock, socket, config errors, crash and restart, graceful stop.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{bin, isolate, wait_until, Daemon, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_exits_at_once_and_touches_nothing() {
    let daemon = Daemon::start().await;
    let db_before = std::fs::metadata(daemon.state_dir.join("corral.db"))
        .expect("UNWRAP: db")
        .len();
    let lock_before = std::fs::read_to_string(daemon.state_dir.join("corral.lock")).expect("UNWRAP: lock");
    let started = Instant::now();
    let output = daemon
        .daemon_command()
        .stdin(Stdio::null())
        .output()
        .expect("UNWRAP: run second daemon");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the second daemon must not wait for the lock"
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.trim().lines().last().unwrap_or("");
    assert!(
        last.starts_with("corral: ") && last.contains(&format!("pid {}", daemon.pid())),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    // The first is undisturbed: same lock content, socket still answers.
    assert_eq!(
        std::fs::read_to_string(daemon.state_dir.join("corral.lock")).expect("UNWRAP: lock"),
        lock_before
    );
    assert_eq!(daemon.get("/health").await.0, 200);
    assert!(
        std::fs::metadata(daemon.state_dir.join("corral.db"))
            .expect("UNWRAP: db")
            .len()
            >= db_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dir_is_0700_and_socket_is_0600() {
    let daemon = Daemon::start().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("UNWRAP: exists").permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.socket), 0o600);
    assert_eq!(mode(&daemon.state_dir), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_use_the_socket() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to act as user nobody");
        return;
    }
    if std::process::Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv not installed");
        return;
    }
    let daemon = Daemon::start().await;
    // Let nobody reach the socket file through the directories, so only the socket's own checks stand.
    std::fs::set_permissions(&daemon.state_dir, std::fs::Permissions::from_mode(0o711)).expect("UNWRAP: chmod");
    std::fs::set_permissions(&daemon.dir.0, std::fs::Permissions::from_mode(0o711)).expect("UNWRAP: chmod");
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("status")
        .output()
        .expect("UNWRAP: setpriv");
    assert!(!output.status.success());
    // The daemon is still fine.
    assert_eq!(daemon.get("/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_exits_2_naming_file_and_line() {
    let dir = TempDir::new();
    let config = dir.0.join("corral.toml");
    std::fs::write(&config, "job_ttl = \"5m\"\nlisten_addr = \"127.0.0.1:1\"\n").expect("UNWRAP: write");
    let mut command = std::process::Command::new(bin());
    command
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.0.join("state"));
    isolate(&mut command, &dir.0);
    let output = command.stdin(Stdio::null()).output().expect("UNWRAP: run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:2:", config.display())), "{stderr}");
    assert!(stderr.contains("listen_addr"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!dir.0.join("state").exists(), "nothing touched");

    // An explicit config that does not exist is an error too; a missing default one is not.
    let mut command = std::process::Command::new(bin());
    command.arg("daemon").arg("--config").arg(dir.0.join("missing.toml"));
    isolate(&mut command, &dir.0);
    let output = command.stdin(Stdio::null()).output().expect("UNWRAP: run");
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_daemon_the_cli_says_so_in_one_line() {
    let dir = TempDir::new();
    // Also the commands that wait for a daemon to come back once one answered them: none ever did here.
    let id = "00000000-0000-4000-8000-000000000001";
    for args in [
        vec!["status"],
        vec!["job", id, "--wait"],
        vec!["task", "get", id, "--wait"],
    ] {
        let mut command = std::process::Command::new(bin());
        command.arg("--socket").arg(dir.0.join("nope.sock")).args(&args);
        isolate(&mut command, &dir.0);
        let output = command.output().expect("UNWRAP: run");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("start one with `corral daemon`"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_comes_up_healthy_with_no_record_left_running() {
    let mut daemon = Daemon::start().await;
    let (status, short) = daemon
        .post("/processes", json!({"command": ["sh", "-c", "exit 0"]}))
        .await;
    assert_eq!(status, 201, "{short}");
    let (status, long) = daemon.post("/processes", json!({"command": ["sleep", "0.5"]})).await;
    assert_eq!(status, 201, "{long}");
    let (_, forever) = daemon.post("/processes", json!({"command": ["sleep", "300"]})).await;
    let forever_pid = forever["pid"].as_u64().expect("UNWRAP: pid") as u32;
    let gate = daemon.dir.0.join("gate");
    let script = format!(
        "echo early; while [ ! -e {} ]; do sleep 0.05; done; echo late; exit 7",
        gate.display()
    );
    let (_, later) = daemon
        .post("/processes", json!({"command": ["sh", "-c", script]}))
        .await;
    let later_id = later["id"].as_str().expect("UNWRAP: id").to_owned();
    let short_id = short["id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("early is captured and the short one ended", || async {
        daemon.get(&format!("/processes/{later_id}/output")).await.1["stdout"] == "early\n"
            && daemon.get(&format!("/processes/{short_id}")).await.1["state"] == "completed"
    })
    .await;
    daemon.kill9();
    // The old socket file is still there; the lock died with the daemon.
    assert!(daemon.socket.exists());
    tokio::time::sleep(Duration::from_millis(700)).await; // let `sleep 0.5` end while no daemon runs
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (status, health) = daemon.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let (_, record) = daemon
        .get(&format!("/processes/{}", long["id"].as_str().expect("UNWRAP: id")))
        .await;
    // It ended while no daemon ran; the keeper kept its exit status.
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    // The one that ended before the crash: its output was in the killed daemon's memory, and that is said.
    let (_, output) = daemon.get(&format!("/processes/{short_id}/output")).await;
    assert_eq!(output["kept"], false, "{output}");
    let logs = daemon.cli(&["logs", &short_id]);
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("holds no output"),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    // The one still alive is recovered: still running, and stoppable, never by pid alone.
    let forever_id = forever["id"].as_str().expect("UNWRAP: id");
    let (_, record) = daemon.get(&format!("/processes/{forever_id}")).await;
    assert_eq!(record["state"], "running", "{record}");
    let (status, stopped) = daemon
        .post(&format!("/processes/{forever_id}/stop"), json!({"grace": "5s"}))
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "interrupted", "{stopped}");
    assert!(corral_proc::read_stat(forever_pid)
        .ok()
        .flatten()
        .is_none_or(|s| s.is_dead()));
    // One that ends after the restart: its real exit code and its late output, through the keeper.
    std::fs::write(&gate, b"").expect("UNWRAP: temp dir");
    wait_until("the re-attached process ends", || async {
        daemon.get(&format!("/processes/{later_id}")).await.1["state"] == "failed"
    })
    .await;
    let (_, record) = daemon.get(&format!("/processes/{later_id}")).await;
    assert_eq!(record["exit_code"], 7, "{record}");
    let (_, output) = daemon.get(&format!("/processes/{later_id}/output")).await;
    // "early" was in the killed daemon's memory only: the output says that something may be missing.
    assert_eq!(
        output["stdout"],
        format!("{}late\n", corral_proc::LOST_BEFORE_ADOPTION),
        "{output}"
    );
    let (_, running) = daemon.get("/processes?state=running").await;
    assert_eq!(running.as_array().map(Vec::len), Some(0), "{running}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_processes_and_exits_0() {
    let mut daemon = Daemon::start().await;
    let (_, record) = daemon
        .post("/processes", json!({"command": ["sh", "-c", "sleep 300 & wait"]}))
        .await;
    let pgid = record["pgid"].as_u64().expect("UNWRAP: pgid") as u32;
    wait_until("group has 2 members", || async {
        crate::util::group_members(pgid).len() >= 2
    })
    .await;
    let status = daemon.terminate().expect("UNWRAP: was running");
    assert_eq!(status.code(), Some(0), "signal {:?}: {}", status.signal(), daemon.log());
    assert!(crate::util::group_members(pgid).is_empty());
    assert!(!daemon.socket.exists(), "socket removed");
    // The record says how it ended, and is readable by the next daemon.
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (_, after) = daemon
        .get(&format!("/processes/{}", record["id"].as_str().expect("UNWRAP: id")))
        .await;
    assert_eq!(after["state"], "interrupted", "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_lists_the_running_daemon() {
    let daemon = Daemon::start().await;
    let output = daemon.cli(&["--json", "daemons"]);
    assert!(output.status.success());
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("UNWRAP: json");
    let pids: Vec<u64> = list
        .as_array()
        .expect("UNWRAP: array")
        .iter()
        .filter_map(|e| e["pid"].as_u64())
        .collect();
    assert_eq!(pids, vec![u64::from(daemon.pid())]);
    // A dead entry is pruned on read.
    let registry = daemon.dir.0.join("registry");
    std::fs::write(
        registry.join("999999.json"),
        r#"{"pid":999999,"start_ticks":1,"boot_id":"x","socket":"/nope","state_dir":"/nope","listen":null,"version":"0","started":"x"}"#,
    )
    .expect("UNWRAP: write");
    let output = daemon.cli(&["--json", "daemons"]);
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("UNWRAP: json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(!registry.join("999999.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_example_config_starts_and_runs_the_example_pipeline() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = repo.join("examples/corral.toml");
    let dir = TempDir::new();
    let mut daemon = Daemon {
        child: None,
        state_dir: dir.0.join("state"),
        socket: dir.0.join("state/corral.sock"),
        config: Some(example),
        dir,
    };
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    assert_eq!(daemon.get("/health").await.0, 200);
    let pipeline = repo.join("examples/pipeline.toml");
    let output = daemon.cli(&["pipeline", "run", pipeline.to_str().expect("UNWRAP: utf8")]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("4 passed, 0 failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_gets_ready_and_stopping() {
    let dir = TempDir::new();
    let notify_path = dir.0.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("UNWRAP: bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("UNWRAP: timeout");
    let mut daemon = Daemon {
        child: None,
        state_dir: dir.0.join("state"),
        socket: dir.0.join("state/corral.sock"),
        config: None,
        dir,
    };
    let notify = notify_path.to_str().expect("UNWRAP: utf8").to_owned();
    let mut command = daemon.daemon_command();
    command
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    daemon.child = Some(command.spawn().expect("UNWRAP: spawn"));
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("UNWRAP: READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready was announced after the socket was serving.
    assert_eq!(daemon.get("/ready").await.0, 200);
    let status = daemon.terminate().expect("UNWRAP: running");
    assert!(status.success());
    let n = socket.recv(&mut buf).expect("UNWRAP: STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_keeper_dies_processes_still_start_and_health_says_so() {
    let daemon = Daemon::start().await;
    let (_, health) = daemon.get("/health").await;
    assert_eq!(health["checks"]["keeper"]["ok"], true, "{health}");
    let lock = std::fs::read_to_string(daemon.state_dir.join("keeper.sock.lock")).expect("UNWRAP: keeper runs");
    let keeper: u32 = lock.trim().parse().expect("UNWRAP: the keeper's pid");
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(keeper.to_string())
        .status();
    wait_until("health reports the keeper gone", || async {
        let (status, health) = daemon.get("/health").await;
        status == 503 && health["checks"]["keeper"]["ok"] == false
    })
    .await;
    // Degraded, not down: a process still starts (as the daemon's own child) and its end is recorded.
    let (status, record) = daemon
        .post("/processes", json!({"command": ["sh", "-c", "exit 4"]}))
        .await;
    assert_eq!(status, 201, "{record}");
    let id = record["id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("the process ends", || async {
        daemon.get(&format!("/processes/{id}")).await.1["state"] == "failed"
    })
    .await;
    let (_, record) = daemon.get(&format!("/processes/{id}")).await;
    assert_eq!(record["exit_code"], 4, "{record}");
}

/// A state dir given relative to the daemon's working directory works, keeper included (the keeper runs
/// in `/`, so it must get absolute paths).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_state_dir_works_with_the_keeper() {
    let dir = TempDir::new();
    let mut command = std::process::Command::new(bin());
    command
        .current_dir(&dir.0)
        .args(["daemon", "--state-dir", "relative-state"]);
    let state_dir = dir.0.join("relative-state");
    let daemon = Daemon::start_command(command, dir, state_dir).await;
    let (status, health) = daemon.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["checks"]["keeper"]["ok"], true, "{health}");
    assert!(daemon.state_dir.join("keeper.sock").exists());
    let (status, record) = daemon
        .post("/processes", json!({"command": ["sh", "-c", "exit 5"]}))
        .await;
    assert_eq!(status, 201, "{record}");
}

/// A pipe whose reader is already closed: every write to it fails with `EPIPE`.
fn closed_pipe() -> Stdio {
    let (reader, writer) = rustix::pipe::pipe().expect("UNWRAP: pipe");
    drop(reader);
    Stdio::from(writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_stderr_is_gone_keeps_running_and_stops_cleanly() {
    // `corral daemon 2>&1 | head -1`, or a log reader that died: the daemon panicked at its next log line
    // (exit 101), leaving the keeper and every process behind.
    let mut daemon = Daemon::start().await;
    daemon.terminate();
    let mut command = daemon.daemon_command();
    command.stdin(Stdio::null()).stdout(closed_pipe()).stderr(closed_pipe());
    daemon.child = Some(command.spawn().expect("UNWRAP: spawn corral daemon"));
    daemon.wait_ready().await;
    let (status, started) = daemon.post("/processes", json!({"command": ["sleep", "300"]})).await;
    assert_eq!(status, 201, "{started}");
    let pid = started["pid"].as_u64().expect("UNWRAP: pid") as u32;
    let keeper: u32 = std::fs::read_to_string(daemon.state_dir.join("keeper.sock.lock"))
        .expect("UNWRAP: keeper runs")
        .trim()
        .parse()
        .expect("UNWRAP: the keeper's pid");
    let exit = daemon.terminate().expect("UNWRAP: exit status");
    assert!(exit.success(), "a clean stop: {exit:?}");
    let gone =
        |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat.contains(") Z "));
    wait_until("the process and the keeper are gone", || async {
        gone(pid) && gone(keeper)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_output_into_a_closed_pipe_ends_quietly() {
    // `corral ps | head -1` with more lines than head reads: `println!` panicked (exit 101, a backtrace).
    let daemon = Daemon::start().await;
    let (status, _) = daemon.post("/processes", json!({"command": ["true"]})).await;
    assert_eq!(status, 201);
    for args in [&["ps"][..], &["status"], &["tools"]] {
        let mut command = std::process::Command::new(bin());
        command.arg("--socket").arg(&daemon.socket).args(args);
        isolate(&mut command, &daemon.dir.0);
        let output = command
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("UNWRAP: run corral");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_a_daemon_whose_state_dir_the_default_config_names() {
    // SPEC: the CLI looks at "the default state dir's corral.sock", and the state dir may come from the
    // config file's `state_dir`; the CLI used to skip the config file and look in $XDG_STATE_HOME.
    let dir = TempDir::new();
    let config_dir = dir.0.join("xdg-config").join("corral");
    std::fs::create_dir_all(&config_dir).expect("UNWRAP: config dir");
    std::fs::write(config_dir.join("corral.toml"), "state_dir = \"st\"\n").expect("UNWRAP: config");
    let state_dir = config_dir.join("st");
    let mut command = std::process::Command::new(bin());
    command.arg("daemon");
    let daemon = Daemon::start_command(command, dir, state_dir).await;
    let mut status = std::process::Command::new(bin());
    status.arg("--json").arg("status");
    isolate(&mut status, &daemon.dir.0);
    let output = status.stdin(Stdio::null()).output().expect("UNWRAP: run corral");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let health: serde_json::Value = serde_json::from_slice(&output.stdout).expect("UNWRAP: JSON status");
    assert_eq!(health["pid"], daemon.pid(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_for_what_this_build_does_not_serve_yet_is_warned_about() {
    // Services and the GitHub webhook are in the contract but not in this build: a config that sets them
    // loads (so one written for the whole contract works), and the log says they are ignored.
    let services = TempDir::new();
    std::fs::write(services.0.join("web.toml"), "name = \"web\"\n").expect("UNWRAP: service file");
    let config = format!(
        "services_dir = {:?}\n[webhook.github]\nsecret_env = \"CORRAL_TEST_HOOK\"\n",
        services.0.display().to_string()
    );
    let daemon = Daemon::start_with_config(Some(&config), &[("CORRAL_TEST_HOOK", "0123456789abcdef")]).await;
    let log = daemon.log();
    assert!(
        log.contains("[webhook.github] is set, but this build has no webhook route yet"),
        "{log}"
    );
    assert!(
        log.contains("holds 1 service file(s), but this build does not run services yet"),
        "{log}"
    );
}
