//! VM tests of the sched_ext scheduler: placement, nested cgroups, remap, the host group,
//! statistics and failure, on the real kernel path (4 vCPUs, run with `--test-threads=1`), and
//! the helpers that the isolation tests ([`crate::isolation`]) share with them.
//!
//! The scheduler runs in full switch (its default): it schedules every task, and places a task
//! by its cgroup alone, so the workloads stay `SCHED_NORMAL`. They are CPU-bound processes put
//! in a cgroup per group: busybox shell loops, and `corral-spin --threads N`, the workspace's
//! multi-threaded spinner that the harness puts on the guest's PATH. Placement is observed from
//! outside, as a user would: every thread's `processor` (field 39 of
//! `/proc/<pid>/task/<tid>/stat`), sampled while the thread is running (state `R`; a sleeping
//! thread's field shows where it last ran, which may predate the scheduler).
//!
//! The tests share one attached scheduler on the pins under `/sys/fs/bpf/corral-vm-sched` (see
//! [`SHARED`]); a test that needs sched_ext off (the placement control run, a scheduler of its
//! own) or stops it (the failure test) detaches it, and the next test re-attaches. It stays
//! attached after the last test, until the guest powers off.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corral_bpf::{
    cgroup_id_of, sched_ext_state, thread_policy, CgroupFlags, ExitKind, GroupOrder, GroupSpec,
    PinnedMaps, SchedExtState, SchedMode, Scheduler, SchedulerConfig, SCHED_NORMAL,
};
use corral_tests::guest::require_guest;

/// Group 0 of the tests: CPUs 0 and 1.
pub(crate) const LOW: [u32; 2] = [0, 1];
/// Group 1 of the tests: CPUs 2 and 3.
pub(crate) const HIGH: [u32; 2] = [2, 3];
/// Time slice of the test groups.
pub(crate) const SLICE_NS: u64 = 5_000_000;

/// A cgroup v2 directory made for one test. On drop its mapping (if [`TestCgroup::map`] made
/// one) is removed, its processes are killed and the directory is removed.
pub(crate) struct TestCgroup {
    path: PathBuf,
    /// Whether this cgroup has an entry in the shared maps' cgroup map.
    mapped: Cell<bool>,
}

impl TestCgroup {
    pub(crate) fn new(name: &str) -> TestCgroup {
        Self::at(Path::new("/sys/fs/cgroup").join(format!("corral-vm-{name}")))
    }

    fn at(path: PathBuf) -> TestCgroup {
        if path.exists() {
            drop(Self::existing(path.clone()));
        }
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self::existing(path)
    }

    fn existing(path: PathBuf) -> TestCgroup {
        TestCgroup {
            path,
            mapped: Cell::new(false),
        }
    }

    pub(crate) fn child(&self, name: &str) -> TestCgroup {
        Self::at(self.path.join(name))
    }

    pub(crate) fn id(&self) -> u64 {
        cgroup_id_of(&self.path).expect("cgroup id")
    }

    /// Maps this cgroup (and its descendants) to `group`, or remaps it: one map update.
    pub(crate) fn map(&self, maps: &PinnedMaps, group: u32) {
        maps.cgroups()
            .insert(self.id(), group, CgroupFlags::NONE)
            .unwrap_or_else(|e| panic!("map {} to group {group}: {e}", self.path.display()));
        self.mapped.set(true);
    }

    /// Removes this cgroup's mapping; its tasks go back to the host group.
    pub(crate) fn unmap(&self, maps: &PinnedMaps) {
        maps.cgroups()
            .remove(self.id())
            .unwrap_or_else(|e| panic!("unmap {}: {e}", self.path.display()));
        self.mapped.set(false);
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub(crate) fn adopt(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.path.display()));
    }

    /// Prints every process of the cgroup with its state, wait channel, policy and kernel
    /// stack: what a failure message needs when a workload stalled.
    pub(crate) fn describe_processes(&self) {
        println!("{}:", self.path.display());
        for pid in self.pids() {
            let read = |f: &str| {
                std::fs::read_to_string(format!("/proc/{pid}/{f}"))
                    .unwrap_or_else(|e| format!("({e})"))
            };
            let stat = read("stat");
            let state = corral_bpf::cpus::stat_fields_after_comm(&stat)
                .map(|f| {
                    format!(
                        "state {} cpu {}",
                        f.first().unwrap_or(&"?"),
                        f.get(36).unwrap_or(&"?")
                    )
                })
                .unwrap_or_default();
            // What it runs, and whether it ran at all: schedstat is run time, wait time (ns)
            // and timeslices.
            let cmdline = read("cmdline").replace('\0', " ");
            println!(
                "  {pid} {} {state} wchan {} policy {:?} schedstat {} cmd {}\n{}",
                read("comm").trim(),
                read("wchan").trim(),
                thread_policy(pid).ok(),
                read("schedstat").trim(),
                cmdline.chars().take(120).collect::<String>(),
                read("stack")
            );
        }
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.mapped.get() {
            if let Ok(id) = cgroup_id_of(&self.path) {
                let _ = shared_maps().cgroups().remove(id);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    drop(Self::existing(e.path()));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: plain syscall; the pid belongs to this test's workload.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The test's processes; killed and reaped on drop.
#[derive(Default)]
pub(crate) struct Workload {
    children: Vec<Child>,
}

impl Workload {
    /// A single-threaded busy loop (busybox sh).
    pub(crate) fn spin_shell(&mut self, cgroup: &TestCgroup) -> u32 {
        self.shell_in(cgroup, "while :; do :; done")
    }

    /// `script` run by busybox sh that first moves itself into `cgroup`, so that everything it
    /// starts is born there.
    pub(crate) fn shell_in(&mut self, cgroup: &TestCgroup, script: &str) -> u32 {
        let procs = cgroup.path.join("cgroup.procs");
        let child = Command::new("busybox")
            .args([
                "sh",
                "-c",
                &format!("echo $$ > {} || exit 1\n{script}", procs.display()),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn busybox sh");
        let pid = child.id();
        self.children.push(child);
        // Wait for the move, so that the caller's measurements see the process in place.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cgroup.pids().contains(&(pid as i32)) {
            assert!(
                Instant::now() < deadline,
                "{pid} did not join {}",
                cgroup.path.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        pid
    }

    /// `corral-spin` (on the guest's PATH) with `threads` busy threads, until it is killed.
    pub(crate) fn spin_threads(&mut self, cgroup: &TestCgroup, threads: usize) -> u32 {
        let pid = self.spin_threads_here(threads);
        cgroup.adopt(pid);
        pid
    }

    /// `corral-spin` with `threads` busy threads, left in this test process's cgroup; returns
    /// once its threads run.
    pub(crate) fn spin_threads_here(&mut self, threads: usize) -> u32 {
        let child = Command::new("corral-spin")
            .args(["--millis", "3600000", "--threads", &threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the spinner");
        let pid = child.id();
        self.children.push(child);
        // Wait until the spinner's threads exist, so that sampling sees them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while busy_threads(pid) < threads {
            assert!(
                Instant::now() < deadline,
                "spinner {pid} did not start {threads} threads"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pid
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fields of `/proc/<pid>/task/<tid>/stat` after the command name.
fn stat_fields(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let fields = corral_bpf::cpus::stat_fields_after_comm(&text)?;
    Some(fields.into_iter().map(str::to_owned).collect())
}

/// The threads of `pid`.
pub(crate) fn tids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// How many threads of `pid` are runnable (state `R`; the spinner's helper threads are).
fn busy_threads(pid: u32) -> usize {
    tids(pid)
        .into_iter()
        .filter(|tid| {
            stat_fields(Path::new(&format!("/proc/{pid}/task/{tid}/stat")))
                .map(|f| f[0] == "R")
                .unwrap_or(false)
        })
        .count()
}

/// The scheduling policy of every thread of `pid`.
pub(crate) fn policies(pid: u32) -> Vec<u32> {
    tids(pid)
        .into_iter()
        .filter_map(|tid| thread_policy(tid as i32).ok())
        .collect()
}

/// Total CPU time (utime + stime, in clock ticks of 10 ms) of `pid`'s threads.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(Path::new(&format!("/proc/{pid}/stat"))).expect("read stat");
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// One observation of a running thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) pid: u32,
    /// Shown in failure messages.
    #[allow(dead_code)]
    pub(crate) tid: u32,
    pub(crate) cpu: u32,
}

/// Sampling rounds every placement check takes at least.
pub(crate) const MIN_ROUNDS: usize = 300;
/// Longest a sampling may take to reach [`MIN_ROUNDS`] on a loaded machine.
const SAMPLING_LIMIT: Duration = Duration::from_secs(120);

/// Samples every running thread of `pids`, round after round (1 ms apart), for at least
/// `duration` and at least [`MIN_ROUNDS`] rounds; returns the samples and the number of rounds.
pub(crate) fn sample_cpus(pids: &[u32], duration: Duration) -> (Vec<Sample>, usize) {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut rounds = 0;
    while start.elapsed() < duration || rounds < MIN_ROUNDS {
        // Only a guard against a sampler that cannot make progress at all.
        assert!(
            start.elapsed() < duration + SAMPLING_LIMIT,
            "only {rounds} sampling rounds in {:?}",
            start.elapsed()
        );
        rounds += 1;
        for &pid in pids {
            for tid in tids(pid) {
                let path = PathBuf::from(format!("/proc/{pid}/task/{tid}/stat"));
                let Some(f) = stat_fields(&path) else {
                    continue;
                };
                // Field 3 (state) is at 0, field 39 (processor) at 36.
                if f.len() > 36 && f[0] == "R" {
                    samples.push(Sample {
                        pid,
                        tid,
                        cpu: f[36].parse().unwrap(),
                    });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (samples, rounds)
}

/// The samples of `pids` on a CPU outside `allowed`.
pub(crate) fn outside(samples: &[Sample], pids: &[u32], allowed: &[u32]) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| pids.contains(&s.pid) && !allowed.contains(&s.cpu))
        .copied()
        .collect()
}

/// How many samples are of `pids`.
pub(crate) fn of(samples: &[Sample], pids: &[u32]) -> usize {
    samples.iter().filter(|s| pids.contains(&s.pid)).count()
}

/// Pin directory of the scheduler the tests share.
pub(crate) const PIN_DIR: &str = "/sys/fs/bpf/corral-vm-sched";

/// The scheduler the tests share. Every attach flips static keys in the kernel, and under qemu
/// TCG that patching has been seen to oops the guest (`int3` in `update_rq_clock`), so the
/// suite attaches as rarely as it can: once, and again only after a test stopped it or loaded
/// one in another mode.
static SHARED: Mutex<Option<Scheduler>> = Mutex::new(None);

/// Exclusive use of the shared scheduler slot for one test (tests also run one at a time).
pub(crate) fn scheduler_slot() -> MutexGuard<'static, Option<Scheduler>> {
    SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared slot, emptied: sched_ext is off (no scheduler of these tests attached) until the
/// guard is dropped. For tests that attach a scheduler of their own (`corral sched`, the
/// runtime's loader) or need the fair class.
pub(crate) fn without_shared_scheduler() -> MutexGuard<'static, Option<Scheduler>> {
    let mut slot = scheduler_slot();
    *slot = None;
    slot
}

/// The shared scheduler, attached in full switch (again, if a previous test stopped it or left
/// one in partial mode).
pub(crate) fn attached(slot: &mut Option<Scheduler>) -> &mut Scheduler {
    if slot
        .as_ref()
        .is_some_and(|s| s.exit_info().is_some() || s.mode() != SchedMode::Full)
    {
        *slot = None;
    }
    slot.get_or_insert_with(|| {
        let config = SchedulerConfig {
            pin_dir: PIN_DIR.into(),
            ..SchedulerConfig::default()
        };
        Scheduler::start(&config).expect("start the scheduler")
    })
}

/// The shared pinned maps.
pub(crate) fn shared_maps() -> PinnedMaps {
    PinnedMaps::open_or_create(PIN_DIR).expect("open the pinned maps")
}

/// Publishes group 0 on [`LOW`] and group 1 on [`HIGH`], FIFO, no borrowing.
pub(crate) fn publish_low_high(maps: &PinnedMaps) {
    maps.groups()
        .publish(0, &GroupSpec::new(LOW, SLICE_NS))
        .expect("publish group 0");
    maps.groups()
        .publish(1, &GroupSpec::new(HIGH, SLICE_NS))
        .expect("publish group 1");
}

/// Three CPU-bound processes in `cgroup`, one of them with three threads, all left at
/// `SCHED_NORMAL` (full switch places them by their cgroup); returns their pids.
pub(crate) fn three_spinners(work: &mut Workload, cgroup: &TestCgroup) -> Vec<u32> {
    let pids = vec![
        work.spin_threads(cgroup, 3),
        work.spin_shell(cgroup),
        work.spin_shell(cgroup),
    ];
    for &pid in &pids {
        assert!(
            policies(pid).iter().all(|&p| p == SCHED_NORMAL),
            "{pid} is not SCHED_NORMAL: {:?}",
            policies(pid)
        );
    }
    pids
}

pub(crate) fn wait_state(want: SchedExtState, timeout: Duration) -> SchedExtState {
    let deadline = Instant::now() + timeout;
    loop {
        let state = sched_ext_state().expect("read sched_ext state");
        if state == want || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CPU taken offline through sysfs; brought back online on drop, also when the test fails.
pub(crate) struct OfflineCpu {
    online: PathBuf,
    offline: bool,
}

impl OfflineCpu {
    pub(crate) fn new(cpu: u32) -> OfflineCpu {
        let online = PathBuf::from(format!("/sys/devices/system/cpu/cpu{cpu}/online"));
        std::fs::write(&online, "0").unwrap_or_else(|e| panic!("take CPU {cpu} offline: {e}"));
        OfflineCpu {
            online,
            offline: true,
        }
    }

    /// Brings the CPU back online now.
    pub(crate) fn bring_online(&mut self) {
        std::fs::write(&self.online, "1")
            .unwrap_or_else(|e| panic!("write 1 to {}: {e}", self.online.display()));
        self.offline = false;
    }
}

impl Drop for OfflineCpu {
    fn drop(&mut self) {
        if self.offline {
            let _ = std::fs::write(&self.online, "1");
        }
    }
}

/// Tasks of a cgroup mapped to a group run only on that group's CPUs: with groups {0,1} and
/// {2,3} and three CPU-bound processes (one multi-threaded) in each group's cgroup, no sample of
/// ≥ 300 rounds over ≥ 3 s sees a thread outside its group, and the violation counters stay 0.
/// The threads stay `SCHED_NORMAL`: full switch places them by their cgroup alone. The same
/// workload without the scheduler crosses groups, which proves the check can fail.
#[test]
fn placement_keeps_each_cgroup_on_its_group() {
    require_guest();
    // The control run needs sched_ext off.
    let mut slot = without_shared_scheduler();
    let maps = shared_maps();
    publish_low_high(&maps);
    let (cg_low, cg_high) = (TestCgroup::new("place-low"), TestCgroup::new("place-high"));
    cg_low.map(&maps, 0);
    cg_high.map(&maps, 1);

    let mut work = Workload::default();
    let low = three_spinners(&mut work, &cg_low);
    let high = three_spinners(&mut work, &cg_high);

    // Control: mapped cgroups but no scheduler, so the fair class places them anywhere.
    assert_eq!(sched_ext_state().unwrap(), SchedExtState::Disabled);
    let (control, rounds) = sample_cpus(&work.pids(), Duration::from_millis(3200));
    assert!(rounds >= MIN_ROUNDS, "only {rounds} sampling rounds");
    let crossing = outside(&control, &low, &LOW).len() + outside(&control, &high, &HIGH).len();
    assert!(
        crossing > 0,
        "without the scheduler the workload never left its group ({} samples): the placement \
         check below could not fail",
        control.len()
    );

    let sched = attached(&mut slot);
    assert_eq!(sched_ext_state().unwrap(), SchedExtState::Enabled);
    // Let the runs that were in progress at attach end (they continue where the fair class put
    // them for one slice), then count from zero over the measured window.
    std::thread::sleep(Duration::from_millis(200));
    for group in [0, 1] {
        maps.stats().reset(group).unwrap();
    }
    let (samples, rounds) = sample_cpus(&work.pids(), Duration::from_millis(3200));
    assert!(rounds >= MIN_ROUNDS, "only {rounds} sampling rounds");
    assert!(
        of(&samples, &low) >= 300 && of(&samples, &high) >= 300,
        "too few samples"
    );
    let bad_low = outside(&samples, &low, &LOW);
    let bad_high = outside(&samples, &high, &HIGH);
    assert!(
        bad_low.is_empty(),
        "group {{0,1}} threads seen elsewhere: {bad_low:?}"
    );
    assert!(
        bad_high.is_empty(),
        "group {{2,3}} threads seen elsewhere: {bad_high:?}"
    );
    for group in [0, 1] {
        let stats = maps.stats().read(group).unwrap();
        assert_eq!(stats.violations, 0, "group {group}: {stats:?}");
        assert!(stats.runs > 0, "group {group} never ran: {stats:?}");
    }
    for pid in work.pids() {
        assert!(
            policies(pid).iter().all(|&p| p == SCHED_NORMAL),
            "{pid} changed policy"
        );
    }
    assert_eq!(
        sched.exit_info(),
        None,
        "the scheduler stopped during the test"
    );
}

/// A child cgroup created inside a mapped cgroup is placed with its parent's group: its tasks
/// run on the parent's CPUs only, though the child itself has no entry.
#[test]
fn nested_cgroup_inherits_parent_group() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    publish_low_high(&maps);
    let parent = TestCgroup::new("nested-parent");
    parent.map(&maps, 1);
    attached(&mut slot);

    let middle = parent.child("middle");
    let child = middle.child("leaf");
    assert_eq!(maps.cgroups().get(child.id()).unwrap(), None);
    let mut work = Workload::default();
    let pids = three_spinners(&mut work, &child);
    std::thread::sleep(Duration::from_millis(200));
    maps.stats().reset(1).unwrap();
    let (samples, rounds) = sample_cpus(&pids, Duration::from_millis(3000));
    assert!(
        rounds >= MIN_ROUNDS && samples.len() >= MIN_ROUNDS,
        "{rounds} rounds, {} samples",
        samples.len()
    );
    let bad = outside(&samples, &pids, &HIGH);
    assert!(
        bad.is_empty(),
        "nested cgroup's threads ran outside {{2,3}}: {bad:?}"
    );
    let stats = maps.stats().read(1).unwrap();
    assert!(stats.runs > 0 && stats.violations == 0, "{stats:?}");
}

/// One map update moves a loaded cgroup from group {0,1} to group {2,3}: from 100 ms after the
/// update on, no thread is seen outside {2,3}. The groups are published after the scheduler
/// started, through its pinned cpumask builder. The pinned kick preempts the CPUs running the
/// cgroup's threads for the old group (both of {0,1}, which its five busy threads keep busy),
/// and kicks none once they run in the new group.
#[test]
fn remap_moves_a_loaded_cgroup_with_one_update() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    attached(&mut slot);
    maps.stats().reset(1).unwrap();
    maps.groups()
        .publish(0, &GroupSpec::new(LOW, SLICE_NS))
        .unwrap();
    let p = maps
        .groups()
        .publish(1, &GroupSpec::new(HIGH, SLICE_NS))
        .unwrap();
    assert!(
        p.rebuilt.is_some_and(|r| r.built == 1),
        "publish did not rebuild: {p:?}"
    );

    let cg = TestCgroup::new("remap");
    cg.map(&maps, 0);
    let mut work = Workload::default();
    let pids = three_spinners(&mut work, &cg);
    std::thread::sleep(Duration::from_millis(200));
    let (before, _) = sample_cpus(&pids, Duration::from_millis(1000));
    let bad = outside(&before, &pids, &LOW);
    assert!(
        !before.is_empty() && bad.is_empty(),
        "before the remap: {bad:?}"
    );

    // The kick races the 4 ms tick, which under TCG can reach the old CPUs between the update
    // and the kick (it then moved the threads already, and the kick finds nothing): move the
    // cgroup back and forth up to five times until one kick lands, and never more than the
    // two CPUs of {0,1}.
    let mut kicks = Vec::new();
    let (t, update) = loop {
        let t = Instant::now();
        cg.map(&maps, 1);
        let kicked = maps.cgroups().kick_moved(cg.id(), 1).unwrap();
        let update = t.elapsed();
        kicks.push(kicked);
        assert!(
            kicked.is_some_and(|n| n <= 2),
            "kicked {kicked:?} CPUs: only CPUs 0-1 run the cgroup's threads"
        );
        if kicked.is_some_and(|n| n >= 1) {
            break (t, update);
        }
        assert!(
            kicks.len() < 5,
            "no kick landed in {} remaps ({kicks:?}): the cgroup's threads run on both of CPUs 0-1",
            kicks.len()
        );
        cg.map(&maps, 0);
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("remap kicks per attempt: {kicks:?}");
    std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
    let (after, rounds) = sample_cpus(&pids, Duration::from_millis(3000));
    assert!(
        rounds >= MIN_ROUNDS && after.len() >= MIN_ROUNDS,
        "{rounds} rounds, {} samples",
        after.len()
    );
    let bad = outside(&after, &pids, &HIGH);
    assert!(
        bad.is_empty(),
        "after the remap ({update:?} update): {bad:?}"
    );
    assert_eq!(maps.stats().read(1).unwrap().violations, 0);
    // In their new group already: nothing to preempt.
    assert_eq!(maps.cgroups().kick_moved(cg.id(), 1).unwrap(), Some(0));
}

/// Tasks without a usable mapping belong to the host group and keep running: a task whose
/// cgroup is unmapped and a task whose group is deleted both accumulate CPU time while both
/// groups are loaded, the host group's statistics count their runs, and the scheduler stays
/// enabled for 10 s (the watchdog would disable it if they stalled). The host slot is left
/// unpublished, so host tasks may use every CPU.
#[test]
fn host_group_keeps_unmapped_and_orphaned_tasks_running() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    publish_low_high(&maps);
    maps.groups()
        .publish(2, &GroupSpec::new([1, 2], SLICE_NS))
        .unwrap();
    let (cg_low, cg_high) = (TestCgroup::new("host-low"), TestCgroup::new("host-high"));
    let (unmapped, orphan) = (
        TestCgroup::new("host-unmapped"),
        TestCgroup::new("host-orphan"),
    );
    cg_low.map(&maps, 0);
    cg_high.map(&maps, 1);
    orphan.map(&maps, 2);
    assert_eq!(
        maps.groups().host().unwrap(),
        None,
        "the host slot is empty"
    );
    let sched = attached(&mut slot);

    let mut work = Workload::default();
    three_spinners(&mut work, &cg_low);
    three_spinners(&mut work, &cg_high);
    let lone = work.spin_shell(&unmapped);
    let orphaned = work.spin_shell(&orphan);
    assert_eq!(thread_policy(lone as i32).unwrap(), SCHED_NORMAL);
    std::thread::sleep(Duration::from_millis(300));
    maps.groups().delete(2).unwrap();
    maps.stats().reset_host().unwrap();

    let start = (cpu_ticks(lone), cpu_ticks(orphaned));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert_eq!(sched.exit_info(), None, "the scheduler stopped");
        assert_eq!(sched_ext_state().unwrap(), SchedExtState::Enabled);
        std::thread::sleep(Duration::from_millis(500));
    }
    let end = (cpu_ticks(lone), cpu_ticks(orphaned));
    // 10 s of wall time; demand at least 0.2 s of CPU each (clock ticks are 10 ms).
    assert!(
        end.0 - start.0 >= 20,
        "unmapped task starved: {start:?} -> {end:?}"
    );
    assert!(
        end.1 - start.1 >= 20,
        "task of the deleted group starved: {start:?} -> {end:?}"
    );
    let host = maps.stats().read_host().unwrap();
    assert!(host.runs > 0, "no host group runs recorded: {host:?}");
    assert!(host.run_ns > 0, "{host:?}");
}

/// The latency histogram counts every recorded run (its total equals `runs`) and is non-zero
/// for a loaded group; `bpftool map dump pinned` prints the maps with their field names.
#[test]
fn statistics_histogram_matches_runs_and_dumps_with_field_names() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    publish_low_high(&maps);
    let cg = TestCgroup::new("stats");
    cg.map(&maps, 0);
    attached(&mut slot);
    for group in [0, 1] {
        maps.stats().reset(group).unwrap();
    }
    {
        let mut work = Workload::default();
        three_spinners(&mut work, &cg);
        std::thread::sleep(Duration::from_secs(2));
    }
    // The workload is gone: no more runs of group 0, so the per-CPU copies are settled.
    let stats = maps.stats().read(0).unwrap();
    assert!(stats.runs > 0, "{stats:?}");
    assert_eq!(stats.hist_total(), stats.runs, "{stats:?}");
    assert!(stats.enqueues >= stats.runs, "{stats:?}");
    assert!(stats.run_ns > 0 && stats.lat_sum_ns > 0, "{stats:?}");
    assert!(
        stats.lat_max_ns > 0 && stats.lat_max_ns <= stats.lat_sum_ns,
        "{stats:?}"
    );
    assert_eq!(stats.violations, 0);
    let idle = maps.stats().read(1).unwrap();
    assert_eq!(
        (idle.runs, idle.hist_total()),
        (0, 0),
        "group 1 had no tasks: {idle:?}"
    );

    for (map, fields) in [
        (
            "corral_stats",
            &[
                "enqueues",
                "dispatches",
                "lat_hist",
                "run_ns",
                "violations",
                "affinity_overrides",
                "displaced",
                "lat_max_ns",
            ][..],
        ),
        (
            "corral_groups",
            &[
                "cpus",
                "nr_cpus",
                "slice_ns",
                "order",
                "borrow",
                "generation",
            ][..],
        ),
        ("corral_cgroups", &["group_id", "flags"][..]),
        ("corral_layout", &["version", "generation"][..]),
    ] {
        let path = Path::new(PIN_DIR).join(map);
        let out = Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(&path)
            .output()
            .expect("run bpftool");
        assert!(
            out.status.success(),
            "bpftool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for field in fields {
            assert!(
                text.contains(&format!("\"{field}\"")),
                "{map} dump lacks {field}:\n{text}"
            );
        }
    }
}

/// A scheduler forced to exit through its debug knob (`scx_bpf_error`) returns sched_ext to
/// `disabled`; its tasks (full switch had all of them, at `SCHED_NORMAL`) keep running in the
/// fair class, and the exit information the Rust API reports carries the reason and the
/// scheduler's message.
#[test]
fn failure_disables_scheduler_and_reports_exit_info() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    publish_low_high(&maps);
    let cg = TestCgroup::new("failure");
    cg.map(&maps, 0);
    let sched = attached(&mut slot);
    let mut work = Workload::default();
    let pids = three_spinners(&mut work, &cg);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sched.exit_info(), None);

    sched.force_error();
    let exit = sched
        .wait_for_exit(Duration::from_secs(10))
        .expect("the scheduler did not exit");
    assert_eq!(exit.kind, ExitKind::ErrorBpf, "{exit}");
    assert!(exit.kind.is_error());
    assert!(
        exit.message.contains("debug_force_error"),
        "message: {exit}"
    );
    assert!(!exit.reason.is_empty(), "no reason: {exit}");
    assert_eq!(
        wait_state(SchedExtState::Disabled, Duration::from_secs(10)),
        SchedExtState::Disabled
    );

    let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    for (i, pid) in pids.iter().enumerate() {
        assert!(
            after[i] > before[i] + 10,
            "{pid} stopped running after the exit: {before:?} -> {after:?}"
        );
        assert_eq!(
            thread_policy(*pid as i32).unwrap(),
            SCHED_NORMAL,
            "policy kept, fair class runs it"
        );
    }
    *slot = None;
    assert_eq!(sched_ext_state().unwrap(), SchedExtState::Disabled);
}

/// A group with the borrow flag lends its queued tasks to idle CPUs outside it: group {0,1}
/// (vtime order, borrowing) overloaded while group {2,3} has no tasks, so CPUs 2 and 3 run its
/// threads; those runs count as borrowed, never as violations.
#[test]
fn borrowing_group_lends_queued_tasks_to_idle_cpus() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    let spec = GroupSpec {
        order: GroupOrder::Vtime,
        borrow: true,
        ..GroupSpec::new(LOW, SLICE_NS)
    };
    maps.groups().publish(0, &spec).unwrap();
    maps.groups()
        .publish(1, &GroupSpec::new(HIGH, SLICE_NS))
        .unwrap();
    let cg = TestCgroup::new("borrow");
    cg.map(&maps, 0);
    attached(&mut slot);

    let mut work = Workload::default();
    let pids = three_spinners(&mut work, &cg);
    std::thread::sleep(Duration::from_millis(200));
    maps.stats().reset(0).unwrap();
    let (samples, _) = sample_cpus(&pids, Duration::from_millis(3000));
    let elsewhere = outside(&samples, &pids, &LOW);
    let stats = maps.stats().read(0).unwrap();
    // Restore the plain FIFO group the other tests expect before asserting.
    maps.groups()
        .publish(0, &GroupSpec::new(LOW, SLICE_NS))
        .unwrap();
    assert!(
        !elsewhere.is_empty(),
        "no thread of the borrowing group ran on the idle CPUs 2-3 ({} samples)",
        samples.len()
    );
    assert!(stats.borrowed_runs > 0, "{stats:?}");
    assert_eq!(stats.violations, 0, "{stats:?}");
}

/// Publishing a group with an offline CPU is refused with an error naming the CPU, and the
/// table is unchanged; once the CPU is back online the same group is accepted. The attached
/// scheduler stays attached across the hotplug (it implements the hotplug callbacks).
#[test]
fn offline_cpu_is_refused_for_a_group() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    let sched = attached(&mut slot);
    let mut cpu3 = OfflineCpu::new(3);
    let before = maps.groups().get(5).unwrap();
    let result = maps.groups().publish(5, &GroupSpec::new([2, 3], SLICE_NS));
    let after = maps.groups().get(5).unwrap();
    cpu3.bring_online();
    let err = result.expect_err("a group with an offline CPU must be refused");
    assert!(
        matches!(
            err,
            corral_bpf::Error::CpuOffline {
                group: 5,
                cpu: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("CPU 3 is offline"), "{err}");
    assert_eq!(before, after, "the refused publish changed the table");
    maps.groups()
        .publish(5, &GroupSpec::new([2, 3], SLICE_NS))
        .expect("CPU 3 is back");
    maps.groups().delete(5).unwrap();
    assert_eq!(sched.exit_info(), None, "the hotplug stopped the scheduler");
}
