//! The maps-only object's libbpf skeleton, generated from `src/bpf/maps.bpf.c` at build time.
#![allow(missing_debug_implementations)]
// Generated code: not ours to lint.
#![allow(clippy::all)]
include!(concat!(env!("OUT_DIR"), "/maps_skel.rs"));
