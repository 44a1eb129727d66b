//! Durable tasks through the daemon: idempotent submit, crash recovery, removal, shutdown, bad input.

use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};

use crate::util::{group_members, request_unix, wait_until, Daemon};

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A `process` task that sleeps, then appends one line to a file named after the task.
fn append_task(dir: &std::path::Path, id: &str, sleep: &str) -> Value {
    json!({"id": id, "type": "process", "params": {
        "command": ["sh", "-c", format!("echo before-$((1+1)); sleep {sleep}; echo {id} >> {}/{id}.txt", dir.display())]
    }})
}

fn lines(dir: &std::path::Path, id: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{id}.txt")))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn wait_status(daemon: &Daemon, id: &str, status: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (_, task) = daemon.get(&format!("/tasks/{id}")).await;
        if task["status"] == status {
            return task;
        }
        assert!(
            start.elapsed() < crate::util::DEADLINE,
            "task {id} not {status}: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pgid of the running process of task `id` once its group has `members` live members.
async fn task_group(daemon: &Daemon, id: &str, members: usize) -> u32 {
    let start = std::time::Instant::now();
    loop {
        let (_, list) = daemon.get(&format!("/processes?label=task%3D{id}&state=running")).await;
        let pgid = list[0]["pgid"].as_u64().unwrap_or(0) as u32;
        if pgid != 0 && group_members(pgid).len() >= members {
            return pgid;
        }
        assert!(
            start.elapsed() < crate::util::DEADLINE,
            "task {id} has no process group of {members}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_idempotent_and_a_failed_id_runs_again() {
    let daemon = Daemon::start().await;
    let out = daemon.dir.0.join("out");
    std::fs::create_dir_all(&out).expect("UNWRAP: mkdir");
    let id = uuid(1);
    let (status, task) = daemon.post("/tasks", append_task(&out, &id, "0")).await;
    assert_eq!(status, 201, "{task}");
    let (_, done) = daemon.get(&format!("/tasks/{id}?wait=30s")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["result"]["exit_code"], 0);
    let (status, again) = daemon.post("/tasks", append_task(&out, &id, "0")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "completed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(&out, &id), 1, "a completed id is never run again");

    // A failing task, submitted again with the same id, runs again with attempt 2.
    let failing = uuid(2);
    let body = json!({"id": failing, "type": "process", "params": {"command": ["sh", "-c", "echo nope; exit 4"]}});
    assert_eq!(daemon.post("/tasks", body.clone()).await.0, 201);
    let (_, failed) = daemon.get(&format!("/tasks/{failing}?wait=30s")).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap_or("").contains("code 4"), "{failed}");
    assert!(
        failed["result"]["output_tail"].as_str().unwrap_or("").contains("nope"),
        "{failed}"
    );
    let (status, requeued) = daemon.post("/tasks", body).await;
    assert_eq!(status, 200, "{requeued}");
    let (_, failed) = daemon.get(&format!("/tasks/{failing}?wait=30s")).await;
    assert_eq!(failed["attempt"], 2, "{failed}");

    // The CLI.
    let output = daemon.cli(&[
        "task",
        "submit",
        "process",
        "--params",
        r#"{"command": ["true"]}"#,
        "--wait",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = daemon.cli(&["--json", "task", "ls", "--status", "failed"]);
    let listed: Value = serde_json::from_slice(&output.stdout).expect("UNWRAP: json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_submits_of_one_id_run_it_once() {
    let daemon = Daemon::start().await;
    let out = daemon.dir.0.join("out");
    std::fs::create_dir_all(&out).expect("UNWRAP: mkdir");
    let id = uuid(3);
    let body = append_task(&out, &id, "0.2");
    let mut submits = Vec::new();
    for _ in 0..50 {
        let socket = daemon.socket.clone();
        let body = body.to_string();
        submits.push(tokio::spawn(async move {
            request_unix(&socket, Method::POST, "/tasks", Some(body), None)
                .await
                .expect("UNWRAP: answer")
                .0
        }));
    }
    let mut created = 0;
    for submit in submits {
        match submit.await.expect("UNWRAP: task") {
            201 => created += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 1);
    wait_status(&daemon, &id, "completed").await;
    assert_eq!(lines(&out, &id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_types_and_params_are_400() {
    let daemon = Daemon::start().await;
    let cases = [
        (
            json!({"id": "not-a-uuid", "type": "process", "params": {"command": ["true"]}}),
            "invalid_id",
        ),
        (json!({"type": "nope", "params": {}}), "unknown_type"),
        (
            json!({"type": "process", "params": {"command": "true"}}),
            "invalid_params",
        ),
        (json!({"type": "process", "params": {"command": []}}), "invalid_params"),
        (
            json!({"type": "process", "params": {"command": ["true"], "timeout": "soon"}}),
            "invalid_params",
        ),
        (
            json!({"type": "pipeline", "params": {"steps": [{"name": "a", "command": ["true"], "after": ["a"]}]}}),
            "invalid_params",
        ),
    ];
    for (body, code) in cases {
        let (status, err) = daemon.post("/tasks", body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["code"], code, "{body}: {err}");
    }
    assert_eq!(daemon.get("/tasks/00000000-0000-4000-8000-000000000999").await.0, 404);
    let (_, list) = daemon.get("/tasks").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_finishes_every_task_without_running_it_again() {
    // The keeper kept the processes: each run goes on and ends once, in its first attempt.
    kill_9_mid_run(None, 50, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_keeper_kill_9_mid_run_reruns_every_task_to_exactly_one_line() {
    // The daemon's own children: the survivors are stopped, the tasks run again (at least once).
    kill_9_mid_run(Some("[processes]\nkeeper = false\n"), 10, 2).await;
}

async fn kill_9_mid_run(config: Option<&str>, tasks: u32, attempt: u32) {
    let mut daemon = Daemon::start_with_config(config, &[]).await;
    let out = daemon.dir.0.join("out");
    std::fs::create_dir_all(&out).expect("UNWRAP: mkdir");
    let ids: Vec<String> = (100..100 + tasks).map(uuid).collect();
    for id in &ids {
        let (status, body) = daemon.post("/tasks", append_task(&out, id, "10")).await;
        assert_eq!(status, 201, "{body}");
    }
    // Wait until every task runs its process, then crash the daemon in the middle of the sleeps.
    wait_until("every task running", || async {
        let (_, running) = daemon.get("/processes?source=task&state=running").await;
        running.as_array().map(Vec::len) == Some(tasks as usize)
    })
    .await;
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    for id in &ids {
        let (_, task) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
        assert_eq!(task["status"], "completed", "{task}");
    }
    for id in &ids {
        assert_eq!(lines(&out, id), 1, "task {id} ran its append {} times", lines(&out, id));
    }
    for id in &ids {
        let (_, task) = daemon.get(&format!("/tasks/{id}")).await;
        assert_eq!(task["attempt"], attempt, "{task}");
        // What the process wrote before the crash is in the result too (mirrored with the keeper; written
        // again by the re-run without it).
        assert!(task["result"].to_string().contains("before-2"), "{task}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_task_cut_by_kill_9_goes_on_without_running_an_ended_step_again() {
    // The running step survived with the keeper: it is waited for, and nothing runs twice.
    pipeline_task_across_kill_9(None, "a\nb-start\nb-end\nc\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_keeper_a_pipeline_task_runs_only_its_cut_step_again() {
    // The running step's process was stopped at the restart: that step runs again, the ended one does not.
    pipeline_task_across_kill_9(Some("[processes]\nkeeper = false\n"), "a\nb-start\nb-start\nb-end\nc\n").await;
}

async fn pipeline_task_across_kill_9(config: Option<&str>, expected_log: &str) {
    let mut daemon = Daemon::start_with_config(config, &[]).await;
    let log = daemon.dir.0.join("steps.log");
    let gate = daemon.dir.0.join("gate");
    let (log_path, gate_path) = (log.display().to_string(), gate.display().to_string());
    let id = uuid(7);
    let steps = json!([
        {"name": "a", "command": ["sh", "-c", format!("echo a >> {log_path}")]},
        {"name": "b", "after": ["a"], "command": ["sh", "-c", format!(
            "echo b-start >> {log_path}; while [ ! -e {gate_path} ]; do sleep 0.05; done; echo b-end >> {log_path}"
        )]},
        {"name": "c", "after": ["b"], "command": ["sh", "-c", format!("echo c >> {log_path}")]},
    ]);
    submit_pipeline(&daemon, &id, steps).await;
    // Its process recorded as running (a crash between its spawn and its record would run it again).
    wait_until("step b runs", || async {
        step_is(&daemon, &id, "b", "running").await
            && std::fs::read_to_string(&log).unwrap_or_default() == "a\nb-start\n"
    })
    .await;
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    std::fs::write(&gate, b"").expect("UNWRAP: temp dir");
    let (_, task) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), expected_log);
    let steps = task["result"]["steps"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<&str> = steps.iter().filter_map(|s| s["status"].as_str()).collect();
    assert_eq!(statuses, ["passed", "passed", "passed"], "{task}");
    assert!(
        steps[0]["output_tail"].as_str().is_some_and(|t| t.contains("not kept")),
        "the ended step's report comes from its record: {task}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_running_task_stops_its_tree_and_it_never_comes_back() {
    let mut daemon = Daemon::start().await;
    let id = uuid(4);
    let body =
        json!({"id": id, "type": "process", "params": {"command": ["sh", "-c", "sleep 300 & sleep 300 & wait"]}});
    assert_eq!(daemon.post("/tasks", body).await.0, 201);
    wait_status(&daemon, &id, "running").await;
    let pgid = task_group(&daemon, &id, 3).await;
    let output = daemon.cli(&["task", "rm", &id]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(group_members(pgid).is_empty(), "the task's process tree is gone");
    assert_eq!(daemon.get(&format!("/tasks/{id}")).await.0, 404);
    daemon.terminate();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    assert_eq!(
        daemon.get(&format!("/tasks/{id}")).await.0,
        404,
        "removed tasks never come back"
    );
    let (status, _) = request_unix(&daemon.socket, Method::DELETE, &format!("/tasks/{id}"), None, None)
        .await
        .expect("UNWRAP: answer");
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_task_resumes_after_restart_and_is_never_failed() {
    let mut daemon = Daemon::start().await;
    let out = daemon.dir.0.join("out");
    std::fs::create_dir_all(&out).expect("UNWRAP: mkdir");
    let id = uuid(5);
    assert_eq!(daemon.post("/tasks", append_task(&out, &id, "5")).await.0, 201);
    task_group(&daemon, &id, 1).await;
    let status = daemon.terminate().expect("UNWRAP: running");
    assert_eq!(status.code(), Some(0));
    assert_eq!(lines(&out, &id), 0, "stopped before its append");
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (_, task) = daemon.get(&format!("/tasks/{id}")).await;
    assert_ne!(task["status"], "failed", "{task}");
    let (_, task) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert!(task["error"].is_null(), "{task}");
    assert_eq!(lines(&out, &id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_gives_a_clear_5xx_and_health_503() {
    if !rustix::process::getuid().is_root() || std::process::Command::new("unshare").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs root and unshare for a private tmpfs");
        return;
    }
    let dir = crate::util::TempDir::new();
    let db_dir = dir.0.join("db");
    std::fs::create_dir_all(&db_dir).expect("UNWRAP: mkdir");
    let config = dir.0.join("corral.toml");
    std::fs::write(
        &config,
        format!("store = \"sqlite://{}/corral.db\"\n", db_dir.display()),
    )
    .expect("UNWRAP: write");
    let state_dir = dir.0.join("state");
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs {db} && exec {bin} daemon --config {cfg} --state-dir {state}",
        db = db_dir.display(),
        bin = crate::util::bin().display(),
        cfg = config.display(),
        state = state_dir.display()
    );
    let mut command = std::process::Command::new("unshare");
    command.args(["-m", "sh", "-c", &script]);
    crate::util::isolate(&mut command, &dir.0);
    let log = std::fs::File::create(dir.0.join("daemon.log")).expect("UNWRAP: log");
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("UNWRAP: unshare");
    let mut daemon = Daemon {
        child: Some(child),
        socket: state_dir.join("corral.sock"),
        state_dir,
        config: Some(config),
        dir,
    };
    daemon.wait_ready().await;
    assert_eq!(daemon.get("/health").await.0, 200);
    // Fill the store's filesystem from inside the daemon's mount namespace.
    let fill = std::process::Command::new("nsenter")
        .args(["-t", &daemon.pid().to_string(), "-m", "sh", "-c"])
        .arg(format!(
            "dd if=/dev/zero of={}/fill bs=64k 2>/dev/null; true",
            db_dir.display()
        ))
        .status()
        .expect("UNWRAP: nsenter");
    assert!(fill.success());
    let mut answered = None;
    for n in 0..200u32 {
        let big = "x".repeat(200_000);
        let body = json!({"type": "process", "params": {"command": ["echo", big]}, "id": uuid(1000 + n)});
        let (status, err) = daemon.post("/tasks", body).await;
        if status >= 500 {
            answered = Some((status, err));
            break;
        }
    }
    let (status, err) = answered.expect("UNWRAP: a full disk must fail a submit");
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["code"], "store_unavailable", "{err}");
    let (status, health) = daemon.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unhealthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_process_ended_while_no_daemon_ran_finishes_with_it_and_never_runs_again() {
    let mut daemon = Daemon::start().await;
    let log = daemon.dir.0.join("runs.log");
    let gate = daemon.dir.0.join("gate");
    let id = uuid(8);
    let script = format!(
        "echo start >> {log}; while [ ! -e {gate} ]; do sleep 0.05; done; echo end >> {log}; exit 3",
        log = log.display(),
        gate = gate.display()
    );
    let body = json!({"id": id, "type": "process", "params": {"command": ["sh", "-c", script]}});
    assert_eq!(daemon.post("/tasks", body).await.0, 201);
    wait_task_process_running(&daemon, &id).await;
    daemon.kill9();
    // It ends while no daemon runs; the keeper keeps its exit status.
    std::fs::write(&gate, b"").expect("UNWRAP: gate");
    wait_until("it ended", || async {
        std::fs::read_to_string(&log).unwrap_or_default() == "start\nend\n"
    })
    .await;
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (_, task) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(task["status"], "failed", "its real end: {task}");
    assert_eq!(task["result"]["exit_code"], 3, "{task}");
    assert_eq!(task["attempt"], 1, "not run again: {task}");
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "start\nend\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_task_keeps_its_timeout_across_kill_9() {
    let mut daemon = Daemon::start().await;
    let id = uuid(9);
    let body =
        json!({"id": id, "type": "process", "params": {"command": ["sleep", "300"], "timeout": "2s", "grace": "1s"}});
    assert_eq!(daemon.post("/tasks", body).await.0, 201);
    wait_task_process_running(&daemon, &id).await;
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (_, task) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["error"].as_str().unwrap_or("").contains("timed out"), "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_resumed_after_kill_9_keeps_the_end_of_a_step_that_failed_before() {
    failed_step_across_kill_9(None, &["x", "y"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_keeper_a_resumed_pipeline_also_keeps_a_failed_step() {
    // y, running at the crash, was the daemon's own child: stopped at the restart and run again; x is kept.
    failed_step_across_kill_9(Some("[processes]\nkeeper = false\n"), &["x", "y", "y"]).await;
}

/// x fails, y runs beside it, z needs x; kill -9 while y runs: after the restart x is not run again (its
/// failure stands, z stays skipped). `runs`: what ran, sorted.
async fn failed_step_across_kill_9(config: Option<&str>, runs: &[&str]) {
    let mut daemon = Daemon::start_with_config(config, &[]).await;
    let log = daemon.dir.0.join("steps.log");
    let gate = daemon.dir.0.join("gate");
    let fixed = daemon.dir.0.join("fixed");
    let (log_path, gate_path, fixed_path) = (
        log.display().to_string(),
        gate.display().to_string(),
        fixed.display().to_string(),
    );
    let id = uuid(10);
    // x would pass once `fixed` exists: running it again would show.
    let steps = json!([
        {"name": "x", "command": ["sh", "-c", format!("echo x >> {log_path}; test -e {fixed_path}")]},
        {"name": "y", "command": ["sh", "-c", format!(
            "echo y >> {log_path}; while [ ! -e {gate_path} ]; do sleep 0.05; done"
        )]},
        {"name": "z", "after": ["x"], "command": ["sh", "-c", format!("echo z >> {log_path}")]},
    ]);
    submit_pipeline(&daemon, &id, steps).await;
    wait_until("x failed and y runs", || async {
        step_is(&daemon, &id, "x", "failed").await && step_is(&daemon, &id, "y", "running").await
    })
    .await;
    daemon.kill9();
    std::fs::write(&fixed, b"").expect("UNWRAP: fixed");
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    std::fs::write(&gate, b"").expect("UNWRAP: gate");
    let (_, task) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(task["status"], "failed", "x's failure stands: {task}");
    let mut lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, runs, "x ran once, z never ran");
    let statuses: Vec<&str> = task["result"]["steps"]
        .as_array()
        .map(|steps| steps.iter().filter_map(|s| s["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, ["failed", "passed", "skipped"], "{task}");
}

/// Submits a `pipeline` task with these steps (201 expected).
async fn submit_pipeline(daemon: &Daemon, id: &str, steps: Value) {
    let (status, body) = daemon
        .post(
            "/tasks",
            json!({"id": id, "type": "pipeline", "params": {"steps": steps}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// True when pipeline task `id` has a process record of `step` in `state`.
async fn step_is(daemon: &Daemon, id: &str, step: &str, state: &str) -> bool {
    let (_, list) = daemon
        .get(&format!(
            "/processes?label=task%3D{id}&label=step%3D{step}&state={state}"
        ))
        .await;
    list.as_array().is_some_and(|l| !l.is_empty())
}

/// Waits until task `id`'s process is recorded running (a crash between its spawn and its record would run
/// it again, by design).
async fn wait_task_process_running(daemon: &Daemon, id: &str) {
    wait_until("its process is recorded running", || async {
        let (_, list) = daemon.get(&format!("/processes?label=task%3D{id}&state=running")).await;
        list.as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_exits_on_its_timeouts_term_failed_for_the_timeout() {
    let daemon = Daemon::start().await;
    let id = uuid(11);
    let body = json!({"id": id, "type": "process", "params": {
        "command": ["sh", "-c", "trap 'exit 143' TERM; sleep 300 & wait"], "timeout": "1s"
    }});
    assert_eq!(daemon.post("/tasks", body).await.0, 201);
    let (_, task) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"], "timed out", "why, not the code it exited with: {task}");
}
