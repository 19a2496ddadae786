//! corral-bpf: the sched_ext scheduler that enforces CPU groups, its loader, and typed access to
//! the pinned maps that the control plane writes.
//!
//! A CPU group is a set of CPUs plus a time slice, an order (FIFO or vtime) and a borrow flag.
//! The control plane publishes groups in the group table and maps cgroups to groups in the
//! cgroup map; the scheduler places every task of a mapped cgroup (or of a descendant) on its
//! group's CPUs, and every other task on the host group's CPUs ([`HOST_GROUP`]). That is full
//! switch, the default; partial mode ([`SchedMode::Partial`]) schedules only `SCHED_EXT` tasks. The maps are pinned (default [`DEFAULT_PIN_DIR`]) and outlive
//! the scheduler: they can be created on a host without sched_ext, filled before the scheduler
//! loads, and they survive a restart. `docs/maps.md` describes the layout and what is atomic.
//!
//! # The API the control plane uses
//!
//! ```no_run
//! use corral_bpf::{cgroup_id_of, set_cgroup_sched_ext, CgroupFlags, GroupSpec, PinnedMaps};
//!
//! let maps = PinnedMaps::open_or_create("/sys/fs/bpf/corral")?;
//! // Publish group 0 on CPUs 0 and 1 with a 5 ms slice (validated first: id in range, CPUs
//! // non-empty, possible and online, slice > 0).
//! maps.groups().publish(0, &GroupSpec::new([0, 1], 5_000_000))?;
//! // Enforce: one map update places the cgroup's sched_ext tasks on group 0 ...
//! let cgroup = cgroup_id_of("/sys/fs/cgroup/corral/fn-a")?;
//! maps.cgroups().insert(cgroup, 0, CgroupFlags::NONE)?;
//! // ... and the policy switch brings the cgroup's threads under sched_ext.
//! set_cgroup_sched_ext("/sys/fs/cgroup/corral/fn-a", true)?;
//! // Figures from inside the kernel, summed over CPUs.
//! let stats = maps.stats().read(0)?;
//! println!("runs {} p99 <= {:?} ns", stats.runs, stats.latency_quantile_upper_ns(0.99));
//! // Rebuild a mirror after a restart.
//! for (cgroup, entry) in maps.cgroups().entries()? {
//!     println!("{cgroup} -> group {}", entry.group);
//! }
//! maps.cgroups().remove(cgroup)?;
//! # Ok::<(), corral_bpf::Error>(())
//! ```
//!
//! Loading the scheduler (root, a kernel with sched_ext):
//!
//! ```no_run
//! use corral_bpf::{Scheduler, SchedulerConfig};
//! let sched = Scheduler::start(&SchedulerConfig::default())?;
//! if let Some(exit) = sched.wait_for_exit(std::time::Duration::from_secs(1)) {
//!     eprintln!("stopped: {exit}");
//! }
//! # Ok::<(), corral_bpf::Error>(())
//! ```
//!
//! # Layout
//! - [`error`]: the crate's one error type; every variant names the offending value.
//! - [`pinned`]: [`PinnedMaps`], creating or opening the pins and checking their layout.
//! - [`cgroup_map`]: [`CgroupMap`], cgroup id → group, the atomic enforcement step.
//! - [`group_table`]: [`GroupTable`], group id → CPUs and settings, validated before writing.
//! - [`stats`]: [`SchedStats`], per-group figures summed over CPUs.
//! - [`cgroup`]: cgroup path → id, and switching a cgroup's threads to `SCHED_EXT` and back.
//! - [`cpus`]: the machine's possible and online CPUs.
//! - [`scheduler`]: [`Scheduler`], open → configure → load → attach, exit information.
//! - `joiners`: partial mode's switch of tasks that join a mapped cgroup later (private).
//! - `raw`: byte views of the `intf.h` structs (private).
//! - [`bpf_intf`], [`bpf_skel`], [`maps_skel`]: bindings generated at build time from
//!   `src/bpf/intf.h`, `src/bpf/main.bpf.c` (the scheduler) and `src/bpf/maps.bpf.c` (maps only).

pub mod bpf_intf;
pub mod bpf_skel;
pub mod cgroup;
pub mod cgroup_map;
pub mod cpus;
pub mod error;
pub mod group_table;
mod joiners;
pub mod maps_skel;
pub mod pinned;
mod raw;
pub mod scheduler;
pub mod stats;

/// A cgroup id: the inode number of a cgroup v2 directory.
pub type CgroupId = u64;
/// A group id: an index into the group table, below [`MAX_GROUPS`].
pub type GroupId = u32;

/// Number of group slots (`CORRAL_MAX_GROUPS` in `intf.h`).
pub const MAX_GROUPS: u32 = bpf_intf::corral_consts_CORRAL_MAX_GROUPS;
/// Highest CPU count a group can describe (`CORRAL_MAX_CPUS` in `intf.h`).
pub const MAX_CPUS: u32 = bpf_intf::corral_consts_CORRAL_MAX_CPUS;

pub use cgroup::{
    cgroup_id_of, cgroup_threads, set_cgroup_sched_ext, set_cgroup_tree_sched_ext, thread_policy,
    SCHED_EXT, SCHED_NORMAL,
};
pub use cgroup_map::{CgroupEntry, CgroupFlags, CgroupMap};
pub use error::{Error, Result};
pub use group_table::{GroupOrder, GroupSpec, GroupTable, Publication, PublishedGroup, HOST_GROUP};
pub use pinned::{BuildReport, PinnedMaps, DEFAULT_PIN_DIR, LAYOUT_VERSION};
pub use scheduler::{
    check_sched_ext_support, sched_ext_state, ExitInfo, ExitKind, SchedExtState, SchedMode,
    Scheduler, SchedulerConfig,
};
pub use stats::{GroupStats, SchedStats, LAT_BUCKETS};
