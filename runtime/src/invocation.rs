//! One invocation end to end, and what it reports. It takes one of two paths.
//!
//! **The warm lane** (`containers.warm_lane`, on by default): when a permit is free, the policy
//! picks a group, and the function has an idle container whose enforcement onto that group the
//! map writer has already committed (its shared committed view says so), the caller's own tokio
//! runtime does everything: take the permit, take the container, run, return both. No message,
//! no hop to the actix thread; nothing is written, since the enforcement already stands.
//!
//! **The actor path**, for everything else (no free permit: wait in the queue; no idle
//! container: cold start; one on another group: re-enforce). After the hand-off it runs on the
//! actix System thread as one spawned future, so actor-to-actor messages stay on that thread
//! (about half a microsecond each) and the invocation crosses between the worker's thread and
//! the actix thread exactly twice: once in, once out.
//!
//! ```text
//! worker thread            actix System thread
//!  invoke() ──hop 1──▶ AcquireLease ─▶ ResourceTracker   (waits for a permit, picks a group)
//!                      AcquireContainer ─▶ ContainerManager (warm pop or cold start)
//!                          EnforceGroup ─▶ MapWriter        (one map update, acknowledged)
//!                      run the function in the container
//!                      ReleaseContainer ─▶ ContainerManager (container back, then permit)
//!  result ◀──hop 2──── reply
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use corral_actors::config::{FunctionMode, GroupId};
use corral_actors::lease::GroupLease;
pub use corral_actors::messages::EnforcementParts;
use corral_actors::messages::{
    AcquireContainer, AcquireLease, LeasedContainer, ReleaseContainer, StartKind,
};
use corral_actors::ActorError;

use crate::config::DetachedPolicy;
use crate::error::RuntimeError;
use crate::runtime::Shared;
use corral_actors::bpf_loader::SchedulerState;

/// Where the time of one invocation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvocationTimings {
    /// From `invoke` until the actix thread picked the invocation up (the inbound thread hop).
    pub handoff: Duration,
    /// Waiting for a permit of the inflight limiter.
    pub queue_wait: Duration,
    /// Creating the container and starting its server (zero when warm; the enforcement in
    /// between is `enforcement`).
    pub cold_start: Duration,
    /// From sending `EnforceGroup` to its acknowledgement.
    pub enforcement: Duration,
    /// `enforcement`, part by part: mailbox wait, map update, sweep, reply.
    pub enforcement_parts: EnforcementParts,
    /// Running the function.
    pub run: Duration,
    /// Returning the container and the permit.
    pub release: Duration,
    /// From the reply being sent until `invoke` resumed (the outbound thread hop).
    pub reply: Duration,
    /// From `invoke` to its return.
    pub total: Duration,
}

/// The outcome of a successful invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationResult {
    /// The function's output (standard output for the `local` backend).
    pub output: Vec<u8>,
    /// The function.
    pub function: String,
    /// The group it ran on.
    pub group: GroupId,
    /// The group's name.
    pub group_name: String,
    /// The container it ran in.
    pub container: String,
    /// The container's cgroup id.
    pub cgroup_id: u64,
    /// Warm or cold.
    pub start: StartKind,
    /// Where the time went.
    pub timings: InvocationTimings,
    /// Thread hops: between the caller's thread and the actix thread (2 from a worker
    /// thread), or, on the warm lane, between the caller's thread and the worker thread that
    /// ran the invocation (0 when they are the same).
    pub thread_hops: u32,
    /// Served by the warm lane: no message to the actors, no hop to the actix thread.
    pub warm_lane: bool,
}

/// Runs one invocation on the actix thread. `submitted` and `caller` describe the `invoke` call.
pub(crate) async fn run(
    shared: Arc<Shared>,
    function: String,
    payload: Vec<u8>,
    submitted: Instant,
    caller: ThreadId,
) -> Result<InvocationResult, RuntimeError> {
    let picked_up = Instant::now();
    let name = shared.metrics.as_ref().map(|_| function.clone());
    let result = run_inner(&shared, function, payload, submitted, picked_up).await;
    account(&shared, name.as_deref(), &result, submitted);
    result.map(|mut r| {
        r.thread_hops = u32::from(caller != shared.actix_thread);
        r
    })
}

async fn run_inner(
    shared: &Shared,
    function: String,
    payload: Vec<u8>,
    submitted: Instant,
    picked_up: Instant,
) -> Result<InvocationResult, RuntimeError> {
    if shared.functions.get(&function).is_none() {
        return Err(ActorError::UnknownFunction { function }.into());
    }
    let mut confine = false;
    if let Some(policy) = shared.when_detached {
        let status = shared.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if status.state != SchedulerState::Running {
            match policy {
                DetachedPolicy::Fail => {
                    return Err(RuntimeError::SchedulerDetached {
                        state: format!("{:?}", status.state),
                    })
                }
                DetachedPolicy::Run => {
                    shared.unenforced.fetch_add(1, Ordering::Relaxed);
                }
                DetachedPolicy::Cpuset => confine = true,
            }
        }
    }
    let lease = shared
        .tracker
        .send(AcquireLease {
            function: function.clone(),
        })
        .await
        .map_err(ActorError::mailbox("resource tracker", "AcquireLease"))??;
    let queue_wait = lease.queue_wait();
    let leased = shared
        .containers
        .send(AcquireContainer {
            function: function.clone(),
            lease,
        })
        .await
        .map_err(ActorError::mailbox("container manager", "AcquireContainer"))??;
    let how = if confine {
        Release::ActorConfined
    } else {
        Release::Actor
    };
    let mut result = run_leased(shared, function, leased, payload, how).await?;
    result.timings.handoff = picked_up.saturating_duration_since(submitted);
    result.timings.queue_wait = queue_wait;
    Ok(result)
}

/// How a container goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Through the container manager (`ReleaseContainer`).
    Actor,
    /// The same, for an invocation the cpuset fallback confines (the scheduler is down).
    ActorConfined,
    /// Into the warm lane's pool, on this thread; through the manager only when it must be
    /// destroyed.
    Lane,
}

/// Runs the function in a leased container, then returns the container and the permit.
async fn run_leased(
    shared: &Shared,
    function: String,
    leased: LeasedContainer,
    payload: Vec<u8>,
    how: Release,
) -> Result<InvocationResult, RuntimeError> {
    let LeasedContainer {
        container,
        lease,
        start,
        cold_start,
        enforcement,
        enforcement_parts,
    } = leased;
    let mut container = container;
    if let Err(e) = cpuset_fallback(shared, &container, how == Release::ActorConfined).await {
        release(shared, container, lease, Release::Actor).await;
        return Err(e);
    }
    let t = Instant::now();
    let output = shared.backend.run(&container, payload).await;
    let run = t.elapsed();
    container.discard = container.spec.mode == FunctionMode::Server
        && output.as_ref().is_err_and(ActorError::spoils_server);

    let group = container.group.id;
    let group_name = container.group.name.clone();
    let container_id = container.info.id.clone();
    let cgroup_id = container.info.cgroup.id.0;
    let t = Instant::now();
    release(shared, container, lease, how).await;
    let release = t.elapsed();

    Ok(InvocationResult {
        output: output?,
        function,
        group,
        group_name,
        container: container_id,
        cgroup_id,
        start,
        timings: InvocationTimings {
            handoff: Duration::ZERO,
            queue_wait: Duration::ZERO,
            cold_start,
            enforcement,
            enforcement_parts,
            run,
            release,
            reply: Duration::ZERO,
            total: Duration::ZERO,
        },
        thread_hops: 0,
        warm_lane: how == Release::Lane,
    })
}

/// Counts an invocation as completed or failed, and records it in the metrics when `name`
/// (the function, kept only when metrics are on) is given.
fn account(
    shared: &Shared,
    name: Option<&str>,
    result: &Result<InvocationResult, RuntimeError>,
    submitted: Instant,
) {
    let counter = if result.is_ok() {
        &shared.completed
    } else {
        &shared.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Some(name) = name {
        record(shared, name, result, submitted);
    }
}

/// Records a finished invocation of a registered function in the metrics (an unknown name is
/// not a label: a caller could otherwise grow the metrics without bound).
fn record(
    shared: &Shared,
    function: &str,
    result: &Result<InvocationResult, RuntimeError>,
    submitted: Instant,
) {
    let Some(metrics) = &shared.metrics else {
        return;
    };
    if shared.functions.get(function).is_none() {
        return;
    }
    let (cold, enforcement) = match result {
        Ok(r) => (
            r.start == StartKind::Cold,
            (!r.timings.enforcement.is_zero()).then_some(r.timings.enforcement),
        ),
        Err(_) => (false, None),
    };
    metrics.invocation(
        function,
        result.is_ok(),
        cold,
        submitted.elapsed(),
        enforcement,
    );
}

/// Returns a container and its lease: into the warm lane's pool when it came from the lane,
/// else (or when it must be destroyed) through the container manager.
async fn release(
    shared: &Shared,
    container: corral_actors::container_backend::Container,
    lease: GroupLease,
    how: Release,
) {
    let back = match (how, &shared.lane) {
        (Release::Lane, Some(lane)) => lane.checkin(container, lease),
        _ => Some((container, lease)),
    };
    if let Some((container, lease)) = back {
        let id = container.info.id.clone();
        match shared
            .containers
            .send(ReleaseContainer { container, lease })
            .await
        {
            Ok(Ok(())) => {}
            // The manager adopts a container it lost; the permit went back with the lease.
            Ok(Err(e)) => tracing::warn!(error = %e, container = id, "release failed"),
            Err(e) => tracing::warn!(error = %e, container = id, "release not delivered"),
        }
    }
}

/// `when_detached = "cpuset"`: confines a container by its own cgroup v2 `cpuset.cpus` (its
/// group's CPUs) while the scheduler is down (`confine`), and clears that again at its first
/// invocation once the scheduler is back, so the scheduler alone places it from then on. The
/// writes run on the blocking pool; they happen only around a scheduler outage.
async fn cpuset_fallback(
    shared: &Shared,
    container: &corral_actors::container_backend::Container,
    confine: bool,
) -> Result<(), RuntimeError> {
    let id = container.info.cgroup.id.0;
    let pinned = shared
        .cpuset_pinned
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&id);
    if !confine && !pinned {
        return Ok(());
    }
    let Some(dir) = container.info.cgroup.path.clone() else {
        return Ok(());
    };
    // A newline, not an empty write, to clear: a write of zero bytes never reaches the
    // kernel's handler, and "\n" parses as the empty list (inherit the parent's CPUs).
    let cpus = if confine {
        corral_actors::config::format_cpu_list(&container.group.cpus)
    } else {
        "\n".to_string()
    };
    let file = dir.join("cpuset.cpus");
    let written = {
        let (file, cpus) = (file.clone(), cpus.clone());
        tokio::task::spawn_blocking(move || std::fs::write(&file, cpus))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    };
    written.map_err(|e| RuntimeError::from(ActorError::cgroup("write cpuset.cpus of", &dir, e)))?;
    let mut set = shared
        .cpuset_pinned
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if confine {
        set.insert(id);
        shared.cpuset_fallback.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            container = container.info.id,
            cpus,
            "the scheduler is down: confined by cpuset"
        );
    } else {
        set.remove(&id);
    }
    Ok(())
}

/// The warm lane's checkout, on the caller's thread and with no message: a free permit, the
/// policy's group, and an idle container of `function` whose enforcement onto that group is
/// committed. `None` when any of them is missing (or the scheduler this runtime runs is not
/// running, so that the detached policy is applied by the actor path); the caller then takes
/// the actor path, which waits for a permit, cold-starts or enforces as needed.
pub(crate) fn warm_checkout(shared: &Shared, function: &str) -> Option<LeasedContainer> {
    let lane = shared.lane.as_ref()?;
    if shared.when_detached.is_some() {
        let status = shared.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if status.state != SchedulerState::Running {
            return None;
        }
    }
    let permit = shared.limiter.try_admit()?;
    // A panicking policy is the tracker's to report (on the actor path); here it only means
    // no lane.
    let group = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shared.placement.choose(function)
    }))
    .ok()?
    .ok()?;
    let checkout = lane.checkout(function, group)?;
    let load = shared.placement.loads().get(group.0 as usize)?.take();
    shared
        .telemetry
        .leases_granted
        .fetch_add(1, Ordering::Relaxed);
    let lease = GroupLease::new(
        group,
        permit,
        load,
        Duration::ZERO,
        Arc::clone(&shared.telemetry),
    );
    Some(checkout.hand_out(lease))
}

/// Runs an invocation the warm lane checked out, on the caller's tokio runtime.
pub(crate) async fn run_warm(
    shared: Arc<Shared>,
    function: String,
    leased: LeasedContainer,
    payload: Vec<u8>,
    submitted: Instant,
) -> Result<InvocationResult, RuntimeError> {
    let name = shared.metrics.as_ref().map(|_| function.clone());
    let result = run_leased(&shared, function, leased, payload, Release::Lane).await;
    account(&shared, name.as_deref(), &result, submitted);
    shared.lane_invocations.fetch_add(1, Ordering::Relaxed);
    result
}
