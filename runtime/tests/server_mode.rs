//! Host tests of the `local` backend's `server` mode and of the per-invocation output cap, on
//! real cgroups and real processes (root, as corral itself needs). The server is
//! `corral-serve`, the example server this crate ships.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral::config::cgroup2_mount;
use corral::ActorError;
use corral::{
    ContainerBackendKind, EnforcementKind, FunctionMode, FunctionSpec, GroupConfig, Runtime,
    RuntimeConfig, RuntimeError, StartKind,
};

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create cgroups: run them as root (`cargo xtask test` does)"
    );
}

fn parent(name: &str) -> PathBuf {
    cgroup2_mount()
        .expect("a cgroup2 mount")
        .join(format!("corral-test-{}-{name}", std::process::id()))
}

fn config(parent: &Path, functions: Vec<FunctionSpec>) -> RuntimeConfig {
    let mut c = RuntimeConfig::with_groups(vec![GroupConfig {
        name: "a".into(),
        cpus: "0".into(),
        slice_us: 5_000,
        order: Default::default(),
        borrow: false,
        exclusive: false,
    }]);
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.to_path_buf());
    c.enforcement.backend = EnforcementKind::Memory;
    c.functions = functions;
    c
}

fn server(name: &str) -> FunctionSpec {
    let mut f = FunctionSpec::named(name);
    f.mode = FunctionMode::Server;
    f.command = vec![env!("CARGO_BIN_EXE_corral-serve").into()];
    f.timeout_ms = Some(1_000);
    f.max_output_bytes = Some(4_096);
    f
}

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

fn alive(pid: u32) -> bool {
    // A zombie counts as gone: it has exited.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn control_error(r: Result<corral::InvocationResult, RuntimeError>) -> ActorError {
    match r {
        Err(RuntimeError::Control { source }) => source,
        other => panic!("expected a control-plane error, got {other:?}"),
    }
}

/// One server process serves every invocation of its warm container, inside the container's
/// cgroup, one at a time. A failed reply keeps the container; a server that answers too much,
/// dies, writes something that is not a frame, or hangs past the timeout gets its container
/// destroyed (its process gone) and the invocation a clear error, and the next invocation
/// cold-starts a new server. Shutdown leaves no process and no cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_serves_many_invocations_and_failures_destroy_its_container() {
    require_root();
    let parent = parent("server");
    let runtime = Runtime::start(config(&parent, vec![server("serve")])).unwrap();

    let mut pid = None;
    for i in 1..=10u64 {
        let r = runtime.invoke("serve", format!("hello {i}")).await.unwrap();
        let (n, p) = served(&r.output);
        assert_eq!(n, i, "one process counts every invocation");
        assert_eq!(*pid.get_or_insert(p), p, "the same process serves them all");
        assert_eq!(
            r.start,
            if i == 1 {
                StartKind::Cold
            } else {
                StartKind::Warm
            }
        );
        if i == 1 {
            let procs =
                std::fs::read_to_string(parent.join(&r.container).join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|l| l.trim() == p.to_string()),
                "the server runs in its container's cgroup: {procs}"
            );
        }
    }
    let pid = pid.unwrap();
    assert_eq!(runtime.stats().cold_starts, 1);
    assert!(runtime.stats().invocations_warm_lane >= 8);

    // The function's own failure: the server is fine and keeps serving.
    match control_error(runtime.invoke("serve", "fail no such image").await) {
        ActorError::FunctionFailed { stderr, .. } => assert_eq!(stderr, "no such image"),
        other => panic!("expected FunctionFailed, got {other:?}"),
    }
    let r = runtime.invoke("serve", "still there").await.unwrap();
    assert_eq!(served(&r.output), (12, pid));

    // Each of these spoils the server: its container goes, and a new one starts next time.
    let mut last_pid = pid;
    let mut cold = 1;
    for (payload, check) in [
        ("big 5000", "limit"),
        ("exit 3", "exit status: 3"),
        ("garbage", "status byte"),
        ("hang", "timed out"),
    ] {
        let err = control_error(runtime.invoke("serve", payload).await);
        let text = err.to_string();
        match (&err, payload) {
            (ActorError::OutputTooLarge { limit: 4_096, .. }, "big 5000") => {}
            (ActorError::ServerFailed { stderr, .. }, "exit 3") => {
                assert!(stderr.contains("exiting with 3"), "{stderr}")
            }
            (ActorError::ServerFailed { .. }, "garbage") => {}
            (
                ActorError::FunctionTimedOut {
                    timeout_ms: 1_000, ..
                },
                "hang",
            ) => {}
            _ => panic!("{payload}: unexpected {err:?}"),
        }
        if payload != "hang" {
            assert!(text.contains(check), "{payload}: {text}");
        }
        assert!(
            !alive(last_pid),
            "{payload}: the spoiled server {last_pid} is gone"
        );
        let r = runtime.invoke("serve", "fresh").await.unwrap();
        cold += 1;
        assert_eq!(
            r.start,
            StartKind::Cold,
            "{payload}: the next one cold-starts"
        );
        let (n, p) = served(&r.output);
        assert_eq!(n, 1);
        assert_ne!(p, last_pid);
        last_pid = p;
        assert_eq!(runtime.stats().cold_starts, cold);
        assert_eq!(runtime.stats().in_flight, 0);
    }
    assert_eq!(runtime.stats().live_containers, 1);

    runtime.shutdown().await.unwrap();
    assert!(!alive(last_pid), "shutdown stops the server");
    assert!(!parent.exists(), "shutdown removes every cgroup it made");
}

/// A server command that cannot start fails the cold start with the spawn error, and leaves
/// no cgroup behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_leaves_nothing() {
    require_root();
    let parent = parent("nostart");
    let mut f = server("missing");
    f.command = vec!["/nonexistent/corral-server".into()];
    let runtime = Runtime::start(config(&parent, vec![f])).unwrap();
    match control_error(runtime.invoke("missing", "x").await) {
        ActorError::Spawn { command, .. } => {
            assert_eq!(command, vec!["/nonexistent/corral-server".to_string()])
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
    let children: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(
        children.is_empty(),
        "no container cgroup left: {children:?}"
    );
    assert_eq!(runtime.stats().in_flight, 0);
    runtime.shutdown().await.unwrap();
    assert!(!parent.exists());
}

/// A server starts only once its container is enforced: under the `cpuset` enforcement it is
/// confined to its group's CPU from its first instruction (its start-up is function work, and
/// before enforcement it would run on every CPU, beside the control plane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_starts_already_confined_to_its_group() {
    require_root();
    let parent = parent("confined");
    let tag = format!("corral-test-{}-srvcpuset", std::process::id());
    let mut c = config(&parent, vec![server("s")]);
    c.enforcement.backend = EnforcementKind::Cpuset;
    c.enforcement.cpuset_prefix = tag;
    let runtime = Runtime::start(c).unwrap();
    let first = runtime.invoke("s", "startup").await.unwrap();
    assert_eq!(first.start, StartKind::Cold);
    let text = String::from_utf8_lossy(&first.output).into_owned();
    assert!(
        text.contains("started with cpus allowed 0 on cpu 0"),
        "the server started outside group a's CPU 0: {text:?}"
    );
    runtime.shutdown().await.unwrap();
    assert!(!parent.exists());
}

/// `exec` mode: a command that writes without end is killed (with everything in its cgroup)
/// as soon as it passes `max_output_bytes`, and the invocation fails with `OutputTooLarge`
/// long before its timeout; output under the cap arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_past_the_cap_is_cut_off_and_reported() {
    require_root();
    let parent = parent("cap");
    let mut endless = FunctionSpec::named("endless");
    endless.command = vec!["/usr/bin/yes".into()];
    endless.max_output_bytes = Some(10_000);
    endless.timeout_ms = Some(60_000);
    let mut fits = FunctionSpec::named("fits");
    fits.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "head -c 10000 /dev/zero".into(),
    ];
    fits.max_output_bytes = Some(10_000);
    let runtime = Runtime::start(config(&parent, vec![endless, fits])).unwrap();
    let started = std::time::Instant::now();
    match control_error(runtime.invoke("endless", "").await) {
        ActorError::OutputTooLarge { limit, .. } => assert_eq!(limit, 10_000),
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cut off at the cap, not at the timeout"
    );
    let r = runtime.invoke("fits", "").await.unwrap();
    assert_eq!(r.output.len(), 10_000);
    assert_eq!(runtime.stats().in_flight, 0);
    runtime.shutdown().await.unwrap();
    assert!(!parent.exists());
}
