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
//! The protocol itself lives in [`proto`], a sans-IO core usable on its own; [`client`] is a
//! small blocking client on the same core.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accept;
mod buffer;
pub mod client;
mod cluster;
mod compress;
mod config;
mod conn;
mod context;
mod error;
mod handle;
mod handler;
pub mod proto;
#[cfg(feature = "redis")]
mod redis;
mod relay;
mod router;
mod server;
mod timer;
mod tls;
mod topics;
mod transport;

pub use cluster::{Cluster, ClusterHandle};
pub use config::{Config, Overflow};
pub use context::Context;
pub use error::Error;
pub use handle::{Handle, HandleError};
pub use handler::{CloseReason, ConnId, Handler, Message, SendError, Upgrade};
pub use proto::handshake::{HttpResponse, Request};
pub use proto::{CloseCode, ProtocolError};
#[cfg(feature = "redis")]
pub use redis::{RedisOptions, RedisRelay};
pub use relay::Relay;
pub use router::Router;
/// The rustls version wsloop is built with, for [`TlsConfig::from_server_config`].
pub use rustls;
pub use server::Server;
pub use tls::TlsConfig;
