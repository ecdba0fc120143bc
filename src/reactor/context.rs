//! The [`Context`] through which the application sends, broadcasts, publishes, closes and
//! looks up connections.

use std::net::SocketAddr;

use super::core::{lookup, Audience, Core};
use crate::proto::CloseCode;
use crate::{ConnId, Message, SendError};

/// The application's handle on the server during a handler call (or between turns).
///
/// Sends are queued and flushed once per connection at the end of the turn, so many sends in
/// one turn cost one write per connection (but for a large message, see [`send`](Self::send)).
pub struct Context<'a, S> {
    pub(crate) core: &'a mut Core<S>,
}

impl<S> Context<'_, S> {
    /// Queues a message for `id` (compressed if the connection negotiated permessage-deflate
    /// and the message reaches the threshold).
    ///
    /// A message of 32 KiB or more to a plain (not TLS) connection with nothing queued is
    /// written to its socket at once, straight from `msg`'s bytes, and only what the socket
    /// does not take is copied into the queue: a large payload is not copied for nothing.
    ///
    /// # Errors
    /// [`SendError::NotOpen`] if `id` is not open; [`SendError::Full`] if its queue would
    /// pass `max_write_buffer` (with `Overflow::Close`, it is then closed with 1008 and
    /// [`Handler::on_close`](crate::Handler::on_close) follows).
    pub fn send(&mut self, id: ConnId, msg: Message<'_>) -> Result<(), SendError> {
        self.core.send(id, msg, true)
    }

    /// Queues a message for `id` uncompressed, whatever was negotiated (for data that is
    /// already compressed, say).
    pub fn send_uncompressed(&mut self, id: ConnId, msg: Message<'_>) -> Result<(), SendError> {
        self.core.send(id, msg, false)
    }

    /// Queues a text message for `id`.
    pub fn send_text(&mut self, id: ConnId, text: &str) -> Result<(), SendError> {
        self.send(id, Message::Text(text))
    }

    /// Queues a binary message for `id`.
    pub fn send_binary(&mut self, id: ConnId, bytes: &[u8]) -> Result<(), SendError> {
        self.send(id, Message::Binary(bytes))
    }

    /// Queues a ping with `payload` (at most 125 bytes) for `id`.
    pub fn ping(&mut self, id: ConnId, payload: &[u8]) -> Result<(), SendError> {
        let core = &mut *self.core;
        let slot = lookup(&mut core.slots, id).ok_or(SendError::NotOpen)?;
        let result = slot.conn.ping(&mut core.ep, payload);
        core.sent(id, result)
    }

    /// Starts the close handshake with `code` and `reason` (cut to fit 123 bytes). The
    /// connection takes no more sends; [`Handler::on_close`](crate::Handler::on_close) follows
    /// when the peer answers or `close_timeout` passes. `code` must be sendable (1000-1003,
    /// 1007-1014, 3000-4999).
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), SendError> {
        let core = &mut *self.core;
        let slot = lookup(&mut core.slots, id).ok_or(SendError::NotOpen)?;
        let result = slot.conn.close(&mut core.ep, code, reason);
        core.sent(id, result)
    }

    /// Queues `msg` to every open connection, encoded once (and compressed once per shared
    /// compressor); returns to how many.
    pub fn broadcast(&mut self, msg: Message<'_>) -> usize {
        self.core.fan_out(msg, Audience::All, None)
    }

    /// Queues `msg` to every open connection but `except` (usually the sender).
    pub fn broadcast_except(&mut self, except: ConnId, msg: Message<'_>) -> usize {
        self.core.fan_out(msg, Audience::All, Some(except))
    }

    /// Subscribes `id` to `topic`; false if it was already subscribed or is not open.
    /// Subscriptions end when the connection closes.
    pub fn subscribe(&mut self, id: ConnId, topic: &str) -> bool {
        let core = &mut *self.core;
        match lookup(&mut core.slots, id) {
            Some(slot) if slot.conn.is_open() => core.topics.subscribe(topic, id),
            _ => false,
        }
    }

    /// Unsubscribes `id` from `topic`; false if it was not subscribed.
    pub fn unsubscribe(&mut self, id: ConnId, topic: &str) -> bool {
        self.core.topics.unsubscribe(topic, id)
    }

    /// Queues `msg` to every open subscriber of `topic`, encoded once; returns to how many.
    ///
    /// The message also goes to the server's [`Relay`](crate::Relay)s (other reactors, other
    /// machines); the count is of local subscribers only.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.core.relay(topic, msg);
        self.core.fan_out(msg, Audience::Topic(topic), None)
    }

    /// Queues `msg` to the local subscribers of `topic` only, not to relays.
    pub fn publish_local(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.core.fan_out(msg, Audience::Topic(topic), None)
    }

    /// Queues `msg` to every open subscriber of `topic` but `except` (usually the sender).
    pub fn publish_except(&mut self, topic: &str, except: ConnId, msg: Message<'_>) -> usize {
        self.core.relay(topic, msg);
        self.core.fan_out(msg, Audience::Topic(topic), Some(except))
    }

    /// The subscribers of `topic`.
    pub fn subscribers(&self, topic: &str) -> &[ConnId] {
        self.core.topics.members(topic)
    }

    /// The topics `id` is subscribed to.
    pub fn topics(&self, id: ConnId) -> impl Iterator<Item = &str> + '_ {
        self.core.topics.names_of(id)
    }

    /// The peer's address.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.core.get(id)?.io.socket().peer_addr().ok()
    }

    /// Whether `id` is open (upgraded, not closing).
    pub fn is_open(&self, id: ConnId) -> bool {
        self.core.get(id).is_some_and(|c| c.conn.is_open())
    }

    /// The open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.core
            .slots
            .iter()
            .filter(|(_, c)| c.conn.is_open())
            .map(|(index, c)| ConnId::new(index, c.generation))
    }

    /// The application's state for `id`, from upgrade until `on_close` returns.
    pub fn state(&mut self, id: ConnId) -> Option<&mut S> {
        self.core.get_mut(id).and_then(|c| c.state.as_mut())
    }

    /// Bytes queued for `id` and not yet taken by the socket.
    pub fn buffered(&self, id: ConnId) -> usize {
        self.core.get(id).map_or(0, |c| c.conn.buffered())
    }
}
