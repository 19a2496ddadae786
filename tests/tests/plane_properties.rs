//! Property tests of the whole control plane (the resource tracker, the container manager, the
//! map writer and the warm lane, through `corral::testkit`) on random message sequences: the
//! leases in flight never pass the limit, a leased container always has its enforcement
//! committed (the maps hold its cgroup on its lease's group when it is handed out, by the actors
//! or by the warm lane), and releasing everything returns every permit and leaves the writer's
//! mirror equal to the maps.

use std::collections::BTreeMap;

use corral::testkit::{Plane, PlaneSpec};
use corral_actors::messages::{LeasedContainer, Restart};
use corral_actors::ActorError;
use proptest::prelude::*;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Op {
    /// Acquire a container of function `f{0 % 3}` through the actors (only when a permit is
    /// free, so that a step never waits out the queue).
    Acquire(usize),
    /// Take one through the warm lane, if it has one on the policy's group.
    Lane(usize),
    /// Release the i-th held container (modulo the number held).
    Release(usize),
    /// Set the pressure and run one `monitor_load` step.
    Pressure(f64),
    /// Restart the container manager (it rebuilds its pools from the backend).
    RestartManager,
    /// Restart the map writer (it rebuilds its mirror from the maps).
    RestartWriter,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..3).prop_map(Op::Acquire),
        3 => (0usize..3).prop_map(Op::Lane),
        5 => any::<usize>().prop_map(Op::Release),
        1 => prop_oneof![Just(90.0), Just(5.0), Just(40.0)].prop_map(Op::Pressure),
        1 => Just(Op::RestartManager),
        1 => Just(Op::RestartWriter),
    ]
}

/// The invariant of a held container: its cgroup is committed onto its lease's group.
fn committed(plane: &Plane, leased: &LeasedContainer) -> Result<(), TestCaseError> {
    let cgroup = leased.container.info.cgroup.id;
    prop_assert_eq!(
        plane.maps.get(cgroup),
        Some(leased.lease.group()),
        "container {} handed out on group {} but the maps say {:?}",
        &leased.container.info.id,
        leased.lease.group(),
        plane.maps.get(cgroup)
    );
    Ok(())
}

async fn run(limit: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut spec = PlaneSpec::new(&[("a", "0-1"), ("b", "2-3")], limit);
    spec.limiter.min = 1;
    spec.limiter.max = limit + 2;
    spec.monitor.step = 1;
    let plane = Plane::start(spec, &["f0", "f1", "f2"]).await;
    let mut held: Vec<LeasedContainer> = Vec::new();
    for op in ops {
        match op {
            Op::Acquire(f) => {
                if plane.limiter.available() == 0 {
                    continue;
                }
                match plane.acquire(&format!("f{f}")).await {
                    Ok(leased) => {
                        committed(&plane, &leased)?;
                        held.push(leased);
                    }
                    // A restart racing the request is the only acceptable failure.
                    Err(ActorError::ActorUnavailable { .. }) => {}
                    Err(e) => prop_assert!(false, "acquire failed: {e}"),
                }
            }
            Op::Lane(f) => {
                let function = format!("f{f}");
                if plane.limiter.available() == 0 {
                    continue;
                }
                let group = plane.placement.choose(&function).unwrap();
                if let Some(checkout) = plane.lane.checkout(&function, group) {
                    let leased = checkout.hand_out(plane.lane_lease(group));
                    committed(&plane, &leased)?;
                    held.push(leased);
                }
            }
            Op::Release(i) => {
                if held.is_empty() {
                    continue;
                }
                let leased = held.remove(i % held.len());
                plane
                    .release(leased)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("release failed: {e}")))?;
            }
            Op::Pressure(p) => {
                plane.pressure.set(p);
                plane
                    .sample_load()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("sample failed: {e}")))?;
            }
            Op::RestartManager => plane.containers.send(Restart).await.unwrap(),
            Op::RestartWriter => plane.writer.send(Restart).await.unwrap(),
        }
        // Leases in flight never pass the limit (a shrink below the holders only waits for
        // releases), and every held container is still committed onto its group.
        prop_assert!(plane.limiter.in_flight() <= plane.limiter.limit().max(held.len()));
        prop_assert_eq!(plane.limiter.in_flight(), held.len());
        for leased in &held {
            committed(&plane, leased)?;
        }
    }
    for leased in held.drain(..) {
        plane
            .release(leased)
            .await
            .map_err(|e| TestCaseError::fail(format!("release failed: {e}")))?;
    }
    prop_assert_eq!(plane.limiter.in_flight(), 0);
    prop_assert_eq!(plane.limiter.available(), plane.limiter.limit());
    // Let a restarted writer finish its rebuild before comparing.
    let mirror: BTreeMap<_, _> = plane.enforcements().await.unwrap().into_iter().collect();
    prop_assert_eq!(mirror, plane.maps.entries());
    let pool = plane.pool().await.unwrap();
    prop_assert_eq!(pool.in_use, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random acquisitions (by the actors and by the warm lane), releases, pressure samples and
    /// restarts of the manager and the writer keep the plane's invariants.
    #[test]
    fn random_message_sequences_keep_the_planes_invariants(
        limit in 1usize..5,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        actix::System::new().block_on(run(limit, ops))?;
    }
}
