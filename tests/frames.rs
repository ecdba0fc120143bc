//! Framing rules (RFC 6455 section 5) over real sockets: lengths, masking, reserved bits and
//! opcodes, control frames, fragmentation, UTF-8 and size limits.

mod common;

use std::time::Duration;

use common::{
    client_frame, client_frame_raw, client_header, expect_error, unmasked_frame, TestServer,
};
use wsloop::proto::frame::OpCode;
use wsloop::{Config, ProtocolError};

fn server() -> TestServer {
    TestServer::start(Config::default())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[test]
fn lengths_7_16_and_64_bit_are_echoed() {
    let server = server();
    let mut ws = server.connect();
    let cases: [(usize, &[u8]); 4] = [
        (125, &[0x82, 125]),
        (126, &[0x82, 126, 0x00, 0x7E]),
        (65535, &[0x82, 126, 0xFF, 0xFF]),
        (65536, &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
    ];
    for (len, header) in cases {
        let payload = pattern(len);
        ws.send_frame(OpCode::Binary, true, &payload);
        let echo = ws.read_frame();
        assert_eq!(echo.raw_header, header, "header of the {len}-byte echo");
        assert!(echo.payload == payload, "payload of the {len}-byte echo");
    }
}

#[test]
fn unmasked_client_frame_is_1002() {
    let frame = unmasked_frame(OpCode::Text, b"naked");
    expect_error(&server(), &frame, ProtocolError::BadMasking);
}

#[test]
fn reserved_bits_without_extension_are_1002() {
    let server = server();
    for rsv in [0x40, 0x20, 0x10] {
        let frame = client_frame_raw(0x80 | rsv | 0x1, b"rsv");
        expect_error(&server, &frame, ProtocolError::ReservedBits);
    }
}

#[test]
fn reserved_opcodes_are_1002() {
    let server = server();
    for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let frame = client_frame_raw(0x80 | opcode, b"");
        expect_error(&server, &frame, ProtocolError::ReservedOpcode);
    }
}

#[test]
fn ping_with_126_byte_payload_is_1002() {
    let frame = client_frame(OpCode::Ping, true, &[b'p'; 126]);
    expect_error(&server(), &frame, ProtocolError::BadControlFrame);
}

#[test]
fn fragmented_ping_is_1002() {
    let frame = client_frame(OpCode::Ping, false, b"half a ping");
    expect_error(&server(), &frame, ProtocolError::BadControlFrame);
}

#[test]
fn continuation_with_nothing_to_continue_is_1002() {
    let frame = client_frame(OpCode::Continuation, true, b"orphan");
    expect_error(&server(), &frame, ProtocolError::UnexpectedContinuation);
}

#[test]
fn new_data_frame_inside_fragmented_message_is_1002() {
    let server = server();
    for opcode in [OpCode::Text, OpCode::Binary] {
        let mut bytes = client_frame(OpCode::Text, false, b"first half");
        bytes.extend(client_frame(opcode, true, b"interloper"));
        expect_error(&server, &bytes, ProtocolError::ExpectedContinuation);
    }
}

#[test]
fn control_frames_inside_fragmented_message_are_answered_and_message_echoed_whole() {
    let server = server();
    let mut ws = server.connect();
    let mut bytes = client_frame(OpCode::Text, false, b"Hel");
    bytes.extend(client_frame(OpCode::Ping, true, b"p!"));
    bytes.extend(client_frame(OpCode::Continuation, false, b"lo, "));
    bytes.extend(client_frame(OpCode::Pong, true, b"unsolicited"));
    bytes.extend(client_frame(OpCode::Continuation, true, b"world"));
    ws.send_raw(&bytes);
    let pong = ws.read_frame();
    assert_eq!(pong.raw_header, [0x8A, 0x02]);
    assert_eq!(pong.payload, b"p!");
    let echo = ws.read_frame();
    assert_eq!(echo.raw_header, [0x81, 12]);
    assert_eq!(echo.payload, b"Hello, world");
}

#[test]
fn length_with_top_bit_set_is_1002() {
    let mut frame = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    frame.extend([1, 2, 3, 4]); // masking key
    expect_error(&server(), &frame, ProtocolError::LengthOverflow);
}

#[test]
fn text_with_invalid_utf8_is_1007() {
    let server = server();
    let bad: [&[u8]; 4] = [
        b"\xFF",
        b"abc\xC0\xAF",
        b"\xED\xA0\x80",
        b"truncated \xE2\x82",
    ];
    for text in bad {
        let frame = client_frame(OpCode::Text, true, text);
        expect_error(&server, &frame, ProtocolError::InvalidUtf8);
    }
}

#[test]
fn invalid_utf8_split_across_fragments_is_1007() {
    let server = server();
    // "κ" is CE BA: a valid start, then a byte that cannot continue it.
    let mut bytes = client_frame(OpCode::Text, false, b"ok \xCE");
    bytes.extend(client_frame(OpCode::Continuation, true, b"\xFF"));
    expect_error(&server, &bytes, ProtocolError::InvalidUtf8);
    // The same split with a valid continuation is one message.
    let mut ws = server.connect();
    ws.send_frame(OpCode::Text, false, b"ok \xCE");
    ws.send_frame(OpCode::Continuation, true, b"\xBA");
    assert_eq!(ws.read_text(), "ok κ");
}

#[test]
fn invalid_utf8_fails_fast_before_the_frame_completes() {
    // A 100 000-byte text frame of which only the first 20 bytes are ever sent.
    let mut payload = b"fine so far \xFF".to_vec();
    payload.resize(100_000, b'a');
    let frame = client_frame(OpCode::Text, true, &payload);
    expect_error(&server(), &frame[..14 + 20], ProtocolError::InvalidUtf8);
}

#[test]
fn message_over_max_message_size_is_1009_from_the_header() {
    let server = TestServer::start(Config::default().max_message_size(1000));
    // The header of a 1 GiB frame, and not one byte of its payload.
    let header = client_header(OpCode::Binary, true, 1 << 30);
    expect_error(&server, &header, ProtocolError::MessageTooBig);
    // Just over the limit, header only.
    let header = client_header(OpCode::Text, true, 1001);
    expect_error(&server, &header, ProtocolError::MessageTooBig);
    // At the limit: echoed.
    let mut ws = server.connect();
    ws.send_frame(OpCode::Binary, true, &[9; 1000]);
    assert_eq!(ws.read_frame().payload, [9; 1000]);
}

#[test]
fn fragmented_message_over_max_message_size_is_1009() {
    let server = TestServer::start(Config::default().max_message_size(1000));
    let mut bytes = client_frame(OpCode::Binary, false, &[1; 600]);
    bytes.extend(client_frame(OpCode::Continuation, false, &[2; 300]));
    bytes.extend(client_header(OpCode::Continuation, true, 101));
    expect_error(&server, &bytes, ProtocolError::MessageTooBig);
}

/// 65,536 fragments of 64 B: over the default `max_fragments` (16,384), so raised here.
#[test]
fn many_tiny_fragments_are_echoed_whole() {
    let server = TestServer::start(Config::default().max_fragments(1 << 16));
    let mut ws = server.connect();
    let message = pattern(4 << 20);
    let mut bytes = Vec::with_capacity(message.len() / 64 * 70);
    for (i, piece) in message.chunks(64).enumerate() {
        let opcode = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        bytes.extend(client_frame(opcode, (i + 1) * 64 == message.len(), piece));
    }
    ws.send_raw(&bytes);
    let echo = ws.read_frame();
    assert_eq!(
        (echo.header.opcode, echo.header.fin),
        (OpCode::Binary, true)
    );
    assert_eq!(echo.payload.len(), message.len());
    assert!(echo.payload == message, "echoed payload differs");
    ws.assert_echo("and the connection goes on");
}

#[test]
fn frame_split_across_many_writes_is_echoed() {
    let server = server();
    let mut ws = server.connect();
    let text = "one byte per write: κόσμε ✓";
    let frame = client_frame(OpCode::Text, true, text.as_bytes());
    ws.send_trickle(&frame, 1, Duration::from_millis(1));
    assert_eq!(ws.read_text(), text);

    let payload = pattern(100_003);
    let frame = client_frame(OpCode::Binary, true, &payload);
    ws.send_trickle(&frame, 4096, Duration::from_micros(200));
    assert!(ws.read_frame().payload == payload, "large echo differs");
}
