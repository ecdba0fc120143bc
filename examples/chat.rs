//! A chat server with its own page: nicknames, an online list, rooms, private messages,
//! "is typing…" indicators, and a page that reconnects by itself.
//!
//! ```text
//! cargo run --release --example chat -- [--addr HOST:PORT] [--threads N] [--origin ORIGIN]...
//!     [--redis URL [--heartbeat SECS]]
//! ```
//!
//! then open <http://127.0.0.1:8080/>. The page (`chat/index.html`, `chat/style.css`,
//! `chat/app.js`, embedded at build time) is served by the handler's `on_http`; the WebSocket is
//! at `/ws` with subprotocol `chat.v1` (another path gets 404, no `chat.v1` offer 400). A
//! browser's `Origin` must be the page's own (`http://` + the `Host` it asked for) unless
//! `--origin` lists the allowed ones (then wsloop's `Config::allowed_origins` checks them);
//! either way another origin gets 403, and clients that send no `Origin` are let in. The first
//! line on stdout is `chat: listening on http://ADDR/`; SIGINT / SIGTERM close every connection
//! with 1001 (the pages reconnect when the server is back).
//!
//! The handler lives in `chat/server.rs`, which `tests/chat.rs` includes too.
//!
//! # Several processes: `--redis`
//!
//! ```text
//! redis-server --port 6379 &
//! cargo run --release --features redis --example chat -- \
//!     --addr 127.0.0.1:8080 --redis redis://127.0.0.1:6379 &
//! cargo run --release --features redis --example chat -- \
//!     --addr 127.0.0.1:8081 --redis redis://127.0.0.1:6379
//! ```
//!
//! Chat processes on the same Redis are one chat: users of <http://127.0.0.1:8080/> and
//! <http://127.0.0.1:8081/> share rooms, the online list and private messages. A `RedisRelay`
//! carries every topic publish between the processes, and each process keeps a roster of the
//! others' users from presence events over Redis pub/sub (`chat/directory.rs` has the design):
//! changes are sent as they happen, whole rosters every `--heartbeat` seconds (default 5), and a
//! process not heard from for 3 heartbeats is taken as gone (its users go offline). Presence is
//! eventual: a nickname claimed at the same moment on two processes goes to the earlier claim,
//! and the other connection is closed with 4409. Redis may restart: the processes reconnect,
//! and the rosters are exchanged again. Without the `redis` cargo feature, `--redis` is refused.
//!
//! # Protocol `chat.v1`
//!
//! Every message is a JSON object in a text frame, with a `type`. Nicknames and room names are 1
//! to 24 characters of `A-Z a-z 0-9 _ - .`; nicknames are unique among the users online,
//! ignoring case; room names are lowercased. Texts are 1 to 2,000 characters (not all white
//! space). A WebSocket message may be at most 8 KiB (more: closed with 1009). Each connection may
//! send 20 messages at once, refilled at 20 per 5 s; past that it is closed with 1008.
//!
//! Client to server:
//!
//! | `type` | fields | effect |
//! |---|---|---|
//! | `join` | `nick`, optional `rooms` (list, default `["lobby"]`, at most 16) | must come first: `welcome`, then `room_joined` for each room |
//! | `join_room` | `room` | `room_joined` to you, `member_joined` to the room |
//! | `leave_room` | `room` | `room_left` to you, `member_left` to the room |
//! | `say` | `room`, `text` | `message` to the room's members, you included |
//! | `private` | `to` (a nickname, any case), `text` | `private` to that user and to you |
//! | `typing` | `room`, optional `active` (default `true`; `false` when stopped) | `typing` to the room's other members |
//!
//! Server to client:
//!
//! | `type` | fields | when |
//! |---|---|---|
//! | `welcome` | `nick`, `users` (everyone online, you included, sorted), `max_text` | you joined |
//! | `user_online` / `user_offline` | `nick` | someone else joined / disconnected |
//! | `room_joined` | `room`, `members` (nicknames, sorted, you included) | you entered a room |
//! | `room_left` | `room` | you left a room |
//! | `member_joined` / `member_left` | `room`, `nick` | someone else entered / left one of your rooms (also on disconnect) |
//! | `message` | `room`, `from`, `text`, `ts` (ms since the Unix epoch) | someone (you included) spoke in one of your rooms |
//! | `private` | `from`, `to`, `text`, `ts` | a private message to you, or your own copy of one you sent |
//! | `typing` | `room`, `nick`, `active` | someone else in one of your rooms is typing (`true`) or stopped |
//! | `error` | `code`, `message` (for people) | a request was refused; the connection stays open |
//!
//! Error codes: `bad_json` (not JSON), `bad_message` (unknown `type`, a missing or mistyped
//! field, a binary message), `not_joined`, `already_joined`, `nick_invalid`, `nick_taken`,
//! `room_invalid`, `already_in_room`, `not_in_room`, `too_many_rooms`, `unknown_user`,
//! `empty_text`, `too_long`. Unknown fields are ignored. With `--redis`, a connection whose
//! nickname turns out to have been claimed earlier on another process is closed with 4409.
//!
//! ```text
//! → {"type":"join","nick":"alice"}
//! ← {"type":"welcome","nick":"alice","users":["alice","bob"],"max_text":2000}
//! ← {"type":"room_joined","room":"lobby","members":["alice","bob"]}
//! → {"type":"say","room":"lobby","text":"hi bob"}
//! ← {"type":"message","room":"lobby","from":"alice","text":"hi bob","ts":1767225600000}
//! → {"type":"private","to":"Bob","text":"psst"}
//! ← {"type":"private","from":"alice","to":"bob","text":"psst","ts":1767225601000}
//! → {"type":"join","nick":"carol"}
//! ← {"type":"error","code":"already_joined","message":"already joined: reconnect to change nickname"}
//! ```

#[path = "chat/server.rs"]
mod server;

use std::io::Write;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match server::Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", server::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("chat: {e}\n{}", server::USAGE);
            std::process::exit(2);
        }
    };
    let (server, link) = match server::bind(&args) {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("chat: {e}");
            std::process::exit(1);
        }
    };
    println!("chat: listening on http://{}/", server.local_addr());
    let _ = std::io::stdout().flush();
    let handle = server.handle();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = handle.shutdown();
    }) {
        eprintln!("chat: cannot handle signals: {e}");
    }
    let result = server.run();
    // The other processes (--redis) hear now that this one's users left.
    link.settle(std::time::Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("chat: {e}");
        std::process::exit(1);
    }
}
