//! The reactor's connection table and the [`Context`] through which the application sends,
//! broadcasts, closes and looks up connections.

use std::io::IoSlice;
use std::net::SocketAddr;

use slab::Slab;

use crate::buffer::BufPool;
use crate::compress::Compressors;
use crate::conn::{Conn, Phase};
use crate::proto::frame::{write_frame, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::proto::message::{Decoder, Encoder};
use crate::proto::{CloseCode, Role};
use crate::timer::{span, Millis, Timers};
use crate::topics::Topics;
use crate::{CloseReason, Config, ConnId, Message, Overflow, Relay, SendError};

/// Messages at least this large are written straight from the sender's bytes when nothing is
/// queued before them; smaller ones are batched and flushed once per turn.
const DIRECT_WRITE: usize = 32 * 1024;

/// Everything about connections that the application may touch through a [`Context`].
pub(crate) struct Core<S> {
    pub(crate) conns: Slab<Conn<S>>,
    pub(crate) config: Config,
    pub(crate) pool: BufPool,
    pub(crate) timers: Timers,
    /// Connections with bytes to flush at the end of the turn.
    pub(crate) dirty: Vec<ConnId>,
    /// `on_close` calls owed for connections closed from inside a handler call.
    pub(crate) closed: Vec<(ConnId, CloseReason<'static>)>,
    /// The time of this turn.
    pub(crate) now: Millis,
    pub(crate) encoder: Encoder,
    /// permessage-deflate for what we send.
    pub(crate) compressors: Compressors,
    /// Topics and their subscribers.
    pub(crate) topics: Topics,
    /// Where publishes go beyond this reactor.
    pub(crate) relays: Vec<Box<dyn Relay>>,
    /// Issue 14 (5): bytes buffered by all connections, the sum of their `charged`.
    pub(crate) buffered: usize,
    /// A broadcast's uncompressed frame, encoded once.
    frame: Vec<u8>,
    next_generation: u32,
}

impl<S> Core<S> {
    pub(crate) fn new(config: Config) -> Core<S> {
        Core {
            conns: Slab::new(),
            pool: BufPool::new(16 * 1024, 64, config.buffer_pool_size),
            timers: Timers::new(),
            dirty: Vec::new(),
            closed: Vec::new(),
            now: 0,
            encoder: Encoder::new(Role::Server),
            frame: Vec::new(),
            buffered: 0,
            next_generation: 0,
            compressors: Compressors::new(config.deflate.as_ref()),
            topics: Topics::default(),
            relays: Vec::new(),
            config,
        }
    }

    /// A fresh generation for a new connection.
    pub(crate) fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// The id of the connection at `index`.
    pub(crate) fn id(&self, index: usize) -> Option<ConnId> {
        self.conns.get(index).map(|c| ConnId {
            index: index as u32,
            generation: c.generation,
        })
    }

    /// The connection `id`, if it still exists.
    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn<S>> {
        self.conns
            .get(id.index as usize)
            .filter(|c| c.generation == id.generation)
    }

    /// The connection `id`, if it still exists.
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn<S>> {
        lookup(&mut self.conns, id)
    }

    /// Marks `id` to be flushed at the end of the turn.
    fn mark_dirty(conn: &mut Conn<S>, id: ConnId, dirty: &mut Vec<ConnId>) {
        if !conn.dirty {
            conn.dirty = true;
            dirty.push(id);
        }
    }

    /// Issue 14 (5): counts `id`'s buffers again in the reactor's total.
    pub(crate) fn recharge(&mut self, id: ConnId) {
        if let Some(conn) = lookup(&mut self.conns, id) {
            recharge(conn, &mut self.buffered);
        }
    }

    /// Issue 14 (5): while the reactor buffers more than `max_buffered`, sheds the connection
    /// holding the most. What it holds is dropped (an unfinished message, unwritten output);
    /// an open connection whose output was all written is closed with 1013 (try again later),
    /// any other is closed at once, without a close frame (one could follow a cut frame).
    /// `on_close` follows with [`CloseReason::Overflow`].
    pub(crate) fn shed(&mut self) {
        while self.buffered > self.config.max_buffered {
            let largest = (self.conns.iter()).max_by_key(|(_, c)| c.charged);
            let Some((index, conn)) = largest.filter(|(_, c)| c.charged > 0) else {
                return;
            };
            let id = ConnId {
                index: index as u32,
                generation: conn.generation,
            };
            log::warn!("{id}: closed, holding {} B over max_buffered", conn.charged);
            let conn = &mut self.conns[index];
            let owed = matches!(conn.phase, Phase::Open | Phase::Closing);
            let clean = owed && conn.tx.len() == 0;
            conn.rx.buf.release(&mut self.pool);
            conn.rx.parse.decoder = Decoder::new(Role::Server, 0);
            conn.tx.release(&mut self.pool);
            if clean {
                self.fail(id, CloseCode(1013), "server buffers full");
            } else {
                conn.phase = Phase::Linger;
                conn.deadline = self.now;
                self.arm(id);
            }
            if owed {
                self.closed.push((id, CloseReason::Overflow));
            }
            self.recharge(id);
        }
    }

    /// Arms the connection's next deadline.
    pub(crate) fn arm(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id.index as usize) {
            if let Some(at) = conn.next_deadline(&self.config) {
                self.timers
                    .arm(&mut conn.armed, id.index, conn.generation, at);
            }
        }
    }

    /// Queues raw bytes (an HTTP response) for `id`, whatever its phase.
    pub(crate) fn queue_raw(&mut self, id: ConnId, bytes: &[u8]) {
        if let Some(conn) = self.conns.get_mut(id.index as usize) {
            conn.tx
                .vec(bytes.len(), &mut self.pool)
                .extend_from_slice(bytes);
            Self::mark_dirty(conn, id, &mut self.dirty);
        }
    }

    /// Queues a frame for `id` if it is open and its queue has room; data frames are
    /// compressed if the connection negotiated it and `compress` allows.
    pub(crate) fn send_frame(
        &mut self,
        id: ConnId,
        opcode: OpCode,
        payload: &[u8],
        compress: bool,
    ) -> Result<(), SendError> {
        let limit = QueueLimit::of(&self.config);
        let conn = match lookup(&mut self.conns, id) {
            Some(conn) if conn.phase == Phase::Open => conn,
            _ => return Err(SendError::NotOpen),
        };
        let compressed = match opcode {
            OpCode::Text | OpCode::Binary if compress => {
                self.compressors.compress(&mut conn.compress, payload)
            }
            _ => None,
        };
        let body = compressed.unwrap_or(payload);
        if !limit.admits(conn.tx.len(), MAX_HEADER_LEN + body.len()) {
            if compressed.is_some() {
                conn.compress.forget();
            }
            return Err(self.overflow(id));
        }
        let rsv1 = compressed.is_some();
        if conn.tx.len() == 0 && body.len() >= DIRECT_WRITE && conn.io.is_plain() {
            // Nothing queued: write header and payload straight from the caller's bytes, and
            // copy only what the kernel does not take.
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
            // An error shows again, and is handled, when the rest is flushed.
            let written = (conn.io)
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .unwrap_or(0);
            let rest_head = &head[written.min(head.len())..];
            let rest_body = &body[written.saturating_sub(head.len())..];
            if !rest_body.is_empty() || !rest_head.is_empty() {
                let tx = conn
                    .tx
                    .vec(rest_head.len() + rest_body.len(), &mut self.pool);
                tx.extend_from_slice(rest_head);
                tx.extend_from_slice(rest_body);
                Self::mark_dirty(conn, id, &mut self.dirty);
                recharge(conn, &mut self.buffered);
                self.shed();
            }
            return Ok(());
        }
        let tx = conn.tx.vec(MAX_HEADER_LEN + body.len(), &mut self.pool);
        write_frame(tx, opcode, true, rsv1, None, body);
        Self::mark_dirty(conn, id, &mut self.dirty);
        recharge(conn, &mut self.buffered);
        self.shed();
        Ok(())
    }

    /// A send to `id` did not fit: refuse it, or close the connection, per `on_overflow`.
    fn overflow(&mut self, id: ConnId) -> SendError {
        if self.config.on_overflow == Overflow::Close {
            log::debug!("{id}: write queue over max_write_buffer, closing with 1008");
            self.fail(id, CloseCode::POLICY, "write buffer overflow");
            self.closed.push((id, CloseReason::Overflow));
        }
        SendError::Full
    }

    /// Queues a close frame (past the queue bound: it is tiny) and makes the connection linger:
    /// flush, shut down writing, wait for the peer to close TCP. For protocol errors, overflow
    /// and timeouts, and after the close handshake completes.
    pub(crate) fn fail(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        self.close_frame(id, Some(code), reason, Phase::Linger);
    }

    /// Queues a close frame and moves `id` to `phase` with a close deadline.
    pub(crate) fn close_frame(
        &mut self,
        id: ConnId,
        code: Option<CloseCode>,
        reason: &str,
        phase: Phase,
    ) {
        let deadline = self.now + span(self.config.close_timeout);
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Closing {
            // Nothing may follow a close frame we already sent.
            self.encoder.close(
                conn.tx.vec(MAX_HEADER_LEN + 125, &mut self.pool),
                code,
                reason,
            );
        }
        conn.phase = phase;
        conn.deadline = deadline;
        Self::mark_dirty(conn, id, &mut self.dirty);
        self.arm(id);
    }

    /// Hands a publish to every relay.
    fn relay(&mut self, topic: &str, msg: Message<'_>) {
        for relay in &mut self.relays {
            relay.publish(topic, msg);
        }
    }

    /// Queues a message to every open connection of `audience` but `except`: encoded once
    /// uncompressed, and once per shared compressor; returns to how many connections.
    pub(crate) fn fan_out(
        &mut self,
        msg: Message<'_>,
        audience: Audience<'_>,
        except: Option<ConnId>,
    ) -> usize {
        let opcode = data_opcode(msg);
        let payload = msg.as_bytes();
        self.frame.clear();
        write_frame(&mut self.frame, opcode, true, false, None, payload);
        self.compressors.begin_broadcast();
        let mut out = FanOut {
            opcode,
            payload,
            frame: &self.frame,
            compressors: &mut self.compressors,
            pool: &mut self.pool,
            dirty: &mut self.dirty,
            buffered: &mut self.buffered,
            limit: QueueLimit::of(&self.config),
            sent: 0,
            overflowed: Vec::new(),
        };
        match audience {
            Audience::All => {
                for (index, conn) in self.conns.iter_mut() {
                    let id = ConnId {
                        index: index as u32,
                        generation: conn.generation,
                    };
                    if Some(id) != except {
                        out.deliver(conn, id);
                    }
                }
            }
            Audience::Topic(name) => {
                for &id in self.topics.members(name) {
                    if Some(id) != except {
                        if let Some(conn) = lookup(&mut self.conns, id) {
                            out.deliver(conn, id);
                        }
                    }
                }
            }
        }
        let (sent, overflowed) = (out.sent, out.overflowed);
        for id in overflowed {
            self.overflow(id);
        }
        self.shed();
        sent
    }
}

/// Which sends a connection's write queue takes.
///
/// Issue 14 (4): the bound is checked on what is queued before the send, so that any message
/// the server accepts (up to `max_message_size`) can be sent, echoed say, to a connection
/// whose queue is under `max_write_buffer`; one frame is at most the larger of the two plus a
/// header. A queue so holds at most `max_write_buffer` + that frame.
#[derive(Debug, Clone, Copy)]
struct QueueLimit {
    max_queued: usize,
    max_frame: usize,
}

impl QueueLimit {
    fn of(config: &Config) -> QueueLimit {
        QueueLimit {
            max_queued: config.max_write_buffer,
            max_frame: config.max_write_buffer.max(config.max_message_size) + MAX_HEADER_LEN,
        }
    }

    /// Whether a frame of `frame` bytes may join a queue of `queued` bytes.
    fn admits(self, queued: usize, frame: usize) -> bool {
        queued < self.max_queued && frame <= self.max_frame
    }
}

/// The opcode of a data message.
fn data_opcode(msg: Message<'_>) -> OpCode {
    match msg {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    }
}

/// Issue 14 (5): counts `conn`'s buffers again in the reactor's `total`.
pub(crate) fn recharge<S>(conn: &mut Conn<S>, total: &mut usize) {
    let now = conn.buffered();
    *total = *total - conn.charged + now;
    conn.charged = now;
}

/// The connection `id` in `conns`, if it still exists.
pub(crate) fn lookup<S>(conns: &mut Slab<Conn<S>>, id: ConnId) -> Option<&mut Conn<S>> {
    conns
        .get_mut(id.index as usize)
        .filter(|c| c.generation == id.generation)
}

/// Who a fanned-out message goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Audience<'t> {
    /// Every open connection.
    All,
    /// The subscribers of a topic.
    Topic(&'t str),
}

/// One fan-out in progress: the frame, encoded once, and where it goes.
struct FanOut<'a> {
    opcode: OpCode,
    payload: &'a [u8],
    frame: &'a [u8],
    compressors: &'a mut Compressors,
    pool: &'a mut BufPool,
    dirty: &'a mut Vec<ConnId>,
    /// Issue 14 (5): the reactor's total.
    buffered: &'a mut usize,
    limit: QueueLimit,
    sent: usize,
    overflowed: Vec<ConnId>,
}

impl FanOut<'_> {
    /// Queues the frame (or its compressed form) for one connection, if open and not full.
    fn deliver<S>(&mut self, conn: &mut Conn<S>, id: ConnId) {
        if conn.phase != Phase::Open {
            return;
        }
        let frame = self
            .compressors
            .broadcast_frame(&mut conn.compress, self.opcode, self.payload)
            .unwrap_or(self.frame);
        if !self.limit.admits(conn.tx.len(), frame.len()) {
            conn.compress.forget();
            self.overflowed.push(id);
            return;
        }
        conn.tx.vec(frame.len(), self.pool).extend_from_slice(frame);
        Core::<S>::mark_dirty(conn, id, self.dirty);
        recharge(conn, self.buffered);
        self.sent += 1;
    }
}

/// The application's handle on the server during a handler call (or between turns).
///
/// Sends are queued and flushed once per connection at the end of the turn, so many sends in
/// one turn cost one write per connection.
pub struct Context<'a, S> {
    pub(crate) core: &'a mut Core<S>,
}

impl<S> Context<'_, S> {
    /// Queues a message for `id` (compressed if the connection negotiated permessage-deflate
    /// and the message reaches the threshold).
    pub fn send(&mut self, id: ConnId, msg: Message<'_>) -> Result<(), SendError> {
        self.core
            .send_frame(id, data_opcode(msg), msg.as_bytes(), true)
    }

    /// Queues a message for `id` uncompressed, whatever was negotiated (for data that is
    /// already compressed, say).
    pub fn send_uncompressed(&mut self, id: ConnId, msg: Message<'_>) -> Result<(), SendError> {
        self.core
            .send_frame(id, data_opcode(msg), msg.as_bytes(), false)
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
        if payload.len() > 125 {
            return Err(SendError::TooLong);
        }
        self.core.send_frame(id, OpCode::Ping, payload, false)
    }

    /// Starts the close handshake with `code` and `reason` (cut to fit 123 bytes). The
    /// connection takes no more sends; [`Handler::on_close`](crate::Handler::on_close) follows
    /// when the peer answers or `close_timeout` passes. `code` must be sendable (1000-1003,
    /// 1007-1014, 3000-4999).
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode);
        }
        match self.core.get(id) {
            Some(conn) if conn.phase == Phase::Open => {
                self.core
                    .close_frame(id, Some(code), reason, Phase::Closing);
                Ok(())
            }
            _ => Err(SendError::NotOpen),
        }
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
        match lookup(&mut core.conns, id) {
            Some(conn) if conn.phase == Phase::Open => {
                core.topics.subscribe(topic, id, &mut conn.topics)
            }
            _ => false,
        }
    }

    /// Unsubscribes `id` from `topic`; false if it was not subscribed.
    pub fn unsubscribe(&mut self, id: ConnId, topic: &str) -> bool {
        let core = &mut *self.core;
        match lookup(&mut core.conns, id) {
            Some(conn) => core.topics.unsubscribe(topic, id, &mut conn.topics),
            None => false,
        }
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
        let subscriptions = self.core.get(id).map_or(&[][..], |c| c.topics.as_slice());
        self.core.topics.names(subscriptions)
    }

    /// The peer's address.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.core.get(id)?.io.socket().peer_addr().ok()
    }

    /// Whether `id` is open (upgraded, not closing).
    pub fn is_open(&self, id: ConnId) -> bool {
        self.core.get(id).is_some_and(|c| c.phase == Phase::Open)
    }

    /// The open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.core
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(index, c)| ConnId {
                index: index as u32,
                generation: c.generation,
            })
    }

    /// The application's state for `id`, from upgrade until `on_close` returns.
    pub fn state(&mut self, id: ConnId) -> Option<&mut S> {
        self.core.get_mut(id).and_then(|c| c.state.as_mut())
    }

    /// Bytes queued for `id` and not yet taken by the socket.
    pub fn buffered(&self, id: ConnId) -> usize {
        self.core.get(id).map_or(0, |c| c.tx.len())
    }
}
