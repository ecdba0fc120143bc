//! Replays, on every `cargo test`, the inputs that once made a fuzz target fail
//! (`tests/fuzz_corpus/<target>/`), and the targets' seed inputs (`fuzz/seeds/<target>/`), through
//! the same harnesses the fuzzers run (`fuzz/src/harness.rs`, included here as a module).
//!
//! To add one: copy the crashing input from `fuzz/artifacts/<target>/` into
//! `tests/fuzz_corpus/<target>/` under a name that says what it found.

#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::fs;
use std::panic;
use std::path::Path;

#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;

/// Runs `run` on every file of the target's regression corpus and seeds; names the file that
/// fails.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in ["tests/fuzz_corpus", "fuzz/seeds"] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            let data = fs::read(file).expect("read a corpus file");
            if panic::catch_unwind(|| run(&data)).is_err() {
                panic!("{target}: {} fails", file.display());
            }
            count += 1;
        }
    }
    count
}

#[test]
fn handshake_corpus() {
    assert!(replay("handshake", harness::handshake) > 0);
}

#[test]
fn decoder_corpus() {
    assert!(replay("decoder", harness::decoder) > 0);
}

#[test]
fn roundtrip_corpus() {
    assert!(replay("roundtrip", harness::roundtrip) > 0);
}

#[test]
fn server_corpus() {
    assert!(replay("server", harness::server) > 0);
}

#[test]
fn connection_corpus() {
    assert!(replay("connection", harness::connection) > 0);
}

/// Bug, found by the `roundtrip` target (tests/fuzz_corpus/roundtrip/) and by the soak test
/// over sockets: a compressed message whose inflated size is within `max_message_size` is
/// refused with 1009 (`MessageTooBig`) when its compressed form is larger than the limit.
/// Incompressible data grows when deflated (stored blocks add 5 bytes per block; wsloop's own
/// `Deflater` at level 1 adds about 5 % to random bytes), so a valid message near the limit is
/// refused. `Decoder::check_header` (src/proto/message.rs) compares the compressed frame length
/// (plus what is inflated so far) with the limit of the inflated message; the `Inflater`
/// already enforces the inflated limit exactly.
#[test]
fn compressed_message_under_the_limit_is_delivered() {
    use wsloop::proto::deflate::{Deflater, Inflater, Params};
    use wsloop::proto::frame::{write_frame, OpCode};
    use wsloop::proto::message::{Decoded, Decoder, Event};
    use wsloop::proto::Role;

    let max = 1000;
    let mut seed = 0x2545_F491_u64;
    let message: Vec<u8> = (0..max)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let params = Params::default();
    for level in [0, 1] {
        let mut compressed = Vec::new();
        Deflater::new(params, Role::Client, level).deflate(&message, &mut compressed);
        assert!(
            compressed.len() > max,
            "level {level}: {}",
            compressed.len()
        );
        let mut frame = Vec::new();
        let mask = Some([1, 2, 3, 4]);
        write_frame(&mut frame, OpCode::Binary, true, true, mask, &compressed);
        let mut decoder = Decoder::new(Role::Server, max);
        decoder.set_inflater(Inflater::new(params, Role::Server));
        match decoder.decode(&mut frame) {
            Ok(Decoded::Frame {
                event: Some(Event::Binary(b)),
                ..
            }) => assert!(b == message, "level {level}: the message changed"),
            other => panic!(
                "a {max}-byte message ({} B compressed at level {level}) under the {max}-byte \
                 limit: {other:?}",
                compressed.len()
            ),
        }
    }
}
