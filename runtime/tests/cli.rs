//! Tests of the `corral` command line on the host: help that explains, configuration errors that
//! name their key, `corral run` producing a report and JSON, and `corral map`/`unmap`/`maps dump`
//! on real pinned maps and real cgroups (root; the host can pin maps but may lack sched_ext).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corral(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .output()
        .expect("run corral")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every subcommand's `--help` says what it does and how to call it, as the CLI issue requires.
#[test]
fn every_subcommand_help_explains_itself() {
    for sub in [
        "run", "sched", "map", "unmap", "maps", "status", "check", "bench",
    ] {
        let out = corral(&[sub, "--help"]);
        let help = text(&out);
        assert!(out.status.success(), "{sub} --help failed: {help}");
        assert!(
            help.contains("Usage: corral"),
            "{sub} --help has no usage line: {help}"
        );
        assert!(
            help.lines().count() >= 5,
            "{sub} --help is too thin: {help}"
        );
    }
    let out = corral(&["maps", "dump", "--help"]);
    assert!(text(&out).contains("--json"));
}

/// Invalid configuration values are refused before anything starts, naming the key.
#[test]
fn invalid_configuration_names_the_key() {
    let dir = scratch("badcfg");
    let cases = [
        ("[[groups]]\nname = \"a\"\ncpus = \"0-4095\"\n", "groups[0].cpus"),
        ("[[groups]]\nname = \"a\"\ncpus = \"0\"\nslice_us = 1\n", "groups[0].slice_us"),
        ("[[groups]]\nname = \"a\"\ncpus = \"x\"\n", "groups[0].cpus"),
        ("[[groups]]\nname = \"a\"\ncpus = 0\n", "groups[0].cpus"),
        ("[[groups]]\nname = \"a\"\ncpus = \"0\"\n[limiter]\ninitial = 9\nmin = 1\nmax = 4\n", "limiter.initial"),
        ("[[groups]]\nname = \"a\"\ncpus = \"0\"\n[placement]\npolicy = \"pinned\"\npinned = { f = \"nope\" }\n", "placement.pinned.f"),
        ("[[groups]]\nname = \"a\"\ncpus = \"0\"\n[monitor]\nperiod_ms = 0\n", "monitor.period_ms"),
        ("[[groups]]\nname = \"a\"\ncpus = \"0\"\n[[workload]]\nfunction = \"f\"\nkind = \"burst\"\ncpu_ms = 5\nrate_per_s = 1\nduration_s = 1\n", "workload[0].threads"),
        ("[[groups]]\nname = \"a\"\ncpus = \"0\"\ncolour = \"red\"\n", "colour"),
    ];
    for (i, (body, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, body).unwrap();
        let out = corral(&["run", "--config", path.to_str().unwrap()]);
        let msg = text(&out);
        assert!(!out.status.success(), "accepted invalid config {body:?}");
        assert!(
            msg.contains(key),
            "error for {body:?} does not name `{key}`: {msg}"
        );
    }
    let out = corral(&["run", "--config", "/nonexistent/corral.toml"]);
    assert!(text(&out).contains("/nonexistent/corral.toml"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `corral run` with simulated containers drives the workload and reports every function and
/// group, in text and JSON; the figures add up to the invocations made.
#[test]
fn run_reports_per_function_and_group() {
    let dir = scratch("run");
    let config = dir.join("sim.toml");
    std::fs::write(
        &config,
        "[[groups]]\nname = \"g0\"\ncpus = \"0\"\n[placement]\npolicy = \"pinned\"\ndefault_group = \"g0\"\n\
         [enforcement]\nbackend = \"memory\"\n[monitor]\nenabled = false\n\
         [containers]\nbackend = \"sim\"\n\
         [[workload]]\nfunction = \"open\"\nkind = \"spin\"\ncpu_ms = 1\nrate_per_s = 50\nduration_s = 1\n\
         [[workload]]\nfunction = \"closed\"\nkind = \"command\"\ncommand = [\"true\"]\nconcurrency = 2\nduration_s = 1\n",
    )
    .unwrap();
    let json = dir.join("report.json");
    let out = corral(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ]);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(
        msg.contains("open") && msg.contains("closed") && msg.contains("g0"),
        "{msg}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let functions = report["functions"].as_array().unwrap();
    assert_eq!(functions.len(), 2);
    let open = functions.iter().find(|f| f["function"] == "open").unwrap();
    let n = open["invocations"].as_u64().unwrap();
    // An open loop at 50/s for 1 s: wall-clock throughput on a loaded 2-core machine varies,
    // so only demand that the loop really ran repeatedly and never overshot its schedule.
    assert!((10..=60).contains(&n), "50/s for 1 s gave {n} invocations");
    assert_eq!(open["errors"], 0);
    assert!(open["end_to_end"]["p50_us"].as_f64().unwrap() > 0.0);
    let total: u64 = functions
        .iter()
        .map(|f| f["invocations"].as_u64().unwrap())
        .sum();
    assert_eq!(report["groups"][0]["invocations"].as_u64().unwrap(), total);
    std::fs::remove_dir_all(dir).unwrap();
}

struct Pins(PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = corral_bpf::PinnedMaps::remove_pins(&self.0);
    }
}

struct Cgroup(PathBuf, Option<std::process::Child>);
impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("these tests need a cgroup2 mount")
}

fn with_sleeper(dir: &Path) -> Cgroup {
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    Cgroup(dir.to_path_buf(), Some(child))
}

/// `corral map` is all or nothing. For full switch (the default) it is the one map update, which
/// `unmap` undoes. With `--partial` the map entry and the SCHED_EXT switch go together: where the
/// kernel has sched_ext both happen; where it does not, the switch fails and the entry is rolled
/// back, so no half-applied mapping is left in the pinned map.
#[test]
fn map_is_applied_whole_or_rolled_back() {
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/corral-cli-map-{}",
        std::process::id()
    )));
    let maps =
        corral_bpf::PinnedMaps::open_or_create(&pins.0).expect("pin maps (root and bpffs needed)");
    maps.groups()
        .publish(0, &corral_bpf::GroupSpec::new([0], 1_000_000))
        .unwrap();
    let cg = with_sleeper(&cgroup2_root().join(format!("corral-cli-map-{}", std::process::id())));
    let id = corral_bpf::cgroup_id_of(&cg.0).unwrap();
    let pin = pins.0.to_str().unwrap();
    let out = corral(&["map", cg.0.to_str().unwrap(), "0", "--pin-dir", pin]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(maps.cgroups().get(id).unwrap().map(|e| e.group), Some(0));
    let out = corral(&["unmap", cg.0.to_str().unwrap(), "--pin-dir", pin]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(maps.cgroups().get(id).unwrap(), None);

    let out = corral(&[
        "map",
        cg.0.to_str().unwrap(),
        "0",
        "--partial",
        "--pin-dir",
        pin,
    ]);
    if corral_bpf::check_sched_ext_support().is_ok() {
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(maps.cgroups().get(id).unwrap().map(|e| e.group), Some(0));
        let out = corral(&["unmap", cg.0.to_str().unwrap(), "--pin-dir", pin]);
        assert!(out.status.success(), "{}", text(&out));
    } else {
        assert!(
            !out.status.success(),
            "mapping succeeded without sched_ext: {}",
            text(&out)
        );
        assert!(text(&out).contains("rolled back"), "{}", text(&out));
    }
    assert_eq!(
        maps.cgroups().get(id).unwrap(),
        None,
        "a mapping was left behind"
    );

    // Unknown groups and non-cgroups are refused before any write.
    let out = corral(&["map", cg.0.to_str().unwrap(), "7", "--pin-dir", pin]);
    assert!(
        text(&out).contains("group 7 is not published"),
        "{}",
        text(&out)
    );
    let out = corral(&["map", "/tmp", "0", "--pin-dir", pin]);
    assert!(!out.status.success());
    let out = corral(&["unmap", cg.0.to_str().unwrap(), "--pin-dir", pin]);
    assert!(text(&out).contains("is not mapped"), "{}", text(&out));
    assert!(maps.cgroups().entries().unwrap().is_empty());
}

/// `corral maps dump --json` shows groups as CPU lists and mapped cgroups resolved to paths.
#[test]
fn maps_dump_resolves_cgroups_and_cpu_lists() {
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/corral-cli-dump-{}",
        std::process::id()
    )));
    let maps =
        corral_bpf::PinnedMaps::open_or_create(&pins.0).expect("pin maps (root and bpffs needed)");
    let online: Vec<u32> = corral_bpf::cpus::online_cpus()
        .unwrap()
        .cpus
        .into_iter()
        .collect();
    maps.groups()
        .publish(3, &corral_bpf::GroupSpec::new(online.clone(), 2_000_000))
        .unwrap();
    let cg = Cgroup(
        cgroup2_root().join(format!("corral-cli-dump-{}", std::process::id())),
        None,
    );
    std::fs::create_dir_all(&cg.0).unwrap();
    let id = corral_bpf::cgroup_id_of(&cg.0).unwrap();
    maps.cgroups()
        .insert(id, 3, corral_bpf::CgroupFlags::NONE)
        .unwrap();

    let out = corral(&[
        "maps",
        "dump",
        "--json",
        "--pin-dir",
        pins.0.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let group = view["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == 3)
        .expect("group 3 listed");
    assert_eq!(group["cpu_count"].as_u64().unwrap() as usize, online.len());
    assert_eq!(group["slice_us"].as_f64().unwrap(), 2000.0);
    let entry = &view["cgroups"][0];
    assert_eq!(entry["cgroup_id"].as_u64().unwrap(), id);
    assert_eq!(entry["path"].as_str().unwrap(), cg.0.to_str().unwrap());

    // `corral status --json` carries the same view under `maps`, and the scheduler's state.
    let out = corral(&["status", "--json", "--pin-dir", pins.0.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["maps"]["cgroups"][0]["cgroup_id"].as_u64(), Some(id));
    assert!(status["sched_ext"]["state"].is_string(), "{status}");
    assert!(status.get("last_exit").is_some(), "{status}");
    let out = corral(&[
        "status",
        "--json",
        "--pin-dir",
        "/sys/fs/bpf/corral-none-here",
    ]);
    let none: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(none["maps"].is_null(), "{none}");
    maps.cgroups().remove(id).unwrap();
}

/// `corral scenario` replays the shipped scenarios (exit 0), names the first failing step of
/// one whose expectation is wrong (exit 1), and refuses a malformed step by its index.
#[test]
fn scenarios_replay_and_name_the_failing_step() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scenarios");
    let mut shipped = 0;
    for entry in std::fs::read_dir(&examples).unwrap().flatten() {
        let out = corral(&["scenario", entry.path().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            entry.path().display(),
            text(&out)
        );
        assert!(text(&out).contains("steps passed"), "{}", text(&out));
        shipped += 1;
    }
    assert!(
        shipped >= 2,
        "expected the example scenarios in {}",
        examples.display()
    );

    let dir = scratch("scenario");
    let base = "[[groups]]\nname = \"a\"\ncpus = \"0\"\n[[functions]]\nname = \"f\"\n";
    let wrong = dir.join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "{base}[[step]]\ninvoke = \"f\"\ncount = 3\n[[step]]\nexpect = {{ cold_starts = 2 }}\n"
        ),
    )
    .unwrap();
    let out = corral(&["scenario", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("step[1] (expect) failed: cold_starts is 1, expected 2"),
        "{}",
        text(&out)
    );

    let malformed = dir.join("malformed.toml");
    std::fs::write(
        &malformed,
        format!("{base}[[step]]\ninvoke = \"f\"\nwait_ms = 5\n"),
    )
    .unwrap();
    let out = corral(&["scenario", malformed.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("step[0] has several actions"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
