//! One invocation end to end, and what it reports. The whole path after the hand-off runs on
//! the actix System thread as one spawned future, so actor-to-actor messages stay on that
//! thread (about half a microsecond each) and the invocation crosses between the worker's
//! thread and the actix thread exactly twice: once in, once out.
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

use corral_actors::config::GroupId;
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
    /// Creating the container (zero when warm).
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
    /// Thread hops between the caller's thread and the actix thread (2 from a worker thread).
    pub thread_hops: u32,
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
    let result = run_inner(&shared, function, payload, submitted, picked_up).await;
    let counter = if result.is_ok() {
        &shared.completed
    } else {
        &shared.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
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
    let LeasedContainer {
        container,
        lease,
        start,
        cold_start,
        enforcement,
        enforcement_parts,
    } = shared
        .containers
        .send(AcquireContainer {
            function: function.clone(),
            lease,
        })
        .await
        .map_err(ActorError::mailbox("container manager", "AcquireContainer"))??;

    let t = Instant::now();
    let output = shared.backend.run(&container, payload).await;
    let run = t.elapsed();

    let group = container.group.id;
    let group_name = container.group.name.clone();
    let container_id = container.info.id.clone();
    let cgroup_id = container.info.cgroup.id.0;
    let t = Instant::now();
    match shared
        .containers
        .send(ReleaseContainer { container, lease })
        .await
    {
        Ok(Ok(())) => {}
        // The manager adopts a container it lost; the permit went back with the lease.
        Ok(Err(e)) => tracing::warn!(error = %e, container = container_id, "release failed"),
        Err(e) => tracing::warn!(error = %e, container = container_id, "release not delivered"),
    }
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
            handoff: picked_up.saturating_duration_since(submitted),
            queue_wait,
            cold_start,
            enforcement,
            enforcement_parts,
            run,
            release,
            reply: Duration::ZERO,
            total: Duration::ZERO,
        },
        thread_hops: 0,
    })
}
