//! corral: the runtime a FaaS worker links in. It places each function's containers on a CPU
//! group, enforced in the kernel by a sched_ext scheduler fed through pinned BPF maps.
//!
//! # Layout
//! (filled in by the actor runtime issue)
