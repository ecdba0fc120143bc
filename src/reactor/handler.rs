//! The application's side: the [`Handler`] trait and the types it sees.

use std::fmt;
use std::net::SocketAddr;

use crate::proto::handshake::{HttpResponse, Request};
use crate::{CloseReason, Context, Message};

/// A connection's identity, unique for the server's lifetime (a slot index and a generation,
/// so an id of a closed connection never reaches a newer one in the same slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The id of the connection in slot `index` with `generation`.
    pub(crate) fn new(index: usize, generation: u32) -> ConnId {
        ConnId {
            index: index as u32,
            generation,
        }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// The handler's answer to an upgrade request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Upgrade<S> {
    /// Accept, answering `protocol` (which must be one the client offered) and keeping `state`
    /// for the connection.
    Accept {
        /// The subprotocol to answer in `Sec-WebSocket-Protocol`, if any.
        protocol: Option<String>,
        /// The connection's state, reachable through [`Context::state`].
        state: S,
    },
    /// Refuse with this HTTP response; no WebSocket frame is exchanged.
    Reject(HttpResponse),
}

impl<S> Upgrade<S> {
    /// Accept with no subprotocol.
    pub fn accept(state: S) -> Upgrade<S> {
        Upgrade::Accept {
            protocol: None,
            state,
        }
    }

    /// Accept, answering `protocol`.
    pub fn accept_protocol(protocol: &str, state: S) -> Upgrade<S> {
        Upgrade::Accept {
            protocol: Some(protocol.to_owned()),
            state,
        }
    }

    /// Refuse with a short plain-text response of `status` (e.g. 401, 403, 404).
    pub fn reject(status: u16, body: &str) -> Upgrade<S> {
        Upgrade::Reject(HttpResponse::text(status, body))
    }
}

/// The application: what to do when connections arrive, speak and leave.
///
/// Every method runs on the reactor's thread and must not block. Sends made through the
/// [`Context`] are queued and flushed once per connection at the end of the turn (a large
/// message to a connection with nothing queued is written at once; see [`Context::send`]).
pub trait Handler {
    /// Per-connection state, created at upgrade and dropped after [`on_close`](Self::on_close).
    type State;

    /// A client asks to upgrade. `req` is the validated request (path, headers, origin,
    /// offered subprotocols); answer with [`Upgrade::accept`] or a rejection.
    fn on_upgrade(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> Upgrade<Self::State>;

    /// A plain HTTP GET (not an upgrade). Return a response to serve it; the default answers
    /// 426 Upgrade Required.
    fn on_http(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> HttpResponse {
        let _ = (req, peer);
        HttpResponse::upgrade_required()
    }

    /// The connection is open: the 101 answer is queued and the connection may send.
    fn on_open(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId) {
        let _ = (ctx, id);
    }

    /// A whole message arrived.
    fn on_message(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId, msg: Message<'_>);

    /// The connection ended; this is the last call for `id`, and its state is still reachable.
    fn on_close(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId, why: CloseReason<'_>) {
        let _ = (ctx, id, why);
    }

    /// The connection's write queue, which had to wait for the socket, has drained.
    fn on_drain(&mut self, ctx: &mut Context<'_, Self::State>, id: ConnId) {
        let _ = (ctx, id);
    }
}
