//! A pub/sub backplane through a Redis server, so that topics span processes and machines
//! (cargo feature `redis`).
//!
//! See [`RedisRelay`].

mod resp;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Error, Handle, HandleError, Message, Relay};
use resp::{Push, Value};

/// How often the Redis threads look at their stop conditions.
const TICK: Duration = Duration::from_millis(100);
/// How long the threads go on after every server they deliver to is gone, to pass on what
/// the last handler calls published.
const LINGER: Duration = Duration::from_secs(5);
/// Most commands written to Redis in one batch.
const MAX_BATCH: usize = 512;
/// Most bytes written to Redis in one batch (a batch holds at least one command).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Length of the payload header: the text/binary flag and the origin id.
const HEADER_LEN: usize = 1 + 16;
/// At most one warning of the same kind per this interval.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Options of a [`RedisRelay`]. Start from `RedisOptions::default()` and change what you need
/// with the chainable setters of the same names.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Most publishes waiting for the Redis thread; beyond it they are dropped and counted
    /// (default 65,536).
    pub queue: usize,
    /// First wait before reconnecting to Redis (default 50 ms).
    pub min_backoff: Duration,
    /// The wait doubles after each failed attempt up to this (default 2 s).
    pub max_backoff: Duration,
    /// Time allowed to open a TCP connection to Redis (default 2 s).
    pub connect_timeout: Duration,
    /// Time allowed to write a batch, and for Redis to answer a command (default 5 s); past
    /// it the connection is taken as broken.
    pub io_timeout: Duration,
    /// A PING on the subscribed connection after this much silence; no answer within as much
    /// again and it is taken as broken (default 5 s).
    pub keepalive: Duration,
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions {
            queue: 65_536,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
        }
    }
}

impl RedisOptions {
    /// Sets [`queue`](Self::queue).
    pub fn queue(mut self, value: usize) -> RedisOptions {
        self.queue = value;
        self
    }

    /// Sets [`min_backoff`](Self::min_backoff).
    pub fn min_backoff(mut self, value: Duration) -> RedisOptions {
        self.min_backoff = value;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    pub fn max_backoff(mut self, value: Duration) -> RedisOptions {
        self.max_backoff = value;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, value: Duration) -> RedisOptions {
        self.connect_timeout = value;
        self
    }

    /// Sets [`io_timeout`](Self::io_timeout).
    pub fn io_timeout(mut self, value: Duration) -> RedisOptions {
        self.io_timeout = value;
        self
    }

    /// Sets [`keepalive`](Self::keepalive).
    pub fn keepalive(mut self, value: Duration) -> RedisOptions {
        self.keepalive = value;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |option: &'static str, message: &str| {
            Err(Error::Config {
                option,
                message: message.to_owned(),
            })
        };
        if self.queue == 0 {
            return bad("RedisOptions::queue", "must be at least 1, got 0");
        }
        let durations = [
            ("RedisOptions::min_backoff", self.min_backoff),
            ("RedisOptions::connect_timeout", self.connect_timeout),
            ("RedisOptions::io_timeout", self.io_timeout),
            ("RedisOptions::keepalive", self.keepalive),
        ];
        for (option, value) in durations {
            if value.is_zero() {
                return bad(option, "must be more than zero");
            }
        }
        if self.max_backoff < self.min_backoff {
            return bad("RedisOptions::max_backoff", "must be at least min_backoff");
        }
        Ok(())
    }
}

/// A [`Relay`] that carries publishes to other processes through a Redis server, and
/// delivers theirs to local subscribers.
///
/// ```text
///  process A                                    process B
///  ┌────────────────────────────────────┐       ┌────────────────────────────────────┐
///  │ reactor(s) ──publish──> RedisRelay │       │ reactor(s) ──publish──> RedisRelay │
///  │     ▲                     │ bounded│       │     ▲                     │ bounded│
///  │     │ publish_local       ▼ queue  │       │     │ publish_local       ▼ queue  │
///  │ sub thread            pub thread   │       │ sub thread            pub thread   │
///  └─────▲─────────────────────┼────────┘       └─────▲─────────────────────┼────────┘
///        │ PSUBSCRIBE prefix*  │ PUBLISH prefix+topic │                     │
///  ┌─────┴─────────────────────▼──────────────────────┴─────────────────────▼────────┐
///  │                                  redis-server                                   │
///  └─────────────────────────────────────────────────────────────────────────────────┘
/// ```
///
/// A [`RedisRelay`] is a [`Relay`]: every publish made on the server (by a handler's
/// [`Context::publish`](crate::Context::publish) or a [`Handle::publish`]) is encoded as a
/// `PUBLISH <prefix><topic> <payload>` command on the reactor's thread and put in a bounded
/// queue, never waiting: a dedicated thread sends the queued commands to Redis in pipelined
/// batches. A second thread holds a connection subscribed with `PSUBSCRIBE <prefix>*` and
/// delivers what other processes published through [`Handle::publish_local`], which does not
/// relay again.
///
/// The payload is one byte `T` (text) or `B` (binary), then the publishing relay's origin id
/// (16 lowercase hex digits, random per relay), then the message: a relay skips its own
/// messages (their subscribers had them locally already). Messages in another format on the
/// channels are ignored.
///
/// Delivery is at most once, as with Redis pub/sub itself. When the queue is full, while Redis
/// is unreachable, or when a connection breaks before Redis confirmed a batch, messages are
/// dropped, counted in [`RedisRelay::dropped`], and reported by a `log::warn!` that says how
/// many. Both connections are re-established with a backoff (`min_backoff`, doubling up to
/// `max_backoff`), and the subscription is renewed; each loss and recovery is logged.
///
/// The threads end when [`RedisRelay::shutdown`] is called, when every clone of the relay is
/// dropped (the server dropped its relays), or 5 s (to relay the publishes of the last handler
/// calls) after every server it delivers to is gone: after a graceful shutdown, so departures
/// published while connections close are still passed on.
///
/// ```no_run
/// # use std::net::SocketAddr;
/// # use wsloop::{Config, ConnId, Context, Handler, Message, Request, Upgrade};
/// # struct Chat;
/// # impl Handler for Chat {
/// #     type State = ();
/// #     fn on_upgrade(&mut self, _: &Request<'_, '_>, _: SocketAddr) -> Upgrade<()> {
/// #         Upgrade::accept(())
/// #     }
/// #     fn on_message(&mut self, _: &mut Context<'_, ()>, _: ConnId, _: Message<'_>) {}
/// # }
/// use wsloop::{RedisRelay, Server};
///
/// let mut server = Server::bind("0.0.0.0:9001", Config::default(), Chat)?;
/// let relay = RedisRelay::connect("redis://127.0.0.1:6379", server.handle(), "chat:")?;
/// server.add_relay(relay.clone()); // keep a clone to read `dropped()`, or don't
/// server.run()?;
/// # Ok::<(), wsloop::Error>(())
/// ```
///
/// For a [`Cluster`](crate::Cluster), connect with every reactor's handle and add the relay
/// to every reactor, so that what comes from Redis reaches all of them:
///
/// ```no_run
/// # use std::net::SocketAddr;
/// # use wsloop::{Config, ConnId, Context, Handler, Message, Request, Upgrade};
/// # struct Chat;
/// # impl Handler for Chat {
/// #     type State = ();
/// #     fn on_upgrade(&mut self, _: &Request<'_, '_>, _: SocketAddr) -> Upgrade<()> {
/// #         Upgrade::accept(())
/// #     }
/// #     fn on_message(&mut self, _: &mut Context<'_, ()>, _: ConnId, _: Message<'_>) {}
/// # }
/// use wsloop::{Cluster, RedisOptions, RedisRelay};
///
/// let mut cluster = Cluster::bind("0.0.0.0:9001", 4, Config::default(), |_| Chat)?;
/// let relay = RedisRelay::connect_with(
///     "redis://127.0.0.1:6379",
///     &cluster.handles(),
///     "chat:",
///     RedisOptions::default(),
/// )?;
/// cluster.add_relay(relay);
/// cluster.run()?;
/// # Ok::<(), wsloop::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisRelay {
    tx: SyncSender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRelay")
            .field("redis", &self.shared.target.addr())
            .field("prefix", &String::from_utf8_lossy(&self.shared.prefix))
            .field("origin", &self.origin())
            .field("connected", &self.is_connected())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// What the relay's clones and its two threads share.
struct Shared {
    target: Target,
    prefix: Box<[u8]>,
    /// The PSUBSCRIBE pattern: the prefix with its glob characters escaped, then `*`.
    pattern: Box<[u8]>,
    /// This relay's origin id, 16 lowercase hex digits.
    origin: [u8; 16],
    queue: usize,
    stop: AtomicBool,
    /// Every message lost: not published, or not delivered.
    dropped: AtomicU64,
    /// Publishes refused by a full queue and not yet reported in the log.
    full_unreported: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    running: AtomicUsize,
    /// Topics taken from the reactors by [`RedisRelay::intercept`], with their callbacks.
    intercepts: Mutex<Vec<(Box<str>, Interceptor)>>,
    /// Whether `intercepts` has any (so that delivery need not lock it otherwise).
    intercepting: AtomicBool,
}

/// A callback of [`RedisRelay::intercept`].
type Interceptor = Box<dyn FnMut(Message<'_>) + Send>;

impl RedisRelay {
    /// Connects to the Redis server at `url` (`redis://host:port`, or
    /// `redis://[user]:password@host:port` to authenticate; the port defaults to 6379 and a
    /// `/db` path is ignored, as pub/sub spans databases) for the server behind `handle`,
    /// with channels named `<prefix><topic>`, and the default [`RedisOptions`].
    ///
    /// Returns once both connections are open and the subscription is confirmed, so a
    /// message published by another process after this returns is received. Fails if Redis
    /// cannot be reached now; later outages are survived. Blocks the calling thread for at
    /// most `connect_timeout + io_timeout` per connection; call it before running the server.
    pub fn connect(url: &str, handle: Handle, prefix: &str) -> Result<RedisRelay, Error> {
        RedisRelay::connect_with(url, &[handle], prefix, RedisOptions::default())
    }

    /// Like [`connect`](Self::connect), with options, delivering what comes from Redis to
    /// every one of `handles` (the reactors of a [`Cluster`](crate::Cluster)).
    pub fn connect_with(
        url: &str,
        handles: &[Handle],
        prefix: &str,
        options: RedisOptions,
    ) -> Result<RedisRelay, Error> {
        options.validate()?;
        if handles.is_empty() {
            return Err(Error::Config {
                option: "RedisRelay handles",
                message: "need at least one handle to deliver to".into(),
            });
        }
        let target = Target::parse(url).map_err(|message| Error::Config {
            option: "redis url",
            message,
        })?;
        let origin = {
            let id = crate::proto::message::random_u64() ^ u64::from(std::process::id());
            let hex = format!("{id:016x}");
            let mut origin = [0u8; 16];
            origin.copy_from_slice(hex.as_bytes());
            origin
        };
        let shared = Arc::new(Shared {
            pattern: [&resp::glob_escape(prefix.as_bytes())[..], b"*"]
                .concat()
                .into(),
            prefix: prefix.as_bytes().into(),
            target,
            origin,
            queue: options.queue,
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            full_unreported: AtomicU64::new(0),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            publisher_up: AtomicBool::new(true),
            subscriber_up: AtomicBool::new(true),
            running: AtomicUsize::new(2),
            intercepts: Mutex::new(Vec::new()),
            intercepting: AtomicBool::new(false),
        });
        let context = |what: &str, e: io::Error| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("redis at {}: {what}: {e}", shared.target.addr()),
            ))
        };
        let publisher =
            RespConn::open(&shared.target, &options).map_err(|e| context("cannot connect", e))?;
        let subscriber =
            subscribe(&shared, &options).map_err(|e| context("cannot subscribe", e))?;
        log::info!(
            "redis relay {} connected to {}, channels {}*",
            String::from_utf8_lossy(&shared.origin),
            shared.target.addr(),
            String::from_utf8_lossy(&shared.prefix),
        );
        let (tx, rx) = mpsc::sync_channel(options.queue);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.to_owned())
                .spawn(f)
                .map_err(Error::Io)
        };
        let (s, h, o) = (shared.clone(), handles.to_vec(), options.clone());
        spawn(
            "wsloop-redis-pub",
            Box::new(move || Publisher::new(s, h, o, publisher).run(rx)),
        )
        .inspect_err(|_| {
            shared.running.store(0, Ordering::Release);
        })?;
        let (s, h, o) = (shared.clone(), handles.to_vec(), options);
        spawn(
            "wsloop-redis-sub",
            Box::new(move || Subscriber::new(s, h, o, subscriber).run()),
        )
        .inspect_err(|_| {
            shared.stop.store(true, Ordering::Release);
            shared.running.fetch_sub(1, Ordering::AcqRel);
        })?;
        Ok(RedisRelay { tx, shared })
    }

    /// How many messages were lost so far: publishes not sent to Redis (the queue was full,
    /// Redis was unreachable, or the connection broke before Redis confirmed them) and
    /// messages from Redis that a full reactor queue refused.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// How many publishes Redis confirmed.
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// How many messages from other processes were delivered to the reactors (or to an
    /// [`intercept`](Self::intercept) callback).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Whether both connections to Redis are up (and the subscription is in place).
    pub fn is_connected(&self) -> bool {
        self.shared.publisher_up.load(Ordering::Acquire)
            && self.shared.subscriber_up.load(Ordering::Acquire)
    }

    /// Whether either Redis thread is still running.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire) > 0
    }

    /// This relay's origin id (16 hex digits), carried by every message it publishes.
    pub fn origin(&self) -> &str {
        std::str::from_utf8(&self.shared.origin).unwrap_or_default()
    }

    /// Hands what other processes publish to `topic` to `f` instead of to the reactors: for
    /// coordination between processes that is meant for the application rather than for
    /// WebSocket clients (a roster of who is online on each process, say).
    ///
    /// `f` runs on the relay's receiving thread, in the order the messages come from Redis
    /// (the same order as the deliveries of the other topics around them). It must not block,
    /// as every message behind it waits, and must not call `intercept`. The messages count in
    /// [`received`](Self::received). Calling `intercept` again for the same topic replaces
    /// `f`; messages that came before the first call went to the reactors as usual. What this
    /// process publishes to `topic` is not affected: it reaches the local subscribers and Redis
    /// as always (and `f` never sees it, like every message of this relay's own origin).
    ///
    /// The callbacks are dropped when the receiving thread ends, so a callback may own a clone
    /// of the relay.
    pub fn intercept(&self, topic: &str, f: impl FnMut(Message<'_>) + Send + 'static) {
        if self.shared.stop.load(Ordering::Acquire) {
            return; // the receiving thread has ended or is ending: nothing would call `f`
        }
        let mut intercepts =
            (self.shared.intercepts.lock()).unwrap_or_else(PoisonError::into_inner);
        intercepts.retain(|(t, _)| **t != *topic);
        intercepts.push((topic.into(), Box::new(f)));
        self.shared.intercepting.store(true, Ordering::Release);
    }

    /// Stops both threads (within about 100 ms, or `io_timeout` if a write is stuck); what is
    /// still queued is dropped and counted. Publishes after this are counted as dropped.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

impl Relay for RedisRelay {
    fn publish(&mut self, topic: &str, msg: Message<'_>) {
        let shared = &*self.shared;
        if shared.stop.load(Ordering::Relaxed) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let flag: &[u8] = match msg {
            Message::Text(_) => b"T",
            Message::Binary(_) => b"B",
        };
        let body = msg.as_bytes();
        let mut cmd =
            Vec::with_capacity(64 + shared.prefix.len() + topic.len() + HEADER_LEN + body.len());
        resp::write_array_header(&mut cmd, 3);
        resp::write_bulk_parts(&mut cmd, &[b"PUBLISH"]);
        resp::write_bulk_parts(&mut cmd, &[&shared.prefix, topic.as_bytes()]);
        resp::write_bulk_parts(&mut cmd, &[flag, &shared.origin, body]);
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Reported by the Redis thread, which may log without slowing the reactor.
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                shared.full_unreported.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Where Redis is, from a `redis://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redis") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("rediss") => {
                return Err(format!("{url}: rediss:// (TLS) is not supported"))
            }
            _ => return Err(format!("{url}: expected redis://host:port")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !path.is_empty() && !path.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{url}: the path may only be a database number"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (
                    Some(user.to_owned()).filter(|u| !u.is_empty()),
                    Some(password.to_owned()),
                ),
                None => {
                    return Err(format!(
                        "{url}: credentials must be user:password or :password"
                    ))
                }
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url}: unclosed [ in the host"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{url}: junk after the host")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let port = match port {
            None => 6379,
            Some(port) => port
                .parse()
                .map_err(|_| format!("{url}: bad port {port:?}"))?,
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            user,
            password,
        })
    }

    /// `host:port`, for logs.
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A blocking connection to Redis with its read buffer.
struct RespConn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl RespConn {
    /// Connects, sets timeouts and authenticates if the URL had a password.
    fn open(target: &Target, options: &RedisOptions) -> io::Result<RespConn> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
        let mut stream = None;
        for addr in (target.host.as_str(), target.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, options.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(last)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(options.io_timeout))?;
        stream.set_read_timeout(Some(options.io_timeout))?;
        let mut conn = RespConn {
            stream,
            buf: Vec::new(),
            start: 0,
        };
        let mut cmd = Vec::new();
        if let Some(password) = &target.password {
            match &target.user {
                Some(user) => {
                    resp::write_command(&mut cmd, &[b"AUTH", user.as_bytes(), password.as_bytes()])
                }
                None => resp::write_command(&mut cmd, &[b"AUTH", password.as_bytes()]),
            }
        }
        // A PING proves that this is a Redis server that will take our commands.
        resp::write_command(&mut cmd, &[b"PING"]);
        conn.stream.write_all(&cmd)?;
        if target.password.is_some() {
            conn.reply(|v| match v {
                Value::Simple(_) => Ok(()),
                Value::Error(e) => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("AUTH refused: {}", String::from_utf8_lossy(e)),
                )),
                other => Err(unexpected(&other)),
            })??;
        }
        conn.reply(|v| match v {
            Value::Simple(s) if s.eq_ignore_ascii_case(b"pong") => Ok(()),
            Value::Error(e) if e.starts_with(b"NOAUTH") => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} (give the password: redis://:PASSWORD@host:port)",
                    String::from_utf8_lossy(e)
                ),
            )),
            other => Err(unexpected(&other)),
        })??;
        Ok(conn)
    }

    /// The next reply within the read timeout, handed to `f`.
    fn reply<T>(&mut self, f: impl FnOnce(Value<'_>) -> T) -> io::Result<T> {
        self.next(f)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer from redis"))
    }

    /// The next reply handed to `f`, or `None` if the read timeout passed first (what was
    /// read of a partial reply is kept).
    fn next<T>(&mut self, f: impl FnOnce(Value<'_>) -> T) -> io::Result<Option<T>> {
        loop {
            match resp::parse(&self.buf[self.start..]) {
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                Ok(Some((value, used))) => {
                    let out = f(value);
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                        if self.buf.capacity() > 1 << 20 {
                            self.buf.shrink_to(64 * 1024);
                        }
                    }
                    return Ok(Some(out));
                }
                Ok(None) => {}
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + 16 * 1024, 0);
            let read = self.stream.read(&mut self.buf[len..]);
            self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "redis closed the connection",
                    ))
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the connection still looks open (no end of stream or error pending), without
    /// waiting: an idle connection that Redis closed would otherwise swallow the next batch.
    fn is_alive(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let alive = match self.stream.peek(&mut [0u8; 1]) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        self.stream.set_nonblocking(false).is_ok() && alive
    }
}

fn unexpected(value: &Value<'_>) -> io::Error {
    let message = match value {
        Value::Error(e) => format!("redis answered {}", String::from_utf8_lossy(e)),
        other => format!("unexpected reply from redis: {other:?}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Opens a connection subscribed to the relay's pattern (the confirmation received).
fn subscribe(shared: &Shared, options: &RedisOptions) -> io::Result<RespConn> {
    let mut conn = RespConn::open(&shared.target, options)?;
    let mut cmd = Vec::new();
    resp::write_command(&mut cmd, &[b"PSUBSCRIBE", &shared.pattern]);
    conn.stream.write_all(&cmd)?;
    conn.reply(|v| match Push::from_value(&v) {
        Some(Push::Subscription { kind, name, .. })
            if kind.eq_ignore_ascii_case(b"psubscribe") && name == &*shared.pattern =>
        {
            Ok(())
        }
        _ => Err(unexpected(&v)),
    })??;
    conn.stream.set_read_timeout(Some(TICK))?;
    Ok(conn)
}

/// Reconnection delays: `min_backoff`, doubling up to `max_backoff`.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(options: &RedisOptions) -> Backoff {
        Backoff {
            next: options.min_backoff,
            min: options.min_backoff,
            max: options.max_backoff,
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What both threads do about their lifetime: when to stop, and saying they did.
struct Life {
    shared: Arc<Shared>,
    handles: Vec<Handle>,
    /// When every server was seen gone.
    since: Option<Instant>,
}

impl Life {
    fn over(&mut self) -> bool {
        if self.shared.stop.load(Ordering::Acquire) {
            return true;
        }
        let all_gone = (self.handles.iter()).all(|h| h.shared.stopped.load(Ordering::Acquire));
        if !all_gone {
            self.since = None;
            return false;
        }
        self.since.get_or_insert_with(Instant::now).elapsed() >= LINGER
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        // Either thread ending ends the other.
        self.shared.stop.store(true, Ordering::Release);
        self.shared.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Rate-limits a warning.
#[derive(Default)]
struct Every(Option<Instant>);

impl Every {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.0.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// An outage of one connection: since when, attempts, and (for the publisher) drops.
struct Outage {
    since: Instant,
    attempts: u32,
    dropped: u64,
    reported: u64,
    warned: Every,
}

impl Outage {
    fn new() -> Outage {
        Outage {
            since: Instant::now(),
            attempts: 0,
            dropped: 0,
            reported: 0,
            warned: Every::default(),
        }
    }
}

/// The thread that sends publishes to Redis.
struct Publisher {
    life: Life,
    options: RedisOptions,
    conn: Option<RespConn>,
    backoff: Backoff,
    outage: Option<Outage>,
    full_warned: Every,
    error_warned: Every,
    /// A batch taken from the queue and not sent yet, and how many commands it holds.
    batch: Vec<u8>,
    count: usize,
}

impl Publisher {
    fn new(
        shared: Arc<Shared>,
        handles: Vec<Handle>,
        options: RedisOptions,
        conn: RespConn,
    ) -> Publisher {
        Publisher {
            backoff: Backoff::new(&options),
            life: Life {
                shared,
                handles,
                since: None,
            },
            options,
            conn: Some(conn),
            outage: None,
            full_warned: Every::default(),
            error_warned: Every::default(),
            batch: Vec::new(),
            count: 0,
        }
    }

    fn shared(&self) -> &Shared {
        &self.life.shared
    }

    fn run(mut self, rx: Receiver<Vec<u8>>) {
        while !self.life.over() {
            self.report_full();
            if self.conn.is_none() {
                if !self.reconnect(&rx) {
                    break;
                }
                continue;
            }
            if self.count == 0 {
                match rx.recv_timeout(TICK) {
                    Ok(cmd) => {
                        self.batch.extend_from_slice(&cmd);
                        self.count = 1;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if !self.conn.as_ref().is_some_and(RespConn::is_alive) {
                            let e = io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "redis closed the connection",
                            );
                            self.lost(&e);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                while self.count < MAX_BATCH && self.batch.len() < MAX_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(cmd) => {
                            self.batch.extend_from_slice(&cmd);
                            self.count += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
            self.send_batch();
        }
        // What is left is lost.
        let mut left = self.count as u64;
        while rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            self.shared().dropped.fetch_add(left, Ordering::Relaxed);
            log::warn!("redis relay stopped: dropped {left} queued publishes");
        }
        self.shared().publisher_up.store(false, Ordering::Release);
    }

    /// Sends the batch in hand and reads Redis' answers.
    fn send_batch(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // A connection that Redis closed while idle would take the batch and lose it.
        if !conn.is_alive() {
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection");
            return self.lost(&e);
        }
        let count = std::mem::take(&mut self.count);
        let result = conn.stream.write_all(&self.batch).and_then(|()| {
            let mut refused = 0u64;
            let mut first_error = None;
            for _ in 0..count {
                conn.reply(|v| {
                    if let Value::Error(e) = v {
                        refused += 1;
                        first_error.get_or_insert_with(|| String::from_utf8_lossy(e).into_owned());
                    }
                })?;
            }
            Ok((refused, first_error))
        });
        self.batch.clear();
        let shared = &*self.life.shared;
        match result {
            Ok((refused, error)) => {
                shared
                    .published
                    .fetch_add(count as u64 - refused, Ordering::Relaxed);
                if let Some(error) = error {
                    shared.dropped.fetch_add(refused, Ordering::Relaxed);
                    if self.error_warned.due() {
                        log::warn!(
                            "redis at {} refused {refused} publishes (dropped): {error}",
                            shared.target.addr()
                        );
                    }
                }
            }
            Err(e) => {
                shared.dropped.fetch_add(count as u64, Ordering::Relaxed);
                log::warn!(
                    "redis at {}: {count} publishes not confirmed, dropped",
                    shared.target.addr()
                );
                self.lost(&e);
                if let Some(outage) = &mut self.outage {
                    outage.dropped += count as u64;
                }
            }
        }
    }

    /// The connection broke: drop it and start an outage.
    fn lost(&mut self, e: &io::Error) {
        self.conn = None;
        self.shared().publisher_up.store(false, Ordering::Release);
        if self.outage.is_none() {
            log::warn!(
                "lost the publishing connection to redis at {}: {e}; reconnecting (publishes \
                 are dropped until it is back)",
                self.shared().target.addr()
            );
            self.outage = Some(Outage::new());
        }
    }

    /// One reconnection attempt, then (if it failed) a backoff during which what comes is
    /// dropped. False if the queue's senders are all gone.
    fn reconnect(&mut self, rx: &Receiver<Vec<u8>>) -> bool {
        let outage = self.outage.get_or_insert_with(Outage::new);
        let shared = &*self.life.shared;
        let addr = shared.target.addr();
        match RespConn::open(&shared.target, &self.options) {
            Ok(conn) => {
                self.conn = Some(conn);
                shared.publisher_up.store(true, Ordering::Release);
                self.backoff.reset();
                let dropped = outage.dropped;
                let down = outage.since.elapsed();
                if dropped > 0 {
                    log::warn!(
                        "reconnected to redis at {addr} for publishing after {down:.1?}; \
                         {dropped} publishes were dropped while it was down"
                    );
                } else {
                    log::info!("reconnected to redis at {addr} for publishing after {down:.1?}");
                }
                self.outage = None;
                true
            }
            Err(e) => {
                outage.attempts += 1;
                // A batch taken before the loss cannot wait for the connection.
                let in_hand = std::mem::take(&mut self.count) as u64;
                self.batch.clear();
                outage.dropped += in_hand;
                shared.dropped.fetch_add(in_hand, Ordering::Relaxed);
                let delay = self.backoff.next();
                log::debug!(
                    "redis at {addr}: attempt {} failed: {e}; next in {delay:?}",
                    outage.attempts
                );
                let deadline = Instant::now() + delay;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || shared.stop.load(Ordering::Acquire) {
                        break;
                    }
                    match rx.recv_timeout(left.min(TICK)) {
                        Ok(_) => {
                            outage.dropped += 1;
                            shared.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return false,
                    }
                }
                if outage.dropped > outage.reported && outage.warned.due() {
                    log::warn!(
                        "redis at {addr} unreachable for {:.1?} ({e}): dropped {} publishes \
                         so far",
                        outage.since.elapsed(),
                        outage.dropped
                    );
                    outage.reported = outage.dropped;
                }
                true
            }
        }
    }

    /// Logs the publishes refused by a full queue since the last report.
    fn report_full(&mut self) {
        let shared = &*self.life.shared;
        if shared.full_unreported.load(Ordering::Relaxed) == 0 || !self.full_warned.due() {
            return;
        }
        let n = shared.full_unreported.swap(0, Ordering::Relaxed);
        log::warn!(
            "redis relay: dropped {n} publishes, its queue of {} was full (Redis too slow or \
             down; see RedisOptions::queue)",
            shared.queue
        );
    }
}

/// The thread that receives other processes' messages and delivers them.
struct Subscriber {
    life: Life,
    options: RedisOptions,
    conn: Option<RespConn>,
    backoff: Backoff,
    outage: Option<Outage>,
    last_heard: Instant,
    ping_sent: bool,
    full_warned: Every,
    full_unreported: u64,
}

impl Subscriber {
    fn new(
        shared: Arc<Shared>,
        handles: Vec<Handle>,
        options: RedisOptions,
        conn: RespConn,
    ) -> Subscriber {
        Subscriber {
            backoff: Backoff::new(&options),
            life: Life {
                shared,
                handles,
                since: None,
            },
            options,
            conn: Some(conn),
            outage: None,
            last_heard: Instant::now(),
            ping_sent: false,
            full_warned: Every::default(),
            full_unreported: 0,
        }
    }

    fn run(mut self) {
        while !self.life.over() {
            if self.full_unreported > 0 && self.full_warned.due() {
                log::warn!(
                    "redis relay: dropped {} messages from redis, a reactor's command queue was \
                     full (see Config::handle_queue)",
                    std::mem::take(&mut self.full_unreported)
                );
            }
            let Some(conn) = self.conn.as_mut() else {
                self.reconnect();
                continue;
            };
            let (life, full) = (&self.life, &mut self.full_unreported);
            let result = conn.next(|v| match Push::from_value(&v) {
                Some(Push::PMessage {
                    channel, payload, ..
                }) => deliver(life, channel, payload, full),
                Some(_) => Delivery::Done,
                None => {
                    log::debug!("redis relay: ignored {v:?}");
                    Delivery::Done
                }
            });
            match result {
                Ok(Some(delivery)) => {
                    self.last_heard = Instant::now();
                    self.ping_sent = false;
                    if delivery == Delivery::Stopped {
                        log::debug!("redis relay: every server has stopped");
                        break;
                    }
                }
                Ok(None) => self.keepalive(),
                Err(e) => self.lost(&e),
            }
        }
        let shared = &*self.life.shared;
        shared.subscriber_up.store(false, Ordering::Release);
        // The callbacks may hold clones of the relay: let them go.
        shared.intercepting.store(false, Ordering::Release);
        (shared.intercepts.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Pings a silent connection, and gives it up if the ping is not answered in time.
    fn keepalive(&mut self) {
        let silent = self.last_heard.elapsed();
        if silent < self.options.keepalive {
            return;
        }
        if self.ping_sent {
            if silent >= self.options.keepalive * 2 {
                let e = io::Error::new(io::ErrorKind::TimedOut, "no answer to PING");
                self.lost(&e);
            }
            return;
        }
        self.ping_sent = true;
        let mut cmd = Vec::new();
        resp::write_command(&mut cmd, &[b"PING"]);
        if let Some(Err(e)) = self.conn.as_mut().map(|c| c.stream.write_all(&cmd)) {
            self.lost(&e);
        }
    }

    fn lost(&mut self, e: &io::Error) {
        self.conn = None;
        self.life
            .shared
            .subscriber_up
            .store(false, Ordering::Release);
        if self.outage.is_none() {
            log::warn!(
                "lost the subscription to redis at {}: {e}; reconnecting (messages from other \
                 processes are missed until it is back)",
                self.life.shared.target.addr()
            );
            self.outage = Some(Outage::new());
        }
    }

    fn reconnect(&mut self) {
        let outage = self.outage.get_or_insert_with(Outage::new);
        let shared = &*self.life.shared;
        let addr = shared.target.addr();
        match subscribe(shared, &self.options) {
            Ok(conn) => {
                log::info!(
                    "resubscribed to {}* on redis at {addr} after {:.1?}",
                    String::from_utf8_lossy(&shared.prefix),
                    outage.since.elapsed()
                );
                self.conn = Some(conn);
                self.outage = None;
                self.backoff.reset();
                self.last_heard = Instant::now();
                self.ping_sent = false;
                shared.subscriber_up.store(true, Ordering::Release);
            }
            Err(e) => {
                outage.attempts += 1;
                let delay = self.backoff.next();
                log::debug!(
                    "redis at {addr}: resubscribe attempt {} failed: {e}; next in {delay:?}",
                    outage.attempts
                );
                let deadline = Instant::now() + delay;
                while !shared.stop.load(Ordering::Acquire) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    thread::sleep(left.min(TICK));
                }
            }
        }
    }
}

/// What became of one message from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Delivered, skipped (our own, or not ours to read), or partly refused (counted).
    Done,
    /// Every server is gone.
    Stopped,
}

/// Delivers one message from `channel` to every reactor, unless this relay published it.
fn deliver(life: &Life, channel: &[u8], payload: &[u8], full: &mut u64) -> Delivery {
    let shared = &*life.shared;
    let Some(topic) = channel
        .strip_prefix(&*shared.prefix)
        .and_then(|t| std::str::from_utf8(t).ok())
    else {
        log::debug!("redis relay: ignored a message on {channel:?}");
        return Delivery::Done;
    };
    let Some((header, body)) = payload.split_at_checked(HEADER_LEN) else {
        log::debug!("redis relay: ignored a message on {topic:?} that is not wsloop's");
        return Delivery::Done;
    };
    if header[1..] == shared.origin {
        return Delivery::Done;
    }
    let msg = match (header[0], std::str::from_utf8(body)) {
        (b'T', Ok(text)) => Message::Text(text),
        (b'B', _) => Message::Binary(body),
        _ => {
            log::debug!("redis relay: ignored a message on {topic:?} that is not wsloop's");
            return Delivery::Done;
        }
    };
    shared.received.fetch_add(1, Ordering::Relaxed);
    if shared.intercepting.load(Ordering::Acquire) {
        let mut intercepts = (shared.intercepts.lock()).unwrap_or_else(PoisonError::into_inner);
        if let Some((_, f)) = intercepts.iter_mut().find(|(t, _)| **t == *topic) {
            f(msg);
            return Delivery::Done;
        }
    }
    let mut stopped = 0;
    for handle in &life.handles {
        match handle.publish_local(topic, msg) {
            Ok(()) => {}
            Err(HandleError::Full) => {
                *full += 1;
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(HandleError::Stopped) => stopped += 1,
        }
    }
    if stopped == life.handles.len() {
        Delivery::Stopped
    } else {
        Delivery::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, user: Option<&str>, password: Option<&str>) -> Target {
        Target {
            host: host.into(),
            port,
            user: user.map(Into::into),
            password: password.map(Into::into),
        }
    }

    #[test]
    fn parses_redis_urls() {
        let ok = [
            (
                "redis://127.0.0.1:6380",
                target("127.0.0.1", 6380, None, None),
            ),
            ("redis://localhost", target("localhost", 6379, None, None)),
            ("REDIS://h:1/0", target("h", 1, None, None)),
            ("redis://h:2/", target("h", 2, None, None)),
            ("redis://:s3cret@h:3", target("h", 3, None, Some("s3cret"))),
            (
                "redis://me:p@ss@h",
                target("h", 6379, Some("me"), Some("p@ss")),
            ),
            ("redis://[::1]:7000", target("::1", 7000, None, None)),
            ("redis://[::1]", target("::1", 6379, None, None)),
        ];
        for (url, expected) in ok {
            assert_eq!(Target::parse(url), Ok(expected), "{url}");
        }
        let bad = [
            "127.0.0.1:6379",
            "http://h:1",
            "rediss://h:1",
            "redis://",
            "redis://:1",
            "redis://h:port",
            "redis://h:70000",
            "redis://user@h",
            "redis://[::1",
            "redis://[::1]x",
            "redis://h/db",
        ];
        for url in bad {
            assert!(Target::parse(url).is_err(), "{url}");
        }
        assert_eq!(target("::1", 1, None, None).addr(), "[::1]:1");
        assert_eq!(target("h", 1, None, None).addr(), "h:1");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(&RedisOptions::default());
        let delays: Vec<u64> = (0..8).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(50));
    }

    #[test]
    fn options_are_validated() {
        assert!(RedisOptions::default().validate().is_ok());
        let bad = [
            RedisOptions::default().queue(0),
            RedisOptions::default().min_backoff(Duration::ZERO),
            RedisOptions::default().max_backoff(Duration::from_millis(1)),
            RedisOptions::default().io_timeout(Duration::ZERO),
            RedisOptions::default().keepalive(Duration::ZERO),
            RedisOptions::default().connect_timeout(Duration::ZERO),
        ];
        for options in bad {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }
}
