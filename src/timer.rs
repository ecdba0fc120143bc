//! Connection deadlines in a heap: the cost of a turn does not grow with the number of
//! connections, only with the number of deadlines that are due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines of connections, by slot index and generation. Entries are never removed early:
/// a connection remembers the deadline it armed, and an entry that no longer matches it (or
/// whose connection is gone) is skipped when it comes up.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

impl Timers {
    /// Arms a deadline for the connection at `index`/`generation` unless `armed` already
    /// holds an earlier one; updates `armed`.
    pub(crate) fn arm(
        &mut self,
        armed: &mut Option<Instant>,
        index: usize,
        generation: u32,
        at: Instant,
    ) {
        if armed.is_none_or(|current| at < current) {
            *armed = Some(at);
            self.heap.push(Reverse((at, index, generation)));
        }
    }

    /// Pops the earliest entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, ..))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, ..))| *at)
    }
}
