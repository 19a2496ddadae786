//! The scheduler's libbpf skeleton, generated from `src/bpf/main.bpf.c` at build time.
#![allow(missing_debug_implementations)]
// Generated code: not ours to lint.
#![allow(clippy::all)]
include!(concat!(env!("OUT_DIR"), "/bpf_skel.rs"));
