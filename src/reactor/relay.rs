//! Relays carry publishes beyond one reactor: to the other reactors of a process, or through a
//! broker to other machines.

use crate::Message;

/// Receives every publish made on a reactor, to carry it elsewhere.
///
/// [`Context::publish`](crate::Context::publish) (and `publish_except`, and
/// [`Handle::publish`](crate::Handle::publish)) deliver to the local subscribers, then hand the
/// message to each relay of the server. What a relay brings back from elsewhere must be
/// delivered with [`Handle::publish_local`](crate::Handle::publish_local), which does not relay
/// again. A relay runs on the reactor's thread: it must not block (queue and return).
pub trait Relay: Send {
    /// Carries a publish to `topic` elsewhere.
    fn publish(&mut self, topic: &str, msg: Message<'_>);
}
