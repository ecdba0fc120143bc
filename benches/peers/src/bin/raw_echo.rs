//! The ceiling: a raw TCP echo on mio that bounces every byte back unparsed, with the same
//! reactor shape as wsloop (one thread, one poll, edge-triggered, one shared read buffer) and
//! the fewest system calls: one read and one write per batch of bytes.
//!
//! `raw_echo [--addr 127.0.0.1:9004]`. It does no WebSocket handshake and no framing: drive it
//! with `load --raw-echo`, which sends masked frames without a handshake and accepts them back
//! masked, so the ceiling moves the same bytes per message as a WebSocket echo.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    sock: TcpStream,
    /// Bytes the socket did not take yet; reading pauses until they are written.
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:9004".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--addr", Some(v)) => addr = v,
            _ => {
                eprintln!("usage: raw_echo [--addr HOST:PORT]");
                std::process::exit(2);
            }
        }
    }
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr.parse().expect("bad --addr"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("raw echo listening on {}", listener.local_addr()?);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            let _ = sock.set_nodelay(true);
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut sock,
                                Token(i),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns[i] = Some(Conn {
                                sock,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if pump(conn, &mut scratch).is_err() {
                if let Some(mut c) = conns[i].take() {
                    let _ = poll.registry().deregister(&mut c.sock);
                }
                free.push(i);
            }
        }
    }
}

/// Writes what is pending, then echoes reads until `WouldBlock`. `Err` ends the connection.
fn pump(conn: &mut Conn, scratch: &mut [u8]) -> io::Result<()> {
    if !flush(conn)? {
        return Ok(());
    }
    loop {
        let n = match conn.sock.read(scratch) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        conn.pending.extend_from_slice(&scratch[..n]);
        if !flush(conn)? {
            return Ok(());
        }
        // A short read drained the socket; edge-triggered readiness reports the next arrival,
        // so the read that would only say `WouldBlock` is skipped (as tokio does).
        if n < scratch.len() {
            return Ok(());
        }
    }
}

/// Writes pending bytes; `Ok(true)` once none are left.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let mut done = 0;
    while done < conn.pending.len() {
        match conn.sock.write(&conn.pending[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.pending.drain(..done);
    Ok(conn.pending.is_empty())
}
