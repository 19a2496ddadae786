//! The placement policies that pick a CPU group per invocation: `pinned` (function → group from
//! configuration), `least-loaded` (fewest leases per CPU) and `hash` (consistent hashing of the
//! function name with a bounded load factor, after Mirrokni, Thorup and Zadimoghaddam). Loads are
//! the live lease counts of each group, so they are exact and survive an actor restart.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{CpuGroup, GroupId, PlacementConfig, PolicyKind};
use crate::error::ActorError;
use crate::lease::GroupLoad;

/// A policy plus the groups and their loads.
#[derive(Debug)]
pub struct Placement {
    groups: Vec<CpuGroup>,
    loads: Vec<Arc<GroupLoad>>,
    policy: Policy,
}

#[derive(Debug)]
enum Policy {
    Pinned {
        pinned: HashMap<String, GroupId>,
        default: Option<GroupId>,
    },
    LeastLoaded,
    Hash {
        /// Sorted ring points.
        ring: Vec<(u64, GroupId)>,
        load_factor: f64,
    },
}

impl Placement {
    /// Builds the policy from validated groups and placement configuration. `loads` holds one
    /// counter per group, shared with the leases (pass the old ones when rebuilding).
    pub fn new(
        groups: Vec<CpuGroup>,
        config: &PlacementConfig,
        loads: Vec<Arc<GroupLoad>>,
    ) -> Result<Self, ActorError> {
        config.validate(&groups)?;
        assert_eq!(groups.len(), loads.len(), "one load counter per group");
        let id_of = |name: &str| groups.iter().find(|g| g.name == name).map(|g| g.id);
        let policy = match config.policy {
            PolicyKind::Pinned => Policy::Pinned {
                pinned: config
                    .pinned
                    .iter()
                    .filter_map(|(f, g)| id_of(g).map(|id| (f.clone(), id)))
                    .collect(),
                default: config.default_group.as_deref().and_then(id_of),
            },
            PolicyKind::LeastLoaded => Policy::LeastLoaded,
            PolicyKind::Hash => {
                let mut ring = Vec::with_capacity(groups.len() * config.virtual_nodes as usize);
                for g in &groups {
                    for v in 0..config.virtual_nodes {
                        ring.push((point(&format!("{}#{v}", g.name)), g.id));
                    }
                }
                ring.sort_unstable();
                Policy::Hash {
                    ring,
                    load_factor: config.load_factor,
                }
            }
        };
        Ok(Placement {
            groups,
            loads,
            policy,
        })
    }

    /// Fresh load counters for `n` groups.
    pub fn fresh_loads(n: usize) -> Vec<Arc<GroupLoad>> {
        (0..n).map(|_| Arc::new(GroupLoad::default())).collect()
    }

    /// The groups.
    pub fn groups(&self) -> &[CpuGroup] {
        &self.groups
    }

    /// The load counters, one per group.
    pub fn loads(&self) -> &[Arc<GroupLoad>] {
        &self.loads
    }

    /// Picks a group for `function` given the current loads.
    pub fn choose(&self, function: &str) -> Result<GroupId, ActorError> {
        match &self.policy {
            Policy::Pinned { pinned, default } => {
                pinned.get(function).copied().or(*default).ok_or_else(|| {
                    ActorError::UnpinnedFunction {
                        function: function.to_string(),
                    }
                })
            }
            Policy::LeastLoaded => Ok(self.least_loaded()),
            Policy::Hash { ring, load_factor } => {
                Ok(self.hash_bounded(ring, *load_factor, function))
            }
        }
    }

    /// The group minimising (load + 1) / cpus; ties go to the lower id.
    fn least_loaded(&self) -> GroupId {
        let mut best = 0;
        for i in 1..self.groups.len() {
            let (li, ci) = (
                self.loads[i].get() as u64 + 1,
                self.groups[i].cpus.len() as u64,
            );
            let (lb, cb) = (
                self.loads[best].get() as u64 + 1,
                self.groups[best].cpus.len() as u64,
            );
            if li * cb < lb * ci {
                best = i;
            }
        }
        self.groups[best].id
    }

    /// Walks the ring clockwise from the function's point and takes the first group whose load
    /// stays within `load_factor` times its CPU-weighted fair share. One always does: if every
    /// group were at capacity the total load would exceed itself.
    fn hash_bounded(&self, ring: &[(u64, GroupId)], load_factor: f64, function: &str) -> GroupId {
        let total: usize = self.loads.iter().map(|l| l.get()).sum();
        let total_cpus: usize = self.groups.iter().map(|g| g.cpus.len()).sum();
        let capacity = |g: GroupId| {
            let share = self.groups[g.0 as usize].cpus.len() as f64 / total_cpus as f64;
            (load_factor * (total as f64 + 1.0) * share).ceil() as usize
        };
        let start = ring.partition_point(|(p, _)| *p < point(function));
        for k in 0..ring.len() {
            let group = ring[(start + k) % ring.len()].1;
            if self.loads[group.0 as usize].get() < capacity(group) {
                return group;
            }
        }
        // Unreachable by the argument above; fall back to the least loaded rather than fail.
        self.least_loaded()
    }

    /// The group `function` hashes to with no load at all (its home on the ring).
    pub fn hash_home(&self, function: &str) -> Option<GroupId> {
        match &self.policy {
            Policy::Hash { ring, .. } => {
                let start = ring.partition_point(|(p, _)| *p < point(function));
                Some(ring[start % ring.len()].1)
            }
            _ => None,
        }
    }
}

/// A stable 64-bit ring point: FNV-1a followed by the splitmix64 finaliser for spread.
fn point(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
