//! Load generator: opens N WebSocket connections, keeps K messages in flight on each, verifies
//! every echo byte for byte and reports messages per second, MB/s and latency percentiles.
//!
//! ```text
//! cargo run --release --example load -- ws://127.0.0.1:9001/ --conns 100 --inflight 1 \
//!     --size 16 --seconds 10 [--binary] [--deflate] [--connect-only] [--raw-echo]
//! ```
//!
//! One thread and one `mio::Poll` drive every connection, with wsloop's sans-IO protocol core in
//! the client role (frames are masked). Works against any RFC 6455 echo server.
//!
//! - Every message is stamped with its connection and sequence number (hex digits in its first
//!   16 bytes) and cut at a per-message offset out of a fixed pattern, so a wrong, reordered or
//!   corrupted echo is caught. Echoes must come back in order on each connection.
//! - Latency is from the moment a message is queued (its write follows within the same turn)
//!   to the moment its echo is read and verified, in a log-bucketed histogram (about 3%).
//! - Connections are opened at most `--connect-concurrency` (default 128) at a time so that the
//!   server's accept backlog is not overrun; messages start once all are open (or failed), and
//!   only echoes read within the `--seconds` window are counted. Then sending stops, the
//!   outstanding echoes are awaited (any not back count as errors) and every connection is
//!   closed with a close frame.
//! - `--connect-only` opens the connections, prints `all connections established` on stderr,
//!   holds them idle for `--seconds` (answering pings) and reports how many were established.
//! - `--raw-echo` is for a raw TCP echo (`benches/peers` `raw_echo`) as a ceiling: no handshake,
//!   and the server's bytes are expected to be our own masked frames, which are unmasked and
//!   verified like any echo.
//! - `--deflate` offers permessage-deflate (no context takeover either way); messages are
//!   compressed when it is accepted, and compressed echoes are inflated.
//!
//! Progress goes to stderr once a second; the summary to stdout, ending with one line of
//! `key=value` pairs: `conns= size= inflight= seconds= msgs_per_s= mbytes_per_s= p50_us= p99_us=
//! p999_us= errors=` (MB are 10^6 bytes of echoed payload).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use wsloop::proto::deflate::{
    client_offer, parse_server_response, DeflateConfig, Deflater, Inflater,
};
#[path = "support/fd_limit.rs"]
mod fd_limit;
#[path = "load/pattern.rs"]
mod pattern;
#[path = "support/seed.rs"]
mod seed;
use fd_limit::raise_fd_limit;
use pattern::make_pattern;
use wsloop::proto::frame::{apply_mask, write_frame, FrameHeader, OpCode, MAX_HEADER_LEN};
use wsloop::proto::handshake::{check_response, new_key, write_request, HeadScanner};
use wsloop::proto::message::{Decoded, Decoder, Event};
use wsloop::proto::{CloseCode, Role};

const USAGE: &str = "usage: load ws://HOST:PORT/PATH [--conns N] [--inflight K] [--size BYTES] \
[--seconds S] [--binary] [--deflate] [--connect-only] [--raw-echo] [--connect-concurrency N] \
[--connect-timeout S] [--server-pid PID]";

/// Bytes asked for by one read, at least.
const MIN_READ: usize = 16 * 1024;
/// Size of a connection's read buffer when it is first needed.
const READ_BUF: usize = 64 * 1024;
/// How long, after the window, outstanding echoes are awaited.
const DRAIN: Duration = Duration::from_secs(3);
/// Bytes of the per-message stamp (connection and sequence number in hex).
const STAMP: usize = 16;
/// How many different cuts of the pattern messages are taken from.
const SHIFTS: u64 = 61;

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("load: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    check_fd_limit(args.conns);
    match run(args) {
        Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(1);
        }
    }
}

/// Command-line options.
#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    /// `Host` header value.
    host: String,
    path: String,
    conns: usize,
    inflight: usize,
    size: usize,
    seconds: f64,
    binary: bool,
    deflate: bool,
    connect_only: bool,
    raw_echo: bool,
    connect_concurrency: usize,
    connect_timeout: f64,
    /// The server's process, whose CPU time over the window is reported.
    server_pid: Option<u32>,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut url = None;
        let mut a = Args {
            addr: SocketAddr::from(([127, 0, 0, 1], 9001)),
            host: String::new(),
            path: "/".into(),
            conns: 100,
            inflight: 1,
            size: 16,
            seconds: 10.0,
            binary: false,
            deflate: false,
            connect_only: false,
            raw_echo: false,
            connect_concurrency: 128,
            connect_timeout: 60.0,
            server_pid: None,
        };
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--conns" => a.conns = number(&value("--conns")?)?,
                "--inflight" => a.inflight = number(&value("--inflight")?)?,
                "--size" => a.size = size(&value("--size")?)?,
                "--seconds" => a.seconds = number(&value("--seconds")?)?,
                "--connect-concurrency" => {
                    a.connect_concurrency = number(&value("--connect-concurrency")?)?
                }
                "--connect-timeout" => a.connect_timeout = number(&value("--connect-timeout")?)?,
                "--server-pid" => a.server_pid = Some(number(&value("--server-pid")?)?),
                "--binary" => a.binary = true,
                "--deflate" => a.deflate = true,
                "--connect-only" => a.connect_only = true,
                "--raw-echo" => a.raw_echo = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                s if s.starts_with("--") => return Err(format!("unknown option {s}")),
                s if url.is_none() => url = Some(s.to_owned()),
                s => return Err(format!("unexpected argument {s:?}")),
            }
        }
        let url = url.unwrap_or_else(|| "ws://127.0.0.1:9001/".into());
        let rest = match url.strip_prefix("ws://") {
            Some(rest) => rest,
            None if url.starts_with("wss://") => return Err("wss:// is not supported".into()),
            None => return Err(format!("{url:?} is not a ws:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        a.addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority}: no address"))?;
        a.host = authority.to_owned();
        a.path = path.to_owned();
        if a.conns == 0 || a.inflight == 0 || a.connect_concurrency == 0 {
            return Err("--conns, --inflight and --connect-concurrency must be at least 1".into());
        }
        if a.seconds.is_nan()
            || a.seconds <= 0.0
            || a.connect_timeout.is_nan()
            || a.connect_timeout <= 0.0
        {
            return Err("--seconds and --connect-timeout must be positive".into());
        }
        if a.raw_echo && a.deflate {
            return Err("--raw-echo and --deflate exclude each other".into());
        }
        Ok(a)
    }
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))
}

/// A size in bytes, with an optional `k`/`KiB`/`m`/`MiB` suffix (powers of 1024).
fn size(s: &str) -> Result<usize, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&lower[..i], &lower[i..]),
        None => (lower.as_str(), ""),
    };
    let unit = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("{s:?}: unknown unit")),
    };
    number::<usize>(digits).map(|n| n * unit)
}

/// Raises the open-file limit, and says so if it is still too low for `conns` connections.
fn check_fd_limit(conns: usize) {
    if let Some(limit) = raise_fd_limit().filter(|&l| l < conns as libc::rlim_t + 32) {
        eprintln!(
            "load: warning: {conns} connections need as many file descriptors, but the limit \
             is {limit}; raise it with `ulimit -n` (as root)"
        );
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The TCP connect is in progress.
    Connecting,
    /// The upgrade request is sent; waiting for the answer.
    Handshake,
    /// Messages flow.
    Open,
    /// Our close frame is sent; waiting for the server's.
    Closing,
}

/// One client connection.
struct Conn {
    sock: TcpStream,
    state: State,
    /// Received bytes in `rbuf[rs..re]`.
    rbuf: Vec<u8>,
    rs: usize,
    re: usize,
    /// Bytes to send in `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    decoder: Decoder,
    scanner: HeadScanner,
    /// The handshake's `Sec-WebSocket-Key`.
    key: String,
    /// Sequence number of the next message to send.
    sent: u64,
    /// Sequence number of the next echo expected.
    acked: u64,
    /// When each in-flight message was queued, at `seq % inflight`.
    sent_at: Box<[Instant]>,
    /// Its own compressor, when the server keeps context or picked other window bits than the
    /// shared one has.
    deflater: Option<Box<Deflater>>,
}

/// What every connection shares: the options, the message pattern, scratch buffers, counters.
struct Shared {
    args: Args,
    opcode: OpCode,
    /// Messages are cut from this at an offset below `SHIFTS`.
    pattern: Vec<u8>,
    rng: u64,
    /// The shared compressor (no client context takeover) and its window bits.
    deflater: Option<(Deflater, u8)>,
    /// Scratch for a message before compression, and for its compressed payload.
    raw: Vec<u8>,
    zbuf: Vec<u8>,
    /// New messages are sent while this is set.
    sending: bool,
    /// The measurement window.
    start: Instant,
    end: Instant,
    hist: Histogram,
    /// Echoes verified within the window.
    counted: u64,
    /// Echoes verified in total, and at the last progress report.
    echoed: u64,
    established: usize,
    failed: usize,
    closed: usize,
    errors: u64,
    /// The first few error messages, for the summary.
    first_errors: Vec<String>,
}

impl Shared {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(what);
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        // xorshift64*: fast and different for every frame, which is all masking needs here.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 32).to_le_bytes()[..4]
            .try_into()
            .unwrap_or([1, 2, 3, 4])
    }
}

/// The first `STAMP` bytes of message `seq` on connection `conn`: hex digits, low nibble first.
fn stamp(conn: usize, seq: u64) -> [u8; STAMP] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = seq ^ ((conn as u64) << 40);
    let mut out = [0u8; STAMP];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (4 * i)) & 15) as usize];
    }
    out
}

/// Where in the pattern message `seq` of connection `conn` is cut from.
fn shift(conn: usize, seq: u64) -> usize {
    (seq.wrapping_mul(7).wrapping_add(conn as u64) % SHIFTS) as usize
}

/// Whether `payload` is exactly message `seq` of connection `conn`.
fn verify(sh: &Shared, conn: usize, seq: u64, payload: &[u8]) -> bool {
    let size = sh.args.size;
    if payload.len() != size {
        return false;
    }
    let k = size.min(STAMP);
    let off = shift(conn, seq);
    payload[..k] == stamp(conn, seq)[..k] && payload[k..] == sh.pattern[off + k..off + size]
}

/// Appends message `seq` of connection `index` to `wbuf`, masked, compressed if negotiated.
fn encode(sh: &mut Shared, own: Option<&mut Deflater>, wbuf: &mut Vec<u8>, index: usize, seq: u64) {
    let size = sh.args.size;
    let off = shift(index, seq);
    let k = size.min(STAMP);
    let stamp = stamp(index, seq);
    let mask = sh.mask();
    let deflater = match own {
        Some(d) => Some(d),
        None => sh.deflater.as_mut().map(|(d, _)| d),
    };
    if let Some(d) = deflater {
        sh.raw.clear();
        sh.raw.extend_from_slice(&sh.pattern[off..off + size]);
        sh.raw[..k].copy_from_slice(&stamp[..k]);
        sh.zbuf.clear();
        d.deflate(&sh.raw, &mut sh.zbuf);
        write_frame(wbuf, sh.opcode, true, true, Some(mask), &sh.zbuf);
        return;
    }
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        opcode: sh.opcode,
        mask: Some(mask),
        payload_len: size as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    wbuf.extend_from_slice(&head[..n]);
    let start = wbuf.len();
    wbuf.extend_from_slice(&sh.pattern[off..off + size]);
    wbuf[start..start + k].copy_from_slice(&stamp[..k]);
    apply_mask(&mut wbuf[start..], mask, 0);
}

/// Queues messages on an open connection until `inflight` are outstanding.
fn fill(sh: &mut Shared, conn: &mut Conn, index: usize, now: Instant) {
    let k = sh.args.inflight as u64;
    while conn.sent - conn.acked < k {
        let seq = conn.sent;
        encode(sh, conn.deflater.as_deref_mut(), &mut conn.wbuf, index, seq);
        conn.sent_at[(seq % k) as usize] = now;
        conn.sent += 1;
    }
}

fn run(args: Args) -> Result<bool, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut rng = seed::seed();
    let pattern = make_pattern(args.size + SHIFTS as usize, args.binary, &mut rng);
    let now = Instant::now();
    let mut sh = Shared {
        opcode: if args.binary {
            OpCode::Binary
        } else {
            OpCode::Text
        },
        pattern,
        rng,
        deflater: None,
        raw: Vec::new(),
        zbuf: Vec::new(),
        sending: false,
        start: now,
        end: now,
        hist: Histogram::default(),
        counted: 0,
        echoed: 0,
        established: 0,
        failed: 0,
        closed: 0,
        errors: 0,
        first_errors: Vec::new(),
        args,
    };
    let n = sh.args.conns;
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(n);

    // Phase 1: connect, a bounded number at a time.
    let began = Instant::now();
    let connect_deadline = began + Duration::from_secs_f64(sh.args.connect_timeout);
    let mut last_report = began;
    while sh.established + sh.failed < n {
        while conns.len() < n
            && conns.len() - sh.established - sh.failed < sh.args.connect_concurrency
        {
            let index = conns.len();
            match open(&poll, &sh, index) {
                Ok(conn) => conns.push(Some(conn)),
                Err(e) => {
                    conns.push(None);
                    sh.failed += 1;
                    let hint = if e.raw_os_error() == Some(libc::EMFILE) {
                        " (raise the limit with `ulimit -n`)"
                    } else {
                        ""
                    };
                    sh.error(format!("connect: {e}{hint}"));
                }
            }
        }
        let now = Instant::now();
        if now >= connect_deadline {
            let late = conns
                .iter()
                .filter(|c| c.as_ref().is_some_and(|c| c.state != State::Open))
                .count();
            sh.error(format!(
                "{late} connections not open after --connect-timeout"
            ));
            sh.failed += late;
            for slot in &mut conns {
                if slot.as_ref().is_some_and(|c| c.state != State::Open) {
                    *slot = None;
                }
            }
            break;
        }
        if now - last_report >= Duration::from_secs(1) {
            last_report = now;
            eprintln!(
                "[{:5.1}s] connecting: {} open, {} failed of {n}",
                (now - began).as_secs_f64(),
                sh.established,
                sh.failed
            );
        }
        turn(
            &mut poll,
            &mut events,
            &mut conns,
            &mut sh,
            Duration::from_millis(100),
        );
    }
    let connect_secs = began.elapsed().as_secs_f64();
    eprintln!(
        "all connections established: {} open, {} failed, in {connect_secs:.2} s",
        sh.established, sh.failed
    );
    if sh.args.connect_only {
        return hold(&mut poll, &mut events, &mut conns, &mut sh, connect_secs);
    }

    // Phase 2: the measurement window.
    let window = Duration::from_secs_f64(sh.args.seconds);
    sh.start = Instant::now();
    sh.end = sh.start + window;
    sh.sending = true;
    let now = sh.start;
    for (index, slot) in conns.iter_mut().enumerate() {
        if let Some(conn) = slot.as_mut().filter(|c| c.state == State::Open) {
            fill(&mut sh, conn, index, now);
            if let Err(e) = flush(conn) {
                sh.error(format!("conn {index}: write: {e}"));
                *slot = None;
            }
        }
    }
    let cpu0 = cpu_times(sh.args.server_pid);
    let mut last = (sh.start, 0u64);
    loop {
        let now = Instant::now();
        if now >= sh.end {
            break;
        }
        if now - last.0 >= Duration::from_secs(1) && sh.args.seconds > 2.0 {
            let dt = (now - last.0).as_secs_f64();
            let rate = (sh.echoed - last.1) as f64 / dt;
            eprintln!(
                "[{:5.1}s] {:.0} msg/s, {:.2} MB/s, p50 {:.1} us, p99 {:.1} us, {} conns, {} errors",
                (now - sh.start).as_secs_f64(),
                rate,
                rate * sh.args.size as f64 / 1e6,
                sh.hist.percentile(0.5) as f64 / 1e3,
                sh.hist.percentile(0.99) as f64 / 1e3,
                conns.iter().flatten().count(),
                sh.errors
            );
            last = (now, sh.echoed);
        }
        let wait = (sh.end - now).min(Duration::from_millis(100));
        turn(&mut poll, &mut events, &mut conns, &mut sh, wait);
    }
    let elapsed = sh.end - sh.start;
    let cpu1 = cpu_times(sh.args.server_pid);
    let cpu = CpuUse {
        client: cpu1.0 - cpu0.0,
        server: cpu0.1.zip(cpu1.1).map(|(a, b)| b - a),
        machine: cpu0.2.zip(cpu1.2).map(|(a, b)| b - a),
    };

    // Phase 3: stop sending, wait for the outstanding echoes, close.
    sh.sending = false;
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && conns.iter().flatten().any(|c| c.acked < c.sent) {
        turn(
            &mut poll,
            &mut events,
            &mut conns,
            &mut sh,
            Duration::from_millis(50),
        );
    }
    let lost: u64 = conns.iter().flatten().map(|c| c.sent - c.acked).sum();
    if lost > 0 {
        sh.error(format!("{lost} echoes not received"));
        sh.errors += lost - 1;
    }
    close_all(&mut poll, &mut events, &mut conns, &mut sh);
    report(&sh, elapsed, cpu);
    Ok(sh.errors == 0)
}

/// `--connect-only`: holds the connections idle for `--seconds`, then reports.
fn hold(
    poll: &mut Poll,
    events: &mut Events,
    conns: &mut [Option<Conn>],
    sh: &mut Shared,
    connect_secs: f64,
) -> Result<bool, String> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(sh.args.seconds);
    let mut last = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now - last >= Duration::from_secs(5) {
            last = now;
            eprintln!(
                "[{:5.1}s] holding {} connections",
                (now - start).as_secs_f64(),
                conns.iter().flatten().count()
            );
        }
        turn(
            poll,
            events,
            conns,
            sh,
            (end - now).min(Duration::from_millis(500)),
        );
    }
    let alive = conns.iter().flatten().count();
    if alive < sh.established {
        sh.error(format!(
            "{} connections dropped while idle",
            sh.established - alive
        ));
    }
    close_all(poll, events, conns, sh);
    println!("connect-only: {} of {} connections established in {connect_secs:.2} s, {alive} still open after {:.1} s idle",
        sh.established, sh.args.conns, sh.args.seconds);
    for e in &sh.first_errors {
        println!("  error: {e}");
    }
    println!(
        "mode=connect-only conns={} established={} alive={} seconds={} connect_s={connect_secs:.2} errors={}",
        sh.args.conns, sh.established, alive, sh.args.seconds, sh.errors
    );
    Ok(sh.errors == 0)
}

/// Sends a close frame on every open connection and waits up to a second for the answers.
fn close_all(poll: &mut Poll, events: &mut Events, conns: &mut [Option<Conn>], sh: &mut Shared) {
    sh.sending = false;
    let mut closing = 0;
    for (index, slot) in conns.iter_mut().enumerate() {
        let Some(conn) = slot.as_mut() else { continue };
        if conn.state != State::Open || sh.args.raw_echo {
            *slot = None;
            continue;
        }
        let mut payload = [0u8; 2];
        payload.copy_from_slice(&CloseCode::NORMAL.0.to_be_bytes());
        let mask = sh.mask();
        write_frame(
            &mut conn.wbuf,
            OpCode::Close,
            true,
            false,
            Some(mask),
            &payload,
        );
        conn.state = State::Closing;
        closing += 1;
        if flush(conn).is_err() {
            let _ = index;
            *slot = None;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while closing > 0 && Instant::now() < deadline && conns.iter().any(Option::is_some) {
        turn(poll, events, conns, sh, Duration::from_millis(50));
    }
}

/// Opens connection `index`.
fn open(poll: &Poll, sh: &Shared, index: usize) -> io::Result<Conn> {
    let mut sock = TcpStream::connect(sh.args.addr)?;
    poll.registry().register(
        &mut sock,
        Token(index),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let max = sh.args.size.max(1 << 20).saturating_mul(2);
    let role = if sh.args.raw_echo {
        // The raw echo returns our masked frames: decode them as a server would.
        Role::Server
    } else {
        Role::Client
    };
    Ok(Conn {
        sock,
        state: State::Connecting,
        rbuf: Vec::new(),
        rs: 0,
        re: 0,
        wbuf: Vec::new(),
        wpos: 0,
        decoder: Decoder::new(role, max),
        scanner: HeadScanner::default(),
        key: String::new(),
        sent: 0,
        acked: 0,
        sent_at: Box::new([]),
        deflater: None,
    })
}

/// Polls once and services every connection with an event.
fn turn(
    poll: &mut Poll,
    events: &mut Events,
    conns: &mut [Option<Conn>],
    sh: &mut Shared,
    timeout: Duration,
) {
    if let Err(e) = poll.poll(events, Some(timeout)) {
        if e.kind() != io::ErrorKind::Interrupted {
            sh.error(format!("poll: {e}"));
        }
        return;
    }
    for event in events.iter() {
        let index = event.token().0;
        let Some(slot) = conns.get_mut(index) else {
            continue;
        };
        let Some(conn) = slot.as_mut() else { continue };
        let was = conn.state;
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let result = service(sh, conn, index, readable);
        let now = conn.state;
        match result {
            Ok(true) => {}
            Ok(false) => {
                // Closed cleanly after our close frame.
                sh.closed += 1;
                *slot = None;
            }
            Err(e) => {
                if matches!(was, State::Connecting | State::Handshake) {
                    sh.failed += 1;
                }
                sh.error(format!("conn {index}: {e}"));
                *slot = None;
                continue;
            }
        }
        if now == State::Open && matches!(was, State::Connecting | State::Handshake) {
            sh.established += 1;
        }
    }
}

/// Handles readiness of one connection. `Ok(false)` when it is done (closed cleanly).
fn service(sh: &mut Shared, conn: &mut Conn, index: usize, readable: bool) -> Result<bool, String> {
    if conn.state == State::Connecting {
        if let Some(e) = conn.sock.take_error().map_err(|e| e.to_string())? {
            return Err(format!("connect: {e}"));
        }
        match conn.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(true),
            Err(e) => return Err(format!("connect: {e}")),
        }
        let _ = conn.sock.set_nodelay(true);
        if sh.args.raw_echo {
            opened(sh, conn);
        } else {
            conn.key = new_key();
            let offer = sh
                .args
                .deflate
                .then(|| client_offer(&DeflateConfig::default()));
            write_request(
                &mut conn.wbuf,
                &sh.args.host,
                &sh.args.path,
                &conn.key,
                &[],
                offer.as_deref(),
            );
            conn.state = State::Handshake;
        }
    }
    if readable {
        let alive = read(sh, conn, index)?;
        if !alive {
            return Ok(false);
        }
    }
    flush(conn).map_err(|e| format!("write: {e}"))?;
    if sh.args.connect_only {
        // Idle connections keep no buffers.
        if conn.rs == conn.re && !conn.rbuf.is_empty() {
            conn.rbuf = Vec::new();
            (conn.rs, conn.re) = (0, 0);
        }
        if conn.wbuf.capacity() > 0 && conn.wbuf.is_empty() {
            conn.wbuf = Vec::new();
        }
    }
    Ok(true)
}

/// The connection is open: it gets its in-flight slots.
fn opened(sh: &Shared, conn: &mut Conn) {
    conn.state = State::Open;
    if !sh.args.connect_only {
        conn.sent_at = vec![Instant::now(); sh.args.inflight].into_boxed_slice();
    }
}

/// Reads until the socket is drained and handles what came. `Ok(false)` once the server has
/// closed after our close frame.
fn read(sh: &mut Shared, conn: &mut Conn, index: usize) -> Result<bool, String> {
    loop {
        let initial = if sh.args.connect_only { 4096 } else { READ_BUF };
        room(conn, MIN_READ.min(initial), initial);
        let space = conn.rbuf.len() - conn.re;
        match conn.sock.read(&mut conn.rbuf[conn.re..]) {
            Ok(0) if conn.state == State::Closing => return Ok(false),
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => {
                conn.re += n;
                if !handle(sh, conn, index)? {
                    return Ok(false);
                }
                // A short read drained the socket: edge-triggered readiness reports the next
                // arrival, so the read that would say `WouldBlock` is not needed.
                if n < space {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if conn.state == State::Closing => {
                let _ = e;
                return Ok(false);
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Makes room in the read buffer for `want` more bytes after the kept ones (allocating
/// `initial` bytes the first time).
fn room(conn: &mut Conn, want: usize, initial: usize) {
    if conn.rbuf.is_empty() {
        conn.rbuf = vec![0; initial.max(want)];
        (conn.rs, conn.re) = (0, 0);
    }
    if conn.rbuf.len() - conn.re >= want {
        return;
    }
    let kept = conn.re - conn.rs;
    if conn.rs > 0 {
        conn.rbuf.copy_within(conn.rs..conn.re, 0);
        (conn.rs, conn.re) = (0, kept);
    }
    if conn.rbuf.len() - conn.re < want {
        let len = (kept + want).max(2 * conn.rbuf.len());
        conn.rbuf.resize(len, 0);
    }
}

/// Handles the bytes in `rbuf[rs..re]`: the handshake answer, then frames. `Ok(false)` once
/// the server's close frame answered ours.
fn handle(sh: &mut Shared, conn: &mut Conn, index: usize) -> Result<bool, String> {
    let now = Instant::now();
    if conn.state == State::Handshake {
        let Some(end) = conn.scanner.find_end(&conn.rbuf[conn.rs..conn.re]) else {
            if conn.re - conn.rs > 16 * 1024 {
                return Err("handshake answer too long".into());
            }
            return Ok(true);
        };
        let head = &conn.rbuf[conn.rs..conn.rs + end];
        let accepted =
            check_response(head, &conn.key, &[]).map_err(|e| format!("handshake: {e}"))?;
        conn.rs += end;
        match (&accepted.extensions, sh.args.deflate) {
            (None, _) => {}
            (Some(ext), true) => {
                let params = parse_server_response(ext.as_bytes(), &DeflateConfig::default())
                    .map_err(|e| format!("handshake: {e}"))?;
                conn.decoder
                    .set_inflater(Inflater::new(params, Role::Client));
                let level = DeflateConfig::default().level;
                let bits = params.client_max_window_bits;
                let shared = params.client_no_context_takeover;
                match &sh.deflater {
                    None if shared => {
                        sh.deflater = Some((Deflater::new(params, Role::Client, level), bits))
                    }
                    Some((_, b)) if shared && *b == bits => {}
                    _ => conn.deflater = Some(Box::new(Deflater::new(params, Role::Client, level))),
                }
            }
            (Some(ext), false) => {
                return Err(format!(
                    "handshake: server chose extensions {ext:?}, none offered"
                ))
            }
        }
        conn.key = String::new();
        opened(sh, conn);
        if sh.sending {
            fill(sh, conn, index, now);
        }
    }
    if matches!(conn.state, State::Open | State::Closing) {
        let k = sh.args.inflight as u64;
        let Conn {
            rbuf,
            rs,
            re,
            wbuf,
            decoder,
            state,
            sent,
            acked,
            sent_at,
            deflater,
            ..
        } = conn;
        loop {
            if *rs == *re {
                break;
            }
            match decoder.decode(&mut rbuf[*rs..*re]) {
                Err(e) => return Err(format!("protocol error: {e}")),
                Ok(Decoded::Incomplete { frame_len }) => {
                    if let Some(len) = frame_len {
                        if *rs + len > rbuf.len() {
                            // Make the whole frame fit (moving the kept bytes to the front).
                            let kept = *re - *rs;
                            rbuf.copy_within(*rs..*re, 0);
                            (*rs, *re) = (0, kept);
                            if rbuf.len() < len {
                                rbuf.resize(len.next_power_of_two(), 0);
                            }
                        }
                    }
                    break;
                }
                Ok(Decoded::Frame { len, event }) => {
                    match event {
                        None | Some(Event::Pong(_)) => {}
                        Some(Event::Text(_) | Event::Binary(_)) if *state == State::Closing => {}
                        Some(Event::Text(t)) if sh.opcode == OpCode::Text => {
                            let at = sent_at[(*acked % k) as usize];
                            echo(sh, index, t.as_bytes(), (*acked, *sent), at, now)?;
                            *acked += 1;
                        }
                        Some(Event::Binary(b)) if sh.opcode == OpCode::Binary => {
                            let at = sent_at[(*acked % k) as usize];
                            echo(sh, index, b, (*acked, *sent), at, now)?;
                            *acked += 1;
                        }
                        Some(Event::Text(_) | Event::Binary(_)) => {
                            return Err("echo of the wrong type (text for binary or back)".into())
                        }
                        Some(Event::Ping(p)) => {
                            let mask = sh.mask();
                            write_frame(wbuf, OpCode::Pong, true, false, Some(mask), p);
                        }
                        Some(Event::Close(code, reason)) => {
                            if *state == State::Closing {
                                return Ok(false);
                            }
                            return Err(format!("server closed: {code:?} {reason:?}"));
                        }
                    }
                    *rs += len;
                    if sh.sending && *state == State::Open && *sent - *acked < k {
                        // Replace the echoed message at once: the write follows this read.
                        if now < sh.end {
                            let seq = *sent;
                            encode(sh, deflater.as_deref_mut(), wbuf, index, seq);
                            sent_at[(seq % k) as usize] = now;
                            *sent += 1;
                        }
                    }
                }
            }
        }
        if *rs == *re {
            (*rs, *re) = (0, 0);
        }
    }
    Ok(true)
}

/// Checks the echo of message `seq` (sent at `at`) and records its latency if it came within
/// the window.
fn echo(
    sh: &mut Shared,
    index: usize,
    payload: &[u8],
    (seq, sent): (u64, u64),
    at: Instant,
    now: Instant,
) -> Result<(), String> {
    if seq >= sent {
        return Err("an echo of a message never sent".into());
    }
    if !verify(sh, index, seq, payload) {
        return Err(format!(
            "echo of message {seq} differs from what was sent ({} bytes back)",
            payload.len()
        ));
    }
    sh.echoed += 1;
    if sh.sending && now < sh.end {
        sh.counted += 1;
        sh.hist.record((now - at).as_nanos() as u64);
    }
    Ok(())
}

/// Writes what is queued until done or the socket is full.
fn flush(conn: &mut Conn) -> io::Result<()> {
    while conn.wpos < conn.wbuf.len() {
        match conn.sock.write(&conn.wbuf[conn.wpos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.wbuf.clear();
    conn.wpos = 0;
    Ok(())
}

/// CPU seconds used over the window.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    client: f64,
    server: Option<f64>,
    /// All cores, everything (this process, the server, anyone else, interrupts).
    machine: Option<f64>,
}

/// Busy CPU seconds of the whole machine (all cores, from `/proc/stat`).
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: user, nice, system and steal. Interrupt
    // time is left out: without IRQ time accounting the kernel charges the ticks that land in
    // softirq (loopback TCP delivery, much of it ours) to no process.
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(7)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (hz > 0.0).then(|| busy / hz)
}

/// CPU time (user + system, seconds) of this process, of `server` if given, and of the machine.
fn cpu_times(server: Option<u32>) -> (f64, Option<f64>, Option<f64>) {
    // SAFETY: getrusage only writes the struct passed to it; all-zero is a valid rusage.
    let own = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    (own, server.and_then(proc_cpu), machine_busy())
}

/// CPU time (utime + stime, seconds) of process `pid`, from `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): the state is field 3, utime and
    // stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (hz > 0.0).then(|| ticks / hz)
}

/// Prints the human summary and the `key=value` line.
fn report(sh: &Shared, elapsed: Duration, cpu: CpuUse) {
    let a = &sh.args;
    let secs = elapsed.as_secs_f64();
    let rate = sh.counted as f64 / secs;
    let mbps = rate * a.size as f64 / 1e6;
    let us = |p: f64| sh.hist.percentile(p) as f64 / 1e3;
    println!(
        "{} connections ({} failed), {} in flight each, {} B {} messages{}{}, {secs:.2} s",
        sh.established,
        sh.failed,
        a.inflight,
        a.size,
        if a.binary { "binary" } else { "text" },
        if a.deflate {
            ", permessage-deflate"
        } else {
            ""
        },
        if a.raw_echo { ", raw echo" } else { "" },
    );
    println!(
        "  {} echoes verified in the window: {rate:.0} msg/s, {mbps:.2} MB/s",
        sh.counted
    );
    println!(
        "  latency us: min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
        sh.hist.min() as f64 / 1e3,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        sh.hist.max as f64 / 1e3,
        sh.hist.mean() / 1e3
    );
    let client_pct = cpu.client / secs * 100.0;
    let (server_pct, server_us) = match cpu.server {
        Some(s) if sh.counted > 0 => (s / secs * 100.0, s * 1e6 / sh.counted as f64),
        _ => (f64::NAN, f64::NAN),
    };
    // What neither process was charged with: other processes (a benchmark on a busy machine is
    // worthless) and hypervisor steal.
    let other_pct = cpu.machine.map_or(f64::NAN, |m| {
        (m - cpu.client - cpu.server.unwrap_or(0.0)) / secs * 100.0
    });
    if cpu.server.is_some() {
        println!(
            "  server CPU: {server_pct:.0}% of a core, {server_us:.3} us per message; client CPU: \
             {client_pct:.0}%; everything else: {other_pct:.0}%"
        );
    } else {
        println!("  client CPU: {client_pct:.0}% of a core (--server-pid PID adds the server's)");
    }
    println!("  errors: {}", sh.errors);
    for e in &sh.first_errors {
        println!("    {e}");
    }
    println!(
        "conns={} size={} inflight={} seconds={secs:.2} msgs_per_s={rate:.0} mbytes_per_s={mbps:.2} \
         p50_us={:.1} p99_us={:.1} p999_us={:.1} errors={} server_cpu_us_per_msg={server_us:.3} \
         server_cpu_pct={server_pct:.1} client_cpu_pct={client_pct:.1} other_cpu_pct={other_pct:.1}",
        a.conns,
        a.size,
        a.inflight,
        us(0.5),
        us(0.99),
        us(0.999),
        sh.errors
    );
}

/// A log-bucketed histogram of nanoseconds: 32 buckets per power of two (error under 3.2%).
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 60 << SUB_BITS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

const SUB_BITS: u32 = 5;

impl Histogram {
    fn index(v: u64) -> usize {
        if v < (1 << SUB_BITS) {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        (((shift + 1) as usize) << SUB_BITS) + ((v >> shift) as usize & ((1 << SUB_BITS) - 1))
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < (1 << SUB_BITS) {
            return i as u64;
        }
        let shift = (i >> SUB_BITS) as u32 - 1;
        let sub = (i & ((1 << SUB_BITS) - 1)) as u64;
        (((1 << SUB_BITS) + sub) << shift) + ((1u64 << shift) >> 1)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }

    fn min(&self) -> u64 {
        self.counts
            .iter()
            .position(|&c| c > 0)
            .map_or(0, Self::value)
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}
