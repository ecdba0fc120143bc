//! The largest memory a reactor can reach for a given `Config` (the manual's "worst case"
//! total, in "Configuration and limits") holds under a mix of what makes a server hold memory:
//! clients that never read, unfinished fragmented messages and unfinished compressed messages
//! (open inflaters), all at once.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::memory::{rss_kib, rss_now_kib};
use common::{client_frame, client_frame_raw, upgrade_request};
use flate2::{Compress, Compression, FlushCompress};
use wsloop::proto::deflate::DeflateConfig;
use wsloop::proto::frame::OpCode;
use wsloop::{Config, ConnId, Context, Handler, Message, Request, Server, Upgrade};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Clients of each kind.
const EACH: usize = 24;

struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<()> {
        Upgrade::accept(())
    }

    fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
        let _ = ctx.send(id, msg);
    }
}

fn config() -> Config {
    Config::default()
        .max_message_size(MIB)
        .max_write_buffer(MIB)
        .max_buffered(8 * MIB)
        .buffer_pool_size(MIB)
        .handle_queue(MIB)
        .max_connections(200)
        .deflate(Some(DeflateConfig::default()))
}

/// The manual's worst case for `config`, in bytes: `max_buffered` + 2 x the larger of
/// `max_message_size` and `max_write_buffer` + `buffer_pool_size` + 4 MiB of small pooled
/// buffers + `read_buffer_size` + `handle_queue` + 0.5 KiB per connection + 64 KiB per
/// connection inside a compressed message (its inflater) + 512 KiB per compressor.
fn documented_bound(config: &Config, inflating: usize, compressors: usize) -> usize {
    let c = &config.connection;
    config.max_buffered
        + 2 * c.max_message_size.max(c.max_write_buffer)
        + c.buffer_pool_size
        + 4 * MIB
        + config.read_buffer_size
        + config.handle_queue
        + config.max_connections * KIB / 2
        + inflating * 64 * KIB
        + compressors * 512 * KIB
}

/// A raw upgraded connection, offering permessage-deflate if `deflate`.
fn upgraded(addr: SocketAddr, deflate: bool) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let extra: &[&str] = if deflate {
        &["Sec-WebSocket-Extensions: permessage-deflate"]
    } else {
        &[]
    };
    stream
        .write_all(upgrade_request("/", extra).as_bytes())
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

/// The first frame of a compressed text message that never ends: `len` bytes of text that do
/// not compress, deflated and sync-flushed.
fn compressed_start(len: usize) -> Vec<u8> {
    let text: Vec<u8> = (0..len).map(|i| b'a' + ((i * 7919) % 26) as u8).collect();
    let mut deflated = Vec::with_capacity(len + 1024);
    let mut compress = Compress::new(Compression::default(), false);
    compress
        .compress_vec(&text, &mut deflated, FlushCompress::Sync)
        .unwrap();
    // RSV1 (compressed), text, not final.
    client_frame_raw(0x41, &deflated)
}

#[test]
fn rss_stays_under_the_documented_bound_under_a_mix_of_memory_holders() {
    let config = config();
    let bound = documented_bound(&config, EACH, 2);
    let (tx, rx) = std::sync::mpsc::channel();
    let server_config = config.clone();
    thread::spawn(move || {
        let mut server = Server::bind("127.0.0.1:0", server_config, Echo).unwrap();
        tx.send((server.local_addr(), server.handle())).unwrap();
        server.run().unwrap();
    });
    let (addr, handle) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // Everything the clients send is made before the baseline.
    let echo_me = client_frame(OpCode::Binary, true, &vec![0x5a; 64 * KIB]);
    let fragment = client_frame(OpCode::Binary, false, &vec![0x33; 120 * KIB]);
    let more = client_frame(OpCode::Continuation, false, &vec![0x44; 120 * KIB]);
    let compressed = compressed_start(200 * KIB);
    let before = rss_kib();
    let mut peak = rss_now_kib();
    let mut streams = Vec::new();
    // Unfinished fragmented messages: 960 KiB each, under max_message_size.
    for _ in 0..EACH {
        let mut s = upgraded(addr, false);
        s.write_all(&fragment).unwrap();
        for _ in 0..7 {
            s.write_all(&more).unwrap();
        }
        streams.push(s);
        peak = peak.max(rss_now_kib());
    }
    // Unfinished compressed messages: an inflater each.
    for _ in 0..EACH {
        let mut s = upgraded(addr, true);
        s.write_all(&compressed).unwrap();
        streams.push(s);
        peak = peak.max(rss_now_kib());
    }
    // Clients that never read their echoes, each sending far more than its queue holds.
    for _ in 0..EACH {
        let mut s = upgraded(addr, false);
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && s.write_all(&echo_me).is_ok() {
            peak = peak.max(rss_now_kib());
        }
        streams.push(s);
    }
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(20));
        peak = peak.max(rss_now_kib());
    }
    let metrics = handle.metrics(Duration::from_secs(5)).unwrap();
    let grown = (peak.saturating_sub(before)) * KIB;
    eprintln!(
        "memory bound: RSS {before} -> peak {peak} KiB (+{} KiB), documented bound {} KiB; \
         {} connections shed, {} bytes buffered at the end",
        grown / KIB,
        bound / KIB,
        metrics.connections_shed,
        metrics.bytes_buffered
    );
    assert!(
        metrics.bytes_buffered as usize <= config.max_buffered,
        "max_buffered holds"
    );
    assert!(
        grown <= bound,
        "RSS grew {grown} B, over the documented {bound} B"
    );
    drop(streams);
    handle.shutdown().unwrap();
}
