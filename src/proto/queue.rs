//! A connection's write queue: nothing while it is empty, one buffer while it is small, a list
//! of buffers once it is large, so that a queue that keeps growing (a peer that does not read)
//! never has its bytes copied into a bigger buffer.

use std::collections::VecDeque;

use super::buffer::BufPool;

/// The most bytes a queue grows its one buffer to; past it, it adds buffers of this size
/// instead. Doubling one buffer all the way would copy everything queued at each step (8 MiB
/// at once on the way to a 16 MiB bound) while every other connection waits for the turn.
const CHUNK: usize = 256 * 1024;

/// Bytes queued for a connection, to be written in order: boxed, and only while there are
/// any, so that a connection with nothing queued (an idle one) holds one pointer here.
#[derive(Debug, Default)]
pub(crate) struct TxBuf(Option<Box<Queue>>);

/// The queued bytes.
#[derive(Debug)]
pub(crate) enum Queue {
    /// One buffer, written from `pos` on: the usual queue, and the empty one (no buffer).
    One { data: Vec<u8>, pos: usize },
    /// A queue that outgrew one [`CHUNK`]. Boxed, so that `Queue` is the size of `One` with
    /// its tag in the buffer's capacity, which every small send checks (unboxed: 1% more
    /// instructions per small echo).
    Chunked(Box<Chunks>),
}

/// A large queue's buffers.
#[derive(Debug)]
pub(crate) struct Chunks {
    /// In order; the first is written from `pos` on, bytes are added to the last.
    bufs: VecDeque<Vec<u8>>,
    pos: usize,
}

impl Chunks {
    /// Bytes still to write.
    #[inline(never)]
    fn len(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum::<usize>() - self.pos
    }

    /// Bytes of memory the buffers hold.
    #[inline(never)]
    fn capacity(&self) -> usize {
        self.bufs.iter().map(Vec::capacity).sum()
    }
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::One {
            data: Vec::new(),
            pos: 0,
        }
    }
}

impl Queue {
    /// Bytes still to write.
    #[inline]
    fn len(&self) -> usize {
        match self {
            Queue::One { data, pos } => data.len() - pos,
            Queue::Chunked(c) => c.len(),
        }
    }

    /// Bytes of memory the queue holds.
    #[inline]
    fn capacity(&self) -> usize {
        match self {
            Queue::One { data, .. } => data.capacity(),
            Queue::Chunked(c) => c.capacity(),
        }
    }

    /// The bytes to write next (all of them unless the queue is chunked).
    #[inline]
    fn pending(&self) -> &[u8] {
        match self {
            Queue::One { data, pos } => &data[*pos..],
            Queue::Chunked(c) => &c.bufs[0][c.pos..],
        }
    }

    /// The buffer to append at most `additional` more bytes to, taken from `pool` if the
    /// queue has none (so that a large send reuses a kept large buffer).
    ///
    /// Written bytes are dropped from the front once they are at least as many as the pending
    /// ones (so each byte is moved at most once per byte written), or when the new bytes would
    /// not fit otherwise: a queue that never drains completely (a slow but steady reader)
    /// holds about what is pending, not all it was ever sent. Past [`CHUNK`] bytes the queue
    /// adds buffers rather than moving its bytes to a bigger one.
    #[inline]
    fn vec(&mut self, additional: usize, pool: &mut BufPool) -> &mut Vec<u8> {
        let fits = matches!(self, Queue::One { data, pos: 0 }
            if data.capacity() - data.len() >= additional);
        if !fits {
            return self.make_room(additional, pool);
        }
        match self {
            Queue::One { data, .. } => data,
            Queue::Chunked(_) => unreachable!("a queue that fits is one buffer"),
        }
    }

    /// [`vec`](Self::vec) when the bytes do not simply go after the queued ones: takes a
    /// buffer for an empty queue, drops written bytes from the front, grows the buffer or
    /// moves to a kept large one, or adds a buffer.
    #[inline(never)]
    fn make_room(&mut self, additional: usize, pool: &mut BufPool) -> &mut Vec<u8> {
        match self {
            Queue::One { data, .. } if data.capacity() == 0 => {
                // An empty queue (its buffer went back when it drained): nothing to move.
                *data = pool.take(additional);
                data.clear();
            }
            Queue::One { data, pos } => {
                let pending = data.len() - *pos;
                let room = data.capacity() - data.len();
                if room < additional && pending + additional > CHUNK {
                    // Too large for one buffer: the bytes stay where they are.
                    let (first, pos) = (std::mem::take(data), *pos);
                    let mut bufs = VecDeque::with_capacity(4);
                    bufs.push_back(first);
                    *self = Queue::Chunked(Box::new(Chunks { bufs, pos }));
                    return self.make_room(additional, pool);
                }
                if *pos > 0 && (*pos >= pending || room < additional) {
                    data.copy_within(*pos.., 0);
                    data.truncate(pending);
                    *pos = 0;
                }
                let needed = data.len() + additional;
                if data.capacity() < needed {
                    if let Some(mut bigger) = pool.take_large(needed) {
                        bigger.clear();
                        bigger.extend_from_slice(data);
                        pool.give(std::mem::replace(data, bigger));
                    } else {
                        // Doubling (amortised), but not past a chunk or the queue's bound.
                        let capacity = (2 * data.capacity()).min(CHUNK).min(pool.max_queue);
                        data.reserve_exact(capacity.max(needed) - data.len());
                    }
                }
            }
            Queue::Chunked(c) => {
                let last = c.bufs.back().expect("a chunked queue has buffers");
                if last.capacity() - last.len() < additional {
                    // A chunk, or less if the queue's bound is nearer.
                    let bound = pool.max_queue.saturating_sub(c.len());
                    let mut buf = pool.take(additional.max(CHUNK.min(bound)));
                    buf.clear();
                    c.bufs.push_back(buf);
                }
            }
        }
        match self {
            Queue::One { data, .. } => data,
            Queue::Chunked(c) => c.bufs.back_mut().expect("a chunked queue has buffers"),
        }
    }

    /// Counts `n` bytes of [`pending`](Self::pending) as written; gives the buffers back to
    /// `pool` as they are.
    #[inline]
    fn advance(&mut self, n: usize, pool: &mut BufPool) -> bool {
        match self {
            Queue::One { data, pos } => {
                *pos += n;
                let written = *pos == data.len();
                if written {
                    pool.give(std::mem::take(data));
                    *pos = 0;
                }
                written
            }
            Queue::Chunked(_) => self.advance_chunked(n, pool),
        }
    }

    /// [`advance`](Self::advance) for a chunked queue: a written buffer goes back to `pool`,
    /// and the last one left is the queue's one buffer again.
    #[inline(never)]
    fn advance_chunked(&mut self, n: usize, pool: &mut BufPool) -> bool {
        let Queue::Chunked(c) = self else {
            return false;
        };
        c.pos += n;
        if c.pos < c.bufs[0].len() {
            return false;
        }
        pool.give(c.bufs.pop_front().expect("a chunked queue has buffers"));
        c.pos = 0;
        if c.bufs.len() == 1 {
            let data = c.bufs.pop_front().expect("one buffer left");
            *self = Queue::One { data, pos: 0 };
            return self.advance(0, pool);
        }
        false
    }

    /// Gives the buffers back to `pool`, dropping anything unwritten.
    fn release(&mut self, pool: &mut BufPool) {
        match std::mem::take(self) {
            Queue::One { data, .. } => pool.give(data),
            Queue::Chunked(c) => c.bufs.into_iter().for_each(|buf| pool.give(buf)),
        }
    }
}

impl TxBuf {
    /// Bytes still to write.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    /// Bytes of memory the queue holds.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.capacity())
    }

    /// The bytes to write next (all of them unless the queue is chunked).
    #[inline]
    pub(crate) fn pending(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |q| q.pending())
    }

    /// The buffer to append at most `additional` more bytes to (see [`Queue::vec`]).
    #[inline]
    pub(crate) fn vec(&mut self, additional: usize, pool: &mut BufPool) -> &mut Vec<u8> {
        self.0
            .get_or_insert_with(|| pool.take_queue())
            .vec(additional, pool)
    }

    /// Queues `bytes` as the whole queue, in place of an empty one.
    pub(crate) fn adopt(&mut self, bytes: Vec<u8>, pool: &mut BufPool) {
        debug_assert_eq!(self.len(), 0);
        self.release(pool);
        let mut queue = pool.take_queue();
        *queue = Queue::One {
            data: bytes,
            pos: 0,
        };
        self.0 = Some(queue);
    }

    /// Counts `n` bytes of [`pending`](Self::pending) as written; gives the buffers back to
    /// `pool` as they are, and the box once all are.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize, pool: &mut BufPool) {
        if self.0.as_mut().is_some_and(|q| q.advance(n, pool)) {
            pool.keep_queue(self.0.take());
        }
    }

    /// Gives the buffers back to `pool`, dropping anything unwritten.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        if let Some(q) = &mut self.0 {
            q.release(pool);
            pool.keep_queue(self.0.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_queue_is_one_pointer() {
        assert_eq!(std::mem::size_of::<TxBuf>(), 8);
    }

    #[test]
    fn tx_that_never_drains_stays_near_what_is_pending() {
        let mut pool = BufPool::new(16, 4, 0);
        let mut tx = TxBuf::default();
        let mut expected = std::collections::VecDeque::new();
        // About 100 bytes pending at all times, 100,000 sent: the buffer follows the 100.
        for i in 0..10_000u32 {
            let bytes: Vec<u8> = (0..10).map(|j| (i * 10 + j) as u8).collect();
            tx.vec(10, &mut pool).extend_from_slice(&bytes);
            expected.extend(bytes);
            if tx.len() > 100 {
                tx.advance(13, &mut pool);
                expected.drain(..13);
            }
            assert!(tx.capacity() <= 512, "{}", tx.capacity());
        }
        assert_eq!(tx.pending(), expected.make_contiguous());
    }

    #[test]
    fn a_growing_queue_stays_within_its_bound() {
        let mut pool = BufPool::new(16, 4, 0).with_max_queue(1000);
        let mut tx = TxBuf::default();
        for _ in 0..10 {
            tx.vec(90, &mut pool).extend_from_slice(&[7; 90]);
            assert!(tx.capacity() <= 1000, "capacity {}", tx.capacity());
        }
        assert_eq!(tx.len(), 900);
    }

    #[test]
    fn tx_releases_when_written() {
        let mut pool = BufPool::new(16, 4, 0);
        let mut tx = TxBuf::default();
        tx.vec(5, &mut pool).extend_from_slice(b"hello");
        tx.advance(2, &mut pool);
        assert_eq!(tx.pending(), b"llo");
        tx.advance(3, &mut pool);
        assert_eq!(tx.len(), 0);
        assert_eq!(tx.capacity(), 0);
    }

    /// Writes all of `tx` in pieces of at most `step` bytes, as a socket would take them.
    fn drain(tx: &mut TxBuf, pool: &mut BufPool, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while tx.len() > 0 {
            let n = tx.pending().len().min(step);
            out.extend_from_slice(&tx.pending()[..n]);
            tx.advance(n, pool);
        }
        out
    }

    #[test]
    fn a_large_queue_grows_by_whole_chunks_without_moving_its_bytes() {
        let mut pool = BufPool::new(16, 4, 0);
        let mut tx = TxBuf::default();
        let mut expected = Vec::new();
        let mut first = None;
        for i in 0..40u32 {
            let frame = vec![i as u8; 65_000 + i as usize];
            tx.vec(frame.len(), &mut pool).extend_from_slice(&frame);
            expected.extend_from_slice(&frame);
            assert!(tx.capacity() <= tx.len() + CHUNK, "{}", tx.capacity());
            if let Some(Queue::Chunked(c)) = tx.0.as_deref() {
                // Once chunked, the oldest bytes stay where they are.
                let front = c.bufs[0].as_ptr();
                assert_eq!(*first.get_or_insert(front), front);
            }
        }
        assert!(first.is_some(), "40 frames of 65 kB outgrow one chunk");
        assert_eq!(tx.len(), expected.len());
        assert_eq!(drain(&mut tx, &mut pool, 100_000), expected);
        assert!(tx.0.is_none(), "a written queue gives its box back too");
    }

    #[test]
    fn a_chunked_queue_written_in_odd_pieces_keeps_the_order() {
        let mut pool = BufPool::new(16, 4, 1 << 20);
        let mut tx = TxBuf::default();
        let mut expected = Vec::new();
        let mut out = Vec::new();
        for i in 0..300u32 {
            let frame: Vec<u8> = (0..(i * 7919 % 20_000)).map(|j| (i + j) as u8).collect();
            tx.vec(frame.len(), &mut pool).extend_from_slice(&frame);
            expected.extend_from_slice(&frame);
            // Written more slowly than it is queued, so it goes on growing past a chunk.
            for _ in 0..2 {
                let n = tx.pending().len().min(3_001);
                out.extend_from_slice(&tx.pending()[..n]);
                tx.advance(n, &mut pool);
            }
        }
        assert!(tx.len() > CHUNK);
        out.extend(drain(&mut tx, &mut pool, 7_777));
        assert_eq!(out, expected);
    }

    #[test]
    fn a_big_send_behind_a_small_queue_gets_its_own_buffer() {
        let mut pool = BufPool::new(16, 4, 0);
        let mut tx = TxBuf::default();
        tx.vec(3, &mut pool).extend_from_slice(b"abc");
        let small = tx.pending().as_ptr();
        tx.vec(CHUNK + 1, &mut pool)
            .extend_from_slice(&[9; CHUNK + 1]);
        assert_eq!(
            tx.pending().as_ptr(),
            small,
            "the queued bytes were not moved"
        );
        assert_eq!(tx.len(), CHUNK + 4);
        let out = drain(&mut tx, &mut pool, usize::MAX);
        assert_eq!(&out[..3], b"abc");
        assert!(out[3..].iter().all(|&b| b == 9));
    }
}
