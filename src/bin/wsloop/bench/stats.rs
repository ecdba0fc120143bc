//! Counters: what the threads share while they run, and what each hands back at the end.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// A histogram of nanoseconds, from 1 ns to an hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Counters the threads add to (every 250 ms) and the progress line reads.
pub struct Live {
    /// Connections open, and failed.
    pub established: AtomicUsize,
    pub failed: AtomicUsize,
    /// Echoes (or deliveries) verified.
    pub verified: AtomicU64,
    pub errors: AtomicU64,
    /// Latencies since the progress line last took them.
    pub interval: Mutex<Histogram<u64>>,
    /// Fan-out messages sent by all publishers (added once the window is over).
    pub fanout_sent: AtomicU64,
}

impl Live {
    /// All zero.
    pub fn new() -> Live {
        Live {
            established: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            verified: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            interval: Mutex::new(new_histogram()),
            fanout_sent: AtomicU64::new(0),
        }
    }
}

/// What one thread measured.
pub struct Outcome {
    /// Latency of every verified echo or delivery (ns).
    pub latency: Histogram<u64>,
    /// Time from starting a connect to the verified 101 answer (ns).
    pub handshakes: Histogram<u64>,
    /// Echoes or deliveries verified within the window.
    pub counted: u64,
    /// Messages sent.
    pub sent: u64,
    pub established: usize,
    pub failed: usize,
    pub errors: u64,
    pub first_errors: Vec<String>,
    /// Failed connections by cause.
    pub failures: BTreeMap<Cause, u64>,
    /// Churn: connections that went through their whole life within the window.
    pub cycles: u64,
    /// Echoes or deliveries that never came (also counted in `errors`).
    pub lost: u64,
    /// How long connecting took, and the window.
    pub connect_secs: f64,
    pub window_secs: f64,
    /// CPU seconds used over this thread's window, or in connect mode while connecting (by
    /// the whole process, the server and the machine).
    pub cpu: CpuUse,
}

/// CPU seconds: of this process, of the server (given its pid), of the whole machine.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub client: f64,
    pub server: Option<f64>,
    /// All cores, everything (this process, the server, anyone else).
    pub machine: Option<f64>,
}

impl CpuUse {
    /// The counters now.
    pub fn now(server_pid: Option<u32>) -> CpuUse {
        CpuUse {
            client: crate::sys::own_cpu(),
            server: server_pid.and_then(crate::sys::process_cpu),
            machine: crate::sys::machine_busy(),
        }
    }

    /// What was used since `earlier`.
    pub fn since(self, earlier: CpuUse) -> CpuUse {
        let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        CpuUse {
            client: self.client - earlier.client,
            server: diff(self.server, earlier.server),
            machine: diff(self.machine, earlier.machine),
        }
    }
}

/// Why a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// No local port was free (EADDRNOTAVAIL, or EADDRINUSE when binding a source address).
    NoPort,
    /// Out of file descriptors (EMFILE, ENFILE).
    NoFile,
    /// Connection refused.
    Refused,
    /// Reset by the server.
    Reset,
    /// Timed out, or not finished by the end of the run.
    Timeout,
    /// The server refused the upgrade.
    Upgrade,
    /// The server closed the connection before its time.
    Closed,
    /// A protocol error, or a wrong or missing echo.
    Protocol,
    /// Any other socket error.
    Other,
}

impl Cause {
    /// The cause of a socket error.
    pub fn of(e: &io::Error) -> Cause {
        match e.kind() {
            io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => Cause::NoPort,
            io::ErrorKind::ConnectionRefused => Cause::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Cause::Reset,
            io::ErrorKind::TimedOut => Cause::Timeout,
            _ if matches!(e.raw_os_error(), Some(23 | 24)) => Cause::NoFile,
            _ => Cause::Other,
        }
    }

    /// Its name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Cause::NoPort => "no_free_port",
            Cause::NoFile => "no_free_fd",
            Cause::Refused => "refused",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
            Cause::Upgrade => "upgrade_refused",
            Cause::Closed => "closed_early",
            Cause::Protocol => "protocol",
            Cause::Other => "other",
        }
    }
}

/// A connection's failure: its cause and what happened.
#[derive(Debug)]
pub struct Failure {
    pub cause: Cause,
    pub what: String,
}

impl Failure {
    /// A socket error while doing `doing`.
    pub fn io(doing: &str, e: &io::Error) -> Failure {
        Failure {
            cause: Cause::of(e),
            what: format!("{doing}: {e}"),
        }
    }
}

impl From<String> for Failure {
    /// A protocol error (or a wrong echo).
    fn from(what: String) -> Failure {
        Failure {
            cause: Cause::Protocol,
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_by_cause() {
        let cause = |kind: io::ErrorKind| Cause::of(&io::Error::from(kind));
        assert_eq!(cause(io::ErrorKind::AddrNotAvailable), Cause::NoPort);
        assert_eq!(cause(io::ErrorKind::AddrInUse), Cause::NoPort);
        assert_eq!(cause(io::ErrorKind::ConnectionRefused), Cause::Refused);
        assert_eq!(cause(io::ErrorKind::ConnectionReset), Cause::Reset);
        assert_eq!(Cause::of(&io::Error::from_raw_os_error(24)), Cause::NoFile);
        assert_eq!(Cause::of(&io::Error::from_raw_os_error(99)), Cause::NoPort);
        assert_eq!(Failure::from("bad echo".to_string()).cause, Cause::Protocol);
    }
}
