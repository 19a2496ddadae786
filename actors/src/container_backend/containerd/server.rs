//! `server` mode for the `containerd` backend: the function's server is the task's init,
//! started at the cold start, and serves every invocation of its container over the framed
//! protocol of [`super::super::frame`] on FIFOs the shim copies to its standard input and
//! output.
//!
//! corral opens its FIFO ends before the task exists (the readers non-blocking, standard input
//! read-write so that it always has a reader) and reads nothing until the task is created (a
//! FIFO with no writer yet reads as end of file). The descriptors are kept plain and
//! registered with the tokio runtime of whoever runs an invocation, for that invocation only,
//! so a warm invocation makes no request to the daemon and has no thread hop. Standard error
//! is drained on the backend's runtime into a bounded tail that failures quote.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::{CreateTaskRequest, StartRequest};
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use super::{
    call, cgroup_pids, drain, lock, make_fifo, on_backend, open_fifo_end, refused, Checkout,
    Shared, FATE_WAIT, STDERR_TAIL,
};
use crate::config::FunctionSpec;
use crate::container_backend::frame::{self, ServerEnds, Verdict};
use crate::error::ActorError;

/// One container's server: the corral ends of its FIFOs.
#[derive(Debug)]
pub(super) struct Server {
    /// Its standard input and output FIFOs, registered with a runtime only for an exchange.
    ends: ServerEnds,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    /// The task draining its standard error; it ends when the shim closes the FIFO.
    drain: Option<JoinHandle<()>>,
    /// The extra `cgroup.procs` files (v1 cpusets) its processes have joined.
    joined: Vec<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
    }
}

impl Shared {
    /// Makes the FIFOs and creates the task, whose process waits, before its exec, for
    /// [`Shared::start_task`]; answers the server and its cgroup id (runc made the cgroup).
    pub(super) async fn create_task(
        &self,
        spec: &FunctionSpec,
        id: &str,
        dir: &Path,
    ) -> Result<(Server, u64), ActorError> {
        let fifos = self.fifo_dir(id);
        let fifo_err = |what: &str, path: &Path, e: io::Error| ActorError::Containerd {
            operation: format!(
                "get a FIFO for container {id}: cannot {what} {}",
                path.display()
            ),
            source: Box::new(e),
        };
        fs::create_dir(&fifos).map_err(|e| fifo_err("create", &fifos, e))?;
        let [stdin, stdout, stderr] = ["stdin", "stdout", "stderr"].map(|n| fifos.join(n));
        for path in [&stdin, &stdout, &stderr] {
            make_fifo(path).map_err(|e| fifo_err("make", path, e))?;
        }
        let open = |path: &Path, write: bool| {
            open_fifo_end(path, write).map_err(|e| fifo_err("open", path, e))
        };
        let stdin_fd = open(&stdin, true)?;
        let stdout_fd = open(&stdout, false)?;
        let stderr_fd = open(&stderr, false)?;
        let path_text = |p: &Path| p.display().to_string();
        call(self.tasks().create(with_namespace!(
            CreateTaskRequest {
                container_id: id.into(),
                stdin: path_text(&stdin),
                stdout: path_text(&stdout),
                stderr: path_text(&stderr),
                terminal: false,
                ..Default::default()
            },
            self.namespace
        )))
        .await
        .map_err(refused(format!(
            "create the task of container {id} (command {:?} in rootfs {})",
            spec.command,
            self.rootfs.display()
        )))?;
        // Only now: before the shim opened its write end, a read would see end of file.
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let receiver = pipe::Receiver::from_owned_fd_unchecked(stderr_fd)
            .map_err(|e| fifo_err("register", &stderr, e))?;
        let drain = self.handle.spawn(drain(receiver, Arc::clone(&tail)));
        let server = Server {
            ends: ServerEnds {
                stdin: Some(stdin_fd),
                stdout: Some(stdout_fd),
            },
            stderr: tail,
            drain: Some(drain),
            joined: Vec::new(),
        };
        let ino = fs::metadata(dir)
            .map_err(|e| ActorError::cgroup("stat the container's cgroup (made by runc)", dir, e))?
            .ino();
        Ok((server, ino))
    }

    /// Starts container `id`'s task, created by [`Shared::create_task`], once its enforcement
    /// is committed: first its process joins the enforcement's extra cgroups (`join`, the v1
    /// cpusets), then it execs the server, whose first instruction runs on its group's CPUs.
    pub(super) async fn start_task(
        &self,
        id: &str,
        dir: Option<&Path>,
        join: &[PathBuf],
    ) -> Result<(), ActorError> {
        if let Some(dir) = dir {
            if let Some(server) = lock(&self.servers).get_mut(id) {
                server.rejoin(dir, join)?;
            }
        }
        call(self.tasks().start(with_namespace!(
            StartRequest {
                container_id: id.into(),
                ..Default::default()
            },
            self.namespace
        )))
        .await
        .map_err(refused(format!("start the task of container {id}")))?;
        Ok(())
    }
}

impl Server {
    /// Moves the container's processes (those in its cgroup v2 directory `dir`) into the
    /// enforcement's extra cgroups (the v1 cpusets of the `cpuset` backend) when they changed
    /// since they last joined. The `cpuset` backend moves them at each enforcement too; this
    /// keeps a server right even where an enforcement was committed before it started.
    fn rejoin(&mut self, dir: &Path, join: &[PathBuf]) -> Result<(), ActorError> {
        if self.joined == join {
            return Ok(());
        }
        let pids =
            cgroup_pids(dir).map_err(|e| ActorError::cgroup("list the processes of", dir, e))?;
        for procs in join {
            for pid in &pids {
                match fs::write(procs, pid.to_string()) {
                    Ok(()) => {}
                    // It exited since the list was read: nothing to move.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(ActorError::cgroup("join", procs, e)),
                }
            }
        }
        self.joined = join.to_vec();
        Ok(())
    }

    /// The tail of its standard error, once the drain has read what the shim forwarded (or
    /// after [`FATE_WAIT`]).
    async fn stderr_tail(&mut self) -> String {
        if let Some(mut drain) = self.drain.take() {
            if tokio::time::timeout(FATE_WAIT, &mut drain).await.is_err() {
                self.drain = Some(drain);
            }
        }
        let tail = lock(&self.stderr);
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

/// One invocation on `container`'s server. The server leaves the map for the invocation and
/// goes back in any case (a destroy removes a broken one).
pub(super) async fn serve(
    shared: Arc<Shared>,
    container: Checkout,
    payload: Vec<u8>,
) -> Result<Vec<u8>, ActorError> {
    let Checkout {
        id,
        spec,
        cgroup,
        join,
        ..
    } = container;
    let failed = |what: String, stderr: String| ActorError::ServerFailed {
        function: spec.name.clone(),
        container: id.clone(),
        what,
        stderr,
    };
    let Some(mut server) = lock(&shared.servers).remove(&id) else {
        return Err(failed(
            "corral holds no standard input and output for it (an earlier invocation was \
             cancelled, or it was not created by this runtime)"
                .into(),
            String::new(),
        ));
    };
    if let Some(dir) = &cgroup {
        if let Err(e) = server.rejoin(dir, &join) {
            lock(&shared.servers).insert(id, server);
            return Err(e);
        }
    }
    let timeout = spec.timeout();
    let exchanged =
        tokio::time::timeout(timeout, server.ends.exchange(&payload, spec.max_output())).await;
    // What became of the process, when the exchange says it may have died.
    let fate = |shared: Arc<Shared>, id: String| async move {
        let waiter = Arc::clone(&shared);
        let status = on_backend(&shared, "wait for a task", async move {
            waiter.exit_status(&id, FATE_WAIT).await
        })
        .await;
        match status {
            Ok(Some(code)) => format!("the process exited with status {code}"),
            _ => "the process is still running".to_string(),
        }
    };
    let outcome = match exchanged {
        Err(_) => {
            let (killer, kill_id) = (Arc::clone(&shared), id.clone());
            let killed = on_backend(&shared, "kill a task", async move {
                killer.kill(&kill_id).await
            })
            .await;
            if let Err(e) = killed.and_then(|k| k) {
                tracing::warn!(container = id, error = %e, "cannot kill a timed-out server");
            }
            Err(ActorError::FunctionTimedOut {
                function: spec.name.clone(),
                container: id.clone(),
                timeout_ms: timeout.as_millis() as u64,
            })
        }
        Ok(exchanged) => match frame::verdict(&spec.name, &id, "FIFOs", exchanged) {
            Verdict::Settled(result) => result,
            Verdict::Broken(what) => {
                let fate = fate(Arc::clone(&shared), id.clone()).await;
                Err(failed(
                    format!("{what}; {fate}"),
                    server.stderr_tail().await,
                ))
            }
        },
    };
    lock(&shared.servers).insert(id, server);
    outcome
}
