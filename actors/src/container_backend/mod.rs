//! What a container is and how one is made: the [`ContainerBackend`] trait behind the container
//! manager's cold starts, and the types it hands around. Backends: [`local`] (a container is a
//! cgroup v2 directory and the function a command run inside it) and [`sim`] (no processes, for
//! logic tests and large simulations).
//!
//! # Layout
//! - [`cgroup_name`]: Docker, containerd and plain cgroup names, resolved to a cgroup v2 id.
//! - `containerd` (feature `containerd`): containerd containers from a root file system
//!   directory; the task is a `server`-mode function's server, or (`exec` mode) a created
//!   task each invocation execs a process into.
//! - [`local`]: cgroup v2 directories under a configurable parent; a command per invocation
//!   (`exec` mode) or one server process per container (`server` mode, [`frame`]).
//! - [`frame`]: the framed protocol of `server`-mode functions.
//! - [`sim`]: synthetic containers with simulated cold-start and run times.

pub mod cgroup_name;
#[cfg(feature = "containerd")]
pub mod containerd;
pub mod frame;
pub mod local;
mod local_server;
pub mod sim;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::config::{CpuGroup, FunctionSpec, GroupId};
use crate::error::ActorError;

/// A cgroup id: the inode number of the cgroup v2 directory, which is the kernel's cgroup id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupId(pub u64);

impl fmt::Display for CgroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A cgroup: its id, and its directory when it has one (the `sim` backend's do not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRef {
    /// The id.
    pub id: CgroupId,
    /// The cgroup v2 directory.
    pub path: Option<PathBuf>,
}

/// A container as its backend knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Unique id, `<function>@<n>`.
    pub id: String,
    /// The function it serves.
    pub function: String,
    /// Its cgroup.
    pub cgroup: CgroupRef,
}

/// The map writer's acknowledgement that a cgroup is enforced onto a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// The cgroup.
    pub cgroup: CgroupId,
    /// The group.
    pub group: GroupId,
    /// The group's CPUs.
    pub cpus: Vec<u32>,
    /// Processes started in the cgroup must switch to `SCHED_EXT` (the `bpf` backend).
    pub sched_ext: bool,
    /// Extra `cgroup.procs` files a process started in the container must join (the v1 cpuset
    /// hierarchy of the `cpuset` backend).
    pub join: Vec<PathBuf>,
    /// How long the commit took inside the map writer (the backend's update, and the sweep).
    pub commit_time: Duration,
    /// Of `commit_time`, the `SCHED_EXT` policy sweep over the cgroup's threads (the `bpf`
    /// backend in partial mode; zero otherwise).
    pub sweep_time: Duration,
    /// When the map writer began handling the `EnforceGroup` (set by the writer), so that the
    /// sender can tell the mailbox wait from the commit and the reply.
    pub handled_at: Option<Instant>,
}

/// Liveness of a handed-out container: the manager keeps a weak reference, so a container lost
/// on any path (a dropped future, a panic) is found again and returned to the pool.
#[derive(Debug)]
pub struct CheckoutToken;

/// A container handed out by the container manager, enforced onto its lease's group.
#[derive(Debug)]
pub struct Container {
    /// The backend's view of it.
    pub info: ContainerInfo,
    /// The function it runs.
    pub spec: Arc<FunctionSpec>,
    /// The group it is enforced onto.
    pub group: CpuGroup,
    /// The committed enforcement.
    pub enforcement: Enforcement,
    /// Set when a run left the container unusable (a `server`-mode process that died, hung
    /// or broke the protocol): at release it is destroyed instead of going back to its pool.
    pub discard: bool,
    /// Held only for its liveness: the manager's ledger watches it through a weak reference.
    #[allow(dead_code)]
    pub(crate) token: Arc<CheckoutToken>,
}

/// How containers are created, run and destroyed.
pub trait ContainerBackend: Send + Sync + fmt::Debug + 'static {
    /// `local` or `sim`.
    fn name(&self) -> &'static str;

    /// Checks that `spec` can run on this backend (e.g. `local` needs a command).
    fn check_function(&self, spec: &FunctionSpec) -> Result<(), ActorError>;

    /// Creates a container for `spec` (a cold start): its cgroup, and whatever can exist before
    /// its enforcement without running the function's code.
    fn create(&self, spec: &FunctionSpec) -> BoxFuture<'static, Result<ContainerInfo, ActorError>>;

    /// Starts what a new container runs for its whole life (a `server`-mode process), once its
    /// enforcement is committed, so that the function's first instruction already runs on its
    /// group's CPUs: a server's start-up (loading a model, warming a JIT) is function work, and
    /// in the host group it would run beside the control plane. The manager calls it once per
    /// cold start, after the commit and before the container is handed out; on an error it
    /// destroys the container. Nothing to do by default.
    fn start(&self, container: &Container) -> BoxFuture<'static, Result<(), ActorError>> {
        let _ = container;
        futures::future::ready(Ok(())).boxed()
    }

    /// Destroys a container; nothing of it remains afterwards.
    fn destroy(&self, container: &ContainerInfo) -> Result<(), ActorError>;

    /// Every container that exists now: the source of truth the manager rebuilds from.
    fn list(&self) -> Result<Vec<ContainerInfo>, ActorError>;

    /// Runs one invocation of the container's function with `payload`; returns its output.
    fn run(
        &self,
        container: &Container,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, ActorError>>;

    /// Removes what the backend set up for itself (after every container is destroyed).
    fn close(&self) -> Result<(), ActorError>;

    /// The cgroups of containers an earlier run left behind that this backend removed when it
    /// opened (a crash, a second SIGINT). Their enforcement entries may still be in shared,
    /// pinned maps; the runtime removes them at start so they do not creep toward the map's
    /// capacity. Empty by default.
    fn reclaimed(&self) -> Vec<CgroupRef> {
        Vec::new()
    }
}
