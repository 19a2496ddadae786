//! `corral bench <part>`: measures, on this machine, what corral's design rests on, each figure
//! beside the alternative a user would pick instead, in one run.
//!
//! - [`enforce`]: committing `cgroup → group` through the actor path (message to the map
//!   writer, committed on real pinned maps, acknowledged), a direct map update from the same
//!   process, and a `cpuset.cpus` write into a cgroup holding running and idle tasks.
//! - [`invoke`]: corral's invocation path (the public handle, `sim` containers, `memory`
//!   enforcement) against a direct lock-based implementation of the same work, at several
//!   concurrencies, with the floor of a thread-to-thread round trip measured beside it.
//! - [`remap`]: how long a loaded cgroup takes to run only on its new CPUs after one map update
//!   (with `corral sched` attached) against one cgroup v2 `cpuset.cpus` write.
//!
//! - [`containers`]: cold-start and warm-invocation latency of real containers, `exec` mode
//!   against `server` mode.
//!
//! Every part prints a table and, with `--json`, writes its figures as a JSON array of
//! [`Figure`]s with stable keys; `cargo xtask bench` collects them into
//! `target/bench/report.json`. Figures are medians and 99th percentiles of one run; compare
//! ratios within a run.

pub mod containers;
pub mod enforce;
pub mod invoke;
pub mod remap;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value};

/// Measure enforcement and invocation-path costs on this machine, beside their alternatives.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which part to measure.
    #[command(subcommand)]
    pub part: Part,
    /// Also write the figures to this file, as a JSON array (what `cargo xtask bench` reads).
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The parts of `corral bench`.
#[derive(Debug, Subcommand)]
pub enum Part {
    /// Enforcement latency: actor path and direct update on pinned BPF maps, and a cpuset write.
    Enforce(enforce::EnforceArgs),
    /// Invocation overhead and throughput at several concurrencies, against a lock-based
    /// baseline doing the same work.
    Invoke(invoke::InvokeArgs),
    /// Time until a loaded cgroup runs only on its new CPUs: a map update (needs `corral sched`
    /// attached) or a cgroup v2 cpuset.cpus write.
    Remap(remap::RemapArgs),
    /// Cold-start and warm-invocation latency of real containers, per backend and mode (exec:
    /// a process per invocation; server: one warm process serving them all).
    Containers(containers::ContainersArgs),
}

/// One measured figure. Latencies carry `p50` and `p99`; rates carry `value`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figure {
    /// Stable key (`enforce_actor_bpf`, `invoke_overhead_c8`, …).
    pub key: String,
    /// What was measured, for people.
    pub what: String,
    /// Unit of `p50`, `p99` and `value`: `us`, `ms`, `ops/s`, or a count's unit.
    pub unit: &'static str,
    /// Median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 99th percentile (nearest rank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// A single value (a rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Samples behind the figure.
    pub samples: usize,
    /// Anything else worth keeping (thread hops, parameters).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Figure {
    /// A latency figure in microseconds from raw samples (nearest-rank percentiles).
    pub fn latency_us(key: &str, what: impl Into<String>, samples: &mut [Duration]) -> Figure {
        let (p50, p99) = percentiles(samples);
        Figure {
            key: key.to_owned(),
            what: what.into(),
            unit: "us",
            p50: Some(p50.as_secs_f64() * 1e6),
            p99: Some(p99.as_secs_f64() * 1e6),
            value: None,
            samples: samples.len(),
            extra: Map::new(),
        }
    }

    /// A latency figure in milliseconds from raw samples (nearest-rank percentiles).
    pub fn latency_ms(key: &str, what: impl Into<String>, samples: &mut [Duration]) -> Figure {
        let mut f = Figure::latency_us(key, what, samples);
        f.unit = "ms";
        f.p50 = f.p50.map(|us| us / 1e3);
        f.p99 = f.p99.map(|us| us / 1e3);
        f
    }

    /// A plain count (a capacity), in `unit`.
    pub fn count(key: &str, what: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            unit,
            ..Figure::rate(key, what, value, 1)
        }
    }

    /// A rate figure.
    pub fn rate(key: &str, what: impl Into<String>, value: f64, samples: usize) -> Figure {
        Figure {
            key: key.to_owned(),
            what: what.into(),
            unit: "ops/s",
            p50: None,
            p99: None,
            value: Some(value),
            samples,
            extra: Map::new(),
        }
    }

    /// Adds an extra field.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Figure {
        self.extra.insert(name.to_owned(), value.into());
        self
    }
}

/// Nearest-rank p50 and p99 of `samples` (sorted in place); zeros when empty.
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let rank = |q: f64| {
        let idx = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[idx]
    };
    (rank(0.50), rank(0.99))
}

/// Runs the chosen part, prints its table and writes the JSON file when asked.
pub fn run(args: BenchArgs) -> Result<i32> {
    let figures = match args.part {
        Part::Enforce(a) => enforce::run(&a)?,
        Part::Invoke(a) => invoke::run(&a)?,
        Part::Remap(a) => remap::run(&a)?,
        Part::Containers(a) => containers::run(&a)?,
    };
    print_table(&figures);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&figures)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the figures to {}", path.display()))?;
        eprintln!("bench: figures written to {}", path.display());
    }
    Ok(0)
}

fn print_table(figures: &[Figure]) {
    println!(
        "{:<28} {:>8} {:>12} {:>12}  what",
        "key", "samples", "p50", "p99"
    );
    for f in figures {
        let cell = |v: Option<f64>| match v {
            Some(v) => format!("{v:.2} {}", f.unit),
            None => "-".to_owned(),
        };
        let (a, b) = match f.value {
            Some(v) => (format!("{v:.0} {}", f.unit), String::new()),
            None => (cell(f.p50), cell(f.p99)),
        };
        println!(
            "{:<28} {:>8} {:>12} {:>12}  {}",
            f.key, f.samples, a, b, f.what
        );
    }
}

/// Processes in a cgroup (busy spinners and sleepers), killed and the cgroup removed on drop.
pub(crate) struct LoadedCgroup {
    pub(crate) dir: PathBuf,
    children: Vec<Child>,
}

impl LoadedCgroup {
    /// Creates `dir` (if missing) with `busy` spinning and `idle` sleeping processes in it.
    pub(crate) fn start(dir: PathBuf, busy: u32, idle: u32, spin: &Path) -> Result<LoadedCgroup> {
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut cg = LoadedCgroup {
            dir,
            children: Vec::new(),
        };
        for i in 0..busy + idle {
            let mut cmd = if i < busy {
                let mut c = Command::new(spin);
                c.args(["--millis", "3600000"]);
                c
            } else {
                let mut c = Command::new("sleep");
                c.arg("3600");
                c
            };
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {cmd:?}"))?;
            let pid = child.id();
            cg.children.push(child);
            std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("cannot move pid {pid} into {}", cg.dir.display()))?;
        }
        Ok(cg)
    }

    /// The processes' ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Its cgroup id and path.
    pub(crate) fn cgroup(&self) -> Result<corral_actors::container_backend::CgroupRef> {
        let id = corral_bpf::cgroup_id_of(&self.dir)?;
        Ok(corral_actors::container_backend::CgroupRef {
            id: corral_actors::container_backend::CgroupId(id),
            path: Some(self.dir.clone()),
        })
    }
}

impl Drop for LoadedCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest rank: p50 of 1..=100 is 50, p99 is 99; one sample is both.
    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(
            percentiles(&mut s),
            (Duration::from_micros(50), Duration::from_micros(99))
        );
        let mut one = vec![Duration::from_micros(7)];
        assert_eq!(
            percentiles(&mut one),
            (Duration::from_micros(7), Duration::from_micros(7))
        );
        assert_eq!(percentiles(&mut []), (Duration::ZERO, Duration::ZERO));
    }

    /// The JSON a part writes has the stable fields the report reads, and leaves out what a
    /// figure does not have.
    #[test]
    fn figures_serialise_with_stable_fields() {
        let mut s = vec![Duration::from_micros(5); 10];
        let f = Figure::latency_us("enforce_direct_bpf", "x", &mut s).with("hops", 0);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["key"], "enforce_direct_bpf");
        assert_eq!(v["unit"], "us");
        assert_eq!(v["p50"], 5.0);
        assert_eq!(v["samples"], 10);
        assert_eq!(v["extra"]["hops"], 0);
        assert!(v.get("value").is_none());
        let r = serde_json::to_value(Figure::rate("invoke_throughput_c1", "y", 10.0, 3)).unwrap();
        assert_eq!(r["value"], 10.0);
        assert!(r.get("p50").is_none() && r.get("extra").is_none());
    }
}
