//! The reactor: one `mio::Poll` over listening sockets and a slab of connections, each a
//! transport (plain TCP or rustls) beside a sans-IO [`Connection`](crate::proto::connection::Connection).
//! It reads into one shared buffer, feeds the connections, calls the handler, flushes what they
//! queued once per turn and arms their deadlines in one timer heap; [`Handle`](crate::Handle)s
//! reach it from other threads.

pub(crate) mod accept;
pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod core;
pub(crate) mod handle;
pub(crate) mod handler;
pub(crate) mod log_limit;
pub(crate) mod metrics;
pub(crate) mod relay;
pub(crate) mod server;
pub(crate) mod slot;
pub(crate) mod timers;
pub(crate) mod tls;
pub(crate) mod topics;
pub(crate) mod transport;
