//! VM tests of the actor runtime end to end: the `local` container backend (cgroup v2
//! directories, real processes) with the `bpf` map writer and the scheduler loaded by the
//! runtime's BpfLoader. CPU-bound functions run in two groups; the scheduler's own statistics
//! must show zero placement violations, and per-thread sampling of the CPU each function thread
//! ran on (field 39 of `/proc/<pid>/task/<tid>/stat`) must agree.
//!
//! A second test runs the same functions with the `cpuset` map writer on cgroup v2's cpuset
//! controller and no scheduler: the fallback path, confined by `cpuset.cpus` instead.
//!
//! The function is `corral-spin --report` (the workspace binary the harness puts on the guest's
//! PATH): it burns CPU and prints its scheduling policy and the CPUs its threads were seen on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral::{
    ContainerBackendKind, EnforcementKind, FunctionSpec, GroupConfig, PolicyKind, Runtime,
    RuntimeConfig, SchedulerMode, StartKind,
};
use corral_actors::bpf_loader::SchedulerState;
use corral_bpf::PinnedMaps;
use corral_tests::guest::require_guest;

fn field<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.split_once(key).map(|(_, value)| value.trim()))
        .unwrap_or_else(|| panic!("no `{key}` line in the function's output:\n{output}"))
}

/// Checks a `corral-spin --report` result: it ran with scheduling `policy` (0 `SCHED_NORMAL`, 7
/// `SCHED_EXT`) and only on its group's CPU (`fa` on 0, `fb` on 1). Returns that CPU.
fn assert_ran_in_group(r: &corral::InvocationResult, policy: &str) -> &'static str {
    let out = String::from_utf8_lossy(&r.output);
    let cpu = if r.function == "fa" { "0" } else { "1" };
    assert_eq!(
        field(&out, "policy="),
        policy,
        "{} ran with the wrong policy:\n{out}",
        r.function
    );
    assert_eq!(
        field(&out, "cpus-seen="),
        cpu,
        "{} ran outside group {} (CPU {cpu}):\n{out}",
        r.function,
        r.group_name
    );
    cpu
}

/// Starts `n` invocations at once, alternating `fa` and `fb`.
fn invoke_alternately(
    runtime: &corral::RuntimeHandle,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<corral::InvocationResult, corral::RuntimeError>>> {
    (0..n)
        .map(|i| {
            let handle = runtime.clone();
            tokio::spawn(async move {
                handle
                    .invoke(if i % 2 == 0 { "fa" } else { "fb" }, vec![])
                    .await
            })
        })
        .collect()
}

/// Two groups (CPU 0 and CPU 1), `corral-spin --report` functions `fa` and `fb` pinned to
/// them, local containers under `parent`, room for eight invocations at once.
fn two_group_config(parent: &std::path::Path) -> RuntimeConfig {
    let burner = |name: &str| {
        let mut f = FunctionSpec::named(name);
        f.command = ["corral-spin", "--millis", "300", "--report"]
            .map(String::from)
            .to_vec();
        f
    };
    let group = |name: &str, cpus: &str| GroupConfig {
        name: name.into(),
        cpus: cpus.into(),
        slice_us: 3_000,
        order: Default::default(),
        borrow: false,
        exclusive: false,
    };
    let mut c = RuntimeConfig::with_groups(vec![group("a", "0"), group("b", "1")]);
    c.limiter.initial = 8;
    c.limiter.max = 8;
    c.monitor.enabled = false;
    c.placement.policy = PolicyKind::Pinned;
    c.placement.pinned.insert("fa".into(), "a".into());
    c.placement.pinned.insert("fb".into(), "b".into());
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.to_path_buf());
    c.functions = vec![burner("fa"), burner("fb")];
    c
}

/// [`two_group_config`] with the `bpf` backend, the runtime loading its own scheduler, on pins
/// and a cgroup parent named after `name`: (config, pin directory, cgroup parent).
fn bpf_config(name: &str) -> (RuntimeConfig, PathBuf, PathBuf) {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/corral-vm-{name}"));
    let parent = PathBuf::from(format!("/sys/fs/cgroup/corral-vm-{name}"));
    let mut c = two_group_config(&parent);
    c.enforcement.backend = EnforcementKind::Bpf;
    c.enforcement.pin_dir = pin_dir.clone();
    c.enforcement.load_scheduler = true;
    (c, pin_dir, parent)
}

/// The callers' side: a 2-worker tokio runtime, as a worker would run.
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `cpuset` fallback with cgroup v2's cpuset controller (the guest has it enabled): the same
/// two groups, no scheduler. Every function thread stays in the fair class and only on its
/// group's CPU, because each container cgroup's own `cpuset.cpus` confines it; shutdown removes
/// the container cgroups.
#[test]
fn runtime_confines_functions_with_cgroup_v2_cpuset_without_a_scheduler() {
    require_guest();
    let _no_scheduler = crate::sched::without_shared_scheduler();
    let parent = PathBuf::from("/sys/fs/cgroup/corral-vm-cpuset");
    let mut c = two_group_config(&parent);
    c.enforcement.backend = EnforcementKind::Cpuset;
    tokio_runtime().block_on(async {
        let runtime = Runtime::start(c).expect("start the runtime");
        assert_eq!(runtime.stats().enforcement_backend, "cpuset");
        let calls = invoke_alternately(&runtime, 6);
        for call in calls {
            let r = call.await.unwrap().expect("invocation");
            let cpu = assert_ran_in_group(&r, "0");
            let cpuset = parent.join(&r.container).join("cpuset.cpus");
            let written = std::fs::read_to_string(&cpuset).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (is cpuset enabled for the containers?)",
                    cpuset.display()
                )
            });
            assert_eq!(written.trim(), cpu);
        }
        assert_eq!(
            std::fs::read_to_string("/sys/kernel/sched_ext/state")
                .unwrap()
                .trim(),
            "disabled"
        );
        runtime.shutdown().await.expect("shutdown");
        assert!(!parent.exists(), "container cgroups left behind");
    });
}

/// Eight CPU-bound invocations at once, `fa` and `fb` alternating, with the scheduler the
/// runtime loads in full switch (the default enforcement mode): every function thread stays
/// `SCHED_NORMAL` (one map update per container places it, no policy switch) and runs only on
/// its group's CPU, and the scheduler's statistics agree (runs counted in both groups, zero
/// violations). Shutdown removes every cgroup entry and detaches the scheduler.
#[test]
fn runtime_runs_cpu_bound_functions_in_two_groups_without_violations() {
    require_guest();
    // The runtime attaches its own scheduler; the suite's shared one must be off meanwhile.
    let _no_scheduler = crate::sched::without_shared_scheduler();
    let (mut c, pin_dir, parent) = bpf_config("runtime");
    assert_eq!(c.enforcement.mode, SchedulerMode::Full, "the default mode");
    c.metrics.listen = Some("127.0.0.1:0".into());

    tokio_runtime().block_on(async {
        let runtime = Runtime::start(c).expect("start the runtime");
        let metrics_url = format!("http://{}/metrics", runtime.metrics_addr().unwrap());
        let scrape = || async {
            reqwest::get(&metrics_url)
                .await
                .expect("scrape /metrics")
                .text()
                .await
                .unwrap()
        };
        let sample = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in the scrape:\n{text}"))
        };
        let before = scrape().await;
        let status = runtime.scheduler_status().await.unwrap();
        assert_eq!(status.state, SchedulerState::Running, "{status:?}");
        assert_eq!(
            std::fs::read_to_string("/sys/kernel/sched_ext/state")
                .unwrap()
                .trim(),
            "enabled"
        );

        let calls = invoke_alternately(&runtime, 8);
        let mut starts = Vec::new();
        for call in calls {
            let r = call.await.unwrap().expect("invocation");
            assert_ran_in_group(&r, "0");
            starts.push(r.start);
        }
        assert!(starts.contains(&StartKind::Cold));

        // The scheduler's per-group statistics, as Prometheus sees them, moved with the work.
        let after = scrape().await;
        for group in ["a", "b"] {
            let runs = format!("corral_group_runs_total{{group=\"{group}\"}}");
            assert!(
                sample(&after, &runs) > sample(&before, &runs),
                "{runs} did not move"
            );
            assert_eq!(
                sample(
                    &after,
                    &format!("corral_group_violations_total{{group=\"{group}\"}}")
                ),
                0.0
            );
            assert!(
                sample(
                    &after,
                    &format!("corral_group_runqueue_latency_seconds_count{{group=\"{group}\"}}")
                ) > 0.0
            );
            assert!(
                sample(
                    &after,
                    &format!("corral_group_oncpu_seconds_total{{group=\"{group}\"}}")
                ) > 0.0
            );
        }
        assert_eq!(
            sample(&after, "corral_scheduler_state{state=\"running\"}"),
            1.0
        );
        assert_eq!(
            sample(
                &after,
                "corral_invocations_total{function=\"fa\",outcome=\"ok\"}"
            ),
            4.0
        );

        let maps = PinnedMaps::open(&pin_dir).unwrap();
        let stats: Vec<_> = [0, 1]
            .iter()
            .map(|&g| maps.stats().read(g).unwrap())
            .collect();
        for (g, s) in stats.iter().enumerate() {
            assert!(s.runs > 0, "group {g} recorded no runs: {stats:#?}");
            assert_eq!(
                s.violations, 0,
                "group {g} counted runs outside its CPUs: {stats:#?}"
            );
        }
        assert_eq!(
            maps.cgroups().entries().unwrap().len(),
            runtime.stats().live_containers
        );

        runtime.shutdown().await.expect("shutdown");
        assert!(
            maps.cgroups().entries().unwrap().is_empty(),
            "cgroup entries left behind"
        );
        assert!(!parent.exists(), "container cgroups left behind");
        // Detaching completes asynchronously in the kernel; give it a bounded moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string("/sys/kernel/sched_ext/state").unwrap();
            if state.trim() == "disabled" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sched_ext still {state:?} after shutdown"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(maps);
        PinnedMaps::remove_pins(&pin_dir).unwrap();
    });
}

/// The scheduler is forced out (sysrq-S, as an operator or the kernel's own checks would)
/// while eight CPU-bound invocations run: every one of them completes (their tasks fall back
/// to the fair class meanwhile), the loader notices the exit (it polls every 200 ms) and
/// reattaches after its first backoff (250 ms) and a fresh load (1.8 s of guest time under TCG,
/// most of it the verifier; the bound asserted is 5 s), the pinned maps keep every enforcement
/// across the exit, and placement resumes: the invocations after the reattach run only on their
/// group's CPU, with no violation counted.
#[test]
fn runtime_reattaches_after_the_scheduler_is_forced_out_and_keeps_placing() {
    require_guest();
    let _no_scheduler = crate::sched::without_shared_scheduler();
    let (c, pin_dir, _parent) = bpf_config("forced");

    tokio_runtime().block_on(async {
        let runtime = Runtime::start(c).expect("start the runtime");
        for call in invoke_alternately(&runtime, 4) {
            assert_ran_in_group(&call.await.unwrap().expect("invocation"), "0");
        }
        let maps = PinnedMaps::open(&pin_dir).unwrap();

        let calls = invoke_alternately(&runtime, 8);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let forced = Instant::now();
        std::fs::write("/proc/sysrq-trigger", "S").expect("sysrq-S");
        let reattached = loop {
            let s = runtime.stats().scheduler;
            if s.exits >= 1 && s.state == SchedulerState::Running {
                break forced.elapsed();
            }
            assert!(
                forced.elapsed() < Duration::from_secs(10),
                "no reattach 10 s after the scheduler was forced out: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let status = runtime.scheduler_status().await.unwrap();
        println!(
            "forced out: reattached after {reattached:?}; last exit: {:?}",
            status.last_exit
        );
        assert_eq!(status.exits, 1, "{status:?}");
        assert!(
            reattached < Duration::from_secs(5),
            "reattached only after {reattached:?}"
        );
        for call in calls {
            call.await
                .unwrap()
                .expect("an invocation in flight during the exit");
        }
        assert_eq!(
            maps.cgroups().entries().unwrap().len(),
            runtime.stats().live_containers,
            "the pinned maps lost an enforcement across the exit"
        );

        for g in [0, 1] {
            maps.stats().reset(g).unwrap();
        }
        for call in invoke_alternately(&runtime, 8) {
            assert_ran_in_group(&call.await.unwrap().expect("invocation"), "0");
        }
        for g in [0, 1] {
            let s = maps.stats().read(g).unwrap();
            assert!(
                s.runs > 0,
                "group {g} recorded no runs after the reattach: {s:?}"
            );
            assert_eq!(s.violations, 0, "group {g}: {s:?}");
        }
        runtime.shutdown().await.expect("shutdown");
        assert!(maps.cgroups().entries().unwrap().is_empty());
        drop(maps);
        PinnedMaps::remove_pins(&pin_dir).unwrap();
    });
}

/// `enforcement.when_detached = "cpuset"`: while the scheduler is down (forced out by
/// sysrq-S, its reattach delayed by a 4 s backoff), invocations are confined by their
/// container's own cgroup v2 `cpuset.cpus` (their group's CPU) instead of running unplaced,
/// and counted; once the scheduler is back, a container's first invocation clears its
/// `cpuset.cpus` again and the scheduler alone places it, with no violation.
#[test]
fn cpuset_fallback_confines_invocations_while_the_scheduler_is_down() {
    require_guest();
    let _no_scheduler = crate::sched::without_shared_scheduler();
    let (mut c, pin_dir, parent) = bpf_config("fallback");
    c.enforcement.when_detached = corral::DetachedPolicy::Cpuset;

    tokio_runtime().block_on(async {
        let runtime = Runtime::builder(c)
            .loader_timing(corral_actors::bpf_loader::LoaderTiming {
                initial_backoff: Duration::from_secs(4),
                ..Default::default()
            })
            .start()
            .expect("start the runtime");
        let cpuset_of = |r: &corral::InvocationResult| {
            std::fs::read_to_string(parent.join(&r.container).join("cpuset.cpus"))
                .expect("the container's cpuset.cpus")
                .trim()
                .to_string()
        };
        for call in invoke_alternately(&runtime, 2) {
            let r = call.await.unwrap().expect("invocation");
            assert_ran_in_group(&r, "0");
            assert_eq!(cpuset_of(&r), "", "no cpuset while the scheduler places");
        }
        assert_eq!(runtime.stats().invocations_cpuset_fallback, 0);

        std::fs::write("/proc/sysrq-trigger", "S").expect("sysrq-S");
        let deadline = Instant::now() + Duration::from_secs(5);
        while runtime.stats().scheduler.state == SchedulerState::Running {
            assert!(Instant::now() < deadline, "the loader never saw the exit");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for call in invoke_alternately(&runtime, 2) {
            let r = call
                .await
                .unwrap()
                .expect("invocation while the scheduler is down");
            let cpu = assert_ran_in_group(&r, "0");
            assert_eq!(cpuset_of(&r), cpu, "confined by its cgroup's cpuset");
        }
        assert_ne!(
            runtime.stats().scheduler.state,
            SchedulerState::Running,
            "the scheduler came back before the fallback was seen: lengthen the backoff"
        );
        assert_eq!(runtime.stats().invocations_cpuset_fallback, 2);

        let deadline = Instant::now() + Duration::from_secs(30);
        while runtime.stats().scheduler.state != SchedulerState::Running {
            assert!(Instant::now() < deadline, "no reattach after the backoff");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let maps = PinnedMaps::open(&pin_dir).unwrap();
        for g in [0, 1] {
            maps.stats().reset(g).unwrap();
        }
        for call in invoke_alternately(&runtime, 2) {
            let r = call.await.unwrap().expect("invocation after the reattach");
            assert_ran_in_group(&r, "0");
            assert_eq!(cpuset_of(&r), "", "cleared once the scheduler is back");
        }
        for g in [0, 1] {
            let s = maps.stats().read(g).unwrap();
            assert!(s.runs > 0, "group {g}: {s:?}");
            assert_eq!(s.violations, 0, "group {g}: {s:?}");
        }
        assert_eq!(runtime.stats().invocations_cpuset_fallback, 2);
        runtime.shutdown().await.expect("shutdown");
        drop(maps);
        PinnedMaps::remove_pins(&pin_dir).unwrap();
    });
}
