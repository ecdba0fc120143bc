//! The closing handshake (RFC 6455 sections 5.5.1 and 7) over real sockets, and what the
//! handler's `on_close` is told. Its timing on either side (linger, close timeout) is tested on
//! simulated time in `tests/connection.rs`; here one test checks that the reactor arms the close
//! timer.

mod common;

use std::time::{Duration, Instant};

use common::{client_frame, close_payload, expect_error, unmasked_frame, TestServer, Why};
use wsloop::proto::frame::OpCode;
use wsloop::{Config, ProtocolError};

fn server() -> TestServer {
    TestServer::start(Config::default())
}

#[test]
fn client_close_1000_is_answered_with_1000_then_eof() {
    let server = server();
    let mut ws = server.connect();
    ws.send_close(1000, "bye");
    let reply = ws.read_frame();
    assert_eq!(reply.raw_header, [0x88, 0x02]);
    assert_eq!(reply.payload, [0x03, 0xE8]);
    ws.expect_eof();
}

#[test]
fn empty_close_is_answered_with_empty_close() {
    let server = server();
    let mut ws = server.connect();
    ws.send_frame(OpCode::Close, true, b"");
    let reply = ws.read_frame();
    assert_eq!(reply.raw_header, [0x88, 0x00]);
    assert!(reply.payload.is_empty());
    ws.expect_eof();
}

#[test]
fn close_with_1_byte_payload_is_1002() {
    let frame = client_frame(OpCode::Close, true, &[0x03]);
    expect_error(&server(), &frame, ProtocolError::BadCloseFrame);
}

#[test]
fn invalid_close_codes_are_1002() {
    let server = server();
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let frame = client_frame(OpCode::Close, true, &close_payload(code, b""));
        expect_error(&server, &frame, ProtocolError::BadCloseFrame);
    }
}

#[test]
fn valid_close_codes_are_echoed() {
    let server = server();
    let codes = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    for code in codes {
        let mut ws = server.connect();
        ws.send_close(code, "reason");
        let reply = ws.read_frame();
        assert_eq!(reply.raw_header, [0x88, 0x02], "reply to {code}");
        assert_eq!(reply.payload, code.to_be_bytes(), "reply to {code}");
        ws.expect_eof();
    }
}

#[test]
fn close_reason_with_invalid_utf8_is_1007() {
    let frame = client_frame(OpCode::Close, true, &close_payload(1000, b"bad \xFF"));
    expect_error(&server(), &frame, ProtocolError::InvalidUtf8);
}

#[test]
fn server_initiated_close_reaches_the_client_and_completes() {
    let server = server();
    let mut ws = server.connect();
    ws.send_text("!close");
    let close = ws.read_frame();
    assert_eq!(close.raw_header, [0x88, 12]);
    assert_eq!(close.payload, close_payload(1000, b"server bye"));
    // Data the client sends before its close frame is not answered any more.
    ws.send_text("too late");
    ws.send_close(1000, "");
    ws.expect_eof();
    let closed = Why::Closed {
        code: Some(1000),
        reason: String::new(),
    };
    assert_eq!(server.wait_closed(), closed);
}

/// RFC 6455 section 7.1.1: once the close handshake is done, the server closes TCP first, at
/// once, not after `close_timeout`.
#[test]
fn server_closes_tcp_at_once_after_a_close_handshake_it_started() {
    let close_timeout = Duration::from_secs(30);
    let server = TestServer::start(Config::default().close_timeout(close_timeout));
    let mut ws = server.connect();
    ws.send_text("!close");
    assert_eq!(ws.expect_close(1000), "server bye");
    let start = Instant::now();
    ws.send_close(1000, "");
    // `expect_eof` gives up after 5 s, long before the close timeout.
    ws.expect_eof();
    assert!(start.elapsed() < close_timeout / 2);
}

#[test]
fn unanswered_server_close_drops_tcp_after_close_timeout() {
    let close_timeout = Duration::from_millis(150);
    let server = TestServer::start(Config::default().close_timeout(close_timeout));
    let mut ws = server.connect();
    let start = Instant::now();
    ws.send_text("!close");
    assert_eq!(ws.expect_close(1000), "server bye");
    ws.expect_eof();
    let elapsed = start.elapsed();
    assert!(elapsed >= close_timeout, "dropped after only {elapsed:?}");
    assert_eq!(server.wait_closed(), Why::TimedOut);
}

#[test]
fn on_close_reports_closed_protocol_error_and_disconnected() {
    let server = server();

    let mut ws = server.connect();
    ws.send_close(4001, "see you");
    ws.expect_close(4001);
    let closed = Why::Closed {
        code: Some(4001),
        reason: "see you".into(),
    };
    assert_eq!(server.wait_closed(), closed);

    let mut ws = server.connect();
    ws.send_raw(&unmasked_frame(OpCode::Text, b"naked"));
    ws.expect_close(1002);
    let error = Why::ProtocolError(ProtocolError::BadMasking);
    assert_eq!(server.wait_closed(), error);

    let ws = server.connect();
    drop(ws);
    assert_eq!(server.wait_closed(), Why::Disconnected);
}
