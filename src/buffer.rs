//! Connection buffers and the pool they come from, so that an idle connection owns none.

/// Buffers returned by connections, handed out again instead of allocating.
#[derive(Debug)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    /// Capacity given to a new buffer; larger buffers are not kept.
    buf_size: usize,
    max_free: usize,
}

impl BufPool {
    pub(crate) fn new(buf_size: usize, max_free: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            buf_size,
            max_free,
        }
    }

    /// An empty buffer with at least the pool's buffer size of capacity.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf_size))
    }

    /// Returns a buffer; it is kept if it is not oversized and the pool is not full.
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() >= self.buf_size
            && buf.capacity() <= 4 * self.buf_size
            && self.free.len() < self.max_free
        {
            buf.clear();
            self.free.push(buf);
        }
    }
}

/// Received bytes a connection must keep between reads: a partial frame or request head.
///
/// The bytes live in `data[start..end]`; `data` is fully initialised so that reads can go
/// straight into its tail without zeroing each time.
#[derive(Debug, Default)]
pub(crate) struct RxBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl RxBuf {
    /// Whether there are no kept bytes.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The kept bytes.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Makes room for `min_read` more bytes, or more towards `want` bytes in total (kept ones
    /// included), and returns the free tail to read into. Room grows at most twofold per call,
    /// so a frame that is announced but not sent costs only what actually arrived.
    pub(crate) fn spare(&mut self, want: usize, min_read: usize) -> &mut [u8] {
        let kept = self.end - self.start;
        let needed = want.min(2 * kept).max(kept + min_read);
        // A quarter of a read's room is enough: grow only when less is free.
        if self.data.len() - self.end < min_read / 4 && self.data.len() - self.start < needed {
            self.data.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = kept;
            if self.data.len() < needed {
                self.data.resize(needed, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Counts `n` bytes read into the tail given by [`spare`](Self::spare).
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Drops `n` bytes from the front; gives the buffer back to `pool` once nothing is kept.
    pub(crate) fn consume(&mut self, n: usize, pool: &mut BufPool) {
        self.start += n;
        if self.start == self.end {
            self.release(pool);
        }
    }

    /// Keeps `bytes` (the unprocessed rest of a read into the shared buffer).
    pub(crate) fn keep(&mut self, bytes: &[u8], pool: &mut BufPool) {
        debug_assert!(self.is_empty());
        if self.data.is_empty() {
            self.data = pool.take();
        }
        self.data.clear();
        self.data.extend_from_slice(bytes);
        let capacity = self.data.capacity();
        self.data.resize(capacity, 0);
        self.start = 0;
        self.end = bytes.len();
    }

    /// Gives the buffer back to `pool`.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        pool.give(std::mem::take(&mut self.data));
        self.start = 0;
        self.end = 0;
    }
}

/// Bytes queued for a connection, written from `pos` on.
#[derive(Debug, Default)]
pub(crate) struct TxBuf {
    data: Vec<u8>,
    pos: usize,
}

impl TxBuf {
    /// Bytes still to write.
    pub(crate) fn len(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The bytes still to write.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    /// The buffer to append frames to, taken from `pool` if the queue has none.
    pub(crate) fn vec(&mut self, pool: &mut BufPool) -> &mut Vec<u8> {
        if self.data.capacity() == 0 {
            self.data = pool.take();
        }
        &mut self.data
    }

    /// Counts `n` bytes as written; gives the buffer back to `pool` once all are.
    pub(crate) fn advance(&mut self, n: usize, pool: &mut BufPool) {
        self.pos += n;
        if self.pos == self.data.len() {
            self.release(pool);
        }
    }

    /// Gives the buffer back to `pool`, dropping anything unwritten.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        pool.give(std::mem::take(&mut self.data));
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_keeps_partial_bytes_and_releases_when_consumed() {
        let mut pool = BufPool::new(16, 4);
        let mut rx = RxBuf::default();
        rx.keep(b"abc", &mut pool);
        assert_eq!(rx.bytes_mut(), b"abc");
        let tail = rx.spare(40, 8);
        assert!(tail.len() >= 8);
        tail[..2].copy_from_slice(b"de");
        rx.filled(2);
        assert_eq!(rx.bytes_mut(), b"abcde");
        rx.consume(2, &mut pool);
        assert_eq!(rx.bytes_mut(), b"cde");
        rx.consume(3, &mut pool);
        assert!(rx.is_empty());
        assert_eq!(
            rx.data.capacity(),
            0,
            "an emptied buffer goes back to the pool"
        );
        assert_eq!(pool.free.len(), 1);
    }

    #[test]
    fn tx_releases_when_written() {
        let mut pool = BufPool::new(16, 4);
        let mut tx = TxBuf::default();
        tx.vec(&mut pool).extend_from_slice(b"hello");
        tx.advance(2, &mut pool);
        assert_eq!(tx.pending(), b"llo");
        tx.advance(3, &mut pool);
        assert_eq!(tx.len(), 0);
        assert_eq!(tx.data.capacity(), 0);
    }
}
