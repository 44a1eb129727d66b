//! Processes through the API and the CLI: run, stop whole trees, signals, stdin, output, labels.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{group_members, pipe_through, wait_until, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_streams_output_and_exits_with_the_childs_code() {
    let daemon = Daemon::start().await;
    let output = daemon.cli(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("err"));

    let output = daemon.cli(&["run", "--", "true"]);
    assert_eq!(output.status.code(), Some(0));
    let output = daemon.cli(&["run", "--", "/nonexistent/program"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
    // Killed by a signal: 128 + signal number, as shells do.
    let output = daemon.cli(&["run", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(output.status.code(), Some(137));
    let output = daemon.cli(&["run", "--timeout", "300ms", "--grace", "1s", "--", "sleep", "300"]);
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timed out"), "says why: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_stdin_forwards_every_byte_only_when_asked() {
    let daemon = Daemon::start().await;
    // More than one chunk of the CLI's, with bytes that are not UTF-8 text (NUL, 0xff).
    let input: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(7) % 256) as u8).collect();
    let expected = pipe_through(&mut std::process::Command::new("sha256sum"), &input);
    assert!(expected.status.success());
    let output = daemon.cli_with_stdin(&["run", "--stdin", "--", "sha256sum"], &input);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&expected.stdout)
    );

    // Without --stdin the process reads nothing: `corral run` in a `while read` loop leaves the loop's input.
    let output = daemon.cli_with_stdin(&["run", "--", "wc", "-c"], b"for the loop, not the process\n");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "0");

    // A process that exits without reading its input: the CLI ends with its code, it does not hang.
    let output = daemon.cli_with_stdin(&["run", "-i", "--", "sh", "-c", "exit 4"], &input);
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_json_prints_each_output_line_then_the_record() {
    let daemon = Daemon::start().await;
    let output = daemon.cli(&["--json", "run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(output.status.code(), Some(3));
    let values: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("UNWRAP: a stream of JSON values");
    let lines: Vec<(&str, &str)> = values
        .iter()
        .filter(|v| v.get("line").is_some())
        .filter_map(|v| Some((v["stream"].as_str()?, v["line"].as_str()?)))
        .collect();
    assert!(
        lines.contains(&("stdout", "out")) && lines.contains(&("stderr", "err")),
        "{values:?}"
    );
    let record = values.last().expect("UNWRAP: the record comes last");
    assert_eq!(record["exit_code"], 3, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_passes_output_on_byte_for_byte() {
    let daemon = Daemon::start().await;
    // No newline added at the end, bytes that are not UTF-8 as they are.
    let output = daemon.cli(&["run", "--", "printf", "abc"]);
    assert_eq!(output.stdout, b"abc");
    let output = daemon.cli(&["run", "--", "printf", "\\377\\376\\000abc\\n"]);
    assert_eq!(output.stdout, b"\xff\xfe\x00abc\n");
    // Lines cut by the reads of the pipe (the snapshot a follower starts with ends mid-line) come out whole.
    let file = daemon.dir.0.join("seq.txt");
    let text: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    std::fs::write(&file, &text).expect("UNWRAP: write");
    let output = daemon.cli(&["run", "--", "cat", file.to_str().expect("UNWRAP: utf8")]);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout == text.as_bytes(), "{} bytes differ", output.stdout.len());
    // Through stdin and back: any bytes.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(31) % 256) as u8).collect();
    let output = daemon.cli_with_stdin(&["run", "-i", "--", "cat"], &input);
    assert!(
        output.stdout == input,
        "{} bytes back of {}",
        output.stdout.len(),
        input.len()
    );
    // A relative --dir is the caller's, not the daemon's or the keeper's.
    let sub = daemon.dir.0.join("sub");
    std::fs::create_dir_all(&sub).expect("UNWRAP: mkdir");
    let mut command = std::process::Command::new(crate::util::bin());
    crate::util::isolate(&mut command, &daemon.dir.0);
    let output = command
        .current_dir(&daemon.dir.0)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["run", "--dir", "sub", "--", "pwd"])
        .output()
        .expect("UNWRAP: run");
    let expected = std::fs::canonicalize(&sub).expect("UNWRAP: canonical");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        expected.display().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_is_told_when_the_oldest_output_is_no_longer_kept() {
    let daemon = Daemon::start().await;
    let (status, record) = daemon
        .post(
            "/processes",
            json!({"command": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo done; sleep 300"]}),
        )
        .await;
    assert_eq!(status, 201, "{record}");
    let id = record["id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("all written", || async {
        daemon.get(&format!("/processes/{id}/output")).await.1["stdout"]
            .as_str()
            .is_some_and(|s| s.ends_with("done\n"))
    })
    .await;
    let logs = daemon.cli(&["logs", &id]);
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(stderr.contains("the start of stdout is not kept"), "{stderr}");
    assert!(logs.stdout.ends_with(b"xxx\ndone\n"));
    let cli = daemon.cli_background(&["logs", "-f", &id]);
    wait_until("the follower is told", || async {
        cli.stderr().contains("are not kept")
    })
    .await;
    let (status, _) = daemon.post(&format!("/processes/{id}/stop"), json!({})).await;
    assert_eq!(status, 200);
    let (status, _, stderr) = cli.finish().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("of stdout are not kept"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_into_a_closed_pipe_stops_its_process() {
    let daemon = Daemon::start().await;
    let mut cli = corral_run(
        &daemon,
        &["--label", "test=head", "--", "sh", "-c", "while :; do echo y; done"],
    );
    // Read a little, then go away as `head -2` does.
    let mut stdout = cli.stdout.take().expect("UNWRAP: piped");
    let mut first = [0u8; 4];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("UNWRAP: output");
    drop(stdout);
    let status = exit_within(&mut cli, crate::util::DEADLINE, "after its reader went away").await;
    assert_eq!(status.code(), Some(0));
    wait_until("the process is stopped", || async {
        daemon.get("/processes?label=test%3Dhead").await.1[0]["state"] == "interrupted"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_nothing_of_a_tree() {
    let daemon = Daemon::start().await;
    let (status, record) = daemon
        .post(
            "/processes",
            json!({"command": ["sh", "-c", "sleep 300 & sleep 300 & wait"]}),
        )
        .await;
    assert_eq!(status, 201, "{record}");
    assert_eq!(record["state"], "running");
    let pgid = record["pgid"].as_u64().expect("UNWRAP: pgid") as u32;
    wait_until("3 members", || async { group_members(pgid).len() >= 3 }).await;
    let members = group_members(pgid);
    let id = record["id"].as_str().expect("UNWRAP: id");
    let output = daemon.cli(&["stop", id]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(group_members(pgid).is_empty());
    for pid in members {
        assert!(
            corral_proc::read_stat(pid).ok().flatten().is_none_or(|s| s.is_dead()),
            "{pid} left"
        );
    }
    let (_, after) = daemon.get(&format!("/processes/{id}")).await;
    assert_eq!(after["state"], "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_term_is_gone_after_the_grace() {
    let daemon = Daemon::start().await;
    let (_, record) = daemon
        .post(
            "/processes",
            json!({"command": ["sh", "-c", "trap '' TERM; sleep 300 & wait"]}),
        )
        .await;
    let pgid = record["pgid"].as_u64().expect("UNWRAP: pgid") as u32;
    wait_until("2 members", || async { group_members(pgid).len() >= 2 }).await;
    let id = record["id"].as_str().expect("UNWRAP: id");
    let asked = Instant::now();
    let (status, stopped) = daemon
        .post(&format!("/processes/{id}/stop"), json!({"grace": "500ms"}))
        .await;
    assert!(asked.elapsed() >= Duration::from_millis(500));
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "interrupted");
    assert_eq!(stopped["signal"], "KILL");
    assert!(group_members(pgid).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_or_interrupt_without_a_grace_uses_the_one_given_at_start() {
    // The grace given at start applied to its timeout only; a stop, an interrupt or the daemon's shutdown
    // waited the default 10 s instead. The bound below is that default: the 500 ms asked for is far below.
    let daemon = Daemon::start().await;
    let start = |label: &'static str| {
        let daemon = &daemon;
        async move {
            let (status, record) = daemon
                .post(
                    "/processes",
                    json!({"command": ["sh", "-c", "trap '' TERM; sleep 300 & wait"], "grace": "500ms",
                           "labels": {"case": label}}),
                )
                .await;
            assert_eq!(status, 201, "{record}");
            let pgid = record["pgid"].as_u64().expect("UNWRAP: pgid") as u32;
            wait_until("2 members", || async { group_members(pgid).len() >= 2 }).await;
            (record["id"].as_str().expect("UNWRAP: id").to_owned(), pgid)
        }
    };
    let (id, pgid) = start("stop").await;
    let asked = Instant::now();
    let (status, stopped) = daemon.post(&format!("/processes/{id}/stop"), json!({})).await;
    let took = asked.elapsed();
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["signal"], "KILL", "{stopped}");
    assert!(took >= Duration::from_millis(500), "the grace was given: {took:?}");
    assert!(took < Duration::from_secs(10), "not the default grace: {took:?}");
    assert!(group_members(pgid).is_empty());

    let (_, pgid) = start("interrupt").await;
    let asked = Instant::now();
    let (status, report) = daemon
        .post("/interrupt", json!({"labels": {"case": "interrupt"}, "wait": true}))
        .await;
    let took = asked.elapsed();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["signaled"], 1, "{report}");
    assert!(took >= Duration::from_millis(500), "the grace was given: {took:?}");
    assert!(took < Duration::from_secs(10), "not the default grace: {took:?}");
    assert!(group_members(pgid).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_stdin_output_and_labels() {
    let daemon = Daemon::start().await;
    let (status, record) = daemon
        .post(
            "/processes",
            json!({"command": ["sh", "-c", "trap 'echo got-usr1' USR1; read line; echo \"read $line\"; while :; do sleep 0.05; done"],
                   "stdin": true, "labels": {"session": "s1", "turn": "7"}}),
        )
        .await;
    assert_eq!(status, 201, "{record}");
    let id = record["id"].as_str().expect("UNWRAP: id").to_owned();
    let (status, _) = daemon
        .post(&format!("/processes/{id}/stdin"), json!({"data": "hello\n"}))
        .await;
    assert_eq!(status, 200);
    wait_until("stdin echoed", || async {
        daemon.get(&format!("/processes/{id}/output")).await.1["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("read hello")
    })
    .await;
    let output = daemon.cli(&["signal", &id, "USR1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    wait_until("trap ran", || async {
        daemon.get(&format!("/processes/{id}/output")).await.1["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("got-usr1")
    })
    .await;
    let (status, err) = daemon
        .post(&format!("/processes/{id}/signal"), json!({"signal": "NOPE"}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "invalid_signal");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("unknown signal \"NOPE\" (use")),
        "the value as given, not Rust debug text: {err}"
    );

    let (_, other) = daemon
        .post(
            "/processes",
            json!({"command": ["sleep", "300"], "labels": {"session": "s2"}}),
        )
        .await;
    let (_, listed) = daemon.get("/processes?label=session%3Ds1").await;
    let ids: Vec<&str> = listed
        .as_array()
        .expect("UNWRAP: list")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    let output = daemon.cli(&["--json", "ps", "--label", "session=s2"]);
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("UNWRAP: json");
    assert_eq!(listed[0]["id"], other["id"]);

    let (status, stopped) = daemon
        .post(&format!("/processes/{id}/signal"), json!({"signal": 15}))
        .await;
    assert_eq!(status, 200, "{stopped}");
    daemon
        .post(
            &format!("/processes/{}/stop", other["id"].as_str().expect("UNWRAP: id")),
            json!({}),
        )
        .await;
    wait_until("exited", || async {
        daemon.get(&format!("/processes/{id}")).await.1["state"] == "failed"
    })
    .await;
    let (status, err) = daemon
        .post(&format!("/processes/{id}/signal"), json!({"signal": "TERM"}))
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["code"], "not_running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_until_exit() {
    let daemon = Daemon::start().await;
    let (_, record) = daemon
        .post(
            "/processes",
            json!({"command": ["sh", "-c", "echo one; sleep 0.3; echo two"]}),
        )
        .await;
    let id = record["id"].as_str().expect("UNWRAP: id");
    let output = daemon.cli(&["logs", "-f", id]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "one\ntwo\n");
    let output = daemon.cli(&["logs", "--tail", "1", id]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_argv_are_redacted_in_the_record() {
    let daemon = Daemon::start().await;
    let (_, record) = daemon
        .post(
            "/processes",
            json!({"command": ["echo", "--password", "hunter2", "TOKEN=abc"]}),
        )
        .await;
    assert_eq!(record["command"], json!(["echo", "--password", "***", "TOKEN=***"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_corral_run_stops_the_process_tree() {
    let daemon = Daemon::start().await;
    let mut cli = corral_run(
        &daemon,
        &[
            "--label",
            "test=ctrl-c",
            "--",
            "sh",
            "-c",
            "echo started; sleep 300 & wait",
        ],
    );
    let pgid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    wait_until("process running", || {
        let pgid = pgid.clone();
        let daemon = &daemon;
        async move {
            let (_, list) = daemon.get("/processes?label=test%3Dctrl-c&state=running").await;
            let found = list[0]["pgid"].as_u64().unwrap_or(0) as u32;
            pgid.store(found, std::sync::atomic::Ordering::SeqCst);
            found != 0 && group_members(found).len() >= 2
        }
    })
    .await;
    let pgid = pgid.load(std::sync::atomic::Ordering::SeqCst);
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(cli.id().to_string())
        .status();
    let status = exit_within(&mut cli, crate::util::DEADLINE, "after Ctrl-C").await;
    assert_eq!(status.code(), Some(128 + 15), "the child died of the stop's TERM");
    assert!(group_members(pgid).is_empty());
    let (_, list) = daemon.get("/processes?label=test%3Dctrl-c").await;
    assert_eq!(list[0]["state"], "interrupted", "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_on_corral_run_kills_at_once() {
    // The first Ctrl-C stops gracefully; a second one used to do nothing, so a child ignoring TERM kept the
    // CLI for its whole grace (60 s here).
    let daemon = Daemon::start().await;
    let script = "trap '' TERM INT; while :; do sleep 0.1; done";
    let mut cli = corral_run(
        &daemon,
        &["--grace", "60s", "--label", "test=twice", "--", "sh", "-c", script],
    );
    async fn state(daemon: &Daemon) -> String {
        let (_, list) = daemon.get("/processes?label=test%3Dtwice").await;
        list[0]["state"].as_str().unwrap_or_default().to_owned()
    }
    wait_until("process running", || async { state(&daemon).await == "running" }).await;
    let interrupt = || {
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(cli.id().to_string())
            .status();
    };
    interrupt();
    wait_until("stopping", || async { state(&daemon).await == "interrupting" }).await;
    interrupt();
    // Well under the 60 s grace.
    let status = exit_within(&mut cli, Duration::from_secs(30), "after a second Ctrl-C").await;
    assert_eq!(status.code(), Some(128 + 9), "killed");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut cli.stderr.take().expect("UNWRAP: stderr"), &mut stderr)
        .expect("UNWRAP: read stderr");
    assert!(stderr.contains("Ctrl-C again to kill it now"), "{stderr}");
    assert_eq!(state(&daemon).await, "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_follows_its_process_across_a_daemon_crash() {
    let mut daemon = Daemon::start().await;
    let gate = daemon.dir.0.join("gate");
    let script = format!(
        "echo one; while [ ! -e {} ]; do sleep 0.05; done; echo two; echo err-two >&2; exit 5",
        gate.display()
    );
    let cli = daemon.cli_background(&["run", "--label", "test=lost", "--", "sh", "-c", &script]);
    let id = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_until("process running, its first line captured", || {
        let id = id.clone();
        let daemon = &daemon;
        async move {
            let (_, list) = daemon.get("/processes?label=test%3Dlost&state=running").await;
            let found = list[0]["id"].as_str().unwrap_or_default().to_owned();
            *id.lock().expect("UNWRAP: lock") = found.clone();
            !found.is_empty() && daemon.get(&format!("/processes/{found}/output")).await.1["stdout"] == "one\n"
        }
    })
    .await;
    let id = id.lock().expect("UNWRAP: lock").clone();
    daemon.crash_under(&cli).await;
    assert!(cli.stderr().contains(&id), "{}", cli.stderr());
    std::fs::write(&gate, b"").expect("UNWRAP: gate");
    let (status, stdout, stderr) = cli.finish().await;
    assert_eq!(status.code(), Some(5), "the real exit code: {stderr}");
    // Each line once: what came before the crash, then the rest; the next daemon's note that it does not
    // have the earlier output is not shown, since this command printed it.
    assert_eq!(stdout, "one\ntwo\n", "{stderr}");
    assert!(
        stderr.contains("err-two") && !stderr.contains("[corral: the daemon restarted"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_stdin_says_what_a_daemon_crash_cut_off() {
    let mut daemon = Daemon::start().await;
    let (cli, mut input) = daemon.cli_background_piped(&["run", "-i", "--label", "test=stdin-crash", "--", "cat"]);
    std::io::Write::write_all(&mut input, b"one\n").expect("UNWRAP: write");
    wait_until("the first line went through", || async {
        let (_, list) = daemon.get("/processes?label=test%3Dstdin-crash").await;
        let Some(id) = list[0]["id"].as_str() else { return false };
        daemon.get(&format!("/processes/{id}/output")).await.1["stdout"] == "one\n"
    })
    .await;
    daemon.kill9();
    std::io::Write::write_all(&mut input, b"two\n").expect("UNWRAP: write");
    drop(input);
    wait_until("the CLI says what was cut off", || async {
        cli.stderr()
            .contains("4 bytes of input are known to have reached the process")
    })
    .await;
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (status, stdout, stderr) = cli.finish().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "one\n", "{stderr}");
}

/// Waits for `cli` to exit, failing the test if it is still running after `deadline`.
async fn exit_within(cli: &mut std::process::Child, deadline: Duration, when: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = cli.try_wait().expect("UNWRAP: wait") {
            return status;
        }
        assert!(start.elapsed() < deadline, "corral run did not end {when}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `corral run ARGS...` against `daemon`, stdout and stderr piped.
fn corral_run(daemon: &Daemon, args: &[&str]) -> std::process::Child {
    let mut command = std::process::Command::new(crate::util::bin());
    crate::util::isolate(&mut command, &daemon.dir.0);
    command
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("run")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("UNWRAP: spawn corral run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_keeps_its_timeout_and_grace_across_kill_9() {
    let mut daemon = Daemon::start().await;
    let (status, timed) = daemon
        .post(
            "/processes",
            json!({"command": ["sleep", "300"], "timeout": "2s", "grace": "1s"}),
        )
        .await;
    assert_eq!(status, 201, "{timed}");
    // Ignores TERM: a stop after the restart takes its own grace (1 s), not the default 10 s.
    let (status, stubborn) = daemon
        .post(
            "/processes",
            json!({"command": ["sh", "-c", "trap '' TERM; sleep 300"], "grace": "1s"}),
        )
        .await;
    assert_eq!(status, 201, "{stubborn}");
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let timed_id = timed["id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("the timeout fires after the restart", || async {
        daemon.get(&format!("/processes/{timed_id}")).await.1["state"] == "failed"
    })
    .await;
    let (_, record) = daemon.get(&format!("/processes/{timed_id}")).await;
    assert_eq!(record["error"], "timed out", "{record}");
    let stubborn_id = stubborn["id"].as_str().expect("UNWRAP: id");
    let asked = Instant::now();
    let (status, stopped) = daemon.post(&format!("/processes/{stubborn_id}/stop"), json!({})).await;
    assert_eq!(status, 200, "{stopped}");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "stopped with its own 1 s grace, not the default 10 s: {:?}",
        asked.elapsed()
    );
}
