//! The reactor's connection table: what the application touches through a
//! [`Context`](crate::Context), and the fan-out of broadcasts and publishes.

use slab::Slab;

use super::metrics::Counters;
use super::slot::Slot;
use super::timers::Timers;
use super::topics::Topics;
use super::transport::Transport;
use crate::proto::connection::Endpoint;
use crate::{CloseReason, Config, ConnId, Message, Metrics, Relay, SendError};

/// Everything about connections that the application may touch through a [`Context`].
pub(crate) struct Core<S> {
    pub(crate) slots: Slab<Slot<S>>,
    /// The limits, the buffer pool, the shared compressors and the time of this turn.
    pub(crate) ep: Endpoint,
    /// The server's configuration (the endpoint holds its connections' part).
    config: Config,
    pub(crate) timers: Timers,
    /// Connections with bytes to flush at the end of the turn.
    pub(crate) dirty: Vec<ConnId>,
    /// `on_close` calls owed for connections closed from inside a handler call.
    pub(crate) closed: Vec<(ConnId, CloseReason<'static>)>,
    /// Topics and their subscribers.
    pub(crate) topics: Topics,
    /// Where publishes go beyond this reactor.
    pub(crate) relays: Vec<Box<dyn Relay>>,
    /// Bytes buffered by all connections: the sum of their `charged`.
    pub(crate) buffered: usize,
    /// What the reactor counts for [`Metrics`](crate::Metrics).
    pub(crate) counters: Counters,
    /// A broadcast's uncompressed frame, encoded once.
    frame: Vec<u8>,
    next_generation: u32,
}

impl<S> Core<S> {
    pub(crate) fn new(config: Config) -> Core<S> {
        Core {
            slots: Slab::new(),
            ep: Endpoint::new(config.connection.clone(), std::time::Instant::now()),
            config,
            timers: Timers::default(),
            dirty: Vec::new(),
            closed: Vec::new(),
            frame: Vec::new(),
            buffered: 0,
            counters: Counters::default(),
            next_generation: 0,
            topics: Topics::default(),
            relays: Vec::new(),
        }
    }

    /// The metrics' snapshot.
    pub(crate) fn metrics(&self) -> Metrics {
        let open = self.slots.iter().filter(|(_, s)| s.conn.is_open()).count();
        let refusals = self.ep.refusals();
        (self.counters).snapshot(refusals, open as u64, self.buffered as u64)
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A fresh generation for a new connection.
    pub(crate) fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// The id of the connection at `index`.
    pub(crate) fn id(&self, index: usize) -> Option<ConnId> {
        self.slots
            .get(index)
            .map(|c| ConnId::new(index, c.generation))
    }

    /// The connection `id`, if it still exists.
    pub(crate) fn get(&self, id: ConnId) -> Option<&Slot<S>> {
        self.slots
            .get(id.index as usize)
            .filter(|c| c.generation == id.generation)
    }

    /// The connection `id`, if it still exists.
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Slot<S>> {
        lookup(&mut self.slots, id)
    }

    /// Marks `id` to be flushed at the end of the turn if it has bytes to write, or has said
    /// all and must shut its transport down.
    #[inline]
    pub(crate) fn mark_slot_dirty(slot: &mut Slot<S>, id: ConnId, dirty: &mut Vec<ConnId>) {
        let shut_down = slot.conn.wants_shutdown() && !slot.write_shut;
        if !slot.dirty && (slot.conn.buffered() > 0 || shut_down) {
            slot.dirty = true;
            dirty.push(id);
        }
    }

    /// Counts `id`'s buffers again in the reactor's total.
    fn recharge(&mut self, id: ConnId) {
        if let Some(slot) = lookup(&mut self.slots, id) {
            recharge(slot, &mut self.buffered);
        }
    }

    /// While the reactor buffers more than `max_buffered`, sheds the connection holding the
    /// most (see [`Connection::shed`](crate::proto::connection::Connection::shed)); its
    /// `on_close` follows with [`CloseReason::Overflow`].
    #[inline]
    pub(crate) fn shed(&mut self) {
        if self.buffered > self.config.max_buffered {
            self.shed_largest();
        }
    }

    /// [`shed`](Self::shed)'s work, once the reactor buffers too much.
    #[cold]
    fn shed_largest(&mut self) {
        while self.buffered > self.config.max_buffered {
            let largest = (self.slots.iter()).max_by_key(|(_, s)| s.charged);
            let Some((index, slot)) = largest.filter(|(_, s)| s.charged > 0) else {
                return;
            };
            let id = ConnId::new(index, slot.generation);
            log::warn!("{id}: closed, holding {} B over max_buffered", slot.charged);
            self.counters.shed += 1;
            if self.slots[index].conn.shed(&mut self.ep).is_some() {
                self.closed.push((id, CloseReason::Overflow));
            }
            self.recharge(id);
            self.settle_conn(id);
        }
    }

    /// After the connection's state machine moved on its own (an event, a deadline): flushes
    /// what it queued at the end of the turn and arms its next deadline.
    pub(crate) fn settle_conn(&mut self, id: ConnId) {
        if let Some(slot) = lookup(&mut self.slots, id) {
            Self::settle_slot(slot, id, &mut self.dirty, &mut self.timers, &self.ep);
        }
    }

    /// [`settle_conn`](Self::settle_conn) for a slot at hand. A deadline later than the one
    /// armed is not armed: the armed one comes early, and arms it then.
    #[inline]
    pub(crate) fn settle_slot(
        slot: &mut Slot<S>,
        id: ConnId,
        dirty: &mut Vec<ConnId>,
        timers: &mut Timers,
        ep: &Endpoint,
    ) {
        Self::mark_slot_dirty(slot, id, dirty);
        if let Some(at) = slot.conn.poll_deadline(ep) {
            timers.arm(&mut slot.armed, id.index, slot.generation, at);
        }
    }

    /// After a send to `id`: flush it at the end of the turn; if the send closed it (a close,
    /// or an overflow, which owes the application its `on_close`), arm its close deadline.
    pub(crate) fn sent(
        &mut self,
        id: ConnId,
        result: Result<(), SendError>,
    ) -> Result<(), SendError> {
        let Some(slot) = lookup(&mut self.slots, id) else {
            return result;
        };
        if slot.conn.is_open() {
            Self::mark_slot_dirty(slot, id, &mut self.dirty);
            return result;
        }
        if result == Err(SendError::Full) {
            self.closed.push((id, CloseReason::Overflow));
        }
        self.settle_conn(id);
        result
    }

    /// Queues a message for `id`; a large one with nothing queued before it is written
    /// straight from `msg`'s bytes on a plain socket.
    #[inline]
    pub(crate) fn send(
        &mut self,
        id: ConnId,
        msg: Message<'_>,
        compress: bool,
    ) -> Result<(), SendError> {
        let Some(slot) = lookup(&mut self.slots, id) else {
            return Err(SendError::NotOpen);
        };
        let result = if compress && slot.io.is_plain() {
            let mut socket = Counted {
                io: &mut slot.io,
                bytes: &mut self.counters.bytes_out,
            };
            slot.conn.send_to(&mut self.ep, msg, &mut socket)
        } else if compress {
            slot.conn.send(&mut self.ep, msg)
        } else {
            slot.conn.send_uncompressed(&mut self.ep, msg)
        };
        recharge(slot, &mut self.buffered);
        self.counters.messages_out += u64::from(result.is_ok());
        if slot.conn.is_open() && self.buffered <= self.config.max_buffered {
            // The usual case, without a second lookup.
            Self::mark_slot_dirty(slot, id, &mut self.dirty);
            return result;
        }
        let result = self.sent(id, result);
        self.shed();
        result
    }

    /// Hands a publish to every relay.
    pub(crate) fn relay(&mut self, topic: &str, msg: Message<'_>) {
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
        let message = self.ep.broadcast(msg, &mut self.frame);
        let mut sent = 0;
        let mut overflowed = Vec::new();
        let mut deliver = |slot: &mut Slot<S>, id: ConnId, ep: &mut Endpoint| {
            if Some(id) == except || !slot.conn.is_open() {
                return;
            }
            match slot.conn.send_broadcast(ep, &message) {
                Ok(()) => {
                    Self::mark_slot_dirty(slot, id, &mut self.dirty);
                    recharge(slot, &mut self.buffered);
                    sent += 1;
                }
                Err(_) => overflowed.push(id),
            }
        };
        match audience {
            Audience::All => {
                for (index, slot) in self.slots.iter_mut() {
                    let id = ConnId::new(index, slot.generation);
                    deliver(slot, id, &mut self.ep);
                }
            }
            Audience::Topic(name) => {
                for &id in self.topics.members(name) {
                    if let Some(slot) = lookup(&mut self.slots, id) {
                        deliver(slot, id, &mut self.ep);
                    }
                }
            }
        }
        self.counters.messages_out += sent as u64;
        for id in overflowed {
            let _ = self.sent(id, Err(SendError::Full));
        }
        self.shed();
        sent
    }
}

/// A plain socket for [`Connection::send_to`](crate::proto::connection::Connection::send_to),
/// counting the bytes it takes.
struct Counted<'a> {
    io: &'a mut Transport,
    bytes: &'a mut u64,
}

impl std::io::Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.io.write_vectored(bufs)?;
        *self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts `slot`'s buffers again in the reactor's `total`.
#[inline]
pub(crate) fn recharge<S>(slot: &mut Slot<S>, total: &mut usize) {
    let now = u32::try_from(slot.conn.memory()).unwrap_or(u32::MAX);
    *total = *total - slot.charged as usize + now as usize;
    slot.charged = now;
}

/// The connection `id` in `slots`, if it still exists.
pub(crate) fn lookup<S>(slots: &mut Slab<Slot<S>>, id: ConnId) -> Option<&mut Slot<S>> {
    slots
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
