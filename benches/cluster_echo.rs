//! Echo server on a [`Cluster`] of N reactors, for `benches/scaling.sh` (1 vs N threads under
//! `wsloop bench`).
//!
//! `cargo bench --bench cluster_echo -- [--threads N] [--addr HOST:PORT] [--seconds S]
//!  [--work N]`
//!
//! `--work N` makes the handler burn CPU before each echo (N passes of a hash over the
//! payload), for a server-bound load: with a plain echo on a 2-core machine the load generator
//! needs a core of its own and is as busy as the server.
//!
//! Prints `listening on ws://ADDR/ with N threads` once bound, and shuts down gracefully after
//! `--seconds` (default 60) so that a forgotten server never lingers.

use std::net::SocketAddr;
use std::time::Duration;

use wsloop::{Cluster, Config, ConnId, Context, Handler, Message, Request, Upgrade};

struct Echo {
    work: u32,
}

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for _ in 0..self.work {
            for &b in msg.as_bytes() {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            hash = std::hint::black_box(hash);
        }
        let _ = ctx.send(id, msg);
    }
}

fn main() {
    let mut threads = 1;
    let mut addr = String::from("127.0.0.1:9001");
    let mut seconds = 60;
    let mut work = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| {
            args.next().unwrap_or_else(|| {
                eprintln!("cluster_echo: {arg} needs a value");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--threads" => threads = value(&mut args).parse().unwrap_or(0),
            "--addr" => addr = value(&mut args),
            "--seconds" => seconds = value(&mut args).parse().unwrap_or(0),
            "--work" => work = value(&mut args).parse().unwrap_or(0),
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            _ => {
                eprintln!(
                    "usage: cluster_echo [--threads N] [--addr HOST:PORT] [--seconds S] [--work N]"
                );
                std::process::exit(2);
            }
        }
    }
    let cluster = match Cluster::bind(&addr, threads, Config::default(), |_| Echo { work }) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("cluster_echo: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "listening on ws://{}/ with {threads} threads",
        cluster.local_addr()
    );
    let handle = cluster.handle();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        let _ = handle.shutdown();
    });
    if let Err(e) = cluster.run() {
        eprintln!("cluster_echo: {e}");
        std::process::exit(1);
    }
}
