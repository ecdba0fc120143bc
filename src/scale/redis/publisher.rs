//! The thread that sends publishes to Redis: it moves them from the reactors' queue into its
//! [`Outbox`], writes them in pipelined batches, and takes each out when Redis answers it.
//!
//! A connection that breaks (Redis closed it, was killed) is replaced after a backoff, and what
//! it had not answered is sent again on the next one, in order (so a publish whose answer was
//! lost with the connection may arrive twice). A connection that stalls (Redis frozen, or too
//! busy to answer within `io_timeout`) is kept, and counted as down, until it answers again: the
//! batch written to it is still in Redis' hands. Every `keepalive` meanwhile a fresh connection
//! is tried: if Redis answers it, the stalled one is dead instead (a network or NAT drop) and is
//! replaced, its unanswered publishes sent again. Either way, before sending again the thread
//! waits until as many subscribers listen as before (see [`Wait`]). Only what outlives the
//! outbox's bounds is dropped, counted, reported to the [`RedisRelay::on_dropped`] callback,
//! and logged once per second with the count.
//!
//! [`RedisRelay::on_dropped`]: super::RedisRelay::on_dropped

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, Value};

use super::outbox::{Outbox, Pending};
use super::{
    describe, open, Backoff, Handle, Life, Outage, Outgoing, RedisOptions, Shared, IDLE_CHECK,
    MAX_BATCH, MAX_BATCH_BYTES, TICK, WARN_EVERY,
};
use crate::reactor::log_limit::RepeatWarn;

/// What an answer on the publishing connection is the answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Publish,
    /// A PING: is the connection alive?
    Ping,
    /// A PUBLISH of an empty message on the bare prefix: how many subscribers listen?
    Probe,
}

/// The publishing connection, and the answers it owes.
///
/// The `redis` crate gives up on an answer whose read timed out: it skips the next answer
/// that comes instead (one per timed-out read). So reads are short (the thread keeps taking
/// publishes meanwhile), `skips` mirrors the crate's count, and an answer that comes confirms
/// everything sent before it.
struct Wire {
    conn: Connection,
    owed: VecDeque<Asked>,
    skips: usize,
    /// When Redis last answered (or the connection opened).
    heard: Instant,
    /// When the last PING or probe was sent.
    asked: Instant,
    /// No answer for `io_timeout`: counted as down until one comes.
    stalled: bool,
    /// When a fresh connection was last tried, while stalled.
    checked: Instant,
}

impl Wire {
    fn new(conn: Connection, now: Instant) -> Wire {
        // Short reads, so that the thread goes on taking publishes while it waits.
        let _ = conn.set_read_timeout(Some(TICK));
        Wire {
            conn,
            owed: VecDeque::new(),
            skips: 0,
            heard: now,
            asked: now,
            stalled: false,
            checked: now,
        }
    }

    fn send(&mut self, bytes: &[u8], asked: Asked, n: usize) -> Result<(), RedisError> {
        if self.owed.is_empty() {
            // The wait for an answer starts now.
            self.heard = Instant::now();
        }
        self.conn.send_packed_command(bytes)?;
        self.owed.extend(std::iter::repeat_n(asked, n));
        Ok(())
    }

    /// Whether every owed answer is one the crate will skip: reading again would wait for an
    /// answer to nothing (a PING gives it one).
    fn all_skipped(&self) -> bool {
        self.skips >= self.owed.len()
    }
}

/// Before sending again after an outage: wait until at least `receivers` subscribers listen
/// (as many as the last publish before it reached), or until `until`. Redis pub/sub keeps
/// nothing for a subscriber that has not subscribed again yet.
struct Wait {
    receivers: i64,
    until: Instant,
}

/// The publishing thread's state.
pub(super) struct Publisher {
    life: Life,
    options: RedisOptions,
    wire: Option<Wire>,
    outbox: Outbox,
    backoff: Backoff,
    /// When to try connecting again (while there is no connection).
    retry_at: Instant,
    outage: Option<Outage>,
    wait: Option<Wait>,
    /// Subscribers the last publish reached.
    receivers: i64,
    full: RepeatWarn,
    refused: RepeatWarn,
    expired: RepeatWarn,
    /// A batch being packed.
    batch: Vec<u8>,
}

impl Publisher {
    pub(super) fn new(
        shared: Arc<Shared>,
        handles: Vec<Handle>,
        options: RedisOptions,
        conn: Connection,
    ) -> Publisher {
        let now = Instant::now();
        Publisher {
            backoff: Backoff::new(&options),
            outbox: Outbox::new(options.outbox_bytes, options.outbox_time),
            life: Life {
                shared,
                handles,
                since: None,
            },
            options,
            wire: Some(Wire::new(conn, now)),
            retry_at: now,
            outage: None,
            wait: None,
            receivers: 0,
            full: RepeatWarn::new(WARN_EVERY),
            refused: RepeatWarn::new(WARN_EVERY),
            expired: RepeatWarn::new(WARN_EVERY),
            batch: Vec::new(),
        }
    }

    fn shared(&self) -> &Shared {
        &self.life.shared
    }

    pub(super) fn run(mut self, rx: Receiver<Outgoing>) {
        while !self.life.over() {
            self.report_full();
            let wait = self.idle_wait();
            if self.wants_more() {
                match rx.recv_timeout(wait) {
                    Ok(outgoing) => self.take(outgoing),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                while self.wants_more() {
                    let Ok(outgoing) = rx.try_recv() else { break };
                    self.take(outgoing);
                }
            } else {
                thread::sleep(wait);
            }
            self.expire();
            self.step();
        }
        // What is left is lost.
        while let Ok(outgoing) = rx.try_recv() {
            self.take(outgoing);
        }
        let left: Vec<Pending> = self.outbox.drain().collect();
        if !left.is_empty() {
            (self.shared().dropped).fetch_add(left.len() as u64, Ordering::Relaxed);
            log::warn!(
                "redis relay stopped: dropped {} publishes not confirmed by redis",
                left.len()
            );
            self.drop_all(&left);
        }
        self.shared().publisher_up.store(false, Ordering::Release);
    }

    fn take(&mut self, (bytes, channel, at): Outgoing) {
        self.outbox.push(Pending { bytes, channel, at });
    }

    /// Whether to take publishes from the queue now: all of them while Redis is down, stalled,
    /// or its subscribers are awaited (they wait in the outbox, within its bounds); otherwise
    /// a batch ahead of what is in flight (the queue holds the rest, within `queue`).
    fn wants_more(&self) -> bool {
        let flowing = self.wire.as_ref().is_some_and(|w| !w.stalled) && self.wait.is_none();
        !flowing || self.outbox.len() - self.outbox.sent < MAX_BATCH
    }

    /// How long to wait for publishes before the next step: not at all when there is
    /// something to read or to send.
    fn idle_wait(&self) -> Duration {
        match &self.wire {
            Some(wire) if !wire.all_skipped() => Duration::ZERO,
            Some(wire) if wire.owed.is_empty() && self.wait.is_none() => {
                if self.outbox.unsent().next().is_some() {
                    Duration::ZERO
                } else {
                    TICK
                }
            }
            Some(_) => TICK,
            None => (self.retry_at.saturating_duration_since(Instant::now())).min(TICK),
        }
    }

    /// One step: read an answer, send a batch, check the connection, or reconnect.
    fn step(&mut self) {
        let now = Instant::now();
        let Some(wire) = &mut self.wire else {
            if now >= self.retry_at {
                self.reconnect();
            }
            return;
        };
        if wire.stalled && now.duration_since(wire.checked) >= self.options.keepalive {
            wire.checked = now;
            return self.try_fresh();
        }
        let result = if !wire.owed.is_empty() {
            if wire.all_skipped() {
                // Ask whether it answers at all: at once, then now and then.
                let pinged = wire.owed.contains(&Asked::Ping);
                if pinged && now.duration_since(wire.asked) < IDLE_CHECK {
                    return;
                }
                wire.asked = now;
                wire.send(&redis::cmd("PING").get_packed_command(), Asked::Ping, 1)
            } else {
                return self.read();
            }
        } else if let Some(wait) = &self.wait {
            if now.duration_since(wire.asked) < TICK {
                return;
            }
            if now >= wait.until {
                log::info!(
                    "redis at {}: sending {} held publishes although fewer subscribers listen \
                     than before (not back yet, or gone)",
                    self.shared().addr,
                    self.outbox.len()
                );
                self.wait = None;
                return;
            }
            wire.asked = now;
            let probe = redis::cmd("PUBLISH")
                .arg(&self.life.shared.prefix[..])
                .arg(&[] as &[u8])
                .get_packed_command();
            wire.send(&probe, Asked::Probe, 1)
        } else if self.outbox.unsent().next().is_some() {
            self.batch.clear();
            let mut n = 0;
            for pending in self.outbox.unsent() {
                if n == MAX_BATCH || (n > 0 && self.batch.len() >= MAX_BATCH_BYTES) {
                    break;
                }
                let (channel, payload) = pending.bytes.split_at(pending.channel);
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .write_packed_command(&mut self.batch);
                n += 1;
            }
            self.outbox.sent += n;
            wire.send(&self.batch, Asked::Publish, n)
        } else if now.duration_since(wire.heard) >= IDLE_CHECK
            && now.duration_since(wire.asked) >= IDLE_CHECK
        {
            // So that an outage shows without a publish.
            wire.asked = now;
            wire.send(&redis::cmd("PING").get_packed_command(), Asked::Ping, 1)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            self.broken(&describe(&e));
        }
    }

    /// Reads the answers owed, until a read times out (after [`TICK`]) or none is left to read.
    fn read(&mut self) {
        while self.wire.as_ref().is_some_and(|w| !w.all_skipped()) && self.read_one() {}
    }

    /// Reads one answer; false if none came.
    fn read_one(&mut self) -> bool {
        let Some(wire) = &mut self.wire else {
            return false;
        };
        match wire.conn.recv_response() {
            Ok(value) => {
                let now = Instant::now();
                wire.heard = now;
                // The answers the crate skipped came before this one.
                let skipped = std::mem::take(&mut wire.skips);
                let before = wire.owed.drain(..skipped);
                let publishes = before.filter(|a| *a == Asked::Publish).count();
                let last = wire.owed.pop_front().expect("an answer was owed");
                let resumed = std::mem::take(&mut wire.stalled);
                for _ in 0..publishes {
                    self.answered(None);
                }
                match last {
                    Asked::Publish => self.answered(Some(value)),
                    Asked::Probe => self.probed(&value),
                    Asked::Ping => {}
                }
                if resumed {
                    self.back(now, "answers again");
                }
                true
            }
            Err(e) if e.is_timeout() => {
                wire.skips += 1;
                let silent = wire.heard.elapsed();
                if !wire.stalled && silent >= self.options.io_timeout {
                    wire.stalled = true;
                    wire.checked = Instant::now();
                    let heard = wire.heard;
                    self.down(
                        &format!("no answer for {silent:.1?}; waiting for it"),
                        heard,
                    );
                }
                false
            }
            Err(e) => {
                self.broken(&describe(&e));
                false
            }
        }
    }

    /// The connection stalled: if a fresh one gets an answer, Redis is fine and this one is
    /// dead (a network or NAT drop); what it did not answer is sent again on the fresh one.
    fn try_fresh(&mut self) {
        let shared = self.life.shared.clone();
        let Ok(conn) = open(&shared, &self.options) else {
            return; // Redis itself does not answer: wait on
        };
        // Redis may just have woken up, and answer the stalled connection too: one more
        // chance, or what it held would be sent twice.
        if self.answers_within(self.options.io_timeout) {
            return;
        }
        log::warn!(
            "redis at {} answers a new connection but not the publishing one: replaced ({} \
             unanswered publishes are sent again)",
            shared.addr,
            self.outbox.sent
        );
        let now = Instant::now();
        self.wire = Some(Wire::new(conn, now));
        self.outbox.sent = 0;
        self.back(now, "answers on a new connection");
    }

    /// Whether the stalled connection answers within `limit` (asking with a PING if nothing
    /// else is owed that the crate has not given up on).
    fn answers_within(&mut self, limit: Duration) -> bool {
        let Some(wire) = &mut self.wire else {
            return false;
        };
        if wire.all_skipped() {
            wire.asked = Instant::now();
            if wire
                .send(&redis::cmd("PING").get_packed_command(), Asked::Ping, 1)
                .is_err()
            {
                return false;
            }
        }
        let _ = wire.conn.set_read_timeout(Some(limit));
        let answered = self.read_one();
        if let Some(wire) = &self.wire {
            let _ = wire.conn.set_read_timeout(Some(TICK));
        }
        answered
    }

    /// Redis answered the oldest publish sent: `None` when the crate skipped the answer (it
    /// came after its read timed out, which is taken as a success).
    fn answered(&mut self, value: Option<Value>) {
        let Some(pending) = self.outbox.answered() else {
            return;
        };
        let shared = &*self.life.shared;
        match value {
            Some(Value::ServerError(e)) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.refused.add(1, Instant::now()) {
                    log::warn!(
                        "redis at {} refused {n} publishes (dropped): {e}",
                        shared.addr
                    );
                }
                self.drop_all(std::slice::from_ref(&pending));
            }
            value => {
                shared.published.fetch_add(1, Ordering::Relaxed);
                if let Some(Value::Int(n)) = value {
                    self.receivers = n;
                }
            }
        }
    }

    /// A probe's answer: how many subscribers listen.
    fn probed(&mut self, value: &Value) {
        if let (Some(wait), Value::Int(n)) = (&self.wait, value) {
            if *n >= wait.receivers {
                log::debug!("redis relay: {n} subscribers listen again");
                self.wait = None;
            }
        }
    }

    /// Drops (and reports) what is past the outbox's bounds; a connection that did not answer
    /// a dropped publish in all that time is given up.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired = self.outbox.expire(now);
        if expired.dropped.is_empty() {
            return;
        }
        let n = expired.dropped.len() as u64;
        self.shared().dropped.fetch_add(n, Ordering::Relaxed);
        if let Some(outage) = &mut self.outage {
            outage.dropped += n;
        }
        if let Some(n) = self.expired.add(n, now) {
            log::warn!(
                "redis relay: dropped {n} publishes not sent to redis at {} in time (held over \
                 RedisOptions::outbox_time or outbox_bytes)",
                self.shared().addr
            );
        }
        self.drop_all(&expired.dropped);
        if expired.were_sent > 0 && self.wire.is_some() {
            self.broken("no answer within RedisOptions::outbox_time");
        }
    }

    /// Hands dropped publishes to the `on_dropped` callback, if any.
    fn drop_all(&self, dropped: &[Pending]) {
        let shared = &*self.life.shared;
        let mut hook = (shared.on_dropped.lock()).unwrap_or_else(PoisonError::into_inner);
        let Some(f) = hook.as_mut() else {
            return;
        };
        for pending in dropped {
            let (channel, payload) = pending.bytes.split_at(pending.channel);
            if let Some((topic, _, msg)) = super::decode(shared, channel, payload) {
                f(topic, msg);
            }
        }
    }

    /// The connection stalled or broke (Redis last heard from at `since`): the relay is down
    /// until it is back.
    fn down(&mut self, e: &str, since: Instant) {
        let shared = &*self.life.shared;
        shared.publisher_up.store(false, Ordering::Release);
        if self.outage.is_none() {
            log::warn!(
                "redis at {}: publishing connection down: {e}; publishes are held (up to \
                 RedisOptions::outbox_time and outbox_bytes) and sent when it is back",
                shared.addr
            );
            self.outage = Some(Outage::since(since));
        }
    }

    /// The connection broke: what it did not answer is sent again on the next one.
    fn broken(&mut self, e: &str) {
        self.wire = None;
        self.outbox.sent = 0;
        self.retry_at = Instant::now();
        self.down(
            &format!("lost the publishing connection ({e})"),
            Instant::now(),
        );
    }

    /// Connected again (or the stalled connection answered): wait for the subscribers, then
    /// send what is held.
    fn back(&mut self, now: Instant, how: &str) {
        let shared = &*self.life.shared;
        shared.publisher_up.store(true, Ordering::Release);
        self.backoff.reset();
        let Some(outage) = self.outage.take() else {
            return;
        };
        let (addr, down, held) = (&shared.addr, outage.since.elapsed(), self.outbox.len());
        if outage.dropped > 0 {
            log::warn!(
                "redis at {addr} {how} after {down:.1?}; {} publishes were dropped while it was \
                 down, {held} held are sent now",
                outage.dropped
            );
        } else {
            log::info!(
                "redis at {addr} {how} after {down:.1?}; {held} held publishes are sent now"
            );
        }
        self.wait = (self.receivers > 0).then(|| Wait {
            receivers: self.receivers,
            until: now + 2 * self.options.max_backoff,
        });
    }

    /// One reconnection attempt; after a failure the next is due after a backoff.
    fn reconnect(&mut self) {
        let shared = self.life.shared.clone();
        match open(&shared, &self.options) {
            Ok(conn) => {
                let now = Instant::now();
                self.wire = Some(Wire::new(conn, now));
                self.back(now, "reconnected for publishing");
            }
            Err(e) => {
                let e = describe(&e);
                let outage = self.outage.get_or_insert_with(Outage::new);
                outage.attempts += 1;
                let delay = self.backoff.next();
                self.retry_at = Instant::now() + delay;
                log::debug!(
                    "redis at {}: attempt {} failed: {e}; next in {delay:?}",
                    shared.addr,
                    outage.attempts
                );
                if outage.warned.add(1, Instant::now()).is_some() {
                    log::warn!(
                        "redis at {} unreachable for {:.1?} ({e}): {} publishes held, {} dropped \
                         so far",
                        shared.addr,
                        outage.since.elapsed(),
                        self.outbox.len(),
                        outage.dropped
                    );
                }
            }
        }
    }

    /// Logs the publishes refused by a full queue since the last report.
    fn report_full(&mut self) {
        let shared = &*self.life.shared;
        let n = shared.full_unreported.swap(0, Ordering::Relaxed);
        if let Some(n) = self.full.add(n, Instant::now()) {
            log::warn!(
                "redis relay: dropped {n} publishes, its queue of {} was full (Redis too slow or \
                 down; see RedisOptions::queue)",
                shared.queue
            );
        }
    }
}
