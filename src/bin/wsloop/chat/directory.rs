//! Who is online and who is in which room: this process's users and, with `--redis`, the users
//! of the other chat processes on the same Redis, kept in step by presence events.
//!
//! # Presence across processes
//!
//! Everything meant for users is already a topic publish, which a `RedisRelay` carries between
//! processes. What is not is this directory: the online list of `welcome`, the members of
//! `room_joined`, a private message's recipient and nickname claims. Processes keep it in step
//! over Redis pub/sub only (no keys, no other Redis command), on one topic, [`SYNC_TOPIC`],
//! that no client subscribes to and that the relay hands to [`Directory::receive`] (through
//! `RedisRelay::intercept`) instead of to the reactors:
//!
//! - Each process is a node, named by its relay's random origin id.
//! - Every change of a local user is published at once, as that user's whole state: `user`
//!   (nickname, claim time, rooms) when they join, enter or leave a room, `gone` when they
//!   disconnect. The events are published while the directory is locked, so they leave in the
//!   order of the changes, whatever the reactor.
//! - Every heartbeat (`--heartbeat`, 5 s by default) the node publishes its whole `roster`, which
//!   replaces what the others knew of it. A node not heard from for [`MISSED_HEARTBEATS`] of its
//!   heartbeats (it crashed, or Redis or the network is down) is forgotten: its users go offline.
//! - A node that starts or gets its Redis connection back says `hello` (its roster, and "send me
//!   yours"): every other node answers with its roster at once.
//!
//! Pub/sub only, rather than sets in Redis: a crashed process leaves nothing behind in Redis to
//! expire, and a Redis restart loses nothing that the next rosters do not bring back. The relay's
//! receiving thread applies the events it intercepts; a thread of its own (`chat-presence`) says
//! hello, sends the heartbeats and forgets silent nodes. The reactors only lock the directory
//! briefly, as they did before, and what must reach their clients goes through their handles.
//!
//! Live notices (`user_online`, `member_joined`, …) reach other processes as the handler
//! publishes them, through the relay, in order with the room messages. The directory adds
//! notices of its own to the local clients only when what a roster says differs from what was
//! known (events lost while Redis was down, a node that came back) or when a node is forgotten,
//! so that their lists follow. Every list and notice is about the union of all nodes' users.
//!
//! Limits: presence is eventual. A user who joins on another process is known here one Redis
//! round trip later; after an outage, within a heartbeat of the reconnection; a crashed process's
//! users go offline after three of its heartbeats. Around an outage a notice may come late or
//! twice. A roster is sent whole every heartbeat, which suits thousands of users per process,
//! not millions.
//!
//! Nicknames are unique across processes as far as each process knows: a claim is checked
//! against the local users and the known users of the other nodes. Two claims of one nickname
//! on two processes within one round trip (or while Redis is down) both succeed; as soon as a
//! process learns of the other claim, the earlier claim wins (ties: the lower node id), and the
//! process of the later one closes its connection with [`NICK_CONFLICT`] (4409). Both
//! processes decide the same way without talking (claim times are the machines' clocks, so a
//! skew between machines only matters for claims that close together). Clients may have seen that nickname come
//! online twice; the loser's departure only announces what the winner does not hold (rooms
//! the winner is not in).

// Without the `redis` feature nothing attaches a directory to other processes.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wsloop::{CloseCode, ConnId, Handle, Message, Relay};

use super::{now_ms, room_topic, Outgoing, PRESENCE};

/// The topic of the presence events between processes (no client subscribes to it).
pub const SYNC_TOPIC: &str = "presence-sync";
/// How many heartbeats a node may miss before its users are taken as gone.
pub const MISSED_HEARTBEATS: u32 = 3;
/// The default time between two rosters of a node.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// The close code of a connection whose nickname was claimed earlier on another process.
pub const NICK_CONFLICT: CloseCode = CloseCode(4409);

/// Where a local user's connection is: its reactor (the `i` of `Cluster::bind`) and id, and
/// the secret its page may present to take the nickname over from it (see `Chat`'s `join`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// The reactor's index.
    pub reactor: usize,
    /// The connection on that reactor.
    pub id: ConnId,
    /// The resume token given to the page in `welcome`.
    pub token: u128,
}

/// One user as the presence events carry it: the nickname as chosen, when it was claimed (ms
/// since the Unix epoch), and the rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    nick: String,
    since: u64,
    rooms: BTreeSet<String>,
}

/// A user of this process, whose connection is a `C`.
#[derive(Debug)]
struct LocalUser<C> {
    entry: Entry,
    conn: C,
    /// Lost a nickname conflict: its connection is being closed.
    evicted: bool,
}

/// What is known of another process.
#[derive(Debug)]
struct Peer {
    /// Its users, by nickname key.
    users: BTreeMap<String, Entry>,
    /// Its heartbeat (ours until it said).
    heartbeat: Duration,
    /// When it was last heard from.
    heard: Instant,
}

/// A presence event on [`SYNC_TOPIC`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
enum Event {
    /// A node (re)joined: its roster; every other node answers with its own.
    Hello {
        node: String,
        /// The heartbeat, in ms.
        every: u64,
        users: Vec<Entry>,
    },
    /// A node's whole roster: sent every heartbeat, and in answer to a hello.
    Roster {
        node: String,
        every: u64,
        users: Vec<Entry>,
    },
    /// A user of `node` joined, or entered or left a room: their whole state.
    User {
        node: String,
        #[serde(flatten)]
        user: Entry,
    },
    /// A user of `node` disconnected.
    Gone { node: String, nick: String },
}

/// This process's side of the link to the others: its node id, where its events go, its
/// heartbeat.
struct Uplink {
    node: String,
    relay: Box<dyn Relay>,
    heartbeat: Duration,
    last_roster: Option<Instant>,
    last_hello: Option<Instant>,
}

/// What the union of every node says of one user: the nickname and the rooms.
type View = Option<(String, BTreeSet<String>)>;

/// What the caller must do once the directory is unlocked: notices for the local clients
/// (every reactor's subscribers, not relayed) and connections to close.
#[derive(Debug)]
#[must_use = "deliver the effects"]
pub struct Effects<C = Conn> {
    /// `(topic, JSON)` to publish to the local subscribers of every reactor.
    pub notices: Vec<(String, String)>,
    /// Local connections that lost a nickname conflict, with the nickname.
    pub evict: Vec<(C, String)>,
}

impl<C> Default for Effects<C> {
    fn default() -> Effects<C> {
        Effects {
            notices: Vec::new(),
            evict: Vec::new(),
        }
    }
}

impl Effects {
    /// Publishes the notices locally on every reactor (`handles` in reactor order) and closes
    /// the evicted connections with [`NICK_CONFLICT`]. Never blocks: a full reactor queue drops
    /// what it refuses.
    pub fn deliver(self, handles: &[Handle]) {
        for (topic, json) in &self.notices {
            for handle in handles {
                let _ = handle.publish_local(topic, Message::Text(json));
            }
        }
        for (conn, nick) in &self.evict {
            let reason =
                format!("nickname {nick} was taken earlier on another server of this chat");
            if let Some(handle) = handles.get(conn.reactor) {
                let _ = handle.close(conn.id, NICK_CONFLICT, &reason);
            }
        }
    }
}

impl<C> Effects<C> {
    fn notice(&mut self, topic: String, out: &Outgoing<'_>) {
        self.notices.push((topic, out.encode()));
    }

    /// The notices that take the local clients' view of one user from `before` to `after`.
    fn follow(&mut self, before: View, after: View) {
        let nick = match (&before, &after) {
            (_, Some((nick, _))) | (Some((nick, _)), None) => nick.clone(),
            (None, None) => return,
        };
        let none = BTreeSet::new();
        let old = before.as_ref().map_or(&none, |(_, rooms)| rooms);
        let new = after.as_ref().map_or(&none, |(_, rooms)| rooms);
        let nick = nick.as_str();
        if before.is_none() {
            self.notice(PRESENCE.into(), &Outgoing::UserOnline { nick });
        }
        for room in new.difference(old) {
            self.notice(room_topic(room), &Outgoing::MemberJoined { room, nick });
        }
        for room in old.difference(new) {
            self.notice(room_topic(room), &Outgoing::MemberLeft { room, nick });
        }
        if after.is_none() {
            self.notice(PRESENCE.into(), &Outgoing::UserOffline { nick });
        }
    }
}

/// What [`Directory::release`] leaves to announce.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// The rooms the user is no longer in (on any process).
    pub rooms: Vec<String>,
    /// Whether the user is offline (not held by another process either).
    pub offline: bool,
}

/// Who is online and who is in which room, by lowercase nickname: the local users, and those
/// of the other processes once [`attach`](Self::attach)ed to them. A local user's connection
/// is a `C` (a [`Conn`]; the unit tests use numbers).
pub struct Directory<C = Conn> {
    /// Nickname key (lowercase) → this process's user.
    users: BTreeMap<String, LocalUser<C>>,
    /// Node id → what is known of that process.
    peers: BTreeMap<String, Peer>,
    uplink: Option<Uplink>,
}

/// A directory that several reactors' handlers (and the presence threads) share.
pub type SharedDirectory = Arc<Mutex<Directory>>;

impl<C> Default for Directory<C> {
    fn default() -> Directory<C> {
        Directory {
            users: BTreeMap::new(),
            peers: BTreeMap::new(),
            uplink: None,
        }
    }
}

/// Locks `directory` (a panic elsewhere does not make it unusable).
pub fn lock(directory: &SharedDirectory) -> MutexGuard<'_, Directory> {
    directory.lock().unwrap_or_else(|e| e.into_inner())
}

impl Directory {
    /// A new, empty directory to share.
    pub fn shared() -> SharedDirectory {
        Arc::default()
    }
}

impl<C: Copy + PartialEq> Directory<C> {
    // -----------------------------------------------------------------------------------------
    // Local users (the handler)
    // -----------------------------------------------------------------------------------------

    /// Takes `nick` (lowercase: `key`) for a new user at `conn`; false if someone online, here
    /// or on a known process, has it in any case.
    pub fn claim(&mut self, key: &str, nick: &str, conn: C) -> bool {
        if self.users.contains_key(key) || self.peers.values().any(|p| p.users.contains_key(key)) {
            return false;
        }
        let entry = Entry {
            nick: nick.to_owned(),
            since: now_ms(),
            rooms: BTreeSet::new(),
        };
        self.users.insert(
            key.to_owned(),
            LocalUser {
                entry,
                conn,
                evicted: false,
            },
        );
        self.announce_user(key);
        true
    }

    /// The local connection holding the nickname `key`, if any.
    pub fn holder(&self, key: &str) -> Option<C> {
        self.users.get(key).map(|u| u.conn)
    }

    /// The user `key` at `conn` disconnected: what is left to announce (nothing if `conn` no
    /// longer holds `key`: another connection took it over).
    pub fn release(&mut self, key: &str, conn: C) -> Released {
        let before = self.view(key);
        let held = self.users.get(key).is_some_and(|u| u.conn == conn);
        let Some(user) = held.then(|| self.users.remove(key)).flatten() else {
            return Released {
                rooms: Vec::new(),
                offline: false,
            };
        };
        if let Some(node) = self.node() {
            let gone = Event::Gone {
                node,
                nick: user.entry.nick,
            };
            self.announce(&gone);
        }
        let after = self.view(key);
        let held = |view: &View, room: &str| view.as_ref().is_some_and(|(_, r)| r.contains(room));
        let rooms = (before.iter().flat_map(|(_, rooms)| rooms))
            .filter(|room| !held(&after, room))
            .cloned()
            .collect();
        Released {
            rooms,
            offline: after.is_none(),
        }
    }

    /// The `undelivered` notice of a message that the Redis relay dropped (`published` to
    /// `topic`), and the local connection of its sender to send it to: `None` for anything but
    /// a user's message, or for a private message to a user of this process (who had it).
    pub fn undelivered(&self, topic: &str, published: &str) -> Option<(C, String)> {
        let dropped = super::undelivered(topic, published)?;
        if (dropped.to.as_ref()).is_some_and(|to| self.users.contains_key(to)) {
            return None;
        }
        Some((self.holder(&dropped.from)?, dropped.notice))
    }

    /// The nickname of `key` as chosen, if online here or on a known process.
    pub fn nick(&self, key: &str) -> Option<&str> {
        match self.users.get(key) {
            Some(user) => Some(&user.entry.nick),
            None => (self.peers.values())
                .find_map(|p| p.users.get(key))
                .map(|e| e.nick.as_str()),
        }
    }

    /// The nicknames online on every known process, sorted case-insensitively.
    pub fn online(&self) -> Vec<String> {
        self.nicks(|_| true)
    }

    /// Puts the local user `key` in `room`; true if that is news (they were not in it on
    /// another process either), so `member_joined` is due.
    pub fn enter(&mut self, room: &str, key: &str) -> bool {
        let news = !self.in_room(room, key);
        let Some(user) = self.users.get_mut(key) else {
            return false;
        };
        user.entry.rooms.insert(room.to_owned());
        self.announce_user(key);
        news
    }

    /// Takes the local user `key` out of `room`; true if they are now out of it everywhere, so
    /// `member_left` is due.
    pub fn leave(&mut self, room: &str, key: &str) -> bool {
        let Some(user) = self.users.get_mut(key) else {
            return false;
        };
        user.entry.rooms.remove(room);
        self.announce_user(key);
        !self.in_room(room, key)
    }

    /// The nicknames of a room's members on every known process, sorted case-insensitively.
    pub fn members(&self, room: &str) -> Vec<String> {
        self.nicks(|user| user.rooms.contains(room))
    }

    /// The rooms someone is in, here or on a known process, with how many members each.
    pub fn rooms(&self) -> BTreeMap<String, usize> {
        let remote = self.peers.values().flat_map(|p| p.users.iter());
        let local = self.users.iter().map(|(key, user)| (key, &user.entry));
        let mut members: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (key, user) in remote.chain(local) {
            for room in &user.rooms {
                members.entry(room).or_default().insert(key);
            }
        }
        (members.into_iter())
            .map(|(room, keys)| (room.to_owned(), keys.len()))
            .collect()
    }

    /// The nicknames of the users, here and on every known process, for whom `f` holds: sorted
    /// case-insensitively, once each (as chosen here, if a user is here too).
    fn nicks(&self, f: impl Fn(&Entry) -> bool) -> Vec<String> {
        let remote = self.peers.values().flat_map(|p| p.users.iter());
        let local = self.users.iter().map(|(key, user)| (key, &user.entry));
        let mut all: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, user) in remote.chain(local).filter(|(_, user)| f(user)) {
            all.insert(key, &user.nick);
        }
        all.into_values().map(str::to_owned).collect()
    }

    fn in_room(&self, room: &str, key: &str) -> bool {
        self.view(key)
            .is_some_and(|(_, rooms)| rooms.contains(room))
    }

    /// One user over every node: the nickname (the local one first) and the union of rooms.
    fn view(&self, key: &str) -> View {
        let local = self.users.get(key).map(|u| &u.entry);
        let mut entries = local
            .into_iter()
            .chain(self.peers.values().filter_map(|p| p.users.get(key)));
        let first = entries.next()?;
        let mut rooms = first.rooms.clone();
        for entry in entries {
            rooms.extend(entry.rooms.iter().cloned());
        }
        Some((first.nick.clone(), rooms))
    }

    // -----------------------------------------------------------------------------------------
    // The other processes (the presence threads)
    // -----------------------------------------------------------------------------------------

    /// Links this directory to the other processes: `node` is this process's id (unique among
    /// them), `relay` carries its events to them (publishes to [`SYNC_TOPIC`]), and its roster
    /// goes out every `heartbeat`. What they send must be handed to [`receive`](Self::receive),
    /// and [`tick`](Self::tick) called a few times per heartbeat.
    pub fn attach(&mut self, node: String, relay: Box<dyn Relay>, heartbeat: Duration) {
        self.uplink = Some(Uplink {
            node,
            relay,
            heartbeat,
            last_roster: None,
            last_hello: None,
        });
    }

    /// Says hello: publishes this node's roster and asks the others for theirs (at start, and
    /// whenever the link to them is back).
    pub fn hello(&mut self, now: Instant) {
        let Some(uplink) = &mut self.uplink else {
            return;
        };
        uplink.last_hello = Some(now);
        uplink.last_roster = Some(now);
        let hello = Event::Hello {
            node: uplink.node.clone(),
            every: uplink.heartbeat.as_millis() as u64,
            users: self.roster(),
        };
        self.announce(&hello);
    }

    /// Sends the roster if a heartbeat is due (and `connected`: no point otherwise), and
    /// forgets the nodes not heard from for [`MISSED_HEARTBEATS`] of their heartbeats.
    pub fn tick(&mut self, now: Instant, connected: bool) -> Effects<C> {
        let mut effects = Effects::default();
        let Some(uplink) = &self.uplink else {
            return effects;
        };
        let due = uplink
            .last_roster
            .is_none_or(|at| now.duration_since(at) >= uplink.heartbeat);
        if connected && due {
            self.send_roster(now);
        }
        let silent: Vec<String> = (self.peers.iter())
            .filter(|(_, p)| now.duration_since(p.heard) > p.heartbeat * MISSED_HEARTBEATS)
            .map(|(node, _)| node.clone())
            .collect();
        for node in silent {
            log::info!("presence: node {node} not heard from: its users are offline");
            self.replace_peer(&node, None, &mut effects);
        }
        effects
    }

    /// Applies one presence event from another process (the text of a message on
    /// [`SYNC_TOPIC`]); what is not one is ignored.
    pub fn receive(&mut self, text: &str, now: Instant) -> Effects<C> {
        let mut effects = Effects::default();
        let Some(own_heartbeat) = self.uplink.as_ref().map(|s| s.heartbeat) else {
            return effects;
        };
        let event = match serde_json::from_str::<Event>(text) {
            Ok(event) => event,
            Err(e) => {
                log::debug!("presence: ignored {text:?}: {e}");
                return effects;
            }
        };
        match event {
            Event::Hello { node, every, users } => {
                self.apply_roster(&node, every, users, now, &mut effects);
                self.send_roster(now);
            }
            Event::Roster { node, every, users } => {
                self.apply_roster(&node, every, users, now, &mut effects);
            }
            Event::User { node, user } => {
                let key = super::nick_key(&user.nick);
                let since = user.since;
                let known = self.peers.contains_key(&node);
                let peer = self.peers.entry(node.clone()).or_insert_with(|| Peer {
                    users: BTreeMap::new(),
                    heartbeat: own_heartbeat,
                    heard: now,
                });
                peer.heard = now;
                peer.users.insert(key.clone(), user);
                self.check_conflict(&node, &key, since, &mut effects);
                if !known {
                    self.ask(now);
                }
            }
            Event::Gone { node, nick } => {
                if let Some(peer) = self.peers.get_mut(&node) {
                    peer.heard = now;
                    peer.users.remove(&super::nick_key(&nick));
                }
            }
        }
        effects
    }

    /// Replaces what is known of `node` by its roster.
    fn apply_roster(
        &mut self,
        node: &str,
        every: u64,
        users: Vec<Entry>,
        now: Instant,
        effects: &mut Effects<C>,
    ) {
        let claims: Vec<(String, u64)> = (users.iter())
            .map(|e| (super::nick_key(&e.nick), e.since))
            .collect();
        let peer = Peer {
            users: users
                .into_iter()
                .map(|e| (super::nick_key(&e.nick), e))
                .collect(),
            heartbeat: heartbeat_of(every),
            heard: now,
        };
        self.replace_peer(node, Some(peer), effects);
        for (key, since) in claims {
            self.check_conflict(node, &key, since, effects);
        }
    }

    /// Says hello because of a node not known yet, at most once per heartbeat.
    fn ask(&mut self, now: Instant) {
        let recent = (self.uplink.as_ref()).is_some_and(|s| {
            s.last_hello
                .is_some_and(|at| now.duration_since(at) < s.heartbeat)
        });
        if !recent {
            self.hello(now);
        }
    }

    /// Sets (or, with `None`, forgets) what is known of `node`, with the notices that make the
    /// local clients' lists follow.
    fn replace_peer(&mut self, node: &str, peer: Option<Peer>, effects: &mut Effects<C>) {
        let mut keys: BTreeSet<String> = BTreeSet::new();
        keys.extend(
            self.peers
                .get(node)
                .into_iter()
                .flat_map(|p| p.users.keys().cloned()),
        );
        keys.extend(peer.iter().flat_map(|p| p.users.keys().cloned()));
        let before: Vec<View> = keys.iter().map(|k| self.view(k)).collect();
        match peer {
            Some(peer) => self.peers.insert(node.to_owned(), peer),
            None => self.peers.remove(node),
        };
        for (key, before) in keys.iter().zip(before) {
            effects.follow(before, self.view(key));
        }
    }

    /// A user of `node` claimed `key` at `since`: if a local user has it too, the later claim
    /// (ties: the higher node id) loses. A local loser is evicted; a remote one is its own
    /// process's business.
    fn check_conflict(&mut self, node: &str, key: &str, since: u64, effects: &mut Effects<C>) {
        let Some(uplink) = &self.uplink else { return };
        let Some(local) = self.users.get_mut(key) else {
            return;
        };
        if local.evicted || (local.entry.since, uplink.node.as_str()) < (since, node) {
            return;
        }
        log::info!(
            "presence: {} was claimed earlier on node {node}: closing the local connection",
            local.entry.nick
        );
        local.evicted = true;
        effects.evict.push((local.conn, local.entry.nick.clone()));
    }

    fn send_roster(&mut self, now: Instant) {
        let Some(uplink) = &mut self.uplink else {
            return;
        };
        uplink.last_roster = Some(now);
        let roster = Event::Roster {
            node: uplink.node.clone(),
            every: uplink.heartbeat.as_millis() as u64,
            users: self.roster(),
        };
        self.announce(&roster);
    }

    fn roster(&self) -> Vec<Entry> {
        self.users.values().map(|u| u.entry.clone()).collect()
    }

    fn node(&self) -> Option<String> {
        self.uplink.as_ref().map(|s| s.node.clone())
    }

    /// Publishes the state of the local user `key`.
    fn announce_user(&mut self, key: &str) {
        let (Some(node), Some(user)) = (self.node(), self.users.get(key)) else {
            return;
        };
        let event = Event::User {
            node,
            user: user.entry.clone(),
        };
        self.announce(&event);
    }

    /// Publishes `event` to the other processes (called with the directory locked, so events
    /// leave in the order of the changes).
    fn announce(&mut self, event: &Event) {
        if let Some(uplink) = &mut self.uplink {
            let json = serde_json::to_string(event).expect("presence events serialize");
            uplink.relay.publish(SYNC_TOPIC, Message::Text(&json));
        }
    }
}

/// A heartbeat as another node sent it, in ms, kept within reason.
fn heartbeat_of(every: u64) -> Duration {
    Duration::from_millis(every.clamp(10, 3_600_000))
}

/// This process's link to the other chat processes (`--redis`), if any: for a last flush when
/// the server has stopped.
#[derive(Debug, Default)]
pub struct Link {
    #[cfg(feature = "redis")]
    relay: Option<wsloop::RedisRelay>,
}

impl Link {
    /// Once the server has stopped, waits (at most `limit`) until the relay has sent what the
    /// closing connections published (their users leaving), so that the other processes hear
    /// of it now rather than three heartbeats later: until Redis has confirmed (or the relay
    /// dropped) nothing more for 100 ms.
    pub fn settle(&self, limit: Duration) {
        #[cfg(feature = "redis")]
        if let Some(relay) = &self.relay {
            let deadline = Instant::now() + limit;
            let done = || relay.published() + relay.dropped();
            let mut last = done();
            while relay.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                let now = done();
                if now == last {
                    break;
                }
                last = now;
            }
        }
        let _ = limit;
    }
}

/// Links `directory` to the other chat processes on the Redis at `url`: a `RedisRelay` for the
/// reactors behind `handles` (add it to the cluster), the presence events intercepted from it,
/// and a thread (`chat-presence`) that says hello, sends the heartbeats and forgets silent
/// nodes, until the relay stops.
#[cfg(feature = "redis")]
pub fn connect_redis(
    url: &str,
    handles: &[Handle],
    directory: &SharedDirectory,
    heartbeat: Duration,
) -> Result<(wsloop::RedisRelay, Link), wsloop::Error> {
    let options = wsloop::RedisOptions::default();
    connect_redis_with(url, handles, directory, heartbeat, options)
}

/// [`connect_redis`] with the relay's `options` (the tests' shorter bounds).
#[cfg(feature = "redis")]
pub fn connect_redis_with(
    url: &str,
    handles: &[Handle],
    directory: &SharedDirectory,
    heartbeat: Duration,
    options: wsloop::RedisOptions,
) -> Result<(wsloop::RedisRelay, Link), wsloop::Error> {
    let relay = wsloop::RedisRelay::connect_with(url, handles, super::REDIS_PREFIX, options)?;
    let node = relay.origin().to_owned();
    lock(directory).attach(node, Box::new(relay.clone()), heartbeat);
    let (shared, targets) = (directory.clone(), handles.to_vec());
    relay.intercept(SYNC_TOPIC, move |msg| {
        if let Message::Text(text) = msg {
            let effects = lock(&shared).receive(text, Instant::now());
            effects.deliver(&targets);
        }
    });
    // A user whose message the relay dropped is told.
    let (shared, targets) = (directory.clone(), handles.to_vec());
    relay.on_dropped(move |topic, msg| {
        let Message::Text(text) = msg else {
            return;
        };
        let undelivered = lock(&shared).undelivered(topic, text);
        if let Some((to, notice)) = undelivered {
            if let Some(handle) = targets.get(to.reactor) {
                let _ = handle.send(to.id, Message::Text(&notice));
            }
        }
    });
    let (shared, targets, link) = (directory.clone(), handles.to_vec(), relay.clone());
    let tick = (heartbeat / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    std::thread::Builder::new()
        .name("chat-presence".into())
        .spawn(move || {
            let mut was_connected = false;
            while link.is_running() {
                let connected = link.is_connected();
                let now = Instant::now();
                let effects = {
                    let mut directory = lock(&shared);
                    if connected && !was_connected {
                        directory.hello(now);
                    }
                    directory.tick(now, connected)
                };
                was_connected = connected;
                effects.deliver(&targets);
                std::thread::sleep(tick);
            }
        })
        .map_err(wsloop::Error::Io)?;
    let link = Link {
        relay: Some(relay.clone()),
    };
    Ok((relay, link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A relay that keeps what it is handed.
    #[derive(Clone, Default)]
    struct Outbox(Arc<Mutex<Vec<String>>>);

    impl Relay for Outbox {
        fn publish(&mut self, topic: &str, msg: Message<'_>) {
            assert_eq!(topic, SYNC_TOPIC);
            let Message::Text(text) = msg else {
                panic!("presence events are text")
            };
            self.0.lock().unwrap().push(text.to_owned());
        }
    }

    impl Outbox {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// A directory whose connections are numbers.
    type Dir = Directory<u32>;

    fn node(name: &str, heartbeat: Duration) -> (Dir, Outbox) {
        let outbox = Outbox::default();
        let mut directory = Directory::default();
        directory.attach(name.into(), Box::new(outbox.clone()), heartbeat);
        (directory, outbox)
    }

    /// Hands everything `from` published to `to`.
    fn pass(from: &Outbox, to: &mut Dir, now: Instant) -> Effects<u32> {
        let mut all = Effects::default();
        for text in from.take() {
            let effects = to.receive(&text, now);
            all.notices.extend(effects.notices);
            all.evict.extend(effects.evict);
        }
        all
    }

    fn types(effects: &Effects<u32>) -> Vec<String> {
        (effects.notices.iter())
            .map(|(topic, json)| {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                format!("{topic} {} {}", v["type"].as_str().unwrap(), v["nick"])
            })
            .collect()
    }

    #[test]
    fn two_nodes_share_users_and_rooms() {
        let t0 = Instant::now();
        let (mut a, a_out) = node("a", DEFAULT_HEARTBEAT);
        let (mut b, b_out) = node("b", DEFAULT_HEARTBEAT);
        a.hello(t0);
        assert!(
            pass(&a_out, &mut b, t0).notices.is_empty(),
            "a has nobody yet"
        );
        // b answered the hello with its (empty) roster.
        assert_eq!(b_out.take().len(), 1);

        assert!(a.claim("alice", "Alice", 1));
        assert!(a.enter("lobby", "alice"));
        assert!(b.claim("bob", "bob", 1));
        assert!(b.enter("lobby", "bob"));
        // Live events change the lists without notices (the handler's own notices are relayed).
        assert!(pass(&a_out, &mut b, t0).notices.is_empty());
        assert!(pass(&b_out, &mut a, t0).notices.is_empty());
        for d in [&a, &b] {
            assert_eq!(d.online(), ["Alice", "bob"]);
            assert_eq!(d.members("lobby"), ["Alice", "bob"]);
            assert_eq!(d.rooms(), BTreeMap::from([("lobby".to_owned(), 2)]));
            assert_eq!(d.nick("alice"), Some("Alice"));
        }
        assert!(!b.claim("alice", "ALICE", 2), "taken on the other node");

        // bob leaves: one `gone` event, and a's lists follow.
        assert_eq!(
            b.release("bob", 1),
            Released {
                rooms: vec!["lobby".into()],
                offline: true
            }
        );
        assert!(pass(&b_out, &mut a, t0).notices.is_empty());
        assert_eq!(a.online(), ["Alice"]);
        assert_eq!(a.members("lobby"), ["Alice"]);
        assert!(a.claim("bob", "Bob", 2), "free again");

        // Only the connection holding a nickname releases it.
        assert_eq!(a.holder("bob"), Some(2));
        assert!(!a.release("bob", 3).offline);
        assert_eq!(a.online(), ["Alice", "Bob"]);
        assert!(a.release("bob", 2).offline);
    }

    #[test]
    fn a_silent_node_is_forgotten_and_a_roster_brings_it_back() {
        let every = Duration::from_millis(100);
        let t0 = Instant::now();
        let (mut a, a_out) = node("a", every);
        let (mut b, b_out) = node("b", every);
        assert!(b.claim("bob", "bob", 1));
        assert!(b.enter("rust", "bob"));
        let _ = b.tick(t0, true); // the first roster
                                  // The live events taught a about bob; the roster says the same: no notices.
        assert!(pass(&b_out, &mut a, t0).notices.is_empty());
        assert_eq!(a.members("rust"), ["bob"]);

        // Three heartbeats of silence: not yet; a little more: bob is gone, with notices.
        assert!(a.tick(t0 + every * 3, true).notices.is_empty());
        let _ = a_out.take();
        let effects = a.tick(t0 + every * 3 + Duration::from_millis(1), true);
        assert_eq!(
            types(&effects),
            [
                "room:rust member_left \"bob\"",
                "presence user_offline \"bob\""
            ]
        );
        assert!(a.online().is_empty() && a.nick("bob").is_none());

        // b's next roster (events of the meantime were lost) brings bob back, with notices.
        let t1 = t0 + every * 4;
        let _ = b.tick(t1, true);
        let effects = pass(&b_out, &mut a, t1);
        assert_eq!(
            types(&effects),
            [
                "presence user_online \"bob\"",
                "room:rust member_joined \"bob\""
            ]
        );
        // A roster that says what is known already changes nothing.
        let _ = b.tick(t1 + every, true);
        assert!(pass(&b_out, &mut a, t1).notices.is_empty());
        // Not connected: no roster goes out.
        let _ = b.tick(t1 + every * 2, false);
        assert!(b_out.take().is_empty());
    }

    #[test]
    fn a_roster_corrects_what_was_missed() {
        let t0 = Instant::now();
        let (mut a, _a_out) = node("a", DEFAULT_HEARTBEAT);
        let (mut b, b_out) = node("b", DEFAULT_HEARTBEAT);
        assert!(b.claim("bob", "bob", 1));
        assert!(b.enter("lobby", "bob"));
        assert!(b.claim("carol", "carol", 2));
        let _ = pass(&b_out, &mut a, t0);
        // Lost: bob moves from the lobby to rust, carol leaves, dave comes.
        assert!(b.leave("lobby", "bob"));
        assert!(b.enter("rust", "bob"));
        let _ = b.release("carol", 2);
        assert!(b.claim("dave", "dave", 3));
        let _ = b_out.take();
        b.send_roster(t0);
        let effects = pass(&b_out, &mut a, t0);
        assert_eq!(
            types(&effects),
            [
                "room:rust member_joined \"bob\"",
                "room:lobby member_left \"bob\"",
                "presence user_offline \"carol\"",
                "presence user_online \"dave\"",
            ]
        );
    }

    #[test]
    fn a_hello_is_answered_and_an_unknown_node_is_asked() {
        let t0 = Instant::now();
        let (mut a, a_out) = node("a", DEFAULT_HEARTBEAT);
        let (mut b, b_out) = node("b", DEFAULT_HEARTBEAT);
        assert!(b.claim("bob", "bob", 1));
        let _ = b_out.take();
        a.hello(t0);
        let _ = pass(&a_out, &mut b, t0);
        let answer = b_out.take();
        assert_eq!(answer.len(), 1);
        assert!(answer[0].starts_with("{\"e\":\"roster\""), "{}", answer[0]);
        // An event from a node not known yet makes a ask for the rosters (once per heartbeat).
        let (mut c, c_out) = node("c", DEFAULT_HEARTBEAT);
        assert!(c.claim("carol", "carol", 1));
        assert!(c.claim("cid", "cid", 2));
        let _ = pass(&c_out, &mut a, t0 + DEFAULT_HEARTBEAT);
        let asked = a_out.take();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(asked[0].starts_with("{\"e\":\"hello\""), "{}", asked[0]);
        assert_eq!(a.online(), ["carol", "cid"]);
    }

    #[test]
    fn a_nickname_claimed_twice_goes_to_the_earlier_claim() {
        let t0 = Instant::now();
        let (mut a, a_out) = node("a", DEFAULT_HEARTBEAT);
        let (mut b, b_out) = node("b", DEFAULT_HEARTBEAT);
        // Neither knows of the other's claim yet; a's is earlier.
        assert!(a.claim("sam", "Sam", 1));
        assert!(a.enter("lobby", "sam"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.claim("sam", "sam", 7));
        assert!(b.enter("lobby", "sam"));
        assert!(b.enter("rust", "sam"));
        // a hears of b's claim: a's user stays.
        assert!(pass(&b_out, &mut a, t0).evict.is_empty());
        // b hears of a's: b's user is closed, once.
        let effects = pass(&a_out, &mut b, t0);
        assert_eq!(effects.evict, [(7, "sam".to_owned())]);
        a.send_roster(t0);
        assert!(pass(&a_out, &mut b, t0).evict.is_empty(), "already evicted");
        // The loser leaves: only the room the winner is not in is announced, not offline.
        assert_eq!(
            b.release("sam", 7),
            Released {
                rooms: vec!["rust".into()],
                offline: false
            }
        );
        assert_eq!(b.online(), ["Sam"]);
        let _ = pass(&b_out, &mut a, t0);
        assert_eq!(a.members("rust"), Vec::<String>::new());
        assert_eq!(a.members("lobby"), ["Sam"]);

        // The same claim time: the lower node id wins.
        let (mut x, x_out) = node("x", DEFAULT_HEARTBEAT);
        let (mut y, y_out) = node("y", DEFAULT_HEARTBEAT);
        assert!(x.claim("tie", "tie", 1));
        assert!(y.claim("tie", "tie", 2));
        let since = x.users["tie"].entry.since;
        y.users.get_mut("tie").unwrap().entry.since = since;
        let _ = y_out.take();
        y.send_roster(t0);
        x.send_roster(t0);
        assert!(pass(&y_out, &mut x, t0).evict.is_empty());
        assert_eq!(pass(&x_out, &mut y, t0).evict, [(2, "tie".to_owned())]);
    }

    #[test]
    fn without_attach_nothing_is_published() {
        let mut d = Dir::default();
        assert!(d.claim("a", "a", 1));
        assert!(d.enter("r", "a"));
        assert!(d
            .receive(
                "{\"e\":\"gone\",\"node\":\"x\",\"nick\":\"a\"}",
                Instant::now()
            )
            .notices
            .is_empty());
        assert!(d.tick(Instant::now(), true).notices.is_empty());
        assert_eq!(d.online(), ["a"]);
    }

    #[test]
    fn a_dropped_message_is_told_to_its_sender_only_when_others_missed_it() {
        let (mut a, _out) = node("a", DEFAULT_HEARTBEAT);
        assert!(a.claim("alice", "Alice", 1));
        assert!(a.claim("carol", "carol", 3));
        let said = json!({"type": "message", "room": "lobby", "from": "Alice", "text": "hi",
            "ts": 5, "ref": "m1"});
        let (to, notice) = a.undelivered("room:lobby", &said.to_string()).unwrap();
        let notice: serde_json::Value = serde_json::from_str(&notice).unwrap();
        assert_eq!(to, 1);
        assert_eq!(
            (
                &notice["type"],
                &notice["room"],
                &notice["text"],
                &notice["ts"],
                &notice["ref"]
            ),
            (
                &json!("undelivered"),
                &json!("lobby"),
                &json!("hi"),
                &json!(5),
                &json!("m1")
            )
        );
        assert!(notice["message"]
            .as_str()
            .unwrap()
            .contains("other servers"));
        // A private message to a user elsewhere: told, without a room; not for the sender's
        // own copy, nor for a recipient here (who had it).
        let private = |to: &str| {
            json!({"type": "private", "from": "Alice", "to": to, "text": "psst", "ts": 6})
                .to_string()
        };
        let (to, notice) = a.undelivered("user:bob", &private("Bob")).unwrap();
        let notice: serde_json::Value = serde_json::from_str(&notice).unwrap();
        assert_eq!(
            (to, &notice["to"], &notice["room"]),
            (1, &json!("Bob"), &json!(null))
        );
        assert!(a.undelivered("user:alice", &private("Bob")).is_none());
        assert!(a.undelivered("user:carol", &private("carol")).is_none());
        // Anything else, or a sender gone: nobody to tell.
        let typing = json!({"type": "typing", "room": "lobby", "nick": "Alice", "active": true});
        assert!(a.undelivered("room:lobby", &typing.to_string()).is_none());
        assert!(a.undelivered(SYNC_TOPIC, "{\"e\":\"gone\"}").is_none());
        a.release("alice", 1);
        assert!(a.undelivered("room:lobby", &said.to_string()).is_none());
    }
}
