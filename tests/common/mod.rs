//! Shared harness for the integration tests: a `wsloop::Server` on a background thread with a
//! scriptable test handler, and a raw TCP client that writes exact bytes and reads exact bytes;
//! the other shared helpers are its submodules.
//!
//! Every read has a timeout and every wait a deadline, so no test can hang. Servers bind
//! 127.0.0.1:0 and are left running when a test ends (the test process exits).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod cert;
pub mod chat_peer;
pub mod handlers;
pub mod memory;
pub mod node;
pub mod redis_server;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use wsloop::proto::frame::{write_frame, FrameHeader, OpCode, MAX_HEADER_LEN};
use wsloop::proto::message::Encoder;
use wsloop::proto::Role;
use wsloop::{
    CloseCode, CloseReason, Config, ConnId, Context, Handler, HttpResponse, Message, ProtocolError,
    Request, SendError, Server, Upgrade,
};

/// How long any single read, or any wait for a server event, may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The example key of RFC 6455 section 1.3, and its accept value.
pub const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Size of one `!flood` message.
pub const FLOOD_CHUNK: usize = 48 * 1024;

// ---------------------------------------------------------------------------------------------
// The test handler
// ---------------------------------------------------------------------------------------------

/// How the test handler answers upgrades and plain GETs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Accept with this subprotocol when the client offers it.
    pub protocol: Option<&'static str>,
    /// Refuse every upgrade with this status.
    pub reject: Option<u16>,
    /// Serve plain GETs with a 200 page instead of the default 426.
    pub http_page: bool,
}

/// An owned [`CloseReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    Closed { code: Option<u16>, reason: String },
    ProtocolError(ProtocolError),
    Overflow,
    TimedOut,
    Disconnected,
}

impl From<CloseReason<'_>> for Why {
    fn from(why: CloseReason<'_>) -> Why {
        match why {
            CloseReason::Closed { code, reason } => Why::Closed {
                code: code.map(|c| c.0),
                reason: reason.to_owned(),
            },
            CloseReason::ProtocolError(e) => Why::ProtocolError(e),
            CloseReason::Overflow => Why::Overflow,
            CloseReason::TimedOut => Why::TimedOut,
            CloseReason::Disconnected => Why::Disconnected,
            other => panic!("a CloseReason these tests do not know: {other:?}"),
        }
    }
}

/// What the test handler reports to the test, in the order it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Open(ConnId),
    Closed(ConnId, Why),
    Drain(ConnId),
    /// A `!flood` was handled: the queue before the send, and the send's result.
    Flood {
        id: ConnId,
        buffered_before: usize,
        result: Result<(), SendError>,
    },
    /// Answer to `!buffered`.
    Buffered(ConnId, usize),
}

/// Per-connection state, set at upgrade.
#[derive(Debug)]
pub struct State {
    pub path: String,
}

/// Echoes every message, except text commands starting with `!`:
///
/// - `!close`: `ctx.close(1000, "server bye")`
/// - `!flood`: sends one binary message of [`FLOOD_CHUNK`] bytes, reports [`Ev::Flood`]
/// - `!buffered`: reports `ctx.buffered(id)` as [`Ev::Buffered`]
/// - `!state`, `!peer`, `!id`, `!list`: replies with the state's path, `ctx.peer_addr(id)`,
///   the connection's id, the ids of `ctx.connections()` (sorted, comma-separated)
/// - `!all TEXT`, `!others TEXT`: `ctx.broadcast` / `ctx.broadcast_except(id, ..)` of TEXT
pub struct TestHandler {
    options: Options,
    events: Sender<Ev>,
}

impl TestHandler {
    pub fn new(options: Options, events: Sender<Ev>) -> TestHandler {
        TestHandler { options, events }
    }

    /// A handler whose events go nowhere (for `Server::bind` error tests).
    pub fn detached() -> TestHandler {
        TestHandler::new(Options::default(), mpsc::channel().0)
    }

    fn report(&self, ev: Ev) {
        let _ = self.events.send(ev);
    }
}

/// The flood payload: a recognisable pattern, so a reader can check what it gets.
pub fn flood_payload() -> Vec<u8> {
    (0..FLOOD_CHUNK).map(|i| (i % 251) as u8).collect()
}

impl Handler for TestHandler {
    type State = State;

    fn on_upgrade(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<State> {
        if let Some(status) = self.options.reject {
            return Upgrade::reject(status, "go away");
        }
        let state = State {
            path: req.path().to_owned(),
        };
        match self.options.protocol {
            Some(p) if req.protocols().any(|offered| offered == p) => {
                Upgrade::accept_protocol(p, state)
            }
            _ => Upgrade::accept(state),
        }
    }

    fn on_http(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> HttpResponse {
        if self.options.http_page {
            HttpResponse::text(200, &format!("plain page for {}", req.path()))
        } else {
            HttpResponse::upgrade_required()
        }
    }

    fn on_open(&mut self, _ctx: &mut Context<'_, State>, id: ConnId) {
        self.report(Ev::Open(id));
    }

    fn on_message(&mut self, ctx: &mut Context<'_, State>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            let _ = ctx.send(id, msg);
            return;
        };
        let (command, arg) = text.split_once(' ').unwrap_or((text, ""));
        let reply = match command {
            "!close" => {
                ctx.close(id, CloseCode::NORMAL, "server bye").unwrap();
                return;
            }
            "!flood" => {
                let buffered_before = ctx.buffered(id);
                let result = ctx.send_binary(id, &flood_payload());
                self.report(Ev::Flood {
                    id,
                    buffered_before,
                    result,
                });
                return;
            }
            "!buffered" => {
                self.report(Ev::Buffered(id, ctx.buffered(id)));
                return;
            }
            "!all" => {
                ctx.broadcast(Message::Text(arg));
                return;
            }
            "!others" => {
                ctx.broadcast_except(id, Message::Text(arg));
                return;
            }
            "!state" => ctx.state(id).map(|s| s.path.clone()).unwrap_or_default(),
            "!peer" => ctx.peer_addr(id).map(|a| a.to_string()).unwrap_or_default(),
            "!id" => id.to_string(),
            "!list" => {
                let mut ids: Vec<_> = ctx.connections().collect();
                ids.sort();
                let ids: Vec<_> = ids.iter().map(ConnId::to_string).collect();
                ids.join(",")
            }
            _ => {
                let _ = ctx.send(id, msg);
                return;
            }
        };
        let _ = ctx.send_text(id, &reply);
    }

    fn on_close(&mut self, _ctx: &mut Context<'_, State>, id: ConnId, why: CloseReason<'_>) {
        self.report(Ev::Closed(id, why.into()));
    }

    fn on_drain(&mut self, _ctx: &mut Context<'_, State>, id: ConnId) {
        self.report(Ev::Drain(id));
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A server running on a background thread, and the events its handler reports.
pub struct TestServer {
    pub addr: SocketAddr,
    events: Receiver<Ev>,
}

impl TestServer {
    /// An echo server (with the test commands) on `config`.
    pub fn start(config: Config) -> TestServer {
        TestServer::start_with(config, Options::default())
    }

    pub fn start_with(config: Config, options: Options) -> TestServer {
        let (events_tx, events) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        thread::spawn(move || {
            let handler = TestHandler::new(options, events_tx);
            let mut server = Server::bind("127.0.0.1:0", config, handler).expect("bind");
            addr_tx.send(server.local_addr()).unwrap();
            server.run().expect("server run");
        });
        let addr = addr_rx.recv_timeout(TIMEOUT).expect("server did not start");
        TestServer { addr, events }
    }

    /// Skips events until one matches `pred`, and returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Ev) -> bool) -> Ev {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) if pred(&ev) => return ev,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    }

    /// Drops the events reported so far.
    pub fn clear_events(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Waits for the next `on_close` call (of any connection) and returns its reason.
    pub fn wait_closed(&self) -> Why {
        match self.wait_for("on_close", |e| matches!(e, Ev::Closed(..))) {
            Ev::Closed(_, why) => why,
            _ => unreachable!(),
        }
    }

    /// A raw TCP connection, not yet upgraded.
    pub fn raw(&self) -> Ws {
        Ws::connect(self.addr)
    }

    /// A connection upgraded with a valid handshake (checked: 101 and the RFC accept value).
    pub fn connect(&self) -> Ws {
        self.connect_path("/")
    }

    pub fn connect_path(&self, path: &str) -> Ws {
        let mut ws = self.raw();
        ws.send_raw(upgrade_request(path, &[]).as_bytes());
        let resp = ws.read_response_head();
        assert_eq!(resp.status, 101, "handshake refused: {resp:?}");
        assert_eq!(resp.header("sec-websocket-accept"), Some(RFC_ACCEPT));
        ws
    }
}

/// Sends `bytes` on a fresh upgraded connection to `server` and checks that the server answers
/// with a close frame carrying exactly `error`'s code and description, then closes TCP.
pub fn expect_error(server: &TestServer, bytes: &[u8], error: ProtocolError) {
    let mut ws = server.connect();
    ws.send_raw(bytes);
    let reason = ws.expect_close(error.close_code().0);
    assert_eq!(reason, error.as_str(), "after sending {:?}", &bytes[..2]);
    ws.expect_eof();
}

// ---------------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------------

/// A valid upgrade request for `path`, with the RFC key and `extra` header lines.
pub fn upgrade_request(path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// An HTTP response head (and, with [`Ws::read_response`], its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn parse(head: &str) -> Response {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').expect("header line");
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        Response {
            status_line,
            status,
            headers,
            body: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// A frame as the server sent it: its raw header bytes and its (unmasked) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub raw_header: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(
            self.header.opcode,
            OpCode::Close,
            "not a close frame: {self:?}"
        );
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A masked client frame, as a conforming client would send it.
pub fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(Role::Client).frame(&mut out, opcode, fin, payload);
    out
}

/// A masked client frame whose first byte (FIN, RSV bits, opcode) is exactly `byte0`, so that
/// reserved bits and opcodes can be sent.
pub fn client_frame_raw(byte0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(
        &mut out,
        OpCode::Binary,
        true,
        false,
        Some([1, 2, 3, 4]),
        payload,
    );
    out[0] = byte0;
    out
}

/// An unmasked frame (as only a server may send).
pub fn unmasked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, opcode, true, false, None, payload);
    out
}

/// Only the header of a masked frame announcing `payload_len` bytes.
pub fn client_header(opcode: OpCode, fin: bool, payload_len: u64) -> Vec<u8> {
    let header = FrameHeader::new(opcode, payload_len)
        .with_fin(fin)
        .with_mask(Some([0x11, 0x22, 0x33, 0x44]));
    let mut out = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut out);
    out[..n].to_vec()
}

/// A close payload: the code, then the reason's bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

// ---------------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------------

/// A raw client connection: exact bytes out, exact bytes in, every read under [`TIMEOUT`].
pub struct Ws {
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

impl Ws {
    pub fn connect(addr: SocketAddr) -> Ws {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Ws {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes `bytes` in pieces of `chunk` bytes with a pause after each.
    pub fn send_trickle(&mut self, bytes: &[u8], chunk: usize, pause: Duration) {
        for piece in bytes.chunks(chunk) {
            self.send_raw(piece);
            thread::sleep(pause);
        }
    }

    pub fn send_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        self.send_raw(&client_frame(opcode, fin, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(OpCode::Text, true, text.as_bytes());
    }

    pub fn send_close(&mut self, code: u16, reason: &str) {
        self.send_frame(OpCode::Close, true, &close_payload(code, reason.as_bytes()));
    }

    /// Reads more bytes into the buffer; panics on a timeout, an error or the end of stream.
    fn fill(&mut self, what: &str) {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!("end of stream while reading {what} (have {:?})", self.buf),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading {what}: {e}"),
        }
    }

    /// Reads an HTTP response head; the bytes after it stay buffered for frames.
    pub fn read_response_head(&mut self) -> Response {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.buf.len() < 64 * 1024, "response head too large");
            self.fill("a response head");
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        Response::parse(std::str::from_utf8(&head).expect("response head is not UTF-8"))
    }

    /// Reads a whole HTTP response, its body per `Content-Length`.
    pub fn read_response(&mut self) -> Response {
        let mut resp = self.read_response_head();
        let len: usize = resp
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        while self.buf.len() < len {
            self.fill("a response body");
        }
        resp.body = self.buf.drain(..len).collect();
        resp
    }

    /// Reads one frame from the server (which must not mask it).
    pub fn read_frame(&mut self) -> Frame {
        loop {
            let decoded = FrameHeader::decode(&self.buf)
                .unwrap_or_else(|e| panic!("server sent a bad frame header: {e}"));
            if let Some((header, n)) = decoded {
                assert_eq!(header.mask, None, "server frames must not be masked");
                let end = n + header.payload_len as usize;
                if self.buf.len() >= end {
                    let raw_header = self.buf[..n].to_vec();
                    let payload = self.buf[n..end].to_vec();
                    self.buf.drain(..end);
                    return Frame {
                        header,
                        raw_header,
                        payload,
                    };
                }
            }
            self.fill("a frame");
        }
    }

    /// Reads one frame and checks it is a whole text message.
    pub fn read_text(&mut self) -> String {
        let f = self.read_frame();
        assert_eq!(
            (f.header.opcode, f.header.fin),
            (OpCode::Text, true),
            "{f:?}"
        );
        String::from_utf8(f.payload).expect("text frame is not UTF-8")
    }

    /// Sends `text` and checks that the next frame is its echo.
    pub fn assert_echo(&mut self, text: &str) {
        self.send_text(text);
        assert_eq!(self.read_text(), text);
    }

    /// Reads one frame and checks it is a close frame with `code`; returns its reason.
    pub fn expect_close(&mut self, code: u16) -> String {
        let f = self.read_frame();
        assert_eq!(
            f.header.opcode,
            OpCode::Close,
            "expected a close frame, got {f:?}"
        );
        assert_eq!(f.close_code(), Some(code), "close frame {f:?}");
        String::from_utf8(f.payload[2..].to_vec()).expect("close reason is not UTF-8")
    }

    /// Reads until the server closes TCP, within [`TIMEOUT`]; panics if any byte comes first.
    pub fn expect_eof(&mut self) {
        let rest = self.wait_for_eof();
        assert!(rest.is_empty(), "bytes before the end of stream: {rest:?}");
    }

    /// Reads until the end of stream or a reset, within [`TIMEOUT`]; returns what came before
    /// (buffered bytes included).
    pub fn wait_for_eof(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        let mut rest = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return rest,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e) if is_reset(&e) => return rest,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("waiting for the end of stream: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "the server did not close the connection"
            );
        }
    }

    /// Checks that nothing arrives (and the connection stays open) for `period`.
    pub fn expect_silence(&mut self, period: Duration) {
        assert!(self.buf.is_empty(), "unexpected bytes {:?}", self.buf);
        self.stream.set_read_timeout(Some(period)).unwrap();
        let mut chunk = [0u8; 1024];
        let got = self.stream.read(&mut chunk);
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        match got {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(n) => panic!("expected silence, got {:?}", &chunk[..n]),
            Err(e) => panic!("expected silence, got {e}"),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}
