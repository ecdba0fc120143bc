//! The fuzz harnesses, as a library for the cargo-fuzz targets in `fuzz_targets/`.
pub mod harness;
