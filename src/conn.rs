//! One client connection's state: its phase, buffers, deadlines and the application's state.

use crate::transport::Transport;

use crate::buffer::{RxBuf, TxBuf};
use crate::proto::deflate::Deflater;
use crate::proto::handshake::HeadScanner;
use crate::proto::message::Decoder;
use crate::proto::Role;
use crate::timer::{span, Millis};
use crate::topics::Subscriptions;
use crate::Config;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the upgrade request.
    Handshake,
    /// Upgraded: messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; its data is discarded.
    Closing,
    /// Done as far as the application knows: our last bytes are flushed, then we shut down
    /// writing and wait for the peer to close TCP (reads are discarded).
    Linger,
}

/// The receive side, taken out of the connection while its bytes are handed to the handler.
#[derive(Debug)]
pub(crate) struct Rx {
    /// Bytes kept between reads.
    pub(crate) buf: RxBuf,
    /// What makes sense of them.
    pub(crate) parse: Parse,
}

/// The receive side's protocol state.
#[derive(Debug)]
pub(crate) struct Parse {
    pub(crate) decoder: Decoder,
    pub(crate) scanner: HeadScanner,
    /// Total size of the frame or head that the kept bytes are waiting to complete, if known
    /// (else 0; `u32::MAX` for anything larger).
    pub(crate) want: u32,
}

impl Rx {
    pub(crate) fn new(max_message_size: usize) -> Rx {
        Rx {
            buf: RxBuf::default(),
            parse: Parse {
                decoder: Decoder::new(Role::Server, max_message_size),
                scanner: HeadScanner::default(),
                want: 0,
            },
        }
    }
}

/// How the messages a connection is sent are compressed (permessage-deflate).
#[derive(Debug)]
pub(crate) enum Compress {
    /// Not negotiated.
    Off,
    /// Each message on its own (server_no_context_takeover), with the reactor's shared
    /// compressor for this many window bits: nothing per connection.
    Shared(u8),
    /// With context takeover: the connection's own compressor.
    Own(Box<Deflater>),
}

impl Compress {
    /// A compressed message was not sent after all: a compressor with context takeover must
    /// not refer to it later, so it starts a fresh window.
    pub(crate) fn forget(&mut self) {
        if let Compress::Own(deflater) = self {
            deflater.reset();
        }
    }
}

/// A connection in the reactor's slab.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) io: Transport,
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    pub(crate) rx: Rx,
    pub(crate) tx: TxBuf,
    /// The topics this connection is subscribed to.
    pub(crate) topics: Subscriptions,
    /// How messages to this connection are compressed.
    pub(crate) compress: Compress,
    /// The application's state, from upgrade until after `on_close`.
    pub(crate) state: Option<S>,
    /// When the peer last sent anything.
    pub(crate) last_seen: Millis,
    /// Handshake deadline, or close deadline once closing or lingering.
    pub(crate) deadline: Millis,
    /// The deadline this connection has in the timer heap, or `UNARMED`.
    pub(crate) armed: Millis,
    /// A keepalive ping went out and nothing has arrived since.
    pub(crate) ping_sent: bool,
    /// WRITABLE interest is registered (only while bytes wait for the socket).
    pub(crate) wants_write: bool,
    /// In the dirty list, to be flushed at the end of the turn.
    pub(crate) dirty: bool,
    /// A flush hit `WouldBlock` since the queue was last empty: `on_drain` is owed.
    pub(crate) backlogged: bool,
    /// Writing is being shut down: the last bytes of a lingering connection are written, TLS
    /// close_notify is queued, and the FIN follows once the socket has taken everything.
    pub(crate) write_shut: bool,
    /// Issue 14 (5): the bytes of [`buffered`](Self::buffered) counted in the reactor's total.
    pub(crate) charged: usize,
}

impl<S> Conn<S> {
    /// Bytes of memory the connection's buffers hold: kept input, an unfinished message, and
    /// its write queue.
    pub(crate) fn buffered(&self) -> usize {
        self.rx.buf.capacity() + self.rx.parse.decoder.buffered() + self.tx.capacity()
    }

    /// The next time something must happen to this connection, if ever.
    pub(crate) fn next_deadline(&self, config: &Config) -> Option<Millis> {
        match self.phase {
            Phase::Handshake | Phase::Closing | Phase::Linger => Some(self.deadline),
            Phase::Open => {
                let ping = config
                    .ping_interval
                    .filter(|_| !self.ping_sent)
                    .map(|d| self.last_seen + span(d));
                let idle = config.idle_timeout.map(|d| self.last_seen + span(d));
                match (ping, idle) {
                    (Some(p), Some(i)) => Some(p.min(i)),
                    (p, i) => p.or(i),
                }
            }
        }
    }
}
