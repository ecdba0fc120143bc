//! The `wsloop` command, run as a process: `wsloop echo` serves, and `wsloop bench` against it
//! exits 0 with the right counts (echo, open loop, connections, fan-out, wss, IPv6, --json),
//! and exits 1 against a server that corrupts its echoes or is not there.
//!
//! The binary exists only with the `cli` feature: `cargo test --features cli --test cli`
//! (tests/run.sh passes it). Without the feature this file is empty.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};

const WSLOOP: &str = env!("CARGO_BIN_EXE_wsloop");

/// A `wsloop echo` process, killed when dropped.
struct EchoServer {
    child: Child,
    url: String,
}

impl EchoServer {
    /// Starts `wsloop echo ARGS` on port 0 and reads its URL from the log line.
    fn start(addr: &str, args: &[&str]) -> Option<EchoServer> {
        let mut child = Command::new(WSLOOP)
            .args(["echo", "--addr", addr])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wsloop echo starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the log to its end, so that the server never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split(' ').next().unwrap_or_default().to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => Some(EchoServer { child, url }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wsloop bench URL ARGS --json`; returns the output and the parsed summary.
fn bench(url: &str, args: &[&str]) -> (Output, Value) {
    let out = Command::new(WSLOOP)
        .arg("bench")
        .arg(url)
        .args(args)
        .arg("--json")
        .output()
        .expect("wsloop bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "--json output does not parse ({e}): {stdout:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, summary)
}

fn int(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Asserts a clean run: exit 0, no errors, every connection open, nothing lost.
fn assert_clean(out: &Output, v: &Value, conns: u64) {
    assert!(out.status.success(), "exit {:?}: {v}", out.status);
    assert_eq!(int(v, "errors"), 0, "{v}");
    assert_eq!(int(v, "established"), conns, "{v}");
    assert_eq!(int(v, "failed"), 0, "{v}");
    assert_eq!(int(v, "lost"), 0, "{v}");
}

#[test]
fn help_lists_every_command() {
    let out = Command::new(WSLOOP).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for command in ["echo", "bench"] {
        assert!(help.contains(command), "{help}");
        let sub = Command::new(WSLOOP)
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(sub.status.success(), "{command} --help");
    }
    let bad = Command::new(WSLOOP).args(["bench"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "a missing URL is a usage error");
}

#[test]
fn closed_loop_echo_is_verified_and_counted() {
    let server = EchoServer::start("127.0.0.1:0", &["--no-deflate"]).expect("echo listens");
    let (out, v) = bench(
        &server.url,
        &[
            "--conns",
            "8",
            "--inflight",
            "4",
            "--seconds",
            "1",
            "--size",
            "100",
        ],
    );
    assert_clean(&out, &v, 8);
    let (sent, messages) = (int(&v, "sent"), int(&v, "messages"));
    assert!(messages > 100, "{v}");
    // Every message sent was echoed: those within the window are counted, and at most the
    // 8 x 4 in flight at its end came after it.
    assert!(sent >= messages && sent - messages <= 8 * 4, "{v}");
    assert_eq!(v["latency_us"]["count"].as_u64(), Some(sent), "{v}");
    assert_eq!(v["inflight"].as_u64(), Some(4));
    // The progress line and the human table.
    let human = Command::new(WSLOOP)
        .args(["bench", &server.url, "--conns", "2", "--seconds", "1.5"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success());
    assert!(table.contains("errors: 0"), "{table}");
    let last = table.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("bench=echo conns=2 established=2 "),
        "{last}"
    );
    let progress = String::from_utf8_lossy(&human.stderr);
    assert!(
        progress.contains("all connections established"),
        "{progress}"
    );
    assert!(progress.contains(" msg/s, "), "{progress}");
}

/// Two threads, and 8 MiB messages, more than a loopback socket takes at once, so that a write
/// blocks and resumes on writability (the server echoes nothing until the whole message is
/// in): every echo comes back.
#[test]
fn threads_and_writes_that_block() {
    let server = EchoServer::start("127.0.0.1:0", &["--no-deflate"]).expect("echo listens");
    let args = [
        "--conns",
        "2",
        "--threads",
        "2",
        "--size",
        "8m",
        "--binary",
        "--seconds",
        "1",
    ];
    let (out, v) = bench(&server.url, &args);
    // Clean: nothing lost, so every message sent (one at least per connection) came back.
    assert_clean(&out, &v, 2);
    assert!(int(&v, "sent") >= 2, "{v}");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("all connections established"),
        "{progress}"
    );
}

/// With one thread (the default) the bench starts no thread of its own: the worker runs on
/// the main thread and prints the progress line itself.
#[cfg(target_os = "linux")]
#[test]
fn one_thread_starts_no_thread() {
    let server = EchoServer::start("127.0.0.1:0", &["--no-deflate"]).expect("echo listens");
    let mut child = Command::new(WSLOOP)
        .args(["bench", &server.url, "--conns", "2", "--seconds", "1.5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(700));
    let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .map(Iterator::count)
        .unwrap_or(0);
    assert!(child.wait().unwrap().success());
    assert_eq!(tasks, 1, "threads of a one-thread bench");
}

#[test]
fn open_loop_deflate_and_binary() {
    let server = EchoServer::start("127.0.0.1:0", &[]).expect("echo listens");
    let (out, v) = bench(
        &server.url,
        &[
            "--conns",
            "4",
            "--rate",
            "400",
            "--seconds",
            "1",
            "--deflate",
            "--binary",
            "--size",
            "2k",
            "--threads",
            "2",
        ],
    );
    assert_clean(&out, &v, 4);
    assert_eq!(int(&v, "threads"), 2);
    assert_eq!(v["rate"].as_u64(), Some(400));
    let sent = int(&v, "sent");
    assert!((300..=410).contains(&sent), "about 400 sent in 1 s: {v}");
    assert_eq!(v["latency_us"]["count"].as_u64(), Some(sent), "{v}");
}

#[test]
fn connection_mode_counts_handshakes() {
    let server = EchoServer::start("127.0.0.1:0", &["--no-deflate"]).expect("echo listens");
    let (out, v) = bench(
        &server.url,
        &[
            "--mode",
            "connect",
            "--conns",
            "200",
            "--connect-rate",
            "2000",
            "--hold",
            "0.5",
        ],
    );
    assert_clean(&out, &v, 200);
    assert_eq!(v["handshake_us"]["count"].as_u64(), Some(200), "{v}");
    // 200 at 2000/s take at least 0.1 s.
    assert!(v["connect_seconds"].as_f64().unwrap() >= 0.09, "{v}");
    assert!(v["handshakes_per_s"].as_f64().unwrap() <= 2200.0, "{v}");
}

#[test]
fn churn_mode_cycles_connections() {
    let server = EchoServer::start("127.0.0.1:0", &["--no-deflate"]).expect("echo listens");
    let pid = server.child.id().to_string();
    let (out, v) = bench(
        &server.url,
        &[
            "--mode",
            "churn",
            "--conns",
            "8",
            "--seconds",
            "1",
            "--server-pid",
            &pid,
        ],
    );
    assert!(out.status.success(), "exit {:?}: {v}", out.status);
    assert_eq!(int(&v, "errors"), 0, "{v}");
    assert_eq!(int(&v, "failed"), 0, "{v}");
    assert_eq!(v["failures"], serde_json::json!({}), "{v}");
    // On loopback the connections come from 32 addresses of 127/8.
    assert_eq!(int(&v, "sources"), 32, "{v}");
    // Every connection counted was opened, had its message echoed and was closed.
    let cycles = int(&v, "cycles");
    assert!(
        cycles > 8,
        "more connections than --conns went through: {v}"
    );
    assert!(int(&v, "established") >= cycles, "{v}");
    assert!(int(&v, "messages") >= cycles, "{v}");
    assert!(
        v["handshake_us"]["count"].as_u64().unwrap() >= cycles,
        "{v}"
    );
    assert!(v["conns_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["cpu"]["server_us_per_conn"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}

#[test]
fn churn_counts_failures_by_cause() {
    // A port bound but not listening (so that no other test's server can take it): every
    // connect is refused.
    let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    holder.bind(&any.into()).unwrap();
    let port = holder.local_addr().unwrap().as_socket().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/");
    let (out, v) = bench(
        &url,
        &[
            "--mode",
            "churn",
            "--conns",
            "2",
            "--seconds",
            "0.3",
            "--source",
            "127.0.0.1",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(int(&v, "cycles"), 0, "{v}");
    assert_eq!(int(&v, "sources"), 1, "{v}");
    let failed = int(&v, "failed");
    assert!(failed > 0, "{v}");
    assert_eq!(
        v["failures"],
        serde_json::json!({ "refused": failed }),
        "{v}"
    );
}

#[test]
fn fanout_through_a_broadcast_server() {
    let server = EchoServer::start("127.0.0.1:0", &["--broadcast"]).expect("echo listens");
    let (out, v) = bench(
        &server.url,
        &[
            "--mode",
            "fanout",
            "--conns",
            "12",
            "--publishers",
            "2",
            "--rate",
            "200",
            "--size",
            "64",
            "--seconds",
            "1",
        ],
    );
    assert_clean(&out, &v, 12);
    let sent = int(&v, "sent");
    assert!((150..=210).contains(&sent), "{v}");
    // Every published message reached the 10 subscribers.
    assert_eq!(v["latency_us"]["count"].as_u64(), Some(sent * 10), "{v}");
}

#[test]
fn ipv6() {
    let Some(server) = EchoServer::start("[::1]:0", &["--no-deflate"]) else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    assert!(server.url.starts_with("ws://[::1]:"), "{}", server.url);
    let (out, v) = bench(&server.url, &["--conns", "3", "--seconds", "0.5"]);
    assert_clean(&out, &v, 3);
}

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files in a temp dir.
fn cert_dir() -> PathBuf {
    let names = vec!["localhost".into(), "127.0.0.1".into()];
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wsloop-cli-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    dir
}

#[test]
fn wss_with_cafile_and_insecure() {
    let dir = cert_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = EchoServer::start(
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .expect("echo listens");
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    let port = server.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let by_name = format!("wss://localhost:{port}/");
    let cafile = cert.to_str().unwrap();
    let (out, v) = bench(
        &by_name,
        &[
            "--conns",
            "3",
            "--seconds",
            "0.5",
            "--cafile",
            cafile,
            "--deflate",
        ],
    );
    assert_clean(&out, &v, 3);
    let (out, v) = bench(
        &server.url,
        &["--conns", "2", "--seconds", "0.5", "--insecure"],
    );
    assert_clean(&out, &v, 2);
    // A CA file with no certificate is a usage error; one that did not sign the server's
    // certificate fails every handshake.
    let out = Command::new(WSLOOP)
        .args(["bench", &server.url, "--cafile", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("/dev/null: no certificate found"), "{said}");
    let other = cert_dir().join("cert.pem");
    let (out, v) = bench(
        &server.url,
        &[
            "--conns",
            "2",
            "--seconds",
            "0.5",
            "--cafile",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(int(&v, "failed"), 2, "{v}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Echoes every message with its last byte changed.
struct Corrupt;

impl Handler for Corrupt {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let mut bytes = msg.as_bytes().to_vec();
        if let Some(last) = bytes.last_mut() {
            // Still ASCII, so that text stays valid UTF-8.
            *last ^= 1;
        }
        let _ = match msg {
            Message::Text(_) => ctx.send_text(id, std::str::from_utf8(&bytes).unwrap_or("?")),
            Message::Binary(_) => ctx.send_binary(id, &bytes),
        };
    }
}

#[test]
fn corrupted_echoes_fail_the_run() {
    let mut server = Server::bind("127.0.0.1:0", Config::default(), Corrupt).unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let handle = server.handle();
    let thread = thread::spawn(move || server.run());
    let (out, v) = bench(&url, &["--conns", "2", "--seconds", "0.5"]);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert!(int(&v, "errors") >= 2, "{v}");
    let first = v["first_errors"][0].as_str().unwrap_or_default();
    assert!(first.contains("differs from what was sent"), "{v}");
    handle.shutdown().unwrap();
    thread.join().unwrap().unwrap();
}

#[test]
fn no_server_fails_the_run() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (out, v) = bench(
        &format!("ws://127.0.0.1:{port}/"),
        &["--conns", "3", "--seconds", "0.5"],
    );
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(int(&v, "failed"), 3, "{v}");
}

/// Refuses every upgrade with 403.
struct Refuse;

impl Handler for Refuse {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::reject(403, "no")
    }

    fn on_message(&mut self, _ctx: &mut Context<'_, ()>, _id: ConnId, _msg: Message<'_>) {}
}

#[test]
fn refused_handshakes_are_failed_connections() {
    let mut server = Server::bind("127.0.0.1:0", Config::default(), Refuse).unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let handle = server.handle();
    let thread = thread::spawn(move || server.run());
    let (out, v) = bench(&url, &["--conns", "3", "--seconds", "0.5"]);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!((int(&v, "failed"), int(&v, "established")), (3, 0), "{v}");
    let first = v["first_errors"][0].as_str().unwrap_or_default();
    assert!(first.contains("handshake") && first.contains("403"), "{v}");
    handle.shutdown().unwrap();
    thread.join().unwrap().unwrap();
}
