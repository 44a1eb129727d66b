//! Ownership and scoped interrupts, also across a daemon crash; a reused pid is never signalled.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::util::{wait_until, Daemon};

fn alive(pid: u32) -> bool {
    corral_proc::read_stat(pid).ok().flatten().is_some_and(|s| !s.is_dead())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_scopes_and_errors() {
    let daemon = Daemon::start().await;
    for empty in [
        json!({}),
        json!({"source": ""}),
        json!({"process_id": "", "labels": {}}),
    ] {
        let (status, err) = daemon.post("/interrupt", empty.clone()).await;
        assert_eq!(status, 400, "{empty}: {err}");
        assert_eq!(err["code"], "empty_scope");
    }
    let (status, err) = daemon
        .post("/interrupt", json!({"labels": {"session": "nobody"}}))
        .await;
    assert_eq!(status, 404, "{err}");

    let mut pids = BTreeMap::new();
    for (session, turn) in [("a", "1"), ("a", "2"), ("b", "1")] {
        let (_, record) = daemon
            .post(
                "/processes",
                json!({"command": ["sleep", "300"], "labels": {"session": session, "turn": turn}}),
            )
            .await;
        pids.insert(
            format!("{session}{turn}"),
            (
                record["id"].as_str().unwrap_or("").to_owned(),
                record["pid"].as_u64().unwrap_or(0) as u32,
            ),
        );
    }
    let (status, report) = daemon
        .post(
            "/interrupt",
            json!({"labels": {"session": "a", "turn": "2"}, "reason": "user pressed stop", "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"matched": 1, "signaled": 1, "stale": 0, "unavailable": 0})
    );
    assert!(!alive(pids["a2"].1));
    assert!(alive(pids["a1"].1) && alive(pids["b1"].1));
    let (_, record) = daemon.get(&format!("/processes/{}", pids["a2"].0)).await;
    assert_eq!(record["state"], "interrupted");
    assert_eq!(record["error"], "interrupted: user pressed stop");

    let output = daemon.cli(&["interrupt", "--label", "session=a", "--wait"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("matched 1, signaled 1"));
    assert!(!alive(pids["a1"].1));
    assert!(alive(pids["b1"].1), "other owners are untouched");
    let (_, report) = daemon
        .post("/interrupt", json!({"process_id": pids["b1"].0, "wait": true}))
        .await;
    assert_eq!(report["signaled"], 1, "{report}");
    assert!(!alive(pids["b1"].1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_two_hundred_processes_are_recovered_and_one_session_is_interrupted_exactly() {
    let mut daemon = Daemon::start().await;
    let mut by_session: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for n in 0..200 {
        let session = format!("s{}", n % 4);
        let (status, record) = daemon
            .post(
                "/processes",
                json!({"command": ["sleep", "300"], "labels": {"session": session, "n": n.to_string()}}),
            )
            .await;
        assert_eq!(status, 201, "{record}");
        by_session
            .entry(session)
            .or_default()
            .push(record["pid"].as_u64().unwrap_or(0) as u32);
    }
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (_, health) = daemon.get("/health").await;
    assert_eq!(health["reconcile"]["recovered"], 200, "{health}");
    assert_eq!(health["reconcile"]["reattached"], 200, "{health}");
    let (_, running) = daemon.get("/processes?state=running&limit=1000").await;
    assert_eq!(running.as_array().map(Vec::len), Some(200));

    let (status, report) = daemon
        .post(
            "/interrupt",
            json!({"labels": {"session": "s2"}, "grace": "5s", "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["matched"], 50, "{report}");
    assert_eq!(report["signaled"], 50, "{report}");
    for pid in &by_session["s2"] {
        assert!(!alive(*pid), "s2 process {pid} survived");
    }
    for (session, pids) in &by_session {
        if session != "s2" {
            assert!(pids.iter().all(|p| alive(*p)), "{session} was touched");
        }
    }
    let (_, interrupted) = daemon.get("/processes?state=interrupted&label=session%3Ds2").await;
    assert_eq!(interrupted.as_array().map(Vec::len), Some(50));
    // Clean up the rest.
    for session in ["s0", "s1", "s3"] {
        daemon
            .post(
                "/interrupt",
                json!({"labels": {"session": session}, "grace": "5s", "wait": true}),
            )
            .await;
    }
    assert!(by_session.values().flatten().all(|p| !alive(*p)));
}

/// The first child of `pid` (e.g. the process `nsenter -p` forked).
fn first_child(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(0)
}

/// Kills the daemon that `nsenter` (the harness's child) forked inside the namespace, then reaps nsenter.
fn kill9_in_ns(daemon: &mut Daemon) {
    let nsenter = daemon.pid();
    let inner = first_child(nsenter);
    if inner != 0 {
        let _ = std::process::Command::new("kill")
            .args(["-9", &inner.to_string()])
            .status();
    }
    daemon.kill9();
}

/// Runs a command inside the PID and mount namespace of `holder`.
fn in_ns(holder: u32, script: &str) -> std::process::Output {
    std::process::Command::new("nsenter")
        .args(["-t", &holder.to_string(), "-p", "-m", "sh", "-c", script])
        .output()
        .expect("UNWRAP: nsenter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_pid_was_reused_is_marked_stale_and_never_signalled() {
    if !rustix::process::getuid().is_root() || std::process::Command::new("nsenter").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs root, unshare and nsenter");
        return;
    }
    // A PID namespace whose init reaps; the daemon runs inside it so its pids are the namespace's.
    let mut holder = std::process::Command::new("unshare")
        .args([
            "-pf",
            "--mount-proc",
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.2; done",
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("UNWRAP: unshare");
    // `unshare -f` forks: the namespace's init is its child.
    let mut init = 0;
    wait_until("namespace init", || {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", holder.id(), holder.id())).unwrap_or_default();
        init = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        std::future::ready(init != 0)
    })
    .await;
    // Whatever happens below, everything in the namespace dies with its init.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
    let _namespace = KillOnDrop(init);
    let dir = crate::util::TempDir::new();
    let state_dir = dir.0.join("state");
    // Without the keeper: a keeper would keep the dead process's pid pinned (an unreaped zombie), so the
    // pid could not be handed to an impostor. This is the path of processes that are nobody's children.
    let config = dir.0.join("corral.toml");
    std::fs::write(&config, "[processes]\nkeeper = false\n").expect("UNWRAP: temp dir");
    let start_daemon = |dir: &std::path::Path| {
        let mut command = std::process::Command::new("nsenter");
        command
            .args(["-t", &init.to_string(), "-p", "-m"])
            .arg(crate::util::bin())
            .arg("daemon")
            .arg("--config")
            .arg(dir.join("corral.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"));
        crate::util::isolate(&mut command, dir);
        let log = std::fs::File::create(dir.join("daemon.log")).expect("UNWRAP: log");
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("UNWRAP: nsenter daemon")
    };
    let mut daemon = Daemon {
        child: Some(start_daemon(&dir.0)),
        socket: state_dir.join("corral.sock"),
        state_dir,
        config: None,
        dir,
    };
    daemon.wait_ready().await;
    let (_, record) = daemon.post("/processes", json!({"command": ["sleep", "300"]})).await;
    let id = record["id"].as_str().expect("UNWRAP: id").to_owned();
    let ns_pid = record["pid"].as_u64().expect("UNWRAP: pid");
    kill9_in_ns(&mut daemon);
    // The recorded process dies while no daemon runs; then its pid is handed to an impostor.
    let out = in_ns(init, &format!("kill -9 {ns_pid}; while [ -e /proc/{ns_pid} ]; do sleep 0.05; done; echo $(({ns_pid} - 1)) > /proc/sys/kernel/ns_last_pid; sleep 300 >/dev/null 2>&1 & echo $!"));
    let impostor: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    if impostor != ns_pid {
        eprintln!(
            "skipped: could not make pid {ns_pid} reused (got {impostor}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::process::Command::new("kill")
            .args(["-9", &init.to_string()])
            .status();
        let _ = holder.wait();
        return;
    }
    daemon.child = Some(start_daemon(&daemon.dir.0));
    daemon.wait_ready().await;
    let (_, after) = daemon.get(&format!("/processes/{id}")).await;
    assert_eq!(after["state"], "stale", "{after}");
    assert!(
        after["error"].as_str().unwrap_or("").contains("another process"),
        "{after}"
    );
    let (status, _) = daemon
        .post(&format!("/processes/{id}/signal"), json!({"signal": "KILL"}))
        .await;
    assert_eq!(status, 409, "a stale record is never signalled");
    let (status, _) = daemon.post("/interrupt", json!({"process_id": id})).await;
    assert_eq!(status, 404, "not live any more");
    let check = in_ns(init, &format!("kill -0 {impostor} && echo alive"));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "alive",
        "the impostor was never signalled"
    );
    kill9_in_ns(&mut daemon);
    // Killing the namespace's init ends everything in it.
    let _ = std::process::Command::new("kill")
        .args(["-9", &init.to_string()])
        .status();
    let _ = holder.wait();
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// A process that exits by itself while an interrupt stops it ends in exactly one terminal state,
/// whichever wins; many rounds to meet the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_racing_a_natural_exit_leaves_one_terminal_state() {
    let daemon = Daemon::start().await;
    let mut ids = Vec::new();
    for n in 0..40 {
        // Exits on its own after a few milliseconds, near when the interrupt lands.
        let delay = format!("0.0{}", n % 10);
        let (status, record) = daemon
            .post(
                "/processes",
                json!({"command": ["sleep", delay], "labels": {"race": n.to_string()}}),
            )
            .await;
        assert_eq!(status, 201, "{record}");
        let id = record["id"].as_str().unwrap_or_default().to_owned();
        let (status, report) = daemon
            .post("/interrupt", json!({"labels": {"race": n.to_string()}, "wait": true}))
            .await;
        assert!(status == 200 || status == 404, "{status} {report}");
        ids.push(id);
    }
    for id in ids {
        wait_until("a terminal state", || async {
            let (_, record) = daemon.get(&format!("/processes/{id}")).await;
            !matches!(record["state"].as_str(), Some("running" | "interrupting" | "pending"))
        })
        .await;
        let (_, record) = daemon.get(&format!("/processes/{id}")).await;
        let state = record["state"].as_str().unwrap_or_default().to_owned();
        assert!(
            state == "completed" || state == "interrupted",
            "one terminal state, written once: {record}"
        );
        if state == "completed" {
            assert_eq!(record["exit_code"], 0, "{record}");
        }
        assert!(record["ended_at"].is_string(), "{record}");
    }
    let (_, live) = daemon.get("/processes?state=interrupting").await;
    assert_eq!(live.as_array().map(Vec::len), Some(0), "{live}");
}
