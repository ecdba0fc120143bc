//! `redis-server` as a child process on a free port of 127.0.0.1, for the tests of the Redis
//! backplane (`tests/redis.rs`, `tests/chat_redis.rs`).
//!
//! The binary is `WSLOOP_REDIS_SERVER` (set by `tests/run.sh`) or `redis-server` on the `PATH`;
//! a missing one fails the test (install it with `apt-get install redis-server`), never skips.
//! It runs with `--save '' --appendonly no` in a directory of its own, and is killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process; killed on drop.
pub struct Redis {
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// Starts `redis-server` on a free port of 127.0.0.1, with `extra` arguments.
    pub fn start(extra: &[&str]) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("wsloop-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--save", "", "--appendonly", "no", "--daemonize", "no"].map(String::from));
        args.extend(["--dir".to_owned(), dir.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut redis = Redis {
            port,
            args,
            dir,
            child: None,
        };
        redis.spawn();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as the relay's logs name it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port, with its arguments, and waits until it answers PING.
    pub fn spawn(&mut self) {
        let binary = std::env::var("WSLOOP_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {binary:?} ({e}): these tests need a real Redis server; install \
                     it (Debian: apt-get install redis-server) or set WSLOOP_REDIS_SERVER"
                )
            });
        self.child = Some(child);
        // Ready when it answers PING.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = raw_command(self.port, &[b"PING"]) {
                if reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server (SIGSTOP), as a stalled Redis: its connections stay open, silent.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Wakes a frozen server up (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill {signal} {pid}: {sent:?}"
        );
    }

    /// Kills the server (`spawn` starts it again on the same port).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one command on a fresh connection and returns the first bytes of the reply.
pub fn raw_command(port: u16, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        cmd.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        cmd.extend_from_slice(arg);
        cmd.extend_from_slice(b"\r\n");
    }
    stream.write_all(&cmd)?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}
