//! One byte-stream interface over plain TCP and TLS, for the non-blocking, edge-triggered reactor.
//!
//! The rules, as for a `mio` socket: call [`Transport::read`] until it returns `WouldBlock` (or
//! `Ok(0)`), and after writing call [`Transport::wants_write`]: while it is true, TLS records wait
//! for the socket, so keep WRITABLE interest and call [`Transport::flush_tls`] when it fires,
//! even if nothing of the application's is queued. `read` writes what the TLS handshake (or an
//! alert) needs on its own, so a connection makes progress through its handshake on READABLE.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ServerConnection;

use super::tls::TlsConfig;

/// A connection's byte stream: plaintext in and out, whatever is underneath.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, boxed: rustls state is a kilobyte or more.
    Tls(Box<TlsStream>),
}

/// A rustls server connection and its socket.
#[derive(Debug)]
pub(crate) struct TlsStream {
    sock: TcpStream,
    conn: ServerConnection,
}

impl Transport {
    /// A TLS transport over `sock`, ready for the client's hello.
    pub(crate) fn tls(sock: TcpStream, config: &TlsConfig) -> io::Result<Transport> {
        let conn =
            ServerConnection::new(config.server_config().clone()).map_err(io::Error::other)?;
        Ok(Transport::Tls(Box::new(TlsStream { sock, conn })))
    }

    /// The TCP socket underneath, for its address or options.
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(sock) => sock,
            Transport::Tls(tls) => &tls.sock,
        }
    }

    fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(sock) => sock,
            Transport::Tls(tls) => &mut tls.sock,
        }
    }

    /// Reads plaintext into `buf`: `Ok(0)` is the end of the stream (TCP EOF, or for TLS a
    /// close_notify or a TCP EOF without one), `WouldBlock` means nothing more for now. A TLS
    /// error gives `InvalidData` after a best-effort write of the alert.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(sock) => sock.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    /// Writes plaintext from `buf`; `Ok(n)` when `n > 0` bytes were taken (by the kernel, or for
    /// TLS by rustls, which buffers up to its limit, 64 KiB by default, and flushes what it can),
    /// `WouldBlock` when none could be. Keep what was not taken; check [`Self::wants_write`].
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(sock) => sock.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    /// Writes pending TLS records until none are left or the socket would block (then
    /// [`Self::wants_write`] stays true). A no-op for plain TCP.
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.flush(),
        }
    }

    /// Writes from several buffers at once (plain TCP only; TLS takes the same bytes through
    /// [`Self::write`]).
    pub(crate) fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(sock) => sock.write_vectored(bufs),
            Transport::Tls(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// Whether this is plain TCP.
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Whether TLS records wait for the socket; always false for plain TCP.
    pub(crate) fn wants_write(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.conn.wants_write())
    }

    /// Whether the TLS handshake is still going on; always false for plain TCP.
    pub(crate) fn handshaking(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.conn.is_handshaking())
    }

    /// Queues a TLS close_notify alert (a no-op for plain TCP); [`Self::flush_tls`] sends it.
    pub(crate) fn close_notify(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.conn.send_close_notify();
        }
    }

    /// Shuts the socket's write half; for TLS, call once [`Self::wants_write`] is false.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        self.socket().shutdown(Shutdown::Write)
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify: WebSocket has its own close, so an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages, tickets, key updates: the peer may wait for them.
            self.flush()?;
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            let pending = self.conn.wants_write();
            let n = self.conn.writer().write(&buf[taken..])?;
            taken += n;
            self.flush()?;
            // Done, the socket is full, or rustls takes nothing though nothing waits (its limit
            // on plaintext buffered during the handshake).
            if taken == buf.len() || self.conn.wants_write() || (n == 0 && !pending) {
                break;
            }
        }
        match taken {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(taken),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket_mut().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

    use super::*;

    type Client = StreamOwned<ClientConnection, std::net::TcpStream>;

    const MIB: usize = 1 << 20;

    /// A server config and a client config that trusts it, on one fresh self-signed cert.
    fn configs() -> (TlsConfig, Arc<ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let server = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    /// A connected pair: a blocking std client socket and the non-blocking mio server side.
    fn pair() -> (std::net::TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        (client, TcpStream::from_std(server))
    }

    fn tls_client(sock: std::net::TcpStream, config: Arc<ClientConfig>) -> Client {
        let name = ServerName::try_from("localhost").unwrap();
        StreamOwned::new(ClientConnection::new(config, name).unwrap(), sock)
    }

    /// Runs `step` until it returns `Some`, sleeping a little while it makes no progress.
    fn until<T>(mut step: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(t) = step() {
                return t;
            }
            assert!(Instant::now() < deadline, "timed out");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Writes all of `data`, flushing TLS records too, as the reactor would.
    fn write_all(t: &mut Transport, mut data: &[u8]) {
        until(|| {
            while !data.is_empty() {
                match t.write(data) {
                    Ok(n) => data = &data[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            t.flush_tls().unwrap();
            (data.is_empty() && !t.wants_write()).then_some(())
        })
    }

    #[test]
    fn tls_echo_both_ways_and_close_notify() {
        let (server_config, client_config) = configs();
        let (sock, server) = pair();
        let mut t = Transport::tls(server, &server_config).unwrap();
        assert!(t.handshaking());
        let small = b"hello over tls".to_vec();
        let big = pattern(MIB);
        let sent = [small.clone(), big.clone()].concat();
        let client = thread::spawn(move || {
            let mut c = tls_client(sock, client_config);
            c.write_all(&sent).unwrap();
            let mut echo = vec![0; sent.len()];
            c.read_exact(&mut echo).unwrap();
            assert!(echo == sent, "echo differs");
            c.conn.send_close_notify();
            c.flush().unwrap();
            // The server answers with its own close_notify: a clean end, Ok(0).
            assert_eq!(c.read(&mut [0; 16]).unwrap(), 0);
        });

        // Echo until the client's close_notify, keeping what the transport did not take.
        let mut buf = vec![0; 16 * 1024];
        let mut out = Vec::new();
        let mut total = 0;
        until(|| {
            loop {
                match t.read(&mut buf) {
                    Ok(0) => return Some(()),
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        total += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            if !out.is_empty() {
                match t.write(&out) {
                    Ok(n) => drop(out.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
            t.flush_tls().unwrap();
            None
        });
        assert!(!t.handshaking());
        assert_eq!(total, small.len() + big.len());
        write_all(&mut t, &out);
        t.close_notify();
        write_all(&mut t, &[]);
        t.shutdown_write().unwrap();
        client.join().unwrap();
    }

    #[test]
    fn tls_server_sends_large_then_closes() {
        let (server_config, client_config) = configs();
        let (sock, server) = pair();
        let mut t = Transport::tls(server, &server_config).unwrap();
        let client = thread::spawn(move || {
            let mut c = tls_client(sock, client_config);
            c.write_all(b"go").unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap(); // Ok only on a close_notify
            got
        });
        let mut buf = [0; 64];
        let n = until(|| match t.read(&mut buf) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("read: {e}"),
        });
        assert_eq!(&buf[..n], b"go");
        let big = pattern(MIB);
        write_all(&mut t, &big);
        t.close_notify();
        write_all(&mut t, &[]);
        assert!(client.join().unwrap() == big, "payload differs");
    }

    #[test]
    fn tcp_eof_without_close_notify_ends_the_stream() {
        let (server_config, client_config) = configs();
        let (sock, server) = pair();
        let mut t = Transport::tls(server, &server_config).unwrap();
        let client = thread::spawn(move || {
            let mut c = tls_client(sock, client_config);
            c.write_all(b"bye").unwrap();
            c.sock.shutdown(Shutdown::Write).unwrap();
            // Drain (session tickets, then EOF) so that closing sends no reset.
            let _ = c.sock.read_to_end(&mut Vec::new());
        });
        let mut got = Vec::new();
        until(|| {
            let mut buf = [0; 64];
            match t.read(&mut buf) {
                Ok(0) => Some(()),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => panic!("read: {e}"),
            }
        });
        assert_eq!(got, b"bye");
        drop(t);
        client.join().unwrap();
    }

    #[test]
    fn plain_http_to_tls_is_invalid_data() {
        let (server_config, _) = configs();
        let (mut sock, server) = pair();
        let mut t = Transport::tls(server, &server_config).unwrap();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let err = until(|| match t.read(&mut [0; 64]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            other => Some(other),
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // The client got a TLS alert record (content type 21) before the error came back.
        let mut alert = [0; 1];
        sock.read_exact(&mut alert).unwrap();
        assert_eq!(alert[0], 21);
    }

    #[test]
    fn plain_passes_through_and_registers() {
        let (mut sock, server) = pair();
        let mut t = Transport::Plain(server);
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.registry()
            .register(&mut t, Token(7), Interest::READABLE)
            .unwrap();
        poll.registry()
            .reregister(&mut t, Token(7), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        sock.write_all(b"ping").unwrap();
        until(|| {
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            events
                .iter()
                .find(|e| e.token() == Token(7) && e.is_readable())
                .map(|_| ())
        });
        let mut buf = [0; 16];
        assert_eq!(t.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        assert!(!t.handshaking() && !t.wants_write());
        t.close_notify();
        assert_eq!(t.write(b"pong").unwrap(), 4);
        t.flush_tls().unwrap();
        t.shutdown_write().unwrap();
        let mut back = Vec::new();
        sock.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"pong");
        poll.registry().deregister(&mut t).unwrap();
    }
}
