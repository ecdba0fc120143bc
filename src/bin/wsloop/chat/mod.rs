//! A chat server with its own page: nicknames, an online list, rooms with their history,
//! private messages, "is typing…" indicators, and a page that reconnects by itself (for phones
//! too, keyboard-accessible).
//!
//! ```text
//! cargo run --release --features cli -- chat [--addr HOST:PORT] [--threads N] [--origin ORIGIN]...
//!     [--redis URL [--heartbeat SECS]]          (--redis needs --features cli,redis)
//! ```
//!
//! then open <http://127.0.0.1:8080/>. The page (`index.html`, `style.css`, `app.js`, beside this
//! file, embedded at build time) is served by the handler's `on_http`; the WebSocket is
//! at `/ws` with subprotocol `chat.v1` (another path gets 404, no `chat.v1` offer 400). A
//! browser's `Origin` must be the page's own (`http://` + the `Host` it asked for) unless
//! `--origin` lists the allowed ones (then wsloop's `Config::allowed_origins` checks them);
//! either way another origin gets 403, and clients that send no `Origin` are let in. The first
//! line on stdout is `chat: listening on http://ADDR/`; SIGINT / SIGTERM close every connection
//! with 1001 (the pages reconnect when the server is back).
//!
//! The handler lives in `server.rs` (the directory of who is online in `directory.rs`, the room
//! history in `history.rs`), which `tests/chat.rs` includes too.
//!
//! # Several processes: `--redis`
//!
//! ```text
//! redis-server --port 6379 &
//! cargo run --release --features cli,redis -- chat \
//!     --addr 127.0.0.1:8080 --redis redis://127.0.0.1:6379 &
//! cargo run --release --features cli,redis -- chat \
//!     --addr 127.0.0.1:8081 --redis redis://127.0.0.1:6379
//! ```
//!
//! Chat processes on the same Redis are one chat: users of <http://127.0.0.1:8080/> and
//! <http://127.0.0.1:8081/> share rooms, the online list and private messages. A `RedisRelay`
//! carries every topic publish between the processes, and each process keeps a roster of the
//! others' users from presence events over Redis pub/sub (`directory.rs` has the design):
//! changes are sent as they happen, whole rosters every `--heartbeat` seconds (default 5), and a
//! process not heard from for 3 heartbeats is taken as gone (its users go offline). Presence is
//! eventual: a nickname claimed at the same moment on two processes goes to the earlier claim,
//! and the other connection is closed with 4409. Redis may restart: the processes reconnect,
//! and the rosters are exchanged again. Without the `redis` cargo feature, `--redis` is refused.
//!
//! # Protocol `chat.v1`
//!
//! WebSocket at `/ws`, subprotocol `chat.v1`. Every message is a JSON object in a text frame, with a
//! `type`. Room names are 1 to 24 characters of `A-Z a-z 0-9 _ - .`, lowercased; nicknames 1 to 24
//! letters or digits of any script and `_ - .`, normalised to NFC (see the chat's README), unique
//! among the users online, ignoring case. Texts are 1 to 2,000
//! characters (not all white space; no control characters but new lines and tabs). A WebSocket
//! message may be at most 32 KiB (more: closed with 1009), room enough for any text within the
//! limit, every character escaped. The rate limit: each connection may send 20 messages at once,
//! refilled at 20 per 5 s (4 a second); typing notices do not count (they have their own budget,
//! 10 per 5 s, and past it are ignored). A message over the limit is not delivered and answered
//! with the error `rate_limited` (with its `ref`); after 20 refusals in a row the connection is
//! closed with 1008.
//!
//! Client to server:
//!
//! | `type` | fields | effect |
//! |---|---|---|
//! | `join` | `nick`, optional `rooms` (list, default `["lobby"]`, at most 16), optional `token` (of an earlier `welcome`) | must come first: `welcome`, then `room_joined` and `history` for each room. With the `token` of the connection holding `nick` (the same page reconnecting before its old connection was seen to end, or another tab with a copy of its session), that connection is closed with 4001 and this one takes the nickname |
//! | `join_room` | `room` | `room_joined` and `history` to you, `member_joined` to the room |
//! | `leave_room` | `room` | `room_left` to you, `member_left` to the room |
//! | `say` | `room`, `text`, optional `ref` (yours, up to 64 bytes) | `message` to the room's members, you included; kept in the room's history |
//! | `private` | `to` (a nickname, any case), `text`, optional `ref` | `private` to that user and to you |
//! | `typing` | `room` or `to` (a nickname), optional `active` (default `true`; `false` when stopped) | `typing` to the room's other members, or to that user |
//! | `list_rooms` | | `rooms` |
//!
//! Server to client:
//!
//! | `type` | fields | when |
//! |---|---|---|
//! | `welcome` | `nick`, `users` (everyone online, you included, sorted), `max_text`, `token` (to rejoin with) | you joined |
//! | `user_online` / `user_offline` | `nick` | someone else joined / disconnected |
//! | `room_joined` | `room`, `members` (nicknames, sorted, you included) | you entered a room |
//! | `room_left` | `room` | you left a room |
//! | `member_joined` / `member_left` | `room`, `nick` | someone else entered / left one of your rooms (also on disconnect) |
//! | `history` | `room`, `messages` (the room's last `message`s, at most 100, oldest first) | after `room_joined` (from Redis, a moment later) |
//! | `message` | `room`, `from`, `text`, `ts` (ms since the Unix epoch), `ref` (if the sender gave one) | someone (you included) spoke in one of your rooms |
//! | `private` | `from`, `to`, `text`, `ts`, `ref` (if given) | a private message to you, or your own copy of one you sent |
//! | `typing` | `room` (none: in your private conversation with `nick`), `nick`, `active` | someone else is typing (`true`) or stopped |
//! | `rooms` | `rooms` (`{room, members}`, by name, the 200 most populated) | answer to `list_rooms` |
//! | `error` | `code`, `message` (for people), `ref` (of the refused `say` / `private`) | a request was refused; the connection stays open |
//! | `undelivered` | `room` or `to`, `text`, `ts`, `ref` (if given), `message` | one of your messages did not reach the users on the chat's other processes (`--redis`: Redis down longer than the relay holds messages, 30 s by default) |
//!
//! Error codes: `bad_json` (not JSON), `bad_message` (unknown `type`, a missing or mistyped field, a
//! binary message), `not_joined`, `already_joined`, `nick_invalid`, `nick_taken`, `room_invalid`,
//! `already_in_room`, `not_in_room`, `too_many_rooms`, `unknown_user`, `empty_text`, `too_long`,
//! `bad_text` (control characters), `rate_limited`.
//! Unknown fields are ignored. With `--redis`, a connection whose nickname turns out to have been
//! claimed earlier on another process is closed with 4409.
//!
//! ```text
//! → {"type":"join","nick":"alice"}
//! ← {"type":"welcome","nick":"alice","users":["alice","bob"],"max_text":2000,"token":"5f0c…"}
//! ← {"type":"room_joined","room":"lobby","members":["alice","bob"]}
//! ← {"type":"history","room":"lobby","messages":[{"type":"message","room":"lobby","from":"bob","text":"hello?","ts":1767225500000}]}
//! → {"type":"say","room":"lobby","text":"hi bob","ref":"m1"}
//! ← {"type":"message","room":"lobby","from":"alice","text":"hi bob","ts":1767225600000,"ref":"m1"}
//! → {"type":"private","to":"Bob","text":"psst"}
//! ← {"type":"private","from":"alice","to":"bob","text":"psst","ts":1767225601000}
//! → {"type":"join","nick":"carol"}
//! ← {"type":"error","code":"already_joined","message":"already joined: reconnect to change nickname"}
//! ```

mod server;

use std::io::Write;

use clap::Args;

/// Options of `wsloop chat`, passed on to the chat's own parser (`wsloop chat --help` prints
/// its usage).
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct ChatArgs {
    /// [--addr HOST:PORT] [--threads N] [--origin ORIGIN]... [--redis URL [--heartbeat SECS]]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "OPTIONS"
    )]
    args: Vec<String>,
}

/// Runs the chat server until SIGINT / SIGTERM; returns the exit code.
pub fn run(args: ChatArgs) -> i32 {
    let args = match server::Args::parse(args.args) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", server::USAGE);
            return 0;
        }
        Err(e) => {
            eprintln!("chat: {e}\n{}", server::USAGE);
            return 2;
        }
    };
    let (server, link) = match server::bind(&args) {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("chat: {e}");
            return 1;
        }
    };
    if let Some(addr) = &args.metrics {
        let handle = server.handle();
        match crate::metrics::serve(addr, move |timeout| handle.metrics(timeout)) {
            Ok(at) => println!("chat: metrics on http://{at}/metrics"),
            Err(e) => {
                eprintln!("chat: {e}");
                return 1;
            }
        }
    }
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
        return 1;
    }
    0
}
