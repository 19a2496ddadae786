//! Turning a handler panic into a supervised restart. actix restarts an actor under a
//! `Supervisor` only when it *stops*; a panic in a handler would otherwise unwind through the
//! System thread. Every handler therefore runs its body through [`guard`], which catches the
//! panic, stops the actor (its supervisor then calls `restarting()`, which rebuilds state from
//! the source of truth) and answers the caller with [`ActorError::HandlerPanicked`] instead of
//! leaving it hanging.
//!
//! [`Failpoints`] inject those panics in tests; without the `failpoints` feature they compile
//! to nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, ActorContext};

use crate::error::ActorError;

/// Runs `body`; on panic stops the actor through `ctx` and returns
/// [`ActorError::HandlerPanicked`].
pub fn guard<A, C, R>(
    actor: &'static str,
    message: &'static str,
    ctx: &mut C,
    body: impl FnOnce() -> Result<R, ActorError>,
) -> Result<R, ActorError>
where
    A: Actor<Context = C>,
    C: ActorContext,
{
    guard_with_ctx::<A, C, R>(actor, message, ctx, |_| body())
}

/// [`guard`] for a body that needs the actor's context itself (to spawn or cancel futures).
pub fn guard_with_ctx<A, C, R>(
    actor: &'static str,
    message: &'static str,
    ctx: &mut C,
    body: impl FnOnce(&mut C) -> Result<R, ActorError>,
) -> Result<R, ActorError>
where
    A: Actor<Context = C>,
    C: ActorContext,
{
    match catch_unwind(AssertUnwindSafe(|| body(&mut *ctx))) {
        Ok(result) => result,
        Err(payload) => {
            let detail = panic_detail(payload.as_ref());
            tracing::error!(
                actor,
                message,
                detail,
                "handler panicked; restarting the actor"
            );
            ctx.stop();
            Err(ActorError::HandlerPanicked {
                actor,
                message,
                detail,
            })
        }
    }
}

/// The panic payload as text.
pub fn panic_detail(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Named places in the handlers where tests can inject a panic.
#[derive(Debug, Default)]
pub struct Failpoints {
    #[cfg(feature = "failpoints")]
    plans: std::sync::Mutex<std::collections::HashMap<&'static str, FailPlan>>,
}

/// When an armed failpoint fires.
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Copy)]
struct FailPlan {
    every: u64,
    remaining: u64,
    hits: u64,
    fired: u64,
}

/// The failpoint names, one per handler that can be made to panic.
pub mod points {
    /// `ResourceTracker` handling `AcquireLease`.
    pub const ACQUIRE_LEASE: &str = "resource_tracker.acquire_lease";
    /// `ContainerManager` handling `AcquireContainer`.
    pub const ACQUIRE_CONTAINER: &str = "container_manager.acquire_container";
    /// `ContainerManager` handling `ReleaseContainer`.
    pub const RELEASE_CONTAINER: &str = "container_manager.release_container";
    /// `MapWriter` handling `EnforceGroup`.
    pub const ENFORCE_GROUP: &str = "map_writer.enforce_group";
    /// `BpfLoader` handling `GetSchedulerStatus`.
    pub const GET_SCHEDULER_STATUS: &str = "bpf_loader.get_scheduler_status";
    /// Inside `AcquireContainer`'s async body, between two steps of a mutation: a cold
    /// container exists in the backend and is in the ledger, its enforcement not yet sent.
    pub const ACQUIRE_CONTAINER_ASYNC: &str = "container_manager.acquire_container.async";
    /// Inside a destroy's async body, between its two steps: the enforcement is removed, the
    /// container not yet destroyed.
    pub const DESTROY_ASYNC: &str = "container_manager.destroy.async";
}

impl Failpoints {
    /// No failpoint armed.
    pub fn new() -> Self {
        Failpoints::default()
    }

    /// Panics if `name` is armed and due. Called at the top of each guarded handler body.
    #[inline]
    pub fn hit(&self, name: &'static str) {
        #[cfg(feature = "failpoints")]
        {
            let fire = {
                let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
                match plans.get_mut(name) {
                    Some(plan) if plan.remaining > 0 => {
                        plan.hits += 1;
                        if plan.hits % plan.every == 0 {
                            plan.remaining -= 1;
                            plan.fired += 1;
                            true
                        } else {
                            false
                        }
                    }
                    _ => false,
                }
            };
            if fire {
                panic!("failpoint `{name}` fired");
            }
        }
        #[cfg(not(feature = "failpoints"))]
        let _ = name;
    }

    /// Arms `name` to panic on every `every`-th hit, `times` times in all.
    #[cfg(feature = "failpoints")]
    pub fn arm(&self, name: &'static str, every: u64, times: u64) {
        assert!(every > 0, "failpoint `{name}`: `every` must be positive");
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).insert(
            name,
            FailPlan {
                every,
                remaining: times,
                hits: 0,
                fired: 0,
            },
        );
    }

    /// How many times `name` has fired.
    #[cfg(feature = "failpoints")]
    pub fn fired(&self, name: &'static str) -> u64 {
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map_or(0, |p| p.fired)
    }
}
