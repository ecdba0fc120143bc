//! Cluster: N reactors on N threads sharing one port through SO_REUSEPORT, with publishes
//! carried between reactors, over real sockets.
//!
//! Every read has a timeout and every wait a deadline.

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::cert::Cert;
use common::handlers::Rooms;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use wsloop::client::{Client, Received};
use wsloop::{CloseCode, Cluster, ClusterHandle, Config, Error, Message};

const TIMEOUT: Duration = Duration::from_secs(5);

fn config() -> Config {
    Config::default().close_timeout(Duration::from_secs(2))
}

/// Starts a cluster of `threads` reactors on a free port; returns its URL, handle, and a
/// channel that gets `run`'s result.
fn start(threads: usize) -> (String, ClusterHandle, mpsc::Receiver<Result<(), Error>>) {
    let cluster =
        Cluster::bind("127.0.0.1:0", threads, config(), Rooms::new).expect("bind the cluster");
    assert_eq!(cluster.threads(), threads);
    assert_ne!(
        cluster.local_addr().port(),
        0,
        "port 0 resolved to a real port"
    );
    assert_eq!(cluster.handles().len(), threads);
    let url = format!("ws://{}/", cluster.local_addr());
    let handle = cluster.handle();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cluster.run());
    });
    (url, handle, rx)
}

fn client(url: &str) -> Client {
    let c = Client::connect(url).expect("connect to the cluster");
    c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

fn text(c: &mut Client) -> String {
    match c.recv().expect("a message within the timeout") {
        Received::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

fn ask(c: &mut Client, question: &str) -> String {
    c.send(Message::Text(question)).unwrap();
    text(c)
}

/// Opens `n` clients, each joined to `room`; returns them with the reactor each landed on.
fn joined(url: &str, n: usize, room: &str) -> Vec<(Client, usize)> {
    (0..n)
        .map(|_| {
            let mut c = client(url);
            let answer = ask(&mut c, &format!("join {room}"));
            let reactor = answer
                .strip_prefix(&format!("joined {room} on "))
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
            (c, reactor)
        })
        .collect()
}

/// Clients per reactor.
fn spread(clients: &[(Client, usize)]) -> BTreeMap<usize, usize> {
    let mut per = BTreeMap::new();
    for (_, reactor) in clients {
        *per.entry(*reactor).or_insert(0) += 1;
    }
    per
}

#[test]
fn a_publish_reaches_subscribers_on_every_reactor_once() {
    let threads = 3;
    let (url, handle, done) = start(threads);
    // The kernel hashes each connection's 4-tuple to one of the listeners: with 30
    // connections the odds that all land on one reactor are 3 * 3^-30.
    let mut clients = joined(&url, 30, "lobby");
    let per = spread(&clients);
    assert!(per.len() >= 2, "clients spread over reactors: {per:?}");
    assert!(per.keys().all(|r| *r < threads), "{per:?}");
    // A client that did not join anything, on whichever reactor, hears nothing.
    let mut outsider = client(&url);

    // One client publishes; every subscriber, on every reactor, the sender included, gets it.
    let (sender, sender_reactor) = &mut clients[0];
    let sender_reactor = *sender_reactor;
    sender
        .send(Message::Text("shout lobby hello from a client"))
        .unwrap();
    // A publish from outside, through the cluster handle (reactor 0 relays it).
    handle
        .publish("lobby", Message::Text("hello from the handle"))
        .unwrap();
    // Then a marker delivered without relaying, on every reactor: anything delivered twice
    // (a relay loop) would show up before it.
    std::thread::sleep(Duration::from_millis(100));
    handle
        .publish_local("lobby", Message::Binary(b"end"))
        .unwrap();
    for (i, (c, reactor)) in clients.iter_mut().enumerate() {
        let mut got = vec![text(c), text(c)];
        got.sort();
        assert_eq!(
            got,
            ["hello from a client", "hello from the handle"],
            "client {i} on reactor {reactor} (sender on {sender_reactor})"
        );
        assert_eq!(
            c.recv().unwrap(),
            Received::Binary(b"end".to_vec()),
            "client {i} on reactor {reactor}: nothing delivered twice"
        );
    }
    assert_eq!(ask(&mut outsider, "echo still here"), "still here");

    drop((clients, outsider));
    handle.shutdown().unwrap();
    let result = done.recv_timeout(Duration::from_secs(10));
    assert!(matches!(result, Ok(Ok(()))), "run returned {result:?}");
}

#[test]
fn shutdown_closes_every_client_on_every_reactor_with_1001() {
    let threads = 2;
    let (url, handle, done) = start(threads);
    let mut clients = joined(&url, 24, "r");
    let per = spread(&clients);
    assert_eq!(per.len(), threads, "clients on both reactors: {per:?}");

    handle.shutdown().unwrap();
    for (i, (c, reactor)) in clients.iter_mut().enumerate() {
        match c.recv() {
            Ok(Received::Close(Some(code), reason)) => {
                assert_eq!(code, CloseCode::GOING_AWAY, "client {i} on {reactor}");
                assert_eq!(reason, "server shutdown");
            }
            other => panic!("client {i} on reactor {reactor}: expected close 1001, got {other:?}"),
        }
        // Completing the close handshake lets the reactors finish before close_timeout.
        let _ = c.close(CloseCode::GOING_AWAY, "");
    }
    drop(clients);
    let result = done.recv_timeout(Duration::from_secs(10));
    assert!(matches!(result, Ok(Ok(()))), "run returned {result:?}");
    // Every listener is closed: the port takes no new connections.
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
    // Every reactor's server is gone: its handle refuses commands.
    assert!(handle.reactors().iter().all(|h| {
        h.publish_local("r", Message::Text("late")) == Err(wsloop::HandleError::Stopped)
    }));
}

#[test]
fn one_thread_is_a_plain_server() {
    let (url, handle, done) = start(1);
    let mut clients = joined(&url, 3, "solo");
    assert_eq!(spread(&clients), BTreeMap::from([(0, 3)]));
    clients[0].0.send(Message::Text("shout solo hi")).unwrap();
    for (c, _) in &mut clients {
        assert_eq!(text(c), "hi");
    }
    handle.shutdown().unwrap();
    for (c, _) in &mut clients {
        assert!(matches!(
            c.recv(),
            Ok(Received::Close(Some(CloseCode::GOING_AWAY), _))
        ));
        let _ = c.close(CloseCode::GOING_AWAY, "");
    }
    drop(clients);
    assert!(matches!(
        done.recv_timeout(Duration::from_secs(10)),
        Ok(Ok(()))
    ));
}

#[test]
fn bind_errors_name_the_cause() {
    let zero = Cluster::bind("127.0.0.1:0", 0, Config::default(), |_| Rooms::new(0));
    assert!(
        matches!(
            &zero,
            Err(Error::Config {
                option: "threads",
                ..
            })
        ),
        "{zero:?}"
    );
    let bad = Cluster::bind(
        "127.0.0.1:0",
        2,
        Config::default().max_connections(0),
        |_| Rooms::new(0),
    );
    assert!(
        matches!(
            &bad,
            Err(Error::Config {
                option: "max_connections",
                ..
            })
        ),
        "{bad:?}"
    );
    // A port held by a socket without SO_REUSEPORT cannot be shared.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let clash = Cluster::bind(&addr, 2, Config::default(), |_| Rooms::new(0));
    match clash {
        Err(Error::Bind { addr: a, .. }) => assert_eq!(a, addr),
        other => panic!("expected a bind error, got {other:?}"),
    }
    let nonsense = Cluster::bind("not an address", 2, Config::default(), |_| Rooms::new(0));
    assert!(matches!(nonsense, Err(Error::Bind { .. })));
}

/// Binds a socket with SO_REUSEPORT (as another program sharing ports would) to `addr`.
#[cfg(unix)]
fn reuseport_bind(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(16)?;
    Ok(socket)
}

#[test]
fn only_the_reactors_of_one_cluster_share_a_port() {
    for (first, second) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        let (url, handle, done) = start(first);
        let addr: SocketAddr = url["ws://".len()..url.len() - 1].parse().unwrap();
        let what = format!("a {second}-reactor cluster on a {first}-reactor cluster's port");

        let clash = Cluster::bind(&addr.to_string(), second, config(), Rooms::new);
        match &clash {
            Err(e @ Error::Bind { addr: a, source }) => {
                assert_eq!(a, &addr.to_string(), "{what}");
                assert_eq!(source.kind(), ErrorKind::AddrInUse, "{what}: {e}");
                assert!(e.to_string().contains(&addr.to_string()), "{what}: {e}");
            }
            other => panic!("{what}: expected a bind error, got {other:?}"),
        }
        drop(clash);
        // Neither an ordinary listener nor (with one reactor) a socket that sets
        // SO_REUSEPORT itself gets in.
        assert!(std::net::TcpListener::bind(addr).is_err(), "{what}");
        #[cfg(unix)]
        if first == 1 {
            assert!(reuseport_bind(addr).is_err(), "{what}: SO_REUSEPORT");
        }

        // Every connection reaches the first cluster.
        let clients = joined(&url, 8, "here");
        assert!(clients.iter().all(|(_, r)| *r < first), "{what}");
        drop(clients);
        handle.shutdown().unwrap();
        assert!(matches!(
            done.recv_timeout(Duration::from_secs(10)),
            Ok(Ok(()))
        ));

        // Once it has ended, the port is free again.
        let again = Cluster::bind(&addr.to_string(), second, config(), Rooms::new);
        assert!(again.is_ok(), "{what}: rebinding after the end: {again:?}");
    }
}

#[test]
fn tls_cluster_serves_wss_on_every_reactor() {
    let cert = Cert::new();
    let tls = cert.server_config();

    let cluster = Cluster::bind_tls("127.0.0.1:0", 2, tls, config(), Rooms::new)
        .expect("bind the TLS cluster");
    assert!(cluster.is_tls());
    let addr = cluster.local_addr();
    let handle = cluster.handle();
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cluster.run());
    });

    let client_config = cert.client_config();
    let mut reactors = BTreeMap::new();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = ClientConnection::new(client_config.clone(), name).unwrap();
        let mut c = Client::handshake(StreamOwned::new(tls, stream), "localhost", "/", &[])
            .expect("wss handshake");
        c.send(Message::Text("join secure")).unwrap();
        let Received::Text(answer) = c.recv().unwrap() else {
            panic!("expected text")
        };
        let reactor: usize = answer.rsplit(' ').next().unwrap().parse().unwrap();
        *reactors.entry(reactor).or_insert(0) += 1;
        clients.push(c);
    }
    assert_eq!(
        reactors.len(),
        2,
        "wss clients on both reactors: {reactors:?}"
    );
    clients[0]
        .send(Message::Text("shout secure over tls"))
        .unwrap();
    for c in &mut clients {
        assert_eq!(c.recv().unwrap(), Received::Text("over tls".into()));
    }
    handle.shutdown().unwrap();
    for c in &mut clients {
        assert!(matches!(
            c.recv(),
            Ok(Received::Close(Some(CloseCode::GOING_AWAY), _))
        ));
        let _ = c.close(CloseCode::GOING_AWAY, "");
    }
    drop(clients);
    assert!(matches!(
        done.recv_timeout(Duration::from_secs(10)),
        Ok(Ok(()))
    ));
}

const FD_CHILD: &str = "WSLOOP_CLUSTER_FD_CHILD";
const FD_LIMIT: usize = 256;

/// Issue 27, item 8: each reactor of a cluster clamped `max_connections` to the whole
/// process's open-files limit, so two reactors together could pass it and `accept` failed
/// with EMFILE, leaving clients unanswered. Now the reactors split it: a 2-reactor cluster in
/// a child process with 256 descriptors answers every one of 300 clients, 101 or 503, and
/// warns once about the lowered limit.
///
/// The cluster runs in a child process (this test binary again) so that the low limit does not
/// touch the other tests; the clients run here.
#[test]
fn reactors_split_the_open_files_limit() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    if std::env::var_os(FD_CHILD).is_some() {
        return fd_limited_cluster();
    }
    common::memory::raise_fd_limit(4096);
    // The shell lowers the child's limit; the child is this test binary, running this test.
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args([
            "reactors_split_the_open_files_limit",
            "--exact",
            "--nocapture",
        ])
        .envs([(FD_CHILD, "1"), ("RUST_LOG", "warn")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child cluster");
    let to_child = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let mut from_child = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = from_child
        .find_map(|line| line.ok()?.strip_prefix("ADDR ")?.parse().ok())
        .expect("the child's address");

    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..300 {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
            .write_all(common::upgrade_request("/", &[]).as_bytes())
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        match head.split(' ').nth(1) {
            Some("101") => open.push(stream),
            Some("503") => refused += 1,
            _ => panic!(
                "client {i} got {head:?} with {} open: the cluster ran out of descriptors",
                open.len()
            ),
        }
    }
    drop(to_child);
    let log = log.join().unwrap();
    assert!(child.wait().unwrap().success(), "the child failed: {log}");
    let held = open.len();
    println!("{held} connections held, {refused} refused with 503 (limit {FD_LIMIT})");
    // Both reactors' connections, and their 64 refusal slots each, fit in the limit.
    assert!(held + 2 * 64 <= FD_LIMIT - 16, "{held} held");
    assert!(held >= FD_LIMIT / 4, "only {held} held");
    assert!(refused > 0);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("max_connections lowered"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("per reactor (2 reactors share it)"),
        "{log}"
    );
}

/// The child of [`reactors_split_the_open_files_limit`]: a 2-reactor cluster (with the
/// 256-descriptor limit the shell set), until its stdin closes.
fn fd_limited_cluster() {
    use std::io::Read;
    let _ = env_logger::builder().is_test(false).try_init();
    let (url, handle, done) = start(2);
    println!(
        "ADDR {}",
        url.trim_start_matches("ws://").trim_end_matches('/')
    );
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    handle.shutdown().unwrap();
    let _ = done.recv_timeout(Duration::from_secs(10));
}
