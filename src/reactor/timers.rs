//! Connection deadlines in a heap: the cost of a turn does not grow with the number of
//! connections, only with the number of deadlines that are due.
//!
//! Entries are 12 bytes: a deadline in milliseconds after the heap's `base` (32 bits), a slot
//! index and a generation. A deadline further than 32 bits of milliseconds (49 days) after
//! `base` is armed at the furthest one there is instead: it comes early, the connection finds
//! nothing due and arms again. `base` moves up to the present at least every 24 days (the
//! reactor wakes up for it), so that any deadline in the next 24 days fits.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::proto::clock::Millis;

/// A connection's `armed` value when no deadline is armed.
pub(crate) const UNARMED: Millis = Millis::MAX;

/// How far the present may get from `base` before `base` moves up to it.
const REBASE_AFTER: Millis = 1 << 31;

/// Deadlines of connections, by slot index and generation. Entries are never removed early:
/// a connection remembers the deadline it armed, and an entry that no longer matches it (or
/// whose connection is gone) is skipped when it comes up.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Entries as (deadline - `base`, index, generation).
    heap: BinaryHeap<Reverse<(u32, u32, u32)>>,
    base: Millis,
    /// The time of the last [`pop_due`](Self::pop_due).
    now: Millis,
}

impl Timers {
    /// Arms a deadline at `at` (or at the furthest one the heap holds, if earlier) for the
    /// connection at `index`/`generation` unless `armed` already holds an earlier one; updates
    /// `armed`.
    pub(crate) fn arm(&mut self, armed: &mut Millis, index: u32, generation: u32, at: Millis) {
        if self.heap.is_empty() {
            self.base = self.now;
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
        self.now = now;
        match self.heap.peek() {
            Some(&Reverse((offset, ..))) if self.base + Millis::from(offset) <= now => {
                let Reverse((offset, index, generation)) = self.heap.pop()?;
                Some((self.base + Millis::from(offset), index, generation))
            }
            _ => {
                if now - self.base.min(now) >= REBASE_AFTER {
                    self.rebase(now);
                }
                None
            }
        }
    }

    /// Moves `base` up to `now`, when no entry is due (every deadline stays where it was).
    fn rebase(&mut self, now: Millis) {
        let by = now - self.base;
        let entries = std::mem::take(&mut self.heap).into_vec();
        // Not due, so each offset is more than `by`.
        let moved = (entries.into_iter()).map(|Reverse((offset, index, generation))| {
            Reverse(((Millis::from(offset) - by) as u32, index, generation))
        });
        self.heap = moved.collect();
        self.base = now;
    }

    /// The earliest deadline, if any, or the time `base` is to move up, if earlier.
    pub(crate) fn next(&self) -> Option<Millis> {
        let Reverse((offset, ..)) = self.heap.peek()?;
        Some(self.base + Millis::from(*offset).min(REBASE_AFTER))
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
        // The connection arms again each time; the heap wakes up to move its base.
        armed = UNARMED;
        timers.arm(&mut armed, 1, 0, far);
        let (mut now, mut wakeups) = (early, 0);
        while let Some(at) = timers.next() {
            assert!(at > now && at <= far, "{at} after {now}");
            now = at;
            wakeups += 1;
            assert_eq!(timers.pop_due(now - 1), None);
            match timers.pop_due(now) {
                Some((at, 1, 0)) if at == far => break,
                Some((at, 1, 0)) => {
                    assert_eq!(at, armed);
                    armed = UNARMED;
                    timers.arm(&mut armed, 1, 0, far);
                }
                other => assert_eq!(other, None),
            }
        }
        assert_eq!(now, far, "it comes at last");
        // One wake-up every 24 days, the early deadlines among them.
        assert!(
            wakeups <= far / REBASE_AFTER + 1,
            "{wakeups} wake-ups in ten years"
        );

        // Deadlines from either side of a rebase come in order, at the times armed.
        let mut timers = Timers::default();
        let t = 5 * REBASE_AFTER;
        assert_eq!(timers.pop_due(t), None);
        let (mut a, mut b, mut c) = (UNARMED, UNARMED, UNARMED);
        let later = t + 3 * REBASE_AFTER / 2;
        timers.arm(&mut a, 1, 7, later);
        timers.arm(&mut b, 2, 8, t + 100);
        assert_eq!(timers.pop_due(t + 100), Some((t + 100, 2, 8)));
        assert_eq!(
            timers.next(),
            Some(t + REBASE_AFTER),
            "a wake-up to move the base"
        );
        assert_eq!(timers.pop_due(t + REBASE_AFTER), None);
        assert_eq!(timers.base, t + REBASE_AFTER);
        let latest = t + 5 * REBASE_AFTER / 2; // too far from the old base
        timers.arm(&mut c, 3, 9, latest);
        assert_eq!((a, c), (later, latest));
        assert_eq!(timers.pop_due(latest), Some((later, 1, 7)));
        assert_eq!(timers.pop_due(latest), Some((latest, 3, 9)));
    }
}
