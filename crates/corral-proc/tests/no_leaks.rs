//! 10,000 sequential spawns leave no zombie and no open file descriptor behind.
//!
//! A test binary of its own: it counts this process's fds and children, which other tests running in
//! parallel threads would disturb.

use corral_proc::{read_stat, Command, StdinMode};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("UNWRAP: /proc").count()
}

fn zombie_children() -> Vec<u32> {
    let mut zombies = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("UNWRAP: /proc").flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_ascii_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if let Ok(Some(stat)) = read_stat(pid) {
                if stat.is_dead() {
                    zombies.push(pid);
                }
            }
        }
    }
    zombies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_spawns_leave_no_zombie_and_no_fd() {
    // Warm up: the runtime opens its own fds (epoll, eventfd, signal pipes) on first use.
    for _ in 0..10 {
        Command::new(["true"]).spawn().expect("UNWRAP: spawn").wait().await;
    }
    let fds_before = open_fds();
    for i in 0..10_000 {
        let command = match i % 3 {
            0 => Command::new(["true"]),
            1 => Command::new(["sh", "-c", "echo out; echo err >&2"]),
            _ => Command::new(["cat"]).stdin(StdinMode::Piped),
        };
        let process = command.spawn().expect("UNWRAP: spawn");
        if i % 3 == 2 {
            process.write_stdin(b"x\n").await.expect("UNWRAP: piped");
            process.close_stdin().await.expect("UNWRAP: piped");
        }
        let finished = process.wait().await;
        assert!(finished.is_success(), "spawn {i}: {finished:?}");
    }
    assert_eq!(zombie_children(), Vec::<u32>::new(), "zombies left");
    assert_eq!(open_fds(), fds_before, "fds leaked");
}
