//! The wsloop manual: a guide to the crate beyond the API reference.
//!
//! Its pages, in reading order:
//! - [User guide](_01_guide): a handler, its context, routing, origins and authentication.
//! - [Configuration and limits](_02_limits): every limit, its default, and what a client that
//!   crosses it gets; protocol errors and their answers.
//! - [wss (TLS)](_03_tls).
//! - [Compression](_04_compression): permessage-deflate and what it costs.
//! - [Topics](_05_topics): rooms, publishes encoded once, relays.
//! - [Embedding](_06_embedding): a server inside a game loop of your own.
//! - [Scaling](_07_scaling): more reactors on more cores with a [`Cluster`](crate::Cluster).
//! - [Redis](_08_redis): topics across processes through Redis, and how the relay works.
//! - [Memory and hardening](_09_memory_and_hardening).
//! - [Performance](_10_performance): what was measured, and how to measure again.
//!
//! The pages are documentation only: they hold no items.

pub mod _01_guide {
    //! # User guide
    //!
    //! A handler, the context it works through, and the rest of the application API.
    //!
    //! ```no_run
    //! use std::net::SocketAddr;
    //! use wsloop::{CloseReason, Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};
    //!
    //! /// Per-connection state: here, the name taken from the request path.
    //! struct Chat;
    //!
    //! impl Handler for Chat {
    //!     type State = String;
    //!
    //!     fn on_upgrade(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<String> {
    //!         if req.origin().is_some_and(|o| o != "https://example.com") {
    //!             return Upgrade::reject(403, "origin not allowed");
    //!         }
    //!         let name = req.path().trim_start_matches('/').to_owned();
    //!         match req.protocols().find(|p| *p == "chat.v1") {
    //!             Some(p) => Upgrade::accept_protocol(p, name),
    //!             None => Upgrade::accept(name),
    //!         }
    //!     }
    //!
    //!     fn on_message(&mut self, ctx: &mut Context<'_, String>, id: ConnId, msg: Message<'_>) {
    //!         if let Message::Text(text) = msg {
    //!             let name = ctx.state(id).cloned().unwrap_or_default();
    //!             ctx.broadcast(Message::Text(&format!("{name}: {text}")));
    //!         }
    //!     }
    //!
    //!     fn on_close(&mut self, _ctx: &mut Context<'_, String>, id: ConnId, why: CloseReason<'_>) {
    //!         log::info!("{id} left: {why:?}");
    //!     }
    //! }
    //!
    //! fn main() -> Result<(), wsloop::Error> {
    //!     Server::bind("127.0.0.1:9001", Config::default(), Chat)?.run()
    //! }
    //! ```
    //!
    //! - `on_upgrade(req, peer)` sees the path, headers, `Origin` and offered subprotocols, and answers
    //!   `Upgrade::accept(state)`, `Upgrade::accept_protocol(p, state)` (`p` must be one the client
    //!   offered) or a rejection with any HTTP status (`Upgrade::reject(401, "…")`,
    //!   `Upgrade::Reject(HttpResponse)`).
    //! - `on_http(req, peer)` answers a plain GET that is not an upgrade (default: 426 page).
    //! - `on_open`, `on_message` (text as `&str`, binary as `&[u8]`), `on_close` (the peer's code and
    //!   reason, or why the connection was dropped: protocol error, overflow, timeout, disconnect) and
    //!   `on_drain` (a queue that had to wait for the socket is empty again).
    //! - The `Context` sends (`send`, `send_text`, `send_binary`, `ping`), closes
    //!   (`close(id, code, reason)`), broadcasts (`broadcast`, `broadcast_except`: the frame is encoded
    //!   once), and tells `peer_addr`, `connections()`, `state(id)` and `buffered(id)` (bytes queued).
    //! - Sends are queued and every connection with queued bytes is flushed once at the end of the turn;
    //!   pongs and close replies go out in the same turn as the frame that asked for them.
    //! - Topics (rooms): `ctx.subscribe(id, "room")`, `unsubscribe`, `publish(topic, msg)` and
    //!   `publish_except(topic, sender, msg)` (encoded once, the same bytes queued to every subscriber),
    //!   `subscribers(topic)`, `topics(id)`. A connection's subscriptions end when it closes.
    //! - `Router::new().protocol("chat", Chat).path("/echo", Echo)` serves several applications on one
    //!   port, chosen by the subprotocol the client offers and / or the path; the chosen subprotocol is
    //!   answered, an unknown one gets 400 naming the supported ones, an unknown path 404.
    //! - `Config::allowed_origins` refuses other browser origins with 403 before any frame;
    //!   authentication belongs in `on_upgrade` (`req.query("token")`, `req.cookie("session")`, then
    //!   `Upgrade::reject(401, …)`).
    //! - `Server::turn(timeout)` runs one turn (for embedding in someone else's loop); `run()` loops it
    //!   until a `Handle::shutdown()`. See [embedding](super::_06_embedding).
    //! - `wsloop::client::Client` is a small blocking client on the same protocol core;
    //!   `wsloop::proto` is the sans-IO core itself (handshake, frame codec, message decoder).
}

pub mod _02_limits {
    //! # Configuration and limits
    //!
    //! Every limit has a default that is safe on the open internet. `Config::default()` and chainable
    //! setters of the same name (`Config::default().max_message_size(1 << 20)`); `Server::bind`
    //! validates it and the error names the option (`invalid config: max_message_size must be at least
    //! 125 B, got 3`). What a connection follows is a [`ConnectionConfig`](crate::ConnectionConfig)
    //! (also what a [`Client`](crate::client::Client) or an embedded
    //! [`Connection`](crate::proto::connection::Connection) takes); [`Config`](crate::Config) holds one
    //! beside the reactor's own options. The defaults are written once, on those two types' fields.
    //!
    //! | option | what a client gets when it crosses it |
    //! |---|---|
    //! | `max_handshake_size` | `431 Request Header Fields Too Large` (also for more than 64 headers) |
    //! | `handshake_timeout` | no complete request head in time: the connection is dropped |
    //! | `max_message_size` | close `1009`, sent as soon as a frame header announces too much (fragments count together) |
    //! | `max_fragments` | frames one message may take (control frames between them do not count): the frame past it gets close `1008`, as soon as its header arrives; it bounds the work of a flood of empty continuation frames, which never grows the message |
    //! | `max_write_buffer` | bytes queued for one connection, held to the byte but for one frame header (an empty queue takes any one message up to `max_message_size`, so every accepted message can be echoed): a send that would pass it gets `SendError::Full`, and with `on_overflow = Close` the connection is closed, see "Slow readers" below |
    //! | `on_overflow` | see above |
    //! | `max_buffered` | bytes the whole reactor buffers (kept input, unfinished messages, write queues, by capacity): past it, the connection holding the most is shed: what it holds is dropped and it gets close `1013` (try again later), or is closed without a close frame if it had unwritten output; `on_close` says `Overflow`. At least twice the larger of `max_message_size` and `max_write_buffer` |
    //! | `ping_interval` | a ping after this much silence from the client |
    //! | `idle_timeout` | close `1001` "idle timeout" and drop after this much silence |
    //! | `close_timeout` | after our close frame (or an HTTP error), the wait for the peer's close / TCP close |
    //! | `max_connections` | `503 Service Unavailable`, then closed (it lingers like any refusal; past 64 such at once, closed without one). Lowered at start-up, with a warning, to the open-files limit less 96, or to each reactor's share of it in a `Cluster` (Linux). If `accept` still fails (out of descriptors), it is retried whenever a connection closes and every 100 ms, with one warning per 5 s |
    //! | `read_buffer_size` | the one reactor-wide read buffer (not per connection) |
    //! | `buffer_pool_size` | large buffers (over 64 KiB, grown for big messages) kept for reuse; 0 keeps none |
    //! | `allowed_origins` | another browser `Origin` gets 403 (requests without `Origin` pass; two `Origin` headers get 400) |
    //! | `handle_queue` | bytes of commands waiting from `Handle`s (each message, topic or reason, plus 64): beyond it a call returns `HandleError::Full` |
    //! | `deflate` | permessage-deflate settings, see [Compression](super::_04_compression) |
    //!
    //! **Slow readers.** A client that does not read what it is sent fills the kernel's buffers, then
    //! its write queue. The send that would pass `max_write_buffer` is refused and (`on_overflow =
    //! Close`, the default) the close frame `1008` "write buffer overflow" is queued after what is
    //! already queued, if it fits within the bound; if even it does not, the connection is dropped at
    //! once (its queue freed, no close frame). Either way `on_close` says `Overflow`, and from then on
    //! nothing more is read from that client: what it sends is held back by TCP's flow control, not
    //! read and discarded, and it ends when the client closes TCP or `close_timeout` passes. A queue's
    //! buffer grows by doubling up to 256 KiB, then by adding 256 KiB buffers, so what is queued is
    //! never copied into a bigger buffer (with a 16 MiB bound that was 8 MiB at once, while every other
    //! connection waited); what a queue holds stays within the bound plus the part of its oldest
    //! buffer already written.
    //!
    //! The reactor's memory in the worst case, whatever the clients do: `max_buffered` + 2 x
    //! max(`max_message_size`, `max_write_buffer`) (one read or send may pass the budget before the
    //! largest connection is shed) + `buffer_pool_size` + 4 MiB (small pooled buffers) +
    //! `read_buffer_size` + `handle_queue` + `max_connections` x about 0.5 KiB (each connection's own
    //! state) + 64 KiB for each connection inside a compressed message (its inflater's state) +
    //! 512 KiB per compressor (one per reactor and window size without context takeover, one per
    //! connection with it). With the defaults and no compression: 256 + 32 + 4 + 4 + 0.06 + 16 +
    //! 4.9 = about 317 MiB. `tests/memory_bound.rs` holds a reactor to this figure while clients
    //! that never read, unfinished fragmented messages and unfinished compressed messages press on
    //! it at once (with an 8 MiB `max_buffered`: 8.7 MiB of RSS against a bound of 18.7 MiB).
    //!
    //! Protocol errors and what they get (RFC 6455):
    //!
    //! | the client sends | the server answers |
    //! |---|---|
    //! | a request that is not a valid upgrade (no Host, bad `Sec-WebSocket-Key`, no `Connection: upgrade`, HTTP/1.0, malformed) | 400 |
    //! | a method other than GET | 405 |
    //! | `Sec-WebSocket-Version` other than 13, or none (draft-75/76) | 426 with `Sec-WebSocket-Version: 13` |
    //! | a plain GET without upgrade | 426 page, or the handler's `on_http` response |
    //! | an unmasked frame, RSV bits with no extension, a reserved opcode, a fragmented or >125-byte control frame, a stray continuation, a new message inside a fragmented one, a 64-bit length with the top bit set, a bad close frame (1 byte, or a code that may not be sent) | close 1002 |
    //! | invalid UTF-8 in text or a close reason (found on the first bad byte, even mid-frame) | close 1007 |
    //! | a message over `max_message_size` | close 1009 |
    //!
    //! After a protocol error wsloop sends its close frame, shuts down writing and drops the connection
    //! when the client closes TCP or `close_timeout` passes. A client's close is answered with a close
    //! echoing its code, after which the server closes TCP.
}

pub mod _03_tls {
    //! # wss (TLS)
    //!
    //! `Server::bind_tls(addr, tls, config, handler)` serves wss; `server.listen(addr, tls)` adds more
    //! listeners, plain or TLS, to one server. TLS is rustls (ring provider, TLS 1.2 and 1.3, ALPN
    //! `http/1.1`) driven non-blocking inside the reactor; a TLS handshake counts against
    //! `handshake_timeout`, and a close sends close_notify before the FIN.
    //!
    //! ```no_run
    //! let tls = wsloop::TlsConfig::from_pem_files("cert.pem", Some("key.pem"))?; // or one file with both
    //! // or, from PEM text held in memory (a secret that is not on disk):
    //! # let (cert_pem, key_pem) = (Vec::new(), Vec::new());
    //! let tls = wsloop::TlsConfig::from_pem(&cert_pem, &key_pem)?;
    //! # Ok::<(), wsloop::Error>(())
    //! ```
    //!
    //! wsloop's API names no rustls type: a server's TLS is its certificate chain and key, with the
    //! settings above. Client certificates (mutual TLS), SNI with several certificates or other
    //! protocol versions are not offered; put a TLS proxy in front for those.
    //!
    //! A local certificate and wss echo server:
    //!
    //! ```sh
    //! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    //!   -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    //!   -keyout key.pem -out cert.pem
    //! cargo run --release --features cli -- echo --tls-cert cert.pem --tls-key key.pem   # wss://127.0.0.1:9001/
    //! cargo run --release --features cli -- bench wss://localhost:9001/ --cafile cert.pem     # or --insecure
    //! ```
    //!
    //! Start-up errors (`Error::Tls`, its cause a `TlsError`) name the file and the problem: a missing
    //! or unreadable file, a PEM with no certificate or no key, an encrypted key (with the `openssl
    //! pkey` command to decrypt it), or a key that does not match the certificate.
    //!
    //! The client (`wsloop::client`) speaks wss trusting the system's CA bundle (`SSL_CERT_FILE`, or
    //! the usual places), or the CAs of `ConnectOptions::tls`: `ClientTls::from_pem_file("ca.pem")` or
    //! `ClientTls::from_pem(bytes)`. For a client certificate or a verifier of your own, make the TLS
    //! stream with rustls (or any TLS library) yourself and hand it to
    //! `Client::handshake_with_options`, which takes any `Read + Write` stream.
}

pub mod _04_compression {
    //! # Compression (permessage-deflate, RFC 7692)
    //!
    //! Off by default in the library, on in `wsloop echo` (`--no-deflate` turns it off) and
    //! `examples/echo.rs`:
    //!
    //! ```
    //! use wsloop::{Config, DeflateConfig};
    //! let config = Config::default().deflate(Some(DeflateConfig::default()));
    //! ```
    //!
    //! | `DeflateConfig` field | default | meaning |
    //! |---|---|---|
    //! | `server_max_window_bits` | 15 | largest window the server compresses with (9-15) |
    //! | `client_max_window_bits` | 15 | largest window the client may use (9-15; a client's 8 is accepted) |
    //! | `server_no_context_takeover` | true | compress each message on its own: one shared compressor serves every connection, and a broadcast or publish is compressed once per window size |
    //! | `client_no_context_takeover` | true | ask the client to compress each message on its own: an idle connection keeps no inflate state |
    //! | `level` | 1 | zlib level 0-9; at 1, a message of up to 16 KiB compressed on its own (no context takeover) goes through wsloop's own fixed-Huffman encoder: the same size as zlib's level 1, with no per-message reset of zlib's tables |
    //! | `threshold` | 64 | messages shorter than this go out uncompressed |
    //!
    //! The server accepts the first acceptable offer in `Sec-WebSocket-Extensions` and declines (goes on
    //! without compression) offers with unknown, duplicate or invalid parameters, or that demand
    //! `server_max_window_bits=8` (zlib cannot deflate a raw stream with a 256-byte window). RSV1 is
    //! accepted only on the first frame of a message when compression was negotiated (else 1002).
    //! Inflated size counts against `max_message_size`, so a decompression bomb gets 1009 having cost no
    //! more than the limit; corrupt data gets 1007 in a text message, 1002 in a binary one. Corrupt
    //! includes bytes after a final deflate block other than RFC 7692's single `00` octet, and
    //! back-references beyond an agreed window of fewer than 15 bits.
    //! `Context::send_uncompressed` sends one message as it is.
    //!
    //! Memory (flate2 on zlib-rs, measured by the codec's tests): a deflate state is about 380 KB with a
    //! 15-bit window, an inflate state about 48 KB. With the defaults (no context takeover either way) a
    //! compressed idle connection holds neither: the shared compressors exist once per window size, and
    //! an inflater exists only while a read batch holds a compressed message. With context takeover each
    //! connection keeps its own (about 430 KB).
}

pub mod _05_topics {
    //! # Topics
    //!
    //! A topic is a name that connections subscribe to: a room of a chat, the channel of a game's
    //! updates. `ctx.subscribe(id, "room")` and `ctx.unsubscribe(id, "room")` (both say whether
    //! anything changed), `ctx.publish(topic, msg)` to every subscriber and
    //! `ctx.publish_except(topic, sender, msg)` to all but one (both return how many local
    //! subscribers it reached), `ctx.subscribers(topic)` and `ctx.topics(id)`. A connection's
    //! subscriptions end when it closes.
    //!
    //! A publish encodes its frame once and queues the same bytes to every subscriber; with
    //! permessage-deflate and no context takeover (the default) it is compressed once per window size.
    //! `broadcast` and `broadcast_except` do the same for every open connection.
    //!
    //! Publishes are also what crosses reactors and processes: every publish is handed to the server's
    //! relays ([`Relay`](crate::Relay)). In a [`Cluster`](crate::Cluster) each reactor's relay hands it
    //! to the other reactors, whose subscribers get it too; a Redis relay (feature `redis`, see
    //! [Redis](super::_08_redis)) carries it to other processes. What comes back from a relay is
    //! delivered with `Handle::publish_local`, which does not relay again, so a publish never loops.
    //! `send` and `broadcast` stay on the reactor they are made on.
}

pub mod _06_embedding {
    //! # Embedding in a loop of your own
    //!
    //! `run()` is `turn(None)` in a loop. A game or simulation that owns its thread calls
    //! `turn(Some(Duration::ZERO))` once a frame instead: it handles only what is ready (the handler's
    //! `on_message` collects the players' inputs), flushes, and returns at once. Between turns,
    //! `server.context()` sends, broadcasts, publishes and closes (flushed by the next turn or by
    //! `server.flush()`), and `server.handle()` is a `Send + Clone` `Handle` for other threads and
    //! signal handlers: `send`, `broadcast`, `publish`, `close` and `shutdown`, through a bounded queue
    //! (`Config::handle_queue`) that wakes the reactor. `shutdown(grace)` stops accepting, closes every
    //! connection with 1001, waits up to `grace` for the close handshakes, and returns.
    //!
    //! ```no_run
    //! use std::time::{Duration, Instant};
    //! use wsloop::{Config, Message, Server};
    //!
    //! # use std::net::SocketAddr;
    //! # use wsloop::{ConnId, Context, Handler, Request, Upgrade};
    //! # #[derive(Default)]
    //! # struct Game;
    //! # impl Game {
    //! #     fn step(&mut self, _dt: f32) {}
    //! #     fn snapshot(&mut self, out: &mut Vec<u8>) { out.clear(); }
    //! # }
    //! # impl Handler for Game {
    //! #     type State = ();
    //! #     fn on_upgrade(&mut self, _: &Request<'_, '_>, _: SocketAddr) -> Upgrade<()> {
    //! #         Upgrade::accept(())
    //! #     }
    //! #     fn on_message(&mut self, _: &mut Context<'_, ()>, _: ConnId, _: wsloop::Message<'_>) {}
    //! # }
    //! const TICK: Duration = Duration::from_nanos(1_000_000_000 / 60);
    //!
    //! fn main() -> Result<(), Box<dyn std::error::Error>> {
    //!     // Game: your Handler (inputs in on_message, players added on upgrade, removed on close).
    //!     let mut server = Server::bind("127.0.0.1:8090", Config::default(), Game::default())?;
    //!     let handle = server.handle(); // Send + Clone: for signal handlers and other threads
    //!     ctrlc::set_handler(move || {
    //!         let _ = handle.shutdown();
    //!     })?;
    //!     let mut snapshot = Vec::new();
    //!     let mut next = Instant::now();
    //!     while !server.shutdown_requested() {
    //!         server.turn(Some(Duration::ZERO))?; // only what is ready: inputs reach on_message
    //!         let game = server.handler();
    //!         game.step(TICK.as_secs_f32());
    //!         game.snapshot(&mut snapshot);
    //!         server.context().broadcast(Message::Binary(&snapshot)); // encoded once for everyone
    //!         server.flush();
    //!         next += TICK; // absolute deadlines: no drift
    //!         std::thread::sleep(next.saturating_duration_since(Instant::now()));
    //!     }
    //!     // Stop accepting, close everyone with 1001, wait up to 3 s for the close handshakes.
    //!     server.shutdown(Duration::from_secs(3))?;
    //!     Ok(())
    //! }
    //! ```
    //!
    //! `examples/game_loop.rs` is the full version: a 60 Hz field of players to watch and play in the
    //! browser (`cargo run --release --example game_loop`, then `http://127.0.0.1:8090/`, arrow keys or
    //! WASD, or the touch pad on a phone; the page says when it is offline and reconnects by
    //! itself), `--bots N` bot players on one extra thread (4 by default, `--bots 0` for none),
    //! and tick-time figures (the work of each tick: turn, simulation, broadcast, flush). Screenshots: `examples/game_loop/screenshot*.png`
    //! (1440x900 and a 390x844 phone).
    //!
    //! Measured 2026-11-22 on this project's machine (2 vCPU AMD EPYC KVM guest, kernel 6.18, bots on
    //! the same two vCPUs, other work running), `cargo run --release --example game_loop -- --bots N
    //! --seconds 20`, each tick broadcasting one snapshot to every player:
    //!
    //! | bots | tick p50 | tick p99 | max | ticks over 16.7 ms | snapshots delivered/s |
    //! |---|---|---|---|---|---|
    //! | 100 | 0.97 ms | 3.1 ms | 6.6 ms | 0 of 1,200 | 5,986 |
    //! | 1,000 (3.1 KB snapshot) | 11.6 ms | 27.1 ms | 32.8 ms | 240 of 1,139 | 56,057 |
    //!
    //! With 1,000 bots the median tick is 10.9 ms of the thread's own CPU time; about 82 % of it is the
    //! kernel's `send()`, one per player per tick (on loopback that includes the receiving side's TCP
    //! work), and wsloop's own code about 3 % (perf). 60 Hz to 1,000 players does not fit one of these
    //! vCPUs with room to spare: see Scaling for more reactors.
}

pub mod _07_scaling {
    //! # Scaling: more cores, more machines
    //!
    //! wsloop is single-threaded by design; past one core or one machine:
    //!
    //! **More cores: a `Cluster`.** `Cluster::bind(addr, threads, config, |i| handler)` runs N
    //! reactors on N threads, each with its own listener on the same port (SO_REUSEPORT: the kernel
    //! hashes each new connection to one of them), its own poll, slab and handler, and no lock on the
    //! hot path. A publish on one reactor reaches the subscribers on the others through their handles
    //! (`Handle::publish_local`); `send`, `broadcast` and `ConnId`s stay per reactor, and `Config`
    //! limits apply per reactor, but for `max_connections`, which is lowered to each reactor's share
    //! of the process's open-files limit. Only the reactors of one `Cluster` share its port: a second
    //! process binding the same address fails with "Address already in use". `cluster.handle()` publishes and shuts down all of them.
    //! `wsloop echo` and `wsloop chat` take `--threads N`.
    //!
    //! Measured 2026-11-22 on this project's 2-vCPU machine with `bash benches/scaling.sh` (100
    //! connections × 16 in flight × 16 B through the load generator, now `wsloop bench`, 5 s windows,
    //! medians of 3, other work running on the machine):
    //!
    //! | reactors | plain echo, msgs/s | echo with ~6 µs of handler work per message, msgs/s |
    //! |---|---|---|
    //! | 1 | 1.28 M | 130 k |
    //! | 2 | 1.47 M | 289 k (2.2×) |
    //!
    //! A CPU-bound handler scales with the reactors; plain echo on two cores is limited by the load
    //! generator, which needs about a core of its own.
    //!
    //! Runtime dependencies beyond the core list: `socket2`, because neither std nor mio can set
    //! SO_REUSEPORT before binding, and doing it through libc would need `unsafe`, which the crate
    //! forbids; `getrandom` (already in the tree through rustls' ring), because client masking keys
    //! and `Sec-WebSocket-Key` must come from a strong source (RFC 6455 section 10.3) and std has
    //! none: bytes are fetched 512 at a time into a pool each `Endpoint` keeps, so a masked frame
    //! costs no system call.
    //!
    //! **More machines**: a Redis relay, see [Redis](super::_08_redis).
}

pub mod _08_redis {
    //! # Redis: topics across processes
    //!
    //! A `RedisRelay` (cargo feature `redis`) carries topics between processes. A relay is handed every publish made
    //! on a server; the Redis relay queues it (bounded, never blocking the reactor) for a thread that
    //! sends `PUBLISH <prefix><topic>` to Redis, and a second thread, subscribed to `<prefix>*`,
    //! delivers what other processes published to the local subscribers. The Redis client is
    //! the `redis` crate's blocking one (an optional dependency, only with the feature): URLs as it
    //! takes them, `redis://user:password@host:port/db` for an ACL user (`redis://:password@host` for
    //! the default one), `rediss://` for TLS on rustls (the same rustls as wss; the server's
    //! certificate is checked against the system's roots). The feature needs Rust 1.88, the `redis`
    //! crate's own rust-version.
    //!
    //! ```text
    //!  process A                                    process B
    //!  ┌────────────────────────────────────┐       ┌────────────────────────────────────┐
    //!  │ reactor(s) ──publish──> RedisRelay │       │ reactor(s) ──publish──> RedisRelay │
    //!  │     ▲                     │ bounded│       │     ▲                     │ bounded│
    //!  │     │ publish_local       ▼ queue  │       │     │ publish_local       ▼ queue  │
    //!  │ sub thread            pub thread   │       │ sub thread            pub thread   │
    //!  └─────▲─────────────────────┼────────┘       └─────▲─────────────────────┼────────┘
    //!        │ PSUBSCRIBE prefix*  │ PUBLISH prefix+topic │                     │
    //!  ┌─────┴─────────────────────▼──────────────────────┴─────────────────────▼────────┐
    //!  │                                  redis-server                                   │
    //!  └─────────────────────────────────────────────────────────────────────────────────┘
    //! ```
    //!
    //! With a server: `RedisRelay::connect(url, server.handle(), "chat:")`, then
    //! `server.add_relay(relay)` before `server.run()`; with a cluster: `RedisRelay::connect_with`
    //! with every reactor's handle, and `cluster.add_relay(relay)`. `RedisRelay`'s own
    //! documentation has both in full.
    //!
    //! On the wire, a publish of `msg` to `topic` is `PUBLISH <prefix><topic> <payload>`, the
    //! payload being one byte `T` (text) or `B` (binary), the publishing relay's origin id (16
    //! lowercase hex digits, random per relay), then the message's bytes. A relay skips its own
    //! messages (their subscribers had them locally already) and ignores messages in another
    //! format, so other programs can publish to wsloop's clients by writing that payload. An empty
    //! message on the channel `<prefix>` itself is a probe, which relays ignore.
    //!
    //! **When Redis blinks.** The publishing thread keeps each publish in an outbox until Redis
    //! confirms it (`PUBLISH` answered). While Redis is down (killed, restarting, unreachable) or
    //! a connection stalls (no answer within `io_timeout`: Redis frozen, swapped out, overloaded),
    //! publishes wait there and go out in order once Redis is back, so a restart or a freeze
    //! within the bounds loses nothing. The bounds are `RedisOptions::outbox_time` (30 s) and
    //! `outbox_bytes` (8 MiB); past either the oldest are dropped, counted in `dropped()`, logged
    //! once a second with the count, and handed to the `relay.on_dropped(|topic, msg| ..)`
    //! callback, so that the application can tell the sender (the chat example sends the
    //! `undelivered` notice). The cases:
    //!
    //! | what happens | what the relay does | delivery |
    //! |---|---|---|
    //! | Redis killed and restarted | reconnects with a backoff (`min_backoff` doubling to `max_backoff`), resubscribes, then waits (at most `2 × max_backoff`) until a probe's `PUBLISH` reaches as many subscribers as before, and sends what it held | in order, nothing lost within the bounds; a publish written just before the connection broke, unanswered, is sent again (may arrive twice) |
    //! | Redis frozen (SIGSTOP) or too slow | keeps both connections: the publishing one counts as down after `io_timeout` without an answer; the subscription, silent for `keepalive`, is checked with a probe published on a second connection, and kept while Redis does not answer that one either | in order, once, when Redis wakes up within `outbox_time` |
    //! | a connection dead but Redis fine (a network or NAT drop) | each connection, once silent, is checked every `keepalive`: the subscription is replaced when a probe published on a second connection does not come back on it, the publishing connection when a fresh one gets answers and it still does not | ours: sent again on the new connection (may arrive twice); others' published to us meanwhile: missed |
    //! | past `outbox_time` or `outbox_bytes` | the oldest are dropped and reported | counted, logged, `on_dropped` |
    //! | the queue to the thread full (`queue`) | refused on the reactor's thread | counted, logged (not `on_dropped`) |
    //!
    //! `is_connected()` is false while either connection is down or stalled. Redis pub/sub itself
    //! keeps nothing: a message published while a subscriber is not subscribed is gone for it,
    //! which is why the relay waits for the subscribers before it sends what it held.
    //!
    //! What the application itself must hear from the other processes (not its clients) goes on a
    //! topic of its own that `relay.intercept(topic, |msg| ..)` takes from the relay: the callback runs
    //! on the relay's receiving thread, in order with the other deliveries, instead of the reactors'
    //! subscribers. The chat example keeps its online list across processes that way (`chat --redis
    //! URL`, see `src/bin/wsloop/chat/README.md`); `tests/chat_redis.rs` runs two chat processes on a real
    //! Redis, restarts Redis under them and kills one of them.
}

pub mod _09_memory_and_hardening {
    //! # Memory and hardening
    //!
    //! ## Memory
    //!
    //! A connection with nothing pending owns no read or write buffer: reads land in one reactor-wide
    //! buffer, a connection keeps bytes only for a partial frame or an unfinished fragmented message,
    //! and emptied buffers go back to a pool (at most 64 buffers of 16-64 KiB, plus up to
    //! `buffer_pool_size` of larger ones grown for big messages, reused whole for the next big frame).
    //! A frame that is announced but not sent costs only what arrived (a new buffer grows at most
    //! twofold per read). An idle connection is 128 bytes of state (a `Slot<()>` in the
    //! reactor's slab, which a unit test keeps small: no peer address, it is asked of the socket;
    //! times as milliseconds; the limits shared with the endpoint's other connections; the kept
    //! bytes of a partial frame, the write queue, the compression state and a fragmented or
    //! compressed message's buffer and inflater each behind one pointer, boxed only while in use
    //! (an emptied write queue's box is pooled, so a busy connection does not allocate it for
    //! every message); topics kept beside the slab for the connections that subscribe) plus a
    //! 12-byte timer entry. A
    //! large send with nothing queued before it is written straight from the sender's bytes (`writev`
    //! of header and payload); only what the kernel does not take is copied.
    //!
    //! ## Metrics
    //!
    //! `Server::metrics`, `Handle::metrics` (from another thread: the reactor answers on its next
    //! turn) and `ClusterHandle::metrics` (summed over the reactors) give a `Metrics` snapshot:
    //! connections open, accepted and refused (limit, origin, bad handshake), handshake failures
    //! by HTTP status, messages and bytes in and out, closes by why and code, bytes buffered,
    //! connections shed and TLS handshakes failed. `Metrics::to_prometheus` writes them in
    //! Prometheus' text format, which `wsloop echo --metrics ADDR` and `wsloop chat --metrics
    //! ADDR` serve at `http://ADDR/metrics`. The counters are plain integers on the reactor's
    //! thread: under 1% of an echo's instructions.
    //!
    //! ## Hardening
    //!
    //! `tests/hostile.rs` runs each attack over real sockets with a healthy client echoing alongside
    //! (it stayed correct in all of them, slowest echo 18 ms): slowloris (1,000 connections dribbling a
    //! request, dropped at `handshake_timeout`), clients that never read (closed with 1008 when their
    //! queue would pass `max_write_buffer`, then no longer read), oversized headers (431), frames
    //! announced but not sent (1009 from the header), a 64-bit length with the top bit set (1002),
    //! endless continuations (1009), floods of empty continuation frames (1008 at `max_fragments`),
    //! a ping flood, a deflate bomb (1009), 10,000 connect/close cycles, and more connections than
    //! `max_connections` (503 while the others keep working); each checks the process RSS before and
    //! after. `tests/soak.rs` runs thousands of connections of random valid and invalid traffic and
    //! checks every valid message was echoed and RSS came back (2,000 connections for 60 s: 319,667
    //! messages, RSS 8.0 → 175 → 12.9 MiB). Fuzz targets (`fuzz/`, cargo-fuzz with AddressSanitizer):
    //! the handshake parser, the frame decoder with message assembly (with and without deflate), a
    //! round trip of valid fragmented and compressed traffic, and a whole server fed arbitrary bytes;
    //! inputs that found bugs are replayed by `tests/fuzz_regressions.rs`.
}

pub mod _10_performance {
    //! # Performance
    //!
    //! Measured 2026-11-22 on this project's machine (2-vCPU AMD EPYC KVM guest, kernel 6.18, rustc
    //! 1.95, release build), server pinned to core 0 and the load generator to core 1, with
    //! `bash benches/e2e.sh --targets 3` (medians of 3 rounds, tree `696bc2a`; the server's CPU time
    //! per message, read from `/proc/PID/stat`, is the steadier figure, and where the load generator is
    //! at 90%+ CPU it, not the server, sets msgs/s). Ratios are to tokio-tungstenite on a
    //! current-thread runtime in the same run; the full tables, the matrix, the micro-benchmarks and
    //! the profiles are in `benches/BENCHMARKS.md` in the repository.
    //!
    //! | row | msgs/s ratio | CPU/msg ratio | target |
    //! |---|---|---|---|
    //! | 100 conns, in-flight 1, 16 B | text 2.42x (124,094 vs 51,186), binary 2.77x | text 2.47x less (7.7 vs 18.9 µs), binary 2.82x | 2.2x: met |
    //! | 100 conns, in-flight 16, 16 B | binary 2.31x (1,845,333 vs 798,917), text 1.97x | binary 2.40x less, text 2.00x | 2.0x: met (binary) |
    //! | 10 conns, 16 KiB | binary 1.33x, text 1.41x | binary 1.36x less (10.7 vs 14.6 µs), text 1.43x | 1.7x: missed; wsloop costs what the raw TCP echo costs (10.4 µs) |
    //! | 10 conns, 1 MiB | binary 1.09x, text 1.11x (load generator at 96% CPU) | binary 1.25x less (627 vs 782 µs), text 1.14x | 1.9x: missed, see below |
    //! | raw TCP echo ceiling, 16 B, 100 conns | 0.97-1.15 of raw TCP | 96-104% of raw's efficiency | 85%: met |
    //!
    //! - Unmasking: 35-52 GB/s; a frame header decodes in about 5 ns (criterion, loaded machine;
    //!   4.7 ns quiet). p99 at 100 connections, in-flight 1: 2.05 ms text / 2.13 ms binary
    //!   (fastwebsockets 1.56 / 1.56 ms, raw TCP echo 1.72 / 1.16 ms, tokio-tungstenite 4.10 /
    //!   3.77 ms): missed by about 0.5 ms. Answering a connection right after reading it (not after
    //!   every other ready connection) brought it from 2.3-5.0 ms to 1.7-2.2 ms in an A/B run.
    //! - Memory per idle connection (no deflate, connections held open by the load generator
    //!   against the echo server; today `wsloop bench --mode connect`):
    //!   **155 B** at 10,000 connections (202-206 B before the read and write buffers and the
    //!   compression state were boxed; uWebSockets 256 B in the same run);
    //!   tokio-tungstenite 135 KB, fastwebsockets 6.8 KB. 19,800 idle connections held with the echo
    //!   still answering; 50,000 could not be tried (the machine's hard fd limit is 20,000).
    //! - 1 MiB messages: large read and write buffers are now reused (`buffer_pool_size`, 4 MiB by
    //!   default), which took the server from 1,319 to 455-476 µs per message in an A/B run on a quiet
    //!   machine (tokio-tungstenite 736). The rest is the kernel's copies (send 40%, receive 23% of
    //!   the server's profile). The msgs/s ratio cannot show more on this machine: the load generator,
    //!   which masks, verifies and copies every byte, is at 96% of its core against every server.
    //!
    //! Reproduce: `bash benches/e2e.sh` (the full matrix, about 15 minutes; `--quick` for a short one),
    //! `cargo bench --bench micro`, `bash benches/scaling.sh`, and the load generator itself:
    //! `cargo run --release --features cli -- bench ws://127.0.0.1:9001/ --conns 100 --inflight 1
    //! --size 16 --seconds 10 [--binary] [--deflate] [--rate N] [--json]`, which verifies every echo
    //! byte for byte and ends with one `key=value` line (msgs_per_s, mbytes_per_s, p50_us, p99_us,
    //! p999_us, lost, errors); the figures above were taken with its predecessor, a load example
    //! since folded into `wsloop bench`. Its modes and output: `benches/BENCHMARKS.md`, "The load
    //! generator".
}
