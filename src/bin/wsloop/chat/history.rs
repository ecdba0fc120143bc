//! Room history: the last [`HISTORY_LEN`] messages of each room, replayed to a user who enters
//! it (on join, after a reload, after a reconnect) as one `history` message.
//!
//! A lone process (or `--threads N`) keeps them in memory, bounded by room and in all
//! ([`MEMORY_LIMIT`] bytes; past it the room written to longest ago is forgotten). With
//! `--redis`, the history is kept in Redis, where every process reads and writes it: a list per
//! room, `<prefix>history:<room>`, trimmed to the last [`HISTORY_LEN`] on every write and
//! expiring [`REDIS_TTL`] after the room's last message. The relay is pub/sub only, so this
//! module opens a connection of its own (the `redis` crate's blocking client) on a thread of its
//! own (`chat-history`), so that the reactors never wait on Redis: they queue writes and replays, and the thread sends each replay to its
//! connection through the reactor's `Handle`. While Redis is unreachable, replays are empty and
//! writes are lost: logged when it goes, then once per 10 s with the count, and when it is back
//! (not once per chat message); the thread tries it again at most once a second, on a job.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::Conn;

/// How many messages of a room are kept and replayed.
pub const HISTORY_LEN: usize = 100;
/// Most bytes of history kept in memory over all rooms (without `--redis`).
pub const MEMORY_LIMIT: usize = 16 << 20;
/// How long Redis keeps a room's history after its last message.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub const REDIS_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Where the history is kept.
#[derive(Clone)]
pub enum History {
    /// In this process's memory.
    Memory(Arc<Mutex<Memory>>),
    /// In Redis, through the `chat-history` thread.
    #[cfg(feature = "redis")]
    Redis(redis::Remote),
}

impl Default for History {
    fn default() -> History {
        History::Memory(Arc::default())
    }
}

impl History {
    /// Keeps `message` (a `message` as sent to the room, JSON) as the room's latest.
    pub fn record(&self, room: &str, message: &str) {
        match self {
            History::Memory(memory) => lock(memory).record(room, message),
            #[cfg(feature = "redis")]
            History::Redis(remote) => remote.record(room, message),
        }
    }

    /// The `history` message of `room` for the connection `conn`: `Some` to send now, or
    /// `None` when it will be sent to `conn` later (from Redis).
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))] // only Redis answers later
    pub fn replay(&self, room: &str, conn: Conn) -> Option<String> {
        match self {
            History::Memory(memory) => Some(encode(room, lock(memory).messages(room))),
            #[cfg(feature = "redis")]
            History::Redis(remote) => {
                remote.replay(room, conn);
                None
            }
        }
    }
}

fn lock(memory: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `history` message: `{"type":"history","room":…,"messages":[…]}`, oldest first. Entries
/// that are not JSON objects (a foreign write to Redis) are left out.
pub fn encode<'a>(room: &str, stored: impl IntoIterator<Item = &'a str>) -> String {
    let messages: Vec<Value> = (stored.into_iter())
        .filter_map(|s| serde_json::from_str::<Value>(s).ok())
        .filter(Value::is_object)
        .collect();
    let out = serde_json::json!({"type": "history", "room": room, "messages": messages});
    out.to_string()
}

/// The in-memory history: the last [`HISTORY_LEN`] messages of each room, [`MEMORY_LIMIT`]
/// bytes in all.
#[derive(Debug, Default)]
pub struct Memory {
    rooms: BTreeMap<String, Room>,
    bytes: usize,
    /// Counts writes, to find the room written to longest ago.
    clock: u64,
}

#[derive(Debug, Default)]
struct Room {
    messages: VecDeque<String>,
    bytes: usize,
    written: u64,
}

impl Memory {
    fn record(&mut self, room: &str, message: &str) {
        self.clock += 1;
        let entry = self.rooms.entry(room.to_owned()).or_default();
        entry.written = self.clock;
        entry.bytes += message.len();
        self.bytes += message.len();
        entry.messages.push_back(message.to_owned());
        if entry.messages.len() > HISTORY_LEN {
            let old = entry.messages.pop_front().map_or(0, |m| m.len());
            entry.bytes -= old;
            self.bytes -= old;
        }
        while self.bytes > MEMORY_LIMIT && self.rooms.len() > 1 {
            let oldest = (self.rooms.iter())
                .filter(|(name, _)| *name != room)
                .min_by_key(|(_, r)| r.written)
                .map(|(name, _)| name.clone());
            let Some(gone) = oldest.and_then(|name| self.rooms.remove(&name)) else {
                break;
            };
            self.bytes -= gone.bytes;
        }
    }

    fn messages(&self, room: &str) -> impl Iterator<Item = &str> {
        (self.rooms.get(room).into_iter()).flat_map(|r| r.messages.iter().map(String::as_str))
    }
}

#[cfg(feature = "redis")]
pub mod redis {
    //! The history in Redis: one connection of the `redis` crate on a thread of its own.

    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use ::redis::{Client, Commands, Connection, RedisResult};
    use wsloop::{Handle, Message};

    use super::{encode, Conn, HISTORY_LEN, REDIS_TTL};

    /// Most jobs waiting for the thread; past it, writes and replays are dropped (logged).
    const QUEUE: usize = 4096;
    /// Time allowed to connect, and for a command's answer.
    const TIMEOUT: Duration = Duration::from_secs(2);
    /// While Redis is unreachable, it is tried again this often; jobs meanwhile are skipped.
    const RETRY: Duration = Duration::from_secs(1);
    /// While Redis is unreachable (or the queue overflows), at most one warning per this.
    const WARN_EVERY: Duration = Duration::from_secs(10);

    enum Job {
        Record { room: String, message: String },
        Replay { room: String, conn: Conn },
    }

    /// The reactors' side: queues jobs for the `chat-history` thread.
    #[derive(Clone)]
    pub struct Remote {
        tx: SyncSender<Job>,
        /// Jobs refused by a full queue, for the thread to report.
        overflow: Arc<AtomicU64>,
    }

    impl Remote {
        pub(super) fn record(&self, room: &str, message: &str) {
            self.queue(Job::Record {
                room: room.to_owned(),
                message: message.to_owned(),
            });
        }

        pub(super) fn replay(&self, room: &str, conn: Conn) {
            let room = room.to_owned();
            self.queue(Job::Replay { room, conn });
        }

        fn queue(&self, job: Job) {
            if let Err(TrySendError::Full(_)) = self.tx.try_send(job) {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts the `chat-history` thread on the Redis at `url` (any URL the `redis` crate
    /// takes: `redis://[user:password@]host[:port][/db]`, `rediss://`), keys
    /// `<prefix>history:<room>`, replays sent through `handles` (reactor order). The thread
    /// ends when every `Remote` is dropped.
    pub fn start(url: &str, prefix: &str, handles: Vec<Handle>) -> io::Result<Remote> {
        let client = Client::open(url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}")))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let overflow = Arc::new(AtomicU64::new(0));
        let thread = Thread {
            client,
            url: url.to_owned(),
            prefix: format!("{prefix}history:"),
            handles,
            overflow: overflow.clone(),
            conn: None,
            outage: None,
            overflow_reported: None,
        };
        std::thread::Builder::new()
            .name("chat-history".into())
            .spawn(move || thread.run(rx))?;
        Ok(Remote { tx, overflow })
    }

    /// A connection with timeouts on connecting, reading and writing.
    fn connect(client: &Client) -> RedisResult<Connection> {
        let conn = client.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        Ok(conn)
    }

    /// What went wrong, for the log.
    fn describe(e: &::redis::RedisError) -> String {
        if e.is_timeout() {
            format!("no answer within {TIMEOUT:?}")
        } else {
            e.to_string()
        }
    }

    /// Redis unreachable: since when, the last error, the jobs skipped since the last warning,
    /// and when it was last tried and last reported. One warning when it goes, one per
    /// [`WARN_EVERY`] with the count, one when it is back: not one per chat message.
    struct Outage {
        since: Instant,
        error: String,
        skipped: u64,
        tried: Instant,
        reported: Instant,
    }

    /// The `chat-history` thread.
    struct Thread {
        client: Client,
        url: String,
        prefix: String,
        handles: Vec<Handle>,
        overflow: Arc<AtomicU64>,
        conn: Option<Connection>,
        outage: Option<Outage>,
        overflow_reported: Option<Instant>,
    }

    impl Thread {
        fn run(mut self, rx: Receiver<Job>) {
            loop {
                let job = match rx.recv_timeout(RETRY) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                self.report_overflow();
                if let Some(job) = job {
                    self.serve(&job);
                }
            }
        }

        /// Writes or replays; while Redis is unreachable a replay is empty, a write lost.
        fn serve(&mut self, job: &Job) {
            let first = -(HISTORY_LEN as isize);
            let key = match job {
                Job::Record { room, .. } | Job::Replay { room, .. } => {
                    format!("{}{room}", self.prefix)
                }
            };
            let conn = self.connection();
            let result: RedisResult<Vec<Vec<u8>>> = match (conn, job) {
                (None, _) => Ok(Vec::new()),
                (Some(c), Job::Record { message, .. }) => ::redis::pipe()
                    .rpush(&key, message)
                    .ignore()
                    .ltrim(&key, first, -1)
                    .ignore()
                    .expire(&key, REDIS_TTL.as_secs() as i64)
                    .ignore()
                    .exec(c)
                    .map(|()| Vec::new()),
                (Some(c), Job::Replay { .. }) => c.lrange(&key, first, -1),
            };
            let stored = result.unwrap_or_else(|e| {
                self.conn = None;
                self.failed(describe(&e), 1);
                Vec::new()
            });
            if let Job::Replay { room, conn: to } = job {
                let texts = stored.iter().filter_map(|b| std::str::from_utf8(b).ok());
                if let Some(handle) = self.handles.get(to.reactor) {
                    let _ = handle.send(to.id, Message::Text(&encode(room, texts)));
                }
            }
        }

        /// The connection, opened again if it is due; `None` while Redis is unreachable (the
        /// job is then counted as skipped).
        fn connection(&mut self) -> Option<&mut Connection> {
            let now = Instant::now();
            if self.conn.is_none() {
                match &mut self.outage {
                    Some(outage) if now.duration_since(outage.tried) < RETRY => {
                        outage.skipped += 1;
                    }
                    _ => match connect(&self.client) {
                        Ok(conn) => self.conn = Some(conn),
                        Err(e) => self.failed(describe(&e), 1),
                    },
                }
            }
            if self.conn.is_some() {
                if let Some(outage) = self.outage.take() {
                    log::info!(
                        "history: redis at {} is back after {:.1?} ({} history writes and \
                         replays skipped)",
                        self.url,
                        outage.since.elapsed(),
                        outage.skipped
                    );
                }
            }
            self.conn.as_mut()
        }

        /// A job failed (`skipped` of them): one warning when Redis goes, then at most one per
        /// [`WARN_EVERY`].
        fn failed(&mut self, error: String, skipped: u64) {
            let now = Instant::now();
            let Some(outage) = &mut self.outage else {
                log::warn!(
                    "history: redis at {}: {error}; history writes and replays are skipped \
                     until it is back (tried every {RETRY:?})",
                    self.url
                );
                self.outage = Some(Outage {
                    since: now,
                    error,
                    skipped,
                    tried: now,
                    reported: now,
                });
                return;
            };
            outage.skipped += skipped;
            outage.tried = now;
            outage.error = error;
            if now.duration_since(outage.reported) >= WARN_EVERY {
                log::warn!(
                    "history: redis at {} unreachable for {:.0?}: {}; {} history writes and \
                     replays skipped so far",
                    self.url,
                    outage.since.elapsed(),
                    outage.error,
                    outage.skipped
                );
                outage.reported = now;
            }
        }

        /// Reports the jobs refused by a full queue, at most once per [`WARN_EVERY`].
        fn report_overflow(&mut self) {
            let now = Instant::now();
            if (self.overflow_reported).is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
                return;
            }
            let n = self.overflow.swap(0, Ordering::Relaxed);
            if n > 0 {
                log::warn!("history: the queue to Redis was full: {n} writes or replays lost");
                self.overflow_reported = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_keeps_the_last_messages_of_each_room_within_its_bound() {
        let mut memory = Memory::default();
        for i in 0..HISTORY_LEN + 5 {
            memory.record("lobby", &format!("{{\"n\":{i}}}"));
        }
        let kept: Vec<&str> = memory.messages("lobby").collect();
        assert_eq!(kept.len(), HISTORY_LEN);
        assert_eq!(kept[0], "{\"n\":5}");
        // Past the byte limit, the room written to longest ago goes.
        let big = format!("\"{}\"", "x".repeat(MEMORY_LIMIT / HISTORY_LEN));
        memory.record("old", "{}");
        for _ in 0..HISTORY_LEN {
            memory.record("big", &big);
        }
        assert!(memory.bytes <= MEMORY_LIMIT + big.len(), "{}", memory.bytes);
        assert_eq!(memory.messages("lobby").count(), 0);
        assert_eq!(memory.messages("old").count(), 0);
        // Strings are not objects: left out of the history message.
        let out: Value = serde_json::from_str(&encode("big", memory.messages("big"))).unwrap();
        assert_eq!(out["messages"].as_array().unwrap().len(), 0);
    }
}
