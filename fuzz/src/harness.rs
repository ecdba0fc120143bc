//! Fuzz harnesses for wsloop, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and by
//! `tests/fuzz_regressions.rs`, which includes this file with `#[path]` to replay the inputs
//! that once found bugs (`tests/fuzz_corpus/<target>/`).
//!
//! Each harness takes arbitrary bytes, panics when an invariant breaks, and returns otherwise.
//! The first bytes of an input choose the knobs (limits, where reads split, modes); the rest is
//! what a peer sends.
//!
//! - [`handshake`]: `HeadScanner` fed in pieces against a plain search, `Request::parse`, every
//!   accessor, `validate_upgrade`, permessage-deflate negotiation, and our own 101 (or error
//!   response) read back by our own client.
//! - [`decoder`]: the frame decoder with message assembly, with and without deflate, as either
//!   role, fed raw bytes (or frames built from the input) split at arbitrary points exactly as
//!   the reactor feeds it. The events must not depend on where reads split, no message may
//!   exceed the limit, and the decoder must not allocate what a header merely announces.
//! - [`roundtrip`]: valid traffic (fragmented, compressed, with interleaved pings) must come out
//!   exactly as it went in; only a message over the limit may fail, and only with 1009.
//! - [`server`]: a real `wsloop::Server` on a background thread; each input is written to a
//!   fresh TCP connection; what comes back must be a valid HTTP response and valid frames, the
//!   server must close after our FIN, and a healthy client must keep getting its echo.
//! - [`connection`]: a server-role `Connection` in memory, no sockets: an upgrade request (our
//!   own client `Connection`'s, or the input's) and frames fed in arbitrary splits; its events
//!   and everything it writes must not depend on where reads split, what it writes must be a
//!   valid HTTP response then valid unmasked frames (read back by our client `Connection`),
//!   and the memory it holds is bounded by its limits.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wsloop::proto::connection::{Connection, Endpoint, Event as ConnEvent};
use wsloop::proto::deflate::{
    negotiate, parse_server_response, DeflateConfig, Deflater, Inflater, Params,
};
use wsloop::proto::frame::{write_frame, OpCode};
use wsloop::proto::handshake::{
    accept_key, check_response, write_accept, HeadScanner, Headers, MAX_HEADERS,
};
use wsloop::proto::message::{Decoded, Decoder, Event, DEFAULT_MAX_FRAGMENTS};
use wsloop::proto::{ProtocolError, Role};
use wsloop::{
    CloseCode, CloseReason, Config, ConnId, ConnectionConfig, Context, Handler, HttpResponse,
    Message, Overflow, Request, Server, Upgrade,
};

// ---------------------------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------------------------

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn account(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

/// A global allocator that counts the bytes each thread holds, so that a harness can tell how
/// much the code under test allocated at its peak. Install it with `#[global_allocator]`;
/// without it [`measure`] reports 0.
pub struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            account(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            account(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        account(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            account(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Runs `f` and returns its result and the most bytes this thread held above what it held
/// when `f` started.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, (peak - start).max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Reading knobs from the input
// ---------------------------------------------------------------------------------------------

/// The fuzzer's bytes, consumed from the front; reads past the end give zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Up to 15 read sizes: 1..=239 bytes, 4 KiB multiples from 0xF0 up, 0 for "all the rest".
fn read_sizes(input: &mut Input<'_>) -> Vec<usize> {
    let n = input.byte() % 16;
    (0..n)
        .map(|_| match input.byte() {
            0 => usize::MAX,
            b @ 0xF0.. => usize::from(b - 0xEF) * 4096,
            b => usize::from(b),
        })
        .collect()
}

/// `data` cut into reads of the given sizes, cycled (one read of everything if none).
fn chunks<'b>(data: &'b [u8], sizes: &[usize]) -> Vec<&'b [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
        i += 1;
    }
    out
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn opposite(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

/// Frames built from the input, for a decoder of `receiver`'s role: records of a first byte
/// (FIN, RSV, opcode, as is: reserved values included), a length byte (0xFE: a u16 follows,
/// 0xFF: everything left) and the payload, which is masked as the sender must. With a
/// `deflater`, payloads of frames with RSV1 set are compressed first.
fn build_frames(data: &[u8], receiver: Role, mut deflater: Option<&mut Deflater>) -> Vec<u8> {
    let mut input = Input::new(data);
    let mut out = Vec::new();
    while !input.is_empty() {
        let b0 = input.byte();
        let len = match input.byte() {
            0xFE => usize::from(input.u16()),
            0xFF => usize::MAX,
            n => usize::from(n),
        };
        let payload = input.take(len);
        let mut compressed = Vec::new();
        let payload = match deflater.as_deref_mut() {
            Some(d) if b0 & 0x40 != 0 => {
                d.deflate(payload, &mut compressed);
                &compressed[..]
            }
            _ => payload,
        };
        let mask = (receiver == Role::Server).then_some([b0, len as u8, 0x37, 0xfa]);
        let start = out.len();
        write_frame(&mut out, OpCode::Binary, true, false, mask, payload);
        out[start] = b0;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (a) The handshake
// ---------------------------------------------------------------------------------------------

/// The RFC 6455 example key.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The server's permessage-deflate configurations the negotiation is tried with.
fn server_deflate_configs() -> [DeflateConfig; 3] {
    let takeover = DeflateConfig {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        ..DeflateConfig::default()
    };
    let strict = DeflateConfig {
        server_max_window_bits: 10,
        client_max_window_bits: 9,
        ..DeflateConfig::default()
    };
    [DeflateConfig::default(), takeover, strict]
}

/// A client's permessage-deflate configuration that accepts any valid answer.
fn lenient_client_config() -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        ..DeflateConfig::default()
    }
}

/// Harness (a): the upgrade request as the reactor handles it (`src/server.rs`, `handshake`).
pub fn handshake(data: &[u8]) {
    let mut input = Input::new(data);
    let max = 256 + usize::from(input.u16()) % 8192;
    let sizes = read_sizes(&mut input);
    let raw = input.rest();

    // The head's end, found as bytes trickle in, must be the first blank line.
    let mut scanner = HeadScanner::default();
    let mut end = None;
    let mut fed = 0;
    for piece in chunks(raw, &sizes) {
        fed += piece.len();
        if let Some(e) = scanner.find_end(&raw[..fed]) {
            end = Some(e);
            break;
        }
    }
    // The first blank line, or the first bare LF (which makes the head malformed) if earlier.
    let blank = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let bare_lf = (0..raw.len())
        .find(|&i| raw[i] == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        .map(|i| i + 1);
    let naive = match (blank, bare_lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    assert_eq!(end, naive, "HeadScanner disagrees with a plain search");

    // The client reads a server's answer with the same scanner: the bytes as a response.
    if let Some(end) = end {
        let _ = check_response(&raw[..end], KEY, &["chat", "superchat"]);
    }

    let Some(end) = end.filter(|&e| e <= max) else {
        return; // 431, or waiting for more
    };
    let mut headers = Headers::new();
    let Ok(req) = Request::parse(&raw[..end], &mut headers) else {
        return; // 400 or 431
    };
    exercise_request(&req);

    match req.validate_upgrade() {
        Ok(key) => upgrade_accepted(&req, key),
        Err(rejection) => check_http_response(&rejection.response()),
    }
}

/// Every accessor a handler may call, with consistency checks between them.
fn exercise_request(req: &Request<'_, '_>) {
    let _ = (req.method(), req.http_minor_version(), req.origin());
    for (name, value) in req.headers() {
        if std::str::from_utf8(value).is_ok() {
            assert!(req.header(name).is_some(), "header {name:?} not found");
        }
    }
    if let Some((_, query)) = req.path().split_once('?') {
        for pair in query.split('&') {
            let name = pair.split_once('=').map_or(pair, |(k, _)| k);
            assert!(
                req.query(name).is_some(),
                "query parameter {name:?} not found"
            );
        }
    }
    for value in req.header_values("cookie") {
        for pair in value.split(';') {
            if let Some((name, _)) = pair.trim().split_once('=') {
                assert!(req.cookie(name).is_some(), "cookie {name:?} not found");
            }
        }
    }
    for p in req.protocols() {
        assert!(
            !p.is_empty() && p.trim() == p && !p.contains(','),
            "protocol {p:?}"
        );
        assert!(req.has_token("sec-websocket-protocol", p));
    }
    let _ = req.wants_websocket();
}

/// A valid upgrade: negotiate deflate, write our 101, and check our own client accepts it.
fn upgrade_accepted(req: &Request<'_, '_>, key: &str) {
    assert_eq!((req.method(), req.http_minor_version()), ("GET", 1));
    assert!(req.wants_websocket());
    assert!(key.len() == 24 && key.ends_with("=="), "key {key:?}");
    assert_eq!(accept_key(key.as_bytes()).len(), 28);

    let mut extensions = None;
    for cfg in server_deflate_configs() {
        let offers = req.header_values("sec-websocket-extensions");
        let Some(params) = negotiate(offers.map(str::as_bytes), &cfg) else {
            continue;
        };
        assert!((9..=cfg.server_max_window_bits).contains(&params.server_max_window_bits));
        assert!((8..=15).contains(&params.client_max_window_bits));
        assert!(params.server_no_context_takeover || !cfg.server_no_context_takeover);
        assert!(params.client_no_context_takeover || !cfg.client_no_context_takeover);
        let value = params.response_header_value();
        let back = parse_server_response(value.as_bytes(), &lenient_client_config())
            .unwrap_or_else(|e| panic!("our client refuses our own answer {value:?}: {e}"));
        let fields = |p: &Params| {
            (
                p.server_max_window_bits,
                p.client_max_window_bits,
                p.server_no_context_takeover,
                p.client_no_context_takeover,
            )
        };
        assert_eq!(fields(&back), fields(&params), "answer {value:?}");
        extensions = Some(value);
    }

    let offered: Vec<&str> = req.protocols().collect();
    let protocol = offered.first().copied();
    let mut out = Vec::new();
    write_accept(&mut out, key, protocol, extensions.as_deref());
    let accepted = check_response(&out, key, &offered).unwrap_or_else(|e| {
        panic!(
            "our client refuses our own 101 ({e}): {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(accepted.protocol.as_deref(), protocol);
    assert_eq!(accepted.extensions, extensions);
}

/// An error response must be one well-formed HTTP response.
fn check_http_response(resp: &HttpResponse) {
    let mut out = Vec::new();
    resp.write_to(&mut out);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&out) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(parsed.code, Some(resp.status()));
            let len = parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .expect("Content-Length");
            assert_eq!(n + len, out.len());
        }
        other => panic!(
            "malformed response {other:?}: {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// (b) The decoder
// ---------------------------------------------------------------------------------------------

/// An event, owned and condensed: its kind, its length and a hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Text(usize, u64),
    Binary(usize, u64),
    Ping(usize, u64),
    Pong(usize, u64),
    Close(Option<u16>, usize, u64),
}

impl Seen {
    fn of(event: &Event<'_>, max: usize) -> Seen {
        let seen = match *event {
            Event::Text(t) => Seen::Text(t.len(), fnv(t.as_bytes())),
            Event::Binary(b) => Seen::Binary(b.len(), fnv(b)),
            Event::Ping(p) => Seen::Ping(p.len(), fnv(p)),
            Event::Pong(p) => Seen::Pong(p.len(), fnv(p)),
            Event::Close(code, reason) => {
                Seen::Close(code.map(|c| c.0), reason.len(), fnv(reason.as_bytes()))
            }
            ref other => unreachable!("an event the harness does not know: {other:?}"),
        };
        match seen {
            Seen::Text(n, _) | Seen::Binary(n, _) => {
                assert!(n <= max, "a {n}-byte message got past the {max}-byte limit")
            }
            Seen::Ping(n, _) | Seen::Pong(n, _) => assert!(n <= 125, "{n}-byte control frame"),
            Seen::Close(code, n, _) => {
                assert!(n <= 123, "{n}-byte close reason");
                assert!(code.is_some() || n == 0);
                assert!(
                    code.is_none_or(|c| CloseCode(c).is_sendable()),
                    "close code {code:?}"
                );
            }
        }
        seen
    }

    fn message(text: bool, bytes: &[u8]) -> Seen {
        match text {
            true => Seen::Text(bytes.len(), fnv(bytes)),
            false => Seen::Binary(bytes.len(), fnv(bytes)),
        }
    }
}

/// What a decoder made of a stream: its events up to the first error or close.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<Seen>,
    pub error: Option<ProtocolError>,
}

/// Feeds `reads` to `decoder` the way a `Connection` does (`src/proto/connection/mod.rs`,
/// `feed`): the bytes a read left unused (a partial frame, already partly unmasked in place)
/// are kept and presented again with the next read in front of them; `release` is called when
/// a read's bytes are all used; decoding stops at an error or a close frame. This is the
/// `Decoder`'s own contract, tested apart from any connection.
pub fn drive<'b>(
    decoder: &mut Decoder,
    reads: impl IntoIterator<Item = &'b [u8]>,
    max: usize,
) -> Outcome {
    let mut out = Outcome::default();
    let mut kept: Vec<u8> = Vec::new();
    for read in reads {
        kept.extend_from_slice(read);
        let mut pos = 0;
        loop {
            if pos == kept.len() {
                decoder.release();
                break;
            }
            let available = kept.len() - pos;
            match decoder.decode(&mut kept[pos..]) {
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
                Ok(Decoded::Incomplete { frame_len }) => {
                    if let Some(n) = frame_len {
                        assert!(n > available, "incomplete, yet {n} <= {available} bytes");
                    }
                    break;
                }
                Ok(Decoded::Frame { len, event }) => {
                    assert!(
                        (2..=available).contains(&len),
                        "frame of {len} of {available}"
                    );
                    let seen = event.map(|e| Seen::of(&e, max));
                    pos += len;
                    if let Some(seen) = seen {
                        let close = matches!(seen, Seen::Close(..));
                        out.events.push(seen);
                        if close {
                            return out;
                        }
                    }
                }
                Ok(other) => unreachable!("a result the harness does not know: {other:?}"),
            }
        }
        kept.drain(..pos);
    }
    out
}

/// permessage-deflate parameters from a flags byte.
fn params_from(flags: u8) -> Params {
    Params::default().with_no_context_takeover(flags & 0x20 != 0, flags & 0x02 != 0)
}

/// Harness (b): the decoder, raw or structured input, split at arbitrary points.
///
/// Flags (first byte): 0x01 deflate negotiated, 0x02 / 0x20 client / server no context
/// takeover, 0x04 build frames from records (see `build_frames`), 0x08 decode as a client,
/// 0x10 compress the payload of structured frames that have RSV1, 0xC0 the most frames a
/// message may take (0: the default, else 1, 2 or 5). Then a u16 (the limit is 125 + it),
/// then the read sizes.
pub fn decoder(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let max = 125 + usize::from(input.u16());
    let sizes = read_sizes(&mut input);
    let role = match flags & 0x08 {
        0 => Role::Server,
        _ => Role::Client,
    };
    let params = params_from(flags);
    let deflate = flags & 0x01 != 0;
    let max_fragments = match flags & 0xC0 {
        0 => DEFAULT_MAX_FRAGMENTS,
        0x40 => 1,
        0x80 => 2,
        _ => 5,
    };
    let stream: Cow<'_, [u8]> = match flags & 0x04 {
        0 => Cow::Borrowed(input.rest()),
        _ => {
            let mut deflater = Deflater::new(params, opposite(role), 1);
            let compress = deflate && flags & 0x10 != 0;
            Cow::Owned(build_frames(
                input.rest(),
                role,
                compress.then_some(&mut deflater),
            ))
        }
    };
    let new_decoder = || {
        let mut d = Decoder::new(role, max).with_max_fragments(max_fragments);
        if deflate {
            d.set_inflater(Inflater::new(params, role));
        }
        d
    };

    let reads = chunks(&stream, &sizes);
    let (split, peak) = measure(|| drive(&mut new_decoder(), reads, max));
    // Fragments (doubling) and inflate output (doubling, plus a chunk), zlib's state, the
    // harness's own copy of the stream and its events; never what a header only announces.
    let bound = 3 * max + 4 * stream.len() + (1 << 20);
    assert!(peak <= bound, "the decoder held {peak} B (bound {bound})");

    let whole = drive(&mut new_decoder(), [&stream[..]], max);
    assert_eq!(split, whole, "the events depend on where the reads split");
    if stream.len() <= 2048 {
        let bytewise = drive(&mut new_decoder(), stream.chunks(1), max);
        assert_eq!(bytewise, whole, "byte-at-a-time reads give other events");
    }
}

// ---------------------------------------------------------------------------------------------
// Round trip of valid traffic
// ---------------------------------------------------------------------------------------------

/// What the round trip expects of one item sent.
#[derive(Debug)]
enum Expect {
    Event(Seen),
    /// A message over the limit: 1009 here.
    TooBig,
    /// A control frame between the fragments of a message that is refused before it.
    Maybe(Seen),
}

/// Harness: valid messages, fragmented and compressed as the input says, with pings and pongs
/// between fragments, must come out exactly as they went in. A message is refused (1009) if
/// and only if it is larger than the limit, however large its compressed form.
///
/// Flags: 0x01 deflate, 0x02 / 0x20 client / server no context takeover, 0x08 the receiver is
/// the client; then a u16 (the limit is 125 + 4 × it), a byte of window bits and level, the read
/// sizes, then messages: a control byte (0x01 text, 0x0E fragment count - 1, 0x10 compress,
/// 0x20 a ping first, 0x40 a pong among the fragments, 0x80 repeat the content), a u16 length,
/// [a repeat count], the content, then the fragment split points.
pub fn roundtrip(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let max = 125 + 4 * usize::from(input.u16());
    let tuning = input.byte();
    let sizes = read_sizes(&mut input);
    let receiver = match flags & 0x08 {
        0 => Role::Server,
        _ => Role::Client,
    };
    let sender = opposite(receiver);
    let deflate = flags & 0x01 != 0;
    let bits = 8 + (tuning & 7);
    let mut params = params_from(flags);
    match sender {
        Role::Client => params.client_max_window_bits = bits,
        Role::Server => params.server_max_window_bits = bits.max(9),
    }
    let mut deflater = Deflater::new(params, sender, u32::from(tuning >> 3) % 10);

    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut n = 0u8;
    while !input.is_empty() {
        n = n.wrapping_add(1);
        let control = input.byte();
        let len = usize::from(input.u16() % 8192);
        let repeat = if control & 0x80 != 0 {
            usize::from(input.byte())
        } else {
            1
        };
        let mut content = input.take(len).repeat(repeat.max(1));
        content.truncate(2 * max + 1000);
        let text = control & 0x01 != 0;
        if text {
            content = String::from_utf8_lossy(&content).into_owned().into_bytes();
        }
        let compress = deflate && control & 0x10 != 0;
        let payload = if compress {
            let mut out = Vec::new();
            deflater.deflate(&content, &mut out);
            out
        } else {
            content.clone()
        };
        let fragments = 1 + usize::from((control >> 1) & 7);
        let mut cuts: Vec<usize> = (1..fragments)
            .map(|_| usize::from(input.u16()) % (payload.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mask = |i: usize| (sender == Role::Client).then_some([n, i as u8, 0xA5, control]);
        if control & 0x20 != 0 {
            let ping_len = usize::from(input.byte() % 126);
            let ping = input.take(ping_len).to_vec();
            write_frame(&mut wire, OpCode::Ping, true, false, mask(99), &ping);
            expected.push(Expect::Event(Seen::Ping(ping.len(), fnv(&ping))));
        }
        let may_fail = content.len() > max;
        let mut start = 0;
        for (i, end) in cuts.iter().copied().chain([payload.len()]).enumerate() {
            let opcode = match (i, text) {
                (0, true) => OpCode::Text,
                (0, false) => OpCode::Binary,
                _ => OpCode::Continuation,
            };
            let fin = end == payload.len() && i == cuts.len();
            let rsv1 = compress && i == 0;
            write_frame(&mut wire, opcode, fin, rsv1, mask(i), &payload[start..end]);
            start = end;
            if control & 0x40 != 0 && i == 0 && !fin {
                write_frame(&mut wire, OpCode::Pong, true, false, mask(98), b"pong");
                let pong = Seen::Pong(4, fnv(b"pong"));
                expected.push(match may_fail {
                    true => Expect::Maybe(pong),
                    false => Expect::Event(pong),
                });
            }
        }
        let seen = Seen::message(text, &content);
        expected.push(match may_fail {
            true => Expect::TooBig,
            false => Expect::Event(seen),
        });
        if content.len() > max {
            break;
        }
    }

    let mut decoder = Decoder::new(receiver, max);
    if deflate {
        decoder.set_inflater(Inflater::new(params, receiver));
    }
    let got = drive(&mut decoder, chunks(&wire, &sizes), max);
    let mut events = got.events.iter().peekable();
    for want in &expected {
        match (want, events.peek()) {
            (Expect::Event(w), Some(&g)) => {
                assert_eq!(g, w, "round trip changed a message");
                events.next();
            }
            (Expect::Maybe(w), Some(&g)) if g == w => {
                events.next();
            }
            (Expect::Maybe(_), _) => {}
            (Expect::TooBig, None) => {
                assert_eq!(got.error, Some(ProtocolError::MessageTooBig), "{got:?}");
                return;
            }
            (Expect::Event(w), None) => panic!("expected {w:?}, the decoder stopped: {got:?}"),
            (Expect::TooBig, Some(g)) => panic!("a message over the limit came out: {g:?}"),
        }
    }
    assert_eq!(events.next(), None);
    assert_eq!(got.error, None);
}

// ---------------------------------------------------------------------------------------------
// (c) A whole server connection
// ---------------------------------------------------------------------------------------------

/// Echoes, with a few commands that make the server do more than echo.
struct FuzzHandler {
    /// Peer ports of the connections the application knows as open.
    live: Arc<Mutex<HashSet<u16>>>,
}

impl Handler for FuzzHandler {
    type State = u16;

    fn on_upgrade(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> Upgrade<u16> {
        if req.path() == "/reject" {
            return Upgrade::reject(403, "rejected");
        }
        match req.protocols().find(|p| *p == "chat") {
            Some(p) => Upgrade::accept_protocol(p, peer.port()),
            None => Upgrade::accept(peer.port()),
        }
    }

    fn on_open(&mut self, ctx: &mut Context<'_, u16>, id: ConnId) {
        if let Some(&mut port) = ctx.state(id) {
            self.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(port);
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_, u16>, id: ConnId, msg: Message<'_>) {
        let _ = match msg {
            Message::Text("!close") => ctx.close(id, CloseCode::NORMAL, "bye"),
            Message::Text("!ping") => ctx.ping(id, b"fuzz"),
            Message::Text("!big") => ctx.send_binary(id, &[0x5A; 100_000]),
            Message::Text("!sub") => {
                ctx.subscribe(id, "t");
                Ok(())
            }
            Message::Text(t) if t.starts_with("!pub") => {
                ctx.publish("t", msg);
                Ok(())
            }
            Message::Text(t) if t.starts_with("!all") => {
                ctx.broadcast(msg);
                Ok(())
            }
            _ => ctx.send(id, msg),
        };
    }

    fn on_close(&mut self, ctx: &mut Context<'_, u16>, id: ConnId, _why: CloseReason<'_>) {
        if let Some(&mut port) = ctx.state(id) {
            self.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&port);
        }
    }
}

/// A running server and what its handler knows.
pub struct FuzzServer {
    pub addr: SocketAddr,
    live: Arc<Mutex<HashSet<u16>>>,
}

fn start_server(deflate: DeflateConfig) -> FuzzServer {
    let live = Arc::new(Mutex::new(HashSet::new()));
    let config = Config::default()
        .max_message_size(64 << 10)
        .max_handshake_size(4096)
        .handshake_timeout(Duration::from_secs(2))
        .close_timeout(Duration::from_secs(1))
        .max_write_buffer(256 << 10)
        .ping_interval(Some(Duration::from_secs(1)))
        .idle_timeout(Some(Duration::from_secs(3)))
        .max_connections(256)
        .deflate(Some(deflate));
    let handler = FuzzHandler { live: live.clone() };
    let mut server = Server::bind("127.0.0.1:0", config, handler).expect("bind");
    let addr = server.local_addr();
    std::thread::spawn(move || server.run().expect("server run"));
    FuzzServer { addr, live }
}

/// The two servers inputs go to: permessage-deflate with context takeover both ways, and the
/// default (no context takeover, shared compressors).
pub fn servers() -> &'static [FuzzServer; 2] {
    static SERVERS: OnceLock<[FuzzServer; 2]> = OnceLock::new();
    SERVERS.get_or_init(|| {
        [
            start_server(lenient_client_config()),
            start_server(DeflateConfig::default()),
        ]
    })
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Harness (c): one connection to a real server, fed the input.
///
/// Flags: 0x01 prepend our client `Connection`'s upgrade request (which then reads the answer
/// and the frames), 0x02 offering permessage-deflate, 0x40 and subprotocol `chat`; 0x04 build
/// frames from records (masked); 0x08 do not half-close (read until the server closes or 10 ms
/// of silence); 0x10 write in two pieces with a pause; 0x20 the default-deflate server; 0x80 the
/// request's path is `/reject`.
pub fn server(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let server = &servers()[usize::from(flags & 0x20 != 0)];
    let client_cfg = lenient_client_config();

    let now = Instant::now();
    let mut bytes = Vec::new();
    let path = if flags & 0x80 != 0 { "/reject" } else { "/" };
    let mut client = (flags & 0x01 != 0).then(|| our_client(flags, path, now, &mut bytes));
    match flags & 0x04 {
        0 => bytes.extend_from_slice(input.rest()),
        _ => bytes.extend(build_frames(input.rest(), Role::Server, None)),
    }

    let mut sock = TcpStream::connect(server.addr).expect("connect");
    let _ = sock.set_nodelay(true);
    let port = sock.local_addr().expect("local address").port();
    let half_close = flags & 0x08 == 0;
    let pieces: Vec<&[u8]> = match flags & 0x10 {
        0 => vec![&bytes[..]],
        _ => {
            let (a, b) = bytes.split_at(bytes.len() / 2);
            vec![a, b]
        }
    };
    for piece in pieces {
        if sock.write_all(piece).is_err() {
            break;
        }
        if flags & 0x10 != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if half_close {
        let _ = sock.shutdown(Shutdown::Write);
    }
    let wait = if half_close {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(10)
    };
    sock.set_read_timeout(Some(wait)).expect("timeout");
    let mut received = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let mut eof = false;
    loop {
        match sock.read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    !half_close,
                    "the server kept the connection open after our FIN"
                );
                break;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break, // reset
        }
    }
    drop(sock);
    check_server_output(&received, &client_cfg);
    if let Some((ep, conn)) = client.as_mut() {
        let rejected = flags & 0x80 != 0;
        match client_reads(ep, conn, now, &received).first() {
            None => {} // no whole answer before the connection ended
            Some(Happened::Opened(protocol)) => {
                assert!(!rejected, "/reject was accepted");
                let chat = (flags & 0x40 != 0).then(|| "chat".to_owned());
                assert_eq!(*protocol, chat, "the subprotocol");
            }
            Some(Happened::Refused(status)) => assert!(
                rejected || status.contains(" 503 "),
                "refused with {status:?}"
            ),
            Some(other) => panic!("before the upgrade's outcome: {other:?}"),
        }
    }
    if half_close && eof {
        let live = server.live.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            !live.contains(&port),
            "on_close was not called before the socket closed"
        );
    }
    if RUNS.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
        healthy(server.addr);
    }
}

/// The server still answers a well-behaved client.
pub fn healthy(addr: SocketAddr) {
    let url = format!("ws://{addr}/");
    let mut client = wsloop::client::Client::connect(&url).expect("healthy client connects");
    let timeout = Some(Duration::from_secs(5));
    client.stream().set_read_timeout(timeout).expect("timeout");
    client
        .send(Message::Text("healthy?"))
        .expect("healthy client sends");
    loop {
        match client.recv().expect("healthy client gets an answer") {
            wsloop::client::Received::Text(t) => {
                assert_eq!(t, "healthy?");
                break;
            }
            wsloop::client::Received::Ping(_) => {}
            other => panic!("healthy client got {other:?}"),
        }
    }
    let _ = client.close(CloseCode::NORMAL, "");
}

/// What the server sent must be one HTTP response head and then, after a 101, valid server
/// frames (possibly cut short where the connection was dropped) and nothing after a close;
/// after another status, its body and nothing more.
fn check_server_output(out: &[u8], client_cfg: &DeflateConfig) {
    const START: &[u8] = b"HTTP/1.1 ";
    if out.is_empty() {
        return;
    }
    let Some(end) = HeadScanner::default().find_end(out) else {
        let n = out.len().min(START.len());
        assert_eq!(&out[..n], &START[..n], "not an HTTP response: {out:?}");
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let parsed = resp.parse(&out[..end]);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(n)) if n == end),
        "malformed response head: {:?}",
        String::from_utf8_lossy(&out[..end])
    );
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).expect("header value is not UTF-8"))
    };
    if resp.code != Some(101) {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("an error response has a Content-Length");
        assert!(out.len() <= end + len, "bytes after an HTTP error response");
        return;
    }
    let mut decoder = Decoder::new(Role::Client, usize::MAX >> 1);
    if let Some(value) = header("sec-websocket-extensions") {
        let params = parse_server_response(value.as_bytes(), client_cfg)
            .unwrap_or_else(|e| panic!("the server's extension answer is invalid: {e}"));
        decoder.set_inflater(Inflater::new(params, Role::Client));
    }
    let mut frames = out[end..].to_vec();
    let mut pos = 0;
    while pos < frames.len() {
        match decoder.decode(&mut frames[pos..]) {
            Err(e) => panic!("the server sent an invalid frame: {e}"),
            Ok(Decoded::Incomplete { .. }) => return,
            Ok(Decoded::Frame { len, event }) => {
                let close = matches!(event, Some(Event::Close(..)));
                pos += len;
                if close {
                    assert_eq!(
                        pos,
                        frames.len(),
                        "the server sent bytes after its close frame"
                    );
                }
            }
            Ok(other) => unreachable!("a result the harness does not know: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) A server connection in memory
// ---------------------------------------------------------------------------------------------

/// What a connection told its owner, owned and condensed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// A request head, and whether answering it opened the connection.
    Request(bool),
    Message(Seen),
    Ping(Seen),
    Pong(Seen),
    /// Why it closed, as `CloseReason`'s `Debug`.
    Closed(String),
    Opened(Option<String>),
    Refused(String),
}

/// What a server connection made of a stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub events: Vec<Happened>,
    /// Everything it wrote.
    pub out: Vec<u8>,
    /// The messages it echoed (sends that were accepted).
    pub echoed: Vec<Seen>,
}

/// Writes out everything `conn` queued.
fn drain(conn: &mut Connection, ep: &mut Endpoint, out: &mut Vec<u8>) {
    while !conn.transmit().is_empty() {
        out.extend_from_slice(conn.transmit());
        let n = conn.transmit().len();
        conn.advance(ep, n);
    }
}

/// A connection's event as a [`Happened`] (a request is answered by the caller).
fn happened(event: &ConnEvent<'_>, max: usize) -> Happened {
    let seen = |p: &[u8]| {
        assert!(p.len() <= 125, "{}-byte control frame", p.len());
        Seen::Ping(p.len(), fnv(p))
    };
    match *event {
        ConnEvent::Message(msg) => {
            let bytes = msg.as_bytes();
            assert!(
                bytes.len() <= max,
                "a {}-byte message past the {max}-byte limit",
                bytes.len()
            );
            Happened::Message(Seen::message(matches!(msg, Message::Text(_)), bytes))
        }
        ConnEvent::Ping(p) => Happened::Ping(seen(p)),
        ConnEvent::Pong(p) => Happened::Pong(seen(p)),
        ConnEvent::Closed(why) => Happened::Closed(format!("{why:?}")),
        ConnEvent::Opened { protocol } => Happened::Opened(protocol.map(str::to_owned)),
        ConnEvent::Refused(ref why) => Happened::Refused(why.to_string()),
        ConnEvent::Request(_) => Happened::Request(false),
        ref other => panic!("an event the harness does not know: {other:?}"),
    }
}

/// A server-role connection fed `reads` (all at `now`), answering the upgrade (403 if `flags`
/// has 0x10, else accepting, with subprotocol `chat` if offered), echoing messages if `flags`
/// has 0x20, writing out what it queues after every event; then its deadlines ten minutes
/// later, then the end of the stream.
pub fn serve<'b>(
    config: &ConnectionConfig,
    now: Instant,
    reads: impl IntoIterator<Item = &'b [u8]>,
    flags: u8,
) -> Served {
    let max = config.max_message_size;
    // A queue under its bound takes one more frame of up to the larger of max_write_buffer
    // and max_message_size; control frames may pass it: a pong and a close frame at most.
    let one_frame = config.max_write_buffer.max(config.max_message_size) + 14;
    let bound = config.max_write_buffer + one_frame + 2 * (14 + 125);
    let mut ep = Endpoint::new(config.clone(), now);
    let mut conn = Connection::server(&mut ep);
    let mut served = Served::default();
    for read in reads {
        let mut bytes = read.to_vec();
        conn.recv(&mut ep, now, &mut bytes, |conn, ep, event| {
            let happened = match event {
                ConnEvent::Request(head) => Happened::Request(conn.answer(ep, head, |req| {
                    if flags & 0x10 != 0 {
                        return Err(HttpResponse::text(403, "refused"));
                    }
                    exercise_request(req);
                    Ok(req.protocols().find(|p| *p == "chat").map(str::to_owned))
                })),
                ConnEvent::Message(msg) => {
                    let seen = happened(&event, max);
                    if flags & 0x20 != 0 && conn.send(ep, msg).is_ok() {
                        let text = matches!(msg, Message::Text(_));
                        served.echoed.push(Seen::message(text, msg.as_bytes()));
                    }
                    seen
                }
                ConnEvent::Opened { .. } | ConnEvent::Refused(_) => {
                    panic!("a server connection gave {event:?}")
                }
                _ => happened(&event, max),
            };
            served.events.push(happened);
            assert!(conn.buffered() <= bound, "{} B queued", conn.buffered());
            drain(conn, ep, &mut served.out);
        });
        drain(&mut conn, &mut ep, &mut served.out);
    }
    let later = now + Duration::from_secs(600);
    if let Some(event) = conn.handle_timeout(&mut ep, later) {
        served.events.push(happened(&event, max));
    }
    drain(&mut conn, &mut ep, &mut served.out);
    if let Some(event) = conn.handle_disconnect(&mut ep) {
        served.events.push(happened(&event, max));
    }
    assert!(conn.is_finished());
    served
}

/// Harness (d): a server-role `Connection` in memory.
///
/// Flags: 0x01 our client `Connection`'s upgrade request first, 0x02 offering
/// permessage-deflate, 0x40 and subprotocol `chat`; 0x04 frames from records (masked); 0x08 the
/// server's permessage-deflate has context takeover (else the default); 0x10 the server refuses
/// the upgrade; 0x20 it echoes messages. Knobs: 0x01 a 1 KiB write queue, 0x02 that refuses
/// sends rather than closing, 0x04 deflate windows of 9 + (knobs >> 4) % 6 bits both ways. Then a u16 (the limit is 125 + it), the read sizes, the stream.
pub fn connection(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let knobs = input.byte();
    let max = 125 + usize::from(input.u16());
    let sizes = read_sizes(&mut input);
    let mut server_deflate = match flags & 0x08 {
        0 => DeflateConfig::default(),
        _ => lenient_client_config(),
    };
    if knobs & 0x04 != 0 {
        // Windows under 15 bits, so that inflate checks back-references against them.
        let bits = 9 + (knobs >> 4) % 6;
        server_deflate.server_max_window_bits = bits;
        server_deflate.client_max_window_bits = bits;
    }
    let config = ConnectionConfig::default()
        .max_message_size(max)
        .max_handshake_size(4096)
        .max_write_buffer(if knobs & 0x01 != 0 { 1024 } else { 256 << 10 })
        .on_overflow(match knobs & 0x02 {
            0 => Overflow::Close,
            _ => Overflow::Refuse,
        })
        .deflate(Some(server_deflate));
    let now = Instant::now();

    let mut stream = Vec::new();
    let mut client = (flags & 0x01 != 0).then(|| our_client(flags, "/", now, &mut stream));
    match flags & 0x04 {
        0 => stream.extend_from_slice(input.rest()),
        _ => stream.extend(build_frames(input.rest(), Role::Server, None)),
    }

    let reads = chunks(&stream, &sizes);
    let (split, peak) = measure(|| serve(&config, now, reads, flags));
    // Fragments and inflate output (doubling), the write queue, the compressors' state, the
    // harness's copies of the stream and of what was written; never what a header announces.
    let bound = 4 * max + 8 * stream.len() + 2 * split.out.len() + (4 << 20);
    assert!(
        peak <= bound,
        "the connection held {peak} B (bound {bound})"
    );
    let whole = serve(&config, now, [&stream[..]], flags);
    assert_eq!(
        split, whole,
        "the connection depends on where the reads split"
    );

    check_server_output(&split.out, &lenient_client_config());
    if let Some((ep, conn)) = client.as_mut() {
        client_reads_server(ep, conn, now, &split, flags, knobs);
    }
}

/// Our client `Connection` for `path`, offering subprotocol `chat` (if `flags` has 0x40) and
/// permessage-deflate (0x02); its upgrade request is appended to `out`.
fn our_client(flags: u8, path: &str, now: Instant, out: &mut Vec<u8>) -> (Endpoint, Connection) {
    let deflate = (flags & 0x02 != 0).then(lenient_client_config);
    let config = ConnectionConfig::default()
        .max_message_size(1 << 24)
        .deflate(deflate);
    let mut ep = Endpoint::new(config, now);
    let protocols: &[&str] = if flags & 0x40 != 0 { &["chat"] } else { &[] };
    let mut conn = Connection::client(&mut ep, "fuzz", path, protocols);
    drain(&mut conn, &mut ep, out);
    (ep, conn)
}

/// Our client `Connection` (whose request the server got) reads `out`, what the server wrote:
/// every frame in it must be valid. Returns what the client saw, the upgrade's outcome first.
fn client_reads(
    ep: &mut Endpoint,
    conn: &mut Connection,
    now: Instant,
    out: &[u8],
) -> Vec<Happened> {
    let mut out = out.to_vec();
    let mut got = Vec::new();
    conn.recv(ep, now, &mut out, |_, _, event| {
        got.push(happened(&event, 1 << 24))
    });
    let invalid =
        |h: &Happened| matches!(h, Happened::Closed(why) if why.starts_with("ProtocolError"));
    assert!(
        !got.iter().any(invalid),
        "the server sent an invalid frame: {got:?}"
    );
    got
}

/// Our client `Connection`, which sent the request, reads what the server wrote: the upgrade's
/// outcome must match the server's answer, the frames must be valid, and it must get exactly
/// the echoes (and a pong for each ping, when the queue is large enough to hold them).
fn client_reads_server(
    ep: &mut Endpoint,
    conn: &mut Connection,
    now: Instant,
    served: &Served,
    flags: u8,
    knobs: u8,
) {
    let got = client_reads(ep, conn, now, &served.out);
    let accepted = match served.events.first() {
        Some(Happened::Request(accepted)) => *accepted,
        other => panic!("our request was not seen whole: {other:?}"),
    };
    let mut got = got.into_iter();
    match got.next() {
        Some(Happened::Opened(protocol)) if accepted => {
            let chat = (flags & 0x40 != 0).then(|| "chat".to_owned());
            assert_eq!(protocol, chat, "the subprotocol");
        }
        Some(Happened::Refused(status)) if !accepted => {
            assert!(
                status.starts_with("server answered 4"),
                "refused with {status:?}"
            );
        }
        other => panic!("the server accepted: {accepted}, our client saw {other:?}"),
    }
    let rest: Vec<Happened> = got.collect();
    let messages: Vec<Seen> = (rest.iter())
        .filter_map(|h| match h {
            Happened::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, served.echoed, "the echoes");
    if knobs & 0x01 == 0 {
        let pings = served
            .events
            .iter()
            .filter(|h| matches!(h, Happened::Ping(_)));
        let pongs = rest.iter().filter(|h| matches!(h, Happened::Pong(_)));
        let pong = |h: &Happened| match h {
            Happened::Ping(s) | Happened::Pong(s) => s.clone(),
            _ => unreachable!(),
        };
        assert!(pings.map(pong).eq(pongs.map(pong)), "a ping's pong");
    }
}
