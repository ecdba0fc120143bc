//! Micro-benchmarks of the protocol core: frame header decode, unmasking, UTF-8 validation (the
//! incremental validator and the decoder on text frames), handshake request parsing and
//! permessage-deflate.
//!
//! `cargo bench --bench micro` (about a minute); `cargo bench --bench micro -- unmask` runs the
//! groups whose names match. Each benchmark measures for 1 s after a short warm-up.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wsloop::proto::deflate::{Deflater, Inflater, Params};
use wsloop::proto::frame::{apply_mask, write_frame, FrameHeader, OpCode};
use wsloop::proto::handshake::{write_accept, Headers, Request};
use wsloop::proto::message::{Decoded, Decoder};
use wsloop::proto::utf8::Utf8Validator;
use wsloop::proto::Role;

#[path = "../src/bin/wsloop/bench/pattern.rs"]
mod pattern;

const SIZES: [(usize, &str); 4] = [
    (16, "16B"),
    (1 << 10, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

/// Text with multi-byte characters of every length, about 70% ASCII.
fn mixed_text(len: usize) -> Vec<u8> {
    let unit = "The quick brown fox — «jumps» over the lazy dog: ünïcödé, 日本語, 😀! ";
    let mut s = String::with_capacity(len + unit.len());
    while s.len() < len {
        s.push_str(unit);
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.into_bytes()
}

/// JSON-like text, compressible the way chat or market-data messages are.
fn json_text(len: usize) -> Vec<u8> {
    let mut s = String::with_capacity(len + 128);
    let mut i = 0u64;
    while s.len() < len {
        s.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user{}\",\"price\":{}.{:02},\"side\":\"{}\"}},",
            i % 97,
            1000 + (i * 7919) % 500,
            i % 100,
            if i % 3 == 0 { "buy" } else { "sell" }
        ));
        i += 1;
    }
    s.truncate(len);
    s.into_bytes()
}

/// Random words, as in the load generator's text messages.
fn words_text(len: usize) -> Vec<u8> {
    pattern::make_pattern(len, false, &mut 0x9E37_79B9_7F4A_7C15)
}

fn header_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_decode");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, Vec<u8>); 3] = [
        ("masked_7bit", vec![0x82, 0x90, 1, 2, 3, 4]),
        ("masked_16bit", vec![0x82, 0xFE, 0x04, 0x00, 1, 2, 3, 4]),
        (
            "unmasked_64bit",
            vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0x10, 0, 0],
        ),
    ];
    for (name, bytes) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| FrameHeader::decode(black_box(bytes.as_slice())))
        });
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    let key = [0x37, 0xfa, 0x21, 0x3d];
    for (len, name) in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        let mut buf = vec![0x5au8; len + 1];
        g.bench_function(BenchmarkId::new("aligned", name), |b| {
            b.iter(|| apply_mask(black_box(&mut buf[..len]), key, 0))
        });
        // A payload that starts one byte past an 8-byte boundary, at a key offset of 3.
        g.bench_function(BenchmarkId::new("offset", name), |b| {
            b.iter(|| apply_mask(black_box(&mut buf[1..]), key, 3))
        });
    }
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    for (len, name) in SIZES {
        let ascii = vec![b'a'; len];
        let mixed = mixed_text(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("validator_ascii", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::default();
                v.feed(black_box(&ascii)).and_then(|_| v.finish())
            })
        });
        g.throughput(Throughput::Bytes(mixed.len() as u64));
        g.bench_function(BenchmarkId::new("validator_mixed", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::default();
                v.feed(black_box(&mixed)).and_then(|_| v.finish())
            })
        });
        // The same text in 1000-byte pieces, most of them split inside a character.
        if len >= 4096 {
            g.bench_function(BenchmarkId::new("validator_mixed_pieces", name), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::default();
                    for piece in black_box(&mixed).chunks(1000) {
                        v.feed(piece)?;
                    }
                    v.finish()
                })
            });
        }
        g.bench_function(BenchmarkId::new("std_from_utf8_mixed", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(&mixed)).is_ok())
        });
    }
    g.finish();
}

/// The decoder on whole text frames: as a server (masked: the frame is copied back in before
/// each decode, since decoding unmasks in place) and as a client (unmasked).
fn decode_text(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_text");
    for (len, name) in SIZES {
        let text = mixed_text(len);
        let mut masked = Vec::new();
        write_frame(
            &mut masked,
            OpCode::Text,
            true,
            false,
            Some([1, 2, 3, 4]),
            &text,
        );
        let mut plain = Vec::new();
        write_frame(&mut plain, OpCode::Text, true, false, None, &text);
        g.throughput(Throughput::Bytes(text.len() as u64));
        let mut server = Decoder::new(Role::Server, 16 << 20);
        let mut buf = masked.clone();
        g.bench_function(BenchmarkId::new("server_masked", name), |b| {
            b.iter(|| {
                buf.copy_from_slice(&masked);
                match server.decode(black_box(&mut buf)) {
                    Ok(Decoded::Frame { len, event }) => len + event.is_some() as usize,
                    other => panic!("{other:?}"),
                }
            })
        });
        let mut client = Decoder::new(Role::Client, 16 << 20);
        let mut buf = plain.clone();
        g.bench_function(BenchmarkId::new("client_unmasked", name), |b| {
            b.iter(|| match client.decode(black_box(&mut buf)) {
                Ok(Decoded::Frame { len, event }) => len + event.is_some() as usize,
                other => panic!("{other:?}"),
            })
        });
    }
    g.finish();
}

fn handshake(c: &mut Criterion) {
    // What a current browser sends.
    let request = b"GET /chat?room=lobby HTTP/1.1\r\n\
        Host: example.com:9001\r\n\
        Connection: Upgrade\r\n\
        Pragma: no-cache\r\n\
        Cache-Control: no-cache\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
        Upgrade: websocket\r\n\
        Origin: https://example.com\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\n\
        Accept-Language: en-US,en;q=0.9\r\n\
        Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut headers = Headers::new();
            Request::parse(black_box(request), &mut headers)
                .map(|r| r.headers().len())
                .ok()
        })
    });
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let mut headers = Headers::new();
            let req = Request::parse(black_box(request), &mut headers).ok()?;
            req.validate_upgrade().ok().map(str::len)
        })
    });
    let mut out = Vec::with_capacity(256);
    g.bench_function("parse_validate_respond", |b| {
        b.iter(|| {
            let mut headers = Headers::new();
            let req = Request::parse(black_box(request), &mut headers).ok()?;
            let key = req.validate_upgrade().ok()?;
            out.clear();
            write_accept(&mut out, key, None, None);
            Some(out.len())
        })
    });
    g.finish();
}

fn deflate(c: &mut Criterion) {
    let params = Params::default().with_no_context_takeover(true, true);
    let mut g = c.benchmark_group("deflate");
    let inputs = [
        (1 << 10, "json_1KiB"),
        (16 << 10, "json_16KiB"),
        (256 << 10, "json_256KiB"),
        (64 << 10, "words_64KiB"),
        (1 << 20, "words_1MiB"),
    ];
    for (len, name) in inputs {
        let json = if name.starts_with("json") {
            json_text(len)
        } else {
            words_text(len)
        };
        g.throughput(Throughput::Bytes(len as u64));
        let mut deflater = Deflater::new(params, Role::Server, 1);
        let mut out = Vec::with_capacity(len);
        g.bench_function(BenchmarkId::new("deflate_level1", name), |b| {
            b.iter(|| {
                out.clear();
                deflater.deflate(black_box(&json), &mut out);
                out.len()
            })
        });
        // zlib-rs at level 1 and its reset after each message: how a message compressed on its
        // own went out before the fixed-Huffman encoder (which takes up to 16 KiB at level 1).
        let mut zlib = Deflater::new(Params::default(), Role::Server, 1);
        g.bench_function(BenchmarkId::new("deflate_level1_zlib_reset", name), |b| {
            b.iter(|| {
                out.clear();
                zlib.deflate(black_box(&json), &mut out);
                zlib.reset();
                out.len()
            })
        });
        out.clear();
        deflater.deflate(&json, &mut out);
        let compressed = out.clone();
        let mut inflater = Inflater::new(params, Role::Client);
        let mut plain = Vec::with_capacity(len);
        g.bench_function(BenchmarkId::new("inflate", name), |b| {
            b.iter(|| {
                plain.clear();
                inflater
                    .inflate(black_box(&compressed), true, &mut plain, 16 << 20)
                    .map(|_| plain.len())
            })
        });
        // With 9 window bits agreed the inflater also checks every distance against the window.
        let small = params.with_window_bits(9, params.client_max_window_bits);
        let mut wire = Vec::with_capacity(len);
        Deflater::new(small, Role::Server, 1).deflate(&json, &mut wire);
        let mut inflater = Inflater::new(small, Role::Client);
        g.bench_function(BenchmarkId::new("inflate_window_9", name), |b| {
            b.iter(|| {
                plain.clear();
                inflater
                    .inflate(black_box(&wire), true, &mut plain, 16 << 20)
                    .map(|_| plain.len())
            })
        });
        eprintln!(
            "deflate {name}: {} -> {} bytes ({:.1}%)",
            json.len(),
            compressed.len(),
            100.0 * compressed.len() as f64 / json.len() as f64
        );
    }
    g.finish();
}

criterion_group! {
    name = micro;
    config = config();
    targets = header_decode, unmask, utf8, decode_text, handshake, deflate
}
criterion_main!(micro);
