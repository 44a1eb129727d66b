//! Child subreaper support: adopt and reap orphaned descendants.
//!
//! When a process group leader exits, its children are re-parented, normally to init. A long-running
//! supervisor should instead become a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): orphans of its
//! descendants are re-parented to it, so they stay visible and are reaped promptly, also where the
//! machine's or container's init does not reap.
//!
//! [`enable_subreaper`] turns this on and starts a task that, on every `SIGCHLD`, reaps the children of
//! this process that corral-proc did not spawn itself (those are reaped by their own supervisor task).
//! Enable it only in a program whose children are all spawned through corral-proc: it would also reap
//! children spawned another way, and their owner's `wait` would then fail.

use std::collections::HashSet;
use std::io;
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};

use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};

fn tracked() -> &'static Mutex<HashSet<u32>> {
    static TRACKED: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    TRACKED.get_or_init(Default::default)
}

fn spawn_lock() -> &'static RwLock<()> {
    static LOCK: RwLock<()> = RwLock::new(());
    &LOCK
}

/// Held while spawning, so a sweep never sees a new child before it is tracked.
pub(crate) fn spawn_guard() -> RwLockReadGuard<'static, ()> {
    spawn_lock().read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn track(pid: u32) {
    tracked().lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
}

pub(crate) fn untrack(pid: u32) {
    tracked().lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
}

/// Makes this process a child subreaper and starts reaping orphans on `SIGCHLD`. Call once, inside a
/// tokio runtime, early in a supervisor's `main`.
pub fn enable_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_orphans();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// True if this process is a child subreaper.
pub fn is_subreaper() -> bool {
    matches!(rustix::process::child_subreaper(), Ok(Some(_)))
}

/// Reaps every exited child of this process that corral-proc does not track. Returns how many.
pub fn reap_orphans() -> usize {
    let _no_spawns = spawn_lock().write().unwrap_or_else(|poisoned| poisoned.into_inner());
    let tracked = tracked().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut reaped = 0;
    for pid in children_of_self() {
        if tracked.contains(&pid) {
            continue;
        }
        let Some(raw) = Pid::from_raw(pid as i32) else { continue };
        if let Ok(Some(_)) = waitid(WaitId::Pid(raw), WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
            reaped += 1;
        }
    }
    reaped
}

/// The pids of this process's children, from `/proc/self/task/*/children` (a child belongs to the thread
/// that forked it, or to any thread once re-parented).
fn children_of_self() -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(list.split_ascii_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    children
}
