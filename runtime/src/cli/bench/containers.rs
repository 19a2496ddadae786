//! `corral bench containers`: cold-start and warm-invocation latency of real containers, per
//! backend and mode, timed around `invoke` as a caller sees it.
//!
//! - `local`, `exec` mode: `/bin/cat` per invocation (a fork and an exec each time).
//! - `local`, `server` mode: `corral-serve`, started at the cold start and kept in the warm
//!   container (a frame written and read per invocation).
//!
//! Cold: every invocation creates its container (`max_warm = 0`, so each is destroyed after
//! its invocation); the figure is the invocation's whole time, the container's creation (and
//! for `server`, its process's start) included. Warm: one container kept, invoked back to back.
//! The maps are the `memory` backend's: this measures containers, not enforcement.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use corral::{
    ContainerBackendKind, EnforcementKind, FunctionMode, FunctionSpec, Runtime, RuntimeConfig,
    StartKind,
};

use super::enforce::two_groups;
use super::Figure;

/// Options of `corral bench containers`.
#[derive(Debug, Args)]
pub struct ContainersArgs {
    /// Cold starts timed per backend and mode.
    #[arg(long, default_value_t = 200)]
    pub cold: usize,
    /// Warm invocations timed per backend and mode.
    #[arg(long, default_value_t = 2_000)]
    pub warm: usize,
    /// The cgroup v2 directory the containers are made under (created and removed); default
    /// `corral-bench` under the cgroup2 mount.
    #[arg(long)]
    pub cgroup_parent: Option<PathBuf>,
}

fn config(parent: &std::path::Path, mode: FunctionMode, max_warm: usize) -> Result<RuntimeConfig> {
    let (groups, _, _) = two_groups()?;
    let mut c = RuntimeConfig::with_groups(groups);
    c.monitor.enabled = false;
    c.containers.backend = Some(ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.to_path_buf());
    c.containers.max_warm = max_warm;
    c.enforcement.backend = EnforcementKind::Memory;
    let mut f = FunctionSpec::named("f");
    f.mode = mode;
    f.command = match mode {
        FunctionMode::Exec => vec!["/bin/cat".into()],
        FunctionMode::Server => {
            let exe = std::env::current_exe().context("cannot find the corral binary")?;
            let serve = exe.with_file_name("corral-serve");
            if !serve.is_file() {
                bail!(
                    "{} is missing: the server-mode figures run it; cargo builds it next to corral",
                    serve.display()
                );
            }
            vec![serve.to_string_lossy().into_owned()]
        }
    };
    c.functions = vec![f];
    Ok(c)
}

async fn timed(
    runtime: &corral::RuntimeHandle,
    n: usize,
    want: StartKind,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = runtime.invoke("f", b"ping".to_vec()).await?;
        samples.push(t.elapsed());
        if r.start != want {
            bail!("expected a {want:?} start, got {:?}", r.start);
        }
    }
    Ok(samples)
}

/// Runs the part.
pub fn run(args: &ContainersArgs) -> Result<Vec<Figure>> {
    if args.cold == 0 || args.warm == 0 {
        bail!("--cold and --warm must be at least 1");
    }
    let parent = match &args.cgroup_parent {
        Some(p) => p.clone(),
        None => corral::config::cgroup2_mount()
            .context("no cgroup2 mount: the local backend needs one")?
            .join("corral-bench"),
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = Vec::new();
    for (mode, name) in [
        (FunctionMode::Exec, "exec"),
        (FunctionMode::Server, "server"),
    ] {
        eprintln!("bench containers: local {name}: {} cold starts", args.cold);
        let runtime = Runtime::start(config(&parent, mode, 0)?)?;
        let mut cold = tokio.block_on(timed(&runtime, args.cold, StartKind::Cold));
        tokio.block_on(runtime.shutdown())?;
        figures.push(
            Figure::latency_us(
                &format!("container_cold_local_{name}"),
                format!("local backend, {name} mode: an invocation that creates its container"),
                cold.as_mut().map_err(|e| anyhow::anyhow!("{e:#}"))?,
            )
            .with("backend", "local")
            .with("mode", name),
        );
        eprintln!(
            "bench containers: local {name}: {} warm invocations",
            args.warm
        );
        let runtime = Runtime::start(config(&parent, mode, 1)?)?;
        let first = tokio.block_on(runtime.invoke("f", b"ping".to_vec()));
        let mut warm = first
            .map_err(anyhow::Error::from)
            .and_then(|_| tokio.block_on(timed(&runtime, args.warm, StartKind::Warm)));
        tokio.block_on(runtime.shutdown())?;
        figures.push(
            Figure::latency_us(
                &format!("container_warm_local_{name}"),
                format!("local backend, {name} mode: an invocation on a warm container"),
                warm.as_mut().map_err(|e| anyhow::anyhow!("{e:#}"))?,
            )
            .with("backend", "local")
            .with("mode", name),
        );
    }
    Ok(figures)
}
