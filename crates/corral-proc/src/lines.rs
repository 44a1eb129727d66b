//! Splitting a byte stream into lines, with a cap on line length.

use bytes::{Bytes, BytesMut};

/// How a [`Line`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// By a newline (not included in the text).
    Newline,
    /// At the length cap: the next line of the same stream continues this one.
    Split,
    /// The stream ended without a final newline.
    Eof,
}

/// One line of output (or one piece of an over-long line), as bytes: output need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The text, without the newline.
    pub text: Bytes,
    /// How it ended.
    pub end: LineEnd,
}

impl Line {
    /// The text as UTF-8, with invalid sequences replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// Splits chunks of a stream into [`Line`]s. Lines longer than the cap come out in pieces of at most
/// the cap, each but the last marked [`LineEnd::Split`]: nothing is lost, and no two lines are merged.
#[derive(Debug)]
pub struct LineSplitter {
    partial: BytesMut,
    max: usize,
}

impl LineSplitter {
    /// A splitter that cuts lines at `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        LineSplitter {
            partial: BytesMut::new(),
            max: max.max(1),
        }
    }

    /// Feeds one chunk; the completed lines are appended to `out`.
    pub fn push(&mut self, chunk: &Bytes, out: &mut Vec<Line>) {
        let mut rest = chunk.clone();
        while !rest.is_empty() {
            let room = self.max - self.partial.len();
            let window = &rest[..rest.len().min(room)];
            match memchr(b'\n', window) {
                Some(at) => {
                    let text = self.take_with(rest.slice(..at));
                    out.push(Line {
                        text,
                        end: LineEnd::Newline,
                    });
                    rest = rest.slice(at + 1..);
                }
                None if rest.len() > room => {
                    // The line reaches the cap with bytes to spare: cut it there. A newline right after
                    // the cut ends this same line, so it does not make an empty line of its own.
                    let text = self.take_with(rest.slice(..room));
                    let newline_next = rest[room] == b'\n';
                    out.push(Line {
                        text,
                        end: if newline_next { LineEnd::Newline } else { LineEnd::Split },
                    });
                    rest = rest.slice(room + usize::from(newline_next)..);
                }
                None => {
                    self.partial.extend_from_slice(&rest);
                    rest = Bytes::new();
                }
            }
        }
    }

    /// Ends the stream: a pending partial line comes out marked [`LineEnd::Eof`].
    pub fn finish(&mut self) -> Option<Line> {
        if self.partial.is_empty() {
            return None;
        }
        Some(Line {
            text: self.partial.split().freeze(),
            end: LineEnd::Eof,
        })
    }

    /// Bytes of a partial line held back: the next line that comes out starts with them.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Forgets a pending partial line.
    pub fn reset(&mut self) {
        self.partial.clear();
    }

    /// Joins the pending partial line (if any) with `tail`; zero-copy when nothing is pending.
    fn take_with(&mut self, tail: Bytes) -> Bytes {
        if self.partial.is_empty() {
            return tail;
        }
        self.partial.extend_from_slice(&tail);
        self.partial.split().freeze()
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, LineEnd)> {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(&Bytes::copy_from_slice(chunk), &mut out);
        }
        out.extend(splitter.finish());
        out.into_iter().map(|l| (l.to_string_lossy(), l.end)).collect()
    }

    #[test]
    fn joins_lines_across_chunks() {
        use LineEnd::*;
        assert_eq!(
            split(100, &[b"a\nb", b"c\n", b"\nd"]),
            vec![
                ("a".into(), Newline),
                ("bc".into(), Newline),
                ("".into(), Newline),
                ("d".into(), Eof)
            ]
        );
    }

    #[test]
    fn splits_long_lines_without_losing_bytes() {
        use LineEnd::*;
        assert_eq!(
            split(3, &[b"abcdefg\nxy", b"z\n"]),
            vec![
                ("abc".into(), Split),
                ("def".into(), Split),
                ("g".into(), Newline),
                ("xyz".into(), Newline)
            ]
        );
        // A line of exactly the cap is one line, not a line plus an empty one.
        assert_eq!(split(3, &[b"abc\nd"]), vec![("abc".into(), Newline), ("d".into(), Eof)]);
        assert_eq!(split(3, &[b"ab", b"c", b"\n"]), vec![("abc".into(), Newline)]);
    }

    #[test]
    fn invalid_utf8_is_kept_as_bytes() {
        let mut splitter = LineSplitter::new(10);
        let mut out = Vec::new();
        splitter.push(&Bytes::from_static(b"\xff\xfe\n"), &mut out);
        assert_eq!(&out[0].text[..], b"\xff\xfe");
        assert_eq!(out[0].to_string_lossy(), "\u{fffd}\u{fffd}");
    }
}
