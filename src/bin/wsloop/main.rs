//! `wsloop`: an echo server, a load generator for WebSocket servers, and a chat server.
//!
//! ```text
//! cargo run --release --features cli -- echo            # echo server on ws://127.0.0.1:9001/
//! cargo run --release --features cli -- bench ws://127.0.0.1:9001/ --conns 100
//! cargo run --release --features cli -- chat             # chat on http://127.0.0.1:8080/
//! cargo install --path . --features cli                  # then: wsloop --help
//! ```
#![forbid(unsafe_code)]

mod bench;
mod chat;
mod echo;
mod sys;
mod units;

use clap::{Parser, Subcommand};

/// WebSocket echo server, load generator and chat server (wsloop).
#[derive(Debug, Parser)]
#[command(name = "wsloop", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs an echo server: every message comes back as it went out (or, with --broadcast, goes
    /// to every other client).
    Echo(echo::EchoArgs),
    /// Load-tests a WebSocket server: echo throughput and latency, handshakes, or fan-out.
    Bench(Box<bench::BenchArgs>),
    /// Runs the chat server with its own page (`wsloop chat --help` for its options).
    Chat(chat::ChatArgs),
}

fn main() {
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Echo(_) | Command::Chat(_) => "info",
        Command::Bench(_) => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let code = match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Bench(args) => bench::run(*args),
        Command::Chat(args) => chat::run(args),
    };
    std::process::exit(code);
}
