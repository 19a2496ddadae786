//! The host parts of `cargo xtask bench`: enforcement latency (`corral bench enforce`) and
//! invocation overhead against a lock-based baseline (`corral bench invoke`), run on this
//! machine with the binaries the plan built, collected into the report with the machine and
//! the command, judged against the goals, and written into `docs/benchmarks.md`.
//!
//! Each figure lands in the report as one object under its stable key: `p50`/`p99` (latency)
//! or `value` (rate), `unit`, `samples`, `machine` and `command`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// A host part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `corral bench enforce`.
    Enforce,
    /// `corral bench invoke`.
    Invoke,
}

impl Part {
    /// The `corral bench` subcommand.
    pub fn name(self) -> &'static str {
        match self {
            Part::Enforce => "enforce",
            Part::Invoke => "invoke",
        }
    }

    /// The report keys this part owns (by prefix).
    pub fn prefixes(self) -> &'static [&'static str] {
        match self {
            Part::Enforce => &["enforce_"],
            Part::Invoke => &["invoke_", "baseline_invoke_", "floor_"],
        }
    }

    /// `corral bench` arguments, full size or quick.
    pub fn args(self, quick: bool) -> Vec<String> {
        let a: &[&str] = match (self, quick) {
            (Part::Enforce, false) => &["--ops", "10000", "--cpuset-ops", "10000"],
            (Part::Enforce, true) => &["--ops", "1000", "--cpuset-ops", "100"],
            (Part::Invoke, false) => &["--invocations", "20000", "--round-trips", "20000"],
            (Part::Invoke, true) => &[
                "--invocations",
                "1000",
                "--round-trips",
                "1000",
                "--functions",
                "10,100",
            ],
        };
        a.iter().map(|s| s.to_string()).collect()
    }
}

/// The machine a figure was measured on.
pub fn machine(place: &str) -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    json!({"cpus": cpus, "kernel": kernel, "where": place})
}

/// Runs `part` with `corral` and returns its figures as report entries (key → object).
pub fn run_part(corral: &Path, part: Part, quick: bool) -> Result<Map<String, Value>> {
    let out = crate::bench::bench_dir().join(format!("{}.json", part.name()));
    std::fs::create_dir_all(crate::bench::bench_dir())?;
    let mut cmd = Command::new(corral);
    cmd.args(["bench", part.name()])
        .args(part.args(quick))
        .arg("--json")
        .arg(&out);
    // As a developer would type it from the workspace root.
    let shown_out = out.strip_prefix(crate::workspace_root()).unwrap_or(&out);
    let shown = format!(
        "corral bench {} {} --json {}",
        part.name(),
        part.args(quick).join(" "),
        shown_out.display()
    );
    eprintln!("bench: {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("running {}", corral.display()))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let figures: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", out.display()))?;
    let machine = machine("host");
    let mut map = Map::new();
    for mut f in figures {
        let key = f["key"]
            .as_str()
            .with_context(|| format!("a figure without a key in {}", out.display()))?
            .to_owned();
        if let Value::Object(o) = &mut f {
            o.remove("key");
            o.insert("machine".into(), machine.clone());
            o.insert("command".into(), json!(shown));
        }
        map.insert(key, f);
    }
    Ok(map)
}

fn num(report: &Map<String, Value>, key: &str, field: &str) -> Option<f64> {
    report.get(key)?.get(field)?.as_f64()
}

/// One goal's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The goal, in words.
    pub goal: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
    /// The measurement and by how much it is met or missed.
    pub detail: String,
}

fn verdict(goal: impl Into<String>, met: Option<bool>, detail: String) -> Verdict {
    Verdict {
        goal: goal.into(),
        met,
        detail,
    }
}

/// The host goals (issue "benchmarks"), judged on `report`.
pub fn goals(report: &Map<String, Value>) -> Vec<Verdict> {
    let mut out = Vec::new();
    let actor99 = num(report, "enforce_actor_bpf", "p99");
    let direct99 = num(report, "enforce_direct_bpf", "p99");
    let cpuset99 = num(report, "enforce_cpuset", "p99");
    out.push(match (actor99, direct99) {
        (Some(a), Some(d)) => verdict(
            "enforcement through the actor path: p99 ≤ 2.5× a direct map update's p99",
            Some(a <= 2.5 * d),
            format!("{a:.1} µs against {d:.1} µs: {:.2}×", a / d),
        ),
        _ => verdict(
            "enforcement: actor path against direct",
            None,
            "not measured".into(),
        ),
    });
    out.push(match (actor99, cpuset99) {
        (Some(a), Some(c)) => verdict(
            "enforcement through the actor path ≥ 500× faster than a loaded cpuset write at p99",
            Some(c >= 500.0 * a),
            format!("{c:.0} µs against {a:.1} µs: {:.0}×", c / a),
        ),
        _ => verdict(
            "enforcement: actor path against cpuset",
            None,
            "not measured".into(),
        ),
    });
    for (path, what) in [
        ("enforce_direct_bpf_mapped", "mapped cgroups"),
        ("enforce_actor_bpf_mapped", "mapped cgroups"),
        (
            "invoke_overhead_functions",
            "functions with a warm container each",
        ),
    ] {
        let series: Vec<(u64, f64)> = [10, 100, 1_000, 10_000]
            .into_iter()
            .filter_map(|n| Some((n, num(report, &format!("{path}_{n}"), "p50")?)))
            .collect();
        if let (Some(&(n0, a)), Some(&(n1, b))) = (series.first(), series.last()) {
            let steps: Vec<String> = series
                .iter()
                .map(|(n, v)| format!("{n}: {v:.2} µs"))
                .collect();
            out.push(verdict(
                format!(
                    "{path}_<n> flat in the number of {what} (p50 within 1.2× from {n0} to {n1})"
                ),
                Some(b <= 1.2 * a),
                format!("{}; {:.2}×", steps.join(", "), b / a),
            ));
        }
    }
    if let Some(o) = num(report, "invoke_overhead_c8", "p50") {
        out.push(verdict(
            "invocation overhead p50 ≤ 10 µs at concurrency 8",
            Some(o <= 10.0),
            format!("{o:.1} µs: {:.1}× the goal", o / 10.0),
        ));
    }
    for c in [1, 8, 64] {
        let (k, b) = (
            format!("invoke_overhead_c{c}"),
            format!("baseline_invoke_overhead_c{c}"),
        );
        if let (Some(x), Some(y)) = (num(report, &k, "p50"), num(report, &b, "p50")) {
            out.push(verdict(
                format!("overhead within 1.2× of the baseline at concurrency {c} (p50)"),
                Some(x <= 1.2 * y),
                format!("{x:.1} µs against {y:.1} µs: {:.1}×", x / y),
            ));
        }
        let (k, b) = (
            format!("invoke_throughput_c{c}"),
            format!("baseline_invoke_throughput_c{c}"),
        );
        if let (Some(x), Some(y)) = (num(report, &k, "value"), num(report, &b, "value")) {
            out.push(verdict(
                format!("throughput within 1.2× of the baseline at concurrency {c}"),
                Some(x * 1.2 >= y),
                format!("{x:.0}/s against {y:.0}/s: the baseline does {:.1}×", y / x),
            ));
        }
    }
    out
}

/// The generated Markdown for the host figures: a table per part and the goals.
pub fn markdown(report: &Map<String, Value>) -> String {
    let mut s = String::new();
    let mut commands = Vec::new();
    let _ = writeln!(s, "| key | what | p50 | p99 | samples |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for part in [Part::Enforce, Part::Invoke] {
        for (key, f) in report {
            if !part.prefixes().iter().any(|p| key.starts_with(p)) {
                continue;
            }
            let unit = f["unit"].as_str().unwrap_or("");
            let cell = |field: &str| {
                f.get(field)
                    .and_then(Value::as_f64)
                    .map_or("–".to_owned(), |v| format!("{v:.2} {unit}"))
            };
            let (a, b) = match f.get("value").and_then(Value::as_f64) {
                Some(v) => (format!("{v:.0} {unit}"), "–".to_owned()),
                None => (cell("p50"), cell("p99")),
            };
            let _ = writeln!(
                s,
                "| `{key}` | {} | {a} | {b} | {} |",
                f["what"].as_str().unwrap_or(""),
                f["samples"]
            );
            if let Some(c) = f["command"].as_str() {
                if !commands.contains(&c.to_owned()) {
                    commands.push(c.to_owned());
                }
            }
        }
    }
    let is_host = |key: &str| {
        [Part::Enforce, Part::Invoke]
            .iter()
            .any(|p| p.prefixes().iter().any(|x| key.starts_with(x)))
    };
    let machine = report
        .iter()
        .filter(|(k, _)| is_host(k))
        .find_map(|(_, f)| f.get("machine"))
        .map(|m| {
            format!(
                "{} CPUs, Linux {}, {}",
                m["cpus"],
                m["kernel"].as_str().unwrap_or("?"),
                m["where"].as_str().unwrap_or("?")
            )
        })
        .unwrap_or_default();
    let mut head = format!("Machine: {machine}. Commands (run by `cargo xtask bench`):\n\n");
    for c in &commands {
        let _ = writeln!(head, "- `{c}`");
    }
    head.push('\n');
    let mut goals = String::from("\nGoals:\n\n");
    for v in self::goals(report) {
        let mark = match v.met {
            Some(true) => "**met**",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(goals, "- {}: {mark} ({})", v.goal, v.detail);
    }
    head + &s + &goals
}

/// Draws the host ratios into `dir/host_ratios.svg` (logarithmic: they span five orders of
/// magnitude), each beside its goal. Returns `(alt text, file name)`, or `None` when no ratio
/// could be formed.
pub fn plots(report: &Map<String, Value>, dir: &Path) -> Result<Option<(String, String)>> {
    use super::plot::{self, Panel};
    let ratio =
        |a: (&str, &str), b: (&str, &str)| Some(num(report, a.0, a.1)? / num(report, b.0, b.1)?);
    let mut enforce = Vec::new();
    if let Some(r) = ratio(("enforce_actor_bpf", "p99"), ("enforce_direct_bpf", "p99")) {
        enforce.push(("actor / direct p99 (goal ≤ 2.5)".to_owned(), r));
    }
    if let Some(r) = ratio(("enforce_cpuset", "p99"), ("enforce_actor_bpf", "p99")) {
        enforce.push(("cpuset / actor p99 (goal ≥ 500)".to_owned(), r));
    }
    let mut invoke = Vec::new();
    for c in [1, 8, 64] {
        let (k, b) = (
            format!("invoke_overhead_c{c}"),
            format!("baseline_invoke_overhead_c{c}"),
        );
        if let Some(r) = ratio((&k, "p50"), (&b, "p50")) {
            invoke.push((format!("overhead c{c}"), r));
        }
    }
    for c in [1, 8, 64] {
        let (k, b) = (
            format!("invoke_throughput_c{c}"),
            format!("baseline_invoke_throughput_c{c}"),
        );
        if let Some(r) = ratio((&b, "value"), (&k, "value")) {
            invoke.push((format!("throughput c{c}"), r));
        }
    }
    let mut panels = Vec::new();
    if !enforce.is_empty() {
        panels.push(Panel {
            title: "Enforcement: ratios of p99 latency".into(),
            y_label: "ratio (log)".into(),
            bars: enforce,
            log: true,
            lines: vec![
                (2.5, "≤ 2.5 (actor / direct)".into()),
                (500.0, "≥ 500 (cpuset / actor)".into()),
            ],
        });
    }
    if !invoke.is_empty() {
        panels.push(Panel {
            title:
                "Invocation: corral's cost over the lock-based baseline (p50 overhead, throughput)"
                    .into(),
            y_label: "ratio (log)".into(),
            bars: invoke,
            log: true,
            lines: vec![(1.2, "goal ≤ 1.2".into())],
        });
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let file = "host_ratios.svg";
    plot::bars(&dir.join(file), &panels)?;
    Ok(Some((
        "Host ratios against their goals".into(),
        file.into(),
    )))
}

/// Replaces the text between `<!-- generated:{name} begin -->` and its `end` marker in `doc`
/// (appending a new section when the markers are missing).
pub fn splice(doc: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- generated:{name} begin -->");
    let end = format!("<!-- generated:{name} end -->");
    let block = format!("{begin}\n{body}{end}");
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &doc[..b], &doc[e + end.len()..])
        }
        _ => format!("{}\n{block}\n", doc.trim_end()),
    }
}

/// Where the documentation of the figures lives.
pub fn doc_path() -> PathBuf {
    crate::workspace_root().join("docs/benchmarks.md")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat(p50: f64, p99: f64) -> Value {
        json!({"what": "x", "unit": "us", "p50": p50, "p99": p99, "samples": 10})
    }

    /// Goals are judged from the figures, with the margin stated.
    #[test]
    fn goals_are_judged_with_their_margin() {
        let mut r = Map::new();
        r.insert("enforce_actor_bpf".into(), lat(20.0, 50.0));
        r.insert("enforce_direct_bpf".into(), lat(5.0, 6.0));
        r.insert("enforce_cpuset".into(), lat(1500.0, 60_000.0));
        let v = goals(&r);
        assert_eq!(v[0].met, Some(false), "{v:?}");
        assert!(v[0].detail.contains("8.33×"), "{}", v[0].detail);
        assert_eq!(v[1].met, Some(true), "{v:?}");
        assert!(v[1].detail.contains("1200×"), "{}", v[1].detail);
    }

    /// The scale goal compares the smallest and the largest number of mapped cgroups measured
    /// and lists every step.
    #[test]
    fn flatness_is_judged_over_the_mapped_series() {
        let mut r = Map::new();
        for (n, p50) in [(10, 3.0), (100, 3.1), (1_000, 3.2), (10_000, 4.0)] {
            r.insert(format!("enforce_direct_bpf_mapped_{n}"), lat(p50, p50));
        }
        let v = goals(&r);
        let flat = v
            .iter()
            .find(|v| v.goal.starts_with("enforce_direct_bpf_mapped_<n> flat"))
            .expect("a flatness verdict");
        assert_eq!(flat.met, Some(false), "{flat:?}");
        assert!(flat.goal.contains("from 10 to 10000"), "{}", flat.goal);
        assert!(
            flat.detail.contains("1000: 3.20 µs") && flat.detail.contains("1.33×"),
            "{}",
            flat.detail
        );
    }

    /// Splicing replaces only the marked section, or appends one.
    #[test]
    fn splice_replaces_the_marked_section() {
        let doc = "a\n<!-- generated:host begin -->\nold\n<!-- generated:host end -->\nb\n";
        let new = splice(doc, "host", "new\n");
        assert_eq!(
            new,
            "a\n<!-- generated:host begin -->\nnew\n<!-- generated:host end -->\nb\n"
        );
        let appended = splice("a\n", "host", "x\n");
        assert!(
            appended.ends_with("<!-- generated:host begin -->\nx\n<!-- generated:host end -->\n")
        );
    }
}
