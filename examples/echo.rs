//! The smallest useful server: every message comes back as it went out.
//!
//! `cargo run --release --example echo [-- HOST:PORT]` (default 127.0.0.1:9001).
//!
//! The full echo server, with TLS, threads, limits and graceful shutdown, is the `wsloop echo`
//! command (`cargo run --release --features cli -- echo --help`).

use std::net::SocketAddr;

use wsloop::proto::deflate::DeflateConfig;
use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};

struct Echo;

impl Handler for Echo {
    type State = ();

    // Every client may connect; its state is `()`.
    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    // `msg` borrows the bytes as they were read; sending copies them once into the queue.
    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let _ = ctx.send(id, msg);
    }
}

fn main() -> Result<(), wsloop::Error> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1);
    let addr = addr.as_deref().unwrap_or("127.0.0.1:9001");
    let config = Config::default().deflate(Some(DeflateConfig::default()));
    let mut server = Server::bind(addr, config, Echo)?;
    log::info!("echo server listening on ws://{}/", server.local_addr());
    server.run()
}
