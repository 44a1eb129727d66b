//! The registry of running daemons: one JSON file per daemon, so `corral daemons` can list them.
//!
//! Location: `$CORRAL_REGISTRY_DIR`, else `$XDG_RUNTIME_DIR/corral/daemons`, else
//! `~/.local/state/corral/daemons`. An entry records the daemon's pid *and* its start ticks, so a dead
//! daemon whose pid was reused is recognised and pruned on read.

use std::path::PathBuf;

use corral_proc::{Liveness, ProcessIdentity};
use serde::{Deserialize, Serialize};

/// One running daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DaemonEntry {
    pub(crate) pid: u32,
    #[serde(default)]
    pub(crate) start_ticks: u64,
    #[serde(default)]
    pub(crate) boot_id: String,
    pub(crate) socket: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) listen: Option<String>,
    pub(crate) version: String,
    pub(crate) started: String,
}

/// The registry directory.
pub(crate) fn registry_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRAL_REGISTRY_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("corral").join("daemons");
    }
    crate::config::default_state_dir().join("daemons")
}

/// Writes our entry; returns its path, to remove at shutdown.
pub(crate) fn register(entry: &DaemonEntry) -> std::io::Result<PathBuf> {
    let dir = registry_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.json", entry.pid));
    let tmp = dir.join(format!(".{}.json.tmp", entry.pid));
    std::fs::write(&tmp, serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The live daemons; entries of dead ones (or unreadable files) are deleted.
pub(crate) fn list() -> Vec<DaemonEntry> {
    let Ok(dir) = std::fs::read_dir(registry_dir()) else {
        return Vec::new();
    };
    let mut live = Vec::new();
    for file in dir.flatten() {
        let path = file.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let entry: Option<DaemonEntry> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let alive = entry.as_ref().is_some_and(|e| {
            let identity = ProcessIdentity {
                pid: e.pid,
                start_ticks: e.start_ticks,
                boot_id: e.boot_id.clone(),
            };
            identity.check().is_ok_and(|l| l == Liveness::Alive)
        });
        match entry {
            Some(entry) if alive => live.push(entry),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    live.sort_by_key(|e| e.pid);
    live
}
