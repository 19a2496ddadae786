//! Host tests of the `containerd` container backend against a real containerd daemon that each
//! test starts itself (a private config, root, state and socket in a temporary directory), with
//! runc and a root file system built from busybox and `corral-serve`. They need root, as corral
//! does, and fail (never skip) where containerd or runc is missing.
//!
//! `corral-serve` is a binary of the `corral` crate, which cargo does not build for another
//! crate's tests: `cargo test --workspace` builds it; alone, run
//! `cargo build -p corral --bin corral-serve` first. The tests find it in the target directory
//! next to their own executable.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral::config::cgroup2_mount;
use corral::{
    ActorError, EnforcementKind, FunctionMode, FunctionSpec, Runtime, RuntimeError, StartKind,
};
use corral_actors::container_backend::containerd::{ContainerdBackend, OWNER_LABEL};
use corral_actors::container_backend::ContainerBackend;
use corral_bpf::PinnedMaps;

#[path = "support/containerd.rs"]
mod support;
use support::*;

/// `served <n> by pid <pid>: ...` → (n, pid).
fn served(output: &[u8]) -> (u64, u32) {
    let text = String::from_utf8_lossy(output);
    let rest = text
        .strip_prefix("served ")
        .unwrap_or_else(|| panic!("not a corral-serve answer: {text:?}"));
    let (n, rest) = rest.split_once(" by pid ").unwrap();
    let (pid, _) = rest.split_once(':').unwrap();
    (n.parse().unwrap(), pid.parse().unwrap())
}

/// The host pids in the container's cgroup v2 directory.
fn pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn cpus_allowed(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

fn control_error(r: Result<corral::InvocationResult, RuntimeError>) -> ActorError {
    match r {
        Err(RuntimeError::Control { source }) => source,
        other => panic!("expected a control-plane error, got {other:?}"),
    }
}

/// Warm reuse: every invocation of a server-mode function after the first is served by the
/// same process in the same warm container (one cold start), its counter going 1..N. The
/// container's cgroup id is the inode of `<parent>/<id>` that runc made, the server runs in
/// it, and the `cpuset` enforcement confines it to its group's CPU: `fa`'s server to CPU 0,
/// `fb`'s to CPU 1 (the control: the same check tells the two apart). Shutdown removes every
/// container, cgroup and the parent. Prints the cold-start and warm latencies it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_server_serves_warm_invocations_confined_by_cpuset() {
    let daemon = Daemon::start();
    let ns = Namespace::new(&daemon, "corral-warm", "ctrd-warm");
    let parent = ns.parent.clone();
    let tag = format!("corral-test-{}-ctrd", std::process::id());
    let mut c = daemon.config(&parent, &ns.name);
    c.enforcement.backend = EnforcementKind::Cpuset;
    c.enforcement.cpuset_prefix = tag.clone();
    ns.also_remove(Path::new("/sys/fs/cgroup/cpuset").join(&tag));
    let runtime = Runtime::start(c).unwrap();
    assert_eq!(runtime.stats().enforcement_backend, "cpuset");

    let n = 20u64;
    let mut pid = None;
    let mut warm = Vec::new();
    let mut warm_run = Vec::new();
    let mut cold = Duration::ZERO;
    for i in 1..=n {
        let t = Instant::now();
        let r = runtime.invoke("fa", format!("hello {i}")).await.unwrap();
        let took = t.elapsed();
        let (count, p) = served(&r.output);
        assert_eq!(count, i, "one process counts every invocation: {r:?}");
        assert_eq!(*pid.get_or_insert(p), p, "the same process serves them all");
        if i == 1 {
            assert_eq!(r.start, StartKind::Cold);
            cold = took;
            eprintln!(
                "containerd cold start (backend create): {:?}; the whole first invocation {took:?}",
                r.timings.cold_start
            );
        } else {
            assert_eq!(r.start, StartKind::Warm);
            warm.push(took);
            warm_run.push(r.timings.run);
        }
        let dir = parent.join(&r.container);
        assert_eq!(std::fs::metadata(&dir).unwrap().ino(), r.cgroup_id);
        let host_pids = pids(&dir);
        assert!(
            !host_pids.is_empty(),
            "the server runs in {}",
            dir.display()
        );
        for p in host_pids {
            assert_eq!(cpus_allowed(p), "0", "fa's server on group a's CPU");
        }
    }
    warm.sort();
    warm_run.sort();
    eprintln!(
        "containerd warm invocations (n={}): min {:?}, median {:?}, max {:?} (the server \
         exchange alone: median {:?}); cold {cold:?}",
        warm.len(),
        warm[0],
        warm[warm.len() / 2],
        warm[warm.len() - 1],
        warm_run[warm_run.len() / 2]
    );
    // It started only once enforced: confined from its first instruction.
    let startup = runtime.invoke("fa", "startup").await.unwrap();
    let text = String::from_utf8_lossy(&startup.output).into_owned();
    assert!(
        text.contains("started with cpus allowed 0 on cpu 0"),
        "fa's server started outside group a's CPU: {text:?}"
    );
    assert_eq!(runtime.stats().cold_starts, 1);

    // The control: fb's server, on group b, is confined to CPU 1 by the same check.
    let b = runtime.invoke("fb", "hi").await.unwrap();
    let b_dir = parent.join(&b.container);
    for p in pids(&b_dir) {
        assert_eq!(cpus_allowed(p), "1", "fb's server on group b's CPU");
    }
    let spun = runtime.invoke("fb", "spin 20").await.unwrap();
    let text = String::from_utf8_lossy(&spun.output).into_owned();
    assert!(text.ends_with("last on cpu 1"), "{text}");

    assert_eq!(daemon.containers(&ns.name).len(), 2);
    let report = runtime.shutdown().await.unwrap();
    assert_eq!(report.containers_destroyed, 2);
    assert!(daemon.containers(&ns.name).is_empty(), "containers left");
    assert!(!parent.exists(), "{} left behind", parent.display());
    let rel = parent.strip_prefix(cgroup2_mount().unwrap()).unwrap();
    for v1 in ["cpu", "cpuset", "memory", "pids", "systemd"] {
        let dir = Path::new("/sys/fs/cgroup").join(v1).join(rel);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(
        !Path::new("/sys/fs/cgroup/cpuset").join(&tag).exists(),
        "the v1 cpuset prefix left behind"
    );
}

/// With the `bpf` map writer on real pinned maps (no scheduler loaded), each containerd
/// container's cgroup id (the inode of the directory runc made, the cgroup its server runs
/// in) is in the cgroup map with its group: `fa`'s with group 0, `fb`'s with group 1 (the
/// control: the two differ). Shutdown removes both entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_containers_are_mapped_in_the_pinned_cgroup_map() {
    let daemon = Daemon::start();
    let ns = Namespace::new(&daemon, "corral-bpf", "ctrd-bpf");
    let parent = ns.parent.clone();
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/corral-test-{}-ctrd",
        std::process::id()
    ));
    let mut c = daemon.config(&parent, &ns.name);
    c.enforcement.backend = EnforcementKind::Bpf;
    c.enforcement.load_scheduler = false;
    c.enforcement.pin_dir = pin_dir.clone();
    let runtime = Runtime::start(c).unwrap();
    assert_eq!(runtime.stats().enforcement_backend, "bpf");
    let a = runtime.invoke("fa", "one").await.unwrap();
    let b = runtime.invoke("fb", "two").await.unwrap();
    let v2 = cgroup2_mount().unwrap();
    for r in [&a, &b] {
        let dir = parent.join(&r.container);
        assert_eq!(std::fs::metadata(&dir).unwrap().ino(), r.cgroup_id);
        let rel = dir.strip_prefix(&v2).unwrap().display().to_string();
        for p in pids(&dir) {
            let cgroup = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
            assert!(
                cgroup.lines().any(|l| l == format!("0::/{rel}")),
                "{p} is in {rel}: {cgroup}"
            );
        }
    }
    let maps = PinnedMaps::open(&pin_dir).unwrap();
    let group_of = |id: u64| maps.cgroups().get(id).unwrap().map(|e| e.group);
    assert_eq!(group_of(a.cgroup_id), Some(0));
    assert_eq!(group_of(b.cgroup_id), Some(1));
    assert_ne!(a.cgroup_id, b.cgroup_id);

    runtime.shutdown().await.unwrap();
    assert_eq!(group_of(a.cgroup_id), None);
    assert_eq!(group_of(b.cgroup_id), None);
    assert!(daemon.containers(&ns.name).is_empty());
    assert!(!parent.exists(), "{} left behind", parent.display());
    drop(maps);
    PinnedMaps::remove_pins(&pin_dir).unwrap();
    let _ = std::fs::remove_dir(&pin_dir);
}

/// A server that dies (`exit 3`) or writes something that is not a frame (`garbage`) fails
/// its invocation with `ServerFailed` (quoting its exit status and standard error, or the bad
/// status byte), one that hangs with `FunctionTimedOut` (its task killed); its container is destroyed (gone from containerd, its cgroup gone), and the
/// next invocation cold-starts a new one. A failed reply (`fail ...`) is the function's own
/// error and keeps the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_server_that_dies_or_breaks_the_protocol_is_replaced() {
    let daemon = Daemon::start();
    let ns = Namespace::new(&daemon, "corral-fail", "ctrd-fail");
    let parent = ns.parent.clone();
    let mut c = daemon.config(&parent, &ns.name);
    c.enforcement.backend = EnforcementKind::Memory;
    let runtime = Runtime::start(c).unwrap();
    let first = runtime.invoke("fa", "hello").await.unwrap();
    assert_eq!(served(&first.output).0, 1);
    match control_error(runtime.invoke("fa", "fail no such image").await) {
        ActorError::FunctionFailed { stderr, .. } => assert_eq!(stderr, "no such image"),
        other => panic!("expected FunctionFailed, got {other:?}"),
    }
    let mut last = first.container.clone();
    let mut cold = 1;
    for (payload, check) in [
        ("exit 3", "status 3"),
        ("garbage", "status byte"),
        ("hang", "timeout"),
    ] {
        let err = control_error(runtime.invoke("fa", payload).await);
        match &err {
            ActorError::FunctionTimedOut {
                container,
                timeout_ms: 1_000,
                ..
            } if payload == "hang" => assert_eq!(container, &last),
            ActorError::ServerFailed {
                what,
                stderr,
                container,
                ..
            } => {
                assert_eq!(container, &last);
                assert!(what.contains(check), "{payload}: {what}");
                if payload == "exit 3" {
                    assert!(stderr.contains("exiting with 3"), "{stderr}");
                }
            }
            other => panic!("{payload}: expected ServerFailed, got {other:?}"),
        }
        assert!(
            !daemon.containers(&ns.name).contains_key(&last),
            "{last} was destroyed"
        );
        assert!(!parent.join(&last).exists(), "{last}'s cgroup removed");
        let next = runtime.invoke("fa", "again").await.unwrap();
        cold += 1;
        assert_eq!(next.start, StartKind::Cold, "after {payload}");
        assert_ne!(next.container, last);
        assert_eq!(served(&next.output).0, 1, "a new server");
        assert_eq!(runtime.stats().cold_starts, cold);
        last = next.container;
    }
    runtime.shutdown().await.unwrap();
    assert!(daemon.containers(&ns.name).is_empty());
    assert!(!parent.exists());
}

/// Leftovers: containers a run that died left in the namespace (its backend dropped without
/// closing, their servers still running) are removed when the next backend opens (tasks
/// killed and deleted, containers deleted, cgroups gone). A container without corral's label,
/// and one of another owner, survive both the open and the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_leftovers_are_removed_at_open_and_foreign_containers_kept() {
    let daemon = Daemon::start();
    let ns = Namespace::new(&daemon, "corral-left", "ctrd-left");
    let parent = ns.parent.clone();
    daemon.create_foreign(&ns.name, "someone-else", &[("app", "theirs")]);
    daemon.create_foreign(&ns.name, "other-corral", &[(OWNER_LABEL, "/elsewhere")]);

    let open =
        || ContainerdBackend::open(&daemon.socket, &ns.name, &parent, &daemon.rootfs).unwrap();
    let crashed = open();
    let spec = server("fa");
    crashed.check_function(&spec).unwrap();
    let mut left = Vec::new();
    for _ in 0..2 {
        left.push(crashed.create(&spec).await.unwrap());
    }
    drop(crashed);
    let before = daemon.containers(&ns.name);
    for c in &left {
        assert!(
            before.contains_key(&c.id),
            "{} exists after the crash",
            c.id
        );
        assert!(
            !pids(c.cgroup.path.as_ref().unwrap()).is_empty(),
            "still running"
        );
    }

    let backend = open();
    let after = daemon.containers(&ns.name);
    let mut ids: Vec<&String> = after.keys().collect();
    ids.sort();
    assert_eq!(
        ids,
        ["other-corral", "someone-else"],
        "only the foreign ones stay"
    );
    for c in &left {
        assert!(!c.cgroup.path.as_ref().unwrap().exists(), "{} cgroup", c.id);
    }
    assert!(backend.list().unwrap().is_empty());

    // A fresh container works, and close removes it (and only it) and the parent.
    let fresh = backend.create(&spec).await.unwrap();
    assert_eq!(backend.list().unwrap(), vec![fresh.clone()]);
    backend.destroy(&fresh).unwrap();
    backend.destroy(&fresh).unwrap();
    backend.create(&spec).await.unwrap();
    backend.close().unwrap();
    let mut ids: Vec<String> = daemon.containers(&ns.name).into_keys().collect();
    ids.sort();
    assert_eq!(ids, ["other-corral", "someone-else"]);
    assert!(!parent.exists(), "{} left behind", parent.display());
    drop(backend);
}

/// A name containerd would refuse as part of an id is refused up front, naming the key and
/// the fix; so is a command missing from the root file system. A command
/// runc cannot find fails its cold start and leaves nothing behind.
#[test]
fn containerd_backend_refuses_functions_it_cannot_run() {
    let daemon = Daemon::start();
    let _ns = Namespace::new(&daemon, "corral-check", "ctrd-check");
    let parent = _ns.parent.clone();
    let backend =
        ContainerdBackend::open(&daemon.socket, "corral-check", &parent, &daemon.rootfs).unwrap();
    let err = backend
        .check_function(&server("bad__name"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("functions.bad__name.name"), "{err}");
    let mut missing = server("fa");
    missing.command = vec!["/bin/nope".into()];
    let err = backend.check_function(&missing).unwrap_err().to_string();
    assert!(
        err.contains("functions.fa.command") && err.contains("/bin/nope"),
        "{err}"
    );
    // A command runc cannot find (relative, so not checked up front) fails the cold start
    // with the daemon's answer, and leaves no container, cgroup or FIFO behind.
    let mut absent = server("fa");
    absent.command = vec!["nope".into()];
    backend.check_function(&absent).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(backend.create(&absent)) {
        Err(ActorError::Containerd { operation, source }) => {
            assert!(operation.contains("create the task"), "{operation}");
            assert!(source.to_string().contains("nope"), "{source}");
        }
        other => panic!("expected a containerd error, got {other:?}"),
    }
    assert!(daemon.containers("corral-check").is_empty());
    assert_eq!(
        std::fs::read_dir(&parent)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count(),
        0,
        "no cgroup left"
    );
    assert!(
        !Path::new("/run/corral/containerd")
            .join(parent.file_name().unwrap())
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "no FIFO directory left"
    );
    backend.close().unwrap();
    assert!(!parent.exists());
}

/// `exec` mode: each invocation execs the command into the container (created, its init never
/// started): the payload arrives on standard input, the process runs in the container's cgroup
/// with `CORRAL_CPUS` set and is confined by the `cpuset` enforcement to its group's CPU (`fe`
/// on CPU 1, and the control `fe0` on CPU 0, told apart by the same check); the container is
/// reused warm. A failing command reports its exit status and standard error; one past its
/// timeout, or past `max_output_bytes`, is killed and the container keeps serving. Shutdown
/// removes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_exec_mode_runs_a_process_per_invocation() {
    let daemon = Daemon::start();
    let ns = Namespace::new(&daemon, "corral-exec", "ctrd-exec");
    let parent = ns.parent.clone();
    let tag = format!("corral-test-{}-cpuset-exec", std::process::id());
    let mut c = daemon.config(&parent, &ns.name);
    c.enforcement.backend = EnforcementKind::Cpuset;
    c.enforcement.cpuset_prefix = tag.clone();
    ns.also_remove(Path::new("/sys/fs/cgroup/cpuset").join(&tag));
    let probe = "cat; echo; grep Cpus_allowed_list /proc/self/status; echo cpus=$CORRAL_CPUS; \
                 grep 0:: /proc/self/cgroup";
    let exec = |name: &str, script: &str| {
        let mut f = FunctionSpec::named(name);
        f.mode = FunctionMode::Exec;
        f.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
        f.timeout_ms = Some(1_000);
        f.max_output_bytes = Some(4_096);
        f
    };
    c.functions = vec![
        exec("fe", probe),
        exec("fe0", probe),
        exec("broken", "echo broken >&2; exit 3"),
        exec("slow", "sleep 30"),
        exec("chatty", "cat /dev/zero"),
    ];
    for (f, g) in [
        ("fe", "b"),
        ("fe0", "a"),
        ("broken", "b"),
        ("slow", "b"),
        ("chatty", "b"),
    ] {
        c.placement.pinned.insert(f.into(), g.into());
    }
    let runtime = Runtime::start(c).unwrap();
    let rel = |container: &str| {
        parent
            .join(container)
            .strip_prefix(cgroup2_mount().unwrap())
            .unwrap()
            .display()
            .to_string()
    };
    let mut warm = Vec::new();
    for i in 1..=5 {
        let t = Instant::now();
        let r = runtime.invoke("fe", format!("payload-{i}")).await.unwrap();
        if i > 1 {
            warm.push(t.elapsed());
        }
        let out = String::from_utf8(r.output.clone()).unwrap();
        assert!(out.starts_with(&format!("payload-{i}\n")), "{out}");
        assert!(out.contains("Cpus_allowed_list:\t1\n"), "{out}");
        assert!(out.contains("cpus=1\n"), "{out}");
        assert!(out.contains(&format!("0::/{}", rel(&r.container))), "{out}");
        assert_eq!(
            r.start,
            if i == 1 {
                StartKind::Cold
            } else {
                StartKind::Warm
            }
        );
    }
    eprintln!("containerd exec-mode warm invocations: {warm:?}");
    // The control: the same check sees fe0's processes on CPU 0.
    let out = runtime.invoke("fe0", "x").await.unwrap().output;
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("Cpus_allowed_list:\t0\n") && out.contains("cpus=0\n"),
        "{out}"
    );

    match control_error(runtime.invoke("broken", "").await) {
        ActorError::FunctionFailed { status, stderr, .. } => {
            assert!(status.contains('3'), "{status}");
            assert_eq!(stderr, "broken");
        }
        other => panic!("expected FunctionFailed, got {other:?}"),
    }
    for (function, payload) in [("slow", ""), ("chatty", "")] {
        let t = Instant::now();
        let err = control_error(runtime.invoke(function, payload).await);
        match (&err, function) {
            (
                ActorError::FunctionTimedOut {
                    timeout_ms: 1_000,
                    container,
                    ..
                },
                "slow",
            ) => {
                // Killed with everything it started: only the never-started init is left.
                assert_eq!(pids(&parent.join(container)).len(), 1, "only the init left");
            }
            (ActorError::OutputTooLarge { limit: 4_096, .. }, "chatty") => {}
            _ => panic!("{function}: unexpected {err:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{function} took {:?}",
            t.elapsed()
        );
    }
    // The killed ones' containers keep serving: nothing of the killed process is left in them.
    let containers_before = daemon.containers(&ns.name).len();
    let again = runtime.invoke("fe", "after").await.unwrap();
    assert_eq!(again.start, StartKind::Warm);
    assert_eq!(daemon.containers(&ns.name).len(), containers_before);
    assert_eq!(runtime.stats().cold_starts, 5);

    runtime.shutdown().await.unwrap();
    assert!(daemon.containers(&ns.name).is_empty());
    assert!(!parent.exists(), "{} left behind", parent.display());
    assert!(!Path::new("/sys/fs/cgroup/cpuset").join(&tag).exists());
}

/// Concurrency: 48 invocations from 16 callers with an inflight limit of 4 each get a whole
/// server (the framed stream never interleaves: every reply is a well-formed
/// `served <n> by pid <pid>` for its own payload), at most 4 containers are ever made, and
/// each server's counter runs 1..k without gaps, so that the k invocations it served add up
/// to the 48. The backend's runtime, the caller's and the actix thread never wait on each
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_concurrent_invocations_each_get_a_whole_server() {
    let daemon = Daemon::start();
    let ns = Namespace::new(&daemon, "corral-many", "ctrd-many");
    let mut c = daemon.config(&ns.parent, &ns.name);
    c.enforcement.backend = EnforcementKind::Memory;
    c.limiter.initial = 4;
    c.limiter.max = 4;
    let runtime = Runtime::start(c).unwrap();
    let callers: Vec<_> = (0..16)
        .map(|caller| {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..3 {
                    let payload = format!("caller {caller} call {i}");
                    let r = runtime.invoke("fa", payload.clone()).await.unwrap();
                    let text = String::from_utf8(r.output.clone()).unwrap();
                    assert!(text.ends_with(&format!(": {payload}")), "{text}");
                    seen.push((r.container.clone(), served(&r.output).0));
                }
                seen
            })
        })
        .collect();
    let mut counts: HashMap<String, Vec<u64>> = HashMap::new();
    for caller in callers {
        for (container, n) in caller.await.unwrap() {
            counts.entry(container).or_default().push(n);
        }
    }
    assert!(
        counts.len() <= 4,
        "at most the limit of containers: {counts:?}"
    );
    let mut total = 0;
    for (container, mut ns) in counts {
        ns.sort();
        let expected: Vec<u64> = (1..=ns.len() as u64).collect();
        assert_eq!(
            ns, expected,
            "{container}'s server counted each of its invocations"
        );
        total += ns.len();
    }
    assert_eq!(total, 48);
    assert!(runtime.stats().cold_starts <= 4);
    runtime.shutdown().await.unwrap();
    assert!(daemon.containers(&ns.name).is_empty());
    assert!(!ns.parent.exists());
}

/// A restart of the container manager (its release handler panics, through a test-only
/// failpoint) rebuilds the pools from the backend's `list`, a gRPC request made from the actix
/// thread through the backend's own runtime: the warm container comes back from the daemon,
/// so the one server keeps serving (its counter keeps counting) and there is still one cold
/// start. Every invocation completes or answers the panic's error; none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_manager_restart_rebuilds_the_pool_from_the_daemon() {
    use corral_actors::supervision::{points, Failpoints};
    let daemon = Daemon::start();
    let ns = Namespace::new(&daemon, "corral-restart", "ctrd-restart");
    let mut c = daemon.config(&ns.parent, &ns.name);
    c.enforcement.backend = EnforcementKind::Memory;
    // Every release through the manager, where the failpoint is.
    c.containers.warm_lane = false;
    let failpoints = std::sync::Arc::new(Failpoints::new());
    failpoints.arm(points::RELEASE_CONTAINER, 2, 3);
    let runtime = Runtime::builder(c)
        .failpoints(failpoints.clone())
        .start()
        .unwrap();
    let mut counts = Vec::new();
    for i in 0..12 {
        let r = tokio::time::timeout(Duration::from_secs(20), runtime.invoke("fa", "x"))
            .await
            .unwrap_or_else(|_| panic!("invocation {i} hung"));
        match r {
            Ok(r) => counts.push(served(&r.output).0),
            Err(RuntimeError::Control {
                source: ActorError::HandlerPanicked { .. } | ActorError::ActorUnavailable { .. },
            }) => {}
            Err(e) => panic!("invocation {i}: {e:?}"),
        }
    }
    assert_eq!(failpoints.fired(points::RELEASE_CONTAINER), 3);
    assert_eq!(
        runtime.stats().cold_starts,
        1,
        "the rebuilt pool holds the warm container"
    );
    assert!(
        counts.windows(2).all(|w| w[0] < w[1]),
        "one server counts on: {counts:?}"
    );
    assert_eq!(daemon.containers(&ns.name).len(), 1);
    runtime.shutdown().await.unwrap();
    assert!(daemon.containers(&ns.name).is_empty());
    assert!(!ns.parent.exists());
}
