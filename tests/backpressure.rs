//! Backpressure over real sockets: a client that does not read fills its socket and then its
//! bounded write queue; what happens next depends on `Config::on_overflow`.
//!
//! The slow client asks for data with `!flood` (one 48 KiB message per request) and never
//! reads, until a send is refused: then the kernel's buffers are full and the queue is at its
//! bound.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{flood_payload, Ev, TestServer, Why, Ws, FLOOD_CHUNK};
use wsloop::proto::frame::OpCode;
use wsloop::{Config, ConnId, Overflow, SendError};

const MAX_WRITE_BUFFER: usize = 64 * 1024;

fn server(on_overflow: Overflow) -> TestServer {
    let config = Config::default()
        .max_write_buffer(MAX_WRITE_BUFFER)
        .on_overflow(on_overflow);
    TestServer::start(config)
}

/// A slow client's connection id and how many flood messages were queued for it.
struct Flooded {
    id: ConnId,
    sent: usize,
}

/// The handler's report of a `!flood`: the connection and the send's result.
fn flood_report(server: &TestServer) -> (ConnId, Result<(), SendError>) {
    match server.wait_for("a flood report", |e| matches!(e, Ev::Flood { .. })) {
        Ev::Flood { id, result, .. } => (id, result),
        _ => unreachable!(),
    }
}

/// The handler's report of a `!buffered`: the connection and `ctx.buffered(id)`.
fn buffered_report(server: &TestServer) -> (ConnId, usize) {
    match server.wait_for("a buffered report", |e| matches!(e, Ev::Buffered(..))) {
        Ev::Buffered(id, queued) => (id, queued),
        _ => unreachable!(),
    }
}

/// Sends `!flood` until the server reports a send refused with `Full`.
fn flood_until_full(server: &TestServer, ws: &mut Ws) -> Flooded {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    loop {
        assert!(Instant::now() < deadline, "the write queue never filled up");
        ws.send_text("!flood");
        match flood_report(server) {
            (_, Ok(())) => sent += 1,
            (id, Err(SendError::Full)) => return Flooded { id, sent },
            (_, Err(e)) => panic!("flood send failed with {e:?}"),
        }
        // Let the server finish its turn (and flush) before the next request.
        thread::sleep(Duration::from_millis(1));
    }
}

/// Floods a slow client (with `Overflow::Refuse`) until its socket is blocked: a send was
/// refused and, a while later, bytes are still queued. Returns the flood and that queue size.
fn flood_until_blocked(server: &TestServer, ws: &mut Ws) -> (Flooded, usize) {
    let mut sent = 0;
    loop {
        let flooded = flood_until_full(server, ws);
        sent += flooded.sent;
        thread::sleep(Duration::from_millis(50));
        ws.send_text("!buffered");
        let (_, queued) = buffered_report(server);
        if queued > 0 {
            return (
                Flooded {
                    id: flooded.id,
                    sent,
                },
                queued,
            );
        }
    }
}

/// Reads the `sent` flood messages, checking each.
fn read_flood(ws: &mut Ws, sent: usize) {
    let payload = flood_payload();
    for i in 0..sent {
        let frame = ws.read_frame();
        assert_eq!(frame.header.opcode, OpCode::Binary, "flood message {i}");
        assert!(frame.payload == payload, "flood message {i} differs");
    }
}

#[test]
fn overflow_closes_the_slow_client_but_not_the_others() {
    let server = server(Overflow::Close);
    let mut other = server.connect();
    let mut slow = server.connect();
    let Flooded { id, sent } = flood_until_full(&server, &mut slow);
    assert_eq!(
        server.wait_for("on_close", |e| matches!(e, Ev::Closed(..))),
        Ev::Closed(id, Why::Overflow)
    );
    other.assert_echo("unaffected");
    // What was queued before the overflow still arrives, then 1008 and the end of stream.
    read_flood(&mut slow, sent);
    assert_eq!(slow.expect_close(1008), "write buffer overflow");
    slow.expect_eof();
    other.assert_echo("still unaffected");
}

#[test]
fn refuse_returns_full_and_keeps_the_connection_open() {
    let server = server(Overflow::Refuse);
    let mut slow = server.connect();
    let (Flooded { id, sent }, _) = flood_until_blocked(&server, &mut slow);
    read_flood(&mut slow, sent);
    slow.assert_echo("still open");
    slow.send_text("!flood");
    assert_eq!(flood_report(&server), (id, Ok(())));
    assert_eq!(slow.read_frame().payload.len(), FLOOD_CHUNK);
}

/// A queue that outgrows one buffer (past 256 KiB it adds buffers instead of regrowing one)
/// still goes out whole and in order once the client reads.
#[test]
fn a_queue_of_megabytes_arrives_whole_once_the_client_reads() {
    let config = Config::default()
        .max_write_buffer(4 * 1024 * 1024)
        .on_overflow(Overflow::Refuse);
    let server = TestServer::start(config);
    let mut slow = server.connect();
    let (Flooded { sent, .. }, queued) = flood_until_blocked(&server, &mut slow);
    assert!(queued > 1024 * 1024, "only {queued} bytes queued");
    read_flood(&mut slow, sent);
    slow.assert_echo("still open, nothing left over");
}

#[test]
fn buffered_reports_the_queue_while_blocked() {
    let server = server(Overflow::Refuse);
    let mut slow = server.connect();
    let (Flooded { id, sent }, queued) = flood_until_blocked(&server, &mut slow);
    // The bound holds to the byte, but for one frame header.
    assert!(
        (1..=MAX_WRITE_BUFFER + 14).contains(&queued),
        "queued {queued} bytes"
    );
    read_flood(&mut slow, sent);
    slow.send_text("!buffered");
    assert_eq!(buffered_report(&server), (id, 0));
}

#[test]
fn on_drain_fires_once_the_slow_client_reads() {
    let server = server(Overflow::Refuse);
    let mut slow = server.connect();
    let (Flooded { id, sent }, _) = flood_until_blocked(&server, &mut slow);
    // Any earlier drain was before the socket blocked; the next one must follow our reads.
    server.clear_events();
    read_flood(&mut slow, sent);
    assert_eq!(
        server.wait_for("on_drain", |e| matches!(e, Ev::Drain(..))),
        Ev::Drain(id)
    );
    slow.assert_echo("drained");
}

/// A client that sends binary messages (echoed) without ever reading, for at most `period`
/// or until the socket has taken nothing for `stall`; returns the bytes the kernel took.
fn send_without_reading(ws: &mut Ws, period: Duration, stall: Duration) -> usize {
    use std::io::{ErrorKind, Write};
    let frame = common::client_frame(OpCode::Binary, true, &[0x5a; 16 * 1024]);
    ws.stream.set_nonblocking(true).unwrap();
    let (start, mut last_progress, mut sent, mut at) = (Instant::now(), Instant::now(), 0, 0);
    while start.elapsed() < period && last_progress.elapsed() < stall {
        match ws.stream.write(&frame[at..]) {
            Ok(n) => {
                sent += n;
                at = (at + n) % frame.len();
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
            Err(_) => break, // reset: the server dropped it
        }
    }
    ws.stream.set_nonblocking(false).unwrap();
    sent
}

#[test]
fn a_reader_that_never_reads_is_closed_and_no_longer_read() {
    let config = Config::default()
        .max_write_buffer(MAX_WRITE_BUFFER)
        .close_timeout(Duration::from_secs(2));
    let server = TestServer::start(config);
    let mut other = server.connect();
    let mut slow = server.connect();
    let sent = send_without_reading(
        &mut slow,
        Duration::from_secs(8),
        Duration::from_millis(500),
    );
    assert!(
        matches!(server.wait_closed(), Why::Overflow),
        "closed for overflowing its queue"
    );
    // Once over its bound nothing more is read from it: what it could send is its echoes'
    // bound plus what the kernel buffers on both sides, not gigabytes read and dropped.
    assert!(
        sent < 64 << 20,
        "{sent} bytes taken from a client that never reads"
    );
    other.assert_echo("unaffected");
    // It ends within close_timeout: its echoes, then (the close frame fitting) 1008 or, if
    // it did not, the end of stream.
    let rest = slow.wait_for_eof();
    let close = [0x88, 2 + "write buffer overflow".len() as u8, 0x03, 0xf0];
    assert!(
        rest.windows(4).any(|w| w == close) || rest.len() % (16 * 1024 + 4) == 0,
        "the last bytes are a 1008 close frame or whole echoes"
    );
}

/// Subscribes every connection to "t"; `overflow` sends two 1,030-byte messages, the second of
/// which cannot be queued, nor a close frame after the first (so the connection is dropped at
/// once, from inside the handler's call); `count` answers how many subscribe to "t".
struct Subscribed;

impl wsloop::Handler for Subscribed {
    type State = ();

    fn on_upgrade(
        &mut self,
        _req: &wsloop::Request<'_, '_>,
        _peer: std::net::SocketAddr,
    ) -> wsloop::Upgrade<()> {
        wsloop::Upgrade::accept(())
    }

    fn on_open(&mut self, ctx: &mut wsloop::Context<'_, ()>, id: ConnId) {
        ctx.subscribe(id, "t");
    }

    fn on_message(
        &mut self,
        ctx: &mut wsloop::Context<'_, ()>,
        id: ConnId,
        msg: wsloop::Message<'_>,
    ) {
        match msg {
            wsloop::Message::Text("overflow") => {
                ctx.send_binary(id, &[1; 1030]).unwrap();
                assert_eq!(ctx.send_binary(id, &[2; 1030]), Err(SendError::Full));
            }
            _ => {
                let n = ctx.subscribers("t").len().to_string();
                ctx.send_text(id, &n).unwrap();
            }
        }
    }
}

#[test]
fn a_connection_dropped_at_once_leaves_its_topics() {
    let config = Config::default().max_write_buffer(1024);
    let mut server = wsloop::Server::bind("127.0.0.1:0", config, Subscribed).unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let reactor = thread::spawn(move || server.run());
    let mut dropped = Ws::connect(addr);
    dropped.send_raw(common::upgrade_request("/", &[]).as_bytes());
    assert_eq!(dropped.read_response_head().status, 101);
    let mut other = Ws::connect(addr);
    other.send_raw(common::upgrade_request("/", &[]).as_bytes());
    assert_eq!(other.read_response_head().status, 101);
    other.send_text("count");
    assert_eq!(other.read_text(), "2");
    dropped.send_text("overflow");
    let _ = dropped.wait_for_eof();
    other.send_text("count");
    assert_eq!(other.read_text(), "1", "the dropped connection left \"t\"");
    handle.shutdown().unwrap();
    reactor.join().unwrap().unwrap();
}
