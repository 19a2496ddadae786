//! Host tests on real cgroups (they need root, as corral itself does): the `local` container
//! backend creates cgroup v2 directories and runs functions inside them, and the `cpuset` map
//! backend enforces groups through the v1 cpuset hierarchy, which is what this host offers
//! (its cgroup2 mount has no controllers enabled).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use corral::config::cgroup2_mount;
use corral::{
    ContainerBackendKind, EnforcementKind, FunctionSpec, GroupConfig, PolicyKind, Runtime,
    RuntimeConfig, RuntimeError, StartKind,
};
use corral_actors::config::{validate_groups, GroupId};
use corral_actors::container_backend::{CgroupId, CgroupRef};
use corral_actors::map_backend::cpuset::{CpusetBackend, DEFAULT_V1_ROOT};
use corral_actors::map_backend::MapBackend;
use corral_actors::ActorError;

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "cgroup tests need root: run `cargo xtask test` or `sudo cargo test`"
    );
}

fn groups() -> Vec<GroupConfig> {
    ["0", "1"]
        .iter()
        .enumerate()
        .map(|(i, cpus)| GroupConfig {
            name: ["a", "b"][i].into(),
            cpus: (*cpus).into(),
            slice_us: 5_000,
            order: Default::default(),
            borrow: false,
            exclusive: false,
        })
        .collect()
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

/// The `local` backend runs each function's command inside its own cgroup v2 directory (the
/// cgroup id is the directory's inode), the `cpuset` backend confines it to its group's CPUs
/// through a v1 cpuset, the payload arrives on standard input, a failing function reports its
/// exit status and standard error, and shutdown removes every directory it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_runs_functions_in_cgroups_confined_by_cpuset() {
    require_root();
    let v2 = cgroup2_mount().expect("a cgroup2 mount");
    let tag = format!("corral-test-{}", std::process::id());
    let parent = v2.join(format!("{tag}-local"));
    let mut c = RuntimeConfig::with_groups(groups());
    c.limiter.initial = 2;
    c.limiter.max = 2;
    c.monitor.enabled = false;
    c.placement.policy = PolicyKind::Pinned;
    c.placement.pinned.insert("fa".into(), "a".into());
    c.placement.pinned.insert("fb".into(), "b".into());
    c.placement.pinned.insert("fail".into(), "b".into());
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.clone());
    c.enforcement.backend = EnforcementKind::Cpuset;
    c.enforcement.cpuset_prefix = tag.clone();
    let probe = "cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status; echo cpus=$CORRAL_CPUS; cat";
    for name in ["fa", "fb"] {
        let mut f = FunctionSpec::named(name);
        f.command = vec!["/bin/sh".into(), "-c".into(), probe.into()];
        c.functions.push(f);
    }
    let mut fail = FunctionSpec::named("fail");
    fail.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo broken >&2; exit 3".into(),
    ];
    c.functions.push(fail);

    let runtime = Runtime::start(c).unwrap();
    assert_eq!(runtime.stats().enforcement_backend, "cpuset");
    for (function, group, cpu) in [("fa", "a", "0"), ("fb", "b", "1"), ("fa", "a", "0")] {
        let r = runtime
            .invoke(function, b"payload-in".to_vec())
            .await
            .unwrap();
        let out = String::from_utf8(r.output.clone()).unwrap();
        assert_eq!(r.group_name, group);
        let dir = parent.join(&r.container);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().ino(),
            r.cgroup_id,
            "cgroup id is the inode"
        );
        let rel = dir.strip_prefix(&v2).unwrap().display().to_string();
        assert_eq!(line_with(&out, "0::"), format!("0::/{rel}"));
        let cpuset_line = line_with(&out, ":cpuset:");
        assert!(
            cpuset_line.ends_with(&format!(":cpuset:/{tag}/{}", r.cgroup_id)),
            "{cpuset_line}"
        );
        assert_eq!(
            line_with(&out, "Cpus_allowed_list")
                .split_whitespace()
                .nth(1),
            Some(cpu),
            "{out}"
        );
        assert!(out.contains(&format!("cpus={cpu}")), "{out}");
        assert!(out.ends_with("payload-in"), "{out}");
    }
    let third = runtime.invoke("fa", vec![]).await.unwrap();
    assert_eq!(third.start, StartKind::Warm);

    match runtime.invoke("fail", vec![]).await {
        Err(RuntimeError::Control {
            source: ActorError::FunctionFailed { status, stderr, .. },
        }) => {
            assert!(status.contains('3'), "{status}");
            assert_eq!(stderr, "broken");
        }
        other => panic!("expected FunctionFailed, got {other:?}"),
    }
    assert_eq!(runtime.stats().in_flight, 0);

    let report = runtime.shutdown().await.unwrap();
    assert_eq!(report.permits_available, report.limit);
    assert!(!parent.exists(), "{} left behind", parent.display());
    assert!(
        !Path::new(DEFAULT_V1_ROOT).join(&tag).exists(),
        "v1 cpuset left behind"
    );
}

/// The `cpuset` backend commits an enforcement as one write of `cpuset.cpus` in a v1 cpuset
/// named after the cgroup id, reads its entries back from the file system (the source of truth
/// after a restart), moves an enforcement to another group, and removes everything it created.
#[test]
fn cpuset_backend_commits_reads_back_and_removes_v1_cpusets() {
    require_root();
    let prefix = format!("corral-test-{}-direct", std::process::id());
    let groups = validate_groups(&groups(), &[0, 1]).unwrap();
    let mut backend = CpusetBackend::new(DEFAULT_V1_ROOT, &prefix);
    backend.publish_groups(&groups).unwrap();
    let cgroup = CgroupRef {
        id: CgroupId(4242),
        path: None,
    };
    let e = backend.enforce(&cgroup, &groups[1]).unwrap();
    let dir: PathBuf = Path::new(DEFAULT_V1_ROOT).join(&prefix).join("4242");
    assert_eq!(
        std::fs::read_to_string(dir.join("cpuset.cpus"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(e.join, vec![dir.join("cgroup.procs")]);
    assert!(!e.sched_ext);

    // A fresh backend (as after a restart) finds the entry on disk.
    let mut reopened = CpusetBackend::new(DEFAULT_V1_ROOT, &prefix);
    reopened.publish_groups(&groups).unwrap();
    assert_eq!(
        reopened.entries().unwrap(),
        vec![(CgroupId(4242), GroupId(1))]
    );

    backend.enforce(&cgroup, &groups[0]).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("cpuset.cpus"))
            .unwrap()
            .trim(),
        "0"
    );
    assert_eq!(
        backend.entries().unwrap(),
        vec![(CgroupId(4242), GroupId(0))]
    );

    assert!(backend.remove(&cgroup).unwrap());
    assert!(!dir.exists());
    assert!(!backend.remove(&cgroup).unwrap());
    backend.close().unwrap();
    assert!(!Path::new(DEFAULT_V1_ROOT).join(&prefix).exists());
}

/// A start that fails (here: a `local` function without a command) says which key is wrong
/// and leaves no cgroup directory behind.
#[test]
fn failed_start_names_the_key_and_leaves_no_cgroup() {
    require_root();
    let v2 = cgroup2_mount().expect("a cgroup2 mount");
    let parent = v2.join(format!("corral-test-{}-failed", std::process::id()));
    let mut c = RuntimeConfig::with_groups(groups());
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.clone());
    c.enforcement.backend = EnforcementKind::Memory;
    c.functions.push(FunctionSpec::named("nocommand"));
    let err = Runtime::start(c).unwrap_err().to_string();
    assert!(err.contains("functions.nocommand.command"), "{err}");
    assert!(!parent.exists(), "{} left behind", parent.display());
}

/// The `local` backend removes every container under its parent at start and shutdown, so a
/// second runtime on the same parent would destroy the first one's containers. The parent is
/// locked: the second open is refused, naming the key, and the first runtime's directory is
/// left alone.
#[test]
fn two_local_backends_cannot_share_a_cgroup_parent() {
    require_root();
    let parent = cgroup2_mount()
        .expect("a cgroup2 mount")
        .join(format!("corral-test-lock-{}", std::process::id()));
    let first = corral_actors::container_backend::local::LocalBackend::open(&parent)
        .expect("the first backend opens the parent");
    let err = corral_actors::container_backend::local::LocalBackend::open(&parent)
        .expect_err("a second backend on the same parent must be refused");
    let text = err.to_string();
    assert!(text.contains("containers.cgroup_parent"), "{text}");
    assert!(text.contains("another corral runtime"), "{text}");
    assert!(parent.exists());
    drop(first);
    // Once the first is gone, the parent can be opened again.
    let again = corral_actors::container_backend::local::LocalBackend::open(&parent)
        .expect("the lock is released with the first backend");
    drop(again);
    std::fs::remove_dir(&parent).unwrap();
}

/// A process parked in a cgroup of its own, killed on drop.
struct Parked {
    child: std::process::Child,
}

impl Parked {
    fn in_cgroup(dir: &Path) -> Parked {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        Parked { child }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes test cgroups (children first) at the end, whatever happened.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn local_config(parent: &Path) -> RuntimeConfig {
    let mut c = RuntimeConfig::with_groups(groups());
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.to_path_buf());
    c.enforcement.backend = EnforcementKind::Memory;
    let mut f = FunctionSpec::named("echo");
    f.command = vec!["/bin/cat".into()];
    c.functions.push(f);
    c
}

/// corral touches only what it created. Under an operator's parent, a foreign child cgroup
/// named like a container (`intruder@1`) and another one, each holding a live process,
/// survive the runtime's start, invocations and shutdown, and so does the parent; a container
/// left behind by an earlier run (marked as corral's, with a process in it) is killed and
/// removed at start. Under a parent corral created, a foreign cgroup made during the run
/// keeps the parent in place at shutdown, its process alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_cgroups_and_processes_under_the_parent_survive_start_run_and_shutdown() {
    require_root();
    let v2 = cgroup2_mount().expect("a cgroup2 mount");
    let parent = v2.join(format!("corral-test-{}-foreign", std::process::id()));
    let intruder = parent.join("intruder@1");
    let other = parent.join("other");
    let leftover = parent.join("echo@7");
    let _cleanup = Cleanup(vec![
        parent.clone(),
        intruder.clone(),
        other.clone(),
        leftover.clone(),
    ]);
    for dir in [&parent, &intruder, &other, &leftover] {
        std::fs::create_dir(dir).unwrap();
    }
    // What a crashed run leaves: a marked container with its function still running.
    xattr::set(&leftover, "trusted.corral.owner", b"corral-container").unwrap();
    let mut stale = Parked::in_cgroup(&leftover);
    let mut a = Parked::in_cgroup(&intruder);
    let mut b = Parked::in_cgroup(&other);

    let runtime = Runtime::start(local_config(&parent)).unwrap();
    assert!(
        !leftover.exists(),
        "the earlier run's container is removed at start"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while stale.alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        !stale.alive(),
        "the earlier run's process is killed at start"
    );
    for _ in 0..3 {
        let r = runtime.invoke("echo", b"hi".to_vec()).await.unwrap();
        assert_eq!(r.output, b"hi");
    }
    runtime.shutdown().await.unwrap();
    assert!(a.alive() && b.alive(), "a foreign process was killed");
    assert!(
        intruder.exists() && other.exists(),
        "a foreign cgroup was removed"
    );
    assert!(parent.exists(), "the operator's parent was removed");
    let left: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        ["intruder@1", "other"],
        "corral's containers are gone"
    );
    drop((a, b));

    // A parent corral creates, and a cgroup someone makes in it during the run.
    let made = v2.join(format!("corral-test-{}-made", std::process::id()));
    let guest = made.join("guest");
    let _cleanup2 = Cleanup(vec![made.clone(), guest.clone()]);
    let runtime = Runtime::start(local_config(&made)).unwrap();
    runtime.invoke("echo", vec![]).await.unwrap();
    std::fs::create_dir(&guest).unwrap();
    let mut g = Parked::in_cgroup(&guest);
    runtime.shutdown().await.unwrap();
    assert!(
        g.alive(),
        "the foreign process in corral's parent was killed"
    );
    assert!(guest.exists() && made.exists());
    drop(g);
    std::fs::remove_dir(&guest).unwrap();
    // Empty now, and still marked as corral's: the next run removes it at its shutdown.
    let runtime = Runtime::start(local_config(&made)).unwrap();
    runtime.shutdown().await.unwrap();
    assert!(!made.exists(), "corral's own parent, empty, is removed");
}

/// Start-up reclaims what a crashed run left in the maps too: the enforcement entry of a
/// container it left behind goes with the container, so such entries do not creep toward the
/// map's capacity; an entry for a cgroup corral does not know (another tool's mapping) stays,
/// through start and shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_runs_map_entries_are_removed_at_start() {
    use corral_actors::map_backend::memory::{MemoryBackend, MemoryMaps};
    require_root();
    let v2 = cgroup2_mount().expect("a cgroup2 mount");
    let parent = v2.join(format!("corral-test-{}-reclaim", std::process::id()));
    let leftover = parent.join("echo@9");
    let _cleanup = Cleanup(vec![parent.clone(), leftover.clone()]);
    std::fs::create_dir(&parent).unwrap();
    std::fs::create_dir(&leftover).unwrap();
    xattr::set(&leftover, "trusted.corral.owner", b"corral-container").unwrap();
    let stale = CgroupId(std::fs::metadata(&leftover).unwrap().ino());
    let foreign = CgroupId(4242);

    let maps = MemoryMaps::new();
    let groups = validate_groups(&groups(), &[0, 1]).unwrap();
    let mut crashed_run = MemoryBackend::new(maps.clone());
    crashed_run
        .enforce(
            &CgroupRef {
                id: stale,
                path: Some(leftover.clone()),
            },
            &groups[1],
        )
        .unwrap();
    crashed_run
        .enforce(
            &CgroupRef {
                id: foreign,
                path: None,
            },
            &groups[0],
        )
        .unwrap();

    let runtime = Runtime::builder(local_config(&parent))
        .memory_maps(maps.clone())
        .start()
        .unwrap();
    assert!(!leftover.exists(), "the leftover container is removed");
    assert_eq!(maps.get(stale), None, "and its map entry with it");
    assert_eq!(
        maps.get(foreign),
        Some(GroupId(0)),
        "not corral's to remove"
    );
    let r = runtime.invoke("echo", b"hi".to_vec()).await.unwrap();
    assert_eq!(maps.get(CgroupId(r.cgroup_id)), Some(r.group));
    runtime.shutdown().await.unwrap();
    assert_eq!(maps.get(foreign), Some(GroupId(0)));
    assert_eq!(maps.entries().len(), 1, "{:?}", maps.entries());
}

/// `when_detached = "cpuset"` with `local` containers under a parent that gives its children
/// no cpuset controller (this host's cgroup2 offers none) is refused at start, naming the
/// key, the parent's subtree_control and the fix, and the parent corral made is removed.
#[test]
fn cpuset_fallback_without_the_cpuset_controller_is_refused() {
    use corral_actors::bpf_loader::{LoaderTiming, SchedExtSupport, SchedulerDriver};
    require_root();
    let v2 = cgroup2_mount().expect("a cgroup2 mount");
    let offered = std::fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
    assert!(
        !offered.contains("cpuset"),
        "this test needs a cgroup2 root without the cpuset controller (a hybrid host): {offered}"
    );
    let parent = v2.join(format!("corral-test-{}-nocpuset", std::process::id()));
    let mut c = local_config(&parent);
    c.enforcement.backend = EnforcementKind::Auto;
    c.enforcement.when_detached = corral::DetachedPolicy::Cpuset;
    #[derive(Debug)]
    struct NeverAttaches;
    impl SchedulerDriver for NeverAttaches {
        fn attach(&mut self) -> Result<(), corral_actors::error::BoxError> {
            Err("never attaches".into())
        }
        fn poll_exit(&mut self) -> Option<corral_actors::bpf_loader::SchedulerExit> {
            None
        }
        fn is_attached(&self) -> bool {
            false
        }
        fn detach(&mut self) -> Result<(), corral_actors::error::BoxError> {
            Ok(())
        }
    }
    let err = Runtime::builder(c)
        .memory_maps(corral_actors::map_backend::memory::MemoryMaps::new())
        .sched_ext_support(SchedExtSupport {
            kernel: true,
            btf: true,
            privileged: true,
        })
        .scheduler_driver(Box::new(NeverAttaches))
        .loader_timing(LoaderTiming::default())
        .start()
        .unwrap_err();
    let text = err.to_string();
    for needle in ["enforcement.when_detached", "subtree_control", "\"run\" or"] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    assert!(
        !parent.exists(),
        "the parent corral made is removed: {}",
        parent.display()
    );
}

/// Two `cpuset` backends sharing the v1 prefix (two runtimes with their own cgroup parents
/// and the default prefix) neither read back nor remove each other's cpusets, and the prefix
/// goes only when the last one closes; a prefix directory corral did not create is refused by
/// key, and left alone.
#[test]
fn cpuset_backends_sharing_a_prefix_keep_to_their_own_cpusets() {
    require_root();
    let prefix = format!("corral-test-{}-shared", std::process::id());
    let root = Path::new(DEFAULT_V1_ROOT);
    let groups = validate_groups(&groups(), &[0, 1]).unwrap();
    let mut one = CpusetBackend::new(DEFAULT_V1_ROOT, &prefix).owned_by("/one");
    let mut two = CpusetBackend::new(DEFAULT_V1_ROOT, &prefix).owned_by("/two");
    one.publish_groups(&groups).unwrap();
    two.publish_groups(&groups).unwrap();
    let cg = |id| CgroupRef {
        id: CgroupId(id),
        path: None,
    };
    one.enforce(&cg(101), &groups[0]).unwrap();
    two.enforce(&cg(202), &groups[1]).unwrap();
    assert_eq!(one.entries().unwrap(), vec![(CgroupId(101), GroupId(0))]);
    assert_eq!(two.entries().unwrap(), vec![(CgroupId(202), GroupId(1))]);
    assert!(
        !one.remove(&cg(202)).unwrap(),
        "removed the other runtime's cpuset"
    );
    one.close().unwrap();
    assert!(
        root.join(&prefix).join("202").exists(),
        "the other runtime's cpuset is gone"
    );
    assert!(!root.join(&prefix).join("101").exists());
    assert_eq!(two.entries().unwrap(), vec![(CgroupId(202), GroupId(1))]);
    two.close().unwrap();
    assert!(
        !root.join(&prefix).exists(),
        "the last backend removes the empty prefix"
    );

    // A cpuset of someone else's at the prefix.
    let foreign = root.join(format!("corral-test-{}-theirs", std::process::id()));
    std::fs::create_dir(&foreign).unwrap();
    let _cleanup = Cleanup(vec![foreign.clone()]);
    let name = foreign.file_name().unwrap().to_string_lossy().into_owned();
    let mut theirs = CpusetBackend::new(DEFAULT_V1_ROOT, &name);
    theirs.publish_groups(&groups).unwrap();
    let err = theirs
        .enforce(&cg(303), &groups[0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("enforcement.cpuset_prefix"), "{err}");
    theirs.close().unwrap();
    assert!(foreign.exists(), "a foreign cpuset was removed");
}

/// A function that runs past its `timeout_ms` (here a shell that leaves a background child
/// behind and then sleeps) fails with `FunctionTimedOut` naming the key, and every process of
/// its container, the left-behind child included, is killed by cgroup; its permit comes back,
/// the next invocation runs, and shutdown leaves nothing. A command that does not exist fails
/// with an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_past_its_timeout_is_killed_with_everything_it_started() {
    require_root();
    let v2 = cgroup2_mount().expect("a cgroup2 mount");
    let parent = v2.join(format!("corral-test-{}-timeout", std::process::id()));
    let _cleanup = Cleanup(vec![parent.clone()]);
    let mut c = local_config(&parent);
    let mut slow = FunctionSpec::named("slow");
    slow.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "sleep 30 & echo started; sleep 30".into(),
    ];
    slow.timeout_ms = Some(300);
    slow.max_warm = Some(1);
    c.functions.push(slow);
    let mut missing = FunctionSpec::named("missing");
    missing.command = vec!["/nonexistent/function".into()];
    c.functions.push(missing);
    let runtime = Runtime::start(c).unwrap();

    let started = std::time::Instant::now();
    let err = runtime.invoke("slow", vec![]).await.unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the timeout did not end it: {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        matches!(
            err.control(),
            Some(ActorError::FunctionTimedOut {
                timeout_ms: 300,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(text.contains("functions.timeout_ms"), "{text}");
    // Every process of its container is gone, the background sleep too.
    let pool = runtime.pool().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left: Vec<i32> = std::fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|e| {
                corral_actors::container_backend::local::cgroup_pids(&e.path()).unwrap_or_default()
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left after the timeout: {left:?} ({pool:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stats = runtime.stats();
    assert_eq!((stats.in_flight, stats.available_permits), (0, stats.limit));

    let err = runtime
        .invoke("missing", vec![])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/function"), "{err}");
    let r = runtime
        .invoke("echo", b"still here".to_vec())
        .await
        .unwrap();
    assert_eq!(r.output, b"still here");
    runtime.shutdown().await.unwrap();
    assert!(!parent.exists(), "{} left behind", parent.display());
}
