//! Property tests of the control plane's bookkeeping, on random message sequences: the
//! limiter never admits past its limit and every release returns its slot, and the map writer's
//! mirror always equals the backend it commits to, refusals included.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Actor;
use corral_actors::config::{validate_groups, GroupConfig, GroupId};
use corral_actors::container_backend::{CgroupId, CgroupRef};
use corral_actors::lease::Limiter;
use corral_actors::map_backend::memory::{MemoryBackend, MemoryMaps};
use corral_actors::map_writer::MapWriter;
use corral_actors::messages::{EnforceGroup, ListEnforcements, RemoveEnforcement};
use corral_actors::supervision::Failpoints;
use corral_actors::telemetry::Telemetry;
use futures::FutureExt;
use proptest::prelude::*;

/// One step against the limiter.
#[derive(Debug, Clone)]
enum LimiterOp {
    /// Try to take a slot without waiting.
    Admit,
    /// Drop the i-th held slot (modulo the number held).
    Release(usize),
    /// Set a new limit.
    Resize(usize),
}

fn limiter_op() -> impl Strategy<Value = LimiterOp> {
    prop_oneof![
        4 => Just(LimiterOp::Admit),
        3 => any::<usize>().prop_map(LimiterOp::Release),
        1 => (1usize..12).prop_map(LimiterOp::Resize),
    ]
}

proptest! {
    /// Whatever the order of admissions, releases and resizes: a slot is granted exactly when
    /// fewer than the current limit are held (a shrink below the holders waits for releases),
    /// the in-flight count is the number held, the available permits are what the limit leaves,
    /// and releasing everything gives the whole limit back.
    #[test]
    fn the_limiter_admits_exactly_below_its_limit(
        initial in 1usize..12,
        ops in proptest::collection::vec(limiter_op(), 1..200),
    ) {
        let limiter = Arc::new(Limiter::new(initial));
        let mut limit = initial;
        let mut held = Vec::new();
        for op in ops {
            match op {
                LimiterOp::Admit => {
                    let granted = limiter.admit().now_or_never();
                    prop_assert_eq!(granted.is_some(), held.len() < limit, "held {} limit {}", held.len(), limit);
                    if let Some(permit) = granted {
                        held.push(permit.unwrap());
                    }
                }
                LimiterOp::Release(i) => {
                    if !held.is_empty() {
                        let n = held.len();
                        drop(held.swap_remove(i % n));
                    }
                }
                LimiterOp::Resize(n) => {
                    limiter.resize(n);
                    limit = n;
                }
            }
            prop_assert_eq!(limiter.in_flight(), held.len());
            prop_assert_eq!(limiter.limit(), limit);
            prop_assert_eq!(limiter.available(), limit.saturating_sub(held.len()));
        }
        held.clear();
        prop_assert_eq!(limiter.in_flight(), 0);
        prop_assert_eq!(limiter.available(), limit);
    }
}

/// One step against the map writer.
#[derive(Debug, Clone)]
enum WriterOp {
    /// Map a cgroup to a group (group 2 does not exist: refused).
    Enforce(u64, u32),
    /// Unmap a cgroup.
    Remove(u64),
}

fn writer_op() -> impl Strategy<Value = WriterOp> {
    prop_oneof![
        3 => (1u64..12, 0u32..3).prop_map(|(c, g)| WriterOp::Enforce(c, g)),
        1 => (1u64..12).prop_map(WriterOp::Remove),
    ]
}

fn two_groups() -> Vec<corral_actors::config::CpuGroup> {
    let configs: Vec<GroupConfig> = ["0", "1"]
        .iter()
        .enumerate()
        .map(|(i, cpus)| GroupConfig {
            name: format!("g{i}"),
            cpus: (*cpus).into(),
            slice_us: 5_000,
            order: Default::default(),
            borrow: false,
            exclusive: false,
        })
        .collect();
    validate_groups(&configs, &[0, 1]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the order of enforcements (some to a group that does not exist, refused) and
    /// removals, after every step the writer's mirror equals the backend's maps and a model of
    /// what was committed: a refusal changes nothing, a removal of an unmapped cgroup neither.
    #[test]
    fn the_map_writers_mirror_equals_the_backend(
        ops in proptest::collection::vec(writer_op(), 1..60),
    ) {
        let result: Result<(), TestCaseError> = actix::System::new().block_on(async move {
            let maps = MemoryMaps::new();
            let writer = MapWriter::new(
                Box::new(MemoryBackend::new(maps.clone())),
                two_groups(),
                Arc::new(Telemetry::new()),
                Arc::new(Failpoints::new()),
            )
            .start();
            let mut model: BTreeMap<CgroupId, GroupId> = BTreeMap::new();
            for op in ops {
                match op {
                    WriterOp::Enforce(c, g) => {
                        let answer = writer
                            .send(EnforceGroup {
                                cgroup: CgroupRef { id: CgroupId(c), path: None },
                                group: GroupId(g),
                            })
                            .await
                            .unwrap();
                        prop_assert_eq!(answer.is_ok(), g < 2, "{:?}", answer);
                        if g < 2 {
                            model.insert(CgroupId(c), GroupId(g));
                        }
                    }
                    WriterOp::Remove(c) => {
                        let removed = writer
                            .send(RemoveEnforcement {
                                cgroup: CgroupRef { id: CgroupId(c), path: None },
                            })
                            .await
                            .unwrap()
                            .unwrap();
                        prop_assert_eq!(removed, model.remove(&CgroupId(c)).is_some());
                    }
                }
                let mirror: BTreeMap<_, _> =
                    writer.send(ListEnforcements).await.unwrap().unwrap().into_iter().collect();
                prop_assert_eq!(&mirror, &maps.entries());
                prop_assert_eq!(&mirror, &model);
            }
            Ok(())
        });
        result?;
    }
}
