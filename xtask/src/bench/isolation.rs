//! `cargo xtask bench isolation`: how well each scheduler keeps a latency-sensitive function's
//! response time when CPU noise shares the machine (issue 8, item 6).
//!
//! The workload is `corral-lat` (runtime/src/bin/corral-lat.rs): an open loop of fixed CPU
//! bursts on exponential arrival gaps, its response time measured against the scheduled arrival;
//! beside it, noise of more spinning threads than the guest has CPUs. Every variant runs in **one**
//! 2-vCPU guest under multi-threaded TCG (single-threaded TCG puts both vCPUs on one host thread,
//! and then not even cpuset isolates; DESIGN.md). A variant's runs follow each other under one
//! scheduler attach: every attach and detach patches kernel text, where this kernel under
//! multi-threaded TCG sometimes oopses (docs/testing.md), so there are as few as there can be
//! (interleaving the variants' runs in rounds took three times as many, and one of them oopsed).
//! Each run uses fresh cgroups `bench-lat` and `bench-noise`, killed whole (`cgroup.kill`)
//! afterwards; a scheduler variant waits for `/sys/kernel/sched_ext/state` to read `enabled`
//! before measuring, checks it is still attached (and was not re-attached) after each run, and
//! waits for `disabled` after stopping it.
//!
//! Variants: `solo` (the latency function alone), `eevdf` (noise anywhere, no sched_ext),
//! `cpuset` (cgroup v2 cpuset: latency on CPU 0, noise on CPU 1), `layered` (scx_layered with
//! two confined layers matched by cgroup prefix, the same split), `corral_mapped` (corral's
//! scheduler with groups lat = CPU 0 and noise = CPU 1, both cgroups mapped) and
//! `corral_unmapped` (only the latency cgroup mapped; the noise is in the host group, `[host]
//! cpus = "1"`).
//!
//! The report gives, per variant, the median over runs of the per-run p50 and p99, as ratios to
//! solo's medians, with the range of the per-run ratios. A variant that cannot run, a scheduler
//! that exits during a run, or a guest that fails makes the bench fail (non-zero), after the
//! report is written with what did run and with the exits recorded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::initramfs::{GuestCommand, GuestSpec};
use crate::kernel::VmKernel;
use crate::vm::{self, VmOptions};

/// The prefix of every key this benchmark writes into the shared report.
pub const REPORT_PREFIX: &str = "isolation";

/// Guest → host lines. Each is found anywhere in a console line (a kernel message may precede
/// it) and must parse, or the bench fails.
const RUN_MARKER: &str = "CORRAL-BENCH-RUN ";
const CALIBRATION_MARKER: &str = "CORRAL-BENCH-CALIBRATION ";
const EXIT_MARKER: &str = "CORRAL-BENCH-EXIT ";
const FAIL_MARKER: &str = "CORRAL-BENCH-FAIL ";
const DONE_MARKER: &str = "CORRAL-BENCH-DONE";
const GROUPS_MARKER: &str = "CORRAL-BENCH-GROUPS ";

/// One way of running the latency function, with or without noise and a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// The latency function alone, in its own cgroup; the baseline of every ratio.
    Solo,
    /// Noise anywhere, the kernel's default scheduler (EEVDF), no cpuset.
    Eevdf,
    /// cgroup v2 cpuset: latency cgroup on CPU 0, noise cgroup on CPU 1.
    Cpuset,
    /// scx_layered with confined layers matched by cgroup prefix: latency on CPU 0, noise on 1.
    Layered,
    /// corral's scheduler, groups lat = CPU 0 and noise = CPU 1, both cgroups mapped.
    CorralMapped,
    /// corral's scheduler, only the latency cgroup mapped (CPU 0); the noise is unmapped and
    /// runs in the host group.
    CorralUnmapped,
}

impl Variant {
    /// Every variant, in the order they run.
    pub const ALL: [Variant; 6] = [
        Variant::Solo,
        Variant::Eevdf,
        Variant::Cpuset,
        Variant::Layered,
        Variant::CorralMapped,
        Variant::CorralUnmapped,
    ];

    /// The name in the report's keys and the guest's lines.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Solo => "solo",
            Variant::Eevdf => "eevdf",
            Variant::Cpuset => "cpuset",
            Variant::Layered => "layered",
            Variant::CorralMapped => "corral_mapped",
            Variant::CorralUnmapped => "corral_unmapped",
        }
    }

    /// The variant of a name, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// What one benchmark run measures.
#[derive(Debug, Clone)]
pub struct Params {
    /// Runs of each variant; the median is reported.
    pub runs: u32,
    /// Recorded arrivals per run (after 10 unrecorded warm-up arrivals).
    pub samples: u32,
    /// The variants, in the order they run; solo must be among them.
    pub variants: Vec<Variant>,
    /// CPU time of one burst, calibrated once at the start of the boot into a fixed count of
    /// work iterations that every run then uses.
    pub burst_us: u32,
    /// Mean gap between arrivals (exponential gaps, fixed seed).
    pub mean_gap_us: u32,
    /// Noise threads (more than the guest's 2 CPUs).
    pub noise_threads: u32,
    /// The guest is killed after this long, boot included.
    pub timeout: Duration,
    /// The smoke-sized run (its report goes to `report.smoke.json`, not the shared report).
    pub smoke: bool,
}

impl Params {
    /// The real benchmark: every variant, 3 runs of 500 samples.
    pub fn full() -> Self {
        Self {
            runs: 3,
            samples: 500,
            variants: Variant::ALL.to_vec(),
            burst_us: 3000,
            mean_gap_us: 20_000,
            noise_threads: 4,
            timeout: Duration::from_secs(3600),
            smoke: false,
        }
    }

    /// The smoke-sized path: one run of 100 samples of solo, cpuset and the corral variants.
    pub fn smoke() -> Self {
        Self {
            runs: 1,
            samples: 100,
            variants: vec![
                Variant::Solo,
                Variant::Cpuset,
                Variant::CorralMapped,
                Variant::CorralUnmapped,
            ],
            timeout: Duration::from_secs(900),
            smoke: true,
            ..Self::full()
        }
    }

    /// A rough duration of the guest command, for the progress line.
    pub fn estimate(&self) -> Duration {
        let run_s = (self.samples + 10) as f64 * self.mean_gap_us as f64 / 1e6 + 3.0;
        let attaches = self
            .variants
            .iter()
            .filter(|v| !matches!(v, Variant::Solo | Variant::Eevdf | Variant::Cpuset))
            .count();
        Duration::from_secs_f64(
            run_s * (self.variants.len() as u32 * self.runs) as f64 + 8.0 * attaches as f64 + 30.0,
        )
    }
}

/// One measured run, as the guest reported it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The variant.
    pub variant: Variant,
    /// Its number among the variant's runs, from 1.
    pub run: u32,
    /// False when the scheduler did not stay attached for the whole run; such a run is
    /// recorded but left out of the medians.
    pub valid: bool,
    /// Response time percentiles of this run, in µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// corral-lat's whole line (samples, start delays, CPUs it ran on, …).
    pub lat: Value,
    /// The noise's line (its CPUs and work done), when the variant has noise.
    pub noise: Option<Value>,
}

/// A scheduler that exited (or was ejected) while a run measured: what the guest saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerExit {
    /// The variant.
    pub variant: String,
    /// The run.
    pub run: u32,
    /// The scheduler's log tail and the kernel's sched_ext lines, joined.
    pub message: String,
}

/// A variant run that could not be measured at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The variant (or `setup` for the boot-wide preparation).
    pub variant: String,
    /// The run (0 for the boot-wide setup, or for the variant's scheduler start).
    pub run: u32,
    /// Why.
    pub why: String,
}

/// Everything the guest reported.
#[derive(Debug, Clone, Default)]
pub struct GuestResults {
    /// corral-lat's calibration line.
    pub calibration: Option<Value>,
    /// The measured runs.
    pub runs: Vec<RunRecord>,
    /// Scheduler exits during runs.
    pub exits: Vec<SchedulerExit>,
    /// Runs that could not be measured.
    pub failures: Vec<Failure>,
    /// The script reached its end.
    pub done: bool,
    /// corral's maps (`corral maps dump --json`) per corral variant, right after its scheduler
    /// attached (`begin`) and before it stopped (`end`): the in-kernel statistics over the
    /// variant's runs are their difference.
    pub maps: BTreeMap<(String, String), Value>,
}

fn marker_rest<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| line[at + marker.len()..].trim())
}

/// `<variant> <run> <text>`.
fn variant_run_text(rest: &str) -> Result<(String, u32, String)> {
    let mut parts = rest.splitn(3, ' ');
    let variant = parts.next().unwrap_or_default().to_owned();
    let run = parts
        .next()
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("no run number in `{rest}`"))?;
    Ok((
        variant,
        run,
        parts.next().unwrap_or_default().trim().to_owned(),
    ))
}

fn number(value: &Value, key: &str) -> Result<f64> {
    value[key]
        .as_f64()
        .with_context(|| format!("no number `{key}` in {value}"))
}

/// Reads the guest's console. A marker line that does not parse is an error, never skipped.
pub fn parse_console(lines: &[String]) -> Result<GuestResults> {
    let mut out = GuestResults::default();
    let mut exits: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    for line in lines {
        if let Some(rest) = marker_rest(line, RUN_MARKER) {
            let v: Value = serde_json::from_str(rest)
                .with_context(|| format!("the guest's run line does not parse: {line}"))?;
            let name = v["variant"].as_str().unwrap_or_default();
            let variant = Variant::from_name(name)
                .with_context(|| format!("unknown variant `{name}` in {line}"))?;
            let lat = v["lat"].clone();
            out.runs.push(RunRecord {
                variant,
                run: v["run"].as_u64().context("no run number")? as u32,
                valid: v["valid"].as_bool().context("no `valid`")?,
                p50_us: number(&lat, "p50_us")?,
                p99_us: number(&lat, "p99_us")?,
                max_us: number(&lat, "max_us")?,
                noise: Some(v["noise"].clone()).filter(|n| !n.is_null()),
                lat,
            });
        } else if let Some(rest) = marker_rest(line, CALIBRATION_MARKER) {
            out.calibration = Some(
                serde_json::from_str(rest)
                    .with_context(|| format!("the calibration line does not parse: {line}"))?,
            );
        } else if let Some(rest) = marker_rest(line, EXIT_MARKER) {
            let (variant, run, text) = variant_run_text(rest)?;
            exits.entry((variant, run)).or_default().push(text);
        } else if let Some(rest) = marker_rest(line, FAIL_MARKER) {
            let (variant, run, why) = variant_run_text(rest)?;
            out.failures.push(Failure { variant, run, why });
        } else if let Some(rest) = marker_rest(line, GROUPS_MARKER) {
            let mut parts = rest.splitn(3, ' ');
            let (variant, phase, text) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let v: Value = serde_json::from_str(text)
                .with_context(|| format!("the guest's maps dump does not parse: {line}"))?;
            out.maps.insert((variant.to_owned(), phase.to_owned()), v);
        } else if line.contains(DONE_MARKER) {
            out.done = true;
        }
    }
    out.exits = exits
        .into_iter()
        .map(|((variant, run), texts)| SchedulerExit {
            variant,
            run,
            message: texts.join(" | "),
        })
        .collect();
    Ok(out)
}

/// The median; the mean of the two middle values for an even count. `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One variant's figures over its valid runs.
#[derive(Debug, Clone)]
pub struct VariantSummary {
    /// The variant.
    pub variant: Variant,
    /// Runs measured, valid or not.
    pub runs: usize,
    /// Valid runs (the ones the medians use).
    pub valid_runs: usize,
    /// Median over valid runs of the per-run p50, µs.
    pub p50_us: Option<f64>,
    /// Median over valid runs of the per-run p99, µs.
    pub p99_us: Option<f64>,
    /// `p50_us` / solo's `p50_us`.
    pub p50_ratio: Option<f64>,
    /// `p99_us` / solo's `p99_us`.
    pub p99_ratio: Option<f64>,
    /// Smallest and largest per-run p50 over solo's median p50.
    pub p50_ratio_range: Option<(f64, f64)>,
    /// Smallest and largest per-run p99 over solo's median p99.
    pub p99_ratio_range: Option<(f64, f64)>,
    /// CPUs the latency function ran on, over all runs.
    pub lat_cpus: Vec<u64>,
    /// CPUs the noise ran on, over all runs.
    pub noise_cpus: Vec<u64>,
}

fn cpus_of(values: impl Iterator<Item = Value>) -> Vec<u64> {
    let mut cpus: Vec<u64> = values
        .flat_map(|v| {
            v["cpus"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

fn range(values: &[f64], base: Option<f64>) -> Option<(f64, f64)> {
    let base = base.filter(|b| *b > 0.0)?;
    let lo = values.iter().copied().reduce(f64::min)?;
    let hi = values.iter().copied().reduce(f64::max)?;
    Some((lo / base, hi / base))
}

/// One group's run-queue latency (enqueue to running) over a corral variant's runs, from the
/// scheduler's log2 histogram: the figures are bucket upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLatency {
    /// `g<id>` or `host`.
    pub group: String,
    /// The group's CPUs, as published.
    pub cpus: String,
    /// Runs counted in the histogram over the variant's runs.
    pub runs: u64,
    /// Median, µs (upper bound of its bucket).
    pub p50_us: Option<f64>,
    /// 99th percentile, µs (upper bound of its bucket).
    pub p99_us: Option<f64>,
}

/// `histogram` of a `corral maps dump --json` stats entry as `upper bound ns → count`.
fn histogram(stats: &Value) -> BTreeMap<u64, u64> {
    stats["histogram"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| Some((b.get(0)?.as_u64()?, b.get(1)?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Nearest-rank quantile `q` of a bucketed histogram: the upper bound of the bucket it falls in.
fn bucket_quantile(hist: &BTreeMap<u64, u64>, q: f64) -> Option<u64> {
    let total: u64 = hist.values().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (&upper, &count) in hist {
        seen += count;
        if seen >= rank {
            return Some(upper);
        }
    }
    None
}

/// Per-group run-queue latency between two maps dumps of one scheduler attach.
pub fn group_latencies(begin: &Value, end: &Value) -> Vec<GroupLatency> {
    let cpus_of = |id: Option<u64>| -> String {
        match id {
            None => end["host_cpus"].as_str().unwrap_or("all").to_owned(),
            Some(id) => end["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["id"].as_u64() == Some(id)))
                .and_then(|g| g["cpus"].as_str())
                .unwrap_or("?")
                .to_owned(),
        }
    };
    let stats = |dump: &Value, id: Option<u64>| -> Option<Value> {
        dump["stats"]
            .as_array()?
            .iter()
            .find(|s| s["group"].as_u64() == id)
            .cloned()
    };
    let mut out = Vec::new();
    for s in end["stats"].as_array().into_iter().flatten() {
        let id = s["group"].as_u64();
        let mut hist = histogram(s);
        if let Some(before) = stats(begin, id) {
            for (upper, count) in histogram(&before) {
                if let Some(c) = hist.get_mut(&upper) {
                    *c = c.saturating_sub(count);
                }
            }
        }
        let us = |q: f64| bucket_quantile(&hist, q).map(|ns| ns as f64 / 1e3);
        out.push(GroupLatency {
            group: id.map_or("host".to_owned(), |g| format!("g{g}")),
            cpus: cpus_of(id),
            runs: hist.values().sum(),
            p50_us: us(0.5),
            p99_us: us(0.99),
        });
    }
    out
}

/// The whole benchmark's result: the parameters, the guest's records and the summaries.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was measured.
    pub params: Params,
    /// What the guest reported.
    pub results: GuestResults,
    /// One per variant of `params`, in its order.
    pub summaries: Vec<VariantSummary>,
    /// Run-queue latency per group, for each corral variant whose maps were dumped.
    pub group_latency: Vec<(Variant, Vec<GroupLatency>)>,
}

impl Report {
    /// Summarises `results`: medians over valid runs, ratios to solo.
    pub fn new(params: &Params, results: GuestResults) -> Self {
        let stats = |variant: Variant| {
            let valid: Vec<&RunRecord> = results
                .runs
                .iter()
                .filter(|r| r.variant == variant && r.valid)
                .collect();
            let p50s: Vec<f64> = valid.iter().map(|r| r.p50_us).collect();
            let p99s: Vec<f64> = valid.iter().map(|r| r.p99_us).collect();
            (valid, p50s, p99s)
        };
        let (_, solo_p50s, solo_p99s) = stats(Variant::Solo);
        let (solo_p50, solo_p99) = (median(&solo_p50s), median(&solo_p99s));
        let ratio = |v: Option<f64>, base: Option<f64>| match (v, base) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        };
        let summaries = params
            .variants
            .iter()
            .map(|&variant| {
                let (valid, p50s, p99s) = stats(variant);
                let all = results.runs.iter().filter(|r| r.variant == variant);
                let (p50, p99) = (median(&p50s), median(&p99s));
                VariantSummary {
                    variant,
                    runs: all.clone().count(),
                    valid_runs: valid.len(),
                    p50_us: p50,
                    p99_us: p99,
                    p50_ratio: ratio(p50, solo_p50),
                    p99_ratio: ratio(p99, solo_p99),
                    p50_ratio_range: range(&p50s, solo_p50),
                    p99_ratio_range: range(&p99s, solo_p99),
                    lat_cpus: cpus_of(all.clone().map(|r| r.lat.clone())),
                    noise_cpus: cpus_of(all.filter_map(|r| r.noise.clone())),
                }
            })
            .collect();
        let group_latency = params
            .variants
            .iter()
            .filter_map(|&v| {
                let begin = results
                    .maps
                    .get(&(v.name().to_owned(), "begin".to_owned()))?;
                let end = results.maps.get(&(v.name().to_owned(), "end".to_owned()))?;
                Some((v, group_latencies(begin, end)))
            })
            .collect();
        Self {
            params: params.clone(),
            results,
            summaries,
            group_latency,
        }
    }

    /// Why this benchmark must fail: runs that could not be measured, scheduler exits, variants
    /// with fewer valid runs than asked for, a script that did not finish.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.results.failures {
            out.push(format!(
                "{} run {}: could not run: {}",
                f.variant, f.run, f.why
            ));
        }
        for e in &self.results.exits {
            out.push(format!(
                "{} run {}: the scheduler exited during the run: {}",
                e.variant, e.run, e.message
            ));
        }
        for s in &self.summaries {
            if s.valid_runs < self.params.runs as usize {
                out.push(format!(
                    "{}: {} of {} runs valid",
                    s.variant.name(),
                    s.valid_runs,
                    self.params.runs
                ));
            }
        }
        if !self.results.done {
            out.push("the guest script did not reach its end".to_owned());
        }
        out
    }

    /// The report's keys: `isolation_<variant>_p50_ratio`, `isolation_<variant>_p99_ratio`, and
    /// `isolation` with the parameters, every run's numbers, the summaries and the exits.
    pub fn figures(&self, command: &str, guest_outcome: &str) -> Map<String, Value> {
        let mut map = Map::new();
        for s in &self.summaries {
            let name = s.variant.name();
            if let Some(r) = s.p50_ratio {
                map.insert(
                    format!("{REPORT_PREFIX}_{name}_p50_ratio"),
                    json!(round3(r)),
                );
            }
            if let Some(r) = s.p99_ratio {
                map.insert(
                    format!("{REPORT_PREFIX}_{name}_p99_ratio"),
                    json!(round3(r)),
                );
            }
        }
        for (variant, groups) in &self.group_latency {
            for g in groups {
                for (q, v) in [("p50", g.p50_us), ("p99", g.p99_us)] {
                    if let Some(v) = v {
                        map.insert(
                            format!("{REPORT_PREFIX}_{}_rq_{}_{q}_us", variant.name(), g.group),
                            json!(v),
                        );
                    }
                }
            }
        }
        let p = &self.params;
        let variants: Map<String, Value> = self
            .summaries
            .iter()
            .map(|s| {
                let runs: Vec<Value> = self
                    .results
                    .runs
                    .iter()
                    .filter(|r| r.variant == s.variant)
                    .map(|r| {
                        json!({
                            "run": r.run,
                            "valid": r.valid,
                            "p50_us": r.p50_us,
                            "p99_us": r.p99_us,
                            "max_us": r.max_us,
                            "lat": r.lat,
                            "noise": r.noise,
                        })
                    })
                    .collect();
                (
                    s.variant.name().to_owned(),
                    json!({
                        "runs": runs,
                        "valid_runs": s.valid_runs,
                        "p50_us_median": s.p50_us,
                        "p99_us_median": s.p99_us,
                        "p50_ratio": s.p50_ratio.map(round3),
                        "p99_ratio": s.p99_ratio.map(round3),
                        "p50_ratio_range": s.p50_ratio_range.map(|(a, b)| [round3(a), round3(b)]),
                        "p99_ratio_range": s.p99_ratio_range.map(|(a, b)| [round3(a), round3(b)]),
                        "lat_cpus": s.lat_cpus,
                        "noise_cpus": s.noise_cpus,
                        "runqueue_latency": self.group_latency.iter()
                            .find(|(v, _)| *v == s.variant)
                            .map(|(_, gs)| gs.iter().map(|g| json!({
                                "group": g.group, "cpus": g.cpus, "runs": g.runs,
                                "p50_us": g.p50_us, "p99_us": g.p99_us,
                            })).collect::<Vec<_>>()),
                    }),
                )
            })
            .collect();
        map.insert(
            REPORT_PREFIX.to_owned(),
            json!({
                "command": command,
                "guest": "2 vCPUs, qemu multi-threaded TCG",
                "guest_outcome": guest_outcome,
                "params": {
                    "runs": p.runs,
                    "samples": p.samples,
                    "burst_us": p.burst_us,
                    "mean_gap_us": p.mean_gap_us,
                    "noise_threads": p.noise_threads,
                    "smoke": p.smoke,
                },
                "calibration": self.results.calibration,
                "variants": variants,
                "scheduler_exits": self.results.exits.iter().map(|e| json!({
                    "variant": e.variant, "run": e.run, "message": e.message,
                })).collect::<Vec<_>>(),
                "failures": self.results.failures.iter().map(|f| json!({
                    "variant": f.variant, "run": f.run, "why": f.why,
                })).collect::<Vec<_>>(),
            }),
        );
        map
    }

    /// The closing table.
    pub fn table(&self) -> String {
        let p = &self.params;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "isolation: 2 vCPUs (multi-threaded TCG), {} run(s) of {} samples per variant; \
             bursts of {} µs CPU, mean gap {} ms (exponential); noise {} spinning threads",
            p.runs,
            p.samples,
            p.burst_us,
            p.mean_gap_us / 1000,
            p.noise_threads
        );
        let _ = writeln!(
            out,
            "{:<16} {:>5} {:>10} {:>10} {:>20} {:>20}  {:<8} {:<8}",
            "variant", "runs", "p50 µs", "p99 µs", "p50/solo", "p99/solo", "lat cpu", "noise cpu"
        );
        let fmt_us = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or("-".into());
        let fmt_ratio = |r: Option<f64>, range: Option<(f64, f64)>| match (r, range) {
            (Some(r), Some((lo, hi))) => format!("{r:.2} ({lo:.2}-{hi:.2})"),
            (Some(r), None) => format!("{r:.2}"),
            _ => "-".into(),
        };
        let fmt_cpus = |c: &[u64]| {
            if c.is_empty() {
                "-".to_owned()
            } else {
                c.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            }
        };
        for s in &self.summaries {
            let _ = writeln!(
                out,
                "{:<16} {:>5} {:>10} {:>10} {:>20} {:>20}  {:<8} {:<8}",
                s.variant.name(),
                format!("{}/{}", s.valid_runs, s.runs),
                fmt_us(s.p50_us),
                fmt_us(s.p99_us),
                fmt_ratio(s.p50_ratio, s.p50_ratio_range),
                fmt_ratio(s.p99_ratio, s.p99_ratio_range),
                fmt_cpus(&s.lat_cpus),
                fmt_cpus(&s.noise_cpus),
            );
        }
        let _ = writeln!(
            out,
            "ratios: median run over solo's median run; in brackets the range over runs"
        );
        out
    }
}

impl Report {
    fn summary(&self, v: Variant) -> Option<&VariantSummary> {
        self.summaries.iter().find(|s| s.variant == v)
    }

    /// The valid run whose p99 is the median of the variant's runs: the one plotted.
    pub fn median_run(&self, v: Variant) -> Option<&RunRecord> {
        let mut runs: Vec<&RunRecord> = self
            .results
            .runs
            .iter()
            .filter(|r| r.variant == v && r.valid)
            .collect();
        runs.sort_by(|a, b| a.p99_us.total_cmp(&b.p99_us));
        runs.get(runs.len().saturating_sub(1) / 2).copied()
    }

    /// The goals of the issue on the scheduler, judged on this run, with their margins.
    pub fn goal_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let ratio = |v: Variant, p99: bool| {
            self.summary(v)
                .and_then(|s| if p99 { s.p99_ratio } else { s.p50_ratio })
        };
        let judge = |met: bool| if met { "**met**" } else { "**missed**" };
        for corral in [Variant::CorralMapped, Variant::CorralUnmapped] {
            let name = corral.name();
            for (p99, goal) in [(false, 1.05), (true, 1.2)] {
                let q = if p99 { "p99" } else { "p50" };
                out.push(match ratio(corral, p99) {
                    Some(r) => format!(
                        "- {name}: {q} ≤ {goal}× solo: {} ({r:.2}×, {:+.0}% against the goal)",
                        judge(r <= goal),
                        (r / goal - 1.0) * 100.0
                    ),
                    None => format!("- {name}: {q} ≤ {goal}× solo: not measured"),
                });
            }
            let peers: [(Variant, &str, &[bool]); 3] = [
                (
                    Variant::Cpuset,
                    "at least as good as cpuset",
                    &[false, true],
                ),
                (Variant::Eevdf, "better than EEVDF", &[false, true]),
                (Variant::Layered, "better than scx_layered", &[true]),
            ];
            for (peer, what, quantiles) in peers {
                for &p99 in quantiles {
                    let q = if p99 { "p99" } else { "p50" };
                    let line = match (ratio(corral, p99), ratio(peer, p99)) {
                        (Some(c), Some(o)) => {
                            let met = if peer == Variant::Cpuset {
                                c <= o
                            } else {
                                c < o
                            };
                            format!(
                                "- {name}: {what} at {q}: {} ({c:.3}× against {o:.3}×)",
                                judge(met)
                            )
                        }
                        _ => format!("- {name}: {what} at {q}: not measured"),
                    };
                    out.push(line);
                }
            }
        }
        let exits = self.results.exits.len();
        out.push(format!(
            "- zero scheduler exits: {} ({exits} exit(s) during runs)",
            judge(exits == 0)
        ));
        out
    }

    /// The generated Markdown: figures, goals, run-queue latency per group, the charts.
    pub fn markdown(&self, command: &str, charts: &[(String, String)]) -> String {
        let p = &self.params;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Command: `{command}`. One 2-vCPU guest (qemu multi-threaded TCG), {} runs × {} \
             samples per variant; bursts of {} µs CPU, mean gap {} ms (exponential); noise {} \
             spinning threads. Ratios: the median run's figure over solo's median, the range \
             of the runs' ratios in brackets.\n",
            p.runs,
            p.samples,
            p.burst_us,
            p.mean_gap_us / 1000,
            p.noise_threads
        );
        let _ = writeln!(
            out,
            "| variant | runs | p50 | p99 | p50 / solo | p99 / solo | noise ran on |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.2} ms", v / 1e3));
        let ratio = |r: Option<f64>, range: Option<(f64, f64)>| match (r, range) {
            (Some(r), Some((lo, hi))) => format!("{r:.2} ({lo:.2}–{hi:.2})"),
            (Some(r), None) => format!("{r:.2}"),
            _ => "–".to_owned(),
        };
        for s in &self.summaries {
            let noise = if s.noise_cpus.is_empty() {
                "–".to_owned()
            } else {
                let cpus: Vec<String> = s.noise_cpus.iter().map(u64::to_string).collect();
                format!("CPU {}", cpus.join(", "))
            };
            let _ = writeln!(
                out,
                "| `{}` | {}/{} | {} | {} | {} | {} | {noise} |",
                s.variant.name(),
                s.valid_runs,
                s.runs,
                ms(s.p50_us),
                ms(s.p99_us),
                ratio(s.p50_ratio, s.p50_ratio_range),
                ratio(s.p99_ratio, s.p99_ratio_range),
            );
        }
        let _ = writeln!(out, "\nGoals:\n");
        for line in self.goal_lines() {
            let _ = writeln!(out, "{line}");
        }
        if !self.group_latency.is_empty() {
            let _ = writeln!(
                out,
                "\nRun-queue latency per group (enqueue to running, from corral's in-kernel log2 \
                 histograms over the variant's runs; bucket upper bounds):\n"
            );
            let _ = writeln!(out, "| variant | group | CPUs | runs | p50 | p99 |");
            let _ = writeln!(out, "|---|---|---|---|---|---|");
            let us = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0} µs"));
            for (v, groups) in &self.group_latency {
                for g in groups {
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | {} | {} | {} | {} |",
                        v.name(),
                        g.group,
                        g.cpus,
                        g.runs,
                        us(g.p50_us),
                        us(g.p99_us)
                    );
                }
            }
        }
        if !charts.is_empty() {
            let _ = writeln!(out);
            for (alt, path) in charts {
                let _ = writeln!(out, "![{alt}]({path})");
            }
        }
        out
    }

    /// Draws the charts into `dir`: the response-time CDF of each variant's median run, and the
    /// ratios to solo. Returns `(alt text, file name)` of each.
    pub fn plots(&self, dir: &std::path::Path) -> Result<Vec<(String, String)>> {
        use super::plot::{self, Panel, Series};
        let series: Vec<Series> = self
            .summaries
            .iter()
            .filter_map(|s| {
                let run = self.median_run(s.variant)?;
                let cdf = run.lat["cdf_us"].as_array()?;
                let points = cdf
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some((v.as_f64()? / 1e3, (i + 1) as f64)))
                    .collect();
                Some(Series {
                    name: format!("{} (run {})", s.variant.name(), run.run),
                    points,
                })
            })
            .collect();
        let mut charts = Vec::new();
        if !series.is_empty() {
            let file = "isolation_cdf.svg";
            plot::cdf(
                &dir.join(file),
                "Response time of the latency function, median run per variant",
                "response time (ms)",
                &series,
            )?;
            charts.push((
                "Response-time CDF per isolation variant".to_owned(),
                file.to_owned(),
            ));
        }
        let panel = |p99: bool| Panel {
            title: format!("{} / solo", if p99 { "p99" } else { "p50" }),
            y_label: "ratio to solo".to_owned(),
            bars: self
                .summaries
                .iter()
                .filter_map(|s| {
                    let r = if p99 { s.p99_ratio } else { s.p50_ratio }?;
                    Some((s.variant.name().to_owned(), r))
                })
                .collect(),
            log: false,
            lines: vec![(
                if p99 { 1.2 } else { 1.05 },
                format!("goal for corral: ≤ {}", if p99 { "1.2" } else { "1.05" }),
            )],
        };
        let file = "isolation_ratios.svg";
        plot::bars(&dir.join(file), &[panel(false), panel(true)])?;
        charts.push((
            "Ratios to solo per isolation variant".to_owned(),
            file.to_owned(),
        ));
        Ok(charts)
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The guest script for `params`.
pub fn guest_script(params: &Params) -> String {
    let variants: Vec<&str> = params.variants.iter().map(|v| v.name()).collect();
    SCRIPT
        .replace("@RUNS@", &params.runs.to_string())
        .replace("@SAMPLES@", &params.samples.to_string())
        .replace("@GAP_US@", &params.mean_gap_us.to_string())
        .replace("@BURST_US@", &params.burst_us.to_string())
        .replace("@NOISE_THREADS@", &params.noise_threads.to_string())
        .replace("@VARIANTS@", &variants.join(" "))
}

/// Runs the benchmark: boots the guest with `binaries` (corral, corral-lat, and scx_layered
/// when the layered variant runs), writes the report and prints the table. Returns the exit
/// status: 0 only when every variant ran every run with its scheduler attached throughout.
pub fn run(kernel: &VmKernel, binaries: &[PathBuf], params: &Params) -> Result<i32> {
    if !params.variants.contains(&Variant::Solo) {
        bail!("the isolation benchmark needs the solo variant: every ratio is to solo");
    }
    for needed in ["corral", "corral-lat"] {
        if !binaries
            .iter()
            .any(|b| b.file_name().is_some_and(|n| n == needed))
        {
            bail!("the isolation benchmark needs the `{needed}` binary; the build made none");
        }
    }
    let dir = super::bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("isolation.sh");
    std::fs::write(&script, guest_script(params))
        .with_context(|| format!("writing {}", script.display()))?;
    let names: Vec<&str> = params.variants.iter().map(|v| v.name()).collect();
    eprintln!(
        "bench isolation: {} variants ({}) x {} run(s) x {} samples in one 2-vCPU guest \
         (multi-threaded TCG); about {} minutes. Progress lines start with `bench:`.",
        params.variants.len(),
        names.join(", "),
        params.runs,
        params.samples,
        params.estimate().as_secs().div_ceil(60)
    );
    let spec = GuestSpec {
        binaries: binaries.to_vec(),
        command: GuestCommand::Script(script),
        env: Vec::new(),
    };
    let opts = VmOptions {
        smp: 2,
        memory: "2G".into(),
        timeout: params.timeout,
        echo: true,
        mttcg: true,
        boot_retries: 1,
        ..VmOptions::default()
    };
    let guest = vm::run(kernel, &spec, &opts)?;
    let results = parse_console(&guest.console)?;
    let report = Report::new(params, results);
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let path = if params.smoke {
        dir.join("report.smoke.json")
    } else {
        super::report_path()
    };
    super::merge_report(
        &path,
        REPORT_PREFIX,
        report.figures(&command, &guest.outcome.to_string()),
    )?;
    println!("\n{}", report.table());
    println!("bench isolation: figures written to {}", path.display());
    if !params.smoke {
        let dir = super::plot::dir();
        let charts = report.plots(&dir)?;
        let charts: Vec<(String, String)> = charts
            .into_iter()
            .map(|(alt, file)| (alt, format!("bench/{file}")))
            .collect();
        let doc = super::host::doc_path();
        let text =
            std::fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
        let text = super::host::splice(
            &text,
            "isolation-bench",
            &report.markdown(&command, &charts),
        );
        std::fs::write(&doc, text).with_context(|| format!("writing {}", doc.display()))?;
        println!(
            "bench isolation: charts in {}, {} regenerated (section isolation-bench)",
            dir.display(),
            doc.display()
        );
        for line in report.goal_lines() {
            println!("bench: goal {}", line.trim_start_matches("- "));
        }
    }
    let mut problems = report.problems();
    if !guest.outcome.success() {
        problems.insert(0, format!("the guest: {}", guest.outcome));
    }
    if problems.is_empty() {
        return Ok(0);
    }
    eprintln!("bench isolation: FAILED:");
    for p in &problems {
        eprintln!("  - {p}");
    }
    Ok(1)
}

/// The guest side, run by busybox sh. `@…@` are filled in by [`guest_script`].
const SCRIPT: &str = r#"# cargo xtask bench isolation: the guest side (generated from xtask/src/bench/isolation.rs).
set -u
CG=/sys/fs/cgroup
LAT=$CG/bench-lat
NOISE=$CG/bench-noise
OUT=/tmp/bench
RUNS=@RUNS@
SAMPLES=@SAMPLES@
GAP_US=@GAP_US@
BURST_US=@BURST_US@
NOISE_THREADS=@NOISE_THREADS@
VARIANTS="@VARIANTS@"
FAILED=0
SPID=""
SLOG=""
mkdir -p $OUT

say() { echo "bench: $*"; }
state() { cat /sys/kernel/sched_ext/state 2>/dev/null || echo missing; }
enable_seq() { cat /sys/kernel/sched_ext/enable_seq 2>/dev/null || echo 0; }
# fail <variant> <run> <why>: this run could not be measured; the host fails the bench.
fail() { echo "CORRAL-BENCH-FAIL $1 $2 $3"; FAILED=1; }

# wait_state <state> <seconds> [pid]: until sched_ext reads <state>; fails on timeout, or when
# <pid> exits first.
wait_state() {
    n=0
    while [ "$(state)" != "$1" ]; do
        if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
        n=$((n + 1))
        [ $n -gt $(($2 * 10)) ] && return 1
        sleep 0.1
    done
}

# empty <cgroup>: kill everything in it at once (cgroup.kill), wait until it is empty, remove it.
empty() {
    [ -d "$1" ] || return 0
    echo 1 > "$1/cgroup.kill"
    n=0
    while [ -n "$(cat "$1/cgroup.procs")" ]; do
        n=$((n + 1))
        if [ $n -gt 100 ]; then
            say "processes survive cgroup.kill in $1: $(tr '\n' ' ' < "$1/cgroup.procs")"
            return 1
        fi
        sleep 0.1
    done
    rmdir "$1"
}

# in_cgroup <cgroup> <command...>: run the command as a member of the cgroup.
in_cgroup() {
    cg=$1
    shift
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"
}

# exit_record <variant> <run> <why>: what the scheduler left behind, for the report.
exit_record() {
    echo "CORRAL-BENCH-EXIT $1 $2 $3"
    tail -n 4 "$SLOG" | while read -r l; do echo "CORRAL-BENCH-EXIT $1 $2 log: $l"; done
    dmesg | grep -i sched_ext | tail -n 4 | while read -r l; do echo "CORRAL-BENCH-EXIT $1 $2 dmesg: $l"; done
}

# start_sched <variant> <run> <log> <command...>: start a scheduler in the background and wait
# until sched_ext is enabled (and, for corral, its groups are published).
start_sched() {
    v=$1; r=$2; SLOG=$3
    shift 3
    "$@" > "$SLOG" 2>&1 &
    SPID=$!
    if ! wait_state enabled 120 $SPID; then
        fail $v $r "the scheduler did not attach (state $(state)): $(tail -n 3 "$SLOG" | tr '\n' ' ')"
        stop_sched $v $r
        return 1
    fi
    case $v in corral_*)
        n=0
        until grep -q "scheduler attached" "$SLOG"; do
            n=$((n + 1))
            if [ $n -gt 300 ] || ! kill -0 $SPID 2>/dev/null; then
                fail $v $r "corral sched did not publish its groups: $(tail -n 3 "$SLOG" | tr '\n' ' ')"
                stop_sched $v $r
                return 1
            fi
            sleep 0.1
        done ;;
    esac
    say "$v: $(cat /sys/kernel/sched_ext/root/ops 2>/dev/null) attached"
}

# stop_sched <variant> <run>: stop the scheduler and wait for sched_ext to read disabled.
stop_sched() {
    [ -n "$SPID" ] || return 0
    kill -INT $SPID 2>/dev/null
    n=0
    while kill -0 $SPID 2>/dev/null; do
        n=$((n + 1))
        [ $n -eq 300 ] && { say "the scheduler ignores SIGINT; killing it"; kill -KILL $SPID; }
        sleep 0.1
    done
    wait $SPID 2>/dev/null
    SPID=""
    if ! wait_state disabled 60; then
        fail $1 $2 "sched_ext reads $(state), not disabled, after the scheduler stopped"
        return 1
    fi
}

# dump_maps <variant> <phase>: corral's maps and statistics, for the per-group run-queue latency.
dump_maps() {
    if corral maps dump --json --pin-dir $PIN > $OUT/maps.json 2> $OUT/maps.err; then
        echo "CORRAL-BENCH-GROUPS $1 $2 $(tr -d '\n' < $OUT/maps.json)"
    else
        say "$1: cannot dump corral's maps: $(head -c 300 $OUT/maps.err)"
    fi
}

# begin_variant <variant>: start the variant's scheduler, if it has one, once for all its runs
# (every attach and detach patches kernel text, where this kernel under multi-threaded TCG
# sometimes oopses, so they are kept few).
begin_variant() {
    v=$1
    PIN=/sys/fs/bpf/corral-bench-$v
    if [ "$(state)" != disabled ]; then
        fail $v 0 "sched_ext reads $(state) before the variant"
        return 1
    fi
    case $v in
        layered)
            start_sched $v 0 $OUT/layered.log scx_layered f:$OUT/layered.json ;;
        corral_mapped)
            start_sched $v 0 $OUT/corral-$v.log corral sched --config $OUT/corral-mapped.toml --pin-dir $PIN $NORESTART ;;
        corral_unmapped)
            start_sched $v 0 $OUT/corral-$v.log corral sched --config $OUT/corral-unmapped.toml --pin-dir $PIN $NORESTART ;;
    esac || return 1
    case $v in corral_*) dump_maps $v begin ;; esac
}

# end_variant <variant>: stop its scheduler and wait for sched_ext to read disabled.
end_variant() {
    case $1 in corral_*) [ -n "$SPID" ] && dump_maps $1 end ;; esac
    stop_sched $1 0
    rm -rf $PIN
}

# measure <variant> <run>: one run of one variant, from fresh cgroups to empty ones.
measure() {
    v=$1; r=$2
    say "$v: run $r/$RUNS"
    empty $NOISE; empty $LAT
    mkdir $LAT $NOISE
    if [ -n "$SPID" ] && { ! kill -0 $SPID 2>/dev/null || [ "$(state)" != enabled ]; }; then
        fail $v $r "its scheduler is no longer attached (sched_ext reads $(state))"
        return
    fi
    case $v in
        cpuset)
            if ! { echo 0 > $LAT/cpuset.cpus && echo 1 > $NOISE/cpuset.cpus; }; then
                fail $v $r "cannot write cpuset.cpus"
                return
            fi ;;
        corral_mapped)
            if ! { corral map $LAT 0 --pin-dir $PIN && corral map $NOISE 1 --pin-dir $PIN; } > $OUT/map.log 2>&1; then
                fail $v $r "corral map failed: $(tr '\n' ' ' < $OUT/map.log)"
                return
            fi ;;
        corral_unmapped)
            if ! corral map $LAT 0 --pin-dir $PIN > $OUT/map.log 2>&1; then
                fail $v $r "corral map failed: $(tr '\n' ' ' < $OUT/map.log)"
                return
            fi ;;
    esac
    seq_before=$(enable_seq)
    NPID=""
    if [ $v != solo ]; then
        # Not through in_cgroup: $! must be the process itself, which SIGTERM stops.
        sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' $NOISE corral-lat noise --threads $NOISE_THREADS > $OUT/noise.json 2>&1 &
        NPID=$!
        sleep 1
    fi
    in_cgroup $LAT corral-lat run --iters $ITERS --samples $SAMPLES --mean-gap-us $GAP_US > $OUT/lat.json 2> $OUT/lat.err
    lat_rc=$?
    noise_json=null
    if [ -n "$NPID" ]; then
        kill -TERM $NPID
        wait $NPID
        noise_json=$(cat $OUT/noise.json)
        [ -n "$noise_json" ] || noise_json=null
    fi
    valid=true
    if [ -n "$SPID" ]; then
        if ! kill -0 $SPID 2>/dev/null; then
            exit_record $v $r "the scheduler process exited during the run"; valid=false
        elif [ "$(state)" != enabled ]; then
            exit_record $v $r "sched_ext reads $(state) after the run"; valid=false
        elif [ "$(enable_seq)" != "$seq_before" ] || grep -q "exited on its own" "$SLOG"; then
            exit_record $v $r "the scheduler exited and was attached again during the run"; valid=false
        fi
        [ $valid = true ] || FAILED=1
    fi
    if [ $lat_rc -eq 0 ]; then
        echo "CORRAL-BENCH-RUN {\"variant\":\"$v\",\"run\":$r,\"valid\":$valid,\"lat\":$(cat $OUT/lat.json),\"noise\":$noise_json}"
    else
        fail $v $r "corral-lat exited with $lat_rc: $(head -c 300 $OUT/lat.err)"
    fi
    empty $NOISE; empty $LAT
}

# No [host] table: the groups reserve both CPUs, so the host group defaults to both, yielding
# to the groups there.
cat > $OUT/corral-mapped.toml <<'EOF'
[[groups]]
name = "lat"
cpus = "0"

[[groups]]
name = "noise"
cpus = "1"
EOF
cat > $OUT/corral-unmapped.toml <<'EOF'
[[groups]]
name = "lat"
cpus = "0"

[host]
cpus = "1"
EOF
cat > $OUT/layered.json <<'EOF'
[
  {
    "name": "lat",
    "comment": "the latency function's cgroup, confined to one CPU, the lowest (CPU 0)",
    "matches": [[{ "CgroupPrefix": "bench-lat/" }]],
    "kind": { "Confined": { "util_range": [0.0, 1.0], "cpus_range": [1, 1], "growth_algo": "Linear" } }
  },
  {
    "name": "noise",
    "comment": "the noise cgroup, confined to one CPU, the highest (CPU 1)",
    "matches": [[{ "CgroupPrefix": "bench-noise/" }]],
    "kind": { "Confined": { "util_range": [0.0, 1.0], "cpus_range": [1, 1], "growth_algo": "Reverse" } }
  },
  {
    "name": "rest",
    "comment": "everything else",
    "matches": [[]],
    "kind": { "Open": {} }
  }
]
EOF

# An exit must end the variant (and be reported), not be reattached behind the bench's back.
NORESTART=--no-restart
case " $VARIANTS " in *" layered "*)
    command -v scx_layered > /dev/null || { fail setup 0 "scx_layered is not in the guest"; exit 1; } ;;
esac
[ "$(nproc)" = 2 ] || { fail setup 0 "the guest has $(nproc) CPUs, not 2"; exit 1; }
[ "$(state)" = disabled ] || { fail setup 0 "sched_ext reads $(state) at the start"; exit 1; }

mkdir -p $LAT
CAL=$(in_cgroup $LAT corral-lat calibrate --burst-us $BURST_US)
rmdir $LAT
echo "CORRAL-BENCH-CALIBRATION $CAL"
ITERS=$(echo "$CAL" | sed -n 's/.*"iters":\([0-9]*\).*/\1/p')
[ -n "$ITERS" ] || { fail setup 0 "calibration gave no iteration count: $CAL"; exit 1; }
say "a burst of $BURST_US µs CPU is $ITERS iterations; $RUNS run(s) each of: $VARIANTS"

for v in $VARIANTS; do
    if begin_variant $v; then
        r=1
        while [ $r -le $RUNS ]; do
            measure $v $r
            r=$((r + 1))
        done
    fi
    end_variant $v
done
echo "CORRAL-BENCH-DONE"
exit $FAILED
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn run_line(variant: &str, run: u32, valid: bool, p50: f64, p99: f64) -> String {
        format!(
            "CORRAL-BENCH-RUN {{\"variant\":\"{variant}\",\"run\":{run},\"valid\":{valid},\
             \"lat\":{{\"samples\":500,\"p50_us\":{p50},\"p99_us\":{p99},\"max_us\":{},\"cpus\":[0]}},\
             \"noise\":{}}}",
            p99 + 1.0,
            if variant == "solo" {
                "null".to_owned()
            } else {
                "{\"cpus\":[1]}".to_owned()
            }
        )
    }

    fn params(variants: Vec<Variant>, runs: u32) -> Params {
        Params {
            runs,
            variants,
            ..Params::full()
        }
    }

    /// The median of an odd count is the middle value, of an even count the mean of the two
    /// middle values, whatever the order; an empty list has none.
    #[test]
    fn median_is_the_middle_run() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }

    /// Ratios are the variant's median run over solo's median run, p50 and p99 separately,
    /// with the range of the runs; a kernel line before a marker does not hide it.
    #[test]
    fn ratios_are_median_runs_over_solo() {
        let lines = vec![
            "CORRAL-BENCH-CALIBRATION {\"burst_us\":3000,\"iters\":100}".to_owned(),
            run_line("solo", 1, true, 100.0, 200.0),
            run_line("solo", 2, true, 110.0, 180.0),
            run_line("solo", 3, true, 90.0, 220.0),
            run_line("cpuset", 1, true, 120.0, 400.0),
            format!(
                "[   12.5] some kernel line {}",
                run_line("cpuset", 2, true, 100.0, 300.0)
            ),
            run_line("cpuset", 3, true, 150.0, 500.0),
            "CORRAL-BENCH-DONE".to_owned(),
        ];
        let results = parse_console(&lines).unwrap();
        let report = Report::new(&params(vec![Variant::Solo, Variant::Cpuset], 3), results);
        let cpuset = &report.summaries[1];
        assert_eq!(cpuset.p50_us, Some(120.0));
        assert_eq!(cpuset.p50_ratio, Some(1.2));
        assert_eq!(cpuset.p99_ratio, Some(2.0));
        assert_eq!(cpuset.p50_ratio_range, Some((1.0, 1.5)));
        assert_eq!(cpuset.p99_ratio_range, Some((1.5, 2.5)));
        assert_eq!(cpuset.noise_cpus, vec![1]);
        assert_eq!(report.summaries[0].p50_ratio, Some(1.0));
        assert!(report.problems().is_empty(), "{:?}", report.problems());

        let figures = report.figures("cargo xtask bench isolation", "ok");
        assert_eq!(figures["isolation_cpuset_p50_ratio"], json!(1.2));
        assert_eq!(figures["isolation_cpuset_p99_ratio"], json!(2.0));
        assert_eq!(figures["isolation_solo_p99_ratio"], json!(1.0));
        let raw = &figures["isolation"]["variants"]["cpuset"]["runs"];
        assert_eq!(raw.as_array().unwrap().len(), 3);
        assert_eq!(raw[1]["p99_us"], json!(300.0));
        assert_eq!(figures["isolation"]["calibration"]["iters"], json!(100));
        assert!(
            report.table().contains("1.20 (1.00-1.50)"),
            "{}",
            report.table()
        );
    }

    /// Run-queue latency per group is the difference of the histograms dumped at the
    /// variant's start and end, read as bucket upper bounds; it lands in the report and the
    /// generated Markdown.
    #[test]
    fn group_latency_is_the_histogram_difference_over_the_variant() {
        let dump = |lat0: &str, host: &str| {
            format!(
                "{{\"groups\":[{{\"id\":0,\"cpus\":\"0\"}}],\"host_cpus\":\"1\",\"stats\":[\
                 {{\"group\":0,\"histogram\":{lat0}}},{{\"group\":null,\"histogram\":{host}}}]}}"
            )
        };
        let lines = vec![
            run_line("solo", 1, true, 100.0, 200.0),
            format!(
                "CORRAL-BENCH-GROUPS corral_unmapped begin {}",
                dump("[[2048,5]]", "[]")
            ),
            run_line("corral_unmapped", 1, true, 100.0, 200.0),
            // 100 more runs in group 0: 98 at ≤ 2 µs, 1 at ≤ 8 µs, 1 at ≤ 1 ms.
            format!(
                "CORRAL-BENCH-GROUPS corral_unmapped end {}",
                dump("[[2048,103],[8192,1],[1048576,1]]", "[[4096,10]]")
            ),
            "CORRAL-BENCH-DONE".to_owned(),
        ];
        let results = parse_console(&lines).unwrap();
        let report = Report::new(
            &params(vec![Variant::Solo, Variant::CorralUnmapped], 1),
            results,
        );
        let (v, groups) = &report.group_latency[0];
        assert_eq!(*v, Variant::CorralUnmapped);
        assert_eq!(groups[0].group, "g0");
        assert_eq!(groups[0].cpus, "0");
        assert_eq!(groups[0].runs, 100);
        assert_eq!(groups[0].p50_us, Some(2.048));
        assert_eq!(groups[0].p99_us, Some(8.192));
        assert_eq!(groups[1].group, "host");
        assert_eq!(groups[1].cpus, "1");
        assert_eq!(groups[1].p99_us, Some(4.096));
        let figures = report.figures("x", "ok");
        assert_eq!(
            figures["isolation_corral_unmapped_rq_g0_p99_us"],
            json!(8.192)
        );
        assert_eq!(
            figures["isolation_corral_unmapped_rq_host_p50_us"],
            json!(4.096)
        );
        let md = report.markdown("cargo xtask bench isolation", &[]);
        assert!(
            md.contains("| `corral_unmapped` | g0 | 0 | 100 | 2 µs | 8 µs |"),
            "{md}"
        );
    }

    /// Goals are judged per corral variant with their margins; a peer that did not run is
    /// "not measured", never met.
    #[test]
    fn goals_are_judged_against_solo_and_the_peers() {
        let lines = vec![
            run_line("solo", 1, true, 100.0, 200.0),
            run_line("cpuset", 1, true, 100.0, 220.0),
            run_line("eevdf", 1, true, 150.0, 300.0),
            run_line("corral_mapped", 1, true, 104.0, 260.0),
            "CORRAL-BENCH-DONE".to_owned(),
        ];
        let report = Report::new(
            &params(
                vec![
                    Variant::Solo,
                    Variant::Eevdf,
                    Variant::Cpuset,
                    Variant::CorralMapped,
                ],
                1,
            ),
            parse_console(&lines).unwrap(),
        );
        let goals = report.goal_lines().join("\n");
        assert!(
            goals.contains("corral_mapped: p50 ≤ 1.05× solo: **met** (1.04×"),
            "{goals}"
        );
        assert!(
            goals.contains("corral_mapped: p99 ≤ 1.2× solo: **missed** (1.30×, +8%"),
            "{goals}"
        );
        assert!(goals.contains("corral_mapped: at least as good as cpuset at p99: **missed** (1.300× against 1.100×)"), "{goals}");
        assert!(
            goals.contains("corral_mapped: better than EEVDF at p50: **met**"),
            "{goals}"
        );
        assert!(
            goals.contains("corral_mapped: better than scx_layered at p99: not measured"),
            "{goals}"
        );
        assert!(
            goals.contains("corral_unmapped: p50 ≤ 1.05× solo: not measured"),
            "{goals}"
        );
        assert!(goals.contains("zero scheduler exits: **met**"), "{goals}");
    }

    /// The charts are drawn from the median run's CDF and the ratios, and named in Markdown.
    #[test]
    fn plots_draw_the_median_runs_cdf_and_the_ratios() {
        let cdf: Vec<String> = (1..=100).map(|p| format!("{}.0", p * 10)).collect();
        let line = |variant: &str, run: u32, p99: f64| {
            run_line(variant, run, true, 100.0, p99).replace(
                "\"cpus\":[0]",
                &format!("\"cpus\":[0],\"cdf_us\":[{}]", cdf.join(",")),
            )
        };
        let lines = vec![
            line("solo", 1, 200.0),
            line("solo", 2, 300.0),
            line("solo", 3, 250.0),
            "CORRAL-BENCH-DONE".to_owned(),
        ];
        let report = Report::new(
            &params(vec![Variant::Solo], 3),
            parse_console(&lines).unwrap(),
        );
        assert_eq!(report.median_run(Variant::Solo).map(|r| r.run), Some(3));
        let dir = std::env::temp_dir().join(format!("corral-iso-plots-{}", std::process::id()));
        let charts = report.plots(&dir).unwrap();
        let names: Vec<&str> = charts.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(names, ["isolation_cdf.svg", "isolation_ratios.svg"]);
        let svg = std::fs::read_to_string(dir.join("isolation_cdf.svg")).unwrap();
        assert!(
            svg.contains("solo (run 3)"),
            "the legend names the median run"
        );
        let md = report.markdown("c", &[("CDF".into(), "bench/isolation_cdf.svg".into())]);
        assert!(md.contains("![CDF](bench/isolation_cdf.svg)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A scheduler that exits during a run is recorded in the report, its run is left out of
    /// the medians, and the bench fails; so does a variant that could not run at all. Nothing
    /// is skipped silently.
    #[test]
    fn scheduler_exits_and_failures_fail_the_bench_and_are_recorded() {
        let lines = vec![
            run_line("solo", 1, true, 100.0, 200.0),
            run_line("corral_mapped", 1, false, 900.0, 9000.0),
            "CORRAL-BENCH-EXIT corral_mapped 1 the scheduler process exited during the run"
                .to_owned(),
            "CORRAL-BENCH-EXIT corral_mapped 1 dmesg: sched_ext: BPF scheduler \"corral\" errored"
                .to_owned(),
            "CORRAL-BENCH-FAIL layered 1 the scheduler did not attach (state disabled)".to_owned(),
            "CORRAL-BENCH-DONE".to_owned(),
        ];
        let results = parse_console(&lines).unwrap();
        let report = Report::new(
            &params(
                vec![Variant::Solo, Variant::Layered, Variant::CorralMapped],
                1,
            ),
            results,
        );
        let mapped = &report.summaries[2];
        assert_eq!((mapped.runs, mapped.valid_runs), (1, 0));
        assert_eq!(mapped.p50_ratio, None);
        let problems = report.problems().join("\n");
        assert!(
            problems.contains("layered run 1: could not run"),
            "{problems}"
        );
        assert!(
            problems.contains("corral_mapped run 1: the scheduler exited"),
            "{problems}"
        );
        assert!(problems.contains("errored"), "{problems}");
        assert!(
            problems.contains("layered: 0 of 1 runs valid"),
            "{problems}"
        );

        let figures = report.figures("cmd", "ok");
        assert!(!figures.contains_key("isolation_corral_mapped_p50_ratio"));
        let exits = figures["isolation"]["scheduler_exits"].as_array().unwrap();
        assert_eq!(exits.len(), 1);
        assert!(exits[0]["message"].as_str().unwrap().contains("dmesg"));
        assert_eq!(figures["isolation"]["failures"][0]["variant"], "layered");
    }

    /// A guest that stops before the end, or a marker line that does not parse, is a failure.
    #[test]
    fn truncated_or_garbled_guest_output_fails() {
        let report = Report::new(
            &params(vec![Variant::Solo], 1),
            parse_console(&[run_line("solo", 1, true, 1.0, 2.0)]).unwrap(),
        );
        assert!(report
            .problems()
            .iter()
            .any(|p| p.contains("did not reach its end")));
        assert!(parse_console(&["CORRAL-BENCH-RUN {\"variant\":".to_owned()]).is_err());
        assert!(parse_console(&[run_line("bogus", 1, true, 1.0, 2.0)]).is_err());
    }

    /// The script gets the parameters, and the smoke size leaves out scx_layered and EEVDF.
    #[test]
    fn guest_script_carries_the_parameters() {
        let smoke = Params::smoke();
        let script = guest_script(&smoke);
        assert!(script.contains("SAMPLES=100\n"));
        assert!(script.contains("RUNS=1\n"));
        assert!(script.contains("VARIANTS=\"solo cpuset corral_mapped corral_unmapped\""));
        for placeholder in [
            "@RUNS@",
            "@SAMPLES@",
            "@GAP_US@",
            "@BURST_US@",
            "@NOISE_THREADS@",
            "@VARIANTS@",
        ] {
            assert!(
                !script.contains(placeholder),
                "{placeholder} was left unfilled"
            );
        }
        assert!(!smoke.variants.contains(&Variant::Layered));
        let full = guest_script(&Params::full());
        assert!(
            full.contains("VARIANTS=\"solo eevdf cpuset layered corral_mapped corral_unmapped\"")
        );
    }
}
