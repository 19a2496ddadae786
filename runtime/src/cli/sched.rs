//! `corral sched`: the scheduler as a node daemon. Load and attach it in the configured mode,
//! publish the configuration's groups and host group, and stay in the foreground until SIGINT
//! or SIGTERM. When the kernel stops the scheduler (an error, the watchdog, sysrq), print and
//! record the exit where `corral status` finds it, and reattach with the runtime loader's
//! backoff; the pinned maps, and with them every mapping, are kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use corral_actors::bpf_loader::{Backoff, LoaderTiming};
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

/// Run the scheduler in the foreground, as a node daemon.
#[derive(Debug, Args)]
pub struct SchedArgs {
    /// The configuration file whose [[groups]], [host] and enforcement.mode are used (the rest
    /// is not used here).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Where the maps are pinned; defaults to the config's enforcement.pin_dir.
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Stop after this many seconds instead of waiting for a signal.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Exit when the scheduler exits instead of reattaching it with backoff (250 ms doubling
    /// to 30 s, reset after 60 s of stable running, as the runtime's loader does).
    #[arg(long)]
    pub no_restart: bool,
    /// Serve Prometheus metrics at http://<ADDR>/metrics: the scheduler's state and exits, and
    /// each group's run-queue latency, time on CPU and violations from the pinned maps.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Why the wait for the attached scheduler ended.
enum Stop {
    /// SIGINT/SIGTERM, or the duration was reached: detach and end.
    Requested(&'static str),
    /// The kernel stopped the scheduler.
    Exited(ExitInfo),
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
    let mode = config.runtime.enforcement.mode.sched_mode();
    let sched_config = SchedulerConfig {
        pin_dir: pin_dir.clone(),
        mode,
        ..SchedulerConfig::default()
    };
    let daemon = Arc::new(corral::metrics::DaemonState::default());
    if let Some(addr) = args.metrics {
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            format!("--metrics {addr}: cannot listen there; choose a free port")
        })?;
        let groups = corral::metrics::GroupCollector {
            pin_dir: pin_dir.clone(),
            names: validated.groups.iter().map(|g| g.name.clone()).collect(),
        };
        corral::metrics::serve_daemon(listener, groups, Arc::clone(&daemon))
            .context("cannot start the metrics server")?;
        println!("metrics at http://{addr}/metrics");
    }
    let deadline = args
        .duration_s
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut backoff = Backoff::new(LoaderTiming::default());
    let mut last_error_exit = false;
    let mut published_once = false;
    loop {
        let started =
            Scheduler::start(&sched_config).context("cannot load and attach the scheduler");
        let stop = match started {
            Ok(sched) => {
                backoff.attached(Instant::now());
                daemon.attached.store(true, Ordering::Relaxed);
                daemon.attaches.fetch_add(1, Ordering::Relaxed);
                match publish(&sched, &validated) {
                    Ok(()) => published_once = true,
                    Err(e) if !published_once => return Err(e),
                    // The pinned maps still hold the groups published before, e.g. while
                    // one of their CPUs is offline: keep scheduling on those.
                    Err(e) => {
                        eprintln!("corral sched: {e:#}; the groups published earlier stay in force")
                    }
                }
                println!(
                    "scheduler attached in {mode} mode (maps at {}); stop with Ctrl-C or SIGTERM",
                    pin_dir.display()
                );
                let stop = watch(sched, &rx, deadline);
                daemon.attached.store(false, Ordering::Relaxed);
                if let Stop::Exited(info) = &stop {
                    daemon.exits.fetch_add(1, Ordering::Relaxed);
                    println!("the scheduler exited on its own: {info}");
                    record_exit(&last_exit_file(&pin_dir), info);
                    last_error_exit = info.kind.is_error();
                }
                stop
            }
            Err(e) if args.no_restart => return Err(e),
            Err(e) => {
                eprintln!("corral sched: {e:#}");
                last_error_exit = true;
                Stop::Exited(ExitInfo {
                    kind: corral_bpf::ExitKind::Other(0),
                    reason: format!("{e:#}"),
                    message: String::new(),
                    exit_code: 0,
                })
            }
        };
        match stop {
            Stop::Requested(why) => {
                println!("{why}; detached");
                return Ok(0);
            }
            Stop::Exited(_) if args.no_restart => return Ok(if last_error_exit { 1 } else { 0 }),
            Stop::Exited(_) => {
                let delay = backoff.delay_after_exit(Instant::now());
                println!(
                    "reattaching in {} ms (the maps and their groups are kept)",
                    delay.as_millis()
                );
                if let Some(why) = wait_or_stop(&rx, deadline, delay) {
                    println!("{why}; not reattaching");
                    return Ok(if last_error_exit { 1 } else { 0 });
                }
            }
        }
    }
}

/// Publishes the configuration's groups and host group on the attached scheduler's maps.
fn publish(sched: &Scheduler, validated: &corral::config::ValidatedConfig) -> Result<()> {
    for g in &validated.groups {
        let spec = corral::bpf_enforcement::group_spec(g);
        sched
            .maps()
            .groups()
            .publish(g.id.0, &spec)
            .with_context(|| format!("cannot publish group `{}`", g.name))?;
        println!(
            "group {} `{}`: CPUs {} slice {}µs{}",
            g.id,
            g.name,
            g.cpu_list(),
            g.slice_ns / 1000,
            if g.exclusive { " exclusive" } else { "" }
        );
    }
    let host = &validated.host;
    sched
        .maps()
        .groups()
        .publish_host(&corral::bpf_enforcement::host_spec(host))
        .with_context(|| format!("cannot publish the host group on CPUs {}", host.cpu_list()))?;
    println!(
        "host group (unmapped tasks): CPUs {}{}",
        host.cpu_list(),
        if host.shared.is_empty() {
            String::new()
        } else {
            format!(
                " (shared with groups on {}: they run first there)",
                corral_actors::config::format_cpu_list(&host.shared)
            )
        }
    );
    Ok(())
}

/// Waits until the scheduler exits, a signal arrives or the deadline passes; detaches it.
fn watch(mut sched: Scheduler, rx: &mpsc::Receiver<()>, deadline: Option<Instant>) -> Stop {
    loop {
        if let Some(exit) = sched.exit_info() {
            return Stop::Exited(exit);
        }
        if let Some(why) = wait_or_stop(rx, deadline, Duration::from_millis(200)) {
            sched.detach();
            return Stop::Requested(why);
        }
    }
}

/// Sleeps `delay`, or less when a signal arrives or the deadline passes (then says which).
fn wait_or_stop(
    rx: &mpsc::Receiver<()>,
    deadline: Option<Instant>,
    delay: Duration,
) -> Option<&'static str> {
    let now = Instant::now();
    let delay = deadline.map_or(delay, |d| delay.min(d.saturating_duration_since(now)));
    match rx.recv_timeout(delay) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => Some("signal received"),
        Err(mpsc::RecvTimeoutError::Timeout) => deadline
            .is_some_and(|d| Instant::now() >= d)
            .then_some("duration reached"),
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
