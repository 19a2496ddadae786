//! The cgroup map: cgroup id → group. Inserting or replacing one cgroup's entry is a single
//! `bpf_map_update_elem` on a hash map, which the kernel applies atomically (a concurrent BPF
//! lookup sees the old entry or the new one, never a mix): that update is the enforcement step.

use std::sync::Arc;

use libbpf_rs::{ErrorKind, MapCore, MapFlags};

use crate::bpf_intf::{
    corral_cgroup, corral_cgroup_flags_CORRAL_CGROUP_KNOWN_FLAGS,
    corral_cgroup_flags_CORRAL_CGROUP_NO_INHERIT, corral_consts_CORRAL_MAX_GROUPS,
};
use crate::error::{Error, Result};
use crate::pinned::{Shared, CGROUP_MAP};
use crate::raw;
use crate::{CgroupId, GroupId};

/// Flags of a cgroup mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CgroupFlags(u32);

impl CgroupFlags {
    /// No flag: the mapping applies to the cgroup and its descendants.
    pub const NONE: CgroupFlags = CgroupFlags(0);
    /// The mapping applies to tasks directly in the cgroup only, not to its descendants.
    pub const NO_INHERIT: CgroupFlags = CgroupFlags(corral_cgroup_flags_CORRAL_CGROUP_NO_INHERIT);

    /// Flags from raw bits, unknown bits kept (insert refuses them).
    pub const fn from_bits_retain(bits: u32) -> CgroupFlags {
        CgroupFlags(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: CgroupFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One cgroup's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupEntry {
    /// The group the cgroup's tasks run on.
    pub group: GroupId,
    /// Its flags.
    pub flags: CgroupFlags,
}

/// Typed access to the pinned cgroup map. Obtain it from [`crate::PinnedMaps::cgroups`].
#[derive(Debug)]
pub struct CgroupMap {
    shared: Arc<Shared>,
}

impl CgroupMap {
    pub(crate) fn new(shared: Arc<Shared>) -> CgroupMap {
        CgroupMap { shared }
    }

    /// Number of cgroups the map can hold.
    pub fn capacity(&self) -> u32 {
        self.shared.cgroups.max_entries()
    }

    /// Maps `cgroup` to `group`, replacing any previous mapping, in one map update. Refuses,
    /// writing nothing: cgroup id 0, a group id out of range, a group slot that is not
    /// published, unknown flag bits. Then bumps the global generation, so tasks of
    /// descendant cgroups that cached an ancestor's mapping look again.
    pub fn insert(&self, cgroup: CgroupId, group: GroupId, flags: CgroupFlags) -> Result<()> {
        if cgroup == 0 {
            return Err(Error::InvalidCgroupId { cgroup });
        }
        if group >= corral_consts_CORRAL_MAX_GROUPS {
            return Err(Error::GroupOutOfRange {
                group,
                max: corral_consts_CORRAL_MAX_GROUPS,
            });
        }
        let unknown = flags.bits() & !corral_cgroup_flags_CORRAL_CGROUP_KNOWN_FLAGS;
        if unknown != 0 {
            return Err(Error::UnknownCgroupFlags {
                cgroup,
                flags: flags.bits(),
                unknown,
            });
        }
        let groups = crate::group_table::GroupTable::new(self.shared.clone());
        if !groups.is_published(group)? {
            return Err(Error::GroupNotPublished { cgroup, group });
        }
        let value = corral_cgroup {
            group_id: group,
            flags: flags.bits(),
        };
        self.shared
            .cgroups
            .update(&cgroup.to_ne_bytes(), raw::bytes_of(&value), MapFlags::ANY)
            .map_err(|e| match e.kind() {
                ErrorKind::TooBig => Error::CgroupMapFull {
                    cgroup,
                    capacity: self.capacity(),
                },
                _ => Error::map("update", CGROUP_MAP, e),
            })?;
        self.shared.bump_generation()?;
        Ok(())
    }

    /// Unmaps `cgroup` in one map delete; returns whether it was mapped. Its tasks go to the
    /// fallback queue (or an ancestor's group) at their next enqueue.
    pub fn remove(&self, cgroup: CgroupId) -> Result<bool> {
        match self.shared.cgroups.delete(&cgroup.to_ne_bytes()) {
            Ok(()) => {
                self.shared.bump_generation()?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::map("delete", CGROUP_MAP, e)),
        }
    }

    /// After a change of `cgroup`'s mapping (now `group`, or [`HOST_GROUP`](crate::HOST_GROUP)
    /// once unmapped): preempts the CPUs running one of its tasks for another group, through
    /// the attached scheduler's pinned `corral_kick_moved`, so that they are placed again now
    /// rather than at their next tick. Answers how many CPUs were kicked, or `None` when no
    /// scheduler is attached (nothing runs placed by the map then).
    pub fn kick_moved(&self, cgroup: CgroupId, group: GroupId) -> Result<Option<u32>> {
        if cgroup == 0 {
            return Err(Error::InvalidCgroupId { cgroup });
        }
        self.shared.kick_moved(cgroup, group)
    }

    /// The mapping of `cgroup`, if any.
    pub fn get(&self, cgroup: CgroupId) -> Result<Option<CgroupEntry>> {
        let bytes = self
            .shared
            .cgroups
            .lookup(&cgroup.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::map("lookup", CGROUP_MAP, e))?;
        Ok(bytes
            .and_then(|b| raw::read::<corral_cgroup>(&b))
            .map(|v| CgroupEntry {
                group: v.group_id,
                flags: CgroupFlags(v.flags),
            }))
    }

    /// Every mapping. Not a snapshot: entries changed during the walk may be missed or seen
    /// twice (the kernel's key iteration is not transactional).
    pub fn entries(&self) -> Result<Vec<(CgroupId, CgroupEntry)>> {
        let mut out = Vec::new();
        for key in self.shared.cgroups.keys() {
            let Some(id) = raw::read::<u64>(&key) else {
                continue;
            };
            if let Some(entry) = self.get(id)? {
                out.push((id, entry));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out.dedup_by_key(|(id, _)| *id);
        Ok(out)
    }
}
