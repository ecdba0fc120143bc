//! Topics (rooms): subscribe, publish encoded once to every subscriber, unsubscribe, and
//! subscriptions that end with the connection.

use std::net::SocketAddr;
use std::time::Duration;

use wsloop::client::{Client, Received};
use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};

/// Text commands: `join ROOM`, `leave ROOM`, `say ROOM TEXT` (to all but the sender),
/// `shout ROOM TEXT` (to all), `mine` (lists the sender's rooms), `count ROOM`.
struct Rooms;

impl Handler for Rooms {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let mut words = text.splitn(3, ' ');
        let (verb, room, rest) = (words.next(), words.next().unwrap_or(""), words.next());
        let reply = match verb {
            Some("join") => format!("joined {}", ctx.subscribe(id, room)),
            Some("leave") => format!("left {}", ctx.unsubscribe(id, room)),
            Some("say") => {
                let n = ctx.publish_except(room, id, Message::Text(rest.unwrap_or("")));
                format!("said to {n}")
            }
            Some("shout") => {
                let n = ctx.publish(room, Message::Text(rest.unwrap_or("")));
                format!("shouted to {n}")
            }
            Some("mine") => {
                let mut rooms: Vec<&str> = ctx.topics(id).collect();
                rooms.sort_unstable();
                rooms.join(",")
            }
            Some("count") => ctx.subscribers(room).len().to_string(),
            _ => "?".into(),
        };
        ctx.send_text(id, &reply).unwrap();
    }
}

fn start() -> String {
    let mut server = Server::bind("127.0.0.1:0", Config::default(), Rooms).unwrap();
    let url = format!("ws://{}/", server.local_addr());
    std::thread::spawn(move || server.run());
    url
}

fn client(url: &str) -> Client {
    let c = Client::connect(url).unwrap();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    c
}

fn ask(c: &mut Client, text: &str) -> String {
    c.send(Message::Text(text)).unwrap();
    match c.recv().unwrap() {
        Received::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn publish_reaches_subscribers_only() {
    let url = start();
    let (mut a, mut b, mut c) = (client(&url), client(&url), client(&url));
    assert_eq!(ask(&mut a, "join lobby"), "joined true");
    assert_eq!(ask(&mut a, "join lobby"), "joined false");
    assert_eq!(ask(&mut b, "join lobby"), "joined true");
    assert_eq!(ask(&mut c, "join other"), "joined true");
    // b hears a's message; a hears only its own acknowledgement; c hears nothing.
    assert_eq!(ask(&mut a, "say lobby hello"), "said to 1");
    assert_eq!(b.recv().unwrap(), Received::Text("hello".into()));
    assert_eq!(ask(&mut a, "shout lobby all"), "all");
    assert_eq!(a.recv().unwrap(), Received::Text("shouted to 2".into()));
    assert_eq!(b.recv().unwrap(), Received::Text("all".into()));
    assert_eq!(
        ask(&mut c, "count lobby"),
        "2",
        "c got nothing from lobby before this"
    );
    assert_eq!(ask(&mut b, "join other"), "joined true");
    assert_eq!(ask(&mut b, "mine"), "lobby,other");
}

#[test]
fn unsubscribe_and_close_end_subscriptions() {
    let url = start();
    let (mut a, mut b) = (client(&url), client(&url));
    assert_eq!(ask(&mut a, "join r"), "joined true");
    assert_eq!(ask(&mut b, "join r"), "joined true");
    assert_eq!(ask(&mut b, "leave r"), "left true");
    assert_eq!(ask(&mut b, "leave r"), "left false");
    assert_eq!(ask(&mut a, "say r x"), "said to 0");
    assert_eq!(ask(&mut b, "join r"), "joined true");
    assert_eq!(ask(&mut a, "count r"), "2");
    drop(b);
    // The server sees b's TCP close and removes it from every topic.
    let mut count = String::new();
    for _ in 0..50 {
        count = ask(&mut a, "count r");
        if count == "1" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count, "1");
}
