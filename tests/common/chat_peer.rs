//! A client of the chat server (`wsloop chat`, protocol `chat.v1`) for the tests:
//! `tests/chat.rs` (in-process servers) and `tests/chat_redis.rs` (chat processes on Redis).
//!
//! Every read has a timeout (5 s, or the limit of [`Peer::wait_until`]), so no test can hang.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wsloop::client::{Client, Received};
use wsloop::{CloseCode, Message};

/// The subprotocol of the chat.
pub const PROTOCOL: &str = "chat.v1";
/// The WebSocket's path.
pub const WS_PATH: &str = "/ws";
/// How long any read may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A chat client.
pub struct Peer {
    /// The WebSocket client.
    pub client: Client,
    /// The nickname it joins with, also its name in failure messages.
    pub name: &'static str,
    /// The `history` messages received, set aside by [`next`](Self::next) (one follows each
    /// `room_joined`, at once from a lone server, a little later from Redis).
    pub histories: Vec<Value>,
}

impl Peer {
    /// Connects with subprotocol `chat.v1`, not yet joined.
    pub fn connect(addr: SocketAddr, name: &'static str) -> Peer {
        let url = format!("ws://{addr}{WS_PATH}");
        let client = Client::connect_with(&url, &[PROTOCOL]).expect("connect");
        assert_eq!(client.protocol(), Some(PROTOCOL));
        client.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
        Peer {
            client,
            name,
            histories: Vec::new(),
        }
    }

    /// Connects and joins as `name`, checking the welcome and the lobby; returns the welcome.
    pub fn join(addr: SocketAddr, name: &'static str) -> (Peer, Value) {
        let (peer, welcome, _) = Peer::join_lobby(addr, name);
        (peer, welcome)
    }

    /// [`join`](Self::join), returning the lobby's `room_joined` too.
    pub fn join_lobby(addr: SocketAddr, name: &'static str) -> (Peer, Value, Value) {
        let mut peer = Peer::connect(addr, name);
        peer.send(json!({"type": "join", "nick": name}));
        let welcome = peer.expect("welcome");
        assert_eq!(welcome["nick"], name);
        let lobby = peer.expect("room_joined");
        assert_eq!(lobby["room"], "lobby");
        (peer, welcome, lobby)
    }

    /// Sends `msg` as a text message.
    pub fn send(&mut self, msg: Value) {
        self.send_raw(&msg.to_string());
    }

    /// Sends `text` as it is.
    pub fn send_raw(&mut self, text: &str) {
        self.client.send(Message::Text(text)).expect("send");
    }

    /// The next text message but `history`, as JSON (pings are skipped, `history` messages
    /// kept in [`histories`](Self::histories)); panics on a close or a timeout.
    pub fn next(&mut self) -> Value {
        loop {
            match self.client.recv() {
                Ok(Received::Text(text)) => {
                    let msg: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.name));
                    if msg["type"] == "history" {
                        self.histories.push(msg);
                        continue;
                    }
                    return msg;
                }
                Ok(Received::Ping(_) | Received::Pong(_)) => {}
                other => panic!("{}: expected a message, got {other:?}", self.name),
            }
        }
    }

    /// The next message, which must be of type `kind`.
    pub fn expect(&mut self, kind: &str) -> Value {
        let msg = self.next();
        assert_eq!(msg["type"], kind, "{}: unexpected message {msg}", self.name);
        msg
    }

    /// The next message, which must be an `error` with `code`; returns its text.
    pub fn expect_error(&mut self, code: &str) -> String {
        let msg = self.expect("error");
        assert_eq!(msg["code"], code, "{}: {msg}", self.name);
        msg["message"].as_str().expect("a message").to_owned()
    }

    /// Skips messages until one of type `kind`, which it returns.
    pub fn wait_for(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: no {kind} in time",
                self.name
            );
            let msg = self.next();
            if msg["type"] == kind {
                return msg;
            }
        }
    }

    /// The next `history` message (set aside earlier, or the next to come; other messages
    /// on the way are skipped).
    pub fn history(&mut self) -> Value {
        if !self.histories.is_empty() {
            return self.histories.remove(0);
        }
        self.wait("a history", TIMEOUT, true, |_| false)
    }

    /// Reads until the server's close frame, counting text messages; returns the close code.
    pub fn until_close(&mut self) -> (Option<u16>, String, usize) {
        let mut texts = 0;
        loop {
            match self.client.recv() {
                Ok(Received::Text(_)) => texts += 1,
                Ok(Received::Close(code, reason)) => return (code.map(|c| c.0), reason, texts),
                Ok(_) => {}
                Err(e) => panic!("{}: no close frame: {e}", self.name),
            }
        }
    }

    /// Closes cleanly (waits for the server's answer).
    pub fn quit(mut self) {
        self.client.close(CloseCode::NORMAL, "bye").expect("close");
        let (code, _, _) = self.until_close();
        assert_eq!(code, Some(1000));
    }
}

/// Sends `to` a private message from `from` as a sentinel: the next thing `to` gets must be it.
pub fn sentinel(from: &mut Peer, to: &mut Peer, text: &str) {
    from.send(json!({"type": "private", "to": to.name, "text": text}));
    let echo = from.expect("private");
    assert_eq!(echo["text"], text);
    let got = to.next();
    assert_eq!(
        (got["type"].as_str(), got["text"].as_str()),
        (Some("private"), Some(text)),
        "{}: expected only the sentinel, got {got}",
        to.name
    );
}

impl Peer {
    /// Skips messages until one for which `f` holds, which it returns; fails after `limit`
    /// (waiting quietly through read timeouts until then) saying it waited for `what`.
    /// `history` messages are set aside in [`histories`](Self::histories), not shown to `f`.
    pub fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        f: impl FnMut(&Value) -> bool,
    ) -> Value {
        self.wait(what, limit, false, f)
    }

    /// [`wait_until`](Self::wait_until), or (`history`) until the first `history` message.
    fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        history: bool,
        mut f: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}: no {what} within {limit:?}", self.name);
            let stream = self.client.stream();
            stream.set_read_timeout(Some(left.min(TIMEOUT))).unwrap();
            match self.client.recv() {
                Ok(Received::Text(text)) => {
                    let msg: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.name));
                    if msg["type"] == "history" {
                        if history {
                            break msg;
                        }
                        self.histories.push(msg);
                    } else if f(&msg) {
                        break msg;
                    }
                }
                Ok(Received::Ping(_) | Received::Pong(_)) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                other => panic!("{}: waiting for {what}, got {other:?}", self.name),
            }
        };
        self.client
            .stream()
            .set_read_timeout(Some(TIMEOUT))
            .unwrap();
        found
    }
}
