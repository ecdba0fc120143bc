//! wss: TLS (rustls) inside the reactor, against a rustls client over real sockets, with
//! certificates made at test time.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::cert::Cert;
use common::handlers::Echo;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use wsloop::client::{load_roots, tls_config, Client, ClientStream, ConnectOptions, Received};
use wsloop::{CloseCode, Config, Message, Server};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn start(server: Server<Echo>) {
    std::thread::spawn(move || {
        let mut server = server;
        server.run()
    });
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

fn wss_client(cert: &Cert, addr: SocketAddr) -> Client<TlsStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let tls = ClientConnection::new(cert.client_config(), name).unwrap();
    let stream = StreamOwned::new(tls, tcp(addr));
    Client::handshake(stream, "localhost", "/", &[]).expect("wss handshake")
}

/// Reads until the stream ends; true if it ended within `limit`.
fn ends_within(stream: &mut impl Read, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

fn echo_checks(client: &mut Client<impl Read + Write>) {
    client.send(Message::Text("héllo wss")).unwrap();
    assert_eq!(client.recv().unwrap(), Received::Text("héllo wss".into()));
    let bytes: Vec<u8> = (0..=255).collect();
    client.send(Message::Binary(&bytes)).unwrap();
    assert_eq!(client.recv().unwrap(), Received::Binary(bytes));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    client.send(Message::Binary(&big)).unwrap();
    assert_eq!(client.recv().unwrap(), Received::Binary(big));
}

#[test]
fn wss_echoes_text_binary_1_mib_and_closes_with_close_notify() {
    let cert = Cert::new();
    let server =
        Server::bind_tls("127.0.0.1:0", cert.server_config(), Config::default(), Echo).unwrap();
    let addr = server.local_addr();
    assert!(server.is_tls());
    start(server);
    let mut client = wss_client(&cert, addr);
    echo_checks(&mut client);
    client.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(
        client.recv().unwrap(),
        Received::Close(Some(CloseCode::NORMAL), String::new())
    );
    // A clean TLS end: rustls reports Ok(0) only after the server's close_notify.
    let mut buf = [0u8; 16];
    assert_eq!(client.stream_mut().read(&mut buf).unwrap(), 0);
}

#[test]
fn one_server_serves_ws_and_wss_at_once() {
    let cert = Cert::new();
    let mut server = Server::bind("127.0.0.1:0", Config::default(), Echo).unwrap();
    let plain = server.local_addr();
    let secure = server
        .listen("127.0.0.1:0", Some(cert.server_config()))
        .unwrap();
    start(server);
    let mut ws = Client::connect(&format!("ws://{plain}/")).unwrap();
    let mut wss = wss_client(&cert, secure);
    echo_checks(&mut ws);
    echo_checks(&mut wss);
}

#[test]
fn plain_http_or_garbage_on_the_tls_port_is_dropped_and_others_keep_working() {
    let cert = Cert::new();
    let server =
        Server::bind_tls("127.0.0.1:0", cert.server_config(), Config::default(), Echo).unwrap();
    let addr = server.local_addr();
    start(server);
    let mut healthy = wss_client(&cert, addr);
    let plain_upgrade = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 256) as u8).collect();
    for bad in [plain_upgrade.as_bytes(), &garbage] {
        let mut stream = tcp(addr);
        stream.write_all(bad).unwrap();
        assert!(
            ends_within(&mut stream, Duration::from_secs(3)),
            "a non-TLS client is dropped"
        );
        echo_checks(&mut healthy);
    }
}

#[test]
fn a_client_stalled_in_the_tls_handshake_is_dropped_after_the_timeout() {
    let cert = Cert::new();
    let config = Config::default().handshake_timeout(Duration::from_millis(300));
    let server = Server::bind_tls("127.0.0.1:0", cert.server_config(), config, Echo).unwrap();
    let addr = server.local_addr();
    start(server);
    // A TLS record header announcing a ClientHello that never comes.
    let mut stalled = tcp(addr);
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let mut silent = tcp(addr);
    let started = Instant::now();
    assert!(ends_within(&mut stalled, Duration::from_secs(3)));
    assert!(ends_within(&mut silent, Duration::from_secs(3)));
    assert!(started.elapsed() >= Duration::from_millis(250));
    echo_checks(&mut wss_client(&cert, addr));
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_websockets_over_wss_echoes_and_closes_cleanly() {
    let cert = Cert::new();
    let server =
        Server::bind_tls("127.0.0.1:0", cert.server_config(), Config::default(), Echo).unwrap();
    let url = format!("wss://{}/", server.local_addr());
    start(server);
    let python = std::env::var("WSLOOP_PYTHON")
        .expect("WSLOOP_PYTHON is not set: run the tests with tests/run.sh");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python_client.py"
    );
    let cafile = format!("--cafile={}", cert.cert_path().display());
    let out = std::process::Command::new(python)
        .args([script, &url, &cafile])
        .output()
        .expect("start the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("python interop: 9 passed"), "{stdout}");
}

#[test]
fn client_connect_speaks_wss_with_a_ca_file_or_a_given_config() {
    let cert = Cert::new();
    let mut server =
        Server::bind_tls("127.0.0.1:0", cert.server_config(), Config::default(), Echo).unwrap();
    let plain = server.listen("127.0.0.1:0", None).unwrap();
    let port = server.local_addr().port();
    start(server);
    let url = format!("wss://localhost:{port}/path?q=1");

    // The roots of a CA file (the documented way), or a config of the caller's own.
    let roots = load_roots(&cert.cert_path()).expect("the CA file");
    for tls in [tls_config(roots), cert.client_config()] {
        let options = ConnectOptions {
            protocols: vec!["chat".into()],
            tls: Some(tls),
            ..ConnectOptions::default()
        };
        let mut client = Client::connect_with_options(&url, &options).expect("wss connect");
        assert!(matches!(client.stream(), ClientStream::Tls(_)));
        client
            .stream()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        echo_checks(&mut client);
    }
    // The same over an IP address (its certificate names 127.0.0.1 too).
    let by_ip = format!("wss://127.0.0.1:{port}/");
    let options = ConnectOptions {
        tls: Some(cert.client_config()),
        ..ConnectOptions::default()
    };
    echo_checks(&mut Client::connect_with_options(&by_ip, &options).expect("wss by IP"));

    // The system's roots do not trust a certificate made now: the handshake fails, naming it.
    let e = Client::connect(&url).expect_err("an untrusted certificate");
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");

    // A plain server spoken to in TLS fails; the same URL in ws:// works.
    let e = Client::connect_with_options(&format!("wss://{plain}/"), &options)
        .expect_err("TLS to a plain server");
    assert!(!e.to_string().is_empty());
    let mut ws = Client::connect(&format!("ws://{plain}/")).unwrap();
    assert!(matches!(ws.stream(), ClientStream::Plain(_)));
    echo_checks(&mut ws);
}

#[test]
fn ca_files_that_hold_no_certificate_are_refused_naming_the_file() {
    let e = load_roots(std::path::Path::new("/dev/null")).expect_err("no certificate");
    assert!(e.to_string().contains("/dev/null"), "{e}");
    let missing = std::path::Path::new("/nonexistent/ca.pem");
    let e = load_roots(missing).expect_err("no file");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}
