//! `wsloop bench URL`: a load generator for WebSocket servers.
//!
//! Modes (`--mode`):
//! - `echo` (the default): every connection sends messages and verifies every echo byte for
//!   byte, in a closed loop (`--inflight K` outstanding per connection) or an open loop (`--rate
//!   N` messages/s in all, latency measured from each message's intended send time, so that a
//!   stalled server cannot hide its stall behind fewer sends: wrk2's answer to coordinated
//!   omission).
//! - `connect`: opens `--conns` connections as fast as `--connect-concurrency` allows or at
//!   `--connect-rate` per second, reports handshakes/s and handshake latency, holds them idle
//!   for `--hold` seconds and closes them.
//! - `churn`: for `--seconds`, keeps up to `--conns` connections cycling, each opened (as fast
//!   as they finish, or `--rate` per second in all), upgraded, sent one message and closed once
//!   its echo came back; reports connections/s, handshake latency and failures by cause. On
//!   IPv4 loopback the connections come from 32 source addresses (127.0.0.2 to 127.0.0.33;
//!   `--source` chooses others), so that one address's ephemeral ports do not run out.
//! - `fanout`: for a server that relays every message to every other client (`wsloop echo
//!   --broadcast`): the first `--publishers` connections publish at `--rate` messages/s in all,
//!   the others subscribe; every delivery is verified and timed from its intended send time, and
//!   deliveries that never came are counted as lost.
//!
//! `--threads N` splits the connections over N threads, each with its own `mio::Poll`. A
//! progress line goes to stderr once a second; the summary goes to stdout (a table ending with
//! one `key=value` line, or JSON with `--json`). The exit status is 1 on any error.

mod conn;
mod message;
pub mod pattern;
mod report;
mod stats;
pub mod transport;
mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use wsloop::client::ClientUrl;

use crate::units;
use message::{Messages, STAMP, TIME};
use stats::{Live, Outcome};
use transport::Tls;

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Echo throughput and latency.
    Echo,
    /// Handshakes per second and handshake latency.
    Connect,
    /// Fan-out delivery latency and loss (publishers and subscribers).
    Fanout,
    /// Connections opened, upgraded, used once and closed, continuously.
    Churn,
}

/// Options of `wsloop bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server: ws://HOST:PORT/PATH or wss://… (IPv6 as ws://[::1]:9001/).
    url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "echo")]
    mode: Mode,
    /// Connections (in fan-out: publishers and subscribers together; in churn: at most this
    /// many at once).
    #[arg(long, value_name = "N", value_parser = units::count, default_value = "100")]
    conns: usize,
    /// Closed loop: messages in flight on each connection.
    #[arg(long, value_name = "K", value_parser = units::count, default_value = "1")]
    inflight: usize,
    /// Open loop: messages per second in all (fan-out: published; default 1000 there; churn:
    /// connections opened).
    #[arg(long, value_name = "N", value_parser = units::count)]
    rate: Option<usize>,
    /// Message size (fan-out: at least 32 B, for the stamp and the send time).
    #[arg(long, value_name = "BYTES", value_parser = units::size, default_value = "16")]
    size: usize,
    /// Length of the measurement window.
    #[arg(long, value_name = "S", value_parser = units::seconds, default_value = "10")]
    seconds: Duration,
    /// Binary messages (random bytes) instead of text (words).
    #[arg(long)]
    binary: bool,
    /// Offer permessage-deflate (no context takeover); compress when accepted.
    #[arg(long)]
    deflate: bool,
    /// Threads, each with its own poll and share of the connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Fan-out: how many of the connections publish.
    #[arg(long, value_name = "N", default_value_t = 1)]
    publishers: usize,
    /// Connect mode: seconds to hold the connections idle before closing them.
    #[arg(long, value_name = "S", value_parser = units::seconds, default_value = "0")]
    hold: Duration,
    /// Connections opened per second in all (default: as fast as --connect-concurrency
    /// allows).
    #[arg(long, value_name = "N", value_parser = units::count)]
    connect_rate: Option<usize>,
    /// Connects in progress at once, per thread (so that the accept backlog is not overrun).
    #[arg(long, value_name = "N", value_parser = units::count, default_value = "128")]
    connect_concurrency: usize,
    /// Give up on connections not open after this long.
    #[arg(long, value_name = "S", value_parser = units::seconds, default_value = "60")]
    connect_timeout: Duration,
    /// Local addresses to connect from, in turn (comma-separated; default: one the kernel picks,
    /// and in churn on IPv4 loopback 127.0.0.2 to 127.0.0.33).
    #[arg(long, value_name = "IP,...", value_delimiter = ',')]
    source: Vec<IpAddr>,
    /// wss: accept any certificate (for self-signed test servers).
    #[arg(long)]
    insecure: bool,
    /// wss: trust the CA certificates in this PEM file (default: the system's bundle).
    #[arg(long, value_name = "PEM")]
    cafile: Option<PathBuf>,
    /// A raw TCP echo (a ceiling): no handshake; our own masked frames come back.
    #[arg(long)]
    raw_echo: bool,
    /// The server's process id, to report its CPU time per message.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Everything the threads share, read-only.
pub struct Plan {
    mode: Mode,
    addr: SocketAddr,
    tls: Option<Tls>,
    opts: conn::Options,
    messages: Messages,
    binary: bool,
    /// Closed loop: in flight per connection.
    inflight: usize,
    /// Open loop: the interval between two sends of one thread.
    rate: Option<Duration>,
    publishers: usize,
    window: Duration,
    hold: Duration,
    /// Per thread.
    connect_rate: Option<f64>,
    connect_concurrency: usize,
    connect_timeout: Duration,
    server_pid: Option<u32>,
    /// Local addresses to connect from, in turn (none: the kernel picks).
    sources: Vec<IpAddr>,
    /// Fan-out send times are offsets from this.
    base: Instant,
}

impl BenchArgs {
    fn check(&self) -> Result<(), String> {
        if self.conns == 0 || self.inflight == 0 || self.threads == 0 {
            return Err("--conns, --inflight and --threads must be at least 1".into());
        }
        if self.connect_concurrency == 0 || self.rate == Some(0) || self.connect_rate == Some(0) {
            return Err(
                "--connect-concurrency, --rate and --connect-rate must be at least 1".into(),
            );
        }
        if self.mode != Mode::Connect && self.seconds.is_zero() {
            return Err("--seconds must be more than 0".into());
        }
        if self.raw_echo && (self.deflate || self.mode != Mode::Echo) {
            return Err("--raw-echo is for echo mode without --deflate".into());
        }
        if self.mode == Mode::Fanout {
            if self.size < STAMP + TIME {
                return Err(format!(
                    "fan-out messages need --size {} or more",
                    STAMP + TIME
                ));
            }
            if self.publishers == 0 || self.publishers >= self.conns {
                return Err(
                    "fan-out needs 1 or more --publishers and more --conns than that".into(),
                );
            }
        }
        Ok(())
    }

    /// `--source`, or by default in churn on IPv4 loopback 32 addresses of 127/8.
    fn sources(&self, target: SocketAddr) -> Result<Vec<IpAddr>, String> {
        if let Some(ip) = self
            .source
            .iter()
            .find(|ip| ip.is_ipv4() != target.is_ipv4())
        {
            return Err(format!("--source {ip}: not of the target's address family"));
        }
        Ok(match target.ip() {
            IpAddr::V4(ip)
                if self.source.is_empty() && self.mode == Mode::Churn && ip.is_loopback() =>
            {
                (2..34)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                    .collect()
            }
            _ => self.source.clone(),
        })
    }

    fn plan(&self) -> Result<Plan, String> {
        self.check()?;
        let target = ClientUrl::parse(&self.url).map_err(|e| e.to_string())?;
        let addr = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", target.host))?
            .next()
            .ok_or_else(|| format!("{}: no address", target.host))?;
        let tls = if target.tls {
            Some(Tls {
                config: transport::client_config(self.insecure, self.cafile.as_deref())?,
                name: transport::server_name(&target.host)?,
            })
        } else {
            None
        };
        let rate = match (self.mode, self.rate) {
            (Mode::Fanout, None) => Some(1000),
            (Mode::Connect, _) => None,
            (_, rate) => rate,
        };
        let threads = self.threads as f64;
        Ok(Plan {
            mode: self.mode,
            addr,
            tls,
            opts: conn::Options {
                host: target.authority,
                path: target.path,
                deflate: self.deflate,
                raw: self.raw_echo,
                max_message_size: self.size.max(1 << 20).saturating_mul(2),
            },
            messages: Messages::new(self.size, self.binary, clock_seed()),
            binary: self.binary,
            inflight: self.inflight,
            rate: rate.map(|r| Duration::from_secs_f64(threads / r as f64)),
            publishers: self.publishers,
            window: self.seconds,
            hold: self.hold,
            connect_rate: self.connect_rate.map(|r| r as f64 / threads),
            connect_concurrency: self.connect_concurrency,
            connect_timeout: self.connect_timeout,
            server_pid: self.server_pid,
            sources: self.sources(addr)?,
            base: Instant::now(),
        })
    }
}

/// A seed for the message pattern that differs from run to run (the nanoseconds of the clock).
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Runs the benchmark; returns the exit code.
pub fn run(args: BenchArgs) -> i32 {
    let plan = match args.plan() {
        Ok(plan) => Arc::new(plan),
        Err(e) => {
            eprintln!("wsloop bench: {e}");
            return 2;
        }
    };
    crate::sys::raise_fd_limit(args.conns as u64 + 64, "wsloop bench");
    let live = Arc::new(Live::new());
    let threads = args.threads.min(args.conns);
    let outcomes = if threads == 1 {
        run_here(&args, &plan, &live)
    } else {
        run_threads(&args, &plan, &live, threads)
    };
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => {
            eprintln!("wsloop bench: {e}");
            return 1;
        }
    };
    let summary = report::Summary::new(&args, &plan, &outcomes);
    if args.json {
        println!("{}", summary.json());
    } else {
        summary.print();
    }
    i32::from(summary.errors > 0)
}

/// Runs the only worker on this thread, which also prints the progress line: a process that
/// never starts a thread makes cheaper syscalls (glibc then skips the cancellation bookkeeping
/// around every `send` and `recv`).
fn run_here(args: &BenchArgs, plan: &Plan, live: &Live) -> Result<Vec<Outcome>, String> {
    let mut progress = Progress::new(args);
    let mut tick = |live: &Live| progress.tick(live);
    let worker = worker::Worker::new(plan, live, (0..args.conns).collect())
        .map_err(|e| format!("poll: {e}"))?;
    Ok(vec![worker.progress(&mut tick).run(&Barrier::new(1))])
}

/// Runs `threads` workers on threads of their own; this one prints the progress line.
fn run_threads(
    args: &BenchArgs,
    plan: &Arc<Plan>,
    live: &Arc<Live>,
    threads: usize,
) -> Result<Vec<Outcome>, String> {
    let barrier = Arc::new(Barrier::new(threads));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        // Connection i goes to thread i % threads: publishers spread over the threads.
        let shard: Vec<usize> = (t..args.conns).step_by(threads).collect();
        let (plan, live, barrier) = (plan.clone(), live.clone(), barrier.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || -> Result<Outcome, String> {
                match worker::Worker::new(&plan, &live, shard) {
                    Ok(worker) => Ok(worker.run(&barrier)),
                    Err(e) => {
                        // The other threads wait for this one at every barrier of the run.
                        for _ in 0..worker::barriers(plan.mode) {
                            barrier.wait();
                        }
                        Err(format!("poll: {e}"))
                    }
                }
            });
        handles.push(spawned.map_err(|e| format!("cannot start a thread: {e}"))?);
    }
    let mut progress = Progress::new(args);
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        progress.tick(live);
    }
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a thread panicked".to_string())?)
        .collect()
}

/// The progress line on stderr: once when every connection is open (or failed), then once a
/// second.
struct Progress<'a> {
    args: &'a BenchArgs,
    began: Instant,
    /// When the last line was printed, and the echoes verified then.
    last: (Instant, u64),
    connected_at: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(args: &'a BenchArgs) -> Self {
        let began = Instant::now();
        Progress {
            args,
            began,
            last: (began, 0),
            // Churn connects all along: its window starts at once.
            connected_at: (args.mode == Mode::Churn).then_some(began),
        }
    }

    /// Prints a line if one is due.
    fn tick(&mut self, live: &Live) {
        let args = self.args;
        let now = Instant::now();
        let (open, failed) = (
            live.established.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
        );
        if self.connected_at.is_none() && open + failed >= args.conns {
            self.connected_at = Some(now);
            self.last = (now, live.verified.load(Ordering::Relaxed));
            eprintln!(
                "all connections established: {open} open, {failed} failed, in {:.2} s",
                (now - self.began).as_secs_f64()
            );
            return;
        }
        if now - self.last.0 < Duration::from_secs(1) {
            return;
        }
        let errors = live.errors.load(Ordering::Relaxed);
        let Some(t0) = self.connected_at else {
            eprintln!(
                "[{:5.1}s] connecting: {open} open, {failed} failed of {}, {errors} errors",
                (now - self.began).as_secs_f64(),
                args.conns
            );
            self.last.0 = now;
            return;
        };
        let verified = live.verified.load(Ordering::Relaxed);
        let rate = (verified - self.last.1) as f64 / (now - self.last.0).as_secs_f64();
        let (p50, p99) = match live.interval.lock() {
            Ok(mut h) => {
                let p = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
                h.reset();
                p
            }
            Err(_) => (0, 0),
        };
        if args.mode == Mode::Churn {
            eprintln!(
                "[{:5.1}s] {rate:.0} connections/s (echoed once), echo p50 {:.1} us, p99 {:.1} us, \
                 {open} opened, {failed} failed, {errors} errors",
                (now - t0).as_secs_f64(),
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
            );
        } else if args.mode != Mode::Connect {
            let what = if args.mode == Mode::Fanout {
                "deliveries"
            } else {
                "msg"
            };
            eprintln!(
                "[{:5.1}s] {rate:.0} {what}/s, {:.2} MB/s, p50 {:.1} us, p99 {:.1} us, {open} \
                 conns, {errors} errors",
                (now - t0).as_secs_f64(),
                rate * args.size as f64 / 1e6,
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
            );
        } else {
            eprintln!(
                "[{:5.1}s] holding {open} connections, {errors} errors",
                (now - t0).as_secs_f64()
            );
        }
        self.last = (now, verified);
    }
}
