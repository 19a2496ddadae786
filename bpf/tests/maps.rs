//! Host tests of the pinned maps on real BPF maps (run as root with bpffs at /sys/fs/bpf; the
//! host needs no sched_ext): creation and reuse of the pins, the layout guard, and that every
//! invalid value is refused before any map is written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use corral_bpf::bpf_intf::{corral_consts_CORRAL_MAX_GROUPS, corral_layout};
use corral_bpf::cpus::{online_cpus, possible_cpus};
use corral_bpf::{
    cgroup_id_of, CgroupEntry, CgroupFlags, Error, GroupOrder, GroupSpec, PinnedMaps,
    PublishedGroup, LAYOUT_VERSION, MAX_CPUS, MAX_GROUPS,
};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

/// A pin directory of its own under /sys/fs/bpf, removed (with its pins) on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(test: &str) -> PinDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/corral-test-{}-{n}-{test}",
            std::process::id()
        ));
        let _ = PinnedMaps::remove_pins(&dir);
        PinDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Everything a write could change, to compare before and after a refused write.
#[derive(Debug, PartialEq)]
struct Snapshot {
    generation: u64,
    groups: Vec<(u32, PublishedGroup)>,
    cgroups: Vec<(u64, CgroupEntry)>,
    raw_groups: Vec<Vec<u8>>,
}

fn snapshot(maps: &PinnedMaps) -> Snapshot {
    let raw = MapHandle::from_pinned_path(maps.pin_dir().join("corral_groups")).unwrap();
    let raw_groups = (0..corral_consts_CORRAL_MAX_GROUPS)
        .map(|g| {
            raw.lookup(&g.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .unwrap()
        })
        .collect();
    Snapshot {
        generation: maps.generation().unwrap(),
        groups: maps.groups().entries().unwrap(),
        cgroups: maps.cgroups().entries().unwrap(),
        raw_groups,
    }
}

fn two_online_cpus() -> Vec<u32> {
    let online = online_cpus().unwrap();
    online.cpus.iter().copied().take(2).collect()
}

/// Creating the maps pins all four under the directory with this build's layout version, and
/// starts the global generation at 1.
#[test]
fn open_or_create_pins_every_map_with_the_layout_version() {
    let dir = PinDir::new("create");
    let maps = PinnedMaps::open_or_create(dir.path()).expect("create maps");
    for name in [
        "corral_layout",
        "corral_cgroups",
        "corral_groups",
        "corral_stats",
    ] {
        assert!(dir.path().join(name).exists(), "{name} is not pinned");
    }
    assert_eq!(maps.layout_version().unwrap(), LAYOUT_VERSION);
    assert_eq!(maps.generation().unwrap(), 1);
    assert_eq!(maps.groups().capacity(), MAX_GROUPS);
    assert!(maps.groups().entries().unwrap().is_empty());
    assert!(maps.cgroups().entries().unwrap().is_empty());
}

/// Reopening reuses the pinned maps (same kernel map ids, same contents) instead of creating
/// new ones, so the control plane's state survives its own restart and the scheduler's.
#[test]
fn pins_are_reused_across_reopen() {
    let dir = PinDir::new("reuse");
    let cpus = two_online_cpus();
    let id_of = |name: &str| {
        MapHandle::from_pinned_path(dir.path().join(name))
            .unwrap()
            .info()
            .unwrap()
            .info
            .id
    };
    let (ids, generation) = {
        let maps = PinnedMaps::open_or_create(dir.path()).unwrap();
        maps.groups()
            .publish(3, &GroupSpec::new(cpus.clone(), 2_000_000))
            .unwrap();
        maps.cgroups()
            .insert(4242, 3, CgroupFlags::NO_INHERIT)
            .unwrap();
        let ids: Vec<u32> = [
            "corral_layout",
            "corral_cgroups",
            "corral_groups",
            "corral_stats",
        ]
        .iter()
        .map(|n| id_of(n))
        .collect();
        (ids, maps.generation().unwrap())
    };
    let maps = PinnedMaps::open_or_create(dir.path()).unwrap();
    let again: Vec<u32> = [
        "corral_layout",
        "corral_cgroups",
        "corral_groups",
        "corral_stats",
    ]
    .iter()
    .map(|n| id_of(n))
    .collect();
    assert_eq!(ids, again, "reopening created new maps");
    assert_eq!(maps.generation().unwrap(), generation);
    let group = maps.groups().get(3).unwrap().expect("group 3 survives");
    assert_eq!(group.spec.cpus, cpus);
    assert_eq!(group.spec.slice_ns, 2_000_000);
    assert_eq!(
        maps.cgroups().get(4242).unwrap(),
        Some(CgroupEntry {
            group: 3,
            flags: CgroupFlags::NO_INHERIT
        })
    );
    // PinnedMaps::open (no creation) sees the same.
    let opened = PinnedMaps::open(dir.path()).unwrap();
    assert_eq!(opened.cgroups().entries().unwrap().len(), 1);
}

/// A publish writes the bitmap and settings, bumps the slot's and the global generation, and a
/// delete empties the slot.
#[test]
fn publish_and_delete_round_trip() {
    let dir = PinDir::new("publish");
    let maps = PinnedMaps::open_or_create(dir.path()).unwrap();
    let cpus = two_online_cpus();
    let spec = GroupSpec {
        cpus: cpus.iter().rev().copied().chain([cpus[0]]).collect(),
        slice_ns: 750_000,
        order: GroupOrder::Vtime,
        borrow: true,
    };
    let g0 = maps.generation().unwrap();
    let p = maps.groups().publish(MAX_GROUPS - 1, &spec).unwrap();
    assert_eq!(p.group_generation, 1);
    assert_eq!(p.generation, g0 + 1);
    assert_eq!(p.rebuilt, None, "no scheduler is attached on the host");
    let got = maps.groups().get(MAX_GROUPS - 1).unwrap().unwrap();
    assert_eq!(
        got.spec.cpus, cpus,
        "CPUs come back sorted and deduplicated"
    );
    assert_eq!(
        (got.spec.slice_ns, got.spec.order, got.spec.borrow),
        (750_000, GroupOrder::Vtime, true)
    );
    let p = maps
        .groups()
        .publish(MAX_GROUPS - 1, &GroupSpec::new([cpus[0]], 1))
        .unwrap();
    assert_eq!(p.group_generation, 2);
    let d = maps.groups().delete(MAX_GROUPS - 1).unwrap();
    assert_eq!(d.group_generation, 3);
    assert_eq!(maps.groups().get(MAX_GROUPS - 1).unwrap(), None);
    assert_eq!(maps.generation().unwrap(), g0 + 3);
}

/// Every invalid group value is refused with an error naming it, and no map changes: group id
/// out of range, empty cpumask, CPU beyond the bitmap, CPU not possible on this machine, CPU
/// offline (when the machine has one), zero slice.
#[test]
fn invalid_group_values_are_rejected_before_any_write() {
    let dir = PinDir::new("badgroup");
    let maps = PinnedMaps::open_or_create(dir.path()).unwrap();
    let cpus = two_online_cpus();
    maps.groups()
        .publish(1, &GroupSpec::new(cpus.clone(), 1_000_000))
        .unwrap();
    maps.cgroups().insert(77, 1, CgroupFlags::NONE).unwrap();
    let before = snapshot(&maps);

    let possible = possible_cpus().unwrap();
    let not_possible = possible.cpus.iter().max().unwrap() + 1;
    let mut cases: Vec<(u32, GroupSpec, &str)> = vec![
        (
            MAX_GROUPS,
            GroupSpec::new(cpus.clone(), 1_000_000),
            "group id 64 is out of range",
        ),
        (
            1,
            GroupSpec::new([], 1_000_000),
            "group 1: the cpumask is empty",
        ),
        (
            1,
            GroupSpec::new([cpus[0], MAX_CPUS], 1_000_000),
            "CPU 512 is beyond",
        ),
        (
            1,
            GroupSpec::new(cpus.clone(), 0),
            "group 1: the time slice is 0 ns",
        ),
    ];
    if not_possible < MAX_CPUS {
        cases.push((
            1,
            GroupSpec::new([cpus[0], not_possible], 1_000_000),
            "is not a possible CPU",
        ));
    }
    let online = online_cpus().unwrap();
    if let Some(&offline) = possible.cpus.iter().find(|c| !online.contains(**c)) {
        cases.push((1, GroupSpec::new([offline], 1_000_000), "is offline"));
    }
    for (group, spec, expect) in cases {
        let err = maps.groups().publish(group, &spec).expect_err(expect);
        assert!(err.is_invalid_input(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(expect),
            "error {text:?} does not say {expect:?}"
        );
        assert_eq!(
            snapshot(&maps),
            before,
            "a refused publish ({expect}) changed the maps"
        );
    }
    let err = maps.groups().delete(MAX_GROUPS + 5).unwrap_err();
    assert!(
        matches!(err, Error::GroupOutOfRange { group: 69, .. }),
        "{err:?}"
    );
    assert_eq!(snapshot(&maps), before);
}

/// Every invalid cgroup mapping is refused with an error naming the value, and no map changes:
/// cgroup id 0, group id out of range, a group slot that holds no group, unknown flag bits.
#[test]
fn invalid_cgroup_values_are_rejected_before_any_write() {
    let dir = PinDir::new("badcgroup");
    let maps = PinnedMaps::open_or_create(dir.path()).unwrap();
    maps.groups()
        .publish(0, &GroupSpec::new(two_online_cpus(), 1_000_000))
        .unwrap();
    maps.cgroups().insert(10, 0, CgroupFlags::NONE).unwrap();
    let before = snapshot(&maps);

    let cases: Vec<(u64, u32, CgroupFlags, &str)> = vec![
        (0, 0, CgroupFlags::NONE, "cgroup id 0 is invalid"),
        (
            10,
            MAX_GROUPS,
            CgroupFlags::NONE,
            "group id 64 is out of range",
        ),
        (
            11,
            5,
            CgroupFlags::NONE,
            "cgroup 11: group 5 is not published",
        ),
        (
            10,
            0,
            CgroupFlags::from_bits_retain(0x8),
            "unknown flag bits 0x8",
        ),
    ];
    for (cgroup, group, flags, expect) in cases {
        let err = maps
            .cgroups()
            .insert(cgroup, group, flags)
            .expect_err(expect);
        assert!(err.is_invalid_input(), "{err:?}");
        assert!(
            err.to_string().contains(expect),
            "error {err} does not say {expect:?}"
        );
        assert_eq!(
            snapshot(&maps),
            before,
            "a refused insert ({expect}) changed the maps"
        );
    }
    assert!(
        !maps.cgroups().remove(999).unwrap(),
        "removing an unmapped cgroup reports false"
    );
    assert_eq!(snapshot(&maps), before);
}

/// Maps left pinned by a build with another layout are refused, with an error naming both
/// layouts, and left exactly as they were.
#[test]
fn layout_version_mismatch_is_refused() {
    let dir = PinDir::new("layout");
    {
        let maps = PinnedMaps::open_or_create(dir.path()).unwrap();
        maps.groups()
            .publish(2, &GroupSpec::new(two_online_cpus(), 1_000_000))
            .unwrap();
    }
    let layout_map = MapHandle::from_pinned_path(dir.path().join("corral_layout")).unwrap();
    let bytes = layout_map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .unwrap();
    let mut old: corral_layout = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    old.version = LAYOUT_VERSION + 41;
    // SAFETY: corral_layout is plain integers without padding.
    let old_bytes = unsafe {
        std::slice::from_raw_parts(
            (&old as *const corral_layout).cast::<u8>(),
            size_of::<corral_layout>(),
        )
    }
    .to_vec();
    layout_map
        .update(&0u32.to_ne_bytes(), &old_bytes, MapFlags::ANY)
        .unwrap();
    let groups_before = MapHandle::from_pinned_path(dir.path().join("corral_groups"))
        .unwrap()
        .lookup(&2u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap();

    for result in [
        PinnedMaps::open_or_create(dir.path()),
        PinnedMaps::open(dir.path()),
    ] {
        let err = result.expect_err("a different layout must be refused");
        assert!(matches!(err, Error::LayoutMismatch { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("layout version {}", LAYOUT_VERSION + 41)),
            "{text}"
        );
        assert!(
            text.contains(&format!("layout version {LAYOUT_VERSION}")),
            "{text}"
        );
    }
    let after = layout_map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .unwrap();
    assert_eq!(after, old_bytes, "the refused layout entry was modified");
    let groups_after = MapHandle::from_pinned_path(dir.path().join("corral_groups"))
        .unwrap()
        .lookup(&2u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap();
    assert_eq!(groups_before, groups_after);
}

/// A map pinned under one of corral's names with another shape (here a group table with a
/// different value size) is refused before anything is created next to it.
#[test]
fn foreign_map_shape_is_refused() {
    let dir = PinDir::new("shape");
    std::fs::create_dir_all(dir.path()).unwrap();
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut foreign =
        MapHandle::create(MapType::Array, Some("corral_groups"), 4, 64, 64, &opts).unwrap();
    foreign.pin(dir.path().join("corral_groups")).unwrap();
    let err = PinnedMaps::open_or_create(dir.path()).expect_err("a foreign shape must be refused");
    assert!(matches!(err, Error::MapShapeMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("value 64 B"), "{err}");
    assert!(
        !dir.path().join("corral_layout").exists(),
        "maps were created next to a foreign pin"
    );
}

/// A pin directory outside bpffs is refused with a hint to mount it, and a missing one is
/// refused before anything is created.
#[test]
fn pin_dir_outside_bpffs_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = PinnedMaps::open_or_create(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::NotBpffs { .. }), "{err:?}");
    let missing = tmp.path().join("a/b");
    let err = PinnedMaps::open_or_create(&missing).unwrap_err();
    assert!(matches!(err, Error::NotBpffs { .. }), "{err:?}");
    assert!(
        !tmp.path().join("a").exists(),
        "created a directory outside bpffs"
    );
}

/// corral creates its pin directory with mode 0700, and refuses one that others may write
/// (whoever writes there can replace a pin), naming the path and the fix, before pinning
/// anything in it.
#[test]
fn pin_dir_is_created_private_and_an_open_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = PinDir::new("mode");
    drop(PinnedMaps::open_or_create(dir.path()).unwrap());
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "created with mode {mode:o}");

    let open = PinDir::new("open");
    std::fs::create_dir(open.path()).unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = PinnedMaps::open_or_create(open.path()).unwrap_err();
    assert!(matches!(err, Error::UnsafePinDir { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("777") && text.contains("chmod 700"), "{text}");
    assert_eq!(
        std::fs::read_dir(open.path()).unwrap().count(),
        0,
        "pinned into it"
    );
    let err = PinnedMaps::open(open.path()).unwrap_err();
    assert!(matches!(err, Error::UnsafePinDir { .. }), "{err:?}");
}

/// The statistics reader sums the per-CPU copies, and reset zeroes them.
#[test]
fn stats_are_summed_over_cpus() {
    let dir = PinDir::new("stats");
    let maps = PinnedMaps::open_or_create(dir.path()).unwrap();
    let raw = MapHandle::from_pinned_path(dir.path().join("corral_stats")).unwrap();
    let ncpu = libbpf_rs::num_possible_cpus().unwrap();
    let size = raw.value_size() as usize;
    let values: Vec<Vec<u8>> = (0..ncpu)
        .map(|cpu| {
            let mut v = vec![0u8; size];
            v[0..8].copy_from_slice(&(cpu as u64 + 1).to_ne_bytes()); // enqueues
            v[24..32].copy_from_slice(&2u64.to_ne_bytes()); // runs
            v[56..64].copy_from_slice(&0u64.to_ne_bytes()); // violations
                                                            // lat_hist follows 13 u64 counters.
            v[104 + 8 * 5..104 + 8 * 6].copy_from_slice(&2u64.to_ne_bytes()); // lat_hist[5]
            v
        })
        .collect();
    raw.update_percpu(&7u32.to_ne_bytes(), &values, MapFlags::ANY)
        .unwrap();
    let s = maps.stats().read(7).unwrap();
    assert_eq!(s.enqueues, (1..=ncpu as u64).sum::<u64>());
    assert_eq!(s.runs, 2 * ncpu as u64);
    assert_eq!(s.lat_hist[5], 2 * ncpu as u64);
    assert_eq!(s.hist_total(), s.runs);
    assert_eq!(s.latency_quantile_upper_ns(0.5), Some(63));
    assert_eq!(maps.stats().read_per_cpu(7).unwrap().len(), ncpu);
    assert_eq!(maps.stats().read(6).unwrap().runs, 0);
    assert!(matches!(
        maps.stats().read(MAX_GROUPS),
        Err(Error::GroupOutOfRange { group: 64, .. })
    ));
    maps.stats().reset(7).unwrap();
    assert_eq!(maps.stats().read(7).unwrap().runs, 0);
}

/// The cgroup id is the inode number of the cgroup v2 directory; other paths are refused.
#[test]
fn cgroup_id_is_the_directory_inode() {
    use std::os::unix::fs::MetadataExt;
    let root = cgroup2_root();
    let dir = root.join(format!("corral-test-id-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let id = cgroup_id_of(&dir);
    let ino = std::fs::metadata(&dir).unwrap().ino();
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(id.unwrap(), ino);
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        cgroup_id_of(tmp.path()),
        Err(Error::NotCgroup2 { .. })
    ));
}

/// Where cgroup v2 is mounted: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a
/// hybrid one.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .expect("no cgroup2 mount")
}

/// Switching a cgroup's threads reaches every thread listed in `cgroup.threads`: switching back
/// to `SCHED_NORMAL` touches only `SCHED_EXT` threads (so a `SCHED_NORMAL` one counts 0, and an
/// RT thread would keep its policy); `SCHED_EXT` works only where the kernel has sched_ext, and
/// elsewhere fails with an error naming the thread.
#[test]
fn cgroup_threads_switch_policy() {
    let dir = cgroup2_root().join(format!("corral-test-policy-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    let threads = corral_bpf::cgroup_threads(&dir).unwrap();
    let to_normal = corral_bpf::set_cgroup_sched_ext(&dir, false);
    let to_ext = corral_bpf::set_cgroup_sched_ext(&dir, true);
    let policy = corral_bpf::thread_policy(pid);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir(&dir);

    assert_eq!(threads, vec![pid]);
    assert_eq!(to_normal.unwrap(), 0, "a SCHED_NORMAL thread is left alone");
    if std::path::Path::new("/sys/kernel/sched_ext").exists() {
        assert_eq!(to_ext.unwrap(), 1);
        assert_eq!(policy.unwrap(), corral_bpf::SCHED_EXT);
    } else {
        let err = to_ext.expect_err("no sched_ext: SCHED_EXT must be refused");
        assert!(
            matches!(err, Error::Thread { call: "sched_setattr", tid, .. } if tid == pid),
            "{err:?}"
        );
        assert_eq!(policy.unwrap(), corral_bpf::SCHED_NORMAL);
    }
}
