//! The exact inflight limiter and the leases it backs. A lease is a CPU group plus a permit;
//! holding one is the only way to run an invocation. Permits are RAII: dropping a lease, on any
//! path including a panic, returns its permit, so permits cannot leak.
//!
//! Exactness: the research notes' limiter checked a counter and then incremented it, which let
//! extra invocations through under concurrency. Here admission is a semaphore acquisition, which
//! is atomic. Shrinking forgets available permits; when too few are available the shortfall is
//! recorded as a debt that releases pay off (their permits are forgotten instead of returned), so
//! no new lease is admitted until the in-flight count is below the new limit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::GroupId;
use crate::telemetry::{JournalEvent, Telemetry};

/// The inflight limiter, shared by the resource tracker and every lease.
#[derive(Debug)]
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    limit: AtomicUsize,
    /// Permits still to be forgotten after a shrink (guarded so resize and release agree).
    debt: Mutex<usize>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Why a permit was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// The limiter was closed for shutdown.
    Closed,
}

impl Limiter {
    /// A limiter admitting `limit` concurrent holders.
    pub fn new(limit: usize) -> Self {
        Limiter {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            debt: Mutex::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// Waits for a permit.
    pub async fn admit(self: &Arc<Self>) -> Result<Permit, AdmitError> {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AdmitError::Closed)?;
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_in_flight.fetch_max(now, Ordering::AcqRel);
        Ok(Permit {
            limiter: Arc::clone(self),
            permit: Some(permit),
        })
    }

    /// A permit if one is free right now, without waiting; `None` when none is (or the limiter
    /// is closed). Never jumps the queue: tokio's semaphore hands a released permit to a waiter
    /// before it becomes free.
    pub fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_in_flight.fetch_max(now, Ordering::AcqRel);
        Some(Permit {
            limiter: Arc::clone(self),
            permit: Some(permit),
        })
    }

    /// Sets a new limit. In-flight work above a lower limit finishes; no new permit is granted
    /// until the in-flight count is below it.
    pub fn resize(&self, new_limit: usize) {
        let mut debt = self.debt.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.limit.swap(new_limit, Ordering::AcqRel);
        if new_limit < old {
            let shrink = old - new_limit;
            let forgotten = self.semaphore.forget_permits(shrink);
            *debt += shrink - forgotten;
        } else if new_limit > old {
            let grow = new_limit - old;
            let paid = grow.min(*debt);
            *debt -= paid;
            self.semaphore.add_permits(grow - paid);
        }
    }

    /// Refuses every waiting and future admission (shutdown).
    pub fn close(&self) {
        self.semaphore.close();
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Permits currently held.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The most permits ever held at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Acquire)
    }

    /// Permits available right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// One admitted slot of the limiter; dropping it returns the slot.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut debt = self.limiter.debt.lock().unwrap_or_else(|e| e.into_inner());
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        if *debt > 0 {
            *debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }
}

/// Counts the leases held on one group; the count is the group's load.
#[derive(Debug, Default)]
pub struct GroupLoad {
    leases: AtomicUsize,
}

impl GroupLoad {
    /// Leases currently held on the group.
    pub fn get(&self) -> usize {
        self.leases.load(Ordering::Acquire)
    }

    /// Takes one unit of load, returned when the guard drops.
    pub fn take(self: &Arc<Self>) -> LoadGuard {
        self.leases.fetch_add(1, Ordering::AcqRel);
        LoadGuard(Arc::clone(self))
    }
}

/// One lease's share of a group's load.
#[derive(Debug)]
pub struct LoadGuard(Arc<GroupLoad>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.leases.fetch_sub(1, Ordering::AcqRel);
    }
}

static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

/// A CPU group plus a permit: the right to run one invocation on that group.
#[derive(Debug)]
pub struct GroupLease {
    id: u64,
    group: GroupId,
    queue_wait: Duration,
    granted_at: Instant,
    telemetry: Arc<Telemetry>,
    load: Option<LoadGuard>,
    permit: Option<Permit>,
}

impl GroupLease {
    /// Builds a lease from an admitted permit and the chosen group's load.
    pub fn new(
        group: GroupId,
        permit: Permit,
        load: LoadGuard,
        queue_wait: Duration,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let id = NEXT_LEASE.fetch_add(1, Ordering::Relaxed);
        telemetry.record(JournalEvent::LeaseGranted { lease: id, group });
        GroupLease {
            id,
            group,
            queue_wait,
            granted_at: Instant::now(),
            telemetry,
            load: Some(load),
            permit: Some(permit),
        }
    }

    /// The lease's unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The group it grants.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// How long the request waited for the permit.
    pub fn queue_wait(&self) -> Duration {
        self.queue_wait
    }

    /// When it was granted.
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }
}

impl Drop for GroupLease {
    fn drop(&mut self) {
        self.load.take();
        self.permit.take();
        self.telemetry
            .record(JournalEvent::PermitReleased { lease: self.id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shrinking below the permits already held records a debt: no permit is granted until the
    /// holders drop below the new limit, and growing first pays the debt back.
    #[tokio::test]
    async fn shrink_below_held_permits_blocks_until_paid() {
        let limiter = Arc::new(Limiter::new(4));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(limiter.admit().await.unwrap());
        }
        limiter.resize(2);
        assert_eq!(limiter.limit(), 2);
        held.truncate(2); // two releases pay the debt of two
        assert_eq!(
            limiter.available(),
            0,
            "no slot while 2 of limit 2 are held"
        );
        held.pop();
        assert_eq!(limiter.available(), 1);
        held.push(limiter.admit().await.unwrap());
        assert_eq!(limiter.in_flight(), 2);

        limiter.resize(3);
        assert_eq!(limiter.available(), 1);
        drop(held);
        assert_eq!(limiter.available(), 3);
        assert_eq!(limiter.max_in_flight(), 4);
    }

    /// Growing while a shrink's debt is outstanding cancels the debt before adding permits.
    #[tokio::test]
    async fn grow_pays_outstanding_debt_first() {
        let limiter = Arc::new(Limiter::new(2));
        let a = limiter.admit().await.unwrap();
        let b = limiter.admit().await.unwrap();
        limiter.resize(1); // debt 1
        limiter.resize(3); // pays 1, adds 1
        assert_eq!(limiter.available(), 1);
        drop((a, b));
        assert_eq!(limiter.available(), 3);
    }

    /// `try_admit` takes a free permit, counts it like `admit`, and gives none when all are
    /// held or the limiter is closed.
    #[tokio::test]
    async fn try_admit_takes_only_a_free_permit() {
        let limiter = Arc::new(Limiter::new(2));
        let a = limiter.try_admit().expect("a free permit");
        let b = limiter.admit().await.unwrap();
        assert!(limiter.try_admit().is_none(), "both permits are held");
        assert_eq!(limiter.in_flight(), 2);
        drop(a);
        let c = limiter.try_admit().expect("the returned permit");
        limiter.close();
        drop((b, c));
        assert!(limiter.try_admit().is_none(), "closed");
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.max_in_flight(), 2);
    }

    /// A closed limiter refuses waiting and new admissions.
    #[tokio::test]
    async fn closed_limiter_refuses_admission() {
        let limiter = Arc::new(Limiter::new(1));
        let held = limiter.admit().await.unwrap();
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.admit().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        limiter.close();
        assert_eq!(waiter.await.unwrap(), Err(AdmitError::Closed));
        drop(held);
        assert!(limiter.admit().await.is_err());
    }
}
