//! What the load generator's messages are cut from; `benches/micro.rs` uses the same text.

/// The bytes messages are cut from: random bytes for binary messages; for text, random words
/// from a small vocabulary (ASCII, and compressible about as well as chat or JSON traffic, so that
/// `--deflate` measures a realistic compression ratio rather than incompressible noise).
pub fn make_pattern(len: usize, binary: bool, rng: &mut u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "price",
        "order",
        "id",
        "user",
        "message",
        "room",
        "lobby",
        "hello",
        "world",
        "websocket",
        "frame",
        "echo",
        "server",
        "client",
        "buy",
        "sell",
        "bid",
        "ask",
        "volume",
        "time",
        "status",
        "ok",
        "error",
        "update",
        "delta",
        "snapshot",
        "channel",
        "topic",
        "event",
        "data",
        "type",
        "value",
        "true",
        "false",
        "null",
        "count",
        "total",
        "name",
        "text",
        "chat",
        "join",
        "leave",
        "ping",
        "pong",
        "1042",
        "3.14",
        "2026",
        "17",
        "99.5",
        "0",
        "7",
        "250",
    ];
    const SEPS: &[&str] = &[" ", " ", " ", " ", ", ", ": ", "; ", ". ", "\n", "\", \""];
    let mut next = move || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng >> 24) as usize
    };
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        if binary {
            out.extend_from_slice(&(next() as u64).to_le_bytes()[..5]);
        } else {
            out.extend_from_slice(WORDS[next() % WORDS.len()].as_bytes());
            out.extend_from_slice(SEPS[next() % SEPS.len()].as_bytes());
        }
    }
    out.truncate(len);
    out
}
