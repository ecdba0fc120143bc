//! Echo server: every message comes back as it went out.
//!
//! `cargo run --release --example echo -- [--addr 127.0.0.1:9001] [--threads N] [--no-deflate]
//!  [--tls-cert PEM [--tls-key PEM]]`
//!
//! permessage-deflate is offered unless `--no-deflate` is given. With `--tls-cert` the server
//! speaks wss: the PEM file holds the certificate chain, and the key too unless `--tls-key`
//! names another file. With `--threads N`, N reactors on N threads share the port (a
//! `Cluster`: SO_REUSEPORT spreads the connections). SIGINT / SIGTERM shut down gracefully
//! (every client gets 1001). `RUST_LOG=debug` logs every connection event.

use std::net::SocketAddr;

use wsloop::proto::deflate::DeflateConfig;
use wsloop::{
    CloseReason, Cluster, Config, ConnId, Context, Handler, Message, Request, TlsConfig, Upgrade,
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
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" if args.len() > 0 => addr = args.next().unwrap_or_default(),
            "--threads" if args.len() > 0 => {
                threads = args.next().and_then(|n| n.parse().ok()).unwrap_or(0)
            }
            "--no-deflate" => deflate = None,
            "--tls-cert" if args.len() > 0 => cert = args.next(),
            "--tls-key" if args.len() > 0 => key = args.next(),
            _ => exit(
                2,
                "usage: echo [--addr HOST:PORT] [--threads N] [--no-deflate] \
                 [--tls-cert PEM [--tls-key PEM]]",
            ),
        }
    }
    let config = Config::default().deflate(deflate);
    let cluster = match (cert, key) {
        (Some(cert), key) => TlsConfig::from_pem_files(cert, key)
            .and_then(|tls| Cluster::bind_tls(&addr, threads, tls, config, |_| Echo)),
        (None, Some(_)) => exit(2, "echo: --tls-key needs --tls-cert"),
        (None, None) => Cluster::bind(&addr, threads, config, |_| Echo),
    };
    let cluster = cluster.unwrap_or_else(|e| exit(1, &format!("echo: {e}")));
    let handle = cluster.handle();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = handle.shutdown();
    }) {
        log::warn!("no graceful shutdown on signals: {e}");
    }
    let scheme = if cluster.is_tls() { "wss" } else { "ws" };
    log::info!(
        "echo server listening on {scheme}://{}/ ({threads} thread{})",
        cluster.local_addr(),
        if threads == 1 { "" } else { "s" }
    );
    if let Err(e) = cluster.run() {
        exit(1, &format!("echo: {e}"));
    }
    log::info!("echo server stopped");
}

fn exit(code: i32, message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(code)
}
