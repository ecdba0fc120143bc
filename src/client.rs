//! A small blocking client on the same protocol core, for tests, tools and scripts.
//!
//! ```no_run
//! let mut client = wsloop::client::Client::connect("ws://127.0.0.1:9001/")?;
//! client.send(wsloop::Message::Text("hello"))?;
//! let echo = client.recv()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::proto::connection::{CloseReason, Connection, Endpoint, Event, SendError};
use crate::proto::frame::{write_frame, OpCode};
use crate::proto::message::mask_key;
use crate::proto::CloseCode;
use crate::{Config, Message};

/// An owned event received by the [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A blocking WebSocket client over a `std` TCP stream, or any other byte stream (a TLS
/// stream, say), driving a client-role [`Connection`]: it masks what it sends, answers pings
/// and close frames, and refuses messages over `max_message_size` (16 MiB by default).
#[derive(Debug)]
pub struct Client<S = TcpStream> {
    stream: S,
    ep: Endpoint,
    conn: Connection,
    /// Events received and not yet handed out.
    received: VecDeque<io::Result<Received>>,
    protocol: Option<String>,
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl Client<TcpStream> {
    /// Connects to a `ws://host:port/path` URL and completes the handshake.
    ///
    /// # Errors
    /// A URL that is not `ws://`, a connection error, or a refused handshake (`InvalidData`).
    pub fn connect(url: &str) -> io::Result<Client> {
        Client::connect_with(url, &[])
    }

    /// Connects offering `protocols` in `Sec-WebSocket-Protocol`.
    ///
    /// # Errors
    /// As [`connect`](Client::connect).
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
        let mut ep = Endpoint::new(config.connection, Instant::now());
        let conn = Connection::client(&mut ep, host, path, protocols);
        let mut client = Client {
            stream,
            ep,
            conn,
            received: VecDeque::new(),
            protocol: None,
        };
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
                    _ => Err(invalid("the handshake failed")),
                };
            }
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
            |_, _, event| {
                let item = match event {
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
                    Event::Closed(why) => Err(invalid(format!("connection ended: {why:?}"))),
                    Event::Refused(why) => Err(invalid(why)),
                    Event::Opened { protocol } => {
                        opened = Some(protocol.map(str::to_owned));
                        return;
                    }
                    Event::Request(_) => return,
                };
                received.push_back(item);
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
