//! Events: order, and slow subscribers that lag without blocking anyone.

use std::time::Duration;

use corral_proc::{Command, EventKind, Received, Registry, Stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_output_exited_in_order() {
    let registry = Registry::new();
    let mut events = registry.subscribe();
    let process = registry
        .spawn(Command::new(["sh", "-c", "echo one; echo two"]))
        .expect("UNWRAP: spawn");
    let mut kinds = Vec::new();
    let mut lines = Vec::new();
    while let Some(Received::Event(event)) = events.recv().await {
        assert_eq!(&event.id, process.id());
        match event.kind {
            EventKind::Started { pid, .. } => {
                assert_eq!(pid, process.pid());
                kinds.push("started");
            }
            EventKind::Output { stream, lines: batch } => {
                assert_eq!(stream, Stream::Stdout);
                lines.extend(batch.iter().map(|l| l.to_string_lossy()));
            }
            EventKind::Signaled { .. } => kinds.push("signaled"),
            EventKind::Exited(finished) => {
                assert!(finished.is_success());
                kinds.push("exited");
                break;
            }
        }
    }
    assert_eq!(kinds, ["started", "exited"]);
    assert_eq!(lines, ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_misses_events_but_blocks_nobody() {
    // Room for two events per subscriber; the process makes at least three (started, output, exited).
    let registry = Registry::with_event_capacity(2);
    let mut slow = registry.subscribe();
    let process = registry
        .spawn(Command::new([
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done",
        ]))
        .expect("UNWRAP: spawn");
    // The slow subscriber reads nothing until the process is done: the process must finish anyway.
    let finished = tokio::time::timeout(Duration::from_secs(120), process.wait())
        .await
        .expect("UNWRAP: not blocked");
    assert!(finished.is_success());
    let out = process.output(Stream::Stdout).expect("UNWRAP: captured");
    assert!(
        out.to_string_lossy().ends_with("line1999\n"),
        "capture is complete whatever subscribers do"
    );
    // `wait` returns once the final state is published; the `Exited` event follows it. The process's own
    // channel closes only after that event went out everywhere: wait for that, so the lag is all there.
    let mut own = process.subscribe();
    while own.recv().await.is_some() {}
    let mut missed = 0;
    let mut exited = false;
    while let Some(received) = slow.recv().await {
        match received {
            Received::Missed(n) => missed += n,
            Received::Event(event) => {
                if let EventKind::Exited(_) = event.kind {
                    exited = true;
                    break;
                }
            }
        }
    }
    assert!(missed >= 1, "the slow subscriber is told it missed events");
    assert!(exited, "and reading goes on after the gap, up to the newest events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_hook_runs_once_with_the_final_state_before_the_exited_event() {
    use std::sync::{Arc, Mutex};
    /// What the hook saw: its argument, the process's state then, its stdout then.
    type Seen = (corral_proc::Finished, Option<corral_proc::Finished>, Vec<u8>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let hook_seen = seen.clone();
    let process = Command::new(["sh", "-c", "echo out; exit 3"])
        .on_exit(move |process, finished| {
            let output = process.output(Stream::Stdout).map(|o| o.bytes).unwrap_or_default();
            hook_seen
                .lock()
                .expect("UNWRAP: test lock")
                .push((finished.clone(), process.finished(), output));
        })
        .spawn()
        .expect("UNWRAP: spawn");
    let mut events = process.subscribe();
    let finished = process.wait().await;
    // The Exited event goes out after the hook, and the subscription ends after it (at once when the
    // process ended before we subscribed): either way the hook has run.
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Received::Event(event))) if matches!(event.kind, EventKind::Exited(_)) => break,
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => panic!("the subscription neither delivered Exited nor ended"),
        }
    }
    let seen = seen.lock().expect("UNWRAP: test lock");
    assert_eq!(seen.len(), 1, "the hook runs exactly once");
    let (hook_finished, state_then, output) = &seen[0];
    assert_eq!(hook_finished, &finished);
    assert_eq!(
        state_then.as_ref(),
        Some(&finished),
        "the final state is published before the hook"
    );
    assert_eq!(finished.exit_code(), Some(3));
    assert_eq!(output, b"out\n", "the output is fully read before the hook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_exit_hook_does_not_stop_the_end_from_being_published() {
    let process = Command::new(["true"])
        .on_exit(|_, _| panic!("hook failure"))
        .spawn()
        .expect("UNWRAP: spawn");
    let mut events = process.subscribe();
    let finished = tokio::time::timeout(Duration::from_secs(30), process.wait())
        .await
        .expect("UNWRAP: wait returns");
    assert_eq!(finished.exit_code(), Some(0));
    // The subscription still ends (after Exited, or at once if the process ended before we subscribed):
    // the actor got past the hook.
    tokio::time::timeout(Duration::from_secs(30), async {
        while events.recv().await.is_some() {}
    })
    .await
    .expect("UNWRAP: the subscription ends");
    assert!(
        matches!(
            process.signal(corral_proc::Signal::TERM).await,
            Err(corral_proc::ProcessError::NotRunning)
        ),
        "requests to an ended actor fail as not running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_gives_every_byte_once_snapshot_then_events() {
    // Many small writes, so that `follow` lands while output is flowing.
    let process = Command::new([
        "sh",
        "-c",
        "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done",
    ])
    .spawn()
    .expect("UNWRAP: spawn");
    let expected: String = (0..3000).map(|i| format!("line-{i}\n")).collect();
    // Until output flows (a few lines of the 3,000 are out).
    let flowing = async {
        while process.output(Stream::Stdout).is_none_or(|out| out.total < 100) {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), flowing)
        .await
        .expect("UNWRAP: output flows");
    let mut follow = process.follow();
    let mut text = follow
        .take_output(Stream::Stdout)
        .expect("UNWRAP: stdout is captured")
        .to_string_lossy();
    let mut events = follow.events;
    let collect = async {
        while let Some(received) = events.recv().await {
            match received {
                Received::Event(event) => {
                    if let EventKind::Output {
                        stream: Stream::Stdout,
                        lines,
                    } = event.kind
                    {
                        for line in lines.iter() {
                            text.push_str(&line.to_string_lossy());
                            if line.end == corral_proc::LineEnd::Newline {
                                text.push('\n');
                            }
                        }
                    }
                }
                Received::Missed(n) => panic!("missed {n} events"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("UNWRAP: the subscription ends after the exit");
    assert_eq!(text.len(), expected.len(), "no byte twice, none lost");
    assert_eq!(text, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_follower_joining_mid_line_is_told_which_bytes_come_again() {
    let dir = std::env::temp_dir().join(format!("corral-follow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
    let (go1, go2) = (dir.join("go1"), dir.join("go2"));
    let script = format!(
        "while [ ! -e {0} ]; do sleep 0.01; done; printf 'first part '; \
         while [ ! -e {1} ]; do sleep 0.01; done; echo rest",
        go1.display(),
        go2.display()
    );
    let process = Command::new(["sh", "-c", script.as_str()])
        .spawn()
        .expect("UNWRAP: spawn");
    // A listens before the line begins, so the process holds the start of the line for its event.
    let first = process.follow();
    assert_eq!(first.partial_line(Stream::Stdout), 0, "nothing written yet");
    std::fs::write(&go1, b"").expect("UNWRAP: go1");
    let written = async {
        while process.output(Stream::Stdout).is_none_or(|out| out.total < 11) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), written)
        .await
        .expect("UNWRAP: the first part is written");
    // B joins mid-line: its snapshot has "first part ", and the first event will carry it again.
    let mut second = process.follow();
    assert_eq!(second.partial_line(Stream::Stdout), 11);
    let snapshot = second.take_output(Stream::Stdout).expect("UNWRAP: captured");
    assert_eq!(snapshot.bytes, b"first part ");
    std::fs::write(&go2, b"").expect("UNWRAP: go2");
    let lines = |mut events: corral_proc::Events| async move {
        let mut lines = Vec::new();
        while let Some(received) = events.recv().await {
            if let Received::Event(event) = received {
                if let EventKind::Output { lines: batch, .. } = event.kind {
                    lines.extend(batch.iter().map(|l| l.to_string_lossy()));
                }
            }
        }
        lines
    };
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(lines(first.events), lines(second.events))
    })
    .await
    .expect("UNWRAP: both subscriptions end after the exit");
    assert_eq!(a, ["first part rest"]);
    assert_eq!(b, ["first part rest"], "the held bytes come whole in the first event");
    // With nobody listening now, a new follower's snapshot holds no partial line.
    assert_eq!(process.follow().partial_line(Stream::Stdout), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
