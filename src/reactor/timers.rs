//! Connection deadlines in a heap: the cost of a turn does not grow with the number of
//! connections, only with the number of deadlines that are due.
//!
//! Entries are 12 bytes: a deadline in milliseconds after the heap's `base` (32 bits), a slot
//! index and a generation. A deadline further than 32 bits of milliseconds (49 days) after
//! `base` is armed at the furthest one there is instead: it comes early, the connection finds
//! nothing due and arms again. `base` moves up towards the present once it is 24 days behind,
//! so that deadlines of the next 24 days and more fit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::proto::clock::Millis;

/// A connection's `armed` value when no deadline is armed.
pub(crate) const UNARMED: Millis = Millis::MAX;

/// How far the present may get from `base` before `base` moves up.
const REBASE_AFTER: Millis = 1 << 31;

/// Deadlines of connections, by slot index and generation. Entries are never removed early:
/// a connection remembers the deadline it armed, and an entry that no longer matches it (or
/// whose connection is gone) is skipped when it comes up.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Entries as (deadline - `base`, index, generation).
    heap: BinaryHeap<Reverse<(u32, u32, u32)>>,
    base: Millis,
}

impl Timers {
    /// Arms a deadline at `at` (or at the furthest one the heap holds, if earlier) for the
    /// connection at `index`/`generation` unless `armed` already holds an earlier one; updates
    /// `armed`.
    pub(crate) fn arm(&mut self, armed: &mut Millis, index: u32, generation: u32, at: Millis) {
        if at >= *armed {
            return; // what is armed is earlier, or the same
        }
        let offset = at.saturating_sub(self.base).min(u32::MAX.into());
        let at = self.base + offset;
        if at < *armed {
            *armed = at;
            // Within u32 by the `min` above.
            self.heap.push(Reverse((offset as u32, index, generation)));
        }
    }

    /// Pops the earliest entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Millis) -> Option<(Millis, u32, u32)> {
        if now.saturating_sub(self.base) >= REBASE_AFTER {
            self.rebase(now);
        }
        match self.heap.peek() {
            Some(&Reverse((offset, ..))) if self.base + Millis::from(offset) <= now => {
                let Reverse((offset, index, generation)) = self.heap.pop()?;
                Some((self.base + Millis::from(offset), index, generation))
            }
            _ => None,
        }
    }

    /// Moves `base` up to `now`, or to the earliest deadline if that is earlier: every
    /// deadline stays where it was.
    fn rebase(&mut self, now: Millis) {
        let earliest = self.heap.peek().map(|Reverse((offset, ..))| *offset);
        let by = earliest.map_or(now - self.base, |e| Millis::from(e).min(now - self.base));
        let entries = std::mem::take(&mut self.heap).into_vec();
        // At most the earliest offset, so no offset goes below 0.
        let moved = (entries.into_iter()).map(|Reverse((offset, index, generation))| {
            Reverse(((Millis::from(offset) - by) as u32, index, generation))
        });
        self.heap = moved.collect();
        self.base += by;
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Millis> {
        (self.heap.peek()).map(|Reverse((offset, ..))| self.base + Millis::from(*offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::clock::span;
    use std::time::Duration;

    #[test]
    fn spans_round_up_and_deadlines_come_in_order() {
        assert_eq!(span(Duration::ZERO), 1);
        assert_eq!(span(Duration::from_micros(1)), 2);
        assert_eq!(span(Duration::from_millis(5)), 6);
        assert_eq!(span(Duration::MAX), Millis::MAX / 2);
        let mut timers = Timers::default();
        let (mut a, mut b) = (UNARMED, UNARMED);
        timers.arm(&mut a, 1, 0, 30);
        timers.arm(&mut b, 2, 0, 10);
        timers.arm(&mut a, 1, 0, 40); // later than what is armed: ignored
        assert_eq!((a, b), (30, 10));
        assert_eq!(timers.pop_due(9), None);
        assert_eq!(timers.pop_due(30), Some((10, 2, 0)));
        assert_eq!(timers.pop_due(30), Some((30, 1, 0)));
        assert_eq!(timers.pop_due(1000), None);
        assert!(timers.next().is_none());
    }

    #[test]
    fn a_far_deadline_comes_early_and_years_of_uptime_keep_their_order() {
        let mut timers = Timers::default();
        let far = span(Duration::from_secs(10 * 365 * 86_400));
        let mut armed = UNARMED;
        timers.arm(&mut armed, 1, 0, far);
        let early = Millis::from(u32::MAX);
        assert_eq!(armed, early, "the furthest deadline the heap holds");
        assert_eq!(timers.pop_due(early), Some((early, 1, 0)));
        // The connection arms again each time, and the base moves up.
        let (mut now, mut wakeups) = (early, 0);
        armed = UNARMED;
        timers.arm(&mut armed, 1, 0, far);
        while let Some((at, 1, 0)) = timers.pop_due(timers.next().unwrap_or(far)) {
            assert!(at > now && at <= far, "{at} after {now}");
            assert_eq!(at, armed);
            now = at;
            wakeups += 1;
            if at == far {
                break;
            }
            armed = UNARMED;
            timers.arm(&mut armed, 1, 0, far);
        }
        assert_eq!(now, far, "it comes at last");
        assert!(
            wakeups <= far / REBASE_AFTER,
            "{wakeups} early in ten years"
        );

        // Deadlines from either side of a rebase come in order, at the times armed, and a
        // reactor that did not look for weeks catches up.
        let mut timers = Timers::default();
        let t = 5 * REBASE_AFTER;
        let (mut a, mut b, mut c) = (UNARMED, UNARMED, UNARMED);
        timers.arm(&mut a, 1, 7, 1000);
        timers.arm(&mut b, 2, 8, 2000);
        assert_eq!(timers.pop_due(t), Some((1000, 1, 7)), "weeks late");
        assert_eq!(timers.base, 1000);
        assert_eq!(timers.pop_due(t), Some((2000, 2, 8)));
        assert_eq!(timers.pop_due(t), None);
        assert_eq!(timers.base, t);
        let latest = t + 3 * REBASE_AFTER / 2; // too far from the old base
        timers.arm(&mut c, 3, 9, latest);
        assert_eq!(c, latest);
        assert_eq!(timers.pop_due(latest), Some((latest, 3, 9)));
    }
}
