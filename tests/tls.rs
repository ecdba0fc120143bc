//! wss: TLS (rustls) inside the reactor, against a rustls client over real sockets, with
//! certificates made at test time.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cert::Cert;
use common::handlers::Echo;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use wsloop::client::{Client, ClientTls, ConnectOptions, Received};
use wsloop::{
    CloseCode, Config, ConnId, Context, Error, Handler, Message, Request, Server, TlsError, Upgrade,
};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn start<H: Handler<State = ()> + Send + 'static>(server: Server<H>) {
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
fn client_connect_speaks_wss_trusting_a_ca_file_or_pem_text() {
    let cert = Cert::new();
    let mut server =
        Server::bind_tls("127.0.0.1:0", cert.server_config(), Config::default(), Echo).unwrap();
    let plain = server.listen("127.0.0.1:0", None).unwrap();
    let port = server.local_addr().port();
    start(server);
    let url = format!("wss://localhost:{port}/path?q=1");

    // The CAs of a file (the documented way), or of PEM text held in memory.
    let pem = std::fs::read(cert.cert_path()).unwrap();
    let from_file = ClientTls::from_pem_file(cert.cert_path()).expect("the CA file");
    for tls in [from_file.clone(), ClientTls::from_pem(&pem).unwrap()] {
        let options = ConnectOptions {
            protocols: vec!["chat".into()],
            tls: Some(tls),
            ..ConnectOptions::default()
        };
        let mut client = Client::connect_with_options(&url, &options).expect("wss connect");
        assert!(client.stream().is_tls());
        client
            .stream()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        echo_checks(&mut client);
    }
    // The same over an IP address (its certificate names 127.0.0.1 too).
    let by_ip = format!("wss://127.0.0.1:{port}/");
    let options = ConnectOptions {
        tls: Some(from_file),
        ..ConnectOptions::default()
    };
    echo_checks(&mut Client::connect_with_options(&by_ip, &options).expect("wss by IP"));

    // The system's roots do not trust a certificate made now: the handshake fails, naming it.
    let e = Client::connect(&url).expect_err("an untrusted certificate");
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    // Nor does a CA file that holds another certificate.
    let other = Cert::new();
    let stranger = ConnectOptions {
        tls: Some(ClientTls::from_pem_file(other.cert_path()).unwrap()),
        ..ConnectOptions::default()
    };
    let e = Client::connect_with_options(&url, &stranger).expect_err("another CA");
    assert!(e.to_string().contains("certificate"), "{e}");

    // A plain server spoken to in TLS fails; the same URL in ws:// works.
    let e = Client::connect_with_options(&format!("wss://{plain}/"), &options)
        .expect_err("TLS to a plain server");
    assert!(!e.to_string().is_empty());
    let mut ws = Client::connect(&format!("ws://{plain}/")).unwrap();
    assert!(!ws.stream().is_tls());
    echo_checks(&mut ws);
}

/// An echo that takes only requests with `Authorization: Bearer 123`, and speaks `chat` when
/// it is offered.
struct Guarded;

impl Handler for Guarded {
    type State = ();

    fn on_upgrade(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        match req.header("Authorization") {
            Some("Bearer 123") if req.protocols().any(|p| p == "chat") => {
                Upgrade::accept_protocol("chat", ())
            }
            Some("Bearer 123") => Upgrade::accept(()),
            _ => Upgrade::reject(403, "who are you?"),
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        ctx.send(id, msg).expect("echo fits the queue");
    }
}

#[test]
fn a_tls_stream_of_ones_own_takes_the_options_headers_and_subprotocols() {
    let cert = Cert::new();
    let server = Server::bind_tls(
        "127.0.0.1:0",
        cert.server_config(),
        Config::default(),
        Guarded,
    )
    .unwrap();
    let addr = server.local_addr();
    start(server);
    let stream = || {
        let name = ServerName::try_from("localhost").unwrap();
        let tls = ClientConnection::new(cert.client_config(), name).unwrap();
        StreamOwned::new(tls, tcp(addr))
    };
    let options = ConnectOptions {
        protocols: vec!["chat".into()],
        headers: vec![("Authorization".into(), "Bearer 123".into())],
        ..ConnectOptions::default()
    };
    let mut client = Client::handshake_with_options(stream(), "localhost", "/", &options)
        .expect("the handshake with the header");
    assert_eq!(client.protocol(), Some("chat"));
    echo_checks(&mut client);

    let e = Client::handshake_with_options(stream(), "localhost", "/", &ConnectOptions::default())
        .expect_err("no header");
    assert!(e.to_string().contains("403"), "{e}");
}

/// The cause of a [`ClientTls`] error, which must name `path` (or no file, for `None`).
fn ca_error(result: Result<ClientTls, Error>, path: Option<&str>) -> TlsError {
    let err = result.expect_err("a bad CA file");
    let text = err.to_string();
    let Error::Tls { path: at, cause } = err else {
        panic!("{err:?}")
    };
    assert_eq!(at.as_deref(), path.map(Path::new), "{text}");
    if let Some(path) = path {
        assert!(text.contains(path), "{text}");
    }
    cause
}

#[test]
fn ca_files_that_hold_no_usable_certificate_are_refused_naming_the_file() {
    let cause = ca_error(ClientTls::from_pem_file("/dev/null"), Some("/dev/null"));
    assert!(matches!(cause, TlsError::NoCertificate), "{cause:?}");
    let missing = "/nonexistent/ca.pem";
    let cause = ca_error(ClientTls::from_pem_file(missing), Some(missing));
    assert!(
        matches!(&cause, TlsError::Read(e) if e.kind() == ErrorKind::NotFound),
        "{cause:?}"
    );

    let cause = ca_error(ClientTls::from_pem(b"not PEM at all"), None);
    assert!(matches!(cause, TlsError::NoCertificate), "{cause:?}");
    let open = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
    let cause = ca_error(ClientTls::from_pem(open), None);
    assert!(matches!(cause, TlsError::Pem(_)), "{cause:?}");
    // PEM that is well formed around bytes that are no certificate: the TLS library's reason
    // is the cause's source.
    let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let cause = ca_error(ClientTls::from_pem(junk), None);
    assert!(matches!(cause, TlsError::BadCaCertificate(_)), "{cause:?}");
    let source = std::error::Error::source(&cause).expect("a source");
    assert!(cause.to_string().ends_with(&source.to_string()), "{cause}");
}
