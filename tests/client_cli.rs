//! `wsloop client`, run as a process with its stdin piped, against `wsloop echo` (ws and wss)
//! and against the Python `websockets` server (tests/interop/python_server.py); and a second
//! `wsloop echo` or `wsloop chat` on a taken port, which must fail naming the address.
//!
//! The binary exists only with the `cli` feature: `cargo test --features cli --test
//! client_cli`. The Python tests need `WSLOOP_PYTHON` (tests/run.sh sets it).
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::cert::Cert;

const WSLOOP: &str = env!("CARGO_BIN_EXE_wsloop");

/// A server process, killed when dropped.
struct Peer {
    child: Child,
    /// What it printed after "listening on ", up to a space.
    at: String,
}

impl Peer {
    /// Starts `cmd` and waits (at most 20 s) for the "listening on X" line on `stdout` (or
    /// stderr), reading the rest so that the process never blocks on a full pipe.
    fn start(mut cmd: Command) -> Peer {
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the server starts");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for pipe in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let _ = tx.send(rest.split(' ').next().unwrap_or_default().to_owned());
                    }
                }
            });
        }
        let at = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the server did not say where it listens: {cmd:?}")
            });
        Peer { child, at }
    }

    /// `wsloop echo` on a free port, with `args`.
    fn echo(args: &[&str]) -> Peer {
        let mut cmd = Command::new(WSLOOP);
        cmd.args(["echo", "--addr", "127.0.0.1:0"]).args(args);
        Peer::start(cmd)
    }

    /// The Python `websockets` server, with `args`; its port.
    fn python(args: &[&str]) -> Peer {
        let python = std::env::var("WSLOOP_PYTHON")
            .expect("WSLOOP_PYTHON is not set: run the tests with tests/run.sh");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python_server.py");
        let mut cmd = Command::new(python);
        cmd.arg(script).args(args);
        Peer::start(cmd)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wsloop client ARGS` with its stdin, stdout and stderr piped; returns its stdin.
fn spawn_client(args: &[&str]) -> (Child, ChildStdin) {
    let mut child = Command::new(WSLOOP)
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wsloop client starts");
    let stdin = child.stdin.take().expect("piped stdin");
    (child, stdin)
}

/// Runs `wsloop client ARGS` with `input` on its stdin (then its end), at most 30 s.
fn client(args: &[&str], input: &[u8]) -> Output {
    let (child, mut stdin) = spawn_client(args);
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    wait(child)
}

/// Waits for `child` at most 30 s (killing it after), and collects its output.
fn wait(child: Child) -> Output {
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("wait for the client"),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("wsloop client (pid {id}) did not end within 30 s")
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the client ended with `code` (0: success), showing its output if not.
fn exited(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn lines_are_echoed_and_eof_closes_with_1000() {
    let echo = Peer::echo(&[]);
    let out = client(
        &[&echo.at],
        b"hello\nwide \xc3\xa9 line\r\n\nlast without newline",
    );
    let (stdout, stderr) = exited(&out, 0);
    assert_eq!(stdout, "hello\nwide é line\n\nlast without newline\n");
    assert!(stderr.contains("close 1000"), "{stderr}");

    // Binary messages come back in hex, or raw; with deflate too; a query string is fine.
    let query = format!("{}?x=1", echo.at);
    let out = client(&[&query, "--binary", "--deflate"], b"hi\n\x00\xff\n");
    assert_eq!(exited(&out, 0).0, "6869\n00ff\n");
    let out = client(&[&echo.at, "--binary", "--raw"], b"hi\n\x00\xff\n");
    exited(&out, 0);
    assert_eq!(out.stdout, b"hi\x00\xff");

    // Text that is not UTF-8 is not sent; the rest is.
    let out = client(&[&echo.at], b"\xff\xfe\nok\n");
    let (stdout, stderr) = exited(&out, 0);
    assert_eq!(stdout, "ok\n");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
}

#[test]
fn a_server_close_with_an_error_code_fails_the_client() {
    let echo = Peer::echo(&["--max-message-size", "200"]);
    let mut input = b"short\n".to_vec();
    input.extend_from_slice(&[b'x'; 300]);
    input.extend_from_slice(b"\nnever answered\n");
    let out = client(&[&echo.at], &input);
    let (stdout, stderr) = exited(&out, 1);
    assert_eq!(stdout, "short\n");
    assert!(stderr.contains("close 1009"), "{stderr}");
    assert!(stderr.contains("closed with 1009"), "{stderr}");
}

#[test]
fn a_refused_upgrade_fails_with_the_status_and_headers_get_through() {
    let echo = Peer::echo(&["--origin", "https://good.example"]);
    let out = client(&[&echo.at, "-H", "Origin: https://evil.example"], b"hi\n");
    let (stdout, stderr) = exited(&out, 1);
    assert_eq!(stdout, "");
    assert!(stderr.contains("403"), "{stderr}");
    assert!(
        stderr.contains(&echo.at),
        "the error names the URL: {stderr}"
    );

    let out = client(&[&echo.at, "-H", "Origin: https://good.example"], b"hi\n");
    assert_eq!(exited(&out, 0).0, "hi\n");

    // Headers the handshake writes itself, bad arguments and other schemes are refused.
    let out = client(&[&echo.at, "-H", "Sec-WebSocket-Key: x"], b"");
    assert!(exited(&out, 1).1.contains("Sec-WebSocket-Key"));
    let out = client(&[&echo.at, "-H", "no colon"], b"");
    assert!(exited(&out, 2).1.contains("not 'Name: value'"));
    let out = client(&["http://127.0.0.1:1/"], b"");
    assert!(exited(&out, 2).1.contains("ws:// or wss://"));
}

#[test]
fn wss_with_a_ca_file_or_insecure() {
    let cert = Cert::new();
    let (cert_path, key_path) = (cert.cert_path(), cert.key_path());
    let echo = Peer::echo(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert!(echo.at.starts_with("wss://"), "{}", echo.at);
    let port = echo.at.rsplit(':').next().unwrap().trim_end_matches('/');
    let by_name = format!("wss://localhost:{port}/");
    let cafile = cert_path.to_str().unwrap();

    let out = client(&[&by_name, "--cafile", cafile, "--deflate"], b"secret\n");
    assert_eq!(exited(&out, 0).0, "secret\n");
    let out = client(&[&echo.at, "--insecure", "--binary"], b"\x01\n");
    assert_eq!(exited(&out, 0).0, "01\n");
    // Without them the certificate is not trusted (it is in no system store).
    let out = client(&[&by_name], b"secret\n");
    let (stdout, stderr) = exited(&out, 1);
    assert_eq!(stdout, "");
    assert!(stderr.contains("certificate"), "{stderr}");
}

/// The port of a ws:// URL.
fn port(url: &str) -> &str {
    url.rsplit(':').next().unwrap().trim_end_matches('/')
}

#[test]
fn a_second_server_on_a_taken_port_fails_naming_the_address() {
    for threads in ["1", "2"] {
        let first = Peer::echo(&["--threads", threads]);
        let addr = format!("127.0.0.1:{}", port(&first.at));
        for second in [
            ["echo", "--addr", &addr, "--threads", "1"],
            ["echo", "--addr", &addr, "--threads", "2"],
            ["chat", "--addr", &addr, "--threads", "2"],
        ] {
            let child = Command::new(WSLOOP)
                .args(second)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let out = wait(child);
            let (_, stderr) = exited(&out, 1);
            assert!(
                stderr.contains(&format!("cannot listen on {addr}")),
                "{second:?} next to {threads} thread(s): {stderr}"
            );
            assert!(stderr.contains("in use"), "{stderr}");
        }
        // Every connection reaches the first server.
        for i in 0..6 {
            let line = format!("to the first {i}\n");
            let out = client(&[&first.at], line.as_bytes());
            assert_eq!(exited(&out, 0).0, line);
        }
    }
}

// ---- against the Python websockets server ----------------------------------------------
//
// `websockets` answers a close frame at once and sends nothing after it, so these clients
// keep stdin open until what they wait for has come.

/// The URL of `path` on a Python server.
fn url(server: &Peer, scheme: &str, path: &str) -> String {
    format!("{scheme}://127.0.0.1:{}{path}", server.at)
}

/// Runs `wsloop client ARGS` interactively: waits for the first `first` lines it prints,
/// then writes each of `lines` and waits for the line printed back (20 s at most each); then
/// ends its stdin, or with `hold` keeps it open until the client ends (the server's doing).
/// Returns every line printed on stdout and the output (stderr, status).
fn converse(args: &[&str], first: usize, lines: &[&str], hold: bool) -> (Vec<String>, Output) {
    let (mut child, mut stdin) = spawn_client(args);
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(20)).ok();
    let mut printed: Vec<String> = (0..first).map_while(|_| next()).collect();
    for line in lines {
        writeln!(stdin, "{line}").expect("write stdin");
        printed.extend(next());
    }
    let held = hold.then_some(stdin); // else ended here
    let out = wait(child);
    drop(held);
    printed.extend(rx.iter());
    (printed, out)
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_server_sees_headers_subprotocol_deflate_and_query() {
    let server = Peer::python(&[]);
    let info = url(&server, "ws", "/info?room=a%20b&x=1");
    let args = [
        info.as_str(),
        "-H",
        "X-Test: some value",
        "--header",
        "Origin: https://here.example",
        "--subprotocol",
        "json",
        "--subprotocol",
        "chat",
        "--deflate",
    ];
    let (printed, out) = converse(&args, 1, &["after the info"], false);
    let stderr = exited(&out, 0).1;
    assert!(stderr.contains("subprotocol chat"), "{stderr}");
    assert!(stderr.contains("close 1000"), "{stderr}");
    assert_eq!(printed.len(), 2, "{printed:?}");
    let got: serde_json::Value = serde_json::from_str(&printed[0]).unwrap();
    assert_eq!(got["path"], "/info?room=a%20b&x=1");
    assert_eq!(got["x-test"], "some value");
    assert_eq!(got["origin"], "https://here.example");
    assert_eq!(got["subprotocol"], "chat", "the server's preference");
    assert_eq!(got["extensions"], serde_json::json!(["permessage-deflate"]));
    assert_eq!(printed[1], "after the info");

    // Without --deflate, nothing is offered; binary comes back in hex.
    let (printed, out) = converse(
        &[&url(&server, "ws", "/info"), "--binary"],
        1,
        &["ab"],
        false,
    );
    exited(&out, 0);
    let got: serde_json::Value = serde_json::from_str(&printed[0]).unwrap();
    assert_eq!(got["extensions"], serde_json::json!([]));
    assert_eq!(got["subprotocol"], serde_json::Value::Null);
    assert_eq!(printed[1], "6162");
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_server_pings_closes_and_drops() {
    let server = Peer::python(&[]);
    let (printed, out) = converse(&[&url(&server, "ws", "/ping")], 1, &["and back"], false);
    let stderr = exited(&out, 0).1;
    assert_eq!(printed, ["pinged", "and back"]);
    let ping = b"are you there".iter().map(|b| format!("{b:02x}"));
    assert!(
        stderr.contains(&format!("ping {}", ping.collect::<String>())),
        "{stderr}"
    );

    // A close with 4000 is shown and fails the client; so does a drop without a close.
    let (_, out) = converse(&[&url(&server, "ws", "/close")], 0, &[], true);
    let stderr = exited(&out, 1).1;
    assert!(stderr.contains("close 4000 \"custom reason\""), "{stderr}");
    assert!(stderr.contains("closed with 4000"), "{stderr}");
    let (_, out) = converse(&[&url(&server, "ws", "/drop")], 0, &[], true);
    let stderr = exited(&out, 1).1;
    assert!(stderr.contains("without a close frame (1006)"), "{stderr}");
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_server_over_wss() {
    let cert = Cert::new();
    let server = Peer::python(&[
        "--tls",
        cert.cert_path().to_str().unwrap(),
        cert.key_path().to_str().unwrap(),
    ]);
    let cafile = cert.cert_path();
    let wss = url(&server, "wss", "/");
    let args = [wss.as_str(), "--cafile", cafile.to_str().unwrap()];
    let (printed, out) = converse(&args, 0, &["over tls", "twice"], false);
    assert!(exited(&out, 0).1.contains("close 1000"));
    assert_eq!(printed, ["over tls", "twice"]);
    let (printed, out) = converse(&[&wss, "--insecure", "--deflate"], 0, &["squeezed"], false);
    exited(&out, 0);
    assert_eq!(printed, ["squeezed"]);
}
