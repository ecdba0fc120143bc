//! Applications chosen by subprotocol and path, origin allow-list, and authentication at
//! upgrade: refusals happen before any WebSocket frame.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use wsloop::client::{Client, Received};
use wsloop::{
    Config, ConnId, Context, Handler, HttpResponse, Message, Request, Router, Server, Upgrade,
};

/// Answers every text message with `prefix` + the message; accepts only requests with
/// `?token=secret` when `auth` is set.
struct App {
    prefix: &'static str,
    auth: bool,
}

impl Handler for App {
    type State = ();

    fn on_upgrade(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        if self.auth && req.query("token") != Some("secret") {
            return Upgrade::reject(401, "token required");
        }
        Upgrade::accept(())
    }

    fn on_http(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> HttpResponse {
        HttpResponse::new(
            200,
            "text/html; charset=utf-8",
            format!("<h1>{}</h1>", self.prefix),
        )
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        if let Message::Text(text) = msg {
            ctx.send_text(id, &format!("{}{text}", self.prefix))
                .unwrap();
        }
    }
}

fn app(prefix: &'static str) -> App {
    App {
        prefix,
        auth: false,
    }
}

fn start(config: Config) -> SocketAddr {
    let router = Router::new()
        .protocol("chat", app("chat:"))
        .protocol("echo", app(""))
        .route(
            Some("/private"),
            None,
            App {
                prefix: "private:",
                auth: true,
            },
        )
        .path("/plain", app("plain:"));
    let mut server = Server::bind("127.0.0.1:0", config, router).unwrap();
    let addr = server.local_addr();
    std::thread::spawn(move || server.run());
    addr
}

/// Sends a raw upgrade request with `extra` headers and returns the whole response.
fn raw(addr: SocketAddr, path: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Refusals end with the server closing; an accepted upgrade ends with its blank line.
    while !out.ends_with(b"\r\n\r\n") || !out.starts_with(b"HTTP/1.1 101") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8(out).unwrap()
}

fn say(client: &mut Client, text: &str) -> Received {
    client.send(Message::Text(text)).unwrap();
    client.recv().unwrap()
}

#[test]
fn subprotocol_chooses_the_application_and_is_answered() {
    let addr = start(Config::default());
    let mut chat = Client::connect_with(&format!("ws://{addr}/"), &["chat"]).unwrap();
    assert_eq!(chat.protocol(), Some("chat"));
    assert_eq!(say(&mut chat, "hi"), Received::Text("chat:hi".into()));
    let mut echo = Client::connect_with(&format!("ws://{addr}/any"), &["x", "echo"]).unwrap();
    assert_eq!(echo.protocol(), Some("echo"));
    assert_eq!(say(&mut echo, "hi"), Received::Text("hi".into()));
}

#[test]
fn path_chooses_the_application() {
    let addr = start(Config::default());
    let mut plain = Client::connect(&format!("ws://{addr}/plain?x=1")).unwrap();
    assert_eq!(plain.protocol(), None);
    assert_eq!(say(&mut plain, "hi"), Received::Text("plain:hi".into()));
}

#[test]
fn unknown_subprotocol_gets_400_naming_the_supported_ones() {
    let addr = start(Config::default());
    let resp = raw(addr, "/", "Sec-WebSocket-Protocol: mqtt\r\n");
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(
        resp.ends_with("unsupported subprotocol; supported: chat, echo"),
        "{resp}"
    );
}

#[test]
fn unknown_path_gets_404() {
    let router = Router::new().path("/plain", app("plain:"));
    let mut server = Server::bind("127.0.0.1:0", Config::default(), router).unwrap();
    let addr = server.local_addr();
    std::thread::spawn(move || server.run());
    let resp = raw(addr, "/nowhere", "");
    assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");
}

#[test]
fn plain_get_is_served_by_the_routed_application() {
    let addr = start(Config::default());
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(resp.ends_with("<h1>plain:</h1>"));
}

#[test]
fn origin_allow_list_refuses_others_with_403() {
    let config = Config::default().allowed_origins(vec!["https://good.example".into()]);
    let addr = start(config);
    let ok = raw(addr, "/plain", "Origin: https://good.example\r\n");
    assert!(ok.starts_with("HTTP/1.1 101 "), "{ok}");
    let bad = raw(addr, "/plain", "Origin: https://evil.example\r\n");
    assert!(bad.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{bad}");
    assert!(bad.ends_with("origin not allowed"));
    let none = raw(addr, "/plain", "");
    assert!(
        none.starts_with("HTTP/1.1 101 "),
        "no Origin: not a browser, allowed"
    );
}

#[test]
fn authentication_hook_refuses_with_401_before_any_frame() {
    let addr = start(Config::default());
    let refused = raw(addr, "/private?token=wrong", "");
    assert!(
        refused.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{refused}"
    );
    assert!(refused.ends_with("token required"));
    let mut ok = Client::connect(&format!("ws://{addr}/private?token=secret")).unwrap();
    assert_eq!(say(&mut ok, "x"), Received::Text("private:x".into()));
}
