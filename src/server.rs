//! The reactor: one `mio::Poll` over a listening socket and a slab of connections.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::accept::AcceptRetry;
use crate::buffer::TxBuf;
use crate::conn::{Compress, Conn, Parse, Phase, Rx};
use crate::context::{lookup, Core};
use crate::handle::{Command, Commands, Handle, Shared};
use crate::proto::deflate::{self, Inflater};
use crate::proto::frame::OpCode;
use crate::proto::handshake::{
    write_accept, HttpResponse, ParseError, Rejection, Request, MAX_HEADERS,
};
use crate::proto::message::{Decoded, Event};
use crate::proto::{CloseCode, Role};
use crate::timer::{span, UNARMED};
use crate::tls::TlsConfig;
use crate::topics::Subscriptions;
use crate::transport::Transport;
use crate::{CloseReason, Config, ConnId, Context, Error, Handler, Message, Relay, Upgrade};

/// Wakes the reactor for commands from [`Handle`]s.
const WAKER: Token = Token(usize::MAX);
/// The first listener; the others count down from it.
const LISTENER: Token = Token(usize::MAX - 1);
/// Most bytes read from one connection in one turn, so that a fast sender cannot starve the
/// others; the rest is read on the next turn.
const READ_BUDGET: usize = 1 << 20;
/// What a frame costs of the read budget on top of its bytes: about what decoding one costs,
/// in bytes unmasked in the same time.
const FRAME_COST: usize = 128;
/// Whether a short read on a plain socket counts as drained, sparing the `WouldBlock` read:
/// sound with epoll, which raises an edge for every arrival, so Linux only (kqueue and
/// Windows' AFD polling make no such promise that mio documents).
const SHORT_READ_DRAINS: bool = cfg!(target_os = "linux");
/// The smallest read into a connection's own buffer.
const MIN_READ: usize = 16 * 1024;
/// Connections beyond `max_connections` that may linger while their 503 goes out.
const REFUSAL_SLOTS: usize = 64;

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
    /// Issue 14 (1): accepting again after it failed for lack of descriptors.
    accept_retry: AcceptRetry,
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
        // Issue 14 (1): no more connections than the process has descriptors for.
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
        self.shutdown(self.core.config.close_timeout)
    }

    /// Shuts down gracefully: carries out pending handle commands, stops accepting, closes
    /// every open connection with 1001 (going away), runs turns until their close handshakes
    /// are done or `grace` has passed, and drops what is left.
    pub fn shutdown(&mut self, grace: Duration) -> Result<(), Error> {
        self.run_commands();
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        let ids: Vec<ConnId> = (self.core.conns.iter())
            .map(|(index, c)| ConnId {
                index: index as u32,
                generation: c.generation,
            })
            .collect();
        for id in ids {
            match self.core.get(id).map(|c| c.phase) {
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
        while !self.core.conns.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.turn(Some(left))?;
        }
        let rest: Vec<ConnId> = (0..self.core.conns.capacity())
            .filter_map(|index| self.core.id(index))
            .collect();
        for id in rest {
            self.drop_conn(id, CloseReason::TimedOut);
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
            // Issue 14 (5): out of the queue, out of its byte count.
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
        self.core.now = self.core.timers.millis(Instant::now());
        // Issue 14 (2): connections left over from the last turn; one read again by this
        // turn's events has had its budget and is not read twice.
        let backlog = std::mem::take(&mut self.backlog);
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
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
                self.read(id, closed);
            }
            if event.is_writable() {
                if let Some(conn) = self.core.get_mut(id) {
                    if !conn.dirty {
                        conn.dirty = true;
                        self.core.dirty.push(id);
                    }
                }
            }
        }
        self.events = events;
        for id in backlog {
            if !self.backlog.contains(&id) {
                self.read(id, true);
            }
        }
        self.expire();
        self.settle();
        self.flush();
        // Issue 14 (1): the listeners raise no new event for what waits in their queues.
        if (self.accept_retry).take_due(self.core.conns.len(), Instant::now()) {
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
        let timer = self
            .core
            .timers
            .next()
            .map(|at| at.saturating_duration_since(now));
        // Issue 14 (1): wake up for the next accept retry.
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
                    // Issue 14 (1): out of descriptors, say: try again later.
                    let open = self.core.conns.len();
                    self.accept_retry.failed(&e, open, Instant::now());
                    return;
                }
            };
            // Issue 14 (7): over max_connections, the 503 lingers like any refusal (a socket
            // dropped with the request unread resets, and the client may miss the 503);
            // past REFUSAL_SLOTS more, the connection is closed at once.
            let open = self.core.conns.len();
            let over = open >= self.core.config.max_connections;
            if over && open >= self.core.config.max_connections + REFUSAL_SLOTS {
                log::warn!("{peer}: dropped, max_connections reached and refusals pending");
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
            let now = self.core.now;
            let generation = self.core.generation();
            let entry = self.core.conns.vacant_entry();
            let index = entry.key();
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut io, Token(index), Interest::READABLE)
            {
                log::warn!("{peer}: cannot register: {e}");
                continue;
            }
            entry.insert(Conn {
                io,
                generation,
                phase: Phase::Handshake,
                rx: Rx::new(self.core.config.max_message_size),
                tx: TxBuf::default(),
                compress: Compress::Off,
                topics: Subscriptions::default(),
                state: None,
                last_seen: now,
                deadline: now + span(self.core.config.handshake_timeout),
                armed: UNARMED,
                ping_sent: false,
                wants_write: false,
                dirty: false,
                backlogged: false,
                write_shut: false,
                charged: 0,
            });
            let id = ConnId {
                index: index as u32,
                generation,
            };
            self.core.arm(id);
            if over {
                log::warn!("{peer}: refused, max_connections reached");
                refuse(
                    &mut self.core,
                    id,
                    HttpResponse::text(503, "too many connections"),
                    &[],
                );
            }
        }
    }

    /// Reads from `id` until `WouldBlock` (or its budget is spent) and handles what came.
    ///
    /// On Linux, a plain TCP read that fills less than the buffer has drained the socket:
    /// unless the event said the peer closed (`drain`), the `WouldBlock` read that would
    /// follow is skipped, since epoll raises a new edge for any bytes that arrive later. That
    /// saves a syscall per message batch. Once drained, what the connection was sent
    /// meanwhile is written at once, not at the end of the turn (other connections' sends to
    /// it later in the turn still go out then).
    fn read(&mut self, id: ConnId, drain: bool) {
        let mut budget = READ_BUDGET;
        let now = self.core.now;
        loop {
            let Some(conn) = lookup(&mut self.core.conns, id) else {
                return;
            };
            // Bytes go to the shared buffer unless the connection holds a partial frame.
            let into_scratch = conn.rx.buf.is_empty() || conn.phase == Phase::Linger;
            let (result, asked) = if into_scratch {
                (conn.io.read(&mut self.scratch), self.scratch.len())
            } else {
                let spare =
                    conn.rx
                        .buf
                        .spare(conn.rx.parse.want as usize, MIN_READ, &mut self.core.pool);
                let asked = spare.len();
                (conn.io.read(spare), asked)
            };
            // Issue 14 (8): the short-read shortcut relies on epoll's edges (Linux only).
            let drained = SHORT_READ_DRAINS
                && !drain
                && conn.io.is_plain()
                && result.as_ref().is_ok_and(|&n| n < asked);
            let n = match result {
                Ok(0) => return self.drop_conn(id, CloseReason::Disconnected),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // TLS handshake records that the socket did not take yet.
                    if conn.io.wants_write() && !conn.dirty {
                        conn.dirty = true;
                        self.core.dirty.push(id);
                    }
                    // Issue 14 (8): drained without the shortcut: answer now all the same.
                    return self.answer_now(id);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("{id}: read failed: {e}");
                    return self.drop_conn(id, CloseReason::Disconnected);
                }
            };
            conn.last_seen = now;
            // After a keepalive ping the next one is due again; with no idle timeout no
            // deadline may be armed at all, so arm it (once per ping, not per read).
            let rearm = std::mem::take(&mut conn.ping_sent);
            let mut frames = 0;
            if conn.phase != Phase::Linger {
                let mut rx = std::mem::replace(&mut conn.rx, Rx::new(0));
                let bytes = if into_scratch {
                    &mut self.scratch[..n]
                } else {
                    rx.buf.filled(n);
                    rx.buf.bytes_mut()
                };
                let (core, handler) = (&mut self.core, &mut self.handler);
                let used = dispatch(core, handler, id, &mut rx.parse, bytes, &mut frames);
                if !into_scratch {
                    rx.buf.consume(used, &mut self.core.pool);
                } else if used < n {
                    let want = rx.parse.want as usize;
                    rx.buf
                        .keep(&self.scratch[used..n], want, &mut self.core.pool);
                }
                match self.core.get_mut(id) {
                    Some(conn) => conn.rx = rx,
                    None => rx.buf.release(&mut self.core.pool),
                }
                // Issue 14 (5): input counts against the reactor-wide budget.
                self.core.recharge(id);
                self.core.shed();
            }
            if rearm {
                self.core.arm(id);
            }
            // Issue 14 (2): frames count too, so that a flood of tiny frames gets no more time.
            budget = budget.saturating_sub(n + frames * FRAME_COST);
            if budget == 0 {
                // Issue 14 (2): once per turn, however many times it is read (each entry is
                // a read of up to READ_BUDGET: a search costs little next to one).
                if !self.backlog.contains(&id) {
                    self.backlog.push(id);
                }
                return;
            }
            if drained {
                return self.answer_now(id);
            }
        }
    }

    /// Flushes `id` once its socket is drained, rather than after every other ready
    /// connection's turn: a request-response peer waits for it (this cuts the echo's p99
    /// latency). A backlogged queue waits for WRITABLE (and its `on_drain`) as before.
    fn answer_now(&mut self, id: ConnId) {
        if self.core.get(id).is_some_and(|c| c.dirty && !c.backlogged) {
            if let Err(e) = self.flush_one(id) {
                log::debug!("{id}: write failed: {e}");
                self.drop_conn(id, CloseReason::Disconnected);
            }
        }
    }

    /// Handles due deadlines: handshake and close timeouts, keepalive pings, idle timeouts.
    fn expire(&mut self) {
        let now = self.core.now;
        while let Some((at, index, generation)) = self.core.timers.pop_due(now) {
            let id = ConnId { index, generation };
            let config = &self.core.config;
            let Some(conn) = lookup(&mut self.core.conns, id) else {
                continue;
            };
            if conn.armed != at {
                continue;
            }
            conn.armed = UNARMED;
            let idle = config
                .idle_timeout
                .is_some_and(|d| now >= conn.last_seen + span(d));
            let ping = config
                .ping_interval
                .is_some_and(|d| now >= conn.last_seen + span(d));
            match conn.phase {
                Phase::Handshake | Phase::Linger if now >= conn.deadline => {
                    log::debug!("{id}: {:?} timed out", conn.phase);
                    self.remove(id);
                    continue;
                }
                Phase::Closing if now >= conn.deadline => {
                    self.drop_conn(id, CloseReason::TimedOut);
                    continue;
                }
                Phase::Open if idle => {
                    self.core.fail(id, CloseCode::GOING_AWAY, "idle timeout");
                    notify_close(&mut self.core, &mut self.handler, id, CloseReason::TimedOut);
                }
                Phase::Open if ping && !conn.ping_sent => {
                    conn.ping_sent = true;
                    let _ = self.core.send_frame(id, OpCode::Ping, b"", false);
                }
                _ => {}
            }
            self.core.arm(id);
        }
    }

    /// Makes the `on_close` calls owed for connections closed during handler calls.
    fn settle(&mut self) {
        while let Some((id, why)) = self.core.closed.pop() {
            notify_close(&mut self.core, &mut self.handler, id, why);
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
                match self.flush_one(id) {
                    Ok(true) => drained.push(id),
                    Ok(false) => {}
                    Err(e) => {
                        log::debug!("{id}: write failed: {e}");
                        self.drop_conn(id, CloseReason::Disconnected);
                    }
                }
            }
            for id in drained {
                if self.core.get(id).is_some_and(|c| c.phase == Phase::Open) {
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
        let Some(conn) = core.conns.get_mut(id.index as usize) else {
            return Ok(false);
        };
        if conn.generation != id.generation {
            return Ok(false);
        }
        conn.dirty = false;
        conn.io.flush_tls()?;
        while conn.tx.len() > 0 {
            match conn.io.write(conn.tx.pending()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => conn.tx.advance(n, &mut core.pool),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Issue 14 (5): what was written no longer counts.
        crate::context::recharge(conn, &mut core.buffered);
        if conn.tx.len() == 0 && conn.phase == Phase::Linger {
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
        if conn.tx.len() > 0 || conn.io.wants_write() {
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

    /// Ends `id`: tells the application if it knew the connection as open, then removes it.
    fn drop_conn(&mut self, id: ConnId, why: CloseReason<'_>) {
        let owed = self
            .core
            .get(id)
            .is_some_and(|c| matches!(c.phase, Phase::Open | Phase::Closing));
        if owed {
            notify_close(&mut self.core, &mut self.handler, id, why);
        }
        self.remove(id);
    }

    fn remove(&mut self, id: ConnId) {
        if self.core.get(id).is_none() {
            return;
        }
        let mut conn = self.core.conns.remove(id.index as usize);
        self.core.buffered -= conn.charged; // Issue 14 (5)
        let _ = self.poll.registry().deregister(&mut conn.io);
        conn.rx.buf.release(&mut self.core.pool);
        conn.tx.release(&mut self.core.pool);
    }
}

/// Calls `on_close` and then drops the connection's state.
fn notify_close<H: Handler>(
    core: &mut Core<H::State>,
    handler: &mut H,
    id: ConnId,
    why: CloseReason<'_>,
) {
    handler.on_close(&mut Context { core: &mut *core }, id, why);
    if let Some(conn) = lookup(&mut core.conns, id) {
        conn.state = None;
        core.topics
            .unsubscribe_all(id, std::mem::take(&mut conn.topics));
        if conn.phase != Phase::Linger {
            conn.phase = Phase::Linger;
        }
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

/// Handles `bytes` received on `id`: the upgrade request, then frames, counted in `frames`.
/// Returns how many bytes were used; the rest (a partial head or frame) is kept for the next
/// read.
fn dispatch<H: Handler>(
    core: &mut Core<H::State>,
    handler: &mut H,
    id: ConnId,
    rx: &mut Parse,
    bytes: &mut [u8],
    frames: &mut usize,
) -> usize {
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(phase) = core.get(id).map(|c| c.phase) else {
            return bytes.len();
        };
        match phase {
            Phase::Linger => return bytes.len(),
            Phase::Handshake => match handshake(core, handler, id, rx, &bytes[pos..]) {
                Some(used) => pos += used,
                None => return pos,
            },
            Phase::Open | Phase::Closing => match rx.decoder.decode(&mut bytes[pos..]) {
                Err(e) => {
                    log::debug!("{id}: protocol error: {e}");
                    core.fail(id, e.close_code(), e.as_str());
                    notify_close(core, handler, id, CloseReason::ProtocolError(e));
                    return bytes.len();
                }
                Ok(Decoded::Incomplete { frame_len }) => {
                    rx.want = frame_len.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
                    return pos;
                }
                Ok(Decoded::Frame { len, event }) => {
                    *frames += 1;
                    if let Some(event) = event {
                        on_event(core, handler, id, phase, event);
                    }
                    pos += len;
                }
            },
        }
    }
    rx.decoder.release();
    rx.want = 0;
    pos
}

/// Handles one decoded event of an open (or closing) connection.
fn on_event<H: Handler>(
    core: &mut Core<H::State>,
    handler: &mut H,
    id: ConnId,
    phase: Phase,
    event: Event<'_>,
) {
    let open = phase == Phase::Open;
    match event {
        Event::Text(text) if open => {
            handler.on_message(&mut Context { core }, id, Message::Text(text));
        }
        Event::Binary(bytes) if open => {
            handler.on_message(&mut Context { core }, id, Message::Binary(bytes));
        }
        Event::Ping(payload) if open => {
            // Queued now and flushed at the end of this turn.
            let _ = core.send_frame(id, OpCode::Pong, payload, false);
        }
        Event::Close(code, reason) => {
            // Echo the peer's code (RFC 6455 section 5.5.1); none if it sent none.
            core.close_frame(id, code, "", Phase::Linger);
            notify_close(core, handler, id, CloseReason::Closed { code, reason });
        }
        _ => {}
    }
}

/// Handles the upgrade request. Returns the bytes it used, or `None` if the head is not
/// complete yet.
fn handshake<H: Handler>(
    core: &mut Core<H::State>,
    handler: &mut H,
    id: ConnId,
    rx: &mut Parse,
    bytes: &[u8],
) -> Option<usize> {
    let max = core.config.max_handshake_size;
    let end = match rx.scanner.find_end(bytes) {
        Some(end) if end <= max => end,
        None if bytes.len() < max => return None,
        _ => {
            return Some(refuse(
                core,
                id,
                Rejection::HeadersTooLarge.response(),
                bytes,
            ))
        }
    };
    // The peer's address, from the socket (the connection does not keep it); a peer that is
    // gone already has nothing to be answered.
    let Ok(peer) = core.get(id)?.io.socket().peer_addr() else {
        log::debug!("{id}: the peer left before its request was answered");
        linger(core, id);
        return Some(bytes.len());
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = match Request::parse(&bytes[..end], &mut storage) {
        Ok(req) => req,
        Err(ParseError::TooManyHeaders) => {
            return Some(refuse(
                core,
                id,
                Rejection::HeadersTooLarge.response(),
                bytes,
            ))
        }
        Err(ParseError::Malformed) => {
            let resp = Rejection::BadRequest("malformed request").response();
            return Some(refuse(core, id, resp, bytes));
        }
    };
    if !req.wants_websocket() && req.method() == "GET" {
        let resp = handler.on_http(&req, peer);
        return Some(refuse(core, id, resp, bytes));
    }
    let key = match req.validate_upgrade() {
        Ok(key) => key,
        Err(rejection) => return Some(refuse(core, id, rejection.response(), bytes)),
    };
    let origins = &core.config.allowed_origins;
    if let Some(origin) = req.origin().filter(|_| !origins.is_empty()) {
        if !origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin.trim()))
        {
            let resp = HttpResponse::text(403, "origin not allowed");
            return Some(refuse(core, id, resp, bytes));
        }
    }
    let (protocol, state) = match handler.on_upgrade(&req, peer) {
        Upgrade::Accept { protocol, state } => (protocol, state),
        Upgrade::Reject(resp) => return Some(refuse(core, id, resp, bytes)),
    };
    if let Some(p) = &protocol {
        if !req.protocols().any(|offered| offered == p) {
            log::error!("{id}: handler chose subprotocol {p:?}, which the client did not offer");
            let resp = HttpResponse::text(500, "server chose an unoffered subprotocol");
            return Some(refuse(core, id, resp, bytes));
        }
    }
    let deflate = core.config.deflate.as_ref().and_then(|cfg| {
        let offers = req.header_values("sec-websocket-extensions");
        deflate::negotiate(offers.map(str::as_bytes), cfg)
    });
    let extensions = deflate.map(|params| params.response_header_value());
    let conn = lookup(&mut core.conns, id)?;
    if let Some(params) = deflate {
        rx.decoder.set_inflater(Inflater::new(params, Role::Server));
        conn.compress = core.compressors.mode(params);
    }
    // A buffer of the answer's size rather than a pool buffer: a burst of handshakes then
    // touches a few hundred bytes each, not 16 KiB buffers that stay resident.
    let mut accept = Vec::with_capacity(256);
    write_accept(&mut accept, key, protocol.as_deref(), extensions.as_deref());
    conn.tx.adopt(accept, &mut core.pool);
    conn.phase = Phase::Open;
    conn.state = Some(state);
    if !conn.dirty {
        conn.dirty = true;
        core.dirty.push(id);
    }
    core.arm(id);
    handler.on_open(&mut Context { core }, id);
    Some(end)
}

/// Answers `id` with an HTTP response and lets it linger until closed; discards `bytes`.
fn refuse<S>(core: &mut Core<S>, id: ConnId, resp: HttpResponse, bytes: &[u8]) -> usize {
    log::debug!("{id}: answered {}", resp.status());
    let mut out = Vec::new();
    resp.write_to(&mut out);
    core.queue_raw(id, &out);
    linger(core, id);
    bytes.len()
}

/// Lets `id` linger: its queued bytes go out, then it waits (at most `close_timeout`) for the
/// peer to close.
fn linger<S>(core: &mut Core<S>, id: ConnId) {
    let deadline = core.now + span(core.config.close_timeout);
    if let Some(conn) = core.get_mut(id) {
        conn.phase = Phase::Linger;
        conn.deadline = deadline;
    }
    core.arm(id);
}
