//! Output capture: a pipe read into a ring buffer, line events and an optional log file.
//!
//! One pump task per captured stream reads the pipe in large chunks. Each chunk is copied once into the
//! stream's [`RingBuffer`] and, only when someone listens, cut into lines for an event. Nothing here
//! ever waits on a subscriber: events go to broadcast channels, which drop for a subscriber that lags.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::net::unix::pipe;

use crate::event::{EventKind, EventSender, Stream};
use crate::lines::LineSplitter;
use crate::ring::RingBuffer;

/// Bytes asked of the kernel per read: a pipe holds 64 KiB (unless resized), so a read never returns more,
/// and a buffer of this size comes from the heap, while 128 KiB would be an `mmap` + `munmap` per stream.
const READ_CHUNK: usize = 64 * 1024;

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
}

impl Capture {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Capture {
            ring: Mutex::new(RingBuffer::new(capacity)),
        })
    }

    pub(crate) fn with_ring<T>(&self, f: impl FnOnce(&mut RingBuffer) -> T) -> T {
        // A panic while holding this lock cannot leave the ring inconsistent enough to matter.
        let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut ring)
    }
}

/// Everything a pump needs.
pub(crate) struct Pump {
    pub(crate) stream: Stream,
    pub(crate) fd: OwnedFd,
    /// Bytes that came before the pipe's (what a keeper spooled while no daemon read the pipe).
    pub(crate) prefill: Option<Vec<u8>>,
    pub(crate) capture: Arc<Capture>,
    pub(crate) line_max: usize,
    pub(crate) events: EventSender,
    pub(crate) log: Option<Arc<Mutex<LogWriter>>>,
}

impl Pump {
    /// Reads the pipe to end of file. Errors end the pump quietly (after a log line): the process goes on.
    pub(crate) async fn run(self) {
        let stream = self.stream;
        if let Err(err) = self.run_inner().await {
            tracing::warn!(stream = stream.as_str(), error = %err, "output capture stopped");
        }
    }

    async fn run_inner(self) -> io::Result<()> {
        let Pump {
            stream,
            fd,
            prefill,
            capture,
            line_max,
            events,
            log,
        } = self;
        let sink = Sink {
            stream,
            capture,
            events,
            log,
        };
        let receiver = pipe::Receiver::from_owned_fd(fd)?;
        let mut splitter = LineSplitter::new(line_max);
        let mut log_failed = false;
        if let Some(prefill) = prefill {
            sink.take_chunk(&prefill.into(), &mut splitter, &mut log_failed);
        }
        // The read buffer exists only while the pipe has data: an idle process (most long-running ones)
        // then costs no buffer at all, instead of a resident page reserved per stream.
        let mut buf = BytesMut::new();
        loop {
            if buf.capacity() == 0 {
                receiver.readable().await?;
            }
            buf.reserve(READ_CHUNK);
            let n = match receiver.try_read_buf(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    buf = BytesMut::new();
                    continue;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let chunk = buf.split_to(n).freeze();
            sink.take_chunk(&chunk, &mut splitter, &mut log_failed);
        }
        if let Some(line) = splitter.finish() {
            if sink.events.has_listeners() {
                sink.events.send(EventKind::Output {
                    stream: sink.stream,
                    lines: vec![line].into(),
                });
            }
        }
        Ok(())
    }
}

/// Where a pump puts what it reads.
struct Sink {
    stream: Stream,
    capture: Arc<Capture>,
    events: EventSender,
    log: Option<Arc<Mutex<LogWriter>>>,
}

impl Sink {
    /// One chunk read: into the ring, the log file and (only when someone listens) line events.
    fn take_chunk(&self, chunk: &bytes::Bytes, splitter: &mut LineSplitter, log_failed: &mut bool) {
        self.capture.with_ring(|ring| ring.write(chunk));
        if let Some(log) = &self.log {
            let mut writer = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(err) = writer.write(chunk) {
                if !*log_failed {
                    tracing::warn!(error = %err, "cannot write log file; output is still captured");
                    *log_failed = true;
                }
            }
        }
        if self.events.has_listeners() {
            let mut lines = Vec::new();
            splitter.push(chunk, &mut lines);
            if !lines.is_empty() {
                self.events.send(EventKind::Output {
                    stream: self.stream,
                    lines: lines.into(),
                });
            }
        } else {
            // Nobody listens: skip the line work. A subscriber that joins mid-line gets the rest of
            // that line as its first line.
            splitter.reset();
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
