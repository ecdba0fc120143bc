//! Topics (rooms): subscribe, publish encoded once to every subscriber, unsubscribe, and
//! subscriptions that end with the connection.

mod common;

use std::time::Duration;

use common::handlers::Rooms;

use wsloop::client::{Client, Received};
use wsloop::{Config, Message, Server};

fn start() -> String {
    let mut server =
        Server::bind("127.0.0.1:0", Config::default(), Rooms::new(0).with_acks()).unwrap();
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
    assert_eq!(ask(&mut a, "join lobby"), "joined lobby on 0");
    assert_eq!(ask(&mut a, "join lobby"), "already in lobby");
    assert_eq!(ask(&mut b, "join lobby"), "joined lobby on 0");
    assert_eq!(ask(&mut c, "join other"), "joined other on 0");
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
    assert_eq!(ask(&mut b, "join other"), "joined other on 0");
    assert_eq!(ask(&mut b, "mine"), "lobby,other");
}

#[test]
fn unsubscribe_and_close_end_subscriptions() {
    let url = start();
    let (mut a, mut b) = (client(&url), client(&url));
    assert_eq!(ask(&mut a, "join r"), "joined r on 0");
    assert_eq!(ask(&mut b, "join r"), "joined r on 0");
    assert_eq!(ask(&mut b, "leave r"), "left r");
    assert_eq!(ask(&mut b, "leave r"), "not in r");
    assert_eq!(ask(&mut a, "say r x"), "said to 0");
    assert_eq!(ask(&mut b, "join r"), "joined r on 0");
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
