//! The `bpf` map-writer backend and the real scheduler driver, over `corral-bpf`.
//!
//! - [`BpfMapBackend`]: an enforcement is one update of the pinned cgroup map (cgroup id →
//!   group). In full switch mode (the default) that is all: the scheduler places every task by
//!   its cgroup at its next enqueue. In partial mode the threads of the cgroup and its
//!   descendants are then switched to `SCHED_EXT`; processes the `local` backend starts later
//!   switch themselves (the acknowledgement says `sched_ext`).
//!   The pinned maps are the source of truth the map writer's mirror is rebuilt from; they
//!   outlive the scheduler and the runtime.
//! - [`BpfSchedulerDriver`]: open → configure → load → attach through `corral_bpf::Scheduler`
//!   on the same pins, with the kernel's exit information for the BPF loader to watch.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use corral_actors::bpf_loader::{SchedulerDriver, SchedulerExit};
use corral_actors::config::{CpuGroup, GroupId, GroupOrder, HostGroup};
use corral_actors::container_backend::{CgroupId, CgroupRef, Enforcement};
use corral_actors::error::BoxError;
use corral_actors::map_backend::MapBackend;
use corral_actors::ActorError;
use corral_bpf::{
    set_cgroup_tree_sched_ext, CgroupFlags, GroupSpec, PinnedMaps, SchedMode, Scheduler,
    SchedulerConfig,
};

use crate::config::EnforcementConfig;

fn bpf_error(operation: String) -> impl FnOnce(corral_bpf::Error) -> ActorError {
    move |e| ActorError::MapBackend {
        backend: "bpf",
        operation,
        source: Box::new(e),
    }
}

/// A validated group as the scheduler's group table takes it.
pub fn group_spec(g: &CpuGroup) -> GroupSpec {
    GroupSpec {
        cpus: g.cpus.clone(),
        slice_ns: g.slice_ns,
        order: match g.order {
            GroupOrder::Fifo => corral_bpf::GroupOrder::Fifo,
            GroupOrder::Vtime => corral_bpf::GroupOrder::Vtime,
        },
        borrow: g.borrow,
    }
}

/// The host group as the scheduler's group table takes it.
pub fn host_spec(h: &HostGroup) -> GroupSpec {
    GroupSpec::new(h.cpus.iter().copied(), h.slice_ns)
}

/// Enforcement through the scheduler's pinned maps.
#[derive(Debug)]
pub struct BpfMapBackend {
    maps: PinnedMaps,
    /// Full switch needs the map update only; partial mode also switches threads' policy.
    mode: SchedMode,
    published: Vec<GroupId>,
    /// Whether this backend published the host group.
    published_host: bool,
    /// Cgroups whose threads this backend switched to `SCHED_EXT`, to switch back on removal.
    switched: BTreeMap<CgroupId, PathBuf>,
    /// Whether `close` unpublishes the groups: only when this runtime also runs the scheduler.
    owns_groups: bool,
    /// The group each cgroup was last mapped to by this backend, so that only a change of
    /// group kicks the cgroup's running tasks (see `kick`).
    last: HashMap<CgroupId, u32>,
}

impl BpfMapBackend {
    /// Opens (or creates and pins) the maps under `pin_dir`.
    pub fn open(pin_dir: impl Into<PathBuf>) -> Result<Self, ActorError> {
        let pin_dir = pin_dir.into();
        let maps = PinnedMaps::open_or_create(&pin_dir).map_err(bpf_error(format!(
            "open or create the pinned maps under {} (is bpffs mounted there, and are we root?)",
            pin_dir.display()
        )))?;
        Ok(BpfMapBackend {
            maps,
            mode: SchedMode::Full,
            published: Vec::new(),
            published_host: false,
            switched: BTreeMap::new(),
            owns_groups: true,
            last: HashMap::new(),
        })
    }

    /// Sets the scheduler mode the enforcements are for (default: full switch).
    pub fn with_mode(mut self, mode: SchedMode) -> Self {
        self.mode = mode;
        self
    }

    /// Leaves the groups published at `close`, for a runtime that writes maps a separately run
    /// scheduler (`corral sched`) reads.
    pub fn keep_groups_on_close(mut self) -> Self {
        self.owns_groups = false;
        self
    }

    /// The pinned maps (statistics, inspection).
    pub fn maps(&self) -> &PinnedMaps {
        &self.maps
    }
}

impl BpfMapBackend {
    /// Moves `cgroup`'s running tasks to `group` now (the committed mapping moves them at
    /// their next tick anyway, so a failure is only logged).
    fn kick(&self, cgroup: CgroupId, group: u32) {
        if let Err(e) = self.maps.cgroups().kick_moved(cgroup.0, group) {
            tracing::warn!(cgroup = cgroup.0, error = %e, "cannot preempt the remapped cgroup's running tasks; they move at their next tick");
        }
    }
}

impl MapBackend for BpfMapBackend {
    fn name(&self) -> &'static str {
        "bpf"
    }

    fn publish_groups(&mut self, groups: &[CpuGroup]) -> Result<(), ActorError> {
        for g in groups {
            let spec = group_spec(g);
            self.maps
                .groups()
                .publish(g.id.0, &spec)
                .map_err(bpf_error(format!(
                    "publish group {} `{}` on CPUs {}",
                    g.id,
                    g.name,
                    g.cpu_list()
                )))?;
            if !self.published.contains(&g.id) {
                self.published.push(g.id);
            }
        }
        Ok(())
    }

    fn publish_host(&mut self, host: &HostGroup) -> Result<(), ActorError> {
        self.maps
            .groups()
            .publish_host(&host_spec(host))
            .map_err(bpf_error(format!(
                "publish the host group on CPUs {}",
                host.cpu_list()
            )))?;
        self.published_host = true;
        Ok(())
    }

    fn enforce(&mut self, cgroup: &CgroupRef, group: &CpuGroup) -> Result<Enforcement, ActorError> {
        let partial = self.mode == SchedMode::Partial;
        // Only partial mode can fail after the update (the sweep), so only it reads the entry
        // to roll back to; full switch commits with the one update and nothing else.
        let previous = if partial {
            self.maps
                .cgroups()
                .get(cgroup.id.0)
                .map_err(bpf_error(format!(
                    "read the mapping of cgroup {}",
                    cgroup.id
                )))?
        } else {
            None
        };
        self.maps
            .cgroups()
            .insert(cgroup.id.0, group.id.0, CgroupFlags::NONE)
            .map_err(bpf_error(format!(
                "map cgroup {} to group {}",
                cgroup.id, group.id
            )))?;
        if self.last.insert(cgroup.id, group.id.0) != Some(group.id.0) {
            self.kick(cgroup.id, group.id.0);
        }
        let swept = std::time::Instant::now();
        if let Some(path) = cgroup.path.as_ref().filter(|_| partial) {
            if let Err(e) = set_cgroup_tree_sched_ext(path, true, |_| false) {
                // One enforcement, whole or not at all: put the map back as it was.
                let restored = match previous {
                    Some(p) => self.maps.cgroups().insert(cgroup.id.0, p.group, p.flags),
                    None => self.maps.cgroups().remove(cgroup.id.0).map(|_| ()),
                };
                if let Err(r) = restored {
                    tracing::error!(cgroup = cgroup.id.0, error = %r, "cannot roll back a failed enforcement");
                }
                return Err(bpf_error(format!(
                    "switch the threads of {} to SCHED_EXT (the mapping was rolled back)",
                    path.display()
                ))(e));
            }
            self.switched.insert(cgroup.id, path.clone());
        }
        Ok(Enforcement {
            cgroup: cgroup.id,
            group: group.id,
            cpus: group.cpus.clone(),
            sched_ext: partial,
            join: Vec::new(),
            commit_time: Duration::ZERO,
            sweep_time: if partial {
                swept.elapsed()
            } else {
                Duration::ZERO
            },
            handled_at: None,
        })
    }

    fn remove(&mut self, cgroup: &CgroupRef) -> Result<bool, ActorError> {
        // Full switch never changed a policy, so there is nothing to switch back.
        let path = match self.mode {
            SchedMode::Partial => cgroup.path.clone(),
            SchedMode::Full => None,
        }
        .or_else(|| self.switched.get(&cgroup.id).cloned());
        self.switched.remove(&cgroup.id);
        if let Some(path) = path.filter(|p| p.exists()) {
            set_cgroup_tree_sched_ext(&path, false, |_| false).map_err(bpf_error(format!(
                "switch the threads of {} back to SCHED_NORMAL",
                path.display()
            )))?;
        }
        let removed = self
            .maps
            .cgroups()
            .remove(cgroup.id.0)
            .map_err(bpf_error(format!("unmap cgroup {}", cgroup.id)))?;
        if self.last.remove(&cgroup.id).is_some() || removed {
            self.kick(cgroup.id, corral_bpf::HOST_GROUP);
        }
        Ok(removed)
    }

    fn entries(&self) -> Result<Vec<(CgroupId, GroupId)>, ActorError> {
        Ok(self
            .maps
            .cgroups()
            .entries()
            .map_err(bpf_error("read the cgroup map".to_string()))?
            .into_iter()
            .map(|(c, e)| (CgroupId(c), GroupId(e.group)))
            .collect())
    }

    fn close(&mut self) -> Result<(), ActorError> {
        if !self.owns_groups {
            // A scheduler run by someone else (`corral sched`) keeps serving these groups.
            self.published.clear();
            self.published_host = false;
            return Ok(());
        }
        for g in std::mem::take(&mut self.published) {
            self.maps
                .groups()
                .delete(g.0)
                .map_err(bpf_error(format!("delete group {g}")))?;
        }
        if std::mem::take(&mut self.published_host) {
            self.maps
                .groups()
                .delete_host()
                .map_err(bpf_error("delete the host group".to_string()))?;
        }
        Ok(())
    }
}

/// Loads and attaches `corral_bpf::Scheduler` on the runtime's pins.
#[derive(Debug)]
pub struct BpfSchedulerDriver {
    config: SchedulerConfig,
    scheduler: Option<Scheduler>,
}

impl BpfSchedulerDriver {
    /// A driver for the maps pinned under `pin_dir`, loading the scheduler in `mode`.
    pub fn new(pin_dir: impl Into<PathBuf>, mode: SchedMode) -> Self {
        BpfSchedulerDriver {
            config: SchedulerConfig {
                pin_dir: pin_dir.into(),
                mode,
                ..SchedulerConfig::default()
            },
            scheduler: None,
        }
    }
}

impl SchedulerDriver for BpfSchedulerDriver {
    fn attach(&mut self) -> Result<(), BoxError> {
        if let Some(mut old) = self.scheduler.take() {
            old.detach();
        }
        self.scheduler = Some(Scheduler::start(&self.config)?);
        Ok(())
    }

    fn poll_exit(&mut self) -> Option<SchedulerExit> {
        let exit = self.scheduler.as_ref()?.exit_info()?;
        Some(SchedulerExit {
            kind: format!("{:?}", exit.kind),
            reason: if exit.message.is_empty() {
                exit.reason
            } else {
                format!("{} ({})", exit.reason, exit.message)
            },
        })
    }

    fn is_attached(&self) -> bool {
        self.scheduler
            .as_ref()
            .is_some_and(|s| s.exit_info().is_none())
    }

    fn detach(&mut self) -> Result<(), BoxError> {
        if let Some(mut s) = self.scheduler.take() {
            s.detach();
        }
        Ok(())
    }
}

/// The `bpf` map backend and, when the runtime loads the scheduler, its driver.
pub(crate) type OpenedBpf = (Box<dyn MapBackend>, Option<Box<dyn SchedulerDriver>>);

/// Opens the `bpf` backend and, when configured, the scheduler driver.
pub(crate) fn open(config: &EnforcementConfig) -> Result<OpenedBpf, ActorError> {
    let mode = config.mode.sched_mode();
    let mut backend = BpfMapBackend::open(&config.pin_dir)?.with_mode(mode);
    if !config.load_scheduler {
        backend = backend.keep_groups_on_close();
    }
    let driver: Option<Box<dyn SchedulerDriver>> = config.load_scheduler.then(|| {
        Box::new(BpfSchedulerDriver::new(&config.pin_dir, mode)) as Box<dyn SchedulerDriver>
    });
    Ok((Box::new(backend), driver))
}
