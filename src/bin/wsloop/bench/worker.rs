//! One load-generating thread: its own `mio::Poll` and its share of the connections, through
//! the phases of a run (connect, measure, drain, close).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Registry, Token};

use super::conn::{Codec, Conn, Event, Phase, Sender};
use super::message::since;
use super::stats::{new_histogram, Cause, CpuUse, Failure, Live, Outcome};
use super::transport::Transport;
use super::{Mode, Plan};

/// How long, after the window, outstanding echoes and deliveries are awaited.
const DRAIN: Duration = Duration::from_secs(3);
/// How often the thread's counters are added to the live ones.
const PUBLISH: Duration = Duration::from_millis(250);
/// Longest wait in one poll.
const TURN: Duration = Duration::from_millis(100);

/// How many times a run waits for the other threads: once connected, and in fan-out once
/// every publisher stopped.
pub fn barriers(mode: Mode) -> usize {
    if mode == Mode::Fanout {
        2
    } else {
        1
    }
}

/// What a connection does in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Sends messages and verifies their echoes.
    Echo,
    /// Sends fan-out messages (and ignores what it receives).
    Publisher,
    /// Receives fan-out messages.
    Subscriber,
    /// Connects and stays idle.
    Idle,
    /// Churn: sends one message, and closes once it is echoed.
    Once,
}

/// A connection's bookkeeping, apart from its protocol state.
struct Track {
    /// Its number in the whole run (messages are stamped with it).
    index: usize,
    role: Role,
    /// When its connect was started (or meant to be, at a connect rate).
    began: Instant,
    /// Messages sent, and echoes verified.
    sent: u64,
    acked: u64,
    /// When each message not yet echoed was sent (or meant to be, in an open loop).
    sent_at: VecDeque<Instant>,
    /// A subscriber's next expected sequence number from each publisher, and deliveries.
    next_seq: Vec<u64>,
    delivered: u64,
    /// Has bytes queued since the last flush.
    dirty: bool,
    /// The handshake completed.
    opened: bool,
}

/// One connection: socket, protocol state (once connected) and bookkeeping.
struct Client {
    io: Transport,
    /// Its token in the poll (its slot in `Worker::clients`).
    token: Token,
    /// Registered for writability too: while connecting, and while a write is unfinished.
    writable: bool,
    conn: Option<Conn>,
    track: Track,
}

/// The thread's counters; added to the shared live ones every `PUBLISH`.
struct Stats {
    /// Latencies (ns) since the last publication, and all of them.
    interval: Histogram<u64>,
    latency: Histogram<u64>,
    handshakes: Histogram<u64>,
    /// Echoes / deliveries verified within the window, and in all.
    counted: u64,
    verified: u64,
    established: usize,
    failed: usize,
    errors: u64,
    first_errors: Vec<String>,
    failures: BTreeMap<Cause, u64>,
    /// Churn: connections closed cleanly within the window.
    cycles: u64,
    /// Echoes or deliveries that never came.
    lost: u64,
    /// What was last added to the live counters.
    shown: (usize, usize, u64, u64),
    last_publish: Instant,
}

impl Stats {
    /// Counts a failed connection (the caller counts it in `failed` if it never opened).
    fn fail(&mut self, failure: Failure) {
        *self.failures.entry(failure.cause).or_default() += 1;
        self.error(failure.what);
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(what);
        }
    }

    fn publish(&mut self, live: &Live) {
        let now = (self.established, self.failed, self.verified, self.errors);
        live.established
            .fetch_add(now.0 - self.shown.0, Ordering::Relaxed);
        live.failed
            .fetch_add(now.1 - self.shown.1, Ordering::Relaxed);
        live.verified
            .fetch_add(now.2 - self.shown.2, Ordering::Relaxed);
        live.errors
            .fetch_add(now.3 - self.shown.3, Ordering::Relaxed);
        self.shown = now;
        if !self.interval.is_empty() {
            if let Ok(mut h) = live.interval.lock() {
                let _ = h.add(&self.interval);
            }
            let _ = self.latency.add(&self.interval);
            self.interval.reset();
        }
        self.last_publish = Instant::now();
    }
}

/// One thread's share of a run.
pub struct Worker<'a> {
    plan: &'a Plan,
    live: &'a Live,
    /// Called after every publication (when this thread prints the progress line).
    progress: Option<&'a mut dyn FnMut(&Live)>,
    poll: Poll,
    events: Events,
    codec: Codec,
    clients: Vec<Option<Client>>,
    /// Global indices of this thread's connections, opened in this order.
    shard: Vec<usize>,
    stats: Stats,
    /// New messages are sent while this is set, until `end`.
    sending: bool,
    end: Instant,
    /// Open loop: when the next message is meant to go, and to which connection.
    next_send: Instant,
    cursor: usize,
    /// The next of `plan.sources` to connect from.
    next_source: usize,
}

impl<'a> Worker<'a> {
    /// A worker for the connections `shard` (global indices).
    pub fn new(plan: &'a Plan, live: &'a Live, shard: Vec<usize>) -> io::Result<Self> {
        let now = Instant::now();
        Ok(Worker {
            plan,
            live,
            progress: None,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            codec: Codec::new(&plan.opts),
            clients: Vec::with_capacity(shard.len()),
            shard,
            stats: Stats {
                interval: new_histogram(),
                latency: new_histogram(),
                handshakes: new_histogram(),
                counted: 0,
                verified: 0,
                established: 0,
                failed: 0,
                errors: 0,
                first_errors: Vec::new(),
                failures: BTreeMap::new(),
                cycles: 0,
                lost: 0,
                shown: (0, 0, 0, 0),
                last_publish: now,
            },
            sending: false,
            end: now,
            next_send: now,
            cursor: 0,
            next_source: 0,
        })
    }

    /// Calls `progress` after every publication of the counters (every `PUBLISH`).
    pub fn progress(mut self, progress: &'a mut dyn FnMut(&Live)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Adds the thread's counters to the live ones.
    fn publish(&mut self) {
        self.stats.publish(self.live);
        if let Some(progress) = self.progress.as_mut() {
            progress(self.live);
        }
    }

    /// Runs every phase; `barrier` lines the threads up before and after the window.
    pub fn run(mut self, barrier: &std::sync::Barrier) -> Outcome {
        let (mode, pid) = (self.plan.mode, self.plan.server_pid);
        let connect_began = Instant::now();
        let cpu_began = CpuUse::now(pid);
        if mode != Mode::Churn {
            self.connect();
        }
        let connect_secs = connect_began.elapsed();
        let connect_cpu = CpuUse::now(pid).since(cpu_began);
        self.publish();
        barrier.wait();
        let start = Instant::now();
        let window = match mode {
            Mode::Connect => self.plan.hold,
            _ => self.plan.window,
        };
        self.end = start + window;
        let cpu0 = CpuUse::now(pid);
        match mode {
            Mode::Connect => self.hold(),
            Mode::Churn => self.churn(start),
            Mode::Echo | Mode::Fanout => self.measure(start),
        }
        let elapsed = start.elapsed().min(window);
        let cpu = match mode {
            Mode::Connect => connect_cpu,
            _ => CpuUse::now(pid).since(cpu0),
        };
        self.sending = false;
        if self.plan.mode == Mode::Fanout {
            let sent: u64 = self.sent(Role::Publisher);
            self.live.fanout_sent.fetch_add(sent, Ordering::Relaxed);
            barrier.wait();
            let expected = self.live.fanout_sent.load(Ordering::Relaxed);
            self.drain(|t| t.role != Role::Subscriber || t.delivered >= expected);
            let lost: u64 = self
                .clients
                .iter()
                .flatten()
                .filter(|c| c.track.role == Role::Subscriber)
                .map(|c| expected.saturating_sub(c.track.delivered))
                .sum();
            self.lost(lost, "fan-out messages not delivered");
        } else if mode == Mode::Churn {
            // Connections still cycling finish (uncounted), or fail.
            self.drain(|_| false);
            for client in self.clients.iter_mut().filter_map(Option::take) {
                self.stats.fail(Failure {
                    cause: Cause::Timeout,
                    what: format!(
                        "conn {}: not closed {DRAIN:?} after the window",
                        client.track.index
                    ),
                });
            }
        } else {
            self.drain(|t| t.acked >= t.sent);
            let lost: u64 = self
                .clients
                .iter()
                .flatten()
                .map(|c| c.track.sent - c.track.acked)
                .sum();
            self.lost(lost, "echoes not received");
        }
        let sent = self.sent(Role::Publisher) + self.sent(Role::Echo);
        self.close_all();
        self.publish();
        Outcome {
            latency: self.stats.latency,
            handshakes: self.stats.handshakes,
            counted: self.stats.counted,
            sent,
            established: self.stats.established,
            failed: self.stats.failed,
            errors: self.stats.errors,
            first_errors: self.stats.first_errors,
            failures: self.stats.failures,
            cycles: self.stats.cycles,
            lost: self.stats.lost,
            connect_secs: connect_secs.as_secs_f64(),
            window_secs: elapsed.as_secs_f64(),
            cpu,
        }
    }

    fn sent(&self, role: Role) -> u64 {
        self.clients
            .iter()
            .flatten()
            .filter(|c| c.track.role == role)
            .map(|c| c.track.sent)
            .sum()
    }

    fn lost(&mut self, lost: u64, what: &str) {
        self.stats.lost += lost;
        if lost > 0 {
            self.stats.error(format!("{lost} {what}"));
            self.stats.errors += lost - 1;
        }
    }

    fn role(&self, index: usize) -> Role {
        match self.plan.mode {
            Mode::Echo => Role::Echo,
            Mode::Connect => Role::Idle,
            Mode::Fanout if index < self.plan.publishers => Role::Publisher,
            Mode::Fanout => Role::Subscriber,
            Mode::Churn => Role::Once,
        }
    }

    /// Phase 1: opens every connection (a bounded number at a time, or at the connect rate).
    fn connect(&mut self) {
        let plan = self.plan;
        let n = self.shard.len();
        let began = Instant::now();
        let deadline = began + plan.connect_timeout;
        let interval = plan.connect_rate.map(|r| Duration::from_secs_f64(1.0 / r));
        while self.stats.established + self.stats.failed < n {
            let now = Instant::now();
            while self.clients.len() < n {
                let opened = self.clients.len();
                let intended = match interval {
                    Some(i) => {
                        let at = began + i.mul_f64(opened as f64);
                        if at > now {
                            break;
                        }
                        at
                    }
                    None if opened - self.stats.established - self.stats.failed
                        >= plan.connect_concurrency =>
                    {
                        break
                    }
                    None => now,
                };
                let client = self.open(self.clients.len(), intended);
                self.clients.push(client);
            }
            if now >= deadline {
                let mut late = 0;
                for slot in &mut self.clients {
                    if slot.as_ref().is_some_and(|c| !c.is_open()) {
                        *slot = None;
                        late += 1;
                    }
                }
                self.stats.failed += late;
                self.stats.error(format!(
                    "{late} connections not open after --connect-timeout"
                ));
                break;
            }
            let mut wait = TURN.min(deadline - now);
            if let Some(i) = interval {
                if self.clients.len() < n {
                    let at = began + i.mul_f64(self.clients.len() as f64);
                    wait = wait.min(whole_ms(at.saturating_duration_since(now)));
                }
            }
            self.turn(wait);
        }
    }

    /// Starts connecting connection `slot` of the shard (meant to start at `began`); `None`
    /// if that failed at once.
    fn open(&mut self, slot: usize, began: Instant) -> Option<Client> {
        let index = self.shard[slot];
        let token = Token(slot);
        let role = self.role(index);
        let sources = &self.plan.sources;
        let source = sources.get(self.next_source).copied();
        self.next_source = (self.next_source + 1) % sources.len().max(1);
        let opened = Transport::connect(self.plan.addr, source, self.plan.tls.as_ref()).and_then(
            |mut io| {
                self.poll.registry().register(
                    io.socket(),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(io)
            },
        );
        match opened {
            Ok(io) => Some(Client {
                io,
                token,
                writable: true,
                conn: None,
                track: Track {
                    index,
                    role,
                    began,
                    sent: 0,
                    acked: 0,
                    sent_at: VecDeque::new(),
                    next_seq: if role == Role::Subscriber {
                        vec![0; self.plan.publishers]
                    } else {
                        Vec::new()
                    },
                    delivered: 0,
                    dirty: false,
                    opened: false,
                },
            }),
            Err(e) => {
                self.stats.failed += 1;
                let mut failure = Failure::io("connect", &e);
                failure.what += match failure.cause {
                    Cause::NoFile => " (too many open files: raise the limit with `ulimit -n`)",
                    Cause::NoPort => " (no local port left: add source addresses with --source)",
                    _ => "",
                };
                self.stats.fail(failure);
                None
            }
        }
    }

    /// Churn: until `end`, opens a connection in every free slot of the shard (as soon as
    /// it is free, or at the planned rate), each of which upgrades, has one message echoed
    /// and closes.
    fn churn(&mut self, start: Instant) {
        self.sending = true;
        let slots = self.shard.len();
        self.clients.resize_with(slots, || None);
        let mut opened = 0u32;
        loop {
            let now = Instant::now();
            if now >= self.end {
                break;
            }
            // When the next connection is meant to start.
            let rate = self.plan.rate;
            let next = |opened: u32| rate.map(|i| start + i * opened);
            for slot in 0..slots {
                if self.clients[slot].is_some() {
                    continue;
                }
                let began = next(opened).unwrap_or(now);
                if began > now {
                    break;
                }
                self.clients[slot] = self.open(slot, began);
                opened += 1;
            }
            self.turn_until(next(opened));
        }
    }

    /// Phase 2 (echo and fan-out): the measurement window.
    fn measure(&mut self, start: Instant) {
        self.sending = true;
        self.next_send = start;
        if self.plan.rate.is_none() && self.plan.mode == Mode::Echo {
            for i in 0..self.clients.len() {
                self.fill(i, start);
            }
            self.flush_dirty();
        }
        while self.clients.iter().any(Option::is_some) {
            let now = Instant::now();
            if now >= self.end {
                break;
            }
            if let Some(interval) = self.plan.rate {
                self.send_due(now, interval);
            }
            self.turn_until(self.plan.rate.map(|_| self.next_send));
        }
    }

    /// Services events for up to `TURN`, not past `end`, nor past `at` (when the next send or
    /// connect is due). epoll waits whole milliseconds: under one, it looks for events without
    /// waiting and sleeps the rest, so that what is due is neither late nor spinning.
    fn turn_until(&mut self, at: Option<Instant>) {
        let now = Instant::now();
        let end = self.end.saturating_duration_since(now);
        let wait = at.map_or(end, |at| at.saturating_duration_since(now).min(end));
        if wait < Duration::from_millis(1) {
            self.turn(Duration::ZERO);
            std::thread::sleep(wait.saturating_sub(now.elapsed()));
        } else {
            self.turn(wait.min(TURN));
        }
    }

    /// Open loop: sends every message whose time has come, round-robin over the senders.
    fn send_due(&mut self, now: Instant, interval: Duration) {
        let senders = self.clients.len();
        while self.next_send <= now && senders > 0 {
            let at = self.next_send;
            self.next_send += interval;
            // The next sender that is open (at most one round).
            for _ in 0..senders {
                let i = self.cursor;
                self.cursor = (self.cursor + 1) % senders;
                let Some(client) = self.clients[i].as_mut() else {
                    continue;
                };
                let Some(conn) = client.conn.as_mut().filter(|c| c.phase() == Phase::Open) else {
                    continue;
                };
                if !matches!(client.track.role, Role::Echo | Role::Publisher) {
                    continue;
                }
                let mut sender = conn.sender(&mut self.codec);
                if let Err(e) = send_one(self.plan, &mut client.track, &mut sender, at) {
                    self.stats
                        .error(format!("conn {}: {e}", client.track.index));
                    self.clients[i] = None;
                }
                break;
            }
        }
        self.flush_dirty();
    }

    /// Closed loop: queues messages on connection `i` until `inflight` are outstanding.
    fn fill(&mut self, i: usize, now: Instant) {
        let Some(client) = self.clients[i].as_mut() else {
            return;
        };
        let Some(conn) = client.conn.as_mut().filter(|c| c.phase() == Phase::Open) else {
            return;
        };
        if let Err(e) = top_up(
            self.plan,
            &mut client.track,
            &mut conn.sender(&mut self.codec),
            now,
        ) {
            self.stats
                .error(format!("conn {}: {e}", client.track.index));
            self.clients[i] = None;
        }
    }

    /// Writes every connection that has bytes queued since the last flush.
    fn flush_dirty(&mut self) {
        for slot in &mut self.clients {
            let Some(client) = slot.as_mut().filter(|c| c.track.dirty) else {
                continue;
            };
            client.track.dirty = false;
            if let Err(e) = client.flush(&mut self.codec, self.poll.registry()) {
                self.stats
                    .error(format!("conn {}: write: {e}", client.track.index));
                *slot = None;
            }
        }
    }

    /// Connection mode: holds the connections idle (answering pings) until `end`.
    fn hold(&mut self) {
        loop {
            let now = Instant::now();
            if now >= self.end {
                break;
            }
            self.turn(TURN.min(self.end - now));
        }
        let alive = self.clients.iter().flatten().count();
        if alive < self.stats.established {
            let dropped = self.stats.established - alive;
            self.stats
                .error(format!("{dropped} connections dropped while idle"));
        }
    }

    /// Phase 3: waits up to `DRAIN` until `done` holds for every connection.
    fn drain(&mut self, done: impl Fn(&Track) -> bool) {
        let deadline = Instant::now() + DRAIN;
        while Instant::now() < deadline && self.clients.iter().flatten().any(|c| !done(&c.track)) {
            self.turn(Duration::from_millis(20));
        }
    }

    /// Sends a close frame on every open connection and waits up to a second for the answers.
    fn close_all(&mut self) {
        self.sending = false;
        for slot in &mut self.clients {
            let Some(client) = slot.as_mut() else {
                continue;
            };
            match client.conn.as_mut() {
                Some(conn) if conn.phase() == Phase::Open && !self.plan.opts.raw => {
                    conn.close(&mut self.codec);
                    if client.flush(&mut self.codec, self.poll.registry()).is_err() {
                        *slot = None;
                    }
                }
                _ => *slot = None,
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && self.clients.iter().any(Option::is_some) {
            self.turn(Duration::from_millis(20));
        }
    }

    /// Polls once and services every connection with an event.
    fn turn(&mut self, timeout: Duration) {
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                self.stats.error(format!("poll: {e}"));
            }
            return;
        }
        let now = Instant::now();
        for event in self.events.iter() {
            let i = event.token().0;
            let Some(slot) = self.clients.get_mut(i) else {
                continue;
            };
            let Some(client) = slot.as_mut() else {
                continue;
            };
            let was_open = client.is_open();
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let mut ctx = Ctx {
                plan: self.plan,
                stats: &mut self.stats,
                sending: self.sending,
                end: self.end,
                now,
            };
            match client.service(&mut ctx, &mut self.codec, self.poll.registry(), readable) {
                Ok(true) => {}
                Ok(false) => {
                    if self.sending && now < self.end {
                        self.stats.cycles += 1;
                    }
                    *slot = None;
                }
                Err(mut e) => {
                    if !was_open && !client.is_open() {
                        self.stats.failed += 1;
                    }
                    e.what = format!("conn {}: {}", client.track.index, e.what);
                    self.stats.fail(e);
                    *slot = None;
                }
            }
        }
        if now - self.stats.last_publish >= PUBLISH {
            self.publish();
        }
    }
}

impl Client {
    fn is_open(&self) -> bool {
        self.track.opened
    }

    /// Handles readiness. `Ok(false)` when the connection is done (closed cleanly).
    fn service(
        &mut self,
        ctx: &mut Ctx<'_>,
        codec: &mut Codec,
        registry: &Registry,
        readable: bool,
    ) -> Result<bool, Failure> {
        if self.conn.is_none() {
            match self.io.connected() {
                Ok(true) => {}
                Ok(false) => return Ok(true),
                Err(e) => return Err(Failure::io("connect", &e)),
            }
            let conn = Conn::new(&ctx.plan.opts, codec);
            let open = conn.phase() == Phase::Open;
            self.conn = Some(conn);
            if let Some(conn) = self.conn.as_mut().filter(|_| open) {
                // A raw echo: no handshake.
                let mut h = Handling {
                    ctx,
                    track: &mut self.track,
                };
                h.event(Event::Open, &mut conn.sender(codec))?;
            }
        }
        if readable && !self.read(ctx, codec)? {
            return Ok(false);
        }
        self.flush(codec, registry)
            .map_err(|e| Failure::io("write", &e))?;
        Ok(true)
    }

    /// Reads until the socket is drained and handles what came. `Ok(false)` once the server
    /// has closed after our close frame.
    fn read(&mut self, ctx: &mut Ctx<'_>, codec: &mut Codec) -> Result<bool, Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(true);
        };
        loop {
            let space = codec.read_space();
            let room = space.len();
            match self.io.read(space) {
                Ok(0) if conn.phase() == Phase::Closing => return Ok(false),
                Ok(0) => {
                    return Err(Failure {
                        cause: Cause::Closed,
                        what: "the server closed the connection".into(),
                    })
                }
                Ok(n) => {
                    ctx.now = Instant::now();
                    let mut h = Handling {
                        ctx: &mut *ctx,
                        track: &mut self.track,
                    };
                    let upgrading = conn.phase() == Phase::Handshake;
                    let alive = conn
                        .received(n, h.ctx.now, codec, |ev, s| h.event(ev, s))
                        .map_err(|what| Failure {
                            cause: if upgrading {
                                Cause::Upgrade
                            } else {
                                Cause::Protocol
                            },
                            what,
                        })?;
                    if !alive {
                        return Ok(false);
                    }
                    if n < room && self.io.short_read_drains() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if conn.phase() == Phase::Closing => return Ok(false),
                Err(e) => return Err(Failure::io("read", &e)),
            }
        }
    }

    /// Writes what is queued until done or the socket is full, and keeps the socket registered
    /// for writability only while something is left (as uSockets and wsloop's server do):
    /// otherwise only readable, so that the edge-triggered poll reports nothing else.
    fn flush(&mut self, codec: &mut Codec, registry: &Registry) -> io::Result<()> {
        let mut blocked = self.conn.is_none();
        if let Some(conn) = self.conn.as_mut() {
            while !conn.pending().is_empty() {
                match self.io.write(conn.pending()) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => conn.written(codec, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.io.flush()?;
        let writable = blocked || self.io.wants_write();
        if writable != self.writable {
            let interest = if writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(self.io.socket(), self.token, interest)?;
            self.writable = writable;
        }
        Ok(())
    }
}

/// What servicing a connection needs from the worker (apart from the codec).
struct Ctx<'a> {
    plan: &'a Plan,
    stats: &'a mut Stats,
    sending: bool,
    end: Instant,
    /// When the bytes at hand were read.
    now: Instant,
}

/// Queues one message on a connection, meant to be sent at `at`.
#[inline]
fn send_one(
    plan: &Plan,
    track: &mut Track,
    sender: &mut Sender<'_>,
    at: Instant,
) -> Result<(), String> {
    let seq = track.sent;
    let msgs = &plan.messages;
    if track.role == Role::Publisher {
        let t = since(plan.base, at);
        sender.send(plan.binary, |out| msgs.fill_timed(track.index, seq, t, out))?;
    } else {
        sender.send(plan.binary, |out| msgs.fill(track.index, seq, out))?;
        track.sent_at.push_back(at);
    }
    track.sent += 1;
    track.dirty = true;
    Ok(())
}

/// Closed loop: queues messages until `inflight` are outstanding.
fn top_up(
    plan: &Plan,
    track: &mut Track,
    sender: &mut Sender<'_>,
    now: Instant,
) -> Result<(), String> {
    while track.sent - track.acked < plan.inflight as u64 {
        send_one(plan, track, sender, now)?;
    }
    Ok(())
}

/// [`Duration`] rounded down to whole milliseconds (epoll's unit), so that a connect is not
/// late by a rounded-up millisecond.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// What a connection's events update: its bookkeeping and the thread's counters.
struct Handling<'a, 'b> {
    ctx: &'a mut Ctx<'b>,
    track: &'a mut Track,
}

impl Handling<'_, '_> {
    #[inline]
    fn event(&mut self, event: Event<'_>, sender: &mut Sender<'_>) -> Result<(), String> {
        match event {
            Event::Open => {
                self.track.opened = true;
                self.ctx.stats.established += 1;
                let took = self.ctx.now.saturating_duration_since(self.track.began);
                self.ctx
                    .stats
                    .handshakes
                    .saturating_record(took.as_nanos() as u64);
                match self.track.role {
                    Role::Echo if self.ctx.sending && self.ctx.plan.rate.is_none() => {
                        top_up(self.ctx.plan, self.track, sender, self.ctx.now)?;
                    }
                    Role::Once => send_one(self.ctx.plan, self.track, sender, self.ctx.now)?,
                    _ => {}
                }
                Ok(())
            }
            Event::Message { binary, payload } => match self.track.role {
                Role::Echo => self.echo(binary, payload, sender),
                Role::Once => {
                    self.echo(binary, payload, sender)?;
                    sender.close();
                    Ok(())
                }
                Role::Subscriber => self.delivery(binary, payload),
                Role::Publisher | Role::Idle => Ok(()),
            },
        }
    }

    /// Checks the echo of the oldest message not yet echoed, records its latency, and in a
    /// closed loop sends the next one at once (its write follows this read).
    fn echo(
        &mut self,
        binary: bool,
        payload: &[u8],
        sender: &mut Sender<'_>,
    ) -> Result<(), String> {
        let (plan, track) = (self.ctx.plan, &mut *self.track);
        if binary != plan.binary {
            return Err("echo of the wrong type (text for binary or back)".into());
        }
        let seq = track.acked;
        let Some(at) = track.sent_at.pop_front() else {
            return Err("an echo of a message never sent".into());
        };
        if !plan.messages.verify(track.index, seq, payload) {
            return Err(format!(
                "echo of message {seq} differs from what was sent ({} bytes back)",
                payload.len()
            ));
        }
        track.acked += 1;
        self.ctx.stats.verified += 1;
        let ns = self.ctx.now.saturating_duration_since(at).as_nanos() as u64;
        self.ctx.stats.interval.saturating_record(ns);
        if self.ctx.sending && self.ctx.now < self.ctx.end {
            self.ctx.stats.counted += 1;
            if plan.rate.is_none() && track.role == Role::Echo {
                send_one(plan, track, sender, self.ctx.now)?;
            }
        }
        Ok(())
    }

    /// Checks a fan-out delivery and records its latency from the intended send time.
    fn delivery(&mut self, binary: bool, payload: &[u8]) -> Result<(), String> {
        let (plan, track) = (self.ctx.plan, &mut *self.track);
        if binary != plan.binary {
            return Err("delivery of the wrong type (text for binary or back)".into());
        }
        let Some((publisher, seq, at)) = plan.messages.read_timed(payload) else {
            return Err(format!(
                "a delivery that no publisher sent ({} bytes)",
                payload.len()
            ));
        };
        let Some(next) = track.next_seq.get_mut(publisher) else {
            return Err(format!(
                "a delivery from publisher {publisher}, who does not exist"
            ));
        };
        if seq < *next {
            return Err(format!(
                "message {seq} of publisher {publisher} delivered twice or out of order"
            ));
        }
        *next = seq + 1;
        track.delivered += 1;
        self.ctx.stats.verified += 1;
        let sent = plan.base + at;
        let ns = self.ctx.now.saturating_duration_since(sent).as_nanos() as u64;
        self.ctx.stats.interval.saturating_record(ns);
        if self.ctx.now < self.ctx.end {
            self.ctx.stats.counted += 1;
        }
        Ok(())
    }
}
