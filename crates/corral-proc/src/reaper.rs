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
            settle().await;
            reap_orphans();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Most `SIGCHLD`s are for a child that corral-proc tracks, and its actor, woken at the same moment, is
/// about to reap it. Give it that moment (a few yields) before [`reap_orphans`], which would otherwise find
/// that zombie and fall back to a full sweep of `/proc`.
async fn settle() {
    for _ in 0..SETTLE_YIELDS {
        match exited_child() {
            Some(pid) if is_tracked(pid) => tokio::task::yield_now().await,
            _ => return,
        }
    }
}

/// How many times [`settle`] yields at most.
const SETTLE_YIELDS: usize = 8;

/// True if this process is a child subreaper.
pub fn is_subreaper() -> bool {
    matches!(rustix::process::child_subreaper(), Ok(Some(_)))
}

/// Reaps every exited child of this process that corral-proc does not track. Returns how many.
///
/// Most calls find nothing to do (the `SIGCHLD` was for a child its own supervisor reaps), so a cheap probe
/// comes first: `waitid(P_ALL, WNOHANG | WNOWAIT)` names one exited child without reaping it. No exited
/// child at all: done, without reading `/proc`. An untracked one: reaped, and probe again. A tracked one
/// (its supervisor has not reaped it yet) may hide others behind it: then every child is checked, from
/// `/proc/self/task/*/children`.
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    loop {
        let pid = match exited_child() {
            None => return reaped,
            Some(pid) if is_tracked(pid) => return reaped + sweep(),
            Some(pid) => pid,
        };
        let no_spawns = spawn_lock().write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let reaped_one = match Pid::from_raw(pid as i32) {
            // Tracked since the probe (spawned and exited before `track` ran)? Then it is not ours to reap.
            Some(raw) if !is_tracked(pid) => matches!(
                waitid(WaitId::Pid(raw), WaitIdOptions::EXITED | WaitIdOptions::NOHANG),
                Ok(Some(_))
            ),
            _ => false,
        };
        drop(no_spawns);
        if !reaped_one {
            // Someone else's after all, or reaped meanwhile: check every child instead.
            return reaped + sweep();
        }
        reaped += 1;
    }
}

/// The pid of one exited child, left unreaped (`WNOWAIT`); `None` if no child has exited (or there are no
/// children).
fn exited_child() -> Option<u32> {
    loop {
        // SAFETY: all zeroes is a valid `siginfo_t`; `waitid` overwrites it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `P_ALL` ignores the id; `info` is a valid, writable `siginfo_t`. (rustix's `waitid` does not
        // report the pid it found, which is the point here.)
        let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        if rc == 0 {
            // SAFETY: after a successful `waitid`, `si_pid` is the child's pid, or 0 if none has exited.
            let pid = unsafe { info.si_pid() };
            return u32::try_from(pid).ok().filter(|&pid| pid > 0);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // ECHILD: no children at all.
            return None;
        }
    }
}

fn is_tracked(pid: u32) -> bool {
    tracked().lock().unwrap_or_else(|p| p.into_inner()).contains(&pid)
}

/// The full sweep: reaps every exited child that corral-proc does not track.
fn sweep() -> usize {
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
        if let Ok(list) = crate::identity::read_small(task.path().join("children")) {
            children.extend(list.split_ascii_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    children
}
