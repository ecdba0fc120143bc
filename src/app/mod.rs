//! What applications build on the server: a [`Router`](crate::Router) that serves several
//! handlers on one port.

pub(crate) mod router;
