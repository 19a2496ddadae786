//! The worker API end to end on the host, with the `sim` container backend and in-memory maps:
//! exact inflight limiting under 200 concurrent invocations, timings and thread hops, use from
//! several tokio runtimes, configuration errors that name the key, the cpuset fallback notice,
//! and a graceful shutdown that leaves nothing behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::{
    ContainerBackendKind, EnforcementKind, FunctionSpec, GroupConfig, Runtime, RuntimeConfig,
    RuntimeError, StartKind,
};
use corral_actors::bpf_loader::{SchedExtSupport, SchedulerState};
use corral_actors::container_backend::sim::SimBackend;
use corral_actors::container_backend::{Container, ContainerBackend, ContainerInfo};
use corral_actors::map_backend::memory::MemoryMaps;
use corral_actors::ActorError;
use futures::future::BoxFuture;
use futures::FutureExt;

fn group(name: &str, cpus: &str) -> GroupConfig {
    GroupConfig {
        name: name.into(),
        cpus: cpus.into(),
        slice_us: 5_000,
        order: Default::default(),
        borrow: false,
        exclusive: false,
    }
}

fn config(limit: usize) -> RuntimeConfig {
    let mut c = RuntimeConfig::with_groups(vec![group("a", "0"), group("b", "1")]);
    c.limiter.initial = limit;
    c.limiter.min = 1;
    c.limiter.max = limit;
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Sim);
    c.enforcement.backend = EnforcementKind::Memory;
    c
}

/// Wraps the sim backend: records how many invocations run at once, and holds each destroy
/// while its gate is closed (a backend whose teardown takes long: a cgroup waiting for its
/// killed processes, a container runtime's call).
#[derive(Debug)]
struct ConcurrencyProbe {
    inner: SimBackend,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    /// Closed (false) holds destroys; open by default.
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Destroys that reached the gate.
    destroying: Arc<AtomicUsize>,
}

impl ConcurrencyProbe {
    fn new(cold_start: Duration) -> Self {
        ConcurrencyProbe {
            inner: SimBackend::new(cold_start),
            now: Arc::new(AtomicUsize::new(0)),
            max: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new())),
            destroying: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set_gate(&self, open: bool) {
        let (state, cv) = &*self.gate;
        *state.lock().unwrap() = open;
        cv.notify_all();
    }
}

impl ContainerBackend for ConcurrencyProbe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn check_function(&self, spec: &FunctionSpec) -> Result<(), ActorError> {
        self.inner.check_function(spec)
    }
    fn create(&self, spec: &FunctionSpec) -> BoxFuture<'static, Result<ContainerInfo, ActorError>> {
        self.inner.create(spec)
    }
    fn destroy(&self, c: &ContainerInfo) -> Result<(), ActorError> {
        self.destroying.fetch_add(1, Ordering::SeqCst);
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.inner.destroy(c)
    }
    fn list(&self) -> Result<Vec<ContainerInfo>, ActorError> {
        self.inner.list()
    }
    fn run(
        &self,
        c: &Container,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, ActorError>> {
        let (now, max) = (Arc::clone(&self.now), Arc::clone(&self.max));
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(n, Ordering::SeqCst);
        let run = self.inner.run(c, payload);
        async move {
            let out = run.await;
            now.fetch_sub(1, Ordering::SeqCst);
            out
        }
        .boxed()
    }
    fn close(&self) -> Result<(), ActorError> {
        self.inner.close()
    }
}

/// With a limit of 4 and 200 invocations started at once from a multi-threaded tokio runtime,
/// at most 4 run at any moment, exactly 4 do at the peak, and all 200 complete. The probe sits
/// in the container backend, outside the limiter it checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_four_admits_exactly_four_of_two_hundred() {
    let probe = Arc::new(ConcurrencyProbe::new(Duration::from_micros(200)));
    let mut c = config(4);
    let mut f = FunctionSpec::named("work");
    f.simulated_run_us = 2_000;
    c.functions.push(f);
    let runtime = Runtime::builder(c)
        .container_backend(probe.clone())
        .start()
        .unwrap();
    let calls = (0..200).map(|i| {
        let rt = runtime.clone();
        tokio::spawn(async move { rt.invoke("work", vec![i as u8]).await })
    });
    let results = futures::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap().unwrap_or_else(|e| panic!("invocation {i}: {e}"));
        assert_eq!(r.output, vec![i as u8]);
    }
    assert_eq!(
        probe.max.load(Ordering::SeqCst),
        4,
        "observed peak concurrency"
    );
    let stats = runtime.stats();
    assert_eq!(stats.max_in_flight, 4);
    assert_eq!(stats.invocations_completed, 200);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.available_permits, 4);
    assert!(
        stats.cold_starts <= 4,
        "at most one container per concurrent slot: {}",
        stats.cold_starts
    );
    runtime.shutdown().await.unwrap();
}

/// Load: 20,000 invocations from 64 concurrent callers (each a task on a 2-worker runtime,
/// 312 or 313 calls apiece) with an inflight limit of 8. The peak seen inside the container
/// backend is exactly 8, every invocation answers its own payload, the counters add up to
/// 20,000, and afterwards no permit, lease, container or map entry is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_invocations_from_64_callers_keep_the_limit_and_leak_nothing() {
    const TOTAL: usize = 20_000;
    const CALLERS: usize = 64;
    let probe = Arc::new(ConcurrencyProbe::new(Duration::ZERO));
    let mut c = config(8);
    for name in ["a", "b", "c"] {
        let mut f = FunctionSpec::named(name);
        f.simulated_run_us = 50;
        c.functions.push(f);
    }
    let maps = MemoryMaps::new();
    let runtime = Runtime::builder(c)
        .memory_maps(maps.clone())
        .container_backend(probe.clone())
        .start()
        .unwrap();
    let callers: Vec<_> = (0..CALLERS)
        .map(|k| {
            let rt = runtime.clone();
            tokio::spawn(async move {
                let mut ok = 0usize;
                for i in (k..TOTAL).step_by(CALLERS) {
                    let payload = (i as u32).to_le_bytes().to_vec();
                    let r = rt
                        .invoke(["a", "b", "c"][i % 3], payload.clone())
                        .await
                        .unwrap_or_else(|e| panic!("invocation {i}: {e}"));
                    assert_eq!(r.output, payload, "invocation {i} got another's answer");
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let mut done = 0;
    for c in callers {
        done += c.await.unwrap();
    }
    assert_eq!(done, TOTAL);
    assert_eq!(
        probe.max.load(Ordering::SeqCst),
        8,
        "observed peak in flight"
    );
    let stats = runtime.stats();
    assert_eq!(stats.max_in_flight, 8);
    assert_eq!(stats.invocations_completed, TOTAL as u64);
    assert_eq!(stats.invocations_failed, 0);
    assert_eq!(stats.cold_starts + stats.warm_starts, TOTAL as u64);
    assert_eq!((stats.in_flight, stats.available_permits), (0, 8));
    let report = runtime.shutdown().await.unwrap();
    assert_eq!(report.leases_held, 0);
    assert_eq!(report.permits_available, report.limit);
    assert!(
        probe.inner.is_empty(),
        "containers left: {}",
        probe.inner.len()
    );
    assert!(
        maps.entries().is_empty(),
        "map entries left: {:?}",
        maps.entries()
    );
}

/// An invocation reports where its time went. The cold one crosses threads exactly twice
/// (worker → actix, actix → worker); the warm one, on the same container and already enforced
/// onto the pinned group, takes the warm lane and crosses none. With the lane off, the warm
/// one takes the actor path and its two hops.
#[tokio::test]
async fn invocation_reports_timings_and_thread_hops() {
    for lane in [true, false] {
        invocation_timings_and_hops(lane).await;
    }
}

/// The warm lane is taken from a `block_on` and from a task alike, with no hop either way.
#[test]
fn warm_lane_serves_block_on_and_tasks() {
    let mut c = config(2);
    c.functions.push(FunctionSpec::named("echo"));
    let runtime = Runtime::start(c).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cold = rt.block_on(runtime.invoke("echo", b"x".to_vec())).unwrap();
    let warm = rt.block_on(runtime.invoke("echo", b"y".to_vec())).unwrap();
    assert!(!cold.warm_lane);
    assert!(warm.warm_lane);
    assert_eq!((warm.start, warm.thread_hops), (StartKind::Warm, 0));
    let in_task = {
        let runtime = runtime.clone();
        rt.block_on(async move {
            tokio::spawn(async move { runtime.invoke("echo", b"z".to_vec()).await })
                .await
                .unwrap()
        })
        .unwrap()
    };
    assert!(in_task.warm_lane);
    assert_eq!(in_task.output, b"z");
    assert_eq!(in_task.container, cold.container);
    rt.block_on(runtime.shutdown()).unwrap();
}

/// A warm-lane invocation whose caller stops awaiting still runs to completion: the rest is
/// spawned on the caller's runtime, the container goes back warm and the permit is returned.
#[tokio::test]
async fn warm_lane_runs_to_completion_when_the_caller_stops_awaiting() {
    let mut c = config(2);
    let mut f = FunctionSpec::named("slow");
    f.simulated_run_us = 200_000;
    c.functions.push(f);
    let runtime = Runtime::start(c).unwrap();
    let cold = runtime.invoke("slow", Vec::new()).await.unwrap();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        runtime.invoke("slow", Vec::new()),
    )
    .await;
    assert!(gave_up.is_err(), "the caller gave up before the 200 ms run");
    assert_eq!(
        runtime.stats().in_flight,
        1,
        "still running, still holding its permit"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while runtime.stats().invocations_completed < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            runtime.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = runtime.stats();
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.invocations_warm_lane, 1);
    assert_eq!(stats.warm_containers, 1, "the container went back warm");
    let next = runtime.invoke("slow", Vec::new()).await.unwrap();
    assert_eq!(next.container, cold.container);
    assert_eq!(runtime.stats().cold_starts, 1);
    runtime.shutdown().await.unwrap();
}

async fn invocation_timings_and_hops(lane: bool) {
    let mut c = config(2);
    c.containers.warm_lane = lane;
    c.placement.policy = corral::PolicyKind::Pinned;
    c.placement.pinned.insert("echo".into(), "b".into());
    c.containers.sim_cold_start_us = 3_000;
    let mut f = FunctionSpec::named("echo");
    f.simulated_run_us = 1_000;
    c.functions.push(f);
    let maps = MemoryMaps::new();
    let runtime = Runtime::builder(c)
        .memory_maps(maps.clone())
        .start()
        .unwrap();
    let cold = runtime.invoke("echo", b"x".to_vec()).await.unwrap();
    let warm = runtime.invoke("echo", b"y".to_vec()).await.unwrap();
    assert_eq!((cold.start, warm.start), (StartKind::Cold, StartKind::Warm));
    assert_eq!(cold.container, warm.container);
    assert_eq!(cold.group_name, "b");
    assert_eq!(
        maps.get(corral_actors::container_backend::CgroupId(cold.cgroup_id)),
        Some(cold.group)
    );
    assert!(
        cold.timings.cold_start >= Duration::from_millis(3),
        "{:?}",
        cold.timings
    );
    assert_eq!(warm.timings.cold_start, Duration::ZERO);
    assert!(warm.timings.run >= Duration::from_millis(1));
    assert!(warm.timings.total >= warm.timings.run + warm.timings.queue_wait);
    assert_eq!(cold.thread_hops, 2);
    assert!(!cold.warm_lane);
    assert_eq!(warm.warm_lane, lane);
    assert_eq!(warm.thread_hops, if lane { 0 } else { 2 });
    assert_eq!(runtime.stats().invocations_warm_lane, u64::from(lane));
    assert_eq!(runtime.stats().warm_starts, 1);
    // The lane writes nothing: one enforcement, at the cold start.
    assert_eq!(
        runtime.stats().enforcements_committed,
        if lane { 1 } else { 2 }
    );
    runtime.shutdown().await.unwrap();
}

/// One handle serves several tokio runtimes at once (current-thread and multi-thread), since
/// the actix System runs on its own thread.
#[test]
fn handle_works_from_any_tokio_runtime() {
    let mut c = config(4);
    c.functions.push(FunctionSpec::named("f"));
    let runtime = Runtime::start(c).unwrap();
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let rt = runtime.clone();
            std::thread::spawn(move || {
                let tokio_rt = if i == 0 {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .enable_all()
                        .build()
                        .unwrap()
                };
                tokio_rt.block_on(async {
                    for _ in 0..20 {
                        rt.invoke("f", b"p".to_vec()).await.unwrap();
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(runtime.stats().invocations_completed, 60);
    let shut = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    shut.block_on(runtime.shutdown()).unwrap();
}

/// Unknown functions are refused before taking a permit, and registering twice is refused;
/// both errors name the function.
#[tokio::test]
async fn unknown_and_duplicate_functions_are_refused_by_name() {
    let runtime = Runtime::start(config(1)).unwrap();
    match runtime.invoke("nope", vec![]).await {
        Err(RuntimeError::Control {
            source: ActorError::UnknownFunction { function },
        }) => assert_eq!(function, "nope"),
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    runtime.register(FunctionSpec::named("f")).await.unwrap();
    let err = runtime
        .register(FunctionSpec::named("f"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`f`"), "{err}");
    let err = runtime
        .register(FunctionSpec::named("bad name"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("functions.name") && err.to_string().contains("bad name"),
        "{err}"
    );
    assert_eq!(runtime.stats().available_permits, 1);
    runtime.shutdown().await.unwrap();
}

/// Configuration loads from TOML, and each bad value is refused with an error naming the key,
/// the value and the fix.
#[test]
fn config_errors_name_the_key_and_value() {
    let good = RuntimeConfig::from_toml_str(
        r#"
        [[groups]]
        name = "a"
        cpus = "0"
        [placement]
        policy = "hash"
        [limiter]
        initial = 2
        min = 1
        max = 4
        [[functions]]
        name = "f"
        "#,
    )
    .unwrap();
    assert_eq!(good.placement.policy, corral::PolicyKind::Hash);
    good.validate_against(&[0, 1]).unwrap();

    let cases: &[(&str, &[&str])] = &[
        (
            "[[groups]]\nname = \"a\"\ncpus = \"0,7\"",
            &["groups[0].cpus", "0,7", "CPU 7 is not online"],
        ),
        (
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\n[[groups]]\nname = \"b\"\ncpus = \"0-1\"",
            &["groups[1].cpus", "already belongs to group `a`"],
        ),
        (
            "[[groups]]\nname = \"a\"\ncpus = \"x\"",
            &["groups[0].cpus", "`x` is not a CPU number"],
        ),
        (
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\n[limiter]\ninitial = 9\nmin = 1\nmax = 4",
            &["limiter.initial", "9"],
        ),
        (
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\n[placement]\npolicy = \"pinned\"\npinned = { f = \"zz\" }",
            &["placement.pinned.f", "zz", "no such group"],
        ),
        (
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\n[placement]\nload_factor = 0.5",
            &["placement.load_factor", "0.5"],
        ),
        (
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\n[monitor]\nshrink_above = 5.0\ngrow_below = 10.0",
            &["monitor.shrink_above", "monitor.grow_below"],
        ),
    ];
    for (text, needles) in cases {
        let err = RuntimeConfig::from_toml_str(text)
            .unwrap()
            .validate_against(&[0, 1])
            .unwrap_err()
            .to_string();
        for needle in *needles {
            assert!(
                err.contains(needle),
                "error {err:?} lacks {needle:?} for config:\n{text}"
            );
        }
    }
    let err = RuntimeConfig::from_toml_str("[[groups]]\nname = \"a\"\ncpus = \"0\"\nslices = 3")
        .unwrap_err();
    assert!(err.to_string().contains("slices"), "{err}");
}

/// A runtime whose configuration names no container backend does not start (it would
/// otherwise answer every invocation without running anything): the error names
/// `containers.backend` and the choices.
#[test]
fn a_runtime_without_a_container_backend_does_not_start() {
    let mut c = config(1);
    c.containers.backend = None;
    let err = Runtime::start(c).unwrap_err().to_string();
    assert!(err.contains("containers.backend"), "{err}");
    assert!(
        err.contains("\"local\"") && err.contains("\"sim\""),
        "{err}"
    );
}

/// `bpf` enforcement with the runtime loading the scheduler, on a kernel without sched_ext,
/// is refused by key with the kernel's reasons before anything is created: no pin directory,
/// no maps.
#[test]
fn bpf_without_sched_ext_is_refused_before_anything_is_created() {
    let mut c = config(1);
    c.enforcement.backend = EnforcementKind::Bpf;
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    c.enforcement.pin_dir = pins.clone();
    let kernel = tempfile::tempdir().unwrap();
    let err = Runtime::builder(c)
        .sched_ext_support(SchedExtSupport::probe_at(kernel.path()))
        .start()
        .unwrap_err()
        .to_string();
    assert!(err.contains("enforcement.backend"), "{err}");
    assert!(err.contains("CONFIG_SCHED_CLASS_EXT"), "{err}");
    assert!(err.contains("load_scheduler = false"), "{err}");
    assert!(
        !pins.exists(),
        "the pin directory was created before the refusal"
    );
}

/// Where sched_ext is missing, `auto` enforcement falls back to cpuset, and the runtime says
/// why in its statistics and scheduler status.
#[tokio::test]
async fn auto_enforcement_falls_back_to_cpuset_and_says_why() {
    let mut c = config(1);
    c.enforcement.backend = EnforcementKind::Auto;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder(c)
        .sched_ext_support(SchedExtSupport::probe_at(dir.path()))
        .start()
        .unwrap();
    let stats = runtime.stats();
    assert_eq!(stats.enforcement_backend, "cpuset");
    let reasons = stats.sched_ext_unavailable.join("; ");
    assert!(reasons.contains("CONFIG_SCHED_CLASS_EXT"), "{reasons}");
    assert!(reasons.contains("BTF"), "{reasons}");
    let status = runtime.scheduler_status().await.unwrap();
    assert!(
        matches!(status.state, SchedulerState::Unsupported { .. }),
        "{status:?}"
    );
    runtime.shutdown().await.unwrap();
}

/// Shutdown waits for invocations in progress, then leaves no container, no enforcement and no
/// held permit, and refuses further work.
#[tokio::test]
async fn shutdown_drains_in_flight_work_and_leaves_nothing() {
    let mut c = config(3);
    let mut f = FunctionSpec::named("slow");
    f.simulated_run_us = 30_000;
    c.functions.push(f);
    let maps = MemoryMaps::new();
    let sim = Arc::new(SimBackend::new(Duration::ZERO));
    let runtime = Runtime::builder(c)
        .memory_maps(maps.clone())
        .container_backend(sim.clone())
        .start()
        .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let rt = runtime.clone();
            tokio::spawn(async move { rt.invoke("slow", vec![1]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = runtime.shutdown().await.unwrap();
    for c in calls {
        c.await
            .unwrap()
            .expect("in-flight work completes during shutdown");
    }
    assert_eq!(report.leases_held, 0);
    assert_eq!(report.permits_available, report.limit);
    assert!(report.containers_destroyed >= 1);
    assert!(sim.is_empty(), "containers left: {}", sim.len());
    assert!(
        maps.entries().is_empty(),
        "map entries left: {:?}",
        maps.entries()
    );
    assert!(matches!(
        runtime.invoke("slow", vec![]).await,
        Err(RuntimeError::Stopped)
    ));
    assert!(matches!(
        runtime.shutdown().await,
        Err(RuntimeError::Stopped)
    ));
}

/// The warm pool keeps at most `max_warm` idle containers per function (the rest are destroyed
/// on release, enforcement first), and idle containers past their keep-alive are reaped with
/// their enforcement removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_respects_max_warm_and_keep_alive() {
    let mut c = config(4);
    c.containers.max_warm = 1;
    c.containers.keep_alive_ms = 60_000;
    c.containers.reap_period_ms = 5;
    let mut f = FunctionSpec::named("f");
    f.simulated_run_us = 20_000;
    c.functions.push(f);
    let mut short = FunctionSpec::named("short");
    short.keep_alive_ms = Some(30);
    c.functions.push(short);
    let maps = MemoryMaps::new();
    let sim = Arc::new(SimBackend::new(Duration::ZERO));
    let runtime = Runtime::builder(c)
        .memory_maps(maps.clone())
        .container_backend(sim.clone())
        .start()
        .unwrap();

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let rt = runtime.clone();
            tokio::spawn(async move { rt.invoke("f", vec![]).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let stats = runtime.stats();
    assert_eq!(stats.cold_starts, 3);
    assert_eq!(
        stats.containers_destroyed, 2,
        "two releases found the pool full"
    );
    assert_eq!((stats.warm_containers, stats.live_containers), (1, 1));
    assert_eq!(sim.len(), 1);
    assert_eq!(
        maps.entries().len(),
        1,
        "destroyed containers lose their enforcement"
    );

    runtime.invoke("short", vec![]).await.unwrap();
    assert_eq!(sim.len(), 2);
    tokio::time::timeout(Duration::from_secs(5), async {
        while sim.len() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the idle `short` container outlived its keep-alive");
    assert_eq!(maps.entries().len(), 1);
    assert_eq!(runtime.stats().live_containers, 1);
    let pool = runtime.pool().await.unwrap();
    assert_eq!(pool.warm.get("f"), Some(&1));
    assert_eq!(pool.warm.get("short"), None);
    runtime.shutdown().await.unwrap();
}

/// The handle is what a worker shares between its tasks and threads.
#[test]
fn runtime_handle_is_clone_send_sync() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<corral::RuntimeHandle>();
}

/// A container's destroy does not run on the actix thread that every actor shares: while one
/// is blocked (a release with a full pool), 50 invocations of another function go through.
/// Were the destroy on that thread, they could not (the test would time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_container_destroy_does_not_stall_other_invocations() {
    let backend = Arc::new(ConcurrencyProbe::new(Duration::ZERO));
    backend.set_gate(false);
    let mut c = config(4);
    let mut once = FunctionSpec::named("once");
    once.max_warm = Some(0);
    c.functions.push(once);
    c.functions.push(FunctionSpec::named("other"));
    let runtime = Runtime::builder(c)
        .container_backend(backend.clone())
        .start()
        .unwrap();
    let rt = runtime.clone();
    let blocked = tokio::spawn(async move { rt.invoke("once", vec![1]).await });
    while backend.destroying.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let others = async {
        for i in 0..50u8 {
            runtime.invoke("other", vec![i]).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), others)
        .await
        .expect("invocations stalled behind a blocked destroy");
    assert!(!blocked.is_finished(), "the destroy was not blocked");
    backend.set_gate(true);
    blocked.await.unwrap().unwrap();
    runtime.shutdown().await.unwrap();
}
