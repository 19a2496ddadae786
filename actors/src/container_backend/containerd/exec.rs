//! `exec` mode for the `containerd` backend: one process per invocation, exec'd into the
//! container through the Tasks API, with the payload on its standard input and the result from
//! its standard output.
//!
//! An `exec`-mode container's task is created and never started: its init (`runc init`) waits
//! in the container's namespaces and cgroup for a start that never comes, so the container
//! holds no process of the function between invocations and needs nothing in the root file
//! system beyond the command (runc checks that the command exists when it creates the task).
//! Each invocation makes three fresh FIFOs, execs the command (`CORRAL_GROUP` and
//! `CORRAL_CPUS` in its environment), moves the new process into the enforcement's extra
//! cgroups (the v1 cpusets of the `cpuset` backend on hybrid hosts; on pure cgroup v2 the
//! process is in its container's cgroup, and under its enforcement, from its first
//! instruction), writes the payload and closes its input (`CloseIO`: the shim holds the FIFO
//! open otherwise), reads its output up to `max_output_bytes`, and then waits for and deletes
//! the process. Past the cap or the timeout the process is killed with everything it left in
//! the container (every pid of its cgroup but the init).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::{
    CloseIoRequest, CreateTaskRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::{
    call, cgroup_pids, drain, gone_is_fine, lock, make_fifo, on_backend, open_fifo_end,
    process_spec, refused, Checkout, Shared, EXIT_WAIT, STDERR_TAIL,
};
use crate::config::format_cpu_list;
use crate::error::ActorError;

/// The type of an OCI process spec carried in a `google.protobuf.Any`.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// One invocation's FIFOs.
#[derive(Debug)]
struct Fifos {
    stdin: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Fifos {
    fn remove(&self) {
        for path in [&self.stdin, &self.stdout, &self.stderr] {
            let _ = fs::remove_file(path);
        }
    }
}

/// Why reading an exec'd process's output stopped short.
#[derive(Debug)]
enum OutputError {
    TooLarge,
    Io(io::Error),
}

impl Shared {
    /// The task of an `exec`-mode container: created (its init waits in the container's
    /// namespaces and cgroup), never started. Answers the init's pid and the cgroup id.
    pub(super) async fn create_exec_init(
        &self,
        spec: &crate::config::FunctionSpec,
        id: &str,
        dir: &Path,
    ) -> Result<(u32, u64), ActorError> {
        use std::os::unix::fs::MetadataExt;
        let fifos = self.fifo_dir(id);
        fs::create_dir(&fifos)
            .map_err(|e| ActorError::cgroup("create the FIFO directory", &fifos, e))?;
        let task = call(self.tasks().create(with_namespace!(
            CreateTaskRequest {
                container_id: id.into(),
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
        let ino = fs::metadata(dir)
            .map_err(|e| ActorError::cgroup("stat the container's cgroup (made by runc)", dir, e))?
            .ino();
        Ok((task.pid, ino))
    }

    /// Execs `process` into container `id` as `exec_id` on `fifos` and starts it; answers its
    /// pid.
    async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        fifos: &Fifos,
        process: serde_json::Value,
    ) -> Result<u32, ActorError> {
        let text = |p: &Path| p.display().to_string();
        call(self.tasks().exec(with_namespace!(
            ExecProcessRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                stdin: text(&fifos.stdin),
                stdout: text(&fifos.stdout),
                stderr: text(&fifos.stderr),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.into(),
                    value: serde_json::to_vec(&process).expect("a JSON value serializes"),
                }),
            },
            self.namespace
        )))
        .await
        .map_err(refused(format!(
            "exec process {exec_id} into container {id}"
        )))?;
        let started = call(self.tasks().start(with_namespace!(
            StartRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            },
            self.namespace
        )))
        .await;
        match started {
            Ok(answer) => Ok(answer.pid),
            Err(status) => {
                self.delete_exec(id, exec_id).await;
                Err(refused(format!(
                    "start process {exec_id} in container {id}"
                ))(status))
            }
        }
    }

    /// Ends the exec'd process's standard input.
    async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), ActorError> {
        call(self.tasks().close_io(with_namespace!(
            CloseIoRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                stdin: true,
            },
            self.namespace
        )))
        .await
        .map(|_| ())
        .map_err(refused(format!(
            "close the input of process {exec_id} in container {id}"
        )))
    }

    /// Kills the exec'd process and every process it left in the container's cgroup `dir`
    /// except the init (best effort: what already exited is fine).
    async fn kill_exec(&self, id: &str, exec_id: &str, init: u32, dir: Option<&Path>) {
        let _ = call(self.tasks().kill(with_namespace!(
            KillRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                signal: libc::SIGKILL as u32,
                all: false,
            },
            self.namespace
        )))
        .await;
        if let Some(dir) = dir {
            for pid in cgroup_pids(dir).unwrap_or_default() {
                if pid as u32 != init {
                    // SAFETY: plain kill(2) on a pid read from the container's cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }

    /// Waits (bounded) for the exec'd process to exit, then deletes it; answers its exit
    /// status when it exited.
    async fn reap_exec(&self, id: &str, exec_id: &str) -> Option<u32> {
        let mut tasks = self.tasks();
        let wait = tasks.wait(with_namespace!(
            WaitRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            },
            self.namespace
        ));
        let status = match tokio::time::timeout(EXIT_WAIT, wait).await {
            Ok(Ok(answer)) => Some(answer.into_inner().exit_status),
            _ => None,
        };
        self.delete_exec(id, exec_id).await;
        status
    }

    /// Deletes the exec'd process from the shim (it keeps an exited one until then).
    async fn delete_exec(&self, id: &str, exec_id: &str) {
        let deleted = gone_is_fine(
            call(self.tasks().delete_process(with_namespace!(
                DeleteProcessRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                self.namespace
            )))
            .await,
        );
        if let Err(status) = deleted {
            tracing::warn!(
                container = id,
                exec = exec_id,
                error = %super::status_error(&status),
                "cannot delete an exec'd process"
            );
        }
    }
}

/// Reads `rx` to its end, refusing more than `limit` bytes.
async fn read_capped(rx: &mut pipe::Receiver, limit: u64) -> Result<Vec<u8>, OutputError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if (out.len() + n) as u64 > limit {
                    return Err(OutputError::TooLarge);
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) => return Err(OutputError::Io(e)),
        }
    }
}

/// One invocation of an `exec`-mode function in `container`.
pub(super) async fn run(
    shared: Arc<Shared>,
    container: Checkout,
    payload: Vec<u8>,
) -> Result<Vec<u8>, ActorError> {
    let Checkout {
        id,
        spec,
        cgroup,
        join,
        group,
        cpus,
    } = container;
    let spawn_err = |source| ActorError::Spawn {
        function: spec.name.clone(),
        command: spec.command.clone(),
        container: id.clone(),
        source,
    };
    let Some(init) = lock(&shared.execs).get(&id).copied() else {
        return Err(spawn_err(io::Error::other(
            "corral holds no task for this container (it was not created by this runtime)",
        )));
    };
    let exec_id = format!(
        "run-{}",
        shared
            .exec_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let dir = shared.fifo_dir(&id);
    let fifos = Fifos {
        stdin: dir.join(format!("{exec_id}.stdin")),
        stdout: dir.join(format!("{exec_id}.stdout")),
        stderr: dir.join(format!("{exec_id}.stderr")),
    };
    let outcome = invoke(
        &shared,
        &id,
        &exec_id,
        init,
        &fifos,
        &spec,
        cgroup.as_deref(),
        &join,
        &group,
        &cpus,
        payload,
    )
    .await;
    fifos.remove();
    outcome
}

/// The body of [`run`], once the FIFOs are named (the caller removes them in any case).
#[allow(clippy::too_many_arguments)]
async fn invoke(
    shared: &Arc<Shared>,
    id: &str,
    exec_id: &str,
    init: u32,
    fifos: &Fifos,
    spec: &crate::config::FunctionSpec,
    cgroup: Option<&Path>,
    join: &[PathBuf],
    group: &str,
    cpus: &[u32],
    payload: Vec<u8>,
) -> Result<Vec<u8>, ActorError> {
    let spawn_err = |source| ActorError::Spawn {
        function: spec.name.clone(),
        command: spec.command.clone(),
        container: id.to_string(),
        source,
    };
    for path in [&fifos.stdin, &fifos.stdout, &fifos.stderr] {
        make_fifo(path).map_err(spawn_err)?;
    }
    let stdin = open_fifo_end(&fifos.stdin, true).map_err(spawn_err)?;
    let stdout = open_fifo_end(&fifos.stdout, false).map_err(spawn_err)?;
    let stderr = open_fifo_end(&fifos.stderr, false).map_err(spawn_err)?;
    let process = process_spec(
        spec,
        id,
        &[
            ("CORRAL_GROUP", group.to_string()),
            ("CORRAL_CPUS", format_cpu_list(cpus)),
        ],
    );
    let (starter, sid, seid) = (Arc::clone(shared), id.to_string(), exec_id.to_string());
    let start_fifos = Fifos {
        stdin: fifos.stdin.clone(),
        stdout: fifos.stdout.clone(),
        stderr: fifos.stderr.clone(),
    };
    let pid = on_backend(shared, "exec a process", async move {
        starter.exec_start(&sid, &seid, &start_fifos, process).await
    })
    .await??;
    // Every further step ends with the process reaped (killed first where it failed).
    let killer = |shared: Arc<Shared>| {
        let (id, exec_id, cgroup) = (
            id.to_string(),
            exec_id.to_string(),
            cgroup.map(Path::to_path_buf),
        );
        async move {
            let s = Arc::clone(&shared);
            let _ = on_backend(&shared, "kill an exec'd process", async move {
                s.kill_exec(&id, &exec_id, init, cgroup.as_deref()).await
            })
            .await;
        }
    };
    for procs in join {
        match fs::write(procs, pid.to_string()) {
            Ok(()) => {}
            // It already exited (a function that ignores its input): nothing to confine.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break,
            Err(e) => {
                killer(Arc::clone(shared)).await;
                reap(shared, id, exec_id).await;
                return Err(ActorError::cgroup("join", procs, e));
            }
        }
    }
    let registered = (|| {
        Ok::<_, io::Error>((
            pipe::Sender::from_owned_fd_unchecked(stdin)?,
            pipe::Receiver::from_owned_fd_unchecked(stdout)?,
            pipe::Receiver::from_owned_fd_unchecked(stderr)?,
        ))
    })();
    let (mut tx, mut rx, erx) = match registered {
        Ok(ends) => ends,
        Err(e) => {
            killer(Arc::clone(shared)).await;
            reap(shared, id, exec_id).await;
            return Err(spawn_err(io::Error::other(format!(
                "its FIFOs cannot be registered with the caller's tokio runtime ({e}); build \
                 that runtime with its IO driver (enable_all)"
            ))));
        }
    };
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
    let feed = async {
        // A function that ignores its input closes it early; that is fine.
        let _ = tx.write_all(&payload).await;
        drop(tx);
        let (closer, cid, ceid) = (Arc::clone(shared), id.to_string(), exec_id.to_string());
        let closed = on_backend(shared, "close an exec'd process's input", async move {
            closer.close_stdin(&cid, &ceid).await
        })
        .await;
        if let Err(e) = closed.and_then(|c| c) {
            tracing::warn!(container = id, exec = exec_id, error = %e, "cannot close its input");
        }
    };
    let limit = spec.max_output();
    let read = async {
        let out = read_capped(&mut rx, limit).await;
        if matches!(out, Err(OutputError::TooLarge)) {
            // At once: a function that writes without end must not keep running.
            killer(Arc::clone(shared)).await;
        }
        out
    };
    let timeout = spec.timeout();
    let ran = async { tokio::join!(feed, read, drain(erx, Arc::clone(&tail))).1 };
    let output = match tokio::time::timeout(timeout, ran).await {
        Ok(output) => output,
        Err(_) => {
            killer(Arc::clone(shared)).await;
            reap(shared, id, exec_id).await;
            return Err(ActorError::FunctionTimedOut {
                function: spec.name.clone(),
                container: id.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            });
        }
    };
    let status = reap(shared, id, exec_id).await;
    let stderr = {
        let tail = lock(&tail);
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    };
    match (output, status) {
        (Err(OutputError::TooLarge), _) => Err(ActorError::OutputTooLarge {
            function: spec.name.clone(),
            container: id.to_string(),
            limit,
        }),
        (Err(OutputError::Io(e)), _) => Err(spawn_err(e)),
        (Ok(out), Some(0)) => Ok(out),
        (Ok(_), status) => Err(ActorError::FunctionFailed {
            function: spec.name.clone(),
            container: id.to_string(),
            status: match status {
                Some(code) => format!("exit status: {code}"),
                None => "no exit status (it did not exit in time after its output ended)".into(),
            },
            stderr,
        }),
    }
}

/// Waits for and deletes the exec'd process, on the backend's runtime.
async fn reap(shared: &Arc<Shared>, id: &str, exec_id: &str) -> Option<u32> {
    let (s, id, exec_id) = (Arc::clone(shared), id.to_string(), exec_id.to_string());
    on_backend(shared, "reap an exec'd process", async move {
        s.reap_exec(&id, &exec_id).await
    })
    .await
    .ok()
    .flatten()
}
