//! The TCP listener: refused without tokens, 401 without a valid token, 403 outside the scopes.

use std::process::Stdio;

use hyper::Method;
use serde_json::json;

use crate::util::{bin, free_port, isolate, request_tcp, Daemon, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_without_any_token_configured_is_refused_at_start() {
    let dir = TempDir::new();
    let config = dir.0.join("corral.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{}\"\n", free_port())).expect("UNWRAP: write");
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
    assert!(String::from_utf8_lossy(&output.stderr).contains("token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes_over_tcp() {
    let port = free_port();
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
[[token]]
name = "reader"
secret_env = "CORRAL_TEST_READER"
allow = ["read"]
[[token]]
name = "runner"
secret_env = "CORRAL_TEST_RUNNER"
allow = ["read", "processes"]
"#
    );
    let reader = "reader-secret-0123456789";
    let runner = "runner-secret-0123456789";
    let daemon = Daemon::start_with_config(
        Some(&config),
        &[("CORRAL_TEST_READER", reader), ("CORRAL_TEST_RUNNER", runner)],
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    let body = || Some(json!({"command": ["true"]}).to_string());

    // Probes answer without a token and reveal nothing secret.
    let (status, _) = request_tcp(&addr, Method::GET, "/health", None, None)
        .await
        .expect("UNWRAP: tcp");
    assert_eq!(status, 200);
    let (status, _) = request_tcp(&addr, Method::GET, "/ready", None, None)
        .await
        .expect("UNWRAP: tcp");
    assert_eq!(status, 200);
    // Everything else needs a valid token.
    for (method, path) in [
        (Method::GET, "/processes"),
        (Method::GET, "/metrics"),
        (Method::POST, "/processes"),
    ] {
        let (status, err) = request_tcp(&addr, method.clone(), path, body(), None)
            .await
            .expect("UNWRAP: tcp");
        assert_eq!(status, 401, "{method} {path}: {err}");
        assert_eq!(err["code"], "unauthorized");
        let (status, _) = request_tcp(&addr, method, path, body(), Some("wrong-secret-0123456789"))
            .await
            .expect("UNWRAP: tcp");
        assert_eq!(status, 401);
    }
    // In scope vs out of scope.
    let (status, _) = request_tcp(&addr, Method::GET, "/processes", None, Some(reader))
        .await
        .expect("UNWRAP: tcp");
    assert_eq!(status, 200);
    let (status, err) = request_tcp(&addr, Method::POST, "/processes", body(), Some(reader))
        .await
        .expect("UNWRAP: tcp");
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["code"], "forbidden");
    let (status, record) = request_tcp(&addr, Method::POST, "/processes", body(), Some(runner))
        .await
        .expect("UNWRAP: tcp");
    assert_eq!(status, 201, "{record}");
    // The CLI over TCP.
    let output = daemon.cli_tcp(&addr, runner, &["--json", "ps"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_run_with_a_token_that_may_start_but_not_read_leaves_nothing_running() {
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[[token]]\nname = \"starter\"\nsecret_env = \"CORRAL_TEST_STARTER\"\nallow = [\"processes\"]\n"
    );
    let secret = "starter-secret-0123456789";
    let daemon = Daemon::start_with_config(Some(&config), &[("CORRAL_TEST_STARTER", secret)]).await;
    let output = daemon.cli_tcp(
        &format!("127.0.0.1:{port}"),
        secret,
        &["run", "--label", "test=scoped", "--", "sleep", "300"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("so it was stopped") && stderr.contains("read"),
        "{stderr}"
    );
    let (_, list) = daemon.get("/processes?label=test%3Dscoped").await;
    assert_eq!(list[0]["state"], "interrupted", "{list}");
}
