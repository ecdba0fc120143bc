//! Bot players: N WebSocket clients driven by one thread and one `mio::Poll`, each a
//! client-role [`Connection`] (wsloop's sans-IO state machine, as `wsloop::Client` drives it).
//!
//! Each bot connects, sends a random key set every ~100 ms and reads the snapshots, counting
//! them. At most [`CONNECTING`] handshakes are in flight at once, so the server's accept
//! backlog is never overrun. The connection answers the server's close frame; the bot ends
//! when the server closes TCP.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use wsloop::proto::connection::{CloseReason, Connection, Endpoint, Event, Phase};
use wsloop::proto::CloseCode;
use wsloop::{ConnectionConfig, Message};

use crate::game::{DOWN, LEFT, RIGHT, SNAPSHOT, UP};

/// Bots the example plays unless told otherwise, so that someone alone on the page has company.
pub const DEFAULT_BOTS: usize = 4;
/// Most connections opening (TCP connect or handshake) at once.
const CONNECTING: usize = 64;
/// Mean time between two inputs of a bot.
const INPUT_EVERY: Duration = Duration::from_millis(100);
/// The pause between two rounds of the swarm. Like a client's frame loop, the bots read what
/// came in since the last round rather than being woken for each snapshot: on a machine shared
/// with the server, that spares the server a thread wake-up per write.
const PAUSE: Duration = Duration::from_millis(2);
/// Largest message a bot accepts (a snapshot is about 3 bytes a player).
const MAX_MESSAGE: usize = 1 << 20;

/// What the bots counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Snapshots received, all bots together.
    pub snapshots: u64,
    /// Bots that received a close frame with 1001 (going away).
    pub going_away: u64,
    /// Bots that failed to connect or handshake, or broke off.
    pub failed: u64,
}

/// The counters behind [`Totals`], updated by the bots' thread as it goes.
#[derive(Debug, Default)]
struct Counters {
    snapshots: AtomicU64,
    going_away: AtomicU64,
    failed: AtomicU64,
}

/// The bot swarm's thread.
pub struct Bots {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Bots {
    /// Starts `n` bots against `addr` on one new thread.
    pub fn spawn(addr: SocketAddr, n: usize) -> io::Result<Bots> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut swarm = Swarm::new(addr, n, counters.clone(), stop.clone())?;
        let thread = std::thread::Builder::new()
            .name("bots".into())
            .spawn(move || swarm.run())?;
        Ok(Bots {
            counters,
            stop,
            thread,
        })
    }

    /// Snapshots received so far, all bots together.
    pub fn snapshots(&self) -> u64 {
        self.counters.snapshots.load(Ordering::Relaxed)
    }

    /// Stops opening new connections; the bots still answer the server's close frames.
    pub fn stop_opening(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for every bot to end (the server closes them on shutdown) and tells what they
    /// counted.
    pub fn join(self) -> Totals {
        self.stop_opening();
        let _ = self.thread.join();
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            snapshots: count(&self.counters.snapshots),
            going_away: count(&self.counters.going_away),
            failed: count(&self.counters.failed),
        }
    }
}

/// One bot connection.
struct Bot {
    stream: TcpStream,
    /// The TCP connect completed (the upgrade request, queued in `conn`, can go out).
    connected: bool,
    conn: Connection,
    next_input: Instant,
    rng: u64,
}

/// Every bot, and the one poll that drives them.
struct Swarm {
    addr: SocketAddr,
    n: usize,
    poll: Poll,
    bots: Slab<Bot>,
    started: usize,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// What the bots' connections share: limits, buffers, the clock.
    ep: Endpoint,
    /// The read buffer shared by all bots.
    scratch: Vec<u8>,
    /// Snapshots counted since the last publication to `counters`.
    snapshots: u64,
}

impl Swarm {
    fn new(
        addr: SocketAddr,
        n: usize,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Swarm> {
        Ok(Swarm {
            addr,
            n,
            poll: Poll::new()?,
            bots: Slab::with_capacity(n),
            started: 0,
            counters,
            stop,
            ep: Endpoint::new(
                ConnectionConfig::default().max_message_size(MAX_MESSAGE),
                Instant::now(),
            ),
            scratch: vec![0; 256 * 1024],
            snapshots: 0,
        })
    }

    /// Opens connections, plays, and returns once every bot has ended (after
    /// [`Bots::stop_opening`] or once all `n` have started).
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            if !stopping {
                self.open_more();
            }
            if self.bots.is_empty() && (stopping || self.started == self.n) {
                break;
            }
            std::thread::sleep(PAUSE);
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::ZERO)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("bots: poll failed: {e}");
                    break;
                }
            }
            for event in events.iter() {
                let key = event.token().0;
                if let Err(e) = self.service(key) {
                    self.end(key, Some(e));
                }
            }
            self.send_inputs();
            self.publish();
        }
        self.publish();
    }

    /// Starts connections while fewer than [`CONNECTING`] are opening.
    fn open_more(&mut self) {
        let opening = (self.bots.iter())
            .filter(|(_, b)| b.conn.phase() == Phase::Handshake)
            .count();
        for _ in opening..CONNECTING {
            if self.started == self.n {
                return;
            }
            self.started += 1;
            if let Err(e) = self.connect() {
                eprintln!("bots: connect failed: {e}");
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        let entry = self.bots.vacant_entry();
        self.poll.registry().register(
            &mut stream,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let rng = crate::seed::seed();
        let conn = Connection::client(&mut self.ep, &self.addr.to_string(), "/", &[]);
        entry.insert(Bot {
            stream,
            connected: false,
            conn,
            next_input: Instant::now() + INPUT_EVERY.mul_f64((rng % 1000) as f64 / 1000.0),
            rng,
        });
        Ok(())
    }

    /// Handles readiness of bot `key`: sends the request once connected, writes what is
    /// pending, reads until the socket is empty. `Ok` with the bot gone if it ended cleanly.
    fn service(&mut self, key: usize) -> io::Result<()> {
        let Some(bot) = self.bots.get_mut(key) else {
            return Ok(());
        };
        if !bot.connected {
            if let Some(e) = bot.stream.take_error()? {
                return Err(e);
            }
            if bot.stream.peer_addr().is_err() {
                return Ok(()); // not connected yet
            }
            bot.connected = true;
        }
        write_pending(bot, &mut self.ep)?;
        let now = Instant::now();
        loop {
            let n = match bot.stream.read(&mut self.scratch) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (snapshots, counters) = (&mut self.snapshots, &self.counters);
            let mut failure = None;
            bot.conn.recv(
                &mut self.ep,
                now,
                &mut self.scratch[..n],
                |_, _, event| match event {
                    Event::Message(Message::Binary(b)) if b.first() == Some(&SNAPSHOT) => {
                        *snapshots += 1;
                    }
                    Event::Closed(CloseReason::Closed {
                        code: Some(CloseCode::GOING_AWAY),
                        ..
                    }) => {
                        counters.going_away.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Closed(CloseReason::Closed { .. }) => {}
                    Event::Closed(why) => failure = Some(format!("closed: {why:?}")),
                    Event::Refused(e) => failure = Some(format!("refused: {e}")),
                    _ => {}
                },
            );
            if let Some(e) = failure {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            write_pending(bot, &mut self.ep)?;
        }
        // The server closed TCP: a clean end after the close handshake, a failure otherwise.
        let handshaking = bot.conn.phase() == Phase::Handshake;
        if bot.conn.handle_disconnect(&mut self.ep).is_some() || handshaking {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end(key, None);
        Ok(())
    }

    /// Removes bot `key`, counting it as failed if `error` says so.
    fn end(&mut self, key: usize, error: Option<io::Error>) {
        let Some(mut bot) = self.bots.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut bot.stream);
        if let Some(e) = error {
            if !self.stop.load(Ordering::Acquire) {
                eprintln!("bots: a bot failed: {e}");
            }
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends a random key set from every open bot whose turn it is.
    fn send_inputs(&mut self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        for (key, bot) in self.bots.iter_mut() {
            if !bot.conn.is_open() || bot.next_input > now {
                continue;
            }
            bot.next_input += INPUT_EVERY;
            let keys = random_keys(&mut bot.rng);
            let sent = (bot.conn.send(&mut self.ep, Message::Binary(&[keys])))
                .map_err(|e| io::Error::other(format!("{e:?}")))
                .and_then(|()| write_pending(bot, &mut self.ep));
            if let Err(e) = sent {
                failed.push((key, e));
            }
        }
        for (key, e) in failed {
            self.end(key, Some(e));
        }
    }

    /// Adds the snapshots counted since last time to the shared counter.
    fn publish(&mut self) {
        let counted = std::mem::take(&mut self.snapshots);
        self.counters
            .snapshots
            .fetch_add(counted, Ordering::Relaxed);
    }
}

/// Writes what the socket takes of the bot's queued bytes; the rest waits for the next
/// writable event.
fn write_pending(bot: &mut Bot, ep: &mut Endpoint) -> io::Result<()> {
    while bot.connected && !bot.conn.transmit().is_empty() {
        match bot.stream.write(bot.conn.transmit()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bot.conn.advance(ep, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A random set of held keys (xorshift), biased towards moving.
fn random_keys(rng: &mut u64) -> u8 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    const MOVES: [u8; 9] = [
        UP,
        DOWN,
        LEFT,
        RIGHT,
        UP | LEFT,
        UP | RIGHT,
        DOWN | LEFT,
        DOWN | RIGHT,
        0,
    ];
    MOVES[(*rng >> 32) as usize % MOVES.len()]
}
