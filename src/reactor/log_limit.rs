//! Warnings that repeat, summarised: at most one log line per interval, saying how many times
//! it happened since the last line (a flood of refused connections, publishes dropped while
//! Redis is down), so that an operator can read the log under attack.

use std::time::{Duration, Instant};

/// Counts events of one kind and says when a line is due: the first event logs at once, later
/// ones at most once per interval, with the count since the last line.
///
/// ```text
/// if let Some(n) = refused.add(1, now) {
///     log::warn!("{peer}: refused, max_connections reached ({n} since the last warning)");
/// }
/// ```
#[derive(Debug)]
pub(crate) struct RepeatWarn {
    every: Duration,
    /// When the last line was logged.
    logged: Option<Instant>,
    /// Events since then.
    unreported: u64,
}

impl RepeatWarn {
    /// A summariser that logs at most once per `every`.
    pub(crate) const fn new(every: Duration) -> RepeatWarn {
        RepeatWarn {
            every,
            logged: None,
            unreported: 0,
        }
    }

    /// Counts `n` events at `now`; `Some(count)` when a line is due, with the events it reports
    /// (this one included), which then start again from zero.
    pub(crate) fn add(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.unreported += n;
        self.flush(now)
    }

    /// `Some(count)` if events are unreported and a line is due at `now` (for a periodic
    /// check, so that the last of a burst is reported without waiting for another event).
    pub(crate) fn flush(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .logged
            .is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if self.unreported == 0 || !due {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_logs_then_one_line_per_interval_with_the_count() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = RepeatWarn::new(Duration::from_secs(1));
        assert_eq!(w.add(1, t0), Some(1));
        // 539 refusals within the second: no line.
        for i in 0..539 {
            assert_eq!(w.add(1, ms(1 + i)), None);
        }
        assert_eq!(w.flush(ms(999)), None);
        // The next event after the interval reports all of them, itself included.
        assert_eq!(w.add(1, ms(1000)), Some(540));
        assert_eq!(w.add(2, ms(1500)), None);
        // A periodic flush reports the tail without another event, once.
        assert_eq!(w.flush(ms(2000)), Some(2));
        assert_eq!(w.flush(ms(3500)), None);
        // After a quiet spell the next event logs at once.
        assert_eq!(w.add(1, ms(9000)), Some(1));
    }

    #[test]
    fn counts_add_up_and_a_clock_going_back_logs_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut w = RepeatWarn::new(Duration::from_secs(5));
        assert_eq!(w.add(3, t0), Some(3));
        assert_eq!(w.add(4, t0 - Duration::from_secs(1)), None);
        assert_eq!(w.add(0, t0 + Duration::from_secs(5)), Some(4));
        assert_eq!(w.add(0, t0 + Duration::from_secs(20)), None);
    }
}
