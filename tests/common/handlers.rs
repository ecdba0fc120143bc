//! The handlers that several test files serve: an echo, and rooms driven by text commands.

use std::net::SocketAddr;

use wsloop::{ConnId, Context, Handler, Message, Request, Upgrade};

/// Sends every message back as it came.
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        ctx.send(id, msg).expect("echo fits the queue");
    }
}

/// Topics driven by text commands, one per message:
///
/// | command | effect | answer |
/// |---|---|---|
/// | `where` | | the reactor's number |
/// | `join ROOM` | subscribe | `joined ROOM on N` (N: the reactor), or `already in ROOM` |
/// | `leave ROOM` | unsubscribe | `left ROOM`, or `not in ROOM` |
/// | `say ROOM TEXT` | publish TEXT to the others in ROOM | with acks: `said to N` (local recipients) |
/// | `bin ROOM TEXT` | publish TEXT as binary to the others in ROOM | with acks: `said to N` |
/// | `shout ROOM TEXT` | publish TEXT to ROOM, the sender included | with acks: `shouted to N` |
/// | `echo TEXT` | | TEXT |
/// | `mine` | | the sender's rooms, sorted, comma-separated |
/// | `count ROOM` | | how many local subscribers ROOM has |
/// | anything else | | `?` |
pub struct Rooms {
    reactor: usize,
    acks: bool,
}

impl Rooms {
    /// Rooms on reactor `reactor`, publishing without acks.
    pub fn new(reactor: usize) -> Rooms {
        Rooms {
            reactor,
            acks: false,
        }
    }

    /// Answers every publish with the number of local recipients.
    pub fn with_acks(self) -> Rooms {
        Rooms { acks: true, ..self }
    }
}

impl Handler for Rooms {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let mut words = text.splitn(3, ' ');
        let (verb, room, rest) = (words.next(), words.next().unwrap_or(""), words.next());
        let rest = rest.unwrap_or("");
        let ack = |n: usize, what: &str| self.acks.then(|| format!("{what} to {n}"));
        let reply = match verb {
            Some("where") => Some(self.reactor.to_string()),
            Some("join") if ctx.subscribe(id, room) => {
                Some(format!("joined {room} on {}", self.reactor))
            }
            Some("join") => Some(format!("already in {room}")),
            Some("leave") if ctx.unsubscribe(id, room) => Some(format!("left {room}")),
            Some("leave") => Some(format!("not in {room}")),
            Some("say") => ack(ctx.publish_except(room, id, Message::Text(rest)), "said"),
            Some("bin") => ack(
                ctx.publish_except(room, id, Message::Binary(rest.as_bytes())),
                "said",
            ),
            Some("shout") => ack(ctx.publish(room, Message::Text(rest)), "shouted"),
            Some("echo") => Some(text["echo ".len()..].to_owned()),
            Some("mine") => {
                let mut rooms: Vec<&str> = ctx.topics(id).collect();
                rooms.sort_unstable();
                Some(rooms.join(","))
            }
            Some("count") => Some(ctx.subscribers(room).len().to_string()),
            _ => Some("?".into()),
        };
        if let Some(reply) = reply {
            // A connection closing meanwhile refuses it; the test waiting for it then fails.
            let _ = ctx.send_text(id, &reply);
        }
    }
}
