//! Metrics after known traffic, value by value: from the library (`Handle::metrics`), and
//! from `wsloop echo --metrics` read by a real Prometheus parser (Python's
//! `prometheus_client`).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::client_frame;
use common::handlers::Echo;
use wsloop::proto::frame::OpCode;
use wsloop::{Config, Metrics, Server};

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";
/// No `Sec-WebSocket-Key`: a bad handshake.
const BAD_UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// What the known traffic was, as the client saw it.
struct Traffic {
    /// Bytes the clients wrote.
    written: u64,
    /// Bytes the clients read.
    read: u64,
    /// The bad handshake's answer.
    refused_status: u16,
}

/// Reads until the server closes the connection.
fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    all
}

/// One client upgrades, sends three texts of 5 bytes (echoed) and closes with 1000; another
/// sends a request without a key.
fn known_traffic(addr: SocketAddr) -> Traffic {
    let mut written = 0;
    let mut good = TcpStream::connect(addr).unwrap();
    let mut out = UPGRADE.as_bytes().to_vec();
    for _ in 0..3 {
        out.extend(client_frame(OpCode::Text, true, b"hello"));
    }
    out.extend(client_frame(OpCode::Close, true, &1000u16.to_be_bytes()));
    good.write_all(&out).unwrap();
    written += out.len() as u64;
    let answer = read_to_end(&mut good);
    assert!(answer.starts_with(b"HTTP/1.1 101"));
    drop(good);

    let mut bad = TcpStream::connect(addr).unwrap();
    bad.write_all(BAD_UPGRADE.as_bytes()).unwrap();
    written += BAD_UPGRADE.len() as u64;
    let refusal = read_to_end(&mut bad);
    let status = std::str::from_utf8(&refusal[9..12])
        .unwrap()
        .parse()
        .unwrap();
    Traffic {
        written,
        read: (answer.len() + refusal.len()) as u64,
        refused_status: status,
    }
}

/// Asks for the metrics until `done` holds for them (the server sees the clients leave a
/// little after they do), at most 10 s.
fn settled(mut get: impl FnMut() -> Metrics, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = get();
        if done(&metrics) || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_library_counts_known_traffic_value_by_value() {
    let mut server = Server::bind("127.0.0.1:0", Config::default(), Echo).unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let reactor = std::thread::spawn(move || server.run());
    let traffic = known_traffic(addr);
    let get = || handle.metrics(Duration::from_secs(5)).unwrap();
    let m = settled(get, |m| m.connections_accepted == 2 && !m.closes.is_empty());
    assert_eq!(m.connections_accepted, 2);
    assert_eq!(m.connections_open, 0);
    assert_eq!((m.refused_limit, m.refused_origin), (0, 0));
    let failures = BTreeMap::from([(traffic.refused_status, 1)]);
    assert_eq!(m.handshake_failures, failures);
    assert_eq!((m.messages_in, m.messages_out), (3, 3));
    assert_eq!(m.bytes_in, traffic.written);
    assert_eq!(m.bytes_out, traffic.read);
    assert_eq!(m.closes, BTreeMap::from([(("closed", Some(1000)), 1)]));
    assert_eq!((m.bytes_buffered, m.connections_shed), (0, 0));
    assert_eq!(m.tls_handshakes_failed, 0);
    handle.shutdown().unwrap();
    reactor.join().unwrap().unwrap();
}

#[cfg(feature = "cli")]
mod prometheus {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;

    use serde_json::Value;

    use super::*;

    /// `wsloop echo --metrics`, and the addresses it printed.
    struct EchoProcess {
        child: Child,
        ws: SocketAddr,
        metrics: SocketAddr,
    }

    impl Drop for EchoProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn start() -> EchoProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["echo", "--addr", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("wsloop echo starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut ws, mut metrics) = (None, None);
        while ws.is_none() || metrics.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a log line");
            let after = |marker: &str| {
                let rest = line.split(marker).nth(1)?;
                rest.split('/').next()?.parse::<SocketAddr>().ok()
            };
            ws = ws.or(after("listening on ws://"));
            metrics = metrics.or(after("metrics on http://"));
        }
        EchoProcess {
            child,
            ws: ws.unwrap(),
            metrics: metrics.unwrap(),
        }
    }

    /// Every sample of the page, as Python's `prometheus_client` parsed it.
    fn parsed(metrics: SocketAddr) -> BTreeMap<String, f64> {
        let python = std::env::var("WSLOOP_PYTHON").expect("WSLOOP_PYTHON (bash tests/run.sh)");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/metrics_check.py"
        );
        let out = Command::new(python)
            .arg(script)
            .arg(format!("http://{metrics}/metrics"))
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "the parser refused the page: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
        (json.into_iter())
            .map(|(k, v)| (k, v.as_f64().expect("a number")))
            .collect()
    }

    #[test]
    #[ignore = "needs Python prometheus_client (bash tests/run.sh)"]
    fn wsloop_echo_serves_metrics_that_prometheus_parses_value_by_value() {
        let echo = start();
        let traffic = known_traffic(echo.ws);
        let mut samples = parsed(echo.metrics);
        for _ in 0..100 {
            if samples.get("wsloop_closes_total{code=1000,why=closed}") == Some(&1.0)
                && samples.get("wsloop_connections_open{}") == Some(&0.0)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            samples = parsed(echo.metrics);
        }
        let status = traffic.refused_status;
        let expected = [
            ("wsloop_connections_open{}", 0.0),
            ("wsloop_connections_accepted_total{}", 2.0),
            ("wsloop_bytes_buffered{}", 0.0),
            ("wsloop_connections_shed_total{}", 0.0),
            ("wsloop_tls_handshakes_failed_total{}", 0.0),
            ("wsloop_messages_in_total{}", 3.0),
            ("wsloop_messages_out_total{}", 3.0),
            ("wsloop_bytes_in_total{}", traffic.written as f64),
            ("wsloop_bytes_out_total{}", traffic.read as f64),
            ("wsloop_connections_refused_total{reason=limit}", 0.0),
            ("wsloop_connections_refused_total{reason=origin}", 0.0),
            (
                "wsloop_connections_refused_total{reason=bad_handshake}",
                1.0,
            ),
            (
                &format!("wsloop_handshake_failures_total{{status={status}}}"),
                1.0,
            ),
            ("wsloop_closes_total{code=1000,why=closed}", 1.0),
        ];
        let expected: BTreeMap<String, f64> = (expected.into_iter())
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(samples, expected);
        // Any other path is not the metrics.
        let mut other = TcpStream::connect(echo.metrics).unwrap();
        other.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(read_to_end(&mut other).starts_with(b"HTTP/1.1 404"));
    }
}
