//! The check that a peer keeps to the LZ77 window agreed for its direction (RFC 7692 7.1.2.1,
//! 7.1.2.2). zlib-rs inflates with a 32 KiB window whatever the window bits and checks a distance
//! only against what it has inflated, so when fewer than 15 bits were agreed the compressed
//! bytes also go through this scanner: it decodes the block structure and the Huffman codes, not
//! the data, and refuses a back-reference farther than the window. It resumes where a frame ended
//! by keeping the bytes of the unfinished item (a block header or one symbol, a few hundred bytes
//! at most).

use std::sync::OnceLock;

/// Scans one direction's deflate stream for distances beyond the window.
#[derive(Debug)]
pub(super) struct WindowCheck {
    max_dist: usize,
    /// Bytes from the start of the unfinished item on (a few hundred at most).
    pending: Vec<u8>,
    /// Bits of `pending[0]` already scanned.
    skip: usize,
    block: Block,
}

#[derive(Debug)]
enum Block {
    Header,
    /// Inside a stored block with this many bytes left; `true` for the final block.
    Stored(usize, bool),
    /// Inside a Huffman-coded block: its literal/length and distance codes (`None`: the fixed
    /// ones); `true` for the final block.
    Coded(Option<Box<(Huffman, Huffman)>>, bool),
    /// After the final block, or after an error: nothing more is scanned.
    Done,
}

/// Why a scan stopped.
enum Stop {
    /// The input ended inside an item.
    More,
    /// A distance beyond the window, or data that is not deflate.
    Bad,
}

impl WindowCheck {
    /// A check for back-references of at most `2^bits` bytes.
    pub(super) fn new(bits: u8) -> Self {
        Self {
            max_dist: 1 << bits,
            pending: Vec::new(),
            skip: 0,
            block: Block::Header,
        }
    }

    /// Scans the next bytes of the stream; `false` once it has a distance beyond the window or
    /// data that is not deflate.
    pub(super) fn scan(&mut self, input: &[u8]) -> bool {
        if matches!(self.block, Block::Done) {
            return true;
        }
        // Only the unfinished item is copied between calls (and joined with the next input).
        let joined;
        let data = if self.pending.is_empty() {
            input
        } else {
            self.pending.extend_from_slice(input);
            joined = std::mem::take(&mut self.pending);
            &joined[..]
        };
        let mut r = Reader {
            data,
            pos: self.skip,
        };
        let mut done = r.pos;
        let stop = loop {
            match self.step(&mut r) {
                Ok(()) => done = r.pos,
                Err(stop) => break stop,
            }
            if matches!(self.block, Block::Done) {
                break Stop::More;
            }
        };
        if let Stop::Bad = stop {
            self.block = Block::Done;
            return false;
        }
        (self.pending, self.skip) = (data[done / 8..].to_vec(), done % 8);
        true
    }

    /// Scans one item: a block header, a run of stored bytes, or one Huffman symbol.
    fn step(&mut self, r: &mut Reader<'_>) -> Result<(), Stop> {
        match &mut self.block {
            Block::Header => {
                let last = r.bits(1)? == 1;
                self.block = match r.bits(2)? {
                    0 => {
                        r.pos = r.pos.next_multiple_of(8);
                        let (len, nlen) = (r.bits(16)?, r.bits(16)?);
                        if len != !nlen & 0xffff {
                            return Err(Stop::Bad);
                        }
                        Block::Stored(len as usize, last)
                    }
                    1 => Block::Coded(None, last),
                    2 => Block::Coded(Some(Box::new(dynamic_codes(r)?)), last),
                    _ => return Err(Stop::Bad),
                };
            }
            Block::Stored(left, last) => {
                let have = (r.data.len() - r.pos / 8).min(*left);
                if have == 0 && *left > 0 {
                    return Err(Stop::More);
                }
                (r.pos, *left) = (r.pos + 8 * have, *left - have);
                if *left == 0 {
                    self.block = end_of_block(*last);
                }
            }
            Block::Coded(codes, last) => {
                let (lengths, distances) = codes.as_deref().unwrap_or_else(|| fixed_codes());
                match lengths.decode(r)? {
                    0..=255 => {}
                    256 => self.block = end_of_block(*last),
                    symbol @ 257..=285 => {
                        let i = symbol as u32 - 257;
                        r.bits(if (8..28).contains(&i) { i / 4 - 1 } else { 0 })?;
                        let code = distances.decode(r)? as u32;
                        if code >= 30 {
                            return Err(Stop::Bad);
                        }
                        let dist = if code < 4 {
                            code as usize + 1
                        } else {
                            let extra = code / 2 - 1;
                            ((2 + (code & 1) as usize) << extra) + 1 + r.bits(extra)? as usize
                        };
                        if dist > self.max_dist {
                            return Err(Stop::Bad);
                        }
                    }
                    _ => return Err(Stop::Bad),
                }
            }
            Block::Done => {}
        }
        Ok(())
    }
}

fn end_of_block(last: bool) -> Block {
    if last {
        Block::Done
    } else {
        Block::Header
    }
}

/// RFC 1951 3.2.6, made once.
fn fixed_codes() -> &'static (Huffman, Huffman) {
    static FIXED: OnceLock<(Huffman, Huffman)> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut lengths = [8; 288];
        lengths[144..256].fill(9);
        lengths[256..280].fill(7);
        (Huffman::new(&lengths), Huffman::new(&[5; 30]))
    })
}

/// RFC 1951 3.2.7: the code lengths of a dynamic block's codes, themselves Huffman-coded.
fn dynamic_codes(r: &mut Reader<'_>) -> Result<(Huffman, Huffman), Stop> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let literals = r.bits(5)? as usize + 257;
    let distances = r.bits(5)? as usize + 1;
    let code_lengths = r.bits(4)? as usize + 4;
    if literals > 286 || distances > 30 {
        return Err(Stop::Bad);
    }
    let mut lengths = [0u8; 19];
    for &i in &ORDER[..code_lengths] {
        lengths[i] = r.bits(3)? as u8;
    }
    let code = Huffman::new(&lengths);
    let mut lengths = [0u8; 286 + 30];
    let mut n = 0;
    while n < literals + distances {
        let (len, repeat) = match code.decode(r)? {
            len @ 0..=15 => (len as u8, 1),
            16 if n > 0 => (lengths[n - 1], 3 + r.bits(2)?),
            17 => (0, 3 + r.bits(3)?),
            18 => (0, 11 + r.bits(7)?),
            _ => return Err(Stop::Bad),
        };
        let end = n + repeat as usize;
        if end > literals + distances {
            return Err(Stop::Bad);
        }
        lengths[n..end].fill(len);
        n = end;
    }
    let (lit, dist) = lengths[..n].split_at(literals);
    Ok((Huffman::new(lit), Huffman::new(dist)))
}

/// Codes up to this long are decoded with one table lookup.
const FAST_BITS: u32 = 8;

/// A canonical Huffman code (RFC 1951 3.2.2).
#[derive(Debug)]
struct Huffman {
    /// By the next [`FAST_BITS`] of input: symbol << 4 | code length, or 0 for a longer code.
    fast: Vec<u16>,
    /// How many codes have each length, 0..=15.
    count: [u16; 16],
    /// The symbols, by code.
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Huffman {
        let mut count = [0u16; 16];
        for &len in lengths {
            count[usize::from(len)] += 1;
        }
        count[0] = 0;
        let mut symbols: Vec<u16> = (0..lengths.len() as u16)
            .filter(|&s| lengths[usize::from(s)] > 0)
            .collect();
        symbols.sort_by_key(|&s| lengths[usize::from(s)]);
        // The first code of each length; codes are sent from their most significant bit.
        let mut next = [0u32; 16];
        for len in 1..16 {
            next[len] = (next[len - 1] + u32::from(count[len - 1])) << 1;
        }
        let mut fast = vec![0u16; 1 << FAST_BITS];
        for &symbol in &symbols {
            let len = u32::from(lengths[usize::from(symbol)]);
            let code = next[len as usize];
            next[len as usize] += 1;
            if len <= FAST_BITS && code < 1 << len {
                let reversed = (code.reverse_bits() >> (32 - len)) as usize;
                for entry in fast.iter_mut().skip(reversed).step_by(1 << len) {
                    *entry = symbol << 4 | len as u16;
                }
            }
        }
        Huffman {
            fast,
            count,
            symbols,
        }
    }

    /// The next symbol; a code the table does not have (an incomplete code) is [`Stop::Bad`].
    fn decode(&self, r: &mut Reader<'_>) -> Result<usize, Stop> {
        if let Some(bits) = r.peek(FAST_BITS) {
            let entry = self.fast[bits as usize];
            if entry != 0 {
                r.pos += usize::from(entry & 15);
                return Ok(usize::from(entry >> 4));
            }
        }
        // A longer code, or near the end of the input: a bit at a time.
        let (mut code, mut first, mut index) = (0usize, 0usize, 0usize);
        for &count in &self.count[1..] {
            code |= r.bits(1)? as usize;
            let count = usize::from(count);
            if code < first + count {
                return self
                    .symbols
                    .get(index + code - first)
                    .map(|&s| s.into())
                    .ok_or(Stop::Bad);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(Stop::Bad)
    }
}

/// Reads bits LSB first (RFC 1951 3.1.1).
struct Reader<'a> {
    data: &'a [u8],
    /// In bits.
    pos: usize,
}

impl Reader<'_> {
    /// The next `n` (at most 16) bits, if the input has them.
    fn peek(&self, n: u32) -> Option<u32> {
        if self.pos + n as usize > self.data.len() * 8 {
            return None;
        }
        let start = self.pos / 8;
        let word = match self.data.get(start..start + 4) {
            Some(bytes) => u32::from_le_bytes(bytes.try_into().unwrap()),
            None => (self.data[start..].iter().rev()).fold(0, |w, &b| w << 8 | u32::from(b)),
        };
        Some((word >> (self.pos % 8)) & ((1 << n) - 1))
    }

    fn bits(&mut self, n: u32) -> Result<u32, Stop> {
        let value = self.peek(n).ok_or(Stop::More)?;
        self.pos += n as usize;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// zlib's dynamic-Huffman blocks (level 6) and stored blocks, sync-flushed between messages.
    fn zlib_stream(messages: &[&[u8]]) -> Vec<u8> {
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let mut out = Vec::with_capacity(1 << 16);
        for m in messages {
            c.compress_vec(m, &mut out, FlushCompress::Sync).unwrap();
        }
        out
    }

    #[test]
    fn finds_the_farthest_distance_whole_or_a_byte_at_a_time() {
        let noise: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let text = b"a window of text, a window of text; ".repeat(50);
        // Noise repeated 3000 bytes back (a 12-bit window) and text repeating within 64 bytes.
        let stream = zlib_stream(&[&text, &noise, &[], &noise]);
        for (bits, ok) in [(9, false), (11, false), (12, true), (15, true)] {
            let mut whole = WindowCheck::new(bits);
            assert_eq!(whole.scan(&stream), ok, "{bits}");
            assert!(whole.pending.capacity() < 400);
            let mut bytes = WindowCheck::new(bits);
            let verdict = stream.iter().all(|b| bytes.scan(&[*b]));
            assert_eq!(verdict, ok, "{bits}, a byte at a time");
            assert!(bytes.pending.len() < 400);
        }
        // zlib refers up to 1084 bytes back in this text, as C zlib itself finds when inflating
        // it a byte per call with 10 window bits ("invalid distance too far back").
        let mut check = WindowCheck::new(11);
        assert!(!WindowCheck::new(10).scan(&zlib_stream(&[&text])));
        assert!(check.scan(&zlib_stream(&[&text])));
        // What follows a final block is not scanned.
        assert!(check.scan(&[0x03, 0x00]) && matches!(check.block, Block::Done));
        assert!(check.scan(&stream));
        // Damaged streams, cut anywhere: a verdict, never a panic.
        let mut seed = 7u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut damaged = stream.clone();
            let at = seed as usize % damaged.len();
            damaged[at] ^= (seed >> 32) as u8 | 1;
            let mut check = WindowCheck::new(9 + (seed >> 40) as u8 % 6);
            let (a, b) = damaged.split_at((seed >> 48) as usize % damaged.len());
            let _ = check.scan(a) && check.scan(b);
        }
        // Not deflate: a reserved block type, a stored block whose length check fails.
        assert!(!WindowCheck::new(9).scan(&[0x07]));
        assert!(!WindowCheck::new(9).scan(&[0x00, 0x05, 0x00, 0x05, 0x00]));
    }
}
