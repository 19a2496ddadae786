//! `server` mode for the `local` backend: one long-running process per container, started at
//! the cold start inside the container's cgroup (and the enforcement's extra cgroups) once its
//! enforcement is committed ([`ContainerBackend::start`](super::ContainerBackend::start)), so its
//! start-up already runs on its group's CPUs; it serves one invocation at a time over the
//! framed protocol of [`super::frame`] on its standard input and output.
//!
//! The process's pipe ends are kept as plain non-blocking descriptors and registered with the
//! tokio runtime of whoever runs an invocation, for that invocation only: a warm-lane
//! invocation runs on the caller's runtime, an actor-path one on the actix thread's, and
//! neither waits on the other's I/O driver. Its standard error is drained by a small thread
//! into a bounded tail, so a chatty server never blocks on a full pipe and a failure can quote
//! what it said last.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::frame::{self, ServerEnds, Verdict};
use super::local::ChildJoins;
use super::{Container, ContainerInfo, Enforcement};
use crate::config::FunctionSpec;
use crate::error::ActorError;

/// How much of a server's standard error is kept.
const STDERR_TAIL: usize = 2048;

/// The running servers of one backend, by container id.
pub(super) type Servers = Arc<Mutex<HashMap<String, Server>>>;

/// A container's server process.
#[derive(Debug)]
pub(super) struct Server {
    child: Child,
    /// Its standard input and output, registered with a runtime only for an exchange.
    ends: ServerEnds,
    stderr: Arc<Tail>,
    /// The extra `cgroup.procs` files (v1 cpusets) the process has joined.
    joined: Vec<PathBuf>,
}

fn lock(servers: &Servers) -> std::sync::MutexGuard<'_, HashMap<String, Server>> {
    servers.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `spec`'s command as the server of `container`, inside its cgroup (`dir`). Blocking
/// (a fork): run it on the blocking pool.
pub(super) fn start(
    spec: &FunctionSpec,
    container: &ContainerInfo,
    dir: &Path,
    enforcement: &Enforcement,
) -> Result<Server, ActorError> {
    let spawn_err = |source| ActorError::Spawn {
        function: spec.name.clone(),
        command: spec.command.clone(),
        container: container.id.clone(),
        source,
    };
    // Joined before the exec, as for an `exec`-mode child: the server is started once enforced.
    let ChildJoins {
        files: joins,
        fds,
        sched_ext,
    } = ChildJoins::open(dir, enforcement)?;
    let (uid, gid) = spec.user()?;
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .envs(&spec.env)
        .env("CORRAL_FUNCTION", &spec.name)
        .env("CORRAL_CONTAINER", &container.id)
        .env("CORRAL_MODE", "server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only makes async-signal-safe calls on memory prepared before the
    // fork.
    unsafe {
        cmd.pre_exec(move || {
            super::local::join_cgroups_and_policy(&fds, sched_ext)?;
            super::local::drop_privileges(uid, gid)
        });
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    drop(joins);
    let (stdin, stdout, stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (OwnedFd::from(i), OwnedFd::from(o), e),
            _ => unreachable!("all three were piped"),
        };
    for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
        if let Err(e) = set_nonblocking(fd) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(e));
        }
    }
    let tail = Arc::new(Tail::default());
    let sink = Arc::clone(&tail);
    let drained = std::thread::Builder::new()
        .name(format!("corral-stderr-{}", container.id))
        .spawn(move || drain(stderr, &sink));
    if let Err(e) = drained {
        let _ = child.kill();
        let _ = child.wait();
        return Err(spawn_err(e));
    }
    Ok(Server {
        child,
        ends: ServerEnds {
            stdin: Some(stdin),
            stdout: Some(stdout),
        },
        stderr: tail,
        joined: enforcement.join.clone(),
    })
}

/// The last [`STDERR_TAIL`] bytes a server wrote to its standard error, and whether the
/// stream has ended.
#[derive(Debug, Default)]
struct Tail {
    bytes: Mutex<VecDeque<u8>>,
    ended: AtomicBool,
}

/// Keeps the tail of what the server writes to its standard error, until it ends.
fn drain(mut stderr: impl Read, tail: &Tail) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut bytes = tail.bytes.lock().unwrap_or_else(|e| e.into_inner());
        bytes.extend(&buf[..n]);
        let excess = bytes.len().saturating_sub(STDERR_TAIL);
        bytes.drain(..excess);
    }
    tail.ended.store(true, Ordering::Release);
}

impl Server {
    fn stderr_tail(&self) -> String {
        let bytes = self.stderr.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = bytes.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }

    /// What became of the process, and the tail of its standard error, after giving it up to
    /// 200 ms to finish exiting and its standard error to reach its end (a process that broke
    /// the protocol is usually on its way out, and its last words are what explains it).
    async fn last_words(&mut self) -> (String, String) {
        let mut status = None;
        for _ in 0..200 {
            if status.is_none() {
                status = self.child.try_wait().ok().flatten();
            }
            if status.is_some() && self.stderr.ended.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let fate = match status {
            Some(status) => format!("the process {status}"),
            None => "the process is still running".into(),
        };
        (fate, self.stderr_tail())
    }

    /// Moves the process into the enforcement's extra cgroups (the v1 cpusets of the `cpuset`
    /// backend) when they changed since it last joined.
    fn rejoin(&mut self, join: &[PathBuf]) -> Result<(), ActorError> {
        if self.joined == join {
            return Ok(());
        }
        let pid = self.child.id().to_string();
        for procs in join {
            fs::write(procs, &pid).map_err(|e| ActorError::cgroup("join", procs, e))?;
        }
        self.joined = join.to_vec();
        Ok(())
    }
}

/// A server is never left behind: dropping it (at a destroy, on the blocking pool, or when a
/// cancelled invocation loses it) kills the process and reaps it, which after SIGKILL is
/// immediate.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one invocation on `container`'s server. The server leaves the map for the invocation
/// and goes back in any case (a destroy reaps a broken one).
pub(super) async fn run(
    servers: Servers,
    container: &Container,
    dir: &Path,
    payload: Vec<u8>,
) -> Result<Vec<u8>, ActorError> {
    let spec = &container.spec;
    let id = &container.info.id;
    let failed = |what: String, stderr: String| ActorError::ServerFailed {
        function: spec.name.clone(),
        container: id.clone(),
        what,
        stderr,
    };
    let Some(mut server) = lock(&servers).remove(id) else {
        return Err(failed(
            "its server process is gone (it was lost by an invocation that was cancelled)".into(),
            String::new(),
        ));
    };
    let outcome = async {
        server.rejoin(&container.enforcement.join)?;
        let timeout = spec.timeout();
        let exchanged =
            tokio::time::timeout(timeout, server.ends.exchange(&payload, spec.max_output())).await;
        let Ok(exchanged) = exchanged else {
            super::local::kill_all(dir);
            return Err(ActorError::FunctionTimedOut {
                function: spec.name.clone(),
                container: id.clone(),
                timeout_ms: timeout.as_millis() as u64,
            });
        };
        match frame::verdict(&spec.name, id, "pipes", exchanged) {
            Verdict::Settled(result) => result,
            Verdict::Broken(what) => {
                let (fate, stderr) = server.last_words().await;
                Err(failed(format!("{what}; {fate}"), stderr))
            }
        }
    }
    .await;
    lock(&servers).insert(id.clone(), server);
    outcome
}

/// Stops `id`'s server, if it has one (blocking: run it on the blocking pool).
pub(super) fn stop(servers: &Servers, id: &str) {
    let server = lock(servers).remove(id);
    drop(server);
}
