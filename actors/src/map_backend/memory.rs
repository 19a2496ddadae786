//! The `memory` map backend: enforcement state in a shared in-memory table that tests inspect
//! directly (for example, to see that a container's enforcement was committed before it was
//! handed out). It can also be told to fail, to test the error paths.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::MapBackend;
use crate::config::{CpuGroup, GroupId};
use crate::container_backend::{CgroupId, CgroupRef, Enforcement};
use crate::error::ActorError;

#[derive(Debug, Default)]
struct Maps {
    entries: BTreeMap<CgroupId, GroupId>,
    groups: Vec<CpuGroup>,
    commits: u64,
    fail_next: u64,
}

/// A handle on the in-memory maps, shared between the backend and the test.
#[derive(Debug, Clone, Default)]
pub struct MemoryMaps(Arc<Mutex<Maps>>);

impl MemoryMaps {
    /// Empty maps.
    pub fn new() -> Self {
        MemoryMaps::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The group `cgroup` is enforced onto, if any.
    pub fn get(&self, cgroup: CgroupId) -> Option<GroupId> {
        self.lock().entries.get(&cgroup).copied()
    }

    /// Every entry.
    pub fn entries(&self) -> BTreeMap<CgroupId, GroupId> {
        self.lock().entries.clone()
    }

    /// The published groups.
    pub fn groups(&self) -> Vec<CpuGroup> {
        self.lock().groups.clone()
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Makes the next `n` enforcements fail.
    pub fn fail_next(&self, n: u64) {
        self.lock().fail_next = n;
    }
}

/// The backend over [`MemoryMaps`].
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    maps: MemoryMaps,
}

impl MemoryBackend {
    /// A backend writing into `maps`.
    pub fn new(maps: MemoryMaps) -> Self {
        MemoryBackend { maps }
    }
}

impl MapBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn publish_groups(&mut self, groups: &[CpuGroup]) -> Result<(), ActorError> {
        self.maps.lock().groups = groups.to_vec();
        Ok(())
    }

    fn enforce(&mut self, cgroup: &CgroupRef, group: &CpuGroup) -> Result<Enforcement, ActorError> {
        let mut maps = self.maps.lock();
        if maps.fail_next > 0 {
            maps.fail_next -= 1;
            return Err(ActorError::MapBackend {
                backend: "memory",
                operation: format!("enforce cgroup {} onto group {}", cgroup.id, group.id),
                source: "injected failure".into(),
            });
        }
        maps.entries.insert(cgroup.id, group.id);
        maps.commits += 1;
        Ok(Enforcement {
            cgroup: cgroup.id,
            group: group.id,
            cpus: group.cpus.clone(),
            sched_ext: false,
            join: Vec::new(),
            commit_time: Duration::ZERO,
            sweep_time: Duration::ZERO,
            handled_at: None,
        })
    }

    fn remove(&mut self, cgroup: &CgroupRef) -> Result<bool, ActorError> {
        Ok(self.maps.lock().entries.remove(&cgroup.id).is_some())
    }

    fn entries(&self) -> Result<Vec<(CgroupId, GroupId)>, ActorError> {
        Ok(self
            .maps
            .lock()
            .entries
            .iter()
            .map(|(c, g)| (*c, *g))
            .collect())
    }
}
