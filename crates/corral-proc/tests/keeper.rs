//! The keeper: children spawned through it survive the daemon's death with their output and exit status.
//!
//! A test binary of its own. Each test starts a real keeper process: this very binary, re-run with
//! `keeper_entry --exact --ignored`, which calls `keeper::run_from_env` (see `keeper_entry`). Every test
//! has its own temporary directory (socket, spool) and its own keeper, killed when the test ends.

use std::collections::HashSet;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_proc::keeper::{self, Client, ExitStatus, KeeperError, SpawnRequest, Spawned};
use corral_proc::{
    read_stat, signal_group, Command, OutputMode, ProcessIdentity, Signal, SpawnError, LOST_BEFORE_ADOPTION,
};
use tokio::io::AsyncReadExt;

/// Generous deadline for conditions on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// Not a test: the keeper process of the other tests. Without the keeper's environment it does nothing,
/// hence ignored; CI runs it all the same, as the keeper every other test here starts (this binary re-run
/// with `keeper_entry --exact --ignored`).
#[test]
#[ignore = "the keeper process the other tests start; it runs only with their environment"]
fn keeper_entry() {
    if std::env::var_os(keeper::SOCKET_ENV).is_none() {
        return;
    }
    keeper::run_from_env().expect("UNWRAP: the keeper runs until told to stop");
}

/// A keeper process in a temporary directory, killed (with whatever it still tracks) on drop.
struct TestKeeper {
    pid: u32,
    dir: PathBuf,
    socket: PathBuf,
    spool: PathBuf,
}

impl TestKeeper {
    fn start() -> TestKeeper {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "corral-keeper-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
        let socket = dir.join("keeper.sock");
        let spool = dir.join("spool");
        let pid = start_keeper(&socket, &spool).expect("UNWRAP: the keeper starts");
        TestKeeper {
            pid,
            dir,
            socket,
            spool,
        }
    }

    /// The keeper's children, from `/proc/<keeper>/task/*/children`.
    fn children(&self) -> HashSet<u32> {
        children_of(self.pid)
    }

    async fn connect(&self) -> (Client, keeper::State) {
        within("connect", Client::connect(&self.socket))
            .await
            .expect("UNWRAP: the keeper accepts")
    }

    /// Waits for the keeper process to exit and returns its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("UNWRAP: not 0");
        let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
            .expect("UNWRAP: the keeper is our child")
            .map(|(_, status)| status);
        self.pid = 0;
        status.and_then(|status| status.exit_status())
    }
}

fn start_keeper(socket: &Path, spool: &Path) -> std::io::Result<u32> {
    let me = std::env::current_exe().expect("UNWRAP: own path");
    keeper::start(
        socket,
        spool,
        &me,
        &["keeper_entry", "--exact", "--ignored", "--nocapture"],
    )
}

impl Drop for TestKeeper {
    fn drop(&mut self) {
        if self.pid != 0 {
            // Test cleanup only: kill what the keeper still tracks (its unreaped children pin their
            // group ids), then the keeper, then reap it.
            for child in children_of(self.pid) {
                let _ = signal_group(child, Signal::KILL);
            }
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn children_of(pid: u32) -> HashSet<u32> {
    let mut children = HashSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(list.split_ascii_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    children
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything readable from a pipe's read end until end of file.
async fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).expect("UNWRAP: a pipe");
    let mut bytes = Vec::new();
    within("end of file", receiver.read_to_end(&mut bytes))
        .await
        .expect("UNWRAP: readable");
    bytes
}

async fn spawn(client: &Client, id: &str, command: Command) -> Spawned {
    let (request, _stdin) = SpawnRequest::from_command(&command, id).expect("UNWRAP: valid command");
    within("spawn", client.spawn(request)).await.expect("UNWRAP: spawns")
}

fn is_zombie(pid: u32) -> bool {
    matches!(read_stat(pid), Ok(Some(stat)) if stat.is_dead())
}

fn code(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        signal: None,
    }
}

fn killed_by(signal: i32) -> ExitStatus {
    ExitStatus {
        code: None,
        signal: Some(signal),
    }
}

#[test]
fn the_client_can_be_shared_between_tasks() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Client>();
}

#[tokio::test]
async fn spawn_capture_exit_and_reap() {
    let keeper = TestKeeper::start();
    let (client, state) = keeper.connect().await;
    assert!(state.children.is_empty());

    let mut child = spawn(
        &client,
        "one",
        Command::new(["sh", "-c", "echo out; echo err >&2; exit 7"]),
    )
    .await;
    let pid = child.pid;
    assert_eq!(child.identity().expect("UNWRAP: boot id").pid, pid);
    let stdout = read_all(child.stdout.take().expect("UNWRAP: captured")).await;
    let stderr = read_all(child.stderr.take().expect("UNWRAP: captured")).await;
    assert_eq!(String::from_utf8_lossy(&stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&stderr), "err\n");

    let exited = within("exit", client.wait_exit("one")).await.expect("UNWRAP: exits");
    assert_eq!((exited.id.as_str(), exited.pid, exited.status), ("one", pid, code(7)));
    assert_eq!(exited.status.exit(), Some(corral_proc::Exit::Code(7)));
    // Not reaped yet: a zombie under the keeper, so its pid (= group id) stays pinned.
    assert!(is_zombie(pid));
    assert!(keeper.children().contains(&pid));
    assert_eq!(read_stat(pid).expect("UNWRAP: /proc").map(|s| s.ppid), Some(keeper.pid));

    assert!(within("reap", client.reap("one")).await.expect("UNWRAP: reaps"));
    wait_until("the child is gone", || read_stat(pid).ok().flatten().is_none()).await;
    assert!(!keeper.children().contains(&pid), "no zombie left under the keeper");
    assert!(!within("reap again", client.reap("one")).await.expect("UNWRAP: answers"));
    assert!(matches!(
        client.wait_exit("one").await,
        Err(KeeperError::UnknownChild(_))
    ));
}

#[tokio::test]
async fn children_survive_the_daemon_and_are_handed_over() {
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    // It writes only once the daemon is gone: without the keeper's copy of the read end it would die of
    // SIGPIPE instead of exiting 3.
    let chatty = spawn(
        &client,
        "chatty",
        Command::new([
            "sh",
            "-c",
            "sleep 0.5; for i in $(seq 1 2000); do echo line $i; done; sleep 1; exit 3",
        ])
        .stderr(OutputMode::Null),
    )
    .await;
    let sleeper = spawn(&client, "sleeper", Command::new(["sleep", "300"])).await;
    let (chatty_pid, sleeper_pid) = (chatty.pid, sleeper.pid);
    let sleeper_identity = sleeper.identity().expect("UNWRAP: boot id");
    assert!(chatty.stderr.is_none());

    // The daemon dies: its connection and its read ends go, nothing was read.
    drop(chatty);
    drop(sleeper);
    drop(client);

    wait_until("the chatty child exits with the daemon gone", || is_zombie(chatty_pid)).await;
    let (client, state) = keeper.connect().await;
    assert_eq!(state.children.len(), 2);
    let mut chatty = None;
    let mut sleeper = None;
    for child in state.children {
        match child.id.as_str() {
            "chatty" => chatty = Some(child),
            "sleeper" => sleeper = Some(child),
            other => panic!("unexpected child {other}"),
        }
    }
    let chatty = chatty.expect("UNWRAP: handed over");
    let sleeper = sleeper.expect("UNWRAP: handed over");

    assert_eq!(chatty.pid, chatty_pid);
    assert_eq!(
        chatty.exit,
        Some(code(3)),
        "its real exit status, recorded while no daemon was attached"
    );
    assert!(chatty.stderr.is_none());
    let stdout = chatty.stdout.expect("UNWRAP: captured");
    assert!(
        stdout.spooled > 0,
        "the keeper drained the pipe while the daemon was down"
    );
    assert_eq!(stdout.dropped, 0);
    assert_eq!(stdout.spool_path, keeper.spool.join("chatty.stdout"));
    let mut output = stdout.read_spool().expect("UNWRAP: spool readable");
    output.extend(read_all(stdout.reader).await);
    let expected: String = (1..=2000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&output), expected, "every line once, in order");

    assert_eq!(sleeper.pid, sleeper_pid);
    assert_eq!(sleeper.exit, None);
    assert_eq!(sleeper.identity().expect("UNWRAP: boot id"), sleeper_identity);
    assert_eq!(
        ProcessIdentity::of(sleeper_pid).expect("UNWRAP: alive").start_ticks,
        sleeper.start_ticks
    );
    assert!(sleeper.stdout.is_some() && sleeper.stderr.is_some());

    // Exits known from the hand-over are waitable like any other.
    let exited = within("known exit", client.wait_exit("chatty"))
        .await
        .expect("UNWRAP: known");
    assert_eq!(exited.status, code(3));
    assert!(within("reap", client.reap("chatty")).await.expect("UNWRAP: reaps"));
    assert!(
        !keeper.spool.join("chatty.stdout").exists(),
        "reaping removes the spool"
    );

    // The daemon stops the sleeper through its group, which the unreaped leader pins.
    assert!(signal_group(sleeper_pid, Signal::KILL).expect("UNWRAP: group exists"));
    let exited = within("kill", client.wait_exit("sleeper"))
        .await
        .expect("UNWRAP: exits");
    assert_eq!(exited.status, killed_by(libc::SIGKILL));
    assert!(within("reap", client.reap("sleeper")).await.expect("UNWRAP: reaps"));
    wait_until("no child left under the keeper", || keeper.children().is_empty()).await;
}

#[tokio::test]
async fn spool_keeps_the_first_mebibyte_and_counts_the_rest() {
    const TOTAL: u64 = 3_000_000;
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    let child = spawn(
        &client,
        "flood",
        Command::new([
            "sh",
            "-c",
            &format!("sleep 0.5; head -c {TOTAL} /dev/zero | tr '\\0' x; exit 0"),
        ]),
    )
    .await;
    let pid = child.pid;
    drop(child);
    drop(client);

    // Far more than a pipe holds: it finishes only because the keeper keeps reading.
    wait_until("the flood finishes with the daemon gone", || is_zombie(pid)).await;
    let (client, state) = keeper.connect().await;
    let child = state.children.into_iter().next().expect("UNWRAP: handed over");
    assert_eq!(child.exit, Some(code(0)));
    let stdout = child.stdout.expect("UNWRAP: captured");
    assert_eq!(stdout.spooled, keeper::SPOOL_LIMIT);
    let spooled = stdout.read_spool().expect("UNWRAP: spool readable");
    assert!(spooled.len() as u64 == keeper::SPOOL_LIMIT && spooled.iter().all(|&b| b == b'x'));
    let rest = read_all(stdout.reader).await;
    assert_eq!(stdout.spooled + stdout.dropped + rest.len() as u64, TOTAL);
    assert!(within("reap", client.reap("flood")).await.expect("UNWRAP: reaps"));
}

/// Runs `script` (a shell that starts children, prints their pids and exits 0) as the keeper's child `id`,
/// waits for its exit (not reaped) and returns the printed pids, read once the orphans, which share its
/// stdout, have exited too.
async fn orphans_of(client: &Client, id: &str, script: &str) -> Vec<u32> {
    let mut child = spawn(client, id, Command::new(["sh", "-c", script]).stderr(OutputMode::Null)).await;
    let exited = within("exit", client.wait_exit(id)).await.expect("UNWRAP: exits");
    assert_eq!(exited.status, code(0));
    let stdout = read_all(child.stdout.take().expect("UNWRAP: captured")).await;
    String::from_utf8_lossy(&stdout)
        .split_whitespace()
        .map(|pid| pid.parse().expect("UNWRAP: a pid"))
        .collect()
}

#[tokio::test]
async fn orphans_are_reaped_by_the_keeper() {
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    let orphans = orphans_of(&client, "parent", "sleep 0.3 & echo $!; exit 0").await;
    let [orphan] = orphans[..] else {
        panic!("one orphan pid expected: {orphans:?}")
    };
    if let Ok(Some(stat)) = read_stat(orphan) {
        if !stat.is_dead() {
            assert_eq!(stat.ppid, keeper.pid, "re-parented to the keeper, a subreaper");
        }
    }
    // The tracked parent is still unreaped: the orphan is reaped past it.
    wait_until("the orphan is reaped", || read_stat(orphan).ok().flatten().is_none()).await;
    assert!(within("reap", client.reap("parent")).await.expect("UNWRAP: reaps"));
    wait_until("no zombie under the keeper", || keeper.children().is_empty()).await;
}

#[tokio::test]
async fn orphans_exiting_in_a_burst_are_all_reaped() {
    // The keeper lists its children at most every 100 ms: exits 20 ms apart leave all but the first for a
    // listing the keeper owes itself, with no further SIGCHLD to prompt it.
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    let script = "sleep 0.3 & a=$!; sleep 0.32 & b=$!; sleep 0.34 & c=$!; echo $a $b $c; exit 0";
    let orphans = orphans_of(&client, "burst", script).await;
    assert_eq!(orphans.len(), 3);
    assert!(within("reap", client.reap("burst")).await.expect("UNWRAP: reaps"));
    for orphan in orphans {
        wait_until("every orphan is reaped", || read_stat(orphan).ok().flatten().is_none()).await;
    }
    wait_until("no zombie under the keeper", || keeper.children().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_fill_the_socket_queue_up_and_all_get_answers() {
    // A stopped keeper reads nothing: the socket fills, and the requests after that wait in the client's
    // write queue, behind any frame written in part, in order.
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    let client = std::sync::Arc::new(client);
    let stopped = rustix::process::Pid::from_raw(keeper.pid as i32).expect("UNWRAP: not 0");
    rustix::process::kill_process(stopped, rustix::process::Signal::STOP).expect("UNWRAP: SIGSTOP");
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..3_000 {
        let client = client.clone();
        // Long ids make big frames, so the socket buffer fills after a few hundred.
        calls.spawn(async move { client.reap(&format!("unknown-{n}-{}", "x".repeat(400))).await });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rustix::process::kill_process(stopped, rustix::process::Signal::CONT).expect("UNWRAP: SIGCONT");
    let mut answered = 0;
    while let Some(joined) = within("every answer", calls.join_next()).await {
        let reaped = joined.expect("UNWRAP: no panic").expect("UNWRAP: an answer");
        assert!(!reaped, "nothing to reap under an unknown id");
        answered += 1;
    }
    assert_eq!(answered, 3_000);
    // The connection is still in step: a request after the flood is answered too.
    assert!(!within("one more", client.reap("after"))
        .await
        .expect("UNWRAP: answered"));
}

#[tokio::test]
async fn a_failed_spawn_is_an_answer_and_the_keeper_keeps_serving() {
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    let (request, _) = SpawnRequest::from_command(&Command::new(["/nonexistent/corral-keeper-test"]), "missing")
        .expect("UNWRAP: valid command");
    let err = within("spawn", client.spawn(request)).await.expect_err("cannot start");
    assert!(matches!(err, KeeperError::SpawnFailed { .. }), "{err}");
    assert_eq!(err.errno(), Some(libc::ENOENT));
    assert!(matches!(
        err.into_spawn_error("/nonexistent/corral-keeper-test"),
        SpawnError::NotFound { .. }
    ));

    let err = within("spawn", client.spawn(SpawnRequest::new("../escape", ["true"])))
        .await
        .expect_err("bad id");
    assert_eq!(err.errno(), Some(libc::EINVAL));

    let mut request = SpawnRequest::new("ok", ["true"]);
    request.env = vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())];
    let spawned = within("spawn", client.spawn(request)).await.expect("UNWRAP: spawns");
    let exited = within("exit", client.wait_exit("ok")).await.expect("UNWRAP: exits");
    assert_eq!((exited.pid, exited.status), (spawned.pid, code(0)));
    assert!(within("reap", client.reap("ok")).await.expect("UNWRAP: reaps"));
}

#[tokio::test]
async fn a_new_daemon_connection_replaces_the_old_one() {
    let keeper = TestKeeper::start();
    let (first, _) = keeper.connect().await;
    let sleeper = spawn(&first, "s1", Command::new(["sleep", "300"]).stdout(OutputMode::Null)).await;
    let pgid = sleeper.pid;

    // Connections that do not complete Hello change nothing: a bare one, and one speaking another version
    // (refused with an Error frame, tag 0x86, then closed).
    let bare = std::os::unix::net::UnixStream::connect(&keeper.socket).expect("UNWRAP: connects");
    let mut stranger = std::os::unix::net::UnixStream::connect(&keeper.socket).expect("UNWRAP: connects");
    stranger.set_read_timeout(Some(DEADLINE)).expect("UNWRAP: settable");
    let hello_v99 = [4, 0, 0, 0, 0x01, 0, 99, 0, 0, 0];
    std::io::Write::write_all(&mut stranger, &hello_v99).expect("UNWRAP: writes");
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stranger, &mut answer).expect("UNWRAP: closed after the answer");
    assert_eq!(answer.get(4), Some(&0x86), "an Error frame: {answer:?}");
    assert!(String::from_utf8_lossy(&answer).contains("version"));
    drop(bare);
    assert!(first.is_connected());
    assert!(within("still served", first.reap("nobody")).await.is_ok());

    let (second, state) = keeper.connect().await;
    within("the first connection closes", first.closed()).await;
    assert!(!first.is_connected());
    assert!(matches!(
        first.spawn(SpawnRequest::new("s2", ["true"])).await,
        Err(KeeperError::Disconnected)
    ));
    assert!(matches!(first.wait_exit("s1").await, Err(KeeperError::Disconnected)));

    assert_eq!(state.children.len(), 1);
    assert_eq!(state.children[0].id, "s1");
    assert!(signal_group(pgid, Signal::KILL).expect("UNWRAP: group exists"));
    let exited = within("kill", second.wait_exit("s1")).await.expect("UNWRAP: exits");
    assert_eq!(exited.status, killed_by(libc::SIGKILL));
    assert!(within("reap", second.reap("s1")).await.expect("UNWRAP: reaps"));
}

#[tokio::test]
async fn one_keeper_per_socket_a_stale_socket_is_replaced_and_shutdown_exits() {
    let dir = std::env::temp_dir().join(format!("corral-keeper-stale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
    let socket = dir.join("keeper.sock");
    // A socket file nobody listens on, as a killed keeper leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("UNWRAP: bind"));
    let pid = start_keeper(&socket, &dir.join("spool")).expect("UNWRAP: replaces the stale socket");
    let mut keeper = TestKeeper {
        pid,
        dir: dir.clone(),
        socket: socket.clone(),
        spool: dir.join("spool"),
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).expect("UNWRAP: exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let err = start_keeper(&socket, &dir.join("spool")).expect_err("a keeper runs there");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

    let (client, _) = keeper.connect().await;
    within("shutdown", client.shutdown()).await.expect("UNWRAP: told");
    assert_eq!(keeper.wait_exit(), Some(0));
    assert!(!socket.exists(), "the keeper removes its socket");
}

#[tokio::test]
async fn memory_with_two_hundred_idle_children() {
    const CHILDREN: usize = 200;
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    let idle = smaps_rollup(keeper.pid);
    let mut children = Vec::new();
    let started = Instant::now();
    for i in 0..CHILDREN {
        children.push(spawn(&client, &format!("idle-{i}"), Command::new(["sleep", "300"])).await);
    }
    let spawning = started.elapsed();
    let loaded = smaps_rollup(keeper.pid);
    eprintln!("{CHILDREN} sequential spawns through the keeper took {spawning:?} (information, not a benchmark)");
    eprintln!(
        "keeper memory (kB): idle Rss {} Pss {} Private_Dirty {}; with {CHILDREN} idle children (stdout \
         and stderr captured) Rss {} Pss {} Private_Dirty {}",
        idle.0, idle.1, idle.2, loaded.0, loaded.1, loaded.2
    );

    // A daemon restart hands all of them over, their read ends in batches of at most 64 descriptors.
    drop(client);
    let (client, state) = keeper.connect().await;
    assert_eq!(state.children.len(), CHILDREN);
    let handed_over = state
        .children
        .iter()
        .filter(|c| c.stdout.is_some() && c.stderr.is_some());
    assert_eq!(handed_over.count(), CHILDREN);
    assert!(state.children.iter().all(|c| c.exit.is_none()));
    drop(state);

    for child in &children {
        assert!(signal_group(child.pid, Signal::KILL).expect("UNWRAP: group exists"));
    }
    for child in &children {
        let exited = within("kill", client.wait_exit(&child.id))
            .await
            .expect("UNWRAP: exits");
        assert_eq!(exited.status, killed_by(libc::SIGKILL));
        assert!(within("reap", client.reap(&child.id)).await.expect("UNWRAP: reaps"));
    }
    wait_until("no child left under the keeper", || keeper.children().is_empty()).await;
}

/// (Rss, Pss, Private_Dirty) in kB from `/proc/<pid>/smaps_rollup`.
fn smaps_rollup(pid: u32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("UNWRAP: readable");
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"), field("Private_Dirty:"))
}

/// `Command::spawn_kept` gives the same `Process` as `spawn`: capture, exit code, stop of the group.
#[tokio::test]
async fn spawn_kept_supervises_like_spawn() {
    let keeper = TestKeeper::start();
    let (client, _) = keeper.connect().await;
    let client = std::sync::Arc::new(client);

    let process = within(
        "spawn",
        Command::new(["sh", "-c", "echo out; echo err >&2; exit 7"]).spawn_kept(client.clone()),
    )
    .await
    .expect("UNWRAP: spawns");
    let finished = within("exit", process.wait()).await;
    assert_eq!(finished.exit_code(), Some(7));
    assert_eq!(
        finished.outcome,
        corral_proc::Outcome::Failed(corral_proc::Failure::ExitCode(7))
    );
    let out = process.output(corral_proc::Stream::Stdout).expect("UNWRAP: captured");
    let err = process.output(corral_proc::Stream::Stderr).expect("UNWRAP: captured");
    assert_eq!(out.to_string_lossy(), "out\n");
    assert_eq!(err.to_string_lossy(), "err\n");
    // Reaped by the keeper once recorded: nothing left under it.
    wait_until("the child is reaped", || !keeper.children().contains(&process.pid())).await;

    // A group stop reaches a grandchild that ignores TERM; the keeper is the parent meanwhile.
    let process = within(
        "spawn",
        Command::new(["sh", "-c", "trap '' TERM; sleep 300 & wait"])
            .grace(Duration::from_millis(200))
            .spawn_kept(client.clone()),
    )
    .await
    .expect("UNWRAP: spawns");
    let pid = process.pid();
    assert_eq!(read_stat(pid).expect("UNWRAP: /proc").map(|s| s.ppid), Some(keeper.pid));
    let finished = within("stop", process.shutdown(Duration::from_millis(200))).await;
    assert_eq!(finished.outcome, corral_proc::Outcome::Interrupted);
    assert!(!corral_proc::group_has_live_members(pid).expect("UNWRAP: /proc"));
    wait_until("the child is reaped", || !keeper.children().contains(&pid)).await;

    // A program that does not exist fails as `spawn` fails.
    let err = within(
        "spawn",
        Command::new(["/nonexistent/corral-test"]).spawn_kept(client.clone()),
    )
    .await
    .expect_err("UNWRAP: cannot start");
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
}

/// The daemon's runtime dies mid-run (its tasks, handles and connection dropped, as a `kill -9` would);
/// a new one adopts the child: output written meanwhile comes first, then the rest, and the real exit
/// code is reported. A child that ended while nobody was attached reports its code at once.
#[test]
fn adopted_children_keep_their_output_and_exit_status() {
    let keeper = TestKeeper::start();
    let gate = keeper.dir.join("gate");
    let script = format!(
        "echo before; while [ ! -e {0} ]; do sleep 0.02; done; echo while-down; \
         while [ -e {0} ]; do sleep 0.02; done; echo after; exit 5",
        gate.display()
    );
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("UNWRAP: a runtime")
    };
    let (pid, quick_pid) = {
        let first = runtime();
        first.block_on(async {
            let (client, _) = keeper.connect().await;
            let client = std::sync::Arc::new(client);
            let process = Command::new(["sh", "-c", &script])
                .id("adoptee")
                .spawn_kept(client.clone())
                .await
                .expect("UNWRAP: spawns");
            let quick = Command::new(["sh", "-c", "sleep 0.3; echo done; exit 9"])
                .id("quick")
                .spawn_kept(client.clone())
                .await
                .expect("UNWRAP: spawns");
            wait_until("before is captured", || {
                process
                    .output(corral_proc::Stream::Stdout)
                    .is_some_and(|o| o.to_string_lossy() == "before\n")
            })
            .await;
            (process.pid(), quick.pid())
        })
        // Dropping the runtime drops every task: the actor, the pumps and the last client handle.
    };
    drop_wait_for_spool(&keeper, &gate, quick_pid);

    let second = runtime();
    second.block_on(async {
        let (client, state) = keeper.connect().await;
        let client = std::sync::Arc::new(client);
        let mut adopted = Vec::new();
        for child in state.children {
            let id = child.id.clone();
            let process = Command::new(["sh"])
                .adopt(child, client.clone(), std::time::SystemTime::now())
                .expect("UNWRAP: adopts");
            adopted.push((id, process));
        }
        adopted.sort_by(|a, b| a.0.cmp(&b.0));
        let ids: Vec<&str> = adopted.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["adoptee", "quick"]);
        let (_, adoptee) = &adopted[0];
        let (_, quick) = &adopted[1];
        assert_eq!(adoptee.pid(), pid);

        let finished = within("the quick one's end", quick.wait()).await;
        assert_eq!(
            finished.exit_code(),
            Some(9),
            "the real code, though it ended while nobody was attached"
        );
        let out = quick.output(corral_proc::Stream::Stdout).expect("UNWRAP: captured");
        assert_eq!(out.to_string_lossy(), format!("{LOST_BEFORE_ADOPTION}done\n"));

        std::fs::remove_file(&gate).expect("UNWRAP: the gate exists");
        let finished = within("the adoptee's end", adoptee.wait()).await;
        assert_eq!(finished.exit_code(), Some(5));
        let out = adoptee.output(corral_proc::Stream::Stdout).expect("UNWRAP: captured");
        // "before" was in the dropped runtime's memory only (no mirror): the output says it is missing.
        assert_eq!(
            out.to_string_lossy(),
            format!("{LOST_BEFORE_ADOPTION}while-down\nafter\n")
        );
        wait_until("both are reaped", || keeper.children().is_empty()).await;
    });
}

/// With no daemon attached: opens the gate and waits until the output it causes is spooled and the
/// quick child has ended.
fn drop_wait_for_spool(keeper: &TestKeeper, gate: &Path, quick_pid: u32) {
    std::fs::write(gate, b"").expect("UNWRAP: temp dir");
    let start = Instant::now();
    loop {
        let spooled = std::fs::read_to_string(keeper.spool.join("adoptee.stdout")).unwrap_or_default();
        if spooled == "while-down\n" && is_zombie(quick_pid) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for the spool: {spooled:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
