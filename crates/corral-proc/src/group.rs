//! Process groups: signal a whole group, and tell whether any live member is left.
//!
//! Why a process group can be signalled by its id safely: the kernel keeps a pid number allocated while
//! any task uses it as its process group id, so while the group has a member the id names this group and
//! no other. corral signals a group only while its leader is running or after seeing a member alive, and
//! the kernel hands out pids cyclically, so an id freed at that moment is not handed out again until the
//! whole pid space has been used.

use std::fs;
use std::io;

use crate::identity::parse_stat;
use crate::signal::Signal;

/// Sends `signal` to every member of process group `pgid`. `Ok(false)` when the group has no member.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<bool> {
    let pid = rustix::process::Pid::from_raw(pgid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "process group 0"))?;
    if pgid <= 1 {
        // Never let a bug turn into "signal everything" or "signal init's group".
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal process group 0 or 1",
        ));
    }
    match rustix::process::kill_process_group(pid, signal.to_rustix()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// True while process group `pgid` has a member that has not exited. Exited members waiting to be reaped
/// (zombies) do not count: they run no code and hold no resources a stop cares about.
pub fn group_has_live_members(pgid: u32) -> io::Result<bool> {
    let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) else {
        return Ok(false);
    };
    // Fast path: no member at all, not even a zombie.
    match rustix::process::test_kill_process_group(pid) {
        Err(rustix::io::Errno::SRCH) => return Ok(false),
        Ok(()) | Err(rustix::io::Errno::PERM) => {}
        Err(err) => return Err(err.into()),
    }
    // Members exist; they may all be zombies whose parent (perhaps not us) has not reaped them yet.
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = crate::identity::read_small(format!("/proc/{pid}/stat")) else {
            continue; // exited meanwhile
        };
        if let Some(stat) = parse_stat(&text) {
            if stat.pgrp == pgid && !stat.is_dead() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_groups_zero_and_one() {
        assert!(signal_group(0, Signal::TERM).is_err());
        assert!(signal_group(1, Signal::TERM).is_err());
    }

    #[test]
    fn a_group_has_live_members_until_its_last_one_is_reaped() {
        // A group of our own making: the test runner's group leader may be outside our PID namespace (pgrp 0).
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("UNWRAP: spawn sleep");
        let pgid = child.id();
        assert!(group_has_live_members(pgid).expect("UNWRAP: /proc readable"));
        signal_group(pgid, Signal::KILL).expect("UNWRAP: signal own group");
        child.wait().expect("UNWRAP: reap");
        assert!(!group_has_live_members(pgid).expect("UNWRAP: /proc readable"));
    }
}
