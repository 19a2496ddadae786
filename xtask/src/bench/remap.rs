//! `cargo xtask bench remap`: how long a loaded cgroup (4 busy threads) takes to run only on
//! its new CPUs after a corral map update, against a cgroup v2 `cpuset.cpus` write, in one
//! 4-vCPU sched_ext guest (issue "benchmarks", part 4).
//!
//! The guest runs `corral bench remap` twice (runtime/src/cli/bench/remap.rs): first with no
//! scheduler, moving the cgroup between `cpuset.cpus` 1 and 2; then under `corral sched` with
//! groups `a` = CPU 1 and `b` = CPU 2 (the host group defaults to CPUs 0 and 3, where the
//! sampler runs), moving it between the groups with one map update each. Each prints its
//! figures as JSON, which the host merges into the report under `remap_…` with the machine and
//! the command.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::initramfs::{GuestCommand, GuestSpec};
use crate::kernel::VmKernel;
use crate::vm::{self, VmOptions};

/// The prefix of every key this part writes.
pub const REPORT_PREFIX: &str = "remap_";

const FIGURES_MARKER: &str = "CORRAL-BENCH-REMAP ";
const FAIL_MARKER: &str = "CORRAL-BENCH-FAIL ";
const DONE_MARKER: &str = "CORRAL-BENCH-DONE";

/// The guest script; `@MOVES@` is the number of timed moves per mechanism.
const SCRIPT: &str = r#"# cargo xtask bench remap: the guest side (generated from xtask/src/bench/remap.rs).
set -u
OUT=/tmp/bench
PIN=/sys/fs/bpf/corral-bench-remap
MOVES=@MOVES@
FAILED=0
mkdir -p $OUT
say() { echo "bench: $*"; }
fail() { echo "CORRAL-BENCH-FAIL $1 $2"; FAILED=1; }
state() { cat /sys/kernel/sched_ext/state 2>/dev/null || echo missing; }

[ "$(nproc)" = 4 ] || { fail setup "the guest has $(nproc) CPUs, not 4"; exit 1; }
grep -qw cpuset /sys/fs/cgroup/cgroup.subtree_control || echo +cpuset > /sys/fs/cgroup/cgroup.subtree_control

say "cpuset: $MOVES moves of 4 busy threads between cpuset.cpus 1 and 2 (no scheduler)"
if corral bench remap --via cpuset --cpus 1:2 --moves $MOVES --json $OUT/cpuset.json > $OUT/cpuset.log 2>&1; then
    echo "CORRAL-BENCH-REMAP $(tr -d '\n' < $OUT/cpuset.json)"
else
    fail cpuset "$(grep -v '^ *$' $OUT/cpuset.log | tail -n 4 | tr '\n' ' ')"
fi

cat > $OUT/remap.toml <<'EOF'
[[groups]]
name = "a"
cpus = "1"

[[groups]]
name = "b"
cpus = "2"
EOF
corral sched --config $OUT/remap.toml --pin-dir $PIN --no-restart > $OUT/sched.log 2>&1 &
SPID=$!
n=0
until grep -q "scheduler attached" $OUT/sched.log; do
    n=$((n + 1))
    if [ $n -gt 600 ] || ! kill -0 $SPID 2>/dev/null; then
        fail corral "corral sched did not attach: $(tail -n 3 $OUT/sched.log | tr '\n' ' ')"
        break
    fi
    sleep 0.1
done
if [ "$(state)" = enabled ]; then
    seq=$(cat /sys/kernel/sched_ext/enable_seq)
    say "corral: $MOVES moves of 4 busy threads between groups a (CPU 1) and b (CPU 2), one map update each"
    if corral bench remap --via corral --groups 0,1 --pin-dir $PIN --moves $MOVES --json $OUT/corral.json > $OUT/corral.log 2>&1; then
        if [ "$(state)" = enabled ] && [ "$(cat /sys/kernel/sched_ext/enable_seq)" = "$seq" ]; then
            echo "CORRAL-BENCH-REMAP $(tr -d '\n' < $OUT/corral.json)"
        else
            fail corral "the scheduler exited during the run (state $(state)): $(tail -n 3 $OUT/sched.log | tr '\n' ' ')"
        fi
    else
        fail corral "$(grep -v '^ *$' $OUT/corral.log | tail -n 4 | tr '\n' ' ')"
    fi
fi
kill -INT $SPID 2>/dev/null
wait $SPID 2>/dev/null
echo "CORRAL-BENCH-DONE"
exit $FAILED
"#;

/// What the guest reported: figures (key → report object) and failures.
#[derive(Debug, Default)]
pub struct GuestResults {
    /// The figures, each an object as `corral bench` wrote it, without its key.
    pub figures: Map<String, Value>,
    /// Why a mechanism could not be measured.
    pub failures: Vec<String>,
    /// The script reached its end.
    pub done: bool,
}

/// Reads the guest's console; a figures line that does not parse is an error.
pub fn parse_console(lines: &[String]) -> Result<GuestResults> {
    let mut out = GuestResults::default();
    for line in lines {
        if let Some(at) = line.find(FIGURES_MARKER) {
            let rest = &line[at + FIGURES_MARKER.len()..];
            let figures: Vec<Value> = serde_json::from_str(rest.trim())
                .with_context(|| format!("the guest's remap figures do not parse: {line}"))?;
            for mut f in figures {
                let key = f["key"]
                    .as_str()
                    .with_context(|| format!("a figure without a key: {f}"))?
                    .to_owned();
                if let Value::Object(o) = &mut f {
                    o.remove("key");
                }
                out.figures.insert(key, f);
            }
        } else if let Some(at) = line.find(FAIL_MARKER) {
            out.failures
                .push(line[at + FAIL_MARKER.len()..].trim().to_owned());
        } else if line.contains(DONE_MARKER) {
            out.done = true;
        }
    }
    Ok(out)
}

/// The goal: the loaded cgroup running only on its new CPUs at least 10× sooner with corral than with
/// cpuset, judged at p50 and p99. `None` when a figure is missing.
pub fn goal_lines(report: &Map<String, Value>) -> Vec<String> {
    let get = |key: &str, field: &str| report.get(key)?.get(field)?.as_f64();
    ["p50", "p99"]
        .iter()
        .map(
            |q| match (get("remap_corral_ms", q), get("remap_cpuset_ms", q)) {
                (Some(c), Some(s)) if c > 0.0 => {
                    let ratio = s / c;
                    let verdict = if ratio >= 10.0 { "met" } else { "missed" };
                    format!(
                        "- remap ≥ 10× sooner with corral than with cpuset at {q}: **{verdict}** \
                         ({c:.1} ms against {s:.1} ms: {ratio:.1}×)"
                    )
                }
                _ => format!(
                    "- remap ≥ 10× sooner with corral than with cpuset at {q}: not measured"
                ),
            },
        )
        .collect()
}

/// The generated Markdown section.
pub fn markdown(report: &Map<String, Value>) -> String {
    let mut out = String::new();
    let first = report
        .iter()
        .find(|(k, _)| k.starts_with(REPORT_PREFIX))
        .map(|(_, v)| v);
    if let Some(m) = first.and_then(|f| f.get("machine")) {
        let _ = writeln!(
            out,
            "Machine: {} vCPUs, Linux {}, {}. Command: `{}`.\n",
            m["cpus"],
            m["kernel"].as_str().unwrap_or("?"),
            m["where"].as_str().unwrap_or("?"),
            first
                .and_then(|f| f["command"].as_str())
                .unwrap_or("cargo xtask bench remap")
        );
    }
    let _ = writeln!(out, "| key | what | p50 | p99 | samples |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (key, f) in report.iter().filter(|(k, _)| k.starts_with(REPORT_PREFIX)) {
        let unit = f["unit"].as_str().unwrap_or("");
        let cell = |field: &str| {
            f[field]
                .as_f64()
                .map_or("–".to_owned(), |v| format!("{v:.2} {unit}"))
        };
        let _ = writeln!(
            out,
            "| `{key}` | {} | {} | {} | {} |",
            f["what"].as_str().unwrap_or(""),
            cell("p50"),
            cell("p99"),
            f["samples"]
        );
    }
    let _ = writeln!(out, "\nGoals:\n");
    for line in goal_lines(report) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Runs the part in a guest and merges its figures into `report_path`; returns the exit status
/// (0 only when both mechanisms were measured).
pub fn run(
    kernel: &VmKernel,
    binaries: &[PathBuf],
    quick: bool,
    report_path: &std::path::Path,
) -> Result<i32> {
    for needed in ["corral", "corral-spin"] {
        if !binaries
            .iter()
            .any(|b| b.file_name().is_some_and(|n| n == needed))
        {
            bail!("the remap benchmark needs the `{needed}` binary; the build made none");
        }
    }
    let moves = if quick { 3 } else { 20 };
    let dir = super::bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("remap.sh");
    std::fs::write(&script, SCRIPT.replace("@MOVES@", &moves.to_string()))
        .with_context(|| format!("writing {}", script.display()))?;
    eprintln!(
        "bench remap: {moves} moves each through cpuset and corral in a 4-vCPU guest; about {} \
         minute(s)",
        if quick { 1 } else { 3 }
    );
    let spec = GuestSpec {
        binaries: binaries.to_vec(),
        command: GuestCommand::Script(script),
        env: Vec::new(),
    };
    let opts = VmOptions {
        smp: 4,
        memory: "2G".into(),
        timeout: Duration::from_secs(900),
        echo: true,
        boot_retries: 1,
        ..VmOptions::default()
    };
    let guest = vm::run(kernel, &spec, &opts)?;
    let results = parse_console(&guest.console)?;
    let command = format!(
        "cargo xtask bench{} remap",
        if quick { " --quick" } else { "" }
    );
    let machine = json!({
        "cpus": 4,
        "kernel": kernel.release,
        "where": "guest (qemu TCG)",
    });
    let mut figures = results.figures.clone();
    for f in figures.values_mut() {
        if let Value::Object(o) = f {
            o.insert("machine".into(), machine.clone());
            o.insert("command".into(), json!(command));
        }
    }
    super::merge_report(report_path, REPORT_PREFIX, figures)?;
    eprintln!("bench remap: figures merged into {}", report_path.display());
    let mut problems = results.failures.clone();
    if !guest.outcome.success() {
        problems.insert(0, format!("the guest: {}", guest.outcome));
    }
    if !results.done {
        problems.push("the guest script did not reach its end".into());
    }
    for key in ["remap_corral_ms", "remap_cpuset_ms"] {
        if !results.figures.contains_key(key) {
            problems.push(format!("no figure `{key}`"));
        }
    }
    if problems.is_empty() {
        return Ok(0);
    }
    eprintln!("bench remap: FAILED:");
    for p in &problems {
        eprintln!("  - {p}");
    }
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures lines become report entries without their key; failures and the end are seen.
    #[test]
    fn console_lines_are_read() {
        let lines = vec![
            "[ 1.0] x CORRAL-BENCH-REMAP [{\"key\":\"remap_cpuset_ms\",\"unit\":\"ms\",\"p50\":40.0,\"p99\":90.0,\"samples\":20}]".to_owned(),
            "CORRAL-BENCH-FAIL corral the scheduler exited".to_owned(),
            "CORRAL-BENCH-DONE".to_owned(),
        ];
        let r = parse_console(&lines).unwrap();
        assert_eq!(r.figures["remap_cpuset_ms"]["p50"], 40.0);
        assert!(r.figures["remap_cpuset_ms"].get("key").is_none());
        assert_eq!(r.failures, vec!["corral the scheduler exited"]);
        assert!(r.done);
        assert!(parse_console(&["CORRAL-BENCH-REMAP [{".to_owned()]).is_err());
    }

    /// The goal is judged at p50 and p99 with its margin, and says when a figure is missing.
    #[test]
    fn goal_is_judged_with_its_margin() {
        let mut report = Map::new();
        report.insert("remap_corral_ms".into(), json!({"p50": 2.0, "p99": 10.0}));
        report.insert("remap_cpuset_ms".into(), json!({"p50": 40.0, "p99": 50.0}));
        let lines = goal_lines(&report);
        assert!(
            lines[0].contains("**met**") && lines[0].contains("20.0×"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("**missed**") && lines[1].contains("5.0×"),
            "{}",
            lines[1]
        );
        report.remove("remap_cpuset_ms");
        assert!(goal_lines(&report)[0].contains("not measured"));
    }
}
