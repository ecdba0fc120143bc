//! The chat server itself: the [`Chat`] handler, its JSON protocol, the page it serves and the
//! command line. `wsloop chat` (`mod.rs` beside it) runs it; `tests/chat.rs` includes this same
//! file (`#[path = "../src/bin/wsloop/chat/server.rs"]`) to run it in-process. The protocol is
//! described at the top of `mod.rs`.
//!
//! # Cross-user traffic is topic publishes only
//!
//! Nothing here scans the local connections to reach another user. Every message meant for
//! someone else is published, encoded once, to a topic:
//!
//! - `room:<room>`: room messages, typing indicators, and member join / leave notices;
//! - `presence`: users coming online and going offline (every joined connection subscribes);
//! - `user:<nick in lowercase>`: private messages (only that user's connection subscribes).
//!
//! What goes straight to one connection with `send_text` is an answer to that connection's own
//! request (`welcome`, `room_joined`, `history`, `room_left`, `rooms`, `error`; from Redis, a
//! `history` comes a moment later through the reactor's `Handle`). So a `Cluster` of reactors, or a
//! Redis relay between processes, carries all of the chat as it is: wsloop's relays forward
//! publishes.
//!
//! The one piece of state that is not a topic is the [`Directory`] (`directory.rs`): who is
//! online (for unique nicknames, the online list in `welcome`, and checking a private message's
//! recipient) and who is in which room (for `room_joined`'s member list). It sits behind an
//! `Arc<Mutex<_>>` that the handler only locks briefly, so `--threads N` gives one directory to
//! the `Chat` of every reactor. With `--redis URL` (cargo feature `redis`), a `RedisRelay`
//! carries the topics between chat processes, and the directories of the processes keep each
//! other informed by presence events over the same Redis: see `directory.rs`. The other is the
//! room history ([`History`], `history.rs`): in memory, shared by the reactors, or in Redis,
//! shared by the processes.
//!
//! A page's rejoin after a reconnect presents the `token` of its last `welcome`; a connection
//! holding the nickname with that token (on this process) is the page's own, not yet seen to
//! end: it is closed with [`REPLACED`] and the nickname goes to the new one. So `nick_taken` on
//! a rejoin always means someone else took it.

#[path = "directory.rs"]
pub mod directory;
#[path = "history.rs"]
pub mod history;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use unicode_normalization::{is_nfkc, UnicodeNormalization};
use wsloop::{
    CloseCode, CloseReason, Cluster, Config, ConnId, Context, Handle, Handler, HttpResponse,
    Message, Request, Upgrade,
};

pub use directory::{Conn, Directory, Link, SharedDirectory};
pub use history::History;

/// The subprotocol a client must offer.
pub const PROTOCOL: &str = "chat.v1";
/// The WebSocket's path.
pub const WS_PATH: &str = "/ws";
/// Largest WebSocket message; wsloop closes a connection that sends more with 1009. Room for
/// the longest text with every character escaped in JSON (`\u0001`, or a surrogate pair
/// `\ud83e\udd80`: 12 bytes), so a text within [`MAX_TEXT_CHARS`] always gets an answer.
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024;
/// Longest `text` of a room or private message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Longest nickname or room name, in characters.
pub const MAX_NAME_CHARS: usize = 24;
/// Most rooms one user can be in at once.
pub const MAX_ROOMS: usize = 16;
/// The room every user joins unless `join` names others.
pub const DEFAULT_ROOM: &str = "lobby";
/// The rate limit: at most this many messages (typing notices aside) in a burst…
pub const RATE_BURST: u32 = 20;
/// …refilled at this many per [`RATE_WINDOW`]; past it a message is refused with the error
/// `rate_limited`, and after [`RATE_BURST`] refusals in a row the connection is closed with
/// 1008.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Typing notices have a budget of their own: this many per [`RATE_WINDOW`]; past it they are
/// ignored (they are not worth an answer).
pub const TYPING_BURST: u32 = 10;
/// Longest `ref` of a `say` or `private`, in bytes.
pub const MAX_REF_LEN: usize = 64;
/// Most rooms a `rooms` answer lists (the most populated first).
pub const MAX_LISTED_ROOMS: usize = 200;
/// The close code of a connection whose page joined again on another connection with the
/// resume token of this one (another tab, or a reconnect before this one was seen to end).
pub const REPLACED: CloseCode = CloseCode(4001);
/// Where users coming online and going offline are announced.
pub const PRESENCE: &str = "presence";
/// The default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The Redis channels of the chat's topics are named `<REDIS_PREFIX><topic>`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub const REDIS_PREFIX: &str = "wsloop-chat:";
/// What `--redis` says in a build without the `redis` feature.
pub const NEEDS_REDIS_FEATURE: &str = "--redis needs the `redis` feature: \
    cargo run --features cli,redis -- chat --redis URL";
/// The command line.
pub const USAGE: &str = "usage: chat [--addr HOST:PORT] [--threads N] [--origin ORIGIN]... \
    [--metrics ADDR] [--redis URL [--heartbeat SECS]]\n\
    \n  --addr HOST:PORT   listen here (default 127.0.0.1:8080); the page is http://HOST:PORT/\
    \n  --threads N        N reactors on N threads sharing the port (default 1)\
    \n  --origin ORIGIN    allow WebSockets from pages of this origin (e.g. https://chat.example);\
    \n                     repeatable. Default: only the page's own origin (Origin must match Host).\
    \n                     Clients that send no Origin (non-browsers) are always allowed.\
    \n  --metrics ADDR     serve the server's metrics (Prometheus text) at http://ADDR/metrics\
    \n  --redis URL        join the other chat processes on this Redis (redis://host:port): rooms,\
    \n                     private messages and the online list span them (cargo feature `redis`)\
    \n  --heartbeat SECS   with --redis: send this process's roster every SECS seconds (default 5);\
    \n                     a process silent for 3 heartbeats is taken as gone, its users offline";

const INDEX_HTML: &str = include_str!("index.html");
const STYLE_CSS: &str = include_str!("style.css");
const APP_JS: &str = include_str!("app.js");
const FAVICON_SVG: &str = include_str!("favicon.svg");
/// Everything the page loads comes from this server; user text never becomes markup anyway.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The topic of a room.
pub fn room_topic(room: &str) -> String {
    format!("room:{room}")
}

/// The topic of a user's private messages, by the nickname's lowercase key.
pub fn user_topic(key: &str) -> String {
    format!("user:{key}")
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// The command-line options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--addr`: where to listen.
    pub addr: String,
    /// `--origin`, repeatable: the allowed origins. Empty: same-origin only.
    pub origins: Vec<String>,
    /// `--threads`: how many reactors.
    pub threads: usize,
    /// `--redis`: the Redis that links this process to the other chat processes.
    pub redis: Option<String>,
    /// `--heartbeat`: how often this process sends its roster to the others.
    pub heartbeat: Duration,
    /// `--metrics`: where to serve the server's metrics (`GET /metrics`).
    pub metrics: Option<String>,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            addr: DEFAULT_ADDR.into(),
            origins: Vec::new(),
            threads: 1,
            redis: None,
            heartbeat: directory::DEFAULT_HEARTBEAT,
            metrics: None,
        }
    }
}

impl Args {
    /// Parses the arguments after the program's name; `Ok(None)` for `--help`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
        let mut out = Args::default();
        let mut heartbeat = None;
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--addr" => out.addr = value()?,
                "--threads" => {
                    out.threads = value()?
                        .parse()
                        .map_err(|_| "--threads takes a number of threads".to_owned())?
                }
                "--origin" => {
                    let origin = value()?;
                    if !origin.starts_with("http://") && !origin.starts_with("https://") {
                        return Err(format!(
                            "--origin {origin:?}: an origin looks like http://host:port"
                        ));
                    }
                    out.origins.push(origin.trim_end_matches('/').to_owned());
                }
                "--metrics" => out.metrics = Some(value()?),
                "--redis" if cfg!(feature = "redis") => out.redis = Some(value()?),
                "--redis" => return Err(NEEDS_REDIS_FEATURE.into()),
                "--heartbeat" => {
                    let secs = value()?;
                    let parsed = secs.parse::<f64>().ok();
                    heartbeat = Some(
                        parsed
                            .filter(|s| (0.01..=3600.0).contains(s))
                            .map(Duration::from_secs_f64)
                            .ok_or(format!(
                                "--heartbeat {secs:?}: a number of seconds from 0.01 to 3600"
                            ))?,
                    );
                }
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        if let Some(heartbeat) = heartbeat {
            if out.redis.is_none() {
                return Err("--heartbeat goes with --redis".into());
            }
            out.heartbeat = heartbeat;
        }
        Ok(Some(out))
    }
}

/// The server's configuration: small messages, prompt detection of dead peers, and the
/// allowed origins (empty: the handler checks same-origin itself).
///
/// At shutdown a client gets 2 s to answer the close (browsers answer at once): the users left
/// then must still reach the other processes through the Redis relay, which goes on for 5 s
/// after the shutdown was asked for.
pub fn config(origins: &[String]) -> Config {
    Config::default()
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_write_buffer(1 << 20)
        .ping_interval(Some(Duration::from_secs(15)))
        .idle_timeout(Some(Duration::from_secs(40)))
        .close_timeout(Duration::from_secs(2))
        .allowed_origins(origins.to_vec())
}

/// Binds the chat server as `args` say: `args.threads` reactors sharing the port and one
/// directory of who is online; rooms, presence and private messages are topics, which the
/// cluster relays between reactors. With `args.redis`, a `RedisRelay` relays them to the other
/// chat processes too, and the directory keeps in step with theirs (`directory.rs`); the
/// [`Link`] is for [`Link::settle`] once the cluster has stopped.
pub fn bind(args: &Args) -> Result<(Cluster<Chat>, Link), wsloop::Error> {
    let directory = Directory::shared();
    let shared = Arc::new(Shared::default());
    let same_origin = args.origins.is_empty();
    let config = config(&args.origins);
    #[allow(unused_mut)] // only a Redis build adds a relay
    let mut cluster = Cluster::bind(&args.addr, args.threads, config, |reactor| {
        Chat::new(directory.clone(), shared.clone(), same_origin, reactor)
    })?;
    let handles = cluster.handles();
    let _ = shared.handles.set(handles.clone());
    let Some(url) = &args.redis else {
        let _ = shared.history.set(History::default());
        return Ok((cluster, Link::default()));
    };
    #[cfg(feature = "redis")]
    {
        let (relay, link) = directory::connect_redis(url, &handles, &directory, args.heartbeat)?;
        let remote =
            history::redis::start(url, REDIS_PREFIX, handles).map_err(wsloop::Error::Io)?;
        let _ = shared.history.set(History::Redis(remote));
        cluster.add_relay(relay);
        Ok((cluster, link))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url; // `Args::parse` refuses --redis in this build
        Err(wsloop::Error::Config {
            option: "redis",
            cause: wsloop::ConfigError::NeedsFeature { feature: "redis" },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol
// ---------------------------------------------------------------------------------------------

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Join {
        nick: String,
        #[serde(default)]
        rooms: Option<Vec<String>>,
        /// The `token` of an earlier `welcome`, to take the nickname over from that connection.
        #[serde(default)]
        token: Option<String>,
    },
    JoinRoom {
        room: String,
    },
    LeaveRoom {
        room: String,
    },
    Say {
        room: String,
        text: String,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    Private {
        to: String,
        text: String,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    Typing {
        #[serde(default)]
        room: Option<String>,
        #[serde(default)]
        to: Option<String>,
        #[serde(default = "yes")]
        active: bool,
    },
    ListRooms,
}

impl Incoming {
    /// The client's `ref` of a `say` or `private`, which its answers carry.
    fn reference(&self) -> Option<&str> {
        match self {
            Incoming::Say { reference, .. } | Incoming::Private { reference, .. } => {
                reference.as_deref()
            }
            _ => None,
        }
    }
}

fn yes() -> bool {
    true
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Outgoing<'a> {
    Welcome {
        nick: &'a str,
        users: Vec<String>,
        max_text: usize,
        token: &'a str,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    UserOnline {
        nick: &'a str,
    },
    UserOffline {
        nick: &'a str,
    },
    RoomJoined {
        room: &'a str,
        members: Vec<String>,
    },
    RoomLeft {
        room: &'a str,
    },
    MemberJoined {
        room: &'a str,
        nick: &'a str,
    },
    MemberLeft {
        room: &'a str,
        nick: &'a str,
    },
    Message {
        room: &'a str,
        from: &'a str,
        text: &'a str,
        ts: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Private {
        from: &'a str,
        to: &'a str,
        text: &'a str,
        ts: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Typing {
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        nick: &'a str,
        active: bool,
    },
    Rooms {
        rooms: Vec<RoomInfo>,
    },
    /// One of your messages did not reach the other chat processes (`--redis`).
    Undelivered {
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        text: &'a str,
        ts: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        message: &'a str,
    },
}

/// A room of a `rooms` answer.
#[derive(Debug, Serialize)]
struct RoomInfo {
    room: String,
    members: usize,
}

impl Outgoing<'_> {
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("chat messages serialize")
    }
}

/// A user's message that the Redis relay dropped: whom to tell, and what.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub struct Undelivered {
    /// The sender's nickname key.
    pub from: String,
    /// A private message's recipient's nickname key.
    pub to: Option<String>,
    /// The `undelivered` notice for the sender.
    pub notice: String,
}

/// What the Redis relay dropped, published to `topic` as `published`, if it was a user's
/// `message` or `private` (not the sender's own copy of a private message).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub fn undelivered(topic: &str, published: &str) -> Option<Undelivered> {
    let v: serde_json::Value = serde_json::from_str(published).ok()?;
    let (from, text, ts) = (v["from"].as_str()?, v["text"].as_str()?, v["ts"].as_u64()?);
    let (room, to) = match v["type"].as_str()? {
        "message" => (Some(v["room"].as_str()?), None),
        "private" => {
            let to = v["to"].as_str()?;
            if topic != user_topic(&to.to_ascii_lowercase()) {
                return None;
            }
            (None, Some(to))
        }
        _ => return None,
    };
    let notice = Outgoing::Undelivered {
        room,
        to,
        text,
        ts,
        reference: v["ref"].as_str(),
        message: "did not reach the users of the chat's other servers (Redis was unreachable)",
    };
    Some(Undelivered {
        from: from.to_ascii_lowercase(),
        to: to.map(str::to_ascii_lowercase),
        notice: notice.encode(),
    })
}

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON.
    BadJson,
    /// JSON, but not a message of the schema (unknown type, missing or mistyped field, binary).
    BadMessage,
    /// Anything but `join` before joining.
    NotJoined,
    /// A second `join`.
    AlreadyJoined,
    /// A nickname that is empty, too long, or has other characters than letters, digits and
    /// `_ - .`, styled letters or letters of Latin, Greek and Cyrillic mixed (see [`nickname`]).
    NickInvalid,
    /// A nickname someone online has (in any case).
    NickTaken,
    /// A room name that is empty, too long or has other characters than `A-Z a-z 0-9 _ - .`.
    RoomInvalid,
    /// Joining a room one is in.
    AlreadyInRoom,
    /// Speaking, typing in or leaving a room one is not in.
    NotInRoom,
    /// More than [`MAX_ROOMS`] rooms.
    TooManyRooms,
    /// A private message to someone not online.
    UnknownUser,
    /// A text with nothing but white space.
    EmptyText,
    /// A text over [`MAX_TEXT_CHARS`].
    TooLong,
    /// A text with control characters other than new lines and tabs.
    BadText,
    /// Over the rate limit: the message was not delivered.
    RateLimited,
}

/// A refusal of one request: answered with an `error` message, the connection stays open.
#[derive(Debug)]
struct Refusal {
    code: ErrorCode,
    message: String,
    /// The request's `ref`, if it had one.
    reference: Option<String>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl fmt::Display) -> Refusal {
        Refusal {
            code,
            message: message.to_string(),
            reference: None,
        }
    }
}

/// Checks a room name: 1 to 24 characters of `A-Z a-z 0-9 _ - .`.
pub fn valid_room_name(name: &str) -> Result<(), String> {
    check_length(name)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "may only have letters A-Z, digits and _ - . (not {})",
            shown(c)
        ));
    }
    Ok(())
}

/// Checks a nickname and returns it normalised to NFC: 1 to 24 characters, each a letter or a
/// digit of any script or one of `_ - .`. Refused, because they let two names look alike:
/// control, format and space characters (not letters), styled forms of Latin, Greek and
/// Cyrillic letters and of digits (`𝐚`, `ａ`, `ﬁ`, `²`) and a mix of Latin, Greek and
/// Cyrillic letters.
pub fn nickname(nick: &str) -> Result<String, String> {
    let nick: String = nick.nfc().collect();
    check_length(&nick)?;
    if let Some(c) = nick
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "may only have letters, digits and _ - . (not {})",
            shown(c)
        ));
    }
    if let Some(c) = nick.chars().find(|&c| styled(c)) {
        return Err(format!(
            "may not have a styled letter or digit ({}): type the plain one",
            shown(c)
        ));
    }
    let mut scripts = nick.chars().filter_map(confusable_script);
    if let Some(first) = scripts.next() {
        if let Some(other) = scripts.find(|&s| s != first) {
            return Err(format!(
                "mixes {first} and {other} letters, which look alike: use one alphabet"
            ));
        }
    }
    Ok(nick)
}

/// The key of a nickname in the directory, the same for every case of it (and the same for
/// the NFC and NFD forms of it).
pub fn nick_key(nick: &str) -> String {
    nick.nfc().collect::<String>().to_lowercase()
}

fn check_length(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    let len = name.chars().count();
    if len > MAX_NAME_CHARS {
        return Err(format!(
            "must be at most {MAX_NAME_CHARS} characters, got {len}"
        ));
    }
    Ok(())
}

/// A character as an error message shows it: quoted, after its code point unless it is
/// visible ASCII.
fn shown(c: char) -> String {
    if !c.is_ascii_graphic() {
        format!("U+{:04X} {c:?}", u32::from(c))
    } else {
        format!("{c:?}")
    }
}

/// Whether `c` is a styled form of a Latin, Greek or Cyrillic letter or of a digit (NFKC
/// turns it into the plain one), such as a mathematical bold or a full-width letter.
fn styled(c: char) -> bool {
    let mut buf = [0; 4];
    let c: &str = c.encode_utf8(&mut buf);
    !is_nfkc(c)
        && c.nfkc()
            .all(|p| p.is_ascii_digit() || confusable_script(p).is_some())
}

/// The scripts whose letters are mistaken for one another (Latin `a`, Cyrillic `а`, Greek `α`
/// and so on): the script of `c` if it is one of them.
fn confusable_script(c: char) -> Option<&'static str> {
    match c {
        'A'..='Z' | 'a'..='z' | '\u{c0}'..='\u{24f}' | '\u{1e00}'..='\u{1eff}' => Some("Latin"),
        '\u{370}'..='\u{3ff}' | '\u{1f00}'..='\u{1fff}' => Some("Greek"),
        '\u{400}'..='\u{52f}' | '\u{1c80}'..='\u{1c8f}' | '\u{a640}'..='\u{a69f}' => {
            Some("Cyrillic")
        }
        _ => None,
    }
}

fn check_text(text: &str) -> Result<(), Refusal> {
    let len = text.chars().count();
    if len > MAX_TEXT_CHARS {
        return Err(Refusal::new(
            ErrorCode::TooLong,
            format_args!("text is {len} characters, at most {MAX_TEXT_CHARS} allowed"),
        ));
    }
    if text.trim().is_empty() {
        return Err(Refusal::new(ErrorCode::EmptyText, "text is empty"));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Refusal::new(
            ErrorCode::BadText,
            format_args!(
                "text has a control character ({c:?}): only new lines and tabs may be sent"
            ),
        ));
    }
    Ok(())
}

fn check_ref(reference: Option<&str>) -> Result<(), Refusal> {
    match reference {
        Some(r) if r.len() > MAX_REF_LEN => Err(Refusal::new(
            ErrorCode::BadMessage,
            format_args!("ref is {} bytes, at most {MAX_REF_LEN} allowed", r.len()),
        )),
        _ => Ok(()),
    }
}

/// A new resume token: 128 bits from the OS random source, so that nobody can guess one.
fn new_token() -> u128 {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source failed");
    u128::from_le_bytes(bytes)
}

fn room_name(room: &str) -> Result<String, Refusal> {
    valid_room_name(room)
        .map_err(|e| Refusal::new(ErrorCode::RoomInvalid, format_args!("room {e}")))?;
    Ok(room.to_ascii_lowercase())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------------
// Per-connection state
// ---------------------------------------------------------------------------------------------

/// A token bucket: `burst` at once, refilled at `burst` per [`RATE_WINDOW`].
#[derive(Debug)]
pub struct TokenBucket {
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            burst,
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes a token; false if there is none.
    fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.burst) / RATE_WINDOW.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A joined user.
#[derive(Debug, Clone)]
struct User {
    /// The nickname as chosen.
    nick: String,
    /// The nickname in lowercase: the directory's key.
    key: String,
    /// Where the user is, with the resume token: the directory's value.
    conn: Conn,
}

/// What the rate limit says of one message.
enum Admit {
    Yes,
    /// A typing notice over its budget: dropped without an answer.
    Ignore,
    /// Over the budget: answered with `rate_limited`.
    Refuse,
    /// Refused too often in a row: the connection is closed.
    Close,
}

/// The state of one connection.
#[derive(Debug)]
pub struct Session {
    /// Set by `join`.
    user: Option<User>,
    /// The rooms the user is in, in the order joined.
    rooms: Vec<String>,
    bucket: TokenBucket,
    typing: TokenBucket,
    /// Messages refused by the rate limit since the last one let through.
    refused: u32,
    /// Closed for flooding: later messages of the same read are ignored.
    flooded: bool,
}

impl Session {
    fn admit(&mut self, typing: bool, now: Instant) -> Admit {
        if typing {
            return if self.typing.take(now) {
                Admit::Yes
            } else {
                Admit::Ignore
            };
        }
        if self.bucket.take(now) {
            self.refused = 0;
            return Admit::Yes;
        }
        self.refused += 1;
        if self.refused > RATE_BURST {
            self.flooded = true;
            Admit::Close
        } else {
            Admit::Refuse
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------------

/// What the `Chat` of every reactor shares besides the directory, set once the cluster is
/// bound: its reactors' handles and where the room history is kept.
#[derive(Default)]
pub struct Shared {
    handles: OnceLock<Vec<Handle>>,
    history: OnceLock<History>,
}

/// The chat application.
pub struct Chat {
    directory: SharedDirectory,
    shared: Arc<Shared>,
    /// Refuse a browser's upgrade from a page of another origin than `http(s)://<Host>`.
    same_origin: bool,
    /// This reactor's index in the cluster.
    reactor: usize,
}

impl Chat {
    /// A chat on `directory` and `shared` for reactor `reactor` of the cluster (0 for a lone
    /// server); `same_origin`: check that `Origin`, when sent, is the page's own (leave it
    /// false when `Config::allowed_origins` lists the allowed ones).
    pub fn new(
        directory: SharedDirectory,
        shared: Arc<Shared>,
        same_origin: bool,
        reactor: usize,
    ) -> Chat {
        Chat {
            directory,
            shared,
            same_origin,
            reactor,
        }
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        directory::lock(&self.directory)
    }

    fn history(&self) -> &History {
        self.shared.history.get_or_init(History::default)
    }

    fn handle(
        &mut self,
        ctx: &mut Context<'_, Session>,
        id: ConnId,
        msg: Incoming,
    ) -> Result<(), Refusal> {
        let user = ctx.state(id).and_then(|s| s.user.clone());
        match (user, msg) {
            (None, Incoming::Join { nick, rooms, token }) => {
                self.join(ctx, id, &nick, rooms, token.as_deref())
            }
            (Some(_), Incoming::Join { .. }) => Err(Refusal::new(
                ErrorCode::AlreadyJoined,
                "already joined: reconnect to change nickname",
            )),
            (None, _) => Err(Refusal::new(
                ErrorCode::NotJoined,
                "send {\"type\":\"join\",\"nick\":…} first",
            )),
            (Some(user), Incoming::JoinRoom { room }) => {
                self.enter_room(ctx, id, &user, &room_name(&room)?)
            }
            (Some(user), Incoming::LeaveRoom { room }) => {
                let room = self.member_of(ctx, id, &room)?;
                self.leave_room(ctx, id, &user, &room);
                ctx.send_text(id, &Outgoing::RoomLeft { room: &room }.encode())
                    .ok();
                Ok(())
            }
            (
                Some(user),
                Incoming::Say {
                    room,
                    text,
                    reference,
                },
            ) => {
                check_text(&text)?;
                check_ref(reference.as_deref())?;
                let room = self.member_of(ctx, id, &room)?;
                let out = Outgoing::Message {
                    room: &room,
                    from: &user.nick,
                    text: &text,
                    ts: now_ms(),
                    reference: reference.as_deref(),
                }
                .encode();
                ctx.publish(&room_topic(&room), Message::Text(&out));
                self.history().record(&room, &out);
                Ok(())
            }
            (
                Some(user),
                Incoming::Private {
                    to,
                    text,
                    reference,
                },
            ) => {
                check_text(&text)?;
                check_ref(reference.as_deref())?;
                let (key, to) = self.recipient(&to)?;
                let out = Outgoing::Private {
                    from: &user.nick,
                    to: &to,
                    text: &text,
                    ts: now_ms(),
                    reference: reference.as_deref(),
                }
                .encode();
                // The recipient, and the sender's own copy (once if they are the same).
                ctx.publish(&user_topic(&key), Message::Text(&out));
                if key != user.key {
                    ctx.publish(&user_topic(&user.key), Message::Text(&out));
                }
                Ok(())
            }
            (Some(user), Incoming::Typing { room, to, active }) => {
                let room = room
                    .map(|room| self.member_of(ctx, id, &room))
                    .transpose()?;
                let out = Outgoing::Typing {
                    room: room.as_deref(),
                    nick: &user.nick,
                    active,
                }
                .encode();
                match (&room, to) {
                    (Some(room), _) => {
                        ctx.publish_except(&room_topic(room), id, Message::Text(&out));
                    }
                    (None, Some(to)) => {
                        let (key, _) = self.recipient(&to)?;
                        if key != user.key {
                            ctx.publish(&user_topic(&key), Message::Text(&out));
                        }
                    }
                    (None, None) => {
                        return Err(Refusal::new(
                            ErrorCode::BadMessage,
                            "typing needs a room or a to",
                        ))
                    }
                }
                Ok(())
            }
            (Some(_), Incoming::ListRooms) => {
                let mut rooms: Vec<RoomInfo> = (self.directory().rooms().into_iter())
                    .map(|(room, members)| RoomInfo { room, members })
                    .collect();
                rooms.sort_by(|a, b| b.members.cmp(&a.members).then(a.room.cmp(&b.room)));
                rooms.truncate(MAX_LISTED_ROOMS);
                rooms.sort_by(|a, b| a.room.cmp(&b.room));
                ctx.send_text(id, &Outgoing::Rooms { rooms }.encode()).ok();
                Ok(())
            }
        }
    }

    /// A private message's recipient, online: the nickname's key and the nickname as chosen.
    fn recipient(&self, to: &str) -> Result<(String, String), Refusal> {
        let key = nick_key(to);
        match self.directory().nick(&key) {
            Some(nick) => Ok((key.clone(), nick.to_owned())),
            None => Err(Refusal::new(
                ErrorCode::UnknownUser,
                format_args!("{to} is not online"),
            )),
        }
    }

    /// `join`: takes the nickname (over from this page's earlier connection, if `token` is
    /// the one that connection was given), announces it, then enters the rooms asked for (the
    /// lobby if none).
    fn join(
        &mut self,
        ctx: &mut Context<'_, Session>,
        id: ConnId,
        nick: &str,
        rooms: Option<Vec<String>>,
        token: Option<&str>,
    ) -> Result<(), Refusal> {
        let nick = &nickname(nick)
            .map_err(|e| Refusal::new(ErrorCode::NickInvalid, format_args!("nickname {e}")))?;
        if rooms.as_ref().is_some_and(|r| r.len() > MAX_ROOMS) {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format_args!("at most {MAX_ROOMS} rooms"),
            ));
        }
        let key = nick_key(nick);
        let token = token.and_then(|t| u128::from_str_radix(t, 16).ok());
        let earlier = self.directory().holder(&key);
        if let Some(earlier) = earlier.filter(|conn| Some(conn.token) == token) {
            self.replace(ctx, &key, nick, earlier);
        }
        let conn = Conn {
            reactor: self.reactor,
            id,
            token: new_token(),
        };
        let users = {
            let mut directory = self.directory();
            if !directory.claim(&key, nick, conn) {
                return Err(Refusal::new(
                    ErrorCode::NickTaken,
                    format_args!("{nick} is taken: someone online has that nickname"),
                ));
            }
            directory.online()
        };
        let user = User {
            nick: nick.to_owned(),
            key,
            conn,
        };
        if let Some(session) = ctx.state(id) {
            session.user = Some(user.clone());
        }
        ctx.subscribe(id, &user_topic(&user.key));
        ctx.subscribe(id, PRESENCE);
        let online = Outgoing::UserOnline { nick: &user.nick };
        ctx.publish_except(PRESENCE, id, Message::Text(&online.encode()));
        let welcome = Outgoing::Welcome {
            nick: &user.nick,
            users,
            max_text: MAX_TEXT_CHARS,
            token: &format!("{:032x}", conn.token),
        };
        ctx.send_text(id, &welcome.encode()).ok();
        let rooms = rooms.unwrap_or_else(|| vec![DEFAULT_ROOM.to_owned()]);
        for room in rooms {
            let entered = room_name(&room).and_then(|room| self.enter_room(ctx, id, &user, &room));
            if let Err(refusal) = entered {
                send_error(ctx, id, &refusal);
            }
        }
        Ok(())
    }

    /// The page of the connection `earlier` joins again on a new one: `earlier` leaves as if
    /// it had disconnected, and is closed with [`REPLACED`].
    fn replace(&mut self, ctx: &mut Context<'_, Session>, key: &str, nick: &str, earlier: Conn) {
        if earlier.reactor == self.reactor {
            // Nothing more reaches it while its close handshake runs, and its end is not news.
            if let Some(session) = ctx.state(earlier.id) {
                session.user = None;
                for room in std::mem::take(&mut session.rooms) {
                    ctx.unsubscribe(earlier.id, &room_topic(&room));
                }
                ctx.unsubscribe(earlier.id, &user_topic(key));
                ctx.unsubscribe(earlier.id, PRESENCE);
            }
        }
        let reason = "this page joined again on another connection";
        if earlier.reactor == self.reactor {
            let _ = ctx.close(earlier.id, REPLACED, reason);
        } else if let Some(handle) = self
            .shared
            .handles
            .get()
            .and_then(|h| h.get(earlier.reactor))
        {
            let _ = handle.close(earlier.id, REPLACED, reason);
        }
        let released = self.directory().release(key, earlier);
        announce_release(ctx, nick, &released);
    }

    fn enter_room(
        &mut self,
        ctx: &mut Context<'_, Session>,
        id: ConnId,
        user: &User,
        room: &str,
    ) -> Result<(), Refusal> {
        let Some(session) = ctx.state(id) else {
            return Ok(());
        };
        if session.rooms.iter().any(|r| r == room) {
            return Err(Refusal::new(
                ErrorCode::AlreadyInRoom,
                format_args!("already in {room}"),
            ));
        }
        if session.rooms.len() >= MAX_ROOMS {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format_args!("at most {MAX_ROOMS} rooms: leave one first"),
            ));
        }
        session.rooms.push(room.to_owned());
        let (news, members) = {
            let mut directory = self.directory();
            let news = directory.enter(room, &user.key);
            (news, directory.members(room))
        };
        let topic = room_topic(room);
        if news {
            let notice = Outgoing::MemberJoined {
                room,
                nick: &user.nick,
            };
            ctx.publish(&topic, Message::Text(&notice.encode()));
        }
        ctx.subscribe(id, &topic);
        ctx.send_text(id, &Outgoing::RoomJoined { room, members }.encode())
            .ok();
        if let Some(history) = self.history().replay(room, user.conn) {
            ctx.send_text(id, &history).ok();
        }
        Ok(())
    }

    /// Leaves `room` (which the user is in) and tells its members.
    fn leave_room(&mut self, ctx: &mut Context<'_, Session>, id: ConnId, user: &User, room: &str) {
        if let Some(session) = ctx.state(id) {
            session.rooms.retain(|r| r != room);
        }
        let gone = self.directory().leave(room, &user.key);
        let topic = room_topic(room);
        ctx.unsubscribe(id, &topic);
        if gone {
            announce_left(ctx, room, &user.nick);
        }
    }

    /// The room's name if the user is in it.
    fn member_of(
        &self,
        ctx: &mut Context<'_, Session>,
        id: ConnId,
        room: &str,
    ) -> Result<String, Refusal> {
        let room = room_name(room)?;
        let rooms = ctx.state(id).map(|s| &s.rooms[..]).unwrap_or_default();
        if rooms.contains(&room) {
            Ok(room)
        } else {
            Err(Refusal::new(
                ErrorCode::NotInRoom,
                format_args!("not in {room}: join it first"),
            ))
        }
    }
}

/// Tells a room's members (on every process) that `nick` left it.
fn announce_left(ctx: &mut Context<'_, Session>, room: &str, nick: &str) {
    let notice = Outgoing::MemberLeft { room, nick };
    ctx.publish(&room_topic(room), Message::Text(&notice.encode()));
}

/// Announces what a user's departure left: the rooms they left, and going offline.
fn announce_release(ctx: &mut Context<'_, Session>, nick: &str, released: &directory::Released) {
    for room in &released.rooms {
        announce_left(ctx, room, nick);
    }
    if released.offline {
        let offline = Outgoing::UserOffline { nick };
        ctx.publish(PRESENCE, Message::Text(&offline.encode()));
    }
}

fn send_error(ctx: &mut Context<'_, Session>, id: ConnId, refusal: &Refusal) {
    let out = Outgoing::Error {
        code: refusal.code,
        message: &refusal.message,
        reference: refusal.reference.as_deref(),
    };
    ctx.send_text(id, &out.encode()).ok();
}

/// The path of a request target, without its query.
fn path_of<'r>(req: &Request<'_, 'r>) -> &'r str {
    req.path().split('?').next().unwrap_or("")
}

/// Parses a client's message.
fn parse(msg: Message<'_>) -> Result<Incoming, Refusal> {
    match msg {
        Message::Text(text) => serde_json::from_str::<Incoming>(text).map_err(|e| {
            let code = if e.is_data() {
                ErrorCode::BadMessage
            } else {
                ErrorCode::BadJson
            };
            Refusal::new(code, e)
        }),
        Message::Binary(_) => Err(Refusal::new(
            ErrorCode::BadMessage,
            "binary messages are not part of chat.v1: send JSON text",
        )),
    }
}

impl Handler for Chat {
    type State = Session;

    fn on_upgrade(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<Session> {
        if path_of(req) != WS_PATH {
            return Upgrade::reject(404, "no WebSocket here: the chat is at /ws");
        }
        if !req.protocols().any(|p| p == PROTOCOL) {
            return Upgrade::reject(
                400,
                &format!("unsupported subprotocol: offer Sec-WebSocket-Protocol: {PROTOCOL}"),
            );
        }
        if self.same_origin {
            if let Some(origin) = req.origin() {
                let host = req.header("host").unwrap_or("");
                let own = ["http://", "https://"]
                    .iter()
                    .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
                if !own {
                    return Upgrade::reject(
                        403,
                        "origin not allowed: this chat only accepts its own page \
                         (start it with --origin to allow others)",
                    );
                }
            }
        }
        let now = Instant::now();
        Upgrade::accept_protocol(
            PROTOCOL,
            Session {
                user: None,
                rooms: Vec::new(),
                bucket: TokenBucket::new(RATE_BURST, now),
                typing: TokenBucket::new(TYPING_BURST, now),
                refused: 0,
                flooded: false,
            },
        )
    }

    fn on_http(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> HttpResponse {
        let (content_type, body) = match path_of(req) {
            "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
            "/style.css" => ("text/css; charset=utf-8", STYLE_CSS),
            "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
            "/favicon.ico" | "/favicon.svg" => ("image/svg+xml", FAVICON_SVG),
            WS_PATH => return HttpResponse::upgrade_required(),
            _ => return HttpResponse::text(404, "not found"),
        };
        HttpResponse::new(200, content_type, body)
            .header("Cache-Control", "no-cache")
            .header("X-Content-Type-Options", "nosniff")
            .header("Content-Security-Policy", CSP)
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Session>, id: ConnId, msg: Message<'_>) {
        let parsed = parse(msg);
        let typing = matches!(parsed, Ok(Incoming::Typing { .. }));
        let Some(session) = ctx.state(id) else {
            return;
        };
        if session.flooded {
            return;
        }
        let reference = parsed
            .as_ref()
            .ok()
            .and_then(Incoming::reference)
            .filter(|r| r.len() <= MAX_REF_LEN)
            .map(str::to_owned);
        let result = match session.admit(typing, Instant::now()) {
            Admit::Yes => parsed.and_then(|msg| self.handle(ctx, id, msg)),
            Admit::Ignore => Ok(()),
            Admit::Refuse => Err(Refusal::new(
                ErrorCode::RateLimited,
                format_args!(
                    "rate limit: at most {RATE_BURST} messages per {} s; not delivered, \
                     send it again in a moment",
                    RATE_WINDOW.as_secs()
                ),
            )),
            Admit::Close => {
                let reason = format!(
                    "rate limit: over {RATE_BURST} messages per {} s, {RATE_BURST} times in a row",
                    RATE_WINDOW.as_secs()
                );
                let _ = ctx.close(id, CloseCode::POLICY, &reason);
                return;
            }
        };
        if let Err(mut refusal) = result {
            refusal.reference = reference;
            send_error(ctx, id, &refusal);
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_, Session>, id: ConnId, _why: CloseReason<'_>) {
        let Some(session) = ctx.state(id) else {
            return;
        };
        let Some(user) = session.user.take() else {
            return;
        };
        for room in std::mem::take(&mut session.rooms) {
            ctx.unsubscribe(id, &room_topic(&room));
        }
        // The rooms and the online list lose the user, unless another process holds the same
        // nickname (the loser of a simultaneous claim leaves the winner's rooms alone), or a
        // new connection of the same page took it over.
        let released = self.directory().release(&user.key, user.conn);
        announce_release(ctx, &user.nick, &released);
    }
}
