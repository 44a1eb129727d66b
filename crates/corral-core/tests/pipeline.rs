//! Pipelines with real processes, through `DirectLauncher`.
//!
//! Every test waits on conditions (files that steps create, events) with generous deadlines and never
//! asserts on speed: it must pass on a loaded 2-core machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_core::pipeline::{
    DirectLauncher, Issue, LaunchFuture, Mode, Pipeline, PipelineEvent, PipelineResult, PipelineSpec, Runner,
    SpecError, StepContext, StepLauncher, StepSpec, StepStatus,
};
use tokio::sync::mpsc;

/// Generous deadline for anything a test waits for.
const DEADLINE: Duration = Duration::from_secs(60);

/// Short grace for stops, so tests that stop TERM-ignoring trees stay quick.
const GRACE: Duration = Duration::from_millis(300);

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("corral-core-pipeline-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("UNWRAP: create temp dir");
        TempDir(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A step running `script` with `sh -c` in `dir`.
fn sh(name: &str, dir: &Path, script: &str) -> StepSpec {
    StepSpec::new(name, ["sh", "-c", script]).dir(dir)
}

/// A shell snippet that waits (up to the deadline) until `file` exists, and fails if it never does.
fn wait_for_file(file: &str) -> String {
    let tries = DEADLINE.as_millis() / 50;
    format!("i=0; while [ ! -e {file} ]; do i=$((i+1)); [ $i -gt {tries} ] && exit 99; sleep 0.05; done")
}

fn pipeline(mode: Mode, parallelism: Option<usize>, steps: Vec<StepSpec>) -> Pipeline {
    Pipeline::new(PipelineSpec {
        name: Some("test".to_owned()),
        mode,
        parallelism,
        steps,
    })
    .expect("UNWRAP: the test pipeline is valid")
}

/// Runs `pipeline` to its end and returns the result and every event, in order.
async fn run(pipeline: Pipeline) -> (PipelineResult, Vec<PipelineEvent>) {
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let run = Runner::new(DirectLauncher::new())
        .grace(GRACE)
        .events(sender)
        .start(pipeline);
    let result = tokio::time::timeout(DEADLINE, run.wait())
        .await
        .expect("UNWRAP: the pipeline ends within the deadline");
    (result, drain(&mut receiver).await)
}

/// Every event until the run's sender is gone.
async fn drain(receiver: &mut mpsc::UnboundedReceiver<PipelineEvent>) -> Vec<PipelineEvent> {
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(DEADLINE, receiver.recv()).await {
        events.push(event);
    }
    events
}

fn status(result: &PipelineResult, name: &str) -> StepStatus {
    result
        .step(name)
        .map(|step| step.status)
        .expect("UNWRAP: the step exists")
}

fn error(result: &PipelineResult, name: &str) -> String {
    result
        .step(name)
        .and_then(|step| step.error.clone())
        .unwrap_or_default()
}

/// Position of the first event matching `wanted`.
fn position(events: &[PipelineEvent], what: &str, wanted: impl Fn(&PipelineEvent) -> bool) -> usize {
    events
        .iter()
        .position(wanted)
        .unwrap_or_else(|| panic!("no event {what} in {events:#?}"))
}

fn started(name: &str) -> impl Fn(&PipelineEvent) -> bool + '_ {
    move |event| matches!(event, PipelineEvent::StepStarted { name: n } if n == name)
}

fn finished(name: &str) -> impl Fn(&PipelineEvent) -> bool + '_ {
    move |event| matches!(event, PipelineEvent::StepFinished { name: n, .. } if n == name)
}

/// The order in which steps started, from the events.
fn start_order(events: &[PipelineEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            PipelineEvent::StepStarted { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// The most steps running at once, from the events.
fn max_running(events: &[PipelineEvent]) -> usize {
    let (mut running, mut max) = (0usize, 0usize);
    for event in events {
        match event {
            PipelineEvent::StepStarted { .. } => {
                running += 1;
                max = max.max(running);
            }
            PipelineEvent::StepFinished { .. } => running -= 1,
            _ => {}
        }
    }
    max
}

fn read_pid(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .expect("UNWRAP: pid file written")
        .trim()
        .parse()
        .expect("UNWRAP: pid file holds a pid")
}

/// An environment variable every process of a step's tree inherits, to find them all in `/proc`.
fn marker() -> (String, String) {
    ("CORRAL_TEST_MARKER".to_owned(), uuid::Uuid::new_v4().to_string())
}

/// Pids of live (non-zombie) processes whose environment holds `name=value`.
fn live_processes_with_env(name: &str, value: &str) -> Vec<u32> {
    let wanted = format!("{name}={value}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("UNWRAP: /proc readable").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let marked = environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes());
        let alive = matches!(corral_proc::read_stat(pid), Ok(Some(stat)) if !stat.is_dead());
        if marked && alive {
            pids.push(pid);
        }
    }
    pids
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_starts_a_step_when_its_own_dependencies_are_done_not_in_waves() {
    let dir = TempDir::new();
    // `slow` can only end after `next` has started: with waves, `next` would wait for `slow` and `slow`
    // would give up (exit 99) at the deadline.
    let (result, events) = run(pipeline(
        Mode::Dag,
        None,
        vec![
            sh("quick", &dir.0, "sleep 0.2"),
            sh("slow", &dir.0, &wait_for_file("next_started")),
            sh("next", &dir.0, "touch next_started").after(["quick"]),
        ],
    ))
    .await;
    assert!(result.success, "{result:#?}");
    assert_eq!(status(&result, "slow"), StepStatus::Passed);
    assert!(position(&events, "next started", started("next")) < position(&events, "slow finished", finished("slow")));
    assert!(
        position(&events, "quick finished", finished("quick")) < position(&events, "next started", started("next"))
    );
    assert!(matches!(
        events.last(),
        Some(PipelineEvent::Finished {
            success: true,
            passed: 3,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_failure_skips_its_transitive_dependents_while_other_branches_pass() {
    let dir = TempDir::new();
    let (result, events) = run(pipeline(
        Mode::Dag,
        None,
        vec![
            sh("broken", &dir.0, "echo about to fail; echo oops >&2; exit 3"),
            sh("child", &dir.0, "touch child_ran").after(["broken"]),
            sh("grandchild", &dir.0, "touch grandchild_ran").after(["child"]),
            sh("independent", &dir.0, "sleep 0.3; echo fine"),
            sh("after_independent", &dir.0, "touch after_independent_ran").after(["independent"]),
            sh("join", &dir.0, "touch join_ran").after(["after_independent", "grandchild"]),
        ],
    ))
    .await;
    assert!(!result.success);
    let broken = result.step("broken").expect("UNWRAP: step exists");
    assert_eq!(broken.status, StepStatus::Failed);
    assert_eq!(broken.exit_code, Some(3));
    assert_eq!(broken.error.as_deref(), Some("exited with code 3"));
    assert_eq!(broken.output_tail, "about to fail\noops\n");
    assert!(broken.started_at.is_some() && broken.ended_at >= broken.started_at);
    for name in ["child", "grandchild", "join"] {
        assert_eq!(status(&result, name), StepStatus::Skipped, "{name}");
        assert!(
            error(&result, name).contains("\"broken\" failed"),
            "{}",
            error(&result, name)
        );
        assert!(!dir.path(&format!("{name}_ran")).exists(), "{name} must not run");
        assert!(events.iter().any(
            |event| matches!(event, PipelineEvent::StepSkipped { name: n, reason } if n == name && reason.contains("broken"))
        ));
    }
    assert_eq!(status(&result, "independent"), StepStatus::Passed);
    assert_eq!(status(&result, "after_independent"), StepStatus::Passed);
    assert!(dir.path("after_independent_ran").exists());
    assert_eq!(
        (result.passed, result.failed, result.skipped, result.cancelled),
        (2, 1, 3, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_failure_does_not_skip_dependents_or_fail_the_pipeline() {
    let dir = TempDir::new();
    let (result, _) = run(pipeline(
        Mode::Dag,
        None,
        vec![
            sh("flaky", &dir.0, "exit 1").allow_failure(),
            sh("next", &dir.0, "touch next_ran").after(["flaky"]),
        ],
    ))
    .await;
    assert!(result.success, "{result:#?}");
    assert_eq!(status(&result, "flaky"), StepStatus::Failed);
    assert_eq!(status(&result, "next"), StepStatus::Passed);
    assert!(dir.path("next_ran").exists());
    assert_eq!((result.passed, result.failed), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_cannot_start_fails_and_skips_its_dependents() {
    let dir = TempDir::new();
    let (result, _) = run(pipeline(
        Mode::Dag,
        None,
        vec![
            StepSpec::new("missing", ["/nonexistent/corral-test-program"]),
            sh("next", &dir.0, "touch next_ran").after(["missing"]),
            StepSpec::new("bad_dir", ["true"]).dir(dir.path("no-such-dir")),
        ],
    ))
    .await;
    assert_eq!(status(&result, "missing"), StepStatus::Failed);
    assert!(
        error(&result, "missing").starts_with("failed to start"),
        "{}",
        error(&result, "missing")
    );
    assert_eq!(status(&result, "next"), StepStatus::Skipped);
    assert_eq!(status(&result, "bad_dir"), StepStatus::Failed);
    assert!(
        error(&result, "bad_dir").contains("no-such-dir"),
        "{}",
        error(&result, "bad_dir")
    );
    assert!(!result.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_and_unknown_dependencies_are_reported_before_anything_runs() {
    let dir = TempDir::new();
    let marker = dir.path("ran");
    let text = format!(
        r#"
        [[step]]
        name = "innocent"
        command = ["touch", "{marker}"]

        [[step]]
        name = "a"
        command = ["touch", "{marker}"]
        after = ["b"]

        [[step]]
        name = "b"
        command = ["touch", "{marker}"]
        after = ["a", "ghost"]
        "#,
        marker = marker.display()
    );
    let spec = PipelineSpec::from_toml_str(&text).expect("UNWRAP: valid TOML");
    let err = Pipeline::new(spec).expect_err("a cycle and an unknown step");
    assert_eq!(
        err.issues,
        vec![
            Issue::UnknownDependency {
                step: "b".into(),
                after: "ghost".into()
            },
            Issue::Cycle {
                steps: vec!["a".into(), "b".into()]
            },
        ]
    );
    let message = err.to_string();
    assert!(message.contains("a -> b -> a"), "{message}");
    assert!(message.contains("\"ghost\""), "{message}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!marker.exists(), "no step may run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parallelism_cap_is_respected() {
    let dir = TempDir::new();
    let steps = (0..6).map(|idx| sh(&format!("s{idx}"), &dir.0, "sleep 0.2")).collect();
    let (result, events) = run(pipeline(Mode::Dag, Some(2), steps)).await;
    assert!(result.success);
    assert_eq!(max_running(&events), 2, "{events:#?}");
    // Declaration order breaks ties.
    assert_eq!(start_order(&events), ["s0", "s1", "s2", "s3", "s4", "s5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_mode_runs_all_steps_at_once_but_honours_after() {
    let dir = TempDir::new();
    // Each of the four steps waits for all four to have started: only possible if they run at once.
    let all_started = (0..4).map(|idx| format!("started_{idx}")).collect::<Vec<_>>();
    let wait_all = all_started
        .iter()
        .map(|file| wait_for_file(file))
        .collect::<Vec<_>>()
        .join("; ");
    let mut steps: Vec<StepSpec> = (0..4)
        .map(|idx| sh(&format!("p{idx}"), &dir.0, &format!("touch started_{idx}; {wait_all}")))
        .collect();
    steps.push(sh("last", &dir.0, "true").after(["p0", "p3"]));
    let (result, events) = run(pipeline(Mode::Parallel, None, steps)).await;
    assert!(result.success, "{result:#?}");
    assert_eq!(max_running(&events), 4);
    let last = position(&events, "last started", started("last"));
    assert!(position(&events, "p0 finished", finished("p0")) < last);
    assert!(position(&events, "p3 finished", finished("p3")) < last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_mode_runs_in_declaration_order_and_stops_at_the_first_required_failure() {
    let dir = TempDir::new();
    let (result, events) = run(pipeline(
        Mode::Sequential,
        None,
        vec![
            sh("one", &dir.0, "echo one >> log"),
            sh("two", &dir.0, "echo two >> log; exit 1").allow_failure(),
            sh("three", &dir.0, "echo three >> log"),
            sh("four", &dir.0, "echo four >> log; exit 4"),
            sh("five", &dir.0, "echo five >> log"),
            sh("six", &dir.0, "echo six >> log").after(["one"]),
        ],
    ))
    .await;
    assert!(!result.success);
    assert_eq!(start_order(&events), ["one", "two", "three", "four"]);
    assert_eq!(max_running(&events), 1);
    assert_eq!(
        std::fs::read_to_string(dir.path("log")).expect("UNWRAP: log written"),
        "one\ntwo\nthree\nfour\n"
    );
    for name in ["five", "six"] {
        assert_eq!(status(&result, name), StepStatus::Skipped);
        assert!(
            error(&result, name).contains("\"four\" failed"),
            "{}",
            error(&result, name)
        );
    }
    assert_eq!(
        (result.passed, result.failed, result.skipped, result.cancelled),
        (2, 2, 2, 0)
    );

    // A step declared before one it runs after waits for it.
    let (result, events) = run(pipeline(
        Mode::Sequential,
        None,
        vec![
            sh("deploy", &dir.0, "true").after(["build"]),
            sh("build", &dir.0, "true"),
        ],
    ))
    .await;
    assert!(result.success);
    assert_eq!(start_order(&events), ["build", "deploy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_stops_its_tree_and_fails_the_step() {
    let dir = TempDir::new();
    let (marker_name, marker_value) = marker();
    let (result, _) = run(pipeline(
        Mode::Dag,
        None,
        vec![
            sh("hang", &dir.0, "sleep 300 & sleep 300 & wait")
                .env(&marker_name, &marker_value)
                .timeout(Duration::from_secs(1)),
            sh("next", &dir.0, "touch next_ran").after(["hang"]),
        ],
    ))
    .await;
    let hang = result.step("hang").expect("UNWRAP: step exists");
    assert_eq!(hang.status, StepStatus::Failed);
    assert_eq!(hang.error.as_deref(), Some("timed out after 1s"));
    assert_eq!(hang.exit_code, None, "stopped by a signal");
    assert_eq!(status(&result, "next"), StepStatus::Skipped);
    assert!(!dir.path("next_ran").exists());
    assert_eq!(live_processes_with_env(&marker_name, &marker_value), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_steps_and_cancels_the_rest() {
    let dir = TempDir::new();
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let (marker_name, marker_value) = marker();
    let spec = PipelineSpec {
        name: Some("cancel-me".to_owned()),
        steps: vec![
            sh("polite", &dir.0, "echo $$ > polite.pid; sleep 300 & sleep 300 & wait").env(&marker_name, &marker_value),
            // Ignores TERM (and so do its children): only the KILL after the grace stops it.
            sh(
                "stubborn",
                &dir.0,
                "trap '' TERM; echo $$ > stubborn.pid; sleep 300 & wait",
            )
            .env(&marker_name, &marker_value),
            sh("later", &dir.0, "touch later_ran").after(["polite"]),
        ],
        ..PipelineSpec::default()
    };
    let run = Runner::new(DirectLauncher::new())
        .grace(GRACE)
        .events(sender)
        .start(Pipeline::new(spec).expect("UNWRAP: valid"));
    assert_eq!(run.name(), Some("cancel-me"));
    wait_until("both steps wrote their pid", || {
        dir.path("polite.pid").exists() && dir.path("stubborn.pid").exists()
    })
    .await;
    assert!(!live_processes_with_env(&marker_name, &marker_value).is_empty());
    let snapshot = run.snapshot();
    let statuses: Vec<_> = snapshot.iter().map(|step| step.status).collect();
    assert_eq!(
        statuses,
        [StepStatus::Running, StepStatus::Running, StepStatus::Pending]
    );
    assert!(snapshot[0].started_at.is_some() && snapshot[2].started_at.is_none());
    assert!(!run.is_finished());

    run.cancel();
    let result = tokio::time::timeout(DEADLINE, run.wait())
        .await
        .expect("UNWRAP: cancelled pipeline ends");
    assert!(!result.success);
    assert_eq!(result.cancelled, 3, "{result:#?}");
    for name in ["polite", "stubborn"] {
        assert_eq!(status(&result, name), StepStatus::Cancelled, "{name}");
        let pgid = read_pid(&dir.path(&format!("{name}.pid")));
        assert!(
            !corral_proc::group_has_live_members(pgid).expect("UNWRAP: /proc readable"),
            "{name}'s tree must be gone"
        );
    }
    assert_eq!(live_processes_with_env(&marker_name, &marker_value), Vec::<u32>::new());
    assert_eq!(status(&result, "later"), StepStatus::Cancelled);
    assert_eq!(error(&result, "later"), "cancelled before it started");
    assert!(!dir.path("later_ran").exists());
    assert_eq!(run.result(), Some(result));
    assert_eq!(run.snapshot()[2].status, StepStatus::Cancelled);

    let events = drain(&mut receiver).await;
    assert!(events.contains(&PipelineEvent::StepCancelled { name: "later".into() }));
    assert!(events.iter().any(|event| matches!(
        event,
        PipelineEvent::StepFinished { name, status: StepStatus::Cancelled, .. } if name == "stubborn"
    )));
    assert!(matches!(
        events.last(),
        Some(PipelineEvent::Finished {
            success: false,
            cancelled: 3,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_token_cancelled_before_start_runs_nothing() {
    let dir = TempDir::new();
    let token = corral_core::pipeline::CancelToken::new();
    token.cancel();
    let result = Runner::new(DirectLauncher::new())
        .cancel_token(token)
        .run(pipeline(Mode::Dag, None, vec![sh("a", &dir.0, "touch ran")]))
        .await;
    assert_eq!(status(&result, "a"), StepStatus::Cancelled);
    assert!(!result.success);
    assert!(!dir.path("ran").exists());
}

/// A launcher that panics for one step and runs the others directly: the seam the daemon plugs into.
struct PanicsOn(&'static str, DirectLauncher);

impl StepLauncher for PanicsOn {
    fn launch<'a>(&'a self, step: &'a StepSpec, context: StepContext) -> LaunchFuture<'a> {
        if step.name == self.0 {
            Box::pin(async { panic!("launcher bug") })
        } else {
            self.1.launch(step, context)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_launcher_fails_its_step_only() {
    let dir = TempDir::new();
    let result = Runner::new(PanicsOn("boom", DirectLauncher::new()))
        .run(pipeline(
            Mode::Dag,
            None,
            vec![
                sh("boom", &dir.0, "true"),
                sh("fine", &dir.0, "true"),
                sh("next", &dir.0, "true").after(["boom"]),
            ],
        ))
        .await;
    assert_eq!(status(&result, "boom"), StepStatus::Failed);
    assert!(
        error(&result, "boom").contains("launcher bug"),
        "{}",
        error(&result, "boom")
    );
    assert_eq!(status(&result, "fine"), StepStatus::Passed);
    assert_eq!(status(&result, "next"), StepStatus::Skipped);
}

#[test]
fn parses_the_spec_example_with_durations() {
    let spec = PipelineSpec::from_toml_str(
        r#"
        name = "ci"
        mode = "dag"
        parallelism = 2

        [[step]]
        name = "fetch"
        command = ["git", "fetch"]
        env = { GIT_TERMINAL_PROMPT = "0" }
        dir = "repo"

        [[step]]
        name = "build"
        command = ["cargo", "build"]
        after = ["fetch"]
        allow_failure = false
        timeout = "10m"

        [[step]]
        name = "bench"
        command = ["cargo", "bench"]
        after = ["build"]
        allow_failure = true
        timeout = "1h30m"
        "#,
    )
    .expect("UNWRAP: the SPEC example parses");
    assert_eq!(spec.name.as_deref(), Some("ci"));
    assert_eq!(spec.mode, Mode::Dag);
    assert_eq!(spec.parallelism, Some(2));
    let build = spec.step("build").expect("UNWRAP: build step");
    assert_eq!(build.command, ["cargo", "build"]);
    assert_eq!(build.after, ["fetch"]);
    assert!(!build.allow_failure);
    assert_eq!(build.timeout, Some(Duration::from_secs(600)));
    let bench = spec.step("bench").expect("UNWRAP: bench step");
    assert_eq!(bench.timeout, Some(Duration::from_secs(5400)));
    assert!(bench.allow_failure);
    let fetch = spec.step("fetch").expect("UNWRAP: fetch step");
    assert_eq!(fetch.timeout, None);
    assert_eq!(fetch.env.get("GIT_TERMINAL_PROMPT").map(String::as_str), Some("0"));
    assert!(spec.validate().is_ok());

    // `steps` works too, and JSON gives the same spec back.
    let json = serde_json::to_string(&spec).expect("UNWRAP: serializable");
    assert!(json.contains(r#""timeout":"10m""#), "{json}");
    assert_eq!(PipelineSpec::from_json(&json).expect("UNWRAP: round trip"), spec);
}

#[test]
fn the_bare_spec_example_parses_and_names_its_missing_dependency() {
    let spec = PipelineSpec::from_toml_str(
        "[[step]]\nname = \"build\"\ncommand = [\"cargo\", \"build\"]\nafter = [\"fetch\"]\nallow_failure = false\ntimeout = \"10m\"\n",
    )
    .expect("UNWRAP: the SPEC example parses");
    assert_eq!(spec.mode, Mode::Dag);
    assert_eq!(spec.steps[0].timeout, Some(Duration::from_secs(600)));
    let err = spec.validate().expect_err("fetch is not declared");
    assert_eq!(
        err.to_string(),
        "invalid pipeline: step \"build\" runs after \"fetch\", which is not a step of this pipeline"
    );
}

#[test]
fn typos_and_bad_values_are_refused_with_line_and_key() {
    let typo = "[[step]]\nname = \"build\"\ncommand = [\"make\"]\naftr = [\"fetch\"]\n";
    match PipelineSpec::from_toml_str(typo) {
        Err(SpecError::Toml { line, message }) => {
            assert_eq!(line, Some(4), "{message}");
            assert!(message.contains("aftr"), "{message}");
            assert!(message.contains("line 4"), "{message}");
        }
        other => panic!("expected a TOML error, got {other:?}"),
    }

    let top_level = "parallelsim = 2\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\n";
    let err = PipelineSpec::from_toml_str(top_level).expect_err("typo at the top");
    assert!(err.to_string().contains("parallelsim"), "{err}");

    let bare_number = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\ntimeout = \"10\"\n";
    let err = PipelineSpec::from_toml_str(bare_number).expect_err("no unit");
    let message = err.to_string();
    assert!(message.contains("\"10s\"") && message.contains("line 4"), "{message}");

    let bad_mode = "mode = \"waves\"\n";
    let err = PipelineSpec::from_toml_str(bad_mode).expect_err("unknown mode");
    assert!(err.to_string().contains("waves"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_serialize_as_snake_case_json() {
    let dir = TempDir::new();
    let (result, events) = run(pipeline(Mode::Dag, None, vec![sh("a", &dir.0, "exit 2")])).await;
    let json = serde_json::to_value(&result).expect("UNWRAP: serializable");
    assert_eq!(json["success"], false);
    assert_eq!(json["steps"][0]["status"], "failed");
    assert_eq!(json["steps"][0]["exit_code"], 2);
    assert!(json["steps"][0]["duration"].is_string(), "{json}");
    assert!(json["steps"][0]["started_at"].is_i64(), "{json}");
    let back: PipelineResult = serde_json::from_value(json).expect("UNWRAP: deserializable");
    assert_eq!(back, result);

    let event = serde_json::to_value(&events[0]).expect("UNWRAP: serializable");
    assert_eq!(event, serde_json::json!({"event": "step_started", "name": "a"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_handle_knows_its_own_run() {
    let runner = Runner::new(DirectLauncher::new());
    let steps = || vec![StepSpec::new("a", ["true"])];
    let first = runner.start(pipeline(Mode::Dag, None, steps()));
    let second = runner.start(pipeline(Mode::Dag, None, steps()));
    assert!(first.is_same_run(&first.clone()));
    assert!(!first.is_same_run(&second));
    first.wait().await;
    second.wait().await;
}
