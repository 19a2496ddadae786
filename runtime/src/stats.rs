//! What the runtime reports: a statistics snapshot, read from shared counters without sending
//! a message (so it costs no thread hop), and the report of a graceful shutdown.

use corral_actors::bpf_loader::SchedulerStatus;
use corral_actors::config::GroupId;

/// One group's live figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// Its id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Its CPUs.
    pub cpus: Vec<u32>,
    /// Leases held on it now.
    pub leases: usize,
}

/// Restarts per actor (each a handler panic turned into a supervised restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActorRestarts {
    /// ResourceTracker.
    pub resource_tracker: u64,
    /// ContainerManager.
    pub container_manager: u64,
    /// MapWriter.
    pub map_writer: u64,
    /// BpfLoader.
    pub bpf_loader: u64,
}

/// A snapshot of the runtime's state.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// The inflight limit now.
    pub limit: usize,
    /// Leases held now.
    pub in_flight: usize,
    /// The most leases ever held at once.
    pub max_in_flight: usize,
    /// Permits available now.
    pub available_permits: usize,
    /// Per group.
    pub groups: Vec<GroupSnapshot>,
    /// Invocations that completed.
    pub invocations_completed: u64,
    /// Invocations that failed.
    pub invocations_failed: u64,
    /// Invocations that started while the runtime's scheduler was not running and ran
    /// unenforced (`enforcement.when_detached = "run"`).
    pub invocations_unenforced: u64,
    /// Invocations the warm lane served (no message to the actors, no hop).
    pub invocations_warm_lane: u64,
    /// Invocations confined by cpuset while the runtime's scheduler was down
    /// (`enforcement.when_detached = "cpuset"`).
    pub invocations_cpuset_fallback: u64,
    /// Lease requests that timed out.
    pub queue_timeouts: u64,
    /// Cold starts.
    pub cold_starts: u64,
    /// Warm starts.
    pub warm_starts: u64,
    /// Containers destroyed.
    pub containers_destroyed: u64,
    /// Idle containers.
    pub warm_containers: usize,
    /// Containers that exist.
    pub live_containers: usize,
    /// Enforcements committed.
    pub enforcements_committed: u64,
    /// Entries in the map writer's mirror.
    pub enforcement_entries: usize,
    /// Limit changes made by `monitor_load`.
    pub limit_changes: u64,
    /// Supervised restarts.
    pub restarts: ActorRestarts,
    /// The map-writer backend in use (`bpf`, `cpuset`, `memory`).
    pub enforcement_backend: &'static str,
    /// Why sched_ext is not used, when it is not.
    pub sched_ext_unavailable: Vec<String>,
    /// The scheduler's status.
    pub scheduler: SchedulerStatus,
}

/// What a graceful shutdown did and left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Containers destroyed while draining.
    pub containers_destroyed: usize,
    /// Enforcements removed.
    pub enforcements_removed: usize,
    /// Permits available after shutdown (equals `limit` when none leaked).
    pub permits_available: usize,
    /// The inflight limit at shutdown.
    pub limit: usize,
    /// Leases still held (zero when none leaked).
    pub leases_held: usize,
}
