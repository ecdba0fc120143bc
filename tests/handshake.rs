//! The opening handshake over real sockets: statuses, headers and what happens to the
//! connection afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{client_frame, upgrade_request, Options, TestServer, RFC_ACCEPT, RFC_KEY};
use wsloop::proto::frame::OpCode;
use wsloop::Config;

fn server() -> TestServer {
    TestServer::start(Config::default())
}

/// Sends `request` on a fresh connection and checks the answer is a whole HTTP response with
/// `status`, followed by the end of the stream; returns the response.
fn refused(server: &TestServer, request: &[u8], status: u16) -> common::Response {
    let mut ws = server.raw();
    ws.send_raw(request);
    let resp = ws.read_response();
    assert_eq!(resp.status, status, "{resp:?}");
    assert_eq!(resp.header("connection"), Some("close"));
    ws.expect_eof();
    resp
}

/// Sends `request` and checks it is accepted with the RFC accept value.
fn accepted(server: &TestServer, request: &str) {
    let mut ws = server.raw();
    ws.send_raw(request.as_bytes());
    let resp = ws.read_response_head();
    assert_eq!(resp.status, 101, "{request:?} -> {resp:?}");
    assert_eq!(resp.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    ws.assert_echo("still speaking WebSocket");
}

#[test]
fn valid_upgrade_gets_101_with_rfc_accept() {
    let server = server();
    let mut ws = server.raw();
    ws.send_raw(upgrade_request("/chat", &[]).as_bytes());
    let head = ws.read_response_head();
    assert_eq!(head.status_line, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(
        head.headers,
        [
            ("Upgrade".to_owned(), "websocket".to_owned()),
            ("Connection".to_owned(), "Upgrade".to_owned()),
            ("Sec-WebSocket-Accept".to_owned(), RFC_ACCEPT.to_owned()),
        ]
    );
    ws.assert_echo("hello");
}

#[test]
fn upgrade_and_connection_tokens_in_any_case_and_lists() {
    let server = server();
    let variants = [
        ("Upgrade: websocket", "Upgrade: WebSocket"),
        ("Upgrade: websocket", "UPGRADE: WEBSOCKET"),
        ("Connection: Upgrade", "connection: upgrade"),
        ("Connection: Upgrade", "Connection: keep-alive, Upgrade"),
        (
            "Connection: Upgrade",
            "Connection: keep-alive,upgrade , close",
        ),
        ("Sec-WebSocket-Key", "sec-websocket-key"),
    ];
    for (from, to) in variants {
        accepted(&server, &upgrade_request("/", &[]).replace(from, to));
    }
}

#[test]
fn missing_or_invalid_key_is_400() {
    let server = server();
    let good_key = format!("Sec-WebSocket-Key: {RFC_KEY}\r\n");
    let bad_keys = [
        "",                                                // missing
        "Sec-WebSocket-Key: \r\n",                         // empty
        "Sec-WebSocket-Key: not base64 at all\r\n",        // not base64
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n",     // 15 bytes
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n", // 17 bytes
    ];
    for bad in bad_keys {
        let request = upgrade_request("/", &[]).replace(&good_key, bad);
        let resp = refused(&server, request.as_bytes(), 400);
        assert_eq!(resp.body, b"invalid Sec-WebSocket-Key", "key line {bad:?}");
    }
}

#[test]
fn missing_host_is_400() {
    let server = server();
    let request = upgrade_request("/", &[]).replace("Host: localhost\r\n", "");
    let resp = refused(&server, request.as_bytes(), 400);
    assert_eq!(resp.status_line, "HTTP/1.1 400 Bad Request");
}

#[test]
fn post_is_405() {
    let server = server();
    let request = upgrade_request("/", &[]).replace("GET /", "POST /");
    let resp = refused(&server, request.as_bytes(), 405);
    assert_eq!(resp.status_line, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(resp.header("allow"), Some("GET"));
}

#[test]
fn http_1_0_is_400() {
    let server = server();
    let request = upgrade_request("/", &[]).replace("HTTP/1.1", "HTTP/1.0");
    let resp = refused(&server, request.as_bytes(), 400);
    assert_eq!(resp.body, b"HTTP/1.1 required");
}

#[test]
fn version_8_is_426_with_version_13() {
    let server = server();
    let request = upgrade_request("/", &[]).replace("Version: 13", "Version: 8");
    let resp = refused(&server, request.as_bytes(), 426);
    assert_eq!(resp.status_line, "HTTP/1.1 426 Upgrade Required");
    assert_eq!(resp.header("sec-websocket-version"), Some("13"));
}

#[test]
fn draft_76_request_is_426_with_version_13() {
    let server = server();
    let request = b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: sample\r\n\
        Upgrade: WebSocket\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n\
        Origin: http://example.com\r\n\r\n^n:ds[4U";
    let resp = refused(&server, request, 426);
    assert_eq!(resp.header("sec-websocket-version"), Some("13"));
}

#[test]
fn malformed_request_line_is_400() {
    let server = server();
    let requests: [&[u8]; 4] = [
        b"HELLO\r\n\r\n",
        b"GET /\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
    ];
    for request in requests {
        let resp = refused(&server, request, 400);
        assert_eq!(resp.body, b"malformed request", "{request:?}");
    }
}

#[test]
fn header_block_over_the_limit_is_431() {
    let server = server();
    let limit = Config::default().connection.max_handshake_size;
    let base = upgrade_request("/", &[]).len();
    // "X-Pad: " + value + "\r\n" makes the head exactly `size` bytes.
    let with_size = |size: usize| {
        let pad = format!("X-Pad: {}", "a".repeat(size - base - 9));
        upgrade_request("/", &[&pad])
    };
    assert_eq!(with_size(limit).len(), limit);
    accepted(&server, &with_size(limit));
    let resp = refused(&server, with_size(limit + 1).as_bytes(), 431);
    assert_eq!(
        resp.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // A head that never ends is refused as soon as the limit is passed.
    let endless = with_size(2 * limit).replace("\r\n\r\n", "\r\n");
    refused(&server, endless.as_bytes(), 431);
}

#[test]
fn more_than_64_headers_is_431() {
    let server = server();
    let standard = upgrade_request("/", &[]).matches("\r\n").count() - 2;
    let with_headers = |total: usize| {
        let extra: Vec<String> = (standard..total).map(|i| format!("X-H{i}: v")).collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        upgrade_request("/", &extra)
    };
    accepted(&server, &with_headers(64));
    refused(&server, with_headers(65).as_bytes(), 431);
}

#[test]
fn plain_get_gets_426_page() {
    let server = server();
    let resp = refused(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426);
    assert_eq!(resp.header("upgrade"), Some("websocket"));
    assert_eq!(resp.header("sec-websocket-version"), Some("13"));
    assert!(!resp.body.is_empty());
}

#[test]
fn on_http_override_serves_its_own_response() {
    let options = Options {
        http_page: true,
        ..Options::default()
    };
    let server = TestServer::start_with(Config::default(), options);
    let resp = refused(&server, b"GET /index HTTP/1.1\r\nHost: x\r\n\r\n", 200);
    assert_eq!(resp.status_line, "HTTP/1.1 200 OK");
    assert_eq!(resp.body, b"plain page for /index");
}

#[test]
fn request_trickled_one_byte_at_a_time_completes() {
    let server = server();
    let mut ws = server.raw();
    let request = upgrade_request("/slow", &[]);
    ws.send_trickle(request.as_bytes(), 1, Duration::from_millis(2));
    assert_eq!(ws.read_response_head().status, 101);
    ws.assert_echo("patience");
}

#[test]
fn incomplete_request_is_dropped_after_handshake_timeout() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start(Config::default().handshake_timeout(timeout));
    let start = Instant::now();
    let mut ws = server.raw();
    ws.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n");
    ws.expect_eof();
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "dropped after only {elapsed:?}");
}

#[test]
fn frame_in_same_packet_as_request_is_echoed() {
    let server = server();
    let mut ws = server.raw();
    let mut packet = upgrade_request("/", &[]).into_bytes();
    packet.extend(client_frame(OpCode::Text, true, b"early bird"));
    ws.send_raw(&packet);
    assert_eq!(ws.read_response_head().status, 101);
    assert_eq!(ws.read_text(), "early bird");
}

#[test]
fn handler_chosen_subprotocol_is_answered() {
    let options = Options {
        protocol: Some("chat"),
        ..Options::default()
    };
    let server = TestServer::start_with(Config::default(), options);
    let mut ws = server.raw();
    let offer = "Sec-WebSocket-Protocol: superchat, chat";
    ws.send_raw(upgrade_request("/", &[offer]).as_bytes());
    let resp = ws.read_response_head();
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), Some("chat"));
    ws.assert_echo("chatting");

    // A client that offers none gets none.
    let mut ws = server.raw();
    ws.send_raw(upgrade_request("/", &[]).as_bytes());
    let resp = ws.read_response_head();
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), None);
}

#[test]
fn handler_rejection_403_sends_no_frames() {
    let options = Options {
        reject: Some(403),
        ..Options::default()
    };
    let server = TestServer::start_with(Config::default(), options);
    let mut packet = upgrade_request("/", &[]).into_bytes();
    packet.extend(client_frame(OpCode::Text, true, b"let me in"));
    let resp = refused(&server, &packet, 403);
    assert_eq!(resp.status_line, "HTTP/1.1 403 Forbidden");
    assert_eq!(resp.body, b"go away");
}

/// `request` with `from` replaced by the bytes `to` (which need not be UTF-8).
fn with_bytes(request: &str, from: &str, to: &[u8]) -> Vec<u8> {
    let at = request.find(from).expect("the text to replace");
    let mut out = request.as_bytes()[..at].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&request.as_bytes()[at + from.len()..]);
    out
}

#[test]
fn request_targets_other_than_a_path_or_an_http_uri_are_400() {
    let server = server();
    // `*` is for OPTIONS only, the authority form for CONNECT only (RFC 7230 section 5.3);
    // RFC 6455 names a path or an absolute http/https URI.
    for target in ["*", "localhost:80", "ws://localhost/chat", "http://?x"] {
        let request = upgrade_request("/", &[]).replace("GET / ", &format!("GET {target} "));
        let resp = refused(&server, request.as_bytes(), 400);
        assert_eq!(
            resp.body, b"request target must be a path or an http(s) URI",
            "{target}"
        );
    }
}

#[test]
fn absolute_http_target_is_accepted_with_its_path() {
    let server = server();
    for (target, path) in [
        ("http://localhost/chat?x=1", "/chat?x=1"),
        ("HTTPS://localhost:9001", "/"),
    ] {
        let mut ws = server.raw();
        ws.send_raw(upgrade_request(target, &[]).as_bytes());
        assert_eq!(ws.read_response_head().status, 101, "{target}");
        ws.send_text("!state");
        assert_eq!(ws.read_text(), path, "the handler's path for {target}");
    }
}

#[test]
fn more_than_one_version_is_400_in_two_lines_or_one() {
    let server = server();
    let two_lines = upgrade_request("/", &["Sec-WebSocket-Version: 8"]);
    let one_list = upgrade_request("/", &[]).replace("Version: 13", "Version: 13, 8");
    for request in [two_lines, one_list] {
        let resp = refused(&server, request.as_bytes(), 400);
        assert_eq!(
            resp.body, b"more than one Sec-WebSocket-Version",
            "{request}"
        );
    }
    // One version that is not 13 still gets 426 with the version we speak.
    let eight = upgrade_request("/", &[]).replace("Version: 13", "Version: 8");
    refused(&server, eight.as_bytes(), 426);
}

#[test]
fn control_bytes_and_folded_lines_in_headers_are_400() {
    let server = server();
    for line in [
        &b"X-A: a\x00b"[..],
        b"X-A: a\x7fb",
        b"X-A: a\x0bb",
        b"X-A: a\r\n  folded",
    ] {
        let request = with_bytes(&upgrade_request("/", &["X-A: a"]), "X-A: a", line);
        let resp = refused(&server, &request, 400);
        assert_eq!(resp.body, b"malformed request", "{line:?}");
    }
}

#[test]
fn non_ascii_bytes_are_400_in_websocket_headers_and_opaque_elsewhere() {
    let server = server();
    let base = upgrade_request("/", &["X-A: a"]);
    let refused_lines: [&[u8]; 5] = [
        b"Origin: http://caf\xc3\xa9.example",
        b"Origin: http://a.example\r\nOrigin: \xff",
        b"Sec-WebSocket-Key: \xff\xfe",
        b"Sec-WebSocket-Version: 13\xa0",
        b"Sec-WebSocket-Protocol: chat\xff",
    ];
    for line in refused_lines {
        let resp = refused(&server, &with_bytes(&base, "X-A: a", line), 400);
        assert_eq!(
            resp.body, b"non-ASCII byte in a WebSocket header",
            "{line:?}"
        );
    }
    // RFC 7230's obs-text (0x80-0xFF) elsewhere is opaque data: accepted.
    for line in [
        &b"User-Agent: caf\xc3\xa9"[..],
        b"X-A: \xff\xfe",
        b"Cookie: a=\xe9",
    ] {
        let mut ws = server.raw();
        ws.send_raw(&with_bytes(&base, "X-A: a", line));
        let resp = ws.read_response_head();
        assert_eq!(resp.status, 101, "{line:?}");
        assert_eq!(resp.header("sec-websocket-accept"), Some(RFC_ACCEPT));
        ws.assert_echo("opaque is fine");
    }
}
