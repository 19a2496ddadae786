//! Counters and gauges the actors publish as they work, readable from any thread without a
//! message (a stats snapshot costs no thread hop), plus an optional ordered journal of
//! control-plane events that tests use to check orderings such as "container returned before
//! permit".

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::GroupId;

/// The actors, for per-actor restart counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// [`crate::resource_tracker::ResourceTracker`].
    ResourceTracker = 0,
    /// [`crate::container_manager::ContainerManager`].
    ContainerManager = 1,
    /// [`crate::map_writer::MapWriter`].
    MapWriter = 2,
    /// [`crate::bpf_loader::BpfLoader`].
    BpfLoader = 3,
}

/// One control-plane event, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEvent {
    /// A lease was granted.
    LeaseGranted {
        /// The lease.
        lease: u64,
        /// Its group.
        group: GroupId,
    },
    /// The map writer committed an enforcement.
    EnforcementCommitted {
        /// The cgroup.
        cgroup: u64,
        /// The group.
        group: GroupId,
    },
    /// The container manager handed a container out.
    ContainerHandedOut {
        /// The container's cgroup.
        cgroup: u64,
        /// The lease it goes with.
        lease: u64,
    },
    /// A container went back to the warm pool (or was destroyed) on release.
    ContainerReturned {
        /// The container's cgroup.
        cgroup: u64,
        /// The lease it went with.
        lease: u64,
    },
    /// A lease's permit went back to the limiter.
    PermitReleased {
        /// The lease.
        lease: u64,
    },
}

/// Shared counters, gauges and the optional journal.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Leases granted.
    pub leases_granted: AtomicU64,
    /// Lease requests that timed out.
    pub queue_timeouts: AtomicU64,
    /// Containers created (cold starts).
    pub cold_starts: AtomicU64,
    /// Containers reused from the warm pool.
    pub warm_starts: AtomicU64,
    /// Containers destroyed.
    pub containers_destroyed: AtomicU64,
    /// Idle containers in all warm pools.
    pub warm_containers: AtomicUsize,
    /// Containers that exist (idle or busy).
    pub live_containers: AtomicUsize,
    /// Enforcements committed.
    pub enforcements_committed: AtomicU64,
    /// Enforcement entries currently in the map writer's mirror.
    pub enforcement_entries: AtomicUsize,
    /// Handler panics turned into restarts, per [`ActorKind`].
    pub restarts: [AtomicU64; 4],
    /// Limit changes made by `monitor_load`.
    pub limit_changes: AtomicU64,
    journal: Option<Mutex<Vec<JournalEvent>>>,
}

impl Telemetry {
    /// Telemetry without a journal (production).
    pub fn new() -> Self {
        Telemetry::default()
    }

    /// Telemetry that also records every [`JournalEvent`] (tests, diagnostics).
    pub fn with_journal() -> Self {
        Telemetry {
            journal: Some(Mutex::new(Vec::new())),
            ..Telemetry::default()
        }
    }

    /// Records an event if the journal is on.
    pub fn record(&self, event: JournalEvent) {
        if let Some(journal) = &self.journal {
            journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event);
        }
    }

    /// A copy of the journal so far (empty when it is off).
    pub fn journal(&self) -> Vec<JournalEvent> {
        self.journal
            .as_ref()
            .map(|j| j.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Counts a restart of `actor`.
    pub fn count_restart(&self, actor: ActorKind) {
        self.restarts[actor as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts of `actor` so far.
    pub fn restarts_of(&self, actor: ActorKind) -> u64 {
        self.restarts[actor as usize].load(Ordering::Relaxed)
    }
}
