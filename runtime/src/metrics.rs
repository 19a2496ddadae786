//! Prometheus metrics, in the OpenMetrics text format (`prometheus-client`), served over HTTP
//! on `[metrics] listen` and readable with [`crate::RuntimeHandle::metrics_text`].
//!
//! What is recorded as it happens (only when metrics are on, so that the invocation path pays
//! nothing otherwise): invocations per function and outcome, cold starts per function, and the
//! latency of invocations (per function) and of enforcements. What is read at each scrape:
//! leases in flight and the limit, containers, enforcements committed, the scheduler's state
//! and exits, and, when the maps are pinned BPF maps, each group's run-queue latency
//! histogram, time on CPU, runs and placement violations, read from the scheduler's per-CPU
//! statistics (the same numbers `corral status` and `corral maps dump` show).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use corral_actors::bpf_loader::SchedulerState;

use crate::runtime::Shared;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    function: String,
    outcome: &'static str,
}

/// One function's recorders, looked up by name without allocating.
#[derive(Debug, Clone)]
struct FunctionMetrics {
    ok: Counter,
    failed: Counter,
    cold_starts: Counter,
    latency: Histogram,
}

/// The runtime's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    invocations: Family<OutcomeLabels, Counter>,
    cold_starts: Family<FunctionLabels, Counter>,
    latency: Family<FunctionLabels, Histogram>,
    enforcement_latency: Histogram,
    functions: RwLock<HashMap<String, FunctionMetrics>>,
}

/// Latency buckets: 1 µs to about 67 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1e-6, 2.0, 27)
}

impl Metrics {
    /// The runtime's metrics, with the scrape-time ones read from `shared`.
    pub(crate) fn new(shared: Weak<Shared>, groups: Option<GroupCollector>) -> Metrics {
        let mut registry = Registry::with_prefix("corral");
        let invocations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations that finished, per function and outcome (ok or error)",
            invocations.clone(),
        );
        let cold_starts = Family::<FunctionLabels, Counter>::default();
        registry.register(
            "cold_starts",
            "Invocations that created their container, per function",
            cold_starts.clone(),
        );
        let latency = Family::<FunctionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register_with_unit(
            "invocation_duration",
            "From invoke to its result, per function",
            Unit::Seconds,
            latency.clone(),
        );
        let enforcement_latency = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "enforcement_duration",
            "From EnforceGroup to the map writer's acknowledgement (cold starts and re-enforcements)",
            Unit::Seconds,
            enforcement_latency.clone(),
        );
        registry.register_collector(Box::new(RuntimeCollector { shared }));
        if let Some(groups) = groups {
            registry.register_collector(Box::new(groups));
        }
        Metrics {
            registry,
            invocations,
            cold_starts,
            latency,
            enforcement_latency,
            functions: RwLock::new(HashMap::new()),
        }
    }

    fn function(&self, function: &str) -> FunctionMetrics {
        if let Some(m) = self
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
        {
            return m.clone();
        }
        let labels = |outcome| OutcomeLabels {
            function: function.to_owned(),
            outcome,
        };
        let name = FunctionLabels {
            function: function.to_owned(),
        };
        // One statement each: `get_or_create` answers a read guard on the family, and a
        // second call in the same statement (while it is alive) would wait for a write lock.
        let ok = self.invocations.get_or_create(&labels("ok")).clone();
        let failed = self.invocations.get_or_create(&labels("error")).clone();
        let cold_starts = self.cold_starts.get_or_create(&name).clone();
        let latency = self.latency.get_or_create(&name).clone();
        let m = FunctionMetrics {
            ok,
            failed,
            cold_starts,
            latency,
        };
        self.functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function.to_owned())
            .or_insert(m)
            .clone()
    }

    /// Records one finished invocation of a registered function.
    pub(crate) fn invocation(
        &self,
        function: &str,
        ok: bool,
        cold: bool,
        total: Duration,
        enforcement: Option<Duration>,
    ) {
        let m = self.function(function);
        if ok { &m.ok } else { &m.failed }.inc();
        if cold {
            m.cold_starts.inc();
        }
        m.latency.observe(total.as_secs_f64());
        if let Some(e) = enforcement {
            self.enforcement_latency.observe(e.as_secs_f64());
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Leases, containers, enforcements and the scheduler, read from the runtime at each scrape.
#[derive(Debug)]
struct RuntimeCollector {
    shared: Weak<Shared>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(s) = self.shared.upgrade() else {
            return Ok(());
        };
        let t = &s.telemetry;
        use std::sync::atomic::Ordering::Relaxed;
        gauge(
            &mut encoder,
            "leases_in_flight",
            "Leases (permits of the inflight limiter) held now",
            s.limiter.in_flight() as i64,
        )?;
        gauge(
            &mut encoder,
            "leases_limit",
            "The inflight limiter's current limit",
            s.limiter.limit() as i64,
        )?;
        gauge(
            &mut encoder,
            "containers_warm",
            "Idle containers in the warm pools",
            t.warm_containers.load(Relaxed) as i64,
        )?;
        gauge(
            &mut encoder,
            "containers_live",
            "Containers that exist (idle or in use)",
            t.live_containers.load(Relaxed) as i64,
        )?;
        counter(
            &mut encoder,
            "enforcements_committed",
            "Enforcements the map writer committed",
            t.enforcements_committed.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "enforcement_entries",
            "Entries in the map writer's mirror",
            t.enforcement_entries.load(Relaxed) as i64,
        )?;
        counter(
            &mut encoder,
            "queue_timeouts",
            "Lease requests that timed out in the queue",
            t.queue_timeouts.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "warm_lane_invocations",
            "Invocations served by the warm lane (no message, no hop)",
            s.lane_invocations.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "unenforced_invocations",
            "Invocations run unenforced while the scheduler was down",
            s.unenforced.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "cpuset_fallback_invocations",
            "Invocations confined by cpuset while the scheduler was down",
            s.cpuset_fallback.load(Relaxed),
        )?;
        let status = s
            .scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let current = state_name(&status.state);
        let mut family = encoder.encode_descriptor(
            "scheduler_state",
            "The scheduler's state: 1 for the current one",
            None,
            MetricType::Gauge,
        )?;
        for state in [
            "unsupported",
            "not_configured",
            "attaching",
            "running",
            "backing_off",
            "stopped",
        ] {
            let g = ConstGauge::new(i64::from(state == current));
            g.encode(family.encode_family(&StateLabels { state })?)?;
        }
        counter(
            &mut encoder,
            "scheduler_exits",
            "Times the scheduler exited (and was reattached)",
            u64::from(status.exits),
        )?;
        counter(
            &mut encoder,
            "scheduler_attaches",
            "Times the scheduler was attached",
            u64::from(status.attaches),
        )?;
        Ok(())
    }
}

fn state_name(state: &SchedulerState) -> &'static str {
    match state {
        SchedulerState::Unsupported { .. } => "unsupported",
        SchedulerState::NotConfigured => "not_configured",
        SchedulerState::Attaching => "attaching",
        SchedulerState::Running => "running",
        SchedulerState::BackingOff { .. } => "backing_off",
        SchedulerState::Stopped => "stopped",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// Each group's scheduler statistics, read from the pinned maps at each scrape (also used by
/// `corral sched --metrics`).
#[derive(Debug)]
pub struct GroupCollector {
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Group names by id (the maps hold ids only); a group without one is labelled by its id.
    pub names: Vec<String>,
}

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let maps = match corral_bpf::PinnedMaps::open(&self.pin_dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, pin_dir = %self.pin_dir.display(), "no pinned maps to read group metrics from");
                return Ok(());
            }
        };
        let Ok(groups) = maps.groups().entries() else {
            return Ok(());
        };
        let mut rows = Vec::new();
        for (id, _) in groups {
            if let Ok(stats) = maps.stats().read(id) {
                let name = self
                    .names
                    .get(id as usize)
                    .cloned()
                    .unwrap_or_else(|| id.to_string());
                rows.push((name, stats));
            }
        }
        if let Ok(host) = maps.stats().read_host() {
            rows.push(("host".to_owned(), host));
        }
        let mut hist = encoder.encode_descriptor(
            "group_runqueue_latency_seconds",
            "Run-queue latency of each group's tasks (the scheduler's log2 histogram)",
            None,
            MetricType::Histogram,
        )?;
        for (name, s) in &rows {
            let last = s.lat_hist.len() - 1;
            let buckets: Vec<(f64, u64)> = s
                .lat_hist
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let upper = if i == last {
                        f64::INFINITY
                    } else {
                        (1u64 << (i + 1)) as f64 / 1e9
                    };
                    (upper, n)
                })
                .collect();
            hist.encode_family(&GroupLabels {
                group: name.clone(),
            })?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.lat_sum_ns as f64 / 1e9,
                s.hist_total(),
                &buckets,
                None,
            )?;
        }
        for (metric, help, value) in [
            (
                "group_oncpu_seconds",
                "Time each group's tasks spent on CPU",
                (|s: &corral_bpf::GroupStats| s.run_ns as f64 / 1e9)
                    as fn(&corral_bpf::GroupStats) -> f64,
            ),
            (
                "group_runs",
                "Times a task of each group started running",
                |s| s.runs as f64,
            ),
            (
                "group_violations",
                "Runs outside the group's CPUs that nothing allowed",
                |s| s.violations as f64,
            ),
            (
                "group_affinity_overrides",
                "Runs outside the group's CPUs because the task's affinity misses them",
                |s| s.affinity_overrides as f64,
            ),
        ] {
            let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Counter)?;
            for (name, s) in &rows {
                ConstCounter::new(value(s)).encode(family.encode_family(&GroupLabels {
                    group: name.clone(),
                })?)?;
            }
        }
        Ok(())
    }
}

/// Serves `metrics` (a function producing the text) on `listener` at `/metrics` until the
/// runtime it runs on stops.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    text: Arc<dyn Fn() -> String + Send + Sync>,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics");
            return;
        }
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = Arc::clone(&text);
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text()) }
        }),
    );
    tracing::info!(addr = ?addr, "serving metrics at /metrics");
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}

/// What `corral sched` reports about its scheduler (it runs no runtime).
#[derive(Debug, Default)]
pub struct DaemonState {
    /// The scheduler is attached now.
    pub attached: std::sync::atomic::AtomicBool,
    /// Attaches so far.
    pub attaches: std::sync::atomic::AtomicU64,
    /// Exits so far.
    pub exits: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct DaemonCollector(Arc<DaemonState>);

impl Collector for DaemonCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        gauge(
            &mut encoder,
            "scheduler_attached",
            "1 while corral sched has the scheduler attached",
            i64::from(self.0.attached.load(Relaxed)),
        )?;
        counter(
            &mut encoder,
            "scheduler_attaches",
            "Times the scheduler was attached",
            self.0.attaches.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "scheduler_exits",
            "Times the scheduler exited (and was reattached unless --no-restart)",
            self.0.exits.load(Relaxed),
        )
    }
}

/// Serves `corral sched`'s metrics (its scheduler's state and exits, and each group's
/// statistics from the pinned maps) on `listener`, from a thread of its own.
pub fn serve_daemon(
    listener: std::net::TcpListener,
    groups: GroupCollector,
    state: Arc<DaemonState>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut registry = Registry::with_prefix("corral");
    registry.register_collector(Box::new(DaemonCollector(state)));
    registry.register_collector(Box::new(groups));
    let registry = Arc::new(registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("corral-metrics".into())
        .spawn(move || {
            let text = move || {
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                out
            };
            runtime.block_on(serve(listener, Arc::new(text)));
        })
}
