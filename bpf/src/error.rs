//! The crate's one error type. Every variant names the value it refuses or the object it failed
//! on, so a caller (the MapWriter, the BpfLoader, an operator reading a log) can tell what is
//! wrong without a debugger. Validation failures are separate variants because callers act on
//! them (reject a configuration) differently from system failures (retry, fall back).

use std::path::PathBuf;

/// Errors of the scheduler loader, the pinned maps and the cgroup helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A group id outside the group table.
    #[error("group id {group} is out of range: the group table holds groups 0..{max}")]
    GroupOutOfRange {
        /// The refused group id.
        group: u32,
        /// The table size (`CORRAL_MAX_GROUPS`).
        max: u32,
    },

    /// A group published with no CPU.
    #[error("group {group}: the cpumask is empty; a group needs at least one CPU")]
    EmptyCpuMask {
        /// The group being published.
        group: u32,
    },

    /// A CPU the group bitmap cannot describe.
    #[error("group {group}: CPU {cpu} is beyond the {limit} CPUs a group bitmap can hold")]
    CpuBeyondBitmap {
        /// The group being published.
        group: u32,
        /// The refused CPU.
        cpu: u32,
        /// `CORRAL_MAX_CPUS`.
        limit: u32,
    },

    /// A CPU that does not exist on this machine.
    #[error(
        "group {group}: CPU {cpu} is not a possible CPU of this machine (possible: {possible})"
    )]
    CpuNotPossible {
        /// The group being published.
        group: u32,
        /// The refused CPU.
        cpu: u32,
        /// The machine's possible CPUs, as the kernel lists them.
        possible: String,
    },

    /// A CPU that exists but is offline.
    #[error("group {group}: CPU {cpu} is offline (online: {online})")]
    CpuOffline {
        /// The group being published.
        group: u32,
        /// The refused CPU.
        cpu: u32,
        /// The machine's online CPUs, as the kernel lists them.
        online: String,
    },

    /// A zero time slice.
    #[error("group {group}: the time slice is 0 ns; it must be > 0")]
    ZeroSlice {
        /// The group being published.
        group: u32,
    },

    /// A mapping to a group slot that holds no group.
    #[error(
        "cgroup {cgroup}: group {group} is not published (its slot in the group table is empty)"
    )]
    GroupNotPublished {
        /// The cgroup being mapped.
        cgroup: u64,
        /// The empty group slot.
        group: u32,
    },

    /// A cgroup id no cgroup can have.
    #[error("cgroup id {cgroup} is invalid: cgroup ids start at 1")]
    InvalidCgroupId {
        /// The refused id.
        cgroup: u64,
    },

    /// Cgroup flags this layout does not define.
    #[error("cgroup {cgroup}: unknown flag bits {unknown:#x} in flags {flags:#x}")]
    UnknownCgroupFlags {
        /// The cgroup being mapped.
        cgroup: u64,
        /// The requested flags.
        flags: u32,
        /// The bits this layout does not define.
        unknown: u32,
    },

    /// The cgroup map has no room for another cgroup.
    #[error("cgroup {cgroup}: the cgroup map is full ({capacity} cgroups); remove the mappings of cgroups that are gone (`corral maps dump` lists them, `corral unmap` removes one) or keep fewer warm containers (containers.max_warm)")]
    CgroupMapFull {
        /// The cgroup that did not fit.
        cgroup: u64,
        /// The map's capacity.
        capacity: u32,
    },

    /// Maps left pinned by a build with a different layout.
    #[error(
        "{path}: pinned maps have layout {found}, this build uses layout {expected}; \
         refusing to reuse them (remove the pins under {pin_dir} to start afresh)",
        path = path.display(),
        pin_dir = pin_dir.display()
    )]
    LayoutMismatch {
        /// The pinned layout map.
        path: PathBuf,
        /// The pin directory.
        pin_dir: PathBuf,
        /// What the pinned layout entry says.
        found: String,
        /// What this build expects.
        expected: String,
    },

    /// A pinned map whose type or sizes differ from this build's definition.
    #[error(
        "{path}: pinned map has {found}, this build defines {expected}; refusing to reuse it",
        path = path.display()
    )]
    MapShapeMismatch {
        /// The pinned map.
        path: PathBuf,
        /// The pinned map's type and sizes.
        found: String,
        /// This build's type and sizes.
        expected: String,
    },

    /// The pin directory is not on a BPF filesystem.
    #[error("{path} is not on a BPF filesystem (mount bpffs, e.g. `mount -t bpf bpf /sys/fs/bpf`)", path = path.display())]
    NotBpffs {
        /// The pin directory.
        path: PathBuf,
    },

    /// A pin directory others could write or replace.
    #[error("the pin directory {path} is unsafe: {reason}; use a directory owned by root with mode 0700 (`chown root: {path} && chmod 700 {path}`), or another enforcement.pin_dir", path = path.display())]
    UnsafePinDir {
        /// The pin directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A path that is not a cgroup v2 directory.
    #[error("{path} is not a cgroup v2 directory", path = path.display())]
    NotCgroup2 {
        /// The refused path.
        path: PathBuf,
    },

    /// A BPF map operation failed.
    #[error("{op} on BPF map {map} failed")]
    Map {
        /// The operation (`update`, `lookup`, `delete`, `open pinned`, ...).
        op: &'static str,
        /// The map's name or pin path.
        map: String,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },

    /// Running the `corral_build_masks` program failed.
    #[error("running {path} (rebuild of groups {first}..{end}) failed", path = path.display(), end = first + count)]
    BuildMasks {
        /// The pinned program.
        path: PathBuf,
        /// First group rebuilt.
        first: u32,
        /// Number of groups rebuilt.
        count: u32,
        /// The system error.
        #[source]
        source: std::io::Error,
    },

    /// Running the `corral_kick_moved` program failed.
    #[error("running {path} (preempting the running tasks of remapped cgroup {cgroup}) failed", path = path.display())]
    Kick {
        /// The pinned program.
        path: PathBuf,
        /// The remapped cgroup.
        cgroup: u64,
        /// The system error.
        #[source]
        source: std::io::Error,
    },

    /// The kernel cannot run a sched_ext scheduler here.
    #[error("sched_ext is unavailable: {reason}")]
    SchedExtUnavailable {
        /// Why: no `CONFIG_SCHED_CLASS_EXT`, no BTF, not root, ...
        reason: String,
    },

    /// A stage of the scheduler's lifecycle failed.
    #[error("scheduler {stage} failed")]
    Scheduler {
        /// `open`, `configure`, `load` or `attach`.
        stage: &'static str,
        /// The underlying failure, with libbpf's context.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A system call on a thread failed.
    #[error("{call} on thread {tid} failed")]
    Thread {
        /// The call (`sched_setattr`, `getpriority`).
        call: &'static str,
        /// The thread id.
        tid: i32,
        /// The system error.
        #[source]
        source: std::io::Error,
    },

    /// A file system operation failed.
    #[error("{op} {path} failed", path = path.display())]
    Io {
        /// What was attempted (`read`, `create`, `stat`, ...).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },

    /// A kernel file whose content could not be parsed.
    #[error("{path}: cannot parse {content:?}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn map(op: &'static str, map: impl Into<String>, source: libbpf_rs::Error) -> Self {
        Error::Map {
            op,
            map: map.into(),
            source,
        }
    }

    /// True for the validation errors: the request itself was wrong and nothing was written.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::GroupOutOfRange { .. }
                | Error::EmptyCpuMask { .. }
                | Error::CpuBeyondBitmap { .. }
                | Error::CpuNotPossible { .. }
                | Error::CpuOffline { .. }
                | Error::ZeroSlice { .. }
                | Error::GroupNotPublished { .. }
                | Error::InvalidCgroupId { .. }
                | Error::UnknownCgroupFlags { .. }
        )
    }
}
