//! The reactor: one `mio::Poll` over a listening socket and a slab of connections.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::accept::AcceptRetry;
use super::core::{lookup, recharge, Core};
use super::handle::{Command, Commands, Handle, Shared};
use super::log_limit::RepeatWarn;
use super::slot::Slot;
use super::timers::UNARMED;
use super::tls::TlsConfig;
use super::transport::Transport;
use crate::proto::connection::{Connection, Event, Phase};
use crate::proto::handshake::HttpResponse;
use crate::proto::CloseCode;
use crate::{CloseReason, Config, ConnId, Context, Error, Handler, Metrics, Relay, Upgrade};

/// Wakes the reactor for commands from [`Handle`]s.
const WAKER: Token = Token(usize::MAX);
/// The first listener; the others count down from it.
const LISTENER: Token = Token(usize::MAX - 1);
/// Most bytes read in one turn, shared among the connections with bytes to read, so that a
/// turn stays short however many of them are busy (each waits for one turn at most: a
/// healthy client beside 30 flooding ones waited up to 30 MiB of reading and echoing when
/// each could take 1 MiB); the rest is read on the next turns. A large message arrives over
/// several turns at little cost, since every busy connection moves on in each of them.
const TURN_BUDGET: usize = 512 * 1024;
/// Most bytes read from one connection in one turn, when few are busy.
const READ_BUDGET: usize = 256 * 1024;
/// Least bytes read from a busy connection in one turn, however many share the turn.
const MIN_SHARE: usize = 16 * 1024;
/// What a frame costs of the read budget on top of its bytes: about what decoding one costs,
/// in bytes unmasked in the same time (so that a flood of tiny frames gets no more time).
const FRAME_COST: usize = 128;
/// Whether a short read on a plain socket counts as drained, sparing the `WouldBlock` read:
/// sound with epoll, which raises an edge for every arrival, so Linux only (kqueue and
/// Windows' AFD polling make no such promise that mio documents).
const SHORT_READ_DRAINS: bool = cfg!(target_os = "linux");
/// Connections beyond `max_connections` that may linger while their 503 goes out.
pub(crate) const REFUSAL_SLOTS: usize = 64;

/// A WebSocket server: a listener, its connections and the application's [`Handler`], driven
/// one turn at a time by [`turn`](Server::turn) or forever by [`run`](Server::run).
pub struct Server<H: Handler> {
    poll: Poll,
    events: Events,
    listeners: Vec<Listener>,
    /// The first listener's address, and whether it is TLS.
    first: (SocketAddr, bool),
    core: Core<H::State>,
    handler: H,
    /// The reactor-wide read buffer: reads land here unless a connection has a partial frame.
    scratch: Vec<u8>,
    /// Connections that used their read budget and still have bytes to read.
    backlog: Vec<ConnId>,
    /// Commands from other threads.
    commands: Commands,
    /// Accepting again after it failed for lack of descriptors.
    accept_retry: AcceptRetry,
    /// Connections refused or dropped for `max_connections`, logged as a count per second.
    refused: RepeatWarn,
}

/// A listening socket, plain or TLS.
struct Listener {
    socket: TcpListener,
    tls: Option<TlsConfig>,
}

impl<H: Handler> Server<H> {
    /// Validates `config` and listens on `addr` (e.g. `"127.0.0.1:9001"`; port 0 picks one).
    pub fn bind(addr: &str, config: Config, handler: H) -> Result<Server<H>, Error> {
        let mut server = Server::new(config, handler)?;
        server.listen(addr, None)?;
        Ok(server)
    }

    /// Like [`bind`](Self::bind), but serves `wss` with `tls` on `addr`.
    pub fn bind_tls(
        addr: &str,
        tls: TlsConfig,
        config: Config,
        handler: H,
    ) -> Result<Server<H>, Error> {
        let mut server = Server::new(config, handler)?;
        server.listen(addr, Some(tls))?;
        Ok(server)
    }

    /// A server with no listener yet (see [`listen`](Self::listen) and
    /// [`listen_on`](Self::listen_on)).
    pub(crate) fn new(config: Config, handler: H) -> Result<Server<H>, Error> {
        config.validate()?;
        // No more connections than the process has descriptors for.
        let config = config.within_fd_limit(REFUSAL_SLOTS);
        let poll = Poll::new()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            max_queued: config.handle_queue,
            waker: Waker::new(poll.registry(), WAKER)?,
            woken: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        Ok(Server {
            commands: Commands {
                rx,
                handle: Handle { tx, shared },
            },
            poll,
            events: Events::with_capacity(1024),
            listeners: Vec::new(),
            first: (SocketAddr::from(([0, 0, 0, 0], 0)), false),
            scratch: vec![0; config.read_buffer_size],
            core: Core::new(config),
            handler,
            backlog: Vec::new(),
            accept_retry: AcceptRetry::default(),
            refused: RepeatWarn::new(Duration::from_secs(1)),
        })
    }

    /// Listens on one more address, plain or (with `tls`) TLS, and returns the bound address:
    /// one server can serve `ws` and `wss` at once.
    pub fn listen(&mut self, addr: &str, tls: Option<TlsConfig>) -> Result<SocketAddr, Error> {
        let bind_err = |source| Error::Bind {
            addr: addr.to_owned(),
            source,
        };
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address");
        let mut bound = None;
        for sa in addr.to_socket_addrs().map_err(bind_err)? {
            match TcpListener::bind(sa) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let socket = bound.ok_or_else(|| bind_err(last))?;
        // mio listens with a backlog of 128: a burst of connections between two turns would
        // have its SYNs dropped (and retried a second later). Listening again raises it.
        socket2::SockRef::from(&socket).listen(1024)?;
        self.add_listener(socket, tls)
    }

    /// Listens on an already bound socket (made with custom options such as `SO_REUSEPORT`,
    /// or inherited), plain or TLS; returns its address.
    pub fn listen_on(
        &mut self,
        socket: std::net::TcpListener,
        tls: Option<TlsConfig>,
    ) -> Result<SocketAddr, Error> {
        socket.set_nonblocking(true)?;
        self.add_listener(TcpListener::from_std(socket), tls)
    }

    fn add_listener(
        &mut self,
        mut socket: TcpListener,
        tls: Option<TlsConfig>,
    ) -> Result<SocketAddr, Error> {
        let addr = socket.local_addr()?;
        let token = Token(LISTENER.0 - self.listeners.len());
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)?;
        if self.listeners.is_empty() {
            self.first = (addr, tls.is_some());
            // Room for every connection's descriptor now, not while accepting them.
            let room = self.core.config().max_connections + REFUSAL_SLOTS;
            super::accept::reserve_descriptors(&socket, room);
        }
        self.listeners.push(Listener { socket, tls });
        Ok(addr)
    }

    /// Whether the first listener serves TLS.
    pub fn is_tls(&self) -> bool {
        self.first.1
    }

    /// The address of the first listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.first.0
    }

    /// The application's handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    /// A context to send, broadcast or close between turns; what it queues is flushed on the
    /// next turn.
    pub fn context(&mut self) -> Context<'_, H::State> {
        Context {
            core: &mut self.core,
        }
    }

    /// Adds a relay that carries this server's publishes elsewhere (see [`Relay`]).
    pub fn add_relay(&mut self, relay: impl Relay + 'static) {
        self.core.relays.push(Box::new(relay));
    }

    /// What the server counted so far, and its connections and buffers now.
    pub fn metrics(&self) -> Metrics {
        self.core.metrics()
    }

    /// A handle for other threads: send, publish, close, shut down.
    pub fn handle(&self) -> Handle {
        self.commands.handle.clone()
    }

    /// Whether a [`Handle::shutdown`] was asked for (for loops that drive [`turn`](Self::turn)
    /// themselves and then call [`shutdown`](Self::shutdown)).
    pub fn shutdown_requested(&self) -> bool {
        self.commands.handle.shared.shutdown.load(Ordering::Acquire)
    }

    /// Runs turns until a [`Handle::shutdown`], then shuts down gracefully within
    /// `close_timeout`; or until an I/O error of the poll itself.
    pub fn run(&mut self) -> Result<(), Error> {
        while !self.shutdown_requested() {
            self.turn(None)?;
        }
        self.shutdown(self.core.config().connection.close_timeout)
    }

    /// Shuts down gracefully: carries out pending handle commands, stops accepting, closes
    /// every open connection with 1001 (going away), runs turns until their close handshakes
    /// are done or `grace` has passed, and drops what is left.
    pub fn shutdown(&mut self, grace: Duration) -> Result<(), Error> {
        self.run_commands();
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        let ids: Vec<ConnId> = (self.core.slots.iter())
            .map(|(index, c)| ConnId::new(index, c.generation))
            .collect();
        for id in ids {
            match self.core.get(id).map(|c| c.conn.phase()) {
                Some(Phase::Open) => {
                    let _ = self
                        .context()
                        .close(id, CloseCode::GOING_AWAY, "server shutdown");
                }
                Some(Phase::Handshake) => self.remove(id),
                _ => {}
            }
        }
        self.flush();
        let deadline = Instant::now() + grace;
        while !self.core.slots.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.turn(Some(left))?;
        }
        let rest: Vec<ConnId> = (0..self.core.slots.capacity())
            .filter_map(|index| self.core.id(index))
            .collect();
        for id in rest {
            // Out of time, not disconnected: the application is told so.
            self.end_conn(id, CloseReason::TimedOut);
        }
        Ok(())
    }

    /// Carries out the commands that handles have queued.
    fn run_commands(&mut self) {
        self.commands
            .handle
            .shared
            .woken
            .store(false, Ordering::Release);
        while let Ok(command) = self.commands.rx.try_recv() {
            // Out of the queue, out of its byte count.
            let shared = &self.commands.handle.shared;
            shared.queued.fetch_sub(command.cost(), Ordering::AcqRel);
            let mut ctx = Context {
                core: &mut self.core,
            };
            match command {
                Command::Send(id, msg) => {
                    if let Err(e) = ctx.send(id, msg.as_message()) {
                        log::debug!("{id}: send from a handle refused: {e}");
                    }
                }
                Command::Broadcast(msg) => {
                    ctx.broadcast(msg.as_message());
                }
                Command::Publish(topic, msg) => {
                    ctx.publish(&topic, msg.as_message());
                }
                Command::PublishLocal(topic, msg) => {
                    ctx.publish_local(&topic, msg.as_message());
                }
                Command::Close(id, code, reason) => {
                    let _ = ctx.close(id, code, &reason);
                }
                Command::Metrics(reply) => {
                    let _ = reply.send(self.core.metrics());
                }
            }
        }
    }

    /// One turn: waits up to `timeout` (`None`: until something happens, `Some(ZERO)`: only
    /// what is ready) for events, handles them and due deadlines, calls the handler, and
    /// flushes every connection that has bytes queued.
    pub fn turn(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        let timeout = self.poll_timeout(timeout);
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        let now = Instant::now();
        self.core.ep.set_now(now);
        // Connections left over from the last turn; one read again by this turn's events has
        // had its budget and is not read twice.
        let backlog = std::mem::take(&mut self.backlog);
        for &id in &backlog {
            if let Some(slot) = self.core.get_mut(id) {
                slot.unread = false;
            }
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let busy = events.iter().count() + backlog.len();
        let share = if busy <= TURN_BUDGET / READ_BUDGET {
            READ_BUDGET
        } else {
            (TURN_BUDGET / busy).max(MIN_SHARE)
        };
        for event in events.iter() {
            if event.token() == WAKER {
                self.run_commands();
                continue;
            }
            let listener = LISTENER.0 - event.token().0;
            if listener < self.listeners.len() {
                self.accept(listener);
                continue;
            }
            let Some(id) = self.core.id(event.token().0) else {
                continue;
            };
            let closed = event.is_read_closed() || event.is_error();
            if event.is_readable() || closed {
                self.read(id, closed, closed, share);
            }
            if event.is_writable() {
                if let Some(slot) = self.core.get_mut(id) {
                    if !slot.dirty {
                        slot.dirty = true;
                        self.core.dirty.push(id);
                    }
                }
            }
        }
        self.events = events;
        for id in backlog {
            if self.core.get(id).is_some_and(|slot| !slot.unread) {
                self.read(id, false, true, share);
            }
        }
        self.expire(now);
        self.settle();
        self.flush();
        // The listeners raise no new event for what waits in their queues.
        if (self.accept_retry).take_due(self.core.slots.len(), Instant::now()) {
            for listener in 0..self.listeners.len() {
                self.accept(listener);
            }
        }
        Ok(())
    }

    fn poll_timeout(&self, requested: Option<Duration>) -> Option<Duration> {
        if !self.backlog.is_empty() || !self.core.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let timer = (self.core.timers.next())
            .map(|at| self.core.ep.instant(at).saturating_duration_since(now));
        // Wake up for the next accept retry.
        let timer = match (timer, self.accept_retry.timeout(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (requested, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn accept(&mut self, listener: usize) {
        loop {
            let Some(Listener { socket, tls, .. }) = self.listeners.get(listener) else {
                return;
            };
            let (socket, peer) = match socket.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, say: try again later.
                    let open = self.core.slots.len();
                    self.accept_retry.failed(&e, open, Instant::now());
                    return;
                }
            };
            // Over max_connections, the 503 lingers like any refusal (a socket dropped with the
            // request unread resets, and the client may miss the 503); past REFUSAL_SLOTS
            // more, the connection is closed at once.
            let open = self.core.slots.len();
            let max = self.core.config().max_connections;
            if open >= max + REFUSAL_SLOTS {
                self.core.counters.refused_limit += 1;
                if let Some(n) = self.refused.add(1, Instant::now()) {
                    log::warn!(
                        "{peer}: dropped, max_connections reached and refusals pending ({n} \
                         refused or dropped since the last warning)"
                    );
                }
                continue;
            }
            let _ = socket.set_nodelay(true);
            let mut io = match tls {
                None => Transport::Plain(socket),
                Some(tls) => match Transport::tls(socket, tls) {
                    Ok(io) => io,
                    Err(e) => {
                        log::warn!("{peer}: cannot start TLS: {e}");
                        continue;
                    }
                },
            };
            let generation = self.core.generation();
            let mut conn = Connection::server(&mut self.core.ep);
            self.core.counters.accepted += 1;
            if open >= max {
                self.core.counters.refused_limit += 1;
                if let Some(n) = self.refused.add(1, Instant::now()) {
                    log::warn!(
                        "{peer}: refused with 503, max_connections reached ({n} refused or \
                         dropped since the last warning)"
                    );
                }
                let refusal = HttpResponse::text(503, "too many connections");
                conn.reject(&mut self.core.ep, &refusal);
            }
            let entry = self.core.slots.vacant_entry();
            let index = entry.key();
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut io, Token(index), Interest::READABLE)
            {
                log::warn!("{peer}: cannot register: {e}");
                continue;
            }
            entry.insert(Slot {
                io,
                conn,
                generation,
                state: None,
                armed: UNARMED,
                wants_write: false,
                dirty: false,
                unread: false,
                backlogged: false,
                write_shut: false,
                charged: 0,
            });
            self.core.settle_conn(ConnId::new(index, generation));
        }
    }

    /// Reads from `id` until `WouldBlock` (or `budget` bytes, its share of the turn) and
    /// handles what came: read into the buffer, hand the bytes to the connection, dispatch its
    /// events, settle its deadline and write interest.
    ///
    /// A plain TCP read that fills less than the buffer has drained the socket: unless the
    /// event said the peer closed (`drain`), the `WouldBlock` read that would follow is
    /// skipped, since new bytes raise a new edge. That saves a syscall per message batch.
    /// Then what the connection was sent meanwhile is written at once, not at the end of the
    /// turn (other connections' sends to it later in the turn still go out then).
    fn read(&mut self, id: ConnId, peer_closed: bool, drain: bool, mut budget: usize) {
        loop {
            let core = &mut self.core;
            let Some(slot) = lookup(&mut core.slots, id) else {
                return;
            };
            if !slot.conn.wants_read() {
                // Lingering: what the peer sends is not read; its end of stream ends it
                // (after a last try at writing what is queued: a half-closed peer reads it).
                if peer_closed {
                    // Unless all was written and the shutdown done (no second shutdown).
                    if slot.conn.buffered() > 0 || slot.io.wants_write() || !slot.write_shut {
                        let _ = self.flush_one(id);
                    }
                    self.drop_conn(id);
                }
                return;
            }
            let mut input = slot.conn.input(&mut core.ep, &mut self.scratch);
            // Within the budget even when the room is a large frame's megabytes.
            let room = input.room();
            let asked = room.len().min(budget);
            let room = &mut room[..asked];
            let result = slot.io.read(room);
            let drained = SHORT_READ_DRAINS
                && !drain
                && slot.io.is_plain()
                && result.as_ref().is_ok_and(|&n| n < asked);
            let n = match result {
                Ok(n) if n > 0 => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    slot.conn.end_input(&mut core.ep, input);
                    // TLS handshake records that the socket did not take yet.
                    if slot.io.wants_write() && !slot.dirty {
                        slot.dirty = true;
                        core.dirty.push(id);
                    }
                    // Drained without the shortcut: answer now all the same.
                    return self.answer_now(id);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    slot.conn.end_input(&mut core.ep, input);
                    continue;
                }
                result => {
                    if let Err(e) = result {
                        log::debug!("{id}: read failed: {e}");
                        core.counters.tls_failed += u64::from(slot.io.handshaking());
                    }
                    slot.conn.end_input(&mut core.ep, input);
                    return self.drop_conn(id);
                }
            };
            input.filled(n);
            core.counters.bytes_in += n as u64;
            while let Some(slot) = lookup(&mut core.slots, id) {
                let Some(event) = slot.conn.poll_event(&mut core.ep, &mut input) else {
                    break;
                };
                on_event(core, &mut self.handler, id, event);
            }
            let frames = input.frames();
            match lookup(&mut core.slots, id) {
                Some(slot) if slot.conn.is_finished() => {
                    // Dropped at once by a send from the handler: its on_close first.
                    input.release(&mut core.ep);
                    self.settle();
                    self.remove(id);
                    return;
                }
                Some(slot) => {
                    slot.conn.end_input(&mut core.ep, input);
                    // Input counts against the reactor-wide budget.
                    recharge(slot, &mut core.buffered);
                    Core::settle_slot(slot, id, &mut core.dirty, &mut core.timers, &core.ep);
                }
                None => input.release(&mut core.ep),
            }
            core.shed();
            budget = budget.saturating_sub(n + frames * FRAME_COST);
            if budget == 0 {
                // Once in the backlog is enough, however often the budget is spent.
                if let Some(slot) = self.core.get_mut(id).filter(|slot| !slot.unread) {
                    slot.unread = true;
                    self.backlog.push(id);
                }
                return;
            }
            if drained {
                return self.answer_now(id);
            }
        }
    }

    /// Writes what `id` was sent while its bytes were handled, now that its socket is drained,
    /// rather than after every other ready connection's turn: a request-response peer waits
    /// for it (this cuts the echo's p99 latency). A backlogged queue waits for WRITABLE (and
    /// its `on_drain`) as before.
    #[inline]
    fn answer_now(&mut self, id: ConnId) {
        if self.core.get(id).is_some_and(|c| c.dirty && !c.backlogged) {
            if let Err(e) = self.flush_one(id) {
                log::debug!("{id}: write failed: {e}");
                self.drop_conn(id);
            }
        }
    }

    /// Handles due deadlines: handshake and close timeouts, keepalive pings, idle timeouts.
    fn expire(&mut self, now: Instant) {
        let due = self.core.ep.now_millis();
        while let Some((at, index, generation)) = self.core.timers.pop_due(due) {
            let id = ConnId::new(index as usize, generation);
            let core = &mut self.core;
            let Some(slot) = lookup(&mut core.slots, id) else {
                continue;
            };
            if slot.armed != at {
                continue;
            }
            slot.armed = UNARMED;
            let event = slot.conn.handle_timeout(&mut core.ep, now);
            let finished = slot.conn.is_finished();
            if let Some(Event::Closed(why)) = event {
                notify_close(core, &mut self.handler, id, why);
            }
            if finished {
                self.remove(id);
            } else {
                self.core.settle_conn(id);
            }
        }
    }

    /// Makes the `on_close` calls owed for connections closed during handler calls.
    fn settle(&mut self) {
        while let Some((id, why)) = self.core.closed.pop() {
            notify_close(&mut self.core, &mut self.handler, id, why);
            // Dropped at once (an overflow with no room left for its close frame).
            if self.core.get(id).is_some_and(|c| c.conn.is_finished()) {
                self.remove(id);
            }
        }
    }

    /// Writes every connection's queued bytes until its queue is empty or its socket is full
    /// (what is left goes out when the socket is writable again). Each turn ends with it; call
    /// it to push out what was queued through [`context`](Self::context) between turns.
    pub fn flush(&mut self) {
        // Handlers may send again from on_drain; a few rounds, then the next turn goes on.
        for _ in 0..4 {
            if self.core.dirty.is_empty() {
                return;
            }
            let mut drained = Vec::new();
            for id in std::mem::take(&mut self.core.dirty) {
                // Written already (answered right after its read, say).
                if !self.core.get(id).is_some_and(|c| c.dirty) {
                    continue;
                }
                match self.flush_one(id) {
                    Ok(true) => drained.push(id),
                    Ok(false) => {}
                    Err(e) => {
                        log::debug!("{id}: write failed: {e}");
                        self.drop_conn(id);
                    }
                }
            }
            for id in drained {
                if self.core.get(id).is_some_and(|c| c.conn.is_open()) {
                    let mut ctx = Context {
                        core: &mut self.core,
                    };
                    self.handler.on_drain(&mut ctx, id);
                }
            }
            self.settle();
        }
    }

    /// Writes `id`'s queue; `Ok(true)` when it drained after having had to wait.
    fn flush_one(&mut self, id: ConnId) -> io::Result<bool> {
        let core = &mut self.core;
        let Some(conn) = lookup(&mut core.slots, id) else {
            return Ok(false);
        };
        conn.dirty = false;
        conn.io.flush_tls()?;
        loop {
            let bytes = conn.conn.transmit();
            if bytes.is_empty() {
                break;
            }
            match conn.io.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    core.counters.bytes_out += n as u64;
                    conn.conn.advance(&mut core.ep, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // What was written no longer counts.
        recharge(conn, &mut core.buffered);
        if conn.conn.wants_shutdown() {
            // All said: TLS close_notify, then the FIN once the socket took everything.
            if !conn.write_shut {
                conn.write_shut = true;
                conn.io.close_notify();
                conn.io.flush_tls()?;
            }
            if !conn.io.wants_write() {
                let _ = conn.io.shutdown_write();
            }
        }
        let registry = self.poll.registry();
        let token = Token(id.index as usize);
        if conn.conn.buffered() > 0 || conn.io.wants_write() {
            if !conn.wants_write {
                registry.reregister(
                    &mut conn.io,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                conn.wants_write = true;
            }
            conn.backlogged = true;
            return Ok(false);
        }
        if conn.wants_write {
            registry.reregister(&mut conn.io, token, Interest::READABLE)?;
            conn.wants_write = false;
        }
        Ok(std::mem::take(&mut conn.backlogged))
    }

    /// Ends `id` after its transport ended (end of stream, an I/O error).
    fn drop_conn(&mut self, id: ConnId) {
        self.end_conn(id, CloseReason::Disconnected);
    }

    /// Ends `id`'s transport: tells the application `why` if the connection owes it an
    /// `on_close` (see [`Connection::handle_disconnect`]), then removes it.
    fn end_conn(&mut self, id: ConnId, why: CloseReason<'static>) {
        let core = &mut self.core;
        let owed = lookup(&mut core.slots, id).and_then(|c| c.conn.handle_disconnect(&mut core.ep));
        if owed.is_some() {
            notify_close(&mut self.core, &mut self.handler, id, why);
        }
        self.remove(id);
    }

    /// Removes `id` from the slab, its topics and the poll (its `on_close`, if owed, has been
    /// called).
    fn remove(&mut self, id: ConnId) {
        if self.core.get(id).is_none() {
            return;
        }
        let mut slot = self.core.slots.remove(id.index as usize);
        self.core.topics.unsubscribe_all(id);
        self.core.buffered -= slot.charged as usize;
        let _ = self.poll.registry().deregister(&mut slot.io);
        slot.conn.handle_disconnect(&mut self.core.ep);
    }
}

/// Calls `on_close` and then drops the connection's state.
fn notify_close<H: Handler>(
    core: &mut Core<H::State>,
    handler: &mut H,
    id: ConnId,
    why: CloseReason<'_>,
) {
    core.counters.closed(&why);
    handler.on_close(&mut Context { core: &mut *core }, id, why);
    if let Some(slot) = lookup(&mut core.slots, id) {
        slot.state = None;
        core.topics.unsubscribe_all(id);
    }
}

impl<H: Handler> Drop for Server<H> {
    fn drop(&mut self) {
        // Relays stop once every server they deliver to is gone.
        self.commands
            .handle
            .shared
            .stopped
            .store(true, Ordering::Release);
    }
}

/// Handles one event of connection `id`: the upgrade request, a message, the end (inlined
/// into the read loop: it runs once per message).
#[inline]
fn on_event<H: Handler>(core: &mut Core<H::State>, handler: &mut H, id: ConnId, event: Event<'_>) {
    match event {
        Event::Message(msg) => {
            core.counters.messages_in += 1;
            handler.on_message(&mut Context { core }, id, msg);
            return;
        }
        Event::Request(head) => {
            if upgrade(core, handler, id, head) {
                core.settle_conn(id);
                handler.on_open(&mut Context { core }, id);
            }
        }
        Event::Closed(why) => notify_close(core, handler, id, why),
        Event::Ping(_) | Event::Pong(_) | Event::Opened { .. } | Event::Refused(_) => {}
    }
    core.settle_conn(id);
}

/// Answers the upgrade request `head` with the handler's decision; true if it was accepted.
fn upgrade<H: Handler>(
    core: &mut Core<H::State>,
    handler: &mut H,
    id: ConnId,
    head: &[u8],
) -> bool {
    let Some(slot) = lookup(&mut core.slots, id) else {
        return false;
    };
    // The peer's address, from the socket (the connection does not keep it); a peer that is
    // gone already has nothing to be answered.
    let Ok(peer) = slot.io.socket().peer_addr() else {
        log::debug!("{id}: the peer left before its request was answered");
        slot.conn.linger(&core.ep);
        return false;
    };
    let mut state = None;
    let opened = slot.conn.answer(&mut core.ep, head, |req| {
        if !req.wants_websocket() {
            return Err(handler.on_http(req, peer));
        }
        match handler.on_upgrade(req, peer) {
            Upgrade::Accept { protocol, state: s } => {
                state = Some(s);
                Ok(protocol)
            }
            Upgrade::Reject(resp) => Err(resp),
        }
    });
    if opened {
        slot.state = state;
    }
    opened
}
