//! What the connections of one endpoint share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ConnectionConfig;
use super::{data_opcode, Compressors, Message};
use crate::proto::buffer::BufPool;
use crate::proto::clock::{span, Millis};
use crate::proto::frame::{write_frame, OpCode};
use crate::proto::message::{Limits, RandomPool};

/// What the connections of one endpoint share: the limits, a pool of buffers, the shared
/// permessage-deflate compressors, and the clock's origin and current time.
///
/// Times are handed in by the caller (sans-IO): [`Connection::recv`](super::Connection::recv)
/// and [`Connection::handle_timeout`](super::Connection::handle_timeout) take the current
/// time, and the other calls use the last time given.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) config: ConnectionConfig,
    /// The config's message limits, which every connection's decoder points to.
    pub(crate) limits: Arc<Limits>,
    pub(crate) pool: BufPool,
    pub(crate) compressors: Compressors,
    /// Masking keys for the client role's frames, from the OS CSPRNG.
    pub(crate) random: RandomPool,
    epoch: Instant,
    /// The current time, in milliseconds since `epoch`.
    pub(crate) now: Millis,
    /// When the millisecond after `now` begins: an earlier time leaves `now` as it is, so
    /// that setting the time per read costs a comparison, not a conversion.
    next_tick: Instant,
    /// The config's durations in milliseconds, worked out once (they are read per read).
    pub(crate) spans: Spans,
    /// Upgrade requests refused so far.
    pub(crate) refusals: Refusals,
}

/// Upgrade requests an endpoint's server-role connections refused (see
/// [`Endpoint::refusals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusals {
    /// Refusals by HTTP status, in the order first seen.
    pub by_status: Vec<(u16, u64)>,
    /// Of those, requests from an `Origin` not in `allowed_origins` (403).
    pub origin: u64,
}

impl Refusals {
    /// Counts a refusal with `status`.
    pub(crate) fn count(&mut self, status: u16) {
        match self.by_status.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.by_status.push((status, 1)),
        }
    }
}

/// The config's durations as [`Millis`] (see [`span`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spans {
    pub(crate) handshake: Millis,
    pub(crate) close: Millis,
    pub(crate) ping: Option<Millis>,
    pub(crate) idle: Option<Millis>,
}

impl Endpoint {
    /// An endpoint with the limits of `config` (not validated here: see
    /// [`ConnectionConfig::validate`]) whose clock starts at `now`.
    pub fn new(config: ConnectionConfig, now: Instant) -> Endpoint {
        let spans = Spans {
            handshake: span(config.handshake_timeout),
            close: span(config.close_timeout),
            ping: config.ping_interval.map(span),
            idle: config.idle_timeout.map(span),
        };
        Endpoint {
            spans,
            pool: BufPool::new(16 * 1024, 64, config.buffer_pool_size)
                .with_max_queue(config.max_queue()),
            compressors: Compressors::new(config.deflate.as_ref()),
            limits: Arc::new(Limits::new(config.max_message_size, config.max_fragments)),
            random: RandomPool::new(),
            config,
            refusals: Refusals::default(),
            epoch: now,
            now: 0,
            next_tick: now + Duration::from_millis(1),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Sets the current time (it never goes back).
    #[inline]
    pub fn set_now(&mut self, now: Instant) {
        if now >= self.next_tick {
            // At or past the next tick, so at least one millisecond later than `now`.
            self.now = self.millis(now);
            self.next_tick = self.instant(self.now + 1);
        }
    }

    /// The upgrade requests refused so far by this endpoint's connections.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// The current time (the last one set), in milliseconds since the clock's origin.
    pub fn now_millis(&self) -> Millis {
        self.now
    }

    /// `at` in milliseconds since the clock's origin, rounded down.
    pub fn millis(&self, at: Instant) -> Millis {
        at.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    /// The instant of `at` milliseconds since the clock's origin.
    pub fn instant(&self, at: Millis) -> Instant {
        self.epoch + Duration::from_millis(at)
    }

    /// Encodes `msg` once for many connections of this endpoint (a broadcast, a topic's
    /// subscribers), into `frame`: see [`Connection::send_broadcast`](super::Connection::send_broadcast).
    /// Compressed copies are made once per shared compressor as recipients need them.
    pub fn broadcast<'a>(&mut self, msg: Message<'a>, frame: &'a mut Vec<u8>) -> Broadcast<'a> {
        let opcode = data_opcode(msg);
        frame.clear();
        write_frame(frame, opcode, true, false, None, msg.as_bytes());
        self.compressors.begin_broadcast();
        Broadcast {
            opcode,
            payload: msg.as_bytes(),
            frame,
        }
    }
}

/// A message encoded once for many connections of one endpoint, by [`Endpoint::broadcast`].
#[derive(Debug, Clone, Copy)]
pub struct Broadcast<'a> {
    pub(super) opcode: OpCode,
    pub(super) payload: &'a [u8],
    /// The uncompressed frame.
    pub(super) frame: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_by_whole_milliseconds_and_never_back() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(ConnectionConfig::default(), t0);
        let at = |us: u64| t0 + Duration::from_micros(us);
        for (set, want) in [
            (999, 0),
            (1_000, 1),
            (1_999, 1),
            (7_500, 7),
            (3_000, 7), // earlier: ignored
            (7_999, 7),
            (8_000, 8),
        ] {
            ep.set_now(at(set));
            assert_eq!(ep.now, want, "after set_now({set} us)");
        }
    }
}
