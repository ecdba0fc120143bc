//! Interop with independent clients: Python `websockets` and Node `ws` run their echo checks
//! (text, binary, 1 MiB messages, fragments, ping, pipelining, clean close) against wsloop.
//!
//! `tests/run.sh` prepares the clients and sets `WSLOOP_PYTHON`, `WSLOOP_NODE` and
//! `WSLOOP_NODE_CLIENT_DIR`; without them these tests fail, they never skip.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use wsloop::proto::deflate::DeflateConfig;
use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};

struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        ctx.send(id, msg).expect("echo fits the queue");
    }
}

fn start_echo(config: Config) -> String {
    let mut server = Server::bind("127.0.0.1:0", config, Echo).expect("bind");
    let url = format!("ws://{}/", server.local_addr());
    std::thread::spawn(move || server.run());
    url
}

fn env_path(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with tests/run.sh"))
}

/// Runs an interop client to completion and fails with its output unless it passed.
fn run_client(mut cmd: Command, name: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("9 passed"),
        "{name} ran fewer checks:\n{stdout}"
    );
}

fn python(url: &str, extra: &[&str]) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python_client.py");
    let mut cmd = Command::new(env_path("WSLOOP_PYTHON"));
    cmd.arg(script).arg(url).args(extra);
    cmd
}

fn node(url: &str, extra: &[&str]) -> Command {
    let script = Path::new(&env_path("WSLOOP_NODE_CLIENT_DIR")).join("client.js");
    let mut cmd = Command::new(std::env::var("WSLOOP_NODE").unwrap_or_else(|_| "node".into()));
    cmd.arg(script).arg(url).args(extra);
    cmd
}

fn deflate() -> Config {
    Config::default().deflate(Some(DeflateConfig::default()))
}

/// The RFC's defaults: context takeover both ways, each connection its own compressor.
fn deflate_with_takeover() -> Config {
    Config::default().deflate(Some(DeflateConfig {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        ..DeflateConfig::default()
    }))
}

#[test]
fn python_websockets_client_echoes() {
    let url = start_echo(Config::default());
    run_client(python(&url, &[]), "python websockets");
}

#[test]
fn node_ws_client_echoes() {
    let url = start_echo(Config::default());
    run_client(node(&url, &[]), "node ws");
}

#[test]
fn python_websockets_client_echoes_compressed() {
    for config in [deflate(), deflate_with_takeover()] {
        let url = start_echo(config);
        run_client(python(&url, &["--deflate"]), "python websockets, deflate");
    }
}

#[test]
fn node_ws_client_echoes_compressed() {
    for config in [deflate(), deflate_with_takeover()] {
        let url = start_echo(config);
        run_client(node(&url, &["--deflate"]), "node ws, deflate");
    }
}
