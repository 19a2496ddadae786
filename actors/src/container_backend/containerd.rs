//! The `containerd` container backend: a container is a containerd container in one namespace,
//! made from an unpacked root file system directory, run by `runc` through the
//! `io.containerd.runc.v2` shim. In `server` mode the function's server is the task's init,
//! started at the cold start, and serves every invocation over the framed protocol of
//! [`super::frame`] on FIFOs the shim copies to its standard input and output. In `exec` mode
//! the task is created and never started, and each invocation execs the command into the
//! container (`exec`).
//!
//! # Ownership
//! Every container carries the label `corral=<owner>`, the owner being the cgroup parent's
//! path, plus `corral.function` and `corral.cgroup` (its `cgroupsPath`), so that the daemon
//! alone is enough to find, describe and remove it. At open the backend takes an exclusive
//! `flock` on the cgroup parent (as the `local` backend does), then removes every container of
//! its owner left in the namespace by a run that died: kill (SIGKILL, all processes), wait,
//! delete the task, delete the container. Containers without the label, or with another
//! owner's, are reported and never touched.
//!
//! # Cgroups
//! `linux.cgroupsPath` is `<parent relative to the cgroup2 mount>/<id>`; runc creates the
//! directory and the container's cgroup id is its inode. On a hybrid host (v1 controllers,
//! cgroup2 at `/sys/fs/cgroup/unified`) runc also creates `<id>` under the parent in every v1
//! hierarchy; it removes the leaves when the task is deleted, and [`ContainerBackend::close`]
//! removes the parents it left (only when empty, only when corral created the cgroup2 parent).
//!
//! # Sync calls and runtimes
//! gRPC needs a tokio runtime, but `destroy`, `list` and `close` are synchronous: the manager
//! calls `destroy` and `close` on tokio's blocking pool and `list` on the actix thread. The
//! backend therefore owns a small multi-thread runtime (one worker, `corral-containerd`) on
//! which the channel to the daemon is made and every request runs. A synchronous method spawns
//! its work there and parks the calling thread on the join handle
//! (`futures::executor::block_on`), never `Runtime::block_on` (which refuses to run inside
//! another runtime's worker, and would stall the actix thread's own tasks if it did not); the
//! calling thread only waits, so no runtime is ever driven from inside another. Each request is
//! bounded by [`REQUEST_TIMEOUT`], so a stuck daemon stalls `list` on the actix thread for at
//! most that long. The async methods (`create`, and the kill of a timed-out `run`) spawn onto
//! the same runtime and await the join handle from wherever they are polled.
//!
//! A `server`-mode invocation makes no request to the daemon: the FIFOs' descriptors are kept
//! plain (non-blocking) and registered with the tokio runtime of whoever runs the invocation,
//! for that invocation only, as the `local` backend's server mode does, so the warm path has
//! no thread hop (`server`). An `exec`-mode invocation asks the daemon to exec, start, close
//! the input of, wait for and delete its process, each through the backend's runtime.
//!
//! # Layout
//! - `server`: `server` mode, the task's init serving frames.
//! - `exec`: `exec` mode, a process exec'd into a created task per invocation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container as ContainerdContainer, CreateContainerRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, ListContainersRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Response, Status};
use containerd_client::with_namespace;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::runtime::Handle;

mod exec;
mod server;

use server::{serve, Server};

use super::cgroup_name::{cgroup2_mounts, mounts_of_type};
use super::local::{cgroup_pids, claim_parent, is_cgroup2};
use super::{CgroupId, CgroupRef, Container, ContainerBackend, ContainerInfo};
use crate::config::{FunctionMode, FunctionSpec};
use crate::error::ActorError;

/// The label whose value names a container's owner (the cgroup parent's path).
pub const OWNER_LABEL: &str = "corral";
/// The label carrying the function a container serves.
pub const FUNCTION_LABEL: &str = "corral.function";
/// The label carrying a container's `cgroupsPath` (relative to the cgroup2 mount).
pub const CGROUP_LABEL: &str = "corral.cgroup";
/// The shim that runs every task.
const SHIM: &str = "io.containerd.runc.v2";
/// The type of an OCI runtime spec carried in a `google.protobuf.Any`.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The longest any one request to the daemon may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed task may take to exit before its teardown gives up on it.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long a failed invocation waits for its server's exit status and last standard error.
const FATE_WAIT: Duration = Duration::from_millis(200);
/// How much of a server's standard error is kept.
const STDERR_TAIL: usize = 2048;
/// The mark (`trusted.corral.owner`) of a cgroup parent this backend created.
const PARENT_MARK: &[u8] = b"corral-containerd-parent";
/// Where the FIFOs of each runtime's containers live, one directory per container.
const FIFO_ROOT: &str = "/run/corral/containerd";
/// `PATH` in a container unless the function sets its own.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The capabilities a function's process keeps (containerd's and Docker's default set).
const CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Containers as containerd containers whose task is the function's server.
#[derive(Debug)]
pub struct ContainerdBackend {
    shared: Arc<Shared>,
    /// The runtime every request runs on; `None` once dropped (shut down in the background,
    /// which may happen inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    /// An exclusive `flock` on the cgroup parent, held until the backend is closed or dropped:
    /// the backend removes every container of its owner, so two runtimes must never share one.
    lock: Mutex<Option<File>>,
}

/// What the backend's methods and its runtime's tasks share.
#[derive(Debug)]
struct Shared {
    handle: Handle,
    channel: Channel,
    namespace: String,
    /// The value of [`OWNER_LABEL`]: the cgroup parent's path.
    owner: String,
    rootfs: PathBuf,
    /// The cgroup2 mount holding the parent.
    cgroup2: PathBuf,
    /// The cgroup parent, and the same relative to the cgroup2 mount (with a leading `/`).
    parent: PathBuf,
    parent_rel: String,
    created_parent: bool,
    /// This runtime's FIFO directory, `/run/corral/containerd/<parent, `/` as `:`>`.
    fifo_root: PathBuf,
    seq: AtomicU64,
    servers: Mutex<HashMap<String, Server>>,
    /// `exec`-mode containers: the pid of each one's init (created, never started).
    execs: Mutex<HashMap<String, u32>>,
    /// Numbers the processes exec'd into containers.
    exec_seq: AtomicU64,
}

/// What an open-time scan of the namespace found.
#[derive(Debug, Default)]
struct Scan {
    /// Containers of this owner (this run's or a dead one's).
    ours: Vec<ContainerInfo>,
    /// Containers of another corral runtime (another owner), or of nobody corral knows.
    foreign: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The daemon's answer as an error source: its message and code, without tonic's metadata.
fn status_error(status: &Status) -> io::Error {
    io::Error::other(format!("{} ({:?})", status.message(), status.code()))
}

/// Maps a failed request to [`ActorError::Containerd`] naming `operation`.
fn refused(operation: impl Into<String>) -> impl FnOnce(Status) -> ActorError {
    let operation = operation.into();
    move |status| ActorError::Containerd {
        operation,
        source: Box::new(status_error(&status)),
    }
}

/// One request to the daemon, bounded by [`REQUEST_TIMEOUT`].
async fn call<T>(request: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// `Ok` for a request whose object is already gone (what a teardown wants anyway).
fn gone_is_fine<T>(answer: Result<T, Status>) -> Result<(), Status> {
    match answer {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(s),
    }
}

/// The cgroup2 mount holding `path`: the longest cgroup2 mount point that is a prefix of it.
fn cgroup2_mount_of(path: &Path) -> Option<PathBuf> {
    cgroup2_mounts()
        .into_iter()
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

/// Removes the cgroup directory `dir` if it exists and is empty (a plain rmdir: nothing is
/// killed, so a cgroup with processes or children stays).
fn remove_empty_cgroup(dir: &Path) -> Result<(), ActorError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ActorError::cgroup("remove", dir, e)),
    }
}

/// Whether `id` is a valid containerd identifier (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most
/// 76 characters).
fn valid_identifier(id: &str) -> bool {
    id.len() <= 76
        && !id.is_empty()
        && id
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl ContainerdBackend {
    /// Connects to the daemon at `socket`, takes `cgroup_parent` (created if missing, on a
    /// cgroup2 file system) and removes the containers of this owner left in `namespace` by an
    /// earlier run. Containers are made from the unpacked root file system `rootfs` (an
    /// absolute directory; it is mounted read-only in every container).
    pub fn open(
        socket: impl Into<PathBuf>,
        namespace: impl Into<String>,
        cgroup_parent: impl Into<PathBuf>,
        rootfs: impl Into<PathBuf>,
    ) -> Result<Self, ActorError> {
        let (socket, namespace) = (socket.into(), namespace.into());
        let (parent, rootfs) = (cgroup_parent.into(), rootfs.into());
        if !rootfs.is_absolute() || !rootfs.is_dir() {
            return Err(ActorError::invalid(
                "containers.containerd.rootfs",
                rootfs.display(),
                "must be an absolute path to a directory holding an unpacked root file system \
                 (the function's command and what it needs)",
            ));
        }
        if !valid_identifier(&namespace) {
            return Err(ActorError::invalid(
                "containers.containerd.namespace",
                &namespace,
                "a containerd namespace is letters and digits, optionally separated by single \
                 `.`, `_` or `-` (e.g. \"corral\")",
            ));
        }
        let cgroup2 = cgroup2_mount_of(&parent)
            .filter(|m| is_cgroup2(m) && m != &parent)
            .ok_or_else(|| {
                ActorError::invalid(
                    "containers.cgroup_parent",
                    parent.display(),
                    "is not below a cgroup2 mount; point it into the cgroup2 mount runc uses \
                     (e.g. /sys/fs/cgroup/corral, or /sys/fs/cgroup/unified/corral on hybrid \
                     hosts)",
                )
            })?;
        let parent_rel = format!(
            "/{}",
            parent
                .strip_prefix(&cgroup2)
                .expect("the mount is a prefix of the parent")
                .display()
        );
        let (created_parent, lock) = claim_parent(&parent, PARENT_MARK)?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("corral-containerd")
            .enable_all()
            .build()
            .map_err(|e| ActorError::Containerd {
                operation: "start the backend's tokio runtime".into(),
                source: Box::new(e),
            })?;
        let handle = runtime.handle().clone();
        let connect_socket = socket.clone();
        let connected = futures::executor::block_on(handle.spawn(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, containerd_client::connect(&connect_socket)).await
        }));
        let channel = match connected {
            Ok(Ok(Ok(channel))) => channel,
            Ok(Ok(Err(e))) => {
                return Err(ActorError::Containerd {
                    operation: format!(
                        "be reached at {} (is the daemon running? containers.containerd.socket)",
                        socket.display()
                    ),
                    source: Box::new(e),
                })
            }
            Ok(Err(_)) | Err(_) => {
                return Err(ActorError::Containerd {
                    operation: format!("be reached at {}", socket.display()),
                    source: format!("no connection within {REQUEST_TIMEOUT:?}").into(),
                })
            }
        };
        // Keyed by the cgroup parent, which the lock makes this runtime's alone: whatever is
        // in it now was left by a runtime that died, and goes below.
        let fifo_root =
            Path::new(FIFO_ROOT).join(parent_rel.trim_start_matches('/').replace('/', ":"));
        fs::create_dir_all(&fifo_root)
            .and_then(|()| fs::set_permissions(&fifo_root, fs::Permissions::from_mode(0o700)))
            .map_err(|e| ActorError::cgroup("create the FIFO directory", &fifo_root, e))?;
        let backend = ContainerdBackend {
            shared: Arc::new(Shared {
                handle,
                channel,
                namespace,
                owner: parent.display().to_string(),
                rootfs,
                cgroup2,
                parent,
                parent_rel,
                created_parent,
                fifo_root,
                seq: AtomicU64::new(1),
                servers: Mutex::new(HashMap::new()),
                execs: Mutex::new(HashMap::new()),
                exec_seq: AtomicU64::new(1),
            }),
            runtime: Some(runtime),
            lock: Mutex::new(Some(lock)),
        };
        let scan = backend.block("scan the namespace", |s| async move { s.scan().await })?;
        for leftover in scan.ours {
            tracing::warn!(
                container = leftover.id,
                namespace = backend.shared.namespace,
                "removing a containerd container left behind by an earlier run"
            );
            backend.destroy(&leftover)?;
        }
        let stale = fs::read_dir(&backend.shared.fifo_root)
            .map_err(|e| ActorError::cgroup("list", &backend.shared.fifo_root, e))?;
        for entry in stale.flatten() {
            let path = entry.path();
            fs::remove_dir_all(&path)
                .map_err(|e| ActorError::cgroup("remove a stale FIFO directory", &path, e))?;
        }
        if !scan.foreign.is_empty() {
            tracing::warn!(
                namespace = backend.shared.namespace,
                foreign = ?scan.foreign,
                "containers that are not this runtime's are in the containerd namespace; they \
                 are left alone"
            );
        }
        Ok(backend)
    }

    /// The containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// The cgroup parent.
    pub fn parent(&self) -> &Path {
        &self.shared.parent
    }

    /// Runs `work` on the backend's runtime and waits for it, from synchronous code on any
    /// thread (see the module doc).
    fn block<T, F>(
        &self,
        what: &'static str,
        work: impl FnOnce(Arc<Shared>) -> F,
    ) -> Result<T, ActorError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ActorError>> + Send + 'static,
    {
        let task = self.shared.handle.spawn(work(Arc::clone(&self.shared)));
        futures::executor::block_on(task).unwrap_or_else(|e| Err(panicked(what, e)))
    }
}

/// A backend task that panicked or was cancelled (the backend is being dropped).
fn panicked(what: &'static str, e: tokio::task::JoinError) -> ActorError {
    ActorError::HandlerPanicked {
        actor: "containerd backend",
        message: what,
        detail: e.to_string(),
    }
}

/// The runtime shuts down in the background: dropping a runtime blocks, which is forbidden
/// inside another runtime (where the manager may drop its last reference). By then `close` has
/// removed every container; what is left are idle standard-error drains.
impl Drop for ContainerdBackend {
    fn drop(&mut self) {
        lock(&self.shared.servers).clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// A container's directory of FIFOs.
    fn fifo_dir(&self, id: &str) -> PathBuf {
        self.fifo_root.join(id)
    }

    /// The describing info of a container the daemon lists, if it is this owner's.
    fn info_of(&self, c: &ContainerdContainer) -> Option<ContainerInfo> {
        if c.labels.get(OWNER_LABEL) != Some(&self.owner) {
            return None;
        }
        let function = c.labels.get(FUNCTION_LABEL).cloned().unwrap_or_default();
        let rel = c
            .labels
            .get(CGROUP_LABEL)
            .cloned()
            .unwrap_or_else(|| format!("{}/{}", self.parent_rel, c.id));
        let dir = self.cgroup2.join(rel.trim_start_matches('/'));
        let ino = fs::metadata(&dir).map(|m| m.ino()).unwrap_or(0);
        Some(ContainerInfo {
            id: c.id.clone(),
            function,
            cgroup: CgroupRef {
                id: CgroupId(ino),
                path: Some(dir),
            },
        })
    }

    /// Every container in the namespace: this owner's apart from everyone else's.
    async fn scan(&self) -> Result<Scan, ActorError> {
        let list = call(self.containers().list(with_namespace!(
            ListContainersRequest::default(),
            self.namespace
        )))
        .await
        .map_err(refused(format!(
            "list the containers of namespace {}",
            self.namespace
        )))?;
        let mut scan = Scan::default();
        for c in list.containers {
            match self.info_of(&c) {
                Some(info) => scan.ours.push(info),
                None => scan.foreign.push(c.id),
            }
        }
        Ok(scan)
    }

    /// The OCI runtime spec of a container serving `spec`.
    fn oci_spec(&self, spec: &FunctionSpec, id: &str, cgroups_path: &str) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "hostname": id,
            "process": process_spec(spec, id, &[]),
            // One root file system for every container: read-only, with /tmp its own.
            "root": {"path": self.rootfs, "readonly": true},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "nodev", "mode=1777"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "cgroupsPath": cgroups_path,
                // No network namespace: the function shares the host's network. No
                // `resources`: corral's enforcement, not the spec, decides where it runs.
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                    "/proc/scsi", "/sys/firmware"
                ],
                "readonlyPaths": [
                    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                    "/proc/sysrq-trigger"
                ]
            }
        })
    }

    /// Creates the container of `spec` under a fresh id (skipping ids someone else holds in
    /// the namespace); answers the id and its `cgroupsPath`.
    async fn create_container(&self, spec: &FunctionSpec) -> Result<(String, String), ActorError> {
        for _ in 0..64 {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let id = format!("{}-{n}", spec.name);
            let cgroups_path = format!("{}/{id}", self.parent_rel);
            let oci = self.oci_spec(spec, &id, &cgroups_path);
            let container = ContainerdContainer {
                id: id.clone(),
                labels: [
                    (OWNER_LABEL.to_string(), self.owner.clone()),
                    (FUNCTION_LABEL.to_string(), spec.name.clone()),
                    (CGROUP_LABEL.to_string(), cgroups_path.clone()),
                ]
                .into(),
                runtime: Some(ContainerRuntime {
                    name: SHIM.into(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&oci).expect("a JSON value serializes"),
                }),
                ..Default::default()
            };
            let created = call(self.containers().create(with_namespace!(
                CreateContainerRequest {
                    container: Some(container)
                },
                self.namespace
            )))
            .await;
            match created {
                Ok(_) => return Ok((id, cgroups_path)),
                Err(s) if s.code() == Code::AlreadyExists => continue,
                Err(s) => return Err(refused(format!("create container {id}"))(s)),
            }
        }
        Err(ActorError::Containerd {
            operation: format!("find a free container id for function {}", spec.name),
            source: "64 ids in a row are taken in the namespace".into(),
        })
    }

    /// A cold start: the container, its FIFOs, its task (the server, started only by
    /// [`ContainerBackend::start`] once the container is enforced; an `exec`-mode container's
    /// idle init is started now).
    async fn create(self: Arc<Self>, spec: FunctionSpec) -> Result<ContainerInfo, ActorError> {
        let (id, cgroups_path) = self.create_container(&spec).await?;
        let dir = self.cgroup2.join(cgroups_path.trim_start_matches('/'));
        let started = match spec.mode {
            FunctionMode::Server => {
                self.create_task(&spec, &id, &dir)
                    .await
                    .map(|(server, ino)| {
                        lock(&self.servers).insert(id.clone(), server);
                        ino
                    })
            }
            FunctionMode::Exec => {
                self.create_exec_init(&spec, &id, &dir)
                    .await
                    .map(|(pid, ino)| {
                        lock(&self.execs).insert(id.clone(), pid);
                        ino
                    })
            }
        };
        match started {
            Ok(ino) => Ok(ContainerInfo {
                id,
                function: spec.name,
                cgroup: CgroupRef {
                    id: CgroupId(ino),
                    path: Some(dir),
                },
            }),
            Err(e) => {
                if let Err(undo) = self.teardown(&id, Some(&dir)).await {
                    tracing::warn!(container = id, error = %undo, "cannot undo a failed cold start");
                }
                Err(e)
            }
        }
    }

    /// Kills every process of `id`'s task (SIGKILL); a task already gone is fine.
    async fn kill(&self, id: &str) -> Result<(), ActorError> {
        let killed = call(self.tasks().kill(with_namespace!(
            KillRequest {
                container_id: id.into(),
                signal: libc::SIGKILL as u32,
                all: true,
                ..Default::default()
            },
            self.namespace
        )))
        .await;
        match killed {
            // A task whose processes all exited answers FailedPrecondition ("process already
            // finished"): nothing left to kill.
            Err(s) if s.code() == Code::FailedPrecondition => Ok(()),
            other => gone_is_fine(other).map_err(refused(format!("kill the task of {id}"))),
        }
    }

    /// The exit status of `id`'s task if it exits within `within`.
    async fn exit_status(&self, id: &str, within: Duration) -> Option<u32> {
        let mut tasks = self.tasks();
        let wait = tasks.wait(with_namespace!(
            WaitRequest {
                container_id: id.into(),
                ..Default::default()
            },
            self.namespace
        ));
        match tokio::time::timeout(within, wait).await {
            Ok(Ok(answer)) => Some(answer.into_inner().exit_status),
            _ => None,
        }
    }

    /// Everything of container `id`: its server's FIFO ends, its task (killed, waited for,
    /// deleted), the container, its FIFO directory, and its cgroup directories if runc left
    /// any. Idempotent: what is already gone is skipped.
    async fn teardown(&self, id: &str, cgroup: Option<&Path>) -> Result<(), ActorError> {
        let server = lock(&self.servers).remove(id);
        drop(server);
        lock(&self.execs).remove(id);
        self.kill(id).await?;
        self.exit_status(id, EXIT_WAIT).await;
        gone_is_fine(
            call(self.tasks().delete(with_namespace!(
                DeleteTaskRequest {
                    container_id: id.into()
                },
                self.namespace
            )))
            .await,
        )
        .map_err(refused(format!("delete the task of {id}")))?;
        gone_is_fine(
            call(self.containers().delete(with_namespace!(
                DeleteContainerRequest { id: id.into() },
                self.namespace
            )))
            .await,
        )
        .map_err(refused(format!("delete container {id}")))?;
        let fifos = self.fifo_dir(id);
        match fs::remove_dir_all(&fifos) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(ActorError::cgroup("remove the FIFO directory", fifos, e)),
        }
        // runc removes the task's cgroups when it is deleted; a task that never started, or a
        // runc killed mid-way, can leave them (empty: every process is dead by now).
        if let Some(dir) = cgroup {
            if let Ok(rel) = dir.strip_prefix(&self.cgroup2) {
                for v1 in mounts_of_type("cgroup") {
                    remove_empty_cgroup(&v1.join(rel))?;
                }
            }
            remove_empty_cgroup(dir)?;
        }
        Ok(())
    }

    /// Removes what the backend set up for itself, once its containers are gone: the FIFO
    /// directory, and the parents runc left in the v1 hierarchies and the cgroup2 parent if
    /// corral created it (only if empty).
    fn remove_own_dirs(&self) -> Result<(), ActorError> {
        // This namespace's FIFO directory, then `/run/corral/containerd` and `/run/corral` if
        // nothing else is in them (another namespace's runtime, another corral's state).
        for dir in self.fifo_root.ancestors().take(3) {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => break,
                Err(e) => return Err(ActorError::cgroup("remove", dir, e)),
            }
        }
        if !self.created_parent {
            return Ok(());
        }
        let rel = self.parent_rel.trim_start_matches('/');
        for v1 in mounts_of_type("cgroup") {
            let dir = v1.join(rel);
            if let Err(e) = remove_empty_cgroup(&dir) {
                tracing::warn!(error = %e, "leaving a v1 cgroup parent runc created in place");
            }
        }
        match fs::remove_dir(&self.parent) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(
                    parent = %self.parent.display(),
                    "leaving containers.cgroup_parent in place: it holds cgroups corral did \
                     not create"
                );
                Ok(())
            }
            Err(e) => Err(ActorError::cgroup("remove", &self.parent, e)),
        }
    }
}

/// The OCI process of `spec` in container `id`: its command, as root with containerd's default
/// capabilities, the environment `PATH` (unless the function sets one), the function's `env`,
/// `CORRAL_FUNCTION`, `CORRAL_CONTAINER`, `CORRAL_MODE` and `extra`.
fn process_spec(spec: &FunctionSpec, id: &str, extra: &[(&str, String)]) -> serde_json::Value {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("CORRAL_FUNCTION".into(), spec.name.clone());
    env.insert("CORRAL_CONTAINER".into(), id.into());
    let mode = match spec.mode {
        FunctionMode::Server => "server",
        FunctionMode::Exec => "exec",
    };
    env.insert("CORRAL_MODE".into(), mode.into());
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    // Validated at registration (`FunctionSpec::validate`).
    let (uid, gid) = spec.user().unwrap_or((65534, 65534));
    serde_json::json!({
        "terminal": false,
        "user": {"uid": uid, "gid": gid},
        "args": spec.command,
        "env": env,
        "cwd": "/",
        "capabilities": {
            "bounding": CAPABILITIES,
            "effective": CAPABILITIES,
            "permitted": CAPABILITIES,
        },
        "noNewPrivileges": true
    })
}

/// Makes a FIFO at `path` (mode 0600).
fn make_fifo(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens corral's end of a FIFO, before the shim opens its own: a reader never blocks
/// (`O_NONBLOCK`), and a standard input is opened read-write (`write`) so that it has a reader.
fn open_fifo_end(path: &Path, write: bool) -> io::Result<OwnedFd> {
    fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
}

/// Keeps the last [`STDERR_TAIL`] bytes the server writes to its standard error, until the
/// shim closes the FIFO.
async fn drain(mut stderr: pipe::Receiver, tail: Arc<Mutex<VecDeque<u8>>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let mut tail = lock(&tail);
        tail.extend(&buf[..n]);
        let excess = tail.len().saturating_sub(STDERR_TAIL);
        tail.drain(..excess);
    }
}

/// Runs `work` on the backend's runtime from an async caller on any runtime.
async fn on_backend<T: Send + 'static>(
    shared: &Arc<Shared>,
    what: &'static str,
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, ActorError> {
    shared
        .handle
        .spawn(work)
        .await
        .map_err(|e| panicked(what, e))
}

/// What an invocation needs of the checked-out container.
#[derive(Debug)]
struct Checkout {
    id: String,
    spec: Arc<FunctionSpec>,
    /// Its cgroup v2 directory.
    cgroup: Option<PathBuf>,
    /// The enforcement's extra `cgroup.procs` files.
    join: Vec<PathBuf>,
    /// Its group's name and CPUs (`exec` mode: `CORRAL_GROUP`, `CORRAL_CPUS`).
    group: String,
    cpus: Vec<u32>,
}

impl ContainerBackend for ContainerdBackend {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn check_function(&self, spec: &FunctionSpec) -> Result<(), ActorError> {
        if spec.command.is_empty() || spec.command[0].is_empty() {
            return Err(ActorError::invalid(
                format!("functions.{}.command", spec.name),
                "[]",
                "the `containerd` backend runs the command in each container (a server, or a \
                 process per invocation); give one, e.g. [\"/bin/corral-serve\"]",
            ));
        }
        if !valid_identifier(&format!("{}-1", spec.name)) {
            return Err(ActorError::invalid(
                format!("functions.{}.name", spec.name),
                &spec.name,
                "becomes part of containerd container ids, which allow `_` and `-` only \
                 singly between letters and digits; rename it (e.g. `resize-image`)",
            ));
        }
        let program = Path::new(&spec.command[0]);
        if program.is_absolute() {
            let inside = self
                .shared
                .rootfs
                .join(program.strip_prefix("/").expect("absolute"));
            if fs::symlink_metadata(&inside).is_err() {
                return Err(ActorError::invalid(
                    format!("functions.{}.command", spec.name),
                    program.display(),
                    format!(
                        "is not in the containers' root file system ({} has no {}); copy it \
                         there (with the libraries it needs) or fix the path",
                        self.shared.rootfs.display(),
                        inside.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn create(&self, spec: &FunctionSpec) -> BoxFuture<'static, Result<ContainerInfo, ActorError>> {
        let shared = Arc::clone(&self.shared);
        let task = self.shared.handle.spawn(shared.create(spec.clone()));
        async move { task.await.unwrap_or_else(|e| Err(panicked("create", e))) }.boxed()
    }

    fn start(&self, container: &Container) -> BoxFuture<'static, Result<(), ActorError>> {
        if container.spec.mode != FunctionMode::Server {
            return futures::future::ready(Ok(())).boxed();
        }
        let shared = Arc::clone(&self.shared);
        let (id, dir, join) = (
            container.info.id.clone(),
            container.info.cgroup.path.clone(),
            container.enforcement.join.clone(),
        );
        let task = self
            .shared
            .handle
            .spawn(async move { shared.start_task(&id, dir.as_deref(), &join).await });
        async move { task.await.unwrap_or_else(|e| Err(panicked("start", e))) }.boxed()
    }

    fn destroy(&self, container: &ContainerInfo) -> Result<(), ActorError> {
        let (id, dir) = (container.id.clone(), container.cgroup.path.clone());
        self.block("destroy", move |s| async move {
            s.teardown(&id, dir.as_deref()).await
        })
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, ActorError> {
        let scan = self.block("list", |s| async move { s.scan().await })?;
        let servers = lock(&self.shared.servers);
        let execs = lock(&self.shared.execs);
        let (served, unserved): (Vec<_>, Vec<_>) = scan
            .ours
            .into_iter()
            .partition(|c| servers.contains_key(&c.id) || execs.contains_key(&c.id));
        if !unserved.is_empty() {
            tracing::warn!(
                containers = ?unserved.iter().map(|c| &c.id).collect::<Vec<_>>(),
                "containers of this runtime whose FIFOs it does not hold (they cannot serve); \
                 they are left out, and removed at close"
            );
        }
        Ok(served)
    }

    fn run(
        &self,
        container: &Container,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, ActorError>> {
        let checkout = Checkout {
            id: container.info.id.clone(),
            spec: Arc::clone(&container.spec),
            cgroup: container.info.cgroup.path.clone(),
            join: container.enforcement.join.clone(),
            group: container.group.name.clone(),
            cpus: container.enforcement.cpus.clone(),
        };
        match container.spec.mode {
            FunctionMode::Server => serve(Arc::clone(&self.shared), checkout, payload).boxed(),
            FunctionMode::Exec => exec::run(Arc::clone(&self.shared), checkout, payload).boxed(),
        }
    }

    fn close(&self) -> Result<(), ActorError> {
        let scan = self.block("close", |s| async move { s.scan().await })?;
        for leftover in scan.ours {
            self.destroy(&leftover)?;
        }
        self.shared.remove_own_dirs()?;
        lock(&self.lock).take();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Function names become container ids `<name>-<n>`; containerd refuses ids with leading,
    /// trailing or doubled separators, so check_function must catch them first.
    #[test]
    fn container_ids_follow_containerd_identifier_rules() {
        for ok in ["fa-1", "resize-image-12", "a.b_c-3", "F9"] {
            assert!(valid_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a__b",
            "_x-1",
            "a b",
            "é-1",
            &"x".repeat(77),
        ] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }
}
