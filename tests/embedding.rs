//! Embedding: driving the server one turn at a time, handles from other threads, and graceful
//! shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wsloop::client::{Client, Received};
use wsloop::proto::frame::OpCode;
use wsloop::proto::message::Encoder;
use wsloop::proto::Role;
use wsloop::{
    CloseCode, CloseReason, Config, ConnId, Context, Handler, Message, Request, Server, Upgrade,
};

/// Echoes, and reports opens, messages and closes.
struct Recorder {
    events: mpsc::Sender<String>,
    opened: mpsc::Sender<ConnId>,
}

impl Handler for Recorder {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_open(&mut self, _ctx: &mut Context<'_, ()>, id: ConnId) {
        let _ = self.events.send("open".into());
        let _ = self.opened.send(id);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let _ = self.events.send(format!("message {:?}", msg.as_bytes()));
        let _ = ctx.send(id, msg);
    }

    fn on_close(&mut self, _ctx: &mut Context<'_, ()>, _id: ConnId, why: CloseReason<'_>) {
        let _ = self.events.send(format!("close {why:?}"));
    }
}

fn recorder() -> (Recorder, mpsc::Receiver<String>, mpsc::Receiver<ConnId>) {
    let (events, events_rx) = mpsc::channel();
    let (opened, opened_rx) = mpsc::channel();
    (Recorder { events, opened }, events_rx, opened_rx)
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).expect("the server answered");
    buf[..n].to_vec()
}

#[test]
fn turn_api_drives_messages_timeouts_and_closes_at_the_right_turns() {
    let config = Config::default()
        .ping_interval(None)
        .idle_timeout(Some(Duration::from_millis(300)));
    let (handler, events, _) = recorder();
    let mut server = Server::bind("127.0.0.1:0", config, handler).unwrap();
    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    // Nothing happens between turns: the request waits in the kernel until a turn reads it.
    client.write_all(UPGRADE.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(events.try_recv().is_err());
    for _ in 0..10 {
        server.turn(Some(Duration::from_millis(20))).unwrap();
    }
    assert_eq!(events.try_recv().unwrap(), "open");
    assert!(read_some(&mut client).starts_with(b"HTTP/1.1 101"));

    // A message is handled, and its echo flushed, within one turn that sees it.
    let mut frame = Vec::new();
    Encoder::new(Role::Client).frame(&mut frame, OpCode::Text, true, b"hi");
    client.write_all(&frame).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    server.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(events.try_recv().unwrap(), "message [104, 105]");
    assert_eq!(read_some(&mut client), [0x81, 2, b'h', b'i']);

    // The idle timeout fires only on a turn after it is due.
    let quiet_since = Instant::now();
    server.turn(Some(Duration::ZERO)).unwrap();
    assert!(events.try_recv().is_err());
    std::thread::sleep(Duration::from_millis(350));
    server.turn(Some(Duration::ZERO)).unwrap();
    assert!(quiet_since.elapsed() >= Duration::from_millis(300));
    assert_eq!(events.try_recv().unwrap(), "close TimedOut");
    let close = read_some(&mut client);
    assert_eq!(&close[..4], [0x88, 14, 0x03, 0xE9]);
}

#[test]
fn sends_between_turns_go_out_on_an_explicit_flush() {
    let (handler, _events, opened) = recorder();
    let mut server = Server::bind("127.0.0.1:0", Config::default(), handler).unwrap();
    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.write_all(UPGRADE.as_bytes()).unwrap();
    let id = loop {
        server.turn(Some(Duration::from_millis(20))).unwrap();
        if let Ok(id) = opened.try_recv() {
            break id;
        }
    };
    assert!(read_some(&mut client).starts_with(b"HTTP/1.1 101"));
    server.context().send_text(id, "tick").unwrap();
    server.context().close(id, CloseCode::NORMAL, "").unwrap();
    server.flush();
    let mut got = Vec::new();
    while got.len() < 10 {
        got.extend(read_some(&mut client));
    }
    assert_eq!(got, [0x81, 4, b't', b'i', b'c', b'k', 0x88, 2, 0x03, 0xE8]);
}

#[test]
fn handles_from_several_threads_deliver_in_order() {
    let (handler, _events, opened) = recorder();
    let mut server = Server::bind("127.0.0.1:0", Config::default(), handler).unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let handle = server.handle();
    let reactor = std::thread::spawn(move || server.run());
    let mut client = Client::connect(&url).unwrap();
    let id = opened.recv_timeout(Duration::from_secs(5)).unwrap();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    let text = format!("{t}:{i}");
                    while handle.send(id, Message::Text(&text)).is_err() {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut next = [0; 4];
    for _ in 0..1000 {
        let Received::Text(text) = client.recv().unwrap() else {
            panic!("expected text");
        };
        let (t, i) = text.split_once(':').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "thread {t}'s messages arrive in order");
        next[t] += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    handle.shutdown().unwrap();
    assert_eq!(
        client.recv().unwrap(),
        Received::Close(Some(CloseCode::GOING_AWAY), "server shutdown".into())
    );
    client.close(CloseCode::GOING_AWAY, "").unwrap();
    drop(client);
    reactor.join().unwrap().unwrap();
}

#[test]
fn shutdown_while_clients_send_loses_nothing_and_every_client_gets_1001() {
    let (handler, events, opened) = recorder();
    let mut server = Server::bind("127.0.0.1:0", Config::default(), handler).unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let handle = server.handle();
    let reactor = std::thread::spawn(move || {
        let started = Instant::now();
        server.run().map(|()| started.elapsed())
    });
    let clients: Vec<_> = (0..5)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&url).unwrap();
                client
                    .stream()
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                // Keep sending while the server shuts down; then read everything that came.
                for i in 0..200 {
                    if client.send(Message::Text(&format!("{n}/{i}"))).is_err() {
                        break;
                    }
                }
                let mut from_handle = 0;
                loop {
                    match client.recv().unwrap() {
                        Received::Text(t) if t.starts_with("handle") => from_handle += 1,
                        Received::Text(_) => {}
                        Received::Close(code, _) => {
                            let _ = client.close(CloseCode::GOING_AWAY, "");
                            return (from_handle, code);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    let ids: Vec<ConnId> = (0..5)
        .map(|_| opened.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    for i in 0..100 {
        for &id in &ids {
            handle
                .send(id, Message::Text(&format!("handle {i}")))
                .unwrap();
        }
    }
    handle.shutdown().unwrap();
    for client in clients {
        let (from_handle, code) = client.join().unwrap();
        assert_eq!(
            from_handle, 100,
            "every message sent before shutdown arrives"
        );
        assert_eq!(code, Some(CloseCode::GOING_AWAY));
    }
    let took = reactor.join().unwrap().unwrap();
    assert!(took < Duration::from_secs(10));
    let closes = events
        .try_iter()
        .filter(|e| e.starts_with("close Closed"))
        .count();
    assert_eq!(closes, 5, "every close handshake completed");
}
