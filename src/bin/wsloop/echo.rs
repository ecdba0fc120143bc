//! `wsloop echo`: the echo server (and, with `--broadcast`, a fan-out server for
//! `wsloop bench --mode fanout`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wsloop::proto::deflate::DeflateConfig;
use wsloop::{
    CloseReason, Cluster, Config, ConnId, Context, Handler, Message, Request, TlsConfig, Upgrade,
};

use crate::units;

/// Options of `wsloop echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on (`[::1]:9001` for IPv6).
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: String,
    /// Reactors, each on its own thread, sharing the port (SO_REUSEPORT spreads connections).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Send every message to every other client instead of back to its sender (fan-out).
    #[arg(long)]
    broadcast: bool,
    /// Speak wss: PEM file with the certificate chain (and the key, unless --tls-key).
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the private key, when it is not in --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest message, whole or fragmented (a larger one is refused with 1009).
    #[arg(long, value_name = "BYTES", value_parser = units::size, default_value = "16MiB")]
    max_message_size: usize,
    /// Most bytes queued for one connection; a slower reader is closed with 1008.
    #[arg(long, value_name = "BYTES", value_parser = units::size, default_value = "16MiB")]
    max_write_buffer: usize,
    /// Most open connections; more are answered 503.
    #[arg(long, value_name = "N", value_parser = units::count, default_value = "10000")]
    max_connections: usize,
    /// Largest HTTP upgrade request head (larger gets 431).
    #[arg(long, value_name = "BYTES", value_parser = units::size, default_value = "8KiB")]
    max_handshake_size: usize,
    /// Seconds a client has to send its upgrade request.
    #[arg(long, value_name = "S", value_parser = units::seconds, default_value = "10")]
    handshake_timeout: Duration,
    /// Ping a client after this many seconds of silence (0: never).
    #[arg(long, value_name = "S", value_parser = units::seconds, default_value = "30")]
    ping_interval: Duration,
    /// Drop a client after this many seconds of silence (0: never).
    #[arg(long, value_name = "S", value_parser = units::seconds, default_value = "60")]
    idle_timeout: Duration,
    /// Origin allowed to upgrade (repeatable); by default any.
    #[arg(long = "origin", value_name = "ORIGIN")]
    origins: Vec<String>,
    /// Serve the server's metrics (Prometheus text format) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

impl EchoArgs {
    fn config(&self) -> Config {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Config::default()
            .deflate((!self.no_deflate).then(DeflateConfig::default))
            .max_message_size(self.max_message_size)
            .max_write_buffer(self.max_write_buffer)
            .max_connections(self.max_connections)
            .max_handshake_size(self.max_handshake_size)
            .handshake_timeout(self.handshake_timeout)
            .ping_interval(nonzero(self.ping_interval))
            .idle_timeout(nonzero(self.idle_timeout))
            .allowed_origins(self.origins.clone())
    }
}

/// Echoes every message to its sender, or with `broadcast` to every other client.
struct Echo {
    broadcast: bool,
}

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> Upgrade<()> {
        log::debug!("{peer}: upgrade to {}", req.path());
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        if self.broadcast {
            ctx.broadcast_except(id, msg);
        } else if let Err(e) = ctx.send(id, msg) {
            log::warn!("{id}: echo not sent: {e}");
        }
    }

    fn on_close(&mut self, _ctx: &mut Context<'_, ()>, id: ConnId, why: CloseReason<'_>) {
        log::debug!("{id}: closed: {why:?}");
    }
}

/// Runs the server until SIGINT / SIGTERM (every client then gets 1001); returns the exit
/// code.
pub fn run(args: EchoArgs) -> i32 {
    let config = args.config();
    let broadcast = args.broadcast;
    let handler = move |_| Echo { broadcast };
    crate::sys::raise_fd_limit(args.max_connections as u64 + 64, "echo");
    let cluster = match &args.tls_cert {
        Some(cert) => TlsConfig::from_pem_files(cert, args.tls_key.as_ref())
            .and_then(|tls| Cluster::bind_tls(&args.addr, args.threads, tls, config, handler)),
        None => Cluster::bind(&args.addr, args.threads, config, handler),
    };
    let cluster = match cluster {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsloop echo: {e}");
            return 1;
        }
    };
    if let Some(addr) = &args.metrics {
        let handle = cluster.handle();
        match crate::metrics::serve(addr, move |timeout| handle.metrics(timeout)) {
            Ok(at) => log::info!("metrics on http://{at}/metrics"),
            Err(e) => {
                eprintln!("wsloop echo: {e}");
                return 1;
            }
        }
    }
    let handle = cluster.handle();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = handle.shutdown();
    }) {
        log::warn!("no graceful shutdown on signals: {e}");
    }
    let scheme = if cluster.is_tls() { "wss" } else { "ws" };
    log::info!(
        "{} server listening on {scheme}://{}/ ({} thread{})",
        if broadcast { "broadcast" } else { "echo" },
        cluster.local_addr(),
        args.threads,
        if args.threads == 1 { "" } else { "s" }
    );
    if let Err(e) = cluster.run() {
        eprintln!("wsloop echo: {e}");
        return 1;
    }
    log::info!("server stopped");
    0
}
