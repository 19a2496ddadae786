//! The scheduler's lifecycle: open → configure → load → attach, detach on drop, and the exit
//! information the kernel hands back when the scheduler stops (error, stall, unregistration).
//!
//! The scheduler does not create its own copies of the shared maps: it opens (or creates) the
//! pinned maps first, validates their layout, and hands their file descriptors to libbpf, so it
//! works on exactly the maps the control plane writes. While attached it pins its
//! `corral_build_masks` program next to the maps, so any process holding the pins can have a
//! new group layout turned into cpumasks.

use std::fmt;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use libbpf_rs::{Link, OpenObject};
use scx_utils::{scx_ops_attach, scx_ops_load, scx_ops_open};

use crate::bpf_intf::{
    corral_consts_CORRAL_NR_GROUP_SLOTS, corral_mode_CORRAL_MODE_FULL,
    corral_mode_CORRAL_MODE_PARTIAL,
};
use crate::bpf_skel::{BpfSkel, BpfSkelBuilder, OpenBpfSkel};
use crate::error::{Error, Result};
use crate::joiners::JoinerWatch;
use crate::pinned::{
    run_build_masks, BuildReport, PinnedMaps, BUILD_PROG, DEFAULT_PIN_DIR, KICK_PROG,
};

const SCHED_EXT_DIR: &str = "/sys/kernel/sched_ext";

/// `SCX_OPS_SWITCH_PARTIAL` (the kernel's `enum scx_ops_flags`).
const SCX_OPS_SWITCH_PARTIAL: u64 = 1 << 3;

/// How often [`Scheduler::wait_for_exit`] looks at the exit information.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// Which tasks the scheduler takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedMode {
    /// Every task on the machine; tasks of unmapped cgroups belong to the host group. A task is
    /// placed by its cgroup at every enqueue, whenever it joined it.
    #[default]
    Full,
    /// Only `SCHED_EXT` tasks (`SCX_OPS_SWITCH_PARTIAL`); the fair class outranks them. The
    /// control plane switches mapped cgroups' threads, and the scheduler reports tasks that join
    /// a mapped cgroup later, which [`Scheduler`] switches.
    Partial,
}

impl SchedMode {
    fn to_raw(self) -> u32 {
        match self {
            SchedMode::Full => corral_mode_CORRAL_MODE_FULL,
            SchedMode::Partial => corral_mode_CORRAL_MODE_PARTIAL,
        }
    }
}

impl fmt::Display for SchedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchedMode::Full => "full",
            SchedMode::Partial => "partial",
        })
    }
}

/// Settings applied between open and load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Where the maps are pinned (created there if missing).
    pub pin_dir: PathBuf,
    /// Full switch (default) or partial.
    pub mode: SchedMode,
    /// Time slice of host-group tasks when the host slot gives none, in ns.
    pub host_slice_ns: u64,
    /// On a CPU shared by a group and the host group (and for a CPU's affinity overrides):
    /// once a task waited this long, the CPU serves it before its groups, in ns.
    pub host_starve_ns: u64,
    /// A task left this long in a queue that no CPU it may use serves (after a layout change
    /// or hotplug) is run by any CPU it may use, in ns. Must stay well below the kernel's 10 s
    /// watchdog.
    pub rescue_after_ns: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            mode: SchedMode::Full,
            host_slice_ns: 5_000_000,
            host_starve_ns: 20_000_000,
            rescue_after_ns: 1_000_000_000,
        }
    }
}

/// Why a sched_ext scheduler stopped (the kernel's `enum scx_exit_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Done (`SCX_EXIT_DONE`).
    Done,
    /// Unregistered from user space, e.g. detached (`SCX_EXIT_UNREG`).
    Unregistered,
    /// Unregistered by the BPF program (`SCX_EXIT_UNREG_BPF`).
    UnregisteredByBpf,
    /// Unregistered by the kernel (`SCX_EXIT_UNREG_KERN`).
    UnregisteredByKernel,
    /// Disabled by sysrq-S (`SCX_EXIT_SYSRQ`).
    SysRq,
    /// A runtime error the kernel detected (`SCX_EXIT_ERROR`).
    Error,
    /// `scx_bpf_error()` called by the scheduler (`SCX_EXIT_ERROR_BPF`).
    ErrorBpf,
    /// The watchdog found a runnable task stalled (`SCX_EXIT_ERROR_STALL`).
    ErrorStall,
    /// A kind this build does not know.
    Other(i32),
}

impl ExitKind {
    /// The kind for the kernel's raw value.
    pub fn from_raw(kind: i32) -> ExitKind {
        use scx_utils::ScxExitKind as K;
        match kind {
            k if k == K::Done as i32 => ExitKind::Done,
            k if k == K::Unreg as i32 => ExitKind::Unregistered,
            k if k == K::UnregBPF as i32 => ExitKind::UnregisteredByBpf,
            k if k == K::UnregKern as i32 => ExitKind::UnregisteredByKernel,
            k if k == K::SysRq as i32 => ExitKind::SysRq,
            k if k == K::Error as i32 => ExitKind::Error,
            k if k == K::ErrorBPF as i32 => ExitKind::ErrorBpf,
            k if k == K::ErrorStall as i32 => ExitKind::ErrorStall,
            k => ExitKind::Other(k),
        }
    }

    /// Whether the scheduler stopped because something went wrong (not an orderly unregister).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            ExitKind::Error | ExitKind::ErrorBpf | ExitKind::ErrorStall | ExitKind::Other(_)
        )
    }
}

/// What the kernel reported when the scheduler stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Why it stopped.
    pub kind: ExitKind,
    /// The kernel's one-line reason, e.g. `scx_bpf_error`.
    pub reason: String,
    /// The detail: for `scx_bpf_error`, the scheduler's formatted message.
    pub message: String,
    /// The exit code, for unregistrations that carry one.
    pub exit_code: i64,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.reason)?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

/// The state in `/sys/kernel/sched_ext/state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedExtState {
    /// No scheduler attached.
    Disabled,
    /// A scheduler is being attached.
    Enabling,
    /// A scheduler is attached.
    Enabled,
    /// A scheduler is being detached.
    Disabling,
    /// Something else.
    Other(String),
}

/// Reads `/sys/kernel/sched_ext/state`.
pub fn sched_ext_state() -> Result<SchedExtState> {
    let path = Path::new(SCHED_EXT_DIR).join("state");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    Ok(match text.trim() {
        "disabled" => SchedExtState::Disabled,
        "enabling" => SchedExtState::Enabling,
        "enabled" => SchedExtState::Enabled,
        "disabling" => SchedExtState::Disabling,
        other => SchedExtState::Other(other.into()),
    })
}

/// Checks that this process can run a sched_ext scheduler on this kernel, and says why not.
pub fn check_sched_ext_support() -> Result<()> {
    if !Path::new(SCHED_EXT_DIR).exists() {
        return Err(Error::SchedExtUnavailable {
            reason: format!("{SCHED_EXT_DIR} is missing: the kernel lacks CONFIG_SCHED_CLASS_EXT"),
        });
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Error::SchedExtUnavailable {
            reason: "/sys/kernel/btf/vmlinux is missing: the kernel has no BTF".into(),
        });
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::SchedExtUnavailable {
            reason: "not running as root (loading a scheduler needs CAP_SYS_ADMIN and CAP_BPF)"
                .into(),
        });
    }
    Ok(())
}

fn stage(stage: &'static str) -> impl FnOnce(anyhow::Error) -> Error {
    move |e| Error::Scheduler {
        stage,
        source: e.into(),
    }
}

fn libbpf_stage(stage: &'static str) -> impl Fn(libbpf_rs::Error) -> Error {
    move |e| Error::Scheduler {
        stage,
        source: Box::new(e),
    }
}

/// An attached corral scheduler. Dropping it detaches it.
///
/// ```no_run
/// use corral_bpf::{Scheduler, SchedulerConfig};
/// let sched = Scheduler::start(&SchedulerConfig::default())?;
/// // ... the control plane writes sched.maps() or its own PinnedMaps ...
/// if let Some(exit) = sched.exit_info() {
///     eprintln!("scheduler stopped: {exit}");
/// }
/// # Ok::<(), corral_bpf::Error>(())
/// ```
pub struct Scheduler {
    /// The struct_ops link; dropping it detaches the scheduler.
    link: Option<Link>,
    /// The loaded skeleton; borrows `storage`, so it is dropped first (see `Drop`).
    skel: ManuallyDrop<BpfSkel<'static>>,
    /// Heap storage of libbpf's object, freed in `Drop` after `skel`.
    storage: NonNull<MaybeUninit<OpenObject>>,
    maps: PinnedMaps,
    prog_pin: PathBuf,
    /// Where `corral_kick_moved` is pinned, beside the mask builder.
    kick_pin: PathBuf,
    /// Whether `prog_pin` and `kick_pin` are this scheduler's pins (never remove another
    /// instance's).
    prog_pinned: bool,
    mode: SchedMode,
    /// Partial mode: switches tasks that join a mapped cgroup to `SCHED_EXT`.
    joiners: Option<JoinerWatch>,
}

// SAFETY: the libbpf object, its maps and programs have no thread affinity; Scheduler hands out
// no shared references to them across threads (it is not Sync), so moving it is sound.
unsafe impl Send for Scheduler {}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("attached", &self.link.is_some())
            .field("pin_dir", &self.maps.pin_dir())
            .field("exit", &self.exit_info())
            .finish()
    }
}

impl Scheduler {
    /// Opens, configures, loads and attaches the scheduler on the maps pinned under
    /// `config.pin_dir` (created if missing).
    pub fn start(config: &SchedulerConfig) -> Result<Scheduler> {
        route_libbpf_messages();
        check_sched_ext_support()?;
        let maps = PinnedMaps::open_or_create(&config.pin_dir)?;

        let storage = NonNull::from(Box::leak(Box::new(MaybeUninit::<OpenObject>::uninit())));
        // SAFETY: storage is a fresh heap allocation that nothing else references; it is freed
        // only after every borrow of it (the skeleton) is gone: below on failure, in Drop after.
        let storage_ref: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *storage.as_ptr() };
        let skel = Self::open(storage_ref)
            .and_then(|open| Self::configure(open, config, &maps))
            .and_then(Self::load);
        let skel = match skel {
            Ok(skel) => skel,
            Err(e) => {
                // SAFETY: the failed skeleton was dropped inside the chain above.
                drop(unsafe { Box::from_raw(storage.as_ptr()) });
                return Err(e);
            }
        };
        let mut sched = Scheduler {
            link: None,
            skel: ManuallyDrop::new(skel),
            storage,
            prog_pin: config.pin_dir.join(BUILD_PROG),
            kick_pin: config.pin_dir.join(KICK_PROG),
            prog_pinned: false,
            maps,
            mode: config.mode,
            joiners: None,
        };
        sched.attach()?;
        if config.mode == SchedMode::Partial {
            sched.joiners = Some(JoinerWatch::start(&sched.skel.maps.corral_joiners)?);
        }
        Ok(sched)
    }

    fn open(storage: &'static mut MaybeUninit<OpenObject>) -> Result<OpenBpfSkel<'static>> {
        let builder = BpfSkelBuilder::default();
        scx_ops_open!(
            builder,
            storage,
            corral_ops,
            None::<libbpf_rs::libbpf_sys::bpf_object_open_opts>
        )
        .map_err(stage("open"))
    }

    fn configure(
        mut open: OpenBpfSkel<'static>,
        config: &SchedulerConfig,
        maps: &PinnedMaps,
    ) -> Result<OpenBpfSkel<'static>> {
        let cpus = libbpf_rs::num_possible_cpus().map_err(libbpf_stage("configure"))?;
        let rodata = open
            .maps
            .rodata_data
            .as_mut()
            .ok_or_else(|| Error::Scheduler {
                stage: "configure",
                source: "the skeleton has no .rodata".into(),
            })?;
        rodata.mode = config.mode.to_raw();
        rodata.host_slice_ns = config.host_slice_ns;
        rodata.host_starve_ns = config.host_starve_ns;
        rodata.rescue_after_ns = config.rescue_after_ns;
        rodata.nr_possible_cpus = cpus as u32;
        let partial = config.mode == SchedMode::Partial;
        if partial {
            open.struct_ops.corral_ops_mut().flags |= SCX_OPS_SWITCH_PARTIAL;
        }
        // The joiner report serves partial mode only; full switch places joiners by itself.
        open.progs.corral_cgroup_attach.set_autoload(partial);

        let shared = maps.shared();
        let reuse = libbpf_stage("configure");
        open.maps
            .corral_layout
            .reuse_fd(shared.layout.as_fd())
            .map_err(&reuse)?;
        open.maps
            .corral_cgroups
            .reuse_fd(shared.cgroups.as_fd())
            .map_err(&reuse)?;
        open.maps
            .corral_groups
            .reuse_fd(shared.groups.as_fd())
            .map_err(&reuse)?;
        open.maps
            .corral_stats
            .reuse_fd(shared.stats.as_fd())
            .map_err(&reuse)?;
        Ok(open)
    }

    fn load(mut open: OpenBpfSkel<'static>) -> Result<BpfSkel<'static>> {
        scx_ops_load!(open, corral_ops, uei).map_err(stage("load"))
    }

    fn attach(&mut self) -> Result<()> {
        let link = scx_ops_attach!(self.skel, corral_ops).map_err(stage("attach"))?;
        self.link = Some(link);

        // Pin the mask builder so that any holder of the pins can apply a new layout, then run
        // it once in case a group was published between ops.init and the pin; and the kick, so
        // that a remap from any process moves running tasks at once.
        for pin in [&self.prog_pin, &self.kick_pin] {
            match std::fs::remove_file(pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove stale pin", pin, e)),
            }
        }
        self.prog_pinned = true;
        self.skel
            .progs
            .corral_build_masks
            .pin(&self.prog_pin)
            .map_err(libbpf_stage("attach"))?;
        self.skel
            .progs
            .corral_kick_moved
            .pin(&self.kick_pin)
            .map_err(libbpf_stage("attach"))?;
        self.rebuild_groups()?;
        Ok(())
    }

    /// The pinned maps this scheduler runs on.
    pub fn maps(&self) -> &PinnedMaps {
        &self.maps
    }

    /// The mode it was loaded in.
    pub fn mode(&self) -> SchedMode {
        self.mode
    }

    /// Partial mode: tasks that joined a mapped cgroup and were switched to `SCHED_EXT` so far.
    pub fn joiners_switched(&self) -> u64 {
        self.joiners.as_ref().map_or(0, JoinerWatch::switched)
    }

    /// CPU hotplug events (online and offline) the scheduler went through while attached.
    pub fn hotplug_events(&self) -> u64 {
        self.skel
            .maps
            .bss_data
            .as_ref()
            // SAFETY: the mmap'ed .bss the BPF program updates atomically; a volatile read.
            .map_or(0, |bss| unsafe {
                std::ptr::read_volatile(&bss.nr_hotplug_events)
            })
    }

    /// Rebuilds every group's cpumask from the group table (what a publish does for one group).
    pub fn rebuild_groups(&self) -> Result<BuildReport> {
        let prog = &self.skel.progs.corral_build_masks;
        run_build_masks(
            prog.as_fd(),
            &self.prog_pin,
            0,
            corral_consts_CORRAL_NR_GROUP_SLOTS,
        )
    }

    /// The exit information, once the kernel has stopped the scheduler; `None` while it runs.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        let data = self.skel.maps.data_data.as_ref()?;
        let uei = &data.uei;
        // SAFETY: the kernel writes uei from BPF (ops.exit) through the mmap'ed .data; kind is
        // written last, with a barrier, so reading it volatile first and the rest after is sound.
        let kind = unsafe { std::ptr::read_volatile(&uei.kind) };
        if kind == 0 {
            return None;
        }
        let text = |chars: &[i8]| {
            let bytes: Vec<u8> = chars
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Some(ExitInfo {
            kind: ExitKind::from_raw(kind),
            reason: text(&uei.reason),
            message: text(&uei.msg),
            exit_code: uei.exit_code,
        })
    }

    /// Waits up to `timeout` for the scheduler to stop and returns its exit information, or
    /// `None` if it is still running.
    pub fn wait_for_exit(&self, timeout: Duration) -> Option<ExitInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exit_info() {
                return Some(exit);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(EXIT_POLL.min(deadline - now));
        }
    }

    /// Debug knob: makes the scheduler call `scx_bpf_error()` at its next dispatch or tick, so
    /// the kernel disables it. For failure tests; there is no way back but a new `start`.
    pub fn force_error(&mut self) {
        if let Some(bss) = self.skel.maps.bss_data.as_mut() {
            // SAFETY: bss is the mmap'ed .bss the BPF program reads; a volatile store makes the
            // write happen rather than being optimised away.
            unsafe { std::ptr::write_volatile(&mut bss.debug_force_error, 1) };
        }
    }

    /// Debug knob: makes CPUs outside `group` run its queued tasks as if it lent them, without
    /// counting them as borrowed, so that the scheduler's violation count moves on purpose
    /// (`None` turns it off). For the test that proves violations are counted.
    pub fn set_stray_group(&mut self, group: Option<u32>) {
        if let Some(bss) = self.skel.maps.bss_data.as_mut() {
            let value = group.map_or(0, |g| g + 1);
            // SAFETY: as in force_error.
            unsafe { std::ptr::write_volatile(&mut bss.debug_stray_group, value) };
        }
    }

    /// Detaches the scheduler now and returns the exit information the kernel recorded.
    pub fn detach(&mut self) -> Option<ExitInfo> {
        self.detach_inner();
        self.exit_info()
    }

    fn detach_inner(&mut self) {
        self.joiners = None;
        if let Some(link) = self.link.take() {
            drop(link);
        }
        if std::mem::take(&mut self.prog_pinned) {
            let _ = std::fs::remove_file(&self.prog_pin);
            let _ = std::fs::remove_file(&self.kick_pin);
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.detach_inner();
        // SAFETY: skel is dropped exactly once, here, and before the storage it borrows.
        unsafe { ManuallyDrop::drop(&mut self.skel) };
        // SAFETY: storage came from Box::leak in start and nothing borrows it any more.
        drop(unsafe { Box::from_raw(self.storage.as_ptr()) });
    }
}

/// Sends libbpf's messages to `tracing` instead of raw stderr, once per process.
///
/// Two warnings are expected on every load and go to debug: the scx headers declare
/// `sched_ext_ops` members newer than some kernels, which libbpf skips ("member ... not found in
/// kernel, skipping it as it's set to zero"); and the skeleton's struct_ops map has no link
/// slot ("skeleton link is uninitialized") because attaching goes through `attach_struct_ops`.
/// Every other warning stays a warning.
fn route_libbpf_messages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        fn forward(level: libbpf_rs::PrintLevel, msg: String) {
            let msg = msg.trim_end();
            match level {
                libbpf_rs::PrintLevel::Warn
                    if !msg.contains("not found in kernel, skipping it")
                        && !msg.contains("skeleton link is uninitialized") =>
                {
                    tracing::warn!(target: "libbpf", "{msg}")
                }
                libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
                _ => tracing::debug!(target: "libbpf", "{msg}"),
            }
        }
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, forward)));
    });
}
