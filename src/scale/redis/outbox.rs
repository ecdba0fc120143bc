//! The publishing thread's outbox: every publish from the moment the thread takes it until Redis
//! confirms it, in order, bounded in age and in bytes. While Redis is down or stalled the
//! publishes wait here, and are sent again on the next connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One publish: the channel's bytes, then the payload's, where the first end, and when it was
/// published.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) bytes: Vec<u8>,
    pub(super) channel: usize,
    pub(super) at: Instant,
}

/// The publishes not confirmed by Redis yet, oldest first; the first [`sent`](Self::sent) are
/// written to the current connection and await their answers.
#[derive(Debug)]
pub(super) struct Outbox {
    items: VecDeque<Pending>,
    bytes: usize,
    max_bytes: usize,
    max_age: Duration,
    /// How many at the front are sent on the current connection, unanswered.
    pub(super) sent: usize,
}

/// What [`Outbox::expire`] took out: the publishes past a bound, and how many of them had
/// been sent (their connection is given up).
#[derive(Debug, Default)]
pub(super) struct Expired {
    pub(super) dropped: Vec<Pending>,
    pub(super) were_sent: usize,
}

impl Outbox {
    pub(super) fn new(max_bytes: usize, max_age: Duration) -> Outbox {
        Outbox {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_age,
            sent: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn push(&mut self, pending: Pending) {
        self.bytes += pending.bytes.len();
        self.items.push_back(pending);
    }

    /// Takes out, oldest first, what is older than the age bound at `now`, and what is over the
    /// byte bound (never the newest publish: one publish of any size gets through).
    pub(super) fn expire(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        while let Some(front) = self.items.front() {
            let old = now.saturating_duration_since(front.at) > self.max_age;
            let over = self.bytes > self.max_bytes && self.items.len() > 1;
            if !(old || over) {
                break;
            }
            if self.sent > 0 {
                self.sent -= 1;
                out.were_sent += 1;
            }
            out.dropped.extend(self.pop());
        }
        out
    }

    /// Redis answered the oldest sent publish: it leaves the outbox.
    pub(super) fn answered(&mut self) -> Option<Pending> {
        self.sent = self.sent.checked_sub(1)?;
        self.pop()
    }

    /// The publishes not sent yet, oldest first.
    pub(super) fn unsent(&self) -> impl Iterator<Item = &Pending> {
        self.items.iter().skip(self.sent)
    }

    /// Everything left, for the end of the thread.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Pending> + '_ {
        self.bytes = 0;
        self.sent = 0;
        self.items.drain(..)
    }

    fn pop(&mut self) -> Option<Pending> {
        let pending = self.items.pop_front()?;
        self.bytes -= pending.bytes.len();
        Some(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: usize, at: Instant) -> Pending {
        Pending {
            bytes: vec![b'x'; n],
            channel: 1,
            at,
        }
    }

    #[test]
    fn the_oldest_go_past_either_bound_and_sent_ones_are_counted() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut outbox = Outbox::new(100, Duration::from_secs(10));
        for i in 0..4 {
            outbox.push(pending(20, s(i)));
        }
        outbox.sent = 2;
        assert_eq!(outbox.unsent().count(), 2);
        // Within both bounds: nothing goes.
        assert!(outbox.expire(s(10)).dropped.is_empty());
        // Past the age of the first two (sent): they go, and are said to have been sent.
        let expired = outbox.expire(s(12));
        assert_eq!((expired.dropped.len(), expired.were_sent), (2, 2));
        assert_eq!((outbox.len(), outbox.sent), (2, 0));
        // Over the byte bound: the oldest go until it holds, never the newest.
        outbox.push(pending(50, s(12)));
        outbox.push(pending(500, s(12)));
        let expired = outbox.expire(s(12));
        assert_eq!(expired.dropped.len(), 3);
        assert_eq!((outbox.len(), outbox.bytes), (1, 500));
        assert!(outbox.answered().is_none(), "nothing was sent");
        outbox.sent = 1;
        assert_eq!(outbox.answered().map(|p| p.bytes.len()), Some(500));
        assert_eq!((outbox.len(), outbox.bytes, outbox.sent), (0, 0, 0));
    }
}
