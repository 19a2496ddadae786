//! The figures `corral run` reports, per function and per group, and how they are printed and
//! written as JSON. Percentiles come from an HDR histogram of every invocation (3 significant
//! digits: within 0.1% of the nearest-rank value, without sorting the samples); run-queue
//! latency comes from the scheduler's log2 histograms, so its percentiles are bucket upper
//! bounds.

use std::time::Duration;

use corral_bpf::GroupStats;
use serde::Serialize;

use super::sampler::PlacementSamples;

/// p50 and p99 of one quantity, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// The longest duration a histogram records, in nanoseconds (one day); longer ones count as it.
const MAX_RECORDED_NS: u64 = 86_400_000_000_000;

impl Percentiles {
    /// p50 and p99 of `samples`, through an HDR histogram of nanoseconds with 3 significant
    /// digits; `None` when there are none.
    pub fn of(samples: impl IntoIterator<Item = Duration>) -> Option<Percentiles> {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_NS, 3)
            .expect("valid histogram bounds");
        for sample in samples {
            let ns = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
            histogram.saturating_record(ns.clamp(1, MAX_RECORDED_NS));
        }
        if histogram.is_empty() {
            return None;
        }
        let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
        Some(Percentiles {
            p50_us: us(0.50),
            p99_us: us(0.99),
        })
    }
}

/// One function's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FunctionReport {
    /// Its name.
    pub function: String,
    /// The group(s) its invocations ran in, by name.
    pub groups: Vec<String>,
    /// Invocations that completed.
    pub invocations: u64,
    /// Invocations that failed.
    pub errors: u64,
    /// Completed invocations that needed a cold start.
    pub cold_starts: u64,
    /// End to end, as the caller saw it.
    pub end_to_end: Option<Percentiles>,
    /// Waiting for a lease (the inflight limit).
    pub queue_wait: Option<Percentiles>,
    /// Committing the group enforcement.
    pub enforcement: Option<Percentiles>,
    /// The function itself.
    pub run: Option<Percentiles>,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
}

/// One group's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReport {
    /// Its id in the group table.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its CPUs, as a CPU list.
    pub cpus: String,
    /// Completed invocations placed in it.
    pub invocations: u64,
    /// Enforcement latency of those invocations.
    pub enforcement: Option<Percentiles>,
    /// Of the enforcement: waiting in the map writer's mailbox (on the actix thread).
    pub enforcement_mailbox_wait: Option<Percentiles>,
    /// Of the enforcement: the map update (or cpuset write).
    pub enforcement_update: Option<Percentiles>,
    /// Of the enforcement: the `SCHED_EXT` policy sweep (partial mode).
    pub enforcement_sweep: Option<Percentiles>,
    /// Of the enforcement: the acknowledgement's way back to the container manager.
    pub enforcement_reply: Option<Percentiles>,
    /// Scheduler: tasks that started running in the group during the run.
    pub sched_runs: Option<u64>,
    /// Scheduler: run-queue latency (enqueue to running), bucket upper bounds.
    pub runqueue_latency: Option<Percentiles>,
    /// Scheduler: time on CPU, in milliseconds.
    pub on_cpu_ms: Option<f64>,
    /// Scheduler: runs outside the group's CPUs (must be 0).
    pub sched_violations: Option<u64>,
    /// User-space thread samples and how many were outside the group (must be 0).
    pub placement_samples: PlacementSamples,
    /// The host group's row (unmapped tasks, this runtime among them): no invocations, and
    /// its violations are not placement failures.
    pub host: bool,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// The configuration file.
    pub config: String,
    /// The map-writer backend that enforced groups (`bpf`, `cpuset`, ...).
    pub enforcement_backend: String,
    /// Why sched_ext was not used, when it was not.
    pub sched_ext_unavailable: Vec<String>,
    /// The runtime's scheduler at the end of the run: state, attaches, exits, last exit/error.
    pub scheduler: String,
    /// Set when the `bpf` backend wrote the maps but the scheduler was not running throughout
    /// (it failed to attach or exited): the placement figures then describe no enforcement.
    pub scheduler_warning: Option<String>,
    /// Wall time of the load, drain included, in seconds.
    pub wall_s: f64,
    /// The highest number of invocations in flight at once.
    pub max_in_flight: usize,
    /// Per function.
    pub functions: Vec<FunctionReport>,
    /// Per group.
    pub groups: Vec<GroupReport>,
}

/// The difference of two cumulative readings of a group's scheduler statistics.
pub fn stats_delta(after: &GroupStats, before: &GroupStats) -> GroupStats {
    let mut d = *after;
    d.enqueues = after.enqueues.saturating_sub(before.enqueues);
    d.direct_dispatches = after
        .direct_dispatches
        .saturating_sub(before.direct_dispatches);
    d.dispatches = after.dispatches.saturating_sub(before.dispatches);
    d.runs = after.runs.saturating_sub(before.runs);
    d.run_ns = after.run_ns.saturating_sub(before.run_ns);
    d.lat_sum_ns = after.lat_sum_ns.saturating_sub(before.lat_sum_ns);
    d.borrowed_runs = after.borrowed_runs.saturating_sub(before.borrowed_runs);
    d.violations = after.violations.saturating_sub(before.violations);
    for (d, b) in d.lat_hist.iter_mut().zip(before.lat_hist.iter()) {
        *d = d.saturating_sub(*b);
    }
    d
}

/// Fills a group report's scheduler fields from a statistics delta.
pub fn apply_sched_stats(group: &mut GroupReport, delta: &GroupStats) {
    group.sched_runs = Some(delta.runs);
    group.on_cpu_ms = Some(delta.run_ns as f64 / 1e6);
    group.sched_violations = Some(delta.violations);
    group.runqueue_latency = match (
        delta.latency_quantile_upper_ns(0.50),
        delta.latency_quantile_upper_ns(0.99),
    ) {
        (Some(p50), Some(p99)) => Some(Percentiles {
            p50_us: p50 as f64 / 1e3,
            p99_us: p99 as f64 / 1e3,
        }),
        _ => None,
    };
}

fn us(v: f64) -> String {
    if v < 1_000.0 {
        format!("{v:.0}µs")
    } else if v < 1_000_000.0 {
        format!("{:.1}ms", v / 1e3)
    } else {
        format!("{:.2}s", v / 1e6)
    }
}

fn pair(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{}/{}", us(p.p50_us), us(p.p99_us)),
        None => "-".into(),
    }
}

impl RunReport {
    /// Prints the report as aligned tables.
    pub fn print(&self) {
        println!();
        println!(
            "corral run: {} ({:.1}s, enforcement backend `{}`, max {} in flight)",
            self.config, self.wall_s, self.enforcement_backend, self.max_in_flight
        );
        for why in &self.sched_ext_unavailable {
            println!("  sched_ext not used: {why}");
        }
        if !self.scheduler.is_empty() {
            println!("  scheduler: {}", self.scheduler);
        }
        if let Some(warning) = &self.scheduler_warning {
            println!("  WARNING: {warning}");
        }
        println!();
        println!("functions                                       p50/p99");
        println!(
            "{:<14} {:<10} {:>6} {:>5} {:>5}  {:>17} {:>17} {:>17} {:>17}",
            "function",
            "group",
            "ok",
            "err",
            "cold",
            "end-to-end",
            "queue wait",
            "enforcement",
            "run"
        );
        for f in &self.functions {
            println!(
                "{:<14} {:<10} {:>6} {:>5} {:>5}  {:>17} {:>17} {:>17} {:>17}",
                f.function,
                f.groups.join(","),
                f.invocations,
                f.errors,
                f.cold_starts,
                pair(&f.end_to_end),
                pair(&f.queue_wait),
                pair(&f.enforcement),
                pair(&f.run)
            );
            for e in &f.error_samples {
                println!("    error: {e}");
            }
        }
        println!();
        println!("groups                                          p50/p99");
        println!(
            "{:<10} {:<8} {:>6} {:>17} {:>9} {:>17} {:>10} {:>10} {:>16}",
            "group",
            "cpus",
            "invoc",
            "enforcement",
            "runs",
            "run-queue lat",
            "on-CPU",
            "violations",
            "samples outside"
        );
        for g in &self.groups {
            println!(
                "{:<10} {:<8} {:>6} {:>17} {:>9} {:>17} {:>10} {:>10} {:>16}",
                g.name,
                g.cpus,
                g.invocations,
                pair(&g.enforcement),
                g.sched_runs.map_or("-".into(), |r| r.to_string()),
                pair(&g.runqueue_latency),
                g.on_cpu_ms.map_or("-".into(), |ms| format!("{ms:.0}ms")),
                g.sched_violations.map_or("-".into(), |v| v.to_string()),
                format!(
                    "{}/{}",
                    g.placement_samples.outside, g.placement_samples.samples
                ),
            );
        }
        println!();
        println!("enforcement, part by part                       p50/p99");
        println!(
            "{:<10} {:>17} {:>17} {:>17} {:>17} {:>17}",
            "group", "enforcement", "mailbox wait", "map update", "sweep", "reply"
        );
        for g in self.groups.iter().filter(|g| !g.host) {
            println!(
                "{:<10} {:>17} {:>17} {:>17} {:>17} {:>17}",
                g.name,
                pair(&g.enforcement),
                pair(&g.enforcement_mailbox_wait),
                pair(&g.enforcement_update),
                pair(&g.enforcement_sweep),
                pair(&g.enforcement_reply),
            );
        }
        if self.groups.iter().all(|g| g.sched_runs.is_none()) {
            println!(
                "(scheduler columns are empty: the `{}` backend has no in-kernel statistics)",
                self.enforcement_backend
            );
        }
    }

    /// Every group's placement is clean: no scheduler violations and no sample outside.
    pub fn placement_clean(&self) -> bool {
        self.groups
            .iter()
            .filter(|g| !g.host)
            .all(|g| g.sched_violations.unwrap_or(0) == 0 && g.placement_samples.outside == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The histogram's percentiles agree with nearest rank within its 0.1% precision: p50 of
    /// 1..=100 µs is 50 µs, p99 is 99 µs, in any order; none of nothing; a day-long outlier is
    /// recorded as the longest duration, not lost.
    #[test]
    fn percentiles_are_nearest_rank_within_the_histograms_precision() {
        let p = Percentiles::of((1..=100).rev().map(Duration::from_micros)).unwrap();
        assert!((p.p50_us - 50.0).abs() <= 0.05, "{p:?}");
        assert!((p.p99_us - 99.0).abs() <= 0.1, "{p:?}");
        assert_eq!(Percentiles::of(std::iter::empty()), None);
        let p = Percentiles::of([Duration::from_secs(10 * 86_400)]).unwrap();
        assert!((p.p99_us / 1e6 - 86_400.0).abs() < 100.0, "{p:?}");
    }
}
