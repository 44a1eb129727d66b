//! The HTTP surface: error shape, unknown routes, bad bodies, health, metrics, events.

use hyper::Method;
use serde_json::json;

use crate::util::{request_unix, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_a_code() {
    let daemon = Daemon::start().await;
    let (status, body) = daemon.get("/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    assert!(body["error"].is_string());
    let (status, body) = daemon.get("/processes/does-not-exist").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = request_unix(
        &daemon.socket,
        Method::POST,
        "/processes",
        Some("{not json".into()),
        None,
    )
    .await
    .expect("UNWRAP: answer");
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_json");
    let (status, body) = daemon.post("/processes", json!({"command": []})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon
        .post("/processes", json!({"command": ["true"], "bogus": 1}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("bogus"));
    let (status, body) = daemon
        .post("/processes", json!({"command": ["true"], "timeout": "soon"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("timeout"));
    // Relative to what? Not the daemon's directory (nor the keeper's, which is `/`).
    let (status, body) = daemon
        .post("/processes", json!({"command": ["pwd"], "dir": "sub"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("absolute"), "{body}");
    // Bad input is refused before anything runs, and leaves no record.
    for bad in [
        json!({"command": ["echo", "a\u{0}b"]}),
        json!({"command": ["true"], "env": {"A=B": "x"}}),
        json!({"command": ["true"], "dir": ""}),
    ] {
        let (status, body) = daemon.post("/processes", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, list) = daemon.get("/processes").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let (status, body) = daemon.get("/processes/some-id/output?follow=yes").await;
    assert_eq!(status, 400, "a flag is true or false, not silently false: {body}");
    let (status, body) = daemon.get("/processes?state=sideways").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = request_unix(&daemon.socket, Method::DELETE, "/health", None, None)
        .await
        .expect("UNWRAP: answer");
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["code"], "method_not_allowed");
    // Over the body limit: refused with 413 — or, when the daemon answers and closes before the client has
    // finished sending 2 MiB, the client sees the connection closed under its write. Never a 2xx.
    let huge = json!({"command": ["echo", "x".repeat(2 * 1024 * 1024)]}).to_string();
    match request_unix(&daemon.socket, Method::POST, "/processes", Some(huge), None).await {
        Ok((status, body)) => {
            assert_eq!(status, 413, "{body}");
            assert_eq!(body["code"], "body_too_large", "{body}");
            assert!(
                body["error"].as_str().unwrap_or("").contains("1048576 bytes"),
                "says the limit: {body}"
            );
        }
        Err(err) => {
            let text = format!("{err:#}");
            assert!(text.contains("Broken pipe") || text.contains("reset"), "{text}");
        }
    }
    let (_, list) = daemon.get("/processes").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_events() {
    let daemon = Daemon::start().await;
    let (status, health) = daemon.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["checks"]["store"]["ok"], true);
    assert_eq!(health["checks"]["disk"]["ok"], true);

    // Subscribe to events, then start a process: its started and exited events arrive.
    let socket = daemon.socket.clone();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let events = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let stream = tokio::net::UnixStream::connect(&socket).await.expect("UNWRAP: connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("UNWRAP: http");
        tokio::spawn(connection);
        let request = hyper::Request::get("/events")
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("UNWRAP: request");
        let mut body = sender
            .send_request(request)
            .await
            .expect("UNWRAP: response")
            .into_body();
        let mut seen = String::new();
        while !seen.contains("event: process.exited") {
            use http_body_util::BodyExt;
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        seen.push_str(&String::from_utf8_lossy(&data));
                    }
                    if seen.contains("event: ready") {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                _ => break,
            }
        }
        seen
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), subscribed_rx)
        .await
        .expect("UNWRAP: subscribed in time")
        .expect("UNWRAP: subscribed");
    let (status, _) = daemon.post("/processes", json!({"command": ["true"]})).await;
    assert_eq!(status, 201);
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), events)
        .await
        .expect("UNWRAP: events")
        .expect("UNWRAP: task");
    assert!(seen.contains("event: process.started"), "{seen}");
    assert!(seen.contains("event: process.exited"), "{seen}");

    let (status, metrics) = daemon.get("/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().expect("UNWRAP: text");
    assert!(text.contains("corral_process_starts_total 1"), "{text}");
    assert!(text.contains("corral_processes{state=\"completed\"} 1"), "{text}");
    assert!(
        text.contains("corral_http_requests_total{route=\"/processes\",method=\"POST\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(text.contains("corral_store_operation_seconds_count"), "{text}");

    let (status, doc) = daemon.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/processes"].is_object());

    let output = daemon.cli(&["status"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("health:    ok"));
}
