//! `--metrics ADDR`: a listener of its own that answers `GET /metrics` with the server's
//! [`Metrics`] in the Prometheus text format.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use wsloop::{HandleError, Metrics};

/// How long a scrape may take to send its request, and the reactors to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Listens on `addr` (failing now if it cannot) and serves `metrics()` from a thread of its
/// own; returns the bound address.
pub fn serve(
    addr: &str,
    metrics: impl Fn(Duration) -> Result<Metrics, HandleError> + Send + 'static,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("--metrics {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &metrics) {
                    log::debug!("metrics: {e}");
                }
            }
        })?;
    Ok(bound)
}

/// Answers one request: the metrics for `GET /metrics`, 404 for any other path.
fn answer(
    mut stream: TcpStream,
    metrics: &impl Fn(Duration) -> Result<Metrics, HandleError>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let path = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let (status, kind, body) = match (line.starts_with(b"GET "), path) {
        (true, b"/metrics") => match metrics(TIMEOUT) {
            Ok(m) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                m.to_prometheus(),
            ),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        },
        _ => ("404 Not Found", "text/plain", "try GET /metrics\n".into()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}
