//! A random seed for the examples' own generators (bot moves, message patterns).

use std::hash::{BuildHasher, Hasher};

/// 64 random, odd bits (a valid xorshift seed), from the standard library's randomly seeded
/// SipHash: a fresh seed per call.
pub fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9E37_79B9_7F4A_7C15);
    hasher.finish() | 1
}
