//! The chat server (`wsloop chat`, `src/bin/wsloop/chat/`), tested in-process: this file includes its
//! handler (`src/bin/wsloop/chat/server.rs`) and runs it on a `wsloop::Server` on 127.0.0.1:0.
//!
//! The JSON protocol is driven by several real WebSocket clients (`wsloop::client::Client`) at
//! once; the page by headless Chromium (`tests/interop/node/chat_browser.js`, playwright-core),
//! on a desktop and a phone viewport, with axe-core: that test is `#[ignore]`d for a plain `cargo
//! test` and run by `tests/run.sh` with `--include-ignored` (it needs `WSLOOP_CHROMIUM` and
//! `WSLOOP_NODE_CLIENT_DIR`, and fails without them, never skips).
//!
//! A client "did not get" a message when the next message it gets is a later one that was sent
//! to it on purpose (a private message as a sentinel): the server is one thread and handles each
//! connection's messages in order, so nothing is left to timing.

#[allow(dead_code)] // the tests use part of the example's API
#[path = "../src/bin/wsloop/chat/server.rs"]
mod chat;

mod common;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ChildStdin;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::chat_peer::{self, sentinel, Peer, TIMEOUT};
use common::node::{artifact, node_script, wait_or_kill};
use serde_json::{json, Value};
use wsloop::{CloseCode, ClusterHandle, Message};
/// The longest the browser script may run; it has its own 150 s deadline.
const BROWSER_DEADLINE: Duration = Duration::from_secs(200);

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A chat server on its own thread. Dropping it asks it to shut down (the tests' clients are
/// dropped first, being declared after it, so nothing waits for their close handshakes).
struct Running {
    addr: SocketAddr,
    handle: ClusterHandle,
    thread: Option<JoinHandle<Result<(), wsloop::Error>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.handle.shutdown();
    }
}

fn start_with(addr: &str, origins: &[&str]) -> Running {
    start_args(chat::Args {
        addr: addr.into(),
        origins: origins.iter().map(|o| o.to_string()).collect(),
        threads: 1,
        ..chat::Args::default()
    })
}

fn start_args(args: chat::Args) -> Running {
    let (server, _link) = chat::bind(&args).expect("bind the chat server");
    let addr = server.local_addr();
    let handle = server.handle();
    let thread = thread::spawn(move || server.run());
    Running {
        addr,
        handle,
        thread: Some(thread),
    }
}

fn start() -> Running {
    start_with("127.0.0.1:0", &[])
}

impl Running {
    /// Shuts the server down gracefully and waits for it (within its close timeout).
    fn stop(mut self) {
        self.handle.shutdown().expect("shut down");
        let thread = self.thread.take().expect("running");
        thread
            .join()
            .expect("the server thread")
            .expect("the server ran");
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

// The chat client, `Peer`, and `sentinel` are in `tests/common/chat_peer.rs`.

// ---------------------------------------------------------------------------------------------
// Plain HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP response: status, headers (lowercase names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (the request line and headers, without the blank line) and reads the whole
/// response (the server closes after it).
fn http(addr: SocketAddr, head: &str) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "{head}\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.starts_with(b"HTTP/1.1 101") && bytes.windows(4).any(|w| w == b"\r\n\r\n")
                {
                    break; // an accepted upgrade stays open
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8(bytes[..end].to_vec()).expect("a UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status: status.parse().unwrap(),
        headers,
        body: bytes[end..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Response {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}"))
}

/// An upgrade request to `path`, offering `protocol`, with `origin`.
fn upgrade(addr: SocketAddr, path: &str, protocol: Option<&str>, origin: Option<&str>) -> u16 {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
    );
    if let Some(p) = protocol {
        head += &format!("\r\nSec-WebSocket-Protocol: {p}");
    }
    if let Some(o) = origin {
        head += &format!("\r\nOrigin: {o}");
    }
    http(addr, &head).status
}

// ---------------------------------------------------------------------------------------------
// The protocol
// ---------------------------------------------------------------------------------------------

#[test]
fn join_welcomes_with_the_online_list_and_the_lobby() {
    let server = start();
    let (mut alice, welcome) = Peer::join(server.addr, "alice");
    assert_eq!(welcome["users"], json!(["alice"]));
    assert_eq!(welcome["max_text"], chat::MAX_TEXT_CHARS);
    assert_eq!(
        (chat_peer::PROTOCOL, chat_peer::WS_PATH),
        (chat::PROTOCOL, chat::WS_PATH)
    );

    let mut bob = Peer::connect(server.addr, "bob");
    bob.send(json!({"type": "join", "nick": "Bob"}));
    let welcome = bob.expect("welcome");
    assert_eq!(welcome["nick"], "Bob", "the nickname keeps its case");
    assert_eq!(welcome["users"], json!(["alice", "Bob"]));
    let lobby = bob.expect("room_joined");
    assert_eq!(
        lobby,
        json!({"type": "room_joined", "room": "lobby", "members": ["alice", "Bob"]})
    );

    // alice hears of bob: online, then in the lobby.
    assert_eq!(
        alice.expect("user_online"),
        json!({"type": "user_online", "nick": "Bob"})
    );
    assert_eq!(
        alice.expect("member_joined"),
        json!({"type": "member_joined", "room": "lobby", "nick": "Bob"})
    );

    // A third one, joining with rooms of its own (no lobby).
    let mut carol = Peer::connect(server.addr, "carol");
    carol.send(json!({"type": "join", "nick": "carol", "rooms": ["Rust", "games"]}));
    assert_eq!(
        carol.expect("welcome")["users"],
        json!(["alice", "Bob", "carol"])
    );
    assert_eq!(
        carol.expect("room_joined")["room"],
        "rust",
        "room names are lowercased"
    );
    assert_eq!(carol.expect("room_joined")["room"], "games");
    for peer in [&mut alice, &mut bob] {
        assert_eq!(peer.expect("user_online")["nick"], "carol");
    }
    // carol is not in the lobby: alice and bob get nothing more before a sentinel.
    sentinel(&mut carol, &mut alice, "not in the lobby");
    sentinel(&mut carol, &mut bob, "not in the lobby");
}

#[test]
fn nicknames_are_validated_and_unique_ignoring_case() {
    let server = start();
    let (_alice, _) = Peer::join(server.addr, "alice");
    let (_emile, welcome) = join_as(server.addr, "E\u{301}mile"); // NFD
    assert_eq!(welcome["nick"], "\u{c9}mile", "normalised to NFC");
    let mut peer = Peer::connect(server.addr, "newcomer");
    let cases: [(Value, &str, &str); 16] = [
        (json!(""), "nick_invalid", "empty"),
        (
            json!("a".repeat(25)),
            "nick_invalid",
            "at most 24 characters, got 25",
        ),
        (
            json!("é".repeat(25)),
            "nick_invalid",
            "at most 24 characters, got 25",
        ),
        (json!("two words"), "nick_invalid", "not U+0020 ' '"),
        (json!("<b>x</b>"), "nick_invalid", "not '<'"),
        (json!("bell\u{7}"), "nick_invalid", "not U+0007"),
        (json!("zero\u{200b}width"), "nick_invalid", "not U+200B"),
        (json!("joi\u{200d}ner"), "nick_invalid", "not U+200D"),
        (json!("rtl\u{202e}"), "nick_invalid", "not U+202E"),
        (
            json!("\u{1d41a}lice"),
            "nick_invalid",
            "styled letter or digit (U+1D41A",
        ),
        (
            json!("\u{ff41}lice"),
            "nick_invalid",
            "styled letter or digit (U+FF41",
        ),
        (
            json!("\u{430}lice"),
            "nick_invalid",
            "mixes Cyrillic and Latin letters",
        ),
        (json!("ALICE"), "nick_taken", "ALICE is taken"),
        (json!("\u{c9}MILE"), "nick_taken", "is taken"),
        (json!("\u{e9}mile"), "nick_taken", "is taken"),
        (json!(42), "bad_message", ""),
    ];
    for (nick, code, says) in cases {
        peer.send(json!({"type": "join", "nick": nick}));
        let message = peer.expect_error(code);
        assert!(message.contains(says), "{nick}: {message:?} lacks {says:?}");
        assert!(!message.ends_with("please"), "{message}");
    }
    // Still open and not joined.
    peer.send(json!({"type": "say", "room": "lobby", "text": "hi"}));
    peer.expect_error("not_joined");
    // Letters of any script, 24 characters at most (not bytes).
    let longest = "Ž".repeat(24);
    let names = [
        "zoë",
        "Дмитрий",
        "Αλέξανδρος",
        "山田太郎",
        "สำราญ",
        "محمد",
        &longest,
    ];
    let peers: Vec<_> = (names.iter())
        .map(|&nick| {
            let (peer, welcome) = join_as(server.addr, nick);
            assert_eq!(welcome["nick"], nick);
            peer
        })
        .collect();
    // A private message reaches a nickname in any case and form.
    let (mut zed, _) = Peer::join(server.addr, "zed");
    zed.send(json!({"type": "private", "to": "e\u{301}MILE", "text": "salut"}));
    assert_eq!(zed.expect("private")["to"], "\u{c9}mile");
    drop(peers);
    let nick = "Zed_the-1st.user_2345678";
    assert_eq!(nick.len(), 24);
    peer.send(json!({"type": "join", "nick": nick}));
    assert_eq!(peer.expect("welcome")["nick"], nick);
    peer.expect("room_joined");
    peer.send(json!({"type": "join", "nick": "again"}));
    peer.expect_error("already_joined");
}

/// Connects and joins as `nick` (which the welcome may spell otherwise); returns the welcome.
fn join_as(addr: SocketAddr, nick: &str) -> (Peer, Value) {
    let mut peer = Peer::connect(addr, "newcomer");
    peer.send(json!({"type": "join", "nick": nick}));
    let welcome = peer.expect("welcome");
    peer.expect("room_joined");
    (peer, welcome)
}

#[test]
fn rooms_join_leave_and_messages_reach_only_members() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let (mut bob, _) = Peer::join(server.addr, "bob");
    let (mut carol, _) = Peer::join(server.addr, "carol");
    alice.wait_for("user_online"); // bob
    alice.wait_for("member_joined");
    alice.wait_for("user_online"); // carol
    alice.wait_for("member_joined");
    bob.wait_for("user_online");
    bob.wait_for("member_joined");

    alice.send(json!({"type": "join_room", "room": "Rust"}));
    assert_eq!(
        alice.expect("room_joined"),
        json!({"type": "room_joined", "room": "rust", "members": ["alice"]})
    );
    bob.send(json!({"type": "join_room", "room": "rust"}));
    assert_eq!(
        bob.expect("room_joined")["members"],
        json!(["alice", "bob"])
    );
    assert_eq!(
        alice.expect("member_joined"),
        json!({"type": "member_joined", "room": "rust", "nick": "bob"})
    );
    bob.send(json!({"type": "join_room", "room": "rust"}));
    bob.expect_error("already_in_room");

    // A room message reaches alice and bob (the sender too), not carol.
    alice.send(json!({"type": "say", "room": "rust", "text": "borrowck <3"}));
    for peer in [&mut alice, &mut bob] {
        let msg = peer.expect("message");
        assert_eq!(
            (&msg["room"], &msg["from"], &msg["text"]),
            (&json!("rust"), &json!("alice"), &json!("borrowck <3"))
        );
        assert!(msg["ts"].as_u64().unwrap() > 1_600_000_000_000, "{msg}");
    }
    sentinel(&mut alice, &mut carol, "after the rust message");

    // carol may not speak in a room she is not in.
    carol.send(json!({"type": "say", "room": "rust", "text": "hello?"}));
    carol.expect_error("not_in_room");
    carol.send(json!({"type": "typing", "room": "rust"}));
    carol.expect_error("not_in_room");
    carol.send(json!({"type": "leave_room", "room": "rust"}));
    carol.expect_error("not_in_room");
    carol.send(json!({"type": "join_room", "room": "no spaces"}));
    carol.expect_error("room_invalid");
    carol.send(json!({"type": "join_room", "room": "x".repeat(25)}));
    carol.expect_error("room_invalid");

    // The lobby still reaches all three.
    bob.send(json!({"type": "say", "room": "lobby", "text": "lunch?"}));
    for peer in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(peer.expect("message")["text"], "lunch?");
    }

    // bob leaves rust: alice is told, and rust's messages no longer reach bob.
    bob.send(json!({"type": "leave_room", "room": "RUST"}));
    assert_eq!(
        bob.expect("room_left"),
        json!({"type": "room_left", "room": "rust"})
    );
    assert_eq!(
        alice.expect("member_left"),
        json!({"type": "member_left", "room": "rust", "nick": "bob"})
    );
    alice.send(json!({"type": "say", "room": "rust", "text": "anyone?"}));
    assert_eq!(alice.expect("message")["text"], "anyone?");
    sentinel(&mut alice, &mut bob, "after anyone");
    bob.send(json!({"type": "say", "room": "rust", "text": "back?"}));
    bob.expect_error("not_in_room");

    // At most MAX_ROOMS rooms, joined at once or one by one.
    let rooms: Vec<String> = (0..chat::MAX_ROOMS).map(|i| format!("r{i}")).collect();
    let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let (mut dave, _) = Peer::connect(server.addr, "dave").joined_to(&rooms);
    dave.send(json!({"type": "join_room", "room": "one-too-many"}));
    dave.expect_error("too_many_rooms");
    let mut erin = Peer::connect(server.addr, "erin");
    let rooms: Vec<String> = (0..=chat::MAX_ROOMS).map(|i| format!("e{i}")).collect();
    erin.send(json!({"type": "join", "nick": "erin", "rooms": rooms}));
    erin.expect_error("too_many_rooms");
    erin.send(json!({"type": "join", "nick": "erin"}));
    erin.expect("welcome");
}

#[test]
fn private_messages_reach_one_user() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let (mut bob, _) = Peer::join(server.addr, "bob");
    let (mut carol, _) = Peer::join(server.addr, "carol");
    for _ in 0..2 {
        alice.wait_for("member_joined");
    }
    bob.wait_for("member_joined");

    // To "BOB": any case reaches bob, and the message names him as he chose.
    alice.send(json!({"type": "private", "to": "BOB", "text": "psst"}));
    let got = bob.expect("private");
    assert_eq!(
        (&got["from"], &got["to"], &got["text"]),
        (&json!("alice"), &json!("bob"), &json!("psst"))
    );
    let echo = alice.expect("private");
    assert_eq!(echo, got, "the sender gets the same message");
    // carol got nothing of it.
    sentinel(&mut bob, &mut carol, "only this");

    // To oneself: once.
    carol.send(json!({"type": "private", "to": "carol", "text": "note to self"}));
    assert_eq!(carol.expect("private")["text"], "note to self");
    sentinel(&mut alice, &mut carol, "just once");
    alice.send(json!({"type": "private", "to": "nobody", "text": "hello?"}));
    alice.expect_error("unknown_user");
    alice.send(json!({"type": "private", "to": "bob", "text": "   "}));
    alice.expect_error("empty_text");
}

#[test]
fn typing_reaches_the_room_but_not_the_typist() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let (mut bob, _) = Peer::join(server.addr, "bob");
    let (mut carol, _) = Peer::connect(server.addr, "carol").joined_to(&[]);
    alice.wait_for("member_joined");
    alice.wait_for("user_online"); // carol
    bob.wait_for("user_online"); // carol

    alice.send(json!({"type": "typing", "room": "lobby"}));
    assert_eq!(
        bob.expect("typing"),
        json!({"type": "typing", "room": "lobby", "nick": "alice", "active": true})
    );
    alice.send(json!({"type": "typing", "room": "lobby", "active": false}));
    assert_eq!(bob.expect("typing")["active"], false);
    // Not to alice herself, not to carol (not in the lobby).
    sentinel(&mut bob, &mut alice, "after typing");
    sentinel(&mut bob, &mut carol, "after typing");
}

impl Peer {
    /// Joins with exactly `rooms`.
    fn joined_to(mut self, rooms: &[&str]) -> (Peer, Value) {
        self.send(json!({"type": "join", "nick": self.name, "rooms": rooms}));
        let welcome = self.expect("welcome");
        for room in rooms {
            assert_eq!(self.expect("room_joined")["room"], *room);
        }
        (self, welcome)
    }
}

#[test]
fn leaving_is_announced_and_frees_the_nickname() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let (mut bob, _) = Peer::join(server.addr, "bob");
    alice.wait_for("member_joined"); // bob in the lobby
    bob.send(json!({"type": "join_room", "room": "rust"}));
    bob.expect("room_joined");
    alice.send(json!({"type": "join_room", "room": "rust"}));
    alice.expect("room_joined");

    // A clean close: alice hears bob leave both rooms, then go offline.
    bob.quit();
    let mut left = vec![
        alice.expect("member_left")["room"].clone(),
        alice.expect("member_left")["room"].clone(),
    ];
    left.sort_by_key(|r| r.to_string());
    assert_eq!(left, [json!("lobby"), json!("rust")]);
    assert_eq!(
        alice.expect("user_offline"),
        json!({"type": "user_offline", "nick": "bob"})
    );

    // The nickname is free again; the lists no longer have the old bob.
    let (mut bob, welcome) = Peer::join(server.addr, "bob");
    assert_eq!(welcome["users"], json!(["alice", "bob"]));
    alice.wait_for("member_joined");
    bob.send(json!({"type": "join_room", "room": "rust"}));
    assert_eq!(
        bob.expect("room_joined")["members"],
        json!(["alice", "bob"])
    );

    // A connection dropped without a close frame is announced too.
    let (carol, _) = Peer::join(server.addr, "carol");
    drop(carol);
    assert_eq!(alice.wait_for("user_offline")["nick"], "carol");
}

#[test]
fn malformed_messages_get_an_error_and_the_connection_stays_open() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let cases = [
        ("not json", "bad_json"),
        ("{\"type\":\"say\"", "bad_json"),
        (
            "{\"type\":\"say\",\"room\":\"lobby\",\"text\":\"x\"} trailing",
            "bad_json",
        ),
        ("[1, 2]", "bad_message"),
        ("\"say\"", "bad_message"),
        ("{}", "bad_message"),
        ("{\"type\":\"shout\",\"text\":\"hi\"}", "bad_message"),
        ("{\"type\":\"say\",\"room\":\"lobby\"}", "bad_message"),
        (
            "{\"type\":\"say\",\"room\":\"lobby\",\"text\":7}",
            "bad_message",
        ),
        (
            "{\"type\":\"typing\",\"room\":\"lobby\",\"active\":\"yes\"}",
            "bad_message",
        ),
        (
            "{\"type\":\"say\",\"room\":\"lobby\",\"text\":\"\"}",
            "empty_text",
        ),
    ];
    for (text, code) in cases {
        alice.send_raw(text);
        let msg = alice.expect("error");
        assert_eq!(msg["code"], code, "for {text}: {msg}");
    }
    alice.client.send(Message::Binary(b"{}")).unwrap();
    alice.expect_error("bad_message");
    // Unknown fields are ignored; the connection still works.
    alice.send(json!({"type": "say", "room": "lobby", "text": "still here", "colour": "red"}));
    assert_eq!(alice.expect("message")["text"], "still here");
}

#[test]
fn oversized_text_gets_an_error_and_an_oversized_message_closes_1009() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let (mut bob, _) = Peer::join(server.addr, "bob");
    alice.wait_for("member_joined");

    // 2,000 characters (of 4 UTF-8 bytes each: 8,000 bytes) pass; one more does not.
    let most = "🦀".repeat(chat::MAX_TEXT_CHARS);
    alice.send(json!({"type": "say", "room": "lobby", "text": most}));
    assert_eq!(bob.expect("message")["text"], most.as_str());
    alice.expect("message");
    let over = "x".repeat(chat::MAX_TEXT_CHARS + 1);
    alice.send(json!({"type": "say", "room": "lobby", "text": over, "ref": "r1"}));
    let error = alice.expect("error");
    assert_eq!(
        (&error["code"], &error["ref"]),
        (&json!("too_long"), &json!("r1"))
    );
    assert!(
        error["message"].as_str().unwrap().contains("2001"),
        "{error}"
    );
    alice.send(json!({"type": "private", "to": "bob", "text": over}));
    alice.expect_error("too_long");

    // The longest text in its longest JSON form: every character escaped (`\u0001`, 6 bytes;
    // a surrogate pair, 12) is under the message limit, so it gets an answer, not a close.
    let controls = "\u{1}".repeat(chat::MAX_TEXT_CHARS);
    let say = json!({"type": "say", "room": "lobby", "text": controls, "ref": "c"}).to_string();
    assert!(
        say.len() > 12_000,
        "serde_json escapes control characters: {}",
        say.len()
    );
    alice.send_raw(&say);
    let why = alice.expect_error("bad_text");
    assert!(why.contains("control character"), "{why}");
    let escaped = "\\ud83e\\udd80".repeat(chat::MAX_TEXT_CHARS);
    alice.send_raw(&format!(
        r#"{{"type":"say","room":"lobby","text":"{escaped}"}}"#
    ));
    assert_eq!(alice.expect("message")["text"], most.as_str());
    assert_eq!(bob.expect("message")["text"], most.as_str());
    // New lines and tabs are text.
    alice.send(json!({"type": "say", "room": "lobby", "text": "two\nlines\tand a tab"}));
    assert_eq!(bob.expect("message")["text"], "two\nlines\tand a tab");
    alice.expect("message");
    sentinel(&mut alice, &mut bob, "nothing long came through");

    // Over max_message_size: wsloop closes with 1009, and bob hears alice leave.
    let huge = json!({"type": "say", "room": "lobby", "text": "y".repeat(chat::MAX_MESSAGE_SIZE)});
    alice.send(huge);
    let (code, _, texts) = alice.until_close();
    assert_eq!((code, texts), (Some(1009), 0));
    drop(alice); // after a protocol error wsloop waits for the client to close TCP
    assert_eq!(bob.wait_for("user_offline")["nick"], "alice");
}

/// Frames `msgs` as one write of client frames.
fn frames(msgs: impl IntoIterator<Item = Value>) -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = wsloop::proto::message::Encoder::new(wsloop::proto::Role::Client);
    for msg in msgs {
        let text = msg.to_string();
        encoder.frame(
            &mut out,
            wsloop::proto::frame::OpCode::Text,
            true,
            text.as_bytes(),
        );
    }
    out
}

#[test]
fn over_the_rate_limit_messages_are_refused_and_a_flood_is_closed_with_1008() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let (mut flooder, _) = Peer::join(server.addr, "flooder");
    alice.wait_for("member_joined");

    // join was one message of the burst; 59 more (one write) go past it: the first 19 are
    // delivered, the next ones refused with `rate_limited` (their `ref` with them), and after
    // RATE_BURST refusals in a row the connection is closed.
    let burst = (0..59).map(|i| json!({"type": "say", "room": "lobby", "text": format!("spam {i}"), "ref": format!("m{i}")}));
    flooder
        .client
        .stream_mut()
        .write_all(&frames(burst))
        .unwrap();
    let (mut echoes, mut refused) = (0, Vec::new());
    let (code, reason) = loop {
        match flooder.client.recv().expect("a message or the close") {
            wsloop::client::Received::Text(text) => {
                let msg: Value = serde_json::from_str(&text).unwrap();
                match msg["type"].as_str() {
                    Some("message") => {
                        assert!(refused.is_empty(), "a message after a refusal: {msg}");
                        assert_eq!(msg["ref"], format!("m{echoes}"));
                        echoes += 1;
                    }
                    Some("error") => {
                        assert_eq!(msg["code"], "rate_limited", "{msg}");
                        refused.push(msg["ref"].as_str().unwrap().to_owned());
                    }
                    Some("history") => {}
                    _ => panic!("unexpected {msg}"),
                }
            }
            wsloop::client::Received::Close(code, reason) => break (code.map(|c| c.0), reason),
            _ => {}
        }
    };
    // Answer the close, as a browser does: the close handshake completes and the server lets go.
    flooder
        .client
        .close(CloseCode::POLICY, "")
        .expect("answer the close");
    assert_eq!(code, Some(1008), "{reason}");
    assert!(reason.contains("rate limit"), "{reason}");
    let burst = chat::RATE_BURST as usize - 1;
    assert!(
        (burst..burst + 3).contains(&echoes),
        "{echoes} messages went through before the refusals"
    );
    assert_eq!(refused.len(), chat::RATE_BURST as usize, "{refused:?}");
    assert_eq!(refused[0], format!("m{echoes}"));
    // alice saw those messages, then the flooder leave.
    let mut seen = 0;
    loop {
        let msg = alice.next();
        match msg["type"].as_str() {
            Some("message") => seen += 1,
            Some("member_left") => break,
            _ => panic!("unexpected {msg}"),
        }
    }
    assert_eq!(seen, echoes);
    assert_eq!(alice.expect("user_offline")["nick"], "flooder");

    // Typing notices do not count: 30 of them (past their own budget: the excess is ignored
    // without an answer) and 19 messages, all delivered; the 20th is refused, not closed.
    let (mut calm, _) = Peer::join(server.addr, "calm");
    let typing = (0..30).map(|i| json!({"type": "typing", "room": "lobby", "active": i % 2 == 0}));
    let says = (1..chat::RATE_BURST)
        .map(|i| json!({"type": "say", "room": "lobby", "text": format!("calm {i}")}));
    calm.client
        .stream_mut()
        .write_all(&frames(typing.chain(says)))
        .unwrap();
    for i in 1..chat::RATE_BURST {
        assert_eq!(calm.expect("message")["text"], format!("calm {i}"));
    }
    calm.send(json!({"type": "say", "room": "lobby", "text": "one too many", "ref": "x"}));
    let error = calm.expect("error");
    assert_eq!(
        (&error["code"], &error["ref"]),
        (&json!("rate_limited"), &json!("x"))
    );
    // Of the typing notices, alice got the first TYPING_BURST (and a token or so refilled).
    let mut typing = 0;
    for _ in 1..chat::RATE_BURST {
        loop {
            let msg = alice.next();
            if msg["type"] == "message" {
                break;
            }
            typing += usize::from(msg["type"] == "typing");
        }
    }
    let budget = chat::TYPING_BURST as usize;
    assert!(
        (budget..budget + 2).contains(&typing),
        "{typing} typing notices"
    );

    // The bucket refills: 0.4 s is 1.6 tokens.
    thread::sleep(Duration::from_millis(400));
    calm.send(json!({"type": "say", "room": "lobby", "text": "still here"}));
    assert_eq!(calm.expect("message")["text"], "still here");
}

#[test]
fn a_room_replays_its_last_messages_to_whoever_enters_it() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let lobby = alice.history();
    assert_eq!(
        lobby,
        json!({"type": "history", "room": "lobby", "messages": []})
    );
    // More than the history keeps, from several users (each within the rate limit), in order.
    let total = chat::history::HISTORY_LEN + 3;
    let names = ["h0", "h1", "h2", "h3", "h4", "h5"];
    let mut writers: Vec<Peer> = (names.iter())
        .map(|name| Peer::connect(server.addr, name).joined_to(&["lobby"]).0)
        .collect();
    for i in 0..total {
        let writer = &mut writers[i / 18];
        let text = format!("line {i}");
        writer.send(json!({"type": "say", "room": "lobby", "text": text}));
        writer.wait_until("its message", TIMEOUT, |m| m["text"] == text.as_str());
    }
    let (mut bob, _) = Peer::join(server.addr, "bob");
    let history = bob.history();
    let texts: Vec<&str> = (history["messages"].as_array().unwrap().iter())
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), chat::history::HISTORY_LEN);
    assert_eq!(texts[0], "line 3");
    assert_eq!(texts.last(), Some(&format!("line {}", total - 1).as_str()));
    let last = &history["messages"][chat::history::HISTORY_LEN - 1];
    assert_eq!(
        (&last["type"], &last["room"], &last["from"]),
        (&json!("message"), &json!("lobby"), &json!("h5"))
    );
    // Private messages are not in any history; another room has its own.
    bob.send(json!({"type": "private", "to": "alice", "text": "not kept"}));
    bob.expect("private");
    bob.send(json!({"type": "join_room", "room": "quiet"}));
    bob.expect("room_joined");
    assert_eq!(bob.history()["messages"], json!([]));
    let (mut carol, _) = Peer::join(server.addr, "carol");
    let again = carol.history();
    assert_eq!(again["messages"], history["messages"]);
}

#[test]
fn a_page_takes_its_nickname_back_with_its_token_and_only_then() {
    let server = start();
    let (mut alice, welcome) = Peer::join(server.addr, "alice");
    let token = welcome["token"].as_str().expect("a token").to_owned();
    assert_eq!(token.len(), 32);
    let (mut bob, _) = Peer::join(server.addr, "bob");
    alice.wait_for("member_joined");

    // Someone else cannot have the nickname, with a wrong token or none.
    let mut other = Peer::connect(server.addr, "other");
    other.send(
        json!({"type": "join", "nick": "Alice", "token": "0123456789abcdef0123456789abcdef"}),
    );
    other.expect_error("nick_taken");
    other.send(json!({"type": "join", "nick": "alice"}));
    other.expect_error("nick_taken");

    // The same page on a new connection (its old one not seen to end yet) gets it back; the
    // old connection is closed with 4001, and bob sees alice leave and come back.
    let mut again = Peer::connect(server.addr, "alice");
    again.send(json!({"type": "join", "nick": "alice", "rooms": ["lobby"], "token": token}));
    let welcome = again.expect("welcome");
    assert_ne!(welcome["token"], token.as_str(), "a new token each time");
    assert_eq!(welcome["users"], json!(["alice", "bob"]));
    again.expect("room_joined");
    let (code, reason, texts) = alice.until_close();
    assert_eq!((code, texts), (Some(chat::REPLACED.0), 0), "{reason}");
    assert_eq!(bob.expect("member_left")["nick"], "alice");
    assert_eq!(bob.expect("user_offline")["nick"], "alice");
    assert_eq!(bob.expect("user_online")["nick"], "alice");
    assert_eq!(bob.expect("member_joined")["nick"], "alice");
    // The old connection's end changes nothing: alice is still online and in the lobby.
    drop(alice);
    bob.send(json!({"type": "say", "room": "lobby", "text": "still there?"}));
    assert_eq!(again.expect("message")["text"], "still there?");
    bob.expect("message");
    sentinel(&mut again, &mut bob, "yes");
    // The old token is spent.
    let mut late = Peer::connect(server.addr, "late");
    late.send(json!({"type": "join", "nick": "alice", "token": token}));
    late.expect_error("nick_taken");
}

#[test]
fn rooms_are_listed_and_typing_reaches_a_private_conversation() {
    let server = start();
    let (mut alice, _) = Peer::join(server.addr, "alice");
    let (mut bob, _) = Peer::connect(server.addr, "bob").joined_to(&["rust", "lobby"]);
    alice.wait_for("member_joined");
    alice.send(json!({"type": "list_rooms"}));
    assert_eq!(
        alice.expect("rooms"),
        json!({"type": "rooms", "rooms": [{"room": "lobby", "members": 2}, {"room": "rust", "members": 1}]})
    );
    // Typing in a private conversation reaches that user only, without a room.
    bob.send(json!({"type": "typing", "to": "ALICE"}));
    assert_eq!(
        alice.expect("typing"),
        json!({"type": "typing", "nick": "bob", "active": true})
    );
    bob.send(json!({"type": "typing", "to": "nobody"}));
    bob.expect_error("unknown_user");
    bob.send(json!({"type": "typing"}));
    bob.expect_error("bad_message");
    sentinel(&mut alice, &mut bob, "nothing else");
}

// ---------------------------------------------------------------------------------------------
// HTTP, upgrades, origins, the command line
// ---------------------------------------------------------------------------------------------

#[test]
fn the_page_and_its_assets_are_served() {
    let server = start();
    let page = get(server.addr, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains("<script src=\"/app.js\""), "{html}");
    assert!(html.contains("href=\"/style.css\""), "{html}");
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("script-src 'self'")),
        "{:?}",
        page.headers
    );
    let assets = [
        (
            "/style.css",
            "text/css; charset=utf-8",
            include_str!("../src/bin/wsloop/chat/style.css"),
        ),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            include_str!("../src/bin/wsloop/chat/app.js"),
        ),
        (
            "/?from=link",
            "text/html; charset=utf-8",
            include_str!("../src/bin/wsloop/chat/index.html"),
        ),
        (
            "/favicon.svg",
            "image/svg+xml",
            include_str!("../src/bin/wsloop/chat/favicon.svg"),
        ),
        (
            "/favicon.ico",
            "image/svg+xml",
            include_str!("../src/bin/wsloop/chat/favicon.svg"),
        ),
    ];
    for (path, content_type, body) in assets {
        let resp = get(server.addr, path);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("content-type"), Some(content_type), "{path}");
        assert_eq!(resp.body, body.as_bytes(), "{path}");
    }
    // No CDN, no inline script or markup sink in the page's code.
    let js = include_str!("../src/bin/wsloop/chat/app.js");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    assert_eq!(get(server.addr, "/missing.js").status, 404);
    assert_eq!(get(server.addr, "/ws").status, 426);
    server.stop();
}

#[test]
fn upgrades_need_the_path_the_subprotocol_and_the_page_origin() {
    let server = start();
    let addr = server.addr;
    let own = format!("http://{addr}");
    assert_eq!(
        upgrade(addr, "/ws", Some("chat.v1"), None),
        101,
        "no Origin: not a browser"
    );
    assert_eq!(upgrade(addr, "/ws", Some("chat.v1"), Some(&own)), 101);
    assert_eq!(
        upgrade(addr, "/ws?x=1", Some("json, chat.v1"), Some(&own)),
        101
    );
    assert_eq!(upgrade(addr, "/", Some("chat.v1"), None), 404);
    assert_eq!(upgrade(addr, "/chat", Some("chat.v1"), None), 404);
    assert_eq!(upgrade(addr, "/ws", None, None), 400);
    assert_eq!(upgrade(addr, "/ws", Some("chat.v2"), None), 400);
    assert_eq!(
        upgrade(addr, "/ws", Some("chat.v1"), Some("http://evil.example")),
        403
    );
    assert_eq!(
        upgrade(
            addr,
            "/ws",
            Some("chat.v1"),
            Some(&format!("http://{addr}.evil.example"))
        ),
        403
    );
    let refused = http(
        addr,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
        ),
    );
    let body = String::from_utf8(refused.body).unwrap();
    assert!(
        body.contains("chat.v1"),
        "the refusal names the subprotocol: {body}"
    );
    server.stop();

    // With --origin, wsloop's allow-list decides: the listed origin passes, the page's own no
    // longer does, and clients without Origin still pass.
    let server = start_with("127.0.0.1:0", &["https://chat.example"]);
    let addr = server.addr;
    assert_eq!(
        upgrade(addr, "/ws", Some("chat.v1"), Some("https://chat.example")),
        101
    );
    assert_eq!(
        upgrade(
            addr,
            "/ws",
            Some("chat.v1"),
            Some(&format!("http://{addr}"))
        ),
        403
    );
    assert_eq!(upgrade(addr, "/ws", Some("chat.v1"), None), 101);
    server.stop();
}

#[test]
fn two_reactors_share_rooms_presence_and_private_messages() {
    let server = start_args(chat::Args {
        addr: "127.0.0.1:0".into(),
        origins: Vec::new(),
        threads: 2,
        ..chat::Args::default()
    });
    const NAMES: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
    let mut peers: Vec<Peer> = NAMES
        .iter()
        .map(|name| Peer::join(server.addr, name).0)
        .collect();
    // The last to join saw everyone online, whichever reactor they are on.
    let last = peers.last_mut().unwrap();
    last.send(json!({"type": "private", "to": "p0", "text": "sync"}));
    last.wait_for("private");
    let (first, rest) = peers.split_first_mut().unwrap();
    assert_eq!(first.wait_for("private")["text"], "sync");
    first.send(json!({"type": "say", "room": "lobby", "text": "hello all"}));
    for peer in rest.iter_mut().chain(std::iter::once(&mut *first)) {
        let msg = peer.wait_for("message");
        assert_eq!(
            (&msg["from"], &msg["text"]),
            (&json!("p0"), &json!("hello all"))
        );
    }
    for peer in rest.iter_mut() {
        peer.send(json!({"type": "private", "to": "P0", "text": peer.name}));
    }
    let mut from: Vec<String> = (0..rest.len())
        .map(|_| {
            first.wait_for("private")["from"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    from.sort();
    assert_eq!(from, NAMES[1..]);
}

#[test]
fn the_command_line() {
    let parse = |args: &[&str]| chat::Args::parse(args.iter().map(|a| a.to_string()));
    let defaults = parse(&[]).unwrap().unwrap();
    assert_eq!(defaults.addr, "127.0.0.1:8080");
    assert_eq!(defaults.threads, 1);
    assert_eq!(parse(&["--threads", "4"]).unwrap().unwrap().threads, 4);
    assert!(parse(&["--threads", "x"])
        .unwrap_err()
        .contains("--threads"));
    assert!(defaults.origins.is_empty());
    let args = parse(&[
        "--addr",
        "0.0.0.0:9000",
        "--origin",
        "https://a.example/",
        "--origin",
        "http://b.example:8080",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(args.addr, "0.0.0.0:9000");
    assert_eq!(args.origins, ["https://a.example", "http://b.example:8080"]);
    assert_eq!(parse(&["--help"]), Ok(None));
    assert!(parse(&["--addr"]).unwrap_err().contains("needs a value"));
    assert!(parse(&["--origin", "a.example"])
        .unwrap_err()
        .contains("origin"));
    assert!(parse(&["--port", "1"]).unwrap_err().contains("--port"));
    let config = chat::config(&args.origins);
    assert_eq!(config.connection.max_message_size, chat::MAX_MESSAGE_SIZE);
    assert_eq!(config.connection.allowed_origins, args.origins);

    // --redis: only in a build with the `redis` feature, which the error names.
    let redis = parse(&["--redis", "redis://127.0.0.1:6379", "--heartbeat", "0.5"]);
    if cfg!(feature = "redis") {
        let args = redis.unwrap().unwrap();
        assert_eq!(args.redis.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(args.heartbeat, Duration::from_millis(500));
        assert_eq!(defaults.heartbeat, Duration::from_secs(5));
        assert!(parse(&["--redis", "redis://h", "--heartbeat", "0"])
            .unwrap_err()
            .contains("--heartbeat"));
        assert!(parse(&["--redis"]).unwrap_err().contains("needs a value"));
    } else {
        let e = redis.unwrap_err();
        assert!(
            e.contains("--features cli,redis -- chat --redis URL"),
            "{e}"
        );
        // bind refuses it too, should an Args say so.
        let args = chat::Args {
            addr: "127.0.0.1:0".into(),
            redis: Some("redis://127.0.0.1:1".into()),
            ..chat::Args::default()
        };
        let e = chat::bind(&args).unwrap_err().to_string();
        assert!(e.contains("the `redis` feature"), "{e}");
    }
    assert!(parse(&["--heartbeat", "1"])
        .unwrap_err()
        .contains("--heartbeat goes with --redis"));
}

// ---------------------------------------------------------------------------------------------
// The page, in Chromium
// ---------------------------------------------------------------------------------------------

/// One Chromium at a time (the browser tests of other files run in other processes).
static BROWSER: Mutex<()> = Mutex::new(());

/// Restarts the server on the same address (the old one's port may take a moment to free).
fn restart(server: Running, stdin: &mut ChildStdin) -> Running {
    let addr = server.addr;
    server.stop();
    let until = Instant::now() + TIMEOUT;
    let server = loop {
        let args = chat::Args {
            addr: addr.to_string(),
            origins: Vec::new(),
            threads: 1,
            ..chat::Args::default()
        };
        match chat::bind(&args) {
            Ok((server, _link)) => {
                let handle = server.handle();
                let thread = thread::spawn(move || server.run());
                break Running {
                    addr,
                    handle,
                    thread: Some(thread),
                };
            }
            Err(e) if Instant::now() < until => {
                eprintln!("rebinding {addr}: {e}");
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    };
    writeln!(stdin, "restarted").expect("tell node");
    server
}

/// The screenshots the browser script takes, under `target/…/chat/`.
const SCREENSHOTS: [&str; 2] = ["chat-1440x900.png", "chat-390x844.png"];

#[test]
#[ignore = "needs Chromium and Node (bash tests/run.sh)"]
fn pages_chat_in_chromium() {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let screenshots = artifact("chat");
    for name in SCREENSHOTS {
        let _ = std::fs::remove_file(screenshots.join(name));
    }

    let mut server = start();
    let started = Instant::now();
    let url = format!("http://{}/", server.addr);
    let args = [
        url.as_ref(),
        "--restart".as_ref(),
        "--screenshots".as_ref(),
        screenshots.as_os_str(),
    ];
    let mut child = node_script("chat_browser.js", &args);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let (lines_tx, lines) = mpsc::channel();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Follow the script's output; restart the server when it asks.
    let deadline = started + BROWSER_DEADLINE;
    let mut output = Vec::new();
    let mut restarts = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                if line == "restart-server" {
                    server = restart(server, &mut stdin);
                    restarts += 1;
                }
                output.push(line);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => break,
        }
    }
    let status = wait_or_kill(&mut child, deadline);
    let took = started.elapsed();
    let output = output.join("\n");
    let stderr = err.join().unwrap_or_default();
    println!(
        "browser test took {:.1} s\n{output}\n{stderr}",
        took.as_secs_f64()
    );
    assert!(
        status.success(),
        "chat_browser.js failed ({status}) after {:.1} s:\n{output}\n{stderr}",
        took.as_secs_f64()
    );
    assert_eq!(restarts, 2, "the script asks for two restarts:\n{output}");
    let checks = [
        "ok both pages join",
        "ok a nickname in any script joins (normalised to NFC); a refused one gets the server's reason",
        "ok each sees the other in the online list",
        "ok typing shows in the other page",
        "ok a message sent in one page appears in the other",
        "ok <img onerror> appears as literal text, no element, no script",
        "ok links are clickable (http and https only, as text, rel=noopener) and nothing else is markup",
        "ok Shift+Enter starts a new line, Enter sends",
        "ok a private message reaches the other page, with the unread count in the tab title",
        "ok keyboard access to people and conversations; typing shows in private conversations",
        "ok other rooms are listed and joined in one step, with their history and a line where it ends",
        "ok the messages over the rate limit make one row of ",
        "ok scrolled up, new messages show a \"new messages ↓\" button that jumps to the bottom",
        "ok follow-up messages show their time on hover and on keyboard focus (arrow keys in the log)",
        "ok control characters get an error, the connection stays; a text over the limit is kept with a warning",
        "ok leaving one's only room with the keyboard shows how to join one, with the focus on it",
        "ok after a reload the page rejoins with its nickname and shows the room's history",
        "ok a reconnect merges the room's history with what the page shows, nothing twice; the flood's refusals make one row",
        "ok messages of another day show their date, today's only the time",
        "ok on a phone the sidebar folds away behind a button; its buttons are 44 px high, its fields 16 px",
        "ok axe-core: no violation (",
        "ok closing one page updates the other's list",
        "ok the page reconnects after a server restart and rejoins with the same nickname",
        "ok a nickname taken during a restart: the page says so and another can be picked, then says it reconnected, focus in the message box",
    ];
    for check in checks {
        assert!(
            output.lines().any(|l| l.starts_with(check)),
            "missing `{check}`:\n{output}"
        );
    }
    let summary = format!("chat browser: {} passed, 0 failed", checks.len());
    assert!(
        output.lines().any(|l| l == summary),
        "expected `{summary}`:\n{output}"
    );
    for name in SCREENSHOTS {
        let file = screenshots.join(name);
        assert!(file.is_file(), "no screenshot at {}", file.display());
    }
    server.stop();
}
