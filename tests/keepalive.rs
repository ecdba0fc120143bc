//! Pings, pongs, keepalive pings and idle timeouts over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, Why};
use wsloop::proto::frame::OpCode;
use wsloop::Config;

const PING_INTERVAL: Duration = Duration::from_millis(200);
const IDLE_TIMEOUT: Duration = Duration::from_millis(500);

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
fn server_pings_after_each_ping_interval_of_silence() {
    let config = Config::default()
        .ping_interval(Some(PING_INTERVAL))
        .idle_timeout(None);
    let server = TestServer::start(config);
    let mut start = Instant::now();
    let mut ws = server.connect();
    for round in 0..3 {
        let ping = ws.read_frame();
        assert_eq!(ping.raw_header, [0x89, 0x00], "ping {round}");
        let elapsed = start.elapsed();
        assert!(
            elapsed >= PING_INTERVAL,
            "ping {round} after only {elapsed:?}"
        );
        start = Instant::now();
        ws.send_frame(OpCode::Pong, true, b"");
    }
    ws.assert_echo("pinged three times");
}

#[test]
fn idle_timeout_closes_a_silent_client_but_not_an_active_one() {
    let config = Config::default()
        .ping_interval(None)
        .idle_timeout(Some(IDLE_TIMEOUT));
    let server = TestServer::start(config);
    let start = Instant::now();
    let mut silent = server.connect();
    let mut active = server.connect();
    while start.elapsed() < IDLE_TIMEOUT * 5 / 2 {
        active.assert_echo("tick");
        std::thread::sleep(IDLE_TIMEOUT / 5);
    }
    // The silent one was closed with 1001 (already buffered), the active one still echoes.
    assert_eq!(silent.expect_close(1001), "idle timeout");
    silent.expect_eof();
    assert_eq!(server.wait_closed(), Why::TimedOut);
    active.assert_echo("still here");
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
    while start.elapsed() < IDLE_TIMEOUT * 3 {
        let ping = responsive.read_frame();
        assert_eq!(ping.header.opcode, OpCode::Ping);
        responsive.send_frame(OpCode::Pong, true, &ping.payload);
    }
    responsive.assert_echo("alive");
    // The dead one got a ping, then, having never answered, 1001.
    assert_eq!(dead.read_frame().raw_header, [0x89, 0x00]);
    assert_eq!(dead.expect_close(1001), "idle timeout");
    dead.expect_eof();
}
