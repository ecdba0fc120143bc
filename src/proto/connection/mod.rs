//! One connection's whole life as a deterministic state machine, in the server or the client
//! role: no sockets, no clocks, no `mio`. The server's reactor, [`Client`](crate::client::Client)
//! and the load generator all drive it; so can any other event loop.
//!
//! Its inputs and outputs come in pairs, in the style of quinn-proto:
//!
//! | input | output |
//! |---|---|
//! | bytes read from the peer: [`recv`](Connection::recv) | [`Event`]s, handed to its callback |
//! | [`send`](Connection::send), [`ping`](Connection::ping), [`close`](Connection::close) | bytes to write: [`transmit`](Connection::transmit), then [`advance`](Connection::advance) |
//! | the time: [`handle_timeout`](Connection::handle_timeout) | the next deadline: [`poll_timeout`](Connection::poll_timeout) |
//! | the transport ended: [`handle_disconnect`](Connection::handle_disconnect) | [`is_finished`](Connection::is_finished), [`wants_shutdown`](Connection::wants_shutdown) |
//!
//! After any input, write out what [`transmit`](Connection::transmit) holds and arm a timer
//! for [`poll_timeout`](Connection::poll_timeout) ([`send_to`](Connection::send_to) writes a
//! large message straight to a socket instead of copying it into the queue). Protocol duties
//! need no help: pings are answered, a close frame is answered and the close handshake is
//! timed, a peer that breaks the protocol gets the close code RFC 6455 calls for, and a peer
//! silent for too long is pinged and then closed.
//!
//! What connections of one endpoint share (the limits of a [`ConnectionConfig`], a buffer
//! pool, permessage-deflate compressors, the clock) is an [`Endpoint`], passed to each call. A
//! connection with nothing pending owns no buffer; only the bytes of an unfinished frame are
//! kept (copied) between reads, and an unfragmented message is handed out where it was read.
//!
//! ```
//! use std::time::Instant;
//! use wsloop::proto::connection::{Connection, Endpoint, Event};
//! use wsloop::{ConnectionConfig, Message};
//!
//! let now = Instant::now();
//! let mut ep = Endpoint::new(ConnectionConfig::default(), now);
//! let mut client = Connection::client(&mut ep, "example.com", "/", &[]);
//! let mut server = Connection::server(&mut ep);
//!
//! // What one writes, the other reads (a real program moves the bytes over a socket).
//! let mut request = client.transmit().to_vec();
//! client.advance(&mut ep, request.len());
//! server.recv(&mut ep, now, &mut request, |conn, ep, event| {
//!     if let Event::Request(head) = event {
//!         conn.answer(ep, head, |_request| Ok(None)); // accept, with no subprotocol
//!     }
//! });
//! let mut answer = server.transmit().to_vec();
//! server.advance(&mut ep, answer.len());
//! let mut opened = false;
//! client.recv(&mut ep, now, &mut answer, |_, _, event| {
//!     opened = matches!(event, Event::Opened { protocol: None });
//! });
//! assert!(opened);
//!
//! client.send(&mut ep, Message::Text("hello")).unwrap();
//! let mut frame = client.transmit().to_vec(); // masked, as a client must
//! client.advance(&mut ep, frame.len());
//! server.recv(&mut ep, now, &mut frame, |conn, ep, event| {
//!     if let Event::Message(msg) = event {
//!         assert_eq!(msg, Message::Text("hello"));
//!         conn.send(ep, msg).unwrap(); // echo
//!     }
//! });
//! assert_eq!(server.transmit(), b"\x81\x05hello");
//! ```

mod compress;
mod config;
mod endpoint;
mod events;
mod input;

use std::io::{self, IoSlice, Write};
use std::time::Instant;

pub use crate::proto::clock::Millis;
pub(crate) use compress::{Compress, Compressors};
pub(crate) use config::options;
pub use config::{ConnectionConfig, Overflow};
pub use endpoint::{Broadcast, Endpoint, Refusals};
pub use events::{CloseReason, Event, Message, SendError};
pub use input::Input;

use crate::proto::buffer::RxBuf;
use crate::proto::deflate::{
    self, client_offer, parse_server_response, ExtensionResponseError, Inflater,
};
use crate::proto::frame::{write_frame, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::proto::handshake::{
    check_response, new_key, write_accept, write_request, HeadScanner, Headers, HttpResponse,
    Rejection, Request, ResponseError,
};
use crate::proto::message::{self, take_front, Decoder, Step};
use crate::proto::queue::TxBuf;
use crate::proto::{CloseCode, ProtocolError, Role};

/// Messages at least this large are written straight from the sender's bytes when nothing is
/// queued before them (see [`Connection::send_to`]); smaller ones are queued.
const DIRECT_WRITE: usize = 32 * 1024;

/// The largest response head a client accepts.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for the upgrade request (server) or its answer (client).
    Handshake,
    /// Upgraded: messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; its messages still arrive meanwhile
    /// (nothing more may be sent), its pings go unanswered.
    Closing,
    /// Done as far as the application knows: our last bytes are written, then the transport
    /// shuts down writing and waits for the peer to close, at most `close_timeout`. Nothing
    /// more is read (see [`Connection::wants_read`]): what the peer sends can no longer be
    /// answered.
    Linger,
    /// Nothing more to do: drop the connection and its transport.
    Finished,
}

/// The receive side's protocol state.
#[derive(Debug)]
struct Parser {
    decoder: Decoder,
    scanner: HeadScanner,
    /// Total size of the frame or head that the kept bytes are waiting to complete, if known
    /// (else 0; `u32::MAX` for anything larger).
    want: u32,
}

/// What a client's handshake must remember until the answer comes.
#[derive(Debug)]
struct ClientHello {
    key: String,
    protocols: Vec<String>,
}

/// One WebSocket connection, server or client role, as a state machine (see the
/// [module documentation](self)).
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    /// A keepalive ping went out and nothing has arrived since.
    ping_sent: bool,
    /// Bytes of an unfinished frame or head, kept between reads.
    kept: RxBuf,
    parser: Parser,
    tx: TxBuf,
    compress: Compress,
    /// Open: when the peer was last heard from (keepalive and idle deadlines follow from it);
    /// otherwise the phase's deadline (handshake, close or linger). One field for both keeps
    /// an idle connection small.
    clock: Millis,
    /// Client role, until the handshake's answer.
    hello: Option<Box<ClientHello>>,
}

/// What [`Connection::poll_event`] made of the bytes at hand.
#[derive(Debug)]
enum Polled<'a> {
    /// A frame or head was used, completing `event` if any (a fragment or a frame handled
    /// inside the connection completes none).
    Used(Option<Event<'a>>),
    /// A frame was used, completing a message gathered from several frames (or inflated),
    /// handed out owned.
    Assembled(message::Assembled),
    /// The bytes hold only part of a frame or head: keep them and read more.
    Partial,
    /// Nothing more is read from this peer: drop the bytes, after `event` if any.
    Discard(Option<Event<'a>>),
}

impl Connection {
    /// A server-side connection, just accepted: it waits for the upgrade request, at most
    /// `handshake_timeout`.
    pub fn server(ep: &mut Endpoint) -> Connection {
        let deadline = ep.now + ep.spans.handshake;
        Connection::new(ep, Role::Server, deadline)
    }

    /// A client-side connection: its upgrade request for `path` on `host`, offering
    /// `protocols` (and permessage-deflate if the endpoint's config has `deflate`), is queued
    /// for [`transmit`](Self::transmit). [`Event::Opened`] or [`Event::Refused`] tells the
    /// outcome.
    pub fn client(ep: &mut Endpoint, host: &str, path: &str, protocols: &[&str]) -> Connection {
        let deadline = ep.now + ep.spans.handshake;
        let mut conn = Connection::new(ep, Role::Client, deadline);
        let key = new_key();
        let offer = ep.config.deflate.as_ref().map(client_offer);
        let mut request = Vec::with_capacity(256);
        write_request(&mut request, host, path, &key, protocols, offer.as_deref());
        conn.tx.adopt(request, &mut ep.pool);
        conn.hello = Some(Box::new(ClientHello {
            key,
            protocols: protocols.iter().map(|p| (*p).to_owned()).collect(),
        }));
        conn
    }

    fn new(ep: &Endpoint, role: Role, deadline: Millis) -> Connection {
        Connection {
            phase: Phase::Handshake,
            ping_sent: false,
            kept: RxBuf::default(),
            parser: Parser {
                decoder: Decoder::with_limits(role, ep.limits.clone()),
                scanner: HeadScanner::default(),
                want: 0,
            },
            tx: TxBuf::default(),
            compress: Compress::default(),
            clock: deadline,
            hello: None,
        }
    }

    /// Where the connection is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the connection is open: upgraded, and neither closing nor closed.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether nothing more will happen: drop the connection and its transport.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Whether the peer's bytes are still wanted. Once lingering they can no longer be
    /// answered: an owner stops reading (so that a peer that keeps sending is held back by
    /// the transport's flow control, not read and discarded) and only watches for the peer's
    /// end of stream, then calls [`handle_disconnect`](Self::handle_disconnect).
    pub fn wants_read(&self) -> bool {
        !matches!(self.phase, Phase::Linger | Phase::Finished)
    }

    fn role(&self) -> Role {
        self.parser.decoder.role()
    }

    // ---- bytes in ------------------------------------------------------------------------

    /// Feeds `bytes` read from the peer at `now` (they may be changed: payloads are unmasked
    /// in place) and calls `on_event` with each event, in order, with the connection and the
    /// endpoint so that it can answer. Bytes of an unfinished frame are kept (copied) for the
    /// next call; nothing else is copied.
    ///
    /// Call it after every read, then write out [`transmit`](Self::transmit). It is
    /// [`input_from`](Self::input_from), [`poll_event`](Self::poll_event) until `None`, and
    /// [`end_input`](Self::end_input): an owner that must reach other connections while it
    /// handles an event (a server's handler) makes those calls itself.
    pub fn recv(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        bytes: &mut [u8],
        mut on_event: impl FnMut(&mut Connection, &mut Endpoint, Event<'_>),
    ) {
        ep.set_now(now);
        let mut input = self.input_from(ep, bytes);
        while let Some(event) = self.poll_event(ep, &mut input) {
            on_event(self, ep, event);
        }
        self.end_input(ep, input);
    }

    /// Notes that bytes arrived at the endpoint's current time.
    fn heard(&mut self, ep: &Endpoint) {
        if self.phase == Phase::Open {
            self.clock = ep.now;
        }
        self.ping_sent = false;
    }

    /// Decodes what the front of `bytes` holds: a request or response head while
    /// handshaking, then one frame, and moves `bytes` past what it used. Protocol duties are
    /// done here: pings are answered, a close frame is answered, a protocol error queues the
    /// close frame it calls for. The event borrows the bytes it came from only, so that the
    /// connection (and the rest of `bytes`) can be used while it is handled.
    #[inline(always)]
    fn poll_bytes<'b>(&mut self, ep: &mut Endpoint, bytes: &mut &'b mut [u8]) -> Polled<'b> {
        match self.phase {
            Phase::Linger | Phase::Finished => Polled::Discard(None),
            Phase::Handshake => match self.role() {
                Role::Server => self.poll_request(ep, bytes),
                Role::Client => self.poll_response(ep, bytes),
            },
            Phase::Open | Phase::Closing => match self.parser.decoder.step(bytes) {
                Err(e) => Polled::Discard(Some(self.protocol_error(ep, e))),
                Ok(Step::Incomplete { frame_len }) => {
                    self.parser.want =
                        frame_len.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
                    Polled::Partial
                }
                Ok(Step::Frame { event, .. }) => {
                    Polled::Used(event.and_then(|e| self.on_frame_event(ep, e)))
                }
                Ok(Step::Assembled { message, .. }) => Polled::Assembled(message),
            },
        }
    }

    /// The peer broke the protocol: queues the close frame `e` calls for; returns the event.
    fn protocol_error(&mut self, ep: &mut Endpoint, e: ProtocolError) -> Event<'static> {
        log::debug!("protocol error: {e}");
        self.fail(ep, e.close_code(), e.as_str());
        Event::Closed(CloseReason::ProtocolError(e))
    }

    /// Does the protocol's part for a decoded event and says what the application sees: a
    /// message at once (inlined: it runs per message), the rest out of line.
    #[inline(always)]
    fn on_frame_event<'a>(
        &mut self,
        ep: &mut Endpoint,
        event: message::Event<'a>,
    ) -> Option<Event<'a>> {
        // After our close frame the peer's data still arrives until its own close (RFC 6455
        // section 1.4: only data after *receiving* a close is discarded).
        let receiving = matches!(self.phase, Phase::Open | Phase::Closing);
        match event {
            message::Event::Text(text) if receiving => Some(Event::Message(Message::Text(text))),
            message::Event::Binary(bytes) if receiving => {
                Some(Event::Message(Message::Binary(bytes)))
            }
            other => self.on_control_event(ep, other),
        }
    }

    /// [`on_frame_event`](Self::on_frame_event) for control frames and what is discarded.
    #[inline(never)]
    fn on_control_event<'a>(
        &mut self,
        ep: &mut Endpoint,
        event: message::Event<'a>,
    ) -> Option<Event<'a>> {
        let open = self.phase == Phase::Open;
        let receiving = open || self.phase == Phase::Closing;
        match event {
            message::Event::Ping(payload) if open => {
                // A peer that pings without reading its pongs fills its queue like any other.
                if !ep
                    .config
                    .queue_admits(self.tx.len(), MAX_HEADER_LEN + payload.len())
                {
                    self.overflow(ep);
                    if !self.is_open() {
                        return Some(Event::Closed(CloseReason::Overflow));
                    }
                } else {
                    self.queue_frame(ep, OpCode::Pong, payload);
                }
                Some(Event::Ping(payload))
            }
            message::Event::Pong(payload) if receiving => Some(Event::Pong(payload)),
            message::Event::Close(code, reason) => {
                // Echo the peer's code (RFC 6455 section 5.5.1); none if it sent none.
                self.close_frame(ep, code, "", Phase::Linger);
                Some(Event::Closed(CloseReason::Closed { code, reason }))
            }
            _ => None,
        }
    }

    /// Server role, handshaking: waits for a whole request head, within the size limit.
    fn poll_request<'a>(&mut self, ep: &mut Endpoint, bytes: &mut &'a mut [u8]) -> Polled<'a> {
        let max = ep.config.max_handshake_size;
        match self.parser.scanner.find_end(bytes) {
            Some(end) if end <= max => {
                self.parser.scanner = HeadScanner::default();
                Polled::Used(Some(Event::Request(take_front(bytes, end))))
            }
            None if bytes.len() < max => Polled::Partial,
            _ => {
                self.reject(ep, &Rejection::HeadersTooLarge.response());
                Polled::Discard(None)
            }
        }
    }

    /// Client role, handshaking: waits for the whole answer and checks it.
    fn poll_response<'a>(&mut self, ep: &mut Endpoint, bytes: &mut &'a mut [u8]) -> Polled<'a> {
        let end = match self.parser.scanner.find_end(bytes) {
            Some(end) => end,
            None if bytes.len() < MAX_RESPONSE_HEAD => return Polled::Partial,
            None => return self.handshake_failed(ResponseError::HeadTooLarge),
        };
        let Some(hello) = self.hello.take() else {
            return self.handshake_failed(ResponseError::Malformed);
        };
        let head: &'a [u8] = take_front(bytes, end);
        let protocols: Vec<&str> = hello.protocols.iter().map(String::as_str).collect();
        let accepted = match check_response(head, &hello.key, &protocols) {
            Ok(accepted) => accepted,
            Err(e) => return self.handshake_failed(e),
        };
        let deflate = match (&ep.config.deflate, accepted.extensions.as_deref()) {
            (_, None) => None,
            (Some(cfg), Some(value)) => match parse_server_response(value.as_bytes(), cfg) {
                Ok(params) => Some(params),
                Err(e) => return self.handshake_failed(ResponseError::Extensions(e)),
            },
            (None, Some(_)) => {
                let e = ExtensionResponseError::NotOffered;
                return self.handshake_failed(ResponseError::Extensions(e));
            }
        };
        if let Some(params) = deflate {
            (self.parser.decoder).set_inflater(Inflater::new(params, Role::Client));
            self.compress = ep.compressors.mode(params, Role::Client);
        }
        self.open(ep);
        // The protocol is found again in the head, borrowed (the check returned it owned).
        let protocol = accepted.protocol.as_ref().and_then(|p| {
            let head = std::str::from_utf8(head).ok()?;
            head.find(p.as_str()).map(|at| &head[at..at + p.len()])
        });
        Polled::Used(Some(Event::Opened { protocol }))
    }

    /// Client role: the handshake failed; the connection ends without a close frame.
    fn handshake_failed<'a>(&mut self, why: ResponseError) -> Polled<'a> {
        self.phase = Phase::Finished;
        Polled::Discard(Some(Event::Refused(why)))
    }

    /// Server role: answers the request `head` (from [`Event::Request`]). The request is
    /// checked against RFC 6455 (a bad one is refused with the HTTP status it calls for, and
    /// an `Origin` not in `allowed_origins` with 403); then `decide` sees it and answers
    /// `Ok(protocol)` to accept, choosing one of the offered subprotocols or none, or
    /// `Err(response)` to refuse. A plain GET that asks for no upgrade goes to `decide` too
    /// (see [`Request::wants_websocket`]), whose `Err(page)` serves it.
    ///
    /// Returns whether the connection is now open (its 101 answer queued).
    pub fn answer(
        &mut self,
        ep: &mut Endpoint,
        head: &[u8],
        decide: impl FnOnce(&Request<'_, '_>) -> Result<Option<String>, HttpResponse>,
    ) -> bool {
        let mut headers = Headers::new();
        let req = match Request::parse(head, &mut headers) {
            Ok(req) => req,
            Err(e) => {
                self.reject(ep, &Rejection::from(e).response());
                return false;
            }
        };
        if !req.wants_websocket() && req.method() == "GET" {
            let resp = decide(&req)
                .err()
                .unwrap_or_else(HttpResponse::upgrade_required);
            self.reject(ep, &resp);
            return false;
        }
        let key = match req.validate_upgrade() {
            Ok(key) => key,
            Err(rejection) => {
                self.reject(ep, &rejection.response());
                return false;
            }
        };
        let origins = &ep.config.allowed_origins;
        if let Some(origin) = req.origin().filter(|_| !origins.is_empty()) {
            if !origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim()))
            {
                ep.refusals.origin += 1;
                self.reject(ep, &HttpResponse::text(403, "origin not allowed"));
                return false;
            }
        }
        let protocol = match decide(&req) {
            Ok(protocol) => protocol,
            Err(resp) => {
                self.reject(ep, &resp);
                return false;
            }
        };
        if let Some(p) = &protocol {
            if !req.protocols().any(|offered| offered == p) {
                log::error!("the application chose subprotocol {p:?}, which was not offered");
                let resp = HttpResponse::text(500, "server chose an unoffered subprotocol");
                self.reject(ep, &resp);
                return false;
            }
        }
        let deflate = ep.config.deflate.as_ref().and_then(|cfg| {
            let offers = req.header_values("sec-websocket-extensions");
            deflate::negotiate(offers.map(str::as_bytes), cfg)
        });
        let extensions = deflate.map(|params| params.response_header_value());
        if let Some(params) = deflate {
            (self.parser.decoder).set_inflater(Inflater::new(params, Role::Server));
            self.compress = ep.compressors.mode(params, Role::Server);
        }
        // A buffer of the answer's size rather than a pool buffer: a burst of handshakes then
        // touches a few hundred bytes each, not 16 KiB buffers that stay resident.
        let mut accept = Vec::with_capacity(256);
        write_accept(&mut accept, key, protocol.as_deref(), extensions.as_deref());
        self.tx.adopt(accept, &mut ep.pool);
        self.open(ep);
        true
    }

    fn open(&mut self, ep: &Endpoint) {
        self.phase = Phase::Open;
        self.clock = ep.now;
    }

    /// Server role: refuses the upgrade with `resp`, then lingers until the peer closes (at
    /// most `close_timeout`). Anything it sends meanwhile is discarded.
    pub fn reject(&mut self, ep: &mut Endpoint, resp: &HttpResponse) {
        log::debug!("answered {}", resp.status());
        if resp.status() >= 400 {
            ep.refusals.count(resp.status());
        }
        let mut out = Vec::new();
        resp.write_to(&mut out);
        self.tx.vec(out.len(), &mut ep.pool).extend_from_slice(&out);
        self.linger(ep);
    }

    /// Stops the connection without a word: what is queued is still written, then it
    /// lingers until the peer closes (at most `close_timeout`).
    pub fn linger(&mut self, ep: &Endpoint) {
        self.phase = Phase::Linger;
        self.clock = ep.now + ep.spans.close;
    }

    /// The transport ended (end of stream, an I/O error) or its owner drops the connection:
    /// it gives its buffers back to `ep`'s pool and is finished. Returns the event the
    /// application is owed if it knew the connection as open. Call it once a connection
    /// [`is_finished`](Self::is_finished) too, before dropping it, so that its buffers are
    /// pooled; more calls change nothing.
    pub fn handle_disconnect(&mut self, ep: &mut Endpoint) -> Option<Event<'static>> {
        let owed = self.owes_close();
        self.kept.release(&mut ep.pool);
        self.tx.release(&mut ep.pool);
        self.phase = Phase::Finished;
        owed.then_some(Event::Closed(CloseReason::Disconnected))
    }

    /// Whether the application knows the connection as open and is owed its
    /// [`Event::Closed`] when it ends: the rule for every way a connection can end.
    fn owes_close(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing)
    }

    // ---- bytes out -----------------------------------------------------------------------

    /// Queues a message (compressed if permessage-deflate was negotiated and the message
    /// reaches the threshold).
    ///
    /// # Errors
    /// [`SendError::NotOpen`] unless open; [`SendError::Full`] if the queue would pass
    /// `max_write_buffer` (with `Overflow::Close` the connection is then closed with 1008:
    /// it is no longer [`is_open`](Self::is_open)).
    pub fn send(&mut self, ep: &mut Endpoint, msg: Message<'_>) -> Result<(), SendError> {
        self.send_message(ep, msg, true, None::<&mut io::Sink>)
    }

    /// Like [`send`](Self::send), but never compressed (for data already compressed, say).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_uncompressed(
        &mut self,
        ep: &mut Endpoint,
        msg: Message<'_>,
    ) -> Result<(), SendError> {
        self.send_message(ep, msg, false, None::<&mut io::Sink>)
    }

    /// Like [`send`](Self::send), but a large message (32 KiB or more) with nothing queued
    /// before it is written straight to `out` from `msg`'s bytes (its header and payload in
    /// one vectored write), and only what `out` did not take is queued: a large send to a
    /// socket costs no copy. An error from `out` counts as nothing written; the socket shows
    /// it again when the queue is written. Server role; a client masks, so it queues.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    #[inline]
    pub fn send_to(
        &mut self,
        ep: &mut Endpoint,
        msg: Message<'_>,
        out: &mut impl Write,
    ) -> Result<(), SendError> {
        self.send_message(ep, msg, true, Some(out))
    }

    #[inline]
    fn send_message<W: Write>(
        &mut self,
        ep: &mut Endpoint,
        msg: Message<'_>,
        compress: bool,
        direct: Option<&mut W>,
    ) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        let opcode = data_opcode(msg);
        let payload = msg.as_bytes();
        let compressed = if compress && !self.compress.is_off() {
            ep.compressors.compress(&mut self.compress, payload)
        } else {
            None
        };
        let body = compressed.unwrap_or(payload);
        if !ep
            .config
            .queue_admits(self.tx.len(), MAX_HEADER_LEN + body.len())
        {
            if compressed.is_some() {
                self.compress.forget();
            }
            return Err(self.overflow(ep));
        }
        let rsv1 = compressed.is_some();
        let role = self.role();
        match direct {
            Some(out)
                if role == Role::Server && self.tx.len() == 0 && body.len() >= DIRECT_WRITE =>
            {
                let header = FrameHeader {
                    fin: true,
                    rsv1,
                    opcode,
                    mask: None,
                    payload_len: body.len() as u64,
                };
                let mut head = [0u8; MAX_HEADER_LEN];
                let head_len = header.encode(&mut head);
                let head = &head[..head_len];
                let written = write_through(out, head, body);
                let (rest_head, rest_body) = after(head, body, written);
                if !rest_body.is_empty() || !rest_head.is_empty() {
                    let tx = self.tx.vec(rest_head.len() + rest_body.len(), &mut ep.pool);
                    tx.extend_from_slice(rest_head);
                    tx.extend_from_slice(rest_body);
                }
            }
            _ => {
                let mask = (role == Role::Client).then(|| ep.random.take());
                let tx = self.tx.vec(MAX_HEADER_LEN + body.len(), &mut ep.pool);
                write_frame(tx, opcode, true, rsv1, mask, body);
            }
        }
        Ok(())
    }

    /// Queues a message made for many connections of this endpoint: its uncompressed frame,
    /// encoded once, or the compressed frame the endpoint makes once per shared compressor
    /// (or this connection's own compressor makes). Server role.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_broadcast(
        &mut self,
        ep: &mut Endpoint,
        message: &Broadcast<'_>,
    ) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        let frame = (ep.compressors)
            .broadcast_frame(&mut self.compress, message.opcode, message.payload)
            .unwrap_or(message.frame);
        if !ep.config.queue_admits(self.tx.len(), frame.len()) {
            self.compress.forget();
            return Err(self.overflow(ep));
        }
        self.tx
            .vec(frame.len(), &mut ep.pool)
            .extend_from_slice(frame);
        Ok(())
    }

    /// A send did not fit: refuse it, or close the connection, per `on_overflow`.
    /// The peer does not read its queue fast enough: with `Overflow::Close` the close frame
    /// 1008 follows what is queued (nothing more is read meanwhile, see
    /// [`Phase::Linger`]), or if even it would pass the bound, the connection ends at once.
    fn overflow(&mut self, ep: &mut Endpoint) -> SendError {
        if ep.config.on_overflow == Overflow::Close {
            const REASON: &str = "write buffer overflow";
            if ep.config.queue_admits(self.tx.len(), 4 + REASON.len()) {
                log::debug!("write queue over its bound, closing with 1008");
                self.fail(ep, CloseCode::POLICY, REASON);
            } else {
                log::debug!("write queue over its bound, with no room for a close frame: dropped");
                self.tx.release(&mut ep.pool);
                self.phase = Phase::Finished;
            }
        }
        SendError::Full
    }

    /// Queues a ping with `payload` (at most 125 bytes).
    ///
    /// # Errors
    /// [`SendError::TooLong`] for a longer payload, [`SendError::NotOpen`] unless open.
    pub fn ping(&mut self, ep: &mut Endpoint, payload: &[u8]) -> Result<(), SendError> {
        if payload.len() > 125 {
            return Err(SendError::TooLong);
        }
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        self.queue_frame(ep, OpCode::Ping, payload);
        Ok(())
    }

    /// Queues a control frame, past the queue bound (control frames are tiny).
    fn queue_frame(&mut self, ep: &mut Endpoint, opcode: OpCode, payload: &[u8]) {
        let mask = (self.role() == Role::Client).then(|| ep.random.take());
        let tx = self.tx.vec(MAX_HEADER_LEN + payload.len(), &mut ep.pool);
        write_frame(tx, opcode, true, false, mask, payload);
    }

    /// Starts the close handshake with `code` and `reason` (cut to fit 123 bytes). The
    /// connection takes no more sends; [`Event::Closed`] follows when the peer answers, or
    /// [`handle_timeout`](Self::handle_timeout) gives it after `close_timeout`.
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent (see
    /// [`CloseCode::is_sendable`]), [`SendError::NotOpen`] unless open.
    pub fn close(
        &mut self,
        ep: &mut Endpoint,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), SendError> {
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode);
        }
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        self.close_frame(ep, Some(code), reason, Phase::Closing);
        Ok(())
    }

    /// Queues a close frame and lingers: for protocol errors, overflow and timeouts.
    fn fail(&mut self, ep: &mut Endpoint, code: CloseCode, reason: &str) {
        self.close_frame(ep, Some(code), reason, Phase::Linger);
    }

    /// Queues a close frame (unless ours already went) and moves to `phase` with a close
    /// deadline.
    fn close_frame(
        &mut self,
        ep: &mut Endpoint,
        code: Option<CloseCode>,
        reason: &str,
        phase: Phase,
    ) {
        if self.phase != Phase::Closing {
            // Nothing may follow a close frame we already sent.
            let mut payload = [0u8; 125];
            let n = code.map_or(0, |code| {
                crate::proto::close::close_payload(code, reason, &mut payload)
            });
            self.queue_frame(ep, OpCode::Close, &payload[..n]);
        }
        self.phase = phase;
        self.clock = ep.now + ep.spans.close;
    }

    /// The bytes to write to the transport next; empty when nothing is queued. A large queue
    /// is handed out a buffer at a time: write, [`advance`](Self::advance), and ask again
    /// while [`buffered`](Self::buffered) is not 0.
    #[inline]
    pub fn transmit(&self) -> &[u8] {
        self.tx.pending()
    }

    /// `n` bytes of [`transmit`](Self::transmit) were written.
    #[inline]
    pub fn advance(&mut self, ep: &mut Endpoint, n: usize) {
        self.tx.advance(n, &mut ep.pool);
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub fn buffered(&self) -> usize {
        self.tx.len()
    }

    /// Whether all is said: the connection lingers with nothing left to write, so the
    /// transport should shut down writing (a TLS close_notify, then the FIN) and wait for the
    /// peer to close.
    #[inline]
    pub fn wants_shutdown(&self) -> bool {
        self.phase == Phase::Linger && self.tx.len() == 0
    }

    // ---- time ----------------------------------------------------------------------------

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called, if ever. It
    /// changes with every input: call it again after each.
    pub fn poll_timeout(&self, ep: &Endpoint) -> Option<Instant> {
        self.poll_deadline(ep).map(|at| ep.instant(at))
    }

    /// [`poll_timeout`](Self::poll_timeout) in the endpoint's milliseconds (see
    /// [`Endpoint::instant`]): cheaper, for a timer wheel or heap of many connections.
    #[inline]
    pub fn poll_deadline(&self, ep: &Endpoint) -> Option<Millis> {
        match self.phase {
            Phase::Handshake | Phase::Closing | Phase::Linger => Some(self.clock),
            Phase::Finished => None,
            Phase::Open => {
                let ping = (ep.spans.ping)
                    .filter(|_| !self.ping_sent)
                    .map(|d| self.clock + d);
                let idle = ep.spans.idle.map(|d| self.clock + d);
                match (ping, idle) {
                    (Some(p), Some(i)) => Some(p.min(i)),
                    (p, i) => p.or(i),
                }
            }
        }
    }

    /// Handles the deadlines due at `now`: the handshake and linger timeouts finish the
    /// connection; the close timeout finishes it with [`CloseReason::TimedOut`]; the idle
    /// timeout closes it with 1001 and the same reason; the keepalive ping is queued. Returns
    /// the event the application is owed, if any; call it when
    /// [`poll_timeout`](Self::poll_timeout)'s time has come (early calls are harmless).
    pub fn handle_timeout(&mut self, ep: &mut Endpoint, now: Instant) -> Option<Event<'static>> {
        ep.set_now(now);
        let now = ep.now;
        let since_heard = |d| now >= self.clock + d;
        let idle = ep.spans.idle.is_some_and(since_heard);
        let ping = ep.spans.ping.is_some_and(since_heard);
        match self.phase {
            Phase::Handshake | Phase::Linger if now >= self.clock => {
                log::debug!("{:?} timed out", self.phase);
                self.phase = Phase::Finished;
                None
            }
            Phase::Closing if now >= self.clock => {
                self.phase = Phase::Finished;
                Some(Event::Closed(CloseReason::TimedOut))
            }
            Phase::Open if idle => {
                self.fail(ep, CloseCode::GOING_AWAY, "idle timeout");
                Some(Event::Closed(CloseReason::TimedOut))
            }
            Phase::Open if ping && !self.ping_sent => {
                self.ping_sent = true;
                self.queue_frame(ep, OpCode::Ping, b"");
                None
            }
            _ => None,
        }
    }

    /// Bytes of memory the connection's buffers hold: kept input, an unfinished message, and
    /// its write queue. An owner that keeps many connections within one memory budget sums
    /// it (the server's `max_buffered`) and [`shed`](Self::shed)s the largest past it.
    #[inline]
    pub fn memory(&self) -> usize {
        self.kept.capacity() + self.parser.decoder.buffered() + self.tx.capacity()
    }

    /// Drops everything the connection holds (an unfinished message, unwritten output) to
    /// free memory for others: if it was open and all its output was written it is closed
    /// with 1013 (try again later), otherwise at once, without a close frame (one could
    /// follow a cut frame). Returns the event the application is owed, if it knew the
    /// connection as open.
    pub fn shed(&mut self, ep: &mut Endpoint) -> Option<Event<'static>> {
        let owed = self.owes_close();
        let clean = owed && self.tx.len() == 0;
        self.kept.release(&mut ep.pool);
        self.parser.decoder = Decoder::new(self.role(), 0);
        self.tx.release(&mut ep.pool);
        if clean {
            self.fail(ep, CloseCode(1013), "server buffers full");
        } else {
            self.phase = Phase::Linger;
            self.clock = ep.now;
        }
        owed.then_some(Event::Closed(CloseReason::Overflow))
    }
}

/// Writes `head` and then `body` to `out` until it takes no more; returns how many bytes it
/// took. An error counts as nothing more taken. A short write ends it (a socket is full: the
/// `WouldBlock` a second call would return costs a syscall), but for a writer that is not
/// vectored, which takes the header alone and then the payload.
fn write_through(out: &mut dyn Write, head: &[u8], body: &[u8]) -> usize {
    let mut written = 0;
    while written < head.len() + body.len() {
        let (rest_head, rest_body) = after(head, body, written);
        let offered = rest_head.len() + rest_body.len();
        match out.write_vectored(&[IoSlice::new(rest_head), IoSlice::new(rest_body)]) {
            Ok(n) if n > 0 => {
                written += n;
                if n < offered && written != head.len() {
                    break;
                }
            }
            _ => break,
        }
    }
    written
}

/// What is left of `head` and then `body` once their first `n` bytes are written.
fn after<'a>(head: &'a [u8], body: &'a [u8], n: usize) -> (&'a [u8], &'a [u8]) {
    (
        &head[n.min(head.len())..],
        &body[n.saturating_sub(head.len()).min(body.len())..],
    )
}

/// The opcode of a data message.
fn data_opcode(msg: Message<'_>) -> OpCode {
    match msg {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    }
}
