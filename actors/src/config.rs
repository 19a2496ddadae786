//! Configuration of the control plane and its validation. The raw types deserialize from TOML
//! (the CLI loads them; the runtime embeds them); `validate` turns them into checked values and
//! rejects bad input with an [`ActorError::InvalidConfig`] that names the key, the value and the
//! fix. CPU groups are validated against the online CPUs: there are no hard-coded CPU lists.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ActorError;

/// The index of a CPU group, as published to the scheduler's group map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub u32);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shortest and longest time slice of a group or the host group, in microseconds.
pub const MIN_SLICE_US: u64 = 50;
/// See [`MIN_SLICE_US`].
pub const MAX_SLICE_US: u64 = 1_000_000;
/// The largest CPU number a CPU list may name: the kernel's largest `NR_CPUS` is 8192.
pub const MAX_CPU_ID: u32 = 8191;
/// The longest name of a group, a function or the cpuset prefix.
pub const MAX_NAME_LEN: usize = 64;
/// The highest inflight limit (`limiter.*`), warm pool size (`max_warm`) or `monitor.step`.
pub const MAX_LIMIT: usize = 65_536;
/// The longest period or timeout in milliseconds (`monitor.period_ms`,
/// `containers.reap_period_ms`, `limiter.queue_timeout_ms`): one hour.
pub const MAX_PERIOD_MS: u64 = 3_600_000;
/// The longest keep-alive in milliseconds: one day.
pub const MAX_KEEP_ALIVE_MS: u64 = 86_400_000;
/// The longest simulated time in microseconds (`sim` backend): one minute.
pub const MAX_SIMULATED_US: u64 = 60_000_000;

/// Checks a name that becomes part of a directory name or a report line: 1 to
/// [`MAX_NAME_LEN`] ASCII letters, digits, `_` or `-` (so never `.`, `..`, a path separator,
/// white space or a control character).
pub fn validate_name(key: impl Into<String>, name: &str, what: &str) -> Result<(), ActorError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        return Ok(());
    }
    Err(ActorError::invalid(
        key,
        name,
        format!("use 1 to {MAX_NAME_LEN} letters, digits, `_` or `-` ({what})"),
    ))
}

/// Checks `value` of `key` against `lo..=hi`, naming both bounds in the error.
pub fn check_range<T>(
    key: impl Into<String>,
    value: T,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<(), ActorError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if value < lo || value > hi {
        return Err(ActorError::invalid(
            key,
            value,
            format!("must be between {lo} and {hi}{unit}"),
        ));
    }
    Ok(())
}

/// How a group's dispatch queue orders its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupOrder {
    /// First in, first out.
    #[default]
    Fifo,
    /// By virtual time (weighted fair within the group).
    Vtime,
}

/// One CPU group as written in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// A unique name, used by the `pinned` policy and in statistics.
    pub name: String,
    /// A CPU list such as `"0-3,6"`.
    pub cpus: String,
    /// Time slice in microseconds.
    #[serde(default = "default_slice_us")]
    pub slice_us: u64,
    /// Dispatch order.
    #[serde(default)]
    pub order: GroupOrder,
    /// Whether idle CPUs of other groups may run this group's tasks.
    #[serde(default)]
    pub borrow: bool,
    /// Whether the host group is kept off this group's CPUs even when every CPU belongs to a
    /// group (see [`HostConfig`]); a `host.cpus` that names one of them is refused.
    #[serde(default)]
    pub exclusive: bool,
}

fn default_slice_us() -> u64 {
    5_000
}

/// A validated CPU group: a set of online cores plus scheduling parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuGroup {
    /// Its index.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Sorted, distinct, online CPUs.
    pub cpus: Vec<u32>,
    /// Time slice in nanoseconds.
    pub slice_ns: u64,
    /// Dispatch order.
    pub order: GroupOrder,
    /// Whether idle CPUs elsewhere may borrow its work.
    pub borrow: bool,
    /// Whether host tasks are kept off its CPUs.
    pub exclusive: bool,
}

impl CpuGroup {
    /// The CPU list in kernel syntax (`0-3,6`), as written to `cpuset.cpus`.
    pub fn cpu_list(&self) -> String {
        format_cpu_list(&self.cpus)
    }
}

/// Parses a kernel CPU list (`"0-3,6"`). `key` names the configuration key for errors.
pub fn parse_cpu_list(key: &str, text: &str) -> Result<Vec<u32>, ActorError> {
    let mut cpus = BTreeSet::new();
    for part in text.trim().split(',').map(str::trim) {
        if part.is_empty() {
            return Err(ActorError::invalid(
                key,
                text,
                "empty entry in CPU list; write e.g. \"0-3,6\"",
            ));
        }
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.parse::<u32>().map_err(|_| {
                ActorError::invalid(
                    key,
                    text,
                    format!("`{s}` is not a CPU number; write e.g. \"0-3,6\""),
                )
            })
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if hi > MAX_CPU_ID {
            return Err(ActorError::invalid(
                key,
                text,
                format!(
                    "CPU {hi} is past the largest CPU number a kernel supports ({MAX_CPU_ID}); name online CPUs"
                ),
            ));
        }
        if lo > hi {
            return Err(ActorError::invalid(
                key,
                text,
                format!("range `{part}` runs backwards"),
            ));
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus.into_iter().collect())
}

/// Formats CPUs as a kernel CPU list.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// The online CPUs of this machine, from `/sys/devices/system/cpu/online`.
pub fn online_cpus() -> Result<Vec<u32>, ActorError> {
    let path = Path::new("/sys/devices/system/cpu/online");
    let text = std::fs::read_to_string(path).map_err(|e| ActorError::cgroup("read", path, e))?;
    parse_cpu_list("/sys/devices/system/cpu/online", &text)
}

/// Validates the configured groups against `online` CPUs. Groups must be non-empty, named
/// uniquely, use only online CPUs and not overlap (overlap would defeat isolation).
pub fn validate_groups(
    groups: &[GroupConfig],
    online: &[u32],
) -> Result<Vec<CpuGroup>, ActorError> {
    if groups.is_empty() {
        return Err(ActorError::invalid(
            "groups",
            "[]",
            "configure at least one CPU group",
        ));
    }
    let mut seen_names = BTreeMap::new();
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    let mut out = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        let key = |field: &str| format!("groups[{i}].{field}");
        validate_name(
            key("name"),
            &g.name,
            "the name appears in cpuset directory names and in reports",
        )?;
        if let Some(prev) = seen_names.insert(g.name.clone(), i) {
            return Err(ActorError::invalid(
                key("name"),
                &g.name,
                format!("the name is already used by groups[{prev}]"),
            ));
        }
        let cpus = parse_cpu_list(&key("cpus"), &g.cpus)?;
        if cpus.is_empty() {
            return Err(ActorError::invalid(
                key("cpus"),
                &g.cpus,
                "a group needs at least one CPU",
            ));
        }
        for &cpu in &cpus {
            if !online.contains(&cpu) {
                return Err(ActorError::invalid(
                    key("cpus"),
                    &g.cpus,
                    format!(
                        "CPU {cpu} is not online (online CPUs: {})",
                        format_cpu_list(online)
                    ),
                ));
            }
            if let Some(other) = owner.insert(cpu, &g.name) {
                return Err(ActorError::invalid(
                    key("cpus"),
                    &g.cpus,
                    format!(
                        "CPU {cpu} already belongs to group `{other}`; groups must not overlap"
                    ),
                ));
            }
        }
        check_range(
            key("slice_us"),
            g.slice_us,
            MIN_SLICE_US,
            MAX_SLICE_US,
            " µs",
        )?;
        out.push(CpuGroup {
            id: GroupId(i as u32),
            name: g.name.clone(),
            cpus,
            slice_ns: g.slice_us * 1_000,
            order: g.order,
            borrow: g.borrow,
            exclusive: g.exclusive,
        });
    }
    Ok(out)
}

/// `[host]`: the host group, which runs every task whose cgroup no group is mapped to (the
/// worker itself, containerd, system daemons, kernel threads) when the scheduler runs in full
/// switch mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// A CPU list. Default: the online CPUs that no group reserves; when groups reserve every
    /// CPU, the CPUs of the non-exclusive groups, where host tasks run only while the group
    /// has nothing to run (they yield to it). CPUs of exclusive groups are never allowed.
    #[serde(default)]
    pub cpus: Option<String>,
    /// Time slice of host tasks in microseconds.
    #[serde(default = "default_slice_us")]
    pub slice_us: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cpus: None,
            slice_us: default_slice_us(),
        }
    }
}

/// The validated host group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGroup {
    /// Its CPUs, sorted.
    pub cpus: Vec<u32>,
    /// Of those, the CPUs that also belong to a group: the group runs first there, host
    /// tasks when it has nothing (or once one has waited the starvation bound).
    pub shared: Vec<u32>,
    /// Time slice in nanoseconds.
    pub slice_ns: u64,
}

impl HostGroup {
    /// The CPU list in kernel syntax.
    pub fn cpu_list(&self) -> String {
        format_cpu_list(&self.cpus)
    }
}

/// Works out the host group from `[host]`, the validated `groups` and the `online` CPUs (see
/// [`HostConfig::cpus`] for the default), refusing CPUs that are offline or belong to an
/// exclusive group.
pub fn validate_host(
    host: &HostConfig,
    groups: &[CpuGroup],
    online: &[u32],
) -> Result<HostGroup, ActorError> {
    check_range(
        "host.slice_us",
        host.slice_us,
        MIN_SLICE_US,
        MAX_SLICE_US,
        " µs",
    )?;
    let owner = |cpu: u32| groups.iter().find(|g| g.cpus.contains(&cpu));
    let cpus: Vec<u32> = match &host.cpus {
        Some(text) => {
            let cpus = parse_cpu_list("host.cpus", text)?;
            if cpus.is_empty() {
                return Err(ActorError::invalid(
                    "host.cpus",
                    text,
                    "the host group needs at least one CPU",
                ));
            }
            for &cpu in &cpus {
                if !online.contains(&cpu) {
                    return Err(ActorError::invalid(
                        "host.cpus",
                        text,
                        format!(
                            "CPU {cpu} is not online (online CPUs: {})",
                            format_cpu_list(online)
                        ),
                    ));
                }
                if let Some(g) = owner(cpu).filter(|g| g.exclusive) {
                    return Err(ActorError::invalid(
                        "host.cpus",
                        text,
                        format!(
                            "CPU {cpu} belongs to the exclusive group `{}`; leave it out, or set exclusive = false on that group to share it",
                            g.name
                        ),
                    ));
                }
            }
            cpus
        }
        None => {
            let free: Vec<u32> = online
                .iter()
                .copied()
                .filter(|&c| owner(c).is_none())
                .collect();
            if !free.is_empty() {
                free
            } else {
                let shareable: Vec<u32> = online
                    .iter()
                    .copied()
                    .filter(|&c| owner(c).is_some_and(|g| !g.exclusive))
                    .collect();
                if shareable.is_empty() {
                    return Err(ActorError::invalid(
                        "host.cpus",
                        "(unset)",
                        "every online CPU belongs to an exclusive group, so the worker and the system would have nowhere to run: leave a CPU out of the groups, or make a group non-exclusive",
                    ));
                }
                shareable
            }
        }
    };
    let shared = cpus
        .iter()
        .copied()
        .filter(|&c| owner(c).is_some())
        .collect();
    Ok(HostGroup {
        cpus,
        shared,
        slice_ns: host.slice_us * 1_000,
    })
}

/// The inflight limiter: how many invocations may hold a lease at once. In TOML every key is
/// optional; an unset one defaults so that the set ones hold (see [`LimiterToml`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "LimiterToml")]
pub struct LimiterConfig {
    /// The limit at start.
    pub initial: usize,
    /// The lowest limit `monitor_load` may set.
    pub min: usize,
    /// The highest limit `monitor_load` may set.
    pub max: usize,
    /// How long an invocation may wait for a lease before failing with a queue timeout.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
}

fn default_queue_timeout_ms() -> u64 {
    30_000
}

/// `[limiter]` as written: any key may be left out. `min` defaults to 1, `max` to 32 (or the
/// set `min` or `initial` when higher), and `initial` to 8 brought into `min..=max`; so
/// `max = 4` alone means `initial = 4`, not a refusal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterToml {
    initial: Option<usize>,
    min: Option<usize>,
    max: Option<usize>,
    #[serde(default = "default_queue_timeout_ms")]
    queue_timeout_ms: u64,
}

impl From<LimiterToml> for LimiterConfig {
    fn from(t: LimiterToml) -> Self {
        let d = LimiterConfig::default();
        let min = t.min.unwrap_or(d.min);
        let max = t
            .max
            .unwrap_or_else(|| d.max.max(min).max(t.initial.unwrap_or(0)));
        // Out of order bounds are left for validate() to refuse by name.
        let initial = t.initial.unwrap_or_else(|| d.initial.max(min).min(max));
        LimiterConfig {
            initial,
            min,
            max,
            queue_timeout_ms: t.queue_timeout_ms,
        }
    }
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            initial: 8,
            min: 1,
            max: 32,
            queue_timeout_ms: default_queue_timeout_ms(),
        }
    }
}

impl LimiterConfig {
    /// Checks `1 <= min <= initial <= max` and a non-zero queue timeout.
    pub fn validate(&self) -> Result<(), ActorError> {
        if self.min == 0 {
            return Err(ActorError::invalid(
                "limiter.min",
                self.min,
                "the limit must be at least 1",
            ));
        }
        if self.max > MAX_LIMIT {
            return Err(ActorError::invalid(
                "limiter.max",
                self.max,
                format!("must be at most {MAX_LIMIT} invocations in flight"),
            ));
        }
        if self.max < self.min {
            return Err(ActorError::invalid(
                "limiter.max",
                self.max,
                format!("must be at least limiter.min ({})", self.min),
            ));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(ActorError::invalid(
                "limiter.initial",
                self.initial,
                format!(
                    "must lie between limiter.min ({}) and limiter.max ({})",
                    self.min, self.max
                ),
            ));
        }
        check_range(
            "limiter.queue_timeout_ms",
            self.queue_timeout_ms,
            1,
            MAX_PERIOD_MS,
            " ms",
        )
    }

    /// The queue timeout as a duration.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }
}

/// Where `monitor_load` reads CPU pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PressureSourceKind {
    /// `/proc/pressure/cpu` where present, else `/proc/loadavg`.
    #[default]
    Auto,
    /// `/proc/pressure/cpu` (`some avg10`).
    Psi,
    /// `/proc/loadavg` (1-minute load over online CPUs, in percent).
    Loadavg,
}

/// `monitor_load`: shrink the inflight limit under CPU pressure, grow it back when pressure falls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Whether the monitor runs at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Sampling period.
    #[serde(default = "default_period_ms")]
    pub period_ms: u64,
    /// Pressure (percent) above which the limit shrinks by `step`.
    #[serde(default = "default_shrink_above")]
    pub shrink_above: f64,
    /// Pressure (percent) below which the limit grows by `step`.
    #[serde(default = "default_grow_below")]
    pub grow_below: f64,
    /// How much the limit changes per sample.
    #[serde(default = "default_step")]
    pub step: usize,
    /// The pressure source.
    #[serde(default)]
    pub source: PressureSourceKind,
}

fn default_true() -> bool {
    true
}
fn default_period_ms() -> u64 {
    1_000
}
fn default_shrink_above() -> f64 {
    40.0
}
fn default_grow_below() -> f64 {
    10.0
}
fn default_step() -> usize {
    1
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            period_ms: default_period_ms(),
            shrink_above: default_shrink_above(),
            grow_below: default_grow_below(),
            step: default_step(),
            source: PressureSourceKind::Auto,
        }
    }
}

impl MonitorConfig {
    /// Checks a positive period and step, and `0 <= grow_below < shrink_above`.
    pub fn validate(&self) -> Result<(), ActorError> {
        check_range("monitor.period_ms", self.period_ms, 1, MAX_PERIOD_MS, " ms")?;
        check_range("monitor.step", self.step, 1, MAX_LIMIT, "")?;
        if !(self.grow_below >= 0.0 && self.grow_below.is_finite()) {
            return Err(ActorError::invalid(
                "monitor.grow_below",
                self.grow_below,
                "must be a percentage >= 0",
            ));
        }
        if !(self.shrink_above > self.grow_below && self.shrink_above.is_finite()) {
            return Err(ActorError::invalid(
                "monitor.shrink_above",
                self.shrink_above,
                format!(
                    "must be greater than monitor.grow_below ({})",
                    self.grow_below
                ),
            ));
        }
        Ok(())
    }

    /// The sampling period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// The next limit given the current one and a pressure sample, clamped to `[min, max]`.
    pub fn next_limit(&self, current: usize, pressure: f64, limiter: &LimiterConfig) -> usize {
        let next = if pressure > self.shrink_above {
            current.saturating_sub(self.step)
        } else if pressure < self.grow_below {
            current.saturating_add(self.step)
        } else {
            current
        };
        next.clamp(limiter.min, limiter.max)
    }
}

/// How the resource tracker picks a group per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Function → group from `placement.pinned`.
    Pinned,
    /// The group with the fewest leases per CPU.
    #[default]
    LeastLoaded,
    /// Consistent hashing of the function name, with a bounded load factor.
    Hash,
}

/// Placement policy configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// The policy.
    #[serde(default)]
    pub policy: PolicyKind,
    /// `pinned`: function name → group name.
    #[serde(default)]
    pub pinned: BTreeMap<String, String>,
    /// `pinned`: the group for functions not listed in `pinned`.
    #[serde(default)]
    pub default_group: Option<String>,
    /// `hash`: a group may carry at most `load_factor` times its fair share of leases.
    #[serde(default = "default_load_factor")]
    pub load_factor: f64,
    /// `hash`: points per group on the ring.
    #[serde(default = "default_virtual_nodes")]
    pub virtual_nodes: u32,
}

fn default_load_factor() -> f64 {
    1.25
}
fn default_virtual_nodes() -> u32 {
    64
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            policy: PolicyKind::LeastLoaded,
            pinned: BTreeMap::new(),
            default_group: None,
            load_factor: default_load_factor(),
            virtual_nodes: default_virtual_nodes(),
        }
    }
}

impl PlacementConfig {
    /// Checks that pinned and default groups exist, and the hash parameters are sane.
    pub fn validate(&self, groups: &[CpuGroup]) -> Result<(), ActorError> {
        let known = |name: &str| groups.iter().any(|g| g.name == name);
        let names = || {
            groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (function, group) in &self.pinned {
            if !known(group) {
                return Err(ActorError::invalid(
                    format!("placement.pinned.{function}"),
                    group,
                    format!("no such group (groups: {})", names()),
                ));
            }
        }
        if let Some(group) = &self.default_group {
            if !known(group) {
                return Err(ActorError::invalid(
                    "placement.default_group",
                    group,
                    format!("no such group (groups: {})", names()),
                ));
            }
        }
        if self.policy == PolicyKind::Pinned
            && self.pinned.is_empty()
            && self.default_group.is_none()
        {
            return Err(ActorError::invalid(
                "placement.pinned",
                "{}",
                "the `pinned` policy needs placement.pinned entries or placement.default_group",
            ));
        }
        if !(self.load_factor > 1.0 && self.load_factor.is_finite()) {
            return Err(ActorError::invalid(
                "placement.load_factor",
                self.load_factor,
                "must be greater than 1.0 (1.25 is typical)",
            ));
        }
        check_range("placement.virtual_nodes", self.virtual_nodes, 1, 4096, "")
    }
}

/// The warm pool of each function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// How long an idle container stays warm.
    #[serde(default = "default_keep_alive_ms")]
    pub keep_alive_ms: u64,
    /// The most idle containers kept per function; more are destroyed on release.
    #[serde(default = "default_max_warm")]
    pub max_warm: usize,
    /// How often idle containers are checked against the keep-alive.
    #[serde(default = "default_reap_period_ms")]
    pub reap_period_ms: u64,
}

fn default_keep_alive_ms() -> u64 {
    60_000
}
fn default_max_warm() -> usize {
    8
}
fn default_reap_period_ms() -> u64 {
    1_000
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            keep_alive_ms: default_keep_alive_ms(),
            max_warm: default_max_warm(),
            reap_period_ms: default_reap_period_ms(),
        }
    }
}

impl PoolConfig {
    /// Checks positive periods.
    pub fn validate(&self) -> Result<(), ActorError> {
        check_range(
            "containers.keep_alive_ms",
            self.keep_alive_ms,
            1,
            MAX_KEEP_ALIVE_MS,
            " ms",
        )?;
        check_range("containers.max_warm", self.max_warm, 0, MAX_LIMIT, "")?;
        check_range(
            "containers.reap_period_ms",
            self.reap_period_ms,
            1,
            MAX_PERIOD_MS,
            " ms",
        )
    }
}

/// A function that can be invoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// Its name: letters, digits, `_` and `-`, at most 64 characters.
    pub name: String,
    /// `local` and `containerd` backends: the command. In `exec` mode it runs once per
    /// invocation (the payload is its standard input, the result its standard output); in
    /// `server` mode it is started at the cold start and serves every invocation of its
    /// container over the framed protocol of [`crate::container_backend::frame`].
    #[serde(default)]
    pub command: Vec<String>,
    /// How the command serves invocations: `exec` (default) or `server`.
    #[serde(default)]
    pub mode: FunctionMode,
    /// Extra environment for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `sim` backend: how long an invocation takes, in microseconds.
    #[serde(default)]
    pub simulated_run_us: u64,
    /// Overrides `containers.keep_alive_ms` for this function.
    #[serde(default)]
    pub keep_alive_ms: Option<u64>,
    /// Overrides `containers.max_warm` for this function.
    #[serde(default)]
    pub max_warm: Option<usize>,
    /// `local` backend: how long one invocation may run before its container's processes (the
    /// command and anything it left behind) are killed and it fails with
    /// `ActorError::FunctionTimedOut`. Default [`DEFAULT_TIMEOUT_MS`] (5 minutes).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The most bytes one invocation may answer; past it the command is killed (`exec`) or the
    /// container destroyed (`server`) and the invocation fails with
    /// `ActorError::OutputTooLarge`. Default [`DEFAULT_MAX_OUTPUT_BYTES`] (16 MiB).
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// The user the function's processes run as: `"<uid>:<gid>"` or `"<uid>"` (numbers), or
    /// `"root"`. Default [`DEFAULT_RUN_AS`] (`nobody`), so that a function cannot open what
    /// root owns (the pinned maps among it). They keep no capability in any case.
    #[serde(default)]
    pub run_as: Option<String>,
}

/// The default `functions[].run_as`: `nobody:nogroup`.
pub const DEFAULT_RUN_AS: &str = "65534:65534";

/// The default `functions[].timeout_ms`: five minutes.
pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;

/// The default `functions[].max_output_bytes`: 16 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 << 20;

/// The largest `functions[].max_output_bytes`: 1 GiB (an answer is held in memory whole).
pub const MAX_OUTPUT_BYTES: u64 = 1 << 30;

/// How a function's command serves invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionMode {
    /// One process per invocation: payload on standard input, answer on standard output.
    #[default]
    Exec,
    /// One long-running process per container, started at the cold start, serving one
    /// invocation at a time over length-prefixed frames on its standard input and output.
    Server,
}

impl FunctionSpec {
    /// A function with only a name (the `sim` backend needs nothing else).
    pub fn named(name: impl Into<String>) -> Self {
        FunctionSpec {
            name: name.into(),
            command: Vec::new(),
            env: BTreeMap::new(),
            simulated_run_us: 0,
            keep_alive_ms: None,
            max_warm: None,
            timeout_ms: None,
            mode: FunctionMode::Exec,
            max_output_bytes: None,
            run_as: None,
        }
    }

    /// The (uid, gid) the function's processes run as (`run_as`, or the default).
    pub fn user(&self) -> Result<(u32, u32), ActorError> {
        let text = self.run_as.as_deref().unwrap_or(DEFAULT_RUN_AS);
        let bad = || {
            ActorError::invalid(
                "functions.run_as",
                text,
                "write \"<uid>:<gid>\" or \"<uid>\" as numbers (e.g. \"65534:65534\" for nobody), or \"root\"",
            )
        };
        if text == "root" {
            return Ok((0, 0));
        }
        let (uid, gid) = text.split_once(':').unwrap_or((text, text));
        let num = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        let (uid, gid) = (num(uid)?, num(gid)?);
        if uid == u32::MAX || gid == u32::MAX {
            return Err(bad());
        }
        Ok((uid, gid))
    }

    /// The most bytes one invocation may answer (`max_output_bytes`, or the default).
    pub fn max_output(&self) -> u64 {
        self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES)
    }

    /// How long one invocation may run (`timeout_ms`, or the default).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }

    /// Checks the name (it becomes part of a cgroup directory name).
    pub fn validate(&self) -> Result<(), ActorError> {
        validate_name(
            "functions.name",
            &self.name,
            "the name becomes part of a cgroup directory",
        )?;
        if let Some(ms) = self.keep_alive_ms {
            check_range("functions.keep_alive_ms", ms, 1, MAX_KEEP_ALIVE_MS, " ms")?;
        }
        if let Some(ms) = self.timeout_ms {
            check_range("functions.timeout_ms", ms, 1, MAX_KEEP_ALIVE_MS, " ms")?;
        }
        if let Some(n) = self.max_output_bytes {
            check_range(
                "functions.max_output_bytes",
                n,
                1,
                MAX_OUTPUT_BYTES,
                " bytes",
            )?;
        }
        self.user()?;
        if let Some(n) = self.max_warm {
            check_range("functions.max_warm", n, 0, MAX_LIMIT, "")?;
        }
        check_range(
            "functions.simulated_run_us",
            self.simulated_run_us,
            0,
            MAX_SIMULATED_US,
            " µs",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU lists round-trip through the kernel syntax, ranges and singles alike, and come out
    /// sorted and without duplicates.
    #[test]
    fn cpu_lists_parse_and_format_in_kernel_syntax() {
        assert_eq!(parse_cpu_list("k", "0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("k", " 5, 1-2 ,2").unwrap(), vec![1, 2, 5]);
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(format_cpu_list(&[]), "");
    }

    /// Malformed CPU lists are refused with an error naming the key and the value.
    #[test]
    fn malformed_cpu_lists_name_key_and_value() {
        for bad in ["", "1,,2", "3-1", "a", "1-b"] {
            let err = parse_cpu_list("groups[0].cpus", bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("groups[0].cpus"), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    /// `monitor_load`'s step shrinks above the upper threshold, grows below the lower one,
    /// holds in between, and always stays within the limiter's bounds.
    #[test]
    fn next_limit_moves_by_step_within_bounds() {
        let limiter = LimiterConfig {
            initial: 4,
            min: 2,
            max: 6,
            queue_timeout_ms: 1,
        };
        let m = MonitorConfig {
            step: 3,
            shrink_above: 50.0,
            grow_below: 10.0,
            ..MonitorConfig::default()
        };
        assert_eq!(m.next_limit(4, 80.0, &limiter), 2);
        assert_eq!(m.next_limit(2, 80.0, &limiter), 2);
        assert_eq!(m.next_limit(4, 30.0, &limiter), 4);
        assert_eq!(m.next_limit(4, 5.0, &limiter), 6);
        assert_eq!(m.next_limit(6, 0.0, &limiter), 6);
    }

    fn groups_of(spec: &[(&str, &str, bool)], online: &[u32]) -> Vec<CpuGroup> {
        let configs: Vec<GroupConfig> = spec
            .iter()
            .map(|(name, cpus, exclusive)| GroupConfig {
                name: (*name).into(),
                cpus: (*cpus).into(),
                slice_us: 5000,
                order: GroupOrder::Fifo,
                borrow: false,
                exclusive: *exclusive,
            })
            .collect();
        validate_groups(&configs, online).unwrap()
    }

    /// The host group defaults to the CPUs no group reserves; when groups reserve them all, to
    /// the non-exclusive groups' CPUs (shared: host tasks yield there); never an exclusive
    /// group's CPU, and a configuration leaving host tasks nowhere to run is refused by name.
    #[test]
    fn host_group_defaults_and_refusals_name_the_key() {
        let online = [0, 1, 2, 3];
        let host = HostConfig::default();
        let g = groups_of(&[("a", "0", false), ("b", "1", true)], &online);
        let h = validate_host(&host, &g, &online).unwrap();
        assert_eq!((h.cpus.clone(), h.shared.clone()), (vec![2, 3], vec![]));
        assert_eq!(h.slice_ns, 5_000_000);

        let g = groups_of(&[("a", "0-1", false), ("b", "2-3", true)], &online);
        let h = validate_host(&host, &g, &online).unwrap();
        assert_eq!((h.cpus.clone(), h.shared.clone()), (vec![0, 1], vec![0, 1]));

        let explicit = HostConfig {
            cpus: Some("2".into()),
            ..HostConfig::default()
        };
        let err = validate_host(&explicit, &g, &online)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("host.cpus") && err.contains("exclusive group `b`"),
            "{err}"
        );
        let offline = HostConfig {
            cpus: Some("7".into()),
            ..HostConfig::default()
        };
        let err = validate_host(&offline, &g, &online)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CPU 7 is not online"), "{err}");

        let g = groups_of(&[("a", "0-1", true), ("b", "2-3", true)], &online);
        let err = validate_host(&host, &g, &online).unwrap_err().to_string();
        assert!(
            err.contains("host.cpus") && err.contains("exclusive"),
            "{err}"
        );

        let bad_slice = HostConfig {
            slice_us: 0,
            ..HostConfig::default()
        };
        let err = validate_host(&bad_slice, &g, &online)
            .unwrap_err()
            .to_string();
        assert!(err.contains("host.slice_us"), "{err}");
    }
}
