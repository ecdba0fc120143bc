//! The ceiling: a raw TCP echo on mio that bounces every byte back unparsed, with the same
//! reactor shape as wsloop (one thread, one poll, edge-triggered, one shared read buffer) and
//! the fewest system calls: one read and one write per batch of bytes.
//!
//! `raw_echo [--addr 127.0.0.1:9004] [--whole]`. It does no WebSocket handshake and no framing:
//! drive it with `wsloop bench --raw-echo`, which sends masked frames without a handshake and
//! accepts them back masked, so the ceiling moves the same bytes per message as a WebSocket echo.
//!
//! `--whole` holds each frame until all of it has arrived before bouncing it (reading only its
//! header's length, still no unmasking or checks), as a server that hands whole messages to its
//! application must: what that alone costs a large echo, against bouncing bytes as they come.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    sock: TcpStream,
    /// Bytes the socket did not take yet; reading pauses until they are written.
    pending: Vec<u8>,
    /// `--whole`: the start of a frame that has not all arrived.
    held: Vec<u8>,
}

/// The length of the frame at the start of `bytes` (header, mask key and payload), once its
/// header has arrived.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let (&b1, rest) = bytes.get(1).map(|b| (b, &bytes[2..]))?;
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    let (ext, payload) = match b1 & 0x7f {
        126 => (2, u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize),
        127 => (8, u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize),
        n => (0, n as usize),
    };
    Some(2 + ext + mask + payload)
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:9004".to_string();
    let mut whole = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--whole" => whole = true,
            "--addr" if args.len() > 0 => addr = args.next().expect("checked"),
            _ => {
                eprintln!("usage: raw_echo [--addr HOST:PORT] [--whole]");
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
                                held: Vec::new(),
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
            if pump(conn, &mut scratch, whole).is_err() {
                if let Some(mut c) = conns[i].take() {
                    let _ = poll.registry().deregister(&mut c.sock);
                }
                free.push(i);
            }
        }
    }
}

/// Writes what is pending, then echoes reads until `WouldBlock` (with `whole`, whole frames
/// only). `Err` ends the connection.
fn pump(conn: &mut Conn, scratch: &mut [u8], whole: bool) -> io::Result<()> {
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
        if whole {
            conn.held.extend_from_slice(&scratch[..n]);
            let mut done = 0;
            while let Some(len) = frame_len(&conn.held[done..]) {
                if conn.held.len() - done < len {
                    break;
                }
                done += len;
            }
            if done == conn.held.len() && conn.pending.is_empty() {
                // The usual case: no copy.
                std::mem::swap(&mut conn.pending, &mut conn.held);
            } else {
                conn.pending.extend_from_slice(&conn.held[..done]);
                conn.held.drain(..done);
            }
            // Room for the rest of a frame at once, as wsloop makes it: no regrowth.
            if let Some(len) = frame_len(&conn.held) {
                conn.held.reserve(len.saturating_sub(conn.held.len()));
            }
        } else {
            conn.pending.extend_from_slice(&scratch[..n]);
        }
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
