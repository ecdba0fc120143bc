//! Counters: what the threads share while they run, and what each hands back at the end.

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
    /// Echoes or deliveries that never came (also counted in `errors`).
    pub lost: u64,
    /// How long connecting took, and the window.
    pub connect_secs: f64,
    pub window_secs: f64,
    /// CPU seconds used over this thread's window (by the whole process, the server and the
    /// machine).
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
