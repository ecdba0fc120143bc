//! permessage-deflate (RFC 7692) over real sockets: what the 101 answers to an offer, the RFC's
//! example frames, the threshold, fragmented compressed messages, RSV1 rules, bombs, corrupt
//! data, context takeover and broadcasts to a mix of compressed and plain clients.
//!
//! The client side is written here on `flate2` directly (raw deflate, sync flush, the 4-byte tail
//! stripped and appended back), not on wsloop's own codec, so that both ends are checked.

mod common;

use std::time::Duration;

use common::{upgrade_request, Ev, Response, TestServer, Why, Ws, RFC_ACCEPT};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use wsloop::proto::deflate::DeflateConfig;
use wsloop::proto::frame::{write_frame, OpCode};
use wsloop::{Config, Overflow, ProtocolError};

/// The end of every sync-flushed deflate block (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// RFC 7692 7.2.3.1: "Hello", compressed.
const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
/// What `DeflateConfig::default()` answers to a plain offer.
const DEFAULT_ANSWER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

fn with_deflate(deflate: DeflateConfig) -> Config {
    Config::default().deflate(Some(deflate))
}

/// `DeflateConfig::default()`: no context takeover either way, threshold 64 bytes.
fn server() -> TestServer {
    TestServer::start(with_deflate(DeflateConfig::default()))
}

/// The defaults, but every message is compressed, however short.
fn server_threshold_0() -> TestServer {
    TestServer::start(with_deflate(DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    }))
}

/// Context takeover both ways allowed (RFC 7692's own default), threshold 0.
fn takeover() -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        threshold: 0,
        ..DeflateConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Client side of the codec, on flate2
// ---------------------------------------------------------------------------------------------

/// A raw deflate compressor with `bits` window bits, as a client would keep one.
fn compressor(bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::new(6), false, bits)
}

/// Compresses one whole message (sync flush, tail stripped), keeping `c`'s context.
fn deflate_with(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() / 2 + 64);
    let mut pos = 0;
    loop {
        out.reserve(64 + (msg.len() - pos) / 2);
        let before = c.total_in();
        c.compress_vec(&msg[pos..], &mut out, FlushCompress::Sync)
            .expect("deflate");
        pos += (c.total_in() - before) as usize;
        if pos == msg.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.is_empty() {
        // An empty message right after another: zlib has nothing to flush. One empty stored
        // block's first byte (RFC 7692 7.2.3.6).
        return vec![0x00];
    }
    assert!(out.ends_with(&TAIL), "sync flush must end with 00 00 ff ff");
    out.truncate(out.len() - TAIL.len());
    out
}

/// Compresses one message on its own.
fn deflate(msg: &[u8]) -> Vec<u8> {
    deflate_with(&mut compressor(15), msg)
}

/// Inflates one message's payload (the tail appended back), keeping `d`'s context.
fn inflate_with(d: &mut Decompress, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(4 * input.len() + 256);
    let mut pos = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            .map_err(|e| format!("inflate failed: {e}"))?;
        pos += (d.total_in() - in0) as usize;
        let produced = d.total_out() - out0;
        if status == Status::StreamEnd || (pos == input.len() && out.len() < out.capacity()) {
            return Ok(out);
        }
        if pos < input.len() && produced == 0 && d.total_in() == in0 && out.len() < out.capacity() {
            return Err("inflate made no progress".into());
        }
    }
}

/// Inflates one message compressed on its own.
fn inflate(payload: &[u8]) -> Vec<u8> {
    inflate_with(&mut Decompress::new(false), payload).expect("server sent bad deflate data")
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// Valid UTF-8 text of exactly `len` bytes that compresses well.
fn text_of(len: usize) -> String {
    let unit = "héllo ✓ 🎉 "; // 16 bytes
    let mut s = unit.repeat(len / 16);
    s.extend(std::iter::repeat_n('x', len % 16));
    assert_eq!(s.len(), len);
    s
}

// ---------------------------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------------------------

/// A masked client frame with RSV1 as given.
fn frame(opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(
        &mut out,
        opcode,
        fin,
        rsv1,
        Some([0x37, 0xfa, 0x21, 0x3d]),
        payload,
    );
    out
}

/// A whole compressed message in one frame.
fn compressed(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    frame(opcode, true, true, payload)
}

/// Upgrades with `extra` request header lines; checks the 101 and returns the response.
fn upgrade(server: &TestServer, extra: &[&str]) -> (Ws, Response) {
    let mut ws = server.raw();
    ws.send_raw(upgrade_request("/", extra).as_bytes());
    let resp = ws.read_response_head();
    assert_eq!(resp.status, 101, "handshake refused: {resp:?}");
    assert_eq!(resp.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    (ws, resp)
}

/// Upgrades offering `offer` (one `Sec-WebSocket-Extensions` header, none if empty); returns
/// the connection and the answer's `Sec-WebSocket-Extensions`, checking there is at most one.
fn offer(server: &TestServer, offer: &str) -> (Ws, Option<String>) {
    let header = format!("Sec-WebSocket-Extensions: {offer}");
    let extra: &[&str] = if offer.is_empty() { &[] } else { &[&header] };
    let (ws, resp) = upgrade(server, extra);
    (ws, answer(&resp))
}

fn answer(resp: &Response) -> Option<String> {
    let all: Vec<_> = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, v)| v.clone())
        .collect();
    assert!(all.len() <= 1, "several extension headers: {all:?}");
    all.into_iter().next()
}

/// A message as the server sent it: opcode, RSV1, and the payload inflated if RSV1 was set.
fn read_message(ws: &mut Ws, d: Option<&mut Decompress>) -> (OpCode, bool, Vec<u8>) {
    let f = ws.read_frame();
    assert!(
        f.header.fin,
        "the server sends whole messages: {:?}",
        f.header
    );
    let payload = match (f.header.rsv1, d) {
        (false, _) => f.payload,
        (true, Some(d)) => inflate_with(d, &f.payload).expect("server sent bad deflate data"),
        (true, None) => inflate(&f.payload),
    };
    (f.header.opcode, f.header.rsv1, payload)
}

/// Reads a compressed text message and checks it inflates to `want`.
fn expect_compressed_text(ws: &mut Ws, want: &str) {
    let (opcode, rsv1, payload) = read_message(ws, None);
    assert_eq!((opcode, rsv1), (OpCode::Text, true), "echo of {want:?}");
    assert_eq!(String::from_utf8(payload).unwrap(), want);
}

/// Checks that the server answers `error`'s close code and reason, then closes TCP.
fn expect_error(ws: &mut Ws, error: ProtocolError) {
    let reason = ws.expect_close(error.close_code().0);
    assert_eq!(reason, error.as_str());
    ws.expect_eof();
}

// ---------------------------------------------------------------------------------------------
// Negotiation over the wire
// ---------------------------------------------------------------------------------------------

/// Offers `headers` (each a `Sec-WebSocket-Extensions` value) and checks the answer; then
/// checks that compression works if it was accepted, and that RSV1 is refused if not.
fn check_negotiation(server: &TestServer, headers: &[&str], want: Option<&str>) {
    let lines: Vec<String> = headers
        .iter()
        .map(|v| format!("Sec-WebSocket-Extensions: {v}"))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (mut ws, resp) = upgrade(server, &lines);
    assert_eq!(answer(&resp).as_deref(), want, "offers {headers:?}");
    ws.send_raw(&compressed(OpCode::Text, HELLO));
    match want {
        Some(_) => expect_compressed_text(&mut ws, "Hello"),
        None => expect_error(&mut ws, ProtocolError::ReservedBits),
    }
}

#[test]
fn negotiates_a_plain_offer() {
    let server = server_threshold_0();
    check_negotiation(&server, &["permessage-deflate"], Some(DEFAULT_ANSWER));
}

#[test]
fn negotiates_client_max_window_bits_without_value() {
    // Chromium's own offer; the server keeps the client's 15-bit window, so names no value.
    let server = server_threshold_0();
    let offer = "permessage-deflate; client_max_window_bits";
    check_negotiation(&server, &[offer], Some(DEFAULT_ANSWER));
}

#[test]
fn negotiates_server_max_window_bits_10() {
    let server = server_threshold_0();
    let want = format!("{DEFAULT_ANSWER}; server_max_window_bits=10");
    let offer = "permessage-deflate; server_max_window_bits=10";
    check_negotiation(&server, &[offer], Some(&want));
}

#[test]
fn declines_server_max_window_bits_8() {
    // zlib cannot compress within a 256-byte window: no extension, and RSV1 is then an error.
    let server = server_threshold_0();
    check_negotiation(
        &server,
        &["permessage-deflate; server_max_window_bits=8"],
        None,
    );
}

#[test]
fn declines_an_offer_with_an_unknown_parameter() {
    let server = server_threshold_0();
    check_negotiation(&server, &["permessage-deflate; foo=bar"], None);
    check_negotiation(&server, &["permessage-deflate; mux"], None);
    check_negotiation(
        &server,
        &["permessage-deflate; client_no_context_takeover=1"],
        None,
    );
}

#[test]
fn skips_an_invalid_first_offer_and_accepts_the_second() {
    let server = server_threshold_0();
    let want = format!("{DEFAULT_ANSWER}; client_max_window_bits=9");
    let offers = "permessage-deflate; server_max_window_bits=8, \
                  permessage-deflate; client_max_window_bits=9";
    check_negotiation(&server, &[offers], Some(&want));
}

#[test]
fn reads_offers_across_several_headers() {
    let server = server_threshold_0();
    let want = format!("{DEFAULT_ANSWER}; server_max_window_bits=12; client_max_window_bits=10");
    check_negotiation(
        &server,
        &[
            "x-webkit-deflate-frame",
            "permessage-deflate; bogus",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
            "permessage-deflate",
        ],
        Some(&want),
    );
}

#[test]
fn answers_the_configured_window_and_takeover_settings() {
    let server = TestServer::start(with_deflate(DeflateConfig {
        server_max_window_bits: 11,
        client_max_window_bits: 12,
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        threshold: 0,
        ..DeflateConfig::default()
    }));
    check_negotiation(
        &server,
        &["permessage-deflate"],
        Some("permessage-deflate; server_max_window_bits=11"),
    );
    check_negotiation(
        &server,
        &["permessage-deflate; client_max_window_bits"],
        Some("permessage-deflate; server_max_window_bits=11; client_max_window_bits=12"),
    );
    check_negotiation(
        &server,
        &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=11",
        ),
    );
}

#[test]
fn deflate_off_in_config_answers_no_extension() {
    let server = TestServer::start(Config::default());
    check_negotiation(&server, &["permessage-deflate"], None);
    check_negotiation(
        &server,
        &["permessage-deflate; client_max_window_bits"],
        None,
    );
}

#[test]
fn no_offer_no_extension() {
    let server = server_threshold_0();
    check_negotiation(&server, &[], None);
}

// ---------------------------------------------------------------------------------------------
// RFC 7692 examples and the threshold
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc7692_hello_frame_is_echoed_compressed() {
    let server = server_threshold_0();
    let (mut ws, ext) = offer(&server, "permessage-deflate");
    assert_eq!(ext.as_deref(), Some(DEFAULT_ANSWER));
    let bytes = compressed(OpCode::Text, HELLO);
    assert_eq!(
        bytes[..2],
        [0xc1, 0x87],
        "FIN + RSV1 + text, masked, 7 bytes"
    );
    ws.send_raw(&bytes);
    let echo = ws.read_frame();
    assert_eq!(echo.raw_header[0], 0xc1, "echo: FIN + RSV1 + text");
    assert_eq!(inflate(&echo.payload), b"Hello");
    // The same again: no context is kept either way.
    ws.send_raw(&bytes);
    expect_compressed_text(&mut ws, "Hello");
}

#[test]
fn rfc7692_examples_are_understood() {
    let server = server_threshold_0();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    // 7.2.3.1, fragmented: RSV1 on the first frame only.
    ws.send_raw(&frame(OpCode::Text, false, true, &HELLO[..3]));
    ws.send_raw(&frame(OpCode::Continuation, true, false, &HELLO[3..]));
    expect_compressed_text(&mut ws, "Hello");
    // 7.2.3.3: a stored (uncompressed) block.
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    ws.send_raw(&compressed(OpCode::Text, &stored));
    expect_compressed_text(&mut ws, "Hello");
    // 7.2.3.4: a final block (BFINAL), then the next message still works.
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    ws.send_raw(&compressed(OpCode::Text, &bfinal));
    expect_compressed_text(&mut ws, "Hello");
    ws.send_raw(&compressed(OpCode::Text, HELLO));
    expect_compressed_text(&mut ws, "Hello");
    // An empty message: one empty stored block.
    ws.send_raw(&compressed(OpCode::Text, &[0x00]));
    expect_compressed_text(&mut ws, "");
    // The same data as binary.
    ws.send_raw(&compressed(OpCode::Binary, HELLO));
    let (opcode, rsv1, payload) = read_message(&mut ws, None);
    assert_eq!(
        (opcode, rsv1, &payload[..]),
        (OpCode::Binary, true, &b"Hello"[..])
    );
}

#[test]
fn rfc7692_shared_window_example_with_client_context_takeover() {
    // 7.2.3.2: the second "Hello" refers back into the first message.
    let server = TestServer::start(with_deflate(takeover()));
    let (mut ws, ext) = offer(&server, "permessage-deflate");
    assert_eq!(ext.as_deref(), Some("permessage-deflate"));
    let mut d = Decompress::new(false);
    for payload in [HELLO, &[0xf2, 0x00, 0x11, 0x00, 0x00]] {
        ws.send_raw(&compressed(OpCode::Text, payload));
        let (opcode, rsv1, echo) = read_message(&mut ws, Some(&mut d));
        assert_eq!(
            (opcode, rsv1, &echo[..]),
            (OpCode::Text, true, &b"Hello"[..])
        );
    }
}

#[test]
fn messages_under_the_threshold_go_out_uncompressed() {
    let server = server(); // threshold 64
    let (mut ws, _) = offer(&server, "permessage-deflate");
    for len in [1, 63] {
        let text = text_of(len);
        // Compressed or not, a short message comes back as it is.
        ws.send_raw(&compressed(OpCode::Text, &deflate(text.as_bytes())));
        let (opcode, rsv1, payload) = read_message(&mut ws, None);
        assert_eq!((opcode, rsv1), (OpCode::Text, false), "{len}-byte echo");
        assert_eq!(payload, text.as_bytes());
        ws.send_raw(&frame(OpCode::Binary, true, false, text.as_bytes()));
        let (opcode, rsv1, payload) = read_message(&mut ws, None);
        assert_eq!((opcode, rsv1), (OpCode::Binary, false), "{len}-byte echo");
        assert_eq!(payload, text.as_bytes());
    }
    for len in [64, 65, 1000] {
        let text = text_of(len);
        ws.send_raw(&compressed(OpCode::Text, &deflate(text.as_bytes())));
        expect_compressed_text(&mut ws, &text);
        // An uncompressed message from the client is still answered compressed.
        ws.send_raw(&frame(OpCode::Text, true, false, text.as_bytes()));
        expect_compressed_text(&mut ws, &text);
    }
}

#[test]
fn one_mib_messages_round_trip_compressed() {
    let server = server();
    let (mut ws, _) = offer(&server, "permessage-deflate; client_max_window_bits");
    let text = text_of(MIB);
    ws.send_raw(&compressed(OpCode::Text, &deflate(text.as_bytes())));
    expect_compressed_text(&mut ws, &text);
    for binary in [noise(MIB, 7), vec![0x5a; MIB]] {
        ws.send_raw(&compressed(OpCode::Binary, &deflate(&binary)));
        let (opcode, rsv1, payload) = read_message(&mut ws, None);
        assert_eq!((opcode, rsv1), (OpCode::Binary, true));
        assert!(payload == binary, "1 MiB binary echo differs");
    }
}

#[test]
fn client_window_of_9_bits_is_inflated() {
    let server = server();
    let (mut ws, ext) = offer(&server, "permessage-deflate; client_max_window_bits=9");
    let want = format!("{DEFAULT_ANSWER}; client_max_window_bits=9");
    assert_eq!(ext.as_deref(), Some(want.as_str()));
    let text = text_of(100_000);
    let payload = deflate_with(&mut compressor(9), text.as_bytes());
    ws.send_raw(&compressed(OpCode::Text, &payload));
    expect_compressed_text(&mut ws, &text);
}

#[test]
fn a_window_wider_than_client_max_window_bits_fails_the_connection() {
    let server = server();
    // 600 random letters twice: the second copy refers 600 bytes back, beyond a 256-byte window.
    let mut msg: Vec<u8> = noise(600, 5).iter().map(|b| b'a' + b % 26).collect();
    msg.extend_from_within(..);
    for (opcode, error) in [
        (OpCode::Text, ProtocolError::BadCompressedText),
        (OpCode::Binary, ProtocolError::BadCompression),
    ] {
        let (mut ws, ext) = offer(&server, "permessage-deflate; client_max_window_bits=8");
        let want = format!("{DEFAULT_ANSWER}; client_max_window_bits=8");
        assert_eq!(ext.as_deref(), Some(want.as_str()));
        ws.send_raw(&compressed(
            opcode,
            &deflate_with(&mut compressor(15), &msg),
        ));
        expect_error(&mut ws, error);
        assert_eq!(server.wait_closed(), Why::ProtocolError(error));
    }
    // Within 9 bits: fine with client_max_window_bits=9 (and zlib's 9 bits never go past 250).
    let (mut ws, _) = offer(&server, "permessage-deflate; client_max_window_bits=9");
    let text = text_of(2000);
    ws.send_raw(&compressed(
        OpCode::Text,
        &deflate_with(&mut compressor(9), text.as_bytes()),
    ));
    expect_compressed_text(&mut ws, &text);
}

// ---------------------------------------------------------------------------------------------
// Fragmented compressed messages and RSV1 rules
// ---------------------------------------------------------------------------------------------

#[test]
fn fragmented_compressed_message_is_echoed() {
    let server = server();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    let text = text_of(10_000);
    let payload = deflate(text.as_bytes());
    let (a, rest) = payload.split_at(payload.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    ws.send_raw(&frame(OpCode::Text, false, true, a));
    ws.send_raw(&frame(OpCode::Continuation, false, false, b));
    // A ping in the middle is answered at once (uncompressed: RSV1 never on control frames).
    ws.send_raw(&frame(OpCode::Ping, true, false, b"mid"));
    let pong = ws.read_frame();
    assert_eq!(
        (pong.header.opcode, pong.header.rsv1, &pong.payload[..]),
        (OpCode::Pong, false, &b"mid"[..])
    );
    ws.send_raw(&frame(OpCode::Continuation, true, false, c));
    expect_compressed_text(&mut ws, &text);

    // Binary, 1 MiB of noise in 64 KiB fragments, each byte its own compressed fragment at first.
    let binary = noise(MIB, 3);
    let payload = deflate(&binary);
    let mut bytes = Vec::new();
    for (i, b) in payload[..4].iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        bytes.extend(frame(opcode, false, i == 0, &[*b]));
    }
    let chunks: Vec<_> = payload[4..].chunks(64 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        bytes.extend(frame(
            OpCode::Continuation,
            i + 1 == chunks.len(),
            false,
            chunk,
        ));
    }
    ws.send_raw(&bytes);
    let (opcode, rsv1, echo) = read_message(&mut ws, None);
    assert_eq!((opcode, rsv1), (OpCode::Binary, true));
    assert!(echo == binary, "fragmented 1 MiB binary echo differs");
}

#[test]
fn rsv1_on_a_continuation_is_1002() {
    let server = server();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&frame(OpCode::Text, false, true, &HELLO[..3]));
    ws.send_raw(&frame(OpCode::Continuation, true, true, &HELLO[3..]));
    expect_error(&mut ws, ProtocolError::ReservedBits);
    assert_eq!(
        server.wait_closed(),
        Why::ProtocolError(ProtocolError::ReservedBits)
    );
}

#[test]
fn rsv1_on_control_frames_is_1002() {
    let server = server();
    for opcode in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let (mut ws, _) = offer(&server, "permessage-deflate");
        let payload: &[u8] = if opcode == OpCode::Close {
            &[0x03, 0xe8]
        } else {
            b"x"
        };
        ws.send_raw(&frame(opcode, true, true, payload));
        expect_error(&mut ws, ProtocolError::ReservedBits);
    }
}

#[test]
fn rsv1_without_negotiation_is_1002() {
    // Deflate on in the server, but the client offered nothing.
    let server = server();
    let (mut ws, ext) = offer(&server, "");
    assert_eq!(ext, None);
    ws.send_raw(&compressed(OpCode::Binary, HELLO));
    expect_error(&mut ws, ProtocolError::ReservedBits);
    // Deflate off in the server, though the client offered it.
    let server = TestServer::start(Config::default());
    let (mut ws, ext) = offer(&server, "permessage-deflate");
    assert_eq!(ext, None);
    ws.send_raw(&compressed(OpCode::Text, HELLO));
    expect_error(&mut ws, ProtocolError::ReservedBits);
}

// ---------------------------------------------------------------------------------------------
// Bombs and corrupt data
// ---------------------------------------------------------------------------------------------

fn bomb_server() -> TestServer {
    TestServer::start(with_deflate(DeflateConfig::default()).max_message_size(MIB))
}

#[test]
fn deflate_bomb_is_1009() {
    let server = bomb_server();
    let bomb = deflate_with(
        &mut Compress::new(Compression::best(), false),
        &vec![0; 8 * MIB],
    );
    // A few KiB that inflate to 8 times the limit.
    assert!(bomb.len() < 16 * 1024, "{} bytes", bomb.len());
    for opcode in [OpCode::Binary, OpCode::Text] {
        let (mut ws, _) = offer(&server, "permessage-deflate");
        ws.send_raw(&compressed(opcode, &bomb));
        expect_error(&mut ws, ProtocolError::MessageTooBig);
        assert_eq!(
            server.wait_closed(),
            Why::ProtocolError(ProtocolError::MessageTooBig)
        );
    }
    // Fragmented: each fragment is small, the message is not.
    let (mut ws, _) = offer(&server, "permessage-deflate");
    let chunks: Vec<_> = bomb.chunks(512).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        bytes.extend(frame(opcode, i + 1 == chunks.len(), i == 0, chunk));
    }
    ws.send_raw(&bytes);
    let reason = ws.expect_close(1009);
    assert_eq!(reason, ProtocolError::MessageTooBig.as_str());
    // The server is fine afterwards.
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&compressed(OpCode::Text, HELLO));
    let (_, _, payload) = read_message(&mut ws, None);
    assert_eq!(payload, b"Hello");
}

#[test]
fn message_inflating_to_exactly_max_message_size_is_accepted() {
    let server = bomb_server();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    let exact = vec![0x20; MIB];
    ws.send_raw(&compressed(OpCode::Binary, &deflate(&exact)));
    let (opcode, rsv1, payload) = read_message(&mut ws, None);
    assert_eq!((opcode, rsv1), (OpCode::Binary, true));
    assert!(payload == exact);
    // One byte more is too big.
    ws.send_raw(&compressed(OpCode::Binary, &deflate(&vec![0x20; MIB + 1])));
    expect_error(&mut ws, ProtocolError::MessageTooBig);
}

#[test]
fn corrupt_compressed_text_is_1007() {
    let server = server();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    // BFINAL + the reserved block type 11.
    ws.send_raw(&compressed(OpCode::Text, &[0xff; 16]));
    // Corrupt compressed text is answered like invalid text: 1007.
    expect_error(&mut ws, ProtocolError::BadCompressedText);
    assert_eq!(
        server.wait_closed(),
        Why::ProtocolError(ProtocolError::BadCompressedText)
    );
    // Corrupt in a continuation of a text message.
    let (mut ws, _) = offer(&server, "permessage-deflate");
    // After HELLO comes an empty stored block's LEN and NLEN: ffff/ffff do not match.
    ws.send_raw(&frame(OpCode::Text, false, true, HELLO));
    ws.send_raw(&frame(OpCode::Continuation, true, false, &[0xff; 8]));
    expect_error(&mut ws, ProtocolError::BadCompressedText);
    // Valid deflate data that inflates to invalid UTF-8.
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&compressed(
        OpCode::Text,
        &deflate(b"ok \xc3\x28 then more"),
    ));
    expect_error(&mut ws, ProtocolError::InvalidUtf8);
}

#[test]
fn corrupt_compressed_binary_is_1002() {
    let server = server();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&compressed(OpCode::Binary, &[0xff; 16]));
    expect_error(&mut ws, ProtocolError::BadCompression);
    assert_eq!(
        server.wait_closed(),
        Why::ProtocolError(ProtocolError::BadCompression)
    );
    // Corrupt in a continuation of a binary message.
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&frame(OpCode::Binary, false, true, HELLO));
    ws.send_raw(&frame(OpCode::Continuation, true, false, &[0xff; 8]));
    expect_error(&mut ws, ProtocolError::BadCompression);
}

#[test]
fn bytes_after_the_final_deflate_block_fail_the_connection() {
    // "Hello" in a final block (BFINAL), then RFC 7692 7.2.3.4's 00 octet.
    const FINAL: &[u8] = &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let server = server_threshold_0();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&compressed(OpCode::Text, FINAL));
    expect_compressed_text(&mut ws, "Hello");
    // The 00 octet in a continuation frame of its own.
    ws.send_raw(&frame(OpCode::Text, false, true, FINAL));
    ws.send_raw(&frame(OpCode::Continuation, true, false, &[0x00]));
    expect_compressed_text(&mut ws, "Hello");
    // A second deflate stream after the final block: invalid compressed data, as text (1007)
    // and as binary (1002), in the same frame or the next.
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&compressed(OpCode::Text, &[FINAL, FINAL].concat()));
    expect_error(&mut ws, ProtocolError::BadCompressedText);
    assert_eq!(
        server.wait_closed(),
        Why::ProtocolError(ProtocolError::BadCompressedText)
    );
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&frame(
        OpCode::Binary,
        false,
        true,
        &[FINAL, &[0x00]].concat(),
    ));
    ws.send_raw(&frame(OpCode::Continuation, true, false, &[0x00]));
    expect_error(&mut ws, ProtocolError::BadCompression);
    // One stray byte other than the padding octet.
    let (mut ws, _) = offer(&server, "permessage-deflate");
    ws.send_raw(&compressed(OpCode::Text, &[FINAL, &[0x01]].concat()));
    expect_error(&mut ws, ProtocolError::BadCompressedText);
}

// ---------------------------------------------------------------------------------------------
// Context takeover
// ---------------------------------------------------------------------------------------------

#[test]
fn context_takeover_both_ways() {
    let server = TestServer::start(with_deflate(takeover()));
    let (mut ws, ext) = offer(&server, "permessage-deflate; client_max_window_bits");
    assert_eq!(ext.as_deref(), Some("permessage-deflate"));
    let (mut c, mut d) = (compressor(15), Decompress::new(false));
    // Noise does not compress on its own; the second time it is one back-reference.
    let msg = noise(4000, 11);
    let mut sizes = Vec::new();
    for i in 0..3 {
        let payload = deflate_with(&mut c, &msg);
        if i > 0 {
            assert!(
                payload.len() < 100,
                "client context: {} bytes",
                payload.len()
            );
        }
        ws.send_raw(&compressed(OpCode::Binary, &payload));
        let f = ws.read_frame();
        assert!(f.header.rsv1);
        sizes.push(f.payload.len());
        let echo = inflate_with(&mut d, &f.payload).expect("inflate with context");
        assert!(echo == msg, "echo #{i} differs");
    }
    assert!(sizes[0] > 4000 && sizes[1] < 100, "server sizes {sizes:?}");
}

#[test]
fn no_context_takeover_by_default() {
    let server = server();
    let (mut ws, _) = offer(&server, "permessage-deflate");
    let msg = noise(4000, 11);
    for i in 0..3 {
        ws.send_raw(&compressed(OpCode::Binary, &deflate(&msg)));
        let f = ws.read_frame();
        assert!(f.header.rsv1);
        assert!(f.payload.len() > 4000, "echo #{i} used a context");
        assert!(inflate(&f.payload) == msg);
    }
}

/// A send refused for overflow (`Overflow::Refuse`) must not leave the message in the
/// connection's compression context: the client never got it, so later messages may not refer
/// to it.
#[test]
fn refused_send_does_not_corrupt_the_compression_context() {
    // A queue under its bound takes any frame up to the larger of max_write_buffer and
    // max_message_size; noise grows when compressed, so its echo is one byte over and refused.
    let config = with_deflate(takeover())
        .max_write_buffer(1024)
        .max_message_size(2000)
        .on_overflow(Overflow::Refuse);
    let server = TestServer::start(config);
    let (mut ws, ext) = offer(&server, "permessage-deflate");
    assert_eq!(ext.as_deref(), Some("permessage-deflate"));
    let msg = noise(2000, 5);
    // The echo compresses to over 2000 bytes: refused (the test handler ignores the error).
    ws.send_raw(&frame(OpCode::Binary, true, false, &msg));
    // Then a message the compressor could take from the refused one.
    ws.send_raw(&frame(OpCode::Binary, true, false, &msg[..600]));
    let f = ws.read_frame();
    assert!(f.header.rsv1);
    match inflate_with(&mut Decompress::new(false), &f.payload) {
        Ok(echo) => assert!(echo == msg[..600], "echo differs"),
        Err(e) => panic!(
            "the 600-byte echo ({} bytes compressed) refers to the refused message, which the \
             client never got: {e}",
            f.payload.len()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Broadcasts
// ---------------------------------------------------------------------------------------------

/// Connects and waits for the server to report the connection open.
fn join(server: &TestServer, ext: &str) -> Ws {
    let (ws, _) = offer(server, ext);
    server.wait_for("on_open", |e| matches!(e, Ev::Open(_)));
    ws
}

#[test]
fn broadcast_reaches_compressed_and_plain_clients() {
    let server = server();
    let mut a = join(&server, "permessage-deflate");
    let mut b = join(&server, "permessage-deflate; server_max_window_bits=10");
    let mut plain = join(&server, "");
    let long = text_of(3000);
    for sender in 0..3 {
        let ws = match sender {
            0 => &mut a,
            1 => &mut b,
            _ => &mut plain,
        };
        ws.send_raw(&frame(
            OpCode::Text,
            true,
            false,
            format!("!all {long}").as_bytes(),
        ));
        for ws in [&mut a, &mut b] {
            expect_compressed_text(ws, &long);
        }
        assert_eq!(plain.read_text(), long);
    }
    // Under the threshold: uncompressed for everyone.
    a.send_raw(&compressed(OpCode::Text, &deflate(b"!all short")));
    for ws in [&mut a, &mut b, &mut plain] {
        let (opcode, rsv1, payload) = read_message(ws, None);
        assert_eq!(
            (opcode, rsv1, &payload[..]),
            (OpCode::Text, false, &b"short"[..])
        );
    }
    // Everyone but the sender.
    plain.send_raw(&frame(
        OpCode::Text,
        true,
        false,
        format!("!others {long}").as_bytes(),
    ));
    for ws in [&mut a, &mut b] {
        expect_compressed_text(ws, &long);
    }
    plain.expect_silence(Duration::from_millis(200));
}

#[test]
fn broadcast_with_context_takeover_and_shared_clients() {
    let server = TestServer::start(with_deflate(takeover()));
    // Own compressor (context takeover), shared compressor, no compression.
    let mut own = join(&server, "permessage-deflate");
    let mut shared = join(&server, "permessage-deflate; server_no_context_takeover");
    let mut plain = join(&server, "");
    let mut d = Decompress::new(false);
    let long = String::from_utf8(noise(3000, 9).iter().map(|b| b'a' + b % 26).collect()).unwrap();
    let mut own_sizes = Vec::new();
    for _ in 0..3 {
        plain.send_text(&format!("!all {long}"));
        let f = own.read_frame();
        assert!(f.header.rsv1);
        own_sizes.push(f.payload.len());
        assert_eq!(inflate_with(&mut d, &f.payload).unwrap(), long.as_bytes());
        let f = shared.read_frame();
        assert!(f.header.rsv1 && f.payload.len() > 1000, "{:?}", f.header);
        assert_eq!(inflate(&f.payload), long.as_bytes());
        assert_eq!(plain.read_text(), long);
    }
    assert!(
        own_sizes[0] > 1000 && own_sizes[1] < 100 && own_sizes[2] < 100,
        "{own_sizes:?}"
    );
}

/// The same for a broadcast: a connection whose copy was refused must not have it in its
/// compression context.
#[test]
fn refused_broadcast_does_not_corrupt_the_compression_context() {
    let config = with_deflate(takeover())
        .max_write_buffer(1024)
        .on_overflow(Overflow::Refuse);
    let server = TestServer::start(config);
    let mut own = join(&server, "permessage-deflate");
    let mut plain = join(&server, "");
    let letters = noise(3000, 9).iter().map(|b| b'a' + b % 26).collect();
    let long = String::from_utf8(letters).unwrap();
    let second = &long[1000..1600];
    // Two broadcasts in one write, so in one turn: the first fills both queues past 1 KiB, so
    // the second is refused for both.
    let mut both = frame(OpCode::Text, true, false, format!("!all {long}").as_bytes());
    both.extend(frame(
        OpCode::Text,
        true,
        false,
        format!("!all {second}").as_bytes(),
    ));
    plain.send_raw(&both);
    assert_eq!(plain.read_text(), long);
    let f = own.read_frame();
    assert!(f.header.rsv1);
    let mut d = Decompress::new(false);
    assert_eq!(inflate_with(&mut d, &f.payload).unwrap(), long.as_bytes());
    // A third broadcast, of what the refused one said: with the refused copy in the
    // compression context it would refer to bytes the client never got.
    plain.send_text(&format!("!all {second}"));
    assert_eq!(plain.read_text(), second);
    let f = own.read_frame();
    assert!(f.header.rsv1);
    match inflate_with(&mut d, &f.payload) {
        Ok(echo) => assert!(echo == second.as_bytes(), "broadcast differs"),
        Err(e) => panic!(
            "the 600-byte broadcast ({} bytes compressed) refers to the refused one, which the \
             client never got: {e}",
            f.payload.len()
        ),
    }
}

#[test]
fn context_takeover_with_9_bit_windows_and_empty_messages() {
    let server = TestServer::start(with_deflate(takeover()));
    let (mut ws, ext) = offer(
        &server,
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
    );
    assert_eq!(
        ext.as_deref(),
        Some("permessage-deflate; server_max_window_bits=9; client_max_window_bits=9")
    );
    let (mut c, mut d) = (compressor(9), Decompress::new(false));
    let messages: Vec<Vec<u8>> = vec![
        Vec::new(),
        Vec::new(),
        text_of(5000).into_bytes(),
        Vec::new(),
        noise(3000, 1),
        text_of(5000).into_bytes(),
        b"x".to_vec(),
        Vec::new(),
    ];
    for (i, msg) in messages.iter().enumerate() {
        ws.send_raw(&compressed(OpCode::Binary, &deflate_with(&mut c, msg)));
        let (opcode, rsv1, echo) = read_message(&mut ws, Some(&mut d));
        assert_eq!((opcode, rsv1), (OpCode::Binary, true), "message #{i}");
        assert!(echo == *msg, "echo #{i} differs");
    }
}
