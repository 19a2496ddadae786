//! The runtime's configuration, as the CLI loads it from TOML and a worker builds it in code.
//! [`RuntimeConfig::validate`] checks everything up front and names the offending key, value
//! and fix; groups are checked against the online CPUs.
//!
//! ```toml
//! [[groups]]
//! name = "latency"
//! cpus = "0"
//! [[groups]]
//! name = "batch"
//! cpus = "1"
//! slice_us = 20000
//!
//! [limiter]
//! initial = 4
//! min = 1
//! max = 8
//!
//! [placement]
//! policy = "pinned"
//! pinned = { resize = "latency" }
//! default_group = "batch"
//!
//! [containers]
//! backend = "local"
//! cgroup_parent = "/sys/fs/cgroup/corral"
//!
//! [host]              # CPUs of unmapped tasks; default: the CPUs no group reserves
//! cpus = "2-3"
//!
//! [enforcement]
//! backend = "auto"
//! mode = "full"       # the default; "partial" schedules only SCHED_EXT tasks
//!
//! [[functions]]
//! name = "resize"
//! command = ["/usr/local/bin/resize"]
//! ```

use std::path::PathBuf;

use corral_actors::config::{
    check_range, online_cpus, validate_groups, validate_host, validate_name, CpuGroup,
    FunctionSpec, GroupConfig, HostConfig, HostGroup, LimiterConfig, MonitorConfig,
    PlacementConfig, PoolConfig, MAX_SIMULATED_US,
};
use corral_actors::ActorError;
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// The whole runtime configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The CPU groups.
    pub groups: Vec<GroupConfig>,
    /// The host group: CPUs of tasks whose cgroup is not mapped (full switch mode).
    #[serde(default)]
    pub host: HostConfig,
    /// The inflight limiter.
    #[serde(default)]
    pub limiter: LimiterConfig,
    /// `monitor_load`.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// The placement policy.
    #[serde(default)]
    pub placement: PlacementConfig,
    /// Containers: backend and warm pool.
    #[serde(default)]
    pub containers: ContainersConfig,
    /// Enforcement: map-writer backend and scheduler.
    #[serde(default)]
    pub enforcement: EnforcementConfig,
    /// Functions registered at start (more can be registered later).
    #[serde(default)]
    pub functions: Vec<FunctionSpec>,
    /// Prometheus metrics (off unless `listen` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// Prometheus metrics: served in the OpenMetrics text format at `http://<listen>/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The address to serve on, e.g. `127.0.0.1:9464` (port 0 picks a free one; see
    /// `RuntimeHandle::metrics_addr`). Unset: no server, and nothing is recorded.
    #[serde(default)]
    pub listen: Option<String>,
}

impl MetricsConfig {
    /// The address, parsed; the error names the key and the fix.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, ActorError> {
        self.listen
            .as_deref()
            .map(|text| {
                text.parse().map_err(|e| {
                    ActorError::invalid(
                        "metrics.listen",
                        text,
                        format!("not an address ({e}); give an IP and a port, e.g. 127.0.0.1:9464"),
                    )
                })
            })
            .transpose()
    }
}

/// Which container backend runs functions. There is no default: a runtime that quietly
/// simulated its containers would answer every invocation without running anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerBackendKind {
    /// cgroup v2 directories and real processes.
    Local,
    /// No processes: an invocation answers its payload (logic tests, simulations).
    Sim,
    /// containerd containers made from a root file system directory, each task a
    /// `server`-mode function's server (`[containers.containerd]`).
    Containerd,
}

/// Containers: backend and warm pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersConfig {
    /// `local`, `containerd` or `sim`; required (see [`ContainerBackendKind`]).
    #[serde(default)]
    pub backend: Option<ContainerBackendKind>,
    /// `local` and `containerd`: the cgroup v2 directory containers are created under
    /// (created if missing, removed at shutdown if it was). Default: `corral` under the
    /// cgroup2 mount.
    #[serde(default)]
    pub cgroup_parent: Option<PathBuf>,
    /// `sim`: simulated cold-start time in microseconds.
    #[serde(default)]
    pub sim_cold_start_us: u64,
    /// How long an idle container stays warm.
    #[serde(default = "default_keep_alive_ms")]
    pub keep_alive_ms: u64,
    /// The most idle containers kept per function.
    #[serde(default = "default_max_warm")]
    pub max_warm: usize,
    /// How often idle containers are checked against the keep-alive.
    #[serde(default = "default_reap_period_ms")]
    pub reap_period_ms: u64,
    /// The warm lane: an invocation that finds an idle container whose enforcement onto its
    /// group is already committed runs on the caller's tokio runtime with no message to the
    /// actors (no thread hop). Default `true`; `false` sends every invocation through them.
    #[serde(default = "default_true")]
    pub warm_lane: bool,
    /// `containerd`: the daemon and what containers are made from.
    #[serde(default)]
    pub containerd: ContainerdConfig,
}

/// `[containers.containerd]`: the daemon the `containerd` backend talks to and the root file
/// system its containers are made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdConfig {
    /// The daemon's gRPC socket. Default `/run/containerd/containerd.sock`.
    #[serde(default = "default_containerd_socket")]
    pub socket: PathBuf,
    /// The containerd namespace corral's containers live in. Default `corral`.
    #[serde(default = "default_containerd_namespace")]
    pub namespace: String,
    /// An unpacked root file system (an absolute directory) holding every function's command
    /// and what it needs; mounted read-only in each container. Required.
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
}

fn default_containerd_socket() -> PathBuf {
    PathBuf::from("/run/containerd/containerd.sock")
}
fn default_containerd_namespace() -> String {
    "corral".into()
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        ContainerdConfig {
            socket: default_containerd_socket(),
            namespace: default_containerd_namespace(),
            rootfs: None,
        }
    }
}

impl ContainerdConfig {
    /// Checks what the `containerd` backend needs: the socket exists and is a socket, and the
    /// root file system is an absolute directory. Each error names the key and the fix.
    pub fn validate(&self) -> Result<PathBuf, ActorError> {
        use std::os::unix::fs::FileTypeExt;
        let socket_ok = std::fs::metadata(&self.socket).map(|m| m.file_type().is_socket());
        match socket_ok {
            Ok(true) => {}
            Ok(false) => {
                return Err(ActorError::invalid(
                    "containers.containerd.socket",
                    self.socket.display(),
                    "is not a socket; give the path of containerd's gRPC socket (its config's \
                     [grpc] address)",
                ))
            }
            Err(e) => {
                return Err(ActorError::invalid(
                    "containers.containerd.socket",
                    self.socket.display(),
                    format!(
                        "cannot be reached ({e}); start containerd (`cargo xtask setup` \
                         installs it) or give the path of its gRPC socket"
                    ),
                ))
            }
        }
        let Some(rootfs) = &self.rootfs else {
            return Err(ActorError::invalid(
                "containers.containerd.rootfs",
                "(unset)",
                "give the absolute path of an unpacked root file system holding the functions' \
                 commands (e.g. a directory with busybox and your server binaries)",
            ));
        };
        if !rootfs.is_absolute() || !rootfs.is_dir() {
            return Err(ActorError::invalid(
                "containers.containerd.rootfs",
                rootfs.display(),
                "must be an absolute path to an existing directory (an unpacked root file \
                 system holding the functions' commands)",
            ));
        }
        Ok(rootfs.clone())
    }
}

fn default_keep_alive_ms() -> u64 {
    PoolConfig::default().keep_alive_ms
}
fn default_max_warm() -> usize {
    PoolConfig::default().max_warm
}
fn default_reap_period_ms() -> u64 {
    PoolConfig::default().reap_period_ms
}

impl Default for ContainersConfig {
    fn default() -> Self {
        ContainersConfig {
            backend: None,
            cgroup_parent: None,
            sim_cold_start_us: 0,
            keep_alive_ms: default_keep_alive_ms(),
            max_warm: default_max_warm(),
            reap_period_ms: default_reap_period_ms(),
            warm_lane: true,
            containerd: ContainerdConfig::default(),
        }
    }
}

impl ContainersConfig {
    /// The backend, or an error naming `containers.backend` and the choices when unset.
    pub fn backend_kind(&self) -> Result<ContainerBackendKind, ActorError> {
        self.backend.ok_or_else(|| {
            ActorError::invalid(
                "containers.backend",
                "(unset)",
                "choose \"local\" (a container is a cgroup v2 directory and each invocation a \
                 real process), \"containerd\" (a containerd container per warm server-mode \
                 function, see [containers.containerd]) or \"sim\" (no processes: an \
                 invocation answers its payload, for tests and simulations)",
            )
        })
    }

    /// The pool part.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            keep_alive_ms: self.keep_alive_ms,
            max_warm: self.max_warm,
            reap_period_ms: self.reap_period_ms,
        }
    }

    /// The cgroup parent: configured, or under the first cgroup2 mount `corral`
    /// (`corral-containerd` for the `containerd` backend: on hybrid hosts runc mirrors the
    /// parent into the v1 cpuset hierarchy, where `corral` is the `cpuset` backend's default
    /// prefix).
    pub fn resolved_cgroup_parent(&self) -> Result<PathBuf, ActorError> {
        if let Some(p) = &self.cgroup_parent {
            return Ok(p.clone());
        }
        let name = match self.backend {
            Some(ContainerBackendKind::Containerd) => "corral-containerd",
            _ => "corral",
        };
        cgroup2_mount().map(|m| m.join(name)).ok_or_else(|| {
            ActorError::invalid(
                "containers.cgroup_parent",
                "(unset)",
                "no cgroup2 file system is mounted; mount one or set containers.cgroup_parent",
            )
        })
    }
}

/// The first cgroup2 mount point in `/proc/mounts`.
pub use corral_actors::container_backend::cgroup_name::cgroup2_mount;

/// Which map-writer backend enforces groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementKind {
    /// `bpf` where sched_ext can run, else `cpuset` (and the runtime says why, once).
    #[default]
    Auto,
    /// The scheduler's pinned maps, with threads switched to `SCHED_EXT`.
    Bpf,
    /// `cpuset.cpus` of the container's cgroup.
    Cpuset,
    /// In-memory maps (tests).
    Memory,
}

/// Which tasks the scheduler takes (`enforcement.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerMode {
    /// Every task; unmapped tasks run on the host group's CPUs. Placement follows a task's
    /// cgroup at every enqueue, so enforcing a group is exactly one map update.
    #[default]
    Full,
    /// Only `SCHED_EXT` tasks, for hosts that must keep the fair class for everything else.
    /// Fair-class tasks preempt the groups' tasks; the map writer switches a mapped cgroup's
    /// threads to `SCHED_EXT`, and the scheduler switches tasks that join it later.
    Partial,
}

impl SchedulerMode {
    /// The scheduler crate's mode.
    pub fn sched_mode(self) -> corral_bpf::SchedMode {
        match self {
            SchedulerMode::Full => corral_bpf::SchedMode::Full,
            SchedulerMode::Partial => corral_bpf::SchedMode::Partial,
        }
    }
}

/// Enforcement: map-writer backend and scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforcementConfig {
    /// The backend.
    #[serde(default)]
    pub backend: EnforcementKind,
    /// `bpf`: full switch (default) or partial.
    #[serde(default)]
    pub mode: SchedulerMode,
    /// `bpf`: where the maps are pinned.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// `bpf`: whether the runtime loads and attaches the scheduler itself (otherwise an
    /// operator runs it and the runtime only writes the maps).
    #[serde(default = "default_true")]
    pub load_scheduler: bool,
    /// `cpuset`: the v1 cpuset hierarchy, used where cgroup v2 cpuset is not enabled.
    #[serde(default = "default_v1_root")]
    pub cpuset_v1_root: PathBuf,
    /// `cpuset`: the directory under the v1 root holding corral's cpusets.
    #[serde(default = "default_cpuset_prefix")]
    pub cpuset_prefix: String,
    /// `bpf` with `load_scheduler`: what an invocation does while the scheduler is not running
    /// (attaching, or backing off after an exit).
    #[serde(default)]
    pub when_detached: DetachedPolicy,
}

/// What an invocation does while the runtime's scheduler is not running
/// (`enforcement.when_detached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetachedPolicy {
    /// Run it unenforced (its cgroup is still mapped, but nothing places its tasks until the
    /// scheduler is back), and count it in `StatsSnapshot::invocations_unenforced`.
    #[default]
    Run,
    /// Refuse it with `RuntimeError::SchedulerDetached`, so that nothing runs unplaced.
    Fail,
    /// Confine it by cpuset instead: its container's cgroup v2 `cpuset.cpus` is set to its
    /// group's CPUs before it runs (and cleared again at the container's first invocation
    /// once the scheduler is back), counted in `StatsSnapshot::invocations_cpuset_fallback`.
    /// Needs the `local` backend and the cpuset controller in `containers.cgroup_parent`.
    Cpuset,
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/corral")
}
fn default_true() -> bool {
    true
}
fn default_v1_root() -> PathBuf {
    PathBuf::from(corral_actors::map_backend::cpuset::DEFAULT_V1_ROOT)
}
fn default_cpuset_prefix() -> String {
    "corral".to_string()
}

impl Default for EnforcementConfig {
    fn default() -> Self {
        EnforcementConfig {
            backend: EnforcementKind::Auto,
            mode: SchedulerMode::Full,
            pin_dir: default_pin_dir(),
            load_scheduler: true,
            cpuset_v1_root: default_v1_root(),
            cpuset_prefix: default_cpuset_prefix(),
            when_detached: DetachedPolicy::Run,
        }
    }
}

/// Checks a configured directory: absolute, below the root, and without `.` or `..`
/// components, so that nothing corral creates or removes there can resolve outside it.
fn owned_path(key: &str, path: &std::path::Path) -> Result<(), ActorError> {
    use std::path::Component;
    let fix = "give an absolute path below / without `.` or `..`, e.g. /sys/fs/cgroup/corral";
    if !path.is_absolute() {
        return Err(ActorError::invalid(
            key,
            path.display(),
            format!("not absolute: {fix}"),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(ActorError::invalid(key, path.display(), fix));
    }
    if path.parent().is_none() {
        return Err(ActorError::invalid(
            key,
            path.display(),
            format!("the root directory is not corral's: {fix}"),
        ));
    }
    Ok(())
}

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// The raw configuration.
    pub raw: RuntimeConfig,
    /// The checked groups.
    pub groups: Vec<CpuGroup>,
    /// The host group.
    pub host: HostGroup,
}

impl RuntimeConfig {
    /// A configuration with `groups` and defaults for everything else.
    pub fn with_groups(groups: Vec<GroupConfig>) -> Self {
        RuntimeConfig {
            groups,
            host: HostConfig::default(),
            limiter: LimiterConfig::default(),
            monitor: MonitorConfig::default(),
            placement: PlacementConfig::default(),
            containers: ContainersConfig::default(),
            enforcement: EnforcementConfig::default(),
            functions: Vec::new(),
            metrics: MetricsConfig::default(),
        }
    }

    /// Parses TOML. Syntax and type errors name the key path; [`RuntimeConfig::validate`]
    /// then checks the values (groups against the online CPUs).
    ///
    /// ```
    /// use corral::RuntimeConfig;
    /// let config = RuntimeConfig::from_toml_str(
    ///     "[[groups]]\nname = \"latency\"\ncpus = \"0\"\n[limiter]\nmax = 4\n",
    /// )
    /// .unwrap();
    /// assert_eq!(config.limiter.initial, 4);
    /// assert!(config.validate().is_ok());
    /// let err = RuntimeConfig::from_toml_str("[[groups]]\nname = \"a\"\ncpus = 5\n").unwrap_err();
    /// assert!(err.to_string().contains("groups[0].cpus"));
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, RuntimeError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let key = e.path().to_string();
            RuntimeError::ConfigSyntax {
                key: if key == "." { String::new() } else { key },
                source: e.into_inner(),
            }
        })
    }

    /// Checks every section against this machine's online CPUs.
    pub fn validate(&self) -> Result<ValidatedConfig, RuntimeError> {
        let online = online_cpus()?;
        self.validate_against(&online)
    }

    /// Checks every section against `online` CPUs.
    pub fn validate_against(&self, online: &[u32]) -> Result<ValidatedConfig, RuntimeError> {
        let groups = validate_groups(&self.groups, online)?;
        let host = validate_host(&self.host, &groups, online)?;
        self.limiter.validate()?;
        self.monitor.validate()?;
        self.placement.validate(&groups)?;
        self.containers.pool().validate()?;
        self.metrics.address()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, f) in self.functions.iter().enumerate() {
            f.validate().map_err(|e| match e {
                ActorError::InvalidConfig { key, value, reason } => ActorError::InvalidConfig {
                    key: key.replacen("functions", &format!("functions[{i}]"), 1),
                    value,
                    reason,
                },
                other => other,
            })?;
            if !names.insert(f.name.clone()) {
                return Err(ActorError::invalid(
                    format!("functions[{i}].name"),
                    &f.name,
                    "registered twice",
                )
                .into());
            }
        }
        check_range(
            "containers.sim_cold_start_us",
            self.containers.sim_cold_start_us,
            0,
            MAX_SIMULATED_US,
            " µs",
        )?;
        validate_name(
            "enforcement.cpuset_prefix",
            &self.enforcement.cpuset_prefix,
            "one directory under enforcement.cpuset_v1_root that corral owns",
        )?;
        if let Some(parent) = &self.containers.cgroup_parent {
            owned_path("containers.cgroup_parent", parent)?;
        }
        if self.containers.backend == Some(ContainerBackendKind::Containerd) {
            self.containers.containerd.validate()?;
            self.check_containerd_cpuset_prefix()?;
        }
        owned_path("enforcement.pin_dir", &self.enforcement.pin_dir)?;
        owned_path(
            "enforcement.cpuset_v1_root",
            &self.enforcement.cpuset_v1_root,
        )?;
        Ok(ValidatedConfig {
            raw: self.clone(),
            groups,
            host,
        })
    }
}

impl RuntimeConfig {
    /// On a hybrid host runc mirrors a container's `cgroupsPath` into every v1 hierarchy, so
    /// the cgroup parent's first directory appears in the v1 cpuset hierarchy too; the
    /// `cpuset` backend's prefix there must be another directory.
    fn check_containerd_cpuset_prefix(&self) -> Result<(), ActorError> {
        let (Ok(parent), Some(mount)) = (self.containers.resolved_cgroup_parent(), cgroup2_mount())
        else {
            return Ok(());
        };
        let first = parent
            .strip_prefix(&mount)
            .ok()
            .and_then(|rel| rel.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        if first.as_deref() == Some(self.enforcement.cpuset_prefix.as_str()) {
            return Err(ActorError::invalid(
                "enforcement.cpuset_prefix",
                &self.enforcement.cpuset_prefix,
                format!(
                    "with containers.backend = \"containerd\", runc also creates `{}` in the v1 \
                     cpuset hierarchy for containers.cgroup_parent {}; give the cpusets another \
                     prefix, e.g. cpuset_prefix = \"{}-cpuset\"",
                    self.enforcement.cpuset_prefix,
                    parent.display(),
                    self.enforcement.cpuset_prefix
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &str = "[[groups]]\nname = \"a\"\ncpus = \"0\"\n";
    const ONLINE: [u32; 2] = [0, 1];

    /// Validates `GROUPS` plus `extra`, answering the error text (or "ok").
    fn check(extra: &str) -> String {
        let text = format!("{GROUPS}{extra}");
        match RuntimeConfig::from_toml_str(&text) {
            Err(e) => e.to_string(),
            Ok(c) => match c.validate_against(&ONLINE) {
                Err(e) => e.to_string(),
                Ok(_) => "ok".into(),
            },
        }
    }

    /// Every numeric key is refused at 0 where 0 makes no sense, at its type's largest value in
    /// TOML (i64::MAX) and just past its documented bound, with an error naming the key; and
    /// accepted at the bound itself.
    #[test]
    fn every_numeric_key_is_bounded_and_named() {
        let max = i64::MAX;
        // (section, key, smallest valid, largest valid); the error names `section.key`.
        let keys: &[(&str, &str, i64, i64)] = &[
            ("limiter", "max", 1, 65_536),
            ("limiter", "queue_timeout_ms", 1, 3_600_000),
            ("monitor", "period_ms", 1, 3_600_000),
            ("monitor", "step", 1, 65_536),
            ("containers", "keep_alive_ms", 1, 86_400_000),
            ("containers", "reap_period_ms", 1, 3_600_000),
            ("containers", "max_warm", 0, 65_536),
            ("containers", "sim_cold_start_us", 0, 60_000_000),
            ("host", "slice_us", 50, 1_000_000),
            ("placement", "virtual_nodes", 1, 4096),
        ];
        for &(section, key, lo, hi) in keys {
            let named = &format!("{section}.{key}");
            let at = |v: i64| check(&format!("[{section}]\n{key} = {v}\n"));
            assert_eq!(at(lo), "ok", "{named} = {lo}");
            assert_eq!(at(hi), "ok", "{named} = {hi}");
            for bad in [hi + 1, max] {
                let err = at(bad);
                assert!(err.contains(named), "{named} = {bad}: {err}");
                assert!(err.contains(&bad.to_string()), "{named} = {bad}: {err}");
            }
            if lo > 0 {
                let err = at(lo - 1);
                assert!(err.contains(named), "{named} = {}: {err}", lo - 1);
            }
        }
        let err = check(&format!(
            "[[groups]]\nname = \"b\"\ncpus = \"1\"\nslice_us = {max}\n"
        ));
        assert!(err.contains("groups[1].slice_us"), "{err}");
        let err = check(&format!(
            "[[functions]]\nname = \"f\"\nsimulated_run_us = {max}\n"
        ));
        assert!(err.contains("functions[0].simulated_run_us"), "{err}");
        let err = check(&format!(
            "[[functions]]\nname = \"f\"\nkeep_alive_ms = {max}\n"
        ));
        assert!(err.contains("functions[0].keep_alive_ms"), "{err}");
        // Negative numbers never reach validation: the types are unsigned.
        assert!(check("[limiter]\nmax = -1\n").contains("limiter.max"));
    }

    /// `[limiter]` keys default so that the ones set hold: `max` alone brings `initial` down
    /// to it, `initial` alone raises `max`, and bounds set out of order are still refused.
    #[test]
    fn limiter_keys_default_around_the_ones_set() {
        let limiter = |extra: &str| {
            RuntimeConfig::from_toml_str(&format!("{GROUPS}[limiter]\n{extra}"))
                .unwrap()
                .limiter
        };
        let l = limiter("max = 4\n");
        assert_eq!((l.min, l.initial, l.max), (1, 4, 4));
        let l = limiter("initial = 50\n");
        assert_eq!((l.min, l.initial, l.max), (1, 50, 50));
        let l = limiter("min = 10\n");
        assert_eq!((l.min, l.initial, l.max), (10, 10, 32));
        assert_eq!(check("[limiter]\nmax = 4\n"), "ok");
        let err = check("[limiter]\nmin = 5\nmax = 4\n");
        assert!(err.contains("limiter.max"), "{err}");
        assert!(check("[limiter]\nbogus = 1\n").contains("bogus"));
    }

    /// A CPU list naming a CPU past any kernel's range is refused at once (it used to expand
    /// the range and hang), naming the key.
    #[test]
    fn absurd_cpu_lists_are_refused_at_once() {
        let start = std::time::Instant::now();
        for list in ["0-4294967295", "4294967295", "0-8192", "100000"] {
            let err = check(&format!("[host]\ncpus = \"{list}\"\n"));
            assert!(err.contains("host.cpus") && err.contains("8191"), "{err}");
            let err = RuntimeConfig::from_toml_str(&format!(
                "[[groups]]\nname = \"a\"\ncpus = \"{list}\"\n"
            ))
            .unwrap()
            .validate_against(&ONLINE)
            .unwrap_err()
            .to_string();
            assert!(err.contains("groups[0].cpus"), "{err}");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    /// Names that become directory names or report lines: path separators, dots, control
    /// characters, white space and over-long names are refused by key; a long value is shown
    /// cut in the error.
    #[test]
    fn names_with_separators_control_characters_or_length_are_refused() {
        let long = "x".repeat(20_000);
        for bad in ["a/b", "..", ".", "a\nb", "a b", "", "é", long.as_str()] {
            let quoted = toml::Value::String(bad.to_string()).to_string();
            let err = check(&format!("[[groups]]\nname = {quoted}\ncpus = \"1\"\n"));
            assert!(err.contains("groups[1].name"), "{bad:?}: {err}");
            assert!(
                err.len() < 400,
                "the error quotes the whole value: {} bytes",
                err.len()
            );
            assert!(!err.contains('\n'), "{err}");
            let err = check(&format!("[enforcement]\ncpuset_prefix = {quoted}\n"));
            assert!(err.contains("enforcement.cpuset_prefix"), "{bad:?}: {err}");
            let err = check(&format!("[[functions]]\nname = {quoted}\n"));
            assert!(err.contains("functions[0].name"), "{bad:?}: {err}");
        }
        assert!(
            check(&format!(
                "[enforcement]\ncpuset_prefix = \"{}\"\n",
                "p".repeat(64)
            )) == "ok"
        );
    }

    /// Directories corral creates or removes must be absolute and free of `.` and `..`, and
    /// never the root.
    #[test]
    fn configured_directories_stay_inside_what_corral_owns() {
        for (section, key) in [
            ("containers", "cgroup_parent"),
            ("enforcement", "pin_dir"),
            ("enforcement", "cpuset_v1_root"),
        ] {
            for bad in ["relative/dir", "/sys/fs/cgroup/../etc", "/", "./x"] {
                let err = check(&format!("[{section}]\n{key} = \"{bad}\"\n"));
                assert!(err.contains(&format!("{section}.{key}")), "{bad}: {err}");
            }
        }
        assert_eq!(
            check("[containers]\ncgroup_parent = \"/sys/fs/cgroup/w1\"\n"),
            "ok"
        );
    }

    /// Without `containers.backend` nothing is simulated quietly: asking for the backend names
    /// the key and both choices (a groups-only file, as `corral sched` reads, stays valid).
    #[test]
    fn an_unset_container_backend_is_an_error_naming_the_choices() {
        let c = RuntimeConfig::from_toml_str(GROUPS).unwrap();
        assert!(c.validate_against(&ONLINE).is_ok());
        let err = c.containers.backend_kind().unwrap_err().to_string();
        assert!(err.contains("containers.backend"), "{err}");
        assert!(
            err.contains("\"local\"") && err.contains("\"sim\""),
            "{err}"
        );
        assert!(RuntimeConfig::with_groups(Vec::new())
            .containers
            .backend
            .is_none());
        let err =
            RuntimeConfig::from_toml_str(&format!("{GROUPS}[containers]\nbackend = \"echo\"\n"))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("containers.backend") && err.contains("local"),
            "{err}"
        );
    }

    /// `backend = "containerd"` checks its section up front: a socket that is missing or not a
    /// socket, and a root file system unset, relative or missing, each name their key and fix.
    #[test]
    fn containerd_settings_are_checked_naming_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let with = |socket: &str, rootfs: Option<&str>| {
            let rootfs = rootfs
                .map(|r| format!("rootfs = \"{r}\"\n"))
                .unwrap_or_default();
            check(&format!(
                "[containers]\nbackend = \"containerd\"\n[containers.containerd]\n\
                 socket = \"{socket}\"\n{rootfs}"
            ))
        };
        let (sock, root) = (socket.to_str().unwrap(), rootfs.to_str().unwrap());
        assert_eq!(with(sock, Some(root)), "ok");
        let err = with("/nonexistent/containerd.sock", Some(root));
        assert!(
            err.contains("containers.containerd.socket") && err.contains("cargo xtask setup"),
            "{err}"
        );
        let err = with(root, Some(root));
        assert!(
            err.contains("containers.containerd.socket") && err.contains("not a socket"),
            "{err}"
        );
        let err = with(sock, None);
        assert!(err.contains("containers.containerd.rootfs"), "{err}");
        for bad in ["relative/rootfs", "/nonexistent/rootfs"] {
            let err = with(sock, Some(bad));
            assert!(
                err.contains("containers.containerd.rootfs") && err.contains("absolute"),
                "{err}"
            );
        }
        let err = check("[containers.containerd]\nsockett = \"/x\"\n");
        assert!(err.contains("sockett"), "{err}");
    }

    /// With containerd on a hybrid host runc mirrors the cgroup parent into the v1 cpuset
    /// hierarchy, so a cpuset prefix equal to the parent's first directory is refused, naming
    /// `enforcement.cpuset_prefix` and a prefix that works.
    #[test]
    fn containerd_refuses_a_cpuset_prefix_that_runc_would_share() {
        let Some(mount) = cgroup2_mount() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let with = |prefix: &str| {
            check(&format!(
                "[containers]\nbackend = \"containerd\"\ncgroup_parent = \"{}\"\n\
                 [containers.containerd]\nsocket = \"{}\"\nrootfs = \"{}\"\n\
                 [enforcement]\ncpuset_prefix = \"{prefix}\"\n",
                mount.join("corral").display(),
                socket.display(),
                dir.path().display()
            ))
        };
        let err = with("corral");
        assert!(
            err.contains("enforcement.cpuset_prefix") && err.contains("corral-cpuset"),
            "{err}"
        );
        assert_eq!(with("corral-cpuset"), "ok");
    }

    /// A TOML value of any shape the configuration might meet: integers from 0 to i64::MAX
    /// and negative, floats, booleans, strings with control characters and path separators,
    /// CPU lists, arrays.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            prop_oneof![Just(0i64), Just(1), Just(i64::MAX), Just(65_537), Just(-1)]
                .prop_map(|v| v.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            any::<bool>().prop_map(|b| b.to_string()),
            "[ -~\\n\\t/.]{0,40}".prop_map(|s| toml::Value::String(s).to_string()),
            "[0-9,\\-]{0,24}".prop_map(|s| toml::Value::String(s).to_string()),
            Just("[]".to_string()),
            Just("[\"/bin/true\"]".to_string()),
        ]
    }

    proptest::proptest! {
        /// No text makes the parser panic: any string is refused or parsed.
        #[test]
        fn no_text_makes_the_parser_panic(text in "\\PC{0,300}") {
            let _ = RuntimeConfig::from_toml_str(&text);
        }

        /// No configuration made of real keys with arbitrary values makes parsing or
        /// validation panic or hang: each answers a configuration or an error, quickly.
        #[test]
        fn no_configuration_makes_validation_panic_or_hang(
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        ("groups", "name"), ("groups", "cpus"), ("groups", "slice_us"),
                        ("groups", "order"), ("groups", "exclusive"), ("host", "cpus"),
                        ("host", "slice_us"), ("limiter", "initial"), ("limiter", "min"),
                        ("limiter", "max"), ("limiter", "queue_timeout_ms"),
                        ("monitor", "period_ms"), ("monitor", "step"),
                        ("monitor", "shrink_above"), ("monitor", "grow_below"),
                        ("placement", "policy"), ("placement", "load_factor"),
                        ("placement", "virtual_nodes"), ("containers", "backend"),
                        ("containers", "keep_alive_ms"), ("containers", "max_warm"),
                        ("containers", "cgroup_parent"), ("enforcement", "backend"),
                        ("enforcement", "pin_dir"), ("enforcement", "cpuset_prefix"),
                        ("functions", "name"), ("functions", "command"),
                        ("functions", "simulated_run_us"),
                    ]),
                    value(),
                ),
                0..12,
            )
        ) {
            let mut sections: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
            for ((section, key), v) in &entries {
                sections.entry(section).or_default().push(format!("{key} = {v}"));
            }
            let mut text = String::from("[[groups]]\nname = \"a\"\ncpus = \"0\"\n");
            for (section, lines) in sections {
                let header = if matches!(section, "groups" | "functions") {
                    format!("[[{section}]]")
                } else {
                    format!("[{section}]")
                };
                text.push_str(&format!("{header}\n{}\n", lines.join("\n")));
            }
            let start = std::time::Instant::now();
            if let Ok(c) = RuntimeConfig::from_toml_str(&text) {
                let _ = c.validate_against(&[0, 1, 2, 3]);
            }
            proptest::prop_assert!(
                start.elapsed() < std::time::Duration::from_secs(1),
                "took {:?} on:\n{}", start.elapsed(), text
            );
        }
    }
}
