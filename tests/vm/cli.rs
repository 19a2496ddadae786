//! VM test of the `corral` CLI as an operator uses it: `corral sched` in the foreground, then
//! `corral map` / `corral unmap` / `corral maps dump` / `corral status` from other processes
//! against its pinned maps, `corral sched` reattaching after the kernel stopped its scheduler,
//! and SIGTERM ending it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral_tests::guest::require_guest;

const PIN_DIR: &str = "/sys/fs/bpf/corral-vm-cli";

fn corral(args: &[&str]) -> Output {
    Command::new("corral")
        .args(args)
        .output()
        .expect("run corral (on the guest's PATH)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The CPU of every running (state `R`) thread of `pid`, sampled every 5 ms for `duration`.
fn running_cpus(pid: u32, duration: Duration) -> Vec<u32> {
    let mut cpus = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task dir")
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(fields) = corral_bpf::cpus::stat_fields_after_comm(&stat) else {
                continue;
            };
            if fields[0] == "R" {
                cpus.push(fields[36].parse().expect("field 39 is a CPU number"));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cpus
}

/// Fails unless every running thread of `pid`, sampled for 2 s, is on one of `cpus`.
fn assert_runs_on(pid: u32, cpus: &[u32], when: &str) {
    let seen = running_cpus(pid, Duration::from_secs(2));
    assert!(
        seen.len() >= 50,
        "{when}: too few samples of the running spinner: {}",
        seen.len()
    );
    assert!(
        seen.iter().all(|c| cpus.contains(c)),
        "{when}: ran outside CPUs {cpus:?}: {seen:?}"
    );
}

/// Fails unless every thread of `pid` has scheduling policy `policy`.
fn assert_policies(pid: u32, policy: u32) {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
        assert_eq!(
            corral_bpf::thread_policy(tid).unwrap(),
            policy,
            "thread {tid}"
        );
    }
}

/// The lines `corral sched` printed up to the first that starts with `prefix` (within 120 s).
fn wait_for_line(rx: &mpsc::Receiver<String>, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.iter().any(|l: &String| l.starts_with(prefix)) {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(
            rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("corral sched printed no `{prefix}`: {seen:?}")),
        );
    }
    seen
}

/// Kills and reaps on drop, and removes the cgroup.
struct Cleanup {
    children: Vec<Child>,
    cgroup: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(self.cgroup.join("leaf"));
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = corral_bpf::PinnedMaps::remove_pins(PIN_DIR);
    }
}

/// `corral sched` (full switch, the default) publishes the config's groups and its `[host]`
/// group (CPUs 0-1) and runs until SIGTERM; meanwhile `corral map` moves a cgroup onto group 1
/// with one map update, and a busy process in a child cgroup, which ran on the host CPUs 0-1
/// until then, runs only on CPUs 2-3 (the mapping is inherited; its threads stay
/// `SCHED_NORMAL`, and nothing reports a policy switch). `corral maps dump` and `corral status`
/// show the mapping. When the kernel stops the scheduler (sysrq-S), `corral sched` says why and
/// reattaches on the same maps, and the process is back on CPUs 2-3. `corral unmap` returns it
/// to the host group, on CPUs 0-1 only. SIGTERM detaches the scheduler and `corral sched` exits
/// 0; `corral status` then shows sched_ext disabled and the recorded sysrq exit.
#[test]
fn sched_map_unmap_and_status_work_across_processes() {
    require_guest();
    // `corral sched` attaches its own scheduler.
    let _no_scheduler = crate::sched::without_shared_scheduler();
    let dir = std::env::temp_dir().join("corral-vm-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("groups.toml");
    std::fs::write(
        &config,
        "[[groups]]\nname = \"low\"\ncpus = \"0-1\"\n[[groups]]\nname = \"high\"\ncpus = \"2-3\"\n\
         [host]\ncpus = \"0-1\"\n",
    )
    .unwrap();
    let mut cleanup = Cleanup {
        children: Vec::new(),
        cgroup: PathBuf::from("/sys/fs/cgroup/corral-vm-cli"),
    };

    let mut sched = Command::new("corral")
        .args([
            "sched",
            "--config",
            config.to_str().unwrap(),
            "--pin-dir",
            PIN_DIR,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start corral sched");
    let stdout = sched.stdout.take().unwrap();
    let sched_pid = sched.id();
    cleanup.children.push(sched);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("corral sched: {line}");
            let _ = tx.send(line);
        }
    });
    let seen = wait_for_line(&rx, "scheduler attached in full mode");
    assert!(
        seen.iter()
            .any(|l| l == "host group (unmapped tasks): CPUs 0-1 (shared with groups on 0-1: they run first there)"),
        "{seen:?}"
    );
    assert_eq!(
        std::fs::read_to_string("/sys/kernel/sched_ext/state")
            .unwrap()
            .trim(),
        "enabled"
    );

    // A busy two-thread process in a leaf cgroup below the one we map, still in the fair class:
    // mapping the parent must place the leaf's threads too.
    let leaf = cleanup.cgroup.join("leaf");
    std::fs::create_dir_all(&leaf).unwrap();
    let spinner = Command::new("corral-spin")
        .args(["--millis", "3600000", "--threads", "2"])
        .spawn()
        .unwrap();
    let pid = spinner.id();
    cleanup.children.push(spinner);
    std::fs::write(leaf.join("cgroup.procs"), pid.to_string()).unwrap();
    // Unmapped: a host task, on the host CPUs 0-1.
    std::thread::sleep(Duration::from_millis(100));
    assert_runs_on(pid, &[0, 1], "in the host group before the map");

    let cg = cleanup.cgroup.to_str().unwrap().to_owned();
    let out = corral(&["map", &cg, "1", "--pin-dir", PIN_DIR]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("to group 1 (CPUs 2-3)") && !text(&out).contains("switched"),
        "{}",
        text(&out)
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_runs_on(pid, &[2, 3], "mapped to group 1");
    assert_policies(pid, corral_bpf::SCHED_NORMAL);

    let out = corral(&["maps", "dump", "--json", "--pin-dir", PIN_DIR]);
    assert!(out.status.success(), "{}", text(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["cgroups"][0]["path"], cg.as_str());
    assert_eq!(view["cgroups"][0]["group"], 1);
    assert_eq!(view["host_cpus"], "0-1");
    let high = view["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["group"] == 1)
        .unwrap();
    assert!(high["runs"].as_u64().unwrap() > 0, "{high}");
    assert_eq!(high["violations"], 0, "{high}");

    let out = corral(&["status", "--pin-dir", PIN_DIR]);
    let status = text(&out);
    assert!(status.contains("sched_ext: Enabled"), "{status}");
    assert!(status.contains(&cg), "{status}");

    // The kernel stops the scheduler (sysrq-S); corral sched reattaches on the same maps.
    std::fs::write("/proc/sysrq-trigger", "S").expect("sysrq-S");
    let seen = wait_for_line(&rx, "scheduler attached in full mode");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("the scheduler exited on its own: SysRq")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("reattaching in")),
        "{seen:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_runs_on(pid, &[2, 3], "mapped to group 1 after the reattach");

    let out = corral(&["unmap", &cg, "--pin-dir", PIN_DIR]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("threads back to SCHED_NORMAL"),
        "{}",
        text(&out)
    );
    assert_policies(pid, corral_bpf::SCHED_NORMAL);
    std::thread::sleep(Duration::from_millis(100));
    assert_runs_on(pid, &[0, 1], "back in the host group after the unmap");

    // SIGTERM: detach, say so, exit 0.
    // SAFETY: kill with a valid pid and signal.
    assert_eq!(unsafe { libc::kill(sched_pid as i32, libc::SIGTERM) }, 0);
    let sched = &mut cleanup.children[0];
    let status = sched.wait().unwrap();
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        status.success(),
        "corral sched exited with {status}: {rest:?}"
    );
    assert!(
        rest.iter().any(|l| l == "signal received; detached"),
        "{rest:?}"
    );
    assert_eq!(
        std::fs::read_to_string("/sys/kernel/sched_ext/state")
            .unwrap()
            .trim(),
        "disabled"
    );
    let out = corral(&["status", "--pin-dir", PIN_DIR]);
    let status = text(&out);
    assert!(status.contains("sched_ext: Disabled"), "{status}");
    assert!(status.contains("last exit: SysRq"), "{status}");
}

/// `corral run` with the `bpf` backend and `load_scheduler = false`, but no `corral sched`
/// attached: the maps are written, nothing enforces them, and the run says so and fails rather
/// than presenting unenforced placement figures as a success.
#[test]
fn run_without_an_attached_scheduler_warns_and_fails() {
    require_guest();
    let _no_scheduler = crate::sched::without_shared_scheduler();
    assert_eq!(
        std::fs::read_to_string("/sys/kernel/sched_ext/state")
            .unwrap()
            .trim(),
        "disabled"
    );
    let dir = std::env::temp_dir().join("corral-vm-cli-noscx");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        "[[groups]]\nname = \"g\"\ncpus = \"0-1\"\n\
         [placement]\npolicy = \"pinned\"\ndefault_group = \"g\"\n\
         [containers]\nbackend = \"local\"\ncgroup_parent = \"/sys/fs/cgroup/corral-vm-noscx\"\n\
         [enforcement]\nbackend = \"bpf\"\nload_scheduler = false\npin_dir = \"/sys/fs/bpf/corral-vm-noscx\"\n\
         [monitor]\nenabled = false\n\
         [[workload]]\nfunction = \"f\"\nkind = \"spin\"\ncpu_ms = 5\nconcurrency = 1\nduration_s = 2\n",
    )
    .unwrap();
    let out = corral(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--progress",
        "none",
    ]);
    let msg = text(&out);
    let _ = corral_bpf::PinnedMaps::remove_pins("/sys/fs/bpf/corral-vm-noscx");
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("WARNING: the maps were written but no sched_ext scheduler is attached"),
        "{msg}"
    );
    assert!(
        msg.contains("placement was not enforced throughout"),
        "{msg}"
    );
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/corral-vm-noscx").exists(),
        "containers left behind"
    );
}

/// Starts `corral sched` on `config` and `pin_dir`; answers it and a receiver of its lines.
fn start_sched(config: &std::path::Path, pin_dir: &str) -> (Child, mpsc::Receiver<String>) {
    let mut sched = Command::new("corral")
        .args([
            "sched",
            "--config",
            config.to_str().unwrap(),
            "--pin-dir",
            pin_dir,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start corral sched");
    let stdout = sched.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("corral sched: {line}");
            let _ = tx.send(line);
        }
    });
    (sched, rx)
}

/// `corral sched` is killed (SIGKILL: no chance to detach) while a worker that links the
/// runtime (`load_scheduler = false`, the same pins) keeps invoking functions and writing the
/// maps. The kernel drops the scheduler with its process; the invocations in flight complete
/// (their tasks fall back to the fair class) and so do new ones, whose cold starts write the
/// maps meanwhile; a restarted `corral sched` attaches on the same pinned maps with every
/// enforcement kept, and placement resumes: every function thread runs only on its group's CPU
/// and the scheduler counts no violation.
#[test]
fn killing_corral_sched_while_a_worker_writes_maps_loses_nothing() {
    require_guest();
    let _no_scheduler = crate::sched::without_shared_scheduler();
    const PINS: &str = "/sys/fs/bpf/corral-vm-kill";
    let dir = std::env::temp_dir().join("corral-vm-kill");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("groups.toml");
    let groups = "[[groups]]\nname = \"a\"\ncpus = \"2\"\n[[groups]]\nname = \"b\"\ncpus = \"3\"\n\
                  [host]\ncpus = \"0-1\"\n";
    std::fs::write(&config, groups).unwrap();
    let mut cleanup = Cleanup {
        children: Vec::new(),
        cgroup: PathBuf::from("/sys/fs/cgroup/corral-vm-kill-none"),
    };
    let (sched, rx) = start_sched(&config, PINS);
    cleanup.children.push(sched);
    wait_for_line(&rx, "scheduler attached in full mode");

    let parent = PathBuf::from("/sys/fs/cgroup/corral-vm-kill");
    let mut c = corral::RuntimeConfig::from_toml_str(groups).unwrap();
    c.limiter.initial = 8;
    c.limiter.max = 8;
    c.monitor.enabled = false;
    c.placement.policy = corral::PolicyKind::Pinned;
    c.placement.pinned.insert("fa".into(), "a".into());
    c.placement.pinned.insert("fb".into(), "b".into());
    c.containers.backend = Some(corral::ContainerBackendKind::Local);
    c.containers.cgroup_parent = Some(parent.clone());
    c.enforcement.backend = corral::EnforcementKind::Bpf;
    c.enforcement.load_scheduler = false;
    c.enforcement.pin_dir = PathBuf::from(PINS);
    for name in ["fa", "fb"] {
        let mut f = corral::FunctionSpec::named(name);
        f.command = ["corral-spin", "--millis", "200", "--report"]
            .map(String::from)
            .to_vec();
        c.functions.push(f);
    }
    let cpu_of = |r: &corral::InvocationResult| {
        let out = String::from_utf8_lossy(&r.output).into_owned();
        out.lines()
            .find_map(|l| l.strip_prefix("cpus-seen="))
            .unwrap_or_else(|| panic!("no cpus-seen in {out}"))
            .to_string()
    };
    let want = |r: &corral::InvocationResult| if r.function == "fa" { "2" } else { "3" };

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let runtime = corral::Runtime::start(c).expect("start the worker's runtime");
            let invoke_all = |n: usize| {
                (0..n)
                    .map(|i| {
                        let rt = runtime.clone();
                        tokio::spawn(async move {
                            rt.invoke(if i % 2 == 0 { "fa" } else { "fb" }, vec![])
                                .await
                        })
                    })
                    .collect::<Vec<_>>()
            };
            for call in invoke_all(4) {
                let r = call.await.unwrap().expect("invocation");
                assert_eq!(cpu_of(&r), want(&r), "placed before the kill");
            }

            // Kill it mid-flight.
            let in_flight = invoke_all(8);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sched = cleanup.children.remove(0);
            let mut sched = sched;
            sched.kill().unwrap();
            sched.wait().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string("/sys/kernel/sched_ext/state")
                .unwrap()
                .trim()
                != "disabled"
            {
                assert!(
                    Instant::now() < deadline,
                    "the scheduler outlived its process"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for call in in_flight {
                call.await
                    .unwrap()
                    .expect("an invocation in flight when corral sched died");
            }
            // Detached: invocations still run, and new containers still get mapped.
            for call in invoke_all(8) {
                call.await
                    .unwrap()
                    .expect("an invocation with no scheduler");
            }
            let maps = corral_bpf::PinnedMaps::open(PINS).unwrap();
            assert_eq!(
                maps.cgroups().entries().unwrap().len(),
                runtime.stats().live_containers,
                "every container's enforcement is in the pinned maps"
            );

            // Back: the same pins, every enforcement kept; placement resumes.
            let (sched, rx) = start_sched(&config, PINS);
            cleanup.children.push(sched);
            wait_for_line(&rx, "scheduler attached in full mode");
            for g in [0, 1] {
                maps.stats().reset(g).unwrap();
            }
            for call in invoke_all(8) {
                let r = call.await.unwrap().expect("invocation after the restart");
                assert_eq!(cpu_of(&r), want(&r), "placed again after the restart");
            }
            for g in [0, 1] {
                let s = maps.stats().read(g).unwrap();
                assert!(s.runs > 0, "group {g}: {s:?}");
                assert_eq!(s.violations, 0, "group {g}: {s:?}");
            }
            runtime.shutdown().await.expect("shutdown");
            assert!(maps.cgroups().entries().unwrap().is_empty());
        });
    assert!(!parent.exists());
    let _ = corral_bpf::PinnedMaps::remove_pins(PINS);
}
