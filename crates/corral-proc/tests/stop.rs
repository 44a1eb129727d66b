//! Stopping whole trees: grace, escalation, leftovers, timeouts, signals.

use std::time::{Duration, Instant};

use corral_proc::{
    group_has_live_members, Command, EventKind, Failure, Leftovers, Liveness, Outcome, Received, Signal, Stream,
};

use crate::util::{group_members, wait_for_members, wait_until};

fn assert_all_gone(members: &[corral_proc::ProcessIdentity]) {
    for member in members {
        let liveness = member.check().expect("UNWRAP: /proc readable");
        assert!(
            matches!(liveness, Liveness::Gone | Liveness::Exited),
            "pid {} still {:?}",
            member.pid,
            liveness
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_grandchild() {
    let process = Command::new(["sh", "-c", "sleep 300 & sleep 300 & wait"])
        .spawn()
        .expect("UNWRAP: spawn");
    let members = wait_for_members(process.pgid(), 3).await;
    let finished = process.shutdown(Duration::from_secs(10)).await;
    assert_eq!(finished.outcome, Outcome::Interrupted);
    assert!(!group_has_live_members(process.pgid()).expect("UNWRAP: /proc"));
    assert!(group_members(process.pgid()).is_empty());
    assert_all_gone(&members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_ignoring_term_is_killed_after_the_grace() {
    let process = Command::new(["sh", "-c", "trap '' TERM; echo ready; sleep 300"])
        .spawn()
        .expect("UNWRAP: spawn");
    let mut events = process.subscribe();
    let members = wait_for_members(process.pgid(), 2).await;
    let grace = Duration::from_millis(500);
    let asked = Instant::now();
    let finished = process.shutdown(grace).await;
    assert!(asked.elapsed() >= grace, "KILL came before the grace ended");
    assert_eq!(finished.outcome, Outcome::Interrupted);
    assert_eq!(finished.signal(), Some(Signal::KILL));
    assert_all_gone(&members);
    let mut signals = Vec::new();
    while let Some(Received::Event(event)) = events.recv().await {
        if let EventKind::Signaled { signal } = event.kind {
            signals.push(signal);
        }
    }
    assert_eq!(signals, vec![Signal::TERM, Signal::KILL]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_exiting_on_term_still_leaves_an_empty_group() {
    // The leader dies on TERM at once; its two children ignore TERM and must be killed after the grace.
    let script = "(trap '' TERM; sleep 300) & (trap '' TERM; sleep 300) & wait";
    let process = Command::new(["sh", "-c", script]).spawn().expect("UNWRAP: spawn");
    // The shell may or may not fork a subshell besides each sleep: take everyone there once settled.
    wait_for_members(process.pgid(), 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let members = group_members(process.pgid());
    let finished = process.shutdown(Duration::from_millis(300)).await;
    assert_eq!(finished.outcome, Outcome::Interrupted);
    assert_eq!(finished.signal(), Some(Signal::TERM), "the leader itself died of TERM");
    assert!(!group_has_live_members(process.pgid()).expect("UNWRAP: /proc"));
    assert_all_gone(&members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_the_whole_group_at_once() {
    let process = Command::new(["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"])
        .spawn()
        .expect("UNWRAP: spawn");
    let members = wait_for_members(process.pgid(), 3).await;
    let finished = process.kill().await;
    assert_eq!(finished.outcome, Outcome::Interrupted);
    assert_eq!(finished.signal(), Some(Signal::KILL));
    assert_all_gone(&members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_the_tree_and_fails() {
    let process = Command::new(["sh", "-c", "sleep 300 & sleep 300; wait"])
        .timeout(Duration::from_millis(300))
        .grace(Duration::from_secs(10))
        .spawn()
        .expect("UNWRAP: spawn");
    let members = wait_for_members(process.pgid(), 3).await;
    let finished = process.wait().await;
    assert_eq!(finished.outcome, Outcome::Failed(Failure::TimedOut));
    assert!(finished.duration >= Duration::from_millis(300));
    assert_all_gone(&members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_are_stopped_when_the_leader_exits_by_itself() {
    let process = Command::new(["sh", "-c", "sleep 300 & echo started"])
        .spawn()
        .expect("UNWRAP: spawn");
    let finished = process.wait().await;
    assert_eq!(
        finished.outcome,
        Outcome::Completed,
        "the leader's own exit decides the outcome"
    );
    assert!(!group_has_live_members(process.pgid()).expect("UNWRAP: /proc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_can_be_left_running() {
    let process = Command::new(["sh", "-c", "sleep 300 & echo $!"])
        .leftovers(Leftovers::Leave)
        .drain(Duration::from_millis(100))
        .spawn()
        .expect("UNWRAP: spawn");
    let finished = process.wait().await;
    assert_eq!(finished.outcome, Outcome::Completed);
    let members = group_members(process.pgid());
    assert_eq!(members.len(), 1, "the background sleep is left running");
    // Clean up: the test must not leak it.
    corral_proc::signal_group(process.pgid(), Signal::KILL).expect("UNWRAP: group exists");
    wait_until("leftover gone", || group_members(process.pgid()).is_empty()).await;
    let stdout = process.output(Stream::Stdout).expect("UNWRAP: captured");
    assert_eq!(stdout.to_string_lossy().trim(), members[0].pid.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_leader_or_the_group() {
    let script = "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done";
    let process = Command::new(["sh", "-c", script]).spawn().expect("UNWRAP: spawn");
    let stdout = || {
        process
            .output(Stream::Stdout)
            .expect("UNWRAP: captured")
            .to_string_lossy()
    };
    wait_until("ready", || stdout().contains("ready")).await;
    process.signal(Signal::USR1).await.expect("UNWRAP: running");
    wait_until("trap ran", || stdout().contains("got-usr1")).await;
    process.signal_group(Signal::TERM).await.expect("UNWRAP: running");
    let finished = process.wait().await;
    assert_eq!(finished.signal(), Some(Signal::TERM));
    assert_eq!(finished.outcome, Outcome::Failed(Failure::Signal(Signal::TERM)));
    assert!(matches!(
        process.signal(Signal::TERM).await,
        Err(corral_proc::ProcessError::NotRunning)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shutdown_with_zero_grace_kills_at_once() {
    let process = Command::new(["sh", "-c", "trap '' TERM; sleep 300"])
        .spawn()
        .expect("UNWRAP: spawn");
    wait_for_members(process.pgid(), 2).await;
    process.start_shutdown(Duration::from_secs(3600));
    let finished = tokio::time::timeout(Duration::from_secs(60), process.kill())
        .await
        .expect("UNWRAP: kill must not wait for the first grace");
    assert_eq!(finished.signal(), Some(Signal::KILL));
}
