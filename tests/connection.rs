//! A client [`Connection`] and a server [`Connection`] in memory, each with its own
//! [`Endpoint`], on one simulated clock: the handshake, messages, the close handshake, and the
//! protocol's timing (close, keepalive, idle and handshake deadlines) without sockets or sleeps.
//!
//! Each side is driven the way the server's reactor drives its connections: reads land in
//! [`Input::room`] (a small shared buffer, or the room after a partial frame's kept bytes),
//! events are pulled with `poll_event` and the input handed back with `end_input`; deadlines
//! are armed in a timer that keeps only the earliest one (a later one is armed when the
//! earlier fires, as the reactor's heap does) and handled with `handle_timeout`.
//! `tests/keepalive.rs` and `tests/close.rs` keep one real-socket smoke test per timer, for
//! the reactor's wiring of them.

mod common;

use std::time::{Duration, Instant};

use common::{client_frame_raw, unmasked_frame};

use wsloop::proto::connection::{
    CloseReason, Connection, Endpoint, Event, Input, Phase, SendError,
};
use wsloop::proto::deflate::DeflateConfig;
use wsloop::proto::frame::{write_frame, OpCode};
use wsloop::proto::handshake::{Request, ResponseError};
use wsloop::{CloseCode, ConnectionConfig, HttpResponse, Message, Overflow, ProtocolError};

// ---------------------------------------------------------------------------------------------
// The pair harness
// ---------------------------------------------------------------------------------------------

/// An event, owned, as one side saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// Server: a request head (answered by the pair's `decide`).
    Request(String),
    Opened(Option<String>),
    Refused(ResponseError),
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Closed(Why),
}

/// [`CloseReason`], owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    Closed(Option<u16>, String),
    Protocol(ProtocolError),
    Overflow,
    TimedOut,
    Disconnected,
}

impl Got {
    fn of(event: Event<'_>) -> Got {
        match event {
            Event::Request(head) => Got::Request(String::from_utf8_lossy(head).into_owned()),
            Event::Opened { protocol } => Got::Opened(protocol.map(str::to_owned)),
            Event::Refused(why) => Got::Refused(why),
            Event::Message(Message::Text(t)) => Got::Text(t.to_owned()),
            Event::Message(Message::Binary(b)) => Got::Binary(b.to_vec()),
            Event::Ping(p) => Got::Ping(p.to_vec()),
            Event::Pong(p) => Got::Pong(p.to_vec()),
            Event::Closed(why) => Got::Closed(match why {
                CloseReason::Closed { code, reason } => {
                    Why::Closed(code.map(|c| c.0), reason.to_owned())
                }
                CloseReason::ProtocolError(e) => Why::Protocol(e),
                CloseReason::Overflow => Why::Overflow,
                CloseReason::TimedOut => Why::TimedOut,
                CloseReason::Disconnected => Why::Disconnected,
                other => panic!("unexpected close reason {other:?}"),
            }),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// The close frame a peer sent with `code` and `reason`, as the other side sees it.
fn closed(code: u16, reason: &str) -> Got {
    Got::Closed(Why::Closed(Some(code), reason.to_owned()))
}

/// How the server answers an upgrade request (see [`Connection::answer`]).
type Decide = Box<dyn FnMut(&Request<'_, '_>) -> Result<Option<String>, HttpResponse>>;

/// One end: its endpoint, its connection, what it saw and what it wrote.
struct Side {
    ep: Endpoint,
    conn: Connection,
    got: Vec<Got>,
    /// Every byte this side wrote (whether or not it reached the peer).
    wire: Vec<u8>,
    /// What this side writes is lost on the way: a peer that went silent.
    mute: bool,
    /// The read buffer shared by "all connections", as the reactor's.
    scratch: Vec<u8>,
    /// The deadline armed in this side's timer, as in the reactor's heap: only an earlier
    /// one replaces it; when it fires the next one is armed.
    armed: Option<Instant>,
}

impl Side {
    /// The transport ended: what `handle_disconnect` says.
    fn disconnect(&mut self) -> Option<Event<'static>> {
        self.conn.handle_disconnect(&mut self.ep)
    }

    fn new(ep: Endpoint, conn: Connection) -> Side {
        Side {
            ep,
            conn,
            got: Vec::new(),
            wire: Vec::new(),
            mute: false,
            scratch: vec![0; 100],
            armed: None,
        }
    }

    /// Reads `bytes` at `now` as the reactor does: into the input's room, as many reads as
    /// that takes; a request is answered with `decide`.
    fn recv(&mut self, now: Instant, mut bytes: &[u8], decide: &mut Decide) {
        self.ep.set_now(now);
        while !bytes.is_empty() {
            let mut input: Input<'_> = self.conn.input(&mut self.ep, &mut self.scratch);
            let room = input.room();
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            input.filled(n);
            bytes = &bytes[n..];
            while let Some(event) = self.conn.poll_event(&mut self.ep, &mut input) {
                if let Event::Request(head) = event {
                    self.got.push(Got::of(Event::Request(head)));
                    self.conn.answer(&mut self.ep, head, |req| decide(req));
                } else {
                    self.got.push(Got::of(event));
                }
            }
            self.conn.end_input(&mut self.ep, input);
        }
        self.settle();
    }

    /// Arms the connection's deadline unless an earlier one is armed.
    fn settle(&mut self) {
        if let Some(at) = self.conn.poll_timeout(&self.ep) {
            self.armed = Some(self.armed.map_or(at, |armed| armed.min(at)));
        }
    }

    /// The armed deadline fired at `now`: handle what is due, arm the next one.
    fn tick(&mut self, now: Instant) {
        if self.armed.is_some_and(|at| at <= now) {
            self.armed = None;
            if let Some(event) = self.conn.handle_timeout(&mut self.ep, now) {
                self.got.push(Got::of(event));
            }
        }
        self.settle();
    }

    /// What the side saw since the last call.
    fn take(&mut self) -> Vec<Got> {
        std::mem::take(&mut self.got)
    }
}

/// Moves everything `from` wants to write to `to`, in reads of at most `split` bytes (or
/// drops it, if `from` is mute). Returns whether anything was written.
fn carry(from: &mut Side, to: &mut Side, now: Instant, split: usize, decide: &mut Decide) -> bool {
    let mut moved = false;
    while !from.conn.transmit().is_empty() {
        let bytes = from.conn.transmit().to_vec();
        from.conn.advance(&mut from.ep, bytes.len());
        from.wire.extend_from_slice(&bytes);
        moved = true;
        if !from.mute {
            for piece in bytes.chunks(split) {
                to.recv(now, piece, decide);
            }
        }
    }
    from.settle();
    moved
}

/// A client and a server connection on one simulated clock.
struct Pair {
    base: Instant,
    /// The simulated time since `base`.
    elapsed: Duration,
    client: Side,
    server: Side,
    decide: Decide,
    /// Largest read: bytes travel in pieces of this size.
    split: usize,
}

impl Pair {
    /// A client offering `protocols` and a server that answers with `decide`; the client's
    /// request is queued, nothing has moved yet.
    fn new(
        client: ConnectionConfig,
        server: ConnectionConfig,
        protocols: &[&str],
        decide: Decide,
    ) -> Pair {
        let base = Instant::now();
        let mut cep = Endpoint::new(client, base);
        let cconn = Connection::client(&mut cep, "example.com", "/chat", protocols);
        let mut sep = Endpoint::new(server, base);
        let sconn = Connection::server(&mut sep);
        Pair {
            base,
            elapsed: Duration::ZERO,
            client: Side::new(cep, cconn),
            server: Side::new(sep, sconn),
            decide,
            split: usize::MAX,
        }
    }

    /// An open pair (no subprotocol), with what each side saw and wrote so far forgotten.
    fn open(client: ConnectionConfig, server: ConnectionConfig) -> Pair {
        let mut pair = Pair::new(client, server, &[], Box::new(|_| Ok(None)));
        pair.pump();
        assert!(
            matches!(pair.client.take()[..], [Got::Opened(None)]),
            "the client did not open"
        );
        assert!(pair.server.conn.is_open(), "the server did not open");
        pair.server.got.clear();
        pair.client.wire.clear();
        pair.server.wire.clear();
        pair
    }

    /// An open pair with the same config on both sides.
    fn with(config: ConnectionConfig) -> Pair {
        Pair::open(config.clone(), config)
    }

    fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// Moves the client's bytes to the server.
    fn carry_to_server(&mut self) -> bool {
        let now = self.now();
        carry(
            &mut self.client,
            &mut self.server,
            now,
            self.split,
            &mut self.decide,
        )
    }

    /// Moves the server's bytes to the client.
    fn carry_to_client(&mut self) -> bool {
        let now = self.now();
        carry(
            &mut self.server,
            &mut self.client,
            now,
            self.split,
            &mut self.decide,
        )
    }

    /// Moves bytes both ways until neither side has anything to write.
    fn pump(&mut self) {
        while self.carry_to_server() | self.carry_to_client() {}
    }

    /// The server reads `bytes` as if the client had written them.
    fn server_reads(&mut self, bytes: &[u8]) {
        let now = self.now();
        for piece in bytes.chunks(self.split) {
            self.server.recv(now, piece, &mut self.decide);
        }
    }

    /// A side's next deadline, as simulated time since `base`.
    fn deadline(&self, side: &Side) -> Option<Duration> {
        (side.conn.poll_timeout(&side.ep)).map(|at| at.duration_since(self.base))
    }

    /// Lets `d` of simulated time pass: every armed deadline on the way fires when it comes
    /// (`handle_timeout`, then the next deadline is armed), and what it queues is delivered at
    /// once.
    fn run_for(&mut self, d: Duration) {
        let end = self.elapsed + d;
        // What the test did to either side (a send, a close) may have moved its deadline.
        self.client.settle();
        self.server.settle();
        for _ in 0..100_000 {
            let next = [self.client.armed, self.server.armed]
                .into_iter()
                .flatten()
                .map(|at| at.duration_since(self.base))
                .min();
            match next {
                Some(at) if at <= end => {
                    self.elapsed = self.elapsed.max(at);
                    let now = self.now();
                    self.client.tick(now);
                    self.server.tick(now);
                    self.pump();
                }
                _ => {
                    // The owner tells the endpoints the time on every turn (`close` and the
                    // other calls without a `now` use the last time given).
                    self.elapsed = end;
                    let now = self.now();
                    self.client.ep.set_now(now);
                    self.server.ep.set_now(now);
                    return;
                }
            }
        }
        panic!("a deadline that handle_timeout does not move");
    }
}

/// How late a deadline comes: the connection counts whole milliseconds, rounded up, plus one,
/// so that a deadline never comes early.
const TICK: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The response head a side wrote (up to the blank line).
fn head(wire: &[u8]) -> String {
    let text = String::from_utf8_lossy(wire);
    let end = text.find("\r\n\r\n").expect("a whole response head");
    text[..end].to_owned()
}

/// Both roles without keepalive or idle timeout, so that time passes quietly.
fn quiet() -> ConnectionConfig {
    ConnectionConfig::default()
        .ping_interval(None)
        .idle_timeout(None)
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_opens_both_sides_with_the_subprotocol_the_server_chose() {
    let decide: Decide = Box::new(|req| {
        assert_eq!(req.path(), "/chat");
        Ok(req
            .protocols()
            .find(|p| *p == "superchat")
            .map(str::to_owned))
    });
    let mut pair = Pair::new(quiet(), quiet(), &["chat", "superchat"], decide);
    assert_eq!(pair.client.conn.phase(), Phase::Handshake);
    assert!(pair.server.conn.transmit().is_empty());
    pair.pump();
    let seen = pair.server.take();
    assert!(
        matches!(&seen[..], [Got::Request(h)] if h.contains("Sec-WebSocket-Protocol: chat, superchat")),
        "{seen:?}"
    );
    assert_eq!(pair.client.take(), [Got::Opened(Some("superchat".into()))]);
    assert!(pair.client.conn.is_open() && pair.server.conn.is_open());
    assert!(head(&pair.server.wire).starts_with("HTTP/1.1 101 Switching Protocols"));
}

#[test]
fn handshake_split_into_single_bytes_opens() {
    let mut pair = Pair::new(
        quiet(),
        quiet(),
        &["chat"],
        Box::new(|_| Ok(Some("chat".into()))),
    );
    pair.split = 1;
    pair.pump();
    assert_eq!(pair.client.take(), [Got::Opened(Some("chat".into()))]);
    assert_eq!(pair.server.got.len(), 1, "{:?}", pair.server.got);
}

#[test]
fn refused_upgrade_gives_the_client_the_status() {
    let refuse: Decide = Box::new(|_| Err(HttpResponse::text(403, "go away")));
    let mut pair = Pair::new(quiet(), quiet(), &[], refuse);
    pair.pump();
    assert_eq!(
        pair.client.take(),
        [Got::Refused(ResponseError::Status {
            code: 403,
            reason: "Forbidden".into()
        })]
    );
    assert!(pair.client.conn.is_finished());
    // The server said all it had to say and waits for the client to close.
    assert_eq!(pair.server.conn.phase(), Phase::Linger);
    assert!(pair.server.conn.wants_shutdown());
    assert!(String::from_utf8_lossy(&pair.server.wire).ends_with("\r\n\r\ngo away"));
}

#[test]
fn a_subprotocol_that_was_not_offered_is_a_500() {
    let mut pair = Pair::new(
        quiet(),
        quiet(),
        &["chat"],
        Box::new(|_| Ok(Some("mqtt".into()))),
    );
    pair.pump();
    assert_eq!(
        pair.client.take(),
        [Got::Refused(ResponseError::Status {
            code: 500,
            reason: "Internal Server Error".into()
        })]
    );
    assert!(!pair.server.conn.is_open());
}

#[test]
fn handshake_timeout_finishes_a_server_that_gets_no_request() {
    let config = quiet().handshake_timeout(secs(10));
    let mut pair = Pair::new(quiet(), config, &[], Box::new(|_| Ok(None)));
    pair.client.mute = true;
    pair.pump();
    assert_eq!(pair.deadline(&pair.server), Some(secs(10) + TICK));
    pair.run_for(secs(10));
    assert_eq!(pair.server.conn.phase(), Phase::Handshake);
    pair.run_for(TICK);
    assert!(pair.server.conn.is_finished());
    assert_eq!(pair.server.take(), []);
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Bytes that are not all alike, so that a piece out of place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[test]
fn messages_travel_both_ways_whatever_the_read_size() {
    for split in [1, 2, 3, 7, 125, 4096, usize::MAX] {
        let mut pair = Pair::with(quiet());
        pair.split = split;
        let big = pattern(if split < 100 { 70_000 } else { 1 << 20 });
        let (c, s) = (&mut pair.client, &mut pair.server);
        c.conn
            .send(&mut c.ep, Message::Text("héllo, wörld €"))
            .unwrap();
        c.conn.send(&mut c.ep, Message::Binary(&big)).unwrap();
        c.conn.send(&mut c.ep, Message::Text("")).unwrap();
        s.conn.send(&mut s.ep, Message::Binary(&[0, 1, 2])).unwrap();
        s.conn.send(&mut s.ep, Message::Binary(&big[1..])).unwrap();
        s.conn.send(&mut s.ep, Message::Text("ünïcode")).unwrap();
        pair.pump();
        assert_eq!(
            pair.server.take(),
            [
                Got::Text("héllo, wörld €".into()),
                Got::Binary(big.clone()),
                Got::Text(String::new())
            ],
            "split {split}"
        );
        assert_eq!(
            pair.client.take(),
            [
                Got::Binary(vec![0, 1, 2]),
                Got::Binary(big[1..].to_vec()),
                Got::Text("ünïcode".into())
            ],
            "split {split}"
        );
    }
}

#[test]
fn the_client_masks_and_the_server_does_not() {
    let mut pair = Pair::with(quiet());
    let (c, s) = (&mut pair.client, &mut pair.server);
    c.conn.send(&mut c.ep, Message::Text("abc")).unwrap();
    s.conn.send(&mut s.ep, Message::Text("abc")).unwrap();
    pair.pump();
    assert_eq!(pair.client.wire[..2], [0x81, 0x83]);
    assert_eq!(pair.client.wire.len(), 2 + 4 + 3);
    assert_eq!(pair.server.wire, b"\x81\x03abc");
}

#[test]
fn nothing_is_sent_before_the_handshake_or_after_close() {
    let mut pair = Pair::new(quiet(), quiet(), &[], Box::new(|_| Ok(None)));
    let c = &mut pair.client;
    assert_eq!(
        c.conn.send(&mut c.ep, Message::Text("early")),
        Err(SendError::NotOpen)
    );
    pair.pump();
    let c = &mut pair.client;
    c.conn.close(&mut c.ep, CloseCode::NORMAL, "").unwrap();
    assert_eq!(
        c.conn.send(&mut c.ep, Message::Text("late")),
        Err(SendError::NotOpen)
    );
    assert_eq!(c.conn.ping(&mut c.ep, b""), Err(SendError::NotOpen));
    assert_eq!(
        c.conn.close(&mut c.ep, CloseCode::NORMAL, ""),
        Err(SendError::NotOpen)
    );
}

// ---------------------------------------------------------------------------------------------
// Pings
// ---------------------------------------------------------------------------------------------

#[test]
fn a_ping_is_answered_with_a_pong_carrying_its_payload() {
    let mut pair = Pair::with(quiet());
    pair.split = 3;
    let c = &mut pair.client;
    c.conn.ping(&mut c.ep, b"are you there?").unwrap();
    assert_eq!(c.conn.ping(&mut c.ep, &[0; 126]), Err(SendError::TooLong));
    pair.pump();
    assert_eq!(pair.server.take(), [Got::Ping(b"are you there?".to_vec())]);
    assert_eq!(pair.client.take(), [Got::Pong(b"are you there?".to_vec())]);
    // And the other way.
    let s = &mut pair.server;
    s.conn.ping(&mut s.ep, &[0xAB; 125]).unwrap();
    pair.pump();
    assert_eq!(pair.client.take(), [Got::Ping(vec![0xAB; 125])]);
    assert_eq!(pair.server.take(), [Got::Pong(vec![0xAB; 125])]);
}

#[test]
fn a_ping_between_fragments_is_answered_and_the_message_still_arrives() {
    let mut pair = Pair::with(quiet());
    let mut frames = Vec::new();
    let mask = Some([1, 2, 3, 4]);
    write_frame(&mut frames, OpCode::Text, false, false, mask, b"frag");
    write_frame(&mut frames, OpCode::Ping, true, false, mask, b"p");
    write_frame(
        &mut frames,
        OpCode::Continuation,
        true,
        false,
        mask,
        b"ments",
    );
    pair.server_reads(&frames);
    pair.pump();
    assert_eq!(
        pair.server.take(),
        [Got::Ping(b"p".to_vec()), Got::Text("fragments".into())]
    );
    assert_eq!(pair.client.take(), [Got::Pong(b"p".to_vec())]);
}

#[test]
fn fragmented_and_whole_messages_in_one_read_are_echoed_in_order_from_the_callback() {
    let mut pair = Pair::with(quiet());
    let mut frames = Vec::new();
    let mask = Some([9, 8, 7, 6]);
    let cont = OpCode::Continuation;
    write_frame(&mut frames, OpCode::Binary, false, false, mask, b"ab");
    write_frame(&mut frames, cont, true, false, mask, b"cd");
    write_frame(&mut frames, OpCode::Text, true, false, mask, b"whole");
    write_frame(
        &mut frames,
        OpCode::Text,
        false,
        false,
        mask,
        &"caf\u{e9}".as_bytes()[..4],
    );
    write_frame(
        &mut frames,
        cont,
        false,
        false,
        mask,
        &"caf\u{e9}".as_bytes()[4..],
    );
    write_frame(&mut frames, cont, true, false, mask, b"!");
    write_frame(&mut frames, OpCode::Binary, false, false, mask, b"again");
    write_frame(&mut frames, cont, true, false, mask, b"");
    // Every split: the message gathered from fragments is sent back while the same
    // connection goes on decoding what follows it.
    for split in [1, 3, frames.len()] {
        let now = pair.now();
        let s = &mut pair.server;
        for piece in frames.clone().chunks_mut(split) {
            s.conn.recv(&mut s.ep, now, piece, |conn, ep, event| {
                if let Event::Message(msg) = event {
                    conn.send(ep, msg).unwrap();
                }
            });
        }
        pair.pump();
        assert_eq!(
            pair.client.take(),
            [
                Got::Binary(b"abcd".to_vec()),
                Got::Text("whole".into()),
                Got::Text("caf\u{e9}!".into()),
                Got::Binary(b"again".to_vec()),
            ],
            "split {split}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The close handshake
// ---------------------------------------------------------------------------------------------

/// Which side starts the close handshake.
#[derive(Debug, Clone, Copy)]
enum Closer {
    Client,
    Server,
}

impl Pair {
    /// The closer and the other side.
    fn sides(&mut self, closer: Closer) -> (&mut Side, &mut Side) {
        match closer {
            Closer::Client => (&mut self.client, &mut self.server),
            Closer::Server => (&mut self.server, &mut self.client),
        }
    }

    /// Moves the closer's bytes to the other side.
    fn carry_from_closer(&mut self, closer: Closer) -> bool {
        match closer {
            Closer::Client => self.carry_to_server(),
            Closer::Server => self.carry_to_client(),
        }
    }

    /// Moves the other side's bytes to the closer.
    fn carry_to_closer(&mut self, closer: Closer) -> bool {
        match closer {
            Closer::Client => self.carry_to_client(),
            Closer::Server => self.carry_to_server(),
        }
    }
}

#[test]
fn close_handshake_started_by_either_side() {
    for who in [Closer::Client, Closer::Server] {
        let mut pair = Pair::with(quiet().close_timeout(secs(5)));
        pair.split = 2;
        let (closer, _) = pair.sides(who);
        closer
            .conn
            .close(&mut closer.ep, CloseCode(4001), "see you")
            .unwrap();
        assert_eq!(closer.conn.phase(), Phase::Closing, "{who:?}");
        assert!(!closer.conn.wants_shutdown(), "{who:?}");
        assert!(pair.carry_from_closer(who));

        // The other side sees the close, answers it and has nothing more to say.
        let (_, other) = pair.sides(who);
        assert_eq!(other.take(), [closed(4001, "see you")], "{who:?}");
        assert_eq!(other.conn.phase(), Phase::Linger, "{who:?}");
        assert!(
            !other.conn.wants_shutdown(),
            "{who:?}: its answer is not written yet"
        );
        assert!(pair.carry_to_closer(who));
        let (closer, other) = pair.sides(who);
        assert!(other.conn.wants_shutdown(), "{who:?}");

        // The closer gets the echo of its code.
        assert_eq!(closer.take(), [closed(4001, "")], "{who:?}");
        assert_eq!(closer.conn.phase(), Phase::Linger, "{who:?}");
        assert!(closer.conn.wants_shutdown(), "{who:?}");
        assert!(
            !pair.carry_from_closer(who),
            "{who:?}: a second close frame"
        );

        // Both linger for close_timeout at most, then are finished without another event.
        assert_eq!(pair.deadline(&pair.client), Some(secs(5) + TICK), "{who:?}");
        assert_eq!(pair.deadline(&pair.server), Some(secs(5) + TICK), "{who:?}");
        pair.run_for(secs(5));
        assert!(!pair.client.conn.is_finished() && !pair.server.conn.is_finished());
        pair.run_for(TICK);
        assert!(pair.client.conn.is_finished(), "{who:?}");
        assert!(pair.server.conn.is_finished(), "{who:?}");
        assert_eq!((pair.client.take(), pair.server.take()), (vec![], vec![]));
        assert_eq!(pair.deadline(&pair.client), None);
    }
}

#[test]
fn an_empty_close_frame_is_answered_with_an_empty_one() {
    let mut pair = Pair::with(quiet());
    pair.server_reads(&client_frame_raw(0x88, b""));
    assert_eq!(
        pair.server.take(),
        [Got::Closed(Why::Closed(None, String::new()))]
    );
    pair.carry_to_client();
    assert_eq!(pair.server.wire, [0x88, 0x00]);
}

#[test]
fn a_lingering_connection_ends_when_the_peer_disconnects() {
    let mut pair = Pair::with(quiet());
    let c = &mut pair.client;
    c.conn.close(&mut c.ep, CloseCode::NORMAL, "").unwrap();
    pair.pump();
    assert_eq!(pair.server.conn.phase(), Phase::Linger);
    assert_eq!(pair.server.disconnect(), None);
    assert!(pair.server.conn.is_finished());
}

#[test]
fn an_open_connection_that_loses_its_transport_is_told_so() {
    let mut pair = Pair::with(quiet());
    let s = &mut pair.server;
    s.conn.send(&mut s.ep, Message::Binary(&[1; 64])).unwrap();
    assert!(s.conn.buffered() > 0);
    let event = pair.server.disconnect().map(Got::of);
    assert_eq!(event, Some(Got::Closed(Why::Disconnected)));
    assert!(pair.server.conn.is_finished());
    assert_eq!(
        pair.server.conn.buffered(),
        0,
        "its queue went back to the pool"
    );
}

#[test]
fn data_sent_before_the_peers_close_still_arrives_after_ours() {
    let mut pair = Pair::with(quiet());
    let s = &mut pair.server;
    s.conn
        .close(&mut s.ep, CloseCode::NORMAL, "server bye")
        .unwrap();
    let c = &mut pair.client;
    c.conn
        .send(&mut c.ep, Message::Text("crossed in flight"))
        .unwrap();
    pair.pump();
    assert_eq!(
        pair.server.take(),
        [Got::Text("crossed in flight".into()), closed(1000, "")]
    );
    assert_eq!(pair.client.take(), [closed(1000, "server bye")]);
}

#[test]
fn close_timeout_when_the_peer_never_answers() {
    for who in [Closer::Client, Closer::Server] {
        let mut pair = Pair::with(quiet().close_timeout(ms(300)));
        pair.run_for(secs(1));
        let (closer, other) = pair.sides(who);
        other.mute = true;
        closer
            .conn
            .close(&mut closer.ep, CloseCode::NORMAL, "bye")
            .unwrap();
        pair.pump();
        let (closer, other) = pair.sides(who);
        assert_eq!(other.take(), [closed(1000, "bye")], "{who:?}");
        let closer_deadline = closer.conn.poll_timeout(&closer.ep);
        assert_eq!(
            closer_deadline,
            Some(pair.base + secs(1) + ms(300) + TICK),
            "{who:?}"
        );

        pair.run_for(ms(300));
        let (closer, _) = pair.sides(who);
        assert_eq!(closer.take(), [], "{who:?}");
        assert_eq!(closer.conn.phase(), Phase::Closing, "{who:?}");
        pair.run_for(TICK);
        let (closer, _) = pair.sides(who);
        assert_eq!(closer.take(), [Got::Closed(Why::TimedOut)], "{who:?}");
        assert!(closer.conn.is_finished(), "{who:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Keepalive and idle timeout
// ---------------------------------------------------------------------------------------------

/// A server that pings after 30 s of silence and drops after 60 s, and a quiet client.
fn keepalive_pair() -> Pair {
    let server = ConnectionConfig::default()
        .ping_interval(Some(secs(30)))
        .idle_timeout(Some(secs(60)))
        .close_timeout(secs(5));
    Pair::open(quiet(), server)
}

#[test]
fn keepalive_pings_after_each_ping_interval_of_silence() {
    let mut pair = keepalive_pair();
    assert_eq!(pair.deadline(&pair.server), Some(secs(30) + TICK));
    pair.run_for(secs(30));
    assert_eq!(pair.client.take(), []);
    pair.run_for(TICK);
    // The client answered at once, which counts as hearing from it.
    assert_eq!(pair.client.take(), [Got::Ping(vec![])]);
    assert_eq!(pair.server.take(), [Got::Pong(vec![])]);
    assert_eq!(pair.deadline(&pair.server), Some(secs(60) + 2 * TICK));
    // A responsive client is never dropped: one ping per interval, for ten minutes.
    pair.run_for(secs(601));
    let pings = pair.client.take();
    assert_eq!(pings.len(), 20, "{pings:?}");
    assert!(pings.iter().all(|g| *g == Got::Ping(vec![])), "{pings:?}");
    assert!(pair.server.conn.is_open());
}

#[test]
fn traffic_from_the_peer_postpones_the_keepalive_ping() {
    let mut pair = keepalive_pair();
    pair.run_for(secs(20));
    let c = &mut pair.client;
    c.conn.send(&mut c.ep, Message::Text("still here")).unwrap();
    pair.pump();
    assert_eq!(pair.deadline(&pair.server), Some(secs(50) + TICK));
    pair.run_for(secs(30));
    assert_eq!(pair.client.take(), []);
    pair.run_for(TICK);
    assert_eq!(pair.client.take(), [Got::Ping(vec![])]);
}

#[test]
fn keepalive_ping_then_idle_close_with_1001_for_a_dead_peer() {
    let mut pair = keepalive_pair();
    pair.client.mute = true;
    pair.run_for(secs(30) + TICK);
    assert_eq!(pair.client.take(), [Got::Ping(vec![])]);
    assert_eq!(pair.server.take(), [], "the pong was lost");
    // One ping only; the next deadline is the idle timeout, 60 s after the last word.
    assert_eq!(pair.deadline(&pair.server), Some(secs(60) + TICK));
    pair.run_for(secs(30) - TICK);
    assert!(pair.server.conn.is_open());
    assert_eq!(pair.client.take(), []);
    pair.run_for(TICK);
    assert_eq!(pair.server.take(), [Got::Closed(Why::TimedOut)]);
    assert_eq!(pair.client.take(), [closed(1001, "idle timeout")]);
    assert_eq!(pair.server.conn.phase(), Phase::Linger);
    // The client's answer is lost too: the server gives up after close_timeout.
    pair.run_for(secs(5));
    assert!(!pair.server.conn.is_finished());
    pair.run_for(TICK);
    assert!(pair.server.conn.is_finished());
    assert_eq!(pair.server.take(), []);
}

#[test]
fn idle_timeout_without_pings_spares_an_active_peer() {
    let server = quiet().idle_timeout(Some(secs(60)));
    let mut pair = Pair::open(quiet(), server);
    for _ in 0..10 {
        pair.run_for(secs(59));
        let c = &mut pair.client;
        c.conn.send(&mut c.ep, Message::Text("tick")).unwrap();
        pair.pump();
    }
    assert!(pair.server.conn.is_open());
    assert_eq!(pair.server.got.len(), 10);
    assert_eq!(pair.deadline(&pair.server), Some(secs(10 * 59 + 60) + TICK));
    pair.run_for(secs(60));
    assert_eq!(pair.client.take(), []);
    pair.run_for(TICK);
    assert_eq!(pair.client.take(), [closed(1001, "idle timeout")]);
}

// ---------------------------------------------------------------------------------------------
// Overflow
// ---------------------------------------------------------------------------------------------

fn small_queue(on_overflow: Overflow) -> ConnectionConfig {
    quiet().max_write_buffer(1024).on_overflow(on_overflow)
}

/// The bound holds to the byte, but for one frame header: a send that would pass it
/// overflows. The close frame 1008 follows what is queued if it fits; if even it does not, the
/// connection is dropped at once.
#[test]
fn overflow_close_refuses_the_send_and_closes_with_1008() {
    let mut pair = Pair::open(quiet(), small_queue(Overflow::Close));
    let s = &mut pair.server;
    s.conn.send(&mut s.ep, Message::Binary(&[1; 500])).unwrap();
    s.conn.send(&mut s.ep, Message::Binary(&[2; 500])).unwrap();
    assert_eq!(s.conn.buffered(), 2 * (4 + 500));
    assert_eq!(
        s.conn.send(&mut s.ep, Message::Binary(&[3; 40])),
        Err(SendError::Full)
    );
    assert!(!s.conn.is_open());
    assert_eq!(s.conn.phase(), Phase::Linger);
    assert!(!s.conn.wants_read(), "nothing more is read from it");
    assert_eq!(
        s.conn.send(&mut s.ep, Message::Binary(&[4; 10])),
        Err(SendError::NotOpen)
    );
    pair.pump();
    assert_eq!(
        pair.client.take(),
        [
            Got::Binary(vec![1; 500]),
            Got::Binary(vec![2; 500]),
            closed(1008, "write buffer overflow")
        ]
    );
}

#[test]
fn overflow_with_no_room_for_the_close_frame_drops_the_connection_at_once() {
    let mut pair = Pair::open(quiet(), small_queue(Overflow::Close));
    let s = &mut pair.server;
    s.conn.send(&mut s.ep, Message::Binary(&[1; 1030])).unwrap();
    assert_eq!(s.conn.buffered(), 4 + 1030);
    assert_eq!(
        s.conn.send(&mut s.ep, Message::Binary(&[2; 1])),
        Err(SendError::Full)
    );
    assert!(s.conn.is_finished());
    assert_eq!(s.conn.buffered(), 0, "its queue is freed");
    assert_eq!(
        s.disconnect(),
        None,
        "its end was told with the send's error"
    );
}

#[test]
fn overflow_refuse_refuses_the_send_and_stays_open() {
    let mut pair = Pair::open(quiet(), small_queue(Overflow::Refuse));
    let s = &mut pair.server;
    s.conn.send(&mut s.ep, Message::Binary(&[1; 1100])).unwrap();
    assert_eq!(
        s.conn.send(&mut s.ep, Message::Binary(&[2; 10])),
        Err(SendError::Full)
    );
    assert!(s.conn.is_open());
    pair.pump();
    assert_eq!(pair.client.take(), [Got::Binary(vec![1; 1100])]);
    // Once written, the room is back.
    let s = &mut pair.server;
    assert_eq!(s.conn.buffered(), 0);
    s.conn.send(&mut s.ep, Message::Binary(&[3; 1000])).unwrap();
}

#[test]
fn a_peer_that_pings_without_reading_its_pongs_overflows() {
    let mut pair = Pair::open(quiet(), small_queue(Overflow::Close));
    let c = &mut pair.client;
    // Pongs of 92 bytes: the 1008 close frame (25 bytes) fits after the last that does.
    for _ in 0..20 {
        c.conn.ping(&mut c.ep, &[0x55; 90]).unwrap();
    }
    // The server reads the pings but cannot write its pongs.
    pair.carry_to_server();
    let got = pair.server.take();
    let (last, pings) = got.split_last().expect("events");
    assert_eq!(*last, Got::Closed(Why::Overflow), "{got:?}");
    assert!(!pings.is_empty() && pings.len() < 20, "{got:?}");
    assert!(pings.iter().all(|g| *g == Got::Ping(vec![0x55; 90])));
    assert!(!pair.server.conn.is_open());
    pair.carry_to_client();
    let got = pair.client.take();
    assert_eq!(got.len(), pings.len() + 1, "{got:?}");
    assert_eq!(
        got[..pings.len()],
        vec![Got::Pong(vec![0x55; 90]); pings.len()][..]
    );
    assert_eq!(got[pings.len()], closed(1008, "write buffer overflow"));
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate
// ---------------------------------------------------------------------------------------------

fn deflate() -> ConnectionConfig {
    quiet().deflate(Some(DeflateConfig::default()))
}

#[test]
fn deflate_is_negotiated_and_messages_round_trip_compressed() {
    let mut pair = Pair::new(deflate(), deflate(), &[], Box::new(|_| Ok(None)));
    pair.pump();
    let response = head(&pair.server.wire).to_ascii_lowercase();
    assert!(
        response.contains("\r\nsec-websocket-extensions: permessage-deflate"),
        "{response}"
    );
    pair.client.take();
    pair.server.take();
    pair.split = 5;
    let text = "the same words again and again, ".repeat(400);
    for round in 0..3 {
        pair.client.wire.clear();
        pair.server.wire.clear();
        let (c, s) = (&mut pair.client, &mut pair.server);
        c.conn.send(&mut c.ep, Message::Text(&text)).unwrap();
        s.conn
            .send(&mut s.ep, Message::Binary(text.as_bytes()))
            .unwrap();
        pair.pump();
        assert_eq!(
            pair.server.take(),
            [Got::Text(text.clone())],
            "round {round}"
        );
        assert_eq!(pair.client.take(), [Got::Binary(text.clone().into_bytes())]);
        // FIN + RSV1 + opcode, and far fewer bytes than the text.
        assert_eq!(pair.client.wire[0], 0xC1, "round {round}");
        assert_eq!(pair.server.wire[0], 0xC2, "round {round}");
        assert!(
            pair.client.wire.len() < text.len() / 10,
            "{}",
            pair.client.wire.len()
        );
        assert!(
            pair.server.wire.len() < text.len() / 10,
            "{}",
            pair.server.wire.len()
        );
    }
    // Under the threshold (64 B by default) a message goes out as it is.
    pair.server.wire.clear();
    let s = &mut pair.server;
    s.conn.send(&mut s.ep, Message::Text("short")).unwrap();
    pair.pump();
    assert_eq!(pair.server.wire, b"\x81\x05short");
    assert_eq!(pair.client.take(), [Got::Text("short".into())]);
}

#[test]
fn deflate_with_context_takeover_round_trips() {
    let takeover = DeflateConfig {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        ..DeflateConfig::default()
    };
    let config = quiet().deflate(Some(takeover));
    let mut pair = Pair::with(config);
    let text = "context takeover remembers the previous message. ".repeat(20);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        pair.server.wire.clear();
        let s = &mut pair.server;
        s.conn.send(&mut s.ep, Message::Text(&text)).unwrap();
        pair.pump();
        assert_eq!(pair.client.take(), [Got::Text(text.clone())]);
        sizes.push(pair.server.wire.len());
    }
    // The second message refers to the first: smaller than the first's compressed form.
    assert!(sizes[1] < sizes[0], "{sizes:?}");
}

#[test]
fn deflate_offered_to_a_server_without_it_is_not_used() {
    let mut pair = Pair::new(deflate(), quiet(), &[], Box::new(|_| Ok(None)));
    pair.pump();
    let response = head(&pair.server.wire).to_ascii_lowercase();
    assert!(!response.contains("sec-websocket-extensions"), "{response}");
    pair.client.wire.clear();
    let text = "x".repeat(1000);
    let c = &mut pair.client;
    c.conn.send(&mut c.ep, Message::Text(&text)).unwrap();
    pair.pump();
    assert_eq!(pair.server.take()[1..], [Got::Text(text)]);
    assert_eq!(pair.client.wire[0], 0x81);
}

// ---------------------------------------------------------------------------------------------
// Protocol errors
// ---------------------------------------------------------------------------------------------

#[test]
fn protocol_errors_close_with_the_code_they_call_for() {
    use ProtocolError as E;
    let cases = [
        (unmasked_frame(OpCode::Text, b"naked"), E::BadMasking, 1002),
        (client_frame_raw(0x83, b"x"), E::ReservedOpcode, 1002),
        (client_frame_raw(0xC2, b"x"), E::ReservedBits, 1002),
        (client_frame_raw(0x09, b"x"), E::BadControlFrame, 1002),
        (
            client_frame_raw(0x80, b"x"),
            E::UnexpectedContinuation,
            1002,
        ),
        (client_frame_raw(0x81, b"ok \xFF\xFE"), E::InvalidUtf8, 1007),
        (client_frame_raw(0x82, &[0; 2000]), E::MessageTooBig, 1009),
        (client_frame_raw(0x88, &[0x03]), E::BadCloseFrame, 1002),
    ];
    for split in [1, usize::MAX] {
        for (frame, error, code) in &cases {
            let mut pair = Pair::with(quiet().max_message_size(1000));
            pair.split = split;
            let mut bytes = frame.clone();
            // What follows the bad frame is never read.
            bytes.extend(client_frame_raw(0x81, b"after"));
            pair.server_reads(&bytes);
            let why = Got::Closed(Why::Protocol(*error));
            assert_eq!(pair.server.take(), [why], "{error:?}, split {split}");
            assert_eq!(pair.server.conn.phase(), Phase::Linger, "{error:?}");
            pair.carry_to_client();
            assert_eq!(
                pair.client.take(),
                [closed(*code, error.as_str())],
                "{error:?}"
            );
            assert!(pair.server.conn.wants_shutdown(), "{error:?}");
        }
    }
}

#[test]
fn a_client_refuses_a_masked_frame_from_the_server() {
    let mut pair = Pair::with(quiet());
    let now = pair.now();
    pair.client
        .recv(now, &client_frame_raw(0x81, b"masked"), &mut pair.decide);
    let error = ProtocolError::BadMasking;
    assert_eq!(pair.client.take(), [Got::Closed(Why::Protocol(error))]);
    pair.carry_to_server();
    assert_eq!(pair.server.take(), [closed(1002, error.as_str())]);
}

#[test]
fn a_lingering_server_is_finished_after_close_timeout_if_the_peer_never_closes() {
    let mut pair = Pair::with(quiet().close_timeout(ms(300)));
    pair.client.mute = true;
    // A protocol error: the server sends 1002 and lingers, waiting for the peer to close.
    pair.server_reads(&client_frame_raw(0x83, b"bad opcode"));
    assert_eq!(
        pair.server.take(),
        [Got::Closed(Why::Protocol(ProtocolError::ReservedOpcode))]
    );
    pair.pump();
    assert_eq!(pair.server.conn.phase(), Phase::Linger);
    assert!(
        pair.server.conn.wants_shutdown(),
        "all said: shut down writing"
    );
    pair.run_for(ms(300));
    assert_eq!(pair.server.conn.phase(), Phase::Linger);
    pair.run_for(TICK);
    assert!(pair.server.conn.is_finished());
    assert_eq!(
        pair.server.take(),
        [],
        "nothing more is owed to the application"
    );
    assert_eq!(pair.server.disconnect(), None);
}

#[test]
fn a_request_left_unanswered_is_refused_with_500() {
    let config = quiet();
    let now = Instant::now();
    let mut ep = Endpoint::new(config.clone(), now);
    let mut client_ep = Endpoint::new(config, now);
    let client = Connection::client(&mut client_ep, "example.com", "/", &[]);
    let mut request = client.transmit().to_vec();
    let mut server = Connection::server(&mut ep);
    let mut input = server.input_from(&mut ep, &mut request);
    let event = server.poll_event(&mut ep, &mut input);
    assert!(matches!(event, Some(Event::Request(_))), "{event:?}");
    assert!(server.poll_event(&mut ep, &mut input).is_none());
    server.end_input(&mut ep, input);
    assert!(head(server.transmit()).starts_with("HTTP/1.1 500"));
    assert_eq!(server.phase(), Phase::Linger);
}

/// A writer that takes at most `room` bytes, like a socket with a full buffer.
struct Socket {
    room: usize,
    taken: Vec<u8>,
}

impl std::io::Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.room - self.taken.len());
        self.taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn send_to_writes_a_large_message_straight_out_and_queues_only_the_rest() {
    let mut pair = Pair::open(quiet(), quiet());
    let s = &mut pair.server;
    let payload = vec![7u8; 40_000];
    let mut socket = Socket {
        room: 30_000,
        taken: Vec::new(),
    };
    s.conn
        .send_to(&mut s.ep, Message::Binary(&payload), &mut socket)
        .unwrap();
    let mut frame = socket.taken.clone();
    assert_eq!(frame.len(), 30_000, "the socket took what it could");
    frame.extend_from_slice(s.conn.transmit());
    let mut whole = Vec::new();
    write_frame(&mut whole, OpCode::Binary, true, false, None, &payload);
    assert_eq!(
        frame, whole,
        "what was written and what is queued make the frame"
    );

    // With bytes queued before it, a message is queued behind them: order first.
    let mut socket = Socket {
        room: usize::MAX,
        taken: Vec::new(),
    };
    let queued = s.conn.buffered();
    s.conn
        .send_to(&mut s.ep, Message::Binary(&payload), &mut socket)
        .unwrap();
    assert!(socket.taken.is_empty());
    assert_eq!(s.conn.buffered(), queued + whole.len());

    // A small message is always queued (batched with the turn's others).
    let n = s.conn.buffered();
    let s = &mut pair.server;
    s.conn.advance(&mut s.ep, n);
    s.conn
        .send_to(&mut s.ep, Message::Text("hi"), &mut socket)
        .unwrap();
    assert!(socket.taken.is_empty());
    assert_eq!(s.conn.transmit(), b"\x81\x02hi");
}

/// A socket that takes at most `room` bytes across all the slices of a write, and counts its
/// calls.
struct VectoredSocket {
    room: usize,
    taken: usize,
    calls: usize,
}

impl std::io::Write for VectoredSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.calls += 1;
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let n = offered.min(self.room - self.taken);
        self.taken += n;
        if n == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn send_to_a_full_socket_stops_at_the_short_write() {
    let mut pair = Pair::open(quiet(), quiet());
    let s = &mut pair.server;
    let mut socket = VectoredSocket {
        room: 30_000,
        taken: 0,
        calls: 0,
    };
    s.conn
        .send_to(&mut s.ep, Message::Binary(&[7; 40_000]), &mut socket)
        .unwrap();
    assert_eq!(socket.taken, 30_000);
    assert_eq!(socket.calls, 1, "no second write to be told it would block");
    assert_eq!(s.conn.buffered(), 40_004 - 30_000);
}
