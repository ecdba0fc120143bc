//! A WebSocket echo server on plain blocking `std::net`, one thread per connection, driving
//! wsloop's sans-IO [`Connection`] instead of wsloop's own reactor: what embedding wsloop's
//! protocol in another event loop takes.
//!
//! ```text
//! cargo run --example embed_std -- 127.0.0.1:9002
//! ```
//!
//! The loop owes the connection three things: the bytes it reads (`recv`, with the time), the
//! time when its next deadline comes (`poll_timeout` / `handle_timeout`: handshake, keepalive,
//! idle and close timeouts), and the writing out of what it queues (`transmit` / `advance`,
//! then a shutdown of writing once it `wants_shutdown`). It is done when `is_finished`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

use wsloop::proto::connection::{Connection, Endpoint, Event};
use wsloop::ConnectionConfig;

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1);
    let listener = TcpListener::bind(addr.as_deref().unwrap_or("127.0.0.1:9002"))?;
    println!("echo server on ws://{}/", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, ConnectionConfig::default()) {
                eprintln!("connection failed: {e}");
            }
        });
    }
    Ok(())
}

/// Serves one connection, echoing its messages, until it is finished.
///
/// # Errors
/// An I/O error on the stream.
pub fn serve(mut stream: TcpStream, config: ConnectionConfig) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut ep = Endpoint::new(config, Instant::now());
    let mut conn = Connection::server(&mut ep);
    let mut buf = vec![0u8; 16 * 1024];
    let mut shut = false;
    while !conn.is_finished() {
        // Wait for bytes, but not past the connection's next deadline.
        let now = Instant::now();
        let wait = (conn.poll_timeout(&ep)).map(|at| at.saturating_duration_since(now));
        let result = match wait {
            Some(wait) if wait.is_zero() => Err(ErrorKind::TimedOut.into()),
            _ => stream
                .set_read_timeout(wait)
                .and_then(|()| stream.read(&mut buf)),
        };
        match result {
            Ok(0) => {
                conn.handle_disconnect(&mut ep);
            }
            Ok(n) => conn.recv(&mut ep, Instant::now(), &mut buf[..n], on_event),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // A deadline came: a keepalive ping, an idle close, a timeout. (The event it
                // may return, `Closed(TimedOut)`, is for an application that tracks closes.)
                conn.handle_timeout(&mut ep, Instant::now());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // Write out what the connection queued: answers, echoes, pongs, close frames.
        while !conn.transmit().is_empty() {
            let n = stream.write(conn.transmit())?;
            if n == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
            conn.advance(&mut ep, n);
        }
        if conn.wants_shutdown() && !shut {
            // All said: send our FIN and wait for the peer's (or the close timeout).
            stream.shutdown(Shutdown::Write)?;
            shut = true;
        }
    }
    Ok(())
}

/// The application: accept every upgrade, echo every message.
fn on_event(conn: &mut Connection, ep: &mut Endpoint, event: Event<'_>) {
    match event {
        Event::Request(head) => {
            conn.answer(ep, head, |_request| Ok(None));
        }
        Event::Message(msg) => {
            // A full queue refuses the echo, or closes the connection (`on_overflow`).
            let _ = conn.send(ep, msg);
        }
        _ => {}
    }
}
