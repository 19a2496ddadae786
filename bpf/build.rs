//! Builds the two BPF objects and their Rust bindings.
//!
//! - `src/bpf/main.bpf.c`: the scheduler, as the `bpf` skeleton (`bpf_skel.rs`);
//! - `src/bpf/maps.bpf.c`: the pinned maps alone, as the `maps` skeleton (`maps_skel.rs`), loadable
//!   without sched_ext;
//! - `src/bpf/intf.h`: the shared structs and constants, through bindgen (`bpf_intf.rs`).

fn main() {
    scx_cargo::BpfBuilder::new()
        .expect("set up the BPF builder (is BPF_CLANG a clang >= 18?)")
        .enable_intf("src/bpf/intf.h", "bpf_intf.rs")
        .enable_skel("src/bpf/main.bpf.c", "bpf")
        .build()
        .expect("build the scheduler object and its bindings");

    scx_cargo::BpfBuilder::new()
        .expect("set up the BPF builder (is BPF_CLANG a clang >= 18?)")
        .enable_skel("src/bpf/maps.bpf.c", "maps")
        .build()
        .expect("build the maps-only object");
}
