//! Connection deadlines in a heap: the cost of a turn does not grow with the number of
//! connections, only with the number of deadlines that are due.
//!
//! Entries are [`Millis`] of the endpoint's clock with a slot index and generation: 16 bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::proto::clock::Millis;

/// A connection's `armed` value when no deadline is armed.
pub(crate) const UNARMED: Millis = Millis::MAX;

/// Deadlines of connections, by slot index and generation. Entries are never removed early:
/// a connection remembers the deadline it armed, and an entry that no longer matches it (or
/// whose connection is gone) is skipped when it comes up.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Millis, u32, u32)>>,
}

impl Timers {
    /// Arms a deadline for the connection at `index`/`generation` unless `armed` already
    /// holds an earlier one; updates `armed`.
    pub(crate) fn arm(&mut self, armed: &mut Millis, index: u32, generation: u32, at: Millis) {
        if at < *armed {
            *armed = at;
            self.heap.push(Reverse((at, index, generation)));
        }
    }

    /// Pops the earliest entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Millis) -> Option<(Millis, u32, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, ..))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, ..))| *at)
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
}
