//! `corral scenario <file.toml>`: replays a scripted scenario against the real control plane
//! (its actors, limiter, pools and policies) with `sim` containers and `memory` maps, so it
//! needs no kernel, no root and no cgroups, and checks expectations along the way. The first
//! failing step is named and the command exits 1.
//!
//! The file is a runtime configuration (groups, limiter, placement, functions: see
//! docs/configuration.md) plus `[[step]]` entries, each with exactly one action:
//!
//! | action | what it does |
//! |---|---|
//! | `invoke = "<function>"` | `count` invocations (default 1), `concurrency` at a time (default 1), each with `payload`; all must succeed, or all fail when `expect_error = true` |
//! | `pressure = <percent>` | sets the scripted CPU pressure and runs one `monitor_load` step |
//! | `wait_ms = <ms>` | sleeps (keep-alives and reaps happen meanwhile) |
//! | `restart = "<actor>"` | stops `resource_tracker`, `container_manager`, `map_writer` or `bpf_loader`; its supervisor restarts it |
//! | `expect = { ... }` | compares the runtime's statistics: `completed`, `failed`, `cold_starts`, `warm_starts`, `in_flight`, `limit`, `warm_containers`, `live_containers`, `enforcement_entries`, `queue_timeouts`, `restarts_<actor>` |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use corral::{ContainerBackendKind, EnforcementKind, Runtime, RuntimeConfig, StatsSnapshot};
use corral_actors::pressure::ScriptedPressure;
use corral_actors::telemetry::ActorKind;
use serde::Deserialize;

/// Replay a scenario file against the control plane (sim containers, in-memory maps).
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// The scenario: a runtime configuration plus [[step]] entries (see examples/scenarios/).
    pub file: PathBuf,
}

/// One step; exactly one action key is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    invoke: Option<String>,
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    expect_error: Option<bool>,
    pressure: Option<f64>,
    wait_ms: Option<u64>,
    restart: Option<String>,
    expect: Option<BTreeMap<String, u64>>,
}

impl Step {
    fn action(&self, i: usize) -> Result<&'static str> {
        let set = [
            ("invoke", self.invoke.is_some()),
            ("pressure", self.pressure.is_some()),
            ("wait_ms", self.wait_ms.is_some()),
            ("restart", self.restart.is_some()),
            ("expect", self.expect.is_some()),
        ];
        let actions: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        match actions.as_slice() {
            [one] => {
                let invoke_only = self.count.is_some()
                    || self.concurrency.is_some()
                    || self.payload.is_some()
                    || self.expect_error.is_some();
                if invoke_only && *one != "invoke" {
                    bail!(
                        "step[{i}]: count, concurrency, payload and expect_error go with `invoke`"
                    );
                }
                Ok(one)
            }
            [] => bail!(
                "step[{i}] has no action: give one of invoke, pressure, wait_ms, restart, expect"
            ),
            many => bail!(
                "step[{i}] has several actions ({}): give one per step",
                many.join(", ")
            ),
        }
    }
}

fn actor(name: &str, i: usize) -> Result<ActorKind> {
    Ok(match name {
        "resource_tracker" => ActorKind::ResourceTracker,
        "container_manager" => ActorKind::ContainerManager,
        "map_writer" => ActorKind::MapWriter,
        "bpf_loader" => ActorKind::BpfLoader,
        other => bail!(
            "step[{i}].restart = {other:?}: name resource_tracker, container_manager, map_writer or bpf_loader"
        ),
    })
}

/// The keys `expect` may check.
const KEYS: &[&str] = &[
    "completed",
    "failed",
    "cold_starts",
    "warm_starts",
    "in_flight",
    "limit",
    "warm_containers",
    "live_containers",
    "enforcement_entries",
    "queue_timeouts",
    "restarts_resource_tracker",
    "restarts_container_manager",
    "restarts_map_writer",
    "restarts_bpf_loader",
];

fn observed(stats: &StatsSnapshot, key: &str) -> Option<u64> {
    let r = &stats.restarts;
    Some(match key {
        "completed" => stats.invocations_completed,
        "failed" => stats.invocations_failed,
        "cold_starts" => stats.cold_starts,
        "warm_starts" => stats.warm_starts,
        "in_flight" => stats.in_flight as u64,
        "limit" => stats.limit as u64,
        "warm_containers" => stats.warm_containers as u64,
        "live_containers" => stats.live_containers as u64,
        "enforcement_entries" => stats.enforcement_entries as u64,
        "queue_timeouts" => stats.queue_timeouts,
        "restarts_resource_tracker" => r.resource_tracker,
        "restarts_container_manager" => r.container_manager,
        "restarts_map_writer" => r.map_writer,
        "restarts_bpf_loader" => r.bpf_loader,
        _ => return None,
    })
}

/// Parses a scenario file into its runtime configuration (sim, memory) and steps.
fn load(path: &Path) -> Result<(RuntimeConfig, Vec<Step>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the scenario {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text).context("the scenario is not valid TOML")?;
    let steps: Vec<Step> = match table.remove("step") {
        Some(v) => v.try_into().context("in [[step]]")?,
        None => bail!("the scenario has no [[step]] entries: add at least one"),
    };
    let mut config: RuntimeConfig = toml::Value::Table(table)
        .try_into()
        .context("in the scenario's runtime configuration")?;
    // A scenario exercises the control plane: no processes, no kernel.
    config.containers.backend = Some(ContainerBackendKind::Sim);
    config.enforcement.backend = EnforcementKind::Memory;
    for (i, s) in steps.iter().enumerate() {
        s.action(i)?;
        if let Some(name) = &s.restart {
            actor(name, i)?;
        }
        for key in s.expect.iter().flat_map(|e| e.keys()) {
            if !KEYS.contains(&key.as_str()) {
                bail!(
                    "step[{i}].expect.{key}: not a statistic scenarios check; use one of {}",
                    KEYS.join(", ")
                );
            }
        }
    }
    Ok((config, steps))
}

pub fn run(args: ScenarioArgs) -> Result<i32> {
    let (config, steps) =
        load(&args.file).with_context(|| format!("in {}", args.file.display()))?;
    let pressure = ScriptedPressure::default();
    let runtime = Runtime::builder(config)
        .pressure_source(Box::new(pressure.clone()))
        .start()
        .context("cannot start the scenario's runtime")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = tokio.block_on(async {
        for (i, step) in steps.iter().enumerate() {
            let action = step.action(i)?;
            let failed = |why: String| anyhow::anyhow!("step[{i}] ({action}) failed: {why}");
            match action {
                "invoke" => {
                    let function = step.invoke.clone().unwrap_or_default();
                    let (count, concurrency) = (
                        step.count.unwrap_or(1),
                        step.concurrency.unwrap_or(1).max(1),
                    );
                    let want_error = step.expect_error.unwrap_or(false);
                    let payload = step.payload.clone().unwrap_or_default().into_bytes();
                    let mut done = 0;
                    while done < count {
                        let batch = concurrency.min(count - done);
                        let calls: Vec<_> = (0..batch)
                            .map(|_| {
                                let (rt, f, p) =
                                    (runtime.clone(), function.clone(), payload.clone());
                                tokio::spawn(async move { rt.invoke(&f, p).await })
                            })
                            .collect();
                        for call in calls {
                            match (call.await?, want_error) {
                                (Ok(_), false) | (Err(_), true) => {}
                                (Ok(_), true) => {
                                    return Err(failed(format!(
                                        "invoking {function:?} succeeded; expect_error = true"
                                    )))
                                }
                                (Err(e), false) => {
                                    return Err(failed(format!("invoking {function:?}: {e}")))
                                }
                            }
                        }
                        done += batch;
                    }
                    println!(
                        "step[{i}] invoke {function} x{count} (concurrency {concurrency}): ok"
                    );
                }
                "pressure" => {
                    let value = step.pressure.unwrap_or_default();
                    pressure.set(value);
                    let change = runtime
                        .sample_load()
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    println!(
                        "step[{i}] pressure {value}: limit {} -> {}",
                        change.before, change.after
                    );
                }
                "wait_ms" => {
                    let ms = step.wait_ms.unwrap_or_default();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    println!("step[{i}] waited {ms} ms");
                }
                "restart" => {
                    let name = step.restart.clone().unwrap_or_default();
                    runtime
                        .restart_actor(actor(&name, i)?)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    // The supervisor restarts it on the actix thread; let it rebuild.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    println!("step[{i}] restarted {name}");
                }
                "expect" => {
                    let stats = runtime.stats();
                    let mut wrong = Vec::new();
                    for (key, want) in step.expect.iter().flatten() {
                        let got = observed(&stats, key).unwrap_or_default();
                        if got != *want {
                            wrong.push(format!("{key} is {got}, expected {want}"));
                        }
                    }
                    if !wrong.is_empty() {
                        return Err(failed(wrong.join("; ")));
                    }
                    println!("step[{i}] expect: ok");
                }
                _ => unreachable!("validated at load"),
            }
        }
        anyhow::Ok(())
    });
    let shutdown = tokio.block_on(runtime.shutdown());
    match outcome {
        Ok(()) => {
            shutdown.context("the scenario's runtime did not shut down cleanly")?;
            println!(
                "scenario {}: {} steps passed",
                args.file.display(),
                steps.len()
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("scenario {}: {e:#}", args.file.display());
            Ok(1)
        }
    }
}
