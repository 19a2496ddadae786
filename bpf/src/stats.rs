//! Per-group scheduling statistics, kept per CPU by the scheduler and summed here: queueing and
//! dispatch counts, time on CPU, placement violations and a log2 histogram of run-queue latency.
//! Each CPU's counters are written only by that CPU, so the BPF side needs no atomics; a read
//! sums the CPUs' copies one after the other, so it is not a snapshot across CPUs.

use std::sync::Arc;

use libbpf_rs::{MapCore, MapFlags};

use crate::bpf_intf::{
    corral_consts_CORRAL_HOST_GROUP, corral_consts_CORRAL_LAT_BUCKETS,
    corral_consts_CORRAL_MAX_GROUPS, corral_group_stats,
};
use crate::error::{Error, Result};
use crate::pinned::{Shared, STATS_MAP};
use crate::raw;
use crate::GroupId;

/// Buckets of the latency histogram (`CORRAL_LAT_BUCKETS`).
pub const LAT_BUCKETS: usize = corral_consts_CORRAL_LAT_BUCKETS as usize;

/// A group's statistics (summed over CPUs, or one CPU's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// Tasks queued for the group (its DSQ or straight into a local DSQ).
    pub enqueues: u64,
    /// Of those, tasks put straight on an idle CPU.
    pub direct_dispatches: u64,
    /// Tasks moved from the group's DSQ to a CPU.
    pub dispatches: u64,
    /// Times a task of the group started running; equals the histogram's total.
    pub runs: u64,
    /// Time the group's tasks spent on CPU, in ns.
    pub run_ns: u64,
    /// Sum of the recorded run-queue latencies, in ns.
    pub lat_sum_ns: u64,
    /// Runs outside the group's CPUs that its borrow flag allowed.
    pub borrowed_runs: u64,
    /// Runs outside the group's CPUs that nothing allowed (not borrowing, not an affinity
    /// override, not a rescue), judged when the task starts running, whoever placed it.
    pub violations: u64,
    /// Runs outside the group's CPUs because the task's allowed CPUs (taskset,
    /// `sched_setaffinity`, migration disabled) miss the group's online CPUs.
    pub affinity_overrides: u64,
    /// Runs of tasks taken from a queue that no CPU they may use was serving (after a layout
    /// change or CPU hotplug) once they had waited the rescue bound.
    pub rescued: u64,
    /// Times a higher scheduling class (fair in partial mode; RT, deadline) took a CPU of the
    /// group.
    pub displaced: u64,
    /// Time the group's CPUs spent taken by a higher class, in ns.
    pub displaced_ns: u64,
    /// Longest run-queue latency recorded, in ns (the maximum over CPUs when summed).
    pub lat_max_ns: u64,
    /// Run-queue latency histogram: bucket `i` counts latencies in `[2^i, 2^(i+1))` ns (bucket 0
    /// also counts 0 ns, the last bucket everything above).
    pub lat_hist: [u64; LAT_BUCKETS],
}

impl Default for GroupStats {
    fn default() -> Self {
        GroupStats::from_raw(&raw::zeroed())
    }
}

impl GroupStats {
    fn from_raw(s: &corral_group_stats) -> GroupStats {
        GroupStats {
            enqueues: s.enqueues,
            direct_dispatches: s.direct_dispatches,
            dispatches: s.dispatches,
            runs: s.runs,
            run_ns: s.run_ns,
            lat_sum_ns: s.lat_sum_ns,
            borrowed_runs: s.borrowed_runs,
            violations: s.violations,
            affinity_overrides: s.affinity_overrides,
            rescued: s.rescued,
            displaced: s.displaced,
            displaced_ns: s.displaced_ns,
            lat_max_ns: s.lat_max_ns,
            lat_hist: s.lat_hist,
        }
    }

    fn add(&mut self, o: &GroupStats) {
        self.enqueues += o.enqueues;
        self.direct_dispatches += o.direct_dispatches;
        self.dispatches += o.dispatches;
        self.runs += o.runs;
        self.run_ns += o.run_ns;
        self.lat_sum_ns += o.lat_sum_ns;
        self.borrowed_runs += o.borrowed_runs;
        self.violations += o.violations;
        self.affinity_overrides += o.affinity_overrides;
        self.rescued += o.rescued;
        self.displaced += o.displaced;
        self.displaced_ns += o.displaced_ns;
        self.lat_max_ns = self.lat_max_ns.max(o.lat_max_ns);
        for (a, b) in self.lat_hist.iter_mut().zip(o.lat_hist.iter()) {
            *a += b;
        }
    }

    /// Total count of the latency histogram.
    pub fn hist_total(&self) -> u64 {
        self.lat_hist.iter().sum()
    }

    /// Mean run-queue latency in ns, `None` without runs.
    pub fn mean_latency_ns(&self) -> Option<u64> {
        (self.runs > 0).then(|| self.lat_sum_ns / self.runs)
    }

    /// An upper bound of the `q` quantile (0.0..=1.0) of run-queue latency: the top of the
    /// bucket the quantile falls in. `None` without runs.
    pub fn latency_quantile_upper_ns(&self, q: f64) -> Option<u64> {
        let total = self.hist_total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.lat_hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(if i + 1 >= 64 {
                    u64::MAX
                } else {
                    (1u64 << (i + 1)) - 1
                });
            }
        }
        Some(u64::MAX)
    }
}

/// Typed access to the pinned statistics. Obtain it from [`crate::PinnedMaps::stats`].
#[derive(Debug)]
pub struct SchedStats {
    shared: Arc<Shared>,
}

impl SchedStats {
    pub(crate) fn new(shared: Arc<Shared>) -> SchedStats {
        SchedStats { shared }
    }

    fn index(group: GroupId) -> Result<u32> {
        if group >= corral_consts_CORRAL_MAX_GROUPS {
            return Err(Error::GroupOutOfRange {
                group,
                max: corral_consts_CORRAL_MAX_GROUPS,
            });
        }
        Ok(group)
    }

    fn per_cpu_at(&self, index: u32) -> Result<Vec<GroupStats>> {
        let values = self
            .shared
            .stats
            .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::map("lookup", STATS_MAP, e))?
            .unwrap_or_default();
        Ok(values
            .iter()
            .map(|v| GroupStats::from_raw(&raw::read(v).unwrap_or_else(raw::zeroed)))
            .collect())
    }

    fn sum(per_cpu: &[GroupStats]) -> GroupStats {
        let mut total = GroupStats::default();
        for s in per_cpu {
            total.add(s);
        }
        total
    }

    /// Group `group`'s statistics summed over CPUs.
    pub fn read(&self, group: GroupId) -> Result<GroupStats> {
        Ok(Self::sum(&self.per_cpu_at(Self::index(group)?)?))
    }

    /// Group `group`'s statistics per CPU (index = CPU number).
    pub fn read_per_cpu(&self, group: GroupId) -> Result<Vec<GroupStats>> {
        self.per_cpu_at(Self::index(group)?)
    }

    /// Statistics of the host group (tasks without a usable mapping), summed over CPUs.
    pub fn read_host(&self) -> Result<GroupStats> {
        Ok(Self::sum(
            &self.per_cpu_at(corral_consts_CORRAL_HOST_GROUP)?,
        ))
    }

    /// Zeroes group `group`'s counters on every CPU. Counts the scheduler adds concurrently may
    /// be lost; meant for a quiescent group (tests, benchmark phases).
    pub fn reset(&self, group: GroupId) -> Result<()> {
        self.reset_at(Self::index(group)?)
    }

    /// Zeroes the fallback counters on every CPU (see [`SchedStats::reset`]).
    pub fn reset_host(&self) -> Result<()> {
        self.reset_at(corral_consts_CORRAL_HOST_GROUP)
    }

    fn reset_at(&self, index: u32) -> Result<()> {
        let zero = raw::bytes_of(&raw::zeroed::<corral_group_stats>()).to_vec();
        let cpus = libbpf_rs::num_possible_cpus()
            .map_err(|e| Error::map("count possible CPUs for", STATS_MAP, e))?;
        let values = vec![zero; cpus];
        self.shared
            .stats
            .update_percpu(&index.to_ne_bytes(), &values, MapFlags::ANY)
            .map_err(|e| Error::map("update", STATS_MAP, e))
    }
}
