//! Benchmarks that run in the sched_ext guest (`cargo xtask bench <which>`), the peer schedulers
//! they compare corral with, and the report they share.
//!
//! Every benchmark merges its figures into one file, `target/bench/report.json`, under keys
//! that start with its own name (`isolation_…`), so one benchmark's run leaves the others'
//! figures in place. They take minutes and are not part of `cargo xtask test`.
//!
//! # Layout
//! - [`host`]: enforcement latency and invocation overhead on this machine, each beside its
//!   alternative (`corral bench enforce|invoke`).
//! - [`isolation`]: a latency-sensitive function beside CPU noise, per scheduler.
//! - [`remap`]: time until a loaded cgroup runs only on its new CPUs, corral against cpuset.
//! - [`plot`]: the SVG charts in `docs/bench/`.

pub mod host;
pub mod isolation;
pub mod plot;
pub mod remap;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// The scx_layered release the isolation benchmark compares with (DESIGN.md, "Peers to measure
/// against").
pub const SCX_LAYERED_VERSION: &str = "1.1.4";

/// Where the benchmarks keep their tools, builds and reports: `target/bench`.
pub fn bench_dir() -> PathBuf {
    crate::target_dir().join("bench")
}

/// The shared report, `target/bench/report.json`.
pub fn report_path() -> PathBuf {
    bench_dir().join("report.json")
}

/// The report of `--quick` runs, `target/bench/report.quick.json`, kept apart so that a smoke
/// run never overwrites real figures.
pub fn quick_report_path() -> PathBuf {
    bench_dir().join("report.quick.json")
}

/// Where the cached scx_layered binary lives.
pub fn scx_layered_path() -> PathBuf {
    bench_dir().join("tools/bin/scx_layered")
}

/// Installs scx_layered from crates.io into `target/bench/tools` unless it is already there.
///
/// It is built once (about 15 minutes on 2 cores) and cached, never rebuilt per run. A second
/// install started while one is running waits on cargo's lock of the shared build directory and
/// then finds the build done.
pub fn ensure_scx_layered() -> Result<PathBuf> {
    let clang = std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    crate::cargo::CargoTool {
        krate: "scx_layered",
        version: SCX_LAYERED_VERSION,
        what: "the peer scheduler scx_layered",
        prefix: "bench",
        root: bench_dir().join("tools"),
        build_dir: bench_dir().join("layered-build"),
        version_args: &["--version"],
        takes: "about 15 minutes on 2 cores",
        needed_by: "the isolation benchmark needs it (use --smoke to run without it)",
        env: vec![("BPF_CLANG".to_owned(), clang)],
    }
    .ensure()
}

/// Merges `figures` into the report at `path`: every key starting with `prefix` is replaced by
/// the new set, every other benchmark's key is kept.
pub fn merge_report(path: &Path, prefix: &str, figures: Map<String, Value>) -> Result<()> {
    merge_report_prefixes(path, &[prefix], figures)
}

/// [`merge_report`] for a benchmark that owns several key prefixes.
pub fn merge_report_prefixes(
    path: &Path,
    prefixes: &[&str],
    figures: Map<String, Value>,
) -> Result<()> {
    let mut report = match std::fs::read_to_string(path) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            _ => bail!(
                "{} is not a JSON object; move it away and run again",
                path.display()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    report.retain(|key, _| !prefixes.iter().any(|p| key.starts_with(p)));
    report.extend(figures);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(report))?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A benchmark's run replaces its own keys and keeps every other benchmark's figures.
    #[test]
    fn merge_report_replaces_only_its_own_keys() {
        let dir = std::env::temp_dir().join(format!("corral-bench-merge-{}", std::process::id()));
        let path = dir.join("report.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            &path,
            json!({"isolation_old": 1, "remap_p50_us": 5.0}).to_string(),
        )
        .unwrap();
        let mut figures = Map::new();
        figures.insert("isolation_solo_p50_ratio".into(), json!(1.0));
        merge_report(&path, "isolation", figures).unwrap();
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            report,
            json!({"remap_p50_us": 5.0, "isolation_solo_p50_ratio": 1.0})
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
