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
