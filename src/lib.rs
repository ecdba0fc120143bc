//! wsloop: a single-threaded, non-blocking WebSocket server (RFC 6455) on `mio`.
//!
//! One [`Server`] drives a listening socket and all its connections from one thread: it reads
//! what is ready, hands whole messages to your [`Handler`] as borrowed slices, and flushes what
//! the handler queued once per connection per turn.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = ();
//!
//!     fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
//!         Upgrade::accept(())
//!     }
//!
//!     fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
//!         let _ = ctx.send(id, msg);
//!     }
//! }
//!
//! let mut server = Server::bind("127.0.0.1:9001", Config::default(), Echo)?;
//! server.run()?;
//! # Ok::<(), wsloop::Error>(())
//! ```
//!
//! The protocol itself lives in [`proto`], a sans-IO core usable on its own: its
//! [`Connection`](proto::connection::Connection) is one connection's whole life as a state
//! machine, which the server's reactor drives and so can any other event loop; [`client`] is a
//! small blocking client on the same core. The [`manual`] is the guide: limits, TLS,
//! compression, topics, embedding, scaling and the Redis relay.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The layers, each built only on the ones before it: the sans-IO protocol core (`proto`: a
// connection's state machine and the `ConnectionConfig` it follows), the reactor that drives
// it over mio (`reactor`: the `Server`, its `Config`, the `Handler` it calls, the `Context`
// handlers act through, topics and the `Relay` trait), what applications build on it
// (`app`: the `Router`), and scaling out (`scale`: `Cluster`, the Redis relay).
mod app;
pub mod client;
mod error;
pub mod manual;
pub mod proto;
mod reactor;
mod scale;

pub use app::router::Router;
pub use error::{ConfigError, Error, TlsError};
pub use proto::connection::{CloseReason, ConnectionConfig, Message, Overflow, SendError};
pub use proto::deflate::DeflateConfig;
pub use proto::handshake::{HttpResponse, Request};
pub use proto::{CloseCode, ProtocolError};
pub use reactor::config::Config;
pub use reactor::context::Context;
pub use reactor::handle::{Handle, HandleError};
pub use reactor::handler::{ConnId, Handler, Upgrade};
pub use reactor::metrics::Metrics;
pub use reactor::relay::Relay;
pub use reactor::server::Server;
pub use reactor::tls::TlsConfig;
pub use scale::cluster::{Cluster, ClusterHandle};
#[cfg(feature = "redis")]
pub use scale::redis::{RedisOptions, RedisRelay};
