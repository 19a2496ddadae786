//! The `local` container backend: a container is a cgroup v2 directory under a configurable
//! parent, its cgroup id is the directory's inode, and each invocation runs the function's
//! command inside it (payload on standard input, result from standard output).
//!
//! A child joins its cgroup before `exec`: the parent opens the `cgroup.procs` files, and the
//! child writes its pid into them from `pre_exec` with no allocation. When the enforcement asks
//! for it, the child also switches itself to `SCHED_EXT` there, so every thread it creates
//! inherits the policy.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    local_server, CgroupId, CgroupRef, Container, ContainerBackend, ContainerInfo, Enforcement,
};
use crate::config::{FunctionMode, FunctionSpec};
use crate::error::ActorError;

/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// The scheduling policy number of sched_ext.
const SCHED_EXT: u32 = 7;
/// How much of a failed function's standard error is kept.
const STDERR_TAIL: usize = 2048;
/// The extended attribute that marks a cgroup directory as corral's: only corral removes,
/// kills or reuses a directory that carries it. A `trusted.` attribute, so that only a
/// privileged process can set it (nobody else can make corral remove their cgroup).
pub const OWNER_XATTR: &str = "trusted.corral.owner";
/// The mark's value: what created the directory.
const OWNER_CONTAINER: &[u8] = b"corral-container";
const OWNER_PARENT: &[u8] = b"corral-parent";

/// Marks `dir` as corral's (`what`: container, parent, or a cpuset's owner).
pub(crate) fn mark(dir: &Path, what: &[u8]) -> Result<(), ActorError> {
    xattr::set(dir, OWNER_XATTR, what)
        .map_err(|e| ActorError::cgroup(format!("set {OWNER_XATTR} on"), dir, e))
}

/// Claims `parent`, the runtime's cgroup parent: creates it (with the `owner` mark, so that
/// only a parent corral made is removed at shutdown) when it is missing, and takes its lock,
/// which one runtime holds at a time. Answers whether corral owns the directory (made now, or
/// by a run that died) and the lock, held as long as the descriptor lives.
pub(super) fn claim_parent(parent: &Path, owner: &[u8]) -> Result<(bool, File), ActorError> {
    let created = !parent.exists() || marked(parent, owner);
    if !parent.exists() {
        fs::create_dir(parent).map_err(|e| ActorError::cgroup("create", parent, e))?;
        if let Err(e) = mark(parent, owner) {
            let _ = fs::remove_dir(parent);
            return Err(e);
        }
    }
    let lock = File::open(parent).map_err(|e| ActorError::cgroup("open", parent, e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            ActorError::invalid(
                "containers.cgroup_parent",
                parent.display(),
                "another corral runtime is using this directory (it holds its lock); give each \
                 runtime its own containers.cgroup_parent",
            )
        } else {
            ActorError::cgroup("lock", parent, err)
        });
    }
    Ok((created, lock))
}

/// Whether `dir` carries corral's mark `what`.
pub(crate) fn marked(dir: &Path, what: &[u8]) -> bool {
    matches!(xattr::get(dir, OWNER_XATTR), Ok(Some(v)) if v == what)
}

/// What a start-up scan found under the parent.
#[derive(Debug, Default)]
struct Scan {
    /// Containers of corral (this run's or an earlier one's).
    ours: Vec<ContainerInfo>,
    /// Child cgroups corral did not create: never touched, only reported.
    foreign: Vec<PathBuf>,
}

/// Containers as cgroup v2 directories.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    parent: PathBuf,
    created_parent: bool,
    seq: Arc<AtomicU64>,
    /// An exclusive `flock` on the parent directory, held until the backend is closed or
    /// dropped: the backend removes every container under its parent, so two runtimes must
    /// never share one.
    lock: Arc<std::sync::Mutex<Option<File>>>,
    /// The server processes of `server`-mode containers.
    servers: local_server::Servers,
    /// The cgroups of an earlier run's containers removed at open.
    reclaimed: Vec<CgroupRef>,
}

impl LocalBackend {
    /// Opens `parent` (created if missing) on a cgroup2 file system, enables the `cpu` and
    /// `cpuset` controllers for its children where the parent offers them, and removes
    /// containers left behind by an earlier run.
    pub fn open(parent: impl Into<PathBuf>) -> Result<Self, ActorError> {
        let parent = parent.into();
        let probe = parent.parent().unwrap_or(Path::new("/"));
        if !is_cgroup2(probe) {
            return Err(ActorError::invalid(
                "containers.cgroup_parent",
                parent.display(),
                format!(
                    "`{}` is not on a cgroup2 file system; point it into the cgroup2 mount \
                     (e.g. /sys/fs/cgroup/corral, or /sys/fs/cgroup/unified/corral on hybrid hosts)",
                    probe.display()
                ),
            ));
        }
        if parent.exists() && !is_cgroup2(&parent) {
            return Err(ActorError::invalid(
                "containers.cgroup_parent",
                parent.display(),
                "exists but is not a cgroup2 directory; name a cgroup directory, or a path \
                 corral may create",
            ));
        }
        // A parent that corral created (in this run or one that died) carries the mark and is
        // removed at shutdown; an operator's own directory is never removed.
        let (created_parent, lock) = claim_parent(&parent, OWNER_PARENT)?;
        let offered = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        for controller in ["cpu", "cpuset"] {
            if offered.split_whitespace().any(|c| c == controller) {
                let path = parent.join("cgroup.subtree_control");
                fs::write(&path, format!("+{controller}")).map_err(|e| {
                    ActorError::cgroup(format!("enable +{controller} in"), &path, e)
                })?;
            }
        }
        let backend = LocalBackend {
            parent,
            created_parent,
            seq: Arc::new(AtomicU64::new(1)),
            lock: Arc::new(std::sync::Mutex::new(Some(lock))),
            servers: Arc::default(),
            reclaimed: Vec::new(),
        };
        let mut backend = backend;
        let scan = backend.scan()?;
        for leftover in scan.ours {
            tracing::warn!(
                container = leftover.id,
                "removing a container left behind by an earlier run"
            );
            backend.destroy(&leftover)?;
            backend.reclaimed.push(leftover.cgroup);
        }
        if !scan.foreign.is_empty() {
            tracing::warn!(
                parent = %backend.parent.display(),
                foreign = ?scan.foreign,
                "child cgroups that corral did not create are under containers.cgroup_parent; \
                 they are left alone (and keep the parent from being removed)"
            );
        }
        Ok(backend)
    }

    /// The parent directory.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// The parent's child cgroups, corral's (marked) apart from everyone else's.
    fn scan(&self) -> Result<Scan, ActorError> {
        let entries =
            fs::read_dir(&self.parent).map_err(|e| ActorError::cgroup("list", &self.parent, e))?;
        let mut scan = Scan::default();
        for entry in entries {
            let entry = entry.map_err(|e| ActorError::cgroup("list", &self.parent, e))?;
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.rsplit_once('@') {
                Some((function, _)) if marked(&path, OWNER_CONTAINER) => {
                    scan.ours.push(ContainerInfo {
                        function: function.to_string(),
                        id: name,
                        cgroup: CgroupRef {
                            id: CgroupId(meta.ino()),
                            path: Some(path),
                        },
                    })
                }
                _ => scan.foreign.push(path),
            }
        }
        Ok(scan)
    }
}

/// Whether `path` lies on a cgroup2 file system.
pub fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// The pids in a cgroup's `cgroup.procs`.
pub fn cgroup_pids(dir: &Path) -> io::Result<Vec<i32>> {
    Ok(fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Kills every process in the cgroup `dir` (and its descendants): `cgroup.kill` where the
/// kernel has it, else SIGKILL to each listed pid. Best effort: a process that already exited
/// is no error.
pub(super) fn kill_all(dir: &Path) {
    let pids = cgroup_pids(dir).unwrap_or_default();
    if pids.is_empty() {
        return;
    }
    let kill = dir.join("cgroup.kill");
    if kill.exists() && fs::write(&kill, "1").is_ok() {
        return;
    }
    for pid in pids {
        // SAFETY: plain kill(2) on a pid read from the cgroup.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Kills every process in `dir` and removes it, waiting (bounded) for the kernel to empty it.
fn remove_cgroup(dir: &Path) -> Result<(), ActorError> {
    if !dir.exists() {
        return Ok(());
    }
    kill_all(dir);
    // Killed tasks leave the cgroup asynchronously; rmdir answers EBUSY until they have.
    let mut last = None;
    for _ in 0..500 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(ActorError::cgroup("remove", dir, e)),
        }
    }
    Err(ActorError::cgroup(
        "remove (still busy after killing its processes)",
        dir,
        last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
    ))
}

impl ContainerBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check_function(&self, spec: &FunctionSpec) -> Result<(), ActorError> {
        if spec.command.is_empty() || spec.command[0].is_empty() {
            return Err(ActorError::invalid(
                format!("functions.{}.command", spec.name),
                "[]",
                "the `local` backend runs a command per invocation; give one, e.g. [\"/bin/cat\"]",
            ));
        }
        Ok(())
    }

    fn create(&self, spec: &FunctionSpec) -> BoxFuture<'static, Result<ContainerInfo, ActorError>> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}@{n}", spec.name);
        let dir = self.parent.join(&id);
        let function = spec.name.clone();
        let result = (|| {
            fs::create_dir(&dir).map_err(|e| ActorError::cgroup("create", &dir, e))?;
            if let Err(e) = mark(&dir, OWNER_CONTAINER) {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
            let ino = fs::metadata(&dir)
                .map_err(|e| ActorError::cgroup("stat", &dir, e))?
                .ino();
            Ok(ContainerInfo {
                id,
                function,
                cgroup: CgroupRef {
                    id: CgroupId(ino),
                    path: Some(dir.clone()),
                },
            })
        })();
        // A `server`-mode process starts in `start`, once the cgroup is enforced.
        futures::future::ready(result).boxed()
    }

    fn start(&self, container: &Container) -> BoxFuture<'static, Result<(), ActorError>> {
        if container.spec.mode != FunctionMode::Server {
            return futures::future::ready(Ok(())).boxed();
        }
        let servers = Arc::clone(&self.servers);
        let (spec, info, enforcement) = (
            Arc::clone(&container.spec),
            container.info.clone(),
            container.enforcement.clone(),
        );
        async move {
            let dir = info
                .cgroup
                .path
                .clone()
                .expect("local containers have a directory");
            let id = info.id.clone();
            let started = tokio::task::spawn_blocking(move || {
                local_server::start(&spec, &info, &dir, &enforcement)
            })
            .await
            .unwrap_or_else(|e| {
                Err(ActorError::HandlerPanicked {
                    actor: "local backend",
                    message: "start a server",
                    detail: e.to_string(),
                })
            })?;
            servers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, started);
            Ok(())
        }
        .boxed()
    }

    fn destroy(&self, container: &ContainerInfo) -> Result<(), ActorError> {
        local_server::stop(&self.servers, &container.id);
        match &container.cgroup.path {
            Some(dir) => remove_cgroup(dir),
            None => Ok(()),
        }
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, ActorError> {
        Ok(self.scan()?.ours)
    }

    fn run(
        &self,
        container: &Container,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, ActorError>> {
        let spec = Arc::clone(&container.spec);
        let id = container.info.id.clone();
        let dir = container
            .info
            .cgroup
            .path
            .clone()
            .expect("local containers have a directory");
        if spec.mode == FunctionMode::Server {
            let servers = Arc::clone(&self.servers);
            // The future owns what it needs: a snapshot of the container's fields.
            let container = Container {
                info: container.info.clone(),
                spec: Arc::clone(&container.spec),
                group: container.group.clone(),
                enforcement: container.enforcement.clone(),
                discard: false,
                token: Arc::clone(&container.token),
            };
            return async move { local_server::run(servers, &container, &dir, payload).await }
                .boxed();
        }
        let enforcement = container.enforcement.clone();
        let group = container.group.name.clone();
        async move {
            let spawn_err = |source| ActorError::Spawn {
                function: spec.name.clone(),
                command: spec.command.clone(),
                container: id.clone(),
                source,
            };
            let ChildJoins {
                files: joins,
                fds,
                sched_ext,
            } = ChildJoins::open(&dir, &enforcement)?;

            let (uid, gid) = spec.user()?;
            // fork + pre_exec + exec run on the blocking pool, not on the actix thread: a fork
            // copies the whole runtime's page tables, and every actor shares that thread.
            let (spawn_spec, spawn_id) = (Arc::clone(&spec), id.clone());
            let spawned = tokio::task::spawn_blocking(move || {
                let spec = spawn_spec;
                let mut cmd = tokio::process::Command::new(&spec.command[0]);
                cmd.args(&spec.command[1..])
                    .envs(&spec.env)
                    .env("CORRAL_FUNCTION", &spec.name)
                    .env("CORRAL_CONTAINER", &spawn_id)
                    .env("CORRAL_GROUP", &group)
                    .env(
                        "CORRAL_CPUS",
                        crate::config::format_cpu_list(&enforcement.cpus),
                    )
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                // SAFETY: the closure only makes async-signal-safe calls (getpid, write,
                // syscall) on memory prepared before the fork.
                unsafe {
                    cmd.pre_exec(move || {
                        join_cgroups_and_policy(&fds, sched_ext)?;
                        drop_privileges(uid, gid)
                    });
                }
                let child = cmd.spawn();
                drop(joins);
                child
            })
            .await;
            let mut child = match spawned {
                Ok(child) => child.map_err(spawn_err)?,
                Err(join) => return Err(spawn_err(io::Error::other(join.to_string()))),
            };
            let stdin = child.stdin.take();
            let feed = async move {
                if let Some(mut stdin) = stdin {
                    // A function that ignores its input closes the pipe early; that is fine.
                    let _ = stdin.write_all(&payload).await;
                }
            };
            // Standard output up to the function's limit: one byte more means it wrote too
            // much, and every process of the container is killed at once (so nothing keeps
            // writing into a pipe nobody reads). Standard error: its last STDERR_TAIL bytes.
            let limit = spec.max_output();
            let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
            let kill_dir = dir.clone();
            let read_out = async move {
                let mut out = Vec::new();
                if let Some(stdout) = stdout {
                    stdout.take(limit + 1).read_to_end(&mut out).await?;
                }
                if out.len() as u64 > limit {
                    kill_all(&kill_dir);
                }
                io::Result::Ok(out)
            };
            let read_err = async move {
                let mut tail = Vec::new();
                if let Some(mut stderr) = stderr {
                    let mut buf = [0u8; 4096];
                    loop {
                        match stderr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                tail.extend_from_slice(&buf[..n]);
                                let excess = tail.len().saturating_sub(STDERR_TAIL);
                                tail.drain(..excess);
                            }
                        }
                    }
                }
                tail
            };
            let timeout = spec.timeout();
            let ran = async {
                let (_, out, err) = tokio::join!(feed, read_out, read_err);
                let status = child.wait().await;
                (out, err, status)
            };
            let (out, err, status) = match tokio::time::timeout(timeout, ran).await {
                Ok((out, err, status)) => {
                    (out.map_err(spawn_err)?, err, status.map_err(spawn_err)?)
                }
                Err(_) => {
                    // The command (dropped with the future, kill_on_drop) and whatever it
                    // started: every process of the container, by cgroup.
                    kill_all(&dir);
                    return Err(ActorError::FunctionTimedOut {
                        function: spec.name.clone(),
                        container: id,
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
            };
            if out.len() as u64 > limit {
                return Err(ActorError::OutputTooLarge {
                    function: spec.name.clone(),
                    container: id,
                    limit,
                });
            }
            let output = std::process::Output {
                status,
                stdout: out,
                stderr: err,
            };
            if output.status.success() {
                Ok(output.stdout)
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
                Err(ActorError::FunctionFailed {
                    function: spec.name.clone(),
                    container: id,
                    status: output.status.to_string(),
                    stderr: tail.trim().to_string(),
                })
            }
        }
        .boxed()
    }

    fn reclaimed(&self) -> Vec<CgroupRef> {
        self.reclaimed.clone()
    }

    fn close(&self) -> Result<(), ActorError> {
        let scan = self.scan()?;
        for leftover in scan.ours {
            self.destroy(&leftover)?;
        }
        // Only an empty parent goes: a plain rmdir, never a kill, so that a cgroup someone else
        // made under it (and its processes) survives.
        if self.created_parent && !scan.foreign.is_empty() {
            tracing::warn!(
                parent = %self.parent.display(),
                foreign = ?scan.foreign,
                "leaving containers.cgroup_parent in place: it holds cgroups corral did not create"
            );
        } else if self.created_parent {
            match fs::remove_dir(&self.parent) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(ActorError::cgroup("remove", &self.parent, e)),
            }
        }
        // Closed: the next runtime may take the parent.
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }
}

/// What a child forked into a container needs, prepared before the fork, to start there as
/// enforced: the `cgroup.procs` files it joins (its cgroup, then the enforcement's extra v1
/// cpusets), held open across the fork, and under sched_ext its group's CPUs to move onto
/// before switching class (see [`join_cgroups_and_policy`]). Used by every process corral
/// starts in a container: an `exec`-mode invocation's and a `server`-mode server.
pub(super) struct ChildJoins {
    /// The open files; drop them once the child is spawned.
    pub(super) files: Vec<File>,
    /// Their descriptors, for the child.
    pub(super) fds: Vec<RawFd>,
    /// The group's CPUs, when the scheduler enforces the group.
    pub(super) sched_ext: Option<libc::cpu_set_t>,
}

impl ChildJoins {
    /// Opens what a child of the container at `dir`, enforced as `enforcement`, must join.
    pub(super) fn open(dir: &Path, enforcement: &Enforcement) -> Result<Self, ActorError> {
        let mut files = Vec::with_capacity(1 + enforcement.join.len());
        for procs in
            std::iter::once(dir.join("cgroup.procs")).chain(enforcement.join.iter().cloned())
        {
            let f = OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| ActorError::cgroup("open", &procs, e))?;
            files.push(f);
        }
        let fds = files.iter().map(|f| f.as_raw_fd()).collect();
        let sched_ext = enforcement.sched_ext.then(|| cpu_set(&enforcement.cpus));
        Ok(ChildJoins {
            files,
            fds,
            sched_ext,
        })
    }
}

/// A `cpu_set_t` holding `cpus`.
fn cpu_set(cpus: &[u32]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET bounds-checks the index.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    set
}

/// Runs in the child between fork and exec: writes the child's pid into each `cgroup.procs` fd
/// and, given its group's CPUs, switches it to `SCHED_EXT` on one of them. Async-signal-safe:
/// no allocation, no locks.
pub(super) fn join_cgroups_and_policy(
    fds: &[RawFd],
    sched_ext: Option<libc::cpu_set_t>,
) -> io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut buf = [0u8; 16];
    let mut n = pid as u32;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &fd in fds {
        // SAFETY: fd is open for writing (held by the parent across the fork); buf[i..] is valid.
        let rc = unsafe { libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(group_cpus) = sched_ext {
        // A task switched into sched_ext while running keeps running where it is until its
        // next scheduling event, outside its group if it was forked elsewhere. So: move onto
        // the group's CPUs, switch class, then restore the inherited affinity (the scheduler,
        // not the affinity mask, keeps it in the group from then on).
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut inherited: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid cpu_set_t of `size` bytes; pid 0 means this task.
        if unsafe { libc::sched_getaffinity(0, size, &mut inherited) } < 0
            || unsafe { libc::sched_setaffinity(0, size, &group_cpus) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        // Keep the nice value the child inherited (getpriority cannot fail for this task).
        // SAFETY: plain syscall with integer arguments.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let attr = libc::sched_attr {
            size: std::mem::size_of::<libc::sched_attr>() as u32,
            sched_policy: SCHED_EXT,
            sched_flags: 0,
            sched_nice: nice,
            sched_priority: 0,
            sched_runtime: 0,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: attr is a valid sched_attr of the size it declares; pid 0 means this task.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0,
                &attr as *const libc::sched_attr,
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::sched_setaffinity(0, size, &inherited) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs in the child between fork and exec, after it joined its cgroups (and switched its
/// policy): it becomes the function's `run_as` user (`uid`, `gid`, no supplementary groups)
/// and keeps no capability. Every capability leaves the bounding set first (which needs
/// root's CAP_SETPCAP), then the user changes, the effective, permitted and inheritable sets
/// are emptied (a change away from root empties them anyway), and `no_new_privs` is set, so
/// neither exec nor a setuid binary gives anything back. Async-signal-safe: syscalls only.
pub(super) fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    // The kernel's last capability is below 64; dropping one it does not know is EINVAL.
    for cap in 0..64 {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
    }
    // SAFETY: plain syscalls with integer arguments (and a null group list of length 0).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0
            || libc::setresgid(gid, gid, gid) < 0
            || libc::setresuid(uid, uid, uid) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are the v3 layout capset(2) reads (two data words).
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
