//! Connection buffers and the pool they come from, so that an idle connection owns none.

use super::queue::Queue;

/// Buffers returned by connections, handed out again instead of allocating.
///
/// Two kinds are kept: small ones (the pool's buffer size, up to four times it) for partial
/// frames and ordinary write queues, and large ones, grown for big messages, up to a byte
/// budget. Reusing a large buffer saves what makes big messages slow: growing a fresh one,
/// zero-filling it and faulting its pages in, then giving it back to the kernel.
///
/// A returned buffer keeps its length: its bytes up to there are initialised, so a read buffer
/// made from it needs no zero-filling again.
#[derive(Debug)]
pub(crate) struct BufPool {
    small: Vec<Vec<u8>>,
    /// Empty write queues' boxes, so that a queue that fills and drains every turn does not
    /// allocate its box each time (the boxes are what is kept, hence a vector of them).
    #[allow(clippy::vec_box)]
    queues: Vec<Box<Queue>>,
    large: Vec<Vec<u8>>,
    /// Capacity given to a new small buffer.
    buf_size: usize,
    /// Most small buffers kept.
    max_small: usize,
    /// Most bytes of capacity kept in large buffers.
    large_budget: usize,
    /// Bytes of capacity kept in large buffers now.
    large_bytes: usize,
    /// Most bytes a write queue may hold: it grows its buffers up to this, not past it, so
    /// that the memory a queue holds stays within its bound.
    pub(crate) max_queue: usize,
}

impl BufPool {
    /// An empty pool handing out small buffers of `buf_size` bytes, keeping at most
    /// `max_small` of them and `large_budget` bytes of large ones.
    pub(crate) fn new(buf_size: usize, max_small: usize, large_budget: usize) -> BufPool {
        BufPool {
            small: Vec::new(),
            queues: Vec::new(),
            large: Vec::new(),
            buf_size,
            max_small,
            large_budget,
            large_bytes: 0,
            max_queue: usize::MAX,
        }
    }

    /// The pool, with write queues grown to at most `max_queue` bytes of capacity (unless a
    /// single send needs more).
    pub(crate) fn with_max_queue(mut self, max_queue: usize) -> BufPool {
        self.max_queue = max_queue;
        self
    }

    /// A buffer with at least `min_capacity` bytes of capacity: a kept one if one fits, else
    /// a new one. Its length is whatever it had: callers clear it or fill it to its capacity.
    #[inline]
    pub(crate) fn take(&mut self, min_capacity: usize) -> Vec<u8> {
        if min_capacity <= self.buf_size {
            self.small
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(self.buf_size))
        } else {
            self.take_large(min_capacity)
                .unwrap_or_else(|| Vec::with_capacity(min_capacity))
        }
    }

    /// A buffer of at least `min_len` initialised bytes (its length): a kept one if one fits,
    /// else a new one that the allocator zeroes (a large one in pages that cost no memory
    /// until they are written).
    pub(crate) fn take_filled(&mut self, min_len: usize) -> Vec<u8> {
        let kept = if min_len <= self.buf_size {
            self.small.pop()
        } else {
            self.take_large(min_len)
        };
        let mut buf = kept.unwrap_or_else(|| vec![0; min_len.max(self.buf_size)]);
        fill_to_capacity(&mut buf);
        buf
    }

    /// The smallest kept large buffer with at least `min_capacity` bytes of capacity.
    pub(crate) fn take_large(&mut self, min_capacity: usize) -> Option<Vec<u8>> {
        let (i, _) = (self.large.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= min_capacity)
            .min_by_key(|(_, b)| b.capacity())?;
        let buf = self.large.swap_remove(i);
        self.large_bytes -= buf.capacity();
        Some(buf)
    }

    /// An empty write queue's box: a kept one, else a new one.
    #[inline]
    pub(crate) fn take_queue(&mut self) -> Box<Queue> {
        self.queues.pop().unwrap_or_default()
    }

    /// Keeps an emptied write queue's box, as many as small buffers are kept.
    #[inline]
    pub(crate) fn keep_queue(&mut self, queue: Option<Box<Queue>>) {
        if self.queues.len() < self.max_small {
            self.queues.extend(queue);
        }
    }

    /// Returns a buffer to be kept if its kind has room. Large ones over the budget push out
    /// the smallest kept ones (grown buffers are worth more the larger they are).
    #[inline]
    pub(crate) fn give(&mut self, buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity < self.buf_size {
            return;
        }
        if capacity <= 4 * self.buf_size {
            if self.small.len() < self.max_small {
                self.small.push(buf);
            }
            return;
        }
        if capacity > self.large_budget {
            return;
        }
        self.large_bytes += capacity;
        self.large.push(buf);
        while self.large_bytes > self.large_budget {
            let (i, _) = (self.large.iter().enumerate())
                .min_by_key(|(_, b)| b.capacity())
                .expect("over budget, so not empty");
            self.large_bytes -= self.large.swap_remove(i).capacity();
        }
    }
}

/// A kept frame's buffer grows to hold the whole frame at once when the frame is at most this
/// many times the bytes kept (so that its bytes are read in place, not moved again), and
/// doubles otherwise: a frame that is announced but not sent costs at most this multiple of
/// what actually arrived.
const WHOLE_FRAME_GROWTH: usize = 32;

/// Received bytes a connection must keep between reads: a partial frame or request head.
///
/// Boxed, and only while there are any: a connection with nothing kept (an idle one, and most
/// between reads) holds one pointer here.
#[derive(Debug, Default)]
pub(crate) struct RxBuf(Option<Box<Kept>>);

/// The kept bytes: `data[..len]`, always at the front (what is consumed moves the rest down:
/// at most a partial frame per read); `data` is fully initialised so that reads can go
/// straight into its tail without zeroing each time.
#[derive(Debug, Default)]
struct Kept {
    data: Box<[u8]>,
    len: usize,
}

impl RxBuf {
    /// Whether there are no kept bytes.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the buffer holds.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |k| k.data.len())
    }

    /// How many bytes are kept.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |k| k.len)
    }

    /// The free tail after the kept bytes, as [`spare`](Self::spare) last made it.
    pub(crate) fn spare_tail(&mut self) -> &mut [u8] {
        self.0.as_mut().map_or(&mut [], |k| &mut k.data[k.len..])
    }

    /// The kept bytes.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_mut().map_or(&mut [], |k| &mut k.data[..k.len])
    }

    /// Makes room for `min_read` more bytes, or more towards `want` bytes in total (kept ones
    /// included; `usize::MAX` if unknown), and returns the free tail to read into. A new
    /// buffer holds the whole frame if it is at most [`WHOLE_FRAME_GROWTH`] times what is
    /// kept, else twice what is kept; a larger buffer from `pool` is used whole, since it is
    /// already paid for.
    pub(crate) fn spare(&mut self, want: usize, min_read: usize, pool: &mut BufPool) -> &mut [u8] {
        let k = self.kept();
        let needed = grown(k.len, want).max(k.len + min_read);
        // A quarter of a read's room is enough: grow only when less is free.
        if k.data.len() - k.len < min_read / 4 && k.data.len() < needed {
            k.regrow(needed, want, pool);
        }
        &mut k.data[k.len..]
    }

    /// Appends `bytes` after the kept ones.
    pub(crate) fn append(&mut self, bytes: &[u8], pool: &mut BufPool) {
        let k = self.kept();
        let needed = k.len + bytes.len();
        if k.data.len() < needed {
            k.regrow(needed, needed, pool);
        }
        k.data[k.len..needed].copy_from_slice(bytes);
        k.len = needed;
    }

    /// Counts `n` bytes read into the tail given by [`spare`](Self::spare).
    pub(crate) fn filled(&mut self, n: usize) {
        if let Some(k) = &mut self.0 {
            k.len += n;
        }
    }

    /// Drops `n` bytes from the front; gives the buffer back to `pool` once nothing is kept.
    pub(crate) fn consume(&mut self, n: usize, pool: &mut BufPool) {
        match &mut self.0 {
            Some(k) if n < k.len => {
                if n > 0 {
                    k.data.copy_within(n..k.len, 0);
                    k.len -= n;
                }
            }
            _ => self.release(pool),
        }
    }

    /// Keeps `bytes` (the unprocessed rest of a read into the shared buffer), the start of a
    /// frame or head of `want` bytes in all if known (else 0), in a buffer sized as
    /// [`spare`](Self::spare) sizes one.
    pub(crate) fn keep(&mut self, bytes: &[u8], want: usize, pool: &mut BufPool) {
        debug_assert!(self.is_empty());
        let k = self.kept();
        let needed = grown(bytes.len(), want).max(bytes.len());
        if k.data.len() < needed {
            k.regrow(needed, want, pool);
        }
        k.data[..bytes.len()].copy_from_slice(bytes);
        k.len = bytes.len();
    }

    /// Gives the buffer back to `pool`.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        if let Some(k) = self.0.take() {
            pool.give(k.data.into_vec());
        }
    }

    /// The kept bytes' box, made if there is none.
    fn kept(&mut self) -> &mut Kept {
        self.0.get_or_insert_with(Box::default)
    }
}

impl Kept {
    /// Moves the kept bytes to a buffer from `pool` of at least `needed` bytes, or of `want`
    /// bytes if a kept large one fits that, and gives the old one back.
    fn regrow(&mut self, needed: usize, want: usize, pool: &mut BufPool) {
        let fits_want = if want > needed {
            pool.take_large(want)
        } else {
            None
        };
        let mut bigger = fits_want.unwrap_or_else(|| pool.take_filled(needed));
        bigger[..self.len].copy_from_slice(&self.data[..self.len]);
        let old = std::mem::replace(&mut self.data, bigger.into_boxed_slice());
        pool.give(old.into_vec());
    }
}

/// The size a buffer holding `len` bytes of a frame of `want` bytes grows to: the whole frame
/// if it is at most [`WHOLE_FRAME_GROWTH`] times `len`, else twice `len`.
fn grown(len: usize, want: usize) -> usize {
    if want / WHOLE_FRAME_GROWTH <= len {
        want
    } else {
        2 * len
    }
}

/// Makes all of `buf`'s capacity initialised, zero-filling only what never was.
fn fill_to_capacity(buf: &mut Vec<u8>) {
    let capacity = buf.capacity();
    buf.resize(capacity, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_keeps_partial_bytes_and_releases_when_consumed() {
        let mut pool = BufPool::new(16, 4, 0);
        let mut rx = RxBuf::default();
        rx.keep(b"abc", 0, &mut pool);
        assert_eq!(rx.bytes_mut(), b"abc");
        let tail = rx.spare(40, 8, &mut pool);
        assert!(tail.len() >= 8);
        tail[..2].copy_from_slice(b"de");
        rx.filled(2);
        assert_eq!(rx.bytes_mut(), b"abcde");
        rx.consume(2, &mut pool);
        assert_eq!(rx.bytes_mut(), b"cde");
        rx.consume(3, &mut pool);
        assert!(rx.is_empty());
        assert_eq!(rx.capacity(), 0, "an emptied buffer goes back to the pool");
        assert_eq!(pool.small.len(), 1);
    }

    #[test]
    fn large_buffers_are_kept_within_the_budget_and_reused() {
        let mut pool = BufPool::new(16, 4, 1000);
        pool.give(Vec::with_capacity(100));
        pool.give(Vec::with_capacity(300));
        pool.give(Vec::with_capacity(500));
        assert_eq!(pool.large_bytes, 900);
        // Over the budget: the smallest kept ones go first.
        pool.give(Vec::with_capacity(400));
        assert_eq!(pool.large_bytes, 900);
        assert!(pool.large.iter().all(|b| b.capacity() != 100));
        pool.give(Vec::with_capacity(2000)); // larger than the whole budget: not kept
        assert_eq!(pool.large_bytes, 900);
        // The smallest that fits.
        assert_eq!(pool.take_large(350).map(|b| b.capacity()), Some(400));
        assert_eq!(pool.take_large(600).map(|b| b.capacity()), None);
        assert_eq!(pool.large_bytes, 500);
    }

    #[test]
    fn rx_grows_into_a_kept_buffer_that_fits_the_frame() {
        let mut pool = BufPool::new(16, 4, 1 << 20);
        let mut big = vec![7u8; 4096];
        big.shrink_to_fit();
        pool.give(big);
        let mut rx = RxBuf::default();
        // A 2000-byte frame announced, 10 bytes of it here: the kept 4 KiB buffer is used
        // whole, with no growth step in between.
        rx.keep(&[1; 10], 2000, &mut pool);
        assert_eq!(rx.capacity(), 4096);
        assert_eq!(pool.large_bytes, 0);
        let tail = rx.spare(2000, 8, &mut pool);
        assert_eq!(tail.len(), 4086);
        rx.filled(1990);
        rx.consume(2000, &mut pool);
        assert_eq!(pool.large_bytes, 4096, "back in the pool once consumed");
        // Without a kept buffer, a frame far larger than what arrived (a 1 MiB frame
        // announced, 10 bytes sent) makes the buffer grow at most twofold per read.
        let mut pool = BufPool::new(16, 4, 0);
        let mut rx = RxBuf::default();
        rx.keep(&[1; 10], 1 << 20, &mut pool);
        let room = rx.spare(1 << 20, 8, &mut pool).len();
        assert!(room <= 16, "{room}");
    }

    #[test]
    fn rx_holds_a_frame_whole_once_a_thirty_second_of_it_came() {
        // A 1 MiB frame whose first 64 KiB came in one read (its header and 14 bytes more
        // than a power of two): one buffer of its size, its other bytes read in place.
        let frame = (1 << 20) + 14;
        let mut pool = BufPool::new(16, 4, 0);
        let mut rx = RxBuf::default();
        rx.keep(&[1; 64 * 1024], frame, &mut pool);
        assert_eq!(rx.capacity(), frame);
        while rx.len() < frame {
            let tail = rx.spare(frame, 16, &mut pool);
            let n = tail.len().min(60_000);
            tail[..n].fill(2);
            rx.filled(n);
        }
        assert_eq!(rx.capacity(), frame, "never regrown, so never moved");
        assert_eq!(rx.bytes_mut()[64 * 1024 - 1..][..2], [1, 2]);
        // Under a thirty-second: doubling, so a frame announced but not sent costs at most
        // twice, then 32 times what came.
        let mut rx = RxBuf::default();
        rx.keep(&[1; 1000], 33 * 1000, &mut pool);
        assert_eq!(rx.capacity(), 2000);
        rx.spare(33 * 1000, 16, &mut pool).fill(1);
        rx.filled(1000);
        rx.spare(33 * 1000, 16, &mut pool);
        assert_eq!(rx.capacity(), 33 * 1000);
    }
}
