//! Helpers shared by the integration tests.

use std::time::{Duration, Instant};

use corral_proc::{parse_stat, ProcessIdentity};

/// Generous deadline for conditions on a loaded 2-core machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` every 20 ms until it holds or `DEADLINE` passes.
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Identities of the live (non-zombie) members of process group `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<ProcessIdentity> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("UNWRAP: /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(stat) = parse_stat(&text) {
            if stat.pgrp == pgid && !stat.is_dead() {
                if let Ok(identity) = ProcessIdentity::of(pid) {
                    members.push(identity);
                }
            }
        }
    }
    members
}

/// Waits until group `pgid` has at least `n` live members and returns them.
pub(crate) async fn wait_for_members(pgid: u32, n: usize) -> Vec<ProcessIdentity> {
    let mut members = Vec::new();
    wait_until(&format!("{n} members in group {pgid}"), || {
        members = group_members(pgid);
        members.len() >= n
    })
    .await;
    members
}

/// A fresh temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let path = std::env::temp_dir().join(format!("corral-proc-test-{}", uuid_like()));
        std::fs::create_dir_all(&path).expect("UNWRAP: temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
