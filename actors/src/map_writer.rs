//! The MapWriter actor: the only writer of enforcement state. It commits each enforcement as one
//! atomic operation on its backend (`bpf`, `cpuset` or `memory`) and keeps a mirror of what it
//! wrote.
//!
//! - **State**: the backend, the group layout, and the mirror (cgroup → group). The backend is
//!   the source of truth (for `bpf`, the pinned maps, which outlive both this actor and the
//!   scheduler); `started()` and `restarting()` rebuild the mirror from it.
//! - **Messages**: [`PublishGroups`], [`EnforceGroup`], [`RemoveEnforcement`],
//!   [`ListEnforcements`], [`ClearEnforcements`].
//! - **Senders**: the container manager (`EnforceGroup` on every acquisition,
//!   `RemoveEnforcement` before destroying a container), the runtime (`PublishGroups` at start,
//!   `ClearEnforcements` at shutdown, `ListEnforcements` for inspection).
//!
//! What is committed is also published in a [`Committed`] view (cgroup → group, a `DashMap`
//! written only here, next to the mirror), so that the invocation's warm lane can check without
//! a message that a warm container's enforcement still stands.
//!
//! All handlers are synchronous: a BPF map update costs about a microsecond. A `cpuset` write
//! can cost milliseconds; that is the fallback's known price and what the benchmarks measure.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Context, Handler, Supervised};

use crate::config::{CpuGroup, GroupId};
use crate::container_backend::{CgroupId, CgroupRef, Enforcement};
use crate::error::ActorError;
use crate::map_backend::MapBackend;
use crate::messages::{
    ClearEnforcements, EnforceGroup, ListEnforcements, PublishGroups, RemoveEnforcement,
};
use crate::supervision::{guard, points, Failpoints};
use crate::telemetry::{ActorKind, JournalEvent, Telemetry};

const NAME: &str = "map writer";

/// What the map writer has committed (cgroup → group), readable from any thread without a
/// message. Only the map writer writes it, always together with its mirror; a reader sees each
/// cgroup's last committed group, or none while the writer rebuilds after a restart.
#[derive(Debug, Default)]
pub struct Committed(dashmap::DashMap<CgroupId, GroupId>);

impl Committed {
    /// The group `cgroup` is committed onto, if any.
    pub fn group_of(&self, cgroup: CgroupId) -> Option<GroupId> {
        self.0.get(&cgroup).map(|g| *g)
    }

    /// Committed entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No entry is committed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The only writer of enforcement state.
#[derive(Debug)]
pub struct MapWriter {
    backend: Box<dyn MapBackend>,
    groups: Vec<CpuGroup>,
    mirror: BTreeMap<CgroupId, GroupId>,
    /// The mirror, published for readers on other threads.
    committed: Arc<Committed>,
    /// The cgroups this runtime enforced, with their paths: what it removes at shutdown. Kept
    /// across restarts (the mirror is rebuilt from the backend; this is not the backend's to
    /// know, since other tools may write the same shared maps).
    paths: BTreeMap<CgroupId, CgroupRef>,
    telemetry: Arc<Telemetry>,
    failpoints: Arc<Failpoints>,
}

impl MapWriter {
    /// A writer over `backend` for `groups`.
    pub fn new(
        backend: Box<dyn MapBackend>,
        groups: Vec<CpuGroup>,
        telemetry: Arc<Telemetry>,
        failpoints: Arc<Failpoints>,
    ) -> Self {
        MapWriter {
            backend,
            groups,
            mirror: BTreeMap::new(),
            committed: Arc::new(Committed::default()),
            paths: BTreeMap::new(),
            telemetry,
            failpoints,
        }
    }

    /// The committed view, shared (the invocation's warm lane reads it).
    pub fn committed(&self) -> Arc<Committed> {
        Arc::clone(&self.committed)
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
}

impl MapWriter {
    /// Replaces the mirror with the backend's entries.
    fn rebuild_mirror(&mut self) {
        match self.backend.entries() {
            Ok(entries) => {
                self.mirror = entries.into_iter().collect();
                self.committed.0.clear();
                for (cgroup, group) in &self.mirror {
                    self.committed.0.insert(*cgroup, *group);
                }
                self.paths.retain(|id, _| self.mirror.contains_key(id));
                self.telemetry
                    .enforcement_entries
                    .store(self.mirror.len(), Ordering::Relaxed);
                tracing::debug!(
                    entries = self.mirror.len(),
                    backend = self.backend.name(),
                    "mirror rebuilt"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read enforcement entries back to rebuild the mirror")
            }
        }
    }

    fn group(&self, id: GroupId) -> Result<&CpuGroup, ActorError> {
        self.groups.get(id.0 as usize).ok_or_else(|| {
            ActorError::invalid(
                "group",
                id,
                format!("no such group; {} groups are configured", self.groups.len()),
            )
        })
    }
}

impl Actor for MapWriter {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        self.rebuild_mirror();
    }
}

impl Supervised for MapWriter {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.telemetry.count_restart(ActorKind::MapWriter);
        self.mirror.clear();
        self.committed.0.clear();
    }
}

/// Publishes the group layout.
impl Handler<PublishGroups> for MapWriter {
    type Result = Result<(), ActorError>;

    fn handle(&mut self, msg: PublishGroups, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "PublishGroups", ctx, || {
            self.backend.publish_groups(&msg.groups)?;
            self.backend.publish_host(&msg.host)?;
            self.groups = msg.groups;
            Ok(())
        })
    }
}

/// Commits one enforcement and acknowledges it.
impl Handler<EnforceGroup> for MapWriter {
    type Result = Result<Enforcement, ActorError>;

    fn handle(&mut self, msg: EnforceGroup, ctx: &mut Context<Self>) -> Self::Result {
        let handled_at = Instant::now();
        guard::<Self, _, _>(NAME, "EnforceGroup", ctx, || {
            self.failpoints.hit(points::ENFORCE_GROUP);
            let group = self.group(msg.group)?.clone();
            // Claim the cgroup before writing, so a panic between the backend write and the
            // mirror update still leaves it ours to remove at shutdown.
            let claimed = self
                .paths
                .insert(msg.cgroup.id, msg.cgroup.clone())
                .is_none();
            let start = Instant::now();
            let mut enforcement = match self.backend.enforce(&msg.cgroup, &group) {
                Ok(e) => e,
                Err(e) => {
                    if claimed {
                        self.paths.remove(&msg.cgroup.id);
                    }
                    return Err(e);
                }
            };
            enforcement.commit_time = start.elapsed();
            enforcement.handled_at = Some(handled_at);
            self.mirror.insert(msg.cgroup.id, msg.group);
            self.committed.0.insert(msg.cgroup.id, msg.group);
            self.telemetry
                .enforcements_committed
                .fetch_add(1, Ordering::Relaxed);
            self.telemetry
                .enforcement_entries
                .store(self.mirror.len(), Ordering::Relaxed);
            self.telemetry.record(JournalEvent::EnforcementCommitted {
                cgroup: msg.cgroup.id.0,
                group: msg.group,
            });
            Ok(enforcement)
        })
    }
}

/// Removes one enforcement.
impl Handler<RemoveEnforcement> for MapWriter {
    type Result = Result<bool, ActorError>;

    fn handle(&mut self, msg: RemoveEnforcement, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "RemoveEnforcement", ctx, || {
            // Unpublished first: from here on no warm lane hands the container out.
            self.committed.0.remove(&msg.cgroup.id);
            let removed = match self.backend.remove(&msg.cgroup) {
                Ok(removed) => removed,
                Err(e) => {
                    // Still committed: publish it again, as the mirror still has it.
                    if let Some(group) = self.mirror.get(&msg.cgroup.id) {
                        self.committed.0.insert(msg.cgroup.id, *group);
                    }
                    return Err(e);
                }
            };
            self.mirror.remove(&msg.cgroup.id);
            self.paths.remove(&msg.cgroup.id);
            self.telemetry
                .enforcement_entries
                .store(self.mirror.len(), Ordering::Relaxed);
            Ok(removed)
        })
    }
}

/// Lists the mirror.
impl Handler<ListEnforcements> for MapWriter {
    type Result = Result<Vec<(CgroupId, GroupId)>, ActorError>;

    fn handle(&mut self, _msg: ListEnforcements, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "ListEnforcements", ctx, || {
            Ok(self.mirror.iter().map(|(c, g)| (*c, *g)).collect())
        })
    }
}

/// Removes every enforcement this runtime made (not entries others wrote into shared maps, such
/// as `corral map`'s) and closes the backend.
impl Handler<ClearEnforcements> for MapWriter {
    type Result = Result<usize, ActorError>;

    fn handle(&mut self, _msg: ClearEnforcements, ctx: &mut Context<Self>) -> Self::Result {
        guard::<Self, _, _>(NAME, "ClearEnforcements", ctx, || {
            let owned: Vec<CgroupRef> = self.paths.values().cloned().collect();
            let mut removed = 0;
            for cgroup in owned {
                let id = cgroup.id;
                self.committed.0.remove(&id);
                if self.backend.remove(&cgroup)? {
                    removed += 1;
                }
                self.mirror.remove(&id);
                self.paths.remove(&id);
            }
            self.backend.close()?;
            self.telemetry
                .enforcement_entries
                .store(self.mirror.len(), Ordering::Relaxed);
            Ok(removed)
        })
    }
}

/// Stops the actor; its supervisor restarts it (`Supervised::restarting`, then `started`).
impl Handler<crate::messages::Restart> for MapWriter {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::Restart, ctx: &mut Context<Self>) {
        tracing::info!(actor = NAME, "restart requested");
        actix::ActorContext::stop(ctx);
    }
}
