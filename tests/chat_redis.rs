//! The chat server as two processes on one Redis (`wsloop chat --redis URL`): rooms, the online
//! list and private messages span both; a Redis restart and a killed process are survived.
//!
//! Each test starts its own `redis-server` on a free port (`tests/common/redis_server.rs`) and
//! two `wsloop chat` processes on 127.0.0.1:0 with `--redis` and a heartbeat of 0.5 s
//! (so a silent process is forgotten after 1.5 s). The command is built with the `cli` and
//! `redis` features by the test itself, through the cargo running the tests (see [`chat_binary`]).
//! Every child is killed on drop; a failing test prints the chat processes' logs.
//!
//! No test waits on a guess: a process knows a user of the other once a client of its own has
//! heard of that user, because a process publishes the presence event of a change before the
//! notice of it, on the same Redis connection, and the other process applies the first before
//! it delivers the second.
#![cfg(feature = "redis")]

#[allow(dead_code)] // the tests use part of the chat's API
#[path = "../src/bin/wsloop/chat/server.rs"]
mod chat;
mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::chat_peer::{sentinel, Peer, TIMEOUT};
use common::node;
use common::redis_server::Redis;
use serde_json::{json, Value};
use wsloop::CloseCode;

/// The chat processes' `--heartbeat`, in seconds: a silent process is forgotten after 1.5 s.
const HEARTBEAT: &str = "0.5";
/// The longest a presence change may take to show: a few heartbeats, and after a Redis
/// restart the relay's reconnection backoff (up to 2 s) on top.
const PRESENCE_LIMIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The chat server as a child process
// ---------------------------------------------------------------------------------------------

/// The `wsloop` binary, built with the `cli` and `redis` features.
///
/// `cargo test --features redis` does not build it (it needs `cli`), so the test builds it
/// itself, once per run: `cargo build --bin wsloop --features cli,redis` through the cargo that runs the tests (`CARGO`), which takes a moment
/// when it is up to date. Cargo releases its build directory lock before it runs test binaries,
/// so this does not wait on the outer cargo; it is bounded anyway. Without `CARGO` (the test
/// binary run by hand) it takes the binary next to this one, `target/<profile>/wsloop`.
fn chat_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_chat).clone()
}

fn build_chat() -> PathBuf {
    let how = "build it with `cargo build --bin wsloop --features cli,redis`";
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<this test>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let beside = profile_dir.join(format!("wsloop{}", std::env::consts::EXE_SUFFIX));
    let Ok(cargo) = std::env::var("CARGO") else {
        assert!(beside.is_file(), "{} is missing: {how}", beside.display());
        return beside;
    };
    let mut command = Command::new(cargo);
    command
        .args(["build", "--bin", "wsloop", "--features", "cli,redis"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // What cargo sets for a test process is not the environment of a build: build scripts that
    // watch these (ring's watches CARGO_MANIFEST_DIR) would rebuild, then again for the next
    // `cargo test`.
    let test_only = |name: &str| {
        [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&name)
    };
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(test_only) {
            command.env_remove(name);
        }
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    let mut child = command.spawn().expect("run cargo build");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let limit = Duration::from_secs(600);
    let status = node::wait_or_kill(&mut child, Instant::now() + limit);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.success(),
        "cargo build --bin wsloop --features cli,redis failed ({status}; killed after {limit:?} if \
         it took that long):\n{stderr}"
    );
    let built = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "wsloop")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or(beside);
    assert!(built.is_file(), "{} is missing: {how}", built.display());
    built
}

/// A chat process (`chat --addr 127.0.0.1:0 --redis URL --heartbeat SECS`), killed on drop.
/// Its stderr (the log) goes to a file under the target directory, printed if the test fails.
struct ChatProcess {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl ChatProcess {
    /// Starts one on `redis` with a heartbeat of [`HEARTBEAT`] and waits (bounded) for its
    /// `chat: listening on` line.
    fn start(name: &'static str, redis: &Redis) -> ChatProcess {
        ChatProcess::start_with(name, redis, HEARTBEAT)
    }

    /// The same with a heartbeat of `heartbeat` seconds.
    fn start_with(name: &'static str, redis: &Redis, heartbeat: &str) -> ChatProcess {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chat-redis-{}-{n}-{name}.log", std::process::id()));
        let stderr = File::create(&log).expect("create the log file");
        let binary = chat_binary();
        let url = redis.url();
        let args = [
            "chat",
            "--addr",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--heartbeat",
            heartbeat,
        ];
        let mut child = Command::new(&binary)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let stdout = child.stdout.take().unwrap();
        let mut process = ChatProcess {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(20));
        let addr = first.as_deref().ok().and_then(|line| {
            let addr = line.strip_prefix("chat: listening on http://")?;
            addr.trim_end_matches('/').parse().ok()
        });
        process.addr = addr.unwrap_or_else(|| {
            let status = process.child.try_wait().ok().flatten();
            panic!(
                "chat process {name} did not start (first line {first:?}, exit status \
                 {status:?})"
            )
        });
        process
    }

    /// Asks it to stop (SIGTERM, as Ctrl-C would).
    fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM {pid}: {sent:?}"
        );
    }

    /// Waits for it to exit, up to `limit`.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the chat process") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "chat process {} still running after {limit:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it without warning, as a crash would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChatProcess {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- log of chat process {} ----\n{log}", self.name);
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `from`, whose process knows `to`, writes to `to`. `to`'s process delivers it after the
/// presence events and notices that `from`'s process published before it: once `to` has it,
/// `to`'s process knows `from`, and nothing older is on its way. Before it `to` may get the
/// notices of `from` coming online (on their way when `to` joined, or not), nothing else.
fn catch_up(from: &mut Peer, to: &mut Peer) {
    let text = format!("hi {}", to.name);
    from.send(json!({"type": "private", "to": to.name, "text": text}));
    assert_eq!(from.expect("private")["text"], text.as_str());
    let got = to.wait_until("a private message", Duration::from_secs(5), |m| {
        let kind = m["type"].as_str().unwrap_or("");
        let early = ["user_online", "member_joined"].contains(&kind) && m["nick"] == from.name;
        assert!(early || kind == "private", "unexpected {m}");
        kind == "private"
    });
    assert_eq!(
        (&got["from"], &got["text"]),
        (&json!(from.name), &json!(text))
    );
}

/// Waits until `peer` has had a `kind` notice (`user_online`, `user_offline`) for each of
/// `nicks`, skipping everything else.
fn wait_for_notices(peer: &mut Peer, kind: &str, nicks: &[&str]) {
    let mut missing: BTreeSet<&str> = nicks.iter().copied().collect();
    let what = format!("{kind} of {nicks:?}");
    while !missing.is_empty() {
        let msg = peer.wait_until(&what, PRESENCE_LIMIT, |m| m["type"] == kind);
        missing.remove(msg["nick"].as_str().unwrap_or(""));
    }
}

/// Waits until `peer` gets a message of `kind` with `text`, skipping other messages but
/// failing on a `user_offline` of `never_offline`.
fn wait_for_text(peer: &mut Peer, kind: &str, text: &str, never_offline: &str) -> Value {
    let what = format!("{kind} {text:?}");
    peer.wait_until(&what, PRESENCE_LIMIT, |m| {
        assert!(
            !(m["type"] == "user_offline" && m["nick"] == never_offline),
            "{never_offline} went offline: {m}"
        );
        m["type"] == kind && m["text"] == text
    })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn two_processes_share_rooms_presence_and_private_messages_across_a_redis_restart() {
    let mut redis = Redis::start(&[]);
    let a = ChatProcess::start("a", &redis);
    let b = ChatProcess::start("b", &redis);

    // carol on B, then alice on A. carol hears of alice, so B knows alice.
    let (mut carol, welcome, _) = Peer::join_lobby(b.addr, "carol");
    assert_eq!(welcome["users"], json!(["carol"]));
    let (mut alice, _, _) = Peer::join_lobby(a.addr, "alice");
    assert_eq!(carol.expect("user_online")["nick"], "alice");
    assert_eq!(
        carol.expect("member_joined"),
        json!({"type": "member_joined", "room": "lobby", "nick": "alice"})
    );
    catch_up(&mut carol, &mut alice);

    // bob on B: B's lists have alice of A.
    let (mut bob, welcome, lobby) = Peer::join_lobby(b.addr, "bob");
    assert_eq!(welcome["users"], json!(["alice", "bob", "carol"]));
    assert_eq!(lobby["members"], json!(["alice", "bob", "carol"]));
    for peer in [&mut alice, &mut carol] {
        assert_eq!(peer.expect("user_online")["nick"], "bob", "{}", peer.name);
        assert_eq!(peer.expect("member_joined")["nick"], "bob", "{}", peer.name);
    }
    // dave on A: A's lists have bob and carol of B.
    let (mut dave, welcome, lobby) = Peer::join_lobby(a.addr, "dave");
    let everyone = json!(["alice", "bob", "carol", "dave"]);
    assert_eq!(welcome["users"], everyone);
    assert_eq!(lobby["members"], everyone);
    for peer in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(peer.expect("user_online")["nick"], "dave", "{}", peer.name);
        assert_eq!(
            peer.expect("member_joined")["nick"],
            "dave",
            "{}",
            peer.name
        );
    }

    // Room messages both ways reach every member once, on both processes.
    alice.send(json!({"type": "say", "room": "lobby", "text": "hello from A"}));
    bob.send(json!({"type": "say", "room": "lobby", "text": "hello from B"}));
    for peer in [&mut alice, &mut bob, &mut carol, &mut dave] {
        let mut texts: Vec<String> = (0..2)
            .map(|_| peer.expect("message")["text"].as_str().unwrap().to_owned())
            .collect();
        texts.sort();
        assert_eq!(texts, ["hello from A", "hello from B"], "{}", peer.name);
    }
    // Private messages both ways, to any case of the nickname, with the sender's copy.
    alice.send(json!({"type": "private", "to": "BOB", "text": "psst"}));
    let got = bob.expect("private");
    assert_eq!((&got["from"], &got["to"]), (&json!("alice"), &json!("bob")));
    assert_eq!(alice.expect("private"), got);
    bob.send(json!({"type": "private", "to": "Alice", "text": "psst back"}));
    let got = alice.expect("private");
    assert_eq!(
        (&got["from"], &got["text"]),
        (&json!("bob"), &json!("psst back"))
    );
    assert_eq!(bob.expect("private"), got);
    // A room opened on B: once carol's sentinel reached alice, A knows carol is in it.
    carol.send(json!({"type": "join_room", "room": "rust"}));
    assert_eq!(carol.expect("room_joined")["members"], json!(["carol"]));
    sentinel(&mut carol, &mut alice, "rust is open");
    alice.send(json!({"type": "join_room", "room": "rust"}));
    assert_eq!(
        alice.expect("room_joined")["members"],
        json!(["alice", "carol"])
    );
    assert_eq!(
        carol.expect("member_joined"),
        json!({"type": "member_joined", "room": "rust", "nick": "alice"})
    );
    // dave leaves A: B's users are told.
    dave.quit();
    for peer in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(peer.expect("member_left")["nick"], "dave", "{}", peer.name);
        assert_eq!(peer.expect("user_offline")["nick"], "dave", "{}", peer.name);
    }

    // Redis goes down: each process stops hearing from the other, and after three heartbeats
    // takes its users as gone.
    redis.kill();
    wait_for_notices(&mut alice, "user_offline", &["bob", "carol"]);
    wait_for_notices(&mut bob, "user_offline", &["alice"]);
    wait_for_notices(&mut carol, "user_offline", &["alice"]);
    alice.send(json!({"type": "private", "to": "bob", "text": "are you there?"}));
    alice.expect_error("unknown_user");
    // Meanwhile the same nickname is claimed on both (neither can know): A's claim is earlier.
    let (mut erin_a, _, _) = Peer::join_lobby(a.addr, "erin");
    thread::sleep(Duration::from_millis(20));
    let (mut erin_b, _, _) = Peer::join_lobby(b.addr, "Erin");

    // Redis is back on the same port: the processes reconnect, say hello, exchange rosters,
    // and each one's users are back online on the other.
    redis.spawn();
    wait_for_notices(&mut alice, "user_online", &["bob", "carol"]);
    wait_for_notices(&mut bob, "user_online", &["alice"]);
    wait_for_notices(&mut carol, "user_online", &["alice"]);
    // B has seen A's roster: its later claim of erin lost, its connection is closed with 4409.
    let (code, reason, _) = erin_b.until_close();
    assert_eq!(code, Some(4409), "{reason}");
    assert!(
        reason.contains("Erin") && reason.contains("taken"),
        "{reason}"
    );
    erin_b
        .client
        .close(CloseCode(4409), "")
        .expect("answer the close");
    // B closes TCP after `on_close`, which released B's erin.
    match erin_b.client.recv() {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) => {}
        other => panic!("erin on B: expected the end of the stream, got {other:?}"),
    }

    // Messages flow both ways again; nobody saw erin go offline (A's erin is still there).
    alice.send(json!({"type": "say", "room": "lobby", "text": "after the restart"}));
    wait_for_text(&mut bob, "message", "after the restart", "erin");
    bob.send(json!({"type": "say", "room": "lobby", "text": "welcome back"}));
    wait_for_text(&mut alice, "message", "welcome back", "erin");
    carol.send(json!({"type": "say", "room": "rust", "text": "rust too"}));
    wait_for_text(&mut alice, "message", "rust too", "erin");
    alice.send(json!({"type": "private", "to": "bob", "text": "private again"}));
    wait_for_text(&mut bob, "private", "private again", "erin");
    bob.send(json!({"type": "private", "to": "erin", "text": "which erin?"}));
    let got = wait_for_text(&mut erin_a, "private", "which erin?", "erin");
    assert_eq!(got["from"], "bob");
    // A newcomer on B sees everyone: A's erin, not B's.
    let (_frank, welcome, _) = Peer::join_lobby(b.addr, "frank");
    assert_eq!(
        welcome["users"],
        json!(["alice", "bob", "carol", "erin", "frank"])
    );
    wait_for_text(&mut carol, "message", "after the restart", "erin");
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn a_killed_process_users_go_offline_on_the_other() {
    let redis = Redis::start(&[]);
    let a = ChatProcess::start("a", &redis);
    let mut b = ChatProcess::start("b", &redis);
    let (mut alice, _, _) = Peer::join_lobby(a.addr, "alice");
    let (_bob, _, _) = Peer::join_lobby(b.addr, "bob");
    assert_eq!(alice.expect("user_online")["nick"], "bob");
    assert_eq!(alice.expect("member_joined")["nick"], "bob");

    // B dies without a word: A takes bob as gone once B missed three heartbeats (1.5 s).
    let killed = Instant::now();
    b.kill();
    let left = alice.wait_until("bob leaving", PRESENCE_LIMIT, |_| true);
    assert_eq!(
        left,
        json!({"type": "member_left", "room": "lobby", "nick": "bob"})
    );
    assert_eq!(alice.expect("user_offline")["nick"], "bob");
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "bob went offline {took:?} after B was killed (expected about 1.5 s)"
    );
    alice.send(json!({"type": "private", "to": "bob", "text": "hello?"}));
    alice.expect_error("unknown_user");
    // The nickname is free on A.
    let (_bob, welcome, _) = Peer::join_lobby(a.addr, "bob");
    assert_eq!(welcome["users"], json!(["alice", "bob"]));
    assert_eq!(alice.expect("user_online")["nick"], "bob");
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn a_stopped_process_says_goodbye() {
    // A heartbeat of 60 s: a process would be forgotten after 3 minutes, so what comes within
    // seconds comes from the stopping process itself.
    let redis = Redis::start(&[]);
    let a = ChatProcess::start_with("a", &redis, "60");
    let mut b = ChatProcess::start_with("b", &redis, "60");
    let (mut alice, _, _) = Peer::join_lobby(a.addr, "alice");
    let (mut bob, _, _) = Peer::join_lobby(b.addr, "bob");
    assert_eq!(alice.expect("user_online")["nick"], "bob");
    assert_eq!(alice.expect("member_joined")["nick"], "bob");
    catch_up(&mut alice, &mut bob);
    bob.send(json!({"type": "join_room", "room": "rust"}));
    bob.expect("room_joined");
    // A client that will not answer B's close: B waits for it up to its close_timeout (2 s),
    // then ends it, and exits right after.
    let (_ghost, _, _) = Peer::join_lobby(b.addr, "ghost");
    assert_eq!(alice.expect("user_online")["nick"], "ghost");
    assert_eq!(alice.expect("member_joined")["nick"], "ghost");

    // SIGTERM: B closes its connections with 1001; bob answers, and A hears of it at once.
    b.terminate();
    let (code, _, _) = bob.until_close();
    assert_eq!(code, Some(1001));
    bob.client
        .close(CloseCode::GOING_AWAY, "")
        .expect("answer the close");
    drop(bob); // the server waits for the client to close TCP
               // (bob's leaving rust goes to rust's members, alice is not one.)
    assert_eq!(
        alice.expect("member_left"),
        json!({"type": "member_left", "room": "lobby", "nick": "bob"})
    );
    assert_eq!(alice.expect("user_offline")["nick"], "bob");
    // ghost's end is the last thing B does: B sends it to Redis before it exits.
    let status = b.wait(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let left = alice.wait_until("ghost leaving", PRESENCE_LIMIT, |_| true);
    assert_eq!(
        left,
        json!({"type": "member_left", "room": "lobby", "nick": "ghost"})
    );
    assert_eq!(alice.expect("user_offline")["nick"], "ghost");
    alice.send(json!({"type": "private", "to": "ghost", "text": "boo?"}));
    alice.expect_error("unknown_user");
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn a_redis_restart_mid_conversation_loses_no_message_and_is_logged_once() {
    talk_through_an_outage(Redis::kill, Redis::spawn, 10);
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn a_frozen_redis_mid_conversation_loses_no_message() {
    talk_through_an_outage(|redis| redis.pause(), |redis| redis.resume(), 8);
}

/// alice (on process A) talks to bob (on B) in the lobby, 4 messages a second (the rate
/// limit's pace), while `outage` takes Redis away for `secs` seconds and `back` brings it back:
/// bob gets every message, in order, once, and A's log tells of the history's outage in a line
/// or two, not one per message.
fn talk_through_an_outage(outage: fn(&mut Redis), back: fn(&mut Redis), secs: usize) {
    let mut redis = Redis::start(&[]);
    let a = ChatProcess::start("a", &redis);
    let b = ChatProcess::start("b", &redis);
    let (mut bob, _, _) = Peer::join_lobby(b.addr, "bob");
    let (mut alice, _, _) = Peer::join_lobby(a.addr, "alice");
    assert_eq!(bob.expect("user_online")["nick"], "alice");
    assert_eq!(bob.expect("member_joined")["nick"], "alice");
    catch_up(&mut bob, &mut alice);

    let say = |alice: &mut Peer, i: usize| {
        let text = format!("m{i}");
        alice.send(json!({"type": "say", "room": "lobby", "text": text}));
        alice.wait_until("her own message", Duration::from_secs(5), |m| {
            m["type"] == "message" && m["text"] == text.as_str()
        });
        thread::sleep(Duration::from_millis(250));
    };
    say(&mut alice, 0);
    outage(&mut redis);
    let during = 1 + 4 * secs;
    for i in 1..during {
        say(&mut alice, i);
    }
    back(&mut redis);
    let all = during + 8;
    for i in during..all {
        say(&mut alice, i);
    }
    for i in 0..all {
        let got = bob.wait_until("a message", PRESENCE_LIMIT, |m| m["type"] == "message");
        assert_eq!(got["text"], format!("m{i}"), "{got}");
    }
    bob.client
        .stream()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(wsloop::client::Received::Text(more)) = bob.client.recv() {
        assert!(
            !more.contains("\"type\":\"message\""),
            "a duplicate: {more}"
        );
    }
    let log = std::fs::read_to_string(&a.log).unwrap();
    let history_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("history: redis"))
        .collect();
    assert!((1..=3).contains(&history_lines.len()), "{history_lines:#?}");
}

/// The chat in this process, on a relay that holds publishes for 0.5 s (30 s by default), so
/// that a message past the bound is soon undelivered.
struct ShortOutboxChat {
    addr: SocketAddr,
    relay: wsloop::RedisRelay,
    stop: wsloop::ClusterHandle,
    thread: thread::JoinHandle<Result<(), wsloop::Error>>,
}

impl ShortOutboxChat {
    fn start(redis: &Redis) -> ShortOutboxChat {
        use chat::{directory, Chat, Directory};
        use std::sync::Arc;

        let directory = Directory::shared();
        let shared = Arc::new(chat::Shared::default());
        let mut cluster = wsloop::Cluster::bind("127.0.0.1:0", 1, chat::config(&[]), |reactor| {
            Chat::new(directory.clone(), shared.clone(), true, reactor)
        })
        .unwrap();
        let options = wsloop::RedisOptions::default().outbox_time(Duration::from_millis(500));
        let heartbeat = Duration::from_millis(500);
        let (relay, _link) = directory::connect_redis_with(
            &redis.url(),
            &cluster.handles(),
            &directory,
            heartbeat,
            options,
        )
        .unwrap();
        cluster.add_relay(relay.clone());
        let addr = cluster.local_addr();
        let stop = cluster.handle();
        let thread = thread::spawn(move || cluster.run());
        ShortOutboxChat {
            addr,
            relay,
            stop,
            thread,
        }
    }

    fn stop(self) {
        self.stop.shutdown().unwrap();
        self.thread.join().unwrap().unwrap();
    }
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn a_sender_is_told_when_a_message_could_not_reach_the_other_processes() {
    let mut redis = Redis::start(&[]);
    let server = ShortOutboxChat::start(&redis);
    let addr = server.addr;

    let (mut alice, _, _) = Peer::join_lobby(addr, "alice");
    let (mut carol, _, _) = Peer::join_lobby(addr, "carol");
    alice.expect("user_online");
    alice.expect("member_joined");
    redis.kill();
    // Said in the room and privately (to a user elsewhere: her process knew her as gone, so
    // this is to carol, here, and then to nobody elsewhere), while Redis stays down.
    alice.send(json!({"type": "say", "room": "lobby", "text": "anyone?", "ref": "m1"}));
    assert_eq!(alice.expect("message")["text"], "anyone?");
    assert_eq!(
        carol.expect("message")["text"],
        "anyone?",
        "local users have it"
    );
    alice.send(json!({"type": "private", "to": "carol", "text": "psst", "ref": "m2"}));
    assert_eq!(alice.expect("private")["text"], "psst");
    // Past the bound: alice is told about the room message (the other processes missed it),
    // not about the private message, which carol here had.
    let told = alice.wait_until("an undelivered notice", TIMEOUT, |m| {
        m["type"] == "undelivered"
    });
    assert_eq!(
        (&told["room"], &told["text"], &told["ref"]),
        (&json!("lobby"), &json!("anyone?"), &json!("m1"))
    );
    assert!(
        told["message"].as_str().unwrap().contains("other servers"),
        "{told}"
    );
    wait_for_relay_drops(&server.relay, 3);
    alice
        .client
        .stream()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(wsloop::client::Received::Text(more)) = alice.client.recv() {
        assert!(!more.contains("undelivered"), "one notice only: {more}");
    }
    drop((alice, carol));
    server.stop();
}

#[test]
#[ignore = "needs redis-server, Chromium and Node (bash tests/run.sh)"]
fn the_page_marks_a_message_that_could_not_reach_the_other_processes() {
    let mut redis = Redis::start(&[]);
    let server = ShortOutboxChat::start(&redis);
    let started = Instant::now();
    let url = format!("http://{}/", server.addr);
    let mut child = node::node_script("chat_browser.js", &[url.as_str(), "--undelivered"]);
    let mut stdin = child.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // The page has joined: Redis goes away, and the page says something.
    let deadline = started + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line == "stop-redis" => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    redis.kill();
    use std::io::Write as _;
    let _ = writeln!(stdin, "stopped");
    let status = node::wait_or_kill(&mut child, started + Duration::from_secs(90));
    let (stdout, stderr) = (reader.join().unwrap(), errors.join().unwrap());
    passed(
        "--undelivered",
        status,
        &stdout,
        &stderr,
        &[
            "ok the sender's page marks a message that could not reach the other servers",
            "chat browser: 1 passed, 0 failed",
        ],
    );
    assert!(server.relay.dropped() >= 1, "the relay dropped the message");
    server.stop();
}

/// Waits (bounded) until `relay` has dropped at least `n` publishes.
fn wait_for_relay_drops(relay: &wsloop::RedisRelay, n: u64) {
    let deadline = Instant::now() + TIMEOUT;
    while relay.dropped() < n {
        assert!(
            Instant::now() < deadline,
            "{} drops, not {n}",
            relay.dropped()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs redis-server (bash tests/run.sh)"]
fn room_history_is_kept_in_redis_for_every_process_and_bounded() {
    let redis = Redis::start(&[]);
    let a = ChatProcess::start("a", &redis);
    let (mut alice, _, _) = Peer::join_lobby(a.addr, "alice");
    assert_eq!(alice.history()["messages"], json!([]));
    for i in 0..3 {
        let text = format!("line {i}");
        alice.send(json!({"type": "say", "room": "lobby", "text": text}));
        assert_eq!(alice.expect("message")["text"], text.as_str());
    }
    // A user of another process, started later, gets them from Redis; so does anyone after a
    // restart of both processes (nothing is kept in a process).
    let b = ChatProcess::start("b", &redis);
    let (mut bob, _, _) = Peer::join_lobby(b.addr, "bob");
    let history = bob.history();
    let texts: Vec<&str> = (history["messages"].as_array().unwrap().iter())
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["line 0", "line 1", "line 2"]);
    assert_eq!(history["messages"][0]["from"], "alice");
    drop((alice, bob, a, b));
    let c = ChatProcess::start("c", &redis);
    let (mut carol, _, _) = Peer::join_lobby(c.addr, "carol");
    assert_eq!(carol.history()["messages"], history["messages"]);

    // Bounded: a list per room, trimmed to the last HISTORY_LEN, with an expiry.
    let port = redis.port;
    let key = b"wsloop-chat:history:lobby";
    let len = common::redis_server::raw_command(port, &[b"LLEN", key]).unwrap();
    assert_eq!(len, b":3\r\n");
    let ttl = common::redis_server::raw_command(port, &[b"TTL", key]).unwrap();
    let ttl: i64 = std::str::from_utf8(&ttl[1..ttl.len() - 2])
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 24 * 3600, "TTL {ttl}");
    for i in 0..110 {
        let text = format!("more {i}");
        let value = json!({"type": "message", "room": "lobby", "from": "x", "text": text, "ts": i});
        let _ =
            common::redis_server::raw_command(port, &[b"RPUSH", key, value.to_string().as_bytes()]);
    }
    // The next message trims the list; a foreign entry that is not a message object is left
    // out of the replay.
    let _ = common::redis_server::raw_command(port, &[b"RPUSH", key, b"not json"]);
    carol.send(json!({"type": "say", "room": "lobby", "text": "trim"}));
    carol.expect("message");
    let (mut dave, _, _) = Peer::join_lobby(c.addr, "dave");
    let history = dave.history();
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 99, "100 kept, one of them not JSON");
    assert_eq!(messages.last().unwrap()["text"], "trim");
    let len = common::redis_server::raw_command(port, &[b"LLEN", key]).unwrap();
    assert_eq!(len, b":100\r\n");
}

#[test]
#[ignore = "needs redis-server, Chromium and Node (bash tests/run.sh)"]
fn the_page_shows_a_room_history_from_redis() {
    let redis = Redis::start(&[]);
    let a = ChatProcess::start("a", &redis);
    let started = Instant::now();
    let url = format!("http://{}/", a.addr);
    let mut child = node::node_script("chat_browser.js", &[url.as_str(), "--history"]);
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let status = node::wait_or_kill(&mut child, started + Duration::from_secs(120));
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    passed(
        "--history",
        status,
        &stdout,
        &stderr,
        &[
            "ok a room's history from Redis shows above \"You joined\", live messages below",
            "ok after a reload the history from Redis is shown again, once",
            "chat browser: 2 passed, 0 failed",
        ],
    );
}

/// Asserts that `chat_browser.js MODE` succeeded and printed every line of `checks`.
fn passed(
    mode: &str,
    status: std::process::ExitStatus,
    stdout: &str,
    stderr: &str,
    checks: &[&str],
) {
    assert!(
        status.success(),
        "chat_browser.js {mode} failed ({status}):\n{stdout}\n{stderr}"
    );
    for check in checks {
        assert!(
            stdout.lines().any(|l| l == *check),
            "missing `{check}`:\n{stdout}"
        );
    }
}
