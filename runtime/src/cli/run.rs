//! `corral run`: start the runtime from a configuration file, drive its `[[workload]]` load with
//! live progress, then report per function and per group (and write the same figures as JSON).
//!
//! The load runs on a tokio runtime of its own, as a worker's would; every invocation goes
//! through the public [`corral::RuntimeHandle`]. Scheduler figures are the difference of two
//! readings of the pinned statistics map, taken before and after the load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use corral::{ContainerBackendKind, InvocationResult, Runtime, RuntimeHandle, StartKind};
use corral_bpf::{GroupStats, PinnedMaps};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use super::config::{CliConfig, Load};
use super::report::{
    apply_sched_stats, stats_delta, FunctionReport, GroupReport, Percentiles, RunReport,
};
use super::sampler::{Assignments, GroupSource, Sampler};

/// Run the configured workload and report.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (TOML): groups, policy, limits, functions and `[[workload]]`.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Also write the report's figures to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Live progress: `bars` redraws in place (the default on a terminal), `lines` prints a
    /// status line every two seconds (the default otherwise, and for serial consoles), `none`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Serve Prometheus metrics at http://<ADDR>/metrics while the workload runs (overrides
    /// the configuration's metrics.listen).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// How `corral run` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    Auto,
    /// Progress bars redrawn in place.
    Bars,
    /// A plain status line every two seconds.
    Lines,
    /// Nothing until the report.
    None,
}

impl ProgressMode {
    fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto => {
                let dumb = std::env::var("TERM").map_or(true, |t| t == "dumb" || t.is_empty());
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !dumb {
                    ProgressMode::Bars
                } else {
                    ProgressMode::Lines
                }
            }
            other => other,
        }
    }
}

/// One invocation's outcome, tagged with its workload entry.
struct Outcome {
    workload: usize,
    result: Result<InvocationResult, String>,
}

/// Live counters per workload entry, for the progress bars.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    err: AtomicU64,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let mut config = CliConfig::load(&args.config, &super::config::spin_binary()?)?;
    if let Some(addr) = args.metrics {
        config.runtime.metrics.listen = Some(addr.to_string());
    }
    if config.workload.is_empty() {
        bail!(
            "{} has no [[workload]] entries, so there is nothing to run; add one (see examples/demo.toml)",
            args.config.display()
        );
    }
    let sample_parent = match config.runtime.containers.backend_kind()? {
        ContainerBackendKind::Local | ContainerBackendKind::Containerd => {
            Some(config.runtime.containers.resolved_cgroup_parent()?)
        }
        ContainerBackendKind::Sim => None,
    };

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime for the load")?;
    let handle =
        Runtime::start(config.runtime.clone()).context("cannot start the corral runtime")?;
    let result = tokio.block_on(drive(
        &handle,
        &config,
        sample_parent,
        args.progress.resolve(),
    ));
    let shutdown = tokio.block_on(handle.shutdown());
    let report = result?;
    let shutdown = shutdown.context("the runtime did not shut down cleanly")?;

    report.print();
    println!(
        "shutdown: {} containers destroyed, {} enforcements removed, {}/{} permits free",
        shutdown.containers_destroyed,
        shutdown.enforcements_removed,
        shutdown.permits_available,
        shutdown.limit
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    let completed: u64 = report.functions.iter().map(|f| f.invocations).sum();
    if completed == 0 {
        eprintln!("corral run: no invocation completed");
        return Ok(1);
    }
    if let Some(warning) = &report.scheduler_warning {
        eprintln!("corral run: placement was not enforced throughout: {warning}");
        return Ok(1);
    }
    if !report.placement_clean() {
        eprintln!(
            "corral run: threads ran outside their group (see violations and samples outside)"
        );
        return Ok(1);
    }
    Ok(0)
}

async fn drive(
    handle: &RuntimeHandle,
    config: &CliConfig,
    sample_parent: Option<PathBuf>,
    progress_mode: ProgressMode,
) -> Result<RunReport> {
    let groups = handle.groups().to_vec();
    let stats = handle.stats();
    let maps = if stats.enforcement_backend == "bpf" {
        Some(
            PinnedMaps::open(&config.runtime.enforcement.pin_dir)
                .context("cannot open the pinned maps for statistics")?,
        )
    } else {
        None
    };
    let read_stats = |maps: &Option<PinnedMaps>| -> Result<BTreeMap<u32, GroupStats>> {
        let mut out = BTreeMap::new();
        if let Some(maps) = maps {
            for g in &groups {
                out.insert(g.id.0, maps.stats().read(g.id.0)?);
            }
            out.insert(HOST_ROW, maps.stats().read_host()?);
        }
        Ok(out)
    };
    let before = read_stats(&maps)?;

    let assignments: Assignments = Arc::default();
    let source = match stats.enforcement_backend {
        "bpf" => GroupSource::Maps(
            PinnedMaps::open(&config.runtime.enforcement.pin_dir)
                .context("cannot open the pinned maps for the placement sampler")?,
        ),
        "cpuset" => GroupSource::Cpuset {
            v1_dir: config
                .runtime
                .enforcement
                .cpuset_v1_root
                .join(&config.runtime.enforcement.cpuset_prefix),
        },
        _ => GroupSource::Reported(assignments.clone()),
    };
    let group_cpus: Vec<(u32, Vec<u32>)> =
        groups.iter().map(|g| (g.id.0, g.cpus.clone())).collect();
    let sampler = sample_parent.map(|p| Sampler::start(p, source, group_cpus, SAMPLE_PERIOD));

    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let counters: Vec<Arc<Counters>> = config.workload.iter().map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                eprintln!("corral run: cannot install the SIGINT/SIGTERM handlers");
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!(
                "corral run: stopping; finishing the invocations in flight, then reporting \
                 (signal again to quit at once, leaving cgroups and map entries behind)"
            );
            stop.store(true, Ordering::Relaxed);
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("corral run: second signal; quitting without cleanup");
            std::process::exit(130);
        });
    }

    let progress = match progress_mode {
        ProgressMode::Bars => MultiProgress::new(),
        _ => MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden()),
    };
    let line_printer = (progress_mode == ProgressMode::Lines).then(|| {
        let names: Vec<String> = config.workload.iter().map(|w| w.function.clone()).collect();
        let counters = counters.clone();
        let total = config
            .loads
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let parts: Vec<String> = names
                    .iter()
                    .zip(&counters)
                    .map(|(n, c)| {
                        let (ok, err) =
                            (c.ok.load(Ordering::Relaxed), c.err.load(Ordering::Relaxed));
                        format!("{n} ok {ok} err {err}")
                    })
                    .collect();
                eprintln!(
                    "[{:>3}s/{}s] {}",
                    start.elapsed().as_secs(),
                    total.as_secs(),
                    parts.join(" | ")
                );
            }
        })
    });
    let style =
        ProgressStyle::with_template("{prefix:<14} [{bar:30}] {elapsed:>4}/{len:>3}s {msg}")
            .expect("valid progress template")
            .progress_chars("=> ");
    let started = Instant::now();
    let mut loads = JoinSet::new();
    for (i, (w, (load, duration))) in config.workload.iter().zip(&config.loads).enumerate() {
        let bar = progress.add(ProgressBar::new(duration.as_secs().max(1)));
        bar.set_style(style.clone());
        bar.set_prefix(w.function.clone());
        let ctx = LoadCtx {
            index: i,
            handle: handle.clone(),
            function: w.function.clone(),
            payload: w.payload.clone().into_bytes(),
            deadline: started + *duration,
            stop: stop.clone(),
            outcomes: outcomes.clone(),
            counters: counters[i].clone(),
            assignments: assignments.clone(),
            groups: groups.iter().map(|g| (g.id.0, g.cpus.clone())).collect(),
        };
        let (load, duration) = (*load, *duration);
        loads.spawn(async move {
            let ticker = {
                let (bar, counters) = (bar.clone(), ctx.counters.clone());
                tokio::spawn(async move {
                    loop {
                        let elapsed = started.elapsed().min(duration);
                        bar.set_position(elapsed.as_secs());
                        bar.set_message(format!(
                            "ok {} err {}",
                            counters.ok.load(Ordering::Relaxed),
                            counters.err.load(Ordering::Relaxed)
                        ));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            };
            match load {
                Load::OpenLoop { rate_per_s } => open_loop(&ctx, rate_per_s).await,
                Load::ClosedLoop { concurrency } => closed_loop(&ctx, concurrency).await,
            }
            ticker.abort();
            bar.set_position(duration.as_secs().max(1));
            bar.finish_with_message(format!(
                "ok {} err {} (done)",
                ctx.counters.ok.load(Ordering::Relaxed),
                ctx.counters.err.load(Ordering::Relaxed)
            ));
        });
    }
    while let Some(joined) = loads.join_next().await {
        joined.context("a load task panicked")?;
    }
    if let Some(printer) = line_printer {
        printer.abort();
    }
    let wall = started.elapsed();
    let after = read_stats(&maps)?;
    let placement = sampler.map(Sampler::finish).unwrap_or_default();
    let stats = handle.stats();

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));
    let mut report = RunReport {
        config: config.path.display().to_string(),
        enforcement_backend: stats.enforcement_backend.to_string(),
        sched_ext_unavailable: stats.sched_ext_unavailable.clone(),
        scheduler: describe_scheduler(&stats.scheduler, stats.invocations_unenforced),
        scheduler_warning: scheduler_warning(&stats),
        wall_s: wall.as_secs_f64(),
        max_in_flight: stats.max_in_flight,
        ..RunReport::default()
    };
    for (i, w) in config.workload.iter().enumerate() {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.workload == i).collect();
        let ok: Vec<&InvocationResult> =
            mine.iter().filter_map(|o| o.result.as_ref().ok()).collect();
        let pick =
            |f: &dyn Fn(&InvocationResult) -> Duration| Percentiles::of(ok.iter().map(|r| f(r)));
        let mut errors = BTreeSet::new();
        for o in &mine {
            if let Err(e) = &o.result {
                errors.insert(e.clone());
            }
        }
        report.functions.push(FunctionReport {
            function: w.function.clone(),
            groups: ok
                .iter()
                .map(|r| r.group_name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            invocations: ok.len() as u64,
            errors: (mine.len() - ok.len()) as u64,
            cold_starts: ok.iter().filter(|r| r.start == StartKind::Cold).count() as u64,
            end_to_end: pick(&|r| r.timings.total),
            queue_wait: pick(&|r| r.timings.queue_wait),
            enforcement: pick(&|r| r.timings.enforcement),
            run: pick(&|r| r.timings.run),
            error_samples: errors.into_iter().take(3).collect(),
        });
    }
    for g in &groups {
        let mine: Vec<&InvocationResult> = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .filter(|r| r.group == g.id)
            .collect();
        let part = |f: &dyn Fn(&corral::invocation::EnforcementParts) -> Duration| {
            Percentiles::of(mine.iter().map(|r| f(&r.timings.enforcement_parts)))
        };
        let mut group = GroupReport {
            id: g.id.0,
            name: g.name.clone(),
            cpus: g.cpu_list(),
            invocations: mine.len() as u64,
            enforcement: Percentiles::of(mine.iter().map(|r| r.timings.enforcement)),
            enforcement_mailbox_wait: part(&|p| p.mailbox_wait),
            enforcement_update: part(&|p| p.update),
            enforcement_sweep: part(&|p| p.sweep),
            enforcement_reply: part(&|p| p.reply),
            placement_samples: placement.get(&g.id.0).copied().unwrap_or_default(),
            ..GroupReport::default()
        };
        if let (Some(b), Some(a)) = (before.get(&g.id.0), after.get(&g.id.0)) {
            apply_sched_stats(&mut group, &stats_delta(a, b));
        }
        report.groups.push(group);
    }
    // The host group: unmapped tasks, among them this runtime's own threads, whose waits for a
    // CPU show up in every invocation's timings.
    if let (Some(b), Some(a), Some(maps)) = (before.get(&HOST_ROW), after.get(&HOST_ROW), &maps) {
        let mut host = GroupReport {
            id: HOST_ROW,
            name: "(host)".to_owned(),
            cpus: maps.groups().host()?.map_or("all".to_owned(), |h| {
                corral_actors::config::format_cpu_list(&h.spec.cpus)
            }),
            host: true,
            ..GroupReport::default()
        };
        apply_sched_stats(&mut host, &stats_delta(a, b));
        report.groups.push(host);
    }
    Ok(report)
}

/// How often the placement sampler reads every container thread's CPU. It is a host task like
/// the runtime's own threads: at 10 ms it took 5 of every 18 s of the demo's host CPU under
/// TCG, beside the actix thread's 6, and the control plane waited behind it.
const SAMPLE_PERIOD: Duration = Duration::from_millis(25);

/// The host group's key among the statistics read before and after the load.
const HOST_ROW: u32 = u32::MAX;

fn describe_scheduler(s: &corral_actors::bpf_loader::SchedulerStatus, unenforced: u64) -> String {
    use corral_actors::bpf_loader::SchedulerState;
    if matches!(
        s.state,
        SchedulerState::NotConfigured | SchedulerState::Unsupported { .. }
    ) {
        return String::new();
    }
    let mut text = format!(
        "{:?}, {} attach(es), {} exit(s)",
        s.state, s.attaches, s.exits
    );
    if let Some(exit) = &s.last_exit {
        text.push_str(&format!("; last exit: {exit}"));
    }
    if let Some(err) = &s.last_error {
        text.push_str(&format!("; last attach error: {err}"));
    }
    if unenforced > 0 {
        text.push_str(&format!(
            "; {unenforced} invocation(s) started while it was down and ran unenforced"
        ));
    }
    text
}

/// A warning when the `bpf` backend committed enforcements that no running scheduler enforced.
fn scheduler_warning(stats: &corral::StatsSnapshot) -> Option<String> {
    use corral_actors::bpf_loader::SchedulerState;
    if stats.enforcement_backend != "bpf" {
        return None;
    }
    let s = &stats.scheduler;
    match s.state {
        // load_scheduler = false: an operator's `corral sched` should be attached.
        SchedulerState::NotConfigured => {
            let state = std::fs::read_to_string("/sys/kernel/sched_ext/state").unwrap_or_default();
            (state.trim() != "enabled").then(|| {
                "the maps were written but no sched_ext scheduler is attached (start `corral sched`, \
                 or set enforcement.load_scheduler = true)"
                    .to_string()
            })
        }
        SchedulerState::Running if s.exits == 0 => None,
        _ => Some(format!(
            "the scheduler was not running throughout ({:?}, {} exit(s)); enforcements made while \
             it was down were written to the maps but not enforced",
            s.state, s.exits
        )),
    }
}

/// What one load task needs.
struct LoadCtx {
    index: usize,
    handle: RuntimeHandle,
    function: String,
    payload: Vec<u8>,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    counters: Arc<Counters>,
    assignments: Assignments,
    groups: BTreeMap<u32, Vec<u32>>,
}

impl LoadCtx {
    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.stop.load(Ordering::Relaxed)
    }

    async fn invoke_once(&self) {
        let result = self
            .handle
            .invoke(&self.function, self.payload.clone())
            .await;
        self.record(result.map_err(|e| e.to_string()));
    }

    fn record(&self, result: Result<InvocationResult, String>) {
        // The report needs the timings, not the answer: a function that answers 100 MB would
        // otherwise keep 100 MB per invocation until the end of the run.
        let result = result.map(|mut r| {
            r.output = Vec::new();
            r
        });
        match &result {
            Ok(r) => {
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                if let Some(cpus) = self.groups.get(&r.group.0) {
                    self.assignments
                        .lock()
                        .expect("assignments lock")
                        .insert(r.cgroup_id, (r.group.0, cpus.clone()));
                }
            }
            Err(_) => {
                self.counters.err.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.outcomes.lock().expect("outcomes lock").push(Outcome {
            workload: self.index,
            result,
        });
    }
}

/// Starts an invocation every `1/rate` seconds until the deadline, whatever the latency, then
/// waits for those still in flight.
async fn open_loop(ctx: &LoadCtx, rate_per_s: f64) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    while ctx.running() {
        tick.tick().await;
        if !ctx.running() {
            break;
        }
        let (handle, function, payload) = (
            ctx.handle.clone(),
            ctx.function.clone(),
            ctx.payload.clone(),
        );
        in_flight.spawn(async move { handle.invoke(&function, payload).await });
        while let Some(done) = in_flight.try_join_next() {
            ctx.record(flatten(done));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        ctx.record(flatten(done));
    }
}

/// Keeps `concurrency` invocations in flight until the deadline.
async fn closed_loop(ctx: &LoadCtx, concurrency: u32) {
    let workers = (0..concurrency).map(|_| async {
        while ctx.running() {
            ctx.invoke_once().await;
        }
    });
    futures::future::join_all(workers).await;
}

type Invoked = Result<InvocationResult, corral::RuntimeError>;

fn flatten(done: Result<Invoked, tokio::task::JoinError>) -> Result<InvocationResult, String> {
    match done {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the invocation task failed: {e}")),
    }
}
