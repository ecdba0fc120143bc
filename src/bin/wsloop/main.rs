//! `wsloop`: an echo server, a load generator for WebSocket servers, a chat server and an
//! interactive client.
//!
//! ```text
//! cargo run --release --features cli -- echo            # echo server on ws://127.0.0.1:9001/
//! cargo run --release --features cli -- bench ws://127.0.0.1:9001/ --conns 100
//! cargo run --release --features cli -- chat             # chat on http://127.0.0.1:8080/
//! cargo run --release --features cli -- client ws://127.0.0.1:9001/   # stdin lines out
//! cargo install --path . --features cli                  # then: wsloop --help
//! ```
#![forbid(unsafe_code)]

mod bench;
mod chat;
mod client;
mod echo;
mod metrics;
mod sys;
mod units;

use clap::{Parser, Subcommand};

/// WebSocket echo server, load generator, chat server and client (wsloop).
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
    /// Talks to a WebSocket server: each line of stdin is a message, every message received
    /// is printed (like websocat or wscat).
    Client(client::ClientArgs),
}

fn main() {
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Echo(_) | Command::Chat(_) => "info",
        Command::Bench(_) | Command::Client(_) => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let code = match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Bench(args) => bench::run(*args),
        Command::Chat(args) => chat::run(args),
        Command::Client(args) => client::run(args),
    };
    std::process::exit(code);
}
