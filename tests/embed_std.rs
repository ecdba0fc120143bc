//! Runs `examples/embed_std.rs` (a blocking `std::net` server driving `Connection`) against
//! wsloop's own client, so that the example keeps working.

#[allow(dead_code)]
#[path = "../examples/embed_std.rs"]
mod embed;

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wsloop::client::{Client, Received};
use wsloop::{CloseCode, ConnectionConfig, Message};

/// Serves one connection with the example's `serve` on a thread; returns its URL and a channel
/// that gets `serve`'s result.
fn start(config: ConnectionConfig) -> (String, mpsc::Receiver<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("address"));
    let (done, result) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let _ = done.send(embed::serve(stream, config));
    });
    (url, result)
}

fn connect(url: &str) -> Client {
    let client = Client::connect(url).expect("connect");
    let timeout = Some(Duration::from_secs(5));
    client.stream().set_read_timeout(timeout).expect("timeout");
    client
}

#[test]
fn echoes_messages_answers_pings_and_closes() {
    let (url, result) = start(ConnectionConfig::default());
    let mut client = connect(&url);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
    client.send(Message::Text("héllo")).unwrap();
    client.send(Message::Binary(&big)).unwrap();
    assert_eq!(client.recv().unwrap(), Received::Text("héllo".into()));
    assert_eq!(client.recv().unwrap(), Received::Binary(big));
    client.close(CloseCode(4000), "done").unwrap();
    assert_eq!(
        client.recv().unwrap(),
        Received::Close(Some(CloseCode(4000)), String::new())
    );
    // The server shut down writing after the close handshake.
    let eof = client.recv().unwrap_err();
    assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
    drop(client);
    let served = result
        .recv_timeout(Duration::from_secs(5))
        .expect("serve returned");
    assert!(served.is_ok(), "{served:?}");
}

#[test]
fn keepalive_ping_then_idle_close_from_the_connection_deadlines() {
    let config = ConnectionConfig::default()
        .ping_interval(Some(Duration::from_millis(50)))
        .idle_timeout(Some(Duration::from_millis(150)));
    let (url, result) = start(config);
    let mut client = connect(&url);
    // The first ping comes from the deadline, and is answered by `recv`.
    assert_eq!(client.recv().unwrap(), Received::Ping(vec![]));
    // Then the client stops reading (so stops answering): the server gives up on it.
    thread::sleep(Duration::from_millis(400));
    let mut got = client.recv().unwrap();
    while got == Received::Ping(vec![]) {
        got = client.recv().unwrap();
    }
    let idle = Received::Close(Some(CloseCode::GOING_AWAY), "idle timeout".into());
    assert_eq!(got, idle);
    drop(client);
    let served = result
        .recv_timeout(Duration::from_secs(5))
        .expect("serve returned");
    assert!(served.is_ok(), "{served:?}");
}
