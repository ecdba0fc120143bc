//! Bytes in, as a pull API: an [`Input`] holds one read's bytes, and
//! [`Connection::poll_event`] decodes them event by event.
//!
//! An event borrows the [`Input`] (the caller's read buffer, or the connection's kept bytes
//! of an unfinished frame, lent out while the input lives), never the connection, so that
//! the caller may use this connection and any other while it handles the event.

use super::{Connection, Endpoint, Event, Phase, Polled};
use crate::proto::buffer::RxBuf;
use crate::proto::handshake::HttpResponse;
use crate::proto::message::Assembled;

/// The smallest read into a connection's kept bytes: a large frame arriving in small reads is
/// not copied anew on each.
const MIN_READ: usize = 16 * 1024;

/// One read's bytes, being decoded by [`Connection::poll_event`].
///
/// Made by [`Connection::input`] (read into its [`room`](Input::room), then say how much
/// with [`filled`](Input::filled)) or [`Connection::input_from`] (bytes already read);
/// handed back with [`Connection::end_input`], which keeps an unfinished frame's bytes for
/// the next read.
#[derive(Debug)]
pub struct Input<'b> {
    bytes: Bytes<'b>,
    /// Bytes of `bytes` that hold data.
    len: usize,
    /// Bytes decoded so far.
    pos: usize,
    /// Frames and heads decoded.
    frames: usize,
    /// The message of several frames (or inflated) last handed out, until the next call.
    assembled: Option<Assembled>,
    /// New bytes arrived: the peer was heard from.
    fresh: bool,
    /// An upgrade request was handed out: it must have been answered by the next call.
    asked: bool,
}

/// Where an input's bytes are.
#[derive(Debug)]
enum Bytes<'b> {
    /// The caller's buffer.
    Lent(&'b mut [u8]),
    /// The connection's kept bytes of an unfinished frame or head, with more read after them.
    Kept(RxBuf),
}

impl<'b> Input<'b> {
    #[inline]
    fn new(bytes: Bytes<'b>, len: usize) -> Input<'b> {
        Input {
            bytes,
            len,
            pos: 0,
            frames: 0,
            assembled: None,
            fresh: false,
            asked: false,
        }
    }

    /// Where to read the next bytes (all of it may be used).
    #[inline]
    pub fn room(&mut self) -> &mut [u8] {
        match &mut self.bytes {
            Bytes::Lent(buf) => &mut buf[self.len..],
            Bytes::Kept(kept) => kept.spare_tail(),
        }
    }

    /// `n` bytes were read into [`room`](Self::room).
    #[inline]
    pub fn filled(&mut self, n: usize) {
        if let Bytes::Kept(kept) = &mut self.bytes {
            kept.filled(n);
        }
        self.len += n;
        self.fresh |= n > 0;
    }

    /// Frames (and request or response heads) decoded from this input so far.
    #[inline]
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Whether nothing is owed before the next event (see `Connection::settle_input`).
    #[inline(always)]
    fn is_settled(&self) -> bool {
        !self.fresh && !self.asked && self.assembled.is_none()
    }

    /// Gives back what the input holds, for a connection that is gone.
    pub fn release(self, ep: &mut Endpoint) {
        if let Bytes::Kept(mut kept) = self.bytes {
            kept.release(&mut ep.pool);
        }
    }
}

impl Connection {
    /// Starts a read: the input's [`room`](Input::room) is `buf` (typically one buffer shared
    /// by every connection), or, while the connection holds the front of an unfinished frame,
    /// the room after those bytes (so that a large frame is not copied again). Read into it,
    /// then call [`Input::filled`], [`poll_event`](Self::poll_event) until `None`, and
    /// [`end_input`](Self::end_input).
    #[inline]
    pub fn input<'b>(&mut self, ep: &mut Endpoint, buf: &'b mut [u8]) -> Input<'b> {
        match self.take_kept(ep, MIN_READ.min(buf.len())) {
            Some(kept) => {
                let len = kept.len();
                Input::new(Bytes::Kept(kept), len)
            }
            None => Input::new(Bytes::Lent(buf), 0),
        }
    }

    /// An input of `bytes` already read (they may be changed: payloads are unmasked in
    /// place); while the connection holds the front of an unfinished frame they are copied
    /// after it.
    pub fn input_from<'b>(&mut self, ep: &mut Endpoint, bytes: &'b mut [u8]) -> Input<'b> {
        let mut input = match self.take_kept(ep, bytes.len().max(4)) {
            Some(mut kept) => {
                kept.append(bytes, &mut ep.pool);
                let len = kept.len();
                Input::new(Bytes::Kept(kept), len)
            }
            None => {
                let len = bytes.len();
                Input::new(Bytes::Lent(bytes), len)
            }
        };
        input.fresh = input.len > 0;
        input
    }

    /// The kept bytes, taken out with room for `min_read` more (or more towards the frame's
    /// size, at most twice what is kept); `None` if there are none, or if the connection no
    /// longer reads (then they are dropped).
    #[inline]
    fn take_kept(&mut self, ep: &mut Endpoint, min_read: usize) -> Option<RxBuf> {
        if self.kept.is_empty() {
            return None;
        }
        self.take_kept_bytes(ep, min_read)
    }

    /// [`take_kept`](Self::take_kept) when there are kept bytes.
    #[inline(never)]
    fn take_kept_bytes(&mut self, ep: &mut Endpoint, min_read: usize) -> Option<RxBuf> {
        let mut kept = std::mem::take(&mut self.kept);
        if !self.wants_read() {
            kept.release(&mut ep.pool);
            return None;
        }
        let want = match self.parser.want {
            0 => usize::MAX,
            n => n as usize,
        };
        kept.spare(want, min_read, &mut ep.pool);
        Some(kept)
    }

    /// The next event in `input`, or `None` once nothing more can be decoded from it (the
    /// rest, if any, is the front of an unfinished frame or head).
    ///
    /// Protocol duties are done as the bytes are decoded: pings are answered, a close frame
    /// is answered, a protocol error queues the close frame it calls for and ends the input.
    /// An [`Event::Request`] must be answered with [`answer`](Self::answer) before the next
    /// call; one left unanswered is refused with 500.
    #[inline]
    pub fn poll_event<'i>(
        &mut self,
        ep: &mut Endpoint,
        input: &'i mut Input<'_>,
    ) -> Option<Event<'i>> {
        // The usual end of an input, in few instructions.
        if input.pos == input.len && input.is_settled() {
            return None;
        }
        self.decode_input(ep, input)
    }

    /// [`poll_event`](Self::poll_event)'s work.
    fn decode_input<'i>(
        &mut self,
        ep: &mut Endpoint,
        input: &'i mut Input<'_>,
    ) -> Option<Event<'i>> {
        self.settle_input(ep, input);
        let start = input.pos;
        let Input {
            bytes,
            len,
            pos,
            frames,
            assembled,
            asked,
            ..
        } = input;
        let all: &'i mut [u8] = match bytes {
            Bytes::Lent(buf) => &mut buf[..*len],
            Bytes::Kept(kept) => kept.bytes_mut(),
        };
        let mut rest: &'i mut [u8] = &mut all[start..];
        while !rest.is_empty() {
            let before = rest.len();
            let polled = self.poll_bytes(ep, &mut rest);
            *pos += before - rest.len();
            match polled {
                Polled::Used(None) => *frames += 1,
                Polled::Used(Some(event)) => {
                    *frames += 1;
                    *asked = matches!(event, Event::Request(_));
                    return Some(event);
                }
                Polled::Assembled(message) => {
                    *frames += 1;
                    if !matches!(self.phase, Phase::Open | Phase::Closing) {
                        self.parser.decoder.reuse(message);
                        continue;
                    }
                    // Kept in the input, which the event borrows, until the next call.
                    let message: &'i Assembled = assembled.insert(message);
                    return match message.event() {
                        Ok(event) => self.on_frame_event(ep, event),
                        Err(e) => {
                            *pos = *len;
                            Some(self.protocol_error(ep, e))
                        }
                    };
                }
                Polled::Partial => return None,
                Polled::Discard(event) => {
                    *pos = *len;
                    return event;
                }
            }
        }
        None
    }

    /// Ends a read: keeps the bytes of an unfinished frame or head that `input` ends with
    /// (copied if they were the caller's) for the next one, and frees what the decoder holds
    /// for a message already handed out.
    #[inline]
    pub fn end_input(&mut self, ep: &mut Endpoint, mut input: Input<'_>) {
        if !input.is_settled() {
            self.settle_input(ep, &mut input);
        }
        let (pos, len) = (input.pos, input.len);
        let reads = self.wants_read();
        match input.bytes {
            Bytes::Lent(buf) if reads && pos < len => {
                let want = self.parser.want as usize;
                self.kept.keep(&buf[pos..len], want, &mut ep.pool);
            }
            Bytes::Lent(_) => {}
            Bytes::Kept(mut kept) if reads => {
                kept.consume(pos, &mut ep.pool);
                self.kept = kept;
            }
            Bytes::Kept(mut kept) => kept.release(&mut ep.pool),
        }
        if pos == len {
            self.parser.decoder.release();
            self.parser.want = 0;
        }
    }

    /// What is owed before the next event: the last assembled message's buffer goes back to
    /// the decoder, the peer is noted as heard from, and an upgrade request left unanswered is
    /// refused.
    #[inline(always)]
    fn settle_input(&mut self, ep: &mut Endpoint, input: &mut Input<'_>) {
        if let Some(message) = input.assembled.take() {
            self.parser.decoder.reuse(message);
        }
        if input.fresh {
            input.fresh = false;
            self.heard(ep);
        }
        if input.asked {
            input.asked = false;
            if self.phase == Phase::Handshake {
                log::error!("a request went unanswered: refused with 500");
                self.reject(ep, &HttpResponse::text(500, "request not answered"));
                input.pos = input.len;
            }
        }
    }
}
