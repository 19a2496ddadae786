//! The `corral` command-line tool: run a workload through the runtime, load the scheduler, and
//! inspect or edit its pinned maps.
//!
//! Every subcommand lives in its own module under `cli/`; this file only parses and dispatches.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// corral: CPU groups for FaaS containers, enforced in the kernel by a sched_ext scheduler.
///
/// A configuration file (TOML) describes the CPU groups, the placement policy, the limits and,
/// for `run`, the functions and their load. See docs/configuration.md and examples/.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the runtime, drive the configured workload, and report per function and group.
    ///
    /// Registers the config's functions, runs each function's load (an arrival rate or a
    /// closed-loop concurrency, for a duration) with live progress on a terminal, then prints
    /// invocations, errors, cold starts, end-to-end, run-queue and enforcement latency
    /// percentiles, and placement violations. Needs root for the `bpf` and `cpuset` backends.
    Run(cli::run::RunArgs),
    /// Load and attach the scheduler, publish the config's groups, and stay in the foreground.
    ///
    /// Detaches on SIGINT or SIGTERM and prints the exit reason. Other corral processes
    /// (`corral map`, `corral run`) then write the pinned maps this scheduler reads.
    Sched(cli::sched::SchedArgs),
    /// Map a cgroup to a group: one atomic update of the pinned cgroup map.
    ///
    /// Switches the cgroup's threads to SCHED_EXT so the scheduler takes them. Works while
    /// `corral sched` or `corral run` runs elsewhere.
    Map(cli::maps::MapArgs),
    /// Remove a cgroup's mapping and return its threads to the fair class.
    Unmap(cli::maps::UnmapArgs),
    /// Inspect the pinned maps.
    Maps(cli::maps::MapsArgs),
    /// Show the scheduler's state, its last exit reason, the groups and the mapped cgroups.
    Status(cli::status::StatusArgs),
    /// Diagnose this machine (sched_ext, BTF, bpffs, cgroup v2 controllers, privileges) and give
    /// the fix for each problem. Exits 1 when something corral needs is missing.
    Check(cli::check::CheckArgs),
    /// Measure remap cost (one map update vs a cpuset write) and the invocation path's overhead
    /// on this machine. Needs root, cgroup v2 and bpffs; see docs/benchmarks.md.
    Bench(cli::bench::BenchArgs),
    /// Replay a scenario file against the control plane (sim containers, in-memory maps): steps
    /// invoke functions, set CPU pressure, wait, restart an actor, and check the runtime's
    /// statistics. Exits 1 naming the first failing step.
    ///
    /// The file is a runtime configuration plus [[step]] entries, each with one action:
    /// `invoke = "f"` (with `count`, `concurrency`, `payload`, `expect_error`), `pressure = 80.0`,
    /// `wait_ms = 100`, `restart = "container_manager"`, or `expect = { cold_starts = 1, ... }`
    /// (keys: completed, failed, cold_starts, warm_starts, in_flight, limit, warm_containers,
    /// live_containers, enforcement_entries, queue_timeouts, restarts_<actor>). Needs no root.
    Scenario(cli::scenario::ScenarioArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Sched(args) => cli::sched::run(args),
        Command::Map(args) => cli::maps::map(args).map(|_| 0),
        Command::Unmap(args) => cli::maps::unmap(args).map(|_| 0),
        Command::Maps(args) => cli::maps::maps(args).map(|_| 0),
        Command::Status(args) => cli::status::run(args).map(|_| 0),
        Command::Check(args) => cli::check::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Scenario(args) => cli::scenario::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("corral: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
