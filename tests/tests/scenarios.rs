//! Message-driven scenarios of the control plane, written on `corral::testkit` (the same kit
//! worker authors get): each test starts the actors in an actix System with the `sim`
//! container backend and the `memory` map backend, sends a scripted sequence of messages, and
//! checks the outcome against the maps, the journal and the limiter.

use std::sync::Arc;
use std::time::Duration;

use corral::testkit::{Plane, PlaneSpec};
use corral_actors::config::{GroupId, LimiterConfig, MonitorConfig, PolicyKind};
use corral_actors::messages::{
    AcquireContainer, ListEnforcements, ReleaseContainer, RemoveEnforcement, SampleLoad, StartKind,
};
use corral_actors::telemetry::JournalEvent;
use corral_actors::ActorError;

/// The warm lane hands out only an idle container whose enforcement onto the asked group the
/// map writer has committed, and writes nothing itself. A container on another group, or
/// whose entry the writer removed, is left to the actor path, which enforces it again; after
/// that the lane takes it again.
#[actix_rt::test]
async fn warm_lane_hands_out_only_committed_containers() {
    use std::sync::atomic::Ordering;
    let plane = Plane::start(PlaneSpec::new(&[("a", "0-1"), ("b", "2-3")], 4), &["f"]).await;
    assert!(
        plane.lane.checkout("f", GroupId(0)).is_none(),
        "nothing idle"
    );

    let cold = plane.acquire("f").await.unwrap();
    let (group, cgroup) = (cold.lease.group(), cold.container.info.cgroup.clone());
    plane.release(cold).await.unwrap();
    let other = GroupId(1 - group.0);
    assert!(
        plane.lane.checkout("f", other).is_none(),
        "enforced onto {group}, not {other}"
    );

    let commits = plane
        .telemetry
        .enforcements_committed
        .load(Ordering::Relaxed);
    let leased = plane
        .lane
        .checkout("f", group)
        .expect("idle and committed onto its group")
        .hand_out(plane.lane_lease(group));
    assert_eq!(leased.container.info.cgroup, cgroup);
    assert_eq!(leased.start, StartKind::Warm);
    assert_eq!(leased.container.enforcement.group, group);
    assert_eq!(plane.maps.get(cgroup.id), Some(group));
    assert_eq!(plane.limiter.in_flight(), 1);
    assert!(
        plane.lane.checkin(leased.container, leased.lease).is_none(),
        "room in the pool"
    );
    assert_eq!(plane.limiter.in_flight(), 0);
    assert_eq!(
        plane
            .telemetry
            .enforcements_committed
            .load(Ordering::Relaxed),
        commits,
        "the lane committed nothing"
    );

    plane
        .writer
        .send(RemoveEnforcement {
            cgroup: cgroup.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        plane.lane.checkout("f", group).is_none(),
        "no longer committed: the lane must not hand it out"
    );
    let again = plane.acquire("f").await.unwrap();
    assert_eq!(again.start, StartKind::Warm);
    assert_eq!(again.container.info.cgroup, cgroup);
    let regroup = again.lease.group();
    assert_eq!(plane.maps.get(cgroup.id), Some(regroup), "enforced again");
    plane.release(again).await.unwrap();
    let leased = plane
        .lane
        .checkout("f", regroup)
        .expect("committed again")
        .hand_out(plane.lane_lease(regroup));
    assert!(plane.lane.checkin(leased.container, leased.lease).is_none());
    assert_eq!(plane.limiter.in_flight(), 0);
}

fn position(journal: &[JournalEvent], event: &JournalEvent) -> usize {
    journal
        .iter()
        .position(|e| e == event)
        .unwrap_or_else(|| panic!("{event:?} is not in the journal {journal:?}"))
}

/// The container manager hands a container out only after the map writer acknowledged the
/// enforcement: at the moment `AcquireContainer` answers, the maps already hold
/// cgroup → group, for a cold start and for a warm reuse alike, and the journal shows the
/// commit before the hand-out.
#[actix_rt::test]
async fn enforcement_is_committed_before_container_is_handed_out() {
    let plane = Plane::start(PlaneSpec::new(&[("a", "0-1"), ("b", "2-3")], 4), &["f"]).await;
    for expected in [StartKind::Cold, StartKind::Warm] {
        let lease = plane.lease("f").await.unwrap();
        let group = lease.group();
        let leased = plane
            .containers
            .send(AcquireContainer {
                function: "f".into(),
                lease,
            })
            .await
            .unwrap()
            .unwrap();
        // Checked synchronously on receipt: nothing else ran in between.
        let cgroup = leased.container.info.cgroup.id;
        assert_eq!(
            plane.maps.get(cgroup),
            Some(group),
            "{expected:?} hand-out before commit"
        );
        assert_eq!(leased.start, expected);
        assert_eq!(leased.container.enforcement.group, group);
        let journal = plane.telemetry.journal();
        let committed = journal
            .iter()
            .rposition(|e| {
                *e == JournalEvent::EnforcementCommitted {
                    cgroup: cgroup.0,
                    group,
                }
            })
            .expect("commit recorded");
        let handed = position(
            &journal,
            &JournalEvent::ContainerHandedOut {
                cgroup: cgroup.0,
                lease: leased.lease.id(),
            },
        );
        assert!(
            committed < handed,
            "commit at {committed}, hand-out at {handed}"
        );
        plane
            .containers
            .send(ReleaseContainer {
                container: leased.container,
                lease: leased.lease,
            })
            .await
            .unwrap()
            .unwrap();
    }
}

/// A failed enforcement never hands out the container: the request fails with the backend's
/// error, and the container goes back to the pool before the permit is released.
#[actix_rt::test]
async fn failed_enforcement_returns_container_and_permit() {
    let plane = Plane::start(PlaneSpec::new(&[("a", "0-1")], 1), &["f"]).await;
    plane.maps.fail_next(1);
    let lease = plane.lease("f").await.unwrap();
    let lease_id = lease.id();
    let err = plane
        .containers
        .send(AcquireContainer {
            function: "f".into(),
            lease,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ActorError::MapBackend {
                backend: "memory",
                ..
            }
        ),
        "{err}"
    );
    // The permit comes back (limit 1): the next lease is granted, and the container is warm.
    let lease = tokio::time::timeout(Duration::from_secs(5), plane.lease("f"))
        .await
        .expect("permit leaked")
        .unwrap();
    let journal = plane.telemetry.journal();
    let returned = journal
        .iter()
        .position(
            |e| matches!(e, JournalEvent::ContainerReturned { lease, .. } if *lease == lease_id),
        )
        .expect("container returned");
    let released = position(&journal, &JournalEvent::PermitReleased { lease: lease_id });
    assert!(returned < released);
    let leased = plane
        .containers
        .send(AcquireContainer {
            function: "f".into(),
            lease,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.start, StartKind::Warm);
    assert_eq!(
        plane.maps.get(leased.container.info.cgroup.id),
        Some(GroupId(0))
    );
}

/// On release the container goes back to the pool before the permit: with a limit of 1 and a
/// second invocation already waiting for the permit, the waiter gets the same container warm,
/// and the journal records ContainerReturned before PermitReleased.
#[actix_rt::test]
async fn release_returns_container_before_permit() {
    let plane = Arc::new(Plane::start(PlaneSpec::new(&[("a", "0-1")], 1), &["f"]).await);
    let first = plane.lease("f").await.unwrap();
    let first_id = first.id();
    let leased = plane
        .containers
        .send(AcquireContainer {
            function: "f".into(),
            lease: first,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.start, StartKind::Cold);
    let container_id = leased.container.info.id.clone();

    let waiter = {
        let plane = Arc::clone(&plane);
        actix_rt::spawn(async move {
            let lease = plane.lease("f").await.unwrap();
            plane
                .containers
                .send(AcquireContainer {
                    function: "f".into(),
                    lease,
                })
                .await
                .unwrap()
                .unwrap()
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        plane.limiter.in_flight(),
        1,
        "the waiter must not have a permit yet"
    );

    plane
        .containers
        .send(ReleaseContainer {
            container: leased.container,
            lease: leased.lease,
        })
        .await
        .unwrap()
        .unwrap();
    let second = waiter.await.unwrap();
    assert_eq!(
        second.start,
        StartKind::Warm,
        "the waiter found no warm container"
    );
    assert_eq!(second.container.info.id, container_id);
    assert_eq!(
        plane
            .telemetry
            .cold_starts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let journal = plane.telemetry.journal();
    let returned = journal
        .iter()
        .position(
            |e| matches!(e, JournalEvent::ContainerReturned { lease, .. } if *lease == first_id),
        )
        .expect("container returned");
    let released = position(&journal, &JournalEvent::PermitReleased { lease: first_id });
    assert!(
        returned < released,
        "container returned at {returned}, permit at {released}"
    );
}

/// `pinned` places each function on the group configuration names, uses the default group for
/// other functions, and without a default refuses an unlisted function with an error naming it.
#[actix_rt::test]
async fn pinned_policy_places_each_function_on_its_configured_group() {
    let mut spec = PlaneSpec::new(&[("a", "0-1"), ("b", "2-3"), ("c", "4")], 8);
    spec.placement.policy = PolicyKind::Pinned;
    spec.placement.pinned = [
        ("f".to_string(), "b".to_string()),
        ("g".to_string(), "c".to_string()),
    ]
    .into_iter()
    .collect();
    let plane = Plane::start(spec, &[]).await;
    for _ in 0..3 {
        assert_eq!(plane.lease("f").await.unwrap().group(), GroupId(1));
        assert_eq!(plane.lease("g").await.unwrap().group(), GroupId(2));
    }
    match plane.lease("h").await {
        Err(ActorError::UnpinnedFunction { function }) => assert_eq!(function, "h"),
        other => panic!("expected UnpinnedFunction, got {other:?}"),
    }

    let mut spec = PlaneSpec::new(&[("a", "0-1"), ("b", "2-3")], 8);
    spec.placement.policy = PolicyKind::Pinned;
    spec.placement.pinned = [("f".to_string(), "b".to_string())].into_iter().collect();
    spec.placement.default_group = Some("a".to_string());
    let plane = Plane::start(spec, &[]).await;
    assert_eq!(plane.lease("f").await.unwrap().group(), GroupId(1));
    assert_eq!(plane.lease("h").await.unwrap().group(), GroupId(0));
}

/// `least-loaded` picks the group with the fewest leases per CPU: with groups of 2 and 4 CPUs,
/// six held leases split 2 / 4, and a released lease's group is picked next.
#[actix_rt::test]
async fn least_loaded_policy_balances_leases_per_cpu() {
    let mut spec = PlaneSpec::new(&[("small", "0-1"), ("large", "2-5")], 16);
    spec.placement.policy = PolicyKind::LeastLoaded;
    let plane = Plane::start(spec, &[]).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(plane.lease("f").await.unwrap());
    }
    let on = |g: u32| held.iter().filter(|l| l.group() == GroupId(g)).count();
    assert_eq!((on(0), on(1)), (2, 4));
    assert_eq!(plane.placement.loads()[0].get(), 2);
    assert_eq!(plane.placement.loads()[1].get(), 4);
    // Free one lease of the small group: it is now the least loaded per CPU.
    let idx = held.iter().position(|l| l.group() == GroupId(0)).unwrap();
    held.remove(idx);
    assert_eq!(plane.lease("f").await.unwrap().group(), GroupId(0));
}

/// `hash` sends a function to the same home group every time while load allows (consistent),
/// spreads different functions over the groups, and caps any group at `load_factor` times its
/// fair share of the leases held (bounded load).
#[actix_rt::test]
async fn hash_policy_is_consistent_and_bounded() {
    let mut spec = PlaneSpec::new(&[("a", "0"), ("b", "1"), ("c", "2"), ("d", "3")], 64);
    spec.placement.policy = PolicyKind::Hash;
    spec.placement.load_factor = 1.25;
    let plane = Plane::start(spec, &[]).await;

    // Consistent: with nothing held, every lease for a function lands on its home group.
    let mut homes = std::collections::BTreeSet::new();
    for i in 0..64 {
        let f = format!("fn{i}");
        let home = plane.placement.hash_home(&f).unwrap();
        for _ in 0..3 {
            assert_eq!(plane.lease(&f).await.unwrap().group(), home, "{f}");
        }
        homes.insert(home);
    }
    assert_eq!(
        homes.len(),
        4,
        "64 functions should reach all 4 groups, got {homes:?}"
    );

    // Bounded: hold 40 leases of one function; no group exceeds ceil(1.25 * total / 4).
    let home = plane.placement.hash_home("hot").unwrap();
    let mut held = Vec::new();
    for n in 1..=40usize {
        held.push(plane.lease("hot").await.unwrap());
        let cap = (1.25 * n as f64 / 4.0).ceil() as usize;
        for (g, load) in plane.placement.loads().iter().enumerate() {
            assert!(
                load.get() <= cap,
                "after {n} leases group {g} holds {} > cap {cap}",
                load.get()
            );
        }
    }
    let on_home = held.iter().filter(|l| l.group() == home).count();
    assert!(
        on_home >= 10,
        "the home group should fill to its cap first, holds {on_home}"
    );
}

/// `monitor_load` shrinks the inflight limit by `step` per sample while pressure is above
/// `shrink_above`, never below `min`, and grows it back to `max` once pressure drops below
/// `grow_below`. Leases already held above a shrunk limit finish, and no new lease is granted
/// until the in-flight count is below the new limit (the limiter stays exact).
#[actix_rt::test]
async fn monitor_load_shrinks_under_pressure_and_grows_back() {
    let mut spec = PlaneSpec::new(&[("a", "0-3")], 8);
    spec.limiter = LimiterConfig {
        initial: 8,
        min: 2,
        max: 8,
        queue_timeout_ms: 50,
    };
    spec.monitor = MonitorConfig {
        enabled: false,
        step: 2,
        shrink_above: 40.0,
        grow_below: 10.0,
        ..MonitorConfig::default()
    };
    let plane = Plane::start(spec, &[]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(plane.lease("f").await.unwrap());
    }

    plane.pressure.set(90.0);
    let mut limits = Vec::new();
    for _ in 0..4 {
        let change = plane.tracker.send(SampleLoad).await.unwrap().unwrap();
        limits.push(change.after);
    }
    assert_eq!(limits, vec![6, 4, 2, 2]);
    assert_eq!(plane.limiter.limit(), 2);

    // 4 held, limit 2: a new lease must wait until fewer than 2 are held.
    assert!(matches!(
        plane.lease("f").await,
        Err(ActorError::QueueTimeout { limit: 2, .. })
    ));
    held.truncate(2);
    assert!(matches!(
        plane.lease("f").await,
        Err(ActorError::QueueTimeout { .. })
    ));
    held.truncate(1);
    let extra = plane.lease("f").await.expect("one slot below the limit");
    assert_eq!(plane.limiter.in_flight(), 2);
    drop(extra);
    drop(held);

    plane.pressure.set(25.0);
    let steady = plane.tracker.send(SampleLoad).await.unwrap().unwrap();
    assert_eq!(
        (steady.before, steady.after),
        (2, 2),
        "between the thresholds nothing changes"
    );

    plane.pressure.set(3.0);
    let mut limits = Vec::new();
    for _ in 0..4 {
        limits.push(plane.tracker.send(SampleLoad).await.unwrap().unwrap().after);
    }
    assert_eq!(limits, vec![4, 6, 8, 8]);
    let mut all = Vec::new();
    for _ in 0..8 {
        all.push(plane.lease("f").await.expect("the grown limit admits 8"));
    }
    assert_eq!(plane.limiter.in_flight(), 8);
}

/// With the monitor enabled, the tracker samples on its own period: sustained pressure drives
/// the limit to `min` without any message from the test.
#[actix_rt::test]
async fn monitor_load_samples_on_its_period() {
    let mut spec = PlaneSpec::new(&[("a", "0-3")], 6);
    spec.limiter.min = 2;
    spec.monitor = MonitorConfig {
        enabled: true,
        period_ms: 10,
        ..MonitorConfig::default()
    };
    let plane = Plane::start(spec, &[]).await;
    plane.pressure.set(99.0);
    tokio::time::timeout(Duration::from_secs(5), async {
        while plane.limiter.limit() != 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the monitor never shrank the limit to min");
}

/// The map writer's mirror matches the backend, and a restart rebuilds it from the backend
/// (the source of truth) rather than from memory.
#[actix_rt::test]
async fn map_writer_mirror_matches_backend() {
    let plane = Plane::start(
        PlaneSpec::new(&[("a", "0-1"), ("b", "2-3")], 4),
        &["f", "g"],
    )
    .await;
    let mut held = Vec::new();
    for f in ["f", "g", "f"] {
        let lease = plane.lease(f).await.unwrap();
        held.push(
            plane
                .containers
                .send(AcquireContainer {
                    function: f.into(),
                    lease,
                })
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let mirror = plane.writer.send(ListEnforcements).await.unwrap().unwrap();
    let backend: Vec<_> = plane.maps.entries().into_iter().collect();
    assert_eq!(mirror, backend);
    assert_eq!(mirror.len(), 3);
}
