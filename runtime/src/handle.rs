//! [`RuntimeHandle`]: what a worker holds. It is `Clone + Send + Sync` and works from any tokio
//! runtime (or none, for the synchronous parts): register functions, invoke them, read a
//! statistics snapshot, and shut down gracefully.
//!
//! Thread hops: `invoke` costs two (worker → actix, actix → worker); `stats` costs none (it
//! reads shared counters); `register` costs two.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use actix::{ArbiterHandle, System};
use corral_actors::bpf_loader::SchedulerStatus;
use corral_actors::config::GroupId;
use corral_actors::config::{CpuGroup, FunctionSpec};
use corral_actors::container_backend::CgroupId;
use corral_actors::messages::{
    ClearEnforcements, CloseAdmission, DrainContainers, GetSchedulerStatus, ListEnforcements,
    PoolReport, RegisterFunction, ReportPool, StopScheduler,
};
use corral_actors::telemetry::{ActorKind, JournalEvent};
use corral_actors::ActorError;
use futures::FutureExt;
use tokio::sync::{oneshot, Notify};

use crate::error::RuntimeError;
use crate::invocation::{self, InvocationResult};
use crate::runtime::Shared;
use crate::stats::{ActorRestarts, GroupSnapshot, ShutdownReport, StatsSnapshot};

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPED: u8 = 2;

/// Counts invocations in progress so shutdown can wait for them.
#[derive(Debug, Default)]
struct Drain {
    in_progress: AtomicUsize,
    idle: Notify,
}

/// One invocation in progress; dropping it (after the reply) lets shutdown proceed.
#[derive(Debug)]
struct InProgress(Arc<Drain>);

impl InProgress {
    fn enter(drain: &Arc<Drain>) -> Self {
        drain.in_progress.fetch_add(1, Ordering::AcqRel);
        InProgress(Arc::clone(drain))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.0.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    system: System,
    arbiter: ArbiterHandle,
    thread: Mutex<Option<JoinHandle<()>>>,
    exited: Mutex<Option<oneshot::Receiver<()>>>,
    state: AtomicU8,
    drain: Arc<Drain>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.state.load(Ordering::Acquire) != STOPPED {
            tracing::warn!("the last RuntimeHandle was dropped without shutdown(); stopping the actix System without cleanup");
            self.system.stop();
        }
    }
}

/// Polls a future in place and, if dropped before it completes, spawns the rest of it on
/// `runtime`, so that it runs to completion anyway. The future is boxed, so it keeps its place
/// in memory when its box moves into the spawned task.
struct RunToCompletion<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    future: Option<Pin<Box<F>>>,
    runtime: tokio::runtime::Handle,
}

impl<F: Future + Send + 'static> RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    fn new(future: F, runtime: tokio::runtime::Handle) -> Self {
        RunToCompletion {
            future: Some(Box::pin(future)),
            runtime,
        }
    }
}

impl<F: Future + Send + 'static> Future for RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let future = this
            .future
            .as_mut()
            .expect("RunToCompletion polled after it completed");
        let output = std::task::ready!(future.as_mut().poll(cx));
        this.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(rest) = self.future.take() {
            // On a runtime that is shutting down the task is dropped instead: the container
            // is then adopted back at the next reap and the permit returned with the lease.
            drop(self.runtime.spawn(rest));
        }
    }
}

/// The worker's handle on a running runtime.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    inner: Arc<Inner>,
}

impl RuntimeHandle {
    pub(crate) fn new(
        shared: Arc<Shared>,
        system: System,
        arbiter: ArbiterHandle,
        thread: JoinHandle<()>,
        exited: oneshot::Receiver<()>,
    ) -> Self {
        RuntimeHandle {
            inner: Arc::new(Inner {
                shared,
                system,
                arbiter,
                thread: Mutex::new(Some(thread)),
                exited: Mutex::new(Some(exited)),
                state: AtomicU8::new(RUNNING),
                drain: Arc::new(Drain::default()),
            }),
        }
    }

    fn check_running(&self) -> Result<(), RuntimeError> {
        match self.inner.state.load(Ordering::Acquire) {
            RUNNING => Ok(()),
            DRAINING => Err(ActorError::ShuttingDown.into()),
            _ => Err(RuntimeError::Stopped),
        }
    }

    /// Runs `fut` on the actix thread and awaits its answer (two thread hops).
    async fn on_actix<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        if !self.inner.arbiter.spawn(async move {
            let _ = tx.send(fut.await);
        }) {
            return Err(RuntimeError::Stopped);
        }
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    /// Registers a function so it can be invoked.
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
    /// let rt = tokio::runtime::Runtime::new()?;
    /// rt.block_on(runtime.register(FunctionSpec::named("resize")))?;
    /// let result = rt.block_on(runtime.invoke("resize", b"img".to_vec()))?;
    /// assert_eq!(result.function, "resize");
    /// rt.block_on(runtime.shutdown())?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register(&self, spec: FunctionSpec) -> Result<(), RuntimeError> {
        self.check_running()?;
        let containers = self.inner.shared.containers.clone();
        let answer = self
            .on_actix(async move { containers.send(RegisterFunction { spec }).await })
            .await?;
        Ok(answer.map_err(ActorError::mailbox("container manager", "RegisterFunction"))??)
    }

    /// Invokes `function` with `payload`: lease, container, enforcement, run, release. The work
    /// continues to completion on the actix thread even if the caller stops awaiting.
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
    /// let rt = tokio::runtime::Runtime::new()?;
    /// let first = rt.block_on(runtime.invoke("echo", b"hello".to_vec()))?;
    /// assert_eq!(first.output, b"hello");
    /// assert_eq!(first.start, corral::StartKind::Cold);
    /// // The container stayed warm for the next one.
    /// let second = rt.block_on(runtime.invoke("echo", b"again".to_vec()))?;
    /// assert_eq!(second.start, corral::StartKind::Warm);
    /// assert_eq!(second.container, first.container);
    /// rt.block_on(runtime.shutdown())?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invoke(
        &self,
        function: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<InvocationResult, RuntimeError> {
        // Count the invocation first, then check: a shutdown that switches to DRAINING after
        // this check finds it counted and waits for it; one that switched before is seen here.
        let in_progress = InProgress::enter(&self.inner.drain);
        self.check_running()?;
        let shared = Arc::clone(&self.inner.shared);
        let function = function.to_string();
        let payload = payload.into();
        let caller = std::thread::current().id();
        let submitted = Instant::now();
        // The warm lane runs in place, on the caller's thread, and finishes on the caller's
        // runtime if the caller stops awaiting (see `RunToCompletion`).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if let Some(leased) = invocation::warm_checkout(&shared, &function) {
                let run = async move {
                    let result = AssertUnwindSafe(invocation::run_warm(
                        shared, function, leased, payload, submitted,
                    ))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(ActorError::HandlerPanicked {
                            actor: "warm lane",
                            message: "invoke",
                            detail: corral_actors::supervision::panic_detail(panic.as_ref()),
                        }
                        .into())
                    });
                    drop(in_progress);
                    (result, std::thread::current().id(), Instant::now())
                };
                let (result, finished_on, sent) = RunToCompletion::new(run, runtime).await;
                let mut result = result?;
                let resumed = std::thread::current().id();
                result.timings.reply = sent.elapsed();
                result.timings.total = submitted.elapsed();
                result.thread_hops =
                    u32::from(caller != finished_on) + u32::from(finished_on != resumed);
                return Ok(result);
            }
        }
        let (tx, rx) = oneshot::channel();
        let spawned = self.inner.arbiter.spawn(async move {
            let result = invocation::run(shared, function, payload, submitted, caller).await;
            let _ = tx.send((result, Instant::now()));
            drop(in_progress);
        });
        if !spawned {
            return Err(RuntimeError::Stopped);
        }
        let (result, sent) = rx.await.map_err(|_| RuntimeError::Stopped)?;
        let mut result = result?;
        result.timings.reply = sent.elapsed();
        result.timings.total = submitted.elapsed();
        result.thread_hops +=
            u32::from(std::thread::current().id() != self.inner.shared.actix_thread);
        Ok(result)
    }

    /// Runs one `monitor_load` step now (pressure sampled, the limit resized within its
    /// bounds) and answers what changed; the monitor also does this every period.
    pub async fn sample_load(&self) -> Result<corral_actors::messages::LimitChange, RuntimeError> {
        self.check_running()?;
        let tracker = self.inner.shared.tracker.clone();
        let answer = self
            .on_actix(async move { tracker.send(corral_actors::messages::SampleLoad).await })
            .await?;
        Ok(answer.map_err(ActorError::mailbox("resource tracker", "SampleLoad"))??)
    }

    /// Stops one actor so that its supervisor restarts it and it rebuilds its state from the
    /// source of truth, as after a panic (the restart shows in `stats().restarts`). For
    /// operators who want a rebuild, and for scenarios that check one.
    pub async fn restart_actor(&self, actor: ActorKind) -> Result<(), RuntimeError> {
        self.check_running()?;
        let s = &self.inner.shared;
        let msg = corral_actors::messages::Restart;
        let sent = match actor {
            ActorKind::ResourceTracker => {
                let a = s.tracker.clone();
                self.on_actix(async move { a.send(msg).await }).await?
            }
            ActorKind::ContainerManager => {
                let a = s.containers.clone();
                self.on_actix(async move { a.send(msg).await }).await?
            }
            ActorKind::MapWriter => {
                let a = s.writer.clone();
                self.on_actix(async move { a.send(msg).await }).await?
            }
            ActorKind::BpfLoader => {
                let a = s.loader.clone();
                self.on_actix(async move { a.send(msg).await }).await?
            }
        };
        Ok(sent.map_err(ActorError::mailbox("an actor", "Restart"))?)
    }

    /// The metrics in the OpenMetrics text format (what `/metrics` serves), or `None` when
    /// `metrics.listen` is unset. A worker with its own HTTP server can serve this itself.
    pub fn metrics_text(&self) -> Option<String> {
        self.inner.shared.metrics.as_ref().map(|m| m.encode())
    }

    /// Where the metrics are served (`metrics.listen`, with the port the system picked for 0).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.shared.metrics_addr
    }

    /// A snapshot of the runtime's state, read without a message (no thread hop).
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.shared;
        let t = &s.telemetry;
        StatsSnapshot {
            limit: s.limiter.limit(),
            in_flight: s.limiter.in_flight(),
            max_in_flight: s.limiter.max_in_flight(),
            available_permits: s.limiter.available(),
            groups: s
                .groups
                .iter()
                .zip(s.placement.loads())
                .map(|(g, load)| GroupSnapshot {
                    id: g.id,
                    name: g.name.clone(),
                    cpus: g.cpus.clone(),
                    leases: load.get(),
                })
                .collect(),
            invocations_completed: s.completed.load(Ordering::Relaxed),
            invocations_failed: s.failed.load(Ordering::Relaxed),
            invocations_unenforced: s.unenforced.load(Ordering::Relaxed),
            invocations_warm_lane: s.lane_invocations.load(Ordering::Relaxed),
            invocations_cpuset_fallback: s.cpuset_fallback.load(Ordering::Relaxed),
            queue_timeouts: t.queue_timeouts.load(Ordering::Relaxed),
            cold_starts: t.cold_starts.load(Ordering::Relaxed),
            warm_starts: t.warm_starts.load(Ordering::Relaxed),
            containers_destroyed: t.containers_destroyed.load(Ordering::Relaxed),
            warm_containers: t.warm_containers.load(Ordering::Relaxed),
            live_containers: t.live_containers.load(Ordering::Relaxed),
            enforcements_committed: t.enforcements_committed.load(Ordering::Relaxed),
            enforcement_entries: t.enforcement_entries.load(Ordering::Relaxed),
            limit_changes: t.limit_changes.load(Ordering::Relaxed),
            restarts: ActorRestarts {
                resource_tracker: t.restarts_of(ActorKind::ResourceTracker),
                container_manager: t.restarts_of(ActorKind::ContainerManager),
                map_writer: t.restarts_of(ActorKind::MapWriter),
                bpf_loader: t.restarts_of(ActorKind::BpfLoader),
            },
            enforcement_backend: s.enforcement_backend,
            sched_ext_unavailable: s.sched_ext_unavailable.clone(),
            scheduler: s
                .scheduler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// The validated CPU groups.
    pub fn groups(&self) -> &[CpuGroup] {
        &self.inner.shared.groups
    }

    /// Registered function names.
    pub fn functions(&self) -> Vec<String> {
        self.inner.shared.functions.names()
    }

    /// The control-plane event journal (empty unless started with `RuntimeBuilder::journal`).
    pub fn journal(&self) -> Vec<JournalEvent> {
        self.inner.shared.telemetry.journal()
    }

    /// The map writer's mirror: every enforcement it holds.
    pub async fn enforcements(&self) -> Result<Vec<(CgroupId, GroupId)>, RuntimeError> {
        let writer = self.inner.shared.writer.clone();
        let answer = self
            .on_actix(async move { writer.send(ListEnforcements).await })
            .await?;
        Ok(answer.map_err(ActorError::mailbox("map writer", "ListEnforcements"))??)
    }

    /// The container manager's pools.
    pub async fn pool(&self) -> Result<PoolReport, RuntimeError> {
        let containers = self.inner.shared.containers.clone();
        let answer = self
            .on_actix(async move { containers.send(ReportPool).await })
            .await?;
        Ok(answer.map_err(ActorError::mailbox("container manager", "ReportPool"))??)
    }

    /// The scheduler's status, asked of the BPF loader.
    pub async fn scheduler_status(&self) -> Result<SchedulerStatus, RuntimeError> {
        let loader = self.inner.shared.loader.clone();
        let answer = self
            .on_actix(async move { loader.send(GetSchedulerStatus).await })
            .await?;
        Ok(answer.map_err(ActorError::mailbox("BPF loader", "GetSchedulerStatus"))??)
    }

    /// Shuts down gracefully: refuses new invocations, waits for those in progress to finish,
    /// destroys every container, removes every enforcement, detaches the scheduler, and stops
    /// the actix System. Only the first call does the work; later calls fail with `Stopped`.
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
    /// let rt = tokio::runtime::Runtime::new()?;
    /// rt.block_on(runtime.invoke("echo", vec![]))?;
    /// let report = rt.block_on(runtime.shutdown())?;
    /// assert_eq!(report.leases_held, 0);
    /// assert_eq!(report.permits_available, report.limit);
    /// assert!(rt.block_on(runtime.invoke("echo", vec![])).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self) -> Result<ShutdownReport, RuntimeError> {
        if self
            .inner
            .state
            .compare_exchange(RUNNING, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(RuntimeError::Stopped);
        }
        let drain = &self.inner.drain;
        loop {
            let idle = drain.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if drain.in_progress.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        let shared = Arc::clone(&self.inner.shared);
        let teardown = self
            .on_actix(async move {
                // Drained: every permit should be back. Read before closing the limiter.
                let available = shared.limiter.available();
                let closed = shared.tracker.send(CloseAdmission).await;
                let destroyed = shared.containers.send(DrainContainers).await;
                let removed = shared.writer.send(ClearEnforcements).await;
                let _ = shared.loader.send(StopScheduler).await;
                (available, closed, destroyed, removed)
            })
            .await;
        self.inner.state.store(STOPPED, Ordering::Release);
        self.inner.system.stop();
        let exited = self
            .inner
            .exited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(exited) = exited {
            let _ = exited.await;
        }
        if let Some(thread) = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = thread.join();
        }
        let (permits_available, closed, destroyed, removed) = teardown?;
        closed.map_err(ActorError::mailbox("resource tracker", "CloseAdmission"))??;
        let containers_destroyed =
            destroyed.map_err(ActorError::mailbox("container manager", "DrainContainers"))??;
        let enforcements_removed =
            removed.map_err(ActorError::mailbox("map writer", "ClearEnforcements"))??;
        let limiter = &self.inner.shared.limiter;
        Ok(ShutdownReport {
            containers_destroyed,
            enforcements_removed,
            permits_available,
            limit: limiter.limit(),
            leases_held: limiter.in_flight(),
        })
    }
}
