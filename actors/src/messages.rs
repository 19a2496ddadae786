//! Every message the actors exchange. Each is named verb + noun and answers
//! `Result<T, ActorError>`, so no failure is hidden behind a bare `()`.
//!
//! Senders: the runtime's invocation path sends `AcquireLease`, `AcquireContainer` and
//! `ReleaseContainer`; the container manager sends `EnforceGroup` and `RemoveEnforcement` to the
//! map writer; the runtime sends the set-up and shut-down messages.

use std::time::Duration;

use actix::Message;

use crate::bpf_loader::SchedulerStatus;
use crate::config::{CpuGroup, FunctionSpec, GroupId, HostGroup};
use crate::container_backend::{CgroupId, CgroupRef, Container, Enforcement};
use crate::error::ActorError;
use crate::lease::GroupLease;

// ---- ResourceTracker ----

/// Asks the resource tracker for a lease (group + permit) for one invocation of `function`;
/// waits, bounded by the queue timeout, while the inflight limit is reached.
#[derive(Debug, Message)]
#[rtype(result = "Result<GroupLease, ActorError>")]
pub struct AcquireLease {
    /// The function to be invoked.
    pub function: String,
}

/// Takes one CPU pressure sample and adjusts the inflight limit (`monitor_load`'s step; the
/// tracker also sends it to itself every period).
#[derive(Debug, Message)]
#[rtype(result = "Result<LimitChange, ActorError>")]
pub struct SampleLoad;

/// What one `monitor_load` step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitChange {
    /// The pressure sample, in percent.
    pub pressure: f64,
    /// The limit before.
    pub before: usize,
    /// The limit after.
    pub after: usize,
}

/// Closes the limiter: waiting and future lease requests fail with `ShuttingDown`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct CloseAdmission;

// ---- ContainerManager ----

/// Registers a function so it can be invoked.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct RegisterFunction {
    /// Its specification.
    pub spec: FunctionSpec,
}

/// Acquires a container for `function`, warm or cold, and enforces the lease's group on it
/// before handing it out. On failure the lease is released after any container is returned.
#[derive(Debug, Message)]
#[rtype(result = "Result<LeasedContainer, ActorError>")]
pub struct AcquireContainer {
    /// The function.
    pub function: String,
    /// The lease granted for this invocation.
    pub lease: GroupLease,
}

/// Whether a container came from the warm pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// Reused from the warm pool.
    Warm,
    /// Created for this invocation.
    Cold,
}

/// A container enforced onto its lease's group, ready to run the function.
#[derive(Debug)]
pub struct LeasedContainer {
    /// The container.
    pub container: Container,
    /// The lease; it goes back with the container.
    pub lease: GroupLease,
    /// Warm or cold.
    pub start: StartKind,
    /// Time spent creating the container (zero when warm).
    pub cold_start: Duration,
    /// Time from sending `EnforceGroup` to its acknowledgement.
    pub enforcement: Duration,
}

/// Returns a container after an invocation: the container goes back to the pool (or is
/// destroyed) first, then the lease's permit is released.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct ReleaseContainer {
    /// The container.
    pub container: Container,
    /// Its lease.
    pub lease: GroupLease,
}

/// Destroys idle containers past their keep-alive and adopts lost ones; answers how many were
/// destroyed. The manager also sends it to itself every reap period.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct ReapIdle;

/// Destroys every container that is not in use (shutdown); answers how many were destroyed.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct DrainContainers;

/// Reports the warm pool and the containers in use.
#[derive(Debug, Message)]
#[rtype(result = "Result<PoolReport, ActorError>")]
pub struct ReportPool;

/// The container manager's view of its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// Idle containers per function.
    pub warm: std::collections::BTreeMap<String, usize>,
    /// Containers handed out.
    pub in_use: usize,
}

// ---- MapWriter ----

/// Publishes the group layout to the backend.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct PublishGroups {
    /// The validated groups.
    pub groups: Vec<CpuGroup>,
    /// The host group (unmapped tasks), for backends that schedule it.
    pub host: HostGroup,
}

/// Commits `cgroup → group` as one atomic operation and acknowledges it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Enforcement, ActorError>")]
pub struct EnforceGroup {
    /// The container's cgroup.
    pub cgroup: CgroupRef,
    /// The group.
    pub group: GroupId,
}

/// Removes a cgroup's enforcement (before its container is destroyed); answers whether there
/// was one.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct RemoveEnforcement {
    /// The cgroup.
    pub cgroup: CgroupRef,
}

/// Lists the enforcements in the writer's mirror.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<(CgroupId, GroupId)>, ActorError>")]
pub struct ListEnforcements;

/// Removes every enforcement this writer knows and closes the backend (shutdown); answers how
/// many were removed.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct ClearEnforcements;

// ---- BpfLoader ----

/// Loads and attaches the scheduler (when sched_ext is supported), then watches it.
#[derive(Debug, Message)]
#[rtype(result = "Result<SchedulerStatus, ActorError>")]
pub struct StartScheduler;

/// Reports the scheduler's status.
#[derive(Debug, Message)]
#[rtype(result = "Result<SchedulerStatus, ActorError>")]
pub struct GetSchedulerStatus;

/// Detaches the scheduler and stops watching it (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "Result<SchedulerStatus, ActorError>")]
pub struct StopScheduler;
