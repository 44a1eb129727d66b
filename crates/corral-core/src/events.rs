//! The event bus: one broadcast channel that feeds SSE, notifiers and metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::broadcast;

/// Events buffered per subscriber before a slow one starts to miss some.
const BUS_CAPACITY: usize = 4096;

/// One lifecycle event, e.g. `process.started` with the process record as data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Dotted kind: `process.started`, `process.exited`, `process.killed`, `pipeline.started`, ...
    pub kind: String,
    /// When, in unix milliseconds.
    pub at: i64,
    /// The payload (data, not wire format: the HTTP layer decides how to encode it).
    pub data: Value,
}

/// A cloneable handle on the bus. Publishing never blocks: subscribers that lag miss events and are told.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A new bus.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        EventBus { sender }
    }

    /// Publishes an event now.
    pub fn publish(&self, kind: &str, data: Value) {
        let _ = self.sender.send(Event {
            kind: kind.to_owned(),
            at: now_ms(),
            data,
        });
    }

    /// Subscribes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as a `SystemTime` (negative values are the epoch).
pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

/// A `SystemTime` in unix milliseconds.
pub fn to_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
