//! Output capture: ring buffer bounds, binary output, huge lines, log files, stdin.

use std::time::Duration;

use corral_proc::{Command, EventKind, LineEnd, LogFile, OutputMode, Received, Registry, StdinMode, Stream};

use crate::util::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_ring_keeps_the_newest_bytes_and_reports_the_drop() {
    // `seq 1 100000` writes 588895 bytes.
    let process = Command::new(["seq", "1", "100000"])
        .ring_size(1000)
        .spawn()
        .expect("UNWRAP: spawn");
    process.wait().await;
    let out = process.output(Stream::Stdout).expect("UNWRAP: captured");
    assert_eq!(out.total, 588_895);
    assert_eq!(out.bytes.len(), 1000);
    assert_eq!(out.dropped, 588_895 - 1000);
    assert!(out.is_truncated());
    assert!(out.to_string_lossy().ends_with("99999\n100000\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_captured_apart_and_capture_can_be_off() {
    let process = Command::new(["sh", "-c", "echo out; echo err >&2"])
        .spawn()
        .expect("UNWRAP: spawn");
    process.wait().await;
    assert_eq!(
        process.output(Stream::Stdout).expect("UNWRAP: captured").bytes,
        b"out\n"
    );
    assert_eq!(
        process.output(Stream::Stderr).expect("UNWRAP: captured").bytes,
        b"err\n"
    );

    let process = Command::new(["sh", "-c", "echo out"])
        .stdout(OutputMode::Null)
        .spawn()
        .expect("UNWRAP: spawn");
    process.wait().await;
    assert!(process.output(Stream::Stdout).is_none());

    let process = Command::new(["sh", "-c", "echo out"])
        .ring_size(0)
        .spawn()
        .expect("UNWRAP: spawn");
    process.wait().await;
    let out = process.output(Stream::Stdout).expect("UNWRAP: counted");
    assert!(out.bytes.is_empty());
    assert_eq!(out.total, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_kept_byte_for_byte() {
    // Subscribe through a registry, before the spawn, so no output can come before the subscription.
    let registry = Registry::new();
    let mut events = registry.subscribe();
    let process = registry
        .spawn(Command::new(["printf", "\\377\\376ok\\200\\n"]))
        .expect("UNWRAP: spawn");
    process.wait().await;
    assert_eq!(
        process.output(Stream::Stdout).expect("UNWRAP: captured").bytes,
        b"\xff\xfeok\x80\n"
    );
    let mut lines = Vec::new();
    while let Some(Received::Event(event)) = events.recv().await {
        match event.kind {
            EventKind::Output { lines: batch, .. } => lines.extend(batch.iter().cloned()),
            EventKind::Exited(_) => break,
            _ => {}
        }
    }
    assert_eq!(lines.len(), 1);
    assert_eq!(&lines[0].text[..], b"\xff\xfeok\x80");
    assert_eq!(lines[0].to_string_lossy(), "\u{fffd}\u{fffd}ok\u{fffd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_mib_line_without_newline_comes_out_in_pieces_with_nothing_lost() {
    let line_max = 64 * 1024;
    let registry = Registry::new();
    let mut events = registry.subscribe();
    let process = registry
        .spawn(
            Command::new(["sh", "-c", "head -c 10485760 /dev/zero | tr '\\0' a; echo; echo next"]).line_max(line_max),
        )
        .expect("UNWRAP: spawn");
    let mut pieces = Vec::new();
    let mut missed = 0;
    while let Some(received) = events.recv().await {
        match received {
            Received::Missed(n) => missed += n,
            Received::Event(event) => match event.kind {
                EventKind::Output { lines, .. } => pieces.extend(lines.iter().cloned()),
                EventKind::Exited(_) => break,
                _ => {}
            },
        }
    }
    assert_eq!(missed, 0, "a reader that keeps up misses nothing");
    let (next, long) = pieces.split_last().expect("UNWRAP: output");
    assert_eq!(&next.text[..], b"next");
    assert!(long
        .iter()
        .all(|l| l.text.len() <= line_max && l.text.iter().all(|b| *b == b'a')));
    assert_eq!(long.iter().map(|l| l.text.len()).sum::<usize>(), 10 * 1024 * 1024);
    let (last, rest) = long.split_last().expect("UNWRAP: pieces");
    assert_eq!(last.end, LineEnd::Newline);
    assert!(rest.iter().all(|l| l.end == LineEnd::Split));
    let out = process.output(Stream::Stdout).expect("UNWRAP: captured");
    assert_eq!(out.total, 10 * 1024 * 1024 + 6);
    assert_eq!(out.bytes.len(), corral_proc::DEFAULT_RING_SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trip() {
    let process = Command::new(["cat"])
        .stdin(StdinMode::Piped)
        .spawn()
        .expect("UNWRAP: spawn");
    process.write_stdin(b"hello ").await.expect("UNWRAP: open");
    process.write_stdin(b"world\n").await.expect("UNWRAP: open");
    process.close_stdin().await.expect("UNWRAP: piped");
    let finished = tokio::time::timeout(Duration::from_secs(30), process.wait())
        .await
        .expect("UNWRAP: cat ends on EOF");
    assert!(finished.is_success());
    assert_eq!(
        process.output(Stream::Stdout).expect("UNWRAP: captured").bytes,
        b"hello world\n"
    );
    assert!(matches!(
        process.write_stdin(b"more").await,
        Err(corral_proc::ProcessError::StdinClosed)
    ));

    let no_pipe = Command::new(["true"]).spawn().expect("UNWRAP: spawn");
    assert!(matches!(
        no_pipe.write_stdin(b"x").await,
        Err(corral_proc::ProcessError::StdinNotPiped)
    ));
    no_pipe.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_to_a_child_that_closed_stdin_is_an_error_not_a_crash() {
    let process = Command::new(["sh", "-c", "exec 0<&-; sleep 300"])
        .stdin(StdinMode::Piped)
        .spawn()
        .expect("UNWRAP: spawn");
    let mut result = Ok(());
    for _ in 0..200 {
        result = process.write_stdin(&[b'x'; 65536]).await;
        if result.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        matches!(result, Err(corral_proc::ProcessError::StdinClosed)),
        "{result:?}"
    );
    process.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_gets_both_streams_and_file_mode_bypasses_capture() {
    let dir = TempDir::new();
    let log = dir.0.join("logs/app.log");
    let process = Command::new(["sh", "-c", "echo one; echo two >&2"])
        .log_file(LogFile::new(&log))
        .spawn()
        .expect("UNWRAP: spawn");
    process.wait().await;
    let text = std::fs::read_to_string(&log).expect("UNWRAP: log written");
    assert!(text.contains("one\n") && text.contains("two\n"), "{text:?}");

    let direct = dir.0.join("direct.log");
    let process = Command::new(["sh", "-c", "echo straight"])
        .stdout(OutputMode::File(direct.clone()))
        .spawn()
        .expect("UNWRAP: spawn");
    process.wait().await;
    assert!(process.output(Stream::Stdout).is_none());
    assert_eq!(std::fs::read_to_string(&direct).expect("UNWRAP: written"), "straight\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_output_interleaves_in_order() {
    let process = Command::new(["sh", "-c", "echo a; echo b >&2; echo c"])
        .merge_stderr()
        .spawn()
        .expect("UNWRAP: spawn");
    process.wait().await;
    assert_eq!(
        process.output(Stream::Stdout).expect("UNWRAP: captured").bytes,
        b"a\nb\nc\n"
    );
    assert!(process.output(Stream::Stderr).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_a_last_line_without_newline_is_delivered_at_eof() {
    let registry = Registry::new();
    let mut events = registry.subscribe();
    registry
        .spawn(Command::new(["printf", "a\\nb"]))
        .expect("UNWRAP: spawn");
    let mut lines = Vec::new();
    while let Some(Received::Event(event)) = events.recv().await {
        match event.kind {
            EventKind::Output { lines: batch, .. } => lines.extend(batch.iter().map(|l| (l.to_string_lossy(), l.end))),
            EventKind::Exited(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        lines,
        vec![("a".to_string(), LineEnd::Newline), ("b".to_string(), LineEnd::Eof)]
    );
}

#[test]
fn zz_a_full_stdin_pipe_does_not_block_the_runtime() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (pg_tx, pg_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("UNWRAP: rt");
        rt.block_on(async {
            let process = Command::new(["sleep", "300"])
                .stdin(StdinMode::Piped)
                .spawn()
                .expect("UNWRAP: spawn");
            let _ = pg_tx.send(process.pgid());
            // The child never reads: 1 MiB cannot fit in the pipe, so the write must stay pending, not block.
            let write =
                tokio::time::timeout(Duration::from_millis(300), process.write_stdin(&vec![b'x'; 1 << 20])).await;
            process.kill().await;
            let _ = tx.send(write.is_err());
        });
    });
    let pgid = pg_rx.recv().expect("UNWRAP: spawned");
    let pending = rx.recv_timeout(Duration::from_secs(20));
    if pending.is_err() {
        let _ = corral_proc::signal_group(pgid, corral_proc::Signal::KILL);
    }
    assert!(
        pending.expect("the runtime thread is blocked in a write to stdin"),
        "write finished although nobody reads"
    );
}
