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

async fn zz_signals(mut events: corral_proc::Events) -> Vec<Signal> {
    let mut signals = Vec::new();
    while let Some(received) = events.recv().await {
        if let Received::Event(event) = received {
            if let EventKind::Signaled { signal } = event.kind {
                signals.push(signal);
            }
        }
    }
    signals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_shutdown_sends_term_to_every_member() {
    // Every member dies on TERM, so the stop must end long before the grace.
    let process = Command::new(["sh", "-c", "sleep 300 & sleep 300 & wait"])
        .spawn()
        .expect("UNWRAP: spawn");
    wait_for_members(process.pgid(), 3).await;
    let finished = tokio::time::timeout(Duration::from_secs(20), process.shutdown(Duration::from_secs(120)))
        .await
        .expect("UNWRAP: TERM must reach the children, not only the leader");
    assert_eq!(finished.outcome, Outcome::Interrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_timeout_escalates_to_kill_for_a_child_ignoring_term() {
    let process = Command::new(["sh", "-c", "trap '' TERM; sleep 300"])
        .timeout(Duration::from_millis(200))
        .grace(Duration::from_millis(300))
        .spawn()
        .expect("UNWRAP: spawn");
    let events = process.subscribe();
    let finished = tokio::time::timeout(Duration::from_secs(20), process.wait())
        .await
        .expect("UNWRAP: KILL follows the grace after a timeout");
    assert_eq!(finished.outcome, Outcome::Failed(Failure::TimedOut));
    assert_eq!(finished.signal(), Some(Signal::KILL));
    assert_eq!(zz_signals(events).await, vec![Signal::TERM, Signal::KILL]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_a_second_shutdown_with_a_shorter_grace_brings_kill_forward() {
    let process = Command::new(["sh", "-c", "trap '' TERM; sleep 300"])
        .spawn()
        .expect("UNWRAP: spawn");
    wait_for_members(process.pgid(), 2).await;
    process.start_shutdown(Duration::from_secs(3600));
    let finished = tokio::time::timeout(Duration::from_secs(20), process.shutdown(Duration::from_millis(200)))
        .await
        .expect("UNWRAP: the shorter grace wins");
    assert_eq!(finished.signal(), Some(Signal::KILL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_signal_reaches_only_the_leader() {
    let script = "(trap 'echo child-usr1' USR1; while :; do sleep 0.05; done) & \
                  trap 'echo leader-usr1' USR1; echo ready; while :; do sleep 0.05; done";
    let process = Command::new(["sh", "-c", script]).spawn().expect("UNWRAP: spawn");
    let stdout = || {
        process
            .output(Stream::Stdout)
            .expect("UNWRAP: captured")
            .to_string_lossy()
    };
    wait_until("ready", || stdout().contains("ready")).await;
    wait_for_members(process.pgid(), 3).await;
    process.signal(Signal::USR1).await.expect("UNWRAP: running");
    wait_until("leader trap", || stdout().contains("leader-usr1")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaked = stdout().contains("child-usr1");
    process.signal_group(Signal::USR1).await.expect("UNWRAP: running");
    wait_until("child trap", || stdout().contains("child-usr1")).await;
    process.kill().await;
    assert!(!leaked, "signal() reached a group member other than the leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_shutdown_during_leftover_cleanup_is_interrupted() {
    // The leader exits only once the child ignores TERM, so the leftover stop is sure to outlast a poll.
    let dir = crate::util::TempDir::new();
    let armed = dir.0.join("armed");
    let script = format!(
        "(trap '' TERM; : > '{0}'; exec sleep 300) & while [ ! -e '{0}' ]; do sleep 0.01; done",
        armed.display()
    );
    let process = Command::new(["sh", "-c", &script])
        .grace(Duration::from_secs(3600))
        .spawn()
        .expect("UNWRAP: spawn");
    wait_until("leader gone, leftovers being stopped", || {
        process.status() == corral_proc::Status::Stopping
    })
    .await;
    let finished = tokio::time::timeout(Duration::from_secs(20), process.kill())
        .await
        .expect("UNWRAP: kill overrides the leftovers' long grace");
    assert_eq!(finished.outcome, Outcome::Interrupted);
    assert!(!group_has_live_members(process.pgid()).expect("UNWRAP: /proc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_a_stopped_tree_is_continued_so_term_can_act() {
    let script = "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    let process = Command::new(["sh", "-c", script]).spawn().expect("UNWRAP: spawn");
    let stdout = || {
        process
            .output(Stream::Stdout)
            .expect("UNWRAP: captured")
            .to_string_lossy()
    };
    wait_until("ready", || stdout().contains("ready")).await;
    process.signal_group(Signal::STOP).await.expect("UNWRAP: running");
    wait_until("stopped", || {
        corral_proc::read_stat(process.pid())
            .ok()
            .flatten()
            .is_some_and(|s| s.state == 'T')
    })
    .await;
    let finished = tokio::time::timeout(Duration::from_secs(20), process.shutdown(Duration::from_secs(120)))
        .await
        .expect("UNWRAP: CONT lets the pending TERM act before the grace");
    assert_eq!(finished.exit_code(), Some(0), "the leader ran its TERM trap");
    assert!(stdout().contains("bye"));
}

#[test]
fn zz_pumps_never_block_a_runtime_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (pg_tx, pg_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("UNWRAP: rt");
        rt.block_on(async {
            let process = Command::new(["sh", "-c", "echo out; echo err >&2; sleep 300"])
                .spawn()
                .expect("UNWRAP: spawn");
            let _ = pg_tx.send(process.pgid());
            wait_until("output read", || {
                process.output(Stream::Stdout).expect("UNWRAP: captured").total > 0
            })
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(process.kill().await.outcome);
        });
    });
    let pgid = pg_rx.recv().expect("UNWRAP: spawned");
    let outcome = rx.recv_timeout(Duration::from_secs(20));
    if outcome.is_err() {
        let _ = corral_proc::signal_group(pgid, Signal::KILL);
    }
    assert_eq!(
        outcome.expect("the runtime thread is blocked (a pump read a blocking pipe?)"),
        Outcome::Interrupted
    );
}
