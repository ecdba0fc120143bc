//! RedisRelay against a real `redis-server` (Debian's package): topics shared by two servers,
//! a Redis restart survived, drops reported, an intercepted topic, threads that end with the
//! server.
//!
//! Each test starts its own `redis-server --port <free port> --save '' --appendonly no` on
//! 127.0.0.1 as a child process and kills it at the end (`tests/common/redis_server.rs`). A
//! missing `redis-server` fails the tests (install it with `apt-get install redis-server`, or
//! point `WSLOOP_REDIS_SERVER` at the binary); they never skip.
//!
//! The two "processes" of the issue are two `Server`s in this process, each on its own thread
//! with its own `RedisRelay` (its own connections and origin id): for Redis and for the relay
//! protocol they are two publishers and two subscribers, as two processes would be.
#![cfg(feature = "redis")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use common::cert::Cert;
use common::handlers::Rooms;
use common::redis_server::{raw_command, Redis};

use wsloop::client::{Client, Received};
use wsloop::{Cluster, Config, Error, Handle, Message, RedisOptions, RedisRelay, Server};

const TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A log that the tests can read
// ---------------------------------------------------------------------------------------------

static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            if std::env::var_os("WSLOOP_TEST_LOG").is_some() {
                eprintln!("[{}] {line}", record.level());
            }
            RECORDS.lock().unwrap().push((record.level(), line));
        }
    }

    fn flush(&self) {}
}

fn init_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// The log lines at `level` that contain every one of `needles`.
fn logged(level: log::Level, needles: &[&str]) -> Vec<String> {
    let records = RECORDS.lock().unwrap();
    records
        .iter()
        .filter(|(l, line)| *l == level && needles.iter().all(|n| line.contains(n)))
        .map(|(_, line)| line.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A chat server
// ---------------------------------------------------------------------------------------------

fn config() -> Config {
    Config::default().close_timeout(Duration::from_secs(1))
}

/// A chat server with its own relay to `redis`, running on its own thread.
struct Node {
    url: String,
    handle: Handle,
    relay: RedisRelay,
    done: mpsc::Receiver<Result<(), Error>>,
}

impl Node {
    fn start(redis: &Redis, prefix: &str) -> Node {
        Node::start_with_url(&redis.url(), prefix)
    }

    fn start_with_url(redis_url: &str, prefix: &str) -> Node {
        Node::start_with(redis_url, prefix, RedisOptions::default())
    }

    fn start_with(redis_url: &str, prefix: &str, options: RedisOptions) -> Node {
        let mut server = Server::bind("127.0.0.1:0", config(), Rooms::new(0)).unwrap();
        let relay = RedisRelay::connect_with(redis_url, &[server.handle()], prefix, options)
            .expect("connect the relay to redis");
        server.add_relay(relay.clone());
        let url = format!("ws://{}/", server.local_addr());
        let handle = server.handle();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(server.run());
        });
        Node {
            url,
            handle,
            relay,
            done,
        }
    }

    fn stop(self) {
        self.handle.shutdown().unwrap();
        assert!(matches!(
            self.done.recv_timeout(Duration::from_secs(10)),
            Ok(Ok(()))
        ));
    }
}

fn client(url: &str) -> Client {
    let c = Client::connect(url).expect("connect to the server");
    c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

fn join(c: &mut Client, room: &str) {
    c.send(Message::Text(&format!("join {room}"))).unwrap();
    match c.recv().unwrap() {
        Received::Text(t) if t.starts_with(&format!("joined {room} on ")) => {}
        other => panic!("expected joined, got {other:?}"),
    }
}

fn text(c: &mut Client) -> String {
    match c.recv().expect("a message within the timeout") {
        Received::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

/// Has `from` say `prefix N` (N counting up) in `room` every 100 ms until `to` receives one
/// of them; returns what `to` received. Fails after `limit`.
fn say_until_heard(
    from: &mut Client,
    to: &mut Client,
    room: &str,
    prefix: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    to.stream()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut n = 0;
    let heard = loop {
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} message got through in {limit:?}"
        );
        n += 1;
        from.send(Message::Text(&format!("say {room} {prefix} {n}")))
            .unwrap();
        match to.recv() {
            Ok(Received::Text(t)) if t.starts_with(prefix) => break t,
            // Published while Redis was down and dropped, unless the relay's thread had
            // already reconnected when it took them: either is right.
            Ok(Received::Text(t)) if t.starts_with("lost ") => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    };
    to.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
    heard
}

/// `a` and `b` each say `held from a N` / `held from b N` in "room" for each N of `range`, 100 ms
/// apart; returns how many each said.
fn converse(a: &mut Client, b: &mut Client, range: std::ops::Range<usize>) -> usize {
    let n = range.len();
    for i in range {
        a.send(Message::Text(&format!("say room held from a {i}")))
            .unwrap();
        b.send(Message::Text(&format!("say room held from b {i}")))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    n
}

/// `c` receives `held from FROM N` for each N of `range`, in order, and nothing else (the
/// first within 30 s: the relays reconnect with a backoff, then wait for the subscribers).
fn expect_in_order(c: &mut Client, from: &str, range: std::ops::Range<usize>) {
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for i in range {
        assert_eq!(text(c), format!("held from {from} {i}"));
    }
    c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
}

/// Waits until `f` holds, or fails with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn rooms_span_two_servers_and_survive_a_redis_restart() {
    init_log();
    let mut redis = Redis::start(&[]);
    let a_node = Node::start(&redis, "chat:");
    let b_node = Node::start(&redis, "chat:");
    assert_ne!(a_node.relay.origin(), b_node.relay.origin());
    assert!(a_node.relay.is_connected() && b_node.relay.is_connected());
    let (mut a, mut b) = (client(&a_node.url), client(&b_node.url));
    join(&mut a, "room");
    join(&mut b, "room");
    // A third client on A in another room hears nothing of "room".
    let mut other = client(&a_node.url);
    join(&mut other, "elsewhere");

    // Each sees the other's messages, text and binary, in order, and never its own back.
    a.send(Message::Text("say room hello from a")).unwrap();
    assert_eq!(text(&mut b), "hello from a");
    b.send(Message::Text("bin room bytes from b")).unwrap();
    b.send(Message::Text("say room hello from b")).unwrap();
    // Had A's relay delivered its own message back, a would see "hello from a" first.
    assert_eq!(
        a.recv().unwrap(),
        Received::Binary(b"bytes from b".to_vec())
    );
    assert_eq!(text(&mut a), "hello from b");
    let big = "x".repeat(200_000);
    a.send(Message::Text(&format!("say room {big}"))).unwrap();
    assert_eq!(text(&mut b), big);
    assert_eq!(a_node.relay.received(), 2);
    assert_eq!(b_node.relay.received(), 2);
    wait_for("confirmed publishes", TIMEOUT, || {
        a_node.relay.published() == 2 && b_node.relay.published() == 2
    });
    assert_eq!(a_node.relay.dropped() + b_node.relay.dropped(), 0);

    // Redis is killed mid-conversation, and restarted: what both sides say meanwhile is held,
    // and reaches the other side in order once Redis is back. Nothing is lost.
    redis.kill();
    wait_for("the relays to see redis down", TIMEOUT, || {
        !a_node.relay.is_connected() && !b_node.relay.is_connected()
    });
    let said = converse(&mut a, &mut b, 0..20);
    wait_for("the losses logged", TIMEOUT, || {
        !logged(
            log::Level::Warn,
            &["publishing connection down", &redis.addr()],
        )
        .is_empty()
            && !logged(log::Level::Warn, &["lost the subscription", &redis.addr()]).is_empty()
    });
    redis.spawn();
    // The conversation goes on while the relays reconnect.
    let said = said + converse(&mut a, &mut b, 20..30);
    expect_in_order(&mut b, "a", 0..said);
    expect_in_order(&mut a, "b", 0..said);
    assert_eq!(a_node.relay.dropped() + b_node.relay.dropped(), 0);
    wait_for("both relays connected", TIMEOUT, || {
        a_node.relay.is_connected() && b_node.relay.is_connected()
    });
    wait_for("the reconnection logged", TIMEOUT, || {
        !logged(log::Level::Info, &["resubscribed", &redis.addr()]).is_empty()
            && !logged(
                log::Level::Info,
                &["reconnected for publishing", &redis.addr()],
            )
            .is_empty()
    });
    // Nothing of "room" ever reached the other room, and no "lost" message arrived late.
    other
        .stream()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(other.recv().is_err(), "the other room heard nothing");

    let (a_relay, b_relay) = (a_node.relay.clone(), b_node.relay.clone());
    drop((a, b, other));
    a_node.stop();
    b_node.stop();
    a_relay.shutdown();
    b_relay.shutdown();
    wait_for("the relays' threads to end", TIMEOUT, || {
        !a_relay.is_running() && !b_relay.is_running()
    });
}

/// A client of each node in "room", once a first message went from `a_node`'s to `b_node`'s.
fn pair(a_node: &Node, b_node: &Node) -> (Client, Client) {
    let (mut a, mut b) = (client(&a_node.url), client(&b_node.url));
    join(&mut a, "room");
    join(&mut b, "room");
    a.send(Message::Text("say room hello")).unwrap();
    assert_eq!(text(&mut b), "hello");
    (a, b)
}

/// Options that notice a stall within about a second (the defaults take 5 s).
fn quick() -> RedisOptions {
    RedisOptions::default()
        .connect_timeout(Duration::from_secs(1))
        .io_timeout(Duration::from_secs(1))
        .keepalive(Duration::from_secs(1))
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn a_frozen_redis_loses_nothing() {
    init_log();
    let redis = Redis::start(&[]);
    let a_node = Node::start_with(&redis.url(), "frozen:", quick());
    let b_node = Node::start_with(&redis.url(), "frozen:", quick());
    let (mut a, mut b) = pair(&a_node, &b_node);

    // Redis is frozen (SIGSTOP): its connections stay open and silent. The relays notice it
    // (no answers) instead of taking it as up, and hold what is said meanwhile.
    redis.pause();
    let said = converse(&mut a, &mut b, 0..15);
    wait_for(
        "the relays to see redis stalled",
        Duration::from_secs(10),
        || !a_node.relay.is_connected() && !b_node.relay.is_connected(),
    );
    wait_for("the stall logged", Duration::from_secs(10), || {
        !logged(log::Level::Warn, &["no answer for", &redis.addr()]).is_empty()
            && !logged(log::Level::Warn, &["does not answer", &redis.addr()]).is_empty()
    });
    let said = said + converse(&mut a, &mut b, 15..30);
    // It wakes up: everything arrives, in order, once.
    redis.resume();
    let said = said + converse(&mut a, &mut b, 30..35);
    expect_in_order(&mut b, "a", 0..said);
    expect_in_order(&mut a, "b", 0..said);
    b.stream()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(b.recv().is_err(), "no duplicate after the last message");
    assert_eq!(a_node.relay.dropped() + b_node.relay.dropped(), 0);
    wait_for("both relays connected", TIMEOUT, || {
        a_node.relay.is_connected() && b_node.relay.is_connected()
    });
    drop((a, b));
    a_node.stop();
    b_node.stop();
}

/// A TCP proxy in front of Redis that can cut the connections it carries: they stay open and
/// go silent both ways (what comes is read and thrown away), as after a network or NAT drop,
/// while new connections are carried as before.
struct Proxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    cut_below: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(redis_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, cut_below) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let proxy = Proxy {
            port,
            accepted: accepted.clone(),
            cut_below: cut_below.clone(),
            stop: stop.clone(),
        };
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let id = accepted.fetch_add(1, Ordering::SeqCst);
                let (Ok(client), false) = (client, stop.load(Ordering::SeqCst)) else {
                    break;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    continue;
                };
                let ends = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ];
                for (mut from, mut to) in ends {
                    let cut_below = cut_below.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            let live = id >= cut_below.load(Ordering::SeqCst);
                            if live && to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// `redis://` through the proxy.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection carried now.
    fn cut(&self) {
        let accepted = self.accepted.load(Ordering::SeqCst);
        self.cut_below.store(accepted, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn dead_connections_are_replaced_while_redis_answers() {
    init_log();
    let redis = Redis::start(&[]);
    let proxy = Proxy::start(redis.port);
    let a_node = Node::start_with(&proxy.url(), "cut:", quick());
    let b_node = Node::start_with(&redis.url(), "cut:", quick());
    let (mut a, mut b) = pair(&a_node, &b_node);

    // (Once Redis has confirmed it: a publish whose answer is cut off is sent again.)
    wait_for("the first publish confirmed", TIMEOUT, || {
        a_node.relay.published() == 1
    });
    // a's two connections go dead; Redis is fine. What a says meanwhile is held, and sent on
    // the new connection once a fresh one gets answers where the old one does not.
    proxy.cut();
    for i in 0..10 {
        a.send(Message::Text(&format!("say room held from a {i}")))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("a's connections replaced", Duration::from_secs(15), || {
        !logged(
            log::Level::Warn,
            &["answers a new connection", &proxy.url()[8..]],
        )
        .is_empty()
            && !logged(log::Level::Warn, &["a probe did not come back"]).is_empty()
    });
    expect_in_order(&mut b, "a", 0..10);
    assert_eq!(a_node.relay.dropped(), 0);
    // And a hears b again (what b said while a's subscription was dead is missed: pub/sub).
    let heard = say_until_heard(&mut b, &mut a, "room", "back", Duration::from_secs(15));
    assert!(heard.starts_with("back"), "{heard}");
    drop((a, b));
    a_node.stop();
    b_node.stop();
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn publishes_past_the_outbox_bound_are_dropped_counted_and_reported() {
    init_log();
    let mut redis = Redis::start(&[]);
    let a_node = Node::start_with(
        &redis.url(),
        "bound:",
        RedisOptions::default().outbox_time(Duration::from_millis(500)),
    );
    let b_node = Node::start(&redis, "bound:");
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let seen = dropped.clone();
    a_node.relay.on_dropped(move |topic, msg| {
        let text = String::from_utf8_lossy(msg.as_bytes()).into_owned();
        seen.lock().unwrap().push(format!("{topic}: {text}"));
    });
    let (mut a, mut b) = pair(&a_node, &b_node);

    redis.kill();
    wait_for("the relays to see redis down", TIMEOUT, || {
        !a_node.relay.is_connected() && !b_node.relay.is_connected()
    });
    for i in 0..3 {
        a.send(Message::Text(&format!("say room gone {i}")))
            .unwrap();
    }
    // Held 0.5 s at most: then dropped, counted, handed to the callback in order, and logged
    // with a count.
    wait_for("three drops", TIMEOUT, || a_node.relay.dropped() == 3);
    assert_eq!(
        *dropped.lock().unwrap(),
        ["room: gone 0", "room: gone 1", "room: gone 2"]
    );
    wait_for("a warning that counts the drops", TIMEOUT, || {
        !logged(log::Level::Warn, &["dropped", "publishes", "outbox_time"]).is_empty()
    });
    // Back: what is said now gets through, and the dropped ones never come.
    redis.spawn();
    let heard = say_until_heard(&mut a, &mut b, "room", "after", Duration::from_secs(20));
    assert!(heard.starts_with("after"), "{heard}");
    wait_for("the reconnection logged with the drops", TIMEOUT, || {
        logged(
            log::Level::Warn,
            &["reconnected for publishing", &redis.addr()],
        )
        .iter()
        .any(|l| l.contains("publishes were dropped while it was down"))
    });
    drop((a, b));
    a_node.stop();
    b_node.stop();
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn foreign_publishers_use_the_documented_payload() {
    init_log();
    let redis = Redis::start(&[]);
    let node = Node::start(&redis, "ws[1]:");
    let mut c = client(&node.url);
    join(&mut c, "news");
    // Not wsloop's format, or not under the prefix: ignored. (The prefix has glob characters,
    // escaped in the pattern: "wsX1]:news" must not match.)
    let publish = |channel: &[u8], payload: &[u8]| {
        let reply = raw_command(redis.port, &[b"PUBLISH", channel, payload]).unwrap();
        assert!(
            reply.starts_with(b":"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    };
    publish(b"ws[1]:news", b"plain text from redis-cli");
    publish(b"wsX1]:news", b"T0123456789abcdefwrong channel");
    publish(b"ws[1]:news", b"X0123456789abcdefbad flag");
    // `T` or `B`, 16 characters of origin id, the message.
    publish(b"ws[1]:news", b"T0123456789abcdefhello from elsewhere");
    publish(b"ws[1]:news", b"B0123456789abcdef\x00\xff");
    assert_eq!(text(&mut c), "hello from elsewhere");
    assert_eq!(c.recv().unwrap(), Received::Binary(vec![0, 0xff]));
    assert_eq!(node.relay.received(), 2);
    // What this server publishes is on `<prefix><topic>` in that format.
    let mut sub = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    sub.set_read_timeout(Some(TIMEOUT)).unwrap();
    sub.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$10\r\nws[1]:news\r\n")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sub.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"*3\r\n$9\r\nsubscribe\r\n"));
    c.send(Message::Text("say news out")).unwrap();
    let n = sub.read(&mut buf).unwrap();
    let expected = format!(
        "*3\r\n$7\r\nmessage\r\n$10\r\nws[1]:news\r\n$20\r\nT{}out\r\n",
        node.relay.origin()
    );
    assert_eq!(String::from_utf8_lossy(&buf[..n]), expected);
    drop(c);
    node.stop();
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn one_relay_serves_every_reactor_of_a_cluster() {
    init_log();
    let redis = Redis::start(&[]);
    let mut cluster = Cluster::bind("127.0.0.1:0", 2, config(), Rooms::new).unwrap();
    let relay = RedisRelay::connect_with(
        &redis.url(),
        &cluster.handles(),
        "c:",
        RedisOptions::default().queue(1024),
    )
    .unwrap();
    cluster.add_relay(relay.clone());
    let cluster_url = format!("ws://{}/", cluster.local_addr());
    let cluster_handle = cluster.handle();
    let (tx, cluster_done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cluster.run());
    });
    let node = Node::start(&redis, "c:");

    // Clients on both reactors of the cluster.
    let mut clients = Vec::new();
    let mut reactors = std::collections::BTreeSet::new();
    while reactors.len() < 2 {
        assert!(clients.len() < 64, "64 connections all on one reactor");
        let mut c = client(&cluster_url);
        c.send(Message::Text("join room")).unwrap();
        let answer = text(&mut c);
        reactors.insert(answer.rsplit(' ').next().unwrap().to_owned());
        clients.push(c);
    }
    let mut outside = client(&node.url);
    join(&mut outside, "room");

    // From the other server: every cluster client, on either reactor, gets it once.
    outside
        .send(Message::Text("say room from outside"))
        .unwrap();
    for c in &mut clients {
        assert_eq!(text(c), "from outside");
    }
    // From one cluster client: the other cluster clients get it once (through the reactors'
    // relay, not back through Redis), and the other server gets it once (one PUBLISH, not
    // one per reactor).
    clients[0]
        .send(Message::Text("say room from inside"))
        .unwrap();
    assert_eq!(text(&mut outside), "from inside");
    // The reactor handed it to the other reactor before it handed it to Redis, so the marker,
    // sent once the other server has it, comes after it everywhere; a copy coming back
    // through Redis would come between them.
    outside.send(Message::Text("say room marker")).unwrap();
    for c in &mut clients[1..] {
        assert_eq!(text(c), "from inside");
    }
    for c in &mut clients {
        assert_eq!(text(c), "marker");
    }
    clients[0].send(Message::Text("say room second")).unwrap();
    assert_eq!(
        text(&mut outside),
        "second",
        "no duplicate of \"from inside\" before it"
    );
    // Redis answers the PUBLISH after delivering it: the count may lag a little.
    wait_for("two confirmed publishes", TIMEOUT, || {
        relay.published() == 2
    });

    drop((clients, outside));
    cluster_handle.shutdown().unwrap();
    assert!(matches!(
        cluster_done.recv_timeout(Duration::from_secs(10)),
        Ok(Ok(()))
    ));
    node.stop();
    // Every reactor it delivers to is gone: the threads end by themselves (after a 5 s
    // grace for the last handler calls' publishes).
    wait_for(
        "the cluster relay's threads to end",
        Duration::from_secs(10),
        || !relay.is_running(),
    );
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn an_intercepted_topic_goes_to_the_callback_not_the_subscribers() {
    init_log();
    let redis = Redis::start(&[]);
    let a_node = Node::start(&redis, "i:");
    let b_node = Node::start(&redis, "i:");
    let (tx, taken) = mpsc::channel();
    b_node.relay.intercept("ctl", move |msg| {
        let _ = tx.send(format!("{msg:?}"));
    });
    let (mut a, mut a2, mut b) = (
        client(&a_node.url),
        client(&a_node.url),
        client(&b_node.url),
    );
    for room in ["room", "ctl"] {
        join(&mut b, room);
        join(&mut a2, room);
    }

    // From A: "ctl" goes to B's callback, in order with the rest, and not to b; A's own
    // subscribers still get it.
    for line in [
        "say room before",
        "say ctl control",
        "bin ctl bytes",
        "say room after",
    ] {
        a.send(Message::Text(line)).unwrap();
    }
    assert_eq!(text(&mut b), "before");
    assert_eq!(text(&mut b), "after", "nothing of ctl reached b");
    let got: Vec<String> = taken.try_iter().collect();
    assert_eq!(
        got,
        ["Text(\"control\")", "Binary([98, 121, 116, 101, 115])"],
        "taken before \"after\" was delivered"
    );
    assert_eq!(text(&mut a2), "before");
    assert_eq!(text(&mut a2), "control");
    assert_eq!(a2.recv().unwrap(), Received::Binary(b"bytes".to_vec()));
    assert_eq!(text(&mut a2), "after");
    assert_eq!(b_node.relay.received(), 4);

    // What B publishes to ctl is not B's callback's (its own origin) and reaches A as usual.
    b.send(Message::Text("say ctl from b")).unwrap();
    assert_eq!(text(&mut a2), "from b");
    // A second intercept of the topic replaces the first.
    let (tx2, taken2) = mpsc::channel();
    b_node.relay.intercept("ctl", move |msg| {
        let _ = tx2.send(msg.as_bytes().to_vec());
    });
    a.send(Message::Text("say ctl again")).unwrap();
    a.send(Message::Text("say room marker")).unwrap();
    assert_eq!(text(&mut b), "marker");
    assert_eq!(taken2.try_iter().collect::<Vec<_>>(), [b"again".to_vec()]);
    // The first callback was dropped when it was replaced; the second when the thread ends.
    assert!(matches!(
        taken.try_recv(),
        Err(mpsc::TryRecvError::Disconnected)
    ));
    let relay = b_node.relay.clone();
    drop((a, a2, b));
    b_node.stop();
    relay.shutdown();
    wait_for("the relay's threads to end", TIMEOUT, || {
        !relay.is_running()
    });
    assert!(matches!(
        taken2.try_recv(),
        Err(mpsc::TryRecvError::Disconnected)
    ));
    a_node.stop();
}

#[test]
fn connect_errors_are_loud() {
    init_log();
    let handle = Server::bind("127.0.0.1:0", config(), Rooms::new(0))
        .unwrap()
        .handle();
    for url in ["127.0.0.1:6379", "http://h:1", "redis://", "redis://h:x"] {
        let e = RedisRelay::connect(url, handle.clone(), "p:").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Config {
                    option: "redis url",
                    ..
                }
            ),
            "{url}: {e}"
        );
    }
    // Nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = RedisRelay::connect(&format!("redis://127.0.0.1:{port}"), handle.clone(), "p:")
        .unwrap_err();
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
        "{e}"
    );
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    // rediss:// (TLS) is taken: the error is the refused connection.
    let e = RedisRelay::connect(&format!("rediss://127.0.0.1:{port}"), handle.clone(), "p:")
        .unwrap_err();
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
        "{e}"
    );
    let e = RedisRelay::connect_with("redis://127.0.0.1:1", &[], "p:", RedisOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn password_protected_redis() {
    init_log();
    let redis = Redis::start(&["--requirepass", "s3cret"]);
    let mut server = Server::bind("127.0.0.1:0", config(), Rooms::new(0)).unwrap();
    let wrong = format!("redis://:nope@127.0.0.1:{}", redis.port);
    let e = RedisRelay::connect(&wrong, server.handle(), "p:").unwrap_err();
    assert!(e.to_string().contains("AUTH refused"), "{e}");
    let none = RedisRelay::connect(&redis.url(), server.handle(), "p:").unwrap_err();
    assert!(none.to_string().contains("NOAUTH"), "{none}");
    let right = format!("redis://:s3cret@127.0.0.1:{}", redis.port);
    let relay = RedisRelay::connect(&right, server.handle(), "p:").unwrap();
    server.add_relay(relay.clone());
    let url = format!("ws://{}/", server.local_addr());
    let handle = server.handle();
    std::thread::spawn(move || server.run());
    let node = Node::start_with_url(&right, "p:");
    let (mut a, mut b) = (client(&url), client(&node.url));
    join(&mut a, "r");
    join(&mut b, "r");
    a.send(Message::Text("say r authenticated")).unwrap();
    assert_eq!(text(&mut b), "authenticated");
    drop((a, b));
    relay.shutdown();
    wait_for("the relay's threads to end", TIMEOUT, || {
        !relay.is_running()
    });
    handle.shutdown().unwrap();
    node.stop();
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn acl_users_authenticate_and_their_channel_rights_hold() {
    init_log();
    // No default user: alice may use the channels p:*, bob only q:*.
    let redis = Redis::start(&[
        "--user",
        "default",
        "off",
        "--user",
        "alice",
        "on",
        ">wonderland",
        "~*",
        "&p:*",
        "+@all",
        "--user",
        "bob",
        "on",
        ">builder",
        "~*",
        "&q:*",
        "+@all",
    ]);
    let server = Server::bind("127.0.0.1:0", config(), Rooms::new(0)).unwrap();
    let url = |user: &str, password: &str| {
        format!("redis://{user}:{password}@127.0.0.1:{}/3", redis.port)
    };
    let e = RedisRelay::connect(&url("alice", "nope"), server.handle(), "p:").unwrap_err();
    assert!(e.to_string().contains("AUTH refused"), "{e}");
    let e = RedisRelay::connect(&redis.url(), server.handle(), "p:").unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "{e}");
    // bob authenticates, but may not subscribe to p:*.
    let e = RedisRelay::connect(&url("bob", "builder"), server.handle(), "p:").unwrap_err();
    assert!(e.to_string().contains("no permissions"), "{e}");
    drop(server);

    // Two servers as alice, on database 3, share a room.
    let a_node = Node::start_with_url(&url("alice", "wonderland"), "p:");
    let b_node = Node::start_with_url(&url("alice", "wonderland"), "p:");
    let (mut a, mut b) = (client(&a_node.url), client(&b_node.url));
    join(&mut a, "r");
    join(&mut b, "r");
    a.send(Message::Text("say r through an ACL user")).unwrap();
    assert_eq!(text(&mut b), "through an ACL user");
    drop((a, b));
    a_node.stop();
    b_node.stop();
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn rediss_connects_over_tls_and_checks_the_certificate() {
    init_log();
    let cert = Cert::new();
    let tls_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (cert_path, key_path) = (
        cert.cert_path().display().to_string(),
        cert.key_path().display().to_string(),
    );
    let _redis = Redis::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert_path,
        "--tls-key-file",
        &key_path,
        "--tls-ca-cert-file",
        &cert_path,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    // The certificate is checked against the roots the redis crate loads (rustls-native-certs,
    // which reads SSL_CERT_FILE when it is set): first another certificate only.
    let other = Cert::new();
    let server = Server::bind("127.0.0.1:0", config(), Rooms::new(0)).unwrap();
    std::env::set_var("SSL_CERT_FILE", other.cert_path());
    let e = RedisRelay::connect(&url, server.handle(), "p:").unwrap_err();
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");
    drop(server);
    std::env::set_var("SSL_CERT_FILE", cert.cert_path());
    let a_node = Node::start_with_url(&url, "p:");
    let b_node = Node::start_with_url(&url, "p:");
    let (mut a, mut b) = (client(&a_node.url), client(&b_node.url));
    join(&mut a, "r");
    join(&mut b, "r");
    a.send(Message::Text("say r over tls")).unwrap();
    assert_eq!(text(&mut b), "over tls");
    drop((a, b));
    a_node.stop();
    b_node.stop();
}
