//! `corral sched`: load and attach the scheduler, publish the configuration's groups, and stay
//! in the foreground until SIGINT or SIGTERM (or until the scheduler exits on its own). Then
//! detach, print the exit reason, and record it where `corral status` finds it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use corral_bpf::{ExitInfo, Scheduler, SchedulerConfig};

use super::config::CliConfig;

/// Where `corral sched` records the scheduler's last exit for `corral status`: one file per pin
/// directory, so instances on different pins do not report each other's exits.
pub fn last_exit_file(pin_dir: &Path) -> PathBuf {
    let key: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new("/run/corral").join(format!("last-exit.{key}"))
}

/// Run the scheduler in the foreground.
#[derive(Debug, Args)]
pub struct SchedArgs {
    /// The configuration file whose [[groups]] are published (the rest is not used here).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Where the maps are pinned; defaults to the config's enforcement.pin_dir.
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Stop after this many seconds instead of waiting for a signal.
    #[arg(long)]
    pub duration_s: Option<u64>,
}

pub fn run(args: SchedArgs) -> Result<i32> {
    // Only the groups matter here; workload functions need not be runnable.
    let spin = super::config::spin_binary().unwrap_or_else(|_| PathBuf::from("corral-spin"));
    let config = CliConfig::load(&args.config, &spin)?;
    let validated = config
        .runtime
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    corral_bpf::check_sched_ext_support()
        .context("this machine cannot run the scheduler (`corral check` says why)")?;

    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("cannot install the SIGINT/SIGTERM handler")?;

    let pin_dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| config.runtime.enforcement.pin_dir.clone());
    let sched_config = SchedulerConfig {
        pin_dir: pin_dir.clone(),
        ..SchedulerConfig::default()
    };
    let mut sched =
        Scheduler::start(&sched_config).context("cannot load and attach the scheduler")?;
    for g in &validated.groups {
        let spec = corral::bpf_enforcement::group_spec(g);
        sched
            .maps()
            .groups()
            .publish(g.id.0, &spec)
            .with_context(|| format!("cannot publish group `{}`", g.name))?;
        println!(
            "group {} `{}`: CPUs {} slice {}µs",
            g.id,
            g.name,
            g.cpu_list(),
            g.slice_ns / 1000
        );
    }
    println!(
        "scheduler attached (maps at {}); stop with Ctrl-C or SIGTERM",
        pin_dir.display()
    );

    let deadline = args
        .duration_s
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let exit = loop {
        if let Some(exit) = sched.exit_info() {
            println!("the scheduler exited on its own");
            break Some(exit);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            println!("duration reached; detaching");
            break sched.detach();
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => {
                println!("signal received; detaching");
                break sched.detach();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break sched.detach(),
        }
    };
    drop(sched);
    match &exit {
        Some(info) => {
            println!("exit: {info}");
            record_exit(&last_exit_file(&pin_dir), info);
            Ok(if info.kind.is_error() { 1 } else { 0 })
        }
        None => {
            println!("exit: no exit information was reported");
            Ok(0)
        }
    }
}

fn record_exit(path: &Path, info: &ExitInfo) {
    let text = serde_json::json!({
        "kind": format!("{:?}", info.kind),
        "reason": info.reason,
        "message": info.message,
        "exit_code": info.exit_code,
        "at_unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    });
    let written = path
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| std::fs::write(path, text.to_string()));
    if let Err(e) = written {
        eprintln!(
            "corral sched: cannot record the exit in {}: {e}",
            path.display()
        );
    }
}
