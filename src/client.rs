//! A small blocking client on the same protocol core, for tests, tools and scripts.
//!
//! ```no_run
//! let mut client = wsloop::client::Client::connect("ws://127.0.0.1:9001/")?;
//! client.send(wsloop::Message::Text("hello"))?;
//! let echo = client.recv()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::proto::frame::OpCode;
use crate::proto::handshake::{check_response, new_key, write_request, HeadScanner};
use crate::proto::message::{Decoded, Decoder, Encoder, Event};
use crate::proto::{CloseCode, Role};
use crate::Message;

/// An owned event received by the [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping (not answered automatically).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame: code and reason.
    Close(Option<CloseCode>, String),
}

/// A blocking WebSocket client over a `std` TCP stream, or any other byte stream (a TLS
/// stream, say).
#[derive(Debug)]
pub struct Client<S = TcpStream> {
    stream: S,
    decoder: Decoder,
    encoder: Encoder,
    buf: Vec<u8>,
    start: usize,
    protocol: Option<String>,
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl Client<TcpStream> {
    /// Connects to a `ws://host:port/path` URL and completes the handshake.
    pub fn connect(url: &str) -> io::Result<Client> {
        Client::connect_with(url, &[])
    }

    /// Connects offering `protocols` in `Sec-WebSocket-Protocol`.
    pub fn connect_with(url: &str, protocols: &[&str]) -> io::Result<Client> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| invalid(format!("not a ws:// URL: {url}")))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        Client::handshake(stream, host, path, protocols)
    }
}

impl<S: Read + Write> Client<S> {
    /// Completes the handshake over an already connected stream; `host` is the `Host` header.
    pub fn handshake(
        mut stream: S,
        host: &str,
        path: &str,
        protocols: &[&str],
    ) -> io::Result<Client<S>> {
        let key = new_key();
        let mut request = Vec::new();
        write_request(&mut request, host, path, &key, protocols, None);
        stream.write_all(&request)?;
        let mut buf = Vec::new();
        let mut scanner = HeadScanner::default();
        let end = loop {
            if let Some(end) = scanner.find_end(&buf) {
                break end;
            }
            if buf.len() > 64 * 1024 {
                return Err(invalid("response head too large"));
            }
            read_more(&mut stream, &mut buf)?;
        };
        let accepted = check_response(&buf[..end], &key, protocols).map_err(invalid)?;
        Ok(Client {
            stream,
            decoder: Decoder::new(Role::Client, 16 << 20),
            encoder: Encoder::new(Role::Client),
            buf,
            start: end,
            protocol: accepted.protocol,
        })
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
    pub fn send(&mut self, msg: Message<'_>) -> io::Result<()> {
        let opcode = match msg {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        };
        self.send_frame(opcode, true, msg.as_bytes())
    }

    /// Sends one frame as given (for fragments, or for testing a server's checks).
    pub fn send_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        self.encoder.frame(&mut out, opcode, fin, payload);
        self.stream.write_all(&out)
    }

    /// Sends a close frame.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        let mut out = Vec::new();
        self.encoder.close(&mut out, Some(code), reason);
        self.stream.write_all(&out)
    }

    /// Waits for the next message or control frame. A protocol error from the server is an
    /// `InvalidData` error; the end of the stream is `UnexpectedEof`.
    pub fn recv(&mut self) -> io::Result<Received> {
        loop {
            let decoded = self
                .decoder
                .decode(&mut self.buf[self.start..])
                .map_err(invalid)?;
            match decoded {
                Decoded::Frame { len, event } => {
                    let received = event.map(|e| match e {
                        Event::Text(t) => Received::Text(t.to_owned()),
                        Event::Binary(b) => Received::Binary(b.to_vec()),
                        Event::Ping(p) => Received::Ping(p.to_vec()),
                        Event::Pong(p) => Received::Pong(p.to_vec()),
                        Event::Close(code, reason) => Received::Close(code, reason.to_owned()),
                    });
                    self.start += len;
                    if let Some(received) = received {
                        return Ok(received);
                    }
                }
                Decoded::Incomplete { .. } => {
                    self.buf.drain(..self.start);
                    self.start = 0;
                    read_more(&mut self.stream, &mut self.buf)?;
                }
            }
        }
    }
}

/// Appends one read's worth of bytes to `buf`; the end of the stream is an error.
fn read_more(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
