//! Invocation overhead: corral's path against a direct implementation of the same work.
//!
//! Both run on one tokio multi-thread runtime (2 worker threads) with `c` tasks invoking in a
//! closed loop, for `c` in `--concurrency`:
//!
//! - **corral**: [`RuntimeHandle::invoke`] with `sim` containers (0 µs run) and `memory`
//!   enforcement, so what is timed is corral's own path: the hand-off to the actix thread, the
//!   resource tracker's lease, the container manager's acquisition and enforcement message, the
//!   release, and the reply;
//! - **baseline**: the same steps without actors: a [`tokio::sync::Semaphore`] for admission, a
//!   `Mutex`ed pool of containers, a `Mutex`ed enforcement map, the same 0 µs run.
//!
//! Latency is timed around each call, as a caller sees it; throughput is calls over wall time.
//! The floor, measured in the same run: a round trip between two threads that block
//! (`std::sync::mpsc`), and one between two threads that spin on an atomic.
//!
//! The scale series (`invoke_overhead_functions_<n>`, for `n` in `--functions`): `n` functions
//! registered, each invoked once first so that each keeps a warm container (and its mapped
//! cgroup in the memory backend), then corral's overhead at concurrency 1 over invocations that
//! go round all `n`: how the cost grows with functions, warm containers and mapped cgroups.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use corral::{
    ContainerBackendKind, EnforcementKind, FunctionSpec, Runtime, RuntimeConfig, RuntimeHandle,
};

use super::enforce::two_groups;
use super::Figure;

/// Options of `corral bench invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Concurrencies to measure (closed-loop callers), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 64])]
    pub concurrency: Vec<usize>,
    /// Timed invocations per concurrency and implementation (after a warm-up of 10 per caller).
    #[arg(long, default_value_t = 20_000)]
    pub invocations: usize,
    /// Round trips timed for each floor figure.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: usize,
    /// Registered functions (each with a warm container) for the scale series, comma-separated;
    /// `--functions` with no value for none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [10usize, 100, 1_000, 10_000])]
    pub functions: Vec<usize>,
}

/// What the baseline keeps per container.
struct BaselineContainer {
    cgroup: u64,
}

/// The lock-based baseline: admission, pool, enforcement, run, release; no actors, no hops.
struct Baseline {
    permits: tokio::sync::Semaphore,
    pool: Mutex<Vec<BaselineContainer>>,
    enforced: Mutex<HashMap<u64, u32>>,
    next_cgroup: AtomicU64,
    next_group: AtomicU64,
    groups: u64,
    completed: AtomicU64,
}

impl Baseline {
    fn new(limit: usize, groups: u64) -> Self {
        Baseline {
            permits: tokio::sync::Semaphore::new(limit),
            pool: Mutex::new(Vec::new()),
            enforced: Mutex::new(HashMap::new()),
            next_cgroup: AtomicU64::new(1),
            next_group: AtomicU64::new(0),
            groups,
            completed: AtomicU64::new(0),
        }
    }

    async fn invoke(&self, payload: Vec<u8>) -> Result<Vec<u8>> {
        let _permit = self.permits.acquire().await?;
        let group = (self.next_group.fetch_add(1, Ordering::Relaxed) % self.groups) as u32;
        let container = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| BaselineContainer {
                cgroup: self.next_cgroup.fetch_add(1, Ordering::Relaxed),
            });
        self.enforced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(container.cgroup, group);
        // The sim backend's run of a 0 µs function: the payload back.
        let output = std::hint::black_box(payload);
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(container);
        self.completed.fetch_add(1, Ordering::Relaxed);
        Ok(output)
    }
}

/// One implementation's run at one concurrency.
struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
    hops: u32,
}

/// `c` closed-loop callers, `per` timed calls each after `warm` untimed ones.
async fn closed_loop<F, Fut>(c: usize, per: usize, warm: usize, call: F) -> Result<Run>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<u32>> + Send,
{
    let mut warmers = Vec::new();
    for _ in 0..c {
        let call = call.clone();
        warmers.push(tokio::spawn(async move {
            for _ in 0..warm {
                call().await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in warmers {
        w.await??;
    }
    let start = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..c {
        let call = call.clone();
        callers.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per);
            let mut hops = 0;
            for _ in 0..per {
                let t = Instant::now();
                hops = hops.max(call().await?);
                samples.push(t.elapsed());
            }
            anyhow::Ok((samples, hops))
        }));
    }
    let mut latencies = Vec::with_capacity(c * per);
    let mut hops = 0;
    for caller in callers {
        let (samples, h) = caller.await??;
        latencies.extend(samples);
        hops = hops.max(h);
    }
    Ok(Run {
        latencies,
        wall: start.elapsed(),
        hops,
    })
}

fn corral_config(limit: usize) -> Result<RuntimeConfig> {
    let (configs, _, _) = two_groups()?;
    let mut config = RuntimeConfig::with_groups(configs);
    config.enforcement.backend = EnforcementKind::Memory;
    config.containers.backend = Some(ContainerBackendKind::Sim);
    config.monitor.enabled = false;
    config.limiter.initial = limit;
    config.limiter.min = limit;
    config.limiter.max = limit;
    config.containers.max_warm = limit.max(1);
    config.functions.push(FunctionSpec::named("noop"));
    Ok(config)
}

/// `n` functions, one warm container each.
fn scale_config(n: usize) -> Result<RuntimeConfig> {
    let mut config = corral_config(1)?;
    config.functions = (0..n)
        .map(|i| FunctionSpec::named(format!("f{i}")))
        .collect();
    Ok(config)
}

/// Warms every function of [`scale_config`] once, then times `per` invocations at concurrency
/// 1 that go round all of them.
async fn scale_run(handle: RuntimeHandle, n: usize, per: usize) -> Result<Vec<Duration>> {
    for i in 0..n {
        handle.invoke(&format!("f{i}"), Vec::new()).await?;
    }
    let mut samples = Vec::with_capacity(per);
    for k in 0..per {
        let name = format!("f{}", k % n);
        let start = Instant::now();
        handle.invoke(&name, Vec::new()).await?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

async fn corral_run(handle: RuntimeHandle, c: usize, per: usize) -> Result<Run> {
    closed_loop(c, per, 10, move || {
        let handle = handle.clone();
        async move {
            let r = handle.invoke("noop", Vec::new()).await?;
            Ok(r.thread_hops)
        }
    })
    .await
}

async fn baseline_run(baseline: Arc<Baseline>, c: usize, per: usize) -> Result<Run> {
    closed_loop(c, per, 10, move || {
        let baseline = Arc::clone(&baseline);
        async move {
            baseline.invoke(Vec::new()).await?;
            Ok(0)
        }
    })
    .await
}

/// Round trips between this thread and a peer blocked on a channel.
fn blocking_round_trips(n: usize) -> Vec<Duration> {
    let (to_peer, peer_rx) = std::sync::mpsc::channel::<u64>();
    let (to_us, our_rx) = std::sync::mpsc::channel::<u64>();
    let peer = std::thread::spawn(move || {
        while let Ok(v) = peer_rx.recv() {
            if to_us.send(v).is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        to_peer.send(i).expect("peer alive");
        our_rx.recv().expect("peer replies");
        samples.push(t.elapsed());
    }
    drop(to_peer);
    let _ = peer.join();
    samples
}

/// Round trips between this thread and a peer spinning on an atomic.
fn spinning_round_trips(n: usize) -> Vec<Duration> {
    let cell = Arc::new(AtomicU64::new(0));
    let peer_cell = Arc::clone(&cell);
    let rounds = n as u64;
    let peer = std::thread::spawn(move || {
        for i in 0..rounds {
            while peer_cell.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            peer_cell.store(2 * i + 2, Ordering::Release);
        }
    });
    let mut samples = Vec::with_capacity(n);
    for i in 0..rounds {
        let t = Instant::now();
        cell.store(2 * i + 1, Ordering::Release);
        while cell.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
        samples.push(t.elapsed());
    }
    let _ = peer.join();
    samples
}

/// Runs the part.
pub fn run(args: &InvokeArgs) -> Result<Vec<Figure>> {
    if args.invocations < 10 || args.round_trips < 10 {
        bail!("--invocations and --round-trips must be at least 10");
    }
    if args.concurrency.is_empty() || args.concurrency.iter().any(|&c| c == 0 || c > 4096) {
        bail!("--concurrency takes values from 1 to 4096");
    }
    if let Some(bad) = args.functions.iter().find(|&&n| n == 0 || n > 100_000) {
        bail!("--functions takes counts from 1 to 100000 (got {bad})");
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = Vec::new();

    eprintln!("bench invoke: floor, {} round trips each", args.round_trips);
    let mut blocking = blocking_round_trips(args.round_trips);
    let mut spinning = spinning_round_trips(args.round_trips);
    figures.push(Figure::latency_us(
        "floor_roundtrip_blocking",
        "round trip between two threads blocking on channels",
        &mut blocking,
    ));
    figures.push(Figure::latency_us(
        "floor_roundtrip_spinning",
        "round trip between two threads spinning on an atomic",
        &mut spinning,
    ));

    for &c in &args.concurrency {
        let per = (args.invocations / c).max(1);
        eprintln!(
            "bench invoke: concurrency {c}: {} timed invocations per implementation",
            per * c
        );
        let handle = Runtime::start(corral_config(c)?)?;
        let corral = tokio.block_on(corral_run(handle.clone(), c, per));
        let lane = handle.stats().invocations_warm_lane;
        tokio.block_on(handle.shutdown())?;
        let mut corral = corral?;
        let baseline = Arc::new(Baseline::new(c, 2));
        let mut base = tokio.block_on(baseline_run(Arc::clone(&baseline), c, per))?;

        let n = corral.latencies.len();
        figures.push(
            Figure::latency_us(
                &format!("invoke_overhead_c{c}"),
                format!("corral invoke at concurrency {c} (sim, 0 µs run)"),
                &mut corral.latencies,
            )
            .with("thread_hops", corral.hops)
            .with("warm_lane_invocations", lane),
        );
        figures.push(Figure::rate(
            &format!("invoke_throughput_c{c}"),
            format!("corral invocations per second at concurrency {c}"),
            n as f64 / corral.wall.as_secs_f64(),
            n,
        ));
        let n = base.latencies.len();
        figures.push(
            Figure::latency_us(
                &format!("baseline_invoke_overhead_c{c}"),
                format!("lock-based baseline at concurrency {c}"),
                &mut base.latencies,
            )
            .with("thread_hops", base.hops),
        );
        figures.push(Figure::rate(
            &format!("baseline_invoke_throughput_c{c}"),
            format!("baseline invocations per second at concurrency {c}"),
            n as f64 / base.wall.as_secs_f64(),
            n,
        ));
    }
    for &n in &args.functions {
        eprintln!(
            "bench invoke: {n} functions with a warm container each: {} timed invocations",
            args.invocations
        );
        let handle = Runtime::start(scale_config(n)?)?;
        let samples = tokio.block_on(scale_run(handle.clone(), n, args.invocations));
        let stats = handle.stats();
        tokio.block_on(handle.shutdown())?;
        let mut samples = samples?;
        figures.push(
            Figure::latency_us(
                &format!("invoke_overhead_functions_{n}"),
                format!(
                    "corral invoke at concurrency 1 with {n} functions, each with a warm container"
                ),
                &mut samples,
            )
            .with("functions", n)
            .with("warm_lane_invocations", stats.invocations_warm_lane)
            .with("warm_containers", stats.warm_containers)
            .with("mapped_cgroups", stats.enforcement_entries),
        );
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline does the work it claims: every call admitted, a container reused from the
    /// pool (no more containers than callers), its enforcement recorded, the payload returned.
    #[test]
    fn baseline_reuses_containers_and_records_enforcement() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let baseline = Arc::new(Baseline::new(4, 2));
        let run = rt
            .block_on(baseline_run(Arc::clone(&baseline), 4, 50))
            .unwrap();
        assert_eq!(run.latencies.len(), 200);
        assert_eq!(baseline.completed.load(Ordering::Relaxed), 200 + 40);
        let made = baseline.next_cgroup.load(Ordering::Relaxed) - 1;
        assert!((1..=4).contains(&made), "{made} containers for 4 callers");
        assert_eq!(baseline.enforced.lock().unwrap().len() as u64, made);
        let out = rt.block_on(baseline.invoke(b"x".to_vec())).unwrap();
        assert_eq!(out, b"x");
    }

    /// The floor measurements complete and time every round trip.
    #[test]
    fn round_trips_are_timed() {
        assert_eq!(blocking_round_trips(50).len(), 50);
        assert_eq!(spinning_round_trips(50).len(), 50);
    }
}
