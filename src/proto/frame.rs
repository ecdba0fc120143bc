//! Frame codec (RFC 6455 section 5.2): decode a header from a byte slice, encode one into a
//! buffer, and apply a masking key in place.

use super::ProtocolError;

/// A frame's opcode (RFC 6455 section 5.2). The discriminants are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation = 0x0,
    /// First frame of a text message.
    Text = 0x1,
    /// First frame of a binary message.
    Binary = 0x2,
    /// Connection close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

/// The opcode for each value of the low nibble of a header's first byte; `None` where RFC 6455
/// reserves the value.
const OPCODES: [Option<OpCode>; 16] = {
    let mut table = [None; 16];
    table[0x0] = Some(OpCode::Continuation);
    table[0x1] = Some(OpCode::Text);
    table[0x2] = Some(OpCode::Binary);
    table[0x8] = Some(OpCode::Close);
    table[0x9] = Some(OpCode::Ping);
    table[0xA] = Some(OpCode::Pong);
    table
};

impl OpCode {
    /// Control frames (close, ping, pong) may not be fragmented and carry at most 125 bytes.
    #[inline]
    pub fn is_control(self) -> bool {
        // Control opcodes are 0x8 to 0xF; of those only close, ping and pong are defined.
        self as u8 & 0x8 != 0
    }

    /// The opcode of a low nibble (`bits & 0x0F`; the high bits are ignored), or `None` for a
    /// reserved value.
    #[inline]
    fn from_bits(bits: u8) -> Option<OpCode> {
        OPCODES[usize::from(bits & 0x0F)]
    }

    #[inline]
    fn bits(self) -> u8 {
        self as u8
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1 (set by permessage-deflate on the first frame of a compressed message).
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// Largest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The header's length in bytes, from its second byte (the mask bit and the 7-bit length).
#[inline]
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        0..=125 => 0,
        126 => 2,
        _ => 8,
    };
    2 + ext + 4 * usize::from(b1 >> 7)
}

/// The checks on the first byte: RSV2 and RSV3 clear, an opcode RFC 6455 defines.
#[inline]
fn check_first_byte(b0: u8) -> Result<OpCode, ProtocolError> {
    if b0 & 0x30 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    OpCode::from_bits(b0).ok_or(ProtocolError::ReservedOpcode)
}

/// The checks on the length, once it is known: a control frame (bit 3 of a valid opcode) must
/// be final (bit 7) and carry at most 125 bytes. (The 64-bit form's top bit is checked where
/// that form is read.)
#[inline]
fn check_control(b0: u8, payload_len: u64) -> Result<(), ProtocolError> {
    if b0 & 0x08 != 0 && (b0 & 0x80 == 0 || payload_len > 125) {
        return Err(ProtocolError::BadControlFrame);
    }
    Ok(())
}

/// For each first byte, the opcode if the byte passes every check it can on its own (RSV2 and
/// RSV3 clear, an opcode RFC 6455 defines, FIN set on a control frame), else `None`.
const FIRST_BYTE: [Option<OpCode>; 256] = {
    let mut table = [None; 256];
    let mut b0 = 0;
    while b0 < 256 {
        let control_not_final = b0 & 0x88 == 0x08;
        if b0 & 0x30 == 0 && !control_not_final {
            table[b0] = OPCODES[b0 & 0x0F];
        }
        b0 += 1;
    }
    table
};

impl FrameHeader {
    /// The header of a final, unmasked frame without RSV1, of `opcode` announcing
    /// `payload_len` bytes; the `with_` methods change the rest.
    pub fn new(opcode: OpCode, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// This header with [`fin`](Self::fin) set to `fin`.
    #[must_use]
    pub fn with_fin(self, fin: bool) -> FrameHeader {
        FrameHeader { fin, ..self }
    }

    /// This header with [`rsv1`](Self::rsv1) set to `rsv1`.
    #[must_use]
    pub fn with_rsv1(self, rsv1: bool) -> FrameHeader {
        FrameHeader { rsv1, ..self }
    }

    /// This header with the masking key `mask` (none: unmasked).
    #[must_use]
    pub fn with_mask(self, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader { mask, ..self }
    }

    /// Decodes a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, otherwise the header and
    /// its length in bytes. Checks only what the header alone can tell: RSV2/RSV3 set, a reserved
    /// opcode, a 64-bit length with its top bit set, a non-minimal length encoding is allowed
    /// (RFC 6455 asks senders, not receivers), and control frames that are fragmented or longer
    /// than 125 bytes. RSV1 is left to the caller, which knows whether an extension defines it.
    ///
    /// A header that is not whole yet is still rejected as soon as the bytes at hand prove it
    /// wrong: RSV2/RSV3 and the opcode from the first byte, the length checks once the extended
    /// length is in (before the masking key).
    ///
    /// # Errors
    ///
    /// The [`ProtocolError`] the bytes at hand already prove.
    #[inline]
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        match Self::decode_valid(buf) {
            Some(decoded) => Ok(Some(decoded)),
            None => Self::decode_slow(buf),
        }
    }

    /// The fast path: a whole header that passes every check, else `None` (a header not whole
    /// yet, or one that breaks a rule), and [`decode_slow`](Self::decode_slow) sorts it out.
    /// One table lookup checks the first byte; the 7-bit length form takes one more branch.
    #[inline]
    pub(crate) fn decode_valid(buf: &[u8]) -> Option<(FrameHeader, usize)> {
        let [b0, b1, ref rest @ ..] = *buf else {
            return None;
        };
        let opcode = FIRST_BYTE[usize::from(b0)]?;
        let (payload_len, rest) = match b1 & 0x7F {
            n @ 0..=125 => (u64::from(n), rest),
            126 => {
                let (n, rest) = rest.split_first_chunk::<2>()?;
                let n = u64::from(u16::from_be_bytes(*n));
                if opcode.is_control() && n > 125 {
                    return None;
                }
                (n, rest)
            }
            _ => {
                let (n, rest) = rest.split_first_chunk::<8>()?;
                let n = u64::from_be_bytes(*n);
                if n >> 63 != 0 || (opcode.is_control() && n > 125) {
                    return None;
                }
                (n, rest)
            }
        };
        let masked = b1 & 0x80 != 0;
        let mask = if masked {
            Some(*rest.first_chunk::<4>()?)
        } else {
            None
        };
        let header = FrameHeader::from_parts(b0, opcode, mask, payload_len);
        Some((header, buf.len() - rest.len() + 4 * usize::from(masked)))
    }

    /// The general path, for what [`decode_valid`](Self::decode_valid) declined: checks in
    /// the order the bytes arrive, so that a partial header fails as early as it can and
    /// reports the same error whatever the buffer's end.
    #[cold]
    #[inline(never)]
    fn decode_slow(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        let (b0, b1) = (*b0, *b1);
        let opcode = check_first_byte(b0)?;
        let (payload_len, rest) = match b1 & 0x7F {
            n @ 0..=125 => (u64::from(n), rest),
            126 => match rest.split_first_chunk::<2>() {
                Some((n, rest)) => (u64::from(u16::from_be_bytes(*n)), rest),
                None => return Ok(None),
            },
            _ => match rest.split_first_chunk::<8>() {
                Some((n, rest)) => {
                    let n = u64::from_be_bytes(*n);
                    if n >> 63 != 0 {
                        return Err(ProtocolError::LengthOverflow);
                    }
                    (n, rest)
                }
                None => return Ok(None),
            },
        };
        check_control(b0, payload_len)?;
        let mask = if b1 & 0x80 != 0 {
            match rest.first_chunk::<4>() {
                Some(key) => Some(*key),
                None => return Ok(None),
            }
        } else {
            None
        };
        let header = FrameHeader::from_parts(b0, opcode, mask, payload_len);
        Ok(Some((header, header_len(b1))))
    }

    /// A header from its checked parts: FIN and RSV1 are read from the first byte.
    #[inline]
    fn from_parts(b0: u8, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> Self {
        FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Encodes this header into `out` and returns how many bytes it wrote.
    #[inline]
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = first_byte(self.fin, self.rsv1, self.opcode);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }
}

/// A frame's first byte: FIN, RSV1 and the opcode.
#[inline]
fn first_byte(fin: bool, rsv1: bool, opcode: OpCode) -> u8 {
    (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.bits()
}

/// Appends one whole frame to `out`: header, then `payload` (masked with `mask` if given).
#[inline]
pub fn write_frame(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    if payload.len() <= 125 {
        // A small frame, the most common: two header bytes, and the key if masked.
        let b0 = first_byte(fin, rsv1, opcode);
        let len = payload.len() as u8;
        match mask {
            None => {
                out.reserve(2 + payload.len());
                out.extend_from_slice(&[b0, len]);
                out.extend_from_slice(payload);
            }
            Some(key) => {
                out.reserve(6 + payload.len());
                out.extend_from_slice(&[b0, 0x80 | len, key[0], key[1], key[2], key[3]]);
                let start = out.len();
                out.extend_from_slice(payload);
                apply_mask(&mut out[start..], key, 0);
            }
        }
        return;
    }
    let header = FrameHeader::new(opcode, payload.len() as u64)
        .with_fin(fin)
        .with_rsv1(rsv1)
        .with_mask(mask);
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    out.reserve(n + payload.len());
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// XORs `buf` with the masking `key`, as if `buf` started `offset` bytes into the payload.
///
/// Works a machine word at a time, and 64 bytes at a time on a large buffer (the compiler
/// turns both into vector instructions); the same call masks and unmasks.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if buf.len() >= 64 {
        // Out of line: a small payload pays only this comparison for it.
        mask_blocks(buf, key);
    } else {
        mask_words(buf, key);
    }
}

/// [`apply_mask`] of a buffer of 64 bytes or more, with the key already rotated: 64-byte
/// blocks as four 16-byte words (a third fewer instructions than word at a time), then the
/// rest.
#[inline(never)]
fn mask_blocks(buf: &mut [u8], key: [u8; 4]) {
    // The key four times over: the same in either byte order.
    let key16 = u128::from(u32::from_ne_bytes(key)) * 0x1_0000_0001_0000_0001_0000_0001;
    let mut blocks = buf.chunks_exact_mut(64);
    for block in &mut blocks {
        for chunk in block.chunks_exact_mut(16) {
            let word = u128::from_ne_bytes(chunk.try_into().expect("16 bytes")) ^ key16;
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
    }
    mask_words(blocks.into_remainder(), key);
}

/// [`apply_mask`] with the key already rotated, 8 bytes at a time, then byte by byte.
#[inline(always)]
fn mask_words(buf: &mut [u8], key: [u8; 4]) {
    // The key twice over: the same in either byte order.
    let key8 = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key8;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The key as seen from `offset` bytes into the payload: the bytes rotated left by `offset % 4`
/// (a right rotation of the little-endian word, whatever the machine's byte order).
#[inline]
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let shift = 8 * (offset & 3) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        FrameHeader::decode(bytes)
    }

    #[test]
    fn decodes_7_16_and_64_bit_lengths() {
        let (h, n) = decode(&[0x81, 0x05]).unwrap().unwrap();
        assert_eq!(
            (h.opcode, h.fin, h.payload_len, n),
            (OpCode::Text, true, 5, 2)
        );
        let (h, n) = decode(&[0x82, 126, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        let (h, n) = decode(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (1 << 32, 10));
        let (h, n) = decode(&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.mask, n), (256, Some([1, 2, 3, 4]), 8));
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9];
        for end in 0..full.len() {
            assert_eq!(decode(&full[..end]), Ok(None), "prefix of {end} bytes");
        }
        assert!(decode(&full).unwrap().is_some());
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(decode(&[0xA1, 0]), Err(ProtocolError::ReservedBits));
        assert_eq!(decode(&[0x91, 0]), Err(ProtocolError::ReservedBits));
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(decode(&[0x80 | op, 0]), Err(ProtocolError::ReservedOpcode));
        }
        let top_bit = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&top_bit), Err(ProtocolError::LengthOverflow));
        assert_eq!(
            decode(&[0x89, 126, 0, 126]),
            Err(ProtocolError::BadControlFrame)
        );
        assert_eq!(decode(&[0x09, 0]), Err(ProtocolError::BadControlFrame));
    }

    /// The decoder as it was before the fast path (one general function, a `match` on the
    /// opcode): the oracle the fast and slow paths are checked against.
    fn reference(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = match b0 & 0x0F {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return Err(ProtocolError::ReservedOpcode),
        };
        let fin = b0 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap()), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if payload_len >> 63 != 0 {
            return Err(ProtocolError::LengthOverflow);
        }
        if matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong)
            && (!fin || payload_len > 125)
        {
            return Err(ProtocolError::BadControlFrame);
        }
        let mask = if b1 & 0x80 != 0 {
            let key = buf
                .get(len..len + 4)
                .map(|b| <[u8; 4]>::try_from(b).unwrap());
            let Some(key) = key else {
                return Ok(None);
            };
            len += 4;
            Some(key)
        } else {
            None
        };
        let header = FrameHeader {
            fin,
            rsv1: b0 & 0x40 != 0,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, len)))
    }

    /// Headers of every first byte, with each length form (7-bit, 16-bit and 64-bit, with
    /// values around the control-frame limit and the 64-bit top bit), masked or not, each
    /// followed by 6 bytes of payload.
    fn all_headers() -> Vec<Vec<u8>> {
        let mut lengths: Vec<Vec<u8>> = [0u8, 1, 5, 125].iter().map(|&n| vec![n]).collect();
        for n in [0u16, 5, 125, 126, 256, 0xFFFF] {
            let mut l = vec![126];
            l.extend_from_slice(&n.to_be_bytes());
            lengths.push(l);
        }
        for n in [
            0u64,
            5,
            125,
            126,
            1 << 16,
            1 << 32,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
        ] {
            let mut l = vec![127];
            l.extend_from_slice(&n.to_be_bytes());
            lengths.push(l);
        }
        let mut out = Vec::new();
        for b0 in 0..=255u8 {
            for l in &lengths {
                for masked in [false, true] {
                    let mut h = vec![b0, l[0] | if masked { 0x80 } else { 0 }];
                    h.extend_from_slice(&l[1..]);
                    if masked {
                        h.extend_from_slice(&[0xA1, 0xB2, 0xC3, 0xD4]);
                    }
                    h.extend_from_slice(&[0xEE; 6]);
                    out.push(h);
                }
            }
        }
        out
    }

    #[test]
    fn every_prefix_matches_the_reference() {
        // Every buffer end, from 0 bytes to past the header and into the payload (up to 20
        // bytes), for every first byte (so every opcode nibble) and every length form: whole
        // headers take the fast path, partial or bad ones the slow path.
        for h in all_headers() {
            for end in 0..=h.len() {
                let buf = &h[..end];
                assert_eq!(decode(buf), reference(buf), "{buf:02x?}");
            }
        }
    }

    #[test]
    fn fast_path_takes_every_valid_whole_header_and_nothing_else() {
        for h in all_headers() {
            for end in 0..=h.len() {
                let buf = &h[..end];
                let want = reference(buf);
                match FrameHeader::decode_valid(buf) {
                    Some(decoded) => assert_eq!(Ok(Some(decoded)), want, "{buf:02x?}"),
                    None => assert!(!matches!(want, Ok(Some(_))), "{buf:02x?}"),
                }
                assert_eq!(FrameHeader::decode_slow(buf), want, "{buf:02x?}");
            }
        }
    }

    #[test]
    fn first_byte_table_matches_the_checks() {
        for b0 in 0..=255u8 {
            let want = reference(&[b0, 0x00]).ok().flatten().map(|(h, _)| h.opcode);
            assert_eq!(FIRST_BYTE[usize::from(b0)], want, "{b0:#04x}");
        }
    }

    #[test]
    fn opcode_table_matches_the_wire_values() {
        for bits in 0..16u8 {
            let want = match bits {
                0x0 => Some(OpCode::Continuation),
                0x1 => Some(OpCode::Text),
                0x2 => Some(OpCode::Binary),
                0x8 => Some(OpCode::Close),
                0x9 => Some(OpCode::Ping),
                0xA => Some(OpCode::Pong),
                _ => None,
            };
            assert_eq!(OpCode::from_bits(bits), want);
            assert_eq!(OpCode::from_bits(bits | 0xF0), want);
            if let Some(op) = want {
                assert_eq!(op.bits(), bits);
                assert_eq!(
                    op.is_control(),
                    matches!(op, OpCode::Close | OpCode::Ping | OpCode::Pong)
                );
            }
        }
    }

    #[test]
    fn encode_round_trips() {
        for len in [0u64, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let h = FrameHeader {
                    fin: len % 2 == 0,
                    rsv1: true,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut buf = [0u8; MAX_HEADER_LEN];
                let n = h.encode(&mut buf);
                assert_eq!(decode(&buf[..n]), Ok(Some((h, n))));
            }
        }
    }

    #[test]
    fn masking_matches_bytewise_definition_at_any_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        // Either side of the split below, at or over 64 bytes (blocks) and under (words),
        // with every remainder length.
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for offset in 0..8 {
            for split in [0, 1, 7, 8, 9, 50, 63, 64, 65, 79, 150, 229, 236, 237, 300] {
                let mut buf = data.clone();
                apply_mask(&mut buf[..split], key, offset);
                apply_mask(&mut buf[split..], key, offset + split);
                for (i, (&m, &d)) in buf.iter().zip(&data).enumerate() {
                    assert_eq!(m, d ^ key[(offset + i) % 4]);
                }
            }
        }
    }

    #[test]
    fn small_frames_are_written_as_the_general_encoder_writes_them() {
        // write_frame's short path (payloads up to 125 bytes) against FrameHeader::encode.
        let payload: Vec<u8> = (0..=130u8).collect();
        for len in 0..=130 {
            for mask in [None, Some([0x12, 0x34, 0x56, 0x78])] {
                for (fin, rsv1) in [(true, false), (false, true)] {
                    let body = &payload[..len];
                    let mut out = Vec::new();
                    write_frame(&mut out, OpCode::Binary, fin, rsv1, mask, body);
                    let header = FrameHeader {
                        fin,
                        rsv1,
                        opcode: OpCode::Binary,
                        mask,
                        payload_len: len as u64,
                    };
                    let mut head = [0u8; MAX_HEADER_LEN];
                    let n = header.encode(&mut head);
                    let mut want = head[..n].to_vec();
                    want.extend_from_slice(body);
                    if let Some(key) = mask {
                        for (i, b) in want[n..].iter_mut().enumerate() {
                            *b ^= key[i % 4];
                        }
                    }
                    assert_eq!(out, want, "len {len} mask {mask:?} fin {fin}");
                }
            }
        }
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 section 5.7: a single-frame masked text message "Hello".
        let mut frame = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode(&frame).unwrap().unwrap();
        apply_mask(&mut frame[n..], h.mask.unwrap(), 0);
        assert_eq!(&frame[n..], b"Hello");
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Text, true, false, h.mask, b"Hello");
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }
}
