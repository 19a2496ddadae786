//! Where the map writer commits enforcement state: the [`MapBackend`] trait and its `memory` and
//! `cpuset` implementations. (The `bpf` backend, over the scheduler crate's pinned maps, lives in
//! the `corral` crate, which links the scheduler.) Each enforcement is one atomic operation on
//! the backend; `entries` reads the backend itself, the source of truth the writer's mirror is
//! rebuilt from after a restart.
//!
//! # Layout
//! - [`memory`]: in-memory maps for tests, inspectable from the test.
//! - [`cpuset`]: the fallback: `cpuset.cpus` of the container's cgroup (v2 where the controller
//!   is enabled, else the v1 cpuset hierarchy).

pub mod cpuset;
pub mod memory;

use std::fmt::Debug;

use crate::config::{CpuGroup, GroupId, HostGroup};
use crate::container_backend::{CgroupId, CgroupRef, Enforcement};
use crate::error::ActorError;

/// A store of enforcement state: cgroup → group, plus the group layout.
pub trait MapBackend: Send + Debug + 'static {
    /// `bpf`, `cpuset` or `memory`.
    fn name(&self) -> &'static str;

    /// Publishes the group layout (cpus, slice, order, borrow).
    fn publish_groups(&mut self, groups: &[CpuGroup]) -> Result<(), ActorError>;

    /// Publishes the host group, the CPUs of tasks in unmapped cgroups. Only a scheduler that
    /// takes every task has one; the default does nothing (cpuset leaves unmapped tasks alone).
    fn publish_host(&mut self, _host: &HostGroup) -> Result<(), ActorError> {
        Ok(())
    }

    /// Commits `cgroup → group` as one atomic operation.
    fn enforce(&mut self, cgroup: &CgroupRef, group: &CpuGroup) -> Result<Enforcement, ActorError>;

    /// Removes the cgroup's entry; `false` if there was none.
    fn remove(&mut self, cgroup: &CgroupRef) -> Result<bool, ActorError>;

    /// Reads every entry back from the backend.
    fn entries(&self) -> Result<Vec<(CgroupId, GroupId)>, ActorError>;

    /// Releases what the backend set up for itself, after every entry is removed.
    fn close(&mut self) -> Result<(), ActorError> {
        Ok(())
    }
}
