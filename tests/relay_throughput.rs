//! Ad-hoc: publishes per second through RedisRelay to a real redis-server (not committed).
#![cfg(feature = "redis")]
use std::time::{Duration, Instant};
use wsloop::{Config, Message, RedisOptions, RedisRelay, Relay, Server};

#[test]
#[ignore]
fn relay_throughput() {
    let url = std::env::var("BENCH_REDIS").unwrap();
    let n: u64 = std::env::var("BENCH_N")
        .map(|v| v.parse().unwrap())
        .unwrap_or(300_000);
    let server = Server::bind("127.0.0.1:0", Config::default(), wsloop_bench_handler::H).unwrap();
    let opts = RedisOptions::default().queue(1 << 20);
    let mut relay = RedisRelay::connect_with(&url, &[server.handle()], "bench:", opts).unwrap();
    let body = "x".repeat(100);
    let t = Instant::now();
    for _ in 0..n {
        relay.publish("t", Message::Text(&body));
    }
    while relay.published() + relay.dropped() < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "RESULT published {} dropped {} in {secs:.3} s: {:.0} publishes/s",
        relay.published(),
        relay.dropped(),
        n as f64 / secs
    );
    relay.shutdown();
}

mod wsloop_bench_handler {
    use std::net::SocketAddr;
    use wsloop::{ConnId, Context, Handler, Message, Request, Upgrade};
    pub struct H;
    impl Handler for H {
        type State = ();
        fn on_upgrade(&mut self, _: &Request<'_, '_>, _: SocketAddr) -> Upgrade<()> {
            Upgrade::accept(())
        }
        fn on_message(&mut self, _: &mut Context<'_, ()>, _: ConnId, _: Message<'_>) {}
    }
}
