//! The sans-IO protocol core: no sockets, no clocks, no `mio`. Bytes in, events and bytes out.
//!
//! - [`handshake`]: the HTTP upgrade, both for a server (parse a request, answer it) and for a
//!   client (write a request, check the answer).
//! - [`frame`]: the frame header codec and masking.
//! - [`message`]: the [`Decoder`](message::Decoder) that turns frames into messages and control
//!   events, enforcing RFC 6455's rules, and the encoder helpers for what we send.
//! - [`utf8`]: incremental UTF-8 validation for text that arrives in pieces.
//! - [`deflate`]: permessage-deflate (RFC 7692) negotiation and codec.
//! - [`connection`]: one connection's whole life (handshake, messages, close handshake,
//!   keepalive, timeouts, write queue) as a state machine over the pieces above; the server's
//!   reactor, the client and the load generator all drive it.
//!
//! The same core serves both roles: a [`Role::Server`] expects masked frames and sends unmasked
//! ones; a [`Role::Client`] does the reverse.

pub(crate) mod buffer;
pub(crate) mod clock;
pub mod close;
pub mod connection;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod message;
pub(crate) mod queue;
pub mod utf8;

use crate::error::error_messages;

pub use close::CloseCode;

/// Which end of a connection this endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts connections: receives masked frames, sends unmasked ones.
    Server,
    /// Opens connections: masks every frame it sends, rejects masked frames it receives.
    Client,
}

/// A violation of RFC 6455 by the peer, and the close code it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV bits set that no negotiated extension defines.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    ReservedOpcode,
    /// A 64-bit payload length with the most significant bit set.
    LengthOverflow,
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControlFrame,
    /// A server received an unmasked frame, or a client a masked one.
    BadMasking,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is still open.
    ExpectedContinuation,
    /// A close frame with a 1-byte payload or a code that may not be sent.
    BadCloseFrame,
    /// Text (or a close reason) that is not valid UTF-8.
    InvalidUtf8,
    /// A message larger than the configured limit.
    MessageTooBig,
    /// Compressed data that does not inflate, in a binary message.
    BadCompression,
    /// Compressed data that does not inflate, in a text message (answered like invalid text).
    BadCompressedText,
    /// A message in more frames than the configured limit (answered with 1008: the message
    /// may be small, so 1009 "too big" would mislead; Node ws answers the same).
    TooManyFragments,
}

impl ProtocolError {
    /// The close code this error is answered with (RFC 6455 section 7.4.1).
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompressedText => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::MessageTooBig => CloseCode::TOO_BIG,
            ProtocolError::TooManyFragments => CloseCode::POLICY,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short description, also sent as the close reason.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode => "reserved opcode",
            ProtocolError::LengthOverflow => "payload length overflow",
            ProtocolError::BadControlFrame => "fragmented or oversized control frame",
            ProtocolError::BadMasking => "bad frame masking",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "expected a continuation frame",
            ProtocolError::BadCloseFrame => "invalid close frame",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::MessageTooBig => "message too big",
            ProtocolError::BadCompression => "invalid compressed data",
            ProtocolError::BadCompressedText => "invalid compressed text",
            ProtocolError::TooManyFragments => "too many fragments",
        }
    }
}

error_messages!(ProtocolError {
    e => ("{}", e.as_str()),
});
