//! The event bus: one broadcast channel that feeds SSE, notifiers and metrics.

use std::sync::{Arc, RwLock};
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

/// A function that sees every event as it is published, on the publisher's thread: see [`EventBus::observe`].
pub type Observer = Arc<dyn Fn(&str, &Value) + Send + Sync>;

/// A cloneable handle on the bus. Publishing never blocks: subscribers that lag miss events and are told.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    observers: Arc<RwLock<Vec<Observer>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.sender.receiver_count())
            .field("observers", &self.observers.read().map_or(0, |o| o.len()))
            .finish()
    }
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
        EventBus {
            sender,
            observers: Arc::default(),
        }
    }

    /// Publishes an event now: every observer sees it at once, then every subscriber gets a copy.
    pub fn publish(&self, kind: &str, data: Value) {
        for observer in self.observers.read().unwrap_or_else(|p| p.into_inner()).iter() {
            observer(kind, &data);
        }
        // Nobody subscribed (no `/events` stream, no waiter): nothing to queue.
        if self.sender.receiver_count() == 0 {
            return;
        }
        let _ = self.sender.send(Event {
            kind: kind.to_owned(),
            at: now_ms(),
            data,
        });
    }

    /// Calls `observer` with every event published from now on, inline in [`publish`](Self::publish), before
    /// subscribers get it. For cheap bookkeeping (counters): no task, no copy of the event and no wake-up per
    /// event, which a subscriber costs. It must not block and must not publish.
    pub fn observe(&self, observer: impl Fn(&str, &Value) + Send + Sync + 'static) {
        self.observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(observer));
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    #[test]
    fn observers_see_every_event_inline_and_subscribers_still_get_them() {
        let bus = EventBus::new();
        bus.publish("before.observer", json!({}));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        bus.observe(move |kind, data| {
            log.lock()
                .expect("UNWRAP: test lock")
                .push((kind.to_owned(), data.clone()))
        });
        // No subscriber at all: the observer still sees it, at once.
        bus.publish("process.started", json!({"id": "a"}));
        assert_eq!(
            *seen.lock().expect("UNWRAP: test lock"),
            vec![("process.started".to_owned(), json!({"id": "a"}))]
        );
        let mut receiver = bus.subscribe();
        bus.publish("process.exited", json!({"id": "a", "state": "completed"}));
        let event = receiver.try_recv().expect("UNWRAP: the subscriber got it");
        assert_eq!(event.kind, "process.exited");
        assert_eq!(event.data, json!({"id": "a", "state": "completed"}));
        assert_eq!(seen.lock().expect("UNWRAP: test lock").len(), 2);
    }

    #[test]
    fn a_clone_of_the_bus_shares_its_observers() {
        let bus = EventBus::new();
        let count = Arc::new(Mutex::new(0));
        let counter = count.clone();
        bus.observe(move |_, _| *counter.lock().expect("UNWRAP: test lock") += 1);
        let clone = bus.clone();
        clone.publish("task.completed", json!({}));
        bus.publish("task.completed", json!({}));
        assert_eq!(*count.lock().expect("UNWRAP: test lock"), 2);
    }
}
