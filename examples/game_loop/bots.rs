//! Bot players: N WebSocket clients driven by one thread and one `mio::Poll`, on wsloop's
//! sans-IO protocol core in the client role.
//!
//! Each bot connects, sends a random key set every ~100 ms and reads the snapshots, counting
//! them. At most [`CONNECTING`] handshakes are in flight at once, so the server's accept
//! backlog is never overrun. A close frame from the server is echoed; the bot ends when the
//! server closes TCP.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use wsloop::proto::frame::OpCode;
use wsloop::proto::handshake::{check_response, new_key, write_request, HeadScanner};
use wsloop::proto::message::{Decoded, Decoder, Encoder, Event};
use wsloop::proto::{CloseCode, Role};

use crate::game::{DOWN, LEFT, RIGHT, SNAPSHOT, UP};

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

    /// Waits for every bot to end (the server closes them on shutdown).
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

/// Where a bot is in its life.
enum Phase {
    /// TCP connect in progress; the request goes out when the socket is writable.
    Connecting,
    /// Request sent, waiting for the `101`.
    Handshake { key: String, scanner: HeadScanner },
    /// Playing.
    Open,
    /// Close frame received and echoed; waiting for the server to close TCP.
    Closing,
}

/// One bot connection.
struct Bot {
    stream: TcpStream,
    phase: Phase,
    decoder: Decoder,
    /// Received bytes not yet used (a partial head or frame).
    rx: Vec<u8>,
    /// Bytes the socket did not take yet.
    tx: Vec<u8>,
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
    encoder: Encoder,
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
            encoder: Encoder::new(Role::Client),
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
            .filter(|(_, b)| matches!(b.phase, Phase::Connecting | Phase::Handshake { .. }))
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
        entry.insert(Bot {
            stream,
            phase: Phase::Connecting,
            decoder: Decoder::new(Role::Client, MAX_MESSAGE),
            rx: Vec::new(),
            tx: Vec::new(),
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
        if let Phase::Connecting = bot.phase {
            if let Some(e) = bot.stream.take_error()? {
                return Err(e);
            }
            if bot.stream.peer_addr().is_err() {
                return Ok(()); // not connected yet
            }
            let key = new_key();
            write_request(&mut bot.tx, &self.addr.to_string(), "/", &key, &[], None);
            bot.phase = Phase::Handshake {
                key,
                scanner: HeadScanner::default(),
            };
        }
        write_pending(bot)?;
        loop {
            let n = match bot.stream.read(&mut self.scratch) {
                Ok(0) => return self.finish(key),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.snapshots += if bot.rx.is_empty() {
                // The usual case: frames are used where they were read, only a tail is kept.
                let bytes = &mut self.scratch[..n];
                let (used, snapshots) = receive(bot, bytes, &self.encoder, &self.counters)?;
                bot.rx.extend_from_slice(&bytes[used..]);
                snapshots
            } else {
                let mut rx = std::mem::take(&mut bot.rx);
                rx.extend_from_slice(&self.scratch[..n]);
                let (used, snapshots) = receive(bot, &mut rx, &self.encoder, &self.counters)?;
                rx.drain(..used);
                bot.rx = rx;
                snapshots
            };
            write_pending(bot)?;
        }
    }

    /// The server closed TCP: a clean end after a close handshake, a failure otherwise.
    fn finish(&mut self, key: usize) -> io::Result<()> {
        match self.bots[key].phase {
            Phase::Closing => {
                self.end(key, None);
                Ok(())
            }
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
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
            if !matches!(bot.phase, Phase::Open) || bot.next_input > now {
                continue;
            }
            bot.next_input += INPUT_EVERY;
            let keys = random_keys(&mut bot.rng);
            self.encoder.message(&mut bot.tx, OpCode::Binary, &[keys]);
            if let Err(e) = write_pending(bot) {
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

/// Uses `bytes`, the bot's unused received bytes: the handshake answer, then frames. Returns
/// how many bytes it used (the rest is a partial head or frame) and the snapshots seen.
fn receive(
    bot: &mut Bot,
    bytes: &mut [u8],
    encoder: &Encoder,
    counters: &Counters,
) -> io::Result<(usize, u64)> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut pos = 0;
    match &mut bot.phase {
        Phase::Closing => return Ok((bytes.len(), 0)), // nothing may follow a close frame
        Phase::Handshake { key, scanner } => {
            let Some(end) = scanner.find_end(bytes) else {
                return Ok((0, 0));
            };
            check_response(&bytes[..end], key, &[])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            bot.phase = Phase::Open;
            pos = end;
        }
        _ => {}
    }
    let mut snapshots = 0;
    while pos < bytes.len() {
        let decoded =
            (bot.decoder.decode(&mut bytes[pos..])).map_err(|e| invalid(e.to_string()))?;
        let Decoded::Frame { len, event } = decoded else {
            break;
        };
        pos += len;
        match event {
            Some(Event::Binary(b)) if b.first() == Some(&SNAPSHOT) => snapshots += 1,
            Some(Event::Ping(payload)) => encoder.frame(&mut bot.tx, OpCode::Pong, true, payload),
            Some(Event::Close(code, _)) => {
                if code == Some(CloseCode::GOING_AWAY) {
                    counters.going_away.fetch_add(1, Ordering::Relaxed);
                }
                encoder.close(&mut bot.tx, code, "");
                bot.phase = Phase::Closing;
                pos = bytes.len();
            }
            _ => {}
        }
    }
    bot.decoder.release();
    Ok((pos, snapshots))
}

/// Writes what the socket takes of `bot.tx`; the rest waits for the next writable event.
fn write_pending(bot: &mut Bot) -> io::Result<()> {
    while !bot.tx.is_empty() {
        match bot.stream.write(&bot.tx) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bot.tx.drain(..n);
            }
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
