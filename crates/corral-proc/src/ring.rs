//! A bounded byte buffer that keeps the newest bytes.

/// A fixed-capacity buffer that keeps the newest `capacity` bytes written to it and counts the rest.
///
/// Memory grows with what is written, up to `capacity`, and never beyond: a process that writes a
/// gigabyte costs the same as one that writes exactly `capacity` bytes. A capacity of 0 keeps nothing
/// but still counts.
#[derive(Debug, Clone, Default)]
pub struct RingBuffer {
    buf: Vec<u8>,
    capacity: usize,
    /// Index in `buf` of the oldest byte once `buf` is full.
    head: usize,
    /// Bytes written since creation.
    total: u64,
}

impl RingBuffer {
    /// An empty buffer that will keep at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        RingBuffer {
            buf: Vec::new(),
            capacity,
            head: 0,
            total: 0,
        }
    }

    /// The most bytes this buffer keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes kept now.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes ever written.
    pub fn total_written(&self) -> u64 {
        self.total
    }

    /// Bytes written but no longer kept: the oldest ones, pushed out by newer ones.
    pub fn dropped(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    /// Appends `data`, pushing out the oldest bytes beyond the capacity.
    pub fn write(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.capacity == 0 || data.is_empty() {
            return;
        }
        if data.len() >= self.capacity {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.capacity..]);
            self.head = 0;
            return;
        }
        if self.buf.len() < self.capacity {
            let room = self.capacity - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        while !data.is_empty() {
            let n = (self.capacity - self.head).min(data.len());
            self.buf[self.head..self.head + n].copy_from_slice(&data[..n]);
            self.head = (self.head + n) % self.capacity;
            data = &data[n..];
        }
    }

    /// The kept bytes, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        out.extend_from_slice(&self.buf[self.head..]);
        out.extend_from_slice(&self.buf[..self.head]);
        out
    }

    /// The kept bytes written at or after absolute offset `from` (counted from the first byte ever
    /// written), and how many bytes from `from` on are no longer kept.
    ///
    /// A follower calls this with the `total_written()` it saw last to read what is new.
    pub fn since(&self, from: u64) -> (u64, Vec<u8>) {
        let oldest_kept = self.dropped();
        let skip_lost = oldest_kept.saturating_sub(from);
        let start = from.max(oldest_kept).min(self.total);
        let offset = (start - oldest_kept) as usize;
        let all = self.contents();
        (skip_lost, all[offset..].to_vec())
    }

    /// Forgets everything kept; the write count stays.
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_newest_bytes() {
        let mut ring = RingBuffer::new(5);
        ring.write(b"abc");
        assert_eq!(ring.contents(), b"abc");
        assert_eq!(ring.dropped(), 0);
        ring.write(b"defg");
        assert_eq!(ring.contents(), b"cdefg");
        assert_eq!(ring.dropped(), 2);
        ring.write(b"h");
        assert_eq!(ring.contents(), b"defgh");
        ring.write(b"0123456789");
        assert_eq!(ring.contents(), b"56789");
        assert_eq!(ring.total_written(), 18);
        assert_eq!(ring.dropped(), 13);
    }

    #[test]
    fn matches_a_naive_model_on_many_writes() {
        for capacity in [1usize, 2, 7, 64] {
            let mut ring = RingBuffer::new(capacity);
            let mut model: Vec<u8> = Vec::new();
            for i in 0..500u32 {
                let chunk: Vec<u8> = (0..(i * 7 % 23)).map(|j| (i + j) as u8).collect();
                ring.write(&chunk);
                model.extend_from_slice(&chunk);
                let keep = model.len().min(capacity);
                assert_eq!(
                    ring.contents(),
                    model[model.len() - keep..],
                    "capacity {capacity} step {i}"
                );
            }
        }
    }

    #[test]
    fn zero_capacity_counts_but_keeps_nothing() {
        let mut ring = RingBuffer::new(0);
        ring.write(b"hello");
        assert!(ring.is_empty());
        assert_eq!(ring.dropped(), 5);
    }

    #[test]
    fn since_reports_what_was_lost() {
        let mut ring = RingBuffer::new(4);
        ring.write(b"abcdef");
        assert_eq!(ring.since(0), (2, b"cdef".to_vec()));
        assert_eq!(ring.since(3), (0, b"def".to_vec()));
        assert_eq!(ring.since(6), (0, Vec::new()));
        assert_eq!(ring.since(60), (0, Vec::new()));
    }
}
