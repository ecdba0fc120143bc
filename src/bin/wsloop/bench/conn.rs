//! One client connection's WebSocket protocol, on wsloop's sans-IO
//! [`Connection`](wsloop::proto::connection::Connection) in the client role: the upgrade
//! (with permessage-deflate when asked), masked and compressed frames out, frames in, pings,
//! the closing handshake.
//!
//! The worker moves bytes between the socket and this: it reads into [`Codec::read_space`],
//! reports them with [`Conn::received`], and writes [`Conn::pending`], reporting with
//! [`Conn::written`]. The rest of the load generator does not know how frames look.

use std::time::Instant;

use wsloop::proto::connection::{CloseReason, Connection, Endpoint, Event as ConnEvent};
use wsloop::proto::deflate::DeflateConfig;
use wsloop::{CloseCode, ConnectionConfig, Message};

/// Size of the thread's read buffer, and so of one read.
const READ_BUFFER: usize = 64 * 1024;
/// Where reads land in the read buffer: 6 bytes in, so that the payload of a small server
/// frame (after its 2-byte header) starts on an 8-byte boundary. std's UTF-8 check goes a
/// word at a time only from an aligned address: a 16 B text echo then costs ~20 instructions
/// to validate instead of ~150, and a longer one the same either way.
const READ_OFFSET: usize = 6;

/// How every connection of a run speaks.
#[derive(Debug, Clone)]
pub struct Options {
    /// `Host` header value.
    pub host: String,
    /// Request path (with the query).
    pub path: String,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// No handshake, and our own masked frames come back (a raw TCP echo).
    pub raw: bool,
    /// Largest message accepted.
    pub max_message_size: usize,
}

/// What one thread's connections share: the protocol endpoint (limits, buffer pool,
/// compressors), the read buffer and a scratch buffer for outgoing payloads.
pub struct Codec {
    ep: Endpoint,
    scratch: Vec<u8>,
    payload: Vec<u8>,
}

impl Codec {
    /// A codec for connections that speak as `opts` says.
    pub fn new(opts: &Options) -> Codec {
        // The load generator keeps its own deadlines: no keepalive pings, no idle timeout, and
        // the open loop may queue as much as the server falls behind.
        let config = ConnectionConfig::default()
            .deflate(opts.deflate.then(DeflateConfig::default))
            .max_message_size(opts.max_message_size)
            .max_write_buffer(1 << 40)
            .ping_interval(None)
            .idle_timeout(None);
        Codec {
            ep: Endpoint::new(config, Instant::now()),
            scratch: vec![0; READ_OFFSET + READ_BUFFER],
            payload: Vec::new(),
        }
    }

    /// Where to read into.
    pub fn read_space(&mut self) -> &mut [u8] {
        &mut self.scratch[READ_OFFSET..]
    }
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The upgrade request is out; waiting for the answer.
    Handshake,
    /// Messages flow.
    Open,
    /// Our close frame is out (or the connection ended).
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
    conn: &'a mut Connection,
    ep: &'a mut Endpoint,
    payload: &'a mut Vec<u8>,
}

impl Sender<'_> {
    /// Queues one message, which `fill` appends to an empty buffer (then masked, and
    /// compressed if negotiated).
    #[inline]
    pub fn send(&mut self, binary: bool, fill: impl FnOnce(&mut Vec<u8>)) -> Result<(), String> {
        self.payload.clear();
        fill(self.payload);
        let msg = if binary {
            Message::Binary(self.payload)
        } else {
            Message::Text(
                std::str::from_utf8(self.payload).map_err(|e| format!("text message: {e}"))?,
            )
        };
        self.conn
            .send(self.ep, msg)
            .map_err(|e| format!("send: {e}"))
    }

    /// Queues a close frame (1000); the connection is then closing.
    pub fn close(&mut self) {
        let _ = self.conn.close(self.ep, CloseCode::NORMAL, "");
    }
}

/// One client connection.
pub struct Conn {
    conn: Connection,
    /// Raw mode: decodes what comes back (our own masked frames) as a server would; opened by
    /// a handshake with `conn` in memory.
    raw_rx: Option<Box<Connection>>,
}

impl Conn {
    /// A connection whose socket just connected: queues the upgrade request (or, with
    /// `opts.raw`, is open at once).
    pub fn new(opts: &Options, codec: &mut Codec) -> Conn {
        let ep = &mut codec.ep;
        if !opts.raw {
            return Conn {
                conn: Connection::client(ep, &opts.host, &opts.path, &[]),
                raw_rx: None,
            };
        }
        let now = Instant::now();
        let mut conn = Connection::client(ep, &opts.host, &opts.path, &[]);
        let mut rx = Connection::server(ep);
        let mut request = conn.transmit().to_vec();
        conn.advance(ep, request.len());
        rx.recv(ep, now, &mut request, |rx, ep, event| {
            if let ConnEvent::Request(head) = event {
                rx.answer(ep, head, |_| Ok(None));
            }
        });
        let mut answer = rx.transmit().to_vec();
        rx.advance(ep, answer.len());
        conn.recv(ep, now, &mut answer, |_, _, _| {});
        Conn {
            conn,
            raw_rx: Some(Box::new(rx)),
        }
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        if self.conn.is_open() {
            Phase::Open
        } else if self.conn.phase() == wsloop::proto::connection::Phase::Handshake {
            Phase::Handshake
        } else {
            Phase::Closing
        }
    }

    /// A sender for this connection.
    pub fn sender<'a>(&'a mut self, codec: &'a mut Codec) -> Sender<'a> {
        Sender {
            conn: &mut self.conn,
            ep: &mut codec.ep,
            payload: &mut codec.payload,
        }
    }

    /// Queues a close frame (1000); the connection is then closing.
    pub fn close(&mut self, codec: &mut Codec) {
        self.sender(codec).close();
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        self.conn.transmit()
    }

    /// `n` bytes of [`pending`](Self::pending) were written.
    pub fn written(&mut self, codec: &mut Codec, n: usize) {
        self.conn.advance(&mut codec.ep, n);
    }

    /// Handles `n` bytes read at `now` into [`Codec::read_space`]: the handshake answer, then
    /// frames, calling `on` for the handshake's completion and for every data message.
    /// `Ok(false)` once the server's close frame answered ours; an error for anything else
    /// that ends the connection (a refused handshake, a protocol error, the server's close,
    /// or an error from `on`).
    pub fn received(
        &mut self,
        n: usize,
        now: Instant,
        codec: &mut Codec,
        mut on: impl FnMut(Event<'_>, &mut Sender<'_>) -> Result<(), String>,
    ) -> Result<bool, String> {
        let Codec {
            ep,
            scratch,
            payload,
        } = codec;
        let bytes = &mut scratch[READ_OFFSET..READ_OFFSET + n];
        let mut result = Ok(true);
        if let Some(rx) = self.raw_rx.as_mut() {
            let conn = &mut self.conn;
            rx.recv(ep, now, bytes, |_, ep, event| {
                if let (Ok(true), ConnEvent::Message(msg)) = (&result, event) {
                    let mut sender = Sender { conn, ep, payload };
                    result = on(message(msg), &mut sender).map(|()| true);
                }
            });
            // Its answers (pongs) are not for anyone.
            let len = rx.transmit().len();
            rx.advance(ep, len);
            return result;
        }
        let closing = self.phase() == Phase::Closing;
        self.conn.recv(ep, now, bytes, |conn, ep, event| {
            if result != Ok(true) {
                return;
            }
            let mut sender = Sender { conn, ep, payload };
            result = match event {
                ConnEvent::Opened { .. } => on(Event::Open, &mut sender).map(|()| true),
                ConnEvent::Refused(why) => Err(format!("handshake: {why}")),
                ConnEvent::Message(msg) => on(message(msg), &mut sender).map(|()| true),
                ConnEvent::Closed(CloseReason::Closed { .. }) if closing => Ok(false),
                ConnEvent::Closed(why) => Err(format!("server closed: {why:?}")),
                // Requests (server role), pings (answered already), pongs, and what later
                // versions add.
                _ => Ok(true),
            };
        });
        result
    }
}

/// A received message as an [`Event`].
fn message(msg: Message<'_>) -> Event<'_> {
    Event::Message {
        binary: matches!(msg, Message::Binary(_)),
        payload: msg.as_bytes(),
    }
}
