#![no_main]
//! cargo-fuzz target: see `wsloop_fuzz::harness::connection`.

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: wsloop_fuzz::harness::Counting = wsloop_fuzz::harness::Counting;

fuzz_target!(|data: &[u8]| wsloop_fuzz::harness::connection(data));
