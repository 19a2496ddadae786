//! Supervision: a panic in any actor's handler (injected through a test-only failpoint) stops
//! that actor, its `Supervisor` restarts it, and it rebuilds its state from the source of
//! truth. Each test fires one failpoint 50 times during a stream of invocations and checks that
//! every invocation completed or returned an error, nothing hung, no enforcement was lost, and
//! no permit or container leaked.

use std::sync::Arc;
use std::time::Duration;

use corral::{
    ContainerBackendKind, EnforcementKind, FunctionSpec, GroupConfig, Runtime, RuntimeConfig,
    RuntimeError,
};
use corral_actors::bpf_loader::{
    LoaderTiming, SchedExtSupport, SchedulerDriver, SchedulerExit, SchedulerState,
};
use corral_actors::container_backend::sim::SimBackend;
use corral_actors::error::BoxError;
use corral_actors::map_backend::memory::MemoryMaps;
use corral_actors::supervision::{points, Failpoints};
use corral_actors::ActorError;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

const FIRES: u64 = 50;

fn config() -> RuntimeConfig {
    let group = |name: &str, cpus: &str| GroupConfig {
        name: name.into(),
        cpus: cpus.into(),
        slice_us: 5_000,
        order: Default::default(),
        borrow: false,
        exclusive: false,
    };
    let mut c = RuntimeConfig::with_groups(vec![group("a", "0"), group("b", "1")]);
    c.limiter.initial = 4;
    c.limiter.min = 1;
    c.limiter.max = 4;
    c.limiter.queue_timeout_ms = 20_000;
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Sim);
    c.enforcement.backend = EnforcementKind::Memory;
    for name in ["f", "g", "h"] {
        let mut f = FunctionSpec::named(name);
        f.simulated_run_us = 300;
        c.functions.push(f);
    }
    c
}

/// Invokes `n` times at once (the functions in turn, from `first`), each bounded by 20 s: an
/// invocation completes, or fails with a panic's error (`HandlerPanicked`, or
/// `ActorUnavailable` when the panic took the answer's channel with it); anything else, and a
/// hang, fails the test. Answers (completed, failed).
async fn invoke_batch(
    runtime: &corral::RuntimeHandle,
    first: usize,
    n: usize,
    what: &str,
) -> (usize, usize) {
    let functions = ["f", "g", "h"];
    let batch: Vec<_> = (first..first + n)
        .map(|i| {
            let rt = runtime.clone();
            tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(20),
                    rt.invoke(functions[i % 3], vec![i as u8]),
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for call in batch {
        match call.await.unwrap() {
            Err(_) => panic!("an invocation hung with {what}"),
            Ok(Ok(_)) => ok += 1,
            Ok(Err(RuntimeError::Control { source })) => {
                assert!(
                    matches!(
                        source,
                        ActorError::HandlerPanicked { .. } | ActorError::ActorUnavailable { .. }
                    ),
                    "unexpected error with {what}: {source}"
                );
                failed += 1;
            }
            Ok(Err(e)) => panic!("unexpected error with {what}: {e}"),
        }
    }
    (ok, failed)
}

/// Runs `total` invocations, 16 at a time, with `point` armed to panic on every `every`-th hit
/// (50 times in all), then checks the invariants.
async fn survive(point: &'static str, every: u64, total: usize) {
    let failpoints = Arc::new(Failpoints::new());
    failpoints.arm(point, every, FIRES);
    let maps = MemoryMaps::new();
    let sim = Arc::new(SimBackend::new(Duration::from_micros(100)));
    let runtime = Runtime::builder(config())
        .memory_maps(maps.clone())
        .container_backend(sim.clone())
        .failpoints(failpoints.clone())
        .journal()
        .start()
        .unwrap();

    let (mut ok, mut failed) = (0, 0);
    let functions = ["f", "g", "h"];
    let what = format!("failpoint {point}");
    let mut next = 0;
    while next < total {
        let n = 16.min(total - next);
        let (o, f) = invoke_batch(&runtime, next, n, &what).await;
        (ok, failed, next) = (ok + o, failed + f, next + n);
    }
    assert_eq!(ok + failed, total);
    assert_eq!(
        failpoints.fired(point),
        FIRES,
        "the failpoint fired too rarely; raise `total`"
    );
    let stats = runtime.stats();
    let restarts = stats.restarts;
    let restarted = restarts.resource_tracker
        + restarts.container_manager
        + restarts.map_writer
        + restarts.bpf_loader;
    assert_eq!(restarted, FIRES, "{restarts:?}");
    assert!(ok > 0);

    // After the storm the runtime still serves, and a reap adopts any container a panic lost.
    for f in functions {
        runtime
            .invoke(f, b"after".to_vec())
            .await
            .expect("the restarted actors serve again");
    }
    let pool = runtime.pool().await.unwrap();
    assert_eq!(pool.in_use, 0, "a container is still checked out: {pool:?}");
    let stats = runtime.stats();
    assert_eq!(stats.in_flight, 0, "a permit leaked");
    assert_eq!(stats.available_permits, stats.limit, "a permit leaked");
    let warm: usize = pool.warm.values().sum();
    assert_eq!(
        warm,
        sim.len(),
        "every container is either warm or was destroyed: {pool:?}"
    );

    // No enforcement lost: every live container that was ever handed out (so enforced) is still
    // mapped, and the writer's mirror (rebuilt after each restart) equals the maps. A container
    // whose first enforcement panicked went back to the pool unmapped by design (it is enforced
    // on its next acquisition, which the pool's LIFO order may never reach here).
    let mapped = maps.entries();
    let handed_out: std::collections::BTreeSet<u64> = runtime
        .journal()
        .iter()
        .filter_map(|e| match e {
            corral_actors::telemetry::JournalEvent::ContainerHandedOut { cgroup, .. } => {
                Some(*cgroup)
            }
            _ => None,
        })
        .collect();
    for container in corral_actors::container_backend::ContainerBackend::list(&*sim).unwrap() {
        if !handed_out.contains(&container.cgroup.id.0) {
            continue;
        }
        assert!(
            mapped.contains_key(&container.cgroup.id),
            "container {} lost its enforcement",
            container.id
        );
    }
    let mirror: Vec<_> = runtime.enforcements().await.unwrap();
    assert_eq!(mirror, mapped.into_iter().collect::<Vec<_>>());

    let report = runtime.shutdown().await.unwrap();
    assert_eq!(report.leases_held, 0);
    assert_eq!(report.permits_available, report.limit);
    assert!(sim.is_empty());
    assert!(maps.entries().is_empty());
}

/// The ResourceTracker panics while handling `AcquireLease` 50 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_tracker_panics_are_survived() {
    survive(points::ACQUIRE_LEASE, 3, 400).await;
}

/// The ContainerManager panics while handling `AcquireContainer` 50 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_manager_acquire_panics_are_survived() {
    survive(points::ACQUIRE_CONTAINER, 3, 400).await;
}

/// The ContainerManager panics while handling `ReleaseContainer` 50 times: the container it
/// was returning is adopted back when the manager rebuilds, and the permit comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_manager_release_panics_are_survived() {
    survive(points::RELEASE_CONTAINER, 3, 400).await;
}

/// The MapWriter panics while handling `EnforceGroup` 50 times: those invocations fail, their
/// containers are never handed out unenforced, and the mirror is rebuilt from the maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_writer_panics_are_survived() {
    survive(points::ENFORCE_GROUP, 3, 400).await;
}

/// A scheduler driver whose scheduler "exits" when the test says so, and whose attach can be
/// held (as a slow load and verification would hold it) until the test lets it go.
#[derive(Debug, Clone, Default)]
struct FakeDriver {
    attached: Arc<AtomicBool>,
    attaches: Arc<AtomicU32>,
    exit_now: Arc<AtomicBool>,
    /// While true, attach waits.
    hold: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Attaches waiting on `hold` now.
    holding: Arc<AtomicU32>,
}

impl FakeDriver {
    fn hold_attach(&self, hold: bool) {
        let (held, cv) = &*self.hold;
        *held.lock().unwrap() = hold;
        cv.notify_all();
    }

    /// Makes the scheduler exit with its next reattach held, and waits until the loader has
    /// started that reattach.
    async fn exit_and_hold_the_reattach(&self) {
        self.hold_attach(true);
        self.exit_now.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.holding.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the loader never started the reattach");
    }
}

/// Waits until the runtime's scheduler reads `Running` again.
async fn wait_running(runtime: &corral::RuntimeHandle) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while runtime.stats().scheduler.state != SchedulerState::Running {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the scheduler never came back");
}

impl SchedulerDriver for FakeDriver {
    fn attach(&mut self) -> Result<(), BoxError> {
        {
            let (held, cv) = &*self.hold;
            let mut held = held.lock().unwrap();
            if *held {
                self.holding.fetch_add(1, Ordering::SeqCst);
                while *held {
                    held = cv.wait(held).unwrap();
                }
                self.holding.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.attaches.fetch_add(1, Ordering::SeqCst);
        self.attached.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn poll_exit(&mut self) -> Option<SchedulerExit> {
        self.exit_now
            .swap(false, Ordering::SeqCst)
            .then(|| SchedulerExit {
                kind: "ErrorBpf".into(),
                reason: "injected exit".into(),
            })
    }
    fn is_attached(&self) -> bool {
        self.attached.load(Ordering::SeqCst)
    }
    fn detach(&mut self) -> Result<(), BoxError> {
        self.attached.store(false, Ordering::SeqCst);
        Ok(())
    }
}

fn loader_runtime(driver: FakeDriver, failpoints: Arc<Failpoints>) -> corral::RuntimeHandle {
    loader_runtime_with(driver, failpoints, corral::DetachedPolicy::Run)
}

/// [`loader_runtime`] with `enforcement.when_detached = policy`.
fn loader_runtime_with(
    driver: FakeDriver,
    failpoints: Arc<Failpoints>,
    policy: corral::DetachedPolicy,
) -> corral::RuntimeHandle {
    let mut c = config();
    c.enforcement.backend = EnforcementKind::Auto;
    c.enforcement.when_detached = policy;
    Runtime::builder(c)
        .memory_maps(MemoryMaps::new())
        .failpoints(failpoints)
        .sched_ext_support(SchedExtSupport {
            kernel: true,
            btf: true,
            privileged: true,
        })
        .scheduler_driver(Box::new(driver))
        .loader_timing(LoaderTiming {
            watch_period: Duration::from_millis(2),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            stable_after: Duration::from_secs(60),
        })
        .start()
        .unwrap()
}

/// The BpfLoader panics while handling `GetSchedulerStatus` 50 times during a stream of
/// invocations: callers get an error or the status, never a hang, and the restarted loader
/// still knows the scheduler is attached (it asks the driver, the source of truth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bpf_loader_panics_are_survived() {
    let failpoints = Arc::new(Failpoints::new());
    failpoints.arm(points::GET_SCHEDULER_STATUS, 2, FIRES);
    let driver = FakeDriver::default();
    let runtime = loader_runtime(driver.clone(), failpoints.clone());
    let mut statuses = 0;
    for i in 0..120 {
        let invoke = runtime.invoke(["f", "g", "h"][i % 3], vec![]);
        let status = runtime.scheduler_status();
        let (inv, status) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(invoke, status)
        })
        .await
        .expect("hung");
        inv.expect("invocations do not depend on the loader");
        match status {
            Ok(s) => {
                assert_eq!(s.state, SchedulerState::Running);
                statuses += 1;
            }
            Err(RuntimeError::Control {
                source: ActorError::HandlerPanicked { .. },
            }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(failpoints.fired(points::GET_SCHEDULER_STATUS), FIRES);
    assert_eq!(runtime.stats().restarts.bpf_loader, FIRES);
    assert_eq!(statuses, 120 - FIRES as usize);
    assert_eq!(
        driver.attaches.load(Ordering::SeqCst),
        1,
        "a restart must not reattach a running scheduler"
    );
    runtime.shutdown().await.unwrap();
    assert!(
        !driver.attached.load(Ordering::SeqCst),
        "shutdown detaches the scheduler"
    );
}

/// When the scheduler exits, the loader sees it in the exit info, reattaches after a backoff
/// that doubles on each exit, and reports the exits and the last reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bpf_loader_restarts_scheduler_with_backoff_after_exit() {
    let driver = FakeDriver::default();
    let runtime = loader_runtime(driver.clone(), Arc::new(Failpoints::new()));
    assert_eq!(
        runtime.scheduler_status().await.unwrap().state,
        SchedulerState::Running
    );
    let mut delays = Vec::new();
    for round in 1..=3u32 {
        driver.exit_now.store(true, Ordering::SeqCst);
        let delay = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let SchedulerState::BackingOff { delay } = runtime.stats().scheduler.state {
                    return delay;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the loader never noticed the exit");
        delays.push(delay);
        // The attach runs on the blocking pool; the status says Running once it is back.
        tokio::time::timeout(Duration::from_secs(5), async {
            while driver.attaches.load(Ordering::SeqCst) < round + 1
                || runtime.stats().scheduler.state != SchedulerState::Running
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the loader never reattached");
        let status = runtime.scheduler_status().await.unwrap();
        assert_eq!(status.state, SchedulerState::Running);
        assert_eq!(status.exits, round);
        assert_eq!(status.last_exit.as_ref().unwrap().reason, "injected exit");
    }
    assert_eq!(
        delays,
        vec![
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::from_millis(40)
        ]
    );
    runtime.shutdown().await.unwrap();
}

/// Loading the scheduler does not stall invocations: the scheduler exits, and while its
/// reattach is held (as a slow load and verification would hold it), 50 invocations complete
/// and the status says `Attaching`; once the attach is let go the status is `Running` again.
/// Were the attach on the actix thread, the invocations could not complete (the test would
/// time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_keep_flowing_while_the_scheduler_is_being_loaded() {
    let driver = FakeDriver::default();
    let runtime = loader_runtime(driver.clone(), Arc::new(Failpoints::new()));
    assert_eq!(runtime.stats().scheduler.state, SchedulerState::Running);
    driver.exit_and_hold_the_reattach().await;
    assert_eq!(runtime.stats().scheduler.state, SchedulerState::Attaching);
    let calls = async {
        for i in 0..50u8 {
            runtime.invoke("f", vec![i]).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), calls)
        .await
        .expect("invocations stalled behind the scheduler's load");
    assert_eq!(
        driver.holding.load(Ordering::SeqCst),
        1,
        "the attach was let go early"
    );
    driver.hold_attach(false);
    wait_running(&runtime).await;
    let status = runtime.scheduler_status().await.unwrap();
    assert_eq!((status.attaches, status.exits), (2, 1));
    runtime.shutdown().await.unwrap();
}

/// While the scheduler is down (its reattach held), `enforcement.when_detached` decides:
/// `"run"` (the default) runs invocations and counts them as unenforced; `"fail"` refuses them
/// with an error that names the state and the key. Once the scheduler is back, both run
/// normally and the count stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_detached_runs_and_counts_or_refuses() {
    for policy in [corral::DetachedPolicy::Run, corral::DetachedPolicy::Fail] {
        let driver = FakeDriver::default();
        let runtime = loader_runtime_with(driver.clone(), Arc::new(Failpoints::new()), policy);
        runtime.invoke("f", vec![]).await.unwrap();
        assert_eq!(runtime.stats().invocations_unenforced, 0);
        driver.exit_and_hold_the_reattach().await;
        let down = runtime.invoke("f", vec![7]).await;
        match policy {
            corral::DetachedPolicy::Run => {
                assert_eq!(down.unwrap().output, vec![7]);
                assert_eq!(runtime.stats().invocations_unenforced, 1);
            }
            corral::DetachedPolicy::Fail => {
                let err = down.unwrap_err();
                assert!(
                    matches!(err, corral::RuntimeError::SchedulerDetached { .. }),
                    "{err:?}"
                );
                let text = err.to_string();
                assert!(
                    text.contains("Attaching") && text.contains("when_detached"),
                    "{text}"
                );
                assert_eq!(runtime.stats().invocations_unenforced, 0);
            }
            corral::DetachedPolicy::Cpuset => {
                unreachable!("sim containers have no cpuset (refused at start; tested below)")
            }
        }
        driver.hold_attach(false);
        wait_running(&runtime).await;
        runtime.invoke("f", vec![]).await.unwrap();
        let stats = runtime.stats();
        assert_eq!(
            stats.invocations_unenforced,
            u64::from(policy == corral::DetachedPolicy::Run)
        );
        assert_eq!((stats.in_flight, stats.available_permits), (0, stats.limit));
        runtime.shutdown().await.unwrap();
    }
}

/// `when_detached = "cpuset"` needs containers with a cgroup v2 cpuset.cpus: with `sim`
/// containers (and, in `tests/tests/cgroups.rs`, a parent without the cpuset controller) the
/// runtime refuses to start, naming the key, the value and the choices, and leaves nothing
/// running.
#[test]
fn cpuset_fallback_without_cpusets_is_refused_at_start() {
    let mut c = config();
    c.enforcement.backend = EnforcementKind::Auto;
    c.enforcement.when_detached = corral::DetachedPolicy::Cpuset;
    let err = Runtime::builder(c)
        .memory_maps(MemoryMaps::new())
        .sched_ext_support(SchedExtSupport {
            kernel: true,
            btf: true,
            privileged: true,
        })
        .scheduler_driver(Box::new(FakeDriver::default()))
        .start()
        .unwrap_err();
    let text = err.to_string();
    for needle in [
        "enforcement.when_detached",
        "cpuset",
        "sim",
        "\"run\" or \"fail\"",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
}

/// Panics inside async bodies, between two steps of a mutation, 100 in one run: 50 in
/// `AcquireContainer`'s body after a cold container was created and entered in the ledger but
/// before its enforcement was sent, and 50 in a destroy's body after the enforcement was
/// removed but before the container was destroyed (`max_warm = 1`, so releases destroy). Such a
/// panic ends that future only (the actor keeps running; the caller gets an error): every
/// invocation completes or fails with an error, none hangs, the orphaned containers are adopted
/// back into their pools, and afterwards no permit, lease, container or map entry is left and
/// the writer's mirror equals the maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_inside_async_bodies_are_survived() {
    let failpoints = Arc::new(Failpoints::new());
    failpoints.arm(points::ACQUIRE_CONTAINER_ASYNC, 3, FIRES);
    failpoints.arm(points::DESTROY_ASYNC, 2, FIRES);
    let maps = MemoryMaps::new();
    let sim = Arc::new(SimBackend::new(Duration::from_micros(100)));
    let mut c = config();
    c.containers.max_warm = 1;
    c.containers.reap_period_ms = 20;
    let runtime = Runtime::builder(c)
        .memory_maps(maps.clone())
        .container_backend(sim.clone())
        .failpoints(failpoints.clone())
        .start()
        .unwrap();
    let functions = ["f", "g", "h"];
    let (mut ok, mut failed) = (0, 0);
    let mut round = 0;
    while failpoints.fired(points::ACQUIRE_CONTAINER_ASYNC) < FIRES
        || failpoints.fired(points::DESTROY_ASYNC) < FIRES
    {
        round += 1;
        assert!(round < 200, "the failpoints fired too rarely");
        let (o, f) = invoke_batch(&runtime, 0, 16, "panics in async bodies").await;
        (ok, failed) = (ok + o, failed + f);
    }
    assert_eq!(failpoints.fired(points::ACQUIRE_CONTAINER_ASYNC), FIRES);
    assert_eq!(failpoints.fired(points::DESTROY_ASYNC), FIRES);
    assert!(
        ok > 0 && failed >= FIRES as usize,
        "ok {ok}, failed {failed}"
    );

    for f in functions {
        runtime
            .invoke(f, b"after".to_vec())
            .await
            .expect("serving again");
    }
    // The reap adopts what the panics orphaned.
    let pool = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let pool = runtime.pool().await.unwrap();
            if pool.in_use == 0 && pool.warm.values().sum::<usize>() == sim.len() {
                return pool;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("an orphaned container was never adopted back");
    let stats = runtime.stats();
    assert_eq!(
        (stats.in_flight, stats.available_permits),
        (0, stats.limit),
        "{pool:?}"
    );
    let mirror: Vec<_> = runtime.enforcements().await.unwrap();
    assert_eq!(mirror, maps.entries().into_iter().collect::<Vec<_>>());
    let report = runtime.shutdown().await.unwrap();
    assert_eq!(report.leases_held, 0);
    assert_eq!(report.permits_available, report.limit);
    assert!(sim.is_empty(), "containers left: {}", sim.len());
    assert!(
        maps.entries().is_empty(),
        "map entries left: {:?}",
        maps.entries()
    );
}
