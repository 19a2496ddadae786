//! Samples, during `corral run`, the CPU every thread of every container last ran on (field 39
//! of `/proc/<tid>/stat`), and counts the samples that fall outside the thread's group. It is
//! the user-space cross-check of the scheduler's own violation counter, and it works for the
//! `cpuset` backend too, which has no counter.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Per-group sample counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlacementSamples {
    /// Thread samples taken.
    pub samples: u64,
    /// Samples on a CPU outside the group.
    pub outside: u64,
}

/// Which group (and CPUs) each container cgroup is enforced to, as the invocations report it.
pub type Assignments = Arc<Mutex<HashMap<u64, (u32, Vec<u32>)>>>;

/// Where the sampler learns, at each sample, which group a container cgroup is enforced to. A
/// warm container can be re-enforced onto another group between invocations (`least-loaded`,
/// `hash`), so the answer must come from the enforcement itself, not from a past invocation.
pub enum GroupSource {
    /// The pinned cgroup map (the `bpf` backend).
    Maps(corral_bpf::PinnedMaps),
    /// The cpuset confining the container: its own v2 `cpuset.cpus`, else the v1 cpuset named
    /// by its cgroup id under `v1_dir` (the `cpuset` backend).
    Cpuset {
        /// `<cpuset_v1_root>/<cpuset_prefix>`.
        v1_dir: PathBuf,
    },
    /// As the invocations report it (a backend that enforces nothing, such as `memory`).
    Reported(Assignments),
}

impl std::fmt::Debug for GroupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupSource::Maps(_) => "GroupSource::Maps",
            GroupSource::Cpuset { .. } => "GroupSource::Cpuset",
            GroupSource::Reported(_) => "GroupSource::Reported",
        })
    }
}

impl GroupSource {
    /// The group (id and CPUs) the cgroup at `dir`, with id `ino`, is enforced to now.
    fn resolve(&self, dir: &Path, ino: u64, groups: &[(u32, Vec<u32>)]) -> Option<(u32, Vec<u32>)> {
        let by_id = |id: u32| groups.iter().find(|(g, _)| *g == id).cloned();
        match self {
            GroupSource::Maps(maps) => by_id(maps.cgroups().get(ino).ok()??.group),
            GroupSource::Cpuset { v1_dir } => {
                let read = |p: PathBuf| {
                    std::fs::read_to_string(p)
                        .ok()
                        .filter(|t| !t.trim().is_empty())
                };
                let text = read(dir.join("cpuset.cpus"))
                    .or_else(|| read(v1_dir.join(ino.to_string()).join("cpuset.cpus")))?;
                let cpus = corral_actors::config::parse_cpu_list("cpuset.cpus", &text).ok()?;
                groups.iter().find(|(_, g)| *g == cpus).cloned()
            }
            GroupSource::Reported(table) => {
                table.lock().expect("assignments lock").get(&ino).cloned()
            }
        }
    }
}

/// A running sampler thread.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeMap<u32, PlacementSamples>>>,
}

impl Sampler {
    /// Starts sampling the container cgroups under `parent` every `period`, judging each
    /// against the group `source` says it is enforced to; `groups` are (id, CPUs).
    pub fn start(
        parent: PathBuf,
        source: GroupSource,
        groups: Vec<(u32, Vec<u32>)>,
        period: Duration,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("corral-sampler".into())
            .spawn(move || {
                let mut counts: BTreeMap<u32, PlacementSamples> = BTreeMap::new();
                let mut seen = HashSet::new();
                while !flag.load(Ordering::Relaxed) {
                    seen = sample_once(&parent, &source, &groups, &seen, &mut counts);
                    std::thread::sleep(period);
                }
                counts
            })
            .expect("spawning the sampler thread");
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the sampler and returns its counts per group id.
    pub fn finish(mut self) -> BTreeMap<u32, PlacementSamples> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// Takes one sample of every thread under `parent` and returns the threads it saw.
///
/// A thread counts only from its second sighting on: a new process joins its container's cgroup
/// from wherever it was forked, and its last CPU can still be the parent's for the moment before
/// the kernel moves it. A thread that really runs outside its group stays outside and is counted
/// at every later sample.
fn sample_once(
    parent: &Path,
    source: &GroupSource,
    groups: &[(u32, Vec<u32>)],
    previously: &HashSet<i32>,
    counts: &mut BTreeMap<u32, PlacementSamples>,
) -> HashSet<i32> {
    let mut seen = HashSet::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return seen;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let Some((group, cpus)) = source.resolve(&dir, meta.ino(), groups) else {
            continue;
        };
        let Ok(threads) = std::fs::read_to_string(dir.join("cgroup.threads")) else {
            continue;
        };
        for tid in threads.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            seen.insert(tid);
            if !previously.contains(&tid) {
                continue;
            }
            if let Some(cpu) = corral_bpf::cpus::last_cpu(tid) {
                let c = counts.entry(group).or_default();
                c.samples += 1;
                if !cpus.contains(&cpu) {
                    c.outside += 1;
                }
            }
        }
    }
    seen
}
