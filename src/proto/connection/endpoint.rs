//! What the connections of one endpoint share.

use std::time::{Duration, Instant};

use super::Compressors;
use crate::proto::buffer::BufPool;
use crate::proto::clock::Millis;
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
    epoch: Instant,
    /// The current time, in milliseconds since `epoch`.
    pub(crate) now: Millis,
}

impl Endpoint {
    /// An endpoint with the limits of `config` (not validated here: see
    /// [`Config::validate`]) whose clock starts at `now`.
    pub fn new(config: Config, now: Instant) -> Endpoint {
        Endpoint {
            pool: BufPool::new(16 * 1024, 64, config.buffer_pool_size),
            compressors: Compressors::new(config.deflate.as_ref()),
            config,
            epoch: now,
            now: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sets the current time (it never goes back).
    pub fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(self.millis(now));
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
