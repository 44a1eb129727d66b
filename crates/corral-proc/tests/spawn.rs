//! Spawning: argv, dir, env, isolation, typed start failures, identity.

use std::os::unix::fs::PermissionsExt;

use corral_proc::{read_stat, Command, Isolation, Liveness, Outcome, ProcessIdentity, Program, SpawnError, Stream};

use crate::util::TempDir;

async fn stdout_of(command: Command) -> String {
    let process = command.spawn().expect("UNWRAP: spawn");
    process.wait().await;
    process
        .output(Stream::Stdout)
        .expect("UNWRAP: captured")
        .to_string_lossy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_reaches_the_child_one_value_per_slot() {
    let hostile = [
        "; touch x",
        "$(touch x)",
        "`touch x`",
        "a b",
        "'\"",
        "*",
        "-rf",
        "line\nbreak",
        "ünï",
    ];
    let mut argv = vec!["printf", "[%s]\\n"];
    argv.extend(hostile);
    let dir = TempDir::new();
    let out = stdout_of(Command::new(argv).dir(&dir.0)).await;
    let expected: String = hostile.iter().map(|h| format!("[{h}]\n")).collect();
    assert_eq!(out, expected);
    assert_eq!(
        std::fs::read_dir(&dir.0).expect("UNWRAP: dir").count(),
        0,
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_and_env_set_remove_clear() {
    let dir = TempDir::new();
    let canonical = dir.0.canonicalize().expect("UNWRAP: exists");
    assert_eq!(
        stdout_of(Command::new(["pwd", "-P"]).dir(&dir.0)).await.trim(),
        canonical.to_str().expect("UNWRAP: utf8")
    );

    std::env::set_var("CORRAL_TEST_INHERITED", "yes");
    let out = stdout_of(
        Command::new(["sh", "-c", "echo $CORRAL_TEST_SET-${CORRAL_TEST_INHERITED:-none}"]).env("CORRAL_TEST_SET", "v1"),
    )
    .await;
    assert_eq!(out.trim(), "v1-yes");
    let out = stdout_of(
        Command::new(["sh", "-c", "echo ${CORRAL_TEST_INHERITED:-removed}"]).env_remove("CORRAL_TEST_INHERITED"),
    )
    .await;
    assert_eq!(out.trim(), "removed");
    let out = stdout_of(Command::new(["/usr/bin/env"]).env_clear().env("ONLY", "this")).await;
    assert_eq!(out, "ONLY=this\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_are_typed_errors() {
    let missing = Command::new(["/nonexistent/corral-no-such-binary"]).spawn();
    assert!(matches!(missing, Err(SpawnError::NotFound { .. })), "{missing:?}");
    let missing_in_path = Command::new(["corral-no-such-binary-in-path"]).spawn();
    assert!(
        matches!(missing_in_path, Err(SpawnError::NotFound { .. })),
        "{missing_in_path:?}"
    );

    let dir = TempDir::new();
    let script = dir.0.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("UNWRAP: write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("UNWRAP: chmod");
    let denied = Command::new([&script]).spawn();
    assert!(matches!(denied, Err(SpawnError::PermissionDenied { .. })), "{denied:?}");

    let bad_dir = Command::new(["true"]).dir(dir.0.join("no-such-dir")).spawn();
    assert!(matches!(bad_dir, Err(SpawnError::BadDirectory { .. })), "{bad_dir:?}");
    let file_as_dir = Command::new(["true"]).dir(&script).spawn();
    assert!(
        matches!(file_as_dir, Err(SpawnError::BadDirectory { .. })),
        "{file_as_dir:?}"
    );

    assert!(matches!(
        Command::new(Vec::<String>::new()).spawn(),
        Err(SpawnError::EmptyCommand)
    ));
    assert!(matches!(
        Command::new(["echo", "a\0b"]).spawn(),
        Err(SpawnError::InvalidArgument { .. })
    ));
    assert!(matches!(
        Command::new(["true"]).env("A=B", "x").spawn(),
        Err(SpawnError::InvalidArgument { .. })
    ));
    assert!(matches!(
        Command::new(["true"]).env("A", "x\0").spawn(),
        Err(SpawnError::InvalidArgument { .. })
    ));
    let err = Command::new(["/nonexistent/x"]).spawn().expect_err("UNWRAP: missing");
    assert!(err.os_error().is_some());
    assert!(err.to_string().contains("/nonexistent/x"), "{err}");
}

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    assert!(matches!(Command::new(["true"]).spawn(), Err(SpawnError::NoRuntime)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_outcomes() {
    let ok = Command::new(["true"]).spawn().expect("UNWRAP: spawn").wait().await;
    assert_eq!(ok.outcome, Outcome::Completed);
    assert_eq!(ok.exit_code(), Some(0));
    let failed = Command::new(["sh", "-c", "exit 42"])
        .spawn()
        .expect("UNWRAP: spawn")
        .wait()
        .await;
    assert_eq!(failed.outcome, Outcome::Failed(corral_proc::Failure::ExitCode(42)));
    assert_eq!(failed.status().as_str(), "failed");
    assert!(failed.ended_at >= failed.started_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_group_and_session_isolation() {
    let process = Command::new(["sleep", "300"]).spawn().expect("UNWRAP: spawn");
    let stat = read_stat(process.pid()).expect("UNWRAP: /proc").expect("UNWRAP: alive");
    assert_eq!(stat.pgrp, process.pid());
    assert_ne!(stat.session, process.pid());
    process.kill().await;

    let process = Command::new(["sleep", "300"])
        .isolation(Isolation::Session)
        .spawn()
        .expect("UNWRAP: spawn");
    let stat = read_stat(process.pid()).expect("UNWRAP: /proc").expect("UNWRAP: alive");
    assert_eq!(stat.pgrp, process.pid());
    assert_eq!(stat.session, process.pid());
    process.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_tells_same_process_from_reused_pid() {
    let process = Command::new(["sleep", "300"]).spawn().expect("UNWRAP: spawn");
    let identity = process.identity().clone();
    assert_eq!(identity, ProcessIdentity::of(process.pid()).expect("UNWRAP: alive"));
    assert_eq!(identity.check().expect("UNWRAP: /proc"), Liveness::Alive);
    let pidfd = identity.open_pidfd().expect("UNWRAP: same process");
    assert!(!pidfd.has_exited());

    // Same pid, other start time: what a reused pid looks like. It must never be opened or signalled.
    let imposter = ProcessIdentity {
        start_ticks: identity.start_ticks.wrapping_sub(1),
        ..identity.clone()
    };
    assert_eq!(imposter.check().expect("UNWRAP: /proc"), Liveness::Reused);
    assert!(imposter.open_pidfd().is_err());

    process.kill().await;
    assert_eq!(identity.check().expect("UNWRAP: /proc"), Liveness::Gone);
    assert!(pidfd.has_exited());
    assert!(!pidfd
        .send_signal(corral_proc::Signal::TERM)
        .expect("UNWRAP: ESRCH is not an error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_finds_and_runs_with_combined_output() {
    let sh = Program::find("sh").expect("UNWRAP: sh in PATH");
    assert!(sh.path().is_absolute());
    let result = sh
        .run(["-c", "echo out; echo err >&2; exit 3"])
        .await
        .expect("UNWRAP: spawn");
    assert!(!result.is_success());
    assert_eq!(result.finished.exit_code(), Some(3));
    assert_eq!(result.output, "out\nerr");
    let dir = TempDir::new();
    let result = sh.run_in(&dir.0, ["-c", "pwd"]).await.expect("UNWRAP: spawn");
    assert!(result.is_success());
    assert!(result
        .output
        .ends_with(dir.0.file_name().and_then(|n| n.to_str()).expect("UNWRAP: name")));
    assert!(Program::find("corral-no-such-program").is_err());
}
