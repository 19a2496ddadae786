//! The pinned maps as one unit: create or open them under a pin directory, refuse a layout left
//! by a different build, and keep the global generation.
//!
//! Maps are created by loading the maps-only object (`maps.bpf.c`) with a pin path on each map,
//! which works on kernels without sched_ext. Before libbpf touches anything, every map already
//! pinned is checked: its type and sizes against this build's definition, and the layout entry
//! against [`LAYOUT_VERSION`] and the struct sizes. A mismatch is an error, never a silent reuse.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::bpf_intf::{
    corral_build_args, corral_consts_CORRAL_LAT_BUCKETS, corral_consts_CORRAL_LAYOUT_VERSION,
    corral_consts_CORRAL_MAX_CGROUPS, corral_consts_CORRAL_MAX_CPUS,
    corral_consts_CORRAL_MAX_GROUPS, corral_consts_CORRAL_NR_GROUP_SLOTS,
    corral_consts_CORRAL_NR_STATS, corral_group, corral_group_stats, corral_kick_args,
    corral_layout,
};
use crate::cgroup_map::CgroupMap;
use crate::error::{Error, Result};
use crate::group_table::GroupTable;
use crate::maps_skel::MapsSkelBuilder;
use crate::raw;
use crate::stats::SchedStats;

/// Where the maps are pinned unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/corral";

/// The layout version of this build (`CORRAL_LAYOUT_VERSION` in `intf.h`).
pub const LAYOUT_VERSION: u32 = corral_consts_CORRAL_LAYOUT_VERSION;

/// Pin name of the layout map.
pub const LAYOUT_MAP: &str = "corral_layout";
/// Pin name of the cgroup map.
pub const CGROUP_MAP: &str = "corral_cgroups";
/// Pin name of the group table.
pub const GROUP_MAP: &str = "corral_groups";
/// Pin name of the statistics map.
pub const STATS_MAP: &str = "corral_stats";
/// Pin name of the `corral_build_masks` program, present while a scheduler is attached.
pub const BUILD_PROG: &str = "corral_build_masks";
/// Pin name of the attached scheduler's `corral_kick_moved` program (see
/// [`CgroupMap::kick_moved`](crate::CgroupMap::kick_moved)).
pub const KICK_PROG: &str = "corral_kick_moved";

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// What this build defines for one pinned map.
struct MapShape {
    name: &'static str,
    ty: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

fn shapes() -> [MapShape; 4] {
    [
        MapShape {
            name: LAYOUT_MAP,
            ty: MapType::Array,
            key_size: 4,
            value_size: size_of::<corral_layout>() as u32,
            max_entries: 1,
        },
        MapShape {
            name: CGROUP_MAP,
            ty: MapType::Hash,
            key_size: 8,
            value_size: size_of::<crate::bpf_intf::corral_cgroup>() as u32,
            max_entries: corral_consts_CORRAL_MAX_CGROUPS,
        },
        MapShape {
            name: GROUP_MAP,
            ty: MapType::Array,
            key_size: 4,
            value_size: size_of::<corral_group>() as u32,
            max_entries: corral_consts_CORRAL_NR_GROUP_SLOTS,
        },
        MapShape {
            name: STATS_MAP,
            ty: MapType::PercpuArray,
            key_size: 4,
            value_size: size_of::<corral_group_stats>() as u32,
            max_entries: corral_consts_CORRAL_NR_STATS,
        },
    ]
}

fn describe_shape(ty: MapType, key: u32, value: u32, max: u32) -> String {
    format!("type {ty:?}, key {key} B, value {value} B, {max} entries")
}

/// The layout entry this build writes and expects (generation aside).
fn expected_layout() -> corral_layout {
    corral_layout {
        version: LAYOUT_VERSION,
        max_groups: corral_consts_CORRAL_MAX_GROUPS,
        max_cpus: corral_consts_CORRAL_MAX_CPUS,
        lat_buckets: corral_consts_CORRAL_LAT_BUCKETS,
        group_size: size_of::<corral_group>() as u32,
        stats_size: size_of::<corral_group_stats>() as u32,
        generation: 0,
    }
}

fn describe_layout(l: &corral_layout) -> String {
    format!(
        "version {} ({} groups, {} CPUs, {} latency buckets, group entry {} B, stats entry {} B)",
        l.version, l.max_groups, l.max_cpus, l.lat_buckets, l.group_size, l.stats_size
    )
}

fn same_layout(a: &corral_layout, b: &corral_layout) -> bool {
    (
        a.version,
        a.max_groups,
        a.max_cpus,
        a.lat_buckets,
        a.group_size,
        a.stats_size,
    ) == (
        b.version,
        b.max_groups,
        b.max_cpus,
        b.lat_buckets,
        b.group_size,
        b.stats_size,
    )
}

/// Result of running `corral_build_masks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildReport {
    /// Groups that now have a cpumask.
    pub built: u32,
    /// Groups that are empty (never published or deleted).
    pub cleared: u32,
}

/// Handles to the four pinned maps, shared by the typed views.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pin_dir: PathBuf,
    pub(crate) layout: MapHandle,
    pub(crate) cgroups: MapHandle,
    pub(crate) groups: MapHandle,
    pub(crate) stats: MapHandle,
    /// Serialises this process's read-modify-write of the layout entry's generation.
    gen_lock: Mutex<()>,
    /// The pinned `corral_kick_moved`, as last looked up (see `kick_moved`).
    kick: Mutex<KickPin>,
}

/// How long a lookup of the kick program's pin is trusted. A scheduler that attaches (or
/// restarts) within it is kicked through only after it: until then its running tasks move at
/// their next tick, as without a kick; a descriptor still held for a scheduler that detached
/// runs its old program, whose per-CPU records no longer change, so it kicks nothing useful
/// (and no CPU outside the possible ones). What it saves: a lookup per remap, on these
/// machines a stat of a bpffs path costs about as much as the map update itself.
const KICK_PIN_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The kick program's pin, looked up at `at`: its descriptor, or `None` when absent.
#[derive(Debug, Default)]
struct KickPin {
    fd: Option<std::os::fd::OwnedFd>,
    at: Option<std::time::Instant>,
}

impl Shared {
    pub(crate) fn read_layout(&self) -> Result<corral_layout> {
        read_layout_entry(&self.layout, &self.pin_dir.join(LAYOUT_MAP))
    }

    /// Bumps the global generation after a change, so the scheduler re-resolves cached tasks.
    pub(crate) fn bump_generation(&self) -> Result<u64> {
        let _guard = self.gen_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut layout = self.read_layout()?;
        layout.generation = layout.generation.wrapping_add(1);
        self.layout
            .update(&0u32.to_ne_bytes(), raw::bytes_of(&layout), MapFlags::ANY)
            .map_err(|e| Error::map("update", LAYOUT_MAP, e))?;
        Ok(layout.generation)
    }

    /// Runs the attached scheduler's pinned `corral_build_masks` over `first..first + count`.
    /// `Ok(None)` when no scheduler has pinned it (nothing to rebuild: a scheduler builds every
    /// group when it starts).
    pub(crate) fn rebuild_groups(&self, first: u32, count: u32) -> Result<Option<BuildReport>> {
        let path = self.pin_dir.join(BUILD_PROG);
        if !path.exists() {
            return Ok(None);
        }
        let fd = libbpf_rs::Program::fd_from_pinned_path(&path)
            .map_err(|e| Error::map("open pinned program", path.display().to_string(), e))?;
        run_build_masks(fd.as_fd(), &path, first, count).map(Some)
    }
}

impl Shared {
    /// Runs the attached scheduler's pinned `corral_kick_moved` for `cgroup`, now in `group`:
    /// the CPUs it kicked, or `None` when no scheduler has pinned it.
    pub(crate) fn kick_moved(&self, cgroup: u64, group: u32) -> Result<Option<u32>> {
        let path = self.pin_dir.join(KICK_PROG);
        let mut pin = self.kick.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if pin
            .at
            .is_none_or(|at| now.duration_since(at) >= KICK_PIN_TTL)
        {
            pin.fd = match libbpf_rs::Program::fd_from_pinned_path(&path) {
                Ok(fd) => Some(fd),
                // Detached (or an older scheduler without it): nothing to kick.
                Err(_) if !path.exists() => None,
                Err(e) => {
                    return Err(Error::map(
                        "open pinned program",
                        path.display().to_string(),
                        e,
                    ))
                }
            };
            pin.at = Some(now);
        }
        let Some(fd) = pin.fd.as_ref() else {
            return Ok(None);
        };
        let mut args = corral_kick_args {
            cgroup_id: cgroup,
            group,
            nr_kicked: 0,
        };
        test_run(fd.as_fd(), raw::bytes_of_mut(&mut args)).map_err(|source| Error::Kick {
            path: path.clone(),
            cgroup,
            source,
        })?;
        Ok(Some(args.nr_kicked))
    }
}

/// Runs a syscall program over `ctx` (its context, copied in and written back) through
/// `BPF_PROG_TEST_RUN`; a non-zero return value is its negative errno.
fn test_run(prog: BorrowedFd<'_>, ctx: &mut [u8]) -> std::io::Result<()> {
    let mut opts = libbpf_rs::libbpf_sys::bpf_test_run_opts {
        sz: size_of::<libbpf_rs::libbpf_sys::bpf_test_run_opts>() as _,
        ctx_in: ctx.as_mut_ptr().cast(),
        ctx_size_in: ctx.len() as u32,
        ..Default::default()
    };
    // SAFETY: opts points at a live, correctly sized context buffer, which the kernel copies
    // in and writes back (a syscall program's context is both input and output).
    let ret = unsafe { libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    if opts.retval != 0 {
        return Err(std::io::Error::from_raw_os_error(-(opts.retval as i32)));
    }
    Ok(())
}

/// Runs a `corral_build_masks` program through `BPF_PROG_TEST_RUN`.
pub(crate) fn run_build_masks(
    prog: BorrowedFd<'_>,
    path: &Path,
    first: u32,
    count: u32,
) -> Result<BuildReport> {
    let mut args = corral_build_args {
        first_group: first,
        nr_groups: count,
        nr_built: 0,
        nr_cleared: 0,
    };
    test_run(prog, raw::bytes_of_mut(&mut args)).map_err(|source| Error::BuildMasks {
        path: path.into(),
        first,
        count,
        source,
    })?;
    Ok(BuildReport {
        built: args.nr_built,
        cleared: args.nr_cleared,
    })
}

fn read_layout_entry(map: &MapHandle, path: &Path) -> Result<corral_layout> {
    let bytes = map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| Error::map("lookup", path.display().to_string(), e))?
        .unwrap_or_default();
    raw::read(&bytes).ok_or_else(|| Error::Parse {
        path: path.into(),
        content: format!(
            "{} bytes where a {} B layout entry was expected",
            bytes.len(),
            size_of::<corral_layout>()
        ),
    })
}

fn open_pinned(path: &Path) -> Result<MapHandle> {
    MapHandle::from_pinned_path(path)
        .map_err(|e| Error::map("open pinned", path.display().to_string(), e))
}

/// Creates the pin directory (and missing parents) with mode 0700, but only on bpffs: the
/// nearest existing ancestor is checked first, so a wrong path leaves nothing behind.
fn create_pin_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let existing = dir
        .ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("/"));
    if nix_statfs(existing)? != BPF_FS_MAGIC {
        return Err(Error::NotBpffs { path: dir.into() });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Refuses a pin directory that someone other than root (or this user) owns, or that others
/// may write: whoever can write there can replace a pin and so feed the scheduler their map.
fn check_pin_dir_owner(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let reason = if meta.file_type().is_symlink() {
        Some("it is a symbolic link".to_string())
    } else if meta.uid() != 0 && meta.uid() != me {
        Some(format!("it is owned by uid {}, not root", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "its mode {:o} lets others write it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::UnsafePinDir {
            path: dir.into(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_bpffs(dir: &Path) -> Result<()> {
    let fs = nix_statfs(dir)?;
    if fs != BPF_FS_MAGIC {
        return Err(Error::NotBpffs { path: dir.into() });
    }
    Ok(())
}

/// The file system magic of `path`.
pub(crate) fn nix_statfs(path: &Path) -> Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Parse {
        path: path.into(),
        content: "path contains a NUL byte".into(),
    })?;
    let mut buf = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is a valid C string and buf is large enough for struct statfs.
    let ret = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    if ret != 0 {
        return Err(Error::io("statfs", path, std::io::Error::last_os_error()));
    }
    // SAFETY: statfs succeeded, so it filled buf. (f_type's type differs between targets.)
    #[allow(clippy::unnecessary_cast)]
    Ok(unsafe { buf.assume_init() }.f_type as i64)
}

/// Checks every map already pinned under `dir` before anything reuses it.
fn check_existing_pins(dir: &Path) -> Result<()> {
    for shape in shapes() {
        let path = dir.join(shape.name);
        if !path.exists() {
            continue;
        }
        let map = open_pinned(&path)?;
        let found = (
            map.map_type(),
            map.key_size(),
            map.value_size(),
            map.max_entries(),
        );
        if found
            != (
                shape.ty,
                shape.key_size,
                shape.value_size,
                shape.max_entries,
            )
        {
            return Err(Error::MapShapeMismatch {
                path,
                found: describe_shape(found.0, found.1, found.2, found.3),
                expected: describe_shape(
                    shape.ty,
                    shape.key_size,
                    shape.value_size,
                    shape.max_entries,
                ),
            });
        }
        if shape.name == LAYOUT_MAP {
            let layout = read_layout_entry(&map, &path)?;
            // Version 0 is a layout map whose creator has not written it yet.
            if layout.version != 0 && !same_layout(&layout, &expected_layout()) {
                return Err(Error::LayoutMismatch {
                    path,
                    pin_dir: dir.into(),
                    found: describe_layout(&layout),
                    expected: describe_layout(&expected_layout()),
                });
            }
        }
    }
    Ok(())
}

/// Loads the maps-only object with a pin path on every map: libbpf reuses the maps already
/// pinned (checked above) and creates and pins the others.
fn create_missing(dir: &Path) -> Result<()> {
    let mut storage = MaybeUninit::uninit();
    let stage =
        |source: libbpf_rs::Error| Error::map("create and pin", dir.display().to_string(), source);
    let mut open = MapsSkelBuilder::default()
        .open(&mut storage)
        .map_err(stage)?;
    open.maps
        .corral_layout
        .set_pin_path(dir.join(LAYOUT_MAP))
        .map_err(stage)?;
    open.maps
        .corral_cgroups
        .set_pin_path(dir.join(CGROUP_MAP))
        .map_err(stage)?;
    open.maps
        .corral_groups
        .set_pin_path(dir.join(GROUP_MAP))
        .map_err(stage)?;
    open.maps
        .corral_stats
        .set_pin_path(dir.join(STATS_MAP))
        .map_err(stage)?;
    let _loaded = open.load().map_err(stage)?;
    Ok(())
}

/// The pinned maps: the cgroup map, the group table, the statistics and the layout entry.
///
/// Open it once and share it; the typed views borrow from it. All writes validate their input
/// before touching any map.
#[derive(Debug)]
pub struct PinnedMaps {
    shared: Arc<Shared>,
    cgroups: CgroupMap,
    groups: GroupTable,
    stats: SchedStats,
}

impl PinnedMaps {
    /// Opens the maps pinned under `pin_dir`, creating and pinning any that are missing
    /// (the directory too). Fails with [`Error::LayoutMismatch`] or [`Error::MapShapeMismatch`]
    /// when pins from a different layout are there; those are never reused or modified.
    pub fn open_or_create(pin_dir: impl AsRef<Path>) -> Result<PinnedMaps> {
        let dir = pin_dir.as_ref();
        create_pin_dir(dir)?;
        check_bpffs(dir)?;
        check_pin_dir_owner(dir)?;
        check_existing_pins(dir)?;
        create_missing(dir)?;
        let maps = Self::open_handles(dir)?;
        let layout = maps.shared.read_layout()?;
        if layout.version == 0 {
            let fresh = corral_layout {
                generation: 1,
                ..expected_layout()
            };
            maps.shared
                .layout
                .update(&0u32.to_ne_bytes(), raw::bytes_of(&fresh), MapFlags::ANY)
                .map_err(|e| Error::map("update", LAYOUT_MAP, e))?;
        }
        Ok(maps)
    }

    /// Opens maps that already exist under `pin_dir`, creating nothing.
    pub fn open(pin_dir: impl AsRef<Path>) -> Result<PinnedMaps> {
        let dir = pin_dir.as_ref();
        if dir.is_dir() {
            check_pin_dir_owner(dir)?;
        }
        check_existing_pins(dir)?;
        let maps = Self::open_handles(dir)?;
        let layout = maps.shared.read_layout()?;
        if !same_layout(&layout, &expected_layout()) {
            return Err(Error::LayoutMismatch {
                path: dir.join(LAYOUT_MAP),
                pin_dir: dir.into(),
                found: describe_layout(&layout),
                expected: describe_layout(&expected_layout()),
            });
        }
        Ok(maps)
    }

    /// Removes corral's pins under `pin_dir` (maps and the build program), then the directory if
    /// it is empty. The maps themselves live on while a scheduler or another holder uses them.
    pub fn remove_pins(pin_dir: impl AsRef<Path>) -> Result<()> {
        let dir = pin_dir.as_ref();
        for name in [
            LAYOUT_MAP, CGROUP_MAP, GROUP_MAP, STATS_MAP, BUILD_PROG, KICK_PROG,
        ] {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", path, e)),
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Not empty: something else is pinned there; leave it.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
            Err(e) => Err(Error::io("remove directory", dir, e)),
        }
    }

    fn open_handles(dir: &Path) -> Result<PinnedMaps> {
        let shared = Arc::new(Shared {
            pin_dir: dir.into(),
            layout: open_pinned(&dir.join(LAYOUT_MAP))?,
            cgroups: open_pinned(&dir.join(CGROUP_MAP))?,
            groups: open_pinned(&dir.join(GROUP_MAP))?,
            stats: open_pinned(&dir.join(STATS_MAP))?,
            gen_lock: Mutex::new(()),
            kick: Mutex::new(KickPin::default()),
        });
        Ok(PinnedMaps {
            cgroups: CgroupMap::new(shared.clone()),
            groups: GroupTable::new(shared.clone()),
            stats: SchedStats::new(shared.clone()),
            shared,
        })
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.shared.pin_dir
    }

    /// The cgroup map: cgroup id → group.
    pub fn cgroups(&self) -> &CgroupMap {
        &self.cgroups
    }

    /// The group table: group id → CPUs and settings.
    pub fn groups(&self) -> &GroupTable {
        &self.groups
    }

    /// The per-CPU, per-group statistics.
    pub fn stats(&self) -> &SchedStats {
        &self.stats
    }

    /// The global generation, bumped after every change to the cgroup map or the group table.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.shared.read_layout()?.generation)
    }

    /// The layout version recorded in the pinned layout entry.
    pub fn layout_version(&self) -> Result<u32> {
        Ok(self.shared.read_layout()?.version)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
