//! [`ToolRegistry`]: the current [`ToolIndex`] of a directory, swapped whole on each reload, and the
//! watcher that reloads it when the directory changes.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::file::Format;
use super::index::{fingerprint, ToolIndex};

/// File-system events queued for the watcher thread before it stops queueing and rescans instead.
const EVENT_QUEUE: usize = 1024;

/// The tools of one directory, kept current.
///
/// Readers take [`ToolRegistry::current`], an `Arc` of a complete, immutable [`ToolIndex`]: a reload
/// builds the next index aside and swaps the pointer, so a reader sees the old index or the new one, never
/// a mix, and keeps the one it took for as long as it needs it (a job keeps its command even if the file
/// is deleted meanwhile).
pub struct ToolRegistry {
    dir: PathBuf,
    current: RwLock<Arc<ToolIndex>>,
    /// Serialises reloads, so generations and swaps happen in the same order.
    reload_lock: Mutex<()>,
    generation: watch::Sender<u64>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("ToolRegistry")
            .field("dir", &self.dir)
            .field("generation", &current.generation())
            .field("tools", &current.len())
            .field("errors", &current.errors().len())
            .finish()
    }
}

impl ToolRegistry {
    /// Loads `dir` (see [`ToolIndex::load`]: a missing directory is an empty registry, not an error) and
    /// logs the result. The first index has generation 0. Blocking I/O.
    pub fn load(dir: impl Into<PathBuf>) -> ToolRegistry {
        let dir = dir.into();
        let index = ToolIndex::load_generation(&dir, 0);
        log_index(&dir, &index);
        let (generation, _) = watch::channel(0);
        ToolRegistry {
            dir,
            current: RwLock::new(Arc::new(index)),
            reload_lock: Mutex::new(()),
            generation,
        }
    }

    /// The watched directory, as given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current index. Cheap: one `Arc` clone under a read lock held for no longer than that.
    pub fn current(&self) -> Arc<ToolIndex> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The current index's generation: 0 after [`ToolRegistry::load`], one more per reload.
    pub fn generation(&self) -> u64 {
        self.current().generation()
    }

    /// A receiver of the generation, updated after each swap: `rx.wait_for(|g| *g > seen)` waits for the
    /// next reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Waits until the current index's generation is at least `generation`, and returns that index.
    pub async fn wait_for_generation(&self, generation: u64) -> Arc<ToolIndex> {
        let mut rx = self.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|g| *g >= generation).await;
        self.current()
    }

    /// Reads the directory again, swaps the new index in whole, logs the result and returns it. Never
    /// fails: problems are in [`ToolIndex::errors`]. Blocking I/O: from async code, call it through
    /// `spawn_blocking`.
    pub fn reload(&self) -> Arc<ToolIndex> {
        let _guard = self.reload_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let next = self.current().generation() + 1;
        let index = Arc::new(ToolIndex::load_generation(&self.dir, next));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&index);
        self.generation.send_replace(next);
        log_index(&self.dir, &index);
        index
    }

    /// Watches the directory with the default [`WatchOptions`]; see [`ToolRegistry::watch_with`].
    pub fn watch(self: &Arc<Self>) -> Result<WatchHandle, WatchError> {
        self.watch_with(WatchOptions::default())
    }

    /// Watches the directory (inotify on Linux, non-recursive) and reloads after changes, until the
    /// returned handle is dropped (or the registry is).
    ///
    /// Reacts to tool files being created, written, deleted, renamed in or out, and saved by rename (an
    /// editor or `tailkit.Install` writes a temporary file, then renames it over the real one); changes to
    /// hidden files and editor leftovers are ignored. Also watches the nearest existing parent, so the
    /// directory may be created later, deleted (the index becomes empty), or replaced, and the watch is
    /// re-armed on the new one. Events are debounced: the reload runs [`WatchOptions::debounce`] after the
    /// last event (at most [`WatchOptions::max_delay`] after the first). A slow poll
    /// ([`WatchOptions::poll_interval`]) compares a `stat` fingerprint of the directory with the current
    /// index's and reloads if they differ: a safety net for lost events, and the only mechanism when
    /// inotify is unavailable (out of instances or watches; logged as a warning).
    ///
    /// Reloads once before returning (blocking I/O), so nothing written between [`ToolRegistry::load`]
    /// and this call is missed. Each reload is logged (tools, commands, skipped files with their reasons).
    /// The watcher runs on its own thread and needs no tokio runtime. With [`WatchOptions::events`] off,
    /// only the poll runs.
    pub fn watch_with(self: &Arc<Self>, options: WatchOptions) -> Result<WatchHandle, WatchError> {
        let target = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let (tx, rx) = mpsc::sync_channel::<Msg>(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
        });
        let handler_tx = tx.clone();
        let handler_shared = Arc::clone(&shared);
        let handler = move |event: notify::Result<notify::Event>| {
            if let Err(TrySendError::Full(_)) = handler_tx.try_send(Msg::Fs(event)) {
                // The queue is full: the thread will rescan instead of reading every event.
                handler_shared.overflow.store(true, Ordering::SeqCst);
            }
        };
        let watcher = if options.events {
            match notify::recommended_watcher(handler) {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::warn!(
                        dir = %target.display(),
                        error = %err,
                        "cannot watch the tools directory for changes; polling it instead"
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut poll_interval = options.poll_interval;
        if watcher.is_none() {
            poll_interval = Some(poll_interval.unwrap_or(DEFAULT_POLL));
        }
        let mut state = WatchState {
            registry: Arc::downgrade(self),
            target,
            watcher,
            target_seen: None,
            target_armed: false,
            anchor: None,
            warned: false,
            options: WatchOptions {
                poll_interval,
                ..options
            },
        };
        state.rearm();
        self.reload();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("corral-tools-watch".to_owned())
            .spawn(move || state.run(&rx, &thread_shared))
            .map_err(WatchError::Thread)?;
        Ok(WatchHandle {
            shared,
            tx,
            thread: Some(thread),
        })
    }
}

fn log_index(dir: &Path, index: &ToolIndex) {
    tracing::info!(
        dir = %dir.display(),
        generation = index.generation(),
        tools = index.len(),
        commands = index.command_count(),
        errors = index.errors().len(),
        "tools loaded"
    );
    for error in index.errors() {
        tracing::warn!(file = %error.file.display(), error = %error, "tool file skipped");
    }
}

/// The poll interval when none is configured and inotify is unavailable.
const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// How the watcher reacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Quiet time after the last event before reloading. Default 150 ms.
    pub debounce: Duration,
    /// Longest wait after the first event of a burst, so that a file written non-stop still gets
    /// reloaded. Default 2 s.
    pub max_delay: Duration,
    /// How often to compare the directory's fingerprint with the current index's (a safety net for lost
    /// events); `None`: events only, unless events are off or unavailable (then every 5 s). Default 5 s.
    pub poll_interval: Option<Duration>,
    /// Watch for file-system events (inotify). Default `true`; turn it off where events do not report
    /// every change (a network file system) and rely on the poll.
    pub events: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(150),
            max_delay: Duration::from_secs(2),
            poll_interval: Some(DEFAULT_POLL),
            events: true,
        }
    }
}

/// The watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Its thread could not be spawned.
    #[error("cannot start the tools watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Keeps the watcher running; dropping it stops the watcher (without waiting for its thread).
pub struct WatchHandle {
    shared: Arc<Shared>,
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHandle")
            .field("stopped", &self.shared.stop.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// Stops the watcher and waits for its thread to end (at most one reload's time). Blocking.
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn signal_stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // If the queue is full, the thread wakes up anyway to read it.
        let _ = self.tx.try_send(Msg::Wake);
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

struct Shared {
    stop: AtomicBool,
    overflow: AtomicBool,
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Wake,
}

/// A directory's identity: device and inode (following symlinks), if it is a directory.
fn dir_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The watcher thread's state.
struct WatchState {
    registry: Weak<ToolRegistry>,
    /// The tools directory, absolute.
    target: PathBuf,
    watcher: Option<RecommendedWatcher>,
    /// The identity of the target directory at the last re-arm (`None`: it was not there).
    target_seen: Option<(u64, u64)>,
    /// The target is watched.
    target_armed: bool,
    /// The nearest existing ancestor of the target, watched to see the target appear, go or be replaced.
    anchor: Option<(PathBuf, (u64, u64))>,
    /// A failure to watch was logged as a warning already (later ones go to debug).
    warned: bool,
    options: WatchOptions,
}

/// What an event asks for.
#[derive(Default)]
struct Action {
    rearm: bool,
    reload: bool,
}

impl WatchState {
    fn run(mut self, rx: &Receiver<Msg>, shared: &Shared) {
        // (first event, last event) of the burst waiting for a reload.
        let mut pending: Option<(Instant, Instant)> = None;
        let mut next_poll = self.options.poll_interval.map(|every| Instant::now() + every);
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let mut deadline = next_poll;
            if let Some((first, last)) = pending {
                let due = (last + self.options.debounce).min(first + self.options.max_delay);
                deadline = Some(deadline.map_or(due, |d| d.min(due)));
            }
            let message = match deadline {
                Some(deadline) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let mut action = match message {
                Ok(Msg::Fs(Ok(event))) => self.classify(&event),
                Ok(Msg::Fs(Err(err))) => {
                    tracing::debug!(dir = %self.target.display(), error = %err, "tools watcher error; rescanning");
                    self.forget();
                    Action {
                        rearm: true,
                        reload: true,
                    }
                }
                Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => Action::default(),
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if shared.overflow.swap(false, Ordering::SeqCst) {
                tracing::debug!(dir = %self.target.display(), "tools watcher queue overflowed; rescanning");
                self.forget();
                action = Action {
                    rearm: true,
                    reload: true,
                };
            }
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if action.rearm && self.rearm() {
                action.reload = true;
            }
            let now = Instant::now();
            if action.reload {
                pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
            }
            if let Some((first, last)) = pending {
                if now >= last + self.options.debounce || now >= first + self.options.max_delay {
                    pending = None;
                    if !self.reload() {
                        return;
                    }
                }
            }
            if let (Some(at), Some(every)) = (next_poll, self.options.poll_interval) {
                if now >= at {
                    next_poll = Some(now + every);
                    let rearmed = self.rearm();
                    let Some(registry) = self.registry.upgrade() else {
                        return;
                    };
                    let changed = fingerprint(&self.target) != registry.current().fingerprint();
                    drop(registry);
                    if (rearmed || changed) && pending.is_none() && !self.reload() {
                        return;
                    }
                }
            }
        }
    }

    /// Reloads; `false` once the registry is gone.
    fn reload(&self) -> bool {
        let Some(registry) = self.registry.upgrade() else {
            return false;
        };
        // A reload never panics by design; if it ever did, keep watching rather than die silently.
        if std::panic::catch_unwind(AssertUnwindSafe(|| registry.reload())).is_err() {
            tracing::error!(dir = %self.target.display(), "tools reload panicked; the previous index stays");
        }
        true
    }

    /// Decides what one event means for us.
    fn classify(&mut self, event: &notify::Event) -> Action {
        if event.need_rescan() {
            self.forget();
            return Action {
                rearm: true,
                reload: true,
            };
        }
        match event.kind {
            // Opening and reading (our own loads do it) change nothing; a write that ends does.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return Action::default(),
            _ => {}
        }
        if event.paths.is_empty() {
            return Action {
                rearm: true,
                reload: true,
            };
        }
        let mut action = Action::default();
        for path in &event.paths {
            if *path == self.target {
                // The directory itself was created, deleted, moved or replaced (or its mode changed):
                // watch it afresh, even if a new one has the old inode number.
                self.forget_target();
                action.rearm = true;
                action.reload = true;
            } else if path.parent() == Some(self.target.as_path()) {
                let relevant = path
                    .file_name()
                    .map(|name| name.to_str().is_none_or(|name| Format::of(name).is_some()))
                    .unwrap_or(false);
                action.reload |= relevant;
            } else if self.target.starts_with(path) {
                // An ancestor appeared, went, or was renamed.
                action.rearm = true;
            }
        }
        action
    }

    fn forget_target(&mut self) {
        if self.target_armed {
            if let Some(watcher) = self.watcher.as_mut() {
                let _ = watcher.unwatch(&self.target);
            }
        }
        self.target_armed = false;
        self.target_seen = None;
    }

    /// Forgets everything watched, so the next re-arm starts afresh.
    fn forget(&mut self) {
        self.forget_target();
        if let Some((anchor, _)) = self.anchor.take() {
            if let Some(watcher) = self.watcher.as_mut() {
                let _ = watcher.unwatch(&anchor);
            }
        }
    }

    /// Watches the target if it is a directory; while it is missing (or cannot be watched), watches its
    /// nearest existing ancestor instead, to see it appear. Returns whether the target appeared, went or
    /// was replaced since the last call.
    ///
    /// The ancestor is watched only while needed: a watch on it wakes on every write to any sibling (a log
    /// file next to `tools.d`, say). While the target is watched, its own delete/move events bring us back
    /// here. When the ancestor is armed, it is checked again after arming (a deeper one may have appeared
    /// meanwhile), and only then is the target looked at: whatever is created below the armed ancestor after
    /// that is seen as an event, and whatever was created before is seen by this check.
    fn rearm(&mut self) -> bool {
        if dir_id(&self.target).is_some() {
            self.drop_anchor();
        } else {
            self.arm_anchor();
        }
        let target_now = dir_id(&self.target);
        let changed = target_now != self.target_seen;
        if changed && self.target_armed {
            if let Some(watcher) = self.watcher.as_mut() {
                let _ = watcher.unwatch(&self.target);
            }
            self.target_armed = false;
        }
        self.target_seen = target_now;
        if target_now.is_some() && !self.target_armed {
            let target = self.target.clone();
            self.target_armed = self.watch_path(&target);
        }
        if !self.target_armed && self.anchor.is_none() {
            // Gone between the checks, or not watchable: watch for it from above.
            self.arm_anchor();
        }
        changed
    }

    fn drop_anchor(&mut self) {
        if let Some((old, _)) = self.anchor.take() {
            if let Some(watcher) = self.watcher.as_mut() {
                let _ = watcher.unwatch(&old);
            }
        }
    }

    fn arm_anchor(&mut self) {
        for _ in 0..16 {
            let anchor_now = self
                .target
                .ancestors()
                .skip(1)
                .find_map(|path| dir_id(path).map(|id| (path.to_owned(), id)));
            if anchor_now == self.anchor {
                break;
            }
            self.drop_anchor();
            let Some((path, id)) = anchor_now else {
                break;
            };
            if !self.watch_path(&path) {
                break;
            }
            self.anchor = Some((path, id));
        }
    }

    fn watch_path(&mut self, path: &Path) -> bool {
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        match watcher.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => true,
            Err(err) => {
                if self.warned {
                    tracing::debug!(path = %path.display(), error = %err, "cannot watch (tools)");
                } else {
                    self.warned = true;
                    tracing::warn!(
                        path = %path.display(),
                        error = %err,
                        "cannot watch for tool file changes; relying on the periodic check"
                    );
                }
                false
            }
        }
    }
}
