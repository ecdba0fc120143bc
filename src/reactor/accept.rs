//! Accepting without stalls: room for the descriptors up front, and accepting again after
//! `accept` failed for lack of resources (file descriptors, memory).
//!
//! The listener is edge-triggered: connections left in its queue when `accept` fails raise no
//! new event, so the reactor must come back to them itself: when a connection closes (which
//! frees a descriptor) and on a short timer while the failure lasts.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use super::log_limit::RepeatWarn;

/// Grows the process's descriptor table to hold `count` more descriptors than the lowest free
/// one, at once rather than while connections are accepted (Linux; elsewhere it does nothing).
///
/// Linux doubles the table as descriptors are opened, and in a process with more than one
/// thread each doubling waits for an RCU grace period (`synchronize_rcu` in
/// `expand_fdtable`): 5 to 13 ms measured on a 2-core VM, during which `accept4` blocks and
/// every handshake in flight waits (the p99 of a burst of 5,000 handshakes was 13-21 ms for
/// that alone). The table never shrinks, so opening copies of `fd` up to the number needed and
/// closing them again leaves it grown: two syscalls per descriptor, once (about 10 ms for
/// 10,000); nothing when the table (`FDSize` in /proc/self/status) is large enough already;
/// it stops early at the descriptor limit (`EMFILE`).
pub(crate) fn reserve_descriptors(fd: impl AsFd, count: usize) {
    let Some(size) = fd_table_size() else {
        return;
    };
    let Ok(lowest) = fd.as_fd().try_clone_to_owned() else {
        return;
    };
    let target = lowest.as_raw_fd() as usize + count;
    if size >= target {
        return;
    }
    // Dropped (closed) on return.
    let mut copies = vec![lowest];
    loop {
        match fd.as_fd().try_clone_to_owned() {
            Ok(copy) if copy.as_raw_fd() as usize + 1 >= target => return,
            Ok(copy) => copies.push(copy),
            Err(_) => return,
        }
    }
}

/// The size of the process's descriptor table (`FDSize` in /proc/self/status, Linux).
fn fd_table_size() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("FDSize:"))?;
    line["FDSize:".len()..].trim().parse().ok()
}

/// How soon accepting is tried again while it fails.
const RETRY: Duration = Duration::from_millis(100);
/// How often the failure is logged while it lasts.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Whether, and when, accepting is to be tried again.
#[derive(Debug)]
pub(crate) struct AcceptRetry {
    /// While accepting fails: when to try again, and how many connections were open then.
    pending: Option<(Instant, usize)>,
    /// The failures, logged as a count per `WARN_EVERY`.
    warn: RepeatWarn,
}

impl Default for AcceptRetry {
    fn default() -> AcceptRetry {
        AcceptRetry {
            pending: None,
            warn: RepeatWarn::new(WARN_EVERY),
        }
    }
}

impl AcceptRetry {
    /// Records that `accept` failed with `error` while `open` connections were open.
    pub(crate) fn failed(&mut self, error: &io::Error, open: usize, now: Instant) {
        self.pending = Some((now + RETRY, open));
        if let Some(n) = self.warn.add(1, now) {
            log::warn!(
                "accept failed: {error} ({n} time(s) since the last warning); accepting again \
                 when a connection closes, or in {RETRY:?}"
            );
        }
    }

    /// Whether to accept again now: a connection closed or the retry time came. Clears the
    /// retry (a new failure sets it again).
    pub(crate) fn take_due(&mut self, open: usize, now: Instant) -> bool {
        let due = (self.pending).is_some_and(|(at, was_open)| now >= at || open < was_open);
        if due {
            self.pending = None;
        }
        due
    }

    /// How long the poll may wait before the next retry, if one is pending.
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        self.pending
            .map(|(at, _)| at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_when_a_connection_closes_or_the_timer_fires() {
        let t0 = Instant::now();
        let mut retry = AcceptRetry::default();
        assert!(!retry.take_due(10, t0));
        let emfile = io::Error::other("too many open files");
        retry.failed(&emfile, 10, t0);
        assert_eq!(retry.timeout(t0), Some(RETRY));
        assert!(!retry.take_due(10, t0));
        assert!(retry.take_due(9, t0), "a connection closed");
        assert!(!retry.take_due(9, t0), "cleared until the next failure");
        retry.failed(&emfile, 10, t0);
        assert!(retry.take_due(10, t0 + RETRY));
        assert_eq!(retry.timeout(t0), None);
    }

    /// The soft limit on open descriptors, from /proc (Linux).
    fn fd_limit() -> Option<usize> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    #[test]
    fn reserving_grows_the_descriptor_table_and_closes_the_copies() {
        let (Some(before), Some(limit)) = (fd_table_size(), fd_limit()) else {
            eprintln!("no /proc/self/status here: skipped");
            return;
        };
        let want = (before * 4).min(limit - 64);
        assert!(want > before, "limit {limit} too low to test with");
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        reserve_descriptors(&socket, want);
        let grown = fd_table_size().unwrap();
        assert!(grown >= want, "{grown} < {want}");
        // The copies are closed: the next descriptor is a low one again.
        let next = socket.try_clone().unwrap();
        assert!((next.as_raw_fd() as usize) < before, "{}", next.as_raw_fd());
        // Large enough already: nothing more.
        reserve_descriptors(&socket, want / 2);
        assert_eq!(fd_table_size(), Some(grown));
    }
}
