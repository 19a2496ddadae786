//! The ContainerManager actor: owns the containers of every function (a warm pool with
//! keep-alive and a maximum per function; cold starts through a [`ContainerBackend`]), and
//! enforces the lease's group on each container before handing it out.
//!
//! - **State**: the registered functions, the warm pools, and a ledger of containers out of the
//!   pool (handed out, or being destroyed), each with a weak reference to the container's
//!   checkout token. The backend's container list plus the ledger are the source of truth:
//!   `restarting()` rebuilds the pools from them, and any container whose token died without
//!   being returned (a dropped future, a panic) is adopted back into its pool.
//! - **Messages**: [`RegisterFunction`], [`AcquireContainer`], [`ReleaseContainer`],
//!   [`ReapIdle`], [`DrainContainers`], [`ReportPool`].
//! - **Senders**: the runtime (register, acquire, release, drain at shutdown, report), the
//!   manager itself (`ReapIdle` every reap period; `ReleaseContainer` when an enforcement fails).
//!   It sends `EnforceGroup` and `RemoveEnforcement` to the [`MapWriter`].
//!
//! Ordering guarantees: a container is handed out only after the map writer acknowledged its
//! enforcement; on release the container goes back to the pool (or is destroyed) before the
//! lease's permit is released, so a waiting invocation finds it warm.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler, ResponseFuture, Supervised};

use crate::config::{CpuGroup, FunctionSpec, GroupId, PoolConfig};
use crate::container_backend::{
    CheckoutToken, Container, ContainerBackend, ContainerInfo, Enforcement,
};
use crate::error::ActorError;
use crate::lease::GroupLease;
use crate::map_writer::{Committed, MapWriter};
use crate::messages::{
    AcquireContainer, DrainContainers, EnforceGroup, EnforcementParts, LeasedContainer, PoolReport,
    ReapIdle, RegisterFunction, ReleaseContainer, RemoveEnforcement, ReportPool, StartKind,
};
use crate::supervision::{guard, points, Failpoints};
use crate::telemetry::{ActorKind, JournalEvent, Telemetry};

const NAME: &str = "container manager";

/// The registered functions, shared with the runtime so it can reject unknown functions
/// before taking a lease.
#[derive(Debug, Default)]
pub struct FunctionRegistry(RwLock<HashMap<String, Arc<FunctionSpec>>>);

impl FunctionRegistry {
    /// The spec of `function`.
    pub fn get(&self, function: &str) -> Option<Arc<FunctionSpec>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
            .cloned()
    }

    /// Registered function names.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    fn insert(&self, spec: FunctionSpec) -> Result<(), ActorError> {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&spec.name) {
            return Err(ActorError::DuplicateFunction {
                function: spec.name,
            });
        }
        map.insert(spec.name.clone(), Arc::new(spec));
        Ok(())
    }
}

/// An idle container in a warm pool.
#[derive(Debug)]
struct Idle {
    info: ContainerInfo,
    /// Its last acknowledged enforcement; none when that is unknown (a container found again
    /// after a restart or adopted) or failed. Only a container with one can take the warm lane.
    enforcement: Option<Enforcement>,
    since: Instant,
}

impl Idle {
    fn new(info: ContainerInfo, enforcement: Option<Enforcement>) -> Self {
        Idle {
            info,
            enforcement,
            since: Instant::now(),
        }
    }
}

type Pools = HashMap<String, VecDeque<Idle>>;

/// A container out of the pool.
#[derive(Debug)]
struct Checkout {
    info: ContainerInfo,
    token: Weak<CheckoutToken>,
}

type Ledger = Arc<Mutex<HashMap<String, Checkout>>>;

/// The warm pools and the ledger, shared by the container manager and the invocation's **warm
/// lane**: a caller that finds an idle container whose enforcement onto its lease's group is
/// still committed (the map writer's [`Committed`] view says so) takes it, runs, and returns it
/// here, all on its own thread and with no message. Everything else (cold starts, a container
/// on another group, destroys, the reap, a rebuild after a restart) stays with the actor.
///
/// The map writer stays the only writer of enforcement state: the lane only hands out a
/// container whose enforcement is already committed, and never writes one.
///
/// Locking: `pools` before `ledger`, never the other way round. Taking a container out of a
/// pool and entering it in the ledger happen under the pools lock, and so do leaving the
/// ledger and joining a pool, so that a rebuild (which holds the same lock) never sees a
/// container in neither or in both.
#[derive(Debug)]
pub struct WarmLane {
    functions: Arc<FunctionRegistry>,
    groups: Vec<CpuGroup>,
    pool_config: PoolConfig,
    pools: Mutex<Pools>,
    ledger: Ledger,
    committed: Arc<Committed>,
    telemetry: Arc<Telemetry>,
}

/// An idle container the warm lane took out of its pool (and entered in the ledger), waiting
/// for the lease it will be handed out under.
#[derive(Debug)]
pub struct WarmCheckout {
    info: ContainerInfo,
    enforcement: Enforcement,
    spec: Arc<FunctionSpec>,
    group: CpuGroup,
    token: Arc<CheckoutToken>,
    telemetry: Arc<Telemetry>,
}

impl WarmCheckout {
    /// Hands the container out under `lease`, which must grant the checkout's group.
    pub fn hand_out(self, lease: GroupLease) -> LeasedContainer {
        debug_assert_eq!(lease.group(), self.group.id);
        self.telemetry.warm_starts.fetch_add(1, Ordering::Relaxed);
        self.telemetry.record(JournalEvent::ContainerHandedOut {
            cgroup: self.info.cgroup.id.0,
            lease: lease.id(),
        });
        LeasedContainer {
            container: Container {
                info: self.info,
                spec: self.spec,
                group: self.group,
                enforcement: self.enforcement,
                discard: false,
                token: self.token,
            },
            lease,
            start: StartKind::Warm,
            cold_start: Duration::ZERO,
            enforcement: Duration::ZERO,
            enforcement_parts: EnforcementParts::default(),
        }
    }
}

impl WarmLane {
    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn max_warm(&self, function: &str) -> usize {
        self.functions
            .get(function)
            .and_then(|s| s.max_warm)
            .unwrap_or(self.pool_config.max_warm)
    }

    fn keep_alive(&self, function: &str) -> Duration {
        Duration::from_millis(
            self.functions
                .get(function)
                .and_then(|s| s.keep_alive_ms)
                .unwrap_or(self.pool_config.keep_alive_ms),
        )
    }

    /// One container left (`-1`) or joined (`1`) a pool: the gauges without a recount, so
    /// that the invocation path costs the same with 10 functions as with 10,000. Called with
    /// no lock held.
    fn warm_moved(&self, delta: isize) {
        let warm = &self.telemetry.warm_containers;
        if delta < 0 {
            warm.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            warm.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        }
        publish_live(&self.telemetry, &self.ledger);
    }

    /// Recounts the gauges from `pools` (after a rebuild, a reap or a drain).
    fn publish_gauges(&self, pools: &Pools) {
        let warm: usize = pools.values().map(VecDeque::len).sum();
        self.telemetry
            .warm_containers
            .store(warm, Ordering::Relaxed);
        publish_live(&self.telemetry, &self.ledger);
    }

    fn enter(&self, info: &ContainerInfo, token: &Arc<CheckoutToken>) {
        lock(&self.ledger).insert(
            info.id.clone(),
            Checkout {
                info: info.clone(),
                token: Arc::downgrade(token),
            },
        );
    }

    /// Takes the most recently used idle container of `function` whose enforcement onto
    /// `group` is committed, or `None` (the caller then goes through the actor).
    pub fn checkout(&self, function: &str, group: GroupId) -> Option<WarmCheckout> {
        let cpu_group = self.groups.get(group.0 as usize)?.clone();
        let spec = self.functions.get(function)?;
        let token = Arc::new(CheckoutToken);
        let idle = {
            let mut pools = self.pools();
            let pool = pools.get_mut(function)?;
            let at = pool.iter().rposition(|i| {
                i.enforcement.as_ref().is_some_and(|e| e.group == group)
                    && self.committed.group_of(i.info.cgroup.id) == Some(group)
            })?;
            let idle = pool.remove(at)?;
            self.enter(&idle.info, &token);
            idle
        };
        self.warm_moved(-1);
        Some(WarmCheckout {
            enforcement: idle.enforcement?,
            info: idle.info,
            spec,
            group: cpu_group,
            token,
            telemetry: Arc::clone(&self.telemetry),
        })
    }

    /// Takes the most recently used idle container of `function`, whatever its group (the
    /// actor's warm start, which enforces it onto the lease's group next).
    fn checkout_any(&self, function: &str, token: &Arc<CheckoutToken>) -> Option<ContainerInfo> {
        let idle = {
            let mut pools = self.pools();
            let idle = pools.get_mut(function).and_then(VecDeque::pop_back)?;
            self.enter(&idle.info, token);
            idle
        };
        self.warm_moved(-1);
        Some(idle.info)
    }

    /// Returns `container` to its pool and then drops `lease` (returning its permit). When
    /// the pool is full or the function is gone, gives both back (`Some`) for the actor to
    /// destroy.
    pub fn checkin(
        &self,
        container: Container,
        lease: GroupLease,
    ) -> Option<(Container, GroupLease)> {
        let function = &container.info.function;
        {
            let mut pools = self.pools();
            let keep = !container.discard
                && self.functions.get(function).is_some()
                && pools.get(function).map_or(0, VecDeque::len) < self.max_warm(function);
            if !keep {
                return Some((container, lease));
            }
            lock(&self.ledger).remove(&container.info.id);
            // The writer stamps every acknowledgement; the stand-in for a failed one has none.
            let enforcement = container
                .enforcement
                .handled_at
                .is_some()
                .then(|| container.enforcement.clone());
            pools
                .entry(function.clone())
                .or_default()
                .push_back(Idle::new(container.info.clone(), enforcement));
        }
        self.warm_moved(1);
        self.telemetry.record(JournalEvent::ContainerReturned {
            cgroup: container.info.cgroup.id.0,
            lease: lease.id(),
        });
        drop(container);
        drop(lease);
        None
    }
}

/// Owns the containers.
#[derive(Debug)]
pub struct ContainerManager {
    backend: Arc<dyn ContainerBackend>,
    lane: Arc<WarmLane>,
    map_writer: Addr<MapWriter>,
    ledger: Ledger,
    telemetry: Arc<Telemetry>,
    failpoints: Arc<Failpoints>,
}

impl ContainerManager {
    /// A manager creating containers through `backend` and enforcing through `map_writer`;
    /// `committed` is the map writer's committed view (for the warm lane).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: Arc<dyn ContainerBackend>,
        functions: Arc<FunctionRegistry>,
        groups: Vec<CpuGroup>,
        pool_config: PoolConfig,
        map_writer: Addr<MapWriter>,
        committed: Arc<Committed>,
        telemetry: Arc<Telemetry>,
        failpoints: Arc<Failpoints>,
    ) -> Result<Self, ActorError> {
        pool_config.validate()?;
        let ledger: Ledger = Arc::new(Mutex::new(HashMap::new()));
        Ok(ContainerManager {
            backend,
            lane: Arc::new(WarmLane {
                functions,
                groups,
                pool_config,
                pools: Mutex::new(HashMap::new()),
                ledger: Arc::clone(&ledger),
                committed,
                telemetry: Arc::clone(&telemetry),
            }),
            map_writer,
            ledger,
            telemetry,
            failpoints,
        })
    }

    /// The warm lane, shared with the runtime's invocation path.
    pub fn lane(&self) -> Arc<WarmLane> {
        Arc::clone(&self.lane)
    }
}

fn lock(ledger: &Ledger) -> std::sync::MutexGuard<'_, HashMap<String, Checkout>> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes the live-container gauge: the idle ones (published by the actor) plus those out of
/// the pool (the shared ledger). Computed, never incremented, so it cannot drift.
fn publish_live(telemetry: &Telemetry, ledger: &Ledger) {
    let out = lock(ledger).len();
    telemetry.live_containers.store(
        telemetry.warm_containers.load(Ordering::Relaxed) + out,
        Ordering::Relaxed,
    );
}

impl ContainerManager {
    /// Rebuilds the pools from the backend's containers and the ledger: a container in the
    /// ledger whose token is alive is out of the pool; every other container is idle.
    fn rebuild(&mut self) -> Result<(), ActorError> {
        let containers = self.backend.list()?;
        let mut pools = self.lane.pools();
        let mut ledger = lock(&self.ledger);
        ledger.retain(|_, c| c.token.strong_count() > 0);
        pools.clear();
        for info in containers {
            if ledger.contains_key(&info.id) {
                continue;
            }
            pools
                .entry(info.function.clone())
                .or_default()
                .push_back(Idle::new(info, None));
        }
        drop(ledger);
        self.lane.publish_gauges(&pools);
        Ok(())
    }

    /// Moves containers whose token died without a release back into their pools.
    fn adopt_orphans(&mut self) {
        let mut pools = self.lane.pools();
        let orphans: Vec<ContainerInfo> = {
            let mut ledger = lock(&self.ledger);
            let dead: Vec<String> = ledger
                .iter()
                .filter(|(_, c)| c.token.strong_count() == 0)
                .map(|(id, _)| id.clone())
                .collect();
            dead.into_iter()
                .filter_map(|id| ledger.remove(&id))
                .map(|c| c.info)
                .collect()
        };
        for info in orphans {
            tracing::warn!(
                container = info.id,
                "adopting a container that was never returned"
            );
            pools
                .entry(info.function.clone())
                .or_default()
                .push_back(Idle::new(info, None));
        }
    }

    /// Destroys `victims` (enforcement first, then the container), keeping each in the ledger
    /// under a live token until it is gone so that a restart does not adopt it meanwhile.
    fn destroy_all(
        &mut self,
        victims: Vec<ContainerInfo>,
    ) -> ResponseFuture<Result<usize, ActorError>> {
        let token = Arc::new(CheckoutToken);
        {
            let mut ledger = lock(&self.ledger);
            for info in &victims {
                ledger.insert(
                    info.id.clone(),
                    Checkout {
                        info: info.clone(),
                        token: Arc::downgrade(&token),
                    },
                );
            }
        }
        let (backend, ledger, writer, telemetry, failpoints) = (
            Arc::clone(&self.backend),
            Arc::clone(&self.ledger),
            self.map_writer.clone(),
            Arc::clone(&self.telemetry),
            Arc::clone(&self.failpoints),
        );
        Box::pin(async move {
            let _alive = token;
            let mut destroyed = 0;
            let mut first_error = None;
            for info in victims {
                let result = destroy_one(&backend, &writer, &info, &failpoints).await;
                lock(&ledger).remove(&info.id);
                publish_live(&telemetry, &ledger);
                match result {
                    Ok(()) => {
                        destroyed += 1;
                        telemetry
                            .containers_destroyed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::error!(container = info.id, error = %e, "cannot destroy container");
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(destroyed),
            }
        })
    }
}

/// Removes a container's enforcement, then destroys it. The destroy runs on tokio's blocking
/// pool, not on the actix thread that every actor shares: removing a cgroup waits (up to 1 s)
/// for its killed processes to leave, and a container runtime's teardown is a blocking call.
async fn destroy_one(
    backend: &Arc<dyn ContainerBackend>,
    writer: &Addr<MapWriter>,
    info: &ContainerInfo,
    failpoints: &Failpoints,
) -> Result<(), ActorError> {
    writer
        .send(RemoveEnforcement {
            cgroup: info.cgroup.clone(),
        })
        .await
        .map_err(ActorError::mailbox("map writer", "RemoveEnforcement"))??;
    failpoints.hit(points::DESTROY_ASYNC);
    let (backend, info) = (Arc::clone(backend), info.clone());
    on_blocking_pool("a container's destroy (blocking pool)", move || {
        backend.destroy(&info)
    })
    .await
}

/// Runs blocking backend work (file-system calls, a container runtime's) on tokio's blocking
/// pool rather than the actix thread every actor shares; a panic there answers
/// `HandlerPanicked` naming `what`.
async fn on_blocking_pool<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, ActorError> + Send + 'static,
) -> Result<T, ActorError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(ActorError::HandlerPanicked {
            actor: NAME,
            message: what,
            detail: e.to_string(),
        })
    })
}

impl Actor for ContainerManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Err(e) = self.rebuild() {
            tracing::error!(error = %e, "cannot list the backend's containers");
        }
        ctx.run_interval(
            Duration::from_millis(self.lane.pool_config.reap_period_ms),
            |_, ctx| {
                ctx.notify(ReapIdle);
            },
        );
    }
}

impl Supervised for ContainerManager {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.telemetry.count_restart(ActorKind::ContainerManager);
        // `started()` runs next and rebuilds the pools from the backend and the ledger.
        self.lane.pools().clear();
    }
}

/// Registers a function after checking it against the backend.
impl Handler<RegisterFunction> for ContainerManager {
    type Result = Result<(), ActorError>;

    fn handle(&mut self, msg: RegisterFunction, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "RegisterFunction", ctx, || {
            msg.spec.validate()?;
            self.backend.check_function(&msg.spec)?;
            self.lane.functions.insert(msg.spec)
        })
    }
}

/// Hands out a warm or cold container, enforced onto the lease's group.
impl Handler<AcquireContainer> for ContainerManager {
    type Result = ResponseFuture<Result<LeasedContainer, ActorError>>;

    fn handle(&mut self, msg: AcquireContainer, ctx: &mut Context<Self>) -> Self::Result {
        let me = ctx.address();
        let lease = msg.lease;
        let function = msg.function;
        let prepared =
            guard::<Self, _, _>(NAME, "AcquireContainer", ctx, || {
                self.failpoints.hit(points::ACQUIRE_CONTAINER);
                let spec = self.lane.functions.get(&function).ok_or_else(|| {
                    ActorError::UnknownFunction {
                        function: function.clone(),
                    }
                })?;
                let group = self
                    .lane
                    .groups
                    .get(lease.group().0 as usize)
                    .cloned()
                    .ok_or_else(|| {
                        ActorError::invalid("lease.group", lease.group(), "no such group")
                    })?;
                // Most recently used first, so the oldest idle containers age out.
                let token = Arc::new(CheckoutToken);
                let warm = self.lane.checkout_any(&function, &token);
                Ok((spec, group, warm, token))
            });
        let (backend, ledger, writer, telemetry, failpoints) = (
            Arc::clone(&self.backend),
            Arc::clone(&self.ledger),
            self.map_writer.clone(),
            Arc::clone(&self.telemetry),
            Arc::clone(&self.failpoints),
        );
        Box::pin(async move {
            let (spec, group, warm, token) = prepared?;
            let (info, start, cold_start) = match warm {
                Some(info) => {
                    telemetry.warm_starts.fetch_add(1, Ordering::Relaxed);
                    (info, StartKind::Warm, Duration::ZERO)
                }
                None => {
                    let t = Instant::now();
                    let info = backend.create(&spec).await?;
                    lock(&ledger).insert(
                        info.id.clone(),
                        Checkout {
                            info: info.clone(),
                            token: Arc::downgrade(&token),
                        },
                    );
                    telemetry.cold_starts.fetch_add(1, Ordering::Relaxed);
                    publish_live(&telemetry, &ledger);
                    failpoints.hit(points::ACQUIRE_CONTAINER_ASYNC);
                    (info, StartKind::Cold, t.elapsed())
                }
            };
            let t = Instant::now();
            let acked = writer
                .send(EnforceGroup {
                    cgroup: info.cgroup.clone(),
                    group: group.id,
                })
                .await
                .map_err(ActorError::mailbox("map writer", "EnforceGroup"))
                .and_then(|r| r);
            let enforcement_time = t.elapsed();
            match acked {
                Ok(enforcement) => {
                    let enforcement_parts =
                        EnforcementParts::split(t, enforcement_time, &enforcement);
                    let mut container = Container {
                        info,
                        spec,
                        group,
                        enforcement,
                        discard: false,
                        token,
                    };
                    let mut cold_start = cold_start;
                    if start == StartKind::Cold {
                        // Only now, enforced: the function's own start-up runs on its group.
                        let t = Instant::now();
                        if let Err(e) = backend.start(&container).await {
                            container.discard = true;
                            // Destroyed (and its enforcement removed) before the caller hears.
                            let released = me.send(ReleaseContainer { container, lease }).await;
                            if let Ok(Err(undo)) = released {
                                tracing::warn!(error = %undo, "cannot destroy a container that failed to start");
                            }
                            return Err(e);
                        }
                        cold_start += t.elapsed();
                    }
                    telemetry.record(JournalEvent::ContainerHandedOut {
                        cgroup: container.info.cgroup.id.0,
                        lease: lease.id(),
                    });
                    Ok(LeasedContainer {
                        container,
                        lease,
                        start,
                        cold_start,
                        enforcement: enforcement_time,
                        enforcement_parts,
                    })
                }
                Err(e) => {
                    // Never hand out an unenforced container. Return it through the normal
                    // path (container first, then the permit); it is re-enforced on its next
                    // acquisition, so the unused acknowledgement below is never acted on.
                    let unenforced = Enforcement {
                        cgroup: info.cgroup.id,
                        group: group.id,
                        cpus: Vec::new(),
                        sched_ext: false,
                        join: Vec::new(),
                        commit_time: Duration::ZERO,
                        sweep_time: Duration::ZERO,
                        handled_at: None,
                    };
                    me.do_send(ReleaseContainer {
                        container: Container {
                            info,
                            spec,
                            group,
                            enforcement: unenforced,
                            discard: false,
                            token,
                        },
                        lease,
                    });
                    Err(e)
                }
            }
        })
    }
}

/// Returns a container to its pool (or destroys it when the pool is full), then releases the
/// lease's permit.
impl Handler<ReleaseContainer> for ContainerManager {
    type Result = ResponseFuture<Result<(), ActorError>>;

    fn handle(&mut self, msg: ReleaseContainer, ctx: &mut Context<Self>) -> Self::Result {
        let outcome = guard::<Self, _, _>(NAME, "ReleaseContainer", ctx, || {
            self.failpoints.hit(points::RELEASE_CONTAINER);
            let ReleaseContainer { container, lease } = msg;
            Ok(self.lane.checkin(container, lease))
        });
        match outcome {
            Err(e) => Box::pin(futures::future::ready(Err(e))),
            Ok(None) => Box::pin(futures::future::ready(Ok(()))),
            Ok(Some((container, lease))) => {
                let info = container.info.clone();
                let telemetry = Arc::clone(&self.telemetry);
                let destroy = self.destroy_all(vec![info.clone()]);
                Box::pin(async move {
                    let result = destroy.await.map(|_| ());
                    telemetry.record(JournalEvent::ContainerReturned {
                        cgroup: info.cgroup.id.0,
                        lease: lease.id(),
                    });
                    drop(container);
                    drop(lease);
                    result
                })
            }
        }
    }
}

/// Destroys idle containers past their keep-alive and adopts lost ones.
impl Handler<ReapIdle> for ContainerManager {
    type Result = ResponseFuture<Result<usize, ActorError>>;

    fn handle(&mut self, _msg: ReapIdle, ctx: &mut Context<Self>) -> Self::Result {
        let victims = guard::<Self, _, _>(NAME, "ReapIdle", ctx, || {
            self.adopt_orphans();
            let now = Instant::now();
            let mut victims = Vec::new();
            let mut pools = self.lane.pools();
            for (function, pool) in pools.iter_mut() {
                let keep_alive = self.lane.keep_alive(function);
                while pool
                    .front()
                    .is_some_and(|i| now.duration_since(i.since) >= keep_alive)
                {
                    victims.extend(pool.pop_front().map(|i| i.info));
                }
            }
            self.lane.publish_gauges(&pools);
            Ok(victims)
        });
        match victims {
            Err(e) => Box::pin(futures::future::ready(Err(e))),
            Ok(v) if v.is_empty() => Box::pin(futures::future::ready(Ok(0))),
            Ok(v) => self.destroy_all(v),
        }
    }
}

/// Destroys every container not in use, then closes the backend if none is in use.
impl Handler<DrainContainers> for ContainerManager {
    type Result = ResponseFuture<Result<usize, ActorError>>;

    fn handle(&mut self, _msg: DrainContainers, ctx: &mut Context<Self>) -> Self::Result {
        let victims = guard::<Self, _, _>(NAME, "DrainContainers", ctx, || {
            self.adopt_orphans();
            let mut pools = self.lane.pools();
            pools.clear();
            let busy: Vec<String> = lock(&self.ledger).keys().cloned().collect();
            let victims: Vec<ContainerInfo> = self
                .backend
                .list()?
                .into_iter()
                .filter(|i| !busy.contains(&i.id))
                .collect();
            self.lane.publish_gauges(&pools);
            Ok((victims, busy.is_empty()))
        });
        match victims {
            Err(e) => Box::pin(futures::future::ready(Err(e))),
            Ok((victims, close)) => {
                let destroy = self.destroy_all(victims);
                let backend = Arc::clone(&self.backend);
                Box::pin(async move {
                    let n = destroy.await?;
                    if close {
                        // Blocking file-system work too: off the actix thread.
                        on_blocking_pool(
                            "the container backend's close (blocking pool)",
                            move || backend.close(),
                        )
                        .await?;
                    }
                    Ok(n)
                })
            }
        }
    }
}

/// Reports the pools.
impl Handler<ReportPool> for ContainerManager {
    type Result = Result<PoolReport, ActorError>;

    fn handle(&mut self, _msg: ReportPool, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "ReportPool", ctx, || {
            Ok(PoolReport {
                warm: self
                    .lane
                    .pools()
                    .iter()
                    .filter(|(_, p)| !p.is_empty())
                    .map(|(f, p)| (f.clone(), p.len()))
                    .collect(),
                in_use: lock(&self.ledger)
                    .values()
                    .filter(|c| c.token.strong_count() > 0)
                    .count(),
            })
        })
    }
}

/// Stops the actor; its supervisor restarts it (`Supervised::restarting`, then `started`).
impl Handler<crate::messages::Restart> for ContainerManager {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::Restart, ctx: &mut Context<Self>) {
        tracing::info!(actor = NAME, "restart requested");
        actix::ActorContext::stop(ctx);
    }
}
