//! wsloop's echo (the same handler as `examples/echo.rs`) with a configurable connection limit,
//! for the idle-memory runs beyond `max_connections`' default of 10,000.
//!
//! `wsloop_echo [--addr 127.0.0.1:9001] [--no-deflate] [--max-connections N]`

use std::net::SocketAddr;
use wsloop::proto::deflate::DeflateConfig;

use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};

struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let _ = ctx.send(id, msg);
    }
}

fn main() {
    let mut addr = "127.0.0.1:9001".to_string();
    let mut config = Config::default().deflate(Some(DeflateConfig::default()));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().unwrap_or_default(),
            "--no-deflate" => config = config.deflate(None),
            "--max-connections" => {
                let n = args.next().and_then(|v| v.parse().ok()).unwrap_or(10_000);
                config = config.max_connections(n);
            }
            _ => {
                eprintln!("usage: wsloop_echo [--addr A] [--no-deflate] [--max-connections N]");
                std::process::exit(2);
            }
        }
    }
    let mut server = Server::bind(&addr, config, Echo).unwrap_or_else(|e| {
        eprintln!("wsloop_echo: {e}");
        std::process::exit(1);
    });
    eprintln!("wsloop echo listening on {}", server.local_addr());
    if let Err(e) = server.run() {
        eprintln!("wsloop_echo: {e}");
        std::process::exit(1);
    }
}
