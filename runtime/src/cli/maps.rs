//! `corral map`, `corral unmap` and `corral maps dump`: one enforcement through the pinned maps,
//! and a readable view of everything in them. They work beside a running `corral sched` or
//! `corral run`, since the maps are pinned and every write is one atomic map operation.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use corral_bpf::{
    cgroup_id_of, set_cgroup_sched_ext, set_cgroup_tree_sched_ext, CgroupEntry, CgroupFlags,
    GroupStats, PinnedMaps, PublishedGroup, DEFAULT_PIN_DIR,
};
use serde::Serialize;

use super::check::cgroup2_root;
use corral_actors::container_backend::cgroup_name::CgroupName;

/// Map a cgroup to a group.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// The cgroup: a cgroup v2 directory (absolute, or relative to the cgroup2 mount, as
    /// /proc/<pid>/cgroup prints it), Docker's docker/<64 hex> (cgroupfs driver) or
    /// system.slice/docker-<64 hex>.scope (systemd driver), or containerd's path.
    pub cgroup: PathBuf,
    /// The group id (see `corral maps dump` for the published groups).
    pub group: u32,
    /// Map only this cgroup, not its descendants.
    #[arg(long)]
    pub no_inherit: bool,
    /// Also switch the cgroup's threads to SCHED_EXT, for a scheduler running in partial mode
    /// (full switch, the default, places them by the map update alone).
    #[arg(long)]
    pub partial: bool,
    /// Where the maps are pinned.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Unmap a cgroup.
#[derive(Debug, Args)]
pub struct UnmapArgs {
    /// The cgroup: a cgroup v2 directory (absolute, or relative to the cgroup2 mount, as
    /// /proc/<pid>/cgroup prints it), Docker's docker/<64 hex> (cgroupfs driver) or
    /// system.slice/docker-<64 hex>.scope (systemd driver), or containerd's path.
    pub cgroup: PathBuf,
    /// Where the maps are pinned.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Inspect the pinned maps.
#[derive(Debug, Args)]
pub struct MapsArgs {
    #[command(subcommand)]
    pub command: MapsCommand,
}

#[derive(Debug, Subcommand)]
pub enum MapsCommand {
    /// Print the groups (CPU lists), the mapped cgroups (resolved to paths) and the per-group
    /// statistics (latency percentiles from the histograms).
    Dump(DumpArgs),
}

/// `corral maps dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Where the maps are pinned.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Opens existing pins, with the fix when there are none.
pub fn open_maps(pin_dir: &Path) -> Result<PinnedMaps> {
    if !pin_dir.exists() {
        bail!(
            "no maps are pinned at {}: start `corral sched` or `corral run` first, or pass --pin-dir",
            pin_dir.display()
        );
    }
    PinnedMaps::open(pin_dir)
        .with_context(|| format!("cannot open the maps pinned at {}", pin_dir.display()))
}

/// A cgroup argument made absolute: relative paths are under the cgroup2 mount.
pub fn resolve_cgroup(path: &Path) -> Result<PathBuf> {
    let text = path.to_str().with_context(|| {
        format!(
            "the cgroup {} is not valid UTF-8; name it as /proc/<pid>/cgroup prints it",
            path.display()
        )
    })?;
    let name = CgroupName::parse(text)?;
    let root = cgroup2_root()
        .context("no cgroup2 file system is mounted, so a cgroup name means nothing here")?;
    let resolved = name.resolve(&root)?;
    Ok(resolved
        .path
        .expect("a resolved cgroup name has its directory"))
}

pub fn map(args: MapArgs) -> Result<()> {
    let maps = open_maps(&args.pin_dir)?;
    let path = resolve_cgroup(&args.cgroup)?;
    let cgroup = cgroup_id_of(&path)?;
    let group = maps
        .groups()
        .get(args.group)
        .with_context(|| format!("cannot read group {}", args.group))?
        .with_context(|| format!("group {} is not published: `corral maps dump` lists the groups; `corral sched --config` publishes them", args.group))?;
    let previous = maps.cgroups().get(cgroup)?;
    let flags = if args.no_inherit {
        CgroupFlags::NO_INHERIT
    } else {
        CgroupFlags::NONE
    };
    maps.cgroups().insert(cgroup, args.group, flags)?;
    // The mapping and the policy switch go together: if the switch fails, put the map back.
    // Without --no-inherit the mapping covers descendant cgroups, so their threads switch too,
    // except in descendants that have a mapping of their own.
    let switch = if !args.partial {
        Ok(0)
    } else if args.no_inherit {
        set_cgroup_sched_ext(&path, true)
    } else {
        set_cgroup_tree_sched_ext(&path, true, |child| separately_mapped(&maps, child))
    };
    let switched = match switch {
        Ok(n) => n,
        Err(e) => {
            let restored = match previous {
                Some(prev) => maps.cgroups().insert(cgroup, prev.group, prev.flags),
                None => maps.cgroups().remove(cgroup).map(|_| ()),
            };
            if let Err(r) = restored {
                eprintln!(
                    "corral map: could not restore the previous mapping of cgroup {cgroup}: {r}"
                );
            }
            return Err(e).with_context(|| {
                format!(
                    "cannot switch the threads of {} to SCHED_EXT; the mapping was rolled back",
                    path.display()
                )
            });
        }
    };
    // Running tasks of the cgroup move now rather than at their next tick.
    let kicked = if previous.map(|p| p.group) != Some(args.group) {
        kick(&maps, cgroup, args.group)
    } else {
        0
    };
    println!(
        "mapped {} (cgroup id {cgroup}) to group {} (CPUs {}){}{}{}",
        path.display(),
        args.group,
        cpu_list(&group.spec.cpus),
        match previous {
            Some(p) if p.group != args.group => format!(", previously group {}", p.group),
            Some(_) => " (unchanged)".to_string(),
            None => String::new(),
        },
        if args.partial {
            format!("; {switched} threads switched to SCHED_EXT")
        } else {
            String::new()
        },
        preempted(kicked)
    );
    Ok(())
}

/// Preempts the CPUs running `cgroup`'s tasks for another group than `group` (see
/// `CgroupMap::kick_moved`); a failure only delays the move to the next tick, so it warns.
fn kick(maps: &PinnedMaps, cgroup: u64, group: u32) -> u32 {
    match maps.cgroups().kick_moved(cgroup, group) {
        Ok(n) => n.unwrap_or(0),
        Err(e) => {
            eprintln!("corral: warning: {e}; its running tasks move at their next tick");
            0
        }
    }
}

fn preempted(kicked: u32) -> String {
    match kicked {
        0 => String::new(),
        1 => "; 1 running CPU preempted".to_string(),
        n => format!("; {n} running CPUs preempted"),
    }
}

pub fn unmap(args: UnmapArgs) -> Result<()> {
    let maps = open_maps(&args.pin_dir)?;
    let path = resolve_cgroup(&args.cgroup)?;
    let cgroup = cgroup_id_of(&path)?;
    let Some(previous) = maps.cgroups().get(cgroup)? else {
        bail!(
            "{} (cgroup id {cgroup}) is not mapped; `corral maps dump` lists the mapped cgroups",
            path.display()
        );
    };
    if !maps.cgroups().remove(cgroup)? {
        bail!(
            "{} (cgroup id {cgroup}) was unmapped by someone else meanwhile",
            path.display()
        );
    }
    let kicked = kick(&maps, cgroup, corral_bpf::HOST_GROUP);
    let switch = if previous.flags.contains(CgroupFlags::NO_INHERIT) {
        set_cgroup_sched_ext(&path, false)
    } else {
        set_cgroup_tree_sched_ext(&path, false, |child| separately_mapped(&maps, child))
    };
    let switched = switch.with_context(|| {
        format!(
            "unmapped {}, but cannot return its threads to SCHED_NORMAL",
            path.display()
        )
    })?;
    println!(
        "unmapped {} (cgroup id {cgroup}, was group {}); {switched} threads back to SCHED_NORMAL{}",
        path.display(),
        previous.group,
        preempted(kicked)
    );
    Ok(())
}

/// Whether the cgroup at `dir` has a mapping of its own (its subtree follows that one).
fn separately_mapped(maps: &PinnedMaps, dir: &Path) -> bool {
    cgroup_id_of(dir).is_ok_and(|id| maps.cgroups().get(id).ok().flatten().is_some())
}

/// Formats CPUs as a kernel CPU list (`0-3,6`).
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    corral_actors::config::format_cpu_list(&sorted)
}

/// Finds the path of every cgroup v2 directory, by id, walking the cgroup2 mount.
pub fn cgroup_paths() -> HashMap<u64, PathBuf> {
    let mut out = HashMap::new();
    let Some(root) = cgroup2_root() else {
        return out;
    };
    let mut stack = vec![(root, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if let Ok(meta) = std::fs::metadata(&dir) {
            out.insert(meta.ino(), dir.clone());
        }
        if depth >= 16 {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    out
}

/// A group as dumped.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub id: u32,
    pub cpus: String,
    pub cpu_count: usize,
    pub slice_us: f64,
    pub order: String,
    pub borrow: bool,
    pub generation: u64,
}

/// A mapped cgroup as dumped.
#[derive(Debug, Serialize)]
pub struct CgroupView {
    pub cgroup_id: u64,
    pub path: Option<String>,
    pub group: u32,
    pub no_inherit: bool,
}

/// A group's statistics as dumped.
#[derive(Debug, Serialize)]
pub struct StatsView {
    pub group: Option<u32>,
    pub enqueues: u64,
    pub dispatches: u64,
    pub direct_dispatches: u64,
    pub runs: u64,
    pub on_cpu_ms: f64,
    pub violations: u64,
    pub borrowed_runs: u64,
    pub affinity_overrides: u64,
    pub rescued: u64,
    /// Times a higher scheduling class took one of the group's CPUs, and for how long.
    pub displaced: u64,
    pub displaced_ms: f64,
    pub runqueue_latency_max_us: f64,
    pub runqueue_latency_mean_us: Option<f64>,
    pub runqueue_latency_p50_us: Option<f64>,
    pub runqueue_latency_p99_us: Option<f64>,
    /// `[upper bound in ns, count]` for each non-empty log2 bucket.
    pub histogram: Vec<(u64, u64)>,
}

/// Everything in the maps.
#[derive(Debug, Serialize)]
pub struct MapsView {
    pub pin_dir: String,
    pub layout_version: u32,
    pub generation: u64,
    pub groups: Vec<GroupView>,
    /// The host group's CPUs; `None` when unpublished (host tasks may run on every CPU).
    pub host_cpus: Option<String>,
    pub cgroups: Vec<CgroupView>,
    pub stats: Vec<StatsView>,
}

fn group_view(id: u32, g: &PublishedGroup) -> GroupView {
    GroupView {
        id,
        cpus: cpu_list(&g.spec.cpus),
        cpu_count: g.spec.cpus.len(),
        slice_us: g.spec.slice_ns as f64 / 1e3,
        order: format!("{:?}", g.spec.order).to_lowercase(),
        borrow: g.spec.borrow,
        generation: g.generation,
    }
}

fn cgroup_view(id: u64, e: &CgroupEntry, paths: &HashMap<u64, PathBuf>) -> CgroupView {
    CgroupView {
        cgroup_id: id,
        path: paths.get(&id).map(|p| p.display().to_string()),
        group: e.group,
        no_inherit: e.flags.contains(CgroupFlags::NO_INHERIT),
    }
}

fn stats_view(group: Option<u32>, s: &GroupStats) -> StatsView {
    let us = |ns: Option<u64>| ns.map(|n| n as f64 / 1e3);
    StatsView {
        group,
        enqueues: s.enqueues,
        dispatches: s.dispatches,
        direct_dispatches: s.direct_dispatches,
        runs: s.runs,
        on_cpu_ms: s.run_ns as f64 / 1e6,
        violations: s.violations,
        borrowed_runs: s.borrowed_runs,
        affinity_overrides: s.affinity_overrides,
        rescued: s.rescued,
        displaced: s.displaced,
        displaced_ms: s.displaced_ns as f64 / 1e6,
        runqueue_latency_max_us: s.lat_max_ns as f64 / 1e3,
        runqueue_latency_mean_us: us(s.mean_latency_ns()),
        runqueue_latency_p50_us: us(s.latency_quantile_upper_ns(0.5)),
        runqueue_latency_p99_us: us(s.latency_quantile_upper_ns(0.99)),
        histogram: s
            .lat_hist
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (1u64.checked_shl(i as u32 + 1).unwrap_or(u64::MAX), c))
            .collect(),
    }
}

/// Reads everything in the maps into a view.
pub fn read_view(maps: &PinnedMaps) -> Result<MapsView> {
    let paths = cgroup_paths();
    let groups = maps.groups().entries()?;
    let mut stats = Vec::new();
    for (id, _) in &groups {
        stats.push(stats_view(Some(*id), &maps.stats().read(*id)?));
    }
    stats.push(stats_view(None, &maps.stats().read_host()?));
    Ok(MapsView {
        pin_dir: maps.pin_dir().display().to_string(),
        layout_version: maps.layout_version()?,
        generation: maps.generation()?,
        groups: groups.iter().map(|(id, g)| group_view(*id, g)).collect(),
        host_cpus: maps
            .groups()
            .host()?
            .map(|h| corral_actors::config::format_cpu_list(&h.spec.cpus)),
        cgroups: maps
            .cgroups()
            .entries()?
            .iter()
            .map(|(id, e)| cgroup_view(*id, e, &paths))
            .collect(),
        stats,
    })
}

/// Prints the groups and cgroups tables.
pub fn print_groups_and_cgroups(view: &MapsView) {
    println!("groups ({}):", view.groups.len());
    println!(
        "  {:>3}  {:<12} {:>5} {:>10} {:<6} {:<6} {:>4}",
        "id", "cpus", "count", "slice", "order", "borrow", "gen"
    );
    for g in &view.groups {
        println!(
            "  {:>3}  {:<12} {:>5} {:>8}µs {:<6} {:<6} {:>4}",
            g.id, g.cpus, g.cpu_count, g.slice_us, g.order, g.borrow, g.generation
        );
    }
    println!(
        "host group (unmapped tasks): CPUs {}",
        view.host_cpus
            .as_deref()
            .unwrap_or("all (no host group published)")
    );
    println!("mapped cgroups ({}):", view.cgroups.len());
    for c in &view.cgroups {
        println!(
            "  {:>10} -> group {:<3} {}{}",
            c.cgroup_id,
            c.group,
            c.path
                .as_deref()
                .unwrap_or("(path not found: the cgroup is gone)"),
            if c.no_inherit { " [no-inherit]" } else { "" }
        );
    }
}

pub fn maps(args: MapsArgs) -> Result<()> {
    let MapsCommand::Dump(args) = args.command;
    let maps = open_maps(&args.pin_dir)?;
    let view = read_view(&maps)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    println!(
        "maps pinned at {} (layout v{}, generation {})",
        view.pin_dir, view.layout_version, view.generation
    );
    print_groups_and_cgroups(&view);
    println!(
        "statistics (summed over CPUs; latency = enqueue to running, log2 bucket upper bounds):"
    );
    println!(
        "  {:<8} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>8} {:>9} {:>10} {:>10} {:>10}",
        "group",
        "enqueues",
        "dispatch",
        "runs",
        "on-CPU",
        "violations",
        "overrides",
        "rescued",
        "displaced",
        "lat mean",
        "lat p50",
        "lat p99"
    );
    let fmt_us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}µs"));
    for s in &view.stats {
        println!(
            "  {:<8} {:>9} {:>9} {:>9} {:>8.0}ms {:>10} {:>9} {:>8} {:>9} {:>10} {:>10} {:>10}",
            s.group.map_or("host".to_string(), |g| g.to_string()),
            s.enqueues,
            s.dispatches + s.direct_dispatches,
            s.runs,
            s.on_cpu_ms,
            s.violations,
            s.affinity_overrides,
            s.rescued,
            s.displaced,
            fmt_us(s.runqueue_latency_mean_us),
            fmt_us(s.runqueue_latency_p50_us),
            fmt_us(s.runqueue_latency_p99_us),
        );
    }
    Ok(())
}
