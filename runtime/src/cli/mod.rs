//! The `corral` CLI's subcommands and what they share: logging and the configuration file.
//!
//! # Layout
//! - [`config`]: the CLI's TOML file: the runtime's configuration plus the `[[workload]]` load.
//! - [`run`]: `corral run`, the workload driver and its report.
//! - [`report`]: the report's figures (percentiles, per function and group) and their printing.
//! - [`sampler`]: samples the CPU of every thread in the containers during a run.
//! - [`sched`]: `corral sched`, the scheduler in the foreground.
//! - [`maps`]: `corral map`, `corral unmap`, `corral maps dump`.
//! - [`status`]: `corral status`.
//! - [`check`]: `corral check`.
//! - [`scenario`]: `corral scenario`, scripted control-plane scenarios with expectations.
//! - [`bench`]: `corral bench`, enforcement and invocation-path costs on this machine.

pub mod bench;
pub mod check;
pub mod config;
pub mod maps;
pub mod report;
pub mod run;
pub mod sampler;
pub mod scenario;
pub mod sched;
pub mod status;

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings, and corral's own info lines).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,corral=info,corral_actors=info,corral_bpf=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
