//! Echo server: every message comes back as it went out.
//!
//! `cargo run --release --example echo -- [--addr 127.0.0.1:9001] [--no-deflate]
//!  [--tls-cert PEM [--tls-key PEM]]`
//!
//! permessage-deflate is offered unless `--no-deflate` is given. With `--tls-cert` the server
//! speaks wss: the PEM file holds the certificate chain, and the key too unless `--tls-key`
//! names another file. `RUST_LOG=debug` logs every connection event.

use std::net::SocketAddr;

use wsloop::proto::deflate::DeflateConfig;
use wsloop::{
    CloseReason, Config, ConnId, Context, Handler, Message, Request, Server, TlsConfig, Upgrade,
};

struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> Upgrade<()> {
        log::debug!("{peer}: upgrade to {}", req.path());
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        if let Err(e) = ctx.send(id, msg) {
            log::warn!("{id}: echo not sent: {e}");
        }
    }

    fn on_close(&mut self, _ctx: &mut Context<'_, ()>, id: ConnId, why: CloseReason<'_>) {
        log::debug!("{id}: closed: {why:?}");
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = String::from("127.0.0.1:9001");
    let mut deflate = Some(DeflateConfig::default());
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" if args.len() > 0 => addr = args.next().unwrap_or_default(),
            "--no-deflate" => deflate = None,
            "--tls-cert" if args.len() > 0 => cert = args.next(),
            "--tls-key" if args.len() > 0 => key = args.next(),
            _ => {
                eprintln!(
                    "usage: echo [--addr HOST:PORT] [--no-deflate] [--tls-cert PEM [--tls-key PEM]]"
                );
                std::process::exit(2);
            }
        }
    }
    let config = Config::default().deflate(deflate);
    let server = match (cert, key) {
        (Some(cert), key) => TlsConfig::from_pem_files(cert, key)
            .and_then(|tls| Server::bind_tls(&addr, tls, config, Echo)),
        (None, Some(_)) => {
            eprintln!("echo: --tls-key needs --tls-cert");
            std::process::exit(2);
        }
        (None, None) => Server::bind(&addr, config, Echo),
    };
    let scheme = if server.as_ref().is_ok_and(|s| s.is_tls()) {
        "wss"
    } else {
        "ws"
    };
    let mut server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(1);
        }
    };
    log::info!(
        "echo server listening on {scheme}://{}/",
        server.local_addr()
    );
    if let Err(e) = server.run() {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
