//! corral-bpf: the sched_ext scheduler that enforces CPU groups, its loader, and typed access to
//! the pinned maps that the control plane writes.
//!
//! # Layout
//! (filled in by the scheduler issue)
