//! Pings, pongs, keepalive pings and idle timeouts over real sockets. The timing itself
//! (when pings go out, when silence closes, what traffic postpones) is tested on simulated time
//! in `tests/connection.rs`; here one test checks that the reactor arms those timers.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, Why};
use wsloop::proto::frame::OpCode;
use wsloop::Config;

const PING_INTERVAL: Duration = Duration::from_millis(100);
const IDLE_TIMEOUT: Duration = Duration::from_millis(250);

#[test]
fn ping_is_answered_promptly_with_same_payload() {
    let server = TestServer::start(Config::default());
    let mut ws = server.connect();
    for payload in [&b""[..], b"are you there?", &[0xAB; 125]] {
        let start = Instant::now();
        ws.send_frame(OpCode::Ping, true, payload);
        let pong = ws.read_frame();
        // The handler sends nothing for a ping: the pong is flushed in the turn that read it.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "pong took {:?}",
            start.elapsed()
        );
        assert_eq!(pong.raw_header, [0x8A, payload.len() as u8]);
        assert_eq!(pong.payload, payload);
    }
}

#[test]
fn unsolicited_pong_is_ignored() {
    let server = TestServer::start(Config::default());
    let mut ws = server.connect();
    ws.send_frame(OpCode::Pong, true, b"nobody asked");
    ws.send_frame(OpCode::Pong, true, b"");
    ws.assert_echo("still here");
}

#[test]
fn keepalive_pings_keep_a_responsive_client_and_drop_a_dead_one() {
    let config = Config::default()
        .ping_interval(Some(PING_INTERVAL))
        .idle_timeout(Some(IDLE_TIMEOUT));
    let server = TestServer::start(config);
    let mut responsive = server.connect();
    let mut dead = server.connect();
    let start = Instant::now();
    // The responsive client only ever answers pings.
    while start.elapsed() < IDLE_TIMEOUT * 2 {
        let ping = responsive.read_frame();
        assert_eq!(ping.header.opcode, OpCode::Ping);
        responsive.send_frame(OpCode::Pong, true, &ping.payload);
    }
    responsive.assert_echo("alive");
    // The dead one got a ping, then, having never answered, 1001.
    assert_eq!(dead.read_frame().raw_header, [0x89, 0x00]);
    assert_eq!(dead.expect_close(1001), "idle timeout");
    dead.expect_eof();
    assert_eq!(server.wait_closed(), Why::TimedOut);
}
