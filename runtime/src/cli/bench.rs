//! `corral bench`: measures, on this machine, what corral's design rests on.
//!
//! - **Remap cost**: moving a cgroup with busy tasks between two groups, alternately, through
//!   each enforcement mechanism: one update of the pinned cgroup map (`bpf`, with and without the
//!   `SCHED_EXT` policy pass the map writer does), versus a `cpuset.cpus` write (`cpuset`: v2
//!   where the controller is enabled, else v1), which makes the kernel walk and migrate every
//!   task of the cgroup.
//! - **Invocation path**: `invoke` through the public handle from a tokio worker thread, with the
//!   `sim` container backend and `memory` enforcement, so only corral's own overhead (actor
//!   messages and the two thread hops) is timed.
//!
//! Figures are medians and 99th percentiles of one run; compare ratios within a run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use corral::{BpfMapBackend, GroupConfig, Runtime, RuntimeConfig};
use corral_actors::config::{validate_groups, CpuGroup};
use corral_actors::container_backend::{CgroupId, CgroupRef};
use corral_actors::map_backend::cpuset::CpusetBackend;
use corral_actors::map_backend::MapBackend;
use serde::Serialize;

use super::check::cgroup2_root;
use super::report::Percentiles;

/// Measure enforcement and invocation-path costs on this machine.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Remaps per mechanism.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Busy processes in the remapped cgroup (each one thread).
    #[arg(long, default_value_t = 4)]
    pub tasks: u32,
    /// Invocations for the invocation-path measurement.
    #[arg(long, default_value_t = 2000)]
    pub invocations: usize,
    /// Where to pin the maps the remaps write. Point it at a running scheduler's pins (e.g.
    /// /sys/fs/bpf/corral) to time remaps that really move tasks; pins the benchmark creates
    /// are removed afterwards, existing ones are left in place.
    #[arg(long, default_value = "/sys/fs/bpf/corral-bench")]
    pub pin_dir: PathBuf,
    /// Write the figures as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One measured quantity.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// Samples taken.
    pub samples: usize,
    /// p50 and p99.
    pub latency: Percentiles,
}

/// Busy processes in a cgroup, killed and removed on drop.
struct BusyCgroup {
    dir: PathBuf,
    children: Vec<Child>,
}

impl BusyCgroup {
    fn start(dir: PathBuf, tasks: u32, spin: &Path) -> Result<BusyCgroup> {
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut busy = BusyCgroup {
            dir,
            children: Vec::new(),
        };
        for _ in 0..tasks {
            let child = Command::new(spin)
                .args(["--millis", "3600000"])
                .spawn()
                .context("cannot start corral-spin")?;
            let pid = child.id();
            busy.children.push(child);
            std::fs::write(busy.dir.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("cannot move pid {pid} into {}", busy.dir.display()))?;
        }
        Ok(busy)
    }

    fn cgroup(&self) -> Result<CgroupRef> {
        let id = corral_bpf::cgroup_id_of(&self.dir)?;
        Ok(CgroupRef {
            id: CgroupId(id),
            path: Some(self.dir.clone()),
        })
    }
}

impl Drop for BusyCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn remap_loop(
    backend: &mut dyn MapBackend,
    cgroup: &CgroupRef,
    groups: &[CpuGroup],
    n: usize,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let group = &groups[i % 2];
        let start = Instant::now();
        backend
            .enforce(cgroup, group)
            .with_context(|| format!("remap {i} via {}", backend.name()))?;
        samples.push(start.elapsed());
    }
    backend.remove(cgroup)?;
    Ok(samples)
}

fn figure(what: impl Into<String>, mut samples: Vec<Duration>) -> Figure {
    let n = samples.len();
    Figure {
        what: what.into(),
        samples: n,
        latency: Percentiles::of(&mut samples).unwrap_or_default(),
    }
}

pub fn run(args: BenchArgs) -> Result<i32> {
    if args.iterations < 2 || args.invocations < 2 {
        bail!("--iterations and --invocations must be at least 2");
    }
    let online = corral_actors::config::online_cpus()?;
    if online.len() < 2 {
        bail!(
            "the remap benchmark needs at least 2 online CPUs (found {})",
            online.len()
        );
    }
    let half = online.len() / 2;
    let list = |cpus: &[u32]| corral_actors::config::format_cpu_list(cpus);
    let configs = vec![
        GroupConfig {
            name: "a".into(),
            cpus: list(&online[..half]),
            slice_us: 5000,
            order: Default::default(),
            borrow: false,
            exclusive: false,
        },
        GroupConfig {
            name: "b".into(),
            cpus: list(&online[half..]),
            slice_us: 5000,
            order: Default::default(),
            borrow: false,
            exclusive: false,
        },
    ];
    let groups = validate_groups(&configs, &online)?;
    let spin = super::config::spin_binary()?;
    let root = cgroup2_root().context("no cgroup2 file system is mounted")?;
    let sched_ext = corral_bpf::check_sched_ext_support().is_ok();
    let mut figures = Vec::new();

    eprintln!(
        "bench: remapping a cgroup with {} busy tasks between CPUs {} and {}, {} times per mechanism",
        args.tasks, configs[0].cpus, configs[1].cpus, args.iterations
    );
    {
        let busy = BusyCgroup::start(root.join("corral-bench"), args.tasks, &spin)?;
        let cgroup = busy.cgroup()?;
        let pin_dir = args.pin_dir.clone();
        let created_pins = !pin_dir.exists();
        let maps = corral_bpf::PinnedMaps::open_or_create(&pin_dir)?;
        let mut bpf = BpfMapBackend::open(&pin_dir)?;
        bpf.publish_groups(&groups)?;
        let mut raw = Vec::with_capacity(args.iterations);
        for i in 0..args.iterations {
            let start = Instant::now();
            maps.cgroups()
                .insert(cgroup.id.0, (i % 2) as u32, corral_bpf::CgroupFlags::NONE)?;
            raw.push(start.elapsed());
        }
        maps.cgroups().remove(cgroup.id.0)?;
        figures.push(figure(
            "bpf: cgroup-map insert (checked update + generation bump)",
            raw,
        ));
        if sched_ext {
            figures.push(figure(
                format!(
                    "bpf: map writer enforce (update + SCHED_EXT pass over {} threads)",
                    args.tasks
                ),
                remap_loop(&mut bpf, &cgroup, &groups, args.iterations)?,
            ));
        } else {
            eprintln!("bench: sched_ext is missing here, so the SCHED_EXT pass of the bpf map writer is not measured");
        }
        drop(bpf);
        drop(maps);
        if created_pins {
            corral_bpf::PinnedMaps::remove_pins(&pin_dir)?;
        }

        let v1_root = PathBuf::from(corral_actors::map_backend::cpuset::DEFAULT_V1_ROOT);
        let mut cpuset = CpusetBackend::new(&v1_root, "corral-bench");
        cpuset.publish_groups(&groups)?;
        let flavour = if busy.dir.join("cpuset.cpus").exists() {
            "v2"
        } else {
            "v1"
        };
        figures.push(figure(
            format!(
                "cpuset ({flavour}): cpuset.cpus write migrating {} tasks",
                args.tasks
            ),
            remap_loop(&mut cpuset, &cgroup, &groups, args.iterations)?,
        ));
        cpuset.close()?;
    }

    eprintln!(
        "bench: {} invocations through the handle (sim containers, memory enforcement)",
        args.invocations
    );
    let mut config = RuntimeConfig::with_groups(configs.clone());
    config.enforcement.backend = corral::EnforcementKind::Memory;
    config.monitor.enabled = false;
    config.functions.push(corral::FunctionSpec::named("noop"));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let handle = Runtime::start(config)?;
    let (totals, enforcement, hops) = tokio.block_on(async {
        let (mut totals, mut enforcement, mut hops) = (Vec::new(), Vec::new(), 0u32);
        for _ in 0..args.invocations {
            let r = handle.invoke("noop", Vec::new()).await?;
            totals.push(r.timings.total);
            enforcement.push(r.timings.enforcement);
            hops = hops.max(r.thread_hops);
        }
        anyhow::Ok((totals, enforcement, hops))
    })?;
    tokio.block_on(handle.shutdown())?;
    figures.push(figure(
        format!("invoke end to end ({hops} thread hops)"),
        totals,
    ));
    figures.push(figure(
        "invoke: enforcement step (memory backend)",
        enforcement,
    ));

    println!(
        "{:<72} {:>8} {:>12} {:>12}",
        "measurement", "samples", "p50", "p99"
    );
    for f in &figures {
        println!(
            "{:<72} {:>8} {:>10.1}µs {:>10.1}µs",
            f.what, f.samples, f.latency.p50_us, f.latency.p99_us
        );
    }
    let bpf = figures
        .iter()
        .find(|f| f.what.starts_with("bpf: cgroup-map insert"));
    let cpuset = figures.iter().find(|f| f.what.starts_with("cpuset"));
    if let (Some(b), Some(c)) = (bpf, cpuset) {
        println!(
            "remap: a cpuset write costs {:.0}x a cgroup-map update at the median",
            c.latency.p50_us / b.latency.p50_us.max(1e-3)
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(0)
}
