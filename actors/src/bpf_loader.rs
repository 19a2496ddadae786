//! The BpfLoader actor: detects whether sched_ext can run here and says why not; loads and
//! attaches the scheduler through a [`SchedulerDriver`], watches its exit info, restarts it with
//! exponential backoff after an exit, and reports status.
//!
//! - **State**: the support probe, the driver (the real one wraps the scheduler crate's
//!   `Scheduler`; tests inject their own), the backoff, and the status. The kernel is the
//!   source of truth for whether the scheduler runs: on restart the actor asks the driver.
//! - **Messages**: [`StartScheduler`], [`GetSchedulerStatus`], [`StopScheduler`].
//! - **Senders**: the runtime (start at boot, stop at shutdown, status for stats), operators'
//!   tools through the runtime.
//!
//! Where sched_ext is missing the runtime keeps running with the `cpuset` map backend; the
//! probe's reasons are logged once, clearly, and kept in the status.
//!
//! Loading and verifying the scheduler takes hundreds of milliseconds (seconds under qemu
//! TCG), so the driver's `attach` runs on tokio's blocking pool, never on the actix thread that
//! every actor shares: invocations keep flowing while the scheduler loads, at start and when it
//! is reattached after an exit. The driver travels to the blocking pool and comes back with
//! the `Attached` message, sent to the loader's address (which outlives a restart of the
//! actor), so a panic elsewhere in the loader meanwhile loses neither.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, SpawnHandle, Supervised};

use crate::error::{ActorError, BoxError};
use crate::messages::{GetSchedulerStatus, StartScheduler, StopScheduler};
use crate::supervision::{guard, guard_with_ctx, points, Failpoints};
use crate::telemetry::{ActorKind, Telemetry};

const NAME: &str = "BPF loader";

/// What the host offers sched_ext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedExtSupport {
    /// `/sys/kernel/sched_ext` exists (`CONFIG_SCHED_CLASS_EXT`).
    pub kernel: bool,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// The process is root (CAP_BPF and CAP_SYS_ADMIN in practice).
    pub privileged: bool,
}

impl SchedExtSupport {
    /// Probes this host.
    pub fn probe() -> Self {
        SchedExtSupport::probe_at(Path::new("/sys/kernel"))
    }

    /// Probes with `sys_kernel` standing in for `/sys/kernel` (tests).
    pub fn probe_at(sys_kernel: &Path) -> Self {
        SchedExtSupport {
            kernel: sys_kernel.join("sched_ext").exists(),
            btf: sys_kernel.join("btf/vmlinux").exists(),
            // SAFETY: geteuid has no preconditions.
            privileged: unsafe { libc::geteuid() } == 0,
        }
    }

    /// Whether sched_ext can run.
    pub fn available(&self) -> bool {
        self.kernel && self.btf && self.privileged
    }

    /// Every reason it cannot, in words an operator can act on.
    pub fn reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if !self.kernel {
            r.push(
                "the kernel lacks CONFIG_SCHED_CLASS_EXT (/sys/kernel/sched_ext is missing)"
                    .to_string(),
            );
        }
        if !self.btf {
            r.push("the kernel has no BTF (/sys/kernel/btf/vmlinux is missing; build with CONFIG_DEBUG_INFO_BTF)".to_string());
        }
        if !self.privileged {
            r.push(
                "the process is not root (loading a scheduler needs CAP_BPF and CAP_SYS_ADMIN)"
                    .to_string(),
            );
        }
        r
    }
}

/// Why the scheduler exited, from its exit info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerExit {
    /// The exit kind (`ErrorStall`, `Unregistered`, ...).
    pub kind: String,
    /// The reason text.
    pub reason: String,
}

impl fmt::Display for SchedulerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

/// Loads, attaches, watches and detaches one scheduler.
pub trait SchedulerDriver: Send + fmt::Debug + 'static {
    /// Opens, configures, loads and attaches the scheduler.
    fn attach(&mut self) -> Result<(), BoxError>;
    /// `Some` once the attached scheduler has exited.
    fn poll_exit(&mut self) -> Option<SchedulerExit>;
    /// Whether a scheduler is attached and running now.
    fn is_attached(&self) -> bool;
    /// Detaches it.
    fn detach(&mut self) -> Result<(), BoxError>;
}

/// The scheduler's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerState {
    /// sched_ext cannot run here; enforcement uses the `cpuset` fallback.
    Unsupported {
        /// Why.
        reasons: Vec<String>,
    },
    /// No scheduler driver configured (a map backend other than `bpf`).
    NotConfigured,
    /// Being loaded and attached (on the blocking pool).
    Attaching,
    /// Attached and running.
    Running,
    /// Exited; reattaching after the backoff.
    BackingOff {
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// Detached at shutdown.
    Stopped,
}

/// What [`GetSchedulerStatus`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerStatus {
    /// The state.
    pub state: SchedulerState,
    /// Successful attaches so far.
    pub attaches: u32,
    /// Exits observed so far.
    pub exits: u32,
    /// The last exit.
    pub last_exit: Option<SchedulerExit>,
    /// The last attach error.
    pub last_error: Option<String>,
}

/// Backoff and watch periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderTiming {
    /// How often exit info is polled.
    pub watch_period: Duration,
    /// First restart delay.
    pub initial_backoff: Duration,
    /// Largest restart delay.
    pub max_backoff: Duration,
    /// Running this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for LoaderTiming {
    fn default() -> Self {
        LoaderTiming {
            watch_period: Duration::from_millis(200),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// The restart backoff: `initial_backoff`, doubling up to `max_backoff` with every exit or
/// failed attach, back to `initial_backoff` once the scheduler has run `stable_after`. The
/// runtime's loader and `corral sched` share it.
#[derive(Debug, Clone)]
pub struct Backoff {
    timing: LoaderTiming,
    next: Duration,
    running_since: Option<Instant>,
}

impl Backoff {
    /// A backoff at its initial delay.
    pub fn new(timing: LoaderTiming) -> Self {
        Backoff {
            next: timing.initial_backoff,
            timing,
            running_since: None,
        }
    }

    /// The scheduler attached at `now`.
    pub fn attached(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// The scheduler exited at `now`, or an attach failed (it was not running): the delay
    /// before the next attempt.
    pub fn delay_after_exit(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.running_since.take() {
            if now.saturating_duration_since(since) >= self.timing.stable_after {
                self.reset();
            }
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.timing.max_backoff);
        delay
    }

    /// Back to the initial delay (a stable run, or an operator's explicit start).
    pub fn reset(&mut self) {
        self.next = self.timing.initial_backoff;
    }
}

/// Owns the scheduler's lifecycle.
#[derive(Debug)]
pub struct BpfLoader {
    support: SchedExtSupport,
    driver: Option<Box<dyn SchedulerDriver>>,
    timing: LoaderTiming,
    backoff: Backoff,
    status: Arc<Mutex<SchedulerStatus>>,
    watch: Option<SpawnHandle>,
    telemetry: Arc<Telemetry>,
    failpoints: Arc<Failpoints>,
    /// `StartScheduler` callers waiting for the attach in progress.
    waiters: Vec<tokio::sync::oneshot::Sender<SchedulerStatus>>,
    /// A `StopScheduler` came while attaching: detach as soon as the driver is back.
    stop_after_attach: bool,
}

/// The driver back from an attach on the blocking pool, with its outcome.
struct Attached {
    driver: Option<Box<dyn SchedulerDriver>>,
    result: Result<(), BoxError>,
}

impl actix::Message for Attached {
    type Result = ();
}

impl BpfLoader {
    /// A loader for `driver` (None: no scheduler configured) on a host offering `support`.
    pub fn new(
        support: SchedExtSupport,
        driver: Option<Box<dyn SchedulerDriver>>,
        timing: LoaderTiming,
        telemetry: Arc<Telemetry>,
        failpoints: Arc<Failpoints>,
    ) -> Self {
        let state = if !support.available() {
            SchedulerState::Unsupported {
                reasons: support.reasons(),
            }
        } else if driver.is_none() {
            SchedulerState::NotConfigured
        } else {
            SchedulerState::Stopped
        };
        BpfLoader {
            support,
            driver,
            backoff: Backoff::new(timing),
            timing,
            status: Arc::new(Mutex::new(SchedulerStatus {
                state,
                attaches: 0,
                exits: 0,
                last_exit: None,
                last_error: None,
            })),
            watch: None,
            telemetry,
            failpoints,
            waiters: Vec::new(),
            stop_after_attach: false,
        }
    }

    /// The status, shared (readable without a message).
    pub fn status_handle(&self) -> Arc<Mutex<SchedulerStatus>> {
        Arc::clone(&self.status)
    }
}

impl BpfLoader {
    fn status(&self) -> SchedulerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut SchedulerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Starts an attach on the blocking pool; [`Attached`] brings the driver and the outcome
    /// back.
    fn attach(&mut self, ctx: &mut Context<Self>) {
        let Some(mut driver) = self.driver.take() else {
            return;
        };
        self.update(|s| s.state = SchedulerState::Attaching);
        let me = ctx.address();
        actix::spawn(async move {
            let joined = tokio::task::spawn_blocking(move || {
                let result = driver.attach();
                (driver, result)
            })
            .await;
            let back = match joined {
                Ok((driver, result)) => Attached {
                    driver: Some(driver),
                    result,
                },
                // The driver panicked and is gone with its thread's stack.
                Err(e) => Attached {
                    driver: None,
                    result: Err(
                        format!("the scheduler driver panicked while attaching: {e}").into(),
                    ),
                },
            };
            me.do_send(back);
        });
    }

    /// What an attach came back with: running (and watched), or a retry with backoff.
    fn attached(&mut self, result: Result<(), BoxError>, ctx: &mut Context<Self>) {
        match result {
            Ok(()) => {
                self.backoff.attached(Instant::now());
                tracing::info!("sched_ext scheduler attached");
                self.update(|s| {
                    s.state = SchedulerState::Running;
                    s.attaches += 1;
                    s.last_error = None;
                });
                self.start_watch(ctx);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot attach the sched_ext scheduler");
                self.update(|s| s.last_error = Some(e.to_string()));
                self.schedule_retry(ctx);
            }
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff.delay_after_exit(Instant::now());
        self.update(|s| s.state = SchedulerState::BackingOff { delay });
        ctx.run_later(delay, |act, ctx| {
            if matches!(act.status().state, SchedulerState::BackingOff { .. }) {
                act.attach(ctx);
            }
        });
    }

    fn start_watch(&mut self, ctx: &mut Context<Self>) {
        if self.watch.is_some() {
            return;
        }
        self.watch =
            Some(ctx.run_interval(self.timing.watch_period, |act, ctx| act.check_exit(ctx)));
    }

    fn check_exit(&mut self, ctx: &mut Context<Self>) {
        if self.status().state != SchedulerState::Running {
            return;
        }
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        if let Some(exit) = driver.poll_exit() {
            tracing::error!(%exit, "the sched_ext scheduler exited; restarting it with backoff");
            let _ = driver.detach();
            self.update(|s| {
                s.exits += 1;
                s.last_exit = Some(exit);
            });
            self.schedule_retry(ctx);
        }
    }
}

impl Actor for BpfLoader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.driver.is_some() && !self.support.available() {
            tracing::warn!(
                reasons = %self.support.reasons().join("; "),
                "sched_ext is unavailable: enforcement falls back to cpuset"
            );
        }
        // The kernel knows whether our scheduler is still attached (after a restart too).
        match self.status().state {
            SchedulerState::Running => self.start_watch(ctx),
            SchedulerState::BackingOff { .. } => self.schedule_retry(ctx),
            _ => {}
        }
    }
}

impl Supervised for BpfLoader {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.telemetry.count_restart(ActorKind::BpfLoader);
        // Timers died with the old context; ask the driver whether the scheduler still runs.
        self.watch = None;
        let attached = self.driver.as_ref().is_some_and(|d| d.is_attached());
        self.update(|s| {
            if matches!(
                s.state,
                SchedulerState::Running | SchedulerState::BackingOff { .. }
            ) {
                s.state = if attached {
                    SchedulerState::Running
                } else {
                    SchedulerState::BackingOff {
                        delay: Duration::ZERO,
                    }
                };
            }
        });
    }
}

/// Attaches the scheduler if supported and configured, and answers once the attach is done
/// (running, or backing off with the error); the actix thread serves other messages meanwhile.
impl Handler<StartScheduler> for BpfLoader {
    type Result = actix::ResponseFuture<Result<SchedulerStatus, ActorError>>;

    fn handle(&mut self, _msg: StartScheduler, ctx: &mut Context<Self>) -> Self::Result {
        let started = guard_with_ctx::<Self, _, _>(NAME, "StartScheduler", ctx, |ctx| {
            let state = self.status().state;
            if state == SchedulerState::Attaching {
                return Ok(Err(self.wait_for_attach()));
            }
            if self.driver.is_some() && !self.support.available() {
                return Err(ActorError::SchedExtUnavailable {
                    reasons: self.support.reasons().join("; "),
                });
            }
            if self.driver.is_some() && state != SchedulerState::Running {
                self.backoff.reset();
                self.stop_after_attach = false;
                self.attach(ctx);
                return Ok(Err(self.wait_for_attach()));
            }
            Ok(Ok(self.status()))
        });
        match started {
            Err(e) => Box::pin(futures::future::ready(Err(e))),
            Ok(Ok(status)) => Box::pin(futures::future::ready(Ok(status))),
            Ok(Err(done)) => Box::pin(async move {
                done.await.map_err(|_| ActorError::Scheduler {
                    operation: "attach",
                    source: "the loader stopped before the attach finished".into(),
                })
            }),
        }
    }
}

impl BpfLoader {
    /// A receiver answered with the status once the attach in progress is back.
    fn wait_for_attach(&mut self) -> tokio::sync::oneshot::Receiver<SchedulerStatus> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push(tx);
        rx
    }
}

/// The driver is back from the blocking pool.
impl Handler<Attached> for BpfLoader {
    type Result = ();

    fn handle(&mut self, msg: Attached, ctx: &mut Context<Self>) -> Self::Result {
        self.driver = msg.driver;
        if std::mem::take(&mut self.stop_after_attach) {
            // Stopped while attaching: detach at once (the status already says Stopped).
            if let Some(driver) = self.driver.as_mut().filter(|d| d.is_attached()) {
                if let Err(e) = driver.detach() {
                    tracing::error!(error = %e, "cannot detach the scheduler attached during shutdown");
                }
            }
        } else if self.driver.is_none() {
            let error = msg.result.err().map(|e| e.to_string());
            tracing::error!(error = ?error, "the scheduler driver is lost; no more attaches");
            self.update(|s| {
                s.state = SchedulerState::Stopped;
                s.last_error = error;
            });
        } else {
            self.attached(msg.result, ctx);
        }
        let status = self.status();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(status.clone());
        }
    }
}

/// Reports status.
impl Handler<GetSchedulerStatus> for BpfLoader {
    type Result = Result<SchedulerStatus, ActorError>;

    fn handle(&mut self, _msg: GetSchedulerStatus, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "GetSchedulerStatus", ctx, || {
            self.failpoints.hit(points::GET_SCHEDULER_STATUS);
            Ok(self.status())
        })
    }
}

/// Detaches the scheduler for shutdown.
impl Handler<StopScheduler> for BpfLoader {
    type Result = Result<SchedulerStatus, ActorError>;

    fn handle(&mut self, _msg: StopScheduler, ctx: &mut Context<Self>) -> Self::Result {
        guard_with_ctx::<Self, _, _>(NAME, "StopScheduler", ctx, |ctx| {
            if let Some(watch) = self.watch.take() {
                ctx.cancel_future(watch);
            }
            let was = self.status().state;
            if was == SchedulerState::Attaching {
                // The driver is on the blocking pool; it is detached when it comes back.
                self.stop_after_attach = true;
                self.update(|s| s.state = SchedulerState::Stopped);
                return Ok(self.status());
            }
            if let Some(driver) = self.driver.as_mut() {
                if driver.is_attached() {
                    driver.detach().map_err(|source| ActorError::Scheduler {
                        operation: "detach",
                        source,
                    })?;
                }
            }
            if !matches!(
                was,
                SchedulerState::Unsupported { .. } | SchedulerState::NotConfigured
            ) {
                self.update(|s| s.state = SchedulerState::Stopped);
            }
            Ok(self.status())
        })
    }
}

/// Stops the actor; its supervisor restarts it (`Supervised::restarting`, then `started`).
impl Handler<crate::messages::Restart> for BpfLoader {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::Restart, ctx: &mut Context<Self>) {
        tracing::info!(actor = NAME, "restart requested");
        actix::ActorContext::stop(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restart backoff doubles from the initial delay up to the cap, and a run longer than
    /// `stable_after` resets it: what the loader and `corral sched` both rely on.
    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_stable_run() {
        let timing = LoaderTiming::default();
        let mut b = Backoff::new(timing);
        let t0 = Instant::now();
        let delays: Vec<u128> = (0..9).map(|_| b.delay_after_exit(t0).as_millis()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        b.attached(t0);
        assert_eq!(
            b.delay_after_exit(t0 + Duration::from_secs(5)).as_millis(),
            30000
        );
        b.attached(t0);
        assert_eq!(
            b.delay_after_exit(t0 + timing.stable_after).as_millis(),
            250
        );
    }
}
