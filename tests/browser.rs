//! Headless Chromium against wsloop with permessage-deflate (RFC 7692), with Chromium's own
//! offer (`permessage-deflate; client_max_window_bits`).
//!
//! An in-process echo server serves `tests/interop/browser/echo.html` from `on_http`; the
//! Node script `tests/interop/node/browser.js` (playwright-core) opens it in headless Chromium,
//! which echoes text and binary messages from 1 byte to 1 MiB over a WebSocket to the same
//! server. Chromium reaches the server through a wiretap on 127.0.0.1 that records both
//! directions, so the test also checks the frames themselves: RSV1 from Chromium, RSV1 from
//! wsloop on every echo at or over the threshold and on none under it. The handler records the
//! offer Chromium made. A screenshot of the page goes to `target/browser-echo.png`.
//!
//! The game loop example's page (`examples/game_loop/game.rs`, included here) is played in
//! Chromium too by `tests/interop/node/game_browser.js`, on a desktop and on a phone held both
//! ways, against the game ticking on a thread of the test with the example's default bots
//! (`examples/game_loop/bots.rs`): see [`the_game_page_plays_on_desktop_and_phone`].
//!
//! `tests/run.sh` installs Chromium (and playwright-core) and sets `WSLOOP_CHROMIUM`,
//! `WSLOOP_NODE` and `WSLOOP_NODE_CLIENT_DIR`; without them this test fails, it never skips.

#[allow(dead_code)] // the test starts the bots, it does not read their counts
#[path = "../examples/game_loop/bots.rs"]
mod bots;
mod common;
#[allow(dead_code)] // the test uses the handler, not every accessor
#[path = "../examples/game_loop/game.rs"]
mod game;
#[path = "../examples/support/seed.rs"]
mod seed;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::node::{artifact, node_script, wait_or_kill};
use wsloop::proto::deflate::{negotiate, DeflateConfig};
use wsloop::proto::frame::{FrameHeader, OpCode};
use wsloop::{Config, ConnId, Context, Handler, HttpResponse, Message, Request, Server, Upgrade};

/// The page, served at `/`.
const PAGE: &str = include_str!("interop/browser/echo.html");
/// What Chromium offers (the requirement is that exactly this is negotiated).
const CHROMIUM_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// The longest the Node script may run; it has its own 60 s deadline.
const DEADLINE: Duration = Duration::from_secs(90);

/// One Chromium at a time: the machine has 2 cores.
static BROWSER: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// What the handler saw.
#[derive(Debug, Default)]
struct Seen {
    /// The `Sec-WebSocket-Extensions` values of each upgrade request, joined.
    offers: Vec<String>,
    /// The paths of plain GETs.
    pages: Vec<String>,
}

/// Serves the page at `/`, echoes every message on `/echo`.
struct BrowserEcho {
    seen: Arc<Mutex<Seen>>,
}

impl Handler for BrowserEcho {
    type State = ();

    fn on_upgrade(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        let offer: Vec<_> = req.header_values("sec-websocket-extensions").collect();
        self.seen.lock().unwrap().offers.push(offer.join(", "));
        if req.path() != "/echo" {
            return Upgrade::reject(404, "no WebSocket here");
        }
        Upgrade::accept(())
    }

    fn on_http(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> HttpResponse {
        self.seen.lock().unwrap().pages.push(req.path().to_owned());
        match req.path() {
            "/" => HttpResponse::new(200, "text/html; charset=utf-8", PAGE)
                .header("Cache-Control", "no-store"),
            _ => HttpResponse::text(404, "not found"),
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        ctx.send(id, msg).expect("echo fits the queue");
    }
}

fn start_server(config: Config, seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let mut server = Server::bind("127.0.0.1:0", config, BrowserEcho { seen }).expect("bind");
    let addr = server.local_addr();
    thread::spawn(move || server.run());
    addr
}

// ---------------------------------------------------------------------------------------------
// The wiretap
// ---------------------------------------------------------------------------------------------

/// One TCP connection through the wiretap: everything each side sent.
#[derive(Debug)]
struct Transcript {
    from_client: Vec<u8>,
    from_server: Vec<u8>,
}

/// Listens on 127.0.0.1 and relays every connection to `upstream`, adding a transcript to
/// `log` when both directions have ended.
fn wiretap(upstream: SocketAddr, log: Arc<Mutex<Vec<Transcript>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the wiretap");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = thread::spawn(move || relay(c, s));
                let from_server = relay(server, client);
                let from_client = up.join().unwrap_or_default();
                log.lock().unwrap().push(Transcript {
                    from_client,
                    from_server,
                });
            });
        }
    });
    addr
}

/// Copies `from` to `to` until the end of stream, then shuts down writing on `to`; returns what
/// passed. Reads time out after [`DEADLINE`], so no relay outlives the test by much.
fn relay(mut from: TcpStream, mut to: TcpStream) -> Vec<u8> {
    let _ = from.set_read_timeout(Some(DEADLINE));
    let _ = to.set_nodelay(true);
    let (mut seen, mut buf) = (Vec::new(), vec![0; 64 * 1024]);
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    seen
}

/// The frames one side sent after its HTTP head.
#[derive(Debug, Default)]
struct Frames {
    /// Payload lengths of the first frames of messages with RSV1 set.
    compressed: Vec<u64>,
    /// Payload lengths of the first frames of messages without RSV1.
    plain: Vec<u64>,
    /// Continuation frames (RSV1 must be clear on them).
    continuations: usize,
    /// Close frames.
    closes: usize,
}

impl Frames {
    fn summary(&self) -> String {
        let bytes: u64 = self.compressed.iter().sum();
        format!(
            "{} messages: {} compressed ({bytes} payload bytes in their first frames), {} not; \
             {} continuation frames",
            self.compressed.len() + self.plain.len(),
            self.compressed.len(),
            self.plain.len(),
            self.continuations
        )
    }
}

fn frames(bytes: &[u8]) -> Frames {
    let head = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head")
        + 4;
    let mut rest = &bytes[head..];
    let mut out = Frames::default();
    while !rest.is_empty() {
        let (header, n) = FrameHeader::decode(rest)
            .expect("a valid frame header")
            .expect("a whole frame header");
        let end = n + usize::try_from(header.payload_len).unwrap();
        assert!(rest.len() >= end, "a truncated frame: {header:?}");
        match header.opcode {
            OpCode::Text | OpCode::Binary if header.rsv1 => out.compressed.push(header.payload_len),
            OpCode::Text | OpCode::Binary => out.plain.push(header.payload_len),
            OpCode::Continuation => {
                assert!(!header.rsv1, "RSV1 on a continuation frame");
                out.continuations += 1;
            }
            opcode => {
                assert!(!header.rsv1, "RSV1 on a control frame: {header:?}");
                out.closes += usize::from(opcode == OpCode::Close);
            }
        }
        rest = &rest[end..];
    }
    out
}

/// The value of the first `name` header in an HTTP head at the start of `bytes`.
fn head_header(bytes: &[u8], name: &str) -> Option<String> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

// ---------------------------------------------------------------------------------------------
// The page's own constants, so that the counts here follow the page
// ---------------------------------------------------------------------------------------------

/// The numbers in the page's `const NAME = [..];` (or `const NAME = N;`) line.
fn page_constant(name: &str) -> Vec<usize> {
    let start = format!("const {name} = ");
    let line = PAGE
        .lines()
        .find_map(|l| l.trim().strip_prefix(start.as_str()))
        .unwrap_or_else(|| panic!("echo.html has no `const {name}`"));
    let line = line.split(';').next().unwrap();
    line.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|n| match n.trim() {
            "MIB" => 1 << 20,
            n => n.parse().unwrap_or_else(|_| panic!("{name}: {n:?}")),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running the Node script
// ---------------------------------------------------------------------------------------------

/// What a run of the Node script printed, and how it ended.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

fn run_browser(url: &str, screenshot: &Path) -> Run {
    let started = Instant::now();
    let args = [
        url.as_ref(),
        "--screenshot".as_ref(),
        screenshot.as_os_str(),
    ];
    let mut child = node_script("browser.js", &args);
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let status = wait_or_kill(&mut child, started + DEADLINE);
    Run {
        status,
        took: started.elapsed(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Runs the page in Chromium against a server on `deflate`, and checks everything.
fn chromium_echo(deflate: DeflateConfig, screenshot: &str) {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let threshold = deflate.threshold as u64;
    let answer = negotiate([CHROMIUM_OFFER.as_bytes()], &deflate)
        .expect("wsloop accepts Chromium's offer")
        .response_header_value();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let server = start_server(Config::default().deflate(Some(deflate)), Arc::clone(&seen));
    let tap = wiretap(server, Arc::clone(&log));
    let screenshot = artifact(screenshot);
    let _ = std::fs::remove_file(&screenshot);

    let run = run_browser(&format!("http://{tap}/"), &screenshot);
    println!(
        "browser test took {:.1} s\n{}{}",
        run.took.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    let sizes = page_constant("SIZES");
    let burst = page_constant("BURST")[0];
    let checks = 1 + 3 * sizes.len() + 2;
    assert!(
        run.status.success(),
        "browser.js failed ({}) after {:.1} s:\n{}\n{}",
        run.status,
        run.took.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    let summary = format!("browser interop: {checks} passed");
    assert!(
        run.stdout.lines().any(|l| l == summary),
        "expected `{summary}`:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l == format!("extensions: {answer}")),
        "Chromium's ws.extensions is not wsloop's answer {answer:?}:\n{}",
        run.stdout
    );
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );

    // Server side: Chromium's own offer, on one upgrade, after the page.
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.offers, [CHROMIUM_OFFER], "upgrade requests: {seen:?}");
        assert_eq!(
            seen.pages.first().map(String::as_str),
            Some("/"),
            "{seen:?}"
        );
    }

    // On the wire: the WebSocket connection's transcript, once both directions ended.
    let until = Instant::now() + Duration::from_secs(10);
    let transcript = loop {
        let mut log = log.lock().unwrap();
        let ws = log
            .iter()
            .position(|t| head_header(&t.from_client, "upgrade").is_some());
        if let Some(i) = ws {
            break log.swap_remove(i);
        }
        drop(log);
        assert!(
            Instant::now() < until,
            "the WebSocket connection did not end"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let offered = head_header(&transcript.from_client, "sec-websocket-extensions");
    assert_eq!(offered.as_deref(), Some(CHROMIUM_OFFER));
    let answered = head_header(&transcript.from_server, "sec-websocket-extensions");
    assert_eq!(answered.as_deref(), Some(answer.as_str()));
    let (client, server) = (
        frames(&transcript.from_client),
        frames(&transcript.from_server),
    );
    println!(
        "Chromium sent {}\nwsloop sent {}",
        client.summary(),
        server.summary()
    );
    let messages = 3 * sizes.len() + burst;
    assert_eq!(client.compressed.len() + client.plain.len(), messages);
    assert_eq!(server.compressed.len() + server.plain.len(), messages);
    assert_eq!((client.closes, server.closes), (1, 1));
    assert!(
        client.compressed.len() >= sizes.len(),
        "Chromium compressed only {} messages",
        client.compressed.len()
    );
    // wsloop compresses exactly the echoes at or over the threshold (the burst's are short).
    let over = 3 * sizes.iter().filter(|&&s| s as u64 >= threshold).count();
    assert_eq!(server.compressed.len(), over, "compressed echoes");
    assert!(
        server.plain.iter().all(|&len| len < threshold),
        "an uncompressed echo at or over the threshold: {:?}",
        server.plain
    );
}

#[test]
#[ignore = "needs Chromium (bash tests/run.sh)"]
fn chromium_echoes_through_wsloop_with_permessage_deflate() {
    chromium_echo(DeflateConfig::default(), "browser-echo.png");
}

#[test]
#[ignore = "needs Chromium (bash tests/run.sh)"]
fn chromium_echoes_through_wsloop_with_context_takeover() {
    chromium_echo(
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        },
        "browser-echo-takeover.png",
    );
}

// ---------------------------------------------------------------------------------------------
// The game loop example's page
// ---------------------------------------------------------------------------------------------

/// The game on a thread, with the example's default bots: a tick about every 16 ms (turn,
/// step, snapshot to everyone, flush) until its handle asks it to stop, then a graceful
/// shutdown (which ends the bots too).
fn start_game() -> (SocketAddr, wsloop::Handle, thread::JoinHandle<()>) {
    let mut server =
        Server::bind("127.0.0.1:0", Config::default(), game::Game::new()).expect("bind");
    let addr = server.local_addr();
    let handle = server.handle();
    let bots = bots::Bots::spawn(addr, bots::DEFAULT_BOTS).expect("start the bots");
    let thread = thread::spawn(move || {
        let mut snapshot = Vec::new();
        let mut last = Instant::now();
        while !server.shutdown_requested() {
            server.turn(Some(Duration::from_millis(16))).expect("turn");
            let now = Instant::now();
            let game = server.handler();
            game.step((now - last).as_secs_f32());
            last = now;
            game.snapshot(&mut snapshot);
            server.context().broadcast(Message::Binary(&snapshot));
            server.flush();
        }
        server.shutdown(Duration::from_secs(2)).expect("shut down");
        bots.join();
    });
    (addr, handle, thread)
}

#[test]
#[ignore = "needs Chromium and Node (bash tests/run.sh)"]
fn the_game_page_plays_on_desktop_and_phone() {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let (addr, handle, game) = start_game();
    let shots = artifact("game");
    let started = Instant::now();
    let url = format!("http://{addr}/");
    let bots = bots::DEFAULT_BOTS.to_string();
    let args = [
        url.as_ref(),
        "--bots".as_ref(),
        bots.as_ref(),
        "--screenshots".as_ref(),
        shots.as_os_str(),
    ];
    let mut child = node_script("game_browser.js", &args);
    let mut stdin = child.stdin.take().unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let mut output = Vec::new();
    let mut game = Some(game);
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    for line in lines.map_while(Result::ok) {
        if line == "stop-server" {
            handle.shutdown().expect("stop the game");
            game.take().expect("once").join().expect("the game thread");
            writeln!(stdin, "stopped").expect("tell node");
        }
        output.push(line);
    }
    let status = wait_or_kill(&mut child, started + DEADLINE);
    let output = output.join("\n");
    let stderr = stderr.join().unwrap_or_default();
    println!(
        "game browser test took {:.1} s\n{output}\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "game_browser.js failed ({status}):\n{output}\n{stderr}"
    );
    assert!(
        game.is_none(),
        "the script never asked to stop the server:\n{output}"
    );
    for check in [
        "ok the page loads, connects (wss on https) and, alone, shows the ",
        "ok the arrow keys move the dot, which stays whole at the right edge",
        "ok on a phone the touch pad shows and moves the player",
        "ok on a phone the pad is over the field's corner upright and beside it sideways",
        "ok while the server is down both pages say offline, with no players or rates over a frozen field",
        "game browser: 5 passed, 0 failed",
    ] {
        assert!(output.lines().any(|l| l.starts_with(check)), "missing `{check}`:\n{output}");
    }
    for name in ["game-1440x900.png", "game-390x844.png", "game-844x390.png"] {
        assert!(shots.join(name).is_file(), "no screenshot {name}");
    }
}
