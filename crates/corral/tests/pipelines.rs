//! Pipelines through the daemon: DAG, failures skip dependents, exit codes of `pipeline run`.

use serde_json::json;

use crate::util::{wait_until, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_skips_its_dependents_and_pipeline_run_exits_1() {
    let daemon = Daemon::start().await;
    let file = daemon.dir.0.join("pipeline.toml");
    std::fs::write(
        &file,
        r#"
[[step]]
name = "fetch"
command = ["sh", "-c", "echo fetched > fetched.txt"]

[[step]]
name = "build"
command = ["sh", "-c", "echo broken >&2; exit 2"]
after = ["fetch"]

[[step]]
name = "test"
command = ["sh", "-c", "touch tested.txt"]
after = ["build"]

[[step]]
name = "lint"
command = ["true"]
after = ["fetch"]
allow_failure = true
"#,
    )
    .expect("UNWRAP: write");
    let output = daemon.cli(&["pipeline", "run", file.to_str().expect("UNWRAP: utf8")]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("2 passed, 1 failed, 1 skipped"), "{stdout}");
    // Steps ran in the file's folder; the skipped one never ran.
    assert!(daemon.dir.0.join("fetched.txt").exists());
    assert!(!daemon.dir.0.join("tested.txt").exists());

    // Each step is a managed process labelled with its pipeline and step.
    let (_, records) = daemon.get("/processes?label=step%3Dbuild").await;
    assert_eq!(records[0]["source"], "pipeline", "{records}");
    assert_eq!(records[0]["exit_code"], 2);

    let ok = daemon.dir.0.join("ok.toml");
    std::fs::write(
        &ok,
        "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\nafter = [\"a\"]\n",
    )
    .expect("UNWRAP: write");
    let output = daemon.cli(&["pipeline", "run", ok.to_str().expect("UNWRAP: utf8")]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pipelines_are_refused_before_anything_runs() {
    let daemon = Daemon::start().await;
    let marker = daemon.dir.0.join("ran.txt");
    let spec = json!({"steps": [
        {"name": "a", "command": ["touch", marker.to_str().expect("UNWRAP: utf8")], "after": ["c"]},
        {"name": "b", "command": ["true"], "after": ["a"]},
        {"name": "c", "command": ["true"], "after": ["b"]},
        {"name": "d", "command": ["true"], "after": ["nope"]}
    ]});
    let (status, body) = daemon.post("/pipelines", spec).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(error.contains("nope"), "{error}");
    assert!(error.contains("->"), "cycle named: {error}");
    assert!(
        !error.contains("invalid pipeline: invalid pipeline"),
        "said once: {error}"
    );
    assert!(!marker.exists());

    let (status, created) = daemon
        .post("/pipelines", json!({"steps": [{"name": "x", "command": ["true"]}]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("pipeline finished", || async {
        daemon.get(&format!("/pipelines/{id}")).await.1["state"] == "finished"
    })
    .await;
    let (_, status_body) = daemon.get(&format!("/pipelines/{id}")).await;
    assert_eq!(status_body["success"], true, "{status_body}");
    assert_eq!(status_body["steps"][0]["status"], "passed");
    assert_eq!(daemon.get("/pipelines/unknown").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_survives_kill_9_of_the_daemon_and_finishes_without_running_a_step_twice() {
    let mut daemon = Daemon::start().await;
    let log = daemon.dir.0.join("steps.log");
    let gate = daemon.dir.0.join("gate");
    let (log_path, gate_path) = (log.display().to_string(), gate.display().to_string());
    let spec = json!({"name": "durable", "steps": [
        {"name": "a", "command": ["sh", "-c", format!("echo a >> {log_path}")]},
        {"name": "b", "after": ["a"], "command": ["sh", "-c", format!(
            "echo b >> {log_path}; while [ ! -e {gate_path} ]; do sleep 0.05; done"
        )]},
        {"name": "c", "after": ["b"], "command": ["sh", "-c", format!("echo c >> {log_path}")]},
    ]});
    let (status, created) = daemon.post("/pipelines", spec).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("UNWRAP: id").to_owned();
    // Its process recorded as running (a crash between its spawn and its record would run it again).
    wait_until("step b runs", || async {
        let (_, list) = daemon
            .get(&format!(
                "/processes?label=pipeline%3D{id}&label=step%3Db&state=running"
            ))
            .await;
        list.as_array().is_some_and(|l| !l.is_empty()) && std::fs::read_to_string(&log).unwrap_or_default() == "a\nb\n"
    })
    .await;
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (status, body) = daemon.get(&format!("/pipelines/{id}")).await;
    assert_eq!(status, 200, "still known after the crash: {body}");
    std::fs::write(&gate, b"").expect("UNWRAP: temp dir");
    wait_until("pipeline finished", || async {
        daemon.get(&format!("/pipelines/{id}")).await.1["state"] == "finished"
    })
    .await;
    let (_, body) = daemon.get(&format!("/pipelines/{id}")).await;
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["name"], "durable", "{body}");
    assert_eq!(body["passed"], 3, "{body}");
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "a\nb\nc\n");
    // It is a durable task too, with the same id.
    let (_, task) = daemon.get(&format!("/tasks/{id}")).await;
    assert_eq!(task["type"], "pipeline", "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    // After a clean restart it is still there.
    daemon.terminate();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (status, body) = daemon.get(&format!("/pipelines/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "finished", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pipeline_task_submitted_again_runs_only_what_did_not_pass() {
    let daemon = Daemon::start().await;
    let log = daemon.dir.0.join("steps.log");
    let fixed = daemon.dir.0.join("fixed");
    let (log_path, fixed_path) = (log.display().to_string(), fixed.display().to_string());
    let id = "00000000-0000-4000-8000-00000000f00d";
    let task = json!({"id": id, "type": "pipeline", "params": {"steps": [
        {"name": "a", "command": ["sh", "-c", format!("echo a >> {log_path}")]},
        {"name": "b", "after": ["a"], "command": ["sh", "-c", format!("echo b >> {log_path}; test -e {fixed_path}")]},
        {"name": "c", "after": ["b"], "command": ["sh", "-c", format!("echo c >> {log_path}")]},
    ]}});
    assert_eq!(daemon.post("/tasks", task.clone()).await.0, 201);
    let (_, first) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(first["status"], "failed", "{first}");
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "a\nb\n");
    std::fs::write(&fixed, b"").expect("UNWRAP: temp dir");
    let (status, _) = daemon.post("/tasks", task).await;
    assert_eq!(status, 200, "a failed id is queued again");
    let (_, second) = daemon.get(&format!("/tasks/{id}?wait=60s")).await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "a\nb\nb\nc\n",
        "a passed the first time and did not run again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_run_waits_for_the_daemon_to_come_back_and_reports_the_end() {
    let mut daemon = Daemon::start().await;
    let gate = daemon.dir.0.join("gate");
    let file = daemon.dir.0.join("pipeline.toml");
    std::fs::write(
        &file,
        format!(
            "[[step]]\nname = \"wait\"\ncommand = [\"sh\", \"-c\", \"while [ ! -e {} ]; do sleep 0.05; done\"]\n\
             [[step]]\nname = \"then\"\ncommand = [\"true\"]\nafter = [\"wait\"]\n",
            gate.display()
        ),
    )
    .expect("UNWRAP: write");
    let cli = daemon.cli_background(&["pipeline", "run", file.to_str().expect("UNWRAP: utf8")]);
    wait_until("step wait runs", || async {
        let (_, list) = daemon.get("/processes?label=step%3Dwait&state=running").await;
        list.as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    daemon.crash_under(&cli).await;
    std::fs::write(&gate, b"").expect("UNWRAP: temp dir");
    let (status, stdout, stderr) = cli.finish().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("2 passed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_pipeline_run_cancels_the_pipeline() {
    let daemon = Daemon::start().await;
    let file = daemon.dir.0.join("pipeline.toml");
    std::fs::write(
        &file,
        "[[step]]\nname = \"long\"\ncommand = [\"sleep\", \"300\"]\n[[step]]\nname = \"after\"\ncommand = [\"true\"]\nafter = [\"long\"]\n",
    )
    .expect("UNWRAP: write");
    let cli = daemon.cli_background(&["pipeline", "run", file.to_str().expect("UNWRAP: utf8")]);
    wait_until("step long runs", || async {
        let (_, list) = daemon.get("/processes?label=step%3Dlong&state=running").await;
        list.as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    cli.signal("INT");
    let (status, _, stderr) = cli.finish().await;
    assert_eq!(status.code(), Some(130), "{stderr}");
    let id = stderr
        .lines()
        .find_map(|line| line.strip_prefix("pipeline "))
        .expect("UNWRAP: the id is printed")
        .trim()
        .to_owned();
    let (_, body) = daemon.get(&format!("/pipelines/{id}")).await;
    assert_eq!(body["state"], "finished", "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["steps"][0]["status"], "cancelled", "{body}");
    assert_eq!(body["steps"][1]["status"], "cancelled", "{body}");
    let (_, list) = daemon.get("/processes?label=step%3Dlong").await;
    assert_eq!(list[0]["state"], "interrupted", "the step's process is stopped: {list}");
}
