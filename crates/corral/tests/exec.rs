//! The allowlisted exec API: hostile args arrive as one argv element each, bad args are 400 before
//! anything runs, jobs are durable, acl_cap is enforced, tool files reload.

use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};

use crate::util::{free_port, request_tcp, request_unix, wait_until, Daemon};

const ECHO_TOOL: &str = r#"
name = "echo"
description = "argv echo"
[[command]]
name = "argv"
exec = ["/usr/bin/printf", "[%s]\n", "{{value}}", "--flag={{value}}"]
timeout = "10s"
[[command.arg]]
name = "value"
required = true
max_len = 100000
[[command]]
name = "strict"
exec = ["/bin/echo", "{{name}}"]
timeout = "10s"
acl_cap = "ops"
[[command.arg]]
name = "name"
required = true
pattern = "[a-z]+"
[[command]]
name = "lines"
exec = ["/bin/sh", "-c", "sleep 0.3; echo one; sleep 0.3; echo two"]
timeout = "30s"
[[command]]
name = "partial"
exec = ["/bin/sh", "-c", "printf 'first part '; sleep 1; echo rest"]
timeout = "30s"
[[command]]
name = "slow"
exec = ["/bin/sh", "-c", "sleep 300 & sleep 300 & wait"]
timeout = "300ms"
"#;

async fn daemon_with_tools(extra_config: &str, env: &[(&str, &str)]) -> Daemon {
    // The config's folder is the daemon's temp dir, so `tools.d` sits next to `corral.toml`.
    let daemon = Daemon::start_with_config(Some(&format!("tools_dir = \"tools.d\"\n{extra_config}")), env).await;
    let tools = daemon.dir.0.join("tools.d");
    std::fs::create_dir_all(&tools).expect("UNWRAP: mkdir");
    std::fs::write(tools.join("echo.toml"), ECHO_TOOL).expect("UNWRAP: write tool");
    wait_until("tool loaded", || async {
        daemon.get("/tools").await.1["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    })
    .await;
    daemon
}

async fn run_job(daemon: &Daemon, path: &str, args: Value) -> Value {
    let id = submit_job(daemon, path, args).await;
    let (_, job) = daemon.get(&format!("/exec/jobs/{id}?wait=60s")).await;
    job
}

/// Writes `tools.d/<name>.toml` and waits until the daemon serves tool `name`.
async fn add_tool(daemon: &Daemon, name: &str, text: &str) {
    std::fs::write(daemon.dir.0.join("tools.d").join(format!("{name}.toml")), text).expect("UNWRAP: write tool");
    wait_until("tool loaded", || async {
        daemon.get("/tools").await.1["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["name"] == name))
    })
    .await;
}

/// `GET /processes/{id}/output` of job `id`'s process, once it has one.
async fn job_output(daemon: &Daemon, id: &str) -> Option<Value> {
    let (_, list) = daemon.get(&format!("/processes?label=job%3D{id}")).await;
    let process = list.as_array()?.first()?["id"].as_str()?.to_owned();
    Some(daemon.get(&format!("/processes/{process}/output")).await.1)
}

/// Submits a job (202 expected) and returns its id.
async fn submit_job(daemon: &Daemon, path: &str, args: Value) -> String {
    let (status, accepted) = daemon.post(path, args).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "accepted");
    accepted["job_id"].as_str().expect("UNWRAP: id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_arrive_as_exactly_one_argv_element() {
    let daemon = daemon_with_tools("", &[]).await;
    let marker = daemon.dir.0.join("X");
    let corpus = [
        format!("; touch {}", marker.display()),
        format!("$(touch {})", marker.display()),
        format!("`touch {}`", marker.display()),
        format!("&& touch {}", marker.display()),
        "line one\nline two".to_owned(),
        "'single' \"double\"".to_owned(),
        "with spaces   inside".to_owned(),
        "*".to_owned(),
        "-rf".to_owned(),
        "{{value}}".to_owned(),
        "ünïcødé ✓".to_owned(),
        "x".repeat(50_000),
    ];
    for value in &corpus {
        let job = run_job(&daemon, "/exec/echo/argv", json!({"value": value})).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(
            job["stdout"],
            format!("[{value}]\n[--flag={value}]\n"),
            "value {value:?}"
        );
    }
    assert!(!marker.exists(), "no shell ever ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_whose_name_the_kernel_cuts_inside_a_character_runs() {
    // The kernel keeps 15 bytes of a program's name in /proc/<pid>/stat: "ααααααααα" (18 bytes) is cut
    // inside a character. Reading the stat line as strict UTF-8 failed every start of such a program.
    let daemon = daemon_with_tools("", &[]).await;
    let program = daemon.dir.0.join("ααααααααα");
    std::os::unix::fs::symlink("/bin/echo", &program).expect("UNWRAP: symlink");
    let tool = format!(
        "name = \"greek\"\n[[command]]\nname = \"echo\"\nexec = [{:?}, \"ok\"]\ntimeout = \"10s\"\n",
        program.display().to_string()
    );
    add_tool(&daemon, "greek", &tool).await;
    let (status, job) = daemon.post("/exec/greek/echo?wait=60s", json!({})).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["stdout"], "ok\n", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_args_are_400_and_nothing_runs() {
    let daemon = daemon_with_tools("", &[]).await;
    let cases = [
        ("/exec/echo/strict", json!({"name": "UPPER"}), "name"),
        ("/exec/echo/strict", json!({"name": "ok", "extra": "x"}), "extra"),
        ("/exec/echo/strict", json!({}), "name"),
        ("/exec/echo/strict", json!({"name": "a\u{0}b"}), "name"),
        ("/exec/echo/argv", json!({"value": "x".repeat(200_000)}), "value"),
    ];
    for (path, body, arg) in cases {
        let (status, err) = daemon.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["error"].as_str().unwrap_or("").contains(arg), "{body}: {err}");
    }
    assert_eq!(daemon.post("/exec/nope/argv", json!({})).await.0, 404);
    assert_eq!(daemon.post("/exec/echo/nope", json!({})).await.0, 404);
    let (_, jobs) = daemon.get("/tasks?type=exec").await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "no job was created");
    let (_, processes) = daemon.get("/processes?source=exec").await;
    assert_eq!(processes.as_array().map(Vec::len), Some(0), "no process was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_the_tree_and_jobs_survive_a_restart() {
    let mut daemon = daemon_with_tools("", &[]).await;
    let job = run_job(&daemon, "/exec/echo/slow", json!({})).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap_or("").contains("timed out"), "{job}");
    let (_, procs) = daemon.get("/processes?source=exec").await;
    let pgid = procs[0]["pgid"].as_u64().unwrap_or(0) as u32;
    assert!(crate::util::group_members(pgid).is_empty(), "grandchildren gone");

    let done = run_job(&daemon, "/exec/echo/argv", json!({"value": "keep me"})).await;
    let id = done["job_id"].as_str().expect("UNWRAP: id").to_owned();
    daemon.terminate();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (status, after) = daemon.get(&format!("/exec/jobs/{id}")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["stdout"], "[keep me]\n[--flag=keep me]\n");

    // The CLI.
    let output = daemon.cli(&["exec", "echo", "argv", "value=via cli", "--wait"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "[via cli]\n[--flag=via cli]\n");
    let output = daemon.cli(&["tools"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("strict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_in_one_request() {
    let daemon = daemon_with_tools("", &[]).await;
    // Finished within the wait: 200 with the job JSON of GET /exec/jobs/{id}.
    let (status, job) = daemon
        .post("/exec/echo/argv?wait=60s", json!({"value": "one trip"}))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["exit_code"], 0, "{job}");
    assert_eq!(job["stdout"], "[one trip]\n[--flag=one trip]\n");
    assert_eq!(job["tool"], "echo");
    assert_eq!(job["command"], "argv");
    let id = job["job_id"].as_str().expect("UNWRAP: id").to_owned();
    let (status, again) = daemon.get(&format!("/exec/jobs/{id}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, job, "the same job JSON as GET /exec/jobs/{{id}}");

    // A job that fails is still finished: 200, with why.
    let (status, failed) = daemon.post("/exec/echo/slow?wait=60s", json!({})).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap_or("").contains("timed out"), "{failed}");

    // Not finished within the wait (the job sleeps 0.6 s): 202 with the status so far, then a long poll.
    let (status, pending) = daemon.post("/exec/echo/lines?wait=100ms", json!({})).await;
    assert_eq!(status, 202, "{pending}");
    assert!(
        matches!(pending["status"].as_str(), Some("accepted" | "queued" | "running")),
        "{pending}"
    );
    let id = pending["job_id"].as_str().expect("UNWRAP: id").to_owned();
    let (_, done) = daemon.get(&format!("/exec/jobs/{id}?wait=60s")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "one\ntwo\n");

    // A bad query or bad args: 400, and no job is created.
    let (_, before) = daemon.get("/tasks?type=exec").await;
    for path in ["/exec/echo/argv?wait=soon", "/exec/echo/argv?nope=1"] {
        let (status, err) = daemon.post(path, json!({"value": "x"})).await;
        assert_eq!(status, 400, "{path}: {err}");
    }
    let (status, err) = daemon.post("/exec/echo/strict?wait=5s", json!({"name": "UPPER"})).await;
    assert_eq!(status, 400, "{err}");
    let (_, after) = daemon.get("/tasks?type=exec").await;
    assert_eq!(
        before.as_array().map(Vec::len),
        after.as_array().map(Vec::len),
        "no job was created"
    );

    // The CLI's --wait uses it; a failed job exits non-zero.
    let output = daemon.cli(&["exec", "echo", "slow", "--wait"]);
    assert_ne!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("timed out"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tool_file_is_reported_and_the_good_ones_stay() {
    let daemon = daemon_with_tools("", &[]).await;
    let tools = daemon.dir.0.join("tools.d");
    std::fs::write(
        tools.join("broken.toml"),
        "name = \"broken\"\n[[command]]\nname = \"x\"\nexec = [\"/bin/true\", \"{{nope}}\"]\ntimeout = \"1s\"\n",
    )
    .expect("UNWRAP: write");
    wait_until("error reported", || async {
        daemon.get("/tools").await.1["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    let (_, listing) = daemon.get("/tools").await;
    assert!(
        listing["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("broken.toml"),
        "{listing}"
    );
    assert_eq!(listing["tools"].as_array().map(Vec::len), Some(1), "echo still served");
    // Fix it: reloaded.
    std::fs::write(
        tools.join("broken.toml"),
        "name = \"broken\"\n[[command]]\nname = \"x\"\nexec = [\"/bin/true\"]\ntimeout = \"1s\"\n",
    )
    .expect("UNWRAP: write");
    wait_until("fixed tool served", || async {
        daemon.get("/tools").await.1["tools"]
            .as_array()
            .is_some_and(|t| t.len() == 2)
    })
    .await;
    let job = run_job(&daemon, "/exec/broken/x", json!({})).await;
    assert_eq!(job["status"], "completed", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_scopes_and_acl_cap_over_tcp() {
    let port = free_port();
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
[[token]]
name = "echoer"
secret_env = "CORRAL_TEST_ECHOER"
allow = ["read", "exec:echo/argv"]
[[token]]
name = "strict-no-cap"
secret_env = "CORRAL_TEST_NOCAP"
allow = ["exec:echo/*"]
[[token]]
name = "ops"
secret_env = "CORRAL_TEST_OPS"
allow = ["exec:echo/*", "cap:ops"]
[[token]]
name = "other"
secret_env = "CORRAL_TEST_OTHER"
allow = ["exec:other/*"]
[[token]]
name = "reader"
secret_env = "CORRAL_TEST_READER"
allow = ["read"]
"#
    );
    let (echoer, nocap, ops, other, reader) = (
        "echoer-secret-0123456789",
        "nocap-secret-0123456789",
        "ops-secret-0123456789",
        "other-secret-0123456789",
        "reader-secret-0123456789",
    );
    let daemon = daemon_with_tools(
        &config,
        &[
            ("CORRAL_TEST_ECHOER", echoer),
            ("CORRAL_TEST_NOCAP", nocap),
            ("CORRAL_TEST_OPS", ops),
            ("CORRAL_TEST_OTHER", other),
            ("CORRAL_TEST_READER", reader),
        ],
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    let post = |path: &'static str, token: Option<&'static str>, body: Value| {
        let addr = addr.clone();
        async move {
            request_tcp(&addr, Method::POST, path, Some(body.to_string()), token)
                .await
                .expect("UNWRAP: tcp")
                .0
        }
    };
    assert_eq!(post("/exec/echo/argv", None, json!({"value": "x"})).await, 401);
    assert_eq!(post("/exec/echo/argv", Some(echoer), json!({"value": "x"})).await, 202);
    assert_eq!(
        post("/exec/echo/strict", Some(echoer), json!({"name": "x"})).await,
        403,
        "outside exec scope"
    );
    assert_eq!(
        post("/exec/echo/strict", Some(nocap), json!({"name": "x"})).await,
        403,
        "acl_cap enforced"
    );
    assert_eq!(post("/exec/echo/strict", Some(ops), json!({"name": "x"})).await, 202);
    // A job's routes need the scope that may run its command (or read, for a GET): whoever may submit a
    // job may also poll and cancel it.
    let (status, accepted) = request_tcp(
        &addr,
        Method::POST,
        "/exec/echo/slow",
        Some("{}".to_owned()),
        Some(nocap),
    )
    .await
    .expect("UNWRAP: tcp");
    assert_eq!(status, 202, "{accepted}");
    let job = format!("/exec/jobs/{}", accepted["job_id"].as_str().expect("UNWRAP: job id"));
    let call = |method: Method, path: String, token: &'static str| {
        let addr = addr.clone();
        async move {
            request_tcp(&addr, method, &path, None, Some(token))
                .await
                .expect("UNWRAP: tcp")
        }
    };
    assert_eq!(
        call(Method::GET, job.clone(), nocap).await.0,
        200,
        "its own exec scope polls"
    );
    assert_eq!(
        call(Method::GET, format!("{job}/stream?x"), reader).await.0,
        200,
        "read polls"
    );
    let (status, err) = call(Method::GET, job.clone(), other).await;
    assert_eq!(status, 403, "{err}");
    assert!(
        err.to_string().contains("exec:echo/slow or read"),
        "names the scope it needs: {err}"
    );
    assert_eq!(
        call(Method::DELETE, job.clone(), other).await.0,
        403,
        "another tool's scope"
    );
    assert_eq!(
        call(Method::DELETE, job.clone(), reader).await.0,
        403,
        "read does not cancel"
    );
    let unknown = "/exec/jobs/01234567-89ab-7def-8123-456789abcdef".to_owned();
    assert_eq!(
        call(Method::GET, unknown.clone(), other).await.0,
        404,
        "any exec scope learns 404"
    );
    assert_eq!(
        call(Method::DELETE, job.clone(), nocap).await.0,
        200,
        "its own exec scope cancels"
    );
    // The socket is trusted by peer credentials.
    let (status, _) = request_unix(
        &daemon.socket,
        Method::POST,
        "/exec/echo/strict",
        Some(json!({"name": "x"}).to_string()),
        None,
    )
    .await
    .expect("UNWRAP: unix");
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_streams_its_output_and_status_as_sse() {
    let daemon = daemon_with_tools("", &[]).await;
    let id = submit_job(&daemon, "/exec/echo/lines", json!({})).await;
    let text = job_stream(&daemon, &id).await;
    let one = text.find("\"line\":\"one\"").expect("UNWRAP: line one streamed");
    let two = text.find("\"line\":\"two\"").expect("UNWRAP: line two streamed");
    assert!(one < two, "{text}");
    let last_status = text.rfind("event: status").expect("UNWRAP: status events");
    assert!(text[last_status..].contains("\"status\":\"completed\""), "{text}");
    assert_eq!(daemon.get("/exec/jobs/nope/stream").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joined_mid_line_keeps_the_start_of_that_line() {
    let daemon = daemon_with_tools("", &[]).await;
    let id = submit_job(&daemon, "/exec/echo/partial", json!({})).await;
    // Join once the first half of the line is written (and nobody listened to it).
    wait_until("the first half is written", || async {
        let Some(output) = job_output(&daemon, &id).await else {
            return false;
        };
        output.to_string().contains("first part")
    })
    .await;
    let text = job_stream(&daemon, &id).await;
    // As output events (the final status event carries the whole stdout anyway).
    let first = text
        .find("\"line\":\"first part \"")
        .expect("UNWRAP: the start of the line is streamed");
    let rest = text.find("\"line\":\"rest\"").expect("UNWRAP: the rest is streamed");
    assert!(first < rest, "{text}");
    let last_status = text.rfind("event: status").expect("UNWRAP: status events");
    assert!(text[last_status..].contains("\"status\":\"completed\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_joined_mid_line_gets_that_line_once() {
    // While one follower listens, the process holds a partial line for its next event, which carries the
    // line whole; a second follower joining mid-line got the start of it twice (snapshot, then event).
    let daemon = daemon_with_tools("", &[]).await;
    let (go1, go2) = (daemon.dir.0.join("go1"), daemon.dir.0.join("go2"));
    let script = format!(
        "echo ready; while [ ! -e {0} ]; do sleep 0.01; done; printf 'first part '; \
         while [ ! -e {1} ]; do sleep 0.01; done; echo rest",
        go1.display(),
        go2.display()
    );
    let tool = format!(
        "name = \"stage\"\n[[command]]\nname = \"line\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"60s\"\n"
    );
    add_tool(&daemon, "stage", &tool).await;
    let id = submit_job(&daemon, "/exec/stage/line", json!({})).await;
    // The first follower has subscribed once it streams "ready" (sent after its subscription was taken).
    let mut first = JobStream::open(&daemon, &id).await;
    first.read_until("\"line\":\"ready\"").await;
    std::fs::write(&go1, b"").expect("UNWRAP: go1");
    wait_until("the first part is written", || async {
        let (_, job) = daemon.get(&format!("/exec/jobs/{id}")).await;
        let Some(output) = job_output(&daemon, &id).await else {
            return false;
        };
        job["status"] == "running" && output.to_string().contains("first part")
    })
    .await;
    let mut second = JobStream::open(&daemon, &id).await;
    second.read_until("\"line\":\"ready\"").await;
    std::fs::write(&go2, b"").expect("UNWRAP: go2");
    for (name, stream) in [("first", &mut first), ("second", &mut second)] {
        let text = stream.read_to_end().await;
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|l| l.starts_with("{\"stream\""))
            .collect();
        assert_eq!(lines.len(), 2, "{name}: ready, then the one line: {text}");
        assert!(lines[1].contains("\"line\":\"first part rest\""), "{name}: {text}");
    }
}

/// `GET /exec/jobs/{id}/stream`, read as it comes.
struct JobStream {
    body: hyper::body::Incoming,
    text: String,
}

impl JobStream {
    async fn open(daemon: &Daemon, id: &str) -> JobStream {
        let stream = tokio::net::UnixStream::connect(&daemon.socket)
            .await
            .expect("UNWRAP: connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("UNWRAP: http");
        tokio::spawn(connection);
        let request = hyper::Request::get(format!("/exec/jobs/{id}/stream"))
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("UNWRAP: request");
        let response = sender.send_request(request).await.expect("UNWRAP: response");
        assert_eq!(response.status(), 200);
        JobStream {
            body: response.into_body(),
            text: String::new(),
        }
    }

    /// Reads until the body holds `needle`.
    async fn read_until(&mut self, needle: &str) {
        let read = async {
            while !self.text.contains(needle) {
                let frame = http_body_util::BodyExt::frame(&mut self.body)
                    .await
                    .expect("UNWRAP: the stream is open")
                    .expect("UNWRAP: body");
                if let Some(data) = frame.data_ref() {
                    self.text.push_str(&String::from_utf8_lossy(data));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("no {needle} in {}", self.text));
    }

    /// Reads until the stream ends (with the job) and returns all of it.
    async fn read_to_end(&mut self) -> String {
        let read = async {
            while let Some(frame) = http_body_util::BodyExt::frame(&mut self.body).await {
                if let Some(data) = frame.expect("UNWRAP: body").data_ref() {
                    self.text.push_str(&String::from_utf8_lossy(data));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("UNWRAP: the stream ends when the job does");
        self.text.clone()
    }
}

/// The whole SSE body of `GET /exec/jobs/{id}/stream`, which ends when the job does.
async fn job_stream(daemon: &Daemon, id: &str) -> String {
    JobStream::open(daemon, id).await.read_to_end().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_at_kill_9_is_recovered_as_the_task_engine_says() {
    let mut daemon = daemon_with_tools("", &[]).await;
    let tools = daemon.dir.0.join("tools.d");
    let out = daemon.dir.0.join("out.txt");
    std::fs::write(
        tools.join("append.toml"),
        format!(
            "name = \"append\"\n[[command]]\nname = \"once\"\nexec = [\"/bin/sh\", \"-c\", \"sleep 10; echo done >> {}\"]\ntimeout = \"60s\"\n",
            out.display()
        ),
    )
    .expect("UNWRAP: write tool");
    wait_until("append tool loaded", || async {
        daemon.get("/tools").await.1["tools"]
            .as_array()
            .is_some_and(|t| t.len() == 2)
    })
    .await;
    let (status, accepted) = daemon.post("/exec/append/once", json!({})).await;
    assert_eq!(status, 202);
    let id = accepted["job_id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("job process recorded as running", || async {
        let (_, list) = daemon.get(&format!("/processes?label=job%3D{id}&state=running")).await;
        list.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (_, job) = daemon.get(&format!("/exec/jobs/{id}?wait=60s")).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        "done\n",
        "the run went on through the crash and appended once"
    );
    let (_, task) = daemon.get(&format!("/tasks/{id}")).await;
    assert_eq!(task["attempt"], 1, "resumed, not run again: {task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ends_while_the_daemon_is_down_keeps_its_output_and_exit_code() {
    let mut daemon = daemon_with_tools("", &[]).await;
    let tools = daemon.dir.0.join("tools.d");
    let gate = daemon.dir.0.join("gate");
    let done = daemon.dir.0.join("done");
    std::fs::write(
        tools.join("gated.toml"),
        format!(
            "name = \"gated\"\n[[command]]\nname = \"run\"\nexec = [\"/bin/sh\", \"-c\", \"echo before; while [ ! -e {gate} ]; do sleep 0.05; done; echo while-down; echo oops >&2; touch {done}; exit 3\"]\ntimeout = \"120s\"\n",
            gate = gate.display(),
            done = done.display()
        ),
    )
    .expect("UNWRAP: write tool");
    wait_until("gated tool loaded", || async {
        daemon.get("/tools").await.1["tools"]
            .as_array()
            .is_some_and(|t| t.len() == 2)
    })
    .await;
    let (status, accepted) = daemon.post("/exec/gated/run", json!({})).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("the job's process runs", || async {
        let (_, list) = daemon.get(&format!("/processes?label=job%3D{id}&state=running")).await;
        list.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    let (_, list) = daemon.get(&format!("/processes?label=job%3D{id}&state=running")).await;
    let process_id = list[0]["id"].as_str().expect("UNWRAP: id").to_owned();
    wait_until("before is captured", || async {
        let (_, output) = daemon.get(&format!("/processes/{process_id}/output")).await;
        output["stdout"].as_str().is_some_and(|s| s.contains("before"))
    })
    .await;
    daemon.kill9();
    // The daemon is down: the job writes and ends. Without the keeper it would die of SIGPIPE.
    std::fs::write(&gate, b"").expect("UNWRAP: temp dir");
    wait_until("the job ended while the daemon was down", || {
        std::future::ready(done.exists())
    })
    .await;
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let (_, health) = daemon.get("/health").await;
    assert_eq!(health["reconcile"]["exited_while_down"], 1, "{health}");
    let (_, job) = daemon.get(&format!("/exec/jobs/{id}?wait=60s")).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 3, "the real exit code, not unknown: {job}");
    let stdout = job["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.contains("while-down"),
        "output written while the daemon was down: {job}"
    );
    assert!(job["stderr"].as_str().unwrap_or_default().contains("oops"), "{job}");
    let (_, record) = daemon.get(&format!("/processes/{process_id}")).await;
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["exit_code"], 3, "{record}");
    let (_, output) = daemon.get(&format!("/processes/{process_id}/output")).await;
    assert!(
        output["stdout"].as_str().is_some_and(|s| s.contains("while-down")),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_writing_100_mib_keeps_the_daemon_near_the_cap() {
    let daemon = daemon_with_tools("", &[]).await;
    std::fs::write(
        daemon.dir.0.join("tools.d/flood.toml"),
        "name = \"flood\"\n[[command]]\nname = \"out\"\nexec = [\"/usr/bin/head\", \"-c\", \"104857600\", \"/dev/zero\"]\ntimeout = \"120s\"\n",
    )
    .expect("UNWRAP: write tool");
    wait_until("flood tool loaded", || async {
        daemon.get("/tools").await.1["tools"]
            .as_array()
            .is_some_and(|t| t.len() == 2)
    })
    .await;
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
            .unwrap_or(0)
    };
    let before = rss(daemon.pid());
    let job = run_job(&daemon, "/exec/flood/out", json!({})).await;
    assert_eq!(job["status"], "completed", "{}", job["error"]);
    assert_eq!(job["truncated"], true);
    assert_eq!(
        job["stdout"].as_str().map(str::len),
        Some(1024 * 1024),
        "newest 1 MiB kept"
    );
    let peak = rss(daemon.pid());
    // The ring is 1 MiB per stream; the job result is stored and served as JSON. Allow generous room
    // for those copies and the allocator, but nothing near the 100 MiB the child wrote.
    assert!(
        peak.saturating_sub(before) < 40 * 1024,
        "peak RSS grew by {} KiB",
        peak.saturating_sub(before)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_holds_across_a_kill_9_and_keeps_submit_order() {
    // A command with `concurrency = 1`, three jobs: the first runs, two queue. After a kill -9 the first
    // was resumed without its slot, so a queued one ran beside it, and the queued ones started in the order
    // their runs were polled, not submitted.
    let mut daemon = daemon_with_tools("", &[]).await;
    let dir = daemon.dir.0.clone();
    let log = dir.join("order.log");
    let script = format!(
        "echo \"start $1\" >> {log}; while [ ! -e {dir}/go$1 ]; do sleep 0.02; done; echo \"end $1\" >> {log}",
        log = log.display(),
        dir = dir.display()
    );
    let tool = format!(
        "name = \"one\"\n[[command]]\nname = \"at_a_time\"\nexec = [\"/bin/sh\", \"-c\", {script:?}, \"sh\", \"{{{{n}}}}\"]\ntimeout = \"120s\"\nconcurrency = 1\n[[command.arg]]\nname = \"n\"\nrequired = true\npattern = \"[0-9]+\"\n"
    );
    add_tool(&daemon, "one", &tool).await;
    let mut ids = Vec::new();
    for n in ["1", "2", "3"] {
        ids.push(submit_job(&daemon, "/exec/one/at_a_time", json!({"n": n})).await);
        // Each submit's run is under way before the next: the submit order is the id order anyway.
        wait_until("the job is past accepted", || async {
            let id = ids.last().expect("UNWRAP: id");
            daemon.get(&format!("/exec/jobs/{id}")).await.1["status"] != "accepted"
        })
        .await;
    }
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // Its process recorded as running (a crash between its spawn and its record would run it again).
    wait_until("job 1 runs", || async {
        let (_, list) = daemon
            .get(&format!("/processes?label=job%3D{}&state=running", ids[0]))
            .await;
        list.as_array().is_some_and(|l| !l.is_empty()) && read_log() == "start 1\n"
    })
    .await;
    daemon.kill9();
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    let status = |id: String| {
        let daemon = &daemon;
        async move { daemon.get(&format!("/exec/jobs/{id}")).await.1["status"].clone() }
    };
    // Jobs 2 and 3 are run again and wait for the slot (`queued`); job 1, resumed, holds it. (Between its
    // claim and its wait a job shows `running` for a moment, so this waits rather than asserts.)
    wait_until("jobs 2 and 3 wait for the slot again", || async {
        status(ids[1].clone()).await == "queued" && status(ids[2].clone()).await == "queued"
    })
    .await;
    assert_eq!(status(ids[0].clone()).await, "running");
    assert_eq!(read_log(), "start 1\n", "nothing ran beside job 1");
    for n in ["1", "2", "3"] {
        std::fs::write(dir.join(format!("go{n}")), b"").expect("UNWRAP: go");
        wait_until("the job ends", || async { read_log().contains(&format!("end {n}\n")) }).await;
    }
    for id in &ids {
        let (_, job) = daemon.get(&format!("/exec/jobs/{id}?wait=60s")).await;
        assert_eq!(job["status"], "completed", "{job}");
    }
    assert_eq!(
        read_log(),
        "start 1\nend 1\nstart 2\nend 2\nstart 3\nend 3\n",
        "one at a time, in submit order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_at_kill_9_keeps_the_output_it_wrote_before() {
    // While the daemon is attached, it reads the job's pipes itself; the keeper spools only what comes
    // while no daemon is. What the job wrote before a kill -9 lived only in the daemon's memory, and the
    // resumed job's result lacked it.
    let mut daemon = daemon_with_tools("", &[]).await;
    let gate = daemon.dir.0.join("gate");
    let script = format!(
        "echo before; echo err-before >&2; while [ ! -e {} ]; do sleep 0.02; done; echo after; echo err-after >&2",
        gate.display()
    );
    let tool = format!(
        "name = \"twice\"\n[[command]]\nname = \"out\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"120s\"\n"
    );
    add_tool(&daemon, "twice", &tool).await;
    let id = submit_job(&daemon, "/exec/twice/out", json!({})).await;
    wait_until("the job wrote its first lines", || async {
        let Some(output) = job_output(&daemon, &id).await else {
            return false;
        };
        let text = output.to_string();
        text.contains("before") && text.contains("err-before")
    })
    .await;
    daemon.kill9();
    // A mirror no process reads on (its process was lost meanwhile) is removed at the restart.
    let stray = daemon
        .state_dir
        .join("output")
        .join("0190aaaa-0000-7000-8000-000000000000.stdout");
    std::fs::write(&stray, b"old").expect("UNWRAP: stray mirror");
    daemon.spawn(&[]);
    daemon.wait_ready().await;
    assert!(!stray.exists(), "stray mirror removed");
    std::fs::write(&gate, b"").expect("UNWRAP: gate");
    let (_, job) = daemon.get(&format!("/exec/jobs/{id}?wait=60s")).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["stdout"], "before\nafter\n", "{job}");
    assert_eq!(job["stderr"], "err-before\nerr-after\n", "{job}");
    let (_, task) = daemon.get(&format!("/tasks/{id}")).await;
    assert_eq!(task["attempt"], 1, "resumed, not run again: {task}");
    let left: Vec<_> = std::fs::read_dir(daemon.state_dir.join("output"))
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the mirrors are removed once the job's process ended: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_exec_wait_reports_the_job_across_a_daemon_crash() {
    let mut daemon = daemon_with_tools("", &[]).await;
    let gate = daemon.dir.0.join("gate");
    let script = format!(
        "echo before; while [ ! -e {} ]; do sleep 0.02; done; echo after; exit 3",
        gate.display()
    );
    let tool = format!(
        "name = \"gated\"\n[[command]]\nname = \"run\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"120s\"\n"
    );
    add_tool(&daemon, "gated", &tool).await;
    let cli = daemon.cli_background(&["exec", "gated", "run", "--wait"]);
    // Its process recorded as running (a crash between its spawn and its record would run it again).
    wait_until("the job runs", || async {
        let (_, list) = daemon.get("/processes?source=exec&state=running").await;
        let Some(id) = list[0]["labels"]["job"].as_str() else {
            return false;
        };
        job_output(&daemon, id)
            .await
            .is_some_and(|o| o.to_string().contains("before"))
    })
    .await;
    daemon.crash_under(&cli).await;
    std::fs::write(&gate, b"").expect("UNWRAP: gate");
    let (status, stdout, stderr) = cli.finish().await;
    assert_eq!(status.code(), Some(3), "the job's exit code: {stderr}");
    assert_eq!(stdout, "before\nafter\n", "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_args_never_show_in_the_task_api() {
    // `secret = true` args were masked in the process record and the log, but `GET /tasks/{id}` and
    // `GET /tasks` showed them in clear (to any token with `read`); so did process tasks' secret-looking argv.
    let daemon = daemon_with_tools("", &[]).await;
    let tool = "name = \"sec\"\n[[command]]\nname = \"login\"\nexec = [\"/bin/true\", \"{{user}}\", \"{{pw}}\"]\ntimeout = \"10s\"\n[[command.arg]]\nname = \"user\"\n[[command.arg]]\nname = \"pw\"\nsecret = true\n";
    add_tool(&daemon, "sec", tool).await;
    let job = run_job(&daemon, "/exec/sec/login", json!({"user": "ann", "pw": "HUNTER2PW"})).await;
    assert_eq!(job["status"], "completed", "{job}");
    let id = job["job_id"].as_str().expect("UNWRAP: id");
    let (_, task) = daemon.get(&format!("/tasks/{id}")).await;
    assert_eq!(task["params"]["args"], json!({"user": "ann", "pw": "***"}), "{task}");
    let (_, list) = daemon.get("/tasks?type=exec").await;
    assert!(!list.to_string().contains("HUNTER2PW"), "{list}");
    let (status, submitted) = daemon
        .post(
            "/tasks",
            json!({"type": "process", "params": {"command": ["true", "--password", "PLAINPW"],
                   "env": {"API_TOKEN": "TOKSECRET9", "MODE": "fast"}}}),
        )
        .await;
    assert_eq!(status, 201, "{submitted}");
    assert_eq!(
        submitted["params"]["command"],
        json!(["true", "--password", "***"]),
        "{submitted}"
    );
    assert_eq!(
        submitted["params"]["env"],
        json!({"API_TOKEN": "***", "MODE": "fast"}),
        "{submitted}"
    );
}
