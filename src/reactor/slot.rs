//! A connection's slot in the reactor: its transport, its protocol state machine, and what
//! the reactor and the application keep beside them.

use super::transport::Transport;
use crate::proto::clock::Millis;
use crate::proto::connection::Connection;

/// A connection in the reactor's slab.
#[derive(Debug)]
pub(crate) struct Slot<S> {
    pub(crate) io: Transport,
    pub(crate) conn: Connection,
    pub(crate) generation: u32,
    /// The application's state, from upgrade until after `on_close`.
    pub(crate) state: Option<S>,
    /// The deadline this connection has in the timer heap, or `UNARMED`.
    pub(crate) armed: Millis,
    /// WRITABLE interest is registered (only while bytes wait for the socket).
    pub(crate) wants_write: bool,
    /// In the dirty list, to be flushed at the end of the turn.
    pub(crate) dirty: bool,
    /// Its share of a turn's reading ran out with bytes maybe left: it is in the reactor's
    /// backlog, to be read again on the next turn.
    pub(crate) unread: bool,
    /// A flush hit `WouldBlock` since the queue was last empty: `on_drain` is owed.
    pub(crate) backlogged: bool,
    /// Writing is being shut down: the last bytes of a lingering connection are written, TLS
    /// close_notify is queued, and the FIN follows once the socket has taken everything.
    pub(crate) write_shut: bool,
    /// The bytes of [`Connection::memory`] counted in the reactor's total (`max_buffered`);
    /// 32 bits fill what would be padding (a connection holds far less than 4 GiB).
    pub(crate) charged: u32,
}

#[cfg(test)]
mod tests {
    /// An idle connection's slot is most of what it costs: keep an eye on its size.
    #[test]
    fn an_idle_slot_stays_small() {
        let size = std::mem::size_of::<super::Slot<()>>();
        assert!(size <= 128, "Slot<()> grew to {size} bytes");
    }
}
