//! A game loop that owns its thread, with the server embedded in it: a fixed 60 Hz simulation
//! of players moving on a field, played in the browser at `http://ADDR/` (arrow keys or WASD,
//! or the touch pad on a phone; the page says when it is offline and reconnects by itself).
//!
//! ```text
//! cargo run --release --example game_loop -- [--addr 127.0.0.1:8090] [--bots N] [--seconds S]
//! ```
//!
//! Each tick: `server.turn(Some(Duration::ZERO))` takes only what is ready (the handler puts the
//! players' inputs into the game), the game steps, its snapshot is broadcast (encoded once),
//! `server.flush()` writes it out, and the loop sleeps until the next tick's deadline (absolute
//! deadlines, so no drift). The work of each tick, all but the sleep, is timed: every 5 s and at
//! the end, p50 / p99 / max tick time (and p50 / p99 in the thread's CPU time, which leaves out
//! waiting for a busy CPU), players and snapshots per second go to stderr, and the run ends with one `key=value` line on stdout (`bots= ticks= p50_us= p99_us= max_us=
//! overruns= …`; an overrun is a tick whose work took more than the 16.7 ms budget, and
//! `dropped=` counts the ticks skipped when the loop fell more than a tick behind).
//!
//! `--bots N` plays N bots from one other thread (see `game_loop/bots.rs`): [`DEFAULT_BOTS`]
//! by default, so that someone alone on the page has company; `--bots 0` plays none. `--seconds S`
//! stops after S seconds; SIGINT / SIGTERM stop at once. Either way the server shuts down
//! gracefully: no more accepts, a 1001 close to everyone, and a wait for the close handshakes.

#[path = "game_loop/bots.rs"]
mod bots;
#[path = "support/fd_limit.rs"]
mod fd_limit;
#[path = "game_loop/game.rs"]
mod game;
#[path = "support/seed.rs"]
mod seed;
use fd_limit::raise_fd_limit;

use std::time::{Duration, Instant};

use bots::{Bots, Totals, DEFAULT_BOTS};
use game::Game;
use wsloop::{Config, Message, Server};

const USAGE: &str =
    "usage: game_loop [--addr HOST:PORT] [--bots N (default 4; 0: none)] [--seconds S]";
/// The simulation's period: 60 Hz.
const TICK: Duration = Duration::from_nanos(1_000_000_000 / 60);
/// How often the tick-time distribution is printed.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long the shutdown waits for close handshakes.
const GRACE: Duration = Duration::from_secs(3);

/// Command-line options.
struct Args {
    addr: String,
    bots: usize,
    seconds: Option<f64>,
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("game_loop: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    check_fd_limit(2 * args.bots + 64);
    if let Err(e) = run(&args) {
        eprintln!("game_loop: {e}");
        std::process::exit(1);
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:8090".into(),
        bots: DEFAULT_BOTS,
        seconds: None,
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => args.addr = value()?,
            "--bots" => args.bots = value()?.parse().map_err(|e| format!("--bots: {e}"))?,
            "--seconds" => {
                args.seconds = Some(value()?.parse().map_err(|e| format!("--seconds: {e}"))?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(args)
}

/// Serves, plays until told to stop, shuts down gracefully and prints the summary.
fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut server = Server::bind(&args.addr, Config::default(), Game::new())?;
    let handle = server.handle();
    ctrlc::set_handler(move || {
        let _ = handle.shutdown();
    })?;
    eprintln!("game_loop: play at http://{}/", server.local_addr());
    let bots = match args.bots {
        0 => None,
        n => Some(Bots::spawn(server.local_addr(), n)?),
    };
    let end = (args.seconds).map(|s| Instant::now() + Duration::from_secs_f64(s));
    let stats = play(&mut server, end, bots.as_ref())?;
    let players = server.handler().players();

    if let Some(bots) = &bots {
        bots.stop_opening();
    }
    let closing = Instant::now();
    server.shutdown(GRACE)?;
    let shutdown = closing.elapsed();
    let totals = bots.map(Bots::join).unwrap_or_default();
    print_summary(args.bots, players, &stats, &totals, shutdown);
    Ok(())
}

/// Prints the whole run's figures, and the one-line `key=value` summary on stdout.
fn print_summary(
    bots: usize,
    players: usize,
    stats: &TickStats,
    totals: &Totals,
    shutdown: Duration,
) {
    let (wall, cpu) = (Percentiles::of(&stats.wall), Percentiles::of(&stats.cpu));
    let secs = stats.played.as_secs_f64();
    eprintln!("game_loop: whole run: {}", describe(&wall, &cpu));
    println!(
        "bots={bots} seconds={secs:.1} ticks={} players={players} p50_us={} p99_us={} \
         max_us={} overruns={} dropped={} cpu_p50_us={} cpu_p99_us={} sent_per_s={:.0} \
         received_per_s={:.0} going_away={} failed={} shutdown_ms={}",
        stats.wall.len(),
        wall.p50,
        wall.p99,
        wall.max,
        stats.overruns,
        stats.dropped,
        cpu.p50,
        cpu.p99,
        stats.sent as f64 / secs,
        totals.snapshots as f64 / secs,
        totals.going_away,
        totals.failed,
        shutdown.as_millis(),
    );
}

/// Runs ticks until `end` or a shutdown request (SIGINT / SIGTERM through the handle).
fn play(
    server: &mut Server<Game>,
    end: Option<Instant>,
    bots: Option<&Bots>,
) -> Result<TickStats, wsloop::Error> {
    let mut stats = TickStats::new();
    let mut snapshot = Vec::new();
    let mut next = Instant::now();
    while !server.shutdown_requested() && end.is_none_or(|end| next < end) {
        let (began, began_cpu) = (Instant::now(), thread_cpu_time());
        server.turn(Some(Duration::ZERO))?;
        let game = server.handler();
        game.step(TICK.as_secs_f32());
        game.snapshot(&mut snapshot);
        let sent = server.context().broadcast(Message::Binary(&snapshot));
        server.flush();
        stats.record(began.elapsed(), thread_cpu_time() - began_cpu, sent);
        stats.report_if_due(server.handler().players(), bots);
        let dropped;
        (next, dropped) = sleep_until(next + TICK);
        stats.dropped += dropped;
    }
    stats.played = stats.started.elapsed();
    Ok(stats)
}

/// The calling thread's CPU time, which unlike the wall clock leaves out the time other
/// processes had the CPU (on a busy machine, wall-clock tick times include waiting for it).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct passed to it.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sleeps until `deadline`, the next tick's start, and returns it. If the loop fell more than
/// a tick behind, the next tick starts now and the missed ones are dropped rather than run in
/// a burst: returns now and how many were dropped.
fn sleep_until(deadline: Instant) -> (Instant, u64) {
    let now = Instant::now();
    if now < deadline {
        std::thread::sleep(deadline - now);
        (deadline, 0)
    } else if now - deadline > TICK {
        let behind = (now - deadline).as_nanos() / TICK.as_nanos();
        (now, behind as u64)
    } else {
        (deadline, 0)
    }
}

/// Tick times (work only, in µs) and what was sent.
struct TickStats {
    started: Instant,
    /// How long the loop ran.
    played: Duration,
    /// Each tick's work by the wall clock.
    wall: Vec<u32>,
    /// Each tick's work in CPU time of this thread.
    cpu: Vec<u32>,
    overruns: u64,
    /// Ticks not run because the loop fell behind.
    dropped: u64,
    /// Snapshots queued, one per player per tick.
    sent: u64,
    /// Where the current report window starts: time, tick index, sent and received counts.
    window: (Instant, usize, u64, u64),
}

impl TickStats {
    fn new() -> TickStats {
        let now = Instant::now();
        TickStats {
            started: now,
            played: Duration::ZERO,
            wall: Vec::with_capacity(60 * 60),
            cpu: Vec::with_capacity(60 * 60),
            overruns: 0,
            dropped: 0,
            sent: 0,
            window: (now, 0, 0, 0),
        }
    }

    fn record(&mut self, wall: Duration, cpu: Duration, sent: usize) {
        let micros = |d: Duration| d.as_micros().min(u128::from(u32::MAX)) as u32;
        self.wall.push(micros(wall));
        self.cpu.push(micros(cpu));
        self.overruns += u64::from(wall > TICK);
        self.sent += sent as u64;
    }

    /// Prints the last window's figures every [`REPORT_EVERY`].
    fn report_if_due(&mut self, players: usize, bots: Option<&Bots>) {
        let (since, first, sent, received) = self.window;
        let elapsed = since.elapsed();
        if elapsed < REPORT_EVERY {
            return;
        }
        let received_now = bots.map_or(0, Bots::snapshots);
        let secs = elapsed.as_secs_f64();
        eprintln!(
            "[{:5.1}s] players={players} {} snapshots/s sent={:.0} received={:.0}",
            self.started.elapsed().as_secs_f64(),
            describe(
                &Percentiles::of(&self.wall[first..]),
                &Percentiles::of(&self.cpu[first..])
            ),
            (self.sent - sent) as f64 / secs,
            (received_now - received) as f64 / secs,
        );
        self.window = (Instant::now(), self.wall.len(), self.sent, received_now);
    }
}

/// The distribution of a set of tick times.
struct Percentiles {
    p50: u32,
    p99: u32,
    max: u32,
}

impl Percentiles {
    /// Nearest-rank percentiles of `micros`.
    fn of(micros: &[u32]) -> Percentiles {
        let mut sorted = micros.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let i = (p * sorted.len() as f64).ceil() as usize;
            sorted.get(i.saturating_sub(1)).copied().unwrap_or(0)
        };
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// One line of tick-time figures.
fn describe(wall: &Percentiles, cpu: &Percentiles) -> String {
    format!(
        "tick p50={}us p99={}us max={}us (cpu p50={}us p99={}us)",
        wall.p50, wall.p99, wall.max, cpu.p50, cpu.p99
    )
}

/// Raises the open-file limit, and says so if it is still below `needed` (each bot is two
/// sockets: both ends).
fn check_fd_limit(needed: usize) {
    if let Some(limit) = raise_fd_limit().filter(|&l| l < needed as libc::rlim_t) {
        eprintln!(
            "game_loop: warning: {needed} file descriptors needed, but the limit is {limit}; \
             raise it with `ulimit -n`"
        );
    }
}
