//! A pub/sub backplane through a Redis server, so that topics span processes and machines
//! (cargo feature `redis`).
//!
//! See [`RedisRelay`]. The Redis side (URLs, AUTH, SELECT, TLS, RESP) is the `redis` crate's
//! blocking client; this module adds the threads, the bounded queue, reconnection and counting.

mod outbox;
mod publisher;
mod subscriber;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError};

use crate::reactor::log_limit::RepeatWarn;
use crate::{ConfigError, Error, Handle, HandleError, Message, Relay};
use publisher::Publisher;
use subscriber::Subscriber;

/// How often the Redis threads look at their stop conditions.
const TICK: Duration = Duration::from_millis(100);
/// An idle publishing connection is checked this often, so that an outage shows without a
/// publish.
const IDLE_CHECK: Duration = Duration::from_secs(1);
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
/// While Redis is unreachable, how often the publisher says how it stands.
const OUTAGE_WARN_EVERY: Duration = Duration::from_secs(5);

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
    /// Time allowed to write a batch, and for Redis to answer (default 5 s). A write past it
    /// breaks the connection; an answer past it makes the publishing connection count as
    /// stalled (down, its publishes held) until Redis answers.
    pub io_timeout: Duration,
    /// After this much silence the subscribed connection is checked: a second connection
    /// publishes an empty probe, which the subscription must bring back within as much again,
    /// or it is replaced. While Redis does not answer at all (down, or stalled), the
    /// subscription is kept and checked again. A stalled publishing connection is checked as
    /// often against a fresh one (default 5 s).
    pub keepalive: Duration,
    /// Most bytes of publishes held while Redis is down or stalled (or its subscribers are
    /// awaited after an outage), sent or not; past it the oldest are dropped (default 8 MiB).
    /// While Redis keeps up, publishes wait in the queue instead, bounded by
    /// [`queue`](Self::queue).
    pub outbox_bytes: usize,
    /// Longest a publish is held for Redis; past it, it is dropped (default 30 s). A connection
    /// that does not confirm a publish in that time is replaced.
    pub outbox_time: Duration,
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
            outbox_bytes: 8 << 20,
            outbox_time: Duration::from_secs(30),
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

    /// Sets [`outbox_bytes`](Self::outbox_bytes).
    pub fn outbox_bytes(mut self, value: usize) -> RedisOptions {
        self.outbox_bytes = value;
        self
    }

    /// Sets [`outbox_time`](Self::outbox_time).
    pub fn outbox_time(mut self, value: Duration) -> RedisOptions {
        self.outbox_time = value;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |option: &'static str, cause| Err(Error::Config { option, cause });
        if self.queue == 0 {
            return bad("RedisOptions::queue", ConfigError::Zero);
        }
        let durations = [
            ("RedisOptions::min_backoff", self.min_backoff),
            ("RedisOptions::connect_timeout", self.connect_timeout),
            ("RedisOptions::io_timeout", self.io_timeout),
            ("RedisOptions::keepalive", self.keepalive),
            ("RedisOptions::outbox_time", self.outbox_time),
        ];
        for (option, value) in durations {
            if value.is_zero() {
                return bad(option, ConfigError::ZeroDuration);
            }
        }
        if self.max_backoff < self.min_backoff {
            let other = "min_backoff";
            return bad(
                "RedisOptions::max_backoff",
                ConfigError::BelowOption { other },
            );
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
/// messages (their subscribers had them locally already). An empty message on the channel
/// `<prefix>` itself is a probe (see below); messages in another format on the channels are
/// ignored.
///
/// Redis going away for a while loses nothing. The publishing thread keeps every publish in an
/// outbox until Redis confirms it: while Redis is unreachable, or a connection stalls (no
/// answer within `io_timeout`: Redis frozen or overloaded), publishes wait there, up to
/// [`RedisOptions::outbox_time`] and [`RedisOptions::outbox_bytes`], and are sent in order on
/// the next connection. A broken connection's unconfirmed publishes are sent again, so around
/// one a message may arrive twice; a stalled connection is kept (what it holds is delivered
/// when Redis wakes up) unless a fresh connection gets answers (then the stalled one is dead
/// and replaced), or until a publish has waited `outbox_time` for its answer. After an
/// outage the relay sends again once as many subscribers listen as before it (a `PUBLISH` of
/// an empty probe says how many; at most `2 × max_backoff`), since Redis keeps nothing for a
/// subscriber that has not subscribed again yet. The subscribed connection is kept through a
/// stall too: after `keepalive` of silence a second connection publishes a probe, which must
/// come back on the subscription; if Redis does not answer that connection either, it is down or
/// stalled itself and the subscription waits for it.
///
/// What is dropped is counted in [`RedisRelay::dropped`], reported by a `log::warn!` at most
/// once a second with the count, and (for publishes past the outbox's bounds or refused by
/// Redis) handed to the [`RedisRelay::on_dropped`] callback, so that an application can tell
/// its users: publishes refused by a full queue (`queue`), publishes past the outbox's bounds
/// or refused by Redis, and messages from Redis that a full reactor queue refused. Messages
/// published by others while this relay's subscription is being renewed are missed, as Redis
/// pub/sub keeps nothing (the publishers' wait for the subscribers makes this rare). Both
/// connections are re-established with a backoff (`min_backoff`, doubling up to
/// `max_backoff`); each loss and recovery is logged.
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
    tx: SyncSender<Outgoing>,
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRelay")
            .field("redis", &self.shared.addr)
            .field("prefix", &String::from_utf8_lossy(&self.shared.prefix))
            .field("origin", &self.origin())
            .field("connected", &self.is_connected())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// What the relay's clones and its two threads share.
struct Shared {
    client: redis::Client,
    /// `host:port` of the server, for logs and errors.
    addr: String,
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
    /// The callback of [`RedisRelay::on_dropped`].
    on_dropped: Mutex<Option<DropCallback>>,
}

/// A callback of [`RedisRelay::intercept`].
type Interceptor = Box<dyn FnMut(Message<'_>) + Send>;

/// The callback of [`RedisRelay::on_dropped`].
type DropCallback = Box<dyn FnMut(&str, Message<'_>) + Send>;

/// A publish on its way to the publishing thread: the channel's bytes, then the payload's,
/// where the first end, and when it was published.
type Outgoing = (Vec<u8>, usize, Instant);

impl RedisRelay {
    /// Connects to the Redis server at `url` for the server behind `handle`, with channels
    /// named `<prefix><topic>`, and the default [`RedisOptions`].
    ///
    /// `url` is what the `redis` crate takes: `redis://host:port/db`, with
    /// `redis://:password@host` (the `default` user) or `redis://user:password@host` (an ACL
    /// user) to authenticate, `rediss://` for TLS (the server's certificate is checked against
    /// the system's roots), `redis+unix:///path`. The port defaults to 6379; the database
    /// does not matter to pub/sub, which spans databases.
    ///
    /// Returns once both connections are open and the subscription is confirmed, so a
    /// message published by another process after this returns is received. Blocks the
    /// calling thread for at most `connect_timeout + io_timeout` per connection; call it
    /// before running the server.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL the `redis` crate does not take, [`Error::Io`] naming the
    /// server when Redis cannot be reached now, refuses the password, or asks for one
    /// (later outages are survived).
    pub fn connect(url: &str, handle: Handle, prefix: &str) -> Result<RedisRelay, Error> {
        RedisRelay::connect_with(url, &[handle], prefix, RedisOptions::default())
    }

    /// Like [`connect`](Self::connect), with options, delivering what comes from Redis to
    /// every one of `handles` (the reactors of a [`Cluster`](crate::Cluster)).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`Error::Config`] for invalid `options` or no
    /// `handles`.
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
                cause: ConfigError::NoHandles,
            });
        }
        let client = redis::Client::open(url).map_err(|e| Error::Config {
            option: "redis url",
            cause: ConfigError::Url {
                url: url.to_owned(),
                source: Box::new(e),
            },
        })?;
        let origin = {
            let id = crate::proto::message::random_u64() ^ u64::from(std::process::id());
            let hex = format!("{id:016x}");
            let mut origin = [0u8; 16];
            origin.copy_from_slice(hex.as_bytes());
            origin
        };
        let shared = Arc::new(Shared {
            pattern: [&glob_escape(prefix.as_bytes())[..], b"*"].concat().into(),
            prefix: prefix.as_bytes().into(),
            addr: client.get_connection_info().addr().to_string(),
            client,
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
            on_dropped: Mutex::new(None),
        });
        let context = |what: &str, e: RedisError| {
            Error::Io(io::Error::new(
                io_kind(&e),
                format!("redis at {}: {what}: {}", shared.addr, describe(&e)),
            ))
        };
        let publisher = open(&shared, &options).map_err(|e| context("cannot connect", e))?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.to_owned())
                .spawn(f)
                .map_err(Error::Io)
        };
        // The subscriber subscribes on its own thread (the subscription borrows its
        // connection), and says when it is in place.
        let (ready_tx, ready) = mpsc::channel();
        let (s, h, o) = (shared.clone(), handles.to_vec(), options.clone());
        spawn(
            "wsloop-redis-sub",
            Box::new(move || Subscriber::new(s, h, o).run(ready_tx)),
        )
        .inspect_err(|_| {
            shared.running.store(0, Ordering::Release);
        })?;
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(context("cannot subscribe", e)),
            Err(_) => return Err(Error::Io(io::Error::other("the redis thread ended"))),
        }
        log::info!(
            "redis relay {} connected to {}, channels {}*",
            String::from_utf8_lossy(&shared.origin),
            shared.addr,
            String::from_utf8_lossy(&shared.prefix),
        );
        let (tx, rx) = mpsc::sync_channel(options.queue);
        let (s, h) = (shared.clone(), handles.to_vec());
        spawn(
            "wsloop-redis-pub",
            Box::new(move || Publisher::new(s, h, options, publisher).run(rx)),
        )
        .inspect_err(|_| {
            shared.stop.store(true, Ordering::Release);
            shared.running.fetch_sub(1, Ordering::AcqRel);
        })?;
        Ok(RedisRelay { tx, shared })
    }

    /// How many messages were lost so far: publishes not sent to Redis (the queue was full,
    /// they were held past [`RedisOptions::outbox_time`] or [`RedisOptions::outbox_bytes`],
    /// Redis refused them, or the relay stopped with them) and messages from Redis that a full
    /// reactor queue refused.
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

    /// Whether both connections to Redis are up and answering, and the subscription is in
    /// place (false while Redis is down or stalled).
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

    /// Hands every publish that the relay drops after taking it (held past
    /// [`RedisOptions::outbox_time`] or [`RedisOptions::outbox_bytes`], refused by Redis, or
    /// left when the relay stops) to `f`, with its topic: so that an application can tell the
    /// sender that other processes did not get it. Publishes refused by a full queue are only
    /// counted (that happens on the reactor's thread, which the relay does not call back on).
    ///
    /// `f` runs on the relay's publishing thread and must not block. Calling `on_dropped`
    /// again replaces it.
    pub fn on_dropped(&self, f: impl FnMut(&str, Message<'_>) + Send + 'static) {
        let mut slot = (self.shared.on_dropped.lock()).unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Box::new(f));
    }

    /// Stops both threads (within about 100 ms, or `connect_timeout + io_timeout` while Redis is
    /// slow to take a batch or answer a check); what is still held is dropped, counted and
    /// handed to the [`on_dropped`](Self::on_dropped) callback.
    /// Publishes after this are counted as dropped.
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
        let channel = shared.prefix.len() + topic.len();
        let mut bytes = Vec::with_capacity(channel + HEADER_LEN + body.len());
        for part in [
            &shared.prefix[..],
            topic.as_bytes(),
            flag,
            &shared.origin,
            body,
        ] {
            bytes.extend_from_slice(part);
        }
        match self.tx.try_send((bytes, channel, Instant::now())) {
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

/// The PSUBSCRIBE pattern for a prefix: its glob characters escaped.
fn glob_escape(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 4);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Opens a connection with the relay's timeouts (authenticated and on its database, as the URL
/// says), and checks with a PING that Redis takes our commands.
fn open(shared: &Shared, options: &RedisOptions) -> Result<Connection, RedisError> {
    let mut conn = shared
        .client
        .get_connection_with_timeout(options.connect_timeout)?;
    conn.set_write_timeout(Some(options.io_timeout))?;
    conn.set_read_timeout(Some(options.io_timeout))?;
    redis::cmd("PING").query::<String>(&mut conn)?;
    Ok(conn)
}

/// Opens a connection subscribed to the relay's pattern (the confirmation received), which then
/// reads with a timeout of [`TICK`].
fn subscribe(shared: &Shared, options: &RedisOptions) -> Result<Connection, RedisError> {
    let mut conn = open(shared, options)?;
    psubscribe(&mut conn, &shared.pattern)?;
    conn.set_read_timeout(Some(TICK))?;
    Ok(conn)
}

/// Subscribes `conn` to `pattern` and waits for Redis' confirmation (the `redis` crate's
/// `PubSub::psubscribe` takes a refusal, such as an ACL's NOPERM, for one).
fn psubscribe(conn: &mut Connection, pattern: &[u8]) -> Result<(), RedisError> {
    conn.send_packed_command(&redis::cmd("PSUBSCRIBE").arg(pattern).get_packed_command())?;
    match conn.recv_response()? {
        redis::Value::Array(reply)
            if reply.first() == Some(&redis::Value::BulkString(b"psubscribe".to_vec())) =>
        {
            Ok(())
        }
        redis::Value::ServerError(e) => Err(e.into()),
        other => Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected answer to PSUBSCRIBE",
            format!("{other:?}"),
        ))),
    }
}

/// What went wrong, with a hint where there is one.
fn describe(e: &RedisError) -> String {
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        format!("AUTH refused: {e}")
    } else if e.code() == Some("NOAUTH") {
        format!("{e} (give the password: redis://:PASSWORD@host:port)")
    } else if e.is_timeout() {
        "no answer in time".to_owned()
    } else {
        e.to_string()
    }
}

/// The `io::ErrorKind` closest to a Redis error, for [`Error::Io`].
fn io_kind(e: &RedisError) -> io::ErrorKind {
    if e.is_connection_refusal() {
        io::ErrorKind::ConnectionRefused
    } else if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed || e.code() == Some("NOAUTH") {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::Other
    }
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

/// An outage of one connection: since when, attempts, and (for the publisher) drops.
struct Outage {
    since: Instant,
    attempts: u32,
    dropped: u64,
    /// Failed attempts, reported at most once per [`OUTAGE_WARN_EVERY`] after the warning
    /// that started the outage.
    warned: RepeatWarn,
}

impl Outage {
    fn new() -> Outage {
        Outage::since(Instant::now())
    }

    /// An outage that began at `since` (when Redis was last heard from).
    fn since(since: Instant) -> Outage {
        let mut warned = RepeatWarn::new(OUTAGE_WARN_EVERY);
        let _ = warned.add(1, since); // the loss itself was logged
        Outage {
            since,
            attempts: 0,
            dropped: 0,
            warned,
        }
    }
}

/// A message on one of the relay's channels in wsloop's payload format: its topic, its origin
/// id and the message. `None` for a probe, or a message in another format (logged at debug).
fn decode<'a>(
    shared: &Shared,
    channel: &'a [u8],
    payload: &'a [u8],
) -> Option<(&'a str, &'a [u8], Message<'a>)> {
    let Some(topic) = channel
        .strip_prefix(&*shared.prefix)
        .and_then(|t| std::str::from_utf8(t).ok())
    else {
        log::debug!("redis relay: ignored a message on {channel:?}");
        return None;
    };
    if topic.is_empty() && payload.is_empty() {
        return None; // a probe
    }
    let Some((header, body)) = payload.split_at_checked(HEADER_LEN) else {
        log::debug!("redis relay: ignored a message on {topic:?} that is not wsloop's");
        return None;
    };
    let msg = match (header[0], std::str::from_utf8(body)) {
        (b'T', Ok(text)) => Message::Text(text),
        (b'B', _) => Message::Binary(body),
        _ => {
            log::debug!("redis relay: ignored a message on {topic:?} that is not wsloop's");
            return None;
        }
    };
    Some((topic, &header[1..], msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_escapes_the_prefix() {
        assert_eq!(glob_escape(b"chat:"), b"chat:");
        assert_eq!(glob_escape(br"a*b?[c]\"), br"a\*b\?\[c\]\\");
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
            RedisOptions::default().outbox_time(Duration::ZERO),
        ];
        for options in bad {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }
}
