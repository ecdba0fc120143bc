//! The server's configuration: the options of the reactor, and the
//! [`ConnectionConfig`] each of its connections follows.

use std::time::Duration;

use crate::error::{ConfigError, Error};
use crate::proto::connection::{options, ConnectionConfig, Overflow};
use crate::proto::deflate::DeflateConfig;

options! {
    /// Server configuration: what every connection follows (`connection`), and the options
    /// of the reactor. Start from [`Config::default()`] and change what you need with the
    /// chainable setters of the same names, the connection's included (`max_message_size`,
    /// say); [`Server::bind`](crate::Server::bind) validates it.
    pub struct Config {
        /// What each connection follows: limits, timeouts, origins, permessage-deflate (the
        /// setters below of the same names change it).
        connection: ConnectionConfig = ConnectionConfig::default(),
        /// Most bytes the whole reactor buffers: input kept for partial frames and unfinished
        /// messages, and the write queues. A send that would pass it is an overflow of its
        /// connection (see `on_overflow`); input that passes it sheds the connection holding the
        /// most, closed with 1013 (try again later). At least twice the larger of
        /// `max_message_size` and `max_write_buffer` (default 256 MiB).
        max_buffered: usize = 256 * 1024 * 1024,
        /// Most open connections; more are answered 503 and closed. On Linux the server lowers
        /// it, with a warning, to what the open-files limit leaves (default 10,000).
        max_connections: usize = 10_000,
        /// Size of the reactor-wide read buffer, and so of one read (default 64 KiB).
        read_buffer_size: usize = 64 * 1024,
        /// Most bytes of commands waiting from [`Handle`](crate::Handle)s (each counts its
        /// message, topic or reason plus 64); beyond it their calls are refused with
        /// `HandleError::Full` (default 16 MiB).
        handle_queue: usize = 16 * 1024 * 1024,
    }
}

/// Setters on [`Config`] for the options of its [`ConnectionConfig`].
macro_rules! connection_setters {
    ($( $name:ident : $ty:ty, )*) => {
        impl Config {
            $(
                #[doc = concat!("Sets `connection.", stringify!($name), "` (see [`ConnectionConfig::", stringify!($name), "`]).")]
                pub fn $name(mut self, value: $ty) -> Config {
                    self.connection.$name = value;
                    self
                }
            )*
        }
    };
}

connection_setters! {
    max_handshake_size: usize,
    handshake_timeout: Duration,
    max_message_size: usize,
    max_fragments: usize,
    max_write_buffer: usize,
    on_overflow: Overflow,
    ping_interval: Option<Duration>,
    idle_timeout: Option<Duration>,
    close_timeout: Duration,
    buffer_pool_size: usize,
    allowed_origins: Vec<String>,
    deflate: Option<DeflateConfig>,
}

impl Config {
    /// Checks every option; the error names the first one that is out of range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first option out of range.
    pub fn validate(&self) -> Result<(), Error> {
        self.connection.validate()?;
        let bad = |option: &'static str, cause: ConfigError| Err(Error::Config { option, cause });
        if !(4096..=16 << 20).contains(&self.read_buffer_size) {
            let (min, max, got) = (4096, 16 << 20, self.read_buffer_size);
            return bad(
                "read_buffer_size",
                ConfigError::SizeOutOfRange { min, max, got },
            );
        }
        let c = &self.connection;
        let min = (c.max_message_size.max(c.max_write_buffer)).saturating_mul(2);
        if self.max_buffered < min {
            let got = self.max_buffered;
            return bad("max_buffered", ConfigError::BelowOneEcho { min, got });
        }
        if self.max_connections == 0 {
            return bad("max_connections", ConfigError::Zero);
        }
        if self.handle_queue < 1024 {
            let (min, got) = (1024, self.handle_queue);
            return bad("handle_queue", ConfigError::SizeTooSmall { min, got });
        }
        Ok(())
    }
}

/// File descriptors left for everything but connections: the listeners, the poll, the waker,
/// stdio, and the application's own files.
const FD_RESERVE: usize = 32;

/// Descriptors one reactor of a cluster holds besides its connections: the connections it
/// is refusing with 503 at most at once (the server's `REFUSAL_SLOTS`), its listener, its
/// poll and its waker.
const REACTOR_FDS: usize = super::server::REFUSAL_SLOTS + 3;

impl Config {
    /// This configuration with `max_connections` lowered (and a warning logged) to what the
    /// process's open-files limit leaves for connections, after `extra` more descriptors and
    /// [`FD_RESERVE`]. The limit is read from `/proc/self/limits` (Linux); elsewhere, or if it
    /// cannot be read, nothing changes.
    pub(crate) fn within_fd_limit(self, extra: usize) -> Config {
        self.fd_share(open_files_limit(), 1, extra)
    }

    /// This configuration for each of `reactors` reactors in one process: `max_connections`
    /// lowered (and a warning logged, once) to an even share of what the open-files limit
    /// leaves after [`FD_RESERVE`] and every reactor's [`REACTOR_FDS`], so that the reactors
    /// together stay within it. Each reactor's own [`within_fd_limit`](Self::within_fd_limit)
    /// then changes nothing.
    pub(crate) fn within_fd_share(self, reactors: usize) -> Config {
        self.fd_share(open_files_limit(), reactors, REACTOR_FDS)
    }

    /// `max_connections` at most a `reactors`-th of what `limit` (if known) leaves after
    /// [`FD_RESERVE`] and `extra` descriptors per reactor, and at least 1.
    fn fd_share(mut self, limit: Option<usize>, reactors: usize, extra: usize) -> Config {
        let Some(limit) = limit else {
            return self;
        };
        let reactors = reactors.max(1);
        let left = limit.saturating_sub(FD_RESERVE + reactors.saturating_mul(extra));
        let room = (left / reactors).max(1);
        if self.max_connections > room {
            let per = if reactors > 1 {
                format!(" per reactor ({reactors} reactors share it)")
            } else {
                String::new()
            };
            log::warn!(
                "max_connections lowered from {} to {room}{per}: the open-files limit is \
                 {limit} (raise it with `ulimit -n`)",
                self.max_connections
            );
            self.max_connections = room;
        }
        self
    }
}

/// The process's soft limit on open files, if known.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_of(config: Config) -> &'static str {
        match config.validate() {
            Err(Error::Config { option, .. }) => option,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn errors_name_the_option() {
        let d = Config::default;
        assert_eq!(option_of(d().max_handshake_size(10)), "max_handshake_size");
        assert_eq!(option_of(d().max_message_size(0)), "max_message_size");
        assert_eq!(option_of(d().max_write_buffer(1)), "max_write_buffer");
        assert_eq!(option_of(d().read_buffer_size(1)), "read_buffer_size");
        assert_eq!(option_of(d().max_connections(0)), "max_connections");
        assert_eq!(option_of(d().max_fragments(0)), "max_fragments");
        assert!(d().max_fragments(1).validate().is_ok());
        assert_eq!(option_of(d().max_buffered(16 << 20)), "max_buffered");
        let deflate = DeflateConfig {
            level: 11,
            ..DeflateConfig::default()
        };
        let message = d()
            .deflate(Some(deflate))
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "invalid config: deflate level must be 0..=9, got 11"
        );
        assert_eq!(
            option_of(d().close_timeout(Duration::ZERO)),
            "close_timeout"
        );
        let slow_ping = d().ping_interval(Some(Duration::from_secs(90)));
        assert_eq!(option_of(slow_ping), "ping_interval");
        let message = d().max_message_size(3).validate().unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid config: max_message_size must be at least 125 B, got 3"
        );
    }

    #[test]
    fn errors_carry_a_typed_cause() {
        let cause = |config: Config| match config.validate() {
            Err(Error::Config { cause, .. }) => cause,
            other => panic!("expected a config error, got {other:?}"),
        };
        let d = Config::default;
        assert!(matches!(
            cause(d().max_message_size(3)),
            ConfigError::SizeTooSmall { min: 125, got: 3 }
        ));
        assert!(matches!(
            cause(d().read_buffer_size(1 << 30)),
            ConfigError::SizeOutOfRange {
                min: 4096,
                max: 0x100_0000,
                got: 0x4000_0000
            }
        ));
        assert!(matches!(cause(d().max_connections(0)), ConfigError::Zero));
        let deflate = DeflateConfig {
            level: 11,
            ..DeflateConfig::default()
        };
        match cause(d().deflate(Some(deflate))) {
            ConfigError::Deflate(e) => assert_eq!(e.field(), "level"),
            other => panic!("expected a deflate cause, got {other:?}"),
        }
        let ping = Duration::from_secs(90);
        assert!(matches!(
            cause(d().ping_interval(Some(ping))),
            ConfigError::PingNotBeforeIdle { ping: p, .. } if p == ping
        ));
    }

    #[test]
    fn max_connections_fits_the_open_files_limit() {
        #[cfg(target_os = "linux")]
        {
            let limit = open_files_limit().expect("/proc/self/limits");
            let config = Config::default()
                .max_connections(usize::MAX)
                .within_fd_limit(64);
            assert_eq!(config.max_connections, limit - FD_RESERVE - 64);
        }
        let small = Config::default().max_connections(5).within_fd_limit(64);
        assert_eq!(small.max_connections, 5);
    }

    #[test]
    fn reactors_share_the_open_files_limit() {
        let max = |reactors, limit| {
            let config = Config::default().max_connections(usize::MAX);
            config
                .fd_share(limit, reactors, REACTOR_FDS)
                .max_connections
        };
        // 4 reactors, 1,024 descriptors: 32 reserved, 4 x 67 per reactor, 181 each.
        assert_eq!(max(4, Some(1024)), 181);
        for (reactors, limit) in [(1, 1024), (2, 256), (4, 1024), (16, 65_536), (3, 1000)] {
            let each = max(reactors, Some(limit));
            assert!(reactors * (each + REACTOR_FDS) + FD_RESERVE <= limit);
            // What one share leaves unused is less than one connection per reactor.
            assert!(reactors * (each + 1 + REACTOR_FDS) + FD_RESERVE > limit);
            // A reactor's own clamp (the server's, with its refusal slots) keeps it.
            let share = Config::default().max_connections(each);
            let again = share.fd_share(Some(limit), 1, 64).max_connections;
            assert_eq!(again, each);
        }
        // A limit too small to share still leaves each reactor one connection; an unknown
        // limit changes nothing.
        assert_eq!(max(8, Some(100)), 1);
        assert_eq!(max(8, None), usize::MAX);
    }
}
