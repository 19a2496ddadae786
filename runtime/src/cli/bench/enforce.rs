//! Enforcement latency: what it costs to put a cgroup on a CPU group, three ways, on one loaded
//! cgroup (busy spinners and sleeping processes), alternating between two groups.
//!
//! - `enforce_actor_bpf`: an [`EnforceGroup`] message to a [`MapWriter`] over real pinned maps,
//!   sent from an actor context on the actix thread as the container manager sends it, timed
//!   until the acknowledgement arrives (mailbox, handler, map update, reply);
//! - `enforce_direct_bpf`: the same map update made directly by this process;
//! - `enforce_cpuset`: a `cpuset.cpus` write through corral's `cpuset` backend, which makes the
//!   kernel migrate every task of the cgroup (v2 where the controller is enabled, else v1).
//!
//! The `_mapped_<n>` series repeat the two map paths with 10, 100, 1,000 and 10,000 more
//! cgroups mapped, to show how the cost grows with the number of mapped cgroups (it should
//! not: the map is a kernel hash, the writer's mirror a `BTreeMap`);
//! `enforce_cgroup_map_capacity` is how many cgroups the map holds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::{bail, Context, Result};
use clap::Args;
use corral::{BpfMapBackend, GroupConfig};
use corral_actors::config::{validate_groups, validate_host, CpuGroup, GroupId, HostConfig};
use corral_actors::container_backend::{CgroupId, CgroupRef};
use corral_actors::map_backend::cpuset::CpusetBackend;
use corral_actors::map_backend::MapBackend;
use corral_actors::map_writer::MapWriter;
use corral_actors::messages::{ClearEnforcements, EnforceGroup, PublishGroups};
use corral_actors::supervision::Failpoints;
use corral_actors::telemetry::Telemetry;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Figure, LoadedCgroup};
use crate::cli::check::cgroup2_root;

/// Fake cgroup ids for the "many mapped" figures start here (no real cgroup has such an id).
const FILLER_BASE: u64 = 1 << 62;
/// Mapped cgroups (besides the measured one) at each step of the `_mapped_<n>` series.
const LEVELS: [u64; 4] = [10, 100, 1_000, 10_000];

/// Options of `corral bench enforce`.
#[derive(Debug, Args)]
pub struct EnforceArgs {
    /// Enforcements per mechanism (the cpuset write is slow: it gets min(ops, --cpuset-ops)).
    #[arg(long, default_value_t = 10_000)]
    pub ops: usize,
    /// cpuset writes (each migrates the cgroup's tasks; milliseconds apiece under load).
    #[arg(long, default_value_t = 10_000)]
    pub cpuset_ops: usize,
    /// Busy (spinning) processes in the remapped cgroup.
    #[arg(long, default_value_t = 4)]
    pub busy: u32,
    /// Idle (sleeping) processes in the remapped cgroup.
    #[arg(long, default_value_t = 4)]
    pub idle: u32,
    /// Where to pin the maps. Pins the benchmark creates are removed afterwards, existing
    /// ones (a running scheduler's, e.g. /sys/fs/bpf/corral) are written and left in place.
    #[arg(long, default_value = "/sys/fs/bpf/corral-bench")]
    pub pin_dir: PathBuf,
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Two groups splitting the online CPUs.
pub(crate) fn two_groups() -> Result<(Vec<GroupConfig>, Vec<CpuGroup>, Vec<u32>)> {
    let online = corral_actors::config::online_cpus()?;
    if online.len() < 2 {
        bail!(
            "the enforcement benchmark needs at least 2 online CPUs (found {})",
            online.len()
        );
    }
    let half = online.len() / 2;
    let list = corral_actors::config::format_cpu_list;
    let group = |name: &str, cpus: &[u32]| GroupConfig {
        name: name.into(),
        cpus: list(cpus),
        slice_us: 5000,
        order: Default::default(),
        borrow: false,
        exclusive: false,
    };
    let configs = vec![group("a", &online[..half]), group("b", &online[half..])];
    let groups = validate_groups(&configs, &online)?;
    Ok((configs, groups, online))
}

/// Times `n` direct map updates of `cgroup`, alternating the two groups.
fn direct(
    maps: &corral_bpf::PinnedMaps,
    cgroup: CgroupId,
    n: usize,
    bar: &ProgressBar,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        maps.cgroups()
            .insert(cgroup.0, (i % 2) as u32, corral_bpf::CgroupFlags::NONE)?;
        samples.push(start.elapsed());
        bar.inc(1);
    }
    Ok(samples)
}

/// What the actor run measured.
struct ActorRun {
    plain: Vec<Duration>,
    /// One per [`LEVELS`] step.
    filled: Vec<Vec<Duration>>,
}

/// Runs a map writer over `backend` on a fresh actix system and times `n` acknowledged
/// enforcements of `cgroup`, then `n` more at each of [`LEVELS`] other cgroups mapped through
/// it.
fn actor(
    backend: BpfMapBackend,
    groups: Vec<CpuGroup>,
    host: corral_actors::config::HostGroup,
    cgroup: CgroupRef,
    n: usize,
) -> Result<ActorRun> {
    let bar = progress((1 + LEVELS.len()) * n, "actor path (map writer)");
    let shown = bar.clone();
    let run = actix::System::new().block_on(async move {
        let writer = MapWriter::new(
            Box::new(backend),
            groups.clone(),
            Arc::new(Telemetry::new()),
            Arc::new(Failpoints::new()),
        )
        .start();
        writer
            .send(PublishGroups { groups, host })
            .await
            .context("map writer mailbox")??;
        let timed = |n: usize| {
            let writer = writer.clone();
            let cgroup = cgroup.clone();
            let bar = bar.clone();
            async move {
                let mut samples = Vec::with_capacity(n);
                for i in 0..n {
                    let msg = EnforceGroup {
                        cgroup: cgroup.clone(),
                        group: GroupId((i % 2) as u32),
                    };
                    let start = Instant::now();
                    writer.send(msg).await.context("map writer mailbox")??;
                    samples.push(start.elapsed());
                    bar.inc(1);
                }
                anyhow::Ok(samples)
            }
        };
        let plain = timed(n).await?;
        let mut filled = Vec::new();
        let mut mapped = 0;
        for level in LEVELS {
            for k in mapped..level {
                let filler = CgroupRef {
                    id: CgroupId(FILLER_BASE + k),
                    path: None,
                };
                writer
                    .send(EnforceGroup {
                        cgroup: filler,
                        group: GroupId((k % 2) as u32),
                    })
                    .await
                    .context("map writer mailbox")??;
            }
            mapped = level;
            filled.push(timed(n).await?);
        }
        writer
            .send(ClearEnforcements)
            .await
            .context("map writer mailbox")??;
        anyhow::Ok(ActorRun { plain, filled })
    });
    shown.finish_and_clear();
    run
}

/// Times `n` enforcements through `backend` (the cpuset backend), alternating the groups.
fn through_backend(
    backend: &mut dyn MapBackend,
    cgroup: &CgroupRef,
    groups: &[CpuGroup],
    n: usize,
) -> Result<Vec<Duration>> {
    let bar = progress(n, "cpuset.cpus writes");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        backend
            .enforce(cgroup, &groups[i % 2])
            .with_context(|| format!("enforcement {i} via {}", backend.name()))?;
        samples.push(start.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    backend.remove(cgroup)?;
    Ok(samples)
}

/// Runs the part.
pub fn run(args: &EnforceArgs) -> Result<Vec<Figure>> {
    if args.ops < 2 || args.cpuset_ops < 2 {
        bail!("--ops and --cpuset-ops must be at least 2");
    }
    let (configs, groups, online) = two_groups()?;
    let host = validate_host(&HostConfig::default(), &groups, &online)?;
    let spin = crate::cli::config::spin_binary()?;
    let root = cgroup2_root().context("no cgroup2 file system is mounted")?;
    let load = LoadedCgroup::start(
        root.join("corral-bench-enforce"),
        args.busy,
        args.idle,
        &spin,
    )?;
    let cgroup = load.cgroup()?;
    let tasks = format!("{} busy + {} idle processes", args.busy, args.idle);
    eprintln!(
        "bench enforce: a cgroup of {tasks} alternates between CPUs {} and {}, {} times per map \
         path and {} times through cpuset",
        configs[0].cpus, configs[1].cpus, args.ops, args.cpuset_ops
    );
    let mut figures = Vec::new();

    let created_pins = !args.pin_dir.exists();
    let outcome = (|| -> Result<()> {
        let backend = BpfMapBackend::open(&args.pin_dir)?;
        let maps = corral_bpf::PinnedMaps::open_or_create(&args.pin_dir)?;
        let ActorRun {
            mut plain,
            mut filled,
        } = actor(
            backend,
            groups.clone(),
            host.clone(),
            cgroup.clone(),
            args.ops,
        )?;
        // The writer published the groups and removed its enforcements at close; publish the
        // groups again for the direct updates (a map entry must name a published group).
        let mut again = BpfMapBackend::open(&args.pin_dir)?;
        again.publish_groups(&groups)?;
        let bar = progress((1 + LEVELS.len()) * args.ops, "direct map update");
        let mut direct_plain = direct(&maps, cgroup.id, args.ops, &bar)?;
        let mut direct_filled = Vec::new();
        let mut mapped = 0;
        for level in LEVELS {
            for k in mapped..level {
                maps.cgroups().insert(
                    FILLER_BASE + k,
                    (k % 2) as u32,
                    corral_bpf::CgroupFlags::NONE,
                )?;
            }
            mapped = level;
            direct_filled.push(direct(&maps, cgroup.id, args.ops, &bar)?);
        }
        bar.finish_and_clear();
        for k in 0..mapped {
            maps.cgroups().remove(FILLER_BASE + k)?;
        }
        let capacity = maps.cgroups().capacity();
        maps.cgroups().remove(cgroup.id.0)?;
        again.close()?;

        figures.push(
            Figure::latency_us(
                "enforce_actor_bpf",
                "EnforceGroup to the map writer, committed on pinned maps, acknowledged",
                &mut plain,
            )
            .with("tasks", tasks.clone()),
        );
        figures.push(Figure::latency_us(
            "enforce_direct_bpf",
            "cgroup-map update from the same process",
            &mut direct_plain,
        ));
        for (level, (actor, direct)) in LEVELS.iter().zip(filled.iter_mut().zip(&mut direct_filled))
        {
            figures.push(
                Figure::latency_us(
                    &format!("enforce_actor_bpf_mapped_{level}"),
                    format!("actor path with {level} more cgroups mapped"),
                    actor,
                )
                .with("mapped", *level),
            );
            figures.push(
                Figure::latency_us(
                    &format!("enforce_direct_bpf_mapped_{level}"),
                    format!("direct update with {level} more cgroups mapped"),
                    direct,
                )
                .with("mapped", *level),
            );
        }
        figures.push(Figure::count(
            "enforce_cgroup_map_capacity",
            "cgroups the pinned cgroup map holds (its max_entries)",
            capacity as f64,
            "cgroups",
        ));
        Ok(())
    })();
    if created_pins {
        corral_bpf::PinnedMaps::remove_pins(&args.pin_dir)?;
    }
    outcome?;

    let v1_root = PathBuf::from(corral_actors::map_backend::cpuset::DEFAULT_V1_ROOT);
    let mut cpuset = CpusetBackend::new(&v1_root, "corral-bench");
    cpuset.publish_groups(&groups)?;
    let flavour = if load.dir.join("cpuset.cpus").exists() {
        "v2"
    } else {
        "v1"
    };
    let mut samples = through_backend(&mut cpuset, &cgroup, &groups, args.cpuset_ops)?;
    cpuset.close()?;
    figures.push(
        Figure::latency_us(
            "enforce_cpuset",
            format!("cpuset ({flavour}) cpuset.cpus write migrating the cgroup's tasks"),
            &mut samples,
        )
        .with("tasks", tasks)
        .with("cgroup", flavour),
    );
    Ok(figures)
}
