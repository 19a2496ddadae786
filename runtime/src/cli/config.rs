//! The CLI's configuration file: the runtime's [`RuntimeConfig`] (groups, limiter, placement,
//! containers, enforcement, functions) plus `[[workload]]` entries that `corral run` drives.
//!
//! A workload entry defines a function and its load at once:
//!
//! ```toml
//! [[workload]]
//! function = "thumbnail"   # registered with the runtime under this name
//! kind = "spin"            # spin: a CPU-bound loop | burst: several threads | command
//! cpu_ms = 20              # CPU time each thread burns (spin, burst)
//! rate_per_s = 25          # open loop: arrivals per second ...
//! # concurrency = 2        # ... or closed loop: invocations kept in flight
//! duration_s = 15
//! ```
//!
//! Every error names the key (`workload[1].cpu_ms`) and says what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use corral::{FunctionSpec, RuntimeConfig};
use serde::{Deserialize, Serialize};

/// What a workload function does per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    /// One thread burns `cpu_ms` of CPU time.
    Spin,
    /// `threads` threads each burn `cpu_ms` of CPU time at once.
    Burst,
    /// Runs `command`.
    Command,
    /// A `server`-mode function: `corral-serve` (installed next to `corral`), started once per
    /// container, serves every invocation of it; the payload is its request (`spin <ms>`
    /// burns that much CPU, anything else is echoed).
    Serve,
}

/// One function and the load `corral run` puts on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The function's name (letters, digits, `_`, `-`).
    pub function: String,
    /// What one invocation does.
    pub kind: FunctionKind,
    /// `spin`, `burst`: CPU time per thread, in milliseconds.
    #[serde(default)]
    pub cpu_ms: Option<u64>,
    /// `burst`: threads per invocation.
    #[serde(default)]
    pub threads: Option<u32>,
    /// `command`: the program and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Open loop: invocations started per second, whatever the latency.
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// Closed loop: invocations kept in flight, each started when the previous one ends.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// How long the load lasts, in seconds.
    pub duration_s: f64,
    /// Payload sent with each invocation (the command's standard input).
    #[serde(default)]
    pub payload: String,
}

/// How a workload generates invocations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Start one every `1/rate` seconds.
    OpenLoop { rate_per_s: f64 },
    /// Keep this many in flight.
    ClosedLoop { concurrency: u32 },
}

impl WorkloadSpec {
    /// The load, validated.
    pub fn load(&self, i: usize) -> Result<Load> {
        match (self.rate_per_s, self.concurrency) {
            (Some(rate), None) => {
                if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
                    bail!("workload[{i}].rate_per_s = {rate}: must be > 0 and at most 10000 invocations per second");
                }
                Ok(Load::OpenLoop { rate_per_s: rate })
            }
            (None, Some(c)) => {
                if !(1..=1024).contains(&c) {
                    bail!("workload[{i}].concurrency = {c}: must be between 1 and 1024");
                }
                Ok(Load::ClosedLoop { concurrency: c })
            }
            (Some(_), Some(_)) => bail!(
                "workload[{i}]: set either rate_per_s (open loop) or concurrency (closed loop), not both"
            ),
            (None, None) => bail!(
                "workload[{i}]: set rate_per_s (open loop) or concurrency (closed loop)"
            ),
        }
    }

    /// The load's duration, validated.
    pub fn duration(&self, i: usize) -> Result<Duration> {
        if !(self.duration_s.is_finite() && self.duration_s > 0.0 && self.duration_s <= 86_400.0) {
            bail!(
                "workload[{i}].duration_s = {}: must be > 0 and at most 86400 seconds",
                self.duration_s
            );
        }
        Ok(Duration::from_secs_f64(self.duration_s))
    }

    /// The runtime function this entry registers; `spin` is the path of the `corral-spin`
    /// binary, the body of `spin` and `burst` functions.
    pub fn function_spec(&self, i: usize, spin: &Path) -> Result<FunctionSpec> {
        let cpu_ms = |kind: &str| -> Result<u64> {
            match self.cpu_ms {
                Some(ms) if (1..=600_000).contains(&ms) => Ok(ms),
                Some(ms) => bail!("workload[{i}].cpu_ms = {ms}: must be between 1 and 600000"),
                None => bail!("workload[{i}].cpu_ms is missing: a `{kind}` function needs the CPU time per thread"),
            }
        };
        let spin = spin.to_string_lossy().into_owned();
        let command = match self.kind {
            FunctionKind::Spin => {
                if self.threads.is_some_and(|t| t != 1) {
                    bail!("workload[{i}].threads: a `spin` function has one thread; use kind = \"burst\" for more");
                }
                if !self.command.is_empty() {
                    bail!("workload[{i}].command is only for kind = \"command\"");
                }
                vec![spin, "--millis".into(), cpu_ms("spin")?.to_string()]
            }
            FunctionKind::Burst => {
                let threads = match self.threads {
                    Some(t) if (2..=256).contains(&t) => t,
                    Some(t) => bail!("workload[{i}].threads = {t}: a burst needs between 2 and 256 threads"),
                    None => bail!("workload[{i}].threads is missing: a `burst` function needs its thread count"),
                };
                if !self.command.is_empty() {
                    bail!("workload[{i}].command is only for kind = \"command\"");
                }
                vec![
                    spin,
                    "--millis".into(),
                    cpu_ms("burst")?.to_string(),
                    "--threads".into(),
                    threads.to_string(),
                ]
            }
            FunctionKind::Serve => {
                if !self.command.is_empty() || self.cpu_ms.is_some() || self.threads.is_some() {
                    bail!("workload[{i}]: a `serve` function runs corral-serve; command, cpu_ms and threads are not for it (put `spin <ms>` in payload to burn CPU)");
                }
                vec![Path::new(&spin)
                    .with_file_name("corral-serve")
                    .to_string_lossy()
                    .into_owned()]
            }
            FunctionKind::Command => {
                if self.command.is_empty() {
                    bail!("workload[{i}].command is missing or empty: a `command` function needs a program");
                }
                if self.cpu_ms.is_some() || self.threads.is_some() {
                    bail!("workload[{i}]: cpu_ms and threads are for spin and burst functions, not commands");
                }
                self.command.clone()
            }
        };
        let mut spec = FunctionSpec::named(self.function.clone());
        spec.command = command;
        if self.kind == FunctionKind::Serve {
            spec.mode = corral_actors::config::FunctionMode::Server;
        }
        Ok(spec)
    }
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct CliConfig {
    /// Where it was read from.
    pub path: PathBuf,
    /// The runtime's part, with the workload's functions added to `functions`.
    pub runtime: RuntimeConfig,
    /// The load.
    pub workload: Vec<WorkloadSpec>,
    /// Each workload entry's load and duration, validated, in order.
    pub loads: Vec<(Load, Duration)>,
}

impl CliConfig {
    /// Reads, parses and validates the file (groups against this machine's online CPUs).
    /// `spin` is the `corral-spin` binary that `spin` and `burst` functions run.
    pub fn load(path: &Path, spin: &Path) -> Result<CliConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        Self::parse(&text, path, spin).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and validates configuration text against this machine's online CPUs.
    pub fn parse(text: &str, path: &Path, spin: &Path) -> Result<CliConfig> {
        Self::parse_against(text, path, spin, None)
    }

    /// Parses and validates configuration text, against `online` CPUs when given.
    pub fn parse_against(
        text: &str,
        path: &Path,
        spin: &Path,
        online: Option<&[u32]>,
    ) -> Result<CliConfig> {
        let mut table: toml::Table = toml::from_str(text).context("the file is not valid TOML")?;
        let workload: Vec<WorkloadSpec> = match table.remove("workload") {
            Some(value) => typed(value, "workload")?,
            None => Vec::new(),
        };
        let mut runtime: RuntimeConfig = typed(toml::Value::Table(table), "")?;
        let mut loads = Vec::new();
        for (i, w) in workload.iter().enumerate() {
            if runtime.functions.iter().any(|f| f.name == w.function) {
                bail!(
                    "workload[{i}].function = {:?}: a [[functions]] entry already has that name; \
                     a workload entry defines its own function",
                    w.function
                );
            }
            if workload[..i].iter().any(|o| o.function == w.function) {
                bail!(
                    "workload[{i}].function = {:?}: two workload entries share that name",
                    w.function
                );
            }
            runtime.functions.push(w.function_spec(i, spin)?);
            loads.push((w.load(i)?, w.duration(i)?));
        }
        match online {
            Some(cpus) => runtime.validate_against(cpus),
            None => runtime.validate(),
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(CliConfig {
            path: path.to_path_buf(),
            runtime,
            workload,
            loads,
        })
    }
}

/// Deserializes `value`, naming the key path of the first error (`groups[0].cpus`).
fn typed<T: serde::de::DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match (prefix.is_empty(), path.as_str()) {
            (true, p) => p.to_owned(),
            (false, ".") => prefix.to_owned(),
            (false, p) if p.starts_with('[') => format!("{prefix}{p}"),
            (false, p) => format!("{prefix}.{p}"),
        };
        anyhow::anyhow!("{key}: {}", e.into_inner())
    })
}

/// The `corral-spin` binary: installed next to `corral`.
pub fn spin_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the corral binary's own path")?;
    let spin = exe.with_file_name("corral-spin");
    if !spin.is_file() {
        bail!(
            "{} is missing: spin and burst functions run it; install it next to {} (cargo builds both)",
            spin.display(),
            exe.display()
        );
    }
    Ok(spin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &str = "[[groups]]\nname = \"a\"\ncpus = \"0\"\n";

    fn parse(extra: &str) -> Result<CliConfig> {
        CliConfig::parse(
            &format!("{GROUPS}{extra}"),
            Path::new("t.toml"),
            Path::new("/bin/corral-spin"),
        )
    }

    /// A spin workload registers a function whose command is the corral-spin binary.
    #[test]
    fn spin_workload_registers_a_spin_function() {
        let c = parse("[[workload]]\nfunction = \"f\"\nkind = \"spin\"\ncpu_ms = 5\nrate_per_s = 2\nduration_s = 1\n").unwrap();
        let f = c.runtime.functions.iter().find(|f| f.name == "f").unwrap();
        assert_eq!(f.command, ["/bin/corral-spin", "--millis", "5"]);
        assert_eq!(c.loads[0].0, Load::OpenLoop { rate_per_s: 2.0 });
    }

    /// A serve workload registers a server-mode function run by corral-serve (next to the
    /// corral binaries); command, cpu_ms and threads are refused for it.
    #[test]
    fn serve_workload_registers_a_server_function() {
        let c = parse("[[workload]]\nfunction = \"s\"\nkind = \"serve\"\npayload = \"spin 5\"\nconcurrency = 2\nduration_s = 1\n").unwrap();
        let f = c.runtime.functions.iter().find(|f| f.name == "s").unwrap();
        assert_eq!(f.command, ["/bin/corral-serve"]);
        assert_eq!(f.mode, corral_actors::config::FunctionMode::Server);
        let err = parse("[[workload]]\nfunction = \"s\"\nkind = \"serve\"\ncpu_ms = 5\nconcurrency = 2\nduration_s = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("workload[0]"), "{err:#}");
    }

    /// Each invalid workload value is refused with an error naming its key.
    #[test]
    fn invalid_workload_values_name_their_key() {
        let cases = [
            (
                "kind = \"spin\"\nrate_per_s = 1\nduration_s = 1",
                "workload[0].cpu_ms",
            ),
            (
                "kind = \"spin\"\ncpu_ms = 0\nrate_per_s = 1\nduration_s = 1",
                "workload[0].cpu_ms",
            ),
            (
                "kind = \"burst\"\ncpu_ms = 5\nrate_per_s = 1\nduration_s = 1",
                "workload[0].threads",
            ),
            (
                "kind = \"burst\"\ncpu_ms = 5\nthreads = 1\nrate_per_s = 1\nduration_s = 1",
                "workload[0].threads",
            ),
            (
                "kind = \"command\"\nrate_per_s = 1\nduration_s = 1",
                "workload[0].command",
            ),
            (
                "kind = \"spin\"\ncpu_ms = 5\nrate_per_s = -1\nduration_s = 1",
                "workload[0].rate_per_s",
            ),
            (
                "kind = \"spin\"\ncpu_ms = 5\nconcurrency = 0\nduration_s = 1",
                "workload[0].concurrency",
            ),
            (
                "kind = \"spin\"\ncpu_ms = 5\nrate_per_s = 1\nconcurrency = 1\nduration_s = 1",
                "workload[0]",
            ),
            (
                "kind = \"spin\"\ncpu_ms = 5\nrate_per_s = 1\nduration_s = 0",
                "workload[0].duration_s",
            ),
            (
                "kind = \"spin\"\ncpu_ms = 5\nrate_per_s = 1\nduration_s = 1\nbogus = 1",
                "bogus",
            ),
            (
                "kind = \"wobble\"\ncpu_ms = 5\nrate_per_s = 1\nduration_s = 1",
                "wobble",
            ),
        ];
        for (body, key) in cases {
            let err = parse(&format!("[[workload]]\nfunction = \"f\"\n{body}\n")).unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains(key),
                "error for {body:?} does not name {key}: {text}"
            );
        }
    }

    /// Errors in the runtime part name their key too.
    #[test]
    fn invalid_runtime_values_name_their_key() {
        let err = CliConfig::parse(
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\nslice_us = 0\n",
            Path::new("t"),
            Path::new("c"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("groups[0].slice_us"), "{err:#}");
        let err = CliConfig::parse(
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\n[limiter]\ninitial = 0\nmin = 0\nmax = 1\n",
            Path::new("t"),
            Path::new("c"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("limiter."), "{err:#}");
        let err = CliConfig::parse(
            "[[groups]]\nname = \"a\"\ncpus = \"0\"\nbogus = 1\n",
            Path::new("t"),
            Path::new("c"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
        let err = CliConfig::parse(
            "[[groups]]\nname = \"a\"\ncpus = 5\n",
            Path::new("t"),
            Path::new("c"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("groups[0].cpus"), "{err:#}");
    }

    /// Every shipped example configuration is valid on a machine with enough CPUs (64 here), so
    /// the examples and docs/configuration.md cannot drift from the code.
    #[test]
    fn example_configurations_are_valid() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let online: Vec<u32> = (0..64).collect();
        let mut checked = 0;
        for entry in std::fs::read_dir(&examples).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                CliConfig::parse_against(
                    &text,
                    &path,
                    Path::new("/bin/corral-spin"),
                    Some(&online),
                )
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                checked += 1;
            }
        }
        assert!(
            checked >= 3,
            "expected the example configurations in {}",
            examples.display()
        );
    }
}
