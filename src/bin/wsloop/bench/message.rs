//! What the load generator sends: every message is stamped with its connection (or publisher)
//! and sequence number and cut at a per-message offset out of a fixed pattern, so that a
//! wrong, reordered or corrupted echo is caught. Fan-out messages also carry their intended
//! send time, so that every subscriber can tell its delivery latency.

use std::time::{Duration, Instant};

/// Bytes of the stamp (connection and sequence number in base-16 letters).
pub const STAMP: usize = 16;
/// Bytes of a fan-out message's send time (nanoseconds since the run's base, in base-16
/// letters).
pub const TIME: usize = 16;
/// How many different cuts of the pattern messages are taken from.
pub const SHIFTS: usize = 61;
/// Sequence numbers take the stamp's low 40 bits; the connection the bits above.
const SEQ_BITS: u32 = 40;

/// The messages of a run: their size and the pattern they are cut from.
#[derive(Debug)]
pub struct Messages {
    /// Payload size.
    pub size: usize,
    /// Messages are cut from this at an offset below `SHIFTS`.
    pattern: Vec<u8>,
}

/// `v` as 16 base-16 digits written as the letters `a` to `p`, low nibble first: ASCII (so
/// text messages can carry it) and cheap, each half worked on as one word (it runs twice per
/// message).
fn digits(v: u64) -> [u8; 16] {
    /// Nibble i of `x` into byte i, plus `'a'`.
    fn spread(x: u32) -> [u8; 8] {
        let mut x = u64::from(x);
        x = (x | x << 16) & 0x0000_ffff_0000_ffff;
        x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
        x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
        (x + 0x6161_6161_6161_6161).to_le_bytes()
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&spread(v as u32));
    out[8..].copy_from_slice(&spread((v >> 32) as u32));
    out
}

/// The value of 16 digits written by [`digits`].
fn undigits(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &d) in digits.iter().enumerate().take(16) {
        let n = d.wrapping_sub(b'a');
        if n >= 16 {
            return None;
        }
        v |= u64::from(n) << (4 * i);
    }
    Some(v)
}

impl Messages {
    /// Messages of `size` bytes, text (ASCII words) or binary (random bytes).
    pub fn new(size: usize, binary: bool, seed: u64) -> Messages {
        let mut rng = seed | 1;
        let pattern = super::pattern::make_pattern(size + SHIFTS, binary, &mut rng);
        Messages { size, pattern }
    }

    fn shift(conn: usize, seq: u64) -> usize {
        (seq.wrapping_mul(7).wrapping_add(conn as u64) % SHIFTS as u64) as usize
    }

    fn stamp(conn: usize, seq: u64) -> [u8; STAMP] {
        digits(seq ^ ((conn as u64) << SEQ_BITS))
    }

    /// Message `seq` of connection `conn` from byte `from` on: its cut of the pattern.
    fn rest(&self, conn: usize, seq: u64, from: usize) -> &[u8] {
        let off = Self::shift(conn, seq);
        &self.pattern[off + from..off + self.size]
    }

    /// Appends message `seq` of connection `conn` to `out` (`size` bytes).
    #[inline]
    pub fn fill(&self, conn: usize, seq: u64, out: &mut Vec<u8>) {
        let stamp = Self::stamp(conn, seq);
        if self.size <= STAMP {
            out.extend_from_slice(&stamp[..self.size]);
        } else {
            out.extend_from_slice(&stamp);
            out.extend_from_slice(self.rest(conn, seq, STAMP));
        }
    }

    /// Whether `payload` is exactly message `seq` of connection `conn`.
    #[inline]
    pub fn verify(&self, conn: usize, seq: u64, payload: &[u8]) -> bool {
        if payload.len() != self.size {
            return false;
        }
        let stamp = Self::stamp(conn, seq);
        // A whole stamp compares as two words (a slice of any length calls memcmp).
        let k = match payload.first_chunk::<STAMP>() {
            Some(head) if *head != stamp => return false,
            Some(_) => STAMP,
            None if *payload != stamp[..self.size] => return false,
            None => self.size,
        };
        self.size == k || payload[k..] == *self.rest(conn, seq, k)
    }

    /// Appends fan-out message `seq` of publisher `publisher`, meant to be sent at `at`, to
    /// `out` (`size` is at least `STAMP + TIME`).
    pub fn fill_timed(&self, publisher: usize, seq: u64, at: Duration, out: &mut Vec<u8>) {
        out.extend_from_slice(&Self::stamp(publisher, seq));
        out.extend_from_slice(&digits(at.as_nanos() as u64));
        out.extend_from_slice(self.rest(publisher, seq, STAMP + TIME));
    }

    /// Reads a fan-out message: its publisher, sequence number and intended send time as an
    /// offset from the run's base; `None` if it is not one that was sent.
    pub fn read_timed(&self, payload: &[u8]) -> Option<(usize, u64, Duration)> {
        if payload.len() != self.size || self.size < STAMP + TIME {
            return None;
        }
        let v = undigits(&payload[..STAMP])?;
        let (publisher, seq) = ((v >> SEQ_BITS) as usize, v & ((1 << SEQ_BITS) - 1));
        let at = Duration::from_nanos(undigits(&payload[STAMP..STAMP + TIME])?);
        let rest = STAMP + TIME;
        (payload[..STAMP] == Self::stamp(publisher, seq)
            && payload[rest..] == *self.rest(publisher, seq, rest))
        .then_some((publisher, seq, at))
    }
}

/// The time since `base`, for [`Messages::fill_timed`].
pub fn since(base: Instant, at: Instant) -> Duration {
    at.saturating_duration_since(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_letters_low_nibble_first() {
        assert_eq!(&digits(0x0123_4567_89ab_cdef), b"ponmlkjihgfedcba");
        assert_eq!(&digits(0), b"aaaaaaaaaaaaaaaa");
        assert_eq!(&digits(u64::MAX), b"pppppppppppppppp");
        for v in [1, 0x9a, 0xa9, 1 << 63, 0xdead_beef, 0x8000_0001_0000_0000] {
            assert_eq!(undigits(&digits(v)), Some(v));
        }
        assert_eq!(undigits(b"aaaaaaaaaaaaaaaq"), None);
        assert_eq!(undigits(b"aaaaaaaaaaaaaaa0"), None);
    }

    #[test]
    fn stamped_messages_round_trip_and_catch_corruption() {
        for binary in [false, true] {
            let m = Messages::new(100, binary, 7);
            let mut buf = Vec::new();
            m.fill(3, 41, &mut buf);
            assert_eq!(buf.len(), 100);
            assert!(m.verify(3, 41, &buf));
            assert!(!m.verify(3, 42, &buf));
            assert!(!m.verify(4, 41, &buf));
            buf[60] ^= 1;
            assert!(!m.verify(3, 41, &buf));
            buf.clear();
            m.fill_timed(2, 9, Duration::from_nanos(123_456), &mut buf);
            assert_eq!(buf.len(), 100);
            assert_eq!(
                m.read_timed(&buf),
                Some((2, 9, Duration::from_nanos(123_456)))
            );
            buf[99] ^= 1;
            assert_eq!(m.read_timed(&buf), None);
        }
        // Shorter than the stamp: still verified byte for byte.
        let m = Messages::new(4, false, 1);
        let mut buf = Vec::new();
        m.fill(0, 0, &mut buf);
        assert!(m.verify(0, 0, &buf));
        assert!(!m.verify(0, 1, &buf));
    }
}
