//! The application's side: the [`Handler`](crate::Handler) and the types it sees, the
//! [`Context`](crate::Context) it acts through, the [`Config`](crate::Config), the
//! [`Router`](crate::Router) and topics.

pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod handler;
pub(crate) mod router;
pub(crate) mod topics;
