//! Room history: the last [`HISTORY_LEN`] messages of each room, replayed to a user who enters
//! it (on join, after a reload, after a reconnect) as one `history` message.
//!
//! A lone process (or `--threads N`) keeps them in memory, bounded by room and in all
//! ([`MEMORY_LIMIT`] bytes; past it the room written to longest ago is forgotten). With
//! `--redis`, the history is kept in Redis, where every process reads and writes it: a list per
//! room, `<prefix>history:<room>`, trimmed to the last [`HISTORY_LEN`] on every write and
//! expiring [`REDIS_TTL`] after the room's last message. The relay has no command API (it is
//! pub/sub only) and its RESP code is private to wsloop, so this module opens one small
//! connection of its own on a thread of its own (`chat-history`), so that the reactors never
//! wait on Redis: they queue writes and replays, and the thread sends each replay to its
//! connection through the reactor's `Handle`. While Redis is unreachable, replays are empty and
//! writes are lost (logged); the thread reconnects on the next job.

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
    //! The history in Redis: a small RESP connection on a thread of its own.

    use std::io::{self, BufRead, BufReader, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
    use std::time::Duration;

    use wsloop::{Handle, Message};

    use super::{encode, Conn, HISTORY_LEN, REDIS_TTL};

    /// Most jobs waiting for the thread; past it, writes and replays are dropped (logged).
    const QUEUE: usize = 4096;
    /// Time allowed to connect, and for a command's answer.
    const TIMEOUT: Duration = Duration::from_secs(2);
    /// Longest reply line or bulk string read from Redis.
    const MAX_REPLY: usize = 1 << 20;

    enum Job {
        Record { room: String, message: String },
        Replay { room: String, conn: Conn },
    }

    /// The reactors' side: queues jobs for the `chat-history` thread.
    #[derive(Clone)]
    pub struct Remote {
        tx: SyncSender<Job>,
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
                log::warn!("history: the queue to Redis is full: a write or replay is lost");
            }
        }
    }

    /// Starts the `chat-history` thread on the Redis at `url` (`redis://[[user]:password@]host[:port]`),
    /// keys `<prefix>history:<room>`, replays sent through `handles` (reactor order). The
    /// thread ends when every `Remote` is dropped.
    pub fn start(url: &str, prefix: &str, handles: Vec<Handle>) -> io::Result<Remote> {
        let target = Target::parse(url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}")))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let prefix = format!("{prefix}history:");
        std::thread::Builder::new()
            .name("chat-history".into())
            .spawn(move || run(&target, &prefix, &handles, rx))?;
        Ok(Remote { tx })
    }

    fn run(target: &Target, prefix: &str, handles: &[Handle], rx: Receiver<Job>) {
        let mut conn: Option<Resp> = None;
        for job in rx {
            if conn.is_none() {
                conn = Resp::open(target)
                    .inspect_err(|e| log::warn!("history: redis at {}: {e}", target.addr))
                    .ok();
            }
            let result = match (&mut conn, &job) {
                (None, _) => Err(io::Error::other("not connected")),
                (Some(c), Job::Record { room, message }) => {
                    let key = format!("{prefix}{room}");
                    let (first, ttl) = (format!("-{HISTORY_LEN}"), REDIS_TTL.as_secs().to_string());
                    c.command(&[b"RPUSH", key.as_bytes(), message.as_bytes()])
                        .and_then(|_| {
                            c.command(&[b"LTRIM", key.as_bytes(), first.as_bytes(), b"-1"])
                        })
                        .and_then(|_| c.command(&[b"EXPIRE", key.as_bytes(), ttl.as_bytes()]))
                        .map(|_| Vec::new())
                }
                (Some(c), Job::Replay { room, .. }) => {
                    let key = format!("{prefix}{room}");
                    let first = format!("-{HISTORY_LEN}");
                    c.command(&[b"LRANGE", key.as_bytes(), first.as_bytes(), b"-1"])
                }
            };
            let stored = result.unwrap_or_else(|e| {
                log::warn!("history: redis at {}: {e}", target.addr);
                conn = None;
                Vec::new()
            });
            if let Job::Replay { room, conn: to } = &job {
                let texts = stored.iter().filter_map(|b| std::str::from_utf8(b).ok());
                if let Some(handle) = handles.get(to.reactor) {
                    let _ = handle.send(to.id, Message::Text(&encode(room, texts)));
                }
            }
        }
    }

    /// Where Redis is, and the password if any.
    struct Target {
        addr: String,
        auth: Option<(String, String)>,
    }

    impl Target {
        fn parse(url: &str) -> Result<Target, String> {
            let rest = url
                .strip_prefix("redis://")
                .ok_or("a Redis URL starts with redis://")?;
            let rest = rest.split('/').next().unwrap_or_default();
            let (auth, host) = match rest.rsplit_once('@') {
                Some((auth, host)) => {
                    let (user, pass) = auth.split_once(':').unwrap_or(("", auth));
                    (Some((user.to_owned(), pass.to_owned())), host)
                }
                None => (None, rest),
            };
            if host.is_empty() {
                return Err("no host".into());
            }
            let addr = if host.ends_with(']') || !host.contains(':') {
                format!("{host}:6379")
            } else {
                host.to_owned()
            };
            Ok(Target { addr, auth })
        }
    }

    /// One RESP connection: a command, then its reply.
    struct Resp {
        reader: BufReader<TcpStream>,
    }

    impl Resp {
        fn open(target: &Target) -> io::Result<Resp> {
            let addr = (target.addr.to_socket_addrs()?.next())
                .ok_or_else(|| io::Error::other("no address"))?;
            let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            stream.set_nodelay(true)?;
            let mut resp = Resp {
                reader: BufReader::new(stream),
            };
            if let Some((user, pass)) = &target.auth {
                if user.is_empty() {
                    resp.command(&[b"AUTH", pass.as_bytes()])?;
                } else {
                    resp.command(&[b"AUTH", user.as_bytes(), pass.as_bytes()])?;
                }
            }
            Ok(resp)
        }

        /// Sends a command and reads its reply: the bulk strings of an array reply, or nothing
        /// for a status or integer.
        fn command(&mut self, args: &[&[u8]]) -> io::Result<Vec<Vec<u8>>> {
            let mut out = format!("*{}\r\n", args.len()).into_bytes();
            for arg in args {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
            self.reader.get_mut().write_all(&out)?;
            let line = self.line()?;
            let (kind, rest) = line.split_at(1);
            match kind {
                "+" | ":" => Ok(Vec::new()),
                "-" => Err(io::Error::other(format!("redis said: {rest}"))),
                "*" => {
                    let n: i64 = number(rest)?;
                    let mut items = Vec::new();
                    for _ in 0..n.max(0) {
                        let line = self.line()?;
                        let len = line.strip_prefix('$').ok_or_else(|| bad(&line))?;
                        items.push(self.bulk(number(len)?)?);
                    }
                    Ok(items)
                }
                _ => Err(bad(&line)),
            }
        }

        /// A reply line, without its CRLF.
        fn line(&mut self) -> io::Result<String> {
            let mut line = String::new();
            (&mut self.reader)
                .take(MAX_REPLY as u64)
                .read_line(&mut line)?;
            let line = line.strip_suffix("\r\n").ok_or_else(|| bad(&line))?;
            if line.is_empty() {
                return Err(bad(line));
            }
            Ok(line.to_owned())
        }

        /// A bulk string's bytes (`len` -1: nil, empty).
        fn bulk(&mut self, len: i64) -> io::Result<Vec<u8>> {
            let Ok(len) = usize::try_from(len) else {
                return Ok(Vec::new());
            };
            if len > MAX_REPLY {
                return Err(io::Error::other("reply too long"));
            }
            let mut bytes = vec![0; len + 2];
            self.reader.read_exact(&mut bytes)?;
            bytes.truncate(len);
            Ok(bytes)
        }
    }

    fn number(text: &str) -> io::Result<i64> {
        text.parse().map_err(|_| bad(text))
    }

    fn bad(line: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a RESP reply: {line:?}"),
        )
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
