//! Remap: how long a loaded cgroup takes to run only on its new CPUs after it is moved, one of
//! two ways, sampled the way an operator would check it (field 39 of `/proc/<tid>/stat`, the CPU
//! each thread is on):
//!
//! - `remap_corral_ms`: one cgroup-map update (`cgroup → group`) on the pinned maps of an
//!   attached `corral sched`, then the scheduler's pinned `corral_kick_moved`, as the map
//!   writer and `corral map` run it: the scheduler places each task by its cgroup at its next
//!   enqueue, and the kick preempts the running ones so that they are enqueued again at once
//!   (without it, at the next tick);
//! - `remap_cpuset_ms`: one cgroup v2 `cpuset.cpus` write, after which the kernel migrates every
//!   task of the cgroup itself, inside the write.
//!
//! Every 250 µs the sampler reads each busy thread's CPU (field 39 of `/proc/<tid>/stat`) and
//! its run time (`/proc/<tid>/schedstat`). The clock starts before the update or write, and:
//!
//! - `remap_<via>_ms` stops at the last sample interval in which a thread ran (its run time
//!   grew) on an old CPU, once no such run followed for `--hold-ms` while the cgroup ran on the
//!   new CPUs: from then on the cgroup runs only on its new CPUs. It is never earlier than the
//!   end of the update or write, inside which nothing can be sampled (a cpuset write migrates
//!   the tasks before it returns);
//! - `remap_<via>_all_moved_ms` stops once every thread's field 39 has read a new CPU for
//!   `--hold-ms`: every thread has run there. cpuset moves queued tasks to the new CPUs' run
//!   queues inside the write; under sched_ext a task waiting in a queue keeps its old CPU until
//!   it is dispatched, so with 4 threads on a 1-CPU group this takes 3 of the new group's
//!   slices, although none of them runs on an old CPU meanwhile.
//!
//! The cgroup alternates between the two placements `--moves` times. `remap_<via>_write_us` is
//! the update (with the kick) or the write alone.
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
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub groups: Vec<u32>,
    /// cpuset: the two CPU lists the cgroup alternates between.
    #[arg(long, value_delimiter = ':', default_value = "1:2")]
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

/// The spinning threads of `pids`' corral-spin processes: every thread but the main one, which
/// only waits for its worker (a sleeping thread is never moved until it wakes, so it would read
/// its old CPU forever). Waits up to 5 s for the workers to exist.
fn busy_threads(pids: &[u32]) -> Result<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut out = Vec::new();
        let mut all_started = true;
        for &pid in pids {
            let dir = format!("/proc/{pid}/task");
            let mut workers = 0;
            for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
                if let Some(tid) = e?.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    if tid != pid {
                        out.push(tid);
                        workers += 1;
                    }
                }
            }
            all_started &= workers > 0;
        }
        if all_started {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!("the busy processes {pids:?} did not start their spinning threads within 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// The first field of `/proc/<tid>/schedstat`: the thread's time on a CPU, in ns.
fn runtime_ns(tid: u32) -> Result<u64> {
    let path = format!("/proc/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("{path} does not start with a run time"))
}

/// When a move settled, after `t0`, by two readings of the same samples.
#[derive(Debug, Clone, Copy)]
struct Settled {
    /// The cgroup runs only on its new CPUs: the end of the last sample interval in which a
    /// thread ran (its run time grew) on an old CPU. A thread that waits in a queue is not
    /// running anywhere.
    only_new: Duration,
    /// Every thread's CPU (field 39) reads a new CPU: every thread has run there at least
    /// once. Under sched_ext a queued task keeps its old CPU until it is dispatched, so with 4
    /// threads on a 1-CPU group this takes 3 of the new group's slices.
    all_moved: Duration,
}

/// Samples `tids` every 250 µs until both readings of [`Settled`] have held for `hold`:
/// no run on an old CPU (with the cgroup running on the new ones meanwhile), and every
/// thread's CPU among `cpus`. `before` holds the threads' run times read just before `t0`;
/// `written` is when the update or write returned: what ran inside it cannot be seen (a
/// cpuset write migrates the tasks before it returns), so `only_new` is never earlier.
fn settle(
    tids: &[u32],
    cpus: &[u32],
    before: Vec<u64>,
    t0: Instant,
    written: Instant,
    hold: Duration,
    timeout: Duration,
) -> Result<Settled> {
    let mut last = before;
    // The CPU each thread read at the previous sample: a run counts as on an old CPU only when
    // the thread read an old CPU at both ends of the interval, since a thread migrating between
    // its two reads (stat, then schedstat) may have read the old CPU and then run on the new.
    let mut prev_cpu: Vec<Option<u32>> = vec![None; tids.len()];
    let mut last_old_run = written;
    let mut new_progress_since_old = false;
    let mut all_moved_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut where_ = Vec::with_capacity(tids.len());
        for (i, &tid) in tids.iter().enumerate() {
            let cpu = cpu_of(tid)?;
            let ran = runtime_ns(tid)?;
            if ran > last[i] {
                let old_both =
                    !cpus.contains(&cpu) && prev_cpu[i].is_none_or(|c| !cpus.contains(&c));
                if old_both {
                    last_old_run = now;
                    new_progress_since_old = false;
                } else if cpus.contains(&cpu) {
                    new_progress_since_old = true;
                }
            }
            last[i] = ran;
            prev_cpu[i] = Some(cpu);
            where_.push(cpu);
        }
        if where_.iter().all(|c| cpus.contains(c)) {
            all_moved_since.get_or_insert(now);
        } else {
            all_moved_since = None;
        }
        let only_new_held = new_progress_since_old && now - last_old_run >= hold;
        if let Some(since) = all_moved_since.filter(|s| only_new_held && now - *s >= hold) {
            return Ok(Settled {
                only_new: last_old_run - t0,
                all_moved: since - t0,
            });
        }
        if now - t0 > timeout {
            bail!(
                "the cgroup's threads {tids:?} were on CPUs {where_:?}, not all on {cpus:?}, {} ms \
                 after the move (last run on an old CPU {} ms after it; raise --timeout-ms, or \
                 check that the scheduler is attached)",
                timeout.as_millis(),
                (last_old_run - t0).as_millis()
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
    if args.groups.len() != 2 {
        bail!("--groups takes two groups, as A,B (got {:?})", args.groups);
    }
    if args.cpus.len() != 2 {
        bail!(
            "--cpus takes two CPU lists, as A:B, e.g. 1:2 or 0-1:2-3 (got {:?})",
            args.cpus
        );
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
    let tids = busy_threads(&pids)?;
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
            (Some(maps), _) => {
                maps.cgroups()
                    .insert(cgroup, args.groups[p], CgroupFlags::NONE)
                    .with_context(|| {
                        format!("cannot map cgroup {cgroup} to group {}", args.groups[p])
                    })?;
                // As the map writer and `corral map` do: preempt the running threads now.
                maps.cgroups()
                    .kick_moved(cgroup, args.groups[p])
                    .with_context(|| format!("cannot kick the running tasks of cgroup {cgroup}"))?;
                Ok(())
            }
            (None, _) => write_cpuset(&load.dir, &args.cpus[p]),
        }
    };
    let outcome = (|| -> Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
        // The first placement, untimed: every thread starts from placement 0.
        let runtimes = || {
            tids.iter()
                .map(|&t| runtime_ns(t))
                .collect::<Result<Vec<_>>>()
        };
        move_to(0)?;
        let now = Instant::now();
        settle(
            &tids,
            &placements[0].cpus,
            runtimes()?,
            now,
            now,
            hold,
            timeout,
        )?;
        let (mut only_new, mut all_moved, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        let bar = indicatif::ProgressBar::new(u64::from(args.moves));
        for i in 0..args.moves {
            let to = (i as usize + 1) % 2;
            let before = runtimes()?;
            let t0 = Instant::now();
            move_to(to)?;
            let written = Instant::now();
            writes.push(written - t0);
            let s = settle(
                &tids,
                &placements[to].cpus,
                before,
                t0,
                written,
                hold,
                timeout,
            )?;
            only_new.push(s.only_new);
            all_moved.push(s.all_moved);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok((only_new, all_moved, writes))
    })();
    if let Some(maps) = &maps {
        // Best effort: the cgroup is about to go, and the writer's entry with it.
        let _ = maps.cgroups().remove(cgroup);
    }
    let (only_new, all_moved, mut writes) = outcome?;
    let name = args.via.name();
    let what = match args.via {
        Via::Corral => {
            "a loaded cgroup runs only on its new group's CPUs after one cgroup-map update"
        }
        Via::Cpuset => {
            "a loaded cgroup runs only on its new CPUs after one cgroup v2 cpuset.cpus write"
        }
    };
    Ok(vec![
        Figure::latency_ms(&format!("remap_{name}_ms"), what, &mut only_new.clone())
            .with("busy_threads", tids.len())
            .with("hold_ms", args.hold_ms)
            .with("moves_ms", ms_list(&only_new)),
        Figure::latency_ms(
            &format!("remap_{name}_all_moved_ms"),
            "every thread's CPU (field 39) reads a new CPU: each has run there once",
            &mut all_moved.clone(),
        )
        .with("moves_ms", ms_list(&all_moved)),
        Figure::latency_us(
            &format!("remap_{name}_write_us"),
            match args.via {
                Via::Corral => "the cgroup-map update and the kick of its running tasks",
                Via::Cpuset => {
                    "the cpuset.cpus write alone (the kernel migrates the tasks inside it)"
                }
            },
            &mut writes,
        ),
    ])
}

/// Each move's figure in ms (rounded to µs), in the order measured.
fn ms_list(samples: &[Duration]) -> Vec<f64> {
    samples
        .iter()
        .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
        .collect()
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
