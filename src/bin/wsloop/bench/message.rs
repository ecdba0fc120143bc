//! What the load generator sends: every message is stamped with its connection (or publisher)
//! and sequence number and cut at a per-message offset out of a fixed pattern, so that a
//! wrong, reordered or corrupted echo is caught. Fan-out messages also carry their intended
//! send time, so that every subscriber can tell its delivery latency.

use std::time::{Duration, Instant};

/// Bytes of the stamp (connection and sequence number in hex).
pub const STAMP: usize = 16;
/// Bytes of a fan-out message's send time (nanoseconds since the run's base, in hex).
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

/// `v` as 16 hex digits, low nibble first (computed on all 16 at once: it runs twice per
/// message).
fn hex(v: u64) -> [u8; 16] {
    /// `b` in every byte.
    const fn bytes(b: u8) -> u128 {
        u128::from_le_bytes([b; 16])
    }
    // Nibble i of `v` into byte i: halves, quarters, ... apart.
    let mut x = u128::from(v);
    x = (x | x << 32) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | x << 16) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | x << 4) & bytes(0x0f);
    // Bytes of 10 or more get `'a' - 10` instead of `'0'` added (39 more).
    let letters = ((x + bytes(6)) >> 4) & bytes(1);
    (x + bytes(b'0') + letters * 39).to_le_bytes()
}

/// The value of 16 hex digits written by [`hex`].
fn unhex(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &d) in digits.iter().enumerate().take(16) {
        let n = (d as char).to_digit(16)?;
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
        hex(seq ^ ((conn as u64) << SEQ_BITS))
    }

    /// Message `seq` of connection `conn` from byte `from` on: its cut of the pattern.
    fn rest(&self, conn: usize, seq: u64, from: usize) -> &[u8] {
        let off = Self::shift(conn, seq);
        &self.pattern[off + from..off + self.size]
    }

    /// Appends message `seq` of connection `conn` to `out` (`size` bytes).
    pub fn fill(&self, conn: usize, seq: u64, out: &mut Vec<u8>) {
        let k = self.size.min(STAMP);
        out.extend_from_slice(&Self::stamp(conn, seq)[..k]);
        out.extend_from_slice(self.rest(conn, seq, k));
    }

    /// Whether `payload` is exactly message `seq` of connection `conn`.
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
        out.extend_from_slice(&hex(at.as_nanos() as u64));
        out.extend_from_slice(self.rest(publisher, seq, STAMP + TIME));
    }

    /// Reads a fan-out message: its publisher, sequence number and intended send time as an
    /// offset from the run's base; `None` if it is not one that was sent.
    pub fn read_timed(&self, payload: &[u8]) -> Option<(usize, u64, Duration)> {
        if payload.len() != self.size || self.size < STAMP + TIME {
            return None;
        }
        let v = unhex(&payload[..STAMP])?;
        let (publisher, seq) = ((v >> SEQ_BITS) as usize, v & ((1 << SEQ_BITS) - 1));
        let at = Duration::from_nanos(unhex(&payload[STAMP..STAMP + TIME])?);
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
    fn hex_digits_low_nibble_first() {
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"fedcba9876543210");
        assert_eq!(&hex(0), b"0000000000000000");
        assert_eq!(&hex(u64::MAX), b"ffffffffffffffff");
        for v in [1, 0x9a, 0xa9, 1 << 63, 0xdead_beef] {
            assert_eq!(unhex(&hex(v)), Some(v));
        }
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
