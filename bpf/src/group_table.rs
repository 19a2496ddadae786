//! The group table: group id → the CPUs a group owns and how its tasks are scheduled.
//!
//! User space writes plain bitmaps here; it cannot write the `bpf_cpumask` kptrs the scheduler's
//! hot paths use. After writing a slot, [`GroupTable::publish`] runs the attached scheduler's
//! pinned `corral_build_masks` program, which builds the cpumask from the bitmap, and then bumps
//! the global generation. One slot write is a plain array update: a BPF reader of the table
//! could see it half written, which is why only `corral_build_masks` reads the table.

use std::collections::BTreeSet;
use std::sync::Arc;

use libbpf_rs::{MapCore, MapFlags};

use crate::bpf_intf::{
    corral_consts_CORRAL_CPUMASK_WORDS, corral_consts_CORRAL_HOST_GROUP,
    corral_consts_CORRAL_MAX_CPUS, corral_consts_CORRAL_MAX_GROUPS, corral_group,
    corral_order_CORRAL_ORDER_FIFO, corral_order_CORRAL_ORDER_VTIME,
};
use crate::cpus::{online_cpus, possible_cpus};
use crate::error::{Error, Result};
use crate::pinned::{BuildReport, Shared, GROUP_MAP};
use crate::raw;
use crate::GroupId;

/// How a group's queue orders its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupOrder {
    /// First in, first out.
    #[default]
    Fifo,
    /// Weighted virtual time: lower-nice tasks get proportionally more CPU.
    Vtime,
}

impl GroupOrder {
    fn to_raw(self) -> u32 {
        match self {
            GroupOrder::Fifo => corral_order_CORRAL_ORDER_FIFO,
            GroupOrder::Vtime => corral_order_CORRAL_ORDER_VTIME,
        }
    }

    fn from_raw(raw: u32) -> GroupOrder {
        if raw == corral_order_CORRAL_ORDER_VTIME {
            GroupOrder::Vtime
        } else {
            GroupOrder::Fifo
        }
    }
}

/// What a CPU group is: its CPUs and scheduling parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// The CPUs the group owns (order and duplicates do not matter).
    pub cpus: Vec<u32>,
    /// Time slice of the group's tasks, in ns; must be > 0.
    pub slice_ns: u64,
    /// Order of the group's queue.
    pub order: GroupOrder,
    /// Whether CPUs outside the group may run the group's queued tasks when they are idle.
    pub borrow: bool,
}

impl GroupSpec {
    /// A FIFO group without borrowing.
    pub fn new(cpus: impl IntoIterator<Item = u32>, slice_ns: u64) -> GroupSpec {
        GroupSpec {
            cpus: cpus.into_iter().collect(),
            slice_ns,
            order: GroupOrder::Fifo,
            borrow: false,
        }
    }
}

/// A group as it sits in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedGroup {
    /// The group, with its CPUs sorted.
    pub spec: GroupSpec,
    /// How many times the slot was written.
    pub generation: u64,
}

/// The outcome of a publish or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publication {
    /// The slot's generation after the write.
    pub group_generation: u64,
    /// The global generation after the write.
    pub generation: u64,
    /// The attached scheduler's rebuild, or `None` when no scheduler is attached (the next one
    /// builds every group when it starts).
    pub rebuilt: Option<BuildReport>,
}

/// Typed access to the pinned group table. Obtain it from [`crate::PinnedMaps::groups`].
#[derive(Debug)]
pub struct GroupTable {
    shared: Arc<Shared>,
}

/// The host group's slot in the group table and the statistics map (`CORRAL_HOST_GROUP`): the
/// group of every task whose cgroup has no mapping. Publish it with [`GroupTable::publish_host`];
/// while the slot is empty the scheduler lets host tasks run on every CPU.
pub const HOST_GROUP: GroupId = corral_consts_CORRAL_HOST_GROUP;

fn check_group(group: GroupId) -> Result<()> {
    if group >= corral_consts_CORRAL_MAX_GROUPS {
        return Err(Error::GroupOutOfRange {
            group,
            max: corral_consts_CORRAL_MAX_GROUPS,
        });
    }
    Ok(())
}

impl GroupTable {
    pub(crate) fn new(shared: Arc<Shared>) -> GroupTable {
        GroupTable { shared }
    }

    /// Number of group slots (`CORRAL_MAX_GROUPS`; the host group's slot comes on top).
    pub fn capacity(&self) -> u32 {
        corral_consts_CORRAL_MAX_GROUPS
    }

    /// Checks `spec` for group `group` against the table and this machine's CPUs, writing
    /// nothing: group id in range, cpumask non-empty, every CPU within the bitmap, possible and
    /// online, slice > 0.
    pub fn validate(group: GroupId, spec: &GroupSpec) -> Result<()> {
        check_group(group)?;
        Self::validate_slot(group, spec)
    }

    fn validate_slot(group: GroupId, spec: &GroupSpec) -> Result<()> {
        if spec.cpus.is_empty() {
            return Err(Error::EmptyCpuMask { group });
        }
        if spec.slice_ns == 0 {
            return Err(Error::ZeroSlice { group });
        }
        let possible = possible_cpus()?;
        let online = online_cpus()?;
        for &cpu in &spec.cpus {
            if cpu >= corral_consts_CORRAL_MAX_CPUS {
                return Err(Error::CpuBeyondBitmap {
                    group,
                    cpu,
                    limit: corral_consts_CORRAL_MAX_CPUS,
                });
            }
            if !possible.contains(cpu) {
                return Err(Error::CpuNotPossible {
                    group,
                    cpu,
                    possible: possible.text.clone(),
                });
            }
            if !online.contains(cpu) {
                return Err(Error::CpuOffline {
                    group,
                    cpu,
                    online: online.text.clone(),
                });
            }
        }
        Ok(())
    }

    /// Validates `spec` and writes it into slot `group` (one array update), then has the
    /// attached scheduler rebuild the group's cpumask and bumps the global generation.
    pub fn publish(&self, group: GroupId, spec: &GroupSpec) -> Result<Publication> {
        Self::validate(group, spec)?;
        self.write_spec(group, spec)
    }

    /// Validates and publishes the host group: the CPUs that run tasks of unmapped cgroups
    /// (the worker, system daemons, kernel threads not bound to a CPU) and their time slice.
    /// Its queue is always in weighted vtime order and never lends; `order` and `borrow` of
    /// `spec` are ignored.
    pub fn publish_host(&self, spec: &GroupSpec) -> Result<Publication> {
        Self::validate_slot(HOST_GROUP, spec)?;
        self.write_spec(HOST_GROUP, spec)
    }

    /// Empties the host slot: host tasks may then run on every CPU.
    pub fn delete_host(&self) -> Result<Publication> {
        self.write(HOST_GROUP, raw::zeroed())
    }

    /// The published host group, `None` when the slot is empty (host tasks run anywhere).
    pub fn host(&self) -> Result<Option<PublishedGroup>> {
        self.get_slot(HOST_GROUP)
    }

    fn write_spec(&self, group: GroupId, spec: &GroupSpec) -> Result<Publication> {
        let cpus: BTreeSet<u32> = spec.cpus.iter().copied().collect();
        let mut entry: corral_group = raw::zeroed();
        for &cpu in &cpus {
            entry.cpus[(cpu / 64) as usize] |= 1u64 << (cpu % 64);
        }
        entry.nr_cpus = cpus.len() as u32;
        entry.order = spec.order.to_raw();
        entry.slice_ns = spec.slice_ns;
        entry.borrow = spec.borrow.into();
        self.write(group, entry)
    }

    /// Empties slot `group`: tasks mapped to it fall back to the fallback queue, which every CPU
    /// serves, until they are mapped elsewhere.
    pub fn delete(&self, group: GroupId) -> Result<Publication> {
        check_group(group)?;
        self.write(group, raw::zeroed())
    }

    fn write(&self, group: GroupId, mut entry: corral_group) -> Result<Publication> {
        let previous = self.read_raw(group)?;
        entry.generation = previous.generation.wrapping_add(1);
        self.shared
            .groups
            .update(&group.to_ne_bytes(), raw::bytes_of(&entry), MapFlags::ANY)
            .map_err(|e| Error::map("update", GROUP_MAP, e))?;
        let rebuilt = self.shared.rebuild_groups(group, 1)?;
        let generation = self.shared.bump_generation()?;
        Ok(Publication {
            group_generation: entry.generation,
            generation,
            rebuilt,
        })
    }

    fn read_raw(&self, group: GroupId) -> Result<corral_group> {
        let bytes = self
            .shared
            .groups
            .lookup(&group.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::map("lookup", GROUP_MAP, e))?
            .unwrap_or_default();
        Ok(raw::read(&bytes).unwrap_or_else(raw::zeroed))
    }

    /// The group in slot `group`, or `None` when the slot is empty.
    pub fn get(&self, group: GroupId) -> Result<Option<PublishedGroup>> {
        check_group(group)?;
        self.get_slot(group)
    }

    fn get_slot(&self, group: GroupId) -> Result<Option<PublishedGroup>> {
        let entry = self.read_raw(group)?;
        if entry.nr_cpus == 0 {
            return Ok(None);
        }
        let mut cpus = Vec::with_capacity(entry.nr_cpus as usize);
        for word in 0..corral_consts_CORRAL_CPUMASK_WORDS {
            let bits = entry.cpus[word as usize];
            for bit in 0..64 {
                if bits & (1u64 << bit) != 0 {
                    cpus.push(word * 64 + bit);
                }
            }
        }
        Ok(Some(PublishedGroup {
            spec: GroupSpec {
                cpus,
                slice_ns: entry.slice_ns,
                order: GroupOrder::from_raw(entry.order),
                borrow: entry.borrow != 0,
            },
            generation: entry.generation,
        }))
    }

    /// Every published group, by id.
    pub fn entries(&self) -> Result<Vec<(GroupId, PublishedGroup)>> {
        let mut out = Vec::new();
        for group in 0..corral_consts_CORRAL_MAX_GROUPS {
            if let Some(g) = self.get(group)? {
                out.push((group, g));
            }
        }
        Ok(out)
    }

    /// Whether slot `group` holds a group.
    pub fn is_published(&self, group: GroupId) -> Result<bool> {
        check_group(group)?;
        Ok(self.read_raw(group)?.nr_cpus != 0)
    }

    /// Has the attached scheduler rebuild every group's cpumask from the table; `None` when no
    /// scheduler is attached.
    pub fn rebuild_all(&self) -> Result<Option<BuildReport>> {
        self.shared
            .rebuild_groups(0, corral_consts_CORRAL_MAX_GROUPS + 1)
    }
}
