//! Accepting again after `accept` failed for lack of resources (file descriptors, memory).
//!
//! The listener is edge-triggered: connections left in its queue when `accept` fails raise no
//! new event, so the reactor must come back to them itself: when a connection closes (which
//! frees a descriptor) and on a short timer while the failure lasts.

use std::io;
use std::time::{Duration, Instant};

/// How soon accepting is tried again while it fails.
const RETRY: Duration = Duration::from_millis(100);
/// How often the failure is logged while it lasts.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Whether, and when, accepting is to be tried again.
#[derive(Debug, Default)]
pub(crate) struct AcceptRetry {
    /// While accepting fails: when to try again, and how many connections were open then.
    pending: Option<(Instant, usize)>,
    /// When the failure was last logged.
    warned: Option<Instant>,
    /// Failures since then.
    unreported: usize,
}

impl AcceptRetry {
    /// Records that `accept` failed with `error` while `open` connections were open.
    pub(crate) fn failed(&mut self, error: &io::Error, open: usize, now: Instant) {
        self.pending = Some((now + RETRY, open));
        self.unreported += 1;
        if self.warned.is_none_or(|at| now >= at + WARN_EVERY) {
            log::warn!(
                "accept failed: {error} ({} time(s) since the last warning); accepting again \
                 when a connection closes, or in {RETRY:?}",
                self.unreported
            );
            self.warned = Some(now);
            self.unreported = 0;
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
}
