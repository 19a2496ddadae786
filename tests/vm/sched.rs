//! VM tests of the sched_ext scheduler: placement, nested cgroups, remap, fallback, statistics
//! and failure, on the real kernel path (4 vCPUs, run with `--test-threads=1`).
//!
//! The workloads are CPU-bound processes put in a cgroup per group and switched to `SCHED_EXT`:
//! busybox shell loops, and `corral-spin --threads N`, the workspace's multi-threaded spinner
//! that the harness puts on the guest's PATH. Placement is observed from outside, as a user would: every thread's
//! `processor` (field 39 of `/proc/<pid>/task/<tid>/stat`), sampled while the thread is running
//! (state `R`; a sleeping thread's field shows where it last ran, which may predate the
//! scheduler).
//!
//! The tests share one attached scheduler on the pins under `/sys/fs/bpf/corral-vm-sched` (see
//! [`SHARED`]); a test that needs sched_ext off (the placement control run, CPU hotplug) or
//! stops it (the failure test) detaches it, and the next test re-attaches. It stays attached
//! after the last test, until the guest powers off.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corral_bpf::{
    cgroup_id_of, sched_ext_state, set_cgroup_sched_ext, thread_policy, CgroupFlags, ExitKind,
    GroupOrder, GroupSpec, PinnedMaps, SchedExtState, Scheduler, SchedulerConfig, SCHED_EXT,
};
use corral_tests::guest::require_guest;

/// Group 0 of the tests: CPUs 0 and 1.
const LOW: [u32; 2] = [0, 1];
/// Group 1 of the tests: CPUs 2 and 3.
const HIGH: [u32; 2] = [2, 3];
/// Time slice of the test groups.
const SLICE_NS: u64 = 5_000_000;
/// A cgroup v2 directory made for one test; its processes are killed and it is removed on drop.
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        Self::at(Path::new("/sys/fs/cgroup").join(format!("corral-vm-{name}")))
    }

    fn at(path: PathBuf) -> TestCgroup {
        if path.exists() {
            drop(TestCgroup { path: path.clone() });
        }
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup { path }
    }

    fn child(&self, name: &str) -> TestCgroup {
        Self::at(self.path.join(name))
    }

    fn id(&self) -> u64 {
        cgroup_id_of(&self.path).expect("cgroup id")
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    fn adopt(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.path.display()));
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Switches every thread of the cgroup to `SCHED_EXT`.
    fn enable_sched_ext(&self) -> usize {
        set_cgroup_sched_ext(&self.path, true).expect("switch threads to SCHED_EXT")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    drop(TestCgroup { path: e.path() });
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

/// CPU-bound processes; killed and reaped on drop.
#[derive(Default)]
struct Workload {
    children: Vec<Child>,
}

impl Workload {
    /// A single-threaded busy loop (busybox sh).
    fn spin_shell(&mut self, cgroup: &TestCgroup) -> u32 {
        let child = Command::new("busybox")
            .args(["sh", "-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn busybox sh");
        self.adopt(cgroup, child)
    }

    /// `corral-spin` (on the guest's PATH) with `threads` busy threads, until it is killed.
    fn spin_threads(&mut self, cgroup: &TestCgroup, threads: usize) -> u32 {
        let child = Command::new("corral-spin")
            .args(["--millis", "3600000", "--threads", &threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the spinner");
        let pid = self.adopt(cgroup, child);
        // Wait until the spinner's threads exist, so the policy switch and sampling see them.
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

    fn adopt(&mut self, cgroup: &TestCgroup, child: Child) -> u32 {
        let pid = child.id();
        self.children.push(child);
        cgroup.adopt(pid);
        pid
    }

    fn pids(&self) -> Vec<u32> {
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
fn tids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// How many threads of `pid` have used CPU time (the spinner's helper threads do).
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

/// Total CPU time (utime + stime, in clock ticks) of `pid`'s threads.
fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(Path::new(&format!("/proc/{pid}/stat"))).expect("read stat");
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// One observation of a running thread.
#[derive(Debug, Clone, Copy)]
struct Sample {
    pid: u32,
    /// Shown in failure messages.
    #[allow(dead_code)]
    tid: u32,
    cpu: u32,
}

/// Sampling rounds every placement check takes at least.
const MIN_ROUNDS: usize = 300;
/// Longest a sampling may take to reach [`MIN_ROUNDS`] on a loaded machine.
const SAMPLING_LIMIT: Duration = Duration::from_secs(120);

/// Samples every running thread of `pids`, round after round (1 ms apart), for at least
/// `duration` and at least [`MIN_ROUNDS`] rounds; returns the samples and the number of rounds.
fn sample_cpus(pids: &[u32], duration: Duration) -> (Vec<Sample>, usize) {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut rounds = 0;
    while start.elapsed() < duration || rounds < MIN_ROUNDS {
        // Only a guard against a sampler that cannot make progress at all.
        assert!(
            start.elapsed() < SAMPLING_LIMIT,
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

fn outside(samples: &[Sample], pids: &[u32], allowed: &[u32]) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| pids.contains(&s.pid) && !allowed.contains(&s.cpu))
        .copied()
        .collect()
}

fn of(samples: &[Sample], pids: &[u32]) -> usize {
    samples.iter().filter(|s| pids.contains(&s.pid)).count()
}

/// Pin directory of the scheduler the tests share.
const PIN_DIR: &str = "/sys/fs/bpf/corral-vm-sched";

/// The scheduler the tests share. Every attach flips static keys in the kernel, and under qemu
/// TCG that patching has been seen to oops the guest (`int3` in `update_rq_clock`), so the
/// suite attaches as rarely as it can: once, and again only after a test stopped it.
static SHARED: Mutex<Option<Scheduler>> = Mutex::new(None);

/// Exclusive use of the shared scheduler slot for one test (tests also run one at a time).
fn scheduler_slot() -> MutexGuard<'static, Option<Scheduler>> {
    SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared scheduler, attached (again, if a previous test stopped it).
fn attached(slot: &mut Option<Scheduler>) -> &mut Scheduler {
    if slot.as_ref().is_some_and(|s| s.exit_info().is_some()) {
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
fn shared_maps() -> PinnedMaps {
    PinnedMaps::open_or_create(PIN_DIR).expect("open the pinned maps")
}

fn publish_low_high(maps: &PinnedMaps) {
    maps.groups()
        .publish(0, &GroupSpec::new(LOW, SLICE_NS))
        .expect("publish group 0");
    maps.groups()
        .publish(1, &GroupSpec::new(HIGH, SLICE_NS))
        .expect("publish group 1");
}

/// Three CPU-bound processes in `cgroup`, one of them with three threads; returns their pids.
fn three_spinners(work: &mut Workload, cgroup: &TestCgroup) -> Vec<u32> {
    let pids = vec![
        work.spin_threads(cgroup, 3),
        work.spin_shell(cgroup),
        work.spin_shell(cgroup),
    ];
    assert!(
        cgroup.enable_sched_ext() >= 5,
        "fewer threads than spawned were switched"
    );
    pids
}

fn wait_state(want: SchedExtState, timeout: Duration) -> SchedExtState {
    let deadline = Instant::now() + timeout;
    loop {
        let state = sched_ext_state().expect("read sched_ext state");
        if state == want || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tasks of a cgroup mapped to a group run only on that group's CPUs: with groups {0,1} and
/// {2,3} and three CPU-bound processes (one multi-threaded) in each group's cgroup, no sample of
/// ≥ 300 rounds over ≥ 3 s sees a thread outside its group, and the violation counters stay 0.
/// The same workload without the scheduler crosses groups, which proves the check can fail.
#[test]
fn placement_keeps_each_cgroup_on_its_group() {
    require_guest();
    let mut slot = scheduler_slot();
    // The control run needs sched_ext off.
    *slot = None;
    let maps = shared_maps();
    publish_low_high(&maps);
    let (cg_low, cg_high) = (TestCgroup::new("place-low"), TestCgroup::new("place-high"));
    maps.cgroups()
        .insert(cg_low.id(), 0, CgroupFlags::NONE)
        .unwrap();
    maps.cgroups()
        .insert(cg_high.id(), 1, CgroupFlags::NONE)
        .unwrap();

    let mut work = Workload::default();
    let low = three_spinners(&mut work, &cg_low);
    let high = three_spinners(&mut work, &cg_high);

    // Control: SCHED_EXT policy but no scheduler, so the fair class places them anywhere.
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
    maps.cgroups()
        .insert(parent.id(), 1, CgroupFlags::NONE)
        .unwrap();
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
/// started, through its pinned cpumask builder.
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
    maps.cgroups()
        .insert(cg.id(), 0, CgroupFlags::NONE)
        .unwrap();
    let mut work = Workload::default();
    let pids = three_spinners(&mut work, &cg);
    std::thread::sleep(Duration::from_millis(200));
    let (before, _) = sample_cpus(&pids, Duration::from_millis(1000));
    let bad = outside(&before, &pids, &LOW);
    assert!(
        !before.is_empty() && bad.is_empty(),
        "before the remap: {bad:?}"
    );

    let t = Instant::now();
    maps.cgroups()
        .insert(cg.id(), 1, CgroupFlags::NONE)
        .unwrap();
    let update = t.elapsed();
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
}

/// Tasks without a usable mapping keep running: a `SCHED_EXT` task whose cgroup is unmapped and
/// a task whose group is deleted both accumulate CPU time while both groups are loaded, and the
/// scheduler stays enabled for 10 s (the watchdog would disable it if they stalled).
#[test]
fn fallback_keeps_unmapped_and_orphaned_tasks_running() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    publish_low_high(&maps);
    maps.groups()
        .publish(2, &GroupSpec::new([1, 2], SLICE_NS))
        .unwrap();
    let (cg_low, cg_high) = (TestCgroup::new("fb-low"), TestCgroup::new("fb-high"));
    let (unmapped, orphan) = (TestCgroup::new("fb-unmapped"), TestCgroup::new("fb-orphan"));
    maps.cgroups()
        .insert(cg_low.id(), 0, CgroupFlags::NONE)
        .unwrap();
    maps.cgroups()
        .insert(cg_high.id(), 1, CgroupFlags::NONE)
        .unwrap();
    maps.cgroups()
        .insert(orphan.id(), 2, CgroupFlags::NONE)
        .unwrap();
    maps.stats().reset_fallback().unwrap();
    let sched = attached(&mut slot);

    let mut work = Workload::default();
    three_spinners(&mut work, &cg_low);
    three_spinners(&mut work, &cg_high);
    let lone = work.spin_shell(&unmapped);
    assert_eq!(unmapped.enable_sched_ext(), 1);
    let orphaned = work.spin_shell(&orphan);
    assert_eq!(orphan.enable_sched_ext(), 1);
    assert_eq!(thread_policy(lone as i32).unwrap(), SCHED_EXT);
    std::thread::sleep(Duration::from_millis(300));
    maps.groups().delete(2).unwrap();

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
    let fallback = maps.stats().read_fallback().unwrap();
    assert!(fallback.runs > 0, "no fallback runs recorded: {fallback:?}");
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
    maps.cgroups()
        .insert(cg.id(), 0, CgroupFlags::NONE)
        .unwrap();
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
            &["enqueues", "dispatches", "lat_hist", "run_ns", "violations"][..],
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
/// `disabled`; its tasks keep running in the fair class, and the exit information the Rust API
/// reports carries the reason and the scheduler's message.
#[test]
fn failure_disables_scheduler_and_reports_exit_info() {
    require_guest();
    let mut slot = scheduler_slot();
    let maps = shared_maps();
    publish_low_high(&maps);
    let cg = TestCgroup::new("failure");
    maps.cgroups()
        .insert(cg.id(), 0, CgroupFlags::NONE)
        .unwrap();
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
            SCHED_EXT,
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
    maps.cgroups()
        .insert(cg.id(), 0, CgroupFlags::NONE)
        .unwrap();
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
/// table is unchanged; once the CPU is back online the same group is accepted.
#[test]
fn offline_cpu_is_refused_for_a_group() {
    require_guest();
    let mut slot = scheduler_slot();
    // CPU hotplug under an attached scheduler without hotplug callbacks makes the kernel stop it.
    *slot = None;
    let maps = shared_maps();
    let online = Path::new("/sys/devices/system/cpu/cpu3/online");
    std::fs::write(online, "0").expect("take CPU 3 offline");
    let before = maps.groups().get(5).unwrap();
    let result = maps.groups().publish(5, &GroupSpec::new([2, 3], SLICE_NS));
    let after = maps.groups().get(5).unwrap();
    std::fs::write(online, "1").expect("bring CPU 3 back online");
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
}
