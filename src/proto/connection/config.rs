//! What a connection needs to know: its limits, timeouts, the origins it lets in and
//! permessage-deflate. The server's [`Config`](crate::Config) holds one, beside the options
//! of the reactor itself.

use std::time::Duration;

use crate::error::{ConfigError, Error};
use crate::proto::deflate::DeflateConfig;
use crate::proto::frame::MAX_HEADER_LEN;

/// What happens when a send would push a connection's write queue past `max_write_buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Close the connection with 1008 (policy violation) and read nothing more from it; the
    /// close frame follows what is queued, or if even it does not fit, the connection is
    /// dropped at once. Other connections are unaffected.
    Close,
    /// Refuse the send with [`SendError::Full`](crate::SendError::Full) and keep the connection.
    Refuse,
}

/// Declares a configuration struct with its defaults and a chainable setter per field.
macro_rules! options {
    ($(#[$sdoc:meta])* $vis:vis struct $struct:ident {
        $( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr, )*
    }) => {
        $(#[$sdoc])*
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        $vis struct $struct {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        impl Default for $struct {
            fn default() -> $struct {
                $struct { $( $name: $default, )* }
            }
        }

        impl $struct {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> $struct {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}
pub(crate) use options;

options! {
    /// What each connection of an [`Endpoint`](super::Endpoint) needs: limits, timeouts,
    /// allowed origins and permessage-deflate. Start from [`ConnectionConfig::default()`] and
    /// change what you need with the chainable setters of the same names. A server's
    /// [`Config`](crate::Config) holds one (and has the same setters).
    pub struct ConnectionConfig {
        /// Largest HTTP request head, blank line included; a larger one gets 431 (default 8 KiB).
        max_handshake_size: usize = 8 * 1024,
        /// Time a client has to complete its request head; then it is dropped (default 10 s).
        handshake_timeout: Duration = Duration::from_secs(10),
        /// Largest message, whole or fragmented; a larger one is refused with 1009 as soon as a
        /// frame header announces it (default 16 MiB).
        max_message_size: usize = 16 * 1024 * 1024,
        /// Most frames one message may take; the frame past it closes the connection with
        /// 1008 (policy violation). It bounds the work a message costs when its frames add
        /// nothing, such as a flood of empty continuation frames (default 16,384, Node ws's;
        /// at least 1, which allows no fragmentation).
        max_fragments: usize = crate::proto::message::DEFAULT_MAX_FRAGMENTS,
        /// Most bytes queued for one connection, to the byte but for one frame header; a send
        /// that would pass it overflows (see `on_overflow`). A message up to
        /// `max_message_size` is taken by an empty queue all the same, so that any message the
        /// server accepts can be echoed (see [`max_queue`](Self::max_queue)) (default 16 MiB).
        max_write_buffer: usize = 16 * 1024 * 1024,
        /// What a send beyond `max_write_buffer` does (default: close with 1008).
        on_overflow: Overflow = Overflow::Close,
        /// Ping a connection after this much silence from it; `None` never pings (default 30 s).
        ping_interval: Option<Duration> = Some(Duration::from_secs(30)),
        /// Drop a connection after this much silence from it; `None` never does (default 60 s).
        idle_timeout: Option<Duration> = Some(Duration::from_secs(60)),
        /// How long to wait for the peer's close frame, or for it to close TCP, after ours
        /// (default 5 s).
        close_timeout: Duration = Duration::from_secs(5),
        /// Bytes of large buffers (over 64 KiB, grown for big messages) the reactor keeps for
        /// reuse, which spares big messages the cost of growing and faulting in fresh ones; 0
        /// keeps none (default 4 MiB).
        buffer_pool_size: usize = 4 * 1024 * 1024,
        /// Origins (e.g. `https://example.com`) allowed to upgrade; another `Origin` gets 403.
        /// Empty allows any, and requests without `Origin` (non-browser clients) always pass
        /// (default: empty).
        allowed_origins: Vec<String> = Vec::new(),
        /// permessage-deflate (RFC 7692), offered to clients that ask; `None` turns it off
        /// (default: off).
        deflate: Option<DeflateConfig> = None,
    }
}

impl ConnectionConfig {
    /// Whether a frame of `frame` bytes may join a write queue of `queued` bytes: if the
    /// queue then holds at most `max_write_buffer` plus a frame header, or, for an empty
    /// queue, if the frame carries at most `max_message_size` (so that any message the
    /// endpoint accepts can be echoed to a connection that keeps up).
    #[inline]
    pub(crate) fn queue_admits(&self, queued: usize, frame: usize) -> bool {
        // Both are sizes of memory held, far from overflowing when added.
        queued + frame <= self.max_write_buffer.saturating_add(MAX_HEADER_LEN)
            || (queued == 0 && frame <= self.max_queue())
    }

    /// The most bytes a connection's write queue holds: `max_write_buffer`, or
    /// `max_message_size` if that is larger (a largest message, queued alone), plus one frame
    /// header.
    #[inline]
    pub fn max_queue(&self) -> usize {
        (self.max_write_buffer.max(self.max_message_size)).saturating_add(MAX_HEADER_LEN)
    }

    /// Checks every option; the error names the first one that is out of range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first option out of range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |option: &'static str, cause: ConfigError| Err(Error::Config { option, cause });
        if !(256..=1 << 20).contains(&self.max_handshake_size) {
            let (min, max, got) = (256, 1 << 20, self.max_handshake_size);
            return bad(
                "max_handshake_size",
                ConfigError::SizeOutOfRange { min, max, got },
            );
        }
        if self.max_message_size < 125 {
            let (min, got) = (125, self.max_message_size);
            return bad("max_message_size", ConfigError::SizeTooSmall { min, got });
        }
        if self.max_fragments == 0 {
            return bad("max_fragments", ConfigError::Zero);
        }
        if self.max_write_buffer < 1024 {
            let (min, got) = (1024, self.max_write_buffer);
            return bad("max_write_buffer", ConfigError::SizeTooSmall { min, got });
        }
        if let Some(Err(e)) = self.deflate.as_ref().map(DeflateConfig::validate) {
            return bad("deflate", ConfigError::Deflate(e));
        }
        let durations = [
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("close_timeout", Some(self.close_timeout)),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
        ];
        for (option, value) in durations {
            if value == Some(Duration::ZERO) {
                return bad(option, ConfigError::ZeroDuration);
            }
        }
        if let (Some(ping), Some(idle)) = (self.ping_interval, self.idle_timeout) {
            if ping >= idle {
                return bad(
                    "ping_interval",
                    ConfigError::PingNotBeforeIdle { ping, idle },
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbounded_queue_takes_any_frame() {
        let config = ConnectionConfig::default().max_write_buffer(usize::MAX);
        assert!(config.validate().is_ok());
        assert!(config.queue_admits(0, 1 << 30));
    }

    #[test]
    fn a_queue_holds_its_bound_to_the_byte() {
        let config = ConnectionConfig::default();
        let max = 16 << 20;
        assert_eq!(config.max_queue(), max + MAX_HEADER_LEN);
        assert!(
            config.queue_admits(0, max + MAX_HEADER_LEN),
            "a largest message"
        );
        assert!(!config.queue_admits(0, max + MAX_HEADER_LEN + 1));
        assert!(config.queue_admits(max, MAX_HEADER_LEN));
        assert!(!config.queue_admits(max, MAX_HEADER_LEN + 1));
        assert!(!config.queue_admits(max - 1000, 2000));
        let small = ConnectionConfig::default().max_write_buffer(64 << 10);
        assert!(
            small.queue_admits(0, max + MAX_HEADER_LEN),
            "alone, a largest message"
        );
        assert!(small.queue_admits(1, (64 << 10) + MAX_HEADER_LEN - 1));
        assert!(!small.queue_admits(1, (64 << 10) + MAX_HEADER_LEN));
    }
}
