//! A one-shot deflate encoder for short messages compressed on their own (no context takeover):
//! greedy LZ77 over a small hash table and one fixed-Huffman block (RFC 1951 3.2.6), ended with a
//! sync flush like zlib's. zlib-rs at level 1 writes the same kind of block, but its reset clears
//! a 128 KiB hash table and a 48 KiB symbol buffer, which for a 1 KiB message costs more than
//! compressing it; this encoder's table (8 KiB) lives on the stack, so it keeps no state.

/// Messages up to this long are deflated here (positions fit the table's `u16` entries).
pub(super) const MAX_LEN: usize = 16 << 10;
/// log2 of the hash table's entries.
const HASH_BITS: u32 = 12;
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;

/// Appends `input` (at most [`MAX_LEN`] bytes) compressed with back-references of at most
/// `2^window_bits` bytes: one fixed-Huffman block, then the header of an empty stored block,
/// padded to a byte (the sync flush without its `00 00 ff ff`). An empty message is `00`, as
/// zlib writes it.
pub(super) fn deflate(input: &[u8], window_bits: u8, out: &mut Vec<u8>) {
    debug_assert!(input.len() <= MAX_LEN);
    if input.is_empty() {
        out.push(0);
        return;
    }
    let max_dist = 1usize << window_bits.min(15);
    // Entries are a position + 1; 0 is empty.
    let mut head = [0u16; 1 << HASH_BITS];
    out.reserve(input.len() + input.len() / 8 + 8);
    let mut bits = Bits {
        out,
        acc: 0,
        len: 0,
    };
    bits.put(0b010, 3); // BFINAL 0, BTYPE 01 (fixed Huffman codes)
    let word =
        |at: usize| u32::from_le_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]);
    let mut pos = 0;
    while pos + MIN_MATCH <= input.len() {
        let next = word(pos);
        let slot = &mut head[(next.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize];
        let candidate = usize::from(*slot);
        *slot = (pos + 1) as u16;
        if candidate > 0 && pos + 1 - candidate <= max_dist && word(candidate - 1) == next {
            let from = candidate - 1;
            let len =
                MIN_MATCH + common_prefix(&input[from + MIN_MATCH..], &input[pos + MIN_MATCH..]);
            bits.length(len);
            bits.distance(pos - from);
            pos += len;
            continue;
        }
        bits.literal(input[pos]);
        pos += 1;
    }
    for &byte in &input[pos..] {
        bits.literal(byte);
    }
    bits.code(256); // end of block
    bits.put(0, 3); // BFINAL 0, BTYPE 00: the stored block the peer's 00 00 ff ff completes
    bits.finish();
}

/// How many leading bytes `a` and `b` share, at most [`MAX_MATCH`] - [`MIN_MATCH`].
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const MAX: usize = MAX_MATCH - MIN_MATCH;
    let (a, b) = (&a[..a.len().min(MAX)], &b[..b.len().min(MAX)]);
    let mut n = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let diff =
            u64::from_le_bytes(x.try_into().unwrap()) ^ u64::from_le_bytes(y.try_into().unwrap());
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + a[n..]
        .iter()
        .zip(&b[n..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// An LSB-first bit writer into a byte vector (RFC 1951 3.1.1).
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    len: u32,
}

impl Bits<'_> {
    /// Appends the low `len` (at most 32) bits of `value`.
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.len;
        self.len += len;
        if self.len >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.len -= 32;
        }
    }

    /// The fixed Huffman code of a literal/length symbol (0..=285).
    fn code(&mut self, symbol: usize) {
        let (code, len) = LITERAL_LENGTH[symbol];
        self.put(code.into(), len.into());
    }

    fn literal(&mut self, byte: u8) {
        self.code(byte.into());
    }

    /// A match length, 3..=258 (RFC 1951 3.2.5).
    fn length(&mut self, len: usize) {
        let l = len - 3;
        match l {
            0..=7 => self.code(257 + l),
            255 => self.code(285),
            _ => {
                let extra = l.ilog2() - 2;
                self.code(257 + 4 * (extra as usize + 1) + ((l >> extra) & 3));
                self.put((l & ((1 << extra) - 1)) as u32, extra);
            }
        }
    }

    /// A match distance, 1..=32768, with its fixed 5-bit code.
    fn distance(&mut self, dist: usize) {
        let d = (dist - 1) as u32;
        if d < 4 {
            self.put(reverse(d, 5), 5);
        } else {
            let extra = d.ilog2() - 1;
            let code = 2 * (extra + 1) + ((d >> extra) & 1);
            self.put(reverse(code, 5), 5);
            self.put(d & ((1 << extra) - 1), extra);
        }
    }

    /// Writes what is left, padded with zero bits to a whole byte.
    fn finish(self) {
        let bytes = self.len.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

/// The fixed literal/length codes (RFC 1951 3.2.6), bit-reversed for the LSB-first writer, with
/// their lengths.
const LITERAL_LENGTH: [(u16, u8); 288] = {
    let mut table = [(0, 0); 288];
    let mut symbol = 0;
    while symbol < 288 {
        let (first_code, first_symbol, len) = match symbol {
            0..=143 => (0x30, 0, 8),
            144..=255 => (0x190, 144, 9),
            256..=279 => (0, 256, 7),
            _ => (0xc0, 280, 8),
        };
        let code = first_code + (symbol - first_symbol) as u32;
        table[symbol] = (reverse(code, len) as u16, len as u8);
        symbol += 1;
    }
    table
};

/// The low `len` bits of `code`, in reverse order.
const fn reverse(code: u32, len: u32) -> u32 {
    code.reverse_bits() >> (32 - len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::deflate::{Inflater, Params};
    use crate::proto::Role;

    fn compressed(input: &[u8], bits: u8) -> Vec<u8> {
        let mut out = vec![0xaa]; // appends
        deflate(input, bits, &mut out);
        out.remove(0);
        out
    }

    fn inflated(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut inf = Inflater::new(Params::default(), Role::Client);
        inf.inflate(wire, true, &mut out, usize::MAX).unwrap();
        out
    }

    #[test]
    fn writes_what_zlib_writes_for_hello() {
        // RFC 7692 7.2.3.1 and 7.2.3.6.
        assert_eq!(
            compressed(b"Hello", 15),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
        assert_eq!(compressed(b"", 15), [0x00]);
    }

    #[test]
    fn round_trips_every_length_and_distance_code() {
        let mut seed = 1u64;
        let mut noise = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let mut inputs = vec![vec![0; 1], vec![7; MAX_LEN], b"abcabcabcabcab".to_vec()];
        // Repeats at every distance class up to 16 KiB and lengths 4..=258 and longer.
        for dist in [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 100, 257, 511, 512, 513, 1000, 4096, 8191,
        ] {
            for len in [
                4, 5, 10, 11, 18, 19, 34, 35, 66, 67, 130, 131, 257, 258, 259, 600,
            ] {
                let mut v = noise(dist.max(len));
                v.truncate(dist);
                let tail: Vec<u8> = v.iter().cycle().take(len).copied().collect();
                v.extend(tail);
                v.extend(noise(3));
                inputs.push(v);
            }
        }
        let words = b"the quick brown fox jumps over the lazy dog; ".repeat(400);
        inputs.push(words[..MAX_LEN].to_vec());
        inputs.push(noise(MAX_LEN));
        for input in &inputs {
            for bits in [9, 12, 15] {
                let wire = compressed(input, bits);
                assert!(inflated(&wire) == *input, "len {} bits {bits}", input.len());
                assert!(wire.len() <= input.len() + input.len() / 8 + 8);
            }
        }
        // Text shrinks as with zlib's level 1.
        assert!(compressed(&words[..1024], 15).len() < 300);
    }

    #[test]
    fn back_references_stay_within_the_window() {
        // Noise repeated at a distance of 600 bytes: matched with a 1 KiB window, not with 512.
        let mut v: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        v.extend_from_within(..);
        let (small, large) = (compressed(&v, 9), compressed(&v, 10));
        assert!(
            large.len() < 700 && small.len() > 1100,
            "{} {}",
            small.len(),
            large.len()
        );
        assert!(inflated(&small) == v && inflated(&large) == v);
    }
}
