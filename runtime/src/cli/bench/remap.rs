//! Remap: how long a loaded cgroup takes to run only on its new CPUs after it is moved, one of
//! two ways, sampled the way an operator would check it (field 39 of `/proc/<tid>/stat`, the CPU
//! each thread is on):
//!
//! - `remap_corral_ms`: one cgroup-map update (`cgroup → group`) on the pinned maps of an
//!   attached `corral sched`; the scheduler places each task by its cgroup at its next enqueue,
//!   and ends the slice of a running task whose placement changed at the next tick;
//! - `remap_cpuset_ms`: one cgroup v2 `cpuset.cpus` write, after which the kernel migrates every
//!   task of the cgroup itself, inside the write.
//!
//! The clock starts before the update or write and stops at the first sample from which every
//! thread of the cgroup stayed on the new CPUs for `--hold-ms` (a thread that has not run since
//! the move still reads its old CPU, so "fully on" means every thread has run there). The cgroup
//! alternates between the two placements `--moves` times. `remap_<via>_write_us` is the update
//! or write alone.
//!
//! Run it in a guest with sched_ext (corral) or any cgroup v2 host (cpuset); `cargo xtask bench
//! remap` does both in a 4-vCPU guest, with the two placements on CPUs 1 and 2 and the sampler
//! on the host group's CPUs 0 and 3.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use corral_bpf::{cgroup_id_of, CgroupFlags};

use super::{Figure, LoadedCgroup};
use crate::cli::check::cgroup2_root;

/// How the cgroup is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// One cgroup-map update on an attached `corral sched`'s pinned maps.
    Corral,
    /// One cgroup v2 `cpuset.cpus` write.
    Cpuset,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Corral => "corral",
            Via::Cpuset => "cpuset",
        }
    }
}

/// Options of `corral bench remap`.
#[derive(Debug, Args)]
pub struct RemapArgs {
    /// How the cgroup is moved.
    #[arg(long, value_enum)]
    pub via: Via,
    /// corral: the two published groups the cgroup alternates between (`corral maps dump`
    /// lists them).
    #[arg(long, value_delimiter = ',', num_args = 2, default_value = "0,1")]
    pub groups: Vec<u32>,
    /// cpuset: the two CPU lists the cgroup alternates between.
    #[arg(long, value_delimiter = ':', num_args = 2, default_value = "1:2")]
    pub cpus: Vec<String>,
    /// Busy (spinning) single-threaded processes in the cgroup.
    #[arg(long, default_value_t = 4)]
    pub busy: u32,
    /// Moves to time (the first placement is not timed).
    #[arg(long, default_value_t = 20)]
    pub moves: u32,
    /// How long every thread must stay on the new CPUs for a move to count as done, in ms.
    #[arg(long, default_value_t = 200)]
    pub hold_ms: u64,
    /// A move that has not settled after this long fails the part, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// corral: where the scheduler's maps are pinned.
    #[arg(long, default_value = corral_bpf::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// The cgroup to create under the cgroup2 mount (removed afterwards).
    #[arg(long, default_value = "corral-bench-remap")]
    pub cgroup: PathBuf,
}

/// One of the two placements, as CPUs (to check) and how to get there.
struct Placement {
    cpus: Vec<u32>,
    label: String,
}

/// Every thread id of `pids`' processes.
fn threads(pids: &[u32]) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for pid in pids {
        let dir = format!("/proc/{pid}/task");
        for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
            if let Some(tid) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.push(tid);
            }
        }
    }
    Ok(out)
}

/// Field 39 of `/proc/<tid>/stat`: the CPU the thread is on (last ran on).
fn cpu_of(tid: u32) -> Result<u32> {
    let path = format!("/proc/{tid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) may hold spaces; fields after it follow its closing bracket.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path} has no command field"))?;
    rest.split_whitespace()
        .nth(39 - 3)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("{path} has no processor field"))
}

/// Waits until every thread of `tids` has stayed on `cpus` for `hold`; returns how long after
/// `t0` that began.
fn settle(
    tids: &[u32],
    cpus: &[u32],
    t0: Instant,
    hold: Duration,
    timeout: Duration,
) -> Result<Duration> {
    let mut streak: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut where_ = Vec::with_capacity(tids.len());
        for &tid in tids {
            where_.push(cpu_of(tid)?);
        }
        if where_.iter().all(|c| cpus.contains(c)) {
            let began = *streak.get_or_insert(now);
            if now - began >= hold {
                return Ok(began - t0);
            }
        } else {
            streak = None;
        }
        if now - t0 > timeout {
            bail!(
                "the cgroup's threads {tids:?} were still on CPUs {where_:?}, not all on {cpus:?}, \
                 {} ms after the move (raise --timeout-ms, or check that the scheduler is attached)",
                timeout.as_millis()
            );
        }
        std::thread::sleep(Duration::from_micros(250));
    }
}

/// Runs the part.
pub fn run(args: &RemapArgs) -> Result<Vec<Figure>> {
    if args.moves < 1 || args.busy < 1 {
        bail!("--moves and --busy must be at least 1");
    }
    let root = cgroup2_root().context("no cgroup2 file system is mounted")?;
    let online = corral_actors::config::online_cpus()?;
    let maps = match args.via {
        Via::Corral => Some(crate::cli::maps::open_maps(&args.pin_dir)?),
        Via::Cpuset => None,
    };
    let placements: Vec<Placement> = match (&maps, args.via) {
        (Some(maps), _) => args
            .groups
            .iter()
            .map(|&g| {
                let published = maps
                    .groups()
                    .get(g)?
                    .with_context(|| format!("group {g} is not published at {}: give two groups `corral maps dump` lists with --groups A,B", args.pin_dir.display()))?;
                Ok(Placement {
                    label: format!("group {g}"),
                    cpus: published.spec.cpus,
                })
            })
            .collect::<Result<_>>()?,
        (None, _) => args
            .cpus
            .iter()
            .map(|text| {
                let cpus = corral_actors::config::parse_cpu_list("--cpus", text)?;
                if let Some(bad) = cpus.iter().find(|c| !online.contains(c)) {
                    bail!("CPU {bad} of --cpus {text} is not online (online: {})", corral_actors::config::format_cpu_list(&online));
                }
                Ok(Placement {
                    label: format!("cpuset.cpus {text}"),
                    cpus,
                })
            })
            .collect::<Result<_>>()?,
    };
    if placements[0]
        .cpus
        .iter()
        .any(|c| placements[1].cpus.contains(c))
    {
        bail!(
            "the two placements ({} and {}) share CPUs; a move between them could not be told apart",
            placements[0].label, placements[1].label
        );
    }
    let dir = if args.cgroup.is_absolute() {
        bail!(
            "--cgroup is relative to the cgroup2 mount ({}); give a name, not {}",
            root.display(),
            args.cgroup.display()
        );
    } else {
        root.join(&args.cgroup)
    };
    if args.via == Via::Cpuset {
        let controllers =
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "cpuset") {
            bail!(
                "the cpuset controller is not enabled under {} (cgroup.subtree_control reads `{}`): \
                 echo +cpuset > {}/cgroup.subtree_control",
                root.display(),
                controllers.trim(),
                root.display()
            );
        }
    }
    let spin = crate::cli::config::spin_binary()?;
    let load = LoadedCgroup::start(dir, args.busy, 0, &spin)?;
    let cgroup = cgroup_id_of(&load.dir)?;
    let pids: Vec<u32> = load.pids();
    let tids = threads(&pids)?;
    let hold = Duration::from_millis(args.hold_ms);
    let timeout = Duration::from_millis(args.timeout_ms);
    eprintln!(
        "bench remap ({}): {} busy threads alternate between {} and {}, {} timed moves, each \
         settled once every thread stays {} ms on its new CPUs",
        args.via.name(),
        tids.len(),
        placements[0].label,
        placements[1].label,
        args.moves,
        args.hold_ms
    );
    let move_to = |p: usize| -> Result<()> {
        match (&maps, args.via) {
            (Some(maps), _) => maps
                .cgroups()
                .insert(cgroup, args.groups[p], CgroupFlags::NONE)
                .with_context(|| format!("cannot map cgroup {cgroup} to group {}", args.groups[p])),
            (None, _) => write_cpuset(&load.dir, &args.cpus[p]),
        }
    };
    let outcome = (|| -> Result<(Vec<Duration>, Vec<Duration>)> {
        // The first placement, untimed: every thread starts from placement 0.
        move_to(0)?;
        settle(&tids, &placements[0].cpus, Instant::now(), hold, timeout)?;
        let (mut settled, mut writes) = (Vec::new(), Vec::new());
        let bar = indicatif::ProgressBar::new(u64::from(args.moves));
        for i in 0..args.moves {
            let to = (i as usize + 1) % 2;
            let t0 = Instant::now();
            move_to(to)?;
            writes.push(t0.elapsed());
            settled.push(settle(&tids, &placements[to].cpus, t0, hold, timeout)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok((settled, writes))
    })();
    if let Some(maps) = &maps {
        // Best effort: the cgroup is about to go, and the writer's entry with it.
        let _ = maps.cgroups().remove(cgroup);
    }
    let (mut settled, mut writes) = outcome?;
    let name = args.via.name();
    let what = match args.via {
        Via::Corral => "a loaded cgroup fully on its new group's CPUs after one cgroup-map update",
        Via::Cpuset => {
            "a loaded cgroup fully on its new CPUs after one cgroup v2 cpuset.cpus write"
        }
    };
    Ok(vec![
        Figure::latency_ms(&format!("remap_{name}_ms"), what, &mut settled)
            .with("busy_threads", tids.len())
            .with("hold_ms", args.hold_ms),
        Figure::latency_us(
            &format!("remap_{name}_write_us"),
            match args.via {
                Via::Corral => "the cgroup-map update alone",
                Via::Cpuset => {
                    "the cpuset.cpus write alone (the kernel migrates the tasks inside it)"
                }
            },
            &mut writes,
        ),
    ])
}

fn write_cpuset(dir: &Path, cpus: &str) -> Result<()> {
    let file = dir.join("cpuset.cpus");
    std::fs::write(&file, cpus)
        .with_context(|| format!("cannot write `{cpus}` to {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field 39 is read after the command name, which may hold spaces and brackets.
    #[test]
    fn processor_field_of_this_thread() {
        let tid = unsafe { libc::gettid() } as u32;
        let cpu = cpu_of(tid).unwrap();
        assert!(corral_actors::config::online_cpus().unwrap().contains(&cpu));
    }
}
