//! Starting the runtime: [`Runtime::start`] validates the configuration, picks the container and
//! map-writer backends, and starts the actix System on a thread of its own with every actor
//! under a `Supervisor`. It returns a [`RuntimeHandle`] usable from any tokio runtime.
//! [`RuntimeBuilder`] injects test doubles (pressure source, backends, scheduler driver) and
//! turns on the event journal.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use actix::{Addr, Arbiter, Supervisor, System};
use corral_actors::bpf_loader::{
    BpfLoader, LoaderTiming, SchedExtSupport, SchedulerDriver, SchedulerStatus,
};
use corral_actors::config::{CpuGroup, GroupConfig};
use corral_actors::container_backend::local::LocalBackend;
use corral_actors::container_backend::sim::SimBackend;
use corral_actors::container_backend::ContainerBackend;
use corral_actors::container_manager::{ContainerManager, FunctionRegistry, WarmLane};
use corral_actors::lease::Limiter;
use corral_actors::map_backend::cpuset::CpusetBackend;
use corral_actors::map_backend::memory::{MemoryBackend, MemoryMaps};
use corral_actors::map_backend::MapBackend;
use corral_actors::map_writer::MapWriter;
use corral_actors::messages::{PublishGroups, RegisterFunction, RemoveEnforcement, StartScheduler};
use corral_actors::placement::Placement;
use corral_actors::pressure::{open_source, PressureSource};
use corral_actors::resource_tracker::ResourceTracker;
use corral_actors::supervision::Failpoints;
use corral_actors::telemetry::Telemetry;
use corral_actors::ActorError;

use crate::config::{
    ContainerBackendKind, DetachedPolicy, EnforcementKind, RuntimeConfig, ValidatedConfig,
};
use crate::error::RuntimeError;
use crate::handle::RuntimeHandle;
use crate::metrics::{GroupCollector, Metrics};

/// What the handle and the invocation path share (all of it `Send + Sync`).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tracker: Addr<ResourceTracker>,
    pub(crate) containers: Addr<ContainerManager>,
    pub(crate) writer: Addr<MapWriter>,
    pub(crate) loader: Addr<BpfLoader>,
    pub(crate) backend: Arc<dyn ContainerBackend>,
    pub(crate) functions: Arc<FunctionRegistry>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) placement: Arc<Placement>,
    pub(crate) groups: Vec<CpuGroup>,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) scheduler: Arc<Mutex<SchedulerStatus>>,
    pub(crate) enforcement_backend: &'static str,
    pub(crate) sched_ext_unavailable: Vec<String>,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) actix_thread: ThreadId,
    /// `Some` when this runtime runs the scheduler: what invocations do while it is down.
    pub(crate) when_detached: Option<crate::config::DetachedPolicy>,
    /// Invocations that started while the scheduler was down and ran anyway.
    pub(crate) unenforced: AtomicU64,
    /// The warm lane, unless `containers.warm_lane = false`.
    pub(crate) lane: Option<Arc<WarmLane>>,
    /// Invocations served by the warm lane.
    pub(crate) lane_invocations: AtomicU64,
    /// Prometheus metrics, when `metrics.listen` is set.
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// Where they are served.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// Invocations confined by cpuset while the scheduler was down (`when_detached = "cpuset"`).
    pub(crate) cpuset_fallback: AtomicU64,
    /// Containers (cgroup ids) whose cpuset.cpus the fallback set: cleared at their next
    /// invocation with the scheduler back.
    pub(crate) cpuset_pinned: Mutex<std::collections::HashSet<u64>>,
}

/// The entry point.
#[derive(Debug)]
pub struct Runtime;

impl Runtime {
    /// Starts the runtime with `config`: validates it, opens the backends, starts the actors on
    /// their System thread, publishes the groups and registers the configured functions. The
    /// handle works from any thread and any tokio runtime.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use corral::{FunctionSpec, Runtime, RuntimeConfig};
    /// let config = RuntimeConfig::from_toml_str(r#"
    ///     [[groups]]
    ///     name = "all"
    ///     cpus = "0"
    ///     [containers]
    ///     backend = "sim"      # no processes: an invocation answers its payload
    ///     [enforcement]
    ///     backend = "memory"   # in-memory maps: runs anywhere, places nothing
    ///     [[functions]]
    ///     name = "echo"
    /// "#)?;
    /// let runtime = Runtime::start(config)?;
    /// assert_eq!(runtime.stats().limit, 8);
    /// tokio::runtime::Runtime::new()?.block_on(runtime.shutdown())?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(config: RuntimeConfig) -> Result<RuntimeHandle, RuntimeError> {
        Runtime::builder(config).start()
    }

    /// A builder for `config`, to inject backends or test doubles before starting.
    pub fn builder(config: RuntimeConfig) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            pressure: None,
            map_backend: None,
            container_backend: None,
            scheduler_driver: None,
            journal: false,
            failpoints: Arc::new(Failpoints::new()),
            loader_timing: LoaderTiming::default(),
            support: None,
        }
    }
}

/// Options for [`Runtime::builder`].
#[derive(Debug)]
pub struct RuntimeBuilder {
    config: RuntimeConfig,
    pressure: Option<Box<dyn PressureSource>>,
    map_backend: Option<Box<dyn MapBackend>>,
    container_backend: Option<Arc<dyn ContainerBackend>>,
    scheduler_driver: Option<Box<dyn SchedulerDriver>>,
    journal: bool,
    failpoints: Arc<Failpoints>,
    loader_timing: LoaderTiming,
    support: Option<SchedExtSupport>,
}

impl RuntimeBuilder {
    /// Reads CPU pressure from `source` instead of `/proc`.
    pub fn pressure_source(mut self, source: Box<dyn PressureSource>) -> Self {
        self.pressure = Some(source);
        self
    }

    /// Enforces through `backend` instead of the configured one.
    pub fn map_backend(mut self, backend: Box<dyn MapBackend>) -> Self {
        self.map_backend = Some(backend);
        self
    }

    /// Enforces into in-memory `maps` the caller can inspect.
    pub fn memory_maps(self, maps: MemoryMaps) -> Self {
        self.map_backend(Box::new(MemoryBackend::new(maps)))
    }

    /// Creates containers through `backend` instead of the configured one.
    pub fn container_backend(mut self, backend: Arc<dyn ContainerBackend>) -> Self {
        self.container_backend = Some(backend);
        self
    }

    /// Loads the scheduler through `driver`.
    pub fn scheduler_driver(mut self, driver: Box<dyn SchedulerDriver>) -> Self {
        self.scheduler_driver = Some(driver);
        self
    }

    /// Treats the host as offering `support` instead of probing it.
    pub fn sched_ext_support(mut self, support: SchedExtSupport) -> Self {
        self.support = Some(support);
        self
    }

    /// Sets the BPF loader's watch and backoff timing.
    pub fn loader_timing(mut self, timing: LoaderTiming) -> Self {
        self.loader_timing = timing;
        self
    }

    /// Records the control-plane event journal (see [`RuntimeHandle::journal`]).
    pub fn journal(mut self) -> Self {
        self.journal = true;
        self
    }

    /// Shares `failpoints` with every actor (armed only with the `failpoints` feature).
    pub fn failpoints(mut self, failpoints: Arc<Failpoints>) -> Self {
        self.failpoints = failpoints;
        self
    }

    /// Validates the configuration and starts the runtime.
    pub fn start(self) -> Result<RuntimeHandle, RuntimeError> {
        let validated = self.config.validate()?;
        self.start_validated(validated)
    }

    /// Starts with groups validated against `online` CPUs instead of this machine's.
    pub fn start_with_online_cpus(self, online: &[u32]) -> Result<RuntimeHandle, RuntimeError> {
        let validated = self.config.validate_against(online)?;
        self.start_validated(validated)
    }

    fn start_validated(self, validated: ValidatedConfig) -> Result<RuntimeHandle, RuntimeError> {
        let support = self.support.clone().unwrap_or_else(SchedExtSupport::probe);
        let plan = plan_enforcement(&validated.raw, &support, self.map_backend.is_some())?;
        // Bound before anything else starts, so a taken port fails the start cleanly.
        let metrics_listener = match validated.raw.metrics.address()? {
            Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| {
                RuntimeError::from(ActorError::invalid(
                    "metrics.listen",
                    addr,
                    format!("cannot listen there ({e}); choose a free port, or leave metrics.listen unset"),
                ))
            })?),
            None => None,
        };
        let container_backend = match self.container_backend {
            Some(b) => b,
            None => open_container_backend(&validated.raw)?,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("corral-actix".to_string())
            .spawn(move || {
                let system = System::new();
                let backend_for_cleanup = Arc::clone(&container_backend);
                let setup = system.block_on(setup(
                    validated,
                    plan,
                    support,
                    SetupParts {
                        pressure: self.pressure,
                        map_backend: self.map_backend,
                        container_backend,
                        scheduler_driver: self.scheduler_driver,
                        journal: self.journal,
                        failpoints: self.failpoints,
                        loader_timing: self.loader_timing,
                        metrics_listener,
                    },
                ));
                let ok = setup.is_ok();
                if !ok {
                    // Remove what the container backend set up (e.g. the cgroup parent).
                    if let Err(e) = backend_for_cleanup.close() {
                        tracing::warn!(error = %e, "cannot clean up after a failed start");
                    }
                }
                let _ =
                    tx.send(setup.map(|shared| (shared, System::current(), Arbiter::current())));
                if ok {
                    let _ = system.run();
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| RuntimeError::Start {
                what: "spawning the actix System thread".to_string(),
                source: Box::new(e),
            })?;
        match rx.recv() {
            Ok(Ok((shared, system, arbiter))) => {
                Ok(RuntimeHandle::new(shared, system, arbiter, thread, done_rx))
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let panic = thread
                    .join()
                    .err()
                    .map(|p| corral_actors::supervision::panic_detail(p.as_ref()));
                Err(RuntimeError::Start {
                    what: format!(
                        "the actix System thread died while starting: {}",
                        panic.unwrap_or_default()
                    ),
                    source: "System thread exited".into(),
                })
            }
        }
    }
}

/// The map backend chosen for a configuration on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnforcementPlan {
    /// The caller injected a backend.
    Injected,
    /// In-memory maps.
    Memory,
    /// cpuset; `fallback` holds why sched_ext was not used when `auto` fell back.
    Cpuset { fallback: Option<Vec<String>> },
    /// The scheduler's pinned maps.
    Bpf,
}

/// The enforcement a configuration gets on a host with `support`.
///
/// `bpf` with `load_scheduler` on a kernel that cannot run sched_ext is refused here, before
/// anything (the pin directory, the maps, a cgroup) is created.
fn plan_enforcement(
    config: &RuntimeConfig,
    support: &SchedExtSupport,
    injected: bool,
) -> Result<EnforcementPlan, RuntimeError> {
    if injected {
        return Ok(EnforcementPlan::Injected);
    }
    Ok(match config.enforcement.backend {
        EnforcementKind::Memory => EnforcementPlan::Memory,
        EnforcementKind::Cpuset => EnforcementPlan::Cpuset { fallback: None },
        EnforcementKind::Bpf if config.enforcement.load_scheduler && !support.available() => {
            return Err(ActorError::invalid(
                "enforcement.backend",
                "bpf",
                format!(
                    "this kernel cannot run the scheduler ({}); use \"auto\" (falls back to \
                     cpuset) or \"cpuset\", or set enforcement.load_scheduler = false where \
                     `corral sched` runs it",
                    support.reasons().join("; ")
                ),
            )
            .into())
        }
        EnforcementKind::Bpf => EnforcementPlan::Bpf,
        EnforcementKind::Auto if support.available() => EnforcementPlan::Bpf,
        EnforcementKind::Auto => EnforcementPlan::Cpuset {
            fallback: Some(support.reasons()),
        },
    })
}

fn open_container_backend(
    config: &RuntimeConfig,
) -> Result<Arc<dyn ContainerBackend>, RuntimeError> {
    Ok(match config.containers.backend_kind()? {
        ContainerBackendKind::Sim => Arc::new(SimBackend::new(Duration::from_micros(
            config.containers.sim_cold_start_us,
        ))),
        ContainerBackendKind::Local => Arc::new(LocalBackend::open(
            config.containers.resolved_cgroup_parent()?,
        )?),
        ContainerBackendKind::Containerd => open_containerd(config)?,
    })
}

/// `enforcement.when_detached = "cpuset"` confines containers through their own cgroup v2
/// `cpuset.cpus`: that needs `local` containers under a parent whose children get the cpuset
/// controller.
fn check_cpuset_fallback(config: &RuntimeConfig, backend: &str) -> Result<(), RuntimeError> {
    let refuse = |why: String| {
        RuntimeError::from(ActorError::invalid(
            "enforcement.when_detached",
            "cpuset",
            why,
        ))
    };
    if backend != "local" {
        return Err(refuse(format!(
            "the cpuset fallback writes each container's cgroup v2 cpuset.cpus, and `{backend}` \
             containers have none; use containers.backend = \"local\", or when_detached = \
             \"run\" or \"fail\""
        )));
    }
    let parent = config.containers.resolved_cgroup_parent()?;
    let control = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    if !enabled.split_whitespace().any(|c| c == "cpuset") {
        return Err(refuse(format!(
            "{} does not enable the cpuset controller for its children (it has: {:?}), so \
             containers have no cpuset.cpus (on a hybrid or v1 host cgroup2 offers no \
             controllers); enable cpuset down to the parent, or use when_detached = \"run\" \
             or \"fail\"",
            control.display(),
            enabled.trim()
        )));
    }
    Ok(())
}

/// The `containerd` backend, on `[containers.containerd]` and the cgroup parent.
#[cfg(feature = "containerd")]
fn open_containerd(config: &RuntimeConfig) -> Result<Arc<dyn ContainerBackend>, RuntimeError> {
    use corral_actors::container_backend::containerd::ContainerdBackend;
    let c = &config.containers.containerd;
    let rootfs = c.validate()?;
    Ok(Arc::new(ContainerdBackend::open(
        &c.socket,
        &c.namespace,
        config.containers.resolved_cgroup_parent()?,
        rootfs,
    )?))
}

/// Without the `containerd` feature there is no such backend; the error says how to get one.
#[cfg(not(feature = "containerd"))]
fn open_containerd(_: &RuntimeConfig) -> Result<Arc<dyn ContainerBackend>, RuntimeError> {
    Err(corral_actors::ActorError::invalid(
        "containers.backend",
        "containerd",
        "this corral was built without the `containerd` feature; rebuild it with default \
         features (or `--features containerd`)",
    )
    .into())
}

struct SetupParts {
    metrics_listener: Option<std::net::TcpListener>,
    pressure: Option<Box<dyn PressureSource>>,
    map_backend: Option<Box<dyn MapBackend>>,
    container_backend: Arc<dyn ContainerBackend>,
    scheduler_driver: Option<Box<dyn SchedulerDriver>>,
    journal: bool,
    failpoints: Arc<Failpoints>,
    loader_timing: LoaderTiming,
}

/// Runs on the actix thread: opens the map backend, starts every actor under a supervisor,
/// publishes the groups, starts the scheduler and registers the configured functions.
async fn setup(
    validated: ValidatedConfig,
    plan: EnforcementPlan,
    support: SchedExtSupport,
    parts: SetupParts,
) -> Result<Arc<Shared>, RuntimeError> {
    let config = &validated.raw;
    let groups = validated.groups.clone();
    let telemetry = Arc::new(if parts.journal {
        Telemetry::with_journal()
    } else {
        Telemetry::new()
    });
    let failpoints = parts.failpoints;

    let mut driver = parts.scheduler_driver;
    let mut sched_ext_unavailable = Vec::new();
    let map_backend: Box<dyn MapBackend> = match (&plan, parts.map_backend) {
        (EnforcementPlan::Injected, Some(b)) => b,
        (EnforcementPlan::Memory, _) | (EnforcementPlan::Injected, None) => {
            Box::new(MemoryBackend::new(MemoryMaps::new()))
        }
        (EnforcementPlan::Cpuset { fallback }, _) => {
            if let Some(reasons) = fallback {
                tracing::warn!(
                    reasons = %reasons.join("; "),
                    "sched_ext is unavailable, so groups are enforced with cpuset instead"
                );
                sched_ext_unavailable = reasons.clone();
            }
            // Marked with the containers' parent, so that runtimes sharing the prefix (each
            // with its own parent) never read back or remove each other's cpusets.
            let owner = config
                .containers
                .resolved_cgroup_parent()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "corral".into());
            Box::new(
                CpusetBackend::new(
                    &config.enforcement.cpuset_v1_root,
                    &config.enforcement.cpuset_prefix,
                )
                .owned_by(&owner),
            )
        }
        (EnforcementPlan::Bpf, _) => {
            let (backend, default_driver) = crate::bpf_enforcement::open(&config.enforcement)?;
            if driver.is_none() {
                driver = default_driver;
            }
            backend
        }
    };
    if !support.available() && sched_ext_unavailable.is_empty() {
        sched_ext_unavailable = support.reasons();
    }
    let enforcement_backend = map_backend.name();

    let (writer, committed) = {
        let writer = MapWriter::new(
            map_backend,
            groups.clone(),
            Arc::clone(&telemetry),
            Arc::clone(&failpoints),
        );
        let committed = writer.committed();
        (Supervisor::start(move |_| writer), committed)
    };
    writer
        .send(PublishGroups {
            groups: groups.clone(),
            host: validated.host.clone(),
        })
        .await
        .map_err(ActorError::mailbox("map writer", "PublishGroups"))??;

    // Entries of containers an earlier run left behind (removed by the backend as it opened)
    // would otherwise stay in shared maps for good.
    for cgroup in parts.container_backend.reclaimed() {
        let id = cgroup.id;
        match writer.send(RemoveEnforcement { cgroup }).await {
            Ok(Ok(true)) => tracing::info!(
                cgroup = id.0,
                "removed the enforcement entry of a container an earlier run left behind"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(cgroup = id.0, error = %e, "cannot remove a leftover container's enforcement entry")
            }
            Err(e) => {
                tracing::warn!(cgroup = id.0, error = %e, "the map writer did not take RemoveEnforcement")
            }
        }
    }

    let pressure = parts
        .pressure
        .unwrap_or_else(|| open_source(config.monitor.source));
    let tracker_actor = ResourceTracker::new(
        groups.clone(),
        config.placement.clone(),
        config.limiter.clone(),
        config.monitor.clone(),
        pressure,
        Arc::clone(&telemetry),
        Arc::clone(&failpoints),
    )?;
    let limiter = tracker_actor.limiter();
    let placement = tracker_actor.placement();
    let tracker = Supervisor::start(move |_| tracker_actor);

    let functions = Arc::new(FunctionRegistry::default());
    let manager = ContainerManager::new(
        Arc::clone(&parts.container_backend),
        Arc::clone(&functions),
        groups.clone(),
        config.containers.pool(),
        writer.clone(),
        committed,
        Arc::clone(&telemetry),
        Arc::clone(&failpoints),
    )?;
    let lane = config.containers.warm_lane.then(|| manager.lane());
    let containers = Supervisor::start(move |_| manager);

    // The scheduler is loaded by the `bpf` plan's driver, or by a driver the caller injected.
    let load_scheduler = config.enforcement.load_scheduler && driver.is_some();
    if load_scheduler && config.enforcement.when_detached == DetachedPolicy::Cpuset {
        check_cpuset_fallback(config, parts.container_backend.name())?;
    }
    let loader_actor = BpfLoader::new(
        support,
        if load_scheduler { driver } else { None },
        parts.loader_timing,
        Arc::clone(&telemetry),
        Arc::clone(&failpoints),
    );
    let scheduler = loader_actor.status_handle();
    let loader = Supervisor::start(move |_| loader_actor);
    if load_scheduler {
        // A failed attach is retried with backoff and shows in the status; the maps work anyway.
        loader
            .send(StartScheduler)
            .await
            .map_err(ActorError::mailbox("BPF loader", "StartScheduler"))??;
    }

    for spec in &config.functions {
        containers
            .send(RegisterFunction { spec: spec.clone() })
            .await
            .map_err(ActorError::mailbox("container manager", "RegisterFunction"))??;
    }

    let metrics_addr = parts
        .metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok());
    let group_metrics = matches!(plan, EnforcementPlan::Bpf).then(|| GroupCollector {
        pin_dir: config.enforcement.pin_dir.clone(),
        names: groups.iter().map(|g| g.name.clone()).collect(),
    });
    let shared = Arc::new_cyclic(|weak| Shared {
        metrics: metrics_addr.map(|_| Arc::new(Metrics::new(weak.clone(), group_metrics))),
        metrics_addr,
        tracker,
        containers,
        writer,
        loader,
        backend: parts.container_backend,
        functions,
        limiter,
        placement,
        groups,
        telemetry,
        scheduler,
        enforcement_backend,
        sched_ext_unavailable,
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        actix_thread: std::thread::current().id(),
        when_detached: load_scheduler.then_some(config.enforcement.when_detached),
        unenforced: AtomicU64::new(0),
        lane,
        lane_invocations: AtomicU64::new(0),
        cpuset_fallback: AtomicU64::new(0),
        cpuset_pinned: Mutex::new(std::collections::HashSet::new()),
    });
    if let (Some(listener), Some(metrics)) = (parts.metrics_listener, &shared.metrics) {
        let metrics = Arc::clone(metrics);
        Arbiter::current().spawn(crate::metrics::serve(
            listener,
            Arc::new(move || metrics.encode()),
        ));
    }
    Ok(shared)
}

/// Convenience for tests and examples: one group per entry of `cpus`, named `g0`, `g1`, ...
pub fn groups_from_cpu_lists(cpus: &[&str]) -> Vec<GroupConfig> {
    cpus.iter()
        .enumerate()
        .map(|(i, c)| GroupConfig {
            name: format!("g{i}"),
            cpus: (*c).to_string(),
            slice_us: 5_000,
            order: Default::default(),
            borrow: false,
            exclusive: false,
        })
        .collect()
}
