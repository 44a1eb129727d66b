//! Output capture: a pipe read into a ring buffer, line events and an optional log file.
//!
//! One pump per captured stream reads the pipe in large chunks, polled by the process's supervisor task.
//! Each chunk is copied once into the stream's [`RingBuffer`] and, only when someone listens, cut into
//! lines for an event. Nothing here
//! ever waits on a subscriber: events go to broadcast channels, which drop for a subscriber that lags.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::net::unix::pipe;

use crate::event::{EventKind, EventSender, Stream};
use crate::lines::LineSplitter;
use crate::ring::RingBuffer;

/// Bytes asked of the kernel per read: a pipe holds 64 KiB (unless resized), so a read never returns more,
/// and a buffer of this size comes from the heap, while 128 KiB would be an `mmap` + `munmap` per stream.
const READ_CHUNK: usize = 64 * 1024;

/// The first read of a stream asks for this much; each read that fills its buffer makes the next one 4x
/// larger, up to [`READ_CHUNK`]. Most short jobs write little or nothing, and their one read (the end of
/// file) then costs a small allocation instead of 64 KiB.
const FIRST_READ_CHUNK: usize = 4 * 1024;

/// A log file that captured output is appended to, with optional size-based rotation.
///
/// When a write would take the file past `max_size`, the file is renamed to `<path>.1` (older ones shift
/// to `.2`, ... up to `keep`, the oldest is deleted) and a new file is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file to append to; created if missing.
    pub path: PathBuf,
    /// Rotate once the file would grow past this many bytes; `None` never rotates.
    pub max_size: Option<u64>,
    /// Rotated files to keep.
    pub keep: usize,
}

impl LogFile {
    /// Appends to `path` without rotation.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogFile {
            path: path.into(),
            max_size: None,
            keep: 0,
        }
    }

    /// Rotates at `max_size` bytes, keeping `keep` old files.
    pub fn rotate(mut self, max_size: u64, keep: usize) -> Self {
        self.max_size = Some(max_size);
        self.keep = keep;
        self
    }
}

/// An open [`LogFile`].
#[derive(Debug)]
pub(crate) struct LogWriter {
    config: LogFile,
    file: File,
    size: u64,
}

impl LogWriter {
    pub(crate) fn open(config: LogFile) -> io::Result<Self> {
        if let Some(parent) = config.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&config.path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter { config, file, size })
    }

    /// Appends `data`. Blocking, but a write to a local file lands in the page cache in microseconds.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(max) = self.config.max_size {
            if self.size > 0 && self.size + data.len() as u64 > max {
                self.rotate()?;
            }
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let path = &self.config.path;
        let numbered = |n: usize| -> PathBuf {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.config.keep == 0 {
            remove_if_exists(path)?;
        } else {
            remove_if_exists(&numbered(self.config.keep))?;
            for n in (1..self.config.keep).rev() {
                rename_if_exists(&numbered(n), &numbered(n + 1))?;
            }
            rename_if_exists(path, &numbered(1))?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.size = 0;
        Ok(())
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// What one stream's pump shares with the process handle.
#[derive(Debug)]
pub(crate) struct Capture {
    pub(crate) ring: Mutex<RingBuffer>,
    /// How many of the ring's newest bytes the pump's line splitter holds as a partial line, which its next
    /// line event will carry whole. Written and read only under the ring's lock (hence `Relaxed`), so
    /// that a follower's snapshot and this count agree.
    partial: AtomicUsize,
}

impl Capture {
    pub(crate) fn new(capacity: usize) -> Self {
        Capture {
            ring: Mutex::new(RingBuffer::new(capacity)),
            partial: AtomicUsize::new(0),
        }
    }

    /// See [`Capture::partial`]; the caller holds the ring's lock.
    pub(crate) fn partial_locked(&self, _ring: &RingBuffer) -> usize {
        self.partial.load(Ordering::Relaxed)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, RingBuffer> {
        // A panic while holding this lock cannot leave the ring inconsistent enough to matter.
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn with_ring<T>(&self, f: impl FnOnce(&mut RingBuffer) -> T) -> T {
        f(&mut self.lock())
    }
}

/// One stream's output mirrored to a file ([`Command::mirror_output`](crate::Command::mirror_output)):
/// appended as the pump reads, and kept within `cap` bytes of the newest output by moving the file to
/// `<path>.1` once it is full (dropping the older `.1`). Created on the first write, so a process that
/// writes nothing costs nothing. A write error is logged once and ends the mirror; the capture goes on.
pub(crate) struct Mirror {
    path: PathBuf,
    cap: u64,
    file: Option<File>,
    len: u64,
    failed: bool,
    /// Files may exist to remove at the end: created by this mirror, or by an earlier one (an adopted
    /// process). Untouched, the end costs no `unlink`.
    touched: bool,
}

impl Mirror {
    /// A mirror at `path`; `existing`: its files may already exist (an adopted process's).
    pub(crate) fn new(path: PathBuf, cap: usize, existing: bool) -> Self {
        Mirror {
            path,
            cap: cap.max(1) as u64,
            file: None,
            len: 0,
            failed: false,
            touched: existing,
        }
    }

    fn older(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn open(&mut self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        self.touched = true;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        self.len = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    pub(crate) fn write(&mut self, chunk: &[u8]) {
        if self.failed || chunk.is_empty() {
            return;
        }
        let result = (|| -> io::Result<()> {
            if self.file.is_none() {
                self.open()?;
            }
            if self.len > 0 && self.len + chunk.len() as u64 > self.cap {
                self.file = None;
                fs::rename(&self.path, Self::older(&self.path))?;
                self.open()?;
            }
            if let Some(file) = self.file.as_mut() {
                file.write_all(chunk)?;
                self.len += chunk.len() as u64;
            }
            Ok(())
        })();
        if let Err(err) = result {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot mirror output; it is still captured");
            self.failed = true;
            self.file = None;
        }
    }

    /// The newest `cap` bytes mirrored at `path` (the older file first); empty when there are none.
    pub(crate) fn read_tail(path: &Path, cap: usize) -> Vec<u8> {
        let mut bytes = fs::read(Self::older(path)).unwrap_or_default();
        bytes.extend(fs::read(path).unwrap_or_default());
        let start = bytes.len().saturating_sub(cap);
        bytes.split_off(start)
    }

    /// Removes the mirror's files.
    pub(crate) fn remove(&mut self) {
        self.file = None;
        if !std::mem::take(&mut self.touched) {
            return;
        }
        for path in [Self::older(&self.path), self.path.clone()] {
            if let Err(err) = fs::remove_file(&path) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove an output mirror");
                }
            }
        }
    }
}

/// Chunks a pump reads in one poll before it lets the rest of its task run: a child that writes without
/// pause must not keep its supervisor from seeing a stop request or a timeout.
const CHUNKS_PER_POLL: usize = 16;

/// One captured stream: the pipe's read end, read in place by the process's supervisor task.
///
/// A pump is polled, not spawned: it has no task and no future of its own, so an idle stream costs its
/// reactor registration and these few fields.
pub(crate) struct Pump {
    stream: Stream,
    /// `None` once the pipe reached end of file (or failed).
    receiver: Option<pipe::Receiver>,
    splitter: LineSplitter,
    /// The read buffer; it exists only while the pipe has data, so an idle process (most long-running
    /// ones) costs no buffer at all.
    buf: BytesMut,
    /// Bytes to ask for in the next read: grows from [`FIRST_READ_CHUNK`] to [`READ_CHUNK`].
    chunk: usize,
    log_failed: bool,
    /// Where what is read is mirrored, if anywhere.
    pub(crate) mirror: Option<Mirror>,
}

/// The captured streams of one process, and where what they read goes.
pub(crate) struct Pumps {
    pub(crate) stdout: Option<Pump>,
    pub(crate) stderr: Option<Pump>,
    events: EventSender,
    log: Option<Arc<Mutex<LogWriter>>>,
}

impl Pump {
    /// A pump on `fd`. `prefill`: bytes that came before the pipe's (what a keeper spooled while no
    /// daemon read the pipe); they are captured now. Must be called inside a tokio runtime.
    pub(crate) fn new(
        stream: Stream,
        fd: OwnedFd,
        prefill: Option<Vec<u8>>,
        capture: &Capture,
        line_max: usize,
        pumps: &mut Pumps,
    ) -> Self {
        let receiver = pipe::Receiver::from_owned_fd(fd)
            .map_err(|err| tracing::warn!(stream = stream.as_str(), error = %err, "cannot capture output"))
            .ok();
        let mut pump = Pump {
            stream,
            receiver,
            splitter: LineSplitter::new(line_max),
            buf: BytesMut::new(),
            chunk: FIRST_READ_CHUNK,
            log_failed: false,
            mirror: None,
        };
        if let Some(prefill) = prefill {
            pump.take_chunk(&prefill.into(), capture, &pumps.events, pumps.log.as_ref());
        }
        pump
    }

    fn is_open(&self) -> bool {
        self.receiver.is_some()
    }

    /// Reads what the pipe has; `Ready` once it is closed (end of file, or an error, logged: the process
    /// goes on).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        capture: &Capture,
        events: &EventSender,
        log: Option<&Arc<Mutex<LogWriter>>>,
    ) -> Poll<()> {
        let mut chunks = 0;
        loop {
            let Some(receiver) = &self.receiver else {
                return Poll::Ready(());
            };
            if self.buf.capacity() == 0 {
                if let Err(err) = ready!(receiver.poll_read_ready(cx)) {
                    return self.close(Some(capture), events, Some(err));
                }
            }
            if chunks == CHUNKS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.buf.reserve(self.chunk);
            let spare = self.buf.capacity() - self.buf.len();
            match receiver.try_read_buf(&mut self.buf) {
                Ok(0) => return self.close(Some(capture), events, None),
                Ok(n) => {
                    if n == spare {
                        self.chunk = (self.chunk * 4).min(READ_CHUNK);
                    }
                    let chunk = self.buf.split_to(n).freeze();
                    self.take_chunk(&chunk, capture, events, log);
                    chunks += 1;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.buf = BytesMut::new(),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.close(Some(capture), events, Some(err)),
            }
        }
    }

    /// Stops reading: the last unterminated line goes out, the pipe is closed.
    fn close(&mut self, capture: Option<&Capture>, events: &EventSender, error: Option<io::Error>) -> Poll<()> {
        if let Some(err) = error {
            tracing::warn!(stream = self.stream.as_str(), error = %err, "output capture stopped");
        }
        self.receiver = None;
        self.buf = BytesMut::new();
        let stream = self.stream;
        let send_last = |splitter: &mut LineSplitter| {
            if let Some(line) = splitter.finish() {
                if events.has_listeners() {
                    events.send(EventKind::Output {
                        stream,
                        lines: vec![line].into(),
                    });
                }
            }
        };
        // Under the ring's lock, like every chunk's event: a follower either sees the partial line counted
        // in its snapshot and gets this event, or sees it already sent and the count back at zero.
        match capture {
            Some(capture) => capture.with_ring(|_| {
                send_last(&mut self.splitter);
                capture.partial.store(0, Ordering::Relaxed);
            }),
            None => send_last(&mut self.splitter),
        }
        Poll::Ready(())
    }

    /// One chunk read: into the ring, the log file and (only when someone listens) line events.
    fn take_chunk(
        &mut self,
        chunk: &bytes::Bytes,
        capture: &Capture,
        events: &EventSender,
        log: Option<&Arc<Mutex<LogWriter>>>,
    ) {
        if let Some(log) = log {
            let mut writer = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(err) = writer.write(chunk) {
                if !self.log_failed {
                    tracing::warn!(error = %err, "cannot write log file; output is still captured");
                    self.log_failed = true;
                }
            }
        }
        if let Some(mirror) = self.mirror.as_mut() {
            mirror.write(chunk);
        }
        let (stream, splitter) = (self.stream, &mut self.splitter);
        // The event goes out under the ring's lock: `Process::follow` reads the rings and subscribes under
        // the same locks, so a chunk reaches a follower either in its snapshot or as an event, never both.
        capture.with_ring(|ring| {
            ring.write(chunk);
            if events.has_listeners() {
                let mut lines = Vec::new();
                splitter.push(chunk, &mut lines);
                if !lines.is_empty() {
                    events.send(EventKind::Output {
                        stream,
                        lines: lines.into(),
                    });
                }
            } else {
                // Nobody listens: skip the line work. A subscriber that joins mid-line gets the rest of
                // that line as its first line.
                splitter.reset();
            }
            capture.partial.store(splitter.pending(), Ordering::Relaxed);
        });
    }
}

impl Pumps {
    pub(crate) fn new(events: EventSender, log: Option<Arc<Mutex<LogWriter>>>) -> Self {
        Pumps {
            stdout: None,
            stderr: None,
            events,
            log,
        }
    }

    /// True while a captured stream is still open.
    pub(crate) fn is_open(&self) -> bool {
        self.stdout.as_ref().is_some_and(Pump::is_open) || self.stderr.as_ref().is_some_and(Pump::is_open)
    }

    /// Reads both streams into their captures (which the process handle owns); `Ready` once both are
    /// closed.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        stdout_capture: Option<&Capture>,
        stderr_capture: Option<&Capture>,
    ) -> Poll<()> {
        let Pumps {
            stdout,
            stderr,
            events,
            log,
        } = self;
        let mut poll = |pump: &mut Option<Pump>, capture: Option<&Capture>| match (pump, capture) {
            (Some(pump), Some(capture)) => pump.poll(cx, capture, events, log.as_ref()),
            _ => Poll::Ready(()),
        };
        let out = poll(stdout, stdout_capture);
        let err = poll(stderr, stderr_capture);
        if out.is_ready() && err.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Removes the output mirrors (the process has ended and its end is recorded).
    pub(crate) fn remove_mirrors(&mut self) {
        for pump in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
            if let Some(mut mirror) = pump.mirror.take() {
                mirror.remove();
            }
        }
    }

    /// Stops reading both streams, what is left in the pipes unread.
    pub(crate) fn close(&mut self, stdout_capture: Option<&Capture>, stderr_capture: Option<&Capture>) {
        for (pump, capture) in [(&mut self.stdout, stdout_capture), (&mut self.stderr, stderr_capture)] {
            if let Some(pump) = pump {
                let _ = pump.close(capture, &self.events, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_rotates_and_keeps_n() {
        let dir = std::env::temp_dir().join(format!("corral-log-{}", uuid::Uuid::new_v4()));
        let path = dir.join("svc.log");
        let mut writer = LogWriter::open(LogFile::new(&path).rotate(10, 2)).expect("UNWRAP: temp dir");
        for chunk in [&b"aaaaaaaa"[..], b"bbbbbbbb", b"cccccccc", b"dddddddd"] {
            writer.write(chunk).expect("UNWRAP: temp dir");
        }
        let read = |p: &Path| fs::read(p).unwrap_or_default();
        assert_eq!(read(&path), b"dddddddd");
        assert_eq!(read(&dir.join("svc.log.1")), b"cccccccc");
        assert_eq!(read(&dir.join("svc.log.2")), b"bbbbbbbb");
        assert!(!dir.join("svc.log.3").exists());
        let _ = fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod mirror_tests {
    use super::*;

    #[test]
    fn a_mirror_keeps_the_newest_bytes_within_twice_its_cap_and_reads_them_back() {
        let dir = std::env::temp_dir().join(format!("corral-mirror-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
        let path = dir.join("p.stdout");
        assert!(Mirror::read_tail(&path, 10).is_empty(), "nothing mirrored yet");
        let mut mirror = Mirror::new(path.clone(), 10, false);
        mirror.write(b"");
        assert!(!path.exists(), "created on the first output only");
        let mut written = Vec::new();
        for chunk in [&b"abcd"[..], b"efgh", b"ijkl", b"mnopqrstuvwxyz", b"12"] {
            mirror.write(chunk);
            written.extend_from_slice(chunk);
            let on_disk = fs::metadata(&path).map_or(0, |m| m.len())
                + fs::metadata(dir.join("p.stdout.1")).map_or(0, |m| m.len());
            assert!(on_disk <= 10 + 14, "bounded: {on_disk}");
            assert_eq!(
                Mirror::read_tail(&path, 10),
                written[written.len().saturating_sub(10)..]
            );
        }
        // A second mirror on the same file (a new daemon adopting the process) appends.
        let mut again = Mirror::new(path.clone(), 10, true);
        again.write(b"34");
        assert_eq!(Mirror::read_tail(&path, 10), b"uvwxyz1234");
        again.remove();
        assert!(!path.exists() && !dir.join("p.stdout.1").exists(), "both files removed");
        let _ = fs::remove_dir_all(&dir);
    }
}
