//! The ResourceTracker actor: hands out leases (a CPU group plus a permit of the inflight
//! limiter) by placement policy, and runs `monitor_load`.
//!
//! - **State**: the validated groups and placement policy, the limiter, the per-group load
//!   counters, the pressure source. The limiter and loads are shared with the leases, which are
//!   their source of truth (a lease returns its permit and load when dropped), so a restart
//!   loses nothing; `restarting()` rebuilds the policy (including the hash ring) from the
//!   configuration.
//! - **Messages**: [`AcquireLease`], [`SampleLoad`], [`CloseAdmission`].
//! - **Senders**: the runtime's invocation path (`AcquireLease`), the tracker itself every
//!   monitor period and tests (`SampleLoad`), the runtime at shutdown (`CloseAdmission`).
//!
//! Waiting for a permit happens in a future spawned on the System's arbiter, not in the actor,
//! so queued requests neither block the mailbox nor die with a restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture, Supervised};

use crate::config::{CpuGroup, LimiterConfig, MonitorConfig, PlacementConfig};
use crate::error::ActorError;
use crate::lease::{AdmitError, GroupLease, Limiter};
use crate::messages::{AcquireLease, CloseAdmission, LimitChange, SampleLoad};
use crate::placement::Placement;
use crate::pressure::PressureSource;
use crate::supervision::{guard, panic_detail, points, Failpoints};
use crate::telemetry::{ActorKind, Telemetry};

const NAME: &str = "resource tracker";

/// Owns the groups and the inflight limiter.
#[derive(Debug)]
pub struct ResourceTracker {
    groups: Vec<CpuGroup>,
    placement_config: PlacementConfig,
    limiter_config: LimiterConfig,
    monitor: MonitorConfig,
    placement: Arc<Placement>,
    limiter: Arc<Limiter>,
    pressure: Box<dyn PressureSource>,
    telemetry: Arc<Telemetry>,
    failpoints: Arc<Failpoints>,
}

impl ResourceTracker {
    /// Builds the tracker from validated groups and checked configuration.
    pub fn new(
        groups: Vec<CpuGroup>,
        placement: PlacementConfig,
        limiter: LimiterConfig,
        monitor: MonitorConfig,
        pressure: Box<dyn PressureSource>,
        telemetry: Arc<Telemetry>,
        failpoints: Arc<Failpoints>,
    ) -> Result<Self, ActorError> {
        limiter.validate()?;
        monitor.validate()?;
        let loads = Placement::fresh_loads(groups.len());
        let built = Placement::new(groups.clone(), &placement, loads)?;
        Ok(ResourceTracker {
            groups,
            placement_config: placement,
            limiter: Arc::new(Limiter::new(limiter.initial)),
            limiter_config: limiter,
            monitor,
            placement: Arc::new(built),
            pressure,
            telemetry,
            failpoints,
        })
    }

    /// The limiter, shared (for statistics and tests).
    pub fn limiter(&self) -> Arc<Limiter> {
        Arc::clone(&self.limiter)
    }

    /// The placement (groups, loads, policy), shared.
    pub fn placement(&self) -> Arc<Placement> {
        Arc::clone(&self.placement)
    }
}

impl Actor for ResourceTracker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.monitor.enabled {
            ctx.run_interval(self.monitor.period(), |_, ctx| {
                ctx.notify(SampleLoad);
            });
        }
    }
}

impl Supervised for ResourceTracker {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.telemetry.count_restart(ActorKind::ResourceTracker);
        // The loads are the leases' own counters: keep them, rebuild everything derived.
        let loads = self.placement.loads().to_vec();
        match Placement::new(self.groups.clone(), &self.placement_config, loads) {
            Ok(p) => self.placement = Arc::new(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild the placement policy; keeping the old one")
            }
        }
    }
}

/// Grants a lease: waits for a permit (bounded by the queue timeout), then picks the group.
impl Handler<AcquireLease> for ResourceTracker {
    type Result = ResponseFuture<Result<GroupLease, ActorError>>;

    fn handle(&mut self, msg: AcquireLease, ctx: &mut Context<Self>) -> Self::Result {
        let prepared = guard::<Self, _, _>(NAME, "AcquireLease", ctx, || {
            self.failpoints.hit(points::ACQUIRE_LEASE);
            Ok((
                Arc::clone(&self.limiter),
                Arc::clone(&self.placement),
                Arc::clone(&self.telemetry),
                self.limiter_config.queue_timeout(),
            ))
        });
        Box::pin(async move {
            let (limiter, placement, telemetry, timeout) = prepared?;
            let asked = Instant::now();
            let permit = match tokio::time::timeout(timeout, limiter.admit()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(AdmitError::Closed)) => return Err(ActorError::ShuttingDown),
                Err(_) => {
                    telemetry.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(ActorError::QueueTimeout {
                        function: msg.function,
                        waited: asked.elapsed(),
                        limit: limiter.limit(),
                    });
                }
            };
            let chosen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                placement.choose(&msg.function)
            }))
            .map_err(|p| ActorError::HandlerPanicked {
                actor: NAME,
                message: "AcquireLease",
                detail: panic_detail(p.as_ref()),
            })??;
            let load = placement.loads()[chosen.0 as usize].take();
            telemetry.leases_granted.fetch_add(1, Ordering::Relaxed);
            Ok(GroupLease::new(
                chosen,
                permit,
                load,
                asked.elapsed(),
                telemetry,
            ))
        })
    }
}

/// One `monitor_load` step: samples pressure and resizes the limiter within `[min, max]`.
impl Handler<SampleLoad> for ResourceTracker {
    type Result = Result<LimitChange, ActorError>;

    fn handle(&mut self, _msg: SampleLoad, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "SampleLoad", ctx, || {
            let pressure = self.pressure.sample()?;
            let before = self.limiter.limit();
            let after = self
                .monitor
                .next_limit(before, pressure, &self.limiter_config);
            if after != before {
                self.limiter.resize(after);
                self.telemetry.limit_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(pressure, before, after, source = %self.pressure.describe(), "inflight limit changed");
            }
            Ok(LimitChange {
                pressure,
                before,
                after,
            })
        })
    }
}

/// Closes admission for shutdown.
impl Handler<CloseAdmission> for ResourceTracker {
    type Result = Result<(), ActorError>;

    fn handle(&mut self, _msg: CloseAdmission, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "CloseAdmission", ctx, || {
            self.limiter.close();
            Ok(())
        })
    }
}

/// Stops the actor; its supervisor restarts it (`Supervised::restarting`, then `started`).
impl Handler<crate::messages::Restart> for ResourceTracker {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::Restart, ctx: &mut Context<Self>) {
        tracing::info!(actor = NAME, "restart requested");
        actix::ActorContext::stop(ctx);
    }
}
