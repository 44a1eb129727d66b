//! Lifecycle and output events, on broadcast channels that never block the producer.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::lines::Line;
use crate::process::Finished;
use crate::signal::Signal;

/// A process's id within corral: caller-chosen, or generated (unique within this program run).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId(Arc<str>);

impl ProcessId {
    /// A new random (v4 UUID) id.
    pub fn random() -> Self {
        ProcessId(uuid::Uuid::new_v4().to_string().into())
    }

    /// A new id unique within this process for its lifetime (`p<pid>-<n>`): cheaper than
    /// [`ProcessId::random`], used when the caller gives none.
    pub fn next_local() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ProcessId(format!("p{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)).into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ProcessId {
    fn from(text: &str) -> Self {
        ProcessId(text.into())
    }
}

impl From<String> for ProcessId {
    fn from(text: String) -> Self {
        ProcessId(text.into())
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `"stdout"` or `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Something that happened to one process.
#[derive(Debug, Clone)]
pub struct ProcessEvent {
    /// The process it happened to.
    pub id: ProcessId,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`ProcessEvent`].
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The process was spawned.
    Started {
        /// Its pid.
        pid: u32,
        /// Its process group id.
        pgid: u32,
        /// When.
        at: SystemTime,
    },
    /// One or more whole lines were read from a stream (a batch, so a chatty child costs one event per
    /// read, not one per line). Lines are never merged; over-long ones arrive in pieces.
    Output {
        /// Which stream.
        stream: Stream,
        /// The lines, in order.
        lines: Arc<[Line]>,
    },
    /// corral sent a signal to the process group as part of a stop (`TERM` first, `KILL` on escalation).
    Signaled {
        /// The signal sent.
        signal: Signal,
    },
    /// The process ended and its whole group is gone; the final state.
    Exited(Finished),
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Received {
    /// The next event.
    Event(ProcessEvent),
    /// The subscriber fell behind and this many events were dropped for it. Reading goes on after them.
    Missed(u64),
}

/// A subscription to events. Each subscriber has its own queue of bounded size: a slow subscriber misses
/// events ([`Received::Missed`]) but never slows the process or other subscribers.
#[derive(Debug)]
pub struct Events {
    receiver: broadcast::Receiver<ProcessEvent>,
}

impl Events {
    pub(crate) fn new(receiver: broadcast::Receiver<ProcessEvent>) -> Self {
        Events { receiver }
    }

    /// A subscription that has already ended.
    pub(crate) fn ended() -> Self {
        let (sender, receiver) = broadcast::channel(1);
        drop(sender);
        Events { receiver }
    }

    /// The next event, or `None` once no more can come.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.receiver.recv().await {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// A process's own event channel, created on the first subscription (most processes never have a
/// subscriber, and a channel's buffer is allocated whole), and closed after the final event.
#[derive(Debug, Default)]
pub(crate) struct EventSlot {
    state: std::sync::Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    sender: Option<broadcast::Sender<ProcessEvent>>,
    closed: bool,
}

impl EventSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new subscription; an ended one once the slot is closed.
    pub(crate) fn subscribe(&self, capacity: usize) -> Events {
        let mut state = self.lock();
        if state.closed {
            return Events::ended();
        }
        let sender = state.sender.get_or_insert_with(|| broadcast::channel(capacity).0);
        Events::new(sender.subscribe())
    }

    /// Closes the channel: subscribers read what is queued, then see the end.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.sender = None;
    }

    fn has_listeners(&self) -> bool {
        self.lock().sender.as_ref().is_some_and(|s| s.receiver_count() > 0)
    }

    fn send(&self, event: ProcessEvent) {
        if let Some(sender) = &self.lock().sender {
            let _ = sender.send(event);
        }
    }
}

/// Where a process sends its events: its own channel, and optionally a shared one (e.g. a registry's).
#[derive(Debug, Clone)]
pub(crate) struct EventSender {
    pub(crate) id: ProcessId,
    pub(crate) own: std::sync::Arc<EventSlot>,
    pub(crate) shared: Option<broadcast::Sender<ProcessEvent>>,
}

impl EventSender {
    /// True when anyone listens (so work spent building an event is not wasted).
    pub(crate) fn has_listeners(&self) -> bool {
        self.own.has_listeners() || self.shared.as_ref().is_some_and(|s| s.receiver_count() > 0)
    }

    pub(crate) fn send(&self, kind: EventKind) {
        let event = ProcessEvent {
            id: self.id.clone(),
            kind,
        };
        if let Some(shared) = &self.shared {
            // An error only means nobody listens now.
            let _ = shared.send(event.clone());
        }
        self.own.send(event);
    }
}
