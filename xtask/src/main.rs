//! `cargo xtask`: setup, VM harness, tests and the demo.
fn main() {}
