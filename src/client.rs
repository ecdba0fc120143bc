//! A small blocking client on the same protocol core, for tests, tools and scripts.
//!
//! ```no_run
//! let mut client = wsloop::client::Client::connect("ws://127.0.0.1:9001/")?;
//! client.send(wsloop::Message::Text("hello"))?;
//! let echo = client.recv()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `wss://` URLs speak TLS (rustls, inside), trusting the system's CA bundle by default, or
//! the CAs that [`ConnectOptions::tls`] gives: those of a file of your own, say.
//!
//! ```no_run
//! use wsloop::client::{Client, ClientTls, ConnectOptions};
//!
//! let options = ConnectOptions {
//!     tls: Some(ClientTls::from_pem_file("ca.pem")?),
//!     headers: vec![("Authorization".into(), "Bearer 123".into())],
//!     ..ConnectOptions::default()
//! };
//! let client = Client::connect_with_options("wss://localhost:9443/chat?room=1", &options)?;
//! println!("subprotocol: {:?}", client.protocol());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For TLS that [`ClientTls`] does not set up (a client certificate, a verifier of your own),
//! make the TLS stream with your TLS library and hand it to
//! [`Client::handshake_with_options`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::error::{error_messages, Error, TlsError};
use crate::proto::connection::{CloseReason, Connection, Endpoint, Event, SendError};
use crate::proto::frame::{write_frame, OpCode};
use crate::proto::message::mask_key;
use crate::proto::CloseCode;
use crate::reactor::tls::{read_file, Pem};
use crate::{Config, Message};

/// A `ws://` or `wss://` URL, parsed: `ws[s]://host[:port][/path][?query]`.
///
/// The scheme is case-insensitive; the port defaults to 80 (`ws`) or 443 (`wss`); an IPv6
/// host is written in brackets (`ws://[::1]:9001/`). User info (`user@`), fragments (`#`),
/// spaces and control characters are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientUrl {
    /// `wss://`: TLS.
    pub tls: bool,
    /// The host, without an IPv6 address's brackets: what to resolve, and the name the
    /// server's certificate must carry.
    pub host: String,
    /// The port as written, or the scheme's default.
    pub port: u16,
    /// The `Host` header: host and port as written.
    pub authority: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
}

impl ClientUrl {
    /// Parses `url`.
    ///
    /// # Errors
    /// `InvalidInput`, naming the URL and what is wrong with it.
    pub fn parse(url: &str) -> io::Result<ClientUrl> {
        let bad = |cause| {
            let url = url.to_owned();
            io::Error::new(io::ErrorKind::InvalidInput, ClientError::Url { url, cause })
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad(UrlError::NotWebSocket))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(bad(UrlError::Scheme)),
        };
        if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad(UrlError::Unencoded));
        }
        if rest.contains('#') {
            return Err(bad(UrlError::Fragment));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad(UrlError::UserInfo));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad(UrlError::UnclosedBracket))?;
            let port = match after.strip_prefix(':') {
                Some(port) => port,
                None if after.is_empty() => "",
                None => return Err(bad(UrlError::AfterIpv6)),
            };
            (host, port)
        } else {
            authority.rsplit_once(':').unwrap_or((authority, ""))
        };
        if host.is_empty() {
            return Err(bad(UrlError::NoHost));
        }
        let port = match port {
            "" if tls => 443,
            "" => 80,
            port => port
                .parse()
                .map_err(|_| bad(UrlError::Port(port.to_owned())))?,
        };
        Ok(ClientUrl {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// Which certificate authorities a client trusts for `wss://`: the system's (the default), or
/// those of a PEM file or PEM text of your own; with the `ring` provider, TLS 1.2 and 1.3 and
/// ALPN `http/1.1`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

/// Where the system's CA bundle usually is (Debian, Fedora, openSUSE, Alpine, the BSDs and
/// macOS's `/etc/ssl/cert.pem`).
const SYSTEM_CAS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

impl ClientTls {
    /// Trusts the system's CA bundle: the file `SSL_CERT_FILE` names, or the first of the
    /// usual places that exists. What [`Client::connect`] does for `wss://`.
    ///
    /// # Errors
    /// [`Error::Tls`] with [`TlsError::NoSystemRoots`] when there is none; else as
    /// [`from_pem_file`](Self::from_pem_file).
    pub fn system_roots() -> Result<ClientTls, Error> {
        let path = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .or_else(|| SYSTEM_CAS.iter().map(PathBuf::from).find(|p| p.exists()))
            .ok_or(Error::Tls {
                path: None,
                cause: TlsError::NoSystemRoots,
            })?;
        ClientTls::from_pem_file(path)
    }

    /// Trusts the CA certificates of the PEM file at `path` (and no others).
    ///
    /// # Errors
    /// [`Error::Tls`] naming the file: it cannot be read, is not valid PEM, holds no
    /// certificate, or one that cannot be a trust anchor.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<ClientTls, Error> {
        let path = path.as_ref();
        let text = read_file(path)?;
        ClientTls::trusting(&Pem {
            text: &text,
            path: Some(path),
        })
    }

    /// Trusts the CA certificates of PEM text held in memory (and no others).
    ///
    /// # Errors
    /// As [`from_pem_file`](Self::from_pem_file), with no path.
    pub fn from_pem(pem: &[u8]) -> Result<ClientTls, Error> {
        ClientTls::trusting(&Pem {
            text: pem,
            path: None,
        })
    }

    /// The config trusting the certificates of `pem`.
    fn trusting(pem: &Pem<'_>) -> Result<ClientTls, Error> {
        let mut roots = RootCertStore::empty();
        for cert in pem.certificates()? {
            roots
                .add(cert)
                .map_err(|e| pem.error(TlsError::BadCaCertificate(e.into())))?;
        }
        if roots.is_empty() {
            return Err(pem.error(TlsError::NoCertificate));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// TLS over `tcp` to `host`, the name the server's certificate must carry.
    fn wrap(&self, host: &str, tcp: TcpStream) -> io::Result<ClientStream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        let stream = StreamOwned::new(tls, tcp);
        Ok(ClientStream(Stream::Tls(Box::new(stream))))
    }
}

/// The stream of a client made by [`Client::connect`]: TCP, or TLS over TCP for `wss://`.
#[derive(Debug)]
pub struct ClientStream(Stream);

/// What a [`ClientStream`] is.
#[derive(Debug)]
enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`, boxed: the TLS state is a kilobyte or more.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        match &self.0 {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// Whether it speaks TLS (`wss://`).
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Stream::Tls(_))
    }

    /// Sets the TCP socket's read timeout ([`TcpStream::set_read_timeout`]).
    ///
    /// # Errors
    /// As [`TcpStream::set_read_timeout`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// How [`Client::connect_with_options`] connects.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// More request headers (`Origin`, `Authorization`, `Cookie`...). The names the
    /// handshake writes itself (`Host`, `Upgrade`, `Connection`, `Sec-WebSocket-*`) are refused.
    pub headers: Vec<(String, String)>,
    /// The limits (`max_message_size`...); permessage-deflate is offered if it has `deflate`.
    pub config: Config,
    /// For `wss://`: the certificate authorities to trust; `None` trusts the system's
    /// ([`ClientTls::system_roots`], loaded at each connect).
    pub tls: Option<ClientTls>,
}

/// Headers the upgrade request writes itself.
const OWN_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

/// `request` (an upgrade request's head) with `headers` added at its end.
fn with_headers(request: &[u8], headers: &[(String, String)]) -> io::Result<Vec<u8>> {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let mut out = request[..request.len() - 2].to_vec(); // before the blank line
    for (name, value) in headers {
        let bad = |cause| {
            let name = name.clone();
            invalid(ClientError::Header { name, cause })
        };
        if name.is_empty() || !name.bytes().all(token) {
            return Err(bad(HeaderError::NotAName));
        }
        if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(bad(HeaderError::Reserved));
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(bad(HeaderError::ControlCharacters));
        }
        for part in [name, ": ", value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// An owned event received by the [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping (already answered with a pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame: code and reason (already answered).
    Close(Option<CloseCode>, String),
}

impl Received {
    /// What a client-role [`Connection`]'s `event` amounts to: a message or control frame, or
    /// the error that ended the connection (`InvalidData`: a refused upgrade, a protocol
    /// error, whose source is the [`ProtocolError`](crate::ProtocolError), an overflow or a
    /// timeout; `ConnectionAborted`: the server went away without a close frame). `None` for
    /// [`Event::Opened`] and the server role's [`Event::Request`].
    pub fn from_event(event: Event<'_>) -> Option<io::Result<Received>> {
        Some(match event {
            Event::Message(Message::Text(t)) => Ok(Received::Text(t.to_owned())),
            Event::Message(Message::Binary(b)) => Ok(Received::Binary(b.to_vec())),
            Event::Ping(p) => Ok(Received::Ping(p.to_vec())),
            Event::Pong(p) => Ok(Received::Pong(p.to_vec())),
            Event::Closed(CloseReason::Closed { code, reason }) => {
                Ok(Received::Close(code, reason.to_owned()))
            }
            Event::Closed(CloseReason::ProtocolError(e)) => {
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Event::Closed(CloseReason::Disconnected) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                ClientError::Disconnected,
            )),
            Event::Closed(CloseReason::Overflow) => Err(invalid(ClientError::Overflow)),
            Event::Closed(CloseReason::TimedOut) => Err(invalid(ClientError::TimedOut)),
            Event::Refused(why) => Err(invalid(why)),
            Event::Opened { .. } | Event::Request(_) => return None,
        })
    }
}

/// A blocking WebSocket client over a TCP or TLS stream ([`ClientStream`], made by
/// [`connect`](Client::connect)), or any other byte stream ([`handshake`](Client::handshake)),
/// driving a client-role [`Connection`]: it masks what it sends, answers pings and close
/// frames, and refuses messages over `max_message_size` (16 MiB by default).
#[derive(Debug)]
pub struct Client<S = ClientStream> {
    stream: S,
    ep: Endpoint,
    conn: Connection,
    /// Events received and not yet handed out.
    received: VecDeque<io::Result<Received>>,
    protocol: Option<String>,
}

/// A [`Client`] taken apart by [`Client::into_parts`], to drive its connection yourself (in
/// an event loop, say).
#[derive(Debug)]
pub struct Parts<S> {
    /// The stream, after the handshake.
    pub stream: S,
    /// The connection's endpoint.
    pub endpoint: Endpoint,
    /// The open connection.
    pub connection: Connection,
    /// What was received and not yet handed out by [`Client::recv`], oldest first.
    pub received: VecDeque<io::Result<Received>>,
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The inner error (`io::Error::get_ref`, `into_inner`) of the client's own I/O errors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be used (`InvalidInput`).
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        cause: UrlError,
    },
    /// A header of [`ConnectOptions::headers`] that may not be sent (`InvalidData`).
    Header {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        cause: HeaderError,
    },
    /// The connection ended during the handshake, without a refusal to tell why
    /// (`InvalidData`).
    HandshakeFailed,
    /// The server went away without a close frame (`ConnectionAborted`).
    Disconnected,
    /// The connection's write queue overflowed and it was closed (`InvalidData`).
    Overflow,
    /// The connection was idle for too long, or the server did not answer our close
    /// (`InvalidData`).
    TimedOut,
}

error_messages!(ClientError, source(self) {
    match self {
        ClientError::Url { cause, .. } => Some(cause),
        ClientError::Header { cause, .. } => Some(cause),
        _ => None,
    }
} {
    ClientError::Url { url, cause } => ("{url:?}: {cause}"),
    ClientError::Header { name, cause } => ("header {name:?}: {cause}"),
    ClientError::HandshakeFailed => ("the handshake failed"),
    ClientError::Disconnected => ("the server went away without a close frame (1006)"),
    ClientError::Overflow => ("connection ended: Overflow"),
    ClientError::TimedOut => ("connection ended: TimedOut"),
});

/// What is wrong with a URL given to [`ClientUrl::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme://`.
    NotWebSocket,
    /// A scheme other than `ws` or `wss`.
    Scheme,
    /// A space or a control character.
    Unencoded,
    /// A fragment (`#`).
    Fragment,
    /// User info (`user@`).
    UserInfo,
    /// A `[` without its `]`.
    UnclosedBracket,
    /// Something other than a port after an IPv6 address.
    AfterIpv6,
    /// No host.
    NoHost,
    /// A port that is not a number from 0 to 65535, as written.
    Port(String),
}

error_messages!(UrlError {
    UrlError::NotWebSocket => ("not a ws:// or wss:// URL"),
    UrlError::Scheme => ("the scheme must be ws:// or wss://"),
    UrlError::Unencoded => ("spaces and control characters must be percent-encoded"),
    UrlError::Fragment => ("a WebSocket URL has no fragment (#)"),
    UrlError::UserInfo => ("user info (user@) is not supported"),
    UrlError::UnclosedBracket => ("unclosed [ in the host"),
    UrlError::AfterIpv6 => ("junk after the IPv6 address"),
    UrlError::NoHost => ("no host"),
    UrlError::Port(port) => ("bad port {port:?}"),
});

/// Why a header cannot be sent with the upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The name is not an HTTP token.
    NotAName,
    /// The handshake sets this header itself.
    Reserved,
    /// The value holds control characters.
    ControlCharacters,
}

error_messages!(HeaderError {
    HeaderError::NotAName => ("not a header name"),
    HeaderError::Reserved => ("the handshake sets it itself"),
    HeaderError::ControlCharacters => ("control characters in the value"),
});

impl Client<ClientStream> {
    /// Connects to a `ws://` or `wss://` URL (see [`ClientUrl`]) and completes the handshake;
    /// `wss://` trusts the system's CAs ([`ClientTls::system_roots`]).
    ///
    /// # Errors
    /// A bad URL (`InvalidInput`), a connection or TLS error, or a refused handshake
    /// (`InvalidData`).
    pub fn connect(url: &str) -> io::Result<Client> {
        Client::connect_with(url, &[])
    }

    /// Connects offering `protocols` in `Sec-WebSocket-Protocol`.
    ///
    /// # Errors
    /// As [`connect`](Client::connect).
    pub fn connect_with(url: &str, protocols: &[&str]) -> io::Result<Client> {
        let options = ConnectOptions {
            protocols: protocols.iter().map(|p| (*p).to_owned()).collect(),
            ..ConnectOptions::default()
        };
        Client::connect_with_options(url, &options)
    }

    /// Connects as `options` say: subprotocols, headers, limits and deflate, the CAs to trust.
    ///
    /// # Errors
    /// As [`connect`](Client::connect); a header that may not be sent is `InvalidData`; with
    /// no [`ConnectOptions::tls`], no system CA bundle is `NotFound` and a bad one
    /// `InvalidData`, whose inner error is the [`Error::Tls`].
    pub fn connect_with_options(url: &str, options: &ConnectOptions) -> io::Result<Client> {
        let url = ClientUrl::parse(url)?;
        let tls = match (&options.tls, url.tls) {
            (_, false) => None,
            (Some(tls), true) => Some(tls.clone()),
            (None, true) => Some(ClientTls::system_roots().map_err(setup_error)?),
        };
        let tcp = TcpStream::connect((url.host.as_str(), url.port))?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            Some(tls) => tls.wrap(&url.host, tcp)?,
            None => ClientStream(Stream::Plain(tcp)),
        };
        Client::handshake_with_options(stream, &url.authority, &url.path, options)
    }
}

/// A TLS setup error as an I/O error: `NotFound` for no system CA bundle, the kind of a file's
/// read error, else `InvalidData`.
fn setup_error(e: Error) -> io::Error {
    let kind = match &e {
        Error::Tls {
            cause: TlsError::NoSystemRoots,
            ..
        } => io::ErrorKind::NotFound,
        Error::Tls {
            cause: TlsError::Read(read),
            ..
        } => read.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

impl<S: Read + Write> Client<S> {
    /// Completes the handshake over an already connected stream; `host` is the `Host` header.
    ///
    /// # Errors
    /// An I/O error, or `InvalidData` if the server refused or botched the upgrade.
    pub fn handshake(
        stream: S,
        host: &str,
        path: &str,
        protocols: &[&str],
    ) -> io::Result<Client<S>> {
        Client::handshake_with(stream, host, path, protocols, Config::default())
    }

    /// Like [`handshake`](Self::handshake), with the limits of `config` (`max_message_size`,
    /// `max_write_buffer`...) and permessage-deflate offered if it has `deflate`.
    ///
    /// # Errors
    /// As [`handshake`](Self::handshake).
    pub fn handshake_with(
        stream: S,
        host: &str,
        path: &str,
        protocols: &[&str],
        config: Config,
    ) -> io::Result<Client<S>> {
        Client::open(stream, host, path, protocols, &[], config)
    }

    /// Like [`handshake`](Self::handshake), as `options` say: subprotocols, headers, limits
    /// and deflate. Its `tls` is not used: TLS, if any, is the stream's own (a client
    /// certificate or a verifier that [`ClientTls`] does not offer is set up this way).
    ///
    /// # Errors
    /// As [`handshake`](Self::handshake); a header that may not be sent is `InvalidData`.
    pub fn handshake_with_options(
        stream: S,
        host: &str,
        path: &str,
        options: &ConnectOptions,
    ) -> io::Result<Client<S>> {
        let protocols: Vec<&str> = options.protocols.iter().map(String::as_str).collect();
        let config = options.config.clone();
        Client::open(stream, host, path, &protocols, &options.headers, config)
    }

    /// The handshake for `path` on `host`, with `headers` added to the request.
    fn open(
        stream: S,
        host: &str,
        path: &str,
        protocols: &[&str],
        headers: &[(String, String)],
        config: Config,
    ) -> io::Result<Client<S>> {
        let mut ep = Endpoint::new(config.connection, Instant::now());
        let conn = Connection::client(&mut ep, host, path, protocols);
        let mut client = Client {
            stream,
            ep,
            conn,
            received: VecDeque::new(),
            protocol: None,
        };
        if !headers.is_empty() {
            // The connection writes no headers of the caller's: they go in on the way out.
            let request = with_headers(client.conn.transmit(), headers)?;
            client.stream.write_all(&request)?;
            let n = client.conn.transmit().len();
            client.conn.advance(&mut client.ep, n);
        }
        client.flush()?;
        // Messages (even a close) may follow the answer in the same read: they stay queued.
        loop {
            if let Some(protocol) = client.read_events()? {
                client.protocol = protocol;
                return Ok(client);
            }
            if client.conn.is_finished() {
                return match client.received.pop_front() {
                    Some(Err(e)) => Err(e),
                    _ => Err(invalid(ClientError::HandshakeFailed)),
                };
            }
        }
    }

    /// Takes the client apart, to drive its connection without it.
    pub fn into_parts(self) -> Parts<S> {
        Parts {
            stream: self.stream,
            endpoint: self.ep,
            connection: self.conn,
            received: self.received,
        }
    }

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The underlying stream (to set timeouts, for instance).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends a whole message in one frame.
    ///
    /// # Errors
    /// An I/O error, or `InvalidInput` if the connection is no longer open.
    pub fn send(&mut self, msg: Message<'_>) -> io::Result<()> {
        self.conn
            .send(&mut self.ep, msg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.flush()
    }

    /// Sends one frame as given, bypassing the connection's checks (for fragments, or for
    /// testing a server's checks).
    ///
    /// # Errors
    /// An I/O error.
    pub fn send_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        write_frame(&mut out, opcode, fin, false, Some(mask_key()), payload);
        self.stream.write_all(&out)
    }

    /// Starts the close handshake; nothing to do if it is already under way or done (a close
    /// frame from the server is answered as it arrives).
    ///
    /// # Errors
    /// An I/O error, or `InvalidInput` for a code that may not be sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        match self.conn.close(&mut self.ep, code, reason) {
            Ok(()) | Err(SendError::NotOpen) => self.flush(),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
        }
    }

    /// Waits for the next message or control frame.
    ///
    /// # Errors
    /// A protocol error from the server is an `InvalidData` error whose source is the
    /// [`ProtocolError`](crate::ProtocolError); the end of the stream is `UnexpectedEof`.
    pub fn recv(&mut self) -> io::Result<Received> {
        loop {
            if let Some(received) = self.received.pop_front() {
                return received;
            }
            self.read_events()?;
        }
    }

    /// Reads once and turns what came into owned events (and what the connection answers
    /// into writes); returns the chosen subprotocol if the handshake completed.
    #[allow(clippy::option_option)]
    fn read_events(&mut self) -> io::Result<Option<Option<String>>> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut opened = None;
        let received = &mut self.received;
        self.conn.recv(
            &mut self.ep,
            Instant::now(),
            &mut chunk[..n],
            |_, _, event| match event {
                Event::Opened { protocol } => opened = Some(protocol.map(str::to_owned)),
                event => received.extend(Received::from_event(event)),
            },
        );
        self.flush()?;
        Ok(opened)
    }

    /// Writes what the connection queued.
    fn flush(&mut self) -> io::Result<()> {
        while !self.conn.transmit().is_empty() {
            let n = self.stream.write(self.conn.transmit())?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.conn.advance(&mut self.ep, n);
        }
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ClientUrl {
        ClientUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn error(s: &str) -> String {
        let e = ClientUrl::parse(s).expect_err(s);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{s}");
        e.to_string()
    }

    #[test]
    fn urls_with_default_ports_queries_and_ipv6() {
        let u = url("ws://example.com");
        assert_eq!(
            u,
            ClientUrl {
                tls: false,
                host: "example.com".into(),
                port: 80,
                authority: "example.com".into(),
                path: "/".into(),
            }
        );
        assert_eq!(
            (url("wss://example.com/").port, url("wss://x").tls),
            (443, true)
        );
        assert_eq!(url("WSS://example.com:8443/").port, 8443);
        assert_eq!(url("ws://h:/").port, 80);
        let u = url("ws://127.0.0.1:9001/chat/room?x=1&y=%20");
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 9001));
        assert_eq!(u.path, "/chat/room?x=1&y=%20");
        assert_eq!(url("ws://127.0.0.1?a=b").path, "/?a=b");
        let u = url("wss://[::1]:9443/p");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9443));
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("[::1]:9443", "/p")
        );
        assert_eq!(url("ws://[::1]").port, 80);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("http://example.com/", "the scheme must be ws:// or wss://"),
            ("example.com:9001", "not a ws:// or wss:// URL"),
            ("ws:/example.com", "not a ws:// or wss:// URL"),
            ("ws://", "no host"),
            ("ws://:9001/", "no host"),
            ("ws://[::1/", "unclosed [ in the host"),
            ("ws://[::1]x/", "junk after the IPv6 address"),
            ("ws://host:99999/", "bad port \"99999\""),
            ("ws://host:x/", "bad port \"x\""),
            ("ws://user:pw@host/", "user info"),
            ("ws://host/#top", "no fragment"),
            ("ws://host/a b", "spaces and control characters"),
            (
                "ws://host/a\r\nX-Injected: 1",
                "spaces and control characters",
            ),
        ];
        for (bad, why) in cases {
            let e = error(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(
                e.contains(&format!("{bad:?}")),
                "{bad:?}: the error names the URL: {e}"
            );
        }
    }

    #[test]
    fn tls_setup_errors_keep_their_kind_and_cause() {
        let tls = |cause| Error::Tls { path: None, cause };
        let e = setup_error(tls(TlsError::NoSystemRoots));
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("SSL_CERT_FILE"), "{e}");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let e = setup_error(tls(TlsError::Read(denied)));
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let e = setup_error(tls(TlsError::NoCertificate));
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<Error>());
        let Some(Error::Tls { cause, .. }) = inner else {
            panic!("{e:?}")
        };
        assert!(matches!(cause, TlsError::NoCertificate), "{cause:?}");
    }

    #[test]
    fn headers_go_before_the_blank_line_and_bad_ones_are_refused() {
        let request = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        let out = with_headers(request, &h("Authorization", "Bearer a b\tc")).unwrap();
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer a b\tc\r\n\r\n"
        );
        for (name, value) in [
            ("X-A", "1\r\nX-B: 2"),
            ("X A", "1"),
            ("", "1"),
            ("X:A", "1"),
            ("sec-websocket-key", "x"),
            ("Host", "elsewhere"),
        ] {
            let e = with_headers(request, &h(name, value)).expect_err(name);
            assert!(e.to_string().contains(&format!("{name:?}")), "{e}");
        }
    }
}
