//! The deployment files in `deploy/` parse, run the corral binary with flags it accepts, mount
//! what the scheduler needs, and carry a configuration corral accepts.

use std::path::Path;
use std::process::Command;

use corral::RuntimeConfig;

fn deploy(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the real binary with `args` (a file's command line): clap must accept them. The run
/// itself fails (no such configuration here, or no sched_ext), with corral's error rather
/// than a usage error (exit code 2).
fn assert_cli_accepts(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .arg("--duration-s")
        .arg("0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(2),
        "usage error for {args:?}: {text}"
    );
    assert!(!text.contains("unexpected argument"), "{args:?}: {text}");
}

/// The systemd unit starts `corral sched --config /etc/corral/groups.toml` from
/// /usr/local/bin, stops it with SIGTERM (which detaches the scheduler), restarts it on
/// failure, and is wanted by multi-user.target.
#[test]
fn systemd_unit_runs_corral_sched_with_accepted_flags() {
    let unit = deploy("corral-sched.service");
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_string(), Vec::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not `key=value`: {line}"));
        sections
            .last_mut()
            .expect("a key before any section")
            .1
            .push((key.to_string(), value.to_string()));
    }
    let names: Vec<&str> = sections.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Unit", "Service", "Install"]);
    let get = |section: &str, key: &str| {
        sections
            .iter()
            .find(|(n, _)| n == section)
            .and_then(|(_, kv)| kv.iter().find(|(k, _)| k == key))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in [{section}]"))
    };
    let exec: Vec<String> = get("Service", "ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/corral");
    assert_eq!(exec[1..3], ["sched", "--config"]);
    assert_eq!(get("Service", "KillSignal"), "SIGTERM");
    assert_eq!(get("Service", "Restart"), "on-failure");
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");
    assert!(get("Unit", "After").contains("sys-fs-bpf.mount"));
    assert_cli_accepts(&exec[1..]);
}

/// The DaemonSet runs `corral sched` privileged in the host PID namespace with bpffs (shared
/// both ways, so pins outlive the pod), the cgroup hierarchy and /sys/kernel mounted from the
/// host, and its ConfigMap's groups.toml is a configuration corral accepts.
#[test]
fn daemonset_mounts_bpffs_and_cgroups_and_runs_corral_sched() {
    let text = deploy("daemonset.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let groups = kind("ConfigMap")["data"]["groups.toml"]
        .as_str()
        .expect("groups.toml in the ConfigMap");
    RuntimeConfig::from_toml_str(groups)
        .unwrap()
        .validate_against(&[0, 1, 2, 3, 4, 5, 6, 7])
        .unwrap();

    let spec = &kind("DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true);
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    assert_eq!(container["command"][0], "/usr/local/bin/corral");
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "sched");
    assert_cli_accepts(&args);

    let mounts: Vec<(&str, &str)> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    let host_path = |volume: &str| {
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .and_then(|v| v["hostPath"]["path"].as_str())
    };
    for path in ["/sys/fs/bpf", "/sys/fs/cgroup", "/sys/kernel"] {
        let (volume, _) = mounts
            .iter()
            .find(|(_, p)| *p == path)
            .unwrap_or_else(|| panic!("{path} is not mounted: {mounts:?}"));
        assert_eq!(host_path(volume), Some(path), "{path} is not the host's");
    }
    let bpffs = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/sys/fs/bpf")
        .unwrap();
    assert_eq!(bpffs["mountPropagation"], "Bidirectional");

    // The metrics port is annotated for Prometheus' pod discovery and is the one served.
    let annotations = &kind("DaemonSet")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let port = annotations["prometheus.io/port"].as_str().unwrap();
    let at = args
        .iter()
        .position(|a| a == "--metrics")
        .expect("--metrics");
    assert!(args[at + 1].ends_with(&format!(":{port}")), "{args:?}");
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        port.parse().ok()
    );
}

/// The example worker's unit runs the example binary on the shipped configuration, which
/// corral accepts (it leaves the scheduler to corral-sched.service), and drains on SIGTERM.
#[test]
fn worker_unit_runs_the_example_worker_on_an_accepted_configuration() {
    let unit = deploy("corral-worker.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/local/bin/http_worker");
    assert_eq!(argv[1], "/etc/corral/worker.toml");
    assert!(argv[2].parse::<std::net::SocketAddr>().is_ok(), "{exec}");
    assert!(unit.contains("KillSignal=SIGTERM"));
    assert!(unit.contains("After=corral-sched.service"));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/http_worker.rs");
    assert!(
        example.is_file(),
        "the unit's binary is built from {}",
        example.display()
    );

    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/worker.toml"),
    )
    .unwrap();
    let config = RuntimeConfig::from_toml_str(&config).unwrap();
    config.validate_against(&[0, 1, 2, 3]).unwrap();
    assert!(
        !config.enforcement.load_scheduler,
        "corral-sched runs the scheduler"
    );
    assert!(config.metrics.address().unwrap().is_some());
}
