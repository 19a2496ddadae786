//! Samples, during `corral run`, the CPU every thread of every container last ran on (field 39
//! of `/proc/<tid>/stat`), and counts the samples that fall outside the thread's group. It is
//! the user-space cross-check of the scheduler's own violation counter, and it works for the
//! `cpuset` backend too, which has no counter.
//!
//! Field 39 is where a thread *last* ran, which for a sleeping thread can be long ago. A sample
//! therefore counts only a thread that ran since the previous sample (its on-CPU time, the first
//! field of `/proc/<tid>/schedstat`, moved) while its cgroup was enforced to the same group at
//! both samples: its last run then happened under that enforcement. Without this rule a warm
//! `server`-mode process, started before its container's enforcement was committed and then
//! asleep waiting for a request, was counted outside at every sample until its first request
//! woke it, although it never ran outside its group once it had one.

use std::collections::{BTreeMap, HashMap};
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
                let mut seen = HashMap::new();
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

/// What a sample saw of one thread: its on-CPU time (`None` when unreadable) and the group its
/// cgroup was enforced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sighting {
    run_ns: Option<u64>,
    group: u32,
}

/// The thread's total on-CPU time in nanoseconds, from `/proc/<tid>/schedstat`.
fn run_ns(tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Whether a sample of a thread seen now as `now` counts, given what the previous sample saw of
/// it: only when it was seen then under the same group and has run since (or its on-CPU time
/// cannot be read, when every sample counts). A new thread, a thread whose container was just
/// enforced or re-enforced, and a thread that slept through the interval do not count.
fn counts(previous: Option<&Sighting>, now: &Sighting) -> bool {
    match previous {
        Some(prev) if prev.group == now.group => match (prev.run_ns, now.run_ns) {
            (Some(before), Some(after)) => after != before,
            _ => true,
        },
        _ => false,
    }
}

/// Takes one sample of every thread under `parent` and returns what it saw of each.
fn sample_once(
    parent: &Path,
    source: &GroupSource,
    groups: &[(u32, Vec<u32>)],
    previously: &HashMap<i32, Sighting>,
    counts_by_group: &mut BTreeMap<u32, PlacementSamples>,
) -> HashMap<i32, Sighting> {
    let mut seen = HashMap::new();
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
            // On-CPU time before the CPU: a run between the two reads then shows as a run.
            let now = Sighting {
                run_ns: run_ns(tid),
                group,
            };
            let Some(cpu) = corral_bpf::cpus::last_cpu(tid) else {
                continue;
            };
            seen.insert(tid, now);
            if !counts(previously.get(&tid), &now) {
                continue;
            }
            let c = counts_by_group.entry(group).or_default();
            c.samples += 1;
            if !cpus.contains(&cpu) {
                c.outside += 1;
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(run_ns: Option<u64>, group: u32) -> Sighting {
        Sighting { run_ns, group }
    }

    /// A thread counts only once seen before under the same group, and only when it ran since.
    #[test]
    fn only_threads_that_ran_under_the_same_group_count() {
        // First sighting: it may still show the CPU it was forked on.
        assert!(!counts(None, &at(Some(5), 0)));
        // Asleep since the last sample: its last CPU is old news.
        assert!(!counts(Some(&at(Some(5), 0)), &at(Some(5), 0)));
        // Ran since, under the same group: counts.
        assert!(counts(Some(&at(Some(5), 0)), &at(Some(9), 0)));
        // Re-enforced onto another group in between: its last run may predate the move.
        assert!(!counts(Some(&at(Some(5), 0)), &at(Some(9), 1)));
        // On-CPU time unreadable: every sample after the first counts, as before.
        assert!(counts(Some(&at(None, 0)), &at(None, 0)));
    }

    /// This thread's own on-CPU time reads and grows as it runs.
    #[test]
    fn run_time_of_a_running_thread_grows() {
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let before = run_ns(tid).expect("/proc/<tid>/schedstat of this thread");
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(run_ns(tid).expect("still readable") > before);
    }

    /// Children in scratch cgroups, killed and removed when the test ends however it ends.
    struct Scratch {
        parent: PathBuf,
        children: Vec<std::process::Child>,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            for c in &mut self.children {
                let _ = c.kill();
                let _ = c.wait();
            }
            for dir in ["busy", "asleep", ""] {
                let _ = std::fs::remove_dir(self.parent.join(dir));
            }
        }
    }

    /// Real processes in real cgroups: a busy thread held on CPU 0 while its group is CPU 1 is
    /// counted outside at nearly every sample; a thread asleep all along is never counted,
    /// whatever CPU it last ran on.
    #[test]
    fn a_busy_thread_off_its_cpus_is_counted_and_a_sleeping_one_is_not() {
        use std::os::unix::process::CommandExt;
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test makes cgroups: run the host tests as root"
        );
        let mount = corral::config::cgroup2_mount().expect("no cgroup2 file system is mounted");
        let mut scratch = Scratch {
            parent: mount.join(format!("corral-sampler-test-{}", std::process::id())),
            children: Vec::new(),
        };
        let table: Assignments = Arc::default();
        for (name, group) in [("busy", 0u32), ("asleep", 1)] {
            let dir = scratch.parent.join(name);
            std::fs::create_dir_all(&dir).expect("making a scratch cgroup");
            let mut cmd = std::process::Command::new("/bin/sh");
            if name == "busy" {
                cmd.args(["-c", "while :; do :; done"]);
                // SAFETY: sched_setaffinity on the child itself, before exec.
                unsafe {
                    cmd.pre_exec(|| {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(0, &mut set);
                        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            } else {
                cmd.args(["-c", "exec sleep 60"]);
            }
            let child = cmd.spawn().expect("spawning a child");
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string())
                .expect("moving the child into its cgroup");
            scratch.children.push(child);
            let ino = std::fs::metadata(&dir).expect("stat the cgroup").ino();
            table.lock().unwrap().insert(ino, (group, vec![1]));
        }
        // Let the sleeper reach its sleep before the first sample.
        std::thread::sleep(Duration::from_millis(100));
        let sampler = Sampler::start(
            scratch.parent.clone(),
            GroupSource::Reported(table),
            vec![(0, vec![1]), (1, vec![1])],
            Duration::from_millis(10),
        );
        std::thread::sleep(Duration::from_millis(400));
        let counts = sampler.finish();
        let busy = counts.get(&0).copied().unwrap_or_default();
        assert!(
            busy.samples >= 10 && busy.outside == busy.samples,
            "the busy thread on CPU 0 should be counted outside group CPU 1 at every sample: \
             {busy:?}"
        );
        let asleep = counts.get(&1).copied().unwrap_or_default();
        assert_eq!(
            asleep.samples, 0,
            "a sleeping thread was counted: {asleep:?}"
        );
    }
}
