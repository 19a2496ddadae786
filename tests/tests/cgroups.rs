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
    c.containers.backend = ContainerBackendKind::Local;
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
    c.containers.backend = ContainerBackendKind::Local;
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
