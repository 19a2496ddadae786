//! The VM test suite: one libtest binary built on the host and run inside the sched_ext guest by
//! `cargo xtask test`. Every test starts with [`corral_tests::guest::require_guest`], so running
//! it anywhere else fails loudly.
//!
//! # Layout
//! - [`cli`]: `corral sched` in the foreground with `corral map`/`unmap`/`maps dump`/`status`
//!   from other processes, and SIGTERM.
//! - [`guest_env`]: the guest offers what corral needs (sched_ext, cgroup2 cpuset, bpffs).
//! - [`sched`]: the scheduler's placement, remap, fallback, statistics and failure behaviour.
//! - [`runtime`]: the actor runtime end to end with the `local` backend and the `bpf` map writer.

mod cli;
mod guest_env;
mod runtime;
mod sched;
