//! Message assembly: turns frames into messages and control events, enforcing RFC 6455's rules
//! on masking, fragmentation, control frames, UTF-8, close payloads and size; and encodes what
//! this endpoint sends.

use std::sync::Arc;

use super::close::{close_payload, parse_close_payload};
use super::deflate::{InflateError, Inflater};
use super::frame::{apply_mask, write_frame, FrameHeader, OpCode};
use super::utf8::Utf8Validator;
use super::{CloseCode, ProtocolError, Role};

/// What a complete frame produced.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A whole text message.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping with its payload; answer it with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// A pong with its payload.
    Pong(&'a [u8]),
    /// A close frame: its code (if any) and reason.
    Close(Option<CloseCode>, &'a str),
}

/// The result of [`Decoder::decode`].
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decoded<'a> {
    /// The buffer does not hold a whole frame yet. `frame_len` is the frame's total size once
    /// its header has arrived, so that the caller can make room for it.
    Incomplete {
        /// Header plus payload length, when known.
        frame_len: Option<usize>,
    },
    /// A frame of `len` bytes was consumed from the front of the buffer.
    Frame {
        /// How many bytes the frame took; the caller drops them once done with `event`.
        len: usize,
        /// The message or control event the frame completed, if any (a non-final fragment
        /// completes nothing).
        event: Option<Event<'a>>,
    },
}

/// The kind of a fragmented message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Binary,
}

/// Turns received frames into [`Event`]s (sans-IO).
///
/// Feed it a buffer that starts at a frame boundary; it answers with what the first frame
/// completed and how many bytes it took. Unfragmented messages are handed out as slices of
/// that buffer, unmasked in place (no copy); fragments are gathered in one growing buffer with
/// no per-fragment allocation. Text is validated as it arrives, so invalid UTF-8 fails on the
/// first bad byte, even in the middle of a frame that has not fully arrived.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    /// The limits, shared by the connections of an endpoint (a pointer in each).
    limits: Arc<Limits>,
    open: Open,
    /// Bytes of the current frame's payload already unmasked (and validated, for text).
    progress: usize,
    utf8: Utf8Validator,
    /// The fragmented (or compressed) message in progress and the inflater, boxed together
    /// (one pointer in every connection): none for a decoder between messages, without
    /// permessage-deflate.
    held: Option<Box<Held>>,
    /// `held` holds a message that was handed out and must be dropped on the next call.
    delivered: bool,
    /// The message in progress is compressed (its first frame had RSV1).
    compressed: bool,
}

/// What a [`Decoder`] refuses.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Largest message, whole or fragmented.
    max_message_size: usize,
    /// Most data frames one message may take (see [`DEFAULT_MAX_FRAGMENTS`]).
    max_fragments: u32,
}

impl Limits {
    /// Messages of at most `max_message_size` bytes in at most `max_fragments` frames.
    pub(crate) fn new(max_message_size: usize, max_fragments: usize) -> Limits {
        Limits {
            max_message_size,
            max_fragments: u32::try_from(max_fragments).unwrap_or(u32::MAX),
        }
    }
}

/// What a [`Decoder`] holds only for some messages or connections.
#[derive(Debug, Default)]
struct Held {
    /// Payload of the fragmented (or compressed) message in progress, boxed as it is handed
    /// out with the message (see [`Assembled`]).
    #[allow(clippy::box_collection)]
    fragments: Option<Box<Vec<u8>>>,
    /// permessage-deflate, when negotiated.
    inflater: Option<Inflater>,
    /// Data frames of the fragmented message in progress received so far.
    frames: u32,
}

/// How many frames one message may take unless [`Decoder::with_max_fragments`] says otherwise:
/// 16,384, Node ws's default. Real senders fragment only to stream a message they do not hold
/// whole, in chunks of kilobytes; this lets the largest default message (16 MiB) arrive in
/// pieces of 1 KiB, and cuts a flood of empty continuation frames (which never grows the
/// message, so `max_message_size` never stops it) after 96 KiB of input.
pub const DEFAULT_MAX_FRAGMENTS: usize = 16 * 1024;

impl Decoder {
    /// A decoder for `role` that refuses messages larger than `max_message_size` bytes.
    pub fn new(role: Role, max_message_size: usize) -> Decoder {
        let limits = Limits::new(max_message_size, DEFAULT_MAX_FRAGMENTS);
        Decoder::with_limits(role, Arc::new(limits))
    }

    /// A decoder for `role` that refuses what `limits` say.
    pub(crate) fn with_limits(role: Role, limits: Arc<Limits>) -> Decoder {
        Decoder {
            role,
            limits,
            open: Open::None,
            progress: 0,
            utf8: Utf8Validator::default(),
            held: None,
            delivered: false,
            compressed: false,
        }
    }

    /// This decoder, refusing a message of more than `max_fragments` frames with
    /// [`ProtocolError::TooManyFragments`] as soon as the header of the frame past the limit
    /// arrives. Control frames between fragments do not count; 1 allows no fragmentation.
    #[must_use]
    pub fn with_max_fragments(mut self, max_fragments: usize) -> Decoder {
        let max_message_size = self.limits.max_message_size;
        self.limits = Arc::new(Limits::new(max_message_size, max_fragments));
        self
    }

    /// Turns on permessage-deflate: RSV1 on a message's first frame now means "compressed".
    pub fn set_inflater(&mut self, inflater: Inflater) {
        self.held.get_or_insert_with(Box::default).inflater = Some(inflater);
    }

    /// The role this decoder receives for.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Bytes of memory held for the fragmented (or compressed) message in progress.
    pub fn buffered(&self) -> usize {
        self.fragments().map_or(0, Vec::capacity)
    }

    /// The fragmented (or compressed) message in progress, if any.
    fn fragments(&self) -> Option<&Vec<u8>> {
        self.held.as_ref()?.fragments.as_deref()
    }

    /// Frees what the decoder holds for a message that was already handed out: the buffer of
    /// a fragmented or compressed message, and an inflater's state that the next message
    /// does not need. Call it when the bytes at hand are used up.
    #[inline]
    pub fn release(&mut self) {
        if self.delivered {
            self.delivered = false;
            if let Some(held) = &mut self.held {
                held.fragments = None;
            }
        }
        if self.open == Open::None {
            if let Some(held) = &mut self.held {
                match &mut held.inflater {
                    Some(inflater) => inflater.release_if_idle(),
                    None => self.held = None,
                }
            }
        }
    }

    /// Decodes the frame at the front of `buf`.
    ///
    /// Masked payloads are unmasked in place, so bytes of an [`Incomplete`](Decoded::Incomplete)
    /// frame must be kept as they are now and presented again, with more bytes after them, on
    /// the next call. After a [`Frame`](Decoded::Frame) the caller drops `len` bytes from the
    /// front of its buffer. After an error or a close event, stop decoding.
    ///
    /// # Errors
    ///
    /// The [`ProtocolError`] of the first violation of RFC 6455 (or RFC 7692), to be answered with
    /// its close code.
    pub fn decode<'a>(&'a mut self, mut buf: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        match self.step(&mut buf)? {
            Step::Incomplete { frame_len } => Ok(Decoded::Incomplete { frame_len }),
            Step::Frame { len, event } => Ok(Decoded::Frame { len, event }),
            Step::Assembled { len, message } => {
                // Kept until the next call, as the event borrows it.
                let text = message.text;
                self.reuse(message);
                let bytes = self.fragments().map_or(&[][..], Vec::as_slice);
                Ok(Decoded::Frame {
                    len,
                    event: Some(message_event(bytes, text)?),
                })
            }
        }
    }

    /// [`decode`](Self::decode), with the message of several frames (or an inflated one)
    /// handed out owned, so that no event borrows the decoder: a connection can go on being
    /// used (and this decoder with it) while its message is handled. Give the message's
    /// buffer back with [`reuse`](Self::reuse).
    #[inline(always)]
    pub(crate) fn step<'b>(&mut self, buf: &mut &'b mut [u8]) -> Result<Step<'b>, ProtocolError> {
        if self.delivered {
            if let Some(fragments) = self.held.as_mut().and_then(|h| h.fragments.as_mut()) {
                fragments.clear();
            }
            self.delivered = false;
        }
        if let Some((header, header_len)) = self.whole_message(buf) {
            // whole_message saw all `len` bytes.
            let len = header_len + header.payload_len as usize;
            let frame = take_front(buf, len);
            let payload = &mut frame[header_len..];
            if let Some(key) = header.mask {
                apply_mask(payload, key, 0);
            }
            let event = Some(message_event(payload, header.opcode == OpCode::Text)?);
            return Ok(Step::Frame { len, event });
        }
        self.step_general(buf)
    }

    /// [`step`](Self::step) for any frame, whole or not.
    #[inline(never)]
    fn step_general<'b>(&mut self, buf: &mut &'b mut [u8]) -> Result<Step<'b>, ProtocolError> {
        let Some((header, header_len)) = FrameHeader::decode(buf)? else {
            return Ok(Step::Incomplete { frame_len: None });
        };
        self.check_header(&header)?;
        // check_header bounds the length by `max_message_size`, a usize.
        let payload_len = header.payload_len as usize;
        let frame_len = header_len + payload_len;
        let compressed = header.rsv1 || (header.opcode == OpCode::Continuation && self.compressed);
        // Compressed text is validated once inflated, frame by frame.
        let text = !compressed
            && (header.opcode == OpCode::Text
                || (header.opcode == OpCode::Continuation && self.open == Open::Text));
        if buf.len() < frame_len {
            let payload = &mut buf[header_len..];
            let fresh = &mut payload[self.progress..];
            if let Some(key) = header.mask {
                apply_mask(fresh, key, self.progress);
            }
            // Validate the text that has arrived, so that bad UTF-8 fails fast.
            if text {
                self.utf8
                    .feed(fresh)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                self.progress = payload.len();
            } else if header.mask.is_some() {
                self.progress = payload.len();
            }
            return Ok(Step::Incomplete {
                frame_len: Some(frame_len),
            });
        }
        let payload = &mut take_front(buf, frame_len)[header_len..];
        if let Some(key) = header.mask {
            apply_mask(&mut payload[self.progress..], key, self.progress);
        }
        let validated = if text { self.progress } else { 0 };
        self.progress = 0;
        match self.complete(header, payload, validated)? {
            Completed::Event(event) => Ok(Step::Frame {
                len: frame_len,
                event,
            }),
            Completed::Assembled(message) => Ok(Step::Assembled {
                len: frame_len,
                message,
            }),
        }
    }

    /// The common case, in few instructions: a whole data frame that is a message of its own
    /// (final, uncompressed, no fragmented message in progress), masked as the role requires
    /// and within the size limit; its header and the header's length. Anything else is left
    /// to the general path, which decides the same for these frames (the fuzzers feed both
    /// every split).
    #[inline(always)]
    fn whole_message(&self, buf: &[u8]) -> Option<(FrameHeader, usize)> {
        if self.open != Open::None || self.progress != 0 {
            return None;
        }
        let (header, header_len) = FrameHeader::decode_valid(buf)?;
        let whole = (buf.len() - header_len) as u64 >= header.payload_len;
        let fits = header.payload_len <= self.limits.max_message_size as u64;
        let data = matches!(header.opcode, OpCode::Text | OpCode::Binary);
        let masked_right = header.mask.is_some() == (self.role == Role::Server);
        (whole && fits && data && masked_right && header.fin && !header.rsv1)
            .then_some((header, header_len))
    }

    /// Checks what the header alone tells against the connection's state.
    #[inline]
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        // RSV1 means "compressed", on the first frame of a message only (RFC 7692 section 6).
        let first = matches!(header.opcode, OpCode::Text | OpCode::Binary);
        let inflating = self.held.as_ref().is_some_and(|h| h.inflater.is_some());
        if header.rsv1 && !(first && inflating) {
            return Err(ProtocolError::ReservedBits);
        }
        if header.mask.is_some() != (self.role == Role::Server) {
            return Err(ProtocolError::BadMasking);
        }
        match (header.opcode, self.open) {
            (OpCode::Continuation, Open::None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, _)
                if self.held.as_ref().map_or(0, |h| h.frames) >= self.limits.max_fragments =>
            {
                Err(ProtocolError::TooManyFragments)
            }
            (OpCode::Text | OpCode::Binary, Open::Text | Open::Binary) => {
                Err(ProtocolError::ExpectedContinuation)
            }
            _ if header.opcode.is_control() => Ok(()),
            _ => {
                let max = self.limits.max_message_size as u64;
                let compressed =
                    header.rsv1 || (header.opcode == OpCode::Continuation && self.compressed);
                let too_big = if compressed {
                    // The inflater holds the inflated message to the limit exactly; here only
                    // bound the compressed frame (deflate may grow incompressible data a bit).
                    header.payload_len > max.saturating_add(max / 8).saturating_add(1024)
                } else {
                    let held = self.fragments().map_or(0, Vec::len);
                    (held as u64).saturating_add(header.payload_len) > max
                };
                if too_big {
                    Err(ProtocolError::MessageTooBig)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Handles a whole, unmasked frame. `validated` bytes of a text payload were already fed
    /// to the UTF-8 validator while the frame was arriving.
    #[inline]
    fn complete<'b>(
        &mut self,
        header: FrameHeader,
        payload: &'b [u8],
        validated: usize,
    ) -> Result<Completed<'b>, ProtocolError> {
        let event = match header.opcode {
            OpCode::Ping => Event::Ping(payload),
            OpCode::Pong => Event::Pong(payload),
            OpCode::Close => {
                let (code, reason) = parse_close_payload(payload)?;
                Event::Close(code, reason)
            }
            _ if header.rsv1 || (header.opcode == OpCode::Continuation && self.compressed) => {
                return self.inflate(header, payload);
            }
            OpCode::Text if header.fin && validated == 0 => {
                Event::Text(std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?)
            }
            OpCode::Text if header.fin => {
                self.utf8
                    .feed(&payload[validated..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Event::Text(std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?)
            }
            OpCode::Binary if header.fin => Event::Binary(payload),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if header.opcode == OpCode::Text {
                    self.open = Open::Text;
                } else if header.opcode == OpCode::Binary {
                    self.open = Open::Binary;
                }
                if self.open == Open::Text {
                    self.utf8
                        .feed(&payload[validated..])
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                let held = self.held.get_or_insert_with(Box::default);
                (held.fragments.get_or_insert_with(Box::default)).extend_from_slice(payload);
                return self.assembled(header.fin);
            }
        };
        Ok(Completed::Event(Some(event)))
    }

    /// Inflates a frame of a compressed message into `fragments`, validating text as it comes.
    fn inflate(
        &mut self,
        header: FrameHeader,
        payload: &[u8],
    ) -> Result<Completed<'static>, ProtocolError> {
        match header.opcode {
            OpCode::Text => self.open = Open::Text,
            OpCode::Binary => self.open = Open::Binary,
            _ => {}
        }
        self.compressed = true;
        let Some(Held {
            fragments,
            inflater: Some(inflater),
            ..
        }) = self.held.as_deref_mut()
        else {
            return Err(ProtocolError::ReservedBits);
        };
        let fragments = fragments.get_or_insert_with(Box::default);
        let before = fragments.len();
        let max = self.limits.max_message_size;
        let inflated = inflater.inflate(payload, header.fin, fragments, max);
        match inflated {
            Err(InflateError::TooBig) => return Err(ProtocolError::MessageTooBig),
            Err(InflateError::Corrupt) if self.open == Open::Text => {
                return Err(ProtocolError::BadCompressedText)
            }
            Err(InflateError::Corrupt) => return Err(ProtocolError::BadCompression),
            Ok(()) => {}
        }
        if self.open == Open::Text {
            self.utf8
                .feed(&fragments[before..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.assembled(header.fin)
    }

    /// After a data frame was added to `fragments`: the whole message, if that was the last.
    fn assembled(&mut self, fin: bool) -> Result<Completed<'static>, ProtocolError> {
        let held = self.held.get_or_insert_with(Box::default);
        if !fin {
            held.frames += 1;
            return Ok(Completed::Event(None));
        }
        held.frames = 0;
        let bytes = held.fragments.take().unwrap_or_default();
        let open = std::mem::replace(&mut self.open, Open::None);
        self.compressed = false;
        let text = open == Open::Text;
        if text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(Completed::Assembled(Assembled { bytes, text }))
    }

    /// Takes back the buffer of a message [`step`](Self::step) handed out, for the next one
    /// (it is freed by [`release`](Self::release) unless one comes first).
    pub(crate) fn reuse(&mut self, message: Assembled) {
        let held = self.held.get_or_insert_with(Box::default);
        if held.fragments.is_none() {
            held.fragments = Some(message.bytes);
            self.delivered = true;
        }
    }
}

/// What [`Decoder::step`] made of the front of a buffer.
#[derive(Debug)]
pub(crate) enum Step<'b> {
    /// As [`Decoded::Incomplete`].
    Incomplete {
        /// Header plus payload length, when known.
        frame_len: Option<usize>,
    },
    /// A frame of `len` bytes was used; its event, if any, borrows the buffer.
    Frame {
        /// How many bytes the frame took.
        len: usize,
        /// The message or control event the frame completed, if any.
        event: Option<Event<'b>>,
    },
    /// A frame of `len` bytes completed a message gathered from several frames or inflated.
    Assembled {
        /// How many bytes the frame took.
        len: usize,
        /// The message, owned.
        message: Assembled,
    },
}

/// What one whole frame completed.
enum Completed<'b> {
    Event(Option<Event<'b>>),
    Assembled(Assembled),
}

/// A whole message gathered from several frames or inflated, handed out by
/// [`Decoder::step`]; its text, if text, passed the UTF-8 validator.
#[derive(Debug)]
pub(crate) struct Assembled {
    #[allow(clippy::box_collection)]
    bytes: Box<Vec<u8>>,
    text: bool,
}

impl Assembled {
    /// The message as a text or binary event.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidUtf8`] for text that is not UTF-8 (which the validator
    /// already ruled out).
    pub(crate) fn event(&self) -> Result<Event<'_>, ProtocolError> {
        message_event(&self.bytes, self.text)
    }
}

/// Splits the first `len` bytes off the front of `buf` (which keeps the rest), so that what
/// borrows them does not hold the rest.
#[inline(always)]
pub(crate) fn take_front<'b>(buf: &mut &'b mut [u8], len: usize) -> &'b mut [u8] {
    let (front, rest) = std::mem::take(buf).split_at_mut(len);
    *buf = rest;
    front
}

/// A whole message's `bytes` as a text or binary event.
#[inline]
fn message_event(bytes: &[u8], text: bool) -> Result<Event<'_>, ProtocolError> {
    if text {
        let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8)?;
        Ok(Event::Text(text))
    } else {
        Ok(Event::Binary(bytes))
    }
}

/// Encodes the frames this endpoint sends: masked with a fresh key for a client, unmasked for a
/// server.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    role: Role,
}

impl Encoder {
    /// An encoder for `role`.
    pub fn new(role: Role) -> Encoder {
        Encoder { role }
    }

    /// Appends a whole message (one frame) to `out`. `opcode` is `Text` or `Binary`.
    pub fn message(&self, out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
        self.frame(out, opcode, true, payload);
    }

    /// Appends one frame to `out`. Control payloads must be at most 125 bytes.
    pub fn frame(&self, out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8]) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(mask_key()),
        };
        write_frame(out, opcode, fin, false, mask, payload);
    }

    /// Appends a close frame with `code` and as much of `reason` as fits.
    pub fn close(&self, out: &mut Vec<u8>, code: Option<CloseCode>, reason: &str) {
        let mut payload = [0u8; 125];
        let n = code.map_or(0, |code| close_payload(code, reason, &mut payload));
        self.frame(out, OpCode::Close, true, &payload[..n]);
    }
}

/// A masking key straight from the operating system's CSPRNG (see [`random_u64`]), as
/// RFC 6455 sections 5.3 and 10.3 ask: the peer's intermediaries cannot predict it.
pub(crate) fn mask_key() -> [u8; 4] {
    random_bytes()
}

/// 64 random bits from the operating system's CSPRNG (`getrandom`).
///
/// The bytes are fetched 512 at a time into a per-thread buffer and each is handed out once,
/// so a masked frame costs a copy of 4 bytes and one system call per 128 frames, not one
/// each. Unlike a userspace generator seeded once (rand's `ThreadRng`, which tungstenite
/// masks with), every key is the OS generator's output.
///
/// # Panics
///
/// If the operating system has no random source to give (as `rand`'s `thread_rng` does).
pub(crate) fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}

/// How many random bytes one `getrandom` call fetches.
const RANDOM_BATCH: usize = 512;

/// Random bytes fetched from the OS and not handed out yet: `bytes[used..]`. One per thread
/// (for [`mask_key`] and [`random_u64`]), and one in every
/// [`Endpoint`](super::connection::Endpoint), whose connections mask with it without the
/// thread-local lookup.
pub(crate) struct RandomPool {
    bytes: [u8; RANDOM_BATCH],
    used: usize,
}

impl RandomPool {
    /// An empty pool: the first take fetches.
    pub(crate) const fn new() -> RandomPool {
        RandomPool {
            bytes: [0; RANDOM_BATCH],
            used: RANDOM_BATCH,
        }
    }

    /// `N` bytes never handed out before, refilling the pool from the OS when it runs short.
    ///
    /// # Panics
    ///
    /// If the operating system has no random source to give.
    #[inline]
    pub(crate) fn take<const N: usize>(&mut self) -> [u8; N] {
        if self.used + N > RANDOM_BATCH {
            getrandom::getrandom(&mut self.bytes).expect("the OS random source failed");
            self.used = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.used..self.used + N]);
        self.used += N;
        out
    }
}

/// Shows how much is left, never the bytes (they are future masking keys).
impl std::fmt::Debug for RandomPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomPool")
            .field("left", &(RANDOM_BATCH - self.used))
            .finish()
    }
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomPool> =
        const { std::cell::RefCell::new(RandomPool::new()) };
}

/// `N` bytes from this thread's pool of OS random bytes.
fn random_bytes<const N: usize>() -> [u8; N] {
    RANDOM.with_borrow_mut(RandomPool::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes frames as a client would (masked), for the server-side decoder.
    fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new(Role::Client).frame(&mut out, opcode, fin, payload);
        out
    }

    /// Runs `bytes` through a server decoder, collecting owned events, and the first error.
    fn decode_all(bytes: &[u8], max: usize) -> (Vec<String>, Option<ProtocolError>) {
        let mut d = Decoder::new(Role::Server, max);
        let mut buf = bytes.to_vec();
        let mut out = Vec::new();
        let mut start = 0;
        while start < buf.len() {
            match d.decode(&mut buf[start..]) {
                Err(e) => return (out, Some(e)),
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Frame { len, event }) => {
                    if let Some(e) = event {
                        out.push(format!("{e:?}"));
                    }
                    start += len;
                }
            }
        }
        (out, None)
    }

    #[test]
    fn unfragmented_text_and_binary() {
        let mut bytes = client_frame(OpCode::Text, true, "héllo".as_bytes());
        bytes.extend(client_frame(OpCode::Binary, true, &[0, 1, 2]));
        let (events, err) = decode_all(&bytes, 100);
        assert_eq!(events, ["Text(\"héllo\")", "Binary([0, 1, 2])"]);
        assert_eq!(err, None);
    }

    #[test]
    fn fragments_with_interleaved_control_frames() {
        let mut bytes = client_frame(OpCode::Text, false, b"he");
        bytes.extend(client_frame(OpCode::Ping, true, b"p"));
        bytes.extend(client_frame(OpCode::Continuation, false, b"ll"));
        bytes.extend(client_frame(OpCode::Pong, true, b""));
        bytes.extend(client_frame(OpCode::Continuation, true, b"o"));
        let (events, err) = decode_all(&bytes, 100);
        assert_eq!(events, ["Ping([112])", "Pong([])", "Text(\"hello\")"]);
        assert_eq!(err, None);
    }

    #[test]
    fn a_decoder_between_messages_holds_nothing() {
        let mut d = Decoder::new(Role::Server, 1000);
        let mut bytes = client_frame(OpCode::Binary, false, &[7; 300]);
        bytes.extend(client_frame(OpCode::Continuation, true, &[8; 300]));
        let Ok(Decoded::Frame { len, event: None }) = d.decode(&mut bytes) else {
            panic!("a first fragment");
        };
        let Ok(Decoded::Frame { event, .. }) = d.decode(&mut bytes[len..]) else {
            panic!("a last fragment");
        };
        assert!(matches!(event, Some(Event::Binary(b)) if b.len() == 600));
        assert!(d.buffered() >= 600, "the message is held until released");
        d.release();
        assert_eq!(d.buffered(), 0);
        assert!(d.held.is_none(), "without deflate, nothing is boxed");

        let mut d = deflate_decoder(1000);
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut bytes = compressed_frame(OpCode::Text, true, &hello);
        let Ok(Decoded::Frame { event, .. }) = d.decode(&mut bytes) else {
            panic!("a compressed message");
        };
        assert_eq!(event, Some(Event::Text("Hello")));
        d.release();
        assert_eq!(d.buffered(), 0);
        assert!(d.held.as_ref().is_some_and(|h| h.inflater.is_some()));
    }

    #[test]
    fn fragmentation_errors() {
        let cont = client_frame(OpCode::Continuation, true, b"x");
        assert_eq!(
            decode_all(&cont, 100).1,
            Some(ProtocolError::UnexpectedContinuation)
        );
        let mut bytes = client_frame(OpCode::Binary, false, b"x");
        bytes.extend(client_frame(OpCode::Text, true, b"y"));
        assert_eq!(
            decode_all(&bytes, 100).1,
            Some(ProtocolError::ExpectedContinuation)
        );
    }

    #[test]
    fn masking_rules_per_role() {
        let mut unmasked = Vec::new();
        Encoder::new(Role::Server).message(&mut unmasked, OpCode::Text, b"hi");
        assert_eq!(
            decode_all(&unmasked, 100).1,
            Some(ProtocolError::BadMasking)
        );
        let mut client = Decoder::new(Role::Client, 100);
        assert!(matches!(
            client.decode(&mut unmasked),
            Ok(Decoded::Frame {
                event: Some(Event::Text("hi")),
                ..
            })
        ));
        let mut masked = client_frame(OpCode::Text, true, b"hi");
        assert_eq!(client.decode(&mut masked), Err(ProtocolError::BadMasking));
    }

    #[test]
    fn rsv1_without_extension_is_an_error() {
        let mut bytes = client_frame(OpCode::Text, true, b"x");
        bytes[0] |= 0x40;
        assert_eq!(decode_all(&bytes, 100).1, Some(ProtocolError::ReservedBits));
    }

    #[test]
    fn size_limit_is_checked_from_the_header() {
        // Only the header of a 1000-byte frame: refused before any payload arrives.
        let bytes = client_frame(OpCode::Binary, true, &[0; 1000]);
        assert_eq!(
            decode_all(&bytes[..8], 999).1,
            Some(ProtocolError::MessageTooBig)
        );
        // Fragments count together.
        let mut bytes = client_frame(OpCode::Binary, false, &[0; 600]);
        bytes.extend(client_frame(OpCode::Continuation, true, &[0; 600]));
        assert_eq!(
            decode_all(&bytes, 1000).1,
            Some(ProtocolError::MessageTooBig)
        );
        assert_eq!(decode_all(&bytes, 1200).1, None);
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_is_complete() {
        let mut payload = b"valid start ".to_vec();
        payload.push(0xFF);
        payload.extend([b'a'; 100]);
        let frame = client_frame(OpCode::Text, true, &payload);
        // Only the header and the bytes up to the bad one have arrived.
        let (_, err) = decode_all(&frame[..6 + 13], 1000);
        assert_eq!(err, Some(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn invalid_utf8_across_fragments() {
        let mut bytes = client_frame(OpCode::Text, false, b"\xce");
        bytes.extend(client_frame(OpCode::Continuation, true, b"\xba\xff"));
        assert_eq!(decode_all(&bytes, 100).1, Some(ProtocolError::InvalidUtf8));
        let mut bytes = client_frame(OpCode::Text, false, b"\xce");
        bytes.extend(client_frame(OpCode::Continuation, true, b"\xba"));
        assert_eq!(decode_all(&bytes, 100).0, ["Text(\"κ\")"]);
    }

    #[test]
    fn frame_arriving_byte_by_byte() {
        let text = "κόσμε ✓";
        let frame = client_frame(OpCode::Text, true, text.as_bytes());
        let mut d = Decoder::new(Role::Server, 100);
        let mut buf = Vec::new();
        for (i, &b) in frame.iter().enumerate() {
            buf.push(b);
            match d.decode(&mut buf).unwrap() {
                Decoded::Incomplete { .. } => assert!(i + 1 < frame.len()),
                Decoded::Frame { len, event } => {
                    assert_eq!(len, frame.len());
                    assert_eq!(event, Some(Event::Text(text)));
                }
            }
        }
    }

    #[test]
    fn close_frames() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend(b"bye");
        let (events, _) = decode_all(&client_frame(OpCode::Close, true, &payload), 100);
        assert_eq!(events, ["Close(Some(CloseCode(1000)), \"bye\")"]);
        let bad = client_frame(OpCode::Close, true, &[0x03]);
        assert_eq!(decode_all(&bad, 100).1, Some(ProtocolError::BadCloseFrame));
        let bad = client_frame(OpCode::Close, true, &1005u16.to_be_bytes());
        assert_eq!(decode_all(&bad, 100).1, Some(ProtocolError::BadCloseFrame));
    }

    fn deflate_decoder(max: usize) -> Decoder {
        use crate::proto::deflate::Params;
        let mut d = Decoder::new(Role::Server, max);
        d.set_inflater(Inflater::new(Params::default(), Role::Server));
        d
    }

    /// A masked client frame with RSV1 set on the first byte.
    fn compressed_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, opcode, fin, true, Some(mask_key()), payload);
        out
    }

    fn decode_with(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<String>, ProtocolError> {
        let mut buf = bytes.to_vec();
        let mut start = 0;
        let mut events = Vec::new();
        while let Decoded::Frame { len, event } = d.decode(&mut buf[start..])? {
            events.extend(event.map(|e| format!("{e:?}")));
            start += len;
        }
        Ok(events)
    }

    #[test]
    fn compressed_messages_rfc_7692_examples() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut d = deflate_decoder(100);
        // 7.2.3.1: one frame; 7.2.3.2: the same message twice, the second using the context.
        let mut bytes = compressed_frame(OpCode::Text, true, &hello);
        bytes.extend(compressed_frame(
            OpCode::Text,
            true,
            &[0xf2, 0x00, 0x11, 0x00, 0x00],
        ));
        // 7.2.3.1, fragmented: RSV1 on the first frame only.
        bytes.extend(compressed_frame(OpCode::Text, false, &hello[..3]));
        bytes.extend(client_frame(OpCode::Continuation, true, &hello[3..]));
        assert_eq!(
            decode_with(&mut d, &bytes),
            Ok(vec!["Text(\"Hello\")".to_string(); 3])
        );
    }

    #[test]
    fn rsv1_rules_with_deflate() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut bytes = compressed_frame(OpCode::Text, false, &hello[..3]);
        bytes.extend(compressed_frame(OpCode::Continuation, true, &hello[3..]));
        let err = decode_with(&mut deflate_decoder(100), &bytes);
        assert_eq!(err, Err(ProtocolError::ReservedBits));
        let ping = compressed_frame(OpCode::Ping, true, b"");
        let err = decode_with(&mut deflate_decoder(100), &ping);
        assert_eq!(err, Err(ProtocolError::ReservedBits));
    }

    #[test]
    fn compressed_bomb_and_corrupt_data() {
        let mut deflater = crate::proto::deflate::Deflater::new(
            crate::proto::deflate::Params::default(),
            Role::Client,
            9,
        );
        let mut bomb = Vec::new();
        deflater.deflate(&vec![0u8; 1 << 20], &mut bomb);
        assert!(bomb.len() < 2048);
        let frame = compressed_frame(OpCode::Binary, true, &bomb);
        let err = decode_with(&mut deflate_decoder(64 * 1024), &frame);
        assert_eq!(err, Err(ProtocolError::MessageTooBig));
        let garbage = [0xff; 16];
        let err = decode_with(
            &mut deflate_decoder(100),
            &compressed_frame(OpCode::Binary, true, &garbage),
        );
        assert_eq!(err, Err(ProtocolError::BadCompression));
        let err = decode_with(
            &mut deflate_decoder(100),
            &compressed_frame(OpCode::Text, true, &garbage),
        );
        assert_eq!(err, Err(ProtocolError::BadCompressedText));
    }

    #[test]
    fn many_tiny_fragments_are_one_message() {
        let mut bytes = client_frame(OpCode::Binary, false, &[7; 64]);
        for _ in 0..1000 {
            bytes.extend(client_frame(OpCode::Continuation, false, &[7; 64]));
        }
        bytes.extend(client_frame(OpCode::Continuation, true, &[]));
        let mut d = Decoder::new(Role::Server, 1 << 20);
        let mut start = 0;
        let mut got = None;
        while let Decoded::Frame { len, event } = d.decode(&mut bytes[start..]).unwrap() {
            start += len;
            if let Some(Event::Binary(b)) = event {
                got = Some(b.len());
                break;
            }
        }
        assert_eq!(got, Some(64 * 1001));
        assert_eq!(start, bytes.len());
    }

    /// A binary message in `frames` frames of `size` bytes each, as a client sends it.
    fn fragmented(frames: usize, size: usize) -> Vec<u8> {
        let mut bytes = client_frame(OpCode::Binary, frames == 1, &vec![7; size]);
        for i in 1..frames {
            bytes.extend(client_frame(
                OpCode::Continuation,
                i + 1 == frames,
                &vec![7; size],
            ));
        }
        bytes
    }

    #[test]
    fn max_fragments_counts_the_frames_of_one_message() {
        let decode = |bytes: &[u8], max: usize| {
            let mut d = Decoder::new(Role::Server, 1 << 20).with_max_fragments(max);
            decode_with(&mut d, bytes)
        };
        let at_limit = fragmented(5, 3);
        let message = format!("{:?}", Event::Binary(&[7; 15]));
        assert_eq!(decode(&at_limit, 5), Ok(vec![message]));
        assert_eq!(decode(&at_limit, 4), Err(ProtocolError::TooManyFragments));
        // 1 allows no fragmentation, but any number of whole messages.
        assert_eq!(
            decode(&fragmented(2, 1), 1),
            Err(ProtocolError::TooManyFragments)
        );
        let mut whole = fragmented(1, 4);
        whole.extend(fragmented(1, 4));
        assert_eq!(decode(&whole, 1).map(|events| events.len()), Ok(2));
        // Control frames between fragments do not count, and the count starts again with
        // each message.
        let mut bytes = client_frame(OpCode::Text, false, b"a");
        bytes.extend(client_frame(OpCode::Ping, true, b""));
        bytes.extend(client_frame(OpCode::Ping, true, b""));
        bytes.extend(client_frame(OpCode::Continuation, true, b"b"));
        bytes.extend(client_frame(OpCode::Text, false, b"c"));
        bytes.extend(client_frame(OpCode::Continuation, true, b"d"));
        let events = decode(&bytes, 2).unwrap();
        assert_eq!(events[2..], ["Text(\"ab\")", "Text(\"cd\")"]);
    }

    #[test]
    fn empty_continuation_flood_is_refused_at_the_default_limit() {
        let mut bytes = client_frame(OpCode::Binary, false, b"x");
        let empty = client_frame(OpCode::Continuation, false, b"");
        for _ in 1..DEFAULT_MAX_FRAGMENTS {
            bytes.extend(&empty);
        }
        // DEFAULT_MAX_FRAGMENTS frames: taken, the message still open.
        let mut d = Decoder::new(Role::Server, 1 << 20);
        assert_eq!(decode_with(&mut d, &bytes), Ok(vec![]));
        assert!(d.buffered() > 0, "the message is held, still open");
        // One more, before its payload or the header's end has any effect: refused.
        assert_eq!(
            decode_with(&mut d, &empty),
            Err(ProtocolError::TooManyFragments)
        );
        assert_eq!(
            ProtocolError::TooManyFragments.close_code(),
            CloseCode::POLICY
        );
        // So is a final frame past the limit; the limit's number of frames is one message.
        let mut d = Decoder::new(Role::Server, 1 << 20);
        bytes.extend(client_frame(OpCode::Continuation, true, b""));
        let err = decode_with(&mut d, &bytes);
        assert_eq!(err, Err(ProtocolError::TooManyFragments));
        bytes.truncate(bytes.len() - 2 * empty.len());
        bytes.extend(client_frame(OpCode::Continuation, true, b"y"));
        let mut d = Decoder::new(Role::Server, 1 << 20);
        assert_eq!(
            decode_with(&mut d, &bytes),
            Ok(vec!["Binary([120, 121])".to_string()])
        );
    }

    #[test]
    fn compressed_messages_count_their_frames_too() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut bytes = compressed_frame(OpCode::Text, false, &hello[..3]);
        bytes.extend(client_frame(OpCode::Continuation, false, &hello[3..5]));
        bytes.extend(client_frame(OpCode::Continuation, true, &hello[5..]));
        let mut d = deflate_decoder(100).with_max_fragments(3);
        assert_eq!(
            decode_with(&mut d, &bytes),
            Ok(vec!["Text(\"Hello\")".to_string()])
        );
        let mut d = deflate_decoder(100).with_max_fragments(2);
        assert_eq!(
            decode_with(&mut d, &bytes),
            Err(ProtocolError::TooManyFragments)
        );
    }

    #[test]
    fn masking_keys_do_not_repeat_across_refills_and_threads() {
        // 2,000 keys span many refills of the per-thread pool; another thread has its own.
        let here: Vec<[u8; 4]> = (0..2000).map(|_| mask_key()).collect();
        let there = std::thread::spawn(|| (0..2000).map(|_| mask_key()).collect::<Vec<_>>());
        let mut all = here;
        all.extend(there.join().unwrap());
        let ones: u32 = all
            .iter()
            .map(|k| u32::from_le_bytes(*k).count_ones())
            .sum();
        // 4,000 keys of 32 bits: about 64,000 ones; 62,000..66,000 is over 11 sigma.
        assert!((62_000..66_000).contains(&ones), "{ones} ones");
        all.sort_unstable();
        all.dedup();
        assert!(all.len() > 3990, "{} distinct of 4000", all.len());
    }
}
