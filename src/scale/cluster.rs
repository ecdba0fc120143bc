//! Several reactors, one per thread, serving one address: [`Cluster`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{
    Config, ConfigError, Error, Handle, HandleError, Handler, Message, Metrics, Relay, Server,
    TlsConfig,
};

/// Backlog of each listening socket (as `mio` uses).
const BACKLOG: i32 = 1024;

/// N reactors on N threads serving one address, with publishes shared between them: how
/// wsloop uses more than one core.
///
/// Build it with [`bind`](Self::bind) (or [`bind_tls`](Self::bind_tls)), keep a
/// [`handle`](Self::handle), add relays if any, then [`run`](Self::run) it.
///
/// It is N independent [`Server`]s, each with its own listening socket on the same
/// address (`SO_REUSEPORT`: the kernel spreads incoming connections over the listeners), its
/// own poll, slab and handler, and no lock shared with the others. A connection lives on one
/// reactor for its whole life.
///
/// Publishes cross reactors: each server has a relay that hands every local publish to the
/// other reactors' [`Handle::publish_local`], which delivers it to their subscribers without
/// relaying it again (so a publish never loops). `broadcast` and `send` stay on the reactor
/// they are made on.
///
/// ```no_run
/// use std::net::SocketAddr;
/// use wsloop::{Cluster, Config, ConnId, Context, Handler, Message, Request, Upgrade};
///
/// struct Chat;
///
/// impl Handler for Chat {
///     type State = ();
///
///     fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
///         Upgrade::accept(())
///     }
///
///     fn on_open(&mut self, ctx: &mut Context<'_, ()>, id: ConnId) {
///         ctx.subscribe(id, "lobby");
///     }
///
///     fn on_message(&mut self, ctx: &mut Context<'_, ()>, _id: ConnId, msg: Message<'_>) {
///         // Reaches the lobby's subscribers on every reactor.
///         ctx.publish("lobby", msg);
///     }
/// }
///
/// let cluster = Cluster::bind("127.0.0.1:9001", 4, Config::default(), |_reactor| Chat)?;
/// let handle = cluster.handle(); // Send + Clone: publish or shut down from anywhere
/// cluster.run()?; // until handle.shutdown()
/// # Ok::<(), wsloop::Error>(())
/// ```
pub struct Cluster<H: Handler> {
    servers: Vec<Server<H>>,
    handle: ClusterHandle,
    addr: SocketAddr,
    tls: bool,
}

impl<H: Handler> fmt::Debug for Cluster<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("addr", &self.addr)
            .field("reactors", &self.servers.len())
            .field("tls", &self.tls)
            .finish()
    }
}

impl<H> Cluster<H>
where
    H: Handler + Send + 'static,
    H::State: Send,
{
    /// Validates `config` and starts `threads` reactors (at least 1) listening on `addr`
    /// (e.g. `"0.0.0.0:9001"`; port 0 picks a free port, shared by all reactors).
    ///
    /// `make_handler(i)` makes reactor `i`'s handler (`i` in `0..threads`). Every limit of
    /// `config` applies per reactor: the cluster takes up to `threads * max_connections`
    /// connections. On Linux `max_connections` is lowered, with a warning, to each reactor's
    /// share of what the open-files limit leaves, so that the reactors together stay within
    /// it. Reactors share nothing but the listening port and the publishes.
    ///
    /// Only this cluster's reactors share the port: binding fails with [`Error::Bind`] if
    /// anything listens there already, and a second cluster or server started on the same
    /// address fails the same way. (With `threads > 1` the listeners set `SO_REUSEPORT`, so a
    /// program of the same user that sets it too, and checks nothing, could still join them.)
    /// `SO_REUSEPORT` is a Unix option: elsewhere only `threads == 1` is accepted.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid `config` or `threads == 0`, [`Error::Bind`] naming the
    /// address when no listener can be bound (or `threads > 1` without `SO_REUSEPORT`),
    /// [`Error::Io`] when a reactor cannot be created.
    pub fn bind(
        addr: &str,
        threads: usize,
        config: Config,
        make_handler: impl FnMut(usize) -> H,
    ) -> Result<Cluster<H>, Error> {
        Cluster::build(addr, threads, None, config, make_handler)
    }

    /// Like [`bind`](Self::bind), but serves `wss` with `tls` on every reactor.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind).
    pub fn bind_tls(
        addr: &str,
        threads: usize,
        tls: TlsConfig,
        config: Config,
        make_handler: impl FnMut(usize) -> H,
    ) -> Result<Cluster<H>, Error> {
        Cluster::build(addr, threads, Some(tls), config, make_handler)
    }

    fn build(
        addr: &str,
        threads: usize,
        tls: Option<TlsConfig>,
        config: Config,
        mut make_handler: impl FnMut(usize) -> H,
    ) -> Result<Cluster<H>, Error> {
        if threads == 0 {
            return Err(Error::Config {
                option: "threads",
                cause: ConfigError::Zero,
            });
        }
        config.validate()?;
        let bind_err = |source| Error::Bind {
            addr: addr.to_owned(),
            source,
        };
        if threads > 1 && !cfg!(unix) {
            return Err(bind_err(io::Error::new(
                io::ErrorKind::Unsupported,
                "several reactors need SO_REUSEPORT, which this platform lacks",
            )));
        }
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address");
        let mut listeners = None;
        for sa in addr.to_socket_addrs().map_err(bind_err)? {
            match bind_listeners(sa, threads) {
                Ok(l) => {
                    listeners = Some(l);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let listeners = listeners.ok_or_else(|| bind_err(last))?;
        let local = listeners[0].local_addr()?;

        // The reactors share the process's descriptors: each gets its part of them.
        let config = config.within_fd_share(threads);
        let mut servers = Vec::with_capacity(threads);
        for (i, listener) in listeners.into_iter().enumerate() {
            let mut server = Server::new(config.clone(), make_handler(i))?;
            server.listen_on(listener, tls.clone())?;
            servers.push(server);
        }
        let handles: Arc<[Handle]> = servers.iter().map(Server::handle).collect();
        if threads > 1 {
            for (i, server) in servers.iter_mut().enumerate() {
                server.add_relay(PeerRelay::new(i, &handles));
            }
        }
        Ok(Cluster {
            servers,
            handle: ClusterHandle { handles },
            addr: local,
            tls: tls.is_some(),
        })
    }

    /// The address every reactor listens on (with the port picked, if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the cluster serves TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// How many reactors (threads) the cluster runs.
    pub fn threads(&self) -> usize {
        self.servers.len()
    }

    /// A `Send + Clone` handle to every reactor: publish, broadcast, shut down.
    pub fn handle(&self) -> ClusterHandle {
        self.handle.clone()
    }

    /// The reactors' own handles, in reactor order (the `i` given to `make_handler`).
    pub fn handles(&self) -> Vec<Handle> {
        self.handle.handles.to_vec()
    }

    /// Adds `relay` to every reactor (a clone each), to carry their publishes beyond this
    /// process: a broker backplane, say. What it brings back should reach every reactor
    /// through their [`handles`](Self::handles)' `publish_local`.
    pub fn add_relay<R: Relay + Clone + 'static>(&mut self, relay: R) {
        for server in &mut self.servers {
            server.add_relay(relay.clone());
        }
    }

    /// Reactor `i`'s server, to configure it further before [`run`](Self::run) (its
    /// handler, a relay of its own). `None` if `i >= threads()`.
    pub fn server_mut(&mut self, i: usize) -> Option<&mut Server<H>> {
        self.servers.get_mut(i)
    }

    /// Runs every reactor on a thread of its own (named `wsloop-<i>`) until
    /// [`ClusterHandle::shutdown`], then each shuts down gracefully (1001 to every client,
    /// within `close_timeout`); returns when all threads have ended.
    ///
    /// If one reactor fails (an I/O error of its poll) the others are shut down too, and the
    /// first error is returned. If one panics, the others are shut down and the panic is
    /// resumed on this thread once they have ended.
    ///
    /// # Errors
    ///
    /// The first reactor's [`Error`] (an I/O error of its poll).
    pub fn run(self) -> Result<(), Error> {
        let handle = self.handle;
        let mut threads = Vec::with_capacity(self.servers.len());
        for (i, mut server) in self.servers.into_iter().enumerate() {
            let spawned = thread::Builder::new()
                .name(format!("wsloop-{i}"))
                .spawn(move || server.run());
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    let _ = handle.shutdown();
                    for thread in threads {
                        let _ = thread.join();
                    }
                    return Err(Error::Io(e));
                }
            }
        }
        let mut result = Ok(());
        let mut panic = None;
        let mut pending: Vec<Option<thread::JoinHandle<Result<(), Error>>>> =
            threads.into_iter().map(Some).collect();
        // Join in completion order, so that one failing reactor stops the others at once.
        while pending.iter().any(Option::is_some) {
            let mut progressed = false;
            for (i, slot) in pending.iter_mut().enumerate() {
                if !slot.as_ref().is_some_and(|t| t.is_finished()) {
                    continue;
                }
                progressed = true;
                let Some(thread) = slot.take() else { continue };
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        log::error!("reactor {i} failed: {e}");
                        let _ = handle.shutdown();
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                    Err(payload) => {
                        log::error!("reactor {i} panicked");
                        let _ = handle.shutdown();
                        panic.get_or_insert(payload);
                    }
                }
            }
            if !progressed {
                thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        result
    }
}

/// A `Send + Clone` handle to every reactor of a [`Cluster`].
///
/// Like [`Handle`], each call copies the message into the reactors' bounded command queues
/// and never blocks.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    handles: Arc<[Handle]>,
}

impl ClusterHandle {
    /// The reactors' handles, in reactor order.
    pub fn reactors(&self) -> &[Handle] {
        &self.handles
    }

    /// Publishes `msg` to the subscribers of `topic` on every reactor, and to the relays
    /// (through reactor 0, which hands it to the others and to any broker relay).
    ///
    /// # Errors
    ///
    /// [`HandleError::Full`] when reactor 0's command queue is full, [`HandleError::Stopped`] when
    /// it has stopped.
    pub fn publish(&self, topic: &str, msg: Message<'_>) -> Result<(), HandleError> {
        self.handles[0].publish(topic, msg)
    }

    /// Publishes `msg` to the subscribers of `topic` on every reactor, without relaying it:
    /// for a relay delivering what it brought from elsewhere. Every reactor is tried; the
    /// first refusal is returned.
    ///
    /// # Errors
    ///
    /// The first refusal among the reactors: [`HandleError::Full`] for a full command queue,
    /// [`HandleError::Stopped`] for a reactor that has ended.
    pub fn publish_local(&self, topic: &str, msg: Message<'_>) -> Result<(), HandleError> {
        self.each(|h| h.publish_local(topic, msg))
    }

    /// Sends `msg` to every open connection of every reactor. Every reactor is tried; the
    /// first refusal is returned.
    ///
    /// # Errors
    ///
    /// The first refusal among the reactors: [`HandleError::Full`] for a full command queue,
    /// [`HandleError::Stopped`] for a reactor that has ended.
    pub fn broadcast(&self, msg: Message<'_>) -> Result<(), HandleError> {
        self.each(|h| h.broadcast(msg))
    }

    /// The [`Metrics`] of every reactor, summed (see [`Handle::metrics`]; `timeout` is for
    /// each reactor).
    ///
    /// # Errors
    ///
    /// The first reactor's refusal or silence.
    pub fn metrics(&self, timeout: std::time::Duration) -> Result<Metrics, HandleError> {
        let mut sum = Metrics::default();
        for handle in self.handles.iter() {
            sum.add(&handle.metrics(timeout)?);
        }
        Ok(sum)
    }

    /// Asks every reactor to shut down gracefully (see [`Handle::shutdown`]);
    /// [`Cluster::run`] returns once all have. Every reactor is asked; the first refusal is
    /// returned (`Stopped` for a reactor that has already ended).
    ///
    /// # Errors
    ///
    /// The first refusal among the reactors: [`HandleError::Full`] for a full command queue,
    /// [`HandleError::Stopped`] for a reactor that has ended.
    pub fn shutdown(&self) -> Result<(), HandleError> {
        self.each(Handle::shutdown)
    }

    fn each(&self, f: impl Fn(&Handle) -> Result<(), HandleError>) -> Result<(), HandleError> {
        let mut result = Ok(());
        for handle in self.handles.iter() {
            if let Err(e) = f(handle) {
                result = result.and(Err(e));
            }
        }
        result
    }
}

/// Hands every publish of one reactor to the others, which deliver it locally.
struct PeerRelay {
    me: usize,
    peers: Vec<(usize, Handle)>,
    /// Publishes a full peer queue refused since the last warning.
    dropped: u64,
    last_warning: Option<Instant>,
}

impl PeerRelay {
    fn new(me: usize, handles: &[Handle]) -> PeerRelay {
        let peers = (handles.iter().cloned().enumerate())
            .filter(|(i, _)| *i != me)
            .collect();
        PeerRelay {
            me,
            peers,
            dropped: 0,
            last_warning: None,
        }
    }
}

impl Relay for PeerRelay {
    fn publish(&mut self, topic: &str, msg: Message<'_>) {
        for (peer, handle) in &self.peers {
            match handle.publish_local(topic, msg) {
                Ok(()) => {}
                // The peer is shutting down or gone: its subscribers are being closed anyway.
                Err(HandleError::Stopped | HandleError::TimedOut) => {}
                Err(HandleError::Full) => {
                    self.dropped += 1;
                    let now = Instant::now();
                    let due = self
                        .last_warning
                        .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
                    if due {
                        log::warn!(
                            "reactor {}: dropped {} publishes to other reactors (reactor {peer}'s \
                             command queue is full: raise Config::handle_queue or publish less)",
                            self.me,
                            self.dropped,
                        );
                        self.dropped = 0;
                        self.last_warning = Some(now);
                    }
                }
            }
        }
    }
}

/// The `threads` listening sockets of one cluster on `addr` (port 0 allowed: they all get the
/// port the first one got).
///
/// Only these may share the port: one listener is bound without `SO_REUSEPORT`, so that no
/// other socket can join it. Several are bound with `SO_REUSEPORT` (the kernel spreads
/// connections over them), after a guard socket without it has bound the address: the guard's
/// bind fails if anyone listens there already (a second process), and while the guard holds
/// the address (bound, not listening, both with `SO_REUSEADDR`) only our listeners can join.
fn bind_listeners(addr: SocketAddr, threads: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if threads == 1 {
        return Ok(vec![listener(bound(addr, false)?)?]);
    }
    let guard = bound(addr, false)?;
    let addr = guard.local_addr()?.as_socket().unwrap_or(addr);
    (0..threads).map(|_| listener(bound(addr, true)?)).collect()
}

/// A TCP socket bound to `addr` with `SO_REUSEADDR` (a restart need not wait for the old
/// connections' TIME_WAIT) and, if asked, `SO_REUSEPORT`, which neither `std` nor `mio` can
/// set.
fn bound(addr: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port; // `build` refuses several reactors there
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// `socket`, listening and non-blocking.
fn listener(socket: socket2::Socket) -> io::Result<std::net::TcpListener> {
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
