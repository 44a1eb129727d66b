//! The keeper protocol on the wire: frames, messages, and passing file descriptors.
//!
//! A frame is a 6-byte header — payload length (`u32`, little-endian), message tag (`u8`), number of file
//! descriptors carried (`u8`) — then the payload. Integers are little-endian, byte strings are a `u32`
//! length then the bytes, an optional value is a `u8` (0 or 1) then the value. A frame's descriptors are
//! sent with `SCM_RIGHTS` in the same `sendmsg` as the frame's first byte, so the receiver has them by the
//! time it has the whole frame: it keeps a FIFO of received descriptors and gives each frame as many as
//! its header says.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

/// The protocol version, sent in `Hello` and `State`. Bump it on any change to the messages.
pub(crate) const VERSION: u32 = 1;

/// Bytes in a frame header.
const HEADER: usize = 6;
/// Largest payload accepted: far above any real argv + environment (the kernel caps those near 2 MiB).
const MAX_PAYLOAD: usize = 16 << 20;
/// Most descriptors one frame carries (`SCM_RIGHTS` allows 253 per message; we stay well below).
pub(super) const MAX_FDS: usize = 64;
/// Descriptors accepted in one `recvmsg`, whatever the peer sends (the kernel's `SCM_MAX_FD`).
const RECV_FDS: usize = 253;

// Tags: daemon → keeper below 0x80, keeper → daemon from 0x80.
const HELLO: u8 = 0x01;
const SPAWN: u8 = 0x02;
const REAP: u8 = 0x03;
const SHUTDOWN: u8 = 0x04;
const STATE: u8 = 0x81;
const SPAWNED: u8 = 0x82;
const SPAWN_FAILED: u8 = 0x83;
const EXITED: u8 = 0x84;
const REAPED: u8 = 0x85;
const ERROR: u8 = 0x86;

/// Bits of [`SpawnMsg::fds`]: which descriptors follow, in this order.
pub(super) const FD_STDIN: u8 = 1 << 0;
pub(super) const FD_STDOUT: u8 = 1 << 1;
pub(super) const FD_STDERR: u8 = 1 << 2;
pub(super) const FD_STDOUT_READER: u8 = 1 << 3;
pub(super) const FD_STDERR_READER: u8 = 1 << 4;
const FD_ALL: u8 = FD_STDIN | FD_STDOUT | FD_STDERR | FD_STDOUT_READER | FD_STDERR_READER;

/// Children described per `State` frame: each carries at most two descriptors, so at most [`MAX_FDS`].
pub(super) const STATE_BATCH: usize = MAX_FDS / 2;

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Msg {
    /// daemon → keeper, first on every connection.
    Hello { version: u32 },
    /// daemon → keeper.
    Spawn(SpawnMsg),
    /// daemon → keeper: reap an exited child and forget it.
    Reap { id: String },
    /// daemon → keeper: exit now.
    Shutdown,
    /// keeper → daemon: answer to `Hello`, in batches.
    State(StateMsg),
    /// keeper → daemon.
    Spawned { id: String, pid: u32, start_ticks: u64 },
    /// keeper → daemon.
    SpawnFailed { id: String, errno: i32, message: String },
    /// keeper → daemon: a tracked child exited (not reaped yet).
    Exited { id: String, pid: u32, exit: WireExit },
    /// keeper → daemon: answer to `Reap`.
    Reaped { id: String, reaped: bool },
    /// keeper → daemon: the connection is refused; the keeper closes it.
    Error { message: String },
}

/// A child's exit status: the code if it exited, the signal if one killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct WireExit {
    pub(super) code: Option<i32>,
    pub(super) signal: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SpawnMsg {
    pub(super) id: String,
    pub(super) argv: Vec<Vec<u8>>,
    pub(super) dir: Option<Vec<u8>>,
    pub(super) env: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) session: bool,
    /// Which descriptors the frame carries (`FD_*` bits).
    pub(super) fds: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StateMsg {
    pub(super) version: u32,
    /// More `State` frames follow.
    pub(super) more: bool,
    pub(super) children: Vec<ChildMsg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChildMsg {
    pub(super) id: String,
    pub(super) pid: u32,
    pub(super) start_ticks: u64,
    pub(super) exit: Option<WireExit>,
    /// Present when the keeper holds the stream's read end; the frame then carries that descriptor
    /// (stdout's before stderr's, children in order).
    pub(super) stdout: Option<StreamMsg>,
    pub(super) stderr: Option<StreamMsg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StreamMsg {
    pub(super) spooled: u64,
    pub(super) dropped: u64,
    pub(super) spool_path: Vec<u8>,
}

/// A malformed frame: the connection cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("keeper protocol error: {0}")]
pub(super) struct WireError(pub(super) String);

impl Msg {
    /// How many descriptors a frame of this message carries.
    pub(super) fn fd_count(&self) -> usize {
        match self {
            Msg::Spawn(spawn) => spawn.fds.count_ones() as usize,
            Msg::State(state) => state
                .children
                .iter()
                .map(|c| usize::from(c.stdout.is_some()) + usize::from(c.stderr.is_some()))
                .sum(),
            _ => 0,
        }
    }

    /// The whole frame: header and payload.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder(Vec::with_capacity(64));
        out.0.extend_from_slice(&[0; HEADER]);
        let tag = match self {
            Msg::Hello { version } => {
                out.u32(*version);
                HELLO
            }
            Msg::Spawn(spawn) => {
                out.str(&spawn.id);
                out.u32(len32(spawn.argv.len()));
                for arg in &spawn.argv {
                    out.bytes(arg);
                }
                out.opt(spawn.dir.as_ref(), |out, dir| out.bytes(dir));
                out.u32(len32(spawn.env.len()));
                for (name, value) in &spawn.env {
                    out.bytes(name);
                    out.bytes(value);
                }
                out.u8(u8::from(spawn.session));
                out.u8(spawn.fds);
                SPAWN
            }
            Msg::Reap { id } => {
                out.str(id);
                REAP
            }
            Msg::Shutdown => SHUTDOWN,
            Msg::State(state) => {
                out.u32(state.version);
                out.u8(u8::from(state.more));
                out.u32(len32(state.children.len()));
                for child in &state.children {
                    out.str(&child.id);
                    out.u32(child.pid);
                    out.u64(child.start_ticks);
                    out.opt(child.exit.as_ref(), |out, exit| out.exit(exit));
                    for stream in [&child.stdout, &child.stderr] {
                        out.opt(stream.as_ref(), |out, stream| {
                            out.u64(stream.spooled);
                            out.u64(stream.dropped);
                            out.bytes(&stream.spool_path);
                        });
                    }
                }
                STATE
            }
            Msg::Spawned { id, pid, start_ticks } => {
                out.str(id);
                out.u32(*pid);
                out.u64(*start_ticks);
                SPAWNED
            }
            Msg::SpawnFailed { id, errno, message } => {
                out.str(id);
                out.i32(*errno);
                out.str(message);
                SPAWN_FAILED
            }
            Msg::Exited { id, pid, exit } => {
                out.str(id);
                out.u32(*pid);
                out.exit(exit);
                EXITED
            }
            Msg::Reaped { id, reaped } => {
                out.str(id);
                out.u8(u8::from(*reaped));
                REAPED
            }
            Msg::Error { message } => {
                out.str(message);
                ERROR
            }
        };
        let mut frame = out.0;
        let payload = len32(frame.len() - HEADER);
        frame[..4].copy_from_slice(&payload.to_le_bytes());
        frame[4] = tag;
        // Callers never put more than MAX_FDS (< 256) descriptors in one frame.
        frame[5] = u8::try_from(self.fd_count()).unwrap_or(u8::MAX);
        frame
    }

    fn decode(tag: u8, payload: &[u8]) -> Result<Msg, WireError> {
        let mut input = Decoder(payload);
        let msg = match tag {
            HELLO => Msg::Hello { version: input.u32()? },
            SPAWN => {
                let id = input.string()?;
                let argc = input.count()?;
                let argv = (0..argc).map(|_| input.bytes()).collect::<Result<_, _>>()?;
                let dir = input.opt(Decoder::bytes)?;
                let envc = input.count()?;
                let env = (0..envc)
                    .map(|_| Ok((input.bytes()?, input.bytes()?)))
                    .collect::<Result<_, WireError>>()?;
                let session = input.bool()?;
                let fds = input.u8()?;
                if fds & !FD_ALL != 0 {
                    return Err(WireError(format!("unknown descriptor bits {fds:#x}")));
                }
                Msg::Spawn(SpawnMsg {
                    id,
                    argv,
                    dir,
                    env,
                    session,
                    fds,
                })
            }
            REAP => Msg::Reap { id: input.string()? },
            SHUTDOWN => Msg::Shutdown,
            STATE => {
                let version = input.u32()?;
                let more = input.bool()?;
                let count = input.count()?;
                let mut children = Vec::with_capacity(count.min(STATE_BATCH));
                for _ in 0..count {
                    let id = input.string()?;
                    let pid = input.u32()?;
                    let start_ticks = input.u64()?;
                    let exit = input.opt(Decoder::exit)?;
                    let mut stream = || {
                        input.opt(|input| {
                            Ok(StreamMsg {
                                spooled: input.u64()?,
                                dropped: input.u64()?,
                                spool_path: input.bytes()?,
                            })
                        })
                    };
                    let stdout = stream()?;
                    let stderr = stream()?;
                    children.push(ChildMsg {
                        id,
                        pid,
                        start_ticks,
                        exit,
                        stdout,
                        stderr,
                    });
                }
                Msg::State(StateMsg {
                    version,
                    more,
                    children,
                })
            }
            SPAWNED => Msg::Spawned {
                id: input.string()?,
                pid: input.u32()?,
                start_ticks: input.u64()?,
            },
            SPAWN_FAILED => Msg::SpawnFailed {
                id: input.string()?,
                errno: input.i32()?,
                message: input.string()?,
            },
            EXITED => Msg::Exited {
                id: input.string()?,
                pid: input.u32()?,
                exit: input.exit()?,
            },
            REAPED => Msg::Reaped {
                id: input.string()?,
                reaped: input.bool()?,
            },
            ERROR => Msg::Error {
                message: input.string()?,
            },
            other => return Err(WireError(format!("unknown message tag {other:#x}"))),
        };
        if !input.0.is_empty() {
            return Err(WireError(format!(
                "{} stray bytes after message {tag:#x}",
                input.0.len()
            )));
        }
        Ok(msg)
    }
}

fn len32(len: usize) -> u32 {
    // Every length we encode is bounded by MAX_PAYLOAD, far below u32::MAX.
    u32::try_from(len).unwrap_or(u32::MAX)
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(len32(v.len()));
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn opt<T>(&mut self, v: Option<&T>, put: impl FnOnce(&mut Self, &T)) {
        match v {
            Some(v) => {
                self.u8(1);
                put(self, v);
            }
            None => self.u8(0),
        }
    }
    fn exit(&mut self, exit: &WireExit) {
        self.opt(exit.code.as_ref(), |out, code| out.i32(*code));
        self.opt(exit.signal.as_ref(), |out, signal| out.i32(*signal));
    }
}

struct Decoder<'a>(&'a [u8]);

impl Decoder<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| WireError("truncated message".into()))?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(WireError(format!("bad boolean {other}"))),
        }
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    /// A count of items, each at least 4 bytes: refuse counts the payload cannot hold.
    fn count(&mut self) -> Result<usize, WireError> {
        let count = self.u32()? as usize;
        if count > self.0.len() / 4 {
            return Err(WireError(format!("count {count} exceeds the message")));
        }
        Ok(count)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err(WireError("truncated byte string".into()));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head.to_vec())
    }
    fn string(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?).map_err(|_| WireError("string is not UTF-8".into()))
    }
    fn opt<T>(&mut self, get: impl FnOnce(&mut Self) -> Result<T, WireError>) -> Result<Option<T>, WireError> {
        if self.bool()? {
            get(self).map(Some)
        } else {
            Ok(None)
        }
    }
    fn exit(&mut self) -> Result<WireExit, WireError> {
        Ok(WireExit {
            code: self.opt(Decoder::i32)?,
            signal: self.opt(Decoder::i32)?,
        })
    }
}

/// Bytes and descriptors received but not yet cut into frames.
#[derive(Debug, Default)]
pub(super) struct FrameBuf {
    buf: Vec<u8>,
    start: usize,
    fds: VecDeque<OwnedFd>,
}

impl FrameBuf {
    pub(super) fn push(&mut self, bytes: &[u8], fds: impl IntoIterator<Item = OwnedFd>) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.fds.extend(fds);
    }

    /// The next whole frame, with its descriptors; `Ok(None)` until one is complete.
    pub(super) fn next_frame(&mut self) -> Result<Option<(Msg, Vec<OwnedFd>)>, WireError> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let (tag, nfds) = (header[4], usize::from(header[5]));
        if len > MAX_PAYLOAD {
            return Err(WireError(format!("frame of {len} bytes is too large")));
        }
        if pending.len() < HEADER + len {
            return Ok(None);
        }
        let msg = Msg::decode(tag, &pending[HEADER..HEADER + len])?;
        if msg.fd_count() != nfds {
            return Err(WireError(format!(
                "message {tag:#x} needs {} descriptors, its frame says {nfds}",
                msg.fd_count()
            )));
        }
        if self.fds.len() < nfds {
            return Err(WireError(format!("message {tag:#x} arrived without its descriptors")));
        }
        let fds = self.fds.drain(..nfds).collect();
        self.start += HEADER + len;
        if self.start == self.buf.len() {
            // Descriptors come with the first byte of their frame: with no byte left, none may be left.
            if !self.fds.is_empty() {
                return Err(WireError(format!(
                    "{} descriptors arrived without a frame",
                    self.fds.len()
                )));
            }
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some((msg, fds)))
    }

    /// True when nothing is buffered: no partial frame and no descriptor waiting for one.
    pub(super) fn is_empty(&self) -> bool {
        self.start == self.buf.len() && self.fds.is_empty()
    }
}

/// One `sendmsg` of `bytes` with `fds` attached (never blocks, never raises `SIGPIPE`). Returns how many
/// bytes went out; the descriptors went with the first of them.
pub(super) fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one frame",
        ));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// One `recvmsg` (never blocks): the bytes go into `buf`, the descriptors (close-on-exec) into `fds`.
/// `Ok(0)` is end of file.
pub(super) fn recv(socket: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(RECV_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors were lost (control data truncated)",
        ));
    }
    Ok(msg.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: Msg) {
        let frame = msg.encode();
        let mut buf = FrameBuf::default();
        let fds: Vec<OwnedFd> = (0..msg.fd_count())
            .map(|_| {
                use std::os::fd::AsFd;
                io::stdin().as_fd().try_clone_to_owned().expect("UNWRAP: dup works")
            })
            .collect();
        // Byte by byte: a frame is only returned once complete.
        for (i, byte) in frame.iter().enumerate() {
            if i == 0 {
                buf.push(&[*byte], fds.iter().map(|fd| fd.try_clone().expect("UNWRAP: dup")));
            } else {
                assert!(buf.next_frame().expect("UNWRAP: valid").is_none());
                buf.push(&[*byte], []);
            }
        }
        let (decoded, got) = buf.next_frame().expect("UNWRAP: valid").expect("UNWRAP: complete");
        assert_eq!(decoded, msg);
        assert_eq!(got.len(), msg.fd_count());
        assert!(buf.is_empty());
    }

    #[test]
    fn messages_round_trip() {
        round_trip(Msg::Hello { version: VERSION });
        round_trip(Msg::Spawn(SpawnMsg {
            id: "a-1".into(),
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo \xff".to_vec()],
            dir: Some(b"/tmp".to_vec()),
            env: vec![(b"A".to_vec(), b"b=c".to_vec()), (b"EMPTY".to_vec(), Vec::new())],
            session: true,
            fds: FD_STDOUT | FD_STDOUT_READER | FD_STDERR,
        }));
        round_trip(Msg::Reap { id: "x".into() });
        round_trip(Msg::Shutdown);
        round_trip(Msg::State(StateMsg {
            version: VERSION,
            more: true,
            children: vec![
                ChildMsg {
                    id: "one".into(),
                    pid: 42,
                    start_ticks: 1 << 40,
                    exit: Some(WireExit {
                        code: None,
                        signal: Some(9),
                    }),
                    stdout: Some(StreamMsg {
                        spooled: 10,
                        dropped: 3,
                        spool_path: b"/spool/one.stdout".to_vec(),
                    }),
                    stderr: None,
                },
                ChildMsg {
                    id: "two".into(),
                    pid: 43,
                    start_ticks: 7,
                    exit: None,
                    stdout: None,
                    stderr: Some(StreamMsg {
                        spooled: 0,
                        dropped: 0,
                        spool_path: Vec::new(),
                    }),
                },
            ],
        }));
        round_trip(Msg::Spawned {
            id: "x".into(),
            pid: 1,
            start_ticks: 2,
        });
        round_trip(Msg::SpawnFailed {
            id: "x".into(),
            errno: 2,
            message: "No such file".into(),
        });
        round_trip(Msg::Exited {
            id: "x".into(),
            pid: 5,
            exit: WireExit {
                code: Some(-1),
                signal: None,
            },
        });
        round_trip(Msg::Reaped {
            id: "x".into(),
            reaped: true,
        });
        round_trip(Msg::Error { message: "no".into() });
    }

    #[test]
    fn several_frames_in_one_push() {
        let mut bytes = Msg::Hello { version: 1 }.encode();
        bytes.extend(Msg::Reap { id: "r".into() }.encode());
        bytes.extend(&Msg::Shutdown.encode()[..3]);
        let mut buf = FrameBuf::default();
        buf.push(&bytes, []);
        assert_eq!(
            buf.next_frame().expect("UNWRAP").map(|f| f.0),
            Some(Msg::Hello { version: 1 })
        );
        assert_eq!(
            buf.next_frame().expect("UNWRAP").map(|f| f.0),
            Some(Msg::Reap { id: "r".into() })
        );
        assert!(buf.next_frame().expect("UNWRAP").is_none());
        assert!(!buf.is_empty());
        buf.push(&Msg::Shutdown.encode()[3..], []);
        assert_eq!(buf.next_frame().expect("UNWRAP").map(|f| f.0), Some(Msg::Shutdown));
    }

    #[test]
    fn malformed_frames_are_errors() {
        use std::os::fd::AsFd;

        let mut buf = FrameBuf::default();
        buf.push(&[0, 0, 0, 0, 0x7f, 0], []);
        assert!(buf.next_frame().is_err(), "unknown tag");

        let mut buf = FrameBuf::default();
        buf.push(&[0xff, 0xff, 0xff, 0x7f, HELLO, 0], []);
        assert!(buf.next_frame().is_err(), "oversized");

        // A spawn that announces descriptors that never came.
        let frame = Msg::Spawn(SpawnMsg {
            id: "x".into(),
            argv: vec![b"true".to_vec()],
            dir: None,
            env: Vec::new(),
            session: false,
            fds: FD_STDOUT,
        })
        .encode();
        let mut buf = FrameBuf::default();
        buf.push(&frame, []);
        assert!(buf.next_frame().is_err(), "missing descriptors");

        // Descriptors that no frame announced.
        let mut buf = FrameBuf::default();
        let stray = io::stdin().as_fd().try_clone_to_owned().expect("UNWRAP: dup works");
        buf.push(&Msg::Shutdown.encode(), [stray]);
        assert!(buf.next_frame().is_err(), "stray descriptors");

        // A huge count in a tiny payload.
        let mut buf = FrameBuf::default();
        buf.push(&[8, 0, 0, 0, REAP, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], []);
        assert!(buf.next_frame().is_err(), "truncated string");

        let mut frame = Msg::Reap { id: "x".into() }.encode();
        frame[0] += 1;
        frame.push(0);
        let mut buf = FrameBuf::default();
        buf.push(&frame, []);
        assert!(buf.next_frame().is_err(), "stray bytes");
    }
}
