//! The read budget, turn by turn: however many connections flood the server, one turn reads a
//! bounded amount in all (so that a healthy client waits one short turn at most), and every
//! flooding connection's messages still arrive whole over the following turns.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use wsloop::proto::frame::OpCode;
use wsloop::proto::message::Encoder;
use wsloop::proto::Role;
use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};

/// Flooding connections: more than the turn's budget could give 64 KiB each.
const FLOODERS: usize = 20;
/// Messages each flooder sends.
const MESSAGES: usize = 8;
/// Each flooder message's size.
const SIZE: usize = 64 * 1024;
/// The most one turn may read in all with this many busy connections (the reactor's
/// `TURN_BUDGET`); before it, each connection could take 1 MiB a turn.
const TURN_BUDGET: u64 = 512 * 1024;

/// Counts opens, and messages whose bytes are all the same (as every message here is).
#[derive(Default)]
struct Counter {
    opened: usize,
    whole: usize,
    broken: usize,
    /// The healthy client's id and its messages.
    healthy: Option<ConnId>,
    healthy_messages: usize,
}

impl Handler for Counter {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_open(&mut self, _ctx: &mut Context<'_, ()>, id: ConnId) {
        self.opened += 1;
        // The last to open is the healthy client.
        self.healthy = Some(id);
    }

    fn on_message(&mut self, _ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        if Some(id) == self.healthy {
            self.healthy_messages += 1;
            return;
        }
        let bytes = msg.as_bytes();
        if bytes.len() == SIZE && bytes.iter().all(|&b| b == bytes[0]) {
            self.whole += 1;
        } else {
            self.broken += 1;
        }
    }
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Connects and upgrades a client, running turns until the server has opened it.
fn open(server: &mut Server<Counter>) -> TcpStream {
    let mut client = TcpStream::connect(server.local_addr()).expect("connect");
    client.write_all(UPGRADE.as_bytes()).expect("upgrade");
    let opened = server.handler().opened;
    while server.handler().opened == opened {
        server.turn(Some(Duration::from_millis(50))).expect("turn");
    }
    client
}

fn binary(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    Encoder::new(Role::Client).frame(&mut frame, OpCode::Binary, true, payload);
    frame
}

#[test]
fn a_turn_reads_a_bounded_share_of_many_floods_and_serves_every_connection() {
    // Echoes are not sent (the flooders never read): only reading is measured.
    let config = Config::default().ping_interval(None);
    let mut server = Server::bind("127.0.0.1:0", config, Counter::default()).expect("bind");
    let flooders: Vec<TcpStream> = (0..FLOODERS).map(|_| open(&mut server)).collect();
    let mut healthy = open(&mut server);

    // Each flooder writes its messages from a thread of its own (the kernel's buffers take
    // what the server has not read yet).
    let writers: Vec<_> = (flooders.into_iter().enumerate())
        .map(|(i, mut client)| {
            thread::spawn(move || {
                let frame = binary(&[i as u8; SIZE]);
                for _ in 0..MESSAGES {
                    client.write_all(&frame).expect("flood");
                }
                client
            })
        })
        .collect();
    // Let the floods fill the server's sockets, and the healthy client's message arrive.
    thread::sleep(Duration::from_millis(200));
    healthy.write_all(&binary(b"healthy")).expect("write");
    thread::sleep(Duration::from_millis(50));

    let mut turns = 0;
    let mut largest = 0;
    let mut healthy_turn = None;
    while server.handler().whole + server.handler().broken < FLOODERS * MESSAGES {
        let before = server.metrics().bytes_in;
        server.turn(Some(Duration::from_millis(50))).expect("turn");
        let read = server.metrics().bytes_in - before;
        largest = largest.max(read);
        turns += 1;
        if healthy_turn.is_none() && server.handler().healthy_messages == 1 {
            healthy_turn = Some(turns);
        }
        assert!(turns < 10_000, "the floods never arrived");
    }
    let counter = server.handler();
    assert_eq!(
        counter.broken, 0,
        "messages read over several turns came whole"
    );
    assert_eq!(counter.whole, FLOODERS * MESSAGES);
    // Each connection's share of the turn, read at most twice (once for its event, once more
    // from the backlog if it had drained in between): never each connection's 1 MiB.
    assert!(
        largest <= 2 * TURN_BUDGET,
        "a turn read {largest} B from {FLOODERS} floods"
    );
    assert!(
        turns as u64 >= (FLOODERS * MESSAGES * SIZE) as u64 / (2 * TURN_BUDGET),
        "{turns} turns"
    );
    assert_eq!(
        healthy_turn,
        Some(1),
        "the healthy client waited for a later turn"
    );
    for writer in writers {
        writer.join().expect("a flooder failed");
    }
}
