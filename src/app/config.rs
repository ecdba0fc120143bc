//! Server configuration: every limit with a default that is safe on the open internet.

use std::time::Duration;

use crate::proto::deflate::DeflateConfig;
use crate::proto::frame::MAX_HEADER_LEN;
use crate::Error;

/// What happens when a send would push a connection's write queue past `max_write_buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Close the connection with 1008 (policy violation); other connections are unaffected.
    Close,
    /// Refuse the send with [`SendError::Full`](crate::SendError::Full) and keep the connection.
    Refuse,
}

macro_rules! config {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr, )*) => {
        /// Server configuration. Start from [`Config::default()`] and change what you need with
        /// the chainable setters of the same names; [`Server::bind`](crate::Server::bind)
        /// validates it.
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub struct Config {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Config {
                Config { $( $name: $default, )* }
            }
        }

        impl Config {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Config {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

config! {
    /// Largest HTTP request head, blank line included; a larger one gets 431 (default 8 KiB).
    max_handshake_size: usize = 8 * 1024,
    /// Time a client has to complete its request head; then it is dropped (default 10 s).
    handshake_timeout: Duration = Duration::from_secs(10),
    /// Largest message, whole or fragmented; a larger one is refused with 1009 as soon as a
    /// frame header announces it (default 16 MiB).
    max_message_size: usize = 16 * 1024 * 1024,
    /// Most frames one message may take; the frame past it closes the connection with 1008
    /// (policy violation). It bounds the work a message costs when its frames add nothing,
    /// such as a flood of empty continuation frames (default 16,384, Node ws's; at least 1,
    /// which allows no fragmentation).
    max_fragments: usize = crate::proto::message::DEFAULT_MAX_FRAGMENTS,
    /// Most bytes queued for one connection before a send: a send to a queue holding this
    /// much is refused (see `on_overflow`), one to a queue holding less is taken if it is at
    /// most this or `max_message_size` (plus a frame header), so that any message the server
    /// accepts can be echoed (default 16 MiB).
    max_write_buffer: usize = 16 * 1024 * 1024,
    /// Most bytes the whole reactor buffers: input kept for partial frames and unfinished
    /// messages, and the write queues. A send that would pass it is an overflow of its
    /// connection (see `on_overflow`); input that passes it sheds the connection holding the
    /// most, closed with 1013 (try again later). At least twice the larger of
    /// `max_message_size` and `max_write_buffer` (default 256 MiB).
    max_buffered: usize = 256 * 1024 * 1024,
    /// What a send beyond `max_write_buffer` does (default: close with 1008).
    on_overflow: Overflow = Overflow::Close,
    /// Ping a connection after this much silence from it; `None` never pings (default 30 s).
    ping_interval: Option<Duration> = Some(Duration::from_secs(30)),
    /// Drop a connection after this much silence from it; `None` never does (default 60 s).
    idle_timeout: Option<Duration> = Some(Duration::from_secs(60)),
    /// How long to wait for the peer's close frame, or for it to close TCP, after ours
    /// (default 5 s).
    close_timeout: Duration = Duration::from_secs(5),
    /// Most open connections; more are answered 503 and closed. On Linux the server lowers
    /// it, with a warning, to what the open-files limit leaves (default 10,000).
    max_connections: usize = 10_000,
    /// Size of the reactor-wide read buffer, and so of one read (default 64 KiB).
    read_buffer_size: usize = 64 * 1024,
    /// Bytes of large buffers (over 64 KiB, grown for big messages) the reactor keeps for
    /// reuse, which spares big messages the cost of growing and faulting in fresh ones; 0
    /// keeps none (default 4 MiB).
    buffer_pool_size: usize = 4 * 1024 * 1024,
    /// Origins (e.g. `https://example.com`) allowed to upgrade; another `Origin` gets 403.
    /// Empty allows any, and requests without `Origin` (non-browser clients) always pass
    /// (default: empty).
    allowed_origins: Vec<String> = Vec::new(),
    /// Most bytes of commands waiting from [`Handle`](crate::Handle)s (each counts its
    /// message, topic or reason plus 64); beyond it their calls are refused with
    /// `HandleError::Full` (default 16 MiB).
    handle_queue: usize = 16 * 1024 * 1024,
    /// permessage-deflate (RFC 7692), offered to clients that ask; `None` turns it off
    /// (default: off).
    deflate: Option<DeflateConfig> = None,
}

impl Config {
    /// Whether a frame of `frame` bytes may join a write queue of `queued` bytes.
    ///
    /// The bound is checked on what is queued before the send, so that any message the
    /// endpoint accepts (up to `max_message_size`) can be sent, echoed say, to a connection
    /// whose queue is under `max_write_buffer`; one frame is at most the larger of the two
    /// plus a header. A queue so holds at most `max_write_buffer` + that frame.
    #[inline]
    pub(crate) fn queue_admits(&self, queued: usize, frame: usize) -> bool {
        let max_frame = self.max_write_buffer.max(self.max_message_size);
        queued < self.max_write_buffer && frame <= max_frame.saturating_add(MAX_HEADER_LEN)
    }

    /// Checks every option; the error names the first one that is out of range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first option out of range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |option: &'static str, message: String| Err(Error::Config { option, message });
        if !(256..=1 << 20).contains(&self.max_handshake_size) {
            return bad(
                "max_handshake_size",
                format!("must be 256 B to 1 MiB, got {}", self.max_handshake_size),
            );
        }
        if self.max_message_size < 125 {
            return bad(
                "max_message_size",
                format!("must be at least 125 B, got {}", self.max_message_size),
            );
        }
        if self.max_fragments == 0 {
            return bad("max_fragments", "must be at least 1, got 0".into());
        }
        if self.max_write_buffer < 1024 {
            return bad(
                "max_write_buffer",
                format!("must be at least 1 KiB, got {}", self.max_write_buffer),
            );
        }
        if !(4096..=16 << 20).contains(&self.read_buffer_size) {
            return bad(
                "read_buffer_size",
                format!("must be 4 KiB to 16 MiB, got {}", self.read_buffer_size),
            );
        }
        if let Some(Err(e)) = self.deflate.as_ref().map(DeflateConfig::validate) {
            return Err(Error::Config {
                option: "deflate",
                message: e.to_string(),
            });
        }
        let one_echo = (self.max_message_size.max(self.max_write_buffer)).saturating_mul(2);
        if self.max_buffered < one_echo {
            return bad(
                "max_buffered",
                format!(
                    "must be at least twice the larger of max_message_size and \
                     max_write_buffer ({one_echo}), got {}",
                    self.max_buffered
                ),
            );
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1, got 0".into());
        }
        if self.handle_queue < 1024 {
            return bad(
                "handle_queue",
                format!("must be at least 1 KiB, got {}", self.handle_queue),
            );
        }
        let durations = [
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("close_timeout", Some(self.close_timeout)),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
        ];
        for (option, value) in durations {
            if value == Some(Duration::ZERO) {
                return bad(option, "must be more than zero".into());
            }
        }
        if let (Some(ping), Some(idle)) = (self.ping_interval, self.idle_timeout) {
            if ping >= idle {
                return bad(
                    "ping_interval",
                    format!("must be shorter than idle_timeout ({ping:?} >= {idle:?})"),
                );
            }
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
const REACTOR_FDS: usize = 64 + 3;

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
            // A reactor's own clamp (the server's, with its 64 refusal slots) keeps it.
            let share = Config::default().max_connections(each);
            let again = share.fd_share(Some(limit), 1, 64).max_connections;
            assert_eq!(again, each);
        }
        // A limit too small to share still leaves each reactor one connection; an unknown
        // limit changes nothing.
        assert_eq!(max(8, Some(100)), 1);
        assert_eq!(max(8, None), usize::MAX);
    }

    #[test]
    fn an_unbounded_queue_takes_any_frame() {
        let config = Config::default()
            .max_write_buffer(usize::MAX)
            .max_buffered(usize::MAX);
        assert!(config.validate().is_ok());
        assert!(config.queue_admits(0, 1 << 30));
        assert!(!Config::default().queue_admits(16 << 20, 10));
    }
}
