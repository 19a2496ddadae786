//! The `bpf` map-writer backend on real pinned maps on the host (root; maps need no sched_ext):
//! enforcements land in the pinned cgroup map, a new writer rebuilds its mirror from the pins,
//! and shutdown leaves no cgroup entry and no published group behind.

use corral::bpf_enforcement::BpfMapBackend;
use corral::{
    ContainerBackendKind, EnforcementKind, FunctionSpec, GroupConfig, PolicyKind, Runtime,
    RuntimeConfig,
};
use corral_actors::config::{validate_groups, GroupId};
use corral_actors::container_backend::{CgroupId, CgroupRef};
use corral_actors::map_backend::MapBackend;
use corral_bpf::PinnedMaps;

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "pinned-map tests need root: run `cargo xtask test` or `sudo cargo test`"
    );
}

fn groups() -> Vec<GroupConfig> {
    [("a", "0"), ("b", "1")]
        .iter()
        .map(|(name, cpus)| GroupConfig {
            name: (*name).into(),
            cpus: (*cpus).into(),
            slice_us: 3_000,
            order: Default::default(),
            borrow: false,
            exclusive: false,
        })
        .collect()
}

/// Invocations through a runtime with the `bpf` map writer (scheduler not loaded) leave each
/// warm container mapped in the pinned cgroup map. Shutdown removes every entry it made, but
/// leaves the groups published: with `load_scheduler = false` a separately run scheduler
/// (`corral sched`) keeps serving them. A `corral map`-style entry made by someone else survives.
#[tokio::test]
async fn bpf_map_writer_commits_to_pinned_maps_and_cleans_up() {
    require_root();
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/corral-test-{}-rt", std::process::id()));
    let mut c = RuntimeConfig::with_groups(groups());
    c.monitor.enabled = false;
    c.placement.policy = PolicyKind::Pinned;
    c.placement.pinned.insert("fa".into(), "a".into());
    c.placement.pinned.insert("fb".into(), "b".into());
    c.containers.backend = Some(ContainerBackendKind::Sim);
    c.enforcement.backend = EnforcementKind::Bpf;
    c.enforcement.load_scheduler = false;
    c.enforcement.pin_dir = pin_dir.clone();
    c.functions.push(FunctionSpec::named("fa"));
    c.functions.push(FunctionSpec::named("fb"));
    let runtime = Runtime::start(c).unwrap();
    assert_eq!(runtime.stats().enforcement_backend, "bpf");
    // An entry another tool wrote into the shared pins.
    let foreign = PinnedMaps::open(&pin_dir).unwrap();
    foreign
        .cgroups()
        .insert(u64::MAX - 7, 1, corral_bpf::CgroupFlags::NONE)
        .unwrap();
    let a = runtime.invoke("fa", vec![]).await.unwrap();
    let b = runtime.invoke("fb", vec![]).await.unwrap();

    let maps = PinnedMaps::open(&pin_dir).unwrap();
    assert_eq!(
        maps.cgroups().get(a.cgroup_id).unwrap().map(|e| e.group),
        Some(0)
    );
    assert_eq!(
        maps.cgroups().get(b.cgroup_id).unwrap().map(|e| e.group),
        Some(1)
    );
    let published = maps.groups().get(1).unwrap().expect("group 1 published");
    assert_eq!(published.spec.cpus, vec![1]);
    assert_eq!(published.spec.slice_ns, 3_000_000);
    let mut mirror = runtime.enforcements().await.unwrap();
    mirror.sort();
    assert_eq!(
        mirror,
        vec![
            (CgroupId(a.cgroup_id), GroupId(0)),
            (CgroupId(b.cgroup_id), GroupId(1))
        ]
    );

    runtime.shutdown().await.unwrap();
    let left: Vec<u64> = maps
        .cgroups()
        .entries()
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        left,
        vec![u64::MAX - 7],
        "the runtime's entries must go, the foreign one stay"
    );
    assert!(maps.groups().is_published(0).unwrap());
    assert!(maps.groups().is_published(1).unwrap());
    drop(foreign);
    drop(maps);
    PinnedMaps::remove_pins(&pin_dir).unwrap();
    let _ = std::fs::remove_dir(&pin_dir);
}

/// The pinned maps outlive the writer: a fresh backend on the same pins reads back what an
/// earlier one committed, which is how the map writer rebuilds its mirror after a restart.
#[test]
fn bpf_backend_reads_back_entries_from_the_pins() {
    require_root();
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/corral-test-{}-direct",
        std::process::id()
    ));
    let groups = validate_groups(&groups(), &[0, 1]).unwrap();
    let mut first = BpfMapBackend::open(&pin_dir).unwrap();
    first.publish_groups(&groups).unwrap();
    let cgroup = CgroupRef {
        id: CgroupId(777_001),
        path: None,
    };
    let ack = first.enforce(&cgroup, &groups[1]).unwrap();
    assert!(
        !ack.sched_ext,
        "full switch places processes by the map update alone: no SCHED_EXT switch"
    );
    drop(first);
    let mut partial = BpfMapBackend::open(&pin_dir)
        .unwrap()
        .with_mode(corral_bpf::SchedMode::Partial);
    let ack = partial.enforce(&cgroup, &groups[1]).unwrap();
    assert!(
        ack.sched_ext,
        "partial-mode enforcement switches processes to SCHED_EXT"
    );
    drop(partial);

    let mut second = BpfMapBackend::open(&pin_dir).unwrap();
    assert_eq!(
        second.entries().unwrap(),
        vec![(CgroupId(777_001), GroupId(1))]
    );
    assert!(second.remove(&cgroup).unwrap());
    assert!(second.entries().unwrap().is_empty());
    second.publish_groups(&groups).unwrap();
    second.close().unwrap();
    drop(second);
    PinnedMaps::remove_pins(&pin_dir).unwrap();
    let _ = std::fs::remove_dir(&pin_dir);
}

/// A function process cannot reach the pinned maps through inherited descriptors: it runs (a
/// `local` container, the `bpf` map writer holding the maps open) with no BPF map or program
/// among its open files, since every BPF descriptor is close-on-exec; its command is run
/// directly, without a shell.
#[tokio::test]
async fn function_processes_inherit_no_bpf_descriptor() {
    require_root();
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/corral-test-{}-fds",
        std::process::id()
    ));
    let parent = corral::config::cgroup2_mount()
        .expect("a cgroup2 mount")
        .join(format!("corral-test-{}-fds", std::process::id()));
    let mut c = RuntimeConfig::with_groups(groups());
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.clone());
    c.enforcement.backend = EnforcementKind::Bpf;
    c.enforcement.load_scheduler = false;
    c.enforcement.pin_dir = pin_dir.clone();
    let mut f = FunctionSpec::named("fds");
    // ls is the function itself (no shell): it lists its own descriptors.
    f.command = vec!["/bin/ls".into(), "-l".into(), "/proc/self/fd/".into()];
    c.functions.push(f);
    let runtime = Runtime::start(c).unwrap();
    let r = runtime.invoke("fds", vec![]).await.unwrap();
    let listing = String::from_utf8_lossy(&r.output).into_owned();
    assert!(listing.contains("->"), "no descriptor listed: {listing}");
    assert!(
        !listing.contains("bpf"),
        "a BPF descriptor reached the function: {listing}"
    );
    runtime.shutdown().await.unwrap();
    PinnedMaps::remove_pins(&pin_dir).unwrap();
    assert!(!parent.exists());
}

/// A function keeps no capability and is not root: its process (a command per invocation, and a
/// server-mode process alike) runs as nobody (`run_as`'s default), with empty effective,
/// permitted, inheritable, bounding and ambient sets and `no_new_privs`, so it cannot open the pinned maps (the `bpf()` call needs CAP_BPF or
/// CAP_SYS_ADMIN where unprivileged BPF is off, as here) or regain anything through a setuid
/// binary. The proof: the function runs `corral maps dump` on the runtime's own pins, and it
/// is refused, while the same command run by the test opens them.
#[tokio::test]
async fn function_processes_keep_no_capability_and_cannot_open_the_pins() {
    require_root();
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/corral-test-{}-caps",
        std::process::id()
    ));
    let parent = corral::config::cgroup2_mount()
        .expect("a cgroup2 mount")
        .join(format!("corral-test-{}-caps", std::process::id()));
    let mut c = RuntimeConfig::with_groups(groups());
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.clone());
    c.enforcement.backend = EnforcementKind::Bpf;
    c.enforcement.load_scheduler = false;
    c.enforcement.pin_dir = pin_dir.clone();
    // The corral binary, built next to this test (cargo test --workspace builds it).
    let exe = std::env::current_exe().unwrap();
    let corral_bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("corral");
    assert!(
        corral_bin.is_file(),
        "{} is missing: run cargo test --workspace",
        corral_bin.display()
    );
    let mut f = FunctionSpec::named("caps");
    f.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; \
             {} maps dump --pin-dir {} >/dev/null 2>&1 && echo pins=opened || echo pins=refused",
            corral_bin.display(),
            pin_dir.display()
        ),
    ];
    c.functions.push(f);
    let runtime = Runtime::start(c).unwrap();
    let r = runtime.invoke("caps", vec![]).await.unwrap();
    let out = String::from_utf8_lossy(&r.output).into_owned();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap_or_else(|| panic!("no {set} in:\n{out}"));
        assert!(
            line.ends_with("0000000000000000"),
            "the function kept capabilities: {line}\n{out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{out}"
    );
    for id in ["Uid:", "Gid:"] {
        let line = out.lines().find(|l| l.starts_with(id)).unwrap();
        assert!(
            line.split_whitespace().skip(1).all(|v| v == "65534"),
            "not run as nobody (run_as's default): {line}"
        );
    }
    assert!(
        out.contains("pins=refused"),
        "the function opened the pinned maps:\n{out}"
    );
    // The same command, run by the test itself (with root's capabilities), opens them: the
    // refusal above is the capabilities', not a broken command.
    let direct = std::process::Command::new(&corral_bin)
        .args(["maps", "dump", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    runtime.shutdown().await.unwrap();
    PinnedMaps::remove_pins(&pin_dir).unwrap();
    assert!(!parent.exists());
}

/// The cgroup map filled to its capacity: the next mapping is refused with an error that
/// names the capacity and the fix, nothing already mapped changes, and freeing one entry makes
/// room again. Through the runtime: an invocation that needs a new mapping fails with that
/// error and leaks nothing (its permit comes back, its container waits unenforced in the pool,
/// never handed out), and once room is made the next one reuses that container, enforced.
#[tokio::test]
async fn a_full_cgroup_map_refuses_by_name_and_room_comes_back() {
    require_root();
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/corral-test-{}-full",
        std::process::id()
    ));
    let mut c = RuntimeConfig::with_groups(groups());
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Sim);
    c.enforcement.backend = EnforcementKind::Bpf;
    c.enforcement.load_scheduler = false;
    c.enforcement.pin_dir = pin_dir.clone();
    c.functions.push(FunctionSpec::named("first"));
    c.functions.push(FunctionSpec::named("second"));
    let runtime = Runtime::start(c).unwrap();
    let maps = PinnedMaps::open(&pin_dir).unwrap();
    let capacity = maps.cgroups().capacity() as u64;
    // Someone else's entries fill every slot but one.
    const BASE: u64 = 1 << 60;
    for k in 0..capacity - 1 {
        maps.cgroups()
            .insert(BASE + k, 0, corral_bpf::CgroupFlags::NONE)
            .unwrap();
    }
    let first = runtime.invoke("first", vec![1]).await.unwrap();
    let err = maps
        .cgroups()
        .insert(BASE + capacity, 0, corral_bpf::CgroupFlags::NONE)
        .unwrap_err();
    assert!(
        matches!(err, corral_bpf::Error::CgroupMapFull { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&capacity.to_string()) && text.contains("corral unmap"),
        "{text}"
    );

    let err = runtime
        .invoke("second", vec![2])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the cgroup map is full") && err.contains("corral unmap"),
        "{err}"
    );
    // The unenforced container goes back to its pool (never handed out), then the permit.
    let stats = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let stats = runtime.stats();
            if stats.in_flight == 0 && stats.available_permits == stats.limit {
                return stats;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the failed invocation's permit never came back");
    assert_eq!(
        (stats.live_containers, stats.warm_containers),
        (2, 2),
        "a container was lost: {stats:?}"
    );
    assert_eq!(
        maps.cgroups()
            .get(first.cgroup_id)
            .unwrap()
            .map(|e| e.group),
        Some(first.group.0),
        "an existing mapping changed"
    );
    assert_eq!(maps.cgroups().entries().unwrap().len() as u64, capacity);

    maps.cgroups().remove(BASE).unwrap();
    let second = runtime.invoke("second", vec![3]).await.unwrap();
    assert_eq!(
        second.start,
        corral::StartKind::Warm,
        "the pooled container is reused"
    );
    assert_eq!(
        maps.cgroups()
            .get(second.cgroup_id)
            .unwrap()
            .map(|e| e.group),
        Some(second.group.0),
        "enforced on its reuse"
    );
    runtime.shutdown().await.unwrap();
    for k in 1..capacity - 1 {
        maps.cgroups().remove(BASE + k).unwrap();
    }
    assert!(maps.cgroups().entries().unwrap().is_empty());
    drop(maps);
    PinnedMaps::remove_pins(&pin_dir).unwrap();
}
