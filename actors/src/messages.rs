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

/// Stops the receiving actor so that its supervisor restarts it, rebuilding its state from
/// the source of truth (the tracker's policy, the manager's pools from the backend, the
/// writer's mirror from the maps), exactly as after a panic. Answers before it stops.
#[derive(Debug, Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Restart;

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
    /// Time spent creating the container and starting what it runs (its server), the
    /// enforcement in between not counted (zero when warm).
    pub cold_start: Duration,
    /// Time from sending `EnforceGroup` to its acknowledgement.
    pub enforcement: Duration,
    /// `enforcement`, part by part.
    pub enforcement_parts: EnforcementParts,
}

/// Where an enforcement's time went, as the container manager saw it: the four parts add up
/// to the time from sending `EnforceGroup` to its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnforcementParts {
    /// From sending `EnforceGroup` until the map writer began handling it: its mailbox, behind
    /// whatever the actix thread was doing (or waiting for a CPU).
    pub mailbox_wait: Duration,
    /// The backend's commit without the sweep: the map update (or the cpuset write).
    pub update: Duration,
    /// The `SCHED_EXT` policy sweep over the cgroup's threads (partial mode only).
    pub sweep: Duration,
    /// From the commit's end until the acknowledgement resumed the container manager.
    pub reply: Duration,
}

impl EnforcementParts {
    /// Splits `total` (measured from `sent`) by the writer's timestamps in `ack`. Without a
    /// handling time (a backend path that sets none) everything but the commit is counted as
    /// mailbox wait.
    pub fn split(
        sent: std::time::Instant,
        total: Duration,
        ack: &crate::container_backend::Enforcement,
    ) -> EnforcementParts {
        let commit = ack.commit_time.min(total);
        let mailbox_wait = ack
            .handled_at
            .map_or(total - commit, |h| h.saturating_duration_since(sent))
            .min(total - commit);
        EnforcementParts {
            mailbox_wait,
            update: commit.saturating_sub(ack.sweep_time),
            sweep: ack.sweep_time.min(commit),
            reply: total - commit - mailbox_wait,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupId;
    use crate::container_backend::{CgroupId, Enforcement};
    use std::time::Instant;

    fn ack(commit_ms: u64, sweep_ms: u64, handled_at: Option<Instant>) -> Enforcement {
        Enforcement {
            cgroup: CgroupId(1),
            group: GroupId(0),
            cpus: vec![0],
            sched_ext: false,
            join: Vec::new(),
            commit_time: Duration::from_millis(commit_ms),
            sweep_time: Duration::from_millis(sweep_ms),
            handled_at,
        }
    }

    /// The parts add up to the total: the wait runs to the writer's handling time, the commit
    /// splits into update and sweep, and the rest is the reply.
    #[test]
    fn enforcement_parts_add_up_to_the_total() {
        let sent = Instant::now();
        let total = Duration::from_millis(20);
        let p = EnforcementParts::split(
            sent,
            total,
            &ack(5, 2, Some(sent + Duration::from_millis(12))),
        );
        assert_eq!(p.mailbox_wait, Duration::from_millis(12));
        assert_eq!(p.update, Duration::from_millis(3));
        assert_eq!(p.sweep, Duration::from_millis(2));
        assert_eq!(p.reply, Duration::from_millis(3));
        assert_eq!(p.mailbox_wait + p.update + p.sweep + p.reply, total);
    }

    /// Without a handling time everything outside the commit is wait; timestamps that do not
    /// fit the total (clock reads on two threads) never make a part exceed it.
    #[test]
    fn enforcement_parts_stay_within_the_total() {
        let sent = Instant::now();
        let total = Duration::from_millis(10);
        let p = EnforcementParts::split(sent, total, &ack(4, 0, None));
        assert_eq!(
            (p.mailbox_wait, p.reply),
            (Duration::from_millis(6), Duration::ZERO)
        );
        let late = EnforcementParts::split(
            sent,
            total,
            &ack(4, 0, Some(sent + Duration::from_millis(50))),
        );
        assert_eq!(
            late.mailbox_wait + late.update + late.sweep + late.reply,
            total
        );
        let huge = EnforcementParts::split(sent, total, &ack(40, 50, Some(sent)));
        assert_eq!(
            huge.mailbox_wait + huge.update + huge.sweep + huge.reply,
            total
        );
    }
}
