//! Interop with independent clients: Python `websockets` and Node `ws` run their echo checks
//! (text, binary, 1 MiB messages, fragments, ping, pipelining, clean close) against wsloop.
//!
//! `tests/run.sh` prepares the clients and sets `WSLOOP_PYTHON`, `WSLOOP_NODE` and
//! `WSLOOP_NODE_CLIENT_DIR`; without them these tests fail, they never skip (a plain `cargo test`
//! ignores them).

mod common;

use std::path::Path;
use std::process::Command;

use common::handlers::Echo;
use wsloop::proto::deflate::DeflateConfig;
use wsloop::{Config, Server};

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
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_websockets_client_echoes() {
    let url = start_echo(Config::default());
    run_client(python(&url, &[]), "python websockets");
}

#[test]
#[ignore = "needs Node ws (bash tests/run.sh)"]
fn node_ws_client_echoes() {
    let url = start_echo(Config::default());
    run_client(node(&url, &[]), "node ws");
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_websockets_client_echoes_compressed() {
    for config in [deflate(), deflate_with_takeover()] {
        let url = start_echo(config);
        run_client(python(&url, &["--deflate"]), "python websockets, deflate");
    }
}

#[test]
#[ignore = "needs Node ws (bash tests/run.sh)"]
fn node_ws_client_echoes_compressed() {
    for config in [deflate(), deflate_with_takeover()] {
        let url = start_echo(config);
        run_client(node(&url, &["--deflate"]), "node ws, deflate");
    }
}

/// Explicit permessage-deflate offers (`--deflate=PARAMS`, see the clients' usage): the
/// 512-byte-window, no-takeover offer of the issue, Chromium's offer, a bare offer, smaller server
/// windows, and server_no_context_takeover alone. With PARAMS the clients check the answer and
/// add a size sweep (text and binary, 1 B to 1 MiB): 10 checks.
const DEFLATE_OFFERS: &[&str] = &[
    "--deflate=client_max_window_bits=9,no_context_takeover",
    "--deflate=client_max_window_bits",
    "--deflate=",
    "--deflate=server_max_window_bits=10,client_max_window_bits=12",
    "--deflate=server_max_window_bits=9,client_no_context_takeover",
    "--deflate=server_no_context_takeover",
];

/// Like `run_client`, for a client that runs `checks` checks.
fn run_client_checks(mut cmd: Command, name: &str, checks: usize) {
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
    // Shown with --nocapture: the negotiated extension of each run.
    println!("{name}:\n{stdout}");
    let summary = format!("interop: {checks} passed");
    assert!(
        stdout.lines().any(|line| line.ends_with(&summary)),
        "{name} ran other than {checks} checks:\n{stdout}"
    );
}

/// Smaller windows than the defaults on the server's side, no context takeover.
fn deflate_small_windows() -> Config {
    Config::default().deflate(Some(DeflateConfig {
        server_max_window_bits: 10,
        client_max_window_bits: 11,
        ..DeflateConfig::default()
    }))
}

/// Runs every offer of [`DEFLATE_OFFERS`] with `client` against a server on `config`.
fn explicit_offers(config: fn() -> Config, client: fn(&str, &[&str]) -> Command, name: &str) {
    for offer in DEFLATE_OFFERS {
        let url = start_echo(config());
        run_client_checks(client(&url, &[offer]), &format!("{name} {offer}"), 10);
    }
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_websockets_explicit_deflate_offers_default_server() {
    explicit_offers(deflate, python, "python websockets");
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_websockets_explicit_deflate_offers_takeover_server() {
    explicit_offers(deflate_with_takeover, python, "python websockets");
}

#[test]
#[ignore = "needs Python websockets (bash tests/run.sh)"]
fn python_websockets_explicit_deflate_offers_small_window_server() {
    explicit_offers(deflate_small_windows, python, "python websockets");
}

#[test]
#[ignore = "needs Node ws (bash tests/run.sh)"]
fn node_ws_explicit_deflate_offers_default_server() {
    explicit_offers(deflate, node, "node ws");
}

#[test]
#[ignore = "needs Node ws (bash tests/run.sh)"]
fn node_ws_explicit_deflate_offers_takeover_server() {
    explicit_offers(deflate_with_takeover, node, "node ws");
}

#[test]
#[ignore = "needs Node ws (bash tests/run.sh)"]
fn node_ws_explicit_deflate_offers_small_window_server() {
    explicit_offers(deflate_small_windows, node, "node ws");
}
