//! [`Registry`]: the set of processes one owner manages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::command::Command;
use crate::error::SpawnError;
use crate::event::{Events, ProcessEvent, ProcessId};
use crate::process::{Finished, Process};

/// Events buffered per registry subscriber.
const REGISTRY_EVENT_CAPACITY: usize = 4096;

/// Errors from [`Registry`] operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No process has this id.
    #[error("no process with id {0}")]
    NotFound(ProcessId),
    /// The process is still running; stop it first.
    #[error("process {0} is still running; stop it first")]
    StillRunning(ProcessId),
    /// A process with this id is already registered.
    #[error("a process with id {0} already exists")]
    DuplicateId(ProcessId),
    /// Spawning failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// The processes one owner manages, with one event channel for all of them.
///
/// Finished processes stay listed (with their output) until removed, so their results can be read.
#[derive(Debug)]
pub struct Registry {
    processes: Mutex<Entries>,
    events: broadcast::Sender<ProcessEvent>,
}

#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<ProcessId, (u64, Process)>,
    next_seq: u64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::with_event_capacity(REGISTRY_EVENT_CAPACITY)
    }

    /// An empty registry whose subscribers each buffer at most `capacity` events (at least 1) before they
    /// start to miss some.
    pub fn with_event_capacity(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity.max(1));
        Registry {
            processes: Mutex::new(Entries::default()),
            events,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.processes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spawns `command` and registers it; its events also go to [`Registry::subscribe`]rs.
    pub fn spawn(&self, command: Command) -> Result<Process, RegistryError> {
        let id = command.id.clone().unwrap_or_else(ProcessId::next_local);
        let mut entries = self.entries();
        if entries.by_id.contains_key(&id) {
            return Err(RegistryError::DuplicateId(id));
        }
        let process = command.id(id.clone()).events_to(self.events.clone()).spawn()?;
        let seq = entries.next_seq;
        entries.next_seq += 1;
        entries.by_id.insert(id, (seq, process.clone()));
        Ok(process)
    }

    /// The process with this id.
    pub fn get(&self, id: &str) -> Option<Process> {
        self.entries().by_id.get(&ProcessId::from(id)).map(|(_, p)| p.clone())
    }

    /// Every registered process, in spawn order.
    pub fn list(&self) -> Vec<Process> {
        let entries = self.entries();
        let mut all: Vec<_> = entries.by_id.values().cloned().collect();
        drop(entries);
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, p)| p).collect()
    }

    /// The processes not finished yet, in spawn order.
    pub fn running(&self) -> Vec<Process> {
        self.list().into_iter().filter(Process::is_running).collect()
    }

    /// Number of registered processes.
    pub fn len(&self) -> usize {
        self.entries().by_id.len()
    }

    /// True when none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes a finished process; refused while it runs.
    pub fn remove(&self, id: &str) -> Result<Process, RegistryError> {
        let id = ProcessId::from(id);
        let mut entries = self.entries();
        match entries.by_id.get(&id) {
            None => Err(RegistryError::NotFound(id)),
            Some((_, process)) if process.is_running() => Err(RegistryError::StillRunning(id)),
            Some(_) => Ok(entries
                .by_id
                .remove(&id)
                .map(|(_, p)| p)
                .ok_or(RegistryError::NotFound(id))?),
        }
    }

    /// Removes every finished process; returns how many.
    pub fn clear_finished(&self) -> usize {
        let mut entries = self.entries();
        let before = entries.by_id.len();
        entries.by_id.retain(|_, (_, process)| process.is_running());
        before - entries.by_id.len()
    }

    /// Subscribes to the events of every process spawned through this registry.
    pub fn subscribe(&self) -> Events {
        Events::new(self.events.subscribe())
    }

    /// Stops every running process gracefully, all at once, and waits until all are gone.
    pub async fn shutdown_all(&self, grace: Duration) -> Vec<Finished> {
        let running = self.running();
        for process in &running {
            process.start_shutdown(grace);
        }
        let mut finished = Vec::with_capacity(running.len());
        for process in &running {
            finished.push(process.wait().await);
        }
        finished
    }
}
