//! `corral status`: the scheduler's state, its last exit reason, the published groups and the
//! mapped cgroups, in one screen.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use corral_bpf::DEFAULT_PIN_DIR;

use super::maps::{open_maps, print_groups_and_cgroups, read_view};
use super::sched::last_exit_file;

/// Show the scheduler state and the maps' contents.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the maps are pinned.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Print one JSON object instead: `sched_ext` (state and scheduler), `last_exit` (as
    /// `corral sched` recorded it, or null) and `maps` (what `corral maps dump --json` prints,
    /// or null when none are pinned).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> Result<()> {
    if args.json {
        return print_json(&args);
    }
    match corral_bpf::sched_ext_state() {
        Ok(state) => {
            let ops = std::fs::read_to_string("/sys/kernel/sched_ext/root/ops")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            println!(
                "sched_ext: {state:?}{}",
                if ops.is_empty() {
                    String::new()
                } else {
                    format!(" (scheduler `{ops}`)")
                }
            );
        }
        Err(e) => println!("sched_ext: unavailable ({e}); corral enforces groups with cpuset here"),
    }
    let exit_file = last_exit_file(&args.pin_dir);
    match std::fs::read_to_string(&exit_file) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => {
                let at = v["at_unix_s"].as_u64().unwrap_or(0);
                let ago = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs().saturating_sub(at))
                    .unwrap_or(0);
                let message = v["message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default();
                println!(
                    "last exit: {} {}{message} ({ago}s ago, recorded by corral sched in {})",
                    v["kind"].as_str().unwrap_or("?"),
                    v["reason"].as_str().unwrap_or(""),
                    exit_file.display()
                )
            }
            Err(e) => println!("last exit: {} is unreadable ({e})", exit_file.display()),
        },
        Err(_) => println!("last exit: none recorded"),
    }
    if !Path::new(&args.pin_dir).exists() {
        println!(
            "maps: none pinned at {} (start `corral sched` or `corral run`)",
            args.pin_dir.display()
        );
        return Ok(());
    }
    let maps = open_maps(&args.pin_dir)?;
    let view = read_view(&maps)?;
    println!(
        "maps: {} (layout v{}, generation {})",
        view.pin_dir, view.layout_version, view.generation
    );
    print_groups_and_cgroups(&view);
    print_placement_health(&view);
    Ok(())
}

/// Says, per group, what kept its tasks from their CPUs: higher scheduling classes (in partial
/// mode every fair-class task outranks the groups, so fair load starves them), runs outside the
/// group's CPUs, and the longest run-queue wait.
fn print_placement_health(view: &super::maps::MapsView) {
    for s in &view.stats {
        let name = s.group.map_or("host".to_string(), |g| format!("group {g}"));
        if s.displaced > 0 {
            println!(
                "{name}: starved by higher scheduling classes: its CPUs were taken {} times for {:.0} ms (fair-class load in partial mode, or RT/deadline tasks)",
                s.displaced, s.displaced_ms
            );
        }
        if s.violations > 0 {
            println!(
                "{name}: {} runs outside its CPUs that nothing allowed (violations)",
                s.violations
            );
        }
        if s.affinity_overrides > 0 || s.rescued > 0 {
            println!(
                "{name}: {} runs outside its CPUs because the tasks' affinity excludes them, {} rescued after waiting in a queue no CPU served",
                s.affinity_overrides, s.rescued
            );
        }
        if s.runs > 0 {
            println!(
                "{name}: longest run-queue wait {:.1} ms over {} runs",
                s.runqueue_latency_max_us / 1e3,
                s.runs
            );
        }
    }
}

fn print_json(args: &StatusArgs) -> Result<()> {
    let sched_ext = match corral_bpf::sched_ext_state() {
        Ok(state) => serde_json::json!({
            "state": format!("{state:?}").to_lowercase(),
            "ops": std::fs::read_to_string("/sys/kernel/sched_ext/root/ops")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }),
        Err(e) => serde_json::json!({ "state": "unavailable", "reason": e.to_string() }),
    };
    let last_exit = std::fs::read_to_string(last_exit_file(&args.pin_dir))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .unwrap_or(serde_json::Value::Null);
    let maps = if Path::new(&args.pin_dir).exists() {
        serde_json::to_value(read_view(&open_maps(&args.pin_dir)?)?)?
    } else {
        serde_json::Value::Null
    };
    let out = serde_json::json!({ "sched_ext": sched_ext, "last_exit": last_exit, "maps": maps });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
