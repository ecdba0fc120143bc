//! What the connections of one endpoint share.

use std::time::{Duration, Instant};

use super::Compressors;
use crate::proto::buffer::BufPool;
use crate::proto::clock::{span, Millis};
use crate::proto::message::RandomPool;
use crate::Config;

/// What the connections of one endpoint share: the limits, a pool of buffers, the shared
/// permessage-deflate compressors, and the clock's origin and current time.
///
/// Times are handed in by the caller (sans-IO): [`Connection::recv`](super::Connection::recv)
/// and [`Connection::handle_timeout`](super::Connection::handle_timeout) take the current
/// time, and the other calls use the last time given.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) config: Config,
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
    /// [`Config::validate`]) whose clock starts at `now`.
    pub fn new(config: Config, now: Instant) -> Endpoint {
        let spans = Spans {
            handshake: span(config.handshake_timeout),
            close: span(config.close_timeout),
            ping: config.ping_interval.map(span),
            idle: config.idle_timeout.map(span),
        };
        Endpoint {
            spans,
            pool: BufPool::new(16 * 1024, 64, config.buffer_pool_size),
            compressors: Compressors::new(config.deflate.as_ref()),
            random: RandomPool::new(),
            config,
            epoch: now,
            now: 0,
            next_tick: now + Duration::from_millis(1),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
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

    /// `at` in milliseconds since the clock's origin, rounded down.
    pub(crate) fn millis(&self, at: Instant) -> Millis {
        at.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    /// The instant of `at` milliseconds since the clock's origin.
    pub(crate) fn instant(&self, at: Millis) -> Instant {
        self.epoch + Duration::from_millis(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_by_whole_milliseconds_and_never_back() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Config::default(), t0);
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
