//! The application API over real sockets: broadcast, connection lookup, per-connection state,
//! peer addresses, and setup errors.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{Options, TestHandler, TestServer, Ws};
use wsloop::client::{Client, ClientError, ClientUrl, ConnectOptions, HeaderError, UrlError};
use wsloop::proto::handshake::{
    write_accept, BadRequest, HeadScanner, Headers, ParseError, Rejection, Request, ResponseError,
};
use wsloop::{Config, ConfigError, Error, ProtocolError, Server};

fn server() -> TestServer {
    TestServer::start(Config::default())
}

/// Asks the server for this connection's id.
fn id_of(ws: &mut Ws) -> String {
    ws.send_text("!id");
    ws.read_text()
}

/// Asks the server for the ids of the open connections.
fn listed(ws: &mut Ws) -> Vec<String> {
    ws.send_text("!list");
    let mut ids: Vec<String> = ws.read_text().split(',').map(str::to_owned).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[test]
fn broadcast_reaches_every_open_connection() {
    let server = server();
    let mut clients = [server.connect(), server.connect(), server.connect()];
    // Neither a connection still handshaking nor one that is closing receives it.
    let mut handshaking = server.raw();
    let mut closing = server.connect();
    closing.send_text("!close");
    closing.expect_close(1000);

    clients[0].send_text("!all to everyone");
    for ws in &mut clients {
        assert_eq!(ws.read_text(), "to everyone");
    }
    handshaking.expect_silence(Duration::from_millis(100));
    closing.send_close(1000, "");
    closing.expect_eof();
}

#[test]
fn broadcast_except_skips_the_sender() {
    let server = server();
    let [mut sender, mut b, mut c] = [server.connect(), server.connect(), server.connect()];
    sender.send_text("!others not for the sender");
    assert_eq!(b.read_text(), "not for the sender");
    assert_eq!(c.read_text(), "not for the sender");
    // The sender's next frame is the echo of what it sends next, not the broadcast.
    sender.assert_echo("next");
}

#[test]
fn connections_lists_the_open_ones() {
    let server = server();
    let mut clients = [server.connect(), server.connect(), server.connect()];
    let ids: Vec<String> = clients.iter_mut().map(id_of).collect();
    let _handshaking = server.raw();
    assert_eq!(listed(&mut clients[0]), sorted(ids.clone()));

    let [mut first, mut second, mut third] = clients;
    third.send_close(1000, "leaving");
    third.expect_close(1000);
    third.expect_eof();
    server.wait_closed();
    assert_eq!(listed(&mut first), sorted(ids[..2].to_vec()));
    assert_eq!(listed(&mut second), sorted(ids[..2].to_vec()));
}

#[test]
fn state_set_at_upgrade_is_reachable_in_on_message() {
    let server = server();
    let mut ann = server.connect_path("/room/1?user=ann");
    let mut bob = server.connect_path("/room/2?user=bob");
    ann.send_text("!state");
    bob.send_text("!state");
    assert_eq!(ann.read_text(), "/room/1?user=ann");
    assert_eq!(bob.read_text(), "/room/2?user=bob");
}

#[test]
fn peer_addr_is_the_clients_address() {
    let server = server();
    let mut ws = server.connect();
    ws.send_text("!peer");
    assert_eq!(ws.read_text(), ws.local_addr().to_string());
}

#[test]
fn config_error_names_the_option() {
    let config = Config::default().max_message_size(0);
    match Server::bind("127.0.0.1:0", config, TestHandler::detached()) {
        Err(e @ Error::Config { option, .. }) => {
            assert_eq!(option, "max_message_size");
            assert!(e.to_string().contains("max_message_size"), "{e}");
        }
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("max_message_size(0) was accepted"),
    }
}

#[test]
fn config_errors_carry_a_typed_cause() {
    let config = Config::default().max_message_size(3);
    let Err(e) = Server::bind("127.0.0.1:0", config, TestHandler::detached()) else {
        panic!("max_message_size(3) was accepted");
    };
    assert!(
        matches!(
            &e,
            Error::Config {
                option: "max_message_size",
                cause: ConfigError::SizeTooSmall { min: 125, got: 3 },
            }
        ),
        "{e:?}"
    );
    // The message names the option, the bound and the value, as it always did.
    assert_eq!(
        e.to_string(),
        "invalid config: max_message_size must be at least 125 B, got 3"
    );
}

#[test]
fn a_refused_upgrade_names_its_cause_and_answers_with_its_text() {
    let raw = b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut headers = Headers::new();
    let req = Request::parse(raw, &mut headers).unwrap();
    let rejection = req.validate_upgrade().unwrap_err();
    assert_eq!(rejection, Rejection::BadRequest(BadRequest::NoHost));
    let resp = rejection.response();
    assert_eq!(resp.status(), 400);
    let mut out = Vec::new();
    resp.write_to(&mut out);
    assert!(out.ends_with(b"\r\n\r\nHost missing"), "{out:?}");
    assert_eq!(
        Rejection::from(ParseError::Malformed),
        Rejection::BadRequest(BadRequest::Malformed)
    );
}

#[test]
fn client_url_and_header_errors_are_typed() {
    let e = ClientUrl::parse("http://example.com/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<ClientError>());
    let want = ClientError::Url {
        url: "http://example.com/".into(),
        cause: UrlError::Scheme,
    };
    assert_eq!(inner, Some(&want), "{e:?}");
    assert_eq!(
        e.to_string(),
        "\"http://example.com/\": the scheme must be ws:// or wss://"
    );
    let e = ClientUrl::parse("ws://h:99999/").unwrap_err();
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<ClientError>());
    assert!(
        matches!(inner, Some(ClientError::Url { cause: UrlError::Port(p), .. }) if p == "99999"),
        "{e:?}"
    );

    // A header the handshake sets itself is refused before anything is sent.
    let server = server();
    let options = ConnectOptions {
        headers: vec![("Sec-WebSocket-Key".into(), "x".into())],
        ..ConnectOptions::default()
    };
    let e = Client::connect_with_options(&format!("ws://{}/", server.addr), &options).unwrap_err();
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<ClientError>());
    assert!(
        matches!(
            inner,
            Some(ClientError::Header {
                cause: HeaderError::Reserved,
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn bind_error_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    match Server::bind(&addr, Config::default(), TestHandler::detached()) {
        Err(
            ref e @ Error::Bind {
                addr: ref named,
                ref source,
            },
        ) => {
            assert_eq!(*named, addr);
            assert_eq!(source.kind(), ErrorKind::AddrInUse);
            assert!(e.to_string().contains(&addr), "{e}");
        }
        Err(e) => panic!("expected a bind error, got {e}"),
        Ok(_) => panic!("bound {addr} twice"),
    }
}

#[test]
fn the_clients_errors_keep_their_type() {
    // A refused upgrade: the io::Error carries the handshake's ResponseError.
    let refusing = TestServer::start_with(
        Config::default(),
        Options {
            reject: Some(403),
            ..Options::default()
        },
    );
    let e = Client::connect(&format!("ws://{}/", refusing.addr)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<ResponseError>());
    assert!(
        matches!(inner, Some(ResponseError::Status { code: 403, .. })),
        "{e:?}"
    );

    // A frame with a reserved opcode from a server: the io::Error carries the ProtocolError.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let (mut head, mut scanner) = (Vec::new(), HeadScanner::default());
        let end = loop {
            if let Some(end) = scanner.find_end(&head) {
                break end;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed before its request was whole");
            head.extend_from_slice(&chunk[..n]);
        };
        let mut headers = Headers::new();
        let req = Request::parse(&head[..end], &mut headers).unwrap();
        let mut out = Vec::new();
        write_accept(
            &mut out,
            req.header("sec-websocket-key").unwrap(),
            None,
            None,
        );
        out.extend_from_slice(&[0x83, 0x00]); // FIN, opcode 3 (reserved), empty
        stream.write_all(&out).unwrap();
        stream
    });
    let mut client = Client::connect(&format!("ws://{addr}/")).unwrap();
    client
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let e = client.recv().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<ProtocolError>());
    assert_eq!(inner, Some(&ProtocolError::ReservedOpcode), "{e:?}");
    drop(server.join().unwrap());
}
