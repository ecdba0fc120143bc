//! `wsloop client URL`: an interactive client, like websocat or wscat. Each line of stdin is
//! a message; every message received goes to stdout (text as it is, binary in hex, or raw);
//! pings, pongs and close frames go to stderr with their codes.
//!
//! The library's blocking [`Client`] makes the handshake over a stream of ours (TCP, or rustls
//! over it, as the bench makes it); then its parts run under one `mio::Poll` (the bench's
//! [`Transport`]), woken by a thread that reads stdin.

use std::fmt::Write as _;
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::{ClientConnection, StreamOwned};
use wsloop::client::{Client, ClientUrl, ConnectOptions, Parts, Received};
use wsloop::proto::connection::{Connection, Endpoint};
use wsloop::proto::deflate::DeflateConfig;
use wsloop::proto::frame::{write_frame, OpCode};
use wsloop::{CloseCode, Config, Message};

use crate::bench::transport::{self, Tls, Transport};

/// Options of `wsloop client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server: ws://host[:port][/path][?query] or wss://...
    url: String,
    /// A request header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A subprotocol to offer (repeatable, in order of preference).
    #[arg(long, value_name = "NAME")]
    subprotocol: Vec<String>,
    /// Send each line as a binary message (default: text).
    #[arg(long)]
    binary: bool,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
    /// Print binary messages received as they are, with nothing added (default: in hex, one
    /// per line).
    #[arg(long)]
    raw: bool,
    /// wss: trust the CA certificates of this PEM file (default: the system's).
    #[arg(long, value_name = "PEM")]
    cafile: Option<PathBuf>,
    /// wss: accept any certificate.
    #[arg(long, conflicts_with = "cafile")]
    insecure: bool,
}

/// Most bytes queued for the server before stdin is read further.
const QUEUED: usize = 1 << 20;
const SOCKET: Token = Token(0);
const STDIN: Token = Token(1);

/// Runs the client until the connection ends; returns the exit code: 0 after a close with
/// 1000 (or no code), 1 for any other end, 2 for bad arguments (a bad URL or header, a CA
/// file without certificates).
pub fn run(args: ClientArgs) -> i32 {
    let (url, options, tls) = match args.options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("wsloop client: {e}");
            return 2;
        }
    };
    let (parts, protocol) = match connect(&url, &options, tls.as_ref()) {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("wsloop client: {}: {e}", args.url);
            return 1;
        }
    };
    match protocol {
        Some(p) => eprintln!("connected to {} (subprotocol {p})", args.url),
        None => eprintln!("connected to {}", args.url),
    }
    match Session::new(parts, &args).run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wsloop client: {e}");
            1
        }
    }
}

impl ClientArgs {
    /// The URL, the options of the handshake and, for `wss://`, how to speak TLS.
    fn options(&self) -> Result<(ClientUrl, ConnectOptions, Option<Tls>), String> {
        let headers = (self.headers.iter())
            .map(|h| match h.split_once(':') {
                Some((name, value)) => Ok((name.trim().to_owned(), value.trim().to_owned())),
                None => Err(format!("-H {h:?}: not 'Name: value'")),
            })
            .collect::<Result<_, _>>()?;
        let url = ClientUrl::parse(&self.url).map_err(|e| e.to_string())?;
        let tls = if url.tls {
            Some(Tls {
                config: transport::client_config(self.insecure, self.cafile.as_deref())?,
                name: transport::server_name(&url.host)?,
            })
        } else {
            None
        };
        // An interactive session lasts as long as the user wants: no keepalive, no idle end.
        let config = Config::default()
            .deflate(self.deflate.then(DeflateConfig::default))
            .ping_interval(None)
            .idle_timeout(None);
        let options = ConnectOptions {
            protocols: self.subprotocol.clone(),
            headers,
            config,
            tls: None, // TLS is the stream's own, which the session takes over after the handshake
        };
        Ok((url, options, tls))
    }
}

/// Connects to `url` (over TLS with `tls`) and completes the handshake: the connection's
/// parts on a non-blocking transport, and the subprotocol the server chose.
fn connect(
    url: &ClientUrl,
    options: &ConnectOptions,
    tls: Option<&Tls>,
) -> io::Result<(Parts<Transport>, Option<String>)> {
    let tcp = std::net::TcpStream::connect((url.host.as_str(), url.port))?;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return handshake(tcp, url, options, |tcp| {
            Ok(Transport::Plain(nonblocking(tcp)?))
        });
    };
    let conn =
        ClientConnection::new(tls.config.clone(), tls.name.clone()).map_err(io::Error::other)?;
    handshake(StreamOwned::new(conn, tcp), url, options, |tls| {
        Ok(Transport::Tls(Box::new((nonblocking(tls.sock)?, tls.conn))))
    })
}

/// The handshake over the blocking `stream`, whose connection then goes on over the
/// `transport` it becomes.
fn handshake<S: Read + Write>(
    stream: S,
    url: &ClientUrl,
    options: &ConnectOptions,
    transport: impl FnOnce(S) -> io::Result<Transport>,
) -> io::Result<(Parts<Transport>, Option<String>)> {
    let client = Client::handshake_with_options(stream, &url.authority, &url.path, options)?;
    let protocol = client.protocol().map(str::to_owned);
    let parts = client.into_parts();
    let parts = Parts {
        stream: transport(parts.stream)?,
        endpoint: parts.endpoint,
        connection: parts.connection,
        received: parts.received,
    };
    Ok((parts, protocol))
}

/// The socket, made non-blocking for mio.
fn nonblocking(tcp: std::net::TcpStream) -> io::Result<mio::net::TcpStream> {
    tcp.set_nonblocking(true)?;
    Ok(mio::net::TcpStream::from_std(tcp))
}

/// A line of stdin, or its end.
enum Line {
    Data(Vec<u8>),
    End,
}

/// The connection after the handshake, and where its bytes go.
struct Session {
    transport: Transport,
    ep: Endpoint,
    conn: Connection,
    /// What the handshake's last read brought after the server's answer.
    early: Vec<io::Result<Received>>,
    binary: bool,
    raw: bool,
    /// Our close frame, once stdin has ended.
    close: Option<OwnClose>,
    /// How the connection ended, once it has.
    end: Option<io::Result<()>>,
}

/// Our close frame (1000), written by the session rather than by the connection: a
/// [`Connection`] that sent its close drops the messages still on their way, and those are
/// the answers to the last lines. So the connection stays open until the server's close
/// frame (the answer to ours), and the answer it queues then is not sent.
struct OwnClose {
    frame: Vec<u8>,
    written: usize,
    /// When to give up waiting for the server's close, once ours is out.
    deadline: Option<Instant>,
}

impl OwnClose {
    fn new() -> io::Result<OwnClose> {
        let mut mask = [0; 4];
        getrandom::getrandom(&mut mask).map_err(|e| io::Error::other(e.to_string()))?;
        let mut frame = Vec::with_capacity(8);
        let code = CloseCode::NORMAL.0.to_be_bytes();
        write_frame(&mut frame, OpCode::Close, true, false, Some(mask), &code);
        Ok(OwnClose {
            frame,
            written: 0,
            deadline: None,
        })
    }
}

impl Session {
    fn new(parts: Parts<Transport>, args: &ClientArgs) -> Session {
        Session {
            transport: parts.stream,
            ep: parts.endpoint,
            conn: parts.connection,
            early: parts.received.into(),
            binary: args.binary,
            raw: args.raw,
            close: None,
            end: None,
        }
    }

    fn run(mut self) -> io::Result<()> {
        let mut poll = Poll::new()?;
        (poll.registry()).register(
            self.transport.socket(),
            SOCKET,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // Kept here too: a waker dropped by the thread would take its last wake with it.
        let waker = Arc::new(Waker::new(poll.registry(), STDIN)?);
        let lines = read_stdin(waker.clone())?;
        for received in std::mem::take(&mut self.early) {
            self.show(received)?;
        }
        // Bytes TLS decrypted during the handshake are not in the socket: read them first.
        self.read()?;
        let mut events = Events::with_capacity(8);
        loop {
            if self.close.is_none() && self.conn.is_open() {
                self.send_lines(&lines)?;
            }
            self.write()?;
            let ours = self.close.as_ref().is_some_and(|c| c.written > 0);
            if self.conn.is_finished()
                || self.end.is_some() && (ours || self.conn.transmit().is_empty())
            {
                break;
            }
            let deadline = match self.close.as_ref().and_then(|c| c.deadline) {
                Some(at) if at <= Instant::now() => {
                    let why = "no close frame from the server within the close timeout";
                    return Err(io::Error::new(io::ErrorKind::TimedOut, why));
                }
                Some(at) => Some(at),
                None => self.conn.poll_timeout(&self.ep),
            };
            let timeout = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            match poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            if events.iter().any(|e| e.token() == SOCKET) {
                self.read()?;
            }
            let now = Instant::now();
            if self.conn.poll_timeout(&self.ep).is_some_and(|at| at <= now) {
                if let Some(event) = self.conn.handle_timeout(&mut self.ep, now) {
                    self.show(Received::from_event(event).expect("a closing event"))?;
                }
            }
        }
        self.end.unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection ended",
            ))
        })
    }

    /// Sends the lines stdin has ready, while the queue is short; at its end, prepares our
    /// close frame.
    fn send_lines(&mut self, lines: &Receiver<Line>) -> io::Result<()> {
        while self.conn.buffered() < QUEUED {
            let line = match lines.try_recv() {
                Ok(Line::Data(line)) => line,
                Err(TryRecvError::Empty) => return Ok(()),
                Ok(Line::End) | Err(TryRecvError::Disconnected) => {
                    self.close = Some(OwnClose::new()?);
                    return Ok(());
                }
            };
            let msg = if self.binary {
                Message::Binary(&line)
            } else if let Ok(text) = std::str::from_utf8(&line) {
                Message::Text(text)
            } else {
                eprintln!("wsloop client: a line that is not UTF-8 is not sent (try --binary)");
                continue;
            };
            self.conn
                .send(&mut self.ep, msg)
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
        }
        Ok(())
    }

    /// Reads what the socket has, and shows the events it makes.
    fn read(&mut self) -> io::Result<()> {
        let mut buf = vec![0; 64 * 1024];
        let mut events = Vec::new();
        loop {
            let n = match self.transport.read(&mut buf) {
                Ok(0) => {
                    events.extend(
                        self.conn
                            .handle_disconnect(&mut self.ep)
                            .and_then(Received::from_event),
                    );
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if self.end.is_some() => {
                    log::debug!("after the close: {e}");
                    break;
                }
                Err(e) => return Err(e),
            };
            (self.conn).recv(
                &mut self.ep,
                Instant::now(),
                &mut buf[..n],
                |_, _, event| {
                    events.extend(Received::from_event(event));
                },
            );
        }
        for received in events {
            self.show(received)?;
        }
        Ok(())
    }

    /// Writes what the connection queued, then our close frame if stdin has ended, as far
    /// as the socket takes them. Once ours has started, nothing of the connection's follows.
    fn write(&mut self) -> io::Result<()> {
        loop {
            let bytes = match &self.close {
                Some(c) if c.written > 0 || self.conn.transmit().is_empty() => {
                    &c.frame[c.written..]
                }
                _ => self.conn.transmit(),
            };
            if bytes.is_empty() {
                return self.transport.flush();
            }
            let n = match self.transport.write(bytes) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if self.end.is_some() => {
                    log::debug!("after the close: {e}");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            match &mut self.close {
                Some(c) if c.written > 0 || self.conn.transmit().is_empty() => {
                    c.written += n;
                    if c.written == c.frame.len() {
                        c.deadline = Some(Instant::now() + self.ep.config().close_timeout);
                    }
                }
                _ => self.conn.advance(&mut self.ep, n),
            }
        }
    }

    /// Prints a message on stdout, anything else on stderr; notes how the connection ended.
    fn show(&mut self, received: io::Result<Received>) -> io::Result<()> {
        let mut out = io::stdout().lock();
        match received {
            Ok(Received::Text(text)) => writeln!(out, "{text}")?,
            Ok(Received::Binary(bytes)) if self.raw => out.write_all(&bytes)?,
            Ok(Received::Binary(bytes)) => writeln!(out, "{}", hex(&bytes))?,
            Ok(Received::Ping(payload)) => eprintln!("ping {}", hex(&payload)),
            Ok(Received::Pong(payload)) => eprintln!("pong {}", hex(&payload)),
            Ok(Received::Close(code, reason)) => {
                let shown = code.map_or("(no code)".to_owned(), |c| c.to_string());
                eprintln!("close {shown} {reason:?}");
                self.end = Some(match code {
                    None | Some(CloseCode::NORMAL) => Ok(()),
                    Some(_) => Err(io::Error::other(format!(
                        "the server closed with {shown} {reason:?}"
                    ))),
                });
            }
            Err(e) => self.end = Some(Err(e)),
            Ok(other) => eprintln!("{other:?}"), // a kind of event this version does not know
        }
        out.flush()
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Starts the thread that reads stdin line by line (without the line ends) and wakes the
/// poll for each; it blocks while the session is a few lines behind.
fn read_stdin(waker: Arc<Waker>) -> io::Result<Receiver<Line>> {
    let (tx, rx) = mpsc::sync_channel(16);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                let mut line = Vec::new();
                let line = match stdin.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => Line::End,
                    Ok(_) => {
                        if line.ends_with(b"\n") {
                            line.pop();
                            if line.ends_with(b"\r") {
                                line.pop();
                            }
                        }
                        Line::Data(line)
                    }
                };
                let end = matches!(line, Line::End);
                if tx.send(line).is_err() || waker.wake().is_err() || end {
                    return;
                }
            }
        })?;
    Ok(rx)
}
