//! The VM test suite: one libtest binary built on the host and run inside the sched_ext guest by
//! `cargo xtask test`. Every test starts with [`corral_tests::guest::require_guest`], so running
//! it anywhere else fails loudly. Tests that attach a scheduler of their own, or need sched_ext
//! off, first empty the slot of the scheduler the others share ([`sched::scheduler_slot`]), so
//! they do not depend on the order libtest runs them in.
//!
//! # Layout
//! - [`cli`]: `corral sched` in the foreground with `corral map`/`unmap`/`maps dump`/`status`
//!   from other processes, its reattach after an exit, and SIGTERM.
//! - [`containerd`]: a containerd container's server placed by the scheduler end to end.
//! - [`guest_env`]: the guest offers what corral needs (sched_ext, cgroup2 cpuset, bpffs).
//! - [`isolation`]: what keeps the scheduler attached and groups isolated: late joiners, unmapped
//!   hogs, affinity overrides, CPU hotplug, control-plane churn, partial mode, the violation
//!   counter.
//! - [`sched`]: the scheduler's placement, remap, host group, statistics and failure behaviour,
//!   and the workload, sampling and scheduler-slot helpers the isolation tests share.
//! - [`runtime`]: the actor runtime end to end with the `local` backend and the `bpf` map writer.

mod cli;
mod containerd;
mod guest_env;
mod isolation;
mod runtime;
mod sched;
