//! The `corral` command-line tool: run a workload, load the scheduler, inspect and edit the maps.

use clap::Parser;

/// corral: CPU groups for FaaS containers, enforced by a sched_ext scheduler.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("the corral CLI is not built yet (see the CLI issue)")
}
