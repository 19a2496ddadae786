//! A scenario testkit for worker authors (feature `testkit`): corral's control plane without a
//! kernel. [`Plane`] starts the real actors (resource tracker, container manager, map writer)
//! with `sim` containers, `memory` maps, a [`ScriptedPressure`] and the journal on, so that a
//! test sends messages or invocations step by step and asserts on the journal, the
//! enforcements, the limiter and the pools. `tests/tests/scenarios.rs` is written on it.
//!
//! ```
//! use corral::testkit::{Plane, PlaneSpec};
//! use corral::StartKind;
//!
//! actix::System::new().block_on(async {
//!     let plane = Plane::start(PlaneSpec::new(&[("a", "0-1"), ("b", "2-3")], 2), &["f"]).await;
//!     let cold = plane.acquire("f").await.unwrap();
//!     assert_eq!(cold.start, StartKind::Cold);
//!     // Handed out only after the map writer committed cgroup → group.
//!     let cgroup = cold.container.info.cgroup.id;
//!     assert_eq!(plane.maps.get(cgroup), Some(cold.lease.group()));
//!     plane.release(cold).await.unwrap();
//!     assert_eq!(plane.limiter.in_flight(), 0);
//!     let warm = plane.acquire("f").await.unwrap();
//!     assert_eq!(warm.start, StartKind::Warm);
//!     plane.release(warm).await.unwrap();
//!     assert_eq!(plane.pool().await.unwrap().warm.get("f"), Some(&1));
//! });
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Supervisor};
use corral_actors::config::{
    validate_groups, CpuGroup, FunctionSpec, GroupConfig, GroupId, LimiterConfig, MonitorConfig,
    PlacementConfig, PoolConfig,
};
use corral_actors::container_backend::sim::SimBackend;
use corral_actors::container_backend::CgroupId;
use corral_actors::container_manager::{ContainerManager, FunctionRegistry, WarmLane};
use corral_actors::lease::{GroupLease, Limiter};
use corral_actors::map_backend::memory::{MemoryBackend, MemoryMaps};
use corral_actors::map_writer::MapWriter;
use corral_actors::messages::{
    AcquireContainer, AcquireLease, LeasedContainer, LimitChange, ListEnforcements, PoolReport,
    RegisterFunction, ReleaseContainer, ReportPool, SampleLoad,
};
use corral_actors::placement::Placement;
use corral_actors::resource_tracker::ResourceTracker;
use corral_actors::supervision::Failpoints;
use corral_actors::telemetry::{JournalEvent, Telemetry};
use corral_actors::ActorError;

pub use corral_actors::pressure::ScriptedPressure;

/// The actors of one control plane, plus what a test inspects.
#[derive(Debug)]
pub struct Plane {
    /// The resource tracker.
    pub tracker: Addr<ResourceTracker>,
    /// The container manager (`sim` containers).
    pub containers: Addr<ContainerManager>,
    /// The map writer (`memory` maps).
    pub writer: Addr<MapWriter>,
    /// The maps the writer writes.
    pub maps: MemoryMaps,
    /// The inflight limiter.
    pub limiter: Arc<Limiter>,
    /// The placement policy and the groups' loads.
    pub placement: Arc<Placement>,
    /// Counters and the journal (always on here).
    pub telemetry: Arc<Telemetry>,
    /// The pressure `monitor_load` samples.
    pub pressure: ScriptedPressure,
    /// The warm lane.
    pub lane: Arc<WarmLane>,
}

/// What [`Plane::start`] builds: the groups (name, CPUs) and the policies.
#[derive(Debug, Clone)]
pub struct PlaneSpec {
    /// The groups, as (name, CPU list), validated against a pretend 16-CPU machine.
    pub groups: Vec<(&'static str, &'static str)>,
    /// The placement policy.
    pub placement: PlacementConfig,
    /// The limiter.
    pub limiter: LimiterConfig,
    /// `monitor_load` (disabled by default: sample with [`Plane::sample_load`]).
    pub monitor: MonitorConfig,
    /// The warm pools.
    pub pool: PoolConfig,
    /// The `sim` backend's cold-start time.
    pub cold_start: Duration,
}

impl PlaneSpec {
    /// `groups` with an inflight limit of `limit`, the default policies, 1 ms cold starts.
    pub fn new(groups: &[(&'static str, &'static str)], limit: usize) -> Self {
        PlaneSpec {
            groups: groups.to_vec(),
            placement: PlacementConfig::default(),
            limiter: LimiterConfig {
                initial: limit,
                min: 1,
                max: limit.max(1),
                queue_timeout_ms: 5_000,
            },
            monitor: MonitorConfig {
                enabled: false,
                ..MonitorConfig::default()
            },
            pool: PoolConfig::default(),
            cold_start: Duration::from_millis(1),
        }
    }
}

fn groups(spec: &[(&str, &str)]) -> Vec<CpuGroup> {
    let configs: Vec<GroupConfig> = spec
        .iter()
        .map(|(name, cpus)| GroupConfig {
            name: name.to_string(),
            cpus: cpus.to_string(),
            slice_us: 5_000,
            order: Default::default(),
            borrow: false,
            exclusive: false,
        })
        .collect();
    // A pretend 16-CPU machine: the memory backend never touches real CPUs.
    validate_groups(&configs, &(0..16).collect::<Vec<_>>()).expect("valid groups")
}

impl Plane {
    /// Starts the actors (inside an actix System: `#[actix_rt::test]`, or `System::new().block_on`)
    /// with `functions` registered.
    pub async fn start(spec: PlaneSpec, functions: &[&str]) -> Plane {
        start(spec, functions).await
    }
}

async fn start(spec: PlaneSpec, functions: &[&str]) -> Plane {
    let groups = groups(&spec.groups);
    let telemetry = Arc::new(Telemetry::with_journal());
    let failpoints = Arc::new(Failpoints::new());
    let maps = MemoryMaps::new();
    let pressure = ScriptedPressure::default();
    let writer_actor = MapWriter::new(
        Box::new(MemoryBackend::new(maps.clone())),
        groups.clone(),
        telemetry.clone(),
        failpoints.clone(),
    );
    let committed = writer_actor.committed();
    let writer = Supervisor::start(move |_| writer_actor);
    let tracker_actor = ResourceTracker::new(
        groups.clone(),
        spec.placement,
        spec.limiter,
        spec.monitor,
        Box::new(pressure.clone()),
        telemetry.clone(),
        failpoints.clone(),
    )
    .expect("tracker");
    let limiter = tracker_actor.limiter();
    let placement = tracker_actor.placement();
    let tracker = Supervisor::start(move |_| tracker_actor);
    let manager = ContainerManager::new(
        Arc::new(SimBackend::new(spec.cold_start)),
        Arc::new(FunctionRegistry::default()),
        groups,
        spec.pool.clone(),
        writer.clone(),
        committed,
        telemetry.clone(),
        failpoints,
    )
    .expect("manager");
    let lane = manager.lane();
    let containers = Supervisor::start(move |_| manager);
    for f in functions {
        containers
            .send(RegisterFunction {
                spec: FunctionSpec::named(*f),
            })
            .await
            .unwrap()
            .unwrap();
    }
    Plane {
        tracker,
        containers,
        writer,
        maps,
        limiter,
        placement,
        telemetry,
        pressure,
        lane,
    }
}

impl Plane {
    /// A lease from the resource tracker (waits for a permit, bounded by the queue timeout).
    pub async fn lease(&self, function: &str) -> Result<GroupLease, ActorError> {
        self.tracker
            .send(AcquireLease {
                function: function.to_string(),
            })
            .await
            .map_err(ActorError::mailbox("resource tracker", "AcquireLease"))?
    }
}

impl Plane {
    /// A lease and its container through the actors, enforced before it is handed out.
    pub async fn acquire(&self, function: &str) -> Result<LeasedContainer, ActorError> {
        let lease = self.lease(function).await?;
        self.containers
            .send(AcquireContainer {
                function: function.to_string(),
                lease,
            })
            .await
            .map_err(ActorError::mailbox("container manager", "AcquireContainer"))?
    }

    /// Returns a container (to its pool, or destroyed), then its lease's permit.
    pub async fn release(&self, leased: LeasedContainer) -> Result<(), ActorError> {
        self.containers
            .send(ReleaseContainer {
                container: leased.container,
                lease: leased.lease,
            })
            .await
            .map_err(ActorError::mailbox("container manager", "ReleaseContainer"))?
    }

    /// One `monitor_load` step now, with the pressure last [`ScriptedPressure::set`].
    pub async fn sample_load(&self) -> Result<LimitChange, ActorError> {
        self.tracker
            .send(SampleLoad)
            .await
            .map_err(ActorError::mailbox("resource tracker", "SampleLoad"))?
    }

    /// The map writer's mirror (cgroup → group), as `ListEnforcements` answers it.
    pub async fn enforcements(&self) -> Result<Vec<(CgroupId, GroupId)>, ActorError> {
        self.writer
            .send(ListEnforcements)
            .await
            .map_err(ActorError::mailbox("map writer", "ListEnforcements"))?
    }

    /// The warm pools and the containers in use.
    pub async fn pool(&self) -> Result<PoolReport, ActorError> {
        self.containers
            .send(ReportPool)
            .await
            .map_err(ActorError::mailbox("container manager", "ReportPool"))?
    }

    /// Every event so far, in order.
    pub fn journal(&self) -> Vec<JournalEvent> {
        self.telemetry.journal()
    }

    /// A lease built the way the warm lane builds one: a free permit and the group's load.
    /// Panics if no permit is free.
    pub fn lane_lease(&self, group: GroupId) -> GroupLease {
        GroupLease::new(
            group,
            self.limiter.try_admit().expect("a free permit"),
            self.placement.loads()[group.0 as usize].take(),
            Duration::ZERO,
            Arc::clone(&self.telemetry),
        )
    }
}
