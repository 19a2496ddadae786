//! containerd inside the guest: a containerd container's server is placed by corral's
//! scheduler end to end. The runtime loads the scheduler, the `containerd` backend creates the
//! container (runc puts it in a cgroup under corral's parent), the map writer maps that cgroup
//! to its group, and every sample of the server's threads' CPU (field 39 of
//! `/proc/<pid>/task/<tid>/stat`) while it burns CPU is on the group's CPU; the scheduler
//! counts no violation.
//!
//! The daemon and the root file system are the host tests' (`tests/tests/support/containerd.rs`):
//! the harness puts containerd, its runc shim and runc on the guest's PATH.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::{EnforcementKind, Runtime, StartKind};
use corral_bpf::PinnedMaps;
use corral_tests::guest::require_guest;

#[path = "../tests/support/containerd.rs"]
mod support;

/// The CPUs the threads of `pid` are seen on, sampled every millisecond until `stop`.
fn sample_cpus(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u32>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for t in tasks.flatten() {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    if let Some(cpu) = corral_bpf::cpus::last_cpu_from_stat(&stat) {
                        seen.push(cpu);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    })
}

#[test]
fn containerd_server_is_placed_by_the_scheduler_in_the_guest() {
    require_guest();
    let _no_scheduler = crate::sched::without_shared_scheduler();
    let daemon = support::Daemon::start();
    let parent = PathBuf::from("/sys/fs/cgroup/corral-vm-containerd");
    let pin_dir = PathBuf::from("/sys/fs/bpf/corral-vm-containerd");
    let mut c = daemon.config(&parent, "corral-vm");
    c.enforcement.backend = EnforcementKind::Bpf;
    c.enforcement.pin_dir = pin_dir.clone();
    c.enforcement.load_scheduler = true;
    for f in &mut c.functions {
        f.timeout_ms = Some(60_000);
    }

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let runtime = Runtime::start(c).expect("start the runtime on containerd");
            let cold = runtime
                .invoke("fb", "hello")
                .await
                .expect("a cold start on containerd");
            assert_eq!(cold.start, StartKind::Cold);
            println!(
                "containerd in the guest: cold start {:?}, cold invocation {:?}",
                cold.timings.cold_start, cold.timings.total
            );
            // The server started only once its cgroup was mapped: on its group's CPU from its
            // first instruction (its start-up is function work, not the host group's).
            let startup = runtime.invoke("fb", "startup").await.expect("startup");
            let text = String::from_utf8_lossy(&startup.output).into_owned();
            assert!(
                text.ends_with("on cpu 1"),
                "the server of group b (CPU 1) started elsewhere: {text:?}"
            );
            // The server's pid in its answer is its pid namespace's (1): the host pid is in
            // the container's cgroup, which runc made at <parent>/<container>.
            let procs = parent.join(&cold.container).join("cgroup.procs");
            let pids: Vec<u32> = std::fs::read_to_string(&procs)
                .unwrap_or_else(|e| panic!("{}: {e}", procs.display()))
                .lines()
                .map(|l| l.trim().parse().unwrap())
                .collect();
            assert_eq!(pids.len(), 1, "one server process: {pids:?}");
            let pid = pids[0];
            let maps = PinnedMaps::open(&pin_dir).unwrap();
            assert_eq!(
                maps.cgroups().get(cold.cgroup_id).unwrap().map(|e| e.group),
                Some(cold.group.0),
                "the container's cgroup is mapped to its group"
            );
            maps.stats().reset(cold.group.0).unwrap();

            let stop = Arc::new(AtomicBool::new(false));
            let sampler = sample_cpus(pid, Arc::clone(&stop));
            for _ in 0..3 {
                let warm = runtime
                    .invoke("fb", "spin 300")
                    .await
                    .expect("a warm invocation");
                assert_eq!(warm.start, StartKind::Warm);
                assert_eq!(warm.container, cold.container, "one warm server");
                println!(
                    "containerd in the guest: warm `spin 300` in {:?}",
                    warm.timings.total
                );
            }
            stop.store(true, Ordering::Relaxed);
            let seen = sampler.join().unwrap();
            println!("containerd server: {} CPU samples: {:?}", seen.len(), {
                let mut d = seen.clone();
                d.sort_unstable();
                d.dedup();
                d
            });
            assert!(seen.len() > 50, "too few samples: {}", seen.len());
            assert!(
                seen.iter().all(|&cpu| cpu == 1),
                "the server of group b (CPU 1) ran elsewhere: {seen:?}"
            );
            let s = maps.stats().read(cold.group.0).unwrap();
            assert!(s.runs > 0, "{s:?}");
            assert_eq!(s.violations, 0, "{s:?}");

            runtime.shutdown().await.expect("shutdown");
            assert!(maps.cgroups().get(cold.cgroup_id).unwrap().is_none());
            drop(maps);
            PinnedMaps::remove_pins(&pin_dir).unwrap();
        });
    drop(daemon);
    support::remove_cgroup_tree(&parent);
}
