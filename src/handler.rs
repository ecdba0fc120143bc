//! The application's side: the [`Handler`] trait and the types it sees.

use std::fmt;
use std::net::SocketAddr;

use crate::proto::handshake::{HttpResponse, Request};
use crate::proto::{CloseCode, ProtocolError};
use crate::Context;

/// A connection's identity, unique for the server's lifetime (a slot index and a generation,
/// so an id of a closed connection never reaches a newer one in the same slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// A whole message, borrowed: from the bytes as they were read for an unfragmented message
/// (no copy), from the connection's assembly buffer for a fragmented one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }
}

/// The handler's answer to an upgrade request.
#[derive(Debug)]
pub enum Upgrade<S> {
    /// Accept, answering `protocol` (which must be one the client offered) and keeping `state`
    /// for the connection.
    Accept {
        /// The subprotocol to answer in `Sec-WebSocket-Protocol`, if any.
        protocol: Option<String>,
        /// The connection's state, reachable through [`Context::state`].
        state: S,
    },
    /// Refuse with this HTTP response; no WebSocket frame is exchanged.
    Reject(HttpResponse),
}

impl<S> Upgrade<S> {
    /// Accept with no subprotocol.
    pub fn accept(state: S) -> Upgrade<S> {
        Upgrade::Accept {
            protocol: None,
            state,
        }
    }

    /// Accept, answering `protocol`.
    pub fn accept_protocol(protocol: &str, state: S) -> Upgrade<S> {
        Upgrade::Accept {
            protocol: Some(protocol.to_owned()),
            state,
        }
    }

    /// Refuse with a short plain-text response of `status` (e.g. 401, 403, 404).
    pub fn reject(status: u16, body: &str) -> Upgrade<S> {
        Upgrade::Reject(HttpResponse::text(status, body))
    }
}

/// Why a connection ended, as told to [`Handler::on_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason<'a> {
    /// The close handshake completed: the peer's close frame said `code` (none if it was
    /// empty) and `reason`.
    Closed {
        /// The peer's close code.
        code: Option<CloseCode>,
        /// The peer's close reason.
        reason: &'a str,
    },
    /// The peer broke the protocol; wsloop sent a close frame with the error's code and
    /// dropped the connection.
    ProtocolError(ProtocolError),
    /// The connection's write queue went past `max_write_buffer` (with `Overflow::Close`);
    /// wsloop sent 1008 and dropped it.
    Overflow,
    /// No traffic for `idle_timeout`, or no close frame within `close_timeout` after ours.
    TimedOut,
    /// The peer went away without a close handshake (end of stream or an I/O error).
    Disconnected,
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is not open: unknown id, still handshaking, closing or closed.
    NotOpen,
    /// The connection's write queue is full (`Overflow::Refuse`), or it was just closed for
    /// overflowing (`Overflow::Close`).
    Full,
    /// A control frame payload over 125 bytes.
    TooLong,
    /// A close code that may not be sent (see [`CloseCode::is_sendable`]).
    InvalidCloseCode,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::NotOpen => "connection not open",
            SendError::Full => "write queue full",
            SendError::TooLong => "control frame payload over 125 bytes",
            SendError::InvalidCloseCode => "close code may not be sent",
        })
    }
}

impl std::error::Error for SendError {}

/// The application: what to do when connections arrive, speak and leave.
///
/// Every method runs on the reactor's thread and must not block. Sends made through the
/// [`Context`] are queued and flushed once per connection at the end of the turn.
pub trait Handler {
    /// Per-connection state, created at upgrade and dropped after [`on_close`](Self::on_close).
    type State;

    /// A client asks to upgrade. `req` is the validated request (path, headers, origin,
    /// offered subprotocols); answer with [`Upgrade::accept`] or a rejection.
    fn on_upgrade(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> Upgrade<Self::State>;

    /// A plain HTTP GET (not an upgrade). Return a response to serve it; the default answers
    /// 426 Upgrade Required.
    fn on_http(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> HttpResponse {
        let _ = (req, peer);
        HttpResponse::upgrade_required()
    }

    /// The connection is open: the 101 answer is queued and the connection may send.
    fn on_open(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId) {
        let _ = (ctx, id);
    }

    /// A whole message arrived.
    fn on_message(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId, msg: Message<'_>);

    /// The connection ended; this is the last call for `id`, and its state is still reachable.
    fn on_close(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId, why: CloseReason<'_>) {
        let _ = (ctx, id, why);
    }

    /// The connection's write queue, which had to wait for the socket, has drained.
    fn on_drain(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId) {
        let _ = (ctx, id);
    }
}
