//! The thread that receives other processes' messages and delivers them to the reactors.
//!
//! It holds one subscribed connection at a time and opens the next after a backoff when it
//! breaks. A silent connection is checked with a probe published from a second connection (kept
//! for that, opened again after an error): if the probe comes back, all is well; if it does not,
//! the subscription is dead and replaced; if Redis does not answer the second connection either,
//! it is down or stalled itself, and the subscription is kept (a frozen Redis wakes up with it in
//! place).

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::Instant;

use redis::{Connection, RedisError};

use super::{
    decode, describe, open, subscribe, Backoff, Handle, HandleError, Life, Outage, RedisOptions,
    Shared, TICK, WARN_EVERY,
};
use crate::reactor::log_limit::RepeatWarn;

/// The thread that receives other processes' messages and delivers them. It holds one
/// subscribed connection at a time (the `redis` crate's [`redis::PubSub`], which borrows it)
/// and opens the next after a backoff when it breaks.
pub(super) struct Subscriber {
    life: Life,
    options: RedisOptions,
    backoff: Backoff,
    outage: Option<Outage>,
    full_warned: RepeatWarn,
    full_unreported: u64,
    /// The connection that publishes the probes, kept between them.
    prober: Option<Connection>,
}

impl Subscriber {
    pub(super) fn new(
        shared: Arc<Shared>,
        handles: Vec<Handle>,
        options: RedisOptions,
    ) -> Subscriber {
        Subscriber {
            backoff: Backoff::new(&options),
            life: Life {
                shared,
                handles,
                since: None,
            },
            options,
            outage: None,
            full_warned: RepeatWarn::new(WARN_EVERY),
            full_unreported: 0,
            prober: None,
        }
    }

    /// Subscribes, tells `ready` how the first subscription went (ending at once if it
    /// failed), then delivers, resubscribing after each loss, until the relay's life is over.
    pub(super) fn run(mut self, ready: mpsc::Sender<Result<(), RedisError>>) {
        let mut ready = Some(ready);
        while !self.life.over() {
            let shared = self.life.shared.clone();
            let mut conn = match subscribe(&shared, &self.options) {
                Ok(conn) => conn,
                Err(e) if ready.is_some() => {
                    report(ready, Err(e));
                    break;
                }
                Err(e) => {
                    self.failed(&describe(&e));
                    continue;
                }
            };
            report(ready.take(), Ok(()));
            self.subscribed();
            let mut pubsub = conn.as_pubsub();
            if let Err(e) = self.listen(&mut pubsub) {
                self.lost(&e);
            }
        }
        let shared = &*self.life.shared;
        shared.subscriber_up.store(false, Ordering::Release);
        // The callbacks may hold clones of the relay: let them go.
        shared.intercepting.store(false, Ordering::Release);
        (shared.intercepts.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Delivers what comes until the relay's life is over (`Ok`) or the connection breaks.
    fn listen(&mut self, pubsub: &mut redis::PubSub<'_>) -> Result<(), String> {
        let keepalive = self.options.keepalive;
        let mut last_heard = Instant::now();
        // After a probe was published: when it must have come back.
        let mut probe_due: Option<Instant> = None;
        while !self.life.over() {
            let full = std::mem::take(&mut self.full_unreported);
            if let Some(n) = self.full_warned.add(full, Instant::now()) {
                log::warn!(
                    "redis relay: dropped {n} messages from redis, a reactor's command queue was \
                     full (see Config::handle_queue)"
                );
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    last_heard = Instant::now();
                    probe_due = None;
                    self.answers();
                    let channel = msg.get_channel_name().as_bytes();
                    let payload = msg.get_payload_bytes();
                    let delivery = deliver(&self.life, channel, payload, &mut self.full_unreported);
                    if delivery == Delivery::Stopped {
                        log::debug!("redis relay: every server has stopped");
                        break;
                    }
                }
                Err(e) if e.is_timeout() => {
                    let now = Instant::now();
                    if probe_due.is_some_and(|due| now >= due) {
                        return Err(format!("a probe did not come back within {keepalive:?}"));
                    }
                    if probe_due.is_none() && now.duration_since(last_heard) >= keepalive {
                        match self.probe() {
                            Ok(()) => probe_due = Some(Instant::now() + keepalive),
                            Err(e) => {
                                self.stalled(&describe(&e), last_heard);
                                last_heard = Instant::now();
                            }
                        }
                    }
                }
                Err(e) => return Err(describe(&e)),
            }
        }
        Ok(())
    }

    /// Publishes an empty probe on the bare prefix (which the subscription should bring back)
    /// on a connection of its own, kept between probes and opened again after an error: an
    /// error if Redis does not answer it.
    fn probe(&mut self) -> Result<(), RedisError> {
        let shared = &*self.life.shared;
        let mut conn = match self.prober.take() {
            Some(conn) => conn,
            None => open(shared, &self.options)?,
        };
        redis::cmd("PUBLISH")
            .arg(&shared.prefix[..])
            .arg(&[] as &[u8])
            .query::<i64>(&mut conn)?;
        self.prober = Some(conn);
        Ok(())
    }

    /// Redis does not answer the probe: the subscription is kept, and counted as down until
    /// it hears from Redis again.
    fn stalled(&mut self, e: &str, since: Instant) {
        let shared = &*self.life.shared;
        if self.outage.is_none() {
            log::warn!(
                "redis at {} does not answer ({e}); keeping the subscription until it does",
                shared.addr
            );
            self.outage = Some(Outage::since(since));
        }
        shared.subscriber_up.store(false, Ordering::Release);
    }

    /// The subscription heard from Redis: up, if it was stalled.
    fn answers(&mut self) {
        if let Some(outage) = self.outage.take() {
            let shared = &*self.life.shared;
            log::info!(
                "redis at {} answers again after {:.1?}; the subscription held",
                shared.addr,
                outage.since.elapsed()
            );
            shared.subscriber_up.store(true, Ordering::Release);
        }
    }

    /// A subscription is in place (again).
    fn subscribed(&mut self) {
        let shared = &*self.life.shared;
        if let Some(outage) = self.outage.take() {
            log::info!(
                "resubscribed to {}* on redis at {} after {:.1?}",
                String::from_utf8_lossy(&shared.prefix),
                shared.addr,
                outage.since.elapsed()
            );
        }
        self.backoff.reset();
        shared.subscriber_up.store(true, Ordering::Release);
    }

    fn lost(&mut self, e: &str) {
        self.life
            .shared
            .subscriber_up
            .store(false, Ordering::Release);
        if self.outage.is_none() {
            log::warn!(
                "lost the subscription to redis at {}: {e}; reconnecting (messages from other \
                 processes are missed until it is back)",
                self.life.shared.addr
            );
            self.outage = Some(Outage::new());
        }
    }

    /// A resubscription attempt failed: wait for the backoff (or the relay's end).
    fn failed(&mut self, e: &str) {
        let outage = self.outage.get_or_insert_with(Outage::new);
        let shared = &*self.life.shared;
        outage.attempts += 1;
        let delay = self.backoff.next();
        log::debug!(
            "redis at {}: resubscribe attempt {} failed: {e}; next in {delay:?}",
            shared.addr,
            outage.attempts
        );
        let deadline = Instant::now() + delay;
        while !shared.stop.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(TICK));
        }
    }
}

/// Tells `connect` how the first subscription went.
fn report(ready: Option<mpsc::Sender<Result<(), RedisError>>>, result: Result<(), RedisError>) {
    if let Some(ready) = ready {
        let _ = ready.send(result);
    }
}

/// What became of one message from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Delivered, skipped (our own, or not ours to read), or partly refused (counted).
    Done,
    /// Every server is gone.
    Stopped,
}

/// Delivers one message from `channel` to every reactor, unless this relay published it.
fn deliver(life: &Life, channel: &[u8], payload: &[u8], full: &mut u64) -> Delivery {
    let shared = &*life.shared;
    let Some((topic, origin, msg)) = decode(shared, channel, payload) else {
        return Delivery::Done;
    };
    if origin == shared.origin {
        return Delivery::Done;
    }
    shared.received.fetch_add(1, Ordering::Relaxed);
    if shared.intercepting.load(Ordering::Acquire) {
        let mut intercepts = (shared.intercepts.lock()).unwrap_or_else(PoisonError::into_inner);
        if let Some((_, f)) = intercepts.iter_mut().find(|(t, _)| **t == *topic) {
            f(msg);
            return Delivery::Done;
        }
    }
    let mut stopped = 0;
    for handle in &life.handles {
        match handle.publish_local(topic, msg) {
            Ok(()) => {}
            Err(HandleError::Full) => {
                *full += 1;
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(HandleError::Stopped | HandleError::TimedOut) => stopped += 1,
        }
    }
    if stopped == life.handles.len() {
        Delivery::Stopped
    } else {
        Delivery::Done
    }
}
