//! One client connection's WebSocket protocol, without IO: the upgrade request and the check of
//! its answer (with permessage-deflate negotiation), masked (and compressed) frames out, frames
//! in (inflated, pings answered), and the closing handshake.
//!
//! The worker moves bytes between the socket and this: it reads into [`Conn::read_space`],
//! reports them with [`Conn::received`], and writes [`Conn::pending`], reporting with
//! [`Conn::written`]. Everything the protocol needs lives here, so that the rest of the load
//! generator does not know how frames look.

use wsloop::proto::deflate::{
    client_offer, parse_server_response, DeflateConfig, Deflater, Inflater,
};
use wsloop::proto::frame::{apply_mask, write_frame, FrameHeader, OpCode, MAX_HEADER_LEN};
use wsloop::proto::handshake::{check_response, new_key, write_request, HeadScanner};
use wsloop::proto::message::{Decoded, Decoder, Event as Frame};
use wsloop::proto::{CloseCode, Role};

/// Bytes asked for by one read, at least.
const MIN_READ: usize = 16 * 1024;
/// Largest handshake answer accepted.
const MAX_ANSWER: usize = 16 * 1024;

/// How every connection of a run speaks.
#[derive(Debug, Clone)]
pub struct Options {
    /// `Host` header value.
    pub host: String,
    /// Request path (with the query).
    pub path: String,
    /// Offer permessage-deflate (no context takeover either way).
    pub deflate: bool,
    /// No handshake, and our own masked frames come back (a raw TCP echo).
    pub raw: bool,
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Size of a read buffer when it is first needed.
    pub read_buffer: usize,
}

/// What one thread's connections share: the compressor (when no context is kept), scratch
/// buffers and the masking key generator.
pub struct Codec {
    deflater: Option<(Deflater, u8)>,
    raw: Vec<u8>,
    zbuf: Vec<u8>,
    rng: u64,
}

impl Codec {
    /// A codec whose masking keys start from `seed`.
    pub fn new(seed: u64) -> Codec {
        Codec {
            deflater: None,
            raw: Vec::new(),
            zbuf: Vec::new(),
            rng: seed | 1,
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        // xorshift64*: fast and different for every frame, which is all masking needs.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let b = (r >> 32).to_le_bytes();
        [b[0], b[1], b[2], b[3]]
    }
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The upgrade request is out; waiting for the answer.
    Handshake,
    /// Messages flow.
    Open,
    /// Our close frame is out; waiting for the server's.
    Closing,
}

/// What [`Conn::received`] found.
#[derive(Debug)]
pub enum Event<'a> {
    /// The handshake completed.
    Open,
    /// A whole data message.
    Message {
        /// Binary (else text).
        binary: bool,
        /// Its payload (inflated).
        payload: &'a [u8],
    },
}

/// Sends messages on one connection (handed to the event callback, and by [`Conn::sender`]).
pub struct Sender<'a> {
    wbuf: &'a mut Vec<u8>,
    compress: &'a mut Compress,
    codec: &'a mut Codec,
}

/// How a connection compresses what it sends.
enum Compress {
    /// Not at all (permessage-deflate not negotiated).
    No,
    /// With the thread's shared compressor (no context takeover, same window bits).
    Shared,
    /// With a compressor of its own.
    Own(Box<Deflater>),
}

impl Sender<'_> {
    /// Queues one message of `len` bytes, written by `fill` (then masked, compressed if
    /// negotiated).
    pub fn send(&mut self, binary: bool, len: usize, fill: impl FnOnce(&mut [u8])) {
        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
        let mask = self.codec.mask();
        let deflater = match self.compress {
            Compress::No => None,
            Compress::Shared => self.codec.deflater.as_mut().map(|(d, _)| d),
            Compress::Own(d) => Some(&mut **d),
        };
        if let Some(d) = deflater {
            let raw = &mut self.codec.raw;
            raw.clear();
            raw.resize(len, 0);
            fill(raw);
            self.codec.zbuf.clear();
            d.deflate(raw, &mut self.codec.zbuf);
            write_frame(self.wbuf, opcode, true, true, Some(mask), &self.codec.zbuf);
            return;
        }
        let header = FrameHeader {
            fin: true,
            rsv1: false,
            opcode,
            mask: Some(mask),
            payload_len: len as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        self.wbuf.extend_from_slice(&head[..n]);
        let start = self.wbuf.len();
        self.wbuf.resize(start + len, 0);
        fill(&mut self.wbuf[start..]);
        apply_mask(&mut self.wbuf[start..], mask, 0);
    }
}

/// One client connection's protocol state and buffers.
pub struct Conn {
    phase: Phase,
    decoder: Decoder,
    scanner: HeadScanner,
    /// The handshake's `Sec-WebSocket-Key`.
    key: String,
    compress: Compress,
    /// Received bytes in `rbuf[rs..re]`.
    rbuf: Vec<u8>,
    rs: usize,
    re: usize,
    /// Bytes to send in `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
}

impl Conn {
    /// A connection whose socket just connected: queues the upgrade request (or, with
    /// `opts.raw`, is open at once).
    pub fn new(opts: &Options) -> Conn {
        // A raw echo returns our masked frames: decode them as a server would.
        let role = if opts.raw { Role::Server } else { Role::Client };
        let mut conn = Conn {
            phase: if opts.raw {
                Phase::Open
            } else {
                Phase::Handshake
            },
            decoder: Decoder::new(role, opts.max_message_size),
            scanner: HeadScanner::default(),
            key: String::new(),
            compress: Compress::No,
            rbuf: Vec::new(),
            rs: 0,
            re: 0,
            wbuf: Vec::new(),
            wpos: 0,
        };
        if !opts.raw {
            conn.key = new_key();
            let offer = opts
                .deflate
                .then(|| client_offer(&DeflateConfig::default()));
            write_request(
                &mut conn.wbuf,
                &opts.host,
                &opts.path,
                &conn.key,
                &[],
                offer.as_deref(),
            );
        }
        conn
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// A sender for this connection.
    pub fn sender<'a>(&'a mut self, codec: &'a mut Codec) -> Sender<'a> {
        Sender {
            wbuf: &mut self.wbuf,
            compress: &mut self.compress,
            codec,
        }
    }

    /// Queues a close frame (1000); the connection is then closing.
    pub fn close(&mut self, codec: &mut Codec) {
        let payload = CloseCode::NORMAL.0.to_be_bytes();
        write_frame(
            &mut self.wbuf,
            OpCode::Close,
            true,
            false,
            Some(codec.mask()),
            &payload,
        );
        self.phase = Phase::Closing;
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        &self.wbuf[self.wpos..]
    }

    /// `n` bytes of [`pending`](Self::pending) were written.
    pub fn written(&mut self, n: usize) {
        self.wpos += n;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
    }

    /// Room to read into (at least 16 KiB, or all of a small first buffer).
    pub fn read_space(&mut self, initial: usize) -> &mut [u8] {
        let want = MIN_READ.min(initial);
        if self.rbuf.is_empty() {
            self.rbuf = vec![0; initial.max(want)];
            (self.rs, self.re) = (0, 0);
        }
        if self.rbuf.len() - self.re < want {
            let kept = self.re - self.rs;
            if self.rs > 0 {
                self.rbuf.copy_within(self.rs..self.re, 0);
                (self.rs, self.re) = (0, kept);
            }
            if self.rbuf.len() - self.re < want {
                let len = (kept + want).max(2 * self.rbuf.len());
                self.rbuf.resize(len, 0);
            }
        }
        &mut self.rbuf[self.re..]
    }

    /// Drops buffers that hold nothing (an idle connection keeps none).
    pub fn shrink(&mut self) {
        if self.rs == self.re && !self.rbuf.is_empty() {
            self.rbuf = Vec::new();
            (self.rs, self.re) = (0, 0);
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = Vec::new();
        }
    }

    /// Handles `n` bytes just read into [`read_space`](Self::read_space): the handshake
    /// answer, then frames, calling `on` for the handshake's completion and for every data
    /// message. `Ok(false)` once the server's close frame answered ours; an error for anything
    /// else that ends the connection (a refused handshake, a protocol error, the server's
    /// close, or an error from `on`).
    pub fn received(
        &mut self,
        n: usize,
        codec: &mut Codec,
        deflate: bool,
        mut on: impl FnMut(Event<'_>, &mut Sender<'_>) -> Result<(), String>,
    ) -> Result<bool, String> {
        self.re += n;
        if self.phase == Phase::Handshake {
            let Some(end) = self.scanner.find_end(&self.rbuf[self.rs..self.re]) else {
                if self.re - self.rs > MAX_ANSWER {
                    return Err("handshake answer too long".into());
                }
                return Ok(true);
            };
            let head = &self.rbuf[self.rs..self.rs + end];
            let accepted =
                check_response(head, &self.key, &[]).map_err(|e| format!("handshake: {e}"))?;
            self.rs += end;
            self.key = String::new();
            if let Some(ext) = accepted.extensions {
                if !deflate {
                    return Err(format!(
                        "handshake: server chose extensions {ext:?}, none offered"
                    ));
                }
                self.negotiated(codec, ext.as_bytes())?;
            }
            self.phase = Phase::Open;
            on(Event::Open, &mut self.sender(codec))?;
        }
        let Conn {
            rbuf,
            rs,
            re,
            wbuf,
            decoder,
            phase,
            compress,
            ..
        } = self;
        while *rs < *re {
            match decoder.decode(&mut rbuf[*rs..*re]) {
                Err(e) => return Err(format!("protocol error: {e}")),
                Ok(Decoded::Incomplete { frame_len }) => {
                    if let Some(len) = frame_len.filter(|&len| *rs + len > rbuf.len()) {
                        // Make the whole frame fit (moving the kept bytes to the front).
                        let kept = *re - *rs;
                        rbuf.copy_within(*rs..*re, 0);
                        (*rs, *re) = (0, kept);
                        if rbuf.len() < len {
                            rbuf.resize(len.next_power_of_two(), 0);
                        }
                    }
                    break;
                }
                Ok(Decoded::Frame { len, event }) => {
                    let mut sender = Sender {
                        wbuf,
                        compress,
                        codec,
                    };
                    match event {
                        None | Some(Frame::Pong(_)) => {}
                        Some(Frame::Text(_) | Frame::Binary(_)) if *phase == Phase::Closing => {}
                        Some(Frame::Text(t)) => on(
                            Event::Message {
                                binary: false,
                                payload: t.as_bytes(),
                            },
                            &mut sender,
                        )?,
                        Some(Frame::Binary(b)) => on(
                            Event::Message {
                                binary: true,
                                payload: b,
                            },
                            &mut sender,
                        )?,
                        Some(Frame::Ping(p)) => {
                            let mask = sender.codec.mask();
                            write_frame(sender.wbuf, OpCode::Pong, true, false, Some(mask), p);
                        }
                        Some(Frame::Close(code, reason)) => {
                            if *phase == Phase::Closing {
                                return Ok(false);
                            }
                            return Err(format!("server closed: {code:?} {reason:?}"));
                        }
                    }
                    *rs += len;
                }
            }
        }
        if *rs == *re {
            (*rs, *re) = (0, 0);
        }
        Ok(true)
    }

    /// Takes the server's permessage-deflate answer: an inflater, and the shared compressor
    /// or one of our own.
    fn negotiated(&mut self, codec: &mut Codec, ext: &[u8]) -> Result<(), String> {
        let params = parse_server_response(ext, &DeflateConfig::default())
            .map_err(|e| format!("handshake: {e}"))?;
        self.decoder
            .set_inflater(Inflater::new(params, Role::Client));
        let level = DeflateConfig::default().level;
        let bits = params.client_max_window_bits;
        let shared = params.client_no_context_takeover;
        self.compress = match &codec.deflater {
            None if shared => {
                codec.deflater = Some((Deflater::new(params, Role::Client, level), bits));
                Compress::Shared
            }
            Some((_, b)) if shared && *b == bits => Compress::Shared,
            _ => Compress::Own(Box::new(Deflater::new(params, Role::Client, level))),
        };
        Ok(())
    }
}
