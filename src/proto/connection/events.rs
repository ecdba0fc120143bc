//! What a connection tells its owner, and why a send can be refused.

use crate::proto::handshake::ResponseError;
use crate::proto::{CloseCode, ProtocolError};

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

/// Why a connection ended, as told to [`Handler::on_close`](crate::Handler::on_close) and in
/// [`Event::Closed`].
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
    /// The connection's write queue went past `max_write_buffer` (with `Overflow::Close`):
    /// wsloop sent 1008 and dropped it; or the reactor buffered more than `max_buffered` and
    /// this connection, holding the most, was shed (1013, or no close frame if its output was
    /// cut).
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

crate::error::error_messages!(SendError {
    SendError::NotOpen => ("connection not open"),
    SendError::Full => ("write queue full"),
    SendError::TooLong => ("control frame payload over 125 bytes"),
    SendError::InvalidCloseCode => ("close code may not be sent"),
});

/// What a [`Connection`](super::Connection) tells its owner.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Server role: a whole request head arrived. Answer it with
    /// [`Connection::answer`](super::Connection::answer) while handling the event; one left
    /// unanswered is refused with 500.
    Request(&'a [u8]),
    /// Client role: the server accepted the upgrade, choosing `protocol` (if any).
    Opened {
        /// The subprotocol the server chose.
        protocol: Option<&'a str>,
    },
    /// Client role: the server refused the upgrade or answered it wrongly; the connection is
    /// finished.
    Refused(ResponseError),
    /// A whole message.
    Message(Message<'a>),
    /// A ping (already answered with a pong).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The connection is closed as far as the application is concerned: nothing more is
    /// received or may be sent. Its last bytes may still wait to be written.
    Closed(CloseReason<'a>),
}
